/*
 * futex.h - the two futex operations the engine sleeps and wakes with (private futexes: the
 * words are never shared between processes).
 */
#ifndef HTKV_ENGINE_FUTEX_H
#define HTKV_ENGINE_FUTEX_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Sleep while *@p p == @p val (returns at once otherwise, and on a wake-up or a signal). */
static inline void
htkv_futex_wait(_Atomic uint32_t *p, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)p, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

/* Wake up to @p n threads sleeping on @p p. */
static inline void
htkv_futex_wake(_Atomic uint32_t *p, int n)
{
    syscall(SYS_futex, (uint32_t *)p, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

#endif
