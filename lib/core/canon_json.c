/*
 * canon_json.c — the canonical text of a JSON body (canon.h), read by a
 * parser of its own: one pass over the body into a flat array of nodes,
 * then one walk over the nodes that writes the canonical text.
 *
 *   body ──> pre-scan ──> parse ──────────────────> write ──────────> sink
 *            depth        strict RFC 8259: UTF-8,   members in their
 *                         escapes, numbers;         sorted order, values
 *                         each object's members     as canon.h says,
 *                         sorted, duplicates        ignored values left
 *                         refused                   out
 *
 * What it accepts is what jansson 2.14's json_loadb() accepts with
 * JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL (which read
 * these bodies before, and which fuzz/fuzz_canon_json.c holds it to), and
 * numbers beyond what jansson stores (an integer of more than 64 bits, a
 * real that overflows a double), which are kept as written: any
 * value at the top, whitespace of space, tab, CR and LF only, well-formed
 * UTF-8 everywhere (no overlong forms, surrogates or code points above
 * U+10FFFF), no raw control byte in a string, the escapes \" \\ \/ \b \f
 * \n \r \t and \uXXXX with UTF-16 surrogates only in pairs, U+0000 in a
 * string value but never in a member name, numbers as RFC 8259 spells them
 * (no leading zero, no '+', digits on both sides of a '.'). A number is
 * never converted: the writer copies its token, so "1.0", "1.00", "1e0"
 * and "-0" stay four different values, as they are to an API that reads
 * decimals exactly. Nothing is copied but the strings that have escapes,
 * decoded into one buffer as long as the body.
 *
 * A body of a few hundred bytes costs no allocation: the nodes, the
 * members and the decoded strings start in arrays on the stack (about 8
 * KiB with the writer's stage) and move to the heap only when they outgrow
 * them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "canon.h"
#include "jsonstr.h"

/* ------------------------------------------------------------------------ */
/* Pre-scan                                                                  */
/* ------------------------------------------------------------------------ */

static int idem_cj_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/*
 * The pre-scan (canon.h): one linear pass that skips string contents (a
 * '\\' escapes the next byte) and counts nesting.
 */
