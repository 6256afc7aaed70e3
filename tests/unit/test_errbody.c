/*
 * test_errbody.c — the responses the gateway makes itself (SPEC §2, §4, §5,
 * §8) in both error styles, and the JSON string escaping they rely on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "idem.h"

static const idem_err_kind_t all_kinds[] = {
    IDEM_ERR_KEY_INVALID,
    IDEM_ERR_KEY_MISSING,
    IDEM_ERR_MISMATCH,
    IDEM_ERR_IN_PROGRESS,
    IDEM_ERR_STORE,
    IDEM_ERR_UNKNOWN_OUTCOME,
    IDEM_ERR_UPSTREAM_DOWN,
    IDEM_ERR_TOO_LARGE,
    IDEM_ERR_UNKNOWN_BROKEN,
    IDEM_ERR_TARGET_FRAGMENT,
    IDEM_ERR_UNKNOWN_RELEASED,
    IDEM_ERR_BROKEN_RELEASED,
};
#define NKINDS (sizeof(all_kinds) / sizeof(all_kinds[0]))

static const int key_errors[] = {IDEM_EKEYEMPTY, IDEM_EKEYLONG, IDEM_EKEYCHAR,
                                 IDEM_EKEYQUOTE, IDEM_EKEYDUP};
#define NKEYERRS (sizeof(key_errors) / sizeof(key_errors[0]))

static idem_errbody_t make(idem_style_t style, idem_err_kind_t kind,
                           const char *key, int key_err)
{
    idem_errbody_t e;

    assert_int_equal(
        idem_errbody(style, kind, key, key ? strlen(key) : 0, key_err, &e), 0);
    assert_non_null(e.body);
    assert_int_equal(strlen(e.body), e.body_len);
    return e;
}

static json_t *parse(const idem_errbody_t *e)
{
    json_error_t err;
    json_t *j = json_loadb(e->body, e->body_len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);

    assert_non_null(j);
    assert_true(json_is_object(j));
    return j;
}

/* The one {"title","details"} object of a persona body; checks the shape. */
static json_t *persona_error(json_t *j)
{
    json_t *errors = json_object_get(j, "errors");
    json_t *e;

    assert_int_equal(json_object_size(j), 1);
    assert_true(json_is_array(errors));
    assert_int_equal(json_array_size(errors), 1);
    e = json_array_get(errors, 0);
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 2);
    assert_true(json_is_string(json_object_get(e, "title")));
    assert_true(json_is_string(json_object_get(e, "details")));
    return e;
}

static const char *member(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void assert_persona(idem_err_kind_t kind, const char *key, int key_err,
                           int status, const char *title, const char *details)
{
    idem_errbody_t e = make(IDEM_STYLE_PERSONA, kind, key, key_err);
    json_t *j = parse(&e);
    json_t *err = persona_error(j);

    assert_int_equal(e.status, status);
    assert_string_equal(e.content_type, "application/json");
    assert_string_equal(member(err, "title"), title);
    if (details != NULL)
        assert_string_equal(member(err, "details"), details);
    json_decref(j);
    free(e.body);
}

static const char *persona_details(idem_err_kind_t kind, char *buf, size_t n)
{
    idem_errbody_t e = make(IDEM_STYLE_PERSONA, kind, "k", 0);
    json_t *j = parse(&e);

    strncpy(buf, member(persona_error(j), "details"), n - 1);
    buf[n - 1] = '\0';
    json_decref(j);
    free(e.body);
    return buf;
}

/* ---- idem_json_escape ---- */

static void test_json_escape_plain_text_copied(void **state)
{
    char out[16];

    (void)state;
    assert_int_equal(idem_json_escape(out, sizeof(out), "abc_123", 7), 7);
    assert_memory_equal(out, "abc_123", 7);
}

static void test_json_escape_quote_and_backslash(void **state)
{
    char out[16];

    (void)state;
    assert_int_equal(idem_json_escape(out, sizeof(out), "a\"b\\c", 5), 7);
    assert_memory_equal(out, "a\\\"b\\\\c", 7);
}

static void test_json_escape_control_bytes_as_u00xx(void **state)
{
    char out[64];

    (void)state;
    assert_int_equal(idem_json_escape(out, sizeof(out), "\0\n\x1f\x7f", 4), 24);
    assert_memory_equal(out, "\\u0000\\u000a\\u001f\\u007f", 24);
}

static void test_json_escape_copies_well_formed_utf8(void **state)
{
    static const char text[] = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                               "\xed\x9f\xbf\xf4\x8f\xbf\xbf";
    char out[32];

    (void)state;
    assert_int_equal(idem_json_escape(out, sizeof(out), text, sizeof(text) - 1),
                     sizeof(text) - 1);
    assert_memory_equal(out, text, sizeof(text) - 1);
}

/* Each byte outside a well-formed sequence is one replacement character. */
static void test_json_escape_replaces_invalid_utf8(void **state)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"\xff", "\\ufffd"}, /* never in UTF-8       */
        {"a\x80"
         "b",
         "a\\ufffdb"},                             /* stray continuation   */
        {"\xc3", "\\ufffd"},                       /* truncated at the end */
        {"\xc3(", "\\ufffd("},                     /* truncated mid-text   */
        {"\xc0\xaf", "\\ufffd\\ufffd"},            /* overlong '/'         */
        {"\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd"}, /* overlong, 3 bytes    */
        {"\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd"}, /* a UTF-16 surrogate   */
        {"\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd"}, /* > U+10FFFF */
        {"\xf5\x80", "\\ufffd\\ufffd"}, /* no such lead byte    */
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = idem_json_escape(out, sizeof(out), cases[i].in,
                                    strlen(cases[i].in));

        assert_int_equal(n, strlen(cases[i].out));
        assert_memory_equal(out, cases[i].out, n);
    }
}

