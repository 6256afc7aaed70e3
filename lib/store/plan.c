/*
 * plan.c — what lib/store's backends share: the one place where the
 * decision table of lib/core/decide.c is turned into writes
 * (idem_store_plan), the judgement of prune (idem_store_prune_check), the
 * blobs that hold encoded records, owner tokens and the store key's hash.
 * Backends call these from inside their transactions; none does I/O.
 *
 * Owner tokens (the fencing tokens of claims) are splitmix64 outputs of a
 * per-handle counter that starts at a random seed (store.c): distinct
 * within a handle, unpredictable across processes, never 0.
 */
#include "store_int.h"

#include <stdlib.h>
#include <string.h>

#define IDEM_STORE_GOLDEN 0x9e3779b97f4a7c15ull

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */
/* ------------------------------------------------------------------------ */

int64_t idem_store_time_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b) {
        return INT64_MAX;
    }
    if (b < 0 && a < INT64_MIN - b) {
        return INT64_MIN;
    }
    return a + b;
}

int64_t idem_store_removable_at(const idem_record_t *rec)
{
    if (rec->state == IDEM_STATE_IN_PROGRESS &&
        rec->lease_until_ms > rec->expires_ms) {
        return rec->lease_until_ms;
    }
    return rec->expires_ms;
}

void idem_store_blob_free(idem_store_blob_t *blob)
{
    if (blob != NULL) {
        free(blob->headers);
        free(blob);
    }
}

/* A blob holding a copy of len bytes, headers not decoded yet. */
idem_store_blob_t *idem_store_blob_copy(const uint8_t *bytes, size_t len)
{
    idem_store_blob_t *b;

    if (len > SIZE_MAX - sizeof(*b)) {
        return NULL;
    }
    b = malloc(sizeof(*b) + len);
    if (b == NULL) {
        return NULL;
    }
    b->headers = NULL;
    b->len = len;
    if (len) {
        memcpy(b->data, bytes, len);
    }
    return b;
}

/* Decodes b into *rec (pointing into b); b keeps the header array. */
int idem_store_blob_decode(idem_store_blob_t *b, idem_record_t *rec)
{
    idem_header_t *headers = NULL;
    int rc;

    rc = idem_record_decode(b->data, b->len, rec, &headers);
    if (rc != 0) {
        return rc;
    }
    free(b->headers);
    b->headers = headers;
    return 0;
}

/* Encodes rec into a new blob and decodes it back into *out_rec. */
static int idem_store_blob_encode(const idem_record_t *rec,
                                  idem_store_blob_t **out,
                                  idem_record_t *out_rec)
{
    idem_store_blob_t *b;
    size_t need, len;
    int rc;

    need = idem_record_encoded_size(rec);
    if (need == 0 || need > SIZE_MAX - sizeof(*b)) {
        return IDEM_ETOOBIG;
    }
    b = malloc(sizeof(*b) + need);
    if (b == NULL) {
        return IDEM_ENOMEM;
    }
    b->headers = NULL;
    rc = idem_record_encode(rec, b->data, need, &len);
    if (rc != 0) {
        goto fail;
    }
    b->len = len;
    rc = idem_store_blob_decode(b, out_rec);
    if (rc != 0) {
        goto fail;
    }
    *out = b;
    return 0;

fail:
    idem_store_blob_free(b);
    return rc;
}

/* Decodes borrowed bytes only to look at the record's fixed fields. */
static int idem_store_peek(const uint8_t *val, size_t len, idem_record_t *rec)
{
    idem_header_t *headers = NULL;
    int rc;

    rc = idem_record_decode(val, len, rec, &headers);
    free(headers);
    rec->response.headers = NULL;
    rec->response.nheaders = 0;
    return rc;
}

static uint64_t idem_store_token(idem_store_t *s)
{
    for (;;) {
        uint64_t z = atomic_fetch_add(&s->token_next, IDEM_STORE_GOLDEN) +
                     IDEM_STORE_GOLDEN;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        if (z != 0) {
            return z;
        }
    }
}

