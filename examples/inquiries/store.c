/*
 * store.c — in-memory inquiries: a ring of records in creation order and an
 * open-addressing hash index from id to ring slot (see store.h).
 *
 *   items[]  ring of max_items slots   oldest = items[head]
 *            | head | head+1 | ... | head+count-1 |   (indices mod cap)
 *   index[]  2^k >= 2 * max_items buckets, each 0 (empty) or slot + 1;
 *            linear probing, deletion by backward shift (no tombstones)
 *
 * put() evicts from the head of the ring until the new record fits, then
 * appends it at the tail and indexes it.
 */
#include "store.h"
#include "buf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char id[INQ_STORE_ID_LEN];
    uint32_t hash;
    char *json; /* owned */
    size_t len;
} inq_store_item_t;

struct inq_store {
    inq_store_item_t *items;
    size_t cap;   /* max_items */
    size_t head;  /* slot of the oldest item */
    size_t count; /* items in the ring */
    size_t bytes; /* sum of their len */
    size_t max_bytes;
    uint32_t *index; /* slot + 1, or 0 for an empty bucket */
    size_t mask;     /* buckets - 1 */
};

int inq_store_new(inq_store_t **out, size_t max_items, size_t max_bytes)
{
    inq_store_t *s;
    size_t buckets = 16;

    if (max_items == 0 || max_bytes == 0 || max_items > UINT32_MAX / 4) {
        return -EINVAL;
    }
    while (buckets < 2 * max_items) {
        buckets *= 2;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        goto fail;
    }
    s->items = calloc(max_items, sizeof(*s->items));
    s->index = calloc(buckets, sizeof(*s->index));
    if (s->items == NULL || s->index == NULL) {
        goto fail;
    }
    s->cap = max_items;
    s->max_bytes = max_bytes;
    s->mask = buckets - 1;
    *out = s;
    return 0;

fail:
    inq_store_free(s);
    return -ENOMEM;
}

void inq_store_free(inq_store_t *s)
{
    size_t i;

    if (s == NULL) {
        return;
    }
    if (s->items != NULL) {
        for (i = 0; i < s->count; i++) {
            free(s->items[(s->head + i) % s->cap].json);
        }
    }
    free(s->items);
    free(s->index);
    free(s);
}

/* The bucket that holds slot, which must be indexed. */
static size_t store_bucket_of(const inq_store_t *s, size_t slot)
{
    size_t b = s->items[slot].hash & s->mask;

    while (s->index[b] != slot + 1) {
        b = (b + 1) & s->mask;
    }
    return b;
}

/* Empties bucket b, shifting later members of its cluster back. */
static void store_unindex(inq_store_t *s, size_t b)
{
    size_t next = b, home;

    for (;;) {
        next = (next + 1) & s->mask;
        if (s->index[next] == 0) {
            break;
        }
        home = s->items[s->index[next] - 1].hash & s->mask;
        /* The entry may move to b unless its home lies in (b, next]. */
        if ((next > b && (home <= b || home > next)) ||
            (next < b && home <= b && home > next)) {
            s->index[b] = s->index[next];
            b = next;
        }
    }
    s->index[b] = 0;
}

static void store_evict_oldest(inq_store_t *s)
{
    inq_store_item_t *it = &s->items[s->head];

    store_unindex(s, store_bucket_of(s, s->head));
    s->bytes -= it->len;
    free(it->json);
    it->json = NULL;
    s->head = (s->head + 1) % s->cap;
    s->count--;
}

int inq_store_put(inq_store_t *s, const char *id, char *json, size_t len)
{
    inq_store_item_t *it;
    size_t slot, b;

    if (len > s->max_bytes) {
        return -E2BIG;
    }
    while (s->count == s->cap || s->max_bytes - s->bytes < len) {
        store_evict_oldest(s);
    }
    slot = (s->head + s->count) % s->cap;
    it = &s->items[slot];
    memcpy(it->id, id, INQ_STORE_ID_LEN);
    it->hash = inq_hash(id, INQ_STORE_ID_LEN);
    it->json = json;
    it->len = len;
    s->count++;
    s->bytes += len;

    b = it->hash & s->mask;
    while (s->index[b] != 0) {
        b = (b + 1) & s->mask;
    }
    s->index[b] = (uint32_t)slot + 1;
    return 0;
}

const char *inq_store_get(const inq_store_t *s, const char *id, size_t id_len,
                          size_t *len)
{
    const inq_store_item_t *it;
    size_t b;

    if (id_len != INQ_STORE_ID_LEN) {
        return NULL;
    }
    b = inq_hash(id, id_len) & s->mask;
    while (s->index[b] != 0) {
        it = &s->items[s->index[b] - 1];
        if (memcmp(it->id, id, INQ_STORE_ID_LEN) == 0) {
            *len = it->len;
            return it->json;
        }
        b = (b + 1) & s->mask;
    }
    return NULL;
}

size_t inq_store_count(const inq_store_t *s)
{
    return s->count;
}

const char *inq_store_newest(const inq_store_t *s, size_t i, size_t *len)
{
    const inq_store_item_t *it;

    it = &s->items[(s->head + s->count - 1 - i) % s->cap];
    *len = it->len;
    return it->json;
}
