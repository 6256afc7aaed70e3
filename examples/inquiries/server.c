/*
 * server.c — connections and the epoll loop of the demo API (see server.h).
 *
 * Each connection reads one request at a time into its input buffer,
 * hands it to the API, writes the response from its output buffer and
 * then reads the next request (requests already pipelined behind it are
 * served in order). Epoll is level-triggered; a connection watches EPOLLIN
 * while reading, EPOLLOUT only while the socket refuses more output, and
 * nothing while a response is held back.
 *
 *                    accept()
 *                       |
 *                       v
 *   +-------------> READING ---- EOF, read error, idle 60 s ---> closed
 *   |                   |  \
 *   |                   |   +--- malformed, too large, too slow:
 *   |                   |        400 408 413 417 431 501 505 ------+
 *   |                   |                                          |
 *   |                   | complete request: inq_api_handle()       |
 *   |                   +--- X-Demo-Drop ---------------> closed   |
 *   |                   |                                 (silent) |
 *   |                   +--- X-Demo-Delay-Ms ---> DELAYING         |
 *   |                   |                          |  \            |
 *   |                   |             end of delay |   drop:      |
 *   |                   |                          |   closed     |
 *   |                   v                          v               |
 *   +-- keep-alive -- WRITING <--------------------+---------------+
 *                       |  \
 *                       |   +--- write error, no progress 60 s --> closed
 *                       |
 *                       | response sent, no keep-alive:
 *                       +--- clean ---------------------------> closed
 *                       +--- after an error --> LINGERING
 *                                                  |
 *                     write side shut; input read  +-- EOF, 5 s --> closed
 *                     and discarded, so that the client
 *                     reads the error, not a reset
 *
 * Memory per connection is its struct and two buffers that keep their
 * capacity between requests (up to 64 KiB), so a keep-alive connection
 * allocates nothing per request. X-Demo-Body-Bytes padding is never
 * materialised: it is sent from one static block of 'x' bytes.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "timer.h"

#define IDLE_TIMEOUT_MS    60000 /* between requests of a connection */
#define REQUEST_TIMEOUT_MS 30000 /* from a request's first byte to its end */
#define WRITE_TIMEOUT_MS   60000 /* a response that makes no progress */
#define LINGER_MS          5000  /* reading after an error response */
#define ACCEPT_PAUSE_MS    100   /* out of descriptors: retry accept() */

#define IN_MIN_CAP   4096
#define BUF_KEEP     ((size_t)64 << 10) /* buffer capacity kept when idle */
#define CHUNK_SLACK  8192 /* chunked framing bytes beyond the body limit */
#define SEND_IOVS    17
#define MAX_EVENTS   256
#define ACCEPT_BATCH 64

#define container_of(ptr, type, member)                                        \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

typedef enum {
    /* Reading a request into in. Watches EPOLLIN. Timer: the idle deadline
       while in is empty, the request deadline once bytes have come. */
    INQ_CONN_READING,
    /* The response is ready in out but X-Demo-Delay-Ms holds it back.
       Watches nothing. Timer: the end of the delay. */
    INQ_CONN_DELAYING,
    /* Sending out, then the padding, then the tail. Watches EPOLLOUT only
       while the socket is full. Timer: the write deadline. */
    INQ_CONN_WRITING,
    /* An error response went out and the write side is shut; input is
       discarded until EOF. Watches EPOLLIN. Timer: the linger deadline. */
    INQ_CONN_LINGERING,
} inq_conn_state_t;

typedef struct inq_conn inq_conn_t;

struct inq_conn {
    inq_server_t *server;
    inq_conn_t *prev; /* server->conns, for closing all at exit */
    inq_conn_t *next;
    int fd;
    inq_conn_state_t state;
    uint32_t events; /* what epoll watches for fd */
    inq_timer_t timer;

    /* The request being read: head first, then its body. */
    inq_buf_t in;
    size_t scanned;  /* bytes of in searched for the end of the head */
    size_t head_len; /* 0 until the head of the request is parsed */
    int64_t content_length;
    bool chunked;
    bool expect_continue;
    bool continue_sent;
    int version;
    inq_http_chunked_t chunk;

    /* The response being written: out[out_sent..], padding, tail. */
    inq_buf_t out;
    size_t out_sent;
    size_t pad_left;
    char tail[8]; /* what follows the padding; tail[tail_sent..tail_len) */
    size_t tail_len;
    size_t tail_sent;
    inq_api_drop_t drop;
    bool keep_alive; /* read another request after this response */
    bool linger;     /* an error: close through LINGERING */
};

