/*
 * test_budget_race.c - the memory budget (htkv_config.memory_budget_bytes, engine/cold.c) under
 * concurrent readers, writers, iterators, views, compaction and snapshots: readers must never
 * miss a key that exists throughout, read a stale or wrong value, see a view change, or have an
 * iterator skip or repeat a key; nothing may crash or race (the test runs under TSan too).
 *
 * Store: 2 shards, 64 KiB segments, a budget of 32..64 KiB (from the seed), HTKV_SYNC_NEVER.
 * BR_STABLE "stable" keys (prefix "s") and BR_CHURN "churn" keys (prefix "c") are preloaded,
 * interleaved, so that most keys are cold when the threads start. Writer threads then overwrite
 * and delete churn keys (writer w owns the churn keys i with i % BR_WRITERS == w): a write to a
 * cold key promotes it, and the CLOCK hand evicts after writes; a thread runs htkv_compact_now()
 * in a loop (compaction promotes a victim's cold keys and copies them; their new segment is
 * indexed and evicted again) and, every 4th round, writes a snapshot and checks it restored.
 * Readers are lock-free and race with all of it.
 *
 * Model of churn key i: its writes are numbered 1, 2, ... (op 1: the preload's put; op 0: never
 * written, absent). Op c deletes the key when br_is_del(i, c) (odd keys only: even keys are never
 * deleted), else puts cc_value(c, BR_CHURN_ID + i), a value that names its op. The owning writer
 * stores issued[i] = c before op c starts and done[i] = c once it returned (asynchronous writes:
 * once their completion ran). Stable keys are never written after the preload.
 *
 * Invariants checked
 *   1. A stable key is found by every read (get, get_version, get_alloc, contains, view get),
 *      always with its one value.
 *   2. A read of churn key i that starts after done[i] == lo and ends before issued[i] == hi
 *      returns the state after some op c in [lo, hi]: the value of put c, or HTKV_ENOTFOUND for
 *      a delete c (no stale value from a key index, no key lost between memory and the files).
 *   3. Monotonic reads: a thread never sees an older op of a churn key after a newer one.
 *   4. A delete finds the key exactly when the model holds it; a batch conditional on a churn
 *      key's current version (htkv_get_version() just before, by the key's only writer) commits.
 *      With workers, a thread's writes apply in its order: an unconditional batch written while
 *      the thread's asynchronous writes are still queued applies after them (checked through
 *      (2), (3), (7) and the completions' expected results).
 *   5. An iterator over the stable prefix returns exactly the stable keys, in order, each once,
 *      with their values (prefix, range and paged with htkv_iter_set_limit(); also through
 *      views); over the churn prefix, keys in increasing order, each in a state (2) allows for
 *      the scan's span.
 *   6. A view keeps returning what its gets first read, through view gets and view scans alike
 *      (snapshot isolation), while writes, evictions, promotions and compactions go on.
 *   7. A snapshot written meanwhile, restored into a store of its own, holds every stable key
 *      and each churn key in a state (2) allows for the snapshot's span.
 *   8. At the end, and after a reopen, every key holds its model's state, and the budget both
 *      evicted and promoted (htkv_stats.evictions, promotions > 0).
 *
 * Tests: point reads; iterators (background compaction too); views; 2 worker threads with
 * asynchronous writes and every kind of reader; stores that start below their budget, so that
 * scans read sorted runs and the merge path, and cross it (first key indexes and cold sets)
 * under iterators and views. A crash on any thread prints the seed and its stack.
 * Seed: HTKV_SEED (printed; failures name it). Scale: HTKV_CC_SCALE (cc_ops());
 * HTKV_BUDGET_SEGMENT_KIB: segment size for soak runs.
 */
#include "tests/concurrency/cc_util.h"

#include "engine/run.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#define BR_STABLE 2000u
#define BR_CHURN (BR_STABLE / 10u * 3u) /* 3 churn keys every 10 stable ones in the preload */
#define BR_CHURN_ID 100000u             /* key id of churn key 0 in its values */
#define BR_STABLE_TAG 0x5AB1Eull        /* tag of every stable value */
#define BR_WRITERS 2u
#define BR_OTHERS 6u        /* threads beside the writers: readers, scanners, viewers */
#define BR_KEY_MAX 40       /* "s" or "c", 5 digits, up to 23 more bytes, NUL */
#define BR_GROW_STABLE 300u /* stable keys of a store that starts below its budget */

/* Stable keys of the running round (set by the test thread before it starts the others). */
static uint32_t br_nstable;

struct br {
    htkv_db *db;
    uint64_t seed;
    unsigned writer_ops;
    _Atomic int go; /* writers start */
    _Atomic int stop;
    _Atomic uint64_t pending; /* asynchronous writes whose completion did not run yet */
    _Atomic uint64_t issued[BR_CHURN];
    _Atomic uint64_t done[BR_CHURN];
    _Atomic uint64_t reads, scans, views, compactions, batches, asyncs, snapshots;
    const char *snapdir; /* the compactor's snapshots and the stores it restores them into */
    uint64_t snap_lo[BR_CHURN], snap_hi[BR_CHURN];
};

/* One thread of a test: a writer (async: half its writes asynchronous) or a reader. */
struct br_thread {
    struct br *b;
    unsigned id;
    bool async;
    _Atomic uint64_t pending; /* a writer's asynchronous writes not completed */
    uint64_t last[BR_CHURN];  /* highest op of each churn key this thread saw */
    uint64_t lo[BR_CHURN], hi[BR_CHURN], tags[BR_CHURN];
};

/* What runs beside the writers in one test. */
struct br_setup {
    const char *name;
    unsigned workers;
    unsigned compaction_ms;
    unsigned readers, scanners, viewers;
    bool grow;       /* start below the budget: only BR_GROW_STABLE keys, no churn key yet */
    unsigned rounds; /* stores, one after the other */
};

/* Key @p id of kind @p kind ('s' or 'c'): the kind, 5 digits, then 0..23 more bytes (from the
 * id), so that key index pages hold keys of many lengths. Byte order is id order. */
