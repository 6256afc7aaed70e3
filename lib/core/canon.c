/*
 * canon.c — canonical text of '&'-separated pairs and of JSON bodies, the
 * forms in which the fingerprint compares a query, a form body and a JSON
 * body (SPEC §4). See canon.h for the exact rules.
 *
 * Pairs become an array of segments that point into the input and are
 * sorted there; the canonical text is written segment by segment, never
 * built.
 *
 * A JSON body goes through three steps:
 *
 *   body ──> pre-scan ──> jansson (json_loadb) ──> canonical writer ──> sink
 *            one linear     strict parse:           walks the tree, sorts
 *            pass: depth,   UTF-8, duplicates,      each object's members,
 *            number         64-bit integers         stages output in a
 *            precision                              buffer of its own
 *
 * The pre-scan runs before any allocation: it bounds the nesting depth (so
 * jansson and the writer recurse at most IDEM_FP_JSON_MAX_DEPTH deep) and
 * rejects real numbers that a double would merge with a neighbour. A body
 * the pre-scan or jansson refuses is reported as "not JSON" and the caller
 * hashes it as bytes; only running out of memory is an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "canon.h"

/* ------------------------------------------------------------------------ */
/* Pairs                                                                     */
/* ------------------------------------------------------------------------ */

static int idem_canon_seg_cmp(const void *a, const void *b)
{
    const idem_canon_seg_t *x = a;
    const idem_canon_seg_t *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = n ? memcmp(x->data, y->data, n) : 0;

    if (c != 0)
        return c;
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static void idem_canon_seg_set(idem_canon_seg_t *seg, const char *data,
                               size_t len, size_t index)
{
    const char *eq = memchr(data, '=', len);

    seg->data = data;
    seg->len = len;
    seg->name_len = eq ? (size_t)(eq - data) : len;
    seg->index = index;
}

int idem_canon_pairs_init(idem_canon_pairs_t *p, const char *s, size_t len)
{
    idem_canon_seg_t *segs;
    size_t nsegs = 0, total = 0, start = 0;

    /* Count the non-empty segments and the length they join to. */
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '&')
            continue;
        if (i > start) {
            total += i - start;
            nsegs++;
        }
        start = i + 1;
    }

    p->n = nsegs;
    p->len = nsegs ? total + nsegs - 1 : 0;
    p->segs = NULL;
    if (nsegs <= 1) {
        /* The single segment, if any, is the input without its '&'s. */
        for (size_t i = 0; nsegs == 1 && i < len; i++) {
            if (s[i] == '&')
                continue;
            idem_canon_seg_set(&p->one_, s + i, total, 0);
            break;
        }
        return 0;
    }

    segs = malloc(nsegs * sizeof(*segs));
    if (segs == NULL)
        return IDEM_ENOMEM;
    nsegs = 0;
    start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '&')
            continue;
        if (i > start) {
            idem_canon_seg_set(&segs[nsegs], s + start, i - start, nsegs);
            nsegs++;
        }
        start = i + 1;
    }
    qsort(segs, nsegs, sizeof(*segs), idem_canon_seg_cmp);
    p->segs = segs;
    return 0;
}

