/*
 * settings.c — every setting of idemgate: its flag, its help line, and the
 * setter that parses a value into idemgate_conf_t. The flag table below is
 * the one list of settings; --help, the command line and the --config file
 * all read it.
 *
 *   "--ttl 2h" or "ttl = 2h" ──idemgate_flag_find("ttl")──> set_ttl()
 *        ──idemgate_parse_duration()──> conf->ttl_ms = 7200000
 *
 * A setter refuses a bad value with a reason in an idemgate_why_t and
 * returns -1; it leaves conf as it was, or with a value that the caller
 * throws away with the rest of conf.
 */
#include "idemgate.h"
#include "idem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TIMEOUT_MAX_MS (24 * IDEMGATE_HOUR)
#define LEASE_MAX_MS   (48 * IDEMGATE_HOUR)
#define TTL_MAX_MS     (3650 * 24 * IDEMGATE_HOUR)
#define WORKERS_MAX    1024u
#define SCOPE_MAX      8u /* the module hashes at most 8 values */

void idemgate_conf_init(idemgate_conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->ttl_ms = 24 * IDEMGATE_HOUR;
    c->wait_ms = 10 * IDEMGATE_SECOND;
    c->client_timeout_ms = 30 * IDEMGATE_SECOND;
    c->upstream_timeout_ms = 60 * IDEMGATE_SECOND;
    c->methods = IDEMGATE_M_POST;
    c->max_body_bytes = IDEMGATE_MIB;
    c->error_style = "persona";
    c->max_header_bytes = 16 * IDEMGATE_KIB;
    c->max_response_bytes = 8 * IDEMGATE_MIB;
}

static int set_string(char **dst, const char *value, idemgate_why_t why)
{
    char *copy;

    if (idemgate_check_printable(value, why) != 0) {
        return -1;
    }
    copy = strdup(value);
    if (copy == NULL) {
        return idemgate_why(why, "out of memory");
    }
    free(*dst);
    *dst = copy;
    return 0;
}

