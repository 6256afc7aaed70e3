/*
 * timer.h — deadlines for the event loop: a binary min-heap of timers.
 *
 * A timer is embedded in the object it belongs to (a connection, the
 * server) and names a callback; the loop asks inq_timers_timeout() how long
 * epoll_wait may sleep and calls inq_timers_run() after it wakes. Every
 * connection owns exactly one timer, whose meaning depends on its state
 * (idle, request, write, delay or linger deadline), so the heap holds at
 * most one entry per connection and arming never allocates once
 * inq_timers_reserve() has made room.
 *
 * Times are milliseconds of CLOCK_MONOTONIC (inq_timer_now()).
 */
#ifndef INQ_TIMER_H
#define INQ_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef struct inq_timer inq_timer_t;

/* Called once when t expires; t is already disarmed and may be re-armed. */
typedef void (*inq_timer_cb)(inq_timer_t *t);

struct inq_timer {
    uint64_t deadline; /* when armed: fire at or after this time */
    size_t index;      /* position in the heap; INQ_TIMER_IDLE when unarmed */
    inq_timer_cb cb;
};

#define INQ_TIMER_IDLE SIZE_MAX

typedef struct {
    inq_timer_t **heap; /* owned array; the timers themselves are borrowed */
    size_t len;
    size_t cap;
} inq_timers_t;

/* Milliseconds of CLOCK_MONOTONIC. */
uint64_t inq_timer_now(void);

/* Prepares an unarmed timer that will call cb. */
void inq_timer_init(inq_timer_t *t, inq_timer_cb cb);

/* Makes room for n armed timers in all. 0 or -ENOMEM. */
INQ_MUST_CHECK int inq_timers_reserve(inq_timers_t *ts, size_t n);

/*
 * Arms t for deadline, or moves it there if it is armed already. The heap
 * must have room (inq_timers_reserve) for t when t is not yet armed.
 */
void inq_timers_arm(inq_timers_t *ts, inq_timer_t *t, uint64_t deadline);

/* Disarms t; a no-op when it is not armed. */
void inq_timers_disarm(inq_timers_t *ts, inq_timer_t *t);

/* Milliseconds until the next deadline, 0 if one has passed, -1 if none. */
int inq_timers_timeout(const inq_timers_t *ts, uint64_t now);

/*
 * Fires every timer whose deadline is at or before now, earliest first.
 * A callback may arm or disarm any timer, its own included.
 */
void inq_timers_run(inq_timers_t *ts, uint64_t now);

/* Frees the heap. The timers must no longer be used with ts. */
void inq_timers_free(inq_timers_t *ts);

#endif
