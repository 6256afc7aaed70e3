/*
 * canon.c — canonical text of '&'-separated pairs and of a media type, the
 * forms in which the fingerprint compares a query, a form body and a
 * Content-Type (SPEC §4); JSON bodies are canon_json.c's. See canon.h for
 * the exact rules.
 *
 * Pairs become an array of segments that point into the input and are
 * sorted there by decoded name, decoded again at each comparison rather
 * than copied; the canonical text is decoded and encoded again segment by
 * segment as it is written, never built whole. The parameters of a media
 * type are read the same way, into an array of borrowed spans. Both are
 * written through one small staging buffer (idem_canon_out_t), which with
 * no sink only counts, so that the length framed in the fingerprint is
 * known before the text is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canon.h"

/* ------------------------------------------------------------------------ */
/* Pairs                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * The unit that stands for a '%' that starts no valid escape ("%zz", a "%4"
 * at the end of a name or value). It is no byte, so it equals no decoded
 * byte, a decoded '%' ("%25") included.
 */
#define IDEM_CANON_BAD_PCT 256

static int idem_canon_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decodes the unit of s[*i..len) that starts at *i, as an
 * application/x-www-form-urlencoded parser reads it, and moves *i past it:
 * '+' is a space, "%XX" (either case) the byte XX, a '%' without two hex
 * digits after it IDEM_CANON_BAD_PCT, any other byte itself.
 */
static int idem_canon_unit(const char *s, size_t len, size_t *i)
{
    unsigned char c = (unsigned char)s[*i];
    int hi, lo;

    (*i)++;
    if (c == '+')
        return ' ';
    if (c != '%')
        return c;
    if (len - *i < 2)
        return IDEM_CANON_BAD_PCT;
    hi = idem_canon_hex((unsigned char)s[*i]);
    lo = idem_canon_hex((unsigned char)s[*i + 1]);
    if (hi < 0 || lo < 0)
        return IDEM_CANON_BAD_PCT;
    *i += 2;
    return hi << 4 | lo;
}

