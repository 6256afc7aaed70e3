/*
 * test_record.c — the record codec (round trips, limits, corrupt and
 * truncated input) and the decision table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idem.h"

#define S(lit)                                                                 \
    {                                                                          \
        lit, sizeof(lit) - 1                                                   \
    }

static const idem_header_t sample_headers[] = {
    {S("Content-Type"), S("application/json")},
    {S("Date"), S("Sat, 28 Nov 2026 04:44:27 GMT")},
    {S("X-Empty"), {NULL, 0}},
};

static const uint8_t sample_body[] = "{\"data\":{\"id\":\"inq_1\"}}";

static void sample_record(idem_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->state = IDEM_STATE_COMPLETE;
    rec->flags = IDEM_REC_MISMATCH_LOGGED;
    memset(rec->fingerprint.bytes, 0xab, IDEM_HASH_LEN);
    rec->created_ms = 1700000000000;
    rec->expires_ms = 1700086400000;
    rec->owner = 0x1122334455667788ull;
    rec->lease_until_ms = 1700000070000;
    rec->response.status = 201;
    rec->response.headers = sample_headers;
    rec->response.nheaders = 3;
    rec->response.body = sample_body;
    rec->response.body_len = sizeof(sample_body) - 1;
}

static uint8_t *encode(const idem_record_t *rec, size_t *len)
{
    size_t n = idem_record_encoded_size(rec);
    uint8_t *buf;

    assert_true(n > 0);
    buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(idem_record_encode(rec, buf, n, len), 0);
    assert_int_equal(*len, n);
    return buf;
}

static void test_record_round_trip_keeps_every_field(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs;
    size_t len;
    uint8_t *buf;

    (void)state;
    sample_record(&rec);
    buf = encode(&rec, &len);
    assert_int_equal(idem_record_decode(buf, len, &out, &hdrs), 0);

    assert_int_equal(out.state, rec.state);
    assert_int_equal(out.flags, rec.flags);
    assert_memory_equal(out.fingerprint.bytes, rec.fingerprint.bytes,
                        IDEM_HASH_LEN);
    assert_true(out.created_ms == rec.created_ms);
    assert_true(out.expires_ms == rec.expires_ms);
    assert_true(out.owner == rec.owner);
    assert_true(out.lease_until_ms == rec.lease_until_ms);
    assert_int_equal(out.response.status, 201);
    assert_int_equal(out.response.nheaders, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(out.response.headers[i].name.len,
                         sample_headers[i].name.len);
        assert_memory_equal(out.response.headers[i].name.data,
                            sample_headers[i].name.data,
                            sample_headers[i].name.len);
        assert_int_equal(out.response.headers[i].value.len,
                         sample_headers[i].value.len);
        if (sample_headers[i].value.len) {
            assert_memory_equal(out.response.headers[i].value.data,
                                sample_headers[i].value.data,
                                sample_headers[i].value.len);
        }
    }
    assert_int_equal(out.response.body_len, rec.response.body_len);
    assert_memory_equal(out.response.body, sample_body, rec.response.body_len);
    free(hdrs);
    free(buf);
}

static void test_record_round_trip_in_progress_without_response(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs = (idem_header_t *)1;
    size_t len;
    uint8_t *buf;

    (void)state;
    memset(&rec, 0, sizeof(rec));
    rec.state = IDEM_STATE_IN_PROGRESS;
    rec.owner = 7;
    buf = encode(&rec, &len);
    assert_int_equal(idem_record_decode(buf, len, &out, &hdrs), 0);
    assert_int_equal(out.state, IDEM_STATE_IN_PROGRESS);
    assert_null(hdrs);
    assert_null(out.response.body);
    assert_int_equal(out.response.body_len, 0);
    free(buf);
}

static void test_record_round_trip_large_body(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs;
    size_t len, n = 8u << 20;
    uint8_t *body = malloc(n), *buf;

    (void)state;
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[i] = (uint8_t)(i * 31);
    }
    sample_record(&rec);
    rec.response.body = body;
    rec.response.body_len = n;
    buf = encode(&rec, &len);
    assert_int_equal(idem_record_decode(buf, len, &out, &hdrs), 0);
    assert_int_equal(out.response.body_len, n);
    assert_memory_equal(out.response.body, body, n);
    free(hdrs);
    free(buf);
    free(body);
}

static void test_record_every_truncation_is_corrupt(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs;
    size_t len;
    uint8_t *buf;

    (void)state;
    sample_record(&rec);
    buf = encode(&rec, &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, buf, cut);
        assert_int_equal(idem_record_decode(copy, cut, &out, &hdrs),
                         IDEM_ECORRUPT);
        free(copy);
    }
    free(buf);
}

static void test_record_every_flipped_byte_is_detected(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs;
    size_t len;
    uint8_t *buf;

    (void)state;
    sample_record(&rec);
    buf = encode(&rec, &len);
    for (size_t i = 0; i < len; i++) {
        int rc;
        buf[i] ^= 0x40;
        rc = idem_record_decode(buf, len, &out, &hdrs);
        assert_true(rc == IDEM_ECORRUPT || rc == IDEM_EVERSION);
        buf[i] ^= 0x40;
    }
    free(buf);
}

static void test_record_unknown_version_is_refused(void **state)
{
    idem_record_t rec, out;
    idem_header_t *hdrs;
    size_t len;
    uint8_t *buf;

    (void)state;
    sample_record(&rec);
    buf = encode(&rec, &len);
    buf[4] = 2;
    assert_int_equal(idem_record_decode(buf, len, &out, &hdrs), IDEM_EVERSION);
    free(buf);
}

static void test_record_encode_refuses_small_buffer(void **state)
{
    idem_record_t rec;
    uint8_t buf[16];
    size_t len = 0;

    (void)state;
    sample_record(&rec);
    assert_int_equal(idem_record_encode(&rec, buf, sizeof(buf), &len),
                     IDEM_ETOOBIG);
    assert_int_equal(len, 0);
}

static void test_record_encode_refuses_too_many_headers(void **state)
{
    idem_record_t rec;
    idem_header_t *many = calloc(2000, sizeof(*many));

    (void)state;
    assert_non_null(many);
    sample_record(&rec);
    rec.response.headers = many;
    rec.response.nheaders = 2000;
    assert_int_equal(idem_record_encoded_size(&rec), 0);
    free(many);
}

static void test_record_encode_refuses_bad_state(void **state)
{
    idem_record_t rec;
    uint8_t buf[512];
    size_t len;

    (void)state;
    sample_record(&rec);
    rec.state = (idem_state_t)9;
    assert_int_equal(idem_record_encode(&rec, buf, sizeof(buf), &len),
                     IDEM_EINVAL);
}

/* ---- the decision table ------------------------------------------------ */

