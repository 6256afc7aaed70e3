/*
 * server.h — the event loop of the demo API: one thread, one epoll
 * instance, non-blocking sockets, HTTP/1.1 keep-alive connections.
 *
 * The server owns the listening socket, the connections and a signalfd for
 * SIGINT and SIGTERM (which inq_server_new() blocks for the calling
 * thread); it borrows the API that executes the requests.
 */
#ifndef INQ_SERVER_H
#define INQ_SERVER_H

#include <stddef.h>

#include "api.h"
#include "buf.h"

typedef struct inq_server inq_server_t;

/*
 * Listens on listen ("HOST:PORT", "[IPv6]:PORT"; port 0 takes a free
 * port) and prepares the loop. api is borrowed and must outlive the server.
 * On failure returns a negative errno and writes a message to err.
 */
INQ_MUST_CHECK int inq_server_new(inq_server_t **out, const char *listen,
                                  inq_api_t *api, char *err, size_t errlen);

/* Writes the address actually listened on ("127.0.0.1:8081") to out. */
void inq_server_address(const inq_server_t *s, char *out, size_t len);

/*
 * Serves until SIGINT or SIGTERM arrives, then returns 0; connections still
 * open are closed by inq_server_free(). A failure of epoll itself returns
 * a negative errno.
 */
INQ_MUST_CHECK int inq_server_run(inq_server_t *s);

/* Closes every connection and the listening socket. s may be NULL. */
void inq_server_free(inq_server_t *s);

#endif
