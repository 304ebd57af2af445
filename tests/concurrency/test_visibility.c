/*
 * test_visibility.c - what concurrent readers may and may not see (ARCHITECTURE.md, "Reads,
 * versions and visibility").
 *
 * Read-your-writes across threads: a write is visible to every get that starts after the write
 * returned (or, asynchronous, after its callback ran), from any thread. Writers publish what has
 * returned through atomics (release); readers load them (acquire) before they read the store, so
 * "started after" is a happens-before edge, not a guess from timing.
 *
 * Batch atomicity within a shard: with one shard, every batch writes one tag into the same K
 * keys. A reader reading the K keys one by one (in a random order) must never see an older batch
 * after a newer one, nor an intermediate value of a key written twice in one batch. Across shards
 * a batch becomes visible shard by shard, so that is deliberately not tested.
 */
#include "tests/concurrency/cc_util.h"

#define RYW_WRITERS 2
#define RYW_READERS 3
#define RYW_LAG 64 /* a writer deletes the key it wrote RYW_LAG keys earlier */
#define ASYNC_INFLIGHT 64

struct ryw {
    htkv_db *db;
    unsigned n;                             /* keys per writer */
    bool async_writer;                      /* run the asynchronous writer */
    _Atomic unsigned put_done[RYW_WRITERS]; /* keys 0..put_done-1 were put (and returned) */
    _Atomic unsigned del_done[RYW_WRITERS]; /* keys 0..del_done-1 were deleted (and returned) */
    _Atomic uint64_t ctr_done[RYW_WRITERS]; /* the writer's counter key holds at least this */
    _Atomic int *async_done;                /* per async key: its callback ran with rc 0 */
    _Atomic unsigned async_inflight;
    _Atomic int writers_left;
    _Atomic uint64_t reads;
};

struct ryw_arg {
    struct ryw *r;
    unsigned id;
    uint64_t rng;
};

static size_t
wkey(unsigned t, unsigned i, char *k)
{
    return (size_t)snprintf(k, 24, "w%u-%06u", t, i);
}

static size_t
akey(unsigned i, char *k)
{
    return (size_t)snprintf(k, 24, "a-%06u", i);
}

static uint32_t
wkey_id(unsigned t, unsigned i)
{
    return (t + 1) * 1000000u + i;
}

static void *
ryw_writer(void *arg)
{
    struct ryw_arg *a = arg;
    struct ryw *r = a->r;
    unsigned t = a->id;
    char ck[8];
    size_t ckl = (size_t)snprintf(ck, sizeof(ck), "c%u", t);
    for (unsigned i = 0; i < r->n && !cc_failed(); i++) {
        char k[24];
        unsigned char v[CC_VAL_MAX];
        size_t kl = wkey(t, i, k);
        size_t vl = cc_value(i, wkey_id(t, i), CC_VAL_HDR, v);
        int rc = htkv_put(r->db, k, kl, v, vl);
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "put %s: rc %d (%s)", k, rc, htkv_strerror(rc));
            break;
        }
        atomic_store_explicit(&r->put_done[t], i + 1, memory_order_release);
        uint64_t c = i + 1;
        rc = htkv_put(r->db, ck, ckl, &c, sizeof(c));
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "put %s: rc %d (%s)", ck, rc, htkv_strerror(rc));
            break;
        }
        atomic_store_explicit(&r->ctr_done[t], c, memory_order_release);
        if (i >= RYW_LAG) {
            unsigned d = i - RYW_LAG;
            kl = wkey(t, d, k);
            rc = htkv_delete(r->db, k, kl);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "delete %s: rc %d (%s)", k, rc, htkv_strerror(rc));
                break;
            }
            atomic_store_explicit(&r->del_done[t], d + 1, memory_order_release);
        }
    }
    atomic_fetch_sub(&r->writers_left, 1);
    return NULL;
}

