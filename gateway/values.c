/*
 * values.c — what a value of a flag may be: durations, sizes, booleans,
 * HOST:PORT addresses, header names. Each parser reads one string into a
 * number or an idemgate_addr_t, or refuses it with a reason.
 *
 *   "30s" ──idemgate_parse_duration──> 30000 (ms)
 *   "16k" ──idemgate_parse_size──────> 16384 (bytes)
 *   "127.0.0.1:8080" ──idemgate_parse_addr──> {host, port}
 *
 * A reason is written without the flag's name, which only the caller
 * (settings.c through flags.c) knows: "invalid duration 'x' (...)".
 */
#include "idemgate.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HEADER_NAME_MAX 64u /* the module compares names up to 64 bytes */

int idemgate_why(idemgate_why_t why, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why.buf, why.len, fmt, ap);
    va_end(ap);
    return -1;
}

/* Digits into *out; -1 when there are none or they overflow. Sets *end. */
int idemgate_parse_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *end = p;
    *out = v;
    return p == s ? -1 : 0;
}

int idemgate_parse_duration(const char *s, uint64_t min_ms, uint64_t max_ms,
                            uint64_t *out, idemgate_why_t why)
{
    uint64_t n, unit;
    const char *end;
    char lo[32], hi[32];

    if (idemgate_parse_digits(s, &n, &end) != 0) {
        goto fail;
    }
    if (strcmp(end, "ms") == 0) {
        unit = 1;
    } else if (*end == '\0' || strcmp(end, "s") == 0) {
        unit = IDEMGATE_SECOND;
    } else if (strcmp(end, "m") == 0) {
        unit = IDEMGATE_MINUTE;
    } else if (strcmp(end, "h") == 0) {
        unit = IDEMGATE_HOUR;
    } else {
        goto fail;
    }
    if (n > max_ms / unit || n * unit < min_ms) {
        idemgate_duration_str(min_ms, lo, sizeof(lo));
        idemgate_duration_str(max_ms, hi, sizeof(hi));
        return idemgate_why(why, "'%s' is out of range (%s to %s)", s, lo, hi);
    }
    *out = n * unit;
    return 0;

fail:
    return idemgate_why(why,
                        "invalid duration '%s' (a number with ms, s, m or h, "
                        "e.g. 500ms, 30s, 5m, 24h; a bare number is seconds)",
                        s);
}

int idemgate_parse_size(const char *s, uint64_t min, uint64_t max,
                        uint64_t *out, idemgate_why_t why)
{
    uint64_t n, unit = 1;
    const char *end;

    if (idemgate_parse_digits(s, &n, &end) != 0) {
        goto fail;
    }
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        unit = IDEMGATE_KIB;
        break;
    case 'm':
        unit = IDEMGATE_MIB;
        break;
    case 'g':
        unit = IDEMGATE_GIB;
        break;
    default:
        goto fail;
    }
    if (*end != '\0') {
        end++;
        /* "k", "kb" and "kib" all mean 1024 bytes */
        if (tolower((unsigned char)end[0]) == 'i' &&
            tolower((unsigned char)end[1]) == 'b' && end[2] == '\0') {
            end += 2;
        } else if (tolower((unsigned char)end[0]) == 'b' && end[1] == '\0') {
            end++;
        }
        if (*end != '\0') {
            goto fail;
        }
    }
    if (n > max / unit || n * unit < min) {
        return idemgate_why(
            why, "'%s' is out of range (%" PRIu64 " to %" PRIu64 " bytes)", s,
            min, max);
    }
    *out = n * unit;
    return 0;

fail:
    return idemgate_why(why,
                        "invalid size '%s' (bytes, or a number with k, m or g, "
                        "e.g. 16k, 1m)",
                        s);
}

int idemgate_parse_bool(const char *s, int *out, idemgate_why_t why)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return idemgate_why(why, "invalid value '%s' (true or false)", s);
}

static int is_host_char(int c)
{
    return isalnum(c) || c == '.' || c == '-';
}

/* HOST:PORT or [IPV6]:PORT, for nginx's listen and server directives. */
int idemgate_parse_addr(const char *s, size_t len, idemgate_addr_t *out,
                        idemgate_why_t why)
{
    const char *colon, *end;
    size_t host_len, i;
    uint64_t port;
    char *host;

    if (len > 0 && s[0] == '[') {
        colon = memchr(s, ']', len);
        if (colon == NULL || colon == s + 1) {
            goto fail;
        }
        for (i = 1; s + i < colon; i++) {
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.') {
                goto fail;
            }
        }
        colon++;
        if (colon == s + len || *colon != ':') {
            goto fail;
        }
    } else {
        colon = NULL;
        for (i = 0; i < len; i++) {
            if (s[i] == ':') {
                if (colon != NULL) {
                    return idemgate_why(
                        why,
                        "'%.*s': put an IPv6 address in brackets, "
                        "e.g. [::1]:8080",
                        (int)len, s);
                }
                colon = s + i;
            } else if (!is_host_char((unsigned char)s[i])) {
                goto fail;
            }
        }
        if (colon == NULL || colon == s) {
            goto fail;
        }
    }
    host_len = (size_t)(colon - s);
    if (colon + 1 == s + len ||
        idemgate_parse_digits(colon + 1, &port, &end) != 0 || end != s + len ||
        port == 0 || port > 65535) {
        goto fail;
    }
    host = strndup(s, host_len);
    if (host == NULL) {
        return idemgate_why(why, "out of memory");
    }
    free(out->host);
    out->host = host;
    out->port = (unsigned)port;
    return 0;

