/*
 * ur.c - io_uring and plain-syscall backends of the worker I/O layer (see ur.h).
 *
 * Invariants
 *   1. Only the thread that called htkv_ur_init() submits and waits (SINGLE_ISSUER).
 *   2. With UR_URING, one read of the eventfd is armed whenever htkv_ur_wait() sleeps, so a
 *      htkv_ur_wake() from any thread ends the wait.
 *   3. inflight counts fsyncs submitted and not yet delivered.
 */
#include "uring/ur.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/internal.h"
#include "uring/ur_fault.h"

#define UR_EFD_TAG UINT64_MAX         /* user_data of the eventfd read */
#define UR_FAULT_TAG (UINT64_MAX - 1) /* user_data of a NOP standing for a known result */

static int
uring_setup(struct ur *u, unsigned depth)
{
    struct io_uring *ring = htkv_mem_calloc(1, sizeof(*ring));
    if (ring == NULL) {
        return -ENOMEM;
    }
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int rc = io_uring_queue_init_params(depth, ring, &p);
    if (rc == -EINVAL) {
        memset(&p, 0, sizeof(p)); /* older kernel: plain ring */
        rc = io_uring_queue_init_params(depth, ring, &p);
    }
    if (rc != 0) {
        htkv_mem_free(ring);
        return rc;
    }
    u->ring = ring;
    return 0;
}

int
htkv_ur_init(struct ur *u, int backend, unsigned depth)
{
    HTKV_ASSERT(depth >= 8 && (depth & (depth - 1)) == 0);
    memset(u, 0, sizeof(*u));
    u->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (u->efd < 0) {
        return -errno;
    }
    int rc = 0;
    if (backend == UR_URING || backend == UR_AUTO) {
        rc = uring_setup(u, depth);
        if (rc == 0) {
            u->backend = UR_URING;
            return 0;
        }
        if (backend == UR_URING || (rc != -EPERM && rc != -ENOSYS && rc != -ENOMEM)) {
            close(u->efd);
            return rc;
        }
    }
    u->backend = UR_SYNC;
    return 0;
}

void
htkv_ur_fini(struct ur *u)
{
    if (u->ring != NULL) {
        io_uring_queue_exit(u->ring);
        htkv_mem_free(u->ring);
        u->ring = NULL;
    }
    if (u->efd >= 0) {
        close(u->efd);
        u->efd = -1;
    }
}

const char *
htkv_ur_backend_name(const struct ur *u)
{
    return u->backend == UR_URING ? "io_uring" : "sync";
}

static struct io_uring_sqe *
get_sqe(struct io_uring *ring)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL) {
        io_uring_submit(ring); /* full submission queue: hand it to the kernel first */
        sqe = io_uring_get_sqe(ring);
    }
    return sqe;
}

/* Queue a completion whose result is known now (an fsync replaced by a fault, or a result
 * posted): @p res is delivered for @p user_data by the next htkv_ur_wait(). With the ring,
 * @p sqe carries it as a no-op. */
static void
ur_done_now(struct ur *u, struct io_uring_sqe *sqe, uint64_t user_data, int res)
{
    if (u->backend == UR_SYNC) {
        u->done[u->ndone++] = (struct ur_done){ .user_data = user_data, .res = res };
    } else {
        io_uring_prep_nop(sqe);
        u->faults[u->nfaults++ % UR_MAX_INFLIGHT] =
            (struct ur_done){ .user_data = user_data, .res = res };
        io_uring_sqe_set_data64(sqe, UR_FAULT_TAG);
    }
    u->inflight++;
}

/* Room for one more completion of @p user_data: 0 with *@p sqe its entry (NULL with UR_SYNC),
 * or -EBUSY (UR_MAX_INFLIGHT in flight, or the ring is full). */
static int
ur_room(struct ur *u, uint64_t user_data, struct io_uring_sqe **sqe)
{
    HTKV_ASSERT(user_data != UR_EFD_TAG);
    HTKV_ASSERT(user_data != UR_FAULT_TAG);
    *sqe = NULL;
    if (u->inflight >= UR_MAX_INFLIGHT) {
        return -EBUSY;
    }
    if (u->backend != UR_SYNC && (*sqe = get_sqe(u->ring)) == NULL) {
        return -EBUSY;
    }
    return 0;
}

