
/*
 * ngx_http_idempotency_admin.c — counters, latency histograms and the
 * in-progress gauge shared by all workers (a small shared memory zone),
 * the Prometheus page of idempotency_metrics, and key
 * inspection of idempotency_admin:
 *
 *   GET    .../keys/KEY   the record of KEY, in the scope computed from
 *                         this request like the proxied location does
 *                         (by default its Authorization header), with
 *                         what this location's fingerprint leaves out and
 *                         brings in (idempotency_fingerprint_ignore and
 *                         _header: the record keeps only the digest)
 *   DELETE .../keys/KEY   removes it (on the thread pool)
 */

#include "ngx_http_idempotency.h"


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


static const char  *ngx_http_idempotency_metric_names[] = {
    "idemgate_requests_total{outcome=\"executed\"}",
    "idemgate_requests_total{outcome=\"replayed\"}",
    "idemgate_requests_total{outcome=\"mismatch\"}",
    "idemgate_requests_total{outcome=\"conflict\"}",
    "idemgate_requests_total{outcome=\"invalid\"}",
    "idemgate_requests_total{outcome=\"bypass\"}",
    "idemgate_requests_total{outcome=\"unavailable\"}",
    "idemgate_waits_total",
    "idemgate_store_errors_total",
    "idemgate_unknown_outcomes_total",
    "idemgate_released_total",
    "idemgate_too_large_total",
    "idemgate_pruned_total",
    "idemgate_late_completes_total"
};


/* the # HELP of each counter family, at the index of its first name */
static const char  *ngx_http_idempotency_metric_help[] = {
    "Requests by what the gateway did with them: executed (forwarded "
    "under a new key), replayed, mismatch (a key reused with other "
    "parameters), conflict (still in progress after the wait), invalid "
    "(a bad key), bypass (no key or another method), unavailable (the "
    "store failed).",
    NULL, NULL, NULL, NULL, NULL, NULL,
    "Requests that waited for the first request of their key.",
    "Store calls that failed.",
    "Keys settled as an unknown outcome (sent upstream, no whole answer).",
    "Keys freed instead of stored (nothing ran, or --release-status).",
    "Responses too large to store; the key keeps an error instead.",
    "Expired records removed.",
    "Results that came after their claim's lease had been settled."
};


