/*
 * test_budget.c - model-based, adversarial tests of htkv_config.memory_budget_bytes (keys that
 * leave memory, "cold" keys, found through per-segment key index files
 * DIR/shard-SSS/NNNNNNNNNNNN.kix) and of the budget's counters at the end of struct htkv_stats,
 * written from include/htkv/htkv.h alone, as a careless or hostile user would drive the store.
 *
 * Every store here holds far more index than its budget: 2-4 shards, 64 KiB segments, a budget of
 * 16-64 KiB (also 1 byte), 2,000-6,000 keys and values of 0..300 bytes. Key number i is "%06u" of
 * i followed by 0..8 bytes drawn from {0x00, 0xFF, 'a', 0x7F, 0x01, '/'} (and, for
 * i % 1000 == 777, by 20,000 bytes: a key larger than a 4 KiB key index page), so that key order
 * is number order. A probe key (a key plus a 0x00 byte, or its six digits alone) sorts between
 * two written keys and is never written: the absent keys a key index filter must answer for.
 *
 *   model_random_ops: random puts, overwrites, deletes (also of absent and of deleted keys:
 *     HTKV_ENOTFOUND, nothing written), gets (also with cap 0), atomic batches with conditions on
 *     the versions of keys that are mostly cold (right, wrong, 0, a deleted key's old version),
 *     htkv_compact_now, and reopens with the same budget, with none, with another, with 1 byte,
 *     with one above everything, with background compaction, and read-only.
 *   ordered_queries_exact: prefix and range queries, limits and paging over mostly cold keys.
 *   views_keep_their_moment: a view and an iterator opened before heavy churn (overwrites,
 *     deletes, evictions, a compaction) keep reading the store as it was.
 *   kix_tamper_between_opens: key index files deleted, truncated, bit-flipped, swapped between
 *     shards, restored from an earlier open or planted while the store is closed (also after a
 *     crash-close) change nothing; a writable open removes the planted ones.
 *   kix_tamper_while_open: bytes flipped with pwrite() in the middle of the key index files of
 *     an open store: every read and write answers as before (a key index page that fails its
 *     check makes the shard read that segment's records instead), never HTKV_ECORRUPT.
 *   segment_damage: bytes flipped in sealed segments and in other files (hints) of a closed
 *     store: the open fails with HTKV_ECORRUPT or every read is right or HTKV_ECORRUPT.
 *   damaged_record_in_queries: one bit flipped in the value, the key or the header of a live
 *     key's record: a get answers HTKV_ECORRUPT, and so must every query over the key (today a
 *     damaged key byte makes prefix queries and scans skip the key silently).
 *   snapshot_of_cold_keys: a snapshot written under a budget is byte-identical to one written
 *     without; restoring it after churn (a rollback) brings back every value and version.
 *   counters_bloom_and_pages: gets of absent keys read almost no index page (the key index
 * filters); gets of cold keys read at most ~3 pages each (HTKV_SYNC_ALWAYS, batches).
 *   async_workers: worker_threads = 2, htkv_put_async / htkv_delete_async / htkv_write_async
 *     (each batch alone in flight: see the next), synchronous writes queued behind them,
 *     htkv_flush, a reopen with another budget.
 *   async_batch_keeps_thread_order (not about the budget): an asynchronous batch must apply
 *     after the same thread's earlier asynchronous put of one of its keys (today about a fifth
 *     of them apply before it, and the put's value wins).
 *
 * Model checks (MCHECK: fail at once): after every phase EVERY key holds the model's value and
 * version, or is absent (deleted keys never come back); every write's version is above every
 * version acknowledged before and is htkv_latest_version(); a failed condition or a delete of
 * an absent key writes nothing; queries return exactly the model's items in order, with their
 * versions; stats.live_keys equals the model's live keys.
 *
 * Budget checks (BCHECK): the figures the header promises once the index is far above the
 * budget: cold_keys, evictions, kix_files and kix_bytes above 0 (cold_keys <= evictions);
 * promotions above 0 after writes of old keys; live_keys <= hot_keys + cold_keys <= live_keys
 * + the model's deleted keys; index_bytes + trie_bytes <= budget * 1.5 + 32 KiB a shard; all
 * nine figures 0 without a budget; no .kix file left after a writable open without a budget;
 * Filter negatives on misses with < 0.2 page reads a miss; <= 3 page reads a cold get. They are
 * printed as "BUDGET CHECK" lines as they fail and fail the test at its end, so that a budget
 * figure out of bounds does not hide what the model checks of the rest of the test would find.
 *
 * HTKV_SEED=N replays a run's operations (each test prints its seed, and every failure repeats it
 * with the step; the store's own hash seed, so the shard of each key, still differs from run to
 * run); HTKV_MODEL_SCALE=F scales the random steps (a quarter under sanitizers);
 * HTKV_MODEL_TRACE=1 prints every step.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/model.h"

#define NKMAX 8000                  /* key numbers in use: 0..NKMAX-1 */
#define VMAX 300                    /* longest value */
#define HUGE_KEY 20000              /* the suffix of keys number i % 1000 == 777 */
#define PMAX (HUGE_KEY + 16)        /* longest key, probe or bound */
#define SLACK_PER_SHARD (32u << 10) /* fixed costs of a shard's index, beside the budget */
/* A shard seals its active segment early only once it holds 64 KiB of records (htkv.h): when
 * half a shard's share is less than that segment's keys take, they may take this much more
 * (some 350 records of this test's mean size: entries, trie nodes and slots). */
#define SEAL_MIN_KEYS_BYTES (32u << 10)
#define BUDGET_SHOW 25 /* BUDGET CHECK lines printed per test */

/* ---- keys ------------------------------------------------------------------------------------ */

static unsigned char *bk_key[NKMAX];
static size_t bk_klen[NKMAX];

static void
keys_init(void)
{
    static const unsigned char sfx[6] = { 0x00, 0xFF, 'a', 0x7F, 0x01, '/' };
    if (bk_key[0] != NULL) {
        return;
    }
    for (unsigned i = 0; i < NKMAX; i++) {
        size_t extra = i % 1000 == 777 ? HUGE_KEY : i % 9;
        unsigned char *k = malloc(6 + extra + 1);
        assert_non_null(k);
        char d[8];
        snprintf(d, sizeof(d), "%06u", i);
        memcpy(k, d, 6);
        for (size_t j = 0; j < extra; j++) {
            k[6 + j] = sfx[(i * 31u + j * 7u) % 6];
        }
        bk_key[i] = k;
        bk_klen[i] = 6 + extra;
    }
}

/* A never-written key next to key @p i: the key plus 0x00 (just after it) or, for an odd
 * @p kind, its digits alone (just before it). Returns its length. */
static size_t
probe_key(unsigned i, unsigned kind, unsigned char *out)
{
    if (kind % 2 == 1 && bk_klen[i] > 6) {
        memcpy(out, bk_key[i], 6);
        return 6;
    }
    memcpy(out, bk_key[i], bk_klen[i]);
    out[bk_klen[i]] = 0x00;
    return bk_klen[i] + 1;
}

static int
kcmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* The first bytes of a key, for messages (one of 2 static buffers in turn). */
static const char *
khex(const void *p, size_t n)
{
    static char bufs[2][80];
    static int turn;
    char *b = bufs[turn++ % 2];
    size_t o = 0;
    for (size_t i = 0; i < n && i < 16; i++) {
        o += (size_t)snprintf(b + o, sizeof(bufs[0]) - o, "%02x", ((const unsigned char *)p)[i]);
    }
    snprintf(b + o, sizeof(bufs[0]) - o, "%s(%zu B)", n > 16 ? ".." : "", n);
    return b;
}

/* ---- the model and the test's state ---------------------------------------------------------- */

enum { K_NEVER = 0, K_LIVE = 1, K_DEAD = 2 };

struct bmodel {
    unsigned char st[NKMAX]; /* K_* */
    uint16_t vlen[NKMAX];
    uint64_t tag[NKMAX]; /* the value is tu_fill(vlen, tag) */
    uint64_t ver[NKMAX]; /* version of the value (K_LIVE) or of the delete (K_DEAD) */
    uint64_t max_ack;    /* highest version the store acknowledged */
};

struct bt {
    const char *name;
    char *dir;
    htkv_config cfg;
    htkv_db *db;
    unsigned nk; /* keys 0..nk-1 are used */
    uint64_t rng;
    struct bmodel *m;
    struct bmodel *alt;          /* kix_tamper_while_open: what an unsure key may still hold */
    unsigned char unsure[NKMAX]; /* its write failed with HTKV_ECORRUPT: m or alt */
    uint64_t next_tag;
    unsigned long old_writes;    /* writes of keys written before, since open */
    bool corrupt_ok;             /* HTKV_ECORRUPT is an acceptable answer to a read */
    unsigned long corrupt_reads; /* reads that answered HTKV_ECORRUPT */
    bool batches;                /* random_ops() writes batches */
    bool crashed;                /* closed as a crash since the last open */
    bool view_open;              /* a view is open: its versions are not bounded */
};

static unsigned budget_failures;

/* A budget check: reported at once, failing the test at its end (budget_verdict()). */
#define BCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond) && ++budget_failures <= BUDGET_SHOW) {                                         \
            tu_model_report(__FILE__, __LINE__, "BUDGET CHECK " #cond, __VA_ARGS__);               \
        }                                                                                          \
    } while (0)

static void
budget_verdict(const char *test)
{
    unsigned n = budget_failures;
    budget_failures = 0;
    if (n > 0) {
        fprintf(stderr,
                "[%s] HTKV_SEED=%llu: %u memory-budget check(s) failed (BUDGET CHECK lines "
                "above; the model checks all passed)\n",
                test, (unsigned long long)tu_model_seed, n);
        fail_msg("%u BUDGET CHECK failure(s)", n);
    }
}

static size_t
rand_vlen(uint64_t *rng)
{
    uint64_t r = tu_rand(rng);
    return r % 50 == 0 ? 0 : 1 + (size_t)((r >> 8) % VMAX);
}

static void
bt_start(struct bt *t, const char *name, unsigned nk, int sync_mode, uint64_t budget)
{
    keys_init();
    memset(t, 0, sizeof(*t));
    budget_failures = 0; /* a test that failed before its end left its count */
    t->name = name;
    t->nk = nk;
    t->rng = tu_seed(name);
    tu_model_seed = t->rng;
    t->dir = tu_tmpdir(name);
    if (sync_mode < 0) { /* NEVER or INTERVAL, from the seed */
        sync_mode = tu_rand(&t->rng) % 2 == 0 ? HTKV_SYNC_NEVER : HTKV_SYNC_INTERVAL;
    }
    tu_config(&t->cfg, t->dir, sync_mode);
    t->cfg.shard_count = 2 + (unsigned)(tu_rand(&t->rng) % 3);
    t->cfg.max_segment_bytes = 64u << 10;
    t->cfg.compaction_interval_ms = 0;
    t->cfg.memory_budget_bytes = budget;
    t->m = calloc(1, sizeof(*t->m));
    assert_non_null(t->m);
    t->next_tag = t->rng << 16;
    t->batches = true;
    fprintf(stderr, "[%s] %u shards, sync mode %d, budget %llu bytes, %u keys\n", name,
            t->cfg.shard_count, sync_mode, (unsigned long long)budget, nk);
}

static void
bt_finish(struct bt *t)
{
    if (t->db != NULL) {
        RC_OK(htkv_close(t->db));
    }
    tu_rmrf(t->dir);
    free(t->dir);
    free(t->m);
    free(t->alt);
    budget_verdict(t->name);
}

/* ---- reading keys ---------------------------------------------------------------------------- */

