/*
 * redis_failures.c — what the Redis store does when the server is set up
 * against it, beyond the contract suite: an evicting maxmemory-policy is
 * refused at open and closes an open handle until it is noeviction again;
 * a password is asked for and checked, and /DB keeps databases apart; a
 * server out of memory refuses claims but still takes releases.
 *
 * Runs beside a throwaway redis-server (tests/servers/redis.sh), which
 * names it in IDEM_TEST_REDIS_URL and IDEM_TEST_REDIS_PORT; the tests
 * change its configuration with redis-cli and put it back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idem.h"

#define T0    1700000000000LL
#define TTL   86400000LL
#define LEASE 60000LL

static const uint8_t body[] = "{\"id\":1}";
static const idem_response_t created = {201, NULL, 0, body, sizeof(body) - 1};
static const idem_response_t unknown = {504, NULL, 0, NULL, 0};

static const char *env(const char *name)
{
    const char *v = getenv(name);

    if (v == NULL || *v == '\0') {
        fail_msg("%s is not set: run this beside tests/servers/redis.sh", name);
    }
    return v;
}

/* Runs redis-cli ARGS against the test server; 0 on success. */
static int redis_cli(const char *args)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "redis-cli -h 127.0.0.1 -p %s %s >/dev/null",
             env("IDEM_TEST_REDIS_PORT"), args);
    return system(cmd);
}

/* The server's URL with auth (may be ""), /db and options. */
static void url_of(char *out, size_t cap, const char *auth, const char *db,
                   const char *opts)
{
    const char *base = env("IDEM_TEST_REDIS_URL") + strlen("redis://");

    snprintf(out, cap, "redis://%s%s%s?prefix=fail%ld:%s", auth, base, db,
             (long)getpid(), opts);
}

static idem_hash_t scope(void)
{
    idem_hash_t h;

    memset(h.bytes, 0x42, sizeof(h.bytes));
    return h;
}

static int begin(idem_store_t *s, const char *key, idem_result_t *res)
{
    idem_hash_t sc = scope(), fp = scope();
    idem_begin_t in;

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

    memset(res, 0, sizeof(*res));
    return idem_store_begin(s, &in, res);
}

/* Claims key; returns the owner. */
static uint64_t claim(idem_store_t *s, const char *key)
{
    idem_result_t res;
    uint64_t owner;

    assert_int_equal(begin(s, key, &res), 0);
    assert_int_equal(res.outcome, IDEM_BEGIN_CLAIMED);
    owner = res.owner;
    idem_result_free(&res);
    return owner;
}

static int complete(idem_store_t *s, const char *key, uint64_t owner)
{
    idem_hash_t sc = scope();

    return idem_store_complete(s, &sc, key, strlen(key), owner, &created, 0);
}

static int release(idem_store_t *s, const char *key, uint64_t owner)
{
    idem_hash_t sc = scope();

    return idem_store_release(s, &sc, key, strlen(key), owner);
}

static int get(idem_store_t *s, const char *key, idem_result_t *res)
{
    idem_hash_t sc = scope();

    memset(res, 0, sizeof(*res));
    return idem_store_get(s, &sc, key, strlen(key), res);
}

/*
 * An evicting maxmemory-policy could forget a key before its TTL: open
 * refuses it (IDEM_EEVICTION, whose message names the setting) unless
 * allow_eviction=1; a handle opened before stops serving when its check
 * finds the policy changed, and serves again once it is noeviction.
 */
