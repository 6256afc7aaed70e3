/*
 * idemgate.h — what the files of the idemgate command share.
 *
 * idemgate turns flags into an nginx configuration and runs nginx with the
 * idempotency module in the foreground. Data moves one way:
 *
 *   argv, --config FILE
 *      │  flags.c: where settings come from, defaults, cross checks
 *      │  settings.c: the flag table, one setter per flag
 *      │  values.c: durations, sizes, addresses, header names
 *      ▼
 *   idemgate_conf_t (checked, defaults filled in, paths absolute)
 *      │  conf.c, through confw.c: the nginx.conf writer that indents,
 *      │  quotes and refuses what nginx would misread
 *      ▼
 *   nginx.conf text ──────────────> stdout, for --print-config
 *      │  run.c
 *      ▼
 *   runtime and store directories, nginx as a child, signals forwarded,
 *   nginx's exit status as idemgate's
 *
 * main.c glues these steps together. Every function that can fail returns
 * 0 or -1; on -1 it has filled an idemgate_err_t with a one-line message
 * and the exit status it deserves (2 for a bad flag or value, 1 for a
 * failure of the system), which main() prints and returns.
 */
#ifndef IDEMGATE_H
#define IDEMGATE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "idem.h"

#if defined(__GNUC__)
#define IDEMGATE_MUST_CHECK   __attribute__((warn_unused_result))
#define IDEMGATE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define IDEMGATE_MUST_CHECK
#define IDEMGATE_PRINTF(f, a)
#endif

#define IDEMGATE_EXIT_FAILURE 1 /* the system failed us (I/O, fork, ...) */
#define IDEMGATE_EXIT_USAGE   2 /* a bad flag, value or config file */

/* A failure on its way up to main(). */
typedef struct {
    int status; /* the exit status: IDEMGATE_EXIT_... */
    char msg[1024];
} idemgate_err_t;

/* Fills *err (message without the "idemgate: " prefix); returns -1. */
int idemgate_fail(idemgate_err_t *err, int status, const char *fmt, ...)
    IDEMGATE_PRINTF(3, 4);

/* util.c: path as an absolute path (made from the working directory when
 * it is relative, "./" segments dropped), malloc'd; NULL with errno set. */
IDEMGATE_MUST_CHECK char *idemgate_abspath(const char *path);

/* Units: durations are kept in milliseconds, sizes in bytes. */
#define IDEMGATE_SECOND UINT64_C(1000)
#define IDEMGATE_MINUTE (60 * IDEMGATE_SECOND)
#define IDEMGATE_HOUR   (60 * IDEMGATE_MINUTE)
#define IDEMGATE_KIB    UINT64_C(1024)
#define IDEMGATE_MIB    (1024 * IDEMGATE_KIB)
#define IDEMGATE_GIB    (1024 * IDEMGATE_MIB)

/* Defaults that flags.c fills in once every flag is read. */
#define IDEMGATE_DEFAULT_STORE      "lmdb:./idemgate-data"
#define IDEMGATE_DEFAULT_NGINX      "/usr/sbin/nginx"
#define IDEMGATE_DEFAULT_ADMIN_HOST "127.0.0.1"
#define IDEMGATE_DEFAULT_ADMIN_PORT 9090u
#define IDEMGATE_MODULE_FILE        "ngx_http_idempotency_module.so"
/* where the module is when it is not beside idemgate: the distribution's
 * nginx module directory, where `make install` and the package put it */
#ifndef IDEMGATE_MODULE_DIR
#define IDEMGATE_MODULE_DIR "/usr/lib/nginx/modules"
#endif
#define IDEMGATE_LEASE_MARGIN (10 * IDEMGATE_SECOND)
/* what an https:// upstream's certificate is checked against, unless
 * --upstream-ca names another file (Debian's ca-certificates) */
#define IDEMGATE_DEFAULT_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define IDEMGATE_HTTPS_PORT        443u

/* Methods that take part (the module's idempotency_methods). */
#define IDEMGATE_M_POST   0x01u
#define IDEMGATE_M_PATCH  0x02u
#define IDEMGATE_M_PUT    0x04u
#define IDEMGATE_M_DELETE 0x08u

/* Where a setting came from; the command line overrides the file. */
typedef enum {
    IDEMGATE_FROM_DEFAULT = 0,
    IDEMGATE_FROM_FILE,
    IDEMGATE_FROM_CMDLINE
} idemgate_origin_t;

/* HOST:PORT as nginx writes it: host is an IPv4 address, a name, or an
 * IPv6 address in brackets. Owns host. */
typedef struct {
    char *host;
    unsigned port;
} idemgate_addr_t;

/* One --upstream URL, http(s)://HOST[:PORT][/prefix], taken apart. Owns
 * addr.host and prefix. */
