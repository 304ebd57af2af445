/*
 * htkv_peers.cc - htkv side by side with Debian's RocksDB, LevelDB, LMDB, Tkrzw (tree and hash
 * databases) and WiredTiger on the TARGETS.md workloads, in one run. Tkrzw and WiredTiger are
 * compiled in when CMake found their packages.
 *
 * Usage: htkv-peers [--trials N] [--quick] [--rows a,b,..] [--engines a,b,..] [--cpu N]
 *                   [--no-pin] [--cap S] [--bulk-cap S] [--bulk N] [--dir PATH]
 *
 * Method
 *   - Every (trial, workload, engine) runs in a forked child on a fresh directory, so that the
 *     stores do not share a heap, threads or peak RSS; the child sends its figures back through
 *     a pipe. Trials are interleaved: for each trial, each workload, each engine in turn (the
 *     engine order rotates from trial to trial). Median and min..max over the trials.
 *   - Single-caller workloads pin the calling thread to one CPU (sched_setaffinity on the
 *     thread, after the store is open): threads a store starts at open (htkv's workers) keep
 *     every CPU; threads it starts later from the caller (RocksDB's and LevelDB's background
 *     threads are started lazily) inherit the pin.
 *   - Non-durable rows use each store's natural fast mode: htkv's default configuration
 *     (HTKV_SYNC_INTERVAL, htkv_config_init()'s worker_threads, which is 0: writes applied on
 *     the caller's thread), RocksDB and LevelDB with the log and sync = false, LMDB with
 *     MDB_NOSYNC ("LMDB wm": also MDB_WRITEMAP). "htkv w0" sets worker_threads = 0 explicitly
 *     (the same as the default since inline became it), shown for information; goals are
 *     judged on the default configuration.
 *     Tkrzw: default tunings, Set only (no log, nothing synced until close). WiredTiger: the
 *     default connection configuration (no log: writes reach the disk at the checkpoint that
 *     close takes).
 *   - Durable rows: htkv HTKV_SYNC_ALWAYS, RocksDB/LevelDB WriteOptions.sync = true, LMDB
 *     without MDB_NOSYNC (with MDB_WRITEMAP for "LMDB wm"), Tkrzw Synchronize(true) after each
 *     put and batch, WiredTiger log=(enabled=true), transaction_sync=(enabled=true,
 *     method=fsync).
 *   - cold_cache: the stores that bound their index memory, with the same bound (16 MiB):
 *     htkv's memory_budget_bytes, RocksDB's block cache with a Bloom filter of 10 bits a key.
 *     1M random puts 16 B / 100 B, close; every file of the store written back and dropped from
 *     the page cache (fdatasync + POSIX_FADV_DONTNEED), reopen (timed), dropped again, 100k
 *     random gets of present keys, dropped again, 100k of absent ones.
 *   - Rows a store cannot run are skipped for it (shown "—"): prefix on Tkrzw's hash database
 *     (no key order); cold_cache on htkv and RocksDB only; get_latency runs on htkv only;
 * concurrent_durable (16 threads on one handle) on every store, all of them taking writes from
 * several threads.
 *   - Keys are 16 or 32 pseudo-random bytes (the first 8 a bijection of the operation number,
 *     so distinct), values windows of a 1 MiB pseudo-random pool; no sample is kept in memory,
 *     so the bulk row's peak RSS is the store's plus the harness's few MiB (reported). The bulk
 *     row also reports RssAnon and RssFile (/proc/self/status) with the store open: memory is
 *     compared on RssAnon, since file pages (LMDB's and Tkrzw's maps) are the kernel's cache.
 *   - Every timed phase stops after its operation count or after --cap seconds (--bulk-cap
 *     for the bulk row), whichever comes first; a capped figure is marked and its count shown.
 *   - Results are checked: every get must find its value (content compared on a sample),
 *     prefix queries must return exactly the 1,000 keys, sorted.
 */
#include "engine.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

