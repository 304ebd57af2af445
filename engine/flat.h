/*
 * flat.h - a shard's sorted run: a flat, immutable copy of its trie in key order, which ordered
 * reads use instead of walking the trie for as long as the trie has not changed since.
 *
 * Why. Walking the crit-bit trie costs, per key, a node pop and descent and a load of the index
 * entry, each at an unrelated address. A run element holds what an iterator needs of a key (its
 * record's address, version, lengths and flags) in one array in key order: reading keys
 * sequentially from it costs one load of the record's key bytes each, and those can be fetched
 * ahead of use.
 *
 * Validity. A run records the trie generation it copies (htkv_trie_gen()). A reader takes it
 * only when the trie's generation, loaded after the run pointer inside an EBR critical section,
 * still equals it: at that moment every element is the current head entry of its key and the run
 * holds exactly the trie's keys. Any insert, replace or delete (a write, a compaction copy, a
 * tombstone drop) makes the run stale for new readers, which go back to the trie until a later
 * query builds a fresh run. An iterator keeps the run it took (a reference) until it is
 * destroyed, whatever the writers do meanwhile; that is correct for the view it reads (view.c:
 * an element the view's snapshot covers is that snapshot's entry of its key, any other is looked
 * up again in the trie). Elements never point at index entries, so a retired run never leads a
 * reader to freed memory; their records lie in segment mappings, which stay valid for the view
 * that reads them (compact.c).
 *
 * Building. The run is built by a reader, never by a writer: a shard's readers count the keys
 * they walked in its trie since it last changed (htkv_run_note()), and once that count reaches
 * twice the trie's key count, the next ordered query builds one before it starts (one builder per
 * shard at a time; shards of fewer than 32 keys get none). Counting only since the last change
 * keeps a shard that changes between every few queries from paying for runs it would not read.
 * So the cost of all builds is at most half the cost of the trie walks that preceded them, and a
 * keyspace that changes faster than it is walked never builds; a stable one reads the run. The
 * builder walks the trie without the shard lock and publishes under it, and only if the generation
 * did not move during the walk (else the run is dropped: it would be stale already). The old run is
 * retired through EBR.
 *
 * Cost. 24 bytes per key in each shard whose run exists (counted in htkv_stats.trie_bytes);
 * none for a shard never queried in order. An open iterator keeps at most one run per shard
 * alive, stale or not, until it is destroyed. With verify_checksums = 2 no run is built (every read
 * checks its record, which needs the entry); with 1 the builder checks records not yet checked.
 */
#ifndef HTKV_ENGINE_FLAT_H
#define HTKV_ENGINE_FLAT_H

#include <stdatomic.h>

#include "engine/internal.h"

struct shard;
struct hidx_ent;

/* A build (of a run, or of a merge path) waits until the walks since the last change reach this
 * many times what it copies: a keyspace changed about as often as it is read would waste most
 * builds, and each build is one query's latency. */
#define RUN_CREDIT_FACTOR 2u

/* Flags in run_ent.vflags above the value length (values are at most 1 GiB: 30 bits). */
#define RUN_DEL (1u << 31)  /* the head is a tombstone */
#define RUN_SLOW (1u << 30) /* read through the index entry: its record failed its check */
#define RUN_VLEN_MASK (RUN_SLOW - 1u)

struct run_ent {
    const unsigned char *rec; /* the head's record, in a segment mapping */
    uint64_t version;         /* the head's version */
    uint32_t klen;
    uint32_t vflags; /* value length | RUN_DEL | RUN_SLOW */
};
HTKV_STATIC_ASSERT(sizeof(struct run_ent) == 24, "run element is 24 bytes");

struct shard_run {
    _Atomic uint64_t refs; /* 1 while published, plus one per iterator that took it */
    uint64_t gen;          /* the trie generation it copies */
    uint64_t n;            /* elements */
    struct run_ent ents[];
};

/**
 * Take a reference to the shard's run, if it is still exact.
 * @return The run (release it with htkv_run_release(); it stays valid until then, inside or
 *         outside critical sections), or NULL: no run, or a stale one.
 * @context Any thread, inside an EBR critical section. Lock-free.
 */
struct shard_run *htkv_run_acquire(struct shard *sh);

/** Drop a reference from htkv_run_acquire(); frees a retired run. NULL is allowed. @context Any
 * thread. */
void htkv_run_release(struct shard_run *r);

/**
 * Count @p keys keys that a reader walked in the shard's trie (the credit towards a build).
 * @context Any thread. Lock-free.
 */
void htkv_run_note(struct shard *sh, uint64_t keys);

/**
 * At the start of an ordered query: build a run now if the shard has none that is exact and the
 * credit since the trie last changed reaches twice its key count (see the top of this file).
 * Failures (no memory, a concurrent change) are silent: the query then walks the trie.
 * @context Any thread, outside an EBR critical section (building enters its own). Takes the
 *          shard lock briefly when it publishes a run.
 */
void htkv_run_refresh(struct shard *sh);

/* Test hook: 1 = htkv_run_refresh() builds whenever the run is missing or stale, whatever the
 * credit, and no merge path is built, so that tests merge runs (and switch between runs and
 * tries) on small stores; 2 = the same, and htkv_path_refresh() builds a path whenever every
 * shard has an exact run, so that tests read along paths. 0 = the credit rules. */
extern _Atomic int htkv_run_eager; /* read relaxed: tests set it while the store runs */

/**
 * Retire the shard's run (through EBR): the caller is about to rebuild the trie from scratch.
 * @context The shard's writer, lock held.
 */
void htkv_run_drop(struct shard *sh);

/** Bytes of the shard's current run. @context Any thread; a recent value. */
uint64_t htkv_run_bytes(const struct shard *sh);

/** Free the run at once. @context Shard destruction: no reader is left. */
void htkv_run_fini(struct shard *sh);

/* Index of the first element of @p r whose key is >= @p key (@p strict: > @p key), or r->n. */
uint64_t htkv_run_lower_bound(const struct shard_run *r, const unsigned char *key, uint32_t klen,
                              bool strict);

/* Index of the first element of @p r past every key that starts with @p prefix, or r->n. */
uint64_t htkv_run_prefix_end(const struct shard_run *r, const unsigned char *prefix, uint32_t plen);

/* Add @p keys to a credit counted since generation @p gen; a credit counted under an older
 * generation starts over (the structure it would pay for would have been stale already). Races
 * between readers only blur a heuristic. */
static inline void
htkv_run_credit_add(_Atomic uint64_t *credit, _Atomic uint64_t *credit_gen, uint64_t gen,
                    uint64_t keys)
{
    if (atomic_load_explicit(credit_gen, memory_order_relaxed) != gen) {
        atomic_store_explicit(credit_gen, gen, memory_order_relaxed);
        atomic_store_explicit(credit, keys, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(credit, keys, memory_order_relaxed);
}

#endif /* HTKV_ENGINE_FLAT_H */
