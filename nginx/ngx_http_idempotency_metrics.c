
/*
 * ngx_http_idempotency_metrics.c — counters, latency histograms and gauges
 * (their list: ngx_http_idempotency_metrics_list.h), shared by all
 * workers in a small shared memory zone, and the Prometheus page of
 * idempotency_metrics.
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_metrics.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_store.h"


/*
 * Everything /metrics shows that is not read from the store lives in one
 * shared memory zone, so that a scrape sees the sums over all workers:
 *
 *   counters      one atomic each, added to on the event loop
 *   histograms    per histogram an atomic per bucket (not cumulative:
 *                 one add per observation) and the sum of microseconds;
 *                 a scrape adds the buckets up, and their total is _count
 *   in progress   one slot per worker process, taken by its pid when the
 *                 worker starts: a worker that died leaves its slot to the
 *                 next one to start (which zeroes it), and old workers
 *                 that still finish requests after a reload keep theirs
 *
 * Times are microseconds of a monotonic clock, and so are the histograms'
 * bounds and sums (idemgate_..._microseconds): every sample is an integer.
 */


#define NGX_HTTP_IDEM_BUCKETS  15      /* the last one is +Inf */
#define NGX_HTTP_IDEM_SLOTS    NGX_MAX_PROCESSES


typedef struct {
    ngx_atomic_t                 pid;
    ngx_atomic_t                 n;        /* signed, as ngx_atomic_int_t */
} ngx_http_idempotency_slot_t;


typedef struct {
    ngx_atomic_t                 counters[NGX_HTTP_IDEM_M_COUNT];
    ngx_atomic_t                 buckets[NGX_HTTP_IDEM_H_COUNT]
                                        [NGX_HTTP_IDEM_BUCKETS];
    ngx_atomic_t                 sum_us[NGX_HTTP_IDEM_H_COUNT];
    ngx_http_idempotency_slot_t  slots[NGX_HTTP_IDEM_SLOTS];
} ngx_http_idempotency_shm_t;


static ngx_shm_zone_t               *ngx_http_idempotency_metrics_zone;
static ngx_http_idempotency_slot_t  *ngx_http_idempotency_slot;


static ngx_int_t ngx_http_idempotency_metrics_zone_init(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_http_idempotency_shm_t *ngx_http_idempotency_shm(void);
static u_char *ngx_http_idempotency_put_gauge(u_char *p, u_char *last,
    ngx_uint_t g, int64_t value);
static u_char *ngx_http_idempotency_put_counter(u_char *p, u_char *last,
    ngx_http_idempotency_shm_t *shm, ngx_uint_t i);
static u_char *ngx_http_idempotency_store_gauges(ngx_http_request_t *r,
    u_char *p, u_char *last);
static u_char *ngx_http_idempotency_put_hist(u_char *p, u_char *last,
    ngx_http_idempotency_shm_t *shm, ngx_uint_t h);


/* upper bounds in microseconds: a store op takes from 0.1 ms (a read, a
   batch on a quiet worker) to seconds (fsync on a busy disk); an upstream
   from 1 ms to the upstream timeout */
static const uint64_t  ngx_http_idempotency_store_bounds[] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    500000, 1000000, 2500000
};

static const uint64_t  ngx_http_idempotency_upstream_bounds[] = {
    1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,
    2500000, 5000000, 10000000, 30000000, 60000000
};


typedef struct {
    const char                  *name;
    const char                  *help;
} ngx_http_idempotency_metric_t;


#define NGX_HTTP_IDEM_METRIC_(id, name, help)  { name, help },

static const ngx_http_idempotency_metric_t
    ngx_http_idempotency_counters[NGX_HTTP_IDEM_M_COUNT] = {
    NGX_HTTP_IDEM_COUNTERS(NGX_HTTP_IDEM_METRIC_)
};

