/*
 * fileio.c - whole-buffer file writes with fault injection (declared in internal.h).
 *
 * Layer: base. Calls the C library and the fault injector (uring/ur_fault.h), which tests use
 * to fail or tear any write. Kept apart from alloc.c and error.c, which do no I/O and so need
 * no fault injection.
 *
 * Invariants
 *   1. htkv_pwrite_all() writes all @p n bytes or returns an error; on an injected torn write
 *      it writes the first half and returns -EIO, as a crash in the middle would leave it.
 */
#include "engine/internal.h"

#include <unistd.h>

#include "uring/ur_fault.h"

int
htkv_pwrite_all(int fd, const void *p, size_t n, off_t off)
{
    int frc = htkv_fault_hit(HTKV_FAULT_WRITE);
    if (frc == -HTKV_FAULT_TORN) {
        (void)!pwrite(fd, p, n / 2, off); /* a torn write: half of it, then an error */
        return -EIO;
    }
    if (frc != 0) {
        return frc;
    }
    const unsigned char *s = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, s, n, off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        s += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}
