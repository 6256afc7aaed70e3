/*
 * test_errors.c — the error convention of idem.h: one list of negative
 * codes, each with a value written out that never changes, that yields
 * both a message and a symbolic name for each.
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
    /* Every code of the list is pinned above: a new one adds its line. */
    assert_int_equal(NCODES, 20);
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
    static const int foreign[] = {1, 12345, -21, -100000};

    (void)state;
    for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++) {
        assert_string_equal(idem_strerror(foreign[i]), "unknown error");
        assert_string_equal(idem_err_name(foreign[i]), "unknown");
    }
}

static void test_errors_key_messages_name_the_rule(void **state)
{
    (void)state;
    assert_non_null(strstr(idem_strerror(IDEM_EKEYEMPTY), "empty"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYLONG), "255"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYCHAR), "0x21 to 0x7E"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYQUOTE), "quoted"));
    assert_non_null(strstr(idem_strerror(IDEM_EKEYDUP), "more than once"));
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
        cmocka_unit_test(test_errors_key_messages_name_the_rule),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
