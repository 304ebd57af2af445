/*
 * fault_io.c - injected I/O faults (uring/ur_fault.h): the right error reaches the caller, no
 * failed write is acknowledged, a failed fdatasync stops the shard for good (never retried and
 * trusted), ENOSPC stops writes while reads go on and writes resume after a reopen, a torn
 * manifest write leaves a store that opens, and a fault inside compaction, snapshot writing or
 * restore loses nothing. Failed reads, opens and unlinks over a whole life cycle of a store
 * (open, writes, compaction, snapshot, restore, reopen) either fail the call that met them with
 * the injected error, leaving the files as they were when an open fails, or are absorbed as
 * documented (hints are optional; files that cannot be removed are removed by a later open);
 * a restore whose commit is in doubt stops the store and reopens to one whole side. Countdown
 * loops move the fault over the calls of each class.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/verify.h"
#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#define NKEYS 200

/* Values are 1..model_vmax bytes: below SEG_WT_MIN_BYTES (768) of records, so that outside
 * HTKV_SYNC_ALWAYS puts are stored through the mapping and the only writes are the manifest's,
 * unless a test raises it to reach both paths. */
static unsigned model_vmax = 500;

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
    unsigned char val[900], buf[900];
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
            tu_fill(val, 1 + t % model_vmax, t);
            ok = n == 1 + t % model_vmax && memcmp(buf, val, n) == 0;
        }
        assert_true(ok);
    }
}

/*
 * The put of write @p tag to key @p i returned @p rc: an acknowledged one enters the model, a
 * failed one is remembered as "maybe" (its code must be in @p allowed). Returns 1 if it failed.
 */
static int
model_put(struct model *m, unsigned i, uint64_t tag, int rc, const int *allowed, int nallowed)
{
    if (rc == 0) {
        m->tag[i] = tag;
        m->len[i] = (uint32_t)(1 + tag % model_vmax);
        m->nmaybe[i] = 0;
        return 0;
    }
    bool known = false;
    for (int a = 0; a < nallowed; a++) {
        known = known || rc == allowed[a];
    }
    tu_context("put of key %u failed with %s", i, htkv_strerror(rc));
    assert_true(known);
    if (m->nmaybe[i] < 4) { /* more come only from a shard that refuses writes outright */
        m->maybe[i][m->nmaybe[i]++] = tag;
    }
    return 1;
}

/* Put write @p tag (1 + tag % model_vmax bytes) to key @p i. */
static int
put_tag(htkv_db *db, unsigned i, uint64_t tag)
{
    unsigned char val[900];
    char key[32];
    uint32_t len = (uint32_t)(1 + tag % model_vmax);
    tu_fill(val, len, tag);
    return htkv_put(db, key, key_of(i, key), val, len);
}

/*
 * @p n seeded puts; each acknowledged one enters the model, each failed one is remembered as
 * "maybe". Returns the number of failed calls; every failure code must be in @p allowed.
 */
