/*
 * lmdb.c — the "lmdb:PATH[?opts]" store: records in an LMDB environment in
 * the directory PATH, durable, shared by every process that opens it.
 *
 * Two named databases:
 *
 *   "records"  store key (scope hash + key bytes)     -> encoded record
 *   "expiry"   removable-at (8 bytes, big-endian,
 *              sign bit flipped) + store key          -> empty
 *
 * The expiry index orders records by the time they may be removed
 * (idem_store_removable_at: expires_ms, or the lease's end for an
 * in-progress record still leased), so prune() reads it from the front and
 * stops at the first entry in the future. Every write of a record moves its
 * index entry in the same transaction.
 *
 * Reads (lookup, get, begin's fast path) use a read-only transaction of
 * their own: no lock of ours, never blocked by writers. Writes go through
 * the group-commit queue (gcq.h), so that many threads share one
 * transaction and one fsync. A caller brings an array of ops: one for
 * begin(), complete(), release(), delete() and prune(), n for
 * idem_store_batch(); its ops stay together and in order. The batch the
 * queue hands over runs here:
 *
 *   +--------------- one write transaction ----------------+
 *   | a1: get, idem_store_plan(), put/del record + index   |
 *   | b1, b2, b3: the same, each seeing the writes before  |
 *   | c1: the same                                         |
 *   +-------- mdb_txn_commit: one durable commit ----------+
 *       | success: every op's result stands (an op that wrote nothing,
 *       | e.g. IDEM_ENOTOWNER, costs nothing; if no op wrote, the
 *       | transaction is aborted: no commit at all)
 *       | failure (map full, I/O error, ...): abort, then run each op
 *       | alone in its own transaction, in the same order, so one op's
 *       | failure cannot fail the others and nothing half-written remains
 *
 * With group_commit=0 every op runs alone, a batch's ops too: one
 * transaction and one commit each (for comparison in the benchmark).
 *
 * Processes: LMDB's lock file serializes the writers of all processes, so
 * several nginx workers and gateways on one host may share PATH. A handle
 * must be opened after fork() in the process that uses it, and a child must
 * neither use nor close a handle its parent opened. Every process should
 * open PATH with the same map_size: the map has a fixed size and a
 * transaction that would grow past it fails with IDEM_EFULL, leaving
 * nothing behind. This handle never grows the map; if another process
 * opened PATH with a larger map and filled it past this handle's size,
 * this handle's calls fail with IDEM_EUNAVAIL (MDB_MAP_RESIZED) until it
 * is reopened with that size.
 *
 * Map size: fixed and large (IDEM_STORE_LMDB_DEFAULT_MAP_SIZE, 128 GiB),
 * not grown on MDB_MAP_FULL. Without MDB_WRITEMAP the map is a read-only
 * mapping of a file that grows by its writes only, so an unused map costs
 * address space (of 128 TiB on x86-64) and no disk or memory. Measured
 * (200,000 records of a 100-byte JSON response with three headers, random
 * 36-byte keys): 706 bytes of map per record, 597 in "records" (leaves
 * about 70% full, as random inserts leave a B-tree) and 89 in "expiry"
 * (appended in time order), so 128 GiB holds 190 million such records:
 * 2,200 new keys/s for 24 h (the contract suite measures 744 bytes on
 * 5,000 records, whose trees are less settled, and checks the default
 * against SPEC's 1,000 keys/s with that). Growing the map instead would
 * need mdb_env_set_mapsize() with no transaction running in this process
 * (a lock around every read of the event loop) and every other process of
 * the store to catch MDB_MAP_RESIZED and do the same: a fixed size shared
 * by all is simpler and as cheap. The disk is the real limit: df shows
 * what is written, not the map, and a disk that fills before the map
 * makes commits fail with ENOSPC, answered as IDEM_EFULL the same way.
 * Idle files are not shrunk: pages freed by prune are reused.
 *
 * Room: a map that fills up must still let records go. Every write, a
 * delete too, needs fresh pages (LMDB copies each page it changes), and
 * the pages the last commit freed cannot be reused by the next one, so on
 * a map filled to the last page nothing could ever be removed again.
 * Writes are therefore admitted by how much of the map is free, measured
 * inside their transaction (see idem_store_lmdb_room):
 *
 *   new claims       need the whole reserve left after them: these are
 *                    what fills the map, and what is refused first
 *   other puts       (complete, the first-mismatch flag, stale
 *                    settlement) settle what was claimed: they may use
 *                    the reserve down to its floor (half of it)
 *   release, delete  only free space: never refused for room
 *   and prune
 *
 * A write refused for room gets IDEM_EFULL and changes nothing; the other
 * ops of its batch go on. So once claims are refused, outstanding claims
 * can still be completed (with small responses at least), and delete and
 * prune work; once expired records are pruned, claims are admitted again.
 * With the log, pages freed since its last checkpoint wait for the next
 * one (its pin sees them), so a write that LMDB finds no pages for takes a
 * checkpoint and is tried once more.
 *
 * Durability: every commit is durable before the calls it carries return.
 * By default through the write-ahead log (lmdb_wal.h): the transaction's
 * puts and deletes go to one frame, appended and fdatasynced before a
 * MDB_NOSYNC commit, so a commit is one contiguous write and one sync;
 * checkpoints make data.mdb durable again now and then. With wal=0, LMDB's
 * own commit: two synchronous writes, the dirty pages (fdatasync, about
 * one leaf of "records" plus part of the path to it per op, with random
 * keys), then the meta page that makes them current. sync=0 sets
 * MDB_NOSYNC without the log, for benchmarks only. Either way a batch
 * costs little more per op than a single write costs in all.
 */
