/*
 * mem.c — the "mem:" store: records in a hash table in this process's
 * memory, for tests and for trying things out. Nothing survives the
 * process, and no other process sees it.
 *
 *   caller -> lock -> for each op of the batch:
 *                       find node -> idem_store_plan() -> apply
 *          -> unlock
 *
 * One mutex guards the whole table, so every operation is atomic. Each node
 * keeps the store key, a private copy of the encoded record and the time it
 * becomes removable (what the LMDB backend keeps in its expiry index);
 * prune() walks the table and removes at most budget expired records.
 */
#include "registry.h"
#include "store_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_STORE_MEM_BUCKETS0 64

typedef struct idem_store_mem_node_s {
    struct idem_store_mem_node_s *next;
    uint64_t hash;
    int64_t at_ms; /* removable from this time */
    uint8_t *val;  /* the encoded record (owned) */
    size_t val_len;
    size_t key_len;
    uint8_t key[];
} idem_store_mem_node_t;

typedef struct {
    idem_store_t base;  /* first: the handle callers hold */
    pthread_mutex_t mu; /* guards everything below */
    idem_store_mem_node_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    size_t bytes; /* of the nodes, keys and values held */
} idem_store_mem_t;

/* The bytes a node holds, for usage(). */
static size_t idem_store_mem_size(const idem_store_mem_node_t *n)
{
    return sizeof(*n) + n->key_len + n->val_len;
}

/* The link that points at key's node (or at NULL where it would go). */
static idem_store_mem_node_t **idem_store_mem_find(idem_store_mem_t *m,
                                                   const idem_store_key_t *k,
                                                   uint64_t hash)
{
    idem_store_mem_node_t **link = &m->buckets[hash & (m->nbuckets - 1)];

    while (*link != NULL) {
        idem_store_mem_node_t *n = *link;
        if (n->hash == hash && n->key_len == k->len &&
            memcmp(n->key, k->bytes, k->len) == 0) {
            break;
        }
        link = &n->next;
    }
    return link;
}

