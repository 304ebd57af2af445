/*
 * test_iterators.c - iterators of ordered queries (engine/view.c): 200k keys streamed with
 * bounded memory, the store as of the iterator's creation whatever is written while it is read,
 * and allocation failures anywhere in a query failing cleanly.
 */
#include "tests/support/ordered.h"

#include <errno.h>

#include "engine/internal.h"
#include "engine/run.h"

#if ORD_SANITIZED
/* Sanitizer allocator interface (declared here: gcc does not ship the header). */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t
heap_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
#ifdef HTKV_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
static size_t
heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    size_t n = mi.uordblks + mi.hblkhd;
#ifdef HTKV_JEMALLOC
    /* The engine allocates from jemalloc: its statistics count that memory. */
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    (void)mallctl("epoch", &epoch, &len, &epoch, len);
    size_t je = 0;
    len = sizeof(je);
    if (mallctl("stats.allocated", &je, &len, NULL, 0) == 0) {
        n += je;
    }
#endif
    return n;
}
#endif

/* Allocations made by the engine while the hook is installed. */
static size_t alloc_calls, alloc_bytes, alloc_max;

static bool
count_allocs(size_t n)
{
    alloc_calls++;
    alloc_bytes += n;
    alloc_max = n > alloc_max ? n : alloc_max;
    return false;
}

#define BIG_N 200000u

static size_t
big_key(unsigned i, char *k)
{
    return (size_t)snprintf(k, 32, "row/%08u", i);
}

/* Goal: iterating 200k keys streams them in order with bounded memory: the heap does not grow
 * with the number of keys read, the iterator holds exactly one view while it lives and none
 * after htkv_iter_destroy(), and no engine allocation during the iteration is large. Method:
 * load 200k keys in batches (a shuffled order), iterate the whole store and a prefix,
 * sampling the heap in use every 1000 items; count engine allocations through the hook. */
