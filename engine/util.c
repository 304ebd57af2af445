/*
 * util.c - assertions, allocation (jemalloc arenas, hooks), the thread-local error detail,
 * htkv_strerror() and whole-buffer pwrite.
 */
#include "engine/internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "uring/ur_fault.h"

#ifdef HTKV_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

void (*htkv_assert_hook)(const char *expr, const char *file, int line);
bool (*htkv_mem_fail_hook)(size_t n);

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

#ifdef HTKV_JEMALLOC

static inline int
arena_flags(unsigned arena)
{
    return arena == 0 ? 0 : (int)MALLOCX_ARENA(arena - 1);
}

void *
htkv_mem_alloc_in(unsigned arena, size_t n)
{
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n)) {
        return NULL;
    }
    return mallocx(n > 0 ? n : 1, arena_flags(arena));
}

void *
htkv_mem_calloc_in(unsigned arena, size_t n, size_t size)
{
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n * size)) {
        return NULL;
    }
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    size_t total = n * size;
    return mallocx(total > 0 ? total : 1, arena_flags(arena) | MALLOCX_ZERO);
}

void *
htkv_mem_realloc_in(unsigned arena, void *p, size_t n)
{
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n)) {
        return NULL;
    }
    if (p == NULL) {
        return mallocx(n > 0 ? n : 1, arena_flags(arena));
    }
    return rallocx(p, n > 0 ? n : 1, arena_flags(arena));
}

void
htkv_mem_free(void *p)
{
    if (p != NULL) {
        dallocx(p, 0);
    }
}

/* Arenas given back by closed stores, for the next ones. */
static pthread_mutex_t arena_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned arena_pool[256];
static unsigned arena_pool_n;

int
htkv_arena_lease(unsigned *out)
{
    pthread_mutex_lock(&arena_pool_lock);
    if (arena_pool_n > 0) {
        *out = arena_pool[--arena_pool_n];
        pthread_mutex_unlock(&arena_pool_lock);
        return 0;
    }
    pthread_mutex_unlock(&arena_pool_lock);
    unsigned idx = 0;
    size_t len = sizeof(idx);
    if (mallctl("arenas.create", &idx, &len, NULL, 0) != 0) {
        return -ENOMEM;
    }
    *out = idx + 1;
    return 0;
}

void
htkv_arena_release(unsigned arena)
{
    if (arena == 0) {
        return;
    }
    pthread_mutex_lock(&arena_pool_lock);
    if (arena_pool_n < sizeof(arena_pool) / sizeof(arena_pool[0])) {
        arena_pool[arena_pool_n++] = arena;
    } /* else it stays unused: jemalloc arenas are never destroyed while memory may be in them */
    pthread_mutex_unlock(&arena_pool_lock);
}

void
htkv_arena_bind(unsigned arena)
{
    if (arena != 0) {
        unsigned idx = arena - 1;
        (void)mallctl("thread.arena", NULL, NULL, &idx, sizeof(idx));
    }
}

uint64_t
htkv_arenas_allocated(const unsigned *arenas, unsigned n)
{
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    (void)mallctl("epoch", &epoch, &len, &epoch, len); /* refresh the statistics once */
    uint64_t total = 0;
    static const char *const what[] = { "small", "large" };
    for (unsigned a = 0; a < n; a++) {
        for (size_t i = 0; arenas[a] != 0 && i < 2; i++) {
            char name[64];
            snprintf(name, sizeof(name), "stats.arenas.%u.%s.allocated", arenas[a] - 1, what[i]);
            size_t v = 0;
            len = sizeof(v);
            if (mallctl(name, &v, &len, NULL, 0) == 0) {
                total += v;
            }
        }
    }
    return total;
}

#else /* plain malloc */

void *
htkv_mem_alloc_in(unsigned arena, size_t n)
{
    (void)arena;
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n)) {
        return NULL;
    }
    return malloc(n);
}

void *
htkv_mem_calloc_in(unsigned arena, size_t n, size_t size)
{
    (void)arena;
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n * size)) {
        return NULL;
    }
    return calloc(n, size);
}

void *
htkv_mem_realloc_in(unsigned arena, void *p, size_t n)
{
    (void)arena;
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n)) {
        return NULL;
    }
    return realloc(p, n);
}

void
htkv_mem_free(void *p)
{
    free(p);
}

int
htkv_arena_lease(unsigned *out)
{
    *out = 0;
    return 0;
}

void
htkv_arena_release(unsigned arena)
{
    (void)arena;
}

void
htkv_arena_bind(unsigned arena)
{
    (void)arena;
}

uint64_t
htkv_arenas_allocated(const unsigned *arenas, unsigned n)
{
    (void)arenas;
    (void)n;
    return 0;
}

#endif

void *
htkv_mem_alloc(size_t n)
{
    return htkv_mem_alloc_in(0, n);
}

void *
htkv_mem_calloc(size_t n, size_t size)
{
    return htkv_mem_calloc_in(0, n, size);
}

void *
htkv_mem_realloc(void *p, size_t n)
{
    return htkv_mem_realloc_in(0, p, n);
}

void
htkv_free(void *p)
{
    htkv_mem_free(p);
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
