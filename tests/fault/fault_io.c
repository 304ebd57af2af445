/*
 * fault_io.c - injected I/O faults (uring/ur_fault.h): the right error reaches the caller, no
 * failed write is acknowledged, a failed fdatasync stops the shard for good (never retried and
 * trusted), ENOSPC stops writes while reads go on and writes resume after a reopen, a torn
 * manifest write leaves a store that opens, and a fault inside compaction, snapshot writing or
 * restore loses nothing. Countdown loops move the fault over the first calls of each class.
 */
#include <errno.h>
#include <unistd.h>

#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#define NKEYS 200

struct model {
    uint64_t tag[NKEYS]; /* 0 = absent */
    uint32_t len[NKEYS];
    uint64_t maybe[NKEYS][4]; /* failed writes since the last acknowledged one: each may or
                                 may not have reached the disk */
    unsigned nmaybe[NKEYS];
};

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "fk-%04u", i);
}

/* Every key holds its acknowledged value, or (after a failed write) possibly the failed one. */
static void
model_check(htkv_db *db, const struct model *m)
{
    unsigned char val[600], buf[600];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t n = 0, kl = key_of(i, key);
        int rc = htkv_get(db, key, kl, buf, sizeof(buf), &n);
        tu_context("key %u: rc %d", i, rc);
        if (m->tag[i] == 0 && m->nmaybe[i] == 0) {
            assert_int_equal(rc, HTKV_ENOTFOUND);
            continue;
        }
        assert_true(rc == 0 || (m->tag[i] == 0 && rc == HTKV_ENOTFOUND));
        if (rc != 0) {
            continue;
        }
        bool ok = false;
        if (m->tag[i] != 0) {
            tu_fill(val, m->len[i], m->tag[i]);
            ok = n == m->len[i] && memcmp(buf, val, n) == 0;
        }
        for (unsigned k = 0; !ok && k < m->nmaybe[i]; k++) {
            uint64_t t = m->maybe[i][k];
            tu_fill(val, 1 + t % 500, t);
            ok = n == 1 + t % 500 && memcmp(buf, val, n) == 0;
        }
        assert_true(ok);
    }
}

/*
 * @p n seeded puts; each acknowledged one enters the model, each failed one is remembered as
 * "maybe". Returns the number of failed calls; every failure code must be in @p allowed.
 */
static int
workload(htkv_db *db, struct model *m, uint64_t *seed, int n, const int *allowed, int nallowed)
{
    unsigned char val[600];
    char key[32];
    int failed = 0;
    for (int k = 0; k < n; k++) {
        uint64_t r = tu_rand(seed);
        unsigned i = (unsigned)(r % NKEYS);
        uint64_t tag = (r >> 8) | 1;
        uint32_t len = (uint32_t)(1 + tag % 500);
        tu_fill(val, len, tag);
        int rc = htkv_put(db, key, key_of(i, key), val, len);
        if (rc == 0) {
            m->tag[i] = tag;
            m->len[i] = len;
            m->nmaybe[i] = 0;
            continue;
        }
        bool known = false;
        for (int a = 0; a < nallowed; a++) {
            known = known || rc == allowed[a];
        }
        tu_context("put %d failed with %s", k, htkv_strerror(rc));
        assert_true(known);
        if (m->nmaybe[i] < 4) { /* more come only from a shard that refuses writes outright */
            m->maybe[i][m->nmaybe[i]++] = tag;
        }
        failed++;
    }
    return failed;
}

static htkv_db *
open_store(const char *tag, char **dir, htkv_config *cfg, int sync_mode)
{
    *dir = tu_tmpdir(tag);
    tu_config(cfg, *dir, sync_mode);
    cfg->max_segment_bytes = 64u << 10; /* rotations: allocations and manifest edits */
    cfg->compaction_interval_ms = 0;
    return tu_open(cfg);
}

