/*
 * crash_kill.c - kill -9 a writer at random moments; every acknowledged write must survive.
 * The writer also compacts: a full pass every 400 operations and background passes every 25 ms
 * (with their snapshots), so kills land inside compaction as well. Every other cycle the child
 * also kills itself right after its N-th fdatasync/fsync (N random in 1..64), an I/O point, if
 * the parent's timer has not struck first (HTKV_CRASH_IO_KILLS=0: timer kills only).
 *
 * Each cycle forks a child that opens the store and writes seeded random puts, deletes and
 * batches as fast as it can, reporting each operation to the parent through a pipe after the
 * call returned. The parent kills the child with SIGKILL after 20-200 ms, reopens the store and
 * compares it with its model of the acknowledged operations. The one operation the child may
 * have started (or finished) without reporting it, the in-flight one, may or may not be there,
 * but as a whole: the store must equal the model either without it or with it. 40 cycles
 * (HTKV_CRASH_CYCLES=N for longer runs) run on the same store in each sync mode.
 *
 * Operations are a pure function of (seed, sequence number), so the parent regenerates the
 * in-flight operation and every value instead of receiving them.
 *
 * Versions: the child reports htkv_latest_version() after each call; after every reopen the
 * latest version must be at least all of them and the next write's version above it
 * (check_versions()), whatever compaction removed (deletes included) and wherever the kill hit.
 */
#include "tests/support/crashloop.h"
#include "tests/support/testutil.h"

#include <unistd.h>

#include <htkv/replication.h>

#define NKEYS 500
#define MAXOPS 8
#define CYCLES 40 /* per sync mode; HTKV_CRASH_CYCLES=N for longer runs */

enum { OP_PUT = 0, OP_DEL = 1, OP_BATCH = 2 };

struct op {
    int kind;
    int n;                 /* operations (1 for a single put or delete) */
    uint16_t key[MAXOPS];  /* key index */
    uint8_t del[MAXOPS];   /* 1 = delete */
    uint16_t vlen[MAXOPS]; /* value length of a put */
};

/* What the child sends after each call returned: fixed size, well under PIPE_BUF. */
struct report {
    uint64_t seq;
    uint64_t version; /* htkv_latest_version() after the call: at least the call's version */
    int32_t rc;
    int32_t n;
    uint16_t key[MAXOPS];
};

struct key_state {
    bool present;
    uint16_t vlen;
    uint64_t tag; /* value bytes = tu_fill(vlen, tag) */
};

static size_t
key_of(char *buf, unsigned i)
{
    int n = snprintf(buf, 64, "ck-%04u-", i);
    size_t pad = (i * 13u) % 40u;
    memset(buf + n, 'a' + (int)(i % 26), pad);
    return (size_t)n + pad;
}

static uint64_t
op_tag(uint64_t seq, int j)
{
    return seq * 16 + (uint64_t)j + 1;
}

static void
gen_op(uint64_t seed, uint64_t seq, struct op *op)
{
    uint64_t st = seed ^ (seq * 0x9E3779B97F4A7C15ull) ^ 0xD1B54A32D192ED03ull;
    if (st == 0) {
        st = 1;
    }
    for (int i = 0; i < 3; i++) {
        tu_rand(&st);
    }
    memset(op, 0, sizeof(*op));
    uint64_t r = tu_rand(&st) % 100;
    op->kind = r < 60 ? OP_PUT : r < 80 ? OP_DEL : OP_BATCH;
    op->n = op->kind == OP_BATCH ? 2 + (int)(tu_rand(&st) % (MAXOPS - 1)) : 1;
    for (int j = 0; j < op->n; j++) {
        op->key[j] = (uint16_t)(tu_rand(&st) % NKEYS);
        op->del[j] = op->kind == OP_DEL || (op->kind == OP_BATCH && tu_rand(&st) % 4 == 0);
        uint64_t v = tu_rand(&st);
        op->vlen[j] = (uint16_t)(v % 64 == 0 ? 2000 + v % 2000 : v % 121);
    }
}

