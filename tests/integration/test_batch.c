/*
 * test_batch.c - batches: all or nothing across a crash cut anywhere in any shard, conditional
 * batches (htkv_batch_check), the batch version, and repeated keys.
 */
#include "tests/support/testutil.h"

#include <errno.h>
#include <unistd.h>

#include "engine/internal.h"

static uint64_t
version_of(htkv_db *db, const char *key)
{
    uint64_t v = 0;
    size_t n = 0;
    char buf[256];
    int rc = htkv_get_version(db, key, strlen(key), buf, sizeof(buf), &n, &v);
    assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
    return v;
}

/* ---- atomicity under a cut ------------------------------------------------------------------ */

#define NBASE 40
#define NOLD 8 /* existing keys the batch overwrites */
#define NNEW 4 /* keys the batch creates */

/* One shard's part of the batch on disk: from its BEGIN to the end of its COMMIT. */
struct part {
    char seg[4096];
    long long begin;
    long long end;
};

static void
key_name(char *buf, const char *prefix, int i)
{
    snprintf(buf, 32, "%s-%02d", prefix, i);
}

/* Check the store holds the state before the batch (@p applied false) or after it. */
static void
batch_state_check(htkv_db *db, bool applied, uint64_t seed)
{
    char key[32];
    unsigned char val[64];
    for (int i = 0; i < NBASE; i++) {
        key_name(key, "base", i);
        tu_fill(val, 20 + (size_t)i % 30, seed + (uint64_t)i);
        if (i == 3 && applied) {
            tu_expect(db, key, strlen(key), NULL, 0); /* the batch deletes base-03 */
        } else {
            tu_expect(db, key, strlen(key), val, 20 + (size_t)i % 30);
        }
    }
    for (int i = 0; i < NOLD; i++) {
        key_name(key, "old", i);
        tu_fill(val, 16, seed + (applied ? 1000u : 500u) + (uint64_t)i);
        tu_expect(db, key, strlen(key), val, 16);
    }
    for (int i = 0; i < NNEW; i++) {
        key_name(key, "new", i);
        tu_fill(val, 12, seed + 2000u + (uint64_t)i);
        tu_expect(db, key, strlen(key), applied ? val : NULL, 12);
    }
}

/* Find the part of batch @p version in each shard's active segment. Returns the count. */
static size_t
batch_parts(const char *dir, unsigned shards, uint64_t version, struct part *parts)
{
    size_t n = 0;
    char(*segs)[4096] = malloc(64 * 4096);
    struct tu_rec *recs = malloc(4096 * sizeof(*recs));
    assert_non_null(segs);
    assert_non_null(recs);
    for (unsigned s = 0; s < shards; s++) {
        size_t ns = tu_shard_segments(dir, s, segs, 64);
        if (ns == 0) {
            continue;
        }
        size_t nr = tu_seg_scan(segs[ns - 1], recs, 4096);
        long long begin = -1, end = -1;
        for (size_t i = 0; i < nr; i++) {
            if (recs[i].version != version) {
                continue;
            }
            if (recs[i].type == 3) { /* REC_BATCH_BEGIN */
                begin = recs[i].off;
            } else if (recs[i].type == 4) { /* REC_BATCH_COMMIT */
                end = recs[i].off + recs[i].size;
                assert_int_equal(i, nr - 1); /* the batch is the last write of the shard */
            }
        }
        if (begin >= 0) {
            assert_true(end > begin);
            strcpy(parts[n].seg, segs[ns - 1]);
            parts[n].begin = begin;
            parts[n].end = end;
            n++;
        }
    }
    free(recs);
    free(segs);
    return n;
}

/* Goal: a batch spanning several shards, cut at any byte of any of its parts (the other parts
 * whole), is all or nothing after reopen: before its COMMIT's last byte, none of it; at the
 * end, all of it; and the outcome stays the same across a write and another reopen. Method:
 * base keys; a batch that overwrites 8 keys, creates 4, deletes 1, spread over 4 shards and
 * written last; for every part and every offset from its BEGIN to its COMMIT's end, on a copy:
 * truncate that shard's segment there, open, check (every 4th cut: write, reopen, check). */
