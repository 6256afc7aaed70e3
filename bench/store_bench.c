/*
 * store_bench.c — how many new keys per second the LMDB store takes when
 * every write is durable: one write per transaction, concurrent writes
 * grouped into one transaction (group commit), and writes handed over in
 * batches (idem_store_batch).
 *
 * One "pair" is what a new idempotent request costs the store: begin()
 * (claims the key: a durable write) and complete() (stores the response:
 * another). Every run is a fresh environment in a temporary directory,
 * opened with sync=1, optionally holding PREFILL complete records first
 * (so that writes land in a tree of realistic depth, not an empty one);
 * every thread then runs pairs on keys of its own, random like the UUIDs
 * clients send, for a fixed time (or until MAX_PAIRS pairs in all):
 *
 *   batch 1    begin(k), complete(k), one call each, for 1, 4 and 16
 *              threads, first with group_commit=0 (each write its own
 *              transaction and fsync) and then with group_commit=1
 *   batch B    idem_store_batch() of B begins of B new keys, then one of
 *              the B completes (B = 16 and 64), group_commit=1
 *
 *   usage: store_bench [-t SECONDS] [-n MAX_PAIRS] [-p PREFILL] [-d DIR]
 *          store_bench -u URL [-t SECONDS] [-n MAX_PAIRS]
 *          store_bench -F DIR -p RECORDS [-x]
 *
 * With -F, it only fills the LMDB store directory DIR with RECORDS complete
 * records (as the prefill does) and exits: bench/scale.sh opens the store
 * so made in nginx. -x makes them expired already (created two days ago
 * with a TTL of one day), for the prune to remove.
 *
 * With -u, the same pairs run on the store URL names (a networked store:
 * postgres://..., whose server is already running), batch 1, 16 and 64
 * for 1, 4 and 16 threads, each run under a scope of its own so that its
 * keys are new; there is no prefill and no group_commit setting.
 *
 * Prints one row per run (threads, group_commit, batch, pairs/s, commits,
 * writes per commit, KiB written per commit as counted by the kernel's
 * wchar, i.e. what LMDB hands to write(): pages and meta page), then per
 * thread count the group-commit/unbatched ratio, and the best figure over
 * one fsync per write (group_commit=0, 1 thread, batch 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "idem.h"

#define BENCH_MAX_THREADS 16
#define BENCH_MAX_BATCH   64
#define BENCH_KEY_LEN     33 /* 16 hex digits, '-', 16 hex digits */
#define BENCH_PREFILL     100000
#define BENCH_FILL_BATCH  1024

static const int bench_threads[] = {1, 4, 16};
#define BENCH_NTHREADS (sizeof(bench_threads) / sizeof(bench_threads[0]))

static const int bench_batches[] = {16, 64};
#define BENCH_NBATCHES (sizeof(bench_batches) / sizeof(bench_batches[0]))

static const char bench_body[] =
    "{\"data\":{\"type\":\"inquiry\",\"id\":\"inq_7Xk2mQpL9vR4tN8w\","
    "\"attributes\":{\"status\":\"created\",\"reference-id\":\"user-1234\","
    "\"created-at\":\"2026-11-28T04:44:27.000Z\"}}}";

static const idem_header_t bench_headers[] = {
    {{"Content-Type", 12}, {"application/json", 16}},
    {{"Date", 4}, {"Sat, 28 Nov 2026 04:44:27 GMT", 29}},
    {{"X-Request-Id", 12}, {"6f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f", 36}},
};

/* Told apart per run, so that runs on one shared store use new keys. */
static atomic_int bench_scope_salt;

static const idem_response_t bench_resp = {
    201, bench_headers, 3, (const uint8_t *)bench_body, sizeof(bench_body) - 1};

/* One run's settings and what it measured. */
typedef struct {
    int threads;
    int group_commit;
    int batch; /* 1: single calls; B: idem_store_batch() of B ops */
    double seconds;
    long pairs;
    uint64_t commits;
    uint64_t ops;
    int64_t written; /* bytes, or -1 when /proc/self/io is not readable */
} bench_run_t;

