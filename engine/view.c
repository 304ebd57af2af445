/*
 * view.c - consistent read views and ordered iteration (prefix and range queries).
 *
 * Design. A view is one snapshot version per shard, taken while every shard's lock is held:
 * every publication of a write happens under its shard's lock (a batch that spans shards
 * publishes all its parts under all their locks), so the snapshots form one instant of the
 * whole store. Readers of a view walk each key's version chain to the newest entry not newer
 * than the shard's snapshot. To keep those entries alive, each shard's view_floor (the smallest
 * snapshot of the open views) stops the writer from cutting chains behind newer entries; when
 * the last view needing them closes, the floor rises and the shard retires them.
 *
 * A view is one instant of what readers see, not always the store at one version: in
 * HTKV_SYNC_ALWAYS a shard publishes after its own group sync, so a view can see a version while
 * a lower one is still pending in another shard (complete, below, is the highest version up to
 * which it misses nothing). A snapshot claims to be the store at its version, so it makes its view
 * a cut (htkv_view_cut()): it waits until nothing at or below the view's highest version is
 * pending, then reads every shard at that version; the view's floors kept all that needs.
 *
 * An iterator reads a view (its own, for htkv_get_prefix()/htkv_scan()). Each shard streams its
 * keys in order, as elements of run.h's form (record, version, lengths, flags), from one of two
 * places. When the shard's sorted run is exact at the refill, the source takes a reference to it
 * and reads the elements between the query's bounds in place, for the iterator's life: an
 * element whose version the snapshot covers is what the view sees of its key (it was the head
 * when the run was taken, after the view opened: nothing between the snapshot and then is
 * older), a tombstone so covered is skipped, and any other element is looked up again in the
 * trie inside a critical section (invariant 1 keeps the view's entry linked). Otherwise the
 * source reads its trie in chunks of up to ITER_CHUNK elements gathered inside one EBR critical
 * section; the next chunk re-seeks after the last key seen, so no trie node is held between
 * chunks, and switches to the run if one became exact. The shards' streams are merged by a
 * linear scan of their current abbreviated keys (up to ITER_LINEAR_MAX shards) or a binary heap.
 * Elements point into the segment mappings: no value is copied.
 *
 * Invariants
 *   1. While a view is open, for every shard s and key k, the newest entry of k with version
 *      <= snap[s] stays linked and allocated.
 *   2. An iterator returns keys in strictly increasing unsigned byte order, each at most once.
 *   3. view_floor of a shard == min(snap[s]) over open views, or UINT64_MAX: it only falls
 *      when a view opens and only rises when one closes.
 *   4. snap[s] of an open view <= shard s's visible version, or, after htkv_view_cut(), no
 *      version in (visible, snap[s]] is or will be in shard s (restore, the one writer that
 *      resets versions, refuses to run while a view is open); complete <= max_version ==
 *      max(snap[s]).
 *   5. A version chain is newest first: each entry's prev has a version no larger (equal only
 *      for a key a batch wrote twice).
 *   6. Every element a source yields is one its snapshot sees (version <= snap) or RUN_SLOW; a
 *      run source holds exactly one reference to its run, taken once, released at destroy.
 *   7. views.open counts the views on views.list; a view is on it from open to its one close.
 */
#include "engine/store.h"
#include "engine/view.h"

#include <time.h>

#include "engine/zombie.h"
#include "engine/cold.h"
#include "engine/hash.h"
#include "engine/rec.h"
#include "engine/run.h"

/* Items gathered per shard per refill: one EBR section per 128 keys. */
#define ITER_CHUNK 128u
/* A source's first chunk: 16 keys, doubling with each refill up to ITER_CHUNK, so that a short
 * query (a scan with a small limit, set after the iterator is made) walks few keys per shard. */
#define ITER_CHUNK_FIRST 16u

/* Up to this many shards, the merge scans the sources' current abbreviated keys, kept side by
 * side in htkv_iter.cur, for the smallest (a few comparisons that compile to conditional moves)
 * instead of keeping a heap, whose unpredictable branches cost more than they save at this size. */
#define ITER_LINEAR_MAX 8u

struct htkv_view {
    struct htkv_db *db;
    struct htkv_view *next;
    struct htkv_view *prev;
    uint64_t gen; /* db->views.gen after this view was counted: compaction's zombies use it */
    uint64_t max_version;
    /* Every version up to it that any write took is visible in the view (the change feed's
     * bound: a version above may still be pending, unpublished, in another shard). */
    uint64_t complete;
    uint64_t snap[]; /* per shard */
};

/*
 * A source: one shard's stream of keys in order, as run.h's elements (record, version, lengths,
 * flags). In run mode the elements are the shard's sorted run, held by a reference for the
 * iterator's life, between the query's bounds: no refill, no copy. In trie mode they are chunks
 * gathered from the trie (already resolved for the snapshot). p is the current element, always
 * one the snapshot sees (or one whose record failed its check: RUN_SLOW, reported when it comes
 * up); [q, end) are the elements not read yet.
 */
struct iter_src {
    const struct run_ent *p;
    const struct run_ent *q;
    const struct run_ent *end;
    uint64_t abbrev;       /* key bytes [skip, skip + 8) of *p, big-endian, zero-padded */
    uint64_t snap;         /* the view's snapshot of this shard */
    struct shard_run *run; /* run mode: the reference taken; NULL in trie mode */
    uint32_t shard;
    bool done;                     /* trie mode: nothing after [q, end) */
    const unsigned char *last_key; /* trie mode: the last key read, in a mapping: stays valid */
    uint32_t last_len;
    uint32_t bad_off; /* where the first record that failed its check lies */
    const struct seg *bad_seg;
    struct run_ent one;               /* run mode: an element resolved again through the trie */
    uint32_t chunk_want;              /* trie mode: keys the next refill gathers at most */
    struct run_ent chunk[ITER_CHUNK]; /* trie mode */
};

struct htkv_iter {
    struct htkv_db *db;
    struct htkv_view *view;
    bool own_view;
    bool prefix_mode;
    unsigned char *lo; /* prefix, or range start */
    uint32_t lo_len;
    unsigned char *hi; /* range end (exclusive); NULL = none */
    uint32_t hi_len;
    uint64_t limit;
    uint64_t returned;
    uint64_t last_version; /* version of the item returned last */
    uint32_t skip;         /* leading bytes every key in bounds shares (the prefix) */
    int err;
    const struct shard *damaged; /* a shard with a damaged key (iter_check_keys()), or NULL */
    uint32_t nsrc;
    uint32_t nheap;
    uint32_t *heap; /* indexes into src with items: a min-heap by current key, or, with at most
                     * ITER_LINEAR_MAX shards, in any order (linear_min()) */
    struct iter_src *src;
    uint64_t cur[ITER_LINEAR_MAX]; /* linear mode: abbrev of heap[k]'s current element */
    /* Path mode (run.h): the store's merge path, a reference, and the stretch of it in bounds;
     * src[s].q walks shard s's run in step. NULL: the sources are merged. */
    struct merge_path *path;
    uint64_t ppos, pend;
#ifdef HTKV_DEBUG
    const unsigned char *prev_key; /* the key returned last, in a mapping (invariant 2) */
    uint32_t prev_len;
#endif
};