void idemgate_list_clear(idemgate_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Adds value; the first value from a new origin replaces the old ones. */
int idemgate_list_add(idemgate_list_t *l, const char *value,
                      idemgate_origin_t origin, idemgate_why_t why)
{
    char **items = NULL, *copy = NULL;

    if (l->origin != origin) {
        idemgate_list_clear(l);
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
    return idemgate_why(why, "out of memory");
}

static int set_listen(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_addr(v, strlen(v), &c->listen, why);
}

/* Each URL is checked here, where its flag or line is known; flags.c
 * takes the list apart once all are in and checks them together. */
static int set_upstream(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                        idemgate_why_t why)
{
    idemgate_upstream_t u = {{NULL, 0}, 0, NULL};

    if (idemgate_parse_upstream(v, &u, why) != 0) {
        return -1;
    }
    idemgate_upstream_free(&u);
    return idemgate_list_add(&c->upstream_urls, v, o, why);
}

/* A file nginx reads; flags.c checks what it holds once all are in. */
static int set_file(char **dst, const char *v, idemgate_why_t why)
{
    if (*v == '\0') {
        return idemgate_why(why, "needs a file");
    }
    /* nginx reads '$' in these paths as a variable */
    if (strchr(v, '$') != NULL) {
        return idemgate_why(why, "'%s': the path may not contain '$'", v);
    }
    return set_string(dst, v, why);
}

static int set_tls_cert(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                        idemgate_why_t why)
{
    (void)o;
    return set_file(&c->tls_cert, v, why);
}

static int set_tls_key(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       idemgate_why_t why)
{
    (void)o;
    return set_file(&c->tls_key, v, why);
}

static int set_upstream_ca(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    return set_file(&c->upstream_ca, v, why);
}

static int set_upstream_insecure(idemgate_conf_t *c, const char *v,
                                 idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    if (v == NULL) {
        c->upstream_insecure = 1;
        return 0;
    }
    return idemgate_parse_bool(v, &c->upstream_insecure, why);
}

static int set_admin(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     idemgate_why_t why)
{
    (void)o;
    if (strcmp(v, "off") == 0 || strcmp(v, "none") == 0) {
        c->admin_off = 1;
        return 0;
    }
    c->admin_off = 0;
    return idemgate_parse_addr(v, strlen(v), &c->admin, why);
}

/*
 * A store URL is checked by libidem, which the module runs on it again, so
 * the gateway and the directive take the same URLs with the same words.
 * mem: is one process's memory: the gateway's workers could not share it.
 */
static int set_store(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     idemgate_why_t why)
{
    char reason[512];

    (void)o;
    if (strncmp(v, "mem:", 4) == 0) {
        return idemgate_why(why,
                            "unsupported store URL '%s' (mem: is one "
                            "process's memory, for tests: nginx's workers "
                            "need a shared store)",
                            v);
    }
    if (idem_store_url_check(v, reason, sizeof(reason)) != 0) {
        if (strncmp(reason, "unsupported store URL", 21) == 0) {
            return idemgate_why(why, "%s", reason);
        }
        return idemgate_why(why, "'%s': %s", v, reason);
    }
    return set_string(&c->store, v, why);
}

static int set_ttl(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                   idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_duration(v, 1, TTL_MAX_MS, &c->ttl_ms, why);
}

static int set_wait(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                    idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_duration(v, 0, TIMEOUT_MAX_MS, &c->wait_ms, why);
}

static int set_lease(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     idemgate_why_t why)
{
    (void)o;
    c->lease_set = 1;
    return idemgate_parse_duration(v, 1, LEASE_MAX_MS, &c->lease_ms, why);
}

static int set_client_timeout(idemgate_conf_t *c, const char *v,
                              idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_duration(v, 1, TIMEOUT_MAX_MS, &c->client_timeout_ms,
                                   why);
}

static int set_upstream_timeout(idemgate_conf_t *c, const char *v,
                                idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_duration(v, 1, TIMEOUT_MAX_MS,
                                   &c->upstream_timeout_ms, why);
}

static int set_methods(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       idemgate_why_t why)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {{"POST", IDEMGATE_M_POST},
                 {"PATCH", IDEMGATE_M_PATCH},
                 {"PUT", IDEMGATE_M_PUT},
                 {"DELETE", IDEMGATE_M_DELETE}};
    unsigned methods = 0;
    const char *p = v;
    size_t n, i;

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
    return idemgate_why(
        why,
        "invalid method list '%s' (comma-separated POST, PATCH, PUT, "
        "DELETE)",
        v);
}

static int set_scope_header(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, idemgate_why_t why)
{
    int none = strcasecmp(v, "none") == 0;

    if (!none && idemgate_check_header_name(v, 1, why) != 0) {
        return -1;
    }
    /* a new origin replaces the list, "none" included */
    if (c->scope_headers.origin != o) {
        idemgate_list_clear(&c->scope_headers);
        c->scope_headers.origin = o;
        c->scope_none = 0;
    }
    if (none) {
        c->scope_none = 1;
    } else if (idemgate_list_add(&c->scope_headers, v, o, why) != 0) {
        return -1;
    }
    if (c->scope_none && c->scope_headers.n > 0) {
        return idemgate_why(why, "none cannot be combined with header names");
    }
    if (c->scope_headers.n + c->scope_cookies.n > SCOPE_MAX) {
        return idemgate_why(why, "at most %u scope headers and cookies",
                            SCOPE_MAX);
    }
    return 0;
}

/* "429,503": statuses from 200 to 599 whose responses free the key. */
static int set_release_status(idemgate_conf_t *c, const char *v,
                              idemgate_origin_t o, idemgate_why_t why)
{
    const char *p = v;
    size_t max = sizeof(c->release_statuses) / sizeof(c->release_statuses[0]);
    size_t n = 0;

    (void)o;
    for (;;) {
        unsigned status = 0;
        size_t digits = strspn(p, "0123456789");

        if (digits != 3) {
            goto fail;
        }
        for (size_t i = 0; i < 3; i++) {
            status = status * 10 + (unsigned)(p[i] - '0');
        }
        if (status < 200 || status > 599 || n == max) {
            goto fail;
        }
        c->release_statuses[n++] = status;
        p += 3;
        if (*p == '\0') {
            break;
        }
        if (*p != ',') {
            goto fail;
        }
        p++;
    }
    c->n_release_statuses = n;
    return 0;

fail:
    return idemgate_why(why,
                        "invalid value '%s' (statuses from 200 to 599, "
                        "comma-separated, at most %zu, e.g. 429,503)",
                        v, max);
}

/* A cookie whose value scopes keys: a name nginx can read as $cookie_NAME. */
static int set_scope_cookie(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, idemgate_why_t why)
{
    if (v[0] == '\0' ||
        v[strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789_")] != '\0') {
        return idemgate_why(why,
                            "'%s' is not a cookie name the gateway can read "
                            "(letters, digits and '_')",
                            v);
    }
    if (c->scope_cookies.origin != o) {
        idemgate_list_clear(&c->scope_cookies);
        c->scope_cookies.origin = o;
    }
    if (idemgate_list_add(&c->scope_cookies, v, o, why) != 0) {
        return -1;
    }
    if (c->scope_headers.n + c->scope_cookies.n > SCOPE_MAX) {
        return idemgate_why(why, "at most %u scope headers and cookies",
                            SCOPE_MAX);
    }
    return 0;
}

/* A header name (checked) added to one of the repeatable lists. */
static int add_header_name(idemgate_list_t *l, const char *v,
                           idemgate_origin_t o, idemgate_why_t why)
{
    if (idemgate_check_header_name(v, 0, why) != 0) {
        return -1;
    }
    return idemgate_list_add(l, v, o, why);
}

static int set_key_header(idemgate_conf_t *c, const char *v,
                          idemgate_origin_t o, idemgate_why_t why)
{
    return add_header_name(&c->key_headers, v, o, why);
}

/*
 * The body of every error the gateway makes: the file is read and checked
 * now, so that a bad placeholder stops the start with its line, and nginx
 * reads it again (idempotency_error_template) by its absolute path.
 */
static int set_error_template(idemgate_conf_t *c, const char *v,
                              idemgate_origin_t o, idemgate_why_t why)
{
    char *text = NULL, *abs = NULL, reason[256];
    idem_errtpl_t *tpl = NULL;
    size_t len;
    FILE *f;
    int rc;

    (void)o;
    if (strchr(v, '$') != NULL) {
        return idemgate_why(why, "'%s': the path may not contain '$'", v);
    }
    if (idemgate_check_printable(v, why) != 0) {
        return -1;
    }
    f = fopen(v, "rb");
    if (f == NULL) {
        return idemgate_why(why, "cannot read %s: %s", v, strerror(errno));
    }
    text = malloc(IDEM_ERRTPL_MAX + 1);
    if (text == NULL) {
        fclose(f);
        return idemgate_why(why, "out of memory");
    }
    len = fread(text, 1, IDEM_ERRTPL_MAX + 1, f);
    rc = ferror(f);
    fclose(f);
    if (rc) {
        free(text);
        return idemgate_why(why, "cannot read %s", v);
    }
    rc = idem_errtpl_parse(text, len, &tpl, reason, sizeof(reason));
    free(text);
    if (rc == IDEM_ENOMEM) {
        return idemgate_why(why, "out of memory");
    }
    if (rc != 0) {
        return idemgate_why(why, "%s: %s", v, reason);
    }
    abs = idemgate_abspath(v);
    if (abs == NULL) {
        idem_errtpl_free(tpl);
        return idemgate_why(why, "cannot make %s absolute: %s", v,
                            strerror(errno));
    }
    free(c->error_template);
    idem_errtpl_free(c->error_tpl);
    c->error_template = abs;
    c->error_tpl = tpl;
    return 0;
}

/* What the fingerprint leaves out: a JSON Pointer or a field name. */
static int set_fingerprint_ignore(idemgate_conf_t *c, const char *v,
                                  idemgate_origin_t o, idemgate_why_t why)
{
    if (idemgate_check_printable(v, why) != 0) {
        return -1;
    }
    if (idem_fp_ignore_check(v, strlen(v)) != 0) {
        return idemgate_why(why,
                            "'%s' is neither a JSON Pointer (/a/0/b, with "
                            "'~' only in ~0 and ~1) nor a field name",
                            v);
    }
    return idemgate_list_add(&c->fp_ignore, v, o, why);
}

static int set_fingerprint_header(idemgate_conf_t *c, const char *v,
                                  idemgate_origin_t o, idemgate_why_t why)
{
    return add_header_name(&c->fp_headers, v, o, why);
}

static int set_no_store_header(idemgate_conf_t *c, const char *v,
                               idemgate_origin_t o, idemgate_why_t why)
{
    return add_header_name(&c->no_store_headers, v, o, why);
}

static int set_require_key(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    if (v == NULL) {
        c->require_key = 1;
        return 0;
    }
    return idemgate_parse_bool(v, &c->require_key, why);
}

static int set_on_unknown(idemgate_conf_t *c, const char *v,
                          idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    if (strcmp(v, "store") == 0 || strcmp(v, "release") == 0) {
        c->on_unknown_release = v[0] == 'r';
        return 0;
    }
    return idemgate_why(why, "invalid value '%s' (store or release)", v);
}

static int set_stream(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      idemgate_why_t why)
{
    static const char *const modes[] = {"auto", "pass", "hold"};

    (void)o;
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(v, modes[i]) == 0) {
            c->stream = modes[i];
            return 0;
        }
    }
    return idemgate_why(why, "invalid value '%s' (auto, pass or hold)", v);
}

