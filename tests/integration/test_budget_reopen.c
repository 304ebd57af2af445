/*
 * test_budget_reopen.c - reopening a store under a memory budget after a clean close, which names
 * its key index files (DIR/shard-SSS/NNNNNNNNNNNN.kix) in DIR/shard-SSS/close.state so that the
 * next open takes them instead of loading every key. Written from include/htkv/htkv.h and the
 * file names, as a careless or hostile user would treat the files of a closed store.
 *
 *   takes_key_indexes: after a clean close, the open leaves most keys cold
 *     (htkv_stats.cold_keys_at_open) and reads few records, and every key reads back; then
 *     overwrites and deletes of cold keys, compactions and more clean reopens, each checked.
 *   close_state_tampered: close.state deleted, cut, bit-flipped, replaced by an earlier close's,
 *     swapped between shards or replaced by junk: every key reads back (the open loads what it
 *     cannot take).
 *   stale_key_indexes: .kix files of an earlier close put back over the files a later close
 *     named for the same segments: not taken.
 *   key_indexes_missing: some .kix files removed or cut after a clean close: their segments are
 *     read, and an older version they hold never hides a newer one in a file the open took.
 *   foreign_key_indexes: .kix files of a copy of the store that went its own way (other keys
 *     overwritten, new files written for the same segments) copied over this one's: not taken.
 *   crash_after_writes: a clean close, an open that writes (a few keys, or many), then a crash:
 *     the next open cannot take anything named by the first close, and every acknowledged write
 *     reads back.
 *   crash_without_writes: a clean close, an open that only evicts (writing key index files the
 *     close did not name), then a crash: only the named files are taken.
 *   batches_across_shards: batches whose parts lie in segments the open takes and in segments it
 *     reads: every batch stands whole, none is discarded.
 *   damaged_pages: bytes flipped in the pages of every key index file of a closed store: every
 *     key reads back (the shard reads the segment's records instead).
 *   group_commit_then_reopen: eight durable writers (HTKV_SYNC_ALWAYS, group commit) under a
 *     small budget, then a clean close and reopen, three times: a key index written while a
 *     group's records were staged but not yet published must not be named by the close.
 *   changes_skip_aborted_parts: a batch whose part in one shard a crash cut is not applied; its
 *     other parts end in segments a clean close names and the next open takes without reading:
 *     the change feed still never reports them.
 *   budget_changes: an open without a budget (every key in memory, key index files removed),
 *     then one with a budget again; a read-only open.
 *
 * Every check compares each key with a model (value or absent) and stats.live_keys with the
 * model's count. HTKV_SEED=N replays a run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <htkv/replication.h>

#include "tests/support/testutil.h"

#define NKEYS 6000u
#define VMAX 96u
#define BUDGET (32u << 10)

struct rt {
    char *dir;
    htkv_config cfg;
    htkv_db *db;
    uint64_t rng;
    uint32_t gen[NKEYS]; /* 0: absent; else the generation of its value */
};

static void
rt_key(unsigned i, char *k, size_t *kl)
{
    *kl = (size_t)snprintf(k, 32, "key-%08u", i);
}

static size_t
rt_val(unsigned i, uint32_t gen, unsigned char *v)
{
    size_t n = 8 + (size_t)((i * 7u + gen * 13u) % (VMAX - 8));
    tu_fill(v, n, ((uint64_t)i << 32) | gen);
    return n;
}

static void
rt_start(struct rt *t, const char *tag, unsigned shards)
{
    memset(t, 0, sizeof(*t));
    t->dir = tu_tmpdir(tag);
    t->rng = tu_seed(tag);
    tu_config(&t->cfg, t->dir, HTKV_SYNC_NEVER);
    t->cfg.shard_count = shards;
    t->cfg.max_segment_bytes = 64u << 10;
    t->cfg.memory_budget_bytes = BUDGET;
    t->cfg.compaction_interval_ms = 0;
    t->db = tu_open(&t->cfg);
}

static void
rt_put(struct rt *t, unsigned i)
{
    char k[32];
    size_t kl;
    unsigned char v[VMAX];
    rt_key(i, k, &kl);
    uint32_t g = (uint32_t)(tu_rand(&t->rng) % 1000000u) + 1;
    assert_int_equal(htkv_put(t->db, k, kl, v, rt_val(i, g, v)), 0);
    t->gen[i] = g;
}