static void
ryw_async_cb(int rc, uint64_t version, void *ctx)
{
    _Atomic int *flag = ctx;
    if (rc != 0 || version == 0) {
        cc_fail_at(__FILE__, __LINE__, "async put: callback rc %d (%s) version %llu", rc,
                   htkv_strerror(rc), (unsigned long long)version);
        return;
    }
    atomic_store_explicit(flag, 1, memory_order_release);
}

/* Count completions through a second callback layer: the flag, then the in-flight counter. */
struct async_ctx {
    struct ryw *r;
    unsigned i;
};

static void
ryw_async_done(int rc, uint64_t version, void *ctx)
{
    struct async_ctx *c = ctx;
    struct ryw *r = c->r;
    ryw_async_cb(rc, version, &r->async_done[c->i]);
    atomic_fetch_sub_explicit(&r->async_inflight, 1, memory_order_release);
}

static void *
ryw_async_writer(void *arg)
{
    struct ryw_arg *a = arg;
    struct ryw *r = a->r;
    struct async_ctx *ctxs = calloc(r->n, sizeof(*ctxs));
    if (ctxs == NULL) {
        cc_fail_at(__FILE__, __LINE__, "out of memory");
        atomic_fetch_sub(&r->writers_left, 1);
        return NULL;
    }
    for (unsigned i = 0; i < r->n && !cc_failed(); i++) {
        while (atomic_load_explicit(&r->async_inflight, memory_order_acquire) >= ASYNC_INFLIGHT) {
            sched_yield();
        }
        char k[24];
        unsigned char v[CC_VAL_MAX];
        size_t kl = akey(i, k);
        size_t vl = cc_value(i, 5000000u + i, CC_VAL_HDR, v);
        ctxs[i] = (struct async_ctx){ r, i };
        atomic_fetch_add(&r->async_inflight, 1);
        int rc;
        while ((rc = htkv_put_async(r->db, k, kl, v, vl, ryw_async_done, &ctxs[i])) == HTKV_EBUSY) {
            sched_yield();
        }
        if (rc != 0) {
            atomic_fetch_sub(&r->async_inflight, 1);
            cc_fail_at(__FILE__, __LINE__, "put_async %s: rc %d (%s)", k, rc, htkv_strerror(rc));
            break;
        }
    }
    uint64_t end = cc_now_ns() + 60ull * 1000000000ull;
    while (atomic_load_explicit(&r->async_inflight, memory_order_acquire) != 0) {
        if (cc_now_ns() > end) {
            cc_fail_at(__FILE__, __LINE__, "async puts not completed after 60 s");
            break;
        }
        sched_yield();
    }
    atomic_fetch_sub(&r->writers_left, 1);
    if (!cc_failed()) {
        free(ctxs); /* on failure a callback may still come: leak rather than free under it */
    }
    return NULL;
}

/* Key @p i of writer @p t was put before this read started: it must be there, unless deleted. */
static bool
ryw_check_put(struct ryw *r, unsigned t, unsigned i)
{
    char k[24];
    unsigned char buf[CC_VAL_MAX];
    size_t kl = wkey(t, i, k), n = 0;
    uint64_t tag = 0;
    int rc = htkv_get(r->db, k, kl, buf, sizeof(buf), &n);
    if (rc == 0) {
        CC_CHECK(cc_value_decode(buf, n, wkey_id(t, i), &tag) && tag == i,
                 "get %s: wrong value (%zu bytes)", k, n);
        return true;
    }
    CC_CHECK(rc == HTKV_ENOTFOUND, "get %s: rc %d (%s)", k, rc, htkv_strerror(rc));
    /* Absent is right only if the writer deleted it meanwhile: its delete_done will say so. */
    uint64_t end = cc_now_ns() + 30ull * 1000000000ull;
    for (;;) {
        int left = atomic_load(&r->writers_left); /* before del_done: see the loop's check */
        if (atomic_load_explicit(&r->del_done[t], memory_order_acquire) > i) {
            return true;
        }
        CC_CHECK(left > 0 && cc_now_ns() < end,
                 "%s was put and returned before the get started, but the get missed it", k);
        sched_yield();
    }
}

