
/*
 * ngx_http_idempotency_failpoint.h — failpoints, compiled into test builds
 * only (-DIDEM_FAILPOINTS=1): with
 * IDEMGATE_FAILPOINTS="point:action:keyprefix[,...]" in the environment
 * (and `env IDEMGATE_FAILPOINTS;` in nginx.conf), a request whose key starts
 * with keyprefix meets the action at the point. Points: after_claim (claim
 * durable, nothing forwarded), after_forward (upstream answered, nothing
 * stored), after_complete (stored, client not answered), in_commit_turn
 * (on the commit thread: the batch with the key holds the workers' commit
 * turn, nothing of it is committed). Actions: crash
 * (SIGKILL to the whole process group: master and workers, as when a machine
 * dies), worker (SIGKILL to this worker only) and stall (a second's sleep,
 * then on: a slow commit).
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_FAILPOINT_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_FAILPOINT_H_INCLUDED_


#include "ngx_http_idempotency.h"


#if (IDEM_FAILPOINTS)
void ngx_http_idempotency_failpoint(const char *point, const u_char *key,
    size_t key_len);
#define NGX_HTTP_IDEM_FAILPOINT(point, ctx)                                  \
    ngx_http_idempotency_failpoint(point, (ctx)->key, (ctx)->key_len)
#define NGX_HTTP_IDEM_FAILPOINT_KEY(point, key, len)                         \
    ngx_http_idempotency_failpoint(point, key, len)
#else
#define NGX_HTTP_IDEM_FAILPOINT(point, ctx)
#define NGX_HTTP_IDEM_FAILPOINT_KEY(point, key, len)
#endif


#endif /* _NGX_HTTP_IDEMPOTENCY_FAILPOINT_H_INCLUDED_ */
