
/*
 * ngx_http_idempotency_handler.c — the precontent handler: what a request
 * with a key meets — a replay, an error, a wait, or a claim and the proxy.
 *
 * The handler runs in the PRECONTENT phase, after nginx's access checks
 * (auth_basic, auth_request, allow/deny), so a replay is never served to a
 * client that could not have made the request. Its states (ctx->state;
 * every move through ngx_http_idempotency_state_set(), table in _ctx.c):
 *
 *        handler: no key ───────────────────────────────────────────> DONE
 *           │     bad key ──────────────────────────────> ANSWER ──send──┘
 *           ▼                                               ▲  ▲
 *          NEW ──body read──> BODY ──read: replay, error────┘  │
 *                              │ ▲                             │
 *              begin() posted  │ │ ask again         replay,   │
 *                              ▼ │                   mismatch, │
 *                             TASK ──in progress──> WAITING ───┤ conflict
 *                              │         ▲            │        │ (409)
 *                              │         └──timer─────┘        │
 *                              ├───────────────────────────────┘ error, replay
 *                              ▼ claimed
 *                           CLAIMED ──proxy_pass, header filter──┐
 *                                                                │
 *             ┌──────────────── held response ───────────────────┤
 *             ▼                                                  ▼
 *          HOLDING ──last buffer, too large,           STREAMING (idempotency_
 *             │      upstream broke                        │      stream)
 *             ▼                                            ▼ end of stream
 *          STORING  <──────────────────────────────────────┘
 *             │ complete()/release() done
 *             ▼
 *           PASS ──an answer replaced the response──> DISCARD
 *
 *   parked:  NEW (nginx reads the body), TASK and STORING (blocked on a
 *            thread-pool task), WAITING (blocked on a timer), HOLDING
 *            (output held: our r->buffered bit); the filters (_filter.c)
 *            own CLAIMED to PASS.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_ctx.h"
#include "ngx_http_idempotency_failpoint.h"
#include "ngx_http_idempotency_handler.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_state.h"
#include "ngx_http_idempotency_store.h"
#include "ngx_http_idempotency_task.h"


static ngx_int_t ngx_http_idempotency_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idempotency_start(ngx_http_request_t *r);
static void ngx_http_idempotency_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idempotency_peek(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static ngx_int_t ngx_http_idempotency_decide(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static void ngx_http_idempotency_begun(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc, idem_result_t *result);
static void ngx_http_idempotency_apply_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_idempotency_store_error(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc);
static void ngx_http_idempotency_conflict(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int64_t lease_until_ms);
static ngx_int_t ngx_http_idempotency_answer_now(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
static void ngx_http_idempotency_wait_handler(ngx_event_t *ev);


ngx_int_t
ngx_http_idempotency_handler_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_idempotency_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idempotency_handler(ngx_http_request_t *r)
{
    ngx_http_idempotency_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_idempotency_ctx_get(r);

    if (ctx != NULL) {
        switch (ctx->state) {

        case NGX_HTTP_IDEM_BODY:
            return ngx_http_idempotency_decide(r, ctx);

        case NGX_HTTP_IDEM_ANSWER:
        case NGX_HTTP_IDEM_WAITING:
            return ngx_http_idempotency_answer_now(r, ctx);

        case NGX_HTTP_IDEM_TASK:
            return NGX_DONE;

        default:
            /* claimed, or an internal redirect after the decision */
            return NGX_DECLINED;
        }
    }

    return ngx_http_idempotency_start(r);
}


/*
 * The first pass of a request: does it take part, and with which key.
 * Then its body is read (NEW), and the handler runs again once it is
 * (BODY).
 */

