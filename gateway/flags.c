/*
 * flags.c — where settings come from, and what holds once all are in:
 * argv and the --config file go through the flag table of settings.c, then
 * finish() fills in the defaults that depend on other settings or on the
 * machine, makes paths absolute and checks settings against each other.
 *
 *   argv ──scan──> --help? --config FILE?
 *                      │
 *   FILE ──lines "name = value"──> idemgate_flag_find ──> conf (FROM_FILE)
 *   argv ──"--name value"────────> idemgate_flag_find ──> conf (FROM_CMDLINE)
 *                                                          │
 *                  defaults, absolute paths, cross checks ─┘ finish()
 *
 * Messages name where a bad value came from: "--ttl: ..." on the command
 * line, "FILE:3: ttl: ..." in the file.
 */
#include "idemgate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (1024 * 1024)

static int apply(idemgate_conf_t *conf, const idemgate_flag_t *f,
                 const char *value, idemgate_origin_t origin, const char *where,
                 idemgate_err_t *err)
{
    char reason[768];
    idemgate_why_t why = {reason, sizeof(reason)};

    if (f->set(conf, value, origin, why) != 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE, "%s%s: %s", where,
                             f->name, reason);
    }
    return 0;
}

/* Splits "--name[=value]" and finds the flag. */
static int cmdline_flag(const char *arg, const idemgate_flag_t **f,
                        const char **eq, idemgate_err_t *err)
{
    const char *name = arg + 2;

    if (strcmp(arg, "-h") == 0) {
        *f = idemgate_flag_find("help", 4);
        *eq = NULL;
        return 0;
    }
    if (arg[0] != '-' || arg[1] != '-' || arg[2] == '\0') {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "unexpected argument '%s' (see idemgate --help)",
                             arg);
    }
    *eq = strchr(name, '=');
    *f = idemgate_flag_find(name, *eq ? (size_t)(*eq - name) : strlen(name));
    if (*f == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "unknown flag '%.*s' (see idemgate --help)",
                             *eq ? (int)(*eq - arg) : (int)strlen(arg), arg);
    }
    return 0;
}

/* One pass over argv. The early pass applies only --help and --config,
 * which decide what else is read; the other pass applies the rest. */
static int parse_cmdline(idemgate_conf_t *conf, int argc, char **argv,
                         int early, idemgate_err_t *err)
{
    const idemgate_flag_t *f = NULL;
    const char *eq = NULL, *value;

    for (int i = 1; i < argc; i++) {
        if (cmdline_flag(argv[i], &f, &eq, err) != 0) {
            return -1;
        }
        value = eq ? eq + 1 : NULL;
        if (f->flags & IDEMGATE_FLAG_SWITCH) {
            if (value != NULL && !(f->flags & IDEMGATE_FLAG_EQ_VALUE)) {
                return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                     "--%s takes no value", f->name);
            }
        } else if (value == NULL) {
            /* "--ttl --wait 1s" lacks a value rather than sets "--wait" */
            if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                     "--%s needs a value (--%s %s)", f->name,
                                     f->name, f->metavar);
            }
            value = argv[++i];
        }
        if (!early != !(f->flags & IDEMGATE_FLAG_EARLY)) {
            continue;
        }
        if (apply(conf, f, value, IDEMGATE_FROM_CMDLINE, "--", err) != 0) {
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
    const char *path = conf->config_file;
    const idemgate_flag_t *f;
    char *name, *value, *p, where[512];
    size_t len;

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
                             "%s:%u: expected \"name = value\", got '%s'", path,
                             lineno, line);
    }
    *p = '\0';
    name = trim(line);
    value = trim(p + 1);
    if (strncmp(name, "--", 2) == 0) {
        name += 2;
    }
    f = idemgate_flag_find(name, strlen(name));
    if (f == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "%s:%u: unknown setting '%s'", path, lineno, name);
    }
    if (f->flags & IDEMGATE_FLAG_CMDLINE_ONLY) {
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
                             "%s:%u: %s needs a value", path, lineno, f->name);
    }
    snprintf(where, sizeof(where), "%s:%u: ", path, lineno);
    return apply(conf, f, value, IDEMGATE_FROM_FILE, where, err);
}

