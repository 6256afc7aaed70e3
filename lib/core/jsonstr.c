/*
 * jsonstr.c — the inside of a JSON string, for every JSON text the gateway
 * writes itself: error bodies, the API log, the admin pages and the
 * canonical JSON of a fingerprint.
 *
 * The output is always valid UTF-8 JSON (RFC 8259 §7, §8.1), whatever bytes
 * come in: '"' and '\' are escaped, control bytes become \u00XX, well-formed
 * UTF-8 sequences are copied, and every byte that is not part of one (a
 * stray continuation byte, a truncated or overlong sequence, a surrogate, a
 * code point above U+10FFFF) becomes \ufffd, the replacement character.
 *
 * Each call walks its input twice at most: once to measure (dst NULL), once
 * to write.
 */
#include <stdint.h>

#include "idem.h"
#include "jsonstr.h"

size_t idem_jsonstr_utf8_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0; /* no overlong three-byte forms */
    else if (c == 0xed)
        hi = 0x9f; /* no surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* no overlong four-byte forms */
    else if (c == 0xf4)
        hi = 0x8f; /* nothing above U+10FFFF */
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return n;
}

size_t idem_json_escape(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t n = 0;

#define IDEM_JSONSTR_PUT_(ch)                                                  \
    do {                                                                       \
        if (n < cap)                                                           \
            dst[n] = (char)(ch);                                               \
        n++;                                                                   \
    } while (0)

    for (size_t i = 0; i < len; i++) {
        unsigned char c = u[i];
        size_t seq;

        if (c == '"' || c == '\\') {
            IDEM_JSONSTR_PUT_('\\');
            IDEM_JSONSTR_PUT_(c);
        } else if (c < 0x20 || c == 0x7f) {
            IDEM_JSONSTR_PUT_('\\');
            IDEM_JSONSTR_PUT_('u');
            IDEM_JSONSTR_PUT_('0');
            IDEM_JSONSTR_PUT_('0');
            IDEM_JSONSTR_PUT_(hex[c >> 4]);
            IDEM_JSONSTR_PUT_(hex[c & 0xf]);
        } else if (c < 0x80) {
            IDEM_JSONSTR_PUT_(c);
        } else if ((seq = idem_jsonstr_utf8_len(u + i, len - i)) != 0) {
            for (size_t k = 0; k < seq; k++)
                IDEM_JSONSTR_PUT_(u[i + k]);
            i += seq - 1;
        } else {
            for (const char *r = "\\ufffd"; *r != '\0'; r++)
                IDEM_JSONSTR_PUT_(*r);
        }
    }
#undef IDEM_JSONSTR_PUT_
    return n;
}
