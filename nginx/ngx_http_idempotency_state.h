
/*
 * ngx_http_idempotency_state.h — the one writer of a request's state.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_STATE_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_STATE_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* ctx->state = state, checked against the allowed moves, logged at debug
 * level */
void ngx_http_idempotency_state_set(ngx_http_idempotency_ctx_t *ctx,
    ngx_http_idempotency_state_e state);

/* resume a request parked by a task or a timer */
void ngx_http_idempotency_state_resume(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_STATE_H_INCLUDED_ */
