/*
 * test_view_atomicity.c - views under concurrent writers: a view is one instant of the whole
 * store (ARCHITECTURE.md, "Reads, versions and visibility"; engine/view.c).
 *
 * Batch atomicity across shards: writer threads commit batches that each set the AT_K keys of
 * the writer's group (spread over every shard) to one tag, the batch number; one key of each
 * batch is written twice (an intermediate value first); a noise thread puts and deletes other
 * keys among them, so that the ordered indexes change shape under the readers' iterators.
 * Reader threads repeatedly open a view (or run htkv_get_prefix(), whose iterator reads a
 * private view) and check that
 *   1. all keys of a group carry the same tag, or are all absent (a batch is in a view entirely
 *      or not at all, and never with an intermediate value);
 *   2. the tags one reader sees never go backwards;
 *   3. a batch that returned before the view opened is in it (a writer publishes the tags that
 *      returned through an atomic, loaded by the reader before it opens the view);
 *   4. the view is a consistent cut: each batch also records, for every other writer, the last
 *      tag that writer had published when the batch was built; a view holding that batch must
 *      hold the recorded tag or a newer one.
 *
 * Read-your-writes through views: a writer puts (and, lagging, deletes) numbered keys and
 * publishes each returned write through an atomic; a view opened afterwards on another thread
 * must show it.
 *
 * Each test runs one mode (inline or 2 workers, HTKV_SYNC_NEVER or HTKV_SYNC_ALWAYS, fewer
 * batches in ALWAYS); the mode does not depend on HTKV_TEST_WORKERS.
 */
#include "tests/concurrency/cc_util.h"

#include "engine/run.h"

#define AT_K 64 /* keys per group: with 4 shards every shard is hit */
#define AT_WRITERS 2
#define AT_READERS 2

struct at {
    htkv_db *db;
    unsigned batches;                       /* per writer */
    _Atomic uint64_t published[AT_WRITERS]; /* tags whose batch returned: 1..published */
    _Atomic int writers_left;
    _Atomic int readers_ready; /* writers start once every reader runs */
    _Atomic uint64_t views;
};

struct at_arg {
    struct at *a;
    unsigned id;
    uint64_t rng;
};

static size_t
at_key(unsigned w, unsigned k, char *buf)
{
    return (size_t)snprintf(buf, 16, "g%u/k%03u", w, k);
}

static size_t
at_seen_key(unsigned w, unsigned u, char *buf)
{
    return (size_t)snprintf(buf, 16, "g%u/s%u", w, u);
}

static uint32_t
at_key_id(unsigned w, unsigned k)
{
    return w * 1000u + k;
}

static void *
at_writer(void *arg)
{
    struct at_arg *x = arg;
    struct at *a = x->a;
    unsigned w = x->id;
    htkv_batch *b = NULL;
    if (htkv_batch_create(&b) != 0) {
        cc_fail_at(__FILE__, __LINE__, "batch_create");
        atomic_fetch_sub(&a->writers_left, 1);
        return NULL;
    }
    char k[16];
    unsigned char v[CC_VAL_MAX];
    while (atomic_load(&a->readers_ready) < AT_READERS && !cc_failed()) {
        sched_yield();
    }
    for (uint64_t t = 1; t <= a->batches && !cc_failed(); t++) {
        htkv_batch_clear(b);
        unsigned twice = (unsigned)(tu_rand(&x->rng) % AT_K);
        bool ok = true;
        for (unsigned i = 0; i < AT_K; i++) {
            size_t kl = at_key(w, i, k);
            if (i == twice) {
                /* An intermediate value that no reader may ever see. */
                size_t vl = cc_value(t | (1ull << 62), at_key_id(w, i), CC_VAL_HDR, v);
                ok = ok && htkv_batch_put(b, k, kl, v, vl) == 0;
            }
            size_t vl = cc_value(t, at_key_id(w, i), CC_VAL_HDR, v);
            ok = ok && htkv_batch_put(b, k, kl, v, vl) == 0;
        }
        for (unsigned u = 0; u < AT_WRITERS; u++) {
            if (u == w) {
                continue;
            }
            uint64_t seen = atomic_load_explicit(&a->published[u], memory_order_acquire);
            size_t kl = at_seen_key(w, u, k);
            ok = ok && htkv_batch_put(b, k, kl, &seen, sizeof(seen)) == 0;
        }
        if (!ok) {
            cc_fail_at(__FILE__, __LINE__, "writer %u: building batch %llu failed", w,
                       (unsigned long long)t);
            break;
        }
        int rc = htkv_write(a->db, b);
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "writer %u: batch %llu: rc %d (%s)", w,
                       (unsigned long long)t, rc, htkv_strerror(rc));
            break;
        }
        atomic_store_explicit(&a->published[w], t, memory_order_release);
    }
    htkv_batch_destroy(b);
    atomic_fetch_sub(&a->writers_left, 1);
    return NULL;
}