/* Whether a read of key @p i (rc, value, version or NULL) is what @p m holds. */
static bool
matches(const struct bmodel *m, unsigned i, int rc, const void *buf, size_t vl, const uint64_t *ver)
{
    static unsigned char want[VMAX];
    if (m->st[i] != K_LIVE) {
        return rc == HTKV_ENOTFOUND && (ver == NULL || *ver == 0);
    }
    if (rc != 0 || vl != m->vlen[i] || (ver != NULL && *ver != m->ver[i])) {
        return false;
    }
    tu_fill(want, vl, m->tag[i]);
    return vl == 0 || memcmp(buf, want, vl) == 0;
}

static const char *
state_name(int st)
{
    return st == K_LIVE ? "live" : st == K_DEAD ? "deleted" : "never written";
}

/* Judge a read of key @p i against @p m (and, for an unsure key of the store's model, alt). */
static void
judge(struct bt *t, const struct bmodel *m, unsigned i, int rc, const void *buf, size_t vl,
      const uint64_t *ver, const char *how)
{
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        t->corrupt_reads++;
        return;
    }
    bool unsure = m == t->m && t->unsure[i];
    bool ok = matches(m, i, rc, buf, vl, unsure ? NULL : ver);
    if (!ok && unsure) {
        ok = matches(t->alt, i, rc, buf, vl, NULL);
    }
    MCHECK(ok,
           "%s of key %u %s: rc %d (%s), %zu bytes, version %llu; the model: %s, %u bytes, "
           "version %llu%s",
           how, i, khex(bk_key[i], bk_klen[i]), rc, htkv_strerror(rc), vl,
           (unsigned long long)(ver != NULL ? *ver : 0), state_name(m->st[i]), m->vlen[i],
           (unsigned long long)m->ver[i], unsure ? " (or its state before a failed write)" : "");
}

static void
check_key(struct bt *t, unsigned i)
{
    static unsigned char buf[VMAX + 8];
    size_t vl = 0;
    uint64_t ver = 0;
    int rc = htkv_get_version(t->db, bk_key[i], bk_klen[i], buf, sizeof(buf), &vl, &ver);
    judge(t, t->m, i, rc, buf, vl, &ver, "htkv_get_version");
}

/* Every key of the model, by htkv_get_version (and a quarter also by htkv_contains). */
static void
check_all(struct bt *t, const char *when)
{
    tu_where("%s: checking all %u keys", when, t->nk);
    for (unsigned i = 0; i < t->nk; i++) {
        check_key(t, i);
        if (i % 4 == 0 && !t->unsure[i]) {
            int rc = htkv_contains(t->db, bk_key[i], bk_klen[i]);
            if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
                continue;
            }
            MCHECK(rc == (t->m->st[i] == K_LIVE), "%s: htkv_contains(key %u) = %d (%s), it is %s",
                   when, i, rc, htkv_strerror(rc), state_name(t->m->st[i]));
        }
    }
}

/* A get of a never-written key: HTKV_ENOTFOUND and version 0. */
static void
check_probe(struct bt *t, unsigned i, unsigned kind)
{
    static unsigned char p[PMAX], buf[VMAX + 8];
    size_t pl = probe_key(i, kind, p), vl = 0;
    uint64_t ver = 7;
    int rc = htkv_get_version(t->db, p, pl, buf, sizeof(buf), &vl, &ver);
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        t->corrupt_reads++;
        return;
    }
    MCHECK(rc == HTKV_ENOTFOUND && ver == 0,
           "get of the never-written key %s (next to key %u): rc %d (%s), version %llu",
           khex(p, pl), i, rc, htkv_strerror(rc), (unsigned long long)ver);
}

/* A get with cap 0: HTKV_ETOOSMALL with the length and version (0 for an empty value). */
static void
check_key_cap0(struct bt *t, unsigned i)
{
    size_t vl = 12345;
    uint64_t ver = 0;
    int rc = htkv_get_version(t->db, bk_key[i], bk_klen[i], NULL, 0, &vl, &ver);
    if ((rc == HTKV_ECORRUPT && t->corrupt_ok) || t->unsure[i]) {
        return;
    }
    const struct bmodel *m = t->m;
    bool ok = m->st[i] != K_LIVE ? rc == HTKV_ENOTFOUND && ver == 0
                                 : rc == (m->vlen[i] > 0 ? HTKV_ETOOSMALL : 0) &&
                                       vl == m->vlen[i] && ver == m->ver[i];
    MCHECK(ok, "get with cap 0 of key %u: rc %d (%s), vlen %zu, version %llu; it is %s, %u bytes",
           i, rc, htkv_strerror(rc), vl, (unsigned long long)ver, state_name(m->st[i]), m->vlen[i]);
}

/* ---- opening, files, figures ----------------------------------------------------------------- */

static void
bt_close(struct bt *t)
{
    tu_where("%s: htkv_close", t->name);
    RC_OK(htkv_close(t->db));
    t->db = NULL;
}

static size_t
count_kix(const char *dir)
{
    return tu_shard_files(dir, ".kix", NULL, 0);
}

/* Close (if open) and open again with @p budget; a clean reopen resumes at the same version. */
static void
bt_reopen(struct bt *t, uint64_t budget, const char *why)
{
    if (t->db != NULL) {
        bt_close(t);
    }
    t->cfg.memory_budget_bytes = budget;
    tu_where("%s: %s: htkv_open with a budget of %llu bytes%s", t->name, why,
             (unsigned long long)budget, t->cfg.read_only ? " (read-only)" : "");
    htkv_db *db = NULL;
    int rc = htkv_open(&t->cfg, &db);
    MCHECK(rc == 0 && db != NULL, "htkv_open: %d (%s) %s", rc, htkv_strerror(rc),
           htkv_last_error());
    t->db = db;
    t->old_writes = 0;
    uint64_t latest = tu_latest(db);
    MCHECK(latest == t->m->max_ack || ((t->corrupt_ok || t->crashed) && latest >= t->m->max_ack),
           "after a %s close the latest version is %llu, the last acknowledged %llu",
           t->crashed ? "crash" : "clean", (unsigned long long)latest,
           (unsigned long long)t->m->max_ack);
    t->crashed = false;
    t->m->max_ack = latest;
    if (budget == 0 && !t->cfg.read_only) {
        size_t n = count_kix(t->dir);
        BCHECK(n == 0,
               "%zu .kix files after a writable open without a budget (an open removes "
               "those an earlier one left)",
               n);
    }
}

static void
model_counts(const struct bt *t, uint64_t *live, uint64_t *dead)
{
    *live = *dead = 0;
    for (unsigned i = 0; i < t->nk; i++) {
        *live += t->m->st[i] == K_LIVE;
        *dead += t->m->st[i] == K_DEAD;
    }
}

static void
print_stats(const struct bt *t, const char *when, const struct htkv_stats *s)
{
    fprintf(stderr,
            "[%s] %s: budget %llu B, live %llu, tombstones %llu | hot %llu, cold %llu, kix %llu "
            "files %llu B, evictions %llu, promotions %llu, page reads %llu, bloom negatives "
            "%llu, false positives %llu | index %llu + trie %llu B\n",
            t->name, when, (unsigned long long)t->cfg.memory_budget_bytes,
            (unsigned long long)s->live_keys, (unsigned long long)s->tombstones,
            (unsigned long long)s->hot_keys, (unsigned long long)s->cold_keys,
            (unsigned long long)s->kix_files, (unsigned long long)s->kix_bytes,
            (unsigned long long)s->evictions, (unsigned long long)s->promotions,
            (unsigned long long)s->kix_page_reads, (unsigned long long)s->bloom_negatives,
            (unsigned long long)s->bloom_false_positives, (unsigned long long)s->index_bytes,
            (unsigned long long)s->trie_bytes);
}

/* The budget's figures where there is none (0, or a read-only open, which ignores it). */
static void
budget_absent_figures(const char *when, const struct htkv_stats *s, bool read_only)
{
    BCHECK(s->cold_keys == 0 && s->kix_files == 0 && s->kix_bytes == 0 && s->evictions == 0 &&
               s->promotions == 0 && s->kix_page_reads == 0 && s->bloom_negatives == 0 &&
               s->bloom_false_positives == 0,
           "%s: without a budget%s the budget's figures must be 0", when,
           read_only ? " (read-only)" : "");
    if (!read_only) {
        BCHECK(s->hot_keys == 0, "%s: hot_keys %llu without a budget (\"all 0 without one\")", when,
               (unsigned long long)s->hot_keys);
    }
}

/* The index's memory under a budget: budget * 1.5 (keys of the active segments may take half of
 * it) + 32 KiB a shard; where half a shard's share is less than the keys of the 64 KiB an active
 * segment holds before it may be sealed early, up to those instead. Not while a view is open
 * (the versions it may read are not bounded). */
static void
budget_memory(const struct bt *t, const char *when, const struct htkv_stats *s)
{
    uint64_t budget = t->cfg.memory_budget_bytes;
    uint64_t mem = s->index_bytes + s->trie_bytes;
    uint64_t share = budget / t->cfg.shard_count;
    uint64_t slack = SLACK_PER_SHARD + (share / 2 < SEAL_MIN_KEYS_BYTES
                                            ? SEAL_MIN_KEYS_BYTES - share / 2
                                            : 0); /* the 64 KiB before an early seal */
    uint64_t bound = budget + budget / 2 + slack * t->cfg.shard_count;
    BCHECK(mem <= bound,
           "%s: index_bytes %llu + trie_bytes %llu = %llu above budget %llu * 1.5 + %llu per shard "
           "(%u shards) = %llu",
           when, (unsigned long long)s->index_bytes, (unsigned long long)s->trie_bytes,
           (unsigned long long)mem, (unsigned long long)budget, (unsigned long long)slack,
           t->cfg.shard_count, (unsigned long long)bound);
}

/* The budget's figures on a store whose index is far above its budget. */
static void
budget_figures(const struct bt *t, const char *when, const struct htkv_stats *s, uint64_t live,
               uint64_t dead)
{
    uint64_t budget = t->cfg.memory_budget_bytes;
    BCHECK(s->cold_keys > 0, "%s: no cold key with %llu keys over a budget of %llu bytes", when,
           (unsigned long long)(live + dead), (unsigned long long)budget);
    BCHECK(s->evictions + s->cold_keys_at_open > 0 &&
               s->cold_keys <= s->evictions + s->cold_keys_at_open,
           "%s: evictions %llu, cold keys %llu, %llu of them at open (every other cold key left "
           "memory since open)",
           when, (unsigned long long)s->evictions, (unsigned long long)s->cold_keys,
           (unsigned long long)s->cold_keys_at_open);
    BCHECK(s->kix_files > 0 && s->kix_bytes > 0, "%s: kix_files %llu, kix_bytes %llu", when,
           (unsigned long long)s->kix_files, (unsigned long long)s->kix_bytes);
    uint64_t keys = s->hot_keys + s->cold_keys;
    BCHECK(keys >= live && keys <= live + dead,
           "%s: hot %llu + cold %llu = %llu keys, the model has %llu live and %llu deleted", when,
           (unsigned long long)s->hot_keys, (unsigned long long)s->cold_keys,
           (unsigned long long)keys, (unsigned long long)live, (unsigned long long)dead);
    if (t->old_writes >= 200) {
        BCHECK(s->promotions > 0, "%s: no promotion after %lu writes of old keys since open", when,
               t->old_writes);
    }
}

