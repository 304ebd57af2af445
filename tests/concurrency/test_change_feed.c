/*
 * test_change_feed.c - the change feed read while writers, compaction and snapshots run.
 *
 * Writer threads put, delete and write batches on their own key ranges of a leader store whose
 * background compactor runs every few milliseconds. A follower thread keeps a second store in
 * step through the leader's change feed only: htkv_changes_since(its latest version), commands
 * in version order fed to htkv_submit(); when the feed answers HTKV_ECOMPACTED (a compaction
 * pass fenced past what it read) it installs a snapshot of the leader and goes on from its
 * version. Each read of the feed must bring versions above the last one seen, in order, and
 * nothing may be reported twice (a submitted command is never stale). When the writers are done
 * and the follower has caught up, both stores hold the same keys, values and latest version.
 * Runs inline and with 2 workers on io_uring, in NEVER and ALWAYS; TSan runs it (the feed reads
 * segment versions that writers change).
 */
#include <htkv/replication.h>

#include "tests/concurrency/cc_util.h"

#define WRITERS 2
#define RANGE 200u
#define FEED_MAX 65536u

struct shared {
    htkv_db *leader;
    htkv_db *follower;
    char snap[4200];
    _Atomic int writers_done;
    uint64_t seed;
    uint64_t installs, commands, reads;
};

struct writer {
    struct shared *sh;
    unsigned id;
};

static size_t
key_of(uint32_t id, char *buf)
{
    return (size_t)sprintf(buf, "cf-%06u", id);
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    struct shared *sh = w->sh;
    uint64_t rng = cc_subseed(sh->seed, w->id, 7);
    unsigned char val[64];
    char key[32];
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch");
        return NULL;
    }
    unsigned ops = cc_ops(3000);
    for (unsigned n = 0; n < ops && !cc_failed(); n++) {
        uint64_t r = tu_rand(&rng);
        uint32_t id = w->id * RANGE + (uint32_t)(r % RANGE);
        size_t kl = key_of(id, key);
        size_t vl = 1 + (size_t)((r >> 20) % sizeof(val));
        tu_fill(val, vl, r);
        int rc;
        unsigned kind = (unsigned)((r >> 40) % 10);
        if (kind < 2) {
            rc = htkv_delete(sh->leader, key, kl);
            rc = rc == HTKV_ENOTFOUND ? 0 : rc;
        } else if (kind < 4) {
            htkv_batch_clear(b);
            rc = htkv_batch_put(b, key, kl, val, vl);
            kl = key_of(w->id * RANGE + (uint32_t)((r >> 8) % RANGE), key);
            rc = rc != 0 ? rc : htkv_batch_delete(b, key, kl);
            rc = rc != 0 ? rc : htkv_write(sh->leader, b);
        } else {
            rc = htkv_put(sh->leader, key, kl, val, vl);
        }
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "writer %u op %u: %s", w->id, n, htkv_strerror(rc));
        }
    }
    htkv_batch_destroy(b);
    return NULL;
}

/* Install a snapshot of the leader into the follower; its version becomes the follower's. */
static bool
install_snapshot(struct shared *sh, uint64_t *last)
{
    int rc = htkv_snapshot_write(sh->leader, sh->snap);
    CC_CHECK(rc == 0, "snapshot write: %s", htkv_strerror(rc));
    uint64_t v = 0;
    rc = htkv_snapshot_file_version(sh->snap, &v, NULL);
    CC_CHECK(rc == 0, "snapshot version: %s", htkv_strerror(rc));
    CC_CHECK(v >= *last, "snapshot at %llu, the follower was at %llu", (unsigned long long)v,
             (unsigned long long)*last);
    rc = htkv_snapshot_restore(sh->follower, sh->snap);
    CC_CHECK(rc == 0, "snapshot restore: %s", htkv_strerror(rc));
    uint64_t fl = 0;
    CC_CHECK(htkv_latest_version(sh->follower, &fl) == 0 && fl == v,
             "follower at %llu after installing a snapshot of %llu", (unsigned long long)fl,
             (unsigned long long)v);
    *last = v;
    sh->installs++;
    return true;
}

