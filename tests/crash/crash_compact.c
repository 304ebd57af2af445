/*
 * crash_compact.c - a process crash at every step of compaction, hint writing, snapshot writing
 * and snapshot restore loses nothing and resurrects nothing.
 *
 * Each case forks a child that runs a deterministic workload (puts, overwrites, deletes and
 * batches that span shards) on a fresh store, then starts the operation under test with the
 * engine's test hook armed to _exit() the process at the k-th time it reaches a named point
 * (a crash of the process at that instant: what was stored in the page cache stays, nothing
 * after it happens). The parent replays the same workload on an in-memory model, reopens the
 * store and requires it to equal the model exactly: for a restore, either the old contents or
 * the snapshot's, as a whole. It then compacts the recovered store once more, and reopens it
 * again, and checks again: recovery from a half-done pass must leave a store that compacts.
 * Versions never repeat: each reopen's next write gets a version above every version the child
 * had reached before the crash (check_versions()).
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <htkv/replication.h>

#include "tests/support/testutil.h"

extern void (*htkv_compact_hook)(const char *point);

#define NKEYS 400

struct model {
    uint64_t tag[NKEYS]; /* 0 = absent */
    uint32_t len[NKEYS];
};

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "crash-%05u", i);
}

/* Phase 1 or 2 of the workload; applied to @p db when not NULL, always to @p m. */
static void
workload(htkv_db *db, struct model *m, int phase)
{
    uint64_t seed = 0x5eed0000ull + (uint64_t)phase;
    unsigned char val[512];
    char key[32];
    htkv_batch *b = NULL;
    if (db != NULL) {
        assert_int_equal(htkv_batch_create(&b), 0);
    }
    for (int op = 0; op < 3000; op++) {
        uint64_t r = tu_rand(&seed);
        unsigned i = (unsigned)(r % NKEYS);
        uint32_t len = (uint32_t)((r >> 16) % 400);
        uint64_t tag = (uint64_t)phase << 32 | (uint64_t)op;
        unsigned kind = (unsigned)((r >> 32) % 10);
        if (kind < 2) {
            if (m->tag[i] != 0 && db != NULL) {
                assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
            }
            m->tag[i] = 0;
        } else if (kind < 3) {
            if (db != NULL) {
                htkv_batch_clear(b);
            }
            for (unsigned k = 0; k < 5; k++) {
                unsigned j = (i + k * 131u) % NKEYS;
                if (db != NULL) {
                    tu_fill(val, len, tag + k * 1000000ull);
                    assert_int_equal(htkv_batch_put(b, key, key_of(j, key), val, len), 0);
                }
                m->tag[j] = tag + k * 1000000ull;
                m->len[j] = len;
            }
            if (db != NULL) {
                assert_int_equal(htkv_write(db, b), 0);
            }
        } else {
            if (db != NULL) {
                tu_fill(val, len, tag);
                assert_int_equal(htkv_put(db, key, key_of(i, key), val, len), 0);
            }
            m->tag[i] = tag;
            m->len[i] = len;
        }
    }
    htkv_batch_destroy(b);
}

/* Does @p db hold exactly @p m? (no assertion: the caller decides) */
static bool
equals(htkv_db *db, const struct model *m)
{
    unsigned char val[512], buf[512];
    char key[32];
    uint64_t live = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t n = 0, kl = key_of(i, key);
        int rc = htkv_get(db, key, kl, buf, sizeof(buf), &n);
        if (m->tag[i] == 0) {
            if (rc != HTKV_ENOTFOUND) {
                return false;
            }
            continue;
        }
        live++;
        tu_fill(val, m->len[i], m->tag[i]);
        if (rc != 0 || n != m->len[i] || memcmp(buf, val, n) != 0) {
            return false;
        }
    }
    return tu_stats(db).live_keys == live;
}

static const char *kill_point;
static int kill_at;

static void
kill_hook(const char *point)
{
    if (strcmp(point, kill_point) == 0 && --kill_at == 0) {
        _exit(42);
    }
}

enum action { ACT_COMPACT, ACT_SNAPSHOT, ACT_RESTORE, ACT_CLOSE };

/* The child's latest version before the action, in memory shared with the parent. */
static uint64_t *handed_out;

/* The child: workload, then the action with the hook armed. Never returns. */
static void
child(const char *dir, enum action act, const char *point, int k)
{
    tu_assert_hook_reset();
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db;
    if (htkv_open(&cfg, &db) != 0) {
        _exit(2);
    }
    static struct model m;
    workload(db, &m, 1);
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/test.snap", dir);
    if (act == ACT_RESTORE) {
        if (htkv_snapshot_write(db, snap) != 0) {
            _exit(3);
        }
        workload(db, &m, 2);
    }
    if (htkv_latest_version(db, handed_out) != 0) {
        _exit(5);
    }
    kill_point = point;
    kill_at = k;
    htkv_compact_hook = kill_hook;
    if (act == ACT_CLOSE) {
        _exit(htkv_close(db) == 0 ? 0 : 4); /* writes the hints: killed while doing so */
    }
    int rc = act == ACT_COMPACT    ? htkv_compact_now(db)
             : act == ACT_SNAPSHOT ? htkv_snapshot_write(db, snap)
                                   : htkv_snapshot_restore(db, snap);
    htkv_compact_hook = NULL;
    _exit(rc == 0 && htkv_close(db) == 0 ? 0 : 4);
}

