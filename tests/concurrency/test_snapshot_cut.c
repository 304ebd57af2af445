/*
 * test_snapshot_cut.c - a snapshot written while writers run is the store at its version: every
 * write at or below it, none above.
 *
 * A replica installs a snapshot and replays the change feed from the snapshot's version
 * (include/htkv/replication.h). That is right only if the snapshot holds every write at or below
 * its version: one it missed is never replayed, and the replica diverges for good. Writers put,
 * delete and write batches on their own key ranges of a store with compaction off, while a
 * snapshot thread writes snapshots one after another. Afterwards the change feed from 0 is the
 * whole history; for each snapshot, the history up to its version replayed into a model must
 * equal what a fresh store holds after restoring the snapshot: the same keys, values and per-key
 * versions. Runs inline and with 2 workers on io_uring, in NEVER and ALWAYS (with workers in
 * ALWAYS a shard publishes after its own group sync, so a version can be visible in one shard
 * while a lower one is still pending in another).
 */
#include <htkv/replication.h>

#include "tests/concurrency/cc_util.h"

#define WRITERS 2
#define RANGE 200u
#define KEYS (WRITERS * RANGE)
#define SNAPS 24

struct shared {
    htkv_db *db;
    char *dir;
    _Atomic int writers_done;
    uint64_t seed;
    unsigned nsnaps;
    uint64_t snap_version[SNAPS];
};

struct writer {
    struct shared *sh;
    unsigned id;
};

static size_t
key_of(uint32_t id, char *buf)
{
    return (size_t)sprintf(buf, "sc-%06u", id);
}

static void
snap_path(const struct shared *sh, unsigned i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/cut-%02u.snap", sh->dir, i);
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    struct shared *sh = w->sh;
    uint64_t rng = cc_subseed(sh->seed, w->id, 11);
    unsigned char val[48];
    char key[32];
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch");
        return NULL;
    }
    unsigned ops = cc_ops(3000);
    for (unsigned n = 0; n < ops && !cc_failed(); n++) {
        uint64_t r = tu_rand(&rng);
        size_t kl = key_of(w->id * RANGE + (uint32_t)(r % RANGE), key);
        size_t vl = 1 + (size_t)((r >> 20) % sizeof(val));
        tu_fill(val, vl, r);
        int rc;
        unsigned kind = (unsigned)((r >> 40) % 10);
        if (kind < 2) {
            rc = htkv_delete(sh->db, key, kl);
            rc = rc == HTKV_ENOTFOUND ? 0 : rc;
        } else if (kind < 4) {
            htkv_batch_clear(b);
            rc = htkv_batch_put(b, key, kl, val, vl);
            kl = key_of(w->id * RANGE + (uint32_t)((r >> 8) % RANGE), key);
            rc = rc != 0 ? rc : htkv_batch_put(b, key, kl, val, vl / 2 + 1);
            rc = rc != 0 ? rc : htkv_write(sh->db, b);
        } else {
            rc = htkv_put(sh->db, key, kl, val, vl);
        }
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "writer %u op %u: %s", w->id, n, htkv_strerror(rc));
        }
    }
    htkv_batch_destroy(b);
    return NULL;
}

/* Write snapshots while the writers run, as many as fit (the last ones may follow them). */
static void *
snapshotter_main(void *arg)
{
    struct shared *sh = arg;
    char path[4200];
    while (!cc_failed() && sh->nsnaps < SNAPS) {
        snap_path(sh, sh->nsnaps, path, sizeof(path));
        int rc = htkv_snapshot_write(sh->db, path);
        uint64_t v = 0;
        rc = rc != 0 ? rc : htkv_snapshot_file_version(path, &v, NULL);
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "snapshot %u: %s", sh->nsnaps, htkv_strerror(rc));
            break;
        }
        sh->snap_version[sh->nsnaps++] = v;
        if (atomic_load(&sh->writers_done)) {
            break;
        }
        cc_sleep_ms(1);
    }
    return NULL;
}