/* Whatever the bytes, a strict decoder takes the escaped text back. */
static void test_json_escape_output_is_valid_json_for_every_byte(void **state)
{
    char in[512], out[4096];

    (void)state;
    for (size_t i = 0; i < 256; i++) {
        in[2 * i] = (char)i;
        in[2 * i + 1] = (char)(255 - i);
    }
    size_t n = idem_json_escape(out + 1, sizeof(out) - 3, in, sizeof(in));
    assert_true(n + 3 <= sizeof(out));
    out[0] = '"';
    out[n + 1] = '"';
    out[n + 2] = '\0';
    json_error_t err;
    json_t *j = json_loads(out, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    assert_non_null(j);
    assert_true(json_is_string(j));
    json_decref(j);
}

static void
test_json_escape_returns_length_needed_and_stops_at_cap(void **state)
{
    char out[8];

    (void)state;
    memset(out, '#', sizeof(out));
    assert_int_equal(idem_json_escape(out, 4, "a\"bcdef", 7), 8);
    assert_memory_equal(out, "a\\\"b####", 8);
    assert_int_equal(idem_json_escape(NULL, 0, "\n", 1), 6);
    assert_int_equal(idem_json_escape(NULL, 0, "", 0), 0);
}

/* ---- persona style ---- */

static void test_errbody_persona_mismatch_exact_seed_text(void **state)
{
    static const char seed[] =
        "{\"errors\":[{\"title\":\"Idempotency error\",\"details\":\"Keys for "
        "idempotent requests can only be used with the same parameters they "
        "were first used with. Try using a key other than 'abc_123' if you "
        "meant to execute a different request.\"}]}";
    idem_errbody_t e =
        make(IDEM_STYLE_PERSONA, IDEM_ERR_MISMATCH, "abc_123", 0);

    (void)state;
    assert_int_equal(e.status, 400);
    assert_string_equal(e.content_type, "application/json");
    assert_string_equal(e.body, seed);
    assert_int_equal(e.body_len, sizeof(seed) - 1);
    free(e.body);
}

static void test_errbody_key_is_json_escaped(void **state)
{
    idem_errbody_t e =
        make(IDEM_STYLE_PERSONA, IDEM_ERR_MISMATCH, "a\"b\\c", 0);
    json_t *j = parse(&e);

    (void)state;
    assert_non_null(strstr(e.body, "other than 'a\\\"b\\\\c' if"));
    assert_non_null(
        strstr(member(persona_error(j), "details"), "other than 'a\"b\\c' if"));
    json_decref(j);
    free(e.body);
}

static void test_errbody_key_with_any_bytes_stays_valid_json(void **state)
{
    static const char key[] = {'<', '\0', '\n', '"', '\x7f', '>'};
    idem_errbody_t e;
    json_t *j;

    (void)state;
    for (size_t s = 0; s < 2; s++) {
        assert_int_equal(idem_errbody((idem_style_t)s, IDEM_ERR_IN_PROGRESS,
                                      key, sizeof(key), 0, &e),
                         0);
        assert_int_equal(strlen(e.body), e.body_len);
        j = parse(&e);
        json_decref(j);
        free(e.body);
    }
}

static void test_errbody_persona_in_progress_is_409(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_IN_PROGRESS, "k", 0, 409, "Idempotency error",
                   NULL);
    persona_details(IDEM_ERR_IN_PROGRESS, details, sizeof(details));
    assert_non_null(strstr(details, "still in progress"));
    assert_non_null(strstr(details, "'k'"));
    assert_non_null(strstr(details, "Retry later"));
}

static void test_errbody_persona_key_invalid_names_the_rule(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKEYERRS; i++)
        assert_persona(IDEM_ERR_KEY_INVALID, "", key_errors[i], 400,
                       "Idempotency error", idem_key_problem(key_errors[i]));
}

static void test_errbody_persona_key_invalid_other_code_is_generic(void **state)
{
    (void)state;
    assert_persona(IDEM_ERR_KEY_INVALID, "", IDEM_ENOMEM, 400,
                   "Idempotency error",
                   "The Idempotency-Key header is malformed.");
    assert_persona(IDEM_ERR_KEY_INVALID, "", 0, 400, "Idempotency error",
                   "The Idempotency-Key header is malformed.");
}

static void test_errbody_persona_key_missing_says_header_required(void **state)
{
    (void)state;
    assert_persona(IDEM_ERR_KEY_MISSING, NULL, 0, 400, "Idempotency error",
                   idem_key_problem(IDEM_EKEYMISSING));
}

static void test_errbody_persona_store_is_503_not_forwarded(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_STORE, "k", 0, 503, "Service unavailable", NULL);
    persona_details(IDEM_ERR_STORE, details, sizeof(details));
    assert_non_null(strstr(details, "store is unavailable"));
    assert_non_null(strstr(details, "not forwarded"));
}