namespace
{

using peers::Engine;

/* ---- clock, data ---- */

double
now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/* SplitMix64's finaliser: a bijection of 64-bit integers. */
inline uint64_t
mix(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Key number i of a key space (seed): klen >= 8 bytes, the first 8 distinct for distinct i. */
inline void
make_key(unsigned char *k, size_t klen, uint64_t i, uint64_t seed)
{
    uint64_t x = mix(i ^ seed);
    std::memcpy(k, &x, 8);
    for (size_t j = 8; j < klen; j += 8) {
        x = mix(x + j);
        std::memcpy(k + j, &x, klen - j < 8 ? klen - j : 8);
    }
}

/* Key number i in ascending byte order: i big-endian in the first 8 bytes, then make_key's
 * bytes (the same for every i of a length: the order is the counter's). */
inline void
make_key_seq(unsigned char *k, size_t klen, uint64_t i, uint64_t seed)
{
    make_key(k, klen, 0, seed);
    for (int b = 0; b < 8; b++) {
        k[b] = static_cast<unsigned char>(i >> (56 - 8 * b));
    }
}

using KeyFn = void (*)(unsigned char *, size_t, uint64_t, uint64_t);

constexpr size_t kPool = 1u << 20;
constexpr size_t kMaxValue = 4096;

class Pool
{
  public:
    Pool() : bytes_(kPool + kMaxValue)
    {
        for (size_t i = 0; i < bytes_.size(); i += 8) {
            uint64_t x = mix(i * 31 + 7);
            std::memcpy(&bytes_[i], &x, std::min<size_t>(8, bytes_.size() - i));
        }
    }
    /* The value of key number i. */
    const unsigned char *value(uint64_t i, uint64_t seed) const
    {
        return bytes_.data() + mix(i ^ (seed * 0x2545F4914F6CDD1Dull)) % kPool;
    }

  private:
    std::vector<unsigned char> bytes_;
};

/* ---- configuration ---- */

struct Sizes {
    uint64_t put_small = 300000, put_medium = 100000, put_large = 30000;
    uint64_t gets = 1000000, prefix_queries = 10000, batches = 64, bulk = 1000000;
    uint64_t cold = 1000000, cold_gets = 100000, cold_budget = 16u << 20;
    uint64_t durable = 2000, group_batches = 500, conc_per_thread = 1000, lat_gets = 200000;
};

struct Ctx {
    std::string dir; /* the store's directory for this run */
    int cpu = -1;    /* pin single-caller rows here; -1 = no pin */
    double cap = 2.0, bulk_cap = 40.0;
    Sizes n;
    bool htkv = false; /* the engine is htkv (thread-safe handle) */
};

struct Metric {
    char name[24];
    double value;
    uint64_t ops;
    int capped;
};

struct Result {
    int ok;
    char err[400];
    int n;
    Metric m[12];
    double base_rss_mib; /* the child's RSS before it opened the store */
};

void
add(Result &r, const char *name, double v, uint64_t ops = 0, bool capped = false)
{
    if (r.n < static_cast<int>(sizeof(r.m) / sizeof(r.m[0]))) {
        Metric &m = r.m[r.n++];
        std::snprintf(m.name, sizeof(m.name), "%s", name);
        m.value = v;
        m.ops = ops;
        m.capped = capped ? 1 : 0;
    }
}

void
pin(const Ctx &c)
{
    if (c.cpu < 0) {
        return;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(c.cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) { /* 0: the calling thread */
        throw std::runtime_error(std::string("sched_setaffinity: ") + std::strerror(errno));
    }
}

[[noreturn]] void
wrong(const std::string &what)
{
    throw std::runtime_error("wrong result: " + what);
}

/* Get key number i (seed) and check its length, and its bytes when full. */
void
check_get(Engine &e, const Pool &pool, uint64_t i, uint64_t seed, size_t klen, size_t vlen,
          bool full, KeyFn key = make_key)
{
    unsigned char k[32], buf[kMaxValue];
    key(k, klen, i, seed);
    long got = e.get(k, klen, buf, sizeof(buf));
    if (got < 0) {
        wrong("key #" + std::to_string(i) + " not found");
    }
    if (static_cast<size_t>(got) != vlen) {
        wrong("key #" + std::to_string(i) + ": value of " + std::to_string(got) + " bytes");
    }
    if (full && std::memcmp(buf, pool.value(i, seed), vlen) != 0) {
        wrong("key #" + std::to_string(i) + ": value differs");
    }
}

/* Check a sample of 256 keys of the first n written. */
void
check_sample(Engine &e, const Pool &pool, uint64_t n, uint64_t seed, size_t klen, size_t vlen,
             KeyFn key = make_key)
{
    for (uint64_t j = 0; j < 256 && n > 0; j++) {
        check_get(e, pool, mix(j) % n, seed, klen, vlen, true, key);
    }
    e.reads_done();
}

uint64_t
disk_bytes(const std::string &dir)
{
    static uint64_t total;
    total = 0;
    nftw(
        dir.c_str(),
        [](const char *, const struct stat *st, int type, struct FTW *) {
            if (type == FTW_F) {
                total += static_cast<uint64_t>(st->st_blocks) * 512;
            }
            return 0;
        },
        16, FTW_PHYS);
    return total;
}

/* Bytes this process (its threads included) made the kernel read from storage so far
 * (/proc/self/io read_bytes), in MiB. */
double
read_mib()
{
    std::ifstream f("/proc/self/io");
    std::string line;
    while (std::getline(f, line)) {
        if (line.compare(0, 11, "read_bytes:") == 0) {
            return std::atof(line.c_str() + 11) / (1 << 20);
        }
    }
    return 0;
}

/* A "Name:  N kB" field of /proc/self/status, in MiB (0 if absent). */
double
status_mib(const char *field)
{
    std::ifstream f("/proc/self/status");
    std::string line;
    size_t fl = std::strlen(field);
    while (std::getline(f, line)) {
        if (line.compare(0, fl, field) == 0 && line.size() > fl && line[fl] == ':') {
            return std::atof(line.c_str() + fl + 1) / 1024.0;
        }
    }
    return 0;
}

double
rss_now_mib()
{
    return status_mib("VmRSS");
}

/* ---- workloads ---- */

/* n puts of klen/vlen, one caller. */
void
wl_puts(Engine &e, const Ctx &c, Result &r, const char *name, size_t klen, size_t vlen, uint64_t n)
{
    Pool pool;
    const uint64_t seed = 1;
    e.open(c.dir, false);
    pin(c);
    unsigned char k[32];
    double t0 = now_s(), deadline = t0 + c.cap;
    uint64_t i = 0;
    bool capped = false;
    for (; i < n; i++) {
        if ((i & 255) == 0 && i > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        make_key(k, klen, i, seed);
        e.put(k, klen, pool.value(i, seed), vlen);
    }
    double t = now_s() - t0;
    check_sample(e, pool, i, seed, klen, vlen);
    e.close();
    add(r, name, static_cast<double>(i) / t, i, capped);
}

/* 4,096 pairs 16/64, then gets in a cycle over them (store open; or after close + reopen). */
void
wl_gets(Engine &e, const Ctx &c, Result &r, bool cold)
{
    Pool pool;
    const uint64_t seed = 2, keys = 4096;
    const size_t klen = 16, vlen = 64;
    e.open(c.dir, false);
    unsigned char k[16], buf[kMaxValue];
    for (uint64_t i = 0; i < keys; i++) {
        make_key(k, klen, i, seed);
        e.put(k, klen, pool.value(i, seed), vlen);
    }
    if (cold) {
        e.close();
        e.open(c.dir, false);
    }
    pin(c);
    for (uint64_t i = 0; i < keys; i++) {
        check_get(e, pool, i, seed, klen, vlen, true);
    }
    e.reads_done();
    /* The 4,096 keys, in their (pseudo-random) order; gets cycle through them. */
    std::vector<unsigned char> all(keys * klen);
    for (uint64_t i = 0; i < keys; i++) {
        make_key(&all[i * klen], klen, i, seed);
    }
    double t0 = now_s(), deadline = t0 + c.cap;
    uint64_t i = 0;
    bool capped = false;
    for (; i < c.n.gets; i++) {
        if ((i & 1023) == 0 && i > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        long got = e.get(&all[(i & (keys - 1)) * klen], klen, buf, sizeof(buf));
        if (got != static_cast<long>(vlen)) {
            wrong("get returned " + std::to_string(got));
        }
    }
    double t = now_s() - t0;
    e.reads_done();
    e.close();
    add(r, cold ? "get_cold" : "get_hot", static_cast<double>(i) / t, i, capped);
}

/* 10,000 pairs: 1,000 "app:user:%08d" + 9,000 random 24-byte keys, 128-byte values; queries
 * for "app:user:" iterated to the end. */
void
wl_prefix(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 3;
    const std::string pre = "app:user:";
    e.open(c.dir, false);
    for (uint64_t i = 0; i < 10000; i++) {
        unsigned char k[32];
        size_t klen;
        if (i < 1000) {
            klen = static_cast<size_t>(std::snprintf(reinterpret_cast<char *>(k), sizeof(k),
                                                     "app:user:%08u", static_cast<unsigned>(i)));
        } else {
            klen = 24;
            make_key(k, klen, i, seed);
        }
        e.put(k, klen, pool.value(i, seed), 128);
    }
    pin(c);
    std::vector<std::string> keys;
    uint64_t sum = 0;
    size_t n = e.prefix(pre.data(), pre.size(), &sum, &keys);
    if (n != 1000 || keys.size() != 1000) {
        wrong("prefix query returned " + std::to_string(n) + " keys, expected 1000");
    }
    for (size_t i = 0; i < keys.size(); i++) {
        if (keys[i].compare(0, pre.size(), pre) != 0 || (i > 0 && !(keys[i - 1] < keys[i]))) {
            wrong("prefix results not sorted or not matching at #" + std::to_string(i));
        }
    }
    double t0 = now_s(), deadline = t0 + c.cap;
    uint64_t q = 0;
    bool capped = false;
    for (; q < c.n.prefix_queries; q++) {
        if ((q & 15) == 0 && q > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        if (e.prefix(pre.data(), pre.size(), &sum, nullptr) != 1000) {
            wrong("prefix query count");
        }
    }
    double t = now_s() - t0;
    e.reads_done();
    e.close();
    add(r, "prefix", static_cast<double>(q) / t, q, capped);
}

/* Batches of `size` puts klen/vlen; durable: each batch synced. key: make_key (random order)
 * or make_key_seq (ascending). */
void
wl_batches(Engine &e, const Ctx &c, Result &r, const char *name, uint64_t batches, size_t size,
           size_t klen, size_t vlen, bool durable, KeyFn key = make_key)
{
    Pool pool;
    const uint64_t seed = 4;
    e.open(c.dir, durable);
    pin(c);
    unsigned char k[32];
    double t0 = now_s(), deadline = t0 + c.cap;
    uint64_t b = 0;
    bool capped = false;
    for (; b < batches; b++) {
        if (b > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        e.batch_begin();
        for (size_t j = 0; j < size; j++) {
            uint64_t i = b * size + j;
            key(k, klen, i, seed);
            e.batch_put(k, klen, pool.value(i, seed), vlen);
        }
        e.batch_commit();
    }
    double t = now_s() - t0;
    check_sample(e, pool, b * size, seed, klen, vlen, key);
    e.close();
    add(r, name, static_cast<double>(b * size) / t, b * size, capped);
}

/* Each put synced. */
void
wl_durable(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 5;
    e.open(c.dir, true);
    pin(c);
    unsigned char k[16];
    double t0 = now_s(), deadline = t0 + c.cap;
    uint64_t i = 0;
    bool capped = false;
    for (; i < c.n.durable; i++) {
        if ((i & 15) == 0 && i > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        make_key(k, 16, i, seed);
        e.put(k, 16, pool.value(i, seed), 64);
    }
    double t = now_s() - t0;
    check_sample(e, pool, i, seed, 16, 64);
    e.close();
    add(r, "durable_put", static_cast<double>(i) / t, i, capped);
}

/* n random puts 16/100 (capped by --bulk-cap), close, disk, reopen (timed), n random gets,
 * peak RSS of the process (VmHWM) and its anonymous and file-backed parts (RssAnon, RssFile,
 * each the larger of two samples: store open after the puts, store open after the gets). */
void
wl_bulk(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 6;
    const size_t klen = 16, vlen = 100;
    e.open(c.dir, false);
    pin(c);
    unsigned char k[16], buf[kMaxValue];
    double t0 = now_s(), deadline = t0 + c.bulk_cap;
    uint64_t n = 0;
    bool capped = false;
    for (; n < c.n.bulk; n++) {
        if ((n & 1023) == 0 && n > 0 && now_s() > deadline) {
            capped = true;
            break;
        }
        make_key(k, klen, n, seed);
        e.put(k, klen, pool.value(n, seed), vlen);
    }
    double tput = now_s() - t0;
    double anon = status_mib("RssAnon"), file = status_mib("RssFile");
    e.close();
    double disk = static_cast<double>(disk_bytes(c.dir)) / (1 << 20);
    t0 = now_s();
    e.open(c.dir, false);
    double reopen_ms = (now_s() - t0) * 1000;
    /* Gets in a pseudo-random order: j -> j * A mod n, A prime and > n, so a permutation. */
    const uint64_t A = 2654435761ull;
    t0 = now_s();
    deadline = t0 + c.bulk_cap;
    uint64_t g = 0;
    bool gcapped = false;
    for (; g < n; g++) {
        if ((g & 1023) == 0 && g > 0 && now_s() > deadline) {
            gcapped = true;
            break;
        }
        uint64_t i = (g * A) % n;
        make_key(k, klen, i, seed);
        long got = e.get(k, klen, buf, sizeof(buf));
        if (got != static_cast<long>(vlen)) {
            wrong("bulk get of key #" + std::to_string(i) + " returned " + std::to_string(got));
        }
        if ((g & 1023) == 0 && std::memcmp(buf, pool.value(i, seed), vlen) != 0) {
            wrong("bulk get of key #" + std::to_string(i) + ": value differs");
        }
    }
    double tget = now_s() - t0;
    e.reads_done();
    anon = std::max(anon, status_mib("RssAnon"));
    file = std::max(file, status_mib("RssFile"));
    e.close();
    double hwm = status_mib("VmHWM");
    add(r, "bulk_put", static_cast<double>(n) / tput, n, capped);
    add(r, "bulk_get", static_cast<double>(g) / tget, g, gcapped);
    add(r, "bulk_disk", disk, n, capped);
    add(r, "bulk_raw", static_cast<double>(n * (klen + vlen)) / (1 << 20), n, capped);
    add(r, "bulk_rss", hwm, n, capped);
    add(r, "bulk_anon", anon, n, capped);
    add(r, "bulk_file", file, n, capped);
    add(r, "bulk_reopen", reopen_ms, n, capped);
}

/* Write every file under @p dir back and drop it from the page cache. */
void
drop_page_cache(const std::string &dir)
{
    for (const auto &f : std::filesystem::recursive_directory_iterator(dir)) {
        if (!f.is_regular_file()) {
            continue;
        }
        int fd = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            (void)fdatasync(fd);
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            ::close(fd);
        }
    }
}

/* Random gets of @p n of the @p keys keys (present) or of absent ones; returns gets/s. */
double
cold_gets(Engine &e, const Pool &pool, uint64_t keys, uint64_t n, uint64_t seed, bool present)
{
    const uint64_t A = 2654435761ull;
    unsigned char k[16], buf[kMaxValue];
    double t0 = now_s();
    for (uint64_t g = 0; g < n; g++) {
        uint64_t i = (g * A) % keys;
        make_key(k, 16, present ? i : i + keys, present ? seed : seed + 1);
        long got = e.get(k, 16, buf, sizeof(buf));
        if (present && (got != 100 || std::memcmp(buf, pool.value(i, seed), 100) != 0)) {
            wrong("cold_cache get of key #" + std::to_string(i) + " returned " +
                  std::to_string(got));
        }
        if (!present && got >= 0) {
            wrong("cold_cache get of an absent key found one");
        }
    }
    return static_cast<double>(n) / (now_s() - t0);
}

/* Stores with a bounded index (bound_memory(): htkv's budget, RocksDB's block cache with a
 * 10 bits/key Bloom filter), the same memory each: n random puts 16/100, close; then with the
 * store's files out of the page cache (fdatasync + POSIX_FADV_DONTNEED), reopen (timed), the
 * files out of the cache again, random gets of present keys, then of absent ones. */
void
wl_cold_cache(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 8, n = c.n.cold;
    e.bound_memory(c.n.cold_budget);
    e.open(c.dir, false);
    pin(c);
    unsigned char k[16];
    for (uint64_t i = 0; i < n; i++) {
        make_key(k, 16, i, seed);
        e.put(k, 16, pool.value(i, seed), 100);
    }
    e.close();
    drop_page_cache(c.dir);
    double t0 = now_s();
    e.open(c.dir, false);
    double open_ms = (now_s() - t0) * 1000;
    drop_page_cache(c.dir);
    double before = read_mib();
    double hits = cold_gets(e, pool, n, c.n.cold_gets, seed, true);
    double hit_read = read_mib() - before;
    drop_page_cache(c.dir);
    before = read_mib();
    double misses = cold_gets(e, pool, n, c.n.cold_gets, seed, false);
    double miss_read = read_mib() - before;
    double anon = status_mib("RssAnon");
    e.reads_done();
    e.close();
    add(r, "cold_open", open_ms, n);
    add(r, "cold_get", hits, c.n.cold_gets);
    add(r, "cold_miss", misses, c.n.cold_gets);
    add(r, "cold_get_read", hit_read, c.n.cold_gets);
    add(r, "cold_miss_read", miss_read, c.n.cold_gets);
    add(r, "cold_anon", anon, n);
}

/* Every store that takes writes from several threads on one handle: 16 caller threads, each
 * put synced; not pinned. Each thread stops after its count or at the --cap deadline. */
void
wl_concurrent(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 7;
    const int threads = 16;
    const uint64_t per = c.n.conc_per_thread;
    e.open(c.dir, true);
    std::vector<std::thread> th;
    std::vector<std::string> errs(threads);
    std::vector<uint64_t> done(threads, 0);
    double t0 = now_s(), deadline = t0 + c.cap;
    for (int t = 0; t < threads; t++) {
        th.emplace_back([&, t] {
            try {
                unsigned char k[16];
                uint64_t j = 0;
                for (; j < per; j++) {
                    if ((j & 7) == 0 && j > 0 && now_s() > deadline) {
                        break;
                    }
                    uint64_t i = static_cast<uint64_t>(t) * per + j;
                    make_key(k, 16, i, seed);
                    e.put(k, 16, pool.value(i, seed), 64);
                }
                done[static_cast<size_t>(t)] = j;
            } catch (const std::exception &x) {
                errs[static_cast<size_t>(t)] = x.what();
            }
        });
    }
    for (auto &t : th) {
        t.join();
    }
    double t = now_s() - t0;
    for (auto &x : errs) {
        if (!x.empty()) {
            throw std::runtime_error(x);
        }
    }
    /* 256 keys checked, spread over the threads and what each wrote. */
    for (uint64_t j = 0; j < 256; j++) {
        uint64_t tt = j % threads;
        if (done[tt] > 0) {
            check_get(e, pool, tt * per + mix(j) % done[tt], seed, 16, 64, true);
        }
    }
    e.reads_done();
    uint64_t n = 0;
    for (uint64_t d : done) {
        n += d;
    }
    e.close();
    add(r, "concurrent_durable", static_cast<double>(n) / t, n, n < threads * per);
}

/* htkv only: latency of each get (4,096 keys 16/64) while another thread puts new keys without
 * pause; not pinned. */
void
wl_latency(Engine &e, const Ctx &c, Result &r)
{
    Pool pool;
    const uint64_t seed = 8, keys = 4096;
    e.open(c.dir, false);
    unsigned char k[16], buf[kMaxValue];
    for (uint64_t i = 0; i < keys; i++) {
        make_key(k, 16, i, seed);
        e.put(k, 16, pool.value(i, seed), 64);
    }
    std::atomic<bool> stop{ false };
    std::atomic<uint64_t> writes{ 0 };
    std::string werr;
    std::thread writer([&] {
        try {
            unsigned char wk[16];
            for (uint64_t i = keys; !stop.load(std::memory_order_relaxed); i++) {
                make_key(wk, 16, i, seed);
                e.put(wk, 16, pool.value(i, seed), 64);
                writes.fetch_add(1, std::memory_order_relaxed);
            }
        } catch (const std::exception &x) {
            werr = x.what();
        }
    });
    std::vector<float> lat;
    lat.reserve(c.n.lat_gets);
    double t0 = now_s(), deadline = t0 + c.cap;
    for (uint64_t g = 0; g < c.n.lat_gets; g++) {
        if ((g & 1023) == 0 && g > 0 && now_s() > deadline) {
            break;
        }
        uint64_t i = mix(g) & (keys - 1);
        make_key(k, 16, i, seed);
        double a = now_s();
        long got = e.get(k, 16, buf, sizeof(buf));
        double b = now_s();
        if (got != 64) {
            stop = true;
            writer.join();
            wrong("get under writes returned " + std::to_string(got));
        }
        lat.push_back(static_cast<float>((b - a) * 1e6));
    }
    double t = now_s() - t0;
    stop = true;
    writer.join();
    if (!werr.empty()) {
        throw std::runtime_error(werr);
    }
    e.reads_done();
    e.close();
    std::sort(lat.begin(), lat.end());
    auto pct = [&](double p) {
        return static_cast<double>(
            lat[std::min(lat.size() - 1, static_cast<size_t>(p * lat.size()))]);
    };
    add(r, "get_p50_us", pct(0.50), lat.size(), false);
    add(r, "get_p99_us", pct(0.99), lat.size(), false);
    add(r, "writes_during", static_cast<double>(writes.load()) / t, writes.load(), false);
}

/* ---- engines, rows ---- */

struct EngineSpec {
    std::string name;
    std::function<std::unique_ptr<Engine>()> make;
    bool htkv;
    bool ordered = true;    /* keys in order: the prefix row runs */
    bool concurrent = true; /* one handle takes writes from many threads */
    bool bounded = false;   /* bound_memory() bounds its index: the cold_cache row runs */
};

std::vector<EngineSpec>
all_engines()
{
    return {
        { "htkv", [] { return peers::make_htkv(-1); }, true, true, true, true },
        { "htkv w0", [] { return peers::make_htkv(0); }, true, true, true, true },
        { "RocksDB", [] { return peers::make_rocksdb(); }, false, true, true, true },
        { "LevelDB", [] { return peers::make_leveldb(); }, false },
        { "LMDB", [] { return peers::make_lmdb(false); }, false },
        { "LMDB wm", [] { return peers::make_lmdb(true); }, false },
#ifdef HTKV_PEERS_TKRZW
        { "Tkrzw tree", [] { return peers::make_tkrzw(true); }, false },
        { "Tkrzw hash", [] { return peers::make_tkrzw(false); }, false, false },
#endif
#ifdef HTKV_PEERS_WIREDTIGER
        { "WiredTiger", [] { return peers::make_wiredtiger(); }, false },
#endif
    };
}

/* Which engines a row runs on. */
enum class Runs { all, ordered, concurrent, htkv, bounded };

struct Row {
    std::string id;
    std::function<void(Engine &, const Ctx &, Result &)> run;
    bool pinned;
    Runs runs;
};

bool
runs_on(const Row &row, const EngineSpec &es)
{
    switch (row.runs) {
    case Runs::ordered:
        return es.ordered;
    case Runs::concurrent:
        return es.concurrent;
    case Runs::htkv:
        return es.htkv;
    case Runs::bounded:
        return es.bounded;
    case Runs::all:
        break;
    }
    return true;
}

std::vector<Row>
all_rows()
{
    return {
        { "put_small",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_puts(e, c, r, "put_small", 16, 64, c.n.put_small);
          },
          true, Runs::all },
        { "put_medium",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_puts(e, c, r, "put_medium", 16, 512, c.n.put_medium);
          },
          true, Runs::all },
        { "put_large",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_puts(e, c, r, "put_large", 32, 4096, c.n.put_large);
          },
          true, Runs::all },
        { "get_hot", [](Engine &e, const Ctx &c, Result &r) { wl_gets(e, c, r, false); }, true,
          Runs::all },
        { "get_cold", [](Engine &e, const Ctx &c, Result &r) { wl_gets(e, c, r, true); }, true,
          Runs::all },
        { "prefix", wl_prefix, true, Runs::ordered },
        { "batch",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_batches(e, c, r, "batch", c.n.batches, 4096, 32, 256, false);
          },
          true, Runs::all },
        { "batch_seq",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_batches(e, c, r, "batch_seq", c.n.batches, 4096, 32, 256, false, make_key_seq);
          },
          true, Runs::all },
        { "bulk", wl_bulk, true, Runs::all },
        { "cold_cache", wl_cold_cache, true, Runs::bounded },
        { "durable_put", wl_durable, true, Runs::all },
        { "group_durable",
          [](Engine &e, const Ctx &c, Result &r) {
              wl_batches(e, c, r, "group_durable", c.n.group_batches, 64, 16, 64, true);
          },
          true, Runs::all },
        { "concurrent_durable", wl_concurrent, false, Runs::concurrent },
        { "get_latency", wl_latency, false, Runs::htkv },
    };
}

/* ---- running a child ---- */

Result
run_child(const Row &row, const EngineSpec &es, Ctx c, const std::string &base, int timeout_s)
{
    std::error_code ec;
    c.dir = base + "/store";
    std::filesystem::remove_all(c.dir, ec);
    Result r{};
    int fd[2];
    if (pipe(fd) != 0) {
        std::snprintf(r.err, sizeof(r.err), "pipe: %s", std::strerror(errno));
        return r;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        std::snprintf(r.err, sizeof(r.err), "fork: %s", std::strerror(errno));
        close(fd[0]);
        close(fd[1]);
        return r;
    }
    if (pid == 0) {
        close(fd[0]);
        alarm(static_cast<unsigned>(timeout_s));
        Result cr{};
        cr.base_rss_mib = rss_now_mib();
        if (row.pinned == false) {
            c.cpu = -1;
        }
        c.htkv = es.htkv;
        try {
            std::unique_ptr<Engine> e = es.make();
            row.run(*e, c, cr);
            cr.ok = 1;
        } catch (const std::exception &x) {
            std::snprintf(cr.err, sizeof(cr.err), "%s", x.what());
        }
        ssize_t w = write(fd[1], &cr, sizeof(cr));
        _exit(w == static_cast<ssize_t>(sizeof(cr)) ? 0 : 1);
    }
    close(fd[1]);
    size_t got = 0;
    while (got < sizeof(r)) {
        ssize_t n = read(fd[0], reinterpret_cast<char *>(&r) + got, sizeof(r) - got);
        if (n <= 0) {
            break;
        }
        got += static_cast<size_t>(n);
    }
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    std::filesystem::remove_all(c.dir, ec);
    if (got != sizeof(r)) {
        r = Result{};
        if (WIFSIGNALED(st)) {
            std::snprintf(r.err, sizeof(r.err), "child killed by signal %d (%s)%s", WTERMSIG(st),
                          strsignal(WTERMSIG(st)),
                          WTERMSIG(st) == SIGALRM ? ": over the time limit" : "");
        } else {
            std::snprintf(r.err, sizeof(r.err), "child exited with status %d without a result",
                          WEXITSTATUS(st));
        }
    }
    return r;
}

/* ---- aggregation and printing ---- */

struct Cell {
    std::vector<double> v;
    uint64_t min_ops = UINT64_MAX;
    bool capped = false;
    std::string err;

    double median() const
    {
        std::vector<double> s(v);
        std::sort(s.begin(), s.end());
        return s.empty() ? NAN : s[s.size() / 2];
    }
    double lo() const
    {
        return v.empty() ? NAN : *std::min_element(v.begin(), v.end());
    }
    double hi() const
    {
        return v.empty() ? NAN : *std::max_element(v.begin(), v.end());
    }
};

std::string
fmt(double x)
{
    char b[32];
    if (std::isnan(x)) {
        return "—";
    }
    double a = std::fabs(x);
    if (a >= 1e6) {
        std::snprintf(b, sizeof(b), "%.2fM", x / 1e6);
    } else if (a >= 1e4) {
        std::snprintf(b, sizeof(b), "%.0fk", x / 1e3);
    } else if (a >= 1e3) {
        std::snprintf(b, sizeof(b), "%.1fk", x / 1e3);
    } else if (a >= 100) {
        std::snprintf(b, sizeof(b), "%.0f", x);
    } else if (a >= 10) {
        std::snprintf(b, sizeof(b), "%.1f", x);
    } else {
        std::snprintf(b, sizeof(b), "%.2f", x);
    }
    return b;
}

struct MetricInfo {
    const char *id;
    const char *label;
    bool lower_better;
};

const std::vector<MetricInfo> &
metric_infos()
{
    static const std::vector<MetricInfo> m = {
        { "put_small", "put_small 16 B / 64 B, puts/s", false },
        { "put_medium", "put_medium 16 B / 512 B, puts/s", false },
        { "put_large", "put_large 32 B / 4 KiB, puts/s", false },
        { "get_hot", "get_hot (4,096 keys, store open), gets/s", false },
        { "get_cold", "get_cold (after reopen), gets/s", false },
        { "prefix", "prefix: 1,000 of 10,000 keys, queries/s", false },
        { "batch", "batch of 4,096 puts 32 B / 256 B, puts/s", false },
        { "batch_seq", "batch_seq: the same, ascending keys, puts/s", false },
        { "bulk_put", "bulk: random puts 16 B / 100 B, puts/s", false },
        { "bulk_get", "bulk: then random gets (after reopen), gets/s", false },
        { "bulk_disk", "bulk: disk MiB after close", true },
        { "bulk_raw", "bulk: raw bytes written (keys + values), MiB", true },
        { "bulk_rss", "bulk: peak RSS MiB (VmHWM, whole process)", true },
        { "bulk_anon", "bulk: RssAnon MiB (anonymous, store open)", true },
        { "bulk_file", "bulk: RssFile MiB (file-backed, store open)", true },
        { "bulk_reopen", "bulk: reopen, ms", true },
        { "cold_open", "cold_cache: reopen with the files out of the page cache, ms", true },
        { "cold_get", "cold_cache: then random gets, page cache dropped, gets/s", false },
        { "cold_miss", "cold_cache: gets of absent keys, page cache dropped, gets/s", false },
        { "cold_get_read", "cold_cache: MiB read from storage by those gets", true },
        { "cold_miss_read", "cold_cache: MiB read from storage by the absent gets", true },
        { "cold_anon", "cold_cache: RssAnon MiB after the gets", true },
        { "durable_put", "durable_put: each put fdatasync'ed, puts/s", false },
        { "group_durable", "group_durable: 64 puts per sync, puts/s", false },
        { "concurrent_durable", "concurrent durable: 16 threads, sync put each, puts/s", false },
        { "get_p50_us", "get p50 µs under a concurrent writer", true },
        { "get_p99_us", "get p99 µs under a concurrent writer", true },
        { "writes_during", "  (puts/s of that writer)", false },
    };
    return m;
}

using Table = std::map<std::string, std::map<std::string, Cell>>; /* metric -> engine -> cell */

double
med(const Table &t, const std::string &m, const std::string &e)
{
    auto i = t.find(m);
    if (i == t.end()) {
        return NAN;
    }
    auto j = i->second.find(e);
    return j == i->second.end() ? NAN : j->second.median();
}

std::string
cpu_model()
{
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) {
            auto p = line.find(':');
            return p == std::string::npos ? line : line.substr(p + 2);
        }
    }
    return "?";
}

