/*
 * hash.h — SHA-256 with framed fields, the one way libidem turns values into
 * digests (the scope in hash.c, the request fingerprint in fingerprint.c).
 *
 * Every value fed as a field is framed by its length, so that a sequence of
 * fields can never hash like a different sequence ("ab" + "c" differs from
 * "a" + "bc"). A digest is built in three steps:
 *
 *     idem_hash_ctx_t h;
 *     if ((rc = idem_hash_init(&h)) != 0) ...    allocates; may fail
 *     idem_hash_field(&h, data, len); ...        cannot fail by themselves:
 *     idem_hash_u8(&h, v); ...                   a failure is remembered
 *     rc = idem_hash_final(&h, &out);            reports it; frees the context
 *
 * idem_hash_discard() frees a context that will not be finished (a failure
 * path); it is safe on a context already finished or never initialized with
 * success.
 *
 * Errors: each function says. Thread safety: every function is
 * thread-safe on distinct contexts; a context is one thread's at a time.
 */
#ifndef IDEM_CORE_HASH_H
#define IDEM_CORE_HASH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "idem.h"

/*
 * Small feeds (a field's length, a flag byte) gather in buf and reach
 * OpenSSL together: one EVP call costs more than hashing a few bytes.
 */
#define IDEM_HASH_BUF 128

typedef struct {
    EVP_MD_CTX *md; /* NULL once finished or discarded */
    int failed;
    size_t len; /* bytes waiting in buf */
    uint8_t buf[IDEM_HASH_BUF];
} idem_hash_ctx_t;

/*
 * Starts a SHA-256 digest. On error h needs no free.
 * Errors: IDEM_ENOMEM.
 */
IDEM_MUST_CHECK int idem_hash_init(idem_hash_ctx_t *h);

/*
 * Feeds len raw bytes, unframed. data may be NULL when len is 0.
 * Errors: none (a failure is remembered for idem_hash_final; so for the
 * three below).
 */
void idem_hash_bytes(idem_hash_ctx_t *h, const void *data, size_t len);

/* Feeds one byte. */
void idem_hash_u8(idem_hash_ctx_t *h, uint8_t v);

/* Feeds v as 8 bytes, big-endian. */
void idem_hash_u64(idem_hash_ctx_t *h, uint64_t v);

/* Feeds a field: its length (idem_hash_u64) and then its bytes. */
void idem_hash_field(idem_hash_ctx_t *h, const void *data, size_t len);

/*
 * Writes the digest to *out and frees the context. On error *out is
 * untouched.
 * Errors: IDEM_ENOMEM (any step failed: OpenSSL fails a SHA-256 step only
 * when it cannot allocate).
 */
IDEM_MUST_CHECK int idem_hash_final(idem_hash_ctx_t *h, idem_hash_t *out);

/* Frees the context without a digest. Errors: none. */
void idem_hash_discard(idem_hash_ctx_t *h);

#endif /* IDEM_CORE_HASH_H */
