/*
 * counter.h — how many times the demo API executed a request, in total and
 * per Idempotency-Key value, so that tests can tell whether a gateway
 * forwarded a request once, twice or not at all.
 *
 * Keys are tracked in first-seen order, at most max_keys of them and each
 * at most max_key_len bytes. An execution whose key cannot be tracked (the
 * map is full, the key is too long, memory ran out) still counts in the
 * total and in "untracked".
 */
#ifndef INQ_COUNTER_H
#define INQ_COUNTER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct inq_counter inq_counter_t;

/* Creates an empty counter. 0, -EINVAL (zero or huge max_keys), -ENOMEM. */
INQ_MUST_CHECK int inq_counter_new(inq_counter_t **out, size_t max_keys,
                                   size_t max_key_len);

/* Frees the counter and its keys. c may be NULL. */
void inq_counter_free(inq_counter_t *c);

/* Counts one execution for key[0..len) (len 0: no key). */
void inq_counter_add(inq_counter_t *c, const char *key, size_t len);

/* Executions counted for key[0..len); 0 for a key never seen. */
uint64_t inq_counter_get(const inq_counter_t *c, const char *key, size_t len);

/* Executions in all, including untracked ones. */
uint64_t inq_counter_total(const inq_counter_t *c);

/* Executions whose key could not be tracked. */
uint64_t inq_counter_untracked(const inq_counter_t *c);

/* Tracked keys. */
size_t inq_counter_keys(const inq_counter_t *c);

/*
 * The i-th tracked key in first-seen order (i < inq_counter_keys()) and its
 * count. *key is borrowed until the next add or reset.
 */
uint64_t inq_counter_entry(const inq_counter_t *c, size_t i, const char **key,
                           size_t *len);

/* Forgets every key and zeroes the counts. */
void inq_counter_reset(inq_counter_t *c);

#endif
