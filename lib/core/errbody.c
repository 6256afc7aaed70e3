/*
 * errbody.c — the bodies of the responses the gateway makes itself (SPEC §2,
 * §4, §5, §8), in the three error styles:
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
 * A template (errtpl.c) gives any other shape, from the same texts.
 *
 * The details of a malformed or missing key are idem_key_problem()'s
 * sentence (key.c), which clients read; idem_strerror()'s short library
 * messages are never shown to them.
 *
 * Bodies are rendered twice by one function: first to measure, then into a
 * buffer of exactly that size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errbody.h"

#define IDEM_ERRBODY_IETF_TYPE                                                 \
    "https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-"     \
    "header/"

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
                  "came back and was stored. Its outcome is unknown, so this "
                  "key will not run it again.",
};

/* the same two with --on-unknown release: the key is free again */
static const idem_errbody_text_t idem_errbody_unknown_released = {
    .persona_status = 504,
    .ietf_status = 504,
    .persona_title = "Upstream outcome unknown",
    .ietf_type = "about:blank",
    .ietf_title = "Gateway Timeout",
    .before_key = "The request was sent upstream but no complete response "
                  "came back. Its outcome is unknown; the key was released, "
                  "so a retry with it is forwarded again.",
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

static const idem_errbody_text_t idem_errbody_broken_released = {
    .persona_status = 502,
    .ietf_status = 502,
    .persona_title = "Upstream outcome unknown",
    .ietf_type = "about:blank",
    .ietf_title = "Bad Gateway",
    .before_key = "The request was sent upstream but the connection broke "
                  "before a complete response came back. Its outcome is "
                  "unknown; the key was released, so a retry with it is "
                  "forwarded again.",
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
    const char *problem = idem_key_problem(key_err);

    return problem ? problem : "The Idempotency-Key header is malformed.";
}

/*
 * rule with the key header named header[0..header_len) where it says
 * "Idempotency-Key", written into buf; rule itself when there is nothing
 * to rename (no header, Idempotency-Key itself in any case, a name longer
 * than a header name would sensibly be, or a rule that names none).
 */
static const char *idem_errbody_rename(const char *rule, const char *header,
                                       size_t header_len, char *buf, size_t cap)
{
    static const char dflt[] = "Idempotency-Key";
    const char *at;

    if (header == NULL || header_len == 0 || header_len > 128 ||
        (header_len == sizeof(dflt) - 1 &&
         strncasecmp(header, dflt, header_len) == 0))
        return rule;
    at = strstr(rule, dflt);
    if (at == NULL)
        return rule;
    snprintf(buf, cap, "%.*s%.*s%s", (int)(at - rule), rule, (int)header_len,
             header, at + sizeof(dflt) - 1);
    return buf;
}

const idem_errbody_text_t *idem_errbody_text(idem_err_kind_t kind, int key_err,
                                             const char *header,
                                             size_t header_len,
                                             idem_errbody_key_text_t *named)
{
    idem_errbody_text_t *key_text = &named->text;
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
        key_text->before_key =
            idem_errbody_rename(idem_errbody_key_rule(key_err), header,
                                header_len, named->rule, sizeof(named->rule));
        text = key_text;
        break;
    case IDEM_ERR_KEY_MISSING:
        key_text->ietf_title = "Idempotency-Key is missing";
        key_text->before_key = idem_key_problem(IDEM_EKEYMISSING);
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
    case IDEM_ERR_UNKNOWN_RELEASED:
        text = &idem_errbody_unknown_released;
        break;
    case IDEM_ERR_BROKEN_RELEASED:
        text = &idem_errbody_broken_released;
        break;
    default:
        return NULL;
    }
    return text;
}

/* The body of text in style into *out (see idem_errbody()). */
static int idem_errbody_build(idem_style_t style,
                              const idem_errbody_text_t *text, const char *key,
                              size_t key_len, idem_errbody_t *out)
{
    idem_errbody_out_t body = {NULL, 0, 0};

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

static int idem_errbody_style_ok(idem_style_t style)
{
    return style == IDEM_STYLE_PERSONA || style == IDEM_STYLE_IETF ||
           style == IDEM_STYLE_STRIPE;
}

int idem_errbody(idem_style_t style, idem_err_kind_t kind, const char *key,
                 size_t key_len, int key_err, idem_errbody_t *out)
{
    return idem_errbody_named(style, kind, key, key_len, key_err, NULL, 0, out);
}

int idem_errbody_named(idem_style_t style, idem_err_kind_t kind,
                       const char *key, size_t key_len, int key_err,
                       const char *header, size_t header_len,
                       idem_errbody_t *out)
{
    idem_errbody_key_text_t key_text;
    const idem_errbody_text_t *text;

    if (!idem_errbody_style_ok(style))
        return IDEM_EINVAL;
    if (key == NULL)
        key_len = 0;
    text = idem_errbody_text(kind, key_err, header, header_len, &key_text);
    if (text == NULL)
        return IDEM_EINVAL;
    return idem_errbody_build(style, text, key, key_len, out);
}

/*
 * A page of the gateway for an error nginx answers itself: a plain HTTP
 * error, so in the ietf style of type "about:blank" with the status phrase
 * as its title, and in the stripe style the client's error (4xx) or the
 * API's (5xx).
 */
int idem_errbody_page(idem_style_t style, int status, const char *title,
                      const char *ietf_title, const char *details,
                      idem_errbody_t *out)
{
    idem_errbody_text_t text;

    if (!idem_errbody_style_ok(style) || status < 100 || status > 599 ||
        title == NULL || ietf_title == NULL || details == NULL)
        return IDEM_EINVAL;
    memset(&text, 0, sizeof(text));
    text.persona_status = status;
    text.ietf_status = status;
    text.persona_title = title;
    text.ietf_type = "about:blank";
    text.ietf_title = ietf_title;
    text.stripe_type = status < 500 ? "invalid_request_error" : "api_error";
    text.before_key = details;
    return idem_errbody_build(style, &text, NULL, 0, out);
}
