/*
 * idem.h — the public interface of libidem, the idempotency library that
 * every part of idemgate stands on.
 *
 * libidem has two halves:
 *
 *   core  (lib/core)   pure functions: key parsing, scope and request
 *                      fingerprints, the record codec, the decision table
 *                      and the gateway's error bodies. No I/O, and no
 *                      global state but constant tables (the record
 *                      codec's CRC table is built once, under
 *                      pthread_once).
 *   store (lib/store)  one interface over several backends (mem, lmdb,
 *                      postgres, redis) that keeps one record per (scope,
 *                      key) and applies the decision table atomically.
 *
 * Conventions (the same everywhere, after libuv):
 *   - A function that can fail returns int: 0 on success, a negative
 *     IDEM_E... code from IDEM_ERRNO_MAP otherwise. The values are fixed
 *     for ever (see IDEM_ERRNO_MAP). idem_strerror() and idem_err_name()
 *     describe any code; idem_key_problem() gives the client's sentence
 *     for a key error.
 *   - Every function's comment ends with two lines. "Errors:" lists every
 *     code it can return besides 0, all of them ("none" for a function
 *     that cannot fail); a code it returns that is not listed is a bug of
 *     the comment or of the code. "Thread safety:" says which calls may
 *     run at the same time: "thread-safe" means any number of threads may
 *     call it at once, on the same arguments too, unless it says
 *     otherwise.
 *   - A call that fails leaves its output arguments untouched unless it says
 *     otherwise, and leaves nothing half-stored.
 *   - Every pointer in a signature says who owns it. "Borrowed" means the
 *     callee keeps no reference after returning.
 *   - Times are milliseconds since the Unix epoch (int64_t), passed in by the
 *     caller: the library never reads the local clock for decisions. A
 *     networked store may measure leases and TTLs on its server's clock
 *     instead (IDEM_STORE_CAP_CLOCK).
 */
#ifndef IDEM_H
#define IDEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define IDEM_MUST_CHECK __attribute__((warn_unused_result))
#else
#define IDEM_MUST_CHECK
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * X(NAME, VALUE, message): IDEM_E<NAME> is VALUE, a negative int written
 * out here, not derived from the position in the list. A value is part of
 * the ABI: it is never reused or renumbered, and a code removed leaves its
 * value unused. A new code takes the next free value, one below the lowest
 * in use, wherever it goes in the list. tests/unit/test_errors.c pins every
 * value.
 *
 * The messages are short, for logs and for callers of the library. What a
 * client reads in the "details" of a 400 for a malformed or missing key is
 * not one of them but idem_key_problem()'s sentence.
 *
 * IDEM_EFAULT is returned by no function of libidem (the module's crash
 * failpoints kill the process instead); the code stays, for callers that
 * report a failpoint.
 */
#define IDEM_ERRNO_MAP(X)                                                      \
    X(NOMEM, -1, "out of memory")                                              \
    X(INVAL, -2, "invalid argument")                                           \
    X(KEYEMPTY, -3, "key is empty")                                            \
    X(KEYLONG, -4, "key longer than 255 bytes")                                \
    X(KEYCHAR, -5, "key has a byte outside 0x21-0x7E")                         \
    X(KEYQUOTE, -6, "key is a malformed quoted string")                        \
    X(KEYDUP, -7, "key header repeated with different values")                 \
    X(KEYMISSING, -8, "key required but absent")                               \
    X(CORRUPT, -9, "stored record is corrupt or truncated")                    \
    X(VERSION, -10, "stored record has an unknown format version")             \
    X(TOOBIG, -11, "value exceeds a size limit")                               \
    X(NOTFOUND, -12, "no such record")                                         \
    X(NOTOWNER, -13, "the record is not held in progress by this owner")       \
    X(FULL, -14, "the store is full (map or disk)")                            \
    X(PERM, -15, "permission denied by the store")                             \
    X(IO, -16, "input/output error in the store")                              \
    X(UNAVAIL, -17, "the store is unavailable")                                \
    X(BADURL, -18, "unsupported or malformed store URL")                       \
    X(FAULT, -19, "a failpoint fired")                                         \
    X(EVICTION, -20,                                                           \
      "the store may forget keys before their TTL: Redis "                     \
      "maxmemory-policy is not noeviction, or cannot be read "                 \
      "(CONFIG disabled); add allow_eviction=1 to the URL to "                 \
      "accept that risk")                                                      \
    X(PENDING, -21,                                                            \
      "the record is not known durable yet: read it where waiting is "         \
      "allowed")

#define IDEM_ERRNO_CODE_(name, value, msg) IDEM_E##name = (value),
enum { IDEM_OK = 0, IDEM_ERRNO_MAP(IDEM_ERRNO_CODE_) IDEM_ERRNO_LAST_ = 0 };
#undef IDEM_ERRNO_CODE_

/*
 * The message of a code, static; never NULL ("success" for 0, "unknown
 * error" for a foreign code). Short library text for logs: a client is
 * shown idem_key_problem() instead.
 * Errors: none.
 * Thread safety: thread-safe.
 */
const char *idem_strerror(int err);

/*
 * The symbolic name of a code, e.g. "IDEM_EKEYLONG", static; never NULL
 * ("IDEM_OK" for 0, "unknown" for a foreign code).
 * Errors: none.
 * Thread safety: thread-safe.
 */
const char *idem_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Small value types                                                         */
/* ------------------------------------------------------------------------ */

#define IDEM_HASH_LEN 32
#define IDEM_KEY_MAX  255

/* A SHA-256 digest: a scope or a request fingerprint. */
typedef struct {
    uint8_t bytes[IDEM_HASH_LEN];
} idem_hash_t;

/* A borrowed byte string; data may be NULL when len is 0. */
typedef struct {
    const char *data;
    size_t len;
} idem_str_t;

/* One response header, name and value borrowed from whoever built it. */
typedef struct {
    idem_str_t name;
    idem_str_t value;
} idem_header_t;

/* A response as stored and replayed. All memory is borrowed. */
typedef struct {
    int status;
    const idem_header_t *headers;
    size_t nheaders;
    const uint8_t *body;
    size_t body_len;
} idem_response_t;

