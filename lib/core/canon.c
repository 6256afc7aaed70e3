/*
 * canon.c — canonical text of '&'-separated pairs, of a media type and of
 * JSON bodies, the forms in which the fingerprint compares a query, a form
 * body, a Content-Type and a JSON body (SPEC §4). See canon.h for the exact
 * rules.
 *
 * Pairs become an array of segments that point into the input and are
 * sorted there by decoded name, decoded again at each comparison rather
 * than copied; the canonical text is decoded and encoded again segment by
 * segment as it is written, never built whole. The parameters of a media
 * type are read the same way, into an array of borrowed spans. Both are
 * written through one small staging buffer (idem_canon_out_t), which with
 * no sink only counts, so that the length framed in the fingerprint is
 * known before the text is written.
 *
 * A JSON body goes through three steps:
 *
 *   body ──> pre-scan ──> jansson (json_loadb) ──> canonical writer ──> sink
 *            one linear     strict parse:           walks the tree, sorts
 *            pass: depth,   UTF-8, duplicates,      each object's members,
 *            number         64-bit integers         stages output in a
 *            precision                              buffer of its own
 *
 * The pre-scan runs before any allocation: it bounds the nesting depth (so
 * jansson and the writer recurse at most IDEM_FP_JSON_MAX_DEPTH deep) and
 * rejects real numbers that a double would merge with a neighbour. A body
 * the pre-scan or jansson refuses is reported as "not JSON" and the caller
 * hashes it as bytes; only running out of memory is an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* ------------------------------------------------------------------------ */
/* JSON pre-scan                                                             */
/* ------------------------------------------------------------------------ */

/* The most significant digits a real may have and still be told apart. */
#define IDEM_CANON_REAL_DIGITS 15
/* The decimal exponents of the normal doubles those digits are exact in. */
#define IDEM_CANON_REAL_EXP_MIN (-307)
#define IDEM_CANON_REAL_EXP_MAX 308

static int idem_canon_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Whether the number token s[0..len) (as the pre-scan delimits it) is one
 * the canonical form represents exactly: any integer (jansson refuses those
 * beyond 64 bits itself), or a real of at most IDEM_CANON_REAL_DIGITS
 * significant digits whose value is zero or within the normal range. A
 * malformed token is accepted here; jansson refuses it.
 */
static int idem_canon_number_exact(const unsigned char *s, size_t len)
{
    size_t i = 0, int_digits = 0, first_sig = 0, last_sig = 0;
    size_t ndigits = 0;
    int any_sig = 0, is_real = 0;
    long long exp10 = 0;
    int exp10_neg = 0;

    if (i < len && s[i] == '-')
        i++;
    for (; i < len && (idem_canon_is_digit(s[i]) || s[i] == '.'); i++) {
        if (s[i] == '.') {
            is_real = 1;
            continue;
        }
        if (!is_real)
            int_digits++;
        if (s[i] != '0') {
            if (!any_sig)
                first_sig = ndigits;
            last_sig = ndigits;
            any_sig = 1;
        }
        ndigits++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        is_real = 1;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            exp10_neg = s[i++] == '-';
        for (; i < len && idem_canon_is_digit(s[i]); i++) {
            if (exp10 < 100000)
                exp10 = exp10 * 10 + (s[i] - '0');
        }
    }
    if (!is_real || !any_sig)
        return 1;
    if (last_sig - first_sig + 1 > IDEM_CANON_REAL_DIGITS)
        return 0;
    /* The decimal exponent of the first significant digit. */
    exp10 = (exp10_neg ? -exp10 : exp10) + (long long)int_digits -
            (long long)first_sig - 1;
    return exp10 >= IDEM_CANON_REAL_EXP_MIN && exp10 <= IDEM_CANON_REAL_EXP_MAX;
}

/*
 * One linear pass over a JSON text that skips string contents (a '\'
 * escapes the next byte) and returns whether the text stays within
 * IDEM_FP_JSON_MAX_DEPTH nested arrays and objects and all its numbers are
 * exact (idem_canon_number_exact). For a valid text it is exact; for an
 * invalid one its answer does not matter, jansson refuses the text.
 */
