/*
 * log.h - logging through a sink (base layer).
 *
 * A sink is the caller's htkv_config.log_fn and log_ctx. With no function, warnings and errors
 * go to stderr and the rest is dropped. A message is formatted into a bounded buffer (longer
 * ones are cut), so logging never allocates. Depends on nothing of the engine but internal.h.
 */
#ifndef HTKV_ENGINE_LOG_H
#define HTKV_ENGINE_LOG_H

#include <stdarg.h>

#include "engine/internal.h"

struct htkv_log_sink {
    htkv_log_fn fn; /* NULL: warnings and errors to stderr */
    void *ctx;      /* passed to fn */
};

/* Log one message at @p level (enum htkv_log_level) through @p sink. */
void htkv_log(const struct htkv_log_sink *sink, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* htkv_log() with a va_list. */
void htkv_vlog(const struct htkv_log_sink *sink, int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif /* HTKV_ENGINE_LOG_H */
