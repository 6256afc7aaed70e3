/*
 * test_confw.c — the gateway's nginx.conf writer (gateway/confw.c): the
 * indentation by depth, the quoting of each kind of argument, and the
 * arguments it refuses instead of writing what nginx would misread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "confw.h"

/* A writer over a memory stream. */
typedef struct {
    idemgate_confw_t w;
    FILE *f;
    char *text;
    size_t len;
} sink_t;

static void sink_open(sink_t *s)
{
    s->text = NULL;
    s->len = 0;
    s->f = open_memstream(&s->text, &s->len);
    assert_non_null(s->f);
    idemgate_confw_init(&s->w, s->f);
}

/* Finishes the writer; the text written (0) or the refusal (-1). */
static int sink_close(sink_t *s, idemgate_err_t *err)
{
    int rc = idemgate_confw_finish(&s->w, err);

    assert_int_equal(fclose(s->f), 0);
    return rc;
}

static void assert_written(void (*write)(idemgate_confw_t *), const char *want)
{
    sink_t s;
    idemgate_err_t err;

    sink_open(&s);
    write(&s.w);
    assert_int_equal(sink_close(&s, &err), 0);
    assert_string_equal(s.text, want);
    free(s.text);
}

/* The message of the refusal write makes. */
static void assert_refused(void (*write)(idemgate_confw_t *), const char *why)
{
    sink_t s;
    idemgate_err_t err;

    sink_open(&s);
    write(&s.w);
    assert_int_equal(sink_close(&s, &err), -1);
    assert_int_equal(err.status, IDEMGATE_EXIT_USAGE);
    if (strstr(err.msg, why) == NULL) {
        fail_msg("'%s' does not say '%s'", err.msg, why);
    }
    free(s.text);
}

static void nested(idemgate_confw_t *w)
{
    idemgate_confw_comment(w, "top\nsecond line");
    idemgate_confw_block(w, "http", NULL);
    idemgate_confw_block(w, "location", "= //x/%d", 400);
    idemgate_confw_directive(w, "internal", NULL);
    idemgate_confw_close(w);
    idemgate_confw_blank(w);
    idemgate_confw_comment(w, "inside");
    idemgate_confw_close(w);
}

static void test_confw_indents_by_depth(void **state)
{
    (void)state;
    assert_written(nested, "# top\n"
                           "# second line\n"
                           "http {\n"
                           "    location = //x/400 {\n"
                           "        internal;\n"
                           "    }\n"
                           "\n"
                           "    # inside\n"
                           "}\n");
}

static void syntax(idemgate_confw_t *w)
{
    idemgate_confw_directive(w, "proxy_set_header", "Host $idemgate_host");
    idemgate_confw_begin(w, "default");
    idemgate_confw_arg(w, IDEMGATE_CONFW_SYNTAX, "");
    idemgate_confw_end(w);
    idemgate_confw_directive(w, "~^(?:[1-9][0-9]{5,})$", "1");
    idemgate_confw_directive(w, "log_format", "x '$entry'");
    idemgate_confw_begin(w, "idempotency_scope");
    idemgate_confw_arg_variable(w, "$http_", "x_tenant");
    idemgate_confw_arg_variable(w, "$cookie_", "sid");
    idemgate_confw_end(w);
}

static void test_confw_syntax_is_bare_unless_nginx_would_split_it(void **state)
{
    (void)state;
    assert_written(syntax, "proxy_set_header Host $idemgate_host;\n"
                           "default \"\";\n"
                           "\"~^(?:[1-9][0-9]{5,})$\" 1;\n"
                           "log_format x '$entry';\n"
                           "idempotency_scope $http_x_tenant $cookie_sid;\n");
}

static void literals(idemgate_confw_t *w)
{
    idemgate_confw_literal(w, "idempotency_store", IDEMGATE_CONFW_TEXT,
                           "redis://:pa$$@h:6379");
    idemgate_confw_literal(w, "a", IDEMGATE_CONFW_TEXT, "on");
    idemgate_confw_literal(w, "b", IDEMGATE_CONFW_TEXT, "back\\slash");
    idemgate_confw_literal(w, "c", IDEMGATE_CONFW_VALUE, "say \"hi\" it's");
    idemgate_confw_literal(w, "d", IDEMGATE_CONFW_VALUE, "{\"a\":1}");
    idemgate_confw_begin(w, "proxy_pass");
    idemgate_confw_arg_around(w, "http://u", "/v1", "$request_uri");
    idemgate_confw_end(w);
}

