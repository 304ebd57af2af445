/*
 * test_prefix_range.c - ordered queries of the public API: htkv_get_prefix(), htkv_scan() and
 * their view forms, limits and paging (engine/view.c), over the shards' ordered indexes
 * (engine/trie.c).
 *
 * The fuzz tests run ordered_fuzz() (tests/support/ordered.h): queries against a sorted model
 * through puts, deletes, batches and reopens, with 1, 4, 7 and 13 shards. Separate tests cover
 * the edges: an empty store, a single key, keys of HTKV_KEY_MAX bytes, bad arguments, and the
 * ordered index's statistics.
 */
#include "tests/support/ordered.h"

#include <errno.h>

#include "engine/internal.h"
#include "engine/run.h"

/* Goal: prefix and range queries, limits and paging return exactly the keys of a sorted model,
 * in strictly increasing unsigned byte order, through puts, deletes, batches and reopens, from
 * the store and from older views, with a single shard (no merge). Method: ordered_fuzz(). */
static void
test_ordered_fuzz_matches_sorted_model_1_shard(void **state)
{
    (void)state;
    ordered_fuzz(1, fuzz_ops(), 0);
}

/* Goal: as above with 4 shards: the merge of several shards' streams (a linear scan for the
 * smallest current key up to 8 shards). */
static void
test_ordered_fuzz_matches_sorted_model_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 0);
}

/* Goal: as above with 7 shards (not a power of two). */
static void
test_ordered_fuzz_matches_sorted_model_7_shards(void **state)
{
    (void)state;
    ordered_fuzz(7, fuzz_ops(), 0);
}

/* Goal: as above with 13 shards: the heap merge (more than 8 shards). */
static void
test_ordered_fuzz_matches_sorted_model_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 0);
}

/* Goal: every query on an empty store (never written, then holding only tombstones, then
 * reopened) returns nothing, and the iterator's end is sticky. Method: prefixes and ranges of
 * every flavour; NULL outputs to htkv_iter_next. */
static void
test_ordered_empty_store_returns_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-empty");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(count_prefix(db, NULL, 0), 0);
        assert_int_equal(count_prefix(db, "", 0), 0);
        assert_int_equal(count_prefix(db, "a", 1), 0);
        assert_int_equal(count_prefix(db, "\0", 1), 0);
        assert_int_equal(count_scan(db, NULL, 0, NULL, 0), 0);
        assert_int_equal(count_scan(db, "a", 1, "", 0), 0);
        assert_int_equal(count_scan(db, "", 0, "\xff\xff", 2), 0);
        assert_int_equal(count_scan(db, "z", 1, "a", 1), 0);
        htkv_iter *it = NULL;
        assert_int_equal(htkv_get_prefix(db, NULL, 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 5), 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        }
        htkv_iter_destroy(it);
        if (round == 0) {
            /* Tombstones only. */
            put_ok(db, "a", 1, "x", 1);
            put_ok(db, "ab", 2, "", 0);
            assert_int_equal(htkv_delete(db, "a", 1), 0);
            assert_int_equal(htkv_delete(db, "ab", 2), 0);
        } else if (round == 1) {
            assert_int_equal(htkv_close(db), 0);
            db = tu_open(&cfg);
        }
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Expect @p it to yield exactly one item, key @p k and value @p v, then the end. */
static void
expect_one(htkv_iter *it, const void *k, size_t kl, const void *v, size_t vl)
{
    const void *gk, *gv;
    size_t gkl, gvl;
    assert_non_null(it);
    assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), 1);
    assert_int_equal(gkl, kl);
    assert_memory_equal(gk, k, kl);
    assert_int_equal(gvl, vl);
    if (vl > 0) {
        assert_memory_equal(gv, v, vl);
    }
    assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), 0);
    htkv_iter_destroy(it);
}

/* Goal: a store with one key answers every query shape exactly (the key, or nothing), and
 * limits behave at their edges. Method: the key "k\0\xff" (binary) and queries around it. */
