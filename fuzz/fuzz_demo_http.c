/*
 * fuzz_demo_http.c — libFuzzer target for the demo API's HTTP parser
 * (examples/inquiries/http.c), which reads bytes from any client.
 *
 * The input is what a connection read. The target finds the head, parses
 * it, looks a few headers up, and then runs the chunked decoder over the
 * rest, fed in pieces whose sizes come from the input itself. Beyond "no
 * crash, no read outside the input" it checks the parser's promises: a
 * parsed head is as long as measured, every string it returns lies inside
 * the head (but the "/" of an absolute target that has no path), and the
 * decoder never reports more body than it was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../examples/inquiries/http.h"

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond))                                                           \
            abort();                                                           \
    } while (0)

static void fuzz_http_inside(inq_http_str_t s, const char *buf, size_t len)
{
    if (s.len == 0) {
        return;
    }
    FUZZ_CHECK(s.p >= buf && s.p + s.len <= buf + len);
}

static void fuzz_http_chunked(const uint8_t *data, size_t size)
{
    inq_http_chunked_t c;
    char *buf;
    size_t len = 0, fed = 0, step;
    int rc = INQ_HTTP_AGAIN;

    buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    inq_http_chunked_init(&c);

    while (fed < size && rc == INQ_HTTP_AGAIN) {
        step = 1 + data[fed] % 64;
        if (step > size - fed) {
            step = size - fed;
        }
        memcpy(buf + len, data + fed, step);
        len += step;
        fed += step;
        rc = inq_http_chunked_decode(&c, buf, &len, 4096);
        FUZZ_CHECK(rc == INQ_HTTP_AGAIN || rc == INQ_HTTP_DONE || rc == 400 ||
                   rc == 413);
        FUZZ_CHECK(c.decoded <= len && len <= fed);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static inq_http_request_t req;
    const char *buf = (const char *)data;
    size_t head;
    int rc;

    head = inq_http_find_head_end(buf, size, 0);
    FUZZ_CHECK(head <= size);
    if (head == 0) {
        fuzz_http_chunked(data, size);
        return 0;
    }

    rc = inq_http_parse_head(buf, head, &req);
    if (rc == INQ_HTTP_DONE) {
        FUZZ_CHECK(req.head_len == head);
        FUZZ_CHECK(req.nheaders <= INQ_HTTP_MAX_HEADERS);
        fuzz_http_inside(req.method, buf, head);
        fuzz_http_inside(req.target, buf, head);
        /* an absolute target without a path means "/", a literal */
        if (!(req.path.len == 1 && req.path.p[0] == '/')) {
            fuzz_http_inside(req.path, buf, head);
        }
        fuzz_http_inside(req.query, buf, head);
        for (size_t i = 0; i < req.nheaders; i++) {
            fuzz_http_inside(req.headers[i].name, buf, head);
            fuzz_http_inside(req.headers[i].value, buf, head);
        }
        (void)inq_http_header(&req, "idempotency-key");
        (void)inq_http_header(&req, "X-Demo-Delay-Ms");
    } else {
        FUZZ_CHECK(rc == 400 || rc == 413 || rc == 417 || rc == 431 ||
                   rc == 501 || rc == 505);
    }

    fuzz_http_chunked(data + head, size - head);
    return 0;
}
