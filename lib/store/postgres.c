/*
 * postgres.c — the "postgres://..." (or "postgresql://...") store: records
 * in one PostgreSQL table shared by every gateway that opens the URL, on
 * any number of machines, durable as PostgreSQL's commits are.
 *
 * The URL is any libpq connection URI; three query parameters of our own
 * are taken out before libpq sees it:
 *
 *   table=NAME     the table's name without its version (default
 *                  idem_records; [a-z_][a-z0-9_]*, at most 40 bytes); the
 *                  table is NAME_v1, created on first use
 *   clock=store    leases and TTLs on the server's clock (the default), or
 *   clock=caller   on the now_ms callers pass (for tests that move time)
 *   pool=N         connections per handle, 1 to 64 (default 4)
 *
 * The table (v1 of its layout; another layout gets another name):
 *
 *   scope bytea, key bytea    primary key: the store key split in two
 *   rec bytea                 the encoded record (lib/core/record.c)
 *   removable_at int8         idem_store_removable_at(rec), indexed, for
 *                             prune
 *
 * How a batch of ops moves (write()), on one connection of the pool, in
 * libpq pipeline mode: each arrow down is one round trip, whatever the
 * number of ops.
 *
 *   ops[0..n)  grouped by store key (sorted), in order within a key
 *     |
 *   1 BEGIN; SELECT rec ... FOR UPDATE for every key, in key order (so
 *     |   two batches never lock in opposite orders); the server's
 *     |   clock_timestamp() once the locks are held. Sync.
 *     |   Plan every op of a key in order, each seeing the plan before
 *     v   it, on that time (store_now_ms).
 *   2 per key, its final state: INSERT (no row was there), UPDATE or
 *     |   DELETE (the row is locked), in key order; COMMIT, or ROLLBACK
 *     |   when no plan writes (a replay, a wait, a mismatch logged
 *     |   before: no commit record, so no WAL flush to wait for). Sync:
 *     v   durable when the COMMIT is.
 *   each op's rc and results, as idem_store_plan() left them
 *
 * Every begin takes this path (store.c's read-only fast path is for
 * stores whose reads are memory reads). A lock-free snapshot read first
 * would answer replays in one round trip but cost new keys a third:
 * measured with store_bench on this machine, new keys went 1.3 to 1.8
 * times faster without it, and new keys are most of the traffic.
 *
 * A key that had no row cannot be locked: two batches may both plan to
 * claim it. The INSERT of the second then fails on the primary key (it
 * waits for the first's commit), which aborts its whole transaction:
 * nothing of a plan made on a stale read is committed, and the batch runs
 * again from 1, whose lock now sees the row. Deadlocks (40P01) and
 * serialization failures are run again the same way, a few times. Any
 * other SQL error fails no op by itself: each op is then run alone, so only
 * the op that fails gets an error. A connection that breaks gives every op
 * not yet answered IDEM_EUNAVAIL (a COMMIT cut off may or may not have
 * happened: the claim is then either durable or absent, and the caller,
 * who sent nothing upstream, answers 503 either way).
 *
 * The pool: pool=N connections, each used by one thread at a time (write,
 * read, usage, check and prune all take one). A broken connection is
 * dropped and made again on the next call, but not more often than a
 * backoff allows (100 ms, doubled per failure up to 1 s): while the
 * server is unreachable every call fails fast with IDEM_EUNAVAIL, and
 * service resumes by itself once it answers. Nothing is connected at
 * open: a store opens while the server is down. Each session sets
 * statement_timeout and idle_in_transaction_session_timeout, and libpq
 * gets connect_timeout and tcp_user_timeout unless the URL sets them.
 *
 * Prune deletes at most budget rows whose removable_at has passed (on the
 * server's clock), found by the index and locked with SKIP LOCKED, in one
 * short statement: it never waits for a batch and never runs long.
 */
#include "registry.h"
#include "store_int.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDEM_STORE_PG_TABLE_DEFAULT "idem_records"
#define IDEM_STORE_PG_TABLE_MAX     40
#define IDEM_STORE_PG_VERSION       "v1"
#define IDEM_STORE_PG_POOL_DEFAULT  4
#define IDEM_STORE_PG_POOL_MAX      64
#define IDEM_STORE_PG_BACKOFF_MIN   100  /* ms */
#define IDEM_STORE_PG_BACKOFF_MAX   1000 /* ms */
#define IDEM_STORE_PG_RETRIES       8    /* of a batch that lost a race */
#define IDEM_STORE_PG_SQL_MAX       1024

/* The server's clock in milliseconds since the epoch, as SQL. */
#define IDEM_STORE_PG_NOW                                                      \
    "floor(extract(epoch FROM clock_timestamp()) * 1000)::int8"

/* How a failed round trip ends, beyond the IDEM_E... codes. */
enum {
    IDEM_STORE_PG_RETRY = 1, /* lost a race: run the batch again */
    IDEM_STORE_PG_ALONE = 2  /* an SQL error: run each op alone */
};

/* One connection of the pool. */
typedef struct {
    PGconn *conn; /* NULL: not connected */
    int busy;     /* a thread uses it */
    int used;     /* conn has carried a call */
} idem_store_pg_slot_t;

typedef struct {
    idem_store_t base; /* first: the handle callers hold */
    char *uri;         /* the URL without our parameters (malloc'd) */
    char table[IDEM_STORE_PG_TABLE_MAX + 8]; /* NAME_v1 */
    int store_clock;                         /* clock=store */
    size_t npool;

    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* a slot became free */
    idem_store_pg_slot_t slots[IDEM_STORE_PG_POOL_MAX];
    int64_t retry_at; /* monotonic ms: no connect before this ... */
    int64_t backoff;  /* ... once one failed (ms; 0 after a success) */
    char why[256];    /* the last connection failure */
} idem_store_pg_t;

/* What an "postgres:" URL says, parsed. */
typedef struct {
    char *uri; /* malloc'd */
    char table[IDEM_STORE_PG_TABLE_MAX + 1];
    int store_clock;
    size_t npool;
} idem_store_pg_conf_t;

