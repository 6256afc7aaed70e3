
/*
 * ngx_http_idempotency_store.c — this worker's store: opened after fork,
 * reopened when an open failed (at most once a second), whether it can be
 * trusted, and the idempotency_health location that says so; and the
 * clock the module gives the store (milliseconds since the epoch).
 *
 * LMDB does not notice its directory removed or replaced while it is open:
 * the worker goes on with the deleted (or moved) files, while a restart or
 * another gateway would open the path anew, find no keys and run them
 * again. So every worker checks, once a second and on the thread pool (it
 * is two stat() calls), that the path still names its open files:
 *
 *   watch timer (1s) ──task──> idem_store_check() ──> watch_done:
 *                                                     store_lost = 0 | 1,
 *                                                     logged when it turns
 *
 * A worker that opens the store after that (nginx respawns a worker that
 * died) would find a new, empty store under the path, or make one. So the
 * first worker of a configuration cycle to open the store records which
 * files it opened (idem_store_identity) in a small shared zone, which the
 * master clears at every configuration load, and every later open is
 * compared with it: other files make the worker's store "foreign".
 *
 * While the store is lost or foreign: new keys (and anything that would
 * write) get 503, nothing is forwarded; a complete key the open files
 * hold is replayed, since that answer is what was executed;
 * idempotency_health answers 503 with the reason. The worker never
 * reopens the path by itself, as that would forget every key: the files
 * coming back (the directory moved back) clears "lost"; otherwise an
 * operator restores the directory, or accepts what is there now with a
 * reload or restart (a new cycle).
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_send.h"
#include "ngx_http_idempotency_store.h"

#include <sys/time.h>



#define NGX_HTTP_IDEMPOTENCY_WATCH_INTERVAL  1000


/* in the shared zone: the files the first worker of the cycle opened */
typedef struct {
    ngx_uint_t                         set;
    idem_store_identity_t              id;
} ngx_http_idempotency_identity_t;


static ngx_shm_zone_t  *ngx_http_idempotency_identity_zone;


typedef struct {
    ngx_http_idempotency_main_conf_t  *imcf;
    idem_store_t                      *store;
    int                                rc;
    char                               why[512];
} ngx_http_idempotency_watch_job_t;


static ngx_int_t ngx_http_idempotency_identity_zone_init(
    ngx_shm_zone_t *shm_zone, void *data);
static void ngx_http_idempotency_store_opened(
    ngx_http_idempotency_main_conf_t *imcf, ngx_log_t *log);
static void ngx_http_idempotency_watch_handler(void *data, ngx_log_t *log);
static void ngx_http_idempotency_watch_done(ngx_event_t *ev);


int64_t
ngx_http_idempotency_store_now_ms(void)
{
    struct timeval  tv;

    ngx_gettimeofday(&tv);

    return (int64_t) tv.tv_sec * 1000 + tv.tv_usec / 1000;
}


static ngx_int_t
ngx_http_idempotency_identity_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t                  *shpool;
    ngx_http_idempotency_identity_t  *ident = data;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ident == NULL) {
        ident = ngx_slab_calloc(shpool,
                                sizeof(ngx_http_idempotency_identity_t));
        if (ident == NULL) {
            return NGX_ERROR;
        }
    }

    /* a new configuration cycle (start or reload) takes the store as its
     * first worker finds it */
    ngx_shmtx_lock(&shpool->mutex);
    ident->set = 0;
    ngx_shmtx_unlock(&shpool->mutex);

    shm_zone->data = ident;

    return NGX_OK;
}


ngx_int_t
ngx_http_idempotency_store_health_init(ngx_conf_t *cf)
{
    ngx_str_t  name = ngx_string("idempotency_store_identity");

    ngx_http_idempotency_identity_zone = ngx_shared_memory_add(cf, &name,
        8 * ngx_pagesize, &ngx_http_idempotency_module);
    if (ngx_http_idempotency_identity_zone == NULL) {
        return NGX_ERROR;
    }

    ngx_http_idempotency_identity_zone->init =
        ngx_http_idempotency_identity_zone_init;

    return NGX_OK;
}


