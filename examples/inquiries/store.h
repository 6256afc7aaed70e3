/*
 * store.h — the inquiries the demo API has created, kept in memory.
 *
 * Each inquiry is kept as the JSON text of its resource object
 * ({"type":"inquiry","id":...,"attributes":{...}}), ready to be served. The
 * store is a ring in creation order plus a hash index by id; it holds at
 * most max_items inquiries and max_bytes of JSON, and evicts the oldest to
 * make room for a new one. Nothing survives a restart.
 */
#ifndef INQ_STORE_H
#define INQ_STORE_H

#include <stddef.h>

#include "buf.h"

/* "inq_" and 24 alphanumerics. */
#define INQ_STORE_ID_LEN 28

typedef struct inq_store inq_store_t;

/* Creates an empty store. 0 or -ENOMEM (or -EINVAL for a zero limit). */
INQ_MUST_CHECK int inq_store_new(inq_store_t **out, size_t max_items,
                                 size_t max_bytes);

/* Frees the store and every inquiry in it. s may be NULL. */
void inq_store_free(inq_store_t *s);

/*
 * Adds an inquiry. id has INQ_STORE_ID_LEN bytes and is not yet in the
 * store; json is a malloc'ed string of len bytes that the store owns and
 * frees from then on. Evicts the oldest inquiries as needed. Returns 0, or
 * -E2BIG when len alone exceeds max_bytes (json is then still the caller's).
 */
INQ_MUST_CHECK int inq_store_put(inq_store_t *s, const char *id, char *json,
                                 size_t len);

/*
 * The JSON of the inquiry id[0..id_len), or NULL. The string is borrowed:
 * it is valid until the next inq_store_put() or inq_store_free().
 */
const char *inq_store_get(const inq_store_t *s, const char *id, size_t id_len,
                          size_t *len);

/* How many inquiries the store holds. */
size_t inq_store_count(const inq_store_t *s);

/*
 * The i-th newest inquiry (0 is the newest, i < inq_store_count()),
 * borrowed like inq_store_get().
 */
const char *inq_store_newest(const inq_store_t *s, size_t i, size_t *len);

#endif
