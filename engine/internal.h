/*
 * internal.h - definitions shared by every engine module: assertions, allocation hooks,
 * little-endian helpers and the thread-local error detail.
 *
 * Layer: base (the bottom: includes only the C library and the public htkv.h). Defined in
 * error.c (assertion failure, error detail, htkv_strerror()), alloc.c (allocation and arenas)
 * and fileio.c (htkv_pwrite_all()); the rest is inline here.
 *
 * Nothing here is part of the public API. Every engine .c includes this file first.
 */
#ifndef HTKV_ENGINE_INTERNAL_H
#define HTKV_ENGINE_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <htkv/htkv.h>

#define HTKV_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

#define HTKV_LIKELY(x) __builtin_expect(!!(x), 1)
#define HTKV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HTKV_CACHELINE 64

/* Assertion failure: prints expr, file:line and function, calls the test hook, aborts. */
_Noreturn void htkv_assert_fail(const char *expr, const char *file, int line, const char *func);

/* Called before abort() when an assertion fails; tests install one. */
extern void (*htkv_assert_hook)(const char *expr, const char *file, int line);

#define HTKV_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (HTKV_UNLIKELY(!(cond))) {                                                              \
            htkv_assert_fail(#cond, __FILE__, __LINE__, __func__);                                 \
        }                                                                                          \
    } while (0)

#ifdef HTKV_DEBUG
#define HTKV_DASSERT(cond) HTKV_ASSERT(cond)
#else
#define HTKV_DASSERT(cond) ((void)0)
#endif

#define HTKV_UNREACHABLE() htkv_assert_fail("unreachable", __FILE__, __LINE__, __func__)

/*
 * Allocation goes through these so that tests can inject failures. htkv_mem_alloc() returns NULL
 * when the hook says so; callers turn that into -ENOMEM.
 */
void *htkv_mem_alloc(size_t n);
void *htkv_mem_calloc(size_t n, size_t size);
void *htkv_mem_realloc(void *p, size_t n);
void htkv_mem_free(void *p);

/*
 * Large memory straight from the system: mapped and unmapped directly, so its pages go back at
 * once when it is freed instead of staying resident with the allocator until it decays (a hash
 * index's table, replaced as the index grows). htkv_mem_map() returns zeroed memory or NULL (also
 * when the hook says so); htkv_mem_unmap() takes the size it was given (NULL is accepted).
 */
void *htkv_mem_map(size_t n);
void htkv_mem_unmap(void *p, size_t n);

/*
 * Hand the allocator's free pages back to the system now (jemalloc: purge every arena; malloc:
 * malloc_trim) instead of when they decay: after work whose peak is far above what stays, such
 * as an open that recovers every key and then evicts down to a memory budget. Process-wide:
 * the free pages of every arena go, the host application's too (jemalloc would return them
 * when they decay, ~10 s later). Any thread; its cost grows with the free memory there is.
 */
void htkv_mem_give_back(void);

/* Test hook: when set and returning true, the next allocation fails. */
extern bool (*htkv_mem_fail_hook)(size_t n);

/*
 * Write all @p n bytes of @p p at @p off of @p fd (short writes and EINTR retried), with fault
 * injection (HTKV_FAULT_WRITE, torn writes included). 0 or -errno.
 */
int htkv_pwrite_all(int fd, const void *p, size_t n, off_t off);

/*
 * Memory arenas. Built with jemalloc (HTKV_JEMALLOC), every allocation of the library goes
 * through mallocx()/rallocx()/dallocx(), whatever malloc the process uses, so memory from any
 * arena is freed by htkv_mem_free() from any thread. A store leases one arena per worker (one
 * for the whole store in inline mode): each worker thread is bound to its arena, and the shards
 * it owns allocate their entries, hash tables and trie nodes from it from any other thread too
 * (recovery, compaction, inline writers). Arenas return to a process-wide pool at close and are
 * reused, so opening and closing stores does not create arenas without bound.
 *
 * An arena handle is its jemalloc index + 1; 0 is "the calling thread's default" and is all
 * there is without jemalloc (sanitizer and fuzz builds), where these calls fall back to malloc.
 */
int htkv_arena_lease(unsigned *out);     /* 0 (*out = handle, 0 without jemalloc) or -ENOMEM */
void htkv_arena_release(unsigned arena); /* back to the pool; 0 is ignored */
void htkv_arena_bind(unsigned arena);    /* the calling thread allocates from it by default */
/* Bytes allocated now from the @p n arenas @p arenas (0 for handle 0 and without jemalloc). */
uint64_t htkv_arenas_allocated(const unsigned *arenas, unsigned n);
void *htkv_mem_alloc_in(unsigned arena, size_t n);
void *htkv_mem_calloc_in(unsigned arena, size_t n, size_t size);
void *htkv_mem_realloc_in(unsigned arena, void *p, size_t n);

/* Thread-local error detail behind htkv_last_error(). printf-style. */
void htkv_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void htkv_clear_error(void);
/* Set the thread's error detail to "@p fn: invalid argument" and return -EINVAL, so that a call
 * refused for bad input never leaves an older, unrelated detail in htkv_last_error(). */
int htkv_einval(const char *fn);

static inline uint16_t
htkv_load16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t
htkv_load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint64_t
htkv_load64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void
htkv_store16(void *p, uint16_t v)
{
    memcpy(p, &v, sizeof(v));
}

static inline void
htkv_store32(void *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

static inline void
htkv_store64(void *p, uint64_t v)
{
    memcpy(p, &v, sizeof(v));
}

HTKV_STATIC_ASSERT(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
                   "on-disk formats are little-endian and read with plain loads");

static inline uint64_t
htkv_align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/* <0, 0, >0 as key @p a sorts before, equal to, after @p b: unsigned bytes, a proper prefix
 * first. */
static inline int
htkv_key_cmp(const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

/* Key bytes [skip, skip + 8) as a big-endian number, zero-padded past the key's end: unsigned
 * comparison of two of them orders the keys as memcmp would those 8 bytes. */
static inline uint64_t
htkv_key_abbrev(const unsigned char *key, uint32_t klen, uint32_t skip)
{
    if (HTKV_LIKELY(klen >= skip + 8)) {
        uint64_t w;
        memcpy(&w, key + skip, 8);
        return __builtin_bswap64(w);
    }
    uint64_t a = 0;
    for (uint32_t i = skip; i < skip + 8; i++) {
        a = (a << 8) | (i < klen ? key[i] : 0);
    }
    return a;
}

#endif /* HTKV_ENGINE_INTERNAL_H */
