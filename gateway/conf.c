/*
 * conf.c — renders the nginx configuration idemgate runs: one text,
 * written from a finished idemgate_conf_t and nothing else, so that
 * --print-config shows exactly what runs.
 *
 *   idemgate_conf_t ──> main context (module, workers, pid, thread pool)
 *                   ──> http context (limits, timeouts, upstream, proxy)
 *                         ├─ the API server: location / with the module
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

/*
 * Where error_page sends nginx's own errors. Not a named location: nginx
 * cannot redirect a request whose request line it could not parse to one
 * ("empty URI in redirect to named location"), and those are the 400, 414
 * and 505 answers. A URI that starts with "//" is out of every client's
 * reach, because nginx merges the slashes of request URIs (merge_slashes
 * is on), while an internal redirect takes the URI as it is.
 */
#define ERROR_URI "//idemgate-error"

/* An error nginx itself answers, and the JSON page the gateway gives it. */
typedef struct {
    int         from;   /* nginx's code */
    int         status; /* what the client gets */
    int         admin;  /* the admin server can meet it too */
    const char *title;  /* persona style */
    const char *phrase; /* ietf style: the status phrase */
} page_t;

static const page_t pages[] = {
    {400, 400, 1, "Bad request", "Bad Request"},
    {404, 404, 1, "Not found", "Not Found"},
    {405, 405, 1, "Method not allowed", "Method Not Allowed"},
    {408, 408, 0, "Request timeout", "Request Timeout"},
    {411, 411, 0, "Length required", "Length Required"},
    {413, 413, 1, "Request too large", "Content Too Large"},
    {414, 414, 1, "URI too long", "URI Too Long"},
    /* nginx's own code for a header section over its buffers */
    {494, 431, 1, "Request header fields too large",
     "Request Header Fields Too Large"},
    {500, 500, 1, "Internal server error", "Internal Server Error"},
    {501, 501, 0, "Not implemented", "Not Implemented"},
    {502, 502, 0, "Bad gateway", "Bad Gateway"},
    {503, 503, 0, "Service unavailable", "Service Unavailable"},
    {504, 504, 0, "Gateway timeout", "Gateway Timeout"},
    {505, 505, 0, "HTTP version not supported", "HTTP Version Not Supported"},
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

static void put_size(FILE *f, uint64_t bytes)
{
    if (bytes % (1024 * 1024) == 0) {
        fprintf(f, "%" PRIu64 "m", bytes / (1024 * 1024));
    } else if (bytes % 1024 == 0) {
        fprintf(f, "%" PRIu64 "k", bytes / 1024);
    } else {
        fprintf(f, "%" PRIu64, bytes);
    }
}

static void put_duration(FILE *f, uint64_t ms)
{
    char d[32];

    idemgate_duration_str(ms, d, sizeof(d));
    fputs(d, f);
}

/* "location = ERROR_URI/NNN { ... return NNN '<json>'; }", in the error
 * style. */
static void put_page(FILE *f, const idemgate_conf_t *c, const page_t *page)
{
    int         status = page->status;
    const char *title = page->title, *phrase = page->phrase;
    char        details[256];

    page_details(c, status, details, sizeof(details));
    fprintf(f,
            "        location = " ERROR_URI "/%d {\n"
            "            internal;\n",
            status);
    if (c->error_style_ietf) {
        fprintf(f,
                "            default_type application/problem+json;\n"
                "            return %d '{\"type\":\"" IETF_TYPE
                "\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}';\n",
                status, phrase, status, details);
    } else {
        fprintf(f,
                "            default_type application/json;\n"
                "            return %d '{\"errors\":[{\"title\":\"%s\","
                "\"details\":\"%s\"}]}';\n",
                status, title, details);
    }
    fprintf(f, "        }\n");
}

/* error_page lines and their locations, for one server: the API
 * server (404 cannot happen there: every URI is proxied) or the admin
 * server (which answers nothing but the pages marked for it). */
static void put_error_pages(FILE *f, const idemgate_conf_t *c, int admin)
{
    size_t i;

    fprintf(f, "        # nginx's own errors answer in JSON; no client's URI "
               "reaches these\n        # locations: nginx merges the "
               "slashes of every URI it receives\n");
    for (i = 0; i < NPAGES; i++) {
        if (admin ? pages[i].admin : pages[i].status != 404) {
            fprintf(f, "        error_page %d =%d " ERROR_URI "/%d;\n",
                    pages[i].from,
                    pages[i].status, pages[i].status);
        }
    }
    for (i = 0; i < NPAGES; i++) {
        if (admin ? pages[i].admin : pages[i].status != 404) {
            fputc('\n', f);
            put_page(f, c, &pages[i]);
        }
    }
}

/* The http variable nginx has for a header: Foo-Bar is $http_foo_bar. */
static void put_header_variable(FILE *f, const char *name)
{
    fputs("$http_", f);
    for (; *name; name++) {
        fputc(*name == '-' ? '_'
                           : (*name >= 'A' && *name <= 'Z' ? *name + 32
                                                           : *name),
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

static void put_http_common(FILE *f, const idemgate_conf_t *c)
{
    fprintf(f, "http {\n"
               "    access_log off;\n"
               "    server_tokens off;\n"
               "    log_format idemgate_api escape=none "
               "'$idempotency_log_entry';\n\n");

    fprintf(f, "    # requests: bodies stay in memory up to the limit\n");
    fputs("    client_max_body_size ", f);
    put_size(f, c->max_body_bytes);
    fputs(";\n    client_body_buffer_size ", f);
    put_size(f, c->max_body_bytes);
    /* one large buffer: the whole header section must fit in it */
    fputs(";\n    client_header_buffer_size 1k;\n"
          "    large_client_header_buffers 1 ",
          f);
    put_size(f, c->max_header_bytes);
    fputs(";\n    client_header_timeout ", f);
    put_duration(f, c->client_timeout_ms);
    fputs(";\n    client_body_timeout ", f);
    put_duration(f, c->client_timeout_ms);
    fputs(";\n    send_timeout ", f);
    put_duration(f, c->client_timeout_ms);
    fputs(";\n    keepalive_timeout 65s;\n\n", f);

    fprintf(f, "    # temporary files live in the runtime directory\n"
               "    client_body_temp_path client_body_temp;\n"
               "    proxy_temp_path proxy_temp;\n"
               "    fastcgi_temp_path fastcgi_temp;\n"
               "    uwsgi_temp_path uwsgi_temp;\n"
               "    scgi_temp_path scgi_temp;\n\n");

    fputs("    idempotency_store ", f);
    put_quoted(f, c->store);
    fputs(";\n    idempotency_thread_pool idemgate;\n\n", f);

    fprintf(f, "    upstream idemgate_upstream {\n"
               "        server %s:%u;\n"
               "        keepalive 64;\n"
               "    }\n\n",
            c->upstream.host, c->upstream.port);

    fprintf(f, "    proxy_http_version 1.1;\n"
               "    proxy_set_header Connection \"\";\n"
               "    proxy_set_header Host $http_host;\n"
               "    proxy_set_header X-Forwarded-For "
               "$proxy_add_x_forwarded_for;\n"
               "    proxy_set_header X-Request-Id $request_id;\n");
    fputs("    proxy_read_timeout ", f);
    put_duration(f, c->upstream_timeout_ms);
    fputs(";\n    proxy_send_timeout ", f);
    put_duration(f, c->upstream_timeout_ms);
    fputs(";\n    proxy_connect_timeout ", f);
    put_duration(f, c->upstream_timeout_ms < 10000 ? c->upstream_timeout_ms
                                                   : 10000);
    fputs(";\n    proxy_ignore_client_abort on;\n"
          "    proxy_buffering on;\n"
          "    proxy_max_temp_file_size 0;\n",
          f);
}

static void put_api_server(FILE *f, const idemgate_conf_t *c)
{
    static const struct {
        unsigned    bit;
        const char *name;
    } methods[] = {{IDEMGATE_M_POST, "POST"},
                   {IDEMGATE_M_PATCH, "PATCH"},
                   {IDEMGATE_M_PUT, "PUT"},
                   {IDEMGATE_M_DELETE, "DELETE"}};

    fprintf(f, "\n    server {\n"
               "        listen %s:%u;\n",
            c->listen.host, c->listen.port);
    if (c->api_log != NULL) {
        fputs("        access_log ", f);
        put_quoted(f, c->api_log);
        fputs(" idemgate_api if=$idempotency_api_log;\n", f);
    }
    fputs("\n        location / {\n"
          "            idempotency on;\n"
          "            idempotency_methods",
          f);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (c->methods & methods[i].bit) {
            fprintf(f, " %s", methods[i].name);
        }
    }
    fputs(";\n", f);
    put_scope(f, c);
    fputs("            idempotency_ttl ", f);
    put_duration(f, c->ttl_ms);
    fputs(";\n            idempotency_wait ", f);
    put_duration(f, c->wait_ms);
    fputs(";\n            idempotency_lease ", f);
    put_duration(f, c->lease_ms);
    fprintf(f,
            ";\n            idempotency_on_unknown %s;\n"
            "            idempotency_error_style %s;\n"
            "            idempotency_require_key %s;\n"
            "            idempotency_max_response_size ",
            c->on_unknown_release ? "release" : "store",
            c->error_style_ietf ? "ietf" : "persona",
            c->require_key ? "on" : "off");
    put_size(f, c->max_response_bytes);
    fputs(";\n", f);
    if (c->no_store_headers.n > 0) {
        fputs("            idempotency_no_store_header", f);
        for (size_t i = 0; i < c->no_store_headers.n; i++) {
            fputc(' ', f);
            put_quoted(f, c->no_store_headers.items[i]);
        }
        fputs(";\n", f);
    }
    if (c->upstream_prefix[0] != '\0') {
        /* the URI as the client sent it, behind the prefix (which has
         * neither quotes nor backslashes: flags.c checked) */
        fprintf(f,
                "            proxy_pass "
                "\"http://idemgate_upstream%s$request_uri\";\n",
                c->upstream_prefix);
    } else {
        fputs("            proxy_pass http://idemgate_upstream;\n", f);
    }
    fputs("        }\n\n", f);
    put_error_pages(f, c, 0);
    fputs("    }\n", f);
}

static void put_admin_server(FILE *f, const idemgate_conf_t *c)
{
    if (c->admin_off) {
        return;
    }
    fprintf(f, "\n    # the admin server: health, metrics, key inspection\n"
               "    server {\n"
               "        listen %s:%u;\n\n",
            c->admin.host, c->admin.port);
    fprintf(f, "        location = /healthz {\n"
               "            default_type application/json;\n"
               "            return 200 '{\"status\":\"ok\"}';\n"
               "        }\n\n"
               "        location = /metrics {\n"
               "            idempotency_metrics;\n"
               "        }\n\n"
               "        location /keys/ {\n");
    put_scope(f, c);
    fprintf(f, "            idempotency_admin;\n"
               "        }\n\n"
               "        location / {\n"
               "            return 404;\n"
               "        }\n\n");
    put_error_pages(f, c, 1);
    fputs("    }\n", f);
}

int idemgate_conf_render(const idemgate_conf_t *conf, char **out,
                         size_t *outlen, idemgate_err_t *err)
{
    FILE  *f;
    char  *text = NULL;
    size_t len = 0;

    f = open_memstream(&text, &len);
    if (f == NULL) {
        goto fail;
    }
    put_main(f, conf);
    put_http_common(f, conf);
    put_api_server(f, conf);
    put_admin_server(f, conf);
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