/* The prepared statements of every session. */
enum {
    IDEM_STORE_PG_LOCK = 0,
    IDEM_STORE_PG_NOWQ,
    IDEM_STORE_PG_INS,
    IDEM_STORE_PG_UPD,
    IDEM_STORE_PG_DEL,
    IDEM_STORE_PG_GET,
    IDEM_STORE_PG_PRUNE,
    IDEM_STORE_PG_NSTMT
};

static const char *const idem_store_pg_stmt_name[IDEM_STORE_PG_NSTMT] = {
    "idem_lock", "idem_now", "idem_ins",   "idem_upd",
    "idem_del",  "idem_get", "idem_prune",
};

/* Each with %1$s for the table. */
static const char *const idem_store_pg_stmt_sql[IDEM_STORE_PG_NSTMT] = {
    "SELECT rec FROM %1$s WHERE scope = $1 AND key = $2 FOR UPDATE",
    "SELECT " IDEM_STORE_PG_NOW,
    "INSERT INTO %1$s (scope, key, rec, removable_at)"
    " VALUES ($1, $2, $3, $4::int8)",
    "UPDATE %1$s SET rec = $3, removable_at = $4::int8"
    " WHERE scope = $1 AND key = $2",
    "DELETE FROM %1$s WHERE scope = $1 AND key = $2",
    "SELECT rec FROM %1$s WHERE scope = $1 AND key = $2",
    /* $1: the time (NULL: the server's), $2: the budget */
    "WITH cand AS (SELECT scope, key, removable_at FROM %1$s"
    " WHERE removable_at <= coalesce($1::int8, " IDEM_STORE_PG_NOW ")"
    " ORDER BY removable_at LIMIT $2::int8 + 1 FOR UPDATE SKIP LOCKED),"
    " gone AS (DELETE FROM %1$s AS t USING (SELECT scope, key FROM cand"
    " ORDER BY removable_at LIMIT $2::int8) AS c"
    " WHERE t.scope = c.scope AND t.key = c.key RETURNING 1)"
    " SELECT (SELECT count(*) FROM gone)::int8,"
    " (SELECT count(*) FROM cand) > $2::int8",
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

static int64_t idem_store_pg_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq's last message of c on one line, into buf. */
static void idem_store_pg_message(const char *msg, char *buf, size_t cap)
{
    size_t n = 0;

    if (msg == NULL || *msg == '\0') {
        msg = "no message";
    }
    for (; *msg != '\0' && n + 1 < cap; msg++) {
        buf[n++] = (*msg == '\n' || *msg == '\r' || *msg == '\t') ? ' ' : *msg;
    }
    while (n > 0 && buf[n - 1] == ' ') {
        n--;
    }
    buf[n] = '\0';
}

/*
 * What a failed result means for the batch: a race lost (run it again),
 * the connection or server gone (IDEM_EUNAVAIL), a full disk, a
 * permission, or another SQL error (run each op alone).
 */
static int idem_store_pg_classify(PGconn *c, const PGresult *r)
{
    const char *state;

    if (PQstatus(c) == CONNECTION_BAD || r == NULL) {
        return IDEM_EUNAVAIL;
    }
    state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state == NULL) {
        return IDEM_EUNAVAIL; /* made by libpq: the connection failed */
    }
    if (strcmp(state, "23505") == 0 || strcmp(state, "40001") == 0 ||
        strcmp(state, "40P01") == 0) {
        return IDEM_STORE_PG_RETRY;
    }
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
        strcmp(state, "53300") == 0 || strcmp(state, "55P03") == 0 ||
        strncmp(state, "25", 2) == 0) {
        /* connection, shutdown, timeout, too many clients, lock timeout */
        return IDEM_EUNAVAIL;
    }
    if (strcmp(state, "53100") == 0) {
        return IDEM_EFULL;
    }
    if (strcmp(state, "53200") == 0) {
        return IDEM_ENOMEM;
    }
    if (strcmp(state, "42501") == 0) {
        return IDEM_EPERM;
    }
    return IDEM_STORE_PG_ALONE;
}

/* The big-endian int8 of a binary result field. */
static int64_t idem_store_pg_int8(const PGresult *r, int row, int col)
{
    const uint8_t *p = (const uint8_t *)PQgetvalue(r, row, col);
    uint64_t v = 0;

    if (PQgetlength(r, row, col) != 8) {
        return 0;
    }
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return (int64_t)v;
}

/* ------------------------------------------------------------------------ */
/* The URL                                                                   */
/* ------------------------------------------------------------------------ */

static int idem_store_pg_param_is(const char *p, size_t n, const char *name)
{
    size_t len = strlen(name);

    return n > len && memcmp(p, name, len) == 0 && p[len] == '=';
}

/*
 * Parses url into *c: takes our parameters out of its query and checks
 * the rest with PQconninfoParse. Returns 0, IDEM_EBADURL (why says why)
 * or IDEM_ENOMEM. On error c holds nothing to free.
 */
