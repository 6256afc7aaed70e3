/*
 * contract.c — the store contract suite: what every backend must do, each
 * operation with each of its outcomes, under threads, across processes and
 * when things go wrong.
 *
 * One source, compiled once per backend by the Makefile with
 * -DIDEM_TEST_BACKEND="mem", "lmdb", "postgres", "redis", ... Every test
 * opens a fresh store: for LMDB in a new mkdtemp directory, removed afterwards;
 * for a networked store, a namespace of its own on the server that the
 * test run started (tests/servers/BACKEND.sh), whose URL comes in
 * IDEM_TEST_STORE_URL with a %s where the namespace goes (e.g.
 * "postgres://...?table=%s"). Tests of what only some stores can do
 * (reopening and other processes, a bounded map, files in a directory,
 * its own clock) ask the store for the capability (idem_store_caps) and
 * are skipped with a message saying why when it has not; corrupt bytes are
 * planted through the backend's test hook.
 *
 * Other processes are this program run again with --child (see
 * start_child); they report through a pipe, never with cmocka's asserts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "idem.h"
#include "store/lmdb_names.h"
#include "store/store_int.h"

/* valgrind maps at most 64 GiB, less than the default LMDB map: under it,
 * stores get a smaller map_size and the test of the default one is
 * skipped */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef UNDER_VALGRIND
#define UNDER_VALGRIND() 0
#endif

#ifndef IDEM_TEST_BACKEND
#error "compile with -DIDEM_TEST_BACKEND='\"mem\"' or '\"lmdb\"'"
#endif

#define T0    1700000000000LL
#define TTL   86400000LL
#define LEASE 60000LL

/* Skips the test unless the fixture's store has capability cap. */
#define SKIP_UNLESS_CAP(f, cap, why)                                           \
    do {                                                                       \
        if (!(idem_store_caps((f)->store) & (cap))) {                          \
            print_message("[  SKIP    ] %s: %s\n", __func__, why);             \
            skip();                                                            \
        }                                                                      \
    } while (0)

/* Whether prune() removes records: not where the store expires them itself
 * (Redis), which the tests that count what prune removed skip. */
static int prunes(const idem_store_t *s)
{
    return !(idem_store_caps(s) & IDEM_STORE_CAP_SELF_EXPIRY);
}

#define SKIP_UNLESS_PRUNES(f)                                                  \
    do {                                                                       \
        if (!prunes((f)->store)) {                                             \
            print_message("[  SKIP    ] %s: the store expires records "        \
                          "itself; prune() removes nothing\n",                 \
                          __func__);                                           \
            skip();                                                            \
        }                                                                      \
    } while (0)

/*
 * One test's store: for LMDB the directory that holds it, for a networked
 * store the namespace (dir is then its prefix, e.g. "t4242_17").
 */
typedef struct {
    char dir[64];
    idem_store_t *store;
} fixture_t;

static int is_lmdb(void)
{
    return strcmp(IDEM_TEST_BACKEND, "lmdb") == 0;
}

/* The URL template of a networked store's server, or NULL. */
static const char *server_url(void)
{
    const char *t = getenv("IDEM_TEST_STORE_URL");

    return t != NULL && *t != '\0' ? t : NULL;
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */
/* ------------------------------------------------------------------------ */

/* The URL of environment sub (with options opts) under the fixture. */
static void store_url(const fixture_t *f, const char *sub, const char *opts,
                      char *url, size_t cap)
{
    char ns[96];
    int n;

    if (server_url() != NULL) {
        /* the namespace, then options after the template's own */
        snprintf(ns, sizeof(ns), "%s_%s", f->dir, sub);
        n = snprintf(url, cap, server_url(), ns);
        if (n > 0 && (size_t)n < cap && opts && *opts) {
            n += snprintf(url + n, cap - (size_t)n, "%s%s",
                          strchr(url, '?') ? "&" : "?", opts);
        }
    } else if (!is_lmdb()) {
        n = snprintf(url, cap, "mem:");
    } else if (UNDER_VALGRIND() &&
               (opts == NULL || strstr(opts, "map_size") == NULL)) {
        n = snprintf(url, cap, "lmdb:%s/%s?map_size=1g%s%s", f->dir, sub,
                     opts && *opts ? "&" : "", opts ? opts : "");
    } else {
        n = snprintf(url, cap, "lmdb:%s/%s%s%s", f->dir, sub,
                     opts && *opts ? "?" : "", opts ? opts : "");
    }
    assert_true(n > 0 && (size_t)n < cap);
}

static idem_store_t *open_store(const fixture_t *f, const char *sub,
                                const char *opts)
{
    idem_store_t *s = NULL;
    char url[256];

    store_url(f, sub, opts, url, sizeof(url));
    assert_int_equal(idem_store_open(url, &s), 0);
    assert_non_null(s);
    assert_string_equal(idem_store_backend(s), IDEM_TEST_BACKEND);
    return s;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    static int tests;
    fixture_t *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    if (server_url() != NULL) {
        snprintf(f->dir, sizeof(f->dir), "t%d_%d", (int)getpid(), ++tests);
    } else if (is_lmdb()) {
        strcpy(f->dir, "/tmp/idem-store-XXXXXX");
        if (mkdtemp(f->dir) == NULL) {
            free(f);
            return -1;
        }
    }
    f->store = open_store(f, "env", NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    idem_store_close(f->store);
    if (server_url() == NULL && is_lmdb()) {
        nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Values                                                                    */
/* ------------------------------------------------------------------------ */

static idem_hash_t hash_of(int n)
{
    idem_hash_t h;

    memset(h.bytes, n, sizeof(h.bytes));
    h.bytes[0] = 0x5c;
    return h;
}

#define STR(lit)                                                               \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }

static const idem_header_t created_headers[] = {
    {STR("Content-Type"), STR("application/json")},
    {STR("Date"), STR("Sat, 28 Nov 2026 04:44:27 GMT")},
    {STR("X-Request-Id"), STR("req_123")},
};
static const uint8_t created_body[] = "{\"data\":{\"id\":\"inq_1\"}}";

static const idem_response_t created = {201, created_headers, 3, created_body,
                                        sizeof(created_body) - 1};

static const idem_header_t other_headers[] = {
    {STR("Content-Type"), STR("text/plain")},
};
static const uint8_t other_body[] = "boom";

static const idem_response_t server_error = {500, other_headers, 1, other_body,
                                             4};

static const uint8_t unknown_body[] =
    "{\"errors\":[{\"title\":\"Gateway timeout\"}]}";
static const idem_header_t unknown_headers[] = {
    {STR("Content-Type"), STR("application/json")},
};
static const idem_response_t unknown = {504, unknown_headers, 1, unknown_body,
                                        sizeof(unknown_body) - 1};

static void assert_response_equal(const idem_response_t *got,
                                  const idem_response_t *want)
{
    assert_int_equal(got->status, want->status);
    assert_int_equal(got->nheaders, want->nheaders);
    for (size_t i = 0; i < want->nheaders; i++) {
        assert_int_equal(got->headers[i].name.len, want->headers[i].name.len);
        assert_memory_equal(got->headers[i].name.data,
                            want->headers[i].name.data,
                            want->headers[i].name.len);
        assert_int_equal(got->headers[i].value.len, want->headers[i].value.len);
        if (want->headers[i].value.len) {
            assert_memory_equal(got->headers[i].value.data,
                                want->headers[i].value.data,
                                want->headers[i].value.len);
        }
    }
    assert_int_equal(got->body_len, want->body_len);
    if (want->body_len) {
        assert_memory_equal(got->body, want->body, want->body_len);
    }
}

/* ------------------------------------------------------------------------ */
/* Calls                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    idem_hash_t scope;
    idem_hash_t fp;
    const char *key;
    int64_t now;
    int64_t ttl;
    int64_t lease;
    idem_on_unknown_t policy;
} call_t;

static call_t call(const char *key, int fp, int64_t now)
{
    call_t c;

    c.scope = hash_of(1);
    c.fp = hash_of(100 + fp);
    c.key = key;
    c.now = now;
    c.ttl = TTL;
    c.lease = LEASE;
    c.policy = IDEM_ON_UNKNOWN_STORE;
    return c;
}

static int begin(idem_store_t *s, const call_t *c, idem_result_t *res)
{
    idem_begin_t in;

    memset(&in, 0, sizeof(in));
    in.scope = &c->scope;
    in.key = c->key;
    in.key_len = strlen(c->key);
    in.fingerprint = &c->fp;
    in.now_ms = c->now;
    in.ttl_ms = c->ttl;
    in.lease_ms = c->lease;
    in.on_unknown = c->policy;
    in.unknown_response = &unknown;
    return idem_store_begin(s, &in, res);
}

/* begin() that must succeed with outcome want; returns the result. */
static idem_result_t expect_begin(idem_store_t *s, const call_t *c,
                                  idem_begin_outcome_t want)
{
    idem_result_t res;

    memset(&res, 0, sizeof(res));
    assert_int_equal(begin(s, c, &res), 0);
    assert_int_equal(res.outcome, want);
    return res;
}

/* Claims c's key and returns the owner token. */
static uint64_t claim(idem_store_t *s, const call_t *c)
{
    idem_result_t res = expect_begin(s, c, IDEM_BEGIN_CLAIMED);
    uint64_t owner = res.owner;

    assert_true(owner != 0);
    assert_int_equal(res.took_over, 0);
    idem_result_free(&res);
    return owner;
}

static int complete(idem_store_t *s, const call_t *c, uint64_t owner,
                    const idem_response_t *resp)
{
    return idem_store_complete(s, &c->scope, c->key, strlen(c->key), owner,
                               resp, 0);
}

static int release(idem_store_t *s, const call_t *c, uint64_t owner)
{
    return idem_store_release(s, &c->scope, c->key, strlen(c->key), owner);
}

static int lookup(idem_store_t *s, const call_t *c, int64_t now,
                  idem_result_t *res)
{
    return idem_store_lookup(s, &c->scope, c->key, strlen(c->key), now, res);
}

static int get(idem_store_t *s, const call_t *c, idem_result_t *res)
{
    return idem_store_get(s, &c->scope, c->key, strlen(c->key), res);
}

static int del(idem_store_t *s, const call_t *c)
{
    return idem_store_delete(s, &c->scope, c->key, strlen(c->key));
}

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

static void test_open_rejects_bad_urls(void **state)
{
    static const char *bad[] = {
        "",
        "mem",
        "mem:extra",
        "redis:localhost:6379",
        "redis://localhost:6379?colour=blue",
        "lmdb:",
        "lmdb:?sync=1",
        "lmdb:/nonexistent/x?map_size=",
        "lmdb:/nonexistent/x?map_size=0",
        "lmdb:/nonexistent/x?map_size=12ab",
        "lmdb:/nonexistent/x?map_size=999999999999999999999999",
        "lmdb:/nonexistent/x?group_commit=2",
        "lmdb:/nonexistent/x?sync=yes",
        "lmdb:/nonexistent/x?sync",
        "lmdb:/nonexistent/x?colour=blue",
        "lmdb:/nonexistent/x?sync=1&",
    };
    idem_store_t *s = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(idem_store_open(bad[i], &s), IDEM_EBADURL);
        assert_null(s);
    }
    assert_int_equal(idem_store_open(NULL, &s), IDEM_EINVAL);
    assert_int_equal(access("/nonexistent", F_OK), -1);
}

static void test_open_names_its_backend(void **state)
{
    fixture_t *f = *state;

    assert_string_equal(idem_store_backend(f->store), IDEM_TEST_BACKEND);
}

static void test_invalid_arguments_are_refused(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_result_t res;
    idem_begin_t in;
    idem_response_t bad = created;
    char long_key[IDEM_KEY_MAX + 1];
    uint64_t owner;

    memset(&res, 0, sizeof(res));
    memset(&in, 0, sizeof(in));
    memset(long_key, 'a', sizeof(long_key));
    in.scope = &c.scope;
    in.key = c.key;
    in.key_len = 1;
    in.fingerprint = &c.fp;
    in.now_ms = T0;
    in.ttl_ms = TTL;
    in.lease_ms = LEASE;
    in.on_unknown = IDEM_ON_UNKNOWN_STORE;
    in.unknown_response = &unknown;

    in.key_len = 0;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
    in.key = long_key;
    in.key_len = sizeof(long_key);
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
    in.key_len = IDEM_KEY_MAX; /* the longest key is fine */
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_CLAIMED);
    idem_result_free(&res);
    in.key = c.key;
    in.key_len = 1;
    in.fingerprint = NULL;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
    in.fingerprint = &c.fp;
    in.ttl_ms = 0;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
    in.ttl_ms = TTL;
    in.unknown_response = NULL;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
    in.on_unknown = IDEM_ON_UNKNOWN_RELEASE; /* then it is not needed */
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    owner = res.owner;
    idem_result_free(&res);

    bad.status = 0;
    assert_int_equal(complete(f->store, &c, owner, &bad), IDEM_EINVAL);
    assert_int_equal(complete(f->store, &c, owner, NULL), IDEM_EINVAL);
    assert_int_equal(
        idem_store_complete(f->store, NULL, "k", 1, owner, &created, 0),
        IDEM_EINVAL);
    /* None of that touched the claim. */
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
}

/* ------------------------------------------------------------------------ */
/* begin()                                                                   */
/* ------------------------------------------------------------------------ */

static void test_begin_claims_a_new_key(void **state)
{
    fixture_t *f = *state;
    call_t c = call("key-1", 1, T0);
    idem_result_t res = expect_begin(f->store, &c, IDEM_BEGIN_CLAIMED);

    assert_true(res.owner != 0);
    assert_int_equal(res.took_over, 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == res.owner);
    assert_true(res.record.created_ms == T0);
    assert_true(res.record.expires_ms == T0 + TTL);
    assert_true(res.record.lease_until_ms == T0 + LEASE);
    assert_int_equal(res.record.flags, 0);
    assert_memory_equal(res.record.fingerprint.bytes, c.fp.bytes,
                        IDEM_HASH_LEN);
    idem_result_free(&res);
    idem_result_free(&res); /* freeing twice is harmless */
}

static void test_begin_gives_every_claim_its_own_owner(void **state)
{
    fixture_t *f = *state;
    uint64_t owners[32];
    char key[16];

    for (int i = 0; i < 32; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        call_t c = call(key, 1, T0);
        owners[i] = claim(f->store, &c);
        for (int j = 0; j < i; j++) {
            assert_true(owners[i] != owners[j]);
        }
    }
}

static void test_begin_replays_a_complete_key(void **state)
{
    fixture_t *f = *state;
    call_t c = call("pay-42", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    c.now = T0 + 5000;
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    assert_true(res.record.expires_ms == T0 + TTL); /* unchanged */
    assert_int_equal(res.owner, 0);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);

    /* A stored 500 replays as well. */
    c = call("pay-43", 1, T0);
    owner = claim(f->store, &c);
    assert_int_equal(complete(f->store, &c, owner, &server_error), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &server_error);
    idem_result_free(&res);
}

static void test_begin_mismatch_first_then_again(void **state)
{
    fixture_t *f = *state;
    call_t c = call("pay-1", 1, T0);
    call_t other = call("pay-1", 2, T0 + 10);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    assert_int_equal(complete(f->store, &c, owner, &created), 0);

    res = expect_begin(f->store, &other, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 1);
    assert_true(res.record.flags & IDEM_REC_MISMATCH_LOGGED);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);

    res = expect_begin(f->store, &other, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 0);
    idem_result_free(&res);

    /* Logged once per key, whatever the other parameters are. */
    other.fp = hash_of(77);
    res = expect_begin(f->store, &other, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 0);
    idem_result_free(&res);

    /* The stored result is unchanged. */
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
}

static void test_begin_mismatch_on_in_progress_keeps_the_claim(void **state)
{
    fixture_t *f = *state;
    call_t c = call("pay-2", 1, T0);
    call_t other = call("pay-2", 2, T0 + 10);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    res = expect_begin(f->store, &other, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 1);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    idem_result_free(&res);

    /* The owner still completes; the flag survives the completion. */
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    res = expect_begin(f->store, &other, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 0);
    idem_result_free(&res);
}

static void test_begin_in_progress_same_fingerprint(void **state)
{
    fixture_t *f = *state;
    call_t c = call("slow", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    c.now = T0 + LEASE - 1;
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_int_equal(res.owner, 0);
    idem_result_free(&res);

    /* Waiting changed nothing: the owner completes, the retry replays. */
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
}

static void test_begin_stale_under_store_policy(void **state)
{
    fixture_t *f = *state;
    call_t c = call("lost", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    c.now = T0 + LEASE; /* the lease has just passed */
    res = expect_begin(f->store, &c, IDEM_BEGIN_STALE);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    assert_true(res.record.flags & IDEM_REC_UNKNOWN_OUTCOME);
    assert_true(res.record.expires_ms == T0 + TTL);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);

    /* The unknown outcome is now the key's result. */
    c.now = T0 + LEASE + 1;
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_true(res.record.flags & IDEM_REC_UNKNOWN_OUTCOME);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);

    /* The owner that lost its lease can neither complete nor release. */
    assert_int_equal(complete(f->store, &c, owner, &created), IDEM_ENOTOWNER);
    assert_int_equal(release(f->store, &c, owner), IDEM_ENOTOWNER);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);
}

