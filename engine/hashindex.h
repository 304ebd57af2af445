/*
 * hashindex.h - a shard's hash index: key -> newest record location, one writer, lock-free readers
 * (index layer; its functions and types are prefixed htkv_hidx_ / hidx_).
 *
 * The table is open addressing with linear probing over 8-byte slots. A slot holds a pointer to
 * the key's newest entry in its low 48 bits and 16 bits of the key's hash above them, so a probe
 * rejects most other keys without touching memory. Keys are not copied into the index: an entry
 * points at its record in a segment mapping, and key comparisons read the record's key.
 *
 * Each entry links to the key's previous version. A reader takes the shard's visible version
 * first and returns the newest entry not newer than it: entries installed by a batch that is still
 * being applied are skipped, so a batch appears in a shard all at once. The writer cuts the link
 * to the previous version once the new one is visible, and retires the old entry through EBR.
 */
#ifndef HTKV_ENGINE_HASHINDEX_H
#define HTKV_ENGINE_HASHINDEX_H

#include <stdatomic.h>

#include "engine/internal.h"
#include "engine/rec.h"
#include "engine/seg.h"

#define HIDX_PTR_BITS 48
#define HIDX_PTR_MASK ((1ull << HIDX_PTR_BITS) - 1)
/* Grow when more than 3/4 of the slots are used: linear probing stays near 2.5 probes a miss. */
#define HIDX_LOAD_NUM 3u
#define HIDX_LOAD_DEN 4u
#define HIDX_MIN_SLOTS 1024u

struct hidx_ent {
    struct hidx_ent *_Atomic prev; /* older version, NULL when none is needed any more */
    uint64_t version;
    uint64_t hash;
    struct seg *seg;
    uint32_t off;       /* record offset in seg */
    uint32_t rec_bytes; /* header + key + value, without padding */
    uint32_t key_len;
    uint8_t del; /* 1 = tombstone */
    /* CLOCK reference of a memory budget (cold.c): set to 1 by readers (relaxed, only when 0)
     * and cleared by the eviction hand; 2 keeps the entry in memory for good. */
    _Atomic uint8_t ref;
    /* 1 once the record's CRC is known good: checked by recovery's scan, by compaction before
     * copying it, or by a first read; or written from memory by this process. Readers set it
     * (relaxed: a lost store only costs one more check). */
    _Atomic uint16_t checked;
};

struct hidx_table {
    uint64_t mask;
    uint64_t used; /* occupied slots, removed sentinels included (writer only) */
    _Atomic uint64_t slots[];
};

struct hidx {
    struct hidx_table *_Atomic table;
    unsigned arena;   /* tables come from it (htkv_mem_alloc_in()); 0 = default */
    uint64_t entries; /* head entries (writer only) */
};

static inline const unsigned char *
hidx_ent_rec(const struct hidx_ent *e)
{
    return e->seg->map + e->off;
}

static inline bool
hidx_ent_key_eq(const struct hidx_ent *e, const void *key, uint32_t klen)
{
    return e->key_len == klen && memcmp(hidx_ent_rec(e) + REC_HDR_BYTES, key, klen) == 0;
}

static inline uint64_t
hidx_slot_make(const struct hidx_ent *e)
{
    uintptr_t p = (uintptr_t)e;
    return (e->hash & ~HIDX_PTR_MASK) | (uint64_t)p;
}

static inline struct hidx_ent *
hidx_slot_ent(uint64_t s)
{
    return (struct hidx_ent *)(uintptr_t)(s & HIDX_PTR_MASK);
}

/*
 * A removed key's slot points at this sentinel instead of becoming empty: an empty slot ends a
 * probe, so emptying one could hide keys placed after it from lock-free readers. The sentinel's
 * key_len is 0, which no key has, so a reader whose tag matches it (tag 0) rejects it without
 * reading a record. Rebuilds (htkv_hidx_reserve) leave sentinels behind.
 */
extern const struct hidx_ent htkv_hidx_removed;

/* True when slot value @p s holds an entry (neither empty nor removed). */
static inline bool
hidx_slot_live(uint64_t s)
{
    return s != 0 && hidx_slot_ent(s) != &htkv_hidx_removed;
}

int htkv_hidx_init(struct hidx *h);
/* As htkv_hidx_init(), with tables allocated from @p arena (internal.h). */
int htkv_hidx_init_in(struct hidx *h, unsigned arena);
/*
 * After many removals: rebuild the table at the size its entries need now when it is at most a
 * quarter full, or without its removed sentinels when they fill more than 1/8 of its slots
 * (linear probing walks through them: evictions, which remove entries in slot order, leave
 * long runs of them). 0, or -ENOMEM (the table stays as it is). The old table goes to
 * @p retire.
 */
