/*
 * counter.c — executions per Idempotency-Key (see counter.h).
 *
 *   entries[]  keys in first-seen order: { key (owned copy), len, count }
 *   index[]    2^k >= 2 * max_keys buckets, each 0 (empty) or entry + 1,
 *              linear probing; entries are never removed one by one, only
 *              all at once by inq_counter_reset()
 */
#include "counter.h"
#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key; /* owned; NULL for the empty key */
    size_t len;
    uint32_t hash;
    uint64_t count;
} inq_counter_entry_t;

struct inq_counter {
    inq_counter_entry_t *entries;
    size_t len; /* tracked keys */
    size_t cap; /* allocated entries */
    size_t max_keys;
    size_t max_key_len;
    uint32_t *index;
    size_t mask;
    uint64_t total;
    uint64_t untracked;
};

int inq_counter_new(inq_counter_t **out, size_t max_keys, size_t max_key_len)
{
    inq_counter_t *c;
    size_t buckets = 16;

    if (max_keys == 0 || max_keys > UINT32_MAX / 4) {
        return -EINVAL;
    }
    while (buckets < 2 * max_keys) {
        buckets *= 2;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->index = calloc(buckets, sizeof(*c->index));
    if (c->index == NULL) {
        free(c);
        return -ENOMEM;
    }
    c->mask = buckets - 1;
    c->max_keys = max_keys;
    c->max_key_len = max_key_len;
    *out = c;
    return 0;
}

void inq_counter_free(inq_counter_t *c)
{
    if (c == NULL) {
        return;
    }
    inq_counter_reset(c);
    free(c->entries);
    free(c->index);
    free(c);
}

/* The bucket holding key, or the empty bucket where it would go. */
static size_t counter_find(const inq_counter_t *c, const char *key, size_t len,
                           uint32_t hash)
{
    const inq_counter_entry_t *e;
    size_t b = hash & c->mask;

    while (c->index[b] != 0) {
        e = &c->entries[c->index[b] - 1];
        if (e->hash == hash && e->len == len &&
            (len == 0 || memcmp(e->key, key, len) == 0)) {
            break;
        }
        b = (b + 1) & c->mask;
    }
    return b;
}

/* Appends a new entry for key; -ENOMEM or -ENOSPC when it cannot. */
static int counter_track(inq_counter_t *c, const char *key, size_t len,
                         uint32_t hash, size_t bucket)
{
    inq_counter_entry_t *entries, *e;
    size_t cap;
    char *copy = NULL;

    if (c->len == c->max_keys || len > c->max_key_len) {
        return -ENOSPC;
    }
    if (c->len == c->cap) {
        cap = c->cap == 0 ? 256 : c->cap * 2;
        if (cap > c->max_keys) {
            cap = c->max_keys;
        }
        entries = realloc(c->entries, cap * sizeof(*entries));
        if (entries == NULL) {
            return -ENOMEM;
        }
        c->entries = entries;
        c->cap = cap;
    }
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL) {
            return -ENOMEM;
        }
        memcpy(copy, key, len);
    }
    e = &c->entries[c->len];
    e->key = copy;
    e->len = len;
    e->hash = hash;
    e->count = 1;
    c->index[bucket] = (uint32_t)++c->len;
    return 0;
}

void inq_counter_add(inq_counter_t *c, const char *key, size_t len)
{
    uint32_t hash = inq_hash(key, len);
    size_t b = counter_find(c, key, len, hash);

    c->total++;
    if (c->index[b] != 0) {
        c->entries[c->index[b] - 1].count++;
    } else if (counter_track(c, key, len, hash, b) != 0) {
        c->untracked++;
    }
}

uint64_t inq_counter_get(const inq_counter_t *c, const char *key, size_t len)
{
    size_t b = counter_find(c, key, len, inq_hash(key, len));

    return c->index[b] != 0 ? c->entries[c->index[b] - 1].count : 0;
}

uint64_t inq_counter_total(const inq_counter_t *c)
{
    return c->total;
}

uint64_t inq_counter_untracked(const inq_counter_t *c)
{
    return c->untracked;
}

size_t inq_counter_keys(const inq_counter_t *c)
{
    return c->len;
}

uint64_t inq_counter_entry(const inq_counter_t *c, size_t i, const char **key,
                           size_t *len)
{
    *key = c->entries[i].key != NULL ? c->entries[i].key : "";
    *len = c->entries[i].len;
    return c->entries[i].count;
}

void inq_counter_reset(inq_counter_t *c)
{
    size_t i;

    for (i = 0; i < c->len; i++) {
        free(c->entries[i].key);
    }
    if (c->len > 0) {
        memset(c->index, 0, (c->mask + 1) * sizeof(*c->index));
    }
    c->len = 0;
    c->total = 0;
    c->untracked = 0;
}
