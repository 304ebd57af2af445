/*
 * ur_fault.h - fault injection for the store's I/O: make the N-th call of a class of operations
 * fail with a chosen error (EIO, ENOSPC, ...), once or from then on, or tear a write in half.
 *
 * Every I/O call of the engine that can fail goes through htkv_fault_hit() first: segment
 * allocation (fallocate or written zeros), segment and manifest syncs (fdatasync/fsync, also on
 * the workers' io_uring, where the fault replaces the completion's result), file creation,
 * manifest and hint/snapshot writes, renames. Disarmed, htkv_fault_hit() is one relaxed atomic
 * load. Tests arm it (tests/fault/); the library never does by itself.
 *
 * Thread rules: arm/disarm from one thread while the store is idle or not; hits are counted
 * atomically from any thread, and exactly one call is the N-th.
 */
#ifndef HTKV_URING_UR_FAULT_H
#define HTKV_URING_UR_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum htkv_fault_op {
    HTKV_FAULT_SYNC = 0,   /* fdatasync / fsync of a segment, the manifest, a file */
    HTKV_FAULT_ALLOC = 1,  /* making room in a segment (fallocate, written zeros) */
    HTKV_FAULT_WRITE = 2,  /* pwrite/write of the manifest, hint files, snapshot files */
    HTKV_FAULT_CREATE = 3, /* creating a file (segment, manifest, hint, snapshot, OPTIONS) */
    HTKV_FAULT_RENAME = 4, /* rename (CURRENT, hint files, snapshot files) */
    HTKV_FAULT_OPS = 5,
};

/* The error of a torn write: the first half of the bytes is written, then -EIO. */
#define HTKV_FAULT_TORN 1

/*
 * Fail the @p nth call (1 = the next) of class @p op with -@p err (or, for HTKV_FAULT_WRITE and
 * err == HTKV_FAULT_TORN, tear it); with @p sticky, every call after it as well. Resets the
 * class's call count. Other classes stay as they are.
 */
void htkv_fault_arm(int op, uint64_t nth, int err, bool sticky);

/* Disarm every class (counts are kept). */
void htkv_fault_disarm(void);

/* Calls of class @p op since it was last armed (or since start). */
uint64_t htkv_fault_calls(int op);

/* Faults injected so far, all classes. */
uint64_t htkv_fault_injected(void);

/* Hot path: 0, or the negative error to return instead of doing the call (HTKV_FAULT_TORN as
 * -HTKV_FAULT_TORN for a torn write). */
int htkv_fault_hit(int op);

/*
 * Test hook, NULL in production: called with the descriptor of a file or directory after each
 * successful fdatasync/fsync that a durability promise rests on (segments, the manifest,
 * CURRENT, the store's directories), on the thread that synced, before any write the sync
 * covers is acknowledged. That includes a worker's group and interval fdatasyncs: the worker
 * calls it when it takes the completion (io_uring: the CQE; plain system calls: the result of
 * the fdatasync it ran), before publishing. Calls may come from several threads at once, while
 * other threads append to the same file. A power-loss simulation keeps what it syncs
 * (tests/fault/fault_powerloss.c). Set before opening the store, clear after closing it.
 */
extern void (*htkv_fault_sync_hook)(int fd);

static inline void
htkv_fault_synced(int fd)
{
    if (__builtin_expect(htkv_fault_sync_hook != NULL, 0)) {
        htkv_fault_sync_hook(fd);
    }
}

#endif
