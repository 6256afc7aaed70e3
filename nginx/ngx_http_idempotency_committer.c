
/*
 * ngx_http_idempotency_committer.c — the worker's commit thread.
 *
 *   event loop                          commit thread (SCHED_BATCH)
 *   ----------                          -------------
 *   post(task) ── posted, cond ──────>  task->handler(): the batch
 *                                         (the commit, its sync)
 *   task->event.handler() <── eventfd ── finished
 *
 * A worker's batches run one at a time (ngx_http_idempotency_task.c), so
 * one thread of its own serves them, instead of a thread of the shared
 * pool. What it buys is its scheduling class: on a busy core a thread of
 * the pool, woken by the loop's post or by the end of its sync, preempts
 * the event loop at once, so the batch starts with the few jobs queued so
 * far and the loop is switched out and back for each wake-up. A
 * SCHED_BATCH thread waits for the loop to yield (to epoll_wait, or at the
 * end of its time slice): the loop finishes the events it has, and the
 * batch takes every job they queued. The thread pool, shared with nginx's
 * aio, is left as it is; it still runs the rest (large fingerprints,
 * pruning) and takes the batches when this thread cannot be started.
 *
 * The thread blocks every signal (nginx's must reach the event loop) and
 * touches only the task it is given; the task is handed over under mu,
 * and its completion comes back through an eventfd that the event loop
 * watches, like nginx's own thread pool completions (ngx_notify).
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_committer.h"

/* after nginx's headers, which set _GNU_SOURCE and the file offset bits */
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>


typedef enum {
    NGX_HTTP_IDEM_COMMITTER_NONE = 0,    /* not started yet */
    NGX_HTTP_IDEM_COMMITTER_RUNNING,
    NGX_HTTP_IDEM_COMMITTER_OFF          /* failed or stopped: the pool */
} ngx_http_idempotency_committer_state_e;


static ngx_int_t ngx_http_idempotency_committer_start(void);
static void *ngx_http_idempotency_committer_main(void *data);
static void ngx_http_idempotency_committer_done(ngx_event_t *ev);


static ngx_http_idempotency_committer_state_e
                              ngx_http_idempotency_committer_state;
static pthread_t              ngx_http_idempotency_committer_thread;
static pthread_mutex_t        ngx_http_idempotency_committer_mu =
    PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t         ngx_http_idempotency_committer_cv =
    PTHREAD_COND_INITIALIZER;
/* under mu: the task handed to the thread, the one it finished, stop */
static ngx_thread_task_t     *ngx_http_idempotency_committer_posted;
static ngx_thread_task_t     *ngx_http_idempotency_committer_finished;
static ngx_uint_t             ngx_http_idempotency_committer_stopping;
static ngx_connection_t      *ngx_http_idempotency_committer_conn;


ngx_int_t
ngx_http_idempotency_committer_post(ngx_thread_task_t *task)
{
    if (ngx_http_idempotency_committer_state
        == NGX_HTTP_IDEM_COMMITTER_NONE)
    {
        (void) ngx_http_idempotency_committer_start();
    }

    if (ngx_http_idempotency_committer_state
        != NGX_HTTP_IDEM_COMMITTER_RUNNING)
    {
        return NGX_DECLINED;
    }

    task->event.active = 1;
    task->event.complete = 0;

    (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);
    ngx_http_idempotency_committer_posted = task;
    (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);

    /* signalled after the unlock: the thread, once it runs, does not wait
     * for the mutex the loop still holds */
    (void) pthread_cond_signal(&ngx_http_idempotency_committer_cv);

    return NGX_OK;
}


ngx_thread_task_t *
ngx_http_idempotency_committer_stop(void)
{
    ngx_thread_task_t  *task;

    if (ngx_http_idempotency_committer_state
        != NGX_HTTP_IDEM_COMMITTER_RUNNING)
    {
        ngx_http_idempotency_committer_state = NGX_HTTP_IDEM_COMMITTER_OFF;
        return NULL;
    }

    (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);
    ngx_http_idempotency_committer_stopping = 1;
    (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);
    (void) pthread_cond_signal(&ngx_http_idempotency_committer_cv);

    /* a batch that runs is finished: it may hold the store */
    (void) pthread_join(ngx_http_idempotency_committer_thread, NULL);

    ngx_http_idempotency_committer_state = NGX_HTTP_IDEM_COMMITTER_OFF;

    /* closed here, before nginx counts the sockets a worker leaves open */
    ngx_close_connection(ngx_http_idempotency_committer_conn);
    ngx_http_idempotency_committer_conn = NULL;

    /* the loop will not run again to deliver it: the thread is gone */
    task = ngx_http_idempotency_committer_finished;
    ngx_http_idempotency_committer_finished = NULL;

    return task;
}


