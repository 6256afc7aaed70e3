
/*
 * ngx_http_idempotency_committer.h — the worker's commit thread: runs the
 * batch tasks of ngx_http_idempotency_task.c instead of the thread pool.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_COMMITTER_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_COMMITTER_H_INCLUDED_


#include "ngx_http_idempotency.h"


/*
 * Runs task->handler(task->ctx, log) on the commit thread (started at the
 * first call), then task->event.handler on the event loop, as
 * ngx_thread_task_post() would. One task at a time: the caller posts the
 * next only once the last one's event handler ran. NGX_DECLINED: there is
 * no commit thread (it could not be started, or it stopped); the caller
 * posts to a thread pool instead.
 */
ngx_int_t ngx_http_idempotency_committer_post(ngx_thread_task_t *task);
/* at worker exit: the task running is finished, the thread joined;
 * returns a task it finished whose event handler has not run, or NULL */
ngx_thread_task_t *ngx_http_idempotency_committer_stop(void);


#endif /* _NGX_HTTP_IDEMPOTENCY_COMMITTER_H_INCLUDED_ */
