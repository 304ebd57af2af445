/*
 * ordered.c - the sorted model and the query checks of the ordered-query tests (ordered.h).
 */
#include "tests/support/ordered.h"

#include <errno.h>

#include "engine/internal.h"
#include "engine/run.h"

#define FZ_KEY_MAX 40  /* longest fuzz key */
#define FZ_VAL_MAX 300 /* longest fuzz value */
#define FZ_BOUND_MAX (FZ_KEY_MAX + 8)

static const unsigned char alpha[5] = { 0x00, 0x01, 'a', 0x7F, 0xFF };

/* ---- helpers -------------------------------------------------------------------------------- */

int
key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0) {
        return c;
    }
    return (alen > blen) - (alen < blen);
}

/* Hex of the first bytes of @p p, for failure messages; static buffer (one of 4 in turn). */
const char *
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

void
put_ok(htkv_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    int rc = htkv_put(db, k, kl, v, vl);
    if (rc != 0) {
        fprintf(stderr, "put %s: %s\n", hex(k, kl), htkv_strerror(rc));
    }
    assert_int_equal(rc, 0);
}

/* ---- the model: a sorted array of (key, value) ---------------------------------------------- */

/* Index of the first entry >= key. */
size_t
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

bool
model_has(const struct model *m, const void *key, size_t klen, size_t *at)
{
    size_t i = model_lower(m, key, klen);
    *at = i;
    return i < m->n && key_cmp(m->e[i].key, m->e[i].klen, key, klen) == 0;
}

void
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
bool
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

void
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

void
model_free(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].key);
    }
    free(m->e);
    memset(m, 0, sizeof(*m));
}

/* Model range of a prefix query: [*lo, *hi). */
void
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
void
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
char qdesc[512];

/*
 * Read items from @p it and compare them with m->e[*pos ..): at most @p max items (0 = until
 * the end). Every item must be the next model entry (key and value) and be strictly greater
 * than the previous key returned (*prev, updated). Returns the number of items read; the
 * iterator's end (rc 0) stops early.
 */
size_t
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

int
open_prefix(const struct target *t, const void *p, size_t plen, htkv_iter **it)
{
    return t->view != NULL ? htkv_view_get_prefix(t->view, p, plen, it)
                           : htkv_get_prefix(t->db, p, plen, it);
}

int
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
void
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

void
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

void
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
void
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

long
fuzz_ops(void)
{
    return ORD_SANITIZED ? 1500 : 3000;
}

/* Count the items of @p it, checking strict order; destroys it. */
size_t
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

size_t
count_prefix(htkv_db *db, const void *p, size_t plen)
{
    htkv_iter *it = NULL;
    assert_int_equal(htkv_get_prefix(db, p, plen, &it), 0);
    assert_non_null(it);
    return drain(it);
}

size_t
count_scan(htkv_db *db, const void *s, size_t slen, const void *e, size_t elen)
{
    htkv_iter *it = NULL;
    assert_int_equal(htkv_scan(db, s, slen, e, elen, &it), 0);
    assert_non_null(it);
    return drain(it);
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
void
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