/* unknown_make: the unknown-outcome answer made only when a stale claim
 * needs it, and stored as if it had been given. */
typedef struct {
    int calls;
    int rc;
} unknown_maker_t;

static int make_unknown(void *arg, const idem_response_t **resp)
{
    unknown_maker_t *m = arg;

    m->calls++;
    *resp = &unknown;
    return m->rc;
}

static void test_begin_makes_the_unknown_answer_only_when_needed(void **state)
{
    fixture_t *f = *state;
    call_t c = call("lazy", 1, T0);
    unknown_maker_t m = {0, 0};
    idem_result_t res;
    idem_begin_t in;

    memset(&in, 0, sizeof(in));
    in.scope = &c.scope;
    in.key = c.key;
    in.key_len = strlen(c.key);
    in.fingerprint = &c.fp;
    in.now_ms = T0;
    in.ttl_ms = TTL;
    in.lease_ms = LEASE;
    in.on_unknown = IDEM_ON_UNKNOWN_STORE;
    in.unknown_make = make_unknown;
    in.unknown_arg = &m;

    /* a new claim, an in-progress one: nothing made */
    memset(&res, 0, sizeof(res));
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_CLAIMED);
    idem_result_free(&res);
    in.now_ms = T0 + 1;
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(m.calls, 0);

    /* a maker that fails fails the call, and nothing changes */
    in.now_ms = T0 + LEASE;
    m.rc = IDEM_ENOMEM;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_ENOMEM);
    assert_true(m.calls >= 1);
    in.now_ms = T0 + 2;
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);

    /* the lease passed: made, and stored as the key's result */
    in.now_ms = T0 + LEASE;
    m.rc = 0;
    m.calls = 0;
    assert_int_equal(idem_store_begin(f->store, &in, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_STALE);
    assert_true(m.calls >= 1);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);
    in.now_ms = T0 + LEASE + 1;
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_true(res.record.flags & IDEM_REC_UNKNOWN_OUTCOME);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);

    /* with neither a response nor a maker, the store policy is refused */
    in.unknown_make = NULL;
    assert_int_equal(idem_store_begin(f->store, &in, &res), IDEM_EINVAL);
}

static void test_begin_stale_under_release_policy(void **state)
{
    fixture_t *f = *state;
    call_t c = call("lost", 1, T0);
    uint64_t old = claim(f->store, &c), owner;
    idem_result_t res;

    c.now = T0 + LEASE + 5;
    c.policy = IDEM_ON_UNKNOWN_RELEASE;
    res = expect_begin(f->store, &c, IDEM_BEGIN_CLAIMED);
    assert_int_equal(res.took_over, 1);
    assert_true(res.owner != 0 && res.owner != old);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.created_ms == c.now);
    assert_true(res.record.lease_until_ms == c.now + LEASE);
    owner = res.owner;
    idem_result_free(&res);

    /* Fencing: the old owner's late answer is refused. */
    assert_int_equal(complete(f->store, &c, old, &server_error),
                     IDEM_ENOTOWNER);
    assert_int_equal(release(f->store, &c, old), IDEM_ENOTOWNER);
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);

    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
}

/* ------------------------------------------------------------------------ */
/* Expiry                                                                    */
/* ------------------------------------------------------------------------ */

static void test_expired_key_is_absent_and_claims_anew(void **state)
{
    fixture_t *f = *state;
    call_t c = call("short", 1, T0);
    idem_result_t res;
    uint64_t owner;

    c.ttl = 1000;
    c.lease = 500;
    owner = claim(f->store, &c);
    assert_int_equal(complete(f->store, &c, owner, &created), 0);

    assert_int_equal(lookup(f->store, &c, T0 + 999, &res), 0);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
    assert_int_equal(lookup(f->store, &c, T0 + 1000, &res), IDEM_ENOTFOUND);
    /* The admin still sees it until it is pruned. */
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_true(res.record.expires_ms == T0 + 1000);
    idem_result_free(&res);

    /* A reuse after expiry executes as new, even with other parameters. */
    c.now = T0 + 1000;
    c.fp = hash_of(9);
    res = expect_begin(f->store, &c, IDEM_BEGIN_CLAIMED);
    assert_int_equal(res.took_over, 0);
    assert_true(res.owner != owner);
    assert_true(res.record.created_ms == T0 + 1000);
    assert_true(res.record.expires_ms == T0 + 2000);
    idem_result_free(&res);
}

static void test_in_progress_never_expires_while_leased(void **state)
{
    fixture_t *f = *state;
    call_t c = call("slow", 1, T0);
    idem_result_t res;
    size_t removed;
    int more;
    uint64_t owner;

    c.ttl = 1000; /* shorter than the lease */
    c.lease = 5000;
    owner = claim(f->store, &c);

    c.now = T0 + 2000;
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(lookup(f->store, &c, T0 + 2000, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(
        idem_store_prune(f->store, T0 + 2000, 100, &removed, &more), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(more, 0);

    /* Completing in time keeps the result until expires_ms (already past:
       it is absent at once), and never lets a duplicate run meanwhile. */
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    assert_int_equal(lookup(f->store, &c, T0 + 2000, &res), IDEM_ENOTFOUND);

    /* Lease and TTL both passed: absent, claimed anew (not stale). */
    c = call("slow2", 1, T0);
    c.ttl = 1000;
    c.lease = 5000;
    (void)claim(f->store, &c);
    c.now = T0 + 5000;
    res = expect_begin(f->store, &c, IDEM_BEGIN_CLAIMED);
    assert_int_equal(res.took_over, 0);
    idem_result_free(&res);
}

/* ------------------------------------------------------------------------ */
/* complete() and release()                                                  */
/* ------------------------------------------------------------------------ */

static void test_complete_by_non_owner_is_refused(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    assert_int_equal(complete(f->store, &c, owner + 1, &server_error),
                     IDEM_ENOTOWNER);
    assert_int_equal(complete(f->store, &c, 0, &server_error), IDEM_ENOTOWNER);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == owner);
    idem_result_free(&res);

    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
}

static void test_complete_twice_is_refused(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    assert_int_equal(complete(f->store, &c, owner, &server_error),
                     IDEM_ENOTOWNER);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
}

static void test_complete_of_an_absent_key_is_refused(void **state)
{
    fixture_t *f = *state;
    call_t c = call("never", 1, T0);
    idem_result_t res;

    assert_int_equal(complete(f->store, &c, 12345, &created), IDEM_ENOTOWNER);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
}

static void test_complete_ors_flags_and_keeps_times(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_result_t res;

    assert_int_equal(idem_store_complete(f->store, &c.scope, "k", 1, owner,
                                         &unknown, IDEM_REC_UNKNOWN_OUTCOME),
                     0);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_true(res.record.flags & IDEM_REC_UNKNOWN_OUTCOME);
    assert_true(res.record.created_ms == T0);
    assert_true(res.record.expires_ms == T0 + TTL);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);
}

static void test_complete_too_big_changes_nothing(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner = claim(f->store, &c);
    idem_response_t big = created;
    idem_header_t *many;
    idem_result_t res;

    many = calloc(5000, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < 5000; i++) {
        many[i] = created_headers[0];
    }
    big.headers = many;
    big.nheaders = 5000;
    assert_int_equal(complete(f->store, &c, owner, &big), IDEM_ETOOBIG);
    free(many);

    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
}

static void test_release_by_owner_only_then_claim_anew(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner = claim(f->store, &c), again;
    idem_result_t res;

    assert_int_equal(release(f->store, &c, owner + 1), IDEM_ENOTOWNER);
    assert_int_equal(lookup(f->store, &c, T0, &res), 0);
    idem_result_free(&res);

    assert_int_equal(release(f->store, &c, owner), 0);
    assert_int_equal(lookup(f->store, &c, T0, &res), IDEM_ENOTFOUND);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    assert_int_equal(release(f->store, &c, owner), IDEM_ENOTOWNER);
    assert_int_equal(complete(f->store, &c, owner, &created), IDEM_ENOTOWNER);

    /* The key executes again, under a new owner. */
    c.now = T0 + 1;
    again = claim(f->store, &c);
    assert_true(again != owner);
    assert_int_equal(complete(f->store, &c, again, &created), 0);
    /* A complete record cannot be released. */
    assert_int_equal(release(f->store, &c, again), IDEM_ENOTOWNER);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
}

/* ------------------------------------------------------------------------ */
/* lookup(), get(), delete()                                                 */
/* ------------------------------------------------------------------------ */

static void test_lookup_reads_without_changing(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_result_t res;
    uint64_t owner;

    assert_int_equal(lookup(f->store, &c, T0, &res), IDEM_ENOTFOUND);
    owner = claim(f->store, &c);
    assert_int_equal(lookup(f->store, &c, T0 + 1, &res), 0);
    assert_int_equal(res.outcome, 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    idem_result_free(&res);

    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    assert_int_equal(lookup(f->store, &c, T0 + 2, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    assert_int_equal(res.record.flags, 0);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);

    /* Another scope does not see it. */
    c.scope = hash_of(2);
    assert_int_equal(lookup(f->store, &c, T0 + 2, &res), IDEM_ENOTFOUND);
}

static void test_get_and_delete(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_result_t res;
    uint64_t owner;

    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    assert_int_equal(del(f->store, &c), IDEM_ENOTFOUND);

    /* Deleting an in-progress record voids its claim. */
    owner = claim(f->store, &c);
    assert_int_equal(del(f->store, &c), 0);
    assert_int_equal(complete(f->store, &c, owner, &created), IDEM_ENOTOWNER);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);

    /* Expired records are still there for get() and delete(). */
    c.ttl = 1000;
    owner = claim(f->store, &c);
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    assert_int_equal(lookup(f->store, &c, T0 + 5000, &res), IDEM_ENOTFOUND);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_COMPLETE);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
    assert_int_equal(del(f->store, &c), 0);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    assert_int_equal(del(f->store, &c), IDEM_ENOTFOUND);
}

/* ------------------------------------------------------------------------ */
/* prune()                                                                   */
/* ------------------------------------------------------------------------ */

static void claim_n(idem_store_t *s, const char *prefix, int n, int64_t ttl,
                    int64_t lease, int finish)
{
    char key[32];

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "%s-%d", prefix, i);
        call_t c = call(key, 1, T0);
        c.ttl = ttl;
        c.lease = lease;
        uint64_t owner = claim(s, &c);
        if (finish) {
            assert_int_equal(complete(s, &c, owner, &created), 0);
        }
    }
}

