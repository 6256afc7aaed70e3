/*
 * confw.c — the nginx configuration writer (the rules are in confw.h).
 *
 * Every argument passes through one function, put_arg: it checks the text
 * against its kind, records a refusal, and writes the token, quoted or
 * not. Lines start with the indentation of their depth; an argument or a
 * ';' follows on the line its directive began.
 */
#include "confw.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define INDENT 4
#define SHOWN  80 /* at most this much of a refused text in a message */

void idemgate_confw_init(idemgate_confw_t *w, FILE *f)
{
    memset(w, 0, sizeof(*w));
    w->f = f;
}

/* Records the first refusal; later ones change nothing. */
static void refusev(idemgate_confw_t *w, const char *fmt, va_list ap)
{
    int n;

    if (w->refused) {
        return;
    }
    w->refused = 1;
    n = snprintf(w->why, sizeof(w->why), "%s: ",
                 w->name != NULL && w->name[0] != '\0' ? w->name : "a map");
    if (n < 0 || (size_t)n >= sizeof(w->why)) {
        n = 0;
    }
    vsnprintf(w->why + n, sizeof(w->why) - (size_t)n, fmt, ap);
}

static void refuse(idemgate_confw_t *w, const char *fmt, ...)
    IDEMGATE_PRINTF(2, 3);

static void refuse(idemgate_confw_t *w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    refusev(w, fmt, ap);
    va_end(ap);
}

void idemgate_confw_refuse(idemgate_confw_t *w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    refusev(w, fmt, ap);
    va_end(ap);
}

static void indent(idemgate_confw_t *w)
{
    fprintf(w->f, "%*s", (int)(w->depth * INDENT), "");
}

void idemgate_confw_comment(idemgate_confw_t *w, const char *text)
{
    const char *nl;

    if (w->refused) {
        return;
    }
    do {
        nl = strchr(text, '\n');
        indent(w);
        fprintf(w->f, "# %.*s\n", nl ? (int)(nl - text) : (int)strlen(text),
                text);
        text = nl + 1;
    } while (nl != NULL);
}

void idemgate_confw_blank(idemgate_confw_t *w)
{
    if (!w->refused) {
        fputc('\n', w->f);
    }
}