int idem_canon_json_shallow(const uint8_t *s, size_t len)
{
    size_t depth = 0;

    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
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
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Parser                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum {
    IDEM_CJ_NULL,
    IDEM_CJ_FALSE,
    IDEM_CJ_TRUE,
    IDEM_CJ_NUMBER,
    IDEM_CJ_STRING,
    IDEM_CJ_ARRAY,
    IDEM_CJ_OBJECT
} idem_cj_type_t;

/*
 * A value, in document order: a container's descendants follow it, size
 * nodes in all with itself, so its next sibling is size nodes on. An
 * object's members (count of them) are at members[first], sorted by name.
 */
typedef struct {
    idem_cj_type_t type;
    size_t size;
    size_t count;
    union {
        struct {
            const char *s; /* a string decoded: in the body, or in the
                            * arena; a number's token, in the body */
            size_t n;
        } str;
        size_t first;
    } u;
} idem_cj_node_t;

/* A member: its decoded name and the node of its value. */
typedef struct {
    const char *name;
    size_t name_len;
    size_t value;
} idem_cj_member_t;

/* A growable array that starts in storage of its own. */
typedef struct {
    void *items;
    size_t n;
    size_t cap;
    size_t width;
    void *inline_items;
} idem_cj_vec_t;

#define IDEM_CJ_INLINE_NODES   64
#define IDEM_CJ_INLINE_MEMBERS 32
#define IDEM_CJ_INLINE_ARENA   512

typedef struct {
    const unsigned char *s;
    size_t len;
    size_t pos;
    idem_cj_vec_t nodes;   /* idem_cj_node_t */
    idem_cj_vec_t open;    /* idem_cj_member_t: of the objects being read */
    idem_cj_vec_t members; /* idem_cj_member_t: of the objects read, sorted */
    char *arena;           /* decoded strings: len bytes, made when needed */
    size_t arena_used;
    idem_cj_node_t inline_nodes[IDEM_CJ_INLINE_NODES];
    idem_cj_member_t inline_open[IDEM_CJ_INLINE_MEMBERS];
    idem_cj_member_t inline_members[IDEM_CJ_INLINE_MEMBERS];
    char inline_arena[IDEM_CJ_INLINE_ARENA];
} idem_cj_parser_t;

/* What a step of the parser returns besides 0: the text is not JSON. */
#define IDEM_CJ_NOT_JSON 1

static void idem_cj_vec_init(idem_cj_vec_t *v, void *inline_items, size_t cap,
                             size_t width)
{
    v->items = inline_items;
    v->inline_items = inline_items;
    v->n = 0;
    v->cap = cap;
    v->width = width;
}

static void idem_cj_vec_free(idem_cj_vec_t *v)
{
    if (v->items != v->inline_items)
        free(v->items);
}

/* Room for one more item; its index in *at. */
static int idem_cj_vec_push(idem_cj_vec_t *v, size_t *at)
{
    if (v->n == v->cap) {
        size_t cap = 2 * v->cap;
        void *items;

        if (cap > SIZE_MAX / v->width)
            return IDEM_ENOMEM;
        if (v->items == v->inline_items) {
            items = malloc(cap * v->width);
            if (items != NULL)
                memcpy(items, v->items, v->n * v->width);
        } else {
            items = realloc(v->items, cap * v->width);
        }
        if (items == NULL)
            return IDEM_ENOMEM;
        v->items = items;
        v->cap = cap;
    }
    *at = v->n++;
    return 0;
}

static idem_cj_node_t *idem_cj_node(idem_cj_parser_t *p, size_t i)
{
    return (idem_cj_node_t *)p->nodes.items + i;
}

static void idem_cj_skip_ws(idem_cj_parser_t *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

/* A new node of type at the parser's end; its index in *at. */
static int idem_cj_new(idem_cj_parser_t *p, idem_cj_type_t type, size_t *at)
{
    int rc = idem_cj_vec_push(&p->nodes, at);

    if (rc != 0)
        return rc;
    memset(idem_cj_node(p, *at), 0, sizeof(idem_cj_node_t));
    idem_cj_node(p, *at)->type = type;
    idem_cj_node(p, *at)->size = 1;
    return 0;
}

static int idem_cj_literal(idem_cj_parser_t *p, const char *word,
                           idem_cj_type_t type)
{
    size_t n = strlen(word), at;

    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return IDEM_CJ_NOT_JSON;
    p->pos += n;
    return idem_cj_new(p, type, &at);
}

static size_t idem_cj_digits(idem_cj_parser_t *p)
{
    size_t start = p->pos;

    while (p->pos < p->len && idem_cj_is_digit(p->s[p->pos]))
        p->pos++;
    return p->pos - start;
}

/* A number token, checked against RFC 8259's grammar and kept as it is
 * spelled: its value is never computed. */
static int idem_cj_number(idem_cj_parser_t *p)
{
    size_t start = p->pos, at;
    int rc;

    if (p->s[p->pos] == '-')
        p->pos++;
    if (p->pos == p->len || !idem_cj_is_digit(p->s[p->pos]))
        return IDEM_CJ_NOT_JSON;
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && idem_cj_is_digit(p->s[p->pos]))
            return IDEM_CJ_NOT_JSON;
    } else {
        (void)idem_cj_digits(p);
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (idem_cj_digits(p) == 0)
            return IDEM_CJ_NOT_JSON;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (idem_cj_digits(p) == 0)
            return IDEM_CJ_NOT_JSON;
    }
    if ((rc = idem_cj_new(p, IDEM_CJ_NUMBER, &at)) != 0)
        return rc;
    idem_cj_node(p, at)->u.str.s = (const char *)p->s + start;
    idem_cj_node(p, at)->u.str.n = p->pos - start;
    return 0;
}

static int idem_cj_hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;

    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];

        v <<= 4;
        if (idem_cj_is_digit(c))
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return IDEM_CJ_NOT_JSON;
    }
    *out = v;
    return 0;
}

