/*
 * ur_fault.c - fault injection (see ur_fault.h).
 *
 * Design. One armed flag guards the hot path; each class has a countdown set by
 * htkv_fault_arm(). A call decrements its class's counter atomically, so among concurrent calls
 * exactly one sees the count reach the target; sticky classes keep failing after it.
 *
 * Invariants
 *   1. Disarmed, htkv_fault_hit() returns 0 after one relaxed load.
 *   2. A non-sticky fault fires exactly once per arming.
 */
#include "uring/ur_fault.h"

#include <stdatomic.h>

struct fault_class {
    _Atomic uint64_t calls;
    _Atomic uint64_t nth; /* 0 = not armed */
    _Atomic int err;
    _Atomic bool sticky;
};

void (*htkv_fault_sync_hook)(int fd) = NULL;

static _Atomic bool armed;
static _Atomic uint64_t injected;
static struct fault_class classes[HTKV_FAULT_OPS];

void
htkv_fault_arm(int op, uint64_t nth, int err, bool sticky)
{
    struct fault_class *c = &classes[op];
    atomic_store(&c->calls, 0);
    atomic_store(&c->err, err);
    atomic_store(&c->sticky, sticky);
    atomic_store(&c->nth, nth);
    atomic_store(&armed, true);
}

void
htkv_fault_disarm(void)
{
    atomic_store(&armed, false);
    for (int i = 0; i < HTKV_FAULT_OPS; i++) {
        atomic_store(&classes[i].nth, 0);
    }
}

uint64_t
htkv_fault_calls(int op)
{
    return atomic_load(&classes[op].calls);
}

uint64_t
htkv_fault_injected(void)
{
    return atomic_load(&injected);
}

int
htkv_fault_hit(int op)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed)) {
        return 0;
    }
    struct fault_class *c = &classes[op];
    uint64_t nth = atomic_load(&c->nth);
    if (nth == 0) {
        return 0;
    }
    uint64_t n = atomic_fetch_add(&c->calls, 1) + 1;
    if (n == nth || (n > nth && atomic_load(&c->sticky))) {
        atomic_fetch_add(&injected, 1);
        return -atomic_load(&c->err);
    }
    return 0;
}