static int idem_store_pg_parse(const char *url, idem_store_pg_conf_t *c,
                               char *why, size_t cap)
{
    const char *q = strchr(url, '?'), *p, *end;
    PQconninfoOption *opts;
    char *errmsg = NULL;
    size_t len = 0;
    int rc = IDEM_EBADURL;

    memset(c, 0, sizeof(*c));
    snprintf(c->table, sizeof(c->table), "%s", IDEM_STORE_PG_TABLE_DEFAULT);
    c->store_clock = 1;
    c->npool = IDEM_STORE_PG_POOL_DEFAULT;
    c->uri = malloc(strlen(url) + 1);
    if (c->uri == NULL) {
        return IDEM_ENOMEM;
    }
    len = q ? (size_t)(q - url) : strlen(url);
    memcpy(c->uri, url, len);
    c->uri[len] = '\0';

    for (p = q ? q + 1 : NULL; p != NULL && *p != '\0'; p = end + !!*end) {
        size_t n, vlen;
        const char *v;

        end = strchr(p, '&');
        if (end == NULL) {
            end = p + strlen(p);
        }
        n = (size_t)(end - p);
        v = memchr(p, '=', n);
        v = v ? v + 1 : end;
        vlen = (size_t)(end - v);
        if (idem_store_pg_param_is(p, n, "table")) {
            int ok = vlen >= 1 && vlen <= IDEM_STORE_PG_TABLE_MAX &&
                     !(v[0] >= '0' && v[0] <= '9');
            for (size_t i = 0; ok && i < vlen; i++) {
                ok = (v[i] >= 'a' && v[i] <= 'z') ||
                     (v[i] >= '0' && v[i] <= '9') || v[i] == '_';
            }
            if (!ok) {
                snprintf(why, cap,
                         "table \"%.*s\" is not 1 to %d of a-z, 0-9 and _, "
                         "not starting with a digit",
                         (int)vlen, v, IDEM_STORE_PG_TABLE_MAX);
                goto fail;
            }
            memcpy(c->table, v, vlen);
            c->table[vlen] = '\0';
        } else if (idem_store_pg_param_is(p, n, "clock")) {
            if (vlen == 5 && memcmp(v, "store", 5) == 0) {
                c->store_clock = 1;
            } else if (vlen == 6 && memcmp(v, "caller", 6) == 0) {
                c->store_clock = 0;
            } else {
                snprintf(why, cap, "clock is store or caller, not \"%.*s\"",
                         (int)vlen, v);
                goto fail;
            }
        } else if (idem_store_pg_param_is(p, n, "pool")) {
            size_t k = 0, i;
            for (i = 0; i < vlen && v[i] >= '0' && v[i] <= '9' && k <= 64;
                 i++) {
                k = k * 10 + (size_t)(v[i] - '0');
            }
            if (vlen == 0 || i != vlen || k < 1 || k > IDEM_STORE_PG_POOL_MAX) {
                snprintf(why, cap, "pool is 1 to %d connections, not \"%.*s\"",
                         IDEM_STORE_PG_POOL_MAX, (int)vlen, v);
                goto fail;
            }
            c->npool = k;
        } else if (n > 0) {
            /* libpq's own: kept */
            c->uri[len] = len == (size_t)(q - url) ? '?' : '&';
            memcpy(c->uri + len + 1, p, n);
            len += n + 1;
            c->uri[len] = '\0';
        }
    }

    opts = PQconninfoParse(c->uri, &errmsg);
    if (opts == NULL) {
        if (errmsg == NULL) {
            rc = IDEM_ENOMEM;
            goto fail;
        }
        idem_store_pg_message(errmsg, why, cap);
        PQfreemem(errmsg);
        goto fail;
    }
    PQconninfoFree(opts);
    return 0;

fail:
    free(c->uri);
    c->uri = NULL;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/* Runs sql (one or more statements) outside a pipeline. */
static int idem_store_pg_exec(PGconn *c, const char *sql, char *why, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = idem_store_pg_classify(c, r);
        idem_store_pg_message(PQerrorMessage(c), why, cap);
        if (rc > 0) {
            rc = IDEM_EIO;
        }
    }
    PQclear(r);
    return rc;
}

/*
 * A new session: connects, sets its timeouts, creates the table when it
 * is missing (one session at a time, under an advisory lock) and prepares
 * the statements. Returns 0 with *out, or an IDEM_E... code with why.
 */
static int idem_store_pg_connect(idem_store_pg_t *s, PGconn **out, char *why,
                                 size_t cap)
{
    static const char *const keys[] = {
        "connect_timeout",  "tcp_user_timeout",
        "keepalives_idle",  "keepalives_interval",
        "keepalives_count", "fallback_application_name",
        "dbname",           NULL};
    const char *vals[] = {"2", "10000",    "10",   "5",
                          "3", "idemgate", s->uri, NULL};
    char sql[4 * IDEM_STORE_PG_SQL_MAX];
    PGconn *c;
    int rc;

    c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(why, cap, "out of memory");
        return IDEM_ENOMEM;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        idem_store_pg_message(PQerrorMessage(c), why, cap);
        PQfinish(c);
        return IDEM_EUNAVAIL;
    }
    snprintf(sql, sizeof(sql),
             "SET client_min_messages = warning;"
             " SET statement_timeout = '5s';"
             " SET idle_in_transaction_session_timeout = '10s';"
             " BEGIN;"
             " SELECT pg_advisory_xact_lock(4919, hashtext('%1$s'));"
             " CREATE TABLE IF NOT EXISTS %1$s ("
             " scope bytea NOT NULL, key bytea NOT NULL, rec bytea NOT NULL,"
             " removable_at int8 NOT NULL, PRIMARY KEY (scope, key));"
             " CREATE INDEX IF NOT EXISTS %1$s_removable_at"
             " ON %1$s (removable_at);"
             " COMMIT",
             s->table);
    rc = idem_store_pg_exec(c, sql, why, cap);
    for (int i = 0; rc == 0 && i < IDEM_STORE_PG_NSTMT; i++) {
        PGresult *r;

        snprintf(sql, sizeof(sql), idem_store_pg_stmt_sql[i], s->table);
        r = PQprepare(c, idem_store_pg_stmt_name[i], sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            rc = idem_store_pg_classify(c, r);
            idem_store_pg_message(PQerrorMessage(c), why, cap);
            if (rc > 0) {
                rc = IDEM_EIO;
            }
        }
        PQclear(r);
    }
    if (rc == 0 && PQenterPipelineMode(c) != 1) {
        idem_store_pg_message(PQerrorMessage(c), why, cap);
        rc = IDEM_EIO;
    }
    if (rc != 0) {
        PQfinish(c);
        return rc;
    }
    *out = c;
    return 0;
}

/*
 * Takes a connection of the pool for this thread, connecting it if need
 * be (unless the backoff forbids it now; force: try anyway, for check(),
 * which runs at a pace of its own). Returns its slot or NULL with *rc
 * (and why, when cap > 0).
 */
