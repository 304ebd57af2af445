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
#include <stdbool.h>
#include <stdint.h>

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

/*
 * Whether HTKV_CLUSTER_TRACE is set (to anything but "" or "0") in the environment: read once
 * per call, so callers read it at open and keep the answer. Tracing is for diagnosis only.
 */
bool htkv_cl_trace_wanted(void);

/*
 * Send one trace message to @p fn (as htkv_cl_log() at HTKV_LOG_INFO), prefixed with
 * "trace <wall clock ms> id=<@p id>": the events a failed cluster test is read from (roles,
 * terms, applies, snapshots, restores, acknowledgements). Callers check their trace flag first.
 */
void htkv_cl_trace(htkv_log_fn fn, void *ctx, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif /* HTKV_CLUSTER_UTIL_H */