static int set_error_style(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, idemgate_why_t why)
{
    static const char *const styles[] = {"persona", "ietf", "stripe"};

    (void)o;
    for (size_t i = 0; i < sizeof(styles) / sizeof(styles[0]); i++) {
        if (strcmp(v, styles[i]) == 0) {
            c->error_style = styles[i];
            return 0;
        }
    }
    return idemgate_why(why, "invalid value '%s' (persona, ietf or stripe)", v);
}

static int set_api_log(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       idemgate_why_t why)
{
    (void)o;
    /* nginx reads '$' in an access_log path as a variable */
    if (strchr(v, '$') != NULL) {
        return idemgate_why(why, "'%s': the path may not contain '$'", v);
    }
    if (strcmp(v, "off") == 0) {
        free(c->api_log);
        c->api_log = NULL;
        return 0;
    }
    return set_string(&c->api_log, v, why);
}

static int set_max_body(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                        idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_size(v, 1, IDEMGATE_GIB, &c->max_body_bytes, why);
}

static int set_max_header(idemgate_conf_t *c, const char *v,
                          idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_size(v, IDEMGATE_KIB, IDEMGATE_MIB,
                               &c->max_header_bytes, why);
}

static int set_max_response(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    return idemgate_parse_size(v, 1, IDEMGATE_GIB, &c->max_response_bytes, why);
}