/* ---- views ---------------------------------------------------------------------------------- */

static void
lock_all(struct htkv_db *db)
{
    for (uint32_t i = 0; i < db->shard_count; i++) {
        pthread_mutex_lock(&db_shard(db, i)->lock);
    }
}

static void
unlock_all(struct htkv_db *db)
{
    for (uint32_t i = db->shard_count; i > 0; i--) {
        pthread_mutex_unlock(&db_shard(db, i - 1)->lock);
    }
}

static int
view_open(struct htkv_db *db, struct htkv_view **out)
{
    struct htkv_view *v = htkv_mem_alloc(sizeof(*v) + db->shard_count * sizeof(uint64_t));
    if (v == NULL) {
        return -ENOMEM;
    }
    v->db = db;
    v->max_version = 0;
    pthread_mutex_lock(&db->views.lock);
    lock_all(db);
    uint64_t unpublished = UINT64_MAX; /* lowest version installed but not yet visible */
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        v->snap[i] = atomic_load_explicit(&db->ro[i].visible, memory_order_relaxed);
        if (v->snap[i] < sh->view_floor) {
            sh->view_floor = v->snap[i];
        }
        if (v->snap[i] > v->max_version) {
            v->max_version = v->snap[i];
        }
        uint64_t p = htkv_shard_first_unpublished(sh, v->snap[i]);
        HTKV_ASSERT(p > v->snap[i]); /* what is pending lies above what is visible */
        unpublished = p < unpublished ? p : unpublished;
    }
    unlock_all(db);
    v->complete = unpublished <= v->max_version ? unpublished - 1 : v->max_version;
    v->prev = NULL;
    v->next = db->views.list;
    if (db->views.list != NULL) {
        db->views.list->prev = v;
    }
    db->views.list = v;
    db->views.open++;
    v->gen = ++db->views.gen;
    pthread_mutex_unlock(&db->views.lock);
    *out = v;
    return 0;
}

/* Set each shard's view_floor to the smallest snapshot of the open views after one closed or
 * raised its snapshots (views.lock held): the floors only rise, and the shards retire what no
 * open view needs any more (invariant 3). */
static void
floors_raise(struct htkv_db *db)
{
    for (uint32_t i = 0; i < db->shard_count; i++) {
        uint64_t floor = UINT64_MAX;
        for (struct htkv_view *o = db->views.list; o != NULL; o = o->next) {
            floor = o->snap[i] < floor ? o->snap[i] : floor;
        }
        struct shard *sh = db_shard(db, i);
        pthread_mutex_lock(&sh->lock);
        HTKV_ASSERT(floor >= sh->view_floor); /* invariant 3: a floor never falls here */
        if (floor != sh->view_floor) {
            sh->view_floor = floor;
            htkv_shard_prune_to_floor(sh);
        }
        pthread_mutex_unlock(&sh->lock);
    }
}

/* Is a version at or below @p upto still pending (installed, not yet visible) in some shard?
 * HTKV_EFAILED when a shard stopped its writes: what it holds pending never becomes visible. */
static int
pending_upto(struct htkv_db *db, uint64_t upto, bool *pending)
{
    int rc = 0;
    *pending = false;
    for (uint32_t i = 0; i < db->shard_count && rc == 0 && !*pending; i++) {
        struct shard *sh = db_shard(db, i);
        pthread_mutex_lock(&sh->lock);
        uint64_t visible = atomic_load_explicit(&db->ro[i].visible, memory_order_relaxed);
        if (htkv_shard_first_unpublished(sh, visible) <= upto) {
            *pending = true;
            rc = htkv_shard_check_writable(sh) == HTKV_EFAILED ? HTKV_EFAILED : 0;
        }
        pthread_mutex_unlock(&sh->lock);
    }
    return rc;
}

int
htkv_view_cut(htkv_view *v)
{
    struct htkv_db *db = v->db;
    uint64_t upto = v->max_version;
    long pause_ns = 20 * 1000L; /* doubling to 1 ms: a group sync publishes within a few */
    bool pending = v->complete < upto;
    while (pending) {
        if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
            return HTKV_ECLOSED;
        }
        struct timespec ts = { 0, pause_ns };
        nanosleep(&ts, NULL);
        pause_ns = pause_ns < 1000 * 1000L ? pause_ns * 2 : pause_ns;
        int rc = pending_upto(db, upto, &pending);
        if (rc != 0) {
            return rc;
        }
    }
    /* Every version up to `upto` is now visible in its shard, and any a write takes from now
     * on is above it: each shard read at `upto` is the store at that version. The view kept
     * what that needs (its floors lie at or below its old snapshots). */
    pthread_mutex_lock(&db->views.lock);
    for (uint32_t i = 0; i < db->shard_count; i++) {
        HTKV_ASSERT(v->snap[i] <= upto);
        v->snap[i] = upto;
    }
    v->complete = upto;
    floors_raise(db);
    pthread_mutex_unlock(&db->views.lock);
    return 0;
}

static void
view_close(struct htkv_view *v)
{
    struct htkv_db *db = v->db;
    pthread_mutex_lock(&db->views.lock);
    /* Closed once: still linked (a second close finds it neither first nor linked back). */
    HTKV_ASSERT(db->views.open > 0);
    HTKV_ASSERT(v->prev != NULL ? v->prev->next == v : db->views.list == v);
    HTKV_ASSERT(v->next == NULL || v->next->prev == v);
    if (v->prev != NULL) {
        v->prev->next = v->next;
    } else {
        db->views.list = v->next;
    }
    if (v->next != NULL) {
        v->next->prev = v->prev;
    }
    db->views.open--;
    floors_raise(db);
    if (db->views.zombies != NULL) {
        uint64_t min_gen = UINT64_MAX;
        for (struct htkv_view *o = db->views.list; o != NULL; o = o->next) {
            min_gen = o->gen < min_gen ? o->gen : min_gen;
        }
        htkv_zombie_release(db, min_gen);
    }
    HTKV_ASSERT((db->views.open == 0) == (db->views.list == NULL));
    pthread_mutex_unlock(&db->views.lock);
    htkv_mem_free(v);
}

