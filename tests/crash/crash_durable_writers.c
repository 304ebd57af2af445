/*
 * crash_durable_writers.c - acknowledged writes of many concurrent writers survive SIGKILL.
 *
 * A child process opens a store in HTKV_SYNC_ALWAYS, inline (one shard: the 16 callers share
 * put groups) or with two workers, and runs 16 writer threads doing puts of unique keys; after each
 * put returns, the thread reports the key through a pipe. The parent kills the child with SIGKILL
 * at a random moment, reopens the store inline, and checks that every reported key holds its value.
 * Each thread writes its keys in order and waits for each put, so the keys present must also form a
 * prefix of the thread's sequence: a hole would be an acknowledged write lost behind a later one.
 */
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/concurrency/cc_util.h"

#define WRITERS 16
#define MAX_KEYS_PER_WRITER (1u << 20)

struct report {
    uint32_t thread;
    uint32_t idx;
};
_Static_assert(sizeof(struct report) == 8, "a report is one atomic pipe write");

static size_t
ckey(unsigned t, unsigned i, char *k)
{
    return (size_t)snprintf(k, 24, "t%02u-%07u", t, i);
}

static uint32_t
ckey_id(unsigned t, unsigned i)
{
    return t * MAX_KEYS_PER_WRITER + i;
}

static size_t
cval(unsigned t, unsigned i, unsigned char *v)
{
    return cc_value(((uint64_t)t << 32) | i, ckey_id(t, i), 1, v);
}

/* ---- the child ------------------------------------------------------------------------------ */

struct child_writer {
    htkv_db *db;
    unsigned id;
    int fd;
};

static void *
child_writer_main(void *arg)
{
    struct child_writer *w = arg;
    for (unsigned i = 0; i < MAX_KEYS_PER_WRITER; i++) {
        char k[24];
        unsigned char v[CC_VAL_MAX];
        size_t kl = ckey(w->id, i, k), vl = cval(w->id, i, v);
        int rc = htkv_put(w->db, k, kl, v, vl);
        if (rc != 0) {
            fprintf(stderr, "child: put %s: %s\n", k, htkv_strerror(rc));
            _exit(3);
        }
        struct report r = { w->id, i };
        /* 8 bytes <= PIPE_BUF: the write is atomic, reports never interleave. */
        if (write(w->fd, &r, sizeof(r)) != (ssize_t)sizeof(r)) {
            _exit(4);
        }
    }
    return NULL;
}

static _Noreturn void
child_main(const char *dir, unsigned workers, int backend, int fd)
{
    tu_assert_hook_reset(); /* an engine assertion aborts the child: the parent sees it */
    htkv_config cfg;
    struct cc_mode m = { workers, backend, HTKV_SYNC_ALWAYS };
    cc_config(&cfg, dir, &m);
    if (workers == 0) {
        cfg.shard_count = 1; /* every caller in the same put groups */
    }
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "child: open: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
        _exit(2);
    }
    struct child_writer w[WRITERS];
    pthread_t th[WRITERS];
    for (unsigned t = 0; t < WRITERS; t++) {
        w[t] = (struct child_writer){ db, t, fd };
        if (pthread_create(&th[t], NULL, child_writer_main, &w[t]) != 0) {
            _exit(5);
        }
    }
    for (unsigned t = 0; t < WRITERS; t++) {
        pthread_join(th[t], NULL);
    }
    _exit(6); /* 2^20 keys each: never reached before the kill */
}

/* ---- the parent ----------------------------------------------------------------------------- */

