/*
 * wake_bench.c - what waking synchronous callers costs on this machine, without a store: the
 * floor under group commit with one caller thread per write (ARCHITECTURE.md, "Put groups").
 *
 * Not built by default. Build and run:
 *   cc -std=c11 -O2 perf/wake_bench.c -lpthread -o build/wake_bench
 *   build/wake_bench [callers]        # default 15: the followers of a group of 16
 *
 * Three figures, each the median of 5 trials:
 *   1. a trivial system call (getppid), ns;
 *   2. a futex ping-pong between two threads pinned to one CPU, us per round trip (two wake-ups
 *      and two context switches);
 *   3. one thread wakes `callers` threads sleeping on one futex word (one FUTEX_WAKE for all, as
 *      a put-group leader does after its fdatasync), each of which counts itself ("pushes") and
 *      sleeps again: us from the wake call until every caller has pushed. A 100 us sleep between
 *      rounds stands in for the fdatasync, so that the callers are asleep when woken.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TRIALS 5
#define MAX_CALLERS 256

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
fwait(_Atomic uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void
fwake(_Atomic uint32_t *w, int n)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v)
{
    qsort(v, TRIALS, sizeof(*v), cmp_double);
    return v[TRIALS / 2];
}

/* ---- 2: ping-pong ---- */

static _Atomic uint32_t ping, pong;
#define PINGS 20000

static void *
pong_main(void *arg)
{
    (void)arg;
    for (uint32_t i = 1; i <= PINGS; i++) {
        while (atomic_load(&ping) != i) {
            fwait(&ping, i - 1);
        }
        atomic_store(&pong, i);
        fwake(&pong, 1);
    }
    return NULL;
}

static double
pingpong_us(void)
{
    atomic_store(&ping, 0);
    atomic_store(&pong, 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setaffinity_np(&at, sizeof(one), &one);
    cpu_set_t old;
    pthread_getaffinity_np(pthread_self(), sizeof(old), &old);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    pthread_t th;
    if (pthread_create(&th, &at, pong_main, NULL) != 0) {
        perror("pthread_create");
        exit(1);
    }
    double t0 = now_s();
    for (uint32_t i = 1; i <= PINGS; i++) {
        atomic_store(&ping, i);
        fwake(&ping, 1);
        while (atomic_load(&pong) != i) {
            fwait(&pong, i - 1);
        }
    }
    double t = now_s() - t0;
    pthread_join(th, NULL);
    pthread_setaffinity_np(pthread_self(), sizeof(old), &old);
    pthread_attr_destroy(&at);
    return t / PINGS * 1e6;
}

/* ---- 3: one wake-up for many sleepers ---- */

static _Atomic uint32_t round_word, pushed;
static _Atomic int stop;

static void *
caller_main(void *arg)
{
    (void)arg;
    for (;;) {
        uint32_t seen = atomic_load(&round_word);
        atomic_fetch_add(&pushed, 1);
        while (atomic_load(&round_word) == seen) {
            if (atomic_load(&stop)) {
                return NULL;
            }
            fwait(&round_word, seen);
        }
    }
}

static double
wake_all_us(unsigned callers, unsigned rounds)
{
    double total = 0;
    for (unsigned r = 0; r <= rounds; r++) {
        while (atomic_load(&pushed) < callers) {
            sched_yield();
        }
        atomic_store(&pushed, 0);
        struct timespec ts = { 0, 100000 }; /* the callers fall asleep, as during an fdatasync */
        nanosleep(&ts, NULL);
        double t0 = now_s();
        atomic_fetch_add(&round_word, 1);
        fwake(&round_word, INT32_MAX);
        while (atomic_load(&pushed) < callers) {
            sched_yield();
        }
        if (r > 0) { /* round 0 warms up */
            total += now_s() - t0;
        }
    }
    return total / rounds * 1e6;
}

int
main(int argc, char **argv)
{
    unsigned callers = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 15;
    if (callers == 0 || callers > MAX_CALLERS) {
        fprintf(stderr, "usage: wake_bench [callers 1..%d]\n", MAX_CALLERS);
        return 2;
    }
    double v[TRIALS];
    for (int t = 0; t < TRIALS; t++) {
        double t0 = now_s();
        for (int i = 0; i < 1000000; i++) {
            syscall(SYS_getppid);
        }
        v[t] = (now_s() - t0) * 1e3; /* ns per call over 1e6 calls */
    }
    printf("system call (getppid):                       %8.0f ns\n", median(v));
    for (int t = 0; t < TRIALS; t++) {
        v[t] = pingpong_us();
    }
    printf("futex ping-pong on one CPU, round trip:      %8.2f us\n", median(v));
    pthread_t th[MAX_CALLERS];
    atomic_store(&pushed, 0);
    for (unsigned i = 0; i < callers; i++) {
        if (pthread_create(&th[i], NULL, caller_main, NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int t = 0; t < TRIALS; t++) {
        v[t] = wake_all_us(callers, 1000);
    }
    printf("wake %3u sleepers, until all have pushed:    %8.1f us\n", callers, median(v));
    atomic_store(&stop, 1);
    atomic_fetch_add(&round_word, 1);
    fwake(&round_word, INT32_MAX);
    for (unsigned i = 0; i < callers; i++) {
        pthread_join(th[i], NULL);
    }
    return 0;
}
