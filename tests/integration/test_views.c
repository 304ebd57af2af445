/*
 * test_views.c - consistent point-in-time views: htkv_view_open/get/get_prefix/scan/version/
 * close and htkv_read_with().
 *
 * A view must read the store as it was when it opened, whatever is written afterwards (puts,
 * overwrites, deletes, batches, a key written twice in one batch), in every sync mode; several
 * views opened at different times each keep their own state, and closing them in any order
 * leaves the others intact. While a view is open the versions it may read are kept; once it
 * closes they are retired and the index's memory returns to its level without views.
 *
 * The model: keys "v/NNNNN" (fixed width, so key order is index order) with a value derived
 * from a tag (tu_fill) or absent; a view's expected contents are a plain copy of the model.
 */
#include "tests/support/testutil.h"

#include <errno.h>

#define VK 1200 /* keys in the model */
#define VAL_MAX 200

struct vmodel {
    uint64_t tag[VK];
    int len[VK]; /* -1 = absent */
};

static size_t
vkey(unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "v/%05u", i);
}

static void
vmodel_init(struct vmodel *m)
{
    for (unsigned i = 0; i < VK; i++) {
        m->tag[i] = 0;
        m->len[i] = -1;
    }
}

static unsigned
vmodel_live(const struct vmodel *m)
{
    unsigned n = 0;
    for (unsigned i = 0; i < VK; i++) {
        n += m->len[i] >= 0;
    }
    return n;
}

static void
put_ok(htkv_db *db, unsigned i, struct vmodel *m, uint64_t tag, int len)
{
    char k[16];
    unsigned char v[VAL_MAX];
    size_t kl = vkey(i, k);
    tu_fill(v, (size_t)len, tag);
    assert_int_equal(htkv_put(db, k, kl, v, (size_t)len), 0);
    m->tag[i] = tag;
    m->len[i] = len;
}

/* Fill about 80% of the keys, in batches of 100. */
static void
vload(htkv_db *db, struct vmodel *m, uint64_t *rng)
{
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[16];
    unsigned char v[VAL_MAX];
    for (unsigned i = 0; i < VK; i++) {
        if (tu_rand(rng) % 5 == 0) {
            continue;
        }
        uint64_t tag = tu_rand(rng);
        int len = (int)(tu_rand(rng) % (VAL_MAX + 1));
        size_t kl = vkey(i, k);
        tu_fill(v, (size_t)len, tag);
        assert_int_equal(htkv_batch_put(b, k, kl, v, (size_t)len), 0);
        m->tag[i] = tag;
        m->len[i] = len;
        if (htkv_batch_count(b) == 100) {
            assert_int_equal(htkv_write(db, b), 0);
            htkv_batch_clear(b);
        }
    }
    if (htkv_batch_count(b) > 0) {
        assert_int_equal(htkv_write(db, b), 0);
    }
    htkv_batch_destroy(b);
}

/*
 * @p n random writes applied to the store and to @p m: puts (overwrites and new keys), deletes
 * (of present and absent keys), batches of 2..20 operations that may name a key twice, and
 * delete-then-put pairs.
 */
static void
vwrites(htkv_db *db, struct vmodel *m, uint64_t *rng, unsigned n)
{
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[16];
    unsigned char v[VAL_MAX];
    for (unsigned op = 0; op < n; op++) {
        unsigned i = (unsigned)(tu_rand(rng) % VK);
        uint64_t r = tu_rand(rng) % 20;
        if (r < 8) {
            put_ok(db, i, m, tu_rand(rng), (int)(tu_rand(rng) % (VAL_MAX + 1)));
        } else if (r < 12) {
            size_t kl = vkey(i, k);
            int rc = htkv_delete(db, k, kl);
            assert_int_equal(rc, m->len[i] >= 0 ? 0 : HTKV_ENOTFOUND);
            m->len[i] = -1;
        } else if (r < 17) {
            htkv_batch_clear(b);
            unsigned nb = 2 + (unsigned)(tu_rand(rng) % 19);
            unsigned last = i;
            for (unsigned j = 0; j < nb; j++) {
                unsigned x = tu_rand(rng) % 4 == 0 ? last : (unsigned)(tu_rand(rng) % VK);
                size_t kl = vkey(x, k);
                if (tu_rand(rng) % 4 == 0) {
                    assert_int_equal(htkv_batch_delete(b, k, kl), 0);
                    m->len[x] = -1;
                } else {
                    uint64_t tag = tu_rand(rng);
                    int len = (int)(tu_rand(rng) % (VAL_MAX + 1));
                    tu_fill(v, (size_t)len, tag);
                    assert_int_equal(htkv_batch_put(b, k, kl, v, (size_t)len), 0);
                    m->tag[x] = tag;
                    m->len[x] = len;
                }
                last = x;
            }
            assert_int_equal(htkv_write(db, b), 0);
        } else {
            size_t kl = vkey(i, k);
            int rc = htkv_delete(db, k, kl);
            assert_int_equal(rc, m->len[i] >= 0 ? 0 : HTKV_ENOTFOUND);
            m->len[i] = -1;
            put_ok(db, i, m, tu_rand(rng), (int)(tu_rand(rng) % (VAL_MAX + 1)));
        }
    }
    htkv_batch_destroy(b);
}

