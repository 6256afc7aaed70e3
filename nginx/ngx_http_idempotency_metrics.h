
/*
 * ngx_http_idempotency_metrics.h — counters, latency histograms and gauges
 * shared by all workers, and the idempotency_metrics location.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_METRICS_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_METRICS_H_INCLUDED_


#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_metrics_list.h"


#define NGX_HTTP_IDEM_COUNTER_ID_(id, name, help)  NGX_HTTP_IDEM_M_##id,
typedef enum {
    NGX_HTTP_IDEM_COUNTERS(NGX_HTTP_IDEM_COUNTER_ID_)
    NGX_HTTP_IDEM_M_COUNT
} ngx_http_idempotency_metric_e;
#undef NGX_HTTP_IDEM_COUNTER_ID_

#define NGX_HTTP_IDEM_HIST_ID_(id, name, op, bounds, help)                   \
    NGX_HTTP_IDEM_H_##id,
typedef enum {
    NGX_HTTP_IDEM_HISTOGRAMS(NGX_HTTP_IDEM_HIST_ID_)
    NGX_HTTP_IDEM_H_COUNT
} ngx_http_idempotency_hist_e;
#undef NGX_HTTP_IDEM_HIST_ID_

#define NGX_HTTP_IDEM_GAUGE_ID_(id, name, help)  NGX_HTTP_IDEM_G_##id,
typedef enum {
    NGX_HTTP_IDEM_GAUGES(NGX_HTTP_IDEM_GAUGE_ID_)
    NGX_HTTP_IDEM_G_COUNT
} ngx_http_idempotency_gauge_e;
#undef NGX_HTTP_IDEM_GAUGE_ID_


/* the shared zone of the counters, at configuration */
ngx_int_t ngx_http_idempotency_metrics_init(ngx_conf_t *cf);
/* a worker takes its slot of the in-progress gauge */
void ngx_http_idempotency_metrics_init_process(ngx_cycle_t *cycle);

/* adds n to a counter (NGX_HTTP_IDEM_M_...) */
void ngx_http_idempotency_metrics_count(ngx_uint_t metric, ngx_uint_t n);
/* a monotonic clock in microseconds, for the histograms */
uint64_t ngx_http_idempotency_metrics_now_us(void);
/* one observation of us microseconds into histogram h */
void ngx_http_idempotency_metrics_observe(ngx_uint_t h, uint64_t us);

/* the key of ctx is claimed: it counts in the in-progress gauge, and its
   upstream time starts */
void ngx_http_idempotency_metrics_claim_started(
    ngx_http_idempotency_ctx_t *ctx);
/* its upstream response is whole (or the upstream failed) */
void ngx_http_idempotency_metrics_upstream_done(
    ngx_http_idempotency_ctx_t *ctx);
/* the claim is settled, or the request is gone: out of the gauge (once) */
void ngx_http_idempotency_metrics_claim_ended(ngx_http_idempotency_ctx_t *ctx);

/* the idempotency_metrics location: the Prometheus text format */
ngx_int_t ngx_http_idempotency_metrics_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_METRICS_H_INCLUDED_ */
