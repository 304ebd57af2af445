/*
 * test_ordered.c - ordered queries: htkv_get_prefix(), htkv_scan(), limits and paging.
 *
 * The main test is a seeded model-based fuzz test (STYLE S7.3): random puts, deletes, batches
 * (a key may appear twice in one) and reopens run against the store and a sorted array of
 * (key, value) pairs kept by the test; every few operations random prefix and range queries
 * (from the store, and from views opened earlier and checked against a copy of the model taken
 * when they opened) must return exactly the model's items, in strictly increasing unsigned byte
 * order. Keys are built from the alphabet {0x00, 0x01, 'a', 0x7F, 0xFF} so that prefixes collide
 * and the byte order of 0x00 and 0xFF and of a key against its own extensions is exercised.
 * Separate tests cover the edges: an empty store, a single key, keys of HTKV_KEY_MAX bytes,
 * bad arguments, 200k keys iterated with bounded memory, and the ordered index's statistics.
 */
#include "tests/support/testutil.h"

#include <errno.h>

#include "engine/internal.h"
#include "engine/run.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define ORD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define ORD_SANITIZED 1
#endif
#endif
#ifndef ORD_SANITIZED
#define ORD_SANITIZED 0
#endif

#if ORD_SANITIZED
/* Sanitizer allocator interface (declared here: gcc does not ship the header). */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t
heap_in_use(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
#ifdef HTKV_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
static size_t
heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    size_t n = mi.uordblks + mi.hblkhd;
#ifdef HTKV_JEMALLOC
    /* The engine allocates from jemalloc: its statistics count that memory. */
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    (void)mallctl("epoch", &epoch, &len, &epoch, len);
    size_t je = 0;
    len = sizeof(je);
    if (mallctl("stats.allocated", &je, &len, NULL, 0) == 0) {
        n += je;
    }
#endif
    return n;
}
#endif

#define FZ_KEY_MAX 40  /* longest fuzz key */
#define FZ_VAL_MAX 300 /* longest fuzz value */
#define FZ_BOUND_MAX (FZ_KEY_MAX + 8)

static const unsigned char alpha[5] = { 0x00, 0x01, 'a', 0x7F, 0xFF };

/* ---- helpers -------------------------------------------------------------------------------- */

static int
key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

/* Hex of the first bytes of @p p, for failure messages; static buffer (one of 4 in turn). */
static const char *
hex(const void *p, size_t n)
{
    static char bufs[4][200];
    static int turn;
    char *b = bufs[turn++ % 4];
    const unsigned char *s = p;
    size_t o = 0;
    size_t show = n < 60 ? n : 60;
    for (size_t i = 0; i < show; i++) {
        o += (size_t)snprintf(b + o, 200 - o, "%02x", s[i]);
    }
    if (show < n) {
        snprintf(b + o, 200 - o, "..(%zu)", n);
    } else if (n == 0) {
        snprintf(b, 200, "(empty)");
    }
    return b;
}

static void
put_ok(htkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = htkv_put(db, k, kl, v, vl);
    if (rc != 0) {
        fprintf(stderr, "put %s: %s\n", hex(k, kl), htkv_strerror(rc));
    }
    assert_int_equal(rc, 0);
}

/* ---- the model: a sorted array of (key, value) ---------------------------------------------- */

struct ment {
    unsigned char *key; /* one allocation: key then value */
    size_t klen;
    size_t vlen;
};

static inline const unsigned char *
ment_val(const struct ment *e)
{
    return e->key + e->klen;
}

struct model {
    struct ment *e;
    size_t n, cap;
};

/* Index of the first entry >= key. */
static size_t
model_lower(const struct model *m, const void *key, size_t klen)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(m->e[mid].key, m->e[mid].klen, key, klen) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static bool
model_has(const struct model *m, const void *key, size_t klen, size_t *at)
{
    size_t i = model_lower(m, key, klen);
    *at = i;
    return i < m->n && key_cmp(m->e[i].key, m->e[i].klen, key, klen) == 0;
}

static void
model_put(struct model *m, const void *key, size_t klen, const void *val, size_t vlen)
{
    size_t i;
    unsigned char *blob = malloc(klen + vlen + 1);
    assert_non_null(blob);
    memcpy(blob, key, klen);
    if (vlen > 0) {
        memcpy(blob + klen, val, vlen);
    }
    if (model_has(m, key, klen, &i)) {
        free(m->e[i].key);
    } else {
        if (m->n == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 64;
            m->e = realloc(m->e, m->cap * sizeof(*m->e));
            assert_non_null(m->e);
        }
        memmove(&m->e[i + 1], &m->e[i], (m->n - i) * sizeof(*m->e));
        m->n++;
    }
    m->e[i] = (struct ment){ blob, klen, vlen };
}

/* Remove @p key; returns whether it was there. */
static bool
model_del(struct model *m, const void *key, size_t klen)
{
    size_t i;
    if (!model_has(m, key, klen, &i)) {
        return false;
    }
    free(m->e[i].key);
    memmove(&m->e[i], &m->e[i + 1], (m->n - i - 1) * sizeof(*m->e));
    m->n--;
    return true;
}

static void
model_clone(struct model *dst, const struct model *src)
{
    dst->n = dst->cap = src->n;
    dst->e = malloc((src->n + 1) * sizeof(*dst->e));
    assert_non_null(dst->e);
    for (size_t i = 0; i < src->n; i++) {
        const struct ment *s = &src->e[i];
        dst->e[i] = *s;
        dst->e[i].key = malloc(s->klen + s->vlen + 1);
        assert_non_null(dst->e[i].key);
        memcpy(dst->e[i].key, s->key, s->klen + s->vlen);
    }
}

static void
model_free(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
    }
    free(m->e);
    memset(m, 0, sizeof(*m));
}

/* Model range of a prefix query: [*lo, *hi). */
static void
model_prefix_range(const struct model *m, const void *p, size_t plen, size_t *lo, size_t *hi)
{
    size_t i = model_lower(m, p, plen);
    *lo = i;
    while (i < m->n && m->e[i].klen >= plen && memcmp(m->e[i].key, p, plen) == 0) {
        i++;
    }
    *hi = i;
}

/* Model range of a scan [start, end) (an empty end = no upper bound). */
static void
model_scan_range(const struct model *m, const void *s, size_t slen, const void *e, size_t elen,
                 size_t *lo, size_t *hi)
{
    *lo = model_lower(m, s, slen);
    *hi = elen == 0 ? m->n : model_lower(m, e, elen);
    if (*hi < *lo) {
        *hi = *lo; /* start >= end: nothing */
    }
}

/* ---- checking an iterator against the model ------------------------------------------------ */

/* What a query is, for failure messages. */
static char qdesc[512];

/*
 * Read items from @p it and compare them with m->e[*pos ..): at most @p max items (0 = until
 * the end). Every item must be the next model entry (key and value) and be strictly greater
 * than the previous key returned (*prev, updated). Returns the number of items read; the
 * iterator's end (rc 0) stops early.
 */
