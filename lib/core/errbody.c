/*
 * errbody.c — the bodies of the responses the gateway makes itself (SPEC §2,
 * §4, §5, §8), in the two error styles:
 *
 *   persona (default)  Content-Type: application/json
 *                      {"errors":[{"title":"...","details":"..."}]}
 *   ietf               Content-Type: application/problem+json (RFC 9457)
 *                      {"type":"...","title":"...","status":N,"detail":"..."}
 *   stripe             Content-Type: application/json
 *                      {"error":{"type":"...","message":"..."}}
 *
 * In the stripe style the key problems (missing, malformed, reused with
 * other parameters) are of type "idempotency_error" and the gateway's
 * other errors "api_error" (a fragment: "invalid_request_error"), the types
 * Stripe's SDKs raise their own errors for; statuses are the persona ones.
 *
 * In the ietf style the four key problems of the Idempotency-Key draft
 * (missing, malformed, reused with other parameters, outstanding) share the
 * draft's address as their "type", as the draft's own examples share one; the
 * gateway's other errors are plain HTTP errors, so their type is
 * "about:blank" and their title the status phrase (RFC 9457 §4.2.1), with
 * the details in "detail". The texts of "details"/"detail" are the same in
 * both styles.
 *
 * A template (idem.h, idem_errtpl_t) gives any other shape: it is parsed
 * once into pieces, text and placeholders, and rendered with the persona
 * style's status, title and details.
 *
 * Bodies are rendered twice by one function: first to measure, then into a
 * buffer of exactly that size.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "idem.h"

#define IDEM_ERRBODY_IETF_TYPE                                                 \
    "https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-"     \
    "header/"

/*
 * The text of one error. The details are before_key, then the key and
 * after_key when names_key is set.
 */
typedef struct {
    int persona_status;
    int ietf_status;
    const char *persona_title;
    const char *ietf_type;
    const char *ietf_title;
    const char *stripe_type; /* NULL: "api_error" */
    int names_key;
    const char *before_key;
    const char *after_key;
} idem_errbody_text_t;

static const idem_errbody_text_t idem_errbody_mismatch = {
    .persona_status = 400,
    .ietf_status = 422,
    .persona_title = "Idempotency error",
    .ietf_type = IDEM_ERRBODY_IETF_TYPE,
    .stripe_type = "idempotency_error",
    .ietf_title = "Idempotency-Key is already used",
    .names_key = 1,
    .before_key = "Keys for idempotent requests can only be used with the "
                  "same parameters they were first used with. Try using a "
                  "key other than '",
    .after_key = "' if you meant to execute a different request.",
};

static const idem_errbody_text_t idem_errbody_in_progress = {
    .persona_status = 409,
    .ietf_status = 409,
    .persona_title = "Idempotency error",
    .ietf_type = IDEM_ERRBODY_IETF_TYPE,
    .ietf_title = "A request is outstanding for this Idempotency-Key",
    .names_key = 1,
    .before_key = "A request with the Idempotency-Key '",
    .after_key = "' is still in progress. Retry later with the same key to "
                 "get its response.",
};

static const idem_errbody_text_t idem_errbody_store = {
    .persona_status = 503,
    .ietf_status = 503,
    .persona_title = "Service unavailable",
    .ietf_type = "about:blank",
    .ietf_title = "Service Unavailable",
    .before_key = "The idempotency store is unavailable, so the request was "
                  "not forwarded. Retry later with the same key.",
};

static const idem_errbody_text_t idem_errbody_unknown_outcome = {
    .persona_status = 504,
    .ietf_status = 504,
    .persona_title = "Upstream outcome unknown",
    .ietf_type = "about:blank",
    .ietf_title = "Gateway Timeout",
    .before_key = "The request was sent upstream but no complete response "
                  "came back. Its outcome is unknown, so this key will not "
                  "run it again.",
};

static const idem_errbody_text_t idem_errbody_unknown_broken = {
    .persona_status = 502,
    .ietf_status = 502,
    .persona_title = "Upstream outcome unknown",
    .ietf_type = "about:blank",
    .ietf_title = "Bad Gateway",
    .before_key = "The request was sent upstream but the connection broke "
                  "before a complete response came back. Its outcome is "
                  "unknown, so this key will not run it again.",
};

