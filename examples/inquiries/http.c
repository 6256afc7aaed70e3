/*
 * http.c — HTTP/1.x request parsing (see http.h).
 *
 * The parser is strict where leniency would let a malformed request be read
 * two ways (obsolete line folding, whitespace before a colon, both
 * Content-Length and Transfer-Encoding, conflicting Content-Lengths,
 * several Host headers) and lenient where RFC 9112 allows it (bare LF line
 * ends, chunk extensions, trailer fields, which are skipped).
 */
#include "http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

enum {
    CHUNK_SIZE,     /* expecting a chunk-size line */
    CHUNK_DATA,     /* inside chunk data */
    CHUNK_DATA_END, /* expecting the CRLF after chunk data */
    CHUNK_TRAILER,  /* after the last chunk: trailer lines, then a blank */
};

#define INQ_HTTP_MAX_CHUNK_LINE 4096
#define INQ_HTTP_MAX_TRAILER    16384

/* RFC 9110 tchar: the characters of methods and header names. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
        (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token(const char *p, size_t n)
{
    size_t i;

    if (n == 0) {
        return false;
    }
    for (i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)p[i])) {
            return false;
        }
    }
    return true;
}

bool inq_http_str_eq(inq_http_str_t s, const char *lit)
{
    size_t n = strlen(lit);

    return s.len == n && strncasecmp(s.p, lit, n) == 0;
}

size_t inq_http_find_head_end(const char *buf, size_t len, size_t from)
{
    const char *p, *end = buf + len;

    /* A terminator may straddle from: back up over its first bytes. */
    p = buf + (from > 2 ? from - 2 : 0);
    while (p < end) {
        p = memchr(p, '\n', (size_t)(end - p));
        if (p == NULL) {
            return 0;
        }
        p++;
        if (p < end && *p == '\n') {
            return (size_t)(p + 1 - buf);
        }
        if (p + 1 < end && p[0] == '\r' && p[1] == '\n') {
            return (size_t)(p + 2 - buf);
        }
    }
    return 0;
}

/*
 * The line starting at p: returns the end of its content (before CRLF or
 * LF) and sets *next to the start of the following line. The caller knows
 * there is a LF before end.
 */
static const char *line_end(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));

    if (lf == NULL) {
        *next = end;
        return end;
    }
    *next = lf + 1;
    return (lf > p && lf[-1] == '\r') ? lf - 1 : lf;
}

static int parse_version(const char *p, size_t n, int *version)
{
    if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' ||
        p[5] > '9' || p[7] < '0' || p[7] > '9') {
        return 400;
    }
    if (p[5] != '1') {
        return 505;
    }
    *version = p[7] == '0' ? 10 : 11;
    return INQ_HTTP_DONE;
}

/* Splits the request target into path and query. */
static int parse_target(inq_http_request_t *req)
{
    const char *p = req->target.p, *end = p + req->target.len, *q;
    size_t i;

    for (i = 0; i < req->target.len; i++) {
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f) {
            return 400;
        }
    }
    if (req->target.len == 1 && p[0] == '*') {
        req->path = req->target;
        req->query.p = end;
        req->query.len = 0;
        return INQ_HTTP_DONE;
    }
    if (p[0] != '/') {
        /* absolute-form: skip "http://authority" or "https://authority". */
        if (req->target.len > 7 && strncasecmp(p, "http://", 7) == 0) {
            p += 7;
        } else if (req->target.len > 8 && strncasecmp(p, "https://", 8) == 0) {
            p += 8;
        } else {
            return 400;
        }
        p = memchr(p, '/', (size_t)(end - p));
        if (p == NULL) {
            /* No path: "http://host" means "/". */
            req->path.p = "/";
            req->path.len = 1;
            req->query.p = end;
            req->query.len = 0;
            return INQ_HTTP_DONE;
        }
    }
    q = memchr(p, '?', (size_t)(end - p));
    req->path.p = p;
    req->path.len = (size_t)((q ? q : end) - p);
    req->query.p = q ? q + 1 : end;
    req->query.len = q ? (size_t)(end - q - 1) : 0;
    return INQ_HTTP_DONE;
}

static int parse_request_line(const char *p, const char *eol,
                              inq_http_request_t *req)
{
    const char *sp1, *sp2;
    int rc;

    sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (sp1 == NULL || !is_token(p, (size_t)(sp1 - p))) {
        return 400;
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL || sp2 == sp1 + 1) {
        return 400;
    }
    req->method.p = p;
    req->method.len = (size_t)(sp1 - p);
    req->target.p = sp1 + 1;
    req->target.len = (size_t)(sp2 - sp1 - 1);
    rc = parse_version(sp2 + 1, (size_t)(eol - sp2 - 1), &req->version);
    if (rc != INQ_HTTP_DONE) {
        return rc;
    }
    return parse_target(req);
}

