/*
 * test_budget_edges.c - two moments of a memory budget that the model and race tests missed
 * (both found by a review, each once a silent loss):
 *
 *   first_eviction_under_a_scan: a view scans every preloaded key while a writer pushes the
 *     store past its budget for the first time. A shard's first cold set appears in the middle
 *     of a refill that read its trie alone, and evictions take keys out of the trie ahead of
 *     it: every scan must still return every key (scans missed up to 59 of 60,000 keys).
 *   gets_during_restores: readers get keys that the snapshot and the store both hold while the
 *     store is restored again and again, with most of its keys cold in between: no get may
 *     miss (restores dropped the cold set before publishing the new table: 8 misses in 30).
 *
 *   rescue_under_readers: bytes flipped in the pages of the key index files while readers, a
 *     prefix scanner and a writer run: no get fails or misses and every scan is whole (the shard
 *     reads a damaged file's segment instead; its key index is retired while readers may hold it).
 *
 *   reads_alone_settle (not a loss: a cost): after the writes stop, a hot set that fits in the
 *     budget ends up in memory and stays, read by gets alone. Entries of the active segment and
 *     of sealed segments not yet given a key index cannot leave; when no write comes to seal and
 *     index them, the compactor does. Before, they held most of the share for good and every
 *     round of reads evicted and promoted the hot keys again (zipfian gets at a third of their
 *     speed).
 *
 * Invariants: a key present throughout a scan's view or a get is returned by it.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tests/concurrency/cc_util.h"

#define EDGE_SHARDS 16
#define EDGE_KEYS 30000u
#define EDGE_TRIALS 3
#define RESTORE_KEYS 12000u
#define RESTORE_READERS 2
#define RESTORE_ROUNDS 4

struct edge {
    htkv_db *db;
    char prefix; /* of the keys edge_reader() gets */
    _Atomic int stop;
    _Atomic long misses;
    _Atomic long reads;
    unsigned nkeys;
};

static void
edge_config(htkv_config *c, const char *dir, unsigned shards, uint64_t budget)
{
    tu_config(c, dir, HTKV_SYNC_NEVER);
    c->shard_count = shards;
    c->max_segment_bytes = 64u << 10;
    c->memory_budget_bytes = budget;
    c->compaction_interval_ms = 0;
}

static void
edge_load(htkv_db *db, char prefix, unsigned n)
{
    char k[32], v[100];
    memset(v, 'p', sizeof(v));
    for (unsigned i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "%c%09u", prefix, i);
        assert_int_equal(htkv_put(db, k, strlen(k), v, sizeof(v)), 0);
    }
}

/* Items @p it returns (destroyed then), with its last answer in *@p rc (0: the end). */
static unsigned
edge_count(htkv_iter *it, int *rc)
{
    const void *k, *v;
    size_t kl, vl;
    unsigned n = 0;
    while ((*rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        n++;
    }
    htkv_iter_destroy(it);
    return n;
}

/* Keys of [lo, hi) the view scan returns, with HTKV_ECORRUPT and the like as a failure. */
static unsigned
edge_scan(htkv_view *view)
{
    htkv_iter *it;
    assert_int_equal(htkv_view_scan(view, "k", 1, "l", 1, &it), 0);
    int rc;
    unsigned n = edge_count(it, &rc);
    assert_int_equal(rc, 0);
    return n;
}

static void *
edge_writer(void *arg)
{
    struct edge *e = arg;
    char k[32], v[100];
    memset(v, 'w', sizeof(v));
    for (unsigned i = 0; !atomic_load(&e->stop) && i < 4000000; i++) {
        snprintf(k, sizeof(k), "z%09u", i);
        assert_int_equal(htkv_put(e->db, k, strlen(k), v, sizeof(v)), 0);
        if (i % 8 == 0) {
            usleep(50);
        }
    }
    return NULL;
}

/* The index memory of EDGE_KEYS keys on EDGE_SHARDS shards, without a budget. */
static uint64_t
edge_measure(const char *dir)
{
    htkv_config c;
    edge_config(&c, dir, EDGE_SHARDS, 0);
    htkv_db *db = tu_open(&c);
    edge_load(db, 'k', EDGE_KEYS);
    htkv_view *view;
    assert_int_equal(htkv_view_open(db, &view), 0);
    assert_int_equal(edge_scan(view), EDGE_KEYS); /* builds the tries */
    struct htkv_stats s = tu_stats(db);
    htkv_view_close(view);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    return s.index_bytes + s.trie_bytes;
}

static void
edge_trial(const char *dir, uint64_t budget)
{
    htkv_config c;
    edge_config(&c, dir, EDGE_SHARDS, budget);
    struct edge e = { .db = tu_open(&c) };
    edge_load(e.db, 'k', EDGE_KEYS);
    htkv_view *view;
    assert_int_equal(htkv_view_open(e.db, &view), 0);
    assert_int_equal(edge_scan(view), EDGE_KEYS);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, edge_writer, &e), 0);
    for (unsigned scans = 0; scans < 2000; scans++) {
        uint64_t cold = tu_stats(e.db).cold_keys;
        unsigned n = edge_scan(view);
        if (n != EDGE_KEYS) {
            fail_msg("scan %u: %u of %u keys (cold keys %llu)", scans, n, EDGE_KEYS,
                     (unsigned long long)cold);
        }
        if (cold > EDGE_KEYS / 2) {
            break;
        }
    }
    atomic_store(&e.stop, 1);
    pthread_join(t, NULL);
    assert_true(tu_stats(e.db).evictions > 0);
    htkv_view_close(view);
    assert_int_equal(htkv_close(e.db), 0);
    tu_rmrf(dir);
}