static idem_store_pg_slot_t *idem_store_pg_take(idem_store_pg_t *s, int force,
                                                int *rc, char *why, size_t cap)
{
    idem_store_pg_slot_t *slot = NULL;
    char msg[256];
    PGconn *c;
    int64_t now;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (size_t i = 0; i < s->npool; i++) {
            if (!s->slots[i].busy &&
                (slot == NULL || (slot->conn == NULL && s->slots[i].conn))) {
                slot = &s->slots[i];
            }
        }
        if (slot != NULL) {
            break;
        }
        pthread_cond_wait(&s->cv, &s->mu);
    }
    slot->busy = 1;
    if (slot->conn != NULL) {
        pthread_mutex_unlock(&s->mu);
        return slot;
    }
    now = idem_store_pg_mono_ms();
    if (s->backoff > 0) {
        /* after a failed connect: one try per backoff, by one thread */
        if (now < s->retry_at && !force) {
            snprintf(why, cap, "%s", s->why);
            goto unavailable;
        }
        s->retry_at = now + s->backoff;
    }
    pthread_mutex_unlock(&s->mu);

    *rc = idem_store_pg_connect(s, &c, msg, sizeof(msg));

    pthread_mutex_lock(&s->mu);
    if (*rc == 0) {
        slot->conn = c;
        slot->used = 0;
        s->backoff = 0;
        s->retry_at = 0;
        pthread_mutex_unlock(&s->mu);
        return slot;
    }
    s->backoff = s->backoff ? s->backoff * 2 : IDEM_STORE_PG_BACKOFF_MIN;
    if (s->backoff > IDEM_STORE_PG_BACKOFF_MAX) {
        s->backoff = IDEM_STORE_PG_BACKOFF_MAX;
    }
    s->retry_at = idem_store_pg_mono_ms() + s->backoff;
    snprintf(s->why, sizeof(s->why), "%s", msg);
    snprintf(why, cap, "%s", msg);
    if (*rc != IDEM_ENOMEM && *rc != IDEM_EPERM) {
        *rc = IDEM_EUNAVAIL;
    }
    slot->busy = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;

unavailable:
    *rc = IDEM_EUNAVAIL;
    slot->busy = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/*
 * Gives the slot back. broken: its connection is dropped, and the next
 * call may connect again at once (the backoff starts if that fails).
 */
static void idem_store_pg_give(idem_store_pg_t *s, idem_store_pg_slot_t *slot,
                               int broken)
{
    PGconn *c = NULL;
    char msg[256];

    if (broken && slot->conn != NULL) {
        c = slot->conn;
        idem_store_pg_message(PQerrorMessage(c), msg, sizeof(msg));
    }
    pthread_mutex_lock(&s->mu);
    if (c != NULL) {
        slot->conn = NULL;
        snprintf(s->why, sizeof(s->why), "%s", msg);
    }
    slot->busy = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (c != NULL) {
        PQfinish(c);
    }
}

/* ------------------------------------------------------------------------ */
/* Pipelines                                                                 */
/* ------------------------------------------------------------------------ */

/* A statement's parameters: the scope and key, then up to two more. */
typedef struct {
    const char *v[4];
    int len[4];
    int fmt[4];
    int n;
} idem_store_pg_params_t;

static void idem_store_pg_key_params(idem_store_pg_params_t *p,
                                     const idem_store_key_t *k)
{
    p->v[0] = (const char *)k->bytes;
    p->len[0] = IDEM_HASH_LEN;
    p->v[1] = (const char *)k->bytes + IDEM_HASH_LEN;
    p->len[1] = (int)(k->len - IDEM_HASH_LEN);
    p->fmt[0] = p->fmt[1] = 1;
    p->n = 2;
}

static int idem_store_pg_send(PGconn *c, int stmt,
                              const idem_store_pg_params_t *p)
{
    return PQsendQueryPrepared(c, idem_store_pg_stmt_name[stmt], p ? p->n : 0,
                               p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, 1)
               ? 0
               : IDEM_EUNAVAIL;
}

static int idem_store_pg_send_sql(PGconn *c, const char *sql)
{
    return PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 1)
               ? 0
               : IDEM_EUNAVAIL;
}

/*
 * Sends a Sync and reads the results of the nq statements sent before it
 * into res[0..nq) (each owned by the caller; NULL for one skipped after
 * an error), then the Sync's. Returns 0 when every statement succeeded,
 * else the classification of the first failure (every res[] set anyway,
 * for the caller to clear).
 */
static int idem_store_pg_sync(PGconn *c, PGresult **res, size_t nq)
{
    size_t q = 0, nulls = 0;
    int rc = 0;

    for (size_t i = 0; i < nq; i++) {
        res[i] = NULL;
    }
    if (PQpipelineSync(c) != 1) {
        return IDEM_EUNAVAIL;
    }
    for (;;) {
        PGresult *r = PQgetResult(c);
        ExecStatusType st;

        if (r == NULL) {
            /* the end of one statement's results */
            if (PQstatus(c) == CONNECTION_BAD || ++nulls > nq + 1) {
                return IDEM_EUNAVAIL;
            }
            q++;
            continue;
        }
        st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if (rc == 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            rc = st == PGRES_PIPELINE_ABORTED ? IDEM_STORE_PG_ALONE
                                              : idem_store_pg_classify(c, r);
        }
        if (q < nq && res[q] == NULL) {
            res[q] = r;
        } else {
            PQclear(r);
        }
    }
    return rc;
}

static void idem_store_pg_clear(PGresult **res, size_t nq)
{
    for (size_t i = 0; i < nq; i++) {
        PQclear(res[i]);
        res[i] = NULL;
    }
}

/* Ends a transaction left open or failed by an error. 0 or an error. */
static int idem_store_pg_rollback(PGconn *c)
{
    PGresult *r[1];
    int rc;

    if (PQtransactionStatus(c) == PQTRANS_IDLE) {
        return 0;
    }
    rc = idem_store_pg_send_sql(c, "ROLLBACK");
    if (rc == 0) {
        rc = idem_store_pg_sync(c, r, 1);
        idem_store_pg_clear(r, 1);
    }
    return rc == 0 && PQtransactionStatus(c) == PQTRANS_IDLE ? 0
                                                             : IDEM_EUNAVAIL;
}

/* ------------------------------------------------------------------------ */
/* Writing a batch                                                           */
/* ------------------------------------------------------------------------ */

/* One store key of a batch and what the batch does to its row. */
typedef struct {
    size_t first;       /* index in the sorted order of the first op */
    size_t nops;        /* ops on this key */
    int had_row;        /* the row existed when locked */
    int wrote;          /* some plan wrote it */
    const uint8_t *cur; /* its bytes after the plans so far, or NULL */
    size_t cur_len;
    int64_t at_ms; /* removable_at of cur */
} idem_store_pg_group_t;

