/*
 * htkv_perf.c - load generator for the TARGETS.md workloads on this machine.
 *
 * The store lives in --dir (default /tmp/htkv-perf-<pid>) and is removed at the end.
 * Usage: htkv-perf [--workload NAME|all] [--trials N] [--workers N] [--shards N] [--threads N]
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
 *   compact     100,000 keys 16 B / 100 B written, then overwritten 9 more times (INTERVAL);
 *               htkv_compact_now() timed; reported in MB/s of records examined; a note line
 *               gives disk use after close (allocated blocks) against the live bytes
 *   reopen      1,000,000 keys 16 B / 100 B, closed (hint files written), then htkv_open()
 *               timed; reported in opens/s; a note line gives the milliseconds, with and
 *               without hint files (hint_files = 0: every record read and checked)
 *   budget      --keys (1M) keys 16 B / 100 B with memory_budget_bytes = --budget (16 MiB):
 *               puts, 1M uniform gets of present and of absent keys, 2 x 1M zipfian gets,
 *               reopen; notes give
 *               RssAnon/RssFile, the index against the budget and index pages read per get;
 *               reported in gets/s of present keys
 *   compaction_seed  the original's compaction scenario: 20,000 puts 16 B / 256 B with a delete
 *               of an earlier key every 5th, then htkv_compact_now() timed (ms in a note line)
 * Each workload runs --trials times (default 3) on a fresh store; the median and the spread
 * (min..max) are printed in operations per second. --store-budget BYTES sets the
 * memory_budget_bytes of their stores (default 0; the budget workload takes --budget).
 *
 * htkv-perf --sweep [--mix M] [--dist uniform|zipf] [--keys N] [--threads N] [--max-workers N]
 *                   [--seconds S] [--csv FILE] [--plot FILE.png]
 * runs one mix at worker_threads 0, 1, 2, 4, ... --max-workers (default 2 x online CPUs) with
 * --threads callers (default 4), each point on a fresh store of --keys (100,000) preloaded
 * 16 B / 64 B pairs (created durable with the point's workers for the durable mixes, so that
 * its shard count is that configuration's default), --seconds (2) measured after a warm-up; every
 * op is timed with CLOCK_MONOTONIC into a per-thread log-linear histogram. Mixes: put (100%
 * updates), ycsb-a (50% reads / 50% updates), ycsb-b (95/5), ycsb-c (100% reads), ycsb-d (95% reads
 * of recent keys, 5% inserts), ycsb-e (95% scans of 1..100 items from a --dist start key, 5%
 * inserts; one scan is one op), ycsb-f (50% reads, 50% read-modify-writes: get, change, put; one
 * op), durable (100% puts, HTKV_SYNC_ALWAYS), async (100% htkv_put_async(), up to ASYNC_WINDOW
 * writes of each caller in flight; an op is a write submitted, its latency the call's own time;
 * inline the write runs in the call), durable-async (async in HTKV_SYNC_ALWAYS). Prints one row
 * per point, then the recommended worker count: the highest throughput whose p99 is within 1.5x
 * of the best p99.
 *
 * htkv-perf --sweep-budget [--keys N] [--shards N] [--csv FILE] [--plot FILE.png]
 * puts --keys (1M) keys 16 B / 100 B under memory budgets of 1, 2, 5, 10, 25, 50 and 100% of
 * the index they take without one (measured first), each point a fresh store in a child process
 * (so that RssAnon is its own), then 1M uniform gets and twice 1M zipfian gets (the second
 * reported): one row per point with the keys in memory, the index, RssAnon, gets/s and key index
 * pages read per get; --plot draws gets/s and RssAnon against the budget (gnuplot).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <htkv/htkv.h>

struct opts {
    const char *workload;
    const char *dir;
    int trials;
    int workers;
    int shards; /* shard_count at creation; 0 = the default */
    int threads;
    int backend;
    int csv;
    uint64_t keys;         /* budget: keys loaded (0 = 1M) */
    uint64_t budget;       /* budget: memory_budget_bytes */
    uint64_t store_budget; /* --store-budget: memory_budget_bytes of every other workload */
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
    cfg.shard_count = (unsigned)o->shards;
    cfg.sync_mode = sync_mode;
    cfg.io_backend = o->backend;
    cfg.memory_budget_bytes = o->store_budget;
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

/* Bytes allocated to the files of the store (st_blocks), as du counts them. */
static uint64_t
disk_use(const char *dir)
{
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "du -s -B1 '%s'", dir);
    FILE *p = popen(cmd, "r");
    unsigned long long n = 0;
    if (p == NULL || fscanf(p, "%llu", &n) != 1) {
        fprintf(stderr, "htkv-perf: du failed\n");
        exit(1);
    }
    pclose(p);
    return n;
}

static double
run_compact(const struct opts *o)
{
    const uint64_t keys = 100000;
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_INTERVAL);
    char key[16], val[100];
    for (int round = 0; round < 10; round++) {
        memset(val, 'a' + round, sizeof(val));
        for (uint64_t i = 0; i < keys; i++) {
            make_key(key, sizeof(key), i);
            int rc = htkv_put(db, key, sizeof(key), val, sizeof(val));
            if (rc != 0) {
                die(rc, "put");
            }
        }
    }
    struct htkv_stats a, b;
    if (htkv_stats(db, &a) != 0) {
        die(-EIO, "stats");
    }
    double t0 = now_s();
    int rc = htkv_compact_now(db);
    double t = now_s() - t0;
    if (rc != 0) {
        die(rc, "compact_now");
    }
    if (htkv_stats(db, &b) != 0) {
        die(-EIO, "stats");
    }
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    uint64_t disk = disk_use(o->dir);
    uint64_t raw = keys * (sizeof(key) + sizeof(val));
    printf("# compact: %.1f ms, %.1f MiB examined, %.1f MiB copied; disk after close %.1f MiB "
           "(%.2fx the live records' %.1f MiB, %.2fx the raw key+value bytes); before: data "
           "%.1f MiB\n",
           t * 1e3, (double)b.compaction_read_bytes / 1048576.0,
           (double)b.compaction_written_bytes / 1048576.0, (double)disk / 1048576.0,
           (double)disk / (double)b.live_bytes, (double)b.live_bytes / 1048576.0,
           (double)disk / (double)raw, (double)a.data_bytes / 1048576.0);
    return (double)(b.compaction_read_bytes - a.compaction_read_bytes) / 1e6 / t;
}