static void test_prune_removes_expired_within_budget(void **state)
{
    fixture_t *f = *state;
    size_t removed = 99;
    int more = 99;
    idem_result_t res;

    SKIP_UNLESS_PRUNES(f);
    claim_n(f->store, "old", 25, 1000, 500, 1);      /* expire at T0+1000 */
    claim_n(f->store, "live", 5, TTL, LEASE, 1);     /* still remembered */
    claim_n(f->store, "leased", 3, 1000, 100000, 0); /* in progress */

    assert_int_equal(idem_store_prune(f->store, T0 + 999, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 0);
    assert_int_equal(more, 0);

    assert_int_equal(idem_store_prune(f->store, T0 + 1000, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 10);
    assert_int_equal(more, 1);
    assert_int_equal(idem_store_prune(f->store, T0 + 1000, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 10);
    assert_int_equal(more, 1);
    assert_int_equal(idem_store_prune(f->store, T0 + 1000, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 5);
    assert_int_equal(more, 0);
    assert_int_equal(idem_store_prune(f->store, T0 + 1000, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 0);
    assert_int_equal(more, 0);

    /* Pruned records are gone; live and leased ones are untouched. */
    call_t c = call("old-7", 1, T0);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    c = call("live-3", 1, T0 + 1000);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
    c = call("leased-2", 1, T0 + 1000);
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);

    /* Budget 0 removes nothing but tells whether work is waiting. */
    assert_int_equal(
        idem_store_prune(f->store, T0 + 100000, 0, &removed, &more), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(more, 1);
    /* Once the lease has passed too, the abandoned claims go. */
    assert_int_equal(
        idem_store_prune(f->store, T0 + 100000, 10, &removed, &more), 0);
    assert_int_equal(removed, 3);
    assert_int_equal(more, 0);
    c = call("live-0", 1, T0 + 100000);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
}

static void test_prune_follows_rewrites(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_result_t res;
    size_t removed;
    int more;

    SKIP_UNLESS_PRUNES(f);
    /* An expired record claimed anew must not be pruned at its old time. */
    c.ttl = 1000;
    (void)claim(f->store, &c);
    c.now = T0 + 100000; /* lease and TTL passed */
    c.ttl = TTL;
    res = expect_begin(f->store, &c, IDEM_BEGIN_CLAIMED);
    idem_result_free(&res);
    assert_int_equal(
        idem_store_prune(f->store, T0 + 100000, 10, &removed, &more), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(lookup(f->store, &c, T0 + 100000, &res), 0);
    idem_result_free(&res);

    /* Released and deleted records leave nothing for prune. */
    c = call("r", 1, T0);
    assert_int_equal(release(f->store, &c, claim(f->store, &c)), 0);
    c = call("d", 1, T0);
    (void)claim(f->store, &c);
    assert_int_equal(del(f->store, &c), 0);
    assert_int_equal(
        idem_store_prune(f->store, INT64_MAX, 100, &removed, &more), 0);
    assert_int_equal(removed, 1); /* only "k" */
    assert_int_equal(more, 0);
}

/* ------------------------------------------------------------------------ */
/* Scopes                                                                    */
/* ------------------------------------------------------------------------ */

static void test_scopes_are_isolated(void **state)
{
    fixture_t *f = *state;
    call_t a = call("same-key", 1, T0);
    call_t b = call("same-key", 1, T0);
    uint64_t oa, ob;
    idem_result_t res;

    b.scope = hash_of(2);
    oa = claim(f->store, &a);
    ob = claim(f->store, &b);
    assert_true(oa != ob);

    assert_int_equal(complete(f->store, &b, oa, &created), IDEM_ENOTOWNER);
    assert_int_equal(complete(f->store, &a, oa, &created), 0);
    res = expect_begin(f->store, &b, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(complete(f->store, &b, ob, &server_error), 0);

    res = expect_begin(f->store, &a, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
    res = expect_begin(f->store, &b, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &server_error);
    idem_result_free(&res);

    assert_int_equal(del(f->store, &a), 0);
    res = expect_begin(f->store, &b, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

#define NTHREADS 16
#define NKEYS    32

typedef struct {
    idem_store_t *store;
    pthread_barrier_t *start;
    int id;
    const char *same_key;        /* all threads begin this key, or NULL */
    const idem_response_t *resp; /* the response to complete with */
    int outcome;
    int rc;
    int failures;
} worker_t;

static void *worker_same_key(void *arg)
{
    worker_t *w = arg;
    call_t c = call(w->same_key, 1, T0);
    idem_result_t res;

    pthread_barrier_wait(w->start);
    w->rc = begin(w->store, &c, &res);
    if (w->rc == 0) {
        w->outcome = res.outcome;
        idem_result_free(&res);
    }
    return NULL;
}

static void *worker_many_keys(void *arg)
{
    worker_t *w = arg;
    idem_result_t res;
    char key[32];

    pthread_barrier_wait(w->start);
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "t%d-k%d", w->id, i);
        call_t c = call(key, 1, T0);
        if (begin(w->store, &c, &res) != 0) {
            w->failures++;
            continue;
        }
        if (res.outcome != IDEM_BEGIN_CLAIMED ||
            complete(w->store, &c, res.owner, &created) != 0) {
            w->failures++;
        }
        idem_result_free(&res);
    }
    return NULL;
}

static void run_workers(worker_t *w, int n, void *(*fn)(void *))
{
    pthread_t t[NTHREADS];
    pthread_barrier_t start;

    assert_true(n <= NTHREADS);
    assert_int_equal(pthread_barrier_init(&start, NULL, (unsigned)n), 0);
    for (int i = 0; i < n; i++) {
        w[i].start = &start;
        w[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_barrier_destroy(&start);
}

static void race_one_key(idem_store_t *s, const char *key)
{
    worker_t w[NTHREADS];
    int claimed = 0, in_progress = 0;

    memset(w, 0, sizeof(w));
    for (int i = 0; i < NTHREADS; i++) {
        w[i].store = s;
        w[i].same_key = key;
    }
    run_workers(w, NTHREADS, worker_same_key);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(w[i].rc, 0);
        claimed += w[i].outcome == IDEM_BEGIN_CLAIMED;
        in_progress += w[i].outcome == IDEM_BEGIN_IN_PROGRESS;
    }
    assert_int_equal(claimed, 1);
    assert_int_equal(in_progress, NTHREADS - 1);
}

static void many_keys(idem_store_t *s)
{
    worker_t w[NTHREADS];
    idem_result_t res;
    char key[32];

    memset(w, 0, sizeof(w));
    for (int i = 0; i < NTHREADS; i++) {
        w[i].store = s;
    }
    run_workers(w, NTHREADS, worker_many_keys);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(w[i].failures, 0);
        for (int k = 0; k < NKEYS; k++) {
            snprintf(key, sizeof(key), "t%d-k%d", i, k);
            call_t c = call(key, 1, T0 + 1);
            res = expect_begin(s, &c, IDEM_BEGIN_REPLAY);
            assert_response_equal(&res.record.response, &created);
            idem_result_free(&res);
        }
    }
}

static void test_threads_race_for_one_key(void **state)
{
    fixture_t *f = *state;

    race_one_key(f->store, "contended");
}

static void test_threads_claim_and_complete_many_keys(void **state)
{
    fixture_t *f = *state;
    idem_store_stats_t st;

    many_keys(f->store);
    idem_store_stats(f->store, &st);
    print_message("    %s: %llu write ops in %llu commits\n", IDEM_TEST_BACKEND,
                  (unsigned long long)st.batched_ops,
                  (unsigned long long)st.commits);
    assert_true(st.commits >= 1);
    assert_true(st.batched_ops == 2 * NTHREADS * NKEYS);
    assert_true(st.commits <= st.batched_ops);
}

static void test_stats_count_commits(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_store_stats_t st;
    idem_result_t res;

    idem_store_stats(f->store, &st);
    assert_true(st.commits == 0 && st.batched_ops == 0);
    assert_int_equal(complete(f->store, &c, claim(f->store, &c), &created), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY); /* no write */
    idem_result_free(&res);
    assert_int_equal(lookup(f->store, &c, T0, &res), 0);
    idem_result_free(&res);
    idem_store_stats(f->store, &st);
    assert_true(st.commits == 2);
    assert_true(st.batched_ops == 2);
}

/* ------------------------------------------------------------------------ */
/* Processes and durability                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Other processes are this program again: start_child() forks and execs
 * it as "--child NAME DIR ARG FD", and child_main() runs the child
 * function NAME on the store in DIR. A fresh program shares nothing with
 * the parent (as another nginx worker or gateway would not), and it runs
 * natively under valgrind, which follows no exec. The child writes the
 * function's result to FD and then dies by SIGKILL, the way a crash ends
 * a process: no atexit, no close, no flush.
 */
typedef struct {
    pid_t pid;
    int fd; /* read end of the child's pipe */
} child_t;

static const char *program; /* argv[0], to run again */

static child_t start_child(const fixture_t *f, const char *name,
                           const char *arg)
{
    child_t c;
    char fd[16];
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    c.pid = fork();
    assert_true(c.pid >= 0);
    if (c.pid == 0) {
        close(fds[0]);
        snprintf(fd, sizeof(fd), "%d", fds[1]);
        execlp(program, program, "--child", name, f->dir, arg ? arg : "", fd,
               (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    c.fd = fds[0];
    return c;
}

/* Waits for the child's end and returns what its function returned. */
static int finish_child(child_t c)
{
    int v = -12345, status;
    ssize_t n;

    n = read(c.fd, &v, sizeof(v));
    close(c.fd);
    assert_int_equal(waitpid(c.pid, &status, 0), c.pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(n, (ssize_t)sizeof(v));
    return v;
}

/* Opens the fixture's store in a child; never closed (see start_child). */
static idem_store_t *child_open(const fixture_t *f)
{
    idem_store_t *s = NULL;
    char url[256];
    int n;

    char ns[96];

    if (server_url() != NULL) {
        snprintf(ns, sizeof(ns), "%s_env", f->dir);
        n = snprintf(url, sizeof(url), server_url(), ns);
    } else {
        n = snprintf(url, sizeof(url), "lmdb:%s/env", f->dir);
    }
    if (n < 0 || (size_t)n >= sizeof(url) || idem_store_open(url, &s) != 0) {
        return NULL;
    }
    return s;
}

/* Child: claims and completes "durable", then dies without closing. */
static int child_claim_and_complete(const fixture_t *f, const char *arg)
{
    call_t c = call("durable", 1, T0);
    idem_store_t *s = child_open(f);
    idem_result_t res;

    (void)arg;
    if (s == NULL || begin(s, &c, &res) != 0 ||
        res.outcome != IDEM_BEGIN_CLAIMED) {
        return 1;
    }
    if (complete(s, &c, res.owner, &created) != 0) {
        return 2;
    }
    return 0;
}

static void test_complete_survives_a_killed_process(void **state)
{
    fixture_t *f = *state;
    call_t c = call("durable", 1, T0);
    idem_result_t res;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_SHARED,
                    "the store keeps nothing beyond its handle");
    assert_int_equal(finish_child(start_child(f, "claim_and_complete", NULL)),
                     0);

    idem_store_close(f->store);
    f->store = open_store(f, "env", NULL);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
}

static void test_claim_survives_reopen(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    uint64_t owner;
    idem_result_t res;
    size_t removed;
    int more;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_SHARED,
                    "the store keeps nothing beyond its handle");
    owner = claim(f->store, &c);
    idem_store_close(f->store);
    f->store = open_store(f, "env", NULL);
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    if (!prunes(f->store)) {
        return; /* the store keeps no index of its own */
    }
    /* The expiry index survived too. */
    assert_int_equal(idem_store_prune(f->store, T0 + TTL, 10, &removed, &more),
                     0);
    assert_int_equal(removed, 1);
}

/* Child: works on the parent's claim of "from-parent" (owner in arg). */
static int child_share(const fixture_t *f, const char *arg)
{
    uint64_t owner = strtoull(arg, NULL, 10);
    call_t a = call("from-parent", 1, T0);
    call_t b = call("from-child", 1, T0);
    idem_store_t *s = child_open(f);
    idem_result_t res;

    if (s == NULL) {
        return 1;
    }
    /* It sees the parent's claim, ... */
    if (begin(s, &a, &res) != 0 || res.outcome != IDEM_BEGIN_IN_PROGRESS) {
        return 2;
    }
    idem_result_free(&res);
    /* ... makes its own, ... */
    if (begin(s, &b, &res) != 0 || res.outcome != IDEM_BEGIN_CLAIMED ||
        complete(s, &b, res.owner, &server_error) != 0) {
        return 3;
    }
    idem_result_free(&res);
    /* ... and fencing works across processes. */
    if (complete(s, &a, owner + 1, &server_error) != IDEM_ENOTOWNER ||
        complete(s, &a, owner, &created) != 0) {
        return 4;
    }
    return 0;
}

static void test_two_processes_share_one_store(void **state)
{
    fixture_t *f = *state;
    call_t a = call("from-parent", 1, T0);
    call_t b = call("from-child", 1, T0);
    idem_result_t res;
    uint64_t owner;
    char arg[32];

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_SHARED,
                    "the store keeps nothing beyond its handle");
    owner = claim(f->store, &a);
    snprintf(arg, sizeof(arg), "%llu", (unsigned long long)owner);
    assert_int_equal(finish_child(start_child(f, "share", arg)), 0);

    res = expect_begin(f->store, &b, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &server_error);
    idem_result_free(&res);
    res = expect_begin(f->store, &a, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
    assert_int_equal(complete(f->store, &a, owner, &created), IDEM_ENOTOWNER);
}

#define RACE_KEYS 200

/* Begins each of RACE_KEYS keys; returns how many it claimed, or -1. */
static int claim_race(idem_store_t *s)
{
    idem_result_t res;
    char key[32];
    int claimed = 0;

    for (int i = 0; i < RACE_KEYS; i++) {
        snprintf(key, sizeof(key), "race-%d", i);
        call_t c = call(key, 1, T0);
        if (begin(s, &c, &res) != 0) {
            return -1;
        }
        if (res.outcome == IDEM_BEGIN_CLAIMED) {
            claimed++;
        } else if (res.outcome != IDEM_BEGIN_IN_PROGRESS) {
            claimed = -1000000;
        }
        idem_result_free(&res);
    }
    return claimed < 0 ? -1 : claimed;
}

static int child_race(const fixture_t *f, const char *arg)
{
    idem_store_t *s = child_open(f);

    (void)arg;
    return s != NULL ? claim_race(s) : -1;
}

static void test_two_processes_race_for_the_same_keys(void **state)
{
    fixture_t *f = *state;
    child_t child;
    int ours, theirs;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_SHARED,
                    "the store keeps nothing beyond its handle");
    child = start_child(f, "race", NULL);
    ours = claim_race(f->store);
    theirs = finish_child(child);
    print_message("    claims: parent %d, child %d\n", ours, theirs);
    assert_true(ours >= 0 && theirs >= 0);
    assert_int_equal(ours + theirs, RACE_KEYS);
}

/* ------------------------------------------------------------------------ */
/* LMDB: options, limits, failures                                           */
/* ------------------------------------------------------------------------ */

static void test_lmdb_without_group_commit(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s;
    idem_store_stats_t st;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_DIRECTORY,
                    "group_commit and sync are options of a store in a "
                    "directory");
    s = open_store(f, "plain", "group_commit=0&sync=0");
    race_one_key(s, "contended");
    many_keys(s);
    idem_store_stats(s, &st);
    /* One transaction per write. */
    assert_true(st.commits == st.batched_ops);
    assert_true(st.commits == 1 + 2 * NTHREADS * NKEYS);
    idem_store_close(s);
}

/* ------------------------------------------------------------------------ */
/* Store URLs, usage and the identity of the files                           */
/* ------------------------------------------------------------------------ */

static void test_url_check_takes_sizes_and_says_what_is_wrong(void **state)
{
    static const char *good[] = {
        "mem:",
        "lmdb:/nonexistent/x",
        "lmdb:/nonexistent/x?map_size=65536",
        "lmdb:/nonexistent/x?map_size=64k",
        "lmdb:/nonexistent/x?map_size=2m",
        "lmdb:/nonexistent/x?map_size=2M&sync=0",
        "lmdb:/nonexistent/x?map_size=2mb",
        "lmdb:/nonexistent/x?map_size=2MiB",
        "lmdb:/nonexistent/x?group_commit=0&map_size=256g",
        "lmdb:/nonexistent/x?map_size=16384g",
    };
    static const struct {
        const char *url;
        const char *why; /* a part of the explanation */
    } bad[] = {
        {"lmdb:/nonexistent/x?colour=blue", "unknown lmdb option \"colour\""},
        {"lmdb:/nonexistent/x?map_size=12ab", "map_size \"12ab\""},
        {"lmdb:/nonexistent/x?map_size=2mbx", "map_size \"2mbx\""},
        {"lmdb:/nonexistent/x?map_size=2b", "map_size \"2b\""},
        {"lmdb:/nonexistent/x?map_size=2ib", "map_size \"2ib\""},
        {"lmdb:/nonexistent/x?map_size=m", "map_size \"m\""},
        {"lmdb:/nonexistent/x?map_size=", "map_size \"\""},
        {"lmdb:/nonexistent/x?map_size=1k", "from 64k to 16384g"},
        {"lmdb:/nonexistent/x?map_size=16385g", "from 64k to 16384g"},
        {"lmdb:/nonexistent/x?map_size=99999999999999999999g", "map_size"},
        {"lmdb:/nonexistent/x?sync=yes", "sync is 0 or 1"},
        {"lmdb:/nonexistent/x?sync", "\"sync\" has no value"},
        {"lmdb:?sync=1", "needs a directory"},
        {"mem:extra", "mem:"},
        {"nosuch://localhost:6379", "unsupported store URL"},
    };
    char why[256];
    idem_store_t *s = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        assert_int_equal(idem_store_url_check(good[i], why, sizeof(why)), 0);
        assert_string_equal(why, "");
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(idem_store_url_check(bad[i].url, why, sizeof(why)),
                         IDEM_EBADURL);
        if (strstr(why, bad[i].why) == NULL) {
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i].url, why,
                     bad[i].why);
        }
        /* open() refuses exactly what the check refuses */
        assert_int_equal(idem_store_open(bad[i].url, &s), IDEM_EBADURL);
        assert_null(s);
    }
    assert_int_equal(idem_store_url_check("lmdb:/x?colour=1", NULL, 0),
                     IDEM_EBADURL);
    assert_int_equal(idem_store_url_check(NULL, why, sizeof(why)), IDEM_EINVAL);
    assert_int_equal(access("/nonexistent", F_OK), -1);
}

static void test_postgres_url_check_says_what_is_wrong(void **state)
{
    static const char *good[] = {
        "postgres://localhost/db",
        "postgresql://u:p@127.0.0.1:5433/db?sslmode=disable",
        "postgres:///db?host=/run/postgresql",
        "postgres://h/db?table=idem&clock=caller&pool=8&connect_timeout=3",
        "postgres://h/db?options=-csearch_path%3Dt1",
    };
    static const struct {
        const char *url;
        const char *why; /* a part of the explanation */
    } bad[] = {
        {"postgres://h/db?colour=blue", "invalid URI query parameter"},
        {"postgres://[::1/db", "IPv6"},
        {"postgres://h/%zz", "percent"},
        {"postgres://h/db?table=Idem", "table \"Idem\""},
        {"postgres://h/db?table=1x", "not starting with a digit"},
        {"postgres://h/db?clock=local", "clock is store or caller"},
        {"postgres://h/db?pool=0", "pool is 1 to 64"},
        {"postgresql://h/db?pool=65", "pool is 1 to 64"},
    };
    char why[256];
    idem_store_t *s = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (idem_store_url_check(good[i], why, sizeof(why)) != 0) {
            fail_msg("%s refused: %s", good[i], why);
        }
        assert_string_equal(why, "");
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(idem_store_url_check(bad[i].url, why, sizeof(why)),
                         IDEM_EBADURL);
        if (strstr(why, bad[i].why) == NULL) {
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i].url, why,
                     bad[i].why);
        }
        assert_int_equal(idem_store_open(bad[i].url, &s), IDEM_EBADURL);
        assert_null(s);
    }
}

static void test_redis_url_check_says_what_is_wrong(void **state)
{
    static const char *good[] = {
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "redis://:secret@10.0.0.1:6380/2",
        "redis://[::1]:6379/0",
        "redis://app:p%40ss@cache.internal:6379/15?prefix=app:idem:&"
        "timeout=500ms&allow_eviction=1&clock=store",
        "redis://h:1?timeout=3s",
        "redis://h:1?clock=caller&clock=store", /* the later one wins */
    };
    static const struct {
        const char *url;
        const char *why; /* a part of the explanation */
    } bad[] = {
        {"redis:localhost:6379", "starts with redis://"},
        {"redis://", "needs a host"},
        {"redis://h:0", "port \"0\" is not a number from 1 to 65535"},
        {"redis://h:70000", "port \"70000\""},
        {"redis://h:12x", "port \"12x\""},
        {"redis://h:", "port \"\""},
        {"redis://h:1/x", "database \"x\" is not a number"},
        {"redis://h:1/", "database \"\""},
        {"redis://secret@h:1", "password goes after a colon"},
        {"redis://:a%zz@h:1", "bad %-escape"},
        {"redis://h:1?colour=blue", "unknown redis option \"colour\""},
        {"redis://h:1?prefix={tag}", "hash tag"},
        {"redis://h:1?prefix=", "1 to 128 characters"},
        {"redis://h:1?timeout=fast", "timeout \"fast\""},
        {"redis://h:1?timeout=0", "from 1ms to 600s"},
        {"redis://h:1?allow_eviction=yes", "allow_eviction is 0 or 1"},
        {"redis://h:1?clock=local", "clock is store or caller"},
        {"redis://h:1?timeout", "\"timeout\" has no value"},
        {"redis://h!:1", "not a host name"},
    };
    char why[256];
    idem_store_t *s = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (idem_store_url_check(good[i], why, sizeof(why)) != 0) {
            fail_msg("%s refused: %s", good[i], why);
        }
        assert_string_equal(why, "");
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(idem_store_url_check(bad[i].url, why, sizeof(why)),
                         IDEM_EBADURL);
        if (strstr(why, bad[i].why) == NULL) {
            fail_msg("%s: \"%s\" does not say \"%s\"", bad[i].url, why,
                     bad[i].why);
        }
        assert_int_equal(idem_store_open(bad[i].url, &s), IDEM_EBADURL);
        assert_null(s);
    }
}

/*
 * A networked store opens while its server is down, then fails closed:
 * every call IDEM_EUNAVAIL, check says why. Needs a URL where nothing
 * listens (IDEM_TEST_DEAD_STORE_URL, set by the server script).
 */
static void test_unreachable_store_opens_and_fails_closed(void **state)
{
    const char *url = getenv("IDEM_TEST_DEAD_STORE_URL");
    call_t c = call("k", 1, T0);
    idem_store_t *s = NULL;
    idem_result_t res;
    size_t removed;
    int more;
    char why[512];

    (void)state;
    if (url == NULL || *url == '\0') {
        print_message("[  SKIP    ] %s: no unreachable server to name\n",
                      __func__);
        skip();
    }
    assert_int_equal(idem_store_open(url, &s), 0);
    assert_int_equal(begin(s, &c, &res), IDEM_EUNAVAIL);
    assert_int_equal(complete(s, &c, 1, &created), IDEM_EUNAVAIL);
    assert_int_equal(release(s, &c, 1), IDEM_EUNAVAIL);
    assert_int_equal(lookup(s, &c, T0, &res), IDEM_EUNAVAIL);
    /* a store that expires records itself has no prune to fail */
    assert_int_equal(idem_store_prune(s, T0, 10, &removed, &more),
                     prunes(s) ? IDEM_EUNAVAIL : 0);
    assert_int_equal(idem_store_check(s, why, sizeof(why)), IDEM_EUNAVAIL);
    print_message("    check: %s\n", why);
    assert_non_null(strstr(why, "unreachable"));
    idem_store_close(s);
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A store with a clock of its own measures leases and TTLs by it: callers
 * whose clocks are hours off (one ahead, one behind) get the outcomes of
 * the store's time, and so agree with each other.
 */
static void test_store_clock_rules_leases_and_ttls(void **state)
{
    fixture_t *f = *state;
    const int64_t hours = 2 * 3600 * 1000LL;
    int64_t t = wall_ms();
    call_t a = call("a", 1, t + hours), b = call("b", 1, t - hours);
    idem_result_t res;
    idem_store_t *s;
    size_t removed;
    int more;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_CLOCK,
                    "the store has no clock of its own");
    s = open_store(f, "clock", "clock=store");

    /* a: a TTL of 1 h and a lease of 300 ms, claimed by a caller 2 h ahead:
       stamped with the store's time, not the caller's */
    a.ttl = 3600 * 1000LL;
    a.lease = 300;
    res = expect_begin(s, &a, IDEM_BEGIN_CLAIMED);
    assert_true(res.record.created_ms >= t - 5000 &&
                res.record.created_ms <= t + 5000);
    assert_true(res.record.lease_until_ms == res.record.created_ms + 300);
    idem_result_free(&res);
    /* on the caller's clock it expired an hour ago; on the store's it is
       in progress, for a caller ahead and one behind alike */
    res = expect_begin(s, &a, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    a.now = t - hours;
    res = expect_begin(s, &a, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);

    /* b: complete, with a TTL of 300 ms, by a caller 2 h behind */
    b.ttl = 300;
    b.lease = 100;
    assert_int_equal(complete(s, &b, claim(s, &b), &created), 0);
    res = expect_begin(s, &b, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);

    usleep(450 * 1000);
    /* a's lease has passed on the store's clock (the caller behind would
       still see it running): the outcome is unknown */
    res = expect_begin(s, &a, IDEM_BEGIN_STALE);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);
    /* b expired on the store's clock, though its caller sees it live;
       prune by the store's clock too, whatever time it is given */
    assert_int_equal(idem_store_prune(s, 0, 10, &removed, &more), 0);
    assert_int_equal(removed, prunes(s) ? 1 : 0); /* or Redis forgot it */
    assert_int_equal(more, 0);
    res = expect_begin(s, &b, IDEM_BEGIN_CLAIMED);
    idem_result_free(&res);
    /* a stays (1 h TTL) for a caller ahead by 2 h */
    a.now = t + hours;
    res = expect_begin(s, &a, IDEM_BEGIN_REPLAY);
    idem_result_free(&res);
    idem_store_close(s);
}

static void test_lmdb_map_size_takes_a_suffix(void **state)
{
    fixture_t *f = *state;
    idem_store_usage_t u;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    idem_store_close(f->store);
    f->store = open_store(f, "suffix", "map_size=2m");
    assert_int_equal(idem_store_usage(f->store, &u), 0);
    assert_true(u.bytes_limit == (uint64_t)2 << 20);
    /* the reserve of a small map: 256 KiB with 4 KiB pages */
    assert_true(u.bytes_claim_limit < u.bytes_limit);
    assert_true(u.bytes_claim_limit >= u.bytes_limit - (u.bytes_limit / 4));
}

/* A small JSON response of the size a typical API answers with. */
static const uint8_t typical_body[] =
    "{\"data\":{\"type\":\"inquiry\",\"id\":\"inq_"
    "9f86d081884c7d659a2feaa0c55a\","
    "\"attributes\":{\"status\":\"created\"}}}";
static const idem_header_t typical_headers[] = {
    {STR("Content-Type"), STR("application/json")},
    {STR("Date"), STR("Sat, 28 Nov 2026 04:44:27 GMT")},
    {STR("X-Request-Id"), STR("9f86d081884c7d659a2feaa0c55ad015")},
};
static const idem_response_t typical = {201, typical_headers, 3, typical_body,
                                        sizeof(typical_body) - 1};

/*
 * Claims and completes n keys like UUIDs (random, so the B-tree fills as
 * real traffic does), 100 to a batch. keys must have room for n * 40.
 */
static void put_typical(idem_store_t *s, int n, unsigned seed, char *keys)
{
    enum { BATCH = 100 };
    idem_op_t ops[BATCH];
    idem_hash_t scope = hash_of(1), fp = hash_of(101);

    for (int done = 0; done < n; done += BATCH) {
        int m = n - done < BATCH ? n - done : BATCH;
        memset(ops, 0, sizeof(ops));
        for (int i = 0; i < m; i++) {
            char *key = keys + (size_t)(done + i) * 40;
            snprintf(key, 40, "%08x-%04x-%04x-%04x-%012x", rand_r(&seed),
                     rand_r(&seed) & 0xffff, rand_r(&seed) & 0xffff,
                     rand_r(&seed) & 0xffff, rand_r(&seed));
            ops[i].kind = IDEM_OP_BEGIN;
            ops[i].begin.scope = &scope;
            ops[i].begin.key = key;
            ops[i].begin.key_len = strlen(key);
            ops[i].begin.fingerprint = &fp;
            ops[i].begin.now_ms = T0;
            ops[i].begin.ttl_ms = TTL;
            ops[i].begin.lease_ms = LEASE;
            ops[i].begin.unknown_response = &unknown;
        }
        assert_int_equal(idem_store_batch(s, ops, (size_t)m), 0);
        for (int i = 0; i < m; i++) {
            uint64_t owner;
            assert_int_equal(ops[i].rc, 0);
            assert_int_equal(ops[i].result.outcome, IDEM_BEGIN_CLAIMED);
            owner = ops[i].result.owner;
            idem_result_free(&ops[i].result);
            ops[i].kind = IDEM_OP_COMPLETE;
            ops[i].scope = &scope;
            ops[i].key = ops[i].begin.key;
            ops[i].key_len = ops[i].begin.key_len;
            ops[i].owner = owner;
            ops[i].resp = &typical;
        }
        assert_int_equal(idem_store_batch(s, ops, (size_t)m), 0);
        for (int i = 0; i < m; i++) {
            assert_int_equal(ops[i].rc, 0);
        }
    }
}

static void test_usage_counts_records_and_bytes(void **state)
{
    fixture_t *f = *state;
    idem_store_usage_t empty, u, after;
    char *keys;
    size_t removed;
    int more;

    SKIP_UNLESS_PRUNES(f); /* and its usage counts the whole server's */
    keys = malloc(200 * 40);
    assert_non_null(keys);
    assert_int_equal(idem_store_usage(f->store, &empty), 0);
    assert_true(empty.records == 0);
    put_typical(f->store, 200, 7, keys);
    assert_int_equal(idem_store_usage(f->store, &u), 0);
    assert_true(u.records == 200);
    /* each record takes at least its own bytes */
    assert_true(u.bytes_used >= empty.bytes_used + 200 * sizeof(typical_body));
    if (idem_store_caps(f->store) & IDEM_STORE_CAP_BOUNDED) {
        assert_true(u.bytes_claim_limit < u.bytes_limit);
        assert_true(u.bytes_used < u.bytes_claim_limit);
    } else {
        assert_true(u.bytes_limit == 0 && u.bytes_claim_limit == 0);
    }
    /* prune takes them away again */
    assert_int_equal(
        idem_store_prune(f->store, T0 + TTL, 1000, &removed, &more), 0);
    assert_int_equal(removed, 200);
    assert_int_equal(idem_store_usage(f->store, &after), 0);
    assert_true(after.records == 0);
    assert_true(after.bytes_used < u.bytes_used);
    free(keys);
}

/*
 * SPEC §9: the default LMDB store holds at least 1,000 new keys/s for
 * 24 h. The bytes a small record takes are measured, not assumed.
 */
static void
test_lmdb_default_map_holds_a_day_at_1000_new_keys_a_second(void **state)
{
    enum { N = 5000 };
    fixture_t *f = *state;
    idem_store_usage_t before, u;
    char *keys;
    uint64_t per_record, needed;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    if (UNDER_VALGRIND()) {
        print_message("[  SKIP    ] %s: valgrind cannot map 128 GiB\n",
                      __func__);
        skip();
    }
    keys = malloc((size_t)N * 40);
    assert_non_null(keys);
    idem_store_close(f->store);
    f->store = open_store(f, "day", "sync=0");
    assert_int_equal(idem_store_usage(f->store, &before), 0);
    put_typical(f->store, N, 11, keys);
    assert_int_equal(idem_store_usage(f->store, &u), 0);
    assert_true(u.bytes_limit == IDEM_STORE_LMDB_DEFAULT_MAP_SIZE);
    assert_true(u.records == N);
    per_record = (u.bytes_used - before.bytes_used + N - 1) / N;
    needed = (uint64_t)1000 * 86400 * per_record;
    print_message("    %" PRIu64 " bytes per small record; 86.4 million need "
                  "%" PRIu64 " MiB, new claims are taken up to %" PRIu64
                  " MiB\n",
                  per_record, needed >> 20, u.bytes_claim_limit >> 20);
    assert_true(per_record > sizeof(typical_body));
    assert_true(u.bytes_claim_limit >= needed);
    free(keys);
}

/* Renames dir/from to dir/to. */
static void rename_in(const fixture_t *f, const char *from, const char *to)
{
    char a[128], b[128];

    snprintf(a, sizeof(a), "%s/%s", f->dir, from);
    snprintf(b, sizeof(b), "%s/%s", f->dir, to);
    assert_int_equal(rename(a, b), 0);
}

static void expect_store_check(idem_store_t *s, int want, const char *says)
{
    char why[512];
    int rc = idem_store_check(s, why, sizeof(why));

    if (rc != want || (says != NULL && strstr(why, says) == NULL) ||
        (says == NULL && why[0] != '\0')) {
        fail_msg("check gave %s \"%s\", wanted %s saying \"%s\"",
                 idem_err_name(rc), why, idem_err_name(want), says ? says : "");
    }
}

static void test_check_notices_a_removed_or_replaced_directory(void **state)
{
    fixture_t *f = *state;
    idem_store_t *fresh, *again;
    idem_store_identity_t id, id_again, id_fresh;
    char path[128];

    expect_store_check(f->store, 0, NULL);
    idem_store_identity(f->store, &id);
    if (!(idem_store_caps(f->store) & IDEM_STORE_CAP_DIRECTORY)) {
        /* memory or a server: no path, and no files */
        assert_true(id.device == 0 && id.inode == 0);
        return;
    }
    /* a second handle on the path has the same files */
    again = open_store(f, "env", NULL);
    idem_store_identity(again, &id_again);
    assert_true(id.inode != 0);
    assert_true(id.device == id_again.device && id.inode == id_again.inode);
    idem_store_close(again);

    /* moved away, and back: the same files again */
    rename_in(f, "env", "away");
    expect_store_check(f->store, IDEM_EUNAVAIL, "data.mdb is gone");
    rename_in(f, "away", "env");
    expect_store_check(f->store, 0, NULL);

    /* replaced: another store now lives under the path */
    rename_in(f, "env", "away");
    fresh = open_store(f, "env", NULL);
    expect_store_check(fresh, 0, NULL);
    idem_store_identity(fresh, &id_fresh);
    assert_false(id.device == id_fresh.device && id.inode == id_fresh.inode);
    expect_store_check(f->store, IDEM_EUNAVAIL, "is another file now");
    expect_store_check(f->store, IDEM_EUNAVAIL, "replaced");
    idem_store_close(fresh);

    /* removed (rm -rf) */
    snprintf(path, sizeof(path), "%s/env", f->dir);
    assert_int_equal(nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    expect_store_check(f->store, IDEM_EUNAVAIL, "removed");

    /* only the lock file replaced: two lock files would let two writers
     * into one data file */
    idem_store_close(f->store);
    f->store = open_store(f, "lock", NULL);
    snprintf(path, sizeof(path), "%s/lock/lock.mdb", f->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(close(open(path, O_CREAT | O_WRONLY, 0600)), 0);
    expect_store_check(f->store, IDEM_EUNAVAIL, "lock.mdb is another file now");
}

static void test_lmdb_map_full_is_clean(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    idem_response_t big = created;
    uint8_t *body;
    idem_result_t res;
    uint64_t owner;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=65536");
    body = malloc(1 << 20);
    assert_non_null(body);
    memset(body, 'x', 1 << 20);
    big.body = body;
    big.body_len = 1 << 20;

    /* A response larger than the map: refused, the claim untouched. */
    owner = claim(f->store, &c);
    assert_int_equal(complete(f->store, &c, owner, &big), IDEM_EFULL);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == owner);
    idem_result_free(&res);
    /* The store goes on working for records that fit. */
    assert_int_equal(complete(f->store, &c, owner, &created), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);
    free(body);
}

static void test_lmdb_map_full_claims_leave_nothing(void **state)
{
    fixture_t *f = *state;
    idem_result_t res;
    char key[32];
    size_t removed;
    int n, rc = 0, more;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=65536");
    for (n = 0; n < 100000; n++) {
        snprintf(key, sizeof(key), "fill-%06d", n);
        call_t c = call(key, 1, T0);
        rc = begin(f->store, &c, &res);
        if (rc != 0) {
            break;
        }
        idem_result_free(&res);
    }
    assert_int_equal(rc, IDEM_EFULL);
    assert_true(n > 10);
    print_message("    %d claims fit in 64 KiB\n", n);

    /* The refused claim is absent; the others are all there. */
    call_t c = call(key, 1, T0);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    c = call("fill-000000", 1, T0 + 1);
    res = expect_begin(f->store, &c, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);

    /* With room again, the index holds exactly the records written. */
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=4194304");
    assert_int_equal(
        idem_store_prune(f->store, INT64_MAX, 1000000, &removed, &more), 0);
    assert_int_equal(removed, (size_t)n);
    assert_int_equal(more, 0);
}

static void *worker_complete(void *arg)
{
    worker_t *w = arg;
    char key[32];

    snprintf(key, sizeof(key), "batch-%d", w->id);
    call_t c = call(key, 1, T0);
    uint64_t owner = 0;
    idem_result_t res;

    if (begin(w->store, &c, &res) == 0) {
        owner = res.owner;
        idem_result_free(&res);
    }
    pthread_barrier_wait(w->start);
    w->rc = complete(w->store, &c, owner, w->resp);
    return NULL;
}

static void test_lmdb_one_failing_write_does_not_fail_its_batch(void **state)
{
    fixture_t *f = *state;
    idem_response_t big = created;
    worker_t w[NTHREADS];
    idem_result_t res;
    uint8_t *body;
    char key[32];

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=131072");
    body = calloc(1, 1 << 20);
    assert_non_null(body);
    big.body = body;
    big.body_len = 1 << 20;

    for (int round = 0; round < 3; round++) {
        memset(w, 0, sizeof(w));
        for (int i = 0; i < 8; i++) {
            w[i].store = f->store;
            w[i].resp = i == 3 ? &big : &created;
        }
        run_workers(w, 8, worker_complete);
        for (int i = 0; i < 8; i++) {
            assert_int_equal(w[i].rc, i == 3 ? IDEM_EFULL : 0);
            snprintf(key, sizeof(key), "batch-%d", i);
            call_t c = call(key, 1, T0 + 1);
            res = expect_begin(f->store, &c,
                               i == 3 ? IDEM_BEGIN_IN_PROGRESS
                                      : IDEM_BEGIN_REPLAY);
            idem_result_free(&res);
            assert_int_equal(del(f->store, &c), 0);
        }
    }
    free(body);
}

/* Sets the modes of the fixture's directory and of its env's files. */
static void chmod_env(const fixture_t *f, mode_t dir, mode_t files)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/env/data.mdb", f->dir);
    chmod(path, files);
    snprintf(path, sizeof(path), "%s/env/lock.mdb", f->dir);
    chmod(path, files);
    chmod(f->dir, dir);
}

/*
 * Child: opens stores where it may not write. root passes permission
 * checks, so as root it drops to "nobody" first (the test directory is
 * root's and 0700); otherwise it takes the write permission away from
 * itself. Returns 0, or 1000/2000 + the unexpected error.
 */
static int child_without_permission(const fixture_t *f, const char *arg)
{
    idem_store_t *s = NULL;
    char url[256];
    int rc;

    (void)arg;
    if (getuid() == 0) {
        if (setgroups(0, NULL) != 0 || setgid(65534) != 0 ||
            setuid(65534) != 0) {
            return 1;
        }
    } else {
        chmod_env(f, 0500, 0400);
    }
    snprintf(url, sizeof(url), "lmdb:%s/new/env", f->dir);
    rc = idem_store_open(url, &s); /* cannot create it */
    if (rc != IDEM_EPERM) {
        return 1000 - rc;
    }
    snprintf(url, sizeof(url), "lmdb:%s/env", f->dir);
    rc = idem_store_open(url, &s); /* cannot open it */
    if (rc != IDEM_EPERM) {
        return 2000 - rc;
    }
    return 0;
}

static void test_lmdb_unwritable_directory_is_eperm(void **state)
{
    fixture_t *f = *state;
    idem_store_t *s = NULL;
    char url[256], path[128];
    int fd;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_DIRECTORY, "the store has no files");

    /* A path under a regular file cannot be a directory: an I/O error. */
    snprintf(path, sizeof(path), "%s/file", f->dir);
    fd = creat(path, 0600);
    assert_true(fd >= 0);
    close(fd);
    snprintf(url, sizeof(url), "lmdb:%s/file/env", f->dir);
    assert_int_equal(idem_store_open(url, &s), IDEM_EIO);
    assert_null(s);

    fd = finish_child(start_child(f, "without_permission", NULL));
    chmod_env(f, 0700, 0600);
    assert_int_equal(fd, 0);
}

