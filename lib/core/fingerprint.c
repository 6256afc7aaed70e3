/*
 * fingerprint.c — the request fingerprint of SPEC §4: one SHA-256 that two
 * requests share exactly when they carry the same parameters.
 *
 * The digest covers, as framed fields (hash.h):
 *
 *     field("idemgate-fingerprint-v3")   the version of this layout
 *     field(method)                      as sent (methods are case-sensitive)
 *     field(path)                        as given by the caller
 *     field(canonical query)             canon.h: pairs percent-decoded,
 *                                        sorted by decoded name, encoded
 *                                        again in one way
 *     u8(media parsed)                   1 when the Content-Type parameters
 *                                        follow RFC 9110, else 0
 *     field(canonical media type)        canon.h: "type/subtype" lower-cased
 *                                        and its parameters sorted by name,
 *                                        values unquoted; or, when they do
 *                                        not parse, the parameters as sent
 *     u8(body kind)                      idem_body_kind_t
 *     field(SHA-256(canonical body))
 *     u8(present) field(Content-Type     every field, when there are
 *                       fields)          several, joined by ", "
 *     u8(present) field(Content-Encoding) as sent, fields joined by ", "
 *     u8(present) field(Host)            ASCII lower-cased
 *
 * and then, only when the request has options (idem_request_t's ignore
 * list or headers), so that a fingerprint without them stays what it was:
 *
 *     field("options-v1")
 *     u64(n) field(entry)...             the ignore entries, sorted by
 *                                        bytes, duplicates once
 *     u64(n) (field(name) u8(present)    the headers, sorted by lower-cased
 *             field(value))...           name, the name lower-cased, the
 *                                        first of a repeated name only
 *
 * Ignored query and form fields are left out of their canonical pairs,
 * ignored JSON values out of the canonical JSON (canon.h); the lists
 * themselves are hashed whatever the request holds, so two deployments
 * that compare differently never share a fingerprint.
 *
 * The body is reduced to its own digest first because its canonical text is
 * streamed and its length is known only at the end. How the body is made
 * canonical depends on the media type:
 *
 *     application/json, or any type      canonical JSON (canon.h), or the
 *     ending in "+json", without a       bytes when it is not trusted JSON
 *     charset or with charset UTF-8
 *     application/x-www-form-urlencoded  canonical pairs, like the query
 *     anything else, or none             the bytes as they are
 *
 * but a request with a Content-Encoding (the API decodes the body first)
 * or with several Content-Type fields (the API may read any of them) has
 * its body compared as bytes whatever its type; so has a JSON body whose
 * media type parameters do not parse (its charset is not known).
 *
 * Changing anything above changes every fingerprint, and so turns every
 * stored key into a mismatch: bump the version tag with it. (v1 compared
 * pairs undecoded and left the media type parameters out; v2 read JSON
 * numbers as doubles, canonicalized JSON of any charset and left out the
 * other Content-Type fields, Content-Encoding and Host.)
 */
#include <string.h>
#include <strings.h>

#include "canon.h"
#include "hash.h"

#define IDEM_FP_TAG "idemgate-fingerprint-v3"

/* A sink that feeds the canonical text into a digest. */
typedef struct {
    idem_canon_sink_t super;
    idem_hash_ctx_t *hash;
} idem_fp_hash_sink_t;

static int idem_fp_hash_write(idem_canon_sink_t *sink, const void *data,
                              size_t len)
{
    idem_fp_hash_sink_t *hs = (idem_fp_hash_sink_t *)sink;

    idem_hash_bytes(hs->hash, data, len);
    return 0;
}

/* ASCII lower case, whatever the locale: header names are ASCII. */
static int idem_fp_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int idem_fp_media_is(idem_str_t media, const char *lower)
{
    size_t n = strlen(lower);

    return media.len == n && strncasecmp(media.data, lower, n) == 0;
}

static int idem_fp_media_is_json(idem_str_t media)
{
    static const char suffix[] = "+json";
    size_t n = sizeof(suffix) - 1;

    if (idem_fp_media_is(media, "application/json"))
        return 1;
    return media.len > n &&
           strncasecmp(media.data + media.len - n, suffix, n) == 0;
}

/* Whether the parameter value v[0..n) (a token, or a quoted-string with
 * its quotes) is "utf-8" or "utf8" in any case. */
static int idem_fp_value_is_utf8(const char *v, size_t n)
{
    char buf[6];
    size_t len = 0;

    if (n >= 2 && v[0] == '"') {
        v++;
        n -= 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && i + 1 < n)
            i++; /* a quoted-pair: the byte after the '\\' */
        if (len == sizeof(buf))
            return 0;
        buf[len++] = (char)idem_fp_lower((unsigned char)v[i]);
    }
    return (len == 5 && memcmp(buf, "utf-8", 5) == 0) ||
           (len == 4 && memcmp(buf, "utf8", 4) == 0);
}