struct inq_server {
    int epfd;
    int listen_fd;
    int signal_fd;
    bool stopping;
    inq_api_t *api; /* borrowed */
    inq_timers_t timers;
    inq_timer_t accept_timer; /* armed while accept() is paused */
    inq_conn_t *conns;
    size_t nconns;
    uint64_t now; /* monotonic ms, refreshed after each epoll_wait */
    time_t date_time;
    char date[32]; /* the Date header value for date_time */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    inq_http_request_t req; /* the request being dispatched */
    char discard[16384];    /* input of LINGERING connections */
};

/* The padding of X-Demo-Body-Bytes is sent from here. */
static char pad_block[65536];

static int conn_process(inq_conn_t *c);

/* ---- connection lifetime ------------------------------------------------ */

/* The only place a connection is freed. */
static void conn_close(inq_conn_t *c)
{
    inq_server_t *s = c->server;

    inq_timers_disarm(&s->timers, &c->timer);
    close(c->fd);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    s->nconns--;
    inq_buf_free(&c->in);
    inq_buf_free(&c->out);
    free(c);
}

/* Closes like conn_close(), with a reset instead of a FIN if asked. */
static void conn_drop(inq_conn_t *c, inq_api_drop_t how)
{
    struct linger lg = {1, 0};

    if (how == INQ_API_DROP_RESET) {
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    conn_close(c);
}

static void conn_arm(inq_conn_t *c, uint64_t ms)
{
    inq_timers_arm(&c->server->timers, &c->timer, c->server->now + ms);
}

/* Watches events for the connection; on failure closes it and returns -1. */
static int conn_watch(inq_conn_t *c, uint32_t events)
{
    struct epoll_event ev;

    if (c->events == events) {
        return 0;
    }
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(c->server->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        conn_close(c);
        return -1;
    }
    c->events = events;
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* A response is out: read the next request, linger or close. */
static int conn_finish(inq_conn_t *c)
{
    inq_buf_reset(&c->out, BUF_KEEP);
    c->out_sent = 0;
    if (!c->keep_alive) {
        if (!c->linger && c->in.len == 0) {
            conn_close(c);
            return -1;
        }
        (void)shutdown(c->fd, SHUT_WR);
        c->state = INQ_CONN_LINGERING;
        c->in.len = 0;
        if (conn_watch(c, EPOLLIN) != 0) {
            return -1;
        }
        conn_arm(c, LINGER_MS);
        return 0;
    }
    c->state = INQ_CONN_READING;
    if (conn_watch(c, EPOLLIN) != 0) {
        return -1;
    }
    if (c->in.len == 0) {
        inq_buf_reset(&c->in, BUF_KEEP);
    }
    conn_arm(c, c->in.len > 0 ? REQUEST_TIMEOUT_MS : IDLE_TIMEOUT_MS);
    return 0;
}

/*
 * Sends what is pending. Returns -1 when the connection was closed, else 0
 * (the response is out, or EPOLLOUT will bring us back).
 */
static int conn_send(inq_conn_t *c)
{
    struct iovec iov[SEND_IOVS];
    struct msghdr msg;
    size_t left, n, w;
    ssize_t sent;
    int i;

    for (;;) {
        i = 0;
        if (c->out_sent < c->out.len) {
            iov[i].iov_base = c->out.data + c->out_sent;
            iov[i].iov_len = c->out.len - c->out_sent;
            i++;
        }
        for (left = c->pad_left; left > 0 && i < SEND_IOVS - 1; i++) {
            n = left < sizeof(pad_block) ? left : sizeof(pad_block);
            iov[i].iov_base = pad_block;
            iov[i].iov_len = n;
            left -= n;
        }
        if (left == 0 && c->tail_sent < c->tail_len) {
            iov[i].iov_base = c->tail + c->tail_sent;
            iov[i].iov_len = c->tail_len - c->tail_sent;
            i++;
        }
        if (i == 0) {
            return conn_finish(c);
        }
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)i;
        sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (conn_watch(c, EPOLLOUT) != 0) {
                    return -1;
                }
                conn_arm(c, WRITE_TIMEOUT_MS);
                return 0;
            }
            conn_close(c);
            return -1;
        }
        w = (size_t)sent;
        n = c->out.len - c->out_sent < w ? c->out.len - c->out_sent : w;
        c->out_sent += n;
        w -= n;
        n = c->pad_left < w ? c->pad_left : w;
        c->pad_left -= n;
        w -= n;
        c->tail_sent += w;
    }
}