/*
 * Noise: puts and deletes of other keys inside the groups' key range ("gW/nNNNNN", between the
 * group's keys and its records), so that the tries change shape under the readers' iterators
 * and their refills, until the writers finish.
 */
static void *
at_noise(void *arg)
{
    struct at_arg *x = arg;
    struct at *a = x->a;
    char k[24];
    while (atomic_load(&a->writers_left) > 0 && !cc_failed()) {
        unsigned w = (unsigned)(tu_rand(&x->rng) % AT_WRITERS);
        unsigned i = (unsigned)(tu_rand(&x->rng) % 400);
        size_t kl = (size_t)snprintf(k, sizeof(k), "g%u/n%05u", w, i);
        int rc;
        if (tu_rand(&x->rng) % 3 == 0) {
            rc = htkv_delete(a->db, k, kl);
            rc = rc == HTKV_ENOTFOUND ? 0 : rc;
        } else {
            rc = htkv_put(a->db, k, kl, k, kl);
        }
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "noise %s: rc %d (%s)", k, rc, htkv_strerror(rc));
            break;
        }
    }
    return NULL;
}

/* What one read of the groups found. */
struct at_state {
    uint64_t tag[AT_WRITERS];              /* 0 = the group is absent */
    int present[AT_WRITERS];               /* keys of the group found */
    uint64_t seen[AT_WRITERS][AT_WRITERS]; /* seen[w][u]: recorded by w's batch */
    int seen_present[AT_WRITERS][AT_WRITERS];
};

/* Account for one key/value read; false (and a failure recorded) when the value is bad. */
static bool
at_take(struct at_state *s, const char *how, const void *key, size_t klen, const void *val,
        size_t vlen)
{
    const char *kc = key;
    CC_CHECK(klen >= 5 && kc[0] == 'g' && kc[2] == '/', "%s: foreign key %.*s", how, (int)klen, kc);
    unsigned w = (unsigned)(kc[1] - '0');
    CC_CHECK(w < AT_WRITERS, "%s: foreign key %.*s", how, (int)klen, kc);
    if (kc[3] == 'n') {
        return true; /* a noise key (at_noise): only its order counts */
    }
    if (kc[3] == 's') {
        unsigned u = (unsigned)(kc[4] - '0');
        CC_CHECK(klen == 5 && u < AT_WRITERS && u != w && vlen == 8, "%s: bad seen key %.*s", how,
                 (int)klen, kc);
        memcpy(&s->seen[w][u], val, 8);
        s->seen_present[w][u] = 1;
        return true;
    }
    CC_CHECK(klen == 7 && kc[3] == 'k', "%s: foreign key %.*s", how, (int)klen, kc);
    unsigned k = (unsigned)((kc[4] - '0') * 100 + (kc[5] - '0') * 10 + (kc[6] - '0'));
    CC_CHECK(k < AT_K, "%s: foreign key %.*s", how, (int)klen, kc);
    uint64_t tag;
    CC_CHECK(cc_value_decode(val, vlen, at_key_id(w, k), &tag), "%s: %.*s: damaged value", how,
             (int)klen, kc);
    CC_CHECK((tag & (1ull << 62)) == 0,
             "%s: %.*s holds the intermediate value of batch %llu (a batch seen half-applied)", how,
             (int)klen, kc, (unsigned long long)(tag & ~(1ull << 62)));
    if (s->present[w] == 0) {
        s->tag[w] = tag;
    }
    CC_CHECK(s->tag[w] == tag, "%s: group %u mixes batches %llu and %llu (key %.*s)", how, w,
             (unsigned long long)s->tag[w], (unsigned long long)tag, (int)klen, kc);
    s->present[w]++;
    return true;
}

