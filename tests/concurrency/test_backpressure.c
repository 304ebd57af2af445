/*
 * test_backpressure.c - bounded worker queues (queues are bounded: "full -> back-pressure, not
 * OOM").
 *
 * With queue_depth = 2 (the engine rounds it up to its minimum) a worker's queue fills after a few
 * dozen requests. An asynchronous write must then be refused with HTKV_EBUSY at once, never wait;
 * a synchronous write that goes through the queue (HTKV_SYNC_ALWAYS, or from a thread that wrote
 * asynchronously) must wait for room and succeed, one that runs on its own thread succeeds at once;
 * every accepted asynchronous write must complete exactly once, with a version of its own; and
 * htkv_close() must drain what is queued, running every callback before it returns, with the writes
 * durable after reopen.
 *
 * To fill a queue deterministically, the first callback of a run blocks on a gate: the worker
 * thread is stuck in it (the API asks callbacks to be quick; this one stands for a slow one), so
 * nothing is drained until the test opens the gate.
 */
#include "tests/concurrency/cc_util.h"

/* An asynchronous call that returns later than this counts as blocking (sanitizers included). */
#define CALL_MAX_NS (2000ull * 1000000ull)

struct bp;

/* One asynchronous write and what its callback reported. */
struct slot {
    struct bp *bp;
    unsigned idx;
    bool gated;        /* the callback waits for bp->gate_open */
    bool resubmit;     /* the callback submits one more write (slot idx + bp->n) */
    int submit_rc;     /* what the htkv_*_async call returned */
    _Atomic int calls; /* callback runs */
    int rc;
    uint64_t version;
};

struct bp {
    htkv_db *db;
    unsigned n;         /* slots used by the main submissions; resubmissions use n..2n-1 */
    struct slot *slots; /* 2 * n */
    _Atomic int gate_open;
    _Atomic int in_gate;   /* the gated callback is running */
    _Atomic unsigned done; /* callbacks run */
    _Atomic uint64_t max_call_ns;
};

static size_t
qkey(unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "q%07u", i);
}

static size_t
qval(unsigned i, unsigned char *v)
{
    return cc_value(i, i, CC_VAL_HDR, v);
}

static void
note_call_ns(struct bp *bp, uint64_t ns)
{
    uint64_t cur = atomic_load(&bp->max_call_ns);
    while (ns > cur && !atomic_compare_exchange_weak(&bp->max_call_ns, &cur, ns)) {
    }
}

static void slot_cb(int rc, uint64_t version, void *ctx);

/* Submit slot @p i's put; returns what htkv_put_async returned and checks it never blocks. */
static int
slot_submit(struct bp *bp, unsigned i)
{
    struct slot *s = &bp->slots[i];
    char k[16];
    unsigned char v[CC_VAL_MAX];
    size_t kl = qkey(i, k), vl = qval(i, v);
    uint64_t t0 = cc_now_ns();
    int rc = htkv_put_async(bp->db, k, kl, v, vl, slot_cb, s);
    note_call_ns(bp, cc_now_ns() - t0);
    s->submit_rc = rc;
    return rc;
}

static void
slot_cb(int rc, uint64_t version, void *ctx)
{
    struct slot *s = ctx;
    struct bp *bp = s->bp;
    s->rc = rc;
    s->version = version;
    if (s->gated) {
        atomic_store(&bp->in_gate, 1);
        while (!atomic_load_explicit(&bp->gate_open, memory_order_acquire)) {
            cc_sleep_ms(1);
        }
    }
    if (s->resubmit) {
        /* Callbacks may submit new asynchronous writes; during htkv_close() they are refused. */
        int src = slot_submit(bp, s->idx + bp->n);
        if (src != 0 && src != HTKV_EBUSY && src != HTKV_ECLOSED) {
            cc_fail_at(__FILE__, __LINE__, "put_async from a callback: rc %d (%s)", src,
                       htkv_strerror(src));
        }
    }
    atomic_fetch_add_explicit(&s->calls, 1, memory_order_release);
    atomic_fetch_add_explicit(&bp->done, 1, memory_order_release);
}

static void
bp_init(struct bp *bp, unsigned n)
{
    memset(bp, 0, sizeof(*bp));
    bp->n = n;
    bp->slots = calloc(2 * (size_t)n, sizeof(*bp->slots));
    assert_non_null(bp->slots);
    for (unsigned i = 0; i < 2 * n; i++) {
        bp->slots[i].bp = bp;
        bp->slots[i].idx = i;
        bp->slots[i].submit_rc = 1; /* not submitted */
        atomic_init(&bp->slots[i].calls, 0);
    }
}