static double
time_open(const struct opts *o, int hints)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = o->dir;
    cfg.worker_threads = (unsigned)o->workers;
    cfg.io_backend = o->backend;
    cfg.hint_files = hints;
    cfg.compaction_interval_ms = 0;
    htkv_db *db;
    double t0 = now_s();
    int rc = htkv_open(&cfg, &db);
    double t = now_s() - t0;
    if (rc != 0) {
        die(rc, "open");
    }
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    return t;
}

static double
run_reopen(const struct opts *o)
{
    const uint64_t keys = 1000000;
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_INTERVAL);
    char key[16], val[100];
    memset(val, 'r', sizeof(val));
    for (uint64_t i = 0; i < keys; i++) {
        make_key(key, sizeof(key), i);
        int rc = htkv_put(db, key, sizeof(key), val, sizeof(val));
        if (rc != 0) {
            die(rc, "put");
        }
    }
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    double scan = time_open(o, 0); /* no hint used; the close after it leaves them in place */
    double hinted = time_open(o, 1);
    printf("# reopen 1M keys: %.1f ms with hint files, %.1f ms reading every record\n",
           hinted * 1e3, scan * 1e3);
    return 1.0 / hinted;
}

static double
run_compaction_seed(const struct opts *o)
{
    rm_store(o->dir);
    htkv_db *db = open_store(o, HTKV_SYNC_INTERVAL);
    uint64_t x = 999;
    unsigned char key[16], val[256], prev[16] = { 0 };
    memset(val, 's', sizeof(val));
    for (int i = 0; i < 20000; i++) {
        for (size_t j = 0; j < sizeof(key); j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            key[j] = (unsigned char)(x >> 56);
        }
        int rc = htkv_put(db, key, sizeof(key), val, sizeof(val));
        if (rc == 0 && i % 5 == 4) {
            /* Delete a key written earlier: 4,000 tombstones and 4,000 dead records, as the
             * original's scenario leaves for its compaction. */
            rc = htkv_delete(db, prev, sizeof(prev));
        }
        if (i % 5 == 0) {
            memcpy(prev, key, sizeof(key));
        }
        if (rc != 0) {
            die(rc, "setup");
        }
    }
    double t0 = now_s();
    int rc = htkv_compact_now(db);
    double t = now_s() - t0;
    if (rc != 0) {
        die(rc, "compact_now");
    }
    printf("# compaction_seed: htkv_compact_now %.2f ms (the original: 118 ms)\n", t * 1e3);
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    return 1.0 / t;
}

static double run_budget(const struct opts *o);

static double
run_one(const struct opts *o, const char *w)
{
    if (strcmp(w, "budget") == 0) {
        return run_budget(o);
    }
    if (strcmp(w, "compact") == 0) {
        return run_compact(o);
    }
    if (strcmp(w, "reopen") == 0) {
        return run_reopen(o);
    }
    if (strcmp(w, "compaction_seed") == 0) {
        return run_compaction_seed(o);
    }
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

/* ---- --sweep: throughput and latency against worker_threads ---------------------------- */

/* libm is not linked: natural log and exp for the zipf set-up, accurate to ~1e-15. */
static double
my_log(double x)
{
    /* x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh((m-1)/(m+1)). */
    uint64_t b;
    memcpy(&b, &x, sizeof(b));
    int e = (int)((b >> 52) & 0x7ff) - 1023;
    b = (b & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &b, sizeof(m));
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e++;
    }
    double s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0;
    for (int k = 1; k < 60; k += 2) {
        sum += term / k;
        term *= s2;
    }
    return 2.0 * sum + (double)e * 0.6931471805599453;
}

static double
my_exp(double x)
{
    /* x = k ln2 + r, |r| <= ln2/2; e^r by Taylor series, times 2^k. */
    double kd = x / 0.6931471805599453;
    long k = (long)(kd < 0 ? kd - 0.5 : kd + 0.5);
    double r = x - (double)k * 0.6931471805599453, term = 1.0, sum = 1.0;
    for (int i = 1; i < 30; i++) {
        term *= r / i;
        sum += term;
    }
    while (k > 0) {
        sum *= 2.0;
        k--;
    }
    while (k < 0) {
        sum *= 0.5;
        k++;
    }
    return sum;
}

static double
my_pow(double x, double y)
{
    return x <= 0.0 ? 0.0 : my_exp(y * my_log(x));
}

/* Zipfian ranks in [0, n), Gray et al., "Quickly generating billion-record synthetic
 * databases" (SIGMOD 1994): zeta(n) computed once at start, then each draw is O(1). */
struct zipf {
    uint64_t n;
    double theta, alpha, zetan, eta, half_pow_theta;
};

static void
zipf_init(struct zipf *z, uint64_t n, double theta)
{
    double zetan = 0.0;
    for (uint64_t i = 1; i <= n; i++) {
        zetan += 1.0 / my_pow((double)i, theta);
    }
    double zeta2 = 1.0 + 1.0 / my_pow(2.0, theta);
    z->n = n;
    z->theta = theta;
    z->alpha = 1.0 / (1.0 - theta);
    z->zetan = zetan;
    z->eta = (1.0 - my_pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - zeta2 / zetan);
    z->half_pow_theta = my_pow(0.5, theta);
}

static uint64_t
zipf_next(const struct zipf *z, double u)
{
    double uz = u * z->zetan;
    if (uz < 1.0) {
        return 0;
    }
    if (uz < 1.0 + z->half_pow_theta) {
        return 1;
    }
    uint64_t r = (uint64_t)((double)z->n * my_pow(z->eta * u - z->eta + 1.0, z->alpha));
    return r < z->n ? r : z->n - 1;
}

/* Grow @p z to ranks [0, n) as keys are inserted: add the new terms of zeta(n), recompute eta.
 * O(new keys); each caller thread extends its own copy (ycsb-e). */
static void
zipf_extend(struct zipf *z, uint64_t n)
{
    if (n <= z->n) {
        return;
    }
    for (uint64_t i = z->n + 1; i <= n; i++) {
        z->zetan += 1.0 / my_pow((double)i, z->theta);
    }
    double zeta2 = 1.0 + z->half_pow_theta; /* 1 + 1/2^theta */
    z->n = n;
    z->eta = (1.0 - my_pow(2.0 / (double)n, 1.0 - z->theta)) / (1.0 - zeta2 / z->zetan);
}