/*
 * Whether a JSON body of media type m is text that canon.h reads as its
 * API does: UTF-8, which is what a missing charset means for JSON (RFC
 * 8259), or every charset parameter UTF-8. Parameters that do not parse
 * hide the charset: no.
 */
static int idem_fp_media_is_utf8(const idem_canon_media_t *m)
{
    const idem_canon_param_t *params = m->n > 1 ? m->params : &m->one_;

    if (!m->parsed)
        return 0;
    for (size_t i = 0; i < m->n; i++) {
        if (params[i].name_len == 7 &&
            strncasecmp(params[i].name, "charset", 7) == 0 &&
            !idem_fp_value_is_utf8(params[i].value, params[i].value_len))
            return 0;
    }
    return 1;
}

/*
 * Computes the digest of the canonical body into *out and its kind into
 * *kind. Returns 0 or IDEM_ENOMEM.
 */
static int idem_fp_body(const idem_request_t *req, const idem_canon_media_t *m,
                        idem_hash_t *out, idem_body_kind_t *kind)
{
    idem_str_t media = m->type;
    int as_sent =
        req->content_encoding.data != NULL || req->content_types.data != NULL;
    idem_hash_ctx_t h;
    idem_fp_hash_sink_t sink = {{idem_fp_hash_write}, &h};
    idem_canon_pairs_t pairs;
    int is_json = 0;
    int rc;

    if ((rc = idem_hash_init(&h)) != 0)
        return rc;

    *kind = IDEM_BODY_BYTES;
    if (as_sent) {
        /* the bytes, below */
    } else if (idem_fp_media_is_json(media) && idem_fp_media_is_utf8(m)) {
        rc = idem_canon_json_ignoring(req->body, req->body_len, req->ignore,
                                      req->nignore, &sink.super, &is_json);
        if (rc != 0)
            goto fail;
        if (is_json)
            *kind = IDEM_BODY_JSON;
    } else if (idem_fp_media_is(media, "application/x-www-form-urlencoded")) {
        rc = idem_canon_pairs_init(&pairs, (const char *)req->body,
                                   req->body_len);
        if (rc != 0)
            goto fail;
        if (req->nignore > 0)
            idem_canon_pairs_drop(&pairs, req->ignore, req->nignore);
        rc = idem_canon_pairs_write(&pairs, &sink.super);
        idem_canon_pairs_free(&pairs);
        if (rc != 0)
            goto fail;
        *kind = IDEM_BODY_FORM;
    }
    if (*kind == IDEM_BODY_BYTES)
        idem_hash_bytes(&h, req->body, req->body_len);
    return idem_hash_final(&h, out);

fail:
    idem_hash_discard(&h);
    return rc;
}

int idem_fp_ignore_check(const char *s, size_t len)
{
    if (s == NULL || len == 0)
        return IDEM_EINVAL;
    if (s[0] != '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '~' &&
            (i + 1 == len || (s[i + 1] != '0' && s[i + 1] != '1')))
            return IDEM_EINVAL;
    }
    return 0;
}

static int idem_fp_str_cmp(idem_str_t a, idem_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, n) : 0;

    if (c != 0)
        return c;
    return a.len < b.len ? -1 : (a.len > b.len);
}

static int idem_fp_name_cmp(idem_str_t a, idem_str_t b)
{
    size_t n = a.len < b.len ? a.len : b.len;

    for (size_t i = 0; i < n; i++) {
        int c = idem_fp_lower((unsigned char)a.data[i]);
        int d = idem_fp_lower((unsigned char)b.data[i]);

        if (c != d)
            return c < d ? -1 : 1;
    }
    return a.len < b.len ? -1 : (a.len > b.len);
}

/*
 * The index of the smallest of the n items (each at base + i * size, its
 * key an idem_str_t at the start) that is greater than prev (any, when
 * prev is NULL), the first of equal ones; n when there is none. The lists
 * are a few configured names, so a selection in O(n^2) that needs no
 * memory is the right sort.
 */
static size_t idem_fp_next(const void *base, size_t size, size_t n,
                           const idem_str_t *prev,
                           int (*cmp)(idem_str_t, idem_str_t))
{
    size_t best = n;

    for (size_t i = 0; i < n; i++) {
        const idem_str_t *k =
            (const idem_str_t *)((const char *)base + i * size);

        if (prev != NULL && cmp(*k, *prev) <= 0)
            continue;
        if (best == n || cmp(*k, *(const idem_str_t *)((const char *)base +
                                                       best * size)) < 0)
            best = i;
    }
    return best;
}