/* The store's figures: live_keys (model check) and the budget's (budget checks). */
static void
check_stats(struct bt *t, const char *when)
{
    tu_where("%s: %s: stats", t->name, when);
    struct htkv_stats s = tu_stats(t->db);
    uint64_t live, dead;
    model_counts(t, &live, &dead);
    print_stats(t, when, &s);
    bool unsure = t->alt != NULL && memchr(t->unsure, 1, t->nk) != NULL;
    MCHECK(s.live_keys == live || unsure, "%s: stats.live_keys %llu, the model has %llu", when,
           (unsigned long long)s.live_keys, (unsigned long long)live);
    uint64_t budget = t->cfg.memory_budget_bytes;
    if (budget == 0 || t->cfg.read_only) {
        budget_absent_figures(when, &s, t->cfg.read_only);
        return;
    }
    if (budget >= (1ull << 40)) {
        BCHECK(s.cold_keys == 0 && s.evictions == 0,
               "%s: a budget above the whole index, yet %llu cold keys, %llu evictions", when,
               (unsigned long long)s.cold_keys, (unsigned long long)s.evictions);
        return;
    }
    if (!t->view_open) {
        budget_memory(t, when, &s);
    }
    if ((live + dead) * 32 > 2 * budget) { /* far above: even at 32 bytes a key */
        budget_figures(t, when, &s, live, dead);
    }
}

/* ---- writing --------------------------------------------------------------------------------- */

/* A write of key @p i was acknowledged: its version is the latest, above all before. */
static uint64_t
acked(struct bt *t, const char *what, unsigned i)
{
    uint64_t v = tu_latest(t->db);
    MCHECK(v > t->m->max_ack,
           "%s of key %u acknowledged, but the latest version %llu is not above %llu, the "
           "highest acknowledged before",
           what, i, (unsigned long long)v, (unsigned long long)t->m->max_ack);
    t->m->max_ack = v;
    return v;
}

/* A write of key @p i failed with HTKV_ECORRUPT (tamper tests): it may or may not be there. */
static void
went_unsure(struct bt *t, unsigned i)
{
    if (!t->unsure[i]) {
        t->alt->st[i] = t->m->st[i];
        t->alt->vlen[i] = t->m->vlen[i];
        t->alt->tag[i] = t->m->tag[i];
        t->alt->ver[i] = t->m->ver[i];
    }
    t->unsure[i] = 1;
    t->m->max_ack = tu_latest(t->db);
}

static void
w_put(struct bt *t, unsigned i)
{
    static unsigned char v[VMAX];
    size_t vl = rand_vlen(&t->rng);
    uint64_t tag = ++t->next_tag;
    tu_fill(v, vl, tag);
    int rc = htkv_put(t->db, bk_key[i], bk_klen[i], v, vl);
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        went_unsure(t, i);
    } else {
        MCHECK(rc == 0, "put of key %u (%zu bytes): %d (%s) %s", i, vl, rc, htkv_strerror(rc),
               htkv_last_error());
        t->old_writes += t->m->st[i] != K_NEVER;
        t->m->ver[i] = acked(t, "put", i);
        t->unsure[i] = 0;
    }
    t->m->st[i] = K_LIVE;
    t->m->vlen[i] = (uint16_t)vl;
    t->m->tag[i] = tag;
}

static void
w_del(struct bt *t, unsigned i)
{
    int rc = htkv_delete(t->db, bk_key[i], bk_klen[i]);
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        went_unsure(t, i);
        t->m->st[i] = K_DEAD;
        return;
    }
    if (t->unsure[i]) { /* it may have held a value: either answer, then it is absent */
        MCHECK(rc == 0 || rc == HTKV_ENOTFOUND, "delete of unsure key %u: %d (%s)", i, rc,
               htkv_strerror(rc));
        t->m->max_ack = tu_latest(t->db);
        t->unsure[i] = 0;
        t->m->st[i] = K_DEAD;
        return;
    }
    if (t->m->st[i] != K_LIVE) {
        MCHECK(rc == HTKV_ENOTFOUND, "delete of the %s key %u: %d (%s), want HTKV_ENOTFOUND",
               state_name(t->m->st[i]), i, rc, htkv_strerror(rc));
        uint64_t now = tu_latest(t->db);
        MCHECK(now == t->m->max_ack,
               "a delete of an absent key moved the latest version %llu->%llu",
               (unsigned long long)t->m->max_ack, (unsigned long long)now);
        return;
    }
    MCHECK(rc == 0, "delete of live key %u: %d (%s) %s", i, rc, htkv_strerror(rc),
           htkv_last_error());
    t->old_writes++;
    t->m->ver[i] = acked(t, "delete", i);
    t->m->st[i] = K_DEAD;
}

/* A delete of a never-written probe key: HTKV_ENOTFOUND, nothing written. */
static void
w_del_probe(struct bt *t, unsigned i)
{
    static unsigned char p[PMAX];
    size_t pl = probe_key(i, (unsigned)tu_rand(&t->rng), p);
    int rc = htkv_delete(t->db, p, pl);
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        return;
    }
    MCHECK(rc == HTKV_ENOTFOUND, "delete of the never-written key %s: %d (%s)", khex(p, pl), rc,
           htkv_strerror(rc));
    MCHECK(tu_latest(t->db) == t->m->max_ack, "a delete of a never-written key wrote something");
}

/* One of the batch's puts and deletes. */
struct bop {
    unsigned id;
    bool del;
    uint16_t vlen;
    uint64_t tag;
};

/* Add a condition on a random key to @p b: right (70%) or wrong; returns whether it holds. */
static bool
add_cond(struct bt *t, htkv_batch *b)
{
    unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
    const struct bmodel *m = t->m;
    uint64_t now = m->st[i] == K_LIVE ? m->ver[i] : 0, want = now;
    unsigned r = (unsigned)(tu_rand(&t->rng) % 10);
    if (r >= 7) {
        if (m->st[i] == K_LIVE) {
            want = r == 7 ? now - 1 : r == 8 ? 0 : now + 1;
        } else if (m->st[i] == K_DEAD && r == 7) {
            want = m->ver[i]; /* the delete's version: the key is absent, so it must not hold */
        } else {
            want = 1 + tu_rand(&t->rng) % (m->max_ack + 1);
        }
    }
    RC_OK(htkv_batch_check(b, bk_key[i], bk_klen[i], want));
    return want == now;
}

static void
add_op(struct bt *t, htkv_batch *b, struct bop *ops, unsigned j)
{
    static unsigned char v[VMAX];
    struct bop *o = &ops[j];
    o->id =
        j > 0 && tu_rand(&t->rng) % 6 == 0 ? ops[j - 1].id : (unsigned)(tu_rand(&t->rng) % t->nk);
    o->del = tu_rand(&t->rng) % 4 == 0; /* also of absent keys: written in a batch */
    if (o->del) {
        RC_OK(htkv_batch_delete(b, bk_key[o->id], bk_klen[o->id]));
        return;
    }
    o->vlen = (uint16_t)rand_vlen(&t->rng);
    o->tag = ++t->next_tag;
    tu_fill(v, o->vlen, o->tag);
    RC_OK(htkv_batch_put(b, bk_key[o->id], bk_klen[o->id], v, o->vlen));
}

static void
apply_ops(struct bt *t, const struct bop *ops, unsigned n, uint64_t v)
{
    for (unsigned j = 0; j < n; j++) {
        const struct bop *o = &ops[j];
        t->old_writes += t->m->st[o->id] != K_NEVER;
        t->m->st[o->id] = o->del ? K_DEAD : K_LIVE;
        t->m->vlen[o->id] = o->vlen;
        t->m->tag[o->id] = o->tag;
        t->m->ver[o->id] = v;
    }
}

/* A batch of 0..6 puts and deletes (a key may come twice) under 0..2 conditions. */
static void
w_batch(struct bt *t)
{
    htkv_batch *b = NULL;
    RC_OK(htkv_batch_create(&b));
    struct bop ops[6];
    unsigned nops = (unsigned)(tu_rand(&t->rng) % 7);
    unsigned nconds =
        nops == 0 ? 1 + (unsigned)(tu_rand(&t->rng) % 2) : (unsigned)(tu_rand(&t->rng) % 3);
    bool hold = true;
    for (unsigned c = 0; c < nconds; c++) {
        hold = add_cond(t, b) && hold;
    }
    for (unsigned j = 0; j < nops; j++) {
        add_op(t, b, ops, j);
    }
    uint64_t before = t->m->max_ack;
    int rc = htkv_write(t->db, b);
    if (!hold || nops == 0) {
        MCHECK(rc == (hold ? 0 : HTKV_ECONFLICT),
               "a batch of %u operations whose %u conditions %s: %d (%s)", nops, nconds,
               hold ? "hold" : "do not all hold", rc, htkv_strerror(rc));
        MCHECK(tu_latest(t->db) == before, "a batch that %s wrote something",
               hold ? "had only conditions" : "failed its conditions");
        htkv_batch_destroy(b);
        return;
    }
    MCHECK(rc == 0, "a batch of %u operations whose %u conditions hold: %d (%s) %s", nops, nconds,
           rc, htkv_strerror(rc), htkv_last_error());
    uint64_t v = htkv_batch_version(b);
    MCHECK(v == acked(t, "batch", ops[0].id), "htkv_batch_version %llu, the latest version %llu",
           (unsigned long long)v, (unsigned long long)t->m->max_ack);
    apply_ops(t, ops, nops, v);
    htkv_batch_destroy(b);
}

static void
w_get(struct bt *t, unsigned i)
{
    unsigned r = (unsigned)(tu_rand(&t->rng) % 5);
    if (r < 3) {
        check_key(t, i);
    } else if (r == 3) {
        check_probe(t, i, (unsigned)tu_rand(&t->rng));
    } else {
        check_key_cap0(t, i);
    }
}

/* @p n random steps: puts, deletes (also of absent keys), gets, batches. */
static void
random_ops(struct bt *t, unsigned n, const char *phase)
{
    for (unsigned s = 0; s < n; s++) {
        unsigned r = (unsigned)(tu_rand(&t->rng) % 100);
        unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
        tu_where("%s: %s: step %u of %u (r %u, key %u, %s)", t->name, phase, s, n, r, i,
                 state_name(t->m->st[i]));
        if (r < 45) {
            w_put(t, i);
        } else if (r < 60) {
            w_del(t, i);
        } else if (r < 65) {
            w_del_probe(t, i);
        } else if (r < 88 || !t->batches) {
            w_get(t, i);
        } else {
            w_batch(t);
        }
    }
}