/* One read of the feed from *@p last, applied to the follower. False on a broken rule. */
static bool
catch_up(struct shared *sh, htkv_command *cmds, int *outcomes, uint64_t *last)
{
    htkv_changes *c = NULL;
    int rc = htkv_changes_since(sh->leader, *last, &c);
    if (rc == HTKV_ECOMPACTED) {
        return install_snapshot(sh, last);
    }
    CC_CHECK(rc == 0, "changes_since(%llu): %s", (unsigned long long)*last, htkv_strerror(rc));
    size_t n = 0;
    bool ok = true;
    uint64_t prev = *last;
    htkv_command cmd;
    while (ok && (rc = htkv_changes_next(c, &cmd)) == 1) {
        if (cmd.version <= *last || cmd.version < prev) {
            cc_fail_at(__FILE__, __LINE__, "feed from %llu gave version %llu after %llu",
                       (unsigned long long)*last, (unsigned long long)cmd.version,
                       (unsigned long long)prev);
            ok = false;
        }
        prev = cmd.version;
        cmds[n++] = cmd;
        if (n == FEED_MAX) {
            break;
        }
    }
    if (ok && rc < 0) {
        cc_fail_at(__FILE__, __LINE__, "changes_next: %s", htkv_strerror(rc));
        ok = false;
    }
    /* A run of one version is one entry: submit only whole entries (the last may continue). */
    size_t whole = n;
    if (n == FEED_MAX) {
        while (whole > 0 && cmds[whole - 1].version == cmds[n - 1].version) {
            whole--;
        }
    }
    if (ok && whole > 0) {
        rc = htkv_submit(sh->follower, cmds, whole, outcomes);
        if (rc != (int)whole) {
            cc_fail_at(__FILE__, __LINE__, "submit of %zu commands applied %d", whole, rc);
            ok = false;
        }
        *last = cmds[whole - 1].version;
        sh->commands += whole;
    }
    sh->reads++;
    htkv_changes_destroy(c);
    return ok;
}

/* Do the two stores hold the same keys and values? */
static bool
same_contents(htkv_db *a, htkv_db *b)
{
    htkv_iter *ia = NULL, *ib = NULL;
    CC_CHECK(htkv_get_prefix(a, "", 0, &ia) == 0 && htkv_get_prefix(b, "", 0, &ib) == 0, "iter");
    bool ok = true;
    for (uint64_t i = 0; ok; i++) {
        const void *ka, *va, *kb, *vb;
        size_t kla, vla, klb, vlb;
        int ra = htkv_iter_next(ia, &ka, &kla, &va, &vla);
        int rb = htkv_iter_next(ib, &kb, &klb, &vb, &vlb);
        if (ra != rb || ra < 0) {
            cc_fail_at(__FILE__, __LINE__, "item %llu: leader %d, follower %d",
                       (unsigned long long)i, ra, rb);
            ok = false;
        } else if (ra == 0) {
            break;
        } else if (kla != klb || vla != vlb || memcmp(ka, kb, kla) != 0 ||
                   memcmp(va, vb, vla) != 0) {
            cc_fail_at(__FILE__, __LINE__, "item %llu differs (key %.*s / %.*s)",
                       (unsigned long long)i, (int)kla, (const char *)ka, (int)klb,
                       (const char *)kb);
            ok = false;
        }
    }
    htkv_iter_destroy(ia);
    htkv_iter_destroy(ib);
    return ok;
}