static size_t
iter_expect(htkv_iter *it, const struct model *m, size_t *pos, size_t hi, size_t max,
            unsigned char *prev, size_t *prevlen, bool *ended)
{
    size_t got = 0;
    *ended = false;
    while (max == 0 || got < max) {
        const void *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        int rc = htkv_iter_next(it, &k, &kl, &v, &vl);
        if (rc == 0) {
            *ended = true;
            break;
        }
        if (rc != 1) {
            fprintf(stderr, "%s: iter_next rc %d (%s)\n", qdesc, rc, htkv_strerror(rc));
            fail();
        }
        if (*prevlen != SIZE_MAX && key_cmp(prev, *prevlen, k, kl) >= 0) {
            fprintf(stderr, "%s: order broken: %s after %s\n", qdesc, hex(k, kl),
                    hex(prev, *prevlen));
            fail();
        }
        if (*pos >= hi) {
            fprintf(stderr, "%s: extra item %s after the %zu expected\n", qdesc, hex(k, kl), got);
            fail();
        }
        const struct ment *e = &m->e[*pos];
        if (key_cmp(e->key, e->klen, k, kl) != 0) {
            fprintf(stderr, "%s: item %zu is %s, want %s\n", qdesc, got, hex(k, kl),
                    hex(e->key, e->klen));
            fail();
        }
        if (vl != e->vlen || (vl > 0 && memcmp(v, ment_val(e), vl) != 0)) {
            fprintf(stderr, "%s: value of %s: %zu bytes %s, want %zu bytes %s\n", qdesc, hex(k, kl),
                    vl, hex(v, vl), e->vlen, hex(ment_val(e), e->vlen));
            fail();
        }
        assert_true(kl <= HTKV_KEY_MAX);
        memcpy(prev, k, kl);
        *prevlen = kl;
        (*pos)++;
        got++;
    }
    return got;
}

/* Where queries go: the store itself, or a view. */
struct target {
    htkv_db *db;
    htkv_view *view;
};

static int
open_prefix(const struct target *t, const void *p, size_t plen, htkv_iter **it)
{
    return t->view != NULL ? htkv_view_get_prefix(t->view, p, plen, it)
                           : htkv_get_prefix(t->db, p, plen, it);
}

static int
open_scan(const struct target *t, const void *s, size_t slen, const void *e, size_t elen,
          htkv_iter **it)
{
    return t->view != NULL ? htkv_view_scan(t->view, s, slen, e, elen, it)
                           : htkv_scan(t->db, s, slen, e, elen, it);
}

/*
 * Read all of @p it (model range [lo, hi)), in one of several ways chosen by @p how:
 *   0: no limit;  1: a limit set before the first item;  2: a limit set after some items, then
 *   the limit removed (0) and the rest read.
 */
static void
check_iter(htkv_iter *it, const struct model *m, size_t lo, size_t hi, unsigned how, uint64_t *rng)
{
    static unsigned char prev[HTKV_KEY_MAX + 1];
    size_t prevlen = SIZE_MAX;
    size_t pos = lo;
    bool ended;
    size_t want = hi - lo;
    if (how == 1) {
        uint64_t lim = 1 + tu_rand(rng) % 12;
        assert_int_equal(htkv_iter_set_limit(it, lim), 0);
        size_t got = iter_expect(it, m, &pos, hi, 0, prev, &prevlen, &ended);
        assert_int_equal(got, want < lim ? want : lim);
        /* Past the limit the iterator keeps answering "the end". */
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        return;
    }
    if (how == 2) {
        size_t first = (size_t)(tu_rand(rng) % 6);
        size_t got = first == 0 ? 0 : iter_expect(it, m, &pos, hi, first, prev, &prevlen, &ended);
        assert_int_equal(got, want < first ? want : first);
        uint64_t lim = 1 + tu_rand(rng) % 8;
        assert_int_equal(htkv_iter_set_limit(it, lim), 0);
        size_t more = iter_expect(it, m, &pos, hi, 0, prev, &prevlen, &ended);
        size_t left = want - got;
        assert_int_equal(more, left < lim ? left : lim);
        assert_int_equal(htkv_iter_set_limit(it, 0), 0); /* no limit any more */
        iter_expect(it, m, &pos, hi, 0, prev, &prevlen, &ended);
        if (pos != hi) {
            fprintf(stderr, "%s: ended after %zu items, want %zu\n", qdesc, pos - lo, want);
            fail();
        }
        return;
    }
    iter_expect(it, m, &pos, hi, 0, prev, &prevlen, &ended);
    if (pos != hi) {
        fprintf(stderr, "%s: ended after %zu items, want %zu\n", qdesc, pos - lo, want);
        fail();
    }
    /* The end is sticky. */
    assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
}

static void
check_prefix(const struct target *t, const struct model *m, const void *p, size_t plen,
             unsigned how, uint64_t *rng)
{
    size_t lo, hi;
    model_prefix_range(m, p, plen, &lo, &hi);
    snprintf(qdesc, sizeof(qdesc), "%s prefix %s (how %u, want %zu)", t->view ? "view" : "db",
             hex(p, plen), how, hi - lo);
    htkv_iter *it = NULL;
    int rc = open_prefix(t, plen == 0 && tu_rand(rng) % 2 ? NULL : p, plen, &it);
    assert_int_equal(rc, 0);
    assert_non_null(it);
    check_iter(it, m, lo, hi, how, rng);
    htkv_iter_destroy(it);
}

static void
check_scan(const struct target *t, const struct model *m, const void *s, size_t slen, const void *e,
           size_t elen, unsigned how, uint64_t *rng)
{
    size_t lo, hi;
    model_scan_range(m, s, slen, e, elen, &lo, &hi);
    snprintf(qdesc, sizeof(qdesc), "%s scan [%s, %s) (how %u, want %zu)", t->view ? "view" : "db",
             hex(s, slen), hex(e, elen), how, hi - lo);
    htkv_iter *it = NULL;
    assert_int_equal(open_scan(t, s, slen, e, elen, &it), 0);
    assert_non_null(it);
    check_iter(it, m, lo, hi, how, rng);
    htkv_iter_destroy(it);
}

/*
 * Page through [s, e) @p page items at a time: each page is a new scan from the last key
 * returned plus a 0x00 byte, with htkv_iter_set_limit(page).
 */
static void
check_paging(const struct target *t, const struct model *m, const void *s, size_t slen,
             const void *e, size_t elen, uint64_t page)
{
    static unsigned char prev[HTKV_KEY_MAX + 1];
    unsigned char start[FZ_BOUND_MAX + 64];
    size_t prevlen = SIZE_MAX;
    size_t lo, hi;
    model_scan_range(m, s, slen, e, elen, &lo, &hi);
    memcpy(start, s, slen);
    size_t startlen = slen;
    size_t pos = lo;
    int pages = 0;
    for (;;) {
        snprintf(qdesc, sizeof(qdesc), "%s paging [%s, %s) page %d of %llu from %s (want %zu)",
                 t->view ? "view" : "db", hex(s, slen), hex(e, elen), pages,
                 (unsigned long long)page, hex(start, startlen), hi - lo);
        htkv_iter *it = NULL;
        assert_int_equal(open_scan(t, start, startlen, e, elen, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, page), 0);
        bool ended;
        size_t got = iter_expect(it, m, &pos, hi, 0, prev, &prevlen, &ended);
        assert_true(ended);
        htkv_iter_destroy(it);
        pages++;
        if (got < page) {
            break;
        }
        assert_true(got == page);
        assert_true(prevlen + 1 <= sizeof(start));
        memcpy(start, prev, prevlen);
        start[prevlen] = 0x00;
        startlen = prevlen + 1;
    }
    if (pos != hi) {
        fprintf(stderr, "%s: paging ended after %zu items, want %zu\n", qdesc, pos - lo, hi - lo);
        fail();
    }
    assert_int_equal(pages, (int)((hi - lo) / page + 1));
}

