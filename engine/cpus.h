/*
 * cpus.h - how many CPUs this process may really use (base layer, cpus.c).
 *
 * A node agent often runs in a container limited by a CPU affinity mask (taskset, cpuset) or a
 * cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us); the number of online CPUs says neither. The
 * store sizes its default shard count from this figure, reports it in htkv_stats.cpus and warns
 * when more worker threads are asked for than it allows.
 */
#ifndef HTKV_ENGINE_CPUS_H
#define HTKV_ENGINE_CPUS_H

#include <stdint.h>

/*
 * CPUs the calling process may use: the CPUs of its affinity mask, lowered to the quota of its
 * cgroup and of every ancestor: v2 (cpu.max "QUOTA PERIOD": ceil(QUOTA / PERIOD); "max" = none)
 * and v1's "cpu" hierarchy, found through /proc/self/mountinfo (cpu.cfs_quota_us over
 * cpu.cfs_period_us; -1 = none). Falls back to the online CPUs when the mask cannot be read; at
 * least 1. Reads /proc and /sys/fs/cgroup on every call (a few system calls): call it at open, not
 * per operation. Any thread.
 */
unsigned htkv_cpus_available(void);

/*
 * The quota part of htkv_cpus_available() over a cgroup tree at @p root for the cgroup path
 * @p cg (as /proc/self/cgroup names it, below the mount's root): the smallest
 * ceil(QUOTA / PERIOD) of @p cg and its ancestors, each directory read as v2 (cpu.max) or v1
 * (cpu.cfs_quota_us, cpu.cfs_period_us), or 0 when none has a quota or none can be read. Any
 * thread; for htkv_cpus_available() and tests.
 */
unsigned htkv_cpus_quota(const char *root, const char *cg);

/* Most threads htkv_parallel_for() starts beside the calling one. */
#define PARALLEL_THREADS_MAX 15u

/*
 * Call @p fn(@p ctx, i) for every i in [0, @p n) on the calling thread and up to @p threads - 1
 * more (fewer when n is smaller; at most PARALLEL_THREADS_MAX), each taking the next i in turn,
 * and return once every call returned. A thread that cannot be created leaves its share to the
 * others. Any thread.
 */
void htkv_parallel_for(uint32_t n, unsigned threads, void (*fn)(void *ctx, uint32_t i), void *ctx);

#endif
