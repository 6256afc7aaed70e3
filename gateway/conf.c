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
 * Every value that came from a person is written as a quoted nginx string.
 */
#include "idemgate.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IETF_TYPE "about:blank"

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
    const char *title;  /* persona style */
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

/* s as an nginx string in double quotes. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

/* "            DIRECTIVE "a" "b" ...;", when the list is not empty. */
static void put_list(FILE *f, const char *directive, const idemgate_list_t *l)
{
    if (l->n == 0) {
        return;
    }
    fprintf(f, "            %s", directive);
    for (size_t i = 0; i < l->n; i++) {
        fputc(' ', f);
        put_quoted(f, l->items[i]);
    }
    fputs(";\n", f);
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

/* "location = ERROR_URI/NNN { ... return NNN '<json>'; }", in the error
 * style. */
/*
 * s as the inside of a single-quoted nginx string: '\' and '\'' escaped,
 * CR, LF and TAB as \r, \n and \t, and '$', which nginx would read as a
 * variable, as ${idemgate_dollar} (a geo whose value is "$").
 */
static void put_nginx_text(FILE *f, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '\\':
        case '\'':
            fputc('\\', f);
            fputc(s[i], f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '$':
            fputs("${idemgate_dollar}", f);
            break;
        default:
            fputc(s[i], f);
        }
    }
}

/* The page through --error-template; 0, or -1 when out of memory. */
static int put_template_page(FILE *f, const idemgate_conf_t *c, int status,
                             const char *title, const char *details)
{
    idem_errbody_t eb;

    if (idem_errtpl_render(c->error_tpl, status, title, details, "", 0, &eb) !=
        0) {
        return -1;
    }
    fputs("            default_type ", f);
    put_quoted(f, eb.content_type);
    fprintf(f, ";\n            return %d '", status);
    put_nginx_text(f, eb.body, eb.body_len);
    fputs("';\n", f);
    free(eb.body);
    return 0;
}

/* Returns 0, or -1 when out of memory (errno is set). */
static int put_page(FILE *f, const idemgate_conf_t *c, const page_t *page)
{
    int status = page->status;
    const char *title = page->title, *phrase = page->phrase;
    char details[256];

    page_details(c, status, details, sizeof(details));
    fprintf(f,
            "        location = " ERROR_URI "/%d {\n"
            "            internal;\n",
            status);
    if (c->error_tpl != NULL) {
        if (put_template_page(f, c, status, title, details) != 0) {
            return -1;
        }
    } else if (strcmp(c->error_style, "ietf") == 0) {
        fprintf(f,
                "            default_type application/problem+json;\n"
                "            return %d '{\"type\":\"" IETF_TYPE
                "\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}';\n",
                status, phrase, status, details);
    } else if (strcmp(c->error_style, "stripe") == 0) {
        /* nginx's own errors: the client's request (4xx) or the gateway
           and its upstream (5xx), as Stripe's SDKs tell them apart */
        fprintf(f,
                "            default_type application/json;\n"
                "            return %d '{\"error\":{\"type\":\"%s\","
                "\"message\":\"%s\"}}';\n",
                status, status < 500 ? "invalid_request_error" : "api_error",
                details);
    } else {
        fprintf(f,
                "            default_type application/json;\n"
                "            return %d '{\"errors\":[{\"title\":\"%s\","
                "\"details\":\"%s\"}]}';\n",
                status, title, details);
    }
    fprintf(f, "        }\n");
    return 0;
}

/* error_page lines and their locations, for one server (API or ADMIN).
 * Returns 0, or -1 when out of memory (errno is set). */