static ngx_int_t
ngx_http_idempotency_start(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_idempotency_ctx_t       *ctx;
    ngx_http_idempotency_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);

    /* an internal redirect (rewrite, try_files) takes part like any other
     * request; one that already decided has its context back from
     * ngx_http_idempotency_ctx_get() */
    if (!ilcf->enable) {
        return NGX_DECLINED;
    }

    if (!(r->method & ilcf->methods)) {
        /* no context: the variables read its absence as "bypass" */
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_BYPASS, 1);
        return NGX_DECLINED;
    }

    ctx = ngx_http_idempotency_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_idempotency_request_key(r, ctx, ilcf);

    if (rc == NGX_DECLINED) {
        ctx->outcome = NGX_HTTP_IDEM_OUT_BYPASS;
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DONE);
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_BYPASS, 1);
        return NGX_DECLINED;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->state == NGX_HTTP_IDEM_ANSWER) {
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    if (ngx_http_idempotency_request_scope(r, ilcf, &ctx->scope) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_idempotency_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_idempotency_body_handler(ngx_http_request_t *r)
{
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_idempotency_ctx_get(r);

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_BODY);
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


/*
 * A read of the key's record, on the event loop (an LMDB read is a memory
 * access). NGX_OK: complete with our fingerprint, ctx->answer holds the
 * replay. NGX_AGAIN: in progress with the same fingerprint and a running
 * lease, ctx->result says so. NGX_BUSY: a record is there that is not
 * known durable yet (the commit that wrote it is being synced; its own
 * request is answered, and its waiters woken, once that is done).
 * NGX_DECLINED: anything else, for begin().
 */

static ngx_int_t
ngx_http_idempotency_peek(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    int                                rc;
    int64_t                            now;
    uint64_t                           start_us;
    idem_result_t                      res;
    idem_decision_t                    d;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    /* only a store whose reads are memory reads is read on the event loop;
       a networked one answers through begin() on the thread pool */
    if (!ctx->fingerprinted || imcf->store == NULL
        || !(idem_store_caps(imcf->store) & IDEM_STORE_CAP_INLINE_READ))
    {
        return NGX_DECLINED;
    }

    now = ngx_http_idempotency_store_now_ms();
    start_us = ngx_http_idempotency_metrics_now_us();

    rc = idem_store_lookup_nowait(imcf->store, &ctx->scope,
                                  (char *) ctx->key, ctx->key_len, now, &res);
    if (rc == IDEM_EPENDING) {
        return NGX_BUSY;
    }

    if (rc != 0) {
        return NGX_DECLINED;
    }

    d = idem_decide(&res.record, &ctx->fingerprint, now);

    if (d == IDEM_DECIDE_REPLAY) {
        ngx_http_idempotency_metrics_observe(NGX_HTTP_IDEM_H_REPLAY_READ,
                                     ngx_http_idempotency_metrics_now_us()
                                     - start_us);
        res.outcome = IDEM_BEGIN_REPLAY;
        ctx->result = res;
        ctx->has_result = 1;
        ngx_http_idempotency_apply_begin(r, ctx, 0);
        return NGX_OK;
    }

    if (d == IDEM_DECIDE_IN_PROGRESS) {
        res.outcome = IDEM_BEGIN_IN_PROGRESS;
        ctx->result = res;
        ctx->has_result = 1;
        return NGX_AGAIN;
    }

    idem_result_free(&res);

    return NGX_DECLINED;
}


/*
 * The body is here: replay from a read when the key is complete, else
 * post begin() to the thread pool.
 */

static ngx_int_t
ngx_http_idempotency_decide(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    idem_store_t                      *store;
    ngx_int_t                          fp;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    store = ngx_http_idempotency_store(imcf, r->connection->log);
    if (store == NULL) {
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    fp = ngx_http_idempotency_request_fingerprint(r, ctx);
    if (fp == NGX_ERROR) {
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DONE);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (fp == NGX_OK) {
        switch (ngx_http_idempotency_peek(r, ctx)) {

        case NGX_OK:
            return ngx_http_idempotency_answer_now(r, ctx);

        case NGX_AGAIN:
            /* the first request runs: wait without a thread hop */
            ngx_http_idempotency_apply_begin(r, ctx, 0);
            return ngx_http_idempotency_answer_now(r, ctx);

        default:
            break;
        }
    }

    if (ngx_http_idempotency_store_failed(imcf)) {
        /* only replays from the files open: see _health.c */
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        return ngx_http_idempotency_answer_now(r, ctx);
    }

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_TASK);

    if (ngx_http_idempotency_task_post_begin(r, ctx, fp == NGX_DECLINED,
                                        ngx_http_idempotency_begun)
        != NGX_OK)
    {
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DONE);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DONE;
}


/* begin()'s completion (a task of _task.c): the request moves on. */

static void
ngx_http_idempotency_begun(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc, idem_result_t *result)
{
    if (rc == 0) {
        ctx->result = *result;
        ctx->has_result = 1;
    }

    ngx_http_idempotency_apply_begin(r, ctx, rc);

    if (ctx->state == NGX_HTTP_IDEM_CLAIMED) {
        NGX_HTTP_IDEM_FAILPOINT("after_claim", ctx);
    }

    ngx_http_idempotency_state_resume(r);
}


/*
 * Turns the result of begin() (in ctx->result, or an error code) into the
 * next state: claimed, waiting, or an answer.
 */

static void
ngx_http_idempotency_apply_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_int_t rc)
{
    ngx_msec_t                         now;
    idem_record_t                     *rec;
    ngx_http_idempotency_loc_conf_t   *ilcf;

    ilcf = ctx->conf;

    if (rc != 0) {
        ngx_http_idempotency_store_error(r, ctx, rc);
        return;
    }

    rec = &ctx->result.record;

    switch (ctx->result.outcome) {

    case IDEM_BEGIN_CLAIMED:
        ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_HELD);
        ctx->owner = ctx->result.owner;
        ctx->expires_ms = rec->expires_ms;
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_CLAIMED);
        ctx->outcome = NGX_HTTP_IDEM_OUT_EXECUTED;
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_EXECUTED, 1);
        ngx_http_idempotency_metrics_claim_started(ctx);
        return;

    case IDEM_BEGIN_REPLAY:
    case IDEM_BEGIN_STALE:
        ctx->outcome = NGX_HTTP_IDEM_OUT_REPLAYED;
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_REPLAYED, 1);

        if (ctx->result.outcome == IDEM_BEGIN_STALE) {
            ngx_http_idempotency_metrics_count(
                NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME, 1);
        }

        ctx->answer.status = rec->response.status;
        ctx->answer.resp = rec->response;
        ctx->answer.flags = rec->flags;
        ctx->answer.replayed = 1;
        ctx->answer.expires_ms = rec->expires_ms;
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_ANSWER);
        return;

    case IDEM_BEGIN_MISMATCH:
        ctx->outcome = NGX_HTTP_IDEM_OUT_MISMATCH;
        ctx->api_log = ctx->result.first_mismatch ? 1 : 0;
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_MISMATCH, 1);

        if (ngx_http_idempotency_send_error_answer(r, ctx, IDEM_ERR_MISMATCH, 0)
            != NGX_OK)
        {
            ctx->answer.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return;

    case IDEM_BEGIN_IN_PROGRESS:
    default:
        now = ngx_current_msec;

        if (ctx->wait_deadline == 0) {
            ctx->wait_deadline = now + ilcf->wait;
            ctx->wait_step = 10;
            ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_WAITED, 1);
        }

        if ((ngx_msec_int_t) (ctx->wait_deadline - now) > 0) {
            ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_WAITING);
            return;
        }

        ngx_http_idempotency_conflict(r, ctx, rec->lease_until_ms);
        return;
    }
}


