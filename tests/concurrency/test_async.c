/*
 * test_async.c - htkv_put_async(), htkv_delete_async() and htkv_write_async().
 *
 * Inline (worker_threads = 0) the write runs on the calling thread and the callback runs before
 * the call returns; with workers it runs on a worker thread later. Either way it runs exactly
 * once with what the synchronous call would have returned, and a call that fails returns the
 * error without ever calling it. htkv_write_async() copies the batch, so the caller may destroy
 * or reuse it at once. A thread's writes apply in its order, whether asynchronous or not (a
 * synchronous put may run on the calling thread when the worker is parked: never before the
 * caller's earlier asynchronous writes).
 */
#include "tests/concurrency/cc_util.h"

static const struct cc_mode worker_modes[] = {
    { 1, HTKV_IO_URING, HTKV_SYNC_NEVER },
    { 1, HTKV_IO_SYNC, HTKV_SYNC_ALWAYS },
    { 2, HTKV_IO_URING, HTKV_SYNC_ALWAYS },
    { 2, HTKV_IO_SYNC, HTKV_SYNC_INTERVAL },
};
#define N_WORKER_MODES (sizeof(worker_modes) / sizeof(worker_modes[0]))

static htkv_db *
open_mode(const struct cc_mode *m, char **dir, htkv_config *cfg)
{
    cc_set_mode(m);
    *dir = tu_tmpdir("async");
    cc_config(cfg, *dir, m);
    return cc_open(cfg);
}

static void
close_mode(htkv_db *db, char *dir)
{
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Wait for the callback of @p d (inline: it must already have run) and check it ran once. */
static void
await(const struct cc_mode *m, struct cc_done *d)
{
    if (m->workers == 0) {
        assert_int_equal(atomic_load(&d->calls), 1); /* before the call returned */
        assert_true(pthread_equal(d->thread, pthread_self()));
        return;
    }
    assert_true(cc_done_wait(d, 60000));
    assert_int_equal(atomic_load(&d->calls), 1);
    assert_false(pthread_equal(d->thread, pthread_self())); /* a worker ran it */
}

static uint64_t
version_of(htkv_db *db, const char *key)
{
    uint64_t v = 0;
    size_t n = 0;
    unsigned char buf[CC_VAL_MAX];
    int rc = htkv_get_version(db, key, strlen(key), buf, sizeof(buf), &n, &v);
    return rc == 0 ? v : 0;
}

/* put, delete (present and absent) and a batch, each through its async call, checked at once. */
static void
basic_async_ops(const struct cc_mode *m, htkv_db *db)
{
    struct cc_done d = { 0 };
    assert_int_equal(htkv_put_async(db, "k1", 2, "one", 3, cc_done_cb, &d), 0);
    await(m, &d);
    assert_int_equal(d.rc, 0);
    assert_true(d.version != 0);
    tu_expect(db, "k1", 2, "one", 3);
    assert_int_equal(version_of(db, "k1"), d.version);
    uint64_t put_version = d.version;

    struct cc_done d2 = { 0 };
    assert_int_equal(htkv_delete_async(db, "k1", 2, cc_done_cb, &d2), 0);
    await(m, &d2);
    assert_int_equal(d2.rc, 0);
    assert_true(d2.version > put_version);
    tu_expect(db, "k1", 2, NULL, 0);

    /* Deleting an absent key: the call is accepted, its callback says HTKV_ENOTFOUND. */
    struct cc_done d3 = { 0 };
    assert_int_equal(htkv_delete_async(db, "k1", 2, cc_done_cb, &d3), 0);
    await(m, &d3);
    assert_int_equal(d3.rc, HTKV_ENOTFOUND);
    assert_int_equal(d3.version, 0);

    /* A batch over several shards: all keys get the callback's version. */
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[16];
    for (unsigned i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "bk%u", i);
        assert_int_equal(htkv_batch_put(b, k, strlen(k), k, strlen(k)), 0);
    }
    assert_int_equal(htkv_batch_delete(b, "bk3", 3), 0);
    struct cc_done d4 = { 0 };
    assert_int_equal(htkv_write_async(db, b, cc_done_cb, &d4), 0);
    assert_int_equal(htkv_batch_version(b), 0); /* reaches the callback, not the batch */
    htkv_batch_destroy(b);
    await(m, &d4);
    assert_int_equal(d4.rc, 0);
    assert_true(d4.version > d2.version);
    for (unsigned i = 0; i < 8; i++) {
        snprintf(k, sizeof(k), "bk%u", i);
        if (i == 3) {
            tu_expect(db, k, strlen(k), NULL, 0);
        } else {
            tu_expect(db, k, strlen(k), k, strlen(k));
            assert_int_equal(version_of(db, k), d4.version);
        }
    }

    /* A conditional batch whose condition fails: HTKV_ECONFLICT through the callback. */
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_check(b, "bk0", 3, d4.version + 1000), 0);
    assert_int_equal(htkv_batch_put(b, "bk0", 3, "changed", 7), 0);
    struct cc_done d5 = { 0 };
    assert_int_equal(htkv_write_async(db, b, cc_done_cb, &d5), 0);
    await(m, &d5);
    assert_int_equal(d5.rc, HTKV_ECONFLICT);
    assert_int_equal(d5.version, 0);
    tu_expect(db, "bk0", 3, "bk0", 3);

    /* Conditions only, holding: rc 0, nothing written (version 0). */
    htkv_batch_clear(b);
    assert_int_equal(htkv_batch_check(b, "bk0", 3, d4.version), 0);
    struct cc_done d6 = { 0 };
    assert_int_equal(htkv_write_async(db, b, cc_done_cb, &d6), 0);
    htkv_batch_destroy(b);
    if (m->workers == 0) {
        await(m, &d6);
    } else {
        assert_true(cc_done_wait(&d6, 60000));
        assert_int_equal(atomic_load(&d6.calls), 1);
    }
    assert_int_equal(d6.rc, 0);
    assert_int_equal(d6.version, 0);
}