static const idem_errbody_text_t idem_errbody_target_fragment = {
    .persona_status = 400,
    .ietf_status = 400,
    .persona_title = "Idempotency error",
    .ietf_type = "about:blank",
    .ietf_title = "Bad Request",
    .before_key = "The request target has a fragment ('#...'). Fragments "
                  "are never part of an HTTP request, so a request that "
                  "carries one cannot be told apart from another: send it "
                  "without the fragment.",
    .stripe_type = "invalid_request_error",
};

static const idem_errbody_text_t idem_errbody_upstream_down = {
    .persona_status = 502,
    .ietf_status = 502,
    .persona_title = "Bad gateway",
    .ietf_type = "about:blank",
    .ietf_title = "Bad Gateway",
    .before_key = "The upstream could not be reached, so nothing was "
                  "executed. Retrying with the same key is safe.",
};

static const idem_errbody_text_t idem_errbody_too_large = {
    .persona_status = 502,
    .ietf_status = 502,
    .persona_title = "Response too large",
    .ietf_type = "about:blank",
    .ietf_title = "Bad Gateway",
    .before_key = "The upstream response was larger than the gateway stores. "
                  "It was delivered once but cannot be replayed.",
};

/* The output of one rendering pass; buf is NULL while measuring. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} idem_errbody_out_t;

/* Appends JSON text as it is. */
static void idem_errbody_raw(idem_errbody_out_t *out, const char *s)
{
    size_t n = strlen(s);

    if (out->buf != NULL && out->cap - out->len >= n)
        memcpy(out->buf + out->len, s, n);
    out->len += n;
}

/* Appends s[0..n) escaped, as the inside of a JSON string. */
static void idem_errbody_str(idem_errbody_out_t *out, const char *s, size_t n)
{
    char *dst = out->buf ? out->buf + out->len : NULL;
    size_t cap = out->buf ? out->cap - out->len : 0;

    out->len += idem_json_escape(dst, cap, s, n);
}

static void idem_errbody_details(idem_errbody_out_t *out,
                                 const idem_errbody_text_t *text,
                                 const char *key, size_t key_len)
{
    idem_errbody_str(out, text->before_key, strlen(text->before_key));
    if (text->names_key)
        idem_errbody_str(out, key, key_len);
    if (text->after_key != NULL)
        idem_errbody_str(out, text->after_key, strlen(text->after_key));
}

static void idem_errbody_render(idem_errbody_out_t *out, idem_style_t style,
                                const idem_errbody_text_t *text,
                                const char *key, size_t key_len)
{
    char status[16];

    if (style == IDEM_STYLE_STRIPE) {
        const char *type = text->stripe_type ? text->stripe_type : "api_error";

        idem_errbody_raw(out, "{\"error\":{\"type\":\"");
        idem_errbody_str(out, type, strlen(type));
        idem_errbody_raw(out, "\",\"message\":\"");
        idem_errbody_details(out, text, key, key_len);
        idem_errbody_raw(out, "\"}}");
        return;
    }
    if (style == IDEM_STYLE_IETF) {
        snprintf(status, sizeof(status), "%d", text->ietf_status);
        idem_errbody_raw(out, "{\"type\":\"");
        idem_errbody_str(out, text->ietf_type, strlen(text->ietf_type));
        idem_errbody_raw(out, "\",\"title\":\"");
        idem_errbody_str(out, text->ietf_title, strlen(text->ietf_title));
        idem_errbody_raw(out, "\",\"status\":");
        idem_errbody_raw(out, status);
        idem_errbody_raw(out, ",\"detail\":\"");
        idem_errbody_details(out, text, key, key_len);
        idem_errbody_raw(out, "\"}");
        return;
    }
    idem_errbody_raw(out, "{\"errors\":[{\"title\":\"");
    idem_errbody_str(out, text->persona_title, strlen(text->persona_title));
    idem_errbody_raw(out, "\",\"details\":\"");
    idem_errbody_details(out, text, key, key_len);
    idem_errbody_raw(out, "\"}]}");
}

/* The details of an invalid key: the rule it broke. */
static const char *idem_errbody_key_rule(int key_err)
{
    switch (key_err) {
    case IDEM_EKEYEMPTY:
    case IDEM_EKEYLONG:
    case IDEM_EKEYCHAR:
    case IDEM_EKEYQUOTE:
    case IDEM_EKEYDUP:
    case IDEM_EKEYMISSING:
        return idem_strerror(key_err);
    }
    return "The Idempotency-Key header is malformed.";
}

/*
 * The text of kind; key_text is filled and returned for the key errors.
 * NULL for an unknown kind.
 */