static void test_evicting_policy_is_refused(void **state)
{
    idem_store_t *s = NULL, *open_before = NULL, *allowed = NULL;
    idem_result_t res;
    char url[512], why[512];

    (void)state;
    url_of(url, sizeof(url), "", "", "evict:&clock=caller");
    assert_int_equal(idem_store_open(url, &open_before), 0);
    assert_int_equal(redis_cli("config set maxmemory-policy allkeys-lru"), 0);

    assert_int_equal(idem_store_open(url, &s), IDEM_EEVICTION);
    assert_null(s);
    assert_non_null(strstr(idem_strerror(IDEM_EEVICTION), "maxmemory-policy"));
    url_of(url, sizeof(url), "", "", "evict:&clock=caller&allow_eviction=1");
    assert_int_equal(idem_store_open(url, &allowed), 0);
    assert_int_equal(idem_store_check(allowed, why, sizeof(why)), 0);
    idem_store_close(allowed);

    assert_int_equal(idem_store_check(open_before, why, sizeof(why)),
                     IDEM_EUNAVAIL);
    if (strstr(why, "maxmemory-policy allkeys-lru") == NULL) {
        fail_msg("check says \"%s\"", why);
    }
    assert_int_equal(begin(open_before, "k", &res), IDEM_EUNAVAIL);

    assert_int_equal(redis_cli("config set maxmemory-policy noeviction"), 0);
    usleep(1100 * 1000); /* the longest backoff */
    assert_int_equal(idem_store_check(open_before, why, sizeof(why)), 0);
    (void)claim(open_before, "k");
    idem_store_close(open_before);
}

/*
 * A server with a password refuses a URL without it, or with a wrong one
 * (IDEM_EPERM at open), and serves one with it (%-escaped); /DB keeps one
 * database's keys apart from another's under the same prefix.
 */
static void test_password_and_database(void **state)
{
    idem_store_t *s = NULL, *other = NULL;
    idem_result_t res;
    char url[512];

    (void)state;
    assert_int_equal(redis_cli("config set requirepass 's3cr%t'"), 0);
    url_of(url, sizeof(url), "", "", "auth:");
    assert_int_equal(idem_store_open(url, &s), IDEM_EPERM);
    url_of(url, sizeof(url), ":wrong@", "", "auth:");
    assert_int_equal(idem_store_open(url, &s), IDEM_EPERM);
    url_of(url, sizeof(url), ":s3cr%25t@", "/3", "auth:&clock=caller");
    assert_int_equal(idem_store_open(url, &s), 0);
    assert_int_equal(complete(s, "k", claim(s, "k")), 0);
    url_of(url, sizeof(url), ":s3cr%25t@", "/0", "auth:&clock=caller");
    assert_int_equal(idem_store_open(url, &other), 0);
    assert_int_equal(get(other, "k", &res), IDEM_ENOTFOUND);
    assert_int_equal(get(s, "k", &res), 0);
    idem_result_free(&res);
    idem_store_close(other);
    idem_store_close(s);
    assert_int_equal(
        redis_cli("-a 's3cr%t' --no-auth-warning config set requirepass ''"),
        0);
}

/*
 * A server out of memory (maxmemory reached, noeviction) refuses writes:
 * a claim gets IDEM_EFULL and changes nothing, while a release, which only
 * frees, still goes through; below the limit again, claims work.
 */
static void test_out_of_memory_is_efull(void **state)
{
    idem_store_t *s = NULL;
    idem_result_t res;
    char url[512];
    uint64_t owner;

    (void)state;
    url_of(url, sizeof(url), "", "", "oom:&clock=caller");
    assert_int_equal(idem_store_open(url, &s), 0);
    owner = claim(s, "held");
    assert_int_equal(redis_cli("config set maxmemory 1"), 0);
    assert_int_equal(begin(s, "fresh", &res), IDEM_EFULL);
    assert_int_equal(get(s, "fresh", &res), IDEM_ENOTFOUND);
    assert_int_equal(release(s, "held", owner), 0);
    assert_int_equal(redis_cli("config set maxmemory 0"), 0);
    (void)claim(s, "fresh");
    (void)claim(s, "held");
    idem_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evicting_policy_is_refused),
        cmocka_unit_test(test_password_and_database),
        cmocka_unit_test(test_out_of_memory_is_efull),
    };

    return cmocka_run_group_tests_name("redis store failures", tests, NULL,
                                       NULL);
}