static void
test_batch_cut_anywhere_is_all_or_nothing(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_batch_cut_anywhere_is_all_or_nothing");
    char *dir = tu_tmpdir("batch-cut");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    char key[32];
    unsigned char val[64];
    for (int i = 0; i < NBASE; i++) {
        key_name(key, "base", i);
        tu_fill(val, 20 + (size_t)i % 30, seed + (uint64_t)i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, 20 + (size_t)i % 30), 0);
    }
    for (int i = 0; i < NOLD; i++) {
        key_name(key, "old", i);
        tu_fill(val, 16, seed + 500u + (uint64_t)i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, 16), 0);
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < NOLD; i++) {
        key_name(key, "old", i);
        tu_fill(val, 16, seed + 1000u + (uint64_t)i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), val, 16), 0);
    }
    for (int i = 0; i < NNEW; i++) {
        key_name(key, "new", i);
        tu_fill(val, 12, seed + 2000u + (uint64_t)i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), val, 12), 0);
    }
    key_name(key, "base", 3);
    assert_int_equal(htkv_batch_delete(b, key, strlen(key)), 0);
    assert_int_equal(htkv_write(db, b), 0);
    uint64_t bv = htkv_batch_version(b);
    htkv_batch_destroy(b);
    batch_state_check(db, true, seed);
    tu_close_as_crash(db); /* the cuts below model a crash */

    struct part parts[8];
    size_t np = batch_parts(dir, cfg.shard_count, bv, parts);
    assert_true(np >= 2); /* 13 keys over 4 shards */
    int cuts = 0;
    for (size_t p = 0; p < np; p++) {
        const char *rel = parts[p].seg + strlen(dir);
        for (long long cut = parts[p].begin; cut <= parts[p].end; cut++) {
            bool applied = cut == parts[p].end;
            tu_context("seed %llu: part %zu of %zu (%s), cut at %lld of [%lld, %lld]",
                       (unsigned long long)seed, p, np, rel, cut, parts[p].begin, parts[p].end);
            char *work = tu_tmpdir("batch-cut-work");
            tu_copy_store(dir, work);
            char wseg[8192];
            snprintf(wseg, sizeof(wseg), "%s%s", work, rel);
            assert_int_equal(tu_truncate(wseg, cut), 0);
            htkv_config wc = cfg;
            wc.data_dir = work;
            db = tu_open(&wc);
            batch_state_check(db, applied, seed);
            /* Write and reopen once more for every 4th cut and at both ends of the part. */
            if (cut % 4 == 0 || cut == parts[p].begin || cut >= parts[p].end - 1) {
                assert_int_equal(htkv_put(db, "later", 5, "L", 1), 0);
                assert_int_equal(htkv_close(db), 0);
                db = tu_open(&wc);
                batch_state_check(db, applied, seed);
                tu_expect(db, "later", 5, "L", 1);
            }
            assert_int_equal(htkv_close(db), 0);
            tu_rmrf(work);
            free(work);
            cuts++;
        }
    }
    assert_true(cuts > 200);
    tu_rmrf(dir);
    free(dir);
}

/* Write one batch of keys k-00..k-15 (16-byte values from @p seed) over several shards into a
 * fresh store, close, and find its parts (at least 2) in @p parts. Returns its version. */
static uint64_t
write_cut_candidate(const htkv_config *cfg, uint64_t seed, struct part *parts)
{
    htkv_db *db = tu_open(cfg);
    char key[32];
    unsigned char val[16];
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < 16; i++) {
        key_name(key, "k", i);
        tu_fill(val, 16, seed + (uint64_t)i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), val, 16), 0);
    }
    assert_int_equal(htkv_write(db, b), 0);
    uint64_t bv = htkv_batch_version(b);
    htkv_batch_destroy(b);
    tu_close_as_crash(db); /* the cuts below model a crash */
    assert_true(batch_parts(cfg->data_dir, cfg->shard_count, bv, parts) >= 2);
    return bv;
}

/* Goal: a cut batch whose other parts survived is not revived by later history: the shards
 * holding its committed parts take new writes to the same keys, and those win; reopening again
 * brings back neither the batch nor anything older. Method: cut one part at its BEGIN; reopen;
 * overwrite some batch keys and delete others in their shards; reopen twice; check. */
