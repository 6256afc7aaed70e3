/*
 * flags.c — idemgate's settings: the flag table, the command line, the
 * --config file, value parsers, defaults and the checks that span several
 * settings.
 *
 * How a setting arrives in idemgate_conf_t:
 *
 *   argv ──scan──> --help? --config FILE?
 *                      │
 *   FILE ──lines "name = value"──> flag table ──setter──> conf (FROM_FILE)
 *   argv ──"--name value"────────> flag table ──setter──> conf (FROM_CMDLINE)
 *                                                          │
 *                  defaults, absolute paths, cross checks ─┘ finish()
 *
 * A setter parses one value; on a bad one it writes the reason (without
 * the flag's name) into a small buffer and returns -1, and the caller adds
 * where the value came from: "--ttl: ..." or "FILE:3: ttl: ...".
 */
#include "idemgate.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS_PER_S UINT64_C(1000)
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)
#define KIB      UINT64_C(1024)
#define MIB      (1024 * KIB)
#define GIB      (1024 * MIB)

#define TIMEOUT_MAX_MS   (24 * MS_PER_H)
#define LEASE_MAX_MS     (48 * MS_PER_H)
#define TTL_MAX_MS       (3650 * 24 * MS_PER_H)
#define LEASE_MARGIN_MS  (10 * MS_PER_S)
#define CONFIG_MAX_BYTES (1024 * 1024)
#define WORKERS_MAX      1024u
#define SCOPE_MAX        8u  /* the module hashes at most 8 values */
#define HEADER_NAME_MAX  64u /* the module compares names up to 64 bytes */
#define DEFAULT_STORE    "lmdb:./idemgate-data"
#define DEFAULT_NGINX    "/usr/sbin/nginx"
#define DEFAULT_ADMIN    "127.0.0.1"
#define DEFAULT_ADMIN_PT 9090u
#define MODULE_FILE      "ngx_http_idempotency_module.so"

typedef struct {
    char  *buf;
    size_t len;
} why_t;

typedef int (*setter_t)(idemgate_conf_t *conf, const char *value,
                        idemgate_origin_t origin, why_t why);

#define FLAG_CMDLINE_ONLY 0x01u /* not in a --config file */
#define FLAG_SWITCH       0x02u /* takes no value on the command line */

typedef struct {
    const char *name; /* without the leading "--" */
    const char *metavar;
    setter_t    set;
    unsigned    flags;
    const char *help;
} flag_t;

static int bad(why_t why, const char *fmt, ...) IDEMGATE_PRINTF(2, 3);

static int bad(why_t why, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why.buf, why.len, fmt, ap);
    va_end(ap);
    return -1;
}

static int oom(why_t why)
{
    return bad(why, "out of memory");
}

/* ------------------------------------------------------------------------ */
/* Value parsers                                                             */
/* ------------------------------------------------------------------------ */

