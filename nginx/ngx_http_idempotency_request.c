
/*
 * ngx_http_idempotency_request.c — what the module reads off a request:
 * its key (Idempotency-Key and the idempotency_key_header names), its
 * scope (idempotency_scope), the parameters its fingerprint compares and,
 * for a small body in memory, the fingerprint itself; and whether any of
 * it reached an upstream. Nothing here changes a request's state.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_send.h"


static ngx_uint_t ngx_http_idempotency_is_key_header(
    ngx_http_idempotency_loc_conf_t *ilcf, ngx_str_t *name);
static int ngx_http_idempotency_read_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf,
    ngx_uint_t *found);
static ngx_int_t ngx_http_idempotency_fp_header(ngx_http_request_t *r,
    ngx_str_t *name, idem_str_t *value, ngx_uint_t *count);
static ngx_int_t ngx_http_idempotency_request_forwarded(ngx_http_request_t *r,
    idem_request_t *req);


static ngx_str_t  ngx_http_idempotency_header = ngx_string("Idempotency-Key");
static ngx_str_t  ngx_http_idempotency_content_type =
    ngx_string("content-type");
static ngx_str_t  ngx_http_idempotency_content_encoding =
    ngx_string("content-encoding");


/* Whether a request header named name carries the key under ilcf. */

