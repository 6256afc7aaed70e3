
/*
 * ngx_http_idempotency_task.c — the store's blocking calls, run off the
 * event loop, batched: the batches on the worker's commit thread
 * (ngx_http_idempotency_committer.c; the thread pool if it cannot start),
 * large fingerprints and pruning on an nginx thread pool.
 *
 *   requests of this worker          commit thread
 *   -----------------------          -------------
 *   job: begin/complete/release
 *     │ r parked (blocked, aio)
 *     ▼
 *   pending queue ──(none running)──> one batch task: idem_store_batch()
 *     ▲  ▲                            — every op of the batch in one
 *     │  └─ jobs queued meanwhile       durable commit, one thread hop
 *     │      wait for the next batch         │
 *     │                                      ▼
 *     └──── next batch posted <──── batch done (event loop): each job's
 *                                   result to its request, which resumes
 *
 * One batch runs at a time per worker: while it commits, the next one
 * fills, so the commit rate, not the request rate, bounds the fsyncs, and
 * each commit's fixed cost (a thread hop, a transaction, a sync, a wake-up
 * of the loop) is shared by every job that waited. Batches side by side
 * (tried on a store whose syncs run outside its lock) only split the same
 * jobs into more commits: on one core, 2.5 times as many commits and a
 * quarter fewer requests per second; where the disk was slow, no gain.
 * Several workers still overlap there: one's commit runs while another's
 * sync waits. A large body's fingerprint is computed by a task of its own
 * first, so a slow canonicalization never holds a batch up.
 *
 * Whoever posts a job names its completion (as nginx's copy filter sets
 * task->event.handler): this file knows the store's calls and the thread
 * pool, and no request logic. A completion runs on the event loop with the
 * request unparked; it resumes the request itself.
 *
 * The batch's thread takes its jobs from the queue only when the worker's
 * turn to commit comes (ngx_http_idempotency_commit_mu, for an embedded
 * store): with several workers on one LMDB store, whose commits are
 * serial, a batch then carries every job queued while the other workers
 * committed.
 *
 * While a request is parked nginx will not free it (blocked), so a job may
 * point at memory of its pool that nothing else touches meanwhile. The
 * thread side touches only the queue (under its mutex), the jobs' own
 * memory and the store — never r, its pool or its log. A detached job (a
 * claim left by a request that is gone) owns all it uses and is freed when
 * its batch is done.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_committer.h"
#include "ngx_http_idempotency_failpoint.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_store.h"
#include "ngx_http_idempotency_task.h"

/* after nginx's headers, which set _GNU_SOURCE and the file offset bits */
#include <pthread.h>
#include <sys/mman.h>


#define NGX_HTTP_IDEM_BATCH_MAX  512
/* batch tasks: one runs, the other's jobs are being delivered */
#define NGX_HTTP_IDEM_BATCHES    2


typedef enum {
    NGX_HTTP_IDEM_JOB_BEGIN = 0,
    NGX_HTTP_IDEM_JOB_FINISH,
    NGX_HTTP_IDEM_JOB_DETACHED
} ngx_http_idempotency_job_kind_e;


typedef struct {
    const u_char                 *data;     /* in memory, or NULL: in file */
    off_t                         offset;
    size_t                        len;
} ngx_http_idempotency_seg_t;


typedef struct {
    ngx_queue_t                      queue;
    ngx_http_idempotency_job_kind_e  kind;
    ngx_http_request_t              *request;   /* NULL when detached */
    ngx_http_idempotency_ctx_t      *ctx;       /* NULL when detached */

    idem_hash_t                      scope;
    idem_hash_t                      fingerprint;
    u_char                           key[IDEM_KEY_MAX];
    size_t                           key_len;
    idem_style_t                     style;
    idem_errtpl_t                   *error_template; /* the location's, which
                                                  lives with the cycle */

    /* the unknown-outcome answer a begin() or a detached job may store */
    idem_errbody_t                   unknown_body;
    idem_header_t                    unknown_hdrs[2]; /* Content-Type, Date */
    u_char                           unknown_date[sizeof(
                                         "Mon, 28 Sep 1970 06:00:00 GMT")];
    idem_response_t                  unknown;

    /* a large body, fingerprinted on the thread pool before the batch */
    idem_request_t                   req;
    ngx_fd_t                         fd;
    ngx_http_idempotency_seg_t      *segs;
    ngx_uint_t                       nsegs;
    size_t                           body_len;
    int                              fp_rc;

    idem_op_t                        op;
    uint64_t                         started_us;  /* for the histograms */
    ngx_http_idempotency_task_done_pt  done;     /* the poster's completion;
                                                    NULL when detached */
} ngx_http_idempotency_job_t;


typedef struct {
    idem_store_t                    *store;
    ngx_uint_t                       n;
    ngx_http_idempotency_job_t     **jobs;
    idem_op_t                       *ops;
    ngx_uint_t                      *index;    /* ops[k] is jobs[index[k]] */
} ngx_http_idempotency_batch_t;


