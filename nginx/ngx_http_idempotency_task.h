
/*
 * ngx_http_idempotency_task.h — the store's calls on the thread pool.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_TASK_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_TASK_H_INCLUDED_


#include "ngx_http_idempotency.h"


/*
 * The completion of a job, named by whoever posts it. It runs on the event
 * loop, r no longer parked, with the store's code (0 or IDEM_E...) and, on
 * success, the result of begin() (ownership passes to the completion;
 * complete() and release() have none worth reading). It resumes r itself.
 */
typedef void (*ngx_http_idempotency_task_done_pt)(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc, idem_result_t *result);


/* begin() of ctx's key (its fingerprint first, on the thread pool, when
 * fp_in_thread); r is parked until done runs. NGX_ERROR: nothing posted,
 * r not parked (done may also run before this returns, with IDEM_EUNAVAIL,
 * when the thread pool refuses the batch) */
ngx_int_t ngx_http_idempotency_task_post_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t fp_in_thread,
    ngx_http_idempotency_task_done_pt done);
/* complete() with resp (or release()) of ctx's claim; r is parked until
 * done runs; as post_begin() otherwise */
ngx_int_t ngx_http_idempotency_task_post_finish(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, const idem_response_t *resp,
    uint32_t flags, ngx_uint_t release, ngx_http_idempotency_task_done_pt done);
/* the unknown outcome (or release) of ctx's claim, for a request that is
 * gone: copies what it needs, no completion; NGX_ERROR: nothing posted */
ngx_int_t ngx_http_idempotency_task_post_detached(
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t release, ngx_log_t *log);

/* the prune timer's handler: one bounded prune at a time */
void ngx_http_idempotency_task_prune(ngx_event_t *ev);

/* in the master, before the workers fork: the workers' shared commit turn
 * (see _task.c); a failure is logged and leaves batches without it */
ngx_int_t ngx_http_idempotency_task_init_turn(ngx_log_t *log);
/* at worker exit: post no more batches (the thread pool is stopped) */
void ngx_http_idempotency_task_hold(void);
/* then run the settlements still queued, synchronously */
void ngx_http_idempotency_task_drain(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_IDEMPOTENCY_TASK_H_INCLUDED_ */