/* Encodes the code point cp (at most U+10FFFF) as UTF-8 at out. */
static size_t idem_cj_utf8_put(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * The \uXXXX escape at s[0..6), and the one after it when it starts a
 * surrogate pair, as a code point; *used receives the bytes read (6 or 12).
 */
static int idem_cj_unicode(const unsigned char *s, const unsigned char *end,
                           unsigned *cp, size_t *used)
{
    unsigned lo;

    if (idem_cj_hex4(s + 2, cp) != 0)
        return IDEM_CJ_NOT_JSON;
    *used = 6;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return IDEM_CJ_NOT_JSON; /* a second half alone */
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 0;
    if (end - s < 12 || s[6] != '\\' || s[7] != 'u' ||
        idem_cj_hex4(s + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
        return IDEM_CJ_NOT_JSON;
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
    *used = 12;
    return 0;
}

/* Decodes the escaped string raw[0..n) (checked by idem_cj_string) into
 * the arena; its decoded text in *out, *out_len. */
static int idem_cj_decode(idem_cj_parser_t *p, const unsigned char *raw,
                          size_t n, const char **out, size_t *out_len)
{
    const unsigned char *s = raw, *end = raw + n;
    char *t;

    if (p->arena == NULL) {
        p->arena =
            p->len <= IDEM_CJ_INLINE_ARENA ? p->inline_arena : malloc(p->len);
        if (p->arena == NULL)
            return IDEM_ENOMEM;
    }
    t = p->arena + p->arena_used; /* decoded is never longer than raw */
    *out = t;
    while (s < end) {
        unsigned cp;
        size_t used;

        if (*s != '\\') {
            *t++ = (char)*s++;
            continue;
        }
        switch (s[1]) {
        case 'b':
            *t++ = '\b';
            break;
        case 'f':
            *t++ = '\f';
            break;
        case 'n':
            *t++ = '\n';
            break;
        case 'r':
            *t++ = '\r';
            break;
        case 't':
            *t++ = '\t';
            break;
        case 'u':
            if (idem_cj_unicode(s, end, &cp, &used) != 0)
                return IDEM_CJ_NOT_JSON;
            t += idem_cj_utf8_put(t, cp);
            s += used;
            continue;
        default:
            *t++ = (char)s[1];
            break; /* '"', '\\' or '/' */
        }
        s += 2;
    }
    *out_len = (size_t)(t - *out);
    p->arena_used += *out_len;
    return 0;
}

/* The string at p->pos (its '"'), as a new node; NUL inside it is refused
 * when name is set. */
static int idem_cj_string(idem_cj_parser_t *p, int name)
{
    const unsigned char *raw = p->s + p->pos + 1;
    const char *text;
    size_t i = p->pos + 1, n, text_len, at;
    int escaped = 0, rc;

    for (;;) {
        unsigned char c;

        if (i == p->len)
            return IDEM_CJ_NOT_JSON;
        c = p->s[i];
        if (c == '"')
            break;
        if (c < 0x20)
            return IDEM_CJ_NOT_JSON;
        if (c == '\\') {
            escaped = 1;
            if (i + 1 == p->len || !strchr("\"\\/bfnrtu", p->s[i + 1]) ||
                p->s[i + 1] == '\0')
                return IDEM_CJ_NOT_JSON;
            if (p->s[i + 1] == 'u') {
                unsigned cp;

                if (p->len - i < 6 || idem_cj_hex4(p->s + i + 2, &cp) != 0)
                    return IDEM_CJ_NOT_JSON;
                i += 6;
            } else {
                i += 2;
            }
        } else if (c >= 0x80) {
            size_t u = idem_jsonstr_utf8_len(p->s + i, p->len - i);

            if (u == 0)
                return IDEM_CJ_NOT_JSON;
            i += u;
        } else {
            i++;
        }
    }
    n = i - (p->pos + 1);
    p->pos = i + 1;
    text = (const char *)raw;
    text_len = n;
    if (escaped && (rc = idem_cj_decode(p, raw, n, &text, &text_len)) != 0)
        return rc;
    if (name && memchr(text, '\0', text_len) != NULL)
        return IDEM_CJ_NOT_JSON;
    if ((rc = idem_cj_new(p, IDEM_CJ_STRING, &at)) != 0)
        return rc;
    idem_cj_node(p, at)->u.str.s = text;
    idem_cj_node(p, at)->u.str.n = text_len;
    return 0;
}

static int idem_cj_value(idem_cj_parser_t *p, size_t depth);

static int idem_cj_array(idem_cj_parser_t *p, size_t depth)
{
    size_t at, count = 0;
    int rc;

    if ((rc = idem_cj_new(p, IDEM_CJ_ARRAY, &at)) != 0)
        return rc;
    p->pos++;
    idem_cj_skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if ((rc = idem_cj_value(p, depth + 1)) != 0)
            return rc;
        count++;
        idem_cj_skip_ws(p);
        if (p->pos == p->len)
            return IDEM_CJ_NOT_JSON;
        if (p->s[p->pos] == ']')
            break;
        if (p->s[p->pos] != ',')
            return IDEM_CJ_NOT_JSON;
        p->pos++;
    }
    p->pos++;
    idem_cj_node(p, at)->count = count;
    idem_cj_node(p, at)->size = p->nodes.n - at;
    return 0;
}

/* Orders members by name: bytes compared unsigned, a prefix first. */
static int idem_cj_member_cmp(const void *a, const void *b)
{
    const idem_cj_member_t *x = a;
    const idem_cj_member_t *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = n ? memcmp(x->name, y->name, n) : 0;

    if (c != 0)
        return c;
    return x->name_len < y->name_len ? -1 : (x->name_len > y->name_len);
}

/*
 * The object's members are the last count entries of p->open: sorted by
 * name, refused when two share one, and moved to p->members, where the
 * object's node finds them.
 */
static int idem_cj_close_object(idem_cj_parser_t *p, size_t at, size_t count)
{
    idem_cj_member_t *m = (idem_cj_member_t *)p->open.items + p->open.n - count;
    size_t first = p->members.n, k;
    int rc;

    if (count > 1)
        qsort(m, count, sizeof(*m), idem_cj_member_cmp);
    for (size_t i = 1; i < count; i++) {
        if (idem_cj_member_cmp(&m[i - 1], &m[i]) == 0)
            return IDEM_CJ_NOT_JSON;
    }
    for (size_t i = 0; i < count; i++) {
        if ((rc = idem_cj_vec_push(&p->members, &k)) != 0)
            return rc;
        ((idem_cj_member_t *)p->members.items)[k] = m[i];
    }
    p->open.n -= count;
    idem_cj_node(p, at)->u.first = first;
    idem_cj_node(p, at)->count = count;
    idem_cj_node(p, at)->size = p->nodes.n - at;
    return 0;
}

static int idem_cj_object(idem_cj_parser_t *p, size_t depth)
{
    size_t at, count = 0, name, k;
    int rc;

    if ((rc = idem_cj_new(p, IDEM_CJ_OBJECT, &at)) != 0)
        return rc;
    p->pos++;
    idem_cj_skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return 0;
    }
    for (;;) {
        if (p->pos == p->len || p->s[p->pos] != '"')
            return IDEM_CJ_NOT_JSON;
        name = p->nodes.n;
        if ((rc = idem_cj_string(p, 1)) != 0)
            return rc;
        idem_cj_skip_ws(p);
        if (p->pos == p->len || p->s[p->pos] != ':')
            return IDEM_CJ_NOT_JSON;
        p->pos++;
        if ((rc = idem_cj_vec_push(&p->open, &k)) != 0)
            return rc;
        ((idem_cj_member_t *)p->open.items)[k].name =
            idem_cj_node(p, name)->u.str.s;
        ((idem_cj_member_t *)p->open.items)[k].name_len =
            idem_cj_node(p, name)->u.str.n;
        ((idem_cj_member_t *)p->open.items)[k].value = p->nodes.n;
        count++;
        if ((rc = idem_cj_value(p, depth + 1)) != 0)
            return rc;
        idem_cj_skip_ws(p);
        if (p->pos == p->len)
            return IDEM_CJ_NOT_JSON;
        if (p->s[p->pos] == '}')
            break;
        if (p->s[p->pos] != ',')
            return IDEM_CJ_NOT_JSON;
        p->pos++;
        idem_cj_skip_ws(p);
    }
    p->pos++;
    return idem_cj_close_object(p, at, count);
}

static int idem_cj_value(idem_cj_parser_t *p, size_t depth)
{
    idem_cj_skip_ws(p);
    if (p->pos == p->len || depth > IDEM_FP_JSON_MAX_DEPTH + 1)
        return IDEM_CJ_NOT_JSON;
    switch (p->s[p->pos]) {
    case '{':
        return idem_cj_object(p, depth);
    case '[':
        return idem_cj_array(p, depth);
    case '"':
        return idem_cj_string(p, 0);
    case 't':
        return idem_cj_literal(p, "true", IDEM_CJ_TRUE);
    case 'f':
        return idem_cj_literal(p, "false", IDEM_CJ_FALSE);
    case 'n':
        return idem_cj_literal(p, "null", IDEM_CJ_NULL);
    default:
        if (p->s[p->pos] == '-' || idem_cj_is_digit(p->s[p->pos]))
            return idem_cj_number(p);
        return IDEM_CJ_NOT_JSON;
    }
}

static void idem_cj_parser_init(idem_cj_parser_t *p, const uint8_t *s,
                                size_t len)
{
    p->s = s;
    p->len = len;
    p->pos = 0;
    idem_cj_vec_init(&p->nodes, p->inline_nodes, IDEM_CJ_INLINE_NODES,
                     sizeof(idem_cj_node_t));
    idem_cj_vec_init(&p->open, p->inline_open, IDEM_CJ_INLINE_MEMBERS,
                     sizeof(idem_cj_member_t));
    idem_cj_vec_init(&p->members, p->inline_members, IDEM_CJ_INLINE_MEMBERS,
                     sizeof(idem_cj_member_t));
    p->arena = NULL;
    p->arena_used = 0;
}

static void idem_cj_parser_free(idem_cj_parser_t *p)
{
    idem_cj_vec_free(&p->nodes);
    idem_cj_vec_free(&p->open);
    idem_cj_vec_free(&p->members);
    if (p->arena != p->inline_arena)
        free(p->arena);
}

/* The whole text as one value: 0, IDEM_CJ_NOT_JSON or an error. */
static int idem_cj_parse(idem_cj_parser_t *p)
{
    int rc = idem_cj_value(p, 1);

    if (rc != 0)
        return rc;
    idem_cj_skip_ws(p);
    return p->pos == p->len ? 0 : IDEM_CJ_NOT_JSON;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */
/* ------------------------------------------------------------------------ */

/* Output is staged here and handed to the sink in large pieces. */
#define IDEM_CJ_STAGE 4096
/* A string is escaped in chunks this long: 6 bytes out per byte at most. */
#define IDEM_CJ_ESC_CHUNK 256
/* Live pointers a level keeps on the stack before it needs the heap. */
#define IDEM_CJ_INLINE_LIVE 8

typedef struct {
    idem_canon_sink_t *sink;
    const idem_cj_parser_t *doc;
    size_t len;
    char stage[IDEM_CJ_STAGE];
} idem_cj_writer_t;

static int idem_cj_flush(idem_cj_writer_t *w)
{
    int rc = 0;

    if (w->len > 0)
        rc = w->sink->write(w->sink, w->stage, w->len);
    w->len = 0;
    return rc;
}

/* Makes room for n bytes (n <= IDEM_CJ_STAGE) in the stage. */
static int idem_cj_reserve(idem_cj_writer_t *w, size_t n)
{
    if (IDEM_CJ_STAGE - w->len >= n)
        return 0;
    return idem_cj_flush(w);
}

static int idem_cj_put(idem_cj_writer_t *w, const char *s, size_t n)
{
    int rc;

    if (n > IDEM_CJ_STAGE) {
        rc = idem_cj_flush(w);
        return rc ? rc : w->sink->write(w->sink, s, n);
    }
    if ((rc = idem_cj_reserve(w, n)) != 0)
        return rc;
    memcpy(w->stage + w->len, s, n);
    w->len += n;
    return 0;
}

static int idem_cj_put_string(idem_cj_writer_t *w, const char *s, size_t n)
{
    int rc;

    if ((rc = idem_cj_put(w, "\"", 1)) != 0)
        return rc;
    while (n > 0) {
        size_t chunk = n < IDEM_CJ_ESC_CHUNK ? n : IDEM_CJ_ESC_CHUNK;

        /* never through a UTF-8 sequence (the parser let only whole ones
         * in): a cut one would be escaped as two U+FFFD, and "…é" would
         * read as "…è" at that place */
        while (chunk < n && chunk > 1 &&
               ((unsigned char)s[chunk] & 0xc0) == 0x80)
            chunk--;
        if ((rc = idem_cj_reserve(w, 6 * chunk)) != 0)
            return rc;
        w->len += idem_json_escape(w->stage + w->len, IDEM_CJ_STAGE - w->len, s,
                                   chunk);
        s += chunk;
        n -= chunk;
    }
    return idem_cj_put(w, "\"", 1);
}

/*
 * The ignored values. A pointer that is still "live" at a value is the
 * rest of an ignore entry whose tokens so far named the path down to it;
 * it is always "/" followed by the next token and perhaps more.
 */

/* Whether the pointer token t[0..tlen) names the member key[0..klen). */
static int idem_cj_token_is_name(const char *t, size_t tlen, const char *key,
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
static int idem_cj_token_is_index(const char *t, size_t tlen, size_t index)
{
    size_t v = 0;

    if (tlen == 0 || (tlen > 1 && t[0] == '0'))
        return 0;
    for (size_t i = 0; i < tlen; i++) {
        if (!idem_cj_is_digit((unsigned char)t[i]))
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
static int idem_cj_ptr_step(const idem_str_t *live, size_t nlive, int is_array,
                            const char *key, size_t klen, size_t index,
                            idem_str_t *next, size_t *nnext)
{
    *nnext = 0;
    for (size_t k = 0; k < nlive; k++) {
        const char *t = live[k].data + 1;
        const char *end = live[k].data + live[k].len;
        const char *slash = memchr(t, '/', (size_t)(end - t));
        size_t tlen = (size_t)((slash ? slash : end) - t);
        int named = is_array ? idem_cj_token_is_index(t, tlen, index)
                             : idem_cj_token_is_name(t, tlen, key, klen);

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

static int idem_cj_write(idem_cj_writer_t *w, size_t at, const idem_str_t *live,
                         size_t nlive);

/* The members (object) or elements (array) of the container at node at. */
static int idem_cj_write_children(idem_cj_writer_t *w, size_t at,
                                  const idem_str_t *live, size_t nlive,
                                  idem_str_t *next)
{
    const idem_cj_node_t *c = (const idem_cj_node_t *)w->doc->nodes.items + at;
    const idem_cj_member_t *m =
        (const idem_cj_member_t *)w->doc->members.items + c->u.first;
    int is_array = c->type == IDEM_CJ_ARRAY;
    size_t child = at + 1, nnext = 0, written = 0;
    int rc;

    for (size_t i = 0; i < c->count; i++) {
        const char *name = is_array ? NULL : m[i].name;
        size_t name_len = is_array ? 0 : m[i].name_len;
        size_t value = is_array ? child : m[i].value;

        if (is_array)
            child += ((const idem_cj_node_t *)w->doc->nodes.items)[child].size;
        if (idem_cj_ptr_step(live, nlive, is_array, name, name_len, i, next,
                             &nnext))
            continue;
        if (written++ > 0 && (rc = idem_cj_put(w, ",", 1)) != 0)
            return rc;
        if (!is_array) {
            rc = idem_cj_put_string(w, name, name_len);
            if (rc != 0 || (rc = idem_cj_put(w, ":", 1)) != 0)
                return rc;
        }
        if ((rc = idem_cj_write(w, value, next, nnext)) != 0)
            return rc;
    }
    return 0;
}

static int idem_cj_write_container(idem_cj_writer_t *w, size_t at,
                                   const idem_str_t *live, size_t nlive)
{
    const idem_cj_node_t *c = (const idem_cj_node_t *)w->doc->nodes.items + at;
    int is_array = c->type == IDEM_CJ_ARRAY;
    idem_str_t inline_next[IDEM_CJ_INLINE_LIVE], *next = inline_next;
    int rc;

    if (nlive > IDEM_CJ_INLINE_LIVE) {
        next = malloc(nlive * sizeof(*next));
        if (next == NULL)
            return IDEM_ENOMEM;
    }
    rc = idem_cj_put(w, is_array ? "[" : "{", 1);
    if (rc == 0)
        rc = idem_cj_write_children(w, at, live, nlive, next);
    if (rc == 0)
        rc = idem_cj_put(w, is_array ? "]" : "}", 1);
    if (next != inline_next)
        free(next);
    return rc;
}

static int idem_cj_write(idem_cj_writer_t *w, size_t at, const idem_str_t *live,
                         size_t nlive)
{
    const idem_cj_node_t *v = (const idem_cj_node_t *)w->doc->nodes.items + at;

    switch (v->type) {
    case IDEM_CJ_OBJECT:
    case IDEM_CJ_ARRAY:
        return idem_cj_write_container(w, at, live, nlive);
    case IDEM_CJ_STRING:
        return idem_cj_put_string(w, v->u.str.s, v->u.str.n);
    case IDEM_CJ_NUMBER:
        return idem_cj_put(w, v->u.str.s, v->u.str.n);
    case IDEM_CJ_TRUE:
        return idem_cj_put(w, "true", 4);
    case IDEM_CJ_FALSE:
        return idem_cj_put(w, "false", 5);
    case IDEM_CJ_NULL:
        return idem_cj_put(w, "null", 4);
    }
    return IDEM_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */
/* ------------------------------------------------------------------------ */

int idem_canon_json(const uint8_t *body, size_t len, idem_canon_sink_t *sink,
                    int *is_json)
{
    return idem_canon_json_ignoring(body, len, NULL, 0, sink, is_json);
}

/* The live pointers of the ignore list (the entries that start with '/'),
 * in live[] when they fit, else in a new array at *heap. */
static int idem_cj_live(const idem_str_t *ignore, size_t nignore,
                        idem_str_t *live, size_t *nlive, idem_str_t **heap)
{
    size_t n = 0;

    *heap = NULL;
    for (size_t k = 0; k < nignore; k++)
        n += ignore[k].len > 0 && ignore[k].data[0] == '/';
    if (n > IDEM_CJ_INLINE_LIVE) {
        if ((*heap = malloc(n * sizeof(**heap))) == NULL)
            return IDEM_ENOMEM;
        live = *heap;
    }
    *nlive = 0;
    for (size_t k = 0; k < nignore; k++) {
        if (ignore[k].len > 0 && ignore[k].data[0] == '/')
            live[(*nlive)++] = ignore[k];
    }
    return 0;
}

int idem_canon_json_ignoring(const uint8_t *body, size_t len,
                             const idem_str_t *ignore, size_t nignore,
                             idem_canon_sink_t *sink, int *is_json)
{
    idem_str_t inline_live[IDEM_CJ_INLINE_LIVE], *heap = NULL;
    idem_cj_parser_t parser, *p = &parser;
    idem_cj_writer_t writer, *w = &writer;
    size_t nlive = 0;
    int rc;

    *is_json = 0;
    if (len == 0 || len > IDEM_FP_JSON_MAX_BYTES)
        return 0;
    if (!idem_canon_json_shallow(body, len))
        return 0;

    idem_cj_parser_init(p, body, len);
    rc = idem_cj_parse(p);
    if (rc == IDEM_CJ_NOT_JSON) {
        rc = 0;
        goto done;
    }
    if (rc != 0)
        goto done;
    rc = idem_cj_live(ignore, nignore, inline_live, &nlive, &heap);
    if (rc != 0)
        goto done;
    w->sink = sink;
    w->doc = p;
    w->len = 0;
    rc = idem_cj_write(w, 0, heap ? heap : inline_live, nlive);
    if (rc == 0)
        rc = idem_cj_flush(w);
    if (rc == 0)
        *is_json = 1;

done:
    free(heap);
    idem_cj_parser_free(p);
    return rc;
}