/* ---- checking a view (or the store) against a model ----------------------------------------- */

static const char *what; /* description of the check, for failure messages */

/* Compare @p it with the model's keys [i0, i1) in order; destroys @p it. */
static void
expect_range(htkv_iter *it, const struct vmodel *m, unsigned i0, unsigned i1)
{
    char k[16];
    unsigned char v[VAL_MAX];
    assert_non_null(it);
    unsigned i = i0;
    for (;;) {
        while (i < i1 && m->len[i] < 0) {
            i++;
        }
        const void *gk, *gv;
        size_t gkl, gvl;
        int rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl);
        if (i == i1) {
            if (rc != 0) {
                fprintf(stderr, "%s: [%u, %u): extra item %.*s (rc %d)\n", what, i0, i1,
                        rc == 1 ? (int)gkl : 0, rc == 1 ? (const char *)gk : "", rc);
            }
            assert_int_equal(rc, 0);
            break;
        }
        if (rc != 1) {
            fprintf(stderr, "%s: [%u, %u): rc %d (%s), want key %u\n", what, i0, i1, rc,
                    htkv_strerror(rc), i);
            fail();
        }
        size_t kl = vkey(i, k);
        tu_fill(v, (size_t)m->len[i], m->tag[i]);
        if (gkl != kl || memcmp(gk, k, kl) != 0 || gvl != (size_t)m->len[i] ||
            (gvl > 0 && memcmp(gv, v, gvl) != 0)) {
            fprintf(stderr, "%s: [%u, %u): got %.*s (%zu-byte value), want %s (%d bytes)\n", what,
                    i0, i1, (int)gkl, (const char *)gk, gvl, k, m->len[i]);
            fail();
        }
        i++;
    }
    htkv_iter_destroy(it);
}

/* Point reads of every key through the view. */
static void
check_view_gets(htkv_view *view, const struct vmodel *m)
{
    char k[16];
    unsigned char want[VAL_MAX], got[VAL_MAX];
    for (unsigned i = 0; i < VK; i++) {
        size_t kl = vkey(i, k);
        size_t n = 12345;
        int rc = htkv_view_get(view, k, kl, got, sizeof(got), &n);
        if (m->len[i] < 0) {
            if (rc != HTKV_ENOTFOUND) {
                fprintf(stderr, "%s: view_get %s: rc %d (%s), want absent\n", what, k, rc,
                        htkv_strerror(rc));
            }
            assert_int_equal(rc, HTKV_ENOTFOUND);
            continue;
        }
        tu_fill(want, (size_t)m->len[i], m->tag[i]);
        if (rc != 0 || n != (size_t)m->len[i] || memcmp(got, want, n) != 0) {
            fprintf(stderr, "%s: view_get %s: rc %d (%s), %zu bytes, want %d bytes\n", what, k, rc,
                    htkv_strerror(rc), n, m->len[i]);
            fail();
        }
    }
}

