
/*
 * ngx_http_idempotency_filter.c — holds the response of a claimed key until
 * complete() has made it durable, then lets it go to the client.
 *
 *   upstream ──> header filter: keep status and headers, call no one,
 *                │              set our r->buffered bit
 *                ▼
 *              body filter: copy every buffer (in memory: we ask the copy
 *                │          filter for that) and mark it consumed
 *                ▼ last buffer
 *              complete() on the thread pool
 *                ▼ durable
 *              next header filter, then the held body, then r runs on
 *
 * The filter sits before gzip and chunked, so the body kept is the decoded
 * one. nginx's own error pages for a claimed key (its 502 and 504 when the
 * upstream failed) come through here too, with r->err_status set: they are
 * replaced by the gateway's JSON answer, after the key was released (never
 * reached the upstream) or settled as an unknown outcome.
 *
 * A response over idempotency_max_response_size is not held to its end:
 * the "too large" error is stored as the key's result, and once that is
 * durable the response flows to the client unchanged.
 *
 * A streamed response (text/event-stream, or any under idempotency_stream
 * pass) is not held but recorded: its headers go on at once, the upstream
 * is read unbuffered, and every buffer is copied, then passed on. Only its
 * last buffer waits, while complete() stores the whole response:
 *
 *   upstream ──> header filter: keep status and headers, pass them on
 *                ▼
 *              body filter: copy every buffer, pass it on
 *                ▼ last buffer (its data passed on, its end kept)
 *              complete() on the thread pool
 *                ▼ durable
 *              the end of the stream, then r runs on
 *
 * A stream cut short (the upstream broke, or the request ended in error)
 * never reaches its last buffer: the request's cleanup settles the key as
 * an unknown outcome. When complete() fails, the client's stream is cut
 * too rather than ended, as the key keeps the unknown outcome.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_ctx.h"
#include "ngx_http_idempotency_failpoint.h"
#include "ngx_http_idempotency_filter.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_state.h"
#include "ngx_http_idempotency_task.h"


static ngx_uint_t ngx_http_idempotency_storable(
    ngx_http_idempotency_loc_conf_t *ilcf, ngx_table_elt_t *h);
static ngx_int_t ngx_http_idempotency_date(ngx_http_request_t *r,
    idem_header_t *h);
static ngx_int_t ngx_http_idempotency_build_stored(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static idem_err_kind_t ngx_http_idempotency_unknown_kind(
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind);
static ngx_int_t ngx_http_idempotency_stored_error(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind);
static ngx_int_t ngx_http_idempotency_put_date(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_content_type(ngx_http_request_t *r,
    idem_header_t *h);
static ngx_int_t ngx_http_idempotency_page_header(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_hold_too_large(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *cl);
static ngx_int_t ngx_http_idempotency_header_filter(ngx_http_request_t *r);
static ngx_uint_t ngx_http_idempotency_streams(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_stream_header(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_uint_t ngx_http_idempotency_release_status(
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t status);
static ngx_int_t ngx_http_idempotency_buf_size(ngx_http_request_t *r,
    ngx_buf_t *b, size_t *size);
static ngx_uint_t ngx_http_idempotency_consume(ngx_chain_t *cl);
static ngx_int_t ngx_http_idempotency_append(ngx_http_idempotency_ctx_t *ctx,
    u_char *data, size_t len);
static ngx_int_t ngx_http_idempotency_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_idempotency_storing_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_idempotency_hold_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_idempotency_settle(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_stream_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_idempotency_upstream_broke(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_post_settle(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, uint32_t flags);
static void ngx_http_idempotency_settled(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc, idem_result_t *result);
static void ngx_http_idempotency_release_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_end_stream(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_send_settled(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_send_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_replace_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t store);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_idempotency_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_idempotency_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_idempotency_body_filter;

    return NGX_OK;
}


/* headers never kept at rest, beside those of idempotency_no_store_header */

