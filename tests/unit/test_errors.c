/*
 * test_errors.c — the error convention of idem.h: one list of negative
 * codes, each with a value written out that never changes, that yields
 * both a message and a symbolic name for each; and the client sentences
 * of the key errors, kept apart from those messages (idem_key_problem).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "idem.h"

#define X_CODE(name, value, msg) IDEM_E##name,
static const int all_codes[] = {IDEM_ERRNO_MAP(X_CODE)};
#undef X_CODE

#define X_NAME(name, value, msg) "IDEM_E" #name,
static const char *all_names[] = {IDEM_ERRNO_MAP(X_NAME)};
#undef X_NAME

#define X_MSG(name, value, msg) msg,
static const char *all_msgs[] = {IDEM_ERRNO_MAP(X_MSG)};
#undef X_MSG

#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

static int lowest_code(void)
{
    int low = 0;

    for (size_t i = 0; i < sizeof(all_codes) / sizeof(all_codes[0]); i++)
        if (all_codes[i] < low)
            low = all_codes[i];
    return low;
}

/*
 * The values are part of the ABI: written out here literally, so that a
 * code renumbered, or a value given twice, fails this test.
 */
static void test_errors_values_are_pinned(void **state)
{
    (void)state;
    assert_int_equal(IDEM_OK, 0);
    assert_int_equal(IDEM_ENOMEM, -1);
    assert_int_equal(IDEM_EINVAL, -2);
    assert_int_equal(IDEM_EKEYEMPTY, -3);
    assert_int_equal(IDEM_EKEYLONG, -4);
    assert_int_equal(IDEM_EKEYCHAR, -5);
    assert_int_equal(IDEM_EKEYQUOTE, -6);
    assert_int_equal(IDEM_EKEYDUP, -7);
    assert_int_equal(IDEM_EKEYMISSING, -8);
    assert_int_equal(IDEM_ECORRUPT, -9);
    assert_int_equal(IDEM_EVERSION, -10);
    assert_int_equal(IDEM_ETOOBIG, -11);
    assert_int_equal(IDEM_ENOTFOUND, -12);
    assert_int_equal(IDEM_ENOTOWNER, -13);
    assert_int_equal(IDEM_EFULL, -14);
    assert_int_equal(IDEM_EPERM, -15);
    assert_int_equal(IDEM_EIO, -16);
    assert_int_equal(IDEM_EUNAVAIL, -17);
    assert_int_equal(IDEM_EBADURL, -18);
    assert_int_equal(IDEM_EFAULT, -19);
    assert_int_equal(IDEM_EEVICTION, -20);
    assert_int_equal(IDEM_EPENDING, -21);
    /* Every code of the list is pinned above: a new one adds its line. */
    assert_int_equal(NCODES, 21);
}

static void test_errors_values_are_negative_and_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(all_codes[i] < 0);
        for (size_t j = i + 1; j < NCODES; j++)
            assert_int_not_equal(all_codes[i], all_codes[j]);
    }
}

static void test_errors_strerror_gives_each_code_its_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++)
        assert_string_equal(idem_strerror(all_codes[i]), all_msgs[i]);
}

static void test_errors_err_name_is_the_symbol(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++)
        assert_string_equal(idem_err_name(all_codes[i]), all_names[i]);
    assert_string_equal(idem_err_name(IDEM_EKEYLONG), "IDEM_EKEYLONG");
}

static void test_errors_success_has_a_message_and_name(void **state)
{
    (void)state;
    assert_string_equal(idem_strerror(0), "success");
    assert_string_equal(idem_err_name(0), "IDEM_OK");
}

static void test_errors_foreign_code_is_unknown_never_null(void **state)
{
    int foreign[] = {1, 12345, 0, -100000};

    (void)state;
    foreign[2] = lowest_code() - 1; /* the next free value */
    for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
        assert_string_equal(idem_strerror(foreign[i]), "unknown error");
        assert_string_equal(idem_err_name(foreign[i]), "unknown");
    }
}

