/*
 * test_fd_limit.c - a store larger than the process's descriptor limit: writes, reopens,
 * compaction, snapshots and reads all work under RLIMIT_NOFILE = 256, and the store's open
 * descriptors stay bounded by its shards, not by its segments.
 *
 * Before, every segment kept its descriptor for the store's life: with 64 shards and 64 KiB
 * segments puts failed with -EMFILE after about a thousand segments under the common
 * 1,024-descriptor limit. Here the store grows to several times the limit in segment files
 * (counted on disk), from the public API only, in the mode the suite runs (inline or workers).
 */
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tests/support/testutil.h"

#define FD_LIMIT 256
#define SHARDS 64
#define VAL_BYTES 400
/* Segment files to reach: well past the limit. */
#define SEGS_WANTED (FD_LIMIT + 144)

static unsigned
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static int
key_of(char *key, size_t cap, unsigned i)
{
    return snprintf(key, cap, "fdlim-%08u", i);
}

/* Value of key @p i written in round @p round. */
static void
val_of(unsigned char *val, unsigned i, unsigned round)
{
    tu_fill(val, VAL_BYTES, ((uint64_t)round << 32) | i);
}

/* state[i]: the round of key i's value, 0 = never written or deleted. */
static void
check_all(htkv_db *db, const unsigned *state, unsigned n)
{
    char key[32];
    unsigned char want[VAL_BYTES], got[VAL_BYTES];
    for (unsigned i = 0; i < n; i++) {
        int kl = key_of(key, sizeof(key), i);
        size_t vlen = 0;
        int rc = htkv_get(db, key, (size_t)kl, got, sizeof(got), &vlen);
        if (state[i] == 0) {
            if (rc != HTKV_ENOTFOUND) {
                fail_msg("%s: deleted, but get says %d", key, rc);
            }
            continue;
        }
        if (rc != 0) {
            fail_msg("%s: get failed: %s (%s)", key, htkv_strerror(rc), htkv_last_error());
        }
        val_of(want, i, state[i]);
        assert_int_equal(vlen, VAL_BYTES);
        assert_memory_equal(got, want, VAL_BYTES);
    }
}

static void
put_range(htkv_db *db, unsigned *state, unsigned from, unsigned to, unsigned round)
{
    char key[32];
    unsigned char val[VAL_BYTES];
    for (unsigned i = from; i < to; i++) {
        int kl = key_of(key, sizeof(key), i);
        val_of(val, i, round);
        int rc = htkv_put(db, key, (size_t)kl, val, sizeof(val));
        if (rc != 0) {
            fail_msg("put %s (round %u): %s (%s), %u descriptors open", key, round,
                     htkv_strerror(rc), htkv_last_error(), open_fds());
        }
        state[i] = round;
    }
}

static htkv_db *
open_limited(const char *dir)
{
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = SHARDS;
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    cfg.emit_snapshot_after_compaction = 0;
    return tu_open(&cfg);
}

static void
test_store_beyond_the_descriptor_limit(void **state_)
{
    (void)state_;
    struct rlimit saved, lim;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    lim = saved;
    lim.rlim_cur = FD_LIMIT < saved.rlim_max ? FD_LIMIT : saved.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
    unsigned before = open_fds();

    char *dir = tu_tmpdir("fdlim");
    htkv_db *db = open_limited(dir);
    unsigned n = 0, cap = 1u << 20;
    unsigned *state = calloc(cap, sizeof(*state));
    assert_non_null(state);
    /* Grow until the store has SEGS_WANTED segment files. */
    while (tu_stats(db).segments < SEGS_WANTED) {
        assert_true(n + 4096 <= cap);
        put_range(db, state, n, n + 4096, 1);
        n += 4096;
    }
    unsigned segs = (unsigned)tu_stats(db).segments;
    unsigned used = open_fds() - before;
    tu_context("%u keys, %u segments, %u descriptors of the store", n, segs, used);
    /* One active segment per shard, a sealed one whose sync is in flight, the manifest, the lock,
     * the workers' rings: nothing that grows with the data. */
    assert_true(used <= 2 * SHARDS + 16);
    check_all(db, state, n);
    htkv_close(db);

    db = open_limited(dir);
    assert_true(open_fds() - before <= 2 * SHARDS + 16);
    check_all(db, state, n);
    /* Overwrite a third and delete a third, then compact everything. */
    put_range(db, state, 0, n / 3, 2);
    char key[32];
    for (unsigned i = n / 3; i < 2 * (n / 3); i++) {
        int kl = key_of(key, sizeof(key), i);
        assert_int_equal(htkv_delete(db, key, (size_t)kl), 0);
        state[i] = 0;
    }
    int rc = htkv_compact_now(db);
    if (rc != 0) {
        fail_msg("compaction: %s (%s)", htkv_strerror(rc), htkv_last_error());
    }
    assert_true(open_fds() - before <= 2 * SHARDS + 16);
    check_all(db, state, n);

    /* A snapshot restored into a fresh store creates its segments under the limit too. */
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s.snap", dir);
    assert_int_equal(htkv_snapshot_write(db, snap), 0);
    htkv_close(db);
    char *dir2 = tu_tmpdir("fdlim-restore");
    htkv_db *db2 = open_limited(dir2);
    rc = htkv_snapshot_restore(db2, snap);
    if (rc != 0) {
        fail_msg("restore: %s (%s)", htkv_strerror(rc), htkv_last_error());
    }
    assert_true(open_fds() - before <= 2 * SHARDS + 16);
    check_all(db2, state, n);
    htkv_close(db2);

    db = open_limited(dir);
    check_all(db, state, n);
    htkv_close(db);
    assert_int_equal(open_fds(), before);

    unlink(snap);
    tu_rmrf(dir);
    tu_rmrf(dir2);
    free(dir);
    free(dir2);
    free(state);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_beyond_the_descriptor_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