static void
test_batch_cut_part_stays_dead_after_more_writes(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_batch_cut_part_stays_dead_after_more_writes");
    char *dir = tu_tmpdir("batch-dead");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    struct part parts[8];
    write_cut_candidate(&cfg, seed, parts);
    htkv_db *db;
    char key[32];
    assert_int_equal(tu_truncate(parts[0].seg, parts[0].begin), 0);
    db = tu_open(&cfg);
    for (int i = 0; i < 16; i++) {
        key_name(key, "k", i);
        tu_expect(db, key, strlen(key), NULL, 0);
    }
    for (int i = 0; i < 16; i += 2) {
        key_name(key, "k", i);
        assert_int_equal(htkv_put(db, key, strlen(key), "new", 3), 0);
    }
    for (int i = 1; i < 16; i += 4) {
        key_name(key, "k", i);
        assert_int_equal(htkv_delete(db, key, strlen(key)), HTKV_ENOTFOUND);
    }
    assert_int_equal(htkv_close(db), 0);
    for (int round = 0; round < 2; round++) {
        db = tu_open(&cfg);
        for (int i = 0; i < 16; i++) {
            key_name(key, "k", i);
            tu_expect(db, key, strlen(key), i % 2 == 0 ? "new" : NULL, 3);
        }
        assert_int_equal(tu_stats(db).live_keys, 8);
        assert_int_equal(htkv_close(db), 0);
    }
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a batch that recovery found incomplete stays unapplied after a compaction raises the
 * batch floor above its version while its surviving parts are still on disk (recovery treats a
 * batch at or below the floor as complete, so the first recovery's verdict must be remembered).
 * Method: a batch over 4 shards; cut one part at its BEGIN; reopen with background compaction
 * and overwrite a key of the cut shard until a pass has dropped a segment (the fence raises the
 * floor; the other parts sit in active segments, which a background pass never takes); reopen
 * twice: only the overwritten key exists. */
static void
test_batch_cut_part_stays_dead_after_floor_rises(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_batch_cut_part_stays_dead_after_floor_rises");
    char *dir = tu_tmpdir("batch-floor");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    struct part parts[8];
    uint64_t bv = write_cut_candidate(&cfg, seed, parts);
    htkv_db *db;
    char key[32];
    unsigned char val[128];
    /* A key of the part that is cut: it lives in that shard. */
    struct tu_rec *recs = malloc(4096 * sizeof(*recs));
    assert_non_null(recs);
    size_t nr = tu_seg_scan(parts[0].seg, recs, 4096);
    char gkey[32] = "";
    for (size_t i = 0; i < nr && gkey[0] == '\0'; i++) {
        if (recs[i].version == bv && recs[i].type == 1 && recs[i].key_len < sizeof(gkey)) {
            memcpy(gkey, recs[i].key, recs[i].key_len);
            gkey[recs[i].key_len] = '\0';
        }
    }
    free(recs);
    assert_true(gkey[0] != '\0');
    assert_int_equal(tu_truncate(parts[0].seg, parts[0].begin), 0);

    cfg.compaction_interval_ms = 5;
    cfg.compaction_min_garbage_ratio = 0.5;
    db = tu_open(&cfg);
    for (int i = 0; i < 16; i++) {
        key_name(key, "k", i);
        tu_expect(db, key, strlen(key), NULL, 0);
    }
    /* Fill the cut shard with garbage until a background pass has dropped a segment. */
    for (int round = 0; tu_stats(db).compacted_segments == 0; round++) {
        assert_true(round < 20000); /* about 10 s */
        for (int j = 0; j < 1000; j++) {
            tu_fill(val, 100, seed + 5000u + (uint64_t)j);
            assert_int_equal(htkv_put(db, gkey, strlen(gkey), val, 100), 0);
        }
        if (round > 0) {
            usleep(500);
        }
    }
    assert_int_equal(htkv_close(db), 0);
    cfg.compaction_interval_ms = 0;
    for (int round = 0; round < 2; round++) {
        db = tu_open(&cfg);
        for (int i = 0; i < 16; i++) {
            key_name(key, "k", i);
            if (strcmp(key, gkey) == 0) {
                tu_fill(val, 100, seed + 5000u + 999u);
                tu_expect(db, key, strlen(key), val, 100);
            } else {
                tu_expect(db, key, strlen(key), NULL, 0);
            }
        }
        assert_int_equal(tu_stats(db).live_keys, 1);
        assert_int_equal(htkv_close(db), 0);
    }
    tu_rmrf(dir);
    free(dir);
}

/* ---- conditions ----------------------------------------------------------------------------- */

/* Goal: a conditional batch commits when every check holds (version equal; 0 = absent, also
 * after a delete) and otherwise fails with HTKV_ECONFLICT writing nothing at all, in any shard,
 * also across reopen. Method: checks on present, absent and deleted keys, right and wrong
 * versions, in batches spanning shards; compare stats and values before and after. */
static void
test_batch_conditional_checks(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("batch-check");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "k1", 2, "one", 3), 0);
    assert_int_equal(htkv_put(db, "gone", 4, "x", 1), 0);
    assert_int_equal(htkv_delete(db, "gone", 4), 0);
    uint64_t v1 = version_of(db, "k1");
    assert_true(v1 > 0);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);

    /* Holds: k1 at v1, "absent" absent, "gone" deleted. */
    assert_int_equal(htkv_batch_check(b, "k1", 2, v1), 0);
    assert_int_equal(htkv_batch_check(b, "absent", 6, 0), 0);
    assert_int_equal(htkv_batch_check(b, "gone", 4, 0), 0);
    char key[32];
    for (int i = 0; i < 10; i++) {
        key_name(key, "c", i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), "ok", 2), 0);
    }
    assert_int_equal(htkv_batch_count(b), 10);
    assert_int_equal(htkv_write(db, b), 0);
    uint64_t bv = htkv_batch_version(b);
    assert_true(bv > v1);
    assert_int_equal(version_of(db, "k1"), v1); /* checked, not written */
    for (int i = 0; i < 10; i++) {
        key_name(key, "c", i);
        tu_expect(db, key, strlen(key), "ok", 2);
        assert_int_equal(version_of(db, key), bv);
    }

    /* Each of these checks fails; the batch around it must write nothing anywhere. */
    struct {
        const char *key;
        uint64_t version;
    } fails[] = {
        { "k1", v1 + 1 }, { "k1", v1 - 1 }, { "k1", 0 },    { "absent", 1 },
        { "absent", bv }, { "gone", v1 },   { "c-00", v1 }, { "c-05", 0 },
    };
    struct htkv_stats before = tu_stats(db);
    for (size_t f = 0; f < sizeof(fails) / sizeof(fails[0]); f++) {
        htkv_batch_clear(b);
        assert_int_equal(htkv_batch_count(b), 0);
        assert_int_equal(htkv_batch_check(b, "k1", 2, v1), 0); /* one that holds */
        for (int i = 0; i < 10; i++) {
            key_name(key, "c", i);
            assert_int_equal(htkv_batch_put(b, key, strlen(key), "bad", 3), 0);
        }
        assert_int_equal(htkv_batch_delete(b, "k1", 2), 0);
        assert_int_equal(htkv_batch_put(b, "fresh", 5, "bad", 3), 0);
        assert_int_equal(htkv_batch_check(b, fails[f].key, strlen(fails[f].key), fails[f].version),
                         0);
        assert_int_equal(htkv_write(db, b), HTKV_ECONFLICT);
        assert_int_equal(htkv_batch_version(b), 0);
        struct htkv_stats after = tu_stats(db);
        assert_int_equal(after.last_version, before.last_version);
        assert_int_equal(after.data_bytes, before.data_bytes);
        assert_int_equal(after.live_keys, before.live_keys);
        assert_int_equal(after.puts, before.puts);
        assert_int_equal(after.deletes, before.deletes);
        assert_int_equal(after.batches, before.batches);
        tu_expect(db, "k1", 2, "one", 3);
        tu_expect(db, "fresh", 5, NULL, 0);
        for (int i = 0; i < 10; i++) {
            key_name(key, "c", i);
            tu_expect(db, key, strlen(key), "ok", 2);
        }
    }

    /* Conditions only: holds -> 0 and nothing written; fails -> HTKV_ECONFLICT. */
    htkv_batch_clear(b);
    assert_int_equal(htkv_batch_check(b, "k1", 2, v1), 0);
    assert_int_equal(htkv_batch_check(b, "c-03", 4, bv), 0);
    assert_int_equal(htkv_write(db, b), 0);
    assert_int_equal(tu_stats(db).last_version, before.last_version);
    assert_int_equal(tu_stats(db).data_bytes, before.data_bytes);
    assert_int_equal(htkv_batch_check(b, "c-04", 4, bv + 1), 0);
    assert_int_equal(htkv_write(db, b), HTKV_ECONFLICT);
    /* An empty batch writes nothing. */
    htkv_batch_clear(b);
    assert_int_equal(htkv_write(db, b), 0);
    assert_int_equal(tu_stats(db).last_version, before.last_version);

    /* A check against the version a batch wrote holds; the next write moves it on. */
    htkv_batch_clear(b);
    assert_int_equal(htkv_batch_check(b, "c-07", 4, bv), 0);
    assert_int_equal(htkv_batch_put(b, "c-07", 4, "v2", 2), 0);
    assert_int_equal(htkv_write(db, b), 0);
    uint64_t bv2 = htkv_batch_version(b);
    assert_true(bv2 > bv);
    assert_int_equal(htkv_write(db, b), HTKV_ECONFLICT); /* c-07 is at bv2 now */

    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "k1", 2, "one", 3);
    assert_int_equal(version_of(db, "k1"), v1);
    tu_expect(db, "fresh", 5, NULL, 0);
    tu_expect(db, "c-07", 4, "v2", 2);
    assert_int_equal(version_of(db, "c-07"), bv2);
    for (int i = 0; i < 10; i++) {
        key_name(key, "c", i);
        if (i != 7) {
            tu_expect(db, key, strlen(key), "ok", 2);
            assert_int_equal(version_of(db, key), bv);
        }
    }
    assert_int_equal(tu_stats(db).last_version, bv2);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: every operation of a batch gets the batch's one version, reported by
 * htkv_batch_version (0 before any successful write, kept after a failed one), and the
 * store's last version is that version; writing the same batch again gives a new version.
 * Method: a 30-key batch; compare get_version of every key; rewrite it; fail it. */
