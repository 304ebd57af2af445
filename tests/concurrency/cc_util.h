/*
 * cc_util.h - helpers shared by the concurrency tests (tests/concurrency/test_*.c).
 *
 * Design. cmocka's assertions long-jump to the test's frame, so they may only run on the thread
 * that runs the test. Worker threads of a test report a broken expectation with CC_CHECK(), which
 * prints it with the seed and the mode and raises a process-wide flag; the test thread asserts the
 * flag after joining its threads (cc_assert_ok()). For the same reason these tests never install
 * tu_config()'s assertion hook: an engine assertion on a worker thread aborts the process, with
 * the engine's message, instead of long-jumping from the wrong thread.
 *
 * Every store is configured explicitly (cc_config()): the mode matrix of a test does not depend
 * on HTKV_TEST_WORKERS / HTKV_TEST_IO_BACKEND. Values are self-describing (cc_value()): a reader
 * that gets bytes can tell which write produced them and whether they are intact.
 *
 * Operation counts scale down under the sanitizers (several times slower) and can be scaled with
 * HTKV_CC_SCALE (a factor, e.g. 10 for a soak run).
 */
#ifndef HTKV_TESTS_CC_UTIL_H
#define HTKV_TESTS_CC_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "tests/support/testutil.h"

/* Fraction of the operations run under a sanitizer (TSan: ~5-10x slower, ASan: ~3x plus
 * DASSERTs in its Debug build). */
#if defined(__SANITIZE_THREAD__)
#define CC_SANITIZER_SCALE 0.5
#elif defined(__SANITIZE_ADDRESS__)
#define CC_SANITIZER_SCALE 0.25
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CC_SANITIZER_SCALE 0.5
#elif __has_feature(address_sanitizer)
#define CC_SANITIZER_SCALE 0.25
#endif
#endif
#ifndef CC_SANITIZER_SCALE
#define CC_SANITIZER_SCALE 1.0
#endif

/* One execution mode of a store. */
struct cc_mode {
    unsigned workers; /* 0 = inline */
    int backend;      /* enum htkv_io_backend */
    int sync;         /* enum htkv_sync_mode */
};

static _Atomic int cc_failures;
static uint64_t cc_seed_value;
static char cc_mode_text[96];

static inline const char *
cc_sync_name(int sync)
{
    return sync == HTKV_SYNC_ALWAYS ? "always" : sync == HTKV_SYNC_INTERVAL ? "interval" : "never";
}

static inline const char *
cc_backend_name(int backend)
{
    return backend == HTKV_IO_URING ? "uring" : backend == HTKV_IO_SYNC ? "sync" : "auto";
}

static inline uint64_t
cc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Watchdog: a call that never returns (a lost wake-up, a request nobody completes) would otherwise
 * show only as the CTest timeout. The watchdog thread aborts the process with the seed and mode
 * when the armed deadline passes.
 */
static _Atomic uint64_t cc_watchdog_deadline; /* 0 = disarmed */
static _Atomic int cc_watchdog_started;

static inline void *
cc_watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = { 0, 100 * 1000000L };
        nanosleep(&ts, NULL);
        uint64_t d = atomic_load(&cc_watchdog_deadline);
        if (d != 0 && cc_now_ns() > d) {
            fprintf(stderr, "WATCHDOG: no progress for too long (HTKV_SEED=%llu, %s): hung\n",
                    (unsigned long long)cc_seed_value, cc_mode_text);
            abort();
        }
    }
    return NULL;
}

/* Abort the process unless cc_watchdog_arm() is called again within @p seconds. */
static inline void
cc_watchdog_arm(unsigned seconds)
{
    pthread_t th;
    atomic_store(&cc_watchdog_deadline, cc_now_ns() + (uint64_t)seconds * 1000000000ull);
    if (atomic_exchange(&cc_watchdog_started, 1) == 0) {
        if (pthread_create(&th, NULL, cc_watchdog_main, NULL) == 0) {
            pthread_detach(th);
        }
    }
}

