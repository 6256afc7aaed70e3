/*
 * store.c — the store interface of idem.h: URL checks and opening through
 * the registry, argument checks, the read-only fast path, batches, and
 * handing ops to a backend. The plan every write follows (the decision
 * table turned into writes) is in plan.c, which the backends share.
 *
 * begin(), complete() and release() are batches of one op; a batch moves
 * like this:
 *
 *   idem_store_batch(ops[0..n))
 *     | each op's arguments checked as its single call checks them (a bad
 *     | op gets IDEM_EINVAL, the others go on)
 *     | store key = scope hash + key bytes
 *     v
 *   a begin, on a store whose reads are memory reads (INLINE_READ):
 *     |   backend->read, a snapshot of the record --> idem_decide()
 *     |   REPLAY, IN_PROGRESS, MISMATCH_AGAIN: answered from the snapshot,
 *     |   with no write transaction and no fsync (a snapshot is one
 *     |   consistent state, so the answer is as atomic as any) -- unless
 *     |   an op before it in the batch that goes on has its key: the
 *     |   begin must see that op's write, so it goes on too
 *     |   (a networked store's read is a round trip of its own: its
 *     |   write() answers these from one snapshot of the whole batch,
 *     |   on the store's clock, before it locks anything)
 *     v   CLAIM, MISMATCH_FIRST, STALE, and every complete and release
 *   backend->write(the ops that went on, in order), inside the backend's
 *     |   write transaction (for LMDB, one for the whole batch):
 *     |   idem_store_plan(op, bytes stored now) runs idem_decide() again
 *     |   on what is stored now (at the store's clock, op->store_now_ms,
 *     |   when the backend has one) and yields the record to put or delete
 *     |   and the result to hand back; the backend writes it
 *     v   durable
 *   each op's rc, and a begin's result moved into idem_result_t, which
 *   owns its memory
 *
 * delete() takes the write path directly; lookup() and get() only read.
 * prune() is the backend's own loop over its expiry index, judged record
 * by record by idem_store_prune_check().
 *
 * Owner tokens (plan.c) count on from a getrandom() seed taken here.
 */
#include "registry.h"
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Keys and tokens                                                           */
/* ------------------------------------------------------------------------ */

static uint64_t idem_store_seed(void)
{
    uint64_t seed;
    struct timespec ts;

    if (getrandom(&seed, sizeof(seed), 0) == (ssize_t)sizeof(seed)) {
        return seed;
    }
    /* No entropy source: still distinct per process and per moment. */
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
           ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&ts;
}