#include "gcq.h"
#include "lmdb_names.h"
#include "lmdb_wal.h"
#include "registry.h"
#include "store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#define IDEM_STORE_LMDB_MAX_READERS 1024
#define IDEM_STORE_LMDB_IKEY_MAX    (8 + IDEM_STORE_KEY_MAX)

/* LMDB's free list, the database that mdb_stat(1) -f reads as dbi 0. */
#define IDEM_STORE_LMDB_FREE_DBI 0
/* The meta pages at the start of every environment. */
#define IDEM_STORE_LMDB_META_PAGES 2

/*
 * The reserve, in pages: the free pages a claim must leave. It has to hold
 * (a) the pages that are free but not reusable yet, those freed by the
 * last commit and by the running one (one or two commits' copies of the
 * pages they touched: a few per op, hundreds for a large batch or prune)
 * and (b) the settling of the claims outstanding when claims start to be
 * refused: each complete writes its response, an error response of the
 * gateway takes a page or two. 1/32 of the map (about 3%) covers both with
 * a wide margin (32 MiB of 1 GiB), up to RESERVE_MAX pages (128 MiB with
 * 4 KiB pages: a thousand times what a batch copies) on a large map; a
 * small map gets at least RESERVE_MIN pages (256 KiB with 4 KiB pages: a
 * few dozen small completes), but never more than half the map, so that a
 * tiny map (tests use 64 KiB) still holds some records.
 */
#define IDEM_STORE_LMDB_RESERVE_MIN   64
#define IDEM_STORE_LMDB_RESERVE_MAX   32768
#define IDEM_STORE_LMDB_RESERVE_SHIFT 5

/* The bounds of map_size: a few pages, and what a 64-bit process maps. */
#define IDEM_STORE_LMDB_MAP_MIN ((uint64_t)64 << 10)
#define IDEM_STORE_LMDB_MAP_MAX ((uint64_t)16384 << 30)

typedef struct {
    idem_store_t base; /* first: the handle callers hold */
    MDB_env *env;
    MDB_dbi records;
    MDB_dbi expiry;
    MDB_dbi main; /* the unnamed database, which holds the other two */
    int group_commit;
    size_t psize;         /* the page size */
    size_t map_pages;     /* the map's size in pages */
    size_t reserve_pages; /* what a claim must leave free */
    size_t floor_pages;   /* what other puts must leave free */
    char *path;           /* the directory (malloc'd) */
    struct stat data_st;  /* data.mdb and lock.mdb as opened, for check */
    struct stat lock_st;

    idem_store_gcq_t queue; /* the group-commit queue */
    int wal_on;             /* commits go through the log (lmdb_wal.h) */
    idem_store_wal_t wal;
} idem_store_lmdb_t;

/* The databases as the log names them. */
#define IDEM_STORE_LMDB_REC 0
#define IDEM_STORE_LMDB_EXP 1

/* The options of an "lmdb:" URL. */
typedef struct {
    char *path; /* malloc'd */
    size_t map_size;
    int group_commit;
    int sync;
    int wal;
    uint64_t wal_size;
} idem_store_lmdb_conf_t;

/* The log's default size between checkpoints, and its bounds. */
#define IDEM_STORE_LMDB_WAL_SIZE     ((uint64_t)8 << 20)
#define IDEM_STORE_LMDB_WAL_SIZE_MIN ((uint64_t)64 << 10)
#define IDEM_STORE_LMDB_WAL_SIZE_MAX ((uint64_t)1 << 30)

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Maps an LMDB return code or errno value to an IDEM_E... code. */
static int idem_store_lmdb_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return IDEM_EFULL;
    case EACCES:
    case EPERM:
    case EROFS:
        return IDEM_EPERM;
    case ENOMEM:
        return IDEM_ENOMEM;
    case MDB_READERS_FULL:
    case MDB_MAP_RESIZED:
    case MDB_PANIC:
    case EAGAIN:
    case EBUSY:
        return IDEM_EUNAVAIL;
    case EIO:
    default:
        return IDEM_EIO;
    }
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * A record is handed to cb only once it is durable: with the log, the
 * commit that wrote it may still be syncing (lmdb_wal.h, judged by its
 * key's slot); then the read syncs the log first, or with wait 0 returns
 * IDEM_EPENDING (the caller asks again where it may wait). A record not
 * there needs no sync: nothing is answered from it.
 */
static int idem_store_lmdb_get(idem_store_t *store, const idem_store_key_t *k,
                               int (*cb)(void *ctx, const uint8_t *val,
                                         size_t len),
                               void *ctx, int wait)
{
    idem_store_lmdb_t *s = (idem_store_lmdb_t *)store;
    MDB_txn *txn;
    MDB_val key = {k->len, (void *)k->bytes}, val;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return idem_store_lmdb_err(rc);
    }
    rc = mdb_get(txn, s->records, &key, &val);
    if (rc == 0 && s->wal_on) {
        rc = idem_store_wal_readable(&s->wal, txn, &key, wait);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return rc == EAGAIN && !wait ? IDEM_EPENDING
                                         : idem_store_lmdb_err(rc);
        }
    }
    if (rc == 0) {
        rc = cb(ctx, val.mv_data, val.mv_size);
    } else if (rc == MDB_NOTFOUND) {
        rc = IDEM_ENOTFOUND;
    } else {
        rc = idem_store_lmdb_err(rc);
    }
    mdb_txn_abort(txn);
    return rc;
}

static int idem_store_lmdb_read(idem_store_t *store, const idem_store_key_t *k,
                                int (*cb)(void *ctx, const uint8_t *val,
                                          size_t len),
                                void *ctx)
{
    return idem_store_lmdb_get(store, k, cb, ctx, 1);
}

static int idem_store_lmdb_read_nowait(
    idem_store_t *store, const idem_store_key_t *k,
    int (*cb)(void *ctx, const uint8_t *val, size_t len), void *ctx)
{
    return idem_store_lmdb_get(store, k, cb, ctx, 0);
}

