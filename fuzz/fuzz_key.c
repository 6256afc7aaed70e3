/*
 * fuzz_key.c — libFuzzer target for idem_key_parse() and the error bodies
 * that quote a key back to the client.
 *
 * The input is one Idempotency-Key header value. Beyond "no crash, no read
 * outside the input", the target checks what SPEC §2 promises:
 *   - an accepted key has 1 to 255 bytes, each 0x21-0x7E;
 *   - a bare value is accepted as itself;
 *   - an accepted key, quoted again, parses back to itself;
 *   - any other outcome is one of the four key errors;
 *   - the mismatch body naming an accepted key is valid JSON in both styles
 *     and gives the key back in its details.
 * It also runs idem_json_escape() on the raw input into a buffer of a size
 * chosen by the input, exactly allocated, to catch a write past cap, and
 * checks that the whole escaped text is a JSON string a strict decoder
 * accepts, whatever bytes the input holds (invalid UTF-8 among them).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static void fuzz_key_check_body(idem_style_t style, const char *key, size_t len)
{
    idem_errbody_t e;
    json_error_t err;
    json_t *j;
    const char *details;

    FUZZ_CHECK(idem_errbody(style, IDEM_ERR_MISMATCH, key, len, 0, &e) == 0);
    FUZZ_CHECK(strlen(e.body) == e.body_len);
    j = json_loadb(e.body, e.body_len, JSON_REJECT_DUPLICATES, &err);
    FUZZ_CHECK(j != NULL);
    if (style == IDEM_STYLE_PERSONA)
        details = json_string_value(json_object_get(
            json_array_get(json_object_get(j, "errors"), 0), "details"));
    else
        details = json_string_value(json_object_get(j, "detail"));
    FUZZ_CHECK(details != NULL);
    FUZZ_CHECK(memmem(details, strlen(details), key, len) != NULL);
    json_decref(j);
    free(e.body);
}

static void fuzz_key_check_escape(const uint8_t *data, size_t size)
{
    size_t need, cap, got;
    char *dst;

    need = idem_json_escape(NULL, 0, (const char *)data, size);
    FUZZ_CHECK(need >= size && need <= 6 * size);
    cap = size > 0 ? data[0] % (need + 1) : 0;
    dst = malloc(cap ? cap : 1);
    FUZZ_CHECK(dst != NULL);
    got = idem_json_escape(dst, cap, (const char *)data, size);
    FUZZ_CHECK(got == need);
    free(dst);

    /* whole, the escaped text is a JSON string a strict decoder accepts */
    dst = malloc(need + 3);
    FUZZ_CHECK(dst != NULL);
    dst[0] = '"';
    FUZZ_CHECK(idem_json_escape(dst + 1, need, (const char *)data, size) ==
               need);
    dst[need + 1] = '"';
    dst[need + 2] = '\0';
    json_t *j = json_loads(dst, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    FUZZ_CHECK(j != NULL && json_is_string(j));
    json_decref(j);
    free(dst);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char key[IDEM_KEY_MAX], again[IDEM_KEY_MAX];
    char quoted[2 + 2 * IDEM_KEY_MAX];
    size_t len = 0, again_len = 0, qlen = 0;
    int rc;

    fuzz_key_check_escape(data, size);

    rc = idem_key_parse((const char *)data, size, key, &len);
    if (rc != 0) {
        FUZZ_CHECK(rc == IDEM_EKEYEMPTY || rc == IDEM_EKEYLONG ||
                   rc == IDEM_EKEYCHAR || rc == IDEM_EKEYQUOTE);
        return 0;
    }

    FUZZ_CHECK(len >= 1 && len <= IDEM_KEY_MAX);
    for (size_t i = 0; i < len; i++)
        FUZZ_CHECK(key[i] >= 0x21 && key[i] <= 0x7e);
    if (data[0] != '"')
        FUZZ_CHECK(len == size && memcmp(key, data, len) == 0);

    quoted[qlen++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '"' || key[i] == '\\')
            quoted[qlen++] = '\\';
        quoted[qlen++] = key[i];
    }
    quoted[qlen++] = '"';
    FUZZ_CHECK(idem_key_parse(quoted, qlen, again, &again_len) == 0);
    FUZZ_CHECK(again_len == len && memcmp(again, key, len) == 0);

    fuzz_key_check_body(IDEM_STYLE_PERSONA, key, len);
    fuzz_key_check_body(IDEM_STYLE_IETF, key, len);
    return 0;
}
