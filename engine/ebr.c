/*
 * ebr.c - epoch-based reclamation (see ebr.h).
 *
 * Design. A reader claims a free slot with a CAS that stores the global epoch it saw; the CAS is
 * a full barrier, so any pointer it loads afterwards was loaded after the slot became visible.
 * A writer unlinks an object, then takes a stamp (a fence and a load of the global epoch), then
 * (later) advances the epoch and scans the slots. Either the scan sees the reader's slot (whose
 * epoch is <= the stamp, so the object is kept), or the reader's CAS comes after the scan and hence
 * after the unlink, and the reader cannot reach the object.
 *
 * Invariants
 *   1. A non-zero slot holds an epoch <= the global epoch at any later time.
 *   2. An object stamped s is freed only when every non-zero slot holds an epoch > s.
 *   3. Limbo items are in non-decreasing stamp order (one writer appends them).
 *   4. Retiring never waits for readers: writers retire from inside their own read-side section.
 *      Room is reserved before the unlink (htkv_ebr_reserve()); without room and memory the
 *      object is kept for good, never freed early.
 */
#include "engine/ebr.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <stdatomic.h>

static _Thread_local unsigned ebr_hint = EBR_SLOTS; /* EBR_SLOTS = not yet chosen */

void
htkv_ebr_init(struct ebr *e)
{
    atomic_init(&e->global, 1);
    atomic_init(&e->unfreed, 0);
    for (unsigned i = 0; i < EBR_SLOTS; i++) {
        atomic_init(&e->slots[i].epoch, 0);
    }
}

unsigned
htkv_ebr_enter(struct ebr *e)
{
    unsigned i = ebr_hint;
    if (HTKV_UNLIKELY(i >= EBR_SLOTS)) {
        /* Spread threads over slots by the address of a thread-local variable. */
        i = (unsigned)(((uintptr_t)&ebr_hint >> 12) * 2654435761u) % EBR_SLOTS;
    }
    for (unsigned tries = 0;; tries++) {
        uint64_t g = atomic_load_explicit(&e->global, memory_order_relaxed);
        uint64_t idle = 0;
        if (atomic_load_explicit(&e->slots[i].epoch, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&e->slots[i].epoch, &idle, g,
                                                    memory_order_seq_cst, memory_order_relaxed)) {
            ebr_hint = i;
            return i;
        }
        i = (i + 1) % EBR_SLOTS;
        if (tries > 0 && tries % EBR_SLOTS == 0) {
            sched_yield();
        }
    }
}

uint64_t
htkv_ebr_stamp(struct ebr *e)
{
    /* The fence orders the caller's unlink before the load: any reader that could still reach
     * the object recorded an epoch <= the value loaded. The epoch is advanced only by reclaim, so
     * the retire path does not bounce the line that every reader loads. */
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(&e->global, memory_order_relaxed);
}

uint64_t
htkv_ebr_safe(struct ebr *e)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t safe = UINT64_MAX;
    for (unsigned i = 0; i < EBR_SLOTS; i++) {
        uint64_t s = atomic_load_explicit(&e->slots[i].epoch, memory_order_acquire);
        if (s != 0 && s < safe) {
            safe = s;
        }
    }
    return safe;
}

bool
htkv_ebr_idle(struct ebr *e)
{
    return htkv_ebr_safe(e) == UINT64_MAX;
}

/* Move the items still waiting to the front of the list. */
static void
limbo_compact(struct ebr_limbo *l)
{
    if (l->head > 0) {
        memmove(l->items, l->items + l->head, (l->count - l->head) * sizeof(*l->items));
        l->count -= l->head;
        l->head = 0;
    }
}

int
htkv_ebr_reserve(struct ebr_limbo *l, size_t n)
{
    if (l->cap - l->count >= n) {
        return 0;
    }
    limbo_compact(l);
    if (l->cap - l->count >= n) {
        return 0;
    }
    size_t cap = l->cap ? l->cap : 256;
    while (cap - l->count < n) {
        if (cap > SIZE_MAX / (2 * sizeof(*l->items))) {
            return -ENOMEM;
        }
        cap *= 2;
    }
    struct ebr_item *items = htkv_mem_realloc(l->items, cap * sizeof(*items));
    if (items == NULL) {
        return -ENOMEM;
    }
    l->items = items;
    l->cap = cap;
    return 0;
}

void
htkv_ebr_retire(struct ebr *e, struct ebr_limbo *l, void *p, void (*free_fn)(void *))
{
    HTKV_ASSERT(p != NULL);
    HTKV_ASSERT(free_fn != NULL);
    uint64_t stamp = htkv_ebr_stamp(e);
    if (l->count == l->cap && htkv_ebr_reserve(l, 1) != 0) {
        /* Unreserved and no memory: free what readers left, or keep @p p for good. */
        htkv_ebr_reclaim(e, l);
        limbo_compact(l);
        if (l->count == l->cap) {
            atomic_fetch_add_explicit(&e->unfreed, 1, memory_order_relaxed);
            return;
        }
    }
    HTKV_ASSERT(l->count < l->cap);
    if (l->count > l->head) {
        HTKV_DASSERT(l->items[l->count - 1].stamp <= stamp);
    }
    l->items[l->count++] = (struct ebr_item){ .p = p, .free_fn = free_fn, .stamp = stamp };
}

size_t
htkv_ebr_reclaim(struct ebr *e, struct ebr_limbo *l)
{
    if (l->head == l->count) {
        return 0;
    }
    /* Readers that enter from now on record a larger epoch than any stamp in the list. */
    atomic_fetch_add_explicit(&e->global, 1, memory_order_seq_cst);
    uint64_t safe = htkv_ebr_safe(e);
    size_t freed = 0;
    while (l->head < l->count && l->items[l->head].stamp < safe) {
        struct ebr_item *it = &l->items[l->head++];
        it->free_fn(it->p);
        freed++;
    }
    if (l->head == l->count) {
        l->head = l->count = 0;
    }
    return freed;
}

void
htkv_ebr_limbo_fini(struct ebr *e, struct ebr_limbo *l)
{
    while (htkv_ebr_reclaim(e, l) > 0 || l->head != l->count) {
        sched_yield();
    }
    htkv_mem_free(l->items);
    *l = (struct ebr_limbo){ 0 };
}