/* Copies a record's bytes (read's callback). */
typedef struct {
    uint8_t *bytes;
    size_t len;
} copy_t;

static int copy_cb(void *ctx, const uint8_t *val, size_t len)
{
    copy_t *c = ctx;

    c->bytes = malloc(len ? len : 1);
    if (c->bytes == NULL) {
        return IDEM_ENOMEM;
    }
    memcpy(c->bytes, val, len);
    c->len = len;
    return 0;
}

/* Truncates the record of "k" in LMDB's files, behind the store's back. */
static void plant_truncated_lmdb(fixture_t *f, const call_t *c)
{
    char path[128];
    uint8_t skey[IDEM_HASH_LEN + 1];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;

    idem_store_close(f->store);
    f->store = NULL;
    snprintf(path, sizeof(path), "%s/env", f->dir);
    memcpy(skey, c->scope.bytes, IDEM_HASH_LEN);
    skey[IDEM_HASH_LEN] = 'k';
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 2), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, IDEM_STORE_LMDB_DB_RECORDS, 0, &dbi), 0);
    k.mv_data = skey;
    k.mv_size = sizeof(skey);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    v.mv_size /= 2; /* truncated */
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Truncates the record of "k" through the backend's test hook. */
static void plant_truncated(fixture_t *f, const call_t *c)
{
    idem_store_key_t k;
    copy_t copy = {NULL, 0};

    memcpy(k.bytes, c->scope.bytes, IDEM_HASH_LEN);
    k.bytes[IDEM_HASH_LEN] = 'k';
    k.len = IDEM_HASH_LEN + 1;
    assert_int_equal(f->store->vt->read(f->store, &k, copy_cb, &copy), 0);
    assert_int_equal(
        f->store->vt->plant(f->store, &k, copy.bytes, copy.len / 2), 0);
    free(copy.bytes);
    idem_store_close(f->store);
    f->store = NULL;
}