typedef struct {
    idem_store_t                      *store;
    ngx_http_idempotency_main_conf_t  *imcf;
    size_t                             budget;
    size_t                             removed;
    int                                more;
    int                                rc;
    uint64_t                           started_us;
} ngx_http_idempotency_prune_job_t;


static int ngx_http_idempotency_unknown_response(
    ngx_http_idempotency_job_t *job);
static int ngx_http_idempotency_unknown_make(void *arg,
    const idem_response_t **resp);
static void ngx_http_idempotency_batch_handler(void *data, ngx_log_t *log);
static void ngx_http_idempotency_batch_run(ngx_http_idempotency_batch_t *batch);
static void ngx_http_idempotency_batch_done(ngx_event_t *ev);
static void ngx_http_idempotency_batch_count(idem_store_t *store);
static ngx_uint_t ngx_http_idempotency_pending_take(
    ngx_http_idempotency_job_t **jobs, ngx_uint_t max);
static ngx_thread_task_t *ngx_http_idempotency_batch_alloc(void);
static void ngx_http_idempotency_batch_free(ngx_thread_task_t *task);
static void ngx_http_idempotency_batch_post(void);
static ngx_uint_t ngx_http_idempotency_batch_room(void);
static void ngx_http_idempotency_enqueue(ngx_http_idempotency_job_t *job);
static ngx_http_idempotency_job_t *ngx_http_idempotency_job_alloc(
    ngx_http_request_t *r, ngx_http_idempotency_ctx_t *ctx,
    ngx_http_idempotency_job_kind_e kind);
static void ngx_http_idempotency_job_date(ngx_http_idempotency_job_t *job);
static void ngx_http_idempotency_park(ngx_http_request_t *r);
static void ngx_http_idempotency_unpark(ngx_http_request_t *r);
static void ngx_http_idempotency_begin_op(ngx_http_idempotency_job_t *job);
static void ngx_http_idempotency_finish_op(ngx_http_idempotency_job_t *job,
    ngx_uint_t release, uint64_t owner, uint32_t flags);
static void ngx_http_idempotency_fp_handler(void *data, ngx_log_t *log);
static void ngx_http_idempotency_fp_done(ngx_event_t *ev);
static ngx_int_t ngx_http_idempotency_post_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_job_t *job);
static void ngx_http_idempotency_job_deliver(ngx_http_idempotency_job_t *job);
static void ngx_http_idempotency_prune_handler(void *data, ngx_log_t *log);
static ngx_msec_t ngx_http_idempotency_prune_pause(
    ngx_http_idempotency_prune_job_t *job);
static void ngx_http_idempotency_prune_done(ngx_event_t *ev);


/*
 * This worker's queue: jobs waiting for the next batch. The event loop
 * adds to it; the batch's thread takes from it once it may commit (late
 * binding, below), so both hold pending_mu.
 */
static ngx_queue_t                        ngx_http_idempotency_pending;
static ngx_uint_t                         ngx_http_idempotency_npending;
static pthread_mutex_t                    ngx_http_idempotency_pending_mu =
    PTHREAD_MUTEX_INITIALIZER;
/*
 * The batch tasks take turns: when one's commit is done, the next batch is
 * posted on another before the first one's results are delivered, so
 * that the store's next commit (mostly waiting for the disk) overlaps with
 * the event loop resuming the requests of the last one. Delivering is the
 * task whose jobs the loop is handing back; no batch runs on it then.
 */
static ngx_thread_task_t
    *ngx_http_idempotency_batch_tasks[NGX_HTTP_IDEM_BATCHES];
static ngx_thread_task_t                 *ngx_http_idempotency_delivering;

/*
 * The workers' commit turn, a robust process-shared mutex in memory the
 * master maps before it forks them. The workers of an embedded store
 * commit one after the other under its own write lock; a batch that
 * waited for that lock would carry only the jobs queued before it
 * started waiting, while those queued during the wait (the other worker
 * commits, about a millisecond) went to the commit after it. So a batch's
 * thread first takes this turn, then the worker's queue as it is at that
 * moment, and commits it: each commit carries every job its worker has
 * ready. A worker killed in its turn leaves the mutex to the next one
 * (EOWNERDEAD). NULL: no turn (the map failed), batches take their jobs
 * when they start.
 */
static pthread_mutex_t                   *ngx_http_idempotency_commit_mu;
static ngx_uint_t                         ngx_http_idempotency_batch_running;
                                          /* 1: a batch posted, not done */
static ngx_uint_t                         ngx_http_idempotency_draining;
static ngx_http_idempotency_main_conf_t  *ngx_http_idempotency_imcf;


/*
 * The response stored for a key whose outcome is unknown (SPEC §3): a
 * gateway-made 504 in the location's error style. Runs on the thread pool.
 */