/* ------------------------------------------------------------------------ */
/* Write transactions: through the log, or LMDB's own durable commit         */
/* ------------------------------------------------------------------------ */

static int idem_store_lmdb_begin(idem_store_lmdb_t *s, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, 0, txn);

    if (rc == 0 && s->wal_on) {
        idem_store_wal_begin(&s->wal, mdb_txn_id(*txn));
    }
    return rc;
}

static MDB_dbi idem_store_lmdb_dbi(const idem_store_lmdb_t *s, unsigned db)
{
    return db == IDEM_STORE_LMDB_REC ? s->records : s->expiry;
}

static int idem_store_lmdb_put(idem_store_lmdb_t *s, MDB_txn *txn, unsigned db,
                               MDB_val *key, MDB_val *val)
{
    int rc = mdb_put(txn, idem_store_lmdb_dbi(s, db), key, val, 0);

    if (rc == 0 && s->wal_on) {
        idem_store_wal_record(&s->wal, db, key, val);
    }
    return rc;
}

/* Deletes key from db; a key that is not there is no error. */
static int idem_store_lmdb_del(idem_store_lmdb_t *s, MDB_txn *txn, unsigned db,
                               MDB_val *key)
{
    int rc = mdb_del(txn, idem_store_lmdb_dbi(s, db), key, NULL);

    if (rc == 0 && s->wal_on) {
        idem_store_wal_record(&s->wal, db, key, NULL);
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * Ends txn: commits it if it wrote, else aborts it. With the log, what it
 * wrote or read is durable only once idem_store_lmdb_settle() is given
 * *settle (the writer lock is free by then: another commit may run while
 * this one syncs); without, LMDB's commit was durable.
 */
static int idem_store_lmdb_end(idem_store_lmdb_t *s, MDB_txn *txn, int wrote,
                               uint64_t *settle)
{
    *settle = 0;
    if (!wrote) {
        if (s->wal_on) {
            *settle = mdb_txn_id(txn) - 1; /* the snapshot it read */
        }
        mdb_txn_abort(txn);
        return 0;
    }
    return s->wal_on ? idem_store_wal_commit(&s->wal, txn, settle)
                     : mdb_txn_commit(txn);
}

static int idem_store_lmdb_settle(idem_store_lmdb_t *s, uint64_t settle)
{
    return s->wal_on ? idem_store_wal_settle(&s->wal, settle) : 0;
}

/* ------------------------------------------------------------------------ */
/* One operation inside a write transaction                                  */
/* ------------------------------------------------------------------------ */

/* Builds the expiry index key of (at_ms, store key) into buf. */
static MDB_val idem_store_lmdb_ikey(uint8_t *buf, int64_t at_ms,
                                    const uint8_t *skey, size_t skey_len)
{
    uint64_t u = (uint64_t)at_ms ^ ((uint64_t)1 << 63);
    MDB_val v;

    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)(u >> (56 - 8 * i));
    }
    memcpy(buf + 8, skey, skey_len);
    v.mv_size = 8 + skey_len;
    v.mv_data = buf;
    return v;
}

static int64_t idem_store_lmdb_ikey_time(const uint8_t *buf)
{
    uint64_t u = 0;

    for (int i = 0; i < 8; i++) {
        u = (u << 8) | buf[i];
    }
    return (int64_t)(u ^ ((uint64_t)1 << 63));
}

/*
 * Sets *out to the free pages of the map as txn sees it: the pages never
 * used and the pages on LMDB's free list, counting the batch's writes so
 * far. LMDB keeps the page count of every tree, and each page below the
 * high-water mark is a meta page, a page of a tree or a free one, so this
 * reads four counters instead of walking the free list: cheap enough for
 * every put. It counts as free the pages that LMDB cannot reuse yet (freed
 * by the last commit, by this transaction or while a reader still sees
 * them); the reserve is sized for the first two, and our readers are
 * short. Returns 0 or an LMDB code.
 */
static int idem_store_lmdb_free_pages(idem_store_lmdb_t *s, MDB_txn *txn,
                                      size_t *out)
{
    const MDB_dbi dbis[] = {IDEM_STORE_LMDB_FREE_DBI, s->main, s->records,
                            s->expiry};
    size_t used = IDEM_STORE_LMDB_META_PAGES;
    MDB_stat st;
    int rc;

    for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
        rc = mdb_stat(txn, dbis[i], &st);
        if (rc != 0) {
            return rc;
        }
        used += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    *out = used < s->map_pages ? s->map_pages - used : 0;
    return 0;
}

/*
 * Whether op's planned put may be made: a claim must leave the reserve
 * free, any other put the floor (see "Room" at the top). The put is
 * counted as its value's size in pages plus one, for the overflow pages of
 * a large value or the split of a leaf. Sets *fits; returns 0 or an LMDB
 * code.
 */
static int idem_store_lmdb_room(idem_store_lmdb_t *s, MDB_txn *txn,
                                const idem_store_op_t *op, int *fits)
{
    size_t free_pages, need;
    int rc;

    rc = idem_store_lmdb_free_pages(s, txn, &free_pages);
    if (rc != 0) {
        return rc;
    }
    need = op->kind == IDEM_STORE_OP_BEGIN && op->outcome == IDEM_BEGIN_CLAIMED
               ? s->reserve_pages
               : s->floor_pages;
    need += 1 + (op->val->len + s->psize - 1) / s->psize;
    *fits = free_pages >= need;
    return 0;
}

/*
 * Plans op against the stored record and applies the plan with its index
 * entry. Returns 0 or an LMDB/errno code (the transaction must then be
 * aborted); the op's own verdict is left in op->rc. *wrote is set when
 * something was written.
 */
