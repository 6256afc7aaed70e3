
/*
 * ngx_http_idempotency_metrics_list.h — every metric /metrics shows, with
 * its name, type and help text together; ngx_http_idempotency_metrics.h
 * makes the enums of it, _metrics.c the page. A new metric is one line
 * here (and, for a gauge, the value where the page is written).
 *
 * A help text of NULL: the entry is one more label of the family above.
 */

#ifndef _NGX_HTTP_IDEMPOTENCY_METRICS_LIST_H_INCLUDED_
#define _NGX_HTTP_IDEMPOTENCY_METRICS_LIST_H_INCLUDED_


/* counters (TYPE counter): X(ID, name with its labels, help) */
#define NGX_HTTP_IDEM_COUNTERS(X)                                            \
    X(EXECUTED, "idemgate_requests_total{outcome=\"executed\"}",             \
      "Requests by what the gateway did with them: executed (forwarded "     \
      "under a new key), replayed, mismatch (a key reused with other "       \
      "parameters), conflict (still in progress after the wait), invalid "   \
      "(a bad key), bypass (no key or another method), unavailable (the "    \
      "store failed).")                                                      \
    X(REPLAYED, "idemgate_requests_total{outcome=\"replayed\"}", NULL)       \
    X(MISMATCH, "idemgate_requests_total{outcome=\"mismatch\"}", NULL)       \
    X(CONFLICT, "idemgate_requests_total{outcome=\"conflict\"}", NULL)       \
    X(INVALID, "idemgate_requests_total{outcome=\"invalid\"}", NULL)         \
    X(BYPASS, "idemgate_requests_total{outcome=\"bypass\"}", NULL)           \
    X(UNAVAILABLE, "idemgate_requests_total{outcome=\"unavailable\"}", NULL) \
    X(WAITED, "idemgate_waits_total",                                        \
      "Requests that waited for the first request of their key.")            \
    X(WOKEN, "idemgate_waits_woken_total",                                   \
      "Waits ended at once by their key's settlement in the same worker "    \
      "(the others read the key again on a timer).")                         \
    X(STORE_ERRORS, "idemgate_store_errors_total",                           \
      "Store calls that failed.")                                            \
    X(UNKNOWN_OUTCOME, "idemgate_unknown_outcomes_total",                    \
      "Keys settled as an unknown outcome (sent upstream, no whole "         \
      "answer).")                                                            \
    X(RELEASED, "idemgate_released_total",                                   \
      "Keys freed instead of stored (nothing ran, or --release-status).")    \
    X(TOO_LARGE, "idemgate_too_large_total",                                 \
      "Responses too large to store; the key keeps an error instead.")       \
    X(PRUNED, "idemgate_pruned_total", "Expired records removed.")           \
    X(LATE_COMPLETE, "idemgate_late_completes_total",                        \
      "Results that came after their claim's lease had been settled.")      \
    X(FP_CACHE_HITS, "idemgate_fingerprint_cache_total{result=\"hit\"}",     \
      "Fingerprints of small bodies found in the worker's cache (a retry "   \
      "that repeats its request byte for byte) or computed.")               \
    X(FP_CACHE_MISSES, "idemgate_fingerprint_cache_total{result=\"miss\"}",  \
      NULL)                                                                  \
    X(STORE_COMMITS, "idemgate_store_commits_total",                         \
      "Durable write transactions of the store (claims, results, releases "  \
      "and prune rounds share them), counted as batches and prune rounds "   \
      "end.")                                       \
    X(STORE_BATCHED_OPS, "idemgate_store_batched_ops_total",                 \
      "Writes those transactions carried: commits over writes is the "       \
      "batching.")


/*
 * histograms (TYPE histogram), in microseconds:
 * X(ID, name, value of the op label or NULL, bounds, help)
 */
#define NGX_HTTP_IDEM_HISTOGRAMS(X)                                          \
    X(CLAIM, "idemgate_store_op_duration_microseconds", "claim", store,      \
      "Time of store calls as the request sees them (queue, batch and "      \
      "durable commit on the thread pool; replay_read: the read a replay "   \
      "is served from), in microseconds.")                                   \
    X(COMPLETE, "idemgate_store_op_duration_microseconds", "complete",       \
      store, NULL)                                                           \
    X(RELEASE, "idemgate_store_op_duration_microseconds", "release", store,  \
      NULL)                                                                  \
    X(REPLAY_READ, "idemgate_store_op_duration_microseconds", "replay_read", \
      store, NULL)                                                           \
    X(UPSTREAM, "idemgate_upstream_duration_microseconds", NULL, upstream,   \
      "Time from a key's claim until the upstream's whole response is "      \
      "held (or the upstream failed), for requests with a key, in "          \
      "microseconds.")


/* gauges (TYPE gauge), read when the page is written: X(ID, name, help) */
#define NGX_HTTP_IDEM_GAUGES(X)                                              \
    X(KEYS_IN_PROGRESS, "idemgate_keys_in_progress",                         \
      "Requests with a key claimed by this gateway and not settled yet "     \
      "(being forwarded or stored).")                                        \
    X(STORE_HEALTHY, "idemgate_store_healthy",                               \
      "1 while the store can be used and its path still names its files.")   \
    X(STORE_RECORDS, "idemgate_store_records", "Records in the store.")      \
    X(STORE_BYTES_USED, "idemgate_store_bytes_used",                         \
      "Bytes of the store's map in use.")                                    \
    X(STORE_BYTES_LIMIT, "idemgate_store_bytes_limit",                       \
      "The size of the store's map.")                                        \
    X(STORE_CLAIM_BYTES_LIMIT, "idemgate_store_claim_bytes_limit",           \
      "Bytes in use from which new keys get 503.")


#endif /* _NGX_HTTP_IDEMPOTENCY_METRICS_LIST_H_INCLUDED_ */
