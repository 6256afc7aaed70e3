
/*
 * ngx_http_idempotency.h — what the files of the idempotency module share.
 *
 * The module is one nginx module in several files:
 *
 *   ngx_http_idempotency_module.c   directives, configuration, variables,
 *                                   per-worker store, the precontent handler
 *   ngx_http_idempotency_filter.c   header and body filters that hold the
 *                                   upstream response until it is stored
 *   ngx_http_idempotency_task.c     thread-pool glue: begin/complete/release
 *                                   off the event loop, then resume
 *   ngx_http_idempotency_send.c     replays and gateway-made error answers
 *   ngx_http_idempotency_admin.c    the metrics and admin locations
 *   ngx_http_idempotency_health.c   the watch on the store's files and
 *                                   the idempotency_health location
 *
 * A request that takes part moves through these states (ctx->state):
 *
 *   NEW ──read body──> BODY ──fast lookup──> (replay: DONE)
 *                        │
 *                        └─begin() task──> CLAIMED ──proxy_pass──> HOLDING
 *                               │  ▲                                  │
 *                    in progress│  │timer                  last buffer│
 *                               ▼  │                                  ▼
 *                             WAITING                STORING ──> SENDING
 *
 * A streamed response (idempotency_stream) goes CLAIMED ──> STREAMING: its
 * headers and bytes reach the client as they come, and only the end of
 * the stream waits, in STORING, for the whole response to be stored.
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


typedef enum {
    NGX_HTTP_IDEM_NEW = 0,
    NGX_HTTP_IDEM_BODY,          /* body read, not decided yet */
    NGX_HTTP_IDEM_TASK,          /* a begin() task runs */
    NGX_HTTP_IDEM_WAITING,       /* a duplicate waits for the first */
    NGX_HTTP_IDEM_CLAIMED,       /* we own the key; proxying */
    NGX_HTTP_IDEM_HOLDING,       /* upstream response is being held */
    NGX_HTTP_IDEM_STREAMING,     /* upstream response flows on as it is
                                    recorded (idempotency_stream) */
    NGX_HTTP_IDEM_STORING,       /* complete()/release() task runs */
    NGX_HTTP_IDEM_PASS,          /* response flows on unchanged */
    NGX_HTTP_IDEM_DISCARD,       /* the rest of the upstream body is
                                    dropped: an answer replaced it */
    NGX_HTTP_IDEM_ANSWER,        /* answer from ctx->answer (replay/error) */
    NGX_HTTP_IDEM_DONE
} ngx_http_idempotency_state_e;


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
    ngx_array_t                 *scope;   /* ngx_http_idempotency_scope_value_t */
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
    ngx_queue_t                  claimed;      /* in the worker's list of
                                                  requests holding a claim */
    ngx_uint_t                   listed;
    ngx_http_idempotency_state_e state;
    ngx_http_idempotency_outcome_e outcome;
    ngx_uint_t                   api_log;

    u_char                       key[IDEM_KEY_MAX];
    size_t                       key_len;
    idem_hash_t                  scope;
    idem_hash_t                  fingerprint;
    ngx_uint_t                   fingerprinted;

    uint64_t                     owner;
    int64_t                      expires_ms;

    ngx_msec_t                   wait_deadline;
    ngx_msec_t                   wait_step;
    ngx_event_t                  wait_event;

    /* results to free with the request */
    idem_result_t                result;
    ngx_uint_t                   has_result;
    idem_errbody_t               errbody;

    ngx_http_idempotency_answer_t answer;

    ngx_http_idempotency_loc_conf_t *conf;   /* of the deciding location */

    /* the held upstream response */
    idem_response_t              stored;       /* what complete() stores */
    idem_str_t                   date;         /* its Date, in r->pool */
    uint32_t                     stored_flags; /* IDEM_REC_... to store */
    ngx_uint_t                   release;      /* release, not complete */
    ngx_uint_t                   released_by_status; /* its status is one
                                                  of release_statuses */
    u_char                      *body;         /* malloc'd */
    size_t                       body_len;
    size_t                       body_cap;
    ngx_uint_t                   too_large;
    ngx_uint_t                   streaming;    /* the response is streamed:
                                                  only its end is held */
    ngx_uint_t                   replace;      /* nginx's own error page */
    ngx_chain_t                 *pending;      /* unconsumed input */
    ngx_uint_t                   finished;     /* record is final */
    ngx_uint_t                   fallback;     /* storing the unknown-
                                                  outcome answer instead */
    ngx_int_t                    store_rc;

    /* metrics: when the key was claimed (ngx_http_idempotency_now_us),
       0 once its upstream time is observed; whether it counts in the
       in-progress gauge */
    uint64_t                     claimed_us;
    ngx_uint_t                   in_progress;
};


