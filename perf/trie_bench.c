/*
 * trie_bench.c - timings for the crit-bit trie (engine/trie.c), single-threaded:
 *   1. inserts/s: 1,000,000 random 16-byte keys into an empty trie;
 *   2. gets/s: 1,000,000 lookups of present keys in random order, bare and inside an EBR
 *      critical section each (the real read path);
 *   3. range scans over a trie of 10,000 random 16-byte keys: seek to a random key, then read the
 *      1,000 keys that follow; queries/s and ns per item.
 *
 * Not built by default (no library code lives in perf/). From the repository root:
 *
 *   cc -O2 -std=c11 -D_GNU_SOURCE -I. -Iinclude perf/trie_bench.c engine/trie.c engine/ebr.c \
 *      engine/alloc.c engine/error.c -o /tmp/trie_bench -lpthread && /tmp/trie_bench
 *
 * The key generator is seeded with a constant, so runs are comparable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/ebr.h"
#include "engine/trie.h"

#define BENCH_KEYS 1000000u
#define SCAN_KEYS 10000u
#define SCAN_LEN 1000u
#define SCAN_QUERIES 20000u

/* A caller record: 8-byte aligned, holding its key. */
struct bench_rec {
    uint64_t len;
    unsigned char key[16];
};

static const unsigned char *
bench_key_of(const void *val, uint32_t *len, void *ctx)
{
    (void)ctx;
    const struct bench_rec *r = val;
    *len = (uint32_t)r->len;
    return r->key;
}

static void
bench_retire(void *ctx, void *node)
{
    (void)ctx;
    htkv_trie_node_free(node); /* single-threaded: no reader can hold it */
}

static uint64_t
bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static double
bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct bench_rec *
bench_recs(uint32_t n, uint64_t *rs)
{
    struct bench_rec *recs = malloc((size_t)n * sizeof(*recs));
    if (recs == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < n; i++) {
        recs[i].len = 16;
        uint64_t a = bench_rand(rs);
        uint64_t b = bench_rand(rs);
        memcpy(recs[i].key, &a, 8);
        memcpy(recs[i].key + 8, &b, 8);
    }
    return recs;
}

static void
bench_fill(struct trie *t, struct bench_rec *recs, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        void *prev;
        if (htkv_trie_insert(t, &recs[i], &prev) != 0) {
            fprintf(stderr, "insert failed\n");
            exit(1);
        }
    }
}

/* Inserts and point gets over BENCH_KEYS keys. */
static void
bench_points(struct ebr *ebr)
{
    uint64_t rs = 0x9e3779b97f4a7c15ull;
    struct bench_rec *recs = bench_recs(BENCH_KEYS, &rs);
    uint32_t *order = malloc(BENCH_KEYS * sizeof(*order));
    for (uint32_t i = 0; i < BENCH_KEYS; i++) {
        order[i] = (uint32_t)(bench_rand(&rs) % BENCH_KEYS);
    }
    struct trie t;
    htkv_trie_init(&t, bench_key_of, bench_retire, NULL);

    double t0 = bench_now();
    bench_fill(&t, recs, BENCH_KEYS);
    double t1 = bench_now();
    printf("insert   %u random 16 B keys: %8.0f ns/op  %10.0f inserts/s  (%llu keys, %.1f MiB "
           "of nodes, %.1f B/key)\n",
           BENCH_KEYS, (t1 - t0) * 1e9 / BENCH_KEYS, BENCH_KEYS / (t1 - t0),
           (unsigned long long)htkv_trie_count(&t), htkv_trie_bytes(&t) / 1048576.0,
           (double)htkv_trie_bytes(&t) / BENCH_KEYS);

    uint64_t found = 0;
    t0 = bench_now();
    for (uint32_t i = 0; i < BENCH_KEYS; i++) {
        const struct bench_rec *r = &recs[order[i]];
        found += htkv_trie_get(&t, r->key, 16) == r;
    }
    t1 = bench_now();
    printf("get      present keys, random:    %8.0f ns/op  %10.0f gets/s\n",
           (t1 - t0) * 1e9 / BENCH_KEYS, BENCH_KEYS / (t1 - t0));
    t0 = bench_now();
    for (uint32_t i = 0; i < BENCH_KEYS; i++) {
        const struct bench_rec *r = &recs[order[i]];
        unsigned slot = htkv_ebr_enter(ebr);
        found += htkv_trie_get(&t, r->key, 16) == r;
        htkv_ebr_exit(ebr, slot);
    }
    t1 = bench_now();
    printf("get+EBR  present keys, random:    %8.0f ns/op  %10.0f gets/s\n",
           (t1 - t0) * 1e9 / BENCH_KEYS, BENCH_KEYS / (t1 - t0));
    if (found != 2ull * BENCH_KEYS) {
        fprintf(stderr, "lookups missed: %llu\n", (unsigned long long)found);
        exit(1);
    }
    htkv_trie_fini(&t);
    free(order);
    free(recs);
}

static int
bench_rec_cmp(const void *a, const void *b)
{
    return memcmp(((const struct bench_rec *)a)->key, ((const struct bench_rec *)b)->key, 16);
}

/* Seek + SCAN_LEN next() over a trie of SCAN_KEYS keys; the start rank is uniform in [0, n-1000].
 */
static void
bench_scans(struct ebr *ebr)
{
    uint64_t rs = 0x243f6a8885a308d3ull;
    struct bench_rec *recs = bench_recs(SCAN_KEYS, &rs);
    qsort(recs, SCAN_KEYS, sizeof(*recs), bench_rec_cmp); /* rank i = recs[i] */
    struct trie t;
    htkv_trie_init(&t, bench_key_of, bench_retire, NULL);
    bench_fill(&t, recs, SCAN_KEYS);
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &t);
    uint64_t items = 0;
    double t0 = bench_now();
    for (uint32_t q = 0; q < SCAN_QUERIES; q++) {
        const struct bench_rec *start = &recs[bench_rand(&rs) % (SCAN_KEYS - SCAN_LEN + 1)];
        unsigned slot = htkv_ebr_enter(ebr);
        if (htkv_trie_cursor_seek(&c, start->key, 16) != 0) {
            exit(1);
        }
        for (uint32_t i = 0; i < SCAN_LEN; i++) {
            const struct bench_rec *r = htkv_trie_cursor_next(&c);
            if (r != start + i) {
                fprintf(stderr, "scan out of order\n");
                exit(1);
            }
            items++;
        }
        htkv_ebr_exit(ebr, slot);
    }
    double t1 = bench_now();
    printf("scan     %u of %u keys:       %8.0f ns/query %8.0f queries/s  %5.1f ns/item\n",
           SCAN_LEN, SCAN_KEYS, (t1 - t0) * 1e9 / SCAN_QUERIES, SCAN_QUERIES / (t1 - t0),
           (t1 - t0) * 1e9 / (double)items);
    htkv_trie_cursor_fini(&c);
    htkv_trie_fini(&t);
    free(recs);
}

int
main(void)
{
    struct ebr *ebr = aligned_alloc(HTKV_CACHELINE, sizeof(*ebr));
    if (ebr == NULL) {
        return 1;
    }
    htkv_ebr_init(ebr);
    bench_points(ebr);
    bench_scans(ebr);
    free(ebr);
    return 0;
}
