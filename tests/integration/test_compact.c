/*
 * test_compact.c - compaction: live data survives, garbage and tombstones go, batches that span
 * shards stay whole, views keep reading what they read, and a seeded workload with compactions
 * and reopens matches a trivially correct model.
 */
#include <dirent.h>
#include <errno.h>
#include <time.h>

#include "tests/support/testutil.h"

#define NKEYS 600

/* The model: value tag per key (0 = absent). Values are tu_fill(len, tag). */
struct model {
    uint64_t tag[NKEYS];
    uint32_t len[NKEYS];
};

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "key-%05u", i);
}

static void
model_check(htkv_db *db, const struct model *m)
{
    unsigned char val[2048];
    char key[32];
    uint64_t live = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t kl = key_of(i, key);
        if (m->tag[i] == 0) {
            tu_context("key %u absent", i);
            tu_expect(db, key, kl, NULL, 0);
        } else {
            tu_context("key %u tag %llu", i, (unsigned long long)m->tag[i]);
            tu_fill(val, m->len[i], m->tag[i]);
            tu_expect(db, key, kl, val, m->len[i]);
            live++;
        }
    }
    assert_int_equal(tu_stats(db).live_keys, live);
    /* The ordered index agrees too. */
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(db, "key-", 4, &it), 0);
    uint64_t n = 0;
    int rc;
    while ((rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
        n++;
    }
    assert_int_equal(rc, 0);
    htkv_iter_destroy(it);
    assert_int_equal(n, live);
}

static void
put_key(htkv_db *db, struct model *m, unsigned i, uint64_t tag, uint32_t len)
{
    unsigned char val[2048];
    char key[32];
    size_t kl = key_of(i, key);
    tu_fill(val, len, tag);
    assert_int_equal(htkv_put(db, key, kl, val, len), 0);
    m->tag[i] = tag;
    m->len[i] = len;
}

/* Goal: a seeded mix of puts, deletes and batches that span shards, with full compactions and
 * reopens in between, always reads as the model; compaction removes segments and bytes.
 * Method: 64 KiB segments, 4 shards; 40 rounds of 300 operations; compact every 4th round,
 * reopen every 10th; compare everything after each compaction and reopen. */