int idem_canon_pairs_write(const idem_canon_pairs_t *p, idem_canon_sink_t *sink)
{
    const idem_canon_seg_t *segs = p->n > 1 ? p->segs : &p->one_;
    int rc;

    for (size_t i = 0; i < p->n; i++) {
        if (i > 0 && (rc = sink->write(sink, "&", 1)) != 0)
            return rc;
        rc = sink->write(sink, segs[i].data, segs[i].len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

void idem_canon_pairs_free(idem_canon_pairs_t *p)
{
    free(p->segs);
    p->segs = NULL;
    p->n = 0;
    p->len = 0;
}

/* ------------------------------------------------------------------------ */
/* JSON pre-scan                                                             */
/* ------------------------------------------------------------------------ */

/* The most significant digits a real may have and still be told apart. */
#define IDEM_CANON_REAL_DIGITS 15
/* The decimal exponents of the normal doubles those digits are exact in. */
#define IDEM_CANON_REAL_EXP_MIN (-307)
#define IDEM_CANON_REAL_EXP_MAX 308

static int idem_canon_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Whether the number token s[0..len) (as the pre-scan delimits it) is one
 * the canonical form represents exactly: any integer (jansson refuses those
 * beyond 64 bits itself), or a real of at most IDEM_CANON_REAL_DIGITS
 * significant digits whose value is zero or within the normal range. A
 * malformed token is accepted here; jansson refuses it.
 */
static int idem_canon_number_exact(const unsigned char *s, size_t len)
{
    size_t i = 0, int_digits = 0, first_sig = 0, last_sig = 0;
    size_t ndigits = 0;
    int any_sig = 0, is_real = 0;
    long long exp10 = 0;
    int exp10_neg = 0;

    if (i < len && s[i] == '-')
        i++;
    for (; i < len && (idem_canon_is_digit(s[i]) || s[i] == '.'); i++) {
        if (s[i] == '.') {
            is_real = 1;
            continue;
        }
        if (!is_real)
            int_digits++;
        if (s[i] != '0') {
            if (!any_sig)
                first_sig = ndigits;
            last_sig = ndigits;
            any_sig = 1;
        }
        ndigits++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        is_real = 1;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            exp10_neg = s[i++] == '-';
        for (; i < len && idem_canon_is_digit(s[i]); i++) {
            if (exp10 < 100000)
                exp10 = exp10 * 10 + (s[i] - '0');
        }
    }
    if (!is_real || !any_sig)
        return 1;
    if (last_sig - first_sig + 1 > IDEM_CANON_REAL_DIGITS)
        return 0;
    /* The decimal exponent of the first significant digit. */
    exp10 = (exp10_neg ? -exp10 : exp10) + (long long)int_digits -
            (long long)first_sig - 1;
    return exp10 >= IDEM_CANON_REAL_EXP_MIN && exp10 <= IDEM_CANON_REAL_EXP_MAX;
}

/*
 * One linear pass over a JSON text that skips string contents (a '\'
 * escapes the next byte) and returns whether the text stays within
 * IDEM_FP_JSON_MAX_DEPTH nested arrays and objects and all its numbers are
 * exact (idem_canon_number_exact). For a valid text it is exact; for an
 * invalid one its answer does not matter, jansson refuses the text.
 */
static int idem_canon_json_prescan(const unsigned char *s, size_t len)
{
    size_t depth = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];

        switch (c) {
        case '"':
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\\')
                    i++;
            }
            break;
        case '[':
        case '{':
            if (++depth > IDEM_FP_JSON_MAX_DEPTH)
                return 0;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        default:
            if (c == '-' || idem_canon_is_digit(c)) {
                size_t start = i;

                while (i + 1 < len &&
                       (idem_canon_is_digit(s[i + 1]) || s[i + 1] == '.' ||
                        s[i + 1] == 'e' || s[i + 1] == 'E' || s[i + 1] == '+' ||
                        s[i + 1] == '-'))
                    i++;
                if (!idem_canon_number_exact(s + start, i + 1 - start))
                    return 0;
            }
            break;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* JSON canonical writer                                                     */
/* ------------------------------------------------------------------------ */

/* Output is staged here and handed to the sink in large pieces. */
#define IDEM_CANON_STAGE 4096
/* A string is escaped in chunks this long: 6 bytes out per byte at most. */
#define IDEM_CANON_ESC_CHUNK 256

typedef struct {
    idem_canon_sink_t *sink;
    size_t len;
    char stage[IDEM_CANON_STAGE];
} idem_canon_writer_t;

typedef struct {
    const char *key;
    size_t key_len;
    json_t *value;
} idem_canon_member_t;

static int idem_canon_flush(idem_canon_writer_t *w)
{
    int rc = 0;

    if (w->len > 0)
        rc = w->sink->write(w->sink, w->stage, w->len);
    w->len = 0;
    return rc;
}

/* Makes room for n bytes (n <= IDEM_CANON_STAGE) in the stage. */
static int idem_canon_reserve(idem_canon_writer_t *w, size_t n)
{
    if (IDEM_CANON_STAGE - w->len >= n)
        return 0;
    return idem_canon_flush(w);
}

static int idem_canon_put(idem_canon_writer_t *w, const char *s, size_t n)
{
    int rc;

    if (n > IDEM_CANON_STAGE) {
        rc = idem_canon_flush(w);
        return rc ? rc : w->sink->write(w->sink, s, n);
    }
    if ((rc = idem_canon_reserve(w, n)) != 0)
        return rc;
    memcpy(w->stage + w->len, s, n);
    w->len += n;
    return 0;
}

static int idem_canon_put_string(idem_canon_writer_t *w, const char *s,
                                 size_t n)
{
    int rc;

    if ((rc = idem_canon_put(w, "\"", 1)) != 0)
        return rc;
    while (n > 0) {
        size_t chunk = n < IDEM_CANON_ESC_CHUNK ? n : IDEM_CANON_ESC_CHUNK;

        if ((rc = idem_canon_reserve(w, 6 * chunk)) != 0)
            return rc;
        w->len += idem_json_escape(w->stage + w->len, IDEM_CANON_STAGE - w->len,
                                   s, chunk);
        s += chunk;
        n -= chunk;
    }
    return idem_canon_put(w, "\"", 1);
}

/*
 * Formats a real as "%.15g", with '.' as the decimal point whatever the
 * locale, and ".0" added when the text would read as an integer. The
 * pre-scan let through only reals of at most 15 significant digits in the
 * normal range, and those survive the trip through a double, so the text is
 * the number's shortest exact spelling: 0.1 stays "0.1".
 */
static int idem_canon_put_real(idem_canon_writer_t *w, double v)
{
    char buf[48];
    int n;
    int has_point = 0;

    n = snprintf(buf, sizeof(buf) - 2, "%.15g", v);
    if (n < 0 || (size_t)n >= sizeof(buf) - 2)
        return IDEM_EINVAL;
    for (int i = 0; i < n; i++) {
        char c = buf[i];

        if (c == 'e') {
            has_point = 1;
        } else if (!(c == '-' || c == '+' || (c >= '0' && c <= '9'))) {
            buf[i] = '.'; /* the locale's decimal point */
            has_point = 1;
        }
    }
    if (!has_point) {
        buf[n++] = '.';
        buf[n++] = '0';
    }
    return idem_canon_put(w, buf, (size_t)n);
}

/* Formats an integer in decimal; snprintf would dominate arrays of them. */
static int idem_canon_put_integer(idem_canon_writer_t *w, json_int_t v)
{
    char buf[24];
    size_t i = sizeof(buf);
    unsigned long long u =
        v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[--i] = '-';
    return idem_canon_put(w, buf + i, sizeof(buf) - i);
}

static int idem_canon_member_cmp(const void *a, const void *b)
{
    const idem_canon_member_t *x = a;
    const idem_canon_member_t *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n ? memcmp(x->key, y->key, n) : 0;

    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : (x->key_len > y->key_len);
}

static int idem_canon_put_value(idem_canon_writer_t *w, json_t *v);

static int idem_canon_put_object(idem_canon_writer_t *w, json_t *obj)
{
    idem_canon_member_t *members = NULL;
    size_t n = json_object_size(obj), i = 0;
    void *it;
    int rc;

    if (n > 0) {
        members = malloc(n * sizeof(*members));
        if (members == NULL)
            return IDEM_ENOMEM;
    }
    for (it = json_object_iter(obj); it != NULL && i < n;
         it = json_object_iter_next(obj, it), i++) {
        members[i].key = json_object_iter_key(it);
        members[i].key_len = json_object_iter_key_len(it);
        members[i].value = json_object_iter_value(it);
    }
    n = i;
    if (n > 1)
        qsort(members, n, sizeof(*members), idem_canon_member_cmp);

    if ((rc = idem_canon_put(w, "{", 1)) != 0)
        goto fail;
    for (i = 0; i < n; i++) {
        if (i > 0 && (rc = idem_canon_put(w, ",", 1)) != 0)
            goto fail;
        rc = idem_canon_put_string(w, members[i].key, members[i].key_len);
        if (rc != 0)
            goto fail;
        if ((rc = idem_canon_put(w, ":", 1)) != 0)
            goto fail;
        if ((rc = idem_canon_put_value(w, members[i].value)) != 0)
            goto fail;
    }
    rc = idem_canon_put(w, "}", 1);

fail:
    free(members);
    return rc;
}

static int idem_canon_put_value(idem_canon_writer_t *w, json_t *v)
{
    size_t n;
    int rc;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return idem_canon_put_object(w, v);
    case JSON_ARRAY:
        n = json_array_size(v);
        if ((rc = idem_canon_put(w, "[", 1)) != 0)
            return rc;
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && (rc = idem_canon_put(w, ",", 1)) != 0)
                return rc;
            if ((rc = idem_canon_put_value(w, json_array_get(v, i))) != 0)
                return rc;
        }
        return idem_canon_put(w, "]", 1);
    case JSON_STRING:
        return idem_canon_put_string(w, json_string_value(v),
                                     json_string_length(v));
    case JSON_INTEGER:
        return idem_canon_put_integer(w, json_integer_value(v));
    case JSON_REAL:
        return idem_canon_put_real(w, json_real_value(v));
    case JSON_TRUE:
        return idem_canon_put(w, "true", 4);
    case JSON_FALSE:
        return idem_canon_put(w, "false", 5);
    case JSON_NULL:
        return idem_canon_put(w, "null", 4);
    }
    return IDEM_EINVAL;
}

int idem_canon_json(const uint8_t *body, size_t len, idem_canon_sink_t *sink,
                    int *is_json)
{
    idem_canon_writer_t w;
    json_t *root;
    json_error_t err;
    int rc = 0;

    *is_json = 0;
    if (len == 0 || len > IDEM_FP_JSON_MAX_BYTES)
        return 0;
    if (!idem_canon_json_prescan(body, len))
        return 0;

    root = json_loadb((const char *)body, len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &err);
    if (root == NULL) {
        /* jansson cannot always tell its own allocation failures apart;
         * those it names are ours to report, the rest mean "not JSON". */
        return json_error_code(&err) == json_error_out_of_memory ? IDEM_ENOMEM
                                                                 : 0;
    }

    w.sink = sink;
    w.len = 0;
    if ((rc = idem_canon_put_value(&w, root)) != 0)
        goto fail;
    if ((rc = idem_canon_flush(&w)) != 0)
        goto fail;
    *is_json = 1;

fail:
    json_decref(root);
    return rc;
}
