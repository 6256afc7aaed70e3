
/*
 * ngx_http_idempotency_ctx.h — a request's context and its claim.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_CTX_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_CTX_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* the context of r, also after an internal redirect; NULL if none */
ngx_http_idempotency_ctx_t *ngx_http_idempotency_ctx_get(
    ngx_http_request_t *r);
/* a new context for r, freed (and its claim settled) with r's pool */
ngx_http_idempotency_ctx_t *ngx_http_idempotency_ctx_create(
    ngx_http_request_t *r);

/* the one writer of ctx->claim: keeps the worker's list of claims */
void ngx_http_idempotency_ctx_set_claim(ngx_http_idempotency_ctx_t *ctx,
    ngx_http_idempotency_claim_e claim);
/* a request parked in WAITING on ctx->wait_event joins the worker's
 * waiters (wait), so that its key's claim, settled in this worker, wakes
 * it at once rather than at its timer; unwait takes it out (nothing if it
 * is not in) */
void ngx_http_idempotency_ctx_wait(ngx_http_idempotency_ctx_t *ctx);
void ngx_http_idempotency_ctx_unwait(ngx_http_idempotency_ctx_t *ctx);
/* at worker exit: post the settlement of every claim still held */
void ngx_http_idempotency_ctx_settle_claims(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_IDEMPOTENCY_CTX_H_INCLUDED_ */