static idem_hash_t fp_a, fp_b;

static void decision_record(idem_record_t *rec, idem_state_t st)
{
    memset(rec, 0, sizeof(*rec));
    rec->state = st;
    rec->fingerprint = fp_a;
    rec->created_ms = 1000;
    rec->expires_ms = 2000;
    rec->lease_until_ms = 1500;
}

static int setup_fps(void **state)
{
    (void)state;
    memset(fp_a.bytes, 0xa, IDEM_HASH_LEN);
    memset(fp_b.bytes, 0xb, IDEM_HASH_LEN);
    return 0;
}

static void test_decide_absent_key_is_claimed(void **state)
{
    (void)state;
    assert_int_equal(idem_decide(NULL, &fp_a, 1000), IDEM_DECIDE_CLAIM);
}

static void test_decide_same_fingerprint_complete_replays(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_COMPLETE);
    assert_int_equal(idem_decide(&rec, &fp_a, 1999), IDEM_DECIDE_REPLAY);
}

static void test_decide_expired_key_counts_as_absent(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_COMPLETE);
    assert_int_equal(idem_decide(&rec, &fp_a, 2000), IDEM_DECIDE_CLAIM);
    assert_int_equal(idem_decide(&rec, &fp_b, 2001), IDEM_DECIDE_CLAIM);
}

static void test_decide_other_fingerprint_is_mismatch_first(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_COMPLETE);
    assert_int_equal(idem_decide(&rec, &fp_b, 1200),
                     IDEM_DECIDE_MISMATCH_FIRST);
    decision_record(&rec, IDEM_STATE_IN_PROGRESS);
    assert_int_equal(idem_decide(&rec, &fp_b, 1200),
                     IDEM_DECIDE_MISMATCH_FIRST);
}

static void test_decide_mismatch_already_logged_is_again(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_COMPLETE);
    rec.flags |= IDEM_REC_MISMATCH_LOGGED;
    assert_int_equal(idem_decide(&rec, &fp_b, 1200),
                     IDEM_DECIDE_MISMATCH_AGAIN);
}

static void test_decide_in_progress_within_lease(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_IN_PROGRESS);
    assert_int_equal(idem_decide(&rec, &fp_a, 1499), IDEM_DECIDE_IN_PROGRESS);
}

static void test_decide_in_progress_after_lease_is_stale(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_IN_PROGRESS);
    assert_int_equal(idem_decide(&rec, &fp_a, 1500), IDEM_DECIDE_STALE);
}

static void test_decide_in_progress_never_expires_while_leased(void **state)
{
    idem_record_t rec;

    (void)state;
    decision_record(&rec, IDEM_STATE_IN_PROGRESS);
    rec.lease_until_ms = 5000;
    assert_false(idem_record_expired(&rec, 3000));
    assert_int_equal(idem_decide(&rec, &fp_a, 3000), IDEM_DECIDE_IN_PROGRESS);
    assert_true(idem_record_expired(&rec, 5000));
}

int main(void)
{
    const struct CMUnitTest codec[] = {
        cmocka_unit_test(test_record_round_trip_keeps_every_field),
        cmocka_unit_test(test_record_round_trip_in_progress_without_response),
        cmocka_unit_test(test_record_round_trip_large_body),
        cmocka_unit_test(test_record_every_truncation_is_corrupt),
        cmocka_unit_test(test_record_every_flipped_byte_is_detected),
        cmocka_unit_test(test_record_unknown_version_is_refused),
        cmocka_unit_test(test_record_encode_refuses_small_buffer),
        cmocka_unit_test(test_record_encode_refuses_too_many_headers),
        cmocka_unit_test(test_record_encode_refuses_bad_state),
    };
    const struct CMUnitTest decide[] = {
        cmocka_unit_test(test_decide_absent_key_is_claimed),
        cmocka_unit_test(test_decide_same_fingerprint_complete_replays),
        cmocka_unit_test(test_decide_expired_key_counts_as_absent),
        cmocka_unit_test(test_decide_other_fingerprint_is_mismatch_first),
        cmocka_unit_test(test_decide_mismatch_already_logged_is_again),
        cmocka_unit_test(test_decide_in_progress_within_lease),
        cmocka_unit_test(test_decide_in_progress_after_lease_is_stale),
        cmocka_unit_test(test_decide_in_progress_never_expires_while_leased),
    };
    int failed = cmocka_run_group_tests_name("record codec", codec, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("decision table", decide, setup_fps, NULL);
    return failed ? 1 : 0;
}
