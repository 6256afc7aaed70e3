/*
 * fuzz_errtpl.c — libFuzzer target for error templates (idem.h,
 * idem_errtpl_t): idem_errtpl_parse() and their rendering.
 *
 * Input layout:
 *
 *     byte 0      n: the key is the next n bytes (fewer if the input ends)
 *     the rest    the template's text
 *
 * Beyond "no crash, no read outside the input", the target checks the
 * parser and the renderer against a reference written apart from them (a
 * plain left-to-right reading of the rules in idem.h):
 *   - a template is accepted exactly when the reference finds no unknown
 *     placeholder and a valid Content-Type line, and a refusal says why;
 *   - an accepted template renders, for every error kind, the bytes the
 *     reference renders, with the Content-Type the reference reads;
 *   - a template whose text is a JSON string with placeholders in it
 *     renders a JSON string that a strict decoder accepts, whatever the
 *     key holds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static const idem_err_kind_t fuzz_kinds[] = {
    IDEM_ERR_KEY_INVALID,     IDEM_ERR_KEY_MISSING, IDEM_ERR_MISMATCH,
    IDEM_ERR_IN_PROGRESS,     IDEM_ERR_STORE,       IDEM_ERR_UNKNOWN_OUTCOME,
    IDEM_ERR_UPSTREAM_DOWN,   IDEM_ERR_TOO_LARGE,   IDEM_ERR_UNKNOWN_BROKEN,
    IDEM_ERR_TARGET_FRAGMENT,
};
#define FUZZ_NKINDS (sizeof(fuzz_kinds) / sizeof(fuzz_kinds[0]))

/* ---- the reference ---- */

typedef struct {
    char *buf;
    size_t len;
} ref_text_t;

static void ref_put(ref_text_t *t, const char *s, size_t n)
{
    char *grown = realloc(t->buf, t->len + n + 1);

    FUZZ_CHECK(grown != NULL);
    t->buf = grown;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
}

static void ref_put_escaped(ref_text_t *t, const char *s, size_t n)
{
    size_t need = idem_json_escape(NULL, 0, s, n);
    char *tmp = malloc(need + 1);

    FUZZ_CHECK(tmp != NULL);
    FUZZ_CHECK(idem_json_escape(tmp, need, s, n) == need);
    ref_put(t, tmp, need);
    free(tmp);
}

static int ref_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/*
 * Renders body[0..len) with the values given into *out (when out is not
 * NULL). Returns 0, or -1 at the first unknown placeholder.
 */
static int ref_render(const char *body, size_t len, const char *const v[4],
                      const size_t vlen[4], ref_text_t *out)
{
    static const char *const names[4] = {"status", "title", "details", "key"};
    size_t i = 0;

    while (i < len) {
        size_t j = i + 1, k;

        if (body[i] != '{') {
            if (out)
                ref_put(out, body + i, 1);
            i++;
            continue;
        }
        if (j < len && body[j] == '{') {
            if (out)
                ref_put(out, "{", 1);
            i += 2;
            continue;
        }
        while (j < len && ref_name_char(body[j]))
            j++;
        if (j == i + 1 || j == len || body[j] != '}') {
            if (out)
                ref_put(out, "{", 1);
            i++;
            continue;
        }
        for (k = 0; k < 4; k++) {
            if (strlen(names[k]) == j - i - 1 &&
                memcmp(names[k], body + i + 1, j - i - 1) == 0)
                break;
        }
        if (k == 4)
            return -1;
        if (out)
            ref_put_escaped(out, v[k], vlen[k]);
        i = j + 1;
    }
    return 0;
}

/* Splits the Content-Type line off; returns 0 or -1 when it is invalid. */
static int ref_split(const char *text, size_t len, const char **ct,
                     size_t *ct_len, size_t *body_off)
{
    const char *nl;
    size_t end;

    *ct = "application/json";
    *ct_len = strlen(*ct);
    *body_off = 0;
    if (len < 13 || strncasecmp(text, "content-type:", 13) != 0)
        return 0;
    nl = memchr(text, '\n', len);
    end = nl ? (size_t)(nl - text) : len;
    *body_off = nl ? end + 1 : len;
    if (end > 13 && text[end - 1] == '\r')
        end--;
    *ct = text + 13;
    *ct_len = end - 13;
    while (*ct_len > 0 && (**ct == ' ' || **ct == '\t')) {
        (*ct)++;
        (*ct_len)--;
    }
    while (*ct_len > 0 &&
           ((*ct)[*ct_len - 1] == ' ' || (*ct)[*ct_len - 1] == '\t'))
        (*ct_len)--;
    if (*ct_len == 0)
        return -1;
    for (size_t i = 0; i < *ct_len; i++) {
        unsigned char c = (unsigned char)(*ct)[i];

        if (c < 0x20 || c > 0x7e)
            return -1;
    }
    return 0;
}