static const ngx_http_idempotency_metric_t
    ngx_http_idempotency_gauges[NGX_HTTP_IDEM_G_COUNT] = {
    NGX_HTTP_IDEM_GAUGES(NGX_HTTP_IDEM_METRIC_)
};

#undef NGX_HTTP_IDEM_METRIC_


static const struct {
    const char      *name;
    const char      *op;               /* the label, or NULL: none */
    const uint64_t  *bounds;
    const char      *help;
} ngx_http_idempotency_hists[NGX_HTTP_IDEM_H_COUNT] = {
#define NGX_HTTP_IDEM_HIST_(id, name, op, bounds, help)                      \
    { name, op, ngx_http_idempotency_##bounds##_bounds, help },
    NGX_HTTP_IDEM_HISTOGRAMS(NGX_HTTP_IDEM_HIST_)
#undef NGX_HTTP_IDEM_HIST_
};


static ngx_int_t
ngx_http_idempotency_metrics_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    shm_zone->data = ngx_slab_calloc(shpool,
                                     sizeof(ngx_http_idempotency_shm_t));
    if (shm_zone->data == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_metrics_init(ngx_conf_t *cf)
{
    ngx_str_t  name = ngx_string("idempotency_metrics");

    ngx_http_idempotency_metrics_zone = ngx_shared_memory_add(cf, &name,
        8 * ngx_pagesize + sizeof(ngx_http_idempotency_shm_t),
        &ngx_http_idempotency_module);
    if (ngx_http_idempotency_metrics_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_metrics_zone->init =
        ngx_http_idempotency_metrics_zone_init;

    return NGX_OK;
}


static ngx_http_idempotency_shm_t *
ngx_http_idempotency_shm(void)
{
    return ngx_http_idempotency_metrics_zone
           ? ngx_http_idempotency_metrics_zone->data : NULL;
}


void
ngx_http_idempotency_metrics_count(ngx_uint_t metric, ngx_uint_t n)
{
    ngx_http_idempotency_shm_t  *shm = ngx_http_idempotency_shm();

    if (shm == NULL || metric >= NGX_HTTP_IDEM_M_COUNT) {
        return;
    }

    (void) ngx_atomic_fetch_add(&shm->counters[metric], n);
}


uint64_t
ngx_http_idempotency_metrics_now_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


void
ngx_http_idempotency_metrics_observe(ngx_uint_t h, uint64_t us)
{
    ngx_uint_t                   b;
    const uint64_t              *bounds;
    ngx_http_idempotency_shm_t  *shm = ngx_http_idempotency_shm();

    if (shm == NULL || h >= NGX_HTTP_IDEM_H_COUNT) {
        return;
    }

    bounds = ngx_http_idempotency_hists[h].bounds;

    for (b = 0; b < NGX_HTTP_IDEM_BUCKETS - 1 && us > bounds[b]; b++) {
        /* void */
    }

    (void) ngx_atomic_fetch_add(&shm->buckets[h][b], 1);
    (void) ngx_atomic_fetch_add(&shm->sum_us[h], (ngx_atomic_int_t) us);
}


/* Takes the first slot whose worker is gone (or that was never used): a
 * pid that kill() finds, or may not signal, is alive. */

void
ngx_http_idempotency_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i;
    ngx_atomic_uint_t            old;
    ngx_http_idempotency_shm_t  *shm = ngx_http_idempotency_shm();

    if (shm == NULL) {
        return;
    }

    for (i = 0; i < NGX_HTTP_IDEM_SLOTS; i++) {
        old = shm->slots[i].pid;

        if (old != 0
            && (kill((ngx_pid_t) old, 0) == 0 || ngx_errno != NGX_ESRCH))
        {
            continue;
        }

        if (ngx_atomic_cmp_set(&shm->slots[i].pid, old,
                               (ngx_atomic_uint_t) ngx_pid))
        {
            shm->slots[i].n = 0;
            ngx_http_idempotency_slot = &shm->slots[i];
            return;
        }
    }

    ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                  "idempotency metrics: no free slot for this worker; "
                  "idemgate_keys_in_progress leaves it out");
}


void
ngx_http_idempotency_metrics_claim_started(ngx_http_idempotency_ctx_t *ctx)
{
    ctx->claimed_us = ngx_http_idempotency_metrics_now_us();

    if (ngx_http_idempotency_slot && !ctx->in_progress) {
        ctx->in_progress = 1;
        (void) ngx_atomic_fetch_add(&ngx_http_idempotency_slot->n, 1);
    }
}


void
ngx_http_idempotency_metrics_upstream_done(ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx->claimed_us != 0) {
        ngx_http_idempotency_metrics_observe(NGX_HTTP_IDEM_H_UPSTREAM,
                                     ngx_http_idempotency_metrics_now_us()
                                     - ctx->claimed_us);
        ctx->claimed_us = 0;
    }
}


