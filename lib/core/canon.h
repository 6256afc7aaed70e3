/*
 * canon.h — canonical forms of the request parameters that a fingerprint
 * compares (SPEC §4): '&'-separated pairs (a query or a form body) and JSON
 * bodies. Private to lib/core; fingerprint.c hashes what these produce, and
 * the tests and fuzz targets read it as text.
 *
 * The canonical text is handed to a sink piece by piece, so a large body is
 * hashed without ever being copied whole.
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
    size_t name_len; /* bytes before the first '=' (all if none) */
    size_t index;    /* position in the input, for a stable sort */
} idem_canon_seg_t;

/*
 * The segments of an input, sorted. The canonical text is the segments in
 * this order joined by '&'; it is len bytes long.
 */
typedef struct {
    idem_canon_seg_t *segs; /* n entries when n > 1, else NULL */
    size_t n;
    size_t len;
    idem_canon_seg_t one_; /* the segment when n == 1: no allocation */
} idem_canon_pairs_t;

/*
 * Splits s[0..len) on '&', drops empty segments and sorts the rest by name
 * (the bytes before the first '=', compared as unsigned bytes, a prefix
 * first); segments with the same name keep their order. Nothing is decoded:
 * "a=%41" and "a=A" stay different. s must outlive p.
 * Returns 0 or IDEM_ENOMEM (p then needs no free).
 */
IDEM_MUST_CHECK int idem_canon_pairs_init(idem_canon_pairs_t *p, const char *s,
                                          size_t len);

/* Writes the canonical text of p (p->len bytes). Returns what sink does. */
IDEM_MUST_CHECK int idem_canon_pairs_write(const idem_canon_pairs_t *p,
                                           idem_canon_sink_t *sink);

void idem_canon_pairs_free(idem_canon_pairs_t *p);

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Writes the canonical form of the JSON text body[0..len) to sink: no
 * insignificant whitespace, object members sorted by name (UTF-8 bytes,
 * a prefix first), strings with only '"', '\' and control bytes escaped
 * (as \u00XX), integers in decimal, reals as "%.15g" with ".0" added when
 * that looks like an integer (so 1 and 1.0 stay different, while 1.0, 1.00
 * and 1e0 are the same). Array order is kept.
 *
 * *is_json receives 1 when the body was canonicalized, and 0, with nothing
 * written, when it is not JSON to be trusted as such: invalid, nested deeper
 * than IDEM_FP_JSON_MAX_DEPTH, larger than IDEM_FP_JSON_MAX_BYTES, with a
 * duplicate member name, with an integer beyond 64 bits, or with a real
 * number that a double cannot represent exactly enough to tell apart from
 * its neighbours (more than 15 significant digits, or a magnitude outside
 * 1e-307..1e308). The caller then compares the body as bytes.
 *
 * Returns 0, IDEM_ENOMEM, or the error of sink->write.
 */
IDEM_MUST_CHECK int idem_canon_json(const uint8_t *body, size_t len,
                                    idem_canon_sink_t *sink, int *is_json);

#endif /* IDEM_CORE_CANON_H */
