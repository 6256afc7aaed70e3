/*
 * fuzz_canon_json.c — libFuzzer target that holds the JSON parser of
 * lib/core/canon_json.c to jansson, which read JSON bodies before it.
 *
 * Input layout: the whole input is the body.
 *
 * The target checks, beyond "no crash, no read outside the input":
 *   - idem_canon_json() takes the body as JSON exactly when jansson 2.14's
 *     json_loadb() does (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES |
 *     JSON_ALLOW_NUL), the body is no longer than IDEM_FP_JSON_MAX_BYTES,
 *     the pre-scan passes it (depth) and it has no raw NUL byte. The last
 *     is where the two part on purpose: jansson drops a NUL byte that
 *     follows a number or a literal ("1\0" reads as 1), which would give
 *     "[1\0]" the fingerprint of "[1]". The other is a number that
 *     jansson cannot store (json_error_numeric_overflow: an integer beyond
 *     64 bits, a real beyond a double), which canon_json.c keeps as
 *     written: for those inputs only the checks below that need no tree
 *     of jansson's are made;
 *   - what it writes, read by jansson, is the tree jansson reads from the
 *     body (json_equal: the same members, elements, strings, integers and
 *     doubles; a number is copied as written, so it reads back the same);
 *   - what it writes is its own canonical form, member names in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/canon.h"
#include "fuzz_text.h"
#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

#define FUZZ_CJ_FLAGS                                                          \
    (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)

/* The canonical text of body[0..len), or NULL (*is_json 0). */
static fuzz_text_t fuzz_cj_canon(const uint8_t *body, size_t len, int *is_json)
{
    fuzz_text_t t = fuzz_text();

    FUZZ_CHECK(idem_canon_json(body, len, &t.super, is_json) == 0);
    FUZZ_CHECK(*is_json == 1 || t.len == 0);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_text_t once, twice;
    json_error_t err;
    json_t *ref, *back;
    int is_json, again, expect, overflow;

    ref = json_loadb((const char *)data, size, FUZZ_CJ_FLAGS, &err);
    overflow =
        ref == NULL && json_error_code(&err) == json_error_numeric_overflow;
    expect = ref != NULL && size > 0 && size <= IDEM_FP_JSON_MAX_BYTES &&
             memchr(data, '\0', size) == NULL &&
             idem_canon_json_shallow(data, size);

    once = fuzz_cj_canon(data, size, &is_json);
    FUZZ_CHECK(overflow || is_json == expect);
    if (is_json && !overflow) {
        back = json_loadb(once.buf, once.len, FUZZ_CJ_FLAGS, &err);
        FUZZ_CHECK(back != NULL && json_equal(ref, back));
        json_decref(back);
    }
    if (is_json) {
        twice = fuzz_cj_canon((const uint8_t *)once.buf, once.len, &again);
        FUZZ_CHECK(again == 1 && twice.len == once.len &&
                   memcmp(twice.buf, once.buf, once.len) == 0);
        free(twice.buf);
    }
    free(once.buf);
    json_decref(ref);
    return 0;
}