/* ---- the checks ---- */

/* A JSON string template renders a JSON string, whatever the key. */
static void fuzz_check_json_string(const char *key, size_t key_len)
{
    static const char text[] = "\"{status} {title}: {details} ({key})\"";
    idem_errtpl_t *tpl;
    idem_errbody_t e;
    json_t *j;
    char why[256];

    FUZZ_CHECK(
        idem_errtpl_parse(text, sizeof(text) - 1, &tpl, why, sizeof(why)) == 0);
    for (size_t i = 0; i < FUZZ_NKINDS; i++) {
        FUZZ_CHECK(idem_errbody_template(tpl, fuzz_kinds[i], key, key_len,
                                         IDEM_EKEYCHAR, &e) == 0);
        j = json_loadb(e.body, e.body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                       NULL);
        FUZZ_CHECK(j != NULL && json_is_string(j));
        json_decref(j);
        free(e.body);
    }
    idem_errtpl_free(tpl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *key, *text, *ct;
    size_t key_len, len, ct_len, body_off;
    idem_errtpl_t *tpl = NULL;
    char why[256];
    int rc, ok;

    if (size < 1)
        return 0;
    key_len = data[0] < size - 1 ? data[0] : size - 1;
    key = (const char *)data + 1;
    text = key + key_len;
    len = size - 1 - key_len;

    fuzz_check_json_string(key, key_len);

    ok = ref_split(text, len, &ct, &ct_len, &body_off) == 0 &&
         len <= IDEM_ERRTPL_MAX &&
         ref_render(text + body_off, len - body_off,
                    (const char *const[4]){"", "", "", ""},
                    (const size_t[4]){0, 0, 0, 0}, NULL) == 0;
    why[0] = 'x';
    rc = idem_errtpl_parse(text, len, &tpl, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == IDEM_EINVAL);
    FUZZ_CHECK((rc == 0) == ok);
    if (rc != 0) {
        FUZZ_CHECK(tpl == NULL && memchr(why, '\0', sizeof(why)) != NULL &&
                   why[0] != '\0');
        return 0;
    }
    FUZZ_CHECK(strlen(idem_errtpl_content_type(tpl)) == ct_len &&
               memcmp(idem_errtpl_content_type(tpl), ct, ct_len) == 0);

    for (size_t i = 0; i < FUZZ_NKINDS; i++) {
        idem_errbody_t e, p;
        ref_text_t want = {NULL, 0};
        char status[16];
        json_t *pj, *perr, *probe;
        const char *v[4];
        size_t vlen[4];

        FUZZ_CHECK(idem_errbody_template(tpl, fuzz_kinds[i], key, key_len,
                                         IDEM_EKEYCHAR, &e) == 0);
        /* the values are the persona style's */
        FUZZ_CHECK(idem_errbody(IDEM_STYLE_PERSONA, fuzz_kinds[i], key, key_len,
                                IDEM_EKEYCHAR, &p) == 0);
        pj = json_loadb(p.body, p.body_len, JSON_ALLOW_NUL, NULL);
        FUZZ_CHECK(pj != NULL);
        perr = json_array_get(json_object_get(pj, "errors"), 0);
        snprintf(status, sizeof(status), "%d", p.status);
        v[0] = status;
        vlen[0] = strlen(status);
        v[1] = json_string_value(json_object_get(perr, "title"));
        vlen[1] = json_string_length(json_object_get(perr, "title"));
        v[2] = json_string_value(json_object_get(perr, "details"));
        vlen[2] = json_string_length(json_object_get(perr, "details"));
        v[3] = key;
        vlen[3] = key_len;
        /* the details were decoded from JSON, whose \ufffd stands for
           each invalid byte of the key: compare only a valid UTF-8 key */
        probe = json_stringn(key, key_len);
        if (probe != NULL) {
            json_decref(probe);
            FUZZ_CHECK(ref_render(text + body_off, len - body_off, v, vlen,
                                  &want) == 0);
            FUZZ_CHECK(
                want.len == e.body_len &&
                (want.len == 0 || memcmp(want.buf, e.body, want.len) == 0));
        }
        FUZZ_CHECK(e.status == p.status);
        FUZZ_CHECK(strcmp(e.content_type, idem_errtpl_content_type(tpl)) == 0);
        free(want.buf);
        json_decref(pj);
        free(p.body);
        free(e.body);
    }
    idem_errtpl_free(tpl);
    return 0;
}