/* Read every group through @p v by point reads, in a random order. */
static bool
at_read_gets(htkv_view *v, struct at_state *s, uint64_t *rng)
{
    char k[16];
    unsigned char buf[CC_VAL_MAX];
    unsigned order[AT_WRITERS * (AT_K + AT_WRITERS)];
    unsigned n = 0;
    for (unsigned w = 0; w < AT_WRITERS; w++) {
        for (unsigned i = 0; i < AT_K + AT_WRITERS; i++) {
            order[n++] = w * 1000u + i;
        }
    }
    for (unsigned i = n - 1; i > 0; i--) {
        unsigned j = (unsigned)(tu_rand(rng) % (i + 1));
        unsigned t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned w = order[i] / 1000u, x = order[i] % 1000u;
        size_t kl;
        if (x < AT_K) {
            kl = at_key(w, x, k);
        } else {
            if (x - AT_K == w) {
                continue;
            }
            kl = at_seen_key(w, x - AT_K, k);
        }
        size_t vl = 0;
        int rc = htkv_view_get(v, k, kl, buf, sizeof(buf), &vl);
        if (rc == HTKV_ENOTFOUND) {
            continue;
        }
        CC_CHECK(rc == 0, "view_get %s: rc %d (%s)", k, rc, htkv_strerror(rc));
        if (!at_take(s, "view_get", k, kl, buf, vl)) {
            return false;
        }
    }
    return true;
}

/* Read every group through an iterator. */
static bool
at_read_iter(htkv_iter *it, struct at_state *s, const char *how)
{
    char prev[24];
    size_t prevlen = 0;
    const void *k, *v;
    size_t kl, vl;
    int rc;
    while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        CC_CHECK(kl < sizeof(prev), "%s: key of %zu bytes", how, kl);
        if (prevlen > 0) {
            int c = memcmp(prev, k, prevlen < kl ? prevlen : kl);
            CC_CHECK(c < 0 || (c == 0 && prevlen < kl), "%s: order broken at %.*s", how, (int)kl,
                     (const char *)k);
        }
        memcpy(prev, k, kl);
        prevlen = kl;
        if (!at_take(s, how, k, kl, v, vl)) {
            return false;
        }
    }
    CC_CHECK(rc == 0, "%s: iter_next rc %d (%s)", how, rc, htkv_strerror(rc));
    return true;
}