/* Whether nginx would split or misread s written bare. */
static int needs_quotes(const char *s, size_t len)
{
    if (len == 0) {
        return 1;
    }
    for (size_t i = 0; i < len; i++) {
        if (strchr(" ;{}\"'\\#", s[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* Whether s[0..len), which starts with a quote, is one string in that
 * quote as nginx reads it: the quote ends it, and only it. */
static int quoted_token(const char *s, size_t len)
{
    size_t i;

    for (i = 1; i < len; i++) {
        if (s[i] == '\\') {
            i++;
        } else if (s[i] == s[0]) {
            break;
        }
    }
    return len >= 2 && i == len - 1;
}

/* The byte nginx.conf cannot carry in s[0..len) for kind, or -1. */
static int bad_byte(idemgate_confw_kind_t kind, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (kind == IDEMGATE_CONFW_BODY &&
            (ch == '\n' || ch == '\r' || ch == '\t')) {
            continue;
        }
        if (ch < 0x20 || ch == 0x7f) {
            return ch;
        }
    }
    return -1;
}

/* s[0..len) inside the quote q, as nginx reads it back. */
static void put_inside(idemgate_confw_t *w, idemgate_confw_kind_t kind, char q,
                       const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '\\':
            fputs("\\\\", w->f);
            break;
        case '\n':
            fputs("\\n", w->f);
            break;
        case '\r':
            fputs("\\r", w->f);
            break;
        case '\t':
            fputs("\\t", w->f);
            break;
        case '$':
            fputs(kind == IDEMGATE_CONFW_BODY ? "${idemgate_dollar}" : "$",
                  w->f);
            break;
        default:
            if (s[i] == q) {
                fputc('\\', w->f);
            }
            fputc(s[i], w->f);
        }
    }
}

/* Checks s[0..len) against kind; 0, or -1 after recording why not. */
static int check(idemgate_confw_t *w, idemgate_confw_kind_t kind, const char *s,
                 size_t len)
{
    int ch = bad_byte(kind, s, len);

    if (ch >= 0) {
        /* the text itself stays out of the message: it is not printable */
        refuse(w,
               "the text has a control byte (0x%02x), which nginx.conf "
               "cannot carry",
               ch);
        return -1;
    }
    if (kind == IDEMGATE_CONFW_VALUE && memchr(s, '$', len) != NULL) {
        refuse(w, "'%.*s%s' has a '$', which nginx would read as a variable",
               len > SHOWN ? SHOWN : (int)len, s, len > SHOWN ? "..." : "");
        return -1;
    }
    return 0;
}

/* s[0..len), checked, as one token of kind. */
static void put_token(idemgate_confw_t *w, idemgate_confw_kind_t kind,
                      const char *s, size_t len)
{
    char q;

    if (kind == IDEMGATE_CONFW_SYNTAX && len > 0 &&
        (s[0] == '"' || s[0] == '\'')) {
        /* a string the gateway quoted itself */
        if (!quoted_token(s, len)) {
            refuse(w, "%.*s is not one quoted string", (int)len, s);
            return;
        }
        fwrite(s, 1, len, w->f);
        return;
    }
    if (kind == IDEMGATE_CONFW_SYNTAX && !needs_quotes(s, len)) {
        fwrite(s, 1, len, w->f);
        return;
    }
    q = memchr(s, '"', len) != NULL ? '\'' : '"';
    fputc(q, w->f);
    put_inside(w, kind, q, s, len);
    fputc(q, w->f);
}

static void put_arg(idemgate_confw_t *w, idemgate_confw_kind_t kind,
                    const char *s, size_t len)
{
    if (w->refused || check(w, kind, s, len) != 0) {
        return;
    }
    fputc(' ', w->f);
    put_token(w, kind, s, len);
}

void idemgate_confw_begin(idemgate_confw_t *w, const char *name)
{
    size_t len = strlen(name);

    w->name = name;
    w->in_directive = 1;
    if (w->refused || check(w, IDEMGATE_CONFW_SYNTAX, name, len) != 0) {
        return;
    }
    indent(w);
    put_token(w, IDEMGATE_CONFW_SYNTAX, name, len);
}

void idemgate_confw_arg(idemgate_confw_t *w, idemgate_confw_kind_t kind,
                        const char *s)
{
    put_arg(w, kind, s, strlen(s));
}

void idemgate_confw_arg_body(idemgate_confw_t *w, const char *s, size_t len)
{
    if (memchr(s, '\0', len) != NULL) {
        refuse(w, "the text has a NUL byte, which nginx.conf cannot carry");
        return;
    }
    put_arg(w, IDEMGATE_CONFW_BODY, s, len);
}

static void put_args(idemgate_confw_t *w, const char *fmt, va_list ap)
{
    char buf[512];
    const char *p, *sp;
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);

    if (n < 0 || (size_t)n >= sizeof(buf)) {
        refuse(w, "the arguments are longer than %zu bytes", sizeof(buf) - 1);
        return;
    }
    for (p = buf; *p != '\0'; p = *sp ? sp + 1 : sp) {
        sp = strchr(p, ' ');
        if (sp == NULL) {
            sp = p + strlen(p);
        }
        put_arg(w, IDEMGATE_CONFW_SYNTAX, p, (size_t)(sp - p));
    }
}

void idemgate_confw_args(idemgate_confw_t *w, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    put_args(w, fmt, ap);
    va_end(ap);
}

void idemgate_confw_arg_variable(idemgate_confw_t *w, const char *prefix,
                                 const char *name)
{
    char buf[256];

    if (name[0] == '\0' ||
        name[strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789_")] != '\0') {
        refuse(w, "'%s' is not the name of a variable", name);
        return;
    }
    if ((size_t)snprintf(buf, sizeof(buf), "%s%s", prefix, name) >=
        sizeof(buf)) {
        refuse(w, "'%s' is too long for a variable's name", name);
        return;
    }
    put_arg(w, IDEMGATE_CONFW_SYNTAX, buf, strlen(buf));
}

void idemgate_confw_arg_around(idemgate_confw_t *w, const char *before,
                               const char *value, const char *after)
{
    size_t b = strlen(before), v = strlen(value), a = strlen(after);
    char q;

    if (w->refused || check(w, IDEMGATE_CONFW_SYNTAX, before, b) != 0 ||
        check(w, IDEMGATE_CONFW_VALUE, value, v) != 0 ||
        check(w, IDEMGATE_CONFW_SYNTAX, after, a) != 0) {
        return;
    }
    /* one token: the quote is the one put_arg would choose for it all */
    q = memchr(before, '"', b) || memchr(value, '"', v) || memchr(after, '"', a)
            ? '\''
            : '"';

    fprintf(w->f, " %c", q);
    put_inside(w, IDEMGATE_CONFW_SYNTAX, q, before, b);
    put_inside(w, IDEMGATE_CONFW_VALUE, q, value, v);
    put_inside(w, IDEMGATE_CONFW_SYNTAX, q, after, a);
    fputc(q, w->f);
}

void idemgate_confw_end(idemgate_confw_t *w)
{
    w->in_directive = 0;
    if (!w->refused) {
        fputs(";\n", w->f);
    }
}

void idemgate_confw_open(idemgate_confw_t *w)
{
    w->in_directive = 0;
    w->depth++;
    if (!w->refused) {
        fputs(" {\n", w->f);
    }
}

void idemgate_confw_close(idemgate_confw_t *w)
{
    if (w->depth > 0) {
        w->depth--;
    }
    if (!w->refused) {
        indent(w);
        fputs("}\n", w->f);
    }
}

/* A directive's name and its syntax arguments, fmt (NULL: none). */
static void put_head(idemgate_confw_t *w, const char *name, const char *fmt,
                     va_list ap)
{
    idemgate_confw_begin(w, name);
    if (fmt != NULL) {
        put_args(w, fmt, ap);
    }
}

void idemgate_confw_directive(idemgate_confw_t *w, const char *name,
                              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    put_head(w, name, fmt, ap);
    va_end(ap);
    idemgate_confw_end(w);
}

void idemgate_confw_block(idemgate_confw_t *w, const char *name,
                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    put_head(w, name, fmt, ap);
    va_end(ap);
    idemgate_confw_open(w);
}

void idemgate_confw_literal(idemgate_confw_t *w, const char *name,
                            idemgate_confw_kind_t kind, const char *s)
{
    idemgate_confw_begin(w, name);
    idemgate_confw_arg(w, kind, s);
    idemgate_confw_end(w);
}

int idemgate_confw_finish(idemgate_confw_t *w, idemgate_err_t *err)
{
    if (w->refused) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "cannot write the nginx configuration: %s",
                             w->why);
    }
    if (w->depth != 0 || w->in_directive) {
        /* a bug of the gateway's, not a value's */
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "cannot write the nginx configuration: a "
                             "directive or block is left open");
    }
    if (ferror(w->f) || fflush(w->f) != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "cannot build the nginx configuration: %s",
                             strerror(errno != 0 ? errno : EIO));
    }
    return 0;
}
