/*
 * registry.c — the store backends this build has, in one table (see
 * registry.h). Adding a backend: its descriptor here, nothing else.
 */
#include <pthread.h>
#include <string.h>

#include "registry.h"

extern const idem_store_backend_t idem_store_mem_backend;
extern const idem_store_backend_t idem_store_lmdb_backend;
extern const idem_store_backend_t idem_store_postgres_backend;
extern const idem_store_backend_t idem_store_postgresql_backend;
extern const idem_store_backend_t idem_store_redis_backend;

static const idem_store_backend_t *const idem_store_backends[] = {
    &idem_store_lmdb_backend,     &idem_store_mem_backend,
    &idem_store_postgres_backend, &idem_store_postgresql_backend,
    &idem_store_redis_backend,
};

#define IDEM_STORE_NBACKENDS                                                   \
    (sizeof(idem_store_backends) / sizeof(idem_store_backends[0]))

const idem_store_backend_t *idem_store_backend_find(const char *url,
                                                    const char **rest)
{
    const char *colon = strchr(url, ':');
    size_t n;

    if (colon == NULL)
        return NULL;
    n = (size_t)(colon - url);
    for (size_t i = 0; i < IDEM_STORE_NBACKENDS; i++) {
        const idem_store_backend_t *b = idem_store_backends[i];

        if (strlen(b->scheme) == n && memcmp(b->scheme, url, n) == 0) {
            *rest = colon + 1;
            return b;
        }
    }
    return NULL;
}

/* The URL forms of the table, joined once (idem_store_backend_forms). */
static char idem_store_forms[512];
static pthread_once_t idem_store_forms_once = PTHREAD_ONCE_INIT;

static void idem_store_forms_build(void)
{
    size_t len = 0;

    for (size_t i = 0; i < IDEM_STORE_NBACKENDS; i++) {
        const char *sep = i == 0                          ? ""
                          : i + 1 == IDEM_STORE_NBACKENDS ? " or "
                                                          : ", ";
        size_t a = strlen(sep), b = strlen(idem_store_backends[i]->forms);

        if (len + a + b + 1 > sizeof(idem_store_forms))
            break;
        memcpy(idem_store_forms + len, sep, a);
        memcpy(idem_store_forms + len + a, idem_store_backends[i]->forms, b);
        len += a + b;
    }
    idem_store_forms[len] = '\0';
}

const char *idem_store_backend_forms(void)
{
    (void)pthread_once(&idem_store_forms_once, idem_store_forms_build);
    return idem_store_forms;
}
