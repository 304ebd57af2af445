/*
 * ur_fault.h - fault injection for the store's I/O: make the N-th call of a class of operations
 * fail with a chosen error (EIO, ENOSPC, ...), once or from then on, or tear a write in half.
 *
 * Every I/O call of the engine that can fail goes through htkv_fault_hit() first; the classes
 * below list the calls each one covers. Disarmed, htkv_fault_hit() is one relaxed atomic load.
 * Tests arm it (tests/fault/); the library never does by itself. What the engine does when each
 * call fails is written at the call site (ARCHITECTURE.md, "Failure policy", sums it up).
 *
 * Not covered: reads of segment records, which go through the segment's mapping (a page fault,
 * not a system call); a new segment's header write and first fdatasync, the ftruncate and fsync
 * that give back preallocation at close, the zeroing writes of a torn tail (its sync is SYNC),
 * fsyncs of directories other than CURRENT's after its rename, the write of OPTIONS; readdir,
 * fstat and close; and the offline htkvctl commands' own reads of OPTIONS, key files and
 * snapshot headers (a separate process that nothing arms).
 *
 * Thread rules: arm/disarm from one thread while the store is idle or not; hits are counted
 * atomically from any thread, and exactly one call is the N-th.
 */
#ifndef HTKV_URING_UR_FAULT_H
#define HTKV_URING_UR_FAULT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum htkv_fault_op {
    /* fdatasync / fsync of a segment, the manifest, a hint, snapshot or CURRENT.tmp file, and of
     * the store's directory after CURRENT is renamed (also the workers' io_uring fdatasync,
     * where the fault replaces the completion's result) */
    HTKV_FAULT_SYNC = 0,
    /* making room in a segment (fallocate, written zeros) */
    HTKV_FAULT_ALLOC = 1,
    /* pwrite/write of the manifest, CURRENT, hint files, snapshot files (HTKV_FAULT_TORN) */
    HTKV_FAULT_WRITE = 2,
    /* creating a new file: segment, manifest, CURRENT.tmp, hint .tmp, snapshot .tmp,
     * OPTIONS.tmp */
    HTKV_FAULT_CREATE = 3,
    /* rename (CURRENT, hint files, snapshot files) */
    HTKV_FAULT_RENAME = 4,
    /* read/pread of a file: CURRENT, the manifest, a segment's header at recovery, a hint file
     * (also htkv_hint_check_file()); the mapping of a snapshot for restore or
     * htkv_snapshot_check_file(), through which it is read; CURRENT, the manifest and segment
     * headers read by htkv_inspect_verify() */
    HTKV_FAULT_READ = 5,
    /* unlink/unlinkat: dropped segments and their hints (compaction, restore), orphans at open,
     * old and failed manifests, temporary files, older emitted snapshots, new segments of a
     * failed rotation or restore */
    HTKV_FAULT_UNLINK = 6,
    /* open/openat/opendir of an existing file or directory: the store's directory (open,
     * listing) and its parent, LOCK, CURRENT, the manifest, shard directories (listing at
     * recovery, fsync after a new segment or a restore), segments at recovery, hint files,
     * snapshots being restored or checked, the directory of a snapshot being written and the
     * store's when listing its snapshots; the store directory, CURRENT, the manifest, segments
     * and shard directories that htkv_inspect_verify() opens */
    HTKV_FAULT_OPEN = 7,
    HTKV_FAULT_OPS = 8,
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
 * For call sites that learn of a failure through errno (open, read, unlink, ...): true when the
 * call of class @p op is to fail, with errno set to the injected error; the caller then skips the
 * call and takes its failure path as if the system call had failed. Never used for
 * HTKV_FAULT_WRITE, whose sites also tear writes.
 */
static inline bool
htkv_fault_fails(int op)
{
    int rc = htkv_fault_hit(op);
    if (__builtin_expect(rc != 0, 0)) {
        errno = -rc;
        return true;
    }
    return false;
}

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
