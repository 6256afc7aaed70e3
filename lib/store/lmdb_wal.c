/*
 * lmdb_wal.c — the LMDB store's write-ahead log (see lmdb_wal.h for the
 * flow). The rules that make it safe:
 *
 *  1. A frame is written before its transaction commits: under LMDB's
 *     writer lock, so the log's order is the commits' order, across
 *     processes. A frame whose commit then fails is cancelled by a later
 *     frame naming it. The frame is synced after the commit, outside the
 *     lock, so that the next commit runs meanwhile (and the next sync
 *     covers it too); nothing is acknowledged before that sync: a commit
 *     returns after it, and a read of a record whose key's slot names a
 *     commit not known durable yet syncs the log (or, told not to wait,
 *     says so) before it answers. An fdatasync covers every frame written
 *     before it began, by any process: so wal.shm keeps "written" (the
 *     last committed transaction) and "durable" (the last one a finished
 *     sync or checkpoint covered). One sync at a time per handle, and a
 *     failed one is recorded (wal_sync_serial).
 *  2. A checkpoint runs under the writer lock too: no commit is half done,
 *     so everything up to the last commit X is in the file once
 *     mdb_env_sync() returns. Its two meta pages (X and the one before)
 *     go to a slot of wal.ckpt with one fdatasync; then the log restarts
 *     at offset 0 under a new random generation, which every frame
 *     carries, so frames of an older round are never read as new ones.
 *  3. The pin: a read transaction begun on X before the checkpoint is
 *     written, released only once a later checkpoint is durable. LMDB
 *     reuses a page only when no reader can see it, so no page of X is
 *     written to while X is what recovery would restore. Dead processes'
 *     reader slots (their pins) are cleared only inside a checkpoint,
 *     after which the new pin protects. A process that closes while its
 *     pin is the current one leaves "unpinned" in wal.shm, and the next
 *     commit of any process takes a checkpoint first.
 *  4. Recovery: the first opener after a new boot (wal.shm and the
 *     checkpoint name an older boot id) writes the saved meta pages back
 *     before LMDB opens the file, then applies every valid, uncancelled
 *     frame of the checkpoint's generation in order. Within one boot the
 *     page cache holds every write LMDB made, so nothing is restored.
 *
 * A checkpoint thread per handle does the heavy part (syncing the pages
 * written since the last one) outside the lock when the log passes its
 * limit; under the lock only the rest is synced. A commit that finds the
 * log four times past its limit checkpoints itself, under the lock.
 */
#include "lmdb_wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WAL_FRAME_MAGIC 0x4c415749u /* "IWAL" */
#define WAL_CKPT_MAGIC  0x504b4349u /* "ICKP" */
#define WAL_SHM_MAGIC   0x4d484349u /* "ICHM" */
#define WAL_VERSION     1u

#define WAL_KIND_REDO   1u
#define WAL_KIND_CANCEL 2u

#define WAL_HDR      40 /* a frame's header */
#define WAL_REC_HDR  12 /* a redo record's: op, db, pad, key len, val len */
#define WAL_OP_PUT   1
#define WAL_OP_DEL   2
#define WAL_SHM_SIZE 4096
#define WAL_RECENT   440 /* key slots in wal.shm */

/* A checkpoint slot: a header page, then the two meta pages of up to
 * LMDB's largest page size. */
#define WAL_PSIZE_MAX  65536
#define WAL_SLOT_HDR   4096
#define WAL_SLOT_SIZE  (WAL_SLOT_HDR + 2 * WAL_PSIZE_MAX)
#define WAL_META_MAGIC 0xBEEFC0DEu
/* In an LMDB 0.9 meta page: the magic after the 16-byte page header, the
 * transaction id at the end of MDB_meta. */
#define WAL_META_MAGIC_AT 16
#define WAL_META_TXNID_AT 144

/* A commit past limit * WAL_HARD checkpoints under the lock itself. */
#define WAL_HARD 4
/* Syncs of data.mdb before a checkpoint takes the lock: at most this many,
 * until one takes less than this. */
#define WAL_PRESYNCS         3
#define WAL_PRESYNC_SHORT_NS 1000000L
/* The checkpoint thread's tick: a writeback of data.mdb started; every
 * WAL_TICKS_UNPIN ticks also the release of a needless pin. */
#define WAL_TICK_NS     100000000L
#define WAL_TICKS_UNPIN 10
/* Commits at most this far ahead of the last one known durable: a commit
 * past it syncs first, under the lock. So after a power loss data.mdb's
 * newest meta (written back by the kernel, maybe ahead of the frames of
 * its last commits) is at most this far past the last frame the log
 * holds; a file further ahead was written without the log (wal=0). */
#define WAL_AHEAD 64
/* The log file is filled with zeros this far ahead of its frames. */
#define WAL_FILL_STEP ((uint64_t)1 << 20)
/* A frame buffer this large is given back after its commit. */
#define WAL_BUF_KEEP ((size_t)4 << 20)

struct idem_store_wal_shm_s {
    uint32_t magic;
    uint32_t version;
    uint8_t boot[40];
    uint64_t gen;      /* the log's generation since the last checkpoint */
    uint64_t head;     /* bytes of log since then */
    uint64_t seq;      /* checkpoints taken; read without the lock */
    uint32_t unpinned; /* the current checkpoint's pin is gone */
    uint32_t busy;     /* a checkpoint is being written (or its writer died) */
    uint64_t last_off; /* the last redo frame since the checkpoint */
    uint64_t last_txnid;  /* and the transaction it was for (0: none) */
    uint64_t pin_owner;   /* the handle that holds the checkpoint's pin */
    uint64_t written;     /* the newest committed transaction (its frame
                             written before its commit) */
    uint64_t durable;     /* the newest one a sync or checkpoint covered */
    uint32_t sync_failed; /* a sync of the log failed: until a checkpoint
                             succeeds, no sync of it vouches for anything */
    uint32_t data_failed; /* a sync of data.mdb failed: no checkpoint is
                             taken any more, in this boot */
    /* per key slot (wal_slot), the newest transaction that wrote a key of
     * that slot (set before its commit): a read of a record needs no sync
     * when its slot's transaction is durable */
    uint64_t recent[WAL_RECENT];
};

_Static_assert(sizeof(struct idem_store_wal_shm_s) <= WAL_SHM_SIZE,
               "wal.shm holds its fields");

