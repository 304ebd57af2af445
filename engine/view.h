/*
 * view.h - what the rest of the engine asks of a view (features layer, view.c).
 *
 * A view pins one snapshot version per shard; both figures below are fixed for the life of the
 * view, once htkv_view_cut() (if called) returned. Callers hold a reference to the view for the
 * duration of the call.
 */
#ifndef HTKV_ENGINE_VIEW_H
#define HTKV_ENGINE_VIEW_H

#include "engine/internal.h"

/* The snapshot version of shard @p shard in view @p v. */
uint64_t htkv_view_shard_snap(const htkv_view *v, uint32_t shard);

/* Every version up to it that a write took is visible in @p v (none is still pending in a shard
 * whose group sync is in flight): the change feed reports nothing above it. */
uint64_t htkv_view_complete(const htkv_view *v);

/*
 * Make @p v the store at one version, htkv_view_version(v): every write at or below it and none
 * above. Waits (polling, up to 1 ms apart) until no version at or below it is still pending in a
 * shard, then reads every shard at it. For a caller that claims the version: a snapshot's file
 * says it, and a replica that installs it replays the change feed from there on.
 * @return 0; HTKV_ECLOSED when the store starts closing meanwhile; HTKV_EFAILED when a shard with
 *         such a version pending stopped its writes (it will never be visible). On an error the
 *         view is as it was.
 * @context The thread that opened @p v, before any read of it.
 */
int htkv_view_cut(htkv_view *v);

#endif /* HTKV_ENGINE_VIEW_H */
