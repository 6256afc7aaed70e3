/*
 * errbody.h — the texts of the gateway-made errors, one per kind, shared by
 * the error styles (errbody.c) and the templates (errtpl.c). Private to
 * lib/core.
 */
#ifndef IDEM_CORE_ERRBODY_H
#define IDEM_CORE_ERRBODY_H

#include "idem.h"

/*
 * The text of one error. The details are before_key, then the key and
 * after_key when names_key is set.
 */
typedef struct {
    int persona_status;
    int ietf_status;
    const char *persona_title;
    const char *ietf_type;
    const char *ietf_title;
    const char *stripe_type; /* NULL: "api_error" */
    int names_key;
    const char *before_key;
    const char *after_key;
} idem_errbody_text_t;

/* The text of a key error, and the room its rule is rewritten in when the
 * key came in another header than Idempotency-Key. */
typedef struct {
    idem_errbody_text_t text;
    char rule[512];
} idem_errbody_key_text_t;

/*
 * The text of kind; key_text is filled and returned for the key errors
 * (key_err says which rule the key broke: idem_key_problem(key_err), or a
 * generic sentence for a code that is not a key error), with the key
 * header named header[0..header_len) in the rule of a malformed key where
 * it says "Idempotency-Key" (header NULL: as it says). NULL for an
 * unknown kind. The texts are static, or live as long as key_text.
 * Errors: none (NULL: an unknown kind).
 * Thread safety: thread-safe on distinct key_text.
 */
const idem_errbody_text_t *idem_errbody_text(idem_err_kind_t kind, int key_err,
                                             const char *header,
                                             size_t header_len,
                                             idem_errbody_key_text_t *key_text);

#endif /* IDEM_CORE_ERRBODY_H */