/*
 * Remember @p m as the mode that failure messages name, and give the run in that mode 60 s
 * (release: ~3 s at most; sanitizers: 120 s) before the watchdog calls it hung. Every mode
 * re-arms it, so a test stays under CTest's 300 s only when its modes are quick.
 */
static inline void
cc_set_mode(const struct cc_mode *m)
{
    snprintf(cc_mode_text, sizeof(cc_mode_text), "workers=%u io=%s sync=%s", m->workers,
             cc_backend_name(m->backend), cc_sync_name(m->sync));
    cc_watchdog_arm(CC_SANITIZER_SCALE < 1.0 ? 120 : 60);
}

static inline void
cc_sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Record a broken expectation (any thread). */
static inline void __attribute__((format(printf, 3, 4)))
cc_fail_at(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d: FAILED (HTKV_SEED=%llu, %s): %s\n", file, line,
            (unsigned long long)cc_seed_value, cc_mode_text, msg);
    atomic_fetch_add(&cc_failures, 1);
}

/* In a function returning bool: record the failure and return false. */
#define CC_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cc_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                           \
            return false;                                                                          \
        }                                                                                          \
    } while (0)

static inline bool
cc_failed(void)
{
    return atomic_load_explicit(&cc_failures, memory_order_relaxed) != 0;
}

/* Test thread only: fail the running cmocka test if any thread recorded a failure. */
static inline void
cc_assert_ok(void)
{
    assert_int_equal(atomic_load(&cc_failures), 0);
}

/* Start a test: its seed (printed by tu_seed), kept for failure messages. */
static inline uint64_t
cc_seed(const char *test)
{
    cc_seed_value = tu_seed(test);
    atomic_store(&cc_failures, 0); /* each cmocka test starts clean */
    return cc_seed_value;
}

/* Seed of one thread (or one round) derived from the test's seed. */
static inline uint64_t
cc_subseed(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed ^ ((a + 1) * 0x9E3779B97F4A7C15ull) ^ ((b + 1) * 0xC2B2AE3D27D4EB4Full);
    return s != 0 ? s : 1;
}

/* @p n operations, scaled for sanitizers and by HTKV_CC_SCALE. Never below 1. */
static inline unsigned
cc_ops(unsigned n)
{
    double f = CC_SANITIZER_SCALE;
    const char *s = getenv("HTKV_CC_SCALE");
    if (s != NULL && s[0] != '\0') {
        f *= strtod(s, NULL);
    }
    double v = (double)n * f;
    return v < 1.0 ? 1u : (unsigned)v;
}

static _Atomic int cc_log_errors;

/* Log sink: errors and warnings are printed (they explain failures) and counted. */
static inline void
cc_log(int level, const char *msg, void *ctx)
{
    (void)ctx;
    if (level <= HTKV_LOG_WARN) {
        atomic_fetch_add(&cc_log_errors, 1);
        fprintf(stderr, "htkv log (%s): %s\n", level == HTKV_LOG_ERROR ? "error" : "warning", msg);
    }
}

/* Configuration of a test store in @p dir for mode @p m: 4 shards, small segments. */
static inline void
cc_config(htkv_config *cfg, const char *dir, const struct cc_mode *m)
{
    htkv_config_init(cfg);
    cfg->data_dir = dir;
    cfg->worker_threads = m->workers;
    cfg->io_backend = m->backend;
    cfg->sync_mode = m->sync;
    cfg->shard_count = 4;
    cfg->fsync_interval_ms = 5;           /* INTERVAL syncs run while writers write */
    cfg->max_segment_bytes = 256u * 1024; /* rotations happen under concurrent writes */
    cfg->log_fn = cc_log;
}

/* Open or fail the test (test thread only); checks that the configured I/O backend runs. */
static inline htkv_db *
cc_open(const htkv_config *cfg)
{
    htkv_db *db = tu_open(cfg);
    struct htkv_stats st = tu_stats(db);
    assert_int_equal(st.worker_threads, cfg->worker_threads);
    if (cfg->worker_threads == 0) {
        assert_string_equal(st.io_backend, "inline");
    } else if (cfg->io_backend == HTKV_IO_URING) {
        assert_string_equal(st.io_backend, "io_uring");
    } else if (cfg->io_backend == HTKV_IO_SYNC) {
        assert_string_equal(st.io_backend, "sync");
    }
    return db;
}