/* A callback that submits the next write of a chain (callbacks may submit async writes). */
struct chain {
    htkv_db *db;
    unsigned left;
    unsigned links;
    _Atomic int finished;
    int rc;
};

static void
chain_cb(int rc, uint64_t version, void *ctx)
{
    struct chain *c = ctx;
    if (rc != 0 || version == 0) {
        c->rc = rc != 0 ? rc : -1;
        atomic_store_explicit(&c->finished, 1, memory_order_release);
        return;
    }
    c->links++;
    if (c->left == 0) {
        atomic_store_explicit(&c->finished, 1, memory_order_release);
        return;
    }
    c->left--;
    char k[16];
    int n = snprintf(k, sizeof(k), "chain%u", c->left);
    int src = htkv_put_async(c->db, k, (size_t)n, k, (size_t)n, chain_cb, c);
    if (src != 0) {
        c->rc = src;
        atomic_store_explicit(&c->finished, 1, memory_order_release);
    }
}

static void
chain_run(const struct cc_mode *m, htkv_db *db)
{
    struct chain c = { .db = db, .left = 40 };
    atomic_init(&c.finished, 0);
    assert_int_equal(htkv_put_async(db, "chain-start", 11, "x", 1, chain_cb, &c), 0);
    if (m->workers == 0) {
        assert_int_equal(atomic_load(&c.finished), 1); /* the whole chain ran inside the call */
    }
    uint64_t end = cc_now_ns() + 60ull * 1000000000ull;
    while (!atomic_load_explicit(&c.finished, memory_order_acquire) && cc_now_ns() < end) {
        sched_yield();
    }
    assert_int_equal(atomic_load(&c.finished), 1);
    assert_int_equal(c.rc, 0);
    assert_int_equal(c.links, 41);
    for (unsigned i = 0; i < 40; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "chain%u", i);
        tu_expect(db, k, (size_t)n, k, (size_t)n);
    }
}

/* Goal: inline, each async call runs its write on the caller's thread and calls done exactly
 * once before returning, with the rc and version the sync call would give (ENOTFOUND for an
 * absent delete, ECONFLICT for a failed condition); callbacks may chain new async writes.
 * Method: each call, then check the callback's record, the thread, and the store; each sync mode.
 */
static void
test_async_inline_callback_runs_before_return(void **state)
{
    (void)state;
    (void)cc_seed("test_async_inline_callback_runs_before_return");
    static const int syncs[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL, HTKV_SYNC_ALWAYS };
    for (size_t i = 0; i < 3; i++) {
        struct cc_mode m = { 0, HTKV_IO_AUTO, syncs[i] };
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_mode(&m, &dir, &cfg);
        basic_async_ops(&m, db);
        chain_run(&m, db);
        close_mode(db, dir);
    }
}

