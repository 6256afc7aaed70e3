
/*
 * ngx_http_idempotency_state.c — the one writer of a request's state
 * (ctx->state), and resuming a parked request.
 *
 * Every move of ctx->state goes through ngx_http_idempotency_state_set(),
 * which logs it at debug level ("idempotency state A -> B") and checks it
 * against the table below. A move the table does not allow is a bug: it is
 * logged at alert level (and aborts a test build), then made anyway, so
 * that a production worker never strands a request. The states and what
 * parks a request in each: ngx_http_idempotency.h; the diagram: _handler.c.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_state.h"


#define NGX_HTTP_IDEM_TO(s)  (1u << NGX_HTTP_IDEM_##s)

/*
 * The moves each state allows, besides staying (a second error answer, a
 * re-posted settlement) and DONE, which every state may go to.
 *
 *   from        to                                 by
 *   NEW         BODY, ANSWER                       body handler; a bad key
 *   BODY        TASK, CLAIMED, WAITING, ANSWER     decide: begin() posted,
 *                                                  or a read answered
 *   TASK        CLAIMED, WAITING, ANSWER           begin()'s completion
 *   WAITING     BODY, ANSWER                       the wait timer: ask the
 *                                                  store again, or answer
 *   CLAIMED     HOLDING, STREAMING                 header filter
 *   HOLDING     STORING                            body filter: last buffer,
 *                                                  too large, upstream broke
 *   STREAMING   STORING                            body filter: end of stream
 *   STORING     PASS                               settlement's completion
 *   PASS        DISCARD                            an answer replaced the
 *                                                  upstream's response
 */
static const uint32_t  ngx_http_idempotency_moves[NGX_HTTP_IDEM_NSTATES] = {
    /* NEW */       NGX_HTTP_IDEM_TO(BODY) | NGX_HTTP_IDEM_TO(ANSWER),
    /* BODY */      NGX_HTTP_IDEM_TO(TASK) | NGX_HTTP_IDEM_TO(CLAIMED)
                    | NGX_HTTP_IDEM_TO(WAITING) | NGX_HTTP_IDEM_TO(ANSWER),
    /* TASK */      NGX_HTTP_IDEM_TO(CLAIMED) | NGX_HTTP_IDEM_TO(WAITING)
                    | NGX_HTTP_IDEM_TO(ANSWER),
    /* WAITING */   NGX_HTTP_IDEM_TO(BODY) | NGX_HTTP_IDEM_TO(ANSWER),
    /* CLAIMED */   NGX_HTTP_IDEM_TO(HOLDING) | NGX_HTTP_IDEM_TO(STREAMING),
    /* HOLDING */   NGX_HTTP_IDEM_TO(STORING),
    /* STREAMING */ NGX_HTTP_IDEM_TO(STORING),
    /* STORING */   NGX_HTTP_IDEM_TO(PASS),
    /* PASS */      NGX_HTTP_IDEM_TO(DISCARD),
    /* DISCARD */   0,
    /* ANSWER */    0,
    /* DONE */      0
};


static const char  *ngx_http_idempotency_state_names[NGX_HTTP_IDEM_NSTATES] = {
    "NEW", "BODY", "TASK", "WAITING", "CLAIMED", "HOLDING", "STREAMING",
    "STORING", "PASS", "DISCARD", "ANSWER", "DONE"
};


void
ngx_http_idempotency_state_set(ngx_http_idempotency_ctx_t *ctx,
    ngx_http_idempotency_state_e state)
{
    ngx_log_t                     *log;
    ngx_http_idempotency_state_e   from = ctx->state;

    if (from == state) {
        return;
    }

    log = ctx->request ? ctx->request->connection->log : ngx_cycle->log;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, log, 0, "idempotency state %s -> %s",
                   ngx_http_idempotency_state_names[from],
                   ngx_http_idempotency_state_names[state]);

    if (state != NGX_HTTP_IDEM_DONE
        && !(ngx_http_idempotency_moves[from] & (1u << state)))
    {
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "idempotency: no move from state %s to %s",
                      ngx_http_idempotency_state_names[from],
                      ngx_http_idempotency_state_names[state]);
#if (IDEM_FAILPOINTS)
        ngx_abort();
#endif
    }

    ctx->state = state;
}


void
ngx_http_idempotency_state_resume(ngx_http_request_t *r)
{
    ngx_connection_t  *c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}
