/*
 * ur.h - the I/O layer of a worker: asynchronous fdatasync, wake-ups and timed waits, on
 * io_uring or on plain system calls with identical semantics.
 *
 * A worker owns one `struct ur`. It submits fdatasync requests (htkv_ur_fsync), then calls
 * htkv_ur_wait(), which returns completions through a callback, a wake-up from another thread
 * (htkv_ur_wake, through an eventfd), or the end of a timeout. Errors are passed through as
 * -errno; the engine decides what they mean.
 *
 * Backends:
 *   UR_URING  one ring per worker (SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them), a
 *             read on the eventfd kept armed, and timeouts through io_uring_wait_cqe_timeout.
 *   UR_SYNC   fdatasync runs at once on the calling thread and its completion is delivered by
 *             the next htkv_ur_wait(); waiting is poll() on the eventfd.
 * UR_AUTO picks UR_URING and falls back to UR_SYNC where io_uring is refused (EPERM under a
 * seccomp filter, ENOSYS, ENOMEM from the memlock limit).
 */
#ifndef HTKV_URING_UR_H
#define HTKV_URING_UR_H

#include <stdbool.h>
#include <stdint.h>

enum ur_backend {
    UR_AUTO = 0,
    UR_URING = 1,
    UR_SYNC = 2,
};

/* Completions queued by the sync backend: at most this many fsyncs in flight per worker. */
#define UR_MAX_INFLIGHT 1024u

struct ur_done {
    uint64_t user_data;
    int res;
};

struct ur {
    int backend; /* UR_URING or UR_SYNC once initialised */
    int efd;     /* eventfd for wake-ups */
    unsigned inflight;
    void *ring; /* struct io_uring when UR_URING */
    uint64_t efd_buf;
    bool efd_armed;
    /* UR_SYNC: completions not yet delivered. */
    struct ur_done done[UR_MAX_INFLIGHT];
    unsigned ndone;
    /* UR_URING: results known at submission (an fsync replaced by an injected fault,
     * ur_fault.h, or posted by htkv_ur_post()), in submission order; each stands behind a NOP
     * tagged UR_FAULT_TAG in the ring. */
    struct ur_done faults[UR_MAX_INFLIGHT];
    unsigned nfaults, fault_head;
};

/* Callback for each completion: @p user_data as submitted, @p res = 0 or -errno. */
typedef void (*ur_complete_fn)(void *ctx, uint64_t user_data, int res);

/*
 * Set up @p u on the calling thread (the only thread that may submit and wait on it).
 * @p backend: enum ur_backend. @p depth: ring entries (power of two, >= 8).
 * Returns 0, -EPERM/-ENOSYS/-ENOMEM (UR_URING refused), or -errno.
 */
int htkv_ur_init(struct ur *u, int backend, unsigned depth);
void htkv_ur_fini(struct ur *u);

/* Queue an fdatasync of @p fd. 0, or -EBUSY when UR_MAX_INFLIGHT are in flight. */
int htkv_ur_fsync(struct ur *u, int fd, uint64_t user_data);

/*
 * Deliver @p res for @p user_data by the next htkv_ur_wait(), as the completion of an fsync the
 * caller ran itself (with the ring, through a no-op). 0, or -EBUSY (UR_MAX_INFLIGHT in flight,
 * or the ring is full: nothing queued).
 */
int htkv_ur_post(struct ur *u, uint64_t user_data, int res);

/*
 * Submit what is queued and wait until a completion, a wake-up, or @p timeout_ms (-1 = no
 * timeout, 0 = poll). Delivers every available completion to @p fn. Returns the number of
 * completions delivered (0 on wake-up or timeout) or -errno.
 */
int htkv_ur_wait(struct ur *u, int timeout_ms, ur_complete_fn fn, void *ctx);

/* Wake the thread waiting in htkv_ur_wait(). Any thread. */
void htkv_ur_wake(struct ur *u);

/* Name of the backend in use. */
const char *htkv_ur_backend_name(const struct ur *u);

#endif