/* The working memory of one batch. */
typedef struct {
    idem_store_op_t *ops;
    size_t n;
    size_t *order; /* ops sorted by key, in op order within a key */
    size_t *group_of;
    idem_store_pg_group_t *groups;
    size_t ngroups;
    PGresult **res;
    int commit_sent; /* a COMMIT may have reached the server */
} idem_store_pg_batch_t;

static int idem_store_pg_cmp_key(const idem_store_key_t *a,
                                 const idem_store_key_t *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->bytes, b->bytes, n);

    if (c != 0) {
        return c;
    }
    return a->len < b->len ? -1 : a->len > b->len;
}

/* Orders indices of ops by key, then by position (qsort is not stable). */
static int idem_store_pg_cmp(const void *pa, const void *pb, void *ops)
{
    const idem_store_op_t *o = ops;
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    int c = idem_store_pg_cmp_key(&o[a].key, &o[b].key);

    if (c != 0) {
        return c;
    }
    return a < b ? -1 : a > b;
}

/* Sorts the ops by key and groups them. */
static void idem_store_pg_group(idem_store_pg_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        b->order[i] = i;
    }
    qsort_r(b->order, b->n, sizeof(*b->order), idem_store_pg_cmp, b->ops);
    b->ngroups = 0;
    for (size_t i = 0; i < b->n; i++) {
        const idem_store_op_t *op = &b->ops[b->order[i]];
        if (i == 0 ||
            idem_store_pg_cmp_key(&b->ops[b->order[i - 1]].key, &op->key)) {
            memset(&b->groups[b->ngroups], 0, sizeof(b->groups[0]));
            b->groups[b->ngroups].first = i;
            b->ngroups++;
        }
        b->groups[b->ngroups - 1].nops++;
        b->group_of[b->order[i]] = b->ngroups - 1;
    }
}

/* Round trip 1: locks the rows, then plans their ops in order. */
static int idem_store_pg_lock(idem_store_pg_t *s, PGconn *c,
                              idem_store_pg_batch_t *b)
{
    idem_store_pg_params_t p;
    size_t nq = 0, q = 1;
    int64_t now;
    int rc;

    rc = idem_store_pg_send_sql(c, "BEGIN");
    if (rc != 0) {
        return rc;
    }
    nq++;
    for (size_t g = 0; g < b->ngroups; g++) {
        idem_store_pg_key_params(&p, &b->ops[b->order[b->groups[g].first]].key);
        rc = idem_store_pg_send(c, IDEM_STORE_PG_LOCK, &p);
        if (rc != 0) {
            return rc;
        }
        nq++;
    }
    rc = idem_store_pg_send(c, IDEM_STORE_PG_NOWQ, NULL);
    if (rc != 0) {
        return rc;
    }
    nq++;
    rc = idem_store_pg_sync(c, b->res, nq);
    if (rc != 0) {
        goto done;
    }
    if (PQntuples(b->res[nq - 1]) != 1) {
        rc = IDEM_STORE_PG_ALONE;
        goto done;
    }
    now = s->store_clock ? idem_store_pg_int8(b->res[nq - 1], 0, 0) : 0;

    for (size_t g = 0; g < b->ngroups; g++) {
        idem_store_pg_group_t *gr = &b->groups[g];
        PGresult *r = b->res[q++];

        gr->had_row = PQntuples(r) == 1;
        gr->cur = gr->had_row ? (const uint8_t *)PQgetvalue(r, 0, 0) : NULL;
        gr->cur_len = gr->had_row ? (size_t)PQgetlength(r, 0, 0) : 0;
    }
    /* in op order: the ops of one key see the plans before theirs */
    for (size_t i = 0; i < b->n; i++) {
        idem_store_op_t *op = &b->ops[i];
        idem_store_pg_group_t *gr = &b->groups[b->group_of[i]];

        if (op->kind == IDEM_STORE_OP_PRUNE) {
            continue;
        }
        op->store_now_ms = now;
        if (idem_store_plan(&s->base, op, gr->cur, gr->cur_len) != 0) {
            continue;
        }
        if (op->write == IDEM_STORE_WRITE_PUT) {
            gr->cur = op->val->data;
            gr->cur_len = op->val->len;
            gr->at_ms = op->new_index_ms;
            gr->wrote = 1;
        } else if (op->write == IDEM_STORE_WRITE_DEL) {
            gr->cur = NULL;
            gr->cur_len = 0;
            gr->wrote = 1;
        }
    }
    /* the locked rows' bytes were copied by the plans: res may go */
    for (size_t g = 0; g < b->ngroups; g++) {
        idem_store_pg_group_t *gr = &b->groups[g];
        if (gr->had_row && !gr->wrote) {
            gr->cur = NULL;
        }
    }

done:
    idem_store_pg_clear(b->res, nq);
    return rc;
}

/* Round trip 2: each key's final state, then COMMIT. */
static int idem_store_pg_apply(PGconn *c, idem_store_pg_batch_t *b,
                               uint64_t *wrote_ops)
{
    idem_store_pg_params_t p;
    char at[24];
    size_t nq = 0, nwrites = 0;
    int rc;

    for (size_t g = 0; g < b->ngroups; g++) {
        idem_store_pg_group_t *gr = &b->groups[g];
        const idem_store_op_t *op = &b->ops[b->order[gr->first]];
        int stmt;

        if (!gr->wrote) {
            continue;
        }
        idem_store_pg_key_params(&p, &op->key);
        if (gr->cur == NULL) {
            if (!gr->had_row) {
                continue; /* claimed and released within the batch */
            }
            stmt = IDEM_STORE_PG_DEL;
        } else {
            stmt = gr->had_row ? IDEM_STORE_PG_UPD : IDEM_STORE_PG_INS;
            snprintf(at, sizeof(at), "%lld", (long long)gr->at_ms);
            p.v[2] = (const char *)gr->cur;
            p.len[2] = (int)gr->cur_len;
            p.fmt[2] = 1;
            p.v[3] = at;
            p.len[3] = 0;
            p.fmt[3] = 0;
            p.n = 4;
        }
        rc = idem_store_pg_send(c, stmt, &p);
        if (rc != 0) {
            return rc;
        }
        nq++;
        nwrites++;
    }
    rc = idem_store_pg_send_sql(c, nwrites ? "COMMIT" : "ROLLBACK");
    if (rc != 0) {
        return rc;
    }
    nq++;
    rc = idem_store_pg_sync(c, b->res, nq);
    if (rc == 0) {
        /* a write that touched no row, or more than one, is not what was
           locked (a trigger, a row-level policy): the COMMIT has landed,
           so running the batch again would plan it against its own
           writes; it is a store error instead */
        for (size_t q = 0; q + 1 < nq; q++) {
            if (strcmp(PQcmdTuples(b->res[q]), "1") != 0) {
                rc = IDEM_EIO;
            }
        }
    }
    idem_store_pg_clear(b->res, nq);
    if (rc == 0 && PQtransactionStatus(c) != PQTRANS_IDLE) {
        rc = IDEM_STORE_PG_RETRY; /* COMMIT turned into ROLLBACK */
    }
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (b->ops[i].rc == 0 && b->ops[i].write != IDEM_STORE_WRITE_NONE) {
            (*wrote_ops)++;
        }
    }
    return 0;
}