static int put_error_pages(FILE *f, const idemgate_conf_t *c, unsigned server)
{
    size_t i;

    if (server == API && c->tls_cert != NULL) {
        server |= API_TLS;
    }

    fprintf(f, "        # nginx's own errors answer in JSON; no client's URI "
               "reaches these\n        # locations: nginx merges the "
               "slashes of every URI it receives\n");
    for (i = 0; i < NPAGES; i++) {
        if (pages[i].servers & server) {
            fprintf(f, "        error_page %d =%d " ERROR_URI "/%d;\n",
                    pages[i].from, pages[i].status, pages[i].status);
        }
    }
    for (i = 0; i < NPAGES; i++) {
        if ((pages[i].servers & server) && pages[i].title != NULL) {
            fputc('\n', f);
            if (put_page(f, c, &pages[i]) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* The http variable nginx has for a header: Foo-Bar is $http_foo_bar. */
static void put_header_variable(FILE *f, const char *name)
{
    fputs("$http_", f);
    for (; *name; name++) {
        fputc(*name == '-'
                  ? '_'
                  : (*name >= 'A' && *name <= 'Z' ? *name + 32 : *name),
              f);
    }
}

static void put_scope(FILE *f, const idemgate_conf_t *c)
{
    fputs("            idempotency_scope", f);
    if (c->scope_none) {
        fputs(" none", f);
    }
    for (size_t i = 0; i < c->scope_headers.n; i++) {
        fputc(' ', f);
        put_header_variable(f, c->scope_headers.items[i]);
    }
    for (size_t i = 0; i < c->scope_cookies.n; i++) {
        fprintf(f, " $cookie_%s", c->scope_cookies.items[i]);
    }
    fputs(";\n", f);
}

static void put_main(FILE *f, const idemgate_conf_t *c)
{
    fprintf(f, "# Written by idemgate from its flags; changes here are lost "
               "at the next start.\n\n");
    fputs("load_module ", f);
    put_quoted(f, c->module);
    fputs(";\n", f);
    if (c->worker_user != NULL) {
        fputs("user ", f);
        put_quoted(f, c->worker_user);
        fputc(' ', f);
        put_quoted(f, c->worker_group);
        fputs(";\n", f);
    }
    if (c->workers == 0) {
        fprintf(f, "worker_processes auto;\n");
    } else {
        fprintf(f, "worker_processes %u;\n", c->workers);
    }
    fprintf(f, "daemon off;\n"
               "master_process on;\n"
               "pid nginx.pid;\n"
               "lock_file nginx.lock;\n"
               "error_log stderr notice;\n"
               "thread_pool idemgate threads=32;\n"
               "\n"
               "events {\n"
               "    worker_connections 4096;\n"
               "}\n\n");
}

/*
 * The Host the API gets: the client's own, or, from an HTTP/1.0 client that
 * sent none, the address the client connected to, written as an HTTP/1.1
 * client would have written it. Without it nginx would send no Host at all
 * ($http_host is empty), which an HTTP/1.1 API answers with a 400 that a
 * key then stores. A wildcard --listen names the address of the connection.
 */
static void put_host_map(FILE *f, const idemgate_conf_t *c)
{
    fputs("    # the Host the API gets: the client's, or (HTTP/1.0 without "
          "Host) the\n"
          "    # gateway address the client connected to\n"
          "    map $http_host $idemgate_host {\n"
          "        \"\" ",
          f);
    if (strcmp(c->listen.host, "0.0.0.0") == 0) {
        fputs("\"$server_addr:$server_port\"", f);
    } else if (strcmp(c->listen.host, "[::]") == 0) {
        fputs("\"[$server_addr]:$server_port\"", f);
    } else {
        fprintf(f, "\"%s:%u\"", c->listen.host, c->listen.port);
    }
    fputs(";\n"
          "        default $http_host;\n"
          "    }\n\n",
          f);
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
static void put_above_regex(FILE *f, uint64_t limit)
{
    char d[24];
    int n = snprintf(d, sizeof(d), "%" PRIu64, limit);

    fprintf(f, "\"~^(?:[1-9][0-9]{%d,}", n);
    for (int i = 0; i < n; i++) {
        if (d[i] == '9') {
            continue;
        }
        fprintf(f, "|%.*s", i, d);
        if (d[i] == '8') {
            fputc('9', f);
        } else {
            fprintf(f, "[%c-9]", d[i] + 1);
        }
        if (i + 2 == n) {
            fputs("[0-9]", f);
        } else if (i + 2 < n) {
            fprintf(f, "[0-9]{%d}", n - i - 1);
        }
    }
    fputs(")$\"", f);
}

static void put_header_limit_map(FILE *f, const idemgate_conf_t *c)
{
    fprintf(f,
            "    # 1 when the header section is over %" PRIu64
            " bytes (read before the body)\n"
            "    map $request_length $idemgate_header_too_large {\n"
            "        ",
            c->max_header_bytes);
    put_above_regex(f, c->max_header_bytes);
    fputs(" 1;\n"
          "        default \"\";\n"
          "    }\n\n",
          f);
}

/* First in every location a client can reach: a header section over the
 * limit gets nginx's own answer for one, the 431 page. */
static void put_header_limit_check(FILE *f)
{
    fputs("            if ($idemgate_header_too_large) {\n"
          "                return 494;\n"
          "            }\n",
          f);
}

/* The proxy_ssl_ settings of an https upstream: SNI and the certificate
 * verified against the CA file for the upstream's name, unless
 * --upstream-insecure. nginx 1.22's defaults need help: its protocols
 * leave TLS 1.3 out, and its depth of 1 refuses a chain with an
 * intermediate CA, as most public ones are. */
static void put_upstream_tls(FILE *f, const idemgate_conf_t *c)
{
    fputs("\n    # the https upstream\n"
          "    proxy_ssl_protocols TLSv1.2 TLSv1.3;\n"
          "    proxy_ssl_server_name on;\n"
          "    proxy_ssl_name ",
          f);
    put_quoted(f, c->upstream_name);
    fputs(";\n    proxy_ssl_session_reuse on;\n", f);
    if (c->upstream_insecure) {
        fputs("    # --upstream-insecure: neither the certificate nor the "
              "name is checked\n"
              "    proxy_ssl_verify off;\n",
              f);
        return;
    }
    fputs("    proxy_ssl_verify on;\n"
          "    proxy_ssl_verify_depth 4;\n"
          "    proxy_ssl_trusted_certificate ",
          f);
    put_quoted(f, c->upstream_ca);
    fputs(";\n", f);
}

/* TLS on the API listener: HTTP/2 by ALPN beside HTTP/1.1, TLS 1.2 and
 * 1.3 only, sessions resumed from a cache all workers share. */
static void put_listen_tls(FILE *f, const idemgate_conf_t *c)
{
    fprintf(f, "        listen %s:%u ssl http2;\n", c->listen.host,
            c->listen.port);
    fputs("        ssl_certificate ", f);
    put_quoted(f, c->tls_cert);
    fputs(";\n        ssl_certificate_key ", f);
    put_quoted(f, c->tls_key);
    fputs(";\n"
          "        ssl_protocols TLSv1.2 TLSv1.3;\n"
          "        ssl_prefer_server_ciphers off;\n"
          "        ssl_session_cache shared:idemgate_tls:10m;\n"
          "        ssl_session_timeout 1h;\n"
          "        ssl_session_tickets off;\n",
          f);
}

static void put_http_common(FILE *f, const idemgate_conf_t *c)
{
    char body[32], header[32], client[32], upstream[32], connect[32];

    fprintf(f, "http {\n"
               "    access_log off;\n"
               "    server_tokens off;\n"
               "    log_format idemgate_api escape=none "
               "'$idempotency_log_entry';\n\n");

    size_str(c->max_body_bytes, body, sizeof(body));
    size_str(c->max_header_bytes, header, sizeof(header));
    duration_str(c->client_timeout_ms, client, sizeof(client));
    fprintf(f,
            "    # requests: the body stays in memory; a header section "
            "within the limit\n"
            "    # always fits the buffers\n"
            "    client_max_body_size %s;\n"
            "    client_body_buffer_size %s;\n"
            "    client_header_buffer_size 1k;\n"
            "    large_client_header_buffers %d %s;\n"
            "    client_header_timeout %s;\n"
            "    client_body_timeout %s;\n"
            "    send_timeout %s;\n"
            "    keepalive_timeout 65s;\n\n",
            body, body, HEADER_BUFFERS, header, client, client, client);
    put_header_limit_map(f, c);

    fprintf(f, "    # temporary files live in the runtime directory\n"
               "    client_body_temp_path client_body_temp;\n"
               "    proxy_temp_path proxy_temp;\n"
               "    fastcgi_temp_path fastcgi_temp;\n"
               "    uwsgi_temp_path uwsgi_temp;\n"
               "    scgi_temp_path scgi_temp;\n\n");

    fputs("    idempotency_store ", f);
    put_quoted(f, c->store);
    fputs(";\n    idempotency_thread_pool idemgate;\n\n", f);

    put_host_map(f, c);
    duration_str(c->upstream_timeout_ms, upstream, sizeof(upstream));
    duration_str(c->upstream_timeout_ms < CONNECT_TIMEOUT_MAX
                     ? c->upstream_timeout_ms
                     : CONNECT_TIMEOUT_MAX,
                 connect, sizeof(connect));
    fputs("    # every --upstream server; nginx tries the next one after a "
          "failed connect\n"
          "    upstream idemgate_upstream {\n",
          f);
    for (size_t i = 0; i < c->nupstreams; i++) {
        fprintf(f, "        server %s:%u;\n", c->upstreams[i].addr.host,
                c->upstreams[i].addr.port);
    }
    fputs("        keepalive 64;\n"
          /* below the idle timeout of common API servers (5 s for
           * Node.js): a POST sent on a connection the API closed while
           * idle cannot be retried and would be stored as an unknown
           * outcome */
          "        keepalive_timeout 4s;\n"
          "    }\n\n"
          "    proxy_http_version 1.1;\n"
          "    proxy_set_header Connection \"\";\n",
          f);
    if (c->upstream_tls) {
        /* an https API answers to its own name, not the gateway's */
        fputs("    proxy_set_header Host ", f);
        put_quoted(f, c->upstream_host);
        fputs(";\n    proxy_set_header X-Forwarded-Host $idemgate_host;\n", f);
    } else {
        fputs("    proxy_set_header Host $idemgate_host;\n", f);
    }
    fprintf(f,
            "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "    proxy_set_header X-Forwarded-Proto $scheme;\n"
            "    proxy_set_header X-Request-Id $request_id;\n"
            "    proxy_read_timeout %s;\n"
            "    proxy_send_timeout %s;\n"
            "    proxy_connect_timeout %s;\n"
            /* nginx's default, written out because it is what makes
             * several servers safe: a connect that failed (nothing sent)
             * goes to the next server; a request that was sent is retried
             * only when nginx counts its method as idempotent, never a
             * POST or PATCH (no non_idempotent here), and flags.c refuses
             * PUT and DELETE as key methods with several servers */
            "    proxy_next_upstream error timeout;\n"
            "    proxy_ignore_client_abort on;\n"
            "    proxy_buffering on;\n"
            "    proxy_max_temp_file_size 0;\n",
            upstream, upstream, connect);
    if (c->upstream_tls) {
        put_upstream_tls(f, c);
    }
}

static int put_api_server(FILE *f, const idemgate_conf_t *c)
{
    static const struct {
        unsigned bit;
        const char *name;
    } methods[] = {{IDEMGATE_M_POST, "POST"},
                   {IDEMGATE_M_PATCH, "PATCH"},
                   {IDEMGATE_M_PUT, "PUT"},
                   {IDEMGATE_M_DELETE, "DELETE"}};
    const char *scheme = c->upstream_tls ? "https" : "http";
    char ttl[32], wait[32], lease[32], max[32];

    if (c->error_tpl != NULL) {
        /* a '$' in an error page: nginx has no other way to write one */
        fputs("\n    geo $idemgate_dollar { default \"$\"; }\n", f);
    }
    fputs("\n    server {\n", f);
    if (c->tls_cert != NULL) {
        put_listen_tls(f, c);
    } else {
        fprintf(f, "        listen %s:%u;\n", c->listen.host, c->listen.port);
    }
    if (c->api_log != NULL) {
        fputs("        access_log ", f);
        put_quoted(f, c->api_log);
        fputs(" idemgate_api if=$idempotency_api_log;\n", f);
    }
    fputs("\n        location / {\n", f);
    put_header_limit_check(f);
    fputs("            idempotency on;\n"
          "            idempotency_methods",
          f);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (c->methods & methods[i].bit) {
            fprintf(f, " %s", methods[i].name);
        }
    }
    fputs(";\n", f);
    put_scope(f, c);
    fprintf(f,
            "            idempotency_ttl %s;\n"
            "            idempotency_wait %s;\n"
            "            idempotency_lease %s;\n"
            "            idempotency_on_unknown %s;\n"
            "            idempotency_error_style %s;\n"
            "            idempotency_require_key %s;\n"
            "            idempotency_max_response_size %s;\n",
            duration_str(c->ttl_ms, ttl, sizeof(ttl)),
            duration_str(c->wait_ms, wait, sizeof(wait)),
            duration_str(c->lease_ms, lease, sizeof(lease)),
            c->on_unknown_release ? "release" : "store", c->error_style,
            c->require_key ? "on" : "off",
            size_str(c->max_response_bytes, max, sizeof(max)));
    put_list(f, "idempotency_no_store_header", &c->no_store_headers);
    put_list(f, "idempotency_key_header", &c->key_headers);
    put_list(f, "idempotency_fingerprint_ignore", &c->fp_ignore);
    put_list(f, "idempotency_fingerprint_header", &c->fp_headers);
    fprintf(f, "            idempotency_stream %s;\n",
            c->stream ? c->stream : "auto");
    if (c->error_template != NULL) {
        fputs("            idempotency_error_template ", f);
        put_quoted(f, c->error_template);
        fputs(";\n", f);
    }
    if (c->n_release_statuses > 0) {
        fputs("            idempotency_release_status", f);
        for (size_t i = 0; i < c->n_release_statuses; i++) {
            fprintf(f, " %u", c->release_statuses[i]);
        }
        fputs(";\n", f);
    }
    if (c->upstream_prefix[0] != '\0') {
        /* the URI as the client sent it, behind the prefix (which has
         * neither quotes nor backslashes: settings.c checked) */
        fprintf(f,
                "            proxy_pass "
                "\"%s://idemgate_upstream%s$request_uri\";\n",
                scheme, c->upstream_prefix);
    } else {
        fprintf(f, "            proxy_pass %s://idemgate_upstream;\n", scheme);
    }
    fputs("        }\n\n", f);
    if (put_error_pages(f, c, API) != 0) {
        return -1;
    }
    fputs("    }\n", f);
    return 0;
}

static int put_admin_server(FILE *f, const idemgate_conf_t *c)
{
    if (c->admin_off) {
        return 0;
    }
    fprintf(f,
            "\n    # the admin server: health, metrics, key inspection\n"
            "    server {\n"
            "        listen %s:%u;\n\n",
            c->admin.host, c->admin.port);
    fputs("        location = /healthz {\n", f);
    put_header_limit_check(f);
    fputs("            idempotency_health;\n"
          "        }\n\n"
          "        location = /metrics {\n",
          f);
    put_header_limit_check(f);
    fputs("            idempotency_metrics;\n"
          "        }\n\n"
          "        location /keys/ {\n",
          f);
    put_header_limit_check(f);
    put_scope(f, c);
    /* shown by the key inspection */
    put_list(f, "idempotency_fingerprint_ignore", &c->fp_ignore);
    put_list(f, "idempotency_fingerprint_header", &c->fp_headers);
    fputs("            idempotency_admin;\n"
          "        }\n\n"
          "        location / {\n",
          f);
    put_header_limit_check(f);
    fputs("            return 404;\n"
          "        }\n\n",
          f);
    if (put_error_pages(f, c, ADMIN) != 0) {
        return -1;
    }
    fputs("    }\n", f);
    return 0;
}

int idemgate_conf_render(const idemgate_conf_t *conf, char **out,
                         size_t *outlen, idemgate_err_t *err)
{
    FILE *f;
    char *text = NULL;
    size_t len = 0;

    f = open_memstream(&text, &len);
    if (f == NULL) {
        goto fail;
    }
    put_main(f, conf);
    put_http_common(f, conf);
    if (put_api_server(f, conf) != 0 || put_admin_server(f, conf) != 0) {
        fclose(f);
        errno = ENOMEM;
        goto fail;
    }
    fputs("}\n", f);
    if (ferror(f)) {
        fclose(f);
        goto fail;
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
