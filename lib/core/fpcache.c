/*
 * fpcache.c — a small cache of request fingerprints, for the retries of
 * one client: a request whose inputs are byte for byte those of one seen
 * lately gets its fingerprint without being canonicalized again.
 *
 * The cache is keyed by the digest of the inputs as given, framed:
 *
 *     field("idemgate-fp-input-v2")
 *     u8(has scope) [field(scope)]               the caller's partition
 *     field(method) field(path) field(query) field(content type)
 *     (u8(present) [field(value)])...            the Content-Type fields,
 *                                                Content-Encoding, Host
 *     field(body)
 *     u64(nignore) field(entry)...               in the order given
 *     u64(nheaders) (field(name) u8(present) [field(value)])...
 *
 * Two requests with one input digest have the same inputs (SHA-256 does
 * not collide), and idem_fingerprint() is a function of its inputs, so a
 * hit gives what a computation would. The scope (the client's, in the
 * module) keeps the clients of one cache apart: a client cannot learn,
 * by the time its request takes, whether another sent the same one. A
 * retry has its first request's scope. Inputs that differ in a way the
 * fingerprint does not see (a header name's case, the order of ignore
 * entries) only miss. The digest costs one pass of SHA-256 over the
 * body; canonical JSON costs a parse, allocations and sorting.
 *
 * The table is direct-mapped: slot = the digest's first 8 bytes modulo a
 * power of two, a newer entry replacing the older one. Nothing is ever
 * stale, since an entry is a pure function's value; the cache holds no
 * pointer into any request.
 */
#include <stdlib.h>
#include <string.h>

#include "hash.h"

#define IDEM_FPC_TAG "idemgate-fp-input-v2"

typedef struct {
    idem_hash_t input; /* digest of the inputs                 */
    idem_hash_t fp;    /* their fingerprint                    */
    uint8_t kind;      /* idem_body_kind_t                     */
    uint8_t used;
} idem_fpc_entry_t;

struct idem_fp_cache_s {
    size_t mask; /* slots - 1 */
    uint64_t hits;
    uint64_t misses;
    idem_fpc_entry_t slot[];
};

int idem_fp_cache_create(size_t slots, idem_fp_cache_t **out)
{
    idem_fp_cache_t *c;
    size_t n = 1;

    if (out == NULL || slots == 0 || slots > IDEM_FP_CACHE_MAX_SLOTS)
        return IDEM_EINVAL;
    while (n < slots)
        n <<= 1;
    c = calloc(1, sizeof(*c) + n * sizeof(c->slot[0]));
    if (c == NULL)
        return IDEM_ENOMEM;
    c->mask = n - 1;
    *out = c;
    return 0;
}

void idem_fp_cache_free(idem_fp_cache_t *c)
{
    free(c);
}

void idem_fp_cache_stats(const idem_fp_cache_t *c, uint64_t *hits,
                         uint64_t *misses)
{
    if (hits != NULL)
        *hits = c != NULL ? c->hits : 0;
    if (misses != NULL)
        *misses = c != NULL ? c->misses : 0;
}

/* An input that may be absent (data NULL), which differs from "". */
static void idem_fpc_optional(idem_hash_ctx_t *h, idem_str_t s)
{
    idem_hash_u8(h, s.data != NULL);
    if (s.data != NULL)
        idem_hash_field(h, s.data, s.len);
}

/* The digest of scope and of every input of idem_fingerprint(), as
 * given: a field of idem_request_t added there must be added here. */
static int idem_fpc_input(const idem_hash_t *scope, const idem_request_t *req,
                          idem_hash_t *out)
{
    idem_hash_ctx_t h;
    int rc;

    if ((rc = idem_hash_init(&h)) != 0)
        return rc;
    idem_hash_field(&h, IDEM_FPC_TAG, sizeof(IDEM_FPC_TAG) - 1);
    idem_hash_u8(&h, scope != NULL);
    if (scope != NULL)
        idem_hash_field(&h, scope->bytes, sizeof(scope->bytes));
    idem_hash_field(&h, req->method.data, req->method.len);
    idem_hash_field(&h, req->path.data, req->path.len);
    idem_hash_field(&h, req->query.data, req->query.len);
    idem_hash_field(&h, req->content_type.data, req->content_type.len);
    idem_fpc_optional(&h, req->content_types);
    idem_fpc_optional(&h, req->content_encoding);
    idem_fpc_optional(&h, req->host);
    idem_hash_field(&h, req->body, req->body_len);
    idem_hash_u64(&h, (uint64_t)req->nignore);
    for (size_t i = 0; i < req->nignore; i++)
        idem_hash_field(&h, req->ignore[i].data, req->ignore[i].len);
    idem_hash_u64(&h, (uint64_t)req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const idem_header_t *hd = &req->headers[i];

        idem_hash_field(&h, hd->name.data, hd->name.len);
        idem_fpc_optional(&h, hd->value);
    }
    return idem_hash_final(&h, out);
}

int idem_fingerprint_cached(idem_fp_cache_t *c, const idem_hash_t *scope,
                            const idem_request_t *req, idem_hash_t *out,
                            idem_body_kind_t *kind)
{
    idem_fpc_entry_t *e;
    idem_hash_t input, fp;
    idem_body_kind_t k;
    uint64_t at;
    int rc;

    if (c == NULL || req == NULL || out == NULL)
        return IDEM_EINVAL;
    if (idem_fpc_input(scope, req, &input) != 0) {
        /* no room for the digest: compute, uncached */
        return idem_fingerprint(req, out, kind);
    }
    memcpy(&at, input.bytes, sizeof(at));
    e = &c->slot[at & c->mask];
    if (e->used && memcmp(e->input.bytes, input.bytes, IDEM_HASH_LEN) == 0) {
        c->hits++;
        *out = e->fp;
        if (kind != NULL)
            *kind = (idem_body_kind_t)e->kind;
        return 0;
    }
    if ((rc = idem_fingerprint(req, &fp, &k)) != 0)
        return rc;
    c->misses++;
    e->input = input;
    e->fp = fp;
    e->kind = (uint8_t)k;
    e->used = 1;
    *out = fp;
    if (kind != NULL)
        *kind = k;
    return 0;
}
