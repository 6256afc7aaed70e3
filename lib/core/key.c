/*
 * key.c — validation of one Idempotency-Key header value (SPEC §2).
 *
 * A value is either a bare key or, when its first byte is '"', the quoted
 * string of RFC 8941 structured fields that the IETF draft uses:
 *
 *     abc_123          bare: the key is the value itself
 *     "abc_123"        quoted: the key is what lies between the quotes,
 *                      after \" and \\ are unescaped
 *
 * Either way the key must then be 1 to IDEM_KEY_MAX bytes, each printable
 * ASCII from 0x21 to 0x7E. A bare value may contain '"' after its first
 * byte (a"b is the three-byte key a"b).
 *
 * The checks run in a fixed order, and the first that fails names the error,
 * so a value breaking several rules always gets the same answer:
 *
 *   1. quoted form only: the structure — a closing '"' that is the last
 *      byte, no other unescaped '"', and no '\' other than \" or \\
 *      (IDEM_EKEYQUOTE);
 *   2. the key is empty (IDEM_EKEYEMPTY);
 *   3. the key is longer than IDEM_KEY_MAX bytes (IDEM_EKEYLONG);
 *   4. the key holds a byte outside 0x21-0x7E (IDEM_EKEYCHAR). Inside quotes
 *      too a space, a control byte or a non-ASCII byte is a character error,
 *      not a structural one.
 *
 * idem_key_problem() holds the sentences a client reads for these errors
 * (and for IDEM_EKEYDUP and IDEM_EKEYMISSING, which the callers find): the
 * gateway's 400 bodies show them, so they change only with the e2e tests.
 */
#include <string.h>

#include "idem.h"

static int idem_key_char_ok(unsigned char c)
{
    return c >= 0x21 && c <= 0x7e;
}

/*
 * Unescapes the quoted form value[0..len) (value[0] is '"') into buf, which
 * has room for IDEM_KEY_MAX bytes; bytes past that are counted, not written.
 * *key_len receives the full unescaped length and *bad_char whether any
 * unescaped byte is outside 0x21-0x7E. Returns 0 or IDEM_EKEYQUOTE.
 */
static int idem_key_unquote(const char *value, size_t len, char *buf,
                            size_t *key_len, int *bad_char)
{
    size_t n = 0;
    int bad = 0;
    size_t i = 1;

    for (;;) {
        unsigned char c;

        if (i >= len)
            return IDEM_EKEYQUOTE; /* no closing quote */
        c = (unsigned char)value[i++];
        if (c == '"') {
            if (i != len)
                return IDEM_EKEYQUOTE; /* bytes after the closing quote */
            break;
        }
        if (c == '\\') {
            if (i >= len)
                return IDEM_EKEYQUOTE;
            c = (unsigned char)value[i++];
            if (c != '"' && c != '\\')
                return IDEM_EKEYQUOTE;
        }
        if (!idem_key_char_ok(c))
            bad = 1;
        if (n < IDEM_KEY_MAX)
            buf[n] = (char)c;
        n++;
    }
    *key_len = n;
    *bad_char = bad;
    return 0;
}

int idem_key_parse(const char *value, size_t value_len, char *out,
                   size_t *out_len)
{
    char buf[IDEM_KEY_MAX];
    const char *key;
    size_t key_len;
    int bad_char = 0;
    int rc;

    if (value_len > 0 && value[0] == '"') {
        rc = idem_key_unquote(value, value_len, buf, &key_len, &bad_char);
        if (rc != 0)
            return rc;
        key = buf;
    } else {
        key = value;
        key_len = value_len;
        for (size_t i = 0; i < value_len && !bad_char; i++)
            bad_char = !idem_key_char_ok((unsigned char)value[i]);
    }

    if (key_len == 0)
        return IDEM_EKEYEMPTY;
    if (key_len > IDEM_KEY_MAX)
        return IDEM_EKEYLONG;
    if (bad_char)
        return IDEM_EKEYCHAR;
    memcpy(out, key, key_len);
    *out_len = key_len;
    return 0;
}

const char *idem_key_problem(int err)
{
    switch (err) {
    case IDEM_EKEYEMPTY:
        return "The Idempotency-Key header is empty; a key has 1 to 255 "
               "characters.";
    case IDEM_EKEYLONG:
        return "The Idempotency-Key is longer than 255 characters.";
    case IDEM_EKEYCHAR:
        return "The Idempotency-Key may contain only printable ASCII "
               "characters (0x21 to 0x7E): no spaces, control characters "
               "or non-ASCII bytes.";
    case IDEM_EKEYQUOTE:
        return "The Idempotency-Key is a malformed quoted string; the "
               "quoted form is \"key\" with only \\\" and \\\\ escapes.";
    case IDEM_EKEYDUP:
        return "The Idempotency-Key header appears more than once with "
               "different values.";
    case IDEM_EKEYMISSING:
        return "An Idempotency-Key header is required for this request.";
    }
    return NULL;
}
