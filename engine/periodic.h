/*
 * periodic.h - a thread that runs one function at a fixed interval until stopped (store layer:
 * the INTERVAL-mode syncer and the background compactor).
 *
 * Invariants: each periodic thread has its own lock and condition variable (CLOCK_MONOTONIC);
 * stop is only read and written under that lock, and fn never runs with it held, so fn may take
 * any other lock and a stop never waits for more than the fn call in progress. Calls only libc
 * and the base layer.
 */
#ifndef HTKV_ENGINE_PERIODIC_H
#define HTKV_ENGINE_PERIODIC_H

#include <pthread.h>

#include "engine/internal.h"

struct periodic {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC: wakes the thread for a stop or an early run */
    bool stop;           /* lock */
    bool running;        /* a thread was started and not joined yet (owner's thread only) */
    pthread_t thread;
    uint32_t interval_ms;
    void (*fn)(void *ctx);
    void *ctx;
};

/* Initialise @p p (not started). */
void htkv_periodic_init(struct periodic *p);

/* Start a thread that calls @p fn(@p ctx) every @p interval_ms until htkv_periodic_stop(). 0 or
 * -errno of pthread_create() (then nothing runs). */
int htkv_periodic_start(struct periodic *p, uint32_t interval_ms, void (*fn)(void *ctx), void *ctx);

/* Run fn now instead of at the end of the current interval (no effect when not started). */
void htkv_periodic_wake(struct periodic *p);

/* Stop the thread and join it (after the fn call in progress, if any); no effect when not
 * running. */
void htkv_periodic_stop(struct periodic *p);

/* Release @p p (stopped or never started). */
void htkv_periodic_fini(struct periodic *p);

#endif /* HTKV_ENGINE_PERIODIC_H */