/* Read reports until @p deadline_ns (0 = until end of file); updates the reported counts. */
static void
read_reports(int fd, uint64_t deadline_ns, unsigned *reported, unsigned char *carry, size_t *ncarry)
{
    for (;;) {
        int timeout = -1;
        if (deadline_ns != 0) {
            uint64_t now = cc_now_ns();
            if (now >= deadline_ns) {
                return;
            }
            timeout = (int)((deadline_ns - now) / 1000000) + 1;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int n = poll(&p, 1, timeout);
        if (n == 0) {
            continue;
        }
        assert_true(n > 0 || errno == EINTR);
        unsigned char buf[4096];
        memcpy(buf, carry, *ncarry);
        ssize_t got = read(fd, buf + *ncarry, sizeof(buf) - *ncarry);
        if (got == 0) {
            return; /* the child is gone and everything it reported was read */
        }
        if (got < 0) {
            assert_true(errno == EINTR);
            continue;
        }
        size_t len = *ncarry + (size_t)got, off = 0;
        for (; off + sizeof(struct report) <= len; off += sizeof(struct report)) {
            struct report r;
            memcpy(&r, buf + off, sizeof(r));
            assert_true(r.thread < WRITERS);
            /* Each thread reports its keys in order, one by one. */
            assert_int_equal(r.idx, reported[r.thread]);
            reported[r.thread]++;
        }
        *ncarry = len - off;
        memcpy(carry, buf + off, *ncarry);
    }
}

/* One cycle: fresh store, child writes, SIGKILL after @p delay_ms, reopen and check. */
static unsigned
crash_cycle(unsigned workers, int backend, unsigned delay_ms, unsigned cycle)
{
    char *dir = tu_tmpdir("crashw");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_main(dir, workers, backend, fds[1]);
    }
    close(fds[1]);
    unsigned reported[WRITERS] = { 0 };
    unsigned char carry[sizeof(struct report)];
    size_t ncarry = 0;
    read_reports(fds[0], cc_now_ns() + (uint64_t)delay_ms * 1000000ull, reported, carry, &ncarry);
    assert_int_equal(kill(pid, SIGKILL), 0);
    read_reports(fds[0], 0, reported, carry, &ncarry);
    assert_int_equal(ncarry, 0);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
        fprintf(stderr, "cycle %u: the child ended on its own (status 0x%x) before the kill\n",
                cycle, status);
        fail();
    }

    /* Reopen inline: every reported key is there; present keys form a prefix per thread. */
    htkv_config cfg;
    struct cc_mode m = { 0, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS };
    cc_config(&cfg, dir, &m);
    htkv_db *db = tu_open(&cfg);
    unsigned total = 0, extra = 0;
    for (unsigned t = 0; t < WRITERS; t++) {
        unsigned i = 0;
        for (;; i++) {
            char k[24];
            unsigned char v[CC_VAL_MAX], got[CC_VAL_MAX];
            size_t kl = ckey(t, i, k), vl = cval(t, i, v), n = 0;
            int rc = htkv_get(db, k, kl, got, sizeof(got), &n);
            if (rc == HTKV_ENOTFOUND) {
                break;
            }
            if (rc != 0 || n != vl || memcmp(got, v, vl) != 0) {
                fprintf(stderr, "cycle %u: %s: rc %d (%s), len %zu want %zu\n", cycle, k, rc,
                        htkv_strerror(rc), n, vl);
                fail();
            }
        }
        if (i < reported[t]) {
            fprintf(stderr,
                    "cycle %u: thread %u: key %u was acknowledged but is lost (%u keys "
                    "reported)\n",
                    cycle, t, i, reported[t]);
            fail();
        }
        /* One put may have returned without its report, one more may have been applied. */
        assert_true(i <= reported[t] + 2);
        extra += i - reported[t];
        for (unsigned j = i + 1; j < i + 64; j++) {
            char k[24];
            size_t kl = ckey(t, j, k);
            if (htkv_contains(db, k, kl) != 0) {
                fprintf(stderr, "cycle %u: thread %u: key %u present after missing key %u\n", cycle,
                        t, j, i);
                fail();
            }
        }
        total += reported[t];
    }
    /* The recovered store takes writes again and keeps them. */
    assert_int_equal(htkv_put(db, "after-crash", 11, "ok", 2), 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "after-crash", 11, "ok", 2);
    assert_int_equal(htkv_close(db), 0);
    fprintf(stderr,
            "  cycle %2u (%s): killed after %3u ms, %5u acknowledged puts survived (+%u "
            "unreported)\n",
            cycle, workers == 0 ? "inline" : cc_backend_name(backend), delay_ms, total, extra);
    tu_rmrf(dir);
    free(dir);
    return total;
}

/* Goal: in HTKV_SYNC_ALWAYS, inline (put groups) and with two workers, every put that returned
 * to one of 16 concurrent writers survives a SIGKILL of the process, and nothing after a lost
 * write is present. Method: fork a writer child reporting each acknowledged key through a pipe,
 * SIGKILL it after a random 50-300 ms, reopen inline and check every reported key and the prefix
 * property; 6 cycles inline, 4 with workers on io_uring and 2 on the sync backend, each on a
 * fresh store. */
static void
test_crash_durable_writers_survive_sigkill(void **state)
{
    (void)state;
    uint64_t rng = cc_seed("test_crash_durable_writers_survive_sigkill");
    unsigned total = 0, cycle = 0;
    for (unsigned c = 0; c < 12; c++, cycle++) {
        unsigned workers = c % 2 == 0 ? 0 : 2;
        int backend = c < 9 ? HTKV_IO_URING : HTKV_IO_SYNC;
        if (backend == HTKV_IO_URING && !cc_uring_available()) {
            backend = HTKV_IO_SYNC;
        }
        unsigned delay = 50 + (unsigned)(tu_rand(&rng) % 251);
        total += crash_cycle(workers, backend, delay, cycle);
    }
    /* The kills must have landed while writes were going on, not before the first one. */
    assert_true(total > 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_durable_writers_survive_sigkill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