/* Digits into *out; -1 when there are none or they overflow. Sets *end. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
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

static int parse_duration(const char *s, uint64_t min_ms, uint64_t max_ms,
                          uint64_t *out, why_t why)
{
    uint64_t    n, unit;
    const char *end;
    char        lo[32], hi[32];

    if (parse_digits(s, &n, &end) != 0) {
        goto fail;
    }
    if (strcmp(end, "ms") == 0) {
        unit = 1;
    } else if (*end == '\0' || strcmp(end, "s") == 0) {
        unit = MS_PER_S;
    } else if (strcmp(end, "m") == 0) {
        unit = MS_PER_M;
    } else if (strcmp(end, "h") == 0) {
        unit = MS_PER_H;
    } else {
        goto fail;
    }
    idemgate_duration_str(min_ms, lo, sizeof(lo));
    idemgate_duration_str(max_ms, hi, sizeof(hi));
    if (n > max_ms / unit || n * unit > max_ms || n * unit < min_ms) {
        return bad(why, "'%s' is out of range (%s to %s)", s, lo, hi);
    }
    *out = n * unit;
    return 0;

fail:
    return bad(why,
               "invalid duration '%s' (a number with ms, s, m or h, "
               "e.g. 500ms, 30s, 5m, 24h; a bare number is seconds)",
               s);
}

static int parse_size(const char *s, uint64_t min, uint64_t max,
                      uint64_t *out, why_t why)
{
    uint64_t    n, unit = 1;
    const char *end;

    if (parse_digits(s, &n, &end) != 0) {
        goto fail;
    }
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        unit = KIB;
        break;
    case 'm':
        unit = MIB;
        break;
    case 'g':
        unit = GIB;
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
    if (n > max / unit || n * unit > max || n * unit < min) {
        return bad(why,
                   "'%s' is out of range (%" PRIu64 " to %" PRIu64 " bytes)",
                   s, min, max);
    }
    *out = n * unit;
    return 0;

fail:
    return bad(why,
               "invalid size '%s' (bytes, or a number with k, m or g, "
               "e.g. 16k, 1m)",
               s);
}

static int parse_bool(const char *s, int *out, why_t why)
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
    return bad(why, "invalid value '%s' (true or false)", s);
}

static int is_host_char(int c)
{
    return isalnum(c) || c == '.' || c == '-';
}

/* HOST:PORT or [IPV6]:PORT, for nginx's listen and server directives. */
static int parse_addr(const char *s, size_t len, idemgate_addr_t *out,
                      why_t why)
{
    const char *colon, *end;
    size_t      host_len, i;
    uint64_t    port;
    char       *host;

    if (len > 0 && s[0] == '[') {
        colon = memchr(s, ']', len);
        if (colon == NULL || colon == s + 1) {
            goto fail;
        }
        for (i = 1; s + i < colon; i++) {
            if (!isxdigit((unsigned char)s[i]) && s[i] != ':' &&
                s[i] != '.') {
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
                    return bad(why,
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
    if (colon + 1 == s + len || parse_digits(colon + 1, &port, &end) != 0 ||
        end != s + len || port == 0 || port > 65535) {
        goto fail;
    }
    host = strndup(s, host_len);
    if (host == NULL) {
        return oom(why);
    }
    free(out->host);
    out->host = host;
    out->port = (unsigned)port;
    return 0;

fail:
    return bad(why, "invalid address '%.*s' (HOST:PORT, e.g. 127.0.0.1:8080)",
               (int)len, s);
}

/* A header name the module can match: an HTTP token; with letters, digits
 * and '-' only when nginx must read it as $http_NAME. */
static int check_header_name(const char *s, int for_variable, why_t why)
{
    size_t n = strlen(s);

    if (n == 0 || n > HEADER_NAME_MAX) {
        return bad(why, "'%s' is not a header name (1 to %u characters)", s,
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
        return bad(why, "'%s' is not a header name%s", s,
                   for_variable ? " (letters, digits and '-')" : "");
    }
    return 0;
}

/* Control bytes would break the line-based nginx configuration. */
static int check_printable(const char *s, why_t why)
{
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            return bad(why, "the value contains a control character");
        }
    }
    return 0;
}

static int set_string(char **dst, const char *value, why_t why)
{
    char *copy;

    if (check_printable(value, why) != 0) {
        return -1;
    }
    copy = strdup(value);
    if (copy == NULL) {
        return oom(why);
    }
    free(*dst);
    *dst = copy;
    return 0;
}

static void list_clear(idemgate_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Adds value; the first value from a new origin replaces the old ones. */
static int list_add(idemgate_list_t *l, const char *value,
                    idemgate_origin_t origin, why_t why)
{
    char **items = NULL, *copy = NULL;

    if (l->origin != origin) {
        list_clear(l);
        l->origin = origin;
    }
    copy = strdup(value);
    items = copy ? realloc(l->items, (l->n + 1) * sizeof(*items)) : NULL;
    if (items == NULL) {
        goto fail;
    }
    items[l->n++] = copy;
    l->items = items;
    return 0;

fail:
    free(copy);
    return oom(why);
}

/* ------------------------------------------------------------------------ */
/* Setters, one per flag                                                     */
/* ------------------------------------------------------------------------ */

static int set_listen(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      why_t why)
{
    (void)o;
    return parse_addr(v, strlen(v), &c->listen, why);
}

static int set_upstream(idemgate_conf_t *c, const char *v,
                        idemgate_origin_t o, why_t why)
{
    const char *auth, *slash;
    char       *prefix;
    size_t      len;

    (void)o;
    if (strncasecmp(v, "https://", 8) == 0) {
        return bad(why, "'%s': only http:// upstreams are supported", v);
    }
    if (strncasecmp(v, "http://", 7) != 0) {
        return bad(why, "'%s' is not an http://HOST:PORT[/prefix] URL", v);
    }
    auth = v + 7;
    slash = strchr(auth, '/');
    len = slash ? (size_t)(slash - auth) : strlen(auth);
    if (parse_addr(auth, len, &c->upstream, why) != 0) {
        return bad(why,
                   "'%s' is not an http://HOST:PORT[/prefix] URL (the port "
                   "is required)",
                   v);
    }
    slash = slash ? slash : "";
    for (const char *p = slash; *p; p++) {
        /* '$' would make nginx read a variable; '?' and '#' have no
         * meaning in a prefix */
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
            strchr("$?#\"'\\{}<>^`|", *p)) {
            return bad(why, "'%s': the path prefix may not contain '%c'", v,
                       *p);
        }
    }
    len = strlen(slash);
    while (len > 0 && slash[len - 1] == '/') {
        len--;
    }
    prefix = strndup(slash, len);
    if (prefix == NULL) {
        return oom(why);
    }
    free(c->upstream_prefix);
    c->upstream_prefix = prefix;
    return 0;
}

static int set_admin(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     why_t why)
{
    (void)o;
    if (strcmp(v, "off") == 0 || strcmp(v, "none") == 0) {
        c->admin_off = 1;
        return 0;
    }
    c->admin_off = 0;
    return parse_addr(v, strlen(v), &c->admin, why);
}

/* Checks an lmdb:PATH[?name=value&...] URL the way the store reads it. */
static int check_lmdb_url(const char *v, why_t why)
{
    const char *q = strchr(v, '?'), *p, *end, *eq, *num_end;
    uint64_t    n;

    if (q == v + 5 || v[5] == '\0') {
        return bad(why, "'%s': lmdb: needs a directory, e.g. lmdb:./data", v);
    }
    for (p = q ? q + 1 : NULL; p != NULL; p = *end ? end + 1 : NULL) {
        end = p + strcspn(p, "&");
        eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL || parse_digits(eq + 1, &n, &num_end) != 0 ||
            num_end != end) {
            goto fail;
        }
        if ((eq - p == 8 && memcmp(p, "map_size", 8) == 0 && n > 0) ||
            (eq - p == 12 && memcmp(p, "group_commit", 12) == 0 && n <= 1) ||
            (eq - p == 4 && memcmp(p, "sync", 4) == 0 && n <= 1)) {
            continue;
        }
        goto fail;
    }
    return 0;

fail:
    return bad(why,
               "'%s': lmdb options are map_size=BYTES, group_commit=0|1 and "
               "sync=0|1",
               v);
}

static int set_store(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     why_t why)
{
    (void)o;
    if (strncmp(v, "lmdb:", 5) == 0) {
        if (check_lmdb_url(v, why) != 0) {
            return -1;
        }
    } else if (strncmp(v, "redis://", 8) != 0 &&
               strncmp(v, "postgres://", 11) != 0 &&
               strncmp(v, "postgresql://", 13) != 0) {
        return bad(why,
                   "unsupported store URL '%s' (lmdb:PATH, "
                   "redis://HOST:PORT[/DB] or postgres://...)",
                   v);
    }
    return set_string(&c->store, v, why);
}

static int set_ttl(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                   why_t why)
{
    (void)o;
    return parse_duration(v, 1, TTL_MAX_MS, &c->ttl_ms, why);
}

static int set_wait(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                    why_t why)
{
    (void)o;
    return parse_duration(v, 0, TIMEOUT_MAX_MS, &c->wait_ms, why);
}

static int set_lease(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     why_t why)
{
    (void)o;
    c->lease_set = 1;
    return parse_duration(v, 1, LEASE_MAX_MS, &c->lease_ms, why);
}

static int set_client_timeout(idemgate_conf_t *c, const char *v,
                              idemgate_origin_t o, why_t why)
{
    (void)o;
    return parse_duration(v, 1, TIMEOUT_MAX_MS, &c->client_timeout_ms, why);
}

static int set_upstream_timeout(idemgate_conf_t *c, const char *v,
                                idemgate_origin_t o, why_t why)
{
    (void)o;
    return parse_duration(v, 1, TIMEOUT_MAX_MS, &c->upstream_timeout_ms, why);
}

static int set_methods(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       why_t why)
{
    static const struct {
        const char *name;
        unsigned    bit;
    } known[] = {{"POST", IDEMGATE_M_POST},
                 {"PATCH", IDEMGATE_M_PATCH},
                 {"PUT", IDEMGATE_M_PUT},
                 {"DELETE", IDEMGATE_M_DELETE}};
    unsigned    methods = 0;
    const char *p = v;
    size_t      n, i;

    (void)o;
    for (;;) {
        p += strspn(p, " ");
        n = strcspn(p, ", ");
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            if (n == strlen(known[i].name) &&
                strncasecmp(p, known[i].name, n) == 0) {
                methods |= known[i].bit;
                break;
            }
        }
        if (i == sizeof(known) / sizeof(known[0])) {
            goto fail;
        }
        p += n;
        p += strspn(p, " ");
        if (*p == '\0') {
            break;
        }
        if (*p++ != ',') {
            goto fail;
        }
    }
    c->methods = methods;
    return 0;

fail:
    return bad(why,
               "invalid method list '%s' (comma-separated POST, PATCH, PUT, "
               "DELETE)",
               v);
}

static int set_scope_header(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, why_t why)
{
    int none = strcasecmp(v, "none") == 0;

    if (!none && check_header_name(v, 1, why) != 0) {
        return -1;
    }
    /* a new origin replaces the list, "none" included */
    if (c->scope_headers.origin != o) {
        list_clear(&c->scope_headers);
        c->scope_headers.origin = o;
        c->scope_none = 0;
    }
    if (none) {
        c->scope_none = 1;
    } else if (list_add(&c->scope_headers, v, o, why) != 0) {
        return -1;
    }
    if (c->scope_none && c->scope_headers.n > 0) {
        return bad(why, "none cannot be combined with header names");
    }
    if (c->scope_headers.n > SCOPE_MAX) {
        return bad(why, "at most %u scope headers", SCOPE_MAX);
    }
    return 0;
}

static int set_no_store_header(idemgate_conf_t *c, const char *v,
                               idemgate_origin_t o, why_t why)
{
    if (check_header_name(v, 0, why) != 0) {
        return -1;
    }
    return list_add(&c->no_store_headers, v, o, why);
}

static int set_require_key(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, why_t why)
{
    (void)o;
    if (v == NULL) {
        c->require_key = 1;
        return 0;
    }
    return parse_bool(v, &c->require_key, why);
}

static int set_on_unknown(idemgate_conf_t *c, const char *v,
                          idemgate_origin_t o, why_t why)
{
    (void)o;
    if (strcmp(v, "store") == 0 || strcmp(v, "release") == 0) {
        c->on_unknown_release = v[0] == 'r';
        return 0;
    }
    return bad(why, "invalid value '%s' (store or release)", v);
}

static int set_error_style(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, why_t why)
{
    (void)o;
    if (strcmp(v, "persona") == 0 || strcmp(v, "ietf") == 0) {
        c->error_style_ietf = v[0] == 'i';
        return 0;
    }
    return bad(why, "invalid value '%s' (persona or ietf)", v);
}

static int set_api_log(idemgate_conf_t *c, const char *v,
                       idemgate_origin_t o, why_t why)
{
    (void)o;
    /* nginx reads '$' in an access_log path as a variable */
    if (strchr(v, '$') != NULL) {
        return bad(why, "'%s': the path may not contain '$'", v);
    }
    if (strcmp(v, "off") == 0) {
        free(c->api_log);
        c->api_log = NULL;
        return 0;
    }
    return set_string(&c->api_log, v, why);
}

static int set_max_body(idemgate_conf_t *c, const char *v,
                        idemgate_origin_t o, why_t why)
{
    (void)o;
    return parse_size(v, 1, GIB, &c->max_body_bytes, why);
}

static int set_max_header(idemgate_conf_t *c, const char *v,
                          idemgate_origin_t o, why_t why)
{
    (void)o;
    return parse_size(v, KIB, MIB, &c->max_header_bytes, why);
}

static int set_max_response(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, why_t why)
{
    (void)o;
    return parse_size(v, 1, GIB, &c->max_response_bytes, why);
}

static int set_workers(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       why_t why)
{
    uint64_t    n;
    const char *end;

    (void)o;
    if (strcmp(v, "auto") == 0) {
        c->workers = 0;
        return 0;
    }
    if (parse_digits(v, &n, &end) != 0 || *end != '\0' || n == 0 ||
        n > WORKERS_MAX) {
        return bad(why, "invalid value '%s' (auto, or 1 to %u)", v,
                   WORKERS_MAX);
    }
    c->workers = (unsigned)n;
    return 0;
}

static int set_runtime_dir(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, why_t why)
{
    (void)o;
    if (*v == '\0') {
        return bad(why, "needs a directory");
    }
    return set_string(&c->runtime_dir, v, why);
}

static int set_nginx(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     why_t why)
{
    (void)o;
    return set_string(&c->nginx, v, why);
}

static int set_module(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      why_t why)
{
    (void)o;
    return set_string(&c->module, v, why);
}

static int set_config(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      why_t why)
{
    (void)o;
    return set_string(&c->config_file, v, why);
}

static int set_print_config(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, why_t why)
{
    (void)v;
    (void)o;
    (void)why;
    c->print_config = 1;
    return 0;
}

static int set_help(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                    why_t why)
{
    (void)v;
    (void)o;
    (void)why;
    c->help = 1;
    return 0;
}

static const flag_t flags[] = {
    {"listen", "HOST:PORT", set_listen, 0,
     "address to serve the API on (required)"},
    {"upstream", "URL", set_upstream, 0,
     "the API: http://HOST:PORT[/prefix] (required)"},
    {"store", "URL", set_store, 0,
     "lmdb:PATH, redis://HOST:PORT[/DB] or postgres://... "
     "(default " DEFAULT_STORE ")"},
    {"ttl", "DURATION", set_ttl, 0,
     "how long a key is remembered (default 24h)"},
    {"wait", "DURATION", set_wait, 0,
     "how long a retry waits for its key's first request (default 10s)"},
    {"methods", "LIST", set_methods, 0,
     "methods that take part, e.g. POST,PATCH (default POST)"},
    {"scope-header", "NAME|none", set_scope_header, 0,
     "header whose value scopes keys; repeatable (default Authorization)"},
    {"require-key", NULL, set_require_key, FLAG_SWITCH,
     "reject requests of those methods without Idempotency-Key"},
    {"on-unknown", "store|release", set_on_unknown, 0,
     "when the upstream's outcome is unknown (default store)"},
    {"error-style", "persona|ietf", set_error_style, 0,
     "shape of error bodies (default persona)"},
    {"api-log", "FILE|-", set_api_log, 0,
     "one JSON line per API request; - is standard output (default off)"},
    {"max-body-bytes", "SIZE", set_max_body, 0,
     "largest request body (default 1m)"},
    {"max-header-bytes", "SIZE", set_max_header, 0,
     "largest request header section (default 16k)"},
    {"max-response-bytes", "SIZE", set_max_response, 0,
     "largest response stored for replay (default 8m)"},
    {"client-timeout", "DURATION", set_client_timeout, 0,
     "for reading a request and sending a response (default 30s)"},
    {"upstream-timeout", "DURATION", set_upstream_timeout, 0,
     "for the upstream's answer (default 60s)"},
    {"lease", "DURATION", set_lease, 0,
     "when an in-progress key counts as abandoned (default "
     "upstream-timeout + 10s)"},
    {"workers", "N|auto", set_workers, 0,
     "nginx worker processes (default auto: one per core)"},
    {"admin", "HOST:PORT|off", set_admin, 0,
     "/healthz, /metrics and /keys/KEY (default 127.0.0.1:9090)"},
    {"no-store-header", "NAME", set_no_store_header, 0,
     "response header never stored for replay; repeatable"},
    {"runtime-dir", "DIR", set_runtime_dir, 0,
     "where nginx.conf, the pid and temp files go (default a fresh "
     "directory under $TMPDIR, removed at exit)"},
    {"nginx", "PATH", set_nginx, 0, "the nginx binary (default " DEFAULT_NGINX
                                    ")"},
    {"module", "PATH", set_module, 0,
     "the module (default " MODULE_FILE " beside idemgate)"},
    {"config", "FILE", set_config, FLAG_CMDLINE_ONLY,
     "read settings from FILE: \"name = value\" lines, # comments"},
    {"print-config", NULL, set_print_config, FLAG_CMDLINE_ONLY | FLAG_SWITCH,
     "print the nginx configuration and exit"},
    {"help", NULL, set_help, FLAG_CMDLINE_ONLY | FLAG_SWITCH,
     "show this help and exit"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

/* The flag called name[0..len), "--" already stripped; '_' matches '-'. */
static const flag_t *flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++) {
        const char *f = flags[i].name;
        size_t      j;

        if (strlen(f) != len) {
            continue;
        }
        for (j = 0; j < len; j++) {
            if (name[j] != f[j] && !(name[j] == '_' && f[j] == '-')) {
                break;
            }
        }
        if (j == len) {
            return &flags[i];
        }
    }
    return NULL;
}

void idemgate_flags_usage(void)
{
    char left[64];

    printf("usage: idemgate --listen HOST:PORT --upstream "
           "http://HOST:PORT[/prefix] [flags]\n"
           "\n"
           "Puts Stripe-style idempotency keys in front of an HTTP API: "
           "runs nginx with the\n"
           "idempotency module, configured from these flags, in the "
           "foreground.\n"
           "\n"
           "flags:\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        snprintf(left, sizeof(left), "--%s%s%s", flags[i].name,
                 flags[i].metavar ? " " : "",
                 flags[i].metavar ? flags[i].metavar : "");
        if (strlen(left) > 28) {
            printf("  %s\n  %-28s  %s\n", left, "", flags[i].help);
        } else {
            printf("  %-28s  %s\n", left, flags[i].help);
        }
    }
    printf("\n"
           "Durations take ms, s, m or h (a bare number is seconds); sizes "
           "take k, m or g.\n"
           "A --config file holds the same settings as \"name = value\" "
           "lines; flags on the\n"
           "command line override it.\n"
           "\n"
           "Signals: SIGTERM or SIGINT stops gracefully (in-flight requests "
           "finish, exit 0);\n"
           "SIGHUP reloads nginx; SIGUSR1 reopens the API log.\n");
}

