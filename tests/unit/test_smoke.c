/* Goal: the store answers basic calls. Method: put/get/delete/reopen on a temp dir. */
#include "tests/support/testutil.h"

#include <string.h>

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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smoke_put_get_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