typedef struct {
    idemgate_addr_t addr;
    int tls;      /* https:// */
    char *prefix; /* "" or "/path" without trailing '/' */
} idemgate_upstream_t;

/* A repeatable flag's values. Owns items and each string. A flag given on
 * the command line replaces the values from the file instead of adding. */
typedef struct {
    char **items;
    size_t n;
    idemgate_origin_t origin;
} idemgate_list_t;

/* Every setting, after flags.c has parsed and finished it. Owns all its
 * strings; free with idemgate_conf_free(). Durations are milliseconds,
 * sizes bytes. */
typedef struct {
    idemgate_addr_t listen;
    char *tls_cert; /* --tls-cert, absolute; NULL: plain HTTP */
    char *tls_key;  /* --tls-key, absolute; set exactly when tls_cert is */

    /* --upstream as given (the URLs, checked one by one), then the
     * servers flags.c took from them: one scheme and one prefix for all */
    idemgate_list_t upstream_urls;
    idemgate_upstream_t *upstreams;
    size_t nupstreams;
    int upstream_tls;      /* https:// */
    char *upstream_prefix; /* "" or "/path" without trailing '/' */
    /* https only: the name the certificate is checked against (and SNI),
     * and the Host the API gets: the name, with the port when every
     * server has the same one and it is not 443 */
    char *upstream_name;
    char *upstream_host;
    char *upstream_ca; /* absolute: --upstream-ca, or the system bundle */
    int upstream_insecure;
    idemgate_addr_t admin;
    int admin_off;

    char *store;     /* the store URL, an lmdb path made absolute */
    char *store_dir; /* the lmdb directory, NULL for other URLs */
    uint64_t ttl_ms;
    uint64_t wait_ms;
    uint64_t lease_ms;
    int lease_set;
    unsigned methods;              /* IDEMGATE_M_... */
    idemgate_list_t scope_headers; /* header names as given */
    idemgate_list_t scope_cookies; /* cookie names, after the headers */
    int scope_none;
    int require_key;
    int on_unknown_release;
    const char *stream;      /* "auto", "pass" or "hold" (static) */
    const char *error_style; /* "persona", "ietf" or "stripe" (static) */
    idemgate_list_t no_store_headers;
    idemgate_list_t key_headers;   /* besides Idempotency-Key */
    char *error_template;          /* absolute path, or NULL */
    idem_errtpl_t *error_tpl;      /* its template, read at startup */
    idemgate_list_t fp_ignore;     /* JSON Pointers and field names */
    idemgate_list_t fp_headers;    /* headers the fingerprint covers */
    unsigned release_statuses[16]; /* statuses that free the key */
    size_t n_release_statuses;
    char *api_log; /* absolute path, or NULL: no API log */

    uint64_t max_body_bytes;
    uint64_t max_header_bytes;
    uint64_t max_response_bytes;
    uint64_t client_timeout_ms;
    uint64_t upstream_timeout_ms;
    unsigned workers; /* 0: one per core ("auto") */
    char *user;       /* --user as given; NULL: nobody, when run as root */

    char *runtime_dir; /* absolute; NULL: a fresh one under $TMPDIR */
    char *nginx;       /* the nginx binary */
    char *module;      /* absolute path of the module's .so */
    char *config_file; /* --config, as given */
    int print_config;
    int help;

    /* set by run.c when idemgate runs as root: the workers' identity
     * (the user's primary group) */
    char *worker_user;
    char *worker_group;
    uid_t worker_uid;
    gid_t worker_gid;
} idemgate_conf_t;

/* values.c */

/* Why a value was refused: a buffer for the reason, which leaves out the
 * flag's name (the caller knows where the value came from). */
typedef struct {
    char *buf;
    size_t len;
} idemgate_why_t;

/* Writes the reason into why; returns -1. */
int idemgate_why(idemgate_why_t why, const char *fmt, ...)
    IDEMGATE_PRINTF(2, 3);
/* Decimal digits into *out, *end after them; -1 when there are none or
 * they overflow. */
IDEMGATE_MUST_CHECK int idemgate_parse_digits(const char *s, uint64_t *out,
                                              const char **end);
/* "500ms", "30s", "5m", "24h" or "30" (seconds), within [min_ms, max_ms]. */
IDEMGATE_MUST_CHECK int idemgate_parse_duration(const char *s, uint64_t min_ms,
                                                uint64_t max_ms, uint64_t *out,
                                                idemgate_why_t why);
/* "1024", "16k", "1m", "1g" (also "kb", "KiB"), within [min, max]. */
IDEMGATE_MUST_CHECK int idemgate_parse_size(const char *s, uint64_t min,
                                            uint64_t max, uint64_t *out,
                                            idemgate_why_t why);
/* true/false, yes/no, on/off, 1/0. */
IDEMGATE_MUST_CHECK int idemgate_parse_bool(const char *s, int *out,
                                            idemgate_why_t why);
