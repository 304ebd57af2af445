/*
 * compact.h - compaction of a store's segments (design and invariants in compact.c).
 */
#ifndef HTKV_ENGINE_COMPACT_H
#define HTKV_ENGINE_COMPACT_H

#include "engine/internal.h"

struct htkv_db;
struct seg;
struct shard;

/* What one pass did. */
struct compact_result {
    uint64_t segments;  /* victims rewritten and dropped */
    uint64_t postponed; /* victims left for a later pass (a view or unsynced batch needs them) */
    uint64_t bytes_in;  /* record bytes of the dropped victims */
    uint64_t ns;        /* duration of the pass */
};

/*
 * Run one pass over every shard: with @p full, seal active segments with garbage and take every
 * sealed segment with garbage; otherwise the sealed segments at or above
 * compaction_min_garbage_ratio. The caller holds db->compactor.lock. Returns 0 (see @p res),
 * HTKV_EFAILED, -ENOSPC, HTKV_ECORRUPT (a victim's record failed its check: it is kept),
 * HTKV_ECLOSED (the store began closing), -ENOMEM or -errno.
 */
int htkv_compact_pass(struct htkv_db *db, bool full, struct compact_result *res);

/*
 * Write the missing hint files of @p sh's sealed segments and, with @p active, of its active
 * segment up to its tail (at close, after the final sync: no writer is left). The caller holds
 * compactor.lock or is htkv_close(). Failures are logged; returns the first, or 0.
 */
int htkv_hints_write(struct htkv_db *db, struct shard *sh, bool active);

/* Start the background compactor (compaction_interval_ms > 0, writable store): a pass every
 * interval on the store's periodic thread compactor.thread, then the snapshot it may call for.
 * 0 or -errno; nothing to start is 0. The store stops it (htkv_periodic_stop()). */
int htkv_compactor_start(struct htkv_db *db);

#endif