/*
 * Runs the batch once: returns 0 (every op's rc and results set), or the
 * way it failed, with nothing committed (the ops are reset).
 */
static int idem_store_pg_run(idem_store_pg_t *s, PGconn *c,
                             idem_store_pg_batch_t *b, uint64_t *wrote_ops)
{
    int rc;

    for (size_t i = 0; i < b->n; i++) {
        idem_store_op_reset(&b->ops[i]);
    }
    idem_store_pg_group(b);
    rc = idem_store_pg_lock(s, c, b);
    if (rc == 0) {
        b->commit_sent = 1;
        rc = idem_store_pg_apply(c, b, wrote_ops);
    }
    if (rc != 0) {
        if (rc != IDEM_EUNAVAIL && idem_store_pg_rollback(c) != 0) {
            rc = IDEM_EUNAVAIL;
        }
        *wrote_ops = 0;
        for (size_t i = 0; i < b->n; i++) {
            idem_store_op_reset(&b->ops[i]);
        }
    }
    return rc;
}

/* The prune op: one statement in a transaction of its own. */
static int idem_store_pg_prune(idem_store_pg_t *s, PGconn *c,
                               idem_store_op_t *op)
{
    idem_store_pg_params_t p;
    char now[24], budget[24];
    PGresult *r[1];
    int rc;

    idem_store_op_reset(op);
    snprintf(now, sizeof(now), "%lld", (long long)op->now_ms);
    snprintf(budget, sizeof(budget), "%llu", (unsigned long long)op->budget);
    p.v[0] = s->store_clock ? NULL : now;
    p.v[1] = budget;
    p.len[0] = p.len[1] = 0;
    p.fmt[0] = p.fmt[1] = 0;
    p.n = 2;
    rc = idem_store_pg_send(c, IDEM_STORE_PG_PRUNE, &p);
    if (rc != 0) {
        return rc;
    }
    rc = idem_store_pg_sync(c, r, 1);
    if (rc == 0 && PQntuples(r[0]) == 1) {
        op->removed = (size_t)idem_store_pg_int8(r[0], 0, 0);
        op->more = PQgetlength(r[0], 0, 1) == 1 && PQgetvalue(r[0], 0, 1)[0];
    } else if (rc == 0) {
        rc = IDEM_EIO;
    }
    idem_store_pg_clear(r, 1);
    return rc;
}

/* An error code for an op from how its run failed. */
static int idem_store_pg_op_err(int rc)
{
    return rc > 0 ? IDEM_EIO : rc;
}

/*
 * Runs the ops of b as one batch, again after a lost race, and each op
 * alone after another SQL error; leaves every op's verdict. Returns 0, or
 * IDEM_EUNAVAIL when the connection broke.
 */
static int idem_store_pg_batch(idem_store_pg_t *s, PGconn *c,
                               idem_store_pg_batch_t *b)
{
    uint64_t wrote = 0;
    int rc = IDEM_STORE_PG_RETRY;

    for (int attempt = 0;
         rc == IDEM_STORE_PG_RETRY && attempt < IDEM_STORE_PG_RETRIES;
         attempt++) {
        wrote = 0;
        rc = idem_store_pg_run(s, c, b, &wrote);
    }
    if (rc == 0) {
        if (wrote > 0) {
            atomic_fetch_add(&s->base.commits, 1);
            atomic_fetch_add(&s->base.batched_ops, wrote);
        }
        return 0;
    }
    if (rc == IDEM_STORE_PG_ALONE && b->n > 1) {
        /* one op's SQL error must not fail the others */
        idem_store_pg_batch_t one = *b;
        for (size_t i = 0; i < b->n; i++) {
            if (rc == IDEM_EUNAVAIL) {
                idem_store_op_reset(&b->ops[i]);
                b->ops[i].rc = IDEM_EUNAVAIL;
                continue;
            }
            one.ops = &b->ops[i];
            one.n = 1;
            rc = idem_store_pg_batch(s, c, &one);
            b->commit_sent |= one.commit_sent;
        }
        return rc == IDEM_EUNAVAIL ? rc : 0;
    }
    for (size_t i = 0; i < b->n; i++) {
        idem_store_op_reset(&b->ops[i]);
        b->ops[i].rc = idem_store_pg_op_err(
            rc == IDEM_STORE_PG_RETRY ? IDEM_EUNAVAIL : rc);
    }
    return rc == IDEM_EUNAVAIL ? rc : 0;
}

/* Gives every op not run yet the verdict rc. */
static void idem_store_pg_fail(idem_store_op_t *ops, size_t n, int rc)
{
    for (size_t i = 0; i < n; i++) {
        idem_store_op_reset(&ops[i]);
        ops[i].rc = rc;
    }
}

/*
 * Runs ops[0..n) on slot's connection: a prune alone, anything else as
 * one batch. Returns 0, or IDEM_EUNAVAIL when the connection broke (then
 * *commit_sent says whether a COMMIT may have reached the server).
 */