static void
test_budget_first_eviction_under_a_scan(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("budget-edge-scan");
    uint64_t m = edge_measure(dir);
    for (int i = 0; i < EDGE_TRIALS; i++) {
        edge_trial(dir, m + m / 10); /* crossed soon after the writer starts */
    }
    tu_rmrf(dir);
    free(dir);
}

/* Gets of random keys "%c%09u" (prefix e->prefix) of [0, e->nkeys), each of which must answer its
 * 100-byte value; a failure or a miss is counted in e->misses. */
static void *
edge_reader(void *arg)
{
    struct edge *e = arg;
    uint64_t rng = (uint64_t)(uintptr_t)&rng;
    char k[32], buf[256];
    while (!atomic_load(&e->stop)) {
        unsigned i = (unsigned)(tu_rand(&rng) % e->nkeys);
        snprintf(k, sizeof(k), "%c%09u", e->prefix, i);
        size_t vl = 0;
        int rc = htkv_get(e->db, k, strlen(k), buf, sizeof(buf), &vl);
        if (atomic_fetch_add(&e->reads, 1) % 64 == 0) {
            sched_yield(); /* leave the thread that restores or damages some CPU */
        }
        if (rc != 0 || vl != 100) {
            fprintf(stderr, "get %s: %d (%s), %zu bytes\n", k, rc, htkv_strerror(rc), vl);
            atomic_fetch_add(&e->misses, 1);
        }
    }
    return NULL;
}

/* Write other keys until most of the store is cold again. */
static void
restore_chill(struct edge *e, unsigned *junk)
{
    char k[32], v[64];
    memset(v, 'j', sizeof(v));
    for (int j = 0; j < 4000 && tu_stats(e->db).cold_keys <= e->nkeys / 2; j++) {
        for (int b = 0; b < 50; b++) {
            snprintf(k, sizeof(k), "j%09u", (*junk)++ % 50);
            assert_int_equal(htkv_put(e->db, k, strlen(k), v, sizeof(v)), 0);
        }
    }
}

static void
test_budget_gets_during_restores(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("budget-edge-restore");
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s.snap", dir);
    htkv_config c;
    edge_config(&c, dir, 2, 256u << 10);
    struct edge e = { .db = tu_open(&c), .nkeys = RESTORE_KEYS, .prefix = 'k' };
    edge_load(e.db, 'k', RESTORE_KEYS);
    assert_int_equal(htkv_snapshot_write(e.db, snap), 0);
    pthread_t t[RESTORE_READERS];
    for (int i = 0; i < RESTORE_READERS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, edge_reader, &e), 0);
    }
    unsigned junk = 0;
    for (int r = 0; r < RESTORE_ROUNDS; r++) {
        assert_int_equal(htkv_snapshot_restore(e.db, snap), 0);
        restore_chill(&e, &junk);
    }
    atomic_store(&e.stop, 1);
    for (int i = 0; i < RESTORE_READERS; i++) {
        pthread_join(t[i], NULL);
    }
    fprintf(stderr, "[gets_during_restores] %ld gets, %ld missed\n", atomic_load(&e.reads),
            atomic_load(&e.misses));
    assert_int_equal(atomic_load(&e.misses), 0);
    assert_int_equal(htkv_close(e.db), 0);
    unlink(snap);
    tu_rmrf(dir);
    free(dir);
}

#define SETTLE_KEYS 40000u
#define SETTLE_HOT 4000u
#define SETTLE_ROUNDS 300

/* Goal: reads alone settle under a budget (above). Method: one shard, default segments, 40,000
 * keys 10 B / 100 B under a budget of half their index; then rounds of gets of the first 4,000
 * keys (written first: cold), each read twice a round (a key read cold twice is promoted), 10 ms
 * apart, until a round promotes nothing; fail after SETTLE_ROUNDS rounds. Every get must find
 * its key. */
