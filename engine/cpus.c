/*
 * cpus.c - the CPUs this process may really use: affinity mask and cgroup quota, v2 or v1 (cpus.h).
 *
 * Invariants
 *   1. htkv_cpus_available() is at least 1 and at most the CPUs of the affinity mask (or the
 *      online CPUs when the mask cannot be read).
 *   2. A quota lowers the figure, never raises it; an unreadable or malformed quota file is no
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

/* ceil(@p quota / @p period), at least 1. */
static unsigned
cpus_of(unsigned long long quota, unsigned long long period)
{
    unsigned long long cpus = quota / period + (quota % period != 0);
    return cpus > UINT_MAX ? UINT_MAX : (unsigned)cpus;
}

/* One unsigned decimal number, alone on the first line of the file at @p path (or "-1" when
 * @p minus_one_ok, read as 0); false when unreadable or malformed. */
static bool
read_number(const char *path, bool minus_one_ok, unsigned long long *out)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return false;
    }
    char text[32];
    bool ok = fscanf(f, "%31s", text) == 1;
    fclose(f);
    if (!ok) {
        return false;
    }
    if (minus_one_ok && strcmp(text, "-1") == 0) {
        *out = 0;
        return true;
    }
    char *end;
    *out = strtoull(text, &end, 10);
    return text[0] >= '0' && text[0] <= '9' && *end == '\0';
}

/* The quota of the cgroup directory @p dir: v2's cpu.max ("QUOTA PERIOD", "max" = none) or
 * v1's cpu.cfs_quota_us ("-1" = none) over cpu.cfs_period_us. 0 for none, unreadable or
 * malformed. */
static unsigned
quota_of(const char *dir)
{
    char path[PATH_MAX];
    int w = snprintf(path, sizeof(path), "%s/cpu.max", dir);
    FILE *f = w > 0 && (size_t)w < sizeof(path) ? fopen(path, "re") : NULL;
    if (f != NULL) {
        char quota[32];
        uint64_t period = 0;
        int n = fscanf(f, "%31s %" SCNu64, quota, &period);
        fclose(f);
        if (n != 2 || period == 0 || strcmp(quota, "max") == 0) {
            return 0;
        }
        char *end;
        unsigned long long q = strtoull(quota, &end, 10);
        return *end == '\0' && q != 0 ? cpus_of(q, period) : 0;
    }
    unsigned long long q = 0, period = 0;
    char ppath[PATH_MAX];
    w = snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
    int wp = snprintf(ppath, sizeof(ppath), "%s/cpu.cfs_period_us", dir);
    if (w <= 0 || (size_t)w >= sizeof(path) || wp <= 0 || (size_t)wp >= sizeof(ppath) ||
        !read_number(path, true, &q) || q == 0 || !read_number(ppath, false, &period) ||
        period == 0) {
        return 0;
    }
    return cpus_of(q, period);
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
        int w = snprintf(path, sizeof(path), "%s%.*s", root, (int)len, cg);
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

/* Whether the comma-separated @p list names @p item. */
static bool
list_has(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list;; p++) {
        if (strncmp(p, item, n) == 0 && (p[n] == ',' || p[n] == '\0')) {
            return true;
        }
        p = strchr(p, ',');
        if (p == NULL) {
            return false;
        }
    }
}

/* This process's cgroup path into @p buf from /proc/self/cgroup: the v2 one ("0::PATH") when
 * @p v1_controller is NULL, else the v1 one whose hierarchy has that controller
 * ("N:cpu,cpuacct:PATH"). False when there is none. */
static bool
own_cgroup(const char *v1_controller, char *buf, size_t cap)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL) {
        return false;
    }
    char line[PATH_MAX + 64];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        size_t end = strcspn(line, "\n");
        if (line[end] != '\n' && !feof(f)) {
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
            continue; /* longer than any path: not ours to read */
        }
        line[end] = '\0';
        char *list = strchr(line, ':');
        char *path = list != NULL ? strchr(list + 1, ':') : NULL;
        if (path == NULL) {
            continue;
        }
        *path++ = '\0';
        list++;
        bool v2 = strcmp(line, "0") == 0 && *list == '\0';
        found = v1_controller == NULL ? v2 : !v2 && list_has(list, v1_controller);
        found = found && strlen(path) < cap;
        if (found) {
            memcpy(buf, path, strlen(path) + 1);
        }
    }
    fclose(f);
    return found;
}

/* The quota of this process's cgroup v1 "cpu" hierarchy: its mount (from /proc/self/mountinfo:
 * "ID PARENT DEV ROOT MOUNTPOINT OPTIONS ... - cgroup SOURCE SUPEROPTIONS"), where the cgroup
 * path below the mount's root is a directory. 0 for none. */
static unsigned
quota_v1(void)
{
    char cg[PATH_MAX];
    FILE *f = own_cgroup("cpu", cg, sizeof(cg)) ? fopen("/proc/self/mountinfo", "re") : NULL;
    if (f == NULL) {
        return 0;
    }
    char line[2 * PATH_MAX + 256];
    unsigned best = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char root[PATH_MAX], mnt[PATH_MAX], fstype[32], opts[256];
        const char *sep = strstr(line, " - ");
        if (sep == NULL || sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2 ||
            sscanf(sep + 3, "%31s %*s %255s", fstype, opts) != 2 || strcmp(fstype, "cgroup") != 0 ||
            !list_has(opts, "cpu")) {
            continue;
        }
        size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
        if (strncmp(cg, root, rl) == 0 && (cg[rl] == '/' || cg[rl] == '\0')) {
            unsigned q = htkv_cpus_quota(mnt, cg + rl);
            best = q != 0 && (best == 0 || q < best) ? q : best;
        }
    }
    fclose(f);
    return best;
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
    unsigned q2 = own_cgroup(NULL, cg, sizeof(cg)) ? htkv_cpus_quota("/sys/fs/cgroup", cg) : 0;
    unsigned q1 = quota_v1();
    n = q2 != 0 && q2 < n ? q2 : n;
    n = q1 != 0 && q1 < n ? q1 : n;
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
