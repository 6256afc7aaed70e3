/*
 * decide.c — the decision table: what a request meets, given the stored
 * record of its (scope, key), its fingerprint and the time.
 *
 *   stored record                          fingerprint   decision
 *   ------------------------------------   -----------   --------------
 *   none, or expired                       any           CLAIM
 *   any live record                        differs       MISMATCH_FIRST
 *                                                        (not yet logged)
 *                                                        MISMATCH_AGAIN
 *   complete                               same          REPLAY
 *   in progress, lease running             same          IN_PROGRESS
 *   in progress, lease passed              same          STALE
 *
 * A record expires at expires_ms, except that an in-progress record is kept
 * while its lease runs: a TTL shorter than a slow request must never let a
 * duplicate through.
 */
#include "idem.h"

#include <string.h>

int idem_record_expired(const idem_record_t *rec, int64_t now_ms)
{
    if (rec->state == IDEM_STATE_IN_PROGRESS && rec->lease_until_ms > now_ms) {
        return 0;
    }
    return rec->expires_ms <= now_ms;
}

idem_decision_t idem_decide(const idem_record_t *rec, const idem_hash_t *fp,
                            int64_t now_ms)
{
    if (rec == NULL || idem_record_expired(rec, now_ms)) {
        return IDEM_DECIDE_CLAIM;
    }
    if (memcmp(rec->fingerprint.bytes, fp->bytes, IDEM_HASH_LEN) != 0) {
        return (rec->flags & IDEM_REC_MISMATCH_LOGGED)
                   ? IDEM_DECIDE_MISMATCH_AGAIN
                   : IDEM_DECIDE_MISMATCH_FIRST;
    }
    if (rec->state == IDEM_STATE_COMPLETE) {
        return IDEM_DECIDE_REPLAY;
    }
    return rec->lease_until_ms > now_ms ? IDEM_DECIDE_IN_PROGRESS
                                        : IDEM_DECIDE_STALE;
}
