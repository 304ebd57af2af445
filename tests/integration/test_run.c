/*
 * test_run.c - ordered queries that read the shards' sorted runs and the store's merge
 * paths (engine/run.c, run.h): the same answers as from the tries, allocation failures while
 * building runs, and a damaged record reached through a run or a path.
 *
 * The fuzz tests run ordered_fuzz() (tests/support/ordered.h) with htkv_run_eager = 1 (runs at
 * every query) and 2 (and merge paths), with 4 shards (the linear merge) and 13 (the heap
 * merge).
 */
#include "tests/support/ordered.h"

#include <errno.h>

#include "engine/internal.h"
#include "engine/run.h"

/* Goal: as the fuzz tests of test_prefix_range.c (prefix and range queries, limits and paging
 * return exactly the keys of a sorted model), with every query reading the shards' sorted runs
 * (run.h): each query builds a run for every shard whose run went stale, so queries read runs
 * built after the views they serve were opened (elements newer than the view are looked up again
 * in the trie), and iterators keep runs that later writes made stale. 4 shards: the linear
 * merge. */
static void
test_ordered_fuzz_sorted_runs_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 1);
}

/* Goal: as above with 13 shards (the heap merge). */
static void
test_ordered_fuzz_sorted_runs_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 1);
}

/* Goal: as the sorted-runs tests above, with every query that finds an exact run in every shard
 * building the store's merge path (run.h) and reading along it: bounds from the sums of the
 * shards' bounds, elements the views do not see as they are looked up again. 4 and 13 shards. */
static void
test_ordered_fuzz_merge_paths_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 2);
}

static void
test_ordered_fuzz_merge_paths_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 2);
}

/* Goal: as test_ordered_allocation_failures_fail_cleanly (test_iterators.c; the goal and method
 * are at ordered_alloc_faults() in tests/support/ordered.c) with sorted runs built by every query
 * (run.h): a build that cannot allocate leaves the query to the trie and changes no result;
 * queries that read runs allocate nothing per key. Method: as there. */
static void
test_ordered_allocation_failures_with_sorted_runs(void **state)
{
    (void)state;
    ordered_alloc_faults(true);
}

/* Goal: a record that fails its check is reported by the query that reaches it when the query
 * reads sorted runs (merged by comparison) and merge paths, as it is from the tries: every key
 * before it comes back in order, then HTKV_ECORRUPT naming the segment, on this call and every
 * later one; once the bytes are whole again, the next query returns every key. Method: 200 keys
 * over 2 shards, close (hint files: the reopened store has not checked the records), flip a bit
 * of one value through the file, reopen; query with runs (htkv_run_eager = 1), then with paths
 * (2); flip back; query again. */
static void
test_ordered_corrupt_record_in_runs_and_paths(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-corrupt-runs");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 2;
    htkv_db *db = tu_open(&cfg);
    char k[32];
    unsigned char v[48];
    for (unsigned i = 0; i < 200; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "c/%03u", i);
        tu_fill(v, sizeof(v), i);
        put_ok(db, k, kl, v, sizeof(v));
    }
    assert_int_equal(htkv_close(db), 0);
    /* The record of c/100, in whichever shard holds it. */
    char(*segs)[4096] = malloc(8 * 4096);
    assert_non_null(segs);
    struct tu_rec *recs = malloc(256 * sizeof(*recs));
    assert_non_null(recs);
    const char *seg = NULL;
    long long at = -1;
    for (unsigned sh = 0; sh < 2 && seg == NULL; sh++) {
        size_t ns = tu_shard_segments(dir, sh, segs, 8);
        for (size_t i = 0; i < ns && seg == NULL; i++) {
            size_t nr = tu_seg_scan(segs[i], recs, 256);
            for (size_t r = 0; r < nr; r++) {
                if (recs[r].key_len == 5 && memcmp(recs[r].key, "c/100", 5) == 0) {
                    seg = segs[i];
                    at = recs[r].off + 24 + 5 + 10; /* a value byte */
                    break;
                }
            }
        }
    }
    assert_non_null(seg);
    assert_int_equal(tu_flip_bit(seg, at, 3), 0);
    db = tu_open(&cfg);
    for (int level = 1; level <= 2; level++) {
        htkv_run_eager = level;
        for (int round = 0; round < 2; round++) {
            tu_context("corrupt record: eager level %d, round %d", level, round);
            htkv_iter *it = NULL;
            assert_int_equal(htkv_get_prefix(db, "c/", 2, &it), 0);
            const void *gk, *gv;
            size_t gkl, gvl;
            unsigned n = 0;
            int rc;
            while ((rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl)) == 1) {
                size_t kl = (size_t)snprintf(k, sizeof(k), "c/%03u", n);
                assert_int_equal(gkl, kl);
                assert_memory_equal(gk, k, kl);
                tu_fill(v, sizeof(v), n);
                assert_int_equal(gvl, sizeof(v));
                assert_memory_equal(gv, v, sizeof(v));
                n++;
            }
            assert_int_equal(rc, HTKV_ECORRUPT);
            assert_int_equal(n, 100);
            assert_non_null(strstr(htkv_last_error(), seg));
            assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), HTKV_ECORRUPT);
            htkv_iter_destroy(it);
        }
    }
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(tu_flip_bit(seg, at, 3), 0);
    assert_int_equal(count_prefix(db, "c/", 2), 200);
    htkv_run_eager = 0;
    assert_int_equal(htkv_close(db), 0);
    free(recs);
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordered_fuzz_sorted_runs_4_shards),
        cmocka_unit_test(test_ordered_fuzz_sorted_runs_13_shards),
        cmocka_unit_test(test_ordered_fuzz_merge_paths_4_shards),
        cmocka_unit_test(test_ordered_fuzz_merge_paths_13_shards),
        cmocka_unit_test(test_ordered_allocation_failures_with_sorted_runs),
        cmocka_unit_test(test_ordered_corrupt_record_in_runs_and_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
