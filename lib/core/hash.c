/*
 * hash.c — SHA-256 over framed fields (OpenSSL's EVP interface) and the
 * scope of SPEC §2.
 *
 * The scope is the digest of
 *
 *     field("idemgate-scope-v1") u64(n) { u8(0) | u8(1) field(value) }*n
 *
 * so an absent value (u8 0) differs from an empty one (u8 1, length 0), the
 * order of the values matters, and no value can spill into the next. Only
 * the digest leaves this file; the values themselves are never copied.
 */
#include <pthread.h>
#include <string.h>

#include "hash.h"

#define IDEM_HASH_SCOPE_TAG "idemgate-scope-v1"

/*
 * SHA-256 fetched from OpenSSL's provider once per process: a digest
 * started with EVP_sha256() looks its implementation up again every
 * time. It stays for the process's life (NULL: the fetch failed, and
 * EVP_sha256() serves instead).
 */
static EVP_MD *idem_hash_sha256;
static pthread_once_t idem_hash_once = PTHREAD_ONCE_INIT;

static void idem_hash_fetch(void)
{
    idem_hash_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int idem_hash_init(idem_hash_ctx_t *h)
{
    const EVP_MD *sha;
    EVP_MD_CTX *md;

    (void)pthread_once(&idem_hash_once, idem_hash_fetch);
    sha = idem_hash_sha256 != NULL ? idem_hash_sha256 : EVP_sha256();
    md = EVP_MD_CTX_new();
    if (md == NULL)
        goto fail;
    if (EVP_DigestInit_ex(md, sha, NULL) != 1)
        goto fail;
    h->md = md;
    h->failed = 0;
    h->len = 0;
    return 0;

fail:
    EVP_MD_CTX_free(md);
    h->md = NULL;
    h->failed = 1;
    return IDEM_ENOMEM;
}

/* Hands the gathered bytes to OpenSSL. */
static void idem_hash_flush(idem_hash_ctx_t *h)
{
    if (h->len > 0 && EVP_DigestUpdate(h->md, h->buf, h->len) != 1)
        h->failed = 1;
    h->len = 0;
}

void idem_hash_bytes(idem_hash_ctx_t *h, const void *data, size_t len)
{
    if (len == 0 || h->md == NULL)
        return;
    if (len <= sizeof(h->buf) - h->len) {
        memcpy(h->buf + h->len, data, len);
        h->len += len;
        return;
    }
    idem_hash_flush(h);
    if (len < sizeof(h->buf)) {
        memcpy(h->buf, data, len);
        h->len = len;
    } else if (EVP_DigestUpdate(h->md, data, len) != 1) {
        h->failed = 1;
    }
}

void idem_hash_u8(idem_hash_ctx_t *h, uint8_t v)
{
    idem_hash_bytes(h, &v, 1);
}

void idem_hash_u64(idem_hash_ctx_t *h, uint64_t v)
{
    uint8_t be[8];

    for (int i = 7; i >= 0; i--) {
        be[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
    idem_hash_bytes(h, be, sizeof(be));
}

void idem_hash_field(idem_hash_ctx_t *h, const void *data, size_t len)
{
    idem_hash_u64(h, (uint64_t)len);
    idem_hash_bytes(h, data, len);
}

int idem_hash_final(idem_hash_ctx_t *h, idem_hash_t *out)
{
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    int rc = IDEM_ENOMEM;

    if (h->md == NULL)
        goto done;
    idem_hash_flush(h);
    if (h->failed)
        goto done;
    if (EVP_DigestFinal_ex(h->md, digest, &digest_len) != 1 ||
        digest_len != IDEM_HASH_LEN)
        goto done;
    memcpy(out->bytes, digest, IDEM_HASH_LEN);
    rc = 0;

done:
    idem_hash_discard(h);
    return rc;
}

void idem_hash_discard(idem_hash_ctx_t *h)
{
    EVP_MD_CTX_free(h->md);
    h->md = NULL;
}

int idem_scope_hash(const idem_str_t *values, size_t n, idem_hash_t *out)
{
    idem_hash_ctx_t h;
    int rc;

    rc = idem_hash_init(&h);
    if (rc != 0)
        return rc;
    idem_hash_field(&h, IDEM_HASH_SCOPE_TAG, sizeof(IDEM_HASH_SCOPE_TAG) - 1);
    idem_hash_u64(&h, (uint64_t)n);
    for (size_t i = 0; i < n; i++) {
        if (values[i].data == NULL) {
            idem_hash_u8(&h, 0);
            continue;
        }
        idem_hash_u8(&h, 1);
        idem_hash_field(&h, values[i].data, values[i].len);
    }
    return idem_hash_final(&h, out);
}