static int parse_content_length(inq_http_str_t v, int64_t *out)
{
    int64_t n = 0;
    size_t i;

    if (v.len == 0) {
        return 400;
    }
    for (i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return 400;
        }
        /* Saturate: anything this large is refused with 413 anyway. */
        if (n < INT64_MAX / 20) {
            n = n * 10 + (v.p[i] - '0');
        }
    }
    if (*out >= 0 && *out != n) {
        return 400;
    }
    *out = n;
    return INQ_HTTP_DONE;
}

/* Reads the "close" and "keep-alive" options of a Connection header. */
static void parse_connection(inq_http_str_t v, bool *close, bool *keep)
{
    const char *p = v.p, *end = v.p + v.len, *comma;
    inq_http_str_t tok;

    while (p < end) {
        comma = memchr(p, ',', (size_t)(end - p));
        tok.p = p;
        tok.len = (size_t)((comma ? comma : end) - p);
        while (tok.len > 0 && (tok.p[0] == ' ' || tok.p[0] == '\t')) {
            tok.p++;
            tok.len--;
        }
        while (tok.len > 0 &&
               (tok.p[tok.len - 1] == ' ' || tok.p[tok.len - 1] == '\t')) {
            tok.len--;
        }
        if (inq_http_str_eq(tok, "close")) {
            *close = true;
        } else if (inq_http_str_eq(tok, "keep-alive")) {
            *keep = true;
        }
        p = comma ? comma + 1 : end;
    }
}

static int parse_header_line(const char *p, const char *eol,
                             inq_http_request_t *req)
{
    const char *colon, *v, *ve;
    inq_http_header_t *h;
    size_t i;

    if (*p == ' ' || *p == '\t') {
        return 400; /* obsolete line folding */
    }
    colon = memchr(p, ':', (size_t)(eol - p));
    if (colon == NULL || !is_token(p, (size_t)(colon - p))) {
        return 400;
    }
    v = colon + 1;
    ve = eol;
    while (v < ve && (*v == ' ' || *v == '\t')) {
        v++;
    }
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
        ve--;
    }
    for (i = 0; i < (size_t)(ve - v); i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return 400;
        }
    }
    if (req->nheaders == INQ_HTTP_MAX_HEADERS) {
        return 431;
    }
    h = &req->headers[req->nheaders++];
    h->name.p = p;
    h->name.len = (size_t)(colon - p);
    h->value.p = v;
    h->value.len = (size_t)(ve - v);
    return INQ_HTTP_DONE;
}

int inq_http_parse_head(const char *buf, size_t head_len,
                        inq_http_request_t *req)
{
    const char *p = buf, *end = buf + head_len, *eol, *next;
    bool close = false, keep = false, te = false;
    size_t i, hosts = 0;
    inq_http_header_t *h;
    int rc;

    req->nheaders = 0;
    req->content_length = -1;
    req->chunked = false;
    req->expect_continue = false;
    req->head_len = head_len;

    eol = line_end(p, end, &next);
    rc = parse_request_line(p, eol, req);
    if (rc != INQ_HTTP_DONE) {
        return rc;
    }
    for (p = next; p < end; p = next) {
        eol = line_end(p, end, &next);
        if (eol == p) {
            break; /* the blank line */
        }
        rc = parse_header_line(p, eol, req);
        if (rc != INQ_HTTP_DONE) {
            return rc;
        }
    }

    for (i = 0; i < req->nheaders; i++) {
        h = &req->headers[i];
        if (inq_http_str_eq(h->name, "content-length")) {
            rc = parse_content_length(h->value, &req->content_length);
            if (rc != INQ_HTTP_DONE) {
                return rc;
            }
        } else if (inq_http_str_eq(h->name, "transfer-encoding")) {
            if (te) {
                return 400;
            }
            te = true;
            if (!inq_http_str_eq(h->value, "chunked")) {
                return 501;
            }
            req->chunked = true;
        } else if (inq_http_str_eq(h->name, "host")) {
            hosts++;
        } else if (inq_http_str_eq(h->name, "connection")) {
            parse_connection(h->value, &close, &keep);
        } else if (inq_http_str_eq(h->name, "expect")) {
            if (!inq_http_str_eq(h->value, "100-continue")) {
                return 417;
            }
            req->expect_continue = req->version >= 11;
        }
    }
    if (hosts > 1 || (hosts == 0 && req->version >= 11)) {
        return 400;
    }
    if (req->chunked && (req->content_length >= 0 || req->version < 11)) {
        return 400;
    }
    req->keep_alive = !close && (req->version >= 11 || keep);
    return INQ_HTTP_DONE;
}

