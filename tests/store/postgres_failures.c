/*
 * postgres_failures.c — what the PostgreSQL store does when the server
 * misbehaves under it, beyond the contract suite: one op of a batch that
 * the server refuses fails alone, and connections cut by the server (a
 * restart, an administrator) are made again without failing the call.
 *
 * Runs beside a throwaway cluster (tests/servers/postgres.sh), which names
 * it in IDEM_TEST_PG_URL; the tests reach behind the store with libpq of
 * their own to install a trigger or terminate sessions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idem.h"

#define TTL   86400000LL
#define LEASE 60000LL

static const char *pg_url(void)
{
    const char *u = getenv("IDEM_TEST_PG_URL");

    if (u == NULL || *u == '\0') {
        fail_msg("IDEM_TEST_PG_URL is not set: run this beside "
                 "tests/servers/postgres.sh");
    }
    return u;
}

/* Runs sql on a connection of the test's own. */
static void sql(const char *statement)
{
    PGconn *c = PQconnectdb(pg_url());
    PGresult *r;

    assert_int_equal(PQstatus(c), CONNECTION_OK);
    r = PQexec(c, statement);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", statement, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
}

static idem_store_t *open_table(const char *table)
{
    char url[512];
    idem_store_t *s = NULL;

    snprintf(url, sizeof(url), "%s?table=%s&pool=2", pg_url(), table);
    assert_int_equal(idem_store_open(url, &s), 0);
    return s;
}

static const idem_header_t headers[] = {
    {{"Content-Type", 12}, {"application/json", 16}},
};
static const idem_response_t created = {201, headers, 1,
                                        (const uint8_t *)"{\"id\":1}", 8};

static idem_hash_t scope, fp;

static idem_op_t op_begin(const char *key)
{
    idem_op_t op;

    memset(&op, 0, sizeof(op));
    op.kind = IDEM_OP_BEGIN;
    op.begin.scope = &scope;
    op.begin.key = key;
    op.begin.key_len = strlen(key);
    op.begin.fingerprint = &fp;
    op.begin.now_ms = 0;
    op.begin.ttl_ms = TTL;
    op.begin.lease_ms = LEASE;
    op.begin.on_unknown = IDEM_ON_UNKNOWN_RELEASE;
    return op;
}

static int begin_outcome(idem_store_t *s, const char *key)
{
    idem_op_t op = op_begin(key);
    int rc;

    assert_int_equal(idem_store_batch(s, &op, 1), 0);
    rc = op.rc == 0 ? (int)op.result.outcome : op.rc;
    idem_result_free(&op.result);
    return rc;
}

/* A row the server refuses fails its own op; the batch's others commit. */
static void test_a_refused_op_fails_alone(void **state)
{
    idem_store_t *s = open_table("refused");
    idem_op_t ops[3] = {op_begin("a"), op_begin("poison"), op_begin("b")};

    (void)state;
    /* the table exists once the store has used it */
    assert_int_equal(begin_outcome(s, "first"), IDEM_BEGIN_CLAIMED);
    sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'refused by a test'; END$$");
    sql("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON refused_v1 "
        "FOR EACH ROW WHEN (NEW.key = 'poison'::bytea) "
        "EXECUTE FUNCTION refuse()");

    assert_int_equal(idem_store_batch(s, ops, 3), 0);
    assert_int_equal(ops[0].rc, 0);
    assert_int_equal(ops[0].result.outcome, IDEM_BEGIN_CLAIMED);
    assert_int_equal(ops[1].rc, IDEM_EIO);
    assert_int_equal(ops[2].rc, 0);
    assert_int_equal(ops[2].result.outcome, IDEM_BEGIN_CLAIMED);
    assert_int_equal(idem_store_complete(s, &scope, "a", 1, ops[0].result.owner,
                                         &created, 0),
                     0);
    for (int i = 0; i < 3; i++) {
        idem_result_free(&ops[i].result);
    }
    /* what committed is there, the refused key is not */
    assert_int_equal(begin_outcome(s, "a"), IDEM_BEGIN_REPLAY);
    assert_int_equal(begin_outcome(s, "b"), IDEM_BEGIN_IN_PROGRESS);
    sql("DROP TRIGGER refuse ON refused_v1");
    assert_int_equal(begin_outcome(s, "poison"), IDEM_BEGIN_CLAIMED);
    idem_store_close(s);
}

/* Sessions the server ends (a restart, pg_terminate_backend) are made
 * again on the next call, which succeeds. */
static void test_cut_connections_are_made_again(void **state)
{
    idem_store_t *s = open_table("cut");
    char why[256];
    idem_result_t res;

    (void)state;
    assert_int_equal(begin_outcome(s, "k1"), IDEM_BEGIN_CLAIMED);
    assert_int_equal(idem_store_check(s, why, sizeof(why)), 0);
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'idemgate'");
    assert_int_equal(begin_outcome(s, "k2"), IDEM_BEGIN_CLAIMED);
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'idemgate'");
    assert_int_equal(idem_store_check(s, why, sizeof(why)), 0);
    sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'idemgate'");
    assert_int_equal(idem_store_get(s, &scope, "k1", 2, &res), 0);
    assert_int_equal(res.record.state, IDEM_STATE_IN_PROGRESS);
    idem_result_free(&res);
    idem_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_refused_op_fails_alone),
        cmocka_unit_test(test_cut_connections_are_made_again),
    };

    memset(scope.bytes, 0x5c, sizeof(scope.bytes));
    memset(fp.bytes, 0x42, sizeof(fp.bytes));
    return cmocka_run_group_tests_name("postgres store failures", tests, NULL,
                                       NULL);
}