static void
ngx_http_idempotency_store_opened(ngx_http_idempotency_main_conf_t *imcf,
    ngx_log_t *log)
{
    ngx_uint_t                        same;
    ngx_slab_pool_t                  *shpool;
    idem_store_identity_t             id;
    ngx_http_idempotency_identity_t  *ident;

    idem_store_identity(imcf->store, &id);

    if ((id.device == 0 && id.inode == 0)
        || ngx_http_idempotency_identity_zone == NULL
        || ngx_http_idempotency_identity_zone->data == NULL)
    {
        return;
    }

    shpool = (ngx_slab_pool_t *)
                 ngx_http_idempotency_identity_zone->shm.addr;
    ident = ngx_http_idempotency_identity_zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    if (!ident->set) {
        ident->set = 1;
        ident->id = id;
    }

    same = ident->id.device == id.device && ident->id.inode == id.inode;

    ngx_shmtx_unlock(&shpool->mutex);

    if (same) {
        return;
    }

    imcf->store_foreign = 1;
    ngx_snprintf((u_char *) imcf->foreign_why, sizeof(imcf->foreign_why) - 1,
                 "this worker opened other files (data.mdb device %uL inode "
                 "%uL) than the other workers (device %uL inode %uL): the "
                 "store directory was removed or replaced since they "
                 "started%Z",
                 id.device, id.inode, ident->id.device, ident->id.inode);
    imcf->foreign_why[sizeof(imcf->foreign_why) - 1] = '\0';

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "idempotency store \"%V\" lost: %s; new keys get 503 "
                  "until the gateway is reloaded or restarted",
                  &imcf->store_url, imcf->foreign_why);
}


idem_store_t *
ngx_http_idempotency_store(ngx_http_idempotency_main_conf_t *mcf,
    ngx_log_t *log)
{
    int  rc;

    if (mcf->store != NULL) {
        return mcf->store;
    }

    if (ngx_current_msec < mcf->store_retry_at) {
        return NULL;
    }

    rc = idem_store_open((char *) mcf->store_url.data, &mcf->store);
    if (rc != 0) {
        mcf->store = NULL;
        mcf->store_open_rc = rc;
        mcf->store_retry_at = ngx_current_msec + 1000;
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "idempotency store \"%V\" unavailable: %s",
                      &mcf->store_url, idem_strerror(rc));
        return NULL;
    }

    ngx_http_idempotency_store_opened(mcf, log);

    return mcf->store;
}


static void
ngx_http_idempotency_watch_handler(void *data, ngx_log_t *log)
{
    ngx_http_idempotency_watch_job_t  *job = data;

    job->rc = idem_store_check(job->store, job->why, sizeof(job->why));
}


static void
ngx_http_idempotency_watch_done(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task = ev->data;
    ngx_http_idempotency_watch_job_t  *job = task->ctx;
    ngx_http_idempotency_main_conf_t  *imcf = job->imcf;

    imcf->watch_running = 0;

    if (job->rc == IDEM_EUNAVAIL) {
        /* once when it is lost, and again if what changed does */
        if ((!imcf->store_lost
             || ngx_strcmp(imcf->store_why, job->why) != 0)
            && !(idem_store_caps(job->store) & IDEM_STORE_CAP_DIRECTORY))
        {
            /* a server: it comes back by itself */
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "idempotency store \"%V\" unavailable: %s",
                          &imcf->store_url, job->why);

        } else if (!imcf->store_lost
                   || ngx_strcmp(imcf->store_why, job->why) != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                          "idempotency store \"%V\" lost: %s; new keys get "
                          "503 until the directory is restored, or the "
                          "gateway is reloaded or restarted to use what "
                          "is there now (which forgets the keys kept here)",
                          &imcf->store_url, job->why);
        }

        imcf->store_lost = 1;
        ngx_cpystrn((u_char *) imcf->store_why, (u_char *) job->why,
                    sizeof(imcf->store_why));

    } else if (job->rc != 0) {
        /* could not look: keep the last verdict */
        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "idempotency store \"%V\": %s",
                      &imcf->store_url, job->why);

    } else if (imcf->store_lost) {
        ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                      "idempotency store \"%V\" %s%s", &imcf->store_url,
                      (idem_store_caps(job->store) & IDEM_STORE_CAP_DIRECTORY)
                      ? "names its open files again" : "answers again",
                      imcf->store_foreign ? "" : ": serving new keys");
        imcf->store_lost = 0;
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&imcf->watch_event,
                      NGX_HTTP_IDEMPOTENCY_WATCH_INTERVAL);
    }

    ngx_free(task);
}


