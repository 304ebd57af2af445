/*
 * htkv_perf.c - load generator for the TARGETS.md workloads on this machine.
 *
 * The store lives in --dir (default /tmp/htkv-perf-<pid>) and is removed at the end.
 * Usage: htkv-perf [--workload NAME|all] [--trials N] [--workers N] [--threads N]
 *                  [--backend auto|uring|sync] [--dir PATH] [--csv]
 * Workloads (one caller thread unless --threads):
 *   put_small   16 B keys / 64 B values, 1M puts, INTERVAL mode
 *   put_medium  16 B / 512 B, 200k puts
 *   put_large   32 B / 4 KiB, 50k puts
 *   get_hot     4,096 keys, store open, 4M gets
 *   get_cold    same keys after close + reopen, 4M gets
 *   durable_put each put fdatasync'ed (ALWAYS), 2,000 puts
 *   concurrent_durable  --threads (default 16) callers, each put in ALWAYS mode
 *   prefix      10,000 keys: 1,000 "app:user:%08d" + 9,000 random 24 B, 128 B values;
 *               htkv_get_prefix("app:user:") iterated to the end (1,000 results), 2,000 times;
 *               reported in queries/s (x1000 = results/s)
 * Each workload runs --trials times (default 3) on a fresh store; the median and the spread
 * (min..max) are printed in operations per second.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <htkv/htkv.h>

struct opts {
    const char *workload;
    const char *dir;
    int trials;
    int workers;
    int threads;
    int backend;
    int csv;
};

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void
die(int rc, const char *what)
{
    fprintf(stderr, "htkv-perf: %s: %s %s\n", what, htkv_strerror(rc), htkv_last_error());
    exit(1);
}

static void
rm_store(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "htkv-perf: cannot remove %s\n", dir);
        exit(1);
    }
}

static htkv_db *
open_store(const struct opts *o, int sync_mode)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = o->dir;
    cfg.worker_threads = (unsigned)o->workers;
    cfg.sync_mode = sync_mode;
    cfg.io_backend = o->backend;
    htkv_db *db;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        die(rc, "open");
    }
    return db;
}

static void
make_key(char *k, size_t klen, uint64_t i)
{
    /* Fixed-width, spread keys: a multiplicative hash of i in hex. */
    uint64_t x = i * 0x9E3779B97F4A7C15ull;
    static const char hex[] = "0123456789abcdef";
    for (size_t j = 0; j < klen; j++) {
        k[j] = hex[(x >> ((j % 16) * 4)) & 15];
        if (j % 16 == 15) {
            x = x * 0xC2B2AE3D27D4EB4Full + i;
        }
    }
}

static double
run_puts(const struct opts *o, size_t klen, size_t vlen, uint64_t n, int sync_mode)
{
    rm_store(o->dir);
    htkv_db *db = open_store(o, sync_mode);
    char key[64];
    char *val = malloc(vlen);
    memset(val, 'v', vlen);
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        make_key(key, klen, i);
        int rc = htkv_put(db, key, klen, val, vlen);
        if (rc != 0) {
            die(rc, "put");
        }
    }
    double t = now_s() - t0;
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    free(val);
    return (double)n / t;
}

static double
run_gets(const struct opts *o, int cold)
{
    const uint64_t keys = 4096, n = 4000000;
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_INTERVAL);
    char key[16], val[64];
    memset(val, 'v', sizeof(val));
    for (uint64_t i = 0; i < keys; i++) {
        make_key(key, sizeof(key), i);
        int rc = htkv_put(db, key, sizeof(key), val, sizeof(val));
        if (rc != 0) {
            die(rc, "put");
        }
    }
    if (cold) {
        int rc = htkv_close(db);
        if (rc != 0) {
            die(rc, "close");
        }
        db = open_store(o, HTKV_SYNC_INTERVAL);
    }
    char out[64];
    size_t vlen;
    double t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        make_key(key, sizeof(key), i & (keys - 1));
        int rc = htkv_get(db, key, sizeof(key), out, sizeof(out), &vlen);
        if (rc != 0) {
            die(rc, "get");
        }
    }
    double t = now_s() - t0;
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    return (double)n / t;
}

struct cd_arg {
    htkv_db *db;
    int id;
    uint64_t n;
};

static void *
cd_main(void *p)
{
    struct cd_arg *a = p;
    char key[16], val[64];
    memset(val, 'd', sizeof(val));
    for (uint64_t i = 0; i < a->n; i++) {
        make_key(key, sizeof(key), ((uint64_t)a->id << 32) | i);
        int rc = htkv_put(a->db, key, sizeof(key), val, sizeof(val));
        if (rc != 0) {
            die(rc, "put");
        }
    }
    return NULL;
}

static double
run_concurrent_durable(const struct opts *o)
{
    int threads = o->threads > 0 ? o->threads : 16;
    const uint64_t per = 500;
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_ALWAYS);
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    struct cd_arg *a = calloc((size_t)threads, sizeof(*a));
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        a[i] = (struct cd_arg){ .db = db, .id = i, .n = per };
        pthread_create(&t[i], NULL, cd_main, &a[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
    }
    double el = now_s() - t0;
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    free(t);
    free(a);
    return (double)(per * (uint64_t)threads) / el;
}