static const struct {
    const char  *name;
    const char  *op;                   /* the label, or NULL: none */
    const char  *help;
} ngx_http_idempotency_hists[] = {
    { "idemgate_store_op_duration_microseconds", "claim",
      "Time of store calls as the request sees them (queue, batch and "
      "durable commit on the thread pool; replay_read: the read a replay "
      "is served from), in microseconds." },
    { "idemgate_store_op_duration_microseconds", "complete", NULL },
    { "idemgate_store_op_duration_microseconds", "release", NULL },
    { "idemgate_store_op_duration_microseconds", "replay_read", NULL },
    { "idemgate_upstream_duration_microseconds", NULL,
      "Time from a key's claim until the upstream's whole response is "
      "held (or the upstream failed), for requests with a key, in "
      "microseconds." }
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
ngx_http_idempotency_count(ngx_uint_t metric, ngx_uint_t n)
{
    ngx_http_idempotency_shm_t  *shm = ngx_http_idempotency_shm();

    if (shm == NULL || metric >= NGX_HTTP_IDEM_M_COUNT) {
        return;
    }

    (void) ngx_atomic_fetch_add(&shm->counters[metric], n);
}


uint64_t
ngx_http_idempotency_now_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


void
ngx_http_idempotency_observe(ngx_uint_t h, uint64_t us)
{
    ngx_uint_t                   b;
    const uint64_t              *bounds;
    ngx_http_idempotency_shm_t  *shm = ngx_http_idempotency_shm();

    if (shm == NULL || h >= NGX_HTTP_IDEM_H_COUNT) {
        return;
    }

    bounds = h == NGX_HTTP_IDEM_H_UPSTREAM
             ? ngx_http_idempotency_upstream_bounds
             : ngx_http_idempotency_store_bounds;

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
ngx_http_idempotency_claim_started(ngx_http_idempotency_ctx_t *ctx)
{
    ctx->claimed_us = ngx_http_idempotency_now_us();

    if (ngx_http_idempotency_slot && !ctx->in_progress) {
        ctx->in_progress = 1;
        (void) ngx_atomic_fetch_add(&ngx_http_idempotency_slot->n, 1);
    }
}


void
ngx_http_idempotency_upstream_done(ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx->claimed_us != 0) {
        ngx_http_idempotency_observe(NGX_HTTP_IDEM_H_UPSTREAM,
                                     ngx_http_idempotency_now_us()
                                     - ctx->claimed_us);
        ctx->claimed_us = 0;
    }
}


void
ngx_http_idempotency_claim_ended(ngx_http_idempotency_ctx_t *ctx)
{
    if (ctx->in_progress) {
        ctx->in_progress = 0;
        (void) ngx_atomic_fetch_add(&ngx_http_idempotency_slot->n,
                                    (ngx_atomic_int_t) -1);
    }
}


static ngx_int_t
ngx_http_idempotency_send_text(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *data, size_t len)
{
    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    return ngx_http_idempotency_send_body(r, data, len);
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

    p = ngx_slprintf(p, last,
                     "# HELP idemgate_store_healthy 1 while the store can "
                     "be used and its path still names its files.\n"
                     "# TYPE idemgate_store_healthy gauge\n"
                     "idemgate_store_healthy %d\n",
                     store != NULL
                     && !ngx_http_idempotency_store_failed(imcf));

    /* a networked store's usage would be a round trip: not on the loop */
    if (store == NULL
        || !(idem_store_caps(store) & IDEM_STORE_CAP_INLINE_READ)
        || idem_store_usage(store, &u) != 0)
    {
        return p;
    }

    return ngx_slprintf(p, last,
                        "# HELP idemgate_store_records Records in the "
                        "store.\n"
                        "# TYPE idemgate_store_records gauge\n"
                        "idemgate_store_records %uL\n"
                        "# HELP idemgate_store_bytes_used Bytes of the "
                        "store's map in use.\n"
                        "# TYPE idemgate_store_bytes_used gauge\n"
                        "idemgate_store_bytes_used %uL\n"
                        "# HELP idemgate_store_bytes_limit The size of the "
                        "store's map.\n"
                        "# TYPE idemgate_store_bytes_limit gauge\n"
                        "idemgate_store_bytes_limit %uL\n"
                        "# HELP idemgate_store_claim_bytes_limit Bytes in "
                        "use from which new keys get 503.\n"
                        "# TYPE idemgate_store_claim_bytes_limit gauge\n"
                        "idemgate_store_claim_bytes_limit %uL\n",
                        u.records, u.bytes_used, u.bytes_limit,
                        u.bytes_claim_limit);
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

    bounds = h == NGX_HTTP_IDEM_H_UPSTREAM
             ? ngx_http_idempotency_upstream_bounds
             : ngx_http_idempotency_store_bounds;

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
    size_t                       n;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    const char                  *name, *brace;
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
        if (ngx_http_idempotency_metric_help[i]) {
            name = ngx_http_idempotency_metric_names[i];
            brace = strchr(name, '{');
            n = brace ? (size_t) (brace - name) : ngx_strlen(name);

            p = ngx_slprintf(p, last, "# HELP %*s %s\n# TYPE %*s counter\n",
                             n, name, ngx_http_idempotency_metric_help[i],
                             n, name);
        }

        p = ngx_slprintf(p, last, "%s %uA\n",
                         ngx_http_idempotency_metric_names[i],
                         shm ? shm->counters[i] : 0);
    }

    in_progress = 0;

    for (i = 0; shm && i < NGX_HTTP_IDEM_SLOTS; i++) {
        if (shm->slots[i].pid != 0) {
            in_progress += (ngx_atomic_int_t) shm->slots[i].n;
        }
    }

    p = ngx_slprintf(p, last,
                     "# HELP idemgate_keys_in_progress Requests with a key "
                     "claimed by this gateway and not settled yet (being "
                     "forwarded or stored).\n"
                     "# TYPE idemgate_keys_in_progress gauge\n"
                     "idemgate_keys_in_progress %A\n",
                     ngx_max(in_progress, 0));

    for (i = 0; i < NGX_HTTP_IDEM_H_COUNT; i++) {
        p = ngx_http_idempotency_put_hist(p, last, shm, i);
    }

    p = ngx_http_idempotency_store_gauges(r, p, last);

    return ngx_http_idempotency_send_text(r, NGX_HTTP_OK,
                                          "text/plain; version=0.0.4",
                                          start, p - start);
}


/* admin */

typedef struct {
    idem_store_t          *store;
    idem_hash_t            scope;
    u_char                 key[IDEM_KEY_MAX];
    size_t                 key_len;
    int                    rc;
    ngx_http_request_t    *request;
} ngx_http_idempotency_admin_job_t;


