/*
 * redis.c — the "redis://[:PASSWORD@]HOST:PORT[/DB][?options]" store:
 * one Redis key per (scope, key), shared by every gateway that names the
 * same server, database and prefix, on as many machines as there are.
 *
 * A record is the encoded idem_record_t under
 *
 *     PREFIX + hex(scope hash) + ":" + key        (PREFIX "idemgate:")
 *
 * with a Redis expiry (PX) at the record's removable time, so Redis itself
 * forgets what prune() removes elsewhere: prune() here removes nothing.
 * The prefix may hold no '{' or '}', so that Redis Cluster hashes the
 * whole key name and spreads the keys over its slots.
 *
 * The decision table is not in this file: like every backend, this one
 * reads the bytes, lets idem_store_plan() decide, and writes what it
 * asks for. Atomicity comes from an optimistic compare-and-set, one
 * batch (one write() call) at a time:
 *
 *   write(ops[0..n))        a batch (n > 1) as it is, on a connection of
 *     |                     its own; a single call through the group-
 *     |                     commit queue (gcq.h), which gathers the single
 *     |                     calls of threads waiting meanwhile into one
 *     v
 *   ops grouped by key; a group is carried out as one step, in order
 *     |
 *     v
 *   round trip 1 (pipeline): TIME, GET key of every group
 *     |  each group: plan its ops in order on the bytes read, each op on
 *     |  what the one before it planned (the running bytes); the clock
 *     |  of the plans is Redis TIME (see "Clocks")
 *     v
 *   round trip 2 (pipeline): per group that writes, one EVALSHA of
 *     |  IDEM_STORE_REDIS_CAS: if SHA1(stored bytes) is still the SHA1 of
 *     |  the bytes read (or the key still absent), SET the group's final
 *     |  bytes PX (removable - now), or DEL them; else change nothing
 *     v
 *   a group whose compare failed (another gateway wrote the record in
 *   between) is read and planned again, up to IDEM_STORE_REDIS_ROUNDS
 *   rounds; then its ops get IDEM_EUNAVAIL. Groups that need no write
 *   (replays, conflicts) cost round trip 1 only.
 *
 * Why a compare-and-set, and not the decision table in Lua (one round
 * trip instead of two): a second copy of lib/core/decide.c in Lua would
 * have to stay the same as the first forever, and the read costs little.
 * Measured on loopback (Redis 7.0, appendfsync always, one client): a GET
 * round trip 0.054 ms, an EVAL that SETs 0.27 ms (the fsync), so the read
 * adds about 20% to a lone write, and in a batch one round trip for all
 * its ops. bench/store_bench -u URL (begin+complete pairs/s, threads x
 * batch): 1 x 1: 1,200; 16 x 1: 6,100 (3,300-4,000 with a pipeline per
 * single call; the queue gathers them); 1 x 64: 18,700; 16 x 64: 28,900
 * (16,200 when batches, too, went through the queue: one thread then
 * plans them all, and planning is client work that threads share out).
 *
 * Durability is the server's: with appendfsync always an acknowledged
 * script is on disk before its reply; everysec can lose about a second.
 *
 * Connections: a caller takes one from a small pool (pool_mu) for its
 * whole call, so the thread-pool threads of a worker each have their
 * own, and puts it back afterwards. A connection that fails is freed
 * with every idle one (they were made to the same server, which has
 * most likely gone), and the call goes on once on a new connection: a
 * read is sent again, and a script that got no answer is judged by
 * reading its record (its bytes there: it ran; else plan again).
 *
 * Fail closed, heal by itself: while no connection can be made, every
 * call gets IDEM_EUNAVAIL at once, and a new connection is tried at most
 * once per backoff (100 ms, doubling up to 1 s). A connection is made
 * with AUTH, SELECT, a check of maxmemory-policy (an evicting policy
 * could forget a key before its TTL and so run a request twice: refused,
 * as is a server whose CONFIG command is disabled, unless
 * allow_eviction=1) and SCRIPT LOAD. open() makes one connection: a
 * server that is down then is no reason to fail (the handle comes up
 * unavailable and heals), but a refused policy fails it with
 * IDEM_EEVICTION. check() (once a second from the module) PINGs and
 * reads the policy again, so a policy changed at run time closes the
 * store too.
 *
 * Clocks: leases and TTLs written by one machine are compared by others,
 * so plans read Redis TIME (the op's store_now_ms) instead of the
 * caller's now_ms; a gateway's skewed clock changes nothing. clock=caller
 * plans with the caller's times instead (one machine, or tests that move
 * time by hand).
 */
#include "gcq.h"
#include "registry.h"
#include "store_int.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDEM_STORE_REDIS_PORT        6379
#define IDEM_STORE_REDIS_PREFIX      "idemgate:"
#define IDEM_STORE_REDIS_PREFIX_MAX  128
#define IDEM_STORE_REDIS_HOST_MAX    255
#define IDEM_STORE_REDIS_SECRET_MAX  512
#define IDEM_STORE_REDIS_TIMEOUT_MS  2000
#define IDEM_STORE_REDIS_ROUNDS      8
#define IDEM_STORE_REDIS_POOL_MAX    64
#define IDEM_STORE_REDIS_BACKOFF_MIN 100
#define IDEM_STORE_REDIS_BACKOFF_MAX 1000
#define IDEM_STORE_REDIS_WHY_MAX     512
/* the longest expiry set: about 139 years */
#define IDEM_STORE_REDIS_PX_MAX ((int64_t)1 << 42)
/* prefix + 64 hex digits + ':' + the key */
#define IDEM_STORE_REDIS_RKEY_MAX                                              \
    (IDEM_STORE_REDIS_PREFIX_MAX + 2 * IDEM_HASH_LEN + 1 + IDEM_KEY_MAX)

/*
 * The compare-and-set. KEYS[1] the record; ARGV[1] the SHA1 (hex) of the
 * bytes the plan read, "" when it read none; ARGV[2] the expiry in ms, "0"
 * to delete; ARGV[3] the new bytes. Returns 1 when it wrote, 0 when the
 * record had changed (nothing written).
 */
