
/*
 * ngx_http_idempotency_filter.h — the header and body filters that hold
 * (or record) a claimed key's response until it is stored.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_FILTER_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_FILTER_H_INCLUDED_


#include "ngx_http_idempotency.h"


/* puts both filters in nginx's chains */
ngx_int_t ngx_http_idempotency_filter_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDEMPOTENCY_FILTER_H_INCLUDED_ */