/* ------------------------------------------------------------------------ */
/* Core: the key (SPEC §2)                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Parses one Idempotency-Key header value: a bare key of 1-255 characters
 * in 0x21-0x7E, or the structured-field quoted form "abc_123" (escapes \" and
 * \\ only) whose content obeys the same rule.
 *
 * out receives the key (at most IDEM_KEY_MAX bytes, not NUL-terminated);
 * it must have room for IDEM_KEY_MAX bytes. *out_len receives its length.
 *
 * On error out and *out_len are untouched. IDEM_EKEYDUP and
 * IDEM_EKEYMISSING are the caller's to find (several header fields, or
 * none); idem_key_problem() has the client's sentence for all six.
 * Errors: IDEM_EKEYEMPTY, IDEM_EKEYLONG, IDEM_EKEYCHAR, IDEM_EKEYQUOTE.
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_key_parse(const char *value, size_t value_len,
                                   char *out, size_t *out_len);

/*
 * The sentence a client reads in the "details" of a 400 for the key error
 * err (IDEM_EKEYEMPTY, IDEM_EKEYLONG, IDEM_EKEYCHAR, IDEM_EKEYQUOTE,
 * IDEM_EKEYDUP or IDEM_EKEYMISSING): the rule the key broke, e.g. "The
 * Idempotency-Key is longer than 255 characters.". Static, never freed.
 * Clients (and the e2e tests) read these texts byte for byte. NULL for any
 * other code, 0 included: only the key errors are the client's to fix.
 * Errors: none.
 * Thread safety: thread-safe.
 */
const char *idem_key_problem(int err);

/* ------------------------------------------------------------------------ */
/* Core: scope and fingerprint (SPEC §2, §4)                                 */
/* ------------------------------------------------------------------------ */

/*
 * The scope: SHA-256 over the configured scope values in order. An absent
 * value (data == NULL) differs from an empty one (data != NULL, len 0, e.g.
 * ""). With n == 0 every request shares one scope. The values are not kept
 * anywhere.
 *
 * On error *out is untouched and the request must not go on unscoped.
 * Errors: IDEM_ENOMEM (OpenSSL allocates a digest context).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_scope_hash(const idem_str_t *values, size_t n,
                                    idem_hash_t *out);

/* How the body took part in a fingerprint (for tests and diagnostics). */
typedef enum {
    IDEM_BODY_BYTES = 0, /* byte-for-byte (other media, or invalid JSON)   */
    IDEM_BODY_JSON = 1,  /* canonical JSON: sorted members, no whitespace  */
    IDEM_BODY_FORM = 2   /* form pairs decoded, sorted by name, stable     */
} idem_body_kind_t;

/*
 * The parameters of a request, all borrowed.
 *
 * ignore and headers are what a deployment chose to leave out of the
 * comparison and to bring into it (SPEC §4 --fingerprint-ignore,
 * --fingerprint-header); with both empty (NULL, 0) the fingerprint is the
 * plain one, which no fingerprint with options ever equals.
 *
 * ignore: entries that idem_fp_ignore_check() accepts. One that starts
 *   with '/' is an RFC 6901 JSON Pointer into a JSON body ("/a/0/b~1c");
 *   any other is the name of a query or form field, matched against the
 *   decoded names of canon.h (so "client time" leaves out "client+time=1"
 *   and "client%20time=1").
 * headers: the request headers brought in, one per configured name:
 *   name as configured (compared case-insensitively), value as received
 *   (several fields of one name joined by ", " by the caller), and
 *   value.data NULL when the request has no such header, which differs
 *   from an empty value.
 *
 * content_type is the first Content-Type field, the one the media type is
 * read from; content_types and content_encoding are forwarded too and so
 * always take part (data NULL, absent, differs from ""). host, the Host
 * header, takes part for a caller that sets it (host names in any case);
 * the module leaves it absent, since a Host names the node addressed and
 * a retry through another node must replay.
 */
typedef struct {
    idem_str_t method;
    idem_str_t path;             /* without the query                       */
    idem_str_t query;            /* after '?', without it; may be empty     */
    idem_str_t content_type;     /* the raw Content-Type header, or empty   */
    idem_str_t content_types;    /* every Content-Type field joined by ", "
                                  * when there are several, else data NULL */
    idem_str_t content_encoding; /* Content-Encoding fields joined by
                                  * ", ", data NULL when absent         */
    idem_str_t host;             /* the Host header, data NULL if absent */
    const uint8_t *body;
    size_t body_len;
    const idem_str_t *ignore; /* nignore entries, or NULL               */
    size_t nignore;
    const idem_header_t *headers; /* nheaders entries, or NULL          */
    size_t nheaders;
} idem_request_t;

/*
 * Whether s[0..len) can be an entry of idem_request_t.ignore: a JSON
 * Pointer ('/' first) whose every '~' is followed by '0' or '1', or a
 * field name of 1 byte or more.
 * Errors: IDEM_EINVAL (s cannot be an entry).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_fp_ignore_check(const char *s, size_t len);

/* Bounds on JSON canonicalization, so that it is no denial-of-service door. */
#define IDEM_FP_JSON_MAX_DEPTH 64
#define IDEM_FP_JSON_MAX_BYTES (1u << 20)