/* Appends the status line, headers and body of r to out. */
static int conn_queue(inq_conn_t *c, const inq_api_response_t *r)
{
    inq_buf_t *o = &c->out;
    int rc;

    rc = inq_buf_printf(o, "HTTP/1.1 %d %s\r\nDate: %s\r\n", r->status,
                        inq_http_reason(r->status), c->server->date);
    if (rc == 0 && r->content_type != NULL) {
        rc = inq_buf_printf(o, "Content-Type: %s\r\n", r->content_type);
    }
    if (rc == 0) {
        rc = inq_buf_printf(o, "Content-Length: %zu\r\n",
                            r->body_len + r->pad_len + r->tail_len);
    }
    if (rc == 0) {
        rc = inq_buf_append(o, r->headers, r->headers_len);
    }
    if (rc == 0 && !c->keep_alive) {
        rc = inq_buf_append_str(o, "Connection: close\r\n");
    } else if (rc == 0 && c->version == 10) {
        rc = inq_buf_append_str(o, "Connection: keep-alive\r\n");
    }
    if (rc == 0) {
        rc = inq_buf_append(o, "\r\n", 2);
    }
    if (rc == 0 && !r->head_only) {
        rc = inq_buf_append(o, r->body, r->body_len);
    }
    if (rc == 0 && r->tail_len > sizeof(c->tail)) {
        rc = -EINVAL;
    }
    if (rc != 0) {
        return rc;
    }
    c->pad_left = r->head_only ? 0 : r->pad_len;
    c->tail_len = r->head_only ? 0 : r->tail_len;
    c->tail_sent = 0;
    if (c->tail_len > 0) {
        memcpy(c->tail, r->tail, c->tail_len);
    }
    return 0;
}

/* Sends r now, after its delay, or not at all (drop). -1 when closed. */
static int conn_respond(inq_conn_t *c, const inq_api_response_t *r)
{
    if (r->drop != INQ_API_DROP_NONE && r->delay_ms == 0) {
        conn_drop(c, r->drop);
        return -1;
    }
    if (conn_queue(c, r) != 0) {
        conn_close(c);
        return -1;
    }
    c->drop = r->drop;
    if (r->delay_ms > 0) {
        c->state = INQ_CONN_DELAYING;
        if (conn_watch(c, 0) != 0) {
            return -1;
        }
        conn_arm(c, r->delay_ms);
        return 0;
    }
    c->state = INQ_CONN_WRITING;
    return conn_send(c);
}

/* Answers a request that cannot be served, then closes (via LINGERING). */
static int conn_fail(inq_conn_t *c, int status, const char *details)
{
    inq_api_response_t r;

    c->keep_alive = false;
    c->linger = true;
    c->in.len = 0;
    c->head_len = 0;
    inq_api_error(c->server->api, status, details, &r);
    return conn_respond(c, &r);
}

static const char *conn_error_details(int status)
{
    switch (status) {
    case 413:
        return "The request body is larger than 1 MiB.";
    case 417:
        return "The only expectation supported is 100-continue.";
    case 431:
        return "The request header section is larger than 16 KiB, or has "
               "more than 100 fields.";
    case 501:
        return "The only transfer coding supported is chunked.";
    case 505:
        return "Only HTTP/1.0 and HTTP/1.1 are supported.";
    default:
        return "The request is not valid HTTP/1.1.";
    }
}

/* ---- reading ------------------------------------------------------------ */

/* How far in may grow for the request being read. */
static size_t conn_in_limit(const inq_conn_t *c)
{
    if (c->head_len == 0) {
        return INQ_HTTP_MAX_HEAD;
    }
    if (c->chunked) {
        return c->head_len + INQ_HTTP_MAX_BODY + CHUNK_SLACK;
    }
    return c->head_len +
           (size_t)(c->content_length > 0 ? c->content_length : 0);
}

/* The body is incomplete: say "100 Continue" if the client waits for it. */
static int conn_await_body(inq_conn_t *c)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    ssize_t n;

    if (!c->expect_continue || c->continue_sent) {
        return 1;
    }
    c->continue_sent = true;
    if (inq_buf_append(&c->out, cont, sizeof(cont) - 1) != 0) {
        conn_close(c);
        return -1;
    }
    /* Whatever does not go now goes ahead of the response. */
    n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent,
             MSG_NOSIGNAL);
    if (n > 0) {
        c->out_sent += (size_t)n;
    }
    if (c->out_sent == c->out.len) {
        c->out.len = 0;
        c->out_sent = 0;
    }
    return 1;
}

