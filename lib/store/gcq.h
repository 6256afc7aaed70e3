/*
 * gcq.h — the group-commit queue: many threads' write() calls carried out
 * together, so that they share one transaction and one durable commit (one
 * fsync for LMDB, one round trip or transaction for a networked store).
 *
 *    thread A         thread B            thread C     (callers of write)
 *     1 op          batch of 3 ops          1 op
 *       |                |                    |
 *       v                v                    v
 *   +-----------------------------------------------------+
 *   | queue (mu): [A: a1] -> [B: b1 b2 b3] -> [C: c1]     |  each caller
 *   +-----------------------------------------------------+  sleeps on its
 *       | the first caller to find no leader leads: it takes  own condvar
 *       | the whole queue and runs it without holding mu
 *       v
 *   run(backend, chain of waiters): the backend carries out every op of
 *   the chain, in order, and leaves each op's verdict in op->rc
 *       |
 *       v
 *   publish (mu): mark each caller done and wake it; if callers queued
 *   meanwhile, hand the lead to the first of them (it runs the next batch
 *   at once), else leave the queue leaderless
 *
 * Handing the lead over, instead of the leader looping, keeps the queue
 * busy just the same while bounding every caller's wait to two batches. A
 * caller's ops stay together and in order.
 *
 * Private to lib/store.
 */
#ifndef IDEM_STORE_GCQ_H
#define IDEM_STORE_GCQ_H

#include <pthread.h>
#include <stddef.h>

#include "store_int.h"

/* A caller waiting in the queue; lives on its stack. */
typedef struct idem_store_gcq_waiter_s idem_store_gcq_waiter_t;
struct idem_store_gcq_waiter_s {
    idem_store_op_t *ops; /* the caller's ops, carried out in order */
    size_t n;
    idem_store_gcq_waiter_t *next; /* the next caller of the same batch */
    pthread_cond_t cv;
    int done;   /* the ops' results are published */
    int lead;   /* run the next batch */
    int handed; /* of a batch's first waiter: its run handed the lead on */
};

/*
 * Carries out the ops of the chain batch, batch->next, ... (each waiter's
 * n ops in order, the waiters in order), leaving each op's verdict in
 * op->rc as idem_store_vtable_t's write does. Called without the queue's
 * lock, by one thread at a time. It returns nothing: errors are the ops'
 * own, in op->rc.
 */
typedef void (*idem_store_gcq_run_t)(void *backend,
                                     idem_store_gcq_waiter_t *batch);

typedef struct {
    pthread_mutex_t mu; /* guards the rest */
    idem_store_gcq_waiter_t *head;
    idem_store_gcq_waiter_t *tail;
    int leading; /* a batch is running */
    idem_store_gcq_run_t run;
    void *backend;
} idem_store_gcq_t;

/*
 * Makes an empty queue whose batches run(backend, ...) carries out.
 * Errors: IDEM_ENOMEM (no mutex could be made).
 * Thread safety: not thread-safe: before any submit.
 */
IDEM_MUST_CHECK int idem_store_gcq_init(idem_store_gcq_t *q,
                                        idem_store_gcq_run_t run,
                                        void *backend);

/*
 * Frees the queue's mutex.
 * Errors: none.
 * Thread safety: not thread-safe: no call of submit may be running, and
 * none may follow.
 */
void idem_store_gcq_destroy(idem_store_gcq_t *q);

/*
 * Called by run, at most once per batch (later calls do nothing), once
 * the batch needs the lead no longer (LMDB: committed, only its sync is
 * left): the next batch may start at once, while this one finishes.
 * Errors: none.
 * Thread safety: by the running batch's thread.
 */
void idem_store_gcq_handoff(idem_store_gcq_t *q,
                            idem_store_gcq_waiter_t *batch);

/*
 * Queues ops[0..n) and returns once they are carried out, by this thread
 * or by the leader of the batch they joined; each op's verdict is in its
 * rc.
 * Errors: IDEM_ENOMEM (this caller could not wait: no condition variable;
 * the ops were not touched, and the caller carries them out itself).
 * Thread safety: thread-safe: that is what it is for.
 */
IDEM_MUST_CHECK int idem_store_gcq_submit(idem_store_gcq_t *q,
                                          idem_store_op_t *ops, size_t n);

#endif /* IDEM_STORE_GCQ_H */
