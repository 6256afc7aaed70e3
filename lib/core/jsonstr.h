/*
 * jsonstr.h — what jsonstr.c offers the rest of lib/core besides
 * idem_json_escape() (idem.h): the UTF-8 rule that escaping and the JSON
 * parser (canon_json.c) share, so that both call the same bytes
 * well-formed.
 */
#ifndef IDEM_CORE_JSONSTR_H
#define IDEM_CORE_JSONSTR_H

#include <stddef.h>

/*
 * The length (2 to 4) of the well-formed UTF-8 sequence at s[0..len)
 * (Unicode §3.9, table 3-7: no overlong form, no surrogate, nothing above
 * U+10FFFF), or 0 when s[0] does not start one or len cuts it short. An
 * ASCII byte starts no sequence here: the caller tells those apart.
 */
size_t idem_jsonstr_utf8_len(const unsigned char *s, size_t len);

#endif /* IDEM_CORE_JSONSTR_H */