static const char idem_store_redis_cas[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if ARGV[1] == '' then\n"
    "  if cur then return 0 end\n"
    "elseif not cur or redis.sha1hex(cur) ~= ARGV[1] then\n"
    "  return 0\n"
    "end\n"
    "if ARGV[2] == '0' then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "else\n"
    "  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])\n"
    "end\n"
    "return 1\n";

/* The options of a "redis://" URL. */
typedef struct {
    char host[IDEM_STORE_REDIS_HOST_MAX + 1];
    int port;
    char user[IDEM_STORE_REDIS_SECRET_MAX + 1];
    char password[IDEM_STORE_REDIS_SECRET_MAX + 1];
    int has_password;
    long db;
    char prefix[IDEM_STORE_REDIS_PREFIX_MAX + 1];
    int timeout_ms;
    int allow_eviction;
    int caller_clock;
} idem_store_redis_conf_t;

typedef struct {
    idem_store_t base; /* first: the handle callers hold */
    idem_store_redis_conf_t conf;
    char sha[41];           /* SHA1 of idem_store_redis_cas, hex */
    idem_store_gcq_t queue; /* concurrent write() calls: one batch */

    pthread_mutex_t pool_mu; /* guards everything below */
    redisContext *idle[IDEM_STORE_REDIS_POOL_MAX];
    size_t nidle;
    int down;            /* the last connection attempt failed */
    int64_t next_try_ms; /* while down: no attempt before (monotonic) */
    int64_t backoff_ms;  /* the wait after the next failure */
    int refused;         /* down because the policy is refused */
    char why[IDEM_STORE_REDIS_WHY_MAX]; /* while down: what failed */
} idem_store_redis_t;

/* How a connection attempt failed. */
typedef enum {
    IDEM_STORE_REDIS_NET = 1, /* unreachable, timed out, broken: transient */
    IDEM_STORE_REDIS_POLICY,  /* maxmemory-policy refused                  */
    IDEM_STORE_REDIS_AUTH,    /* AUTH refused                              */
    IDEM_STORE_REDIS_SETUP    /* SELECT or SCRIPT LOAD refused             */
} idem_store_redis_fail_t;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static int64_t idem_store_redis_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The SHA1 of len bytes as 40 hex digits and a NUL. */
static int idem_store_redis_sha1(const void *data, size_t len, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20) {
        return IDEM_ENOMEM;
    }
    for (unsigned i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[40] = '\0';
    return 0;
}

/* The Redis key of a store key; returns its length. */
static size_t idem_store_redis_rkey(const idem_store_redis_t *s,
                                    const idem_store_key_t *k, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t plen = strlen(s->conf.prefix), n = plen;

    memcpy(out, s->conf.prefix, plen);
    for (size_t i = 0; i < IDEM_HASH_LEN; i++) {
        out[n++] = hex[k->bytes[i] >> 4];
        out[n++] = hex[k->bytes[i] & 15];
    }
    out[n++] = ':';
    memcpy(out + n, k->bytes + IDEM_HASH_LEN, k->len - IDEM_HASH_LEN);
    return n + k->len - IDEM_HASH_LEN;
}

/* Runs one command; *out gets the reply (free it). Error replies fail. */
static int idem_store_redis_cmd(redisContext *c, int argc, const char **argv,
                                const size_t *lens, redisReply **out, char *why,
                                size_t cap)
{
    redisReply *r = redisCommandArgv(c, argc, argv, lens);

    if (r == NULL) {
        snprintf(why, cap, "%s failed: %s", argv[0],
                 c->err ? c->errstr : "no reply");
        return IDEM_STORE_REDIS_NET;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, cap, "%s refused: %.*s", argv[0], (int)r->len, r->str);
        freeReplyObject(r);
        return -1;
    }
    *out = r;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Checks the server's maxmemory-policy on c. Returns 0 (noeviction, or
 * the override), IDEM_STORE_REDIS_POLICY or IDEM_STORE_REDIS_NET.
 */
static int idem_store_redis_policy(idem_store_redis_t *s, redisContext *c,
                                   char *why, size_t cap)
{
    const char *argv[] = {"CONFIG", "GET", "maxmemory-policy"};
    size_t lens[] = {6, 3, 16};
    redisReply *r = NULL;
    int rc;

    if (s->conf.allow_eviction) {
        return 0;
    }
    rc = idem_store_redis_cmd(c, 3, argv, lens, &r, why, cap);
    if (rc == IDEM_STORE_REDIS_NET) {
        return rc;
    }
    if (rc != 0 && strstr(why, "NOAUTH") != NULL) {
        snprintf(why, cap,
                 "redis %.100s:%d wants a password (NOAUTH): give it in "
                 "the URL, redis://:PASSWORD@HOST:PORT",
                 s->conf.host, s->conf.port);
        return IDEM_STORE_REDIS_AUTH;
    }
    if (rc != 0 || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, cap,
                 "redis %s:%d does not tell its maxmemory-policy (CONFIG "
                 "GET is disabled or renamed), so it might evict keys "
                 "before their TTL: refused (allow_eviction=1 in the store "
                 "URL accepts the risk)",
                 s->conf.host, s->conf.port);
        freeReplyObject(r);
        return IDEM_STORE_REDIS_POLICY;
    }
    if (strcmp(r->element[1]->str, "noeviction") != 0) {
        snprintf(why, cap,
                 "redis %s:%d has maxmemory-policy %s, which may evict keys "
                 "before their TTL and so run a request twice: refused (set "
                 "maxmemory-policy noeviction, or allow_eviction=1 in the "
                 "store URL to accept the risk)",
                 s->conf.host, s->conf.port, r->element[1]->str);
        freeReplyObject(r);
        return IDEM_STORE_REDIS_POLICY;
    }
    freeReplyObject(r);
    return 0;
}

/*
 * Makes a connection ready for use: connected with the timeout, AUTH,
 * SELECT, the policy checked, the script loaded. Returns it, or NULL with
 * *fail and a sentence in why.
 */