static int idem_store_pg_write_on(idem_store_pg_t *s, PGconn *c,
                                  idem_store_op_t *ops, size_t n,
                                  int *commit_sent)
{
    idem_store_pg_batch_t b;
    int rc;

    *commit_sent = 0;
    if (n == 1 && ops[0].kind == IDEM_STORE_OP_PRUNE) {
        rc = idem_store_pg_prune(s, c, &ops[0]);
        if (rc != 0) {
            idem_store_pg_fail(ops, 1, idem_store_pg_op_err(rc));
            if (rc != IDEM_EUNAVAIL && idem_store_pg_rollback(c) != 0) {
                rc = IDEM_EUNAVAIL;
            }
        }
        return rc == IDEM_EUNAVAIL ? rc : 0;
    }
    memset(&b, 0, sizeof(b));
    b.n = n;
    b.ops = ops;
    b.order = malloc(n * sizeof(*b.order));
    b.group_of = malloc(n * sizeof(*b.group_of));
    b.groups = malloc(n * sizeof(*b.groups));
    b.res = malloc((n + 2) * sizeof(*b.res));
    if (b.order == NULL || b.group_of == NULL || b.groups == NULL ||
        b.res == NULL) {
        idem_store_pg_fail(ops, n, IDEM_ENOMEM);
        rc = 0;
    } else {
        rc = idem_store_pg_batch(s, c, &b);
        *commit_sent = b.commit_sent;
    }
    free(b.order);
    free(b.group_of);
    free(b.groups);
    free(b.res);
    return rc;
}

/*
 * A connection that sat in the pool may have been cut since (the server
 * restarted): a batch that breaks on one before any COMMIT was sent runs
 * once more on a new connection, so a server that is back answers at once.
 */
static void idem_store_pg_write(idem_store_t *store, idem_store_op_t *ops,
                                size_t n)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;
    idem_store_pg_slot_t *slot;
    int rc = 0, sent = 0, reused;
    char why[1];

    for (size_t i = 0; i < n; i++) {
        if (ops[i].kind == IDEM_STORE_OP_PRUNE && n > 1) {
            /* store.c sends prune alone; anything else runs op by op */
            for (size_t k = 0; k < n; k++) {
                idem_store_pg_write(store, &ops[k], 1);
            }
            return;
        }
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        slot = idem_store_pg_take(s, 0, &rc, why, sizeof(why));
        if (slot == NULL) {
            idem_store_pg_fail(ops, n, rc);
            return;
        }
        reused = slot->used;
        slot->used = 1;
        rc = idem_store_pg_write_on(s, slot->conn, ops, n, &sent);
        idem_store_pg_give(s, slot, rc != 0);
        if (rc == 0 || !reused || sent) {
            return;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Reading, usage, check                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Runs one statement that changes nothing or may run twice (a prepared
 * one, or sql when stmt < 0) on a connection of the pool, once more on a
 * new connection when a pooled one turns out cut. *out receives its
 * result on 0 (PQclear it). Returns 0 or an IDEM_E... code.
 */
static int idem_store_pg_query(idem_store_pg_t *s, int stmt, const char *sql,
                               const idem_store_pg_params_t *p, PGresult **out)
{
    idem_store_pg_slot_t *slot;
    PGresult *r[1] = {NULL};
    char why[1];
    int rc = 0, reused;

    for (int attempt = 0; attempt < 2; attempt++) {
        slot = idem_store_pg_take(s, 0, &rc, why, sizeof(why));
        if (slot == NULL) {
            return rc;
        }
        reused = slot->used;
        slot->used = 1;
        if (stmt >= 0) {
            rc = idem_store_pg_send(slot->conn, stmt, p);
        } else {
            rc = PQsendQueryParams(slot->conn, sql, p ? p->n : 0, NULL,
                                   p ? p->v : NULL, p ? p->len : NULL,
                                   p ? p->fmt : NULL, 1)
                     ? 0
                     : IDEM_EUNAVAIL;
        }
        if (rc == 0) {
            rc = idem_store_pg_sync(slot->conn, r, 1);
        }
        rc = idem_store_pg_op_err(rc);
        if (rc == 0) {
            *out = r[0];
            r[0] = NULL;
        }
        idem_store_pg_clear(r, 1);
        idem_store_pg_give(s, slot, rc == IDEM_EUNAVAIL);
        if (rc != IDEM_EUNAVAIL || !reused) {
            break;
        }
    }
    return rc;
}

static int idem_store_pg_read(idem_store_t *store, const idem_store_key_t *k,
                              int (*cb)(void *ctx, const uint8_t *val,
                                        size_t len),
                              void *ctx)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;
    idem_store_pg_params_t p;
    PGresult *r = NULL;
    int rc;

    idem_store_pg_key_params(&p, k);
    rc = idem_store_pg_query(s, IDEM_STORE_PG_GET, NULL, &p, &r);
    if (rc == 0) {
        rc = PQntuples(r) == 1 ? cb(ctx, (const uint8_t *)PQgetvalue(r, 0, 0),
                                    (size_t)PQgetlength(r, 0, 0))
                               : IDEM_ENOTFOUND;
    }
    PQclear(r);
    return rc;
}

/*
 * Exact counts while the table is small (under 100,000 rows by the
 * planner's estimate), the estimate and the table's size on disk above:
 * a count(*) of millions of rows is too dear for a metrics scrape.
 */
static int idem_store_pg_usage(idem_store_t *store, idem_store_usage_t *out)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;
    char sql[IDEM_STORE_PG_SQL_MAX];
    PGresult *r = NULL;
    int rc;

    snprintf(sql, sizeof(sql),
             "SELECT CASE WHEN e.n < 100000 THEN (SELECT count(*) FROM %1$s)"
             " ELSE e.n END::int8,"
             " CASE WHEN e.n < 100000 THEN (SELECT coalesce(sum("
             "octet_length(scope) + octet_length(key) + octet_length(rec)"
             " + 16), 0) FROM %1$s)"
             " ELSE pg_total_relation_size('%1$s') END::int8"
             " FROM (SELECT reltuples::int8 AS n FROM pg_class"
             " WHERE oid = '%1$s'::regclass) AS e",
             s->table);
    rc = idem_store_pg_query(s, -1, sql, NULL, &r);
    if (rc == 0 && PQntuples(r) == 1) {
        out->records = (uint64_t)idem_store_pg_int8(r, 0, 0);
        out->bytes_used = (uint64_t)idem_store_pg_int8(r, 0, 1);
        out->bytes_limit = 0;
        out->bytes_claim_limit = 0;
    } else if (rc == 0) {
        rc = IDEM_EIO;
    }
    PQclear(r);
    return rc;
}