static void test_errbody_persona_unknown_outcome_is_504(void **state)
{
    (void)state;
    assert_persona(IDEM_ERR_UNKNOWN_OUTCOME, "k", 0, 504,
                   "Upstream outcome unknown",
                   "The request was sent upstream but no complete response "
                   "came back and was stored. Its outcome is unknown, so this "
                   "key will not run it again.");
}

static void
test_errbody_persona_released_outcomes_say_the_key_is_free(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_UNKNOWN_RELEASED, "k", 0, 504,
                   "Upstream outcome unknown", NULL);
    persona_details(IDEM_ERR_UNKNOWN_RELEASED, details, sizeof(details));
    assert_non_null(strstr(details, "the key was released"));
    assert_null(strstr(details, "will not run it again"));
    assert_persona(IDEM_ERR_BROKEN_RELEASED, "k", 0, 502,
                   "Upstream outcome unknown", NULL);
    persona_details(IDEM_ERR_BROKEN_RELEASED, details, sizeof(details));
    assert_non_null(strstr(details, "connection broke"));
    assert_non_null(strstr(details, "the key was released"));
    assert_null(strstr(details, "will not run it again"));
}

/* a key that came in another header: the rule names that header */
static void test_errbody_named_header_in_the_rule(void **state)
{
    idem_errbody_t e;
    json_t *j;

    (void)state;
    assert_int_equal(
        idem_errbody_named(IDEM_STYLE_PERSONA, IDEM_ERR_KEY_INVALID, "", 0,
                           IDEM_EKEYEMPTY, "X-Idempotency-Key", 17, &e),
        0);
    j = parse(&e);
    assert_string_equal(member(persona_error(j), "details"),
                        "The X-Idempotency-Key header is empty; a key has 1 "
                        "to 255 characters.");
    json_decref(j);
    free(e.body);

    /* Idempotency-Key itself, in any case, and no header: the rule as is */
    assert_int_equal(
        idem_errbody_named(IDEM_STYLE_PERSONA, IDEM_ERR_KEY_INVALID, "", 0,
                           IDEM_EKEYDUP, "idempotency-key", 15, &e),
        0);
    j = parse(&e);
    assert_string_equal(member(persona_error(j), "details"),
                        idem_key_problem(IDEM_EKEYDUP));
    json_decref(j);
    free(e.body);
    assert_int_equal(idem_errbody_named(IDEM_STYLE_STRIPE, IDEM_ERR_KEY_INVALID,
                                        "", 0, IDEM_EKEYDUP, NULL, 0, &e),
                     0);
    assert_non_null(strstr(e.body, "The Idempotency-Key header appears"));
    free(e.body);

    /* other kinds are not touched */
    assert_int_equal(idem_errbody_named(IDEM_STYLE_PERSONA,
                                        IDEM_ERR_IN_PROGRESS, "k", 1, 0,
                                        "X-Idempotency-Key", 17, &e),
                     0);
    assert_non_null(strstr(e.body, "A request with the Idempotency-Key 'k'"));
    free(e.body);
}

static void test_errbody_persona_unknown_broken_is_502(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_UNKNOWN_BROKEN, "k", 0, 502,
                   "Upstream outcome unknown", NULL);
    persona_details(IDEM_ERR_UNKNOWN_BROKEN, details, sizeof(details));
    assert_non_null(strstr(details, "connection broke"));
    assert_non_null(strstr(details, "will not run it again"));
}

static void test_errbody_persona_target_fragment_is_400(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_TARGET_FRAGMENT, "k", 0, 400, "Idempotency error",
                   NULL);
    persona_details(IDEM_ERR_TARGET_FRAGMENT, details, sizeof(details));
    assert_non_null(strstr(details, "fragment"));
}

/* In every style and kind, the status line and the body's status agree. */
static void test_errbody_status_and_body_agree_in_every_style(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKINDS; i++) {
        idem_errbody_t p =
            make(IDEM_STYLE_PERSONA, all_kinds[i], "k", IDEM_EKEYCHAR);
        idem_errbody_t t =
            make(IDEM_STYLE_IETF, all_kinds[i], "k", IDEM_EKEYCHAR);
        json_t *tj = parse(&t);

        assert_int_equal(json_integer_value(json_object_get(tj, "status")),
                         t.status);
        /* the persona body has no status; its kind's gateway errors keep
           the same status line as the ietf style, but the two the draft
           renumbers (422 for a reuse with other parameters) */
        if (all_kinds[i] != IDEM_ERR_MISMATCH)
            assert_int_equal(p.status, t.status);
        json_decref(tj);
        free(p.body);
        free(t.body);
    }
}

static void
test_errbody_persona_upstream_down_is_502_safe_to_retry(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_UPSTREAM_DOWN, "k", 0, 502, "Bad gateway", NULL);
    persona_details(IDEM_ERR_UPSTREAM_DOWN, details, sizeof(details));
    assert_non_null(strstr(details, "could not be reached"));
    assert_non_null(strstr(details, "nothing was executed"));
    assert_non_null(strstr(details, "same key is safe"));
}