static void test_confw_literals_are_always_quoted(void **state)
{
    (void)state;
    assert_written(literals, "idempotency_store \"redis://:pa$$@h:6379\";\n"
                             "a \"on\";\n"
                             "b \"back\\\\slash\";\n"
                             "c 'say \"hi\" it\\'s';\n"
                             "d '{\"a\":1}';\n"
                             "proxy_pass \"http://u/v1$request_uri\";\n");
}

static void body(idemgate_confw_t *w)
{
    static const char text[] = "{\"cost\":\"$5\", 'q' \\}\r\n\t";

    idemgate_confw_begin(w, "return");
    idemgate_confw_args(w, "%d", 400);
    idemgate_confw_arg_body(w, text, sizeof(text) - 1);
    idemgate_confw_end(w);
}

static void test_confw_body_escapes_dollar_and_line_breaks(void **state)
{
    (void)state;
    assert_written(body, "return 400 '{\"cost\":\"${idemgate_dollar}5\", "
                         "\\'q\\' \\\\}\\r\\n\\t';\n");
}

static void dollar_in_value(idemgate_confw_t *w)
{
    idemgate_confw_literal(w, "access_log", IDEMGATE_CONFW_VALUE, "/a$b");
}

static void control_in_text(idemgate_confw_t *w)
{
    idemgate_confw_literal(w, "idempotency_key_header", IDEMGATE_CONFW_TEXT,
                           "X-\001");
}

static void newline_in_text(idemgate_confw_t *w)
{
    idemgate_confw_literal(w, "user", IDEMGATE_CONFW_TEXT, "a\nb");
}

static void nul_in_body(idemgate_confw_t *w)
{
    idemgate_confw_begin(w, "return");
    idemgate_confw_arg_body(w, "a\0b", 3);
    idemgate_confw_end(w);
}

static void dollar_around(idemgate_confw_t *w)
{
    idemgate_confw_begin(w, "proxy_pass");
    idemgate_confw_arg_around(w, "http://u", "/$x", "$request_uri");
    idemgate_confw_end(w);
}

static void bad_variable(idemgate_confw_t *w)
{
    idemgate_confw_begin(w, "idempotency_scope");
    idemgate_confw_arg_variable(w, "$cookie_", "a-b");
    idemgate_confw_end(w);
}

static void open_quote(idemgate_confw_t *w)
{
    idemgate_confw_directive(w, "log_format", "x '$a'b'");
}

static void test_confw_refuses_what_nginx_would_misread(void **state)
{
    (void)state;
    assert_refused(dollar_in_value,
                   "access_log: '/a$b' has a '$', which nginx would read as "
                   "a variable");
    assert_refused(control_in_text,
                   "idempotency_key_header: the text has a control byte "
                   "(0x01)");
    assert_refused(newline_in_text, "user: the text has a control byte (0x0a)");
    assert_refused(nul_in_body, "return: the text has a NUL byte");
    assert_refused(dollar_around, "proxy_pass: '/$x' has a '$'");
    assert_refused(bad_variable, "'a-b' is not the name of a variable");
    assert_refused(open_quote, "is not one quoted string");
}

static void refused_then_more(idemgate_confw_t *w)
{
    idemgate_confw_literal(w, "first", IDEMGATE_CONFW_VALUE, "$one");
    idemgate_confw_literal(w, "second", IDEMGATE_CONFW_VALUE, "$two");
    idemgate_confw_directive(w, "third", "3");
}

static void test_confw_first_refusal_is_kept_and_stops_writing(void **state)
{
    sink_t s;
    idemgate_err_t err;

    (void)state;
    sink_open(&s);
    refused_then_more(&s.w);
    assert_int_equal(sink_close(&s, &err), -1);
    assert_non_null(strstr(err.msg, "first: '$one'"));
    assert_null(strstr(s.text, "third"));
    free(s.text);
}

static void left_open(idemgate_confw_t *w)
{
    idemgate_confw_block(w, "http", NULL);
}

static void test_confw_open_block_is_a_failure(void **state)
{
    sink_t s;
    idemgate_err_t err;

    (void)state;
    sink_open(&s);
    left_open(&s.w);
    assert_int_equal(sink_close(&s, &err), -1);
    assert_int_equal(err.status, IDEMGATE_EXIT_FAILURE);
    free(s.text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confw_indents_by_depth),
        cmocka_unit_test(test_confw_syntax_is_bare_unless_nginx_would_split_it),
        cmocka_unit_test(test_confw_literals_are_always_quoted),
        cmocka_unit_test(test_confw_body_escapes_dollar_and_line_breaks),
        cmocka_unit_test(test_confw_refuses_what_nginx_would_misread),
        cmocka_unit_test(test_confw_first_refusal_is_kept_and_stops_writing),
        cmocka_unit_test(test_confw_open_block_is_a_failure),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