/* The store failed: 503, with a retry hint when it is full. */

static void
ngx_http_idempotency_store_error(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int rc)
{
    ngx_http_idempotency_main_conf_t  *imcf;

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "idempotency store error: %s", idem_strerror(rc));
    ctx->outcome = NGX_HTTP_IDEM_OUT_UNAVAILABLE;
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_UNAVAILABLE, 1);
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_STORE_ERRORS, 1);

    if (ngx_http_idempotency_send_error_answer(r, ctx, IDEM_ERR_STORE, 0)
        != NGX_OK)
    {
        ctx->answer.status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (rc == IDEM_EFULL) {
        /* room comes back when the prune timer removes what expired:
         * retry after its next run */
        imcf = ngx_http_get_module_main_conf(r,
                                             ngx_http_idempotency_module);
        ctx->answer.retry_after = ngx_max(1,
                                    (imcf->prune_interval + 999) / 1000);
    }
}


/*
 * The wait is over and the first request still runs: 409 with a retry hint.
 * The hint is short (retrying SDKs ignore hints of a minute or more, and a
 * retry waits again by itself) and honest: never later than the first
 * request's lease ends, when its outcome is settled one way or another.
 */

#define NGX_HTTP_IDEMPOTENCY_RETRY_HINT_MS  2000