static bool
ryw_read_once(struct ryw_arg *a)
{
    struct ryw *r = a->r;
    unsigned t = (unsigned)(tu_rand(&a->rng) % RYW_WRITERS);
    /* Load what has returned first, then read: the reads start after those writes returned. */
    unsigned del = atomic_load_explicit(&r->del_done[t], memory_order_acquire);
    unsigned put = atomic_load_explicit(&r->put_done[t], memory_order_acquire);
    uint64_t ctr = atomic_load_explicit(&r->ctr_done[t], memory_order_acquire);
    if (put > 0) {
        unsigned newest = put - 1;
        if (!ryw_check_put(r, t, newest)) {
            return false;
        }
        if (!ryw_check_put(r, t, del + (unsigned)(tu_rand(&a->rng) % (put - del)))) {
            return false;
        }
    }
    if (del > 0) {
        char k[24];
        size_t kl = wkey(t, del - 1, k);
        int rc = htkv_contains(r->db, k, kl);
        CC_CHECK(rc == 0, "%s was deleted before the read started, contains says %d", k, rc);
        kl = wkey(t, (unsigned)(tu_rand(&a->rng) % del), k);
        rc = htkv_contains(r->db, k, kl);
        CC_CHECK(rc == 0, "%s was deleted before the read started, contains says %d", k, rc);
    }
    if (ctr > 0) {
        char ck[8];
        size_t ckl = (size_t)snprintf(ck, sizeof(ck), "c%u", t), n = 0;
        uint64_t got = 0;
        int rc = htkv_get(r->db, ck, ckl, &got, sizeof(got), &n);
        CC_CHECK(rc == 0 && n == sizeof(got) && got >= ctr,
                 "%s: rc %d value %llu, but %llu was written before the get started", ck, rc,
                 (unsigned long long)got, (unsigned long long)ctr);
    }
    if (r->async_writer) {
        unsigned i = (unsigned)(tu_rand(&a->rng) % r->n);
        if (atomic_load_explicit(&r->async_done[i], memory_order_acquire)) {
            char k[24];
            unsigned char buf[CC_VAL_MAX];
            size_t kl = akey(i, k), n = 0;
            uint64_t tag = 0;
            int rc = htkv_get(r->db, k, kl, buf, sizeof(buf), &n);
            CC_CHECK(rc == 0 && cc_value_decode(buf, n, 5000000u + i, &tag) && tag == i,
                     "%s: its callback ran before the get started, but get gave rc %d (%s)", k, rc,
                     htkv_strerror(rc));
        }
    }
    atomic_fetch_add_explicit(&r->reads, 1, memory_order_relaxed);
    return true;
}

static void *
ryw_reader(void *arg)
{
    struct ryw_arg *a = arg;
    while (atomic_load_explicit(&a->r->writers_left, memory_order_acquire) > 0 && !cc_failed()) {
        if (!ryw_read_once(a)) {
            break;
        }
        sched_yield(); /* on few cores, leave the writers and workers room to progress */
    }
    return NULL;
}

static void *
ryw_thread(void *arg)
{
    struct ryw_arg *a = arg;
    if (a->id < RYW_WRITERS) {
        return ryw_writer(arg);
    }
    if (a->id == RYW_WRITERS) {
        return ryw_async_writer(arg);
    }
    return ryw_reader(arg);
}