static uint64_t
rng_next(uint64_t *s)
{
    /* SplitMix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double
rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* A "Name:  N kB" field of /proc/self/status in MiB (0 if absent). */
static double
status_mib(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = 0;
    size_t n = strlen(name);
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            v = strtod(line + n + 1, NULL) / 1024.0;
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

static void
budget_note(htkv_db *db, const char *when)
{
    struct htkv_stats st;
    int rc = htkv_stats(db, &st);
    if (rc != 0) {
        die(rc, "stats");
    }
    printf("# budget %s: RssAnon %.1f MiB, RssFile %.1f MiB, index %.1f MiB + trie %.1f MiB, "
           "hot %llu, cold %llu keys, %llu key index files (%.2f MiB), %llu evictions, %llu "
           "promotions\n",
           when, status_mib("RssAnon"), status_mib("RssFile"), st.index_bytes / 1048576.0,
           st.trie_bytes / 1048576.0, (unsigned long long)st.hot_keys,
           (unsigned long long)st.cold_keys, (unsigned long long)st.kix_files,
           st.kix_bytes / 1048576.0, (unsigned long long)st.evictions,
           (unsigned long long)st.promotions);
}

enum budget_dist { BUDGET_UNIFORM, BUDGET_ABSENT, BUDGET_ZIPF };

/* @p n gets of present keys drawn uniformly or by a zipfian law (theta 0.99: key i is the
 * i-th most read), or of absent keys: gets/s, and key index pages read per get (*@p reads). */
static double
budget_gets(htkv_db *db, uint64_t keys, uint64_t n, enum budget_dist d, double *reads)
{
    struct zipf z;
    if (d == BUDGET_ZIPF) {
        zipf_init(&z, keys, 0.99);
    }
    uint64_t seed = 42;
    struct htkv_stats a, b;
    if (htkv_stats(db, &a) != 0) {
        die(-1, "stats");
    }
    char key[16], out[128];
    size_t vlen;
    uint64_t x = 88172645463325252ull;
    double t0 = now_s();
    for (uint64_t g = 0; g < n; g++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t i = d == BUDGET_ZIPF ? zipf_next(&z, rng_unit(&seed)) : x % keys;
        make_key(key, sizeof(key), d == BUDGET_ABSENT ? keys + i : i);
        int rc = htkv_get(db, key, sizeof(key), out, sizeof(out), &vlen);
        if (rc != (d == BUDGET_ABSENT ? HTKV_ENOTFOUND : 0)) {
            die(rc, "get");
        }
    }
    double t = now_s() - t0;
    if (htkv_stats(db, &b) != 0) {
        die(-1, "stats");
    }
    *reads = (double)(b.kix_page_reads - a.kix_page_reads) / (double)n;
    return (double)n / t;
}

/*
 * budget: --keys (default 1M) keys 16 B / 100 B put with memory_budget_bytes = --budget (default
 * 16 MiB), then 1M uniform gets of present keys, 1M of absent ones, and twice 1M zipfian gets
 * (the second pass reported), then close and reopen;
 * notes give RssAnon/RssFile, the index against the budget, reads per get, and the reopen time.
 * Reported: gets/s of present keys.
 */
/* A fresh store in o->dir under @p budget (*@p cfg, kept for a reopen) with @p keys keys
 * 16 B / 100 B put inline; the seconds the puts took in *@p secs. */
static htkv_db *
budget_load(const struct opts *o, htkv_config *cfg, uint64_t keys, uint64_t budget, double *secs)
{
    rm_store(o->dir);
    htkv_config_init(cfg);
    cfg->data_dir = o->dir;
    cfg->shard_count = (unsigned)o->shards;
    cfg->memory_budget_bytes = budget;
    htkv_db *db;
    int rc = htkv_open(cfg, &db);
    if (rc != 0) {
        die(rc, "open");
    }
    char key[16], val[100];
    memset(val, 'b', sizeof(val));
    double t0 = now_s();
    for (uint64_t i = 0; i < keys; i++) {
        make_key(key, sizeof(key), i);
        if ((rc = htkv_put(db, key, sizeof(key), val, sizeof(val))) != 0) {
            die(rc, "put");
        }
    }
    *secs = now_s() - t0;
    return db;
}

/* nftw() callback of drop_store_cache(): write the file back and drop it from the page cache. */
static int
drop_file_cache(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_F) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            (void)fdatasync(fd);
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    return 0;
}

/* Write every file of store @p dir back and drop it from the page cache. */
static void
drop_store_cache(const char *dir)
{
    if (nftw(dir, drop_file_cache, 16, FTW_PHYS) != 0) {
        fprintf(stderr, "htkv-perf: cannot walk %s\n", dir);
    }
}

/* Reopen the store of @p cfg (with its files out of the page cache first when @p cold), timed. */
static htkv_db *
budget_reopen(const htkv_config *cfg, bool cold)
{
    if (cold) {
        drop_store_cache(cfg->data_dir);
    }
    htkv_db *db;
    double t0 = now_s();
    int rc = htkv_open(cfg, &db);
    if (rc != 0) {
        die(rc, "reopen");
    }
    double ms = (now_s() - t0) * 1e3;
    struct htkv_stats st;
    if ((rc = htkv_stats(db, &st)) != 0) {
        die(rc, "stats");
    }
    printf("# budget reopen%s: %.1f ms, %llu keys left cold, %llu records read\n",
           cold ? " with the files out of the page cache" : "", ms,
           (unsigned long long)st.cold_keys_at_open, (unsigned long long)st.recovered_records);
    budget_note(db, cold ? "after the cold reopen" : "after reopen");
    return db;
}

/* Every key of budget_load() reads back with its value: dies otherwise. */
static void
budget_verify(htkv_db *db, uint64_t keys)
{
    char key[16], out[128], want[100];
    memset(want, 'b', sizeof(want));
    double t0 = now_s();
    for (uint64_t i = 0; i < keys; i++) {
        size_t vlen = 0;
        make_key(key, sizeof(key), i);
        int rc = htkv_get(db, key, sizeof(key), out, sizeof(out), &vlen);
        if (rc != 0 || vlen != sizeof(want) || memcmp(out, want, vlen) != 0) {
            die(rc != 0 ? rc : -1, "a key after reopen");
        }
    }
    printf("# budget after reopen: all %llu keys read back with their values (%.1f s)\n",
           (unsigned long long)keys, now_s() - t0);
}

static double
run_budget(const struct opts *o)
{
    const uint64_t keys = o->keys > 0 ? o->keys : 1000000, n = 1000000;
    htkv_config cfg;
    double tput;
    htkv_db *db = budget_load(o, &cfg, keys, o->budget, &tput);
    int rc;
    budget_note(db, "after puts");
    double hit_reads, miss_reads, zipf_reads;
    double hits = budget_gets(db, keys, n, BUDGET_UNIFORM, &hit_reads);
    double misses = budget_gets(db, keys, n, BUDGET_ABSENT, &miss_reads);
    (void)budget_gets(db, keys, n, BUDGET_ZIPF, &zipf_reads); /* its hot keys come in */
    double zipf = budget_gets(db, keys, n, BUDGET_ZIPF, &zipf_reads);
    printf("# budget %.1f MiB, %llu keys: puts %.0f/s; uniform gets %.0f/s (%.2f index pages a "
           "get), misses %.0f/s (%.3f pages a miss), zipfian gets %.0f/s (%.2f pages a get)\n",
           o->budget / 1048576.0, (unsigned long long)keys, (double)keys / tput, hits, hit_reads,
           misses, miss_reads, zipf, zipf_reads);
    budget_note(db, "after gets");
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    db = budget_reopen(&cfg, false);
    budget_verify(db, keys);
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    db = budget_reopen(&cfg, true);
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    return hits;
}

/* ---- --sweep-budget: gets and memory against the budget ------------------------------------ */

/* One point of the budget sweep. */
struct budget_row {
    double pct;       /* the budget, in % of the index every key needs (100 = none) */
    uint64_t budget;  /* memory_budget_bytes (0 = none) */
    double hot_pct;   /* keys in memory after the gets, % */
    double rss_anon;  /* MiB, after the puts and gets */
    double index_mib; /* index + trie, MiB */
    double uniform;   /* gets/s */
    double zipf;      /* gets/s, second pass */
    double u_pages;   /* key index pages read per uniform get */
    double z_pages;   /* per zipfian get */
};

/* Load @p keys keys under @p budget, then gets as run_budget() does; in a child process, so that
 * RssAnon is this point's alone. */
static void
budget_point_child(const struct opts *o, uint64_t keys, struct budget_row *r)
{
    htkv_config cfg;
    double secs;
    htkv_db *db = budget_load(o, &cfg, keys, r->budget, &secs);
    int rc;
    const uint64_t n = 1000000;
    r->uniform = budget_gets(db, keys, n, BUDGET_UNIFORM, &r->u_pages);
    (void)budget_gets(db, keys, n, BUDGET_ZIPF, &r->z_pages); /* its hot keys come in */
    r->zipf = budget_gets(db, keys, n, BUDGET_ZIPF, &r->z_pages);
    struct htkv_stats st;
    if ((rc = htkv_stats(db, &st)) != 0) {
        die(rc, "stats");
    }
    r->rss_anon = status_mib("RssAnon");
    r->index_mib = (double)(st.index_bytes + st.trie_bytes) / 1048576.0;
    r->hot_pct = st.hot_keys + st.cold_keys > 0
                     ? 100.0 * (double)st.hot_keys / (double)(st.hot_keys + st.cold_keys)
                     : 100.0;
    if ((rc = htkv_close(db)) != 0) {
        die(rc, "close");
    }
    rm_store(o->dir);
}

static void
budget_point(const struct opts *o, uint64_t keys, struct budget_row *r)
{
    int fd[2];
    if (pipe(fd) != 0) {
        die(-errno, "pipe");
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        die(-errno, "fork");
    }
    if (pid == 0) {
        close(fd[0]);
        budget_point_child(o, keys, r);
        _exit(write(fd[1], r, sizeof(*r)) == (ssize_t)sizeof(*r) ? 0 : 1);
    }
    close(fd[1]);
    ssize_t got = read(fd[0], r, sizeof(*r));
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (got != (ssize_t)sizeof(*r) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        die(-EIO, "budget point (child process)");
    }
}

static int on_path(const char *prog);

static void
budget_plot(const char *file, uint64_t keys, const struct budget_row *r, int n)
{
    FILE *g = on_path("gnuplot") ? popen("gnuplot", "w") : NULL;
    if (g == NULL) {
        printf("plot: skipped (gnuplot is not on PATH or cannot start); %s not written\n", file);
        return;
    }
    fprintf(g, "set terminal png size 900,540\nset output '%s'\n", file);
    fprintf(g, "set title 'htkv-perf --sweep-budget: %llu keys 16 B / 100 B, inline'\n",
            (unsigned long long)keys);
    fprintf(g, "set xlabel 'memory budget (%% of the index all keys need)'\nset logscale x\n"
               "set ylabel 'gets/s'\nset y2label 'RssAnon (MiB)'\nset ytics nomirror\n"
               "set y2tics\nset yrange [0:*]\nset y2range [0:*]\nset key top left\nset grid\n");
    fprintf(g, "plot '-' using 1:2 axes x1y1 with linespoints lw 2 title 'uniform gets/s', "
               "'-' using 1:2 axes x1y1 with linespoints lw 2 title 'zipfian gets/s', "
               "'-' using 1:2 axes x1y2 with linespoints lw 2 dt 2 title 'RssAnon MiB'\n");
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < n; i++) {
            double y = k == 0 ? r[i].uniform : k == 1 ? r[i].zipf : r[i].rss_anon;
            fprintf(g, "%.2f %.2f\n", r[i].pct, y);
        }
        fprintf(g, "e\n");
    }
    int st = pclose(g);
    printf(st == 0 ? "plot: %s\n" : "plot: gnuplot failed for %s\n", file);
}