/* ---- the fuzz test -------------------------------------------------------------------------- */

struct fuzz {
    uint64_t rng;
    struct model m;
};

static size_t
rand_len(uint64_t *rng, size_t max)
{
    uint64_t r = tu_rand(rng) % 10;
    size_t n = r < 4   ? 1 + (size_t)(tu_rand(rng) % 3)
               : r < 8 ? 1 + (size_t)(tu_rand(rng) % 8)
                       : 1 + (size_t)(tu_rand(rng) % max);
    return n > max ? max : n;
}

static void
rand_alpha(uint64_t *rng, unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = alpha[tu_rand(rng) % 5];
    }
}

/* A key of 1..FZ_KEY_MAX bytes: often one in the model, or derived from one, or fresh. */
static size_t
gen_key(struct fuzz *f, unsigned char *k)
{
    uint64_t r = tu_rand(&f->rng) % 10;
    if (f->m.n > 0 && r < 7) {
        const struct ment *e = &f->m.e[tu_rand(&f->rng) % f->m.n];
        if (r < 4) {
            memcpy(k, e->key, e->klen);
            return e->klen;
        }
        /* Derived: a prefix of an existing key (possibly all of it) plus 0..5 more bytes. */
        size_t cut = (size_t)(tu_rand(&f->rng) % (e->klen + 1));
        cut = cut > FZ_KEY_MAX ? FZ_KEY_MAX : cut; /* always true: tells the compiler */
        size_t add = (size_t)(tu_rand(&f->rng) % 6);
        if (cut + add == 0) {
            add = 1;
        }
        if (cut + add > FZ_KEY_MAX) {
            add = FZ_KEY_MAX - cut;
        }
        memcpy(k, e->key, cut);
        rand_alpha(&f->rng, k + cut, add);
        return cut + add;
    }
    size_t n = rand_len(&f->rng, FZ_KEY_MAX);
    rand_alpha(&f->rng, k, n);
    return n;
}

/* A prefix or bound of 0..FZ_BOUND_MAX bytes, in the flavours the queries need. */
static size_t
gen_bound(struct fuzz *f, unsigned char *p)
{
    uint64_t r = tu_rand(&f->rng) % 20;
    if (r < 2) {
        return 0; /* empty: everything / unbounded */
    }
    if (r < 12 && f->m.n > 0) {
        const struct ment *e = &f->m.e[tu_rand(&f->rng) % f->m.n];
        memcpy(p, e->key, e->klen);
        if (r < 6) {
            return e->klen; /* a whole key */
        }
        if (r < 10) {
            return e->klen > 1 ? 1 + (size_t)(tu_rand(&f->rng) % (e->klen - 1)) : e->klen;
        }
        size_t add = 1 + (size_t)(tu_rand(&f->rng) % 3); /* a key plus more: often nothing */
        rand_alpha(&f->rng, p + e->klen, add);
        return e->klen + add;
    }
    if (r < 15) {
        size_t n = 1 + (size_t)(tu_rand(&f->rng) % 6);
        rand_alpha(&f->rng, p, n);
        return n;
    }
    if (r < 17) {
        /* Bytes outside the alphabet: matches nothing, sorts between the alphabet's bytes. */
        size_t n = 1 + (size_t)(tu_rand(&f->rng) % 4);
        rand_alpha(&f->rng, p, n);
        static const unsigned char odd[4] = { 0x02, 'b', 0x80, 0xFE };
        p[tu_rand(&f->rng) % n] = odd[tu_rand(&f->rng) % 4];
        return n;
    }
    if (r < 19) {
        memset(p, 0xFF, FZ_KEY_MAX + 1); /* past every key */
        return FZ_KEY_MAX + 1;
    }
    p[0] = 0x00; /* before every key but those starting with 0x00 */
    return 1;
}

/* One random query against @p t, whose contents are @p m. */
static void
fuzz_query(struct fuzz *f, const struct target *t, const struct model *m)
{
    unsigned char a[FZ_BOUND_MAX], b[FZ_BOUND_MAX];
    uint64_t r = tu_rand(&f->rng) % 10;
    unsigned how = (unsigned)(tu_rand(&f->rng) % 4);
    how = how == 3 ? 0 : how;
    if (r < 4) {
        size_t al = gen_bound(f, a);
        check_prefix(t, m, a, al, how, &f->rng);
    } else if (r < 8) {
        size_t al = gen_bound(f, a);
        size_t bl = gen_bound(f, b);
        if (tu_rand(&f->rng) % 4 == 0 && key_cmp(a, al, b, bl) < 0) {
            check_scan(t, m, b, bl, a, al, how, &f->rng); /* start > end: nothing */
        } else if (tu_rand(&f->rng) % 8 == 0) {
            check_scan(t, m, a, al, a, al, how, &f->rng); /* start == end: nothing */
        } else {
            check_scan(t, m, a, al, b, bl, how, &f->rng);
        }
    } else {
        size_t al = gen_bound(f, a);
        size_t bl = tu_rand(&f->rng) % 3 == 0 ? 0 : gen_bound(f, b);
        if (bl > 0 && key_cmp(a, al, b, bl) > 0) {
            check_paging(t, m, b, bl, a, al, 1 + tu_rand(&f->rng) % 7);
        } else {
            check_paging(t, m, a, al, b, bl, 1 + tu_rand(&f->rng) % 7);
        }
    }
}

/* The whole store, three ways: prefix "", scan ["", ""), and paging. */
static void
fuzz_check_all(struct fuzz *f, const struct target *t, const struct model *m)
{
    check_prefix(t, m, "", 0, 0, &f->rng);
    check_scan(t, m, "", 0, "", 0, 0, &f->rng);
    check_paging(t, m, "", 0, "", 0, 16 + tu_rand(&f->rng) % 100);
}