static int idem_store_lmdb_apply(idem_store_lmdb_t *s, MDB_txn *txn,
                                 idem_store_op_t *op, int *wrote)
{
    uint8_t ibuf[IDEM_STORE_LMDB_IKEY_MAX];
    MDB_val key = {op->key.len, op->key.bytes}, val, ikey;
    MDB_val empty = {0, NULL};
    int rc, moved, fits;

    rc = mdb_get(txn, s->records, &key, &val);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return rc;
    }
    if (rc == MDB_NOTFOUND) {
        val.mv_data = NULL;
        val.mv_size = 0;
    }
    if (idem_store_plan(&s->base, op, val.mv_data, val.mv_size) != 0 ||
        op->write == IDEM_STORE_WRITE_NONE) {
        return 0;
    }
    if (op->write == IDEM_STORE_WRITE_PUT) {
        rc = idem_store_lmdb_room(s, txn, op, &fits);
        if (rc != 0) {
            return rc;
        }
        if (!fits) {
            idem_store_op_reset(op);
            op->rc = IDEM_EFULL;
            return 0;
        }
    }

    moved = op->write == IDEM_STORE_WRITE_DEL || !op->had_index ||
            op->old_index_ms != op->new_index_ms;
    if (op->had_index && moved) {
        ikey = idem_store_lmdb_ikey(ibuf, op->old_index_ms, op->key.bytes,
                                    op->key.len);
        rc = idem_store_lmdb_del(s, txn, IDEM_STORE_LMDB_EXP, &ikey);
        if (rc != 0) {
            return rc;
        }
    }
    if (op->write == IDEM_STORE_WRITE_PUT) {
        val.mv_size = op->val->len;
        val.mv_data = op->val->data;
        rc = idem_store_lmdb_put(s, txn, IDEM_STORE_LMDB_REC, &key, &val);
        if (rc != 0) {
            return rc;
        }
        if (moved) {
            ikey = idem_store_lmdb_ikey(ibuf, op->new_index_ms, op->key.bytes,
                                        op->key.len);
            rc =
                idem_store_lmdb_put(s, txn, IDEM_STORE_LMDB_EXP, &ikey, &empty);
            if (rc != 0) {
                return rc;
            }
        }
    } else {
        rc = idem_store_lmdb_del(s, txn, IDEM_STORE_LMDB_REC, &key);
        if (rc != 0) {
            return rc;
        }
    }
    *wrote = 1;
    return 0;
}

/* Copies the first index entry into buf. Returns 0, MDB_NOTFOUND, ... */
static int idem_store_lmdb_first(idem_store_lmdb_t *s, MDB_txn *txn,
                                 uint8_t *buf, size_t *len)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    rc = mdb_cursor_open(txn, s->expiry, &cur);
    if (rc != 0) {
        return rc;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc == 0) {
        if (k.mv_size > IDEM_STORE_LMDB_IKEY_MAX) {
            rc = MDB_CORRUPTED;
        } else {
            memcpy(buf, k.mv_data, k.mv_size);
            *len = k.mv_size;
        }
    }
    mdb_cursor_close(cur);
    return rc;
}

/*
 * Removes at most op->budget expired records, from the front of the expiry
 * index. Each entry looked at costs one from the budget, whether its record
 * goes, its entry was an orphan, or it is moved on, so the work is bounded.
 */