static int
ngx_http_idempotency_unknown_response(ngx_http_idempotency_job_t *job)
{
    int  rc;

    rc = ngx_http_idempotency_send_errbody(job->style, job->error_template,
                                      IDEM_ERR_UNKNOWN_OUTCOME, job->key,
                                      job->key_len, 0, NULL,
                                      &job->unknown_body);
    if (rc != 0) {
        return rc;
    }

    ngx_http_idempotency_send_errbody_response(&job->unknown_body,
                                          &job->unknown_hdrs[0],
                                          &job->unknown);

    /* the Date of when the request ran (the job's making), which every
       replay of the answer keeps, as it keeps an upstream's */
    job->unknown_hdrs[1].name.data = "Date";
    job->unknown_hdrs[1].name.len = sizeof("Date") - 1;
    job->unknown_hdrs[1].value.data = (const char *) job->unknown_date;
    job->unknown_hdrs[1].value.len = ngx_strlen(job->unknown_date);
    job->unknown.nheaders = 2;

    return 0;
}


/* unknown_make of a begin(): the job's unknown-outcome answer, made once
 * (the store may plan more than once). Runs on the thread pool. */

static int
ngx_http_idempotency_unknown_make(void *arg, const idem_response_t **resp)
{
    ngx_http_idempotency_job_t *job = arg;

    int  rc;

    if (job->unknown_body.body == NULL) {
        rc = ngx_http_idempotency_unknown_response(job);
        if (rc != 0) {
            return rc;
        }
    }

    *resp = &job->unknown;

    return 0;
}


/* batches */

static void
ngx_http_idempotency_batch_handler(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_batch_t *batch = data;

    int               rc;
    ngx_uint_t        locked;
    pthread_mutex_t  *mu = ngx_http_idempotency_commit_mu;

    locked = 0;

    /* only an embedded store's commits are serial through their syncs: a
     * networked store's batches of several workers run side by side, and
     * so do those of a store whose syncs overlap (its lock is held for
     * the commit's CPU work only) */
    if (mu != NULL && batch->store != NULL
        && (idem_store_caps(batch->store)
            & (IDEM_STORE_CAP_DIRECTORY | IDEM_STORE_CAP_OVERLAP))
           == IDEM_STORE_CAP_DIRECTORY)
    {
        rc = pthread_mutex_lock(mu);

        if (rc == EOWNERDEAD) {
            /* a worker died in its turn: what it guarded is LMDB's */
            rc = pthread_mutex_consistent(mu);

            if (rc == 0) {
                ngx_log_error(NGX_LOG_NOTICE, log, 0,
                              "idempotency: the commit turn of a worker "
                              "that died was taken over");
            } else {
                ngx_log_error(NGX_LOG_ALERT, log, rc,
                              "idempotency: the commit turn of a worker "
                              "that died could not be taken over, batches "
                              "go on without it");
            }

        } else if (rc != 0) {
            ngx_log_error(NGX_LOG_ALERT, log, rc,
                          "idempotency: the workers' commit turn failed, "
                          "this batch goes without it");
        }

        locked = (rc == 0);
    }

    batch->n = ngx_http_idempotency_pending_take(batch->jobs,
                                                 NGX_HTTP_IDEM_BATCH_MAX);

#if (IDEM_FAILPOINTS)
    {
    ngx_uint_t  i;

    for (i = 0; i < batch->n; i++) {
        NGX_HTTP_IDEM_FAILPOINT_KEY("in_commit_turn", batch->jobs[i]->key,
                                    batch->jobs[i]->key_len);
    }
    }
#endif

    ngx_http_idempotency_batch_run(batch);

    if (locked) {
        (void) pthread_mutex_unlock(mu);
    }
}


/* Runs the jobs of batch (on the thread pool, or at exit on the loop):
 * each job's op and result are left in job->op. */

static void
ngx_http_idempotency_batch_run(ngx_http_idempotency_batch_t *batch)
{
    int                          rc;
    ngx_uint_t                   i, k, m;
    ngx_http_idempotency_job_t  *job;

    /* the store's batch gets the ops whose preparation succeeded */
    m = 0;

    for (i = 0; i < batch->n; i++) {
        job = batch->jobs[i];

        if (job->op.kind == IDEM_OP_BEGIN) {
            /* made only for a stale claim, which is rare */
            job->op.begin.unknown_response = NULL;
            job->op.begin.unknown_make = ngx_http_idempotency_unknown_make;
            job->op.begin.unknown_arg = job;

        } else if (job->kind == NGX_HTTP_IDEM_JOB_DETACHED
                   && job->op.kind == IDEM_OP_COMPLETE)
        {
            rc = ngx_http_idempotency_unknown_response(job);
            if (rc != 0) {
                job->op.rc = rc;
                continue;
            }

            job->op.resp = &job->unknown;
        }

        batch->ops[m] = job->op;
        batch->index[m] = i;
        m++;
    }

    rc = m ? idem_store_batch(batch->store, batch->ops, m) : 0;

    for (k = 0; k < m; k++) {
        job = batch->jobs[batch->index[k]];
        job->op.rc = rc ? rc : batch->ops[k].rc;

        if (job->op.rc == 0) {
            job->op.result = batch->ops[k].result;
        }
    }

    for (i = 0; i < batch->n; i++) {
        free(batch->jobs[i]->unknown_body.body);
        batch->jobs[i]->unknown_body.body = NULL;
    }
}