static void
rt_del(struct rt *t, unsigned i)
{
    char k[32];
    size_t kl;
    rt_key(i, k, &kl);
    int rc = htkv_delete(t->db, k, kl);
    assert_int_equal(rc, t->gen[i] != 0 ? 0 : HTKV_ENOTFOUND);
    t->gen[i] = 0;
}

/* Random overwrites and deletes, @p n of them, mostly of keys written long ago (cold). */
static void
rt_churn(struct rt *t, unsigned n)
{
    for (unsigned j = 0; j < n; j++) {
        unsigned i = (unsigned)(tu_rand(&t->rng) % NKEYS);
        if (tu_rand(&t->rng) % 4 == 0) {
            rt_del(t, i);
        } else {
            rt_put(t, i);
        }
    }
}

/* Every key holds the model's value or is absent; live_keys is the model's count. */
static void
rt_check(struct rt *t, const char *when)
{
    unsigned long live = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        char k[32];
        size_t kl, vl = 0;
        unsigned char got[VMAX], want[VMAX];
        rt_key(i, k, &kl);
        int rc = htkv_get(t->db, k, kl, got, sizeof(got), &vl);
        if (t->gen[i] == 0) {
            if (rc != HTKV_ENOTFOUND) {
                fail_msg("%s: key %u is deleted, get returned %d", when, i, rc);
            }
            continue;
        }
        live++;
        size_t wl = rt_val(i, t->gen[i], want);
        if (rc != 0 || vl != wl || memcmp(got, want, wl) != 0) {
            fail_msg("%s: key %u: get returned %d (%zu bytes), want %zu bytes of generation %u",
                     when, i, rc, vl, wl, t->gen[i]);
        }
    }
    struct htkv_stats s = tu_stats(t->db);
    if (s.live_keys != live) {
        fail_msg("%s: stats.live_keys %llu, the model has %lu", when,
                 (unsigned long long)s.live_keys, live);
    }
}

static void
rt_close(struct rt *t)
{
    assert_int_equal(htkv_close(t->db), 0);
    t->db = NULL;
}

static void
rt_open(struct rt *t)
{
    t->db = tu_open(&t->cfg);
}

static void
rt_finish(struct rt *t)
{
    if (t->db != NULL) {
        rt_close(t);
    }
    tu_rmrf(t->dir);
    free(t->dir);
}

/* Fill every key, then churn so that most keys are cold and many shadow older records. */
static void
rt_fill(struct rt *t)
{
    for (unsigned i = 0; i < NKEYS; i++) {
        rt_put(t, i);
    }
    rt_churn(t, NKEYS);
}

static void
test_takes_key_indexes(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_takes", 4);
    rt_fill(&t);
    rt_check(&t, "before the first close");
    for (unsigned r = 0; r < 4; r++) {
        rt_close(&t);
        rt_open(&t);
        struct htkv_stats s = tu_stats(t.db);
        uint64_t keys = s.live_keys + s.tombstones;
        if (s.cold_keys_at_open < keys / 4 || s.recovered_records >= keys) {
            fail_msg("round %u: %llu keys left cold at open, %llu records read: the open loaded "
                     "what the close named",
                     r, (unsigned long long)s.cold_keys_at_open,
                     (unsigned long long)s.recovered_records);
        }
        rt_check(&t, "after a clean reopen");
        rt_churn(&t, 1500);
        if (r % 2 == 1) {
            assert_int_equal(htkv_compact_now(t.db), 0);
        }
        rt_check(&t, "after writes");
    }
    rt_finish(&t);
}

/* Path of @p name in shard @p s of @p dir. */
static void
shard_file(char *out, size_t cap, const char *dir, unsigned s, const char *name)
{
    snprintf(out, cap, "%s/shard-%03u/%s", dir, s, name);
}

