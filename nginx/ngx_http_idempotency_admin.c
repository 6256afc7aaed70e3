
/*
 * ngx_http_idempotency_admin.c — counters shared by all workers (a small
 * shared memory zone), the Prometheus page of idempotency_metrics, and key
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


static ngx_shm_zone_t  *ngx_http_idempotency_metrics_zone;


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
                                     NGX_HTTP_IDEM_M_COUNT
                                     * sizeof(ngx_atomic_t));
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
        8 * ngx_pagesize, &ngx_http_idempotency_module);
    if (ngx_http_idempotency_metrics_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_metrics_zone->init =
        ngx_http_idempotency_metrics_zone_init;

    return NGX_OK;
}


void
ngx_http_idempotency_count(ngx_uint_t metric, ngx_uint_t n)
{
    ngx_atomic_t  *m;

    if (ngx_http_idempotency_metrics_zone == NULL
        || ngx_http_idempotency_metrics_zone->data == NULL
        || metric >= NGX_HTTP_IDEM_M_COUNT)
    {
        return;
    }

    m = ngx_http_idempotency_metrics_zone->data;
    (void) ngx_atomic_fetch_add(&m[metric], n);
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
ngx_http_idempotency_store_gauges(ngx_http_request_t *r, u_char *p)
{
    idem_store_t                      *store;
    idem_store_usage_t                 u;
    ngx_http_idempotency_main_conf_t  *imcf;

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);
    store = ngx_http_idempotency_store(imcf, r->connection->log);

    p = ngx_sprintf(p, "# TYPE idemgate_store_healthy gauge\n"
                    "idemgate_store_healthy %d\n",
                    store != NULL && !ngx_http_idempotency_store_failed(imcf));

    /* a networked store's usage would be a round trip: not on the loop */
    if (store == NULL
        || !(idem_store_caps(store) & IDEM_STORE_CAP_INLINE_READ)
        || idem_store_usage(store, &u) != 0)
    {
        return p;
    }

    return ngx_sprintf(p, "# TYPE idemgate_store_records gauge\n"
                       "idemgate_store_records %uL\n"
                       "# TYPE idemgate_store_bytes_used gauge\n"
                       "idemgate_store_bytes_used %uL\n"
                       "# TYPE idemgate_store_bytes_limit gauge\n"
                       "idemgate_store_bytes_limit %uL\n"
                       "# TYPE idemgate_store_claim_bytes_limit gauge\n"
                       "idemgate_store_claim_bytes_limit %uL\n",
                       u.records, u.bytes_used, u.bytes_limit,
                       u.bytes_claim_limit);
}


ngx_int_t
ngx_http_idempotency_metrics_handler(ngx_http_request_t *r)
{
    u_char        *p, *start;
    size_t         len, n;
    ngx_int_t      rc;
    ngx_uint_t     i;
    const char    *name, *brace;
    ngx_atomic_t  *m;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    len = sizeof("# TYPE idemgate_requests_total counter\n") * 16
          + 5 * (2 * sizeof("# TYPE idemgate_store_claim_bytes_limit gauge\n")
                 + NGX_INT64_LEN);

    for (i = 0; i < NGX_HTTP_IDEM_M_COUNT; i++) {
        len += ngx_strlen(ngx_http_idempotency_metric_names[i])
               + 1 + NGX_ATOMIC_T_LEN + 1;
    }

    start = ngx_pnalloc(r->pool, len);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m = ngx_http_idempotency_metrics_zone
        ? ngx_http_idempotency_metrics_zone->data : NULL;

    p = start;

    for (i = 0; i < NGX_HTTP_IDEM_M_COUNT; i++) {
        if (i == 0 || i > NGX_HTTP_IDEM_M_UNAVAILABLE) {
            name = ngx_http_idempotency_metric_names[i];
            brace = strchr(name, '{');
            n = brace ? (size_t) (brace - name) : ngx_strlen(name);

            p = ngx_sprintf(p, "# TYPE %*s counter\n", n, name);
        }

        p = ngx_sprintf(p, "%s %uA\n", ngx_http_idempotency_metric_names[i],
                        m ? m[i] : 0);
    }

    p = ngx_http_idempotency_store_gauges(r, p);

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