static void
ngx_http_idempotency_batch_done(ngx_event_t *ev)
{
    ngx_thread_task_t             *task = ev->data;
    ngx_http_idempotency_batch_t  *batch = task->ctx;

    ngx_uint_t  i;

    ngx_http_idempotency_batch_count(batch->store);

    /*
     * The next batch goes to another task while this one's jobs are
     * delivered: a request that resumes may queue a job at once (a release
     * after a failed connect), and no batch may reuse this task and its
     * jobs[] before the loop is done with them.
     */
    ngx_http_idempotency_batch_running = 0;
    ngx_http_idempotency_delivering = task;

    ngx_http_idempotency_batch_post();

    for (i = 0; i < batch->n; i++) {
        ngx_http_idempotency_job_deliver(batch->jobs[i]);
    }

    batch->n = 0;
    ngx_http_idempotency_delivering = NULL;

    ngx_http_idempotency_batch_post();
}


/* The store's commits and the ops they carried since the last batch, into
 * the shared counters. */

static void
ngx_http_idempotency_batch_count(idem_store_t *store)
{
    static idem_store_t        *last_store;
    static idem_store_stats_t   last;

    idem_store_stats_t  now;

    idem_store_stats(store, &now);

    if (store != last_store || now.commits < last.commits
        || now.batched_ops < last.batched_ops)
    {
        /* a store opened anew counts from 0 */
        last_store = store;
        ngx_memzero(&last, sizeof(idem_store_stats_t));
    }

    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_STORE_COMMITS,
                                       now.commits - last.commits);
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_STORE_BATCHED_OPS,
                                       now.batched_ops - last.batched_ops);
    last = now;
}


/* Takes up to max jobs from the head of the queue into jobs[], under the
 * queue's mutex (the event loop and the batch's thread both call it);
 * returns how many. */

static ngx_uint_t
ngx_http_idempotency_pending_take(ngx_http_idempotency_job_t **jobs,
    ngx_uint_t max)
{
    ngx_uint_t    n;
    ngx_queue_t  *q;

    (void) pthread_mutex_lock(&ngx_http_idempotency_pending_mu);

    for (n = 0; n < max && !ngx_queue_empty(&ngx_http_idempotency_pending);
         n++)
    {
        q = ngx_queue_head(&ngx_http_idempotency_pending);
        ngx_queue_remove(q);
        jobs[n] = ngx_queue_data(q, ngx_http_idempotency_job_t, queue);
    }

    ngx_http_idempotency_npending -= n;

    (void) pthread_mutex_unlock(&ngx_http_idempotency_pending_mu);

    return n;
}


/* The worker's batch task, with room for NGX_HTTP_IDEM_BATCH_MAX jobs, in
 * one allocation with its batch. */

static ngx_thread_task_t *
ngx_http_idempotency_batch_alloc(void)
{
    ngx_uint_t  n = NGX_HTTP_IDEM_BATCH_MAX;

    ngx_thread_task_t             *task;
    ngx_http_idempotency_batch_t  *batch;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_idempotency_batch_t), ngx_cycle->log);
    if (task == NULL) {
        return NULL;
    }

    batch = (ngx_http_idempotency_batch_t *) (task + 1);
    batch->store = ngx_http_idempotency_imcf->store;
    batch->jobs = ngx_alloc(n * sizeof(ngx_http_idempotency_job_t *),
                            ngx_cycle->log);
    batch->ops = ngx_alloc(n * sizeof(idem_op_t), ngx_cycle->log);
    batch->index = ngx_alloc(n * sizeof(ngx_uint_t), ngx_cycle->log);
    task->ctx = batch;

    if (batch->jobs == NULL || batch->ops == NULL || batch->index == NULL) {
        ngx_http_idempotency_batch_free(task);
        return NULL;
    }

    return task;
}


static void
ngx_http_idempotency_batch_free(ngx_thread_task_t *task)
{
    ngx_http_idempotency_batch_t  *batch = task->ctx;

    ngx_free(batch->jobs);
    ngx_free(batch->ops);
    ngx_free(batch->index);
    ngx_free(task);
}


/* Whether a batch may be posted now: jobs wait, and none runs. */

static ngx_uint_t
ngx_http_idempotency_batch_room(void)
{
    ngx_uint_t  n;

    if (ngx_http_idempotency_draining || ngx_http_idempotency_batch_running) {
        return 0;
    }

    /* a running batch's thread may be taking jobs meanwhile */
    (void) pthread_mutex_lock(&ngx_http_idempotency_pending_mu);
    n = ngx_http_idempotency_npending;
    (void) pthread_mutex_unlock(&ngx_http_idempotency_pending_mu);

    return n > 0;
}


/* Posts the pending jobs as one batch, unless as many batches as may run
 * at once run already. */

