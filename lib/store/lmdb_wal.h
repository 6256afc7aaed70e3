/*
 * lmdb_wal.h — the LMDB store's write-ahead log: one contiguous append and
 * one fdatasync per commit, instead of LMDB's scattered page writes and
 * its two syncs. Private to lib/store; only lmdb.c uses it.
 *
 *   write transaction (LMDB's writer lock, shared by every process)
 *     | puts and deletes: made in LMDB and recorded as redo (new values)
 *     v
 *   append one frame to wal.log (written, not synced)
 *     v
 *   mdb_txn_commit with MDB_NOSYNC               <- the writer lock is free
 *     v
 *   fdatasync of wal.log, outside the lock       <- the durable step
 *
 * Other commits, of any thread or process, run while a commit syncs, and
 * the next sync covers them all (one sync at a time per handle; handles
 * of several processes sync side by side). A commit returns once its
 * frame is synced, and a reader of a record written by a commit not yet
 * known durable syncs the log too before it answers
 * (idem_store_wal_readable). So nothing a caller is told is only in
 * memory, and LMDB's own file is written back by the kernel at its pace. A
 * checkpoint makes the file durable again (mdb_env_sync), saves its two
 * meta pages and starts the log over; between checkpoints, a read
 * transaction held on the checkpoint's snapshot (the pin) keeps LMDB from
 * reusing any page of it. After a power loss (the kernel's boot id has
 * changed), the first opener writes the saved meta pages back, which
 * makes the checkpoint's snapshot current again (its pages were never
 * overwritten), and applies the log's frames to it in order.
 *
 * Files beside data.mdb: wal.log (the frames), wal.ckpt (two slots, the
 * newer valid one counts), wal.shm (the log's head and generation, shared
 * by the processes of this boot; never synced).
 */
#ifndef IDEM_STORE_LMDB_WAL_H
#define IDEM_STORE_LMDB_WAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* The databases the redo names, by index. */
#define IDEM_STORE_WAL_DBIS 2

typedef struct idem_store_wal_shm_s idem_store_wal_shm_t;

typedef struct {
    int log_fd;
    int ckpt_fd; /* also the lock (flock) of opening and recovery */
    int shm_fd;  /* also the pin's liveness lock (an OFD read lock) */
    idem_store_wal_shm_t *shm;
    uint64_t id; /* this handle's, as wal.shm names the pin's owner */
    MDB_env *env;
    MDB_dbi dbis[IDEM_STORE_WAL_DBIS];
    size_t psize;
    uint64_t limit;  /* log bytes that start a checkpoint */
    uint64_t filled; /* the log file's size as this handle last saw it */
    uint8_t boot[40];

    /* the running write transaction's frame (header room, then redo);
     * used only by the holder of LMDB's writer lock */
    uint8_t *buf;
    size_t len, cap;
    uint64_t txnid; /* its id */
    int oom;        /* a record could not be added: the commit must fail */

    pthread_mutex_t mu; /* guards the rest */
    pthread_cond_t cv;
    pthread_cond_t sync_cv; /* a sync of the log or of data.mdb ended */
    int syncing;            /* one of this handle's threads syncs the log */
    int data_syncing;       /* or data.mdb */
    pthread_t thread;
    int thread_on, kick, stop;
    MDB_txn *pin;     /* read transaction on our last checkpoint */
    uint64_t pin_seq; /* that checkpoint's number */

    /* between idem_store_wal_open and idem_store_wal_start */
    int recover;
    uint64_t recover_gen;
    uint8_t *rlog; /* the log as read for the recovery */
    size_t rlog_len;
} idem_store_wal_t;

/*
 * For a store opened without the log (wal=0, sync=0, no boot id): removes
 * dir/wal.ckpt, if there is one, durably, before the first commit. Its
 * checkpoint no longer describes data.mdb, whose pages the commits made
 * without the log may reuse: a later open with the log after a power loss
 * must not restore it. EBUSY while a process has the directory open with
 * the log (the two cannot share it). Returns 0 or an errno value.
 */
int idem_store_wal_forget(const char *dir);

