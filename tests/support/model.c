/*
 * model.c - what the model-based tests share (see model.h).
 */
#include "tests/support/model.h"

#include <htkv/replication.h>

uint64_t tu_model_seed;
char tu_model_where[512];

void
tu_where(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tu_model_where, sizeof(tu_model_where), fmt, ap);
    va_end(ap);
    tu_context("HTKV_SEED=%llu %s", (unsigned long long)tu_model_seed, tu_model_where);
    static int trace = -1;
    if (trace < 0) {
        const char *t = getenv("HTKV_MODEL_TRACE");
        trace = t != NULL && t[0] == '1';
    }
    if (trace) {
        fprintf(stderr, "trace: %s\n", tu_model_where);
    }
}

void
tu_model_report(const char *file, int line, const char *cond, const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: FAILED (HTKV_SEED=%llu; %s): %s: ", file, line,
            (unsigned long long)tu_model_seed, tu_model_where, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

unsigned
tu_model_scaled(unsigned n)
{
    double f = TU_SANITIZER ? 0.25 : 1.0;
    const char *s = getenv("HTKV_MODEL_SCALE");
    if (s != NULL && s[0] != '\0') {
        f *= strtod(s, NULL);
    }
    double v = (double)n * f;
    return v < 1.0 ? 1u : (unsigned)v;
}

uint64_t
tu_latest(htkv_db *db)
{
    uint64_t v = 0;
    RC_OK(htkv_latest_version(db, &v));
    return v;
}