static void test_errbody_persona_too_large_is_502(void **state)
{
    char details[512];

    (void)state;
    assert_persona(IDEM_ERR_TOO_LARGE, "k", 0, 502, "Response too large", NULL);
    persona_details(IDEM_ERR_TOO_LARGE, details, sizeof(details));
    assert_non_null(strstr(details, "larger than the gateway stores"));
    assert_non_null(strstr(details, "cannot be replayed"));
}

static void test_errbody_persona_shape_for_every_kind(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKINDS; i++) {
        idem_errbody_t e =
            make(IDEM_STYLE_PERSONA, all_kinds[i], "abc", IDEM_EKEYLONG);
        json_t *j = parse(&e);

        (void)persona_error(j);
        assert_memory_equal(e.body, "{\"errors\":[{\"title\":\"", 21);
        json_decref(j);
        free(e.body);
    }
}

/* ---- ietf style ---- */

static void assert_ietf(idem_err_kind_t kind, int key_err, int status,
                        const char *type, const char *title)
{
    idem_errbody_t e = make(IDEM_STYLE_IETF, kind, "abc_123", key_err);
    json_t *j = parse(&e);

    assert_int_equal(e.status, status);
    assert_string_equal(e.content_type, "application/problem+json");
    assert_int_equal(json_object_size(j), 4);
    assert_string_equal(member(j, "type"), type);
    assert_string_equal(member(j, "title"), title);
    assert_true(json_is_integer(json_object_get(j, "status")));
    assert_int_equal(json_integer_value(json_object_get(j, "status")), status);
    assert_true(strlen(member(j, "detail")) > 0);
    json_decref(j);
    free(e.body);
}

#define DRAFT                                                                  \
    "https://datatracker.ietf.org/doc/"                                        \
    "draft-ietf-httpapi-idempotency-key-header/"

static void test_errbody_ietf_mismatch_is_422(void **state)
{
    idem_errbody_t e = make(IDEM_STYLE_IETF, IDEM_ERR_MISMATCH, "abc_123", 0);
    json_t *j = parse(&e);

    (void)state;
    assert_ietf(IDEM_ERR_MISMATCH, 0, 422, DRAFT,
                "Idempotency-Key is already used");
    assert_string_equal(member(j, "detail"),
                        "Keys for idempotent requests can only be used with "
                        "the same parameters they were first used with. Try "
                        "using a key other than 'abc_123' if you meant to "
                        "execute a different request.");
    json_decref(j);
    free(e.body);
}

static void test_errbody_ietf_in_progress_is_409(void **state)
{
    (void)state;
    assert_ietf(IDEM_ERR_IN_PROGRESS, 0, 409, DRAFT,
                "A request is outstanding for this Idempotency-Key");
}

static void test_errbody_ietf_missing_key_is_400(void **state)
{
    (void)state;
    assert_ietf(IDEM_ERR_KEY_MISSING, 0, 400, DRAFT,
                "Idempotency-Key is missing");
}

static void test_errbody_ietf_malformed_key_is_400_naming_rule(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKEYERRS; i++) {
        idem_errbody_t e =
            make(IDEM_STYLE_IETF, IDEM_ERR_KEY_INVALID, "", key_errors[i]);
        json_t *j = parse(&e);

        assert_string_equal(member(j, "detail"),
                            idem_key_problem(key_errors[i]));
        json_decref(j);
        free(e.body);
        assert_ietf(IDEM_ERR_KEY_INVALID, key_errors[i], 400, DRAFT,
                    "Idempotency-Key is malformed");
    }
}

static void test_errbody_ietf_gateway_errors_keep_status(void **state)
{
    (void)state;
    assert_ietf(IDEM_ERR_STORE, 0, 503, "about:blank", "Service Unavailable");
    assert_ietf(IDEM_ERR_UNKNOWN_OUTCOME, 0, 504, "about:blank",
                "Gateway Timeout");
    assert_ietf(IDEM_ERR_UNKNOWN_BROKEN, 0, 502, "about:blank", "Bad Gateway");
    assert_ietf(IDEM_ERR_TARGET_FRAGMENT, 0, 400, "about:blank", "Bad Request");
    assert_ietf(IDEM_ERR_UPSTREAM_DOWN, 0, 502, "about:blank", "Bad Gateway");
    assert_ietf(IDEM_ERR_TOO_LARGE, 0, 502, "about:blank", "Bad Gateway");
}

static void test_errbody_ietf_detail_matches_persona_details(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKINDS; i++) {
        idem_errbody_t p =
            make(IDEM_STYLE_PERSONA, all_kinds[i], "k", IDEM_EKEYCHAR);
        idem_errbody_t t =
            make(IDEM_STYLE_IETF, all_kinds[i], "k", IDEM_EKEYCHAR);
        json_t *pj = parse(&p);
        json_t *tj = parse(&t);

        assert_string_equal(member(persona_error(pj), "details"),
                            member(tj, "detail"));
        json_decref(pj);
        json_decref(tj);
        free(p.body);
        free(t.body);
    }
}

/* ---- stripe style ---- */

