
/*
 * ngx_http_idempotency_request.h — the key, scope and fingerprint of a
 * request.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_REQUEST_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_REQUEST_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* the key headers of r into ctx->key. NGX_DECLINED: no key and none
 * required; NGX_OK: the key is set, or ctx->answer holds a 400 (state
 * ANSWER); an HTTP error code when out of memory */
ngx_int_t ngx_http_idempotency_request_key(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_loc_conf_t *ilcf);
/* the scope hash of r under ilcf's idempotency_scope */
ngx_int_t ngx_http_idempotency_request_scope(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_hash_t *out);
/* method, path, query and Content-Type of r, and the fingerprint options
 * of ilcf with the values of its headers, in r->pool (the body is left
 * alone); NGX_ERROR when out of memory */
ngx_int_t ngx_http_idempotency_request_params(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_request_t *req);
/* ctx->fingerprint of a small body in memory (NGX_OK); NGX_DECLINED: the
 * body is for the thread pool; NGX_ERROR */
ngx_int_t ngx_http_idempotency_request_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
/* the worker's fingerprint cache: made when the worker starts, freed when
 * it exits */
void ngx_http_idempotency_request_init_process(ngx_log_t *log);
void ngx_http_idempotency_request_exit_process(void);
/* whether any byte of the request was sent to an upstream */
ngx_uint_t ngx_http_idempotency_request_reached_upstream(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_REQUEST_H_INCLUDED_ */