static redisContext *idem_store_redis_connect(idem_store_redis_t *s,
                                              idem_store_redis_fail_t *fail,
                                              char *why, size_t cap)
{
    const idem_store_redis_conf_t *cf = &s->conf;
    struct timeval tv = {cf->timeout_ms / 1000, (cf->timeout_ms % 1000) * 1000};
    char dbs[24], sub[IDEM_STORE_REDIS_WHY_MAX / 2];
    const char *argv[3];
    size_t lens[3];
    redisReply *r = NULL;
    redisContext *c;
    int rc;

    *fail = IDEM_STORE_REDIS_NET;
    c = redisConnectWithTimeout(cf->host, cf->port, tv);
    if (c == NULL || c->err) {
        snprintf(why, cap, "redis %s:%d is unreachable: %s", cf->host, cf->port,
                 c ? c->errstr : "out of memory");
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(why, cap, "redis %s:%d: cannot set a timeout", cf->host,
                 cf->port);
        goto fail;
    }
    (void)redisEnableKeepAlive(c);

    if (cf->has_password) {
        int n = 1;
        argv[0] = "AUTH";
        lens[0] = 4;
        if (cf->user[0] != '\0') {
            argv[n] = cf->user;
            lens[n++] = strlen(cf->user);
        }
        argv[n] = cf->password;
        lens[n++] = strlen(cf->password);
        rc = idem_store_redis_cmd(c, n, argv, lens, &r, sub, sizeof(sub));
        if (rc != 0) {
            *fail = rc < 0 ? IDEM_STORE_REDIS_AUTH : IDEM_STORE_REDIS_NET;
            snprintf(why, cap, "redis %.100s:%d: %.200s", cf->host, cf->port,
                     sub);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (cf->db != 0) {
        snprintf(dbs, sizeof(dbs), "%ld", cf->db);
        argv[0] = "SELECT";
        lens[0] = 6;
        argv[1] = dbs;
        lens[1] = strlen(dbs);
        rc = idem_store_redis_cmd(c, 2, argv, lens, &r, sub, sizeof(sub));
        if (rc != 0) {
            *fail = rc < 0 ? IDEM_STORE_REDIS_SETUP : IDEM_STORE_REDIS_NET;
            snprintf(why, cap, "redis %.100s:%d: %.200s", cf->host, cf->port,
                     sub);
            goto fail;
        }
        freeReplyObject(r);
    }
    rc = idem_store_redis_policy(s, c, why, cap);
    if (rc != 0) {
        *fail = (idem_store_redis_fail_t)rc;
        goto fail;
    }
    argv[0] = "SCRIPT";
    lens[0] = 6;
    argv[1] = "LOAD";
    lens[1] = 4;
    argv[2] = idem_store_redis_cas;
    lens[2] = sizeof(idem_store_redis_cas) - 1;
    rc = idem_store_redis_cmd(c, 3, argv, lens, &r, sub, sizeof(sub));
    if (rc != 0) {
        *fail = rc < 0 ? IDEM_STORE_REDIS_SETUP : IDEM_STORE_REDIS_NET;
        snprintf(why, cap, "redis %.100s:%d: %.200s", cf->host, cf->port, sub);
        goto fail;
    }
    freeReplyObject(r);
    return c;

fail:
    if (c != NULL) {
        redisFree(c);
    }
    return NULL;
}

/* Frees every idle connection. Called with pool_mu held. */
static void idem_store_redis_flush(idem_store_redis_t *s)
{
    while (s->nidle > 0) {
        redisFree(s->idle[--s->nidle]);
    }
}

/* Records a failed attempt (or a refused policy). pool_mu held. */
static void idem_store_redis_went_down(idem_store_redis_t *s, int refused,
                                       const char *why)
{
    int64_t now = idem_store_redis_mono_ms();

    idem_store_redis_flush(s);
    if (!s->down) {
        s->backoff_ms = IDEM_STORE_REDIS_BACKOFF_MIN;
    }
    s->down = 1;
    s->refused = refused;
    s->next_try_ms = now + s->backoff_ms;
    s->backoff_ms *= 2;
    if (s->backoff_ms > IDEM_STORE_REDIS_BACKOFF_MAX) {
        s->backoff_ms = IDEM_STORE_REDIS_BACKOFF_MAX;
    }
    snprintf(s->why, sizeof(s->why), "%s", why);
}

/*
 * Takes a connection for one call: an idle one (*reused = 1) or a new
 * one. While the server is down, a new connection is tried only once the
 * backoff has passed; before that, and when the attempt fails, returns
 * IDEM_EUNAVAIL (why, when not NULL, says what failed). *fail, when not
 * NULL, receives how a connection attempt failed (0 when none was made).
 */
static int idem_store_redis_acquire(idem_store_redis_t *s, redisContext **out,
                                    int *reused, idem_store_redis_fail_t *fail,
                                    char *why, size_t cap)
{
    char buf[IDEM_STORE_REDIS_WHY_MAX];
    idem_store_redis_fail_t f;
    redisContext *c;

    if (fail != NULL) {
        *fail = 0;
    }
    pthread_mutex_lock(&s->pool_mu);
    if (s->down && idem_store_redis_mono_ms() < s->next_try_ms) {
        if (why != NULL) {
            snprintf(why, cap, "%s", s->why);
        }
        pthread_mutex_unlock(&s->pool_mu);
        return IDEM_EUNAVAIL;
    }
    if (!s->down && s->nidle > 0) {
        *out = s->idle[--s->nidle];
        *reused = 1;
        pthread_mutex_unlock(&s->pool_mu);
        return 0;
    }
    if (s->down) {
        /* this caller makes the one attempt of this backoff period */
        s->next_try_ms = idem_store_redis_mono_ms() + s->backoff_ms;
    }
    pthread_mutex_unlock(&s->pool_mu);

    c = idem_store_redis_connect(s, &f, buf, sizeof(buf));

    pthread_mutex_lock(&s->pool_mu);
    if (c == NULL) {
        idem_store_redis_went_down(s, f == IDEM_STORE_REDIS_POLICY, buf);
        pthread_mutex_unlock(&s->pool_mu);
        if (fail != NULL) {
            *fail = f;
        }
        if (why != NULL) {
            snprintf(why, cap, "%s", buf);
        }
        return IDEM_EUNAVAIL;
    }
    s->down = 0;
    s->refused = 0;
    s->why[0] = '\0';
    pthread_mutex_unlock(&s->pool_mu);
    *out = c;
    *reused = 0;
    return 0;
}

/*
 * Gives c back. A connection that failed (broken, or mid-pipeline) is
 * freed, and so is every idle one: they talk to the same server.
 */
static void idem_store_redis_put(idem_store_redis_t *s, redisContext *c,
                                 int broken)
{
    pthread_mutex_lock(&s->pool_mu);
    if (broken || c->err || s->down || s->nidle == IDEM_STORE_REDIS_POOL_MAX) {
        if (broken || c->err) {
            idem_store_redis_flush(s);
        }
        pthread_mutex_unlock(&s->pool_mu);
        redisFree(c);
        return;
    }
    s->idle[s->nidle++] = c;
    pthread_mutex_unlock(&s->pool_mu);
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                   */
/* ------------------------------------------------------------------------ */

static int idem_store_redis_read(idem_store_t *store, const idem_store_key_t *k,
                                 int (*cb)(void *ctx, const uint8_t *val,
                                           size_t len),
                                 void *ctx)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;
    char rkey[IDEM_STORE_REDIS_RKEY_MAX];
    const char *argv[2] = {"GET", rkey};
    size_t lens[2] = {3, idem_store_redis_rkey(s, k, rkey)};
    redisContext *c;
    redisReply *r;
    int rc, reused;

    for (int attempt = 0;; attempt++) {
        rc = idem_store_redis_acquire(s, &c, &reused, NULL, NULL, 0);
        if (rc != 0) {
            return rc;
        }
        r = redisCommandArgv(c, 2, argv, lens);
        if (r != NULL) {
            break;
        }
        idem_store_redis_put(s, c, 1);
        if (!reused || attempt > 0) {
            return IDEM_EUNAVAIL;
        }
    }
    if (r->type == REDIS_REPLY_NIL) {
        rc = IDEM_ENOTFOUND;
    } else if (r->type == REDIS_REPLY_STRING) {
        rc = cb(ctx, (const uint8_t *)r->str, r->len);
    } else {
        rc = IDEM_EIO;
    }
    freeReplyObject(r);
    idem_store_redis_put(s, c, 0);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Writing: a batch as groups of one key, read, planned, compared and set    */
/* ------------------------------------------------------------------------ */

/* The ops of one key in a batch, and where the group's round left them. */
typedef struct {
    size_t first;       /* the group's first op */
    uint64_t hash;      /* of its store key, to find it fast */
    int todo;           /* to be read and planned (again) this round */
    int failed;         /* settled with an error for every op */
    redisReply *read;   /* the GET reply of this round */
    const uint8_t *cur; /* the running bytes while planning, NULL: none */
    size_t cur_len;
    int writes;    /* some op of the group planned a write */
    int64_t px;    /* the expiry of the final bytes; 0: delete them */
    size_t nwrote; /* the ops that wrote */
    int unsure;    /* its script was sent and no answer came back */
    char sent[41]; /* then: SHA1 of the bytes it would have set, or "" */
} idem_store_redis_group_t;

/* The working memory of one write() call. */
typedef struct {
    idem_store_op_t **ops; /* the batch's ops, in order */
    size_t n;
    size_t *next;  /* next[i]: the group's next op after i, or n */
    size_t *group; /* group[i]: the index of op i's group */
    idem_store_redis_group_t *g;
    size_t ng;
} idem_store_redis_batch_t;

/* Settles every op of group g with rc (their plans undone). */
static void idem_store_redis_fail_group(idem_store_redis_batch_t *b,
                                        idem_store_redis_group_t *g, int rc)
{
    for (size_t i = g->first; i < b->n; i = b->next[i]) {
        idem_store_op_reset(b->ops[i]);
        b->ops[i]->rc = rc;
    }
    g->todo = 0;
    g->failed = 1;
}

/* Groups the ops by key, in order. Returns 0 or IDEM_ENOMEM. */
static int idem_store_redis_group(idem_store_redis_batch_t *b)
{
    size_t *last = NULL;
    int rc = IDEM_ENOMEM;

    b->next = malloc(b->n * sizeof(*b->next));
    b->group = malloc(b->n * sizeof(*b->group));
    b->g = calloc(b->n, sizeof(*b->g));
    last = malloc(b->n * sizeof(*last));
    if (b->next == NULL || b->group == NULL || b->g == NULL || last == NULL) {
        goto done;
    }
    b->ng = 0;
    for (size_t i = 0; i < b->n; i++) {
        const idem_store_key_t *k = &b->ops[i]->key;
        uint64_t h = idem_store_key_hash(k);
        size_t j;

        b->next[i] = b->n;
        if (b->ops[i]->kind == IDEM_STORE_OP_PRUNE) {
            b->group[i] = b->n;
            continue;
        }
        for (j = 0; j < b->ng; j++) {
            const idem_store_key_t *o = &b->ops[b->g[j].first]->key;
            if (b->g[j].hash == h && o->len == k->len &&
                memcmp(o->bytes, k->bytes, k->len) == 0) {
                break;
            }
        }
        if (j == b->ng) {
            b->g[j].first = i;
            b->g[j].hash = h;
            b->g[j].todo = 1;
            b->ng++;
        } else {
            b->next[last[j]] = i;
        }
        last[j] = i;
        b->group[i] = j;
    }
    rc = 0;
done:
    free(last);
    return rc;
}

static void idem_store_redis_batch_free(idem_store_redis_batch_t *b)
{
    if (b->g != NULL) {
        for (size_t j = 0; j < b->ng; j++) {
            if (b->g[j].read != NULL) {
                freeReplyObject(b->g[j].read);
            }
        }
    }
    free(b->next);
    free(b->group);
    free(b->g);
}

/* Milliseconds of a TIME reply, or 0. */
static int64_t idem_store_redis_time(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        return 0;
    }
    return (int64_t)strtoll(r->element[0]->str, NULL, 10) * 1000 +
           strtoll(r->element[1]->str, NULL, 10) / 1000;
}

/*
 * Round trip 1: TIME and a GET of every group to do. Returns 0 (the
 * replies in g->read, the time in *now_ms), IDEM_EUNAVAIL when the
 * connection failed (it must be dropped) or IDEM_EIO.
 */
static int idem_store_redis_fetch(idem_store_redis_t *s, redisContext *c,
                                  idem_store_redis_batch_t *b, int64_t *now_ms)
{
    char rkey[IDEM_STORE_REDIS_RKEY_MAX];
    const char *argv[2] = {"GET", rkey};
    size_t lens[2] = {3, 0};
    redisReply *r;
    void *reply;

    if (redisAppendCommand(c, "TIME") != REDIS_OK) {
        return IDEM_EUNAVAIL;
    }
    for (size_t j = 0; j < b->ng; j++) {
        if (!b->g[j].todo) {
            continue;
        }
        lens[1] = idem_store_redis_rkey(s, &b->ops[b->g[j].first]->key, rkey);
        if (redisAppendCommandArgv(c, 2, argv, lens) != REDIS_OK) {
            return IDEM_EUNAVAIL;
        }
    }
    if (redisGetReply(c, &reply) != REDIS_OK) {
        return IDEM_EUNAVAIL;
    }
    r = reply;
    *now_ms = idem_store_redis_time(r);
    freeReplyObject(r);
    for (size_t j = 0; j < b->ng; j++) {
        if (!b->g[j].todo) {
            continue;
        }
        if (redisGetReply(c, &reply) != REDIS_OK) {
            return IDEM_EUNAVAIL;
        }
        b->g[j].read = reply;
    }
    return *now_ms > 0 ? 0 : IDEM_EIO;
}

/*
 * Plans the ops of group g in order on what was read, each on the bytes
 * the one before it planned, and sets the group's final write.
 */
static void idem_store_redis_plan_group(idem_store_redis_t *s,
                                        idem_store_redis_batch_t *b,
                                        idem_store_redis_group_t *g,
                                        int64_t now_ms)
{
    int64_t px_now = 0, at = 0;
    int put = 0;
    size_t i;

    if (g->read->type == REDIS_REPLY_STRING) {
        g->cur = (const uint8_t *)g->read->str;
        g->cur_len = g->read->len;
    } else if (g->read->type == REDIS_REPLY_NIL) {
        g->cur = NULL;
        g->cur_len = 0;
    } else {
        idem_store_redis_fail_group(b, g, IDEM_EIO);
        return;
    }
    g->writes = 0;
    g->nwrote = 0;
    for (i = g->first; i < b->n; i = b->next[i]) {
        idem_store_op_t *op = b->ops[i];

        op->store_now_ms = s->conf.caller_clock ? 0 : now_ms;
        if (op->kind == IDEM_STORE_OP_BEGIN && op->begin->now_ms > px_now) {
            px_now = op->begin->now_ms;
        }
        op->rc = idem_store_plan(&s->base, op, g->cur, g->cur_len);
        if (op->rc != 0 || op->write == IDEM_STORE_WRITE_NONE) {
            continue;
        }
        g->writes = 1;
        g->nwrote++;
        if (op->write == IDEM_STORE_WRITE_PUT) {
            g->cur = op->val->data;
            g->cur_len = op->val->len;
            at = op->new_index_ms;
            put = 1;
        } else {
            g->cur = NULL;
            g->cur_len = 0;
            put = 0;
        }
    }
    if (!g->writes) {
        return;
    }
    /*
     * The expiry: from the store's time, or with clock=caller from the
     * latest caller time of the group (a complete brings none: then from
     * the record's creation, which keeps it a little longer, never less).
     */
    if (!s->conf.caller_clock) {
        px_now = now_ms;
    } else if (put) {
        idem_record_t rec;
        idem_header_t *headers = NULL;

        if (idem_record_decode(g->cur, g->cur_len, &rec, &headers) == 0 &&
            rec.created_ms > px_now) {
            px_now = rec.created_ms;
        }
        free(headers);
    }
    g->px = put && at > px_now ? at - px_now : 0;
    if (g->px > IDEM_STORE_REDIS_PX_MAX) {
        g->px = IDEM_STORE_REDIS_PX_MAX; /* Redis refuses what overflows */
    }
}

/*
 * Round trip 2: one compare-and-set per group that writes. A group that
 * wrote is done; one whose record changed meanwhile is to do again.
 * Returns 0 or IDEM_EUNAVAIL (connection failed: the groups without a
 * reply are left to do and unsure). *wrote counts the ops written.
 */
static int idem_store_redis_store(idem_store_redis_t *s, redisContext *c,
                                  idem_store_redis_batch_t *b, int *noscript,
                                  uint64_t *wrote)
{
    char rkey[IDEM_STORE_REDIS_RKEY_MAX], sha[41], px[24];
    const char *argv[7] = {"EVALSHA", s->sha, "1", rkey, sha, px, ""};
    size_t lens[7] = {7, 40, 1, 0, 0, 0, 0};
    void *reply;
    int rc = 0;

    for (size_t j = 0; j < b->ng; j++) {
        idem_store_redis_group_t *g = &b->g[j];
        const redisReply *read = g->read;

        if (!g->todo || !g->writes) {
            continue;
        }
        lens[3] = idem_store_redis_rkey(s, &b->ops[g->first]->key, rkey);
        if (read->type == REDIS_REPLY_STRING) {
            if (idem_store_redis_sha1(read->str, read->len, sha) != 0) {
                idem_store_redis_fail_group(b, g, IDEM_ENOMEM);
                continue;
            }
            lens[4] = 40;
        } else {
            lens[4] = 0;
        }
        lens[5] = (size_t)snprintf(px, sizeof(px), "%" PRId64, g->px);
        argv[6] = g->px > 0 ? (const char *)g->cur : "";
        lens[6] = g->px > 0 ? g->cur_len : 0;
        g->sent[0] = '\0';
        if ((g->px > 0 &&
             idem_store_redis_sha1(g->cur, g->cur_len, g->sent) != 0) ||
            redisAppendCommandArgv(c, 7, argv, lens) != REDIS_OK) {
            idem_store_redis_fail_group(b, g, IDEM_ENOMEM);
        }
    }
    for (size_t j = 0; j < b->ng; j++) {
        idem_store_redis_group_t *g = &b->g[j];
        redisReply *r;

        if (!g->todo || !g->writes) {
            continue;
        }
        if (rc != 0 || redisGetReply(c, &reply) != REDIS_OK) {
            /* sent, no answer: whether it was written is not known until
             * the record is read again (see idem_store_redis_verify) */
            g->unsure = 1;
            rc = IDEM_EUNAVAIL;
            continue;
        }
        r = reply;
        if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
            g->todo = 0;
            *wrote += g->nwrote;
        } else if (r->type == REDIS_REPLY_INTEGER) {
            /* changed since it was read: read and plan again */
        } else if (r->type == REDIS_REPLY_ERROR &&
                   strncmp(r->str, "NOSCRIPT", 8) == 0) {
            *noscript = 1;
        } else if (r->type == REDIS_REPLY_ERROR &&
                   strncmp(r->str, "OOM", 3) == 0) {
            idem_store_redis_fail_group(b, g, IDEM_EFULL);
        } else {
            idem_store_redis_fail_group(b, g, IDEM_EIO);
        }
        freeReplyObject(r);
    }
    return rc;
}

/* Loads the script again on c (after NOSCRIPT). Returns 0 or -1. */
static int idem_store_redis_reload(redisContext *c)
{
    const char *argv[3] = {"SCRIPT", "LOAD", idem_store_redis_cas};
    size_t lens[3] = {6, 4, sizeof(idem_store_redis_cas) - 1};
    redisReply *r = redisCommandArgv(c, 3, argv, lens);
    int ok = r != NULL && r->type == REDIS_REPLY_STRING;

    if (r != NULL) {
        freeReplyObject(r);
    }
    return ok ? 0 : -1;
}

/*
 * A group whose script got no answer (the connection broke) is judged by
 * what the record holds now: the bytes it would have set (or no record,
 * for a delete) mean the script ran, and its plans stand; anything else
 * means it did not (or another gateway has written since), and the group
 * is planned again on what is there. So a connection lost between a
 * script and its reply costs a retry, not an unknown outcome.
 */
static void idem_store_redis_verify(idem_store_redis_batch_t *b,
                                    uint64_t *wrote)
{
    char sha[41];

    for (size_t j = 0; j < b->ng; j++) {
        idem_store_redis_group_t *g = &b->g[j];
        const redisReply *r = g->read;
        int landed;

        if (!g->todo || !g->unsure) {
            continue;
        }
        g->unsure = 0;
        if (g->sent[0] == '\0') {
            landed = r->type == REDIS_REPLY_NIL;
        } else {
            landed = r->type == REDIS_REPLY_STRING &&
                     idem_store_redis_sha1(r->str, r->len, sha) == 0 &&
                     strcmp(sha, g->sent) == 0;
        }
        if (landed) {
            g->todo = 0;
            *wrote += g->nwrote;
        }
    }
}

/* Drops the broken *cp (and the replies read on it) for a new one. */
static int idem_store_redis_reconnect(idem_store_redis_t *s, redisContext **cp,
                                      idem_store_redis_batch_t *b)
{
    int reused;

    idem_store_redis_put(s, *cp, 1);
    *cp = NULL;
    for (size_t j = 0; j < b->ng; j++) {
        if (b->g[j].read != NULL) {
            freeReplyObject(b->g[j].read);
            b->g[j].read = NULL;
        }
    }
    return idem_store_redis_acquire(s, cp, &reused, NULL, NULL, 0);
}

/*
 * Runs the rounds of a grouped batch on *cp. A connection that breaks
 * (an idle one from before a restart, or a blip) is replaced once per
 * call. Returns 0, or IDEM_EUNAVAIL when the connection failed again
 * (then *cp, when not NULL, must be dropped); the groups left to do are
 * the caller's to settle.
 */
static int idem_store_redis_rounds(idem_store_redis_t *s, redisContext **cp,
                                   idem_store_redis_batch_t *b)
{
    uint64_t wrote = 0;
    int64_t now_ms = 0;
    int rc = 0, noscript, left = 1, renewed = 0;

    for (int round = 0; round < IDEM_STORE_REDIS_ROUNDS && left; round++) {
        for (size_t j = 0; j < b->ng; j++) {
            if (b->g[j].read != NULL) {
                freeReplyObject(b->g[j].read);
                b->g[j].read = NULL;
            }
        }
        rc = idem_store_redis_fetch(s, *cp, b, &now_ms);
        if (rc == IDEM_EUNAVAIL && !renewed) {
            renewed = 1;
            rc = idem_store_redis_reconnect(s, cp, b);
            if (rc == 0) {
                rc = idem_store_redis_fetch(s, *cp, b, &now_ms);
            }
        }
        if (rc != 0) {
            break;
        }
        idem_store_redis_verify(b, &wrote);
        for (size_t j = 0; j < b->ng; j++) {
            if (b->g[j].todo) {
                idem_store_redis_plan_group(s, b, &b->g[j], now_ms);
                if (!b->g[j].writes) {
                    b->g[j].todo = 0; /* read-only answers stand */
                }
            }
        }
        noscript = 0;
        rc = idem_store_redis_store(s, *cp, b, &noscript, &wrote);
        if (rc != 0 && !renewed) {
            /* the next round reads what the unanswered scripts did */
            renewed = 1;
            rc = idem_store_redis_reconnect(s, cp, b);
            if (rc != 0) {
                break;
            }
            continue;
        }
        if (rc != 0) {
            break;
        }
        if (noscript && idem_store_redis_reload(*cp) != 0) {
            rc = IDEM_EUNAVAIL;
            break;
        }
        left = 0;
        for (size_t j = 0; j < b->ng; j++) {
            left |= b->g[j].todo;
        }
    }
    if (rc == 0) {
        /* lost the race every round: give up rather than spin */
        for (size_t j = 0; j < b->ng; j++) {
            if (b->g[j].todo) {
                idem_store_redis_fail_group(b, &b->g[j], IDEM_EUNAVAIL);
            }
        }
    }
    if (wrote > 0) {
        atomic_fetch_add(&s->base.commits, 1);
        atomic_fetch_add(&s->base.batched_ops, wrote);
    }
    return rc;
}

/* Carries out ops[0..n) (pointers, in order) as one batch. */
static void idem_store_redis_run(idem_store_redis_t *s, idem_store_op_t **ops,
                                 size_t n)
{
    idem_store_redis_batch_t b = {ops, n, NULL, NULL, NULL, 0};
    redisContext *c = NULL;
    int rc, reused = 0, planned = 0, grouped;

    for (size_t i = 0; i < n; i++) {
        if (ops[i]->kind == IDEM_STORE_OP_PRUNE) {
            /* Redis expires records itself (PX) */
            idem_store_op_reset(ops[i]);
        } else {
            planned = 1;
        }
    }
    if (!planned) {
        return;
    }
    rc = idem_store_redis_group(&b);
    grouped = rc == 0;
    if (rc == 0) {
        rc = idem_store_redis_acquire(s, &c, &reused, NULL, NULL, 0);
    }
    if (rc == 0) {
        rc = idem_store_redis_rounds(s, &c, &b);
        if (c != NULL) {
            idem_store_redis_put(s, c, rc != 0);
        }
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->kind == IDEM_STORE_OP_PRUNE) {
                continue;
            }
            /* the ops of groups not settled yet; the others stand */
            if (!grouped || b.g[b.group[i]].todo) {
                idem_store_op_reset(ops[i]);
                ops[i]->rc = rc;
            }
        }
    }
    idem_store_redis_batch_free(&b);
}