static void
apply_op(struct key_state *m, uint64_t seq, const struct op *op)
{
    for (int j = 0; j < op->n; j++) {
        struct key_state *k = &m[op->key[j]];
        if (op->del[j]) {
            k->present = false;
        } else {
            k->present = true;
            k->vlen = op->vlen[j];
            k->tag = op_tag(seq, j);
        }
    }
}

/* What the loop's callbacks share: the store, the seed, the model of acknowledged calls. */
struct ck_ctx {
    const htkv_config *cfg;
    uint64_t seed;
    uint64_t next_seq;
    struct key_state *model;
    uint64_t acked_version; /* the highest version of an acknowledged call */
};

/* The child (tu_loop.child): open, write forever, report each call. Never returns. */
static void
child_main(void *ctx, uint64_t first_seq, int fd)
{
    const struct ck_ctx *c = ctx;
    const htkv_config *cfg = c->cfg;
    uint64_t seed = c->seed;
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "child: htkv_open: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
        _exit(2);
    }
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        _exit(2);
    }
    unsigned char val[4096];
    char key[64];
    for (uint64_t seq = first_seq;; seq++) {
        struct op op;
        gen_op(seed, seq, &op);
        if (op.kind == OP_BATCH) {
            htkv_batch_clear(b);
            for (int j = 0; j < op.n; j++) {
                size_t kl = key_of(key, op.key[j]);
                if (op.del[j]) {
                    rc = htkv_batch_delete(b, key, kl);
                } else {
                    tu_fill(val, op.vlen[j], op_tag(seq, j));
                    rc = htkv_batch_put(b, key, kl, val, op.vlen[j]);
                }
                if (rc != 0) {
                    _exit(4);
                }
            }
            rc = htkv_write(db, b);
        } else {
            size_t kl = key_of(key, op.key[0]);
            if (op.kind == OP_DEL) {
                rc = htkv_delete(db, key, kl);
                if (rc == HTKV_ENOTFOUND) {
                    rc = 0;
                }
            } else {
                tu_fill(val, op.vlen[0], op_tag(seq, 0));
                rc = htkv_put(db, key, kl, val, op.vlen[0]);
            }
        }
        struct report r = { .seq = seq, .rc = rc, .n = op.n };
        if (rc == 0 && htkv_latest_version(db, &r.version) != 0) {
            _exit(7);
        }
        memcpy(r.key, op.key, sizeof(r.key));
        if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
            _exit(5);
        }
        if (rc != 0) {
            fprintf(stderr, "child: op %llu failed: %s\n", (unsigned long long)seq,
                    htkv_strerror(rc));
            _exit(3);
        }
        if (seq % 400 == 0) {
            /* A full pass now and then: the kill may land anywhere in it. */
            rc = htkv_compact_now(db);
            if (rc != 0) {
                fprintf(stderr, "child: compact_now: %s (%s)\n", htkv_strerror(rc),
                        htkv_last_error());
                _exit(6);
            }
        }
    }
}

/* Apply one report to the model if it is the next operation; false (model untouched) if not. */
static bool
take_report(const struct report *r, uint64_t seed, uint64_t *next_seq, struct key_state *m)
{
    struct op op;
    gen_op(seed, r->seq, &op);
    if (r->seq != *next_seq || r->rc != 0 || r->n != op.n ||
        memcmp(r->key, op.key, sizeof(r->key)) != 0) {
        fprintf(stderr, "seed %llu: report for op %llu (rc %d, %d ops), expected op %llu\n",
                (unsigned long long)seed, (unsigned long long)r->seq, r->rc, r->n,
                (unsigned long long)*next_seq);
        return false;
    }
    apply_op(m, r->seq, &op);
    (*next_seq)++;
    return true;
}

/* tu_loop.take: apply one report to the model of the cycle's context. */
static bool
take_one(void *ctx, const void *report)
{
    struct ck_ctx *c = ctx;
    struct report r;
    memcpy(&r, report, sizeof(r));
    c->acked_version = r.version > c->acked_version ? r.version : c->acked_version;
    return take_report(&r, c->seed, &c->next_seq, c->model);
}