/* Write every key 0..nk-1 once, in a random order: one put each, or batches of 50. */
static void
load_all(struct bt *t, bool batches)
{
    unsigned *perm = malloc(t->nk * sizeof(*perm));
    assert_non_null(perm);
    for (unsigned i = 0; i < t->nk; i++) {
        perm[i] = i;
    }
    for (unsigned i = t->nk - 1; i > 0; i--) {
        unsigned j = (unsigned)(tu_rand(&t->rng) % (i + 1)), x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    static unsigned char v[VMAX];
    struct bop ops[50];
    for (unsigned s = 0; s < t->nk;) {
        tu_where("%s: load: key %u of %u", t->name, s, t->nk);
        if (!batches) {
            w_put(t, perm[s++]);
            continue;
        }
        htkv_batch *b = NULL;
        RC_OK(htkv_batch_create(&b));
        unsigned n = 0;
        for (; n < 50 && s < t->nk; n++, s++) {
            ops[n] = (struct bop){ perm[s], false, (uint16_t)rand_vlen(&t->rng), ++t->next_tag };
            tu_fill(v, ops[n].vlen, ops[n].tag);
            RC_OK(htkv_batch_put(b, bk_key[perm[s]], bk_klen[perm[s]], v, ops[n].vlen));
        }
        RC_OK(htkv_write(t->db, b));
        uint64_t ver = htkv_batch_version(b);
        MCHECK(ver == acked(t, "batch", ops[0].id), "batch version %llu", (unsigned long long)ver);
        apply_ops(t, ops, n, ver);
        htkv_batch_destroy(b);
    }
    free(perm);
}

/* ---- ordered queries ------------------------------------------------------------------------- */

/* Where a query goes (the store or a view) and the model it must match. */
struct qt {
    htkv_db *db;
    htkv_view *view;
    const struct bmodel *m;
};

/* A query: a prefix, or a range [s, e) (an empty e: no end), with a limit (0 = none). */
struct query {
    bool prefix;
    unsigned char s[PMAX], e[PMAX];
    size_t sl, el;
    uint64_t limit;
    char desc[200];
};

/* First key number in [0, nk] whose key is >= @p b. */
static unsigned
lower_id(const struct bt *t, const void *b, size_t bl)
{
    unsigned lo = 0, hi = t->nk;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (kcmp(bk_key[mid], bk_klen[mid], b, bl) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* The model's key numbers of @p q: [*lo, *hi). */
static void
query_range(const struct bt *t, const struct query *q, unsigned *lo, unsigned *hi)
{
    *lo = lower_id(t, q->s, q->sl);
    if (q->prefix) {
        unsigned i = *lo;
        while (i < t->nk && bk_klen[i] >= q->sl && memcmp(bk_key[i], q->s, q->sl) == 0) {
            i++;
        }
        *hi = i;
        return;
    }
    *hi = q->el == 0 ? t->nk : lower_id(t, q->e, q->el);
    if (*hi < *lo) {
        *hi = *lo;
    }
}

static unsigned
next_live(const struct bmodel *m, unsigned i, unsigned hi)
{
    while (i < hi && m->st[i] != K_LIVE) {
        i++;
    }
    return i;
}

/* What a get of key @p i answers now, for failure messages. */
static const char *
get_rc_name(struct bt *t, unsigned i)
{
    static unsigned char buf[VMAX + 8];
    size_t vl = 0;
    return t->db == NULL
               ? "no store"
               : htkv_strerror(htkv_get(t->db, bk_key[i], bk_klen[i], buf, sizeof(buf), &vl));
}

/* Read @p it to its end: exactly the live keys of [lo, hi) (at most @p limit), in order, with
 * their values and versions. Returns the items read; *last = the number of the last. */
static uint64_t
expect_items(struct bt *t, const struct qt *q, htkv_iter *it, unsigned lo, unsigned hi,
             uint64_t limit, const char *desc, unsigned *last)
{
    unsigned i = next_live(q->m, lo, hi);
    uint64_t n = 0, want = 0;
    for (;;) {
        const void *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        int rc = htkv_iter_next(it, &k, &kl, &v, &vl);
        if (rc == 0) {
            break;
        }
        if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
            t->corrupt_reads++;
            return n;
        }
        MCHECK(rc == 1, "%s: htkv_iter_next: %d (%s) after %llu items", desc, rc, htkv_strerror(rc),
               (unsigned long long)n);
        MCHECK(i < hi, "%s: an extra item %s after the %llu expected", desc, khex(k, kl),
               (unsigned long long)n);
        MCHECK(kl == bk_klen[i] && memcmp(k, bk_key[i], kl) == 0,
               "%s: item %llu is %s, the model's next is key %u %s (a get of it: %s)", desc,
               (unsigned long long)n, khex(k, kl), i, khex(bk_key[i], bk_klen[i]),
               get_rc_name(t, i));
        uint64_t ver = htkv_iter_version(it);
        judge(t, q->m, i, 0, v, vl, &ver, desc);
        *last = i;
        n++;
        i = next_live(q->m, i + 1, hi);
    }
    for (unsigned j = next_live(q->m, lo, hi); j < hi; j = next_live(q->m, j + 1, hi)) {
        want++;
    }
    if (limit != 0 && limit < want) {
        want = limit;
    }
    MCHECK(n == want, "%s: %llu items, the model has %llu", desc, (unsigned long long)n,
           (unsigned long long)want);
    return n;
}

static int
open_query(const struct qt *q, const void *s, size_t sl, const void *e, size_t el, bool prefix,
           htkv_iter **it)
{
    if (prefix) {
        return q->view != NULL ? htkv_view_get_prefix(q->view, s, sl, it)
                               : htkv_get_prefix(q->db, s, sl, it);
    }
    return q->view != NULL ? htkv_view_scan(q->view, s, sl, e, el, it)
                           : htkv_scan(q->db, s, sl, e, el, it);
}

/* Run @p q once; returns false when it answered HTKV_ECORRUPT (allowed: t->corrupt_ok). */
static bool
run_query(struct bt *t, const struct qt *q, const struct query *qq)
{
    unsigned lo, hi, last = 0;
    query_range(t, qq, &lo, &hi);
    htkv_iter *it = NULL;
    int rc = open_query(q, qq->s, qq->sl, qq->e, qq->el, qq->prefix, &it);
    if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
        return false;
    }
    MCHECK(rc == 0, "%s: %d (%s)", qq->desc, rc, htkv_strerror(rc));
    if (qq->limit != 0) {
        RC_OK(htkv_iter_set_limit(it, qq->limit));
    }
    expect_items(t, q, it, lo, hi, qq->limit, qq->desc, &last);
    htkv_iter_destroy(it);
    return true;
}

/* A random query bound: empty, a key, a probe next to it, some of its bytes, or 0xFF. */
static size_t
gen_bound(struct bt *t, unsigned char *out)
{
    unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
    switch (tu_rand(&t->rng) % 7) {
    case 0:
        return 0;
    case 1:
        memcpy(out, bk_key[i], bk_klen[i]);
        return bk_klen[i];
    case 2:
    case 3:
        return probe_key(i, (unsigned)tu_rand(&t->rng), out);
    case 4:
        memcpy(out, bk_key[i], 6);
        return 1 + (size_t)(tu_rand(&t->rng) % 5);
    case 5:
        out[0] = 0xFF;
        return 1;
    default: {
        size_t n = 1 + (size_t)(tu_rand(&t->rng) % bk_klen[i]);
        memcpy(out, bk_key[i], n);
        return n;
    }
    }
}

/* A random prefix: empty, 3..6 digits, a whole key, a key plus a byte, part of a suffix. */
static size_t
gen_prefix(struct bt *t, unsigned char *out)
{
    unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
    unsigned r = (unsigned)(tu_rand(&t->rng) % 8);
    if (r == 0) {
        return 0;
    }
    if (r <= 3) {
        memcpy(out, bk_key[i], 6);
        return 3 + (size_t)(tu_rand(&t->rng) % 4);
    }
    if (r == 4) {
        return probe_key(i, 0, out);
    }
    size_t n = r == 5 ? bk_klen[i] : 6 + (size_t)(tu_rand(&t->rng) % (bk_klen[i] - 5));
    memcpy(out, bk_key[i], n);
    return n;
}

static void
gen_query(struct bt *t, struct query *qq, bool view)
{
    qq->prefix = tu_rand(&t->rng) % 2 == 0;
    qq->el = 0;
    if (qq->prefix) {
        qq->sl = gen_prefix(t, qq->s);
    } else {
        qq->sl = gen_bound(t, qq->s);
        qq->el = gen_bound(t, qq->e);
    }
    qq->limit = tu_rand(&t->rng) % 3 == 0 ? 1 + tu_rand(&t->rng) % 40 : 0;
    snprintf(qq->desc, sizeof(qq->desc), "%s %s %s%s%s limit %llu", view ? "view" : "store",
             qq->prefix ? "prefix" : "scan", khex(qq->s, qq->sl), qq->prefix ? "" : " to ",
             qq->prefix ? "" : khex(qq->e, qq->el), (unsigned long long)qq->limit);
}

/* Page through [s, e) @p page keys at a time, each page a new scan from the last key + 0x00. */
static void
page_through(struct bt *t, const struct qt *q, struct query *qq, uint64_t page)
{
    static struct query cur;
    unsigned lo, hi, last = 0;
    cur = *qq;
    cur.prefix = false;
    cur.limit = page;
    query_range(t, &cur, &lo, &hi);
    for (unsigned pages = 0;; pages++) {
        snprintf(cur.desc, sizeof(cur.desc), "paging (%llu a page) page %u from %s to %s",
                 (unsigned long long)page, pages, khex(cur.s, cur.sl), khex(cur.e, cur.el));
        MCHECK(pages <= t->nk, "%s: paging does not end", cur.desc);
        htkv_iter *it = NULL;
        int rc = open_query(q, cur.s, cur.sl, cur.e, cur.el, false, &it);
        if (rc == HTKV_ECORRUPT && t->corrupt_ok) {
            return;
        }
        MCHECK(rc == 0, "%s: %d (%s)", cur.desc, rc, htkv_strerror(rc));
        RC_OK(htkv_iter_set_limit(it, page));
        uint64_t got = expect_items(t, q, it, lo, hi, page, cur.desc, &last);
        htkv_iter_destroy(it);
        if (got < page) {
            return;
        }
        cur.sl = probe_key(last, 0, cur.s);
        lo = last + 1;
    }
}

/* @p n random queries (a tenth of them paged) against @p q. */
static void
run_queries(struct bt *t, const struct qt *q, unsigned n, const char *when)
{
    static struct query qq;
    for (unsigned j = 0; j < n; j++) {
        gen_query(t, &qq, q->view != NULL);
        tu_where("%s: %s: query %u of %u: %s", t->name, when, j, n, qq.desc);
        if (j % 10 == 9) {
            qq.el = qq.prefix ? 0 : qq.el;
            page_through(t, q, &qq, 1 + tu_rand(&t->rng) % 50);
        } else {
            run_query(t, q, &qq);
        }
    }
}

static void
check_queries(struct bt *t, unsigned n, const char *when)
{
    struct qt q = { t->db, NULL, t->m };
    run_queries(t, &q, n, when);
}

/* ---- 1. random operations against the model, across budget changes --------------------------- */

/* How phase @p p of model_random_ops reopens the store. */
static void
reopen_for_phase(struct bt *t, unsigned p, uint64_t budget)
{
    static const char *const why[8] = {
        "the same budget",
        "no budget",
        "twice the budget",
        "a budget of 1 byte",
        "background compaction",
        "a budget above everything",
        "read-only",
        "the same budget again",
    };
    char label[96];
    snprintf(label, sizeof(label), "phase %u: reopen with %s", p, why[p % 8]);
    t->cfg.compaction_interval_ms = p % 8 == 4 ? 5 : 0;
    t->cfg.compaction_min_garbage_ratio = 0.2;
    t->cfg.read_only = p % 8 == 6;
    static const uint64_t factor[8] = { 1, 0, 2, 0, 1, 0, 1, 1 };
    uint64_t b = budget * factor[p % 8];
    b = p % 8 == 3 ? 1 : p % 8 == 5 ? UINT64_MAX / 2 : b;
    bt_reopen(t, b, label);
    check_all(t, label);
    check_stats(t, label);
    if (t->cfg.read_only) { /* nothing to write: back to a writable open */
        t->cfg.read_only = 0;
        bt_reopen(t, budget, "after the read-only phase");
    }
}

static void
test_budget_model_random_ops(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_model_random_ops", 6000, -1, 32u << 10);
    uint64_t budget = t.cfg.memory_budget_bytes;
    bt_reopen(&t, budget, "create");
    load_all(&t, false);
    check_all(&t, "after the load");
    check_stats(&t, "after the load");
    unsigned phases = 9, ops = tu_model_scaled(1500);
    for (unsigned p = 0; p < phases; p++) {
        char label[64];
        snprintf(label, sizeof(label), "phase %u (%u random steps)", p, ops);
        random_ops(&t, ops, label);
        check_all(&t, label);
        check_queries(&t, 8, label);
        check_stats(&t, label);
        if (p % 3 == 1) {
            tu_where("%s: htkv_compact_now", label);
            RC_OK(htkv_compact_now(t.db));
            check_all(&t, "after htkv_compact_now");
            check_stats(&t, "after htkv_compact_now");
        }
        reopen_for_phase(&t, p, budget);
    }
    t.cfg.compaction_interval_ms = 0;
    bt_finish(&t);
}

/* ---- 2. ordered queries over cold keys ------------------------------------------------------- */

static void
test_budget_ordered_queries_exact(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_ordered_queries", 2500, -1, 24u << 10);
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, false);
    /* Delete a fifth and overwrite a fifth of the keys, now mostly cold; then churn. */
    for (unsigned i = 0; i < t.nk; i++) {
        tu_where("%s: delete or overwrite key %u", t.name, i);
        unsigned r = (unsigned)(tu_rand(&t.rng) % 5);
        if (r == 0) {
            w_del(&t, i);
        } else if (r == 1) {
            w_put(&t, i);
        }
    }
    random_ops(&t, tu_model_scaled(1500), "churn");
    check_stats(&t, "before the queries");
    check_queries(&t, 60, "mostly cold keys");
    for (unsigned r = 0; r < 6; r++) {
        char label[64];
        snprintf(label, sizeof(label), "round %u", r);
        random_ops(&t, tu_model_scaled(400), label);
        check_queries(&t, 30, label);
        if (r == 2) {
            bt_reopen(&t, t.cfg.memory_budget_bytes / 2, "reopen with half the budget");
            check_queries(&t, 30, "after reopen");
        } else if (r == 4) {
            tu_where("%s: htkv_compact_now", t.name);
            RC_OK(htkv_compact_now(t.db));
            check_queries(&t, 30, "after htkv_compact_now");
        }
    }
    check_all(&t, "the end");
    check_stats(&t, "the end");
    bt_finish(&t);
}