struct Opts {
    int trials = 3;
    bool quick = false;
    std::set<std::string> rows, engines;
    int cpu = -2; /* -2: the last CPU */
    double cap = -1, bulk_cap = -1;
    int64_t bulk = -1;
    std::string dir;
};

std::set<std::string>
split(const std::string &s)
{
    std::set<std::string> out;
    std::stringstream ss(s);
    std::string x;
    while (std::getline(ss, x, ',')) {
        if (!x.empty()) {
            out.insert(x);
        }
    }
    return out;
}

int
usage()
{
    std::fprintf(
        stderr, "usage: htkv-peers [--trials N] [--quick] [--rows a,b,..] [--engines a,b,..]\n"
                "                  [--cpu N] [--no-pin] [--cap S] [--bulk-cap S] [--bulk N]"
                " [--dir PATH]\n"
                "rows: put_small put_medium put_large get_hot get_cold prefix batch batch_seq\n"
                "      bulk durable_put group_durable concurrent_durable get_latency\n"
                "engines: htkv, htkv-w0, RocksDB, LevelDB, LMDB, LMDB-wm, Tkrzw-tree, Tkrzw-hash,\n"
                "         WiredTiger (case-insensitive; the last three when built)\n");
    return 2;
}

std::string
norm(std::string s)
{
    for (auto &ch : s) {
        ch = static_cast<char>(ch == ' ' ? '-' : std::tolower(static_cast<unsigned char>(ch)));
    }
    return s;
}