/* The error member of a stripe-style body, checked for its shape. */
static void assert_stripe(idem_err_kind_t kind, int key_err, int status,
                          const char *type)
{
    idem_errbody_t e = make(IDEM_STYLE_STRIPE, kind, "abc_123", key_err);
    idem_errbody_t p = make(IDEM_STYLE_PERSONA, kind, "abc_123", key_err);
    json_t *j = parse(&e), *pj = parse(&p);
    json_t *err = json_object_get(j, "error");

    assert_int_equal(e.status, status);
    assert_int_equal(e.status, p.status);
    assert_string_equal(e.content_type, "application/json");
    assert_true(json_is_object(err));
    assert_int_equal(json_object_size(j), 1);
    assert_int_equal(json_object_size(err), 2);
    assert_string_equal(member(err, "type"), type);
    assert_string_equal(member(err, "message"),
                        member(persona_error(pj), "details"));
    json_decref(j);
    json_decref(pj);
    free(e.body);
    free(p.body);
}

static void
test_errbody_stripe_key_problems_are_idempotency_errors(void **state)
{
    (void)state;
    assert_stripe(IDEM_ERR_MISMATCH, 0, 400, "idempotency_error");
    assert_stripe(IDEM_ERR_KEY_INVALID, IDEM_EKEYLONG, 400,
                  "idempotency_error");
    assert_stripe(IDEM_ERR_KEY_MISSING, 0, 400, "idempotency_error");
}

static void test_errbody_stripe_gateway_errors_are_api_errors(void **state)
{
    (void)state;
    assert_stripe(IDEM_ERR_IN_PROGRESS, 0, 409, "api_error");
    assert_stripe(IDEM_ERR_UNKNOWN_OUTCOME, 0, 504, "api_error");
    assert_stripe(IDEM_ERR_UNKNOWN_BROKEN, 0, 502, "api_error");
    assert_stripe(IDEM_ERR_STORE, 0, 503, "api_error");
    assert_stripe(IDEM_ERR_UPSTREAM_DOWN, 0, 502, "api_error");
    assert_stripe(IDEM_ERR_TOO_LARGE, 0, 502, "api_error");
    assert_stripe(IDEM_ERR_TARGET_FRAGMENT, 0, 400, "invalid_request_error");
}

static void test_errbody_stripe_mismatch_message_names_the_key(void **state)
{
    idem_errbody_t e = make(IDEM_STYLE_STRIPE, IDEM_ERR_MISMATCH, "a\"b", 0);

    (void)state;
    assert_non_null(strstr(e.body, "other than 'a\\\"b' if you meant"));
    free(e.body);
}

/* ---- arguments ---- */