void
ngx_http_idempotency_store_watch(ngx_event_t *ev)
{
    ngx_thread_task_t                 *task;
    ngx_http_idempotency_watch_job_t  *job;
    ngx_http_idempotency_main_conf_t  *imcf = ev->data;

    if (ngx_exiting || imcf->watch_running) {
        return;
    }

    if (imcf->store == NULL) {
        /* nothing open to lose; the next request opens it */
        ngx_add_timer(&imcf->watch_event,
                      NGX_HTTP_IDEMPOTENCY_WATCH_INTERVAL);
        return;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_idempotency_watch_job_t), ev->log);
    if (task == NULL) {
        ngx_add_timer(&imcf->watch_event,
                      NGX_HTTP_IDEMPOTENCY_WATCH_INTERVAL);
        return;
    }

    job = (ngx_http_idempotency_watch_job_t *) (task + 1);
    task->ctx = job;
    job->imcf = imcf;
    job->store = imcf->store;

    task->handler = ngx_http_idempotency_watch_handler;
    task->event.data = task;
    task->event.handler = ngx_http_idempotency_watch_done;
    task->event.log = ev->log;

    if (ngx_thread_task_post(imcf->thread_pool, task) != NGX_OK) {
        ngx_free(task);
        ngx_add_timer(&imcf->watch_event,
                      NGX_HTTP_IDEMPOTENCY_WATCH_INTERVAL);
        return;
    }

    imcf->watch_running = 1;
}


ngx_int_t
ngx_http_idempotency_store_health_handler(ngx_http_request_t *r)
{
    u_char                            *p, *start;
    size_t                             len;
    ngx_int_t                          rc;
    ngx_uint_t                         status;
    const char                        *why;
    char                               buf[256];
    ngx_http_idempotency_main_conf_t  *imcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idempotency_module);

    why = NULL;

    if (ngx_http_idempotency_store(imcf, r->connection->log) == NULL) {
        ngx_snprintf((u_char *) buf, sizeof(buf) - 1,
                     "the store \"%V\" cannot be opened: %s%Z",
                     &imcf->store_url,
                     idem_strerror(imcf->store_open_rc));
        buf[sizeof(buf) - 1] = '\0';
        why = buf;

    } else if (imcf->store_lost) {
        why = imcf->store_why;

    } else if (imcf->store_foreign) {
        why = imcf->foreign_why;
    }

    if (why == NULL) {
        status = NGX_HTTP_OK;
        start = (u_char *) "{\"status\":\"ok\"}\n";
        len = sizeof("{\"status\":\"ok\"}\n") - 1;

    } else {
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        len = sizeof("{\"status\":\"failing\",\"details\":\"\"}\n") - 1
              + idem_json_escape(NULL, 0, why, ngx_strlen(why));

        start = ngx_pnalloc(r->pool, len);
        if (start == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(start, "{\"status\":\"failing\",\"details\":\"",
                       sizeof("{\"status\":\"failing\",\"details\":\"") - 1);
        p += idem_json_escape((char *) p, start + len - p, why,
                              ngx_strlen(why));
        ngx_memcpy(p, "\"}\n", 3);
    }

    r->headers_out.status = status;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    return ngx_http_idempotency_send_body(r, start, len);
}