/* Peers whose fast mode loses no acknowledged write when the process crashes (RocksDB's and
 * LevelDB's log and LMDB's commits are in the page cache). Not Tkrzw without Synchronize (the
 * file is left for Tkrzw's restore), nor WiredTiger without its log (writes since the last
 * checkpoint, here since open, are lost). */
const std::vector<std::string> &
crash_safe_peers()
{
    static const std::vector<std::string> p = { "RocksDB", "LevelDB", "LMDB", "LMDB wm" };
    return p;
}

/* Per metric: htkv's median, the best peer's (highest, or lowest where lower is better) and the
 * best crash-safe peer's, with ratios htkv / peer. In the durable rows every peer syncs, so
 * every peer counts as crash-safe there. */
void
print_best(const Table &t, const std::vector<std::string> &peer_names)
{
    const std::vector<std::string> &safe = crash_safe_peers();
    std::printf(
        "\n### htkv against the best peer per row (medians; ratio = htkv / peer; for MiB, ms "
        "and µs lower is better)\n\n"
        "| workload | htkv | best peer | htkv / best | best crash-safe peer | htkv / it |\n"
        "|---|---|---|---|---|---|\n");
    for (auto &mi : metric_infos()) {
        double h = med(t, mi.id, "htkv");
        if (std::isnan(h) || std::string(mi.id) == "bulk_raw") {
            continue;
        }
        std::string best, best_safe;
        double bv = NAN, bs = NAN;
        for (auto &p : peer_names) {
            double v = med(t, mi.id, p);
            if (std::isnan(v)) {
                continue;
            }
            bool better = std::isnan(bv) || (mi.lower_better ? v < bv : v > bv);
            if (better) {
                bv = v;
                best = p;
            }
            bool durable_row = std::strstr(mi.id, "durable") != nullptr;
            bool is_safe = durable_row || std::find(safe.begin(), safe.end(), p) != safe.end();
            if (is_safe && (std::isnan(bs) || (mi.lower_better ? v < bs : v > bs))) {
                bs = v;
                best_safe = p;
            }
        }
        if (std::isnan(bv)) {
            continue;
        }
        auto ratio = [&](double v) {
            char b[32];
            std::snprintf(b, sizeof(b), "%.2f×", h / v);
            return std::isnan(v) || v == 0 ? std::string("—") : std::string(b);
        };
        std::string safe_cell = best_safe.empty() ? "—" : best_safe + " " + fmt(bs);
        std::printf("| %s | %s | %s %s | %s | %s | %s |\n", mi.label, fmt(h).c_str(), best.c_str(),
                    fmt(bv).c_str(), ratio(bv).c_str(), safe_cell.c_str(), ratio(bs).c_str());
    }
}