/* The view's ordered queries: everything, a few prefixes, random ranges. */
static void
check_view_ordered(htkv_view *view, const struct vmodel *m, uint64_t *rng)
{
    htkv_iter *it;
    char a[16], b[16];
    assert_int_equal(htkv_view_get_prefix(view, "", 0, &it), 0);
    expect_range(it, m, 0, VK);
    assert_int_equal(htkv_view_get_prefix(view, "v/", 2, &it), 0);
    expect_range(it, m, 0, VK);
    assert_int_equal(htkv_view_scan(view, NULL, 0, NULL, 0, &it), 0);
    expect_range(it, m, 0, VK);
    for (int q = 0; q < 6; q++) {
        /* "v/0NN" covers keys NN00..NN99; "v/0NNN" ten keys; a whole key one or none. */
        unsigned i = (unsigned)(tu_rand(rng) % VK);
        vkey(i, a);
        size_t pl = 5 + (size_t)q % 3;
        unsigned span = pl == 5 ? 100 : pl == 6 ? 10 : 1;
        unsigned lo = i / span * span, hi = lo + span < VK ? lo + span : VK;
        assert_int_equal(htkv_view_get_prefix(view, a, pl, &it), 0);
        expect_range(it, m, lo, hi);
    }
    assert_int_equal(htkv_view_get_prefix(view, "w", 1, &it), 0);
    expect_range(it, m, 0, 0);
    for (int q = 0; q < 6; q++) {
        unsigned i = (unsigned)(tu_rand(rng) % VK), j = (unsigned)(tu_rand(rng) % (VK + 1));
        size_t al = vkey(i, a), bl = j < VK ? vkey(j, b) : 0;
        assert_int_equal(htkv_view_scan(view, a, al, b, bl, &it), 0);
        expect_range(it, m, i, bl == 0 ? VK : (j > i ? j : i));
    }
    /* A limited scan from the middle. */
    unsigned i = (unsigned)(tu_rand(rng) % VK);
    size_t al = vkey(i, a);
    assert_int_equal(htkv_view_scan(view, a, al, NULL, 0, &it), 0);
    assert_int_equal(htkv_iter_set_limit(it, 7), 0);
    unsigned hi = i, seen = 0;
    while (hi < VK && seen < 7) {
        seen += m->len[hi++] >= 0;
    }
    expect_range(it, m, i, hi);
}

static void
check_view(htkv_view *view, const struct vmodel *m, uint64_t *rng)
{
    check_view_gets(view, m);
    check_view_ordered(view, m, rng);
}

/* The store itself (latest state): gets and ordered queries. */
static void
check_store(htkv_db *db, const struct vmodel *m)
{
    char k[16];
    unsigned char v[VAL_MAX];
    for (unsigned i = 0; i < VK; i++) {
        size_t kl = vkey(i, k);
        tu_fill(v, m->len[i] < 0 ? 0 : (size_t)m->len[i], m->tag[i]);
        tu_expect(db, k, kl, m->len[i] < 0 ? NULL : v, m->len[i] < 0 ? 0 : (size_t)m->len[i]);
    }
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(db, "v/", 2, &it), 0);
    expect_range(it, m, 0, VK);
    assert_int_equal(htkv_scan(db, "v/00100", 7, "v/00900", 7, &it), 0);
    expect_range(it, m, 100, 900);
}

/* ---- a view is unchanged by later writes ---------------------------------------------------- */