/* ---- 3. views keep their moment -------------------------------------------------------------- */

/* Every key through @p v: what @p snap holds (htkv_view_get has no version). */
static void
check_view_keys(struct bt *t, htkv_view *v, const struct bmodel *snap, const char *when)
{
    static unsigned char buf[VMAX + 8];
    tu_where("%s: %s: view gets", t->name, when);
    for (unsigned i = 0; i < t->nk; i++) {
        size_t vl = 0;
        int rc = htkv_view_get(v, bk_key[i], bk_klen[i], buf, sizeof(buf), &vl);
        judge(t, snap, i, rc, buf, vl, NULL, "htkv_view_get");
    }
}

/* Overwrite and delete many keys (hot and cold), then rewrite all of them: evicts more. */
static void
churn(struct bt *t, const char *when)
{
    tu_where("%s: %s", t->name, when);
    for (unsigned i = 0; i < t->nk; i++) {
        unsigned r = (unsigned)(tu_rand(&t->rng) % 100);
        if (r < 40) {
            w_put(t, i);
        } else if (r < 55) {
            w_del(t, i);
        }
    }
    random_ops(t, tu_model_scaled(800), when);
    for (unsigned i = 0; i < t->nk; i += 2) {
        w_put(t, i);
    }
}

static void
test_budget_views_keep_their_moment(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_views", 3000, -1, 32u << 10);
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, false);
    random_ops(&t, tu_model_scaled(600), "before the view");
    check_stats(&t, "before the view");
    struct bmodel *snap = malloc(sizeof(*snap));
    assert_non_null(snap);
    memcpy(snap, t.m, sizeof(*snap));
    htkv_view *v = NULL;
    RC_OK(htkv_view_open(t.db, &v));
    t.view_open = true;
    MCHECK(htkv_view_version(v) == snap->max_ack, "htkv_view_version %llu, the latest %llu",
           (unsigned long long)htkv_view_version(v), (unsigned long long)snap->max_ack);
    /* An iterator over the whole store, read in part now and in part after the churn. */
    struct qt qs = { t.db, NULL, snap }, qv = { NULL, v, snap };
    htkv_iter *early = NULL;
    tu_where("%s: a view and an iterator before the churn", t.name);
    RC_OK(htkv_get_prefix(t.db, NULL, 0, &early));
    RC_OK(htkv_iter_set_limit(early, 100));
    unsigned last = 0;
    uint64_t got = expect_items(&t, &qs, early, 0, t.nk, 100, "iterator before the churn", &last);
    check_view_keys(&t, v, snap, "before the churn");
    churn(&t, "churn under a view");
    check_stats(&t, "with a view open");
    check_view_keys(&t, v, snap, "after the churn");
    run_queries(&t, &qv, 40, "view after the churn");
    RC_OK(htkv_iter_set_limit(early, 0));
    expect_items(&t, &qs, early, got == 100 ? last + 1 : t.nk, t.nk, 0,
                 "the rest of the iterator opened before the churn", &last);
    htkv_iter_destroy(early);
    tu_where("%s: htkv_compact_now with a view open", t.name);
    RC_OK(htkv_compact_now(t.db));
    churn(&t, "more churn under a view");
    check_view_keys(&t, v, snap, "after a compaction and more churn");
    run_queries(&t, &qv, 20, "view after a compaction");
    htkv_view_close(v);
    t.view_open = false;
    check_all(&t, "after the view closed");
    check_queries(&t, 20, "after the view closed");
    churn(&t, "churn after the view closed");
    check_stats(&t, "after the view closed and more writes");
    free(snap);
    bt_finish(&t);
}

/* ---- 4. hostile changes to the files --------------------------------------------------------- */

#define MAXF 512

/* Files kept from an earlier open, to be put back later (stale key index files). */
struct saved {
    size_t n;
    char path[64][4096];
    unsigned char *data[64];
    size_t len[64];
};

static void
saved_free(struct saved *s)
{
    for (size_t j = 0; j < s->n; j++) {
        free(s->data[j]);
    }
    s->n = 0;
}

/* Keep a copy of every .kix file now under the store. */
static void
save_kix(struct bt *t, struct saved *s)
{
    static char paths[MAXF][4096];
    saved_free(s);
    size_t n = tu_shard_files(t->dir, ".kix", paths, MAXF);
    for (size_t j = 0; j < n && j < MAXF && s->n < 64; j++) {
        s->data[s->n] = tu_read_whole(paths[j], &s->len[s->n]);
        if (s->data[s->n] != NULL) {
            snprintf(s->path[s->n++], 4096, "%s", paths[j]);
        }
    }
}

static void
write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_true(len == 0 || write(fd, data, len) == (ssize_t)len);
    close(fd);
}

/* Flip @p n random bytes of @p path between @p from and @p to (fractions of its size), with
 * pwrite() (also on a file the store has open). */
static void
flip_bytes(struct bt *t, const char *path, unsigned n, double from, double to)
{
    long long size = tu_file_size(path);
    if (size <= 0) {
        return;
    }
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    long long a = (long long)((double)size * from), span = (long long)((double)size * (to - from));
    for (unsigned j = 0; j < n; j++) {
        off_t off = (off_t)(a + (span > 0 ? (long long)(tu_rand(&t->rng) % (uint64_t)span) : 0));
        unsigned char c;
        if (pread(fd, &c, 1, off) == 1) {
            c ^= (unsigned char)(1 + tu_rand(&t->rng) % 255);
            assert_int_equal(pwrite(fd, &c, 1, off), 1);
        }
    }
    close(fd);
}

/* Damage the .kix files of a closed store: unlink, truncate, flip, overwrite or keep each. */
static void
damage_kix(struct bt *t, unsigned *acts)
{
    static char paths[MAXF][4096];
    static unsigned char junk[8192];
    size_t n = tu_shard_files(t->dir, ".kix", paths, MAXF);
    for (size_t j = 0; j < n && j < MAXF; j++) {
        unsigned a = (unsigned)(tu_rand(&t->rng) % 5);
        acts[a]++;
        long long size = tu_file_size(paths[j]);
        if (a == 0) {
            unlink(paths[j]);
        } else if (a == 1) {
            assert_int_equal(
                tu_truncate(paths[j],
                            size > 0 ? (long long)(tu_rand(&t->rng) % (uint64_t)size) : 0),
                0);
        } else if (a == 2) {
            flip_bytes(t, paths[j], 16, 0.0, 1.0);
        } else if (a == 3) {
            tu_fill(junk, sizeof(junk), tu_rand(&t->rng));
            write_file(paths[j], junk, size > 0 && size < 8192 ? (size_t)size : sizeof(junk));
        }
    }
}

/* Plant .kix files beside the segments of a closed store: kept copies of earlier ones put back
 * where they were, or under another segment's name (also of another shard), junk, empty files. */
static void
plant_kix(struct bt *t, const struct saved *s, struct saved *junk)
{
    static char segs[MAXF][4096];
    static unsigned char bytes[16384];
    for (size_t j = 0; j < s->n; j++) {
        if (tu_file_size(s->path[j]) < 0 && tu_rand(&t->rng) % 2 == 0) {
            write_file(s->path[j], s->data[j], s->len[j]); /* not in junk: might come again */
        }
    }
    size_t n = tu_segments(t->dir, segs, MAXF);
    for (size_t j = 0; j < n; j++) {
        char kp[4096];
        size_t l = strlen(segs[j]);
        if (tu_rand(&t->rng) % 3 != 0 || l < 4) {
            continue;
        }
        snprintf(kp, sizeof(kp), "%.*s.kix", (int)(l - 4), segs[j]);
        unsigned r = (unsigned)(tu_rand(&t->rng) % 3);
        const unsigned char *data = bytes;
        size_t len = r == 1 ? 4096 * (1 + (size_t)(tu_rand(&t->rng) % 4)) : 0;
        tu_fill(bytes, len, tu_rand(&t->rng));
        bool own = false; /* an earlier open's file for this very segment, put back */
        if (r == 0 && s->n > 0) {
            size_t k = (size_t)(tu_rand(&t->rng) % s->n);
            data = s->data[k];
            len = s->len[k];
            own = strcmp(s->path[k], kp) == 0;
        }
        write_file(kp, data, len);
        /* The open may write that segment's file again from the same entries, byte for byte:
         * such a plant cannot be told from the open's own file, so it is not checked. */
        if (junk->n < 64 && !own) {
            junk->data[junk->n] = malloc(len + 1);
            assert_non_null(junk->data[junk->n]);
            memcpy(junk->data[junk->n], data, len);
            junk->len[junk->n] = len;
            snprintf(junk->path[junk->n++], 4096, "%s", kp);
        }
    }
}

/* After a writable open: no planted file is left as it was planted (the open removes the key
 * index files an earlier one left; one of this open's may have taken its name). */
static void
check_planted_gone(const struct saved *junk)
{
    size_t left = 0;
    for (size_t j = 0; j < junk->n; j++) {
        size_t len = 0;
        unsigned char *now = tu_read_whole(junk->path[j], &len);
        left += now != NULL && len == junk->len[j] && memcmp(now, junk->data[j], len) == 0;
        free(now);
    }
    BCHECK(left == 0,
           "%zu of %zu .kix files planted while the store was closed are still there "
           "after a writable open",
           left, junk->n);
}

/* Close as a crash (0) or cleanly, keeping the .kix files that were there before the close. */
static void
close_keeping_kix(struct bt *t, bool crash, struct saved *s)
{
    save_kix(t, s);
    tu_where("%s: %s", t->name, crash ? "close as a crash" : "htkv_close");
    if (crash) {
        tu_close_as_crash(t->db);
        t->crashed = true;
    } else {
        RC_OK(htkv_close(t->db));
    }
    t->db = NULL;
}