static int idem_canon_json_prescan(const unsigned char *s, size_t len)
{
    size_t depth = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];

        switch (c) {
        case '"':
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\\')
                    i++;
            }
            break;
        case '[':
        case '{':
            if (++depth > IDEM_FP_JSON_MAX_DEPTH)
                return 0;
            break;
        case ']':
        case '}':
            if (depth > 0)
                depth--;
            break;
        default:
            if (c == '-' || idem_canon_is_digit(c)) {
                size_t start = i;

                while (i + 1 < len &&
                       (idem_canon_is_digit(s[i + 1]) || s[i + 1] == '.' ||
                        s[i + 1] == 'e' || s[i + 1] == 'E' || s[i + 1] == '+' ||
                        s[i + 1] == '-'))
                    i++;
                if (!idem_canon_number_exact(s + start, i + 1 - start))
                    return 0;
            }
            break;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* JSON canonical writer                                                     */
/* ------------------------------------------------------------------------ */

/* Output is staged here and handed to the sink in large pieces. */
#define IDEM_CANON_STAGE 4096
/* A string is escaped in chunks this long: 6 bytes out per byte at most. */
#define IDEM_CANON_ESC_CHUNK 256

typedef struct {
    idem_canon_sink_t *sink;
    size_t len;
    char stage[IDEM_CANON_STAGE];
} idem_canon_writer_t;

typedef struct {
    const char *key;
    size_t key_len;
    json_t *value;
} idem_canon_member_t;

static int idem_canon_flush(idem_canon_writer_t *w)
{
    int rc = 0;

    if (w->len > 0)
        rc = w->sink->write(w->sink, w->stage, w->len);
    w->len = 0;
    return rc;
}

/* Makes room for n bytes (n <= IDEM_CANON_STAGE) in the stage. */
static int idem_canon_reserve(idem_canon_writer_t *w, size_t n)
{
    if (IDEM_CANON_STAGE - w->len >= n)
        return 0;
    return idem_canon_flush(w);
}

static int idem_canon_put(idem_canon_writer_t *w, const char *s, size_t n)
{
    int rc;

    if (n > IDEM_CANON_STAGE) {
        rc = idem_canon_flush(w);
        return rc ? rc : w->sink->write(w->sink, s, n);
    }
    if ((rc = idem_canon_reserve(w, n)) != 0)
        return rc;
    memcpy(w->stage + w->len, s, n);
    w->len += n;
    return 0;
}

static int idem_canon_put_string(idem_canon_writer_t *w, const char *s,
                                 size_t n)
{
    int rc;

    if ((rc = idem_canon_put(w, "\"", 1)) != 0)
        return rc;
    while (n > 0) {
        size_t chunk = n < IDEM_CANON_ESC_CHUNK ? n : IDEM_CANON_ESC_CHUNK;

        if ((rc = idem_canon_reserve(w, 6 * chunk)) != 0)
            return rc;
        w->len += idem_json_escape(w->stage + w->len, IDEM_CANON_STAGE - w->len,
                                   s, chunk);
        s += chunk;
        n -= chunk;
    }
    return idem_canon_put(w, "\"", 1);
}

/*
 * Formats a real as "%.15g", with '.' as the decimal point whatever the
 * locale, and ".0" added when the text would read as an integer. The
 * pre-scan let through only reals of at most 15 significant digits in the
 * normal range, and those survive the trip through a double, so the text is
 * the number's shortest exact spelling: 0.1 stays "0.1".
 */
static int idem_canon_put_real(idem_canon_writer_t *w, double v)
{
    char buf[48];
    int n;
    int has_point = 0;

    n = snprintf(buf, sizeof(buf) - 2, "%.15g", v);
    if (n < 0 || (size_t)n >= sizeof(buf) - 2)
        return IDEM_EINVAL;
    for (int i = 0; i < n; i++) {
        char c = buf[i];

        if (c == 'e') {
            has_point = 1;
        } else if (!(c == '-' || c == '+' || (c >= '0' && c <= '9'))) {
            buf[i] = '.'; /* the locale's decimal point */
            has_point = 1;
        }
    }
    if (!has_point) {
        buf[n++] = '.';
        buf[n++] = '0';
    }
    return idem_canon_put(w, buf, (size_t)n);
}

/* Formats an integer in decimal; snprintf would dominate arrays of them. */
static int idem_canon_put_integer(idem_canon_writer_t *w, json_int_t v)
{
    char buf[24];
    size_t i = sizeof(buf);
    unsigned long long u =
        v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        buf[--i] = '-';
    return idem_canon_put(w, buf + i, sizeof(buf) - i);
}