static void *
at_reader(void *arg)
{
    struct at_arg *x = arg;
    struct at *a = x->a;
    uint64_t last[AT_WRITERS] = { 0 };
    unsigned round = 0;
    atomic_fetch_add(&a->readers_ready, 1);
    for (bool final = false; !cc_failed(); round++) {
        if (atomic_load(&a->writers_left) == 0) {
            final = true; /* one more round after the writers finished */
        }
        uint64_t floor[AT_WRITERS];
        for (unsigned w = 0; w < AT_WRITERS; w++) {
            floor[w] = atomic_load_explicit(&a->published[w], memory_order_acquire);
        }
        struct at_state s;
        memset(&s, 0, sizeof(s));
        const char *how;
        bool ok;
        unsigned kind = round % 4;
        if (kind == 3) {
            how = "get_prefix";
            htkv_iter *it = NULL;
            int rc = htkv_get_prefix(a->db, "g", 1, &it);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "get_prefix: rc %d (%s)", rc, htkv_strerror(rc));
                break;
            }
            ok = at_read_iter(it, &s, how);
            htkv_iter_destroy(it);
        } else {
            htkv_view *v = NULL;
            int rc = htkv_view_open(a->db, &v);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "view_open: rc %d (%s)", rc, htkv_strerror(rc));
                break;
            }
            if (kind == 0) {
                how = "view_get";
                ok = at_read_gets(v, &s, &x->rng);
            } else {
                how = kind == 1 ? "view_get_prefix" : "view_scan";
                htkv_iter *it = NULL;
                rc = kind == 1 ? htkv_view_get_prefix(v, "g", 1, &it)
                               : htkv_view_scan(v, "g0", 2, "h", 1, &it);
                if (rc != 0) {
                    cc_fail_at(__FILE__, __LINE__, "%s: rc %d (%s)", how, rc, htkv_strerror(rc));
                    htkv_view_close(v);
                    break;
                }
                ok = at_read_iter(it, &s, how);
                htkv_iter_destroy(it);
            }
            htkv_view_close(v);
        }
        atomic_fetch_add_explicit(&a->views, 1, memory_order_relaxed);
        if (!ok) {
            break;
        }
        bool good = true;
        for (unsigned w = 0; w < AT_WRITERS && good; w++) {
            if (s.present[w] != 0 && s.present[w] != AT_K) {
                cc_fail_at(__FILE__, __LINE__,
                           "reader %u (%s): group %u has %d of %d keys of batch %llu", x->id, how,
                           w, s.present[w], AT_K, (unsigned long long)s.tag[w]);
                good = false;
            } else if (s.tag[w] < last[w]) {
                cc_fail_at(__FILE__, __LINE__,
                           "reader %u (%s): group %u went back from batch %llu to %llu", x->id, how,
                           w, (unsigned long long)last[w], (unsigned long long)s.tag[w]);
                good = false;
            } else if (s.tag[w] < floor[w]) {
                cc_fail_at(__FILE__, __LINE__,
                           "reader %u (%s): group %u at batch %llu, but batch %llu had "
                           "returned before the view opened",
                           x->id, how, w, (unsigned long long)s.tag[w],
                           (unsigned long long)floor[w]);
                good = false;
            }
            for (unsigned u = 0; u < AT_WRITERS && good; u++) {
                if (u == w) {
                    continue;
                }
                if (s.seen_present[w][u] != (s.present[w] != 0)) {
                    cc_fail_at(__FILE__, __LINE__,
                               "reader %u (%s): group %u batch %llu without its record of "
                               "group %u",
                               x->id, how, w, (unsigned long long)s.tag[w], u);
                    good = false;
                } else if (s.seen_present[w][u] && s.seen[w][u] > s.tag[u]) {
                    cc_fail_at(__FILE__, __LINE__,
                               "reader %u (%s): not a consistent cut: group %u batch %llu was "
                               "written after group %u batch %llu returned, but the view "
                               "holds group %u at batch %llu",
                               x->id, how, w, (unsigned long long)s.tag[w], u,
                               (unsigned long long)s.seen[w][u], u, (unsigned long long)s.tag[u]);
                    good = false;
                }
            }
            last[w] = s.tag[w];
        }
        if (!good) {
            break;
        }
        if (final) {
            for (unsigned w = 0; w < AT_WRITERS; w++) {
                if (s.tag[w] != a->batches) {
                    cc_fail_at(__FILE__, __LINE__,
                               "reader %u: after the writers, group %u at batch %llu of %u", x->id,
                               w, (unsigned long long)s.tag[w], a->batches);
                }
            }
            break;
        }
        if (round % 16 == 15) {
            sched_yield();
        }
    }
    return NULL;
}

