/*
 * main.c — the `inquiries` command: a small Persona-like Inquiries API that
 * idemgate's demo, end-to-end tests and benchmarks put behind the gateway.
 *
 *   inquiries [--listen HOST:PORT] [--max-inquiries N]
 *
 * Parses the flags, creates the API (api.c) and the server (server.c),
 * prints the address it listens on and serves until SIGINT or SIGTERM.
 * See README.md beside this file for the endpoints and X-Demo-* switches.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "api.h"
#include "server.h"

#define DEFAULT_LISTEN        "127.0.0.1:8081"
#define DEFAULT_MAX_INQUIRIES 100000
#define MAX_STORED_BYTES      ((size_t)256 << 20)
#define MAX_KEYS              100000
#define MAX_KEY_LEN           1024

static void usage(FILE *f)
{
    fprintf(f,
            "usage: inquiries [--listen HOST:PORT] [--max-inquiries N]\n"
            "\n"
            "A demo Persona-like Inquiries API (HTTP/1.1, one thread).\n"
            "\n"
            "  --listen HOST:PORT   address to serve on (default %s;\n"
            "                       port 0 picks a free port)\n"
            "  --max-inquiries N    inquiries kept in memory, oldest evicted\n"
            "                       first (default %d)\n"
            "  --help               show this help\n"
            "\n"
            "Stops on SIGINT or SIGTERM. Endpoints and the X-Demo-* switches\n"
            "are described in examples/inquiries/README.md.\n",
            DEFAULT_LISTEN, DEFAULT_MAX_INQUIRIES);
}

/* Lets the server hold as many connections as the hard limit allows. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int parse_count(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 ||
        v > 100000000ULL) {
        return -EINVAL;
    }
    *out = (size_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"max-inquiries", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    inq_api_config_t cfg = {
        .max_inquiries = DEFAULT_MAX_INQUIRIES,
        .max_stored_bytes = MAX_STORED_BYTES,
        .max_keys = MAX_KEYS,
        .max_key_len = MAX_KEY_LEN,
    };
    const char *listen_addr = DEFAULT_LISTEN;
    inq_server_t *server = NULL;
    inq_api_t *api = NULL;
    char err[256], addr[80];
    int opt, rc, status = 1;

    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_addr = optarg;
            break;
        case 'm':
            if (parse_count(optarg, &cfg.max_inquiries) != 0) {
                fprintf(stderr, "inquiries: --max-inquiries: expected a "
                                "number from 1 to 100000000\n");
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    rc = inq_api_new(&api, &cfg);
    if (rc != 0) {
        fprintf(stderr, "inquiries: %s\n", strerror(-rc));
        goto out;
    }
    rc = inq_server_new(&server, listen_addr, api, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "inquiries: %s\n", err);
        goto out;
    }
    inq_server_address(server, addr, sizeof(addr));
    fprintf(stderr, "inquiries: listening on %s\n", addr);
    rc = inq_server_run(server);
    if (rc != 0) {
        fprintf(stderr, "inquiries: event loop: %s\n", strerror(-rc));
        goto out;
    }
    fprintf(stderr, "inquiries: stopped\n");
    status = 0;

out:
    inq_server_free(server);
    inq_api_free(api);
    return status;
}