/*
 * The request fingerprint of SPEC §4: method, path, query (pairs
 * percent-decoded with '+' as a space, sorted by decoded name, repeated
 * names keep their order; a bad escape such as "%zz" equals nothing
 * decoded), media type (type/subtype lower-cased; parameters with
 * case-insensitive names, sorted by name, values as sent with "A" and A
 * one value), every Content-Type field when there are several, the
 * Content-Encoding (as sent), the Host (ASCII case ignored) and body (JSON
 * canonicalized, form pairs like the query, anything else byte-for-byte).
 * lib/core/canon.h has the exact rules. A JSON body that is invalid,
 * deeper than IDEM_FP_JSON_MAX_DEPTH, larger than IDEM_FP_JSON_MAX_BYTES
 * or has duplicate member names is fingerprinted as bytes; so is one whose
 * charset parameter is not UTF-8 ("utf-8" or "utf8", any case), whose
 * media type parameters do not parse, and any body (JSON or form) of a
 * request with a Content-Encoding or with several Content-Type fields:
 * the API reads such a body otherwise than canon.h does. That is not an
 * error.
 *
 * With ignore entries, a JSON body is canonicalized without the values the
 * pointers name, all resolved against the body as received: a member
 * (by its exact name after "~1" is read as '/' and "~0" as '~') or an array
 * element (a token of decimal digits without leading zeros; the later
 * elements keep their place after it). A pointer that names nothing
 * changes nothing. Query and form pairs whose decoded name is an ignored
 * name are dropped. A body compared as bytes is compared whole. The
 * entries (sorted, without duplicates, so their order does not matter) and
 * the headers (sorted by lower-cased name, each with its value or its
 * absence) are part of the digest.
 *
 * kind, when not NULL, receives how the body took part.
 * Errors: IDEM_ENOMEM; IDEM_EINVAL (an ignore entry that
 * idem_fp_ignore_check() refuses).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_fingerprint(const idem_request_t *req,
                                     idem_hash_t *out, idem_body_kind_t *kind);

/*
 * A cache of fingerprints for one thread (lib/core/fpcache.c): a request
 * whose inputs (method, path, query, Content-Type, the Content-Type
 * fields, Content-Encoding, Host, body, ignore entries and headers, all
 * byte for byte as given) and scope (NULL: none) equal
 * those of one cached is answered from the cache instead of
 * canonicalized again, the case of a client's retries; the cache is keyed
 * by a SHA-256 digest of scope and inputs, so what it answers is what
 * idem_fingerprint() would, and requests of two scopes never meet in it.
 * slots (1 to IDEM_FP_CACHE_MAX_SLOTS, rounded up to a power of two) is
 * how many fingerprints it keeps, 66 bytes each; a newer one may take an
 * older one's slot. Out of memory for its digest, cached computes the
 * fingerprint uncached.
 * Errors: create: IDEM_EINVAL (out NULL, slots out of range),
 * IDEM_ENOMEM. cached: IDEM_EINVAL (c, req or out NULL, or what
 * idem_fingerprint() refuses), IDEM_ENOMEM. free, stats: none.
 * Thread safety: a cache is one thread's at a time; distinct caches are
 * independent. stats gives the hits and the misses counted so far.
 */
#define IDEM_FP_CACHE_MAX_SLOTS ((size_t)1 << 20)

typedef struct idem_fp_cache_s idem_fp_cache_t;

IDEM_MUST_CHECK int idem_fp_cache_create(size_t slots, idem_fp_cache_t **out);
void idem_fp_cache_free(idem_fp_cache_t *c);
IDEM_MUST_CHECK int idem_fingerprint_cached(idem_fp_cache_t *c,
                                            const idem_hash_t *scope,
                                            const idem_request_t *req,
                                            idem_hash_t *out,
                                            idem_body_kind_t *kind);
void idem_fp_cache_stats(const idem_fp_cache_t *c, uint64_t *hits,
                         uint64_t *misses);

/* ------------------------------------------------------------------------ */
/* Core: the record and its codec                                            */
/* ------------------------------------------------------------------------ */

typedef enum {
    IDEM_STATE_IN_PROGRESS = 1,
    IDEM_STATE_COMPLETE = 2
} idem_state_t;

/* Record flags. */
#define IDEM_REC_MISMATCH_LOGGED 0x01u /* first mismatch already API-logged */
#define IDEM_REC_UNKNOWN_OUTCOME 0x02u /* result stored for a lost outcome  */
/* The record's Location is the server's own redirect, which nginx makes
 * absolute on output, rather than a plain header. */
#define IDEM_REC_LOCATION_SLOT 0x04u

/*
 * One record per (scope, key). Between created and expires the key is
 * remembered. While in progress, owner holds it until lease_until; after
 * that the outcome is unknown (stale). The response is meaningful only when
 * complete.
 */
typedef struct {
    idem_state_t state;
    uint32_t flags;
    idem_hash_t fingerprint;
    int64_t created_ms;
    int64_t expires_ms;
    uint64_t owner;
    int64_t lease_until_ms;
    idem_response_t response;
} idem_record_t;

/*
 * The exact encoded size of rec; 0 if it cannot be encoded (too large).
 * Errors: none.
 * Thread safety: thread-safe.
 */
size_t idem_record_encoded_size(const idem_record_t *rec);

/*
 * Encodes rec into buf (cap bytes). *len receives the encoded size.
 * Errors: IDEM_ETOOBIG (buf too small, or a field over its limit);
 * IDEM_EINVAL (a state other than IN_PROGRESS and COMPLETE, a status
 * outside 0-999, or a body of length > 0 that is NULL).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_record_encode(const idem_record_t *rec, uint8_t *buf,
                                       size_t cap, size_t *len);

/*
 * Decodes len bytes into *rec. The strings and body of rec point into buf
 * (which must outlive rec); the header array is allocated and returned in
 * *headers_out, to be freed with free() (NULL when there are none).
 * Never reads outside buf.
 * Errors: IDEM_ECORRUPT, IDEM_EVERSION, IDEM_ENOMEM.
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_record_decode(const uint8_t *buf, size_t len,
                                       idem_record_t *rec,
                                       idem_header_t **headers_out);

/* ------------------------------------------------------------------------ */
/* Core: the decision table                                                  */
/* ------------------------------------------------------------------------ */

typedef enum {
    IDEM_DECIDE_CLAIM = 1,      /* absent or expired: claim it             */
    IDEM_DECIDE_REPLAY,         /* complete, same fingerprint              */
    IDEM_DECIDE_MISMATCH_FIRST, /* other fingerprint, not logged yet       */
    IDEM_DECIDE_MISMATCH_AGAIN, /* other fingerprint, already logged       */
    IDEM_DECIDE_IN_PROGRESS,    /* same fingerprint, lease still running   */
    IDEM_DECIDE_STALE           /* same fingerprint, in progress, lease gone */
} idem_decision_t;

/*
 * What a request with fingerprint fp at time now meets, given the stored
 * record (NULL when none). A record whose expires_ms <= now counts as
 * absent. An in-progress record is never expired while its lease runs.
 * Errors: none.
 * Thread safety: thread-safe.
 */
idem_decision_t idem_decide(const idem_record_t *rec, const idem_hash_t *fp,
                            int64_t now_ms);

