/*
 * manifest_int.h - the steps on a manifest's in-memory state that manifest.c (which replays
 * edits with them) shares with manifest_write.c (which applies what it appends or rewrites with
 * them). Private to engine/manifest*.c; the engine uses manifest.h.
 *
 * Invariants (of the state: see manifest.c)
 *   1. The segment lists, gone ids, recorded ends and aborts stay sorted, one entry each.
 *   2. A *_reserve() that succeeded makes the next apply of that kind unable to fail with
 *      -ENOMEM: writers reserve before an edit is durable and apply after.
 *   3. None of these locks m->lock or touches a file: the caller holds the lock where the
 *      manifest is shared.
 *
 * Includes: manifest.h (the state's types); declared functions are defined in manifest.c and
 * call only the base layer.
 */
#ifndef HTKV_ENGINE_MANIFEST_INT_H
#define HTKV_ENGINE_MANIFEST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/manifest.h"

/* A manifest with no shards and no file yet (m->fd -1), next id 1, the current format. NULL
 * when out of memory. */
struct manifest *htkv_man_new(int dir_fd, bool writable);

/* Allocate @p shard_count empty segment lists. 0 or -ENOMEM. */
int htkv_man_shards_alloc(struct manifest *m, uint32_t shard_count);

/* Room for one more id in @p s. 0 or -ENOMEM. */
int htkv_man_list_reserve(struct man_shard *s);

/* List segment @p id in shard @p shard, raising next_seg_id past it. 0, -ENOMEM, or
 * HTKV_ECORRUPT (added twice, or a gone id). */
int htkv_man_apply_add(struct manifest *m, uint32_t shard, uint64_t id);

/* Drop segment @p id of shard @p shard: forget its recorded end, call it gone. 0, -ENOMEM, or
 * HTKV_ECORRUPT (not listed). */
int htkv_man_apply_drop(struct manifest *m, uint32_t shard, uint64_t id);

/* Is @p id listed in shard @p shard? */
bool htkv_man_listed(const struct manifest *m, uint32_t shard, uint64_t id);

/* Room for one more gone id. 0 or -ENOMEM. */
int htkv_man_gone_reserve(struct manifest *m);

/* Call segment @p id of shard @p shard gone (a repeat changes nothing). 0 or -ENOMEM. */
int htkv_man_gone_add(struct manifest *m, uint32_t shard, uint64_t id);

/* Forget that @p id is gone (nothing when it is not). */
void htkv_man_gone_remove(struct manifest *m, uint64_t id);

/* Room for @p more recorded ends without reallocating. 0 or -ENOMEM. */
int htkv_man_ends_reserve(struct manifest *m, size_t more);

/* Remember MAN_SEG_END {@p id, @p end}; a lower end than the one recorded changes nothing. */
int htkv_man_apply_end(struct manifest *m, uint64_t id, uint64_t end);

/* Room for @p more aborts without reallocating. 0 or -ENOMEM. */
int htkv_man_aborts_reserve(struct manifest *m, size_t more);

/* Remember MAN_BATCH_ABORT {@p limit, @p version}; a repeat keeps the larger limit. */
int htkv_man_apply_abort(struct manifest *m, uint64_t version, uint64_t limit);

#endif /* HTKV_ENGINE_MANIFEST_INT_H */