static int set_workers(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                       idemgate_why_t why)
{
    uint64_t n;
    const char *end;

    (void)o;
    if (strcmp(v, "auto") == 0) {
        c->workers = 0;
        return 0;
    }
    if (idemgate_parse_digits(v, &n, &end) != 0 || *end != '\0' || n == 0 ||
        n > WORKERS_MAX) {
        return idemgate_why(why, "invalid value '%s' (auto, or 1 to %u)", v,
                            WORKERS_MAX);
    }
    c->workers = (unsigned)n;
    return 0;
}

static int set_user(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                    idemgate_why_t why)
{
    (void)o;
    /* looked up in run.c, which knows whether idemgate runs as root */
    if (*v == '\0' || strpbrk(v, " \t\"'\\;{}$") != NULL) {
        return idemgate_why(why, "'%s' is not a user name", v);
    }
    return set_string(&c->user, v, why);
}

static int set_runtime_dir(idemgate_conf_t *c, const char *v,
                           idemgate_origin_t o, idemgate_why_t why)
{
    (void)o;
    if (*v == '\0') {
        return idemgate_why(why, "needs a directory");
    }
    return set_string(&c->runtime_dir, v, why);
}

static int set_nginx(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                     idemgate_why_t why)
{
    (void)o;
    return set_string(&c->nginx, v, why);
}

static int set_module(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      idemgate_why_t why)
{
    (void)o;
    return set_string(&c->module, v, why);
}

static int set_config(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                      idemgate_why_t why)
{
    (void)o;
    if (c->config_file != NULL) {
        return idemgate_why(why, "given more than once");
    }
    return set_string(&c->config_file, v, why);
}

static int set_print_config(idemgate_conf_t *c, const char *v,
                            idemgate_origin_t o, idemgate_why_t why)
{
    (void)v;
    (void)o;
    (void)why;
    c->print_config = 1;
    return 0;
}