static const idem_errbody_text_t *
idem_errbody_text(idem_err_kind_t kind, int key_err,
                  idem_errbody_text_t *key_text)
{
    const idem_errbody_text_t *text;

    memset(key_text, 0, sizeof(*key_text));
    key_text->persona_status = 400;
    key_text->ietf_status = 400;
    key_text->persona_title = "Idempotency error";
    key_text->ietf_type = IDEM_ERRBODY_IETF_TYPE;
    key_text->stripe_type = "idempotency_error";

    switch (kind) {
    case IDEM_ERR_KEY_INVALID:
        key_text->ietf_title = "Idempotency-Key is malformed";
        key_text->before_key = idem_errbody_key_rule(key_err);
        text = key_text;
        break;
    case IDEM_ERR_KEY_MISSING:
        key_text->ietf_title = "Idempotency-Key is missing";
        key_text->before_key = idem_strerror(IDEM_EKEYMISSING);
        text = key_text;
        break;
    case IDEM_ERR_MISMATCH:
        text = &idem_errbody_mismatch;
        break;
    case IDEM_ERR_IN_PROGRESS:
        text = &idem_errbody_in_progress;
        break;
    case IDEM_ERR_STORE:
        text = &idem_errbody_store;
        break;
    case IDEM_ERR_UNKNOWN_OUTCOME:
        text = &idem_errbody_unknown_outcome;
        break;
    case IDEM_ERR_UPSTREAM_DOWN:
        text = &idem_errbody_upstream_down;
        break;
    case IDEM_ERR_TOO_LARGE:
        text = &idem_errbody_too_large;
        break;
    case IDEM_ERR_UNKNOWN_BROKEN:
        text = &idem_errbody_unknown_broken;
        break;
    case IDEM_ERR_TARGET_FRAGMENT:
        text = &idem_errbody_target_fragment;
        break;
    default:
        return NULL;
    }
    return text;
}

int idem_errbody(idem_style_t style, idem_err_kind_t kind, const char *key,
                 size_t key_len, int key_err, idem_errbody_t *out)
{
    idem_errbody_text_t key_text;
    const idem_errbody_text_t *text;
    idem_errbody_out_t body = {NULL, 0, 0};

    if (style != IDEM_STYLE_PERSONA && style != IDEM_STYLE_IETF &&
        style != IDEM_STYLE_STRIPE)
        return IDEM_EINVAL;
    if (key == NULL)
        key_len = 0;
    text = idem_errbody_text(kind, key_err, &key_text);
    if (text == NULL)
        return IDEM_EINVAL;

    idem_errbody_render(&body, style, text, key, key_len);
    body.cap = body.len + 1;
    body.buf = malloc(body.cap);
    if (body.buf == NULL)
        return IDEM_ENOMEM;
    body.len = 0;
    idem_errbody_render(&body, style, text, key, key_len);
    body.buf[body.len] = '\0';

    if (style == IDEM_STYLE_IETF) {
        out->status = text->ietf_status;
        out->content_type = "application/problem+json";
    } else {
        out->status = text->persona_status;
        out->content_type = "application/json";
    }
    out->body = body.buf;
    out->body_len = body.len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Templates                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum {
    IDEM_ERRTPL_TEXT = 0,
    IDEM_ERRTPL_STATUS,
    IDEM_ERRTPL_TITLE,
    IDEM_ERRTPL_DETAILS,
    IDEM_ERRTPL_KEY
} idem_errtpl_kind_t;

/* A piece of the body: text[off..off+len) as it is, or a placeholder. */
typedef struct {
    idem_errtpl_kind_t kind;
    size_t off;
    size_t len;
} idem_errtpl_piece_t;

struct idem_errtpl_s {
    char *text; /* the body's text, with "{{" still in it */
    char *content_type;
    idem_errtpl_piece_t *pieces;
    size_t npieces;
};

static const struct {
    const char *name;
    idem_errtpl_kind_t kind;
} idem_errtpl_names[] = {
    {"status", IDEM_ERRTPL_STATUS},
    {"title", IDEM_ERRTPL_TITLE},
    {"details", IDEM_ERRTPL_DETAILS},
    {"key", IDEM_ERRTPL_KEY},
};

static int idem_errtpl_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_';
}