static void test_errbody_unknown_kind_or_style_is_einval(void **state)
{
    idem_errbody_t e = {0, NULL, NULL, 0};

    (void)state;
    assert_int_equal(
        idem_errbody(IDEM_STYLE_PERSONA, (idem_err_kind_t)0, "k", 1, 0, &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody(IDEM_STYLE_PERSONA, (idem_err_kind_t)99, "k", 1, 0, &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody((idem_style_t)7, IDEM_ERR_MISMATCH, "k", 1, 0, &e),
        IDEM_EINVAL);
    assert_null(e.body);
}

static void test_errbody_null_key_is_empty(void **state)
{
    idem_errbody_t e;

    (void)state;
    assert_int_equal(
        idem_errbody(IDEM_STYLE_PERSONA, IDEM_ERR_MISMATCH, NULL, 5, 0, &e), 0);
    assert_non_null(strstr(e.body, "other than '' if"));
    free(e.body);
}

static void test_errbody_long_key_fits(void **state)
{
    char key[IDEM_KEY_MAX + 1];
    idem_errbody_t e;
    json_t *j;

    (void)state;
    memset(key, '"', IDEM_KEY_MAX);
    key[IDEM_KEY_MAX] = '\0';
    assert_int_equal(idem_errbody(IDEM_STYLE_IETF, IDEM_ERR_MISMATCH, key,
                                  IDEM_KEY_MAX, 0, &e),
                     0);
    assert_int_equal(strlen(e.body), e.body_len);
    j = parse(&e);
    assert_non_null(strstr(member(j, "detail"), key));
    json_decref(j);
    free(e.body);
}

/* ---- templates ---- */

#define TPL_JSON                                                               \
    "{\"error\":{\"code\":{status},\"title\":\"{title}\","                     \
    "\"message\":\"{details}\",\"key\":\"{key}\"}}"

static idem_errtpl_t *tpl_of(const char *text)
{
    idem_errtpl_t *t = NULL;
    char why[256];

    assert_int_equal(
        idem_errtpl_parse(text, strlen(text), &t, why, sizeof(why)), 0);
    assert_non_null(t);
    return t;
}

static idem_errbody_t tpl_make(const idem_errtpl_t *t, idem_err_kind_t kind,
                               const char *key)
{
    idem_errbody_t e;

    assert_int_equal(
        idem_errbody_template(t, kind, key, key ? strlen(key) : 0, 0, &e), 0);
    assert_non_null(e.body);
    assert_int_equal(strlen(e.body), e.body_len);
    return e;
}

static void test_errtpl_json_template_every_kind(void **state)
{
    idem_errtpl_t *t = tpl_of(TPL_JSON);

    (void)state;
    for (size_t i = 0; i < NKINDS; i++) {
        idem_errbody_t e = tpl_make(t, all_kinds[i], "abc_123");
        idem_errbody_t p =
            make(IDEM_STYLE_PERSONA, all_kinds[i], "abc_123", IDEM_EKEYCHAR);
        json_t *j = parse(&e), *pj = parse(&p);
        json_t *err = json_object_get(j, "error");
        json_t *perr = persona_error(pj);

        /* the persona status, title and details, in the template's shape */
        assert_int_equal(e.status, p.status);
        assert_string_equal(e.content_type, "application/json");
        assert_int_equal(json_integer_value(json_object_get(err, "code")),
                         p.status);
        assert_string_equal(member(err, "title"), member(perr, "title"));
        if (all_kinds[i] != IDEM_ERR_KEY_INVALID)
            assert_string_equal(member(err, "message"),
                                member(perr, "details"));
        assert_string_equal(member(err, "key"), "abc_123");
        json_decref(j);
        json_decref(pj);
        free(e.body);
        free(p.body);
    }
    idem_errtpl_free(t);
}

static void test_errtpl_values_are_json_escaped(void **state)
{
    idem_errtpl_t *t = tpl_of(TPL_JSON);
    const char *key = "a\"b\\c}{key}";
    idem_errbody_t e = tpl_make(t, IDEM_ERR_MISMATCH, key);
    json_t *j = parse(&e);
    json_t *err = json_object_get(j, "error");

    (void)state;
    assert_string_equal(member(err, "key"), key);
    assert_non_null(strstr(member(err, "message"), key));
    assert_non_null(strstr(e.body, "a\\\"b\\\\c}{key}"));
    json_decref(j);
    free(e.body);
    idem_errtpl_free(t);
}

static void test_errtpl_content_type_line(void **state)
{
    idem_errtpl_t *t = tpl_of(
        "content-TYPE:  application/vnd.error+json \r\n<e s=\"{status}\"/>");
    idem_errbody_t e = tpl_make(t, IDEM_ERR_IN_PROGRESS, "k");

    (void)state;
    assert_string_equal(idem_errtpl_content_type(t),
                        "application/vnd.error+json");
    assert_string_equal(e.content_type, "application/vnd.error+json");
    assert_string_equal(e.body, "<e s=\"409\"/>");
    free(e.body);
    idem_errtpl_free(t);
}

static void test_errtpl_plain_text_and_literals(void **state)
{
    idem_errtpl_t *t = tpl_of("{{status}} {} { status } {\"a\":{status}}\n");
    idem_errbody_t e = tpl_make(t, IDEM_ERR_STORE, NULL);

    (void)state;
    /* "{{" is a '{'; braces that are no placeholder stay as they are */
    assert_string_equal(e.body, "{status}} {} { status } {\"a\":503}\n");
    assert_int_equal(e.status, 503);
    free(e.body);
    idem_errtpl_free(t);

    t = tpl_of("no placeholders");
    e = tpl_make(t, IDEM_ERR_MISMATCH, "k");
    assert_string_equal(e.body, "no placeholders");
    free(e.body);
    idem_errtpl_free(t);

    t = tpl_of("Content-Type: text/plain");
    e = tpl_make(t, IDEM_ERR_MISMATCH, "k");
    assert_string_equal(e.body, "");
    assert_string_equal(e.content_type, "text/plain");
    free(e.body);
    idem_errtpl_free(t);
}

static void test_errtpl_unknown_placeholder_is_refused(void **state)
{
    static const char *const bad[] = {
        "{\"code\":\n{code}}", "{Status}", "{status_}", "{key2}", "{_}",
    };
    idem_errtpl_t *t = (idem_errtpl_t *)&t;
    char why[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        assert_int_equal(
            idem_errtpl_parse(bad[i], strlen(bad[i]), &t, why, sizeof(why)),
            IDEM_EINVAL);
        assert_non_null(strstr(why, "unknown placeholder"));
    }
    assert_non_null(strstr(why, "{_}"));
    assert_int_equal(
        idem_errtpl_parse("{\"code\":\n{code}}", 16, &t, why, sizeof(why)),
        IDEM_EINVAL);
    assert_non_null(strstr(why, "{code} on line 2"));
    assert_int_equal(
        idem_errtpl_parse("Content-Type: a/b\n\n{x}", 22, &t, why, sizeof(why)),
        IDEM_EINVAL);
    assert_non_null(strstr(why, "{x} on line 3"));
    /* a failed parse leaves *out alone */
    assert_ptr_equal(t, (idem_errtpl_t *)&t);
}

static void test_errtpl_bad_content_type_or_size(void **state)
{
    idem_errtpl_t *t = NULL;
    char why[256];
    char *big;

    (void)state;
    assert_int_equal(
        idem_errtpl_parse("Content-Type: \n{}", 17, &t, why, sizeof(why)),
        IDEM_EINVAL);
    assert_non_null(strstr(why, "names no type"));
    assert_int_equal(
        idem_errtpl_parse("Content-Type: a/\x01\n{}", 19, &t, why, sizeof(why)),
        IDEM_EINVAL);
    assert_non_null(strstr(why, "printable"));
    big = malloc(IDEM_ERRTPL_MAX + 1);
    assert_non_null(big);
    memset(big, 'x', IDEM_ERRTPL_MAX + 1);
    assert_int_equal(
        idem_errtpl_parse(big, IDEM_ERRTPL_MAX + 1, &t, why, sizeof(why)),
        IDEM_EINVAL);
    assert_int_equal(idem_errtpl_parse(big, IDEM_ERRTPL_MAX, &t, why, 0), 0);
    idem_errtpl_free(t);
    free(big);
}

static void test_errtpl_render_and_unknown_kind(void **state)
{
    idem_errtpl_t *t = tpl_of("{status}|{title}|{details}|{key}");
    idem_errbody_t e;

    (void)state;
    assert_int_equal(
        idem_errtpl_render(t, 413, "Too \"big\"", "d\n", "k", 1, &e), 0);
    assert_string_equal(e.body, "413|Too \\\"big\\\"|d\\u000a|k");
    assert_int_equal(e.status, 413);
    free(e.body);
    assert_int_equal(
        idem_errbody_template(t, (idem_err_kind_t)99, "k", 1, 0, &e),
        IDEM_EINVAL);
    idem_errtpl_free(t);
    idem_errtpl_free(NULL);
}

/* ---- idem_errbody_page: the gateway's pages for nginx's own errors ---- */

/* A page as the gateway wrote it in nginx.conf before libidem rendered
 * it: conf.c printed these bodies with printf, byte for byte. */
static const struct {
    idem_style_t style;
    int status;
    const char *title, *ietf_title, *details;
    const char *content_type, *body;
} old_pages[] = {
    {IDEM_STYLE_PERSONA, 400, "Bad request", "Bad Request",
     "The request is not valid HTTP.", "application/json",
     "{\"errors\":[{\"title\":\"Bad request\",\"details\":\"The request is "
     "not valid HTTP.\"}]}"},
    {IDEM_STYLE_PERSONA, 431, "Request header fields too large",
     "Request Header Fields Too Large",
     "The request header section is larger than the limit of 16384 bytes.",
     "application/json",
     "{\"errors\":[{\"title\":\"Request header fields too large\","
     "\"details\":\"The request header section is larger than the limit of "
     "16384 bytes.\"}]}"},
    {IDEM_STYLE_IETF, 502, "Bad gateway", "Bad Gateway",
     "The upstream API could not be reached or sent an invalid response.",
     "application/problem+json",
     "{\"type\":\"about:blank\",\"title\":\"Bad Gateway\",\"status\":502,"
     "\"detail\":\"The upstream API could not be reached or sent an invalid "
     "response.\"}"},
    {IDEM_STYLE_IETF, 413, "Request too large", "Content Too Large",
     "The request body is larger than the limit of 1048576 bytes.",
     "application/problem+json",
     "{\"type\":\"about:blank\",\"title\":\"Content Too Large\","
     "\"status\":413,\"detail\":\"The request body is larger than the "
     "limit of 1048576 bytes.\"}"},
    {IDEM_STYLE_STRIPE, 405, "Method not allowed", "Method Not Allowed",
     "This method is not allowed here.", "application/json",
     "{\"error\":{\"type\":\"invalid_request_error\",\"message\":\"This "
     "method is not allowed here.\"}}"},
    {IDEM_STYLE_STRIPE, 504, "Gateway timeout", "Gateway Timeout",
     "The upstream API did not answer within the upstream timeout of 60s.",
     "application/json",
     "{\"error\":{\"type\":\"api_error\",\"message\":\"The upstream API did "
     "not answer within the upstream timeout of 60s.\"}}"},
};

static void test_errbody_page_equals_the_old_gateway_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(old_pages) / sizeof(old_pages[0]); i++) {
        idem_errbody_t e;

        assert_int_equal(
            idem_errbody_page(old_pages[i].style, old_pages[i].status,
                              old_pages[i].title, old_pages[i].ietf_title,
                              old_pages[i].details, &e),
            0);
        assert_int_equal(e.status, old_pages[i].status);
        assert_string_equal(e.content_type, old_pages[i].content_type);
        assert_string_equal(e.body, old_pages[i].body);
        assert_int_equal(e.body_len, strlen(old_pages[i].body));
        free(e.body);
    }
}

