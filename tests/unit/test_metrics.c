/*
 * test_metrics.c - the log-linear histogram of engine/metrics.c: bucket bounds, and percentiles
 * checked against sorted samples (seeded: HTKV_SEED replays a failure).
 */
#include "tests/support/testutil.h"

#include "engine/hist.h"

/* Rank (1-based) of quantile q among n samples: ceil(q x n), at least 1. */
static uint64_t
ceil_rank(double q, uint64_t n)
{
    double r = q * (double)n;
    uint64_t k = (uint64_t)r;
    k += (double)k < r;
    return k == 0 ? 1 : k;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Goal: every bucket's bounds hold its values and tile the range. Method: walk the buckets. */
static void
test_metrics_buckets_tile_the_range(void **state)
{
    (void)state;
    assert_int_equal(htkv_hist_lower(0), 0);
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        uint64_t lo = htkv_hist_lower(b), hi = htkv_hist_upper(b);
        assert_true(lo <= hi);
        assert_int_equal(htkv_hist_bucket(lo), b);
        assert_int_equal(htkv_hist_bucket(hi), b);
        if (b + 1 < METRICS_BUCKETS) {
            assert_int_equal(hi + 1, htkv_hist_lower(b + 1));
            assert_true(hi - lo <= lo / 4); /* width at most a quarter of the lower bound */
        }
    }
    assert_int_equal(htkv_hist_bucket(5), 5); /* 0..7 have a bucket each */
    assert_int_equal(htkv_hist_bucket(8), 8);
    assert_int_equal(htkv_hist_bucket(9), 8);
    assert_int_equal(htkv_hist_bucket(UINT64_MAX), METRICS_BUCKETS - 1);
    assert_int_equal(htkv_hist_bucket(60ull * 1000000000ull), htkv_hist_bucket(60000000000ull));
    assert_true(htkv_hist_bucket(60ull * 1000000000ull) < METRICS_BUCKETS - 1); /* 1 min fits */
}

/* Goal: percentiles are within one bucket above the true order statistic. Method: random
 * samples of several magnitudes, recorded, sorted, compared at p50/p90/p99/p99.9/p100. */
static void
test_metrics_percentiles_match_sorted_samples(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_metrics_percentiles_match_sorted_samples");
    uint64_t rng = seed;
    enum { N = 20000 };
    static uint64_t v[N];
    static struct htkv_hist h;
    memset(&h, 0, sizeof(h));
    uint64_t sum = 0;
    for (int i = 0; i < N; i++) {
        uint64_t r = tu_rand(&rng);
        v[i] = (r >> 8) % (1ull << (r % 36)); /* log-uniform-ish from 0 to ~1 min */
        sum += v[i];
        if (i % 2) {
            htkv_hist_record(&h, v[i]);
        } else {
            htkv_hist_record_shared(&h, v[i]);
        }
    }
    struct hist_snap s, m;
    htkv_hist_read(&h, &s);
    assert_int_equal(s.count, N);
    assert_int_equal(s.sum, sum);
    qsort(v, N, sizeof(v[0]), cmp_u64);
    assert_int_equal(s.max, v[N - 1]);
    const double qs[] = { 0.0, 0.5, 0.9, 0.99, 0.999, 1.0 };
    for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
        uint64_t rank = ceil_rank(qs[k], N);
        uint64_t truth = v[rank - 1];
        uint64_t got = htkv_hist_percentile(&s, qs[k]);
        if (got < truth || got > truth + truth / 4) {
            fail_msg("seed %llu: q %.3f: got %llu, truth %llu", (unsigned long long)seed, qs[k],
                     (unsigned long long)got, (unsigned long long)truth);
        }
    }
    /* Merging a snapshot with itself doubles counts and keeps percentiles. */
    memset(&m, 0, sizeof(m));
    htkv_hist_merge(&m, &s);
    htkv_hist_merge(&m, &s);
    assert_int_equal(m.count, 2 * N);
    assert_int_equal(m.max, s.max);
    assert_int_equal(htkv_hist_percentile(&m, 0.5), htkv_hist_percentile(&s, 0.5));
    memset(&m, 0, sizeof(m));
    assert_int_equal(htkv_hist_percentile(&m, 0.99), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_buckets_tile_the_range),
        cmocka_unit_test(test_metrics_percentiles_match_sorted_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