static void
ngx_http_idempotency_batch_post(void)
{
    ngx_uint_t                     t;
    idem_store_t                  *store;
    ngx_thread_task_t             *task;
    ngx_http_idempotency_job_t    *job;
    ngx_http_idempotency_batch_t  *batch;

    store = ngx_http_idempotency_imcf->store;

    if (!ngx_http_idempotency_batch_room()) {
        return;
    }

    /* none runs (batch_room): the task not being delivered */
    for (t = 0; t < NGX_HTTP_IDEM_BATCHES; t++) {
        task = ngx_http_idempotency_batch_tasks[t];

        if (task == NULL || task != ngx_http_idempotency_delivering) {
            break;
        }
    }

    if (t == NGX_HTTP_IDEM_BATCHES) {
        return;    /* cannot be: one task at most is being delivered */
    }

    if (task == NULL) {
        task = ngx_http_idempotency_batch_alloc();
        if (task == NULL) {
            goto failed;
        }

        ngx_http_idempotency_batch_tasks[t] = task;
    }

    batch = task->ctx;
    batch->store = store;
    batch->n = 0;    /* the thread takes the jobs when its turn comes */

    task->handler = ngx_http_idempotency_batch_handler;
    task->event.data = task;
    task->event.handler = ngx_http_idempotency_batch_done;
    task->event.log = ngx_cycle->log;

    if (ngx_http_idempotency_committer_post(task) != NGX_OK
        && ngx_thread_task_post(ngx_http_idempotency_imcf->thread_pool, task)
           != NGX_OK)
    {
        goto failed;
    }

    ngx_http_idempotency_batch_running = 1;
    return;

failed:

    /* the store cannot be reached: every waiting request fails closed,
     * one at a time, since a completion may queue another job (which
     * fails too) or post a batch that succeeds (which takes the rest) */
    while (!ngx_http_idempotency_batch_running
           && ngx_http_idempotency_pending_take(&job, 1) == 1)
    {
        job->op.rc = IDEM_EUNAVAIL;
        ngx_http_idempotency_job_deliver(job);
    }
}


static void
ngx_http_idempotency_enqueue(ngx_http_idempotency_job_t *job)
{
    if (ngx_http_idempotency_imcf == NULL) {
        ngx_queue_init(&ngx_http_idempotency_pending);
    }

    ngx_http_idempotency_imcf = ngx_http_cycle_get_module_main_conf(
                                    ngx_cycle, ngx_http_idempotency_module);

    (void) pthread_mutex_lock(&ngx_http_idempotency_pending_mu);
    ngx_queue_insert_tail(&ngx_http_idempotency_pending, &job->queue);
    ngx_http_idempotency_npending++;
    (void) pthread_mutex_unlock(&ngx_http_idempotency_pending_mu);

    ngx_http_idempotency_batch_post();
}


/* jobs */

static ngx_http_idempotency_job_t *
ngx_http_idempotency_job_alloc(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_job_kind_e kind)
{
    ngx_http_idempotency_job_t        *job;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    if (imcf->store == NULL) {
        return NULL;
    }

    job = ngx_pcalloc(r->pool, sizeof(ngx_http_idempotency_job_t));
    if (job == NULL) {
        return NULL;
    }

    job->kind = kind;
    job->request = r;
    job->ctx = ctx;
    job->scope = ctx->scope;
    job->fingerprint = ctx->fingerprint;
    ngx_memcpy(job->key, ctx->key, ctx->key_len);
    job->key_len = ctx->key_len;
    job->style = ctx->conf->error_style;
    job->error_template = ctx->conf->error_template;
    job->fd = NGX_INVALID_FILE;

    return job;
}


/*
 * The job's Date, for the unknown-outcome answer it may store: now, copied
 * on the event loop (nginx's cached time strings are slots that later
 * updates overwrite; the answer is made on the commit thread).
 */

static void
ngx_http_idempotency_job_date(ngx_http_idempotency_job_t *job)
{
    size_t  n;

    n = ngx_min(ngx_cached_http_time.len, sizeof(job->unknown_date) - 1);
    ngx_memcpy(job->unknown_date, ngx_cached_http_time.data, n);
    job->unknown_date[n] = '\0';
}


static void
ngx_http_idempotency_park(ngx_http_request_t *r)
{
    r->main->blocked++;
    r->aio = 1;
}


static void
ngx_http_idempotency_unpark(ngx_http_request_t *r)
{
    r->main->blocked--;
    r->aio = 0;

    ngx_http_set_log_request(r->connection->log, r);
}


static void
ngx_http_idempotency_begin_op(ngx_http_idempotency_job_t *job)
{
    ngx_http_idempotency_loc_conf_t  *ilcf = job->ctx->conf;

    job->op.kind = IDEM_OP_BEGIN;
    job->op.begin.scope = &job->scope;
    job->op.begin.key = (const char *) job->key;
    job->op.begin.key_len = job->key_len;
    job->op.begin.fingerprint = &job->fingerprint;
    job->op.begin.now_ms = ngx_http_idempotency_store_now_ms();
    job->op.begin.ttl_ms = ilcf->ttl;
    job->op.begin.lease_ms = ilcf->lease;
    job->op.begin.on_unknown = ilcf->on_unknown;
    job->started_us = ngx_http_idempotency_metrics_now_us();

    /* the Date of the unknown-outcome answer the claim may be settled to */
    ngx_http_idempotency_job_date(job);
}