int
htkv_view_open(htkv_db *db, htkv_view **out)
{
    if (out == NULL) {
        return htkv_einval(__func__);
    }
    *out = NULL;
    if (db == NULL) {
        return htkv_einval(__func__);
    }
    if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
        return HTKV_ECLOSED;
    }
    return view_open(db, out);
}

int
htkv_view_open_cut(htkv_db *db, htkv_view **out)
{
    int rc = htkv_view_open(db, out);
    if (rc == 0 && (rc = htkv_view_cut(*out)) != 0) {
        view_close(*out);
        *out = NULL;
    }
    return rc;
}

void
htkv_view_close(htkv_view *v)
{
    if (v != NULL) {
        view_close(v);
    }
}

uint64_t
htkv_view_complete(const htkv_view *v)
{
    return v->complete;
}

uint64_t
htkv_view_shard_snap(const htkv_view *v, uint32_t shard)
{
    HTKV_ASSERT(shard < v->db->shard_count);
    return v->snap[shard];
}

uint64_t
htkv_view_version(const htkv_view *v)
{
    return v == NULL ? 0 : v->max_version;
}

/* Newest entry of the chain starting at @p e with version <= @p snap, or NULL. */
static inline struct hidx_ent *
chain_at(struct hidx_ent *e, uint64_t snap)
{
    while (e != NULL && e->version > snap) {
        struct hidx_ent *older = atomic_load_explicit(&e->prev, memory_order_acquire);
        HTKV_DASSERT(older == NULL || older->version <= e->version); /* invariant 5 */
        e = older;
    }
    return e;
}

/* Describe entry @p e (inside the EBR section that found it) as an element, checking its
 * record: one that fails is flagged RUN_SLOW and the first such is remembered in @p src. */
static inline void
ent_from(struct htkv_db *db, struct iter_src *src, struct run_ent *out, struct hidx_ent *e)
{
    uint32_t flags = 0;
    HTKV_DASSERT(!e->del && e->version <= src->snap); /* the entry the snapshot sees */
    HTKV_DASSERT(e->rec_bytes >= REC_HDR_BYTES + e->key_len);
    HTKV_DASSERT(e->rec_bytes - REC_HDR_BYTES - e->key_len <= RUN_VLEN_MASK);
    if (HTKV_UNLIKELY(db_ent_check(db, e) != 0)) {
        flags = RUN_SLOW;
        if (src->bad_seg == NULL) {
            src->bad_seg = e->seg;
            src->bad_off = e->off;
        }
    }
    *out = (struct run_ent){ .rec = hidx_ent_rec(e),
                             .version = e->version,
                             .klen = e->key_len,
                             .vflags = (e->rec_bytes - REC_HDR_BYTES - e->key_len) | flags };
}

/*
 * The value of @p key that view @p v sees in shard @p s, in memory or cold (cold.h: a cold key's
 * only version is at or below every open view's snapshot): 0 with its bytes; HTKV_ENOTFOUND;
 * HTKV_ECORRUPT. Inside an EBR section.
 */
static int
view_find(htkv_view *v, uint32_t s, uint64_t hash, const void *key, uint32_t klen,
          const unsigned char **val, uint32_t *n)
{
    struct htkv_db *db = v->db;
    struct shard *sh = db_shard(db, s);
    for (;;) {
        struct hidx_ent *h = htkv_hidx_find(&sh->idx, hash, key, klen);
        if (h != NULL || db->env.budget_share == 0) {
            struct hidx_ent *e = chain_at(h, v->snap[s]);
            if (e == NULL || e->del) {
                return HTKV_ENOTFOUND;
            }
            *n = e->rec_bytes - REC_HDR_BYTES - e->key_len;
            *val = hidx_ent_rec(e) + REC_HDR_BYTES + e->key_len;
            return db_ent_check(db, e);
        }
        struct cold_hit hit;
        int rc = htkv_cold_lookup(db, sh, hash, key, klen, &hit);
        if (rc == COLD_HOT) {
            continue;
        }
        HTKV_DASSERT(rc != 0 || hit.version <= v->snap[s]); /* cold.h, rule 2 */
        if (rc == 0 && (hit.del || hit.version > v->snap[s])) {
            return HTKV_ENOTFOUND;
        }
        if (rc == 0) {
            *n = hit.val_len;
            *val = cold_hit_value(&hit);
        }
        return rc;
    }
}

int
htkv_view_get(htkv_view *v, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    if (v == NULL || key == NULL || klen == 0 || (buf == NULL && cap > 0)) {
        return htkv_einval(__func__);
    }
    if (klen > HTKV_KEY_MAX) {
        return HTKV_ETOOBIG;
    }
    struct htkv_db *db = v->db;
    uint64_t hash = htkv_hash(key, klen, db->hash_seed);
    uint32_t s = db_shard_of(db, hash);
    /* Invariant 4: the view never sees past what its shard has published. */
    HTKV_DASSERT(v->snap[s] <= atomic_load_explicit(&db->ro[s].visible, memory_order_relaxed));
    unsigned slot = htkv_ebr_enter(&db->ebr);
    const unsigned char *val = NULL;
    uint32_t n = 0;
    int rc = view_find(v, s, hash, key, (uint32_t)klen, &val, &n);
    if (rc == 0) {
        if (vlen != NULL) {
            *vlen = n;
        }
        if (n > cap) {
            rc = HTKV_ETOOSMALL;
        } else if (n > 0) {
            memcpy(buf, val, n);
        }
    }
    htkv_ebr_exit(&db->ebr, slot);
    return rc;
}

int
htkv_read_with(htkv_db *db, int (*fn)(htkv_view *v, void *ctx), void *ctx)
{
    if (db == NULL || fn == NULL) {
        return htkv_einval(__func__);
    }
    htkv_view *v;
    int rc = htkv_view_open(db, &v);
    if (rc != 0) {
        return rc;
    }
    rc = fn(v, ctx);
    htkv_view_close(v);
    return rc;
}

/* ---- iterators ------------------------------------------------------------------------------ */

/* memcmp(a, b, n) == 0 for the short prefixes of queries, without a call. */
static inline bool
bytes_eq(const unsigned char *a, const unsigned char *b, uint32_t n)
{
    if (n >= 8) {
        uint64_t x, y;
        for (uint32_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y) {
                return false;
            }
        }
        memcpy(&x, a + n - 8, 8); /* the last 8 bytes, overlapping the loop's */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return false;
        }
    }
    return true;
}