/* Carries out ops[0..n) as a batch of their own; ENOMEM: each alone. */
static void idem_store_redis_run_array(idem_store_redis_t *s,
                                       idem_store_op_t *ops, size_t n)
{
    idem_store_op_t **p = n ? malloc(n * sizeof(*p)) : NULL;

    if (p == NULL) {
        for (size_t i = 0; i < n; i++) {
            idem_store_op_t *one = &ops[i];
            idem_store_redis_run(s, &one, 1);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        p[i] = &ops[i];
    }
    idem_store_redis_run(s, p, n);
    free(p);
}

/* The group-commit queue's leader: every caller's ops as one batch. */
static void idem_store_redis_run_chain(void *backend,
                                       idem_store_gcq_waiter_t *batch)
{
    idem_store_redis_t *s = backend;
    idem_store_gcq_waiter_t *w;
    idem_store_op_t **p;
    size_t n = 0, k = 0;

    for (w = batch; w != NULL; w = w->next) {
        n += w->n;
    }
    p = malloc(n * sizeof(*p));
    if (p == NULL) {
        for (w = batch; w != NULL; w = w->next) {
            idem_store_redis_run_array(s, w->ops, w->n);
        }
        return;
    }
    for (w = batch; w != NULL; w = w->next) {
        for (size_t i = 0; i < w->n; i++) {
            p[k++] = &w->ops[i];
        }
    }
    idem_store_redis_run(s, p, n);
    free(p);
}

static void idem_store_redis_write(idem_store_t *store, idem_store_op_t *ops,
                                   size_t n)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;

    if (n == 0) {
        return;
    }
    /*
     * A batch is carried out at once on a connection of its own, in
     * parallel with the others (its planning is client work that threads
     * share out); single calls from many threads are gathered by the
     * queue into batches, which spares their round trips (measured: see
     * the top of the file).
     */
    if (n > 1 || idem_store_gcq_submit(&s->queue, ops, n) != 0) {
        idem_store_redis_run_array(s, ops, n);
    }
}