static void
view_unchanged(int sync_mode, unsigned burst)
{
    char tag[48];
    snprintf(tag, sizeof(tag), "views-unchanged-%d", sync_mode);
    uint64_t seed = tu_seed(tag);
    uint64_t rng = seed;
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, sync_mode);
    cfg.max_segment_bytes = 128u << 10; /* the burst rotates segments under the view */
    htkv_db *db = tu_open(&cfg);
    struct vmodel *m = malloc(sizeof(*m)), *at_open = malloc(sizeof(*m));
    assert_non_null(m);
    assert_non_null(at_open);
    vmodel_init(m);
    vload(db, m, &rng);
    vwrites(db, m, &rng, burst / 4);

    *at_open = *m;
    htkv_view *view;
    assert_int_equal(htkv_view_open(db, &view), 0);
    uint64_t last = tu_stats(db).last_version;
    assert_int_equal(htkv_view_version(view), last);
    assert_int_equal(tu_stats(db).views_open, 1);
    what = "view before the burst";
    check_view(view, at_open, &rng);

    /* The burst, in three parts, checking the view between them. */
    for (int part = 0; part < 3; part++) {
        tu_context("%s seed %llu: burst part %d", tag, (unsigned long long)seed, part);
        vwrites(db, m, &rng, burst / 3);
        what = "view during the burst";
        check_view_gets(view, at_open);
    }
    /* Every key deleted, then a third of them written again. */
    for (unsigned i = 0; i < VK; i++) {
        char k[16];
        size_t kl = vkey(i, k);
        int rc = htkv_delete(db, k, kl);
        assert_int_equal(rc, m->len[i] >= 0 ? 0 : HTKV_ENOTFOUND);
        m->len[i] = -1;
        if (sync_mode == HTKV_SYNC_ALWAYS && i >= 200) {
            break; /* fdatasync per delete: keep the test short */
        }
    }
    vwrites(db, m, &rng, burst / 3);
    assert_true(tu_stats(db).last_version > last);
    what = "view after the burst";
    check_view(view, at_open, &rng);
    assert_int_equal(htkv_view_version(view), last);
    what = "store after the burst";
    check_store(db, m);

    /* A view opened now sees the new state; the old one still the old. */
    htkv_view *view2;
    assert_int_equal(htkv_view_open(db, &view2), 0);
    assert_int_equal(tu_stats(db).views_open, 2);
    assert_true(htkv_view_version(view2) > htkv_view_version(view));
    what = "second view";
    check_view(view2, m, &rng);
    what = "first view again";
    check_view(view, at_open, &rng);
    htkv_view_close(view);
    what = "second view after the first closed";
    check_view(view2, m, &rng);
    htkv_view_close(view2);
    assert_int_equal(tu_stats(db).views_open, 0);
    what = "store at the end";
    check_store(db, m);
    assert_int_equal(tu_stats(db).live_keys, vmodel_live(m));
    assert_int_equal(htkv_close(db), 0);
    free(m);
    free(at_open);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a view reads the store as of its opening, through overwrites, deletes (of every key),
 * batches (a key twice in one) and segment rotations, by point reads, prefixes and ranges, while
 * the store and a newer view show the new state. Method: view_unchanged() in HTKV_SYNC_NEVER. */
static void
test_views_unchanged_by_later_writes_sync_never(void **state)
{
    (void)state;
    view_unchanged(HTKV_SYNC_NEVER, 3000);
}

/* Goal: as above in HTKV_SYNC_INTERVAL (syncs run while the view is open). */
static void
test_views_unchanged_by_later_writes_sync_interval(void **state)
{
    (void)state;
    view_unchanged(HTKV_SYNC_INTERVAL, 3000);
}

/* Goal: as above in HTKV_SYNC_ALWAYS (writes are installed before they are published). */
static void
test_views_unchanged_by_later_writes_sync_always(void **state)
{
    (void)state;
    view_unchanged(HTKV_SYNC_ALWAYS, 300);
}

/* ---- htkv_read_with ------------------------------------------------------------------------- */

struct rw_ctx {
    htkv_db *db;
    const struct vmodel *m;
    uint64_t rng;
    htkv_view *seen;
    int calls;
    int ret;
};

static int
rw_fn(htkv_view *v, void *ctx)
{
    struct rw_ctx *c = ctx;
    c->calls++;
    c->seen = v;
    assert_non_null(v);
    assert_int_equal(tu_stats(c->db).views_open, 1);
    assert_int_equal(htkv_view_version(v), tu_stats(c->db).last_version);
    /* Writes made from inside the callback do not show in its view. */
    char k[16];
    size_t kl = vkey(0, k);
    assert_int_equal(htkv_put(c->db, k, kl, "new", 3), 0);
    what = "read_with view";
    check_view(v, c->m, &c->rng);
    return c->ret;
}

/* Goal: htkv_read_with() opens a view, passes it to fn, returns fn's result (any int, also a
 * negative one) and closes the view; bad arguments are -EINVAL and call nothing. Method: a
 * callback that checks its view against the model, also after writing from inside. */