static void
write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void
test_close_state_tampered(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_state", 3);
    rt_fill(&t);
    rt_close(&t);
    char p[4200];
    size_t old_len[3];
    unsigned char *old[3];
    for (unsigned s = 0; s < 3; s++) { /* an earlier close's states */
        shard_file(p, sizeof(p), t.dir, s, "close.state");
        old[s] = tu_read_whole(p, &old_len[s]);
        assert_non_null(old[s]);
    }
    for (unsigned r = 0; r < 8; r++) {
        rt_open(&t);
        rt_churn(&t, 600);
        rt_close(&t);
        for (unsigned s = 0; s < 3; s++) {
            shard_file(p, sizeof(p), t.dir, s, "close.state");
            long long size = tu_file_size(p);
            assert_true(size > 0);
            unsigned act = (unsigned)((tu_rand(&t.rng) + s) % 6);
            if (act == 0) {
                assert_int_equal(unlink(p), 0);
            } else if (act == 1) {
                assert_int_equal(tu_truncate(p, size - 1 - (long long)(tu_rand(&t.rng) % 60)), 0);
            } else if (act == 2) {
                long long off = (long long)(tu_rand(&t.rng) % (unsigned long long)size);
                assert_int_equal(tu_flip_bit(p, off, (int)(tu_rand(&t.rng) % 8)), 0);
            } else if (act == 3) {
                write_file(p, old[s], old_len[s]);
            } else if (act == 4) {
                write_file(p, old[(s + 1) % 3], old_len[(s + 1) % 3]);
            } else {
                unsigned char junk[200];
                tu_fill(junk, sizeof(junk), tu_rand(&t.rng));
                write_file(p, junk, (size_t)(tu_rand(&t.rng) % sizeof(junk)));
            }
        }
        rt_open(&t);
        rt_check(&t, "after tampering with close.state");
        rt_close(&t);
    }
    for (unsigned s = 0; s < 3; s++) {
        free(old[s]);
    }
    rt_finish(&t);
}

struct kept {
    size_t n;
    char path[256][4096];
    unsigned char *data[256];
    size_t len[256];
};

static void
keep_kix(const char *dir, struct kept *k)
{
    static char paths[256][4096];
    k->n = tu_shard_files(dir, ".kix", paths, 256);
    k->n = k->n < 256 ? k->n : 256;
    for (size_t i = 0; i < k->n; i++) {
        snprintf(k->path[i], sizeof(k->path[i]), "%s", paths[i]);
        k->data[i] = tu_read_whole(paths[i], &k->len[i]);
        assert_non_null(k->data[i]);
    }
}

static void
put_back_kix(const struct kept *k)
{
    for (size_t i = 0; i < k->n; i++) {
        write_file(k->path[i], k->data[i], k->len[i]);
        free(k->data[i]);
    }
}

static void
test_stale_key_indexes(void **state)
{
    (void)state;
    struct rt t;
    static struct kept k;
    rt_start(&t, "budget_reopen_stale", 2);
    rt_fill(&t);
    rt_close(&t);
    keep_kix(t.dir, &k);
    assert_true(k.n > 0);
    /* An open without a budget removes them; writes change which segments hold the newest
     * version of many keys; an open with a budget again writes new files for the same segments,
     * which a clean close names. */
    t.cfg.memory_budget_bytes = 0;
    rt_open(&t);
    for (unsigned i = 0; i < NKEYS; i += 3) {
        if (i % 2 == 0) {
            rt_del(&t, i);
        } else {
            rt_put(&t, i);
        }
    }
    rt_close(&t);
    t.cfg.memory_budget_bytes = BUDGET;
    rt_open(&t);
    rt_check(&t, "with a budget again");
    rt_close(&t);
    put_back_kix(&k); /* the earlier close's files, under the same names */
    rt_open(&t);
    rt_check(&t, "with an earlier close's key index files put back");
    rt_close(&t);
    rt_open(&t);
    rt_check(&t, "after the next clean close");
    rt_finish(&t);
}

static void
test_key_indexes_missing(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_missing", 4);
    rt_fill(&t);
    for (unsigned r = 0; r < 4; r++) {
        rt_churn(&t, 1500);
        rt_close(&t);
        static char paths[256][4096];
        size_t n = tu_shard_files(t.dir, ".kix", paths, 256);
        assert_true(n > 0);
        for (size_t i = 0; i < n && i < 256; i++) {
            unsigned act = (unsigned)(tu_rand(&t.rng) % 4);
            if (act == 0) {
                assert_int_equal(unlink(paths[i]), 0);
            } else if (act == 1) {
                assert_int_equal(tu_truncate(paths[i], tu_file_size(paths[i]) / 2), 0);
            }
        }
        rt_open(&t);
        rt_check(&t, "with key index files removed or cut");
    }
    rt_finish(&t);
}