/* Does @p key pass the iterator's upper bound (prefix or end)? */
static inline bool
iter_in_bounds(const struct htkv_iter *it, const unsigned char *key, uint32_t klen)
{
    if (it->prefix_mode) {
        return klen >= it->lo_len && bytes_eq(key, it->lo, it->lo_len);
    }
    return it->hi == NULL || htkv_key_cmp(key, klen, it->hi, it->hi_len) < 0;
}

/* The entry of @p key that snapshot @p snap sees, from the trie: NULL, or a live entry. */
static inline struct hidx_ent *
trie_entry_at(struct shard *sh, const unsigned char *key, uint32_t klen, uint64_t snap)
{
    struct hidx_ent *v = chain_at(htkv_trie_get(&sh->trie, key, klen), snap);
    return v != NULL && !v->del ? v : NULL;
}

/* Where in run @p r the query's keys lie, from the first key not read yet by @p src. */
static void
run_bounds(const struct htkv_iter *it, const struct iter_src *src, const struct shard_run *r,
           uint64_t *lo, uint64_t *hi)
{
    *lo = src->last_key != NULL ? htkv_run_lower_bound(r, src->last_key, src->last_len, true)
                                : htkv_run_lower_bound(r, it->lo, it->lo_len, false);
    *hi = it->prefix_mode  ? htkv_run_prefix_end(r, it->lo, it->lo_len)
          : it->hi != NULL ? htkv_run_lower_bound(r, it->hi, it->hi_len, false)
                           : r->n;
    *hi = *hi > *lo ? *hi : *lo;
    HTKV_ASSERT(*hi <= r->n); /* bounds index the run's elements */
}

/* Switch @p src to the shard's run @p r (a reference, now the source's): its elements from the
 * first key not read yet up to the query's upper bound. */
static void
src_use_run(struct htkv_iter *it, struct iter_src *src, struct shard_run *r)
{
    uint64_t lo, hi;
    HTKV_ASSERT(src->run == NULL && !src->done); /* one reference per source (invariant 6) */
    run_bounds(it, src, r, &lo, &hi);
    src->run = r;
    src->q = &r->ents[lo];
    src->end = &r->ents[hi];
    src->done = true;
}

/* Path mode: read the shards' runs of @p p (a reference, now the iterator's) along its path. The
 * keys in bounds are the stretch between the sums of the shards' bounds. */
static void
iter_use_path(struct htkv_iter *it, struct merge_path *p)
{
    HTKV_ASSERT(p->nshards == it->nsrc && it->path == NULL);
    it->path = p;
    it->ppos = it->pend = 0;
    for (uint32_t s = 0; s < it->nsrc; s++) {
        struct iter_src *src = &it->src[s];
        const struct shard_run *r = p->runs[s];
        uint64_t lo, hi;
        run_bounds(it, src, r, &lo, &hi);
        src->q = &r->ents[lo];
        src->end = &r->ents[hi];
        src->done = true;
        it->ppos += lo;
        it->pend += hi;
    }
    HTKV_ASSERT(it->ppos <= it->pend && it->pend <= p->n);
}

/* Trie mode: gather the next chunk from the shard's trie; the keys walked count towards building
 * a run (through @p walked). */
static int
refill_from_trie(struct htkv_iter *it, struct iter_src *src, struct shard *sh, uint64_t *walked)
{
    struct htkv_db *db = it->db;
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &sh->trie);
    int rc;
    if (src->last_key == NULL) {
        rc = it->prefix_mode ? htkv_trie_cursor_seek_prefix(&c, it->lo, it->lo_len)
                             : htkv_trie_cursor_seek(&c, it->lo, it->lo_len);
        rc = rc < 0 ? rc : 0;
    } else {
        rc = htkv_trie_cursor_seek(&c, src->last_key, src->last_len);
    }
    bool more = rc == 0;
    bool resumed = src->last_key != NULL; /* keys up to last_key come first: skip them */
    /* One leaf ahead: its entry is fetched while this one is read (a chunk that fills up leaves
     * it to the next refill, which seeks past the last key returned). */
    struct hidx_ent *next = more ? htkv_trie_cursor_next(&c) : NULL;
    uint32_t n = 0;
    uint64_t seen = 0;
    uint32_t want = src->chunk_want;
    HTKV_ASSERT(want >= 1 && want <= ITER_CHUNK); /* the chunk array bounds n */
    src->chunk_want = want * 2 < ITER_CHUNK ? want * 2 : ITER_CHUNK;
    while (more && n < want) {
        struct hidx_ent *e = next;
        if (e == NULL) {
            rc = htkv_trie_cursor_error(&c);
            more = false;
            break;
        }
        next = htkv_trie_cursor_next(&c);
        if (next != NULL) {
            __builtin_prefetch(next);
        }
        seen++;
        const unsigned char *key = hidx_ent_rec(e) + REC_HDR_BYTES;
        if (resumed) {
            if (htkv_key_cmp(key, e->key_len, src->last_key, src->last_len) <= 0) {
                continue; /* the re-seek lands on the last key of the previous chunk */
            }
            resumed = false; /* the cursor returns keys in increasing order */
        }
        if (!iter_in_bounds(it, key, e->key_len)) {
            more = false;
            break;
        }
        HTKV_DASSERT(src->last_key == NULL ||
                     htkv_key_cmp(key, e->key_len, src->last_key, src->last_len) > 0);
        src->last_key = key;
        src->last_len = e->key_len;
        struct hidx_ent *v = chain_at(e, src->snap);
        if (v != NULL && !v->del) {
            ent_from(db, src, &src->chunk[n++], v);
        }
    }
    htkv_trie_cursor_fini(&c);
    src->q = src->chunk;
    src->end = src->chunk + n;
    src->done = !more;
    *walked = seen;
    return rc;
}

/* The trie cursor's next entry after the keys up to @p last (NULL: none to skip), or NULL. */
static struct hidx_ent *
hot_next(struct trie_cursor *c, const unsigned char *last, uint32_t last_len)
{
    struct hidx_ent *e;
    while ((e = htkv_trie_cursor_next(c)) != NULL && last != NULL &&
           htkv_key_cmp(hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len, last, last_len) <= 0) {
    }
    return e;
}