const inq_http_str_t *inq_http_header(const inq_http_request_t *req,
                                      const char *name)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++) {
        if (inq_http_str_eq(req->headers[i].name, name)) {
            return &req->headers[i].value;
        }
    }
    return NULL;
}

void inq_http_chunked_init(inq_http_chunked_t *c)
{
    c->state = CHUNK_SIZE;
    c->remaining = 0;
    c->decoded = 0;
    c->trailer = 0;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Parses "HEX [ ; ext ]" in p[0..n) into *size. */
static int parse_chunk_size(const char *p, size_t n, size_t room, size_t *size)
{
    size_t i = 0, v = 0;
    int d;

    while (i < n && (d = hex_value(p[i])) >= 0) {
        v = v * 16 + (size_t)d;
        if (v > room) {
            return 413;
        }
        i++;
    }
    if (i == 0) {
        return 400;
    }
    while (i < n && (p[i] == ' ' || p[i] == '\t')) {
        i++;
    }
    if (i < n && p[i] != ';') {
        return 400;
    }
    *size = v;
    return INQ_HTTP_DONE;
}

int inq_http_chunked_decode(inq_http_chunked_t *c, char *buf, size_t *len,
                            size_t max_body)
{
    size_t in = c->decoded, out = c->decoded, n, size = 0;
    const char *lf;
    int rc = INQ_HTTP_AGAIN;

    while (in < *len && rc == INQ_HTTP_AGAIN) {
        switch (c->state) {
        case CHUNK_SIZE:
        case CHUNK_TRAILER:
            lf = memchr(buf + in, '\n', *len - in);
            if (lf == NULL) {
                if (*len - in > INQ_HTTP_MAX_CHUNK_LINE) {
                    rc = 400;
                }
                goto done;
            }
            n = (size_t)(lf - (buf + in));
            if (n > INQ_HTTP_MAX_CHUNK_LINE) {
                rc = 400;
                goto done;
            }
            if (n > 0 && buf[in + n - 1] == '\r') {
                n--;
            }
            if (c->state == CHUNK_TRAILER) {
                in = (size_t)(lf + 1 - buf);
                if (n == 0) {
                    rc = INQ_HTTP_DONE;
                } else if ((c->trailer += n) > INQ_HTTP_MAX_TRAILER) {
                    rc = 400;
                }
                break;
            }
            rc = parse_chunk_size(buf + in, n, max_body - out, &size);
            if (rc != INQ_HTTP_DONE) {
                goto done;
            }
            rc = INQ_HTTP_AGAIN;
            in = (size_t)(lf + 1 - buf);
            c->remaining = size;
            c->state = size == 0 ? CHUNK_TRAILER : CHUNK_DATA;
            break;
        case CHUNK_DATA:
            n = *len - in < c->remaining ? *len - in : c->remaining;
            memmove(buf + out, buf + in, n);
            out += n;
            in += n;
            c->remaining -= n;
            if (c->remaining == 0) {
                c->state = CHUNK_DATA_END;
            }
            break;
        case CHUNK_DATA_END:
            if (buf[in] == '\n') {
                in++;
            } else if (buf[in] != '\r') {
                rc = 400;
                goto done;
            } else if (in + 1 == *len) {
                goto done; /* the LF has not arrived yet */
            } else if (buf[in + 1] != '\n') {
                rc = 400;
                goto done;
            } else {
                in += 2;
            }
            c->state = CHUNK_SIZE;
            break;
        }
    }
done:
    /* Keep the pending raw bytes right after the decoded body. */
    if (in != out) {
        memmove(buf + out, buf + in, *len - in);
        *len -= in - out;
    }
    c->decoded = out;
    return rc;
}

const char *inq_http_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {418, "I'm a teapot"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {423, "Locked"},
        {424, "Failed Dependency"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {451, "Unavailable For Legal Reasons"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
        {507, "Insufficient Storage"},
        {508, "Loop Detected"},
        {511, "Network Authentication Required"},
    };
    size_t i;

    for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (reasons[i].status == status) {
            return reasons[i].reason;
        }
    }
    if (status >= 400 && status < 500) {
        return "Client Error";
    }
    if (status >= 500 && status < 600) {
        return "Server Error";
    }
    return "Unknown";
}

void inq_http_date(time_t t, char out[32])
{
    struct tm tm;

    /* The program never calls setlocale(), so %a and %b are English. */
    gmtime_r(&t, &tm);
    strftime(out, 32, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}