/* ------------------------------------------------------------------------ */
/* The command line and the config file                                      */
/* ------------------------------------------------------------------------ */

static int apply(idemgate_conf_t *conf, const flag_t *f, const char *value,
                 idemgate_origin_t origin, const char *where,
                 idemgate_err_t *err)
{
    char  reason[768];
    why_t why = {reason, sizeof(reason)};

    if (f->set(conf, value, origin, why) != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE, "%s%s: %s", where,
                             f->name, reason);
    }
    return 0;
}

/* Splits "--name[=value]" and finds the flag. */
static int cmdline_flag(const char *arg, const flag_t **f, const char **eq,
                        idemgate_err_t *err)
{
    const char *name = arg + 2;

    if (strcmp(arg, "-h") == 0) {
        *f = flag_find("help", 4);
        *eq = NULL;
        return 0;
    }
    if (arg[0] != '-' || arg[1] != '-' || arg[2] == '\0') {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "unexpected argument '%s' (see idemgate --help)",
                             arg);
    }
    *eq = strchr(name, '=');
    *f = flag_find(name, *eq ? (size_t)(*eq - name) : strlen(name));
    if (*f == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "unknown flag '%.*s' (see idemgate --help)",
                             *eq ? (int)(*eq - arg) : (int)strlen(arg), arg);
    }
    return 0;
}

