/*
 * api.c — routes and handlers of the demo Inquiries API (see api.h and
 * README.md for the endpoints and the X-Demo-* switches).
 *
 * One request flows through inq_api_handle() like this:
 *
 *   count the request (X-Request-Count)
 *   parse the X-Demo-* headers ----- invalid --> 400, nothing executed
 *   count the execution (unsafe methods outside /_demo/)
 *   route to a handler, which writes its body into api->body
 *   X-Demo-Fail: replace the body with that status' error
 *   compose the extra headers, X-Demo-Body-Bytes padding, delay and drop
 *
 * Response bodies are composed in buffers owned by the API and reused from
 * one request to the next; the only allocations of a request are those of
 * a new inquiry (jansson's parse tree and the stored JSON text).
 */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "counter.h"
#include "store.h"

#define INQUIRIES_PATH "/api/v1/inquiries"
#define DEMO_PREFIX    "/_demo/"

#define MAX_LISTED    100
#define MAX_DELAY_MS  600000u
#define MAX_PAD_BYTES ((size_t)64 << 20)
#define ID_RANDOM_LEN 24
#define COOKIE_LEN    20
#define BUF_KEEP      ((size_t)1 << 20) /* scratch kept between requests */

struct inq_api {
    inq_store_t *store;
    inq_counter_t *counter;
    uint64_t requests; /* since start or the last /_demo/reset */
    uint64_t rng[4];   /* xoshiro256** state */
    inq_buf_t body;    /* the response body being composed */
    inq_buf_t headers; /* the extra header lines being composed */
    inq_buf_t scratch; /* a decoded query value, a new inquiry's JSON */
};

/* The X-Demo-* switches of one request. */
typedef struct {
    uint32_t delay_ms;
    int fail; /* 0, or a status from 400 to 599 */
    inq_api_drop_t drop;
    size_t pad;
} api_demo_t;

/* What a handler decided, besides the body in api->body. */
typedef struct {
    const inq_http_request_t *req;
    const char *body;
    size_t body_len;
    int status;
    const char *content_type;
    const char *allow; /* the Allow header of a 405 */
    bool cookie;       /* send Set-Cookie (the inquiries resource) */
    bool created;      /* send Location for id */
    char id[INQ_STORE_ID_LEN];
} api_call_t;

static const char type_json[] = "application/json";
static const char type_text[] = "text/plain; charset=utf-8";

static const char oom_body[] =
    "{\"errors\":[{\"title\":\"Internal Server Error\","
    "\"details\":\"The demo API ran out of memory.\"}]}";

/* ---- random ids ------------------------------------------------------- */

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t api_rand(inq_api_t *api)
{
    uint64_t *s = api->rng, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void api_seed(inq_api_t *api)
{
    uint64_t x;
    int i;

    if (getrandom(api->rng, sizeof(api->rng), 0) == sizeof(api->rng) &&
        (api->rng[0] | api->rng[1] | api->rng[2] | api->rng[3]) != 0) {
        return;
    }
    /* No kernel randomness: splitmix64 over the time and the pid. */
    x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (i = 0; i < 4; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15u);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
        api->rng[i] = z ^ (z >> 31);
    }
}

/* Writes n random characters from [0-9A-Za-z], without modulo bias. */
static void api_random_alnum(inq_api_t *api, char *out, size_t n)
{
    static const char alnum[] = "0123456789"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz";
    uint64_t r = 0, v;
    int bits = 0;
    size_t i = 0;

    while (i < n) {
        if (bits < 6) {
            r = api_rand(api);
            bits = 64;
        }
        v = r & 63;
        r >>= 6;
        bits -= 6;
        if (v < 62) {
            out[i++] = alnum[v];
        }
    }
}

/* ---- small helpers ------------------------------------------------------ */

