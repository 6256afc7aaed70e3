/*
 * lmdb_wal.c — the LMDB store's write-ahead log across crashes and power
 * losses (lib/store/lmdb_wal.h).
 *
 * A power loss is made the way the disk would see it: the writer is killed
 * with SIGKILL, then data.mdb is rebuilt page by page from two copies, the
 * file as it was at the last checkpoint and as it is at the kill, each page
 * taken from one or the other at random (the kernel writes dirty pages
 * back in any order, and any of them may have reached the disk), and the
 * boot id the log's files were written under is changed (a new boot). The
 * store opened then must hold every write that was acknowledged, and none
 * that was not, and take new writes.
 *
 * Writers are forked children; they report each acknowledged write
 * through a pipe and are killed, never closed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "idem.h"
#include "store/lmdb_wal.h"

#define T0    1700000000000LL
#define TTL   86400000LL
#define LEASE 60000LL

/* wal.ckpt's layout (lmdb_wal.c): two slots of a 4 KiB header and two
 * meta pages of up to 64 KiB; the boot id at 40 in the header, whose CRC
 * (at 8) covers the header and the meta pages. */
#define SLOT_SIZE (4096 + 2 * 65536)

typedef struct {
    char dir[64];
    char url[160];
} fixture_t;

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void path_of(const fixture_t *f, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/env/%s", f->dir, name);

    assert_true(n > 0 && (size_t)n < cap);
}

/* The whole of file name into *len bytes (malloc'd). */
static uint8_t *slurp(const fixture_t *f, const char *name, size_t *len)
{
    char path[256];
    struct stat st;
    uint8_t *buf;
    int fd;

    path_of(f, name, path, sizeof(path));
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

static void spill(const fixture_t *f, const char *name, const uint8_t *buf,
                  size_t len, off_t at)
{
    char path[256];
    int fd;

    path_of(f, name, path, sizeof(path));
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, at), (ssize_t)len);
    close(fd);
}

static uint32_t crc32c(uint32_t c, const uint8_t *p, size_t n)
{
    c = ~c;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
    }
    return ~c;
}

/* What a new boot leaves: wal.shm of no boot, the checkpoints (if any) of
 * another. */
static void new_boot(const fixture_t *f)
{
    char path[256];
    uint8_t *ck, *h;
    uint32_t psize, crc;
    size_t len;

    path_of(f, "wal.shm", path, sizeof(path));
    assert_int_equal(unlink(path), 0);
    path_of(f, "wal.ckpt", path, sizeof(path));
    if (access(path, F_OK) != 0) {
        return;
    }
    ck = slurp(f, "wal.ckpt", &len);
    for (size_t i = 0; i < 2 && i * SLOT_SIZE + 4096 <= len; i++) {
        h = ck + i * SLOT_SIZE;
        memcpy(&psize, h + 12, 4);
        if (memcmp(h, "ICKP", 4) != 0 || psize > 65536 ||
            i * SLOT_SIZE + 4096 + 2 * (size_t)psize > len) {
            continue;
        }
        memset(h + 40, 0, 40);
        memcpy(h + 40, "an-earlier-boot", 15);
        memset(h + 8, 0, 4);
        crc = crc32c(crc32c(0, h, 128), h + 4096, 2 * (size_t)psize);
        memcpy(h + 8, &crc, 4);
    }
    spill(f, "wal.ckpt", ck, len, 0);
    free(ck);
}

/*
 * data.mdb as a power loss may leave it: each page from the file at the
 * checkpoint (old) or at the kill (now), at random; pages only the new
 * file has are new pages or zeros.
 */
static void lose_pages(const fixture_t *f, const uint8_t *old, size_t old_len,
                       unsigned seed)
{
    size_t now_len, ps = 4096;
    uint8_t *now = slurp(f, "data.mdb", &now_len);

    srand(seed);
    assert_true(now_len >= old_len);
    for (size_t at = 0; at + ps <= now_len; at += ps) {
        if (rand() & 1) {
            continue;
        }
        if (at + ps <= old_len) {
            memcpy(now + at, old + at, ps);
        } else {
            memset(now + at, 0, ps);
        }
    }
    spill(f, "data.mdb", now, now_len, 0);
    free(now);
}

