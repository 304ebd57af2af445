/*
 * hashindex.c - the writer side of the hash index (design in hashindex.h).
 *
 * Invariants
 *   1. Every occupied slot points to the newest entry of a distinct key or to the removed
 *      sentinel; slots are never emptied while readers may use the table (removed keys leave
 *      their sentinel until the next rebuild).
 *   2. A new table is fully built before it is published with a release store; the old table is
 *      retired, never freed while a reader may hold it.
 *   3. used <= mask * 3/4 after every install (reserve grows first).
 */
#include "engine/hashindex.h"

const struct hidx_ent htkv_hidx_removed = { .key_len = 0 };

/* Tables of at least this many bytes are mapped (htkv_mem_map()): a growing index replaces its
 * table with one twice as large, and the old one's pages go back to the system when it is
 * freed instead of staying resident with the allocator. */
#define HIDX_MAP_BYTES (256u << 10)

static size_t
table_bytes(uint64_t slots)
{
    return sizeof(struct hidx_table) + slots * sizeof(uint64_t);
}

static struct hidx_table *
table_new(uint64_t slots, unsigned arena)
{
    HTKV_ASSERT((slots & (slots - 1)) == 0);
    size_t n = table_bytes(slots);
    struct hidx_table *t = n >= HIDX_MAP_BYTES ? htkv_mem_map(n) : htkv_mem_calloc_in(arena, 1, n);
    if (t == NULL) {
        return NULL;
    }
    t->mask = slots - 1;
    return t;
}

void
htkv_hidx_table_free(void *table)
{
    struct hidx_table *t = table;
    size_t n = table_bytes(t->mask + 1);
    if (n >= HIDX_MAP_BYTES) {
        htkv_mem_unmap(t, n);
    } else {
        htkv_mem_free(t);
    }
}

int
htkv_hidx_init(struct hidx *h)
{
    return htkv_hidx_init_in(h, 0);
}

int
htkv_hidx_init_in(struct hidx *h, unsigned arena)
{
    h->arena = arena;
    struct hidx_table *t = table_new(HIDX_MIN_SLOTS, arena);
    if (t == NULL) {
        return -ENOMEM;
    }
    atomic_init(&h->table, t);
    h->entries = 0;
    return 0;
}

static void
free_chain(struct hidx_ent *e)
{
    while (e != NULL) {
        struct hidx_ent *p = atomic_load_explicit(&e->prev, memory_order_relaxed);
        htkv_mem_free(e);
        e = p;
    }
}

void
htkv_hidx_fini(struct hidx *h)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    if (t == NULL) {
        return;
    }
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (hidx_slot_live(s)) {
            free_chain(hidx_slot_ent(s));
        }
    }
    htkv_hidx_table_free(t);
    atomic_store_explicit(&h->table, NULL, memory_order_relaxed);
}

static void
table_put(struct hidx_table *t, uint64_t slot)
{
    struct hidx_ent *e = hidx_slot_ent(slot);
    for (uint64_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
        if (atomic_load_explicit(&t->slots[i], memory_order_relaxed) == 0) {
            atomic_store_explicit(&t->slots[i], slot, memory_order_relaxed);
            t->used++;
            return;
        }
    }
}

static int hidx_rebuild(struct hidx *h, uint64_t more, void (*retire)(void *ctx, void *table),
                        void *ctx);

int
htkv_hidx_reserve(struct hidx *h, uint64_t more, void (*retire)(void *ctx, void *table), void *ctx)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    uint64_t slots = t->mask + 1;
    if ((t->used + more) * HIDX_LOAD_DEN <= slots * HIDX_LOAD_NUM) {
        return 0;
    }
    return hidx_rebuild(h, more, retire, ctx);
}

int
htkv_hidx_tidy(struct hidx *h, void (*retire)(void *ctx, void *table), void *ctx)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    uint64_t slots = t->mask + 1, removed = t->used - h->entries;
    bool shrink = slots > HIDX_MIN_SLOTS && h->entries * 4 <= slots;
    if (!shrink && removed * 8 <= slots) {
        return 0;
    }
    return hidx_rebuild(h, 0, retire, ctx);
}

