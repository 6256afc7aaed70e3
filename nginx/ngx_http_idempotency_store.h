
/*
 * ngx_http_idempotency_store.h — this worker's store, its health and its
 * clock.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_STORE_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_STORE_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* milliseconds since the Unix epoch, the time the store is given */
int64_t ngx_http_idempotency_store_now_ms(void);

/* the store of this worker, reopened when it failed; NULL if unavailable */
idem_store_t *ngx_http_idempotency_store(ngx_http_idempotency_main_conf_t *mcf,
    ngx_log_t *log);
/* whether the store must not take new keys: its path no longer names the
 * files this worker has open, or this worker opened other files than the
 * first worker of the cycle */
#define ngx_http_idempotency_store_failed(imcf)                              \
    ((imcf)->store_lost || (imcf)->store_foreign)

/* the shared record of which files this cycle's workers opened */
ngx_int_t ngx_http_idempotency_store_health_init(ngx_conf_t *cf);
/* the timer that checks, once a second on the thread pool, that the
 * store's path still names the files this worker has open */
void ngx_http_idempotency_store_watch(ngx_event_t *ev);
/* the idempotency_health location: 200, or 503 saying why */
ngx_int_t ngx_http_idempotency_store_health_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_STORE_H_INCLUDED_ */
