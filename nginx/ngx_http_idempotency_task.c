
/*
 * ngx_http_idempotency_task.c — the store's blocking calls, run on an nginx
 * thread pool and never on the event loop.
 *
 *   event loop                         thread pool
 *   ----------                         -----------
 *   job filled from r, r parked   ──>  job->handler: only the job's own
 *   (r->main->blocked++, r->aio)       memory and the store; never r, its
 *                                      pool or its log
 *   event handler: unpark, apply  <──  result in the job
 *   the result to ctx, resume r
 *
 * While a request is parked nginx will not free it (blocked), so the job may
 * point at memory of its pool that nothing else touches meanwhile. A
 * detached job (a claim left by a request that is gone) owns all it uses
 * and frees itself in its event handler.
 */

#include "ngx_http_idempotency.h"


typedef enum {
    NGX_HTTP_IDEM_JOB_BEGIN = 0,
    NGX_HTTP_IDEM_JOB_FINISH,
    NGX_HTTP_IDEM_JOB_PRUNE
} ngx_http_idempotency_job_kind_e;


typedef struct {
    const u_char                 *data;     /* in memory, or NULL: in file */
    off_t                         offset;
    size_t                        len;
} ngx_http_idempotency_seg_t;


typedef struct {
    ngx_http_idempotency_job_kind_e  kind;
    idem_store_t                    *store;
    ngx_http_request_t              *request;   /* NULL when detached */
    ngx_http_idempotency_ctx_t      *ctx;       /* NULL when detached */
    ngx_http_idempotency_main_conf_t *imcf;

    idem_hash_t                      scope;
    idem_hash_t                      fingerprint;
    u_char                           key[IDEM_KEY_MAX];
    size_t                           key_len;

    /* begin */
    int64_t                          ttl_ms;
    int64_t                          lease_ms;
    idem_on_unknown_t                on_unknown;
    idem_style_t                     style;
    ngx_uint_t                       fp_in_thread;
    idem_request_t                   req;
    ngx_fd_t                         fd;
    ngx_http_idempotency_seg_t      *segs;
    ngx_uint_t                       nsegs;
    size_t                           body_len;

    /* finish */
    uint64_t                         owner;
    const idem_response_t           *resp;
    uint32_t                         flags;
    ngx_uint_t                       release;

    /* prune */
    size_t                           budget;
    size_t                           removed;
    int                              more;

    /* out */
    int                              rc;
    idem_result_t                    res;
} ngx_http_idempotency_job_t;


static void ngx_http_idempotency_job_handler(void *data, ngx_log_t *log);
static void ngx_http_idempotency_job_done(ngx_event_t *ev);
static void ngx_http_idempotency_detached_done(ngx_event_t *ev);


/*
 * The response stored for a key whose outcome is unknown (SPEC §3): a
 * gateway-made 504 in the location's error style.
 */

static int
ngx_http_idempotency_unknown_response(idem_style_t style, const u_char *key,
    size_t key_len, idem_errbody_t *eb, idem_header_t *ct,
    idem_response_t *resp)
{
    int  rc;

    rc = idem_errbody(style, IDEM_ERR_UNKNOWN_OUTCOME, (const char *) key,
                      key_len, 0, eb);
    if (rc != 0) {
        return rc;
    }

    ct->name.data = "Content-Type";
    ct->name.len = sizeof("Content-Type") - 1;
    ct->value.data = eb->content_type;
    ct->value.len = strlen(eb->content_type);

    ngx_memzero(resp, sizeof(idem_response_t));
    resp->status = eb->status;
    resp->headers = ct;
    resp->nheaders = 1;
    resp->body = (const uint8_t *) eb->body;
    resp->body_len = eb->body_len;

    return 0;
}


/* Reads the request body (memory and temp-file parts) and fingerprints it. */

static int
ngx_http_idempotency_job_fingerprint(ngx_http_idempotency_job_t *job)
{
    int          rc;
    u_char      *body, *p;
    ssize_t      n;
    size_t       done;
    ngx_uint_t   i;

    body = NULL;

    if (job->body_len) {
        body = malloc(job->body_len);
        if (body == NULL) {
            return IDEM_ENOMEM;
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
                return IDEM_EIO;
            }
        }

        p += job->segs[i].len;
    }

    job->req.body = body;
    job->req.body_len = job->body_len;

    rc = idem_fingerprint(&job->req, &job->fingerprint, NULL);

    free(body);
    job->req.body = NULL;

    return rc;
}


