/*
 * alloc.c - every allocation of the library: jemalloc arenas (HTKV_JEMALLOC) or plain malloc,
 * and the allocation-failure test hook (declarations and the arena design in internal.h).
 *
 * Layer: base. Calls only the C library and jemalloc; nothing of the engine.
 *
 * Invariants
 *   1. Every allocation asks htkv_mem_fail_hook first (when set): a test can make any one fail,
 *      and callers turn NULL into -ENOMEM.
 *   2. Memory from any arena is freed by htkv_mem_free() from any thread (dallocx() finds the
 *      arena itself); arena handle 0 is the calling thread's default.
 *   3. A leased arena goes back to a process-wide pool at release and is reused, never
 *      destroyed: memory may still be in it.
 */
#include "engine/internal.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#ifdef HTKV_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif

bool (*htkv_mem_fail_hook)(size_t n);

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

void
htkv_mem_give_back(void)
{
    char name[64];
    snprintf(name, sizeof(name), "arena.%u.purge", (unsigned)MALLCTL_ARENAS_ALL);
    (void)mallctl(name, NULL, NULL, NULL, 0);
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

void
htkv_mem_give_back(void)
{
    (void)malloc_trim(0);
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

void *
htkv_mem_map(size_t n)
{
    if (htkv_mem_fail_hook != NULL && htkv_mem_fail_hook(n)) {
        return NULL;
    }
    /* Populated in the call: such a buffer is written whole at once, and one fault per page
     * costs far more than the kernel filling the range in one pass. */
    void *p = mmap(NULL, n > 0 ? n : 1, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void
htkv_mem_unmap(void *p, size_t n)
{
    if (p != NULL) {
        munmap(p, n > 0 ? n : 1);
    }
}

void
htkv_free(void *p)
{
    htkv_mem_free(p);
}