typedef struct {
    idem_store_t *store;
    int id;
    int batch;
    double deadline;    /* CLOCK_MONOTONIC seconds */
    long max_pairs;     /* over all threads; 0: no limit */
    atomic_long *taken; /* pairs started, over all threads */
    long pairs;         /* completed by this thread */
    int err;            /* first error, or 0 */
} bench_worker_t;

/* The keys and inputs of the pairs a worker (or the prefill) has in
   flight. */
typedef struct {
    idem_hash_t scope;
    idem_hash_t fp;
    char keys[BENCH_FILL_BATCH][BENCH_KEY_LEN + 1];
    idem_op_t ops[BENCH_FILL_BATCH];
} bench_pairs_t;

static double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* added to the time of every begin(): -x fills the past */
static int64_t bench_shift_ms;

static int64_t bench_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bytes this process has passed to write() so far, or -1. */
static int64_t bench_wchar(void)
{
    char line[128];
    long long v = -1;
    FILE *f = fopen("/proc/self/io", "r");

    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "wchar: %lld", &v) == 1) {
            break;
        }
    }
    fclose(f);
    return v;
}

static uint64_t bench_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Key number n of stream id: random-looking, distinct for distinct (id, n)
   (the first half is a bijection of them). */
static void bench_key(char *out, int id, long n)
{
    uint64_t x = ((uint64_t)id << 40) ^ (uint64_t)n;

    snprintf(out, BENCH_KEY_LEN + 1, "%016" PRIx64 "-%016" PRIx64, bench_mix(x),
             bench_mix(x ^ 0x5bd1e9955bd1e995ull));
}

static void bench_pairs_init(bench_pairs_t *p)
{
    memset(p, 0, sizeof(*p));
    memset(p->scope.bytes, 0x11, sizeof(p->scope.bytes));
    p->scope.bytes[0] = (uint8_t)atomic_load(&bench_scope_salt);
    p->scope.bytes[1] = (uint8_t)getpid();
    p->scope.bytes[2] = (uint8_t)(getpid() >> 8);
    memset(p->fp.bytes, 0x22, sizeof(p->fp.bytes));
}

/* Fills ops[0..n) with begins of keys first, first + 1, ... of stream id. */
static void bench_begins(bench_pairs_t *p, int n, int id, long first)
{
    int64_t now = bench_wall_ms() + bench_shift_ms;

    for (int i = 0; i < n; i++) {
        idem_op_t *op = &p->ops[i];

        bench_key(p->keys[i], id, first + i);
        memset(op, 0, sizeof(*op));
        op->kind = IDEM_OP_BEGIN;
        op->begin.scope = &p->scope;
        op->begin.key = p->keys[i];
        op->begin.key_len = BENCH_KEY_LEN;
        op->begin.fingerprint = &p->fp;
        op->begin.now_ms = now;
        op->begin.ttl_ms = 86400000;
        op->begin.lease_ms = 60000;
        op->begin.on_unknown = IDEM_ON_UNKNOWN_RELEASE;
    }
}

/* Turns the n claimed begins of ops into completes. Returns 0 or an error. */
static int bench_completes(bench_pairs_t *p, int n)
{
    for (int i = 0; i < n; i++) {
        idem_op_t *op = &p->ops[i];
        uint64_t owner = op->result.owner;
        int rc = op->rc;

        if (rc == 0 && op->result.outcome != IDEM_BEGIN_CLAIMED) {
            rc = IDEM_EINVAL;
        }
        idem_result_free(&op->result);
        if (rc != 0) {
            return rc;
        }
        memset(op, 0, sizeof(*op));
        op->kind = IDEM_OP_COMPLETE;
        op->scope = &p->scope;
        op->key = p->keys[i];
        op->key_len = BENCH_KEY_LEN;
        op->owner = owner;
        op->resp = &bench_resp;
    }
    return 0;
}

