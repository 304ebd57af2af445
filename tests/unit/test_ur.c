/*
 * test_ur.c - the worker I/O layer (uring/ur.c) on both backends (io_uring, plain system calls):
 * a write, an fdatasync through the layer, and a read of the bytes back; completions carry their
 * user data; a wake-up from another thread and a timeout end a wait; injected sync faults
 * (uring/ur_fault.h) replace a completion's result; a posted result (htkv_ur_post()) is
 * delivered by the next wait like a completion, within the same bound. The io_uring half is
 * skipped where the kernel refuses a ring (seccomp, memlock).
 */
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "uring/ur.h"
#include "uring/ur_fault.h"

#define MAX_DONE 64

struct done_log {
    unsigned n;
    uint64_t user_data[MAX_DONE];
    int res[MAX_DONE];
};

static void
log_done(void *ctx, uint64_t user_data, int res)
{
    struct done_log *d = ctx;
    assert_true(d->n < MAX_DONE);
    d->user_data[d->n] = user_data;
    d->res[d->n] = res;
    d->n++;
}

/* Wait until @p want completions have been delivered in all (5 s at most). */
static void
wait_for(struct ur *u, struct done_log *d, unsigned want)
{
    for (int i = 0; i < 500 && d->n < want; i++) {
        int rc = htkv_ur_wait(u, 10, log_done, d);
        assert_true(rc >= 0);
    }
    assert_int_equal(d->n, want);
    assert_int_equal(u->inflight, 0);
}

/* The res of the completion of @p user_data (fails when there is none). */
static int
res_of(const struct done_log *d, uint64_t user_data)
{
    for (unsigned i = 0; i < d->n; i++) {
        if (d->user_data[i] == user_data) {
            return d->res[i];
        }
    }
    fail_msg("no completion for user data %llu", (unsigned long long)user_data);
    return 0;
}

/* 1 when the backend is up, 0 when the kernel refuses it (io_uring only). */
static int
init_backend(struct ur *u, int backend)
{
    int rc = htkv_ur_init(u, backend, 8);
    if (rc != 0 && backend == UR_URING && (rc == -EPERM || rc == -ENOSYS || rc == -ENOMEM)) {
        print_message("io_uring refused (%d): that backend is not tested here\n", rc);
        return 0;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(u->backend, backend);
    assert_string_equal(htkv_ur_backend_name(u), backend == UR_URING ? "io_uring" : "sync");
    return 1;
}

static void
round_trip(int backend)
{
    static struct ur u; /* large (completion arrays): not on the stack */
    if (!init_backend(&u, backend)) {
        return;
    }
    char *dir = tu_tmpdir(backend == UR_URING ? "ur-rt-uring" : "ur-rt-sync");
    char path[4096];
    snprintf(path, sizeof(path), "%s/data", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    unsigned char out[8192], in[8192];
    struct done_log d = { 0 };
    for (int round = 0; round < 3; round++) {
        tu_fill(out, sizeof(out), (uint64_t)round);
        assert_int_equal(pwrite(fd, out, sizeof(out), (off_t)round * 8192), (ssize_t)sizeof(out));
        assert_int_equal(htkv_ur_fsync(&u, fd, 100 + (uint64_t)round), 0);
        assert_int_equal(htkv_ur_fsync(&u, fd, 200 + (uint64_t)round), 0);
        assert_int_equal(u.inflight, 2);
        wait_for(&u, &d, 2 * (unsigned)(round + 1));
        assert_int_equal(res_of(&d, 100 + (uint64_t)round), 0);
        assert_int_equal(res_of(&d, 200 + (uint64_t)round), 0);
        assert_int_equal(pread(fd, in, sizeof(in), (off_t)round * 8192), (ssize_t)sizeof(in));
        assert_memory_equal(in, out, sizeof(in));
    }
    /* An fdatasync of a bad descriptor completes with its error. */
    assert_int_equal(htkv_ur_fsync(&u, -1, 7), 0);
    wait_for(&u, &d, 7);
    assert_int_equal(res_of(&d, 7), -EBADF);
    close(fd);
    htkv_ur_fini(&u);
    tu_rmrf(dir);
    free(dir);
}

static void
test_ur_round_trip_sync(void **state)
{
    (void)state;
    round_trip(UR_SYNC);
}

static void
test_ur_round_trip_uring(void **state)
{
    (void)state;
    round_trip(UR_URING);
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *
wake_later(void *arg)
{
    usleep(50 * 1000);
    htkv_ur_wake(arg);
    return NULL;
}

static void
wake_and_timeout(int backend)
{
    static struct ur u;
    if (!init_backend(&u, backend)) {
        return;
    }
    struct done_log d = { 0 };
    /* Nothing in flight: a poll returns at once, a timed wait after its timeout. */
    assert_int_equal(htkv_ur_wait(&u, 0, log_done, &d), 0);
    double t0 = now_ms();
    assert_int_equal(htkv_ur_wait(&u, 30, log_done, &d), 0);
    assert_true(now_ms() - t0 >= 20);
    /* A wake-up from another thread ends a wait without a timeout. */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wake_later, &u), 0);
    t0 = now_ms();
    assert_int_equal(htkv_ur_wait(&u, -1, log_done, &d), 0);
    assert_true(now_ms() - t0 < 5000);
    pthread_join(t, NULL);
    /* A wake-up before the wait: the wait returns at once. */
    htkv_ur_wake(&u);
    t0 = now_ms();
    for (int i = 0; i < 3 && now_ms() - t0 < 5000; i++) {
        assert_int_equal(htkv_ur_wait(&u, 5000, log_done, &d), 0);
        if (now_ms() - t0 < 1000) {
            break;
        }
    }
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(d.n, 0);
    htkv_ur_fini(&u);
}

static void
test_ur_wake_and_timeout_sync(void **state)
{
    (void)state;
    wake_and_timeout(UR_SYNC);
}

static void
test_ur_wake_and_timeout_uring(void **state)
{
    (void)state;
    wake_and_timeout(UR_URING);
}

/* Make directory @p name and in it a file of one byte, "data" (its path into @p path, 4096
 * bytes); returns the file open read-write. */
static int
data_file(const char *name, char **dir, char *path)
{
    *dir = tu_tmpdir(name);
    snprintf(path, 4096, "%s/data", *dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "x", 1, 0), 1);
    return fd;
}