static ngx_str_t  ngx_http_idempotency_unstored[] = {
    ngx_string("set-cookie"),
    ngx_string("connection"),
    ngx_string("keep-alive"),
    ngx_string("transfer-encoding"),
    ngx_string("te"),
    ngx_string("trailer"),
    ngx_string("upgrade"),
    ngx_string("content-length"),
    ngx_string("date"),
    ngx_string("idempotent-replayed"),
    ngx_string("idempotency-expires"),
    ngx_null_string
};


static ngx_uint_t
ngx_http_idempotency_storable(ngx_http_idempotency_loc_conf_t *ilcf,
    ngx_table_elt_t *h)
{
    ngx_str_t   *s;
    ngx_uint_t   i;
    u_char       low[64];

    if (h->hash == 0 || h->key.len == 0 || h->key.len > sizeof(low)) {
        return h->hash != 0 && h->key.len > sizeof(low);
    }

    ngx_strlow(low, h->key.data, h->key.len);

    if (h->key.len >= 6 && ngx_strncmp(low, "proxy-", 6) == 0) {
        return 0;
    }

    for (s = ngx_http_idempotency_unstored; s->len; s++) {
        if (s->len == h->key.len && ngx_strncmp(low, s->data, s->len) == 0) {
            return 0;
        }
    }

    if (ilcf->no_store_headers) {
        s = ilcf->no_store_headers->elts;

        for (i = 0; i < ilcf->no_store_headers->nelts; i++) {
            if (s[i].len == h->key.len
                && ngx_strncmp(low, s[i].data, s[i].len) == 0)
            {
                return 0;
            }
        }
    }

    return 1;
}


/*
 * A Date header of now, copied into the request pool: nginx's cached time
 * strings are slots that later time updates overwrite, and a store task
 * reads this one on another thread.
 */

static ngx_int_t
ngx_http_idempotency_date(ngx_http_request_t *r, idem_header_t *h)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, ngx_cached_http_time.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, ngx_cached_http_time.data, ngx_cached_http_time.len);

    h->name.data = "Date";
    h->name.len = sizeof("Date") - 1;
    h->value.data = (char *) p;
    h->value.len = ngx_cached_http_time.len;

    return NGX_OK;
}


/* The Content-Type of the response as the client gets it: with the
 * charset nginx adds. */