/*
 * Whether rec counts as absent at now_ms (see idem_decide): 1 or 0.
 * Errors: none.
 * Thread safety: thread-safe.
 */
int idem_record_expired(const idem_record_t *rec, int64_t now_ms);

/* ------------------------------------------------------------------------ */
/* Core: gateway-made error responses (SPEC §2, §4, §5, §8)                  */
/* ------------------------------------------------------------------------ */

typedef enum {
    IDEM_STYLE_PERSONA = 0, /* {"errors":[{"title","details"}]}          */
    IDEM_STYLE_IETF = 1,    /* application/problem+json                  */
    IDEM_STYLE_STRIPE = 2   /* {"error":{"type","message"}}, Stripe's    */
} idem_style_t;

typedef enum {
    IDEM_ERR_KEY_INVALID = 1,  /* a malformed key; detail from the key error */
    IDEM_ERR_KEY_MISSING,      /* --require-key and no key                   */
    IDEM_ERR_MISMATCH,         /* key reused with other parameters           */
    IDEM_ERR_IN_PROGRESS,      /* still running after the wait               */
    IDEM_ERR_STORE,            /* the store is unavailable: 503              */
    IDEM_ERR_UNKNOWN_OUTCOME,  /* sent, no complete response stored: 504     */
    IDEM_ERR_UPSTREAM_DOWN,    /* the upstream could not be reached: 502     */
    IDEM_ERR_TOO_LARGE,        /* response over the store limit: stored 502  */
    IDEM_ERR_UNKNOWN_BROKEN,   /* sent, then the upstream connection broke or
                                  its answer was invalid: 502                 */
    IDEM_ERR_TARGET_FRAGMENT,  /* a request target with a '#' fragment: 400  */
    IDEM_ERR_UNKNOWN_RELEASED, /* UNKNOWN_OUTCOME, the key released
                                  (--on-unknown release): 504               */
    IDEM_ERR_BROKEN_RELEASED   /* UNKNOWN_BROKEN, the key released: 502      */
} idem_err_kind_t;

/* A gateway-made response: status, content type and a malloc'd body. */
typedef struct {
    int status;
    const char *content_type; /* static, or owned by the template     */
    char *body;               /* malloc'd, NUL-terminated; caller frees */
    size_t body_len;
} idem_errbody_t;

/*
 * Builds the error response of kind in style. key (may be empty) is
 * JSON-escaped into the details where the text names it; key_err is the
 * IDEM_EKEY... code for IDEM_ERR_KEY_INVALID and ignored otherwise: the
 * details are then idem_key_problem(key_err), or "The Idempotency-Key
 * header is malformed." for a code that is not a key error.
 * Errors: IDEM_ENOMEM; IDEM_EINVAL (an unknown style or kind).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_errbody(idem_style_t style, idem_err_kind_t kind,
                                 const char *key, size_t key_len, int key_err,
                                 idem_errbody_t *out);

/*
 * idem_errbody() for a key that came in the header named
 * header[0..header_len) (another than Idempotency-Key: --key-header): the
 * rule a malformed key broke names that header where it would say
 * "Idempotency-Key". header NULL, or Idempotency-Key in any case: the
 * same as idem_errbody(). Errors and thread safety: as idem_errbody().
 */
IDEM_MUST_CHECK int idem_errbody_named(idem_style_t style, idem_err_kind_t kind,
                                       const char *key, size_t key_len,
                                       int key_err, const char *header,
                                       size_t header_len, idem_errbody_t *out);

/*
 * An error template (SPEC §5 --error-template): a body for every
 * gateway-made error, in whatever shape the API's clients read.
 *
 * The text of a template is the body, with these placeholders:
 *
 *   {status}    the HTTP status (the persona style's: 400, 409, 502, ...)
 *   {title}     a short title ("Idempotency error", "Bad gateway", ...)
 *   {details}   the sentence saying what happened, the key in it
 *   {key}       the Idempotency-Key as received (may be empty)
 *
 * each replaced by its value JSON-escaped, without quotes (as the inside of
 * a JSON string: '"' is \", '\' is \\, control bytes \u00XX, invalid
 * UTF-8 \ufffd), so a template puts the text ones inside quotes:
 * {"error":{"code":{status},"message":"{details}"}}. "{{" is a literal
 * '{'. Any other '{' followed by letters, digits or '_' and a '}' is an
 * unknown placeholder, which idem_errtpl_parse() refuses; any other '{' is
 * text (JSON's own braces stay as they are).
 *
 * When the first line is "Content-Type: TYPE" (the name in any case), TYPE
 * is the responses' Content-Type and the body starts on the next line;
 * otherwise the whole text is the body and the type application/json.
 */
typedef struct idem_errtpl_s idem_errtpl_t;

#define IDEM_ERRTPL_MAX (64u * 1024) /* the largest template text */

/*
 * Reads a template from text[0..len) (copied: text may go after). On
 * failure a sentence saying what is wrong (the unknown placeholder and
 * its line, a content type with control bytes, ...) is written to why,
 * cap bytes with its NUL. *out receives a template to free with
 * idem_errtpl_free().
 * Errors: IDEM_EINVAL (text NULL with len > 0, or, with a sentence in
 * why, more than IDEM_ERRTPL_MAX bytes or not a valid template);
 * IDEM_ENOMEM.
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_errtpl_parse(const char *text, size_t len,
                                      idem_errtpl_t **out, char *why,
                                      size_t cap);

/*
 * Frees tpl (NULL is nothing).
 * Errors: none.
 * Thread safety: not thread-safe with any other call on tpl: every call
 * that uses tpl must have returned, and none may follow.
 */
void idem_errtpl_free(idem_errtpl_t *tpl);

/*
 * The Content-Type of tpl's responses, NUL-terminated, owned by tpl.
 * Errors: none.
 * Thread safety: thread-safe.
 */
const char *idem_errtpl_content_type(const idem_errtpl_t *tpl);

/*
 * Renders tpl with the values given (title and details NUL-terminated,
 * key key_len bytes). out->content_type points into tpl, which must
 * outlive it; out->body is malloc'd as for idem_errbody().
 * Errors: IDEM_ENOMEM.
 * Thread safety: thread-safe; one tpl may be shared by threads.
 */
