
/*
 * ngx_http_idempotency_send.h — answers the module makes itself.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_SEND_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_SEND_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* send ctx->answer as the response; returns the output filter's code */
ngx_int_t ngx_http_idempotency_send_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx);
/* send the headers in r->headers_out, then data as the whole body */
ngx_int_t ngx_http_idempotency_send_body(ngx_http_request_t *r,
    u_char *data, size_t len);
/* the same, with this status and Content-Type */
ngx_int_t ngx_http_idempotency_send_text(ngx_http_request_t *r,
    ngx_uint_t status, const char *type, u_char *data, size_t len);
/* the stored form of a gateway-made error: Content-Type in ct */
void ngx_http_idempotency_send_errbody_response(const idem_errbody_t *eb,
    idem_header_t *ct, idem_response_t *resp);
/* the body of a gateway-made error, from the template tpl or in the style
 * (the location's, or copies of them: a thread-pool job), a bad key's rule
 * naming header (NULL: Idempotency-Key); thread-safe */
int ngx_http_idempotency_send_errbody(ngx_uint_t style, idem_errtpl_t *tpl,
    idem_err_kind_t kind, const u_char *key, size_t key_len, int key_err,
    const ngx_str_t *header, idem_errbody_t *out);
/* a gateway-made error into ctx->answer; the state becomes ANSWER */
ngx_int_t ngx_http_idempotency_send_error_answer(ngx_http_request_t *r,
    ngx_http_idempotency_ctx_t *ctx, idem_err_kind_t kind, int key_err);
/* point the headers_out slot of a replayed header (Date, Location, ...)
 * at it, so later filters treat it as on the first answer */
void ngx_http_idempotency_send_bind_header(ngx_http_request_t *r,
    ngx_table_elt_t *h, uint32_t flags);
/* take the upstream's own Idempotency-Expires and Idempotent-Replayed out
 * of headers_out (a first answer carries the gateway's only) */
void ngx_http_idempotency_send_strip_own(ngx_http_request_t *r);
/* add Idempotency-Expires (and Idempotent-Replayed) to headers_out */
ngx_int_t ngx_http_idempotency_send_add_expires(ngx_http_request_t *r,
    int64_t expires_ms);


#endif /* _NGX_HTTP_IDEMPOTENCY_SEND_H_INCLUDED_ */