static bool str_is(inq_http_str_t s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static bool str_starts(inq_http_str_t s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len >= n && memcmp(s.p, lit, n) == 0;
}

/* Methods are case-sensitive, unlike header names. */
static bool method_is(const inq_http_request_t *req, const char *m)
{
    return str_is(req->method, m);
}

/* Parses a decimal number of at most 10 digits that is <= max. */
static bool parse_uint(const inq_http_str_t *v, uint64_t max, uint64_t *out)
{
    uint64_t n = 0;
    size_t i;

    if (v->len == 0 || v->len > 10) {
        return false;
    }
    for (i = 0; i < v->len; i++) {
        if (v->p[i] < '0' || v->p[i] > '9') {
            return false;
        }
        n = n * 10 + (uint64_t)(v->p[i] - '0');
    }
    if (n > max) {
        return false;
    }
    *out = n;
    return true;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/*
 * Finds the query parameter name and decodes its value into out
 * (form-urlencoded: '+' is a space, %XX a byte). Returns 1 when found,
 * 0 when not, -ENOMEM.
 */
static int query_param(inq_http_str_t query, const char *name, inq_buf_t *out)
{
    const char *p = query.p, *end = query.p + query.len, *amp, *eq;
    size_t n = strlen(name);
    int hi, lo, rc;
    char c;

    while (p < end) {
        amp = memchr(p, '&', (size_t)(end - p));
        if (amp == NULL) {
            amp = end;
        }
        eq = memchr(p, '=', (size_t)(amp - p));
        if ((size_t)((eq ? eq : amp) - p) == n && memcmp(p, name, n) == 0) {
            out->len = 0;
            for (p = eq ? eq + 1 : amp; p < amp; p++) {
                c = *p;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && amp - p > 2 &&
                           (hi = hex_digit(p[1])) >= 0 &&
                           (lo = hex_digit(p[2])) >= 0) {
                    c = (char)(hi * 16 + lo);
                    p += 2;
                }
                rc = inq_buf_append(out, &c, 1);
                if (rc != 0) {
                    return rc;
                }
            }
            return 1;
        }
        p = amp + 1;
    }
    return 0;
}

/* Writes {"errors":[{"title":...,"details":...}]} as the body. */
static int api_error_body(inq_api_t *api, const char *title,
                          const char *details, size_t details_len)
{
    inq_buf_t *b = &api->body;
    int rc;

    b->len = 0;
    rc = inq_buf_append_str(b, "{\"errors\":[{\"title\":");
    if (rc == 0) {
        rc = inq_buf_append_json(b, title, strlen(title));
    }
    if (rc == 0) {
        rc = inq_buf_append_str(b, ",\"details\":");
    }
    if (rc == 0) {
        rc = inq_buf_append_json(b, details, details_len);
    }
    if (rc == 0) {
        rc = inq_buf_append_str(b, "}]}");
    }
    return rc;
}

static int api_fail(inq_api_t *api, api_call_t *call, int status,
                    const char *title, const char *details)
{
    call->status = status;
    call->content_type = type_json;
    return api_error_body(api, title, details, strlen(details));
}

static int api_not_allowed(inq_api_t *api, api_call_t *call, const char *allow)
{
    call->allow = allow;
    return api_fail(api, call, 405, "Method not allowed",
                    "This path does not support this method.");
}

/* ---- handlers ----------------------------------------------------------- */

static int api_healthz(inq_api_t *api, api_call_t *call)
{
    call->status = 200;
    call->content_type = type_text;
    return inq_buf_append_str(&api->body, "ok");
}

static int api_bench(inq_api_t *api, api_call_t *call)
{
    call->status = 200;
    return inq_buf_append_str(&api->body, "{\"ok\":true}");
}

/* Formats the current time as RFC 3339 in UTC with milliseconds. */
static void api_now_rfc3339(char out[32])
{
    struct timespec ts;
    struct tm tm;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03uZ",
             (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

/*
 * The attributes of a new inquiry from the posted document: the
 * "attributes" of a JSON:API {"data":{...}} document, or else the whole
 * object. Returns a borrowed reference into doc; NULL with *why set when
 * the document is unusable, NULL with *why untouched when it has "data"
 * but no attributes.
 */
static json_t *api_posted_attributes(json_t *doc, const char **why)
{
    json_t *data, *attrs;

    if (!json_is_object(doc)) {
        *why = "The request body must be a JSON object.";
        return NULL;
    }
    data = json_object_get(doc, "data");
    if (data == NULL) {
        return doc;
    }
    if (!json_is_object(data)) {
        *why = "\"data\" must be an object.";
        return NULL;
    }
    attrs = json_object_get(data, "attributes");
    if (attrs == NULL) {
        return NULL; /* a document without attributes */
    }
    if (!json_is_object(attrs)) {
        *why = "\"data.attributes\" must be an object.";
        return NULL;
    }
    return attrs;
}

/*
 * Builds the resource object of a new inquiry into api->scratch:
 * {"type":"inquiry","id":ID,"attributes":{"status":"created",
 * "created-at":T, ...posted attributes...}}.
 */
static int api_build_inquiry(inq_api_t *api, const char *id, json_t *attrs)
{
    inq_buf_t *b = &api->scratch;
    char created_at[32];
    char *posted;
    int rc;

    /* The server's own attributes win over posted ones. */
    json_object_del(attrs, "status");
    json_object_del(attrs, "created-at");
    posted = json_dumps(attrs, JSON_COMPACT);
    if (posted == NULL) {
        return -ENOMEM;
    }
    api_now_rfc3339(created_at);
    b->len = 0;
    rc = inq_buf_printf(b,
                        "{\"type\":\"inquiry\",\"id\":\"%.*s\","
                        "\"attributes\":{\"status\":\"created\","
                        "\"created-at\":\"%s\"",
                        INQ_STORE_ID_LEN, id, created_at);
    /* posted is "{...}": splice its members in after ours. */
    if (rc == 0 && strcmp(posted, "{}") != 0) {
        rc = inq_buf_printf(b, ",%s}", posted + 1);
    } else if (rc == 0) {
        rc = inq_buf_append_str(b, "}}");
    }
    free(posted);
    return rc;
}

static int api_create(inq_api_t *api, api_call_t *call)
{
    json_t *doc = NULL, *attrs;
    json_error_t err;
    const char *why = NULL;
    char *stored = NULL, details[256];
    int rc;

    if (call->body_len == 0) {
        doc = json_object();
    } else {
        doc = json_loadb(call->body, call->body_len, 0, &err);
        if (doc == NULL) {
            snprintf(details, sizeof(details),
                     "The request body is not valid JSON: %s (line %d, "
                     "column %d).",
                     err.text, err.line, err.column);
            return api_fail(api, call, 400, "Bad request", details);
        }
    }
    if (doc == NULL) {
        return -ENOMEM;
    }
    attrs = api_posted_attributes(doc, &why);
    if (attrs == NULL && why != NULL) {
        rc = api_fail(api, call, 400, "Bad request", why);
        goto out;
    }
    if (attrs == NULL) {
        /* {"data":{"type":...}} without attributes: none were posted. */
        json_decref(doc);
        doc = json_object();
        if (doc == NULL) {
            return -ENOMEM;
        }
        attrs = doc;
    }

    memcpy(call->id, "inq_", 4);
    api_random_alnum(api, call->id + 4, ID_RANDOM_LEN);
    rc = api_build_inquiry(api, call->id, attrs);
    if (rc != 0) {
        goto out;
    }
    stored = malloc(api->scratch.len);
    if (stored == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(stored, api->scratch.data, api->scratch.len);
    rc = inq_store_put(api->store, call->id, stored, api->scratch.len);
    if (rc != 0) {
        free(stored);
        rc = api_fail(api, call, 413, "Payload too large",
                      "The inquiry is too large to be stored.");
        goto out;
    }
    call->status = 201;
    call->created = true;
    rc = inq_buf_append_str(&api->body, "{\"data\":");
    if (rc == 0) {
        rc = inq_buf_append(&api->body, api->scratch.data, api->scratch.len);
    }
    if (rc == 0) {
        rc = inq_buf_append_str(&api->body, "}");
    }

out:
    json_decref(doc);
    return rc;
}

static int api_list(inq_api_t *api, api_call_t *call)
{
    size_t i, n = inq_store_count(api->store), len;
    const char *json;
    int rc;

    if (n > MAX_LISTED) {
        n = MAX_LISTED;
    }
    call->status = 200;
    rc = inq_buf_append_str(&api->body, "{\"data\":[");
    for (i = 0; i < n && rc == 0; i++) {
        json = inq_store_newest(api->store, i, &len);
        if (i > 0) {
            rc = inq_buf_append(&api->body, ",", 1);
        }
        if (rc == 0) {
            rc = inq_buf_append(&api->body, json, len);
        }
    }
    if (rc == 0) {
        rc = inq_buf_append_str(&api->body, "]}");
    }
    return rc;
}

static int api_show(inq_api_t *api, api_call_t *call, inq_http_str_t id)
{
    const char *json;
    size_t len;
    int rc;

    json = inq_store_get(api->store, id.p, id.len, &len);
    if (json == NULL) {
        call->status = 404;
        rc = inq_buf_append_str(&api->scratch, "No inquiry has the id ");
        if (rc == 0) {
            rc = inq_buf_append_json(&api->scratch, id.p, id.len);
        }
        if (rc == 0) {
            rc = inq_buf_append(&api->scratch, ".", 1);
        }
        if (rc == 0) {
            rc = api_error_body(api, "Not found", api->scratch.data,
                                api->scratch.len);
        }
        return rc;
    }
    call->status = 200;
    rc = inq_buf_append_str(&api->body, "{\"data\":");
    if (rc == 0) {
        rc = inq_buf_append(&api->body, json, len);
    }
    if (rc == 0) {
        rc = inq_buf_append_str(&api->body, "}");
    }
    return rc;
}

static int api_executions(inq_api_t *api, api_call_t *call)
{
    inq_buf_t *b = &api->body;
    const char *key;
    size_t i, len;
    uint64_t n;
    int rc;

    call->status = 200;
    rc = query_param(call->req->query, "key", &api->scratch);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        n = inq_counter_get(api->counter, api->scratch.data, api->scratch.len);
        rc = inq_buf_append_str(b, "{\"key\":");
        if (rc == 0) {
            rc = inq_buf_append_json(b, api->scratch.data, api->scratch.len);
        }
        if (rc == 0) {
            rc = inq_buf_printf(b, ",\"executions\":%" PRIu64 "}", n);
        }
        return rc;
    }
    rc = inq_buf_printf(b,
                        "{\"total\":%" PRIu64 ",\"requests\":%" PRIu64
                        ",\"untracked\":%" PRIu64 ",\"keys\":{",
                        inq_counter_total(api->counter), api->requests,
                        inq_counter_untracked(api->counter));
    for (i = 0; i < inq_counter_keys(api->counter) && rc == 0; i++) {
        n = inq_counter_entry(api->counter, i, &key, &len);
        if (i > 0) {
            rc = inq_buf_append(b, ",", 1);
        }
        if (rc == 0) {
            rc = inq_buf_append_json(b, key, len);
        }
        if (rc == 0) {
            rc = inq_buf_printf(b, ":%" PRIu64, n);
        }
    }
    if (rc == 0) {
        rc = inq_buf_append_str(b, "}}");
    }
    return rc;
}

static int api_reset(inq_api_t *api, api_call_t *call)
{
    inq_counter_reset(api->counter);
    api->requests = 0;
    call->status = 200;
    return inq_buf_append_str(&api->body, "{\"reset\":true}");
}

static int api_route(inq_api_t *api, api_call_t *call)
{
    const inq_http_request_t *req = call->req;
    inq_http_str_t path = req->path, id;
    bool get = method_is(req, "GET") || method_is(req, "HEAD");
    bool post = method_is(req, "POST");

    if (str_is(path, "/healthz")) {
        return get ? api_healthz(api, call)
                   : api_not_allowed(api, call, "GET, HEAD");
    }
    if (str_is(path, "/bench")) {
        return get || post ? api_bench(api, call)
                           : api_not_allowed(api, call, "GET, HEAD, POST");
    }
    if (str_is(path, INQUIRIES_PATH)) {
        call->cookie = true;
        if (get) {
            return api_list(api, call);
        }
        return post ? api_create(api, call)
                    : api_not_allowed(api, call, "GET, HEAD, POST");
    }
    if (str_starts(path, INQUIRIES_PATH "/")) {
        id.p = path.p + strlen(INQUIRIES_PATH "/");
        id.len = path.len - strlen(INQUIRIES_PATH "/");
        if (id.len > 0 && memchr(id.p, '/', id.len) == NULL) {
            call->cookie = true;
            return get ? api_show(api, call, id)
                       : api_not_allowed(api, call, "GET, HEAD");
        }
    }
    if (str_is(path, DEMO_PREFIX "executions")) {
        return get ? api_executions(api, call)
                   : api_not_allowed(api, call, "GET, HEAD");
    }
    if (str_is(path, DEMO_PREFIX "reset")) {
        return post ? api_reset(api, call) : api_not_allowed(api, call, "POST");
    }
    return api_fail(api, call, 404, "Not found", "No such path.");
}

/* ---- the request as a whole --------------------------------------------- */

/* Reads the X-Demo-* headers; on error *why says which one is wrong. */
static int api_parse_demo(const inq_http_request_t *req, api_demo_t *d,
                          const char **why)
{
    const inq_http_str_t *v;
    uint64_t n;

    memset(d, 0, sizeof(*d));
    v = inq_http_header(req, "X-Demo-Delay-Ms");
    if (v != NULL) {
        if (!parse_uint(v, MAX_DELAY_MS, &n)) {
            *why = "X-Demo-Delay-Ms must be a number of milliseconds from 0 "
                   "to 600000.";
            return -EINVAL;
        }
        d->delay_ms = (uint32_t)n;
    }
    v = inq_http_header(req, "X-Demo-Fail");
    if (v != NULL) {
        if (!parse_uint(v, 599, &n) || n < 400) {
            *why = "X-Demo-Fail must be a status from 400 to 599.";
            return -EINVAL;
        }
        d->fail = (int)n;
    }
    v = inq_http_header(req, "X-Demo-Drop");
    if (v != NULL) {
        if (str_is(*v, "1")) {
            d->drop = INQ_API_DROP_CLOSE;
        } else if (inq_http_str_eq(*v, "rst")) {
            d->drop = INQ_API_DROP_RESET;
        } else if (!str_is(*v, "0")) {
            *why = "X-Demo-Drop must be 1 (close), rst (reset) or 0.";
            return -EINVAL;
        }
    }
    v = inq_http_header(req, "X-Demo-Body-Bytes");
    if (v != NULL) {
        if (!parse_uint(v, MAX_PAD_BYTES, &n)) {
            *why = "X-Demo-Body-Bytes must be a number of bytes from 0 to "
                   "67108864 (64 MiB).";
            return -EINVAL;
        }
        d->pad = (size_t)n;
    }
    return 0;
}

/* Requests that change something are executions; GET and friends not. */
static bool api_is_execution(const inq_http_request_t *req)
{
    if (method_is(req, "GET") || method_is(req, "HEAD") ||
        method_is(req, "OPTIONS") || method_is(req, "TRACE")) {
        return false;
    }
    return !str_starts(req->path, DEMO_PREFIX);
}

static void api_count_execution(inq_api_t *api, const inq_http_request_t *req)
{
    const inq_http_str_t *key = inq_http_header(req, "Idempotency-Key");

    if (key != NULL) {
        inq_counter_add(api->counter, key->p, key->len);
    } else {
        inq_counter_add(api->counter, "", 0);
    }
}

/* Composes the extra headers and the padding of the response. */
static int api_finish(inq_api_t *api, const api_call_t *call,
                      const api_demo_t *demo, inq_api_response_t *resp)
{
    inq_buf_t *h = &api->headers, *b = &api->body;
    char cookie[COOKIE_LEN];
    bool json = call->content_type == type_json;
    int rc;

    rc = inq_buf_printf(h, "X-Request-Count: %" PRIu64 "\r\n", api->requests);
    if (rc == 0 && call->cookie) {
        api_random_alnum(api, cookie, sizeof(cookie));
        rc = inq_buf_printf(h,
                            "Set-Cookie: demo_session=%.*s; Path=/; "
                            "HttpOnly\r\n",
                            COOKIE_LEN, cookie);
    }
    if (rc == 0 && call->created && call->status == 201) {
        rc = inq_buf_printf(h, "Location: " INQUIRIES_PATH "/%.*s\r\n",
                            INQ_STORE_ID_LEN, call->id);
    }
    if (rc == 0 && call->status == 405 && call->allow != NULL) {
        rc = inq_buf_printf(h, "Allow: %s\r\n", call->allow);
    }
    if (rc != 0) {
        return rc;
    }

    resp->tail = "";
    resp->tail_len = 0;
    if (demo->pad > 0 && json && b->len >= 2 && b->data[b->len - 1] == '}') {
        /* {...} becomes {...,"padding":"xxxx"}: still one JSON object. */
        b->len--;
        rc = inq_buf_append_str(b, b->data[b->len - 1] == '{'
                                       ? "\"padding\":\""
                                       : ",\"padding\":\"");
        if (rc != 0) {
            return rc;
        }
        resp->tail = "\"}";
        resp->tail_len = 2;
    }
    resp->status = call->status;
    resp->content_type = call->content_type;
    resp->headers = h->data;
    resp->headers_len = h->len;
    resp->body = b->data;
    resp->body_len = b->len;
    resp->pad_len = demo->pad;
    resp->head_only = method_is(call->req, "HEAD");
    resp->delay_ms = demo->delay_ms;
    resp->drop = demo->drop;
    return 0;
}

/* Empties the scratch buffers, returning memory a large response took. */
static void api_begin(inq_api_t *api, inq_api_response_t *resp)
{
    inq_buf_reset(&api->body, BUF_KEEP);
    inq_buf_reset(&api->headers, BUF_KEEP);
    inq_buf_reset(&api->scratch, BUF_KEEP);
    memset(resp, 0, sizeof(*resp));
}

static void api_out_of_memory(inq_api_t *api, inq_api_response_t *resp)
{
    api_begin(api, resp);
    resp->status = 500;
    resp->content_type = type_json;
    resp->body = oom_body;
    resp->body_len = sizeof(oom_body) - 1;
    resp->tail = "";
}

void inq_api_handle(inq_api_t *api, const inq_http_request_t *req,
                    const char *body, size_t body_len, inq_api_response_t *resp)
{
    api_call_t call;
    api_demo_t demo, none;
    const char *why = NULL;
    int rc;

    api_begin(api, resp);
    api->requests++;
    memset(&call, 0, sizeof(call));
    call.req = req;
    call.body = body;
    call.body_len = body_len;
    call.content_type = type_json;

    if (api_parse_demo(req, &demo, &why) != 0) {
        memset(&none, 0, sizeof(none));
        rc = api_fail(api, &call, 400, "Bad request", why);
        if (rc == 0) {
            rc = api_finish(api, &call, &none, resp);
        }
    } else {
        if (api_is_execution(req)) {
            api_count_execution(api, req);
        }
        rc = api_route(api, &call);
        if (rc == 0 && demo.fail != 0) {
            call.allow = NULL;
            rc = api_fail(api, &call, demo.fail, inq_http_reason(demo.fail),
                          "This failure was requested with the X-Demo-Fail "
                          "header; the request was executed.");
        }
        if (rc == 0) {
            rc = api_finish(api, &call, &demo, resp);
        }
    }
    if (rc != 0) {
        api_out_of_memory(api, resp);
    }
}

void inq_api_error(inq_api_t *api, int status, const char *details,
                   inq_api_response_t *resp)
{
    api_begin(api, resp);
    if (api_error_body(api, inq_http_reason(status), details,
                       strlen(details)) != 0) {
        api_out_of_memory(api, resp);
        return;
    }
    resp->status = status;
    resp->content_type = type_json;
    resp->body = api->body.data;
    resp->body_len = api->body.len;
    resp->tail = "";
}

int inq_api_new(inq_api_t **out, const inq_api_config_t *cfg)
{
    inq_api_t *api;
    int rc;

    api = calloc(1, sizeof(*api));
    if (api == NULL) {
        return -ENOMEM;
    }
    rc = inq_store_new(&api->store, cfg->max_inquiries, cfg->max_stored_bytes);
    if (rc != 0) {
        goto fail;
    }
    rc = inq_counter_new(&api->counter, cfg->max_keys, cfg->max_key_len);
    if (rc != 0) {
        goto fail;
    }
    api_seed(api);
    *out = api;
    return 0;

fail:
    inq_api_free(api);
    return rc;
}

void inq_api_free(inq_api_t *api)
{
    if (api == NULL) {
        return;
    }
    inq_store_free(api->store);
    inq_counter_free(api->counter);
    inq_buf_free(&api->body);
    inq_buf_free(&api->headers);
    inq_buf_free(&api->scratch);
    free(api);
}
