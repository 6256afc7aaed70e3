/*
 * fuzz_fingerprint.c — libFuzzer target for idem_fingerprint() and the
 * canonical forms under it (lib/core/canon.h).
 *
 * Input layout:
 *
 *     byte 0      bits 0-2: the Content-Type, an index into fuzz_fp_types[];
 *                 bits 3-4: the ignore list, an index into fuzz_fp_ignores[]
 *                 (0: none)
 *     byte 1      n: the query is the next n bytes (fewer if the input ends)
 *     the rest    the body
 *
 * Beyond "no crash, no read outside the input", the target checks:
 *   - the fingerprint is deterministic;
 *   - a body fingerprinted as JSON has a canonical form that is valid JSON
 *     (to jansson, but for a number jansson cannot store, which canon.h
 *     keeps as written), is its own canonical form, and fingerprints like
 *     the body;
 *   - a JSON body still fingerprints the same with whitespace around it;
 *   - the canonical pairs of a query or form body are their own canonical
 *     pairs, and the body kind follows the media type;
 *   - with an ignore list, the canonical JSON reads as the document with
 *     the pointed values removed by a reference written apart (on
 *     jansson's tree; json_equal), and the pairs left name no ignored
 *     field.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/canon.h"
#include "fuzz_text.h"
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

#define FUZZ_FP_MAX_IGNORE 6

/* Ignore lists: pointers and field names that short inputs often reach. */
static const char *const fuzz_fp_ignores[][FUZZ_FP_MAX_IGNORE + 1] = {
    {NULL},
    {"/a", "/0", "a", NULL},
    {"/a/b", "/1/0", "/~01", "/", "/0/a", NULL},
    {"/a/0", "/b/1/c", "/a~1b", "/m~0", "ts", "%", NULL},
};

/* The fingerprint of req; the cache of fingerprints (kept across inputs,
 * 16 slots) must give the same, found or computed. */
static idem_hash_t fuzz_fp(const idem_request_t *req, idem_body_kind_t *kind)
{
    static idem_fp_cache_t *cache;
    idem_body_kind_t k, ck;
    idem_hash_t h, c;

    FUZZ_CHECK(idem_fingerprint(req, &h, &k) == 0);
    if (cache == NULL)
        FUZZ_CHECK(idem_fp_cache_create(16, &cache) == 0);
    for (int i = 0; i < 2; i++) {
        FUZZ_CHECK(idem_fingerprint_cached(cache, NULL, req, &c, &ck) == 0);
        FUZZ_CHECK(memcmp(c.bytes, h.bytes, IDEM_HASH_LEN) == 0 && ck == k);
    }
    if (kind != NULL)
        *kind = k;
    return h;
}

static int fuzz_fp_same(const idem_hash_t *a, const idem_hash_t *b)
{
    return memcmp(a->bytes, b->bytes, IDEM_HASH_LEN) == 0;
}

/* The canonical pairs of s[0..len), which the caller frees. */
static fuzz_text_t fuzz_fp_pairs(const char *s, size_t len)
{
    idem_canon_pairs_t p;
    fuzz_text_t t = fuzz_text();

    FUZZ_CHECK(idem_canon_pairs_init(&p, s, len) == 0);
    FUZZ_CHECK(idem_canon_pairs_write(&p, &t.super) == 0);
    FUZZ_CHECK(t.len == p.len);
    idem_canon_pairs_free(&p);
    return t;
}

static void fuzz_fp_check_pairs(const char *s, size_t len)
{
    fuzz_text_t once = fuzz_fp_pairs(s, len);
    fuzz_text_t twice = fuzz_fp_pairs(once.buf, once.len);

    FUZZ_CHECK(once.len == twice.len);
    FUZZ_CHECK(once.len == 0 || memcmp(once.buf, twice.buf, once.len) == 0);
    free(once.buf);
    free(twice.buf);
}

static void fuzz_fp_check_json(const idem_request_t *req, const idem_hash_t *fp)
{
    fuzz_text_t once = fuzz_text(), twice = fuzz_text();
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
    FUZZ_CHECK(j != NULL ||
               json_error_code(&err) == json_error_numeric_overflow);
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

/* ---- the reference for ignored JSON values ---- */

/* Replaces what pointer p names in root with the sentinel, if anything. */
static void fuzz_fp_ref_mark(json_t *root, const char *p, json_t *sentinel)
{
    json_t *parent = NULL, *cur = root;
    char tok[256];

    while (*p == '/') {
        const char *end = strchr(p + 1, '/');
        size_t n = end ? (size_t)(end - p - 1) : strlen(p + 1), t = 0;

        FUZZ_CHECK(n < sizeof(tok));
        /* RFC 6901: "~1" first, then "~0" */
        for (size_t i = 0; i < n; i++) {
            if (p[1 + i] == '~' && i + 1 < n && p[2 + i] == '1') {
                tok[t++] = '/';
                i++;
            } else if (p[1 + i] == '~' && i + 1 < n && p[2 + i] == '0') {
                tok[t++] = '~';
                i++;
            } else {
                tok[t++] = p[1 + i];
            }
        }
        parent = cur;
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, tok, t);
        } else if (json_is_array(cur)) {
            size_t idx = 0, ok = t > 0 && (t == 1 || tok[0] != '0');

            for (size_t i = 0; i < t && ok; i++) {
                ok = tok[i] >= '0' && tok[i] <= '9';
                idx = idx * 10 + (size_t)(tok[i] - '0');
            }
            cur = ok && idx < json_array_size(cur) ? json_array_get(cur, idx)
                                                   : NULL;
            if (cur != NULL && end == NULL) {
                FUZZ_CHECK(json_array_set(parent, idx, sentinel) == 0);
                return;
            }
        } else {
            cur = NULL;
        }
        if (cur == NULL)
            return;
        if (end == NULL) {
            FUZZ_CHECK(json_object_setn(parent, tok, t, sentinel) == 0);
            return;
        }
        p = end;
    }
}