static ngx_uint_t
ngx_http_idempotency_is_key_header(ngx_http_idempotency_loc_conf_t *ilcf,
    ngx_str_t *name)
{
    ngx_str_t   *names;
    ngx_uint_t   i;

    if (name->len == ngx_http_idempotency_header.len
        && ngx_strncasecmp(name->data, ngx_http_idempotency_header.data,
                           name->len) == 0)
    {
        return 1;
    }

    if (ilcf->key_headers == NULL) {
        return 0;
    }

    names = ilcf->key_headers->elts;

    for (i = 0; i < ilcf->key_headers->nelts; i++) {
        if (name->len == names[i].len
            && ngx_strncasecmp(name->data, names[i].data, name->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * Reads every key header into ctx->key: 0, with *found set when there was
 * one, or the IDEM_EKEY... error of the first bad one (IDEM_EKEYDUP when
 * two of them disagree).
 */

static int
ngx_http_idempotency_read_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf,
    ngx_uint_t *found)
{
    int               err;
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;
    u_char            key[IDEM_KEY_MAX];

    *found = 0;
    err = 0;
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (!ngx_http_idempotency_is_key_header(ilcf, &h[i].key)) {
            continue;
        }

        err = idem_key_parse((char *) h[i].value.data, h[i].value.len,
                             (char *) key, &len);
        if (err != 0) {
            ctx->key_header = h[i].key;
            break;
        }

        if (*found
            && (len != ctx->key_len || ngx_memcmp(key, ctx->key, len) != 0))
        {
            ctx->key_header = h[i].key;
            err = IDEM_EKEYDUP;
            break;
        }

        ngx_memcpy(ctx->key, key, len);
        ctx->key_len = len;
        *found = 1;
    }

    return err;
}


/*
 * Finds and parses the key header(s): Idempotency-Key and those of
 * idempotency_key_header; every one present must carry the same key.
 * NGX_DECLINED: no key and none required. NGX_OK: ctx->key is set, or
 * ctx->answer holds a 400 (a bad or missing key, or a request target with
 * a fragment).
 */

ngx_int_t
ngx_http_idempotency_request_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf)
{
    int               err;
    ngx_uint_t        found;
    idem_err_kind_t   kind;

    err = ngx_http_idempotency_read_key(r, ctx, ilcf, &found);

    if (err == 0 && !found) {
        if (!ilcf->require_key) {
            return NGX_DECLINED;
        }

        err = IDEM_EKEYMISSING;
    }

    if (err != 0) {
        kind = (err == IDEM_EKEYMISSING) ? IDEM_ERR_KEY_MISSING
                                         : IDEM_ERR_KEY_INVALID;

    } else if (ngx_strlchr(r->unparsed_uri.data,
                           r->unparsed_uri.data + r->unparsed_uri.len, '#')
               != NULL)
    {
        /*
         * nginx forwards the target whole, fragment included, while its
         * arguments stop at the '#': such a request is refused rather than
         * fingerprinted in part (README "What the fingerprint compares")
         */
        kind = IDEM_ERR_TARGET_FRAGMENT;

    } else {
        return NGX_OK;
    }

    ctx->outcome = NGX_HTTP_IDEM_OUT_INVALID;
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_INVALID, 1);

    if (ngx_http_idempotency_send_error_answer(r, ctx, kind, err) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the body is not needed: discard it so keepalive stays possible */
    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    return NGX_OK;
}


/* The scope of a request under ilcf: the hash of its scope values. */

ngx_int_t
ngx_http_idempotency_request_scope(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_hash_t *out)
{
    ngx_str_t                            val;
    ngx_uint_t                           i, n, absent;
    idem_str_t                           values[8];
    ngx_http_variable_value_t           *vv;
    ngx_http_idempotency_scope_value_t  *sv;

    static ngx_uint_t                    warned;

    n = 0;
    absent = 0;

    if (!ilcf->scope_none && ilcf->scope != NULL) {
        sv = ilcf->scope->elts;
        n = ilcf->scope->nelts;

        for (i = 0; i < n; i++) {

            if (sv[i].index != NGX_ERROR) {
                vv = ngx_http_get_indexed_variable(r, sv[i].index);
                if (vv == NULL) {
                    return NGX_ERROR;
                }

                /* absent: data NULL; empty: "" */
                values[i].data = vv->not_found ? NULL
                                 : vv->len ? (char *) vv->data : "";
                values[i].len = vv->not_found ? 0 : vv->len;
                absent += vv->not_found;
                continue;
            }

            if (ngx_http_complex_value(r, &sv[i].value, &val) != NGX_OK) {
                return NGX_ERROR;
            }

            values[i].data = val.len ? (char *) val.data : "";
            values[i].len = val.len;
        }
    }

    if (n > 0 && absent == n && !warned) {
        /* once per worker: a setup that scopes by nothing the clients send */
        warned = 1;
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idempotency: a request carries none of the "
                      "scope's inputs (idempotency_scope); every such "
                      "client shares one scope");
    }

    if (idem_scope_hash(values, n, out) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The value of the request header name (lowcase) for the fingerprint:
 * NULL data when the request has none, several fields of the name joined
 * by ", " in r->pool; *count (when not NULL) receives the number of
 * fields. NGX_ERROR when out of memory.
 */

static ngx_int_t
ngx_http_idempotency_fp_header(ngx_http_request_t *r, ngx_str_t *name,
    idem_str_t *value, ngx_uint_t *count)
{
    u_char           *p;
    size_t            len;
    ngx_uint_t        i, n;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *first;

    value->data = NULL;
    value->len = 0;

    first = NULL;
    len = 0;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len != name->len
                || ngx_strncasecmp(h[i].key.data, name->data, name->len) != 0)
            {
                continue;
            }

            if (first == NULL) {
                first = &h[i];
            }

            len += (n ? 2 : 0) + h[i].value.len;
            n++;
        }
    }

    if (count) {
        *count = n;
    }

    if (first == NULL) {
        return NGX_OK;
    }

    if (n == 1) {
        value->data = first->value.len ? (char *) first->value.data : "";
        value->len = first->value.len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value->data = (char *) p;
    value->len = len;
    n = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (h[i].key.len != name->len
                || ngx_strncasecmp(h[i].key.data, name->data, name->len) != 0)
            {
                continue;
            }

            /* every field after the first, empty or not, after ", " */
            if (n++) {
                *p++ = ',';
                *p++ = ' ';
            }

            p = ngx_cpymem(p, h[i].value.data, h[i].value.len);
        }
    }

    return NGX_OK;
}


