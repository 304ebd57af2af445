/*
 * crashloop.c - the kill loop of the crash tests (crashloop.h).
 */
#include "tests/support/crashloop.h"

#include "tests/support/testutil.h"
#include "uring/ur_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int
tu_crash_cycles(int dflt)
{
    const char *env = getenv("HTKV_CRASH_CYCLES");
    return env != NULL && atoi(env) > 0 ? atoi(env) : dflt;
}

/* Kill at an I/O point: the child SIGKILLs itself right after its sync_kill_at-th successful
 * fdatasync/fsync (segment, manifest, directory, snapshot file), on whichever thread made it. */
static _Atomic uint64_t syncs_seen, sync_kill_at;

static void
kill_after_sync(int fd)
{
    (void)fd;
    if (atomic_fetch_add(&syncs_seen, 1) + 1 == atomic_load(&sync_kill_at)) {
        raise(SIGKILL);
    }
}

void
tu_kill_cycle(const struct tu_loop *l, int cycle, uint64_t first_seq, uint64_t kill_after_ms,
              uint64_t kill_at_sync)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        tu_assert_hook_reset(); /* an engine assertion aborts the child: the parent sees it */
        if (kill_at_sync > 0) {
            atomic_store(&sync_kill_at, kill_at_sync);
            htkv_fault_sync_hook = kill_after_sync;
        }
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        alarm(30);                              /* nor run away if the parent stops reading */
        l->child(l->ctx, first_seq, fds[1]);
        _exit(7);
    }
    close(fds[1]);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    uint64_t kill_at = now_ms() + kill_after_ms;
    unsigned char rb[TU_REPORT_MAX];
    assert_true(l->report_bytes <= sizeof(rb));
    size_t have = 0;
    bool killed = false;
    for (;;) {
        uint64_t t = now_ms();
        if (!killed && t >= kill_at) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            killed = true;
            assert_int_equal(fcntl(fds[0], F_SETFL, 0), 0); /* drain until EOF */
        }
        if (!killed) {
            struct pollfd p = { .fd = fds[0], .events = POLLIN };
            (void)poll(&p, 1, (int)(kill_at - t));
        }
        ssize_t got = read(fds[0], rb + have, l->report_bytes - have);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        assert_true(got >= 0);
        if (got == 0) {
            break;
        }
        have += (size_t)got;
        if (have == l->report_bytes) {
            if (!l->take(l->ctx, rb)) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                fail_msg("seed %llu, %s, cycle %d: bad report", (unsigned long long)l->seed,
                         l->name, cycle);
            }
            have = 0;
        }
    }
    close(fds[0]);
    assert_int_equal(have, 0); /* reports are written whole */
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        fail_msg("seed %llu, %s, cycle %d: child ended by itself (status %#x)",
                 (unsigned long long)l->seed, l->name, cycle, status);
    }
}

void
tu_cycle_kills(uint64_t *rng, int cycle, uint64_t *after_ms, uint64_t *at_sync)
{
    const char *io_kills = getenv("HTKV_CRASH_IO_KILLS");
    bool at_io = io_kills == NULL || strcmp(io_kills, "0") != 0;
    *at_sync = at_io && cycle % 2 == 1 ? 1 + tu_rand(rng) % 64 : 0;
    *after_ms = 20 + tu_rand(rng) % 181;
}