/* Runs n pairs (keys first... of stream id) as two batches. */
static int bench_batch_pairs(idem_store_t *s, bench_pairs_t *p, int n, int id,
                             long first)
{
    int rc;

    bench_begins(p, n, id, first);
    rc = idem_store_batch(s, p->ops, (size_t)n);
    if (rc == 0) {
        rc = bench_completes(p, n);
    }
    if (rc == 0) {
        rc = idem_store_batch(s, p->ops, (size_t)n);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = p->ops[i].rc;
    }
    return rc;
}

/* Runs one pair with the single calls. */
static int bench_single_pair(idem_store_t *s, bench_pairs_t *p, int id, long n)
{
    idem_op_t *op = &p->ops[0];
    int rc;

    bench_begins(p, 1, id, n);
    op->rc = idem_store_begin(s, &op->begin, &op->result);
    rc = bench_completes(p, 1);
    if (rc == 0) {
        rc = idem_store_complete(s, op->scope, op->key, op->key_len, op->owner,
                                 op->resp, 0);
    }
    return rc;
}

static void *bench_worker(void *arg)
{
    bench_worker_t *w = arg;
    bench_pairs_t *p = malloc(sizeof(*p));
    int rc;

    if (p == NULL) {
        w->err = IDEM_ENOMEM;
        return NULL;
    }
    bench_pairs_init(p);
    while (bench_now() < w->deadline) {
        if (w->max_pairs > 0 &&
            atomic_fetch_add(w->taken, w->batch) >= w->max_pairs) {
            break;
        }
        if (w->batch == 1) {
            rc = bench_single_pair(w->store, p, w->id, w->pairs);
        } else {
            rc = bench_batch_pairs(w->store, p, w->batch, w->id, w->pairs);
        }
        if (rc != 0) {
            w->err = rc;
            break;
        }
        w->pairs += w->batch;
    }
    free(p);
    return NULL;
}

/*
 * Stores n complete records in the environment env, in large batches and
 * without fsync (sync=0), then fsyncs its data file once, so that the
 * measured commits do not write the prefill's pages.
 */