static void
test_budget_reads_alone_settle(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("budget-settle");
    htkv_config c;
    tu_config(&c, dir, HTKV_SYNC_NEVER);
    c.shard_count = 1;
    c.memory_budget_bytes = SETTLE_KEYS * 64 / 2;
    htkv_db *db = tu_open(&c);
    edge_load(db, 's', SETTLE_KEYS);
    char k[32], v[128];
    uint64_t before = tu_stats(db).promotions;
    int round = 0;
    for (; round < SETTLE_ROUNDS; round++) {
        for (unsigned pass = 0; pass < 2; pass++) {
            for (unsigned i = 0; i < SETTLE_HOT; i++) {
                snprintf(k, sizeof(k), "s%09u", i);
                size_t vl = 0;
                assert_int_equal(htkv_get(db, k, strlen(k), v, sizeof(v), &vl), 0);
                assert_int_equal(vl, 100);
            }
        }
        uint64_t now = tu_stats(db).promotions;
        if (round > 0 && now == before) {
            break;
        }
        before = now;
        usleep(10000);
    }
    struct htkv_stats st = tu_stats(db);
    printf("reads_alone_settle: %d rounds, %llu promotions, %llu evictions, %llu hot keys\n", round,
           (unsigned long long)st.promotions, (unsigned long long)st.evictions,
           (unsigned long long)st.hot_keys);
    assert_true(round < SETTLE_ROUNDS);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

#define RESCUE_KEYS 20000u
#define RESCUE_READERS 2

static void *
rescue_scanner(void *arg)
{
    struct edge *e = arg;
    while (!atomic_load(&e->stop)) {
        htkv_iter *it;
        assert_int_equal(htkv_get_prefix(e->db, "r", 1, &it), 0);
        int rc;
        unsigned n = edge_count(it, &rc);
        if (rc != 0 || n != e->nkeys) {
            fprintf(stderr, "prefix scan while key indexes are damaged: rc %d, %u of %u keys\n", rc,
                    n, e->nkeys);
            atomic_fetch_add(&e->misses, 1);
        }
    }
    return NULL;
}

/* Flip a byte in the second half of every key index file of @p dir (their pages). */
static void
rescue_damage(const char *dir, uint64_t *rng)
{
    static char paths[512][4096];
    size_t n = tu_shard_files(dir, ".kix", paths, 512);
    for (size_t i = 0; i < n && i < 512; i++) {
        long long size = tu_file_size(paths[i]);
        if (size > 8192) {
            long long off = size / 2 + (long long)(tu_rand(rng) % (unsigned long long)(size / 2));
            assert_int_equal(tu_flip_bit(paths[i], off, (int)(tu_rand(rng) % 8)), 0);
        }
    }
}

/* Goal: a key index page damaged while readers, a scanner and a writer run makes no read fail
 * and none miss: the shard reads the segment's records instead, and writes a new key index.
 * Method: 20,000 keys under a budget of a tenth of their index, readers and a prefix scanner of
 * those keys, a writer of other keys; every 20 ms a byte flipped in the pages of each key index
 * file, 25 times. */
static void
test_budget_rescue_under_readers(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("budget-rescue");
    htkv_config c;
    edge_config(&c, dir, 4, RESCUE_KEYS * 64 / 10);
    struct edge e = { .db = tu_open(&c), .nkeys = RESCUE_KEYS, .prefix = 'r' };
    edge_load(e.db, 'r', RESCUE_KEYS);
    uint64_t rng = tu_seed("budget_rescue_under_readers");
    pthread_t t[RESCUE_READERS + 2];
    for (int i = 0; i < RESCUE_READERS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, edge_reader, &e), 0);
    }
    assert_int_equal(pthread_create(&t[RESCUE_READERS], NULL, rescue_scanner, &e), 0);
    assert_int_equal(pthread_create(&t[RESCUE_READERS + 1], NULL, edge_writer, &e), 0);
    for (int r = 0; r < 25; r++) {
        rescue_damage(dir, &rng);
        usleep(20000);
    }
    atomic_store(&e.stop, 1);
    for (int i = 0; i < RESCUE_READERS + 2; i++) {
        pthread_join(t[i], NULL);
    }
    fprintf(stderr, "[rescue_under_readers] %ld gets, %ld failed or missed\n",
            atomic_load(&e.reads), atomic_load(&e.misses));
    assert_int_equal(atomic_load(&e.misses), 0);
    assert_true(tu_stats(e.db).cold_keys > 0);
    assert_int_equal(htkv_close(e.db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_first_eviction_under_a_scan),
        cmocka_unit_test(test_budget_gets_during_restores),
        cmocka_unit_test(test_budget_reads_alone_settle),
        cmocka_unit_test(test_budget_rescue_under_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
