/* test_smoke.c - the store answers basic calls; its memory arenas. */
#include "tests/support/testutil.h"

#include <string.h>

#ifdef HTKV_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

/* Goal: the store answers basic calls. Method: put/get/delete/reopen on a temp dir. */
static void
test_smoke_put_get_reopen(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("smoke");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "a", 1, "1", 1), 0);
    assert_int_equal(htkv_put(db, "b", 1, "22", 2), 0);
    assert_int_equal(htkv_put(db, "a", 1, "333", 3), 0);
    assert_int_equal(htkv_delete(db, "b", 1), 0);
    assert_int_equal(htkv_delete(db, "b", 1), HTKV_ENOTFOUND);
    char buf[16];
    size_t n;
    assert_int_equal(htkv_get(db, "a", 1, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "333", 3);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    assert_int_equal(htkv_get(db, "a", 1, buf, sizeof(buf), &n), 0);
    assert_memory_equal(buf, "333", 3);
    assert_int_equal(htkv_get(db, "b", 1, buf, sizeof(buf), &n), HTKV_ENOTFOUND);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a store allocates its shards' memory from jemalloc arenas of its own, one per worker
 * (one in inline mode), reports them in htkv_stats, and reuses them after close instead of
 * creating new ones. Method: open, write 20k keys, check arenas and arena_bytes (at least the
 * index entries); close and reopen 20 times: the process's arena count stays put. Without
 * jemalloc (sanitizer builds) both figures are 0. */
static void
test_smoke_arenas_reported_and_reused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("smoke-arena");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    char key[32];
    for (int i = 0; i < 20000; i++) {
        int kl = snprintf(key, sizeof(key), "arena-%06d", i);
        assert_int_equal(htkv_put(db, key, (size_t)kl, "v", 1), 0);
    }
    struct htkv_stats st = tu_stats(db);
#ifdef HTKV_JEMALLOC
    unsigned want = st.worker_threads > 0 ? st.worker_threads : 1;
    assert_int_equal(st.arenas, want);
    assert_true(st.arena_bytes >= st.live_keys * 48); /* the entries alone */
#else
    assert_int_equal(st.arenas, 0);
    assert_int_equal(st.arena_bytes, 0);
#endif
    assert_int_equal(htkv_close(db), 0);
#ifdef HTKV_JEMALLOC
    unsigned narenas = 0;
    for (int round = 0; round < 20; round++) {
        db = tu_open(&cfg);
        assert_int_equal(htkv_close(db), 0);
        unsigned n = 0;
        size_t len = sizeof(n);
        assert_int_equal(mallctl("arenas.narenas", &n, &len, NULL, 0), 0);
        if (round == 0) {
            narenas = n;
        }
        assert_int_equal(n, narenas);
    }
#endif
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smoke_put_get_reopen),
        cmocka_unit_test(test_smoke_arenas_reported_and_reused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