void
print_goals(const Table &t, bool bulk_full)
{
    const std::vector<std::string> &crash_safe = crash_safe_peers();
    struct Ref {
        double v;
        std::string name;
    };
    auto best_of = [&](const std::string &m) {
        Ref r{ NAN, "best peer" };
        for (auto &p : crash_safe) {
            double v = med(t, m, p);
            if (!std::isnan(v) && (std::isnan(r.v) || v > r.v)) {
                r = Ref{ v, p };
            }
        }
        return r;
    };
    auto peer = [&](const std::string &m, const std::string &p) { return Ref{ med(t, m, p), p }; };
    auto fixed = [](double v, const std::string &name) { return Ref{ v, name }; };
    /* A peer's median of this run when it ran, else TARGETS.md's figure (marked indicative). */
    auto peer_or = [&](const std::string &m, const std::string &p, double v) {
        double x = med(t, m, p);
        return std::isnan(x) ? Ref{ v, "TARGETS.md " + p + " (indicative: not this run)" }
                             : Ref{ x, p };
    };
    auto best_any = [&](const std::string &m) {
        Ref r{ NAN, "best peer" };
        auto it = t.find(m);
        if (it == t.end()) {
            return r;
        }
        for (auto &[p, cell] : it->second) {
            double v = cell.median();
            if (p.rfind("htkv", 0) != 0 && !std::isnan(v) && (std::isnan(r.v) || v > r.v)) {
                r = Ref{ v, p };
            }
        }
        return r;
    };
    std::printf("\n### Goals (TARGETS.md), judged on htkv's default configuration\n\n");
    std::printf("| goal | htkv | reference | ratio | met? | htkv w0: ratio, met? |\n");
    std::printf("|---|---|---|---|---|---|\n");
    /* ref(engine): the reference the engine's figure is compared with (a peer's median, a
     * fixed figure, or the engine's own other figure). */
    auto line = [&](const std::string &goal, const std::string &m,
                    const std::function<Ref(const std::string &)> &ref, double need,
                    bool lower_better, const std::string &note) {
        std::string cells[2];
        const char *eng[2] = { "htkv", "htkv w0" };
        for (int i = 0; i < 2; i++) {
            double h = med(t, m, eng[i]);
            Ref r = ref(eng[i]);
            if (std::isnan(h) || std::isnan(r.v) || r.v == 0) {
                cells[i] = i == 0 ? "| " + fmt(h) + " | " + r.name + " | — | not measured" : "—";
                continue;
            }
            double ratio = h / r.v;
            bool met = lower_better ? ratio <= need : ratio >= need;
            /* need = NaN: shown, not judged (the workload differs from the goal's). */
            const char *verdict = std::isnan(need) ? "not judged" : met ? "yes" : "**no**";
            char buf[200];
            if (i == 0) {
                std::snprintf(buf, sizeof(buf), "| %s | %s %s | %.2f× | %s", fmt(h).c_str(),
                              r.name.c_str(), fmt(r.v).c_str(), ratio, verdict);
            } else {
                std::snprintf(buf, sizeof(buf), "%.2f×, %s", ratio,
                              std::isnan(need) ? "not judged"
                              : met            ? "yes"
                                               : "no");
            }
            cells[i] = buf;
        }
        std::printf("| %s %s%s | %s |\n", goal.c_str(), cells[0].c_str(), note.c_str(),
                    cells[1].c_str());
    };
    for (const char *m : { "put_small", "put_medium", "put_large" }) {
        line(
            std::string(m) + " ≥ 1.0× best crash-safe peer", m,
            [&](const std::string &) { return best_of(m); }, 1.0, false, "");
        line(
            std::string(m) + " ≥ 4× RocksDB", m,
            [&](const std::string &) { return peer(m, "RocksDB"); }, 4.0, false, "");
    }
    for (const char *m : { "get_hot", "get_cold" }) {
        line(
            std::string(m) + " ≥ 1.0× best peer", m,
            [&](const std::string &) { return best_any(m); }, 1.0, false, "");
    }
    line(
        "prefix ≥ 1.0× LMDB, results sorted (checked)", "prefix",
        [&](const std::string &) { return peer("prefix", "LMDB"); }, 1.0, false, "");
    line(
        "batch of 4,096 ≥ 1.0× LMDB", "batch",
        [&](const std::string &) { return peer("batch", "LMDB"); }, 1.0, false, "");
    /* Tkrzw and WiredTiger: this run's figures when they are built, else TARGETS.md's. */
    line(
        "bulk puts ≥ 1.0× Tkrzw hash", "bulk_put",
        [&](const std::string &) { return peer_or("bulk_put", "Tkrzw hash", 2.15e6); }, 1.0, false,
        "");
    line(
        "bulk gets ≥ 1.0× Tkrzw hash", "bulk_get",
        [&](const std::string &) { return peer_or("bulk_get", "Tkrzw hash", 2.23e6); }, 1.0, false,
        "");
    line(
        "bulk disk ≤ 1.2× the raw bytes", "bulk_disk",
        [&](const std::string &e) {
            return Ref{ med(t, "bulk_raw", e), "raw MiB" };
        },
        1.2, true, "");
    line(
        "bulk memory (RssAnon, anonymous only) ≤ RocksDB's", "bulk_anon",
        [&](const std::string &) { return peer("bulk_anon", "RocksDB"); }, 1.0, true,
        bulk_full ? "" : " (htkv's bulk store under 1M keys in some trial)");
    line(
        "durable_put ≥ 1.2× WiredTiger", "durable_put",
        [&](const std::string &) { return peer_or("durable_put", "WiredTiger", 11.8e3); }, 1.2,
        false, "");
    line(
        "durable_put vs best peer of this run (no goal; ≥ 1.0 shown)", "durable_put",
        [&](const std::string &) { return best_of("durable_put"); }, 1.0, false, "");
    line(
        "group_durable ≥ 1.5× LevelDB", "group_durable",
        [&](const std::string &) { return peer("group_durable", "LevelDB"); }, 1.5, false, "");
    line(
        "concurrent durable (16 threads) ≥ 10× durable_put", "concurrent_durable",
        [&](const std::string &e) {
            return Ref{ med(t, "durable_put", e), "durable_put" };
        },
        10.0, false, "");
    {
        uint64_t keys = 0;
        auto it = t.find("bulk_reopen");
        if (it != t.end() && it->second.count("htkv")) {
            keys = it->second.at("htkv").min_ops;
        }
        line(
            "reopen with 1M keys ≤ 200 ms (ms)", "bulk_reopen",
            [&](const std::string &) { return fixed(200, "limit"); }, keys >= 1000000 ? 1.0 : NAN,
            true,
            keys >= 1000000
                ? ""
                : " (smallest store measured: " + std::to_string(keys) + " keys, not 1M)");
    }
    line(
        "p99 get under concurrent writes ≤ 5 µs (µs)", "get_p99_us",
        [&](const std::string &) { return fixed(5, "limit"); }, 1.0, true, "");
}

} // namespace