static void test_errbody_page_members_in_every_style(void **state)
{
    static const int statuses[] = {400, 404, 405, 408, 411, 413, 414,
                                   431, 500, 501, 502, 503, 504, 505};
    const char *details = "Said \"no\" \\ \x01 here.";

    (void)state;
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        int status = statuses[i];
        idem_errbody_t e;
        json_t *j, *err;

        assert_int_equal(idem_errbody_page(IDEM_STYLE_PERSONA, status, "T",
                                           "Phrase", details, &e),
                         0);
        j = parse(&e);
        err = persona_error(j);
        assert_string_equal(member(err, "title"), "T");
        assert_string_equal(member(err, "details"), details);
        assert_int_equal(e.status, status);
        assert_string_equal(e.content_type, "application/json");
        json_decref(j);
        free(e.body);

        assert_int_equal(idem_errbody_page(IDEM_STYLE_IETF, status, "T",
                                           "Phrase", details, &e),
                         0);
        j = parse(&e);
        assert_int_equal(json_object_size(j), 4);
        assert_string_equal(member(j, "type"), "about:blank");
        assert_string_equal(member(j, "title"), "Phrase");
        assert_int_equal(json_integer_value(json_object_get(j, "status")),
                         status);
        assert_string_equal(member(j, "detail"), details);
        assert_string_equal(e.content_type, "application/problem+json");
        json_decref(j);
        free(e.body);

        assert_int_equal(idem_errbody_page(IDEM_STYLE_STRIPE, status, "T",
                                           "Phrase", details, &e),
                         0);
        j = parse(&e);
        assert_int_equal(json_object_size(j), 1);
        err = json_object_get(j, "error");
        assert_true(json_is_object(err));
        assert_int_equal(json_object_size(err), 2);
        assert_string_equal(member(err, "type"), status < 500
                                                     ? "invalid_request_error"
                                                     : "api_error");
        assert_string_equal(member(err, "message"), details);
        assert_string_equal(e.content_type, "application/json");
        json_decref(j);
        free(e.body);
    }
}