static void
ngx_http_idempotency_job_handler(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_job_t *job = data;

    idem_begin_t     in;
    idem_header_t    ct;
    idem_errbody_t   eb;
    idem_response_t  unknown;

    switch (job->kind) {

    case NGX_HTTP_IDEM_JOB_BEGIN:
        if (job->fp_in_thread) {
            job->rc = ngx_http_idempotency_job_fingerprint(job);
            if (job->rc != 0) {
                return;
            }
        }

        job->rc = ngx_http_idempotency_unknown_response(job->style, job->key,
                                                        job->key_len, &eb,
                                                        &ct, &unknown);
        if (job->rc != 0) {
            return;
        }

        ngx_memzero(&in, sizeof(idem_begin_t));
        in.scope = &job->scope;
        in.key = (const char *) job->key;
        in.key_len = job->key_len;
        in.fingerprint = &job->fingerprint;
        in.now_ms = ngx_http_idempotency_now_ms();
        in.ttl_ms = job->ttl_ms;
        in.lease_ms = job->lease_ms;
        in.on_unknown = job->on_unknown;
        in.unknown_response = &unknown;

        job->rc = idem_store_begin(job->store, &in, &job->res);

        free(eb.body);
        return;

    case NGX_HTTP_IDEM_JOB_FINISH:
        if (job->resp == NULL) {
            /* a detached job: the outcome is unknown */
            if (job->release) {
                job->rc = idem_store_release(job->store, &job->scope,
                                             (const char *) job->key,
                                             job->key_len, job->owner);
                return;
            }

            job->rc = ngx_http_idempotency_unknown_response(job->style,
                          job->key, job->key_len, &eb, &ct, &unknown);
            if (job->rc != 0) {
                return;
            }

            job->rc = idem_store_complete(job->store, &job->scope,
                                          (const char *) job->key,
                                          job->key_len, job->owner, &unknown,
                                          IDEM_REC_UNKNOWN_OUTCOME);
            free(eb.body);
            return;
        }

        if (job->release) {
            job->rc = idem_store_release(job->store, &job->scope,
                                         (const char *) job->key,
                                         job->key_len, job->owner);
        } else {
            job->rc = idem_store_complete(job->store, &job->scope,
                                          (const char *) job->key,
                                          job->key_len, job->owner, job->resp,
                                          job->flags);
        }

        return;

    case NGX_HTTP_IDEM_JOB_PRUNE:
        job->rc = idem_store_prune(job->store, ngx_http_idempotency_now_ms(),
                                   job->budget, &job->removed, &job->more);
        return;
    }
}


static ngx_int_t
ngx_http_idempotency_post(ngx_http_request_t *r, ngx_thread_task_t *task)
{
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    task->handler = ngx_http_idempotency_job_handler;
    task->event.data = task->ctx;
    task->event.handler = ngx_http_idempotency_job_done;

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        return NGX_ERROR;
    }

    r->main->blocked++;
    r->aio = 1;

    return NGX_OK;
}


static ngx_http_idempotency_job_t *
ngx_http_idempotency_job_alloc(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_http_idempotency_job_kind_e kind,
    ngx_thread_task_t **taskp)
{
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_job_t        *job;
    ngx_http_idempotency_loc_conf_t   *ilcf;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    ilcf = ctx->conf;

    task = ngx_thread_task_alloc(r->pool, sizeof(ngx_http_idempotency_job_t));
    if (task == NULL) {
        return NULL;
    }

    job = task->ctx;
    ngx_memzero(job, sizeof(ngx_http_idempotency_job_t));

    job->kind = kind;
    job->store = imcf->store;
    job->imcf = imcf;
    job->request = r;
    job->ctx = ctx;
    job->scope = ctx->scope;
    job->fingerprint = ctx->fingerprint;
    ngx_memcpy(job->key, ctx->key, ctx->key_len);
    job->key_len = ctx->key_len;
    job->ttl_ms = ilcf->ttl;
    job->lease_ms = ilcf->lease;
    job->on_unknown = ilcf->on_unknown;
    job->style = ilcf->error_style;
    job->owner = ctx->owner;
    job->fd = NGX_INVALID_FILE;

    *taskp = task;

    return job;
}