static size_t
br_key(char kind, uint32_t id, char *buf)
{
    int n = snprintf(buf, BR_KEY_MAX, "%c%05u", kind, id);
    size_t extra = (size_t)(cc_mix(id * 2u + (kind == 'c' ? 1u : 0u)) % 24u);
    for (size_t k = 0; k < extra; k++) {
        buf[(size_t)n + k] = (char)('a' + (id + k) % 26u);
    }
    buf[(size_t)n + extra] = '\0';
    return (size_t)n + extra;
}

static size_t
br_skey(uint32_t j, char *buf)
{
    return br_key('s', j, buf);
}

static size_t
br_ckey(uint32_t i, char *buf)
{
    return br_key('c', i, buf);
}

/* Churn key id of an iterator's key, or UINT32_MAX when it is not one. */
static uint32_t
br_ckey_id(const void *key, size_t klen)
{
    char tmp[8], want[BR_KEY_MAX];
    if (klen < 6 || ((const char *)key)[0] != 'c') {
        return UINT32_MAX;
    }
    memcpy(tmp, (const char *)key + 1, 5);
    tmp[5] = '\0';
    unsigned long v = strtoul(tmp, NULL, 10);
    if (v >= BR_CHURN || br_ckey((uint32_t)v, want) != klen || memcmp(want, key, klen) != 0) {
        return UINT32_MAX;
    }
    return (uint32_t)v;
}

/* Does op @p c of churn key @p i delete it? */
static bool
br_is_del(uint32_t i, uint64_t c)
{
    return (i & 1u) != 0 && c > 1 && cc_mix(((uint64_t)i << 32) ^ c) % 3u == 0;
}

static const char *
br_err(int rc)
{
    return htkv_strerror(rc);
}

/* Invariant 1 for a read of stable key @p j. */
static bool
br_check_stable(uint32_t j, int rc, const void *val, size_t len, const char *what)
{
    uint64_t t = 0;
    CC_CHECK(rc == 0, "%s s%05u: %s: a stable key, never written since the preload, missed", what,
             j, br_err(rc));
    CC_CHECK(cc_value_decode(val, len, j, &t) && t == BR_STABLE_TAG,
             "%s s%05u: not its value (%zu bytes, tag %llu)", what, j, len, (unsigned long long)t);
    return true;
}

/* Explain a read of churn key @p i that (2) or (3) rules out: what the model allowed. */
static void
br_churn_fail(const char *file, int line, uint32_t i, const char *what, const char *read,
              uint64_t done, uint64_t issued, uint64_t saw)
{
    cc_fail_at(file, line,
               "%s c%05u: %s, but op %llu had completed before the read and op %llu was the last "
               "begun when it returned, and this thread had seen op %llu (deletes: odd keys, "
               "br_is_del()): a stale, lost or wrong read",
               what, i, read, (unsigned long long)done, (unsigned long long)issued,
               (unsigned long long)saw);
}

/*
 * Invariants 2 and 3 for a read of churn key @p i between done == @p lo and issued == @p hi that
 * returned @p rc (and, with 0, @p len bytes at @p val). @p last: the highest op this thread saw
 * of the key, raised here (NULL: not checked). *@p tag: the op read, 0 when absent.
 */
static bool
br_check_churn(uint32_t i, uint64_t lo, uint64_t hi, int rc, const void *val, size_t len,
               uint64_t *last, uint64_t *tag, const char *what)
{
    uint64_t t = 0, from = lo, saw = last != NULL ? *last : 0;
    if (saw > 0) { /* not older than what the thread saw */
        uint64_t floor = saw + (rc == HTKV_ENOTFOUND && !br_is_del(i, saw) ? 1 : 0);
        from = floor > from ? floor : from;
    }
    *tag = 0;
    if (rc == HTKV_ENOTFOUND) {
        uint64_t c = from;
        while (c <= hi && c > 0 && !br_is_del(i, c)) { /* op 0: not written yet */
            c++;
        }
        if (c > hi) {
            br_churn_fail(__FILE__, __LINE__, i, what, "HTKV_ENOTFOUND", lo, hi, saw);
            return false;
        }
        t = c; /* the oldest delete the read may have seen */
    } else {
        CC_CHECK(rc == 0 && cc_value_decode(val, len, BR_CHURN_ID + i, &t),
                 "%s c%05u: %s, or not a value of this key (%zu bytes)", what, i, br_err(rc), len);
        if (t < from || t > hi || br_is_del(i, t)) {
            char read[48];
            snprintf(read, sizeof(read), "the value of op %llu", (unsigned long long)t);
            br_churn_fail(__FILE__, __LINE__, i, what, read, lo, hi, saw);
            return false;
        }
        *tag = t;
    }
    if (last != NULL) {
        *last = t;
    }
    return true;
}

/* One read of a random stable key through one of the point-read calls. */
static bool
br_read_stable(struct br *b, uint64_t r)
{
    uint32_t j = (uint32_t)(r % br_nstable);
    char key[BR_KEY_MAX];
    size_t kl = br_skey(j, key), len = 0;
    unsigned char buf[CC_VAL_MAX];
    int rc;
    switch ((r >> 32) % 4u) {
    case 0:
        rc = htkv_get(b->db, key, kl, buf, sizeof(buf), &len);
        return br_check_stable(j, rc, buf, len, "get");
    case 1: {
        uint64_t ver = 0;
        rc = htkv_get_version(b->db, key, kl, buf, sizeof(buf), &len, &ver);
        CC_CHECK(rc != 0 || (ver > 0 && ver <= BR_STABLE + BR_CHURN), "get_version s%05u: %llu", j,
                 (unsigned long long)ver);
        return br_check_stable(j, rc, buf, len, "get_version");
    }
    case 2: {
        void *p = NULL;
        rc = htkv_get_alloc(b->db, key, kl, &p, &len);
        bool ok = br_check_stable(j, rc, p, len, "get_alloc");
        htkv_free(p);
        return ok;
    }
    default:
        rc = htkv_contains(b->db, key, kl);
        CC_CHECK(rc == 1, "contains s%05u: %d (%s): a stable key missed", j, rc,
                 rc < 0 ? br_err(rc) : "absent");
        return true;
    }
}

