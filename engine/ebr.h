/*
 * ebr.h - epoch-based reclamation: memory that lock-free readers may still hold (index entries,
 * index tables after a resize) is freed only after every reader that could see it has left.
 *
 * Readers bracket each lock-free access with htkv_ebr_enter()/htkv_ebr_exit(). A writer that
 * unlinks an object stamps it with htkv_ebr_stamp() and puts it in its limbo list; the object is
 * freed once htkv_ebr_safe() is greater than its stamp. Slots also tell htkv_close() which calls
 * are still in progress.
 */
#ifndef HTKV_ENGINE_EBR_H
#define HTKV_ENGINE_EBR_H

#include <stdatomic.h>

#include "engine/internal.h"

/* 256 slots: more concurrent readers than that spin briefly until one leaves. */
#define EBR_SLOTS 256u

struct ebr_slot {
    _Atomic uint64_t epoch; /* 0 = idle, else the global epoch seen at entry */
    _Atomic uint64_t reads; /* gets counted by the slot's holders (written by the holder only) */
    char pad[HTKV_CACHELINE - 2 * sizeof(uint64_t)];
};

struct ebr {
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t global;
    char pad[HTKV_CACHELINE - sizeof(uint64_t)];
    struct ebr_slot slots[EBR_SLOTS];
    _Atomic uint64_t unfreed; /* objects retired with no room in a limbo: kept, never freed */
};

/* One retired object and how to free it. */
struct ebr_item {
    void *p;
    void (*free_fn)(void *p);
    uint64_t stamp;
};

/* A writer's list of retired objects, in stamp order. Owned by one writer at a time. */
struct ebr_limbo {
    struct ebr_item *items;
    size_t head;  /* first item not yet freed */
    size_t count; /* items in use: [head, count) */
    size_t cap;
};

void htkv_ebr_init(struct ebr *e);

/* Enter a read-side critical section; returns the slot to pass to htkv_ebr_exit(). */
unsigned htkv_ebr_enter(struct ebr *e);

static inline void
htkv_ebr_exit(struct ebr *e, unsigned slot)
{
    atomic_store_explicit(&e->slots[slot].epoch, 0, memory_order_release);
}

/* Count one get in @p slot, which the caller holds: the line is already the caller's, and only
 * the holder writes the counter (a plain load and store, ordered by the slot's CAS and release). */
static inline void
htkv_ebr_count_read(struct ebr *e, unsigned slot)
{
    _Atomic uint64_t *c = &e->slots[slot].reads;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Sum of the gets counted in every slot. */
static inline uint64_t
htkv_ebr_reads(struct ebr *e)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < EBR_SLOTS; i++) {
        n += atomic_load_explicit(&e->slots[i].reads, memory_order_relaxed);
    }
    return n;
}

/* Stamp for an object unlinked just now (call after unlinking). */
uint64_t htkv_ebr_stamp(struct ebr *e);

/* Objects with a stamp below the returned value can no longer be reached by any reader. */
uint64_t htkv_ebr_safe(struct ebr *e);

/* True when no reader is inside a critical section. */
bool htkv_ebr_idle(struct ebr *e);

/*
 * Make room in @p l for @p n more objects, so that the next @p n retirements need no memory.
 * Call it before unlinking anything that will be retired. 0, or -ENOMEM (@p l unchanged in what
 * it holds).
 */
int htkv_ebr_reserve(struct ebr_limbo *l, size_t n);

/*
 * Put @p p (to be freed by @p free_fn) in @p l. Unlinking must have happened before. When @p l is
 * full and cannot grow (no memory: a retirement nobody reserved room for), what readers left is
 * freed to make room; if nothing was, @p p is kept and never freed (counted in e->unfreed). It
 * does not wait for readers: the caller may be inside a read-side section itself (every API call
 * is), and waiting for its own slot would never end.
 */
void htkv_ebr_retire(struct ebr *e, struct ebr_limbo *l, void *p, void (*free_fn)(void *));

/* Free what is safe to free. Returns the number of objects freed. */
size_t htkv_ebr_reclaim(struct ebr *e, struct ebr_limbo *l);

/* Wait for every reader to leave, then free everything in @p l and its storage. */
void htkv_ebr_limbo_fini(struct ebr *e, struct ebr_limbo *l);

#endif