static int conn_dispatch(inq_conn_t *c, const inq_http_request_t *req,
                         size_t body_len)
{
    inq_api_response_t r;

    inq_api_handle(c->server->api, req, c->in.data + c->head_len, body_len, &r);
    c->keep_alive = req->keep_alive;
    inq_buf_consume(&c->in, c->head_len + body_len);
    c->head_len = 0;
    c->scanned = 0;
    c->continue_sent = false;
    return conn_respond(c, &r);
}

/*
 * Makes progress on the request in in. Returns 1 when more input is
 * needed, 0 when a response was started (or an error answered), -1 when
 * the connection was closed.
 */
static int conn_step(inq_conn_t *c)
{
    inq_http_request_t *req = &c->server->req;
    bool parsed = false;
    size_t end, skip, region, body_len;
    int rc;

    if (c->head_len == 0) {
        /* Empty lines before a request line are allowed; skip them. */
        for (skip = 0; skip < c->in.len; skip++) {
            if (c->in.data[skip] != '\r' && c->in.data[skip] != '\n') {
                break;
            }
        }
        if (skip > 0) {
            inq_buf_consume(&c->in, skip);
            c->scanned = 0;
            if (c->in.len == 0) {
                return 1;
            }
        }
        end = inq_http_find_head_end(c->in.data, c->in.len, c->scanned);
        if (end > INQ_HTTP_MAX_HEAD ||
            (end == 0 && c->in.len >= INQ_HTTP_MAX_HEAD)) {
            return conn_fail(c, 431, conn_error_details(431));
        }
        if (end == 0) {
            c->scanned = c->in.len;
            return 1;
        }
        rc = inq_http_parse_head(c->in.data, end, req);
        if (rc != INQ_HTTP_DONE) {
            return conn_fail(c, rc, conn_error_details(rc));
        }
        parsed = true;
        c->head_len = end;
        c->content_length = req->content_length;
        c->chunked = req->chunked;
        c->expect_continue = req->expect_continue;
        c->version = req->version;
        if (c->content_length > INQ_HTTP_MAX_BODY) {
            return conn_fail(c, 413, conn_error_details(413));
        }
        if (c->chunked) {
            inq_http_chunked_init(&c->chunk);
        }
    }

    if (c->chunked) {
        region = c->in.len - c->head_len;
        rc = inq_http_chunked_decode(&c->chunk, c->in.data + c->head_len,
                                     &region, INQ_HTTP_MAX_BODY);
        c->in.len = c->head_len + region;
        if (rc == INQ_HTTP_AGAIN && c->in.len >= conn_in_limit(c)) {
            rc = 413;
        }
        if (rc == INQ_HTTP_AGAIN) {
            return conn_await_body(c);
        }
        if (rc != INQ_HTTP_DONE) {
            return conn_fail(c, rc, conn_error_details(rc));
        }
        body_len = c->chunk.decoded;
    } else {
        body_len = c->content_length > 0 ? (size_t)c->content_length : 0;
        if (c->in.len - c->head_len < body_len) {
            return conn_await_body(c);
        }
    }
    /* The head was parsed on an earlier read; in may have moved since. */
    if (!parsed &&
        inq_http_parse_head(c->in.data, c->head_len, req) != INQ_HTTP_DONE) {
        return conn_fail(c, 400, conn_error_details(400));
    }
    return conn_dispatch(c, req, body_len);
}