/* One pass over argv. With scan set, only --help and --config are applied
 * (they decide what else is read); otherwise every flag but --config. */
static int parse_cmdline(idemgate_conf_t *conf, int argc, char **argv,
                         int scan, idemgate_err_t *err)
{
    const flag_t *f = NULL;
    const char   *eq = NULL, *value;
    char          where[96];

    for (int i = 1; i < argc; i++) {
        if (cmdline_flag(argv[i], &f, &eq, err) != 0) {
            return -1;
        }
        value = eq ? eq + 1 : NULL;
        if (f->flags & FLAG_SWITCH) {
            if (value != NULL && f->set != set_require_key) {
                return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                     "--%s takes no value", f->name);
            }
        } else if (value == NULL) {
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                     "--%s needs a value (--%s %s)", f->name,
                                     f->name, f->metavar);
            }
            value = argv[++i];
        }
        if (scan != (f->set == set_help || f->set == set_config)) {
            continue;
        }
        if (f->set == set_config && conf->config_file != NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--config: given more than once");
        }
        snprintf(where, sizeof(where), "--");
        if (apply(conf, f, value, IDEMGATE_FROM_CMDLINE, where, err) != 0) {
            return -1;
        }
    }
    return 0;
}

static char *trim(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t') {
        s++;
    }
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) {
        *--end = '\0';
    }
    return s;
}

