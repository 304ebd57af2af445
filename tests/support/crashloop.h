/*
 * crashloop.h - the kill loop of the crash tests: fork a child that runs seeded calls and reports
 * each one through a pipe after it returned, SIGKILL it after a random time or let it kill itself
 * right after its N-th fdatasync/fsync (an I/O point), take its reports, reap it.
 */
#ifndef HTKV_TESTS_CRASHLOOP_H
#define HTKV_TESTS_CRASHLOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest report: one pipe write, whole or absent. */
#define TU_REPORT_MAX 512

/* One kind of kill loop: the child's body and the parent's handling of a report. */
struct tu_loop {
    const char *name;
    uint64_t seed;
    size_t report_bytes; /* every report has this size, at most TU_REPORT_MAX */
    /* The child: run calls from @p first_seq on, report each to @p fd. Never returns. */
    void (*child)(void *ctx, uint64_t first_seq, int fd);
    /* The parent: apply one report; false if it is not the expected next call. */
    bool (*take)(void *ctx, const void *report);
    void *ctx;
};

/*
 * Fork the child, take its reports until it dies (killed after @p kill_after_ms, or by itself
 * at its @p kill_at_sync-th sync when non-zero), reap it. Fails the test on a bad report or when
 * the child ended in any other way than SIGKILL.
 */
void tu_kill_cycle(const struct tu_loop *l, int cycle, uint64_t first_seq, uint64_t kill_after_ms,
                   uint64_t kill_at_sync);

/* Kill time (20-200 ms) and sync count of cycle @p cycle from @p rng: every other cycle also dies
 * at an I/O point, right after its N-th sync, N in 1..64 (unless HTKV_CRASH_IO_KILLS=0). */
void tu_cycle_kills(uint64_t *rng, int cycle, uint64_t *after_ms, uint64_t *at_sync);

/* Cycles per sync mode: HTKV_CRASH_CYCLES when set, else @p dflt. */
int tu_crash_cycles(int dflt);

#endif