IDEM_MUST_CHECK int idem_errtpl_render(const idem_errtpl_t *tpl, int status,
                                       const char *title, const char *details,
                                       const char *key, size_t key_len,
                                       idem_errbody_t *out);

/*
 * idem_errbody() through a template: the status, title and details of
 * kind in the persona style, rendered by tpl.
 * Errors: IDEM_ENOMEM; IDEM_EINVAL (an unknown kind).
 * Thread safety: thread-safe; one tpl may be shared by threads.
 */
IDEM_MUST_CHECK int idem_errbody_template(const idem_errtpl_t *tpl,
                                          idem_err_kind_t kind, const char *key,
                                          size_t key_len, int key_err,
                                          idem_errbody_t *out);

/* idem_errbody_template() naming the key's header as idem_errbody_named(). */
IDEM_MUST_CHECK int idem_errbody_template_named(const idem_errtpl_t *tpl,
                                                idem_err_kind_t kind,
                                                const char *key, size_t key_len,
                                                int key_err, const char *header,
                                                size_t header_len,
                                                idem_errbody_t *out);

/*
 * The body of an error nginx answers itself (a request it cannot parse, a
 * body over the limit, an upstream it cannot reach, ...), which the
 * gateway serves as a page in style: status is the HTTP status (100-599),
 * title the persona style's title ("Bad request"), ietf_title the status
 * phrase the ietf style gives as its title ("Bad Request"), and details
 * the sentence for "details", "detail" or "message"; all three are
 * NUL-terminated and JSON-escaped into the body. The ietf style's type is
 * "about:blank"; the stripe style's type is "invalid_request_error" for a
 * 4xx status and "api_error" otherwise. out is filled as by
 * idem_errbody(): out->content_type is static, out->body malloc'd for the
 * caller to free. Thread-safe.
 * Returns 0, IDEM_ENOMEM, or IDEM_EINVAL for an unknown style, a status
 * out of range or a NULL text.
 */
IDEM_MUST_CHECK int idem_errbody_page(idem_style_t style, int status,
                                      const char *title, const char *ietf_title,
                                      const char *details, idem_errbody_t *out);

/*
 * Appends s as the inside of a JSON string (no quotes) to dst, which has
 * room for cap bytes. Returns the length the escaped text needs (at most
 * 6 * len); writes nothing past cap. '"' and '\' are escaped, control bytes
 * become \u00XX, well-formed UTF-8 is copied, and each byte that is not part
 * of a well-formed UTF-8 sequence becomes \ufffd: the text is valid UTF-8
 * JSON whatever s holds.
 * Errors: none.
 * Thread safety: thread-safe.
 */
size_t idem_json_escape(char *dst, size_t cap, const char *s, size_t len);

/* ------------------------------------------------------------------------ */
/* Store                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct idem_store_s idem_store_t;

/*
 * What the store's errors mean, whichever call returns them (each call
 * lists the ones it can return):
 *   IDEM_EUNAVAIL  the store cannot serve now: its server is unreachable
 *                  or did not answer in time (PostgreSQL, Redis; calls fail
 *                  fast until a backoff has passed, then heal by
 *                  themselves), a Redis record kept changing under a write
 *                  (another gateway) until it gave up, or LMDB is busy,
 *                  out of reader slots or resized by another process
 *   IDEM_EIO       an I/O error, or an answer the store should never give
 *                  (LMDB: any other error, MDB_CORRUPTED included;
 *                  PostgreSQL: an SQL error of the operation; Redis: an
 *                  error or unexpected reply)
 *   IDEM_EFULL     no room: LMDB's map or disk (ENOSPC, EDQUOT, EFBIG), or
 *                  a new claim that would eat into its reserve; PostgreSQL
 *                  disk full (SQLSTATE 53100); Redis maxmemory (OOM)
 *   IDEM_EPERM     the store refuses us: LMDB files (EACCES, EPERM,
 *                  EROFS); PostgreSQL a privilege (42501: on the table,
 *                  or to create it); Redis the password (at open only;
 *                  later a refused login is IDEM_EUNAVAIL, as is a
 *                  PostgreSQL one)
 *   IDEM_ENOMEM    out of memory, here or in the server (PostgreSQL 53200)
 *   IDEM_ECORRUPT, IDEM_EVERSION  the record stored under the key cannot be
 *                  read (see idem_record_decode()); nothing is changed
 * IDEM_EEVICTION comes from idem_store_open() alone; no store call returns
 * IDEM_EFAULT or an IDEM_EKEY... code.
 */

/*
 * Opens a store from its URL:
 *   mem:                     one process, for tests
 *   lmdb:PATH[?opts]         PATH a directory, created when missing; opts
 *                            are '&'-separated: map_size=SIZE (bytes, or
 *                            with a k, m or g suffix: KiB, MiB, GiB; from
 *                            64k to 16384g; default
 *                            IDEM_STORE_LMDB_DEFAULT_MAP_SIZE),
 *                            group_commit=0|1 (default 1), sync=0|1
 *                            (default 1: every commit is fsynced)
 *   postgres://...           (or postgresql://) any libpq connection URI,
 *                            plus table=NAME (default idem_records; the
 *                            table NAME_v1 is created on first use),
 *                            pool=N (1-64 connections, default 4) and
 *                            clock=store|caller (default store: leases and
 *                            TTLs on the server's clock). Nothing connects
 *                            here: the store opens while the server is
 *                            down, and its calls fail with IDEM_EUNAVAIL
 *                            until it answers (see lib/store/postgres.c)
 *   redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?opts]
 *                            one Redis server shared by any number of
 *                            processes and machines; opts: prefix=TEXT
 *                            (default "idemgate:", no '{' or '}'),
 *                            timeout=DURATION (default 2s),
 *                            allow_eviction=0|1 (default 0),
 *                            clock=store|caller (default store). A server
 *                            that is down does not fail the open: calls
 *                            get IDEM_EUNAVAIL until it is back. One that
 *                            may evict keys fails it with IDEM_EEVICTION,
 *                            one that refuses the password with IDEM_EPERM.
 * *out receives a handle to close with idem_store_close(). An LMDB store
 * must be opened after fork() in the process that uses it. LMDB keeps a
 * reserve of free pages (map/32, at least 64 pages and at most 32768) for
 * deletes, prune and the
 * completion of claims already made: a new claim gets IDEM_EFULL once it
 * would eat into that reserve, before the map is entirely full.
 * Errors: IDEM_EINVAL (url or out NULL); IDEM_EBADURL
 * (idem_store_url_check() says why); IDEM_ENOMEM; LMDB: IDEM_EFULL,
 * IDEM_EPERM, IDEM_EUNAVAIL, IDEM_EIO (making the directory, opening or
 * creating the files); Redis: IDEM_EEVICTION, IDEM_EPERM (the password
 * refused), IDEM_EIO (SELECT or SCRIPT LOAD refused). A PostgreSQL open
 * fails only with IDEM_EINVAL, IDEM_EBADURL or IDEM_ENOMEM.
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_store_open(const char *url, idem_store_t **out);

/*
 * The default map of an LMDB store: 128 GiB, sparse on disk (a file grows
 * only as records are written), so it costs address space, not disk. A
 * small record (a JSON response of about 100 bytes with three headers)
 * takes 700 to 750 bytes of the map with its expiry index entry, so this
 * holds some 180 million records before new claims are refused: 2,000 new
 * keys/s kept for 24 h, where SPEC §9 asks for 1,000 (86.4 million). A
 * 32-bit process cannot map that much and gets 1 GiB.
 */