/* Wait (test thread) until @p want callbacks ran. */
static void
bp_wait_done(struct bp *bp, unsigned want)
{
    uint64_t end = cc_now_ns() + 60ull * 1000000000ull;
    while (atomic_load_explicit(&bp->done, memory_order_acquire) < want && cc_now_ns() < end) {
        cc_sleep_ms(1);
    }
    assert_int_equal(atomic_load(&bp->done), want);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/*
 * Every submitted slot (submit_rc 0) ran its callback exactly once with rc 0 and a version, no
 * two versions alike; every refused one never ran. Returns the number accepted.
 */
static unsigned
bp_check_slots(struct bp *bp)
{
    uint64_t *versions = calloc(2 * (size_t)bp->n, sizeof(*versions));
    assert_non_null(versions);
    unsigned accepted = 0;
    for (unsigned i = 0; i < 2 * bp->n; i++) {
        struct slot *s = &bp->slots[i];
        int calls = atomic_load_explicit(&s->calls, memory_order_acquire);
        if (s->submit_rc != 0) {
            if (calls != 0) {
                fprintf(stderr, "slot %u: refused (%d) but its callback ran\n", i, s->submit_rc);
            }
            assert_int_equal(calls, 0);
            continue;
        }
        if (calls != 1 || s->rc != 0 || s->version == 0) {
            fprintf(stderr, "slot %u: callback ran %d times, rc %d (%s), version %llu\n", i, calls,
                    s->rc, htkv_strerror(s->rc), (unsigned long long)s->version);
        }
        assert_int_equal(calls, 1);
        assert_int_equal(s->rc, 0);
        assert_true(s->version != 0);
        versions[accepted++] = s->version;
    }
    qsort(versions, accepted, sizeof(*versions), cmp_u64);
    for (unsigned i = 1; i < accepted; i++) {
        assert_true(versions[i] != versions[i - 1]);
    }
    free(versions);
    return accepted;
}

/* After reopen: accepted writes are there, refused ones are not. */
static void
bp_check_store(htkv_db *db, struct bp *bp)
{
    for (unsigned i = 0; i < 2 * bp->n; i++) {
        char k[16];
        unsigned char v[CC_VAL_MAX];
        size_t kl = qkey(i, k), vl = qval(i, v);
        tu_expect(db, k, kl, bp->slots[i].submit_rc == 0 ? v : NULL, vl);
    }
}

/* ---- a full queue, deterministically -------------------------------------------------------- */

struct sync_writer {
    htkv_db *db;
    unsigned id;
    bool async_first; /* tries an asynchronous write first (the full queue refuses it) */
    _Atomic int returned;
    int rc;
};

static void
never_done(int rc, uint64_t version, void *ctx)
{
    (void)rc;
    (void)version;
    (void)ctx;
    cc_fail_at(__FILE__, __LINE__, "a write refused with HTKV_EBUSY completed");
}

static void *
sync_writer_main(void *arg)
{
    struct sync_writer *w = arg;
    char k[16];
    size_t kl = (size_t)snprintf(k, sizeof(k), "sync%u", w->id);
    if (w->async_first && htkv_put_async(w->db, "pre", 3, "v", 1, never_done, NULL) != HTKV_EBUSY) {
        cc_fail_at(__FILE__, __LINE__, "an asynchronous put was accepted by a full queue");
    }
    if (w->id % 2 == 0) {
        w->rc = htkv_put(w->db, k, kl, "v", 1);
    } else {
        htkv_batch *b = NULL;
        w->rc = htkv_batch_create(&b);
        if (w->rc == 0) {
            w->rc = htkv_batch_put(b, k, kl, "v", 1);
        }
        if (w->rc == 0) {
            w->rc = htkv_write(w->db, b);
        }
        htkv_batch_destroy(b);
    }
    atomic_store_explicit(&w->returned, 1, memory_order_release);
    return NULL;
}

#define SYNC_WRITERS 4

static void
full_queue_run(const struct cc_mode *m)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("bpfull");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.queue_depth = 2;
    struct bp bp;
    bp_init(&bp, 8192);
    bp.db = cc_open(&cfg);

    /* Slot 0's callback holds the only worker: nothing is drained from now on. */
    bp.slots[0].gated = true;
    assert_int_equal(slot_submit(&bp, 0), 0);
    uint64_t end = cc_now_ns() + 30ull * 1000000000ull;
    while (!atomic_load(&bp.in_gate) && cc_now_ns() < end) {
        cc_sleep_ms(1);
    }
    assert_true(atomic_load(&bp.in_gate));

    unsigned i = 1;
    while (i < bp.n && slot_submit(&bp, i) == 0) {
        i++;
    }
    assert_true(i < bp.n); /* the queue is bounded */
    assert_int_equal(bp.slots[i].submit_rc, HTKV_EBUSY);
    unsigned queued = i - 1;
    /* Still full: more calls are refused at once, and their callbacks never run. */
    for (unsigned j = 1; j <= 16; j++) {
        assert_int_equal(slot_submit(&bp, i + j), HTKV_EBUSY);
    }
    assert_true(atomic_load(&bp.max_call_ns) < CALL_MAX_NS);

    /* Synchronous writers never fail on a full queue. In ALWAYS, and for a thread that wrote
     * asynchronously (its writes keep their order), they wait for room; in NEVER a thread that
     * never did writes on its own thread and returns at once. */
    struct sync_writer sw[SYNC_WRITERS];
    pthread_t th[SYNC_WRITERS];
    for (unsigned j = 0; j < SYNC_WRITERS; j++) {
        sw[j] = (struct sync_writer){ .db = bp.db, .id = j, .async_first = j >= 2 };
        atomic_init(&sw[j].returned, 0);
        assert_int_equal(pthread_create(&th[j], NULL, sync_writer_main, &sw[j]), 0);
    }
    cc_sleep_ms(50);
    for (unsigned j = 0; j < SYNC_WRITERS; j++) {
        bool here = m->sync != HTKV_SYNC_ALWAYS && !sw[j].async_first;
        assert_int_equal(atomic_load(&sw[j].returned), here);
    }
    assert_int_equal(atomic_load(&bp.done), 0);

    atomic_store_explicit(&bp.gate_open, 1, memory_order_release);
    for (unsigned j = 0; j < SYNC_WRITERS; j++) {
        assert_int_equal(pthread_join(th[j], NULL), 0);
        assert_int_equal(sw[j].rc, 0);
    }
    bp_wait_done(&bp, queued + 1);
    assert_int_equal(bp_check_slots(&bp), queued + 1);
    fprintf(stderr, "  %-36s queue held %u requests behind a busy worker; EBUSY after that\n",
            cc_mode_text, queued);
    assert_int_equal(htkv_close(bp.db), 0);

    cfg.worker_threads = 0;
    htkv_db *db = cc_open(&cfg);
    bp_check_store(db, &bp);
    for (unsigned j = 0; j < SYNC_WRITERS; j++) {
        char k[16];
        size_t kl = (size_t)snprintf(k, sizeof(k), "sync%u", j);
        tu_expect(db, k, kl, "v", 1);
    }
    assert_int_equal(htkv_close(db), 0);
    cc_assert_ok();
    free(bp.slots);
    tu_rmrf(dir);
    free(dir);
}