static void
view_atomicity(unsigned workers, int sync, unsigned batches, int runs)
{
    htkv_run_eager = runs;
    struct cc_mode mode = { workers, HTKV_IO_AUTO, sync };
    cc_set_mode(&mode);
    uint64_t seed = cc_seed("view-atomicity");
    char *dir = tu_tmpdir("view-atomicity");
    htkv_config cfg;
    cc_config(&cfg, dir, &mode);
    htkv_db *db = cc_open(&cfg);
    struct at *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->db = db;
    a->batches = cc_ops(batches);
    atomic_store(&a->writers_left, AT_WRITERS);
    /* Writers, readers, then one noise thread. */
    enum { NTH = AT_WRITERS + AT_READERS + 1 };
    struct at_arg args[NTH];
    for (unsigned i = 0; i < NTH; i++) {
        args[i] = (struct at_arg){ a, i < AT_WRITERS ? i : i - AT_WRITERS, cc_subseed(seed, i, 0) };
    }
    pthread_t th[NTH];
    uint64_t t0 = cc_now_ns();
    for (unsigned i = 0; i < NTH; i++) {
        void *(*fn)(void *) = i < AT_WRITERS                ? at_writer
                              : i < AT_WRITERS + AT_READERS ? at_reader
                                                            : at_noise;
        assert_int_equal(pthread_create(&th[i], NULL, fn, &args[i]), 0);
    }
    for (unsigned i = 0; i < NTH; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    fprintf(stderr, "[view-atomicity %s] %u batches x %u writers, %llu reads, %.2f s\n",
            cc_mode_text, a->batches, AT_WRITERS, (unsigned long long)atomic_load(&a->views),
            (double)(cc_now_ns() - t0) / 1e9);
    cc_assert_ok();
    struct htkv_stats st = tu_stats(db);
    assert_int_equal(st.views_open, 0);
    assert_int_equal(st.batches >= (uint64_t)a->batches * AT_WRITERS, 1);
    assert_true(atomic_load(&a->views) >= AT_READERS);
    assert_int_equal(htkv_close(db), 0);
    htkv_run_eager = 0;
    free(a);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: with concurrent cross-shard batches, every view (and every get_prefix) holds each batch
 * entirely or not at all, sees batches in order, holds every batch that returned before it
 * opened, and is a consistent cut across writers. Method: view_atomicity(), inline, NEVER. */
static void
test_view_atomicity_batches_inline_never(void **state)
{
    (void)state;
    view_atomicity(0, HTKV_SYNC_NEVER, 2000, 0);
}

/* Goal: as above, inline, HTKV_SYNC_ALWAYS (parts synced and published under all locks). */
static void
test_view_atomicity_batches_inline_always(void **state)
{
    (void)state;
    view_atomicity(0, HTKV_SYNC_ALWAYS, 300, 0);
}

/* Goal: as above with 2 workers, HTKV_SYNC_NEVER. */
static void
test_view_atomicity_batches_workers_never(void **state)
{
    (void)state;
    view_atomicity(2, HTKV_SYNC_NEVER, 2000, 0);
}

/* Goal: as above with 2 workers, HTKV_SYNC_ALWAYS. */
static void
test_view_atomicity_batches_workers_always(void **state)
{
    (void)state;
    view_atomicity(2, HTKV_SYNC_ALWAYS, 300, 0);
}

/* Goal: as above, inline, HTKV_SYNC_NEVER, with every query building a sorted run for each
 * shard whose run went stale (run.h): iterators read runs that the concurrent batches and
 * noise make stale under them, and views read runs built after they opened. */
static void
test_view_atomicity_batches_sorted_runs(void **state)
{
    (void)state;
    view_atomicity(0, HTKV_SYNC_NEVER, 1000, 1);
}

/* Goal: as above, with every query that finds exact runs in all shards building the store's
 * merge path and reading along it, while the writers make paths and runs stale. */
static void
test_view_atomicity_batches_merge_paths(void **state)
{
    (void)state;
    view_atomicity(0, HTKV_SYNC_NEVER, 1000, 2);
}

/* ---- read-your-writes through views --------------------------------------------------------- */

#define PV_READERS 2
#define PV_LAG 50 /* the writer deletes the key it put PV_LAG puts earlier */

struct pv {
    htkv_db *db;
    unsigned n;
    _Atomic unsigned put_done;  /* keys 0..put_done-1 were put (the put returned) */
    _Atomic unsigned del_start; /* deletes of keys 0..del_start-1 have begun */
    _Atomic unsigned del_done;  /* keys 0..del_done-1 were deleted (the delete returned) */
    _Atomic int writer_done;
    _Atomic int readers_ready; /* the writer starts once every reader runs */
    _Atomic uint64_t checks;
};

struct pv_arg {
    struct pv *p;
    unsigned id;
    uint64_t rng;
};

static size_t
pv_key(unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "p/%06u", i);
}

static void *
pv_writer(void *arg)
{
    struct pv *p = arg;
    char k[16];
    unsigned char v[CC_VAL_MAX];
    while (atomic_load(&p->readers_ready) < PV_READERS) {
        sched_yield();
    }
    for (unsigned i = 0; i < p->n && !cc_failed(); i++) {
        size_t kl = pv_key(i, k);
        size_t vl = cc_value(i, i, CC_VAL_HDR, v);
        int rc = htkv_put(p->db, k, kl, v, vl);
        if (rc != 0) {
            cc_fail_at(__FILE__, __LINE__, "put %s: rc %d (%s)", k, rc, htkv_strerror(rc));
            break;
        }
        atomic_store_explicit(&p->put_done, i + 1, memory_order_release);
        if (i >= PV_LAG) {
            unsigned d = i - PV_LAG;
            kl = pv_key(d, k);
            atomic_store(&p->del_start, d + 1); /* seq_cst: before the delete takes its lock */
            rc = htkv_delete(p->db, k, kl);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "delete %s: rc %d (%s)", k, rc, htkv_strerror(rc));
                break;
            }
            atomic_store_explicit(&p->del_done, d + 1, memory_order_release);
        }
    }
    atomic_store(&p->writer_done, 1);
    return NULL;
}