/*
 * Opens (creating) the log's files in dir and takes the opening lock.
 * After a power loss since the last checkpoint, writes its meta pages back
 * into dir/data.mdb, so that mdb_env_open() finds that snapshot; *on is
 * set to 0 when this machine gives no boot id (the store then syncs LMDB's
 * own commits, as without the log). Must be followed by
 * idem_store_wal_start() (or _close()) once the environment is open.
 * Returns 0 or an errno value.
 */
int idem_store_wal_open(idem_store_wal_t *w, const char *dir, int *on);

/*
 * Applies what the log holds after the checkpoint (if open found it
 * needed), takes a checkpoint, drops the opening lock and starts the
 * checkpoint thread. env was opened with MDB_NOSYNC|MDB_NOTLS; dbis are
 * the databases of the redo records. Returns 0 or an LMDB/errno code.
 */
int idem_store_wal_start(idem_store_wal_t *w, MDB_env *env,
                         const MDB_dbi dbis[IDEM_STORE_WAL_DBIS]);

/* Starts the frame of write transaction txnid (no I/O). */
void idem_store_wal_begin(idem_store_wal_t *w, uint64_t txnid);

/* Records that the transaction put val under key in dbis[db], or deleted
 * key (val NULL). No I/O; a failure to allocate fails the commit. */
void idem_store_wal_record(idem_store_wal_t *w, unsigned db, const MDB_val *key,
                           const MDB_val *val);

/*
 * Commits txn: its frame appended (not synced), then mdb_txn_commit, which
 * frees the writer lock. *settle receives what idem_store_wal_settle()
 * must then be given before anything of the transaction, or read by it,
 * is acknowledged (a transaction that wrote nothing may have read another
 * one's commit not yet synced). On failure the transaction is aborted and
 * its frame, if it reached the log, cancelled. Returns 0 or an LMDB/errno
 * code.
 */
int idem_store_wal_commit(idem_store_wal_t *w, MDB_txn *txn, uint64_t *settle);

/*
 * Returns once what idem_store_wal_commit() named in *settle is on disk:
 * a sync of the log (several threads' and processes' overlap), unless one
 * has covered it already; after a failed sync, a checkpoint. An error
 * (errno code) leaves the transaction committed but not known durable:
 * the next commit checkpoints first.
 */
int idem_store_wal_settle(idem_store_wal_t *w, uint64_t t);

/*
 * Whether the record under key that the read transaction rtxn found is on
 * disk: 0 when it is, or was made so (wait: a sync of the log); EAGAIN
 * when it is not and wait is 0; else the sync's errno. (Judged by the
 * newest write to any key of its slot in wal.shm, and the snapshot.)
 */
int idem_store_wal_readable(idem_store_wal_t *w, MDB_txn *rtxn,
                            const MDB_val *key, int wait);

/*
 * Takes a checkpoint now (outside any write transaction of the caller's
 * thread): after a write failed for room, so that the pages the pin kept
 * from reuse are free again. Returns 0 or an LMDB/errno code.
 */
int idem_store_wal_checkpoint(idem_store_wal_t *w);

/*
 * What a scan hands over: the put of val under key in database db, or the
 * delete of key (val NULL). Returns 0 to go on, else the scan's result.
 */
typedef int (*idem_store_wal_apply_t)(void *ctx, unsigned db,
                                      const MDB_val *key, const MDB_val *val);

/*
 * Reads a log: the valid frames of generation gen from offset 0 on (the
 * first invalid one ends it: a torn write, or a frame of an older round),
 * and hands every record of each frame no cancel frame names to apply, in
 * order. A valid frame whose records are malformed gives MDB_CORRUPTED.
 * No I/O; log may be any bytes (the fuzz target's input).
 * Returns 0, ENOMEM, MDB_CORRUPTED or what apply returned.
 */
int idem_store_wal_scan(const uint8_t *log, size_t size, uint64_t gen,
                        idem_store_wal_apply_t apply, void *ctx);

/* Stops the thread, releases the pin, closes the files. Before
 * mdb_env_close. */
void idem_store_wal_close(idem_store_wal_t *w);

#endif