/* s[0..len) as HOST:PORT or [IPV6]:PORT; replaces out->host. */
IDEMGATE_MUST_CHECK int idemgate_parse_addr(const char *s, size_t len,
                                            idemgate_addr_t *out,
                                            idemgate_why_t why);
/* An HTTP header name; with for_variable, only the letters, digits and '-'
 * that nginx can name as $http_NAME. */
IDEMGATE_MUST_CHECK int
idemgate_check_header_name(const char *s, int for_variable, idemgate_why_t why);
/* v as http(s)://HOST[:PORT][/prefix] into *out (which it owns after a
 * success; free with idemgate_upstream_free()). An https URL without a
 * port means 443; an http URL needs one. */
IDEMGATE_MUST_CHECK int idemgate_parse_upstream(const char *v,
                                                idemgate_upstream_t *out,
                                                idemgate_why_t why);
void idemgate_upstream_free(idemgate_upstream_t *u);
/* Refuses control characters, which nginx.conf cannot carry. */
IDEMGATE_MUST_CHECK int idemgate_check_printable(const char *s,
                                                 idemgate_why_t why);
/* A duration as nginx and people read it: "24h", "90s", "250ms". */
void idemgate_duration_str(uint64_t ms, char *out, size_t outlen);

/* settings.c */

typedef int (*idemgate_setter_t)(idemgate_conf_t *conf, const char *value,
                                 idemgate_origin_t origin, idemgate_why_t why);

#define IDEMGATE_FLAG_CMDLINE_ONLY 0x01u /* not in a --config file */
#define IDEMGATE_FLAG_SWITCH       0x02u /* takes no value ... */
#define IDEMGATE_FLAG_EQ_VALUE     0x04u /* ... unless given as --name=VALUE */
#define IDEMGATE_FLAG_EARLY        0x08u /* read before the --config file */

/* One setting: its flag (and config file name), its setter, its help. */
typedef struct {
    const char *name;    /* without the leading "--" */
    const char *metavar; /* NULL for a switch */
    idemgate_setter_t set;
    unsigned flags; /* IDEMGATE_FLAG_... */
    const char *help;
} idemgate_flag_t;

/* The defaults that need no other setting. */
void idemgate_conf_init(idemgate_conf_t *conf);
/* The setting called name[0..len) ('_' matches '-'), or NULL. */
const idemgate_flag_t *idemgate_flag_find(const char *name, size_t len);
/* Writes the --help text to stdout. */
void idemgate_flags_usage(void);
/* Adds a copy of value to l; the first value from a new origin replaces
 * the values from the old one. */
IDEMGATE_MUST_CHECK int idemgate_list_add(idemgate_list_t *l, const char *value,
                                          idemgate_origin_t origin,
                                          idemgate_why_t why);
void idemgate_list_clear(idemgate_list_t *l);

/* tls.c */

/* Checks that cert (PEM, a certificate chain) and key (PEM, its private
 * key) can be read and belong together, as nginx will need them. */
IDEMGATE_MUST_CHECK int
idemgate_tls_check_pair(const char *cert, const char *key, idemgate_err_t *err);
/* Checks that ca (flag names the setting for messages) holds at least one
 * PEM certificate. */
IDEMGATE_MUST_CHECK int idemgate_tls_check_ca(const char *flag, const char *ca,
                                              idemgate_err_t *err);

/* flags.c */

/* Parses argv (and the --config file it names) into *conf, fills in the
 * defaults and checks what depends on several settings. */
IDEMGATE_MUST_CHECK int idemgate_flags_parse(idemgate_conf_t *conf, int argc,
                                             char **argv, idemgate_err_t *err);
void idemgate_conf_free(idemgate_conf_t *conf);

/* conf.c */

/* The nginx configuration for conf, NUL-terminated, malloc'd: the caller
 * frees *out. */
IDEMGATE_MUST_CHECK int idemgate_conf_render(const idemgate_conf_t *conf,
                                             char **out, size_t *outlen,
                                             idemgate_err_t *err);

/* run.c */

/* When idemgate runs as root: looks up the user the workers run as
 * (--user, default nobody) and records it in conf (rendered as nginx's
 * `user`). Otherwise the workers run as idemgate's own user, and a --user
 * naming another is refused. */
IDEMGATE_MUST_CHECK int idemgate_run_identity(idemgate_conf_t *conf,
                                              idemgate_err_t *err);
/* Prepares the directories, writes the configuration, runs nginx until it
 * exits and returns the exit status idemgate should end with (or -1). */
IDEMGATE_MUST_CHECK int idemgate_run(idemgate_conf_t *conf,
                                     const char *nginx_conf, size_t len,
                                     idemgate_err_t *err);

#endif /* IDEMGATE_H */
