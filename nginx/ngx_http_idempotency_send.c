
/*
 * ngx_http_idempotency_send.c — answers the module makes itself: replays of
 * a stored response, and gateway-made errors (400, 409, 422, 502, 503, 504)
 * whose bodies come from libidem in the location's error style.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_state.h"


static ngx_int_t ngx_http_idempotency_reset_headers(ngx_http_request_t *r,
    ngx_http_idempotency_answer_t *a);
static ngx_int_t ngx_http_idempotency_put_stored_headers(
    ngx_http_request_t *r, ngx_http_idempotency_answer_t *a,
    ngx_uint_t *stripe_retry);
static ngx_int_t ngx_http_idempotency_push_number(ngx_http_request_t *r,
    const char *name, ngx_uint_t value);
static ngx_int_t ngx_http_idempotency_put_answer_headers(
    ngx_http_request_t *r, ngx_http_idempotency_answer_t *a,
    ngx_uint_t stripe_retry);
static ngx_int_t ngx_http_idempotency_push_header(ngx_http_request_t *r,
    u_char *name, size_t name_len, u_char *value, size_t value_len,
    ngx_table_elt_t **out);
static ngx_uint_t ngx_http_idempotency_header_is(const idem_header_t *h,
    const char *name);


static ngx_int_t
ngx_http_idempotency_push_header(ngx_http_request_t *r, u_char *name,
    size_t name_len, u_char *value, size_t value_len, ngx_table_elt_t **out)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = name;
    h->key.len = name_len;
    h->value.data = value;
    h->value.len = value_len;
    h->lowcase_key = NULL;

    if (out) {
        *out = h;
    }

    return NGX_OK;
}


void
ngx_http_idempotency_send_bind_header(ngx_http_request_t *r, ngx_table_elt_t *h,
    uint32_t flags)
{
    static struct {
        ngx_str_t   name;
        size_t      offset;
    } slots[] = {
        { ngx_string("Date"), offsetof(ngx_http_headers_out_t, date) },
        { ngx_string("Content-Encoding"),
          offsetof(ngx_http_headers_out_t, content_encoding) },
        { ngx_string("ETag"), offsetof(ngx_http_headers_out_t, etag) },
        { ngx_string("Location"),
          offsetof(ngx_http_headers_out_t, location) },
        { ngx_null_string, 0 }
    };

    ngx_uint_t  i;

    for (i = 0; slots[i].name.len; i++) {
        if (slots[i].offset == offsetof(ngx_http_headers_out_t, location)
            && !(flags & IDEM_REC_LOCATION_SLOT))
        {
            /* a plain header the first time: sent as it is */
            continue;
        }

        if (h->key.len == slots[i].name.len
            && ngx_strncasecmp(h->key.data, slots[i].name.data, h->key.len)
               == 0)
        {
            *(ngx_table_elt_t **) ((char *) &r->headers_out
                                   + slots[i].offset) = h;
            return;
        }
    }
}


/*
 * The upstream's own Idempotency-Expires and Idempotent-Replayed, taken
 * out of a first answer: those headers are the gateway's to give (the
 * key's expiry, whether this is a replay), and the client must get one
 * value of each, not the upstream's beside the gateway's. They are never
 * stored either, so a replay carries only the gateway's.
 */

void
ngx_http_idempotency_send_strip_own(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

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

        if (h[i].hash == 0) {
            continue;
        }

        if ((h[i].key.len == sizeof("Idempotency-Expires") - 1
             && ngx_strncasecmp(h[i].key.data, (u_char *) "Idempotency-Expires",
                                h[i].key.len) == 0)
            || (h[i].key.len == sizeof("Idempotent-Replayed") - 1
                && ngx_strncasecmp(h[i].key.data,
                                   (u_char *) "Idempotent-Replayed",
                                   h[i].key.len) == 0))
        {
            h[i].hash = 0;
        }
    }
}


