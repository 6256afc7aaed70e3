/*
 * store_int.h — what lib/store/store.c and plan.c share with the backends
 * (mem.c, lmdb.c, redis.c, postgres.c). Not installed; nothing outside
 * lib/store includes it, except tests that need to reach behind the
 * interface. Each function says, as in idem.h, its "Errors:" (every code
 * it can return) and its "Thread safety:".
 *
 * The split of work:
 *
 *   store.c   checks arguments, builds the store key, runs begin()'s
 *             read-only fast path and hands the ops to the backend. A
 *             single call is a batch of one op (idem_store_batch).
 *   plan.c    decides what every write does to one record:
 *             idem_store_plan() maps (operation, bytes stored now) to
 *             (write to make, result to return). It never does I/O.
 *   registry  the backends, by URL scheme (registry.h); gcq.h the
 *             group-commit queue they may share.
 *   backend   a key-value map with atomic transactions: it reads the
 *             current bytes, calls idem_store_plan(), and makes the write
 *             it asks for together with the expiry index, all at once and
 *             durably, or nothing at all. It is handed an array of ops,
 *             carries them out in order and may share one commit among
 *             them.
 *
 * So the decision table lives in one place (lib/core/decide.c), applied in
 * one place (idem_store_plan), and a backend only has to be atomic.
 */
#ifndef IDEM_STORE_INT_H
#define IDEM_STORE_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "idem.h"

/* The store key: the 32-byte scope hash, then the key's bytes. */
#define IDEM_STORE_KEY_MAX (IDEM_HASH_LEN + IDEM_KEY_MAX)

typedef struct {
    size_t len;
    uint8_t bytes[IDEM_STORE_KEY_MAX];
} idem_store_key_t;

/*
 * FNV-1a (64 bits) of the store key, for hash tables.
 * Errors: none. Thread safety: thread-safe.
 */
uint64_t idem_store_key_hash(const idem_store_key_t *k);

/*
 * An encoded record in one allocation, and the header array decoded from
 * it. This is what idem_result_t.mem_ points at: the result's record points
 * into data[] and headers. Free with idem_store_blob_free().
 */
typedef struct {
    idem_header_t *headers; /* malloc'd by idem_record_decode, or NULL */
    size_t len;
    uint8_t data[];
} idem_store_blob_t;

/*
 * Frees blob and its header array (NULL is nothing).
 * Errors: none. Thread safety: thread-safe on distinct blobs.
 */
void idem_store_blob_free(idem_store_blob_t *blob);

/*
 * A blob holding a copy of bytes[0..len), its headers not decoded yet.
 * Errors: none (NULL when out of memory). Thread safety: thread-safe.
 */
idem_store_blob_t *idem_store_blob_copy(const uint8_t *bytes, size_t len);

/*
 * Decodes b into *rec (pointing into b); b keeps the header array.
 * Errors: IDEM_ECORRUPT, IDEM_EVERSION, IDEM_ENOMEM.
 * Thread safety: thread-safe on distinct blobs.
 */
IDEM_MUST_CHECK int idem_store_blob_decode(idem_store_blob_t *b,
                                           idem_record_t *rec);

typedef enum {
    IDEM_STORE_OP_BEGIN = 1,
    IDEM_STORE_OP_COMPLETE,
    IDEM_STORE_OP_RELEASE,
    IDEM_STORE_OP_DELETE,
    IDEM_STORE_OP_PRUNE /* run by the backend itself, not planned */
} idem_store_op_kind_t;

typedef enum {
    IDEM_STORE_WRITE_NONE = 0, /* leave the record as it is */
    IDEM_STORE_WRITE_PUT,      /* store op->val under op->key */
    IDEM_STORE_WRITE_DEL       /* remove the record under op->key */
} idem_store_write_t;

/*
 * One write operation on its way through a backend. The caller fills the
 * inputs (the rest zeroed) and keeps the op alive until the backend's
 * write() returns; a backend may carry it in a queue to another thread
 * meanwhile (the LMDB group commit), and may plan it more than once (after
 * a failed batch), resetting it in between with idem_store_op_reset().
 */