/* One get of a random churn key (invariants 2 and 3). */
static bool
br_read_churn(struct br *b, struct br_thread *t, uint64_t r)
{
    uint32_t i = (uint32_t)(r % BR_CHURN);
    char key[BR_KEY_MAX];
    size_t kl = br_ckey(i, key), len = 0;
    unsigned char buf[CC_VAL_MAX];
    uint64_t lo = atomic_load(&b->done[i]);
    int rc = htkv_get(b->db, key, kl, buf, sizeof(buf), &len);
    uint64_t hi = atomic_load(&b->issued[i]), tag;
    return br_check_churn(i, lo, hi, rc, buf, len, &t->last[i], &tag, "get");
}

static void *
br_reader(void *arg)
{
    struct br_thread *t = arg;
    struct br *b = t->b;
    uint64_t rng = cc_subseed(b->seed, 100 + t->id, 2);
    while (!atomic_load(&b->stop) && !cc_failed()) {
        uint64_t r = tu_rand(&rng);
        bool ok = (r & 1) != 0 ? br_read_stable(b, r >> 1) : br_read_churn(b, t, r >> 1);
        if (!ok) {
            break;
        }
        atomic_fetch_add_explicit(&b->reads, 1, memory_order_relaxed);
    }
    return NULL;
}

/* ---- writers ---------------------------------------------------------------------------------
 */

/* Op @p c of churn key @p i completed: done[i] rises to it (completions may come late). */
static void
br_done(struct br *b, uint32_t i, uint64_t c)
{
    uint64_t d = atomic_load(&b->done[i]);
    while (d < c && !atomic_compare_exchange_weak(&b->done[i], &d, c)) {
    }
}

/* Op @p c of churn key @p i, synchronously (invariant 4 for a delete). */
static bool
br_write_sync(struct br *b, uint32_t i, uint64_t c)
{
    char key[BR_KEY_MAX];
    unsigned char val[CC_VAL_MAX];
    size_t kl = br_ckey(i, key);
    atomic_store(&b->issued[i], c);
    if (br_is_del(i, c)) {
        int rc = htkv_delete(b->db, key, kl), want = br_is_del(i, c - 1) ? HTKV_ENOTFOUND : 0;
        CC_CHECK(rc == want, "delete c%05u (op %llu): %s, want %s", i, (unsigned long long)c,
                 br_err(rc), br_err(want));
    } else {
        size_t vl = cc_value(c, BR_CHURN_ID + i, CC_VAL_HDR, val);
        int rc = htkv_put(b->db, key, kl, val, vl);
        CC_CHECK(rc == 0, "put c%05u (op %llu): %s", i, (unsigned long long)c, br_err(rc));
    }
    br_done(b, i, c);
    return true;
}

/* An asynchronous op in flight. */
struct br_async {
    struct br *b;
    _Atomic uint64_t *mine; /* its writer's pending count */
    uint32_t i;
    uint64_t c;
    int want;
};

static void
br_async_done(int rc, uint64_t version, void *ctx)
{
    struct br_async *a = ctx;
    struct br *b = a->b;
    (void)version;
    if (rc != a->want) {
        cc_fail_at(__FILE__, __LINE__, "async op %llu of c%05u: %s, want %s",
                   (unsigned long long)a->c, a->i, br_err(rc), br_err(a->want));
    }
    br_done(b, a->i, a->c);
    _Atomic uint64_t *mine = a->mine;
    free(a);
    atomic_fetch_sub(mine, 1);
    atomic_fetch_sub(&b->pending, 1);
}

/* Op @p c of churn key @p i through htkv_put_async()/htkv_delete_async(); synchronously when
 * the worker's queue is full. */
static bool
br_write_async(struct br *b, struct br_thread *t, uint32_t i, uint64_t c)
{
    char key[BR_KEY_MAX];
    unsigned char val[CC_VAL_MAX];
    size_t kl = br_ckey(i, key);
    bool del = br_is_del(i, c);
    struct br_async *a = malloc(sizeof(*a));
    CC_CHECK(a != NULL, "malloc");
    *a = (struct br_async){ b, &t->pending, i, c, del && br_is_del(i, c - 1) ? HTKV_ENOTFOUND : 0 };
    atomic_store(&b->issued[i], c);
    atomic_fetch_add(&t->pending, 1);
    atomic_fetch_add(&b->pending, 1);
    int rc;
    if (del) {
        rc = htkv_delete_async(b->db, key, kl, br_async_done, a);
    } else {
        size_t vl = cc_value(c, BR_CHURN_ID + i, CC_VAL_HDR, val);
        rc = htkv_put_async(b->db, key, kl, val, vl, br_async_done, a);
    }
    if (rc != 0) {
        atomic_fetch_sub(&t->pending, 1);
        atomic_fetch_sub(&b->pending, 1);
        free(a);
        CC_CHECK(rc == HTKV_EBUSY, "async op %llu of c%05u: %s", (unsigned long long)c, i,
                 br_err(rc));
        return br_write_sync(b, i, c);
    }
    atomic_fetch_add_explicit(&b->asyncs, 1, memory_order_relaxed);
    return true;
}

/* The next ops of churn keys @p ids[0..3) in one batch; with @p cond, conditional on ids[0]'s
 * version as htkv_get_version() reads it first (invariant 4). */
