/*
 * test_one_cpu.c - confined to one CPU, 4 workers and 16 callers neither deadlock nor starve.
 *
 * The normal case for an agent in a container with a CPU limit: more threads than CPUs. A
 * spinner on the only CPU steals the time of the thread it waits for, and a lost wake-up that a
 * spin used to hide shows up as a hang. The process pins itself to one CPU (sched_setaffinity:
 * threads made afterwards inherit the mask) and opens a store with 4 workers; 16 caller threads
 * each write their own keys with synchronous puts and deletes, batches and asynchronous puts
 * (waiting for each of their callbacks before the end). The watchdog bounds each mode; at the
 * end every key reads its last value, every asynchronous callback ran exactly once with rc 0, and
 * htkv_stats.cpus says 1. In NEVER, INTERVAL and ALWAYS (fewer operations: each waits for a
 * group sync). Nothing here measures speed.
 */
#include <sched.h>

#include "tests/concurrency/cc_util.h"

#define CALLERS 16
#define KEYS_PER_CALLER 64u

struct caller {
    htkv_db *db;
    unsigned id;
    unsigned ops;
    uint32_t last[KEYS_PER_CALLER]; /* value written last (0 = deleted or never written) */
    _Atomic unsigned async_done, async_bad;
};

static size_t
key_of(unsigned caller, unsigned k, char *buf)
{
    return (size_t)sprintf(buf, "cpu1-%02u-%03u", caller, k);
}

static void
on_done(int rc, uint64_t version, void *ctx)
{
    struct caller *c = ctx;
    if (rc != 0 || version == 0) {
        atomic_fetch_add(&c->async_bad, 1);
    }
    atomic_fetch_add(&c->async_done, 1);
}

/* One operation of caller @p c on key @p k with value tag @p tag; false after a failure. */
static bool
caller_op(struct caller *c, htkv_batch *b, unsigned k, uint32_t tag, unsigned kind,
          unsigned *async_sent)
{
    char key[32];
    size_t kl = key_of(c->id, k, key);
    int rc;
    if (kind == 0) {
        rc = htkv_delete(c->db, key, kl);
        rc = rc == HTKV_ENOTFOUND ? 0 : rc;
        tag = 0;
    } else if (kind == 1) {
        htkv_batch_clear(b);
        rc = htkv_batch_put(b, key, kl, &tag, sizeof(tag));
        rc = rc != 0 ? rc : htkv_write(c->db, b);
    } else if (kind == 2) {
        /* Asynchronous: this caller writes the key again only after the callback ran. */
        while ((rc = htkv_put_async(c->db, key, kl, &tag, sizeof(tag), on_done, c)) == HTKV_EBUSY) {
            sched_yield();
        }
        *async_sent += rc == 0;
        while (rc == 0 && atomic_load(&c->async_done) < *async_sent) {
            sched_yield();
        }
    } else {
        rc = htkv_put(c->db, key, kl, &tag, sizeof(tag));
    }
    CC_CHECK(rc == 0, "caller %u op on key %u: %s", c->id, k, htkv_strerror(rc));
    c->last[k] = tag;
    return true;
}

static void *
caller_main(void *arg)
{
    struct caller *c = arg;
    uint64_t rng = cc_subseed(cc_seed_value, c->id, 3);
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch");
        return NULL;
    }
    unsigned async_sent = 0;
    for (unsigned n = 0; n < c->ops && !cc_failed(); n++) {
        uint64_t r = tu_rand(&rng);
        unsigned k = (unsigned)(r % KEYS_PER_CALLER);
        uint32_t tag = (uint32_t)(n + 1);
        if (!caller_op(c, b, k, tag, (unsigned)((r >> 32) % 8), &async_sent)) {
            break;
        }
    }
    htkv_batch_destroy(b);
    return NULL;
}

/* Every key of every caller holds what it wrote last; every callback ran once, with rc 0. */
static void
check_contents(htkv_db *db, struct caller *cs)
{
    for (unsigned i = 0; i < CALLERS; i++) {
        assert_int_equal(atomic_load(&cs[i].async_bad), 0);
        for (unsigned k = 0; k < KEYS_PER_CALLER; k++) {
            char key[32];
            size_t kl = key_of(i, k, key);
            uint32_t got = 0;
            size_t vlen = 0;
            int rc = htkv_get(db, key, kl, &got, sizeof(got), &vlen);
            if (cs[i].last[k] == 0) {
                assert_int_equal(rc, HTKV_ENOTFOUND);
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(vlen, sizeof(got));
                assert_int_equal(got, cs[i].last[k]);
            }
        }
    }
}

static void
run_mode(const struct cc_mode *m, unsigned ops)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("one-cpu");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.shard_count = 8;
    htkv_db *db = cc_open(&cfg);
    assert_int_equal(tu_stats(db).cpus, 1);
    static struct caller cs[CALLERS];
    pthread_t th[CALLERS];
    for (unsigned i = 0; i < CALLERS; i++) {
        memset(&cs[i], 0, sizeof(cs[i]));
        cs[i].db = db;
        cs[i].id = i;
        cs[i].ops = ops;
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &cs[i]), 0);
    }
    for (unsigned i = 0; i < CALLERS; i++) {
        pthread_join(th[i], NULL);
    }
    cc_assert_ok();
    check_contents(db, cs);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: see the file header. Method: pin to one CPU, run each mode, restore the mask. */
static void
test_one_cpu_many_threads(void **state)
{
    (void)state;
    (void)cc_seed("test_one_cpu_many_threads");
    cpu_set_t saved;
    tu_pin_one_cpu(&saved);
    static const struct cc_mode never = { 4, HTKV_IO_AUTO, HTKV_SYNC_NEVER };
    static const struct cc_mode interval = { 4, HTKV_IO_AUTO, HTKV_SYNC_INTERVAL };
    static const struct cc_mode always = { 4, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS };
    run_mode(&never, cc_ops(2000));
    run_mode(&interval, cc_ops(2000));
    run_mode(&always, cc_ops(150));
    assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_cpu_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