static int bench_prefill(const char *env, long n)
{
    idem_store_t *store = NULL;
    bench_pairs_t *p = malloc(sizeof(*p));
    char path[600];
    int rc = IDEM_ENOMEM, fd;

    snprintf(path, sizeof(path), "lmdb:%s?sync=0", env);
    if (p != NULL) {
        bench_pairs_init(p);
        rc = idem_store_open(path, &store);
    }
    for (long done = 0; rc == 0 && done < n; done += BENCH_FILL_BATCH) {
        int k =
            n - done < BENCH_FILL_BATCH ? (int)(n - done) : BENCH_FILL_BATCH;
        rc = bench_batch_pairs(store, p, k, BENCH_MAX_THREADS, done);
    }
    idem_store_close(store);
    free(p);
    snprintf(path, sizeof(path), "%s/data.mdb", env);
    fd = open(path, O_RDWR);
    if (rc == 0 && (fd < 0 || fsync(fd) != 0)) {
        rc = IDEM_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static int bench_rm(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/*
 * One run in a fresh environment under base, or on the store url names
 * when it is not NULL. Returns 0 or an error.
 */
static int bench_run(const char *base, const char *store_url, double seconds,
                     long max_pairs, long prefill, bench_run_t *run)
{
    bench_worker_t w[BENCH_MAX_THREADS];
    pthread_t t[BENCH_MAX_THREADS];
    idem_store_stats_t st;
    idem_store_t *store = NULL;
    atomic_long taken;
    char dir[512], env[530], url[600];
    int64_t wchar;
    double start;
    int rc, started = 0;

    atomic_fetch_add(&bench_scope_salt, 1);
    if (store_url != NULL) {
        dir[0] = '\0';
        snprintf(url, sizeof(url), "%s", store_url);
        rc = idem_store_open(url, &store);
        if (rc != 0) {
            fprintf(stderr, "store_bench: open %s: %s\n", url,
                    idem_strerror(rc));
            return rc;
        }
        goto opened;
    }
    snprintf(dir, sizeof(dir), "%s/idem-bench-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "store_bench: mkdtemp %s: %s\n", dir, strerror(errno));
        return -1;
    }
    snprintf(env, sizeof(env), "%s/env", dir);
    snprintf(url, sizeof(url), "lmdb:%s?sync=1&group_commit=%d", env,
             run->group_commit);
    rc = bench_prefill(env, prefill);
    if (rc == 0) {
        rc = idem_store_open(url, &store);
    }
    if (rc != 0) {
        fprintf(stderr, "store_bench: open %s: %s\n", url, idem_strerror(rc));
        goto done;
    }

opened:
    atomic_init(&taken, 0);
    wchar = bench_wchar();
    start = bench_now();
    for (int i = 0; i < run->threads; i++) {
        w[i].store = store;
        w[i].id = i;
        w[i].batch = run->batch;
        w[i].deadline = start + seconds;
        w[i].max_pairs = max_pairs;
        w[i].taken = &taken;
        w[i].pairs = 0;
        w[i].err = 0;
        if (pthread_create(&t[i], NULL, bench_worker, &w[i]) != 0) {
            fprintf(stderr, "store_bench: cannot start a thread\n");
            rc = -1;
            break;
        }
        started++;
    }
    run->pairs = 0;
    for (int i = 0; i < started; i++) {
        pthread_join(t[i], NULL);
        run->pairs += w[i].pairs;
        if (w[i].err != 0 && rc == 0) {
            rc = w[i].err;
            fprintf(stderr, "store_bench: %s\n", idem_strerror(rc));
        }
    }
    run->seconds = bench_now() - start;
    run->written =
        wchar >= 0 && bench_wchar() >= 0 ? bench_wchar() - wchar : -1;
    idem_store_stats(store, &st);
    run->commits = st.commits;
    run->ops = st.batched_ops;

done:
    idem_store_close(store);
    if (dir[0] != '\0') {
        nftw(dir, bench_rm, 16, FTW_DEPTH | FTW_PHYS);
    }
    return rc;
}

static double bench_rate(const bench_run_t *r)
{
    return r->seconds > 0 ? (double)r->pairs / r->seconds : 0.0;
}

static void bench_print(const bench_run_t *r)
{
    if (r->group_commit < 0) {
        printf("%7d  %12s", r->threads, "-");
    } else {
        printf("%7d  %12d", r->threads, r->group_commit);
    }
    printf("  %5d  %10.0f  %8llu  %10.2f", r->batch, bench_rate(r),
           (unsigned long long)r->commits,
           r->commits ? (double)r->ops / (double)r->commits : 0.0);
    if (r->written >= 0 && r->commits > 0) {
        printf("  %10.1f\n", (double)r->written / 1024.0 / (double)r->commits);
    } else {
        printf("  %10s\n", "-");
    }
    fflush(stdout);
}

static void bench_usage(void)
{
    fprintf(stderr, "usage: store_bench [-t SECONDS] [-n MAX_PAIRS] "
                    "[-p PREFILL] [-d DIR]\n"
                    "       store_bench -u URL [-t SECONDS] [-n MAX_PAIRS]\n"
                    "       store_bench -F DIR -p RECORDS [-x]\n");
}

/* The rows of -u URL: batch 1, 16 and 64 for each thread count. */
static int bench_url(const char *url, double seconds, long max_pairs)
{
    static const int batches[] = {1, 16, 64};
    bench_run_t r;

    printf("store %s: begin+complete pairs, random new keys, %.1f s%s per "
           "run\n\n",
           url, seconds, max_pairs ? " or MAX_PAIRS" : "");
    printf("%7s  %12s  %5s  %10s  %8s  %10s  %10s\n", "threads", "group_commit",
           "batch", "pairs/s", "commits", "ops/commit", "KiB/commit");
    for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
        for (size_t i = 0; i < BENCH_NTHREADS; i++) {
            memset(&r, 0, sizeof(r));
            r.threads = bench_threads[i];
            r.group_commit = -1;
            r.batch = batches[b];
            if (bench_run(NULL, url, seconds, max_pairs, 0, &r) != 0) {
                return 1;
            }
            r.written = -1; /* the server writes, not this process */
            bench_print(&r);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_run_t single[2][BENCH_NTHREADS],
        batched[BENCH_NBATCHES][BENCH_NTHREADS];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    const bench_run_t *best;
    double seconds = 3.0, base_rate;
    long max_pairs = 0, prefill = BENCH_PREFILL;
    const char *url = NULL, *fill = NULL;
    int opt;

    while ((opt = getopt(argc, argv, "t:n:p:d:u:F:xh")) != -1) {
        switch (opt) {
        case 'F':
            fill = optarg;
            break;
        case 'x':
            bench_shift_ms = -2 * 86400000LL;
            break;
        case 'u':
            url = optarg;
            break;
        case 't':
            seconds = atof(optarg);
            break;
        case 'n':
            max_pairs = atol(optarg);
            break;
        case 'p':
            prefill = atol(optarg);
            break;
        case 'd':
            base = optarg;
            break;
        default:
            bench_usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (seconds <= 0 || max_pairs < 0 || prefill < 0) {
        bench_usage();
        return 2;
    }

    if (url != NULL) {
        return bench_url(url, seconds, max_pairs);
    }
    if (fill != NULL) {
        int rc = bench_prefill(fill, prefill);

        if (rc != 0) {
            fprintf(stderr, "store_bench: filling %s: %s\n", fill,
                    idem_strerror(rc));
            return 1;
        }
        printf("%s: %ld %s records\n", fill, prefill,
               bench_shift_ms ? "expired" : "complete");
        return 0;
    }
    printf("LMDB store, durable (sync=1): begin+complete pairs, random keys, "
           "%ld records before each run, %.1f s%s per run, in %s\n\n",
           prefill, seconds, max_pairs ? " or MAX_PAIRS" : "", base);
    printf("%7s  %12s  %5s  %10s  %8s  %10s  %10s\n", "threads", "group_commit",
           "batch", "pairs/s", "commits", "ops/commit", "KiB/commit");
    for (size_t i = 0; i < BENCH_NTHREADS; i++) {
        for (int g = 0; g < 2; g++) {
            bench_run_t *r = &single[g][i];
            memset(r, 0, sizeof(*r));
            r->threads = bench_threads[i];
            r->group_commit = g;
            r->batch = 1;
            if (bench_run(base, NULL, seconds, max_pairs, prefill, r) != 0) {
                return 1;
            }
            bench_print(r);
        }
    }
    best = &single[1][0];
    for (size_t b = 0; b < BENCH_NBATCHES; b++) {
        for (size_t i = 0; i < BENCH_NTHREADS; i++) {
            bench_run_t *r = &batched[b][i];
            memset(r, 0, sizeof(*r));
            r->threads = bench_threads[i];
            r->group_commit = 1;
            r->batch = bench_batches[b];
            if (bench_run(base, NULL, seconds, max_pairs, prefill, r) != 0) {
                return 1;
            }
            bench_print(r);
            if (bench_rate(r) > bench_rate(best)) {
                best = r;
            }
        }
    }

    printf("\ngroup commit / one txn per write, pairs/s:");
    for (size_t i = 0; i < BENCH_NTHREADS; i++) {
        double on = bench_rate(&single[1][i]), off = bench_rate(&single[0][i]);
        printf("  %d thread%s %.1fx", bench_threads[i],
               bench_threads[i] == 1 ? "" : "s", off > 0 ? on / off : 0.0);
    }
    base_rate = bench_rate(&single[0][0]);
    printf("\nbest (%d thread%s, batch %d) / one fsync per write "
           "(group_commit=0, 1 thread): %.1fx\n",
           best->threads, best->threads == 1 ? "" : "s", best->batch,
           base_rate > 0 ? bench_rate(best) / base_rate : 0.0);
    return 0;
}
