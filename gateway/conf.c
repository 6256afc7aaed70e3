/*
 * conf.c — renders the nginx configuration idemgate runs: one text,
 * written from a finished idemgate_conf_t and nothing else, so that
 * --print-config shows exactly what runs.
 *
 *   idemgate_conf_t ──> main context (module, workers, pid, thread pool)
 *                   ──> http context (limits, timeouts, the upstream block
 *                       of every --upstream server, proxy, proxy_ssl_ for
 *                       an https upstream)
 *                         ├─ the API server (TLS and HTTP/2 with
 *                         │  --tls-cert): location / with the module
 *                         │  and proxy_pass, plus JSON error pages
 *                         └─ the admin server: /healthz, /metrics, /keys/
 *
 * Paths of the runtime directory are relative: nginx resolves them against
 * its prefix (-p RUNTIME), so the text does not depend on where it runs.
 * The text goes through one writer (confw.c), which indents it, quotes
 * every value that came from a person and refuses one nginx would read
 * otherwise; the error pages' bodies come from libidem
 * (idem_errbody_page, or the --error-template through idem_errtpl_render).
 */
#include "confw.h"
#include "idemgate.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* nginx waits this long at most for a connection to the upstream */
#define CONNECT_TIMEOUT_MAX (10 * IDEMGATE_SECOND)

/*
 * Where error_page sends nginx's own errors. Not a named location: nginx
 * cannot redirect a request whose request line it could not parse to one
 * ("empty URI in redirect to named location"), and those are the 400, 414
 * and 505 answers. A URI that starts with "//" is out of every client's
 * reach, because nginx merges the slashes of request URIs (merge_slashes
 * is on), while an internal redirect takes the URI as it is.
 */
#define ERROR_URI "//idemgate-error"

#define API     0x01u /* the API server */
#define ADMIN   0x02u /* the admin server */
#define API_TLS 0x04u /* the API server, when it serves TLS */

/* An error nginx itself answers, and the JSON page the gateway gives it. */
typedef struct {
    int from;           /* nginx's code */
    int status;         /* what the client gets */
    unsigned servers;   /* where nginx can meet it: API, ADMIN */
    const char *title;  /* persona style (NULL: the page of another row) */
    const char *phrase; /* ietf style: the status phrase */
} page_t;

static const page_t pages[] = {
    {400, 400, API | ADMIN, "Bad request", "Bad Request"},
    /* nginx's own code for plain HTTP sent to the TLS port; the 400 page
     * answers it */
    {497, 400, API_TLS, NULL, NULL},
    /* the API server proxies every URI */
    {404, 404, ADMIN, "Not found", "Not Found"},
    {405, 405, API | ADMIN, "Method not allowed", "Method Not Allowed"},
    {408, 408, API, "Request timeout", "Request Timeout"},
    {411, 411, API, "Length required", "Length Required"},
    {413, 413, API | ADMIN, "Request too large", "Content Too Large"},
    {414, 414, API | ADMIN, "URI too long", "URI Too Long"},
    /* nginx's own code for a header section over its buffers */
    {494, 431, API | ADMIN, "Request header fields too large",
     "Request Header Fields Too Large"},
    {500, 500, API | ADMIN, "Internal server error", "Internal Server Error"},
    {501, 501, API, "Not implemented", "Not Implemented"},
    {502, 502, API, "Bad gateway", "Bad Gateway"},
    {503, 503, API, "Service unavailable", "Service Unavailable"},
    {504, 504, API, "Gateway timeout", "Gateway Timeout"},
    {505, 505, API, "HTTP version not supported", "HTTP Version Not Supported"},
};

#define NPAGES (sizeof(pages) / sizeof(pages[0]))

/* The sentence of a page: what went wrong and, where there is one, the
 * limit that was crossed. Plain ASCII without quotes or '$'. */
