
/*
 * ngx_http_idempotency_variables.c — the module's variables:
 *
 *   $idempotency_key        the request's key, or empty
 *   $idempotency_outcome    executed, replayed, mismatch, conflict,
 *                           invalid, bypass or unavailable
 *   $idempotency_api_log    "1" for a request the API log keeps
 *   $idempotency_log_entry  that request as one JSON object
 *
 * and, with idempotency_fast_request_id on, nginx's own $request_id of
 * the requests that reach the phases, made here before anything reads it
 * (below).
 */

#include <sys/random.h>

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_ctx.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_variables.h"


static ngx_int_t ngx_http_idempotency_key_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_idempotency_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_uint_t ngx_http_idempotency_wants_log(ngx_http_request_t *r);
static ngx_int_t ngx_http_idempotency_api_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_idempotency_client_request(ngx_http_request_t *r,
    ngx_str_t *method, ngx_str_t *path);
static ngx_uint_t ngx_http_idempotency_log_status(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static u_char *ngx_http_idempotency_log_entry_write(u_char *p, size_t len,
    ngx_http_idempotency_ctx_t *ctx, ngx_tm_t *tm, ngx_msec_t msec,
    ngx_http_variable_value_t *rid, ngx_str_t *method, ngx_str_t *path,
    ngx_uint_t status, ngx_msec_t ms);
static ngx_int_t ngx_http_idempotency_log_entry_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static uint64_t ngx_http_idempotency_siphash(const uint64_t k[2], uint64_t m);
static ngx_int_t ngx_http_idempotency_request_id_handler(
    ngx_http_request_t *r);


/* variables */

static ngx_int_t
ngx_http_idempotency_key_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_ctx_get(r->main);

    if (ctx == NULL || ctx->key_len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->key_len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ctx->key;

    return NGX_OK;
}


static ngx_str_t  ngx_http_idempotency_outcomes[] = {
    ngx_string("bypass"),
    ngx_string("bypass"),
    ngx_string("executed"),
    ngx_string("replayed"),
    ngx_string("mismatch"),
    ngx_string("conflict"),
    ngx_string("invalid"),
    ngx_string("unavailable")
};


static ngx_int_t
ngx_http_idempotency_outcome_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_uint_t                   o;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_ctx_get(r->main);
    o = ctx ? ctx->outcome : NGX_HTTP_IDEM_OUT_BYPASS;

    v->len = ngx_http_idempotency_outcomes[o].len;
    v->data = ngx_http_idempotency_outcomes[o].data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* 1 when SPEC's API log wants the request: it reached the upstream, or it
 * was the first reuse of its key with other parameters */

static ngx_uint_t
ngx_http_idempotency_wants_log(ngx_http_request_t *r)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_ctx_get(r->main);

    if (ctx != NULL) {
        switch (ctx->outcome) {
        case NGX_HTTP_IDEM_OUT_MISMATCH:
            return ctx->api_log;
        case NGX_HTTP_IDEM_OUT_EXECUTED:
            return ngx_http_idempotency_request_reached_upstream(r->main);
        case NGX_HTTP_IDEM_OUT_REPLAYED:
        case NGX_HTTP_IDEM_OUT_CONFLICT:
        case NGX_HTTP_IDEM_OUT_INVALID:
        case NGX_HTTP_IDEM_OUT_UNAVAILABLE:
            return 0;
        default:
            break;
        }
    }

    return ngx_http_idempotency_request_reached_upstream(r->main);
}


static ngx_int_t
ngx_http_idempotency_api_log_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    v->data = (u_char *) (ngx_http_idempotency_wants_log(r) ? "1" : "0");
    v->len = 1;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The method and path the client sent, which the API log names. An
 * error_page turns r into a GET of the error location, so both come from
 * what that leaves alone: the request line (HTTP/2 builds one too) and the
 * raw target, whose path ends at the '?'.
 */

static void
ngx_http_idempotency_client_request(ngx_http_request_t *r, ngx_str_t *method,
    ngx_str_t *path)
{
    u_char  *p;

    *method = r->method_name;

    if (r->request_line.len) {
        p = ngx_strlchr(r->request_line.data,
                        r->request_line.data + r->request_line.len, ' ');
        if (p != NULL && p > r->request_line.data) {
            method->data = r->request_line.data;
            method->len = p - r->request_line.data;
        }
    }

    *path = r->unparsed_uri;

    p = ngx_strlchr(path->data, path->data + path->len, '?');
    if (p != NULL) {
        path->len = p - path->data;
    }
}


/*
 * The status the API log gives: the client's, except for a streamed
 * response that ended short, or whose end could not be stored: the client
 * saw the upstream's status, the key keeps (or is about to keep, by the
 * request's cleanup) the unknown-outcome 504.
 */