static void
test_views_read_with_passes_a_view_and_returns_fn_result(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("views-read-with");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("views-read-with");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct vmodel *m = malloc(sizeof(*m));
    assert_non_null(m);
    vmodel_init(m);
    vload(db, m, &rng);
    const int rets[3] = { 0, 42, -EIO };
    for (int r = 0; r < 3; r++) {
        struct rw_ctx c = { db, m, rng, NULL, 0, rets[r] };
        assert_int_equal(htkv_read_with(db, rw_fn, &c), rets[r]);
        assert_int_equal(c.calls, 1);
        assert_non_null(c.seen);
        assert_int_equal(tu_stats(db).views_open, 0);
        m->tag[0] = 0; /* key 0 now holds "new" (rw_fn wrote it) */
        m->len[0] = 3;
        unsigned char v[3];
        tu_fill(v, 3, 0);
        char k[16];
        size_t kl = vkey(0, k);
        assert_int_equal(htkv_put(db, k, kl, v, 3), 0); /* make it model-shaped again */
        rng = c.rng;
    }
    struct rw_ctx c = { db, m, rng, NULL, 0, 0 };
    assert_int_equal(htkv_read_with(NULL, rw_fn, &c), -EINVAL);
    assert_int_equal(htkv_read_with(db, NULL, &c), -EINVAL);
    assert_int_equal(c.calls, 0);
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(htkv_close(db), 0);
    free(m);
    tu_rmrf(dir);
    free(dir);
}

/* ---- several views, closed in any order ----------------------------------------------------- */

#define NVIEWS 5

/* Goal: views opened at different times each see their own state, also after more writes;
 * closing them in any order (oldest first, newest first, middle first, random) leaves the
 * others reading exactly their state, and views_open counts them. Method: five views opened
 * between bursts of random writes, each with a copy of the model; after each close, every
 * remaining view is checked; three rounds with different close orders. */