static void
ngx_http_idempotency_admin_delete(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_admin_job_t  *job = data;

    job->rc = idem_store_delete(job->store, &job->scope,
                                (const char *) job->key, job->key_len);
}


static ngx_int_t
ngx_http_idempotency_admin_status(ngx_http_request_t *r, int rc)
{
    u_char  *p;
    size_t   len;

    if (rc == 0) {
        return ngx_http_idempotency_send_text(r, NGX_HTTP_OK,
                   "application/json",
                   (u_char *) "{\"deleted\":true}", 16);
    }

    len = 64 + ngx_strlen(idem_strerror(rc));
    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_sprintf(p, "{\"errors\":[{\"title\":\"%s\",\"details\":\"%s\"}]}",
                      rc == IDEM_ENOTFOUND ? "Not found" : "Store error",
                      idem_strerror(rc)) - p;

    return ngx_http_idempotency_send_text(r,
               rc == IDEM_ENOTFOUND ? NGX_HTTP_NOT_FOUND
                                    : NGX_HTTP_SERVICE_UNAVAILABLE,
               "application/json", p, len);
}


static void
ngx_http_idempotency_admin_done(ngx_event_t *ev)
{
    ngx_http_idempotency_admin_job_t  *job = ev->data;
    ngx_http_request_t                *r = job->request;
    ngx_connection_t                  *c = r->connection;

    r->main->blocked--;
    r->aio = 0;

    /* finalizing may free r */
    ngx_http_finalize_request(r,
                              ngx_http_idempotency_admin_status(r, job->rc));
    ngx_http_run_posted_requests(c);
}


/* The room a JSON array of the n strings needs, escaped. */

static size_t
ngx_http_idempotency_json_list_len(const idem_str_t *s, ngx_uint_t n)
{
    size_t      len;
    ngx_uint_t  i;

    len = 2;

    for (i = 0; i < n; i++) {
        len += 3 + 6 * s[i].len;
    }

    return len;
}


static u_char *
ngx_http_idempotency_json_list(u_char *p, size_t cap, const idem_str_t *s,
    ngx_uint_t n)
{
    ngx_uint_t  i;

    *p++ = '[';

    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, i ? ",\"" : "\"", i ? 2 : 1);
        p += idem_json_escape((char *) p, cap, s[i].data, s[i].len);
        *p++ = '"';
    }

    *p++ = ']';

    return p;
}


