
/*
 * ngx_http_idempotency_admin.c — key inspection of idempotency_admin:
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
#include "ngx_http_idempotency_admin.h"
#include "ngx_http_idempotency_request.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_store.h"


typedef struct {
    idem_store_t          *store;
    idem_hash_t            scope;
    u_char                 key[IDEM_KEY_MAX];
    size_t                 key_len;
    int                    rc;
    ngx_http_request_t    *request;
} ngx_http_idempotency_admin_job_t;


static void ngx_http_idempotency_admin_delete(void *data, ngx_log_t *log);
static ngx_int_t ngx_http_idempotency_admin_status(ngx_http_request_t *r,
    int rc);
static void ngx_http_idempotency_admin_done(ngx_event_t *ev);
static size_t ngx_http_idempotency_json_list_len(const idem_str_t *s,
    ngx_uint_t n);
static u_char *ngx_http_idempotency_json_list(u_char *p, size_t cap,
    const idem_str_t *s, ngx_uint_t n);
static ngx_int_t ngx_http_idempotency_header_names(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_str_t **out);
static u_char *ngx_http_idempotency_json_headers(u_char *p, size_t len,
    const idem_response_t *resp);
static ngx_int_t ngx_http_idempotency_admin_key_of(ngx_http_request_t *r,
    ngx_str_t *raw);
static ngx_int_t ngx_http_idempotency_admin_show(ngx_http_request_t *r,
    ngx_http_idempotency_admin_job_t *job);


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


/* The names of the location's idempotency_fingerprint_header, as a list
 * for ngx_http_idempotency_json_list(); NULL when there are none. */

static ngx_int_t
ngx_http_idempotency_header_names(ngx_http_request_t *r,
    ngx_http_idempotency_loc_conf_t *ilcf, idem_str_t **out)
{
    ngx_str_t   *names;
    ngx_uint_t   k, n;
    idem_str_t  *hdr;

    *out = NULL;
    n = ilcf->fp_headers ? ilcf->fp_headers->nelts : 0;

    if (n == 0) {
        return NGX_OK;
    }

    names = ilcf->fp_headers->elts;

    hdr = ngx_palloc(r->pool, n * sizeof(idem_str_t));
    if (hdr == NULL) {
        return NGX_ERROR;
    }

    for (k = 0; k < n; k++) {
        hdr[k].data = (char *) names[k].data;
        hdr[k].len = names[k].len;
    }

    *out = hdr;

    return NGX_OK;
}


/* The stored headers as a JSON array of [name, value] pairs. */

static u_char *
ngx_http_idempotency_json_headers(u_char *p, size_t len,
    const idem_response_t *resp)
{
    size_t  i;

    for (i = 0; i < resp->nheaders; i++) {
        p = ngx_cpymem(p, i ? ",[\"" : "[\"", i ? 3 : 2);
        p += idem_json_escape((char *) p, len, resp->headers[i].name.data,
                              resp->headers[i].name.len);
        p = ngx_cpymem(p, "\",\"", 3);
        p += idem_json_escape((char *) p, len, resp->headers[i].value.data,
                              resp->headers[i].value.len);
        p = ngx_cpymem(p, "\"]", 2);
    }

    return p;
}


static ngx_int_t
ngx_http_idempotency_admin_show(ngx_http_request_t *r,
    ngx_http_idempotency_admin_job_t *job)
{
    idem_str_t                        *ign, *hdr;
    ngx_uint_t                         nign, nhdr;
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

    if (ngx_http_idempotency_header_names(r, ilcf, &hdr) != NGX_OK) {
        idem_result_free(&res);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
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
                    idem_record_expired(rec,
                                        ngx_http_idempotency_store_now_ms())
                    ? "true" : "false",
                    (int64_t) rec->lease_until_ms,
                    (rec->flags & IDEM_REC_MISMATCH_LOGGED) ? "true" : "false",
                    (rec->flags & IDEM_REC_UNKNOWN_OUTCOME) ? "true" : "false",
                    rec->response.status, rec->response.body_len);

    p = ngx_http_idempotency_json_headers(p, len, &rec->response);
    p = ngx_cpymem(p, "]}\n", 3);

    idem_result_free(&res);

    return ngx_http_idempotency_send_text(r, NGX_HTTP_OK, "application/json",
                                          start, p - start);
}


/*
 * The key: in a prefix location that ends with '/' (location /keys/), all
 * of the URI after it, so that a key with a '/' in it (sent as is or as
 * %2F) can be named; elsewhere the URI's last segment. nginx has
 * percent-decoded the URI. NGX_DECLINED: the URI names no key.
 */

static ngx_int_t
ngx_http_idempotency_admin_key_of(ngx_http_request_t *r, ngx_str_t *raw)
{
    u_char                    *slash;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (
#if (NGX_PCRE)
        clcf->regex == NULL &&
#endif
        clcf->name.len > 0 && clcf->name.data[clcf->name.len - 1] == '/'
        && r->uri.len > clcf->name.len
        && ngx_strncmp(r->uri.data, clcf->name.data, clcf->name.len) == 0)
    {
        raw->data = r->uri.data + clcf->name.len;

    } else {
        slash = ngx_strlchr(r->uri.data + 1, r->uri.data + r->uri.len, '/');
        while (slash
               && ngx_strlchr(slash + 1, r->uri.data + r->uri.len, '/'))
        {
            slash = ngx_strlchr(slash + 1, r->uri.data + r->uri.len, '/');
        }

        if (slash == NULL || slash + 1 == r->uri.data + r->uri.len) {
            return NGX_DECLINED;
        }

        raw->data = slash + 1;
    }

    raw->len = r->uri.data + r->uri.len - raw->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_admin_handler(ngx_http_request_t *r)
{
    int                                 err;
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

    if (ngx_http_idempotency_admin_key_of(r, &raw) != NGX_OK) {
        return ngx_http_idempotency_admin_status(r, IDEM_ENOTFOUND);
    }

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

    if (ngx_http_idempotency_request_scope(r, ilcf, &job->scope) != NGX_OK) {
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