/* Position @p c and @p w of a merged refill at the source's next key. */
static int
merged_seek(struct htkv_iter *it, struct iter_src *src, struct trie_cursor *c, struct cold_walk *w,
            const struct cold_set *cs, struct shard *sh)
{
    bool resumed = src->last_key != NULL;
    const unsigned char *from = resumed ? src->last_key : it->lo;
    uint32_t from_len = resumed ? src->last_len : it->lo_len;
    int rc = resumed           ? htkv_trie_cursor_seek(c, from, from_len)
             : it->prefix_mode ? htkv_trie_cursor_seek_prefix(c, from, from_len)
                               : htkv_trie_cursor_seek(c, from, from_len);
    rc = rc < 0 ? rc : 0;
    int wrc = htkv_cold_walk_start(w, it->db, sh, cs, from, from_len, resumed);
    return rc != 0 ? rc : wrc;
}

/* Add the entry of @p key that the snapshot sees, from the index (@p e, NULL: none) or cold
 * (@p hit, when @p e is NULL and @p cold), to the chunk. */
static void
merged_add(struct htkv_iter *it, struct iter_src *src, uint32_t *n, struct hidx_ent *e,
           const struct cold_hit *hit, bool cold)
{
    if (e != NULL) {
        struct hidx_ent *v = chain_at(e, src->snap);
        if (v != NULL && !v->del) {
            ent_from(it->db, src, &src->chunk[(*n)++], v);
        }
        return;
    }
    HTKV_DASSERT(!cold || hit->version <= src->snap); /* cold.h, rule 2 */
    if (cold && !hit->del && hit->version <= src->snap) {
        src->chunk[(*n)++] = (struct run_ent){ .rec = hit->seg->map + hit->off,
                                               .version = hit->version,
                                               .klen = hit->key_len,
                                               .vflags = hit->val_len };
    }
}

/*
 * Gather the next chunk of a shard with cold keys: its trie and the key indexes of its cold set
 * @p cs merged, a key in memory resolved through its entry, a cold one through its newest
 * version (cold.h). Inside an EBR section.
 */
static int
merged_chunk(struct htkv_iter *it, struct iter_src *src, struct shard *sh,
             const struct cold_set *cs, struct cold_file *bad)
{
    struct trie_cursor c;
    struct cold_walk w;
    htkv_trie_cursor_init(&c, &sh->trie);
    int rc = merged_seek(it, src, &c, &w, cs, sh);
    struct hidx_ent *h = rc == 0 ? hot_next(&c, src->last_key, src->last_len) : NULL;
    uint32_t n = 0, want = src->chunk_want;
    src->chunk_want = want * 2 < ITER_CHUNK ? want * 2 : ITER_CHUNK;
    bool more = rc == 0;
    while (rc == 0 && n < want) {
        const unsigned char *ck = NULL, *key;
        uint32_t cl = 0, klen;
        bool has_cold = htkv_cold_walk_peek(&w, &ck, &cl) == 1;
        if (h == NULL && (rc = htkv_trie_cursor_error(&c)) != 0) {
            break; /* the cursor's stack could not grow: the keys it holds back are unknown */
        }
        if (h == NULL && !has_cold) {
            more = false;
            break;
        }
        const unsigned char *hk = h != NULL ? hidx_ent_rec(h) + REC_HDR_BYTES : NULL;
        int cmp = h == NULL ? 1 : (!has_cold ? -1 : htkv_key_cmp(hk, h->key_len, ck, cl));
        struct hidx_ent *e = NULL;
        struct cold_hit hit = { 0 };
        if (cmp <= 0) { /* in memory: its entry says it all (a cold listing is older) */
            e = h;
            key = hk;
            klen = h->key_len;
            rc = cmp == 0 ? htkv_cold_walk_next(&w, false, &hit, &ck) : 0;
            h = hot_next(&c, NULL, 0);
            rc = rc < 0 ? rc : 0;
        } else {
            rc = htkv_cold_walk_next(&w, true, &hit, &key);
            if (rc < 0) {
                break;
            }
            rc = 0;
            klen = hit.key_len;
            /* Promoted since the trie cursor passed it: its entry holds its versions. */
            e = htkv_hidx_find(&sh->idx, htkv_hash(key, klen, it->db->hash_seed), key, klen);
        }
        if (rc != 0 || !iter_in_bounds(it, key, klen)) {
            more = false;
            break;
        }
        src->last_key = key;
        src->last_len = klen;
        merged_add(it, src, &n, e, &hit, true);
    }
    htkv_trie_cursor_fini(&c);
    *bad = w.bad;
    htkv_cold_walk_end(&w);
    src->q = src->chunk;
    src->end = src->chunk + n;
    src->done = !more;
    return rc;
}

/* Where a source's next refill starts: saved before a chunk that may be gathered again. */
struct src_mark {
    const unsigned char *last_key;
    uint32_t last_len;
    uint32_t chunk_want;
};

static inline struct src_mark
src_mark(const struct iter_src *src)
{
    return (struct src_mark){ src->last_key, src->last_len, src->chunk_want };
}

static inline void
src_rewind(struct iter_src *src, struct src_mark m)
{
    src->last_key = m.last_key;
    src->last_len = m.last_len;
    src->chunk_want = m.chunk_want;
}

/* A merged refill; again from the same key when the cold set changed meanwhile (cold.h, rule
 * 4: an entry that left the trie during the walk may be listed only by the new set). */
static int
refill_merged(struct htkv_iter *it, struct iter_src *src, struct shard *sh,
              const struct cold_set *cs)
{
    for (;;) {
        struct src_mark m = src_mark(src);
        struct cold_file bad = { 0 };
        int rc = merged_chunk(it, src, sh, cs, &bad);
        if (rc == HTKV_ECORRUPT && bad.seg != NULL) {
            rc = htkv_cold_rescue(sh, &bad); /* a key index page failed: its keys into memory */
        }
        const struct cold_set *now = atomic_load_explicit(&sh->cold, memory_order_acquire);
        if (rc != 0 || now == cs) {
            return rc;
        }
        src_rewind(src, m);
        cs = now;
    }
}

/* A refill from the trie of a shard that had no cold set; gathered again, merged, when it got
 * its first one meanwhile (an eviction may have taken keys out of the trie ahead of the walk). */
static int
refill_trie_or_merged(struct htkv_iter *it, struct iter_src *src, struct shard *sh,
                      uint64_t *walked)
{
    struct src_mark m = src_mark(src);
    int rc = refill_from_trie(it, src, sh, walked);
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_acquire);
    if (rc != 0 || cs == NULL) {
        return rc;
    }
    src_rewind(src, m);
    *walked = 0;
    return refill_merged(it, src, sh, cs);
}