static void
injected_sync_faults(int backend)
{
    static struct ur u;
    if (!init_backend(&u, backend)) {
        return;
    }
    char *dir, path[4096];
    int fd = data_file(backend == UR_URING ? "ur-fault-uring" : "ur-fault-sync", &dir, path);
    struct done_log d = { 0 };

    /* The 2nd sync fails once with EIO: the others succeed, in the same wait. */
    htkv_fault_arm(HTKV_FAULT_SYNC, 2, EIO, false);
    uint64_t injected = htkv_fault_injected();
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(htkv_ur_fsync(&u, fd, i), 0);
    }
    wait_for(&u, &d, 3);
    assert_int_equal(res_of(&d, 1), 0);
    assert_int_equal(res_of(&d, 2), -EIO);
    assert_int_equal(res_of(&d, 3), 0);
    assert_int_equal(htkv_fault_injected(), injected + 1);
    assert_int_equal(htkv_fault_calls(HTKV_FAULT_SYNC), 3);

    /* Sticky from the 1st: every sync fails with ENOSPC until disarmed. */
    htkv_fault_arm(HTKV_FAULT_SYNC, 1, ENOSPC, true);
    for (uint64_t i = 4; i <= 5; i++) {
        assert_int_equal(htkv_ur_fsync(&u, fd, i), 0);
    }
    wait_for(&u, &d, 5);
    assert_int_equal(res_of(&d, 4), -ENOSPC);
    assert_int_equal(res_of(&d, 5), -ENOSPC);
    htkv_fault_disarm();
    assert_int_equal(htkv_ur_fsync(&u, fd, 6), 0);
    wait_for(&u, &d, 6);
    assert_int_equal(res_of(&d, 6), 0);
    close(fd);
    htkv_ur_fini(&u);
    tu_rmrf(dir);
    free(dir);
}

static void
test_ur_injected_sync_faults_sync(void **state)
{
    (void)state;
    injected_sync_faults(UR_SYNC);
}

static void
test_ur_injected_sync_faults_uring(void **state)
{
    (void)state;
    injected_sync_faults(UR_URING);
}