static int parse_file(idemgate_conf_t *conf, idemgate_err_t *err)
{
    FILE *fp = NULL;
    char *text = NULL, *line, *next;
    size_t len;
    unsigned lineno = 0;
    int rc = -1;

    fp = fopen(conf->config_file, "r");
    if (fp == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--config: cannot read %s: %s",
                      conf->config_file, strerror(errno));
        goto out;
    }
    text = malloc(CONFIG_MAX_BYTES + 1);
    if (text == NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        goto out;
    }
    len = fread(text, 1, CONFIG_MAX_BYTES + 1, fp);
    if (ferror(fp)) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--config: cannot read %s: %s",
                      conf->config_file, strerror(errno));
        goto out;
    }
    if (len > CONFIG_MAX_BYTES) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--config: %s is larger than 1 MiB", conf->config_file);
        goto out;
    }
    if (memchr(text, '\0', len) != NULL) {
        idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                      "--config: %s is not a text file", conf->config_file);
        goto out;
    }
    text[len] = '\0';
    for (line = text; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        if (parse_line(conf, line, ++lineno, err) != 0) {
            goto out;
        }
    }
    rc = 0;

out:
    free(text);
    if (fp != NULL) {
        fclose(fp);
    }
    return rc;
}

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
    char *rel, *url = NULL;

    if (c->store == NULL &&
        (c->store = strdup(IDEMGATE_DEFAULT_STORE)) == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    if (strncmp(c->store, "lmdb:", 5) != 0) {
        return 0;
    }
    rest = c->store + 5;
    q = strchr(rest, '?');
    rel = strndup(rest, q ? (size_t)(q - rest) : strlen(rest));
    c->store_dir = rel ? idemgate_abspath(rel) : NULL;
    if (c->store_dir == NULL ||
        asprintf(&url, "lmdb:%s%s", c->store_dir, q ? q : "") < 0) {
        free(rel);
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                             "--store: cannot make the lmdb path absolute: %s",
                             strerror(errno));
    }
    free(rel);
    free(c->store);
    c->store = url;
    return 0;
}

/* The module beside the running binary (found through /proc/self/exe),
 * as in a build directory; else the one in the distribution's module
 * directory, as installed. A module in neither place is named by the
 * first, and run.c says it cannot be read. */
static int default_module(idemgate_conf_t *c, idemgate_err_t *err)
{
    char exe[4096];
    char *slash;
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
    if (asprintf(&c->module, "%s/%s", exe, IDEMGATE_MODULE_FILE) < 0) {
        c->module = NULL;
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    if (access(c->module, F_OK) != 0 &&
        access(IDEMGATE_MODULE_DIR "/" IDEMGATE_MODULE_FILE, F_OK) == 0) {
        free(c->module);
        c->module = strdup(IDEMGATE_MODULE_DIR "/" IDEMGATE_MODULE_FILE);
        if (c->module == NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        }
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

/* An IPv4 address, or an IPv6 one in brackets, as idemgate_parse_addr
 * takes them. */
static int is_ip_address(const char *host)
{
    struct in_addr a;

    return host[0] == '[' || inet_pton(AF_INET, host, &a) == 1;
}

/* --tls-cert and --tls-key: both or neither, absolute, a matching pair;
 * --upstream-ca and --upstream-insecure: only for https upstreams, not
 * both; the CA file (the system bundle by default) holds certificates. */
static int finish_tls(idemgate_conf_t *c, idemgate_err_t *err)
{
    if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             c->tls_cert ? "--tls-cert needs --tls-key FILE "
                                           "(the certificate's private key)"
                                         : "--tls-key needs --tls-cert FILE "
                                           "(the certificate of the key)");
    }
    if (make_absolute(&c->tls_cert, err) != 0 ||
        make_absolute(&c->tls_key, err) != 0 ||
        make_absolute(&c->upstream_ca, err) != 0) {
        return -1;
    }
    if (c->tls_cert != NULL &&
        idemgate_tls_check_pair(c->tls_cert, c->tls_key, err) != 0) {
        return -1;
    }
    if (!c->upstream_tls) {
        if (c->upstream_ca != NULL || c->upstream_insecure) {
            return idemgate_fail(
                err, IDEMGATE_EXIT_USAGE, "%s is only for https:// upstreams",
                c->upstream_ca ? "--upstream-ca" : "--upstream-insecure");
        }
        return 0;
    }
    if (c->upstream_insecure) {
        if (c->upstream_ca != NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--upstream-ca and --upstream-insecure "
                                 "exclude each other (verify against the "
                                 "CA, or not at all)");
        }
        fprintf(stderr, "idemgate: warning: --upstream-insecure: the "
                        "upstream's certificate and name are not verified\n");
        return 0;
    }
    if (is_ip_address(c->upstream_name)) {
        /* X509_check_host() compares DNS names (and the common name), never
         * the iPAddress entries of a certificate */
        fprintf(stderr,
                "idemgate: warning: --upstream: %s is an IP address; nginx "
                "verifies an upstream's certificate against DNS names only, "
                "so one that names the address alone is refused (use the "
                "host name the certificate carries)\n",
                c->upstream_name);
    }
    if (c->upstream_ca == NULL) {
        c->upstream_ca = strdup(IDEMGATE_DEFAULT_CA_BUNDLE);
        if (c->upstream_ca == NULL) {
            return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
        }
        return idemgate_tls_check_ca("--upstream (the system CA bundle; "
                                     "install ca-certificates or pass "
                                     "--upstream-ca FILE)",
                                     c->upstream_ca, err);
    }
    return idemgate_tls_check_ca("--upstream-ca", c->upstream_ca, err);
}

