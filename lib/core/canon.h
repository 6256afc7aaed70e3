/*
 * canon.h — canonical forms of the request parameters that a fingerprint
 * compares (SPEC §4): '&'-separated pairs (a query or a form body), the
 * media type with its parameters, and JSON bodies. Private to lib/core;
 * fingerprint.c hashes what these produce, and the tests and fuzz targets
 * read it as text.
 *
 * The canonical text is handed to a sink piece by piece, so a large body is
 * hashed without ever being copied whole.
 *
 * Each function says its "Errors:". Thread safety: every function is
 * thread-safe on distinct pairs, media and sinks (no shared state; the
 * inputs are only read).
 */
#ifndef IDEM_CORE_CANON_H
#define IDEM_CORE_CANON_H

#include <stddef.h>
#include <stdint.h>

#include "idem.h"

/*
 * Receives canonical output. A sink is embedded first in a larger struct
 * that carries its state. write returns 0 or a negative IDEM_E... code,
 * which the producer stops at and returns.
 */
typedef struct idem_canon_sink_s idem_canon_sink_t;
struct idem_canon_sink_s {
    int (*write)(idem_canon_sink_t *sink, const void *data, size_t len);
};

/* ------------------------------------------------------------------------ */
/* Pairs: a query string or an application/x-www-form-urlencoded body      */
/* ------------------------------------------------------------------------ */

/* One '&'-separated segment, borrowed from the input. */
typedef struct {
    const char *data;
    size_t len;
    size_t name_len;  /* bytes before the first '=' (all if none) */
    size_t index;     /* position in the input, for a stable sort */
    size_t canon_len; /* length of its canonical text */
} idem_canon_seg_t;

/*
 * The segments of an input, sorted. The canonical text is the segments in
 * this order, each in its canonical form, joined by '&'; it is len bytes
 * long.
 */
typedef struct {
    idem_canon_seg_t *segs; /* n entries when n > 1, else NULL */
    size_t n;
    size_t len;
    idem_canon_seg_t one_; /* the segment when n == 1: no allocation */
} idem_canon_pairs_t;

/*
 * Splits s[0..len) on '&' and drops the empty segments. A segment is a name,
 * then, from its first '=' on, a value: "a" has no value and stays
 * different from "a=" (an empty one). Names and values are compared as an
 * application/x-www-form-urlencoded parser reads them: '+' is a space and
 * "%XX" (hex digits of either case) the byte XX, so "%61" is "a" and "+" is
 * "%20", while "%2B" is a '+', "%26" a '&' inside a value and "%3D" a '='
 * inside a name. A '%' that starts no valid escape ("%zz", a trailing "%4")
 * stays a bad '%', which equals no decoded byte: "%zz" differs from "%25zz".
 *
 * The segments are sorted by decoded name (bytes compared unsigned, a bad
 * '%' after every byte, a prefix first); segments of one name keep their
 * order. s must outlive p.
 *
 * The canonical form of a name or value is its decoded bytes encoded again:
 * ALPHA, DIGIT, '-', '.', '_' and '~' as themselves, every other byte as
 * "%XX" with upper-case hex digits, and a bad '%' as a '%' alone; a hex
 * digit that follows a bad '%' is written as "%XX" too, so that a '%'
 * followed by two hex digits is always an escape. The text is therefore
 * unambiguous (a '&' or '=' in it is always a separator), and it is its
 * own canonical form.
 *
 * On error p needs no free.
 * Errors: IDEM_ENOMEM.
 */
IDEM_MUST_CHECK int idem_canon_pairs_init(idem_canon_pairs_t *p, const char *s,
                                          size_t len);

/*
 * Writes the canonical text of p (p->len bytes).
 * Errors: the first error of sink->write, which it stops at.
 */
IDEM_MUST_CHECK int idem_canon_pairs_write(const idem_canon_pairs_t *p,
                                           idem_canon_sink_t *sink);

/* Frees what idem_canon_pairs_init() allocated. Errors: none. */
void idem_canon_pairs_free(idem_canon_pairs_t *p);

/*
 * Whether the decoded name of seg is name[0..len), byte for byte: the
 * configured name is taken as it is, not decoded, so "a b" names "a+b=1"
 * and "a%20b=1", and no name names a segment with a bad '%' in its name.
 * Errors: none (1 or 0).
 */
int idem_canon_seg_named(const idem_canon_seg_t *seg, const char *name,
                         size_t len);

/*
 * Drops from p the segments that one of the field names among ignore
 * names (the entries that do not start with '/'; the others are JSON
 * Pointers, for JSON bodies), keeping the order of the rest; p->n and
 * p->len then describe what is left. Allocates nothing.
 * Errors: none.
 */
void idem_canon_pairs_drop(idem_canon_pairs_t *p, const idem_str_t *ignore,
                           size_t nignore);

/* ------------------------------------------------------------------------ */
/* Media type: a Content-Type value                                         */
/* ------------------------------------------------------------------------ */

/* One parameter, borrowed from the input. */
typedef struct {
    const char *name; /* a token, as sent */
    size_t name_len;
    const char *value; /* a token, or a quoted-string with its quotes */
    size_t value_len;
    size_t index; /* position in the input, for a stable sort */
} idem_canon_param_t;

/*
 * A media type and its parameters, sorted. The canonical text is len bytes
 * long.
 */