static ngx_int_t
ngx_http_idempotency_content_type(ngx_http_request_t *r, idem_header_t *h)
{
    u_char  *p;

    h->name.data = "Content-Type";
    h->name.len = sizeof("Content-Type") - 1;

    if (r->headers_out.content_type_len == r->headers_out.content_type.len
        && r->headers_out.charset.len)
    {
        p = ngx_pnalloc(r->pool, r->headers_out.content_type.len
                                 + sizeof("; charset=") - 1
                                 + r->headers_out.charset.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->value.data = (char *) p;
        p = ngx_cpymem(p, r->headers_out.content_type.data,
                       r->headers_out.content_type.len);
        p = ngx_cpymem(p, "; charset=", sizeof("; charset=") - 1);
        p = ngx_cpymem(p, r->headers_out.charset.data,
                       r->headers_out.charset.len);
        h->value.len = p - (u_char *) h->value.data;

        return NGX_OK;
    }

    h->value.data = (char *) r->headers_out.content_type.data;
    h->value.len = r->headers_out.content_type.len;

    return NGX_OK;
}


/*
 * Builds ctx->stored from r->headers_out and the held body: what complete()
 * keeps and every replay sends.
 */

static ngx_int_t
ngx_http_idempotency_build_stored(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_uint_t        i, n;
    idem_header_t    *hs;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    n = 2;  /* Content-Type and Date */

    for (part = &r->headers_out.headers.part; part; part = part->next) {
        n += part->nelts;
    }

    hs = ngx_pcalloc(r->pool, n * sizeof(idem_header_t));
    if (hs == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    if (r->headers_out.content_type.len) {
        if (ngx_http_idempotency_content_type(r, &hs[n]) != NGX_OK) {
            return NGX_ERROR;
        }

        n++;
    }

    /* the Date the client sees: a replay tells when the request ran */
    if (ngx_http_idempotency_date(r, &hs[n]) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->date = hs[n].value;
    n++;

    part = &r->headers_out.headers.part;
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

        if (!ngx_http_idempotency_storable(ctx->conf, &h[i])) {
            continue;
        }

        if (&h[i] == r->headers_out.location) {
            ctx->stored_flags |= IDEM_REC_LOCATION_SLOT;
        }

        hs[n].name.data = (char *) h[i].key.data;
        hs[n].name.len = h[i].key.len;
        hs[n].value.data = (char *) h[i].value.data;
        hs[n].value.len = h[i].value.len;
        n++;
    }

    ctx->stored.status = r->headers_out.status;
    ctx->stored.headers = hs;
    ctx->stored.nheaders = n;
    ctx->stored.body = ctx->body;
    ctx->stored.body_len = ctx->body_len;

    return NGX_OK;
}


/* The stored result for a gateway-made answer in ctx->errbody. */

static ngx_int_t ngx_http_idempotency_stored_error(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind);
static ngx_int_t ngx_http_idempotency_upstream_broke(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_date(ngx_http_request_t *r,
    idem_header_t *h);
static ngx_uint_t ngx_http_idempotency_consume(ngx_chain_t *cl);
static ngx_int_t ngx_http_idempotency_buf_size(ngx_http_request_t *r,
    ngx_buf_t *b, size_t *size);
static ngx_uint_t ngx_http_idempotency_release_status(
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t status);
static ngx_uint_t ngx_http_idempotency_streams(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_stream_header(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_stream_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in);
static ngx_int_t ngx_http_idempotency_settle(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);


/*
 * The error a lost outcome answers: with --on-unknown release the key is
 * free again, and the answer says so (a retry is forwarded), instead of
 * saying that the key will not run the request again.
 */

static idem_err_kind_t
ngx_http_idempotency_unknown_kind(ngx_http_idempotency_ctx_t *ctx,
    idem_err_kind_t kind)
{
    if (!ctx->release) {
        return kind;
    }

    return (kind == IDEM_ERR_UNKNOWN_BROKEN) ? IDEM_ERR_BROKEN_RELEASED
                                             : IDEM_ERR_UNKNOWN_RELEASED;
}


static ngx_int_t
ngx_http_idempotency_stored_error(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind)
{
    idem_header_t  *ct;

    if (ctx->errbody.body) {
        free(ctx->errbody.body);
        ctx->errbody.body = NULL;
    }

    if (ngx_http_idempotency_send_errbody(ctx->conf->error_style,
                                     ctx->conf->error_template, kind,
                                     ctx->key, ctx->key_len, 0, NULL,
                                     &ctx->errbody)
        != 0)
    {
        return NGX_ERROR;
    }

    ct = ngx_pcalloc(r->pool, 2 * sizeof(idem_header_t));
    if (ct == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_date(r, &ct[1]) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_send_errbody_response(&ctx->errbody, &ct[0],
                                          &ctx->stored);
    ctx->stored.nheaders = 2;   /* and the Date */

    return NGX_OK;
}


/* nginx's own answer for a claimed key (the upstream gave no complete
 * response): swallowed, and the gateway's answer is what the key keeps. */

static ngx_int_t
ngx_http_idempotency_page_header(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    idem_err_kind_t  kind;

    ctx->keep = NGX_HTTP_IDEM_KEEP_PAGE;

    if (!ngx_http_idempotency_request_reached_upstream(r)) {
        ctx->release = 1;
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_RELEASED, 1);

        if (ngx_http_idempotency_stored_error(r, ctx,
                                              IDEM_ERR_UPSTREAM_DOWN)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        ctx->release =
            (ctx->conf->on_unknown == IDEM_ON_UNKNOWN_RELEASE);
        ngx_http_idempotency_metrics_count(ctx->release
                                   ? NGX_HTTP_IDEM_M_RELEASED
                                   : NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME, 1);

        /* nginx's 502: the connection broke or the answer was
           invalid; anything else is taken for a timeout (504) */
        kind = (r->err_status == NGX_HTTP_BAD_GATEWAY)
               ? IDEM_ERR_UNKNOWN_BROKEN : IDEM_ERR_UNKNOWN_OUTCOME;
        kind = ngx_http_idempotency_unknown_kind(ctx, kind);

        if (ngx_http_idempotency_stored_error(r, ctx, kind) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /*
     * nginx's page is swallowed by the body filter, which settles the
     * key on its last buffer: a task posted now would set r->aio, and
     * the copy filter would then keep the page from us
     */
    r->buffered |= NGX_HTTP_IDEMPOTENCY_BUFFERED;
    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_HOLDING);

    return NGX_OK;
}


static ngx_int_t
ngx_http_idempotency_header_filter(ngx_http_request_t *r)
{
    size_t                        cap;
    ngx_http_idempotency_ctx_t   *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_idempotency_ctx_get(r);

    if (ctx == NULL || ctx->state != NGX_HTTP_IDEM_CLAIMED) {
        return ngx_http_next_header_filter(r);
    }

    if (r->err_status || r->upstream == NULL) {
        return ngx_http_idempotency_page_header(r, ctx);
    }

    /* the upstream's response: hold it, or record it as it flows on */

    r->filter_need_in_memory = 1;

    if (ngx_http_idempotency_streams(r, ctx)) {
        ctx->streaming = 1;
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_STREAMING);

    } else {
        r->buffered |= NGX_HTTP_IDEMPOTENCY_BUFFERED;
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_HOLDING);
    }

    if (r->headers_out.content_length_n >= 0
        && (size_t) r->headers_out.content_length_n
           <= ctx->conf->max_response_size)
    {
        cap = (size_t) r->headers_out.content_length_n;

    } else {
        cap = ngx_min(16384, ctx->conf->max_response_size);
    }

    if (cap) {
        ctx->body = malloc(cap);
        if (ctx->body == NULL) {
            return NGX_ERROR;
        }

        ctx->body_cap = cap;
    }

    if (ctx->streaming) {
        return ngx_http_idempotency_stream_header(r, ctx);
    }

    return NGX_OK;
}


/* Whether the upstream's response in r->headers_out is to be streamed. */

static ngx_uint_t
ngx_http_idempotency_streams(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    size_t  len;

    /* an answer without a body is never streamed: nginx would end it
       without passing the body filters a last buffer */
    if (r->header_only || r->upstream == NULL
        || ctx->conf->stream == NGX_HTTP_IDEM_STREAM_HOLD
        || r->headers_out.status < NGX_HTTP_OK
        || r->headers_out.status == NGX_HTTP_NO_CONTENT
        || r->headers_out.status == NGX_HTTP_NOT_MODIFIED)
    {
        return 0;
    }

    if (ctx->conf->stream == NGX_HTTP_IDEM_STREAM_PASS) {
        return 1;
    }

    len = r->headers_out.content_type_len ? r->headers_out.content_type_len
                                          : r->headers_out.content_type.len;

    return len == sizeof("text/event-stream") - 1
           && ngx_strncasecmp(r->headers_out.content_type.data,
                              (u_char *) "text/event-stream", len) == 0;
}


/*
 * The headers of a streamed response: recorded as the key will keep them,
 * with the Date recorded and the key's expiry added, then passed on. The
 * upstream is read unbuffered from here on (nginx decides that after the
 * header filters ran), so that each piece goes on as it arrives.
 */

static ngx_int_t
ngx_http_idempotency_stream_header(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    r->upstream->buffering = 0;

    ngx_http_idempotency_send_strip_own(r);

    /* a status of idempotency_release_status frees the key at the end:
       the client is told of no expiry */
    if (ngx_http_idempotency_build_stored(r, ctx) != NGX_OK
        || (!ngx_http_idempotency_release_status(ctx, r->headers_out.status)
            && ngx_http_idempotency_send_add_expires(r, ctx->expires_ms)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_put_date(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


/* The Date recorded with the response, as the client's Date. */

static ngx_int_t
ngx_http_idempotency_put_date(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_table_elt_t  *date;

    date = ngx_list_push(&r->headers_out.headers);
    if (date == NULL) {
        return NGX_ERROR;
    }

    date->hash = 1;
    ngx_str_set(&date->key, "Date");
    date->value.data = (u_char *) ctx->date.data;
    date->value.len = ctx->date.len;
    date->lowcase_key = NULL;
    r->headers_out.date = date;

    return NGX_OK;
}


/* Whether status is one of idempotency_release_status. */

static ngx_uint_t
ngx_http_idempotency_release_status(ngx_http_idempotency_ctx_t *ctx,
    ngx_uint_t status)
{
    ngx_uint_t   i, *s;

    if (ctx->conf->release_statuses == NULL) {
        return 0;
    }

    s = ctx->conf->release_statuses->elts;

    for (i = 0; i < ctx->conf->release_statuses->nelts; i++) {
        if (s[i] == status) {
            return 1;
        }
    }

    return 0;
}


/*
 * The bytes of b to record in *size: what it holds in memory, 0 for a
 * buffer without data. filter_need_in_memory makes nginx read file
 * buffers for us, so a file buffer with data is an error.
 */

static ngx_int_t
ngx_http_idempotency_buf_size(ngx_http_request_t *r, ngx_buf_t *b,
    size_t *size)
{
    if (!ngx_buf_in_memory(b)) {
        if (ngx_buf_size(b) != 0) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "idempotency filter got a buffer not in memory");
            return NGX_ERROR;
        }

        *size = 0;
        return NGX_OK;
    }

    *size = b->last - b->pos;
    return NGX_OK;
}


/* Marks every buffer of a chain consumed; 1 when it held the last one. */

static ngx_uint_t
ngx_http_idempotency_consume(ngx_chain_t *cl)
{
    ngx_uint_t  last;

    for (last = 0; cl; cl = cl->next) {
        last |= cl->buf->last_buf;
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    return last;
}


static ngx_int_t
ngx_http_idempotency_append(ngx_http_idempotency_ctx_t *ctx, u_char *data,
    size_t len)
{
    u_char  *p;
    size_t   cap;

    if (ctx->body_len + len > ctx->conf->max_response_size) {
        return NGX_DECLINED;
    }

    if (ctx->body_len + len > ctx->body_cap) {
        cap = ngx_max(ctx->body_cap * 2, ctx->body_len + len);
        cap = ngx_min(cap, ctx->conf->max_response_size);

        p = realloc(ctx->body, cap);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->body = p;
        ctx->body_cap = cap;
    }

    ngx_memcpy(ctx->body + ctx->body_len, data, len);
    ctx->body_len += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idempotency_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_http_idempotency_ctx_t   *ctx;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    ctx = ngx_http_idempotency_ctx_get(r);

    if (ctx == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    switch (ctx->state) {

    case NGX_HTTP_IDEM_HOLDING:
        break;

    case NGX_HTTP_IDEM_STREAMING:
        return ngx_http_idempotency_stream_body(r, ctx, in);

    case NGX_HTTP_IDEM_STORING:
        return ngx_http_idempotency_storing_body(r, ctx, in);

    case NGX_HTTP_IDEM_DISCARD:
        (void) ngx_http_idempotency_consume(in);
        return NGX_OK;

    default:
        return ngx_http_next_body_filter(r, in);
    }

    return ngx_http_idempotency_hold_body(r, ctx, in);
}


/* Output while the settlement is stored: held, or drained (a stream). */

static ngx_int_t
ngx_http_idempotency_storing_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in)
{
    if (in == NULL) {
        if (ctx->streaming) {
            /* what was streamed still drains to a slow client while
               the end waits for the store */
            return ngx_http_next_body_filter(r, NULL);
        }

        return ctx->pending ? NGX_AGAIN : NGX_OK;
    }

    /* too large: keep what comes until the error is stored */
    if (ngx_chain_add_copy(r->pool, &ctx->pending, in) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/* The held response is over idempotency_max_response_size from cl on: the
 * "too large" error is stored, then the response goes to the client
 * unchanged (what was copied, then cl and the rest as they come). */

static ngx_int_t
ngx_http_idempotency_hold_too_large(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *cl)
{
    ctx->keep = NGX_HTTP_IDEM_KEEP_TOO_LARGE;
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_TOO_LARGE, 1);

    if (ngx_chain_add_copy(r->pool, &ctx->pending, cl) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_stored_error(r, ctx, IDEM_ERR_TOO_LARGE)
        != NGX_OK
        || ngx_http_idempotency_post_settle(r, ctx, 0)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


/* A piece of a held response (or of nginx's error page, swallowed):
 * copied; its last buffer posts the settlement. */

static ngx_int_t
ngx_http_idempotency_hold_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in)
{
    size_t        size;
    ngx_int_t     rc;
    ngx_uint_t    last;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_PAGE) {
        /* nginx's error page: the gateway's answer goes out instead */
        last = ngx_http_idempotency_consume(in);

        if (last
            && ngx_http_idempotency_post_settle(r, ctx,
                                                IDEM_REC_UNKNOWN_OUTCOME)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (ngx_http_idempotency_buf_size(r, b, &size) != NGX_OK) {
            return NGX_ERROR;
        }

        if (size == 0) {
            continue;
        }

        rc = ngx_http_idempotency_append(ctx, b->pos, size);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            /* over the limit: store the error, deliver the response */
            return ngx_http_idempotency_hold_too_large(r, ctx, cl);
        }

        b->pos = b->last;
    }

    if (!last) {
        if (r->upstream && r->upstream->cleanup == NULL) {
            /*
             * the upstream is finalized and no last buffer came: it failed
             * after its header (reset, timeout, short body). The client has
             * seen nothing yet, so it gets the unknown-outcome answer the
             * key keeps (or, under idempotency_on_unknown release, that
             * answer unstored and the key freed).
             */
            return ngx_http_idempotency_upstream_broke(r, ctx);
        }

        return NGX_OK;
    }

    NGX_HTTP_IDEM_FAILPOINT("after_forward", ctx);

    if (!ngx_http_idempotency_release_status(ctx, r->headers_out.status)
        && ngx_http_idempotency_build_stored(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idempotency_settle(r, ctx);
}


/*
 * The whole response is in ctx->stored: store it (or the "too large"
 * error of a streamed one), or free the key for a status of
 * idempotency_release_status.
 */

static ngx_int_t
ngx_http_idempotency_settle(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    if (ngx_http_idempotency_release_status(ctx, r->headers_out.status)) {
        /* a status the API gives for what it did not do (idempotency_
           release_status): the client gets it, the key is freed */
        ctx->release = 1;
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_RELEASED, 1);

        return ngx_http_idempotency_post_settle(r, ctx, 0);
    }

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_TOO_LARGE) {
        if (ngx_http_idempotency_stored_error(r, ctx, IDEM_ERR_TOO_LARGE)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        return ngx_http_idempotency_post_settle(r, ctx, 0);
    }

    return ngx_http_idempotency_post_settle(r, ctx, ctx->stored_flags);
}


/* A piece of a streamed response: recorded, then passed on. */

static ngx_int_t
ngx_http_idempotency_stream_body(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_chain_t *in)
{
    size_t        size;
    ngx_int_t     rc;
    ngx_uint_t    last;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            /* the end goes on once the response is stored */
            last = 1;
            b->last_buf = 0;
            b->flush = 1;
        }

        if (ngx_http_idempotency_buf_size(r, b, &size) != NGX_OK) {
            return NGX_ERROR;
        }

        if (size == 0 || ctx->keep == NGX_HTTP_IDEM_KEEP_TOO_LARGE) {
            continue;
        }

        rc = ngx_http_idempotency_append(ctx, b->pos, size);

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_DECLINED) {
            /* the client gets it all; the key keeps the "too large"
               error, stored at the end */
            ctx->keep = NGX_HTTP_IDEM_KEEP_TOO_LARGE;
            ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_TOO_LARGE, 1);
        }
    }

    /* a call without input is nginx flushing what a slow client has not
       taken yet: it must reach the write filter, or the stream stalls */
    rc = ngx_http_next_body_filter(r, in);

    if (rc == NGX_ERROR || !last) {
        /* a stream cut short ends in error: the request's cleanup
           settles its key as an unknown outcome */
        return rc;
    }

    NGX_HTTP_IDEM_FAILPOINT("after_forward", ctx);

    ctx->stored.body = ctx->body;
    ctx->stored.body_len = ctx->body_len;
    r->buffered |= NGX_HTTP_IDEMPOTENCY_BUFFERED;

    if (ngx_http_idempotency_settle(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    return rc;
}


static ngx_int_t
ngx_http_idempotency_upstream_broke(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    idem_err_kind_t  kind;

    kind = (r->upstream->state
            && r->upstream->state->status == NGX_HTTP_GATEWAY_TIME_OUT)
           ? IDEM_ERR_UNKNOWN_OUTCOME : IDEM_ERR_UNKNOWN_BROKEN;

    ctx->keep = NGX_HTTP_IDEM_KEEP_UNKNOWN;
    ctx->release = (ctx->conf->on_unknown == IDEM_ON_UNKNOWN_RELEASE);

    ngx_http_idempotency_metrics_count(ctx->release ? NGX_HTTP_IDEM_M_RELEASED
                                            : NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME,
                               1);

    kind = ngx_http_idempotency_unknown_kind(ctx, kind);

    if (ngx_http_idempotency_stored_error(r, ctx, kind) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_post_settle(r, ctx, IDEM_REC_UNKNOWN_OUTCOME)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* Posts the settlement of ctx's claim: complete() with ctx->stored, or
 * release() under ctx->release. r waits in STORING for its completion. */

static ngx_int_t
ngx_http_idempotency_post_settle(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, uint32_t flags)
{
    ngx_http_idempotency_metrics_upstream_done(ctx);
    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_STORING);

    return ngx_http_idempotency_task_post_finish(r, ctx, &ctx->stored, flags,
                                            ctx->release,
                                            ngx_http_idempotency_settled);
}


/*
 * The settlement's completion (a task of _task.c). Stored: the response
 * (or the answer that replaces it) goes out. Not stored — the lease passed
 * and the claim was settled meanwhile, or the store failed — the client
 * gets the answer the key keeps: the unknown outcome.
 */

static void
ngx_http_idempotency_settled(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc, idem_result_t *result)
{
    ctx->store_rc = rc;
    ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_SETTLED);
    ngx_http_idempotency_metrics_claim_ended(ctx);

    if (rc == 0) {
        NGX_HTTP_IDEM_FAILPOINT("after_complete", ctx);
        ngx_http_idempotency_release_held(r, ctx);
        return;
    }

    if (rc == IDEM_ENOTOWNER) {
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_LATE_COMPLETE, 1);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idempotency key \"%*s\": the claim was settled "
                      "meanwhile (lease passed); this result is not "
                      "stored and the client gets the key's "
                      "unknown-outcome answer", ctx->key_len, ctx->key);

        if (ctx->release
            || ngx_http_idempotency_replace_held(r, ctx, 0) != NGX_OK)
        {
            ngx_http_idempotency_release_held(r, ctx);
        }

        return;
    }

    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_STORE_ERRORS, 1);
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "idempotency key \"%*s\": storing the result failed: %s",
                  ctx->key_len, ctx->key, idem_strerror(rc));

    if (ctx->release) {
        /* nothing ran upstream; the claim lapses with its lease */
        ngx_http_idempotency_release_held(r, ctx);
        return;
    }

    if (ctx->keep != NGX_HTTP_IDEM_KEEP_UNKNOWN) {
        /* keep the small unknown-outcome answer instead, and give it */
        ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_HELD);

        if (ngx_http_idempotency_replace_held(r, ctx, 1) == NGX_OK) {
            return;
        }

        ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_SETTLED);
    }

    /* not even that could be stored: the key stays in progress until its
     * lease passes, then settles as this same unknown outcome */
    ngx_http_idempotency_release_held(r, ctx);
}


/*
 * complete() or release() is done (or failed): send the held response, or
 * the gateway's answer in place of nginx's error page, and let r run on.
 */

static void
ngx_http_idempotency_release_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_int_t  rc;

    r->buffered &= ~NGX_HTTP_IDEMPOTENCY_BUFFERED;
    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_PASS);

    if (ctx->streaming) {
        rc = ngx_http_idempotency_end_stream(r, ctx);

    } else {
        rc = ngx_http_idempotency_send_settled(r, ctx);
    }

    if (rc == NGX_ERROR) {
        r->connection->error = 1;
    }

    ngx_http_idempotency_state_resume(r);
}


