/*
 * hist.c - log-linear latency histograms (hist.h): bucket bounds, shared recording, snapshots,
 * merging and percentiles. Base layer: no store or shard types; the per-shard figures and the
 * reports built from them live above (shard.h, metrics.c).
 *
 * Invariants
 *   1. A value v lies in [htkv_hist_lower(b), htkv_hist_upper(b)] for b = htkv_hist_bucket(v).
 *   2. Bucket bounds increase with b, and upper(b) + 1 == lower(b + 1).
 */
#include "engine/hist.h"
uint64_t
htkv_hist_lower(unsigned b)
{
    HTKV_ASSERT(b < METRICS_BUCKETS);
    if (b < METRICS_SUB) {
        return b;
    }
    unsigned e = b / METRICS_SUB + 1;
    uint64_t sub = b % METRICS_SUB;
    return (METRICS_SUB + sub) << (e - METRICS_SUB_BITS);
}

uint64_t
htkv_hist_upper(unsigned b)
{
    HTKV_ASSERT(b < METRICS_BUCKETS);
    if (b == METRICS_BUCKETS - 1) {
        return UINT64_MAX; /* values past 2^37 ns are clamped into it */
    }
    uint64_t upper = htkv_hist_lower(b + 1) - 1;
    HTKV_ASSERT(upper >= htkv_hist_lower(b));
    return upper;
}

void
htkv_hist_record_shared(struct htkv_hist *h, uint64_t v)
{
    atomic_fetch_add_explicit(&h->buckets[htkv_hist_bucket(v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
    }
}

void
htkv_hist_read(struct htkv_hist *h, struct hist_snap *out)
{
    HTKV_ASSERT(h != NULL);
    HTKV_ASSERT(out != NULL);
    out->count = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        out->buckets[b] = atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        out->count += out->buckets[b];
    }
    out->sum = atomic_load_explicit(&h->sum, memory_order_relaxed);
    out->max = atomic_load_explicit(&h->max, memory_order_relaxed);
    out->ops = out->count + atomic_load_explicit(&h->untimed, memory_order_relaxed);
}

void
htkv_hist_merge(struct hist_snap *into, const struct hist_snap *from)
{
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        into->buckets[b] += from->buckets[b];
    }
    into->count += from->count;
    into->ops += from->ops;
    into->sum += from->sum;
    into->max = from->max > into->max ? from->max : into->max;
}

uint64_t
htkv_hist_percentile(const struct hist_snap *s, double q)
{
    if (s->count == 0) {
        return 0;
    }
    q = q < 0.0 ? 0.0 : q > 1.0 ? 1.0 : q;
    double r = q * (double)s->count;
    uint64_t rank = (uint64_t)r;
    rank += (double)rank < r; /* ceil */
    rank = rank == 0 ? 1 : rank > s->count ? s->count : rank;
    uint64_t seen = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        seen += s->buckets[b];
        if (seen >= rank) {
            uint64_t u = htkv_hist_upper(b);
            return u < s->max ? u : s->max;
        }
    }
    return s->max; /* a snapshot racing with records: count and buckets agree, so unreachable */
}