static void test_lmdb_corrupt_record_is_ecorrupt(void **state)
{
    fixture_t *f = *state;
    call_t c = call("k", 1, T0);
    int on_disk = (idem_store_caps(f->store) & IDEM_STORE_CAP_DIRECTORY) != 0;
    idem_result_t res;
    size_t removed;
    int more;

    if (!on_disk && f->store->vt->plant == NULL) {
        print_message("[  SKIP    ] %s: the store keeps no bytes that could "
                      "rot\n",
                      __func__);
        skip();
    }
    assert_int_equal(complete(f->store, &c, claim(f->store, &c), &created), 0);

    /* Overwrite the record's bytes behind the store's back. */
    if (on_disk) {
        plant_truncated_lmdb(f, &c);
    } else {
        plant_truncated(f, &c);
    }

    f->store = open_store(f, "env", NULL);
    assert_int_equal(begin(f->store, &c, &res), IDEM_ECORRUPT);
    assert_int_equal(lookup(f->store, &c, T0, &res), IDEM_ECORRUPT);
    assert_int_equal(get(f->store, &c, &res), IDEM_ECORRUPT);
    assert_int_equal(complete(f->store, &c, 1, &created), IDEM_ECORRUPT);
    assert_int_equal(release(f->store, &c, 1), IDEM_ECORRUPT);

    /* The admin removes it and the key works again. */
    assert_int_equal(del(f->store, &c), 0);
    c.now = T0 + 1000;
    assert_int_equal(complete(f->store, &c, claim(f->store, &c), &created), 0);
    /* The dead index entry is dropped without touching the new record. */
    assert_int_equal(
        idem_store_prune(f->store, T0 + TTL + 500, 10, &removed, &more), 0);
    assert_int_equal(removed, 0);
    assert_int_equal(more, 0);
    assert_int_equal(lookup(f->store, &c, T0 + TTL + 500, &res), 0);
    idem_result_free(&res);
}