/* Does key @p k of @p db hold what @p s says? */
static bool
key_matches(htkv_db *db, unsigned k, const struct key_state *s, unsigned char *want)
{
    char key[64];
    size_t kl = key_of(key, k);
    void *got = NULL;
    size_t n = 0;
    int rc = htkv_get_alloc(db, key, kl, &got, &n);
    bool ok;
    if (!s->present) {
        ok = rc == HTKV_ENOTFOUND;
    } else {
        tu_fill(want, s->vlen, s->tag);
        ok = rc == 0 && n == s->vlen && memcmp(got, want, n) == 0;
    }
    htkv_free(got);
    return ok;
}

/*
 * Versions never repeat: after a reopen the latest version is at least every version the child
 * acknowledged (@p acked), and the next write gets a version above both. A probe key outside
 * the model is written and deleted for it. Returns the new highest acknowledged version.
 */
static uint64_t
check_versions(htkv_db *db, uint64_t acked)
{
    uint64_t latest = 0, probe = 0;
    size_t n = 0;
    assert_int_equal(htkv_latest_version(db, &latest), 0);
    if (latest < acked) {
        fprintf(stderr, "latest version %llu after reopen, below the acknowledged %llu\n",
                (unsigned long long)latest, (unsigned long long)acked);
    }
    assert_true(latest >= acked);
    assert_int_equal(htkv_put(db, "probe", 5, "p", 1), 0);
    assert_int_equal(htkv_get_version(db, "probe", 5, NULL, 0, &n, &probe), HTKV_ETOOSMALL);
    assert_true(probe > latest && probe > acked);
    assert_int_equal(htkv_delete(db, "probe", 5), 0);
    assert_int_equal(htkv_latest_version(db, &latest), 0);
    assert_true(latest > probe);
    return latest;
}