int
htkv_ur_fsync(struct ur *u, int fd, uint64_t user_data)
{
    struct io_uring_sqe *sqe;
    int rc = ur_room(u, user_data, &sqe);
    if (rc != 0) {
        return rc;
    }
    int fault = htkv_fault_hit(HTKV_FAULT_SYNC);
    if (fault != 0 || u->backend == UR_SYNC) {
        /* A fault replaces this fsync's result. */
        ur_done_now(u, sqe, user_data, fault != 0 ? fault : fdatasync(fd) == 0 ? 0 : -errno);
        return 0;
    }
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, user_data);
    u->inflight++;
    return 0;
}

int
htkv_ur_post(struct ur *u, uint64_t user_data, int res)
{
    struct io_uring_sqe *sqe;
    int rc = ur_room(u, user_data, &sqe);
    if (rc == 0) {
        ur_done_now(u, sqe, user_data, res);
    }
    return rc;
}

static int
sync_wait(struct ur *u, int timeout_ms, ur_complete_fn fn, void *ctx)
{
    if (u->ndone == 0) {
        struct pollfd pfd = { .fd = u->efd, .events = POLLIN };
        int n = poll(&pfd, 1, timeout_ms);
        if (n < 0 && errno != EINTR) {
            return -errno;
        }
        uint64_t v;
        if (read(u->efd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
            return -errno;
        }
        return 0;
    }
    unsigned n = u->ndone;
    u->ndone = 0;
    for (unsigned i = 0; i < n; i++) {
        u->inflight--;
        fn(ctx, u->done[i].user_data, u->done[i].res);
    }
    return (int)n;
}

/* Deliver every completion in the CQ ring. */
static int
uring_reap(struct ur *u, ur_complete_fn fn, void *ctx)
{
    struct io_uring *ring = u->ring;
    struct io_uring_cqe *cqe;
    int delivered = 0;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring, head, cqe)
    {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        seen++;
        if (ud == UR_EFD_TAG) {
            u->efd_armed = false;
            continue;
        }
        if (ud == UR_FAULT_TAG) {
            HTKV_ASSERT(u->fault_head != u->nfaults);
            const struct ur_done *d = &u->faults[u->fault_head++ % UR_MAX_INFLIGHT];
            u->inflight--;
            fn(ctx, d->user_data, d->res);
            delivered++;
            continue;
        }
        u->inflight--;
        fn(ctx, ud, cqe->res);
        delivered++;
    }
    io_uring_cq_advance(ring, seen);
    return delivered;
}

int
htkv_ur_wait(struct ur *u, int timeout_ms, ur_complete_fn fn, void *ctx)
{
    if (u->backend == UR_SYNC) {
        return sync_wait(u, timeout_ms, fn, ctx);
    }
    struct io_uring *ring = u->ring;
    if (timeout_ms == 0) {
        /* Busy loop: no system call unless something was queued or is in flight. */
        if (io_uring_sq_ready(ring) == 0 && u->inflight == 0) {
            return 0;
        }
        int rc = io_uring_submit_and_get_events(ring); /* also runs deferred task work */
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            return rc;
        }
        return uring_reap(u, fn, ctx);
    }
    if (!u->efd_armed) {
        struct io_uring_sqe *sqe = get_sqe(ring);
        if (sqe != NULL) {
            io_uring_prep_read(sqe, u->efd, &u->efd_buf, sizeof(u->efd_buf), 0);
            io_uring_sqe_set_data64(sqe, UR_EFD_TAG);
            u->efd_armed = true;
        }
    }
    struct io_uring_cqe *cqe;
    int rc;
    if (timeout_ms < 0) {
        rc = io_uring_submit_and_wait(ring, 1);
    } else {
        struct __kernel_timespec ts = { .tv_sec = timeout_ms / 1000,
                                        .tv_nsec = (long long)(timeout_ms % 1000) * 1000000 };
        io_uring_submit(ring);
        rc = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN) {
        return rc;
    }
    return uring_reap(u, fn, ctx);
}

void
htkv_ur_wake(struct ur *u)
{
    uint64_t one = 1;
    ssize_t w = write(u->efd, &one, sizeof(one));
    (void)w; /* EAGAIN means the counter is already non-zero: a wake-up is pending anyway */
}
