
/*
 * ngx_http_idempotency.h — the types the files of the idempotency module
 * share: its configuration, a request's context and its states. Each file
 * declares its own functions in a header of the same name.
 *
 * The module is one nginx module in these files, each with one job; a file
 * calls only into the files below it (scripts/check-layout.py checks that
 * their includes have no circle):
 *
 *   _module.c     directives, configuration (create, merge, check), what
 *                 is set up at configuration and in each worker
 *   _handler.c    the precontent handler: replay, error, wait, or claim
 *                 (the diagram of a request's states is atop it)
 *   _filter.c     header and body filters: hold or record the response
 *                 of a claimed key until it is stored, then let it go
 *   _variables.c  $idempotency_key, _outcome, _api_log, _log_entry
 *   _admin.c      the idempotency_admin location (GET/DELETE a key)
 *   _ctx.c        a request's context: made, found, freed (settling a
 *                 claim left behind), and its claim
 *   _task.c       the store's calls on the thread pool, batched; the
 *                 poster of a job names its completion
 *   _request.c    the key, scope and fingerprint of a request
 *   _metrics.c    counters, histograms, gauges (the list of them:
 *                 _metrics_list.h) and the idempotency_metrics location
 *   _store.c      the worker's store: open, reopen, watch, the
 *                 idempotency_health location, the store's clock
 *   _send.c       answers the module makes itself: replays and errors
 *   _state.c      the one writer of a request's state, and its resume
 *   _failpoint.c  crash failpoints of test builds
 *
 *   module ─> handler, filter, variables, admin
 *                 └─> ctx ─> task ─> request ─> metrics ─> store ─> send
 *                                                                   └─> state
 *
 * The idempotency rules themselves live in libidem (lib/idem.h).
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "idem.h"


/* our bit of r->buffered: the stock filters use 0x01..0x08 for their own
 * purposes while their data is pending; ours is only set while the whole
 * response is held, when no other filter has seen it yet */
#define NGX_HTTP_IDEMPOTENCY_BUFFERED   0x08


/*
 * The states of a request that takes part (ctx->state). Each says who
 * moves the request on from there and how nginx holds it meanwhile; the
 * diagram and the table of allowed moves are in _handler.c and _ctx.c,
 * and ngx_http_idempotency_state_set() is the only writer.
 */
typedef enum {
    NGX_HTTP_IDEM_NEW = 0,       /* ctx made by the handler, the key found;
                                    the body is being read (nginx's body
                                    reader holds r) */
    NGX_HTTP_IDEM_BODY,          /* body read, nothing decided: the
                                    handler runs again (set by the body
                                    handler, or by the wait timer to ask
                                    the store once more) */
    NGX_HTTP_IDEM_TASK,          /* a begin() (and maybe a fingerprint)
                                    task runs: r is blocked (r->main->
                                    blocked, r->aio) until its completion */
    NGX_HTTP_IDEM_WAITING,       /* a duplicate waits for the first: r is
                                    blocked on ctx->wait_event, a timer */
    NGX_HTTP_IDEM_CLAIMED,       /* the key is ours: nginx proxies r; the
                                    header filter moves it on */
    NGX_HTTP_IDEM_HOLDING,       /* the upstream response is being held
                                    (our r->buffered bit), not sent */
    NGX_HTTP_IDEM_STREAMING,     /* the upstream response flows on as it is
                                    recorded (idempotency_stream) */
    NGX_HTTP_IDEM_STORING,       /* complete()/release() task runs: r is
                                    blocked, its output held */
    NGX_HTTP_IDEM_PASS,          /* settled: the response flows on */
    NGX_HTTP_IDEM_DISCARD,       /* settled: the rest of the upstream body
                                    is dropped, an answer replaced it */
    NGX_HTTP_IDEM_ANSWER,        /* the module answers from ctx->answer (a
                                    replay or an error), next time the
                                    handler runs */
    NGX_HTTP_IDEM_DONE,          /* nothing more to do for the module */
    NGX_HTTP_IDEM_NSTATES
} ngx_http_idempotency_state_e;


/*
 * What the client gets once a claim is settled (ctx->keep), decided by the
 * filters before the settlement is posted and read when it is done. It
 * outlives HOLDING and STREAMING, so it is not one of the states above.
 */
