
/*
 * ngx_http_idempotency_ctx.c — the module's context of a request: made,
 * found again after an internal redirect, and freed with the request, when
 * a claim it still holds is settled on its behalf; and the one writer of
 * that claim (ctx->claim).
 *
 * A claim (ctx->claim) is HELD from the store's answer "claimed" until its
 * settlement is done: while HELD, the context is in the worker's list of
 * claims, so that a worker that exits with requests still running settles
 * them (ngx_http_idempotency_ctx_settle_claims()).
 *
 * A request that waits for its key's first request (WAITING) is in the
 * worker's waiters, a small table by key: when a claim of this worker is
 * settled (its result stored or its claim released), the waiters of the
 * same scope and key are woken at once and read the key again, instead
 * of at their next timer (10 ms at first, doubling up to 200 ms). Waiters
 * of a claim held by another worker or gateway keep to their timers.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_ctx.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_state.h"
#include "ngx_http_idempotency_task.h"


static void ngx_http_idempotency_cleanup(void *data);
static ngx_queue_t *ngx_http_idempotency_waiters_of(
    ngx_http_idempotency_ctx_t *ctx);
static void ngx_http_idempotency_wake_waiters(ngx_http_idempotency_ctx_t *ctx);
static void ngx_http_idempotency_settle_lost(ngx_http_idempotency_ctx_t *ctx,
    ngx_log_t *log);


/* this worker's requests that hold a claim (for a fast shutdown) */
static ngx_queue_t  ngx_http_idempotency_claims;
static ngx_uint_t   ngx_http_idempotency_claims_init;

/* this worker's waiting requests, by a hash of scope and key */
#define NGX_HTTP_IDEM_WAITERS  256

static ngx_queue_t  ngx_http_idempotency_waiters[NGX_HTTP_IDEM_WAITERS];
static ngx_uint_t   ngx_http_idempotency_waiters_init;


/*
 * The module's context survives internal redirects (error_page, named
 * locations) through the request pool's cleanup list, which nginx keeps
 * while it clears r->ctx.
 */

ngx_http_idempotency_ctx_t *
ngx_http_idempotency_ctx_get(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idempotency_module);
    if (ctx != NULL || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_idempotency_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_idempotency_module);
            return ctx;
        }
    }

    return NULL;
}


ngx_http_idempotency_ctx_t *
ngx_http_idempotency_ctx_create(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_idempotency_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idempotency_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_idempotency_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ctx->conf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);
    ngx_http_set_ctx(r, ctx, ngx_http_idempotency_module);

    return ctx;
}


/*
 * The request is gone. A claim it still holds was never completed: the
 * response did not arrive whole (upstream reset after the header, client
 * and upstream both lost). Settle it off the event loop, without r.
 */

static void
ngx_http_idempotency_cleanup(void *data)
{
    ngx_http_idempotency_ctx_t  *ctx = data;

    if (ctx->wait_event.timer_set) {
        ngx_del_timer(&ctx->wait_event);
    }

    if (ctx->wait_event.posted) {
        ngx_delete_posted_event(&ctx->wait_event);
    }

    ngx_http_idempotency_ctx_unwait(ctx);
    ngx_http_idempotency_metrics_claim_ended(ctx);

    if (ctx->claim == NGX_HTTP_IDEM_CLAIM_HELD
        && (ctx->state == NGX_HTTP_IDEM_CLAIMED
            || ctx->state == NGX_HTTP_IDEM_HOLDING
            || ctx->state == NGX_HTTP_IDEM_STREAMING))
    {
        ngx_http_idempotency_settle_lost(ctx, ngx_cycle->log);
    }

    if (ctx->claim == NGX_HTTP_IDEM_CLAIM_HELD) {
        ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_SETTLED);
    }

    if (ctx->has_result) {
        idem_result_free(&ctx->result);
        ctx->has_result = 0;
    }

    if (ctx->errbody.body) {
        free(ctx->errbody.body);
        ctx->errbody.body = NULL;
    }

    if (ctx->body) {
        free(ctx->body);
        ctx->body = NULL;
    }

    ctx->request = NULL;
}


/*
 * HELD puts the context in the worker's list of claims, leaving HELD takes
 * it out. SETTLED goes back to HELD when a settlement that failed is tried
 * again (the unknown-outcome answer in place of the response).
 */

void
ngx_http_idempotency_ctx_set_claim(ngx_http_idempotency_ctx_t *ctx,
    ngx_http_idempotency_claim_e claim)
{
    if (!ngx_http_idempotency_claims_init) {
        ngx_queue_init(&ngx_http_idempotency_claims);
        ngx_http_idempotency_claims_init = 1;
    }

    if (ctx->claim == NGX_HTTP_IDEM_CLAIM_HELD
        && claim != NGX_HTTP_IDEM_CLAIM_HELD)
    {
        ngx_queue_remove(&ctx->claimed);

        if (claim == NGX_HTTP_IDEM_CLAIM_SETTLED
            && ctx->state == NGX_HTTP_IDEM_STORING)
        {
            /* the settlement is done (not a lost claim only handed over
             * to a detached job, whose waiters keep to their timers) */
            ngx_http_idempotency_wake_waiters(ctx);
        }

    } else if (ctx->claim != NGX_HTTP_IDEM_CLAIM_HELD
               && claim == NGX_HTTP_IDEM_CLAIM_HELD)
    {
        ngx_queue_insert_tail(&ngx_http_idempotency_claims, &ctx->claimed);
    }

    ctx->claim = claim;
}