static void
test_views_several_views_each_keep_their_state_closed_in_any_order(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("views-several");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("views-several");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 128u << 10;
    htkv_db *db = tu_open(&cfg);
    struct vmodel *m = malloc(sizeof(*m));
    struct vmodel *snap = malloc(NVIEWS * sizeof(*snap));
    assert_non_null(m);
    assert_non_null(snap);
    vmodel_init(m);
    const unsigned orders[4][NVIEWS] = {
        { 0, 1, 2, 3, 4 }, /* oldest first */
        { 4, 3, 2, 1, 0 }, /* newest first */
        { 2, 0, 4, 1, 3 }, /* middle first */
        { 0 },             /* random, filled below */
    };
    for (int round = 0; round < 4; round++) {
        htkv_view *views[NVIEWS];
        bool open[NVIEWS];
        uint64_t prev_version = 0;
        for (int v = 0; v < NVIEWS; v++) {
            tu_context("views-several seed %llu: round %d, view %d", (unsigned long long)seed,
                       round, v);
            if (round == 0 && v == 0) {
                /* The first view of all sees an empty store. */
            } else if (round == 0 && v == 1) {
                vload(db, m, &rng);
            } else {
                vwrites(db, m, &rng, 150 + (unsigned)(tu_rand(&rng) % 150));
            }
            snap[v] = *m;
            assert_int_equal(htkv_view_open(db, &views[v]), 0);
            open[v] = true;
            assert_int_equal(tu_stats(db).views_open, (uint64_t)v + 1);
            uint64_t ver = htkv_view_version(views[v]);
            assert_true(v == 0 || ver > prev_version);
            assert_int_equal(ver, tu_stats(db).last_version);
            prev_version = ver;
        }
        vwrites(db, m, &rng, 300);
        for (int v = 0; v < NVIEWS; v++) {
            char w[64];
            snprintf(w, sizeof(w), "round %d view %d", round, v);
            what = w;
            check_view(views[v], &snap[v], &rng);
        }
        unsigned order[NVIEWS];
        memcpy(order, orders[round], sizeof(order));
        if (round == 3) {
            for (unsigned i = 0; i < NVIEWS; i++) {
                order[i] = i;
            }
            for (unsigned i = NVIEWS - 1; i > 0; i--) {
                unsigned j = (unsigned)(tu_rand(&rng) % (i + 1));
                unsigned t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        }
        for (unsigned c = 0; c < NVIEWS; c++) {
            htkv_view_close(views[order[c]]);
            open[order[c]] = false;
            assert_int_equal(tu_stats(db).views_open, (uint64_t)(NVIEWS - 1 - c));
            /* Writes between closes, so that pruning runs with the floor at each position. */
            vwrites(db, m, &rng, 60);
            for (int v = 0; v < NVIEWS; v++) {
                if (open[v]) {
                    char w[96];
                    snprintf(w, sizeof(w), "round %d view %d after closing view %u", round, v,
                             order[c]);
                    what = w;
                    check_view_gets(views[v], &snap[v]);
                    if (c % 2 == 0) {
                        check_view_ordered(views[v], &snap[v], &rng);
                    }
                }
            }
        }
        what = "store after the round";
        check_store(db, m);
    }
    assert_int_equal(htkv_close(db), 0);
    free(m);
    free(snap);
    tu_rmrf(dir);
    free(dir);
}

/* ---- views_open ----------------------------------------------------------------------------- */

/* Goal: views_open counts views and the iterators that hold their own view (htkv_get_prefix,
 * htkv_scan), not iterators on an existing view; every count returns to 0, and a reopened store
 * starts with none (views never outlive the handle: they are closed before htkv_close()).
 * Method: open and close each kind, reading stats in between; reopen and repeat. */
static void
test_views_views_open_counts_views_and_iterators(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("views-count");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("views-count");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct vmodel *m = malloc(sizeof(*m));
    assert_non_null(m);
    vmodel_init(m);
    vload(db, m, &rng);
    for (int round = 0; round < 2; round++) {
        assert_int_equal(tu_stats(db).views_open, 0);
        htkv_view *v1, *v2;
        htkv_iter *vi, *di, *ds;
        assert_int_equal(htkv_view_open(db, &v1), 0);
        assert_int_equal(tu_stats(db).views_open, 1);
        assert_int_equal(htkv_view_get_prefix(v1, "v/", 2, &vi), 0);
        assert_int_equal(tu_stats(db).views_open, 1); /* reads v1: no view of its own */
        assert_int_equal(htkv_get_prefix(db, "v/", 2, &di), 0);
        assert_int_equal(tu_stats(db).views_open, 2);
        assert_int_equal(htkv_scan(db, NULL, 0, NULL, 0, &ds), 0);
        assert_int_equal(tu_stats(db).views_open, 3);
        assert_int_equal(htkv_view_open(db, &v2), 0);
        assert_int_equal(tu_stats(db).views_open, 4);
        /* The three iterators read the same state. */
        what = "views_open iterators";
        expect_range(vi, m, 0, VK);
        assert_int_equal(tu_stats(db).views_open, 4);
        expect_range(ds, m, 0, VK);
        assert_int_equal(tu_stats(db).views_open, 3);
        htkv_view_close(v1);
        assert_int_equal(tu_stats(db).views_open, 2);
        expect_range(di, m, 0, VK);
        assert_int_equal(tu_stats(db).views_open, 1);
        htkv_view_close(v2);
        assert_int_equal(tu_stats(db).views_open, 0);
        /* Failed opens count nothing. */
        htkv_iter *bad = NULL;
        assert_int_equal(htkv_get_prefix(db, NULL, 3, &bad), -EINVAL);
        assert_int_equal(htkv_view_open(db, NULL), -EINVAL);
        htkv_view *nv = (htkv_view *)&nv;
        assert_int_equal(htkv_view_open(NULL, &nv), -EINVAL);
        assert_null(nv);
        assert_int_equal(tu_stats(db).views_open, 0);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
        what = "store after reopen";
        check_store(db, m);
    }
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(htkv_close(db), 0);
    free(m);
    tu_rmrf(dir);
    free(dir);
}

/* ---- memory --------------------------------------------------------------------------------- */

/* @p n overwrites of random existing keys (keys stay present: the entry count stays VK), most
 * in batches of up to 50 (a key may come twice in one), some as single puts. */
static void
overwrite(htkv_db *db, struct vmodel *m, uint64_t *rng, unsigned n)
{
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    char k[16];
    unsigned char v[64];
    for (unsigned op = 0; op < n; op++) {
        unsigned i = (unsigned)(tu_rand(rng) % VK);
        uint64_t tag = tu_rand(rng);
        int len = (int)(tu_rand(rng) % 64);
        if (tu_rand(rng) % 10 == 0) {
            if (htkv_batch_count(b) > 0) { /* the pending batch comes first */
                assert_int_equal(htkv_write(db, b), 0);
                htkv_batch_clear(b);
            }
            put_ok(db, i, m, tag, len);
            continue;
        }
        size_t kl = vkey(i, k);
        tu_fill(v, (size_t)len, tag);
        assert_int_equal(htkv_batch_put(b, k, kl, v, (size_t)len), 0);
        m->tag[i] = tag;
        m->len[i] = len;
        if (htkv_batch_count(b) == 50) {
            assert_int_equal(htkv_write(db, b), 0);
            htkv_batch_clear(b);
        }
    }
    if (htkv_batch_count(b) > 0) {
        assert_int_equal(htkv_write(db, b), 0);
    }
    htkv_batch_destroy(b);
}

static uint64_t
index_bytes(htkv_db *db)
{
    return tu_stats(db).index_bytes;
}

/* Goal: while a view is open the versions it may read are kept (about 48 bytes per overwrite),
 * and once it closes they are retired: index_bytes returns to its level without views and
 * writes go on normally. With two views, closing the older one frees what only it needed.
 * Method: every key present (so overwrites do not change the number of keys); measure
 * index_bytes at each step. */
static void
test_views_kept_versions_are_retired_after_close(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("views-memory");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("views-memory");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct vmodel *m = malloc(sizeof(*m)), *at_v1 = malloc(sizeof(*m));
    assert_non_null(m);
    assert_non_null(at_v1);
    vmodel_init(m);
    for (unsigned i = 0; i < VK; i++) {
        put_ok(db, i, m, tu_rand(&rng), 8);
    }
    const unsigned N = 6000;
    const uint64_t margin = 4096;
    uint64_t base = index_bytes(db);

    /* No view: overwrites retire the old versions at once. */
    overwrite(db, m, &rng, N);
    uint64_t no_view = index_bytes(db);
    fprintf(stderr, "[views-memory] base %llu, after %u overwrites without a view %llu\n",
            (unsigned long long)base, N, (unsigned long long)no_view);
    assert_true(no_view <= base + margin);

    /* One view: every overwrite keeps a version. */
    htkv_view *v1;
    assert_int_equal(htkv_view_open(db, &v1), 0);
    *at_v1 = *m;
    overwrite(db, m, &rng, N);
    uint64_t with_view = index_bytes(db);
    fprintf(stderr, "[views-memory] with a view open: %llu (+%llu, %.1f bytes per overwrite)\n",
            (unsigned long long)with_view, (unsigned long long)(with_view - no_view),
            (double)(with_view - no_view) / N);
    assert_true(with_view >= no_view + (uint64_t)N * 32);
    assert_true(with_view <= no_view + (uint64_t)N * 128);
    what = "memory view";
    check_view_gets(v1, at_v1);
    htkv_view_close(v1);
    uint64_t closed = index_bytes(db);
    overwrite(db, m, &rng, 10);
    uint64_t after = index_bytes(db);
    fprintf(stderr, "[views-memory] after close %llu, after 10 more writes %llu\n",
            (unsigned long long)closed, (unsigned long long)after);
    assert_true(after <= base + margin);
    what = "memory store after close";
    check_store(db, m);

    /* Two views: v1 then N writes, v2 then N/2 writes. Closing v1 (older) leaves about N/2
     * kept versions, closing v2 then none. */
    assert_int_equal(htkv_view_open(db, &v1), 0);
    *at_v1 = *m;
    overwrite(db, m, &rng, N);
    htkv_view *v2;
    assert_int_equal(htkv_view_open(db, &v2), 0);
    struct vmodel *at_v2 = malloc(sizeof(*m));
    assert_non_null(at_v2);
    *at_v2 = *m;
    overwrite(db, m, &rng, N / 2);
    uint64_t two = index_bytes(db);
    assert_true(two >= base + (uint64_t)(N + N / 2) * 32);
    htkv_view_close(v1);
    uint64_t one = index_bytes(db);
    fprintf(stderr, "[views-memory] two views %llu, after closing the older %llu\n",
            (unsigned long long)two, (unsigned long long)one);
    assert_true(one >= base + (uint64_t)(N / 2) * 32);
    assert_true(one <= base + (uint64_t)(N / 2) * 128 + margin);
    what = "memory newer view after the older closed";
    check_view_gets(v2, at_v2);
    check_view_ordered(v2, at_v2, &rng);
    htkv_view_close(v2);
    overwrite(db, m, &rng, 10);
    assert_true(index_bytes(db) <= base + margin);

    /* Same, closing the newer one first: nothing is freed until the older closes. */
    assert_int_equal(htkv_view_open(db, &v1), 0);
    *at_v1 = *m;
    overwrite(db, m, &rng, N / 2);
    assert_int_equal(htkv_view_open(db, &v2), 0);
    overwrite(db, m, &rng, N / 2);
    two = index_bytes(db);
    htkv_view_close(v2);
    one = index_bytes(db);
    assert_true(one + margin >= two);
    what = "memory older view after the newer closed";
    check_view_gets(v1, at_v1);
    htkv_view_close(v1);
    overwrite(db, m, &rng, 10);
    assert_true(index_bytes(db) <= base + margin);
    assert_int_equal(tu_stats(db).live_keys, VK);
    what = "memory store at the end";
    check_store(db, m);
    assert_int_equal(htkv_close(db), 0);
    free(m);
    free(at_v1);
    free(at_v2);
    tu_rmrf(dir);
    free(dir);
}

/* ---- arguments ------------------------------------------------------------------------------ */

/* Goal: htkv_view_get's codes: absent keys, a buffer too small (the size is reported, nothing
 * copied), bad arguments; htkv_view_version/htkv_view_close accept NULL. */
static void
test_views_view_get_codes(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("views-codes");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "key", 3, "value", 5), 0);
    assert_int_equal(htkv_put(db, "empty", 5, NULL, 0), 0);
    htkv_view *v;
    assert_int_equal(htkv_view_open(db, &v), 0);
    assert_int_equal(htkv_put(db, "key", 3, "changed!", 8), 0);
    char buf[16] = { 0 };
    size_t n = 0;
    assert_int_equal(htkv_view_get(v, "key", 3, buf, 2, &n), HTKV_ETOOSMALL);
    assert_int_equal(n, 5);
    assert_int_equal(buf[0], 0);
    assert_int_equal(htkv_view_get(v, "key", 3, NULL, 0, &n), HTKV_ETOOSMALL);
    assert_int_equal(htkv_view_get(v, "key", 3, buf, 5, &n), 0);
    assert_memory_equal(buf, "value", 5);
    assert_int_equal(htkv_view_get(v, "key", 3, buf, sizeof(buf), NULL), 0);
    assert_int_equal(htkv_view_get(v, "empty", 5, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(htkv_view_get(v, "nope", 4, buf, sizeof(buf), &n), HTKV_ENOTFOUND);
    assert_int_equal(htkv_view_get(v, "ke", 2, buf, sizeof(buf), &n), HTKV_ENOTFOUND);
    assert_int_equal(htkv_view_get(NULL, "key", 3, buf, sizeof(buf), &n), -EINVAL);
    assert_int_equal(htkv_view_get(v, NULL, 3, buf, sizeof(buf), &n), -EINVAL);
    assert_int_equal(htkv_view_get(v, "key", 0, buf, sizeof(buf), &n), -EINVAL);
    assert_int_equal(htkv_view_get(v, "key", 3, NULL, 4, &n), -EINVAL);
    char *big = calloc(1, HTKV_KEY_MAX + 1);
    assert_non_null(big);
    assert_int_equal(htkv_view_get(v, big, HTKV_KEY_MAX + 1, buf, sizeof(buf), &n), HTKV_ETOOBIG);
    assert_int_equal(htkv_view_get(v, big, HTKV_KEY_MAX, buf, sizeof(buf), &n), HTKV_ENOTFOUND);
    free(big);
    assert_int_equal(htkv_view_version(NULL), 0);
    htkv_view_close(NULL);
    htkv_view_close(v);
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_views_unchanged_by_later_writes_sync_never),
        cmocka_unit_test(test_views_unchanged_by_later_writes_sync_interval),
        cmocka_unit_test(test_views_unchanged_by_later_writes_sync_always),
        cmocka_unit_test(test_views_read_with_passes_a_view_and_returns_fn_result),
        cmocka_unit_test(test_views_several_views_each_keep_their_state_closed_in_any_order),
        cmocka_unit_test(test_views_views_open_counts_views_and_iterators),
        cmocka_unit_test(test_views_kept_versions_are_retired_after_close),
        cmocka_unit_test(test_views_view_get_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
