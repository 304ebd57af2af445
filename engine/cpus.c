/*
 * cpus.c - the CPUs this process may really use: affinity mask and cgroup v2 quota (cpus.h).
 *
 * Invariants
 *   1. htkv_cpus_available() is at least 1 and at most the CPUs of the affinity mask (or the
 *      online CPUs when the mask cannot be read).
 *   2. A quota lowers the figure, never raises it; an unreadable or malformed cpu.max is no
 *      quota (the figure is advisory: nothing here may fail an open).
 * May call: libc only.
 */
#include "engine/cpus.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/internal.h"

/* ceil(QUOTA / PERIOD) of the cpu.max file at @p path; 0 for "max", unreadable or malformed. */
static unsigned
quota_of(const char *path)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return 0;
    }
    char quota[32];
    uint64_t period = 0;
    int n = fscanf(f, "%31s %" SCNu64, quota, &period);
    fclose(f);
    if (n != 2 || period == 0 || strcmp(quota, "max") == 0) {
        return 0;
    }
    char *end;
    unsigned long long q = strtoull(quota, &end, 10);
    if (*end != '\0' || q == 0) {
        return 0;
    }
    unsigned long long cpus = (q + period - 1) / period;
    return cpus > UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

unsigned
htkv_cpus_quota(const char *root, const char *cg)
{
    char path[PATH_MAX];
    unsigned best = 0;
    size_t len = strlen(cg);
    /* @p cg, then each ancestor up to the root: cut the path at its last '/' each round. */
    for (;;) {
        while (len > 0 && cg[len - 1] == '/') {
            len--;
        }
        int w = snprintf(path, sizeof(path), "%s%.*s/cpu.max", root, (int)len, cg);
        if (w > 0 && (size_t)w < sizeof(path)) {
            unsigned q = quota_of(path);
            best = q != 0 && (best == 0 || q < best) ? q : best;
        }
        if (len == 0) {
            return best;
        }
        while (len > 0 && cg[len - 1] != '/') {
            len--;
        }
    }
}

/* The cgroup v2 path of this process ("0::PATH" in /proc/self/cgroup) into @p buf; false when
 * there is none (cgroup v1 only, or no /proc). */
static bool
own_cgroup(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL) {
        return false;
    }
    char line[PATH_MAX + 8];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = '\0';
            size_t n = strlen(line + 3);
            found = n < cap;
            if (found) {
                memcpy(buf, line + 3, n + 1);
            }
        }
    }
    fclose(f);
    return found;
}

unsigned
htkv_cpus_available(void)
{
    unsigned n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = (unsigned)CPU_COUNT(&set);
    }
    if (n == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? (unsigned)online : 1;
    }
    char cg[PATH_MAX];
    if (own_cgroup(cg, sizeof(cg))) {
        unsigned q = htkv_cpus_quota("/sys/fs/cgroup", cg);
        n = q != 0 && q < n ? q : n;
    }
    HTKV_ASSERT(n >= 1); /* invariant 1 */
    return n;
}

/* The work htkv_parallel_for() shares out. */
struct parallel {
    void (*fn)(void *ctx, uint32_t i);
    void *ctx;
    uint32_t n;
    _Atomic uint32_t next;
};

static void *
parallel_thread(void *arg)
{
    struct parallel *p = arg;
    uint32_t i;
    while ((i = atomic_fetch_add(&p->next, 1)) < p->n) {
        p->fn(p->ctx, i);
    }
    return NULL;
}

void
htkv_parallel_for(uint32_t n, unsigned threads, void (*fn)(void *ctx, uint32_t i), void *ctx)
{
    struct parallel p = { .fn = fn, .ctx = ctx, .n = n };
    atomic_init(&p.next, 0);
    unsigned extra = threads > 1 ? threads - 1 : 0;
    extra = n == 0 || extra < n - 1 ? extra : n - 1;
    extra = extra < PARALLEL_THREADS_MAX ? extra : PARALLEL_THREADS_MAX;
    pthread_t tid[PARALLEL_THREADS_MAX];
    unsigned started = 0;
    while (started < extra && pthread_create(&tid[started], NULL, parallel_thread, &p) == 0) {
        started++; /* one that cannot be created leaves its share to the others */
    }
    parallel_thread(&p);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(tid[i], NULL);
    }
}