typedef enum {
    NGX_HTTP_IDEM_KEEP_RESPONSE = 0, /* the upstream's response: stored,
                                        or released by its status */
    NGX_HTTP_IDEM_KEEP_TOO_LARGE,    /* the "too large" error is stored;
                                        the response still goes out */
    NGX_HTTP_IDEM_KEEP_PAGE,         /* nginx's own error page: the gateway's
                                        answer in ctx->stored replaces it */
    NGX_HTTP_IDEM_KEEP_UNKNOWN       /* the unknown-outcome answer replaces
                                        what the upstream sent */
} ngx_http_idempotency_keep_e;


/* Where the claim of a request's key is (ctx->claim). */
typedef enum {
    NGX_HTTP_IDEM_CLAIM_NONE = 0,    /* no claim made */
    NGX_HTTP_IDEM_CLAIM_HELD,        /* ours and not settled: in the
                                        worker's list of claims */
    NGX_HTTP_IDEM_CLAIM_SETTLED      /* complete() or release() done, or
                                        posted for a request that is gone */
} ngx_http_idempotency_claim_e;


typedef enum {
    NGX_HTTP_IDEM_OUT_NONE = 0,
    NGX_HTTP_IDEM_OUT_BYPASS,
    NGX_HTTP_IDEM_OUT_EXECUTED,
    NGX_HTTP_IDEM_OUT_REPLAYED,
    NGX_HTTP_IDEM_OUT_MISMATCH,
    NGX_HTTP_IDEM_OUT_CONFLICT,
    NGX_HTTP_IDEM_OUT_INVALID,
    NGX_HTTP_IDEM_OUT_UNAVAILABLE
} ngx_http_idempotency_outcome_e;


/* which responses flow on while they are recorded (idempotency_stream) */
#define NGX_HTTP_IDEM_STREAM_AUTO   0  /* text/event-stream ones */
#define NGX_HTTP_IDEM_STREAM_PASS   1  /* every one */
#define NGX_HTTP_IDEM_STREAM_HOLD   2  /* none: all are held */


typedef struct {
    ngx_str_t                    store_url;
    ngx_str_t                    thread_pool_name;
    ngx_thread_pool_t           *thread_pool;
    ngx_msec_t                   prune_interval;
    ngx_uint_t                   prune_budget;
    ngx_flag_t                   fast_request_id;

    /* per worker, set in init_process */
    idem_store_t                *store;
    ngx_msec_t                   store_retry_at;
    int                          store_open_rc; /* the last failed open */
    ngx_event_t                  prune_event;
    ngx_uint_t                   prune_running;
    ngx_event_t                  watch_event;
    ngx_uint_t                   watch_running;
    ngx_uint_t                   store_lost;   /* the store's path no longer
                                                  names its open files */
    ngx_uint_t                   store_foreign; /* this worker opened other
                                                   files than the first
                                                   worker of this cycle */
    char                         store_why[512];     /* why lost */
    char                         foreign_why[512];   /* why foreign */
    ngx_uint_t                   enabled;      /* some location uses us */
    ngx_int_t                    request_id_index;
} ngx_http_idempotency_main_conf_t;


/*
 * One value of idempotency_scope. A value that is one variable alone
 * ("$http_authorization") is read through its index, so that an absent
 * header (not found) and an empty one are different scope inputs (SPEC §2);
 * any other value is a complex value, never absent.
 */
typedef struct {
    ngx_http_complex_value_t     value;
    ngx_int_t                    index;        /* the variable, or NGX_ERROR */
} ngx_http_idempotency_scope_value_t;