/* ------------------------------------------------------------------------ */
/* Size                                                                      */
/* ------------------------------------------------------------------------ */

static void test_large_response_round_trips(void **state)
{
    fixture_t *f = *state;
    call_t c = call("big", 1, T0);
    idem_response_t big;
    idem_header_t headers[40];
    char names[40][16];
    uint8_t *body;
    idem_result_t res;
    size_t n = 4u << 20;

    body = malloc(n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "X-H%d", i);
        headers[i].name.data = names[i];
        headers[i].name.len = strlen(names[i]);
        headers[i].value.data = (const char *)body + i;
        headers[i].value.len = (size_t)i * 10;
    }
    big.status = 200;
    big.headers = headers;
    big.nheaders = 40;
    big.body = body;
    big.body_len = n;

    assert_int_equal(complete(f->store, &c, claim(f->store, &c), &big), 0);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &big);
    idem_result_free(&res);
    assert_int_equal(lookup(f->store, &c, T0, &res), 0);
    assert_response_equal(&res.record.response, &big);
    idem_result_free(&res);
    free(body);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */
/* ------------------------------------------------------------------------ */

/* The op of begin(c); c must outlive the batch. */
static idem_op_t op_begin(const call_t *c)
{
    idem_op_t op;

    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_BEGIN;
    op.begin.scope = &c->scope;
    op.begin.key = c->key;
    op.begin.key_len = strlen(c->key);
    op.begin.fingerprint = &c->fp;
    op.begin.now_ms = c->now;
    op.begin.ttl_ms = c->ttl;
    op.begin.lease_ms = c->lease;
    op.begin.on_unknown = c->policy;
    op.begin.unknown_response = &unknown;
    return op;
}

static idem_op_t op_complete(const call_t *c, uint64_t owner,
                             const idem_response_t *resp)
{
    idem_op_t op;

    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_COMPLETE;
    op.scope = &c->scope;
    op.key = c->key;
    op.key_len = strlen(c->key);
    op.owner = owner;
    op.resp = resp;
    return op;
}

static idem_op_t op_release(const call_t *c, uint64_t owner)
{
    idem_op_t op = op_complete(c, owner, NULL);

    op.kind = IDEM_OP_RELEASE;
    return op;
}

/* Runs op with the single call it stands for, the way a batch must. */
static void run_single(idem_store_t *s, idem_op_t *op)
{
    memset(&op->result, 0, sizeof(op->result));
    switch (op->kind) {
    case IDEM_OP_BEGIN:
        op->rc = idem_store_begin(s, &op->begin, &op->result);
        break;
    case IDEM_OP_COMPLETE:
        op->rc = idem_store_complete(s, op->scope, op->key, op->key_len,
                                     op->owner, op->resp, op->flags);
        break;
    case IDEM_OP_RELEASE:
        op->rc =
            idem_store_release(s, op->scope, op->key, op->key_len, op->owner);
        break;
    default:
        fail();
    }
}

static void free_ops(idem_op_t *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        idem_result_free(&ops[i].result);
    }
}

static void assert_record_equal(const idem_record_t *got,
                                const idem_record_t *want)
{
    assert_int_equal(got->state, want->state);
    assert_int_equal(got->flags, want->flags);
    assert_memory_equal(got->fingerprint.bytes, want->fingerprint.bytes,
                        IDEM_HASH_LEN);
    assert_true(got->created_ms == want->created_ms);
    assert_true(got->expires_ms == want->expires_ms);
    assert_true(got->lease_until_ms == want->lease_until_ms);
    assert_int_equal(got->owner != 0, want->owner != 0);
    if (got->state == IDEM_STATE_COMPLETE) {
        assert_response_equal(&got->response, &want->response);
    }
}

/* The keys of test_batch_equals_single_calls, in the order of its ops. */
static const char *const mixed_keys[] = {
    "new-1",   "replay", "owned", "foreign", "rel",     "new-2",
    "mm-once", "mm-2nd", "busy",  "stale",   "foreign", "never",
};
#define MIXED_N (sizeof(mixed_keys) / sizeof(mixed_keys[0]))

/*
 * Puts the records the mixed ops work on into scope, and fills ops (whose
 * keys live in calls) with them, at T0 + 1000.
 */
static void mixed_setup(idem_store_t *s, int scope, call_t *calls,
                        idem_op_t *ops)
{
    uint64_t owners[MIXED_N] = {0};
    idem_result_t res;

    for (size_t i = 0; i < MIXED_N; i++) {
        calls[i] = call(mixed_keys[i], 1, T0);
        calls[i].scope = hash_of(scope);
    }
    calls[9].lease = 500; /* "stale": its lease has passed at T0 + 1000 */
    for (size_t i = 1; i <= 9; i++) {
        if (i != 5) {
            owners[i] = claim(s, &calls[i]);
        }
    }
    assert_int_equal(complete(s, &calls[1], owners[1], &created), 0);
    assert_int_equal(complete(s, &calls[6], owners[6], &created), 0);
    assert_int_equal(complete(s, &calls[7], owners[7], &server_error), 0);
    calls[7].fp = hash_of(102);
    calls[7].now = T0 + 10;
    res = expect_begin(s, &calls[7], IDEM_BEGIN_MISMATCH); /* logged once */
    idem_result_free(&res);

    for (size_t i = 0; i < MIXED_N; i++) {
        calls[i].now = T0 + 1000;
    }
    calls[6].fp = hash_of(102);
    ops[0] = op_begin(&calls[0]);
    ops[1] = op_begin(&calls[1]);
    ops[2] = op_complete(&calls[2], owners[2], &created);
    ops[3] = op_complete(&calls[3], owners[3] + 1, &server_error);
    ops[4] = op_release(&calls[4], owners[4]);
    ops[5] = op_begin(&calls[5]);
    ops[6] = op_begin(&calls[6]);
    ops[7] = op_begin(&calls[7]);
    ops[8] = op_begin(&calls[8]);
    ops[9] = op_begin(&calls[9]);
    ops[10] = op_release(&calls[10], owners[3] + 1);
    ops[11] = op_complete(&calls[11], 12345, &created);
}

static void test_batch_equals_single_calls(void **state)
{
    static const int want_rc[MIXED_N] = {
        0,
        0,
        0,
        IDEM_ENOTOWNER,
        0,
        0,
        0,
        0,
        0,
        0,
        IDEM_ENOTOWNER,
        IDEM_ENOTOWNER,
    };
    static const idem_begin_outcome_t want_outcome[MIXED_N] = {
        [0] = IDEM_BEGIN_CLAIMED,  [1] = IDEM_BEGIN_REPLAY,
        [5] = IDEM_BEGIN_CLAIMED,  [6] = IDEM_BEGIN_MISMATCH,
        [7] = IDEM_BEGIN_MISMATCH, [8] = IDEM_BEGIN_IN_PROGRESS,
        [9] = IDEM_BEGIN_STALE,
    };
    fixture_t *f = *state;
    call_t bcalls[MIXED_N], scalls[MIXED_N];
    idem_op_t batch[MIXED_N], single[MIXED_N];
    idem_store_stats_t before, after;
    idem_result_t rb, rs;

    mixed_setup(f->store, 1, bcalls, batch);
    mixed_setup(f->store, 2, scalls, single);
    for (size_t i = 0; i < MIXED_N; i++) {
        batch[i].rc = 999;
        run_single(f->store, &single[i]);
    }
    idem_store_stats(f->store, &before);
    assert_int_equal(idem_store_batch(f->store, batch, MIXED_N), 0);
    idem_store_stats(f->store, &after);

    /* Six ops wrote (two claims, a complete, a release, a first mismatch,
       a stale record): one commit carried them all. */
    assert_true(after.commits - before.commits == 1);
    assert_true(after.batched_ops - before.batched_ops == 6);

    for (size_t i = 0; i < MIXED_N; i++) {
        idem_op_t *b = &batch[i], *s = &single[i];

        assert_int_equal(b->rc, want_rc[i]);
        assert_int_equal(s->rc, want_rc[i]);
        if (b->kind != IDEM_OP_BEGIN) {
            continue;
        }
        assert_int_equal(b->result.outcome, want_outcome[i]);
        assert_int_equal(s->result.outcome, want_outcome[i]);
        assert_int_equal(b->result.first_mismatch, s->result.first_mismatch);
        assert_int_equal(b->result.took_over, s->result.took_over);
        assert_int_equal(b->result.owner != 0, s->result.owner != 0);
        assert_true(b->result.owner == b->result.record.owner ||
                    b->result.outcome != IDEM_BEGIN_CLAIMED);
        assert_record_equal(&b->result.record, &s->result.record);
    }
    assert_int_equal(batch[6].result.first_mismatch, 1);
    assert_int_equal(batch[7].result.first_mismatch, 0);
    assert_true(batch[0].result.owner != batch[5].result.owner);
    free_ops(batch, MIXED_N);
    free_ops(single, MIXED_N);

    /* Both left the same records behind. */
    for (size_t i = 0; i < MIXED_N; i++) {
        int got_b = get(f->store, &bcalls[i], &rb);
        int got_s = get(f->store, &scalls[i], &rs);

        assert_int_equal(got_b, got_s);
        assert_int_equal(got_b, i == 4 || i == 11 ? IDEM_ENOTFOUND : 0);
        if (got_b == 0) {
            assert_record_equal(&rb.record, &rs.record);
            idem_result_free(&rb);
            idem_result_free(&rs);
        }
    }
}

static void test_batch_sees_its_own_earlier_ops(void **state)
{
    fixture_t *f = *state;
    call_t a = call("twice", 1, T0), c = call("done", 1, T0);
    call_t r = call("then-replay", 1, T0), x = call("then-anew", 1, T0);
    uint64_t oc, or_, ox;
    idem_op_t ops[2];
    idem_result_t res;

    /* begin, begin: the second finds the first's claim. */
    ops[0] = op_begin(&a);
    ops[1] = op_begin(&a);
    assert_int_equal(idem_store_batch(f->store, ops, 2), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[0].result.outcome, IDEM_BEGIN_CLAIMED);
    assert_int_equal(ops[1].rc, 0);
    assert_int_equal(ops[1].result.outcome, IDEM_BEGIN_IN_PROGRESS);
    assert_true(ops[1].result.record.owner == ops[0].result.owner);
    assert_int_equal(ops[1].result.owner, 0);
    free_ops(ops, 2);

    /* complete, complete of an earlier claim: the second is refused. */
    oc = claim(f->store, &c);
    ops[0] = op_complete(&c, oc, &created);
    ops[1] = op_complete(&c, oc, &server_error);
    assert_int_equal(idem_store_batch(f->store, ops, 2), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, IDEM_ENOTOWNER);
    res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
    assert_response_equal(&res.record.response, &created);
    idem_result_free(&res);

    /* complete, begin: the begin replays what the complete stored (a
       snapshot taken before the batch would still say in progress). */
    or_ = claim(f->store, &r);
    ops[0] = op_complete(&r, or_, &created);
    ops[1] = op_begin(&r);
    assert_int_equal(idem_store_batch(f->store, ops, 2), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, 0);
    assert_int_equal(ops[1].result.outcome, IDEM_BEGIN_REPLAY);
    assert_response_equal(&ops[1].result.record.response, &created);
    free_ops(ops, 2);

    /* release, begin: the key is claimed anew, by a new owner. */
    ox = claim(f->store, &x);
    ops[0] = op_release(&x, ox);
    ops[1] = op_begin(&x);
    assert_int_equal(idem_store_batch(f->store, ops, 2), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, 0);
    assert_int_equal(ops[1].result.outcome, IDEM_BEGIN_CLAIMED);
    assert_true(ops[1].result.owner != ox && ops[1].result.owner != 0);
    free_ops(ops, 2);

    /* An empty batch is fine and does nothing. */
    assert_int_equal(idem_store_batch(f->store, NULL, 0), 0);
    assert_int_equal(idem_store_batch(f->store, ops, 0), 0);
}