/* Writes why (cap bytes, when cap > 0) and returns IDEM_EINVAL. */
static int idem_errtpl_why(char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int idem_errtpl_why(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;

    if (cap > 0) {
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return IDEM_EINVAL;
}

/*
 * Splits body[0..len) into pieces (stored in pieces when it is not NULL)
 * and counts them in *n. Returns 0 or IDEM_EINVAL (why says which
 * placeholder is unknown). line is the number of body's first line.
 */
static int idem_errtpl_scan(const char *body, size_t len, size_t line,
                            idem_errtpl_piece_t *pieces, size_t *n, char *why,
                            size_t cap)
{
    size_t i = 0, start = 0;

    *n = 0;
    while (i < len) {
        size_t j = i + 1, k;
        idem_errtpl_kind_t kind = IDEM_ERRTPL_TEXT;

        if (body[i] == '\n')
            line++;
        if (body[i] != '{') {
            i++;
            continue;
        }
        if (j < len && body[j] == '{') {
            /* "{{": the text up to and with the first '{', then skip one */
            if (pieces != NULL)
                pieces[*n] =
                    (idem_errtpl_piece_t){IDEM_ERRTPL_TEXT, start, j - start};
            (*n)++;
            i = start = j + 1;
            continue;
        }
        while (j < len && idem_errtpl_name_char(body[j]))
            j++;
        if (j == i + 1 || j == len || body[j] != '}') {
            i++;
            continue;
        }
        for (k = 0; k < sizeof(idem_errtpl_names) / sizeof(*idem_errtpl_names);
             k++) {
            const char *name = idem_errtpl_names[k].name;

            if (strlen(name) == j - i - 1 &&
                memcmp(name, body + i + 1, j - i - 1) == 0)
                kind = idem_errtpl_names[k].kind;
        }
        if (kind == IDEM_ERRTPL_TEXT)
            return idem_errtpl_why(why, cap,
                                   "unknown placeholder {%.*s} on line %zu "
                                   "(known: {status}, {title}, {details}, "
                                   "{key}; {{ is a literal '{')",
                                   (int)(j - i - 1), body + i + 1, line);
        if (i > start) {
            if (pieces != NULL)
                pieces[*n] =
                    (idem_errtpl_piece_t){IDEM_ERRTPL_TEXT, start, i - start};
            (*n)++;
        }
        if (pieces != NULL)
            pieces[*n] = (idem_errtpl_piece_t){kind, 0, 0};
        (*n)++;
        i = start = j + 1;
    }
    if (len > start) {
        if (pieces != NULL)
            pieces[*n] =
                (idem_errtpl_piece_t){IDEM_ERRTPL_TEXT, start, len - start};
        (*n)++;
    }
    return 0;
}

int idem_errtpl_parse(const char *text, size_t len, idem_errtpl_t **out,
                      char *why, size_t cap)
{
    static const char header[] = "content-type:";
    size_t hlen = sizeof(header) - 1, body_off = 0, line = 1, n;
    const char *ct = "application/json";
    size_t ct_len = strlen(ct);
    idem_errtpl_t *tpl;
    int rc;

    if (cap > 0)
        why[0] = '\0';
    if (text == NULL && len > 0)
        return IDEM_EINVAL;
    if (len > IDEM_ERRTPL_MAX)
        return idem_errtpl_why(why, cap, "the template is larger than %u bytes",
                               IDEM_ERRTPL_MAX);
    if (len >= hlen && strncasecmp(text, header, hlen) == 0) {
        const char *nl = memchr(text, '\n', len);
        size_t end = nl ? (size_t)(nl - text) : len;

        body_off = nl ? end + 1 : len;
        if (end > 0 && text[end - 1] == '\r')
            end--;
        ct = text + hlen;
        ct_len = end - hlen;
        while (ct_len > 0 && (*ct == ' ' || *ct == '\t')) {
            ct++;
            ct_len--;
        }
        while (ct_len > 0 && (ct[ct_len - 1] == ' ' || ct[ct_len - 1] == '\t'))
            ct_len--;
        if (ct_len == 0)
            return idem_errtpl_why(why, cap,
                                   "the Content-Type line (line 1) names no "
                                   "type");
        for (size_t i = 0; i < ct_len; i++) {
            unsigned char c = (unsigned char)ct[i];

            if (c < 0x20 || c > 0x7e)
                return idem_errtpl_why(why, cap,
                                       "the Content-Type (line 1) has a "
                                       "byte that is not printable ASCII");
        }
        line = 2;
    }

    rc = idem_errtpl_scan(text + body_off, len - body_off, line, NULL, &n, why,
                          cap);
    if (rc != 0)
        return rc;

    tpl = calloc(1, sizeof(*tpl));
    if (tpl == NULL)
        return IDEM_ENOMEM;
    tpl->text = malloc(len - body_off + 1);
    tpl->content_type = malloc(ct_len + 1);
    tpl->pieces = calloc(n ? n : 1, sizeof(*tpl->pieces));
    if (tpl->text == NULL || tpl->content_type == NULL || tpl->pieces == NULL) {
        idem_errtpl_free(tpl);
        return IDEM_ENOMEM;
    }
    if (len > body_off)
        memcpy(tpl->text, text + body_off, len - body_off);
    tpl->text[len - body_off] = '\0';
    memcpy(tpl->content_type, ct, ct_len);
    tpl->content_type[ct_len] = '\0';
    (void)idem_errtpl_scan(tpl->text, len - body_off, line, tpl->pieces,
                           &tpl->npieces, NULL, 0);
    *out = tpl;
    return 0;
}

void idem_errtpl_free(idem_errtpl_t *tpl)
{
    if (tpl == NULL)
        return;
    free(tpl->text);
    free(tpl->content_type);
    free(tpl->pieces);
    free(tpl);
}

const char *idem_errtpl_content_type(const idem_errtpl_t *tpl)
{
    return tpl->content_type;
}

/* The values a template is rendered with. */
typedef struct {
    char status[16];
    const char *title;
    const char *details;
    const char *key;
    size_t key_len;
} idem_errtpl_values_t;

static void idem_errtpl_put(idem_errbody_out_t *out, const idem_errtpl_t *tpl,
                            const idem_errtpl_values_t *v)
{
    for (size_t i = 0; i < tpl->npieces; i++) {
        const idem_errtpl_piece_t *p = &tpl->pieces[i];

        switch (p->kind) {
        case IDEM_ERRTPL_TEXT:
            if (out->buf != NULL && out->cap - out->len >= p->len)
                memcpy(out->buf + out->len, tpl->text + p->off, p->len);
            out->len += p->len;
            break;
        case IDEM_ERRTPL_STATUS:
            idem_errbody_str(out, v->status, strlen(v->status));
            break;
        case IDEM_ERRTPL_TITLE:
            idem_errbody_str(out, v->title, strlen(v->title));
            break;
        case IDEM_ERRTPL_DETAILS:
            idem_errbody_str(out, v->details, strlen(v->details));
            break;
        case IDEM_ERRTPL_KEY:
            idem_errbody_str(out, v->key, v->key_len);
            break;
        }
    }
}

int idem_errtpl_render(const idem_errtpl_t *tpl, int status, const char *title,
                       const char *details, const char *key, size_t key_len,
                       idem_errbody_t *out)
{
    idem_errbody_out_t body = {NULL, 0, 0};
    idem_errtpl_values_t v;

    snprintf(v.status, sizeof(v.status), "%d", status);
    v.title = title ? title : "";
    v.details = details ? details : "";
    v.key = key ? key : "";
    v.key_len = key ? key_len : 0;

    idem_errtpl_put(&body, tpl, &v);
    body.cap = body.len + 1;
    body.buf = malloc(body.cap);
    if (body.buf == NULL)
        return IDEM_ENOMEM;
    body.len = 0;
    idem_errtpl_put(&body, tpl, &v);
    body.buf[body.len] = '\0';

    out->status = status;
    out->content_type = tpl->content_type;
    out->body = body.buf;
    out->body_len = body.len;
    return 0;
}

int idem_errbody_template(const idem_errtpl_t *tpl, idem_err_kind_t kind,
                          const char *key, size_t key_len, int key_err,
                          idem_errbody_t *out)
{
    idem_errbody_text_t key_text;
    const idem_errbody_text_t *text;
    size_t before, after, n;
    char *details;
    int rc;

    if (key == NULL)
        key_len = 0;
    text = idem_errbody_text(kind, key_err, &key_text);
    if (text == NULL)
        return IDEM_EINVAL;

    /* the details unescaped: the renderer escapes what it substitutes */
    before = strlen(text->before_key);
    after = text->after_key ? strlen(text->after_key) : 0;
    n = before + (text->names_key ? key_len : 0) + after;
    details = malloc(n + 1);
    if (details == NULL)
        return IDEM_ENOMEM;
    memcpy(details, text->before_key, before);
    if (text->names_key && key_len > 0)
        memcpy(details + before, key, key_len);
    if (after > 0)
        memcpy(details + n - after, text->after_key, after);
    details[n] = '\0';

    rc = idem_errtpl_render(tpl, text->persona_status, text->persona_title,
                            details, key, key_len, out);
    free(details);
    return rc;
}