static int
workload(htkv_db *db, struct model *m, uint64_t *seed, int n, const int *allowed, int nallowed)
{
    int failed = 0;
    for (int k = 0; k < n; k++) {
        uint64_t r = tu_rand(seed);
        unsigned i = (unsigned)(r % NKEYS);
        uint64_t tag = (r >> 8) | 1;
        failed += model_put(m, i, tag, put_tag(db, i, tag), allowed, nallowed);
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

/* Goal: the callers' records reach the file through pwrite() in HTKV_SYNC_ALWAYS, and in the
 * other modes for writes of at least 768 bytes (values here are 1..800 bytes: both paths); the
 * N-th write failing (N = 1..6, EIO or torn in half; manifest writes count too) fails that put
 * with -EIO, the shard then refuses writes (HTKV_EFAILED) until reopen, the failed put is never
 * read, and every acknowledged write reads back at once and after reopen. */
static void
test_fault_write_through_countdown(void **state)
{
    (void)state;
    static const int allowed[] = { -EIO, HTKV_EFAILED };
    /* ALWAYS: the 1st to 6th write; the other modes, whose pwrite() path is shorter, three
     * of them. */
    static const struct {
        int mode;
        uint64_t nth;
    } runs[] = { { HTKV_SYNC_ALWAYS, 1 },   { HTKV_SYNC_ALWAYS, 2 },   { HTKV_SYNC_ALWAYS, 3 },
                 { HTKV_SYNC_ALWAYS, 4 },   { HTKV_SYNC_ALWAYS, 5 },   { HTKV_SYNC_ALWAYS, 6 },
                 { HTKV_SYNC_INTERVAL, 1 }, { HTKV_SYNC_INTERVAL, 6 }, { HTKV_SYNC_NEVER, 6 } };
    for (size_t k = 0; k < sizeof(runs) / sizeof(runs[0]); k++) {
        uint64_t seed = tu_seed("fault-wt") + k + 1;
        char *dir;
        htkv_config cfg;
        int mode = runs[k].mode;
        htkv_db *db = open_store("fault-wt", &dir, &cfg, mode);
        static struct model m;
        memset(&m, 0, sizeof(m));
        uint64_t n = runs[k].nth;
        htkv_fault_arm(HTKV_FAULT_WRITE, n, n % 2 ? EIO : HTKV_FAULT_TORN, false);
        model_vmax = 800; /* records of 768 bytes or more go through pwrite() in every mode */
        int failed = workload(db, &m, &seed, 300, allowed, 2);
        tu_context("mode %d nth %llu", mode, (unsigned long long)n);
        assert_true(failed >= 1);
        assert_int_equal(htkv_fault_injected() >= 1, 1);
        htkv_fault_disarm();
        model_check(db, &m);
        reopen_check(db, &cfg, &m);
        model_vmax = 500;
        tu_rmrf(dir);
        free(dir);
    }
}

/* Goal: outside HTKV_SYNC_ALWAYS a put of 768 bytes or more reaches its segment through
 * pwrite() (smaller ones are stored through the mapping): the first write failing fails that
 * put with -EIO and nothing else, the shard then refuses writes (HTKV_EFAILED), and after
 * reopen the failed put is absent and every earlier one is there. */
static void
test_fault_large_put_write_through(void **state)
{
    (void)state;
    static const int modes[] = { HTKV_SYNC_INTERVAL, HTKV_SYNC_NEVER };
    for (size_t k = 0; k < 2; k++) {
        char *dir = tu_tmpdir("fault-large");
        htkv_config cfg;
        tu_config(&cfg, dir, modes[k]);
        cfg.shard_count = 1; /* the put after the failure meets the failed shard */
        cfg.compaction_interval_ms = 0;
        htkv_db *db = tu_open(&cfg);
        char key[32];
        for (unsigned i = 0; i < 10; i++) {
            assert_int_equal(htkv_put(db, key, key_of(i, key), "small", 5), 0);
        }
        static unsigned char big[1000];
        memset(big, 'b', sizeof(big));
        htkv_fault_arm(HTKV_FAULT_WRITE, 1, EIO, false);
        tu_context("mode %d", modes[k]);
        assert_int_equal(htkv_put(db, "large", 5, big, sizeof(big)), -EIO);
        htkv_fault_disarm();
        assert_int_equal(htkv_put(db, "after", 5, "x", 1), HTKV_EFAILED);
        (void)htkv_close(db);
        db = tu_open(&cfg);
        size_t n = 0;
        assert_int_equal(htkv_get(db, "large", 5, NULL, 0, &n), HTKV_ENOTFOUND);
        for (unsigned i = 0; i < 10; i++) {
            assert_int_equal(htkv_get(db, key, key_of(i, key), NULL, 0, &n), HTKV_ETOOSMALL);
        }
        assert_int_equal(htkv_close(db), 0);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Concurrent callers: thread t writes the keys i with i % GROUP_THREADS == t, so that each key's
 * writes keep their order and the threads' logs replay into one model after the join. */
#define GROUP_THREADS 8
#define GROUP_PUTS 120

struct group_writer {
    htkv_db *db;
    unsigned id;
    uint64_t seed;
    unsigned key[GROUP_PUTS];
    uint64_t tag[GROUP_PUTS];
    int rc[GROUP_PUTS];
};

static void *
group_writer_main(void *arg)
{
    struct group_writer *w = arg;
    for (int k = 0; k < GROUP_PUTS; k++) {
        uint64_t r = tu_rand(&w->seed);
        w->key[k] = w->id + GROUP_THREADS * (unsigned)(r % (NKEYS / GROUP_THREADS));
        w->tag[k] = (r >> 8) | 1;
        w->rc[k] = put_tag(w->db, w->key[k], w->tag[k]);
    }
    return NULL;
}

/* Goal: with 8 callers sharing one shard in HTKV_SYNC_ALWAYS (inline, their puts staged and
 * synced in groups), a write failing (EIO or torn; the N-th, N = 1, 3, 6) or an fdatasync
 * failing (the N-th) fails every put of the groups it met, with -EIO or HTKV_EFAILED, wakes
 * every caller, stops the shard for good when it hit its records, and acknowledges nothing it
 * lost: every acknowledged put reads back at once and after reopen, no failed one reads back
 * except as a "maybe". */
static void
test_fault_concurrent_groups(void **state)
{
    (void)state;
    static const struct {
        int op, err;
    } faults[] = { { HTKV_FAULT_WRITE, EIO },
                   { HTKV_FAULT_WRITE, HTKV_FAULT_TORN },
                   { HTKV_FAULT_SYNC, EIO } };
    static const uint64_t nths[] = { 1, 3, 6 };
    static const int allowed[] = { -EIO, HTKV_EFAILED };
    for (size_t f = 0; f < sizeof(faults) / sizeof(faults[0]); f++) {
        for (size_t k = 0; k < sizeof(nths) / sizeof(nths[0]); k++) {
            uint64_t seed = tu_seed("fault-groups") + f * 16 + k;
            char *dir = tu_tmpdir("fault-groups");
            htkv_config cfg;
            tu_config(&cfg, dir, HTKV_SYNC_ALWAYS);
            cfg.shard_count = 1;
            cfg.max_segment_bytes = 64u << 10;
            cfg.compaction_interval_ms = 0;
            htkv_db *db = tu_open(&cfg);
            static struct group_writer w[GROUP_THREADS];
            pthread_t th[GROUP_THREADS];
            htkv_fault_arm(faults[f].op, nths[k], faults[f].err, false);
            for (unsigned t = 0; t < GROUP_THREADS; t++) {
                w[t] = (struct group_writer){ .db = db, .id = t, .seed = seed * 31 + t + 1 };
                assert_int_equal(pthread_create(&th[t], NULL, group_writer_main, &w[t]), 0);
            }
            for (unsigned t = 0; t < GROUP_THREADS; t++) {
                assert_int_equal(pthread_join(th[t], NULL), 0);
            }
            tu_context("fault %zu nth %llu", f, (unsigned long long)nths[k]);
            assert_true(htkv_fault_injected() >= 1);
            htkv_fault_disarm();
            static struct model m;
            memset(&m, 0, sizeof(m));
            int failed = 0;
            for (unsigned t = 0; t < GROUP_THREADS; t++) {
                for (int p = 0; p < GROUP_PUTS; p++) {
                    failed += model_put(&m, w[t].key[p], w[t].tag[p], w[t].rc[p], allowed, 2);
                }
            }
            assert_true(failed >= 1);
            if (tu_stats(db).failed) { /* a write or sync of the records failed (not a manifest
                                          write): no later put is trusted to that shard */
                assert_int_equal(put_tag(db, 0, 7), HTKV_EFAILED);
            }
            model_check(db, &m);
            reopen_check(db, &cfg, &m);
            tu_rmrf(dir);
            free(dir);
        }
    }
}

/* Goal: a batch across shards whose second part cannot be written (HTKV_SYNC_ALWAYS) fails with
 * -EIO and is never applied: not at once, not after reopen, and not after a compaction pass has
 * raised the batch floor past its version and the store is reopened again (its first part is
 * in a segment, complete, and must stay dead). */
static void
test_fault_write_through_batch_part(void **state)
{
    (void)state;
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store("fault-wt-batch", &dir, &cfg, HTKV_SYNC_ALWAYS);
    char key[32];
    enum { KEYS = 32 };
    for (unsigned i = 0; i < KEYS; i++) {
        assert_int_equal(htkv_put(db, key, key_of(i, key), "old", 3), 0);
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (unsigned i = 0; i < KEYS; i++) {
        assert_int_equal(htkv_batch_put(b, key, key_of(i, key), "new", 3), 0);
    }
    htkv_fault_arm(HTKV_FAULT_WRITE, 2, EIO, false); /* the second part's write */
    assert_int_equal(htkv_write(db, b), -EIO);
    htkv_fault_disarm();
    assert_true(tu_stats(db).failed);
    for (int round = 0; round < 3; round++) {
        tu_context("round %d", round);
        for (unsigned i = 0; i < KEYS; i++) {
            char v[8];
            size_t n = 0;
            assert_int_equal(htkv_get(db, key, key_of(i, key), v, sizeof(v), &n), 0);
            assert_int_equal(n, 3);
            assert_memory_equal(v, "old", 3);
        }
        if (round == 1) {
            assert_int_equal(htkv_put(db, "more", 4, "x", 1), 0);
            assert_int_equal(htkv_compact_now(db), 0);
        }
        (void)htkv_close(db); /* the first round reports the failure */
        db = tu_open(&cfg);
    }
    assert_int_equal(htkv_close(db), 0);
    htkv_batch_destroy(b);
    tu_rmrf(dir);
    free(dir);
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

/* ---- failed reads, opens and unlinks over a store's life cycle ------------------------------ */

/* Every key holds exactly what @p m says (acknowledged value, or one of the maybes): bool. */
static bool
model_holds(htkv_db *db, const struct model *m)
{
    unsigned char val[900], buf[900];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t n = 0, kl = key_of(i, key);
        int rc = htkv_get(db, key, kl, buf, sizeof(buf), &n);
        if (rc == HTKV_ENOTFOUND && m->tag[i] == 0) {
            continue;
        }
        if (rc != 0) {
            return false;
        }
        bool ok = false;
        if (m->tag[i] != 0) {
            tu_fill(val, m->len[i], m->tag[i]);
            ok = n == m->len[i] && memcmp(buf, val, n) == 0;
        }
        for (unsigned k = 0; !ok && k < m->nmaybe[i]; k++) {
            uint64_t t = m->maybe[i][k];
            tu_fill(val, 1 + t % model_vmax, t);
            ok = n == 1 + t % model_vmax && memcmp(buf, val, n) == 0;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ c[i]) * 0x100000001b3ull;
    }
    return h;
}

/* Names, sizes and contents of every file of the store (top level and shard directories). */
static uint64_t
dir_fingerprint(const char *dir)
{
    uint64_t h = 0xcbf29ce484222325ull;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    char names[256][64];
    size_t n = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.' && n < 256 && strlen(de->d_name) < 64) {
            strcpy(names[n++], de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), (int (*)(const void *, const void *))strcmp);
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        assert_true(snprintf(path, sizeof(path), "%s/%s", dir, names[i]) < (int)sizeof(path));
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        h = fnv(h, names[i], strlen(names[i]) + 1);
        if (S_ISDIR(st.st_mode)) {
            h = fnv(h, "/", 1) ^ dir_fingerprint(path);
            continue;
        }
        h = fnv(h, &st.st_size, sizeof(st.st_size));
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        unsigned char buf[65536];
        size_t r;
        while ((r = fread(buf, 1, sizeof(buf), f)) > 0) {
            h = fnv(h, buf, r);
        }
        fclose(f);
    }
    return h;
}

static int
open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* No temporary file anywhere, and no hint without its segment. */
static void
expect_no_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        tu_context("%s/%s", dir, de->d_name);
        assert_false(l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0);
        if (strncmp(de->d_name, "shard-", 6) == 0) {
            char sd[4200];
            assert_true(snprintf(sd, sizeof(sd), "%s/%s", dir, de->d_name) < (int)sizeof(sd));
            expect_no_leftovers(sd);
        }
        if (l > 5 && strcmp(de->d_name + l - 5, ".hint") == 0) {
            char seg[4200];
            assert_true(snprintf(seg, sizeof(seg), "%s/%.*s.seg", dir, (int)(l - 5), de->d_name) <
                        (int)sizeof(seg));
            assert_int_equal(access(seg, F_OK), 0);
        }
    }
    closedir(d);
}

/* What a life cycle under a fault saw. */
struct cycle {
    int err;       /* the injected errno */
    int op;        /* the class */
    int fallbacks; /* opens that met the fault and succeeded all the same */
};

static void
expect_err(const struct cycle *c, int rc, const char *what)
{
    tu_context("class %d err %d: %s returned %s", c->op, c->err, what, htkv_strerror(rc));
    /* A failed unlink never reaches a caller: the file is left for a later open. */
    if (c->op == HTKV_FAULT_UNLINK) {
        assert_int_equal(rc, 0);
    }
    assert_true(rc == 0 || rc == -c->err);
}

/*
 * Open under the armed fault. A failed open returns the injected error and leaves every file as
 * it was; one that succeeds although the fault hit it did so by a documented fallback (a hint
 * that cannot be read is replaced by a scan and logged, OPTIONS is informational) or by ignoring
 * a step that protects nothing here (syncing the parent of an existing store's directory).
 */
static htkv_db *
cycle_open(struct cycle *c, const htkv_config *cfg)
{
    uint64_t before = dir_fingerprint(cfg->data_dir);
    uint64_t inj = htkv_fault_injected();
    int warnings = tu_log_warnings;
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    expect_err(c, rc, "htkv_open");
    if (rc != 0) {
        assert_null(db);
        assert_int_equal(dir_fingerprint(cfg->data_dir), before);
        return NULL;
    }
    if (htkv_fault_injected() > inj) {
        c->fallbacks++;
        if (c->op == HTKV_FAULT_READ) {
            assert_true(tu_log_warnings > warnings); /* the hint fallback says so */
        }
    }
    return db;
}

/* Seeded puts under the fault: each failure is the injected error (or -ENOSPC once the store
 * refuses writes for lack of space, which is the same when ENOSPC is injected). */
static void
cycle_puts(struct cycle *c, htkv_db *db, struct model *m, uint64_t *seed, int n)
{
    const int allowed[] = { -c->err };
    int failed = workload(db, m, seed, n, allowed, 1);
    if (c->op == HTKV_FAULT_UNLINK) {
        assert_int_equal(failed, 0);
    }
}

/* A closed store to start each life cycle from (copied: its creation costs many syncs). */
struct cycle_base {
    char *dir;
    struct model m;
};

static void
cycle_base_make(struct cycle_base *b, uint64_t seed)
{
    htkv_config cfg;
    b->dir = tu_tmpdir("fault-base");
    tu_config(&cfg, b->dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 2; /* fewer files, fewer calls per class: a shorter countdown */
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    memset(&b->m, 0, sizeof(b->m));
    (void)workload(db, &b->m, &seed, 600, NULL, 0);
    assert_int_equal(htkv_close(db), 0); /* hints written: the next open reads them */
}

/*
 * One life cycle of a copy of @p base with class @p op failing at its @p nth call (and every
 * later one with @p sticky): open, writes, compaction, snapshot, restore of it, writes, close,
 * reopen, writes, close; then, disarmed, a reopen that must hold every acknowledged write and
 * nothing else, take writes, and leave files that htkvctl verify finds clean with no leftovers.
 * The fault also runs over a verify walk. Returns whether the fault was reached.
 */
static bool
fault_cycle(const struct cycle_base *base, int op, uint64_t nth, int err, bool sticky,
            uint64_t seed0, int *fallbacks)
{
    uint64_t seed = seed0;
    tu_context("class %d nth %llu err %d sticky %d seed %llu", op, (unsigned long long)nth, err,
               sticky, (unsigned long long)seed0);
    int fds = open_fds();
    char *dir = tu_tmpdir("fault-cycle");
    tu_copy_store(base->dir, dir);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db;
    static struct model m;
    m = base->m;
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/cycle.snap", dir);

    struct cycle c = { .err = err, .op = op };
    uint64_t injected = htkv_fault_injected();
    htkv_fault_arm(op, nth, err, sticky);
    for (int round = 0; round < 2; round++) {
        db = cycle_open(&c, &cfg);
        if (db == NULL) {
            continue;
        }
        cycle_puts(&c, db, &m, &seed, 300);
        if (round == 0) {
            expect_err(&c, htkv_compact_now(db), "htkv_compact_now");
            int rc = htkv_snapshot_write(db, snap);
            expect_err(&c, rc, "htkv_snapshot_write");
            if (rc == 0) {
                expect_err(&c, htkv_snapshot_restore(db, snap), "htkv_snapshot_restore");
            }
            assert_true(model_holds(db, &m));
            cycle_puts(&c, db, &m, &seed, 200);
        }
        assert_true(model_holds(db, &m));
        expect_err(&c, htkv_close(db), "htkv_close");
    }
    /* The independent checker meets the fault too: an error or findings, never a wrong "clean". */
    struct htkv_inspect_summary sum;
    uint64_t inj = htkv_fault_injected();
    int vrc = htkv_inspect_verify(dir, 0, NULL, &sum, NULL, NULL, NULL);
    expect_err(&c, vrc, "htkv_inspect_verify");
    if (htkv_fault_injected() == inj) {
        assert_int_equal(vrc, 0);
        assert_int_equal(sum.problems, 0);
    }
    bool reached = htkv_fault_injected() > injected;
    htkv_fault_disarm();
    *fallbacks += c.fallbacks;

    tu_context("class %d nth %llu err %d sticky %d seed %llu: after the fault", op,
               (unsigned long long)nth, err, sticky, (unsigned long long)seed0);
    db = tu_open(&cfg);
    model_check(db, &m);
    assert_int_equal(htkv_put(db, "after", 5, "x", 1), 0);
    assert_int_equal(htkv_compact_now(db), 0);
    model_check(db, &m);
    assert_int_equal(htkv_close(db), 0);
    /* Clean: no problem, and nothing left over (orphans and old manifests were removed). */
    assert_int_equal(htkv_inspect_verify(dir, 0, NULL, &sum, NULL, NULL, NULL), 0);
    assert_int_equal(sum.problems, 0);
    assert_int_equal(sum.notes, 0);
    static char segs[256][4096];
    assert_int_equal(tu_segments(dir, segs, 256), sum.segments);
    expect_no_leftovers(dir);
    assert_int_equal(open_fds(), fds);
    tu_rmrf(dir);
    free(dir);
    return reached;
}

/*
 * Fail the N-th call of @p op, N = 1.. until a life cycle no longer reaches it, alternating EIO
 * and ENOSPC; then from then on (sticky), from every third N. Returns the calls covered.
 */
static uint64_t
fault_countdown(int op, const char *tag)
{
    uint64_t seed = tu_seed(tag);
    static struct cycle_base base;
    cycle_base_make(&base, seed);
    uint64_t nth = 1;
    int fallbacks = 0;
    while (fault_cycle(&base, op, nth, nth % 2 ? EIO : ENOSPC, false, seed + nth, &fallbacks)) {
        nth++;
        assert_true(nth < 2000); /* the life cycle is finite */
    }
    uint64_t covered = nth - 1;
    for (nth = 1;
         fault_cycle(&base, op, nth, nth % 2 ? EIO : ENOSPC, true, seed + nth, &fallbacks);) {
        nth += 3;
    }
    fprintf(stderr, "[%s] %llu calls covered, %d opens went on past the fault\n", tag,
            (unsigned long long)covered, fallbacks);
    assert_true(covered >= 3);
    /* Hints are optional (read, open, create), so is OPTIONS (create), and an orphan that
     * stays is only logged (unlink). */
    assert_true(fallbacks >= 1);
    tu_rmrf(base.dir);
    free(base.dir);
    return covered;
}

/* Goal: a failed read (CURRENT, the manifest, a segment header, a hint, a snapshot's mapping)
 * fails the open or the restore with the injected error, leaving the files as they were, or, for
 * a hint, costs a logged scan; the store reopens with every acknowledged write. */
static void
test_fault_read_countdown(void **state)
{
    (void)state;
    (void)fault_countdown(HTKV_FAULT_READ, "fault-read");
}

/* Goal: a failed open of an existing file or directory (store and shard directories, LOCK,
 * CURRENT, the manifest, segments, hints, a snapshot, a directory to sync) fails the call that
 * needed it with the injected error and changes nothing; the store reopens intact. */
static void
test_fault_open_countdown(void **state)
{
    (void)state;
    (void)fault_countdown(HTKV_FAULT_OPEN, "fault-open");
}

/* Goal: a failed unlink (dropped segments and hints, the old manifest, orphans at open) never
 * fails a call nor loses data: the file is left over and a later open removes it. */
static void
test_fault_unlink_countdown(void **state)
{
    (void)state;
    (void)fault_countdown(HTKV_FAULT_UNLINK, "fault-unlink");
}

/* Goal: a file that cannot be created (segment, manifest, CURRENT.tmp, hint, snapshot, OPTIONS)
 * fails the call that needed it with the injected error, or, for a hint or OPTIONS, nothing at
 * all (both are optional); nothing acknowledged is lost. */
static void
test_fault_create_countdown(void **state)
{
    (void)state;
    (void)fault_countdown(HTKV_FAULT_CREATE, "fault-create");
}

/* Goal: a restore whose N-th sync fails changes nothing (the old contents, writes go on), except
 * when only the directory sync after the rename of CURRENT failed: then the store refuses
 * writes with HTKV_EFAILED, serves the old contents, and reopens holding the old contents or the
 * snapshot's, whole, with every file either side needs. */
static void
test_fault_restore_sync_countdown(void **state)
{
    (void)state;
    uint64_t seed0 = tu_seed("fault-restore-sync");
    int unsure = 0;
    uint64_t nth = 1;
    for (bool reached = true; reached; nth++) {
        uint64_t seed = seed0 + nth;
        tu_context("nth %llu seed %llu", (unsigned long long)nth, (unsigned long long)seed0);
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_store("fault-rsync", &dir, &cfg, HTKV_SYNC_NEVER);
        static struct model snapped, now;
        memset(&snapped, 0, sizeof(snapped));
        (void)workload(db, &snapped, &seed, 600, NULL, 0);
        char path[4200];
        snprintf(path, sizeof(path), "%s/r.snap", dir);
        assert_int_equal(htkv_snapshot_write(db, path), 0);
        now = snapped;
        (void)workload(db, &now, &seed, 600, NULL, 0);
        uint64_t injected = htkv_fault_injected();
        htkv_fault_arm(HTKV_FAULT_SYNC, nth, EIO, false);
        int rc = htkv_snapshot_restore(db, path);
        htkv_fault_disarm();
        reached = htkv_fault_injected() > injected;
        tu_context("nth %llu seed %llu: restore %s", (unsigned long long)nth,
                   (unsigned long long)seed0, htkv_strerror(rc));
        bool restored = rc == 0;
        if (rc == HTKV_EFAILED) {
            unsure++;
            model_check(db, &now); /* the old contents are served */
            assert_int_equal(htkv_put(db, "k", 1, "v", 1), HTKV_EFAILED);
        } else if (rc != 0) {
            assert_int_equal(rc, -EIO);
            model_check(db, &now);
            assert_int_equal(htkv_put(db, "k", 1, "v", 1), 0);
            assert_int_equal(htkv_delete(db, "k", 1), 0);
        } else {
            assert_false(reached);
            model_check(db, &snapped);
        }
        (void)htkv_close(db);
        db = tu_open(&cfg);
        bool as_snapped = model_holds(db, &snapped), as_now = model_holds(db, &now);
        if (rc == HTKV_EFAILED) {
            assert_true(as_snapped || as_now);
        } else {
            assert_true(restored ? as_snapped : as_now);
        }
        assert_int_equal(htkv_put(db, "after", 5, "x", 1), 0);
        assert_int_equal(htkv_close(db), 0);
        struct htkv_inspect_summary sum;
        assert_int_equal(htkv_inspect_verify(dir, 0, NULL, &sum, NULL, NULL, NULL), 0);
        assert_int_equal(sum.problems, 0);
        assert_int_equal(sum.notes, 0);
        tu_rmrf(dir);
        free(dir);
    }
    fprintf(stderr, "[fault-restore-sync] %llu syncs covered, %d in doubt\n",
            (unsigned long long)(nth - 2), unsure);
    assert_int_equal(unsure, 1); /* the directory sync after the rename of CURRENT */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_fdatasync_eio_countdown),
        cmocka_unit_test(test_fault_write_through_countdown),
        cmocka_unit_test(test_fault_large_put_write_through),
        cmocka_unit_test(test_fault_write_through_batch_part),
        cmocka_unit_test(test_fault_concurrent_groups),
        cmocka_unit_test(test_fault_enospc_read_only_then_reopen),
        cmocka_unit_test(test_fault_torn_manifest_edit),
        cmocka_unit_test(test_fault_inside_compaction),
        cmocka_unit_test(test_fault_snapshot_write_and_restore),
        cmocka_unit_test(test_fault_read_countdown),
        cmocka_unit_test(test_fault_open_countdown),
        cmocka_unit_test(test_fault_unlink_countdown),
        cmocka_unit_test(test_fault_create_countdown),
        cmocka_unit_test(test_fault_restore_sync_countdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