/* Serves the requests complete in in. -1 when the connection was closed. */
static int conn_process(inq_conn_t *c)
{
    int rc;

    while (c->state == INQ_CONN_READING && c->in.len > 0) {
        rc = conn_step(c);
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    return 0;
}

static int conn_read(inq_conn_t *c)
{
    size_t limit, room, want;
    bool fresh;
    ssize_t n;

    for (;;) {
        limit = conn_in_limit(c);
        if (c->in.len >= limit) {
            /* conn_step() never leaves a request in this state. */
            return conn_fail(c, 400, conn_error_details(400));
        }
        if (c->in.len == c->in.cap) {
            want = c->in.cap < IN_MIN_CAP ? IN_MIN_CAP : c->in.cap * 2;
            if (inq_buf_grow(&c->in, want < limit ? want : limit) != 0) {
                conn_close(c);
                return -1;
            }
        }
        room = (c->in.cap < limit ? c->in.cap : limit) - c->in.len;
        fresh = c->in.len == 0 && c->head_len == 0;
        n = read(c->fd, c->in.data + c->in.len, room);
        if (n > 0) {
            c->in.len += (size_t)n;
            if (fresh) {
                conn_arm(c, REQUEST_TIMEOUT_MS);
            }
            if (conn_process(c) < 0) {
                return -1;
            }
            if (c->state != INQ_CONN_READING || (size_t)n < room) {
                return 0;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        }
        /* EOF or an error: a partial request can never be completed. */
        conn_close(c);
        return -1;
    }
}

/* LINGERING: reads and throws away input until EOF. */
static void conn_discard(inq_conn_t *c)
{
    ssize_t n;
    int i;

    for (i = 0; i < 64; i++) {
        n = read(c->fd, c->server->discard, sizeof(c->server->discard));
        if (n > 0 || (n < 0 && errno == EINTR)) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        conn_close(c);
        return;
    }
}

/* ---- events and timers -------------------------------------------------- */

static void conn_on_event(inq_conn_t *c, uint32_t events)
{
    switch (c->state) {
    case INQ_CONN_READING:
        (void)conn_read(c);
        break;
    case INQ_CONN_WRITING:
        if (conn_send(c) == 0 && c->state == INQ_CONN_READING) {
            (void)conn_process(c);
        }
        break;
    case INQ_CONN_DELAYING:
        /* Only errors are reported here: the client went away. */
        if (events & (EPOLLERR | EPOLLHUP)) {
            conn_close(c);
        }
        break;
    case INQ_CONN_LINGERING:
        conn_discard(c);
        break;
    }
}

static void conn_on_timer(inq_timer_t *t)
{
    inq_conn_t *c = container_of(t, inq_conn_t, timer);

    switch (c->state) {
    case INQ_CONN_READING:
        if (c->in.len == 0 && c->head_len == 0) {
            conn_close(c);
            return;
        }
        (void)conn_fail(c, 408, "The request did not arrive within 30 s.");
        return;
    case INQ_CONN_DELAYING:
        if (c->drop != INQ_API_DROP_NONE) {
            conn_drop(c, c->drop);
            return;
        }
        c->state = INQ_CONN_WRITING;
        if (conn_send(c) == 0 && c->state == INQ_CONN_READING) {
            (void)conn_process(c);
        }
        return;
    case INQ_CONN_WRITING:
    case INQ_CONN_LINGERING:
        conn_close(c);
        return;
    }
}

static int conn_new(inq_server_t *s, int fd)
{
    struct epoll_event ev;
    inq_conn_t *c;

    /* One timer per connection, and one for accept(). */
    if (inq_timers_reserve(&s->timers, s->nconns + 2) != 0) {
        return -ENOMEM;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->server = s;
    c->fd = fd;
    c->state = INQ_CONN_READING;
    c->version = 11;
    inq_timer_init(&c->timer, conn_on_timer);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(c);
        return -errno;
    }
    c->events = EPOLLIN;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->nconns++;
    conn_arm(c, IDLE_TIMEOUT_MS);
    return 0;
}

/* ---- the server --------------------------------------------------------- */

static void server_watch_listen(inq_server_t *s, uint32_t events)
{
    struct epoll_event ev;

    ev.events = events;
    ev.data.ptr = &s->listen_fd;
    (void)epoll_ctl(s->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev);
}

static void server_on_accept_timer(inq_timer_t *t)
{
    inq_server_t *s = container_of(t, inq_server_t, accept_timer);

    server_watch_listen(s, EPOLLIN);
}

/* Out of descriptors or memory: stop accepting for a moment. */
static void server_pause_accept(inq_server_t *s)
{
    server_watch_listen(s, 0);
    inq_timers_arm(&s->timers, &s->accept_timer, s->now + ACCEPT_PAUSE_MS);
}

static void server_accept(inq_server_t *s)
{
    int i, fd, one = 1;

    for (i = 0; i < ACCEPT_BATCH; i++) {
        fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                server_pause_accept(s);
            }
            return;
        }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (conn_new(s, fd) != 0) {
            close(fd);
            server_pause_accept(s);
            return;
        }
    }
}

static void server_on_signal(inq_server_t *s)
{
    struct signalfd_siginfo si;

    while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        s->stopping = true;
    }
}

static void server_tick(inq_server_t *s)
{
    time_t t = time(NULL);

    s->now = inq_timer_now();
    if (t != s->date_time) {
        s->date_time = t;
        inq_http_date(t, s->date);
    }
}

