/*
 * store_bench.c — how many new keys per second the LMDB store takes when
 * every write is durable, with and without group commit.
 *
 * One "pair" is what a new idempotent request costs the store: begin()
 * (claims the key: a durable write) and complete() (stores the response:
 * another). For 1, 4 and 16 threads, first with group_commit=0 (each write
 * its own transaction and fsync) and then with group_commit=1 (concurrent
 * writes share one), every thread runs pairs on keys of its own for a fixed
 * time (or until a number of pairs), in a fresh environment in a temporary
 * directory with sync=1.
 *
 *   usage: store_bench [-t SECONDS] [-n MAX_PAIRS] [-d DIR]
 *
 * Prints one row per run (threads, group_commit, pairs/s, commits, writes
 * per commit) and then, per thread count, the batched/unbatched ratio.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "idem.h"

#define BENCH_MAX_THREADS 16

static const int bench_threads[] = {1, 4, 16};
#define BENCH_NTHREADS (sizeof(bench_threads) / sizeof(bench_threads[0]))

static const char bench_body[] =
    "{\"data\":{\"type\":\"inquiry\",\"id\":\"inq_7Xk2mQpL9vR4tN8w\","
    "\"attributes\":{\"status\":\"created\",\"reference-id\":\"user-1234\","
    "\"created-at\":\"2026-11-28T04:44:27.000Z\"}}}";

static const idem_header_t bench_headers[] = {
    {{"Content-Type", 12}, {"application/json", 16}},
    {{"Date", 4}, {"Sat, 28 Nov 2026 04:44:27 GMT", 29}},
    {{"X-Request-Id", 12}, {"6f1c2d3e-4a5b-6c7d-8e9f-0a1b2c3d4e5f", 36}},
};

typedef struct {
    idem_store_t *store;
    int id;
    double deadline;    /* CLOCK_MONOTONIC seconds */
    long max_pairs;     /* over all threads; 0: no limit */
    atomic_long *taken; /* pairs started, over all threads */
    long pairs;         /* completed by this thread */
    int err;            /* first error, or 0 */
} bench_worker_t;

typedef struct {
    int threads;
    int group_commit;
    double seconds;
    long pairs;
    uint64_t commits;
    uint64_t ops;
} bench_run_t;

static double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t bench_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *bench_worker(void *arg)
{
    bench_worker_t *w = arg;
    idem_response_t resp = {201, bench_headers, 3, (const uint8_t *)bench_body,
                            sizeof(bench_body) - 1};
    idem_hash_t scope, fp;
    idem_result_t res;
    idem_begin_t in;
    char key[64];
    int rc;

    memset(scope.bytes, 0x11, sizeof(scope.bytes));
    memset(fp.bytes, 0x22, sizeof(fp.bytes));
    memset(&in, 0, sizeof(in));
    in.scope = &scope;
    in.key = key;
    in.fingerprint = &fp;
    in.ttl_ms = 86400000;
    in.lease_ms = 60000;
    in.on_unknown = IDEM_ON_UNKNOWN_RELEASE;

    while (bench_now() < w->deadline) {
        if (w->max_pairs > 0 && atomic_fetch_add(w->taken, 1) >= w->max_pairs) {
            break;
        }
        in.key_len = (size_t)snprintf(key, sizeof(key), "bench-t%d-%ld", w->id,
                                      w->pairs);
        in.now_ms = bench_wall_ms();
        rc = idem_store_begin(w->store, &in, &res);
        if (rc == 0 && res.outcome != IDEM_BEGIN_CLAIMED) {
            rc = IDEM_EINVAL;
        }
        if (rc == 0) {
            rc = idem_store_complete(w->store, &scope, key, in.key_len,
                                     res.owner, &resp, 0);
            idem_result_free(&res);
        }
        if (rc != 0) {
            w->err = rc;
            break;
        }
        w->pairs++;
    }
    return NULL;
}

static int bench_rm(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* One run in a fresh environment under base. Returns 0 or an error. */
static int bench_run(const char *base, double seconds, long max_pairs,
                     bench_run_t *run)
{
    bench_worker_t w[BENCH_MAX_THREADS];
    pthread_t t[BENCH_MAX_THREADS];
    idem_store_stats_t st;
    idem_store_t *store = NULL;
    atomic_long taken;
    char dir[512], url[600];
    double start;
    int rc, started = 0;

    snprintf(dir, sizeof(dir), "%s/idem-bench-XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "store_bench: mkdtemp %s: %s\n", dir, strerror(errno));
        return -1;
    }
    snprintf(url, sizeof(url), "lmdb:%s/env?sync=1&group_commit=%d", dir,
             run->group_commit);
    rc = idem_store_open(url, &store);
    if (rc != 0) {
        fprintf(stderr, "store_bench: open %s: %s\n", url, idem_strerror(rc));
        goto done;
    }

    atomic_init(&taken, 0);
    start = bench_now();
    for (int i = 0; i < run->threads; i++) {
        w[i].store = store;
        w[i].id = i;
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
    idem_store_stats(store, &st);
    run->commits = st.commits;
    run->ops = st.batched_ops;

done:
    idem_store_close(store);
    nftw(dir, bench_rm, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

static void bench_usage(void)
{
    fprintf(stderr,
            "usage: store_bench [-t SECONDS] [-n MAX_PAIRS] [-d DIR]\n");
}

int main(int argc, char **argv)
{
    bench_run_t runs[2][BENCH_NTHREADS];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    double seconds = 3.0;
    long max_pairs = 0;
    int opt;

    while ((opt = getopt(argc, argv, "t:n:d:h")) != -1) {
        switch (opt) {
        case 't':
            seconds = atof(optarg);
            break;
        case 'n':
            max_pairs = atol(optarg);
            break;
        case 'd':
            base = optarg;
            break;
        default:
            bench_usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (seconds <= 0 || max_pairs < 0) {
        bench_usage();
        return 2;
    }

    printf("LMDB store, durable (sync=1): begin+complete pairs, %.1f s%s per "
           "run, in %s\n\n",
           seconds, max_pairs ? " or MAX_PAIRS" : "", base);
    printf("%7s  %12s  %10s  %8s  %10s\n", "threads", "group_commit", "pairs/s",
           "commits", "ops/commit");
    for (size_t i = 0; i < BENCH_NTHREADS; i++) {
        for (int g = 0; g < 2; g++) {
            bench_run_t *r = &runs[g][i];
            memset(r, 0, sizeof(*r));
            r->threads = bench_threads[i];
            r->group_commit = g;
            if (bench_run(base, seconds, max_pairs, r) != 0) {
                return 1;
            }
            printf("%7d  %12d  %10.0f  %8llu  %10.2f\n", r->threads, g,
                   (double)r->pairs / r->seconds,
                   (unsigned long long)r->commits,
                   r->commits ? (double)r->ops / (double)r->commits : 0.0);
            fflush(stdout);
        }
    }
    printf("\nbatched / unbatched pairs/s:");
    for (size_t i = 0; i < BENCH_NTHREADS; i++) {
        double on = (double)runs[1][i].pairs / runs[1][i].seconds;
        double off = (double)runs[0][i].pairs / runs[0][i].seconds;
        printf("  %d thread%s %.1fx", bench_threads[i],
               bench_threads[i] == 1 ? "" : "s", off > 0 ? on / off : 0.0);
    }
    printf("\n");
    return 0;
}