/* What a held response's client gets once it is settled: the answer the
 * key keeps in place of nginx's page or of the response, or the held
 * response itself. */

static ngx_int_t
ngx_http_idempotency_send_settled(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_UNKNOWN) {
        /* what the upstream sent is not the client's any more */
        (void) ngx_http_idempotency_consume(ctx->pending);
        ctx->pending = NULL;
    }

    if (r->connection->error) {
        return NGX_OK;
    }

    if (ctx->keep != NGX_HTTP_IDEM_KEEP_PAGE
        && ctx->keep != NGX_HTTP_IDEM_KEEP_UNKNOWN)
    {
        return ngx_http_idempotency_send_held(r, ctx);
    }

    ctx->answer.status = ctx->stored.status;
    ctx->answer.resp = ctx->stored;
    ctx->answer.expires_ms = (ctx->release || ctx->store_rc != 0)
                             ? 0 : ctx->expires_ms;

    rc = ngx_http_idempotency_send_answer(r, ctx);

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_UNKNOWN) {
        /* and neither is what the upstream still sends */
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DISCARD);
    }

    return rc;
}


/* The end of a streamed response, once it is stored: the stream is ended,
 * or cut when the key keeps the unknown outcome. */

static ngx_int_t
ngx_http_idempotency_end_stream(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r->connection->error) {
        return NGX_OK;
    }

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_UNKNOWN) {
        /* the key keeps an unknown outcome: the client's stream is
           cut, not ended, so that it is not taken for complete */
        r->keepalive = 0;
        r->connection->error = 1;
        return NGX_OK;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


/* The held response, once settled: its headers (with the key's expiry and
 * the Date stored), then its body and what was pending. */

static ngx_int_t
ngx_http_idempotency_send_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out, *pending;

    ngx_http_idempotency_send_strip_own(r);

    if (ctx->store_rc == 0 && !ctx->release
        && ngx_http_idempotency_send_add_expires(r, ctx->expires_ms) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the Date that was stored, not the time complete() returned */
    if (ctx->date.len && ngx_http_idempotency_put_date(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_next_header_filter(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    pending = ctx->pending;
    ctx->pending = NULL;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->body;
    b->last = ctx->body + ctx->body_len;
    b->memory = ctx->body_len ? 1 : 0;

    if (ctx->keep == NGX_HTTP_IDEM_KEEP_TOO_LARGE) {
        /* the body so far, then what was pending, then the rest flows */
        b->flush = 1;

    } else {
        b->last_buf = 1;
        b->last_in_chain = 1;
    }

    out.buf = b;
    out.next = pending;

    return ngx_http_next_body_filter(r, &out);
}


/*
 * complete() did not store the upstream's response (the store failed, or
 * the claim was settled meanwhile as a stale one). Handing that response
 * out would give the client an answer its key never replays: it gets the
 * unknown-outcome error instead — the answer the key keeps, once stored
 * here (store set) or by whoever settled the stale claim.
 */

static ngx_int_t
ngx_http_idempotency_replace_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t store)
{
    ctx->keep = NGX_HTTP_IDEM_KEEP_UNKNOWN;

    if (ngx_http_idempotency_stored_error(r, ctx, IDEM_ERR_UNKNOWN_OUTCOME)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (store) {
        return ngx_http_idempotency_post_settle(r, ctx,
                                                IDEM_REC_UNKNOWN_OUTCOME);
    }

    ngx_http_idempotency_release_held(r, ctx);

    return NGX_OK;
}