static ngx_queue_t *
ngx_http_idempotency_waiters_of(ngx_http_idempotency_ctx_t *ctx)
{
    ngx_uint_t  i, h;

    if (!ngx_http_idempotency_waiters_init) {
        for (i = 0; i < NGX_HTTP_IDEM_WAITERS; i++) {
            ngx_queue_init(&ngx_http_idempotency_waiters[i]);
        }

        ngx_http_idempotency_waiters_init = 1;
    }

    h = ngx_hash_key(ctx->key, ctx->key_len) ^ ctx->scope.bytes[0];

    return &ngx_http_idempotency_waiters[h % NGX_HTTP_IDEM_WAITERS];
}


void
ngx_http_idempotency_ctx_wait(ngx_http_idempotency_ctx_t *ctx)
{
    if (!ctx->wait_listed) {
        ngx_queue_insert_tail(ngx_http_idempotency_waiters_of(ctx),
                              &ctx->waiting);
        ctx->wait_listed = 1;
    }
}


void
ngx_http_idempotency_ctx_unwait(ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx->wait_listed) {
        ngx_queue_remove(&ctx->waiting);
        ctx->wait_listed = 0;
    }
}


/* The waiters of ctx's scope and key read it again now: their timer's
 * event is posted, to run after the current one. */

static void
ngx_http_idempotency_wake_waiters(ngx_http_idempotency_ctx_t *ctx)
{
    ngx_queue_t                 *head, *q, *next;
    ngx_http_idempotency_ctx_t  *w;

    head = ngx_http_idempotency_waiters_of(ctx);

    for (q = ngx_queue_head(head); q != ngx_queue_sentinel(head); q = next) {
        next = ngx_queue_next(q);
        w = ngx_queue_data(q, ngx_http_idempotency_ctx_t, waiting);

        if (w == ctx
            || w->key_len != ctx->key_len
            || ngx_memcmp(w->key, ctx->key, ctx->key_len) != 0
            || ngx_memcmp(w->scope.bytes, ctx->scope.bytes, IDEM_HASH_LEN) != 0
            || !w->wait_event.timer_set)
        {
            continue;
        }

        ngx_http_idempotency_ctx_unwait(w);
        ngx_del_timer(&w->wait_event);
        ngx_post_event(&w->wait_event, &ngx_posted_events);
        ngx_http_idempotency_metrics_count(NGX_HTTP_IDEM_M_WOKEN, 1);
    }
}


/*
 * The claim of a request that is gone, or of one still running when the
 * worker exits: settled on its behalf off the event loop, as the unknown
 * outcome — or released, under idempotency_on_unknown release or when
 * nothing reached the upstream.
 */

static void
ngx_http_idempotency_settle_lost(ngx_http_idempotency_ctx_t *ctx,
    ngx_log_t *log)
{
    ngx_uint_t  release;

    release = (ctx->conf->on_unknown == IDEM_ON_UNKNOWN_RELEASE
               || !ngx_http_idempotency_request_reached_upstream(ctx->request));

    if (ngx_http_idempotency_task_post_detached(ctx, release, log) != NGX_OK) {
        return;
    }

    ngx_http_idempotency_ctx_set_claim(ctx, NGX_HTTP_IDEM_CLAIM_SETTLED);

    ngx_http_idempotency_metrics_count(release ? NGX_HTTP_IDEM_M_RELEASED
                                       : NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME, 1);
}


/*
 * A fast shutdown (SIGTERM to nginx) ends the worker with requests still
 * running and no cleanup of theirs: their claims are settled here as a
 * request that is gone would settle them.
 */

void
ngx_http_idempotency_ctx_settle_claims(ngx_cycle_t *cycle)
{
    ngx_queue_t                 *q;
    ngx_http_idempotency_ctx_t  *ctx;

    if (!ngx_http_idempotency_claims_init) {
        return;
    }

    while (!ngx_queue_empty(&ngx_http_idempotency_claims)) {
        q = ngx_queue_head(&ngx_http_idempotency_claims);
        ctx = ngx_queue_data(q, ngx_http_idempotency_ctx_t, claimed);

        if (ctx->request) {
            ngx_http_idempotency_settle_lost(ctx, cycle->log);
        }

        if (ctx->claim == NGX_HTTP_IDEM_CLAIM_HELD) {
            /* not even posted: the claim lapses with its lease */
            ngx_http_idempotency_ctx_set_claim(ctx,
                                               NGX_HTTP_IDEM_CLAIM_SETTLED);
        }
    }
}