/* complete() (resp set by the caller) or release() of the job's key */

static void
ngx_http_idempotency_finish_op(ngx_http_idempotency_job_t *job,
    ngx_uint_t release, uint64_t owner, uint32_t flags)
{
    job->op.kind = release ? IDEM_OP_RELEASE : IDEM_OP_COMPLETE;
    job->op.scope = &job->scope;
    job->op.key = (const char *) job->key;
    job->op.key_len = job->key_len;
    job->op.owner = owner;
    job->op.flags = flags;
    job->started_us = ngx_http_idempotency_metrics_now_us();
}


/* Reads the request body (memory and temp-file parts) and fingerprints it:
 * a task of its own, on the thread pool. */

static void
ngx_http_idempotency_fp_handler(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_job_t *job = data;

    u_char      *body, *p;
    ssize_t      n;
    size_t       done;
    ngx_uint_t   i;

    body = NULL;

    if (job->body_len) {
        body = malloc(job->body_len);
        if (body == NULL) {
            job->fp_rc = IDEM_ENOMEM;
            return;
        }
    }

    p = body;

    for (i = 0; i < job->nsegs; i++) {
        if (job->segs[i].data) {
            p = ngx_cpymem(p, job->segs[i].data, job->segs[i].len);
            continue;
        }

        for (done = 0; done < job->segs[i].len; done += n) {
            n = pread(job->fd, p + done, job->segs[i].len - done,
                      job->segs[i].offset + done);
            if (n <= 0) {
                free(body);
                job->fp_rc = IDEM_EIO;
                return;
            }
        }

        p += job->segs[i].len;
    }

    job->req.body = body;
    job->req.body_len = job->body_len;

    job->fp_rc = idem_fingerprint(&job->req, &job->fingerprint, NULL);

    free(body);
    job->req.body = NULL;
}


static void
ngx_http_idempotency_fp_done(ngx_event_t *ev)
{
    ngx_http_idempotency_job_t *job = ev->data;

    ngx_http_request_t          *r = job->request;
    ngx_http_idempotency_ctx_t  *ctx = job->ctx;

    ngx_http_idempotency_unpark(r);

    if (job->fp_rc != 0) {
        job->done(r, ctx, job->fp_rc, NULL);
        return;
    }

    ctx->fingerprint = job->fingerprint;
    ctx->fingerprinted = 1;

    ngx_http_idempotency_begin_op(job);
    ngx_http_idempotency_park(r);
    ngx_http_idempotency_enqueue(job);
}


