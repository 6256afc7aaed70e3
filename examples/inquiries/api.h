/*
 * api.h — the demo Inquiries API itself: routes, handlers and the
 * X-Demo-* switches, with no knowledge of sockets.
 *
 *   server.c --(parsed request, body)--> inq_api_handle()
 *            <--(inq_api_response_t: status, headers, body, switches)--
 *
 * The server turns the response description into bytes on the wire and
 * applies its delay/drop instructions; the API keeps the inquiries
 * (store.c) and the execution counts (counter.c).
 */
#ifndef INQ_API_H
#define INQ_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"

typedef struct inq_api inq_api_t;

typedef struct {
    size_t max_inquiries;    /* inquiries kept; the oldest are evicted */
    size_t max_stored_bytes; /* JSON bytes of the inquiries kept */
    size_t max_keys;         /* Idempotency-Key values counted one by one */
    size_t max_key_len;      /* longer keys count only in the total */
} inq_api_config_t;

/* What X-Demo-Drop asks for. */
typedef enum {
    INQ_API_DROP_NONE,
    INQ_API_DROP_CLOSE, /* close the connection (FIN), send nothing */
    INQ_API_DROP_RESET, /* reset the connection (RST), send nothing */
} inq_api_drop_t;

/*
 * A response to send. The body on the wire is body, then pad_len bytes of
 * 'x', then tail; Content-Length counts all three even when head_only.
 * body and headers are borrowed from the API until its next call; tail is
 * a static string of at most 8 bytes (the end of a padded JSON object).
 */
typedef struct {
    int status;
    const char *content_type; /* static; NULL for none */
    const char *headers;      /* extra header lines, each ending in CRLF */
    size_t headers_len;
    const char *body;
    size_t body_len;
    size_t pad_len;
    const char *tail;
    size_t tail_len;
    bool head_only;      /* HEAD: send the head without the body */
    uint32_t delay_ms;   /* hold the response this long first */
    inq_api_drop_t drop; /* after the delay, send nothing and close */
} inq_api_response_t;

/* Creates the API with empty store and counters. 0, -EINVAL or -ENOMEM. */
INQ_MUST_CHECK int inq_api_new(inq_api_t **out, const inq_api_config_t *cfg);

/* Frees the API and everything it keeps. api may be NULL. */
void inq_api_free(inq_api_t *api);

/*
 * Executes one well-formed request: req as parsed, body[0..body_len) its
 * decoded body. Always fills resp (out of memory becomes a 500).
 */
void inq_api_handle(inq_api_t *api, const inq_http_request_t *req,
                    const char *body, size_t body_len,
                    inq_api_response_t *resp);

/*
 * Fills resp with a protocol error found by the server before any request
 * could be executed (400, 408, 413, 431, ...): a JSON errors body whose
 * details are the NUL-terminated details. Not counted as a request.
 */
void inq_api_error(inq_api_t *api, int status, const char *details,
                   inq_api_response_t *resp);

#endif
