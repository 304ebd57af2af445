/*
 * fault_enospc_tmpfs.c - a real full file system: a store on a 2 MiB tmpfs mounted for the
 * test (root only; skipped when mounting is not allowed) fills up; writes then fail with
 * -ENOSPC before anything is written, reads go on, nothing acknowledged is lost, and after the
 * file system grows (remount) a reopened store takes writes again.
 */
#include <errno.h>
#include <sys/mount.h>
#include <unistd.h>

#include "tests/support/testutil.h"

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "full-%06u", i);
}

static void
check_all(htkv_db *db, unsigned n)
{
    unsigned char val[1000];
    char key[32];
    for (unsigned i = 0; i < n; i++) {
        tu_fill(val, 1000, i + 1);
        tu_context("key %u of %u", i, n);
        tu_expect(db, key, key_of(i, key), val, 1000);
    }
}

/* Goal: see the file header. Method: 1,000-byte values until -ENOSPC; check; remount larger;
 * reopen; write; check. */
static void
test_fault_real_enospc_on_tmpfs(void **state)
{
    (void)state;
    char *mnt = tu_tmpdir("enospc-mnt");
    if (geteuid() != 0 || mount("htkv-test", mnt, "tmpfs", 0, "size=2m") != 0) {
        fprintf(stderr, "skipped: cannot mount a tmpfs here (%s)\n", strerror(errno));
        tu_rmrf(mnt);
        free(mnt);
        skip();
    }
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/store", mnt);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_ALWAYS);
    cfg.max_segment_bytes = 256u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    unsigned char val[1000];
    char key[32];
    unsigned acked = 0;
    int rc = 0;
    for (unsigned i = 0; i < 100000; i++) {
        tu_fill(val, sizeof(val), i + 1);
        rc = htkv_put(db, key, key_of(i, key), val, sizeof(val));
        if (rc != 0) {
            break;
        }
        acked++;
    }
    assert_int_equal(rc, -ENOSPC);
    assert_true(acked > 100);
    assert_true(tu_stats(db).no_space);
    assert_int_equal(htkv_put(db, "x", 1, "y", 1), -ENOSPC); /* refused from now on */
    check_all(db, acked);                                    /* reads go on */
    (void)htkv_close(db);
    assert_int_equal(mount("htkv-test", mnt, "tmpfs", MS_REMOUNT, "size=16m"), 0);
    db = tu_open(&cfg);
    check_all(db, acked);
    tu_fill(val, sizeof(val), acked + 1);
    assert_int_equal(htkv_put(db, key, key_of(acked, key), val, sizeof(val)), 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    check_all(db, acked + 1);
    assert_int_equal(htkv_close(db), 0);
    assert_int_equal(umount(mnt), 0);
    tu_rmrf(mnt);
    free(mnt);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_real_enospc_on_tmpfs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
