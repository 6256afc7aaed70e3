/*
 * errtpl.c — error templates (idem.h, idem_errtpl_t): the gateway-made
 * errors in a shape the deployment writes, for APIs whose errors are
 * neither persona, ietf nor stripe.
 *
 * A template is parsed once into pieces, text and placeholders:
 *
 *     "{\"e\":{status},\"m\":\"{details}\"}"
 *       ──> text "{\"e\":"  STATUS  text ",\"m\":\""  DETAILS  text "\"}"
 *
 * and rendered with the persona style's status, title and details
 * (errbody.h), twice: first to measure, then into a buffer of exactly that
 * size. The values are JSON-escaped as they are put in.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errbody.h"

/* The output of one rendering pass; buf is NULL while measuring. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
} idem_errtpl_out_t;

static void idem_errtpl_raw(idem_errtpl_out_t *out, const char *s, size_t n)
{
    if (out->buf != NULL && out->cap - out->len >= n)
        memcpy(out->buf + out->len, s, n);
    out->len += n;
}

/* Appends s[0..n) escaped, as the inside of a JSON string. */
static void idem_errtpl_str(idem_errtpl_out_t *out, const char *s, size_t n)
{
    char *dst = out->buf ? out->buf + out->len : NULL;
    size_t cap = out->buf ? out->cap - out->len : 0;

    out->len += idem_json_escape(dst, cap, s, n);
}

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
    size_t details_len;
    const char *key;
    size_t key_len;
} idem_errtpl_values_t;

static void idem_errtpl_put(idem_errtpl_out_t *out, const idem_errtpl_t *tpl,
                            const idem_errtpl_values_t *v)
{
    for (size_t i = 0; i < tpl->npieces; i++) {
        const idem_errtpl_piece_t *p = &tpl->pieces[i];

        switch (p->kind) {
        case IDEM_ERRTPL_TEXT:
            idem_errtpl_raw(out, tpl->text + p->off, p->len);
            break;
        case IDEM_ERRTPL_STATUS:
            idem_errtpl_str(out, v->status, strlen(v->status));
            break;
        case IDEM_ERRTPL_TITLE:
            idem_errtpl_str(out, v->title, strlen(v->title));
            break;
        case IDEM_ERRTPL_DETAILS:
            idem_errtpl_str(out, v->details, v->details_len);
            break;
        case IDEM_ERRTPL_KEY:
            idem_errtpl_str(out, v->key, v->key_len);
            break;
        }
    }
}

/* Renders tpl with v into *out. Returns 0 or IDEM_ENOMEM. */
static int idem_errtpl_render_values(const idem_errtpl_t *tpl, int status,
                                     const idem_errtpl_values_t *v,
                                     idem_errbody_t *out)
{
    idem_errtpl_out_t body = {NULL, 0, 0};

    idem_errtpl_put(&body, tpl, v);
    body.cap = body.len + 1;
    body.buf = malloc(body.cap);
    if (body.buf == NULL)
        return IDEM_ENOMEM;
    body.len = 0;
    idem_errtpl_put(&body, tpl, v);
    body.buf[body.len] = '\0';

    out->status = status;
    out->content_type = tpl->content_type;
    out->body = body.buf;
    out->body_len = body.len;
    return 0;
}

int idem_errtpl_render(const idem_errtpl_t *tpl, int status, const char *title,
                       const char *details, const char *key, size_t key_len,
                       idem_errbody_t *out)
{
    idem_errtpl_values_t v;

    snprintf(v.status, sizeof(v.status), "%d", status);
    v.title = title ? title : "";
    v.details = details ? details : "";
    v.details_len = strlen(v.details);
    v.key = key ? key : "";
    v.key_len = key ? key_len : 0;
    return idem_errtpl_render_values(tpl, status, &v, out);
}

int idem_errbody_template(const idem_errtpl_t *tpl, idem_err_kind_t kind,
                          const char *key, size_t key_len, int key_err,
                          idem_errbody_t *out)
{
    return idem_errbody_template_named(tpl, kind, key, key_len, key_err, NULL,
                                       0, out);
}

int idem_errbody_template_named(const idem_errtpl_t *tpl, idem_err_kind_t kind,
                                const char *key, size_t key_len, int key_err,
                                const char *header, size_t header_len,
                                idem_errbody_t *out)
{
    idem_errbody_key_text_t key_text;
    const idem_errbody_text_t *text;
    idem_errtpl_values_t v;
    size_t before, after, n;
    char *details;
    int rc;

    if (key == NULL)
        key_len = 0;
    text = idem_errbody_text(kind, key_err, header, header_len, &key_text);
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

    snprintf(v.status, sizeof(v.status), "%d", text->persona_status);
    v.title = text->persona_title;
    v.details = details;
    v.details_len = n;
    v.key = key ? key : "";
    v.key_len = key_len;
    rc = idem_errtpl_render_values(tpl, text->persona_status, &v, out);
    free(details);
    return rc;
}