ngx_int_t
ngx_http_idempotency_send_add_expires(ngx_http_request_t *r, int64_t expires_ms)
{
    u_char  *p;

    if (expires_ms <= 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, sizeof("Mon, 28 Sep 1970 06:00:00 GMT") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* rounded down: the key is remembered at least until then */
    ngx_http_time(p, (time_t) (expires_ms / 1000));

    return ngx_http_idempotency_push_header(r,
               (u_char *) "Idempotency-Expires",
               sizeof("Idempotency-Expires") - 1,
               p, sizeof("Mon, 28 Sep 1970 06:00:00 GMT") - 1, NULL);
}


int
ngx_http_idempotency_send_errbody(ngx_uint_t style, idem_errtpl_t *tpl,
    idem_err_kind_t kind, const u_char *key, size_t key_len, int key_err,
    const ngx_str_t *header, idem_errbody_t *out)
{
    const char  *name;
    size_t       name_len;

    name = header ? (const char *) header->data : NULL;
    name_len = header ? header->len : 0;

    if (tpl) {
        return idem_errbody_template_named(tpl, kind, (const char *) key,
                                           key_len, key_err, name, name_len,
                                           out);
    }

    return idem_errbody_named((idem_style_t) style, kind, (const char *) key,
                              key_len, key_err, name, name_len, out);
}


ngx_int_t
ngx_http_idempotency_send_error_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind, int key_err)
{
    if (ctx->errbody.body) {
        free(ctx->errbody.body);
        ctx->errbody.body = NULL;
    }

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_ANSWER);
    ngx_memzero(&ctx->answer, sizeof(ngx_http_idempotency_answer_t));

    if (ngx_http_idempotency_send_errbody(ctx->conf->error_style,
                                     ctx->conf->error_template, kind,
                                     ctx->key, ctx->key_len, key_err,
                                     &ctx->key_header, &ctx->errbody)
        != 0)
    {
        ctx->answer.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_ERROR;
    }

    ctx->answer.status = ctx->errbody.status;
    ctx->answer.content_type.data = (u_char *) ctx->errbody.content_type;
    ctx->answer.content_type.len = ngx_strlen(ctx->errbody.content_type);
    ctx->answer.resp.status = ctx->errbody.status;
    ctx->answer.resp.body = (const uint8_t *) ctx->errbody.body;
    ctx->answer.resp.body_len = ctx->errbody.body_len;

    return NGX_OK;
}


/* Whether h is named name (a literal), in any case. */

static ngx_uint_t
ngx_http_idempotency_header_is(const idem_header_t *h, const char *name)
{
    size_t  len;

    len = ngx_strlen(name);

    return h->name.len == len
           && ngx_strncasecmp((u_char *) h->name.data, (u_char *) name, len)
              == 0;
}


ngx_int_t
ngx_http_idempotency_send_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_uint_t                      stripe_retry;
    ngx_http_idempotency_answer_t  *a;

    a = &ctx->answer;

    if (a->status == NGX_HTTP_INTERNAL_SERVER_ERROR && a->resp.body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_idempotency_reset_headers(r, a) != NGX_OK) {
        return NGX_ERROR;
    }

    stripe_retry = (ctx->conf->error_style == IDEM_STYLE_STRIPE);

    if (ngx_http_idempotency_put_stored_headers(r, a, &stripe_retry)
        != NGX_OK
        || ngx_http_idempotency_put_answer_headers(r, a, stripe_retry)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idempotency_send_body(r, (u_char *) a->resp.body,
                                          a->resp.body_len);
}


/* headers_out as for a new response of a's status: a parked or redirected
 * request may carry nginx's own headers */