extern ngx_module_t  ngx_http_idempotency_module;


ngx_http_idempotency_ctx_t *ngx_http_idempotency_get_ctx(
    ngx_http_request_t *r);
int64_t ngx_http_idempotency_now_ms(void);

ngx_int_t ngx_http_idempotency_filter_init(ngx_conf_t *cf);

/* send ctx->answer as the response; returns the output filter's code */
ngx_int_t ngx_http_idempotency_send_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
/* send the headers in r->headers_out, then data as the whole body */
ngx_int_t ngx_http_idempotency_send_body(ngx_http_request_t *r,
    u_char *data, size_t len);
/* the stored form of a gateway-made error: Content-Type in ct */
void ngx_http_idempotency_errbody_response(const idem_errbody_t *eb,
    idem_header_t *ct, idem_response_t *resp);
/* the body of a gateway-made error, from ilcf's template or in its style
 * (or the given ones, off the request: a thread-pool job) */
int ngx_http_idempotency_errbody(ngx_uint_t style, idem_errtpl_t *tpl,
    idem_err_kind_t kind, const u_char *key, size_t key_len, int key_err,
    idem_errbody_t *out);
/* build a gateway-made error into ctx->answer */
ngx_int_t ngx_http_idempotency_error_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind, int key_err);
/* point the headers_out slot of a replayed header (Date, Location, ...)
 * at it, so later filters treat it as on the first answer */
void ngx_http_idempotency_bind_header(ngx_http_request_t *r,
    ngx_table_elt_t *h, uint32_t flags);
/* add Idempotency-Expires (and Idempotent-Replayed) to headers_out */
ngx_int_t ngx_http_idempotency_add_expires(ngx_http_request_t *r,
    int64_t expires_ms);

/* tasks */
ngx_int_t ngx_http_idempotency_post_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t fp_in_thread);
ngx_int_t ngx_http_idempotency_post_finish(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, const idem_response_t *resp,
    uint32_t flags, ngx_uint_t release);
void ngx_http_idempotency_post_detached_finish(
    ngx_http_idempotency_ctx_t *ctx, ngx_log_t *log);
void ngx_http_idempotency_prune(ngx_event_t *ev);
/* the timer that checks, once a second on the thread pool, that the
 * store's path still names the files this worker has open */
void ngx_http_idempotency_watch(ngx_event_t *ev);
/* the idempotency_health location: 200, or 503 saying why */
ngx_int_t ngx_http_idempotency_health_handler(ngx_http_request_t *r);
/* the shared record of which files this cycle's workers opened */
ngx_int_t ngx_http_idempotency_health_init(ngx_conf_t *cf);
/* a worker opened the store: compare its files with the other workers' */
void ngx_http_idempotency_store_opened(ngx_http_idempotency_main_conf_t *imcf,
    ngx_log_t *log);
/* whether the store must not take new keys: see _health.c */
#define ngx_http_idempotency_store_failed(imcf)                              \
    ((imcf)->store_lost || (imcf)->store_foreign)
/* at worker exit: settle the claims of requests still running and run
 * the settlements still queued, synchronously */
void ngx_http_idempotency_drain(ngx_cycle_t *cycle);
/* the worker's list of requests holding a claim */
void ngx_http_idempotency_list_claim(ngx_http_idempotency_ctx_t *ctx);
void ngx_http_idempotency_unlist_claim(ngx_http_idempotency_ctx_t *ctx);

/* the store of this worker, reopened when it failed; NULL if unavailable */
idem_store_t *ngx_http_idempotency_store(ngx_http_idempotency_main_conf_t *mcf,
    ngx_log_t *log);

/* the scope hash of r under ilcf's idempotency_scope */
ngx_int_t ngx_http_idempotency_scope_hash(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_hash_t *out);
/* method, path, query and Content-Type of r, and the fingerprint options
 * of ilcf with the values of its headers, in r->pool (the body is left
 * alone); NGX_ERROR when out of memory */
ngx_int_t ngx_http_idempotency_request_params(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_request_t *req);

/* whether any byte of the request was sent to an upstream */
ngx_uint_t ngx_http_idempotency_reached_upstream(ngx_http_request_t *r);