static ngx_int_t
ngx_http_idempotency_post_fingerprint(ngx_http_request_t *r,
    ngx_http_idempotency_job_t *job)
{
    ngx_buf_t                         *b;
    ngx_uint_t                         n;
    ngx_chain_t                       *cl;
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_main_conf_t  *imcf;

    if (ngx_http_idempotency_request_params(r, job->ctx->conf, &job->req)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    n = 0;
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        n++;
    }

    job->segs = ngx_palloc(r->pool, n * sizeof(ngx_http_idempotency_seg_t));
    if (job->segs == NULL) {
        return NGX_ERROR;
    }

    if (r->request_body->temp_file) {
        job->fd = r->request_body->temp_file->file.fd;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            if (job->fd == NGX_INVALID_FILE) {
                return NGX_ERROR;
            }

            job->segs[job->nsegs].data = NULL;
            job->segs[job->nsegs].offset = b->file_pos;
            job->segs[job->nsegs].len = b->file_last - b->file_pos;

        } else if (ngx_buf_in_memory(b)) {
            job->segs[job->nsegs].data = b->pos;
            job->segs[job->nsegs].len = b->last - b->pos;

        } else {
            continue;
        }

        job->body_len += job->segs[job->nsegs].len;
        job->nsegs++;
    }

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    task = ngx_thread_task_alloc(r->pool, 0);
    if (task == NULL) {
        return NGX_ERROR;
    }

    task->ctx = job;
    task->handler = ngx_http_idempotency_fp_handler;
    task->event.data = job;
    task->event.handler = ngx_http_idempotency_fp_done;

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_park(r);

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_task_post_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t fp_in_thread,
    ngx_http_idempotency_task_done_pt done)
{
    ngx_http_idempotency_job_t  *job;

    job = ngx_http_idempotency_job_alloc(r, ctx, NGX_HTTP_IDEM_JOB_BEGIN);
    if (job == NULL) {
        return NGX_ERROR;
    }

    job->done = done;

    if (fp_in_thread && r->request_body && r->request_body->bufs) {
        if (ngx_http_idempotency_post_fingerprint(r, job) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    ngx_http_idempotency_begin_op(job);
    ngx_http_idempotency_park(r);
    ngx_http_idempotency_enqueue(job);

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_task_post_finish(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, const idem_response_t *resp,
    uint32_t flags, ngx_uint_t release, ngx_http_idempotency_task_done_pt done)
{
    ngx_http_idempotency_job_t  *job;

    job = ngx_http_idempotency_job_alloc(r, ctx, NGX_HTTP_IDEM_JOB_FINISH);
    if (job == NULL) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_finish_op(job, release, ctx->owner, flags);
    job->op.resp = resp;
    job->done = done;

    ngx_http_idempotency_park(r);
    ngx_http_idempotency_enqueue(job);

    return NGX_OK;
}


/* A batch is done: each job's result to its poster's completion. */

static void
ngx_http_idempotency_job_deliver(ngx_http_idempotency_job_t *job)
{
    ngx_uint_t           h;
    ngx_http_request_t  *r;

    if (job->kind == NGX_HTTP_IDEM_JOB_DETACHED) {
        if (job->op.rc != 0 && job->op.rc != IDEM_ENOTOWNER) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "idempotency key \"%*s\": settling a lost request "
                          "failed: %s", job->key_len, job->key,
                          idem_strerror(job->op.rc));
        }

        ngx_free(job);
        return;
    }

    r = job->request;

    ngx_http_idempotency_unpark(r);

    h = job->kind == NGX_HTTP_IDEM_JOB_BEGIN ? NGX_HTTP_IDEM_H_CLAIM
        : job->op.kind == IDEM_OP_RELEASE ? NGX_HTTP_IDEM_H_RELEASE
        : NGX_HTTP_IDEM_H_COMPLETE;

    ngx_http_idempotency_metrics_observe(h,
                                         ngx_http_idempotency_metrics_now_us()
                                         - job->started_us);

    job->done(r, job->ctx, job->op.rc,
              job->op.rc == 0 ? &job->op.result : NULL);
}


/*
 * Settles the claim of a request that is gone (or about to be, at worker
 * exit) on its behalf: the unknown-outcome error is stored, or the key
 * released. Everything the job needs is copied into it, and it has no
 * completion. NGX_ERROR: nothing was posted.
 */

ngx_int_t
ngx_http_idempotency_task_post_detached(ngx_http_idempotency_ctx_t *ctx,
    ngx_uint_t release, ngx_log_t *log)
{
    ngx_http_idempotency_job_t        *job;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_idempotency_module);

    if (imcf == NULL || imcf->store == NULL) {
        return NGX_ERROR;
    }

    job = ngx_calloc(sizeof(ngx_http_idempotency_job_t), log);
    if (job == NULL) {
        return NGX_ERROR;
    }

    job->kind = NGX_HTTP_IDEM_JOB_DETACHED;
    job->scope = ctx->scope;
    ngx_memcpy(job->key, ctx->key, ctx->key_len);
    job->key_len = ctx->key_len;
    job->style = ctx->conf->error_style;
    job->error_template = ctx->conf->error_template;
    job->fd = NGX_INVALID_FILE;
    ngx_http_idempotency_job_date(job);

    ngx_http_idempotency_finish_op(job, release, ctx->owner,
                                   IDEM_REC_UNKNOWN_OUTCOME);

    ngx_http_idempotency_enqueue(job);

    return NGX_OK;
}


/* The workers' commit turn (see ngx_http_idempotency_commit_mu), mapped
 * in the master before the workers fork and kept across reloads. */

ngx_int_t
ngx_http_idempotency_task_init_turn(ngx_log_t *log)
{
    void                 *p;
    pthread_mutexattr_t   attr;

    if (ngx_http_idempotency_commit_mu != NULL) {
        return NGX_OK;    /* made by the first configuration: kept */
    }

    p = mmap(NULL, sizeof(pthread_mutex_t), PROT_READ|PROT_WRITE,
             MAP_SHARED|MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        ngx_log_error(NGX_LOG_WARN, log, ngx_errno,
                      "idempotency: no shared commit turn (mmap), the "
                      "workers' batches take their jobs when they start");
        return NGX_OK;
    }

    if (pthread_mutexattr_init(&attr) != 0
        || pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED) != 0
        || pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST) != 0
        || pthread_mutex_init(p, &attr) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "idempotency: no shared commit turn (mutex), the "
                      "workers' batches take their jobs when they start");
        (void) munmap(p, sizeof(pthread_mutex_t));
        return NGX_OK;
    }

    (void) pthread_mutexattr_destroy(&attr);
    ngx_http_idempotency_commit_mu = p;

    return NGX_OK;
}


/*
 * The worker exits (its thread pool already stopped): no batch is posted
 * from here on, and the settlements still queued — results of requests and
 * claims left by requests that are gone — are run synchronously by
 * ngx_http_idempotency_task_drain(), so no key waits out its lease for
 * want of an event loop. Claims not yet made are dropped: nothing was
 * forwarded.
 */