static ngx_int_t
ngx_http_idempotency_admin_show(ngx_http_request_t *r,
    ngx_http_idempotency_admin_job_t *job)
{
    idem_str_t                        *ign, *hdr;
    ngx_str_t                         *names;
    ngx_uint_t                         nign, nhdr, k;
    ngx_http_idempotency_loc_conf_t   *ilcf;

    int             rc;
    u_char         *p, *start;
    size_t          len, i;
    idem_result_t   res;
    idem_record_t  *rec;

    rc = idem_store_get(job->store, &job->scope, (const char *) job->key,
                        job->key_len, &res);
    if (rc != 0) {
        return ngx_http_idempotency_admin_status(r, rc);
    }

    rec = &res.record;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);

    ign = ilcf->fp_ignore ? ilcf->fp_ignore->elts : NULL;
    nign = ilcf->fp_ignore ? ilcf->fp_ignore->nelts : 0;
    nhdr = ilcf->fp_headers ? ilcf->fp_headers->nelts : 0;
    hdr = NULL;

    if (nhdr) {
        names = ilcf->fp_headers->elts;

        hdr = ngx_palloc(r->pool, nhdr * sizeof(idem_str_t));
        if (hdr == NULL) {
            idem_result_free(&res);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (k = 0; k < nhdr; k++) {
            hdr[k].data = (char *) names[k].data;
            hdr[k].len = names[k].len;
        }
    }

    len = 512 + 2 * IDEM_HASH_LEN + 6 * job->key_len
          + ngx_http_idempotency_json_list_len(ign, nign)
          + ngx_http_idempotency_json_list_len(hdr, nhdr);
    for (i = 0; i < rec->response.nheaders; i++) {
        len += 16 + 6 * (rec->response.headers[i].name.len
                         + rec->response.headers[i].value.len);
    }

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        idem_result_free(&res);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(start, "{\"key\":\"", 8);
    p += idem_json_escape((char *) p, len, (char *) job->key, job->key_len);
    p = ngx_sprintf(p, "\",\"state\":\"%s\",\"fingerprint\":\"",
                    rec->state == IDEM_STATE_COMPLETE ? "complete"
                                                      : "in_progress");
    p = ngx_hex_dump(p, rec->fingerprint.bytes, IDEM_HASH_LEN);
    p = ngx_cpymem(p, "\",\"fingerprint_ignore\":", 23);
    p = ngx_http_idempotency_json_list(p, len, ign, nign);
    p = ngx_cpymem(p, ",\"fingerprint_headers\":", 23);
    p = ngx_http_idempotency_json_list(p, len, hdr, nhdr);
    p = ngx_sprintf(p, ",\"created_ms\":%L,\"expires_ms\":%L,"
                    "\"expired\":%s,\"lease_until_ms\":%L,"
                    "\"mismatch_logged\":%s,\"unknown_outcome\":%s,"
                    "\"status\":%d,\"body_bytes\":%uz,\"headers\":[",
                    (int64_t) rec->created_ms, (int64_t) rec->expires_ms,
                    idem_record_expired(rec, ngx_http_idempotency_now_ms())
                    ? "true" : "false",
                    (int64_t) rec->lease_until_ms,
                    (rec->flags & IDEM_REC_MISMATCH_LOGGED) ? "true" : "false",
                    (rec->flags & IDEM_REC_UNKNOWN_OUTCOME) ? "true" : "false",
                    rec->response.status, rec->response.body_len);

    for (i = 0; i < rec->response.nheaders; i++) {
        p = ngx_cpymem(p, i ? ",[\"" : "[\"", i ? 3 : 2);
        p += idem_json_escape((char *) p, len,
                              rec->response.headers[i].name.data,
                              rec->response.headers[i].name.len);
        p = ngx_cpymem(p, "\",\"", 3);
        p += idem_json_escape((char *) p, len,
                              rec->response.headers[i].value.data,
                              rec->response.headers[i].value.len);
        p = ngx_cpymem(p, "\"]", 2);
    }

    p = ngx_cpymem(p, "]}\n", 3);

    idem_result_free(&res);

    return ngx_http_idempotency_send_text(r, NGX_HTTP_OK, "application/json",
                                          start, p - start);
}


ngx_int_t
ngx_http_idempotency_admin_handler(ngx_http_request_t *r)
{
    int                                 err;
    u_char                             *slash;
    ngx_int_t                           rc;
    ngx_str_t                           raw;
    ngx_thread_task_t                  *task;
    ngx_http_idempotency_admin_job_t   *job;
    ngx_http_idempotency_loc_conf_t    *ilcf;
    ngx_http_idempotency_main_conf_t   *imcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_DELETE))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idempotency_module);

    /* the key is the URI's last segment, percent-decoded by nginx */
    slash = ngx_strlchr(r->uri.data + 1, r->uri.data + r->uri.len, '/');
    while (slash && ngx_strlchr(slash + 1, r->uri.data + r->uri.len, '/')) {
        slash = ngx_strlchr(slash + 1, r->uri.data + r->uri.len, '/');
    }

    if (slash == NULL || slash + 1 == r->uri.data + r->uri.len) {
        return ngx_http_idempotency_admin_status(r, IDEM_ENOTFOUND);
    }

    raw.data = slash + 1;
    raw.len = r->uri.data + r->uri.len - raw.data;

    task = ngx_thread_task_alloc(r->pool,
                                 sizeof(ngx_http_idempotency_admin_job_t));
    if (task == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job = task->ctx;
    job->request = r;

    err = idem_key_parse((char *) raw.data, raw.len, (char *) job->key,
                         &job->key_len);
    if (err != 0) {
        return ngx_http_idempotency_admin_status(r, IDEM_ENOTFOUND);
    }

    if (ngx_http_idempotency_scope_hash(r, ilcf, &job->scope) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    job->store = ngx_http_idempotency_store(imcf, r->connection->log);
    if (job->store == NULL) {
        return ngx_http_idempotency_admin_status(r, IDEM_EUNAVAIL);
    }

    if (r->method != NGX_HTTP_DELETE) {
        return ngx_http_idempotency_admin_show(r, job);
    }

    task->handler = ngx_http_idempotency_admin_delete;
    task->event.data = job;
    task->event.handler = ngx_http_idempotency_admin_done;

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->main->blocked++;
    r->aio = 1;
    r->main->count++;

    return NGX_DONE;
}