/*
 * --sweep-budget: --keys (1M) keys under budgets of 1% to 100% of the index they need without
 * one (measured first), each point a fresh store in a child process: uniform and zipfian gets/s,
 * index pages per get, keys in memory, RssAnon. Table on stdout; --csv FILE, --plot FILE.png.
 */
static int
run_sweep_budget(const struct opts *o, const char *csv, const char *plot)
{
    static const double pct[] = { 1, 2, 5, 10, 25, 50, 100 };
    const int n = (int)(sizeof(pct) / sizeof(pct[0]));
    const uint64_t keys = o->keys > 0 ? o->keys : 1000000;
    struct budget_row rows[sizeof(pct) / sizeof(pct[0])], full = { .pct = 100 };
    budget_point(o, keys, &full);
    uint64_t need = (uint64_t)(full.index_mib * 1048576.0);
    printf("# htkv-perf --sweep-budget: %llu keys 16 B / 100 B, inline, --shards %d (0: the "
           "default); without a "
           "budget the index takes %.1f MiB\n",
           (unsigned long long)keys, o->shards, full.index_mib);
    printf("%7s %10s %7s %10s %10s %12s %12s %8s %8s\n", "budget%", "budget MiB", "hot%",
           "index MiB", "RssAnon", "uniform/s", "zipf/s", "pages/u", "pages/z");
    FILE *c = csv != NULL ? fopen(csv, "w") : NULL;
    if (c != NULL) {
        fprintf(c, "budget_pct,budget_bytes,hot_pct,index_mib,rss_anon_mib,uniform_gets_s,"
                   "zipf_gets_s,pages_per_uniform_get,pages_per_zipf_get\n");
    }
    for (int i = 0; i < n; i++) {
        rows[i] = (struct budget_row){ .pct = pct[i] };
        rows[i].budget = pct[i] >= 100 ? 0 : (uint64_t)((double)need * pct[i] / 100.0) + 1;
        budget_point(o, keys, &rows[i]);
        const struct budget_row *r = &rows[i];
        printf("%7.0f %10.2f %7.1f %10.1f %10.1f %12.0f %12.0f %8.2f %8.2f\n", r->pct,
               r->budget / 1048576.0, r->hot_pct, r->index_mib, r->rss_anon, r->uniform, r->zipf,
               r->u_pages, r->z_pages);
        if (c != NULL) {
            fprintf(c, "%.0f,%llu,%.2f,%.2f,%.2f,%.0f,%.0f,%.3f,%.3f\n", r->pct,
                    (unsigned long long)r->budget, r->hot_pct, r->index_mib, r->rss_anon,
                    r->uniform, r->zipf, r->u_pages, r->z_pages);
        }
        fflush(stdout);
    }
    if (c != NULL) {
        fclose(c);
    }
    if (plot != NULL) {
        budget_plot(plot, keys, rows, n);
    }
    return 0;
}