static void
test_foreign_key_indexes(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_foreign", 2);
    rt_fill(&t);
    rt_close(&t);
    /* A copy of the store goes its own way: without a budget (its key index files go), other
     * keys overwritten, then with a budget again, so that it writes new files for the same
     * segments, which leave out the keys it overwrote. */
    char *odir = tu_tmpdir("budget_reopen_copy");
    tu_rmrf(odir);
    tu_copy_store(t.dir, odir);
    htkv_config oc = t.cfg;
    oc.data_dir = odir;
    oc.memory_budget_bytes = 0;
    htkv_db *o = tu_open(&oc);
    for (unsigned i = 0; i < NKEYS; i += 2) {
        char k[32];
        size_t kl;
        rt_key(i, k, &kl);
        assert_int_equal(htkv_put(o, k, kl, "other", 5), 0);
    }
    assert_int_equal(htkv_close(o), 0);
    oc.memory_budget_bytes = BUDGET;
    o = tu_open(&oc);
    assert_int_equal(htkv_close(o), 0);
    static char paths[256][4096];
    size_t n = tu_shard_files(odir, ".kix", paths, 256), copied = 0;
    for (size_t i = 0; i < n && i < 256; i++) {
        char to[4200];
        snprintf(to, sizeof(to), "%s%s", t.dir, paths[i] + strlen(odir));
        if (tu_file_size(to) >= 0) { /* the same segment of the same shard */
            size_t len;
            unsigned char *d = tu_read_whole(paths[i], &len);
            assert_non_null(d);
            write_file(to, d, len);
            free(d);
            copied++;
        }
    }
    assert_true(copied > 0);
    rt_open(&t);
    rt_check(&t, "with a diverged copy's key index files");
    rt_finish(&t);
    tu_rmrf(odir);
    free(odir);
}

static void
test_crash_after_writes(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_crash_w", 4);
    t.cfg.memory_budget_bytes = 256u << 10; /* active segments under half a share: a few writes
                                               seal none, so the manifest's size alone tells */
    rt_close(&t);
    rt_open(&t);
    rt_fill(&t);
    rt_close(&t);
    rt_open(&t);
    assert_true(tu_stats(t.db).cold_keys_at_open > 0);
    rt_close(&t);
    for (unsigned r = 0; r < 4; r++) {
        rt_open(&t);
        rt_churn(&t, r % 2 == 0 ? 10 : 2000); /* a few: no new segment; many */
        tu_close_as_crash(t.db); /* a killed process: the page cache keeps every write */
        t.db = NULL;
        rt_open(&t);
        struct htkv_stats s = tu_stats(t.db);
        if (s.cold_keys_at_open != 0) {
            fail_msg("round %u: %llu keys left cold after a crash: the open took key index files "
                     "of a close the store moved on from",
                     r, (unsigned long long)s.cold_keys_at_open);
        }
        rt_check(&t, "after a crash that followed writes");
        rt_close(&t);
    }
    rt_finish(&t);
}

static void
test_crash_without_writes(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_crash_r", 4);
    rt_fill(&t);
    rt_close(&t);
    /* An open with a smaller budget evicts more, and indexes what the close left in memory. */
    t.cfg.memory_budget_bytes = BUDGET / 4;
    rt_open(&t);
    rt_check(&t, "reads only");
    tu_close_as_crash(t.db);
    t.db = NULL;
    t.cfg.memory_budget_bytes = BUDGET;
    rt_open(&t);
    rt_check(&t, "after a crash of an open that only read");
    rt_churn(&t, 1000);
    rt_close(&t);
    rt_open(&t);
    rt_check(&t, "after a clean close");
    rt_finish(&t);
}