/* What a checkpoint slot holds. */
typedef struct {
    uint64_t seq, gen, txnid;
    uint32_t psize;
    uint8_t boot[40];
    uint8_t *metas; /* 2 * psize bytes, malloc'd */
} wal_ckpt_t;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint32_t wal_crc_table[256];
static pthread_once_t wal_crc_once = PTHREAD_ONCE_INIT;

static void wal_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        wal_crc_table[i] = c;
    }
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t
wal_crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;

    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;

        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
    }
    c = (uint32_t)c64;
    for (; n > 0; n--, p++) {
        c = __builtin_ia32_crc32qi(c, *p);
    }
    return c;
}
#endif

/* CRC-32C of n bytes, continuing from c (start with 0). */
static uint32_t wal_crc(uint32_t c, const uint8_t *p, size_t n)
{
    c = ~c;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2")) {
        return ~wal_crc_hw(c, p, n);
    }
#endif
    pthread_once(&wal_crc_once, wal_crc_init);
    for (; n > 0; n--, p++) {
        c = wal_crc_table[(c ^ *p) & 0xff] ^ (c >> 8);
    }
    return ~c;
}

static void wal_put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void wal_put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint32_t wal_get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static uint64_t wal_get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

/* pwrite/pread of all n bytes. Return 0 or an errno value. */
static int wal_pwrite(int fd, const void *buf, size_t n, off_t at)
{
    const uint8_t *p = buf;

    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, at);

        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        p += k;
        n -= (size_t)k;
        at += k;
    }
    return 0;
}

static int wal_pread(int fd, void *buf, size_t n, off_t at)
{
    uint8_t *p = buf;

    while (n > 0) {
        ssize_t k = pread(fd, p, n, at);

        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
        if (k == 0) {
            return ENODATA;
        }
        p += k;
        n -= (size_t)k;
        at += k;
    }
    return 0;
}

static int wal_sync(int fd)
{
    return fdatasync(fd) == 0 ? 0 : errno;
}

/* *at = max(*at, v), for a counter of wal.shm that only grows. */
static void wal_raise(uint64_t *at, uint64_t v)
{
    uint64_t cur = __atomic_load_n(at, __ATOMIC_ACQUIRE);

    while (cur < v && !__atomic_compare_exchange_n(
                          at, &cur, v, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

/* A random generation, never 0. Returns 0 or an errno value. */
static int wal_random(uint64_t *out)
{
    uint64_t v = 0;

    while (v == 0) {
        if (getrandom(&v, sizeof(v), 0) != (ssize_t)sizeof(v)) {
            if (errno == EINTR) {
                continue;
            }
            return errno;
        }
    }
    *out = v;
    return 0;
}

/* The kernel's boot id into boot (40 bytes, zero-padded). 0 or errno. */
static int wal_boot_id(uint8_t boot[40])
{
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return errno;
    }
    memset(boot, 0, 40);
    n = read(fd, boot, 39);
    close(fd);
    return n >= 32 ? 0 : EIO;
}

/* Opens dir/name (created 0600 if missing; idem_store_wal_start() syncs
 * the directory). */
static int wal_file(const char *dir, const char *name, int *fd)
{
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);

    if (n < 0 || (size_t)n >= sizeof(path)) {
        return ENAMETOOLONG;
    }
    /* another process may make it between the two tries: try again */
    for (int i = 0; i < 3; i++) {
        *fd = open(path, O_RDWR | O_CLOEXEC);
        if (*fd >= 0 || errno != ENOENT) {
            break;
        }
        *fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (*fd >= 0) {
            break;
        }
        if (errno != EEXIST) {
            break;
        }
    }
    return *fd >= 0 ? 0 : errno;
}

/* ------------------------------------------------------------------------ */
/* Checkpoint slots                                                          */
/* ------------------------------------------------------------------------ */

/* Reads slot i into *c (c->metas malloc'd); 0 when it is valid. */
static int wal_slot_read(int fd, int i, wal_ckpt_t *c)
{
    uint8_t hdr[128];
    uint32_t crc;
    off_t at = (off_t)i * WAL_SLOT_SIZE;

    c->metas = NULL;
    if (wal_pread(fd, hdr, sizeof(hdr), at) != 0 ||
        wal_get32(hdr) != WAL_CKPT_MAGIC || wal_get32(hdr + 4) != WAL_VERSION) {
        return EINVAL;
    }
    crc = wal_get32(hdr + 8);
    c->psize = wal_get32(hdr + 12);
    c->seq = wal_get64(hdr + 16);
    c->gen = wal_get64(hdr + 24);
    c->txnid = wal_get64(hdr + 32);
    memcpy(c->boot, hdr + 40, 40);
    if (c->psize < 512 || c->psize > WAL_PSIZE_MAX ||
        (c->psize & (c->psize - 1)) != 0) {
        return EINVAL;
    }
    c->metas = malloc(2 * (size_t)c->psize);
    if (c->metas == NULL) {
        return ENOMEM;
    }
    if (wal_pread(fd, c->metas, 2 * (size_t)c->psize, at + WAL_SLOT_HDR) != 0) {
        goto bad;
    }
    wal_put32(hdr + 8, 0);
    if (wal_crc(wal_crc(0, hdr, sizeof(hdr)), c->metas, 2 * (size_t)c->psize) !=
        crc) {
        goto bad;
    }
    return 0;

bad:
    free(c->metas);
    c->metas = NULL;
    return EINVAL;
}

/* The newer valid slot into *c; ENOENT when neither is valid. */
static int wal_ckpt_load(int fd, wal_ckpt_t *c)
{
    wal_ckpt_t a, b;
    int ra = wal_slot_read(fd, 0, &a), rb = wal_slot_read(fd, 1, &b);

    if (ra == ENOMEM || rb == ENOMEM) {
        free(a.metas);
        free(b.metas);
        return ENOMEM;
    }
    if (ra != 0 && rb != 0) {
        return ENOENT;
    }
    if (ra == 0 && (rb != 0 || a.seq > b.seq)) {
        free(b.metas);
        *c = a;
    } else {
        free(a.metas);
        *c = b;
    }
    return 0;
}

/* Writes checkpoint c into slot c->seq % 2 and syncs it. */
static int wal_ckpt_write(int fd, const wal_ckpt_t *c)
{
    uint8_t hdr[128] = {0};
    off_t at = (off_t)(c->seq % 2) * WAL_SLOT_SIZE;
    int rc;

    wal_put32(hdr, WAL_CKPT_MAGIC);
    wal_put32(hdr + 4, WAL_VERSION);
    wal_put32(hdr + 12, c->psize);
    wal_put64(hdr + 16, c->seq);
    wal_put64(hdr + 24, c->gen);
    wal_put64(hdr + 32, c->txnid);
    memcpy(hdr + 40, c->boot, 40);
    wal_put32(hdr + 8, wal_crc(wal_crc(0, hdr, sizeof(hdr)), c->metas,
                               2 * (size_t)c->psize));
    rc = wal_pwrite(fd, c->metas, 2 * (size_t)c->psize, at + WAL_SLOT_HDR);
    if (rc == 0) {
        rc = wal_pwrite(fd, hdr, sizeof(hdr), at);
    }
    return rc != 0 ? rc : wal_sync(fd);
}

/* The transaction id of a meta page (0 when it is not one). */
static uint64_t wal_meta_txnid(const uint8_t *page)
{
    return wal_get32(page + WAL_META_MAGIC_AT) == WAL_META_MAGIC
               ? wal_get64(page + WAL_META_TXNID_AT)
               : 0;
}

/* ------------------------------------------------------------------------ */
/* Checkpoints                                                               */
/* ------------------------------------------------------------------------ */

/*
 * The pin's liveness: the process holding checkpoint seq's pin holds an
 * OFD read lock on byte WAL_SHM_SIZE + seq of wal.shm, which the kernel
 * drops when that process dies, however it dies. LMDB itself frees a dead
 * process's reader slot (its pin) when it finds a mutex that process held
 * (EOWNERDEAD), so a dead owner is noticed by the lock, not by the slot.
 */
static int wal_pin_lock(idem_store_wal_t *w, uint64_t seq, short type, int cmd)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)(WAL_SHM_SIZE + (seq & (((uint64_t)1 << 40) - 1)));
    fl.l_len = 1;
    if (fcntl(w->shm_fd, cmd, &fl) != 0) {
        return -1;
    }
    return fl.l_type;
}

