/*
 * confw.h — a writer of nginx configuration text: directives, blocks and
 * comments over a FILE *, indented by their depth (four spaces a level),
 * with every argument written as a token nginx reads back as it was meant.
 *
 * An argument is one of four kinds, by where it comes from and what the
 * directive does with it (nginx's parser, ngx_conf_read_token, is the
 * reference: a token ends at a space, a tab, a line break, ';' or '{'; a
 * quoted one at its quote, inside which \", \', \\, \n, \r and \t are
 * escapes; '$' is not the parser's business, but the directives that
 * compile their arguments read "$name" as a variable):
 *
 *   SYNTAX  nginx syntax the gateway writes itself: keywords, numbers,
 *           sizes, variables ($request_uri), regexes, checked addresses,
 *           and strings the gateway quotes itself ('$log_entry'), which
 *           must be one quoted token. Written as it is; a bare one is put
 *           in quotes when nginx would otherwise split it (empty, a space,
 *           ';', '{', '}', a quote, a backslash or '#').
 *   TEXT    a literal text (from a person, or libidem) for a directive
 *           that reads no variables (load_module, user, idempotency_store,
 *           the module's list directives): always quoted; '$' stays.
 *   VALUE   a literal text for a directive that reads variables
 *           (proxy_set_header, access_log, ssl_certificate, map values,
 *           return): always quoted; a '$' is refused.
 *   BODY    as VALUE, but a '$' is written as ${idemgate_dollar} (a geo
 *           whose value is "$", which the http block must define), and
 *           CR, LF and TAB as \r, \n and \t: a response body.
 *
 * Quoted means in double quotes, or in single quotes when the text has a
 * double quote (JSON reads better so); inside, that quote and '\' are
 * escaped. Every kind refuses NUL and the other control bytes (0x00-0x1f
 * and 0x7f; BODY takes CR, LF and TAB as said), which no token carries.
 *
 * The writer remembers the first argument it refused, and from then on
 * writes nothing more; idemgate_confw_finish() says what it was, or that
 * the stream failed. The calls in between need no checks.
 */
#ifndef IDEMGATE_CONFW_H
#define IDEMGATE_CONFW_H

#include <stdio.h>

#include "idemgate.h"

typedef enum {
    IDEMGATE_CONFW_SYNTAX,
    IDEMGATE_CONFW_TEXT,
    IDEMGATE_CONFW_VALUE,
    IDEMGATE_CONFW_BODY
} idemgate_confw_kind_t;

/* A writer over f, which it does not own. */
typedef struct {
    FILE *f;
    unsigned depth;   /* blocks open */
    int in_directive; /* a directive has begun and not ended */
    const char *name; /* the directive being written, for messages */
    int refused;      /* an argument was refused: nothing more is written */
    char why[512];    /* what was refused and why */
} idemgate_confw_t;

void idemgate_confw_init(idemgate_confw_t *w, FILE *f);

/* "# LINE" for each line of text (a '\n' starts a new one). */
void idemgate_confw_comment(idemgate_confw_t *w, const char *text);
/* An empty line. */
void idemgate_confw_blank(idemgate_confw_t *w);

/* A directive, in three steps: its name (SYNTAX; the first token of a
 * map or geo entry may be empty), its arguments, then ';' (end) or '{'
 * (open, which makes what follows one level deeper). */
void idemgate_confw_begin(idemgate_confw_t *w, const char *name);
void idemgate_confw_arg(idemgate_confw_t *w, idemgate_confw_kind_t kind,
                        const char *s);
/* A BODY argument of len bytes (refused when one of them is NUL). */
void idemgate_confw_arg_body(idemgate_confw_t *w, const char *s, size_t len);
/* SYNTAX arguments: fmt formatted and split at its spaces (a string
 * quoted here holds none). */
void idemgate_confw_args(idemgate_confw_t *w, const char *fmt, ...)
    IDEMGATE_PRINTF(2, 3);
/* The variable prefix+name ($http_ + x_tenant): name must be letters,
 * digits and '_', all nginx reads as a variable's name. */
void idemgate_confw_arg_variable(idemgate_confw_t *w, const char *prefix,
                                 const char *name);
/* One quoted argument of nginx syntax around a literal text, as VALUE
 * checks it: before + value + after. */
void idemgate_confw_arg_around(idemgate_confw_t *w, const char *before,
                               const char *value, const char *after);
void idemgate_confw_end(idemgate_confw_t *w);
void idemgate_confw_open(idemgate_confw_t *w);

/* The shorthands: a directive of SYNTAX arguments (fmt as for
 * idemgate_confw_args; NULL for none), the same opening a block, and a
 * directive of one literal argument of kind. */
void idemgate_confw_directive(idemgate_confw_t *w, const char *name,
                              const char *fmt, ...) IDEMGATE_PRINTF(3, 4);
void idemgate_confw_block(idemgate_confw_t *w, const char *name,
                          const char *fmt, ...) IDEMGATE_PRINTF(3, 4);
void idemgate_confw_literal(idemgate_confw_t *w, const char *name,
                            idemgate_confw_kind_t kind, const char *s);

/* A refusal of the caller's own, about the directive being written: as
 * one of the writer's, it stops the writing and is what
 * idemgate_confw_finish() reports. */
void idemgate_confw_refuse(idemgate_confw_t *w, const char *fmt, ...)
    IDEMGATE_PRINTF(2, 3);

/* "}" for the innermost open block. */
void idemgate_confw_close(idemgate_confw_t *w);

/*
 * 0 when everything was written; otherwise fills *err and returns -1: a
 * refused argument is a bad value (IDEMGATE_EXIT_USAGE, the message says
 * which directive and why), a failed stream a failure of the system
 * (IDEMGATE_EXIT_FAILURE, with errno's text). Does not close w->f.
 */
IDEMGATE_MUST_CHECK int idemgate_confw_finish(idemgate_confw_t *w,
                                              idemgate_err_t *err);

#endif /* IDEMGATE_CONFW_H */