void
ngx_http_idempotency_metrics_claim_ended(ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx->in_progress) {
        ctx->in_progress = 0;
        (void) ngx_atomic_fetch_add(&ngx_http_idempotency_slot->n,
                                    (ngx_atomic_int_t) -1);
    }
}


/* One gauge in the text format. */

static u_char *
ngx_http_idempotency_put_gauge(u_char *p, u_char *last, ngx_uint_t g,
    int64_t value)
{
    const char  *name = ngx_http_idempotency_gauges[g].name;

    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s gauge\n%s %L\n",
                        name, ngx_http_idempotency_gauges[g].help, name,
                        name, value);
}


/* One counter in the text format, with its family's HELP and TYPE before
 * the family's first member. */

static u_char *
ngx_http_idempotency_put_counter(u_char *p, u_char *last,
    ngx_http_idempotency_shm_t *shm, ngx_uint_t i)
{
    size_t       n;
    const char  *name, *brace;

    name = ngx_http_idempotency_counters[i].name;

    if (ngx_http_idempotency_counters[i].help) {
        brace = strchr(name, '{');
        n = brace ? (size_t) (brace - name) : ngx_strlen(name);

        p = ngx_slprintf(p, last, "# HELP %*s %s\n# TYPE %*s counter\n",
                         n, name, ngx_http_idempotency_counters[i].help,
                         n, name);
    }

    return ngx_slprintf(p, last, "%s %uA\n", name,
                        shm ? shm->counters[i] : 0);
}


/*
 * The gauges of the store as this worker sees it: how full it is (read on
 * the event loop like a replay: LMDB's counters, one read transaction,
 * once per scrape) and whether its files are still its path's.
 */

static u_char *
ngx_http_idempotency_store_gauges(ngx_http_request_t *r, u_char *p,
    u_char *last)
{
    idem_store_t                      *store;
    idem_store_usage_t                 u;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    store = ngx_http_idempotency_store(imcf, r->connection->log);

    p = ngx_http_idempotency_put_gauge(p, last, NGX_HTTP_IDEM_G_STORE_HEALTHY,
                                       store != NULL
                                       && !ngx_http_idempotency_store_failed(
                                              imcf));

    /* a networked store's usage would be a round trip: not on the loop */
    if (store == NULL
        || !(idem_store_caps(store) & IDEM_STORE_CAP_INLINE_READ)
        || idem_store_usage(store, &u) != 0)
    {
        return p;
    }

    p = ngx_http_idempotency_put_gauge(p, last, NGX_HTTP_IDEM_G_STORE_RECORDS,
                                       (int64_t) u.records);
    p = ngx_http_idempotency_put_gauge(p, last,
                                       NGX_HTTP_IDEM_G_STORE_BYTES_USED,
                                       (int64_t) u.bytes_used);
    p = ngx_http_idempotency_put_gauge(p, last,
                                       NGX_HTTP_IDEM_G_STORE_BYTES_LIMIT,
                                       (int64_t) u.bytes_limit);

    return ngx_http_idempotency_put_gauge(p, last,
                                    NGX_HTTP_IDEM_G_STORE_CLAIM_BYTES_LIMIT,
                                    (int64_t) u.bytes_claim_limit);
}


