/*
 * merge.h - merge paths over every shard's sorted run (features layer, merge.c).
 *
 * A path is the store-wide key order of the shards' runs, stored as one byte per
 * key: the shard that holds the key at that place. With it a query reads its keys without
 * comparing any: the keys of a range are a contiguous stretch of the path (it starts at the sum
 * of the shards' lower bounds and ends at the sum of their upper bounds), and each byte says
 * which shard's run yields the next element. A path holds a reference to each run it was built
 * from and is valid while every shard still publishes that very run and it is exact; one write to
 * any shard makes it stale, and queries fall back to merging the runs (or tries). It is built by
 * a query under the same rule as runs: once the keys merged without a path since any trie last
 * changed reach twice the store's key count. 1 byte a key; only for stores of 2 to 256 shards.
 */
#ifndef HTKV_ENGINE_MERGE_H
#define HTKV_ENGINE_MERGE_H

#include <stdatomic.h>

#include "engine/flat.h"
#include "engine/internal.h"

struct merge_path {
    _Atomic uint64_t refs; /* 1 while published, plus one per iterator that took it */
    uint32_t nshards;
    uint64_t n;              /* positions: the sum of the runs' elements */
    struct shard_run **runs; /* [nshards], a reference each */
    uint8_t *path;           /* [n]: the shard of each position, in key order */
};

struct htkv_db;

/**
 * Take a reference to the store's merge path if it is valid now (every shard publishes the run
 * it was built from, and that run is exact), else NULL.
 * @context Any thread, inside an EBR critical section. Lock-free: O(shards).
 */
struct merge_path *htkv_path_acquire(struct htkv_db *db);

/** Drop a reference from htkv_path_acquire(); NULL is allowed. @context Any thread. */
void htkv_path_release(struct merge_path *p);

/** Count @p keys keys merged without a path (the credit towards building one). */
void htkv_path_note(struct htkv_db *db, uint64_t keys);

/**
 * At the start of an ordered query, after htkv_run_refresh() on every shard: build a path if the
 * store has none that is valid, every shard has an exact run, and the credit reaches twice the
 * store's key count (or as htkv_run_eager says). Failures are silent.
 * @context As htkv_run_refresh(); takes shard 0's lock briefly to publish.
 */
void htkv_path_refresh(struct htkv_db *db);

/** Free the published path at once. @context Store close, before the shards are destroyed. */
void htkv_path_fini(struct htkv_db *db);

#endif /* HTKV_ENGINE_MERGE_H */