/* Removes every member and element that is the sentinel. */
static void fuzz_fp_ref_strip(json_t *v, json_t *sentinel)
{
    if (json_is_object(v)) {
        const char *k;
        size_t klen;
        json_t *m;
        void *tmp;

        json_object_keylen_foreach_safe(v, tmp, k, klen, m)
        {
            if (m == sentinel)
                FUZZ_CHECK(json_object_deln(v, k, klen) == 0);
            else
                fuzz_fp_ref_strip(m, sentinel);
        }
    } else if (json_is_array(v)) {
        for (size_t i = json_array_size(v); i > 0; i--) {
            json_t *e = json_array_get(v, i - 1);

            if (e == sentinel)
                FUZZ_CHECK(json_array_remove(v, i - 1) == 0);
            else
                fuzz_fp_ref_strip(e, sentinel);
        }
    }
}

static void fuzz_fp_check_ignored_json(const idem_request_t *req)
{
    fuzz_text_t got = fuzz_text();
    fuzz_text_t again = fuzz_text();
    json_t *root, *sentinel, *back;
    json_error_t err;
    int is_json = 0;

    FUZZ_CHECK(idem_canon_json_ignoring(req->body, req->body_len, req->ignore,
                                        req->nignore, &got.super,
                                        &is_json) == 0);
    FUZZ_CHECK(is_json == 1);
    FUZZ_CHECK(idem_canon_json_ignoring((const uint8_t *)got.buf, got.len,
                                        req->ignore, req->nignore, &again.super,
                                        &is_json) == 0);
    FUZZ_CHECK(is_json == 1 && again.len <= got.len);

    root = json_loadb((const char *)req->body, req->body_len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &err);
    if (root == NULL) {
        /* a number jansson cannot store: no reference tree */
        FUZZ_CHECK(json_error_code(&err) == json_error_numeric_overflow);
        goto done;
    }
    sentinel = json_object();
    FUZZ_CHECK(sentinel != NULL);
    for (size_t i = 0; i < req->nignore; i++) {
        if (req->ignore[i].data[0] == '/')
            fuzz_fp_ref_mark(root, req->ignore[i].data, sentinel);
    }
    fuzz_fp_ref_strip(root, sentinel);
    /* numbers are copied as written, so they read back as jansson read
     * them from the body */
    back = json_loadb(got.buf, got.len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &err);
    FUZZ_CHECK(back != NULL && json_equal(root, back));
    json_decref(back);
    json_decref(sentinel);
    json_decref(root);

done:
    free(got.buf);
    free(again.buf);
}

/* The pairs of s[0..len) left by the ignore list name no ignored field. */
static void fuzz_fp_check_ignored_pairs(const idem_request_t *req,
                                        const char *s, size_t len)
{
    idem_canon_pairs_t p;
    fuzz_text_t t = fuzz_text();

    FUZZ_CHECK(idem_canon_pairs_init(&p, s, len) == 0);
    idem_canon_pairs_drop(&p, req->ignore, req->nignore);
    FUZZ_CHECK(idem_canon_pairs_write(&p, &t.super) == 0);
    FUZZ_CHECK(t.len == p.len);
    for (size_t i = 0; i < p.n; i++) {
        const idem_canon_seg_t *seg = p.n > 1 ? &p.segs[i] : &p.one_;

        for (size_t k = 0; k < req->nignore; k++) {
            if (req->ignore[k].data[0] != '/')
                FUZZ_CHECK(!idem_canon_seg_named(seg, req->ignore[k].data,
                                                 req->ignore[k].len));
        }
    }
    idem_canon_pairs_free(&p);
    free(t.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idem_str_t ignore[FUZZ_FP_MAX_IGNORE];
    const char *const *names;
    idem_request_t req;
    idem_body_kind_t kind, kind2;
    idem_hash_t fp, fp2;
    const char *ct;
    size_t qlen;

    if (size < 2)
        return 0;
    ct = fuzz_fp_types[data[0] % FUZZ_FP_NTYPES];
    names = fuzz_fp_ignores[(data[0] >> 3) % 4];
    qlen = data[1];
    data += 2;
    size -= 2;
    if (qlen > size)
        qlen = size;

    memset(&req, 0, sizeof(req));
    for (; names[req.nignore] != NULL; req.nignore++) {
        const char *n = names[req.nignore];

        ignore[req.nignore] = (idem_str_t){n, strlen(n)};
        FUZZ_CHECK(idem_fp_ignore_check(n, strlen(n)) == 0);
    }
    req.ignore = req.nignore ? ignore : NULL;
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
    if (req.nignore > 0)
        fuzz_fp_check_ignored_pairs(&req, req.query.data, req.query.len);
    switch (kind) {
    case IDEM_BODY_JSON:
        FUZZ_CHECK(strstr(ct, "json") || strstr(ct, "JSON"));
        if (req.nignore > 0)
            fuzz_fp_check_ignored_json(&req);
        else
            fuzz_fp_check_json(&req, &fp);
        break;
    case IDEM_BODY_FORM:
        FUZZ_CHECK(strstr(ct, "orm-") || strstr(ct, "ORM-"));
        fuzz_fp_check_pairs((const char *)req.body, req.body_len);
        if (req.nignore > 0)
            fuzz_fp_check_ignored_pairs(&req, (const char *)req.body,
                                        req.body_len);
        break;
    case IDEM_BODY_BYTES:
        break;
    default:
        FUZZ_CHECK(0);
    }
    return 0;
}