/* runs: htkv_run_eager's level (0: the credit rules; 1: runs at every query; 2: and paths). */
static void
ordered_fuzz(unsigned shards, long nops, int runs)
{
    char tag[40];
    snprintf(tag, sizeof(tag),
             runs == 2   ? "ordered-fuzz-paths-%u"
             : runs == 1 ? "ordered-fuzz-runs-%u"
                         : "ordered-fuzz-%u",
             shards);
    htkv_run_eager = runs;
    uint64_t seed = tu_seed(tag);
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = shards;
    cfg.max_segment_bytes = 64u << 10; /* records spread over many segments */
    struct fuzz f = { .rng = seed };
    htkv_db *db = tu_open(&cfg);
    struct target live = { db, NULL };
    /* A view opened at some point, checked later against the model as it was then. */
    struct target old = { db, NULL };
    struct model old_m = { 0 };
    long old_until = 0;
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    unsigned char k[FZ_KEY_MAX], v[FZ_VAL_MAX];
    int reopens = 0, views = 0;
    long queries = 0;
    for (long op = 0; op < nops; op++) {
        tu_context("ordered fuzz: seed %llu, shards %u, op %ld", (unsigned long long)seed, shards,
                   op);
        uint64_t r = tu_rand(&f.rng) % 90;
        if (r < 50) {
            size_t kl = gen_key(&f, k);
            size_t vl = (size_t)(tu_rand(&f.rng) % (FZ_VAL_MAX + 1));
            tu_fill(v, vl, tu_rand(&f.rng));
            put_ok(db, k, kl, v, vl);
            model_put(&f.m, k, kl, v, vl);
        } else if (r < 70) {
            size_t kl = gen_key(&f, k);
            bool had = model_del(&f.m, k, kl);
            int rc = htkv_delete(db, k, kl);
            if (rc != (had ? 0 : HTKV_ENOTFOUND)) {
                fprintf(stderr, "seed %llu op %ld: delete %s: %s, key was %s\n",
                        (unsigned long long)seed, op, hex(k, kl), htkv_strerror(rc),
                        had ? "present" : "absent");
                fail();
            }
        } else if (r < 85) {
            /* A batch of 1..12 operations; a key may come twice (put/put, put/delete, ...). */
            htkv_batch_clear(b);
            int nb = 1 + (int)(tu_rand(&f.rng) % 12);
            unsigned char keys[12][FZ_KEY_MAX];
            size_t kls[12];
            for (int i = 0; i < nb; i++) {
                if (i > 0 && tu_rand(&f.rng) % 4 == 0) {
                    int j = (int)(tu_rand(&f.rng) % (uint64_t)i);
                    memcpy(keys[i], keys[j], kls[j]);
                    kls[i] = kls[j];
                } else {
                    kls[i] = gen_key(&f, keys[i]);
                }
                if (tu_rand(&f.rng) % 3 != 0) {
                    size_t vl = (size_t)(tu_rand(&f.rng) % (FZ_VAL_MAX + 1));
                    tu_fill(v, vl, tu_rand(&f.rng));
                    assert_int_equal(htkv_batch_put(b, keys[i], kls[i], v, vl), 0);
                    model_put(&f.m, keys[i], kls[i], v, vl);
                } else {
                    assert_int_equal(htkv_batch_delete(b, keys[i], kls[i]), 0);
                    model_del(&f.m, keys[i], kls[i]);
                }
            }
            int rc = htkv_write(db, b);
            if (rc != 0) {
                fprintf(stderr, "seed %llu op %ld: batch of %d: %s\n", (unsigned long long)seed, op,
                        nb, htkv_strerror(rc));
                fail();
            }
        } else if (r < 87) {
            /* Reopen (views and iterators never outlive the handle). */
            if (old.view != NULL) {
                htkv_view_close(old.view);
                old.view = NULL;
                model_free(&old_m);
            }
            assert_int_equal(htkv_close(db), 0);
            cfg.sync_mode = tu_rand(&f.rng) % 2 ? HTKV_SYNC_NEVER : HTKV_SYNC_INTERVAL;
            db = tu_open(&cfg);
            live.db = old.db = db;
            reopens++;
            fuzz_check_all(&f, &live, &f.m);
        } else if (r < 90 && old.view == NULL) {
            assert_int_equal(htkv_view_open(db, &old.view), 0);
            model_clone(&old_m, &f.m);
            old_until = op + 20 + (long)(tu_rand(&f.rng) % 200);
            views++;
        }
        if (tu_rand(&f.rng) % 3 == 0) {
            int nq = 1 + (int)(tu_rand(&f.rng) % 3);
            for (int q = 0; q < nq; q++, queries++) {
                tu_context("ordered fuzz: seed %llu, shards %u, op %ld, query %ld",
                           (unsigned long long)seed, shards, op, queries);
                if (old.view != NULL && tu_rand(&f.rng) % 3 == 0) {
                    fuzz_query(&f, &old, &old_m);
                } else {
                    fuzz_query(&f, &live, &f.m);
                }
            }
        }
        if (old.view != NULL && op >= old_until) {
            fuzz_check_all(&f, &old, &old_m);
            htkv_view_close(old.view);
            old.view = NULL;
            model_free(&old_m);
        }
        if (op % 250 == 249) {
            fuzz_check_all(&f, &live, &f.m);
        }
    }
    fuzz_check_all(&f, &live, &f.m);
    if (old.view != NULL) {
        fuzz_check_all(&f, &old, &old_m);
        htkv_view_close(old.view);
        model_free(&old_m);
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(tu_stats(db).live_keys, f.m.n);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    live.db = db;
    fuzz_check_all(&f, &live, &f.m);
    assert_int_equal(htkv_close(db), 0);
    fprintf(stderr, "[%s] %ld ops, %zu keys at the end, %ld queries, %d reopens, %d views\n", tag,
            nops, f.m.n, queries, reopens, views);
    assert_true(reopens > 5 && views > 5 && f.m.n > 100);
    htkv_batch_destroy(b);
    model_free(&f.m);
    htkv_run_eager = 0;
    tu_rmrf(dir);
    free(dir);
}

static long
fuzz_ops(void)
{
    return ORD_SANITIZED ? 1500 : 3000;
}

/* Goal: prefix and range queries, limits and paging return exactly the keys of a sorted model,
 * in strictly increasing unsigned byte order, through puts, deletes, batches and reopens, from
 * the store and from older views, with a single shard (no merge). Method: ordered_fuzz(). */
static void
test_ordered_fuzz_matches_sorted_model_1_shard(void **state)
{
    (void)state;
    ordered_fuzz(1, fuzz_ops(), 0);
}

/* Goal: as above with 4 shards: the merge of several shards' streams (a linear scan for the
 * smallest current key up to 8 shards). */
static void
test_ordered_fuzz_matches_sorted_model_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 0);
}

/* Goal: as above with 7 shards (not a power of two). */
static void
test_ordered_fuzz_matches_sorted_model_7_shards(void **state)
{
    (void)state;
    ordered_fuzz(7, fuzz_ops(), 0);
}

/* Goal: as above with 13 shards: the heap merge (more than 8 shards). */
static void
test_ordered_fuzz_matches_sorted_model_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 0);
}

/* Goal: as above, with every query reading the shards' sorted runs (run.h): each query builds
 * a run for every shard whose run went stale, so queries read runs built after the views they
 * serve were opened (elements newer than the view are looked up again in the trie), and
 * iterators keep runs that later writes made stale. 4 shards: the linear merge. */
static void
test_ordered_fuzz_sorted_runs_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 1);
}

/* Goal: as above with 13 shards (the heap merge). */
static void
test_ordered_fuzz_sorted_runs_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 1);
}

/* Goal: as above, with every query that finds an exact run in every shard building the store's
 * merge path (run.h) and reading along it: bounds from the sums of the shards' bounds, elements
 * the views do not see as they are looked up again. 4 and 13 shards. */
static void
test_ordered_fuzz_merge_paths_4_shards(void **state)
{
    (void)state;
    ordered_fuzz(4, fuzz_ops(), 2);
}

static void
test_ordered_fuzz_merge_paths_13_shards(void **state)
{
    (void)state;
    ordered_fuzz(13, fuzz_ops(), 2);
}

/* ---- edges ---------------------------------------------------------------------------------- */

/* Count the items of @p it, checking strict order; destroys it. */
static size_t
drain(htkv_iter *it)
{
    static unsigned char prev[HTKV_KEY_MAX];
    size_t prevlen = 0, n = 0;
    const void *k;
    size_t kl;
    int rc;
    while ((rc = htkv_iter_next(it, &k, &kl, NULL, NULL)) == 1) {
        if (n > 0) {
            assert_true(key_cmp(prev, prevlen, k, kl) < 0);
        }
        memcpy(prev, k, kl);
        prevlen = kl;
        n++;
    }
    assert_int_equal(rc, 0);
    htkv_iter_destroy(it);
    return n;
}

