/*
 * util.h - what every file of the cluster layer shares: its assertion and its log line.
 *
 * The cluster layer uses only htkv's public API, so it cannot use the engine's HTKV_ASSERT;
 * CL_ASSERT follows the same rules (STYLE S5): always on, one condition, no side effects; a
 * failure prints the condition, file, line and function and aborts.
 */
#ifndef HTKV_CLUSTER_UTIL_H
#define HTKV_CLUSTER_UTIL_H

#include <stdarg.h>

#include <htkv/htkv.h>

/* Print "cluster: assertion `expr' failed at file:line (function)" and abort(). */
_Noreturn void htkv_cl_assert_fail(const char *expr, const char *file, int line, const char *func);

#define CL_ASSERT(cond)                                                                            \
    ((cond) ? (void)0 : htkv_cl_assert_fail(#cond, __FILE__, __LINE__, __func__))

/*
 * Send one message to @p fn (a store's htkv_config.log_fn) or, when it is NULL, to stderr as
 * "htkv-cluster: <message>". @p level is an enum htkv_log_level.
 */
void htkv_cl_log(htkv_log_fn fn, void *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* HTKV_CLUSTER_UTIL_H */