/* Whether the current checkpoint's pin is held, by us or a live process. */
static int wal_pinned(idem_store_wal_t *w)
{
    if (w->shm->unpinned) {
        return 0;
    }
    if (w->shm->pin_owner == w->id) {
        return 1;
    }
    return wal_pin_lock(w, w->shm->seq, F_WRLCK, F_OFD_GETLK) != F_UNLCK;
}

/* Releases our pin if a newer checkpoint than its own exists. */
static void wal_unpin_old(idem_store_wal_t *w)
{
    uint64_t seq = __atomic_load_n(&w->shm->seq, __ATOMIC_ACQUIRE);
    MDB_txn *old = NULL;
    uint64_t old_seq = 0;

    pthread_mutex_lock(&w->mu);
    if (w->pin != NULL && w->pin_seq != seq) {
        old = w->pin;
        old_seq = w->pin_seq;
        w->pin = NULL;
    }
    pthread_mutex_unlock(&w->mu);
    if (old != NULL) {
        (void)wal_pin_lock(w, old_seq, F_UNLCK, F_OFD_SETLK);
        mdb_txn_abort(old);
    }
}

/*
 * Syncs the log (data 0) or data.mdb (data 1), one sync of each at a time
 * per handle: a caller that finds one running waits for it, and for the
 * log is done if it covered transaction t (t 0: a cancel frame or a
 * fill, which no transaction counts, always syncs anew). Linux reports a
 * failed writeback once per open file, to one sync: a later one on the
 * same descriptor returns 0 with the lost pages marked clean. So syncs of
 * one descriptor never overlap, and a failure is recorded in wal.shm (a
 * process's own syncs do not see another's error) before any other sync
 * may vouch for anything:
 *   sync_failed  the log's: until a checkpoint succeeds (which covers
 *                every commit), commits and reads checkpoint instead;
 *   data_failed  data.mdb's: no checkpoint is taken any more in this boot
 *                (it would save metas that name pages never written); the
 *                last good checkpoint and the log stay what recovery uses,
 *                and once the log is full, commits fail.
 * A good sync of the log raises durable to what it covered. Returns 0 or
 * an errno value (EIO while the flag is set).
 */
static int wal_sync_serial(idem_store_wal_t *w, int data, uint64_t t)
{
    int *running = data ? &w->data_syncing : &w->syncing;
    uint32_t *failed = data ? &w->shm->data_failed : &w->shm->sync_failed;
    uint64_t upto;
    int rc;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (t != 0 &&
            __atomic_load_n(&w->shm->durable, __ATOMIC_ACQUIRE) >= t) {
            pthread_mutex_unlock(&w->mu);
            return 0;
        }
        if (__atomic_load_n(failed, __ATOMIC_ACQUIRE)) {
            pthread_mutex_unlock(&w->mu);
            return EIO;
        }
        if (!*running) {
            break;
        }
        pthread_cond_wait(&w->sync_cv, &w->mu);
    }
    *running = 1;
    pthread_mutex_unlock(&w->mu);

    upto = __atomic_load_n(&w->shm->written, __ATOMIC_ACQUIRE);
    rc = data ? mdb_env_sync(w->env, 1) : wal_sync(w->log_fd);

    pthread_mutex_lock(&w->mu);
    *running = 0;
    if (rc != 0) {
        __atomic_store_n(failed, 1, __ATOMIC_RELEASE);
    } else if (__atomic_load_n(failed, __ATOMIC_ACQUIRE)) {
        rc = EIO; /* another process's sync failed meanwhile */
    } else if (!data) {
        wal_raise(&w->shm->durable, upto > t ? upto : t);
    }
    pthread_cond_broadcast(&w->sync_cv);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

static int wal_sync_data(idem_store_wal_t *w)
{
    return wal_sync_serial(w, 1, 0);
}

static int wal_sync_log(idem_store_wal_t *w, uint64_t t)
{
    return wal_sync_serial(w, 0, t);
}

/*
 * Takes a checkpoint; the caller's thread holds LMDB's writer lock (a
 * write transaction, whose own writes are not in the file yet and are not
 * part of it). readers: clear dead processes' reader slots first.
 */
