/*
 * fuzz_fp_collision.c — libFuzzer target that checks the fingerprint against
 * a reading of the request written apart from it: two requests share a
 * fingerprint exactly when an API reads the same parameters in them.
 *
 * Input layout:
 *
 *     byte 0      what is fuzzed: 0 the query, 1 a form body, 2 the
 *                 Content-Type (mod 3); then (byte 0 / 3) mod 4, the
 *                 ignore list of both requests, an index into
 *                 fuzz_ignores[] (0: none)
 *     byte 1      n: the next n bytes (fewer if the input ends) are edits,
 *                 two bytes each (an operation and a position)
 *     the rest    text A
 *
 * Text B is A with the edits applied: escaping a byte or undoing an escape,
 * changing a letter's case, '+' against "%20" or "%2B", swapping two
 * segments, adding a separator, OWS, quotes or a backslash, deleting a
 * byte. Some keep the meaning and some do not; the target does not know
 * which. The reference reader below decides it, and the target checks:
 *   - fingerprint(A) == fingerprint(B) exactly when the reader finds the
 *     same parameters in A and B (no collision, no missed equivalence);
 *   - the canonical text of A and B agrees with the fingerprint;
 *   - a canonical text is its own canonical text (pairs, and parameters
 *     that parse);
 *   - with an ignore list, all of this holds for the pairs whose names it
 *     does not name, which the reference reader drops by itself.
 *
 * The reference reader is deliberately simple and slow: it decodes every
 * name and value into an array of units (a byte, or REF_BAD for a '%' that
 * starts no escape), sorts with an insertion sort and compares arrays.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/canon.h"
#include "idem.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

#define REF_BAD       256
#define REF_MAX_ITEMS 256
#define FUZZ_MAX_TEXT 8192

#define FUZZ_FORM "application/x-www-form-urlencoded"

#define FUZZ_MAX_IGNORE 4

/* Field names to leave out (and a JSON Pointer, which names no pair). */
static const char *const fuzz_ignores[][FUZZ_MAX_IGNORE + 1] = {
    {NULL},
    {"a", NULL},
    {"a", "b c", "/a", NULL},
    {"a=b", "%", "x&y", "A", NULL},
};

/* The ignore list of this input, as idem_request_t takes it. */
static idem_str_t fuzz_ignore[FUZZ_MAX_IGNORE];
static size_t fuzz_nignore;

/* ---- the reference reader ---- */

/* A name or a value as an API reads it. */
typedef struct {
    int *u;
    size_t n;
} ref_units_t;

/* A query pair, or a media type parameter (has_eq is then always 1). */
typedef struct {
    ref_units_t name;
    int has_eq;
    ref_units_t value;
} ref_item_t;

typedef struct {
    int parsed; /* media: the parameters follow the grammar */
    ref_units_t type;
    ref_units_t rest; /* media that did not parse: the raw parameters */
    ref_item_t items[REF_MAX_ITEMS];
    size_t n;
    int too_many;
} ref_reading_t;

static void ref_push(ref_units_t *r, int u)
{
    int *grown = realloc(r->u, (r->n + 1) * sizeof(*r->u));

    FUZZ_CHECK(grown != NULL);
    r->u = grown;
    r->u[r->n++] = u;
}

/* Form decoding: '+' is a space, "%XX" a byte, any other '%' REF_BAD. */
static ref_units_t ref_form_decode(const char *s, size_t len)
{
    ref_units_t r = {NULL, 0};

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            ref_push(&r, ' ');
        } else if (s[i] == '%' && i + 2 < len &&
                   isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], '\0'};

            ref_push(&r, (int)strtol(hex, NULL, 16));
            i += 2;
        } else if (s[i] == '%') {
            ref_push(&r, REF_BAD);
        } else {
            ref_push(&r, (unsigned char)s[i]);
        }
    }
    return r;
}

static ref_units_t ref_bytes(const char *s, size_t len, int lower)
{
    ref_units_t r = {NULL, 0};

    for (size_t i = 0; i < len; i++)
        ref_push(&r,
                 lower ? tolower((unsigned char)s[i]) : (unsigned char)s[i]);
    return r;
}

static int ref_units_cmp(const ref_units_t *a, const ref_units_t *b)
{
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        if (a->u[i] != b->u[i])
            return a->u[i] < b->u[i] ? -1 : 1;
    }
    return a->n == b->n ? 0 : (a->n < b->n ? -1 : 1);
}