static size_t
count_prefix(htkv_db *db, const void *p, size_t plen)
{
    htkv_iter *it = NULL;
    assert_int_equal(htkv_get_prefix(db, p, plen, &it), 0);
    assert_non_null(it);
    return drain(it);
}

static size_t
count_scan(htkv_db *db, const void *s, size_t slen, const void *e, size_t elen)
{
    htkv_iter *it = NULL;
    assert_int_equal(htkv_scan(db, s, slen, e, elen, &it), 0);
    assert_non_null(it);
    return drain(it);
}

/* Goal: every query on an empty store (never written, then holding only tombstones, then
 * reopened) returns nothing, and the iterator's end is sticky. Method: prefixes and ranges of
 * every flavour; NULL outputs to htkv_iter_next. */
static void
test_ordered_empty_store_returns_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-empty");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(count_prefix(db, NULL, 0), 0);
        assert_int_equal(count_prefix(db, "", 0), 0);
        assert_int_equal(count_prefix(db, "a", 1), 0);
        assert_int_equal(count_prefix(db, "\0", 1), 0);
        assert_int_equal(count_scan(db, NULL, 0, NULL, 0), 0);
        assert_int_equal(count_scan(db, "a", 1, "", 0), 0);
        assert_int_equal(count_scan(db, "", 0, "\xff\xff", 2), 0);
        assert_int_equal(count_scan(db, "z", 1, "a", 1), 0);
        htkv_iter *it = NULL;
        assert_int_equal(htkv_get_prefix(db, NULL, 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 5), 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        }
        htkv_iter_destroy(it);
        if (round == 0) {
            /* Tombstones only. */
            put_ok(db, "a", 1, "x", 1);
            put_ok(db, "ab", 2, "", 0);
            assert_int_equal(htkv_delete(db, "a", 1), 0);
            assert_int_equal(htkv_delete(db, "ab", 2), 0);
        } else if (round == 1) {
            assert_int_equal(htkv_close(db), 0);
            db = tu_open(&cfg);
        }
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Expect @p it to yield exactly one item, key @p k and value @p v, then the end. */
static void
expect_one(htkv_iter *it, const void *k, size_t kl, const void *v, size_t vl)
{
    const void *gk, *gv;
    size_t gkl, gvl;
    assert_non_null(it);
    assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), 1);
    assert_int_equal(gkl, kl);
    assert_memory_equal(gk, k, kl);
    assert_int_equal(gvl, vl);
    if (vl > 0) {
        assert_memory_equal(gv, v, vl);
    }
    assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), 0);
    htkv_iter_destroy(it);
}

/* Goal: a store with one key answers every query shape exactly (the key, or nothing), and
 * limits behave at their edges. Method: the key "k\0\xff" (binary) and queries around it. */
static void
test_ordered_single_key(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-single");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    static const unsigned char key[3] = { 'k', 0x00, 0xFF };
    static const unsigned char val[5] = { 0, 1, 2, 0xFF, 'v' };
    put_ok(db, key, 3, val, 5);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        /* Prefixes: empty, each proper prefix, the key itself match; extensions do not. */
        for (size_t pl = 0; pl <= 3; pl++) {
            assert_int_equal(htkv_get_prefix(db, key, pl, &it), 0);
            expect_one(it, key, 3, val, 5);
        }
        assert_int_equal(count_prefix(db, "k\0\xff\0", 4), 0);
        assert_int_equal(count_prefix(db, "k\0\xfe", 3), 0);
        assert_int_equal(count_prefix(db, "j", 1), 0);
        assert_int_equal(count_prefix(db, "k\x01", 2), 0);
        /* Ranges: [key, ...) includes it; [..., key) excludes it. */
        assert_int_equal(htkv_scan(db, key, 3, NULL, 0, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, NULL, 0, "k\0\xff\0", 4, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, "k", 1, "l", 1, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_scan(db, "\0", 1, "\xff", 1, &it), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(count_scan(db, NULL, 0, key, 3), 0);
        assert_int_equal(count_scan(db, key, 3, key, 3), 0);
        assert_int_equal(count_scan(db, "k\0\xff\0", 4, NULL, 0), 0); /* paging past it */
        assert_int_equal(count_scan(db, "l", 1, "k", 1), 0);
        assert_int_equal(count_scan(db, "k\0\xff", 3, "k", 1), 0);
        /* Limits: 1 returns it; a limit set after the end changes nothing. */
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 1), 0);
        expect_one(it, key, 3, val, 5);
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, UINT64_MAX), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 1);
        assert_int_equal(htkv_iter_set_limit(it, 3), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        htkv_iter_destroy(it);
        /* A limit reached stops the iterator; lifting it (0) lets it go on to the end. */
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        assert_int_equal(htkv_iter_set_limit(it, 1), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 1);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        assert_int_equal(htkv_iter_set_limit(it, 0), 0);
        assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), 0);
        htkv_iter_destroy(it);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    /* A zero-length value comes back as zero bytes. */
    put_ok(db, key, 3, NULL, 0);
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(db, "k", 1, &it), 0);
    expect_one(it, key, 3, NULL, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: keys of HTKV_KEY_MAX bytes sort, match and bound queries like any other, also after a
 * reopen (the trie is rebuilt from the recovered index); a prefix or bound of HTKV_KEY_MAX bytes
 * is accepted, one byte more is HTKV_ETOOBIG. Method: four keys sharing a 64 KiB run of 'k'. */
static void
test_ordered_keys_of_key_max_bytes(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-keymax");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    const size_t M = HTKV_KEY_MAX;
    unsigned char *big = malloc(M + 1);
    unsigned char *big_a = malloc(M);
    assert_non_null(big);
    assert_non_null(big_a);
    memset(big, 'k', M + 1);
    memcpy(big_a, big, M);
    big_a[M - 1] = 'a';
    /* In order: "k" < k*(M-1) < k*(M-1)+"a" < k*M. */
    put_ok(db, "k", 1, "1", 1);
    put_ok(db, big, M - 1, "2", 1);
    put_ok(db, big_a, M, "3", 1);
    put_ok(db, big, M, "4", 1);
    put_ok(db, "l", 1, "5", 1);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        assert_int_equal(htkv_get_prefix(db, big, M, &it), 0);
        expect_one(it, big, M, "4", 1);
        assert_int_equal(htkv_get_prefix(db, big_a, M, &it), 0);
        expect_one(it, big_a, M, "3", 1);
        assert_int_equal(count_prefix(db, big, M - 1), 3);
        assert_int_equal(count_prefix(db, "k", 1), 4);
        assert_int_equal(count_prefix(db, NULL, 0), 5);
        assert_int_equal(count_scan(db, big, M - 1, big, M), 2);
        assert_int_equal(htkv_scan(db, big, M, "l", 1, &it), 0);
        expect_one(it, big, M, "4", 1);
        assert_int_equal(htkv_scan(db, big_a, M, big, M, &it), 0);
        expect_one(it, big_a, M, "3", 1);
        assert_int_equal(count_scan(db, big, M, big_a, M), 0);
        /* Order and contents of the whole store. */
        const void *k, *v;
        size_t kl, vl;
        assert_int_equal(htkv_get_prefix(db, "", 0, &it), 0);
        static const char want_v[5] = { '1', '2', '3', '4', '5' };
        const size_t want_kl[5] = { 1, M - 1, M, M, 1 };
        for (int i = 0; i < 5; i++) {
            assert_int_equal(htkv_iter_next(it, &k, &kl, &v, &vl), 1);
            assert_int_equal(kl, want_kl[i]);
            assert_int_equal(vl, 1);
            assert_int_equal(((const char *)v)[0], want_v[i]);
        }
        assert_int_equal(htkv_iter_next(it, &k, &kl, &v, &vl), 0);
        htkv_iter_destroy(it);
        /* One byte over the limit: a prefix, a start, an end. Nothing opens. */
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_get_prefix(db, big, M + 1, &it), HTKV_ETOOBIG);
        assert_null(it);
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_scan(db, big, M + 1, NULL, 0, &it), HTKV_ETOOBIG);
        assert_null(it);
        it = (htkv_iter *)&it;
        assert_int_equal(htkv_scan(db, NULL, 0, big, M + 1, &it), HTKV_ETOOBIG);
        assert_null(it);
        assert_int_equal(tu_stats(db).views_open, 0);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    assert_int_equal(htkv_close(db), 0);
    free(big);
    free(big_a);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: bad arguments to the query functions return -EINVAL or HTKV_ETOOBIG, clear *out, and
 * leave no view open. Method: each argument wrong in turn, on the store and on a view. */