int htkv_hidx_tidy(struct hidx *h, void (*retire)(void *ctx, void *table), void *ctx);

/* Free the table and every entry (no reader may be left). */
void htkv_hidx_fini(struct hidx *h);

/*
 * Reader side: the newest entry for @p key (head of its chain) in the current table, or NULL.
 * Call inside an EBR critical section.
 */
static inline struct hidx_ent *
htkv_hidx_find(struct hidx *h, uint64_t hash, const void *key, uint32_t klen)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_acquire);
    uint64_t tag = hash & ~HIDX_PTR_MASK;
    for (uint64_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (s == 0) {
            return NULL;
        }
        if ((s & ~HIDX_PTR_MASK) == tag) {
            struct hidx_ent *e = hidx_slot_ent(s);
            if (e->hash == hash && hidx_ent_key_eq(e, key, klen)) {
                return e;
            }
        }
    }
}

/*
 * Reader side: an entry whose full 64-bit hash is @p hash, or NULL (inside an EBR critical
 * section). After htkv_hidx_find() missed, such an entry belongs to another key, or to a
 * record whose key bytes were damaged (see db_miss() in engine/db.c).
 */
static inline struct hidx_ent *
htkv_hidx_find_hash(struct hidx *h, uint64_t hash)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_acquire);
    uint64_t tag = hash & ~HIDX_PTR_MASK;
    for (uint64_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = atomic_load_explicit(&t->slots[i], memory_order_acquire);
        if (s == 0) {
            return NULL;
        }
        if ((s & ~HIDX_PTR_MASK) == tag && hidx_slot_ent(s)->hash == hash) {
            return hidx_slot_ent(s);
        }
    }
}

/*
 * A hint for a writer about to install a key with hash @p hash: bring into the cache what the
 * install reads, one level per @p stage: 0 the key's home slot, 1 the entry that slot names, 2
 * the key bytes of that entry's record (install compares them). A writer with many keys at hand
 * runs each stage over all of them before the next, so that their cache misses overlap. Only the
 * home slot is looked at; nothing is changed. Call with the writer's lock held (entries and
 * segments stay put).
 */
static inline void
htkv_hidx_prefetch(struct hidx *h, uint64_t hash, int stage)
{
    struct hidx_table *t = atomic_load_explicit(&h->table, memory_order_relaxed);
    const _Atomic uint64_t *slot = &t->slots[hash & t->mask];
    if (stage == 0) {
        __builtin_prefetch((const void *)slot);
        return;
    }
    uint64_t s = atomic_load_explicit(slot, memory_order_relaxed);
    if (!hidx_slot_live(s) || (s & ~HIDX_PTR_MASK) != (hash & ~HIDX_PTR_MASK)) {
        return;
    }
    const struct hidx_ent *e = hidx_slot_ent(s);
    if (stage == 1) {
        __builtin_prefetch(e);
    } else {
        __builtin_prefetch(hidx_ent_rec(e) + REC_HDR_BYTES);
    }
}

/*
 * Writer side: make @p e the head for its key. Returns the previous head (now e->prev) or NULL.
 * May grow the table (the old table is passed to @p retire, which frees it with
 * htkv_hidx_table_free() once no reader can hold it). Returns -ENOMEM through @p rc when
 * the table must grow and cannot; nothing changes then.
 */
struct hidx_ent *htkv_hidx_install(struct hidx *h, struct hidx_ent *e, int *rc,
                                   void (*retire)(void *ctx, void *table), void *ctx);

/*
 * Writer side: an entry of another key with @p e's full 64-bit hash, or NULL. Two keys with one
 * hash are all but impossible, so recovery from hint files (which installs entries without
 * reading their records) takes a twin for damage in a record's key bytes and checks both
 * records (engine/recover.c).
 */
struct hidx_ent *htkv_hidx_twin(struct hidx *h, const struct hidx_ent *e);

/* Make sure one more key fits without growing (called before a write commits). 0 or -ENOMEM. */
int htkv_hidx_reserve(struct hidx *h, uint64_t more, void (*retire)(void *ctx, void *table),
                      void *ctx);

/*
 * Writer side: remove @p e, the head entry of its key, from the table (its slot becomes the
 * removed sentinel). The caller retires @p e and its chain through EBR. Never fails.
 */
void htkv_hidx_remove(struct hidx *h, struct hidx_ent *e);

/* Bytes used by the table (entries not included). */
uint64_t htkv_hidx_table_bytes(const struct hidx *h);

/* Free a table the index retired (the free function to pass with it to EBR). */
void htkv_hidx_table_free(void *table);

/* Call fn on every head entry (writer side or no concurrent writer). */
void htkv_hidx_foreach(struct hidx *h, void (*fn)(struct hidx_ent *e, void *ctx), void *ctx);

#endif