static int idem_store_make_key(const idem_hash_t *scope, const char *key,
                               size_t key_len, idem_store_key_t *out)
{
    if (scope == NULL || key == NULL || key_len == 0 ||
        key_len > IDEM_KEY_MAX) {
        return IDEM_EINVAL;
    }
    memcpy(out->bytes, scope->bytes, IDEM_HASH_LEN);
    memcpy(out->bytes + IDEM_HASH_LEN, key, key_len);
    out->len = IDEM_HASH_LEN + key_len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */
/* ------------------------------------------------------------------------ */

int idem_store_open(const char *url, idem_store_t **out)
{
    const idem_store_backend_t *b;
    idem_store_t *s = NULL;
    const char *rest;
    int rc;

    if (url == NULL || out == NULL) {
        return IDEM_EINVAL;
    }
    b = idem_store_backend_find(url, &rest);
    if (b == NULL) {
        return IDEM_EBADURL;
    }
    rc = b->open(url, rest, &s);
    if (rc != 0) {
        return rc;
    }
    s->caps |= b->caps;
    atomic_init(&s->token_next, idem_store_seed());
    atomic_init(&s->commits, 0);
    atomic_init(&s->batched_ops, 0);
    *out = s;
    return 0;
}

int idem_store_url_check(const char *url, char *why, size_t cap)
{
    const idem_store_backend_t *b;
    const char *rest;
    char none[1];

    if (url == NULL || (why == NULL && cap != 0)) {
        return IDEM_EINVAL;
    }
    if (cap == 0) {
        why = none;
        cap = sizeof(none);
    }
    why[0] = '\0';
    b = idem_store_backend_find(url, &rest);
    if (b == NULL) {
        snprintf(why, cap, "unsupported store URL \"%s\" (%s)", url,
                 idem_store_backend_forms());
        return IDEM_EBADURL;
    }
    return b->check_url(rest, why, cap);
}

unsigned idem_store_caps(const idem_store_t *store)
{
    return store->caps;
}

int idem_store_usage(idem_store_t *store, idem_store_usage_t *out)
{
    return store->vt->usage(store, out);
}

int idem_store_check(idem_store_t *store, char *why, size_t cap)
{
    char none[1];

    if (cap == 0 || why == NULL) {
        why = none;
        cap = sizeof(none);
    }
    why[0] = '\0';
    return store->vt->check(store, why, cap);
}

void idem_store_identity(const idem_store_t *store, idem_store_identity_t *out)
{
    store->vt->identity(store, out);
}

void idem_store_close(idem_store_t *store)
{
    if (store != NULL) {
        store->vt->close(store);
    }
}

const char *idem_store_backend(const idem_store_t *store)
{
    return store->vt->name;
}

void idem_store_stats(idem_store_t *store, idem_store_stats_t *out)
{
    out->commits = atomic_load(&store->commits);
    out->batched_ops = atomic_load(&store->batched_ops);
}

void idem_result_free(idem_result_t *res)
{
    if (res == NULL) {
        return;
    }
    idem_store_blob_free(res->mem_);
    memset(res, 0, sizeof(*res));
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

/* What a read callback works on, and what it leaves for its caller. */
typedef struct {
    const idem_begin_t *in;  /* begin's fast path; NULL for lookups */
    int check;               /* lookup: expired records are absent */
    int64_t now_ms;          /* lookup */
    idem_decision_t d;       /* begin's fast path */
    idem_store_blob_t *blob; /* the copied record */
    idem_record_t rec;       /* decoded from blob */
} idem_store_read_t;

/* Copies and decodes the record; decides or checks expiry. */
static int idem_store_read_cb(void *ctx, const uint8_t *val, size_t len)
{
    idem_store_read_t *r = ctx;
    int rc;

    r->blob = idem_store_blob_copy(val, len);
    if (r->blob == NULL) {
        return IDEM_ENOMEM;
    }
    rc = idem_store_blob_decode(r->blob, &r->rec);
    if (rc != 0) {
        goto fail;
    }
    if (r->in != NULL) {
        r->d = idem_decide(&r->rec, r->in->fingerprint, r->in->now_ms);
    } else if (r->check && idem_record_expired(&r->rec, r->now_ms)) {
        rc = IDEM_ENOTFOUND;
        goto fail;
    }
    return 0;

fail:
    idem_store_blob_free(r->blob);
    r->blob = NULL;
    return rc;
}

static int idem_store_read(idem_store_t *store, const idem_hash_t *scope,
                           const char *key, size_t key_len, int check,
                           int nowait, int64_t now_ms, idem_result_t *res)
{
    idem_store_read_t r;
    idem_store_key_t k;
    int rc;

    if (store == NULL || res == NULL) {
        return IDEM_EINVAL;
    }
    rc = idem_store_make_key(scope, key, key_len, &k);
    if (rc != 0) {
        return rc;
    }
    memset(&r, 0, sizeof(r));
    r.check = check;
    r.now_ms = now_ms;
    if (nowait && store->vt->read_nowait != NULL) {
        rc = store->vt->read_nowait(store, &k, idem_store_read_cb, &r);
    } else {
        rc = store->vt->read(store, &k, idem_store_read_cb, &r);
    }
    if (rc != 0) {
        return rc;
    }
    memset(res, 0, sizeof(*res));
    res->record = r.rec;
    res->mem_ = r.blob;
    return 0;
}

int idem_store_lookup(idem_store_t *store, const idem_hash_t *scope,
                      const char *key, size_t key_len, int64_t now_ms,
                      idem_result_t *res)
{
    return idem_store_read(store, scope, key, key_len, 1, 0, now_ms, res);
}

int idem_store_lookup_nowait(idem_store_t *store, const idem_hash_t *scope,
                             const char *key, size_t key_len, int64_t now_ms,
                             idem_result_t *res)
{
    return idem_store_read(store, scope, key, key_len, 1, 1, now_ms, res);
}

int idem_store_get(idem_store_t *store, const idem_hash_t *scope,
                   const char *key, size_t key_len, idem_result_t *res)
{
    return idem_store_read(store, scope, key, key_len, 0, 0, 0, res);
}

/* ------------------------------------------------------------------------ */
/* Writing: begin(), complete() and release(), alone or in a batch           */
/* ------------------------------------------------------------------------ */

/* The argument checks of begin(), but for the store key. */
static int idem_store_begin_check(const idem_begin_t *in)
{
    if (in->fingerprint == NULL || in->ttl_ms <= 0 || in->lease_ms <= 0) {
        return IDEM_EINVAL;
    }
    if (in->on_unknown != IDEM_ON_UNKNOWN_STORE &&
        in->on_unknown != IDEM_ON_UNKNOWN_RELEASE) {
        return IDEM_EINVAL;
    }
    if (in->on_unknown == IDEM_ON_UNKNOWN_STORE &&
        (in->unknown_response == NULL ? in->unknown_make == NULL
                                      : (in->unknown_response->status < 100 ||
                                         in->unknown_response->status > 999))) {
        return IDEM_EINVAL;
    }
    return 0;
}

static int idem_store_response_check(const idem_response_t *resp)
{
    if (resp == NULL || resp->status < 100 || resp->status > 999 ||
        (resp->nheaders && resp->headers == NULL) ||
        (resp->body_len && resp->body == NULL)) {
        return IDEM_EINVAL;
    }
    return 0;
}

/*
 * Fills the inputs of w (zeroed by the caller) from op, with the argument
 * checks of the single call. w borrows op->begin and op->resp.
 * Returns 0 or IDEM_EINVAL.
 */
static int idem_store_op_prepare(const idem_op_t *op, idem_store_op_t *w)
{
    int rc;

    switch (op->kind) {
    case IDEM_OP_BEGIN:
        rc = idem_store_begin_check(&op->begin);
        if (rc != 0) {
            return rc;
        }
        w->kind = IDEM_STORE_OP_BEGIN;
        w->begin = &op->begin;
        return idem_store_make_key(op->begin.scope, op->begin.key,
                                   op->begin.key_len, &w->key);
    case IDEM_OP_COMPLETE:
        rc = idem_store_response_check(op->resp);
        if (rc != 0) {
            return rc;
        }
        w->kind = IDEM_STORE_OP_COMPLETE;
        w->owner = op->owner;
        w->resp = op->resp;
        w->flags = op->flags;
        return idem_store_make_key(op->scope, op->key, op->key_len, &w->key);
    case IDEM_OP_RELEASE:
        w->kind = IDEM_STORE_OP_RELEASE;
        w->owner = op->owner;
        return idem_store_make_key(op->scope, op->key, op->key_len, &w->key);
    default:
        return IDEM_EINVAL;
    }
}

/*
 * begin()'s fast path: what needs no write (REPLAY, IN_PROGRESS, a repeated
 * MISMATCH) is answered from a snapshot, with no write transaction.
 * Returns 1 when answered (*res then owns the record), 0 when w must take
 * the write path, or a store error.
 */
static int idem_store_begin_fast(idem_store_t *store, const idem_store_op_t *w,
                                 idem_result_t *res)
{
    idem_store_read_t r;
    int rc;

    memset(&r, 0, sizeof(r));
    r.in = w->begin;
    rc = store->vt->read(store, &w->key, idem_store_read_cb, &r);
    if (rc == IDEM_ENOTFOUND) {
        return 0;
    }
    if (rc != 0) {
        return rc;
    }
    if (r.d != IDEM_DECIDE_REPLAY && r.d != IDEM_DECIDE_IN_PROGRESS &&
        r.d != IDEM_DECIDE_MISMATCH_AGAIN) {
        idem_store_blob_free(r.blob);
        return 0;
    }
    res->outcome = idem_store_outcome_of(r.d);
    res->record = r.rec;
    res->mem_ = r.blob;
    return 1;
}

/* Moves the result of a BEGIN op carried out by the backend into *res. */
static void idem_store_begin_result(idem_store_op_t *w, idem_result_t *res)
{
    res->outcome = w->outcome;
    res->owner = w->new_owner;
    res->first_mismatch = w->first_mismatch;
    res->took_over = w->took_over;
    res->record = w->rec;
    res->mem_ = w->res;
    if (w->val == w->res) {
        w->val = NULL;
    }
    w->res = NULL;
}

/*
 * The working memory of a batch: the ops handed to the backend, where each
 * came from, and a set of their keys (open addressing, slot = index + 1,
 * 0 when empty) that tells a begin whether an op before it in the batch
 * may have changed its record — then its fast-path snapshot would be too
 * early, and it takes the write path to see the batch in order.
 */
typedef struct {
    idem_store_op_t *w; /* room for n ops */
    size_t *from;       /* w[k] carries ops[from[k]] */
    size_t *slots;      /* NULL for a batch of one */
    size_t mask;        /* slots has mask + 1 entries, a power of two */
} idem_store_batch_t;

/* The slot that holds key k among the write-path ops, or the free one. */
static size_t idem_store_batch_slot(const idem_store_batch_t *b,
                                    const idem_store_key_t *k)
{
    size_t i = (size_t)idem_store_key_hash(k) & b->mask;

    while (b->slots[i] != 0) {
        const idem_store_key_t *o = &b->w[b->slots[i] - 1].key;
        if (o->len == k->len && memcmp(o->bytes, k->bytes, k->len) == 0) {
            break;
        }
        i = (i + 1) & b->mask;
    }
    return i;
}

/*
 * Runs ops[0..n) with b's memory: an op with bad arguments gets
 * IDEM_EINVAL, a begin that the fast path answers is done at once, and
 * every other op goes to the backend, all in one call, in order. Sets
 * every op's rc and result.
 */
static void idem_store_batch_run(idem_store_t *store, idem_op_t *ops, size_t n,
                                 idem_store_batch_t *b)
{
    size_t m = 0, slot = 0;
    int rc;

    for (size_t i = 0; i < n; i++) {
        idem_store_op_t *w = &b->w[m];

        memset(&ops[i].result, 0, sizeof(ops[i].result));
        memset(w, 0, sizeof(*w));
        ops[i].rc = idem_store_op_prepare(&ops[i], w);
        if (ops[i].rc != 0) {
            continue;
        }
        if (b->slots != NULL) {
            slot = idem_store_batch_slot(b, &w->key);
        }
        if (w->kind == IDEM_STORE_OP_BEGIN &&
            (store->caps & IDEM_STORE_CAP_INLINE_READ) &&
            (b->slots == NULL || b->slots[slot] == 0)) {
            rc = idem_store_begin_fast(store, w, &ops[i].result);
            if (rc != 0) {
                ops[i].rc = rc < 0 ? rc : 0;
                continue;
            }
        }
        if (b->slots != NULL && b->slots[slot] == 0) {
            b->slots[slot] = m + 1;
        }
        b->from[m++] = i;
    }
    if (m == 0) {
        return;
    }

    store->vt->write(store, b->w, m);

    for (size_t k = 0; k < m; k++) {
        idem_op_t *op = &ops[b->from[k]];
        idem_store_op_t *w = &b->w[k];

        op->rc = w->rc;
        if (op->rc == 0 && w->kind == IDEM_STORE_OP_BEGIN) {
            idem_store_begin_result(w, &op->result);
        }
        idem_store_op_reset(w);
    }
}

/*
 * Each op is checked as its single call checks it: one with bad arguments
 * gets IDEM_EINVAL and changes nothing, and the others run. IDEM_EINVAL
 * from the batch itself means no store or no ops: nothing ran. Every op
 * that ran has its rc, and its result is zeroed unless it is a begin that
 * succeeded, so idem_result_free() is safe on every op. Out of memory for
 * the batch's working memory, the ops run one by one: slower, never
 * failed for it.
 */
int idem_store_batch(idem_store_t *store, idem_op_t *ops, size_t n)
{
    idem_store_op_t one;
    size_t one_from, nslots = 2;
    idem_store_batch_t alone = {&one, &one_from, NULL, 0}, b = {0};

    if (store == NULL || (ops == NULL && n > 0)) {
        return IDEM_EINVAL;
    }
    if (n <= 1) {
        idem_store_batch_run(store, ops, n, &alone);
        return 0;
    }

    if (n < SIZE_MAX / 4 / sizeof(*b.w)) {
        while (nslots < n * 2) {
            nslots *= 2;
        }
        b.w = malloc(n * sizeof(*b.w));
        b.from = malloc(n * sizeof(*b.from));
        b.slots = calloc(nslots, sizeof(*b.slots));
        b.mask = nslots - 1;
    }
    if (b.w != NULL && b.from != NULL && b.slots != NULL) {
        idem_store_batch_run(store, ops, n, &b);
    } else {
        for (size_t i = 0; i < n; i++) {
            idem_store_batch_run(store, &ops[i], 1, &alone);
        }
    }
    free(b.w);
    free(b.from);
    free(b.slots);
    return 0;
}

int idem_store_begin(idem_store_t *store, const idem_begin_t *in,
                     idem_result_t *res)
{
    idem_op_t op;
    int rc;

    if (in == NULL || res == NULL) {
        return IDEM_EINVAL;
    }
    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_BEGIN;
    op.begin = *in;
    rc = idem_store_batch(store, &op, 1);
    if (rc == 0) {
        rc = op.rc;
    }
    if (rc == 0) {
        *res = op.result;
    }
    return rc;
}

int idem_store_complete(idem_store_t *store, const idem_hash_t *scope,
                        const char *key, size_t key_len, uint64_t owner,
                        const idem_response_t *resp, uint32_t flags)
{
    idem_op_t op;
    int rc;

    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_COMPLETE;
    op.scope = scope;
    op.key = key;
    op.key_len = key_len;
    op.owner = owner;
    op.resp = resp;
    op.flags = flags;
    rc = idem_store_batch(store, &op, 1);
    return rc != 0 ? rc : op.rc;
}

int idem_store_release(idem_store_t *store, const idem_hash_t *scope,
                       const char *key, size_t key_len, uint64_t owner)
{
    idem_op_t op;
    int rc;

    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_RELEASE;
    op.scope = scope;
    op.key = key;
    op.key_len = key_len;
    op.owner = owner;
    rc = idem_store_batch(store, &op, 1);
    return rc != 0 ? rc : op.rc;
}

/* ------------------------------------------------------------------------ */
/* Admin writes                                                              */
/* ------------------------------------------------------------------------ */

int idem_store_delete(idem_store_t *store, const idem_hash_t *scope,
                      const char *key, size_t key_len)
{
    idem_store_op_t op;
    int rc;

    if (store == NULL) {
        return IDEM_EINVAL;
    }
    memset(&op, 0, sizeof(op));
    rc = idem_store_make_key(scope, key, key_len, &op.key);
    if (rc != 0) {
        return rc;
    }
    op.kind = IDEM_STORE_OP_DELETE;
    store->vt->write(store, &op, 1);
    rc = op.rc;
    idem_store_op_reset(&op);
    return rc;
}

int idem_store_plant(idem_store_t *store, const idem_hash_t *scope,
                     const char *key, size_t key_len, const uint8_t *val,
                     size_t len)
{
    idem_store_key_t k;
    int rc;

    if (store == NULL || store->vt->plant == NULL) {
        return IDEM_EINVAL;
    }
    rc = idem_store_make_key(scope, key, key_len, &k);
    return rc != 0 ? rc : store->vt->plant(store, &k, val, len);
}

int idem_store_prune(idem_store_t *store, int64_t now_ms, size_t budget,
                     size_t *removed, int *more)
{
    idem_store_op_t op;

    if (store == NULL || removed == NULL || more == NULL) {
        return IDEM_EINVAL;
    }
    memset(&op, 0, sizeof(op));
    op.kind = IDEM_STORE_OP_PRUNE;
    op.now_ms = now_ms;
    op.budget = budget;
    store->vt->write(store, &op, 1);
    if (op.rc != 0) {
        return op.rc;
    }
    *removed = op.removed;
    *more = op.more;
    return 0;
}