/* ------------------------------------------------------------------------ */
/* Health, usage, identity                                                   */
/* ------------------------------------------------------------------------ */

/* PINGs the server and reads its policy again. */
static int idem_store_redis_check(idem_store_t *store, char *why, size_t cap)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    char buf[IDEM_STORE_REDIS_WHY_MAX];
    redisContext *c;
    redisReply *r = NULL;
    int rc, reused;

    for (int attempt = 0;; attempt++) {
        rc = idem_store_redis_acquire(s, &c, &reused, NULL, why, cap);
        if (rc != 0) {
            return rc;
        }
        rc = idem_store_redis_cmd(c, 1, argv, lens, &r, buf, sizeof(buf));
        if (rc != IDEM_STORE_REDIS_NET) {
            break;
        }
        idem_store_redis_put(s, c, 1);
        if (!reused || attempt > 0) {
            snprintf(why, cap, "redis %s:%d does not answer: %s", s->conf.host,
                     s->conf.port, buf);
            return IDEM_EUNAVAIL;
        }
    }
    if (rc != 0) {
        /* e.g. LOADING: up, not serving */
        snprintf(why, cap, "redis %s:%d: %s", s->conf.host, s->conf.port, buf);
        idem_store_redis_put(s, c, 1);
        return IDEM_EUNAVAIL;
    }
    freeReplyObject(r);
    rc = idem_store_redis_policy(s, c, buf, sizeof(buf));
    if (rc != 0) {
        pthread_mutex_lock(&s->pool_mu);
        if (rc == IDEM_STORE_REDIS_POLICY) {
            idem_store_redis_went_down(s, 1, buf);
        }
        pthread_mutex_unlock(&s->pool_mu);
        idem_store_redis_put(s, c, 1);
        snprintf(why, cap, "%s", buf);
        return IDEM_EUNAVAIL;
    }
    idem_store_redis_put(s, c, 0);
    return 0;
}