/* Whether io_uring can be set up here (a container may refuse it); probed once. */
static inline bool
cc_uring_available(void)
{
    static int known = -1;
    if (known < 0) {
        char *dir = tu_tmpdir("cc-probe");
        htkv_config cfg;
        struct cc_mode m = { 1, HTKV_IO_URING, HTKV_SYNC_NEVER };
        cc_config(&cfg, dir, &m);
        htkv_db *db = NULL;
        int rc = htkv_open(&cfg, &db);
        known = rc == 0;
        if (rc == 0) {
            assert_int_equal(htkv_close(db), 0);
        } else {
            fprintf(stderr, "io_uring unavailable (%s): io_uring modes are skipped\n",
                    htkv_strerror(rc));
        }
        tu_rmrf(dir);
        free(dir);
    }
    return known == 1;
}

/* Start @p n threads running @p fn(args + i * size) and join them. */
static inline void
cc_run_threads(unsigned n, void *(*fn)(void *), void *args, size_t size)
{
    pthread_t *th = calloc(n, sizeof(*th));
    assert_non_null(th);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, fn, (char *)args + i * size), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    free(th);
}

/* ---- self-describing values ----------------------------------------------------------------- */

/* Header of a value at least CC_VAL_HDR bytes long: tag (8 B) and key id (4 B). */
#define CC_VAL_HDR 12u
/* Largest value cc_value() makes: @p min_len + 299. */
#define CC_VAL_MAX (CC_VAL_HDR + 300u)

static inline uint64_t
cc_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

/*
 * The value that write @p tag stores under key @p key_id: min_len..min_len+299 bytes (length
 * from the tag), starting with tag and key id when it is long enough, then filler from both.
 * Returns the length. @p buf holds CC_VAL_MAX bytes.
 */
static inline size_t
cc_value(uint64_t tag, uint32_t key_id, size_t min_len, unsigned char *buf)
{
    size_t len = min_len + (size_t)(cc_mix(tag ^ ((uint64_t)key_id << 40)) % 300u);
    if (len >= CC_VAL_HDR) {
        memcpy(buf, &tag, 8);
        memcpy(buf + 8, &key_id, 4);
        tu_fill(buf + CC_VAL_HDR, len - CC_VAL_HDR, tag ^ key_id);
    } else {
        tu_fill(buf, len, tag ^ key_id);
    }
    return len;
}

/* Decode a value made by cc_value(tag, key_id, CC_VAL_HDR, ...): true and *tag when intact. */
static inline bool
cc_value_decode(const unsigned char *val, size_t len, uint32_t key_id, uint64_t *tag)
{
    unsigned char want[CC_VAL_MAX];
    if (len < CC_VAL_HDR) {
        return false;
    }
    uint64_t t;
    memcpy(&t, val, 8);
    size_t n = cc_value(t, key_id, CC_VAL_HDR, want);
    if (n != len || memcmp(want, val, len) != 0) {
        return false;
    }
    *tag = t;
    return true;
}

/* ---- waiting for one asynchronous completion ------------------------------------------------ */

struct cc_done {
    _Atomic int calls; /* how many times the callback ran */
    int rc;
    uint64_t version;
    pthread_t thread; /* thread that ran the callback */
};

static inline void
cc_done_cb(int rc, uint64_t version, void *ctx)
{
    struct cc_done *d = ctx;
    d->rc = rc;
    d->version = version;
    d->thread = pthread_self();
    /* Last touch of *d: the waiter may return (and free d) right after this store. */
    atomic_fetch_add_explicit(&d->calls, 1, memory_order_release);
}

/* Wait up to @p ms for the callback; true when it ran. */
static inline bool
cc_done_wait(struct cc_done *d, unsigned ms)
{
    uint64_t end = cc_now_ns() + (uint64_t)ms * 1000000ull;
    while (atomic_load_explicit(&d->calls, memory_order_acquire) == 0) {
        if (cc_now_ns() > end) {
            return false;
        }
        sched_yield();
    }
    return true;
}

#endif