static void
test_budget_kix_tamper_between_opens(void **state)
{
    (void)state;
    struct bt t;
    static struct saved s, junk;
    bt_start(&t, "budget_kix_tamper_between_opens", 2500, HTKV_SYNC_NEVER, 24u << 10);
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, false);
    random_ops(&t, tu_model_scaled(800), "before the first close");
    static const uint64_t budgets[6] = { 24u << 10, 8u << 10, 48u << 10, 0, 16u << 10, 24u << 10 };
    for (unsigned r = 0; r < 6; r++) {
        check_stats(&t, "before the close");
        close_keeping_kix(&t, r % 3 == 0, &s);
        unsigned acts[5] = { 0 };
        size_t before = count_kix(t.dir);
        damage_kix(&t, acts);
        saved_free(&junk);
        plant_kix(&t, &s, &junk);
        fprintf(stderr,
                "[%s] round %u: %zu .kix files kept from the open (%zu after the close); "
                "unlinked %u, truncated %u, flipped %u, overwritten %u, kept %u, planted %zu\n",
                t.name, r, s.n, before, acts[0], acts[1], acts[2], acts[3], acts[4], junk.n);
        if (r == 4) {
            t.cfg.read_only = 1;
            bt_reopen(&t, budgets[r], "read-only after tampering with the key index files");
            check_all(&t, "read-only after tampering");
            check_queries(&t, 10, "read-only after tampering");
            t.cfg.read_only = 0;
        }
        bt_reopen(&t, budgets[r], "after tampering with the key index files");
        check_planted_gone(&junk);
        check_all(&t, "after tampering with the key index files");
        check_queries(&t, 10, "after tampering");
        check_stats(&t, "after tampering");
        random_ops(&t, tu_model_scaled(400), "after tampering");
        check_all(&t, "after writes");
    }
    saved_free(&s);
    saved_free(&junk);
    bt_finish(&t);
}

/* After the unsure keys were checked (m or alt): make the model say what each holds now. */
static void
settle_unsure(struct bt *t)
{
    static unsigned char buf[VMAX + 8];
    for (unsigned i = 0; i < t->nk; i++) {
        if (!t->unsure[i]) {
            continue;
        }
        size_t vl = 0;
        uint64_t ver = 0;
        int rc = htkv_get_version(t->db, bk_key[i], bk_klen[i], buf, sizeof(buf), &vl, &ver);
        if (!matches(t->m, i, rc, buf, vl, NULL)) {
            MCHECK(matches(t->alt, i, rc, buf, vl, NULL), "unsure key %u: rc %d", i, rc);
            t->m->st[i] = t->alt->st[i];
            t->m->vlen[i] = t->alt->vlen[i];
            t->m->tag[i] = t->alt->tag[i];
        }
        t->m->ver[i] = t->m->st[i] == K_LIVE ? ver : t->m->ver[i];
        t->unsure[i] = 0;
    }
}

/* One round of kix_tamper_while_open: flip bytes in the middle of every .kix file now, then
 * read, write and compact. */
static void
tamper_open_round(struct bt *t, unsigned r)
{
    static char paths[MAXF][4096];
    size_t n = tu_shard_files(t->dir, ".kix", paths, MAXF);
    for (size_t j = 0; j < n && j < MAXF; j++) {
        flip_bytes(t, paths[j], 8 + 8 * r, 0.25, 0.75);
    }
    char label[96];
    snprintf(label, sizeof(label), "round %u: %zu .kix files flipped while open", r, n);
    check_all(t, label);
    if (memchr(t->unsure, 1, t->nk) == NULL) {
        check_queries(t, 10, label);
    }
    random_ops(t, tu_model_scaled(300), label);
    tu_where("%s: %s: htkv_compact_now", t->name, label);
    int rc = htkv_compact_now(t->db);
    MCHECK(rc == 0, "htkv_compact_now: %d (%s)", rc, htkv_strerror(rc));
    check_all(t, label);
    check_queries(t, 10, label);
    fprintf(stderr, "[%s] %s: %lu reads answered HTKV_ECORRUPT so far\n", t->name, label,
            t->corrupt_reads);
}

static void
test_budget_kix_tamper_while_open(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_kix_tamper_while_open", 2500, -1, 16u << 10);
    t.alt = calloc(1, sizeof(*t.alt));
    assert_non_null(t.alt);
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, false);
    /* Deletes and overwrites that shadow older records, all pushed out by later writes. */
    for (unsigned i = 0; i < t.nk; i++) {
        tu_where("%s: delete or overwrite key %u", t.name, i);
        unsigned r = (unsigned)(tu_rand(&t.rng) % 10);
        if (r < 3) {
            w_del(&t, i);
        } else if (r < 6) {
            w_put(&t, i);
        }
    }
    random_ops(&t, tu_model_scaled(800), "before tampering");
    check_stats(&t, "before tampering");
    size_t n = count_kix(t.dir);
    BCHECK(n > 0, "no .kix file to tamper with under a store far above its budget");
    t.corrupt_ok = false; /* the key indexes are damaged, the data is not */
    t.batches = false;
    for (unsigned r = 0; r < 4; r++) {
        tamper_open_round(&t, r);
    }
    unsigned long unsure = 0;
    for (unsigned i = 0; i < t.nk; i++) {
        unsure += t.unsure[i];
    }
    fprintf(stderr, "[%s] %lu reads answered HTKV_ECORRUPT, %lu writes failed with it\n", t.name,
            t.corrupt_reads, unsure);
    t.corrupt_ok = false;
    bt_reopen(&t, t.cfg.memory_budget_bytes, "after tampering while open");
    check_all(&t, "after reopen");
    settle_unsure(&t);
    check_queries(&t, 20, "after reopen");
    check_stats(&t, "after reopen");
    bt_finish(&t);
}

/* Flip bytes in the middle of a sealed segment (not the newest of its shard); returns whether
 * there was one. */
static bool
damage_sealed_segment(struct bt *t)
{
    static char segs[MAXF][4096];
    unsigned shard = (unsigned)(tu_rand(&t->rng) % t->cfg.shard_count);
    size_t n = tu_shard_segments(t->dir, shard, segs, MAXF);
    if (n < 2) {
        return false;
    }
    size_t j = (size_t)(tu_rand(&t->rng) % (n - 1));
    fprintf(stderr, "[%s] flipping 4 bytes in the middle of %s\n", t->name, segs[j]);
    flip_bytes(t, segs[j], 4, 0.3, 0.7);
    return true;
}

/* Flip bytes in a file of a shard that is neither a segment nor a key index file (hints). */
static bool
damage_other_file(struct bt *t)
{
    static char all[MAXF][4096];
    size_t n = tu_shard_files(t->dir, "", all, MAXF), k = 0;
    n = n < MAXF ? n : MAXF;
    for (size_t j = 0; j < n; j++) {
        size_t l = strlen(all[j]);
        if (l > 4 && strcmp(all[j] + l - 4, ".seg") != 0 && strcmp(all[j] + l - 4, ".kix") != 0) {
            memmove(all[k++], all[j], 4096);
        }
    }
    if (k == 0) {
        return false;
    }
    size_t j = (size_t)(tu_rand(&t->rng) % k);
    fprintf(stderr, "[%s] flipping 4 bytes of %s\n", t->name, all[j]);
    flip_bytes(t, all[j], 4, 0.0, 1.0);
    return true;
}

/* One damaged copy of the clean store: opened with a budget, every read right or ECORRUPT. */
static void
damaged_copy(struct bt *t, const char *clean, const struct bmodel *m0, unsigned trial,
             unsigned *refused)
{
    tu_rmrf(t->dir);
    tu_copy_store(clean, t->dir);
    memcpy(t->m, m0, sizeof(*t->m));
    bool did = trial % 2 == 0 ? damage_sealed_segment(t) : damage_other_file(t);
    if (!did) {
        fprintf(stderr, "[%s] trial %u: nothing to damage\n", t->name, trial);
        return;
    }
    tu_where("%s: trial %u: htkv_open of the damaged store", t->name, trial);
    t->cfg.memory_budget_bytes = trial % 3 == 0 ? 8u << 10 : 24u << 10;
    htkv_db *db = NULL;
    int rc = htkv_open(&t->cfg, &db);
    if (rc == HTKV_ECORRUPT) {
        (*refused)++;
        return;
    }
    MCHECK(rc == 0, "htkv_open of a damaged store: %d (%s) %s", rc, htkv_strerror(rc),
           htkv_last_error());
    t->db = db;
    check_all(t, "damaged store");
    check_queries(t, 10, "damaged store");
    check_stats(t, "damaged store");
    tu_where("%s: trial %u: htkv_compact_now", t->name, trial);
    rc = htkv_compact_now(t->db);
    MCHECK(rc == 0 || rc == HTKV_ECORRUPT, "htkv_compact_now: %d (%s)", rc, htkv_strerror(rc));
    check_all(t, "damaged store after htkv_compact_now");
    bt_close(t);
}

/* The newest record of key @p i in the store's segments: flip a bit in the middle of its value
 * (@p where 0), of its key (1) or of its header (2). Returns whether it was found. */
static bool
damage_record_of(struct bt *t, unsigned i, unsigned where)
{
    static char segs[MAXF][4096];
    static struct tu_rec recs[4096];
    size_t n = tu_segments(t->dir, segs, MAXF);
    for (size_t j = 0; j < n; j++) {
        size_t nr = tu_seg_scan(segs[j], recs, 4096);
        for (size_t r = 0; r < nr && r < 4096; r++) {
            const struct tu_rec *c = &recs[r];
            if (c->version != t->m->ver[i] || c->key_len != bk_klen[i] ||
                memcmp(c->key, bk_key[i], 6) != 0 || c->val_len != t->m->vlen[i]) {
                continue;
            }
            long long hdr = c->raw - c->key_len - c->val_len;
            long long off = where == 0   ? c->off + c->raw - c->val_len / 2 - 1
                            : where == 1 ? c->off + hdr + c->key_len / 2
                                         : c->off + hdr / 2;
            fprintf(stderr, "[%s] flipping a bit at %lld of %s: key %u's %s\n", t->name, off,
                    segs[j], i,
                    where == 0   ? "value"
                    : where == 1 ? "key"
                                 : "record header");
            return tu_flip_bit(segs[j], off, 3) == 0;
        }
    }
    return false;
}