static double
run_prefix(const struct opts *o)
{
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_INTERVAL);
    uint64_t rng = 1234;
    unsigned char key[32], val[128];
    for (int i = 0; i < 10000; i++) {
        size_t klen;
        if (i < 1000) {
            klen = (size_t)snprintf((char *)key, sizeof(key), "app:user:%08d", i);
        } else {
            klen = 24;
            for (size_t j = 0; j < klen; j++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                key[j] = (unsigned char)(rng >> 56);
            }
        }
        for (size_t j = 0; j < sizeof(val); j++) {
            val[j] = (unsigned char)(i + j);
        }
        int rc = htkv_put(db, key, klen, val, sizeof(val));
        if (rc != 0) {
            die(rc, "put");
        }
    }
    const int queries = 2000;
    uint64_t sum = 0;
    double t0 = now_s();
    for (int q = 0; q < queries; q++) {
        htkv_iter *it;
        int rc = htkv_get_prefix(db, "app:user:", 9, &it);
        if (rc != 0) {
            die(rc, "get_prefix");
        }
        const void *k, *v;
        size_t kl, vl;
        int n = 0;
        while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
            sum += vl;
            n++;
        }
        if (rc != 0 || n != 1000) {
            die(rc != 0 ? rc : -EIO, "prefix results");
        }
        htkv_iter_destroy(it);
    }
    double t = now_s() - t0;
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    (void)sum;
    return (double)queries / t;
}

static double
run_one(const struct opts *o, const char *w)
{
    if (strcmp(w, "prefix") == 0) {
        return run_prefix(o);
    }
    if (strcmp(w, "put_small") == 0) {
        return run_puts(o, 16, 64, 1000000, HTKV_SYNC_INTERVAL);
    }
    if (strcmp(w, "put_medium") == 0) {
        return run_puts(o, 16, 512, 200000, HTKV_SYNC_INTERVAL);
    }
    if (strcmp(w, "put_large") == 0) {
        return run_puts(o, 32, 4096, 50000, HTKV_SYNC_INTERVAL);
    }
    if (strcmp(w, "get_hot") == 0) {
        return run_gets(o, 0);
    }
    if (strcmp(w, "get_cold") == 0) {
        return run_gets(o, 1);
    }
    if (strcmp(w, "durable_put") == 0) {
        return run_puts(o, 16, 64, 2000, HTKV_SYNC_ALWAYS);
    }
    if (strcmp(w, "concurrent_durable") == 0) {
        return run_concurrent_durable(o);
    }
    fprintf(stderr, "htkv-perf: unknown workload %s\n", w);
    exit(2);
}

static int
cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    static char default_dir[64];
    snprintf(default_dir, sizeof(default_dir), "/tmp/htkv-perf-%d", (int)getpid());
    struct opts o = { .workload = "all", .dir = default_dir, .trials = 3, .workers = 0 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--workload") == 0 && i + 1 < argc) {
            o.workload = argv[++i];
        } else if (strcmp(argv[i], "--trials") == 0 && i + 1 < argc) {
            o.trials = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            o.workers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            o.threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            o.dir = argv[++i];
        } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            i++;
            o.backend = strcmp(argv[i], "sync") == 0    ? HTKV_IO_SYNC
                        : strcmp(argv[i], "uring") == 0 ? HTKV_IO_URING
                                                        : HTKV_IO_AUTO;
        } else if (strcmp(argv[i], "--csv") == 0) {
            o.csv = 1;
        } else {
            fprintf(stderr, "usage: htkv-perf [--workload NAME|all] [--trials N] [--workers N] "
                            "[--threads N] [--backend auto|uring|sync] [--dir PATH] [--csv]\n");
            return 2;
        }
    }
    if (o.trials < 1 || o.trials > 99) {
        o.trials = 3;
    }
    static const char *all[] = { "put_small", "put_medium", "put_large",   "get_hot",
                                 "get_cold",  "prefix",     "durable_put", "concurrent_durable" };
    size_t nw = sizeof(all) / sizeof(all[0]);
    const char **list = all;
    if (strcmp(o.workload, "all") != 0) {
        list = &o.workload;
        nw = 1;
    }
    if (o.csv) {
        printf("workload,workers,threads,median_ops_s,min_ops_s,max_ops_s\n");
    }
    for (size_t w = 0; w < nw; w++) {
        double r[99];
        for (int t = 0; t < o.trials; t++) {
            r[t] = run_one(&o, list[w]);
        }
        qsort(r, (size_t)o.trials, sizeof(double), cmp_d);
        double med = r[o.trials / 2];
        if (o.csv) {
            printf("%s,%d,%d,%.0f,%.0f,%.0f\n", list[w], o.workers, o.threads, med, r[0],
                   r[o.trials - 1]);
        } else {
            printf("%-20s workers=%d  median %10.0f ops/s  (min %.0f, max %.0f, %d trials)\n",
                   list[w], o.workers, med, r[0], r[o.trials - 1], o.trials);
        }
        fflush(stdout);
    }
    rm_store(o.dir);
    return 0;
}
