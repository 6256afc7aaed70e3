/*
 * sync_probe.c — what one durable append costs on a filesystem, with no
 * store around it: the floor under every durable commit there.
 *
 * Each writer thread appends a frame of BYTES bytes at the log's end (an
 * offset taken from a shared counter, so the frames are contiguous, as a
 * write-ahead log's are) with pwrite(), then fdatasync()s the file, and
 * records how long the two took. The file is written with zeros and synced
 * first, so no append changes its size or allocates a block (as the LMDB
 * store's log is filled ahead of its frames); it wraps around at its end.
 *
 *   usage: sync_probe -d DIR [-t SECONDS] [-w WRITERS] [-s BYTES]
 *
 * Prints one line, for bench/run.sh:
 *
 *   SYNC writers=W bytes=B syncs=N per_s=X p50_us=A p90_us=B p99_us=C max_us=D
 *
 * A store whose every request needs two such syncs in turn (a claim before
 * the request is forwarded, the response before it is answered) cannot
 * answer faster than two of them, however little CPU it takes.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROBE_FILE_SIZE   ((off_t)64 << 20)
#define PROBE_MAX_WRITERS 64
#define PROBE_MAX_SAMPLES (1u << 22)

typedef struct {
    int fd;
    size_t bytes;
    double until;
    off_t next; /* under mu */
    pthread_mutex_t mu;
    uint32_t *lat_us; /* under mu */
    size_t n;
    int failed;
} probe_t;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *writer(void *arg)
{
    probe_t *p = arg;
    char *buf = malloc(p->bytes);
    double t0, t1;
    off_t off;

    if (buf == NULL) {
        p->failed = ENOMEM;
        return NULL;
    }
    memset(buf, 'x', p->bytes);
    while ((t0 = now()) < p->until) {
        pthread_mutex_lock(&p->mu);
        if (p->next + (off_t)p->bytes > PROBE_FILE_SIZE)
            p->next = 0;
        off = p->next;
        p->next += (off_t)p->bytes;
        pthread_mutex_unlock(&p->mu);

        if (pwrite(p->fd, buf, p->bytes, off) != (ssize_t)p->bytes ||
            fdatasync(p->fd) != 0) {
            p->failed = errno != 0 ? errno : EIO;
            break;
        }
        t1 = now();
        pthread_mutex_lock(&p->mu);
        if (p->n < PROBE_MAX_SAMPLES)
            p->lat_us[p->n++] = (uint32_t)((t1 - t0) * 1e6);
        pthread_mutex_unlock(&p->mu);
    }
    free(buf);
    return NULL;
}

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: sync_probe -d DIR [-t SECONDS] [-w WRITERS] [-s BYTES]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    double secs = 3;
    long writers = 1, bytes = 10240;
    pthread_t th[PROBE_MAX_WRITERS];
    char path[4096];
    probe_t p;
    char *zero;
    int opt, rc = 0;

    while ((opt = getopt(argc, argv, "d:t:w:s:")) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 't':
            secs = atof(optarg);
            break;
        case 'w':
            writers = atol(optarg);
            break;
        case 's':
            bytes = atol(optarg);
            break;
        default:
            return usage();
        }
    }
    if (dir == NULL || optind != argc || secs <= 0 || writers < 1 ||
        writers > PROBE_MAX_WRITERS || bytes < 1 || bytes > (1L << 20))
        return usage();

    snprintf(path, sizeof(path), "%s/sync_probe.%ld", dir, (long)getpid());
    memset(&p, 0, sizeof(p));
    p.bytes = (size_t)bytes;
    pthread_mutex_init(&p.mu, NULL);
    p.fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (p.fd < 0) {
        fprintf(stderr, "sync_probe: %s: %s\n", path, strerror(errno));
        return 1;
    }
    (void)unlink(path); /* gone when the probe ends, however it ends */

    zero = calloc(1, 1 << 20);
    p.lat_us = malloc(PROBE_MAX_SAMPLES * sizeof(p.lat_us[0]));
    if (zero == NULL || p.lat_us == NULL) {
        fprintf(stderr, "sync_probe: out of memory\n");
        return 1;
    }
    for (off_t off = 0; off < PROBE_FILE_SIZE; off += 1 << 20) {
        if (pwrite(p.fd, zero, 1 << 20, off) != 1 << 20) {
            fprintf(stderr, "sync_probe: filling %s: %s\n", path,
                    strerror(errno));
            return 1;
        }
    }
    free(zero);
    if (fsync(p.fd) != 0) {
        fprintf(stderr, "sync_probe: fsync: %s\n", strerror(errno));
        return 1;
    }

    p.until = now() + secs;
    for (long i = 0; i < writers; i++) {
        if (pthread_create(&th[i], NULL, writer, &p) != 0) {
            fprintf(stderr, "sync_probe: cannot start a writer\n");
            return 1;
        }
    }
    for (long i = 0; i < writers; i++)
        pthread_join(th[i], NULL);
    if (p.failed != 0) {
        fprintf(stderr, "sync_probe: %s: %s\n", path, strerror(p.failed));
        rc = 1;
    } else if (p.n == 0) {
        fprintf(stderr, "sync_probe: no sync finished in %.1f s\n", secs);
        rc = 1;
    } else {
        qsort(p.lat_us, p.n, sizeof(p.lat_us[0]), by_value);
        printf("SYNC writers=%ld bytes=%ld syncs=%zu per_s=%.0f p50_us=%u "
               "p90_us=%u "
               "p99_us=%u max_us=%u\n",
               writers, bytes, p.n, (double)p.n / secs, p.lat_us[p.n / 2],
               p.lat_us[p.n * 9 / 10], p.lat_us[p.n * 99 / 100],
               p.lat_us[p.n - 1]);
    }
    free(p.lat_us);
    close(p.fd);
    return rc;
}
