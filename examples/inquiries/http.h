/*
 * http.h — HTTP/1.x request parsing for the demo API: pure functions over
 * bytes that a connection has already read, no I/O and no allocation.
 *
 *   read buffer:  | head ............ \r\n\r\n | body ....... | next ...
 *                   inq_http_find_head_end()     Content-Length bytes, or
 *                   inq_http_parse_head()        inq_http_chunked_decode()
 *
 * The parsed request borrows every string from the buffer it was parsed
 * from; it is valid while those bytes stay where they are.
 *
 * Parsing functions return INQ_HTTP_DONE, INQ_HTTP_AGAIN (more bytes are
 * needed), or the HTTP status of the error to answer (400, 413, 417, 431,
 * 501, 505), after which the connection is to be closed.
 */
#ifndef INQ_HTTP_H
#define INQ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define INQ_HTTP_DONE  0
#define INQ_HTTP_AGAIN (-1)

#define INQ_HTTP_MAX_HEAD    16384     /* request line + headers + CRLF */
#define INQ_HTTP_MAX_BODY    (1 << 20) /* decoded request body */
#define INQ_HTTP_MAX_HEADERS 100

/* A borrowed byte string, not NUL-terminated. */
typedef struct {
    const char *p;
    size_t len;
} inq_http_str_t;

typedef struct {
    inq_http_str_t name;
    inq_http_str_t value; /* without surrounding whitespace */
} inq_http_header_t;

typedef struct {
    inq_http_str_t method;
    inq_http_str_t target;  /* as sent */
    inq_http_str_t path;    /* target without scheme, authority and query */
    inq_http_str_t query;   /* after '?', empty when there is none */
    int version;            /* 10 for HTTP/1.0, 11 for HTTP/1.1 and later */
    size_t head_len;        /* bytes from the request line to the blank line */
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked */
    bool keep_alive;        /* the client allows another request */
    bool expect_continue;   /* Expect: 100-continue */
    size_t nheaders;
    inq_http_header_t headers[INQ_HTTP_MAX_HEADERS];
} inq_http_request_t;

/*
 * Looks for the blank line that ends a request head in buf[0..len),
 * starting the search near offset from (bytes before it were searched
 * already). Returns the length of the head including the blank line, or 0
 * when it is not there yet. Line ends may be CRLF or a bare LF.
 */
size_t inq_http_find_head_end(const char *buf, size_t len, size_t from);

/*
 * Parses a complete head buf[0..head_len) (as measured by
 * inq_http_find_head_end) into req. Checks the request line, every header
 * line and the framing headers: Content-Length, Transfer-Encoding, Host,
 * Connection and Expect. Returns INQ_HTTP_DONE or an error status.
 */
int inq_http_parse_head(const char *buf, size_t head_len,
                        inq_http_request_t *req);

/*
 * The first header called name (case-insensitive), or NULL.
 */
const inq_http_str_t *inq_http_header(const inq_http_request_t *req,
                                      const char *name);

/* Case-insensitive comparison of s with the NUL-terminated lit. */
bool inq_http_str_eq(inq_http_str_t s, const char *lit);

/*
 * Incremental, in-place decoder of a chunked body.
 *
 * buf[0..*len) is the body region of the read buffer: its first
 * c->decoded bytes are body already decoded, the rest are raw bytes not yet
 * decoded. Each call decodes what it can, moves the raw bytes still pending
 * right after the decoded ones and updates *len. On INQ_HTTP_DONE the body
 * is buf[0..c->decoded) and any bytes after the message follow it. Errors:
 * 400 (malformed) and 413 (body over max_body bytes).
 */
typedef struct {
    int state;
    size_t remaining; /* bytes left in the current chunk */
    size_t decoded;   /* body bytes at the start of the region */
    size_t trailer;   /* bytes of trailer fields seen */
} inq_http_chunked_t;

void inq_http_chunked_init(inq_http_chunked_t *c);
int inq_http_chunked_decode(inq_http_chunked_t *c, char *buf, size_t *len,
                            size_t max_body);

/* The reason phrase of a status; never NULL. */
const char *inq_http_reason(int status);

/* Writes the IMF-fixdate of t ("Sun, 06 Nov 1994 08:49:37 GMT") to out. */
void inq_http_date(time_t t, char out[32]);

#endif