fail:
    return idemgate_why(
        why, "invalid address '%.*s' (HOST:PORT, e.g. 127.0.0.1:8080)",
        (int)len, s);
}

void idemgate_upstream_free(idemgate_upstream_t *u)
{
    free(u->addr.host);
    free(u->prefix);
    memset(u, 0, sizeof(*u));
}

/* The path prefix of an upstream URL, trailing slashes dropped, into
 * *out. nginx reads '$' as a variable, and '?' and '#' mean nothing in a
 * prefix; quotes, backslashes and the others are no URL's path bytes. */
static int parse_prefix(const char *url, const char *slash, char **out,
                        idemgate_why_t why)
{
    size_t len;

    for (const char *p = slash; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            return idemgate_why(why,
                                "'%s': the path prefix may contain neither "
                                "spaces nor control or non-ASCII bytes",
                                url);
        }
        if (strchr("$?#\"'\\{}<>^`|", *p)) {
            return idemgate_why(
                why, "'%s': the path prefix may not contain '%c'", url, *p);
        }
    }
    len = strlen(slash);
    while (len > 0 && slash[len - 1] == '/') {
        len--;
    }
    *out = strndup(slash, len);
    return *out != NULL ? 0 : idemgate_why(why, "out of memory");
}

int idemgate_parse_upstream(const char *v, idemgate_upstream_t *out,
                            idemgate_why_t why)
{
    idemgate_upstream_t u = {{NULL, 0}, 0, NULL};
    const char *auth, *slash, *bracket, *colon;
    char *withport = NULL;
    size_t len;
    int rc;

    if (strncasecmp(v, "https://", 8) == 0) {
        u.tls = 1;
        auth = v + 8;
    } else if (strncasecmp(v, "http://", 7) == 0) {
        auth = v + 7;
    } else {
        return idemgate_why(why,
                            "'%s' is not an http://HOST:PORT[/prefix] or "
                            "https://HOST[:PORT][/prefix] URL",
                            v);
    }
    slash = strchr(auth, '/');
    len = slash ? (size_t)(slash - auth) : strlen(auth);
    /* the port, after the last ':' that is not inside brackets */
    bracket = len > 0 && auth[0] == '[' ? memchr(auth, ']', len) : NULL;
    colon = memchr(bracket ? bracket : auth, ':',
                   len - (size_t)((bracket ? bracket : auth) - auth));
    if (u.tls && colon == NULL && len > 0) {
        if (asprintf(&withport, "%.*s:%u", (int)len, auth,
                     IDEMGATE_HTTPS_PORT) < 0) {
            return idemgate_why(why, "out of memory");
        }
        rc = idemgate_parse_addr(withport, strlen(withport), &u.addr, why);
        free(withport);
    } else {
        rc = idemgate_parse_addr(auth, len, &u.addr, why);
    }
    if (rc != 0) {
        return idemgate_why(why, "'%s' is not an %s URL%s", v,
                            u.tls ? "https://HOST[:PORT][/prefix]"
                                  : "http://HOST:PORT[/prefix]",
                            u.tls || colon != NULL ? ""
                                                   : " (the port is required)");
    }
    if (parse_prefix(v, slash ? slash : "", &u.prefix, why) != 0) {
        idemgate_upstream_free(&u);
        return -1;
    }
    idemgate_upstream_free(out);
    *out = u;
    return 0;
}

/* A header name the module can match: an HTTP token; with letters, digits
 * and '-' only when nginx must read it as $http_NAME. */
int idemgate_check_header_name(const char *s, int for_variable,
                               idemgate_why_t why)
{
    size_t n = strlen(s);

    if (n == 0 || n > HEADER_NAME_MAX) {
        return idemgate_why(why,
                            "'%s' is not a header name (1 to %u characters)", s,
                            HEADER_NAME_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (isalnum(c) || c == '-') {
            continue;
        }
        if (!for_variable && c < 0x7f && strchr("!#$%&'*+.^_`|~", c)) {
            continue;
        }
        return idemgate_why(why, "'%s' is not a header name%s", s,
                            for_variable ? " (letters, digits and '-')" : "");
    }
    return 0;
}

/* Control bytes would break the line-based nginx configuration. */
int idemgate_check_printable(const char *s, idemgate_why_t why)
{
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            return idemgate_why(why, "the value contains a control character");
        }
    }
    return 0;
}

void idemgate_duration_str(uint64_t ms, char *out, size_t outlen)
{
    if (ms != 0 && ms % IDEMGATE_HOUR == 0) {
        snprintf(out, outlen, "%" PRIu64 "h", ms / IDEMGATE_HOUR);
    } else if (ms >= 10 * IDEMGATE_MINUTE && ms % IDEMGATE_MINUTE == 0) {
        snprintf(out, outlen, "%" PRIu64 "m", ms / IDEMGATE_MINUTE);
    } else if (ms % IDEMGATE_SECOND == 0) {
        snprintf(out, outlen, "%" PRIu64 "s", ms / IDEMGATE_SECOND);
    } else {
        snprintf(out, outlen, "%" PRIu64 "ms", ms);
    }
}