static void
test_ordered_bad_arguments(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-args");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    put_ok(db, "a", 1, "1", 1);
    unsigned char *big = calloc(1, HTKV_KEY_MAX + 1);
    assert_non_null(big);
    htkv_iter *it;
    htkv_view *v;
    assert_int_equal(htkv_view_open(db, &v), 0);
    /* NULL with a non-zero length. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_get_prefix(db, NULL, 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(db, NULL, 2, "b", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(db, "a", 1, NULL, 3, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(v, NULL, 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(v, NULL, 1, NULL, 0, &it), -EINVAL);
    assert_null(it);
    /* NULL handle or NULL out. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_get_prefix(NULL, "a", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_scan(NULL, "a", 1, "b", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(NULL, "a", 1, &it), -EINVAL);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(NULL, "a", 1, "b", 1, &it), -EINVAL);
    assert_null(it);
    assert_int_equal(htkv_get_prefix(db, "a", 1, NULL), -EINVAL);
    assert_int_equal(htkv_scan(db, "a", 1, "b", 1, NULL), -EINVAL);
    assert_int_equal(htkv_view_get_prefix(v, "a", 1, NULL), -EINVAL);
    assert_int_equal(htkv_view_scan(v, "a", 1, "b", 1, NULL), -EINVAL);
    /* Over HTKV_KEY_MAX, on a view too. */
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_get_prefix(v, big, HTKV_KEY_MAX + 1, &it), HTKV_ETOOBIG);
    assert_null(it);
    it = (htkv_iter *)&it;
    assert_int_equal(htkv_view_scan(v, "a", 1, big, HTKV_KEY_MAX + 1, &it), HTKV_ETOOBIG);
    assert_null(it);
    /* A prefix of exactly HTKV_KEY_MAX bytes is fine (and matches nothing here). */
    assert_int_equal(count_prefix(db, big, HTKV_KEY_MAX), 0);
    /* Iterator functions on NULL. */
    assert_int_equal(htkv_iter_set_limit(NULL, 1), -EINVAL);
    const void *k;
    size_t kl;
    assert_int_equal(htkv_iter_next(NULL, &k, &kl, NULL, NULL), -EINVAL);
    htkv_iter_destroy(NULL);
    /* Only the view opened above is open: no failed call left one behind. */
    assert_int_equal(tu_stats(db).views_open, 1);
    htkv_view_close(v);
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(count_prefix(db, "", 0), 1);
    assert_int_equal(htkv_close(db), 0);
    free(big);
    tu_rmrf(dir);
    free(dir);
}

/* Allocations made by the engine while the hook is installed. */
static size_t alloc_calls, alloc_bytes, alloc_max;

static bool
count_allocs(size_t n)
{
    alloc_calls++;
    alloc_bytes += n;
    alloc_max = n > alloc_max ? n : alloc_max;
    return false;
}

#define BIG_N 200000u

static size_t
big_key(unsigned i, char *k)
{
    return (size_t)snprintf(k, 32, "row/%08u", i);
}

/* Goal: iterating 200k keys streams them in order with bounded memory: the heap does not grow
 * with the number of keys read, the iterator holds exactly one view while it lives and none
 * after htkv_iter_destroy(), and no engine allocation during the iteration is large. Method:
 * load 200k keys in batches (a shuffled order), iterate the whole store and a prefix,
 * sampling the heap in use every 1000 items; count engine allocations through the hook. */
static void
test_ordered_200k_keys_stream_with_bounded_memory(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("ordered-200k");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("ordered-200k");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 4;
    htkv_db *db = tu_open(&cfg);
    unsigned *perm = malloc(BIG_N * sizeof(*perm));
    assert_non_null(perm);
    for (unsigned i = 0; i < BIG_N; i++) {
        perm[i] = i;
    }
    for (unsigned i = BIG_N - 1; i > 0; i--) {
        unsigned j = (unsigned)(tu_rand(&rng) % (i + 1));
        unsigned t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[32];
    unsigned char v[16] = { 0 };
    for (unsigned i = 0; i < BIG_N; i++) {
        size_t kl = big_key(perm[i], k);
        memcpy(v, &perm[i], sizeof(perm[i]));
        assert_int_equal(htkv_batch_put(b, k, kl, v, 4 + perm[i] % 12), 0);
        if (htkv_batch_count(b) == 2000 || i == BIG_N - 1) {
            assert_int_equal(htkv_write(db, b), 0);
            htkv_batch_clear(b);
        }
    }
    htkv_batch_destroy(b);
    free(perm);
    assert_int_equal(tu_stats(db).live_keys, BIG_N);
    assert_int_equal(tu_stats(db).views_open, 0);

    for (int pass = 0; pass < 2; pass++) {
        /* Pass 0: the whole store (the first query also builds the tries); pass 1: a prefix. */
        const char *p = pass == 0 ? "" : "row/0012";
        unsigned first = pass == 0 ? 0 : 120000, count = pass == 0 ? BIG_N : 10000;
        htkv_iter *it = NULL;
        assert_int_equal(htkv_get_prefix(db, p, strlen(p), &it), 0);
        assert_int_equal(tu_stats(db).views_open, 1);
        size_t base = heap_in_use(), peak = base;
        alloc_calls = alloc_bytes = alloc_max = 0;
        htkv_mem_fail_hook = count_allocs;
        unsigned n = 0;
        const void *gk, *gv;
        size_t gkl, gvl;
        int rc;
        while ((rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl)) == 1) {
            size_t kl = big_key(first + n, k);
            if (gkl != kl || memcmp(gk, k, kl) != 0 || gvl != 4 + (first + n) % 12 ||
                memcmp(gv, &(unsigned){ first + n }, 4) != 0) {
                htkv_mem_fail_hook = NULL;
                fprintf(stderr, "item %u: got %.*s (%zu bytes value), want %s\n", n, (int)gkl,
                        (const char *)gk, gvl, k);
                fail();
            }
            n++;
            if (n % 1000 == 0) {
                size_t h = heap_in_use();
                peak = h > peak ? h : peak;
            }
        }
        htkv_mem_fail_hook = NULL;
        assert_int_equal(rc, 0);
        assert_int_equal(n, count);
        assert_int_equal(tu_stats(db).views_open, 1);
        htkv_iter_destroy(it);
        assert_int_equal(tu_stats(db).views_open, 0);
        fprintf(stderr,
                "[ordered-200k] pass %d: %u items, heap in use %zu bytes, growth %zu bytes, %zu "
                "engine allocations (%zu bytes, largest %zu)\n",
                pass, n, base, peak - base, alloc_calls, alloc_bytes, alloc_max);
        assert_true(base > 0); /* the measure works */
        /* A per-key cost of even 8 bytes would be 1.6 MB here. */
        assert_true(peak - base < (512u << 10));
        assert_true(alloc_max < (64u << 10));
    }
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the ordered index is built on the first ordered query, is counted in trie_bytes, is
 * kept up to date by later writes, and is rebuilt after a reopen on the next query. Method:
 * trie_bytes before and after queries, writes after the build, a reopen. */
static void
test_ordered_trie_stats_after_first_query(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-trie-stats");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    char k[32];
    for (int i = 0; i < 300; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        put_ok(db, k, kl, k, kl);
    }
    assert_int_equal(tu_stats(db).trie_bytes, 0); /* no ordered query yet */
    assert_int_equal(count_prefix(db, "t", 1), 300);
    uint64_t tb = tu_stats(db).trie_bytes;
    assert_true(tb > 0);
    /* Writes after the build go into the trie: new keys grow it and are found. */
    for (int i = 300; i < 600; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        put_ok(db, k, kl, k, kl);
    }
    assert_true(tu_stats(db).trie_bytes > tb);
    assert_int_equal(count_prefix(db, "t", 1), 600);
    assert_int_equal(count_scan(db, "t0300", 5, "t0400", 5), 100);
    for (int i = 0; i < 600; i += 2) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "t%04d", i);
        assert_int_equal(htkv_delete(db, k, kl), 0);
    }
    assert_int_equal(count_prefix(db, "t", 1), 300);
    assert_int_equal(count_prefix(db, "t00", 3), 50);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).trie_bytes, 0);
    assert_int_equal(count_scan(db, "", 0, "", 0), 300);
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: an iterator reads the store as of its creation: puts, overwrites, deletes and batches
 * made while it is being read (also between its refills) do not show, and the next query sees
 * them. Method: 4 shards x ~1000 keys (several chunks each); write between every few items. */