static bool
br_write_batch(struct br *b, htkv_batch *bt, const uint32_t *ids, bool cond)
{
    char key[BR_KEY_MAX];
    unsigned char val[CC_VAL_MAX];
    uint64_t c[3], ver = 0;
    size_t len = 0, kl = br_ckey(ids[0], key);
    htkv_batch_clear(bt);
    int rc = cond ? htkv_get_version(b->db, key, kl, NULL, 0, &len, &ver) : HTKV_ETOOSMALL;
    CC_CHECK(rc == HTKV_ETOOSMALL || rc == HTKV_ENOTFOUND, "get_version c%05u: %s", ids[0],
             br_err(rc));
    CC_CHECK(!cond || htkv_batch_check(bt, key, kl, rc == HTKV_ENOTFOUND ? 0 : ver) == 0,
             "batch_check");
    for (unsigned k = 0; k < 3; k++) {
        c[k] = atomic_load(&b->issued[ids[k]]) + 1;
        kl = br_ckey(ids[k], key);
        size_t vl = cc_value(c[k], BR_CHURN_ID + ids[k], CC_VAL_HDR, val);
        rc = br_is_del(ids[k], c[k]) ? htkv_batch_delete(bt, key, kl)
                                     : htkv_batch_put(bt, key, kl, val, vl);
        CC_CHECK(rc == 0, "batch op: %s", br_err(rc));
    }
    for (unsigned k = 0; k < 3; k++) {
        atomic_store(&b->issued[ids[k]], c[k]);
    }
    rc = htkv_write(b->db, bt);
    CC_CHECK(rc == 0, "batch on c%05u (version %llu), c%05u, c%05u: %s", ids[0],
             (unsigned long long)ver, ids[1], ids[2], br_err(rc));
    for (unsigned k = 0; k < 3; k++) {
        br_done(b, ids[k], c[k]);
    }
    atomic_fetch_add_explicit(&b->batches, 1, memory_order_relaxed);
    return true;
}

static void *
br_writer(void *arg)
{
    struct br_thread *t = arg;
    struct br *b = t->b;
    uint64_t rng = cc_subseed(b->seed, t->id, 1);
    uint64_t end = cc_now_ns() + (CC_SANITIZER_SCALE < 1.0 ? 40 : 10) * 1000000000ull;
    htkv_batch *bt = NULL;
    CC_CHECK(htkv_batch_create(&bt) == 0, "batch_create");
    while (!atomic_load(&b->go)) {
        cc_sleep_ms(1);
    }
    for (unsigned n = 0; n < b->writer_ops && !cc_failed(); n++) {
        uint64_t r = tu_rand(&rng);
        uint32_t i = (uint32_t)(r % (BR_CHURN / BR_WRITERS)) * BR_WRITERS + t->id;
        unsigned kind = (unsigned)((r >> 40) % 16u);
        bool ok;
        if (kind == 0) {
            /* A condition must read the thread's own writes: wait for them, or, half the time
             * with workers, write unconditionally behind them (a thread's writes apply in its
             * order, htkv_config.worker_threads). */
            bool cond = !t->async || ((r >> 20) & 1) != 0;
            while (cond && atomic_load(&t->pending) != 0) {
                sched_yield();
            }
            uint32_t ids[3] = { i, (i + BR_WRITERS * 7) % BR_CHURN,
                                (i + BR_WRITERS * 31) % BR_CHURN };
            ok = br_write_batch(b, bt, ids, cond);
        } else if (t->async && kind < 9) {
            ok = br_write_async(b, t, i, atomic_load(&b->issued[i]) + 1);
        } else {
            ok = br_write_sync(b, i, atomic_load(&b->issued[i]) + 1);
        }
        if (!ok || cc_now_ns() > end) {
            break;
        }
        if (n % 64 == 63) {
            sched_yield(); /* 2 CPUs: let the readers meet the writes half-way */
        }
    }
    htkv_batch_destroy(bt);
    return NULL;
}

/* Invariant 7: a store restored from a snapshot of @p b holds every stable key and each churn key
 * in a state allowed between the snapshot's start and end (a snapshot reads cold keys as hot ones).
 */
static bool
br_check_restored(struct br *b, htkv_db *db)
{
    char key[BR_KEY_MAX];
    unsigned char buf[CC_VAL_MAX];
    uint64_t tag;
    for (uint32_t j = 0; j < br_nstable; j++) {
        size_t len = 0;
        int rc = htkv_get(db, key, br_skey(j, key), buf, sizeof(buf), &len);
        if (!br_check_stable(j, rc, buf, len, "restored snapshot")) {
            return false;
        }
    }
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        size_t len = 0;
        int rc = htkv_get(db, key, br_ckey(i, key), buf, sizeof(buf), &len);
        if (!br_check_churn(i, b->snap_lo[i], b->snap_hi[i], rc, buf, len, NULL, &tag,
                            "restored snapshot")) {
            return false;
        }
    }
    return true;
}

/* Write a snapshot while everything runs, restore it into a store of its own, check that. */
static bool
br_snapshot_round(struct br *b)
{
    char path[4200], dir[4200];
    snprintf(path, sizeof(path), "%s/snap", b->snapdir);
    snprintf(dir, sizeof(dir), "%s/db", b->snapdir);
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        b->snap_lo[i] = atomic_load(&b->done[i]);
    }
    int rc = htkv_snapshot_write(b->db, path);
    CC_CHECK(rc == 0, "snapshot_write: %s %s", br_err(rc), htkv_last_error());
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        b->snap_hi[i] = atomic_load(&b->issued[i]);
    }
    tu_rmrf(dir);
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.shard_count = 2;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.compaction_interval_ms = 0;
    cfg.log_fn = cc_log;
    htkv_db *db = NULL;
    rc = htkv_open(&cfg, &db);
    CC_CHECK(rc == 0, "open a store to restore into: %s", br_err(rc));
    rc = htkv_snapshot_restore(db, path);
    if (rc != 0) {
        cc_fail_at(__FILE__, __LINE__, "snapshot_restore: %s %s", br_err(rc), htkv_last_error());
    }
    bool ok = rc == 0 && br_check_restored(b, db);
    rc = htkv_close(db);
    CC_CHECK(rc == 0, "close the restored store: %s", br_err(rc));
    atomic_fetch_add(&b->snapshots, 1);
    return ok;
}

/* htkv_compact_now() in a loop; every 4th round, a snapshot checked as restored. */
static void *
br_compactor(void *arg)
{
    struct br *b = arg;
    for (unsigned n = 0; !atomic_load(&b->stop) && !cc_failed(); n++) {
        int rc = htkv_compact_now(b->db);
        CC_CHECK(rc == 0, "compact_now: %s", br_err(rc));
        atomic_fetch_add(&b->compactions, 1);
        if (n % 4 == 1 && !br_snapshot_round(b)) {
            break;
        }
        cc_sleep_ms(2);
    }
    return NULL;
}