static void
ryw_run(const struct cc_mode *m, uint64_t seed, unsigned round)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("ryw");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    struct ryw r;
    memset(&r, 0, sizeof(r));
    r.db = cc_open(&cfg);
    /* Sized for ~1 s per mode on 2 cores: hand-offs to workers and fdatasyncs cost most. */
    r.n = cc_ops(m->sync == HTKV_SYNC_ALWAYS ? 150 : m->workers > 0 ? 1500 : 4000);
    r.async_writer = true;
    r.async_done = calloc(r.n, sizeof(*r.async_done));
    assert_non_null(r.async_done);
    for (unsigned i = 0; i < r.n; i++) {
        atomic_init(&r.async_done[i], 0);
    }
    atomic_init(&r.writers_left, RYW_WRITERS + 1);
    unsigned nthreads = RYW_WRITERS + 1 + RYW_READERS;
    struct ryw_arg args[RYW_WRITERS + 1 + RYW_READERS];
    for (unsigned i = 0; i < nthreads; i++) {
        args[i] = (struct ryw_arg){ &r, i, cc_subseed(seed, round, i) };
    }
    uint64_t t0 = cc_now_ns();
    cc_run_threads(nthreads, ryw_thread, args, sizeof(args[0]));
    cc_assert_ok();
    fprintf(stderr, "  %-36s %u keys x %d writers + %u async, %llu checked reads, %llu ms\n",
            cc_mode_text, r.n, RYW_WRITERS, r.n, (unsigned long long)atomic_load(&r.reads),
            (unsigned long long)((cc_now_ns() - t0) / 1000000));
    assert_int_equal(htkv_close(r.db), 0);
    free(r.async_done);
    tu_rmrf(dir);
    free(dir);
}

static const struct cc_mode vis_modes[] = {
    { 0, HTKV_IO_SYNC, HTKV_SYNC_NEVER },     { 0, HTKV_IO_SYNC, HTKV_SYNC_ALWAYS },
    { 1, HTKV_IO_URING, HTKV_SYNC_INTERVAL }, { 2, HTKV_IO_URING, HTKV_SYNC_NEVER },
    { 2, HTKV_IO_URING, HTKV_SYNC_ALWAYS },   { 2, HTKV_IO_SYNC, HTKV_SYNC_NEVER },
    { 2, HTKV_IO_SYNC, HTKV_SYNC_ALWAYS },
};

/* Goal: a put, delete or overwrite that returned in one thread (or whose async callback ran) is
 * seen by every get that another thread starts afterwards. Method: writers publish the index of
 * what returned through release stores; readers load it (acquire), then get/contains the keys
 * and a counter key; an absent key is accepted only if its delete has returned. */
static void
test_visibility_read_your_writes_across_threads(void **state)
{
    (void)state;
    uint64_t seed = cc_seed("test_visibility_read_your_writes_across_threads");
    for (unsigned i = 0; i < sizeof(vis_modes) / sizeof(vis_modes[0]); i++) {
        if (vis_modes[i].workers > 0 && vis_modes[i].backend == HTKV_IO_URING &&
            !cc_uring_available()) {
            continue;
        }
        ryw_run(&vis_modes[i], seed, i);
    }
}

/* ---- batch atomicity within one shard ------------------------------------------------------ */

#define BK 12 /* keys written by every batch */
#define B_WRITERS 2
#define B_READERS 3
#define BOGUS (1ull << 63) /* tag of a value that a later op of the same batch overwrites */

struct bat {
    htkv_db *db;
    unsigned n; /* batches per writer */
    bool workers;
    _Atomic int writers_left;
    _Atomic uint64_t passes, mixed_order;
};

struct bat_arg {
    struct bat *b;
    unsigned id;
    uint64_t rng;
};

static size_t
bkey(unsigned i, char *k)
{
    return (size_t)snprintf(k, 8, "b%02u", i);
}