/* The model of the store at one version: each key's value and version, or absent. */
struct model_key {
    const void *val;
    size_t vlen;
    uint64_t version;
    bool present;
};

static uint32_t
id_of(const void *key, size_t klen)
{
    char buf[32];
    if (klen < 4 || klen >= sizeof(buf)) {
        return UINT32_MAX;
    }
    memcpy(buf, key, klen);
    buf[klen] = '\0';
    unsigned id;
    return sscanf(buf, "sc-%06u", &id) == 1 && id < KEYS ? id : UINT32_MAX;
}

/* Replay @p hist (version order) up to @p version into @p m. */
static bool
model_at(const htkv_command *hist, size_t n, uint64_t version, struct model_key *m)
{
    memset(m, 0, KEYS * sizeof(*m));
    for (size_t i = 0; i < n && hist[i].version <= version; i++) {
        uint32_t id = id_of(hist[i].key, hist[i].key_len);
        CC_CHECK(id != UINT32_MAX, "feed item %zu: a key no writer wrote", i);
        m[id] = (struct model_key){ .val = hist[i].val,
                                    .vlen = hist[i].val_len,
                                    .version = hist[i].version,
                                    .present = hist[i].type == HTKV_CMD_SET };
    }
    return true;
}

/* Does @p db hold exactly model @p m? */
static bool
store_equals(htkv_db *db, const struct model_key *m, uint64_t version)
{
    htkv_iter *it = NULL;
    CC_CHECK(htkv_get_prefix(db, "", 0, &it) == 0, "iterator");
    const void *k, *v;
    size_t kl, vl;
    int rc;
    uint32_t next = 0; /* keys below it were checked */
    bool ok = true;
    while (ok && (rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        uint32_t id = id_of(k, kl);
        if (id == UINT32_MAX || id < next) {
            cc_fail_at(__FILE__, __LINE__, "snapshot at %llu: key %.*s out of place",
                       (unsigned long long)version, (int)kl, (const char *)k);
            ok = false;
            break;
        }
        for (; next < id && ok; next++) {
            if (m[next].present) {
                cc_fail_at(__FILE__, __LINE__,
                           "snapshot at %llu lacks sc-%06u (written at version %llu)",
                           (unsigned long long)version, next, (unsigned long long)m[next].version);
                ok = false;
            }
        }
        if (ok && !m[id].present) {
            cc_fail_at(__FILE__, __LINE__,
                       "snapshot at %llu holds %.*s, which is absent at that version (last "
                       "written at %llu)",
                       (unsigned long long)version, (int)kl, (const char *)k,
                       (unsigned long long)m[id].version);
            ok = false;
        } else if (ok && (vl != m[id].vlen || memcmp(v, m[id].val, vl) != 0 ||
                          htkv_iter_version(it) != m[id].version)) {
            cc_fail_at(
                __FILE__, __LINE__, "snapshot at %llu: %.*s at version %llu, the history says %llu",
                (unsigned long long)version, (int)kl, (const char *)k,
                (unsigned long long)htkv_iter_version(it), (unsigned long long)m[id].version);
            ok = false;
        }
        next = id + 1;
    }
    for (; ok && next < KEYS; next++) {
        if (m[next].present) {
            cc_fail_at(__FILE__, __LINE__, "snapshot at %llu lacks sc-%06u (written at %llu)",
                       (unsigned long long)version, next, (unsigned long long)m[next].version);
            ok = false;
        }
    }
    htkv_iter_destroy(it);
    return ok;
}

/* Restore snapshot @p i into a fresh store and compare it with the history up to its version. */
static bool
check_snapshot(struct shared *sh, unsigned i, const htkv_command *hist, size_t n,
               struct model_key *m)
{
    char path[4200];
    snap_path(sh, i, path, sizeof(path));
    char *dir = tu_tmpdir("cut-scratch");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.worker_threads = 0;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    bool ok = rc == 0;
    if (!ok) {
        cc_fail_at(__FILE__, __LINE__, "scratch open: %s", htkv_strerror(rc));
    }
    if (ok && (rc = htkv_snapshot_restore(db, path)) != 0) {
        cc_fail_at(__FILE__, __LINE__, "restore of snapshot %u: %s", i, htkv_strerror(rc));
        ok = false;
    }
    ok = ok && model_at(hist, n, sh->snap_version[i], m);
    ok = ok && store_equals(db, m, sh->snap_version[i]);
    if (db != NULL && htkv_close(db) != 0) {
        cc_fail_at(__FILE__, __LINE__, "scratch close");
        ok = false;
    }
    tu_rmrf(dir);
    free(dir);
    return ok;
}

/* The whole history from the feed; each snapshot against it. */
static void
check_all(struct shared *sh)
{
    htkv_changes *c = NULL;
    int rc = htkv_changes_since(sh->db, 0, &c);
    if (rc != 0) {
        cc_fail_at(__FILE__, __LINE__, "changes_since(0): %s", htkv_strerror(rc));
        return;
    }
    size_t n = (size_t)htkv_changes_count(c);
    htkv_command *hist = calloc(n + 1, sizeof(*hist));
    struct model_key *m = calloc(KEYS, sizeof(*m));
    size_t got = 0;
    while (hist != NULL && got < n && (rc = htkv_changes_next(c, &hist[got])) == 1) {
        got++;
    }
    if (hist == NULL || m == NULL || got != n) {
        cc_fail_at(__FILE__, __LINE__, "reading the feed: %zu of %zu", got, n);
    }
    for (unsigned i = 0; i < sh->nsnaps && !cc_failed(); i++) {
        (void)check_snapshot(sh, i, hist, got, m);
    }
    free(hist);
    free(m);
    htkv_changes_destroy(c);
}

static void
run_mode(const struct cc_mode *m, uint64_t seed)
{
    cc_set_mode(m);
    struct shared sh = { .seed = seed, .dir = tu_tmpdir("cut") };
    htkv_config cfg;
    cc_config(&cfg, sh.dir, m);
    cfg.compaction_interval_ms = 0; /* the feed keeps the whole history */
    cfg.emit_snapshot_after_compaction = 0;
    sh.db = cc_open(&cfg);
    struct writer w[WRITERS];
    pthread_t wt[WRITERS], st;
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ .sh = &sh, .id = i };
        assert_int_equal(pthread_create(&wt[i], NULL, writer_main, &w[i]), 0);
    }
    assert_int_equal(pthread_create(&st, NULL, snapshotter_main, &sh), 0);
    for (unsigned i = 0; i < WRITERS; i++) {
        pthread_join(wt[i], NULL);
    }
    atomic_store(&sh.writers_done, 1);
    pthread_join(st, NULL);
    check_all(&sh);
    fprintf(stderr, "[snapshot_cut] %s: %u snapshots checked\n", cc_mode_text, sh.nsnaps);
    assert_int_equal(htkv_close(sh.db), 0);
    cc_assert_ok();
    tu_rmrf(sh.dir);
    free(sh.dir);
}

/* Goal: see the file header. Method: run_mode in each mode of the matrix. */
static void
test_snapshot_is_the_cut_at_its_version(void **state)
{
    (void)state;
    uint64_t seed = cc_seed("test_snapshot_is_the_cut_at_its_version");
    static const struct cc_mode modes[] = {
        { 0, HTKV_IO_AUTO, HTKV_SYNC_NEVER },
        { 0, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS },
        { 2, HTKV_IO_URING, HTKV_SYNC_NEVER },
        { 2, HTKV_IO_URING, HTKV_SYNC_ALWAYS },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (modes[i].workers > 0 && modes[i].backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        run_mode(&modes[i], seed + i);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_is_the_cut_at_its_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
