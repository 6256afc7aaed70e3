/*
 * test_hash.c — lib/core/hash.c: a digest fed in any split of its bytes,
 * small feeds gathered before they reach OpenSSL and large ones passed
 * through, is the SHA-256 of the bytes in one piece (and of the known
 * vectors).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "hash.h"

/* SHA-256 of data in one call of OpenSSL's own. */
static void one_shot(const uint8_t *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;

    assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1);
    assert_int_equal(n, 32);
}

/* The digest of data fed in pieces whose lengths come from seed. */
static void split(const uint8_t *data, size_t len, unsigned seed,
                  uint8_t out[32])
{
    static const size_t sizes[] = {0,   1,   2,   7,   8,   63,
                                   64,  65,  126, 127, 128, 129,
                                   130, 200, 255, 256, 257, 1000};
    idem_hash_ctx_t h;
    idem_hash_t d;
    size_t at = 0;

    assert_int_equal(idem_hash_init(&h), 0);
    while (at < len) {
        size_t n;

        seed = seed * 1103515245u + 12345u;
        n = sizes[(seed >> 16) % (sizeof(sizes) / sizeof(*sizes))];

        n = n > len - at ? len - at : n;
        idem_hash_bytes(&h, data + at, n);
        at += n;
    }
    assert_int_equal(idem_hash_final(&h, &d), 0);
    memcpy(out, d.bytes, 32);
}

static void test_hash_any_split_is_the_one_shot_digest(void **state)
{
    static uint8_t data[5000];
    uint8_t a[32], b[32];

    (void)state;
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 131 + 7);
    for (unsigned seed = 1; seed <= 400; seed++) {
        size_t len = (seed * 37) % sizeof(data);

        one_shot(data, len, a);
        split(data, len, seed, b);
        assert_memory_equal(a, b, 32);
    }
}

static void test_hash_known_vectors(void **state)
{
    /* FIPS 180-2: "abc" and the 448-bit message */
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    static const uint8_t m448[32] = {
        0x24, 0x8d, 0x6a, 0x61, 0xd2, 0x06, 0x38, 0xb8, 0xe5, 0xc0, 0x26,
        0x93, 0x0c, 0x3e, 0x60, 0x39, 0xa3, 0x3c, 0xe4, 0x59, 0x64, 0xff,
        0x21, 0x67, 0xf6, 0xec, 0xed, 0xd4, 0x19, 0xdb, 0x06, 0xc1};
    const char *msg =
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    idem_hash_ctx_t h;
    idem_hash_t d;

    (void)state;
    assert_int_equal(idem_hash_init(&h), 0);
    idem_hash_u8(&h, 'a');
    idem_hash_bytes(&h, "bc", 2);
    assert_int_equal(idem_hash_final(&h, &d), 0);
    assert_memory_equal(d.bytes, abc, 32);

    assert_int_equal(idem_hash_init(&h), 0);
    for (const char *p = msg; *p; p++)
        idem_hash_u8(&h, (uint8_t)*p);
    assert_int_equal(idem_hash_final(&h, &d), 0);
    assert_memory_equal(d.bytes, m448, 32);
}

static void test_hash_fields_are_framed(void **state)
{
    /* field(x) is u64(len) then the bytes: the same as feeding them so */
    idem_hash_ctx_t h;
    idem_hash_t a, b;
    uint8_t be[8] = {0, 0, 0, 0, 0, 0, 0, 3};

    (void)state;
    assert_int_equal(idem_hash_init(&h), 0);
    idem_hash_field(&h, "abc", 3);
    assert_int_equal(idem_hash_final(&h, &a), 0);
    assert_int_equal(idem_hash_init(&h), 0);
    idem_hash_bytes(&h, be, sizeof(be));
    idem_hash_bytes(&h, "abc", 3);
    assert_int_equal(idem_hash_final(&h, &b), 0);
    assert_memory_equal(a.bytes, b.bytes, 32);
    /* a discarded context needs nothing more; discarding twice is safe */
    assert_int_equal(idem_hash_init(&h), 0);
    idem_hash_bytes(&h, "abc", 3);
    idem_hash_discard(&h);
    idem_hash_discard(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_any_split_is_the_one_shot_digest),
        cmocka_unit_test(test_hash_known_vectors),
        cmocka_unit_test(test_hash_fields_are_framed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
