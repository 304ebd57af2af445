/*
 * util.c - the cluster layer's assertion failure, log line and trace line (util.h).
 *
 * Invariants: 1. a log message is formatted into a bounded buffer (512 bytes, longer ones are
 * cut) and handed over whole, never in pieces. 2. Tracing (HTKV_CLUSTER_TRACE) costs a branch
 * on a flag read at open when it is off.
 */
#include "cluster/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Noreturn void
htkv_cl_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "htkv-cluster: assertion `%s' failed at %s:%d (%s)\n", expr, file, line, func);
    fflush(stderr);
    abort();
}

void
htkv_cl_log(htkv_log_fn fn, void *ctx, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fn != NULL) {
        fn(level, msg, ctx);
        return;
    }
    fprintf(stderr, "htkv-cluster: %s\n", msg);
}

bool
htkv_cl_trace_wanted(void)
{
    const char *v = getenv("HTKV_CLUSTER_TRACE");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

void
htkv_cl_trace(htkv_log_fn fn, void *ctx, uint64_t id, const char *fmt, ...)
{
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    htkv_cl_log(fn, ctx, HTKV_LOG_INFO, "trace %" PRIu64 ".%03u id=%" PRIu64 " %s", ms / 1000u,
                (unsigned)(ms % 1000u), id, msg);
}