/*
 * Versions never repeat: after the crash and a reopen, the latest version is at least the one
 * the child had reached before the action (@p before), and a new write gets one above it,
 * whatever the action dropped (tombstones) or replaced (a restore). A probe key outside the
 * model is written and deleted.
 */
static void
check_versions(htkv_db *db, uint64_t before)
{
    uint64_t latest = 0, v = 0;
    size_t n = 0;
    assert_int_equal(htkv_latest_version(db, &latest), 0);
    assert_true(latest >= before);
    assert_int_equal(htkv_put(db, "probe", 5, "p", 1), 0);
    assert_int_equal(htkv_get_version(db, "probe", 5, NULL, 0, &n, &v), HTKV_ETOOSMALL);
    assert_true(v > before && v > latest);
    assert_int_equal(htkv_delete(db, "probe", 5), 0);
}

static int
run_case(enum action act, const char *point, int k)
{
    char *dir = tu_tmpdir("crash-compact");
    *handed_out = 0;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child(dir, act, point, k);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    int code = WEXITSTATUS(status);
    tu_context("%s at the %d-th '%s': child exit %d", act == ACT_COMPACT ? "compact" : "restore", k,
               point, code);
    assert_true(code == 0 || code == 42);

    static struct model old, restored;
    memset(&old, 0, sizeof(old));
    memset(&restored, 0, sizeof(restored));
    workload(NULL, &restored, 1);
    old = restored;
    if (act == ACT_RESTORE) {
        workload(NULL, &old, 2);
    }
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    for (int round = 0; round < 2; round++) {
        htkv_db *db = tu_open(&cfg);
        bool is_old = equals(db, &old);
        bool ok = is_old || (act == ACT_RESTORE && equals(db, &restored));
        assert_true(ok);
        if (act == ACT_RESTORE && code == 0) {
            assert_true(equals(db, &restored)); /* the restore completed */
        }
        assert_int_equal(htkv_compact_now(db), 0);
        assert_true(is_old ? equals(db, &old) : equals(db, &restored));
        assert_true(*handed_out > 0);
        check_versions(db, *handed_out);
        assert_int_equal(htkv_close(db), 0);
    }
    tu_rmrf(dir);
    free(dir);
    return code;
}

/* Goal: a crash at each point of a compaction pass, at several steps, loses nothing. */
static void
test_crash_during_compaction(void **state)
{
    (void)state;
    static const char *points[] = { "fence-synced", "copies-synced", "dropped" };
    for (size_t p = 0; p < sizeof(points) / sizeof(points[0]); p++) {
        for (int k = 1; k <= 9; k += 4) {
            int code = run_case(ACT_COMPACT, points[p], k);
            if (k == 1) {
                assert_int_equal(code, 42); /* every point is reached at least once */
            }
        }
    }
    /* Steps: until the pass completes without reaching the k-th. */
    int killed = 0;
    for (int k = 1; k < 400; k = k * 2 + 1) {
        if (run_case(ACT_COMPACT, "step", k) == 0) {
            break;
        }
        killed++;
    }
    assert_true(killed >= 3);
}

/* Goal: a crash while writing a snapshot leaves the store as it was. */
static void
test_crash_during_snapshot_write(void **state)
{
    (void)state;
    assert_int_equal(run_case(ACT_SNAPSHOT, "snapshot-written", 1), 42);
}

/* Goal: a crash at any point of a restore leaves the old contents or the snapshot's, whole. */
static void
test_crash_during_restore(void **state)
{
    (void)state;
    assert_int_equal(run_case(ACT_RESTORE, "restore-built", 1), 42);
    assert_int_equal(run_case(ACT_RESTORE, "restore-committed", 1), 42);
    assert_int_equal(run_case(ACT_RESTORE, "never-reached", 1), 0);
}

/* Goal: a crash while close writes hint files (before a hint's rename, at several hints)
 * leaves a store that opens to the same contents. */
static void
test_crash_during_hint_writing(void **state)
{
    (void)state;
    assert_int_equal(run_case(ACT_CLOSE, "hint-written", 1), 42);
    assert_int_equal(run_case(ACT_CLOSE, "hint-written", 5), 42);
}

int
main(void)
{
    tu_assert_hook_install();
    handed_out =
        mmap(NULL, sizeof(*handed_out), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (handed_out == MAP_FAILED) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_during_compaction),
        cmocka_unit_test(test_crash_during_snapshot_write),
        cmocka_unit_test(test_crash_during_restore),
        cmocka_unit_test(test_crash_during_hint_writing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
