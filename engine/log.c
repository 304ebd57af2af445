/*
 * log.c - logging through a sink (base layer; see log.h). Calls only libc.
 */
#include "engine/log.h"

#include <stdio.h>

void
htkv_vlog(const struct htkv_log_sink *sink, int level, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (sink->fn != NULL) {
        sink->fn(level, msg, sink->ctx);
    } else if (level <= HTKV_LOG_WARN) {
        fprintf(stderr, "htkv: %s: %s\n", level == HTKV_LOG_ERROR ? "error" : "warning", msg);
    }
}

void
htkv_log(const struct htkv_log_sink *sink, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    htkv_vlog(sink, level, fmt, ap);
    va_end(ap);
}