/*
 * The headers that are forwarded and that an API could read otherwise, so
 * that the fingerprint covers them: every Content-Type field when there
 * are several (nginx reads the media type from the first and forwards all)
 * and Content-Encoding.
 */

static ngx_int_t
ngx_http_idempotency_request_forwarded(ngx_http_request_t *r,
    idem_request_t *req)
{
    ngx_uint_t  n;

    if (ngx_http_idempotency_fp_header(r, &ngx_http_idempotency_content_type,
                                       &req->content_types, &n)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (n < 2) {
        req->content_types.data = NULL;
        req->content_types.len = 0;
    }

    if (ngx_http_idempotency_fp_header(r,
                                       &ngx_http_idempotency_content_encoding,
                                       &req->content_encoding, NULL)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * req->host stays absent: a Host names the gateway node the client
     * addressed, and a retry through another node (or another of its
     * names) must replay, not mismatch. An API that tells tenants apart
     * by Host brings it in with idempotency_fingerprint_header Host.
     */

    return NGX_OK;
}


/*
 * The parameters a fingerprint covers, but the body: method, raw path,
 * query, Content-Type (the first field, which nginx reads the media type
 * from, and every field when there are several: all are forwarded),
 * Content-Encoding and the options of idempotency_fingerprint_ignore and
 * idempotency_fingerprint_header.
 */

ngx_int_t
ngx_http_idempotency_request_params(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_request_t *req)
{
    u_char         *q;
    ngx_str_t      *names;
    ngx_uint_t      i;
    idem_header_t  *hd;

    req->method.data = (char *) r->method_name.data;
    req->method.len = r->method_name.len;

    q = ngx_strlchr(r->unparsed_uri.data,
                    r->unparsed_uri.data + r->unparsed_uri.len, '?');

    req->path.data = (char *) r->unparsed_uri.data;
    req->path.len = q ? (size_t) (q - r->unparsed_uri.data)
                      : r->unparsed_uri.len;
    req->query.data = (char *) r->args.data;
    req->query.len = r->args.len;

    if (r->headers_in.content_type) {
        req->content_type.data =
            (char *) r->headers_in.content_type->value.data;
        req->content_type.len = r->headers_in.content_type->value.len;
    }

    if (ngx_http_idempotency_request_forwarded(r, req) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ilcf->fp_ignore) {
        req->ignore = ilcf->fp_ignore->elts;
        req->nignore = ilcf->fp_ignore->nelts;
    }

    if (ilcf->fp_headers == NULL || ilcf->fp_headers->nelts == 0) {
        return NGX_OK;
    }

    names = ilcf->fp_headers->elts;

    hd = ngx_palloc(r->pool, ilcf->fp_headers->nelts * sizeof(idem_header_t));
    if (hd == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ilcf->fp_headers->nelts; i++) {
        hd[i].name.data = (char *) names[i].data;
        hd[i].name.len = names[i].len;

        if (ngx_http_idempotency_fp_header(r, &names[i], &hd[i].value, NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    req->headers = hd;
    req->nheaders = ilcf->fp_headers->nelts;

    return NGX_OK;
}


/*
 * The fingerprint of a small body held in memory. A body in nginx's temp
 * file, or one large enough that canonicalizing it would stall the event
 * loop, is fingerprinted on the thread pool instead (NGX_DECLINED).
 */

#define NGX_HTTP_IDEMPOTENCY_LOOP_FP_MAX  16384

/*
 * The worker's cache of fingerprints (libidem's idem_fp_cache_t): a retry
 * that repeats an earlier request byte for byte is not canonicalized
 * again. Used by the event loop alone; NULL (out of memory at start) means
 * every fingerprint is computed.
 */

#define NGX_HTTP_IDEMPOTENCY_FP_CACHE_SLOTS  1024

static idem_fp_cache_t  *ngx_http_idempotency_fp_cache;

static int ngx_http_idempotency_fp_cached(ngx_http_idempotency_ctx_t *ctx,
    const idem_request_t *req);


void
ngx_http_idempotency_request_init_process(ngx_log_t *log)
{
    if (ngx_http_idempotency_fp_cache == NULL
        && idem_fp_cache_create(NGX_HTTP_IDEMPOTENCY_FP_CACHE_SLOTS,
                                &ngx_http_idempotency_fp_cache)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "idempotency: no fingerprint cache (out of memory), "
                      "every fingerprint is computed");
    }
}


void
ngx_http_idempotency_request_exit_process(void)
{
    idem_fp_cache_free(ngx_http_idempotency_fp_cache);
    ngx_http_idempotency_fp_cache = NULL;
}


ngx_int_t
ngx_http_idempotency_request_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    u_char          *p;
    size_t           len;
    ngx_buf_t       *b;
    ngx_chain_t     *cl;
    idem_request_t   req;

    len = 0;

    if (r->request_body && r->request_body->bufs) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;

            if (b->in_file || !ngx_buf_in_memory(b)) {
                if (b->in_file && b->file_last > b->file_pos) {
                    return NGX_DECLINED;
                }

                continue;
            }

            len += b->last - b->pos;
        }
    }

    if (len > NGX_HTTP_IDEMPOTENCY_LOOP_FP_MAX) {
        return NGX_DECLINED;
    }

    ngx_memzero(&req, sizeof(idem_request_t));

    if (len) {
        cl = r->request_body->bufs;

        if (cl->next == NULL) {
            req.body = cl->buf->pos;

        } else {
            p = ngx_pnalloc(r->pool, len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            req.body = p;

            for ( /* void */ ; cl; cl = cl->next) {
                if (ngx_buf_in_memory(cl->buf)) {
                    p = ngx_cpymem(p, cl->buf->pos,
                                   cl->buf->last - cl->buf->pos);
                }
            }
        }

        req.body_len = len;
    }

    if (ngx_http_idempotency_request_params(r, ctx->conf, &req) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_fp_cached(ctx, &req) != 0) {
        return NGX_ERROR;
    }

    ctx->fingerprinted = 1;

    return NGX_OK;
}


/* ctx->fingerprint of req, through the worker's cache (and counted) */

static int
ngx_http_idempotency_fp_cached(ngx_http_idempotency_ctx_t *ctx,
    const idem_request_t *req)
{
    int        rc;
    uint64_t   hits, now;

    if (ngx_http_idempotency_fp_cache == NULL) {
        return idem_fingerprint(req, &ctx->fingerprint, NULL);
    }

    idem_fp_cache_stats(ngx_http_idempotency_fp_cache, &hits, NULL);

    rc = idem_fingerprint_cached(ngx_http_idempotency_fp_cache, &ctx->scope,
                                 req, &ctx->fingerprint, NULL);
    if (rc != 0) {
        return rc;
    }

    idem_fp_cache_stats(ngx_http_idempotency_fp_cache, &now, NULL);
    ngx_http_idempotency_metrics_count(now > hits
                                       ? NGX_HTTP_IDEM_M_FP_CACHE_HITS
                                       : NGX_HTTP_IDEM_M_FP_CACHE_MISSES, 1);

    return 0;
}


ngx_uint_t
ngx_http_idempotency_request_reached_upstream(ngx_http_request_t *r)
{
    ngx_uint_t                  i;
    ngx_http_upstream_t        *u;
    ngx_http_upstream_state_t  *state;

    /* a request in flight: its counters are filled in only at the end */
    u = r->upstream;

    if (u && (u->request_sent
              || (u->peer.connection && u->peer.connection->sent > 0)))
    {
        return 1;
    }

    if (r->upstream_states == NULL) {
        return 0;
    }

    state = r->upstream_states->elts;

    for (i = 0; i < r->upstream_states->nelts; i++) {
        if (state[i].bytes_sent > 0) {
            return 1;
        }
    }

    return 0;
}