/* One "name = value" line of the config file; lineno for messages. */
static int parse_line(idemgate_conf_t *conf, char *line, unsigned lineno,
                      idemgate_err_t *err)
{
    const char   *path = conf->config_file;
    const flag_t *f;
    char         *name, *value, *p, where[512];
    size_t        len;

    /* a '#' at the start or after a blank begins a comment */
    for (p = line; *p; p++) {
        if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    line = trim(line);
    if (*line == '\0') {
        return 0;
    }
    p = strchr(line, '=');
    if (p == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s:%u: expected \"name = value\", got '%s'",
                             path, lineno, line);
    }
    *p = '\0';
    name = trim(line);
    value = trim(p + 1);
    if (strncmp(name, "--", 2) == 0) {
        name += 2;
    }
    f = flag_find(name, strlen(name));
    if (f == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s:%u: unknown setting '%s'", path, lineno,
                             name);
    }
    if (f->flags & FLAG_CMDLINE_ONLY) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s:%u: %s is only a command-line flag", path,
                             lineno, f->name);
    }
    len = strlen(value);
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') {
        value[len - 1] = '\0';
        value++;
    }
    if (*value == '\0') {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s:%u: %s needs a value", path, lineno,
                             f->name);
    }
    snprintf(where, sizeof(where), "%s:%u: ", path, lineno);
    return apply(conf, f, value, IDEMGATE_FROM_FILE, where, err);
}

