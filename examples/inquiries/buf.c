/*
 * buf.c — the growable byte buffer (see buf.h).
 *
 * Growth doubles the capacity (at least 256 bytes), so appending n bytes one
 * piece at a time costs O(n) copies in total.
 */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INQ_BUF_MIN_CAP 256

int inq_buf_reserve(inq_buf_t *b, size_t extra)
{
    size_t need, cap;
    char *data;

    if (extra > SIZE_MAX - b->len) {
        return -ENOMEM;
    }
    need = b->len + extra;
    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap < INQ_BUF_MIN_CAP ? INQ_BUF_MIN_CAP : b->cap;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    data = realloc(b->data, cap);
    if (data == NULL) {
        return -ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

int inq_buf_grow(inq_buf_t *b, size_t cap)
{
    char *data;

    if (cap <= b->cap) {
        return 0;
    }
    data = realloc(b->data, cap);
    if (data == NULL) {
        return -ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

int inq_buf_append(inq_buf_t *b, const void *p, size_t n)
{
    int rc;

    if (n == 0) {
        return 0;
    }
    rc = inq_buf_reserve(b, n);
    if (rc != 0) {
        return rc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int inq_buf_append_str(inq_buf_t *b, const char *s)
{
    return inq_buf_append(b, s, strlen(s));
}

int inq_buf_printf(inq_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    size_t room;
    int n, rc;

    /* Most formats fit in what is left; try there first. */
    room = b->cap - b->len;
    va_start(ap, fmt);
    n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    if ((size_t)n < room) {
        b->len += (size_t)n;
        return 0;
    }
    rc = inq_buf_reserve(b, (size_t)n + 1);
    if (rc != 0) {
        return rc;
    }
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return -EINVAL;
    }
    b->len += (size_t)n;
    return 0;
}

int inq_buf_append_json(inq_buf_t *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, start;
    unsigned char c;
    char esc[6];
    int rc;

    /* Worst case is six bytes per input byte; reserve for the common one. */
    rc = inq_buf_reserve(b, n + 2);
    if (rc != 0) {
        return rc;
    }
    b->data[b->len++] = '"';
    start = 0;
    for (i = 0; i < n; i++) {
        c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            continue;
        }
        rc = inq_buf_append(b, p + start, i - start);
        if (rc != 0) {
            return rc;
        }
        start = i + 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            rc = inq_buf_append(b, esc, 2);
        } else {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0x0f];
            rc = inq_buf_append(b, esc, 6);
        }
        if (rc != 0) {
            return rc;
        }
    }
    rc = inq_buf_append(b, p + start, n - start);
    if (rc != 0) {
        return rc;
    }
    return inq_buf_append(b, "\"", 1);
}

void inq_buf_consume(inq_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void inq_buf_reset(inq_buf_t *b, size_t keep)
{
    b->len = 0;
    if (b->cap > keep) {
        inq_buf_free(b);
    }
}

void inq_buf_free(inq_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

uint32_t inq_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}