static void
test_batches_across_shards(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_batches", 4);
    rt_fill(&t);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (unsigned i = 0; i < NKEYS; i += 16) {
        htkv_batch_clear(b);
        unsigned char v[16][VMAX];
        uint32_t g[16];
        for (unsigned j = 0; j < 16 && i + j < NKEYS; j++) {
            char k[32];
            size_t kl;
            rt_key(i + j, k, &kl);
            g[j] = (uint32_t)(tu_rand(&t.rng) % 1000000u) + 1;
            assert_int_equal(htkv_batch_put(b, k, kl, v[j], rt_val(i + j, g[j], v[j])), 0);
        }
        assert_int_equal(htkv_write(t.db, b), 0);
        for (unsigned j = 0; j < 16 && i + j < NKEYS; j++) {
            t.gen[i + j] = g[j];
        }
    }
    htkv_batch_destroy(b);
    rt_close(&t);
    rt_open(&t);
    struct htkv_stats s = tu_stats(t.db);
    assert_int_equal(s.discarded_batches, 0);
    assert_true(s.cold_keys_at_open > 0);
    rt_check(&t, "batches across shards after a clean reopen");
    rt_finish(&t);
}

static void
test_damaged_pages(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_pages", 4);
    rt_fill(&t);
    for (unsigned r = 0; r < 3; r++) {
        rt_close(&t);
        static char paths[256][4096];
        size_t n = tu_shard_files(t.dir, ".kix", paths, 256);
        assert_true(n > 0);
        for (size_t i = 0; i < n && i < 256; i++) {
            long long size = tu_file_size(paths[i]);
            /* Pages start at the first 4 KiB boundary after the header, fences and filter: flip
             * bytes in the last page, and in a random place of the second half. */
            assert_int_equal(tu_flip_bit(paths[i], size - 1 - (long long)(tu_rand(&t.rng) % 2048),
                                         (int)(tu_rand(&t.rng) % 8)),
                             0);
            assert_int_equal(tu_flip_bit(paths[i],
                                         size / 2 + (long long)(tu_rand(&t.rng) %
                                                                (unsigned long long)(size / 2)),
                                         (int)(tu_rand(&t.rng) % 8)),
                             0);
        }
        rt_open(&t);
        rt_check(&t, "with damaged key index pages");
        rt_churn(&t, 800);
        rt_check(&t, "after writes");
    }
    rt_finish(&t);
}

struct writer {
    struct rt *t;
    unsigned first, n;
    uint64_t rng;
};

static void *
writer_run(void *arg)
{
    struct writer *w = arg;
    struct rt *t = w->t;
    for (unsigned j = 0; j < 3 * w->n; j++) {
        unsigned i = w->first + (j < w->n ? j : (unsigned)(tu_rand(&w->rng) % w->n));
        char k[32];
        size_t kl;
        unsigned char v[VMAX];
        rt_key(i, k, &kl);
        uint32_t g = (uint32_t)(tu_rand(&w->rng) % 1000000u) + 1;
        if (htkv_put(t->db, k, kl, v, rt_val(i, g, v)) != 0) {
            return (void *)1;
        }
        t->gen[i] = g; /* only this thread writes key i */
    }
    return NULL;
}

/* Durable writers in a group commit stage records while a segment is sealed and indexed: a key
 * index can then miss a head published just after it; a clean close must not name such a file. */
static void
test_group_commit_then_reopen(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_group", 4);
    rt_close(&t);
    t.cfg.sync_mode = HTKV_SYNC_ALWAYS;
    rt_open(&t);
    enum { W = 8 };
    struct writer w[W];
    pthread_t th[W];
    for (unsigned r = 0; r < 3; r++) {
        for (unsigned i = 0; i < W; i++) {
            w[i] = (struct writer){
                .t = &t, .first = i * (NKEYS / W), .n = NKEYS / W, .rng = tu_rand(&t.rng)
            };
            assert_int_equal(pthread_create(&th[i], NULL, writer_run, &w[i]), 0);
        }
        for (unsigned i = 0; i < W; i++) {
            void *res;
            assert_int_equal(pthread_join(th[i], &res), 0);
            assert_null(res);
        }
        rt_close(&t);
        rt_open(&t);
        rt_check(&t, "after durable writers in groups and a clean reopen");
    }
    rt_finish(&t);
}

/* Segment path and offset of the BEGIN of batch @p bv's part in each shard's newest segment;
 * returns how many parts there are. */