static void *
follower_main(void *arg)
{
    struct shared *sh = arg;
    htkv_command *cmds = malloc(FEED_MAX * sizeof(*cmds));
    int *outcomes = malloc(FEED_MAX * sizeof(*outcomes));
    if (cmds == NULL || outcomes == NULL) {
        cc_fail_at(__FILE__, __LINE__, "malloc");
        free(cmds);
        free(outcomes);
        return NULL;
    }
    uint64_t last = 0;
    while (!cc_failed() && !atomic_load(&sh->writers_done)) {
        uint64_t before = sh->commands + sh->installs;
        (void)catch_up(sh, cmds, outcomes, &last);
        if (sh->commands + sh->installs == before) {
            struct timespec ts = { 0, 200 * 1000L }; /* nothing new: let the writers run */
            nanosleep(&ts, NULL);
        }
    }
    /* The writers are done: read until the follower is at the leader's latest version. */
    uint64_t target = 0;
    if (htkv_latest_version(sh->leader, &target) != 0) {
        cc_fail_at(__FILE__, __LINE__, "latest");
    }
    for (int i = 0; i < 100 && last < target && !cc_failed(); i++) {
        (void)catch_up(sh, cmds, outcomes, &last);
    }
    uint64_t fl = 0;
    if (!cc_failed() && (htkv_latest_version(sh->follower, &fl) != 0 || fl != target)) {
        cc_fail_at(__FILE__, __LINE__, "follower at %llu, leader at %llu", (unsigned long long)fl,
                   (unsigned long long)target);
    }
    if (!cc_failed()) {
        (void)same_contents(sh->leader, sh->follower);
    }
    free(cmds);
    free(outcomes);
    return NULL;
}

static void
run_mode(const struct cc_mode *m, uint64_t seed)
{
    cc_set_mode(m);
    char *dl = tu_tmpdir("cf-leader"), *df = tu_tmpdir("cf-follower");
    htkv_config cl, cf;
    cc_config(&cl, dl, m);
    cl.shard_count = 4;
    cl.max_segment_bytes = 64u << 10;
    cl.compaction_interval_ms = 5;
    cl.compaction_min_garbage_ratio = 0.3;
    cl.emit_snapshot_after_compaction = 0;
    tu_config(&cf, df, HTKV_SYNC_NEVER);
    cf.shard_count = 3;
    cf.worker_threads = 0;
    cf.compaction_interval_ms = 0;
    struct shared sh = { .seed = seed };
    snprintf(sh.snap, sizeof(sh.snap), "%s/leader.snap", dl);
    assert_int_equal(htkv_open(&cl, &sh.leader), 0);
    assert_int_equal(htkv_open(&cf, &sh.follower), 0);
    struct writer w[WRITERS];
    pthread_t wt[WRITERS], ft;
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ .sh = &sh, .id = i };
        assert_int_equal(pthread_create(&wt[i], NULL, writer_main, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&ft, NULL, follower_main, &sh), 0);
    for (unsigned i = 0; i < WRITERS; i++) {
        pthread_join(wt[i], NULL);
    }
    atomic_store(&sh.writers_done, 1);
    pthread_join(ft, NULL);
    fprintf(stderr, "[change_feed] %s: %llu feed reads, %llu commands, %llu snapshot installs\n",
            cc_mode_text, (unsigned long long)sh.reads, (unsigned long long)sh.commands,
            (unsigned long long)sh.installs);
    assert_int_equal(htkv_close(sh.leader), 0);
    assert_int_equal(htkv_close(sh.follower), 0);
    cc_assert_ok();
    tu_rmrf(dl);
    tu_rmrf(df);
    free(dl);
    free(df);
}

/* Goal: see the file header. Method: run_mode in each mode of the matrix. */
static void
test_change_feed_under_writers_and_compaction(void **state)
{
    (void)state;
    uint64_t seed = cc_seed("test_change_feed_under_writers_and_compaction");
    static const struct cc_mode modes[] = {
        { 0, HTKV_IO_AUTO, HTKV_SYNC_NEVER },
        { 0, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS },
        { 2, HTKV_IO_URING, HTKV_SYNC_NEVER },
        { 2, HTKV_IO_URING, HTKV_SYNC_ALWAYS },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        run_mode(&modes[i], seed + i);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_change_feed_under_writers_and_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