static int wal_ckpt_held(idem_store_wal_t *w, int readers)
{
    wal_ckpt_t c;
    MDB_txn *pin, *old;
    mdb_filehandle_t fd;
    uint64_t t0, t1, old_seq;
    int rc, dead;

    rc = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &pin);
    if (rc != 0) {
        return rc;
    }
    c.txnid = mdb_txn_id(pin);
    c.gen = 0;
    c.psize = (uint32_t)w->psize;
    c.seq = w->shm->seq + 1;
    memcpy(c.boot, w->boot, 40);
    c.metas = malloc(2 * w->psize);
    if (c.metas == NULL) {
        rc = ENOMEM;
        goto fail;
    }
    if (readers) {
        (void)mdb_reader_check(w->env, &dead);
    }
    rc = wal_sync_data(w);
    if (rc == 0) {
        rc = mdb_env_get_fd(w->env, &fd);
    }
    if (rc == 0) {
        rc = wal_pread(fd, c.metas, 2 * w->psize, 0);
    }
    if (rc != 0) {
        goto fail;
    }
    t0 = wal_meta_txnid(c.metas);
    t1 = wal_meta_txnid(c.metas + w->psize);
    if ((t0 > t1 ? t0 : t1) != c.txnid) {
        rc = MDB_CORRUPTED; /* the file's metas are not what LMDB sees */
        goto fail;
    }
    rc = wal_random(&c.gen);
    if (rc == 0 && wal_pin_lock(w, c.seq, F_RDLCK, F_OFD_SETLK) < 0) {
        rc = errno;
    }
    if (rc != 0) {
        goto fail;
    }
    /* from here to the log's restart, a death leaves "busy": the next
     * commit then checkpoints anew before it appends (the slot may or may
     * not be on disk, and the log's generation must be the slot's) */
    w->shm->busy = 1;
    rc = wal_ckpt_write(w->ckpt_fd, &c);
    if (rc != 0) {
        goto fail;
    }
    free(c.metas);
    w->shm->gen = c.gen;
    w->shm->head = 0;
    w->shm->last_txnid = 0;
    w->shm->unpinned = 0;
    w->shm->pin_owner = w->id;
    w->shm->busy = 0;
    /* everything up to X is in the synced file now, whatever a failed
     * sync of the log lost */
    wal_raise(&w->shm->durable, c.txnid);
    __atomic_store_n(&w->shm->sync_failed, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&w->shm->seq, c.seq, __ATOMIC_RELEASE);

    pthread_mutex_lock(&w->mu);
    old = w->pin;
    old_seq = w->pin_seq;
    w->pin = pin;
    w->pin_seq = c.seq;
    pthread_mutex_unlock(&w->mu);
    if (old != NULL) {
        (void)wal_pin_lock(w, old_seq, F_UNLCK, F_OFD_SETLK);
        mdb_txn_abort(old);
    }
    return 0;

fail:
    free(c.metas);
    mdb_txn_abort(pin);
    (void)wal_pin_lock(w, c.seq, F_UNLCK, F_OFD_SETLK);
    if (readers) {
        /* dead processes' pins may be gone: the next commit tries again */
        w->shm->unpinned = 1;
    }
    return rc;
}

/* A checkpoint from outside any write transaction: the pages written
 * since the last one are synced first, without the lock. */
static int wal_ckpt(idem_store_wal_t *w, uint64_t if_past, int readers)
{
    struct timespec t0, t1;
    MDB_txn *txn;
    int rc = 0;

    /* what the lock then waits for is what was written during the last
     * of these syncs: sync again while one takes long */
    for (int i = 0; rc == 0 && i < WAL_PRESYNCS; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = wal_sync_data(w);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) <
            WAL_PRESYNC_SHORT_NS) {
            break;
        }
    }
    if (rc == 0) {
        rc = mdb_txn_begin(w->env, NULL, 0, &txn);
    }
    if (rc != 0) {
        return rc;
    }
    if (w->shm->head >= if_past || w->shm->unpinned || w->shm->busy) {
        rc = wal_ckpt_held(w, readers || w->shm->busy);
    }
    mdb_txn_abort(txn);
    return rc;
}

int idem_store_wal_checkpoint(idem_store_wal_t *w)
{
    return wal_ckpt(w, 0, 1); /* dead processes' old pins free pages too */
}

/*
 * The checkpoint thread: a checkpoint when a commit says the log is past
 * its limit; once a second also the release of a pin that a newer
 * checkpoint made needless, so that an idle handle does not keep LMDB
 * from reusing pages.
 */
