
/*
 * ngx_http_idempotency_variables.h — the module's variables.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_VARIABLES_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_VARIABLES_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* adds $idempotency_key, _outcome, _api_log and _log_entry */
ngx_int_t ngx_http_idempotency_variables_add(ngx_conf_t *cf);
/* with idempotency_fast_request_id on: the handler that sets nginx's
 * $request_id of each request (POST_READ phase) */
ngx_int_t ngx_http_idempotency_variables_request_id_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDEMPOTENCY_VARIABLES_H_INCLUDED_ */