static const int key_codes[] = {IDEM_EKEYEMPTY, IDEM_EKEYLONG,
                                IDEM_EKEYCHAR,  IDEM_EKEYQUOTE,
                                IDEM_EKEYDUP,   IDEM_EKEYMISSING};
#define NKEYCODES (sizeof(key_codes) / sizeof(key_codes[0]))

static int is_key_code(int err)
{
    for (size_t i = 0; i < NKEYCODES; i++)
        if (key_codes[i] == err)
            return 1;
    return 0;
}

/* Clients and the e2e tests read these byte for byte. */
static void test_errors_key_problem_is_the_client_sentence(void **state)
{
    (void)state;
    assert_string_equal(idem_key_problem(IDEM_EKEYEMPTY),
                        "The Idempotency-Key header is empty; a key has 1 to "
                        "255 characters.");
    assert_string_equal(idem_key_problem(IDEM_EKEYLONG),
                        "The Idempotency-Key is longer than 255 characters.");
    assert_string_equal(
        idem_key_problem(IDEM_EKEYCHAR),
        "The Idempotency-Key may contain only printable ASCII characters "
        "(0x21 to 0x7E): no spaces, control characters or non-ASCII bytes.");
    assert_string_equal(idem_key_problem(IDEM_EKEYQUOTE),
                        "The Idempotency-Key is a malformed quoted string; "
                        "the quoted form is \"key\" with only \\\" and "
                        "\\\\ escapes.");
    assert_string_equal(idem_key_problem(IDEM_EKEYDUP),
                        "The Idempotency-Key header appears more than once "
                        "with different values.");
    assert_string_equal(
        idem_key_problem(IDEM_EKEYMISSING),
        "An Idempotency-Key header is required for this request.");
}

static void test_errors_every_key_code_has_a_client_sentence(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKEYCODES; i++) {
        const char *p = idem_key_problem(key_codes[i]);

        assert_non_null(p);
        assert_non_null(strstr(p, "Idempotency-Key"));
        /* The library's own message is another, shorter text. */
        assert_string_not_equal(idem_strerror(key_codes[i]), p);
        assert_true(strlen(idem_strerror(key_codes[i])) < strlen(p));
    }
}

static void test_errors_other_codes_have_no_client_sentence(void **state)
{
    int foreign[] = {0, 1, 12345, 0, -100000};

    (void)state;
    foreign[3] = lowest_code() - 1; /* the next free value */
    for (size_t i = 0; i < NCODES; i++)
        if (!is_key_code(all_codes[i]))
            assert_null(idem_key_problem(all_codes[i]));
    for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++)
        assert_null(idem_key_problem(foreign[i]));
}

static void test_errors_key_messages_are_library_style(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKEYCODES; i++) {
        const char *m = idem_strerror(key_codes[i]);

        assert_null(strstr(m, "Idempotency-Key"));
        assert_true(m[0] >= 'a' && m[0] <= 'z');
        assert_int_not_equal(m[strlen(m) - 1], '.');
    }
    assert_non_null(strstr(idem_strerror(IDEM_EKEYEMPTY), "empty"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYLONG), "255"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYCHAR), "0x21-0x7E"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYQUOTE), "quoted"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYDUP), "repeated"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYMISSING), "required"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_values_are_pinned),
        cmocka_unit_test(test_errors_values_are_negative_and_unique),
        cmocka_unit_test(test_errors_strerror_gives_each_code_its_message),
        cmocka_unit_test(test_errors_err_name_is_the_symbol),
        cmocka_unit_test(test_errors_success_has_a_message_and_name),
        cmocka_unit_test(test_errors_foreign_code_is_unknown_never_null),
        cmocka_unit_test(test_errors_key_problem_is_the_client_sentence),
        cmocka_unit_test(test_errors_every_key_code_has_a_client_sentence),
        cmocka_unit_test(test_errors_other_codes_have_no_client_sentence),
        cmocka_unit_test(test_errors_key_messages_are_library_style),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
