
/*
 * ngx_http_idempotency_admin.h — the idempotency_admin location.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_ADMIN_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_ADMIN_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* GET or DELETE .../keys/KEY */
ngx_int_t ngx_http_idempotency_admin_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_IDEMPOTENCY_ADMIN_H_INCLUDED_ */