static ngx_int_t
ngx_http_idempotency_reset_headers(ngx_http_request_t *r,
    ngx_http_idempotency_answer_t *a)
{
    if (ngx_list_init(&r->headers_out.headers, r->pool, 8,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    r->headers_out.status = a->status;
    r->headers_out.status_line.len = 0;
    r->headers_out.content_type.len = 0;
    r->headers_out.content_type_len = 0;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.charset.len = 0;
    r->headers_out.content_length = NULL;
    r->headers_out.content_encoding = NULL;
    r->headers_out.location = NULL;
    r->headers_out.last_modified = NULL;
    r->headers_out.last_modified_time = -1;
    r->headers_out.date = NULL;
    r->headers_out.etag = NULL;
    r->err_status = 0;

    /* the answer is what it is: no 304/412 or ranges made from it */
    r->disable_not_modified = 1;
    r->allow_ranges = 0;

    if (a->content_type.len) {
        r->headers_out.content_type = a->content_type;
        r->headers_out.content_type_len = a->content_type.len;
    }

    return NGX_OK;
}


/* The stored headers of the answer; *stripe_retry is set when a replay
 * had a Stripe-Should-Retry of its own (replaced below). */

static ngx_int_t
ngx_http_idempotency_put_stored_headers(ngx_http_request_t *r,
    ngx_http_idempotency_answer_t *a, ngx_uint_t *stripe_retry)
{
    u_char               *p;
    size_t                i, n;
    ngx_table_elt_t      *h;
    const idem_header_t  *hs;

    hs = a->resp.headers;
    n = a->resp.nheaders;

    for (i = 0; i < n; i++) {

        /* a replay answers whether to retry itself (below) */
        if (a->replayed
            && ngx_http_idempotency_header_is(&hs[i], "X-Should-Retry"))
        {
            continue;
        }

        if (a->replayed
            && ngx_http_idempotency_header_is(&hs[i], "Stripe-Should-Retry"))
        {
            *stripe_retry = 1;
            continue;
        }

        if (ngx_http_idempotency_header_is(&hs[i], "Content-Type")) {
            r->headers_out.content_type.data = (u_char *) hs[i].value.data;
            r->headers_out.content_type.len = hs[i].value.len;
            p = ngx_strlchr(r->headers_out.content_type.data,
                            r->headers_out.content_type.data
                            + hs[i].value.len, ';');
            r->headers_out.content_type_len = p
                ? (size_t) (p - r->headers_out.content_type.data)
                : hs[i].value.len;
            continue;
        }

        if (ngx_http_idempotency_push_header(r, (u_char *) hs[i].name.data,
                                             hs[i].name.len,
                                             (u_char *) hs[i].value.data,
                                             hs[i].value.len, &h)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        /* headers the later filters treat by their slot, as they did for
         * the first answer: no second Date, no second gzip, the same
         * absolute Location */
        ngx_http_idempotency_send_bind_header(r, h, a->flags);
    }

    return NGX_OK;
}


/* A header whose value is a number. */

static ngx_int_t
ngx_http_idempotency_push_number(ngx_http_request_t *r, const char *name,
    ngx_uint_t value)
{
    u_char  *p;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_idempotency_push_header(r, (u_char *) name,
                                            ngx_strlen(name), p,
                                            ngx_sprintf(p, "%ui", value) - p,
                                            NULL);
}


/* What the module says of the answer: replayed and not worth retrying,
 * the key's expiry, and a retry hint. */

static ngx_int_t
ngx_http_idempotency_put_answer_headers(ngx_http_request_t *r,
    ngx_http_idempotency_answer_t *a, ngx_uint_t stripe_retry)
{
    /*
     * A replay never changes, so retrying it is useless: it says so to the
     * SDKs that read these (Stainless-generated ones read X-Should-Retry,
     * Stripe's Stripe-Should-Retry), in place of the stored values
     */
    if (a->replayed
        && (ngx_http_idempotency_push_header(r,
                (u_char *) "Idempotent-Replayed",
                sizeof("Idempotent-Replayed") - 1,
                (u_char *) "true", sizeof("true") - 1, NULL)
            != NGX_OK
            || ngx_http_idempotency_push_header(r,
                   (u_char *) "X-Should-Retry", sizeof("X-Should-Retry") - 1,
                   (u_char *) "false", sizeof("false") - 1, NULL)
               != NGX_OK
            || (stripe_retry
                && ngx_http_idempotency_push_header(r,
                       (u_char *) "Stripe-Should-Retry",
                       sizeof("Stripe-Should-Retry") - 1,
                       (u_char *) "false", sizeof("false") - 1, NULL)
                   != NGX_OK)))
    {
        return NGX_ERROR;
    }

    if (ngx_http_idempotency_send_add_expires(r, a->expires_ms) != NGX_OK) {
        return NGX_ERROR;
    }

    if (a->retry_after
        && ngx_http_idempotency_push_number(r, "Retry-After", a->retry_after)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (a->retry_after_ms
        && ngx_http_idempotency_push_number(r, "Retry-After-Ms",
                                            a->retry_after_ms)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_send_body(ngx_http_request_t *r, u_char *data,
    size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (len) {
        b->pos = data;
        b->last = data + len;
        b->memory = 1;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_idempotency_send_text(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *data, size_t len)
{
    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    return ngx_http_idempotency_send_body(r, data, len);
}


/*
 * The response a gateway-made error is stored as: its status and body, and
 * its Content-Type in ct (no allocation: safe on the thread pool).
 */

void
ngx_http_idempotency_send_errbody_response(const idem_errbody_t *eb,
    idem_header_t *ct, idem_response_t *resp)
{
    ct->name.data = "Content-Type";
    ct->name.len = sizeof("Content-Type") - 1;
    ct->value.data = eb->content_type;
    ct->value.len = ngx_strlen(eb->content_type);

    ngx_memzero(resp, sizeof(idem_response_t));
    resp->status = eb->status;
    resp->headers = ct;
    resp->nheaders = 1;
    resp->body = (const uint8_t *) eb->body;
    resp->body_len = eb->body_len;
}