/* Many async puts of one key from one thread: versions grow in submission order, the last wins. */
static void
same_key_in_order(htkv_db *db)
{
    enum { N = 200 };
    struct cc_done *d = calloc(N, sizeof(*d));
    assert_non_null(d);
    for (unsigned i = 0; i < N; i++) {
        uint32_t v = i;
        int rc;
        while ((rc = htkv_put_async(db, "same", 4, &v, sizeof(v), cc_done_cb, &d[i])) ==
               HTKV_EBUSY) {
            sched_yield();
        }
        assert_int_equal(rc, 0);
    }
    for (unsigned i = 0; i < N; i++) {
        assert_true(cc_done_wait(&d[i], 60000));
        assert_int_equal(atomic_load(&d[i].calls), 1);
        assert_int_equal(d[i].rc, 0);
        if (i > 0) {
            assert_true(d[i].version > d[i - 1].version);
        }
    }
    uint32_t last = N - 1;
    tu_expect(db, "same", 4, &last, sizeof(last));
    assert_int_equal(version_of(db, "same"), d[N - 1].version);
    free(d);
}

/* htkv_write_async() copied the batch: reuse and destroy it at once; the original is written. */
static void
batch_is_copied(htkv_db *db)
{
    enum { N = 50 };
    struct cc_done d[N];
    memset(d, 0, sizeof(d));
    for (unsigned r = 0; r < N; r++) {
        htkv_batch *b;
        assert_int_equal(htkv_batch_create(&b), 0);
        for (unsigned i = 0; i < 6; i++) {
            char k[16], v[32];
            snprintf(k, sizeof(k), "copy%u", i);
            int vl = snprintf(v, sizeof(v), "round%u-key%u", r, i);
            assert_int_equal(htkv_batch_put(b, k, strlen(k), v, (size_t)vl), 0);
        }
        int rc;
        while ((rc = htkv_write_async(db, b, cc_done_cb, &d[r])) == HTKV_EBUSY) {
            sched_yield();
        }
        assert_int_equal(rc, 0);
        /* Scribble over the caller's batch, then free it, while the worker may still run it. */
        htkv_batch_clear(b);
        for (unsigned i = 0; i < 6; i++) {
            char k[16];
            snprintf(k, sizeof(k), "copy%u", i);
            assert_int_equal(htkv_batch_put(b, k, strlen(k), "WRONG", 5), 0);
        }
        htkv_batch_destroy(b);
    }
    for (unsigned r = 0; r < N; r++) {
        assert_true(cc_done_wait(&d[r], 60000));
        assert_int_equal(d[r].rc, 0);
        assert_true(r == 0 || d[r].version > d[r - 1].version);
    }
    for (unsigned i = 0; i < 6; i++) {
        char k[16], v[32];
        snprintf(k, sizeof(k), "copy%u", i);
        int vl = snprintf(v, sizeof(v), "round%u-key%u", N - 1, i);
        tu_expect(db, k, strlen(k), v, (size_t)vl);
    }
}

/* Goal: with workers, each async call returns at once and its callback runs exactly once on a
 * worker thread with the sync call's rc and version; one thread's async writes of one key apply
 * in submission order; write_async works on a copy of the batch; callbacks may chain writes.
 * Method: as the inline test, waiting for each callback; 1 and 2 workers, both backends. */