/* One batch: tag @p tag into every key, in a random order, one key first with a BOGUS value. */
static bool
bat_fill(struct bat_arg *a, htkv_batch *hb, uint64_t tag)
{
    unsigned order[BK];
    for (unsigned i = 0; i < BK; i++) {
        order[i] = i;
    }
    for (unsigned i = BK - 1; i > 0; i--) {
        unsigned j = (unsigned)(tu_rand(&a->rng) % (i + 1));
        unsigned x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    unsigned twice = order[tu_rand(&a->rng) % BK];
    char k[8];
    unsigned char v[CC_VAL_MAX];
    size_t kl = bkey(twice, k);
    size_t vl = cc_value(tag | BOGUS, twice, CC_VAL_HDR, v);
    CC_CHECK(htkv_batch_put(hb, k, kl, v, vl) == 0, "batch_put");
    for (unsigned j = 0; j < BK; j++) {
        kl = bkey(order[j], k);
        vl = cc_value(tag, order[j], CC_VAL_HDR, v);
        CC_CHECK(htkv_batch_put(hb, k, kl, v, vl) == 0, "batch_put");
    }
    return true;
}

static void *
bat_writer(void *arg)
{
    struct bat_arg *a = arg;
    struct bat *b = a->b;
    htkv_batch *hb = NULL;
    if (htkv_batch_create(&hb) != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch_create");
        atomic_fetch_sub(&b->writers_left, 1);
        return NULL;
    }
    for (unsigned n = 1; n <= b->n && !cc_failed(); n++) {
        uint64_t tag = ((uint64_t)(a->id + 1) << 32) | n;
        /* The last batch waits for a reader's whole pass, so that readers overlap the writers
         * however fast the batches go (a tmpfs fdatasync costs nothing) or late they start. */
        while (n == b->n && atomic_load_explicit(&b->passes, memory_order_relaxed) == 0 &&
               !cc_failed()) {
            sched_yield();
        }
        htkv_batch_clear(hb);
        if (!bat_fill(a, hb, tag)) {
            break;
        }
        int rc;
        /* With workers, every other batch goes through htkv_write_async. */
        if (b->workers && n % 2 == 0) {
            struct cc_done d = { 0 };
            while ((rc = htkv_write_async(b->db, hb, cc_done_cb, &d)) == HTKV_EBUSY) {
                sched_yield();
            }
            if (rc == 0 && !cc_done_wait(&d, 60000)) {
                cc_fail_at(__FILE__, __LINE__, "write_async: no callback after 60 s");
                break;
            }
            rc = rc != 0 ? rc : d.rc;
        } else {
            rc = htkv_write(b->db, hb);
        }
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "batch %llx: rc %d (%s)", (unsigned long long)tag, rc,
                       htkv_strerror(rc));
            break;
        }
    }
    htkv_batch_destroy(hb);
    atomic_fetch_sub(&b->writers_left, 1);
    return NULL;
}

/* Read the BK keys one at a time in a random order: versions never go back within the pass. */
static bool
bat_pass(struct bat_arg *a)
{
    struct bat *b = a->b;
    unsigned start = (unsigned)(tu_rand(&a->rng) % BK);
    static const unsigned steps[] = { 1, 5, 7, 11 }; /* coprime with BK: a permutation */
    unsigned step = steps[tu_rand(&a->rng) % 4];
    uint64_t prev_ver = 0, prev_tag = 0;
    unsigned prev_key = BK;
    bool changed = false;
    for (unsigned j = 0; j < BK; j++) {
        unsigned i = (start + j * step) % BK;
        char k[8];
        unsigned char buf[CC_VAL_MAX];
        size_t kl = bkey(i, k), n = 0;
        uint64_t ver = 0, tag = 0;
        int rc = htkv_get_version(b->db, k, kl, buf, sizeof(buf), &n, &ver);
        CC_CHECK(rc == 0, "get %s: rc %d (%s)", k, rc, htkv_strerror(rc));
        CC_CHECK(cc_value_decode(buf, n, i, &tag), "get %s: not a value of this key", k);
        CC_CHECK((tag & BOGUS) == 0,
                 "get %s: saw the value that a later op of batch %llx overwrote", k,
                 (unsigned long long)(tag & ~BOGUS));
        CC_CHECK(ver >= prev_ver,
                 "get %s: batch %llx (version %llu) after b%02u showed batch %llx (version "
                 "%llu): a reader saw part of a batch",
                 k, (unsigned long long)tag, (unsigned long long)ver, prev_key,
                 (unsigned long long)prev_tag, (unsigned long long)prev_ver);
        CC_CHECK(ver != prev_ver || tag == prev_tag, "get %s: version %llu carries two tags", k,
                 (unsigned long long)ver);
        changed |= prev_key != BK && ver != prev_ver;
        prev_ver = ver;
        prev_tag = tag;
        prev_key = i;
    }
    atomic_fetch_add_explicit(&b->passes, 1, memory_order_relaxed);
    if (changed) {
        atomic_fetch_add_explicit(&b->mixed_order, 1, memory_order_relaxed);
    }
    return true;
}

