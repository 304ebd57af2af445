/*
 * putgroup.h - put groups: inline puts and deletes in HTKV_SYNC_ALWAYS share one pwrite() and one
 * fdatasync per group (putgroup.c; shard layer, above shard.c: it stages and syncs through the
 * shard's functions, and shard.c never calls it).
 */
#ifndef HTKV_ENGINE_PUTGROUP_H
#define HTKV_ENGINE_PUTGROUP_H

#include "engine/shard.h"

/* Test hook: groups a put-group leader runs in a row before it hands over (default 4; at
 * least 1). Tests set 1 so that leadership changes hands after almost every group. Set it
 * before any writer runs. */
extern unsigned htkv_put_group_rounds;

/*
 * A put or delete in HTKV_SYNC_ALWAYS, inline, through the put groups of shard @p sh (the key's):
 * returns once it is durable and visible, or failed. Sets *@p version (0 on failure but a failed
 * sync, which keeps the staged version). A non-zero @p t0_ns (htkv_now_ns() when the caller's
 * call began) records the call's latency in the shard's put or delete histogram. Any thread.
 */
int htkv_putgroup_put(struct shard *sh, uint8_t type, const void *key, uint32_t klen,
                      const void *val, uint32_t vlen, uint64_t hash, uint64_t *version,
                      uint64_t t0_ns);

#endif