/* resume a request parked by a task or a timer */
void ngx_http_idempotency_resume(ngx_http_request_t *r);

/* the request-level answer after begin(): sets ctx->state */
void ngx_http_idempotency_apply_begin(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_int_t rc);

/* the held response is stored: send it on */
void ngx_http_idempotency_release_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
/* the held response was not stored: answer the unknown-outcome error in
 * its place, storing that first when store is set */
ngx_int_t ngx_http_idempotency_replace_held(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, ngx_uint_t store);

/*
 * Failpoints, compiled into test builds only (-DIDEM_FAILPOINTS=1): with
 * IDEMGATE_FAILPOINTS="point:action:keyprefix[,...]" in the environment
 * (and `env IDEMGATE_FAILPOINTS;` in nginx.conf), a request whose key starts
 * with keyprefix meets the action at the point. Points: after_claim (claim
 * durable, nothing forwarded), after_forward (upstream answered, nothing
 * stored), after_complete (stored, client not answered). Actions: crash
 * (SIGKILL to the whole process group: master and workers, as when a machine
 * dies) and worker (SIGKILL to this worker only).
 */
#if (IDEM_FAILPOINTS)
void ngx_http_idempotency_failpoint(const char *point,
    ngx_http_idempotency_ctx_t *ctx);
#define NGX_HTTP_IDEM_FAILPOINT(point, ctx)                                  \
    ngx_http_idempotency_failpoint(point, ctx)
#else
#define NGX_HTTP_IDEM_FAILPOINT(point, ctx)
#endif

/* metrics */
typedef enum {
    NGX_HTTP_IDEM_M_EXECUTED = 0,
    NGX_HTTP_IDEM_M_REPLAYED,
    NGX_HTTP_IDEM_M_MISMATCH,
    NGX_HTTP_IDEM_M_CONFLICT,
    NGX_HTTP_IDEM_M_INVALID,
    NGX_HTTP_IDEM_M_BYPASS,
    NGX_HTTP_IDEM_M_UNAVAILABLE,
    NGX_HTTP_IDEM_M_WAITED,
    NGX_HTTP_IDEM_M_STORE_ERRORS,
    NGX_HTTP_IDEM_M_UNKNOWN_OUTCOME,
    NGX_HTTP_IDEM_M_RELEASED,
    NGX_HTTP_IDEM_M_TOO_LARGE,
    NGX_HTTP_IDEM_M_PRUNED,
    NGX_HTTP_IDEM_M_LATE_COMPLETE,
    NGX_HTTP_IDEM_M_COUNT
} ngx_http_idempotency_metric_e;

/* latency histograms: what is timed */
typedef enum {
    NGX_HTTP_IDEM_H_CLAIM = 0,   /* begin() on the thread pool, from the
                                    request's view: queue, batch, commit */
    NGX_HTTP_IDEM_H_COMPLETE,    /* complete(), the same way */
    NGX_HTTP_IDEM_H_RELEASE,     /* release(), the same way */
    NGX_HTTP_IDEM_H_REPLAY_READ, /* the read a replay is served from */
    NGX_HTTP_IDEM_H_UPSTREAM,    /* claim to whole upstream response */
    NGX_HTTP_IDEM_H_COUNT
} ngx_http_idempotency_hist_e;

void ngx_http_idempotency_count(ngx_uint_t metric, ngx_uint_t n);
/* a monotonic clock in microseconds, for the histograms */
uint64_t ngx_http_idempotency_now_us(void);
/* one observation of us microseconds into histogram h */
void ngx_http_idempotency_observe(ngx_uint_t h, uint64_t us);
/* the key of ctx is claimed: it counts in the in-progress gauge, and its
   upstream time starts */
void ngx_http_idempotency_claim_started(ngx_http_idempotency_ctx_t *ctx);
/* its upstream response is whole (or the upstream failed) */
void ngx_http_idempotency_upstream_done(ngx_http_idempotency_ctx_t *ctx);
/* the claim is settled, or the request is gone: out of the gauge (once) */
void ngx_http_idempotency_claim_ended(ngx_http_idempotency_ctx_t *ctx);
/* a worker takes its slot of the in-progress gauge */
void ngx_http_idempotency_metrics_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_idempotency_metrics_init(ngx_conf_t *cf);
ngx_int_t ngx_http_idempotency_metrics_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_idempotency_admin_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_H_INCLUDED_ */