/* Trie mode, all read: continue from the shard's run if it is exact now, else from the trie. */
static int
src_refill(struct htkv_iter *it, struct iter_src *src)
{
    struct htkv_db *db = it->db;
    struct shard *sh = db_shard(db, src->shard);
    uint64_t walked = 0;
    int rc = 0;
    HTKV_ASSERT(src->run == NULL && !src->done && src->q == src->end); /* trie mode, all read */
    unsigned slot = htkv_ebr_enter(&db->ebr);
    /* A shard with cold keys merges its trie with its key indexes; a run holds neither. Once
     * set, a shard's cold set is NULL again only after a restore, which no open view sees. */
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_acquire);
    struct shard_run *r = cs == NULL ? htkv_run_acquire(sh) : NULL;
    if (r != NULL) {
        src_use_run(it, src, r);
    } else if (cs != NULL) {
        rc = refill_merged(it, src, sh, cs);
    } else {
        rc = refill_trie_or_merged(it, src, sh, &walked);
    }
    htkv_ebr_exit(&db->ebr, slot);
    if (walked > 0) {
        htkv_run_note(sh, walked);
    }
    return rc;
}

/* Can the merge take element @p x as it is? */
static inline bool
ent_plain(const struct run_ent *x, uint64_t snap)
{
    return x->version <= snap && (x->vflags & (RUN_DEL | RUN_SLOW)) == 0;
}

static inline void
src_set(struct iter_src *src, const struct run_ent *x, uint32_t skip)
{
    src->p = x;
    src->abbrev = htkv_key_abbrev(x->rec + REC_HDR_BYTES, x->klen, skip);
}

/* A run element the snapshot does not see as it is: NULL when the snapshot has the key deleted
 * or absent; else the entry it sees, looked up again in the trie (newer than the snapshot, or a
 * record that failed its check when the run was built: the view keeps that entry linked),
 * described in @p src->one. */
static const struct run_ent *
ent_resolve(struct htkv_iter *it, struct iter_src *src, const struct run_ent *x)
{
    if ((x->vflags & RUN_DEL) != 0 && x->version <= src->snap) {
        return NULL;
    }
    struct htkv_db *db = it->db;
    unsigned slot = htkv_ebr_enter(&db->ebr);
    struct hidx_ent *v =
        trie_entry_at(db_shard(db, src->shard), x->rec + REC_HDR_BYTES, x->klen, src->snap);
    if (v != NULL) {
        ent_from(db, src, &src->one, v);
    }
    htkv_ebr_exit(&db->ebr, slot);
    HTKV_DASSERT(v == NULL || src->one.klen == x->klen);
    return v != NULL ? &src->one : NULL;
}

/* src_next() for the rest: refills, tombstones, elements the snapshot does not see as they are,
 * records that failed their check. */
static int
src_next_slow(struct htkv_iter *it, struct iter_src *src)
{
    for (;;) {
        if (src->q == src->end) {
            if (src->done) {
                return 0;
            }
            int rc = src_refill(it, src);
            if (rc < 0) {
                return rc;
            }
            continue;
        }
        const struct run_ent *x = src->q++;
        /* A trie chunk holds what the snapshot sees (invariant 6). */
        HTKV_DASSERT(src->run != NULL || x->version <= src->snap);
        if (ent_plain(x, src->snap) || src->run == NULL) {
            src_set(src, x, it->skip); /* trie mode: resolved already (RUN_SLOW: corrupt) */
            return 1;
        }
        const struct run_ent *y = ent_resolve(it, src, x);
        if (y != NULL) {
            src_set(src, y, it->skip);
            return 1;
        }
    }
}

/* Advance source @p src to its next element: 1 = it has one, 0 = it ended, or an error. */
static inline int
src_next(struct htkv_iter *it, struct iter_src *src)
{
    const struct run_ent *x = src->q;
    if (HTKV_LIKELY(x < src->end && ent_plain(x, src->snap))) {
        src->q = x + 1;
        /* The key bytes are the one load per key outside the elements: fetch them ahead. */
        __builtin_prefetch(x[src->end - x > 8 ? 8 : 0].rec + REC_HDR_BYTES);
        src_set(src, x, it->skip);
        return 1;
    }
    return src_next_slow(it, src);
}

/* Is the current key of source @p a before that of @p b? Two sources never hold the same key
 * (a key lives in one shard), so the full comparison runs only on equal abbreviations. */
static inline bool
heap_less(const struct htkv_iter *it, uint32_t a, uint32_t b)
{
    const struct iter_src *sa = &it->src[a], *sb = &it->src[b];
    if (HTKV_LIKELY(sa->abbrev != sb->abbrev)) {
        return sa->abbrev < sb->abbrev;
    }
    const struct run_ent *x = sa->p, *y = sb->p;
    uint32_t k = it->skip + 8;
    uint32_t xl = x->klen > k ? x->klen - k : 0, yl = y->klen > k ? y->klen - k : 0;
    if (xl == 0 || yl == 0) {
        /* Equal up to the end of one of them: the shorter key comes first. */
        return x->klen < y->klen;
    }
    return htkv_key_cmp(x->rec + REC_HDR_BYTES + k, xl, y->rec + REC_HDR_BYTES + k, yl) < 0;
}

static inline void
heap_down(struct htkv_iter *it, uint32_t i)
{
    HTKV_DASSERT(i < it->nheap && it->nheap <= it->nsrc);
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < it->nheap && heap_less(it, it->heap[l], it->heap[m])) {
            m = l;
        }
        if (r < it->nheap && heap_less(it, it->heap[r], it->heap[m])) {
            m = r;
        }
        if (m == i) {
            return;
        }
        uint32_t t = it->heap[i];
        it->heap[i] = it->heap[m];
        it->heap[m] = t;
        i = m;
    }
}

/* The source with the smallest current key among heap[0, nheap) (linear mode), and its slot. */
static inline uint32_t
linear_min(const struct htkv_iter *it, uint32_t *at)
{
    uint32_t b = 0;
    HTKV_DASSERT(it->nheap > 0 && it->nheap <= it->nsrc && it->nsrc <= ITER_LINEAR_MAX);
    for (uint32_t k = 1; k < it->nheap; k++) {
        bool less = it->cur[k] != it->cur[b] ? it->cur[k] < it->cur[b]
                                             : heap_less(it, it->heap[k], it->heap[b]);
        b = less ? k : b;
    }
    *at = b;
    return it->heap[b];
}

static int
iter_build_heap(struct htkv_iter *it)
{
    it->nheap = 0;
    for (uint32_t i = 0; i < it->nsrc; i++) {
        int rc = src_next(it, &it->src[i]);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            if (it->nsrc <= ITER_LINEAR_MAX) {
                it->cur[it->nheap] = it->src[i].abbrev;
            }
            it->heap[it->nheap++] = i;
        }
    }
    for (uint32_t i = it->nheap / 2; it->nsrc > ITER_LINEAR_MAX && i > 0; i--) {
        heap_down(it, i - 1);
    }
    return 0;
}