static int same_host(const idemgate_upstream_t *a, const idemgate_upstream_t *b)
{
    return strcasecmp(a->addr.host, b->addr.host) == 0;
}

/*
 * The --upstream list as servers of one nginx upstream block, which has one
 * scheme and is reached through one proxy_pass, so one prefix. An https
 * block also has one certificate name (proxy_ssl_name is not per server).
 * nginx retries a request on the next server after an error only when the
 * request was not sent, or when it counts the method as idempotent: POST
 * and PATCH are never retried once sent, PUT and DELETE would be, so they
 * cannot take part in keys with several servers.
 */
static int finish_upstreams(idemgate_conf_t *c, idemgate_err_t *err)
{
    const idemgate_list_t *urls = &c->upstream_urls;
    idemgate_upstream_t *u, *first;
    char reason[512];
    idemgate_why_t why = {reason, sizeof(reason)};
    int same_port = 1;

    if (urls->n == 0) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--upstream is required (e.g. --upstream "
                             "http://127.0.0.1:3000)");
    }
    c->upstreams = calloc(urls->n, sizeof(*c->upstreams));
    if (c->upstreams == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    c->nupstreams = urls->n;
    first = &c->upstreams[0];
    for (size_t i = 0; i < urls->n; i++) {
        u = &c->upstreams[i];
        if (idemgate_parse_upstream(urls->items[i], u, why) != 0) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE, "--upstream: %s",
                                 reason);
        }
        if (strcasecmp(c->listen.host, u->addr.host) == 0 &&
            c->listen.port == u->addr.port) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--upstream: %s:%u is the gateway's own "
                                 "--listen address",
                                 u->addr.host, u->addr.port);
        }
        if (u->tls != first->tls) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--upstream: '%s' and '%s' mix http:// and "
                                 "https:// (one scheme for every server)",
                                 urls->items[0], urls->items[i]);
        }
        if (strcmp(u->prefix, first->prefix) != 0) {
            return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                                 "--upstream: '%s' and '%s' have different "
                                 "path prefixes (one prefix for every server)",
                                 urls->items[0], urls->items[i]);
        }
        if (u->tls && !same_host(u, first)) {
            return idemgate_fail(
                err, IDEMGATE_EXIT_USAGE,
                "--upstream: '%s' and '%s' have different host names (https "
                "servers share one: their certificates are checked against it "
                "and it is the Host they get)",
                urls->items[0], urls->items[i]);
        }
        same_port = same_port && u->addr.port == first->addr.port;
    }
    if (c->nupstreams > 1 &&
        (c->methods & (IDEMGATE_M_PUT | IDEMGATE_M_DELETE))) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--methods: PUT and DELETE cannot take part with "
                             "several --upstream servers (nginx retries them "
                             "on the next server after an error, even once "
                             "sent); use one server, or POST and PATCH");
    }
    c->upstream_tls = first->tls;
    c->upstream_prefix = strdup(first->prefix);
    if (c->upstream_prefix == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    if (!c->upstream_tls) {
        return 0;
    }
    if (!same_port || first->addr.port == IDEMGATE_HTTPS_PORT) {
        c->upstream_host = strdup(first->addr.host);
    } else if (asprintf(&c->upstream_host, "%s:%u", first->addr.host,
                        first->addr.port) < 0) {
        c->upstream_host = NULL;
    }
    c->upstream_name = strdup(first->addr.host);
    if (c->upstream_host == NULL || c->upstream_name == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_FAILURE, "out of memory");
    }
    return 0;
}