/* A number after "name:" in an INFO reply, or 0. */
static uint64_t idem_store_redis_info(const char *info, const char *name)
{
    const char *p = strstr(info, name);

    return p != NULL ? strtoull(p + strlen(name), NULL, 10) : 0;
}

/*
 * The whole database's keys (DBSIZE: other users' keys too) and Redis's
 * memory (INFO memory); Redis has no fixed size unless maxmemory is set.
 */
static int idem_store_redis_usage(idem_store_t *store, idem_store_usage_t *out)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;
    redisContext *c;
    redisReply *dbsize = NULL, *info = NULL;
    void *reply;
    int rc, reused, broken = 1;

    rc = idem_store_redis_acquire(s, &c, &reused, NULL, NULL, 0);
    if (rc != 0) {
        return rc;
    }
    rc = IDEM_EUNAVAIL;
    if (redisAppendCommand(c, "DBSIZE") != REDIS_OK ||
        redisAppendCommand(c, "INFO memory") != REDIS_OK ||
        redisGetReply(c, &reply) != REDIS_OK) {
        goto done;
    }
    dbsize = reply;
    if (redisGetReply(c, &reply) != REDIS_OK) {
        goto done;
    }
    info = reply;
    broken = 0;
    if (dbsize->type != REDIS_REPLY_INTEGER ||
        info->type != REDIS_REPLY_STRING) {
        rc = IDEM_EIO;
        goto done;
    }
    out->records = (uint64_t)dbsize->integer;
    out->bytes_used = idem_store_redis_info(info->str, "\nused_memory:");
    out->bytes_limit = idem_store_redis_info(info->str, "\nmaxmemory:");
    out->bytes_claim_limit = out->bytes_limit;
    rc = 0;