uint64_t idem_store_key_hash(const idem_store_key_t *k)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < k->len; i++) {
        h ^= k->bytes[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------------------ */
/* Planning a write                                                          */
/* ------------------------------------------------------------------------ */

void idem_store_op_reset(idem_store_op_t *op)
{
    if (op->val != op->res) {
        idem_store_blob_free(op->val);
    }
    idem_store_blob_free(op->res);
    op->write = IDEM_STORE_WRITE_NONE;
    op->val = NULL;
    op->had_index = 0;
    op->old_index_ms = 0;
    op->new_index_ms = 0;
    op->rc = 0;
    op->outcome = 0;
    op->new_owner = 0;
    op->first_mismatch = 0;
    op->took_over = 0;
    memset(&op->rec, 0, sizeof(op->rec));
    op->res = NULL;
    op->removed = 0;
    op->more = 0;
}

/* What begin() answers for a decision that writes nothing. */
idem_begin_outcome_t idem_store_outcome_of(idem_decision_t d)
{
    switch (d) {
    case IDEM_DECIDE_REPLAY:
        return IDEM_BEGIN_REPLAY;
    case IDEM_DECIDE_IN_PROGRESS:
        return IDEM_BEGIN_IN_PROGRESS;
    default:
        return IDEM_BEGIN_MISMATCH;
    }
}

/* A new in-progress record for in at now_ms, owned by a fresh token. */
static void idem_store_claim_record(idem_store_t *s, const idem_begin_t *in,
                                    int64_t now_ms, idem_record_t *rec)
{
    memset(rec, 0, sizeof(*rec));
    rec->state = IDEM_STATE_IN_PROGRESS;
    rec->fingerprint = *in->fingerprint;
    rec->created_ms = now_ms;
    rec->expires_ms = idem_store_time_add(now_ms, in->ttl_ms);
    rec->owner = idem_store_token(s);
    rec->lease_until_ms = idem_store_time_add(now_ms, in->lease_ms);
}

/* The response a stale record keeps: given, or made now (idem.h). */
static int idem_store_unknown_response(const idem_begin_t *in,
                                       const idem_response_t **out)
{
    *out = in->unknown_response;
    if (*out != NULL) {
        return 0;
    }
    return in->unknown_make(in->unknown_arg, out);
}

static int idem_store_plan_begin(idem_store_t *s, idem_store_op_t *op,
                                 const uint8_t *old, size_t old_len)
{
    const idem_begin_t *in = op->begin;
    /* the store's clock when the backend has one (store_int.h) */
    int64_t now = op->store_now_ms != 0 ? op->store_now_ms : in->now_ms;
    idem_store_blob_t *cur = NULL;
    const idem_response_t *unknown;
    idem_record_t found, next;
    idem_decision_t d;
    int rc;

    if (old != NULL) {
        cur = idem_store_blob_copy(old, old_len);
        if (cur == NULL) {
            return IDEM_ENOMEM;
        }
        rc = idem_store_blob_decode(cur, &found);
        if (rc != 0) {
            goto fail;
        }
        op->had_index = 1;
        op->old_index_ms = idem_store_removable_at(&found);
    }

    d = idem_decide(cur ? &found : NULL, in->fingerprint, now);
    switch (d) {
    case IDEM_DECIDE_REPLAY:
    case IDEM_DECIDE_IN_PROGRESS:
    case IDEM_DECIDE_MISMATCH_AGAIN:
        op->outcome = idem_store_outcome_of(d);
        op->rec = found;
        op->res = cur;
        return 0;

    case IDEM_DECIDE_MISMATCH_FIRST:
        next = found;
        next.flags |= IDEM_REC_MISMATCH_LOGGED;
        op->outcome = IDEM_BEGIN_MISMATCH;
        op->first_mismatch = 1;
        break;

    case IDEM_DECIDE_STALE:
        if (in->on_unknown == IDEM_ON_UNKNOWN_RELEASE) {
            idem_store_claim_record(s, in, now, &next);
            op->outcome = IDEM_BEGIN_CLAIMED;
            op->new_owner = next.owner;
            op->took_over = 1;
            break;
        }
        rc = idem_store_unknown_response(in, &unknown);
        if (rc != 0) {
            goto fail;
        }
        next = found;
        next.state = IDEM_STATE_COMPLETE;
        next.flags |= IDEM_REC_UNKNOWN_OUTCOME;
        next.response = *unknown;
        op->outcome = IDEM_BEGIN_STALE;
        break;

    case IDEM_DECIDE_CLAIM:
    default:
        idem_store_claim_record(s, in, now, &next);
        op->outcome = IDEM_BEGIN_CLAIMED;
        op->new_owner = next.owner;
        break;
    }

    rc = idem_store_blob_encode(&next, &op->val, &op->rec);
    if (rc != 0) {
        goto fail;
    }
    idem_store_blob_free(cur);
    op->res = op->val;
    op->write = IDEM_STORE_WRITE_PUT;
    op->new_index_ms = idem_store_removable_at(&next);
    return 0;

fail:
    idem_store_blob_free(cur);
    return rc;
}

static int idem_store_plan_complete(idem_store_op_t *op, const uint8_t *old,
                                    size_t old_len)
{
    idem_record_t found, next, unused;
    idem_header_t *headers = NULL;
    int rc;

    if (old == NULL) {
        return IDEM_ENOTOWNER;
    }
    rc = idem_record_decode(old, old_len, &found, &headers);
    if (rc != 0) {
        return rc;
    }
    if (found.state != IDEM_STATE_IN_PROGRESS || found.owner != op->owner) {
        rc = IDEM_ENOTOWNER;
        goto done;
    }
    next = found;
    next.state = IDEM_STATE_COMPLETE;
    next.flags |= op->flags;
    next.response = *op->resp;
    rc = idem_store_blob_encode(&next, &op->val, &unused);
    if (rc != 0) {
        goto done;
    }
    op->write = IDEM_STORE_WRITE_PUT;
    op->had_index = 1;
    op->old_index_ms = idem_store_removable_at(&found);
    op->new_index_ms = idem_store_removable_at(&next);

done:
    free(headers);
    return rc;
}

static int idem_store_plan_release(idem_store_op_t *op, const uint8_t *old,
                                   size_t old_len)
{
    idem_record_t found;
    int rc;

    if (old == NULL) {
        return IDEM_ENOTOWNER;
    }
    rc = idem_store_peek(old, old_len, &found);
    if (rc != 0) {
        return rc;
    }
    if (found.state != IDEM_STATE_IN_PROGRESS || found.owner != op->owner) {
        return IDEM_ENOTOWNER;
    }
    op->write = IDEM_STORE_WRITE_DEL;
    op->had_index = 1;
    op->old_index_ms = idem_store_removable_at(&found);
    return 0;
}

static int idem_store_plan_delete(idem_store_op_t *op, const uint8_t *old,
                                  size_t old_len)
{
    idem_record_t found;
    int rc;

    if (old == NULL) {
        return IDEM_ENOTFOUND;
    }
    rc = idem_store_peek(old, old_len, &found);
    if (rc == IDEM_ENOMEM) {
        return rc;
    }
    /*
     * An unreadable record is removed all the same (that is what the admin
     * wants); its index entry, which cannot be named, is left for prune to
     * drop as an orphan.
     */
    if (rc == 0) {
        op->had_index = 1;
        op->old_index_ms = idem_store_removable_at(&found);
    }
    op->write = IDEM_STORE_WRITE_DEL;
    return 0;
}

int idem_store_plan(idem_store_t *store, idem_store_op_t *op,
                    const uint8_t *old, size_t old_len)
{
    int rc;

    idem_store_op_reset(op);
    switch (op->kind) {
    case IDEM_STORE_OP_BEGIN:
        rc = idem_store_plan_begin(store, op, old, old_len);
        break;
    case IDEM_STORE_OP_COMPLETE:
        rc = idem_store_plan_complete(op, old, old_len);
        break;
    case IDEM_STORE_OP_RELEASE:
        rc = idem_store_plan_release(op, old, old_len);
        break;
    case IDEM_STORE_OP_DELETE:
        rc = idem_store_plan_delete(op, old, old_len);
        break;
    case IDEM_STORE_OP_PRUNE:
    default:
        rc = IDEM_EINVAL;
        break;
    }
    if (rc != 0) {
        idem_store_op_reset(op);
        op->rc = rc;
    }
    return rc;
}

int idem_store_prune_check(const uint8_t *val, size_t len, int64_t index_ms,
                           int64_t now_ms, int64_t *reindex_ms)
{
    idem_record_t rec;
    int64_t at;
    int rc;

    rc = idem_store_peek(val, len, &rec);
    if (rc == IDEM_ENOMEM) {
        return rc;
    }
    if (rc != 0) {
        /* Unreadable and its time has passed: nothing can ever use it. */
        return IDEM_STORE_PRUNE_REMOVE;
    }
    at = idem_store_removable_at(&rec);
    if (at != index_ms) {
        return IDEM_STORE_PRUNE_ORPHAN;
    }
    if (idem_record_expired(&rec, now_ms)) {
        return IDEM_STORE_PRUNE_REMOVE;
    }
    /* Not expired although its time has come: look again a moment later. */
    *reindex_ms = idem_store_time_add(now_ms, 1);
    return IDEM_STORE_PRUNE_REINDEX;
}