ngx_int_t
ngx_http_idempotency_post_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t fp_in_thread)
{
    ngx_uint_t                   n;
    ngx_buf_t                   *b;
    ngx_chain_t                 *cl;
    ngx_thread_task_t           *task;
    ngx_http_idempotency_job_t  *job;

    job = ngx_http_idempotency_job_alloc(r, ctx, NGX_HTTP_IDEM_JOB_BEGIN,
                                         &task);
    if (job == NULL || job->store == NULL) {
        return NGX_ERROR;
    }

    if (fp_in_thread && r->request_body && r->request_body->bufs) {
        job->fp_in_thread = 1;

        job->req.method.data = (char *) r->method_name.data;
        job->req.method.len = r->method_name.len;
        job->req.path.data = (char *) r->unparsed_uri.data;
        job->req.path.len = r->args_start
                            ? (size_t) (r->args_start - 1 - r->uri_start)
                            : r->unparsed_uri.len;
        if (job->req.path.len > r->unparsed_uri.len) {
            job->req.path.len = r->unparsed_uri.len;
        }
        job->req.query.data = (char *) r->args.data;
        job->req.query.len = r->args.len;

        if (r->headers_in.content_type) {
            job->req.content_type.data =
                (char *) r->headers_in.content_type->value.data;
            job->req.content_type.len =
                r->headers_in.content_type->value.len;
        }

        n = 0;
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            n++;
        }

        job->segs = ngx_palloc(r->pool,
                               n * sizeof(ngx_http_idempotency_seg_t));
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
    }

    ctx->state = NGX_HTTP_IDEM_TASK;

    return ngx_http_idempotency_post(r, task);
}


ngx_int_t
ngx_http_idempotency_post_finish(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, const idem_response_t *resp,
    uint32_t flags, ngx_uint_t release)
{
    ngx_thread_task_t           *task;
    ngx_http_idempotency_job_t  *job;

    job = ngx_http_idempotency_job_alloc(r, ctx, NGX_HTTP_IDEM_JOB_FINISH,
                                         &task);
    if (job == NULL || job->store == NULL) {
        return NGX_ERROR;
    }

    job->resp = resp;
    job->flags = flags;
    job->release = release;

    ctx->state = NGX_HTTP_IDEM_STORING;

    return ngx_http_idempotency_post(r, task);
}


static void
ngx_http_idempotency_job_done(ngx_event_t *ev)
{
    ngx_http_idempotency_job_t *job = ev->data;

    ngx_http_request_t          *r;
    ngx_http_idempotency_ctx_t  *ctx;

    r = job->request;
    ctx = job->ctx;

    r->main->blocked--;
    r->aio = 0;

    ngx_http_set_log_request(r->connection->log, r);

    switch (job->kind) {

    case NGX_HTTP_IDEM_JOB_BEGIN:
        if (job->rc == 0) {
            ctx->result = job->res;
            ctx->has_result = 1;

            if (job->fp_in_thread) {
                ctx->fingerprint = job->fingerprint;
                ctx->fingerprinted = 1;
            }
        }

        ngx_http_idempotency_apply_begin(r, ctx, job->rc);

        if (ctx->state == NGX_HTTP_IDEM_CLAIMED) {
            NGX_HTTP_IDEM_FAILPOINT("after_claim", ctx);
        }

        ngx_http_idempotency_resume(r);
        return;

    case NGX_HTTP_IDEM_JOB_FINISH:
        ctx->store_rc = job->rc;
        ctx->finished = 1;

        if (job->rc == IDEM_ENOTOWNER) {
            ngx_http_idempotency_count(NGX_HTTP_IDEM_M_LATE_COMPLETE, 1);
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idempotency key \"%*s\": the claim was settled "
                          "meanwhile (lease passed); this result is not "
                          "stored", ctx->key_len, ctx->key);

        } else if (job->rc != 0) {
            ngx_http_idempotency_count(NGX_HTTP_IDEM_M_STORE_ERRORS, 1);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idempotency key \"%*s\": storing the result "
                          "failed: %s; the key stays in progress until its "
                          "lease passes", ctx->key_len, ctx->key,
                          idem_strerror(job->rc));
        }

        if (job->rc == 0) {
            NGX_HTTP_IDEM_FAILPOINT("after_complete", ctx);
        }

        ngx_http_idempotency_release_held(r, ctx);
        return;

    default:
        return;
    }
}


/*
 * A request that held a claim is gone before its result was stored: store
 * the unknown-outcome error (or release, per idempotency_on_unknown) on its
 * behalf. Everything the job needs is copied into it.
 */