/* wal.shm's fields (lmdb_wal.c): after magic, version and the boot id. */
#define SHM_GEN         48
#define SHM_HEAD        56
#define SHM_SEQ         64
#define SHM_BUSY        76
#define SHM_LAST_OFF    80
#define SHM_LAST_TXNID  88
#define SHM_DURABLE     112
#define SHM_SYNC_FAILED 120
#define SHM_DATA_FAILED 124

static uint64_t shm_get(const fixture_t *f, size_t at)
{
    size_t len;
    uint8_t *shm = slurp(f, "wal.shm", &len);
    uint64_t v;

    memcpy(&v, shm + at, 8);
    free(shm);
    return v;
}

static void shm_set(const fixture_t *f, size_t at, const void *v, size_t n)
{
    spill(f, "wal.shm", v, n, (off_t)at);
}

/* The transaction the next commit makes: one past data.mdb's newest. */
static uint64_t next_txnid(const fixture_t *f)
{
    size_t len;
    uint8_t *d = slurp(f, "data.mdb", &len);
    uint64_t t0, t1;

    memcpy(&t0, d + 144, 8);
    memcpy(&t1, d + 4096 + 144, 8);
    free(d);
    return (t0 > t1 ? t0 : t1) + 1;
}

/* ------------------------------------------------------------------------ */
/* Records                                                                   */
/* ------------------------------------------------------------------------ */

static const idem_header_t ct[] = {
    {{"Content-Type", 12}, {"application/json", 16}},
};

/* The response stored for key number i: a body of its own, ~600 bytes. */
static void response_of(int i, char *body, size_t cap, idem_response_t *r)
{
    int n = snprintf(body, cap, "{\"order\":%d,\"pad\":\"%0580d\"}", i, i);

    assert_true(n > 0 && (size_t)n < cap);
    r->status = 201;
    r->headers = ct;
    r->nheaders = 1;
    r->body = (const uint8_t *)body;
    r->body_len = (size_t)n;
}

static const idem_response_t unknown = {504, ct, 1, (const uint8_t *)"{}", 2};

static idem_hash_t scope(void)
{
    idem_hash_t h;

    memset(h.bytes, 0x5c, sizeof(h.bytes));
    return h;
}

static void key_of(int i, char *key, size_t cap)
{
    snprintf(key, cap, "order-%06d", i);
}

/* Claims and completes key i; 0 when both are acknowledged. */
static int write_one(idem_store_t *s, int i)
{
    idem_hash_t sc = scope(), fp;
    idem_begin_t in;
    idem_result_t res;
    idem_response_t r;
    char key[32], body[700];
    int rc;

    key_of(i, key, sizeof(key));
    memset(fp.bytes, i & 0xff, sizeof(fp.bytes));
    memset(&in, 0, sizeof(in));
    in.scope = &sc;
    in.key = key;
    in.key_len = strlen(key);
    in.fingerprint = &fp;
    in.now_ms = T0;
    in.ttl_ms = TTL;
    in.lease_ms = LEASE;
    in.on_unknown = IDEM_ON_UNKNOWN_STORE;
    in.unknown_response = &unknown;
    rc = idem_store_begin(s, &in, &res);
    if (rc != 0) {
        return rc;
    }
    rc = res.outcome == IDEM_BEGIN_CLAIMED ? 0 : -1;
    if (rc == 0) {
        response_of(i, body, sizeof(body), &r);
        rc = idem_store_complete(s, &sc, key, strlen(key), res.owner, &r, 0);
    }
    idem_result_free(&res);
    return rc;
}

static int delete_one(idem_store_t *s, int i)
{
    idem_hash_t sc = scope();
    char key[32];

    key_of(i, key, sizeof(key));
    return idem_store_delete(s, &sc, key, strlen(key));
}