static int parse_file(idemgate_conf_t *conf, idemgate_err_t *err)
{
    FILE    *fp = NULL;
    char    *text = NULL, *line, *next;
    size_t   len;
    unsigned lineno = 0;
    int      rc = -1;

    fp = fopen(conf->config_file, "r");
    if (fp == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--config: cannot read %s: %s",
                      conf->config_file, strerror(errno));
        goto fail;
    }
    text = malloc(CONFIG_MAX_BYTES + 1);
    if (text == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        goto fail;
    }
    len = fread(text, 1, CONFIG_MAX_BYTES + 1, fp);
    if (ferror(fp)) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--config: cannot read %s: %s",
                      conf->config_file, strerror(errno));
        goto fail;
    }
    if (len > CONFIG_MAX_BYTES) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--config: %s is larger than 1 MiB", conf->config_file);
        goto fail;
    }
    if (memchr(text, '\0', len) != NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--config: %s is not a text file", conf->config_file);
        goto fail;
    }
    text[len] = '\0';
    for (line = text; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        if (parse_line(conf, line, ++lineno, err) != 0) {
            goto fail;
        }
    }
    rc = 0;

fail:
    free(text);
    if (fp != NULL) {
        fclose(fp);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Defaults and checks across settings                                       */
/* ------------------------------------------------------------------------ */

static int make_absolute(char **path, idemgate_err_t *err)
{
    char *abs;

    if (*path == NULL) {
        return 0;
    }
    abs = idemgate_abspath(*path);
    if (abs == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "cannot make %s absolute: %s", *path,
                             strerror(errno));
    }
    free(*path);
    *path = abs;
    return 0;
}

