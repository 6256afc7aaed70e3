/*
 * buf.h — the growable byte buffer every part of the demo API builds on.
 *
 * A connection reads requests into one buffer and writes responses from
 * another; the API layer composes response bodies in a third. Buffers keep
 * their memory between requests, so a busy keep-alive connection allocates
 * nothing per request once its buffers have grown to fit.
 *
 * Conventions for the whole demo (every .c file of examples/inquiries): a
 * function that can fail returns int, 0 on success or a negative errno value
 * (-ENOMEM when memory runs out), and is marked INQ_MUST_CHECK.
 */
#ifndef INQ_BUF_H
#define INQ_BUF_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define INQ_MUST_CHECK   __attribute__((warn_unused_result))
#define INQ_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define INQ_MUST_CHECK
#define INQ_PRINTF(f, a)
#endif

/*
 * data is owned by the buffer and NULL until the first reservation; the
 * bytes data[0..len) are valid, data[len..cap) is spare room. A zeroed
 * inq_buf_t is an empty buffer.
 */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} inq_buf_t;

/* Ensures room for extra more bytes; data may move. 0 or -ENOMEM. */
INQ_MUST_CHECK int inq_buf_reserve(inq_buf_t *b, size_t extra);

/*
 * Makes cap at least cap bytes, allocating exactly that when it grows (for
 * buffers with a known final size). 0 or -ENOMEM.
 */
INQ_MUST_CHECK int inq_buf_grow(inq_buf_t *b, size_t cap);

/* Appends n bytes (p may be NULL when n is 0). 0 or -ENOMEM. */
INQ_MUST_CHECK int inq_buf_append(inq_buf_t *b, const void *p, size_t n);

/* Appends a NUL-terminated string, without its NUL. 0 or -ENOMEM. */
INQ_MUST_CHECK int inq_buf_append_str(inq_buf_t *b, const char *s);

/* Appends printf-formatted text, without a NUL. 0, -ENOMEM or -EINVAL. */
INQ_MUST_CHECK int inq_buf_printf(inq_buf_t *b, const char *fmt, ...)
    INQ_PRINTF(2, 3);

/*
 * Appends p[0..n) as a JSON string literal, quotes included. '"', '\\' and
 * control characters are escaped; bytes 0x80-0xFF are written as \u00XX so
 * that the result is valid JSON whatever the input. 0 or -ENOMEM.
 */
INQ_MUST_CHECK int inq_buf_append_json(inq_buf_t *b, const char *p, size_t n);

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void inq_buf_consume(inq_buf_t *b, size_t n);

/* Empties the buffer, and gives its memory back when cap exceeds keep. */
void inq_buf_reset(inq_buf_t *b, size_t keep);

/* Frees the memory; the buffer is empty and reusable afterwards. */
void inq_buf_free(inq_buf_t *b);

/* FNV-1a of p[0..n): the hash of the demo's tables (ids are random and
 * keys are the clients' own, so a cheap hash spreads them well). */
uint32_t inq_hash(const char *p, size_t n);

#endif
