/*
 * gcq.c — the group-commit queue (see gcq.h for the picture).
 */
#include "gcq.h"

int idem_store_gcq_init(idem_store_gcq_t *q, idem_store_gcq_run_t run,
                        void *backend)
{
    if (pthread_mutex_init(&q->mu, NULL) != 0) {
        return IDEM_ENOMEM;
    }
    q->head = q->tail = NULL;
    q->leading = 0;
    q->run = run;
    q->backend = backend;
    return 0;
}

void idem_store_gcq_destroy(idem_store_gcq_t *q)
{
    pthread_mutex_destroy(&q->mu);
}

/* The lead to the first caller queued, if any. mu held. */
static void idem_store_gcq_pass(idem_store_gcq_t *q)
{
    if (q->head != NULL) {
        q->head->lead = 1;
        pthread_cond_signal(&q->head->cv);
    } else {
        q->leading = 0;
    }
}

void idem_store_gcq_handoff(idem_store_gcq_t *q, idem_store_gcq_waiter_t *batch)
{
    pthread_mutex_lock(&q->mu);
    if (!batch->handed) {
        batch->handed = 1;
        idem_store_gcq_pass(q);
    }
    pthread_mutex_unlock(&q->mu);
}

int idem_store_gcq_submit(idem_store_gcq_t *q, idem_store_op_t *ops, size_t n)
{
    idem_store_gcq_waiter_t w, *batch, *x;

    if (pthread_cond_init(&w.cv, NULL) != 0) {
        return IDEM_ENOMEM;
    }
    w.ops = ops;
    w.n = n;
    w.next = NULL;
    w.done = 0;
    w.lead = 0;
    w.handed = 0;

    pthread_mutex_lock(&q->mu);
    if (q->tail != NULL) {
        q->tail->next = &w;
    } else {
        q->head = &w;
    }
    q->tail = &w;
    if (!q->leading) {
        q->leading = 1;
        w.lead = 1;
    }
    while (!w.done && !w.lead) {
        pthread_cond_wait(&w.cv, &q->mu);
    }
    if (!w.done) {
        batch = q->head;
        q->head = q->tail = NULL;
        pthread_mutex_unlock(&q->mu);

        q->run(q->backend, batch);

        pthread_mutex_lock(&q->mu);
        for (x = batch; x != NULL; x = x->next) {
            x->done = 1;
            if (x != &w) {
                pthread_cond_signal(&x->cv);
            }
        }
        if (!batch->handed) {
            idem_store_gcq_pass(q);
        }
    }
    pthread_mutex_unlock(&q->mu);
    pthread_cond_destroy(&w.cv);
    return 0;
}
