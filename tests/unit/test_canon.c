/*
 * test_canon.c — the canonical texts a fingerprint compares (SPEC §4): the
 * sorted pairs of a query or form body, and canonical JSON with its bounds.
 * test_fingerprint.c checks the same rules through idem_fingerprint().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "canon.h"
#include "idem.h"

/* A sink that collects the canonical text. */
typedef struct {
    idem_canon_sink_t super;
    char *buf;
    size_t len;
    size_t cap;
    size_t writes;
} text_sink_t;

static int text_write(idem_canon_sink_t *sink, const void *data, size_t len)
{
    text_sink_t *t = (text_sink_t *)sink;

    assert_true(len > 0);
    if (t->cap - t->len < len + 1) {
        size_t cap = 2 * (t->len + len + 1);
        char *buf = realloc(t->buf, cap);

        assert_non_null(buf);
        t->buf = buf;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    t->buf[t->len] = '\0';
    t->writes++;
    return 0;
}

static text_sink_t text_sink(void)
{
    return (text_sink_t){{text_write}, NULL, 0, 0, 0};
}

/* A sink that refuses everything, to see its error come back. */
static int full_write(idem_canon_sink_t *sink, const void *data, size_t len)
{
    (void)sink;
    (void)data;
    (void)len;
    return IDEM_ENOMEM;
}

static void assert_pairs(const char *in, const char *expected)
{
    idem_canon_pairs_t p;
    text_sink_t t = text_sink();

    assert_int_equal(idem_canon_pairs_init(&p, in, strlen(in)), 0);
    assert_int_equal(p.len, strlen(expected));
    assert_int_equal(idem_canon_pairs_write(&p, &t.super), 0);
    assert_int_equal(t.len, strlen(expected));
    if (t.len > 0)
        assert_memory_equal(t.buf, expected, t.len);
    idem_canon_pairs_free(&p);
    free(t.buf);
}

/* Checks the canonical media type of in, and whether it parsed. */
static void assert_media(const char *in, const char *expected, int parsed)
{
    idem_canon_media_t m;
    text_sink_t t = text_sink();

    assert_int_equal(idem_canon_media_init(&m, in, strlen(in)), 0);
    assert_int_equal(m.parsed, parsed);
    assert_int_equal(m.len, strlen(expected));
    assert_int_equal(idem_canon_media_write(&m, &t.super), 0);
    assert_int_equal(t.len, strlen(expected));
    if (t.len > 0)
        assert_memory_equal(t.buf, expected, t.len);
    idem_canon_media_free(&m);
    free(t.buf);
}

/* Canonicalizes in[0..len) and checks it against expected (NULL: not JSON). */
static void assert_json_n(const char *in, size_t len, const char *expected,
                          size_t expected_len)
{
    text_sink_t t = text_sink();
    int is_json = -1;

    assert_int_equal(
        idem_canon_json((const uint8_t *)in, len, &t.super, &is_json), 0);
    if (expected == NULL) {
        assert_int_equal(is_json, 0);
        assert_int_equal(t.len, 0);
    } else {
        assert_int_equal(is_json, 1);
        assert_int_equal(t.len, expected_len);
        assert_memory_equal(t.buf, expected, expected_len);
    }
    free(t.buf);
}

static void assert_json(const char *in, const char *expected)
{
    assert_json_n(in, strlen(in), expected, expected ? strlen(expected) : 0);
}

static void assert_not_json(const char *in)
{
    assert_json(in, NULL);
}

/* "[[...[1]...]]" nested depth deep; the caller frees. */
static char *nested(size_t depth)
{
    char *s = malloc(2 * depth + 2);

    assert_non_null(s);
    memset(s, '[', depth);
    s[depth] = '1';
    memset(s + depth + 1, ']', depth);
    s[2 * depth + 1] = '\0';
    return s;
}

/* ---- pairs ---- */

static void test_canon_pairs_sorted_by_name(void **state)
{
    (void)state;
    assert_pairs("b=2&a=1&c=3", "a=1&b=2&c=3");
}

static void test_canon_pairs_repeated_names_keep_order(void **state)
{
    (void)state;
    assert_pairs("tag=z&a=1&tag=x&tag=y", "a=1&tag=z&tag=x&tag=y");
    assert_pairs("a=2&a=1", "a=2&a=1");
}

static void test_canon_pairs_empty_segments_dropped(void **state)
{
    (void)state;
    assert_pairs("&&b=2&&a=1&", "a=1&b=2");
    assert_pairs("&&&", "");
    assert_pairs("&x&", "x");
}

static void test_canon_pairs_empty_input_is_empty(void **state)
{
    idem_canon_pairs_t p;

    (void)state;
    assert_pairs("", "");
    assert_int_equal(idem_canon_pairs_init(&p, NULL, 0), 0);
    assert_int_equal(p.len, 0);
    idem_canon_pairs_free(&p);
}

static void test_canon_pairs_name_ends_at_first_equals(void **state)
{
    (void)state;
    /* "a=b=c" has the name "a" and the value "b=c". */
    assert_pairs("b=1&a=b=c&a=0", "a=b%3Dc&a=0&b=1");
}

static void test_canon_pairs_segment_without_equals_is_a_name(void **state)
{
    (void)state;
    /* "a" and "a=" and "a=1" share the name "a": input order is kept. */
    assert_pairs("z&a=1&a&a=", "a=1&a&a=&z");
}

static void test_canon_pairs_compare_names_not_segments(void **state)
{
    (void)state;
    /* As whole segments "a.b=1" < "a=2" ('.' < '='); by name "a" < "a.b". */
    assert_pairs("a.b=1&a=2", "a=2&a.b=1");
    assert_pairs("ab=1&a=2", "a=2&ab=1");
}

static void test_canon_pairs_names_compared_as_unsigned_bytes(void **state)
{
    (void)state;
    assert_pairs("\xc3\xa9=1&z=2&A=3", "A=3&z=2&%C3%A9=1");
}

static void test_canon_pairs_sorted_after_decoding(void **state)
{
    (void)state;
    assert_pairs("%62=1&a=2", "a=2&b=1");
    /* "%61" is "a": one name, whose values keep their order. */
    assert_pairs("%61=1&a=2", "a=1&a=2");
    assert_pairs("a=2&%61=1", "a=2&a=1");
    assert_pairs("b=1&%61%62=2&ab=3&a=4", "a=4&ab=2&ab=3&b=1");
}

static void test_canon_pairs_plus_is_a_space(void **state)
{
    (void)state;
    assert_pairs("a=A+B", "a=A%20B");
    assert_pairs("a=A%20B", "a=A%20B");
    assert_pairs("a+b=1", "a%20b=1");
    /* "%2B" is a '+', not a space, in either case of its hex digits. */
    assert_pairs("a=%2B", "a=%2B");
    assert_pairs("a=%2b", "a=%2B");
}

static void
test_canon_pairs_separators_in_names_and_values_escaped(void **state)
{
    (void)state;
    /* A decoded '&' or '=' is data, written so that it is no separator. */
    assert_pairs("a=1%262", "a=1%262");
    assert_pairs("a=1&2", "2&a=1");
    assert_pairs("a%3Db=1", "a%3Db=1");
    assert_pairs("a=b=1", "a=b%3D1");
    assert_pairs("a=%25", "a=%25");
}

static void test_canon_pairs_one_encoding_per_byte(void **state)
{
    (void)state;
    assert_pairs("a=%7E%2d%2E%5f%41%7a%30", "a=~-._Az0");
    assert_pairs("a=*!'()/?:@,;$", "a=%2A%21%27%28%29%2F%3F%3A%40%2C%3B%24");
    assert_pairs("a=%00%ff\x80", "a=%00%FF%80");
}

static void test_canon_pairs_bad_percent_kept(void **state)
{
    (void)state;
    assert_pairs("a=%zz", "a=%zz");
    assert_pairs("a=%25zz", "a=%25zz");
    assert_pairs("a=%4", "a=%%34");
    assert_pairs("a=%", "a=%");
    assert_pairs("%=1", "%=1");
    /* The escape does not reach over the '=' or the end of the segment. */
    assert_pairs("%4=1&b=%4", "b=%%34&%%34=1");
    /* A hex digit after a bad '%' is escaped, so it starts no escape. */
    assert_pairs("a=%4z", "a=%%34z");
    assert_pairs("a=%%41", "a=%%41");
    assert_pairs("a=%%32%35", "a=%%325");
}

static void test_canon_pairs_bad_percent_sorts_after_bytes(void **state)
{
    (void)state;
    assert_pairs("%zz=1&z=2&%ff=3", "z=2&%FF=3&%zz=1");
}

static void test_canon_pairs_canonical_form_is_a_fixed_point(void **state)
{
    static const char *const inputs[] = {
        "b=%41&a=A+B",     "%4=1&b=%4&a=%4z",          "a=%%32%35&a",
        "x=%zz&&=&y=%2b+", "%C3%A9=%e2%82%ac&a=1%262",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        idem_canon_pairs_t p;
        text_sink_t t = text_sink();

        assert_int_equal(
            idem_canon_pairs_init(&p, inputs[i], strlen(inputs[i])), 0);
        assert_int_equal(idem_canon_pairs_write(&p, &t.super), 0);
        assert_int_equal(t.len, p.len);
        idem_canon_pairs_free(&p);
        assert_pairs(t.buf, t.buf);
        free(t.buf);
    }
}

static void test_canon_pairs_sort_is_stable_for_many(void **state)
{
    char in[4 * 1000 + 1], expected[4 * 1000 + 1];
    size_t n = 0, m = 0;
    idem_canon_pairs_t p;
    text_sink_t t = text_sink();

    (void)state;
    /* 500 of "b=i" interleaved with 500 of "a=i" (i mod 10). */
    for (int i = 0; i < 500; i++) {
        n += (size_t)sprintf(in + n, "b=%d&a=%d&", i % 10, (i + 5) % 10);
    }
    for (int i = 0; i < 500; i++)
        m += (size_t)sprintf(expected + m, "a=%d&", (i + 5) % 10);
    for (int i = 0; i < 500; i++)
        m += (size_t)sprintf(expected + m, "b=%d&", i % 10);
    expected[m - 1] = '\0';

    assert_int_equal(idem_canon_pairs_init(&p, in, n), 0);
    assert_int_equal(idem_canon_pairs_write(&p, &t.super), 0);
    assert_string_equal(t.buf, expected);
    idem_canon_pairs_free(&p);
    free(t.buf);
}

static void test_canon_pairs_sink_error_is_returned(void **state)
{
    idem_canon_pairs_t p;
    idem_canon_sink_t full = {full_write};

    (void)state;
    assert_int_equal(idem_canon_pairs_init(&p, "b=1&a=2", 7), 0);
    assert_int_equal(idem_canon_pairs_write(&p, &full), IDEM_ENOMEM);
    idem_canon_pairs_free(&p);
}

/* ---- media type ---- */

static void test_canon_media_type_lowered_and_trimmed(void **state)
{
    (void)state;
    assert_media(" \tApplication/JSON \t", "application/json", 1);
    assert_media("", "", 1);
}

static void test_canon_media_parameters_kept(void **state)
{
    (void)state;
    assert_media("multipart/form-data; boundary=AbC",
                 "multipart/form-data;boundary=AbC", 1);
    assert_media("text/plain; charset=UTF-8", "text/plain;charset=UTF-8", 1);
}

static void test_canon_media_parameter_names_lowered(void **state)
{
    (void)state;
    assert_media("Text/Plain; CharSet=utf-8", "text/plain;charset=utf-8", 1);
}

static void test_canon_media_ows_insignificant(void **state)
{
    (void)state;
    assert_media("a/b ;\tx = 1 ; y=2\t", "a/b;x=1;y=2", 1);
    assert_media("a/b;;; x=1;", "a/b;x=1", 1);
}

static void test_canon_media_parameters_sorted_stable(void **state)
{
    (void)state;
    assert_media("a/b; z=1; Y=2; y=0; x=3", "a/b;x=3;y=2;y=0;z=1", 1);
}

static void test_canon_media_quoted_values_unquoted(void **state)
{
    (void)state;
    assert_media("a/b; x=\"A\"", "a/b;x=A", 1);
    assert_media("a/b; x=\"\\A\\-\"", "a/b;x=A-", 1);
    assert_media("a/b; x=\"A B\"", "a/b;x=\"A B\"", 1);
    assert_media("a/b; x=\"a;b=c\"", "a/b;x=\"a;b=c\"", 1);
    assert_media("a/b; x=\"\"", "a/b;x=\"\"", 1);
    /* Only '"' and '\' are escaped again. */
    assert_media("a/b; x=\"\\\"\\\\\\ \"", "a/b;x=\"\\\"\\\\ \"", 1);
}

static void test_canon_media_malformed_kept_as_sent(void **state)
{
    (void)state;
    assert_media("Text/Plain; charset", "text/plain; charset", 0);
    assert_media("a/b; x=", "a/b; x=", 0);
    assert_media("a/b; x=\"open", "a/b; x=\"open", 0);
    assert_media("a/b; x=\"a\"b", "a/b; x=\"a\"b", 0);
    assert_media("a/b; x=a b", "a/b; x=a b", 0);
    assert_media("a/b; x=a\"", "a/b; x=a\"", 0);
    assert_media("a/b; =1", "a/b; =1", 0);
    assert_media("a/b; x=\"\x01\"", "a/b; x=\"\x01\"", 0);
    assert_media("a/b; x=\"\\", "a/b; x=\"\\", 0);
}

static void test_canon_media_canonical_form_is_a_fixed_point(void **state)
{
    static const char *const inputs[] = {
        "A/B; z=\"q\\\"\"; Y=\"t\"; y=0",
        "x/y;a=\"\";b=\"\\\\\"",
        "m/n ; k = \"v w\" ;",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        idem_canon_media_t m;
        text_sink_t t = text_sink();

        assert_int_equal(
            idem_canon_media_init(&m, inputs[i], strlen(inputs[i])), 0);
        assert_int_equal(idem_canon_media_write(&m, &t.super), 0);
        idem_canon_media_free(&m);
        assert_media(t.buf, t.buf, 1);
        free(t.buf);
    }
}

static void test_canon_media_long_parts_written_whole(void **state)
{
    char in[2 * 1000 + 16], expected[2 * 1000 + 16];

    (void)state;
    /* A token value, and unparsed parameters, each longer than any buffer. */
    memcpy(in, "a/b; x=", 7);
    memset(in + 7, 'v', 2000);
    in[2007] = '\0';
    memcpy(expected, "a/b;x=", 6);
    memset(expected + 6, 'v', 2000);
    expected[2006] = '\0';
    assert_media(in, expected, 1);
    in[5] = '!';
    in[6] = ' ';
    assert_media(in, in, 0);
}

static void test_canon_media_sink_error_is_returned(void **state)
{
    idem_canon_media_t m;
    idem_canon_sink_t full = {full_write};

    (void)state;
    assert_int_equal(idem_canon_media_init(&m, "a/b; y=1; x=2", 13), 0);
    assert_int_equal(idem_canon_media_write(&m, &full), IDEM_ENOMEM);
    idem_canon_media_free(&m);
}

/* ---- JSON ---- */

static void test_canon_json_compact_with_sorted_members(void **state)
{
    (void)state;
    assert_json("{ \"b\" : 2 ,\n\t\"a\" : 1 }", "{\"a\":1,\"b\":2}");
}

static void test_canon_json_nested_members_sorted(void **state)
{
    (void)state;
    assert_json("{\"z\":{\"y\":[{\"b\":null,\"a\":true}],\"x\":false}}",
                "{\"z\":{\"x\":false,\"y\":[{\"a\":true,\"b\":null}]}}");
}

static void test_canon_json_array_order_kept(void **state)
{
    (void)state;
    assert_json("[3, 1, 2]", "[3,1,2]");
}

static void test_canon_json_empty_containers(void **state)
{
    (void)state;
    assert_json(" { } ", "{}");
    assert_json("[ ]", "[]");
    assert_json("{\"a\":{},\"b\":[]}", "{\"a\":{},\"b\":[]}");
}

static void test_canon_json_scalars_at_top_level(void **state)
{
    (void)state;
    assert_json(" true ", "true");
    assert_json("null", "null");
    assert_json("\"x\"", "\"x\"");
    assert_json("  -5\n", "-5");
}

static void test_canon_json_member_names_sorted_as_utf8_bytes(void **state)
{
    (void)state;
    /* 'z' is 0x7a, 'é' starts with 0xc3, 'B' is 0x42; a prefix first. */
    assert_json("{\"\xc3\xa9\":1,\"z\":2,\"B\":3,\"zz\":4}",
                "{\"B\":3,\"z\":2,\"zz\":4,\"\xc3\xa9\":1}");
}

static void test_canon_json_string_escapes_normalized(void **state)
{
    (void)state;
    /* Escapes are undone; only '"', '\' and control bytes are escaped. */
    assert_json("\"\\u0041\\/\\u00e9\\\"\\\\\"", "\"A/\xc3\xa9\\\"\\\\\"");
    assert_json("\"\xc3\xa9\"", "\"\xc3\xa9\"");
    assert_json("\"a\\nb\\t\\u001f\\u007f\"",
                "\"a\\u000ab\\u0009\\u001f\\u007f\"");
}

static void test_canon_json_escaped_names_equal_plain(void **state)
{
    (void)state;
    assert_json("{\"\\u0062\":1,\"a\":2}", "{\"a\":2,\"b\":1}");
}

static void test_canon_json_nul_in_string_kept(void **state)
{
    static const char out[] = "[\"a\\u0000b\"]";

    (void)state;
    assert_json("[\"a\\u0000b\"]", out);
}

static void test_canon_json_numbers_kept_as_written(void **state)
{
    (void)state;
    assert_json("1", "1");
    assert_json("1.0", "1.0");
    assert_json("1.00", "1.00");
    assert_json("-0", "-0");
    assert_json("-0.0", "-0.0");
    assert_json("1e0", "1e0");
    assert_json("1E0", "1E0");
    assert_json("1e+0", "1e+0");
    assert_json("10E-1", "10E-1");
    assert_json("0.10", "0.10");
    assert_json("15e-1", "15e-1");
    assert_json("10e307", "10e307");
    assert_json("-2.50E+2", "-2.50E+2");
    assert_json("{ \"b\" : 1.50 , \"a\" : [ 0.10 , -0 ] }",
                "{\"a\":[0.10,-0],\"b\":1.50}");
}

static void test_canon_json_integers_of_any_length(void **state)
{
    (void)state;
    assert_json("9223372036854775807", "9223372036854775807");
    assert_json("-9223372036854775808", "-9223372036854775808");
    assert_json("9223372036854775808", "9223372036854775808");
    assert_json("{\"amount\":123456789012345678901234567890}",
                "{\"amount\":123456789012345678901234567890}");
}

static void test_canon_json_reals_of_any_precision(void **state)
{
    (void)state;
    /* Two different 17-digit amounts that would round to one double. */
    assert_json("{\"amount\":12345678901234567.1}",
                "{\"amount\":12345678901234567.1}");
    assert_json("[3.1415926535897932]", "[3.1415926535897932]");
    assert_json("0.000123456789012345000", "0.000123456789012345000");
    assert_json("1e-400", "1e-400");
    assert_json("1e400", "1e400");
    assert_json("[1e99999999999999999999999]", "[1e99999999999999999999999]");
    assert_json("0.0e-999999", "0.0e-999999");
}

static void test_canon_json_bad_numbers_are_not_json(void **state)
{
    (void)state;
    assert_not_json("01");
    assert_not_json("-");
    assert_not_json("+1");
    assert_not_json("1.");
    assert_not_json(".5");
    assert_not_json("1e");
    assert_not_json("1e+");
    assert_not_json("[1.e5]");
    assert_not_json("0x10");
    assert_not_json("[-01]");
}

static void test_canon_json_numbers_in_strings_not_checked(void **state)
{
    (void)state;
    assert_json("[\"3.14159265358979323846\"]", "[\"3.14159265358979323846\"]");
}

static void test_canon_json_invalid_is_not_json(void **state)
{
    (void)state;
    assert_not_json("{");
    assert_not_json("{\"a\":1,}");
    assert_not_json("[1 2]");
    assert_not_json("{'a':1}");
    assert_not_json("[1] x");
    assert_not_json("NaN");
    assert_not_json("01");
    assert_not_json("\"unterminated");
}

static void test_canon_json_empty_body_is_not_json(void **state)
{
    (void)state;
    assert_json_n("", 0, NULL, 0);
    assert_not_json("   ");
}

static void test_canon_json_duplicate_members_are_not_json(void **state)
{
    (void)state;
    assert_not_json("{\"a\":1,\"a\":1}");
    assert_not_json("{\"x\":{\"a\":1,\"b\":2,\"a\":3}}");
    /* The same name spelled two ways is still a duplicate. */
    assert_not_json("{\"a\":1,\"\\u0061\":2}");
}

static void test_canon_json_invalid_utf8_is_not_json(void **state)
{
    (void)state;
    assert_not_json("[\"\xff\"]");
    assert_not_json("[\"\xc3\"]");
    assert_not_json("[\"\xed\xa0\x80\"]");
    assert_not_json("[\"\\ud800\"]");
}

static void test_canon_json_nul_in_member_name_is_not_json(void **state)
{
    (void)state;
    assert_not_json("{\"a\\u0000b\":1}");
}

static void test_canon_json_raw_nul_byte_is_not_json(void **state)
{
    (void)state;
    assert_json_n("[1]\0", 4, NULL, 0);
    assert_json_n("[\"a\0b\"]", 7, NULL, 0);
    /* jansson skipped one NUL after a number or literal: not here */
    assert_json_n("[1\0]", 4, NULL, 0);
    assert_json_n("1\0", 2, NULL, 0);
    assert_json_n("{\"a\":null\0}", 10, NULL, 0);
}

/* A long string keeps every UTF-8 character, wherever the writer's chunks
 * of 256 bytes end. */
static void test_canon_json_long_string_keeps_utf8(void **state)
{
    static const char *const chars[] = {"\xc3\xa9", "\xe2\x82\xac",
                                        "\xf0\x9f\x98\x80"};
    char in[1200];

    (void)state;
    for (size_t c = 0; c < sizeof(chars) / sizeof(*chars); c++) {
        for (int at = 250; at < 262; at++) {
            snprintf(in, sizeof(in), "\"%0*d%s%0*d%s\"", at, 0, chars[c], 250,
                     0, chars[c]);
            assert_json(in, in);
        }
    }
}

static void test_canon_json_depth_bound(void **state)
{
    char *ok = nested(IDEM_FP_JSON_MAX_DEPTH);
    char *deep = nested(IDEM_FP_JSON_MAX_DEPTH + 1);
    char *very = nested(100000);

    (void)state;
    assert_json(ok, ok);
    assert_not_json(deep);
    assert_not_json(very);
    free(ok);
    free(deep);
    free(very);
}

static void test_canon_json_depth_counts_objects_too(void **state)
{
    char in[8 * (IDEM_FP_JSON_MAX_DEPTH + 1) + 8];
    size_t n = 0;

    (void)state;
    for (int i = 0; i < IDEM_FP_JSON_MAX_DEPTH + 1; i++)
        n += (size_t)sprintf(in + n, "{\"a\":");
    in[n++] = '1';
    for (int i = 0; i < IDEM_FP_JSON_MAX_DEPTH + 1; i++)
        in[n++] = '}';
    in[n] = '\0';
    assert_not_json(in);
}

static void test_canon_json_depth_scan_skips_strings(void **state)
{
    char in[300];
    size_t n = 0;

    (void)state;
    /* Brackets and an escaped quote inside a string are not structure. */
    in[n++] = '[';
    in[n++] = '"';
    in[n++] = '\\';
    in[n++] = '"';
    memset(in + n, '[', 200);
    n += 200;
    in[n++] = '"';
    in[n++] = ']';
    assert_json_n(in, n, in, n);
}

static void test_canon_json_size_bound(void **state)
{
    size_t len = (size_t)IDEM_FP_JSON_MAX_BYTES + 1;
    char *in = malloc(len);

    (void)state;
    assert_non_null(in);
    /* A valid string one byte over the limit. */
    memset(in, 'a', len);
    in[0] = '"';
    in[len - 1] = '"';
    assert_json_n(in, len, NULL, 0);
    /* At the limit it is JSON. */
    in[len - 2] = '"';
    assert_json_n(in, len - 1, in, len - 1);
    free(in);
}

static void test_canon_json_canonical_form_is_a_fixed_point(void **state)
{
    static const char canonical[] =
        "{\"a\":[1,2.5,\"x\\u0000y\",{\"b\":null,\"c\":true}],\"d\":-0.0}";

    (void)state;
    assert_json(canonical, canonical);
}

static void test_canon_json_large_output_is_complete(void **state)
{
    size_t n = 0, cap = 64 * 1024;
    char *in = malloc(cap);
    text_sink_t t = text_sink();
    int is_json = 0;

    (void)state;
    assert_non_null(in);
    /* Many members, names given in reverse, and strings long and short. */
    in[n++] = '{';
    for (int i = 999; i >= 0; i--)
        n += (size_t)sprintf(in + n, "%s\"k%04d\":\"%0*d\"", i < 999 ? "," : "",
                             i, i % 50 + 1, i);
    in[n++] = '}';
    assert_int_equal(
        idem_canon_json((const uint8_t *)in, n, &t.super, &is_json), 0);
    assert_int_equal(is_json, 1);
    assert_int_equal(t.len, n);
    assert_true(t.writes > 1);
    assert_memory_equal(t.buf, "{\"k0000\":\"0\",\"k0001\":\"01\",", 26);
    free(t.buf);
    free(in);
}

static void test_canon_json_sink_error_is_returned(void **state)
{
    idem_canon_sink_t full = {full_write};
    int is_json = 0;

    (void)state;
    assert_int_equal(
        idem_canon_json((const uint8_t *)"{\"a\":1}", 7, &full, &is_json),
        IDEM_ENOMEM);
    assert_int_equal(is_json, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_pairs_sorted_by_name),
        cmocka_unit_test(test_canon_pairs_repeated_names_keep_order),
        cmocka_unit_test(test_canon_pairs_empty_segments_dropped),
        cmocka_unit_test(test_canon_pairs_empty_input_is_empty),
        cmocka_unit_test(test_canon_pairs_name_ends_at_first_equals),
        cmocka_unit_test(test_canon_pairs_segment_without_equals_is_a_name),
        cmocka_unit_test(test_canon_pairs_compare_names_not_segments),
        cmocka_unit_test(test_canon_pairs_names_compared_as_unsigned_bytes),
        cmocka_unit_test(test_canon_pairs_sorted_after_decoding),
        cmocka_unit_test(test_canon_pairs_plus_is_a_space),
        cmocka_unit_test(
            test_canon_pairs_separators_in_names_and_values_escaped),
        cmocka_unit_test(test_canon_pairs_one_encoding_per_byte),
        cmocka_unit_test(test_canon_pairs_bad_percent_kept),
        cmocka_unit_test(test_canon_pairs_bad_percent_sorts_after_bytes),
        cmocka_unit_test(test_canon_pairs_canonical_form_is_a_fixed_point),
        cmocka_unit_test(test_canon_pairs_sort_is_stable_for_many),
        cmocka_unit_test(test_canon_pairs_sink_error_is_returned),
        cmocka_unit_test(test_canon_media_type_lowered_and_trimmed),
        cmocka_unit_test(test_canon_media_parameters_kept),
        cmocka_unit_test(test_canon_media_parameter_names_lowered),
        cmocka_unit_test(test_canon_media_ows_insignificant),
        cmocka_unit_test(test_canon_media_parameters_sorted_stable),
        cmocka_unit_test(test_canon_media_quoted_values_unquoted),
        cmocka_unit_test(test_canon_media_malformed_kept_as_sent),
        cmocka_unit_test(test_canon_media_canonical_form_is_a_fixed_point),
        cmocka_unit_test(test_canon_media_long_parts_written_whole),
        cmocka_unit_test(test_canon_media_sink_error_is_returned),
        cmocka_unit_test(test_canon_json_compact_with_sorted_members),
        cmocka_unit_test(test_canon_json_nested_members_sorted),
        cmocka_unit_test(test_canon_json_array_order_kept),
        cmocka_unit_test(test_canon_json_empty_containers),
        cmocka_unit_test(test_canon_json_scalars_at_top_level),
        cmocka_unit_test(test_canon_json_member_names_sorted_as_utf8_bytes),
        cmocka_unit_test(test_canon_json_string_escapes_normalized),
        cmocka_unit_test(test_canon_json_escaped_names_equal_plain),
        cmocka_unit_test(test_canon_json_nul_in_string_kept),
        cmocka_unit_test(test_canon_json_numbers_kept_as_written),
        cmocka_unit_test(test_canon_json_integers_of_any_length),
        cmocka_unit_test(test_canon_json_reals_of_any_precision),
        cmocka_unit_test(test_canon_json_bad_numbers_are_not_json),
        cmocka_unit_test(test_canon_json_numbers_in_strings_not_checked),
        cmocka_unit_test(test_canon_json_invalid_is_not_json),
        cmocka_unit_test(test_canon_json_empty_body_is_not_json),
        cmocka_unit_test(test_canon_json_duplicate_members_are_not_json),
        cmocka_unit_test(test_canon_json_invalid_utf8_is_not_json),
        cmocka_unit_test(test_canon_json_nul_in_member_name_is_not_json),
        cmocka_unit_test(test_canon_json_raw_nul_byte_is_not_json),
        cmocka_unit_test(test_canon_json_long_string_keeps_utf8),
        cmocka_unit_test(test_canon_json_depth_bound),
        cmocka_unit_test(test_canon_json_depth_counts_objects_too),
        cmocka_unit_test(test_canon_json_depth_scan_skips_strings),
        cmocka_unit_test(test_canon_json_size_bound),
        cmocka_unit_test(test_canon_json_canonical_form_is_a_fixed_point),
        cmocka_unit_test(test_canon_json_large_output_is_complete),
        cmocka_unit_test(test_canon_json_sink_error_is_returned),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
