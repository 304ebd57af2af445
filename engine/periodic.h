/*
 * periodic.h - a thread that runs one function at an interval while there is work for it, and
 * sleeps without a timer when there is none (base layer: the INTERVAL-mode syncer and the
 * background compactor).
 *
 * An idle store must not wake: an agent that leaves its store alone most of the day pays no
 * timer ticks for it. So fn tells whether it found work; when it did not, the thread marks
 * itself idle and waits until htkv_periodic_kick() (a writer) or a stop. A kick of a busy thread
 * is one relaxed load.
 *
 * Invariants
 *   1. Each periodic thread has its own lock and condition variable (CLOCK_MONOTONIC); stop is
 *      only read and written under that lock, and fn never runs with it held, so fn may take any
 *      other lock and a stop never waits for more than the fn call in progress.
 *   2. idle is set (sequentially consistent) before fn runs and cleared after a run that found
 *      work, or by a kick. A caller that makes work and then kicks, with both ordered against fn's
 *      look at that work by a lock they share (or by sequentially consistent accesses), is never
 *      missed: either fn sees the work, or the kick sees idle and clears it; an idle thread with
 *      idle cleared runs fn again within one interval.
 * Calls only libc.
 */
#ifndef HTKV_ENGINE_PERIODIC_H
#define HTKV_ENGINE_PERIODIC_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/internal.h"

struct periodic {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: wakes the thread for a stop, a kick or an early run */
    bool stop;           /* lock */
    bool soon;           /* lock: run fn now, without waiting out the interval (run_soon) */
    bool running;        /* a thread was started and not joined yet (owner's thread only) */
    _Atomic int idle;    /* invariant 2: the last run found no work; the thread waits untimed */
    pthread_t thread;
    uint32_t interval_ms;
    bool (*fn)(void *ctx); /* true: it found work (run again after an interval) */
    void *ctx;
};

/* Initialise @p p (not started). */
void htkv_periodic_init(struct periodic *p);

/* Start a thread that calls @p fn(@p ctx) every @p interval_ms while fn returns true, and after
 * a false waits for htkv_periodic_kick() (then runs fn an interval later) until
 * htkv_periodic_stop(). 0 or -errno of pthread_create() (then nothing runs). */
int htkv_periodic_start(struct periodic *p, uint32_t interval_ms, bool (*fn)(void *ctx), void *ctx);

/* There is work: an idle thread runs fn within one interval (invariant 2 says when a kick cannot
 * be missed). One relaxed load when the thread is not idle; any thread, any lock held except
 * @p p's own. No effect when not started. */
static inline void
htkv_periodic_kick(struct periodic *p)
{
    if (atomic_load_explicit(&p->idle, memory_order_relaxed)) {
        pthread_mutex_lock(&p->lock);
        atomic_store_explicit(&p->idle, 0, memory_order_relaxed);
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
    }
}

/* There is work that should not wait for the interval: the thread runs fn as soon as the call
 * in progress (if any) returns (or, not started yet, as soon as it starts). Takes @p p's lock:
 * any thread, any lock held except that one. */
void htkv_periodic_run_soon(struct periodic *p);

/* Stop the thread and join it (after the fn call in progress, if any); no effect when not
 * running. */
void htkv_periodic_stop(struct periodic *p);

/* Release @p p (stopped or never started). */
void htkv_periodic_fini(struct periodic *p);

#endif /* HTKV_ENGINE_PERIODIC_H */
