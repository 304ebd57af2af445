/*
 * error.c - errors: the thread-local error detail behind htkv_last_error(), htkv_strerror(),
 * htkv_einval() and the assertion failure path (declarations in internal.h and htkv.h).
 *
 * Layer: base. Calls only the C library.
 *
 * Invariants
 *   1. The error detail is per thread: a call reports its own failure, never another thread's.
 *   2. htkv_strerror() returns text that stays valid: static strings, or a thread-local buffer
 *      for -errno values.
 *   3. htkv_assert_fail() never returns: it prints, calls the test hook, then aborts.
 */
#include "engine/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void (*htkv_assert_hook)(const char *expr, const char *file, int line);

static _Thread_local char last_error[512];

void
htkv_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "htkv: assertion failed: %s (%s:%d, %s)\n", expr, file, line, func);
    fflush(stderr);
    if (htkv_assert_hook != NULL) {
        htkv_assert_hook(expr, file, line);
    }
    abort();
}

void
htkv_set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

int
htkv_einval(const char *fn)
{
    htkv_set_error("%s: invalid argument", fn);
    return -EINVAL;
}

void
htkv_clear_error(void)
{
    last_error[0] = '\0';
}

const char *
htkv_last_error(void)
{
    return last_error;
}

const char *
htkv_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case HTKV_ENOTFOUND:
        return "key not found";
    case HTKV_ECORRUPT:
        return "corrupt data on disk (checksum or framing mismatch)";
    case HTKV_ETOOSMALL:
        return "buffer too small";
    case HTKV_EAUTH:
        return "authentication failed";
    case HTKV_EBUSY:
        return "queue full, retry later";
    case HTKV_EFULL:
        return "fixed capacity reached";
    case HTKV_EEXIST:
        return "already exists";
    case HTKV_ELOCKED:
        return "store is locked by another opener";
    case HTKV_EREADONLY:
        return "store is read-only";
    case HTKV_ETOOBIG:
        return "key, value or batch too large";
    case HTKV_ECONFLICT:
        return "version conflict";
    case HTKV_ECLOSED:
        return "store is closed";
    case HTKV_EFAILED:
        return "store failed (fdatasync error); reopen to recover";
    case HTKV_ENOTSTORE:
        return "directory is not an htkv store";
    case HTKV_EVERSION:
        return "store has a newer on-disk format version";
    case HTKV_ECOMPACTED:
        return "history removed by compaction";
    case HTKV_ENOTLEADER:
        return "this cluster node is not the leader";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* strerror() is not thread-safe in general; glibc's returns static text for known codes. */
        static _Thread_local char buf[128];
        const char *s = strerror_r(-err, buf, sizeof(buf));
        return s;
    }
    return "unknown error";
}