/* Rebuild the table for its entries and @p more new ones. */
static int
hidx_rebuild(struct hidx *h, uint64_t more, void (*retire)(void *ctx, void *table), void *ctx)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    /* Size the new table for the live keys only: a rebuild also drops removed sentinels, so a
     * table full of them is rebuilt at the same size instead of doubling. */
    uint64_t need = h->entries + more;
    uint64_t slots = HIDX_MIN_SLOTS;
    while (need * HIDX_LOAD_DEN > slots * HIDX_LOAD_NUM) {
        slots *= 2;
    }
    /* Rebuilding is O(keys) once per doubling: amortised O(1) per insert. */
    struct hidx_table *n = table_new(slots, h->arena);
    if (n == NULL) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (hidx_slot_live(s)) {
            table_put(n, s);
        }
    }
    HTKV_ASSERT(n->used == h->entries);
    atomic_store_explicit(&h->table, n, memory_order_release);
    retire(ctx, t);
    return 0;
}

struct hidx_ent *
htkv_hidx_install(struct hidx *h, struct hidx_ent *e, int *rc,
                  void (*retire)(void *ctx, void *table), void *ctx)
{
    *rc = 0;
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    const unsigned char *rec = hidx_ent_rec(e);
    uint64_t tag = e->hash & ~HIDX_PTR_MASK;
    HTKV_ASSERT(((uintptr_t)e & ~HIDX_PTR_MASK) == 0);
    for (uint64_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (s == 0) {
            break;
        }
        if ((s & ~HIDX_PTR_MASK) == tag) {
            struct hidx_ent *old = hidx_slot_ent(s);
            if (old->hash == e->hash && hidx_ent_key_eq(old, rec + REC_HDR_BYTES, e->key_len)) {
                atomic_store_explicit(&e->prev, old, memory_order_relaxed);
                atomic_store_explicit(&t->slots[i], hidx_slot_make(e), memory_order_release);
                return old;
            }
        }
    }
    /* New key. */
    *rc = htkv_hidx_reserve(h, 1, retire, ctx);
    if (*rc != 0) {
        return NULL;
    }
    t = atomic_load_explicit(&h->table, memory_order_relaxed);
    atomic_store_explicit(&e->prev, NULL, memory_order_relaxed);
    for (uint64_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
        if (atomic_load_explicit(&t->slots[i], memory_order_relaxed) == 0) {
            atomic_store_explicit(&t->slots[i], hidx_slot_make(e), memory_order_release);
            t->used++;
            h->entries++;
            return NULL;
        }
    }
}

struct hidx_ent *
htkv_hidx_twin(struct hidx *h, const struct hidx_ent *e)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    const unsigned char *rec = hidx_ent_rec(e);
    uint64_t tag = e->hash & ~HIDX_PTR_MASK;
    for (uint64_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (s == 0) {
            return NULL;
        }
        struct hidx_ent *o = hidx_slot_ent(s);
        if ((s & ~HIDX_PTR_MASK) == tag && o != e && o->hash == e->hash &&
            !hidx_ent_key_eq(o, rec + REC_HDR_BYTES, e->key_len)) {
            return o;
        }
    }
}

void
htkv_hidx_remove(struct hidx *h, struct hidx_ent *e)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    uint64_t want = hidx_slot_make(e);
    for (uint64_t i = e->hash & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        HTKV_ASSERT(s != 0); /* e is the head of its key: it is in the table */
        if (s == want) {
            atomic_store_explicit(&t->slots[i], (uint64_t)(uintptr_t)&htkv_hidx_removed,
                                  memory_order_release);
            HTKV_ASSERT(h->entries > 0);
            h->entries--;
            return;
        }
    }
}

uint64_t
htkv_hidx_table_bytes(const struct hidx *h)
{
    struct hidx_table *t = atomic_load_explicit(&((struct hidx *)h)->table, memory_order_relaxed);
    return table_bytes(t->mask + 1);
}

void
htkv_hidx_foreach(struct hidx *h, void (*fn)(struct hidx_ent *e, void *ctx), void *ctx)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (hidx_slot_live(s)) {
            fn(hidx_slot_ent(s), ctx);
        }
    }
}