/* Feeds a field of s lower-cased. */
static void idem_fp_hash_lower(idem_hash_ctx_t *h, idem_str_t s)
{
    char buf[64];
    size_t i = 0;

    idem_hash_u64(h, (uint64_t)s.len);
    while (i < s.len) {
        size_t n = 0;

        for (; n < sizeof(buf) && i < s.len; n++, i++)
            buf[n] = (char)idem_fp_lower((unsigned char)s.data[i]);
        idem_hash_bytes(h, buf, n);
    }
}

/* The options part of the layout above. */
static void idem_fp_hash_options(idem_hash_ctx_t *h, const idem_request_t *req)
{
    static const char tag[] = "options-v1";
    const idem_str_t *prev = NULL;
    size_t n = 0, i;

    idem_hash_field(h, tag, sizeof(tag) - 1);
    while ((i = idem_fp_next(req->ignore, sizeof(*req->ignore), req->nignore,
                             prev, idem_fp_str_cmp)) < req->nignore) {
        prev = &req->ignore[i];
        n++;
    }
    idem_hash_u64(h, (uint64_t)n);
    prev = NULL;
    while ((i = idem_fp_next(req->ignore, sizeof(*req->ignore), req->nignore,
                             prev, idem_fp_str_cmp)) < req->nignore) {
        prev = &req->ignore[i];
        idem_hash_field(h, prev->data, prev->len);
    }

    n = 0;
    prev = NULL;
    while ((i = idem_fp_next(req->headers, sizeof(*req->headers), req->nheaders,
                             prev, idem_fp_name_cmp)) < req->nheaders) {
        prev = &req->headers[i].name;
        n++;
    }
    idem_hash_u64(h, (uint64_t)n);
    prev = NULL;
    while ((i = idem_fp_next(req->headers, sizeof(*req->headers), req->nheaders,
                             prev, idem_fp_name_cmp)) < req->nheaders) {
        const idem_header_t *hd = &req->headers[i];

        prev = &hd->name;
        idem_fp_hash_lower(h, hd->name);
        idem_hash_u8(h, hd->value.data != NULL);
        idem_hash_field(h, hd->value.data, hd->value.len);
    }
}

int idem_fingerprint(const idem_request_t *req, idem_hash_t *out,
                     idem_body_kind_t *kind)
{
    idem_hash_ctx_t h;
    idem_fp_hash_sink_t sink = {{idem_fp_hash_write}, &h};
    idem_canon_pairs_t query;
    idem_canon_media_t media;
    idem_body_kind_t body_kind;
    idem_hash_t body_hash;
    int rc;

    for (size_t i = 0; i < req->nignore; i++) {
        if (idem_fp_ignore_check(req->ignore[i].data, req->ignore[i].len) != 0)
            return IDEM_EINVAL;
    }
    rc = idem_canon_media_init(&media, req->content_type.data,
                               req->content_type.len);
    if (rc != 0)
        return rc;
    rc = idem_canon_pairs_init(&query, req->query.data, req->query.len);
    if (rc != 0)
        goto fail_media;
    if (req->nignore > 0)
        idem_canon_pairs_drop(&query, req->ignore, req->nignore);
    rc = idem_fp_body(req, &media, &body_hash, &body_kind);
    if (rc != 0)
        goto fail_query;
    if ((rc = idem_hash_init(&h)) != 0)
        goto fail_query;

    idem_hash_field(&h, IDEM_FP_TAG, sizeof(IDEM_FP_TAG) - 1);
    idem_hash_field(&h, req->method.data, req->method.len);
    idem_hash_field(&h, req->path.data, req->path.len);
    idem_hash_u64(&h, (uint64_t)query.len);
    if ((rc = idem_canon_pairs_write(&query, &sink.super)) != 0)
        goto fail;
    idem_hash_u8(&h, (uint8_t)media.parsed);
    idem_hash_u64(&h, (uint64_t)media.len);
    if ((rc = idem_canon_media_write(&media, &sink.super)) != 0)
        goto fail;
    idem_hash_u8(&h, (uint8_t)body_kind);
    idem_hash_field(&h, body_hash.bytes, sizeof(body_hash.bytes));
    idem_hash_u8(&h, req->content_types.data != NULL);
    idem_hash_field(&h, req->content_types.data, req->content_types.len);
    idem_hash_u8(&h, req->content_encoding.data != NULL);
    idem_hash_field(&h, req->content_encoding.data, req->content_encoding.len);
    idem_hash_u8(&h, req->host.data != NULL);
    idem_fp_hash_lower(&h, req->host);
    if (req->nignore > 0 || req->nheaders > 0)
        idem_fp_hash_options(&h, req);
    if ((rc = idem_hash_final(&h, out)) != 0)
        goto fail;
    if (kind != NULL)
        *kind = body_kind;

fail:
    idem_hash_discard(&h);
fail_query:
    idem_canon_pairs_free(&query);
fail_media:
    idem_canon_media_free(&media);
    return rc;
}