/* Start the @p n sources of @p it (one per shard, at view @p view's snapshots): nothing read
 * yet. */
static void
iter_init_sources(struct htkv_iter *it, const struct htkv_view *view, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct iter_src *s = &it->src[i];
        s->p = s->q = s->end = NULL;
        s->abbrev = 0;
        s->snap = view->snap[i];
        s->run = NULL;
        s->shard = i;
        s->done = false;
        s->last_key = NULL;
        s->last_len = 0;
        s->bad_seg = NULL;
        s->bad_off = 0;
        s->chunk_want = ITER_CHUNK_FIRST;
    }
    it->nsrc = n;
}

/* A shard whose index holds a record with damaged key bytes (shard.h: damaged_seg): the
 * iterator's first htkv_iter_next() answers HTKV_ECORRUPT. After htkv_shard_trie_ensure(). */
static void
iter_check_keys(struct htkv_iter *it, const struct shard *sh)
{
    if (sh->damaged_seg != 0 && it->damaged == NULL) {
        it->damaged = sh;
    }
}

/* The first htkv_iter_next() of an iterator over a shard with a damaged key. */
static int
iter_damaged(struct htkv_iter *it)
{
    const struct shard *sh = it->damaged;
    htkv_set_error("%s/%012llu.seg: the key of the record at offset %u was damaged (it no longer "
                   "hashes as its hint file says): ordered queries of shard %u cannot place it",
                   sh->dir, (unsigned long long)sh->damaged_seg, sh->damaged_off, sh->id);
    it->err = HTKV_ECORRUPT;
    return it->err;
}

/* Has a shard of @p db cold keys (a cold set)? Then no merge path serves its queries. */
static bool
iter_cold(struct htkv_db *db)
{
    for (uint32_t i = 0; db->env.budget_share != 0 && i < db->shard_count; i++) {
        if (atomic_load_explicit(&db_shard(db, i)->cold, memory_order_acquire) != NULL) {
            return true;
        }
    }
    return false;
}

static int
iter_create(struct htkv_db *db, struct htkv_view *view, bool own_view, bool prefix_mode,
            const void *lo, size_t lo_len, const void *hi, size_t hi_len, htkv_iter **out)
{
    uint32_t n = db->shard_count;
    int rc = -ENOMEM;
    /* The callers checked the bounds (iter_args()) and opened or were given a view of db. */
    HTKV_ASSERT(view->db == db && n > 0);
    HTKV_ASSERT(lo_len <= HTKV_KEY_MAX && hi_len <= HTKV_KEY_MAX && (hi_len == 0 || !prefix_mode));
    struct htkv_iter *it = htkv_mem_calloc(1, sizeof(*it));
    if (it == NULL) {
        goto fail;
    }
    it->db = db;
    it->view = view;
    it->own_view = own_view;
    it->prefix_mode = prefix_mode;
    it->nsrc = 0; /* n once every source is initialised (htkv_iter_destroy() releases them) */
    it->src = htkv_mem_alloc(n * sizeof(*it->src));
    it->heap = htkv_mem_alloc(n * sizeof(*it->heap));
    it->lo = htkv_mem_alloc(lo_len + 1);
    it->hi = hi_len > 0 ? htkv_mem_alloc(hi_len) : NULL;
    if (it->src == NULL || it->heap == NULL || it->lo == NULL || (hi_len > 0 && it->hi == NULL)) {
        goto fail;
    }
    if (lo_len > 0) {
        memcpy(it->lo, lo, lo_len);
    }
    it->lo_len = (uint32_t)lo_len;
    if (hi_len > 0) {
        memcpy(it->hi, hi, hi_len);
    }
    it->hi_len = (uint32_t)hi_len;
    /* Keys in bounds share the prefix; in a range [lo, hi) they share lo's and hi's common
     * leading bytes (an interval of byte strings keeps the prefix of its two ends). */
    if (prefix_mode) {
        it->skip = it->lo_len;
    } else if (hi_len > 0) {
        uint32_t k = 0;
        while (k < lo_len && k < hi_len && it->lo[k] == it->hi[k]) {
            k++;
        }
        it->skip = k;
    }
    iter_init_sources(it, view, n);
    for (uint32_t i = 0; i < n; i++) {
        rc = htkv_shard_trie_ensure(db_shard(db, i));
        if (rc != 0) {
            goto fail;
        }
        if (atomic_load_explicit(&db_shard(db, i)->cold, memory_order_acquire) == NULL) {
            htkv_run_refresh(db_shard(db, i)); /* a shard with cold keys reads no run */
        }
        iter_check_keys(it, db_shard(db, i));
    }
    htkv_path_refresh(db);
    unsigned slot = htkv_ebr_enter(&db->ebr);
    struct merge_path *path = iter_cold(db) ? NULL : htkv_path_acquire(db);
    htkv_ebr_exit(&db->ebr, slot);
    if (path != NULL) {
        iter_use_path(it, path);
    } else if ((rc = iter_build_heap(it)) != 0) {
        goto fail;
    }
    *out = it;
    return 0;

fail:
    if (it != NULL) {
        it->own_view = own_view;
        htkv_iter_destroy(it);
    } else if (own_view) {
        view_close(view);
    }
    return rc;
}

static int
iter_args(const void *a, size_t alen, const void *b, size_t blen, htkv_iter **out)
{
    if (out == NULL) {
        return htkv_einval(__func__);
    }
    *out = NULL;
    if ((a == NULL && alen > 0) || (b == NULL && blen > 0)) {
        return htkv_einval(__func__);
    }
    if (alen > HTKV_KEY_MAX || blen > HTKV_KEY_MAX) {
        return HTKV_ETOOBIG;
    }
    return 0;
}

static int
db_iter(htkv_db *db, bool prefix_mode, const void *a, size_t alen, const void *b, size_t blen,
        htkv_iter **out)
{
    int rc = iter_args(a, alen, b, blen, out);
    if (rc != 0 || db == NULL) {
        return rc != 0 ? rc : -EINVAL;
    }
    if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
        return HTKV_ECLOSED;
    }
    struct htkv_view *v;
    rc = view_open(db, &v);
    if (rc != 0) {
        return rc;
    }
    return iter_create(db, v, true, prefix_mode, a, alen, b, blen, out);
}