/* lmdb:PATH[?opts] with PATH made absolute; store_dir is PATH. */
static int finish_store(idemgate_conf_t *c, idemgate_err_t *err)
{
    const char *rest, *q;
    char       *rel = NULL, *url = NULL;
    int         rc = -1;

    if (c->store == NULL && (c->store = strdup(DEFAULT_STORE)) == NULL) {
        goto oom;
    }
    if (strncmp(c->store, "lmdb:", 5) != 0) {
        return 0;
    }
    rest = c->store + 5;
    q = strchr(rest, '?');
    rel = strndup(rest, q ? (size_t)(q - rest) : strlen(rest));
    if (rel == NULL) {
        goto oom;
    }
    c->store_dir = idemgate_abspath(rel);
    if (c->store_dir == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                      "--store: cannot make %s absolute: %s", rel,
                      strerror(errno));
        goto fail;
    }
    if (asprintf(&url, "lmdb:%s%s", c->store_dir, q ? q : "") < 0) {
        url = NULL;
        goto oom;
    }
    free(c->store);
    c->store = url;
    rc = 0;
    goto fail;

oom:
    idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
fail:
    free(rel);
    return rc;
}

/* The module beside the running binary, found through /proc/self/exe. */
static int default_module(idemgate_conf_t *c, idemgate_err_t *err)
{
    char    exe[4096];
    char   *slash;
    ssize_t n;

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n < 0 || (size_t)n >= sizeof(exe) - 1) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "cannot find the idemgate binary to locate the "
                             "module beside it (pass --module PATH)");
    }
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash == NULL) {
        slash = exe;
    }
    *slash = '\0';
    if (asprintf(&c->module, "%s/%s", exe, MODULE_FILE) < 0) {
        c->module = NULL;
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    return 0;
}

static int is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0;
}

static int same_port_clash(const idemgate_addr_t *a, const idemgate_addr_t *b)
{
    return a->port == b->port && (strcasecmp(a->host, b->host) == 0 ||
                                  is_wildcard(a->host) || is_wildcard(b->host));
}