/* Count completions, each an EIO (any order). */
static void
count_eio_any(void *ctx, uint64_t user_data, int res)
{
    (void)user_data;
    assert_int_equal(res, -EIO);
    (*(unsigned *)ctx)++;
}

static void
posted_results(int backend)
{
    static struct ur u;
    if (!init_backend(&u, backend)) {
        return;
    }
    char *dir, path[4096];
    int fd = data_file(backend == UR_URING ? "ur-post-uring" : "ur-post-sync", &dir, path);
    struct done_log d = { 0 };
    /* A posted result is delivered as it was posted, beside queued fsyncs; it is no fsync: an
     * armed fault is left for the next one. */
    htkv_fault_arm(HTKV_FAULT_SYNC, 1, EIO, false);
    assert_int_equal(htkv_ur_post(&u, 1, 0), 0);
    assert_int_equal(htkv_ur_post(&u, 2, -ENOSPC), 0);
    assert_int_equal(u.inflight, 2);
    assert_int_equal(htkv_ur_fsync(&u, fd, 3), 0);
    assert_int_equal(htkv_ur_fsync(&u, fd, 4), 0);
    wait_for(&u, &d, 4);
    assert_int_equal(res_of(&d, 1), 0);
    assert_int_equal(res_of(&d, 2), -ENOSPC);
    assert_int_equal(res_of(&d, 3), -EIO);
    assert_int_equal(res_of(&d, 4), 0);
    htkv_fault_disarm();
    /* Within the same bound as fsyncs. */
    for (unsigned i = 0; i < UR_MAX_INFLIGHT; i++) {
        assert_int_equal(htkv_ur_post(&u, 100 + i, -EIO), 0);
    }
    assert_int_equal(htkv_ur_post(&u, 99, 0), -EBUSY);
    assert_int_equal(htkv_ur_fsync(&u, fd, 98), -EBUSY);
    unsigned n = 0;
    for (int i = 0; i < 500 && u.inflight > 0; i++) {
        assert_true(htkv_ur_wait(&u, 10, count_eio_any, &n) >= 0);
    }
    assert_int_equal(n, UR_MAX_INFLIGHT);
    close(fd);
    htkv_ur_fini(&u);
    tu_rmrf(dir);
    free(dir);
}

static void
test_ur_posted_results_sync(void **state)
{
    (void)state;
    posted_results(UR_SYNC);
}

static void
test_ur_posted_results_uring(void **state)
{
    (void)state;
    posted_results(UR_URING);
}

static void
count_eio(void *ctx, uint64_t user_data, int res)
{
    unsigned *n = ctx;
    assert_int_equal(user_data, *n); /* in submission order */
    assert_int_equal(res, -EIO);
    (*n)++;
}

static void
test_ur_sync_backend_bounds_inflight(void **state)
{
    (void)state;
    static struct ur u;
    assert_int_equal(htkv_ur_init(&u, UR_SYNC, 8), 0);
    /* Injected results: no real fdatasync for each of the many calls. */
    htkv_fault_arm(HTKV_FAULT_SYNC, 1, EIO, true);
    for (unsigned i = 0; i < UR_MAX_INFLIGHT; i++) {
        assert_int_equal(htkv_ur_fsync(&u, -1, i), 0);
    }
    assert_int_equal(htkv_ur_fsync(&u, -1, UR_MAX_INFLIGHT), -EBUSY);
    htkv_fault_disarm();
    unsigned n = 0;
    assert_int_equal(htkv_ur_wait(&u, 0, count_eio, &n), (int)UR_MAX_INFLIGHT);
    assert_int_equal(n, UR_MAX_INFLIGHT);
    assert_int_equal(u.inflight, 0);
    htkv_ur_fini(&u);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ur_round_trip_sync),
        cmocka_unit_test(test_ur_round_trip_uring),
        cmocka_unit_test(test_ur_wake_and_timeout_sync),
        cmocka_unit_test(test_ur_wake_and_timeout_uring),
        cmocka_unit_test(test_ur_injected_sync_faults_sync),
        cmocka_unit_test(test_ur_injected_sync_faults_uring),
        cmocka_unit_test(test_ur_sync_backend_bounds_inflight),
        cmocka_unit_test(test_ur_posted_results_sync),
        cmocka_unit_test(test_ur_posted_results_uring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