static void test_batch_bad_arguments_fail_alone(void **state)
{
    fixture_t *f = *state;
    call_t held = call("held", 1, T0), bad = call("bad", 1, T0);
    call_t a = call("a", 1, T0), c = call("c", 1, T0);
    char long_key[IDEM_KEY_MAX + 1], keys[2][16];
    idem_response_t bad_status = created;
    idem_op_t ops[3], copy;
    idem_result_t res;
    uint64_t owner = claim(f->store, &held);

    /* No store or no ops: the batch is refused and nothing runs. */
    ops[0] = op_begin(&a);
    ops[0].rc = 777;
    assert_int_equal(idem_store_batch(NULL, ops, 1), IDEM_EINVAL);
    assert_int_equal(ops[0].rc, 777);
    assert_int_equal(idem_store_batch(f->store, NULL, 1), IDEM_EINVAL);
    assert_int_equal(get(f->store, &a, &res), IDEM_ENOTFOUND);

    /* One bad op, in each way a single call refuses one, between two good
       ones: it gets IDEM_EINVAL (as its single call does), they run. */
    memset(long_key, 'a', sizeof(long_key));
    bad_status.status = 99;
    for (int round = 0; round < 9; round++) {
        snprintf(keys[0], sizeof(keys[0]), "a-%d", round);
        snprintf(keys[1], sizeof(keys[1]), "c-%d", round);
        a.key = keys[0];
        c.key = keys[1];
        ops[0] = op_begin(&a);
        ops[1] = op_begin(&bad);
        ops[2] = op_begin(&c);
        switch (round) {
        case 0:
            ops[1].begin.key_len = 0;
            break;
        case 1:
            ops[1].begin.key = long_key;
            ops[1].begin.key_len = sizeof(long_key);
            break;
        case 2:
            ops[1].begin.fingerprint = NULL;
            break;
        case 3:
            ops[1].begin.ttl_ms = 0;
            break;
        case 4:
            ops[1].begin.unknown_response = NULL;
            break;
        case 5:
            ops[1] = op_complete(&held, owner, NULL);
            break;
        case 6:
            ops[1] = op_complete(&held, owner, &bad_status);
            break;
        case 7:
            ops[1] = op_release(&held, owner);
            ops[1].scope = NULL;
            break;
        default:
            ops[1].kind = (idem_op_kind_t)99;
            break;
        }
        if (ops[1].kind != (idem_op_kind_t)99) {
            copy = ops[1];
            run_single(f->store, &copy);
            assert_int_equal(copy.rc, IDEM_EINVAL);
        }
        assert_int_equal(idem_store_batch(f->store, ops, 3), 0);
        assert_int_equal(ops[0].rc, 0);
        assert_int_equal(ops[0].result.outcome, IDEM_BEGIN_CLAIMED);
        assert_int_equal(ops[1].rc, IDEM_EINVAL);
        assert_null(ops[1].result.mem_);
        assert_int_equal(ops[2].rc, 0);
        assert_int_equal(ops[2].result.outcome, IDEM_BEGIN_CLAIMED);
        free_ops(ops, 3);
    }

    /* The bad ops changed nothing. */
    assert_int_equal(get(f->store, &bad, &res), IDEM_ENOTFOUND);
    assert_int_equal(get(f->store, &held, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == owner);
    idem_result_free(&res);
    assert_int_equal(complete(f->store, &held, owner, &created), 0);
}

#define BATCH_N 64

static void test_batch_of_64_is_one_commit(void **state)
{
    fixture_t *f = *state;
    call_t calls[BATCH_N];
    char keys[BATCH_N][16];
    idem_op_t ops[BATCH_N];
    idem_store_stats_t st;

    for (int i = 0; i < BATCH_N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "b-%d", i);
        calls[i] = call(keys[i], 1, T0);
        ops[i] = op_begin(&calls[i]);
    }
    assert_int_equal(idem_store_batch(f->store, ops, BATCH_N), 0);
    idem_store_stats(f->store, &st);
    assert_true(st.commits == 1);
    assert_true(st.batched_ops == BATCH_N);
    for (int i = 0; i < BATCH_N; i++) {
        assert_int_equal(ops[i].rc, 0);
        assert_int_equal(ops[i].result.outcome, IDEM_BEGIN_CLAIMED);
        for (int j = 0; j < i; j++) {
            assert_true(ops[i].result.owner != ops[j].result.owner);
        }
    }
    for (int i = 0; i < BATCH_N; i++) {
        uint64_t owner = ops[i].result.owner;

        idem_result_free(&ops[i].result);
        ops[i] = op_complete(&calls[i], owner, &created);
    }
    assert_int_equal(idem_store_batch(f->store, ops, BATCH_N), 0);
    idem_store_stats(f->store, &st);
    assert_true(st.commits == 2);
    assert_true(st.batched_ops == 2 * BATCH_N);

    /* Begins that only replay write nothing: no commit. */
    for (int i = 0; i < BATCH_N; i++) {
        assert_int_equal(ops[i].rc, 0);
        calls[i].now = T0 + 1;
        ops[i] = op_begin(&calls[i]);
    }
    assert_int_equal(idem_store_batch(f->store, ops, BATCH_N), 0);
    for (int i = 0; i < BATCH_N; i++) {
        assert_int_equal(ops[i].rc, 0);
        assert_int_equal(ops[i].result.outcome, IDEM_BEGIN_REPLAY);
        assert_response_equal(&ops[i].result.record.response, &created);
    }
    free_ops(ops, BATCH_N);
    idem_store_stats(f->store, &st);
    assert_true(st.commits == 2);
}

/* Each thread begins the same keys in one batch, in its own order, then
   completes those it claimed in another. */
static void *worker_batch_race(void *arg)
{
    worker_t *w = arg;
    call_t calls[NKEYS];
    char keys[NKEYS][16];
    idem_op_t ops[NKEYS];
    uint64_t owners[NKEYS];
    int claimed = 0;

    for (int i = 0; i < NKEYS; i++) {
        int k = (i + w->id * 5) % NKEYS;
        snprintf(keys[i], sizeof(keys[i]), "race-%d", k);
        calls[i] = call(keys[i], 1, T0);
        ops[i] = op_begin(&calls[i]);
    }
    pthread_barrier_wait(w->start);
    if (idem_store_batch(w->store, ops, NKEYS) != 0) {
        w->failures++;
        return NULL;
    }
    for (int i = 0; i < NKEYS; i++) {
        if (ops[i].rc != 0) {
            w->failures++;
        } else if (ops[i].result.outcome == IDEM_BEGIN_CLAIMED) {
            owners[claimed] = ops[i].result.owner;
            calls[claimed] = calls[i];
            claimed++;
        } else if (ops[i].result.outcome != IDEM_BEGIN_IN_PROGRESS &&
                   ops[i].result.outcome != IDEM_BEGIN_REPLAY) {
            w->failures++; /* the owner may have completed it already */
        }
    }
    free_ops(ops, NKEYS);
    w->outcome = claimed;
    /* Complete what it claimed, again in one batch. */
    for (int i = 0; i < claimed; i++) {
        ops[i] = op_complete(&calls[i], owners[i], w->resp);
    }
    if (idem_store_batch(w->store, ops, (size_t)claimed) != 0) {
        w->failures++;
    }
    for (int i = 0; i < claimed; i++) {
        w->failures += ops[i].rc != 0;
    }
    return NULL;
}

static void test_threads_race_with_batches(void **state)
{
    fixture_t *f = *state;
    worker_t w[NTHREADS];
    idem_result_t res;
    char key[16];
    int claimed = 0;

    memset(w, 0, sizeof(w));
    for (int i = 0; i < NTHREADS; i++) {
        w[i].store = f->store;
        w[i].resp = &created;
    }
    run_workers(w, NTHREADS, worker_batch_race);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(w[i].failures, 0);
        claimed += w[i].outcome;
    }
    /* Every key claimed exactly once, then completed by its owner. */
    assert_int_equal(claimed, NKEYS);
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof(key), "race-%d", k);
        call_t c = call(key, 1, T0 + 1);
        res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
        assert_response_equal(&res.record.response, &created);
        idem_result_free(&res);
    }
}

static void test_lmdb_batch_on_a_full_map(void **state)
{
    fixture_t *f = *state;
    idem_response_t big = created;
    call_t calls[4], fresh = call("fresh", 1, T0);
    char keys[4][8], key[32];
    uint64_t owners[4];
    idem_op_t ops[5];
    idem_result_t res;
    uint8_t *body;
    size_t removed;
    int n, rc = 0, more;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=131072");
    body = calloc(1, 1 << 20);
    assert_non_null(body);
    big.body = body;
    big.body_len = 1 << 20;

    /* One op too big for the map: it alone fails, the others stand. */
    for (int i = 0; i < 4; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        calls[i] = call(keys[i], 1, T0);
        owners[i] = claim(f->store, &calls[i]);
    }
    ops[0] = op_complete(&calls[0], owners[0], &created);
    ops[1] = op_complete(&calls[1], owners[1], &big);
    ops[2] = op_begin(&fresh);
    ops[3] = op_complete(&calls[2], owners[2], &created);
    ops[4] = op_release(&calls[3], owners[3]);
    assert_int_equal(idem_store_batch(f->store, ops, 5), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, IDEM_EFULL);
    assert_int_equal(ops[2].rc, 0);
    assert_int_equal(ops[2].result.outcome, IDEM_BEGIN_CLAIMED);
    assert_int_equal(ops[3].rc, 0);
    assert_int_equal(ops[4].rc, 0);
    free_ops(ops, 5);
    free(body);

    assert_int_equal(get(f->store, &calls[1], &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == owners[1]);
    idem_result_free(&res);
    for (int i = 0; i < 3; i += 2) {
        res = expect_begin(f->store, &calls[i], IDEM_BEGIN_REPLAY);
        assert_response_equal(&res.record.response, &created);
        idem_result_free(&res);
    }
    res = expect_begin(f->store, &fresh, IDEM_BEGIN_IN_PROGRESS);
    idem_result_free(&res);
    assert_int_equal(get(f->store, &calls[3], &res), IDEM_ENOTFOUND);
    /* The index holds exactly the four records left. */
    assert_int_equal(
        idem_store_prune(f->store, INT64_MAX, 1000, &removed, &more), 0);
    assert_int_equal(removed, 4);
    assert_int_equal(more, 0);

    /* A full map: what needs room fails, what only reads still works. */
    for (n = 0; n < 100000; n++) {
        snprintf(key, sizeof(key), "fill-%06d", n);
        call_t c = call(key, 1, T0);
        rc = begin(f->store, &c, &res);
        if (rc != 0) {
            break;
        }
        idem_result_free(&res);
    }
    assert_int_equal(rc, IDEM_EFULL);
    /* The claim that did not fit, again, among ops that need no room. */
    calls[0] = call(key, 1, T0 + 1);
    calls[1] = call("fill-000000", 1, T0 + 1);
    ops[0] = op_begin(&calls[0]);
    ops[1] = op_begin(&calls[1]);
    ops[2] = op_release(&calls[1], 12345);
    ops[3] = op_begin(&calls[0]);
    assert_int_equal(idem_store_batch(f->store, ops, 4), 0);
    assert_int_equal(ops[0].rc, IDEM_EFULL);
    assert_null(ops[0].result.mem_);
    assert_int_equal(ops[1].rc, 0);
    assert_int_equal(ops[1].result.outcome, IDEM_BEGIN_IN_PROGRESS);
    assert_int_equal(ops[2].rc, IDEM_ENOTOWNER);
    assert_int_equal(ops[3].rc, IDEM_EFULL);
    free_ops(ops, 4);
    assert_int_equal(get(f->store, &calls[0], &res), IDEM_ENOTFOUND);

    /* With room again, the index holds exactly the claims that fit. */
    idem_store_close(f->store);
    f->store = open_store(f, "small", "map_size=4194304");
    assert_int_equal(
        idem_store_prune(f->store, INT64_MAX, 1000000, &removed, &more), 0);
    assert_int_equal(removed, (size_t)n);
    assert_int_equal(more, 0);
}

#define DURABLE_N 8

/* Child: claims DURABLE_N + 1 keys in one batch, completes all but the
   last in another, then dies without closing. */
static int child_batch(const fixture_t *f, const char *arg)
{
    idem_store_t *s = child_open(f);
    call_t calls[DURABLE_N + 1];
    char keys[DURABLE_N + 1][16];
    idem_op_t ops[DURABLE_N + 1];
    uint64_t owner;

    (void)arg;
    if (s == NULL) {
        return 1;
    }
    for (int i = 0; i <= DURABLE_N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "kb-%d", i);
        calls[i] = call(keys[i], 1, T0);
        ops[i] = op_begin(&calls[i]);
    }
    if (idem_store_batch(s, ops, DURABLE_N + 1) != 0) {
        return 2;
    }
    for (int i = 0; i <= DURABLE_N; i++) {
        if (ops[i].rc != 0 || ops[i].result.outcome != IDEM_BEGIN_CLAIMED) {
            return 3;
        }
        owner = ops[i].result.owner;
        idem_result_free(&ops[i].result);
        ops[i] = op_complete(&calls[i], owner, &created);
    }
    if (idem_store_batch(s, ops, DURABLE_N) != 0) {
        return 4;
    }
    for (int i = 0; i < DURABLE_N; i++) {
        if (ops[i].rc != 0) {
            return 5;
        }
    }
    return 0;
}