typedef struct {
    ngx_flag_t                   enable;
    ngx_uint_t                   methods;
    ngx_array_t                 *scope;    /* of the
                                      ngx_http_idempotency_scope_value_t */
    ngx_flag_t                   scope_none;
    ngx_msec_t                   ttl;
    ngx_msec_t                   wait;
    ngx_msec_t                   lease;
    ngx_uint_t                   on_unknown;
    ngx_uint_t                   error_style;
    idem_errtpl_t               *error_template; /* idempotency_error_template,
                                                    or NULL: the style */
    ngx_flag_t                   require_key;
    ngx_uint_t                   stream;       /* NGX_HTTP_IDEM_STREAM_... */
    size_t                       max_response_size;
    ngx_array_t                 *no_store_headers;  /* ngx_str_t, lowcase */
    ngx_array_t                 *release_statuses;  /* ngx_uint_t */
    ngx_array_t                 *key_headers;  /* ngx_str_t, lowcase: names
                                                  that carry the key besides
                                                  Idempotency-Key */
    ngx_array_t                 *fp_ignore;    /* idem_str_t: what the
                                                  fingerprint leaves out */
    ngx_array_t                 *fp_headers;   /* ngx_str_t, lowcase: the
                                                  headers it brings in */
    ngx_flag_t                   metrics;
    ngx_flag_t                   admin;
    ngx_flag_t                   health;
} ngx_http_idempotency_loc_conf_t;


/* a response the module answers itself: a replay or an error */
typedef struct {
    ngx_int_t                    status;
    idem_response_t              resp;         /* borrowed */
    ngx_str_t                    content_type; /* for gateway-made errors */
    ngx_uint_t                   replayed;
    int64_t                      expires_ms;   /* 0: no Expires header */
    ngx_uint_t                   retry_after;  /* seconds, 0: none */
    ngx_uint_t                   retry_after_ms; /* the same, exact; 0: none */
    uint32_t                     flags;        /* IDEM_REC_... stored */
} ngx_http_idempotency_answer_t;


typedef struct ngx_http_idempotency_ctx_s  ngx_http_idempotency_ctx_t;

struct ngx_http_idempotency_ctx_s {
    ngx_http_request_t          *request;
    ngx_http_idempotency_state_e state;        /* set_state() writes it */
    ngx_http_idempotency_claim_e claim;        /* set_claim() writes it */
    ngx_queue_t                  claimed;      /* in the worker's list of
                                                  claims while HELD */
    ngx_http_idempotency_outcome_e outcome;
    ngx_uint_t                   api_log;

    u_char                       key[IDEM_KEY_MAX];
    size_t                       key_len;
    ngx_str_t                    key_header;   /* the header of a bad key
                                                  (its rule names it) */
    idem_hash_t                  scope;
    idem_hash_t                  fingerprint;
    ngx_uint_t                   fingerprinted; /* a cache: fingerprint is
                                                   computed (on the event
                                                   loop or a task) */

    uint64_t                     owner;
    int64_t                      expires_ms;

    ngx_msec_t                   wait_deadline;
    ngx_msec_t                   wait_step;
    ngx_event_t                  wait_event;
    ngx_queue_t                  waiting;      /* in the worker's waiters
                                                  while wait_listed */
    ngx_uint_t                   wait_listed;
    ngx_uint_t                   wait_busy;    /* the last read found the
                                                  record not durable yet */

    /* results to free with the request; has_result says result owns
       memory (not a state: a replay and a wait both hold one) */
    idem_result_t                result;
    ngx_uint_t                   has_result;
    idem_errbody_t               errbody;

    ngx_http_idempotency_answer_t answer;

    ngx_http_idempotency_loc_conf_t *conf;   /* of the deciding location */

    /* the held upstream response */
    ngx_http_idempotency_keep_e  keep;         /* what the client gets */
    ngx_uint_t                   release;      /* the settlement releases
                                                  the key (nothing stored)
                                                  instead of completing */
    ngx_uint_t                   streaming;    /* the response is streamed:
                                                  only its end is held (a
                                                  mode chosen once by the
                                                  header filter) */
    idem_response_t              stored;       /* what complete() stores */
    idem_str_t                   date;         /* its Date, in r->pool */
    uint32_t                     stored_flags; /* IDEM_REC_... to store */
    u_char                      *body;         /* malloc'd */
    size_t                       body_len;
    size_t                       body_cap;
    ngx_chain_t                 *pending;      /* unconsumed input */
    ngx_int_t                    store_rc;

    /* metrics: when the key was claimed (ngx_http_idempotency_metrics_now_us),
       0 once its upstream time is observed; whether it counts in the
       in-progress gauge */
    uint64_t                     claimed_us;
    ngx_uint_t                   in_progress;
};


extern ngx_module_t  ngx_http_idempotency_module;


#endif /* _NGX_HTTP_IDEMPOTENCY_H_INCLUDED_ */