typedef struct {
    /* Inputs, all borrowed. */
    idem_store_op_kind_t kind;
    idem_store_key_t key;
    const idem_begin_t *begin;   /* BEGIN */
    uint64_t owner;              /* COMPLETE, RELEASE */
    const idem_response_t *resp; /* COMPLETE */
    uint32_t flags;              /* COMPLETE: OR-ed into the record */
    int64_t now_ms;              /* PRUNE */
    size_t budget;               /* PRUNE */
    /*
     * The store's own clock, set by a backend that has one (a networked
     * store shared by many machines) before it calls idem_store_plan():
     * then the plan measures leases and TTLs by it instead of the caller's
     * begin->now_ms, so gateways with skewed clocks agree. 0: unset, the
     * caller's time rules. An input: idem_store_op_reset() keeps it.
     */
    int64_t store_now_ms;

    /* The plan: set by idem_store_plan(), carried out by the backend. */
    idem_store_write_t write;
    idem_store_blob_t *val; /* PUT: the new record (owned) */
    int had_index;          /* old record's index entry exists */
    int64_t old_index_ms;
    int64_t new_index_ms; /* PUT: index time of the new one */

    /* Results, meaningful once the write is durable. */
    int rc; /* 0 or the operation's own IDEM_E... code */
    idem_begin_outcome_t outcome;
    uint64_t new_owner;
    int first_mismatch;
    int took_over;
    idem_record_t rec;      /* BEGIN: the result, pointing into res */
    idem_store_blob_t *res; /* BEGIN: owned until published */
    size_t removed;         /* PRUNE */
    int more;               /* PRUNE */
} idem_store_op_t;

/*
 * The backend interface. Every function is thread-safe (one store shared
 * by threads), but close. The store errors are those idem.h explains
 * (IDEM_EUNAVAIL, IDEM_EIO, IDEM_EFULL, IDEM_EPERM, IDEM_ENOMEM), each
 * from the backends idem.h names for it.
 *
 * read   calls cb(ctx, bytes, len) with the bytes stored under key, valid
 *        only during the call, from one consistent snapshot, and returns
 *        what cb returns; IDEM_ENOTFOUND (cb not called) when there is no
 *        record, or a store error. What it hands cb is durable (it may
 *        wait for that).
 * read_nowait  may be NULL (read is then used): read that never waits
 *        for the disk, for an event loop; IDEM_EPENDING when the record
 *        is not known durable yet (read would wait for it).
 * write  carries out ops[0], ..., ops[n - 1] in this order, each atomically
 *        and durably and as if it were alone: reads the bytes under
 *        op->key (as the ops before it left them), calls idem_store_plan(),
 *        applies the plan with the expiry index. PRUNE is carried out by
 *        the backend on its own. The ops may share one commit; one op's
 *        failure must not fail another. Each op's verdict is left in
 *        op->rc: 0 (its results are set and its write is durable), its own
 *        verdict (IDEM_ENOTOWNER, IDEM_ENOTFOUND, ...) or a store error; on
 *        any error nothing of that op changed and it holds nothing.
 *        An op whose plan writes nothing costs no commit. A backend of
 *        bounded size may refuse a planned put for room (IDEM_EFULL, the
 *        op unchanged), never a delete: LMDB refuses new claims while
 *        there is still room, to keep it for settling and removing the
 *        records it has (see "Room" in lmdb.c). An op's rc is then 0,
 *        a verdict of idem_store_plan() (IDEM_ENOTOWNER, IDEM_ENOTFOUND,
 *        IDEM_ECORRUPT, IDEM_EVERSION, IDEM_ETOOBIG, IDEM_ENOMEM,
 *        IDEM_EINVAL) or a store error. A PRUNE op's rc is 0 or a store
 *        error (Redis: always 0).
 * usage  fills *out as idem_store_usage() describes; 0 or a store error
 *        (mem: always 0).
 * check  idem_store_check(): 0, or IDEM_EUNAVAIL / IDEM_EIO (LMDB only)
 *        with a sentence in why (cap > 0).
 * identity  idem_store_identity(): what the open recorded.
 * close  frees the handle; no call may be running.
 * plant  tests only, may be NULL: stores the len bytes val under key as
 *        they are, with no plan (its expiry time kept, or 0 for a new
 *        one), so that the contract suite can leave corrupt bytes where a
 *        record was. Returns 0 or a store error (Redis: IDEM_EUNAVAIL).
 */