/* A stable sort by name. */
static void ref_sort(ref_reading_t *r)
{
    for (size_t i = 1; i < r->n; i++) {
        ref_item_t x = r->items[i];
        size_t j = i;

        while (j > 0 && ref_units_cmp(&r->items[j - 1].name, &x.name) > 0) {
            r->items[j] = r->items[j - 1];
            j--;
        }
        r->items[j] = x;
    }
}

static void ref_add(ref_reading_t *r, ref_units_t name, int has_eq,
                    ref_units_t value)
{
    if (r->n == REF_MAX_ITEMS) {
        r->too_many = 1;
        free(name.u);
        free(value.u);
        return;
    }
    r->items[r->n].name = name;
    r->items[r->n].has_eq = has_eq;
    r->items[r->n].value = value;
    r->n++;
}

static void ref_read_pairs(ref_reading_t *r, const char *s, size_t len)
{
    size_t start = 0;

    memset(r, 0, sizeof(*r));
    r->parsed = 1;
    for (size_t i = 0; i <= len; i++) {
        const char *seg = s + start, *eq;
        size_t n = i - start;

        if (i < len && s[i] != '&')
            continue;
        start = i + 1;
        if (n == 0)
            continue;
        eq = memchr(seg, '=', n);
        if (eq == NULL) {
            ref_add(r, ref_form_decode(seg, n), 0, (ref_units_t){NULL, 0});
        } else {
            size_t k = (size_t)(eq - seg);

            ref_add(r, ref_form_decode(seg, k), 1,
                    ref_form_decode(eq + 1, n - k - 1));
        }
    }
    ref_sort(r);
}