static int idem_store_lmdb_prune(idem_store_lmdb_t *s, MDB_txn *txn,
                                 idem_store_op_t *op, int *wrote)
{
    uint8_t ibuf[IDEM_STORE_LMDB_IKEY_MAX], nbuf[IDEM_STORE_LMDB_IKEY_MAX];
    size_t visited = 0, ilen = 0;
    MDB_val ikey, skey = {0, NULL}, val, nkey;
    MDB_val empty = {0, NULL};
    int64_t at, re = 0;
    int rc, verdict;

    op->removed = 0;
    op->more = 0;
    for (;;) {
        rc = idem_store_lmdb_first(s, txn, ibuf, &ilen);
        if (rc == MDB_NOTFOUND) {
            break;
        }
        if (rc != 0) {
            return rc;
        }
        at = ilen >= 8 ? idem_store_lmdb_ikey_time(ibuf) : INT64_MIN;
        if (at > op->now_ms) {
            break;
        }
        if (visited == op->budget) {
            op->more = 1;
            break;
        }
        visited++;
        *wrote = 1;
        ikey.mv_size = ilen;
        ikey.mv_data = ibuf;
        verdict = IDEM_STORE_PRUNE_ORPHAN;
        if (ilen > 8) {
            skey.mv_size = ilen - 8;
            skey.mv_data = ibuf + 8;
            rc = mdb_get(txn, s->records, &skey, &val);
            if (rc == 0) {
                verdict = idem_store_prune_check(val.mv_data, val.mv_size, at,
                                                 op->now_ms, &re);
                if (verdict < 0) {
                    return ENOMEM;
                }
            } else if (rc != MDB_NOTFOUND) {
                return rc;
            }
        }
        if (verdict == IDEM_STORE_PRUNE_REMOVE) {
            rc = idem_store_lmdb_del(s, txn, IDEM_STORE_LMDB_REC, &skey);
            if (rc != 0) {
                return rc;
            }
            op->removed++;
        }
        rc = idem_store_lmdb_del(s, txn, IDEM_STORE_LMDB_EXP, &ikey);
        if (rc != 0) {
            return rc;
        }
        if (verdict == IDEM_STORE_PRUNE_REINDEX) {
            nkey = idem_store_lmdb_ikey(nbuf, re, ibuf + 8, ilen - 8);
            rc =
                idem_store_lmdb_put(s, txn, IDEM_STORE_LMDB_EXP, &nkey, &empty);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

static int idem_store_lmdb_run_one(idem_store_lmdb_t *s, MDB_txn *txn,
                                   idem_store_op_t *op, int *wrote)
{
    if (op->kind == IDEM_STORE_OP_PRUNE) {
        idem_store_op_reset(op);
        return idem_store_lmdb_prune(s, txn, op, wrote);
    }
    return idem_store_lmdb_apply(s, txn, op, wrote);
}

/* Whether a prune that failed with rc may be tried again with less work. */
static int idem_store_lmdb_prune_shrinks(const idem_store_op_t *op, int rc)
{
    return op->kind == IDEM_STORE_OP_PRUNE && op->budget > 1 &&
           (rc == MDB_MAP_FULL || rc == MDB_TXN_FULL);
}

/*
 * Runs op in a transaction of its own; its result is left in op->rc. A
 * prune that does not fit (its deletes copy every page they touch, and a
 * large budget touches many) is tried again with half the budget, down to
 * one record: a nearly full map is then emptied a little at a time, and
 * *more says that work is left.
 */
static void idem_store_lmdb_run_alone(idem_store_lmdb_t *s, idem_store_op_t *op,
                                      idem_store_gcq_waiter_t *lead)
{
    size_t budget = op->budget;
    MDB_txn *txn;
    uint64_t settle = 0;
    int rc, wrote, freed = 0;

    for (;;) {
        wrote = 0;
        rc = idem_store_lmdb_begin(s, &txn);
        if (rc != 0) {
            break;
        }
        rc = idem_store_lmdb_run_one(s, txn, op, &wrote);
        if (rc != 0) {
            mdb_txn_abort(txn);
        } else {
            rc = idem_store_lmdb_end(s, txn, wrote, &settle);
        }
        if (rc == MDB_MAP_FULL && s->wal_on && !freed) {
            /* the pin may hold pages that a checkpoint frees */
            freed = 1;
            if (idem_store_wal_checkpoint(&s->wal) == 0) {
                idem_store_op_reset(op);
                continue;
            }
        }
        if (!idem_store_lmdb_prune_shrinks(op, rc)) {
            break;
        }
        op->budget /= 2;
    }
    op->budget = budget;
    if (rc == 0) {
        if (lead != NULL) {
            idem_store_gcq_handoff(&s->queue, lead);
        }
        rc = idem_store_lmdb_settle(s, settle);
    }
    if (rc != 0) {
        goto fail;
    }
    if (wrote) {
        atomic_fetch_add(&s->base.commits, 1);
        atomic_fetch_add(&s->base.batched_ops, 1);
    }
    return;

fail:
    idem_store_op_reset(op);
    op->rc = idem_store_lmdb_err(rc);
}

/*
 * Runs the ops of a chain of waiters in one transaction, falling back to
 * one transaction per op if the batch cannot be committed. Each op's
 * result is in op->rc. A batch that wrote nothing is aborted: no commit.
 */
static void idem_store_lmdb_run_batch(void *backend,
                                      idem_store_gcq_waiter_t *batch)
{
    idem_store_lmdb_t *s = backend;
    idem_store_gcq_waiter_t *w;
    MDB_txn *txn;
    uint64_t n = 0, settle;
    int rc, wrote;

    if (batch->next == NULL && batch->n == 1) {
        idem_store_lmdb_run_alone(s, batch->ops, batch);
        return;
    }
    rc = idem_store_lmdb_begin(s, &txn);
    if (rc != 0) {
        goto alone;
    }
    for (w = batch; w != NULL; w = w->next) {
        for (size_t i = 0; i < w->n; i++) {
            wrote = 0;
            rc = idem_store_lmdb_run_one(s, txn, &w->ops[i], &wrote);
            if (rc != 0) {
                mdb_txn_abort(txn);
                goto alone;
            }
            n += (uint64_t)wrote;
        }
    }
    rc = idem_store_lmdb_end(s, txn, n > 0, &settle);
    if (rc != 0) {
        goto alone;
    }
    /* the next batch may commit while this one syncs */
    idem_store_gcq_handoff(&s->queue, batch);
    rc = idem_store_lmdb_settle(s, settle);
    if (rc != 0) {
        /* committed, not known durable: nothing is acknowledged */
        for (w = batch; w != NULL; w = w->next) {
            for (size_t i = 0; i < w->n; i++) {
                idem_store_op_reset(&w->ops[i]);
                w->ops[i].rc = idem_store_lmdb_err(rc);
            }
        }
        return;
    }
    if (n > 0) {
        atomic_fetch_add(&s->base.commits, 1);
        atomic_fetch_add(&s->base.batched_ops, n);
    }
    return;

alone:
    for (w = batch; w != NULL; w = w->next) {
        for (size_t i = 0; i < w->n; i++) {
            idem_store_op_reset(&w->ops[i]);
            idem_store_lmdb_run_alone(s, &w->ops[i], batch);
        }
    }
}

/* Carries out ops through the group-commit queue, or one by one. */
static void idem_store_lmdb_write(idem_store_t *store, idem_store_op_t *ops,
                                  size_t n)
{
    idem_store_lmdb_t *s = (idem_store_lmdb_t *)store;

    if (n == 0) {
        return;
    }
    if (s->group_commit && idem_store_gcq_submit(&s->queue, ops, n) == 0) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        idem_store_lmdb_run_alone(s, &ops[i], NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Parses a size, digits with an optional k, m or g suffix (KiB, MiB, GiB;
 * either case; "kb" and "kib" mean the same, as for the gateway's sizes),
 * into *out. Returns 0 or IDEM_EBADURL.
 */
static int idem_store_lmdb_size_value(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0, unit = 1;
    size_t i;

    for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            return IDEM_EBADURL;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0) {
        return IDEM_EBADURL;
    }
    if (n > i + 1 && (s[n - 1] == 'b' || s[n - 1] == 'B')) {
        n -= n > i + 2 && (s[n - 2] == 'i' || s[n - 2] == 'I') ? 2 : 1;
    }
    if (i + 1 == n) {
        switch (s[i]) {
        case 'k':
        case 'K':
            unit = (uint64_t)1 << 10;
            break;
        case 'm':
        case 'M':
            unit = (uint64_t)1 << 20;
            break;
        case 'g':
        case 'G':
            unit = (uint64_t)1 << 30;
            break;
        default:
            return IDEM_EBADURL;
        }
    } else if (i != n) {
        return IDEM_EBADURL;
    }
    if (v > UINT64_MAX / unit) {
        return IDEM_EBADURL;
    }
    *out = v * unit;
    return 0;
}

/* Whether the n bytes at p are the option name. */
static int idem_store_lmdb_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(p, name, n) == 0;
}

/*
 * Parses "PATH[?name=value&...]" into *c (c->path malloc'd). On
 * IDEM_EBADURL a sentence saying why is written to why (cap > 0 bytes).
 * Returns 0, IDEM_EBADURL or IDEM_ENOMEM.
 */
static int idem_store_lmdb_parse(const char *rest, idem_store_lmdb_conf_t *c,
                                 char *why, size_t cap)
{
    const char *q = strchr(rest, '?'), *p, *end, *eq, *val;
    size_t path_len = q ? (size_t)(q - rest) : strlen(rest), name_len, n;
    uint64_t v;

    c->path = NULL;
    c->map_size = (size_t)IDEM_STORE_LMDB_DEFAULT_MAP_SIZE;
    c->group_commit = 1;
    c->sync = 1;
    c->wal = 1;
    c->wal_size = IDEM_STORE_LMDB_WAL_SIZE;
    if (path_len == 0) {
        snprintf(why, cap, "lmdb: needs a directory, e.g. lmdb:/var/lib/idem");
        return IDEM_EBADURL;
    }
    for (p = q ? q + 1 : NULL; p != NULL; p = *end ? end + 1 : NULL) {
        end = strchr(p, '&');
        if (end == NULL) {
            end = p + strlen(p);
        }
        eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL) {
            snprintf(why, cap,
                     "lmdb option \"%.*s\" has no value (name=value: "
                     "map_size=SIZE, group_commit=0|1, sync=0|1, wal=0|1, "
                     "wal_size=SIZE)",
                     (int)(end - p), p);
            return IDEM_EBADURL;
        }
        name_len = (size_t)(eq - p);
        val = eq + 1;
        n = (size_t)(end - val);
        if (idem_store_lmdb_is(p, name_len, "map_size")) {
            if (idem_store_lmdb_size_value(val, n, &v) != 0 ||
                v < IDEM_STORE_LMDB_MAP_MIN || v > IDEM_STORE_LMDB_MAP_MAX ||
                v > SIZE_MAX) {
                snprintf(why, cap,
                         "lmdb map_size \"%.*s\" is not a size from 64k "
                         "to 16384g (bytes, or a number with a k, m or g "
                         "suffix)",
                         (int)n, val);
                return IDEM_EBADURL;
            }
            c->map_size = (size_t)v;
        } else if (idem_store_lmdb_is(p, name_len, "wal_size")) {
            if (idem_store_lmdb_size_value(val, n, &v) != 0 ||
                v < IDEM_STORE_LMDB_WAL_SIZE_MIN ||
                v > IDEM_STORE_LMDB_WAL_SIZE_MAX) {
                snprintf(why, cap,
                         "lmdb wal_size \"%.*s\" is not a size from 64k "
                         "to 1g (bytes, or a number with a k, m or g "
                         "suffix)",
                         (int)n, val);
                return IDEM_EBADURL;
            }
            c->wal_size = v;
        } else if (idem_store_lmdb_is(p, name_len, "group_commit") ||
                   idem_store_lmdb_is(p, name_len, "sync") ||
                   idem_store_lmdb_is(p, name_len, "wal")) {
            if (n != 1 || (val[0] != '0' && val[0] != '1')) {
                snprintf(why, cap, "lmdb option %.*s is 0 or 1, not \"%.*s\"",
                         (int)name_len, p, (int)n, val);
                return IDEM_EBADURL;
            }
            if (name_len == 4) {
                c->sync = val[0] == '1';
            } else if (name_len == 3) {
                c->wal = val[0] == '1';
            } else {
                c->group_commit = val[0] == '1';
            }
        } else {
            snprintf(why, cap,
                     "unknown lmdb option \"%.*s\" (the options are "
                     "map_size=SIZE, group_commit=0|1, sync=0|1, wal=0|1 "
                     "and wal_size=SIZE)",
                     (int)name_len, p);
            return IDEM_EBADURL;
        }
    }
    c->path = strndup(rest, path_len);
    return c->path != NULL ? 0 : IDEM_ENOMEM;
}

static int idem_store_lmdb_check_url(const char *rest, char *why, size_t cap)
{
    idem_store_lmdb_conf_t c;
    int rc;

    rc = idem_store_lmdb_parse(rest, &c, why, cap);
    free(c.path);
    return rc;
}

/* mkdir -p with mode 0700. Returns 0 or an errno value. */
static int idem_store_lmdb_mkdirs(char *path)
{
    char *p;
    char c;
    int rc;

    for (p = path + 1;; p++) {
        if (*p != '/' && *p != '\0') {
            continue;
        }
        c = *p;
        *p = '\0';
        rc = mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : errno;
        *p = c;
        if (rc != 0) {
            return rc;
        }
        if (c == '\0') {
            return 0;
        }
    }
}

/*
 * Reads the page size and the map's size (LMDB raises a map_size smaller
 * than the data to the data's size) and sets the reserve and its floor
 * from them. Returns 0 or an LMDB code.
 */
static int idem_store_lmdb_size(idem_store_lmdb_t *s)
{
    MDB_envinfo info;
    MDB_stat st;
    size_t r;
    int rc;

    rc = mdb_env_stat(s->env, &st);
    if (rc == 0) {
        rc = mdb_env_info(s->env, &info);
    }
    if (rc != 0) {
        return rc;
    }
    s->psize = st.ms_psize;
    s->map_pages = info.me_mapsize / st.ms_psize;
    r = s->map_pages >> IDEM_STORE_LMDB_RESERVE_SHIFT;
    if (r > IDEM_STORE_LMDB_RESERVE_MAX) {
        r = IDEM_STORE_LMDB_RESERVE_MAX;
    }
    if (r < IDEM_STORE_LMDB_RESERVE_MIN) {
        r = IDEM_STORE_LMDB_RESERVE_MIN;
    }
    if (r > s->map_pages / 2) {
        r = s->map_pages / 2;
    }
    s->reserve_pages = r;
    s->floor_pages = r / 2;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Usage and identity                                                        */
/* ------------------------------------------------------------------------ */

static int idem_store_lmdb_usage(idem_store_t *store, idem_store_usage_t *out)
{
    idem_store_lmdb_t *s = (idem_store_lmdb_t *)store;
    MDB_txn *txn;
    MDB_stat st;
    size_t free_pages;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return idem_store_lmdb_err(rc);
    }
    rc = idem_store_lmdb_free_pages(s, txn, &free_pages);
    if (rc == 0) {
        rc = mdb_stat(txn, s->records, &st);
    }
    mdb_txn_abort(txn);
    if (rc != 0) {
        return idem_store_lmdb_err(rc);
    }
    out->records = st.ms_entries;
    out->bytes_used = (uint64_t)(s->map_pages - free_pages) * s->psize;
    out->bytes_limit = (uint64_t)s->map_pages * s->psize;
    out->bytes_claim_limit =
        (uint64_t)(s->map_pages - s->reserve_pages) * s->psize;
    return 0;
}

/* PATH/name into buf; 0 or ENAMETOOLONG. */
static int idem_store_lmdb_file(char *buf, size_t cap, const char *dir,
                                const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);

    return n > 0 && (size_t)n < cap ? 0 : ENAMETOOLONG;
}

/*
 * Remembers which files the environment opened: data.mdb through LMDB's
 * own descriptor, lock.mdb by its path just after the open (LMDB does not
 * hand out that descriptor). Returns 0 or an errno value.
 */
static int idem_store_lmdb_identify(idem_store_lmdb_t *s, const char *dir)
{
    char file[4096];
    mdb_filehandle_t fd;
    int rc;

    rc = mdb_env_get_fd(s->env, &fd);
    if (rc != 0) {
        return rc;
    }
    if (fstat(fd, &s->data_st) != 0) {
        return errno;
    }
    rc = idem_store_lmdb_file(file, sizeof(file), dir, "lock.mdb");
    if (rc == 0 && stat(file, &s->lock_st) != 0) {
        rc = errno;
    }
    return rc;
}

/* Compares PATH/name with the file opened as *opened; see idem.h. */
static int idem_store_lmdb_same(const idem_store_lmdb_t *s, const char *name,
                                const struct stat *opened, char *why,
                                size_t cap)
{
    char file[4096];
    struct stat now;

    if (idem_store_lmdb_file(file, sizeof(file), s->path, name) != 0) {
        snprintf(why, cap, "store path %s/%s is too long", s->path, name);
        return IDEM_EIO;
    }
    if (stat(file, &now) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            snprintf(why, cap,
                     "%s is gone: the store directory was removed or moved "
                     "away while open (this process still holds the old "
                     "files, device %ju inode %ju, which a restart would "
                     "not find)",
                     file, (uintmax_t)opened->st_dev,
                     (uintmax_t)opened->st_ino);
            return IDEM_EUNAVAIL;
        }
        snprintf(why, cap, "cannot examine %s: %s", file, strerror(errno));
        return IDEM_EIO;
    }
    if (now.st_dev != opened->st_dev || now.st_ino != opened->st_ino) {
        snprintf(why, cap,
                 "%s is another file now (device %ju inode %ju; opened as "
                 "device %ju inode %ju): the store directory was replaced "
                 "while open, and its records are not the ones this process "
                 "keeps",
                 file, (uintmax_t)now.st_dev, (uintmax_t)now.st_ino,
                 (uintmax_t)opened->st_dev, (uintmax_t)opened->st_ino);
        return IDEM_EUNAVAIL;
    }
    return 0;
}

static int idem_store_lmdb_check(idem_store_t *store, char *why, size_t cap)
{
    idem_store_lmdb_t *s = (idem_store_lmdb_t *)store;
    int rc;

    rc = idem_store_lmdb_same(s, "data.mdb", &s->data_st, why, cap);
    if (rc == 0) {
        rc = idem_store_lmdb_same(s, "lock.mdb", &s->lock_st, why, cap);
    }
    return rc;
}

static void idem_store_lmdb_identity(const idem_store_t *store,
                                     idem_store_identity_t *out)
{
    const idem_store_lmdb_t *s = (const idem_store_lmdb_t *)store;

    out->device = (uint64_t)s->data_st.st_dev;
    out->inode = (uint64_t)s->data_st.st_ino;
}

static void idem_store_lmdb_close(idem_store_t *store)
{
    idem_store_lmdb_t *s = (idem_store_lmdb_t *)store;

    if (s->wal_on) {
        idem_store_wal_close(&s->wal);
    }
    mdb_env_close(s->env);
    idem_store_gcq_destroy(&s->queue);
    free(s->path);
    free(s);
}

static const idem_store_vtable_t idem_store_lmdb_vt = {
    .name = "lmdb",
    .read = idem_store_lmdb_read,
    .read_nowait = idem_store_lmdb_read_nowait,
    .write = idem_store_lmdb_write,
    .usage = idem_store_lmdb_usage,
    .check = idem_store_lmdb_check,
    .identity = idem_store_lmdb_identity,
    .close = idem_store_lmdb_close,
};

/* Opens the databases, creating them in a new environment. */
static int idem_store_lmdb_dbis(idem_store_lmdb_t *s)
{
    MDB_txn *txn;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        return rc;
    }
    rc = mdb_dbi_open(txn, NULL, 0, &s->main);
    if (rc == 0) {
        rc = mdb_dbi_open(txn, IDEM_STORE_LMDB_DB_RECORDS, MDB_CREATE,
                          &s->records);
    }
    if (rc == 0) {
        rc = mdb_dbi_open(txn, IDEM_STORE_LMDB_DB_EXPIRY, MDB_CREATE,
                          &s->expiry);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/*
 * Opens the environment in c->path (made before): with the log unless
 * sync=0 or wal=0, else with LMDB's own durable commits (or none, sync=0).
 * Returns 0 or an LMDB/errno code.
 */
static int idem_store_lmdb_env(idem_store_lmdb_t *s,
                               const idem_store_lmdb_conf_t *c)
{
    /*
     * MDB_NOTLS: read transactions are not tied to threads (a thread pool
     * runs them, and the log's pin outlives the call that took it). Left
     * out, as measured on ext4 (bench/store_bench.c): MDB_WRITEMAP (LMDB
     * 0.9 msyncs the whole map at every commit: 3-4x slower; a full disk
     * would also raise SIGBUS on the sparse map) and MDB_NORDAHEAD (a cold
     * lookup then reads ~5 KiB instead of up to the device's read-ahead,
     * but a database that fits in memory warms up far more slowly; worth
     * it only for databases larger than memory). MDB_NOSYNC is safe with
     * the log only: the log is what is durable.
     */
    unsigned int flags = MDB_NOTLS;
    const MDB_dbi *dbis;
    MDB_dbi both[IDEM_STORE_WAL_DBIS];
    int rc, dead;

    if (c->sync && c->wal) {
        rc = idem_store_wal_open(&s->wal, c->path, &s->wal_on);
        if (rc != 0) {
            return rc;
        }
    }
    if (!s->wal_on) {
        /* an old checkpoint must not be restored over these commits */
        rc = idem_store_wal_forget(c->path);
        if (rc != 0) {
            return rc;
        }
    }
    if (!c->sync || s->wal_on) {
        flags |= MDB_NOSYNC;
    }
    rc = mdb_env_create(&s->env);
    if (rc == 0) {
        rc = mdb_env_set_maxdbs(s->env, 2);
    }
    if (rc == 0) {
        rc = mdb_env_set_maxreaders(s->env, IDEM_STORE_LMDB_MAX_READERS);
    }
    if (rc == 0) {
        rc = mdb_env_set_mapsize(s->env, c->map_size);
    }
    if (rc == 0) {
        rc = mdb_env_open(s->env, c->path, flags, 0600);
    }
    if (rc == 0 && !s->wal_on) {
        /* Free the reader slots of processes that died holding them (with
         * the log, a checkpoint does it: they may hold its pin). */
        rc = mdb_reader_check(s->env, &dead);
    }
    if (rc == 0) {
        rc = idem_store_lmdb_dbis(s);
    }
    if (rc == 0 && s->wal_on) {
        both[IDEM_STORE_LMDB_REC] = s->records;
        both[IDEM_STORE_LMDB_EXP] = s->expiry;
        dbis = both;
        s->wal.limit = c->wal_size;
        rc = idem_store_wal_start(&s->wal, s->env, dbis);
        /* a commit syncs after it frees the writer lock */
        s->base.caps |= IDEM_STORE_CAP_OVERLAP;
    }
    return rc;
}

static int idem_store_lmdb_open(const char *url, const char *rest,
                                idem_store_t **out)
{
    idem_store_lmdb_conf_t c;
    idem_store_lmdb_t *s = NULL;
    int rc, queue_ok = 0;
    char why[256];

    (void)url;
    rc = idem_store_lmdb_parse(rest, &c, why, sizeof(why));
    if (rc != 0) {
        return rc;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = IDEM_ENOMEM;
        goto fail;
    }
    rc = idem_store_gcq_init(&s->queue, idem_store_lmdb_run_batch, s);
    if (rc != 0) {
        goto fail;
    }
    queue_ok = 1;
    s->group_commit = c.group_commit;

    rc = idem_store_lmdb_mkdirs(c.path);
    if (rc == 0) {
        rc = idem_store_lmdb_env(s, &c);
    }
    if (rc == 0) {
        rc = idem_store_lmdb_size(s);
    }
    if (rc == 0) {
        rc = idem_store_lmdb_identify(s, c.path);
    }
    if (rc != 0) {
        rc = idem_store_lmdb_err(rc);
        goto fail;
    }
    s->path = c.path;
    s->base.vt = &idem_store_lmdb_vt;
    *out = &s->base;
    return 0;

fail:
    if (s != NULL) {
        if (s->wal_on) {
            idem_store_wal_close(&s->wal);
        }
        if (s->env != NULL) {
            mdb_env_close(s->env);
        }
        if (queue_ok) {
            idem_store_gcq_destroy(&s->queue);
        }
        free(s);
    }
    free(c.path);
    return rc;
}

const idem_store_backend_t idem_store_lmdb_backend = {
    .scheme = "lmdb",
    .forms = "lmdb:PATH[?options]",
    .caps = IDEM_STORE_CAP_INLINE_READ | IDEM_STORE_CAP_DIRECTORY |
            IDEM_STORE_CAP_SHARED | IDEM_STORE_CAP_BOUNDED,
    .open = idem_store_lmdb_open,
    .check_url = idem_store_lmdb_check_url,
};
