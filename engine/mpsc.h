/*
 * mpsc.h - bounded lock-free multi-producer single-consumer queue of pointers.
 *
 * A ring of cells, each with a sequence number (after D. Vyukov's bounded queue): a producer
 * claims a position with a CAS on `tail` only when the cell's sequence says it is free, writes
 * the pointer and releases the cell by advancing its sequence; the single consumer reads cells
 * in order. No allocation after init; a full queue refuses the push (back-pressure).
 *
 * Invariants
 *   1. cell[i].seq == pos      : free for the producer that claims position pos.
 *      cell[i].seq == pos + 1  : holds the item of position pos, ready for the consumer.
 *   2. head <= tail, and tail - head <= capacity.
 */
#ifndef HTKV_ENGINE_MPSC_H
#define HTKV_ENGINE_MPSC_H

#include <stdatomic.h>

#include "engine/internal.h"

struct mpsc_cell {
    _Atomic uint64_t seq;
    void *item;
};

struct mpsc {
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t tail; /* producers */
    /* Written by the consumer only; atomic so that metrics may read the depth from any thread. */
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t head;
    uint64_t mask;
    struct mpsc_cell *cells;
};

/* @p cap: power of two >= 2. Returns 0 or -ENOMEM. */
static inline int
htkv_mpsc_init(struct mpsc *q, uint64_t cap)
{
    HTKV_ASSERT(cap >= 2 && (cap & (cap - 1)) == 0);
    q->cells = htkv_mem_calloc(cap, sizeof(*q->cells));
    if (q->cells == NULL) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < cap; i++) {
        atomic_init(&q->cells[i].seq, i);
    }
    q->mask = cap - 1;
    atomic_init(&q->tail, 0);
    atomic_init(&q->head, 0);
    return 0;
}

static inline void
htkv_mpsc_fini(struct mpsc *q)
{
    htkv_mem_free(q->cells);
    q->cells = NULL;
}

/* Any thread. Returns true, or false when the queue is full. */
static inline bool
htkv_mpsc_push(struct mpsc *q, void *item)
{
    HTKV_ASSERT(item != NULL);
    uint64_t pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (;;) {
        struct mpsc_cell *c = &q->cells[pos & q->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->item = item;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return true;
            }
        } else if (dif < 0) {
            return false; /* the consumer has not freed this cell: full */
        } else {
            pos = atomic_load_explicit(&q->tail, memory_order_relaxed);
        }
    }
}

/* Consumer only. Returns the oldest item or NULL when empty. */
static inline void *
htkv_mpsc_pop(struct mpsc *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    struct mpsc_cell *c = &q->cells[head & q->mask];
    uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    if (seq != head + 1) {
        return NULL;
    }
    void *item = c->item;
    atomic_store_explicit(&c->seq, head + q->mask + 1, memory_order_release);
    atomic_store_explicit(&q->head, head + 1, memory_order_relaxed);
    return item;
}

/* Consumer only: true when no item is ready. */
static inline bool
htkv_mpsc_empty(struct mpsc *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    struct mpsc_cell *c = &q->cells[head & q->mask];
    return atomic_load_explicit(&c->seq, memory_order_acquire) != head + 1;
}

/* Any thread: requests queued now (a snapshot, for metrics). */
static inline uint64_t
htkv_mpsc_depth(struct mpsc *q)
{
    uint64_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
    return tail > head ? tail - head : 0;
}

#endif