/* Key i is complete with its response (present) or absent. */
static void expect_key(idem_store_t *s, int i, int present)
{
    idem_hash_t sc = scope();
    idem_result_t res;
    idem_response_t want;
    char key[32], body[700];

    key_of(i, key, sizeof(key));
    if (!present) {
        assert_int_equal(idem_store_get(s, &sc, key, strlen(key), &res),
                         IDEM_ENOTFOUND);
        return;
    }
    assert_int_equal(idem_store_get(s, &sc, key, strlen(key), &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    response_of(i, body, sizeof(body), &want);
    assert_int_equal(res.record.response.status, 201);
    assert_int_equal(res.record.response.body_len, want.body_len);
    assert_memory_equal(res.record.response.body, want.body, want.body_len);
    idem_result_free(&res);
}

static uint64_t records(idem_store_t *s)
{
    idem_store_usage_t u;

    assert_int_equal(idem_store_usage(s, &u), 0);
    return u.records;
}

/* ------------------------------------------------------------------------ */
/* Writers                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    pid_t pid;
    int acks; /* read end: one int per acknowledged step */
    int go;   /* write end: a byte lets the writer start */
} writer_t;

/*
 * Forks a writer: it opens the store, says so (ack -1), waits for go,
 * then writes keys from..to-1 (ack i after each), deletes every key
 * below del (ack -2 then), and waits to be killed.
 */
static writer_t start_writer(const fixture_t *f, int from, int to, int del)
{
    writer_t w;
    int a[2], g[2], v;
    idem_store_t *s = NULL;
    char c;

    assert_int_equal(pipe(a), 0);
    assert_int_equal(pipe(g), 0);
    w.pid = fork();
    assert_true(w.pid >= 0);
    if (w.pid == 0) {
        /* a test that fails leaves it behind: it dies with the suite */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[0]);
        close(g[1]);
        if (idem_store_open(f->url, &s) != 0) {
            _exit(2);
        }
        v = -1;
        if (write(a[1], &v, sizeof(v)) != sizeof(v) || read(g[0], &c, 1) != 1) {
            _exit(3);
        }
        for (v = from; v < to; v++) {
            if (write_one(s, v) != 0 || write(a[1], &v, sizeof(v)) < 0) {
                _exit(4);
            }
        }
        for (v = 0; v < del; v++) {
            if (delete_one(s, v) != 0) {
                _exit(5);
            }
        }
        v = -2;
        if (write(a[1], &v, sizeof(v)) < 0) {
            _exit(6);
        }
        for (;;) {
            pause();
        }
    }
    close(a[1]);
    close(g[0]);
    w.acks = a[0];
    w.go = g[1];
    return w;
}

/* The writer's next ack. */
static int next_ack(const writer_t *w)
{
    int v = -100;

    assert_int_equal(read(w->acks, &v, sizeof(v)), (ssize_t)sizeof(v));
    return v;
}