static void
test_async_workers_callback_on_worker_thread(void **state)
{
    (void)state;
    (void)cc_seed("test_async_workers_callback_on_worker_thread");
    for (size_t i = 0; i < N_WORKER_MODES; i++) {
        const struct cc_mode *m = &worker_modes[i];
        if (m->backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_mode(m, &dir, &cfg);
        basic_async_ops(m, db);
        chain_run(m, db);
        same_key_in_order(db);
        batch_is_copied(db);
        close_mode(db, dir);
    }
}

/* ---- errors --------------------------------------------------------------------------------- */

static const unsigned char big_dummy[8] = "12345678";
static const char long_key_dummy[8] = "k";

/* Every bad call fails with the documented code and never calls done, now or later. */
static void
bad_calls(htkv_db *db, uint32_t max_value, struct cc_done *dp)
{
    struct cc_done d = { 0 }; /* the callers' ctx: never touched */
    unsigned char *big = calloc(1, (size_t)max_value + 1);
    char *long_key = calloc(1, HTKV_KEY_MAX + 1);
    assert_true(big != NULL && long_key != NULL);
    memset(long_key, 'k', HTKV_KEY_MAX + 1);

    assert_int_equal(htkv_put_async(db, "e", 1, "v", 1, NULL, &d), -EINVAL);
    assert_int_equal(htkv_delete_async(db, "e", 1, NULL, &d), -EINVAL);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_put(b, "e", 1, "v", 1), 0);
    assert_int_equal(htkv_write_async(db, b, NULL, &d), -EINVAL);
    assert_int_equal(htkv_write_async(db, NULL, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_put_async(NULL, "e", 1, "v", 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_delete_async(NULL, "e", 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_write_async(NULL, b, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_put_async(db, NULL, 1, "v", 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_put_async(db, "e", 0, "v", 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_put_async(db, "e", 1, NULL, 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_delete_async(db, NULL, 1, cc_done_cb, &d), -EINVAL);
    assert_int_equal(htkv_delete_async(db, "e", 0, cc_done_cb, &d), -EINVAL);

    assert_int_equal(htkv_put_async(db, "e", 1, big, (size_t)max_value + 1, cc_done_cb, &d),
                     HTKV_ETOOBIG);
    assert_int_equal(htkv_put_async(db, long_key, HTKV_KEY_MAX + 1, "v", 1, cc_done_cb, &d),
                     HTKV_ETOOBIG);
    assert_int_equal(htkv_delete_async(db, long_key, HTKV_KEY_MAX + 1, cc_done_cb, &d),
                     HTKV_ETOOBIG);
    htkv_batch_clear(b);
    assert_int_equal(htkv_batch_put(b, "e", 1, "v", 1), 0);
    assert_int_equal(htkv_batch_put(b, "f", 1, big, (size_t)max_value + 1), 0);
    assert_int_equal(htkv_write_async(db, b, cc_done_cb, &d), HTKV_ETOOBIG);
    assert_int_equal(htkv_batch_count(b), 2); /* unchanged */
    htkv_batch_destroy(b);

    assert_int_equal(atomic_load(&d.calls), 0);
    tu_expect(db, "e", 1, NULL, 0);
    tu_expect(db, "f", 1, NULL, 0);

    /* The largest allowed value and key are accepted. */
    struct cc_done ok = { 0 };
    assert_int_equal(htkv_put_async(db, "max", 3, big, max_value, cc_done_cb, &ok), 0);
    assert_true(cc_done_wait(&ok, 60000));
    assert_int_equal(ok.rc, 0);
    struct cc_done ok2 = { 0 };
    assert_int_equal(htkv_put_async(db, long_key, HTKV_KEY_MAX, "v", 1, cc_done_cb, &ok2), 0);
    assert_true(cc_done_wait(&ok2, 60000));
    assert_int_equal(ok2.rc, 0);
    tu_expect(db, long_key, HTKV_KEY_MAX, "v", 1);
    assert_int_equal(atomic_load(&d.calls), 0);
    free(big);
    free(long_key);
    /* Once more, for the caller to check after htkv_close(): a late call would show there. */
    assert_int_equal(htkv_put_async(db, "e", 1, NULL, 1, cc_done_cb, dp), -EINVAL);
    assert_int_equal(htkv_put_async(db, "e", 1, big_dummy, 8, NULL, dp), -EINVAL);
    assert_int_equal(htkv_delete_async(db, long_key_dummy, 0, cc_done_cb, dp), -EINVAL);
}

/* Goal: async calls with bad arguments (-EINVAL: NULL done, db, key or value pointer, empty key;
 * HTKV_ETOOBIG: value over max_value_bytes, key over HTKV_KEY_MAX, such a value in a batch) and
 * on a read-only store (HTKV_EREADONLY) return the error and never call done, not even later;
 * nothing is written. Method: each bad call with a counting callback; check after close that it
 * never ran; inline and with workers. */
static void
test_async_errors_never_call_done(void **state)
{
    (void)state;
    (void)cc_seed("test_async_errors_never_call_done");
    struct cc_mode modes[] = { { 0, HTKV_IO_AUTO, HTKV_SYNC_NEVER },
                               worker_modes[0],
                               worker_modes[1] };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (modes[i].workers > 0 && modes[i].backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        cc_set_mode(&modes[i]);
        char *dir = tu_tmpdir("asyncerr");
        htkv_config cfg;
        cc_config(&cfg, dir, &modes[i]);
        cfg.max_value_bytes = 4096;
        htkv_db *db = cc_open(&cfg);
        struct cc_done late = { 0 };
        bad_calls(db, cfg.max_value_bytes, &late);
        struct htkv_stats st = tu_stats(db);
        assert_int_equal(st.puts, 2); /* only the two accepted puts */
        assert_int_equal(htkv_close(db), 0);
        assert_int_equal(atomic_load(&late.calls), 0);

        /* Read-only: refused before anything is queued. */
        cfg.read_only = 1;
        db = tu_open(&cfg);
        struct cc_done d = { 0 };
        assert_int_equal(htkv_put_async(db, "r", 1, "v", 1, cc_done_cb, &d), HTKV_EREADONLY);
        assert_int_equal(htkv_delete_async(db, "max", 3, cc_done_cb, &d), HTKV_EREADONLY);
        htkv_batch *b;
        assert_int_equal(htkv_batch_create(&b), 0);
        assert_int_equal(htkv_batch_put(b, "r", 1, "v", 1), 0);
        assert_int_equal(htkv_write_async(db, b, cc_done_cb, &d), HTKV_EREADONLY);
        htkv_batch_destroy(b);
        assert_int_equal(htkv_close(db), 0);
        assert_int_equal(atomic_load(&d.calls), 0);
        tu_rmrf(dir);
        free(dir);
    }
}

/* test_async_then_sync_keeps_order: a callback that holds the worker until the gate opens. */
struct order_gate {
    _Atomic int open, entered;
};

static void
gated_done(int rc, uint64_t version, void *ctx)
{
    struct order_gate *g = ctx;
    (void)rc;
    (void)version;
    atomic_store(&g->entered, 1);
    while (!atomic_load(&g->open)) {
        sched_yield();
    }
}

static void *
gate_opener(void *arg)
{
    struct order_gate *g = arg;
    cc_sleep_ms(5); /* the synchronous put below has started by now */
    atomic_store(&g->open, 1);
    return NULL;
}

/* One round: the worker is held in a callback, "a<i>" is queued behind it, then a synchronous
 * put of "s<i>" to the same key runs while the gate opens; afterwards the key must read "s<i>". */
static void
order_round(htkv_db *db, unsigned i)
{
    struct order_gate g = { 0 };
    struct cc_done d = { 0 };
    char val[32], got[32];
    assert_int_equal(htkv_put_async(db, "order-hold", 10, "h", 1, gated_done, &g), 0);
    while (!atomic_load(&g.entered)) {
        sched_yield();
    }
    size_t vl = (size_t)snprintf(val, sizeof(val), "a%u", i);
    assert_int_equal(htkv_put_async(db, "order-key", 9, val, vl, cc_done_cb, &d), 0);
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, gate_opener, &g), 0);
    vl = (size_t)snprintf(val, sizeof(val), "s%u", i);
    assert_int_equal(htkv_put(db, "order-key", 9, val, vl), 0);
    pthread_join(opener, NULL);
    while (atomic_load(&d.calls) == 0) {
        sched_yield();
    }
    size_t gl = 0;
    assert_int_equal(htkv_get(db, "order-key", 9, got, sizeof(got), &gl), 0);
    assert_int_equal(gl, vl);
    assert_memory_equal(got, val, vl);
}

/* Goal: a thread's asynchronous then synchronous writes of one key apply in that order, also
 * when the synchronous one could run on the calling thread (the worker's queue holds the
 * asynchronous one). Method: order_round, 20 rounds in each sync mode, with pauses so that the
 * worker parks between rounds. */
static void
test_async_then_sync_keeps_order(void **state)
{
    (void)state;
    static const struct cc_mode modes[] = {
        { 1, HTKV_IO_AUTO, HTKV_SYNC_NEVER },
        { 1, HTKV_IO_AUTO, HTKV_SYNC_INTERVAL },
        { 1, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS },
    };
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        char *dir;
        htkv_config cfg;
        htkv_db *db = open_mode(&modes[m], &dir, &cfg);
        for (unsigned i = 0; i < 20; i++) {
            order_round(db, i);
            cc_sleep_ms(1);
        }
        close_mode(db, dir);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_inline_callback_runs_before_return),
        cmocka_unit_test(test_async_workers_callback_on_worker_thread),
        cmocka_unit_test(test_async_errors_never_call_done),
        cmocka_unit_test(test_async_then_sync_keeps_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
