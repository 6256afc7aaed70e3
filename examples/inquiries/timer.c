/*
 * timer.c — the min-heap of deadlines (see timer.h).
 *
 * heap[0] is the earliest deadline; each timer records its own index so
 * that re-arming or disarming any timer is O(log n).
 */
#include "timer.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>

uint64_t inq_timer_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void inq_timer_init(inq_timer_t *t, inq_timer_cb cb)
{
    t->deadline = 0;
    t->index = INQ_TIMER_IDLE;
    t->cb = cb;
}

int inq_timers_reserve(inq_timers_t *ts, size_t n)
{
    inq_timer_t **heap;
    size_t cap;

    if (n <= ts->cap) {
        return 0;
    }
    cap = ts->cap < 64 ? 64 : ts->cap;
    while (cap < n) {
        cap *= 2;
    }
    heap = realloc(ts->heap, cap * sizeof(*heap));
    if (heap == NULL) {
        return -ENOMEM;
    }
    ts->heap = heap;
    ts->cap = cap;
    return 0;
}

static void timers_place(inq_timers_t *ts, inq_timer_t *t, size_t i)
{
    ts->heap[i] = t;
    t->index = i;
}

static void timers_sift_up(inq_timers_t *ts, size_t i)
{
    inq_timer_t *t = ts->heap[i];
    size_t parent;

    while (i > 0) {
        parent = (i - 1) / 2;
        if (ts->heap[parent]->deadline <= t->deadline) {
            break;
        }
        timers_place(ts, ts->heap[parent], i);
        i = parent;
    }
    timers_place(ts, t, i);
}

static void timers_sift_down(inq_timers_t *ts, size_t i)
{
    inq_timer_t *t = ts->heap[i];
    size_t child;

    for (;;) {
        child = 2 * i + 1;
        if (child >= ts->len) {
            break;
        }
        if (child + 1 < ts->len &&
            ts->heap[child + 1]->deadline < ts->heap[child]->deadline) {
            child++;
        }
        if (t->deadline <= ts->heap[child]->deadline) {
            break;
        }
        timers_place(ts, ts->heap[child], i);
        i = child;
    }
    timers_place(ts, t, i);
}

void inq_timers_arm(inq_timers_t *ts, inq_timer_t *t, uint64_t deadline)
{
    uint64_t old = t->deadline;

    t->deadline = deadline;
    if (t->index == INQ_TIMER_IDLE) {
        /* Room was reserved by the owner; see inq_timers_reserve(). */
        timers_place(ts, t, ts->len++);
        timers_sift_up(ts, t->index);
    } else if (deadline < old) {
        timers_sift_up(ts, t->index);
    } else {
        timers_sift_down(ts, t->index);
    }
}

void inq_timers_disarm(inq_timers_t *ts, inq_timer_t *t)
{
    size_t i = t->index;
    inq_timer_t *last;

    if (i == INQ_TIMER_IDLE) {
        return;
    }
    t->index = INQ_TIMER_IDLE;
    last = ts->heap[--ts->len];
    if (last == t) {
        return;
    }
    timers_place(ts, last, i);
    timers_sift_up(ts, i);
    timers_sift_down(ts, last->index);
}

int inq_timers_timeout(const inq_timers_t *ts, uint64_t now)
{
    uint64_t deadline;

    if (ts->len == 0) {
        return -1;
    }
    deadline = ts->heap[0]->deadline;
    if (deadline <= now) {
        return 0;
    }
    if (deadline - now > INT_MAX) {
        return INT_MAX;
    }
    return (int)(deadline - now);
}

void inq_timers_run(inq_timers_t *ts, uint64_t now)
{
    inq_timer_t *t;

    while (ts->len > 0 && ts->heap[0]->deadline <= now) {
        t = ts->heap[0];
        inq_timers_disarm(ts, t);
        t->cb(t);
    }
}

void inq_timers_free(inq_timers_t *ts)
{
    free(ts->heap);
    ts->heap = NULL;
    ts->len = 0;
    ts->cap = 0;
}