typedef struct {
    const char *name;
    int (*read)(idem_store_t *store, const idem_store_key_t *key,
                int (*cb)(void *ctx, const uint8_t *val, size_t len),
                void *ctx);
    int (*read_nowait)(idem_store_t *store, const idem_store_key_t *key,
                       int (*cb)(void *ctx, const uint8_t *val, size_t len),
                       void *ctx);
    void (*write)(idem_store_t *store, idem_store_op_t *ops, size_t n);
    int (*usage)(idem_store_t *store, idem_store_usage_t *out);
    int (*check)(idem_store_t *store, char *why, size_t cap);
    void (*identity)(const idem_store_t *store, idem_store_identity_t *out);
    void (*close)(idem_store_t *store);
    int (*plant)(idem_store_t *store, const idem_store_key_t *key,
                 const uint8_t *val, size_t len);
} idem_store_vtable_t;

/* The part of every handle that store.c owns; backends embed it first. */
struct idem_store_s {
    const idem_store_vtable_t *vt;
    unsigned caps; /* IDEM_STORE_CAP_...: the backend's, and what its open
                      set for this handle */
    _Atomic uint64_t token_next; /* owner tokens, see store.c */
    _Atomic uint64_t commits;
    _Atomic uint64_t batched_ops;
};

/* Backends are found through registry.h, each by its URL scheme. */

/*
 * Tests only: stores len bytes under (scope, key) as they are, through the
 * backend's plant hook.
 * Errors: IDEM_EINVAL (store NULL, no plant hook, scope or key out of
 * range); a store error (IDEM_ENOMEM, IDEM_EFULL, IDEM_EPERM, IDEM_EIO,
 * IDEM_EUNAVAIL).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_store_plant(idem_store_t *store,
                                     const idem_hash_t *scope, const char *key,
                                     size_t key_len, const uint8_t *val,
                                     size_t len);

/*
 * Decides what op does to the record stored as (old, old_len) — old is
 * NULL when there is none — and fills op's plan and results. Call with
 * the backend's transaction open; the bytes need only live for the call.
 * Returns 0 or the op's verdict (then the plan is NONE, and op->rc is the
 * verdict too).
 * Errors: IDEM_ENOTOWNER (complete, release: no record, or not in
 * progress under op->owner); IDEM_ENOTFOUND (delete: no record);
 * IDEM_ECORRUPT, IDEM_EVERSION (begin, complete, release: the stored
 * bytes cannot be read; a delete removes them all the same); IDEM_ETOOBIG
 * (the new record over a limit); IDEM_ENOMEM; IDEM_EINVAL (a PRUNE op,
 * which is not planned, or an unknown kind).
 * Thread safety: thread-safe on distinct ops (owner tokens are drawn from
 * the store's atomic counter).
 */
IDEM_MUST_CHECK int idem_store_plan(idem_store_t *store, idem_store_op_t *op,
                                    const uint8_t *old, size_t old_len);

/*
 * What begin() answers for a decision that writes nothing.
 * Errors: none. Thread safety: thread-safe.
 */
idem_begin_outcome_t idem_store_outcome_of(idem_decision_t d);

/*
 * Frees what a plan allocated and clears the plan and results.
 * Errors: none. Thread safety: thread-safe on distinct ops.
 */
void idem_store_op_reset(idem_store_op_t *op);

/* What prune does with one index entry; see idem_store_prune_check(). */
typedef enum {
    IDEM_STORE_PRUNE_REMOVE = 1, /* expired (or unreadable): remove it */
    IDEM_STORE_PRUNE_ORPHAN,     /* the entry is not the record's: drop */
    IDEM_STORE_PRUNE_REINDEX     /* not removable yet: move the entry */
} idem_store_prune_t;

/*
 * Judges the record (val, len) found through an index entry at index_ms,
 * at now_ms (index_ms <= now_ms). *reindex_ms receives the entry's new time
 * for REINDEX. Returns an idem_store_prune_t (> 0); a record that cannot
 * be decoded is REMOVE.
 * Errors: IDEM_ENOMEM.
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_store_prune_check(const uint8_t *val, size_t len,
                                           int64_t index_ms, int64_t now_ms,
                                           int64_t *reindex_ms);

/*
 * The time from which a record may be removed, the key of its expiry
 * index entry: expires_ms, or for an in-progress record the later of
 * expires_ms and lease_until_ms (it is kept while its lease runs).
 * Errors: none. Thread safety: thread-safe.
 */
int64_t idem_store_removable_at(const idem_record_t *rec);

/*
 * a + b for times, saturating instead of overflowing.
 * Errors: none. Thread safety: thread-safe.
 */
int64_t idem_store_time_add(int64_t a, int64_t b);

#endif /* IDEM_STORE_INT_H */