/* Key @p i must be in @p v with its value. */
static bool
pv_expect_present(htkv_view *v, unsigned i, const char *why)
{
    char k[16];
    unsigned char buf[CC_VAL_MAX];
    size_t kl = pv_key(i, k), vl = 0;
    int rc = htkv_view_get(v, k, kl, buf, sizeof(buf), &vl);
    CC_CHECK(rc == 0, "%s: view_get %s: rc %d (%s), want present", why, k, rc, htkv_strerror(rc));
    uint64_t tag;
    CC_CHECK(cc_value_decode(buf, vl, i, &tag) && tag == i, "%s: %s: wrong or damaged value", why,
             k);
    return true;
}

static void *
pv_reader(void *arg)
{
    struct pv_arg *x = arg;
    struct pv *p = x->p;
    char k[16];
    atomic_fetch_add(&p->readers_ready, 1);
    for (unsigned round = 0; !cc_failed(); round++) {
        bool last = atomic_load(&p->writer_done) != 0;
        unsigned pd = atomic_load_explicit(&p->put_done, memory_order_acquire);
        unsigned dd = atomic_load_explicit(&p->del_done, memory_order_acquire);
        if (round % 3 == 2) {
            /* An iterator's private view, opened after the loads: scan from the newest key. */
            if (pd == 0) {
                continue;
            }
            htkv_iter *it = NULL;
            size_t kl = pv_key(pd - 1, k);
            int rc = htkv_scan(p->db, k, kl, NULL, 0, &it);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "scan: rc %d (%s)", rc, htkv_strerror(rc));
                break;
            }
            const void *gk, *gv;
            size_t gkl, gvl;
            rc = htkv_iter_set_limit(it, 1);
            if (rc == 0) {
                rc = htkv_iter_next(it, &gk, &gkl, &gv, &gvl);
            }
            unsigned ds = atomic_load(&p->del_start);
            bool ok = true;
            if (pd - 1 >= ds) {
                uint64_t tag = 0;
                ok = rc == 1 && gkl == kl && memcmp(gk, k, kl) == 0 &&
                     cc_value_decode(gv, gvl, pd - 1, &tag) && tag == pd - 1;
                if (!ok) {
                    cc_fail_at(__FILE__, __LINE__,
                               "reader %u: scan from %s (put returned before) got rc %d %.*s",
                               x->id, k, rc, rc == 1 ? (int)gkl : 0,
                               rc == 1 ? (const char *)gk : "");
                }
            }
            htkv_iter_destroy(it);
            if (!ok) {
                break;
            }
        } else {
            htkv_view *v = NULL;
            int rc = htkv_view_open(p->db, &v);
            if (rc != 0) {
                cc_fail_at(__FILE__, __LINE__, "view_open: rc %d (%s)", rc, htkv_strerror(rc));
                break;
            }
            /* Deletes begun before the view may or may not be in it; later ones are not. */
            unsigned ds = atomic_load(&p->del_start);
            bool ok = true;
            if (pd > 0 && pd - 1 >= ds) {
                ok = pv_expect_present(v, pd - 1, "newest put");
            }
            if (ok && pd > ds) {
                unsigned i = ds + (unsigned)(tu_rand(&x->rng) % (pd - ds));
                ok = pv_expect_present(v, i, "put, not deleted");
            }
            if (ok && dd > 0) {
                unsigned i = (unsigned)(tu_rand(&x->rng) % dd);
                unsigned char buf[CC_VAL_MAX];
                size_t kl = pv_key(i, k);
                rc = htkv_view_get(v, k, kl, buf, sizeof(buf), NULL);
                if (rc != HTKV_ENOTFOUND) {
                    cc_fail_at(__FILE__, __LINE__,
                               "reader %u: %s deleted before the view opened: rc %d (%s)", x->id, k,
                               rc, htkv_strerror(rc));
                    ok = false;
                }
            }
            htkv_view_close(v);
            if (!ok) {
                break;
            }
        }
        atomic_fetch_add_explicit(&p->checks, 1, memory_order_relaxed);
        if (last) {
            break;
        }
        if (round % 8 == 7) {
            sched_yield(); /* let the writer (and its worker) run on a small machine */
        }
    }
    return NULL;
}