static void
reopen_check(htkv_db *db, const htkv_config *cfg, const struct model *m)
{
    htkv_fault_disarm();
    (void)htkv_close(db); /* may report the failure */
    htkv_db *d2 = tu_open(cfg);
    model_check(d2, m);
    /* The reopened store takes writes again. */
    assert_int_equal(htkv_put(d2, "after", 5, "x", 1), 0);
    assert_int_equal(htkv_close(d2), 0);
}

/* Goal: the N-th fdatasync failing (N = 1..8, HTKV_SYNC_ALWAYS) fails the writes it covered
 * with HTKV_EFAILED (or -EIO when it was a manifest sync), the shard refuses every later write
 * although later syncs would succeed, acknowledged writes read back at once and after reopen. */
static void
test_fault_fdatasync_eio_countdown(void **state)
{
    (void)state;
    static const int allowed[] = { HTKV_EFAILED, -EIO };
    for (uint64_t nth = 1; nth <= 8; nth++) {
        uint64_t seed = tu_seed("fault-sync") + nth;
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_store("fault-sync", &dir, &cfg, HTKV_SYNC_ALWAYS);
        static struct model m;
        memset(&m, 0, sizeof(m));
        htkv_fault_arm(HTKV_FAULT_SYNC, nth, EIO, false);
        int failed = workload(db, &m, &seed, 300, allowed, 2);
        tu_context("nth %llu", (unsigned long long)nth);
        assert_true(failed >= 1);
        assert_true(htkv_fault_injected() >= 1);
        assert_true(tu_stats(db).failed || failed > 0);
        htkv_fault_disarm();
        /* Never retried and trusted: a shard that failed keeps failing with syncs healthy. */
        if (tu_stats(db).failed) {
            int again = workload(db, &m, &seed, 100, allowed, 2);
            assert_true(again >= 1);
            assert_int_equal(htkv_flush(db), HTKV_EFAILED);
        }
        model_check(db, &m);
        reopen_check(db, &cfg, &m);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Goal: the file system filling up (the N-th allocation and every later one fail with ENOSPC)
 * turns writes into -ENOSPC while reads go on; writes stay refused once space is back, until
 * the store is reopened; nothing acknowledged is lost. */
static void
test_fault_enospc_read_only_then_reopen(void **state)
{
    (void)state;
    static const int allowed[] = { -ENOSPC };
    for (uint64_t nth = 1; nth <= 4; nth++) {
        uint64_t seed = tu_seed("fault-nospc") + nth;
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_store("fault-nospc", &dir, &cfg, HTKV_SYNC_NEVER);
        static struct model m;
        memset(&m, 0, sizeof(m));
        htkv_fault_arm(HTKV_FAULT_ALLOC, nth, ENOSPC, true);
        int failed = workload(db, &m, &seed, 3000, allowed, 1);
        tu_context("nth %llu", (unsigned long long)nth);
        assert_true(failed >= 1);
        assert_true(tu_stats(db).no_space);
        model_check(db, &m); /* reads go on */
        htkv_fault_disarm();
        assert_int_equal(htkv_put(db, "k", 1, "v", 1), -ENOSPC); /* until reopen */
        reopen_check(db, &cfg, &m);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Goal: a manifest edit torn in half (a segment being added) fails that write with -EIO and
 * changes nothing else: the next write adds the segment, and the store opens without
 * HTKV_ECORRUPT with every acknowledged write. */
static void
test_fault_torn_manifest_edit(void **state)
{
    (void)state;
    static const int allowed[] = { -EIO };
    for (uint64_t nth = 1; nth <= 3; nth++) {
        uint64_t seed = tu_seed("fault-torn") + nth;
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_store("fault-torn", &dir, &cfg, HTKV_SYNC_NEVER);
        static struct model m;
        memset(&m, 0, sizeof(m));
        htkv_fault_arm(HTKV_FAULT_WRITE, nth, HTKV_FAULT_TORN, false);
        int failed = workload(db, &m, &seed, 2000, allowed, 1);
        tu_context("nth %llu", (unsigned long long)nth);
        assert_int_equal(failed, 1);
        assert_false(tu_stats(db).failed);
        model_check(db, &m);
        reopen_check(db, &cfg, &m);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Goal: a failed sync, allocation or manifest write at any of the first calls of a compaction
 * pass makes htkv_compact_now() fail and loses nothing; after reopen a pass succeeds. */
static void
test_fault_inside_compaction(void **state)
{
    (void)state;
    static const int classes[] = { HTKV_FAULT_SYNC, HTKV_FAULT_ALLOC, HTKV_FAULT_WRITE };
    for (size_t c = 0; c < 3; c++) {
        for (uint64_t nth = 1; nth <= 6; nth++) {
            uint64_t seed = tu_seed("fault-compact") + nth;
            char *dir;
            htkv_config cfg;
            htkv_db *db = open_store("fault-compact", &dir, &cfg, HTKV_SYNC_NEVER);
            static struct model m;
            memset(&m, 0, sizeof(m));
            (void)workload(db, &m, &seed, 1500, NULL, 0); /* overwrites: garbage */
            htkv_fault_arm(classes[c], nth, EIO, false);
            int rc = htkv_compact_now(db);
            tu_context("class %d nth %llu: %s", classes[c], (unsigned long long)nth,
                       htkv_strerror(rc));
            assert_true(rc == 0 || rc == HTKV_EFAILED || rc == -EIO);
            htkv_fault_disarm();
            model_check(db, &m);
            (void)htkv_close(db);
            db = tu_open(&cfg);
            model_check(db, &m);
            assert_int_equal(htkv_compact_now(db), 0);
            model_check(db, &m);
            reopen_check(db, &cfg, &m);
            tu_rmrf(dir);
            free(dir);
        }
    }
}

/* Goal: a snapshot whose write, sync or rename fails leaves no file at its path and the store
 * unchanged; a restore whose new segments or manifest cannot be written leaves the old
 * contents, in memory and after reopen. */
static void
test_fault_snapshot_write_and_restore(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("fault-snap");
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store("fault-snap", &dir, &cfg, HTKV_SYNC_NEVER);
    static struct model m, other;
    memset(&m, 0, sizeof(m));
    (void)workload(db, &m, &seed, 600, NULL, 0);
    char path[4200];
    snprintf(path, sizeof(path), "%s/x.snap", dir);
    static const int classes[] = { HTKV_FAULT_WRITE, HTKV_FAULT_SYNC, HTKV_FAULT_RENAME };
    for (size_t c = 0; c < 3; c++) {
        htkv_fault_arm(classes[c], 1, EIO, false);
        assert_int_equal(htkv_snapshot_write(db, path), -EIO);
        htkv_fault_disarm();
        assert_int_equal(access(path, F_OK), -1);
    }
    assert_int_equal(htkv_snapshot_write(db, path), 0);
    /* Change the store, then fail restores of the snapshot at each class's first calls. */
    other = m;
    (void)workload(db, &other, &seed, 600, NULL, 0);
    static const int rclasses[] = { HTKV_FAULT_CREATE, HTKV_FAULT_ALLOC, HTKV_FAULT_SYNC,
                                    HTKV_FAULT_WRITE, HTKV_FAULT_RENAME };
    for (size_t c = 0; c < 5; c++) {
        htkv_fault_arm(rclasses[c], 1, EIO, false);
        int rc = htkv_snapshot_restore(db, path);
        htkv_fault_disarm();
        tu_context("restore with class %d failing: %s", rclasses[c], htkv_strerror(rc));
        assert_true(rc != 0);
        model_check(db, &other);
    }
    (void)htkv_close(db);
    db = tu_open(&cfg);
    model_check(db, &other);
    assert_int_equal(htkv_snapshot_restore(db, path), 0);
    model_check(db, &m);
    reopen_check(db, &cfg, &m);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_fdatasync_eio_countdown),
        cmocka_unit_test(test_fault_enospc_read_only_then_reopen),
        cmocka_unit_test(test_fault_torn_manifest_edit),
        cmocka_unit_test(test_fault_inside_compaction),
        cmocka_unit_test(test_fault_snapshot_write_and_restore),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