/* ---- iterators -------------------------------------------------------------------------------
 */

/* Walk @p it over stable keys from id *@p next on: each once, in order, with its value
 * (invariant 5). Destroys @p it. */
static bool
br_walk_stable(htkv_iter *it, uint32_t *next, const char *what)
{
    const void *k, *v;
    size_t kl, vl;
    int rc = 0;
    bool ok = true;
    while (ok && (rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        char want[BR_KEY_MAX];
        size_t wl = br_skey(*next, want);
        if (*next >= br_nstable || kl != wl || memcmp(k, want, wl) != 0) {
            cc_fail_at(__FILE__, __LINE__,
                       "%s: key '%.*s' where s%05u was due: a stable key skipped, repeated or "
                       "out of order",
                       what, (int)kl, (const char *)k, *next);
            ok = false;
            break;
        }
        ok = br_check_stable(*next, 0, v, vl, what);
        (*next)++;
    }
    htkv_iter_destroy(it);
    CC_CHECK(!ok || rc == 0, "%s: iter_next %s", what, br_err(rc));
    return ok;
}

/* Pages of at most 97 keys, each scan from the last key seen plus a 0x00 byte. */
static bool
br_scan_stable_paged(struct br *b, htkv_view *v, uint32_t *next)
{
    char start[BR_KEY_MAX + 1] = "s";
    size_t sl = 1;
    for (;;) {
        uint32_t before = *next;
        htkv_iter *it = NULL;
        int rc = v != NULL ? htkv_view_scan(v, start, sl, "t", 1, &it)
                           : htkv_scan(b->db, start, sl, "t", 1, &it);
        CC_CHECK(rc == 0, "scan: %s", br_err(rc));
        CC_CHECK(htkv_iter_set_limit(it, 97) == 0, "set_limit");
        if (!br_walk_stable(it, next, v != NULL ? "paged view scan" : "paged scan")) {
            return false;
        }
        if (*next == before || *next >= br_nstable) {
            return true;
        }
        sl = br_skey(*next - 1, start) + 1; /* its NUL is the 0x00 byte */
    }
}

/* One pass over the stable prefix, of kind @p kind (prefix, range, paged), through @p v or a
 * private view (invariant 5). */
static bool
br_scan_stable(struct br *b, htkv_view *v, unsigned kind)
{
    uint32_t next = 0;
    htkv_iter *it = NULL;
    int rc = 0;
    if (kind % 3 == 2) {
        if (!br_scan_stable_paged(b, v, &next)) {
            return false;
        }
    } else {
        if (kind % 3 == 0) {
            rc = v != NULL ? htkv_view_get_prefix(v, "s", 1, &it)
                           : htkv_get_prefix(b->db, "s", 1, &it);
        } else {
            rc = v != NULL ? htkv_view_scan(v, "s", 1, "t", 1, &it)
                           : htkv_scan(b->db, "s", 1, "t", 1, &it);
        }
        CC_CHECK(rc == 0, "prefix/scan: %s", br_err(rc));
        if (!br_walk_stable(it, &next, v != NULL ? "view scan" : "scan")) {
            return false;
        }
    }
    CC_CHECK(next == br_nstable, "%s (kind %u): %u stable keys of %u", v ? "view scan" : "scan",
             kind % 3, next, br_nstable);
    return true;
}

/*
 * One pass over the churn prefix (invariant 5): keys in increasing order, each in a state
 * allowed between done before the scan began and issued when the scan reached it; a key the
 * scan skipped must have been deletable then. Monotonic against the thread's earlier reads.
 */
static bool
br_scan_churn(struct br *b, struct br_thread *t)
{
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        t->lo[i] = atomic_load(&b->done[i]);
    }
    htkv_iter *it = NULL;
    int rc = htkv_get_prefix(b->db, "c", 1, &it), more = 0;
    CC_CHECK(rc == 0, "get_prefix c: %s", br_err(rc));
    uint32_t expect = 0;
    const void *k, *v;
    size_t kl, vl;
    bool ok = true;
    uint64_t tag;
    while (ok && (more = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        uint32_t id = br_ckey_id(k, kl);
        if (id == UINT32_MAX || id < expect) {
            cc_fail_at(__FILE__, __LINE__, "churn scan: key '%.*s' after c%05u", (int)kl,
                       (const char *)k, expect - 1);
            ok = false;
        }
        for (; ok && expect <= id; expect++) {
            uint64_t hi = atomic_load(&b->issued[expect]);
            ok = br_check_churn(expect, t->lo[expect], hi, expect == id ? 0 : HTKV_ENOTFOUND, v, vl,
                                &t->last[expect], &tag, "churn scan");
        }
    }
    htkv_iter_destroy(it);
    CC_CHECK(!ok || more == 0, "churn scan: iter_next %s", br_err(more));
    for (; ok && expect < BR_CHURN; expect++) {
        uint64_t hi = atomic_load(&b->issued[expect]);
        ok = br_check_churn(expect, t->lo[expect], hi, HTKV_ENOTFOUND, NULL, 0, &t->last[expect],
                            &tag, "churn scan (end)");
    }
    return ok;
}

static void *
br_scanner(void *arg)
{
    struct br_thread *t = arg;
    struct br *b = t->b;
    for (unsigned n = 0; !atomic_load(&b->stop) && !cc_failed(); n++) {
        bool ok = n % 4 == 3 ? br_scan_churn(b, t) : br_scan_stable(b, NULL, n + t->id);
        if (!ok) {
            break;
        }
        atomic_fetch_add_explicit(&b->scans, 1, memory_order_relaxed);
    }
    return NULL;
}

/* ---- views -----------------------------------------------------------------------------------
 */

/* Read every churn key through @p v into t->tags (0: absent), each in a state allowed around
 * the view's opening (t->lo, t->hi). */
static bool
br_view_record(htkv_view *v, struct br_thread *t)
{
    char key[BR_KEY_MAX];
    unsigned char buf[CC_VAL_MAX];
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        size_t len = 0;
        int rc = htkv_view_get(v, key, br_ckey(i, key), buf, sizeof(buf), &len);
        if (!br_check_churn(i, t->lo[i], t->hi[i], rc, buf, len, NULL, &t->tags[i],
                            "view get (first)")) {
            return false;
        }
    }
    return true;
}