/*
 * SELECT 1 on a connection of the pool (once more on a new one when a
 * pooled one turns out cut); why says what failed.
 */
static int idem_store_pg_check(idem_store_t *store, char *why, size_t cap)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;
    idem_store_pg_slot_t *slot;
    PGresult *r[1] = {NULL};
    char msg[256] = "";
    int rc = 0, reused;

    for (int attempt = 0; attempt < 2; attempt++) {
        slot = idem_store_pg_take(s, 1, &rc, msg, sizeof(msg));
        if (slot == NULL) {
            snprintf(why, cap,
                     "PostgreSQL is unreachable (%s); new keys get 503 "
                     "until it answers again",
                     msg);
            return IDEM_EUNAVAIL;
        }
        reused = slot->used;
        slot->used = 1;
        rc = idem_store_pg_send_sql(slot->conn, "SELECT 1");
        if (rc == 0) {
            rc = idem_store_pg_sync(slot->conn, r, 1);
        }
        idem_store_pg_clear(r, 1);
        if (rc != 0) {
            idem_store_pg_message(PQerrorMessage(slot->conn), msg, sizeof(msg));
            snprintf(why, cap, "PostgreSQL did not answer SELECT 1 (%s)", msg);
            rc = IDEM_EUNAVAIL;
        }
        idem_store_pg_give(s, slot, rc != 0);
        if (rc == 0 || !reused) {
            break;
        }
    }
    if (rc == 0) {
        why[0] = '\0';
    }
    return rc;
}

/* The test hook of store_int.h: the bytes go in as they are. */
static int idem_store_pg_plant(idem_store_t *store, const idem_store_key_t *k,
                               const uint8_t *val, size_t len)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;
    idem_store_pg_params_t p;
    char sql[IDEM_STORE_PG_SQL_MAX];
    PGresult *r = NULL;
    int rc;

    snprintf(sql, sizeof(sql),
             "INSERT INTO %1$s (scope, key, rec, removable_at)"
             " VALUES ($1, $2, $3, 0) ON CONFLICT (scope, key)"
             " DO UPDATE SET rec = EXCLUDED.rec",
             s->table);
    idem_store_pg_key_params(&p, k);
    p.v[2] = (const char *)val;
    p.len[2] = (int)len;
    p.fmt[2] = 1;
    p.n = 3;
    rc = idem_store_pg_query(s, -1, sql, &p, &r);
    PQclear(r);
    return rc;
}

/* A networked store has no files: the zero identity, as mem's. */
static void idem_store_pg_identity(const idem_store_t *store,
                                   idem_store_identity_t *out)
{
    (void)store;
    out->device = 0;
    out->inode = 0;
}

static void idem_store_pg_close(idem_store_t *store)
{
    idem_store_pg_t *s = (idem_store_pg_t *)store;

    for (size_t i = 0; i < s->npool; i++) {
        if (s->slots[i].conn != NULL) {
            PQfinish(s->slots[i].conn);
        }
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->uri);
    free(s);
}

static const idem_store_vtable_t idem_store_pg_vt = {
    .name = "postgres",
    .read = idem_store_pg_read,
    .write = idem_store_pg_write,
    .usage = idem_store_pg_usage,
    .check = idem_store_pg_check,
    .identity = idem_store_pg_identity,
    .close = idem_store_pg_close,
    .plant = idem_store_pg_plant,
};

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

/* check_url gets what follows "scheme:"; libpq wants the whole URI. */
static int idem_store_pg_check_rest(const char *scheme, const char *rest,
                                    char *why, size_t cap)
{
    idem_store_pg_conf_t c;
    char *url;
    int rc;

    url = malloc(strlen(scheme) + strlen(rest) + 2);
    if (url == NULL) {
        return IDEM_ENOMEM;
    }
    sprintf(url, "%s:%s", scheme, rest);
    rc = idem_store_pg_parse(url, &c, why, cap);
    free(c.uri);
    free(url);
    return rc;
}

static int idem_store_pg_check_url_postgres(const char *rest, char *why,
                                            size_t cap)
{
    return idem_store_pg_check_rest("postgres", rest, why, cap);
}

static int idem_store_pg_check_url_postgresql(const char *rest, char *why,
                                              size_t cap)
{
    return idem_store_pg_check_rest("postgresql", rest, why, cap);
}

/* Nothing is connected here: a store opens while its server is down. */
static int idem_store_pg_open(const char *url, const char *rest,
                              idem_store_t **out)
{
    idem_store_pg_conf_t c;
    idem_store_pg_t *s;
    char why[1];
    int rc;

    (void)rest;
    rc = idem_store_pg_parse(url, &c, why, sizeof(why));
    if (rc != 0) {
        return rc;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        free(c.uri);
        return IDEM_ENOMEM;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        goto fail_mu;
    }
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        goto fail_cv;
    }
    s->uri = c.uri;
    snprintf(s->table, sizeof(s->table), "%s_%s", c.table,
             IDEM_STORE_PG_VERSION);
    s->store_clock = c.store_clock;
    s->npool = c.npool;
    snprintf(s->why, sizeof(s->why), "not connected yet");
    s->base.vt = &idem_store_pg_vt;
    *out = &s->base;
    return 0;

fail_cv:
    pthread_mutex_destroy(&s->mu);
fail_mu:
    free(c.uri);
    free(s);
    return IDEM_ENOMEM;
}

#define IDEM_STORE_PG_FORMS                                                    \
    "[?table=NAME&clock=store|caller&pool=N and libpq's parameters]"

const idem_store_backend_t idem_store_postgres_backend = {
    .scheme = "postgres",
    .forms = "postgres://[USER[:PASSWORD]@]HOST[:PORT]/DB" IDEM_STORE_PG_FORMS,
    .caps = IDEM_STORE_CAP_CLOCK | IDEM_STORE_CAP_SHARED,
    .open = idem_store_pg_open,
    .check_url = idem_store_pg_check_url_postgres,
};

const idem_store_backend_t idem_store_postgresql_backend = {
    .scheme = "postgresql",
    .forms = "postgresql://...",
    .caps = IDEM_STORE_CAP_CLOCK | IDEM_STORE_CAP_SHARED,
    .open = idem_store_pg_open,
    .check_url = idem_store_pg_check_url_postgresql,
};
