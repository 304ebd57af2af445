/*
 * zombie.h - segments dropped while views that predate the drop are open (zombie.c, store layer).
 */
#ifndef HTKV_ENGINE_ZOMBIE_H
#define HTKV_ENGINE_ZOMBIE_H

#include <stdint.h>

struct htkv_db;
struct shard;
struct seg;

/* A segment dropped while views that predate the drop were open. */
struct zombie {
    struct seg *seg;
    uint32_t shard;
    uint64_t gen; /* db->views.gen at the drop: views with a gen <= it may read the segment */
    struct zombie *next;
};

/* Release dropped segment @p s of @p sh (views.lock and the shard's lock held): through EBR at
 * once when no view is open and the shard's limbo has room, else as zombie @p z (taken, filled
 * here) until the views open now have closed (or, kept for want of memory, until a later
 * release finds room: the compactor tries again). */
void htkv_zombie_retire(struct htkv_db *db, struct shard *sh, struct seg *s, struct zombie *z);

/* Hand zombies that no open view predates (gen < @p min_gen) to EBR (views.lock held). */
void htkv_zombie_release(struct htkv_db *db, uint64_t min_gen);

/* Close every zombie at once (htkv_close(): no reader is left). */
void htkv_zombie_free_all(struct htkv_db *db);

#endif