int inq_server_run(inq_server_t *s)
{
    struct epoll_event events[MAX_EVENTS];
    int i, n;

    while (!s->stopping) {
        server_tick(s);
        n = epoll_wait(s->epfd, events, MAX_EVENTS,
                       inq_timers_timeout(&s->timers, s->now));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        server_tick(s);
        for (i = 0; i < n; i++) {
            if (events[i].data.ptr == &s->listen_fd) {
                server_accept(s);
            } else if (events[i].data.ptr == &s->signal_fd) {
                server_on_signal(s);
            } else {
                conn_on_event(events[i].data.ptr, events[i].events);
            }
        }
        inq_timers_run(&s->timers, s->now);
    }
    return 0;
}

/* Splits "host:port" or "[v6]:port" into host and port, in place. */
static int server_split_address(char *addr, char **host, char **port)
{
    char *colon = strrchr(addr, ':');

    if (colon == NULL || colon[1] == '\0') {
        return -EINVAL;
    }
    *colon = '\0';
    *port = colon + 1;
    *host = addr;
    if (addr[0] == '[') {
        if (colon == addr || colon[-1] != ']') {
            return -EINVAL;
        }
        colon[-1] = '\0';
        *host = addr + 1;
    }
    if (**host == '\0') {
        *host = NULL;
    }
    return 0;
}

static int server_listen(inq_server_t *s, const char *listen_addr, char *err,
                         size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char *copy, *host, *port;
    int fd = -1, one = 1, rc;

    copy = strdup(listen_addr);
    if (copy == NULL) {
        return -ENOMEM;
    }
    if (server_split_address(copy, &host, &port) != 0) {
        snprintf(err, errlen, "--listen %s: expected HOST:PORT", listen_addr);
        free(copy);
        return -EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--listen %s: %s", listen_addr, gai_strerror(rc));
        free(copy);
        return -EINVAL;
    }
    rc = -EADDRNOTAVAIL;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 4096) == 0) {
            break;
        }
        rc = -errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    free(copy);
    if (fd < 0) {
        snprintf(err, errlen, "--listen %s: %s", listen_addr, strerror(-rc));
        return rc;
    }
    s->listen_fd = fd;
    s->addrlen = sizeof(s->addr);
    if (getsockname(fd, (struct sockaddr *)&s->addr, &s->addrlen) != 0) {
        s->addrlen = 0;
    }
    return 0;
}

void inq_server_address(const inq_server_t *s, char *out, size_t len)
{
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&s->addr;
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&s->addr;
    char host[INET6_ADDRSTRLEN] = "?";

    if (s->addr.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
        snprintf(out, len, "[%s]:%u", host, ntohs(a6->sin6_port));
    } else {
        inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
        snprintf(out, len, "%s:%u", host, ntohs(a4->sin_port));
    }
}

int inq_server_new(inq_server_t **out, const char *listen_addr, inq_api_t *api,
                   char *err, size_t errlen)
{
    struct epoll_event ev;
    inq_server_t *s;
    sigset_t set;
    int rc;

    snprintf(err, errlen, "out of memory");
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    s->epfd = s->listen_fd = s->signal_fd = -1;
    s->api = api;
    inq_timer_init(&s->accept_timer, server_on_accept_timer);
    memset(pad_block, 'x', sizeof(pad_block));
    rc = inq_timers_reserve(&s->timers, 1);
    if (rc != 0) {
        goto fail;
    }
    rc = server_listen(s, listen_addr, err, errlen);
    if (rc != 0) {
        goto fail;
    }

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0 || sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
        goto fail_errno;
    }
    s->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->signal_fd < 0) {
        goto fail_errno;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &s->listen_fd;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0) {
        goto fail_errno;
    }
    ev.data.ptr = &s->signal_fd;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->signal_fd, &ev) != 0) {
        goto fail_errno;
    }
    server_tick(s);
    *out = s;
    return 0;

fail_errno:
    rc = -errno;
    snprintf(err, errlen, "event loop setup: %s", strerror(errno));
fail:
    inq_server_free(s);
    return rc;
}

void inq_server_free(inq_server_t *s)
{
    if (s == NULL) {
        return;
    }
    while (s->conns != NULL) {
        conn_close(s->conns);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
    }
    if (s->signal_fd >= 0) {
        close(s->signal_fd);
    }
    if (s->epfd >= 0) {
        close(s->epfd);
    }
    inq_timers_free(&s->timers);
    free(s);
}