static void page_details(const idemgate_conf_t *c, int status, char *out,
                         size_t len)
{
    char d[32];

    switch (status) {
    case 400:
        snprintf(out, len, "The request is not valid HTTP.");
        break;
    case 405:
        snprintf(out, len, "This method is not allowed here.");
        break;
    case 408:
        idemgate_duration_str(c->client_timeout_ms, d, sizeof(d));
        snprintf(out, len,
                 "The request did not arrive within the client timeout "
                 "of %s.",
                 d);
        break;
    case 411:
        snprintf(out, len,
                 "A request with a body needs a Content-Length header or "
                 "chunked transfer encoding.");
        break;
    case 413:
        snprintf(out, len,
                 "The request body is larger than the limit of %" PRIu64
                 " bytes.",
                 c->max_body_bytes);
        break;
    case 414:
        snprintf(out, len,
                 "The request line is larger than the limit of %" PRIu64
                 " bytes.",
                 c->max_header_bytes);
        break;
    case 431:
        snprintf(out, len,
                 "The request header section is larger than the limit of "
                 "%" PRIu64 " bytes.",
                 c->max_header_bytes);
        break;
    case 501:
        snprintf(out, len,
                 "The request uses a transfer encoding the gateway does not "
                 "implement.");
        break;
    case 502:
        snprintf(out, len,
                 "The upstream API could not be reached or sent an invalid "
                 "response.");
        break;
    case 503:
        snprintf(out, len,
                 "The gateway cannot handle the request right now. Retry "
                 "later.");
        break;
    case 504:
        idemgate_duration_str(c->upstream_timeout_ms, d, sizeof(d));
        snprintf(out, len,
                 "The upstream API did not answer within the upstream "
                 "timeout of %s.",
                 d);
        break;
    case 505:
        snprintf(out, len, "The gateway speaks HTTP/1.0 and HTTP/1.1.");
        break;
    case 404:
        snprintf(out, len,
                 "The admin server serves /healthz, /metrics and "
                 "/keys/KEY.");
        break;
    default:
        snprintf(out, len, "The gateway failed to handle the request.");
        break;
    }
}

/* "DIRECTIVE "a" "b" ...;", when the list is not empty. */
static void put_list(idemgate_confw_t *w, const char *directive,
                     const idemgate_list_t *l)
{
    if (l->n == 0) {
        return;
    }
    idemgate_confw_begin(w, directive);
    for (size_t i = 0; i < l->n; i++) {
        idemgate_confw_arg(w, IDEMGATE_CONFW_TEXT, l->items[i]);
    }
    idemgate_confw_end(w);
}

/* A size as nginx reads it: "1m", "16k" or bytes. */
static const char *size_str(uint64_t bytes, char *out, size_t len)
{
    if (bytes % IDEMGATE_MIB == 0) {
        snprintf(out, len, "%" PRIu64 "m", bytes / IDEMGATE_MIB);
    } else if (bytes % IDEMGATE_KIB == 0) {
        snprintf(out, len, "%" PRIu64 "k", bytes / IDEMGATE_KIB);
    } else {
        snprintf(out, len, "%" PRIu64, bytes);
    }
    return out;
}

static const char *duration_str(uint64_t ms, char *out, size_t len)
{
    idemgate_duration_str(ms, out, len);
    return out;
}

static idem_style_t error_style(const idemgate_conf_t *c)
{
    if (strcmp(c->error_style, "ietf") == 0) {
        return IDEM_STYLE_IETF;
    }
    if (strcmp(c->error_style, "stripe") == 0) {
        return IDEM_STYLE_STRIPE;
    }
    return IDEM_STYLE_PERSONA;
}

/*
 * "location = ERROR_URI/NNN { ... return NNN '<body>'; }": the body in the
 * error style, or through --error-template, whose text may hold anything
 * (a '$' goes through the geo put_api_server writes for it). Returns 0,
 * or -1 when out of memory (errno is set).
 */