static const struct cc_mode one_worker_modes[] = {
    { 1, HTKV_IO_URING, HTKV_SYNC_NEVER },
    { 1, HTKV_IO_URING, HTKV_SYNC_ALWAYS },
    { 1, HTKV_IO_SYNC, HTKV_SYNC_NEVER },
    { 1, HTKV_IO_SYNC, HTKV_SYNC_ALWAYS },
};
#define N_ONE_WORKER_MODES (sizeof(one_worker_modes) / sizeof(one_worker_modes[0]))

/* Goal: a full worker queue refuses asynchronous writes with HTKV_EBUSY at once (their callbacks
 * never run) while synchronous writers succeed (waiting for room where they go through the
 * queue); queue_depth 2 still bounds the queue. Method: the first callback blocks the only worker;
 * submit until EBUSY; start sync writers; check they are still waiting; open the gate; check every
 * callback and the store. */
static void
test_backpressure_full_queue_refuses_async_and_holds_sync(void **state)
{
    (void)state;
    (void)cc_seed("test_backpressure_full_queue_refuses_async_and_holds_sync");
    for (size_t i = 0; i < N_ONE_WORKER_MODES; i++) {
        if (one_worker_modes[i].backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        full_queue_run(&one_worker_modes[i]);
    }
}

/* ---- many producers ------------------------------------------------------------------------- */

#define PRODUCERS 6
#define SYNC_PUT 2 /* submit_rc of a slot written with htkv_put() instead */

struct producer {
    struct bp *bp;
    unsigned id;
    uint64_t rng;
    unsigned busy, dropped, sync_puts;
};

static void *
producer_main(void *arg)
{
    struct producer *p = arg;
    struct bp *bp = p->bp;
    /* Producer t owns slots t, t + PRODUCERS, ... of the first n. */
    for (unsigned i = p->id; i < bp->n && !cc_failed(); i += PRODUCERS) {
        if (tu_rand(&p->rng) % 10 == 0) {
            /* A synchronous put of the same key: waits for room, never refused. */
            char k[16];
            unsigned char v[CC_VAL_MAX];
            size_t kl = qkey(i, k), vl = qval(i, v);
            int rc = htkv_put(bp->db, k, kl, v, vl);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "sync put %s: rc %d (%s)", k, rc, htkv_strerror(rc));
                break;
            }
            bp->slots[i].submit_rc = SYNC_PUT;
            p->sync_puts++;
            continue;
        }
        int rc;
        while ((rc = slot_submit(bp, i)) == HTKV_EBUSY) {
            p->busy++;
            if (tu_rand(&p->rng) % 4 == 0) {
                p->dropped++; /* give up on this one: it must never appear */
                break;
            }
            sched_yield();
        }
        if (rc != 0 && rc != HTKV_EBUSY) {
            cc_fail_at(__FILE__, __LINE__, "put_async: rc %d (%s)", rc, htkv_strerror(rc));
            break;
        }
    }
    return NULL;
}

