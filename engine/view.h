/*
 * view.h - what the rest of the engine asks of a view (features layer, view.c).
 *
 * A view pins one snapshot version per shard; both figures below are fixed for the life of the
 * view. Callers hold a reference to the view for the duration of the call.
 */
#ifndef HTKV_ENGINE_VIEW_H
#define HTKV_ENGINE_VIEW_H

#include "engine/internal.h"

/* The snapshot version of shard @p shard in view @p v. */
uint64_t htkv_view_shard_snap(const htkv_view *v, uint32_t shard);

/* Every version up to it that a write took is visible in @p v (none is still pending in a shard
 * whose group sync is in flight): the change feed reports nothing above it. */
uint64_t htkv_view_complete(const htkv_view *v);

#endif /* HTKV_ENGINE_VIEW_H */