static int finish(idemgate_conf_t *c, idemgate_err_t *err)
{
    char lease[32], timeout[32];

    if (c->listen.host == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--listen is required (e.g. --listen "
                             "127.0.0.1:8080)");
    }
    if (c->upstream.host == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--upstream is required (e.g. --upstream "
                             "http://127.0.0.1:3000)");
    }
    if (!c->admin_off && c->admin.host == NULL) {
        c->admin.host = strdup(DEFAULT_ADMIN);
        c->admin.port = DEFAULT_ADMIN_PT;
        if (c->admin.host == NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        }
    }
    if (!c->admin_off && same_port_clash(&c->listen, &c->admin)) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--admin: %s:%u clashes with --listen (pick "
                             "another port, or --admin off)",
                             c->admin.host, c->admin.port);
    }
    if (!c->lease_set) {
        c->lease_ms = c->upstream_timeout_ms + LEASE_MARGIN_MS;
    } else if (c->lease_ms <= c->upstream_timeout_ms) {
        idemgate_duration_str(c->lease_ms, lease, sizeof(lease));
        idemgate_duration_str(c->upstream_timeout_ms, timeout,
                              sizeof(timeout));
        fprintf(stderr,
                "idemgate: warning: --lease %s is not longer than "
                "--upstream-timeout %s: a slow request can be judged "
                "abandoned while it still runs\n",
                lease, timeout);
    }
    if (!c->scope_none && c->scope_headers.n == 0 &&
        list_add(&c->scope_headers, "Authorization", IDEMGATE_FROM_DEFAULT,
                 (why_t){err->msg, sizeof(err->msg)}) != 0) {
        err->status = IDEMGATE_EXIT_FAILURE;
        return -1;
    }
    if (c->api_log != NULL && strcmp(c->api_log, "-") == 0) {
        free(c->api_log);
        c->api_log = strdup("/dev/stdout");
        if (c->api_log == NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        }
    }
    if (c->nginx == NULL && (c->nginx = strdup(DEFAULT_NGINX)) == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    if (c->module == NULL && default_module(c, err) != 0) {
        return -1;
    }
    if (finish_store(c, err) != 0 || make_absolute(&c->api_log, err) != 0 ||
        make_absolute(&c->runtime_dir, err) != 0 ||
        make_absolute(&c->module, err) != 0) {
        return -1;
    }
    return 0;
}

static void conf_init(idemgate_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->ttl_ms = 24 * MS_PER_H;
    c->wait_ms = 10 * MS_PER_S;
    c->client_timeout_ms = 30 * MS_PER_S;
    c->upstream_timeout_ms = 60 * MS_PER_S;
    c->methods = IDEMGATE_M_POST;
    c->max_body_bytes = MIB;
    c->max_header_bytes = 16 * KIB;
    c->max_response_bytes = 8 * MIB;
}

int idemgate_flags_parse(idemgate_conf_t *conf, int argc, char **argv,
                         idemgate_err_t *err)
{
    conf_init(conf);
    if (parse_cmdline(conf, argc, argv, 1, err) != 0) {
        goto fail;
    }
    if (conf->help) {
        return 0;
    }
    if (conf->config_file != NULL && parse_file(conf, err) != 0) {
        goto fail;
    }
    if (parse_cmdline(conf, argc, argv, 0, err) != 0 || finish(conf, err)) {
        goto fail;
    }
    return 0;

fail:
    return -1;
}

void idemgate_conf_free(idemgate_conf_t *c)
{
    free(c->listen.host);
    free(c->upstream.host);
    free(c->upstream_prefix);
    free(c->admin.host);
    free(c->store);
    free(c->store_dir);
    list_clear(&c->scope_headers);
    list_clear(&c->no_store_headers);
    free(c->api_log);
    free(c->runtime_dir);
    free(c->nginx);
    free(c->module);
    free(c->config_file);
    free(c->worker_user);
    free(c->worker_group);
    memset(c, 0, sizeof(*c));
}

void idemgate_duration_str(uint64_t ms, char *out, size_t outlen)
{
    if (ms != 0 && ms % MS_PER_H == 0) {
        snprintf(out, outlen, "%" PRIu64 "h", ms / MS_PER_H);
    } else if (ms >= 10 * MS_PER_M && ms % MS_PER_M == 0) {
        snprintf(out, outlen, "%" PRIu64 "m", ms / MS_PER_M);
    } else if (ms % MS_PER_S == 0) {
        snprintf(out, outlen, "%" PRIu64 "s", ms / MS_PER_S);
    } else {
        snprintf(out, outlen, "%" PRIu64 "ms", ms);
    }
}