/* Run CYCLES kill cycles in @p sync_mode on a fresh store. */
static void
crash_cycles(int sync_mode, const char *name)
{
    char tag[64];
    snprintf(tag, sizeof(tag), "crash_kill_%s", name);
    uint64_t seed = tu_seed(tag);
    uint64_t rng = seed;
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, sync_mode);
    cfg.max_segment_bytes = 256u << 10;
    cfg.fsync_interval_ms = 5;
    /* Background compaction (and its snapshots) runs under the kills too. */
    cfg.compaction_interval_ms = 25;
    cfg.compaction_min_garbage_ratio = 0.3;
    struct key_state *model = calloc(NKEYS, sizeof(*model));
    struct key_state *with = calloc(NKEYS, sizeof(*with));
    unsigned char *want = malloc(4096);
    assert_true(model && with && want);
    uint64_t next_seq = 1;
    uint64_t acked_total = 0, inflight_applied = 0, acked = 0;

    int cycles = tu_crash_cycles(CYCLES);
    for (int cycle = 0; cycle < cycles; cycle++) {
        uint64_t first = next_seq;
        uint64_t kill_after_ms, kill_at_sync;
        tu_cycle_kills(&rng, cycle, &kill_after_ms, &kill_at_sync);
        struct ck_ctx ctx = {
            .cfg = &cfg, .seed = seed, .next_seq = next_seq, .model = model, .acked_version = acked
        };
        const struct tu_loop loop = { .name = name,
                                      .seed = seed,
                                      .report_bytes = sizeof(struct report),
                                      .child = child_main,
                                      .take = take_one,
                                      .ctx = &ctx };
        tu_kill_cycle(&loop, cycle, first, kill_after_ms, kill_at_sync);
        next_seq = ctx.next_seq;
        acked = ctx.acked_version;
        acked_total += next_seq - first;

        /* The in-flight operation: next_seq, maybe applied. */
        struct op op;
        gen_op(seed, next_seq, &op);
        memcpy(with, model, NKEYS * sizeof(*model));
        apply_op(with, next_seq, &op);

        tu_context("seed %llu, %s, cycle %d: reopen after op %llu", (unsigned long long)seed, name,
                   cycle, (unsigned long long)next_seq);
        htkv_db *db = tu_open(&cfg);
        bool all_without = true, all_with = true;
        int bad_key = -1;
        for (unsigned k = 0; k < NKEYS; k++) {
            bool touched = memcmp(&model[k], &with[k], sizeof(model[k])) != 0;
            bool w0 = key_matches(db, k, &model[k], want);
            bool w1 = touched ? key_matches(db, k, &with[k], want) : w0;
            all_without = all_without && w0;
            all_with = all_with && w1;
            if (!w0 && !w1 && bad_key < 0) {
                bad_key = (int)k;
            }
        }
        if (!all_without && !all_with) {
            fprintf(stderr,
                    "seed %llu, %s, cycle %d: store matches neither the %llu acknowledged "
                    "operations nor them plus the in-flight one (kind %d, %d ops); first bad key "
                    "%d (model: %s, %u bytes)\n",
                    (unsigned long long)seed, name, cycle, (unsigned long long)(next_seq - 1),
                    op.kind, op.n, bad_key,
                    bad_key >= 0 && model[bad_key].present ? "present" : "absent",
                    bad_key >= 0 ? model[bad_key].vlen : 0);
        }
        if (!all_without && !all_with && bad_key >= 0) {
            char bk[64];
            size_t bkl = key_of(bk, (unsigned)bad_key);
            void *got = NULL;
            size_t gn = 0;
            uint64_t gv = 0;
            int grc = htkv_get_alloc(db, bk, bkl, &got, &gn);
            int vrc = htkv_get_version(db, bk, bkl, NULL, 0, &gn, &gv);
            (void)vrc;
            fprintf(
                stderr, "key %d: the store has rc %d, %zu bytes, version %llu; model tag %llu\n",
                bad_key, grc, gn, (unsigned long long)gv, (unsigned long long)model[bad_key].tag);
            htkv_free(got);
        }
        assert_true(all_without || all_with);
        if (!all_without) {
            memcpy(model, with, NKEYS * sizeof(*model));
            inflight_applied++;
        }
        uint64_t live = 0;
        for (unsigned k = 0; k < NKEYS; k++) {
            live += model[k].present;
        }
        assert_int_equal(tu_stats(db).live_keys, live);
        acked = check_versions(db, acked);
        assert_int_equal(htkv_close(db), 0);
        next_seq++; /* never reuse the in-flight sequence number */
    }
    fprintf(stderr, "[%s] %d kills, %llu acknowledged operations, in-flight op found %llu times\n",
            tag, cycles, (unsigned long long)acked_total, (unsigned long long)inflight_applied);
    assert_true(acked_total > 0);
    free(model);
    free(with);
    free(want);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: in HTKV_SYNC_ALWAYS, every acknowledged write survives kill -9 at a random moment and
 * a batch is all or nothing. Method: crash_cycles (see the file comment). */
static void
test_crash_kill_sync_always(void **state)
{
    (void)state;
    crash_cycles(HTKV_SYNC_ALWAYS, "always");
}

/* Goal: in HTKV_SYNC_NEVER, acknowledged writes survive kill -9 (the process dies, the page
 * cache does not). Method: crash_cycles. */
static void
test_crash_kill_sync_never(void **state)
{
    (void)state;
    crash_cycles(HTKV_SYNC_NEVER, "never");
}

/* Goal: in HTKV_SYNC_INTERVAL (5 ms syncer), acknowledged writes survive kill -9, also when
 * the kill lands in the syncer's fdatasync. Method: crash_cycles. */
static void
test_crash_kill_sync_interval(void **state)
{
    (void)state;
    crash_cycles(HTKV_SYNC_INTERVAL, "interval");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_kill_sync_always),
        cmocka_unit_test(test_crash_kill_sync_never),
        cmocka_unit_test(test_crash_kill_sync_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
