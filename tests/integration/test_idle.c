/*
 * test_idle.c - an idle store does not wake, and a write after the idle spell is still synced.
 *
 * An agent opens its store and leaves it alone most of the day: the store's threads (the
 * INTERVAL syncer, the compactor, the workers) must then sleep without a timer, not tick. Counted
 * from outside: the process's context switches (getrusage) over a quiet second, after the threads
 * had time to find nothing to do. Then the rule that the sleep must not break: a put after the
 * idle spell is fdatasynced within about one interval in HTKV_SYNC_INTERVAL (htkv_stats.syncs
 * grows without any call that syncs), and a compaction the write calls for still runs.
 * Each mode (inline and 2 workers; INTERVAL, NEVER, ALWAYS) is configured here: label "once".
 */
#include <sys/resource.h>
#include <time.h>

#include "tests/support/testutil.h"

/* Context switches the idle second may show: the test's own sleep, and slack for a kernel
 * thread's wake-up counted against the process. A ticking store shows 40 and more. */
#define IDLE_SWITCHES_MAX 4

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static long
switches(void)
{
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_nvcsw + ru.ru_nivcsw;
}

/* @p rounds overwrites of @p n keys with 200-byte values: sealed segments full of garbage. */
static void
put_some(htkv_db *db, unsigned n, unsigned rounds)
{
    char key[32], val[200];
    for (unsigned round = 0; round < rounds; round++) {
        for (unsigned i = 0; i < n; i++) {
            int kl = snprintf(key, sizeof(key), "idle-%05u", i);
            memset(val, 'a' + (int)(round % 26), sizeof(val));
            assert_int_equal(htkv_put(db, key, (size_t)kl, val, sizeof(val)), 0);
        }
    }
}

/* Open a store in the mode given, write, let it settle, and count the quiet second. */
static void
idle_mode(unsigned workers, int sync_mode)
{
    char *dir = tu_tmpdir("idle");
    htkv_config cfg;
    tu_config(&cfg, dir, sync_mode);
    cfg.worker_threads = workers;
    cfg.fsync_interval_ms = 20;
    cfg.compaction_interval_ms = 50;
    cfg.compaction_min_garbage_ratio = 0.1;
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    put_some(db, 400, 6); /* overwrites: garbage for the compactor */
    sleep_ms(400);        /* the syncer and the compactor run, then find nothing to do */
    long before = switches();
    sleep_ms(1000);
    long quiet = switches() - before;
    print_message("[idle] workers=%u sync=%d: %ld context switches in an idle second\n", workers,
                  sync_mode, quiet);
    assert_true(quiet <= IDLE_SWITCHES_MAX);
    /* The sleep must not cost durability: a put after it is synced within ~ an interval. */
    struct htkv_stats st = tu_stats(db);
    uint64_t syncs = st.syncs, compactions = st.compactions;
    put_some(db, 400, 6);
    if (sync_mode == HTKV_SYNC_INTERVAL) {
        for (int i = 0; i < 200 && tu_stats(db).syncs == syncs; i++) {
            sleep_ms(5);
        }
        assert_true(tu_stats(db).syncs > syncs);
    }
    /* ...and garbage made after it is still compacted. */
    for (int i = 0; i < 200 && tu_stats(db).compactions == compactions; i++) {
        sleep_ms(5);
    }
    assert_true(tu_stats(db).compactions > compactions);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: an idle store's threads sleep without a timer and still wake for a write. Method: see
 * the file header, inline. */
static void
test_idle_inline(void **state)
{
    (void)state;
    idle_mode(0, HTKV_SYNC_INTERVAL);
    idle_mode(0, HTKV_SYNC_NEVER);
    idle_mode(0, HTKV_SYNC_ALWAYS);
}

/* Goal and method: as test_idle_inline, with 2 workers (each syncs its own shards in INTERVAL,
 * and a batch one worker applies may dirty the other's). */
static void
test_idle_workers(void **state)
{
    (void)state;
    idle_mode(2, HTKV_SYNC_INTERVAL);
    idle_mode(2, HTKV_SYNC_NEVER);
    idle_mode(2, HTKV_SYNC_ALWAYS);
}

/* Goal: a batch that one worker applies to another's shard is synced although that worker slept
 * untimed. Method: 2 workers in INTERVAL, settle, then a batch over keys of every shard; every
 * shard's appends must be synced within a few intervals (htkv_stats.syncs counts one per dirty
 * shard), with no call that syncs. */
static void
test_idle_batch_wakes_owner(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("idle-batch");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.worker_threads = 2;
    cfg.fsync_interval_ms = 20;
    htkv_db *db = tu_open(&cfg);
    put_some(db, 64, 1);
    sleep_ms(200);
    uint64_t syncs = tu_stats(db).syncs;
    htkv_batch *b = NULL;
    assert_int_equal(htkv_batch_create(&b), 0);
    char key[32];
    for (unsigned i = 0; i < 64; i++) { /* 64 keys: every one of the 4 shards gets some */
        int kl = snprintf(key, sizeof(key), "batch-%03u", i);
        assert_int_equal(htkv_batch_put(b, key, (size_t)kl, "v", 1), 0);
    }
    assert_int_equal(htkv_write(db, b), 0);
    htkv_batch_destroy(b);
    for (int i = 0; i < 200 && tu_stats(db).syncs < syncs + cfg.shard_count; i++) {
        sleep_ms(5);
    }
    assert_true(tu_stats(db).syncs >= syncs + cfg.shard_count);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_inline),
        cmocka_unit_test(test_idle_workers),
        cmocka_unit_test(test_idle_batch_wakes_owner),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