static void
test_ordered_single_key(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-single");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    static const unsigned char key[3] = { 'k', 0x00, 0xFF };
    static const unsigned char val[5] = { 0, 1, 2, 0xFF, 'v' };
    put_ok(db, key, 3, val, 5);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        /* Prefixes: empty, each proper prefix, the key itself match; extensions do not. */
        for (size_t pl = 0; pl <= 3; pl++) {
            assert_int_equal(htkv_get_prefix(db, key, pl, &it), 0);
            expect_one(it, key, 3, val, 5);
        }
        assert_int_equal(count_prefix(db, "k\0\xff\0", 4), 0);
        assert_int_equal(count_prefix(db, "k\0\xfe", 3), 0);
        assert_int_equal(count_prefix(db, "j", 1), 0);
        assert_int_equal(count_prefix(db, "k\x01", 2), 0);
        /* Ranges: [key, ...) includes it; [..., key) excludes it. */
        assert_int_equal(htkv_scan(db, key, 3, NULL, 0, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, NULL, 0, "k\0\xff\0", 4, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, "k", 1, "l", 1, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, "\0", 1, "\xff", 1, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(count_scan(db, NULL, 0, key, 3), 0);
        assert_int_equal(count_scan(db, key, 3, key, 3), 0);
        assert_int_equal(count_scan(db, "k\0\xff\0", 4, NULL, 0), 0); /* paging past it */
        assert_int_equal(count_scan(db, "l", 1, "k", 1), 0);
        assert_int_equal(count_scan(db, "k\0\xff", 3, "k", 1), 0);
        /* Limits: 1 returns it; a limit set after the end changes nothing. */
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 1), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, UINT64_MAX), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 1);
        assert_int_equal(htkv_iter_set_limit(it, 3), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        htkv_iter_destroy(it);
        /* A limit reached stops the iterator; lifting it (0) lets it go on to the end. */
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 1), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 1);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        assert_int_equal(htkv_iter_set_limit(it, 0), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        htkv_iter_destroy(it);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    /* A zero-length value comes back as zero bytes. */
    put_ok(db, key, 3, NULL, 0);
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(db, "k", 1, &it), 0);
    expect_one(it, key, 3, NULL, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: keys of HTKV_KEY_MAX bytes sort, match and bound queries like any other, also after a
 * reopen (the trie is rebuilt from the recovered index); a prefix or bound of HTKV_KEY_MAX bytes
 * is accepted, one byte more is HTKV_ETOOBIG. Method: four keys sharing a 64 KiB run of 'k'. */
static void
test_ordered_keys_of_key_max_bytes(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-keymax");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    const size_t M = HTKV_KEY_MAX;
    unsigned char *big = malloc(M + 1);
    unsigned char *big_a = malloc(M);
    assert_non_null(big);
    assert_non_null(big_a);
    memset(big, 'k', M + 1);
    memcpy(big_a, big, M);
    big_a[M - 1] = 'a';
    /* In order: "k" < k*(M-1) < k*(M-1)+"a" < k*M. */
    put_ok(db, "k", 1, "1", 1);
    put_ok(db, big, M - 1, "2", 1);
    put_ok(db, big_a, M, "3", 1);
    put_ok(db, big, M, "4", 1);
    put_ok(db, "l", 1, "5", 1);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        assert_int_equal(htkv_get_prefix(db, big, M, &it), 0);
        expect_one(it, big, M, "4", 1);
        assert_int_equal(htkv_get_prefix(db, big_a, M, &it), 0);
        expect_one(it, big_a, M, "3", 1);
        assert_int_equal(count_prefix(db, big, M - 1), 3);
        assert_int_equal(count_prefix(db, "k", 1), 4);
        assert_int_equal(count_prefix(db, NULL, 0), 5);
        assert_int_equal(count_scan(db, big, M - 1, big, M), 2);
        assert_int_equal(htkv_scan(db, big, M, "l", 1, &it), 0);
        expect_one(it, big, M, "4", 1);
        assert_int_equal(htkv_scan(db, big_a, M, big, M, &it), 0);
        expect_one(it, big_a, M, "3", 1);
        assert_int_equal(count_scan(db, big, M, big_a, M), 0);
        /* Order and contents of the whole store. */
        const void *k, *v;
        size_t kl, vl;
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        static const char want_v[5] = { '1', '2', '3', '4', '5' };
        const size_t want_kl[5] = { 1, M - 1, M, M, 1 };
        for (int i = 0; i < 5; i++) {
            assert_int_equal(htkv_iter_next(it, &k, &kl, &v, &vl), 1);
            assert_int_equal(kl, want_kl[i]);
            assert_int_equal(vl, 1);
            assert_int_equal(((const char *)v)[0], want_v[i]);
        }
        assert_int_equal(htkv_iter_next(it, &k, &kl, &v, &vl), 0);
        htkv_iter_destroy(it);
        /* One byte over the limit: a prefix, a start, an end. Nothing opens. */
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_get_prefix(db, big, M + 1, &it), HTKV_ETOOBIG);
        assert_null(it);
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_scan(db, big, M + 1, NULL, 0, &it), HTKV_ETOOBIG);
        assert_null(it);
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_scan(db, NULL, 0, big, M + 1, &it), HTKV_ETOOBIG);
        assert_null(it);
        assert_int_equal(tu_stats(db).views_open, 0);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    assert_int_equal(htkv_close(db), 0);
    free(big);
    free(big_a);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: bad arguments to the query functions return -EINVAL or HTKV_ETOOBIG, clear *out, and
 * leave no view open. Method: each argument wrong in turn, on the store and on a view. */