static int put_page(idemgate_confw_t *w, const idemgate_conf_t *c,
                    const page_t *page)
{
    int status = page->status;
    char details[256];
    idem_errbody_t eb;
    int rc;

    page_details(c, status, details, sizeof(details));
    if (c->error_tpl != NULL) {
        rc = idem_errtpl_render(c->error_tpl, status, page->title, details, "",
                                0, &eb);
    } else {
        rc = idem_errbody_page(error_style(c), status, page->title,
                               page->phrase, details, &eb);
    }
    if (rc != 0) {
        errno = rc == IDEM_ENOMEM ? ENOMEM : EINVAL;
        return -1;
    }
    idemgate_confw_block(w, "location", "= " ERROR_URI "/%d", status);
    idemgate_confw_directive(w, "internal", NULL);
    if (c->error_tpl != NULL) {
        idemgate_confw_literal(w, "default_type", IDEMGATE_CONFW_TEXT,
                               eb.content_type);
        idemgate_confw_begin(w, "return");
        idemgate_confw_args(w, "%d", status);
        idemgate_confw_arg_body(w, eb.body, eb.body_len);
    } else {
        /* libidem's own type and JSON, which hold no '$' */
        idemgate_confw_directive(w, "default_type", "%s", eb.content_type);
        idemgate_confw_begin(w, "return");
        idemgate_confw_args(w, "%d", status);
        idemgate_confw_arg(w, IDEMGATE_CONFW_VALUE, eb.body);
    }
    idemgate_confw_end(w);
    idemgate_confw_close(w);
    free(eb.body);
    return 0;
}

/* error_page lines and their locations, for one server (API or ADMIN).
 * Returns 0, or -1 when out of memory (errno is set). */