static void
ngx_http_idempotency_conflict(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, int64_t lease_until_ms)
{
    int64_t  now, hint;

    ctx->outcome = NGX_HTTP_IDEM_OUT_CONFLICT;
    ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_CONFLICT, 1);

    if (ngx_http_idempotency_send_error_answer(r, ctx, IDEM_ERR_IN_PROGRESS, 0)
        != NGX_OK)
    {
        ctx->answer.status = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_http_idempotency_store_now_ms();
    hint = ngx_min(lease_until_ms - now, NGX_HTTP_IDEMPOTENCY_RETRY_HINT_MS);
    hint = ngx_max(hint, 100);

    ctx->answer.retry_after_ms = (ngx_uint_t) hint;
    ctx->answer.retry_after = (ngx_uint_t) (hint + 999) / 1000;
}


/* Answers from ctx->answer, or parks the request while it waits. */

static ngx_int_t
ngx_http_idempotency_answer_now(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_msec_t  delay, left;

    switch (ctx->state) {

    case NGX_HTTP_IDEM_CLAIMED:
        return NGX_DECLINED;

    case NGX_HTTP_IDEM_WAITING:
        if (ctx->wait_event.timer_set || ctx->wait_event.posted) {
            /* already parked: an event of the connection woke us */
            return NGX_DONE;
        }

        if ((ngx_msec_int_t) (ctx->wait_deadline - ngx_current_msec) <= 0) {
            ngx_http_idempotency_conflict(r, ctx,
                ctx->has_result ? ctx->result.record.lease_until_ms : 0);
            break;
        }

        left = ctx->wait_deadline - ngx_current_msec;
        delay = ngx_min(ctx->wait_step, left);
        ctx->wait_step = ngx_min(ctx->wait_step * 2, 200);

        ctx->wait_event.handler = ngx_http_idempotency_wait_handler;
        ctx->wait_event.data = r;
        ctx->wait_event.log = r->connection->log;
        ngx_add_timer(&ctx->wait_event, delay);
        ngx_http_idempotency_ctx_wait(ctx);

        r->main->blocked++;
        return NGX_DONE;

    default:
        break;
    }

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DONE);

    rc = ngx_http_idempotency_send_answer(r, ctx);

    ngx_http_finalize_request(r, rc);
    return NGX_DONE;
}


static void
ngx_http_idempotency_wait_handler(ngx_event_t *ev)
{
    ngx_http_request_t                *r = ev->data;
    ngx_int_t                          rc;
    ngx_uint_t                         busy;
    ngx_http_idempotency_ctx_t        *ctx;
    ngx_http_idempotency_main_conf_t  *imcf;

    ngx_connection_t                  *c = r->connection;

    ctx = ngx_http_idempotency_ctx_get(r);

    ngx_http_idempotency_ctx_unwait(ctx);
    r->main->blocked--;

    if (c->error) {
        /* the client is gone (an HTTP/2 stream reset leaves r to us) */
        ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_DONE);
        ngx_http_finalize_request(r, NGX_HTTP_CLIENT_CLOSED_REQUEST);
        ngx_http_run_posted_requests(c);
        return;
    }

    if (ctx->has_result) {
        idem_result_free(&ctx->result);
        ctx->has_result = 0;
    }

    /* a cheap read first: still running, or finished meanwhile */
    rc = ngx_http_idempotency_peek(r, ctx);
    busy = ctx->wait_busy;
    ctx->wait_busy = (rc == NGX_BUSY);

    switch (rc) {

    case NGX_AGAIN:
        ngx_http_idempotency_apply_begin(r, ctx, 0);
        ngx_http_idempotency_state_resume(r);
        return;

    case NGX_OK:
        ngx_http_idempotency_state_resume(r);
        return;

    case NGX_BUSY:
        if (!busy) {
            /* the first one's result is being synced: its settlement
               wakes us, or the next step of the timer reads again */
            ngx_http_idempotency_state_resume(r);
            return;
        }

        /* twice (its request is in another process, which may have
           died before the sync): ask where the read may wait */
        ctx->wait_busy = 0;
        break;

    default:
        break;
    }

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_BODY);

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    if (ngx_http_idempotency_store_failed(imcf)) {
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        ngx_http_idempotency_state_resume(r);
        return;
    }

    ngx_http_idempotency_state_set(ctx, NGX_HTTP_IDEM_TASK);

    if (ngx_http_idempotency_task_post_begin(r, ctx, !ctx->fingerprinted,
                                        ngx_http_idempotency_begun)
        != NGX_OK)
    {
        ngx_http_idempotency_apply_begin(r, ctx, IDEM_EUNAVAIL);
        ngx_http_idempotency_state_resume(r);
    }
}