int
main(int argc, char **argv)
{
    Opts o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::exit(usage());
            }
            return argv[++i];
        };
        if (a == "--trials") {
            o.trials = std::atoi(next().c_str());
        } else if (a == "--quick") {
            o.quick = true;
        } else if (a == "--rows") {
            o.rows = split(next());
        } else if (a == "--engines") {
            o.engines.clear();
            for (auto &x : split(next())) {
                o.engines.insert(norm(x));
            }
        } else if (a == "--cpu") {
            o.cpu = std::atoi(next().c_str());
        } else if (a == "--no-pin") {
            o.cpu = -1;
        } else if (a == "--cap") {
            o.cap = std::atof(next().c_str());
        } else if (a == "--bulk-cap") {
            o.bulk_cap = std::atof(next().c_str());
        } else if (a == "--bulk") {
            o.bulk = std::atoll(next().c_str());
        } else if (a == "--dir") {
            o.dir = next();
        } else {
            return usage();
        }
    }
    if (o.trials < 1 || o.trials > 99) {
        return usage();
    }
    Ctx c;
    if (o.quick) {
        c.n.put_small = 100000;
        c.n.put_medium = 40000;
        c.n.put_large = 10000;
        c.n.gets = 300000;
        c.n.prefix_queries = 500;
        c.n.batches = 16;
        c.n.bulk = 200000;
        c.n.durable = 500;
        c.n.group_batches = 150;
        c.n.conc_per_thread = 100;
        c.n.lat_gets = 100000;
        c.cap = 1.0;
        c.bulk_cap = 10.0;
    }
    if (o.cap > 0) {
        c.cap = o.cap;
    }
    if (o.bulk_cap > 0) {
        c.bulk_cap = o.bulk_cap;
    }
    if (o.bulk > 0) {
        c.n.bulk = static_cast<uint64_t>(o.bulk);
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c.cpu = o.cpu == -2 ? static_cast<int>(ncpu - 1) : o.cpu;

    std::string base = o.dir;
    if (base.empty()) {
        const char *t = std::getenv("TMPDIR");
        base = std::string(t != nullptr && *t != '\0' ? t : "/tmp") + "/htkv-peers-" +
               std::to_string(getpid());
    }
    std::error_code ec;
    std::filesystem::create_directories(base, ec);
    if (ec) {
        std::fprintf(stderr, "htkv-peers: cannot create %s: %s\n", base.c_str(),
                     ec.message().c_str());
        return 1;
    }

    std::vector<EngineSpec> engines;
    for (auto &e : all_engines()) {
        if (o.engines.empty() || o.engines.count(norm(e.name))) {
            engines.push_back(e);
        }
    }
    std::vector<Row> rows;
    for (auto &r : all_rows()) {
        if (o.rows.empty() || o.rows.count(r.id)) {
            rows.push_back(r);
        }
    }
    if (engines.empty() || rows.empty()) {
        return usage();
    }

    /* Header: when, where, what. */
    char when[64];
    time_t now = time(nullptr);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %Z", localtime(&now));
    struct utsname un;
    uname(&un);
    std::printf("## htkv-peers, %s\n\n", when);
    std::printf("machine: %ld CPUs (nproc), %s, Linux %s; load average at start: ", ncpu,
                cpu_model().c_str(), un.release);
    double load[3];
    if (getloadavg(load, 3) == 3) {
        std::printf("%.2f %.2f %.2f\n", load[0], load[1], load[2]);
    } else {
        std::printf("?\n");
    }
    std::printf("peers: RocksDB %s, LevelDB %s, LMDB %s", peers::rocksdb_version().c_str(),
                peers::leveldb_version().c_str(), peers::lmdb_version().c_str());
#ifdef HTKV_PEERS_TKRZW
    std::printf(", Tkrzw %s", peers::tkrzw_version().c_str());
#else
    std::printf(", Tkrzw not built (libtkrzw-dev missing at configure time)");
#endif
#ifdef HTKV_PEERS_WIREDTIGER
    std::printf(", WiredTiger %s", peers::wiredtiger_version().c_str());
#else
    std::printf(", WiredTiger not built (libwiredtiger-dev missing at configure time)");
#endif
    std::printf(" (Debian packages)\n");
    std::printf("command:");
    for (int i = 0; i < argc; i++) {
        std::printf(" %s", argv[i]);
    }
    std::printf("\n%d trials, interleaved; single-caller rows pinned to CPU %d; cap %.1f s per "
                "phase, bulk %.0f s; bulk: %" PRIu64 " keys%s\n\n",
                o.trials, c.cpu, c.cap, c.bulk_cap, c.n.bulk,
                o.quick ? " (--quick: every row scaled down, bulk to 200k keys)" : "");
    std::fflush(stdout);

    Table table;
    double base_rss = 0;
    double t_start = now_s();
    for (int trial = 0; trial < o.trials; trial++) {
        for (const auto &row : rows) {
            for (size_t k = 0; k < engines.size(); k++) {
                const EngineSpec &es = engines[(k + static_cast<size_t>(trial)) % engines.size()];
                if (!runs_on(row, es)) {
                    continue;
                }
                double t0 = now_s();
                Result r = run_child(row, es, c, base, row.id == "bulk" ? 900 : 300);
                std::fprintf(stderr, "trial %d  %-18s %-10s %6.1fs  ", trial + 1, row.id.c_str(),
                             es.name.c_str(), now_s() - t0);
                if (!r.ok) {
                    std::fprintf(stderr, "ERROR: %s\n", r.err);
                    /* Record the error under every metric the row would produce. */
                    table[row.id][es.name].err = r.err;
                    continue;
                }
                base_rss = std::max(base_rss, r.base_rss_mib);
                for (int m = 0; m < r.n; m++) {
                    Cell &cell = table[r.m[m].name][es.name];
                    cell.v.push_back(r.m[m].value);
                    cell.min_ops = std::min(cell.min_ops, r.m[m].ops);
                    cell.capped = cell.capped || r.m[m].capped;
                    std::fprintf(stderr, "%s=%s%s ", r.m[m].name, fmt(r.m[m].value).c_str(),
                                 r.m[m].capped ? "*" : "");
                }
                std::fprintf(stderr, "\n");
            }
        }
    }
    double elapsed = now_s() - t_start;
    std::filesystem::remove_all(base, ec);

    /* Errors, if any. */
    bool any_err = false;
    for (auto &[id, byeng] : table) {
        for (auto &[en, cell] : byeng) {
            if (!cell.err.empty()) {
                if (!any_err) {
                    std::printf("### Errors\n\n");
                }
                any_err = true;
                std::printf("- %s on %s: %s\n", id.c_str(), en.c_str(), cell.err.c_str());
            }
        }
    }
    if (any_err) {
        std::printf("\n");
    }

    /* Table 1: figures. */
    std::printf("### Figures: median [min..max] of %d trials (* = some trial hit the time cap; "
                "the count done is shown)\n\n| workload |",
                o.trials);
    for (auto &e : engines) {
        std::printf(" %s |", e.name.c_str());
    }
    std::printf("\n|---|");
    for (size_t i = 0; i < engines.size(); i++) {
        std::printf("---|");
    }
    std::printf("\n");
    for (auto &mi : metric_infos()) {
        auto it = table.find(mi.id);
        if (it == table.end()) {
            continue;
        }
        std::printf("| %s |", mi.label);
        for (auto &e : engines) {
            auto j = it->second.find(e.name);
            if (j == it->second.end() || j->second.v.empty()) {
                std::printf(" — |");
                continue;
            }
            const Cell &cl = j->second;
            std::printf(" %s [%s..%s]", fmt(cl.median()).c_str(), fmt(cl.lo()).c_str(),
                        fmt(cl.hi()).c_str());
            if (cl.capped) {
                std::printf(" *%s", fmt(static_cast<double>(cl.min_ops)).c_str());
            }
            std::printf(" |");
        }
        std::printf("\n");
    }
    std::printf("\nbaseline RSS of a child before opening its store (included in peak RSS): "
                "%.1f MiB\n",
                base_rss);

    /* Table 2: ratios. */
    std::vector<std::string> peer_names;
    for (auto &e : engines) {
        if (!e.htkv) {
            peer_names.push_back(e.name);
        }
    }
    for (const char *h : { "htkv", "htkv w0" }) {
        bool have = false;
        for (auto &e : engines) {
            have = have || e.name == h;
        }
        if (!have || peer_names.empty()) {
            continue;
        }
        std::printf("\n### Ratios %s / peer (medians; for MiB, ms and µs lower is better)\n\n"
                    "| workload |",
                    h);
        for (auto &p : peer_names) {
            std::printf(" %s / %s |", h, p.c_str());
        }
        std::printf("\n|---|");
        for (size_t i = 0; i < peer_names.size(); i++) {
            std::printf("---|");
        }
        std::printf("\n");
        for (auto &mi : metric_infos()) {
            if (table.find(mi.id) == table.end() || std::string(mi.id) == "bulk_raw") {
                continue;
            }
            double hv = med(table, mi.id, h);
            bool any = false;
            for (auto &p : peer_names) {
                any = any || !std::isnan(med(table, mi.id, p));
            }
            if (!any || std::isnan(hv)) {
                continue;
            }
            std::printf("| %s |", mi.label);
            for (auto &p : peer_names) {
                double pv = med(table, mi.id, p);
                if (std::isnan(pv) || pv == 0) {
                    std::printf(" — |");
                } else {
                    std::printf(" %.2f× |", hv / pv);
                }
            }
            std::printf("\n");
        }
    }

    bool bulk_full = c.n.bulk == 1000000;
    {
        auto it = table.find("bulk_put");
        if (it != table.end() && it->second.count("htkv") && it->second.at("htkv").capped) {
            bulk_full = false;
        }
    }
    print_best(table, peer_names);
    print_goals(table, bulk_full);
    std::printf("\nrun time: %.0f s\n", elapsed);
    return any_err ? 1 : 0;
}