static void
test_compact_random_workload_matches_model(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("compact-model");
    char *dir = tu_tmpdir("compact-model");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    static struct model m;
    memset(&m, 0, sizeof(m));
    uint64_t tag = 1, dropped = 0;
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    unsigned char val[2048];
    char key[32];
    for (int round = 0; round < 40; round++) {
        for (int op = 0; op < 300; op++) {
            uint64_t r = tu_rand(&seed);
            unsigned i = (unsigned)(r % NKEYS);
            uint32_t len = (uint32_t)((r >> 20) % 300);
            switch ((r >> 40) % 8) {
            case 0:
            case 1: {
                size_t kl = key_of(i, key);
                int rc = htkv_delete(db, key, kl);
                assert_int_equal(rc, m.tag[i] ? 0 : HTKV_ENOTFOUND);
                m.tag[i] = 0;
                break;
            }
            case 2: {
                /* A batch over 6 keys: spans shards almost surely. */
                htkv_batch_clear(b);
                unsigned ids[6];
                uint64_t tags[6];
                for (int k = 0; k < 6; k++) {
                    ids[k] = (unsigned)((i + (unsigned)k * 97u) % NKEYS);
                    tags[k] = tag++;
                    size_t kl = key_of(ids[k], key);
                    if (k == 5) {
                        assert_int_equal(htkv_batch_delete(b, key, kl), 0);
                    } else {
                        tu_fill(val, len, tags[k]);
                        assert_int_equal(htkv_batch_put(b, key, kl, val, len), 0);
                    }
                }
                assert_int_equal(htkv_write(db, b), 0);
                for (int k = 0; k < 6; k++) {
                    m.tag[ids[k]] = k == 5 ? 0 : tags[k];
                    m.len[ids[k]] = len;
                }
                break;
            }
            default:
                put_key(db, &m, i, tag++, len);
            }
        }
        if (round % 4 == 3) {
            struct htkv_stats before = tu_stats(db);
            assert_int_equal(htkv_compact_now(db), 0);
            struct htkv_stats after = tu_stats(db);
            tu_context("round %d: compacted", round);
            assert_true(after.dead_bytes < before.dead_bytes || before.dead_bytes == 0);
            assert_true(after.compacted_segments > before.compacted_segments);
            dropped = after.compacted_segments;
            model_check(db, &m);
        }
        if (round % 10 == 9) {
            assert_int_equal(htkv_close(db), 0);
            db = tu_open(&cfg);
            tu_context("round %d: reopened", round);
            model_check(db, &m);
        }
    }
    htkv_batch_destroy(b);
    (void)dropped;
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: after deleting every key, a full compaction leaves no tombstone in memory or on disk,
 * and the keys stay deleted after reopen (nothing older resurrects). Method: 2,000 keys over
 * many 64 KiB segments, overwritten once, all deleted; compact; check; reopen; check. */
static void
test_compact_drops_tombstones_without_resurrection(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("compact-tomb");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (unsigned i = 0; i < NKEYS; i++) {
        put_key(db, &m, i, i + 1, 100);
    }
    for (unsigned i = 0; i < NKEYS; i++) {
        put_key(db, &m, i, i + 10001, 120);
    }
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
        m.tag[i] = 0;
    }
    assert_int_equal(tu_stats(db).tombstones, NKEYS);
    assert_int_equal(htkv_compact_now(db), 0);
    struct htkv_stats st = tu_stats(db);
    assert_int_equal(st.tombstones, 0);
    assert_int_equal(st.tombstones_dropped, NKEYS);
    assert_int_equal(st.live_bytes, 0);
    model_check(db, &m);
    /* Deleting again finds nothing; putting again works. */
    assert_int_equal(htkv_delete(db, key, key_of(3, key)), HTKV_ENOTFOUND);
    put_key(db, &m, 3, 777, 10);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &m);
    assert_int_equal(tu_stats(db).tombstones, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: compaction never splits a batch that spans shards: after the segments holding some of
 * its parts are compacted away, every part still applies after reopen. Method: batches of 8
 * keys (all shards); overwrite half of the keys of each later (garbage in the batches'
 * segments); compact; reopen; every key holds its newest value. */
static void
test_compact_keeps_cross_shard_batches_whole(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("compact-batch");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    static struct model m;
    memset(&m, 0, sizeof(m));
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    unsigned char val[256];
    char key[32];
    uint64_t tag = 1;
    for (unsigned n = 0; n < NKEYS / 8; n++) {
        htkv_batch_clear(b);
        for (unsigned k = 0; k < 8; k++) {
            unsigned i = n * 8 + k;
            tu_fill(val, 200, tag);
            assert_int_equal(htkv_batch_put(b, key, key_of(i, key), val, 200), 0);
            m.tag[i] = tag++;
            m.len[i] = 200;
        }
        assert_int_equal(htkv_write(db, b), 0);
    }
    for (unsigned i = 0; i < NKEYS; i += 2) {
        put_key(db, &m, i, tag++, 150);
    }
    assert_int_equal(htkv_compact_now(db), 0);
    assert_true(tu_stats(db).compacted_segments > 0);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &m);
    /* Once more: the copies themselves compacted after more overwrites. */
    for (unsigned i = 1; i < NKEYS; i += 4) {
        put_key(db, &m, i, tag++, 90);
    }
    assert_int_equal(htkv_compact_now(db), 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &m);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a view (and an iterator) opened before a compaction reads exactly what it read before,
 * although every key was overwritten or deleted and the segments holding the old values were
 * dropped; after closing it, the store reads the new values. Method: fill, open a view and an
 * iterator, overwrite/delete all, compact, read through the view, close, compare. */
static void
test_compact_leaves_open_views_unchanged(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("compact-view");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    static struct model old, now;
    memset(&old, 0, sizeof(old));
    memset(&now, 0, sizeof(now));
    for (unsigned i = 0; i < NKEYS; i++) {
        put_key(db, &old, i, i + 1, 180);
    }
    htkv_view *v;
    assert_int_equal(htkv_view_open(db, &v), 0);
    htkv_iter *it;
    assert_int_equal(htkv_view_scan(v, NULL, 0, NULL, 0, &it), 0);
    const void *k0, *v0;
    size_t kl0, vl0;
    assert_int_equal(htkv_iter_next(it, &k0, &kl0, &v0, &vl0), 1);
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        if (i % 3 == 0) {
            assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
        } else {
            put_key(db, &now, i, i + 5000, 60);
        }
    }
    assert_int_equal(htkv_compact_now(db), 0);
    assert_true(tu_stats(db).compacted_segments > 0);
    /* The view still sees the old contents, the iterator still streams them. */
    unsigned char val[2048], buf[2048];
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t n = 0;
        size_t kl = key_of(i, key);
        assert_int_equal(htkv_view_get(v, key, kl, buf, sizeof(buf), &n), 0);
        tu_fill(val, 180, i + 1);
        assert_int_equal(n, 180);
        assert_memory_equal(buf, val, 180);
    }
    unsigned count = 1;
    const void *k, *vv;
    size_t kl, vl;
    while (htkv_iter_next(it, &k, &kl, &vv, &vl) == 1) {
        assert_int_equal(vl, 180);
        count++;
    }
    assert_int_equal(count, NKEYS);
    htkv_iter_destroy(it);
    htkv_view_close(v);
    model_check(db, &now);
    assert_int_equal(htkv_compact_now(db), 0);
    model_check(db, &now);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &now);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: overwriting every key ten times and compacting leaves at most 1.3x the live bytes of
 * records, and the store opens to the same contents. Method: 3,000 keys of 64 B, 10 rounds. */