static void
put_visibility(unsigned workers, int sync, unsigned n)
{
    struct cc_mode mode = { workers, HTKV_IO_AUTO, sync };
    cc_set_mode(&mode);
    uint64_t seed = cc_seed("view-put-visibility");
    char *dir = tu_tmpdir("view-put-visibility");
    htkv_config cfg;
    cc_config(&cfg, dir, &mode);
    htkv_db *db = cc_open(&cfg);
    struct pv *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->db = db;
    p->n = cc_ops(n);
    struct pv_arg args[PV_READERS];
    for (unsigned i = 0; i < PV_READERS; i++) {
        args[i] = (struct pv_arg){ p, i, cc_subseed(seed, i, 1) };
    }
    pthread_t w, r[PV_READERS];
    uint64_t t0 = cc_now_ns();
    assert_int_equal(pthread_create(&w, NULL, pv_writer, p), 0);
    for (unsigned i = 0; i < PV_READERS; i++) {
        assert_int_equal(pthread_create(&r[i], NULL, pv_reader, &args[i]), 0);
    }
    assert_int_equal(pthread_join(w, NULL), 0);
    for (unsigned i = 0; i < PV_READERS; i++) {
        assert_int_equal(pthread_join(r[i], NULL), 0);
    }
    fprintf(stderr, "[view-put-visibility %s] %u puts, %llu checks, %.2f s\n", cc_mode_text, p->n,
            (unsigned long long)atomic_load(&p->checks), (double)(cc_now_ns() - t0) / 1e9);
    cc_assert_ok();
    assert_int_equal(tu_stats(db).views_open, 0);
    assert_int_equal(tu_stats(db).live_keys, p->n < PV_LAG ? p->n : PV_LAG);
    assert_int_equal(htkv_close(db), 0);
    free(p);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a put (or delete) that returned on one thread is in every view opened afterwards on
 * another, and in every iterator created afterwards; a delete not yet begun is not in it.
 * Method: one writer publishes its progress through atomics; readers load them, then open a
 * view (or a scan) and check the newest put, a random live key and a random deleted key. */
static void
test_view_atomicity_put_then_view_inline_never(void **state)
{
    (void)state;
    put_visibility(0, HTKV_SYNC_NEVER, 40000);
}

/* Goal: as above, inline, HTKV_SYNC_ALWAYS. */
static void
test_view_atomicity_put_then_view_inline_always(void **state)
{
    (void)state;
    put_visibility(0, HTKV_SYNC_ALWAYS, 1000);
}

/* Goal: as above with 2 workers, HTKV_SYNC_NEVER. */
static void
test_view_atomicity_put_then_view_workers_never(void **state)
{
    (void)state;
    put_visibility(2, HTKV_SYNC_NEVER, 10000);
}

/* Goal: as above with 2 workers, HTKV_SYNC_ALWAYS. */
static void
test_view_atomicity_put_then_view_workers_always(void **state)
{
    (void)state;
    put_visibility(2, HTKV_SYNC_ALWAYS, 1000);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_atomicity_batches_inline_never),
        cmocka_unit_test(test_view_atomicity_batches_inline_always),
        cmocka_unit_test(test_view_atomicity_batches_workers_never),
        cmocka_unit_test(test_view_atomicity_batches_workers_always),
        cmocka_unit_test(test_view_atomicity_batches_sorted_runs),
        cmocka_unit_test(test_view_atomicity_batches_merge_paths),
        cmocka_unit_test(test_view_atomicity_put_then_view_inline_never),
        cmocka_unit_test(test_view_atomicity_put_then_view_inline_always),
        cmocka_unit_test(test_view_atomicity_put_then_view_workers_never),
        cmocka_unit_test(test_view_atomicity_put_then_view_workers_always),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