static void
test_ordered_bad_arguments(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-args");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    put_ok(db, "a", 1, "1", 1);
    unsigned char *big = calloc(1, HTKV_KEY_MAX + 1);
    assert_non_null(big);
    htkv_iter *it;
    htkv_view *v;
    assert_int_equal(htkv_view_open(db, &v), 0);
    /* NULL with a non-zero length. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_get_prefix(db, NULL, 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(db, NULL, 2, "b", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(db, "a", 1, NULL, 3, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(v, NULL, 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(v, NULL, 1, NULL, 0, &it), -EINVAL);
    assert_null(it);
    /* NULL handle or NULL out. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_get_prefix(NULL, "a", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(NULL, "a", 1, "b", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(NULL, "a", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(NULL, "a", 1, "b", 1, &it), -EINVAL);
    assert_null(it);
    assert_int_equal(htkv_get_prefix(db, "a", 1, NULL), -EINVAL);
    assert_int_equal(htkv_scan(db, "a", 1, "b", 1, NULL), -EINVAL);
    assert_int_equal(htkv_view_get_prefix(v, "a", 1, NULL), -EINVAL);
    assert_int_equal(htkv_view_scan(v, "a", 1, "b", 1, NULL), -EINVAL);
    /* Over HTKV_KEY_MAX, on a view too. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(v, big, HTKV_KEY_MAX + 1, &it), HTKV_ETOOBIG);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(v, "a", 1, big, HTKV_KEY_MAX + 1, &it), HTKV_ETOOBIG);
    assert_null(it);
    /* A prefix of exactly HTKV_KEY_MAX bytes is fine (and matches nothing here). */
    assert_int_equal(count_prefix(db, big, HTKV_KEY_MAX), 0);
    /* Iterator functions on NULL. */
    assert_int_equal(htkv_iter_set_limit(NULL, 1), -EINVAL);
    const void *k;
    size_t kl;
    assert_int_equal(htkv_iter_next(NULL, &k, &kl, NULL, NULL), -EINVAL);
    htkv_iter_destroy(NULL);
    /* Only the view opened above is open: no failed call left one behind. */
    assert_int_equal(tu_stats(db).views_open, 1);
    htkv_view_close(v);
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(count_prefix(db, "", 0), 1);
    assert_int_equal(htkv_close(db), 0);
    free(big);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the ordered index is built on the first ordered query, is counted in trie_bytes, is
 * kept up to date by later writes, and is rebuilt after a reopen on the next query. Method:
 * trie_bytes before and after queries, writes after the build, a reopen. */
static void
test_ordered_trie_stats_after_first_query(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-trie-stats");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    char k[32];
    for (int i = 0; i < 300; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        put_ok(db, k, kl, k, kl);
    }
    assert_int_equal(tu_stats(db).trie_bytes, 0); /* no ordered query yet */
    assert_int_equal(count_prefix(db, "t", 1), 300);
    uint64_t tb = tu_stats(db).trie_bytes;
    assert_true(tb > 0);
    /* Writes after the build go into the trie: new keys grow it and are found. */
    for (int i = 300; i < 600; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        put_ok(db, k, kl, k, kl);
    }
    assert_true(tu_stats(db).trie_bytes > tb);
    assert_int_equal(count_prefix(db, "t", 1), 600);
    assert_int_equal(count_scan(db, "t0300", 5, "t0400", 5), 100);
    for (int i = 0; i < 600; i += 2) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        assert_int_equal(htkv_delete(db, k, kl), 0);
    }
    assert_int_equal(count_prefix(db, "t", 1), 300);
    assert_int_equal(count_prefix(db, "t00", 3), 50);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).trie_bytes, 0);
    assert_int_equal(count_scan(db, "", 0, "", 0), 300);
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_1_shard),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_4_shards),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_7_shards),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_13_shards),
        cmocka_unit_test(test_ordered_empty_store_returns_nothing),
        cmocka_unit_test(test_ordered_single_key),
        cmocka_unit_test(test_ordered_keys_of_key_max_bytes),
        cmocka_unit_test(test_ordered_bad_arguments),
        cmocka_unit_test(test_ordered_trie_stats_after_first_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