/* One histogram in the text format: cumulative buckets up to +Inf, then
 * _sum and _count, from one read of each bucket so that they agree. */

static u_char *
ngx_http_idempotency_put_hist(u_char *p, u_char *last,
    ngx_http_idempotency_shm_t *shm, ngx_uint_t h)
{
    u_char           label[64];
    uint64_t         total;
    ngx_uint_t       b;
    const char      *name = ngx_http_idempotency_hists[h].name;
    const uint64_t  *bounds;

    if (ngx_http_idempotency_hists[h].help) {
        p = ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s histogram\n",
                         name, ngx_http_idempotency_hists[h].help, name);
    }

    bounds = ngx_http_idempotency_hists[h].bounds;

    if (ngx_http_idempotency_hists[h].op) {
        *ngx_snprintf(label, sizeof(label) - 1, "op=\"%s\",",
                      ngx_http_idempotency_hists[h].op) = '\0';
    } else {
        label[0] = '\0';
    }

    total = 0;

    for (b = 0; b < NGX_HTTP_IDEM_BUCKETS; b++) {
        total += shm ? shm->buckets[h][b] : 0;

        if (b < NGX_HTTP_IDEM_BUCKETS - 1) {
            p = ngx_slprintf(p, last, "%s_bucket{%sle=\"%uL\"} %uL\n", name,
                             label, bounds[b], total);

        } else {
            p = ngx_slprintf(p, last, "%s_bucket{%sle=\"+Inf\"} %uL\n", name,
                             label, total);
        }
    }

    /* the label without its trailing comma */
    if (label[0]) {
        label[ngx_strlen(label) - 1] = '\0';
    }

    return ngx_slprintf(p, last, "%s_sum%s%s%s %uA\n%s_count%s%s%s %uL\n",
                        name, label[0] ? "{" : "", label, label[0] ? "}" : "",
                        shm ? shm->sum_us[h] : 0,
                        name, label[0] ? "{" : "", label, label[0] ? "}" : "",
                        total);
}


#define NGX_HTTP_IDEMPOTENCY_METRICS_MAX  32768


ngx_int_t
ngx_http_idempotency_metrics_handler(ngx_http_request_t *r)
{
    u_char                      *p, *start, *last;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_atomic_int_t             in_progress;
    ngx_http_idempotency_shm_t  *shm;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    start = ngx_pnalloc(r->pool, NGX_HTTP_IDEMPOTENCY_METRICS_MAX);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = start + NGX_HTTP_IDEMPOTENCY_METRICS_MAX;
    shm = ngx_http_idempotency_shm();

    p = start;

    for (i = 0; i < NGX_HTTP_IDEM_M_COUNT; i++) {
        p = ngx_http_idempotency_put_counter(p, last, shm, i);
    }

    in_progress = 0;

    for (i = 0; shm && i < NGX_HTTP_IDEM_SLOTS; i++) {
        if (shm->slots[i].pid != 0) {
            in_progress += (ngx_atomic_int_t) shm->slots[i].n;
        }
    }

    p = ngx_http_idempotency_put_gauge(p, last,
                                       NGX_HTTP_IDEM_G_KEYS_IN_PROGRESS,
                                       (int64_t) ngx_max(in_progress, 0));

    for (i = 0; i < NGX_HTTP_IDEM_H_COUNT; i++) {
        p = ngx_http_idempotency_put_hist(p, last, shm, i);
    }

    p = ngx_http_idempotency_store_gauges(r, p, last);

    return ngx_http_idempotency_send_text(r, NGX_HTTP_OK,
                                          "text/plain; version=0.0.4",
                                          start, p - start);
}