#if SIZE_MAX > 0xffffffffu
#define IDEM_STORE_LMDB_DEFAULT_MAP_SIZE ((uint64_t)128 << 30)
#else
#define IDEM_STORE_LMDB_DEFAULT_MAP_SIZE ((uint64_t)1 << 30)
#endif

/*
 * Checks url the way idem_store_open() reads it, without opening or
 * creating anything. On failure a sentence saying what is wrong (the
 * unknown option, the bad size, ...) is written to why, cap bytes with
 * its NUL (why may be NULL when cap is 0).
 * Errors: IDEM_EBADURL; IDEM_EINVAL (url NULL, or why NULL with cap > 0);
 * IDEM_ENOMEM (LMDB, PostgreSQL: copying the path or the URI).
 * Thread safety: thread-safe.
 */
IDEM_MUST_CHECK int idem_store_url_check(const char *url, char *why,
                                         size_t cap);

/*
 * What a store can do: the bits of idem_store_caps().
 *   INLINE_READ  lookup_nowait is a memory read, fit for an event loop
 *                (LMDB, mem); a networked store's lookup is a round trip
 *   DIRECTORY    the store is files in a directory: check and identity
 *                compare them with the path
 *   BOUNDED      a fixed size: usage has a limit, a new claim may be EFULL
 *   SHARED       the records outlive the handle: other processes (other
 *                machines, for a networked store) that open the URL, and
 *                later handles, see them (LMDB, PostgreSQL, Redis; not
 *                mem)
 *   CLOCK        leases and TTLs are measured on the store's own clock
 *                (one for every machine that shares it), not on the
 *                now_ms callers pass; a URL may turn that off for tests
 *                that move time (postgres, redis: clock=caller)
 *   SELF_EXPIRY  the store forgets expired records by itself (Redis
 *                expiry): prune() removes nothing, and usage counts what
 *                the server holds, not only this store's records
 *   OVERLAP      batches of several threads overlap their waits for the
 *                disk (LMDB with its log: a commit syncs after it lets
 *                the next one in), so a caller gains by running batches
 *                side by side; without it, commits are serial through
 *                their syncs and one batch at a time carries more
 */
enum {
    IDEM_STORE_CAP_INLINE_READ = 1u << 0,
    IDEM_STORE_CAP_DIRECTORY = 1u << 1,
    IDEM_STORE_CAP_BOUNDED = 1u << 2,
    IDEM_STORE_CAP_CLOCK = 1u << 3,
    IDEM_STORE_CAP_SHARED = 1u << 4,
    IDEM_STORE_CAP_SELF_EXPIRY = 1u << 5,
    IDEM_STORE_CAP_OVERLAP = 1u << 6
};

/*
 * The IDEM_STORE_CAP_... bits of store.
 * Errors: none.
 * Thread safety: thread-safe.
 */
unsigned idem_store_caps(const idem_store_t *store);

/*
 * Closes the store (NULL is nothing); waits for nothing.
 * Errors: none.
 * Thread safety: not thread-safe: every other call on store must have
 * returned, and none may follow.
 */
void idem_store_close(idem_store_t *store);

/*
 * The backend's name: "mem", "lmdb", "postgres" or "redis" (a postgresql://
 * URL too is "postgres"), static.
 * Errors: none.
 * Thread safety: thread-safe.
 */
const char *idem_store_backend(const idem_store_t *store);

/* What begin() does with a stale record (SPEC §4, --on-unknown). */
typedef enum {
    IDEM_ON_UNKNOWN_STORE = 0,  /* keep the given error as the key's result */
    IDEM_ON_UNKNOWN_RELEASE = 1 /* forget the old claim and claim anew      */
} idem_on_unknown_t;

/* The inputs of begin(). All borrowed. */
typedef struct {
    const idem_hash_t *scope;
    const char *key;
    size_t key_len;
    const idem_hash_t *fingerprint;
    int64_t now_ms;
    int64_t ttl_ms;   /* how long a key is remembered     */
    int64_t lease_ms; /* how long a claim is trusted      */
    idem_on_unknown_t on_unknown;
    const idem_response_t *unknown_response; /* stored for a stale record
                                                under IDEM_ON_UNKNOWN_STORE */
    /*
     * Or, when unknown_response is NULL, made only when a stale record
     * needs it (rarely: a claim whose lease passed): unknown_make(
     * unknown_arg, &resp) points resp at the response to store, in memory
     * the caller keeps until the call returns, and returns 0 or an IDEM_E
     * code (the op's error). It may be called more than once per call (a
     * networked store plans again after a conflict) and from the store's
     * thread; it must give the same response each time.
     */
    int (*unknown_make)(void *unknown_arg, const idem_response_t **resp);
    void *unknown_arg;
} idem_begin_t;