static int finish(idemgate_conf_t *c, idemgate_err_t *err)
{
    char lease[32], timeout[32];

    if (c->listen.host == NULL) {
        return idemgate_fail(err, IDEMGATE_EXIT_USAGE,
                             "--listen is required (e.g. --listen "
                             "127.0.0.1:8080)");
    }
    if (finish_upstreams(c, err) != 0) {
        return -1;
    }
    if (!c->admin_off && c->admin.host == NULL) {
        c->admin.host = strdup(IDEMGATE_DEFAULT_ADMIN_HOST);
        c->admin.port = IDEMGATE_DEFAULT_ADMIN_PORT;
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
        c->lease_ms = c->upstream_timeout_ms + IDEMGATE_LEASE_MARGIN;
    } else if (c->lease_ms <= c->upstream_timeout_ms) {
        idemgate_duration_str(c->lease_ms, lease, sizeof(lease));
        idemgate_duration_str(c->upstream_timeout_ms, timeout, sizeof(timeout));
        fprintf(stderr,
                "idemgate: warning: --lease %s is not longer than "
                "--upstream-timeout %s: a slow request can be judged "
                "abandoned while it still runs\n",
                lease, timeout);
    }
    if (c->scope_none && c->scope_cookies.n > 0) {
        snprintf(err->msg, sizeof(err->msg),
                 "--scope-header none cannot be combined with --scope-cookie");
        err->status = IDEMGATE_EXIT_USAGE;
        return -1;
    }
    if (!c->scope_none && c->scope_headers.n == 0 && c->scope_cookies.n == 0 &&
        idemgate_list_add(&c->scope_headers, "Authorization",
                          IDEMGATE_FROM_DEFAULT,
                          (idemgate_why_t){err->msg, sizeof(err->msg)}) != 0) {
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
    if (c->nginx == NULL &&
        (c->nginx = strdup(IDEMGATE_DEFAULT_NGINX)) == NULL) {
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
    return finish_tls(c, err);
}

int idemgate_flags_parse(idemgate_conf_t *conf, int argc, char **argv,
                         idemgate_err_t *err)
{
    idemgate_conf_init(conf);
    if (parse_cmdline(conf, argc, argv, 1, err) != 0) {
        return -1;
    }
    if (conf->help) {
        return 0;
    }
    if (conf->config_file != NULL && parse_file(conf, err) != 0) {
        return -1;
    }
    if (parse_cmdline(conf, argc, argv, 0, err) != 0 ||
        finish(conf, err) != 0) {
        return -1;
    }
    return 0;
}

void idemgate_conf_free(idemgate_conf_t *c)
{
    free(c->listen.host);
    free(c->tls_cert);
    free(c->tls_key);
    idemgate_list_clear(&c->upstream_urls);
    for (size_t i = 0; i < c->nupstreams; i++) {
        idemgate_upstream_free(&c->upstreams[i]);
    }
    free(c->upstreams);
    free(c->upstream_prefix);
    free(c->upstream_name);
    free(c->upstream_host);
    free(c->upstream_ca);
    free(c->admin.host);
    free(c->store);
    free(c->store_dir);
    idemgate_list_clear(&c->scope_headers);
    idemgate_list_clear(&c->no_store_headers);
    idemgate_list_clear(&c->key_headers);
    free(c->error_template);
    idem_errtpl_free(c->error_tpl);
    idemgate_list_clear(&c->fp_ignore);
    idemgate_list_clear(&c->fp_headers);
    idemgate_list_clear(&c->scope_cookies);
    free(c->api_log);
    free(c->runtime_dir);
    free(c->nginx);
    free(c->module);
    free(c->config_file);
    free(c->user);
    free(c->worker_user);
    free(c->worker_group);
    memset(c, 0, sizeof(*c));
}