/* A query that covers the damaged key @p i must stop with HTKV_ECORRUPT: never skip it. */
static void
expect_query_stops(struct bt *t, unsigned i, bool prefix, const char *what)
{
    htkv_iter *it = NULL;
    tu_where("%s: %s over the damaged key %u", t->name, what, i);
    int rc = prefix ? htkv_get_prefix(t->db, bk_key[i], 6, &it)
                    : htkv_scan(t->db, NULL, 0, NULL, 0, &it);
    unsigned long items = 0;
    if (rc == 0) {
        while ((rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
            items++;
        }
    }
    bool passed = rc == 0; /* the end: the iteration went past key i without an error */
    htkv_iter_destroy(it);
    MCHECK(!passed && rc == HTKV_ECORRUPT,
           "%s over key %u, whose record fails its checksum (a get says HTKV_ECORRUPT): %lu items "
           "then rc %d (%s); htkv_iter_next must return HTKV_ECORRUPT, not skip the key",
           what, i, items, rc, htkv_strerror(rc));
}

/* One round of damaged_record_in_queries on a fresh copy of @p clean: damage the record of a
 * random live key (@p where: value, key, header), then read it in every way. */
static void
damaged_record_round(struct bt *t, const char *clean, const struct bmodel *m0, unsigned where)
{
    tu_rmrf(t->dir);
    tu_copy_store(clean, t->dir);
    memcpy(t->m, m0, sizeof(*t->m));
    unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
    while (t->m->st[i] != K_LIVE || t->m->vlen[i] < 16 || bk_klen[i] > 64) {
        i = (i + 1) % t->nk;
    }
    MCHECK(damage_record_of(t, i, where), "the record of key %u was not found", i);
    tu_where("%s: htkv_open after damaging the record of key %u (%u)", t->name, i, where);
    int rc = htkv_open(&t->cfg, &t->db);
    if (rc == HTKV_ECORRUPT) { /* allowed: the open read that record */
        fprintf(stderr, "[%s] the open found the damage: %s\n", t->name, htkv_last_error());
        return;
    }
    MCHECK(rc == 0, "htkv_open: %d (%s)", rc, htkv_strerror(rc));
    static unsigned char buf[VMAX + 8];
    size_t vl = 0;
    rc = htkv_get(t->db, bk_key[i], bk_klen[i], buf, sizeof(buf), &vl);
    MCHECK(rc == HTKV_ECORRUPT, "get of the damaged key %u: %d (%s)", i, rc, htkv_strerror(rc));
    /* Again and again: the queries since the last write soon pay for sorted runs. */
    for (unsigned r = 0; r < 4; r++) {
        expect_query_stops(t, i, true, "a prefix query of its 6 digits");
        expect_query_stops(t, i, false, "a scan of the whole store");
    }
    t->corrupt_ok = true;
    check_all(t, "after damaging one record");
    t->corrupt_ok = false;
    expect_query_stops(t, i, false, "a scan of the whole store after a get of every key");
    bt_close(t);
}

/* The store each damage round starts from: loaded, @p ops random steps, closed, and copied to
 * DIR-clean (@p clean); returns its model (malloc'd). */
static struct bmodel *
damage_base(struct bt *t, unsigned ops, char *clean, size_t cap)
{
    bt_reopen(t, t->cfg.memory_budget_bytes, "create");
    load_all(t, false);
    random_ops(t, tu_model_scaled(ops), "before the damage");
    bt_close(t);
    snprintf(clean, cap, "%s-clean", t->dir);
    tu_copy_store(t->dir, clean);
    struct bmodel *m0 = malloc(sizeof(*m0));
    assert_non_null(m0);
    memcpy(m0, t->m, sizeof(*m0));
    return m0;
}

/* A record of a live key damaged on disk (value, key or header): gets and queries that meet it
 * answer HTKV_ECORRUPT; a query never skips the key silently. Under a budget. */
static void
test_budget_damaged_record_in_queries(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_damaged_record_in_queries", 600, HTKV_SYNC_NEVER, 16u << 10);
    char clean[4200];
    struct bmodel *m0 = damage_base(&t, 300, clean, sizeof(clean));
    for (unsigned r = 0; r < 18; r++) {
        damaged_record_round(&t, clean, m0, r % 3);
    }
    tu_rmrf(clean);
    free(m0);
    bt_finish(&t);
}

static void
test_budget_segment_damage(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_segment_damage", 2000, HTKV_SYNC_NEVER, 24u << 10);
    char clean[4200];
    struct bmodel *m0 = damage_base(&t, 600, clean, sizeof(clean));
    t.corrupt_ok = true;
    unsigned refused = 0;
    for (unsigned trial = 0; trial < 6; trial++) {
        damaged_copy(&t, clean, m0, trial, &refused);
    }
    fprintf(stderr, "[%s] %u of 6 damaged opens refused with HTKV_ECORRUPT, %lu reads did\n",
            t.name, refused, t.corrupt_reads);
    tu_rmrf(clean);
    free(m0);
    bt_finish(&t);
}

/* ---- 5. snapshots of cold keys --------------------------------------------------------------- */

/* Snapshots see cold keys as hot ones: a snapshot written under a budget is byte-identical to
 * one of the same store without a budget, and restoring it after churn (a rollback) brings back
 * every key with its value and version. */
static void
test_budget_snapshot_of_cold_keys(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_snapshot", 2500, -1, 24u << 10);
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, false);
    random_ops(&t, tu_model_scaled(1000), "before the snapshot");
    char a[4200], b[4200];
    snprintf(a, sizeof(a), "%s/../%s-a.snap", t.dir, t.name);
    snprintf(b, sizeof(b), "%s/../%s-b.snap", t.dir, t.name);
    tu_where("%s: htkv_snapshot_write under a budget", t.name);
    RC_OK(htkv_snapshot_write(t.db, a));
    struct bmodel *snap = malloc(sizeof(*snap));
    assert_non_null(snap);
    memcpy(snap, t.m, sizeof(*snap));
    bt_reopen(&t, 0, "no budget, for a second snapshot");
    RC_OK(htkv_snapshot_write(t.db, b));
    size_t al = 0, bl = 0;
    unsigned char *ab = tu_read_whole(a, &al), *bb = tu_read_whole(b, &bl);
    MCHECK(ab != NULL && bb != NULL && al == bl && memcmp(ab, bb, al) == 0,
           "the snapshot written under a budget (%zu bytes) differs from the one written without "
           "(%zu bytes)",
           al, bl);
    free(ab);
    free(bb);
    bt_reopen(&t, 24u << 10, "a budget again");
    churn(&t, "churn before the restore");
    check_stats(&t, "before the restore");
    uint64_t before = t.m->max_ack;
    tu_where("%s: htkv_snapshot_restore (a rollback)", t.name);
    RC_OK(htkv_snapshot_restore(t.db, a));
    memcpy(t.m, snap, sizeof(*snap));
    t.m->max_ack = tu_latest(t.db);
    MCHECK(t.m->max_ack > before, "after a rollback the latest version %llu is not above %llu",
           (unsigned long long)t.m->max_ack, (unsigned long long)before);
    for (unsigned i = 0; i < t.nk; i++) { /* deleted keys are simply absent in a snapshot */
        t.m->st[i] = t.m->st[i] == K_DEAD ? K_NEVER : t.m->st[i];
    }
    check_all(&t, "after the restore");
    check_queries(&t, 20, "after the restore");
    random_ops(&t, tu_model_scaled(600), "after the restore");
    bt_reopen(&t, t.cfg.memory_budget_bytes, "reopen after the restore");
    check_all(&t, "after reopen");
    check_stats(&t, "after reopen");
    unlink(a);
    unlink(b);
    free(snap);
    bt_finish(&t);
}

/* ---- 6. counters: key index filters and index pages
 * ---------------------------------------------- */

/* Delete every @p every-th key by batches of 50 deletes. */
static void
delete_by_batches(struct bt *t, unsigned every)
{
    struct bop ops[50];
    for (unsigned i = 0; i < t->nk;) {
        htkv_batch *b = NULL;
        RC_OK(htkv_batch_create(&b));
        unsigned n = 0;
        for (; n < 50 && i < t->nk; i += every) {
            ops[n++] = (struct bop){ i, true, 0, 0 };
            RC_OK(htkv_batch_delete(b, bk_key[i], bk_klen[i]));
        }
        RC_OK(htkv_write(t->db, b));
        MCHECK(htkv_batch_version(b) == acked(t, "batch of deletes", ops[0].id), "batch version");
        apply_ops(t, ops, n, htkv_batch_version(b));
        htkv_batch_destroy(b);
    }
}

/* @p misses gets of never-written keys: between written keys, and after all of them. */
static void
absent_gets(struct bt *t, unsigned misses)
{
    for (unsigned j = 0; j < misses; j++) {
        unsigned i = (unsigned)(tu_rand(&t->rng) % t->nk);
        tu_where("%s: absent get %u of %u", t->name, j, misses);
        if (j % 4 == 3) {
            check_key(t, t->nk + (unsigned)(tu_rand(&t->rng) % (NKMAX - t->nk)));
        } else {
            check_probe(t, i, j);
        }
    }
}

/* Absent keys: filter negatives, and well under 0.2 index pages read a miss. */
static void
check_misses(struct bt *t, unsigned misses)
{
    struct htkv_stats s0 = tu_stats(t->db);
    absent_gets(t, misses);
    struct htkv_stats s1 = tu_stats(t->db);
    print_stats(t, "after the absent gets", &s1);
    MCHECK(s1.gets - s0.gets == misses, "stats.gets grew by %llu over %u gets",
           (unsigned long long)(s1.gets - s0.gets), misses);
    uint64_t pr = s1.kix_page_reads - s0.kix_page_reads;
    uint64_t fp = s1.bloom_false_positives - s0.bloom_false_positives;
    uint64_t bn = s1.bloom_negatives - s0.bloom_negatives;
    BCHECK(bn >= misses / 2,
           "%llu filter negatives over %u absent gets (%llu cold keys, %llu .kix)",
           (unsigned long long)bn, misses, (unsigned long long)s1.cold_keys,
           (unsigned long long)s1.kix_files);
    BCHECK((double)pr < 0.2 * misses, "%llu index pages read over %u absent gets (%llu .kix)",
           (unsigned long long)pr, misses, (unsigned long long)s1.kix_files);
    BCHECK(fp <= pr, "%llu false-positive page reads, %llu page reads", (unsigned long long)fp,
           (unsigned long long)pr);
}

/* A get of every key once: the cold ones (live or deleted) read ~1 page each, hot ones none. */
static void
check_cold_gets(struct bt *t)
{
    struct htkv_stats s1 = tu_stats(t->db);
    for (unsigned i = 0; i < t->nk; i++) {
        tu_where("%s: get of key %u", t->name, i);
        check_key(t, i);
    }
    struct htkv_stats s2 = tu_stats(t->db);
    print_stats(t, "after a get of every key", &s2);
    uint64_t pr = s2.kix_page_reads - s1.kix_page_reads;
    BCHECK(s1.cold_keys > 0, "no cold key among %u", t->nk);
    BCHECK(pr > 0 && pr <= 3 * s1.cold_keys,
           "%llu index pages read by gets of %u keys of which %llu cold (want 1..3 a cold key)",
           (unsigned long long)pr, t->nk, (unsigned long long)s1.cold_keys);
}

/* 2 shards and a 64 KiB budget: 3,000 keys take ~3 times the budget, while the key index files
 * stay few per shard (each early seal of an active segment makes one more), so that a miss
 * meets few key index filters. */
static void
test_budget_counters_bloom_and_pages(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_counters", 3000, HTKV_SYNC_ALWAYS, 64u << 10);
    t.cfg.shard_count = 2;
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    load_all(&t, true);
    delete_by_batches(&t, 10);
    check_stats(&t, "after the load");
    check_misses(&t, 2000);
    check_cold_gets(&t);
    bt_finish(&t);
}

/* ---- 7. asynchronous writes with workers ----------------------------------------------------- */

/* One asynchronous write (or a synchronous put made between them: sync = true). */
struct aop {
    unsigned id[3];
    unsigned n; /* keys: 1, or 3 for a batch */
    bool del[3];
    bool sync;
    int want_rc;
    int rc;
    uint64_t ver;
    atomic_int done;
};

static atomic_ulong async_done;

static void
on_done(int rc, uint64_t version, void *ctx)
{
    struct aop *o = ctx;
    o->rc = rc;
    o->ver = version;
    atomic_store_explicit(&o->done, 1, memory_order_release);
    atomic_fetch_add_explicit(&async_done, 1, memory_order_release);
}

