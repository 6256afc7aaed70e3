/*
 * test_key.c — the Idempotency-Key rules of SPEC §2 as idem_key_parse()
 * applies them: the bare form, the quoted structured-field form, and the
 * fixed order in which a value breaking several rules is judged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "idem.h"

/* The output buffer has IDEM_KEY_MAX bytes of room and a guard after it. */
#define GUARD 0x5a

typedef struct {
    char out[IDEM_KEY_MAX + 16];
    size_t out_len;
} parsed_t;

static int parse(const char *value, size_t len, parsed_t *p)
{
    memset(p->out, GUARD, sizeof(p->out));
    p->out_len = 9999;
    return idem_key_parse(value, len, p->out, &p->out_len);
}

static int parse_str(const char *value, parsed_t *p)
{
    return parse(value, strlen(value), p);
}

static void assert_key(const char *value, const char *expected)
{
    parsed_t p;

    assert_int_equal(parse_str(value, &p), 0);
    assert_int_equal(p.out_len, strlen(expected));
    assert_memory_equal(p.out, expected, p.out_len);
    for (size_t i = p.out_len; i < sizeof(p.out); i++)
        assert_int_equal((unsigned char)p.out[i], GUARD);
}

static void test_key_accepts_bare_key(void **state)
{
    (void)state;
    assert_key("abc_123", "abc_123");
    assert_key("8e03978e-40d5-43e8-bc93-6894a57f9324",
               "8e03978e-40d5-43e8-bc93-6894a57f9324");
}

static void test_key_accepts_every_printable_ascii_char(void **state)
{
    char value[0x7f - 0x21];
    parsed_t p;

    (void)state;
    for (int c = 0x21; c <= 0x7e; c++)
        value[c - 0x21] = (char)c;
    /* Starts with '!', so this is the bare form even though '"' is in it. */
    assert_int_equal(parse(value, sizeof(value), &p), 0);
    assert_int_equal(p.out_len, sizeof(value));
    assert_memory_equal(p.out, value, sizeof(value));
}

static void test_key_accepts_one_char(void **state)
{
    (void)state;
    assert_key("x", "x");
}

static void test_key_accepts_255_chars(void **state)
{
    char value[IDEM_KEY_MAX];
    parsed_t p;

    (void)state;
    memset(value, 'k', sizeof(value));
    assert_int_equal(parse(value, sizeof(value), &p), 0);
    assert_int_equal(p.out_len, IDEM_KEY_MAX);
    assert_memory_equal(p.out, value, IDEM_KEY_MAX);
    assert_int_equal((unsigned char)p.out[IDEM_KEY_MAX], GUARD);
}

static void test_key_rejects_empty(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse("", 0, &p), IDEM_EKEYEMPTY);
    assert_int_equal(parse(NULL, 0, &p), IDEM_EKEYEMPTY);
}

static void test_key_rejects_over_255_chars(void **state)
{
    char value[1000];
    parsed_t p;

    (void)state;
    memset(value, 'k', sizeof(value));
    assert_int_equal(parse(value, IDEM_KEY_MAX + 1, &p), IDEM_EKEYLONG);
    assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYLONG);
}

static void test_key_rejects_space(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("abc 123", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str(" abc", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str("abc ", &p), IDEM_EKEYCHAR);
}

static void test_key_rejects_control_bytes(void **state)
{
    static const char ctl[] = {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1f, 0x7f};
    char value[3] = {'a', 0, 'b'};
    parsed_t p;

    (void)state;
    for (size_t i = 0; i < sizeof(ctl); i++) {
        value[1] = ctl[i];
        assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYCHAR);
    }
}

static void test_key_rejects_non_ascii(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("caf\xc3\xa9", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str("\x80", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str("a\xff", &p), IDEM_EKEYCHAR);
}

static void test_key_bare_may_contain_quote_after_first_byte(void **state)
{
    (void)state;
    assert_key("a\"b", "a\"b");
    assert_key("a\\b\"", "a\\b\"");
}

static void test_key_quoted_form_means_inner(void **state)
{
    (void)state;
    assert_key("\"abc_123\"", "abc_123");
}

static void test_key_quoted_and_bare_forms_are_the_same_key(void **state)
{
    parsed_t bare, quoted;

    (void)state;
    assert_int_equal(parse_str("abc_123", &bare), 0);
    assert_int_equal(parse_str("\"abc_123\"", &quoted), 0);
    assert_int_equal(bare.out_len, quoted.out_len);
    assert_memory_equal(bare.out, quoted.out, bare.out_len);
}

static void test_key_quoted_unescapes_quote_and_backslash(void **state)
{
    (void)state;
    assert_key("\"a\\\"b\\\\c\"", "a\"b\\c");
    assert_key("\"\\\"\"", "\"");
}

static void test_key_quoted_rejects_unescaped_inner_quote(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("\"a\"b\"", &p), IDEM_EKEYQUOTE);
}

static void test_key_quoted_rejects_missing_closing_quote(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("\"", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"abc", &p), IDEM_EKEYQUOTE);
}

static void test_key_quoted_rejects_escaped_closing_quote(void **state)
{
    parsed_t p;

    (void)state;
    /* "abc\" : the last quote is escaped, so the string never ends. */
    assert_int_equal(parse_str("\"abc\\\"", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"abc\\", &p), IDEM_EKEYQUOTE);
}

static void test_key_quoted_rejects_other_escapes(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("\"a\\nb\"", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"a\\u0041\"", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"a\\/\"", &p), IDEM_EKEYQUOTE);
}

