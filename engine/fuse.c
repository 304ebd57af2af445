/*
 * fuse.c - building and querying binary fuse filters (shape, rules and invariants in fuse.h).
 *
 * Design. The shape follows the measurements published with binary fuse filters (Graf and
 * Lemire, 2022): segments of about n^(1/1.2) / 4.8 slots (a power of two, at most 2^18) and an
 * array of 1.125 n slots for large n, more for small n, where peeling fails more often. The
 * logarithms they need are computed here without libm; they only size the array, and a shape
 * that fails to peel grows.
 *
 * Peeling keeps, per slot, how many items use it (count, in the upper 6 bits of a byte), the
 * xor of the numbers (0, 1, 2) of the slots those items use there (the low 2 bits) and the xor of
 * their mixed hashes: once a slot has one item left, the two xors name that item and the slot's
 * number among its three. A byte counts at most 63 items; a slot that would take more fails the
 * seed.
 *
 * Layer: formats. Calls the base layer (allocation); knows no file and no store.
 */
#include "engine/fuse.h"

#include <stdlib.h>
#include <string.h>

/* Seeds tried per shape before the array grows by a segment, and shapes tried in all. */
#define FUSE_TRIES_PER_SHAPE 4u
#define FUSE_SHAPES_MAX 16u

static inline uint64_t
fuse_mix(uint64_t h, uint64_t seed)
{
    uint64_t x = h + seed;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static inline unsigned char
fuse_fingerprint(uint64_t x)
{
    return (unsigned char)(x ^ (x >> 32));
}

/* The three slots of mixed hash @p x: one in each of three consecutive segments. */
static inline void
fuse_slots(const struct fuse *f, uint64_t x, uint32_t s[3])
{
    uint64_t span = (uint64_t)f->seg_count * f->seg_len;
    uint32_t mask = f->seg_len - 1;
    s[0] = (uint32_t)(((__uint128_t)x * span) >> 64);
    s[1] = (s[0] + f->seg_len) ^ (uint32_t)((x >> 18) & mask);
    s[2] = (s[0] + 2 * f->seg_len) ^ (uint32_t)(x & mask);
}

bool
htkv_fuse_contains(const struct fuse *f, uint64_t hash)
{
    uint64_t x = fuse_mix(hash, f->seed);
    uint32_t s[3];
    fuse_slots(f, x, s);
    return (unsigned char)(fuse_fingerprint(x) ^ f->fp[s[0]] ^ f->fp[s[1]] ^ f->fp[s[2]]) == 0;
}

bool
htkv_fuse_shape_ok(uint32_t seg_len, uint64_t bytes)
{
    return seg_len >= 4 && seg_len <= FUSE_SEG_LEN_MAX && (seg_len & (seg_len - 1)) == 0 &&
           bytes % seg_len == 0 && bytes / seg_len >= 3 && bytes <= UINT32_MAX;
}

/* Natural logarithm of @p x >= 1, to ~1e-9: x = m 2^k, ln m = 2 atanh((m - 1) / (m + 1)). */
static double
fuse_ln(double x)
{
    int k = 0;
    while (x >= 2.0) {
        x *= 0.5;
        k++;
    }
    double s = (x - 1.0) / (x + 1.0), s2 = s * s, term = s, sum = 0.0;
    for (int i = 1; i < 40; i += 2) {
        sum += term / i;
        term *= s2;
    }
    return 2.0 * sum + k * 0.6931471805599453;
}

/* Segment length and count for @p n items (see the top). */
static void
fuse_shape(size_t n, struct fuse *f)
{
    /* seg_len = 2^floor(log_3.33(n) + 2.25): e = floor(log_3.33(n)), then one more when the
     * fraction left is at least 0.75, i.e. n / 3.33^e >= 3.33^0.75 = 2.4646. */
    unsigned e = 0;
    double t = 1.0;
    while (t * 3.33 <= (double)n) {
        t *= 3.33;
        e++;
    }
    e += 2 + ((double)n >= t * 2.4646 ? 1 : 0);
    f->seg_len = e >= 18 ? FUSE_SEG_LEN_MAX : 1u << e;
    double factor = 0.0;
    if (n > 1) {
        factor = 0.875 + 0.25 * fuse_ln(1e6) / fuse_ln((double)n);
        factor = factor < 1.125 ? 1.125 : factor;
    }
    uint64_t capacity = (uint64_t)((double)n * factor + 0.5);
    uint64_t segs = (capacity + f->seg_len - 1) / f->seg_len;
    f->seg_count = (uint32_t)(segs < 3 ? 1 : segs - 2);
}

/* Scratch of one build: per slot its count byte and hash xor, the peeling queue and order. */
struct fuse_work {
    unsigned char *count; /* items (upper 6 bits), xor of their slot numbers (low 2) */
    uint64_t *hxor;       /* xor of the mixed hashes of its items */
    uint32_t *queue;
    uint64_t *order; /* mixed hashes, in peeling order */
    unsigned char *which;
};

static void
work_free(struct fuse_work *w)
{
    htkv_mem_free(w->count);
    htkv_mem_free(w->hxor);
    htkv_mem_free(w->queue);
    htkv_mem_free(w->order);
    htkv_mem_free(w->which);
    memset(w, 0, sizeof(*w));
}

static int
work_alloc(struct fuse_work *w, uint64_t slots, size_t n)
{
    w->count = htkv_mem_alloc(slots);
    w->hxor = htkv_mem_alloc(slots * sizeof(*w->hxor));
    w->queue = htkv_mem_alloc(slots * sizeof(*w->queue));
    w->order = htkv_mem_alloc((n ? n : 1) * sizeof(*w->order));
    w->which = htkv_mem_alloc(n ? n : 1);
    if (w->count == NULL || w->hxor == NULL || w->queue == NULL || w->order == NULL ||
        w->which == NULL) {
        work_free(w);
        return -ENOMEM;
    }
    return 0;
}

/* Count every item in its three slots; false when a slot would hold more than 63. */
static bool
fuse_count(const struct fuse *f, const uint64_t *hashes, size_t n, struct fuse_work *w)
{
    uint64_t slots = htkv_fuse_bytes(f);
    memset(w->count, 0, slots);
    memset(w->hxor, 0, slots * sizeof(*w->hxor));
    for (size_t i = 0; i < n; i++) {
        uint64_t x = fuse_mix(hashes[i], f->seed);
        uint32_t s[3];
        fuse_slots(f, x, s);
        for (unsigned j = 0; j < 3; j++) {
            if (w->count[s[j]] >= 252) {
                return false;
            }
            w->count[s[j]] = (unsigned char)((w->count[s[j]] + 4) ^ j);
            w->hxor[s[j]] ^= x;
        }
    }
    return true;
}

/* Peel: the number of items ordered (n when the seed works). */
static size_t
fuse_peel(const struct fuse *f, struct fuse_work *w)
{
    uint64_t slots = htkv_fuse_bytes(f);
    size_t queued = 0, done = 0;
    for (uint32_t i = 0; i < slots; i++) {
        if (w->count[i] >> 2 == 1) {
            w->queue[queued++] = i;
        }
    }
    while (queued > 0) {
        uint32_t i = w->queue[--queued];
        if (w->count[i] >> 2 != 1) {
            continue; /* its last item left through another slot */
        }
        uint64_t x = w->hxor[i];
        unsigned found = w->count[i] & 3u;
        w->order[done] = x;
        w->which[done++] = (unsigned char)found;
        uint32_t s[3];
        fuse_slots(f, x, s);
        for (unsigned j = 0; j < 3; j++) {
            w->count[s[j]] = (unsigned char)((w->count[s[j]] - 4) ^ j);
            w->hxor[s[j]] ^= x;
            if (j != found && w->count[s[j]] >> 2 == 1) {
                w->queue[queued++] = s[j];
            }
        }
    }
    return done;
}

/* Fill @p fp from the peeling order, last peeled first: each item's own slot makes it hold. */
static void
fuse_assign(const struct fuse *f, const struct fuse_work *w, size_t n, unsigned char *fp)
{
    memset(fp, 0, htkv_fuse_bytes(f));
    for (size_t k = n; k-- > 0;) {
        uint64_t x = w->order[k];
        uint32_t s[3];
        fuse_slots(f, x, s);
        unsigned me = w->which[k];
        fp[s[me]] =
            (unsigned char)(fuse_fingerprint(x) ^ fp[s[(me + 1) % 3]] ^ fp[s[(me + 2) % 3]]);
    }
}

static int
u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Sort @p h and drop repeats; returns the count kept. */
static size_t
dedupe(uint64_t *h, size_t n)
{
    if (n < 2) {
        return n;
    }
    qsort(h, n, sizeof(*h), u64_cmp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++) {
        if (h[i] != h[k - 1]) {
            h[k++] = h[i];
        }
    }
    return k;
}

int
htkv_fuse_build(uint64_t *hashes, size_t n, struct fuse *out, unsigned char **array)
{
    n = dedupe(hashes, n);
    struct fuse f = { 0 };
    fuse_shape(n, &f);
    for (uint32_t shape = 0; shape < FUSE_SHAPES_MAX; shape++, f.seg_count++) {
        uint64_t slots = htkv_fuse_bytes(&f);
        if (!htkv_fuse_shape_ok(f.seg_len, slots)) {
            return -EOVERFLOW;
        }
        struct fuse_work w;
        int rc = work_alloc(&w, slots, n);
        for (uint32_t t = 0; rc == 0 && t < FUSE_TRIES_PER_SHAPE; t++) {
            f.seed = fuse_mix(shape * FUSE_TRIES_PER_SHAPE + t, 0x9E3779B97F4A7C15ull);
            if (!fuse_count(&f, hashes, n, &w) || fuse_peel(&f, &w) != n) {
                continue;
            }
            unsigned char *fp = htkv_mem_alloc(slots);
            if (fp == NULL) {
                rc = -ENOMEM;
                break;
            }
            fuse_assign(&f, &w, n, fp);
            work_free(&w);
            f.fp = fp;
            *out = f;
            *array = fp;
            return 0;
        }
        work_free(&w);
        if (rc != 0) {
            return rc;
        }
    }
    return -EOVERFLOW;
}
