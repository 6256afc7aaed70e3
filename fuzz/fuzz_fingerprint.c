/*
 * fuzz_fingerprint.c — libFuzzer target for idem_fingerprint() and the
 * canonical forms under it (lib/core/canon.h).
 *
 * Input layout:
 *
 *     byte 0      the Content-Type, an index into fuzz_fp_types[]
 *     byte 1      n: the query is the next n bytes (fewer if the input ends)
 *     the rest    the body
 *
 * Beyond "no crash, no read outside the input", the target checks:
 *   - the fingerprint is deterministic;
 *   - a body fingerprinted as JSON has a canonical form that is valid JSON,
 *     is its own canonical form, and fingerprints like the body;
 *   - a JSON body still fingerprints the same with whitespace around it;
 *   - the canonical pairs of a query or form body are their own canonical
 *     pairs, and the body kind follows the media type.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/canon.h"
#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static const char *const fuzz_fp_types[] = {
    "application/json",
    "application/vnd.api+json; charset=utf-8",
    " APPLICATION/JSON ;q=1",
    "application/x-www-form-urlencoded",
    "Application/X-WWW-Form-Urlencoded;charset=UTF-8",
    "text/plain",
    "",
    "multipart/form-data; boundary=x",
};
#define FUZZ_FP_NTYPES (sizeof(fuzz_fp_types) / sizeof(fuzz_fp_types[0]))

/* A sink that collects the canonical text. */
typedef struct {
    idem_canon_sink_t super;
    char *buf;
    size_t len;
    size_t cap;
} fuzz_fp_text_t;

static int fuzz_fp_text_write(idem_canon_sink_t *sink, const void *data,
                              size_t len)
{
    fuzz_fp_text_t *t = (fuzz_fp_text_t *)sink;

    if (len == 0)
        return 0;
    if (t->cap - t->len < len) {
        size_t cap = 2 * (t->len + len);
        char *buf = realloc(t->buf, cap);

        if (buf == NULL)
            return IDEM_ENOMEM;
        t->buf = buf;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    return 0;
}

static fuzz_fp_text_t fuzz_fp_text(void)
{
    return (fuzz_fp_text_t){{fuzz_fp_text_write}, NULL, 0, 0};
}

static idem_hash_t fuzz_fp(const idem_request_t *req, idem_body_kind_t *kind)
{
    idem_hash_t h;

    FUZZ_CHECK(idem_fingerprint(req, &h, kind) == 0);
    return h;
}

static int fuzz_fp_same(const idem_hash_t *a, const idem_hash_t *b)
{
    return memcmp(a->bytes, b->bytes, IDEM_HASH_LEN) == 0;
}

/* The canonical pairs of s[0..len), which the caller frees. */
static fuzz_fp_text_t fuzz_fp_pairs(const char *s, size_t len)
{
    idem_canon_pairs_t p;
    fuzz_fp_text_t t = fuzz_fp_text();

    FUZZ_CHECK(idem_canon_pairs_init(&p, s, len) == 0);
    FUZZ_CHECK(idem_canon_pairs_write(&p, &t.super) == 0);
    FUZZ_CHECK(t.len == p.len);
    idem_canon_pairs_free(&p);
    return t;
}

static void fuzz_fp_check_pairs(const char *s, size_t len)
{
    fuzz_fp_text_t once = fuzz_fp_pairs(s, len);
    fuzz_fp_text_t twice = fuzz_fp_pairs(once.buf, once.len);

    FUZZ_CHECK(once.len == twice.len);
    FUZZ_CHECK(once.len == 0 || memcmp(once.buf, twice.buf, once.len) == 0);
    free(once.buf);
    free(twice.buf);
}

static void fuzz_fp_check_json(const idem_request_t *req, const idem_hash_t *fp)
{
    fuzz_fp_text_t once = fuzz_fp_text(), twice = fuzz_fp_text();
    idem_request_t other = *req;
    idem_body_kind_t kind;
    idem_hash_t h;
    json_error_t err;
    json_t *j;
    uint8_t *spaced;
    int is_json = 0;

    FUZZ_CHECK(
        idem_canon_json(req->body, req->body_len, &once.super, &is_json) == 0);
    FUZZ_CHECK(is_json == 1);
    j = json_loadb(once.buf, once.len,
                   JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                   &err);
    FUZZ_CHECK(j != NULL);
    json_decref(j);

    FUZZ_CHECK(idem_canon_json((const uint8_t *)once.buf, once.len,
                               &twice.super, &is_json) == 0);
    FUZZ_CHECK(is_json == 1);
    FUZZ_CHECK(once.len == twice.len &&
               memcmp(once.buf, twice.buf, once.len) == 0);

    other.body = (const uint8_t *)once.buf;
    other.body_len = once.len;
    h = fuzz_fp(&other, &kind);
    FUZZ_CHECK(kind == IDEM_BODY_JSON && fuzz_fp_same(&h, fp));

    if (req->body_len + 3 <= IDEM_FP_JSON_MAX_BYTES) {
        spaced = malloc(req->body_len + 3);
        FUZZ_CHECK(spaced != NULL);
        spaced[0] = ' ';
        spaced[1] = '\n';
        memcpy(spaced + 2, req->body, req->body_len);
        spaced[req->body_len + 2] = '\t';
        other.body = spaced;
        other.body_len = req->body_len + 3;
        h = fuzz_fp(&other, &kind);
        FUZZ_CHECK(kind == IDEM_BODY_JSON && fuzz_fp_same(&h, fp));
        free(spaced);
    }
    free(once.buf);
    free(twice.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idem_request_t req;
    idem_body_kind_t kind, kind2;
    idem_hash_t fp, fp2;
    const char *ct;
    size_t qlen;

    if (size < 2)
        return 0;
    ct = fuzz_fp_types[data[0] % FUZZ_FP_NTYPES];
    qlen = data[1];
    data += 2;
    size -= 2;
    if (qlen > size)
        qlen = size;

    req.method = (idem_str_t){"POST", 4};
    req.path = (idem_str_t){"/v1/inquiries", 13};
    req.query = (idem_str_t){(const char *)data, qlen};
    req.content_type = (idem_str_t){ct, strlen(ct)};
    req.body = data + qlen;
    req.body_len = size - qlen;

    fp = fuzz_fp(&req, &kind);
    fp2 = fuzz_fp(&req, &kind2);
    FUZZ_CHECK(kind == kind2 && fuzz_fp_same(&fp, &fp2));

    fuzz_fp_check_pairs(req.query.data, req.query.len);
    switch (kind) {
    case IDEM_BODY_JSON:
        FUZZ_CHECK(strstr(ct, "json") || strstr(ct, "JSON"));
        fuzz_fp_check_json(&req, &fp);
        break;
    case IDEM_BODY_FORM:
        FUZZ_CHECK(strstr(ct, "orm-") || strstr(ct, "ORM-"));
        fuzz_fp_check_pairs((const char *)req.body, req.body_len);
        break;
    case IDEM_BODY_BYTES:
        break;
    default:
        FUZZ_CHECK(0);
    }
    return 0;
}