done:
    if (dbsize != NULL) {
        freeReplyObject(dbsize);
    }
    if (info != NULL) {
        freeReplyObject(info);
    }
    idem_store_redis_put(s, c, broken);
    return rc;
}

/* Stores bytes as they are, with no expiry (tests: a corrupt record). */
static int idem_store_redis_plant(idem_store_t *store,
                                  const idem_store_key_t *k, const uint8_t *val,
                                  size_t len)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;
    char rkey[IDEM_STORE_REDIS_RKEY_MAX];
    const char *argv[3] = {"SET", rkey, (const char *)val};
    size_t lens[3] = {3, idem_store_redis_rkey(s, k, rkey), len};
    char why[IDEM_STORE_REDIS_WHY_MAX];
    redisContext *c;
    redisReply *r = NULL;
    int rc, reused;

    rc = idem_store_redis_acquire(s, &c, &reused, NULL, NULL, 0);
    if (rc != 0) {
        return rc;
    }
    rc = idem_store_redis_cmd(c, 3, argv, lens, &r, why, sizeof(why));
    if (r != NULL) {
        freeReplyObject(r);
    }
    idem_store_redis_put(s, c, rc != 0);
    return rc == 0 ? 0 : IDEM_EUNAVAIL;
}

/* A server has no files of ours to tell apart. */
static void idem_store_redis_identity(const idem_store_t *store,
                                      idem_store_identity_t *out)
{
    (void)store;
    out->device = 0;
    out->inode = 0;
}

static void idem_store_redis_close(idem_store_t *store)
{
    idem_store_redis_t *s = (idem_store_redis_t *)store;

    idem_store_redis_flush(s);
    idem_store_gcq_destroy(&s->queue);
    pthread_mutex_destroy(&s->pool_mu);
    free(s);
}

static const idem_store_vtable_t idem_store_redis_vt = {
    .name = "redis",
    .read = idem_store_redis_read,
    .write = idem_store_redis_write,
    .usage = idem_store_redis_usage,
    .check = idem_store_redis_check,
    .identity = idem_store_redis_identity,
    .close = idem_store_redis_close,
    .plant = idem_store_redis_plant,
};

/* ------------------------------------------------------------------------ */
/* The URL                                                                   */
/* ------------------------------------------------------------------------ */

static int idem_store_redis_hexval(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes n bytes of p into out (cap bytes with the NUL). */
static int idem_store_redis_unescape(const char *p, size_t n, char *out,
                                     size_t cap)
{
    size_t len = 0;

    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)p[i];

        if (ch == '%') {
            int hi, lo;

            if (i + 2 >= n) {
                return -1;
            }
            hi = idem_store_redis_hexval(p[i + 1]);
            lo = idem_store_redis_hexval(p[i + 2]);
            if (hi < 0 || lo < 0) {
                return -1;
            }
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || len + 1 >= cap) {
            return -1;
        }
        out[len++] = (char)ch;
    }
    out[len] = '\0';
    return 0;
}

/* Parses digits (all of them) into *out, at most max. */
static int idem_store_redis_number(const char *p, size_t n, long max, long *out)
{
    long v = 0;

    if (n == 0 || n > 10) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (p[i] - '0');
    }
    if (v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

/* A duration: digits (milliseconds), or digits with "ms" or "s". */
static int idem_store_redis_duration(const char *p, size_t n, long *ms)
{
    long v, unit = 1;

    if (n > 2 && memcmp(p + n - 2, "ms", 2) == 0) {
        n -= 2;
    } else if (n > 1 && p[n - 1] == 's') {
        n -= 1;
        unit = 1000;
    }
    if (idem_store_redis_number(p, n, 600000, &v) != 0) {
        return -1;
    }
    *ms = v * unit;
    return *ms >= 1 && *ms <= 600000 ? 0 : -1;
}

static int idem_store_redis_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && memcmp(p, name, n) == 0;
}

#define IDEM_STORE_REDIS_OPTIONS                                               \
    "prefix=TEXT, timeout=DURATION, allow_eviction=0|1 and clock=store|caller"

/* Parses the "?name=value&..." options into *c; a later one wins. */
static int idem_store_redis_options(const char *q, idem_store_redis_conf_t *c,
                                    char *why, size_t cap)
{
    const char *p, *end, *eq, *val;

    for (p = q; p != NULL; p = *end ? end + 1 : NULL) {
        size_t name_len, n;
        long v;

        end = strchr(p, '&');
        if (end == NULL) {
            end = p + strlen(p);
        }
        eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL) {
            snprintf(why, cap,
                     "redis option \"%.*s\" has no value (name=value: "
                     "%s)",
                     (int)(end - p), p, IDEM_STORE_REDIS_OPTIONS);
            return IDEM_EBADURL;
        }
        name_len = (size_t)(eq - p);
        val = eq + 1;
        n = (size_t)(end - val);
        if (idem_store_redis_is(p, name_len, "prefix")) {
            if (n == 0 || n > IDEM_STORE_REDIS_PREFIX_MAX) {
                snprintf(why, cap,
                         "redis prefix \"%.*s\" must have 1 to %d "
                         "characters",
                         (int)n, val, IDEM_STORE_REDIS_PREFIX_MAX);
                return IDEM_EBADURL;
            }
            for (size_t i = 0; i < n; i++) {
                if (val[i] < 0x21 || val[i] > 0x7e || val[i] == '{' ||
                    val[i] == '}' || val[i] == '%') {
                    snprintf(why, cap,
                             "redis prefix \"%.*s\" may hold printable "
                             "ASCII only, without '{', '}' (a Redis Cluster "
                             "hash tag would put every key in one slot) or "
                             "'%%'",
                             (int)n, val);
                    return IDEM_EBADURL;
                }
            }
            memcpy(c->prefix, val, n);
            c->prefix[n] = '\0';
        } else if (idem_store_redis_is(p, name_len, "timeout")) {
            if (idem_store_redis_duration(val, n, &v) != 0) {
                snprintf(why, cap,
                         "redis timeout \"%.*s\" is not a duration from 1ms "
                         "to 600s (e.g. 500ms, 2s)",
                         (int)n, val);
                return IDEM_EBADURL;
            }
            c->timeout_ms = (int)v;
        } else if (idem_store_redis_is(p, name_len, "allow_eviction")) {
            if (n != 1 || (val[0] != '0' && val[0] != '1')) {
                snprintf(why, cap,
                         "redis option allow_eviction is 0 or 1, not "
                         "\"%.*s\"",
                         (int)n, val);
                return IDEM_EBADURL;
            }
            c->allow_eviction = val[0] == '1';
        } else if (idem_store_redis_is(p, name_len, "clock")) {
            if (idem_store_redis_is(val, n, "store")) {
                c->caller_clock = 0;
            } else if (idem_store_redis_is(val, n, "caller")) {
                c->caller_clock = 1;
            } else {
                snprintf(why, cap,
                         "redis option clock is store or caller, not "
                         "\"%.*s\"",
                         (int)n, val);
                return IDEM_EBADURL;
            }
        } else {
            snprintf(why, cap,
                     "unknown redis option \"%.*s\" (the options are %s)",
                     (int)name_len, p, IDEM_STORE_REDIS_OPTIONS);
            return IDEM_EBADURL;
        }
    }
    return 0;
}