static void test_batch_survives_a_killed_process(void **state)
{
    fixture_t *f = *state;
    idem_result_t res;
    char key[16];

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_SHARED,
                    "the store keeps nothing beyond its handle");
    assert_int_equal(finish_child(start_child(f, "batch", NULL)), 0);

    idem_store_close(f->store);
    f->store = open_store(f, "env", NULL);
    for (int i = 0; i <= DURABLE_N; i++) {
        snprintf(key, sizeof(key), "kb-%d", i);
        call_t c = call(key, 1, T0 + 1);
        res = expect_begin(f->store, &c,
                           i < DURABLE_N ? IDEM_BEGIN_REPLAY
                                         : IDEM_BEGIN_IN_PROGRESS);
        if (i < DURABLE_N) {
            assert_response_equal(&res.record.response, &created);
        }
        idem_result_free(&res);
    }
}

/* ------------------------------------------------------------------------ */
/* A full map: claims are refused, everything else still works               */
/* ------------------------------------------------------------------------ */

#define FULL_MAP      "map_size=262144"
#define FULL_TTL      1000LL
#define FULL_LEASE    500LL
#define FULL_INFLIGHT 4
#define FULL_KEYS     1000

/* A map that claims have filled: the keys written, and the claims still
   in progress (the last FULL_INFLIGHT claimed, in order). */
typedef struct {
    char keys[FULL_KEYS][24];
    call_t calls[FULL_KEYS];
    uint64_t owners[FULL_KEYS];
    int n;       /* keys claimed; key n was refused */
    int settled; /* keys [0, settled) are complete */
} full_t;

/* A response whose body is n bytes of body_bytes (n <= its size). */
static uint8_t body_bytes[1 << 20];

static idem_response_t response_of(size_t n)
{
    idem_response_t r = created;

    assert_true(n <= sizeof(body_bytes));
    memset(body_bytes, 'b', sizeof(body_bytes));
    r.body = body_bytes;
    r.body_len = n;
    return r;
}

/*
 * Opens a FULL_MAP store in place of the fixture's and claims keys with a
 * short TTL until a claim is refused, completing each claim (with a
 * response of 3 KiB, so that the map fills quickly) once FULL_INFLIGHT
 * newer ones are in progress — the way a busy server has requests in
 * flight when its store fills up.
 */
static void fill_map(fixture_t *f, full_t *m)
{
    idem_response_t medium = response_of(3000);
    idem_result_t res;
    int rc = 0;

    idem_store_close(f->store);
    f->store = open_store(f, "full", FULL_MAP);
    memset(m, 0, sizeof(*m));
    for (m->n = 0; m->n < FULL_KEYS; m->n++) {
        int i = m->n;

        snprintf(m->keys[i], sizeof(m->keys[i]), "full-%04d", i);
        m->calls[i] = call(m->keys[i], 1, T0);
        m->calls[i].ttl = FULL_TTL;
        m->calls[i].lease = FULL_LEASE;
        rc = begin(f->store, &m->calls[i], &res);
        if (rc != 0) {
            break;
        }
        assert_int_equal(res.outcome, IDEM_BEGIN_CLAIMED);
        m->owners[i] = res.owner;
        idem_result_free(&res);
        if (i >= FULL_INFLIGHT) {
            int k = m->settled++;
            assert_int_equal(
                complete(f->store, &m->calls[k], m->owners[k], &medium), 0);
        }
    }
    assert_int_equal(rc, IDEM_EFULL);
    assert_int_equal(m->settled, m->n - FULL_INFLIGHT);
    assert_true(m->n > 2 * FULL_INFLIGHT);
    print_message("    %d records fill 256 KiB\n", m->n);
    /* The refused claim left nothing. */
    assert_int_equal(get(f->store, &m->calls[m->n], &res), IDEM_ENOTFOUND);
}

/* Reopens the store with room to spare and prunes everything: the expiry
   index must hold exactly one entry per record, want of them. */
static void assert_index_holds(fixture_t *f, size_t want)
{
    size_t removed;
    int more;

    idem_store_close(f->store);
    f->store = open_store(f, "full", "map_size=4194304");
    assert_int_equal(
        idem_store_prune(f->store, INT64_MAX, 1000000, &removed, &more), 0);
    assert_int_equal(removed, want);
    assert_int_equal(more, 0);
}

static void test_lmdb_full_map_settles_claims_and_comes_back(void **state)
{
    fixture_t *f = *state;
    full_t *m;
    idem_response_t small = response_of(2048), big = response_of(1 << 20);
    idem_result_t res;
    size_t removed;
    int more, last;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    m = malloc(sizeof(*m));
    assert_non_null(m);
    fill_map(f, m);
    last = m->n - 1;

    /* New claims stay refused, whoever asks. */
    call_t c = call("full-new", 1, T0 + 1);
    assert_int_equal(begin(f->store, &c, &res), IDEM_EFULL);
    assert_int_equal(get(f->store, &c, &res), IDEM_ENOTFOUND);
    /* So is taking over a stale claim: it would be a new claim. */
    c = m->calls[last];
    c.now = T0 + FULL_LEASE + 1;
    c.policy = IDEM_ON_UNKNOWN_RELEASE;
    assert_int_equal(begin(f->store, &c, &res), IDEM_EFULL);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == m->owners[last]);
    idem_result_free(&res);

    /* A response too large even for the reserve: refused, nothing
       changed; the small error response that follows fits. */
    c = m->calls[m->settled];
    assert_int_equal(complete(f->store, &c, m->owners[m->settled], &big),
                     IDEM_EFULL);
    assert_int_equal(get(f->store, &c, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == m->owners[m->settled]);
    idem_result_free(&res);

    /* The claims in flight are settled from the reserve: completes with
       small responses, and the stale one under the store policy. */
    for (; m->settled < last; m->settled++) {
        c = m->calls[m->settled];
        assert_int_equal(complete(f->store, &c, m->owners[m->settled], &small),
                         0);
        res = expect_begin(f->store, &c, IDEM_BEGIN_REPLAY);
        assert_response_equal(&res.record.response, &small);
        idem_result_free(&res);
    }
    c = m->calls[last];
    c.now = T0 + FULL_LEASE + 1;
    res = expect_begin(f->store, &c, IDEM_BEGIN_STALE);
    assert_response_equal(&res.record.response, &unknown);
    idem_result_free(&res);
    /* The first mismatch is still flagged (and API-logged once). */
    c = call(m->keys[0], 2, T0 + 1);
    res = expect_begin(f->store, &c, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 1);
    idem_result_free(&res);
    res = expect_begin(f->store, &c, IDEM_BEGIN_MISMATCH);
    assert_int_equal(res.first_mismatch, 0);
    idem_result_free(&res);

    /* Deleting works, and again and again. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(del(f->store, &m->calls[i]), 0);
        assert_int_equal(get(f->store, &m->calls[i], &res), IDEM_ENOTFOUND);
    }

    /* Once everything has expired, prune removes it all... */
    assert_int_equal(
        idem_store_prune(f->store, T0 + FULL_TTL, 1000000, &removed, &more), 0);
    assert_int_equal(removed, (size_t)(m->n - 3));
    assert_int_equal(more, 0);
    /* ...and the store takes claims again, as many as before. */
    for (int i = 0; i < m->n - FULL_INFLIGHT; i++) {
        c = m->calls[i];
        c.now = T0 + FULL_TTL + 1;
        uint64_t owner = claim(f->store, &c);
        idem_response_t medium = response_of(3000);
        assert_int_equal(complete(f->store, &c, owner, &medium), 0);
    }
    free(m);
}

static void test_lmdb_full_map_batch_leaves_nothing_half_written(void **state)
{
    fixture_t *f = *state;
    full_t *m;
    idem_response_t small = response_of(2048), big = response_of(1 << 20);
    call_t fresh[2] = {call("fresh-0", 1, T0 + 1), call("fresh-1", 1, T0 + 1)};
    idem_result_t res;
    idem_op_t ops[6];
    int k;

    SKIP_UNLESS_CAP(f, IDEM_STORE_CAP_BOUNDED,
                    "only a bounded store has a map size");
    m = malloc(sizeof(*m));
    assert_non_null(m);
    fill_map(f, m);
    k = m->settled; /* k .. k + 3 are in progress */

    ops[0] = op_complete(&m->calls[k], m->owners[k], &small);
    ops[1] = op_begin(&fresh[0]);
    ops[2] = op_complete(&m->calls[k + 1], m->owners[k + 1], &big);
    ops[3] = op_release(&m->calls[k + 2], m->owners[k + 2]);
    ops[4] = op_begin(&fresh[1]);
    ops[5] = op_complete(&m->calls[k + 3], m->owners[k + 3], &small);
    assert_int_equal(idem_store_batch(f->store, ops, 6), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[1].rc, IDEM_EFULL);
    assert_null(ops[1].result.mem_);
    assert_int_equal(ops[2].rc, IDEM_EFULL);
    assert_int_equal(ops[3].rc, 0);
    assert_int_equal(ops[4].rc, IDEM_EFULL);
    assert_int_equal(ops[5].rc, 0);
    free_ops(ops, 6);

    /* Each record is as its op left it. */
    for (int i = 0; i < 4; i += 3) {
        res = expect_begin(f->store, &m->calls[k + i], IDEM_BEGIN_REPLAY);
        assert_response_equal(&res.record.response, &small);
        idem_result_free(&res);
    }
    assert_int_equal(get(f->store, &m->calls[k + 1], &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    assert_true(res.record.owner == m->owners[k + 1]);
    idem_result_free(&res);
    assert_int_equal(get(f->store, &m->calls[k + 2], &res), IDEM_ENOTFOUND);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(get(f->store, &fresh[i], &res), IDEM_ENOTFOUND);
    }
    /* The index holds exactly the records left: all but the released. */
    assert_index_holds(f, (size_t)(m->n - 1));
    free(m);
}

/* The child side of start_child(): argv is NAME DIR ARG FD. */
static int child_main(char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(const fixture_t *f, const char *arg);
    } children[] = {
        {"claim_and_complete", child_claim_and_complete},
        {"share", child_share},
        {"race", child_race},
        {"without_permission", child_without_permission},
        {"batch", child_batch},
    };
    fixture_t f;
    int v = -1, fd = atoi(argv[3]);

    memset(&f, 0, sizeof(f));
    snprintf(f.dir, sizeof(f.dir), "%s", argv[1]);
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++) {
        if (strcmp(argv[0], children[i].name) == 0) {
            v = children[i].fn(&f, argv[2]);
        }
    }
    if (write(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
        return 2;
    }
    kill(getpid(), SIGKILL);
    return 3;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_open_rejects_bad_urls),
        T(test_open_names_its_backend),
        T(test_invalid_arguments_are_refused),
        T(test_begin_claims_a_new_key),
        T(test_begin_gives_every_claim_its_own_owner),
        T(test_begin_replays_a_complete_key),
        T(test_begin_mismatch_first_then_again),
        T(test_begin_mismatch_on_in_progress_keeps_the_claim),
        T(test_begin_in_progress_same_fingerprint),
        T(test_begin_stale_under_store_policy),
        T(test_begin_makes_the_unknown_answer_only_when_needed),
        T(test_begin_stale_under_release_policy),
        T(test_expired_key_is_absent_and_claims_anew),
        T(test_in_progress_never_expires_while_leased),
        T(test_complete_by_non_owner_is_refused),
        T(test_complete_twice_is_refused),
        T(test_complete_of_an_absent_key_is_refused),
        T(test_complete_ors_flags_and_keeps_times),
        T(test_complete_too_big_changes_nothing),
        T(test_release_by_owner_only_then_claim_anew),
        T(test_lookup_reads_without_changing),
        T(test_get_and_delete),
        T(test_prune_removes_expired_within_budget),
        T(test_prune_follows_rewrites),
        T(test_scopes_are_isolated),
        T(test_threads_race_for_one_key),
        T(test_threads_claim_and_complete_many_keys),
        T(test_stats_count_commits),
        T(test_complete_survives_a_killed_process),
        T(test_claim_survives_reopen),
        T(test_two_processes_share_one_store),
        T(test_two_processes_race_for_the_same_keys),
        T(test_lmdb_without_group_commit),
        T(test_url_check_takes_sizes_and_says_what_is_wrong),
        T(test_postgres_url_check_says_what_is_wrong),
        T(test_redis_url_check_says_what_is_wrong),
        T(test_unreachable_store_opens_and_fails_closed),
        T(test_store_clock_rules_leases_and_ttls),
        T(test_lmdb_map_size_takes_a_suffix),
        T(test_usage_counts_records_and_bytes),
        T(test_lmdb_default_map_holds_a_day_at_1000_new_keys_a_second),
        T(test_check_notices_a_removed_or_replaced_directory),
        T(test_lmdb_map_full_is_clean),
        T(test_lmdb_map_full_claims_leave_nothing),
        T(test_lmdb_one_failing_write_does_not_fail_its_batch),
        T(test_lmdb_unwritable_directory_is_eperm),
        T(test_lmdb_corrupt_record_is_ecorrupt),
        T(test_large_response_round_trips),
        T(test_batch_equals_single_calls),
        T(test_batch_sees_its_own_earlier_ops),
        T(test_batch_bad_arguments_fail_alone),
        T(test_batch_of_64_is_one_commit),
        T(test_threads_race_with_batches),
        T(test_lmdb_batch_on_a_full_map),
        T(test_batch_survives_a_killed_process),
        T(test_lmdb_full_map_settles_claims_and_comes_back),
        T(test_lmdb_full_map_batch_leaves_nothing_half_written),
#undef T
    };

    program = argv[0];
    if (argc == 6 && strcmp(argv[1], "--child") == 0) {
        return child_main(argv + 2);
    }

    printf("store contract suite: backend %s\n", IDEM_TEST_BACKEND);
    fflush(stdout);
    return cmocka_run_group_tests_name(
        "store contract: backend " IDEM_TEST_BACKEND, tests, NULL, NULL);
}