static void
test_compact_reclaims_overwrites(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("compact-space");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 256u << 10;
    htkv_db *db = tu_open(&cfg);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (int r = 0; r < 10; r++) {
        for (unsigned i = 0; i < NKEYS; i++) {
            put_key(db, &m, i, (uint64_t)r * NKEYS + i + 1, 64);
        }
    }
    struct htkv_stats a = tu_stats(db);
    assert_true(a.data_bytes > 9 * a.live_bytes);
    assert_int_equal(htkv_compact_now(db), 0);
    struct htkv_stats s = tu_stats(db);
    tu_context("data %llu live %llu", (unsigned long long)s.data_bytes,
               (unsigned long long)s.live_bytes);
    assert_true(s.data_bytes * 10 <= s.live_bytes * 13);
    assert_true(s.compaction_written_bytes > 0);
    assert_true(s.compaction_read_bytes >= a.data_bytes - s.data_bytes);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

static int
count_snapshots(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        n += strncmp(de->d_name, "snapshot-", 9) == 0 && l > 5 &&
             strcmp(de->d_name + l - 5, ".snap") == 0;
    }
    closedir(d);
    return n;
}

/* Goal: with a short compaction_interval_ms the background thread compacts by itself and, with
 * emit_snapshot_after_compaction, leaves exactly one snapshot file that restores the store.
 * Method: 20 ms interval, garbage ratio 0.3; overwrite; wait up to 10 s for a dropped segment. */
static void
test_compact_background_thread_and_snapshot(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("compact-bg");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 20;
    cfg.compaction_min_garbage_ratio = 0.3;
    htkv_db *db = tu_open(&cfg);
    static struct model m;
    memset(&m, 0, sizeof(m));
    for (int r = 0; r < 6; r++) {
        for (unsigned i = 0; i < NKEYS; i++) {
            put_key(db, &m, i, (uint64_t)r * NKEYS + i + 1, 100);
        }
    }
    /* The snapshot comes after the pass that dropped segments: wait for it. */
    int waited = 0;
    while (count_snapshots(dir) == 0 && waited < 20000) {
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
        waited += 10;
    }
    assert_true(tu_stats(db).compacted_segments > 0);
    assert_true(count_snapshots(dir) >= 1);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    /* Exactly one snapshot-NNNNNN.snap remains (older ones are removed). */
    assert_int_equal(count_snapshots(dir), 1);
    db = tu_open(&cfg);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: bad calls are refused: NULL handle, a read-only store. */
static void
test_compact_bad_calls(void **state)
{
    (void)state;
    assert_int_equal(htkv_compact_now(NULL), -EINVAL);
    char *dir = tu_tmpdir("compact-ro");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "a", 1, "b", 1), 0);
    assert_int_equal(htkv_compact_now(db), 0); /* nothing to do is fine */
    assert_int_equal(htkv_close(db), 0);
    cfg.read_only = 1;
    db = tu_open(&cfg);
    assert_int_equal(htkv_compact_now(db), HTKV_EREADONLY);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact_random_workload_matches_model),
        cmocka_unit_test(test_compact_drops_tombstones_without_resurrection),
        cmocka_unit_test(test_compact_keeps_cross_shard_batches_whole),
        cmocka_unit_test(test_compact_leaves_open_views_unchanged),
        cmocka_unit_test(test_compact_reclaims_overwrites),
        cmocka_unit_test(test_compact_background_thread_and_snapshot),
        cmocka_unit_test(test_compact_bad_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
