/*
 * model.h - what the model-based tests share: the seed and the step of the running test, a
 * failure report that names both (so that HTKV_SEED=N replays it), checks that fail with it,
 * and a step count scaled by HTKV_MODEL_SCALE (a quarter under sanitizers).
 */
#ifndef HTKV_TESTS_MODEL_H
#define HTKV_TESTS_MODEL_H

#include "tests/support/testutil.h"

/* 1 in a build with AddressSanitizer or ThreadSanitizer, else 0. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TU_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TU_SANITIZER 1
#endif
#endif
#ifndef TU_SANITIZER
#define TU_SANITIZER 0
#endif

/* The seed of the running randomised test: the test sets it (from tu_seed()) before its first
 * step; every failure report prints it. Written by the test thread only. */
extern uint64_t tu_model_seed;
/* The step the running test is at, as tu_where() last set it. */
extern char tu_model_where[512];

/*
 * Set the step the running test is at (printf format): kept for failure reports and for engine
 * assertions (tu_context(), with the seed); printed at once when HTKV_MODEL_TRACE=1. Test thread
 * only.
 */
void tu_where(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "FILE:LINE: FAILED (HTKV_SEED=N; step): COND: detail" to stderr; fails nothing. Any
 * thread (a thread may print a step the test thread is rewriting: the text can be torn). */
void tu_model_report(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* @p n scaled by HTKV_MODEL_SCALE (a factor; default 1) and by a quarter under sanitizers;
 * at least 1. */
unsigned tu_model_scaled(unsigned n);
/* htkv_latest_version() of @p db, which must succeed (MCHECK). Test thread only. */
uint64_t tu_latest(htkv_db *db);

/* Test thread only: unless @p cond holds, report the seed, the step and the detail (printf
 * arguments), then fail the cmocka test. */
#define MCHECK(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_model_report(__FILE__, __LINE__, #cond, __VA_ARGS__);                               \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

/* Test thread only: @p expr (an htkv call) returns 0, or MCHECK fails with its code and
 * htkv_last_error(). */
#define RC_OK(expr)                                                                                \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        MCHECK(rc_ == 0, "%s returned %d (%s) %s", #expr, rc_, htkv_strerror(rc_),                 \
               htkv_last_error());                                                                 \
    } while (0)

#endif
