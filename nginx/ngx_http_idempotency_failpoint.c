
/*
 * ngx_http_idempotency_failpoint.c — crash failpoints, compiled into test
 * builds only (see ngx_http_idempotency_failpoint.h).
 */

#include "ngx_http_idempotency.h"
#include "ngx_http_idempotency_failpoint.h"


#if (IDEM_FAILPOINTS)

#include <signal.h>


void
ngx_http_idempotency_failpoint(const char *point, const u_char *key,
    size_t key_len)
{
    char    *spec, *p, *action, *prefix;
    size_t   n, plen;

    spec = getenv("IDEMGATE_FAILPOINTS");
    if (spec == NULL) {
        return;
    }

    plen = ngx_strlen(point);

    for (p = spec; *p; p += n + (p[n] == ',')) {
        n = strcspn(p, ",");

        if (n <= plen + 1 || ngx_strncmp(p, point, plen) != 0
            || p[plen] != ':')
        {
            continue;
        }

        action = p + plen + 1;
        prefix = memchr(action, ':', p + n - action);
        if (prefix == NULL) {
            continue;
        }

        prefix++;

        if ((size_t) (p + n - prefix) > key_len
            || ngx_strncmp(key, prefix, p + n - prefix) != 0)
        {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "idempotency failpoint %s fires for key \"%*s\"",
                      point, key_len, key);

        if (ngx_strncmp(action, "stall:", 6) == 0) {
            ngx_msleep(1000);
            return;
        }

        if (ngx_strncmp(action, "crash:", 6) == 0) {
            (void) kill(0, SIGKILL);
        }

        (void) raise(SIGKILL);
    }
}

#endif