static void test_errbody_page_bad_arguments_are_einval(void **state)
{
    idem_errbody_t e;

    (void)state;
    assert_int_equal(idem_errbody_page((idem_style_t)7, 400, "T", "P", "D", &e),
                     IDEM_EINVAL);
    assert_int_equal(
        idem_errbody_page(IDEM_STYLE_PERSONA, 99, "T", "P", "D", &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody_page(IDEM_STYLE_PERSONA, 600, "T", "P", "D", &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody_page(IDEM_STYLE_IETF, 400, "T", NULL, "D", &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody_page(IDEM_STYLE_STRIPE, 400, NULL, "P", "D", &e),
        IDEM_EINVAL);
    assert_int_equal(
        idem_errbody_page(IDEM_STYLE_PERSONA, 400, "T", "P", NULL, &e),
        IDEM_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escape_plain_text_copied),
        cmocka_unit_test(test_json_escape_quote_and_backslash),
        cmocka_unit_test(test_json_escape_control_bytes_as_u00xx),
        cmocka_unit_test(test_json_escape_copies_well_formed_utf8),
        cmocka_unit_test(test_json_escape_replaces_invalid_utf8),
        cmocka_unit_test(test_json_escape_output_is_valid_json_for_every_byte),
        cmocka_unit_test(
            test_json_escape_returns_length_needed_and_stops_at_cap),
        cmocka_unit_test(test_errbody_persona_mismatch_exact_seed_text),
        cmocka_unit_test(test_errbody_key_is_json_escaped),
        cmocka_unit_test(test_errbody_key_with_any_bytes_stays_valid_json),
        cmocka_unit_test(test_errbody_persona_in_progress_is_409),
        cmocka_unit_test(test_errbody_persona_key_invalid_names_the_rule),
        cmocka_unit_test(
            test_errbody_persona_key_invalid_other_code_is_generic),
        cmocka_unit_test(test_errbody_persona_key_missing_says_header_required),
        cmocka_unit_test(test_errbody_persona_store_is_503_not_forwarded),
        cmocka_unit_test(test_errbody_persona_unknown_outcome_is_504),
        cmocka_unit_test(test_errbody_persona_unknown_broken_is_502),
        cmocka_unit_test(test_errbody_named_header_in_the_rule),
        cmocka_unit_test(
            test_errbody_persona_released_outcomes_say_the_key_is_free),
        cmocka_unit_test(test_errbody_persona_target_fragment_is_400),
        cmocka_unit_test(test_errbody_status_and_body_agree_in_every_style),
        cmocka_unit_test(
            test_errbody_persona_upstream_down_is_502_safe_to_retry),
        cmocka_unit_test(test_errbody_persona_too_large_is_502),
        cmocka_unit_test(test_errbody_persona_shape_for_every_kind),
        cmocka_unit_test(test_errbody_ietf_mismatch_is_422),
        cmocka_unit_test(test_errbody_ietf_in_progress_is_409),
        cmocka_unit_test(test_errbody_ietf_missing_key_is_400),
        cmocka_unit_test(test_errbody_ietf_malformed_key_is_400_naming_rule),
        cmocka_unit_test(test_errbody_ietf_gateway_errors_keep_status),
        cmocka_unit_test(test_errbody_ietf_detail_matches_persona_details),
        cmocka_unit_test(
            test_errbody_stripe_key_problems_are_idempotency_errors),
        cmocka_unit_test(test_errbody_stripe_gateway_errors_are_api_errors),
        cmocka_unit_test(test_errbody_stripe_mismatch_message_names_the_key),
        cmocka_unit_test(test_errbody_unknown_kind_or_style_is_einval),
        cmocka_unit_test(test_errbody_null_key_is_empty),
        cmocka_unit_test(test_errbody_long_key_fits),
        cmocka_unit_test(test_errtpl_json_template_every_kind),
        cmocka_unit_test(test_errtpl_values_are_json_escaped),
        cmocka_unit_test(test_errtpl_content_type_line),
        cmocka_unit_test(test_errtpl_plain_text_and_literals),
        cmocka_unit_test(test_errtpl_unknown_placeholder_is_refused),
        cmocka_unit_test(test_errtpl_bad_content_type_or_size),
        cmocka_unit_test(test_errtpl_render_and_unknown_kind),
        cmocka_unit_test(test_errbody_page_equals_the_old_gateway_text),
        cmocka_unit_test(test_errbody_page_members_in_every_style),
        cmocka_unit_test(test_errbody_page_bad_arguments_are_einval),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
