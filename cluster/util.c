/*
 * util.c - the cluster layer's assertion failure and log line (util.h).
 *
 * Invariants: 1. a log message is formatted into a bounded buffer (512 bytes, longer ones are
 * cut) and handed over whole, never in pieces.
 */
#include "cluster/util.h"

#include <stdio.h>
#include <stdlib.h>

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