/* View gets of @p n random churn keys return what the view first read (invariant 6); and a
 * stable key. */
static bool
br_view_gets(htkv_view *v, const struct br_thread *t, uint64_t *rng, unsigned n)
{
    char key[BR_KEY_MAX];
    unsigned char buf[CC_VAL_MAX];
    for (unsigned k = 0; k < n; k++) {
        uint32_t i = (uint32_t)(tu_rand(rng) % BR_CHURN);
        size_t len = 0;
        uint64_t tag = 0;
        int rc = htkv_view_get(v, key, br_ckey(i, key), buf, sizeof(buf), &len);
        bool same = t->tags[i] == 0 ? rc == HTKV_ENOTFOUND
                                    : rc == 0 && cc_value_decode(buf, len, BR_CHURN_ID + i, &tag) &&
                                          tag == t->tags[i];
        CC_CHECK(same, "view get c%05u: %s (op %llu) where the view first read op %llu", i,
                 br_err(rc), (unsigned long long)tag, (unsigned long long)t->tags[i]);
    }
    uint32_t j = (uint32_t)(tu_rand(rng) % br_nstable);
    size_t len = 0;
    int rc = htkv_view_get(v, key, br_skey(j, key), buf, sizeof(buf), &len);
    return br_check_stable(j, rc, buf, len, "view get");
}

/* The view's scan item @p k (@p kl bytes, value @p val) after churn key *@p expect - 1: no key the
 * view read skipped, and this one as first read (invariant 6). */
static bool
br_view_scan_item(const struct br_thread *t, const void *k, size_t kl, const void *val, size_t vl,
                  uint32_t *expect)
{
    uint32_t id = br_ckey_id(k, kl);
    uint64_t tag = 0;
    CC_CHECK(id != UINT32_MAX && id >= *expect,
             "view scan: '%.*s' where c%05u or a later key was due: repeated or out of order",
             (int)kl, (const char *)k, *expect);
    for (; *expect < id; (*expect)++) {
        CC_CHECK(t->tags[*expect] == 0,
                 "view scan: skipped c%05u, which the view's get read as op %llu (next: %.*s)",
                 *expect, (unsigned long long)t->tags[*expect], (int)kl, (const char *)k);
    }
    bool same = cc_value_decode(val, vl, BR_CHURN_ID + id, &tag) && tag == t->tags[id];
    CC_CHECK(same, "view scan: c%05u as op %llu (%zu bytes), where the view's get read op %llu", id,
             (unsigned long long)tag, vl, (unsigned long long)t->tags[id]);
    *expect = id + 1;
    return true;
}

/* A view scan of the churn prefix shows exactly what the view's gets read (invariant 6). */
static bool
br_view_scan_churn(htkv_view *v, const struct br_thread *t)
{
    htkv_iter *it = NULL;
    int rc = htkv_view_scan(v, "c", 1, "d", 1, &it), more = 0;
    CC_CHECK(rc == 0, "view_scan: %s", br_err(rc));
    uint32_t expect = 0;
    const void *k, *val;
    size_t kl, vl;
    bool ok = true;
    while (ok && (more = htkv_iter_next(it, &k, &kl, &val, &vl)) == 1) {
        ok = br_view_scan_item(t, k, kl, val, vl, &expect);
    }
    htkv_iter_destroy(it);
    CC_CHECK(!ok || more == 0, "view scan: iter_next %s", br_err(more));
    for (; ok && expect < BR_CHURN; expect++) {
        CC_CHECK(t->tags[expect] == 0,
                 "view scan: ended before c%05u, which the view's get read as op %llu", expect,
                 (unsigned long long)t->tags[expect]);
    }
    return ok;
}

/* One view: record the churn keys, then re-read them over ~20 ms of writes. */
static bool
br_view_round(struct br *b, struct br_thread *t, uint64_t *rng)
{
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        t->lo[i] = atomic_load(&b->done[i]);
    }
    htkv_view *v = NULL;
    int rc = htkv_view_open(b->db, &v);
    CC_CHECK(rc == 0, "view_open: %s", br_err(rc));
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        t->hi[i] = atomic_load(&b->issued[i]);
    }
    bool ok = br_view_record(v, t) && br_view_scan_churn(v, t);
    for (unsigned r = 0; ok && r < 10; r++) {
        cc_sleep_ms(2);
        ok = br_view_gets(v, t, rng, 64);
        if (ok && r % 3 == 2) {
            ok = br_view_scan_churn(v, t);
        }
        if (ok && r % 4 == 3) {
            ok = br_scan_stable(b, v, r / 4 + t->id);
        }
    }
    htkv_view_close(v);
    return ok;
}

static void *
br_viewer(void *arg)
{
    struct br_thread *t = arg;
    struct br *b = t->b;
    uint64_t rng = cc_subseed(b->seed, 200 + t->id, 3);
    while (!atomic_load(&b->stop) && !cc_failed()) {
        if (!br_view_round(b, t, &rng)) {
            break;
        }
        atomic_fetch_add_explicit(&b->views, 1, memory_order_relaxed);
    }
    return NULL;
}

/* ---- the tests -------------------------------------------------------------------------------
 */

/*
 * The store of a round: 2 shards, 64 KiB segments, a budget of 32..64 KiB (from the seed).
 * HTKV_BUDGET_SEGMENT_KIB sets another segment size (64 or more) for soak runs: above 64 KiB
 * (COLD_SEAL_MIN), shards also seal their active segment early when its keys take half their
 * share.
 */
static void
br_config(htkv_config *cfg, const char *dir, const struct cc_mode *m, unsigned compaction_ms,
          uint64_t seed)
{
    const char *seg = getenv("HTKV_BUDGET_SEGMENT_KIB");
    cc_config(cfg, dir, m);
    cfg->shard_count = 2;
    cfg->max_segment_bytes = (seg != NULL && atoi(seg) > 0 ? (uint64_t)atoi(seg) : 64u) * 1024;
    cfg->memory_budget_bytes = (32u + cc_mix(seed) % 33u) * 1024u;
    cfg->compaction_interval_ms = compaction_ms;
}