void
ngx_http_idempotency_task_hold(void)
{
    ngx_uint_t                     i;
    ngx_thread_task_t             *task;
    ngx_http_idempotency_job_t    *job;
    ngx_http_idempotency_batch_t  *batch;

    ngx_http_idempotency_draining = 1;

    task = ngx_http_idempotency_committer_stop();
    if (task == NULL) {
        return;
    }

    /*
     * A batch committed as the worker stopped, its results never handed
     * back: a claim it made reached no request, which will not go
     * upstream now. Its release is queued (no batch is posted: draining)
     * for the drain to settle, so the key is free at once instead of at
     * the end of its lease.
     */
    batch = task->ctx;

    for (i = 0; i < batch->n; i++) {
        job = batch->jobs[i];

        if (job->op.kind == IDEM_OP_BEGIN && job->op.rc == 0
            && job->op.result.outcome == IDEM_BEGIN_CLAIMED)
        {
            ngx_http_idempotency_finish_op(job, 1, job->op.result.owner, 0);
            idem_result_free(&job->op.result);
            ngx_http_idempotency_enqueue(job);
        }
    }

    batch->n = 0;
}


void
ngx_http_idempotency_task_drain(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i, k, n;
    ngx_http_idempotency_job_t    *jobs[64];
    ngx_http_idempotency_batch_t   batch;
    idem_op_t                      ops[64];
    ngx_uint_t                     index[64];

    if (ngx_http_idempotency_imcf == NULL
        || ngx_http_idempotency_imcf->store == NULL)
    {
        return;
    }

    while ((k = ngx_http_idempotency_pending_take(jobs, 64)) > 0) {
        /* claims not made are dropped; settlements are run */
        for (i = 0, n = 0; i < k; i++) {
            if (jobs[i]->op.kind != IDEM_OP_BEGIN) {
                jobs[n++] = jobs[i];
            }
        }

        batch.store = ngx_http_idempotency_imcf->store;
        batch.n = n;
        batch.jobs = jobs;
        batch.ops = ops;
        batch.index = index;

        ngx_http_idempotency_batch_run(&batch);

        while (n--) {
            if (jobs[n]->kind == NGX_HTTP_IDEM_JOB_DETACHED) {
                ngx_free(jobs[n]);
            }
        }
    }
}


/* The prune timer: one bounded batch at a time, off the event loop. */

static void
ngx_http_idempotency_prune_handler(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_prune_job_t  *job = data;

    job->rc = idem_store_prune(job->store, ngx_http_idempotency_store_now_ms(),
                               job->budget, &job->removed, &job->more);
}


/*
 * With more left to prune, the next batch waits NGX_HTTP_IDEM_PRUNE_PACE
 * times as long as this one took (10 ms at least): a prune holds the
 * store's write lock for its whole commit, and a backlog of expired keys
 * pruned back to back leaves new keys waiting behind it. Measured by
 * bench/scale.sh (300,000 expired keys, new keys at -c32, one worker):
 * back to back, new keys ran at 2,721 and 3,361/s with p99 62 and 38 ms
 * while the prune removed about 8,000 keys/s; paced, 7,458 and 5,898/s,
 * p99 15 and 18 ms, about 4,000 keys/s removed.
 */

#define NGX_HTTP_IDEM_PRUNE_PACE  4

static ngx_msec_t
ngx_http_idempotency_prune_pause(ngx_http_idempotency_prune_job_t *job)
{
    uint64_t  took_ms;

    took_ms = (ngx_http_idempotency_metrics_now_us() - job->started_us)
              / 1000;

    return (ngx_msec_t) ngx_max(10, NGX_HTTP_IDEM_PRUNE_PACE * took_ms);
}


static void
ngx_http_idempotency_prune_done(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task = ev->data;
    ngx_http_idempotency_prune_job_t  *job = task->ctx;
    ngx_http_idempotency_main_conf_t  *imcf = job->imcf;

    imcf->prune_running = 0;
    ngx_http_idempotency_batch_count(job->store);

    if (job->rc == 0 && job->removed) {
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_PRUNED,
                                           job->removed);
    }

    if (job->rc != 0) {
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_STORE_ERRORS, 1);
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "idempotency store: pruning expired keys failed: %s",
                      idem_strerror(job->rc));
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&imcf->prune_event,
                      job->more ? ngx_http_idempotency_prune_pause(job)
                                : imcf->prune_interval);
    }

    ngx_free(task);
}


void
ngx_http_idempotency_task_prune(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_prune_job_t  *job;
    ngx_http_idempotency_main_conf_t  *imcf = ev->data;

    if (ngx_exiting || imcf->prune_running) {
        return;
    }

    if (ngx_http_idempotency_store(imcf, ev->log) == NULL) {
        ngx_add_timer(&imcf->prune_event, imcf->prune_interval);
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_idempotency_prune_job_t), ev->log);
    if (task == NULL) {
        ngx_add_timer(&imcf->prune_event, imcf->prune_interval);
        return;
    }

    job = (ngx_http_idempotency_prune_job_t *) (task + 1);
    task->ctx = job;
    job->store = imcf->store;
    job->imcf = imcf;
    job->budget = imcf->prune_budget;
    job->started_us = ngx_http_idempotency_metrics_now_us();

    task->handler = ngx_http_idempotency_prune_handler;
    task->event.data = task;
    task->event.handler = ngx_http_idempotency_prune_done;
    task->event.log = ev->log;

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_add_timer(&imcf->prune_event, imcf->prune_interval);
        return;
    }

    imcf->prune_running = 1;
}