/* Orders the decoded names (a prefix first), then the input positions. */
static int idem_canon_seg_cmp(const void *a, const void *b)
{
    const idem_canon_seg_t *x = a;
    const idem_canon_seg_t *y = b;
    size_t i = 0, j = 0;

    while (i < x->name_len && j < y->name_len) {
        int u = idem_canon_unit(x->data, x->name_len, &i);
        int v = idem_canon_unit(y->data, y->name_len, &j);

        if (u != v)
            return u < v ? -1 : 1;
    }
    if (i < x->name_len || j < y->name_len)
        return i < x->name_len ? 1 : -1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/*
 * Canonical output, staged in a buffer so that the sink sees few large
 * writes. With sink NULL nothing is written and only total is counted,
 * which is how the length of the canonical text is known before it is
 * written.
 */
typedef struct {
    idem_canon_sink_t *sink;
    size_t total;
    size_t n;
    int rc;
    char buf[512];
} idem_canon_out_t;

static void idem_canon_out_flush(idem_canon_out_t *out)
{
    if (out->n > 0 && out->rc == 0)
        out->rc = out->sink->write(out->sink, out->buf, out->n);
    out->n = 0;
}

static void idem_canon_out_put(idem_canon_out_t *out, const char *data,
                               size_t len)
{
    out->total += len;
    if (out->sink == NULL || len == 0)
        return;
    if (sizeof(out->buf) - out->n < len)
        idem_canon_out_flush(out);
    if (len > sizeof(out->buf)) {
        /* More than the buffer holds: past it, straight to the sink. */
        if (out->rc == 0)
            out->rc = out->sink->write(out->sink, data, len);
        return;
    }
    memcpy(out->buf + out->n, data, len);
    out->n += len;
}

static int idem_canon_unreserved(int u)
{
    return (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') ||
           (u >= '0' && u <= '9') || u == '-' || u == '.' || u == '_' ||
           u == '~';
}

/*
 * Writes s[0..len), a name or a value, decoded and encoded again in the one
 * canonical way (canon.h).
 */
static void idem_canon_put_encoded(idem_canon_out_t *out, const char *s,
                                   size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    int after_bad = 0;
    size_t i = 0;

    while (i < len) {
        int u = idem_canon_unit(s, len, &i);
        char esc[3] = {'%', hex[(u >> 4) & 15], hex[u & 15]};
        char c = (char)u;

        if (u == IDEM_CANON_BAD_PCT) {
            idem_canon_out_put(out, "%", 1);
            after_bad = 1;
            continue;
        }
        if (idem_canon_unreserved(u) &&
            !(after_bad && idem_canon_hex((unsigned char)u) >= 0))
            idem_canon_out_put(out, &c, 1);
        else
            idem_canon_out_put(out, esc, 3);
        after_bad = 0;
    }
}

/* Writes one segment: its name, and '=' and its value when it has one. */
static void idem_canon_put_seg(idem_canon_out_t *out,
                               const idem_canon_seg_t *seg)
{
    idem_canon_put_encoded(out, seg->data, seg->name_len);
    if (seg->name_len == seg->len)
        return;
    idem_canon_out_put(out, "=", 1);
    idem_canon_put_encoded(out, seg->data + seg->name_len + 1,
                           seg->len - seg->name_len - 1);
}

static void idem_canon_seg_set(idem_canon_seg_t *seg, const char *data,
                               size_t len, size_t index)
{
    const char *eq = memchr(data, '=', len);
    idem_canon_out_t count = {NULL, 0, 0, 0, {0}};

    seg->data = data;
    seg->len = len;
    seg->name_len = eq ? (size_t)(eq - data) : len;
    seg->index = index;
    idem_canon_put_seg(&count, seg);
    seg->canon_len = count.total;
}

int idem_canon_pairs_init(idem_canon_pairs_t *p, const char *s, size_t len)
{
    idem_canon_seg_t *segs;
    size_t nsegs = 0, start = 0;

    /* Count the non-empty segments. */
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '&')
            continue;
        if (i > start)
            nsegs++;
        start = i + 1;
    }

    p->n = nsegs;
    p->len = 0;
    p->segs = NULL;
    if (nsegs == 0)
        return 0;
    if (nsegs == 1) {
        segs = &p->one_;
    } else {
        segs = malloc(nsegs * sizeof(*segs));
        if (segs == NULL)
            return IDEM_ENOMEM;
    }
    nsegs = 0;
    start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && s[i] != '&')
            continue;
        if (i > start) {
            idem_canon_seg_set(&segs[nsegs], s + start, i - start, nsegs);
            p->len += segs[nsegs].canon_len;
            nsegs++;
        }
        start = i + 1;
    }
    p->len += nsegs - 1;
    if (nsegs > 1) {
        qsort(segs, nsegs, sizeof(*segs), idem_canon_seg_cmp);
        p->segs = segs;
    }
    return 0;
}

int idem_canon_pairs_write(const idem_canon_pairs_t *p, idem_canon_sink_t *sink)
{
    const idem_canon_seg_t *segs = p->n > 1 ? p->segs : &p->one_;
    idem_canon_out_t out;

    out.sink = sink;
    out.total = 0;
    out.n = 0;
    out.rc = 0;
    for (size_t i = 0; i < p->n && out.rc == 0; i++) {
        if (i > 0)
            idem_canon_out_put(&out, "&", 1);
        idem_canon_put_seg(&out, &segs[i]);
    }
    idem_canon_out_flush(&out);
    return out.rc;
}

void idem_canon_pairs_free(idem_canon_pairs_t *p)
{
    free(p->segs);
    p->segs = NULL;
    p->n = 0;
    p->len = 0;
}

int idem_canon_seg_named(const idem_canon_seg_t *seg, const char *name,
                         size_t len)
{
    size_t i = 0, j = 0;

    while (i < seg->name_len) {
        int u = idem_canon_unit(seg->data, seg->name_len, &i);

        if (j == len || u != (unsigned char)name[j])
            return 0;
        j++;
    }
    return j == len;
}