/* The eventfd the loop watches and the thread, once per worker. A failure
 * is logged and leaves the batches to the thread pool. */

static ngx_int_t
ngx_http_idempotency_committer_start(void)
{
    int                fd, rc;
    ngx_event_t       *rev;
    sigset_t           all, old;
    ngx_connection_t  *c;

    ngx_http_idempotency_committer_state = NGX_HTTP_IDEM_COMMITTER_OFF;

    fd = eventfd(0, EFD_NONBLOCK|EFD_CLOEXEC);
    if (fd == -1) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, ngx_errno,
                      "idempotency: no commit thread (eventfd), batches "
                      "run on the thread pool");
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "idempotency: no commit thread (no free connection), "
                      "batches run on the thread pool");
        (void) close(fd);
        return NGX_ERROR;
    }

    rev = c->read;
    rev->data = c;
    rev->handler = ngx_http_idempotency_committer_done;
    rev->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->log = ngx_cycle->log;

    if (ngx_add_event(rev, NGX_READ_EVENT,
                      (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                      ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "idempotency: no commit thread (its event), batches "
                      "run on the thread pool");
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    /* set before the thread starts, which reads its fd */
    ngx_http_idempotency_committer_conn = c;

    /* the thread inherits a mask that blocks every signal */
    (void) sigfillset(&all);
    (void) pthread_sigmask(SIG_SETMASK, &all, &old);

    rc = pthread_create(&ngx_http_idempotency_committer_thread, NULL,
                        ngx_http_idempotency_committer_main, ngx_cycle->log);

    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (rc != 0) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, rc,
                      "idempotency: no commit thread (pthread_create), "
                      "batches run on the thread pool");
        ngx_http_idempotency_committer_conn = NULL;
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    ngx_http_idempotency_committer_state = NGX_HTTP_IDEM_COMMITTER_RUNNING;

    return NGX_OK;
}


static void *
ngx_http_idempotency_committer_main(void *data)
{
    ngx_log_t  *log = data;

    uint64_t             one = 1;
    ngx_thread_task_t   *task;
    struct sched_param   param;

    ngx_memzero(&param, sizeof(struct sched_param));

    if (sched_setscheduler(0, SCHED_BATCH, &param) == -1) {
        ngx_log_error(NGX_LOG_NOTICE, log, ngx_errno,
                      "idempotency: the commit thread runs without "
                      "SCHED_BATCH");
    }

    (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);

    for ( ;; ) {
        while (ngx_http_idempotency_committer_posted == NULL
               && !ngx_http_idempotency_committer_stopping)
        {
            (void) pthread_cond_wait(&ngx_http_idempotency_committer_cv,
                                     &ngx_http_idempotency_committer_mu);
        }

        task = ngx_http_idempotency_committer_posted;
        if (task == NULL) {
            break;    /* stopping, nothing posted */
        }

        ngx_http_idempotency_committer_posted = NULL;
        (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);

        task->handler(task->ctx, log);

        (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);
        ngx_http_idempotency_committer_finished = task;
        (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);

        if (write(ngx_http_idempotency_committer_conn->fd, &one,
                  sizeof(uint64_t))
            != (ssize_t) sizeof(uint64_t))
        {
            /* cannot fail while the counter is far from its maximum */
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "idempotency: the commit thread cannot wake "
                          "the event loop");
        }

        (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);
    }

    (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);

    return NULL;
}


/* The eventfd is readable: the finished task's completion, on the loop. */

static void
ngx_http_idempotency_committer_done(ngx_event_t *ev)
{
    uint64_t            n;
    ngx_connection_t   *c = ev->data;
    ngx_thread_task_t  *task;

    (void) read(c->fd, &n, sizeof(uint64_t));

    (void) pthread_mutex_lock(&ngx_http_idempotency_committer_mu);
    task = ngx_http_idempotency_committer_finished;
    ngx_http_idempotency_committer_finished = NULL;
    (void) pthread_mutex_unlock(&ngx_http_idempotency_committer_mu);

    if (task == NULL) {
        return;
    }

    task->event.complete = 1;
    task->event.active = 0;

    task->event.handler(&task->event);
}