int
htkv_get_prefix(htkv_db *db, const void *prefix, size_t plen, htkv_iter **out)
{
    return db_iter(db, true, prefix, plen, NULL, 0, out);
}

int
htkv_scan(htkv_db *db, const void *start, size_t slen, const void *end, size_t elen,
          htkv_iter **out)
{
    return db_iter(db, false, start, slen, end, elen, out);
}

int
htkv_view_get_prefix(htkv_view *v, const void *prefix, size_t plen, htkv_iter **out)
{
    int rc = iter_args(prefix, plen, NULL, 0, out);
    if (rc != 0 || v == NULL) {
        return rc != 0 ? rc : -EINVAL;
    }
    return iter_create(v->db, v, false, true, prefix, plen, NULL, 0, out);
}

int
htkv_view_scan(htkv_view *v, const void *start, size_t slen, const void *end, size_t elen,
               htkv_iter **out)
{
    int rc = iter_args(start, slen, end, elen, out);
    if (rc != 0 || v == NULL) {
        return rc != 0 ? rc : -EINVAL;
    }
    return iter_create(v->db, v, false, false, start, slen, end, elen, out);
}

int
htkv_iter_set_limit(htkv_iter *it, uint64_t limit)
{
    if (it == NULL) {
        return htkv_einval(__func__);
    }
    it->limit = limit == 0 ? 0 : it->returned + limit;
    return 0;
}

/* Hand element @p x to the caller of htkv_iter_next(). */
static inline void
iter_emit(struct htkv_iter *it, const struct run_ent *x, const void **key, size_t *klen,
          const void **val, size_t *vlen)
{
    const unsigned char *k = x->rec + REC_HDR_BYTES;
#ifdef HTKV_DEBUG
    /* Invariant 2, and the bounds: [lo, hi) or the prefix. */
    HTKV_DASSERT(iter_in_bounds(it, k, x->klen));
    HTKV_DASSERT(it->prefix_mode || htkv_key_cmp(k, x->klen, it->lo, it->lo_len) >= 0);
    HTKV_DASSERT(it->prev_key == NULL || htkv_key_cmp(k, x->klen, it->prev_key, it->prev_len) > 0);
    it->prev_key = k;
    it->prev_len = x->klen;
#endif
    if (key != NULL) {
        *key = k;
    }
    if (klen != NULL) {
        *klen = x->klen;
    }
    if (val != NULL) {
        *val = k + x->klen;
    }
    if (vlen != NULL) {
        *vlen = x->vflags & RUN_VLEN_MASK;
    }
    it->last_version = x->version;
    it->returned++;
}

/* The record @p src met that failed its check ends the iteration: HTKV_ECORRUPT from now on. */
static int
iter_corrupt(struct htkv_iter *it, const struct iter_src *src)
{
    HTKV_ASSERT(src->bad_seg != NULL); /* RUN_SLOW is set only where bad_seg is */
    htkv_set_error("%s: checksum mismatch in record at offset %u", src->bad_seg->path,
                   src->bad_off);
    it->err = HTKV_ECORRUPT;
    return it->err;
}

/* htkv_iter_next() in path mode: no comparison, the path names the shard of each key. */
static int
path_next(struct htkv_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    const uint8_t *path = it->path->path;
    while (it->ppos < it->pend) {
        HTKV_DASSERT(path[it->ppos] < it->nsrc);
        struct iter_src *src = &it->src[path[it->ppos++]];
        HTKV_DASSERT(src->q < src->end); /* the path and the runs' bounds agree */
        const struct run_ent *x = src->q++;
        if (HTKV_UNLIKELY(!ent_plain(x, src->snap))) {
            x = ent_resolve(it, src, x);
            if (x == NULL) {
                continue;
            }
            if ((x->vflags & RUN_SLOW) != 0) {
                return iter_corrupt(it, src);
            }
        }
        HTKV_DASSERT(x->version <= src->snap);
        iter_emit(it, x, key, klen, val, vlen);
        return 1;
    }
    return 0;
}

int
htkv_iter_next(htkv_iter *it, const void **key, size_t *klen, const void **val, size_t *vlen)
{
    if (it == NULL) {
        return htkv_einval(__func__);
    }
    if (it->err != 0) {
        return it->err;
    }
    if (HTKV_UNLIKELY(it->damaged != NULL)) {
        return iter_damaged(it);
    }
    if (it->limit != 0 && it->returned >= it->limit) {
        return 0;
    }
    if (it->path != NULL) {
        return path_next(it, key, klen, val, vlen);
    }
    if (it->nheap == 0) {
        return 0;
    }
    uint32_t at = 0;
    uint32_t top = it->nsrc <= ITER_LINEAR_MAX ? linear_min(it, &at) : it->heap[0];
    struct iter_src *src = &it->src[top];
    const struct run_ent *x = src->p;
    if (HTKV_UNLIKELY((x->vflags & RUN_SLOW) != 0)) {
        return iter_corrupt(it, src);
    }
    HTKV_DASSERT(x->version <= src->snap); /* invariant 6 */
    iter_emit(it, x, key, klen, val, vlen);
    /* Advance the source; the record just returned stays readable (it is in a mapping). */
    int rc = src_next(it, src);
    if (rc < 0) {
        it->err = rc;
        return 1; /* the current item is good; the error comes with the next call */
    }
    if (it->nsrc <= ITER_LINEAR_MAX) {
        HTKV_DASSERT(at < it->nheap);
        if (rc == 0) {
            it->nheap--;
            it->heap[at] = it->heap[it->nheap];
            it->cur[at] = it->cur[it->nheap];
        } else {
            it->cur[at] = src->abbrev;
        }
        return 1;
    }
    if (rc == 0) {
        it->heap[at] = it->heap[--it->nheap];
    }
    if (it->nheap > 0) {
        heap_down(it, 0);
    }
    return 1;
}

uint64_t
htkv_iter_version(const htkv_iter *it)
{
    return it == NULL ? 0 : it->last_version;
}

void
htkv_iter_destroy(htkv_iter *it)
{
    if (it == NULL) {
        return;
    }
    for (uint32_t i = 0; it->src != NULL && i < it->nsrc; i++) {
        htkv_run_release(it->src[i].run);
    }
    if (it->path != NULL) {
        htkv_path_release(it->path);
    } else if (it->returned > 0) {
        htkv_path_note(it->db, it->returned); /* merged: credit towards a path */
    }
    if (it->own_view && it->view != NULL) {
        view_close(it->view);
    }
    htkv_mem_free(it->src);
    htkv_mem_free(it->heap);
    htkv_mem_free(it->lo);
    htkv_mem_free(it->hi);
    htkv_mem_free(it);
}