static int idem_canon_seg_ignored(const idem_canon_seg_t *seg,
                                  const idem_str_t *ignore, size_t nignore)
{
    for (size_t k = 0; k < nignore; k++) {
        if (ignore[k].len > 0 && ignore[k].data[0] == '/')
            continue;
        if (idem_canon_seg_named(seg, ignore[k].data, ignore[k].len))
            return 1;
    }
    return 0;
}

void idem_canon_pairs_drop(idem_canon_pairs_t *p, const idem_str_t *ignore,
                           size_t nignore)
{
    idem_canon_seg_t *segs = p->n > 1 ? p->segs : &p->one_;
    size_t kept = 0, len = 0;

    for (size_t i = 0; i < p->n; i++) {
        if (idem_canon_seg_ignored(&segs[i], ignore, nignore))
            continue;
        segs[kept] = segs[i];
        len += segs[kept].canon_len;
        kept++;
    }
    if (kept > 1)
        len += kept - 1;
    if (p->n > 1 && kept <= 1) {
        if (kept == 1)
            p->one_ = segs[0];
        free(p->segs);
        p->segs = NULL;
    }
    p->n = kept;
    p->len = len;
}

/* ------------------------------------------------------------------------ */
/* Media type                                                                */
/* ------------------------------------------------------------------------ */

static int idem_canon_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 9110 tchar. */
static int idem_canon_is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* RFC 9110 qdtext, and what a quoted-pair may escape. */
static int idem_canon_is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5B) ||
           (c >= 0x5D && c <= 0x7E) || c >= 0x80;
}

static int idem_canon_is_quotable(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static char idem_canon_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static size_t idem_canon_skip_ows(const char *s, size_t len, size_t i)
{
    while (i < len && idem_canon_is_ows(s[i]))
        i++;
    return i;
}

/*
 * Reads the parameters of s[0..len) from i, the first ';', on. Stores them
 * in params when it is not NULL, and their number in *n. Returns 1, or 0
 * when they do not follow the grammar of canon.h.
 */
static int idem_canon_media_scan(const char *s, size_t len, size_t i,
                                 idem_canon_param_t *params, size_t *n)
{
    *n = 0;
    while (i < len) {
        idem_canon_param_t p;

        /* s[i] is a ';'. */
        i = idem_canon_skip_ows(s, len, i + 1);
        if (i == len)
            break;
        if (s[i] == ';')
            continue;
        p.name = s + i;
        while (i < len && idem_canon_is_tchar((unsigned char)s[i]))
            i++;
        p.name_len = (size_t)(s + i - p.name);
        if (p.name_len == 0)
            return 0;
        i = idem_canon_skip_ows(s, len, i);
        if (i == len || s[i] != '=')
            return 0;
        i = idem_canon_skip_ows(s, len, i + 1);
        p.value = s + i;
        if (i < len && s[i] == '"') {
            for (i++; i < len && s[i] != '"'; i++) {
                unsigned char c = (unsigned char)s[i];

                if (c == '\\') {
                    if (i + 1 == len ||
                        !idem_canon_is_quotable((unsigned char)s[i + 1]))
                        return 0;
                    i++;
                } else if (!idem_canon_is_qdtext(c)) {
                    return 0;
                }
            }
            if (i == len)
                return 0;
            i++;
        } else {
            while (i < len && idem_canon_is_tchar((unsigned char)s[i]))
                i++;
            if (s + i == p.value)
                return 0;
        }
        p.value_len = (size_t)(s + i - p.value);
        i = idem_canon_skip_ows(s, len, i);
        if (i < len && s[i] != ';')
            return 0;
        p.index = *n;
        if (params != NULL)
            params[*n] = p;
        (*n)++;
    }
    return 1;
}

/* Orders parameters by lower-cased name, then by input position. */
static int idem_canon_param_cmp(const void *a, const void *b)
{
    const idem_canon_param_t *x = a;
    const idem_canon_param_t *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;

    for (size_t i = 0; i < n; i++) {
        char c = idem_canon_lower(x->name[i]);
        char d = idem_canon_lower(y->name[i]);

        if (c != d)
            return (unsigned char)c < (unsigned char)d ? -1 : 1;
    }
    if (x->name_len != y->name_len)
        return x->name_len < y->name_len ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static void idem_canon_out_put_lower(idem_canon_out_t *out, const char *s,
                                     size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = idem_canon_lower(s[i]);

        idem_canon_out_put(out, &c, 1);
    }
}

/*
 * Writes a parameter value: a token as it is, a quoted-string unquoted and,
 * unless what it holds is a token, quoted again with a '\' before each '"'
 * and '\' only.
 */
static void idem_canon_out_put_value(idem_canon_out_t *out, const char *v,
                                     size_t len)
{
    int token = len > 2;

    if (v[0] != '"') {
        idem_canon_out_put(out, v, len);
        return;
    }
    v++;
    len -= 2;
    for (size_t i = 0; i < len && token; i++) {
        if (v[i] == '\\')
            i++;
        token = idem_canon_is_tchar((unsigned char)v[i]);
    }
    if (token) {
        for (size_t i = 0; i < len; i++) {
            if (v[i] == '\\')
                i++;
            idem_canon_out_put(out, v + i, 1);
        }
        return;
    }
    idem_canon_out_put(out, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '\\')
            i++;
        if (v[i] == '"' || v[i] == '\\')
            idem_canon_out_put(out, "\\", 1);
        idem_canon_out_put(out, v + i, 1);
    }
    idem_canon_out_put(out, "\"", 1);
}