typedef struct {
    idem_str_t type; /* "type/subtype": before the first ';', OWS trimmed */
    idem_str_t rest; /* from the first ';' on, as sent; may be empty */
    int parsed;      /* 1: the parameters follow the grammar below */
    idem_canon_param_t *params; /* n entries when n > 1, else NULL */
    size_t n;
    size_t len;
    idem_canon_param_t one_; /* the parameter when n == 1 */
} idem_canon_media_t;

/*
 * Reads the Content-Type value s[0..len): the type/subtype up to the first
 * ';', then parameters as RFC 9110 writes them,
 *
 *     *( OWS ";" OWS [ token OWS "=" OWS ( token / quoted-string ) ] ) OWS
 *
 * (OWS is spaces and tabs; an empty parameter, as in "a/b;" or ";;", is
 * nothing). When the parameters follow that grammar, parsed is 1 and the
 * canonical text is the type/subtype lower-cased, then for each parameter,
 * sorted by lower-cased name with the values of one name in their order,
 * ";" name "=" value: the name lower-cased, the value as sent, but a
 * quoted-string unquoted (its quoted-pairs undone), so that "A" and A are
 * one value, and quoted again, with a '\' before '"' and '\' only, when
 * what it holds is empty or not a token. The canonical text of parsed
 * parameters is unambiguous and is its own canonical form.
 *
 * When they do not (a parameter without '=', an empty or malformed value,
 * an unterminated quoted-string, a control byte), parsed is 0 and the
 * canonical text is the type/subtype lower-cased followed by rest as it is;
 * the caller must keep the two kinds apart.
 *
 * s must outlive m. On error m needs no free.
 * Errors: IDEM_ENOMEM.
 */
IDEM_MUST_CHECK int idem_canon_media_init(idem_canon_media_t *m, const char *s,
                                          size_t len);

/*
 * Writes the canonical text of m (m->len bytes).
 * Errors: the first error of sink->write, which it stops at.
 */
IDEM_MUST_CHECK int idem_canon_media_write(const idem_canon_media_t *m,
                                           idem_canon_sink_t *sink);

/* Frees what idem_canon_media_init() allocated. Errors: none. */
void idem_canon_media_free(idem_canon_media_t *m);

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Writes the canonical form of the JSON text body[0..len) to sink: no
 * insignificant whitespace, object members sorted by name (UTF-8 bytes,
 * a prefix first), strings with only '"', '\' and control bytes escaped
 * (as \u00XX), and every number exactly as its token is spelled in the
 * body. Array order is kept. So only member order, whitespace and the
 * spelling of a string's characters (\u00e9 and \xc3\xa9, \/ and /) are
 * ignored: 1, 1.0, 1.00, 1e0, 1E0, 1e+0, 10e-1 and -0 are eight values,
 * as they are to an API that reads numbers as exact decimals (or -0 as
 * JavaScript does), and a number of any length or magnitude is exact.
 *
 * *is_json receives 1 when the body was canonicalized, and 0, with nothing
 * written, when it is not JSON to be trusted as such: invalid, nested deeper
 * than IDEM_FP_JSON_MAX_DEPTH, larger than IDEM_FP_JSON_MAX_BYTES, or with
 * a duplicate member name. The caller then compares the body as bytes.
 *
 * "Invalid" is what jansson 2.14's json_loadb() refuses with
 * JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, except that
 * numbers jansson cannot store (an integer beyond 64 bits, a real beyond
 * a double's range) are valid here (canon_json.c says what that is;
 * jansson read the bodies until canon_json.c's own parser replaced it,
 * and the fuzz target fuzz_canon_json holds the two to the same answers).
 *
 * Errors: IDEM_ENOMEM; the first error of sink->write.
 */
IDEM_MUST_CHECK int idem_canon_json(const uint8_t *body, size_t len,
                                    idem_canon_sink_t *sink, int *is_json);

/*
 * The pre-scan idem_canon_json() runs before it parses: whether the text
 * body[0..len) stays within IDEM_FP_JSON_MAX_DEPTH nested arrays and
 * objects. Exact for a valid text; for an invalid one its answer does not
 * matter. Exposed for the fuzz target that compares the parser with
 * jansson. Errors: none.
 */
int idem_canon_json_shallow(const uint8_t *body, size_t len);

/*
 * idem_canon_json(), with the values that the JSON Pointers among ignore
 * (the entries that start with '/', RFC 6901) name left out: each pointer
 * is resolved against the document as received, token by token, a token
 * naming an object member by its exact name once "~1" is read as '/' and
 * "~0" as '~', and an array element by its index (decimal digits, no
 * leading zero: "0", "12"; "-" and "01" name no element). A member so
 * named is written as if absent; an element so named is left out of its
 * array, the elements after it keeping their order. Pointers that name
 * nothing, or pass through a value that is not an object or an array,
 * change nothing; so does a pointer whose token has a '~' not followed by
 * '0' or '1' (idem_fp_ignore_check() refuses those). The output is again
 * its own canonical form, with or without the same ignore list.
 * Errors: those of idem_canon_json().
 */
IDEM_MUST_CHECK int idem_canon_json_ignoring(const uint8_t *body, size_t len,
                                             const idem_str_t *ignore,
                                             size_t nignore,
                                             idem_canon_sink_t *sink,
                                             int *is_json);

#endif /* IDEM_CORE_CANON_H */