static size_t
find_parts(const char *dir, unsigned shards, uint64_t bv, char (*seg)[4096], long long *begin)
{
    static char segs[64][4096];
    static struct tu_rec recs[8192];
    size_t n = 0;
    for (unsigned s = 0; s < shards; s++) {
        size_t ns = tu_shard_segments(dir, s, segs, 64);
        size_t nr = ns > 0 ? tu_seg_scan(segs[ns - 1], recs, 8192) : 0;
        for (size_t i = 0; i < nr; i++) {
            if (recs[i].version == bv && recs[i].type == 3) { /* its BEGIN */
                snprintf(seg[n], 4096, "%s", segs[ns - 1]);
                begin[n++] = recs[i].off;
            }
        }
    }
    return n;
}

/* A batch over every shard whose part in one shard a crash cut: recovery does not apply it (and
 * records so); its surviving parts then end in sealed segments that a clean close names, and
 * the next open takes them without reading them. The change feed must still never report it. */
static void
test_changes_skip_aborted_parts(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_feed", 4);
    rt_fill(&t);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (unsigned i = 0; i < 32; i++) {
        char k[32];
        size_t kl = (size_t)snprintf(k, sizeof(k), "batch-%02u", i);
        assert_int_equal(htkv_batch_put(b, k, kl, "cut", 3), 0);
    }
    assert_int_equal(htkv_write(t.db, b), 0);
    uint64_t bv = htkv_batch_version(b);
    htkv_batch_destroy(b);
    tu_close_as_crash(t.db);
    t.db = NULL;
    static char seg[8][4096];
    long long begin[8];
    size_t np = find_parts(t.dir, 4, bv, seg, begin);
    assert_true(np >= 2);
    assert_int_equal(tu_truncate(seg[0], begin[0]), 0); /* one part lost with a crash */
    rt_open(&t);
    assert_int_equal(tu_stats(t.db).discarded_batches, 1);
    rt_churn(&t, 4 * NKEYS); /* the surviving parts' segments get sealed and indexed */
    rt_close(&t);
    rt_open(&t);
    assert_true(tu_stats(t.db).cold_keys_at_open > 0);
    rt_check(&t, "after the batch was cut");
    htkv_changes *c;
    assert_int_equal(htkv_changes_since(t.db, 0, &c), 0);
    htkv_command cmd;
    int rc;
    while ((rc = htkv_changes_next(c, &cmd)) == 1) {
        if (cmd.version == bv) {
            fail_msg("the change feed reports a command of batch %llu, never applied",
                     (unsigned long long)bv);
        }
    }
    assert_int_equal(rc, 0);
    htkv_changes_destroy(c);
    for (unsigned i = 0; i < 32; i++) {
        char k[32];
        size_t kl = (size_t)snprintf(k, sizeof(k), "batch-%02u", i);
        assert_int_equal(htkv_get(t.db, k, kl, NULL, 0, NULL), HTKV_ENOTFOUND);
    }
    rt_finish(&t);
}

static void
test_budget_changes(void **state)
{
    (void)state;
    struct rt t;
    rt_start(&t, "budget_reopen_changes", 4);
    rt_fill(&t);
    rt_close(&t);
    t.cfg.memory_budget_bytes = 0;
    rt_open(&t);
    rt_check(&t, "without a budget");
    size_t kix = 0;
    static char paths[256][4096];
    kix = tu_shard_files(t.dir, ".kix", paths, 256);
    assert_int_equal(kix, 0); /* a writable open without a budget keeps none */
    rt_close(&t);
    t.cfg.memory_budget_bytes = BUDGET;
    rt_open(&t);
    rt_check(&t, "with a budget again");
    rt_churn(&t, 1000);
    rt_close(&t);
    t.cfg.read_only = 1;
    rt_open(&t);
    rt_check(&t, "read-only after a clean close");
    rt_close(&t);
    t.cfg.read_only = 0;
    rt_open(&t);
    rt_check(&t, "writable again");
    rt_finish(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_takes_key_indexes),
        cmocka_unit_test(test_close_state_tampered),
        cmocka_unit_test(test_stale_key_indexes),
        cmocka_unit_test(test_key_indexes_missing),
        cmocka_unit_test(test_foreign_key_indexes),
        cmocka_unit_test(test_crash_after_writes),
        cmocka_unit_test(test_crash_without_writes),
        cmocka_unit_test(test_batches_across_shards),
        cmocka_unit_test(test_damaged_pages),
        cmocka_unit_test(test_group_commit_then_reopen),
        cmocka_unit_test(test_changes_skip_aborted_parts),
        cmocka_unit_test(test_budget_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
