/*
 * test_cpus.c - the CPUs a store believes it may use (engine/cpus.c): the affinity mask and a
 * cgroup quota (v2 or v1) lower it; a malformed or unlimited cpu.max is no quota; htkv_stats.cpus
 * reports it; a store opened with more worker threads than that keeps them and says so through
 * log_fn.
 */
#include "tests/support/testutil.h"

#include <sched.h>
#include <sys/stat.h>

#include "engine/cpus.h"

static void
write_text(const char *dir, const char *rel, const char *text)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void
make_dir(const char *dir, const char *rel)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0755), 0);
}

/* Goal: never 0, never above the affinity mask. */
static void
test_cpus_within_affinity(void **state)
{
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    unsigned n = htkv_cpus_available();
    assert_true(n >= 1);
    assert_true(n <= (unsigned)CPU_COUNT(&set));
}

/* Goal: the smallest quota of the cgroup and its ancestors wins, rounded up; "max", malformed,
 * zero and missing files are no quota. */
static void
test_cpus_quota_of_a_cgroup_tree(void **state)
{
    (void)state;
    char *root = tu_tmpdir("cpus");
    make_dir(root, "a");
    make_dir(root, "a/b");
    make_dir(root, "a/b/c");
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 0); /* no cpu.max anywhere */
    write_text(root, "a/b/c/cpu.max", "max 100000\n");
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 0);
    write_text(root, "a/cpu.max", "150000 100000\n"); /* 1.5 CPUs: 2 */
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 2);
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c/"), 2);
    write_text(root, "a/b/cpu.max", "50000 100000\n"); /* half a CPU: 1 */
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 1);
    assert_int_equal(htkv_cpus_quota(root, "/a"), 2); /* a child's quota does not bind its parent */
    write_text(root, "a/b/cpu.max", "lots 100000\n");
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 2);
    write_text(root, "a/b/cpu.max", "0 100000\n");
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 2);
    write_text(root, "a/b/cpu.max", "100000 0\n");
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 2);
    write_text(root, "cpu.max", "300000 100000\n"); /* the root's: 3, above a's 2 */
    assert_int_equal(htkv_cpus_quota(root, "/a/b/c"), 2);
    assert_int_equal(htkv_cpus_quota(root, "/"), 3);
    assert_int_equal(htkv_cpus_quota(root, "/missing/cgroup"), 3);
    tu_rmrf(root);
    free(root);
}

/* Goal: cgroup v1's cpu.cfs_quota_us over cpu.cfs_period_us counts like cpu.max, in the same
 * walk up the tree; -1, malformed, zero and a missing period are no quota. */
static void
test_cpus_quota_of_a_v1_cgroup_tree(void **state)
{
    (void)state;
    char *root = tu_tmpdir("cpus-v1");
    make_dir(root, "pod");
    make_dir(root, "pod/ctr");
    write_text(root, "pod/ctr/cpu.cfs_quota_us", "-1\n");
    write_text(root, "pod/ctr/cpu.cfs_period_us", "100000\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 0);
    write_text(root, "pod/cpu.cfs_quota_us", "250000\n"); /* 2.5 CPUs: 3 */
    write_text(root, "pod/cpu.cfs_period_us", "100000\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 3);
    write_text(root, "pod/ctr/cpu.cfs_quota_us", "20000\n"); /* a fifth of a CPU: 1 */
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 1);
    assert_int_equal(htkv_cpus_quota(root, "/pod"), 3);
    write_text(root, "pod/ctr/cpu.cfs_quota_us", "1e5\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 3);
    write_text(root, "pod/ctr/cpu.cfs_quota_us", "0\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 3);
    write_text(root, "pod/ctr/cpu.cfs_quota_us", "50000\n");
    write_text(root, "pod/ctr/cpu.cfs_period_us", "0\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 3);
    write_text(root, "pod/ctr/cpu.cfs_period_us", "-5\n");
    assert_int_equal(htkv_cpus_quota(root, "/pod/ctr"), 3);
    tu_rmrf(root);
    free(root);
}

struct logged {
    int warnings;
    bool named_workers;
};

static void
capture(int level, const char *msg, void *ctx)
{
    struct logged *l = ctx;
    if (level == HTKV_LOG_WARN) {
        l->warnings++;
        l->named_workers |= strstr(msg, "worker_threads") != NULL;
    }
}

/* Goal: confined to one CPU (as taskset does), a store reports 1 CPU, sizes its default shard
 * count from it (2 x 1, at least 4) and keeps 2 asked-for workers with a warning. */
static void
test_cpus_of_a_confined_store(void **state)
{
    (void)state;
    cpu_set_t saved;
    tu_pin_one_cpu(&saved);
    assert_int_equal(htkv_cpus_available(), 1);

    char *dir = tu_tmpdir("cpus-store");
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.worker_threads = 2;
    struct logged l = { 0 };
    cfg.log_fn = capture;
    cfg.log_ctx = &l;
    htkv_db *db = NULL;
    assert_int_equal(htkv_open(&cfg, &db), 0);
    struct htkv_stats st;
    assert_int_equal(htkv_stats(db, &st), 0);
    assert_int_equal(st.cpus, 1);
    assert_int_equal(st.worker_threads, 2);
    assert_int_equal(st.shard_count, 4);
    assert_true(l.warnings >= 1 && l.named_workers);
    assert_int_equal(htkv_put(db, "k", 1, "v", 1), 0);
    assert_int_equal(htkv_close(db), 0);

    assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpus_within_affinity),
        cmocka_unit_test(test_cpus_quota_of_a_cgroup_tree),
        cmocka_unit_test(test_cpus_quota_of_a_v1_cgroup_tree),
        cmocka_unit_test(test_cpus_of_a_confined_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