void
ngx_http_idempotency_post_detached_finish(ngx_http_idempotency_ctx_t *ctx,
    ngx_log_t *log)
{
    ngx_http_request_t                *r;
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_job_t        *job;
    ngx_http_idempotency_loc_conf_t   *ilcf;
    ngx_http_idempotency_main_conf_t  *imcf;

    r = ctx->request;
    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    ilcf = ctx->conf;

    if (imcf->store == NULL) {
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_idempotency_job_t), log);
    if (task == NULL) {
        return;
    }

    job = (ngx_http_idempotency_job_t *) (task + 1);
    task->ctx = job;

    job->kind = NGX_HTTP_IDEM_JOB_FINISH;
    job->store = imcf->store;
    job->imcf = imcf;
    job->scope = ctx->scope;
    ngx_memcpy(job->key, ctx->key, ctx->key_len);
    job->key_len = ctx->key_len;
    job->owner = ctx->owner;
    job->style = ilcf->error_style;
    job->release = (ilcf->on_unknown == IDEM_ON_UNKNOWN_RELEASE
                    || !ngx_http_idempotency_reached_upstream(r));
    job->fd = NGX_INVALID_FILE;

    ctx->finished = 1;

    task->handler = ngx_http_idempotency_job_handler;
    task->event.data = task;
    task->event.handler = ngx_http_idempotency_detached_done;
    task->event.log = ngx_cycle->log;

    ngx_http_idempotency_count(job->release ? NGX_HTTP_IDEM_M_RELEASED
                                            : NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME,
                               1);

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
    }
}


static void
ngx_http_idempotency_detached_done(ngx_event_t *ev)
{
    ngx_thread_task_t           *task = ev->data;
    ngx_http_idempotency_job_t  *job = task->ctx;

    if (job->rc != 0 && job->rc != IDEM_ENOTOWNER) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "idempotency key \"%*s\": settling a lost request "
                      "failed: %s", job->key_len, job->key,
                      idem_strerror(job->rc));
    }

    ngx_free(task);
}


/* The prune timer: one bounded batch at a time, off the event loop. */

static void
ngx_http_idempotency_prune_done(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task = ev->data;
    ngx_http_idempotency_job_t        *job = task->ctx;
    ngx_http_idempotency_main_conf_t  *imcf = job->imcf;

    imcf->prune_running = 0;

    if (job->rc == 0 && job->removed) {
        ngx_http_idempotency_count(NGX_HTTP_IDEM_M_PRUNED, job->removed);
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&imcf->prune_event,
                      job->more ? 10 : imcf->prune_interval);
    }

    ngx_free(task);
}


void
ngx_http_idempotency_prune(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_job_t        *job;
    ngx_http_idempotency_main_conf_t  *imcf = ev->data;

    if (ngx_exiting || imcf->prune_running) {
        return;
    }

    if (ngx_http_idempotency_store(imcf, ev->log) == NULL) {
        ngx_add_timer(&imcf->prune_event, imcf->prune_interval);
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_idempotency_job_t), ev->log);
    if (task == NULL) {
        ngx_add_timer(&imcf->prune_event, imcf->prune_interval);
        return;
    }

    job = (ngx_http_idempotency_job_t *) (task + 1);
    task->ctx = job;
    job->kind = NGX_HTTP_IDEM_JOB_PRUNE;
    job->store = imcf->store;
    job->imcf = imcf;
    job->budget = imcf->prune_budget;

    task->handler = ngx_http_idempotency_job_handler;
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


#if (IDEM_FAILPOINTS)

#include <signal.h>

void
ngx_http_idempotency_failpoint(const char *point,
    ngx_http_idempotency_ctx_t *ctx)
{
    char    *spec, *p, *action, *prefix;
    size_t   n, plen;

    spec = getenv("IDEMGATE_FAILPOINTS");
    if (spec == NULL) {
        return;
    }

    plen = ngx_strlen(point);

    for (p = spec; *p; p += n + (p[n] == ',')) {
        n = strcspn(p, ",");

        if (n <= plen + 1 || ngx_strncmp(p, point, plen) != 0
            || p[plen] != ':')
        {
            continue;
        }

        action = p + plen + 1;
        prefix = memchr(action, ':', p + n - action);
        if (prefix == NULL) {
            continue;
        }

        prefix++;

        if ((size_t) (p + n - prefix) > ctx->key_len
            || ngx_strncmp(ctx->key, prefix, p + n - prefix) != 0)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "idempotency failpoint %s fires for key \"%*s\"",
                      point, ctx->key_len, ctx->key);

        if (ngx_strncmp(action, "crash:", 6) == 0) {
            (void) kill(0, SIGKILL);
        }

        (void) raise(SIGKILL);
    }
}

#endif
