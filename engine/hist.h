/*
 * hist.h - log-linear latency histograms and the per-shard figures behind
 * htkv_metrics_write() (private to the engine).
 *
 * A histogram is a fixed array of counters: values 0..3 have a bucket each, and every power of
 * two [2^e, 2^(e+1)) above is split into METRICS_SUB equal sub-buckets, so a bucket's width is at
 * most a quarter of its lower bound (a percentile is off by less than 25%). Recording is a
 * count-leading-zeros, a shift and one add: cheap enough to stay on.
 */
#ifndef HTKV_ENGINE_HIST_H
#define HTKV_ENGINE_HIST_H

#include <stdatomic.h>
#include <time.h>

#include "engine/internal.h"

/* 4 sub-buckets per power of two: 2 bits below the leading one. */
#define METRICS_SUB_BITS 2u
#define METRICS_SUB (1u << METRICS_SUB_BITS)
/* Highest exponent with buckets of its own: [2^36, 2^37) ns is 69..137 s; larger values go to
 * the last bucket. 4 exact buckets (0..3) + 4 per exponent 2..36 = 4 x 36 = 144 buckets. */
#define METRICS_EXP_MAX 36u
#define METRICS_BUCKETS (METRICS_SUB * METRICS_EXP_MAX)
/* One get in 64 per thread is timed, and one put or delete (a power of two: the test is a
 * mask). Every one is counted: a clock read costs ~20 ns, a tenth of a small put. */
#define METRICS_GET_SAMPLE 64u
#define METRICS_WRITE_SAMPLE 64u

HTKV_STATIC_ASSERT(METRICS_BUCKETS == 144, "4 exact buckets + 4 per exponent 2..36");
HTKV_STATIC_ASSERT((METRICS_GET_SAMPLE & (METRICS_GET_SAMPLE - 1)) == 0, "sampling is a mask");
HTKV_STATIC_ASSERT((METRICS_WRITE_SAMPLE & (METRICS_WRITE_SAMPLE - 1)) == 0, "sampling is a mask");

/*
 * A histogram that may be read while it is written. Counters are atomics so that a concurrent
 * reader is not a data race; a single writer (shard lock held, or the owning worker) updates them
 * with a plain load and store (htkv_hist_record), several writers with an atomic add
 * (htkv_hist_record_shared).
 */
struct htkv_hist {
    _Atomic uint64_t buckets[METRICS_BUCKETS];
    _Atomic uint64_t sum;     /* of recorded values */
    _Atomic uint64_t max;     /* largest recorded value */
    _Atomic uint64_t untimed; /* operations counted without a value (not sampled) */
};

/* A point-in-time copy of a histogram, or a merge of several. count = sum of the buckets (the
 * values recorded); ops = count + the operations counted untimed. */
struct hist_snap {
    uint64_t buckets[METRICS_BUCKETS];
    uint64_t count;
    uint64_t ops;
    uint64_t sum;
    uint64_t max;
};

/*
 * Figures of one shard. Written under the shard lock (or by the worker that owns the shard for
 * put/delete latency in worker mode) except `get`, which readers update from any thread; it sits
 * after a cache line of padding so that a sampled get does not bounce the writer's lines.
 */
struct shard_metrics {
    struct htkv_hist put;   /* ns per sampled htkv_put, caller's view (queue and sync included) */
    struct htkv_hist del;   /* ns per sampled htkv_delete */
    struct htkv_hist batch; /* ns per htkv_write, attributed to the batch's first shard */
    struct htkv_hist sync;  /* ns per fdatasync of the shard's active segment */
    struct htkv_hist group; /* writes covered by each fdatasync (group size) */
    _Atomic uint64_t bytes_written; /* record bytes appended by writes */
    uint64_t unsynced_writes;       /* writes appended since the last fdatasync began (lock) */
    /* Compaction work (written under the shard's lock). */
    uint64_t compact_bytes_read;    /* record bytes of victims examined */
    uint64_t compact_bytes_written; /* record bytes copied to the active segment */
    uint64_t compact_segments;      /* victims dropped */
    uint64_t compact_tombstones;    /* tombstones dropped for good */
    char pad[HTKV_CACHELINE];
    struct htkv_hist get; /* ns per sampled htkv_get (1 in METRICS_GET_SAMPLE per thread) */
};

/* Monotonic clock in ns (vDSO: no system call). */
static inline uint64_t
htkv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Bucket of value @p v. */
static inline unsigned
htkv_hist_bucket(uint64_t v)
{
    if (v < METRICS_SUB) {
        return (unsigned)v;
    }
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= METRICS_SUB_BITS */
    if (e > METRICS_EXP_MAX) {
        return METRICS_BUCKETS - 1;
    }
    unsigned sub = (unsigned)(v >> (e - METRICS_SUB_BITS)) & (METRICS_SUB - 1);
    return METRICS_SUB * (e - 1) + sub;
}

/* Smallest and largest value of bucket @p b (the last bucket's upper bound is UINT64_MAX). */
uint64_t htkv_hist_lower(unsigned b);
uint64_t htkv_hist_upper(unsigned b);

static inline void
hist_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Count one operation that was not timed; the caller is the only writer (lock held). */
static inline void
htkv_hist_count(struct htkv_hist *h)
{
    hist_add(&h->untimed, 1);
}

/* htkv_hist_count() with several writers. */
static inline void
htkv_hist_count_shared(struct htkv_hist *h)
{
    atomic_fetch_add_explicit(&h->untimed, 1, memory_order_relaxed);
}

/* Record @p v; the caller is the histogram's only writer (lock held). */
static inline void
htkv_hist_record(struct htkv_hist *h, uint64_t v)
{
    hist_add(&h->buckets[htkv_hist_bucket(v)], 1);
    hist_add(&h->sum, v);
    if (v > atomic_load_explicit(&h->max, memory_order_relaxed)) {
        atomic_store_explicit(&h->max, v, memory_order_relaxed);
    }
}

/* Record @p v from any thread: relaxed atomic adds, and a CAS only when the maximum grows. */
void htkv_hist_record_shared(struct htkv_hist *h, uint64_t v);

/* Copy @p h into @p out (relaxed loads; concurrent records may be partly seen). */
void htkv_hist_read(struct htkv_hist *h, struct hist_snap *out);

/* Add @p from into @p into. */
void htkv_hist_merge(struct hist_snap *into, const struct hist_snap *from);

/*
 * Value at quantile @p q in [0, 1] of @p s: the upper bound of the bucket holding the sample of
 * rank ceil(q x count) (at least 1), capped at the maximum. 0 for an empty histogram.
 */
uint64_t htkv_hist_percentile(const struct hist_snap *s, double q);

#endif
