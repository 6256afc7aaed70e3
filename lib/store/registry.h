/*
 * registry.h — the table of store backends, found by the scheme of a store
 * URL ("lmdb:...", "redis://..."). store.c opens and checks URLs through it
 * and names no backend itself; a new backend is one descriptor in its own
 * file and one line in registry.c.
 *
 * Private to lib/store.
 */
#ifndef IDEM_STORE_REGISTRY_H
#define IDEM_STORE_REGISTRY_H

#include <stddef.h>

#include "idem.h"

/*
 * One backend.
 *
 * scheme     the URL scheme, without its ':'
 * forms      the URL forms it takes, for messages ("lmdb:PATH[?options]")
 * caps       IDEM_STORE_CAP_... bits (idem.h): what every handle it opens
 *            can do
 * open       opens url (whole; rest is what follows "scheme:") into *out.
 *            Returns 0 or one of the codes idem_store_open() lists for
 *            its backend (IDEM_EBADURL when check_url would refuse it).
 *            Thread-safe.
 * check_url  checks rest as open reads it, opening nothing; on failure a
 *            sentence in why (cap > 0 bytes). Returns 0, IDEM_EBADURL or
 *            IDEM_ENOMEM (lmdb, postgres). Thread-safe.
 */
typedef struct {
    const char *scheme;
    const char *forms;
    unsigned caps;
    int (*open)(const char *url, const char *rest, idem_store_t **out);
    int (*check_url)(const char *rest, char *why, size_t cap);
} idem_store_backend_t;

/*
 * The backend whose scheme starts url (up to its first ':'), and in *rest
 * what follows the ':'. NULL when no backend has that scheme (or url has no
 * ':').
 * Errors: none. Thread safety: thread-safe.
 */
const idem_store_backend_t *idem_store_backend_find(const char *url,
                                                    const char **rest);

/*
 * The URL forms of every backend, "a, b or c", for messages; static,
 * joined once.
 * Errors: none. Thread safety: thread-safe (pthread_once).
 */
const char *idem_store_backend_forms(void);

#endif /* IDEM_STORE_REGISTRY_H */