/*
 * Parses "//[[USER]:PASSWORD@]HOST[:PORT][/DB][?options]" (what follows
 * "redis:") into *c. On IDEM_EBADURL a sentence saying why is in why.
 */
static int idem_store_redis_parse(const char *rest, idem_store_redis_conf_t *c,
                                  char *why, size_t cap)
{
    const char *p, *auth_end, *at, *host, *host_end, *port = NULL, *q;
    size_t host_len;
    long v;

    memset(c, 0, sizeof(*c));
    c->port = IDEM_STORE_REDIS_PORT;
    c->timeout_ms = IDEM_STORE_REDIS_TIMEOUT_MS;
    strcpy(c->prefix, IDEM_STORE_REDIS_PREFIX);
    if (strncmp(rest, "//", 2) != 0) {
        snprintf(why, cap,
                 "a redis store URL starts with redis:// "
                 "(redis://[:PASSWORD@]HOST:PORT[/DB][?options])");
        return IDEM_EBADURL;
    }
    p = rest + 2;
    auth_end = p + strcspn(p, "/?");
    at = NULL;
    for (const char *x = p; x < auth_end; x++) {
        if (*x == '@') {
            at = x;
        }
    }
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));

        if (colon == NULL) {
            snprintf(why, cap,
                     "the redis password goes after a colon: "
                     "redis://:PASSWORD@HOST:PORT (or USER:PASSWORD@)");
            return IDEM_EBADURL;
        }
        if (idem_store_redis_unescape(p, (size_t)(colon - p), c->user,
                                      sizeof(c->user)) != 0 ||
            idem_store_redis_unescape(colon + 1, (size_t)(at - colon - 1),
                                      c->password, sizeof(c->password)) != 0) {
            snprintf(why, cap,
                     "the redis user or password has a bad %%-escape, a NUL "
                     "or more than %d bytes",
                     IDEM_STORE_REDIS_SECRET_MAX);
            return IDEM_EBADURL;
        }
        c->has_password = 1;
        p = at + 1;
    }
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (host_end == NULL) {
            snprintf(why, cap, "the redis host \"%.*s\" lacks its ']'",
                     (int)(auth_end - p), p);
            return IDEM_EBADURL;
        }
        p = host_end + 1;
    } else {
        host = p;
        host_end = p + strcspn(p, ":/?");
        p = host_end;
    }
    host_len = (size_t)(host_end - host);
    if (host_len == 0 || host_len > IDEM_STORE_REDIS_HOST_MAX) {
        snprintf(why, cap,
                 "a redis store URL needs a host: "
                 "redis://HOST:PORT, e.g. redis://127.0.0.1:6379");
        return IDEM_EBADURL;
    }
    for (size_t i = 0; i < host_len; i++) {
        char ch = host[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' ||
              (ch == ':' && host[-1] == '['))) {
            snprintf(why, cap,
                     "the redis host \"%.*s\" is not a host name "
                     "or an address",
                     (int)host_len, host);
            return IDEM_EBADURL;
        }
    }
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    if (*p == ':') {
        port = p + 1;
        p = port + strcspn(port, "/?");
        if (idem_store_redis_number(port, (size_t)(p - port), 65535, &v) != 0 ||
            v == 0) {
            snprintf(why, cap,
                     "the redis port \"%.*s\" is not a number "
                     "from 1 to 65535",
                     (int)(p - port), port);
            return IDEM_EBADURL;
        }
        c->port = (int)v;
    } else if (p != auth_end) {
        snprintf(why, cap, "unexpected \"%.*s\" after the redis host",
                 (int)(auth_end - p), p);
        return IDEM_EBADURL;
    }
    if (*p == '/') {
        const char *db = p + 1;

        p = db + strcspn(db, "?");
        if (idem_store_redis_number(db, (size_t)(p - db), INT_MAX, &v) != 0) {
            snprintf(why, cap,
                     "the redis database \"%.*s\" is not a number (the /DB "
                     "of redis://HOST:PORT/DB, 0 by default)",
                     (int)(p - db), db);
            return IDEM_EBADURL;
        }
        c->db = v;
    }
    q = *p == '?' ? p + 1 : NULL;
    if (q != NULL) {
        return idem_store_redis_options(q, c, why, cap);
    }
    return 0;
}

static int idem_store_redis_check_url(const char *rest, char *why, size_t cap)
{
    idem_store_redis_conf_t c;

    return idem_store_redis_parse(rest, &c, why, cap);
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

static int idem_store_redis_open(const char *url, const char *rest,
                                 idem_store_t **out)
{
    idem_store_redis_t *s;
    idem_store_redis_fail_t fail;
    redisContext *c = NULL;
    char why[IDEM_STORE_REDIS_WHY_MAX];
    int rc, reused;

    (void)url;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return IDEM_ENOMEM;
    }
    rc = idem_store_redis_parse(rest, &s->conf, why, sizeof(why));
    if (rc != 0) {
        free(s);
        return rc;
    }
    if (idem_store_redis_sha1(idem_store_redis_cas,
                              sizeof(idem_store_redis_cas) - 1, s->sha) != 0 ||
        pthread_mutex_init(&s->pool_mu, NULL) != 0) {
        free(s);
        return IDEM_ENOMEM;
    }
    if (idem_store_gcq_init(&s->queue, idem_store_redis_run_chain, s) != 0) {
        pthread_mutex_destroy(&s->pool_mu);
        free(s);
        return IDEM_ENOMEM;
    }
    s->base.vt = &idem_store_redis_vt;

    /* A server that is down now is no reason to fail: the store comes up
     * unavailable and heals. One that refuses what we need is. */
    rc = idem_store_redis_acquire(s, &c, &reused, &fail, why, sizeof(why));
    if (rc == 0) {
        idem_store_redis_put(s, c, 0);
    } else if (fail == IDEM_STORE_REDIS_POLICY) {
        rc = IDEM_EEVICTION;
        goto fail;
    } else if (fail == IDEM_STORE_REDIS_AUTH) {
        rc = IDEM_EPERM;
        goto fail;
    } else if (fail == IDEM_STORE_REDIS_SETUP) {
        rc = IDEM_EIO;
        goto fail;
    }
    *out = &s->base;
    return 0;

fail:
    idem_store_redis_close(&s->base);
    return rc;
}

const idem_store_backend_t idem_store_redis_backend = {
    .scheme = "redis",
    .forms = "redis://[:PASSWORD@]HOST:PORT[/DB][?options]",
    .caps = IDEM_STORE_CAP_CLOCK | IDEM_STORE_CAP_SHARED |
            IDEM_STORE_CAP_SELF_EXPIRY,
    .open = idem_store_redis_open,
    .check_url = idem_store_redis_check_url,
};