static void
test_batch_version_is_shared_by_all_operations(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("batch-version");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "x", 1, "x", 1), 0);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_version(b), 0);
    assert_int_equal(htkv_batch_count(NULL), 0);
    assert_int_equal(htkv_batch_version(NULL), 0);
    char key[32];
    for (int i = 0; i < 30; i++) {
        key_name(key, "v", i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), key, strlen(key)), 0);
    }
    assert_int_equal(htkv_batch_delete(b, "x", 1), 0);
    assert_int_equal(htkv_batch_count(b), 31);
    assert_int_equal(htkv_write(db, b), 0);
    uint64_t v = htkv_batch_version(b);
    assert_int_equal(v, 2);
    assert_int_equal(tu_stats(db).last_version, v);
    for (int i = 0; i < 30; i++) {
        key_name(key, "v", i);
        assert_int_equal(version_of(db, key), v);
    }
    tu_expect(db, "x", 1, NULL, 0);
    assert_int_equal(htkv_write(db, b), 0); /* the batch is unchanged and may be written again */
    uint64_t v2 = htkv_batch_version(b);
    assert_int_equal(v2, v + 1);
    assert_int_equal(htkv_batch_check(b, "v-00", 4, v), 0); /* stale now */
    assert_int_equal(htkv_write(db, b), HTKV_ECONFLICT);
    assert_int_equal(htkv_batch_version(b), v2); /* the last successful write's */
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    for (int i = 0; i < 30; i++) {
        key_name(key, "v", i);
        assert_int_equal(version_of(db, key), v2);
        tu_expect(db, key, strlen(key), key, strlen(key));
    }
    assert_int_equal(tu_stats(db).last_version, v2);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: operations on one key inside a batch apply in order (the last wins), in memory and
 * after reopen. Method: put/put, put/delete, delete/put, put/put/delete/put on several keys in
 * one batch over several shards; check; reopen; check. */