static int ref_tchar(int c)
{
    return c > 0 && c < 128 && (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * The media type, read by a small state machine over RFC 9110's
 * "type/subtype *( OWS ; OWS [ name OWS = OWS value ] ) OWS".
 */
static void ref_read_media(ref_reading_t *r, const char *s, size_t len)
{
    enum { BEFORE, NAME, AFTER_NAME, BEFORE_VALUE, TOKEN, QUOTED, AFTER } st;
    size_t semi = 0, a = 0, b = 0;
    ref_units_t name = {NULL, 0}, value = {NULL, 0};

    memset(r, 0, sizeof(*r));
    while (semi < len && s[semi] != ';')
        semi++;
    a = 0;
    b = semi;
    while (a < b && (s[a] == ' ' || s[a] == '\t'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
        b--;
    r->type = ref_bytes(s + a, b - a, 1);
    r->rest = ref_bytes(s + semi, len - semi, 0);
    r->parsed = 1;
    st = AFTER;
    for (size_t i = semi; i <= len && r->parsed; i++) {
        int c = i < len ? (unsigned char)s[i] : -1;
        int ows = c == ' ' || c == '\t';

        switch (st) {
        case BEFORE:
            if (c == -1 || c == ';' || ows)
                break;
            if (!ref_tchar(c)) {
                r->parsed = 0;
                break;
            }
            ref_push(&name, tolower(c));
            st = NAME;
            break;
        case NAME:
            if (ref_tchar(c))
                ref_push(&name, tolower(c));
            else if (ows)
                st = AFTER_NAME;
            else if (c == '=')
                st = BEFORE_VALUE;
            else
                r->parsed = 0;
            break;
        case AFTER_NAME:
            if (c == '=')
                st = BEFORE_VALUE;
            else if (!ows)
                r->parsed = 0;
            break;
        case BEFORE_VALUE:
            if (ows)
                break;
            if (c == '"') {
                st = QUOTED;
            } else if (ref_tchar(c)) {
                ref_push(&value, c);
                st = TOKEN;
            } else {
                r->parsed = 0;
            }
            break;
        case TOKEN:
            if (ref_tchar(c)) {
                ref_push(&value, c);
                break;
            }
            ref_add(r, name, 1, value);
            name = (ref_units_t){NULL, 0};
            value = (ref_units_t){NULL, 0};
            st = AFTER;
            if (c == ';')
                st = BEFORE;
            else if (c != -1 && !ows)
                r->parsed = 0;
            break;
        case QUOTED:
            if (c == '"') {
                ref_add(r, name, 1, value);
                name = (ref_units_t){NULL, 0};
                value = (ref_units_t){NULL, 0};
                st = AFTER;
            } else if (c == '\\' && i + 1 < len &&
                       ((unsigned char)s[i + 1] >= 0x20 || s[i + 1] == '\t') &&
                       s[i + 1] != 0x7F) {
                ref_push(&value, (unsigned char)s[++i]);
            } else if (c == '\t' || (c >= 0x20 && c != 0x7F && c != '\\')) {
                ref_push(&value, c);
            } else {
                r->parsed = 0;
            }
            break;
        case AFTER:
            if (c == ';')
                st = BEFORE;
            else if (c != -1 && !ows)
                r->parsed = 0;
            break;
        }
    }
    if (st != AFTER && st != BEFORE)
        r->parsed = 0;
    free(name.u);
    free(value.u);
    if (!r->parsed) {
        for (size_t i = 0; i < r->n; i++) {
            free(r->items[i].name.u);
            free(r->items[i].value.u);
        }
        r->n = 0;
    }
    ref_sort(r);
}

/* Drops the pairs whose decoded name is one of the ignored field names. */
static void ref_drop(ref_reading_t *r)
{
    size_t kept = 0;

    for (size_t i = 0; i < r->n; i++) {
        int named = 0;

        for (size_t k = 0; k < fuzz_nignore && !named; k++) {
            const idem_str_t *ig = &fuzz_ignore[k];

            if (ig->data[0] == '/' || ig->len != r->items[i].name.n)
                continue;
            named = 1;
            for (size_t j = 0; j < ig->len && named; j++)
                named = r->items[i].name.u[j] == (unsigned char)ig->data[j];
        }
        if (named) {
            free(r->items[i].name.u);
            free(r->items[i].value.u);
            continue;
        }
        r->items[kept++] = r->items[i];
    }
    r->n = kept;
}

static int ref_same(const ref_reading_t *a, const ref_reading_t *b)
{
    if (a->parsed != b->parsed || ref_units_cmp(&a->type, &b->type) != 0)
        return 0;
    if (!a->parsed)
        return ref_units_cmp(&a->rest, &b->rest) == 0;
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const ref_item_t *x = &a->items[i], *y = &b->items[i];

        if (ref_units_cmp(&x->name, &y->name) != 0 || x->has_eq != y->has_eq ||
            ref_units_cmp(&x->value, &y->value) != 0)
            return 0;
    }
    return 1;
}

static void ref_free(ref_reading_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->items[i].name.u);
        free(r->items[i].value.u);
    }
    free(r->type.u);
    free(r->rest.u);
}

/* ---- the library under test ---- */

typedef struct {
    idem_canon_sink_t super;
    char *buf;
    size_t len;
} fuzz_text_t;

static int fuzz_text_write(idem_canon_sink_t *sink, const void *data,
                           size_t len)
{
    fuzz_text_t *t = (fuzz_text_t *)sink;
    char *grown = realloc(t->buf, t->len + len + 1);

    if (grown == NULL)
        return IDEM_ENOMEM;
    t->buf = grown;
    memcpy(t->buf + t->len, data, len);
    t->len += len;
    return 0;
}

/* The canonical text of s in mode 0/1 (pairs) or 2 (media); caller frees. */
static fuzz_text_t fuzz_canon(int mode, const char *s, size_t len, int *parsed)
{
    fuzz_text_t t = {{fuzz_text_write}, NULL, 0};

    if (mode < 2) {
        idem_canon_pairs_t p;

        FUZZ_CHECK(idem_canon_pairs_init(&p, s, len) == 0);
        idem_canon_pairs_drop(&p, fuzz_ignore, fuzz_nignore);
        FUZZ_CHECK(idem_canon_pairs_write(&p, &t.super) == 0);
        FUZZ_CHECK(t.len == p.len);
        idem_canon_pairs_free(&p);
        *parsed = 1;
    } else {
        idem_canon_media_t m;

        FUZZ_CHECK(idem_canon_media_init(&m, s, len) == 0);
        FUZZ_CHECK(idem_canon_media_write(&m, &t.super) == 0);
        FUZZ_CHECK(t.len == m.len);
        *parsed = m.parsed;
        idem_canon_media_free(&m);
    }
    return t;
}

static idem_hash_t fuzz_fp(int mode, const char *s, size_t len)
{
    static idem_fp_cache_t *cache;
    idem_request_t req;
    idem_hash_t h, c;

    memset(&req, 0, sizeof(req));
    req.ignore = fuzz_nignore ? fuzz_ignore : NULL;
    req.nignore = fuzz_nignore;
    req.method = (idem_str_t){"POST", 4};
    req.path = (idem_str_t){"/v1/inquiries", 13};
    if (mode == 0) {
        req.query = (idem_str_t){s, len};
    } else if (mode == 1) {
        req.content_type = (idem_str_t){FUZZ_FORM, sizeof(FUZZ_FORM) - 1};
        req.body = (const uint8_t *)s;
        req.body_len = len;
    } else {
        req.content_type = (idem_str_t){s, len};
        req.body = (const uint8_t *)"x";
        req.body_len = 1;
    }
    FUZZ_CHECK(idem_fingerprint(&req, &h, NULL) == 0);
    /* the cache of fingerprints (kept across inputs) gives the same */
    if (cache == NULL)
        FUZZ_CHECK(idem_fp_cache_create(16, &cache) == 0);
    FUZZ_CHECK(idem_fingerprint_cached(cache, NULL, &req, &c, NULL) == 0);
    FUZZ_CHECK(memcmp(c.bytes, h.bytes, IDEM_HASH_LEN) == 0);
    return h;
}

/* ---- the edits ---- */

typedef struct {
    char buf[FUZZ_MAX_TEXT];
    size_t len;
} fuzz_buf_t;

static void fuzz_replace(fuzz_buf_t *b, size_t pos, size_t del, const char *ins,
                         size_t n)
{
    if (b->len - del + n > sizeof(b->buf))
        return;
    memmove(b->buf + pos + n, b->buf + pos + del, b->len - pos - del);
    memcpy(b->buf + pos, ins, n);
    b->len = b->len - del + n;
}

static int fuzz_is_escape(const fuzz_buf_t *b, size_t pos)
{
    return pos + 2 < b->len && b->buf[pos] == '%' &&
           isxdigit((unsigned char)b->buf[pos + 1]) &&
           isxdigit((unsigned char)b->buf[pos + 2]);
}

/* Swaps the separator-delimited piece around pos with the next one. */
static void fuzz_swap(fuzz_buf_t *b, size_t pos, char sep)
{
    size_t s1 = pos, e1, e2;
    char tmp[FUZZ_MAX_TEXT];

    while (s1 > 0 && b->buf[s1 - 1] != sep)
        s1--;
    e1 = pos;
    while (e1 < b->len && b->buf[e1] != sep)
        e1++;
    if (e1 == b->len)
        return;
    e2 = e1 + 1;
    while (e2 < b->len && b->buf[e2] != sep)
        e2++;
    /* [s1,e1) sep [e1+1,e2) becomes [e1+1,e2) sep [s1,e1). */
    memcpy(tmp, b->buf + e1 + 1, e2 - e1 - 1);
    tmp[e2 - e1 - 1] = sep;
    memcpy(tmp + (e2 - e1), b->buf + s1, e1 - s1);
    memcpy(b->buf + s1, tmp, e2 - s1);
}

static void fuzz_edit(fuzz_buf_t *b, int mode, uint8_t op, uint8_t where)
{
    static const char hex_up[] = "0123456789ABCDEF";
    static const char hex_lo[] = "0123456789abcdef";
    size_t pos = b->len ? (size_t)where * b->len / 256 : 0;
    char sep = mode < 2 ? '&' : ';';
    unsigned char c = pos < b->len ? (unsigned char)b->buf[pos] : 0;
    char esc[3];

    switch (op % 12) {
    case 0: /* escape a byte, upper-case hex */
    case 1: /* escape a byte, lower-case hex */
        if (pos == b->len)
            return;
        esc[0] = '%';
        esc[1] = (op % 12 ? hex_lo : hex_up)[c >> 4];
        esc[2] = (op % 12 ? hex_lo : hex_up)[c & 15];
        fuzz_replace(b, pos, 1, esc, 3);
        return;
    case 2: /* undo an escape */
        if (fuzz_is_escape(b, pos)) {
            char hex[3] = {b->buf[pos + 1], b->buf[pos + 2], '\0'};
            char lit = (char)strtol(hex, NULL, 16);

            fuzz_replace(b, pos, 3, &lit, 1);
        }
        return;
    case 3: /* change a letter's case */
        if (isalpha(c))
            b->buf[pos] = (char)(islower(c) ? toupper(c) : tolower(c));
        return;
    case 4: /* '+' against "%20" */
        if (c == '+')
            fuzz_replace(b, pos, 1, "%20", 3);
        else if (pos + 2 < b->len && memcmp(b->buf + pos, "%20", 3) == 0)
            fuzz_replace(b, pos, 3, "+", 1);
        return;
    case 5: /* '+' against "%2B" */
        if (c == '+')
            fuzz_replace(b, pos, 1, "%2B", 3);
        else if (pos + 2 < b->len && memcmp(b->buf + pos, "%2B", 3) == 0)
            fuzz_replace(b, pos, 3, "+", 1);
        return;
    case 6:
        if (pos < b->len)
            fuzz_swap(b, pos, sep);
        return;
    case 7:
        fuzz_replace(b, pos, 0, &sep, 1);
        return;
    case 8:
        fuzz_replace(b, pos, 0, where & 1 ? " " : "\t", 1);
        return;
    case 9: { /* quote the token around pos */
        size_t s = pos, e = pos;

        while (s > 0 && ref_tchar((unsigned char)b->buf[s - 1]))
            s--;
        while (e < b->len && ref_tchar((unsigned char)b->buf[e]))
            e++;
        if (e > s && b->len + 2 <= sizeof(b->buf)) {
            fuzz_replace(b, e, 0, "\"", 1);
            fuzz_replace(b, s, 0, "\"", 1);
        }
        return;
    }
    case 10:
        fuzz_replace(b, pos, 0, "\\", 1);
        return;
    default:
        if (pos < b->len)
            fuzz_replace(b, pos, 1, "", 0);
        return;
    }
}

/* ---- the checks ---- */

static void fuzz_check_fixed_point(int mode, const fuzz_text_t *t, int parsed)
{
    fuzz_text_t again;
    int parsed_again;

    if (!parsed)
        return;
    again = fuzz_canon(mode, t->buf ? t->buf : "", t->len, &parsed_again);
    FUZZ_CHECK(parsed_again == 1);
    FUZZ_CHECK(again.len == t->len &&
               (t->len == 0 || memcmp(again.buf, t->buf, t->len) == 0));
    free(again.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_buf_t a, b;
    ref_reading_t *ra, *rb;
    fuzz_text_t ta, tb;
    idem_hash_t ha, hb;
    int mode, pa, pb, same_fp, same_text;
    size_t nedits;

    if (size < 2)
        return 0;
    mode = data[0] % 3;
    for (fuzz_nignore = 0; fuzz_ignores[data[0] / 3 % 4][fuzz_nignore];
         fuzz_nignore++) {
        const char *n = fuzz_ignores[data[0] / 3 % 4][fuzz_nignore];

        fuzz_ignore[fuzz_nignore] = (idem_str_t){n, strlen(n)};
    }
    nedits = data[1];
    data += 2;
    size -= 2;
    if (nedits > size)
        nedits = size;
    if (size - nedits > FUZZ_MAX_TEXT / 2)
        return 0;
    memcpy(a.buf, data + nedits, size - nedits);
    a.len = size - nedits;
    b = a;
    for (size_t i = 0; i + 1 < nedits; i += 2)
        fuzz_edit(&b, mode, data[i], data[i + 1]);

    ra = malloc(sizeof(*ra));
    rb = malloc(sizeof(*rb));
    FUZZ_CHECK(ra != NULL && rb != NULL);
    if (mode < 2) {
        ref_read_pairs(ra, a.buf, a.len);
        ref_read_pairs(rb, b.buf, b.len);
        ref_drop(ra);
        ref_drop(rb);
    } else {
        ref_read_media(ra, a.buf, a.len);
        ref_read_media(rb, b.buf, b.len);
    }

    ta = fuzz_canon(mode, a.buf, a.len, &pa);
    tb = fuzz_canon(mode, b.buf, b.len, &pb);
    FUZZ_CHECK(pa == ra->parsed && pb == rb->parsed);
    fuzz_check_fixed_point(mode, &ta, pa);
    fuzz_check_fixed_point(mode, &tb, pb);

    ha = fuzz_fp(mode, a.buf, a.len);
    hb = fuzz_fp(mode, b.buf, b.len);
    same_fp = memcmp(ha.bytes, hb.bytes, IDEM_HASH_LEN) == 0;
    same_text = pa == pb && ta.len == tb.len &&
                (ta.len == 0 || memcmp(ta.buf, tb.buf, ta.len) == 0);
    FUZZ_CHECK(same_fp == same_text);
    if (!ra->too_many && !rb->too_many)
        FUZZ_CHECK(same_fp == ref_same(ra, rb));

    free(ta.buf);
    free(tb.buf);
    ref_free(ra);
    ref_free(rb);
    free(ra);
    free(rb);
    return 0;
}