static int put_error_pages(idemgate_confw_t *w, const idemgate_conf_t *c,
                           unsigned server)
{
    size_t i;

    if (server == API && c->tls_cert != NULL) {
        server |= API_TLS;
    }

    idemgate_confw_comment(w, "nginx's own errors answer in JSON; no "
                              "client's URI reaches these\n"
                              "locations: nginx merges the slashes of every "
                              "URI it receives");
    for (i = 0; i < NPAGES; i++) {
        if (pages[i].servers & server) {
            idemgate_confw_directive(w, "error_page", "%d =%d " ERROR_URI "/%d",
                                     pages[i].from, pages[i].status,
                                     pages[i].status);
        }
    }
    for (i = 0; i < NPAGES; i++) {
        if ((pages[i].servers & server) && pages[i].title != NULL) {
            idemgate_confw_blank(w);
            if (put_page(w, c, &pages[i]) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* The http variable nginx has for a header: Foo-Bar is $http_foo_bar. */
static void put_header_variable(idemgate_confw_t *w, const char *name)
{
    char var[256];
    size_t i;

    for (i = 0; name[i] != '\0'; i++) {
        if (i + 1 == sizeof(var)) {
            idemgate_confw_refuse(w, "the header name '%.40s...' is too long",
                                  name);
            return;
        }
        var[i] = name[i] == '-'                       ? '_'
                 : (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32)
                                                      : name[i];
    }
    var[i] = '\0';
    idemgate_confw_arg_variable(w, "$http_", var);
}

static void put_scope(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    idemgate_confw_begin(w, "idempotency_scope");
    if (c->scope_none) {
        idemgate_confw_args(w, "none");
    }
    for (size_t i = 0; i < c->scope_headers.n; i++) {
        put_header_variable(w, c->scope_headers.items[i]);
    }
    for (size_t i = 0; i < c->scope_cookies.n; i++) {
        idemgate_confw_arg_variable(w, "$cookie_", c->scope_cookies.items[i]);
    }
    idemgate_confw_end(w);
}

static void put_main(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    idemgate_confw_comment(w, "Written by idemgate from its flags; changes "
                              "here are lost at the next start.");
    idemgate_confw_blank(w);
    idemgate_confw_literal(w, "load_module", IDEMGATE_CONFW_TEXT, c->module);
    if (c->worker_user != NULL) {
        idemgate_confw_begin(w, "user");
        idemgate_confw_arg(w, IDEMGATE_CONFW_TEXT, c->worker_user);
        idemgate_confw_arg(w, IDEMGATE_CONFW_TEXT, c->worker_group);
        idemgate_confw_end(w);
    }
    if (c->workers == 0) {
        idemgate_confw_directive(w, "worker_processes", "auto");
    } else {
        idemgate_confw_directive(w, "worker_processes", "%u", c->workers);
    }
    idemgate_confw_directive(w, "daemon", "off");
    idemgate_confw_directive(w, "master_process", "on");
    idemgate_confw_directive(w, "pid", "nginx.pid");
    idemgate_confw_directive(w, "lock_file", "nginx.lock");
    idemgate_confw_directive(w, "error_log", "stderr notice");
    idemgate_confw_directive(w, "thread_pool", "idemgate threads=32");
    idemgate_confw_blank(w);
    idemgate_confw_block(w, "events", NULL);
    idemgate_confw_directive(w, "worker_connections", "4096");
    idemgate_confw_close(w);
    idemgate_confw_blank(w);
}

/*
 * The Host the API gets: the client's own, or, from an HTTP/1.0 client that
 * sent none, the address the client connected to, written as an HTTP/1.1
 * client would have written it. Without it nginx would send no Host at all
 * ($http_host is empty), which an HTTP/1.1 API answers with a 400 that a
 * key then stores. A wildcard --listen names the address of the connection.
 */
static void put_host_map(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    char addr[300];

    idemgate_confw_comment(w, "the Host the API gets: the client's, or "
                              "(HTTP/1.0 without Host) the\n"
                              "gateway address the client connected to");
    idemgate_confw_block(w, "map", "$http_host $idemgate_host");
    idemgate_confw_begin(w, "");
    if (strcmp(c->listen.host, "0.0.0.0") == 0) {
        idemgate_confw_args(w, "\"$server_addr:$server_port\"");
    } else if (strcmp(c->listen.host, "[::]") == 0) {
        idemgate_confw_args(w, "\"[$server_addr]:$server_port\"");
    } else {
        snprintf(addr, sizeof(addr), "%s:%u", c->listen.host, c->listen.port);
        idemgate_confw_arg(w, IDEMGATE_CONFW_VALUE, addr);
    }
    idemgate_confw_end(w);
    idemgate_confw_directive(w, "default", "$http_host");
    idemgate_confw_close(w);
    idemgate_confw_blank(w);
}

/*
 * --max-header-bytes, exactly. nginx's buffers alone cannot say it: a
 * request starts in a 1k buffer, and when that fills, only the line being
 * read moves on to a large buffer, so the complete lines left behind come
 * on top (large buffers of 16k let through up to 17k). Here the buffers are
 * only the outer bound, large enough for every section within the limit: a
 * large buffer holds everything from the start of the line it takes over,
 * and the second one serves a pipelined request that begins in the middle
 * of the first. The limit itself is $request_length, which until the body
 * is read counts the request line, the header lines and the empty line
 * that ends them, CRLFs included. It is checked first in each location, not
 * in the server: error_page's redirect to the 431 page runs the server's
 * rewrites again.
 */
#define HEADER_BUFFERS 2

/* An nginx regex that matches the decimal numbers above limit, written as
 * $request_length writes them (no leading zeros): the longer ones, and
 * those as long that are larger at the first digit that differs. */
static void above_regex(uint64_t limit, char *out, size_t len)
{
    char d[24];
    int n = snprintf(d, sizeof(d), "%" PRIu64, limit);
    size_t k = 0;

#define APPEND(...)                                                            \
    do {                                                                       \
        int m_ = snprintf(out + k, len - k, __VA_ARGS__);                      \
        k = m_ < 0 || (size_t)m_ >= len - k ? len - 1 : k + (size_t)m_;        \
    } while (0)

    APPEND("~^(?:[1-9][0-9]{%d,}", n);
    for (int i = 0; i < n; i++) {
        if (d[i] == '9') {
            continue;
        }
        APPEND("|%.*s", i, d);
        if (d[i] == '8') {
            APPEND("9");
        } else {
            APPEND("[%c-9]", d[i] + 1);
        }
        if (i + 2 == n) {
            APPEND("[0-9]");
        } else if (i + 2 < n) {
            APPEND("[0-9]{%d}", n - i - 1);
        }
    }
    APPEND(")$");
#undef APPEND
}

static void put_header_limit_map(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    char comment[128], regex[512];

    snprintf(comment, sizeof(comment),
             "1 when the header section is over %" PRIu64
             " bytes (read before the body)",
             c->max_header_bytes);
    idemgate_confw_comment(w, comment);
    idemgate_confw_block(w, "map",
                         "$request_length $idemgate_header_too_large");
    above_regex(c->max_header_bytes, regex, sizeof(regex));
    idemgate_confw_directive(w, regex, "1");
    idemgate_confw_begin(w, "default");
    idemgate_confw_arg(w, IDEMGATE_CONFW_SYNTAX, "");
    idemgate_confw_end(w);
    idemgate_confw_close(w);
    idemgate_confw_blank(w);
}

/* First in every location a client can reach: a header section over the
 * limit gets nginx's own answer for one, the 431 page. */
static void put_header_limit_check(idemgate_confw_t *w)
{
    idemgate_confw_block(w, "if", "($idemgate_header_too_large)");
    idemgate_confw_directive(w, "return", "494");
    idemgate_confw_close(w);
}

/* The proxy_ssl_ settings of an https upstream: SNI and the certificate
 * verified against the CA file for the upstream's name, unless
 * --upstream-insecure. nginx 1.22's defaults need help: its protocols
 * leave TLS 1.3 out, and its depth of 1 refuses a chain with an
 * intermediate CA, as most public ones are. */
static void put_upstream_tls(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    idemgate_confw_blank(w);
    idemgate_confw_comment(w, "the https upstream");
    idemgate_confw_directive(w, "proxy_ssl_protocols", "TLSv1.2 TLSv1.3");
    idemgate_confw_directive(w, "proxy_ssl_server_name", "on");
    idemgate_confw_literal(w, "proxy_ssl_name", IDEMGATE_CONFW_VALUE,
                           c->upstream_name);
    idemgate_confw_directive(w, "proxy_ssl_session_reuse", "on");
    if (c->upstream_insecure) {
        idemgate_confw_comment(w, "--upstream-insecure: neither the "
                                  "certificate nor the name is checked");
        idemgate_confw_directive(w, "proxy_ssl_verify", "off");
        return;
    }
    idemgate_confw_directive(w, "proxy_ssl_verify", "on");
    idemgate_confw_directive(w, "proxy_ssl_verify_depth", "4");
    idemgate_confw_literal(w, "proxy_ssl_trusted_certificate",
                           IDEMGATE_CONFW_VALUE, c->upstream_ca);
}

/* TLS on the API listener: HTTP/2 by ALPN beside HTTP/1.1, TLS 1.2 and
 * 1.3 only, sessions resumed from a cache all workers share. */
static void put_listen_tls(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    idemgate_confw_directive(w, "listen", "%s:%u ssl http2", c->listen.host,
                             c->listen.port);
    idemgate_confw_literal(w, "ssl_certificate", IDEMGATE_CONFW_VALUE,
                           c->tls_cert);
    idemgate_confw_literal(w, "ssl_certificate_key", IDEMGATE_CONFW_VALUE,
                           c->tls_key);
    idemgate_confw_directive(w, "ssl_protocols", "TLSv1.2 TLSv1.3");
    idemgate_confw_directive(w, "ssl_prefer_server_ciphers", "off");
    idemgate_confw_directive(w, "ssl_session_cache", "shared:idemgate_tls:10m");
    idemgate_confw_directive(w, "ssl_session_timeout", "1h");
    idemgate_confw_directive(w, "ssl_session_tickets", "off");
}

static void put_http_common(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    char body[32], header[32], client[32], upstream[32], connect[32];

    idemgate_confw_directive(w, "access_log", "off");
    idemgate_confw_directive(w, "server_tokens", "off");
    idemgate_confw_directive(
        w, "log_format", "idemgate_api escape=none '$idempotency_log_entry'");
    idemgate_confw_blank(w);

    size_str(c->max_body_bytes, body, sizeof(body));
    size_str(c->max_header_bytes, header, sizeof(header));
    duration_str(c->client_timeout_ms, client, sizeof(client));
    idemgate_confw_comment(w, "requests: the body stays in memory; a header "
                              "section within the limit\n"
                              "always fits the buffers");
    idemgate_confw_directive(w, "client_max_body_size", "%s", body);
    idemgate_confw_directive(w, "client_body_buffer_size", "%s", body);
    idemgate_confw_directive(w, "client_header_buffer_size", "1k");
    idemgate_confw_directive(w, "large_client_header_buffers", "%d %s",
                             HEADER_BUFFERS, header);
    idemgate_confw_directive(w, "client_header_timeout", "%s", client);
    idemgate_confw_directive(w, "client_body_timeout", "%s", client);
    idemgate_confw_directive(w, "send_timeout", "%s", client);
    idemgate_confw_directive(w, "keepalive_timeout", "65s");
    idemgate_confw_blank(w);
    put_header_limit_map(w, c);

    idemgate_confw_comment(w, "temporary files live in the runtime directory");
    idemgate_confw_directive(w, "client_body_temp_path", "client_body_temp");
    idemgate_confw_directive(w, "proxy_temp_path", "proxy_temp");
    idemgate_confw_directive(w, "fastcgi_temp_path", "fastcgi_temp");
    idemgate_confw_directive(w, "uwsgi_temp_path", "uwsgi_temp");
    idemgate_confw_directive(w, "scgi_temp_path", "scgi_temp");
    idemgate_confw_blank(w);

    idemgate_confw_literal(w, "idempotency_store", IDEMGATE_CONFW_TEXT,
                           c->store);
    idemgate_confw_directive(w, "idempotency_thread_pool", "idemgate");
    idemgate_confw_comment(w, "$request_id made by the module: unique, and "
                              "cheaper than OpenSSL's RAND_bytes");
    idemgate_confw_directive(w, "idempotency_fast_request_id", "on");
    idemgate_confw_blank(w);

    put_host_map(w, c);
    duration_str(c->upstream_timeout_ms, upstream, sizeof(upstream));
    duration_str(c->upstream_timeout_ms < CONNECT_TIMEOUT_MAX
                     ? c->upstream_timeout_ms
                     : CONNECT_TIMEOUT_MAX,
                 connect, sizeof(connect));
    idemgate_confw_comment(w, "every --upstream server; nginx tries the next "
                              "one after a failed connect");
    idemgate_confw_block(w, "upstream", "idemgate_upstream");
    for (size_t i = 0; i < c->nupstreams; i++) {
        idemgate_confw_directive(w, "server", "%s:%u",
                                 c->upstreams[i].addr.host,
                                 c->upstreams[i].addr.port);
    }
    /* idle connections kept per worker: enough for every client connection
     * of a busy worker, so that none is opened and closed per request (a
     * pool smaller than the concurrency churns through sockets, each left
     * in TIME_WAIT); and many requests per connection before nginx closes
     * it */
    idemgate_confw_directive(w, "keepalive", "512");
    idemgate_confw_directive(w, "keepalive_requests", "10000");
    /* below the idle timeout of common API servers (5 s for Node.js): a
     * POST sent on a connection the API closed while idle cannot be
     * retried and would be stored as an unknown outcome */
    idemgate_confw_directive(w, "keepalive_timeout", "4s");
    idemgate_confw_close(w);
    idemgate_confw_blank(w);

    idemgate_confw_directive(w, "proxy_http_version", "1.1");
    idemgate_confw_begin(w, "proxy_set_header");
    idemgate_confw_args(w, "Connection");
    idemgate_confw_arg(w, IDEMGATE_CONFW_SYNTAX, "");
    idemgate_confw_end(w);
    if (c->upstream_tls) {
        /* an https API answers to its own name, not the gateway's */
        idemgate_confw_begin(w, "proxy_set_header");
        idemgate_confw_args(w, "Host");
        idemgate_confw_arg(w, IDEMGATE_CONFW_VALUE, c->upstream_host);
        idemgate_confw_end(w);
        idemgate_confw_directive(w, "proxy_set_header",
                                 "X-Forwarded-Host $idemgate_host");
    } else {
        idemgate_confw_directive(w, "proxy_set_header", "Host $idemgate_host");
    }
    idemgate_confw_directive(w, "proxy_set_header",
                             "X-Forwarded-For $proxy_add_x_forwarded_for");
    idemgate_confw_directive(w, "proxy_set_header",
                             "X-Forwarded-Proto $scheme");
    idemgate_confw_directive(w, "proxy_set_header", "X-Request-Id $request_id");
    idemgate_confw_directive(w, "proxy_read_timeout", "%s", upstream);
    idemgate_confw_directive(w, "proxy_send_timeout", "%s", upstream);
    idemgate_confw_directive(w, "proxy_connect_timeout", "%s", connect);
    /* nginx's default, written out because it is what makes several
     * servers safe: a connect that failed (nothing sent) goes to the next
     * server; a request that was sent is retried only when nginx counts
     * its method as idempotent, never a POST or PATCH (no non_idempotent
     * here), and flags.c refuses PUT and DELETE as key methods with
     * several servers */
    idemgate_confw_directive(w, "proxy_next_upstream", "error timeout");
    idemgate_confw_directive(w, "proxy_ignore_client_abort", "on");
    idemgate_confw_directive(w, "proxy_buffering", "on");
    idemgate_confw_directive(w, "proxy_max_temp_file_size", "0");
    if (c->upstream_tls) {
        put_upstream_tls(w, c);
    }
}

/* The API's location: the module, then proxy_pass. */
static void put_api_location(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    static const struct {
        unsigned bit;
        const char *name;
    } methods[] = {{IDEMGATE_M_POST, "POST"},
                   {IDEMGATE_M_PATCH, "PATCH"},
                   {IDEMGATE_M_PUT, "PUT"},
                   {IDEMGATE_M_DELETE, "DELETE"}};
    const char *scheme = c->upstream_tls ? "https" : "http";
    char d[32];

    idemgate_confw_block(w, "location", "/");
    put_header_limit_check(w);
    idemgate_confw_directive(w, "idempotency", "on");
    idemgate_confw_begin(w, "idempotency_methods");
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (c->methods & methods[i].bit) {
            idemgate_confw_args(w, "%s", methods[i].name);
        }
    }
    idemgate_confw_end(w);
    put_scope(w, c);
    idemgate_confw_directive(w, "idempotency_ttl", "%s",
                             duration_str(c->ttl_ms, d, sizeof(d)));
    idemgate_confw_directive(w, "idempotency_wait", "%s",
                             duration_str(c->wait_ms, d, sizeof(d)));
    idemgate_confw_directive(w, "idempotency_lease", "%s",
                             duration_str(c->lease_ms, d, sizeof(d)));
    idemgate_confw_directive(w, "idempotency_on_unknown", "%s",
                             c->on_unknown_release ? "release" : "store");
    idemgate_confw_directive(w, "idempotency_error_style", "%s",
                             c->error_style);
    idemgate_confw_directive(w, "idempotency_require_key", "%s",
                             c->require_key ? "on" : "off");
    idemgate_confw_directive(w, "idempotency_max_response_size", "%s",
                             size_str(c->max_response_bytes, d, sizeof(d)));
    put_list(w, "idempotency_no_store_header", &c->no_store_headers);
    put_list(w, "idempotency_key_header", &c->key_headers);
    put_list(w, "idempotency_fingerprint_ignore", &c->fp_ignore);
    put_list(w, "idempotency_fingerprint_header", &c->fp_headers);
    idemgate_confw_directive(w, "idempotency_stream", "%s",
                             c->stream ? c->stream : "auto");
    if (c->error_template != NULL) {
        idemgate_confw_literal(w, "idempotency_error_template",
                               IDEMGATE_CONFW_VALUE, c->error_template);
    }
    if (c->n_release_statuses > 0) {
        idemgate_confw_begin(w, "idempotency_release_status");
        for (size_t i = 0; i < c->n_release_statuses; i++) {
            idemgate_confw_args(w, "%u", c->release_statuses[i]);
        }
        idemgate_confw_end(w);
    }
    idemgate_confw_begin(w, "proxy_pass");
    if (c->upstream_prefix[0] != '\0') {
        /* the URI as the client sent it, behind the prefix */
        snprintf(d, sizeof(d), "%s://idemgate_upstream", scheme);
        idemgate_confw_arg_around(w, d, c->upstream_prefix, "$request_uri");
    } else {
        idemgate_confw_args(w, "%s://idemgate_upstream", scheme);
    }
    idemgate_confw_end(w);
    idemgate_confw_close(w);
}

static int put_api_server(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    if (c->error_tpl != NULL) {
        /* a '$' in an error page: nginx has no other way to write one */
        idemgate_confw_blank(w);
        idemgate_confw_block(w, "geo", "$idemgate_dollar");
        idemgate_confw_literal(w, "default", IDEMGATE_CONFW_TEXT, "$");
        idemgate_confw_close(w);
    }
    idemgate_confw_blank(w);
    idemgate_confw_block(w, "server", NULL);
    if (c->tls_cert != NULL) {
        put_listen_tls(w, c);
    } else {
        idemgate_confw_directive(w, "listen", "%s:%u", c->listen.host,
                                 c->listen.port);
    }
    if (c->api_log != NULL) {
        idemgate_confw_begin(w, "access_log");
        idemgate_confw_arg(w, IDEMGATE_CONFW_VALUE, c->api_log);
        idemgate_confw_args(w, "idemgate_api if=$idempotency_api_log");
        idemgate_confw_end(w);
    }
    idemgate_confw_blank(w);
    put_api_location(w, c);
    idemgate_confw_blank(w);
    if (put_error_pages(w, c, API) != 0) {
        return -1;
    }
    idemgate_confw_close(w);
    return 0;
}

static int put_admin_server(idemgate_confw_t *w, const idemgate_conf_t *c)
{
    if (c->admin_off) {
        return 0;
    }
    idemgate_confw_blank(w);
    idemgate_confw_comment(w, "the admin server: health, metrics, key "
                              "inspection");
    idemgate_confw_block(w, "server", NULL);
    idemgate_confw_directive(w, "listen", "%s:%u", c->admin.host,
                             c->admin.port);
    idemgate_confw_blank(w);

    idemgate_confw_block(w, "location", "= /healthz");
    put_header_limit_check(w);
    idemgate_confw_directive(w, "idempotency_health", NULL);
    idemgate_confw_close(w);
    idemgate_confw_blank(w);

    idemgate_confw_block(w, "location", "= /metrics");
    put_header_limit_check(w);
    idemgate_confw_directive(w, "idempotency_metrics", NULL);
    idemgate_confw_close(w);
    idemgate_confw_blank(w);

    idemgate_confw_block(w, "location", "/keys/");
    put_header_limit_check(w);
    put_scope(w, c);
    /* shown by the key inspection */
    put_list(w, "idempotency_fingerprint_ignore", &c->fp_ignore);
    put_list(w, "idempotency_fingerprint_header", &c->fp_headers);
    idemgate_confw_directive(w, "idempotency_admin", NULL);
    idemgate_confw_close(w);
    idemgate_confw_blank(w);

    idemgate_confw_block(w, "location", "/");
    put_header_limit_check(w);
    idemgate_confw_directive(w, "return", "404");
    idemgate_confw_close(w);
    idemgate_confw_blank(w);

    if (put_error_pages(w, c, ADMIN) != 0) {
        return -1;
    }
    idemgate_confw_close(w);
    return 0;
}

int idemgate_conf_render(const idemgate_conf_t *conf, char **out,
                         size_t *outlen, idemgate_err_t *err)
{
    idemgate_confw_t w;
    FILE *f;
    char *text = NULL;
    size_t len = 0;

    f = open_memstream(&text, &len);
    if (f == NULL) {
        goto fail;
    }
    idemgate_confw_init(&w, f);
    put_main(&w, conf);
    idemgate_confw_block(&w, "http", NULL);
    put_http_common(&w, conf);
    if (put_api_server(&w, conf) != 0 || put_admin_server(&w, conf) != 0) {
        int e = errno;

        fclose(f);
        errno = e;
        goto fail;
    }
    idemgate_confw_close(&w);
    if (idemgate_confw_finish(&w, err) != 0) {
        fclose(f);
        free(text);
        return -1;
    }
    if (fclose(f) != 0) {
        goto fail;
    }
    *out = text;
    *outlen = len;
    return 0;

fail:
    free(text);
    return idemgate_fail(err, IDEMGATE_EXIT_FAILURE,
                         "cannot build the nginx configuration: %s",
                         strerror(errno));
}