static void
test_ordered_200k_keys_stream_with_bounded_memory(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("ordered-200k");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("ordered-200k");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 4;
    htkv_db *db = tu_open(&cfg);
    unsigned *perm = malloc(BIG_N * sizeof(*perm));
    assert_non_null(perm);
    for (unsigned i = 0; i < BIG_N; i++) {
        perm[i] = i;
    }
    for (unsigned i = BIG_N - 1; i > 0; i--) {
        unsigned j = (unsigned)(tu_rand(&rng) % (i + 1));
        unsigned t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[32];
    unsigned char v[16] = { 0 };
    for (unsigned i = 0; i < BIG_N; i++) {
        size_t kl = big_key(perm[i], k);
        memcpy(v, &perm[i], sizeof(perm[i]));
        assert_int_equal(htkv_batch_put(b, k, kl, v, 4 + perm[i] % 12), 0);
        if (htkv_batch_count(b) == 2000 || i == BIG_N - 1) {
            assert_int_equal(htkv_write(db, b), 0);
            htkv_batch_clear(b);
        }
    }
    htkv_batch_destroy(b);
    free(perm);
    assert_int_equal(tu_stats(db).live_keys, BIG_N);
    assert_int_equal(tu_stats(db).views_open, 0);

    for (int pass = 0; pass < 2; pass++) {
        /* Pass 0: the whole store (the first query also builds the tries); pass 1: a prefix. */
        const char *p = pass == 0 ? "" : "row/0012";
        unsigned first = pass == 0 ? 0 : 120000, count = pass == 0 ? BIG_N : 10000;
        htkv_iter *it = NULL;
        assert_int_equal(htkv_get_prefix(db, p, strlen(p), &it), 0);
        assert_int_equal(tu_stats(db).views_open, 1);
        size_t base = heap_in_use(), peak = base;
        alloc_calls = alloc_bytes = alloc_max = 0;
        htkv_mem_fail_hook = count_allocs;
        unsigned n = 0;
        const void *gk, *gv;
        size_t gkl, gvl;
        int rc;
        while ((rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl)) == 1) {
            size_t kl = big_key(first + n, k);
            if (gkl != kl || memcmp(gk, k, kl) != 0 || gvl != 4 + (first + n) % 12 ||
                memcmp(gv, &(unsigned){ first + n }, 4) != 0) {
                htkv_mem_fail_hook = NULL;
                fprintf(stderr, "item %u: got %.*s (%zu bytes value), want %s\n", n, (int)gkl,
                        (const char *)gk, gvl, k);
                fail();
            }
            n++;
            if (n % 1000 == 0) {
                size_t h = heap_in_use();
                peak = h > peak ? h : peak;
            }
        }
        htkv_mem_fail_hook = NULL;
        assert_int_equal(rc, 0);
        assert_int_equal(n, count);
        assert_int_equal(tu_stats(db).views_open, 1);
        htkv_iter_destroy(it);
        assert_int_equal(tu_stats(db).views_open, 0);
        fprintf(stderr,
                "[ordered-200k] pass %d: %u items, heap in use %zu bytes, growth %zu bytes, %zu "
                "engine allocations (%zu bytes, largest %zu)\n",
                pass, n, base, peak - base, alloc_calls, alloc_bytes, alloc_max);
        assert_true(base > 0); /* the measure works */
        /* A per-key cost of even 8 bytes would be 1.6 MB here. */
        assert_true(peak - base < (512u << 10));
        assert_true(alloc_max < (64u << 10));
    }
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: an iterator reads the store as of its creation: puts, overwrites, deletes and batches
 * made while it is being read (also between its refills) do not show, and the next query sees
 * them. Method: 4 shards x ~1000 keys (several chunks each); write between every few items. */
static void
test_ordered_iterator_ignores_writes_made_while_reading(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("ordered-iter-private");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("ordered-iter-private");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct model m = { 0 };
    char k[32];
    unsigned char v[64];
    for (unsigned i = 0; i < 4000; i += 1) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "it/%05u", i * 2);
        size_t vl = 1 + i % 60;
        tu_fill(v, vl, i);
        put_ok(db, k, kl, v, vl);
        model_put(&m, k, kl, v, vl);
    }
    struct model live = { 0 };
    model_clone(&live, &m);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        /* Round 0 reads everything; round 1 a range. */
        size_t lo, hi;
        if (round == 0) {
            assert_int_equal(htkv_get_prefix(db, "it/", 3, &it), 0);
            model_prefix_range(&m, "it/", 3, &lo, &hi);
        } else {
            assert_int_equal(htkv_scan(db, "it/01000", 8, "it/05000", 8, &it), 0);
            model_scan_range(&m, "it/01000", 8, "it/05000", 8, &lo, &hi);
        }
        snprintf(qdesc, sizeof(qdesc), "private iterator round %d (seed %llu)", round,
                 (unsigned long long)seed);
        static unsigned char prev[64];
        size_t prevlen = SIZE_MAX, pos = lo;
        bool ended = false;
        while (!ended) {
            iter_expect(it, &m, &pos, hi, 1 + tu_rand(&rng) % 40, prev, &prevlen, &ended);
            /* A burst of writes anywhere in the key space, also just ahead of the reader. */
            for (int w = 0; w < 8; w++) {
                unsigned i = (unsigned)(tu_rand(&rng) % 8001);
                size_t kl = (size_t)snprintf(k, sizeof(k), "it/%05u", i);
                uint64_t r = tu_rand(&rng) % 4;
                if (r == 0) {
                    (void)model_del(&live, k, kl);
                    int rc = htkv_delete(db, k, kl);
                    assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
                } else if (r < 3) {
                    size_t vl = (size_t)(tu_rand(&rng) % 64);
                    tu_fill(v, vl, tu_rand(&rng));
                    put_ok(db, k, kl, v, vl);
                    model_put(&live, k, kl, v, vl);
                } else {
                    htkv_batch_clear(b);
                    size_t vl = (size_t)(tu_rand(&rng) % 64);
                    tu_fill(v, vl, tu_rand(&rng));
                    assert_int_equal(htkv_batch_put(b, k, kl, v, vl), 0);
                    model_put(&live, k, kl, v, vl);
                    kl = (size_t)snprintf(k, sizeof(k), "it/%05u", (i + 4001) % 8001);
                    assert_int_equal(htkv_batch_delete(b, k, kl), 0);
                    (void)model_del(&live, k, kl);
                    assert_int_equal(htkv_write(db, b), 0);
                }
            }
        }
        assert_int_equal(pos, hi);
        htkv_iter_destroy(it);
        /* A new query sees everything written meanwhile. */
        struct target t = { db, NULL };
        check_prefix(&t, &live, "it/", 3, 0, &rng);
        model_free(&m);
        model_clone(&m, &live);
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    htkv_batch_destroy(b);
    model_free(&m);
    model_free(&live);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal and method: at ordered_alloc_faults() (tests/support/ordered.c), without sorted runs. */
static void
test_ordered_allocation_failures_fail_cleanly(void **state)
{
    (void)state;
    ordered_alloc_faults(false);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordered_200k_keys_stream_with_bounded_memory),
        cmocka_unit_test(test_ordered_iterator_ignores_writes_made_while_reading),
        cmocka_unit_test(test_ordered_allocation_failures_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