static ngx_uint_t
ngx_http_idempotency_log_status(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx && ctx->streaming && !ctx->release
        && (ctx->state == NGX_HTTP_IDEM_STREAMING
            || ctx->keep == NGX_HTTP_IDEM_KEEP_UNKNOWN))
    {
        return NGX_HTTP_GATEWAY_TIME_OUT;
    }

    return r->err_status ? r->err_status : r->headers_out.status;
}


/* The fields of the entry, escaped, after its opening brace. */

static u_char *
ngx_http_idempotency_log_entry_write(u_char *p, size_t len,
    ngx_http_idempotency_ctx_t *ctx, ngx_tm_t *tm, ngx_msec_t msec,
    ngx_http_variable_value_t *rid, ngx_str_t *method, ngx_str_t *path,
    ngx_uint_t status, ngx_msec_t ms)
{
    p = ngx_sprintf(p, "{\"time\":\"%4d-%02d-%02dT%02d:%02d:%02d.%03MZ\"",
                    tm->ngx_tm_year, tm->ngx_tm_mon, tm->ngx_tm_mday,
                    tm->ngx_tm_hour, tm->ngx_tm_min, tm->ngx_tm_sec,
                    msec);
    p = ngx_sprintf(p, ",\"request_id\":\"%*s\"",
                    (size_t) (rid && !rid->not_found ? rid->len : 0),
                    rid ? rid->data : (u_char *) "");
    p = ngx_cpymem(p, ",\"method\":\"", sizeof(",\"method\":\"") - 1);
    p += idem_json_escape((char *) p, len, (char *) method->data, method->len);
    p = ngx_cpymem(p, "\",\"path\":\"", sizeof("\",\"path\":\"") - 1);
    p += idem_json_escape((char *) p, len, (char *) path->data, path->len);
    p = ngx_sprintf(p, "\",\"status\":%ui,\"key\":", status);

    if (ctx && ctx->key_len) {
        *p++ = '"';
        p += idem_json_escape((char *) p, len, (char *) ctx->key,
                              ctx->key_len);
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_sprintf(p, ",\"outcome\":\"%s\",\"duration_ms\":%M",
                    ctx && ctx->outcome == NGX_HTTP_IDEM_OUT_MISMATCH
                    ? "idempotency_error" : "executed",
                    ms);

    /* executed, answered, and not kept (idempotency_release_status) */
    if (ctx && ctx->release && ctx->keep == NGX_HTTP_IDEM_KEEP_RESPONSE) {
        p = ngx_cpymem(p, ",\"key_released\":true",
                       sizeof(",\"key_released\":true") - 1);
    }

    return p;
}


/*
 * $idempotency_log_entry: one JSON object for the API log, with every
 * string escaped (valid UTF-8 whatever the bytes of the path), so the
 * log_format needs no escaping of its own.
 */

static ngx_int_t
ngx_http_idempotency_log_entry_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                            *p;
    size_t                             len;
    time_t                             sec;
    ngx_str_t                          method, path;
    ngx_tm_t                           tm;
    ngx_uint_t                         status;
    ngx_time_t                        *tp;
    ngx_msec_int_t                     ms;
    ngx_http_variable_value_t         *rid;
    ngx_http_idempotency_ctx_t        *ctx;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    ctx = ngx_http_idempotency_ctx_get(r->main);

    rid = ngx_http_get_indexed_variable(r, imcf->request_id_index);

    tp = ngx_timeofday();
    sec = tp->sec;
    ngx_gmtime(sec, &tm);
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    status = ngx_http_idempotency_log_status(r, ctx);

    ngx_http_idempotency_client_request(r->main, &method, &path);

    len = sizeof("{\"time\":\"2026-01-01T00:00:00.000Z\",\"request_id\":\"\","
                 "\"method\":\"\",\"path\":\"\",\"status\":999,\"key\":,"
                 "\"outcome\":\"idempotency_error\",\"duration_ms\":,"
                 "\"key_released\":true}") + 32
          + (rid && !rid->not_found ? rid->len : 0)
          + idem_json_escape(NULL, 0, (char *) method.data, method.len)
          + idem_json_escape(NULL, 0, (char *) path.data, path.len)
          + (ctx && ctx->key_len
             ? 2 + idem_json_escape(NULL, 0, (char *) ctx->key, ctx->key_len)
             : 4)
          + NGX_INT_T_LEN;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    p = ngx_http_idempotency_log_entry_write(p, len, ctx, &tm, tp->msec,
                                             rid, &method, &path, status,
                                             (ngx_msec_t) ms);

    *p++ = '}';

    v->len = p - v->data;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_http_variable_t  ngx_http_idempotency_vars[] = {

    { ngx_string("idempotency_key"), NULL,
      ngx_http_idempotency_key_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_outcome"), NULL,
      ngx_http_idempotency_outcome_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_api_log"), NULL,
      ngx_http_idempotency_api_log_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("idempotency_log_entry"), NULL,
      ngx_http_idempotency_log_entry_variable, 0, NGX_HTTP_VAR_NOCACHEABLE,
      0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_idempotency_variables_add(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_idempotency_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * idempotency_fast_request_id: nginx makes $request_id from 16 bytes of
 * OpenSSL's RAND_bytes, a few percent of a proxied request's CPU. This
 * sets the variable first, in the POST_READ phase, with a value of the
 * same form (32 lowercase hex digits): SipHash-2-4, a keyed pseudo-random
 * function, of the worker's request count (2n and 2n + 1 for the two
 * halves) under a 128-bit key drawn with getrandom() when the worker
 * serves its first request. Without the key the ids cannot be told from
 * random, nor one derived from another, as nginx's cannot; two are equal
 * with a chance of 2^-128. Everything that reads $request_id afterwards
 * (proxy_set_header, the API log, log_format) gets this value, since
 * nginx keeps a variable's value for the request. A request nginx ends
 * before the phases (a bad request line or header, a header timeout)
 * keeps nginx's own id, as does every request of a worker whose
 * getrandom() failed (logged once).
 */

#define NGX_HTTP_IDEM_ROTL(x, b)  (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

#define NGX_HTTP_IDEM_SIPROUND                                               \
    do {                                                                     \
        v0 += v1; v1 = NGX_HTTP_IDEM_ROTL(v1, 13); v1 ^= v0;                 \
        v0 = NGX_HTTP_IDEM_ROTL(v0, 32);                                     \
        v2 += v3; v3 = NGX_HTTP_IDEM_ROTL(v3, 16); v3 ^= v2;                 \
        v0 += v3; v3 = NGX_HTTP_IDEM_ROTL(v3, 21); v3 ^= v0;                 \
        v2 += v1; v1 = NGX_HTTP_IDEM_ROTL(v1, 17); v1 ^= v2;                 \
        v2 = NGX_HTTP_IDEM_ROTL(v2, 32);                                     \
    } while (0)


/* SipHash-2-4 of the 8-byte little-endian message m under key k */

static uint64_t
ngx_http_idempotency_siphash(const uint64_t k[2], uint64_t m)
{
    uint64_t  v0, v1, v2, v3, b;

    v0 = 0x736f6d6570736575ULL ^ k[0];
    v1 = 0x646f72616e646f6dULL ^ k[1];
    v2 = 0x6c7967656e657261ULL ^ k[0];
    v3 = 0x7465646279746573ULL ^ k[1];
    b = (uint64_t) 8 << 56;

    v3 ^= m;
    NGX_HTTP_IDEM_SIPROUND;
    NGX_HTTP_IDEM_SIPROUND;
    v0 ^= m;

    v3 ^= b;
    NGX_HTTP_IDEM_SIPROUND;
    NGX_HTTP_IDEM_SIPROUND;
    v0 ^= b;

    v2 ^= 0xff;
    NGX_HTTP_IDEM_SIPROUND;
    NGX_HTTP_IDEM_SIPROUND;
    NGX_HTTP_IDEM_SIPROUND;
    NGX_HTTP_IDEM_SIPROUND;

    return v0 ^ v1 ^ v2 ^ v3;
}


static ngx_int_t
ngx_http_idempotency_request_id_handler(ngx_http_request_t *r)
{
    static ngx_pid_t  keyed_pid;
    static ngx_uint_t keyed;
    static uint64_t   key[2], n;

    u_char                            *id, half[16];
    uint64_t                           h;
    ngx_uint_t                         i;
    ngx_http_variable_value_t         *v;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    v = &r->variables[imcf->request_id_index];

    if (v->valid || v->not_found) {
        return NGX_DECLINED;
    }

    if (keyed_pid != ngx_pid) {
        /* each worker draws its key, after fork(), once */
        keyed_pid = ngx_pid;
        keyed = (getrandom(key, sizeof(key), GRND_NONBLOCK)
                 == (ssize_t) sizeof(key));
        n = 0;

        if (!keyed) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, ngx_errno,
                          "idempotency_fast_request_id: getrandom() "
                          "failed, this worker keeps nginx's own "
                          "$request_id");
        }
    }

    if (!keyed) {
        return NGX_DECLINED;    /* nginx's own $request_id serves */
    }

    id = ngx_pnalloc(r->pool, 32);
    if (id == NULL) {
        return NGX_DECLINED;
    }

    n++;

    for (i = 0; i < 2; i++) {
        h = ngx_http_idempotency_siphash(key, 2 * n + i);
        ngx_memcpy(half + 8 * i, &h, 8);
    }

    ngx_hex_dump(id, half, sizeof(half));

    v->len = 32;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = id;

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_idempotency_variables_request_id_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt               *h;
    ngx_http_core_main_conf_t         *cmcf;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idempotency_module);

    if (!imcf->fast_request_id) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_POST_READ_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_idempotency_request_id_handler;

    return NGX_OK;
}