/* Submit @p o (its keys and the model's new state are set), retrying on HTKV_EBUSY. */
static void
submit(struct bt *t, struct aop *o, const void *val, size_t vl, htkv_batch *b)
{
    for (unsigned tries = 0;; tries++) {
        unsigned i = o->id[0];
        int rc = b != NULL   ? htkv_write_async(t->db, b, on_done, o)
                 : o->del[0] ? htkv_delete_async(t->db, bk_key[i], bk_klen[i], on_done, o)
                             : htkv_put_async(t->db, bk_key[i], bk_klen[i], val, vl, on_done, o);
        if (rc == 0) {
            return;
        }
        MCHECK(rc == HTKV_EBUSY && tries < 200000, "asynchronous write: %d (%s)", rc,
               htkv_strerror(rc));
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
}

/* A put or delete of one key, or a batch of 3, asynchronous; the model moves at once. */
static void
async_one(struct bt *t, struct aop *o, unsigned key, int kind)
{
    static unsigned char v[VMAX];
    htkv_batch *b = NULL;
    o->n = kind == 2 ? 3 : 1;
    o->want_rc = kind == 1 && t->m->st[key] != K_LIVE ? HTKV_ENOTFOUND : 0;
    if (kind == 2) {
        RC_OK(htkv_batch_create(&b));
    }
    size_t vl = 0;
    for (unsigned k = 0; k < o->n; k++) {
        unsigned i = k == 0 ? key : (unsigned)(tu_rand(&t->rng) % t->nk);
        o->id[k] = i;
        o->del[k] = kind == 1 || (kind == 2 && tu_rand(&t->rng) % 3 == 0);
        t->old_writes += t->m->st[i] != K_NEVER;
        if (o->del[k]) {
            t->m->st[i] = t->m->st[i] == K_LIVE || kind == 2 ? K_DEAD : t->m->st[i];
            RC_OK(b != NULL ? htkv_batch_delete(b, bk_key[i], bk_klen[i]) : 0);
            continue;
        }
        vl = rand_vlen(&t->rng);
        t->m->st[i] = K_LIVE;
        t->m->vlen[i] = (uint16_t)vl;
        t->m->tag[i] = ++t->next_tag;
        tu_fill(v, vl, t->m->tag[i]);
        RC_OK(b != NULL ? htkv_batch_put(b, bk_key[i], bk_klen[i], v, vl) : 0);
    }
    submit(t, o, v, vl, b);
    htkv_batch_destroy(b); /* the batch was copied */
}

/* A synchronous put of @p key between asynchronous writes: it queues behind them, so a get
 * right after it reads it. */
static void
sync_put_between(struct bt *t, struct aop *o, unsigned key)
{
    static unsigned char v[VMAX];
    size_t vl = rand_vlen(&t->rng), got = 0;
    uint64_t tag = ++t->next_tag, ver = 0;
    tu_fill(v, vl, tag);
    RC_OK(htkv_put(t->db, bk_key[key], bk_klen[key], v, vl));
    int rc = htkv_get_version(t->db, bk_key[key], bk_klen[key], NULL, 0, &got, &ver);
    MCHECK((rc == 0 || rc == HTKV_ETOOSMALL) && got == vl,
           "get of key %u right after its synchronous put (behind asynchronous writes): %d (%s), "
           "%zu bytes, the put wrote %zu",
           key, rc, htkv_strerror(rc), got, vl);
    t->old_writes += t->m->st[key] != K_NEVER;
    t->m->st[key] = K_LIVE;
    t->m->vlen[key] = (uint16_t)vl;
    t->m->tag[key] = tag;
    o->n = 1;
    o->id[0] = key;
    o->sync = true;
    o->ver = ver;
    atomic_store(&o->done, 1);
}

static void
wait_async(unsigned long n)
{
    for (unsigned ms = 0; atomic_load(&async_done) < n; ms++) {
        MCHECK(ms < 60000, "%lu of %lu asynchronous writes completed after 60 s",
               (unsigned long)atomic_load(&async_done), n);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Each write's outcome and version: per key increasing in submission order, all distinct,
 * above every version before; the model takes them. */
static void
verify_async(struct bt *t, struct aop *ops, unsigned n)
{
    uint64_t *last = calloc(NKMAX, sizeof(*last)), *vers = calloc(n + 1, sizeof(*vers));
    unsigned *last_op = calloc(NKMAX, sizeof(*last_op));
    assert_true(last != NULL && vers != NULL && last_op != NULL);
    size_t nv = 0;
    for (unsigned j = 0; j < n; j++) {
        struct aop *o = &ops[j];
        tu_where("%s: asynchronous write %u of %u (key %u)", t->name, j, n, o->id[0]);
        MCHECK(atomic_load(&o->done) && o->rc == o->want_rc,
               "write %u (%s of key %u): done %d, rc %d (%s), want %d", j,
               o->sync     ? "synchronous put"
               : o->n > 1  ? "batch"
               : o->del[0] ? "delete"
                           : "put",
               o->id[0], atomic_load(&o->done), o->rc, htkv_strerror(o->rc), o->want_rc);
        if (o->rc != 0) {
            MCHECK(o->ver == 0, "a failed write reported version %llu", (unsigned long long)o->ver);
            continue;
        }
        MCHECK(o->ver > t->m->max_ack, "write %u: version %llu, not above %llu", j,
               (unsigned long long)o->ver, (unsigned long long)t->m->max_ack);
        vers[nv++] = o->ver;
        for (unsigned k = 0; k < o->n; k++) {
            unsigned i = o->id[k];
            MCHECK(o->ver > last[i] || (last_op[i] == j && o->ver == last[i]),
                   "key %u: write %u took version %llu after an earlier write's %llu", i, j,
                   (unsigned long long)o->ver, (unsigned long long)last[i]);
            last[i] = t->m->ver[i] = o->ver;
            last_op[i] = j;
        }
    }
    qsort(vers, nv, sizeof(*vers), cmp_u64);
    for (size_t j = 1; j < nv; j++) {
        MCHECK(vers[j] > vers[j - 1], "two writes took version %llu", (unsigned long long)vers[j]);
    }
    if (nv > 0) {
        t->m->max_ack = vers[nv - 1];
        MCHECK(tu_latest(t->db) == vers[nv - 1], "the latest version is not the highest written");
    }
    free(last);
    free(vers);
    free(last_op);
}

static void
test_budget_async_workers(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "budget_async_workers", 2500, HTKV_SYNC_INTERVAL, 24u << 10);
    t.cfg.worker_threads = 2;
    bt_reopen(&t, t.cfg.memory_budget_bytes, "create");
    unsigned n = t.nk + tu_model_scaled(3000);
    struct aop *ops = calloc(n, sizeof(*ops));
    assert_non_null(ops);
    atomic_store(&async_done, 0);
    unsigned long nasync = 0;
    for (unsigned j = 0; j < n; j++) {
        unsigned key = j < t.nk ? j : (unsigned)(tu_rand(&t.rng) % t.nk);
        unsigned r = j < t.nk ? 1 : (unsigned)(tu_rand(&t.rng) % 20);
        tu_where("%s: asynchronous write %u of %u (key %u, r %u)", t.name, j, n, key, r);
        if (r == 0) {
            sync_put_between(&t, &ops[j], ops[j - 1].id[0]);
        } else if (r >= 18) { /* a batch, alone in flight: test_async_batch_keeps_thread_order */
            wait_async(nasync);
            async_one(&t, &ops[j], key, 2);
            wait_async(++nasync);
        } else {
            async_one(&t, &ops[j], key, r < 13 ? 0 : r < 18 ? 1 : 2);
            nasync++;
        }
    }
    wait_async(nasync);
    tu_where("%s: htkv_flush", t.name);
    RC_OK(htkv_flush(t.db));
    verify_async(&t, ops, n);
    free(ops);
    struct htkv_stats s = tu_stats(t.db);
    MCHECK(s.worker_threads == 2, "stats.worker_threads %u", s.worker_threads);
    check_all(&t, "after the asynchronous writes");
    check_stats(&t, "after the asynchronous writes");
    check_queries(&t, 10, "after the asynchronous writes");
    bt_reopen(&t, 2 * t.cfg.memory_budget_bytes, "reopen with twice the budget, 2 workers");
    check_all(&t, "after reopen");
    random_ops(&t, tu_model_scaled(600), "synchronous writes with workers");
    check_all(&t, "the end");
    check_stats(&t, "the end");
    bt_finish(&t);
}

/*
 * Not about the budget: a thread's asynchronous writes to one key apply in the order it made
 * them (htkv_config.worker_threads: "a thread's writes always apply in its order";
 * htkv_put_async(): "A thread's writes to one shard (so to one key) apply in the order it made
 * them"), also when the later one is a batch (htkv_write_async) that spans shards. Each trial
 * puts key A asynchronously, then writes a batch {B, A} asynchronously: A must end with the
 * batch's value, at a version above the put's.
 */
static void
test_async_batch_keeps_thread_order(void **state)
{
    (void)state;
    struct bt t;
    bt_start(&t, "async_batch_keeps_thread_order", 2400, HTKV_SYNC_NEVER, 0);
    t.cfg.worker_threads = 2;
    bt_reopen(&t, 0, "create");
    unsigned trials = t.nk / 2;
    struct aop *ops = calloc(2 * trials, sizeof(*ops));
    assert_non_null(ops);
    atomic_store(&async_done, 0);
    for (unsigned j = 0; j < trials; j++) {
        tu_where("%s: trial %u: put of key %u, then a batch of keys %u and %u", t.name, j, 2 * j,
                 2 * j + 1, 2 * j);
        async_one(&t, &ops[2 * j], 2 * j, 0);
        htkv_batch *b = NULL;
        RC_OK(htkv_batch_create(&b));
        struct aop *o = &ops[2 * j + 1];
        static unsigned char v[VMAX];
        for (unsigned k = 0; k < 2; k++) {
            unsigned i = 2 * j + 1 - k; /* the put's key second */
            o->id[k] = i;
            t.m->st[i] = K_LIVE;
            t.m->vlen[i] = (uint16_t)rand_vlen(&t.rng);
            t.m->tag[i] = ++t.next_tag;
            tu_fill(v, t.m->vlen[i], t.m->tag[i]);
            RC_OK(htkv_batch_put(b, bk_key[i], bk_klen[i], v, t.m->vlen[i]));
        }
        o->n = 2;
        submit(&t, o, NULL, 0, b);
        htkv_batch_destroy(b);
    }
    wait_async(2 * trials);
    unsigned late = 0, lost = 0;
    static unsigned char buf[VMAX + 8];
    for (unsigned j = 0; j < trials; j++) {
        size_t vl = 0;
        int rc = htkv_get(t.db, bk_key[2 * j], bk_klen[2 * j], buf, sizeof(buf), &vl);
        late += ops[2 * j + 1].ver < ops[2 * j].ver;
        lost += !matches(t.m, 2 * j, rc, buf, vl, NULL);
    }
    MCHECK(late == 0 && lost == 0,
           "of %u batches written after a put of their second key by the same thread, %u took a "
           "lower version than the put and %u were overwritten by it (the key holds the put's "
           "value)",
           trials, late, lost);
    verify_async(&t, ops, 2 * trials);
    free(ops);
    check_all(&t, "after the puts and batches");
    bt_finish(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_model_random_ops),
        cmocka_unit_test(test_budget_ordered_queries_exact),
        cmocka_unit_test(test_budget_views_keep_their_moment),
        cmocka_unit_test(test_budget_kix_tamper_between_opens),
        cmocka_unit_test(test_budget_kix_tamper_while_open),
        cmocka_unit_test(test_budget_segment_damage),
        cmocka_unit_test(test_budget_damaged_record_in_queries),
        cmocka_unit_test(test_budget_snapshot_of_cold_keys),
        cmocka_unit_test(test_budget_counters_bloom_and_pages),
        cmocka_unit_test(test_budget_async_workers),
        cmocka_unit_test(test_async_batch_keeps_thread_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