static void *
bat_reader(void *arg)
{
    struct bat_arg *a = arg;
    while (atomic_load_explicit(&a->b->writers_left, memory_order_acquire) > 0 && !cc_failed()) {
        if (!bat_pass(a)) {
            break;
        }
        sched_yield();
    }
    return NULL;
}

static void *
bat_thread(void *arg)
{
    struct bat_arg *a = arg;
    return a->id < B_WRITERS ? bat_writer(arg) : bat_reader(arg);
}

static void
bat_run(const struct cc_mode *m, uint64_t seed, unsigned round)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("batvis");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.shard_count = 1; /* every key in one shard: a batch must appear all at once */
    struct bat b;
    memset(&b, 0, sizeof(b));
    b.db = cc_open(&cfg);
    b.n = cc_ops(m->sync == HTKV_SYNC_ALWAYS ? 300 : 2000);
    b.workers = m->workers > 0;
    atomic_init(&b.writers_left, B_WRITERS);
    /* Batch 0: every key present before the readers start. */
    struct bat_arg a0 = { &b, 0, cc_subseed(seed, round, 99) };
    htkv_batch *hb;
    assert_int_equal(htkv_batch_create(&hb), 0);
    assert_true(bat_fill(&a0, hb, 0));
    assert_int_equal(htkv_write(b.db, hb), 0);
    htkv_batch_destroy(hb);

    struct bat_arg args[B_WRITERS + B_READERS];
    for (unsigned i = 0; i < B_WRITERS + B_READERS; i++) {
        args[i] = (struct bat_arg){ &b, i, cc_subseed(seed, round, i) };
    }
    uint64_t t0 = cc_now_ns();
    cc_run_threads(B_WRITERS + B_READERS, bat_thread, args, sizeof(args[0]));
    cc_assert_ok();
    fprintf(stderr,
            "  %-36s %u batches x %d writers, %llu reader passes (%llu saw a newer batch "
            "mid-pass), %llu ms\n",
            cc_mode_text, b.n, B_WRITERS, (unsigned long long)atomic_load(&b.passes),
            (unsigned long long)atomic_load(&b.mixed_order),
            (unsigned long long)((cc_now_ns() - t0) / 1000000));
    /* The readers must have overlapped the writers for the test to mean anything. */
    assert_true(atomic_load(&b.passes) > 0);
    assert_int_equal(htkv_close(b.db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: within a shard a batch appears all at once to concurrent readers, and a key written
 * twice by one batch never shows its first value. Method: one shard; writers commit batches that
 * write one tag into the same 12 keys (random order, one key first with a throw-away value);
 * readers read the 12 keys one by one and require versions that never go back and one tag per
 * version. */
static void
test_visibility_batch_all_at_once_in_a_shard(void **state)
{
    (void)state;
    uint64_t seed = cc_seed("test_visibility_batch_all_at_once_in_a_shard");
    for (unsigned i = 0; i < sizeof(vis_modes) / sizeof(vis_modes[0]); i++) {
        if (vis_modes[i].workers > 0 && vis_modes[i].backend == HTKV_IO_URING &&
            !cc_uring_available()) {
            continue;
        }
        bat_run(&vis_modes[i], seed, i);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_visibility_read_your_writes_across_threads),
        cmocka_unit_test(test_visibility_batch_all_at_once_in_a_shard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