static void idem_canon_media_put(idem_canon_out_t *out,
                                 const idem_canon_media_t *m)
{
    const idem_canon_param_t *params = m->n > 1 ? m->params : &m->one_;

    idem_canon_out_put_lower(out, m->type.data, m->type.len);
    if (!m->parsed) {
        idem_canon_out_put(out, m->rest.data, m->rest.len);
        return;
    }
    for (size_t i = 0; i < m->n; i++) {
        idem_canon_out_put(out, ";", 1);
        idem_canon_out_put_lower(out, params[i].name, params[i].name_len);
        idem_canon_out_put(out, "=", 1);
        idem_canon_out_put_value(out, params[i].value, params[i].value_len);
    }
}

int idem_canon_media_init(idem_canon_media_t *m, const char *s, size_t len)
{
    const char *semi = len ? memchr(s, ';', len) : NULL;
    size_t end = semi ? (size_t)(semi - s) : len, start = 0;
    idem_canon_out_t count = {NULL, 0, 0, 0, {0}};
    idem_canon_param_t *params = &m->one_;

    while (start < end && idem_canon_is_ows(s[start]))
        start++;
    while (end > start && idem_canon_is_ows(s[end - 1]))
        end--;
    m->type = (idem_str_t){len ? s + start : "", end - start};
    m->rest =
        (idem_str_t){semi ? semi : "", semi ? len - (size_t)(semi - s) : 0};
    m->params = NULL;
    m->parsed = idem_canon_media_scan(s, len, semi ? (size_t)(semi - s) : len,
                                      NULL, &m->n);
    if (!m->parsed)
        m->n = 0;
    if (m->n > 1) {
        params = malloc(m->n * sizeof(*params));
        if (params == NULL)
            return IDEM_ENOMEM;
    }
    if (m->n > 0) {
        (void)idem_canon_media_scan(s, len, (size_t)(semi - s), params, &m->n);
        qsort(params, m->n, sizeof(*params), idem_canon_param_cmp);
    }
    if (m->n > 1)
        m->params = params;
    idem_canon_media_put(&count, m);
    m->len = count.total;
    return 0;
}

int idem_canon_media_write(const idem_canon_media_t *m, idem_canon_sink_t *sink)
{
    idem_canon_out_t out;

    out.sink = sink;
    out.total = 0;
    out.n = 0;
    out.rc = 0;
    idem_canon_media_put(&out, m);
    idem_canon_out_flush(&out);
    return out.rc;
}

void idem_canon_media_free(idem_canon_media_t *m)
{
    free(m->params);
    m->params = NULL;
    m->n = 0;
}
