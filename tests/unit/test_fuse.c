/*
 * test_fuse.c - binary fuse filters: every item is found, about 1 absent hash in 256 passes,
 * about 9 bits an item for large sets, the same set gives the same bytes, and a shape read from
 * a file is checked before use.
 */
#include "tests/support/testutil.h"

#include "engine/fuse.h"

/* Build the filter of @p n random hashes from @p seed (with every 7th repeated), check every
 * one is found, and return the share of @p probes other random hashes that pass. */
static double
build_and_probe(size_t n, uint64_t seed, size_t probes, struct fuse *f, unsigned char **fp)
{
    uint64_t rng = seed;
    uint64_t *h = malloc((n + n / 7 + 1) * sizeof(*h));
    uint64_t *keep = malloc((n + 1) * sizeof(*keep));
    assert_non_null(h);
    assert_non_null(keep);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        keep[i] = h[m++] = tu_rand(&rng);
        if (i % 7 == 0) {
            h[m++] = keep[i]; /* the same hash twice: a set holds it once */
        }
    }
    assert_int_equal(htkv_fuse_build(h, m, f, fp), 0);
    assert_ptr_equal(f->fp, *fp);
    assert_true(htkv_fuse_shape_ok(f->seg_len, htkv_fuse_bytes(f)));
    for (size_t i = 0; i < n; i++) {
        if (!htkv_fuse_contains(f, keep[i])) {
            fail_msg("n %zu seed %llu: item %zu not found", n, (unsigned long long)seed, i);
        }
    }
    size_t pass = 0;
    for (size_t i = 0; i < probes; i++) {
        pass += htkv_fuse_contains(f, tu_rand(&rng));
    }
    free(h);
    free(keep);
    return (double)pass / (double)probes;
}

/* Goal: no false negatives at any size, from empty to a large set, duplicates included. */
static void
test_fuse_finds_every_item(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("fuse_items");
    static const size_t sizes[] = { 0, 1, 2, 3, 4, 5, 7, 10, 31, 100, 257, 1000, 4096, 65537 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        for (uint64_t r = 0; r < 8; r++) {
            struct fuse f;
            unsigned char *fp = NULL;
            build_and_probe(sizes[i], seed + r * 1000 + i, 0, &f, &fp);
            htkv_mem_free(fp);
        }
    }
}

/* Goal: at 300,000 items (a large key index) about 9 bits an item and about 1/256 false
 * positives; the same set built twice gives the same bytes. */
static void
test_fuse_size_and_false_positives(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("fuse_fpr");
    struct fuse f, g;
    unsigned char *fp = NULL, *gp = NULL;
    size_t n = 300000;
    double fpr = build_and_probe(n, seed, 1000000, &f, &fp);
    double bits = 8.0 * (double)htkv_fuse_bytes(&f) / (double)n;
    print_message("n %zu: %.2f bits an item, false positives %.4f%%\n", n, bits, 100.0 * fpr);
    assert_true(bits < 9.6);
    assert_true(fpr > 0.0030 && fpr < 0.0050);
    build_and_probe(n, seed, 0, &g, &gp);
    assert_int_equal(htkv_fuse_bytes(&f), htkv_fuse_bytes(&g));
    assert_int_equal(f.seed, g.seed);
    assert_memory_equal(fp, gp, htkv_fuse_bytes(&f));
    htkv_mem_free(fp);
    htkv_mem_free(gp);
    /* Small sets cost more a key, still under 2 bytes from a thousand keys on. */
    fpr = build_and_probe(1000, seed + 1, 200000, &f, &fp);
    assert_true(8.0 * (double)htkv_fuse_bytes(&f) / 1000.0 < 16.0);
    assert_true(fpr < 0.01);
    htkv_mem_free(fp);
}

/* Goal: shapes a file may claim are checked: a power of two from 4 to 2^18, at least three
 * segments, a whole number of them. */
static void
test_fuse_shape_checks(void **state)
{
    (void)state;
    assert_true(htkv_fuse_shape_ok(4, 12));
    assert_true(htkv_fuse_shape_ok(FUSE_SEG_LEN_MAX, 3ull * FUSE_SEG_LEN_MAX));
    assert_false(htkv_fuse_shape_ok(0, 12));
    assert_false(htkv_fuse_shape_ok(2, 12));
    assert_false(htkv_fuse_shape_ok(12, 36));
    assert_false(htkv_fuse_shape_ok(4, 8));
    assert_false(htkv_fuse_shape_ok(4, 13));
    assert_false(htkv_fuse_shape_ok(FUSE_SEG_LEN_MAX * 2, 6ull * FUSE_SEG_LEN_MAX));
    assert_false(htkv_fuse_shape_ok(1u << 16, 1ull << 33));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fuse_finds_every_item),
        cmocka_unit_test(test_fuse_size_and_false_positives),
        cmocka_unit_test(test_fuse_shape_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