static void test_key_quoted_rejects_bytes_after_closing_quote(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("\"abc\"x", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"abc\" ", &p), IDEM_EKEYQUOTE);
    assert_int_equal(parse_str("\"abc\";a=1", &p), IDEM_EKEYQUOTE);
}

static void test_key_quoted_empty_is_empty(void **state)
{
    parsed_t p;

    (void)state;
    assert_int_equal(parse_str("\"\"", &p), IDEM_EKEYEMPTY);
}

static void test_key_quoted_length_counts_unescaped_content(void **state)
{
    char value[2 + 2 * (IDEM_KEY_MAX + 1)];
    size_t n = 0;
    parsed_t p;

    (void)state;
    /* 255 escaped backslashes: 512 bytes of value, a 255-byte key. */
    value[n++] = '"';
    for (int i = 0; i < IDEM_KEY_MAX; i++) {
        value[n++] = '\\';
        value[n++] = '\\';
    }
    value[n++] = '"';
    assert_int_equal(parse(value, n, &p), 0);
    assert_int_equal(p.out_len, IDEM_KEY_MAX);
    for (size_t i = 0; i < p.out_len; i++)
        assert_int_equal(p.out[i], '\\');
    assert_int_equal((unsigned char)p.out[IDEM_KEY_MAX], GUARD);

    /* One more makes it 256. */
    n = 0;
    value[n++] = '"';
    for (int i = 0; i < IDEM_KEY_MAX + 1; i++) {
        value[n++] = '\\';
        value[n++] = '\\';
    }
    value[n++] = '"';
    assert_int_equal(parse(value, n, &p), IDEM_EKEYLONG);
}

static void test_key_quoted_rejects_over_255_chars(void **state)
{
    char value[IDEM_KEY_MAX + 3];
    parsed_t p;

    (void)state;
    memset(value, 'q', sizeof(value));
    value[0] = '"';
    value[sizeof(value) - 1] = '"';
    assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYLONG);
    /* 255 inside the quotes is fine. */
    value[sizeof(value) - 2] = '"';
    assert_int_equal(parse(value, sizeof(value) - 1, &p), 0);
    assert_int_equal(p.out_len, IDEM_KEY_MAX);
}

static void test_key_quoted_content_obeys_bare_chars(void **state)
{
    parsed_t p;

    (void)state;
    /* Structured fields allow a space inside quotes; a key does not. */
    assert_int_equal(parse_str("\"a b\"", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str("\"a\tb\"", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse_str("\"caf\xc3\xa9\"", &p), IDEM_EKEYCHAR);
    assert_int_equal(parse(("\"a\0b\""), 5, &p), IDEM_EKEYCHAR);
}

static void test_key_check_order_quote_before_the_rest(void **state)
{
    char value[400];
    parsed_t p;

    (void)state;
    /* Too long, with a bad byte, and malformed: the structure wins. */
    memset(value, ' ', sizeof(value));
    value[0] = '"';
    assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYQUOTE);
    /* Empty content and bytes after it: still the structure. */
    assert_int_equal(parse_str("\"\"\"", &p), IDEM_EKEYQUOTE);
}

static void test_key_check_order_length_before_chars(void **state)
{
    char value[400];
    parsed_t p;

    (void)state;
    memset(value, ' ', sizeof(value));
    assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYLONG);
    value[0] = '"';
    value[sizeof(value) - 1] = '"';
    assert_int_equal(parse(value, sizeof(value), &p), IDEM_EKEYLONG);
}

static void test_key_failure_leaves_output_untouched(void **state)
{
    static const char *bad[] = {"", "a b", "\"a\"b\"", "\"\"", "\"abc"};
    parsed_t p;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(parse_str(bad[i], &p) < 0);
        assert_int_equal(p.out_len, 9999);
        for (size_t j = 0; j < sizeof(p.out); j++)
            assert_int_equal((unsigned char)p.out[j], GUARD);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_accepts_bare_key),
        cmocka_unit_test(test_key_accepts_every_printable_ascii_char),
        cmocka_unit_test(test_key_accepts_one_char),
        cmocka_unit_test(test_key_accepts_255_chars),
        cmocka_unit_test(test_key_rejects_empty),
        cmocka_unit_test(test_key_rejects_over_255_chars),
        cmocka_unit_test(test_key_rejects_space),
        cmocka_unit_test(test_key_rejects_control_bytes),
        cmocka_unit_test(test_key_rejects_non_ascii),
        cmocka_unit_test(test_key_bare_may_contain_quote_after_first_byte),
        cmocka_unit_test(test_key_quoted_form_means_inner),
        cmocka_unit_test(test_key_quoted_and_bare_forms_are_the_same_key),
        cmocka_unit_test(test_key_quoted_unescapes_quote_and_backslash),
        cmocka_unit_test(test_key_quoted_rejects_unescaped_inner_quote),
        cmocka_unit_test(test_key_quoted_rejects_missing_closing_quote),
        cmocka_unit_test(test_key_quoted_rejects_escaped_closing_quote),
        cmocka_unit_test(test_key_quoted_rejects_other_escapes),
        cmocka_unit_test(test_key_quoted_rejects_bytes_after_closing_quote),
        cmocka_unit_test(test_key_quoted_empty_is_empty),
        cmocka_unit_test(test_key_quoted_length_counts_unescaped_content),
        cmocka_unit_test(test_key_quoted_rejects_over_255_chars),
        cmocka_unit_test(test_key_quoted_content_obeys_bare_chars),
        cmocka_unit_test(test_key_check_order_quote_before_the_rest),
        cmocka_unit_test(test_key_check_order_length_before_chars),
        cmocka_unit_test(test_key_failure_leaves_output_untouched),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