static int idem_canon_member_cmp(const void *a, const void *b)
{
    const idem_canon_member_t *x = a;
    const idem_canon_member_t *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = n ? memcmp(x->key, y->key, n) : 0;

    if (c != 0)
        return c;
    return x->key_len < y->key_len ? -1 : (x->key_len > y->key_len);
}

/*
 * The ignored values. A pointer that is still "live" at a value is the
 * rest of an ignore entry whose tokens so far named the path down to it;
 * it is always "/" followed by the next token and perhaps more.
 */

/* Whether the pointer token t[0..tlen) names the member key[0..klen). */
static int idem_canon_token_is_name(const char *t, size_t tlen, const char *key,
                                    size_t klen)
{
    size_t j = 0;

    for (size_t i = 0; i < tlen; i++, j++) {
        char c = t[i];

        if (c == '~') {
            if (i + 1 == tlen || (t[i + 1] != '0' && t[i + 1] != '1'))
                return 0;
            c = t[++i] == '0' ? '~' : '/';
        }
        if (j == klen || key[j] != c)
            return 0;
    }
    return j == klen;
}

/* Whether the pointer token t[0..tlen) names the array element index. */
static int idem_canon_token_is_index(const char *t, size_t tlen, size_t index)
{
    size_t v = 0;

    if (tlen == 0 || (tlen > 1 && t[0] == '0'))
        return 0;
    for (size_t i = 0; i < tlen; i++) {
        if (!idem_canon_is_digit((unsigned char)t[i]))
            return 0;
        if (v > (SIZE_MAX - 9) / 10)
            return 0;
        v = v * 10 + (size_t)(t[i] - '0');
    }
    return v == index;
}

/*
 * One step down, into the member key[0..klen) of an object (is_array 0) or
 * the element index of an array: returns 1 when one of the live pointers
 * ends there (the child is left out); otherwise stores in next those that
 * go on into the child and their number in *nnext, and returns 0.
 */
static int idem_canon_ptr_step(const idem_str_t *live, size_t nlive,
                               int is_array, const char *key, size_t klen,
                               size_t index, idem_str_t *next, size_t *nnext)
{
    *nnext = 0;
    for (size_t k = 0; k < nlive; k++) {
        const char *t = live[k].data + 1;
        const char *end = live[k].data + live[k].len;
        const char *slash = memchr(t, '/', (size_t)(end - t));
        size_t tlen = (size_t)((slash ? slash : end) - t);
        int named = is_array ? idem_canon_token_is_index(t, tlen, index)
                             : idem_canon_token_is_name(t, tlen, key, klen);

        if (!named)
            continue;
        if (slash == NULL)
            return 1;
        next[*nnext].data = slash;
        next[*nnext].len = (size_t)(end - slash);
        (*nnext)++;
    }
    return 0;
}

static int idem_canon_put_value(idem_canon_writer_t *w, json_t *v,
                                const idem_str_t *live, size_t nlive);

static int idem_canon_put_object(idem_canon_writer_t *w, json_t *obj,
                                 const idem_str_t *live, size_t nlive)
{
    idem_canon_member_t *members = NULL;
    idem_str_t *next = NULL;
    size_t n = json_object_size(obj), i = 0, nnext = 0, written = 0;
    void *it;
    int rc;

    if (n > 0) {
        members = malloc(n * sizeof(*members));
        if (members == NULL)
            return IDEM_ENOMEM;
    }
    if (n > 0 && nlive > 0) {
        next = malloc(nlive * sizeof(*next));
        if (next == NULL) {
            free(members);
            return IDEM_ENOMEM;
        }
    }
    for (it = json_object_iter(obj); it != NULL && i < n;
         it = json_object_iter_next(obj, it), i++) {
        members[i].key = json_object_iter_key(it);
        members[i].key_len = json_object_iter_key_len(it);
        members[i].value = json_object_iter_value(it);
    }
    n = i;
    if (n > 1)
        qsort(members, n, sizeof(*members), idem_canon_member_cmp);

    if ((rc = idem_canon_put(w, "{", 1)) != 0)
        goto fail;
    for (i = 0; i < n; i++) {
        if (idem_canon_ptr_step(live, nlive, 0, members[i].key,
                                members[i].key_len, 0, next, &nnext))
            continue;
        if (written++ > 0 && (rc = idem_canon_put(w, ",", 1)) != 0)
            goto fail;
        rc = idem_canon_put_string(w, members[i].key, members[i].key_len);
        if (rc != 0)
            goto fail;
        if ((rc = idem_canon_put(w, ":", 1)) != 0)
            goto fail;
        rc = idem_canon_put_value(w, members[i].value, next, nnext);
        if (rc != 0)
            goto fail;
    }
    rc = idem_canon_put(w, "}", 1);

fail:
    free(next);
    free(members);
    return rc;
}