/* Log-linear latency histogram in ns: exact below 64 ns, then 32 sub-buckets per power of two
 * (relative error under 3.2%). */
#define HIST_SUB 32
#define HIST_BUCKETS (64 + 58 * HIST_SUB)

struct hist {
    uint64_t b[HIST_BUCKETS];
    uint64_t count;
};

static unsigned
hist_index(uint64_t v)
{
    if (v < 64) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - 5)) & (HIST_SUB - 1);
    return 64u + (msb - 6u) * HIST_SUB + sub;
}

static double
hist_value(unsigned i)
{
    /* midpoint of bucket i, in ns */
    if (i < 64) {
        return (double)i;
    }
    unsigned msb = (i - 64u) / HIST_SUB + 6u, sub = (i - 64u) % HIST_SUB;
    double width = (double)(1ull << (msb - 5));
    return (double)(1ull << msb) + (double)sub * width + width / 2.0;
}

static double
hist_quantile_us(const struct hist *h, double q)
{
    if (h->count == 0) {
        return 0.0;
    }
    uint64_t want = (uint64_t)(q * (double)h->count);
    if (want >= h->count) {
        want = h->count - 1;
    }
    uint64_t cum = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        cum += h->b[i];
        if (cum > want) {
            return hist_value(i) / 1000.0;
        }
    }
    return hist_value(HIST_BUCKETS - 1) / 1000.0;
}

enum mix {
    MIX_PUT,
    MIX_YCSB_A,
    MIX_YCSB_B,
    MIX_YCSB_C,
    MIX_YCSB_D,
    MIX_YCSB_E,
    MIX_YCSB_F,
    MIX_DURABLE,
    MIX_ASYNC,
    MIX_DURABLE_ASYNC
};

/* Indexed by enum mix; --mix accepts exactly these. */
static const char *const mix_names[] = { "put",    "ycsb-a", "ycsb-b",  "ycsb-c", "ycsb-d",
                                         "ycsb-e", "ycsb-f", "durable", "async",  "durable-async" };
#define MIX_COUNT (sizeof(mix_names) / sizeof(mix_names[0]))
_Static_assert(MIX_COUNT == MIX_DURABLE_ASYNC + 1, "one name per mix, in enum order");

/* async mixes: writes of one caller in flight at most (submitted, callback not run yet). */
#define ASYNC_WINDOW 1024u

/* ycsb-e: items per scan, uniform in [1, SCAN_LEN_MAX] (YCSB's default maxscanlength). */
#define SCAN_LEN_MAX 100u

struct sweep_opts {
    const char *mix_name;
    enum mix mix;
    int zipf;
    uint64_t keys;
    int max_workers;
    int threads;
    double seconds;
    double warmup;
    const char *csv_file;
    const char *plot_file;
};

struct sweep_shared {
    htkv_db *db;
    const struct sweep_opts *so;
    const struct zipf *z;
    _Atomic int phase;         /* 0 warm-up, 1 measured, 2 stop */
    _Atomic uint64_t next_key; /* ycsb-d/e: keys inserted so far (indexes 0..next_key-1) */
};

struct sweep_thread {
    struct sweep_shared *sh;
    pthread_t tid;
    uint64_t seed;
    _Atomic uint64_t ops;      /* measured ops, read by the progress line */
    _Atomic uint64_t inflight; /* async mixes: submitted, callback not run yet */
    _Atomic int failed;        /* async mixes: a callback's error */
    struct hist *h;
};