static void
test_ordered_iterator_ignores_writes_made_while_reading(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("ordered-iter-private");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("ordered-iter-private");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct model m = { 0 };
    char k[32];
    unsigned char v[64];
    for (unsigned i = 0; i < 4000; i += 1) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "it/%05u", i * 2);
        size_t vl = 1 + i % 60;
        tu_fill(v, vl, i);
        put_ok(db, k, kl, v, vl);
        model_put(&m, k, kl, v, vl);
    }
    struct model live = { 0 };
    model_clone(&live, &m);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int round = 0; round < 2; round++) {
        htkv_iter *it;
        /* Round 0 reads everything; round 1 a range. */
        size_t lo, hi;
        if (round == 0) {
            assert_int_equal(htkv_get_prefix(db, "it/", 3, &it), 0);
            model_prefix_range(&m, "it/", 3, &lo, &hi);
        } else {
            assert_int_equal(htkv_scan(db, "it/01000", 8, "it/05000", 8, &it), 0);
            model_scan_range(&m, "it/01000", 8, "it/05000", 8, &lo, &hi);
        }
        snprintf(qdesc, sizeof(qdesc), "private iterator round %d (seed %llu)", round,
                 (unsigned long long)seed);
        static unsigned char prev[64];
        size_t prevlen = SIZE_MAX, pos = lo;
        bool ended = false;
        while (!ended) {
            iter_expect(it, &m, &pos, hi, 1 + tu_rand(&rng) % 40, prev, &prevlen, &ended);
            /* A burst of writes anywhere in the key space, also just ahead of the reader. */
            for (int w = 0; w < 8; w++) {
                unsigned i = (unsigned)(tu_rand(&rng) % 8001);
                size_t kl = (size_t)snprintf(k, sizeof(k), "it/%05u", i);
                uint64_t r = tu_rand(&rng) % 4;
                if (r == 0) {
                    (void)model_del(&live, k, kl);
                    int rc = htkv_delete(db, k, kl);
                    assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
                } else if (r < 3) {
                    size_t vl = (size_t)(tu_rand(&rng) % 64);
                    tu_fill(v, vl, tu_rand(&rng));
                    put_ok(db, k, kl, v, vl);
                    model_put(&live, k, kl, v, vl);
                } else {
                    htkv_batch_clear(b);
                    size_t vl = (size_t)(tu_rand(&rng) % 64);
                    tu_fill(v, vl, tu_rand(&rng));
                    assert_int_equal(htkv_batch_put(b, k, kl, v, vl), 0);
                    model_put(&live, k, kl, v, vl);
                    kl = (size_t)snprintf(k, sizeof(k), "it/%05u", (i + 4001) % 8001);
                    assert_int_equal(htkv_batch_delete(b, k, kl), 0);
                    (void)model_del(&live, k, kl);
                    assert_int_equal(htkv_write(db, b), 0);
                }
            }
        }
        assert_int_equal(pos, hi);
        htkv_iter_destroy(it);
        /* A new query sees everything written meanwhile. */
        struct target t = { db, NULL };
        check_prefix(&t, &live, "it/", 3, 0, &rng);
        model_free(&m);
        model_clone(&m, &live);
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    htkv_batch_destroy(b);
    model_free(&m);
    model_free(&live);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* One allocation to refuse (its number since the hook was armed); -1 = none. */
static long fail_at = -1;
static long alloc_no;

static bool
fail_nth(size_t n)
{
    (void)n;
    return alloc_no++ == fail_at;
}

#define FAULT_KEYS 1000u

/* Goal: an allocation failure anywhere in a query (the view, the iterator, building the tries,
 * a refill's cursor) fails cleanly: the opening call returns -ENOMEM with *out NULL and no view
 * left open (a caller's view stays open), or htkv_iter_next() returns the items so far and then
 * -ENOMEM, again on every later call; nothing leaks (ASan) and the next query is exact. Method:
 * for each query kind, on a freshly reopened store (tries not built), refuse allocation k alone,
 * for k = 0, 1, 2, ... until a query runs without reaching allocation k; then again with the
 * tries built (the failures reach the refills). */
static void
ordered_alloc_faults(bool runs)
{
    char *dir = tu_tmpdir(runs ? "ordered-fault-runs" : "ordered-fault");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.sorted_runs = runs;
    htkv_run_eager = runs ? 2 : 0;
    htkv_db *db = tu_open(&cfg);
    char k[32];
    for (unsigned i = 0; i < FAULT_KEYS; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "f/%05u", i);
        put_ok(db, k, kl, k, kl);
    }
    long total_next_failures = 0;
    for (int kind = 0; kind < 4; kind++) {
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
        htkv_view *uv = NULL;
        if (kind >= 2) {
            assert_int_equal(htkv_view_open(db, &uv), 0);
        }
        uint64_t views = uv != NULL ? 1 : 0;
        long open_failures = 0, next_failures = 0;
        /* Phase 0 starts with no tries (their build fails too); phase 1 has them built. */
        for (long at = 0, phase = 0; phase < 2; at++) {
            tu_context("ordered fault: kind %d, phase %ld, allocation %ld", kind, phase, at);
            htkv_iter *it = (htkv_iter *)&it;
            alloc_no = 0;
            fail_at = at;
            htkv_mem_fail_hook = fail_nth;
            int rc = kind == 0   ? htkv_get_prefix(db, "f/", 2, &it)
                     : kind == 1 ? htkv_scan(db, "f/", 2, "f/9", 3, &it)
                     : kind == 2 ? htkv_view_get_prefix(uv, "f/", 2, &it)
                                 : htkv_view_scan(uv, "f/00100", 7, NULL, 0, &it);
            if (rc != 0) {
                htkv_mem_fail_hook = NULL;
                assert_int_equal(rc, -ENOMEM);
                assert_null(it);
                assert_int_equal(tu_stats(db).views_open, views);
                open_failures++;
                continue;
            }
            unsigned n = 0;
            while ((rc = htkv_iter_next(it, NULL, NULL, NULL, NULL)) == 1) {
                n++;
            }
            bool fired = alloc_no > at;
            htkv_mem_fail_hook = NULL;
            if (rc == -ENOMEM) {
                assert_true(n < FAULT_KEYS);
                assert_int_equal(htkv_iter_next(it, NULL, NULL, NULL, NULL), -ENOMEM);
                next_failures++;
            } else {
                assert_int_equal(rc, 0);
                assert_int_equal(n, kind == 3 ? FAULT_KEYS - 100 : FAULT_KEYS);
            }
            htkv_iter_destroy(it);
            assert_int_equal(tu_stats(db).views_open, views);
            if (!fired) {
                phase++; /* every allocation of a whole query was allowed */
                at = -1;
            }
        }
        fprintf(stderr, "[ordered-fault%s] kind %d: %ld failed opens, %ld failed iterations\n",
                runs ? "-runs" : "", kind, open_failures, next_failures);
        assert_true(open_failures > 0);
        assert_true(kind >= 2 || open_failures > 100); /* building the tries */
        total_next_failures += next_failures;
        htkv_view_close(uv);
        assert_int_equal(tu_stats(db).views_open, 0);
        assert_int_equal(count_prefix(db, "f/", 2), FAULT_KEYS);
    }
    /* Without runs a trie refill failed at least once; with them the refills read runs and a
     * failed build only leaves the query on the trie. */
    assert_true(runs || total_next_failures > 0);
    if (runs) {
        assert_true(tu_stats(db).trie_bytes > 0);
    }
    htkv_run_eager = 0;
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

static void
test_ordered_allocation_failures_fail_cleanly(void **state)
{
    (void)state;
    ordered_alloc_faults(false);
}

/* Goal: as above with sorted runs built by every query (run.h): a build that cannot allocate
 * leaves the query to the trie and changes no result; queries that read runs allocate nothing
 * per key. Method: as above. */
static void
test_ordered_allocation_failures_with_sorted_runs(void **state)
{
    (void)state;
    ordered_alloc_faults(true);
}

/* Goal: a record that fails its check is reported by the query that reaches it when the query
 * reads sorted runs (merged by comparison) and merge paths, as it is from the tries: every key
 * before it comes back in order, then HTKV_ECORRUPT naming the segment, on this call and every
 * later one; once the bytes are whole again, the next query returns every key. Method: 200 keys
 * over 2 shards, close (hint files: the reopened store has not checked the records), flip a bit
 * of one value through the file, reopen; query with runs (htkv_run_eager = 1), then with paths
 * (2); flip back; query again. */
static void
test_ordered_corrupt_record_in_runs_and_paths(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ordered-corrupt-runs");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 2;
    htkv_db *db = tu_open(&cfg);
    char k[32];
    unsigned char v[48];
    for (unsigned i = 0; i < 200; i++) {
        size_t kl = (size_t)snprintf(k, sizeof(k), "c/%03u", i);
        tu_fill(v, sizeof(v), i);
        put_ok(db, k, kl, v, sizeof(v));
    }
    assert_int_equal(htkv_close(db), 0);
    /* The record of c/100, in whichever shard holds it. */
    char(*segs)[4096] = malloc(8 * 4096);
    assert_non_null(segs);
    struct tu_rec *recs = malloc(256 * sizeof(*recs));
    assert_non_null(recs);
    const char *seg = NULL;
    long long at = -1;
    for (unsigned sh = 0; sh < 2 && seg == NULL; sh++) {
        size_t ns = tu_shard_segments(dir, sh, segs, 8);
        for (size_t i = 0; i < ns && seg == NULL; i++) {
            size_t nr = tu_seg_scan(segs[i], recs, 256);
            for (size_t r = 0; r < nr; r++) {
                if (recs[r].key_len == 5 && memcmp(recs[r].key, "c/100", 5) == 0) {
                    seg = segs[i];
                    at = recs[r].off + 24 + 5 + 10; /* a value byte */
                    break;
                }
            }
        }
    }
    assert_non_null(seg);
    assert_int_equal(tu_flip_bit(seg, at, 3), 0);
    db = tu_open(&cfg);
    for (int level = 1; level <= 2; level++) {
        htkv_run_eager = level;
        for (int round = 0; round < 2; round++) {
            tu_context("corrupt record: eager level %d, round %d", level, round);
            htkv_iter *it = NULL;
            assert_int_equal(htkv_get_prefix(db, "c/", 2, &it), 0);
            const void *gk, *gv;
            size_t gkl, gvl;
            unsigned n = 0;
            int rc;
            while ((rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl)) == 1) {
                size_t kl = (size_t)snprintf(k, sizeof(k), "c/%03u", n);
                assert_int_equal(gkl, kl);
                assert_memory_equal(gk, k, kl);
                tu_fill(v, sizeof(v), n);
                assert_int_equal(gvl, sizeof(v));
                assert_memory_equal(gv, v, sizeof(v));
                n++;
            }
            assert_int_equal(rc, HTKV_ECORRUPT);
            assert_int_equal(n, 100);
            assert_non_null(strstr(htkv_last_error(), seg));
            assert_int_equal(htkv_iter_next(it, &gk, &gkl, &gv, &gvl), HTKV_ECORRUPT);
            htkv_iter_destroy(it);
        }
    }
    assert_true(tu_stats(db).trie_bytes > 0);
    assert_int_equal(tu_flip_bit(seg, at, 3), 0);
    assert_int_equal(count_prefix(db, "c/", 2), 200);
    htkv_run_eager = 0;
    assert_int_equal(htkv_close(db), 0);
    free(recs);
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_1_shard),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_4_shards),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_7_shards),
        cmocka_unit_test(test_ordered_fuzz_matches_sorted_model_13_shards),
        cmocka_unit_test(test_ordered_fuzz_sorted_runs_4_shards),
        cmocka_unit_test(test_ordered_fuzz_sorted_runs_13_shards),
        cmocka_unit_test(test_ordered_fuzz_merge_paths_4_shards),
        cmocka_unit_test(test_ordered_fuzz_merge_paths_13_shards),
        cmocka_unit_test(test_ordered_empty_store_returns_nothing),
        cmocka_unit_test(test_ordered_single_key),
        cmocka_unit_test(test_ordered_keys_of_key_max_bytes),
        cmocka_unit_test(test_ordered_bad_arguments),
        cmocka_unit_test(test_ordered_200k_keys_stream_with_bounded_memory),
        cmocka_unit_test(test_ordered_trie_stats_after_first_query),
        cmocka_unit_test(test_ordered_iterator_ignores_writes_made_while_reading),
        cmocka_unit_test(test_ordered_allocation_failures_fail_cleanly),
        cmocka_unit_test(test_ordered_allocation_failures_with_sorted_runs),
        cmocka_unit_test(test_ordered_corrupt_record_in_runs_and_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