static int set_help(idemgate_conf_t *c, const char *v, idemgate_origin_t o,
                    idemgate_why_t why)
{
    (void)v;
    (void)o;
    (void)why;
    c->help = 1;
    return 0;
}

static const idemgate_flag_t flags[] = {
    {"listen", "HOST:PORT", set_listen, 0,
     "address to serve the API on (required)"},
    {"tls-cert", "FILE", set_tls_cert, 0,
     "serve the API over TLS with this PEM certificate (chain), HTTP/2 "
     "offered by ALPN beside HTTP/1.1; needs --tls-key"},
    {"tls-key", "FILE", set_tls_key, 0,
     "the PEM private key of --tls-cert (read by idemgate and nginx's "
     "master, not the workers)"},
    {"upstream", "URL", set_upstream, 0,
     "the API: http://HOST:PORT[/prefix] or https://HOST[:PORT][/prefix] "
     "(required); repeatable: several servers of one scheme and prefix, a "
     "failed connect tries the next, nothing is retried once sent"},
    {"upstream-ca", "FILE", set_upstream_ca, 0,
     "PEM certificates an https upstream's certificate must chain to "
     "(default the system bundle " IDEMGATE_DEFAULT_CA_BUNDLE ")"},
    {"upstream-insecure", NULL, set_upstream_insecure,
     IDEMGATE_FLAG_SWITCH | IDEMGATE_FLAG_EQ_VALUE,
     "do not verify an https upstream's certificate or name (tests only: "
     "anyone on the path can read and change the traffic)"},
    {"store", "URL", set_store, 0,
     "lmdb:DIR[?map_size=SIZE] (default " IDEMGATE_DEFAULT_STORE
     "; the map, sparse on disk, default 128g, caps what it keeps), or "
     "redis://[:PASSWORD@]HOST:PORT[/DB][?options] for many gateways"},
    {"ttl", "DURATION", set_ttl, 0,
     "how long a key is remembered (default 24h)"},
    {"wait", "DURATION", set_wait, 0,
     "how long a retry waits for its key's first request (default 10s)"},
    {"methods", "LIST", set_methods, 0,
     "methods that take part, e.g. POST,PATCH (default POST)"},
    {"scope-header", "NAME|none", set_scope_header, 0,
     "header whose value scopes keys; repeatable (default Authorization)"},
    {"scope-cookie", "NAME", set_scope_cookie, 0,
     "cookie whose value scopes keys too, for session-cookie APIs; "
     "repeatable"},
    {"require-key", NULL, set_require_key,
     IDEMGATE_FLAG_SWITCH | IDEMGATE_FLAG_EQ_VALUE,
     "reject requests of those methods without Idempotency-Key"},
    {"on-unknown", "store|release", set_on_unknown, 0,
     "when the upstream's outcome is unknown (default store)"},
    {"stream", "auto|pass|hold", set_stream, 0,
     "which responses reach the client as they arrive while they are "
     "recorded, instead of when stored: auto text/event-stream ones, pass "
     "every one, hold none (default auto)"},
    {"error-style", "persona|ietf|stripe", set_error_style, 0,
     "shape of error bodies: persona {\"errors\":[...]}, ietf "
     "problem+json, stripe {\"error\":{\"type\",\"message\"}} "
     "(default persona)"},
    {"error-template", "FILE", set_error_template, 0,
     "the body of every error the gateway makes, in the API's own shape: "
     "{status}, {title}, {details} and {key} are put in JSON-escaped; a "
     "first line \"Content-Type: TYPE\" sets the type (default "
     "application/json); in place of --error-style"},
    {"api-log", "FILE|-", set_api_log, 0,
     "one JSON line per API request; - is standard output (default off)"},
    {"max-body-bytes", "SIZE", set_max_body, 0,
     "largest request body (default 1m)"},
    {"max-header-bytes", "SIZE", set_max_header, 0,
     "largest request header section: the request line, the headers and "
     "the empty line, CRLFs included; one byte more gets 431 (default 16k)"},
    {"max-response-bytes", "SIZE", set_max_response, 0,
     "largest response stored for replay (default 8m)"},
    {"client-timeout", "DURATION", set_client_timeout, 0,
     "the request line and headers must arrive within it; the body and the "
     "response may pause this long between two reads or writes, however "
     "long they take in all (default 30s)"},
    {"upstream-timeout", "DURATION", set_upstream_timeout, 0,
     "for the upstream's answer (default 60s)"},
    {"lease", "DURATION", set_lease, 0,
     "when an in-progress key counts as abandoned (default "
     "upstream-timeout + 10s)"},
    {"workers", "N|auto", set_workers, 0,
     "nginx worker processes (default auto: one per core)"},
    {"user", "NAME", set_user, 0,
     "the workers' user when idemgate runs as root; the store and runtime "
     "directories idemgate makes are given to it (default nobody)"},
    {"admin", "HOST:PORT|off", set_admin, 0,
     "/healthz, /metrics and /keys/KEY (default 127.0.0.1:9090)"},
    {"no-store-header", "NAME", set_no_store_header, 0,
     "response header never stored for replay; repeatable"},
    {"release-status", "LIST", set_release_status, 0,
     "statuses whose responses reach the client and free the key instead "
     "of being stored, e.g. 429,503 (default none: every status is "
     "stored)"},
    {"key-header", "NAME", set_key_header, 0,
     "another request header that carries the key, e.g. X-Idempotency-Key "
     "(Idempotency-Key always does); repeatable"},
    {"fingerprint-ignore", "POINTER", set_fingerprint_ignore, 0,
     "leave a volatile field out of the comparison of a reused key: a JSON "
     "Pointer into JSON bodies (/metadata/client_time), or a query or form "
     "field name; repeatable"},
    {"fingerprint-header", "NAME", set_fingerprint_header, 0,
     "bring a request header into that comparison, e.g. Stripe-Version "
     "(absent and empty differ); repeatable"},
    {"runtime-dir", "DIR", set_runtime_dir, 0,
     "where nginx.conf, the pid and temp files go (default a fresh "
     "directory under $TMPDIR, removed at exit)"},
    {"nginx", "PATH", set_nginx, 0,
     "the nginx binary (default " IDEMGATE_DEFAULT_NGINX ")"},
    {"module", "PATH", set_module, 0,
     "the module (default " IDEMGATE_MODULE_FILE
     " beside idemgate, else in " IDEMGATE_MODULE_DIR ")"},
    {"config", "FILE", set_config,
     IDEMGATE_FLAG_CMDLINE_ONLY | IDEMGATE_FLAG_EARLY,
     "read settings from FILE: \"name = value\" lines, # comments"},
    {"print-config", NULL, set_print_config,
     IDEMGATE_FLAG_CMDLINE_ONLY | IDEMGATE_FLAG_SWITCH,
     "print the nginx configuration and exit"},
    {"help", NULL, set_help,
     IDEMGATE_FLAG_CMDLINE_ONLY | IDEMGATE_FLAG_SWITCH | IDEMGATE_FLAG_EARLY,
     "show this help and exit"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

/* The flag called name[0..len), "--" already stripped; '_' matches '-'. */
const idemgate_flag_t *idemgate_flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++) {
        const char *f = flags[i].name;
        size_t j;

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

/* Prints text from column indent, wrapped at the 79th column. */
static void print_wrapped(const char *text, int col, int indent)
{
    const char *p = text;
    int n;

    while (*p) {
        n = (int)strcspn(p, " ");
        if (col > indent && col + 1 + n > 79) {
            /* the next word goes on a line of its own */
            printf("\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            putchar(' ');
            col++;
        }
        printf("%.*s", n, p);
        col += n;
        p += n;
        p += strspn(p, " ");
    }
    putchar('\n');
}

void idemgate_flags_usage(void)
{
    char left[64];

    printf("usage: idemgate --listen HOST:PORT --upstream URL [flags]\n"
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
        printf("  %-28s  ", left);
        print_wrapped(flags[i].help, 32, 32);
    }
    printf("\n"
           "Durations take ms, s, m or h (a bare number is seconds); sizes "
           "take k, m or g.\n"
           "A --config file holds the same settings as \"name = value\" "
           "lines; flags on the\n"
           "command line override it. Relative paths start from the working "
           "directory.\n"
           "\n"
           "Signals: SIGTERM or SIGINT stops gracefully (in-flight requests "
           "finish, then\n"
           "exit 0; a second SIGINT stops at once); SIGHUP reloads nginx; "
           "SIGUSR1 reopens\n"
           "the API log.\n");
}