static void kill_writer(writer_t *w)
{
    int status;

    assert_int_equal(kill(w->pid, SIGKILL), 0);
    assert_int_equal(waitpid(w->pid, &status, 0), w->pid);
    assert_true(WIFSIGNALED(status));
    close(w->acks);
    close(w->go);
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */
/* ------------------------------------------------------------------------ */

static int setup_with(void **state, const char *opts)
{
    fixture_t *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    strcpy(f->dir, "/tmp/idem-wal-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->url, sizeof(f->url), "lmdb:%s/env?map_size=256m&%s", f->dir,
             opts);
    *state = f;
    return 0;
}

/* A log far larger than the test writes: no checkpoint but the open's. */
static int setup_long_log(void **state)
{
    return setup_with(state, "wal_size=256m");
}

/* A small log: checkpoints every few dozen writes. */
static int setup_short_log(void **state)
{
    return setup_with(state, "wal_size=64k");
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static idem_store_t *open_url(const fixture_t *f)
{
    idem_store_t *s = NULL;

    assert_int_equal(idem_store_open(f->url, &s), 0);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The checkpoint's snapshot is pinned: after 400 acknowledged keys and 100
 * deletes, any mix of the file's pages then and at the kill, with the meta
 * pages put back and the log replayed, is the acknowledged state.
 */
static void test_power_loss_keeps_what_was_acknowledged(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s;
    uint8_t *old;
    size_t old_len;
    writer_t w;

    /* 200 keys before the writer's checkpoint */
    s = open_url(f);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(write_one(s, i), 0);
    }
    idem_store_close(s);

    for (unsigned seed = 1; seed <= 3; seed++) {
        /* each round starts from the state the last one recovered */
        w = start_writer(f, 1000 * (int)seed, 1000 * (int)seed + 400,
                         seed == 1 ? 100 : 0);
        assert_int_equal(next_ack(&w), -1);
        old = slurp(f, "data.mdb", &old_len);
        assert_int_equal(write(w.go, "g", 1), 1);
        for (int i = 0; i < 400; i++) {
            assert_int_equal(next_ack(&w), 1000 * (int)seed + i);
        }
        assert_int_equal(next_ack(&w), -2);
        kill_writer(&w);

        lose_pages(f, old, old_len, seed);
        free(old);
        new_boot(f);
        s = open_url(f);
        for (int i = 0; i < 200; i++) {
            expect_key(s, i, i >= 100);
        }
        for (unsigned r = 1; r <= seed; r++) {
            for (int i = 0; i < 400; i++) {
                expect_key(s, 1000 * (int)r + i, 1);
            }
        }
        assert_int_equal(records(s), 100 + 400 * seed);
        /* and it takes new writes */
        assert_int_equal(write_one(s, 99999), 0);
        assert_int_equal(delete_one(s, 99999), 0);
        idem_store_close(s);
    }
}

/*
 * Many checkpoints (each starting the log over) while two processes
 * write, both killed: a new boot finds every acknowledged key.
 */
static void test_two_writers_across_checkpoints(void **state)
{
    fixture_t *f = *state;
    writer_t a, b;
    idem_store_t *s;
    uint8_t *ck;
    size_t len;
    uint64_t seq0, seq1;

    a = start_writer(f, 0, 600, 0);
    assert_int_equal(next_ack(&a), -1);
    b = start_writer(f, 10000, 10600, 0);
    assert_int_equal(next_ack(&b), -1);
    assert_int_equal(write(a.go, "g", 1), 1);
    assert_int_equal(write(b.go, "g", 1), 1);
    for (int i = 0; i < 600; i++) {
        assert_int_equal(next_ack(&a), i);
        assert_int_equal(next_ack(&b), 10000 + i);
    }
    kill_writer(&a);
    kill_writer(&b);

    /* 1,200 keys of ~700 bytes, twice each, through a 64 KiB log */
    ck = slurp(f, "wal.ckpt", &len);
    memcpy(&seq0, ck + 16, 8);
    memcpy(&seq1, ck + SLOT_SIZE + 16, 8);
    free(ck);
    assert_true((seq0 > seq1 ? seq0 : seq1) > 10);

    new_boot(f);
    s = open_url(f);
    for (int i = 0; i < 600; i++) {
        expect_key(s, i, 1);
        expect_key(s, 10000 + i, 1);
    }
    assert_int_equal(records(s), 1200);
    idem_store_close(s);
}

/*
 * A frame torn by the power loss (being written when it came: its sync
 * never returned, so its commit never happened) ends the log, and what
 * came before is all there.
 */
static void test_torn_last_frame_ends_the_log(void **state)
{
    fixture_t *f = *state;
    writer_t w;
    idem_store_t *s;
    uint8_t torn[512];
    uint64_t gen, head, txnid;
    uint32_t v;

    w = start_writer(f, 0, 50, 0);
    assert_int_equal(next_ack(&w), -1);
    assert_int_equal(write(w.go, "g", 1), 1);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(next_ack(&w), i);
    }
    kill_writer(&w);

    /* the next frame's header made it to the disk, not all of its body */
    gen = shm_get(f, SHM_GEN);
    head = shm_get(f, SHM_HEAD);
    txnid = next_txnid(f);
    memset(torn, 0xab, sizeof(torn));
    memcpy(torn, "IWAL", 4);
    v = 1;
    memcpy(torn + 4, &v, 4);
    v = 2000;
    memcpy(torn + 8, &v, 4);
    memcpy(torn + 16, &gen, 8);
    memcpy(torn + 24, &head, 8);
    memcpy(torn + 32, &txnid, 8);
    spill(f, "wal.log", torn, sizeof(torn), (off_t)head);

    new_boot(f);
    s = open_url(f);
    for (int i = 0; i < 50; i++) {
        expect_key(s, i, 1);
    }
    assert_int_equal(records(s), 50);
    assert_int_equal(write_one(s, 50), 0);
    idem_store_close(s);
}

/*
 * A directory written with wal=0 since its last checkpoint (LMDB's own
 * synced commits, no frames) is not rolled back to that checkpoint at the
 * next boot: its file is newer than anything the log names.
 */
static void test_commits_without_the_log_are_not_rolled_back(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s;
    char url[200], ckpt[256];
    /* many commits without the log, then a few (fewer than a file may be
     * ahead of its log after a power loss) */
    const int rounds[2][2] = {{0, 100}, {200, 3}};

    snprintf(url, sizeof(url), "lmdb:%s/env?map_size=256m&wal=0", f->dir);
    path_of(f, "wal.ckpt", ckpt, sizeof(ckpt));
    for (int r = 0; r < 2; r++) {
        int at = rounds[r][0], n = rounds[r][1];

        s = open_url(f);
        for (int i = 0; i < n; i++) {
            assert_int_equal(write_one(s, at + i), 0);
        }
        idem_store_close(s);
        assert_int_equal(access(ckpt, F_OK), 0);
        if (r == 0) {
            /* not while a process has the directory open with the log */
            idem_store_t *with = open_url(f);

            assert_int_equal(idem_store_open(url, &s), IDEM_EUNAVAIL);
            assert_int_equal(access(ckpt, F_OK), 0);
            idem_store_close(with);
        }
        assert_int_equal(idem_store_open(url, &s), 0);
        /* its checkpoint no longer describes the file */
        assert_int_equal(access(ckpt, F_OK), -1);
        for (int i = 0; i < n; i++) {
            assert_int_equal(delete_one(s, at + i), 0);
            assert_int_equal(write_one(s, at + 100 + i), 0);
        }
        idem_store_close(s);

        new_boot(f);
        s = open_url(f);
        for (int i = 0; i < n; i++) {
            expect_key(s, at + i, 0);
            expect_key(s, at + 100 + i, 1);
        }
        assert_int_equal(records(s), (uint64_t)(100 + (r ? 3 : 0)));
        idem_store_close(s);
    }
}

/*
 * After a power loss data.mdb may be ahead of its log: the kernel wrote
 * back the pages and the meta of the last commits, whose frames were
 * written but whose syncs had not returned (so nothing of them was
 * acknowledged), and those frames did not reach the disk. The checkpoint
 * is restored and the log applied all the same: those commits are gone,
 * every other one is there, and nothing is left half-made.
 */
static void test_file_ahead_of_lost_frames_is_restored(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = open_url(f);
    uint8_t *log;
    size_t log_len;

    for (int i = 0; i < 100; i++) {
        assert_int_equal(write_one(s, i), 0);
    }
    log = slurp(f, "wal.log", &log_len);
    for (int i = 100; i < 105; i++) {
        assert_int_equal(write_one(s, i), 0);
    }
    idem_store_close(s);
    /* the frames of the last ten commits are lost, data.mdb is not */
    spill(f, "wal.log", log, log_len, 0);
    free(log);

    new_boot(f);
    s = open_url(f);
    for (int i = 0; i < 105; i++) {
        expect_key(s, i, i < 100);
    }
    assert_int_equal(records(s), 100);
    assert_int_equal(write_one(s, 105), 0);
    idem_store_close(s);
}

/*
 * A record written by a commit not known durable (its key's slot in
 * wal.shm names a transaction past "durable") is answered by lookup only
 * once the log is synced, and not at all by lookup_nowait (an event
 * loop's read), which says IDEM_EPENDING instead.
 */
static void test_reads_wait_for_durability(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = open_url(f);
    idem_hash_t sc = scope();
    idem_result_t res;
    uint64_t zero = 0;
    char key[32];

    assert_int_equal(write_one(s, 1), 0);
    key_of(1, key, sizeof(key));
    assert_int_equal(
        idem_store_lookup_nowait(s, &sc, key, strlen(key), T0, &res), 0);
    idem_result_free(&res);

    /* as if the last commits' syncs were still running */
    shm_set(f, SHM_DURABLE, &zero, sizeof(zero));
    assert_int_equal(
        idem_store_lookup_nowait(s, &sc, key, strlen(key), T0, &res),
        IDEM_EPENDING);
    key_of(2, key, sizeof(key));
    assert_int_equal(
        idem_store_lookup_nowait(s, &sc, key, strlen(key), T0, &res),
        IDEM_ENOTFOUND); /* nothing answered from what is not there */
    key_of(1, key, sizeof(key));
    assert_int_equal(idem_store_lookup(s, &sc, key, strlen(key), T0, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    idem_result_free(&res);
    /* that lookup synced the log: the event loop may read again */
    assert_true(shm_get(f, SHM_DURABLE) >= next_txnid(f) - 1);
    assert_int_equal(
        idem_store_lookup_nowait(s, &sc, key, strlen(key), T0, &res), 0);
    idem_result_free(&res);
    idem_store_close(s);
}

/*
 * After a failed sync of the log (Linux then marks the lost pages clean,
 * and the next sync succeeds), no sync vouches for anything until a
 * checkpoint has synced data.mdb: the next commit and the next read of a
 * record not known durable take one, and only then are answered.
 */
static void test_failed_sync_is_not_trusted_until_a_checkpoint(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = open_url(f);
    idem_hash_t sc = scope();
    idem_result_t res;
    uint64_t zero = 0, seq;
    uint32_t one = 1, failed;
    char key[32];

    assert_int_equal(write_one(s, 1), 0);
    for (int round = 0; round < 2; round++) {
        seq = shm_get(f, SHM_SEQ);
        shm_set(f, SHM_SYNC_FAILED, &one, sizeof(one));
        shm_set(f, SHM_DURABLE, &zero, sizeof(zero));
        if (round == 0) {
            assert_int_equal(write_one(s, 2), 0);
        } else {
            key_of(1, key, sizeof(key));
            assert_int_equal(
                idem_store_lookup(s, &sc, key, strlen(key), T0, &res), 0);
            idem_result_free(&res);
        }
        assert_true(shm_get(f, SHM_SEQ) > seq);
        failed = (uint32_t)shm_get(f, SHM_SYNC_FAILED);
        assert_int_equal(failed, 0);
    }
    expect_key(s, 2, 1);

    /* a cancel owed (a writer died between its frame and its commit)
     * while a sync has failed: the commit checkpoints instead, which
     * leaves nothing to cancel, rather than failing on the cancel's sync */
    {
        uint64_t last = next_txnid(f) + 5, off = shm_get(f, SHM_HEAD);

        shm_set(f, SHM_LAST_OFF, &off, sizeof(off));
        shm_set(f, SHM_LAST_TXNID, &last, sizeof(last));
        shm_set(f, SHM_SYNC_FAILED, &one, sizeof(one));
        shm_set(f, SHM_BUSY, &one, sizeof(one));
        for (int i = 3; i < 8; i++) {
            assert_int_equal(write_one(s, i), 0);
        }
    }

    /* a failed sync of data.mdb: no checkpoint is taken from then on */
    shm_set(f, SHM_DATA_FAILED, &one, sizeof(one));
    shm_set(f, SHM_BUSY, &one, sizeof(one));
    seq = shm_get(f, SHM_SEQ);
    assert_int_equal(write_one(s, 8), IDEM_EIO);
    assert_int_equal(shm_get(f, SHM_SEQ), seq);
    idem_store_close(s);
}

/* Within one boot nothing is restored: a killed writer's keys are there. */
static void test_same_boot_reopens_as_it_was(void **state)
{
    fixture_t *f = *state;
    writer_t w;
    idem_store_t *s;

    w = start_writer(f, 0, 300, 50);
    assert_int_equal(next_ack(&w), -1);
    assert_int_equal(write(w.go, "g", 1), 1);
    for (int i = 0; i < 300; i++) {
        assert_int_equal(next_ack(&w), i);
    }
    assert_int_equal(next_ack(&w), -2);
    kill_writer(&w);

    s = open_url(f);
    for (int i = 0; i < 300; i++) {
        expect_key(s, i, i >= 50);
    }
    assert_int_equal(records(s), 250);
    idem_store_close(s);
}

/*
 * A process that died after its frame was synced and before its commit
 * leaves a frame LMDB never applied: the next commit cancels it, and a
 * new boot does not apply it either.
 */
static void test_frame_of_a_commit_that_never_came_is_cancelled(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = open_url(f);
    uint8_t frame[96] = {0}, key[48];
    uint64_t gen, head, txnid;
    uint32_t crc, v;

    assert_int_equal(write_one(s, 1), 0);
    idem_store_close(s);
    s = open_url(f); /* its checkpoint; the log starts over */
    assert_int_equal(write_one(s, 2), 0);

    /* the frame: a put of a key no one wrote, as the dead process's */
    gen = shm_get(f, SHM_GEN);
    head = shm_get(f, SHM_HEAD);
    txnid = next_txnid(f);
    memset(key, 0x5c, 32);
    memcpy(key + 32, "order-ghost", 11);
    memcpy(frame, "IWAL", 4);
    v = 1;
    memcpy(frame + 4, &v, 4);
    v = sizeof(frame) - 40;
    memcpy(frame + 8, &v, 4);
    memcpy(frame + 16, &gen, 8);
    memcpy(frame + 24, &head, 8);
    memcpy(frame + 32, &txnid, 8);
    frame[40] = 1; /* put, records */
    v = 43;
    memcpy(frame + 44, &v, 4);
    v = 0;
    memcpy(frame + 48, &v, 4);
    memcpy(frame + 52, key, 43);
    crc = crc32c(0, frame, sizeof(frame));
    memcpy(frame + 12, &crc, 4);
    spill(f, "wal.log", frame, sizeof(frame), (off_t)head);
    head += sizeof(frame);
    shm_set(f, SHM_HEAD, &head, 8);
    head -= sizeof(frame);
    shm_set(f, SHM_LAST_OFF, &head, 8);
    shm_set(f, SHM_LAST_TXNID, &txnid, 8);

    /* the next commit comes, then the power goes */
    assert_int_equal(write_one(s, 3), 0);
    idem_store_close(s);
    new_boot(f);
    s = open_url(f);
    expect_key(s, 1, 1);
    expect_key(s, 2, 1);
    expect_key(s, 3, 1);
    assert_int_equal(records(s), 3);
    idem_store_close(s);
}

/* A checkpoint whose writer died half way is taken anew by the next
 * commit, before it appends. */
static void test_checkpoint_cut_short_is_taken_again(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = open_url(f);
    uint64_t seq;
    uint32_t busy = 1;

    assert_int_equal(write_one(s, 1), 0);
    seq = shm_get(f, SHM_SEQ);
    shm_set(f, SHM_BUSY, &busy, 4);
    assert_int_equal(write_one(s, 2), 0);
    assert_true(shm_get(f, SHM_SEQ) > seq);
    assert_int_equal((uint32_t)shm_get(f, SHM_BUSY), 0);
    idem_store_close(s);
    new_boot(f);
    s = open_url(f);
    expect_key(s, 1, 1);
    expect_key(s, 2, 1);
    idem_store_close(s);
}

/*
 * The process holding the checkpoint's pin dies (LMDB may free its reader
 * slot on its own): the next commit of another process takes a
 * checkpoint, and so a pin of its own, before it writes.
 */
static void test_dead_pin_owner_is_replaced(void **state)
{
    fixture_t *f = *state;
    writer_t a, b;
    uint64_t seq;
    idem_store_t *s;

    a = start_writer(f, 0, 10, 0);
    assert_int_equal(next_ack(&a), -1);
    b = start_writer(f, 100, 110, 0);
    assert_int_equal(next_ack(&b), -1); /* its open's checkpoint: its pin */
    seq = shm_get(f, SHM_SEQ);
    kill_writer(&b);
    assert_int_equal(shm_get(f, SHM_SEQ), seq);

    assert_int_equal(write(a.go, "g", 1), 1);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(next_ack(&a), i);
    }
    assert_true(shm_get(f, SHM_SEQ) > seq);
    kill_writer(&a);
    new_boot(f);
    s = open_url(f);
    for (int i = 0; i < 10; i++) {
        expect_key(s, i, 1);
    }
    idem_store_close(s);
}

/* Processes that open a new store at the same moment all get it (each
 * may be the one that makes the log's files). */
static void test_first_opens_race(void **state)
{
    fixture_t *f = *state;
    pid_t pids[6];
    int go[2], status;
    idem_store_t *s;
    char c;

    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < 6; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            idem_store_t *cs = NULL;

            close(go[1]);
            if (read(go[0], &c, 1) != 0) {
                _exit(3);
            }
            if (idem_store_open(f->url, &cs) != 0) {
                _exit(1);
            }
            _exit(write_one(cs, i) == 0 ? 0 : 2);
        }
    }
    close(go[0]);
    close(go[1]); /* all start at once */
    for (int i = 0; i < 6; i++) {
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    s = open_url(f);
    for (int i = 0; i < 6; i++) {
        expect_key(s, i, 1);
    }
    idem_store_close(s);
}

/* wal=0 commits through LMDB's own syncs; the options are checked. */
static void test_options(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = NULL;
    char url[200], why[256];
    struct stat st;
    char path[256];

    snprintf(url, sizeof(url), "lmdb:%s/plain?map_size=256m&wal=0", f->dir);
    assert_int_equal(idem_store_open(url, &s), 0);
    assert_int_equal(write_one(s, 1), 0);
    expect_key(s, 1, 1);
    idem_store_close(s);
    snprintf(path, sizeof(path), "%s/plain/wal.log", f->dir);
    assert_int_equal(stat(path, &st), -1);

    assert_int_equal(idem_store_url_check("lmdb:/x?wal=2", why, sizeof(why)),
                     IDEM_EBADURL);
    assert_non_null(strstr(why, "wal"));
    assert_int_equal(
        idem_store_url_check("lmdb:/x?wal_size=1k", why, sizeof(why)),
        IDEM_EBADURL);
    assert_non_null(strstr(why, "64k"));
    assert_int_equal(
        idem_store_url_check("lmdb:/x?wal_size=2g", why, sizeof(why)),
        IDEM_EBADURL);
    assert_int_equal(
        idem_store_url_check("lmdb:/x?wal=1&wal_size=1m", why, sizeof(why)), 0);
}

/* Records the puts and deletes a scan hands over. */
typedef struct {
    int puts, dels;
} tally_t;

static int tally(void *ctx, unsigned db, const MDB_val *key, const MDB_val *val)
{
    tally_t *t = ctx;

    (void)db;
    (void)key;
    if (val != NULL) {
        t->puts++;
    } else {
        t->dels++;
    }
    return 0;
}

/* A scan of bytes that are no log reads nothing, and fails nothing. */
static void test_scan_of_garbage_reads_nothing(void **state)
{
    uint8_t junk[4096];
    tally_t t = {0, 0};

    (void)state;
    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)(i * 131 + 7);
    }
    assert_int_equal(idem_store_wal_scan(junk, sizeof(junk), 42, tally, &t), 0);
    assert_int_equal(idem_store_wal_scan(junk, 0, 42, tally, &t), 0);
    assert_int_equal(t.puts + t.dels, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_power_loss_keeps_what_was_acknowledged, setup_long_log,
            teardown),
        cmocka_unit_test_setup_teardown(test_two_writers_across_checkpoints,
                                        setup_short_log, teardown),
        cmocka_unit_test_setup_teardown(test_torn_last_frame_ends_the_log,
                                        setup_long_log, teardown),
        cmocka_unit_test_setup_teardown(test_same_boot_reopens_as_it_was,
                                        setup_short_log, teardown),
        cmocka_unit_test_setup_teardown(
            test_frame_of_a_commit_that_never_came_is_cancelled, setup_long_log,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_checkpoint_cut_short_is_taken_again, setup_long_log, teardown),
        cmocka_unit_test_setup_teardown(test_first_opens_race, setup_short_log,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_pin_owner_is_replaced,
                                        setup_long_log, teardown),
        cmocka_unit_test_setup_teardown(
            test_commits_without_the_log_are_not_rolled_back, setup_long_log,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_file_ahead_of_lost_frames_is_restored, setup_long_log,
            teardown),
        cmocka_unit_test_setup_teardown(test_reads_wait_for_durability,
                                        setup_long_log, teardown),
        cmocka_unit_test_setup_teardown(
            test_failed_sync_is_not_trusted_until_a_checkpoint, setup_long_log,
            teardown),
        cmocka_unit_test_setup_teardown(test_options, setup_long_log, teardown),
        cmocka_unit_test(test_scan_of_garbage_reads_nothing),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