static void
test_batch_same_key_twice_last_wins(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("batch-twice");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_ALWAYS);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "pd", 2, "old", 3), 0);
    assert_int_equal(htkv_put(db, "dp", 2, "old", 3), 0);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_put(b, "pp", 2, "first", 5), 0);
    assert_int_equal(htkv_batch_put(b, "pd", 2, "mid", 3), 0);
    assert_int_equal(htkv_batch_delete(b, "dp", 2), 0);
    assert_int_equal(htkv_batch_put(b, "pp", 2, "second", 6), 0);
    assert_int_equal(htkv_batch_delete(b, "pd", 2), 0);
    assert_int_equal(htkv_batch_put(b, "dp", 2, "back", 4), 0);
    assert_int_equal(htkv_batch_put(b, "many", 4, "1", 1), 0);
    assert_int_equal(htkv_batch_put(b, "many", 4, "22", 2), 0);
    assert_int_equal(htkv_batch_delete(b, "many", 4), 0);
    assert_int_equal(htkv_batch_put(b, "many", 4, "4444", 4), 0);
    assert_int_equal(htkv_batch_put(b, "empty", 5, "x", 1), 0);
    assert_int_equal(htkv_batch_put(b, "empty", 5, NULL, 0), 0);
    assert_int_equal(htkv_write(db, b), 0);
    htkv_batch_destroy(b);
    for (int round = 0; round < 3; round++) {
        tu_expect(db, "pp", 2, "second", 6);
        tu_expect(db, "pd", 2, NULL, 0);
        tu_expect(db, "dp", 2, "back", 4);
        tu_expect(db, "many", 4, "4444", 4);
        tu_expect(db, "empty", 5, "", 0);
        assert_int_equal(tu_stats(db).live_keys, 4);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* ---- no memory to retire what a batch replaces ----------------------------------------------- */

/* Fails the allocations that grow a shard's limbo list of retired objects: 256 items of 24 bytes
 * doubled, so 6 KiB times a power of two (no other allocation of a batch has such a size). */
static bool
fail_limbo_growth(size_t n)
{
    size_t m = n / 6144;
    return n % 6144 == 0 && m > 0 && (m & (m - 1)) == 0;
}

/* Goal: a batch whose replaced versions find no room to be retired fails with -ENOMEM and
 * changes nothing; it neither waits for the readers' sections (the writer is inside one itself:
 * such a wait never ended) nor loses a version. Method: one shard, 5,000 keys; a batch of 4,096
 * overwrites with the limbo's growth failing; check every value; then again with memory. */
static void
test_batch_without_memory_to_retire_changes_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("batch-nomem");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.shard_count = 1;
    htkv_db *db = tu_open(&cfg);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        int kl = snprintf(k, sizeof(k), "nomem/%05d", i);
        assert_int_equal(htkv_put(db, k, (size_t)kl, "old", 3), 0);
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < 4096; i++) {
        int kl = snprintf(k, sizeof(k), "nomem/%05d", i);
        assert_int_equal(htkv_batch_put(b, k, (size_t)kl, "new", 3), 0);
    }
    for (int round = 0; round < 2; round++) {
        htkv_mem_fail_hook = round == 0 ? fail_limbo_growth : NULL;
        int rc = htkv_write(db, b);
        htkv_mem_fail_hook = NULL;
        assert_int_equal(rc, round == 0 ? -ENOMEM : 0);
        const char *want = round == 0 ? "old" : "new";
        for (int i = 0; i < 5000; i++) {
            int kl = snprintf(k, sizeof(k), "nomem/%05d", i);
            tu_expect(db, k, (size_t)kl, i < 4096 ? want : "old", 3);
        }
    }
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    for (int i = 0; i < 5000; i++) {
        int kl = snprintf(k, sizeof(k), "nomem/%05d", i);
        tu_expect(db, k, (size_t)kl, i < 4096 ? "new" : "old", 3);
    }
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_cut_anywhere_is_all_or_nothing),
        cmocka_unit_test(test_batch_cut_part_stays_dead_after_more_writes),
        cmocka_unit_test(test_batch_cut_part_stays_dead_after_floor_rises),
        cmocka_unit_test(test_batch_conditional_checks),
        cmocka_unit_test(test_batch_version_is_shared_by_all_operations),
        cmocka_unit_test(test_batch_same_key_twice_last_wins),
        cmocka_unit_test(test_batch_without_memory_to_retire_changes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