/* Stable keys with 3 churn keys after every 10th..12th (both kinds share every segment); in
 * grow mode, BR_GROW_STABLE stable keys alone (the store stays below its budget). */
static void
br_preload(struct br *b, bool grow)
{
    char key[BR_KEY_MAX];
    unsigned char val[CC_VAL_MAX];
    for (uint32_t j = 0; j < br_nstable; j++) {
        size_t vl = cc_value(BR_STABLE_TAG, j, CC_VAL_HDR, val);
        assert_int_equal(htkv_put(b->db, key, br_skey(j, key), val, vl), 0);
        if (!grow && j % 10 < 3) {
            uint32_t i = j / 10 * 3 + j % 10;
            vl = cc_value(1, BR_CHURN_ID + i, CC_VAL_HDR, val);
            assert_int_equal(htkv_put(b->db, key, br_ckey(i, key), val, vl), 0);
            atomic_store(&b->issued[i], 1);
            atomic_store(&b->done[i], 1);
        }
    }
}

/* Invariant 8: every key in its model's state (test thread, writes all done). */
static bool
br_check_final(struct br *b, const char *when)
{
    char key[BR_KEY_MAX];
    unsigned char buf[CC_VAL_MAX];
    uint64_t tag;
    for (uint32_t j = 0; j < br_nstable; j++) {
        size_t len = 0;
        int rc = htkv_get(b->db, key, br_skey(j, key), buf, sizeof(buf), &len);
        if (!br_check_stable(j, rc, buf, len, when)) {
            return false;
        }
    }
    for (uint32_t i = 0; i < BR_CHURN; i++) {
        uint64_t c = atomic_load(&b->issued[i]);
        CC_CHECK(atomic_load(&b->done[i]) == c, "c%05u: op %llu never completed", i,
                 (unsigned long long)c);
        size_t len = 0;
        int rc = htkv_get(b->db, key, br_ckey(i, key), buf, sizeof(buf), &len);
        if (!br_check_churn(i, c, c, rc, buf, len, NULL, &tag, when)) {
            return false;
        }
    }
    return true;
}

static struct htkv_stats
br_print_stats(struct br *b, const char *name, const char *when)
{
    struct htkv_stats st = tu_stats(b->db);
    fprintf(stderr,
            "[%s] %s: hot %llu cold %llu keys; %llu kix files (%llu B); index %llu B trie %llu "
            "B; evictions %llu promotions %llu; kix page reads %llu, Bloom negatives %llu, false "
            "positives %llu; compacted segments %llu\n",
            name, when, (unsigned long long)st.hot_keys, (unsigned long long)st.cold_keys,
            (unsigned long long)st.kix_files, (unsigned long long)st.kix_bytes,
            (unsigned long long)st.index_bytes, (unsigned long long)st.trie_bytes,
            (unsigned long long)st.evictions, (unsigned long long)st.promotions,
            (unsigned long long)st.kix_page_reads, (unsigned long long)st.bloom_negatives,
            (unsigned long long)st.bloom_false_positives,
            (unsigned long long)st.compacted_segments);
    return st;
}

/* Start the readers, scanners and viewers of @p s (threads th[0..]), the compactor (@p cp). */
static unsigned
br_start(struct br *b, const struct br_setup *s, struct br_thread *th, pthread_t *pt, pthread_t *cp)
{
    unsigned n = 0;
    for (; n < s->readers + s->scanners + s->viewers && n < BR_OTHERS; n++) {
        void *(*fn)(void *) = n < s->readers                 ? br_reader
                              : n < s->readers + s->scanners ? br_scanner
                                                             : br_viewer;
        th[n].b = b;
        th[n].id = n;
        assert_int_equal(pthread_create(&pt[n], NULL, fn, &th[n]), 0);
    }
    assert_int_equal(pthread_create(cp, NULL, br_compactor, b), 0);
    return n;
}

/* Grow mode: let the scans of the store below its budget build sorted runs and the merge path
 * (up to 2 s), then let the writers go. */
static void
br_go(struct br *b, const struct br_setup *s)
{
    for (unsigned ms = 0; s->grow && ms < 2000 && atomic_load(&b->scans) < 8 && !cc_failed();
         ms++) {
        cc_sleep_ms(1);
    }
    if (s->grow) {
        (void)br_print_stats(b, s->name, "writers go");
    }
    atomic_store(&b->go, 1);
}

/* Run the writers (asynchronous ones with workers), then stop the others and join them. */
static void
br_race(struct br *b, const struct br_setup *s)
{
    static struct br_thread others[BR_OTHERS], writers[BR_WRITERS];
    memset(others, 0, sizeof(others));
    memset(writers, 0, sizeof(writers));
    pthread_t pt[BR_OTHERS], cp, wt[BR_WRITERS];
    unsigned n = br_start(b, s, others, pt, &cp);
    uint64_t t0 = cc_now_ns();
    for (unsigned w = 0; w < BR_WRITERS; w++) {
        writers[w].b = b;
        writers[w].id = w;
        writers[w].async = s->workers > 0;
        assert_int_equal(pthread_create(&wt[w], NULL, br_writer, &writers[w]), 0);
    }
    br_go(b, s);
    for (unsigned w = 0; w < BR_WRITERS; w++) {
        assert_int_equal(pthread_join(wt[w], NULL), 0);
    }
    for (uint64_t end = cc_now_ns() + 30000000000ull;
         atomic_load(&b->pending) != 0 && cc_now_ns() < end;) {
        cc_sleep_ms(1);
    }
    atomic_store(&b->stop, 1);
    for (unsigned k = 0; k < n; k++) {
        assert_int_equal(pthread_join(pt[k], NULL), 0);
    }
    assert_int_equal(pthread_join(cp, NULL), 0);
    fprintf(stderr,
            "[%s] %.2f s: %llu reads, %llu scans, %llu views, %llu compactions, %llu snapshots, "
            "%llu batches, %llu asynchronous writes\n",
            s->name, (double)(cc_now_ns() - t0) / 1e9, (unsigned long long)b->reads,
            (unsigned long long)b->scans, (unsigned long long)b->views,
            (unsigned long long)b->compactions, (unsigned long long)b->snapshots,
            (unsigned long long)b->batches, (unsigned long long)b->asyncs);
    assert_int_equal(atomic_load(&b->pending), 0);
}