typedef enum {
    IDEM_BEGIN_CLAIMED = 1, /* the claim is durable; caller owns it       */
    IDEM_BEGIN_REPLAY,      /* complete: replay record's response          */
    IDEM_BEGIN_MISMATCH,    /* other parameters: first_mismatch says if
                               this is the first (to be API-logged)        */
    IDEM_BEGIN_IN_PROGRESS, /* another owner holds it: wait and retry      */
    IDEM_BEGIN_STALE        /* the lease had passed: the unknown-outcome
                               response is now the key's result (replay it)
                               — under IDEM_ON_UNKNOWN_RELEASE begin()
                               claims instead and returns CLAIMED with
                               took_over set                               */
} idem_begin_outcome_t;

/*
 * A result that owns its memory: free with idem_result_free(). record is
 * set for REPLAY, STALE, MISMATCH and IN_PROGRESS (the record as found or
 * as left); for CLAIMED it holds the new in-progress record.
 */
typedef struct {
    idem_begin_outcome_t outcome;
    uint64_t owner;     /* CLAIMED: the fencing token      */
    int first_mismatch; /* MISMATCH: 1 the first time      */
    int took_over;      /* CLAIMED over a stale record     */
    idem_record_t record;
    void *mem_; /* private: backing memory of record */
} idem_result_t;

/*
 * Frees what res owns and zeroes it (NULL, or a zeroed res, is nothing).
 * Errors: none.
 * Thread safety: thread-safe on distinct results.
 */
void idem_result_free(idem_result_t *res);

/*
 * Atomically looks the key up and acts on the decision table: claims an
 * absent/expired key (durably, before returning), marks a first mismatch as
 * logged, finalizes or takes over a stale record. Returns 0 (see
 * res->outcome) or an error; on error *res is untouched and nothing was
 * changed, but for IDEM_EUNAVAIL from PostgreSQL or Redis when the
 * connection broke with the commit sent: the write may then have landed
 * (a claim durable, whose owner token no one has: it goes stale when its
 * lease ends).
 * Errors: IDEM_EINVAL (store, in or res NULL, a scope, key, fingerprint,
 * ttl, lease, on_unknown or unknown_response out of range); IDEM_ECORRUPT,
 * IDEM_EVERSION (the stored record cannot be read); IDEM_ETOOBIG (the
 * unknown_response too large to store); IDEM_ENOMEM; IDEM_EFULL (LMDB: a
 * new claim refused for room, among others); IDEM_EPERM; IDEM_EIO;
 * IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_begin(idem_store_t *store,
                                     const idem_begin_t *in,
                                     idem_result_t *res);

/*
 * Stores resp as the key's result, durably before returning, if the record
 * is in progress and held by owner. flags are OR-ed into the record's
 * flags (e.g. IDEM_REC_UNKNOWN_OUTCOME). On error nothing changed (but
 * for IDEM_EUNAVAIL as in idem_store_begin()).
 * Errors: IDEM_EINVAL (store NULL, scope or key out of range, resp NULL,
 * a status outside 100-999, or headers or body NULL with a count > 0);
 * IDEM_ENOTOWNER (the record is gone, complete or held by another);
 * IDEM_ETOOBIG (resp over a record limit); IDEM_ECORRUPT, IDEM_EVERSION;
 * IDEM_ENOMEM; IDEM_EFULL; IDEM_EPERM; IDEM_EIO; IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int
idem_store_complete(idem_store_t *store, const idem_hash_t *scope,
                    const char *key, size_t key_len, uint64_t owner,
                    const idem_response_t *resp, uint32_t flags);

/*
 * Drops owner's claim (nothing was sent upstream): the key becomes absent.
 * LMDB never refuses it for room (it frees space), though a full disk can
 * still fail its commit.
 * Errors: IDEM_EINVAL (store NULL, scope or key out of range);
 * IDEM_ENOTOWNER (the record is gone, complete or held by another);
 * IDEM_ECORRUPT, IDEM_EVERSION; IDEM_ENOMEM; IDEM_EFULL; IDEM_EPERM;
 * IDEM_EIO; IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_release(idem_store_t *store,
                                       const idem_hash_t *scope,
                                       const char *key, size_t key_len,
                                       uint64_t owner);

/*
 * Reads the record without changing anything: cheap, for the event loop's
 * replay path (a memory read where the store has
 * IDEM_STORE_CAP_INLINE_READ, a round trip for a networked store). On 0,
 * res->record is set and res->outcome is 0. Free res with
 * idem_result_free().
 * Errors: IDEM_EINVAL (store or res NULL, scope or key out of range);
 * IDEM_ENOTFOUND (no record, or an expired one); IDEM_ECORRUPT,
 * IDEM_EVERSION; IDEM_ENOMEM; IDEM_EIO; IDEM_EUNAVAIL; IDEM_EPERM (LMDB
 * files, a PostgreSQL privilege); IDEM_EFULL (PostgreSQL: its disk
 * full).
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_lookup(idem_store_t *store,
                                      const idem_hash_t *scope, const char *key,
                                      size_t key_len, int64_t now_ms,
                                      idem_result_t *res);

/*
 * Removes up to budget records whose expiry has passed at now_ms (and no
 * in-progress record whose lease still runs). *removed receives how many;
 * *more is set to 1 when expired records remain; both are untouched on
 * error. A store with IDEM_STORE_CAP_SELF_EXPIRY (Redis) removes nothing
 * and never fails (*removed 0, *more 0).
 * Errors: IDEM_EINVAL (store, removed or more NULL); IDEM_ENOMEM;
 * IDEM_EFULL (LMDB: the map so full that even one removal does not fit;
 * PostgreSQL: its disk); IDEM_EPERM; IDEM_EIO; IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_prune(idem_store_t *store, int64_t now_ms,
                                     size_t budget, size_t *removed, int *more);

/*
 * Like lookup, but never waits for the disk, for an event loop (with
 * IDEM_STORE_CAP_INLINE_READ): IDEM_EPENDING when the record is there but
 * not known durable yet (LMDB: the commit that wrote it may still be
 * syncing), where lookup would wait for it; then ask from a thread, or
 * wait for the commit's own caller to be answered.
 * Errors: those of lookup; IDEM_EPENDING.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_lookup_nowait(idem_store_t *store,
                                             const idem_hash_t *scope,
                                             const char *key, size_t key_len,
                                             int64_t now_ms,
                                             idem_result_t *res);

/*
 * Admin: like lookup, but also returns expired records.
 * Errors: IDEM_EINVAL (store or res NULL, scope or key out of range);
 * IDEM_ENOTFOUND (no record); IDEM_ECORRUPT, IDEM_EVERSION; IDEM_ENOMEM;
 * IDEM_EIO; IDEM_EUNAVAIL; IDEM_EPERM; IDEM_EFULL (PostgreSQL: its disk
 * full).
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_get(idem_store_t *store,
                                   const idem_hash_t *scope, const char *key,
                                   size_t key_len, idem_result_t *res);

/*
 * Admin: removes the record whatever its state, an unreadable one too.
 * Errors: IDEM_EINVAL (store NULL, scope or key out of range);
 * IDEM_ENOTFOUND (no record); IDEM_ENOMEM; IDEM_EFULL (a full disk; LMDB
 * never refuses it for room); IDEM_EPERM; IDEM_EIO; IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_delete(idem_store_t *store,
                                      const idem_hash_t *scope, const char *key,
                                      size_t key_len);

/* One operation of a batch: the arguments of begin(), complete() or
 * release(), and what that call would have returned. */