static void
producers_run(const struct cc_mode *m, uint64_t seed, unsigned round)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("bpmany");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.queue_depth = 2;
    struct bp bp;
    bp_init(&bp, cc_ops(m->sync == HTKV_SYNC_ALWAYS ? 6000 : 30000));
    bp.db = cc_open(&cfg);
    struct producer ps[PRODUCERS];
    for (unsigned t = 0; t < PRODUCERS; t++) {
        ps[t] = (struct producer){ .bp = &bp, .id = t, .rng = cc_subseed(seed, round, t) };
    }
    uint64_t t0 = cc_now_ns();
    cc_run_threads(PRODUCERS, producer_main, ps, sizeof(ps[0]));
    cc_assert_ok();
    unsigned accepted = 0, busy = 0, dropped = 0, syncs = 0;
    for (unsigned i = 0; i < bp.n; i++) {
        accepted += bp.slots[i].submit_rc == 0;
    }
    for (unsigned t = 0; t < PRODUCERS; t++) {
        busy += ps[t].busy;
        dropped += ps[t].dropped;
        syncs += ps[t].sync_puts;
    }
    bp_wait_done(&bp, accepted);
    uint64_t ms = (cc_now_ns() - t0) / 1000000;
    assert_int_equal(bp_check_slots(&bp), accepted);
    assert_true(atomic_load(&bp.max_call_ns) < CALL_MAX_NS);
    fprintf(stderr,
            "  %-36s %u accepted, %u EBUSY (%u given up), %u sync puts, slowest async call "
            "%llu us, %llu ms\n",
            cc_mode_text, accepted, busy, dropped, syncs,
            (unsigned long long)(atomic_load(&bp.max_call_ns) / 1000), (unsigned long long)ms);
    assert_int_equal(htkv_close(bp.db), 0);

    /* Reopen: every accepted or synchronous write is there, no refused one. */
    cfg.worker_threads = 0;
    htkv_db *db = cc_open(&cfg);
    for (unsigned i = 0; i < bp.n; i++) {
        char k[16];
        unsigned char v[CC_VAL_MAX];
        size_t kl = qkey(i, k), vl = qval(i, v);
        int src = bp.slots[i].submit_rc;
        tu_expect(db, k, kl, src == 0 || src == SYNC_PUT ? v : NULL, vl);
    }
    assert_int_equal(htkv_close(db), 0);
    free(bp.slots);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: under a storm of asynchronous writes into a tiny queue, every call returns 0 or
 * HTKV_EBUSY without blocking, every accepted write completes exactly once with rc 0 and a
 * version no other write has, and synchronous writes mixed in all succeed. Method: 6 producers,
 * unique keys, retry or give up on EBUSY; count callbacks per slot; sort versions; reopen and
 * compare. One and two workers, each backend, NEVER and ALWAYS. */