static int idem_canon_put_array(idem_canon_writer_t *w, json_t *arr,
                                const idem_str_t *live, size_t nlive)
{
    idem_str_t *next = NULL;
    size_t n = json_array_size(arr), nnext = 0, written = 0;
    int rc;

    if (n > 0 && nlive > 0) {
        next = malloc(nlive * sizeof(*next));
        if (next == NULL)
            return IDEM_ENOMEM;
    }
    if ((rc = idem_canon_put(w, "[", 1)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (idem_canon_ptr_step(live, nlive, 1, NULL, 0, i, next, &nnext))
            continue;
        if (written++ > 0 && (rc = idem_canon_put(w, ",", 1)) != 0)
            goto fail;
        rc = idem_canon_put_value(w, json_array_get(arr, i), next, nnext);
        if (rc != 0)
            goto fail;
    }
    rc = idem_canon_put(w, "]", 1);

fail:
    free(next);
    return rc;
}

static int idem_canon_put_value(idem_canon_writer_t *w, json_t *v,
                                const idem_str_t *live, size_t nlive)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return idem_canon_put_object(w, v, live, nlive);
    case JSON_ARRAY:
        return idem_canon_put_array(w, v, live, nlive);
    case JSON_STRING:
        return idem_canon_put_string(w, json_string_value(v),
                                     json_string_length(v));
    case JSON_INTEGER:
        return idem_canon_put_integer(w, json_integer_value(v));
    case JSON_REAL:
        return idem_canon_put_real(w, json_real_value(v));
    case JSON_TRUE:
        return idem_canon_put(w, "true", 4);
    case JSON_FALSE:
        return idem_canon_put(w, "false", 5);
    case JSON_NULL:
        return idem_canon_put(w, "null", 4);
    }
    return IDEM_EINVAL;
}

int idem_canon_json(const uint8_t *body, size_t len, idem_canon_sink_t *sink,
                    int *is_json)
{
    return idem_canon_json_ignoring(body, len, NULL, 0, sink, is_json);
}

int idem_canon_json_ignoring(const uint8_t *body, size_t len,
                             const idem_str_t *ignore, size_t nignore,
                             idem_canon_sink_t *sink, int *is_json)
{
    idem_canon_writer_t w;
    idem_str_t *live = NULL;
    size_t nlive = 0;
    json_t *root;
    json_error_t err;
    int rc = 0;

    *is_json = 0;
    if (len == 0 || len > IDEM_FP_JSON_MAX_BYTES)
        return 0;
    if (!idem_canon_json_prescan(body, len))
        return 0;

    root = json_loadb((const char *)body, len,
                      JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                      &err);
    if (root == NULL) {
        /* jansson cannot always tell its own allocation failures apart;
         * those it names are ours to report, the rest mean "not JSON". */
        return json_error_code(&err) == json_error_out_of_memory ? IDEM_ENOMEM
                                                                 : 0;
    }

    for (size_t k = 0; k < nignore; k++)
        nlive += ignore[k].len > 0 && ignore[k].data[0] == '/';
    if (nlive > 0) {
        live = malloc(nlive * sizeof(*live));
        if (live == NULL) {
            rc = IDEM_ENOMEM;
            goto fail;
        }
        nlive = 0;
        for (size_t k = 0; k < nignore; k++) {
            if (ignore[k].len > 0 && ignore[k].data[0] == '/')
                live[nlive++] = ignore[k];
        }
    }

    w.sink = sink;
    w.len = 0;
    if ((rc = idem_canon_put_value(&w, root, live, nlive)) != 0)
        goto fail;
    if ((rc = idem_canon_flush(&w)) != 0)
        goto fail;
    *is_json = 1;

fail:
    free(live);
    json_decref(root);
    return rc;
}