static void
async_done(int rc, uint64_t version, void *ctx)
{
    struct sweep_thread *t = ctx;
    (void)version;
    if (rc != 0) {
        atomic_store_explicit(&t->failed, rc, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&t->inflight, 1, memory_order_release);
}

/* async mixes: one htkv_put_async() once the caller has room in its window. */
static int
sweep_async_put(struct sweep_thread *t, const char *key, size_t klen, const char *val, size_t vlen)
{
    while (atomic_load_explicit(&t->inflight, memory_order_acquire) >= ASYNC_WINDOW) {
        sched_yield();
    }
    atomic_fetch_add_explicit(&t->inflight, 1, memory_order_relaxed);
    int rc;
    while ((rc = htkv_put_async(t->sh->db, key, klen, val, vlen, async_done, t)) == HTKV_EBUSY) {
        sched_yield();
    }
    if (rc != 0) {
        atomic_fetch_sub_explicit(&t->inflight, 1, memory_order_relaxed);
    }
    int failed = atomic_load_explicit(&t->failed, memory_order_relaxed);
    return rc != 0 ? rc : failed;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Key index of the next operation; an insert (ycsb-d, ycsb-e) takes a new one. @p z is the
 * thread's own copy of the zipf generator (ycsb-e grows it with the key space). */
static uint64_t
sweep_pick(struct sweep_shared *sh, struct zipf *z, uint64_t *s, int is_read)
{
    const struct sweep_opts *so = sh->so;
    if (so->mix != MIX_YCSB_D && so->mix != MIX_YCSB_E) {
        return so->zipf ? zipf_next(z, rng_unit(s)) : rng_next(s) % so->keys;
    }
    if (!is_read) {
        return atomic_fetch_add_explicit(&sh->next_key, 1, memory_order_relaxed);
    }
    uint64_t n = atomic_load_explicit(&sh->next_key, memory_order_relaxed);
    if (so->mix == MIX_YCSB_D) {
        /* "latest": zipfian distance back from the newest key */
        uint64_t back = so->zipf ? zipf_next(z, rng_unit(s)) : rng_next(s) % so->keys;
        return back < n ? n - 1 - back : 0;
    }
    /* ycsb-e: a scan starts at any key inserted so far. An index whose insert is still in
     * flight is harmless: the scan then starts at the next key in order. */
    if (!so->zipf) {
        return rng_next(s) % n;
    }
    zipf_extend(z, n);
    return zipf_next(z, rng_unit(s));
}

/* ycsb-e: htkv_scan() from @p key, @p len items at most, each read to the end. */
static int
sweep_scan(htkv_db *db, const char *key, size_t klen, uint64_t len)
{
    htkv_iter *it;
    int rc = htkv_scan(db, key, klen, NULL, 0, &it);
    if (rc != 0) {
        return rc;
    }
    rc = htkv_iter_set_limit(it, len);
    uint64_t items = 0;
    /* Items are consumed in place: htkv_iter_next() hands out views into the segments. */
    while (rc == 0 && (rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
        items++;
        rc = 0;
    }
    htkv_iter_destroy(it);
    if (rc == 0 && items > len) {
        rc = -EIO; /* the limit was not honoured */
    }
    return rc;
}

/* ycsb-f: read @p key, change 8 bytes of the value (at an offset and with a mask from @p r), write
 * it back. Plain get + put: another caller's write in between is overwritten (no condition). */
static int
sweep_rmw(htkv_db *db, const char *key, size_t klen, uint64_t r)
{
    char buf[64];
    size_t vlen;
    int rc = htkv_get(db, key, klen, buf, sizeof(buf), &vlen);
    if (rc != 0) {
        return rc;
    }
    if (vlen < 8) {
        return -EIO; /* every value of the sweep is 64 B */
    }
    size_t off = (size_t)(r >> 56) % (vlen - 7);
    for (size_t j = 0; j < 8; j++) {
        buf[off + j] ^= (char)((r >> (8 * j)) | 1); /* | 1: every byte changes */
    }
    return htkv_put(db, key, klen, buf, vlen);
}

static void *
sweep_main(void *p)
{
    struct sweep_thread *t = p;
    struct sweep_shared *sh = t->sh;
    const struct sweep_opts *so = sh->so;
    struct zipf z = *sh->z;
    uint64_t s = t->seed, ops = 0;
    char key[16], val[64], out[64];
    memset(val, 'y', sizeof(val));
    int read_pct = so->mix == MIX_YCSB_A   ? 50
                   : so->mix == MIX_YCSB_B ? 95
                   : so->mix == MIX_YCSB_C ? 100
                   : so->mix == MIX_YCSB_D ? 95
                   : so->mix == MIX_YCSB_E ? 95 /* scans */
                   : so->mix == MIX_YCSB_F ? 50 /* the rest read-modify-write */
                                           : 0;
    int phase;
    while ((phase = atomic_load_explicit(&sh->phase, memory_order_relaxed)) != 2) {
        int is_read = (int)(rng_next(&s) % 100) < read_pct;
        uint64_t idx = sweep_pick(sh, &z, &s, is_read);
        /* Scan length (ycsb-e) or modification (ycsb-f), drawn outside the timed region. */
        uint64_t r = so->mix == MIX_YCSB_E || so->mix == MIX_YCSB_F ? rng_next(&s) : 0;
        make_key(key, sizeof(key), idx);
        const char *what = is_read ? "get" : "put";
        uint64_t t0 = now_ns();
        int rc;
        if (is_read && so->mix == MIX_YCSB_E) {
            what = "scan";
            rc = sweep_scan(sh->db, key, sizeof(key), 1 + r % SCAN_LEN_MAX);
        } else if (is_read) {
            size_t vlen;
            rc = htkv_get(sh->db, key, sizeof(key), out, sizeof(out), &vlen);
        } else if (so->mix == MIX_YCSB_F) {
            what = "read-modify-write";
            rc = sweep_rmw(sh->db, key, sizeof(key), r);
        } else if (so->mix == MIX_ASYNC || so->mix == MIX_DURABLE_ASYNC) {
            rc = sweep_async_put(t, key, sizeof(key), val, sizeof(val));
        } else {
            rc = htkv_put(sh->db, key, sizeof(key), val, sizeof(val));
        }
        uint64_t t1 = now_ns();
        if (rc != 0 && !(rc == HTKV_ENOTFOUND && so->mix == MIX_YCSB_D)) {
            die(rc, what);
        }
        if (phase == 1) {
            t->h->b[hist_index(t1 - t0)]++;
            t->h->count++;
            ops++;
            if ((ops & 1023) == 0) {
                atomic_store_explicit(&t->ops, ops, memory_order_relaxed);
            }
        }
    }
    atomic_store_explicit(&t->ops, ops, memory_order_relaxed);
    while (atomic_load_explicit(&t->inflight, memory_order_acquire) > 0) {
        sched_yield(); /* the callbacks point at t */
    }
    return NULL;
}

struct sweep_row {
    int workers;
    double ops_s, p50, p99, p999;
};

static void
sleep_s(double s)
{
    struct timespec ts = { .tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t
sum_ops(struct sweep_thread *t, int n)
{
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        sum += atomic_load_explicit(&t[i].ops, memory_order_relaxed);
    }
    return sum;
}

/* Put @p keys keys 16 B / 64 B (make_key()) into @p db, in batches of 4,096. */
static void
sweep_preload(htkv_db *db, uint64_t keys)
{
    char key[16], val[64];
    memset(val, 'p', sizeof(val));
    htkv_batch *b;
    int rc = htkv_batch_create(&b);
    for (uint64_t i = 0; i < keys && rc == 0; i++) {
        make_key(key, sizeof(key), i);
        rc = htkv_batch_put(b, key, sizeof(key), val, sizeof(val));
        if (rc == 0 && (htkv_batch_count(b) == 4096 || i + 1 == keys)) {
            rc = htkv_write(db, b);
            htkv_batch_clear(b);
        }
    }
    if (rc != 0) {
        die(rc, "preload");
    }
    htkv_batch_destroy(b);
}

static struct sweep_row
sweep_point(const struct opts *o, const struct sweep_opts *so, const struct zipf *z, int workers)
{
    int tty = isatty(2);
    /* Preload, then reopen with the point's workers and sync mode. The store is created in the
     * point's sync mode, with its workers for a durable one: the shard count is fixed at
     * creation and its default depends on both (htkv.h, shard_count), and a durable store
     * created otherwise would sync every shard of 2 x CPUs separately. A durable preload goes
     * in batches (one fdatasync each). */
    rm_store(o->dir);
    bool durable = so->mix == MIX_DURABLE || so->mix == MIX_DURABLE_ASYNC;
    struct opts po = *o;
    po.workers = durable ? workers : 0;
    htkv_db *db = open_store(&po, durable ? HTKV_SYNC_ALWAYS : HTKV_SYNC_INTERVAL);
    sweep_preload(db, so->keys);
    int rc = htkv_close(db);
    if (rc != 0) {
        die(rc, "close");
    }
    po.workers = workers;
    struct sweep_shared sh = { .db = open_store(&po, so->mix == MIX_DURABLE ||
                                                             so->mix == MIX_DURABLE_ASYNC
                                                         ? HTKV_SYNC_ALWAYS
                                                         : HTKV_SYNC_INTERVAL),
                               .so = so,
                               .z = z };
    atomic_init(&sh.phase, 0);
    atomic_init(&sh.next_key, so->keys);
    struct sweep_thread *t = calloc((size_t)so->threads, sizeof(*t));
    if (t == NULL) {
        die(-ENOMEM, "calloc");
    }
    for (int i = 0; i < so->threads; i++) {
        t[i].sh = &sh;
        t[i].seed = 0x5eed0000ull + (uint64_t)workers * 1000u + (uint64_t)i;
        atomic_init(&t[i].ops, 0);
        atomic_init(&t[i].inflight, 0);
        atomic_init(&t[i].failed, 0);
        t[i].h = calloc(1, sizeof(struct hist));
        if (t[i].h == NULL) {
            die(-ENOMEM, "calloc");
        }
        if (pthread_create(&t[i].tid, NULL, sweep_main, &t[i]) != 0) {
            die(-EAGAIN, "pthread_create");
        }
    }
    if (tty) {
        fprintf(stderr, "\r\033[K[sweep %s] workers=%d: warm-up %.2f s", so->mix_name, workers,
                so->warmup);
    }
    sleep_s(so->warmup);
    atomic_store(&sh.phase, 1);
    double t0 = now_s(), el = 0.0;
    while ((el = now_s() - t0) < so->seconds) {
        double left = so->seconds - el;
        sleep_s(left < 0.25 ? left : 0.25);
        if (tty) {
            el = now_s() - t0;
            fprintf(stderr, "\r\033[K[sweep %s] workers=%d: %.1f / %.1f s, %.0f ops/s so far",
                    so->mix_name, workers, el, so->seconds,
                    el > 0 ? (double)sum_ops(t, so->threads) / el : 0.0);
        }
    }
    atomic_store(&sh.phase, 2);
    el = now_s() - t0;
    struct hist *all = calloc(1, sizeof(*all));
    if (all == NULL) {
        die(-ENOMEM, "calloc");
    }
    for (int i = 0; i < so->threads; i++) {
        pthread_join(t[i].tid, NULL);
        for (unsigned b = 0; b < HIST_BUCKETS; b++) {
            all->b[b] += t[i].h->b[b];
        }
        all->count += t[i].h->count;
        free(t[i].h);
    }
    if (tty) {
        fprintf(stderr, "\r\033[K");
    }
    rc = htkv_close(sh.db);
    if (rc != 0) {
        die(rc, "close");
    }
    struct sweep_row r = { .workers = workers,
                           .ops_s = (double)all->count / el,
                           .p50 = hist_quantile_us(all, 0.50),
                           .p99 = hist_quantile_us(all, 0.99),
                           .p999 = hist_quantile_us(all, 0.999) };
    free(all);
    free(t);
    return r;
}

static int
on_path(const char *prog)
{
    const char *path = getenv("PATH");
    if (path == NULL) {
        return 0;
    }
    char buf[4096];
    while (*path) {
        const char *c = strchr(path, ':');
        size_t len = c ? (size_t)(c - path) : strlen(path);
        if (len > 0 && len + strlen(prog) + 2 < sizeof(buf)) {
            snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, prog);
            if (access(buf, X_OK) == 0) {
                return 1;
            }
        }
        path += len + (c ? 1 : 0);
    }
    return 0;
}

static void
sweep_plot(const struct sweep_opts *so, const struct sweep_row *r, int n)
{
    if (!on_path("gnuplot")) {
        printf("plot: skipped (gnuplot is not on PATH); %s not written\n", so->plot_file);
        return;
    }
    FILE *g = popen("gnuplot", "w");
    if (g == NULL) {
        printf("plot: skipped (cannot start gnuplot: %s)\n", strerror(errno));
        return;
    }
    fprintf(g, "set terminal png size 900,540\n");
    fprintf(g, "set output '%s'\n", so->plot_file);
    fprintf(g, "set title 'htkv-perf --sweep --mix %s --dist %s, %d caller threads'\n",
            so->mix_name, so->zipf ? "zipf" : "uniform", so->threads);
    fprintf(g, "set xlabel 'worker threads'\nset ylabel 'throughput (ops/s)'\n"
               "set y2label 'p99 latency (us)'\nset ytics nomirror\nset y2tics\n"
               "set yrange [0:*]\nset y2range [0:*]\nset key top left\nset grid\n");
    fprintf(g, "plot '-' using 1:2 axes x1y1 with linespoints lw 2 title 'throughput', "
               "'-' using 1:2 axes x1y2 with linespoints lw 2 title 'p99'\n");
    for (int i = 0; i < n; i++) {
        fprintf(g, "%d %.0f\n", r[i].workers, r[i].ops_s);
    }
    fprintf(g, "e\n");
    for (int i = 0; i < n; i++) {
        fprintf(g, "%d %.3f\n", r[i].workers, r[i].p99);
    }
    fprintf(g, "e\n");
    int st = pclose(g);
    if (st != 0) {
        printf("plot: gnuplot failed (status %d)\n", st);
    } else {
        printf("plot: %s\n", so->plot_file);
    }
}

static int
run_sweep(const struct opts *o, struct sweep_opts *so)
{
    int found = 0;
    for (size_t i = 0; i < MIX_COUNT; i++) {
        if (strcmp(so->mix_name, mix_names[i]) == 0) {
            so->mix = (enum mix)i;
            found = 1;
        }
    }
    if (!found) {
        fprintf(stderr, "htkv-perf: unknown --mix %s (", so->mix_name);
        for (size_t i = 0; i < MIX_COUNT; i++) {
            fprintf(stderr, "%s%s", i > 0 ? ", " : "", mix_names[i]);
        }
        fprintf(stderr, ")\n");
        return 2;
    }
    if (so->threads < 1) {
        so->threads = 4;
    }
    if (so->max_workers < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        so->max_workers = 2 * (int)(cpus > 0 ? cpus : 1);
    }
    if (so->keys < 2) {
        so->keys = 2;
    }
    if (so->seconds <= 0) {
        so->seconds = 2;
    }
    so->warmup = so->seconds / 4 < 0.5 ? so->seconds / 4 : 0.5;
    struct zipf z;
    zipf_init(&z, so->keys, 0.99);

    int counts[40], n = 0;
    counts[n++] = 0;
    for (int w = 1; w <= so->max_workers && n < 38; w *= 2) {
        counts[n++] = w;
    }
    if (so->max_workers > counts[n - 1]) {
        counts[n++] = so->max_workers;
    }
    printf("# htkv-perf --sweep: mix %s, dist %s, %llu keys preloaded (16 B / 64 B), "
           "%d caller threads, %.1f s per point after %.2f s warm-up, %ld online CPUs\n",
           so->mix_name, so->zipf ? "zipf (theta 0.99)" : "uniform", (unsigned long long)so->keys,
           so->threads, so->seconds, so->warmup, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%8s %14s %10s %10s %10s\n", "workers", "ops/s", "p50 us", "p99 us", "p99.9 us");
    fflush(stdout);
    struct sweep_row rows[40];
    for (int i = 0; i < n; i++) {
        rows[i] = sweep_point(o, so, &z, counts[i]);
        printf("%8d %14.0f %10.2f %10.2f %10.2f\n", rows[i].workers, rows[i].ops_s, rows[i].p50,
               rows[i].p99, rows[i].p999);
        fflush(stdout);
    }
    rm_store(o->dir);

    int best_lat = 0;
    for (int i = 1; i < n; i++) {
        if (rows[i].p99 < rows[best_lat].p99) {
            best_lat = i;
        }
    }
    int rec = -1;
    for (int i = 0; i < n; i++) {
        if (rows[i].p99 <= 1.5 * rows[best_lat].p99 &&
            (rec < 0 || rows[i].ops_s > rows[rec].ops_s)) {
            rec = i;
        }
    }
    printf("recommended worker_threads = %d: %.0f ops/s with p99 %.2f us, the highest throughput "
           "among points whose p99 is within 1.5x of the best p99 (%.2f us at workers=%d)\n",
           rows[rec].workers, rows[rec].ops_s, rows[rec].p99, rows[best_lat].p99,
           rows[best_lat].workers);

    if (so->csv_file != NULL) {
        FILE *f = fopen(so->csv_file, "w");
        if (f == NULL) {
            fprintf(stderr, "htkv-perf: cannot write %s: %s\n", so->csv_file, strerror(errno));
            return 1;
        }
        fprintf(f, "mix,dist,keys,threads,workers,ops_s,p50_us,p99_us,p999_us\n");
        for (int i = 0; i < n; i++) {
            fprintf(f, "%s,%s,%llu,%d,%d,%.0f,%.3f,%.3f,%.3f\n", so->mix_name,
                    so->zipf ? "zipf" : "uniform", (unsigned long long)so->keys, so->threads,
                    rows[i].workers, rows[i].ops_s, rows[i].p50, rows[i].p99, rows[i].p999);
        }
        fclose(f);
        printf("csv: %s\n", so->csv_file);
    }
    if (so->plot_file != NULL) {
        sweep_plot(so, rows, n);
    }
    return 0;
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
    struct opts o = {
        .workload = "all", .dir = default_dir, .trials = 3, .workers = 0, .budget = 16u << 20
    };
    struct sweep_opts so = {
        .mix_name = "ycsb-a", .keys = 100000, .max_workers = -1, .seconds = 2.0
    };
    int sweep = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--sweep") == 0) {
            sweep = 1;
        } else if (strcmp(argv[i], "--sweep-budget") == 0) {
            sweep = 2;
        } else if (strcmp(argv[i], "--mix") == 0 && i + 1 < argc) {
            so.mix_name = argv[++i];
        } else if (strcmp(argv[i], "--dist") == 0 && i + 1 < argc) {
            i++;
            if (strcmp(argv[i], "zipf") == 0) {
                so.zipf = 1;
            } else if (strcmp(argv[i], "uniform") == 0) {
                so.zipf = 0;
            } else {
                fprintf(stderr, "htkv-perf: --dist uniform|zipf\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc) {
            so.keys = o.keys = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc) {
            o.budget = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--store-budget") == 0 && i + 1 < argc) {
            o.store_budget = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--max-workers") == 0 && i + 1 < argc) {
            so.max_workers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            so.seconds = strtod(argv[++i], NULL);
        } else if (strcmp(argv[i], "--plot") == 0 && i + 1 < argc) {
            so.plot_file = argv[++i];
        } else if (strcmp(argv[i], "--workload") == 0 && i + 1 < argc) {
            o.workload = argv[++i];
        } else if (strcmp(argv[i], "--trials") == 0 && i + 1 < argc) {
            o.trials = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            o.workers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            o.threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc) {
            o.shards = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            o.dir = argv[++i];
        } else if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            i++;
            o.backend = strcmp(argv[i], "sync") == 0    ? HTKV_IO_SYNC
                        : strcmp(argv[i], "uring") == 0 ? HTKV_IO_URING
                                                        : HTKV_IO_AUTO;
        } else if (strcmp(argv[i], "--csv") == 0) {
            o.csv = 1;
            if (i + 1 < argc && argv[i + 1][0] != '-') {
                so.csv_file = argv[++i]; /* --csv FILE: the sweep's rows */
            }
        } else {
            fprintf(stderr,
                    "usage: htkv-perf [--workload NAME|all] [--trials N] [--workers N] "
                    "[--shards N] [--threads N] [--backend auto|uring|sync] [--dir PATH] [--csv] "
                    "[--store-budget BYTES]\n"
                    "       htkv-perf --workload budget [--keys N] [--budget BYTES]\n"
                    "       htkv-perf --sweep-budget [--keys N] [--csv FILE] [--plot FILE.png]\n"
                    "       htkv-perf --sweep [--mix put|ycsb-a|ycsb-b|ycsb-c|ycsb-d|"
                    "ycsb-e|ycsb-f|durable|async|durable-async] [--dist uniform|zipf] [--keys N] "
                    "[--threads N] "
                    "[--max-workers N] "
                    "[--seconds S] [--csv FILE] [--plot FILE.png] [--backend ...] [--dir PATH]\n");
            return 2;
        }
    }
    if (sweep == 2) {
        return run_sweep_budget(&o, so.csv_file, so.plot_file);
    }
    if (sweep) {
        so.threads = o.threads;
        return run_sweep(&o, &so);
    }
    if (o.trials < 1 || o.trials > 99) {
        o.trials = 3;
    }
    static const char *all[] = { "put_small", "put_medium", "put_large",      "get_hot",
                                 "get_cold",  "prefix",     "durable_put",    "concurrent_durable",
                                 "compact",   "reopen",     "compaction_seed" };
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