static void *wal_main(void *arg)
{
    idem_store_wal_t *w = arg;
    struct timespec at;
    mdb_filehandle_t fd;
    unsigned ticks = 0;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        if (!w->kick) {
            clock_gettime(CLOCK_REALTIME, &at);
            at.tv_nsec += WAL_TICK_NS;
            if (at.tv_nsec >= 1000000000L) {
                at.tv_sec++;
                at.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&w->cv, &w->mu, &at) != ETIMEDOUT) {
                continue;
            }
            pthread_mutex_unlock(&w->mu);
            /* start writing back what LMDB wrote since the last tick, so
             * that a checkpoint's syncs find little left */
            if (mdb_env_get_fd(w->env, &fd) == 0) {
                (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            }
            if (++ticks % WAL_TICKS_UNPIN == 0) {
                wal_unpin_old(w);
            }
            pthread_mutex_lock(&w->mu);
            continue;
        }
        w->kick = 0;
        pthread_mutex_unlock(&w->mu);
        (void)wal_ckpt(w, w->limit / 2, 0);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Frames                                                                    */
/* ------------------------------------------------------------------------ */

static size_t wal_round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Fills the header of the frame of len bytes (header included) at buf. */
static void wal_seal(uint8_t *buf, size_t len, uint32_t kind, uint64_t gen,
                     uint64_t off, uint64_t txnid)
{
    memset(buf, 0, WAL_HDR);
    wal_put32(buf, WAL_FRAME_MAGIC);
    wal_put32(buf + 4, kind);
    wal_put32(buf + 8, (uint32_t)(len - WAL_HDR));
    wal_put64(buf + 16, gen);
    wal_put64(buf + 24, off);
    wal_put64(buf + 32, txnid);
    wal_put32(buf + 12, wal_crc(0, buf, len));
}

/*
 * The length of the valid frame of generation gen at off in log[0..size),
 * or 0 (the end of the log).
 */
static size_t wal_frame_at(const uint8_t *log, size_t size, uint64_t gen,
                           size_t off)
{
    uint8_t hdr[WAL_HDR];
    size_t len;
    uint32_t crc;

    if (size - off < WAL_HDR) {
        return 0;
    }
    memcpy(hdr, log + off, WAL_HDR);
    len = WAL_HDR + (size_t)wal_get32(hdr + 8);
    if (wal_get32(hdr) != WAL_FRAME_MAGIC || wal_get64(hdr + 16) != gen ||
        wal_get64(hdr + 24) != off || wal_round8(len) > size - off) {
        return 0;
    }
    crc = wal_get32(hdr + 12);
    wal_put32(hdr + 12, 0);
    if (wal_crc(wal_crc(0, hdr, WAL_HDR), log + off + WAL_HDR, len - WAL_HDR) !=
        crc) {
        return 0;
    }
    return wal_round8(len);
}

/*
 * Writes zeros from the log file's end up to size (once: the file keeps
 * them), so that a frame's fdatasync overwrites blocks the file has:
 * appending (or filling unwritten extents) would make every sync a
 * journal commit of the file's size too. A step at a time, as the log
 * reaches the end of what is filled, so that a new store writes 1 MiB at
 * its first open, not the whole log. Under the writer lock: no frame is
 * appended meanwhile. Sets w->filled.
 */
static int wal_prefill(idem_store_wal_t *w, uint64_t size)
{
    static const uint8_t zeros[65536];
    struct stat st;
    uint64_t at, n;
    int rc;

    if (fstat(w->log_fd, &st) != 0) {
        return errno;
    }
    w->filled = (uint64_t)st.st_size;
    if (w->filled >= size) {
        return 0;
    }
    for (at = w->filled; at < size; at += n) {
        n = size - at < sizeof(zeros) ? size - at : sizeof(zeros);
        rc = wal_pwrite(w->log_fd, zeros, (size_t)n, (off_t)at);
        if (rc != 0) {
            return rc;
        }
    }
    rc = wal_sync_log(w, 0);
    if (rc == 0) {
        w->filled = size;
    }
    return rc;
}

/* Appends a frame (its header filled here); a cancel frame is synced
 * here, a redo frame by wal_durable() after its commit. */
static int wal_append(idem_store_wal_t *w, uint8_t *buf, size_t len,
                      uint32_t kind, uint64_t txnid, uint64_t *at)
{
    uint64_t off = w->shm->head;
    size_t flen = wal_round8(len);
    int rc;

    memset(buf + len, 0, flen - len);
    wal_seal(buf, flen, kind, w->shm->gen, off, txnid);
    rc =
        off + flen > w->filled ? wal_prefill(w, off + flen + WAL_FILL_STEP) : 0;
    /* the header's length counts the padding: wal_frame_at checks it */
    if (rc == 0) {
        rc = wal_pwrite(w->log_fd, buf, flen, (off_t)off);
    }
    if (rc == 0 && kind == WAL_KIND_CANCEL) {
        rc = wal_sync_log(w, 0);
    }
    if (rc != 0) {
        /* the frame may be on disk even so: a new generation before the
         * next append puts it out of the log */
        w->shm->busy = 1;
        return rc;
    }
    w->shm->head = off + flen;
    if (kind == WAL_KIND_REDO) {
        w->shm->last_off = off;
        w->shm->last_txnid = txnid;
    }
    *at = off;
    return 0;
}

/*
 * Returns once transaction t (committed, so its frame written) is on disk:
 * at once if a sync or checkpoint has covered it, else after a sync of the
 * log (wal_sync_log), which covers every frame written before it began.
 * Outside the writer lock (held 0), commits overlap the sync, and the
 * next sync covers them all. When the sync fails, a checkpoint (data.mdb
 * synced, its metas saved, which covers every commit) is tried instead;
 * if that fails too, "busy" is left, so that the next commit checkpoints
 * first, and t is not known durable.
 */
static int wal_durable(idem_store_wal_t *w, uint64_t t, int held)
{
    int rc;

    if (__atomic_load_n(&w->shm->durable, __ATOMIC_ACQUIRE) >= t) {
        return 0;
    }
    rc = wal_sync_log(w, t);
    if (rc == 0) {
        return 0;
    }
    rc = held ? wal_ckpt_held(w, 0) : wal_ckpt(w, 0, 0);
    if (rc == 0 && __atomic_load_n(&w->shm->durable, __ATOMIC_ACQUIRE) >= t) {
        return 0;
    }
    __atomic_store_n(&w->shm->busy, 1, __ATOMIC_RELEASE);
    return rc != 0 ? rc : EIO;
}

/* The key slot of key (FNV-1a of its bytes). */
static size_t wal_slot(const MDB_val *key)
{
    const uint8_t *p = key->mv_data;
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < key->mv_size; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return (size_t)(h % WAL_RECENT);
}

int idem_store_wal_readable(idem_store_wal_t *w, MDB_txn *rtxn,
                            const MDB_val *key, int wait)
{
    /* the record was written by a transaction no newer than the snapshot
     * and no newer than its slot's */
    uint64_t t = mdb_txn_id(rtxn),
             r = __atomic_load_n(&w->shm->recent[wal_slot(key)],
                                 __ATOMIC_ACQUIRE);

    if (r < t) {
        t = r;
    }
    if (__atomic_load_n(&w->shm->durable, __ATOMIC_ACQUIRE) >= t) {
        return 0;
    }
    return wait ? wal_durable(w, t, 0) : EAGAIN;
}

void idem_store_wal_begin(idem_store_wal_t *w, uint64_t txnid)
{
    w->txnid = txnid;
    if (w->cap > WAL_BUF_KEEP) {
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
    w->len = WAL_HDR;
    w->oom = 0;
}

void idem_store_wal_record(idem_store_wal_t *w, unsigned db, const MDB_val *key,
                           const MDB_val *val)
{
    size_t vlen = val != NULL ? val->mv_size : 0;
    size_t need = w->len + WAL_REC_HDR + key->mv_size + vlen + 8;
    uint8_t *p;

    /* before the commit: a reader of the key then waits for its sync */
    wal_raise(&w->shm->recent[wal_slot(key)], w->txnid);
    if (w->oom) {
        return;
    }
    if (key->mv_size > UINT32_MAX || vlen > UINT32_MAX ||
        need > (size_t)UINT32_MAX) {
        w->oom = 1; /* a frame's length is 32 bits: the commit fails */
        return;
    }
    if (need > w->cap) {
        size_t cap = w->cap ? w->cap : 16384;

        while (cap < need) {
            cap *= 2;
        }
        p = realloc(w->buf, cap);
        if (p == NULL) {
            w->oom = 1;
            return;
        }
        w->buf = p;
        w->cap = cap;
    }
    p = w->buf + w->len;
    p[0] = val != NULL ? WAL_OP_PUT : WAL_OP_DEL;
    p[1] = (uint8_t)db;
    p[2] = p[3] = 0;
    wal_put32(p + 4, (uint32_t)key->mv_size);
    wal_put32(p + 8, (uint32_t)vlen);
    memcpy(p + WAL_REC_HDR, key->mv_data, key->mv_size);
    if (vlen > 0) {
        memcpy(p + WAL_REC_HDR + key->mv_size, val->mv_data, vlen);
    }
    w->len += WAL_REC_HDR + key->mv_size + vlen;
}

/* Appends a frame cancelling the redo frame at off of transaction txnid,
 * in the log's current generation; the caller holds the writer lock. */
static int wal_cancel_held(idem_store_wal_t *w, uint64_t off, uint64_t txnid)
{
    uint8_t buf[WAL_HDR + 16];
    uint64_t at;
    int rc;

    wal_put64(buf + WAL_HDR, off);
    wal_put64(buf + WAL_HDR + 8, txnid);
    rc = wal_append(w, buf, sizeof(buf), WAL_KIND_CANCEL, 0, &at);
    if (rc == 0 && w->shm->last_off == off) {
        w->shm->last_txnid = 0;
    }
    return rc;
}

/* Cancels the frame at off (generation gen) of a commit that failed: under
 * the lock again, unless a checkpoint has started the log over since (the
 * frame is then out of the log already). If this cannot be done, the next
 * commit finds the frame by its transaction id. */
static void wal_cancel(idem_store_wal_t *w, uint64_t gen, uint64_t off,
                       uint64_t txnid)
{
    MDB_txn *txn;

    if (mdb_txn_begin(w->env, NULL, 0, &txn) != 0) {
        return;
    }
    if (w->shm->gen == gen) {
        (void)wal_cancel_held(w, off, txnid);
    }
    mdb_txn_abort(txn);
}

int idem_store_wal_settle(idem_store_wal_t *w, uint64_t t)
{
    return t == 0 ? 0 : wal_durable(w, t, 0);
}

int idem_store_wal_commit(idem_store_wal_t *w, MDB_txn *txn, uint64_t *settle)
{
    uint64_t at, gen, txnid = mdb_txn_id(txn);
    int rc = 0, dead;

    if (w->oom) {
        mdb_txn_abort(txn);
        return ENOMEM;
    }
    *settle = 0;
    wal_unpin_old(w);
    if (w->len == WAL_HDR) {
        /* wrote nothing; what it read may be another's commit not synced */
        rc = mdb_txn_commit(txn);
        *settle = rc == 0 ? txnid - 1 : 0;
        return rc;
    }
    dead = !wal_pinned(w);
    if (dead || w->shm->busy ||
        __atomic_load_n(&w->shm->sync_failed, __ATOMIC_ACQUIRE) ||
        (w->shm->head > 0 && w->shm->head + w->len > w->limit * WAL_HARD)) {
        /* a new generation: no earlier frame is left to cancel, and
         * everything committed is durable */
        rc = wal_ckpt_held(w, dead || w->shm->busy);
    } else {
        if (w->shm->last_txnid != 0 && w->shm->last_txnid >= txnid) {
            /* the last frame's process died before its commit */
            rc = wal_cancel_held(w, w->shm->last_off, w->shm->last_txnid);
        }
        if (rc == 0 &&
            txnid > __atomic_load_n(&w->shm->durable, __ATOMIC_ACQUIRE) +
                        WAL_AHEAD) {
            rc = wal_durable(w, txnid - 1, 1);
        }
    }
    gen = w->shm->gen;
    if (rc == 0) {
        rc = wal_append(w, w->buf, w->len, WAL_KIND_REDO, txnid, &at);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        /* (the next transaction gets the same id: written stays below) */
        wal_cancel(w, gen, at, txnid);
        return rc;
    }
    wal_raise(&w->shm->written, txnid);
    if (w->shm->head >= w->limit) {
        pthread_mutex_lock(&w->mu);
        w->kick = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    /* the lock is free again: the next commit may overlap this sync */
    *settle = txnid;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Recovery                                                                  */
/* ------------------------------------------------------------------------ */

/* Hands the redo records of one frame's payload to apply, in order. */
static int wal_records(const uint8_t *p, size_t n, idem_store_wal_apply_t apply,
                       void *ctx)
{
    /* a payload ends in fewer than 8 bytes of padding (zeros) */
    while (n >= WAL_REC_HDR) {
        unsigned op = p[0], db = p[1];
        size_t klen = wal_get32(p + 4), vlen = wal_get32(p + 8);
        MDB_val k, v;
        int rc;

        if ((op != WAL_OP_PUT && op != WAL_OP_DEL) ||
            db >= IDEM_STORE_WAL_DBIS || klen == 0 || klen > n - WAL_REC_HDR ||
            vlen > n - WAL_REC_HDR - klen || (op == WAL_OP_DEL && vlen != 0)) {
            return MDB_CORRUPTED;
        }
        k.mv_size = klen;
        k.mv_data = (void *)(p + WAL_REC_HDR);
        v.mv_size = vlen;
        v.mv_data = (void *)(p + WAL_REC_HDR + klen);
        rc = apply(ctx, db, &k, op == WAL_OP_PUT ? &v : NULL);
        if (rc != 0) {
            return rc;
        }
        p += WAL_REC_HDR + klen + vlen;
        n -= WAL_REC_HDR + klen + vlen;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return MDB_CORRUPTED;
        }
    }
    return 0;
}

/* Whether the frame at off of transaction txnid is named by a cancel
 * frame (cancels: n/2 pairs of offset and transaction id). */
static int wal_cancelled(const uint64_t *cancels, size_t n, uint64_t off,
                         uint64_t txnid)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (cancels[i] == off && cancels[i + 1] == txnid) {
            return 1;
        }
    }
    return 0;
}

int idem_store_wal_scan(const uint8_t *log, size_t size, uint64_t gen,
                        idem_store_wal_apply_t apply, void *ctx)
{
    uint64_t *cancels;
    size_t n = 0, len, off;
    int rc = 0;

    cancels = malloc((size / WAL_HDR + 1) * 2 * sizeof(*cancels));
    if (cancels == NULL) {
        return ENOMEM;
    }
    for (off = 0; (len = wal_frame_at(log, size, gen, off)) > 0; off += len) {
        if (wal_get32(log + off + 4) == WAL_KIND_CANCEL &&
            len >= WAL_HDR + 16) {
            cancels[n++] = wal_get64(log + off + WAL_HDR);
            cancels[n++] = wal_get64(log + off + WAL_HDR + 8);
        }
    }
    for (off = 0; rc == 0 && (len = wal_frame_at(log, size, gen, off)) > 0;
         off += len) {
        if (wal_get32(log + off + 4) == WAL_KIND_REDO &&
            !wal_cancelled(cancels, n, off, wal_get64(log + off + 32))) {
            rc = wal_records(log + off + WAL_HDR, len - WAL_HDR, apply, ctx);
        }
    }
    free(cancels);
    return rc;
}

typedef struct {
    idem_store_wal_t *w;
    MDB_txn *txn;
} wal_replay_t;

static int wal_replay_one(void *ctx, unsigned db, const MDB_val *key,
                          const MDB_val *val)
{
    wal_replay_t *r = ctx;
    MDB_val k = *key, v;
    int rc;

    if (val != NULL) {
        v = *val;
        return mdb_put(r->txn, r->w->dbis[db], &k, &v, 0);
    }
    rc = mdb_del(r->txn, r->w->dbis[db], &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Applies the frames of generation gen of the log read at open to the
 * environment, in one transaction (synced by the checkpoint after it). */
static int wal_replay(idem_store_wal_t *w, uint64_t gen)
{
    wal_replay_t r;
    int rc;

    r.w = w;
    rc = mdb_txn_begin(w->env, NULL, 0, &r.txn);
    if (rc == 0) {
        rc = idem_store_wal_scan(w->rlog, w->rlog_len, gen, wal_replay_one, &r);
        if (rc == 0) {
            rc = mdb_txn_commit(r.txn);
        } else {
            mdb_txn_abort(r.txn);
        }
    }
    return rc;
}

/* The newest transaction a valid redo frame of generation gen names. */
static uint64_t wal_last_txnid(const uint8_t *log, size_t size, uint64_t gen)
{
    uint64_t last = 0;
    size_t len;

    for (size_t off = 0; (len = wal_frame_at(log, size, gen, off)) > 0;
         off += len) {
        if (wal_get32(log + off + 4) == WAL_KIND_REDO &&
            wal_get64(log + off + 32) > last) {
            last = wal_get64(log + off + 32);
        }
    }
    return last;
}

/*
 * After a power loss: puts the checkpoint's meta pages back at the start
 * of dir/data.mdb, when the file is the one checkpointed: its newest
 * transaction is at least the checkpoint's and at most WAL_AHEAD past the
 * last the log names (the frames of the last commits may not have reached
 * the disk while their meta did; a file that is missing, older, or was
 * written further past the log, as with wal=0, is left alone, and the log
 * is not applied). Sets *did.
 */
static int wal_restore(const char *dir, const wal_ckpt_t *c, uint64_t logged,
                       int *did)
{
    char path[4096];
    uint8_t *now;
    uint64_t t0, t1, t;
    int fd, n, rc;

    *did = 0;
    n = snprintf(path, sizeof(path), "%s/data.mdb", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return ENAMETOOLONG;
    }
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : errno;
    }
    now = malloc(2 * (size_t)c->psize);
    rc = now == NULL ? ENOMEM : wal_pread(fd, now, 2 * (size_t)c->psize, 0);
    t0 = rc == 0 ? wal_meta_txnid(now) : 0;
    t1 = rc == 0 ? wal_meta_txnid(now + c->psize) : 0;
    t = t0 > t1 ? t0 : t1;
    if (rc == 0 && t >= c->txnid &&
        t <= (logged > c->txnid ? logged : c->txnid) + WAL_AHEAD) {
        rc = wal_pwrite(fd, c->metas, 2 * (size_t)c->psize, 0);
        if (rc == 0) {
            rc = wal_sync(fd);
        }
        *did = rc == 0;
    } else if (rc == ENODATA) {
        rc = 0;
    }
    close(fd);
    free(now);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Opening and closing                                                       */
/* ------------------------------------------------------------------------ */

/* Maps wal.shm (its descriptor kept for the pin's lock); *fresh when it is
 * not this boot's. */
static int wal_map(idem_store_wal_t *w, const char *dir, int *fresh)
{
    struct stat st;
    void *p;
    int rc;

    rc = wal_file(dir, "wal.shm", &w->shm_fd);
    if (rc != 0) {
        return rc;
    }
    if (fstat(w->shm_fd, &st) != 0 ||
        (st.st_size < WAL_SHM_SIZE &&
         ftruncate(w->shm_fd, WAL_SHM_SIZE) != 0)) {
        return errno;
    }
    p = mmap(NULL, WAL_SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, w->shm_fd,
             0);
    if (p == MAP_FAILED) {
        return errno;
    }
    w->shm = p;
    *fresh = w->shm->magic != WAL_SHM_MAGIC || w->shm->version != WAL_VERSION ||
             memcmp(w->shm->boot, w->boot, 40) != 0;
    return 0;
}

/* Reads the whole log into w->rlog for a recovery. */
static int wal_read_log(idem_store_wal_t *w)
{
    struct stat st;

    if (fstat(w->log_fd, &st) != 0) {
        return errno;
    }
    w->rlog_len = (size_t)st.st_size;
    w->rlog = malloc(w->rlog_len > 0 ? w->rlog_len : 1);
    if (w->rlog == NULL) {
        return ENOMEM;
    }
    return w->rlog_len > 0 ? wal_pread(w->log_fd, w->rlog, w->rlog_len, 0) : 0;
}

/*
 * Decides, under the opening lock, what wal.shm not being this boot's
 * means: a new boot after a checkpoint of an earlier one (restore its
 * snapshot now, replay in start()), a wal.shm lost within this boot, or a
 * new log. wal.shm is made anew either way, but names this boot only once
 * start()'s checkpoint is durable: an opener that dies before leaves the
 * recovery to the next one.
 */
static int wal_recover_metas(idem_store_wal_t *w, const char *dir)
{
    wal_ckpt_t c = {0};
    int rc, did;

    rc = wal_ckpt_load(w->ckpt_fd, &c);
    if (rc == ENOENT) {
        rc = 0;
    } else if (rc == 0 && memcmp(c.boot, w->boot, 40) != 0) {
        rc = wal_read_log(w);
        if (rc == 0) {
            rc = wal_restore(dir, &c,
                             wal_last_txnid(w->rlog, w->rlog_len, c.gen), &did);
        }
        w->recover = rc == 0 && did;
        w->recover_gen = c.gen;
    }
    free(c.metas);
    if (rc == 0) {
        memset(w->shm, 0, sizeof(*w->shm));
        w->shm->magic = WAL_SHM_MAGIC;
        w->shm->version = WAL_VERSION;
        w->shm->seq = c.seq;
        w->shm->unpinned = 1;
    }
    return rc;
}

/* The byte of wal.shm every handle with the log holds a read lock on (an
 * OFD lock: released when it closes, or its process dies). */
static int wal_user_lock(int fd, short type, int cmd)
{
    struct flock fl;

    memset(&fl, 0, sizeof(fl));
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = WAL_SHM_SIZE - 1;
    fl.l_len = 1;
    if (fcntl(fd, cmd, &fl) != 0) {
        return -1;
    }
    return fl.l_type;
}

int idem_store_wal_forget(const char *dir)
{
    char path[4096];
    int n, fd, rc = 0;

    n = snprintf(path, sizeof(path), "%s/wal.shm", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        return ENAMETOOLONG;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        /* a process that uses the log has it open: not ours to undo */
        n = wal_user_lock(fd, F_WRLCK, F_OFD_GETLK);
        close(fd);
        if (n != F_UNLCK) {
            return n < 0 ? errno : EBUSY;
        }
    }
    snprintf(path, sizeof(path), "%s/wal.ckpt", dir);
    if (unlink(path) != 0 && errno != ENOENT) {
        return errno;
    }
    /* also when an earlier open removed it and failed to sync */
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rc = errno;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

int idem_store_wal_open(idem_store_wal_t *w, const char *dir, int *on)
{
    int rc, fresh = 0;

    memset(w, 0, sizeof(*w));
    w->log_fd = w->ckpt_fd = w->shm_fd = -1;
    *on = 0;
    if (wal_boot_id(w->boot) != 0) {
        return 0; /* no boot id: LMDB's own synced commits */
    }
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        return ENOMEM;
    }
    if (pthread_cond_init(&w->cv, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        return ENOMEM;
    }
    if (pthread_cond_init(&w->sync_cv, NULL) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return ENOMEM;
    }
    *on = 1;
    rc = wal_random(&w->id);
    if (rc == 0) {
        rc = wal_file(dir, "wal.ckpt", &w->ckpt_fd);
    }
    while (rc == 0 && flock(w->ckpt_fd, LOCK_EX) != 0) {
        rc = errno == EINTR ? 0 : errno;
    }
    if (rc == 0) {
        rc = wal_file(dir, "wal.log", &w->log_fd);
    }
    if (rc == 0) {
        rc = wal_map(w, dir, &fresh);
    }
    if (rc == 0 && wal_user_lock(w->shm_fd, F_RDLCK, F_OFD_SETLK) < 0) {
        rc = errno;
    }
    if (rc == 0 && fresh) {
        rc = wal_recover_metas(w, dir);
    }
    if (rc != 0) {
        idem_store_wal_close(w);
        *on = 0;
    }
    return rc;
}

/* fsyncs the environment's directory: the entries of data.mdb and of the
 * log's files are durable before any frame or checkpoint is written. */
static int wal_sync_dir(MDB_env *env)
{
    const char *dir;
    int fd, rc;

    rc = mdb_env_get_path(env, &dir);
    if (rc != 0) {
        return rc;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    rc = fd < 0 || fsync(fd) != 0 ? errno : 0;
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

int idem_store_wal_start(idem_store_wal_t *w, MDB_env *env,
                         const MDB_dbi dbis[IDEM_STORE_WAL_DBIS])
{
    MDB_stat st;
    MDB_txn *txn;
    int rc;

    w->env = env;
    memcpy(w->dbis, dbis, sizeof(w->dbis));
    rc = mdb_env_stat(env, &st);
    if (rc == 0) {
        w->psize = st.ms_psize;
        rc = w->psize <= WAL_PSIZE_MAX ? 0 : EINVAL;
    }
    if (rc == 0) {
        rc = wal_sync_dir(env);
    }
    if (rc == 0 && w->recover) {
        rc = wal_replay(w, w->recover_gen);
    }
    w->recover = 0;
    free(w->rlog);
    w->rlog = NULL;
    if (rc == 0) {
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    }
    if (rc == 0) {
        rc = wal_ckpt_held(w, 1);
        if (rc == 0) {
            rc = wal_prefill(w, WAL_FILL_STEP);
        }
        if (rc == 0) {
            /* recovered, if it had to be: wal.shm is this boot's now */
            memcpy(w->shm->boot, w->boot, 40);
        }
        mdb_txn_abort(txn);
    }
    (void)flock(w->ckpt_fd, LOCK_UN);
    if (rc == 0) {
        rc = pthread_create(&w->thread, NULL, wal_main, w);
        w->thread_on = rc == 0;
    }
    return rc;
}

void idem_store_wal_close(idem_store_wal_t *w)
{
    MDB_txn *txn;

    if (w->thread_on) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
        w->thread_on = 0;
    }
    if (w->pin != NULL) {
        /* leave "unpinned" if ours is the current checkpoint's pin, under
         * the lock (the pin's lock goes with wal.shm's descriptor too) */
        if (w->shm != NULL && w->pin_seq == w->shm->seq &&
            mdb_txn_begin(w->env, NULL, 0, &txn) == 0) {
            if (w->pin_seq == w->shm->seq) {
                w->shm->unpinned = 1;
            }
            mdb_txn_abort(txn);
        }
        mdb_txn_abort(w->pin);
        w->pin = NULL;
    }
    if (w->shm != NULL) {
        munmap(w->shm, WAL_SHM_SIZE);
        w->shm = NULL;
    }
    if (w->shm_fd >= 0) {
        close(w->shm_fd);
    }
    if (w->log_fd >= 0) {
        close(w->log_fd);
    }
    if (w->ckpt_fd >= 0) {
        close(w->ckpt_fd); /* drops the opening lock if still held */
    }
    w->log_fd = w->ckpt_fd = w->shm_fd = -1;
    free(w->buf);
    w->buf = NULL;
    free(w->rlog);
    w->rlog = NULL;
    pthread_cond_destroy(&w->sync_cv);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}