/* A crash on any thread: name the seed and mode, print the stack, die of the signal. cmocka's own
 * handler would long-jump to the test thread's frame from the wrong thread, silently. */
static void
br_crash(int sig)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "CRASH: signal %d (HTKV_SEED=%llu, %s)\n", sig,
                     (unsigned long long)cc_seed_value, cc_mode_text);
    if (n > 0 && write(2, msg, (size_t)n) < 0) {
        n = 0;
    }
    void *frames[64];
    backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int br_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
static struct sigaction br_saved[sizeof(br_signals) / sizeof(br_signals[0])];

/* Install br_crash() (@p on) or put back the handlers it replaced. */
static void
br_crash_handlers(bool on)
{
    for (size_t k = 0; k < sizeof(br_signals) / sizeof(br_signals[0]); k++) {
        if (on) {
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = br_crash;
            sigemptyset(&sa.sa_mask);
            sigaction(br_signals[k], &sa, &br_saved[k]);
        } else {
            sigaction(br_signals[k], &br_saved[k], NULL);
        }
    }
}

/* One store of @p s: preload, race, check (invariant 8), reopen, check again. */
static void
br_round(const struct br_setup *s, unsigned round)
{
    struct cc_mode m = { s->workers, HTKV_IO_AUTO, HTKV_SYNC_NEVER };
    cc_set_mode(&m);
    char *dir = tu_tmpdir(s->name), *snapdir = tu_tmpdir("budget-snap");
    static struct br b;
    memset(&b, 0, sizeof(b));
    b.snapdir = snapdir;
    b.seed = round == 0 ? cc_seed_value : cc_subseed(cc_seed_value, round, 7);
    b.writer_ops = cc_ops(s->grow ? 4000 : 9000);
    br_nstable = s->grow ? BR_GROW_STABLE : BR_STABLE;
    htkv_config cfg;
    br_config(&cfg, dir, &m, s->compaction_ms, b.seed);
    fprintf(stderr, "[%s] round %u: budget %llu KiB, segments of %llu KiB, eager runs %u\n",
            s->name, round, (unsigned long long)(cfg.memory_budget_bytes >> 10),
            (unsigned long long)(cfg.max_segment_bytes >> 10), s->grow ? round % 3 : 0);
    b.db = cc_open(&cfg);
    atomic_store(&cc_log_errors, 0);
    br_preload(&b, s->grow);
    struct htkv_stats st = br_print_stats(&b, s->name, "preloaded");
    assert_true(s->grow ? st.cold_keys == 0 : st.cold_keys > 0);
    /* Grow mode: the credit rules, then eager sorted runs, then eager runs and merge paths
     * (engine/flat.h), until the first cold set takes them out of use. */
    htkv_run_eager = s->grow ? (int)(round % 3) : 0;
    br_crash_handlers(true);
    br_race(&b, s);
    br_crash_handlers(false);
    htkv_run_eager = 0;
    cc_assert_ok();
    (void)br_check_final(&b, "final");
    cc_assert_ok();
    st = br_print_stats(&b, s->name, "end");
    assert_true(st.evictions > 0);
    assert_true(st.promotions > 0);
    assert_true(atomic_load(&b.compactions) > 0);
    /* No warning while it ran (a key index not written, say); a reopen may warn of its own. */
    assert_int_equal(atomic_load(&cc_log_errors), 0);
    assert_int_equal(htkv_close(b.db), 0);
    b.db = cc_open(&cfg); /* recovery loads every key, then evicts down to the budget */
    (void)br_check_final(&b, "after reopen");
    (void)br_print_stats(&b, s->name, "reopened");
    assert_int_equal(htkv_close(b.db), 0);
    cc_assert_ok();
    tu_rmrf(dir);
    tu_rmrf(snapdir);
    free(dir);
    free(snapdir);
}

static void
br_run(const struct br_setup *s)
{
    cc_seed(s->name);
    for (unsigned r = 0; r < (s->rounds > 0 ? s->rounds : 1); r++) {
        br_round(s, r);
    }
}

/* Point reads of stable and churn keys against eviction, promotion and compaction. */
static void
test_budget_point_reads(void **state)
{
    (void)state;
    static const struct br_setup s = { "budget-gets", 0, 0, 3, 0, 0, false, 1 };
    br_run(&s);
}

/* Iterators over the stable and churn prefixes; background compaction runs too. */
static void
test_budget_iterators(void **state)
{
    (void)state;
    static const struct br_setup s = { "budget-iters", 0, 5, 1, 2, 0, false, 1 };
    br_run(&s);
}

/* Views re-read what they first read while keys leave and come back. */
static void
test_budget_views(void **state)
{
    (void)state;
    static const struct br_setup s = { "budget-views", 0, 0, 1, 0, 2, false, 1 };
    br_run(&s);
}

/* 2 worker threads, half the writes asynchronous; every kind of reader. */
static void
test_budget_workers(void **state)
{
    (void)state;
    static const struct br_setup s = { "budget-workers", 2, 5, 1, 1, 1, false, 1 };
    br_run(&s);
}

/* Stores that start below their budget, read through sorted runs and the merge path, cross it
 * (first key indexes, first cold set) under iterators, views and readers. */
static void
test_budget_first_eviction(void **state)
{
    (void)state;
    static const struct br_setup s = { "budget-grow", 0, 0, 1, 2, 1, true, 3 };
    br_run(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_point_reads),    cmocka_unit_test(test_budget_iterators),
        cmocka_unit_test(test_budget_views),          cmocka_unit_test(test_budget_workers),
        cmocka_unit_test(test_budget_first_eviction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