typedef enum {
    IDEM_OP_BEGIN = 1,
    IDEM_OP_COMPLETE,
    IDEM_OP_RELEASE
} idem_op_kind_t;

typedef struct {
    idem_op_kind_t kind;
    idem_begin_t begin;       /* IDEM_OP_BEGIN: all of its inputs      */
    const idem_hash_t *scope; /* IDEM_OP_COMPLETE and IDEM_OP_RELEASE  */
    const char *key;
    size_t key_len;
    uint64_t owner;
    const idem_response_t *resp; /* IDEM_OP_COMPLETE                      */
    uint32_t flags;              /* IDEM_OP_COMPLETE                      */
    int rc;                      /* out: what the single call returns     */
    idem_result_t result;        /* out: IDEM_OP_BEGIN with rc == 0;
                                    free with idem_result_free()         */
} idem_op_t;

/*
 * Runs n operations as if each were called alone, in order, sharing as few
 * durable commits as the backend can (one, when nothing fails): the way an
 * event loop that collected many requests' operations hands them over with
 * one thread hop. Every op gets its rc (and result); one failing op leaves
 * the others unaffected and nothing half-written. Returns 0 once every op
 * was attempted. Each op's rc is one of the codes its single call lists
 * (an op with bad arguments, or of an unknown kind, gets IDEM_EINVAL and
 * the others run). Out of memory for its own bookkeeping, the batch runs
 * the ops one by one rather than fail.
 * Errors: IDEM_EINVAL (store NULL, or ops NULL with n > 0: no op ran).
 * Thread safety: thread-safe; one store may be shared by threads, each
 * with its own ops.
 */
IDEM_MUST_CHECK int idem_store_batch(idem_store_t *store, idem_op_t *ops,
                                     size_t n);

/* Counters of a store handle since it was opened (this process only). */
typedef struct {
    uint64_t commits;     /* durable write transactions                 */
    uint64_t batched_ops; /* operations carried by those transactions   */
} idem_store_stats_t;

/*
 * Reads the counters into *out.
 * Errors: none.
 * Thread safety: thread-safe.
 */
void idem_store_stats(idem_store_t *store, idem_store_stats_t *out);

/* How full a store is, shared by every process that opened it. */
typedef struct {
    uint64_t records;     /* records kept, expired ones not yet pruned too */
    uint64_t bytes_used;  /* bytes of the store in use (LMDB: its pages in
                             use, free pages left out)                    */
    uint64_t bytes_limit; /* what it may grow to (LMDB: the map size);
                             0: no fixed limit                            */
    uint64_t bytes_claim_limit; /* new claims get IDEM_EFULL from here on
                                   (LMDB: the map less its reserve); 0: no
                                   fixed limit                            */
} idem_store_usage_t;

/*
 * Reads how full the store is: a few counters (for LMDB one read-only
 * transaction and no walk of the data), cheap enough for every scrape of
 * a metrics page, too dear for every request. *out is untouched on
 * error. A mem store never fails.
 * Errors: IDEM_ENOMEM; IDEM_EFULL (PostgreSQL); IDEM_EPERM; IDEM_EIO;
 * IDEM_EUNAVAIL.
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_usage(idem_store_t *store,
                                     idem_store_usage_t *out);

/*
 * Whether the store's files are still the ones its URL names. An LMDB
 * directory removed or replaced under a running process is not noticed
 * by LMDB: the handle goes on with the open (deleted) files, which no
 * process that opens the URL anew will see, so keys would be run again.
 * This compares the device and inode of PATH/data.mdb and PATH/lock.mdb
 * with those of the files opened. It makes file-system calls: keep it off
 * an event loop. The handle is never reopened: a store that fails the
 * check stays on its old files, and passes again if they come back under
 * PATH (the directory moved back). A networked store checks instead that
 * its server answers (PostgreSQL: SELECT 1; Redis: PING, and its
 * maxmemory-policy read again: a policy that may evict makes the store
 * unavailable); a mem store always passes. On failure why (cap bytes with
 * its NUL; why may be NULL) says what is wrong.
 * Errors: IDEM_EUNAVAIL (LMDB: which path was removed, or replaced by
 * which inode; a server that does not answer or refuses); IDEM_EIO (LMDB
 * only: a path that could not be examined).
 * Thread safety: thread-safe; one store may be shared by threads.
 */
IDEM_MUST_CHECK int idem_store_check(idem_store_t *store, char *why,
                                     size_t cap);

/* Which files a store handle has open. */
typedef struct {
    uint64_t device; /* LMDB: st_dev and st_ino of data.mdb as opened */
    uint64_t inode;  /* both 0: a store without files (mem)           */
} idem_store_identity_t;

/*
 * The files the handle opened, to tell whether two handles (in two
 * processes, say) share one store: the same identity means the same
 * files. Reads what the open recorded; no I/O.
 * Errors: none.
 * Thread safety: thread-safe.
 */
void idem_store_identity(const idem_store_t *store, idem_store_identity_t *out);

#ifdef __cplusplus
}
#endif

#endif /* IDEM_H */