static void
test_backpressure_many_async_writers_each_callback_once(void **state)
{
    (void)state;
    uint64_t seed = cc_seed("test_backpressure_many_async_writers_each_callback_once");
    unsigned round = 0;
    for (unsigned w = 1; w <= 2; w++) {
        for (size_t i = 0; i < N_ONE_WORKER_MODES; i++, round++) {
            struct cc_mode m = one_worker_modes[i];
            m.workers = w;
            if (m.backend == HTKV_IO_URING && !cc_uring_available()) {
                continue;
            }
            producers_run(&m, seed, round);
        }
    }
}

/* ---- close drains --------------------------------------------------------------------------- */

struct closer {
    htkv_db *db;
    struct bp *bp;
    int rc;
    unsigned done_at_return; /* callbacks run when htkv_close() returned */
    _Atomic int started, returned;
};

static void *
closer_main(void *arg)
{
    struct closer *c = arg;
    atomic_store(&c->started, 1);
    c->rc = htkv_close(c->db);
    c->done_at_return = atomic_load_explicit(&c->bp->done, memory_order_acquire);
    atomic_store(&c->returned, 1);
    return NULL;
}

static void
close_drain_run(const struct cc_mode *m)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("bpclose");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.queue_depth = 2;
    struct bp bp;
    bp_init(&bp, 8192);
    bp.db = cc_open(&cfg);

    bp.slots[0].gated = true;
    assert_int_equal(slot_submit(&bp, 0), 0);
    uint64_t end = cc_now_ns() + 30ull * 1000000000ull;
    while (!atomic_load(&bp.in_gate) && cc_now_ns() < end) {
        cc_sleep_ms(1);
    }
    assert_true(atomic_load(&bp.in_gate));
    unsigned i = 1;
    while (i < bp.n) {
        bp.slots[i].resubmit = i % 4 == 0; /* some callbacks write once more during close */
        if (slot_submit(&bp, i) != 0) {
            break;
        }
        i++;
    }
    assert_true(i < bp.n);
    unsigned queued = i - 1;

    struct closer c = { .db = bp.db, .bp = &bp };
    atomic_init(&c.started, 0);
    atomic_init(&c.returned, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, closer_main, &c), 0);
    while (!atomic_load(&c.started)) {
        sched_yield();
    }
    cc_sleep_ms(20);
    assert_int_equal(atomic_load(&c.returned), 0); /* the queue is not drained yet */
    atomic_store_explicit(&bp.gate_open, 1, memory_order_release);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.rc, 0);

    unsigned accepted = bp_check_slots(&bp);
    assert_true(accepted >= queued + 1);
    /* Every callback (resubmissions included) ran before htkv_close() returned. */
    assert_int_equal(c.done_at_return, accepted);
    unsigned refused_late = 0;
    for (unsigned j = bp.n; j < 2 * bp.n; j++) {
        refused_late += bp.slots[j].submit_rc == HTKV_ECLOSED;
    }
    fprintf(stderr,
            "  %-36s close drained %u queued writes (+%u written by callbacks, %u refused "
            "with HTKV_ECLOSED)\n",
            cc_mode_text, queued + 1, accepted - queued - 1, refused_late);

    /* Durable after reopen (inline). */
    cfg.worker_threads = 0;
    htkv_db *db = cc_open(&cfg);
    bp_check_store(db, &bp);
    assert_int_equal(htkv_close(db), 0);
    cc_assert_ok();
    free(bp.slots);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: htkv_close() with asynchronous writes still queued drains them: every callback runs
 * before it returns, and the writes are durable after reopen; writes that callbacks submit
 * meanwhile are either accepted (and drained too) or refused with HTKV_ECLOSED. Method: block
 * the worker in a callback, fill the queue, close from another thread, open the gate, check. */
static void
test_backpressure_close_drains_queued_async_writes(void **state)
{
    (void)state;
    (void)cc_seed("test_backpressure_close_drains_queued_async_writes");
    for (size_t i = 0; i < N_ONE_WORKER_MODES; i++) {
        if (one_worker_modes[i].backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        close_drain_run(&one_worker_modes[i]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backpressure_full_queue_refuses_async_and_holds_sync),
        cmocka_unit_test(test_backpressure_many_async_writers_each_callback_once),
        cmocka_unit_test(test_backpressure_close_drains_queued_async_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
