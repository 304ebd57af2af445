/*
 * periodic.c - a thread that runs one function at an interval while it finds work, and waits
 * untimed when it does not (see periodic.h for the invariants). Calls only pthreads, the clock
 * and the function it was given.
 */
#include "engine/periodic.h"

#include <time.h>

void
htkv_periodic_init(struct periodic *p)
{
    memset(p, 0, sizeof(*p));
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&p->idle, 0);
}

/* Wait one interval, or, while idle, until a kick (lock held). */
static void
periodic_wait(struct periodic *p)
{
    while (!p->stop && !p->soon && atomic_load_explicit(&p->idle, memory_order_relaxed)) {
        pthread_cond_wait(&p->cond, &p->lock);
    }
    if (p->stop || p->soon) {
        p->soon = false;
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)p->interval_ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    while (!p->stop && !p->soon && pthread_cond_timedwait(&p->cond, &p->lock, &ts) == 0) {
        /* a kick of a thread that was not idle: the interval still runs */
    }
    p->soon = false;
}

static void *
periodic_main(void *arg)
{
    struct periodic *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        periodic_wait(p);
        if (p->stop) {
            break;
        }
        /* Invariant 2: idle before fn looks for work; a kick from now on clears it. */
        atomic_store_explicit(&p->idle, 1, memory_order_seq_cst);
        pthread_mutex_unlock(&p->lock);
        bool busy = p->fn(p->ctx);
        pthread_mutex_lock(&p->lock);
        if (busy) {
            atomic_store_explicit(&p->idle, 0, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int
htkv_periodic_start(struct periodic *p, uint32_t interval_ms, bool (*fn)(void *ctx), void *ctx)
{
    HTKV_ASSERT(!p->running && interval_ms > 0 && fn != NULL);
    p->interval_ms = interval_ms;
    p->fn = fn;
    p->ctx = ctx;
    p->stop = false;
    atomic_store(&p->idle, 0);
    int rc = pthread_create(&p->thread, NULL, periodic_main, p);
    if (rc != 0) {
        return -rc;
    }
    p->running = true;
    return 0;
}

void
htkv_periodic_run_soon(struct periodic *p)
{
    pthread_mutex_lock(&p->lock);
    p->soon = true;
    atomic_store_explicit(&p->idle, 0, memory_order_relaxed);
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void
htkv_periodic_stop(struct periodic *p)
{
    if (!p->running) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    p->running = false;
}

void
htkv_periodic_fini(struct periodic *p)
{
    HTKV_ASSERT(!p->running);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
}