/* Doubles the table when it is crowded; keeps it as it is if out of memory. */
static void idem_store_mem_grow(idem_store_mem_t *m)
{
    idem_store_mem_node_t **b;
    size_t n = m->nbuckets * 2;

    if (m->count <= m->nbuckets * 2 || n > SIZE_MAX / sizeof(*b)) {
        return;
    }
    b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < m->nbuckets; i++) {
        idem_store_mem_node_t *node = m->buckets[i];
        while (node != NULL) {
            idem_store_mem_node_t *next = node->next;
            node->next = b[node->hash & (n - 1)];
            b[node->hash & (n - 1)] = node;
            node = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

static void idem_store_mem_unlink(idem_store_mem_t *m,
                                  idem_store_mem_node_t **link)
{
    idem_store_mem_node_t *n = *link;

    *link = n->next;
    m->bytes -= idem_store_mem_size(n);
    free(n->val);
    free(n);
    m->count--;
}

static int idem_store_mem_read(idem_store_t *store, const idem_store_key_t *k,
                               int (*cb)(void *ctx, const uint8_t *val,
                                         size_t len),
                               void *ctx)
{
    idem_store_mem_t *m = (idem_store_mem_t *)store;
    idem_store_mem_node_t *n;
    int rc;

    pthread_mutex_lock(&m->mu);
    n = *idem_store_mem_find(m, k, idem_store_key_hash(k));
    rc = n != NULL ? cb(ctx, n->val, n->val_len) : IDEM_ENOTFOUND;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Removes at most op->budget expired records. Called with the lock held. */
static int idem_store_mem_prune(idem_store_mem_t *m, idem_store_op_t *op)
{
    size_t visited = 0;

    op->removed = 0;
    op->more = 0;
    for (size_t i = 0; i < m->nbuckets; i++) {
        idem_store_mem_node_t **link = &m->buckets[i];
        while (*link != NULL) {
            idem_store_mem_node_t *n = *link;
            int64_t re = 0;
            int verdict;

            if (n->at_ms > op->now_ms) {
                link = &n->next;
                continue;
            }
            if (visited == op->budget) {
                op->more = 1;
                goto done;
            }
            visited++;
            verdict = idem_store_prune_check(n->val, n->val_len, n->at_ms,
                                             op->now_ms, &re);
            if (verdict < 0) {
                return verdict;
            }
            if (verdict == IDEM_STORE_PRUNE_REMOVE) {
                idem_store_mem_unlink(m, link);
                op->removed++;
                continue;
            }
            if (verdict == IDEM_STORE_PRUNE_REINDEX) {
                n->at_ms = re;
            }
            link = &n->next;
        }
    }
done:
    return 0;
}

/*
 * Carries out one op; called with the lock held. Returns 0 or the op's
 * verdict (then the table and op are as they were). *wrote is set when
 * the table changed.
 */
static int idem_store_mem_apply(idem_store_mem_t *m, idem_store_op_t *op,
                                int *wrote)
{
    idem_store_mem_node_t **link, *n, *fresh = NULL;
    uint8_t *copy = NULL;
    uint64_t hash;
    int rc;

    if (op->kind == IDEM_STORE_OP_PRUNE) {
        rc = idem_store_mem_prune(m, op);
        *wrote = rc == 0 && op->removed > 0;
        return rc;
    }

    hash = idem_store_key_hash(&op->key);
    link = idem_store_mem_find(m, &op->key, hash);
    n = *link;
    rc = idem_store_plan(&m->base, op, n ? n->val : NULL, n ? n->val_len : 0);
    if (rc != 0) {
        goto fail;
    }

    switch (op->write) {
    case IDEM_STORE_WRITE_PUT:
        /* Everything that can fail comes before the first change. */
        copy = malloc(op->val->len);
        if (copy == NULL) {
            rc = IDEM_ENOMEM;
            goto fail;
        }
        memcpy(copy, op->val->data, op->val->len);
        if (n == NULL) {
            fresh = malloc(sizeof(*fresh) + op->key.len);
            if (fresh == NULL) {
                rc = IDEM_ENOMEM;
                goto fail;
            }
            fresh->hash = hash;
            fresh->key_len = op->key.len;
            memcpy(fresh->key, op->key.bytes, op->key.len);
            fresh->val = NULL;
            fresh->val_len = 0;
            fresh->next = NULL;
            *link = n = fresh;
            m->count++;
        }
        free(n->val);
        if (n == fresh) {
            m->bytes += sizeof(*n) + n->key_len;
        }
        m->bytes = m->bytes - n->val_len + op->val->len;
        n->val = copy;
        n->val_len = op->val->len;
        n->at_ms = op->new_index_ms;
        idem_store_mem_grow(m);
        break;
    case IDEM_STORE_WRITE_DEL:
        if (n != NULL) { /* a plan deletes only what it found */
            idem_store_mem_unlink(m, link);
        }
        break;
    case IDEM_STORE_WRITE_NONE:
    default:
        break;
    }
    *wrote = op->write != IDEM_STORE_WRITE_NONE;
    return 0;

fail:
    free(copy);
    idem_store_op_reset(op);
    return rc;
}

/*
 * A batch holds the lock from its first op to its last, the way one LMDB
 * transaction carries it, and counts as one commit if anything changed.
 */
static void idem_store_mem_write(idem_store_t *store, idem_store_op_t *ops,
                                 size_t n)
{
    idem_store_mem_t *m = (idem_store_mem_t *)store;
    uint64_t wrote_ops = 0;
    int wrote;

    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        wrote = 0;
        ops[i].rc = idem_store_mem_apply(m, &ops[i], &wrote);
        wrote_ops += (uint64_t)wrote;
    }
    pthread_mutex_unlock(&m->mu);
    if (wrote_ops > 0) {
        atomic_fetch_add(&m->base.commits, 1);
        atomic_fetch_add(&m->base.batched_ops, wrote_ops);
    }
}

static int idem_store_mem_usage(idem_store_t *store, idem_store_usage_t *out)
{
    idem_store_mem_t *m = (idem_store_mem_t *)store;

    pthread_mutex_lock(&m->mu);
    out->records = m->count;
    out->bytes_used = m->bytes;
    pthread_mutex_unlock(&m->mu);
    out->bytes_limit = 0;
    out->bytes_claim_limit = 0;
    return 0;
}

/* Memory has no path that could be removed or replaced. */
static int idem_store_mem_check(idem_store_t *store, char *why, size_t cap)
{
    (void)store;
    (void)why;
    (void)cap;
    return 0;
}

static void idem_store_mem_identity(const idem_store_t *store,
                                    idem_store_identity_t *out)
{
    (void)store;
    out->device = 0;
    out->inode = 0;
}

static void idem_store_mem_close(idem_store_t *store)
{
    idem_store_mem_t *m = (idem_store_mem_t *)store;

    for (size_t i = 0; i < m->nbuckets; i++) {
        while (m->buckets[i] != NULL) {
            idem_store_mem_unlink(m, &m->buckets[i]);
        }
    }
    free(m->buckets);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static const idem_store_vtable_t idem_store_mem_vt = {
    .name = "mem",
    .read = idem_store_mem_read,
    .write = idem_store_mem_write,
    .usage = idem_store_mem_usage,
    .check = idem_store_mem_check,
    .identity = idem_store_mem_identity,
    .close = idem_store_mem_close,
};

static int idem_store_mem_check_url(const char *rest, char *why, size_t cap)
{
    if (rest[0] == '\0') {
        return 0;
    }
    snprintf(why, cap, "\"mem:\" takes nothing after the colon");
    return IDEM_EBADURL;
}

static int idem_store_mem_open(const char *url, const char *rest,
                               idem_store_t **out)
{
    idem_store_mem_t *m;

    (void)url;
    if (rest[0] != '\0') {
        return IDEM_EBADURL;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return IDEM_ENOMEM;
    }
    m->nbuckets = IDEM_STORE_MEM_BUCKETS0;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        goto fail;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        goto fail;
    }
    m->base.vt = &idem_store_mem_vt;
    *out = &m->base;
    return 0;

fail:
    free(m->buckets);
    free(m);
    return IDEM_ENOMEM;
}

const idem_store_backend_t idem_store_mem_backend = {
    .scheme = "mem",
    .forms = "mem:",
    .caps = IDEM_STORE_CAP_INLINE_READ,
    .open = idem_store_mem_open,
    .check_url = idem_store_mem_check_url,
};
