/*
 * cold.c - the memory budget: eviction of index entries to key index files, ordered walks over
 * cold keys, compaction's release of a segment, gets that bring keys back, and the setup at
 * open. The rules are in cold.h; the cold set, lookups and the rescue of a damaged key index in
 * cold_set.c; the close's state and the open's adoption of the files it names in cold_reopen.c.
 *
 * Eviction runs on the writer's thread, under the shard's lock, after a publish that left the
 * shard above its share of the budget (shard_env.over_budget). It first gives every sealed
 * segment that has none a key index, written from the published head entries that point into
 * it (values and tombstones), then moves a CLOCK hand over the hash table: an entry read since
 * the hand last passed (ref set) gets another round, any other entry that may leave (cold.h,
 * rule 2) leaves, until the shard is 1/8 below its share. A pass that cannot get below the
 * share is not repeated before the shard's memory grew by another 1/8 of it (or a view closed),
 * one that got below the share but not to its target before it grew by 1/64 of it;
 * when the active segment's entries alone take half the share, the shard seals it at its next
 * write so that they can leave too. Compaction steps evict the same way. Gets promote keys read
 * cold twice lately (htkv_cold_touch()).
 */
#include "engine/cold_int.h"

#include <stdlib.h>
#include <unistd.h>

#include "engine/cpus.h"
#include "engine/flat.h"
#include "engine/hash.h"
#include "engine/rec.h"

/* The active segment is sealed early only once it holds this much: smaller segments would cost
 * more in files and manifest edits than their keys cost in memory. */
#define COLD_SEAL_MIN (64u << 10)

/* Slots the CLOCK hand prefetches the entry of ahead of itself. */
#define COLD_CLOCK_AHEAD 16u

/* Bits of a shard's door (8 KiB): see door_seen(). */
#define COLD_DOOR_BITS (1u << 16)

/* Memory the share bounds: entries, hash table, trie and sorted run. Lock held. */
static uint64_t
cold_mem(const struct shard *sh)
{
    return sh->entry_bytes + htkv_hidx_table_bytes(&sh->idx) + htkv_trie_bytes(&sh->trie) +
           htkv_run_bytes(sh);
}

/* ---- ordered walks --------------------------------------------------------------------------- */

/* Read page f->page of @p f's key index into the file's own copy (so that the walk reads exactly
 * what was checked, whatever is written into the file meanwhile). 0, -ENOMEM or HTKV_ECORRUPT
 * (w->bad: the file, for htkv_cold_rescue()). */
static int
walk_read(struct cold_walk *w, struct cold_walk_file *f)
{
    const struct cold_file *cf = &w->cs->f[f - w->f];
    atomic_fetch_add_explicit(&w->sh->kix_page_reads, 1, memory_order_relaxed);
    f->which ^= 1; /* the other copy: a key of the page before may still be compared with */
    int rc = htkv_kix_page_copy(cf->kix, f->page, &f->buf[f->which], &f->cap[f->which], &f->pg);
    if (rc != 0) {
        f->has = false;
        w->bad = rc == HTKV_ECORRUPT ? *cf : (struct cold_file){ 0 };
    }
    return rc;
}

/* Move @p f to its next entry, reading the next page when one ends. 0, -ENOMEM or
 * HTKV_ECORRUPT. */
static int
walk_advance(struct cold_walk *w, struct cold_walk_file *f, const struct kix *k)
{
    while (!htkv_kix_page_next(&f->pg, &f->cur)) {
        HTKV_ASSERT(!f->pg.changed); /* a private copy, checked whole */
        if (f->page + 1 >= k->pages) {
            f->has = false;
            return 0;
        }
        f->page++;
        int rc = walk_read(w, f);
        if (rc != 0) {
            return rc;
        }
    }
    f->has = true;
    return 0;
}

int
htkv_cold_walk_start(struct cold_walk *w, struct htkv_db *db, struct shard *sh,
                     const struct cold_set *cs, const void *key, uint32_t klen, bool after)
{
    *w = (struct cold_walk){ .db = db, .sh = sh, .cs = cs };
    w->f = htkv_mem_calloc(cs->n > 0 ? cs->n : 1, sizeof(*w->f));
    if (w->f == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cs->n; i++) {
        const struct kix *k = cs->f[i].kix;
        struct cold_walk_file *f = &w->f[i];
        if (k->pages == 0) {
            continue;
        }
        f->page = htkv_kix_page_of(k, key, klen);
        int rc = walk_read(w, f);
        while (rc == 0 && (rc = walk_advance(w, f, k)) == 0 && f->has) {
            int c = htkv_key_cmp(f->cur.key, f->cur.key_len, key, klen);
            if (c > 0 || (c == 0 && !after)) {
                break;
            }
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* The file whose current key is smallest, the newest version first among equal keys (a tie:
 * the newer segment, as in lookups); -1 when every file ended. */
static int
walk_min(const struct cold_walk *w)
{
    int m = -1;
    for (uint32_t i = 0; i < w->cs->n; i++) {
        const struct cold_walk_file *f = &w->f[i];
        if (!f->has) {
            continue;
        }
        if (m < 0) {
            m = (int)i;
            continue;
        }
        const struct kix_ent *a = &f->cur, *b = &w->f[m].cur;
        int c = htkv_key_cmp(a->key, a->key_len, b->key, b->key_len);
        if (c < 0 ||
            (c == 0 && (a->version > b->version ||
                        (a->version == b->version && w->cs->f[i].seg->id > w->cs->f[m].seg->id)))) {
            m = (int)i;
        }
    }
    return m;
}

int
htkv_cold_walk_peek(const struct cold_walk *w, const unsigned char **key, uint32_t *klen)
{
    int m = walk_min(w);
    if (m < 0) {
        return 0;
    }
    *key = w->f[m].cur.key;
    *klen = w->f[m].cur.key_len;
    return 1;
}

int
htkv_cold_walk_next(struct cold_walk *w, bool check, struct cold_hit *hit,
                    const unsigned char **key)
{
    int m = walk_min(w);
    if (m < 0) {
        return 0;
    }
    struct seg *s = w->cs->f[m].seg;
    struct kix_ent e = w->f[m].cur;
    int rc = check ? cold_check(w->db, s, &e, e.key, e.key_len) : 0;
    /* The listing (its page changed since its check) or the record: a rescue tells which. */
    w->bad = rc != 0 ? w->cs->f[m] : (struct cold_file){ 0 };
    for (uint32_t i = 0; rc == 0 && i < w->cs->n; i++) { /* past this key in every file */
        struct cold_walk_file *f = &w->f[i];
        while (rc == 0 && f->has &&
               htkv_key_cmp(f->cur.key, f->cur.key_len, e.key, e.key_len) == 0) {
            rc = walk_advance(w, f, w->cs->f[i].kix);
        }
    }
    if (rc != 0) {
        return rc;
    }
    *hit = (struct cold_hit){ .seg = s,
                              .off = e.off,
                              .key_len = e.key_len,
                              .val_len = e.val_len,
                              .version = e.version,
                              .del = e.type == REC_DEL };
    *key = s->map + e.off + REC_HDR_BYTES;
    return 1;
}

void
htkv_cold_walk_end(struct cold_walk *w)
{
    for (uint32_t i = 0; w->f != NULL && i < w->cs->n; i++) {
        htkv_mem_free(w->f[i].buf[0]);
        htkv_mem_free(w->f[i].buf[1]);
    }
    htkv_mem_free(w->f);
    w->f = NULL;
}

/* shard_env.promote: bring @p key's cold entry back into the hash index (lock held). */
static int
cold_promote(struct shard *sh, uint64_t hash, const void *key, uint32_t klen)
{
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    if (cs == NULL || htkv_hidx_find(&sh->idx, hash, key, klen) != NULL) {
        return 0;
    }
    struct cold_hit hit;
    struct cold_file bad = { 0 };
    int rc = cold_find_in(sh->db, sh, cs, hash, key, klen, &hit, &bad);
    if (rc == HTKV_ECORRUPT && bad.seg != NULL) {
        rc = cold_rescue(sh, bad.seg, bad.kix); /* the key may be in memory now: from the rest */
        return rc == 0 ? cold_promote(sh, hash, key, klen) : rc;
    }
    if (rc != 0) {
        return rc == HTKV_ENOTFOUND ? 0 : rc;
    }
    return cold_insert(sh, hash, klen, &hit);
}

/* Promote the key of listing @p e of @p s if its newest version is there (lock held). */
static int
release_key(struct htkv_db *db, struct shard *sh, struct seg *s, const struct kix_ent *e)
{
    uint64_t hash = htkv_hash(e->key, e->key_len, db->hash_seed);
    for (;;) {
        if (htkv_hidx_find(&sh->idx, hash, e->key, e->key_len) != NULL) {
            return 0;
        }
        const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
        struct cold_hit hit;
        struct cold_file bad = { 0 };
        int rc = cold_find_in(db, sh, cs, hash, e->key, e->key_len, &hit, &bad);
        if (rc == HTKV_ECORRUPT && bad.seg != NULL) {
            rc = cold_rescue(sh, bad.seg, bad.kix); /* a page failed: from its records, again */
            if (rc != 0 || bad.seg == s) {
                return rc;
            }
            continue;
        }
        if (rc == 0 && hit.seg == s) {
            rc = cold_insert(sh, hash, e->key_len, &hit);
        }
        return rc == HTKV_ENOTFOUND ? 0 : rc;
    }
}

/* Promote the cold keys of key index page @p i of @p s whose newest version is in @p s (lock
 * held). */
static int
release_page(struct htkv_db *db, struct shard *sh, struct seg *s, uint32_t i)
{
    struct kix_page pg;
    int rc = htkv_kix_page(s->kix, i, &pg);
    if (rc == HTKV_ECORRUPT) {
        return cold_rescue(sh, s, NULL); /* every key it holds, from its records; out of the set */
    }
    struct kix_ent e;
    while (rc == 0 && htkv_kix_page_next(&pg, &e)) {
        rc = release_key(db, sh, s, &e);
    }
    if (rc == 0 && !htkv_kix_page_same(&pg)) {
        rc = cold_rescue(sh, s, NULL); /* a key it held may have been missed: all, from records */
    }
    return rc;
}

int
htkv_cold_release_seg(struct htkv_db *db, struct shard *sh, struct seg *s)
{
    pthread_mutex_lock(&sh->lock);
    bool listed = s->kix != NULL && !s->cold_out;
    /* Its entries stay in memory from now on (cold_may_leave()), and it gets no key index. */
    s->cold_out = true;
    pthread_mutex_unlock(&sh->lock);
    if (!listed) {
        return 0;
    }
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < s->kix->pages; i++) {
        pthread_mutex_lock(&sh->lock);
        rc = release_page(db, sh, s, i);
        pthread_mutex_unlock(&sh->lock);
    }
    pthread_mutex_lock(&sh->lock);
    rc = rc == 0 ? cold_set_replace(sh, NULL, 0, s) : rc;
    if (rc != 0 && cold_in_set(sh, s, NULL)) {
        s->cold_out = false; /* still in the set: its entries may leave again */
    } /* else a rescue took it out (its keys are all in memory): they stay there */
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* ---- key indexes for sealed segments --------------------------------------------------------- */

/* The head entries of one segment, as its key index lists them. */
struct kix_build {
    struct seg *seg;
    struct kix_ent *ents;
    size_t n, cap;
};

static int
build_push(struct kix_build *b, const struct hidx_ent *e)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        struct kix_ent *n = htkv_mem_realloc(b->ents, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        b->ents = n;
        b->cap = cap;
    }
    b->ents[b->n++] = (struct kix_ent){ .key = hidx_ent_rec(e) + REC_HDR_BYTES,
                                        .key_len = e->key_len,
                                        .type = e->del ? REC_DEL : REC_SET,
                                        .val_len = e->rec_bytes - REC_HDR_BYTES - e->key_len,
                                        .off = e->off,
                                        .version = e->version,
                                        .hash = e->hash };
    return 0;
}

/* htkv_shard_key_intact(); an entry whose key bytes are not is marked COLD_REF_KEEP: it never
 * leaves memory, where a read finds it as a damaged twin. Lock held. */
static bool
cold_key_intact(struct shard *sh, struct hidx_ent *e)
{
    if (htkv_shard_key_intact(sh, e)) {
        return true;
    }
    atomic_store_explicit(&e->ref, COLD_REF_KEEP, memory_order_relaxed);
    return false;
}

/* Passes over the hash table read scattered entries and, for a key check, their records' key
 * bytes: fetch the entry COLD_CLOCK_AHEAD slots after @p i, and the key of the one half as far
 * (its entry has arrived by then), so that the misses overlap. */
static inline void
cold_prefetch(const struct hidx_table *t, uint64_t i, bool keys)
{
    uint64_t far =
        atomic_load_explicit(&t->slots[(i + COLD_CLOCK_AHEAD) & t->mask], memory_order_relaxed);
    if (hidx_slot_live(far)) {
        __builtin_prefetch(hidx_slot_ent(far));
    }
    uint64_t near =
        atomic_load_explicit(&t->slots[(i + COLD_CLOCK_AHEAD / 2) & t->mask], memory_order_relaxed);
    if (keys && hidx_slot_live(near)) {
        const struct hidx_ent *e = hidx_slot_ent(near);
        if (!atomic_load_explicit(&e->checked, memory_order_relaxed)) {
            __builtin_prefetch(hidx_ent_rec(e) + REC_HDR_BYTES);
        }
    }
}

/* Collect, in one pass over the hash table, the published heads that point into the
 * sealed segments @p b[0..nb) (ascending ids, all above kix_done_id). Lock held. */
static int
build_collect(struct shard *sh, struct kix_build *b, size_t nb, uint64_t visible)
{
    struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
    for (uint64_t i = 0; i <= t->mask; i++) {
        cold_prefetch(t, i, true);
        uint64_t slot = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (!hidx_slot_live(slot)) {
            continue;
        }
        struct hidx_ent *e = hidx_slot_ent(slot);
        if (e->version > visible || e->seg->id <= sh->kix_done_id ||
            e->seg->id > b[nb - 1].seg->id) {
            continue;
        }
        if (!cold_key_intact(sh, e)) {
            continue; /* damaged key bytes (installed from a hint): only memory finds its twin */
        }
        size_t lo = 0, hi = nb;
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (b[mid].seg->id <= e->seg->id) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        if (b[lo].seg == e->seg) {
            int rc = build_push(&b[lo], e);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* Read back every page of a key index just written: they check and hold the @p n entries of
 * @p ents, and its filter answers "maybe" for each (a filter that missed one would hide it). */
static int
kix_read_back(const struct kix *k, const struct kix_ent *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!htkv_kix_may_contain(k, ents[i].hash)) {
            htkv_set_error("key index of segment %llu: its filter misses entry %zu",
                           (unsigned long long)k->d.seg_id, i);
            return HTKV_ECORRUPT;
        }
    }
    uint64_t count = 0;
    for (uint32_t i = 0; i < k->pages; i++) {
        struct kix_page pg;
        int rc = htkv_kix_page(k, i, &pg);
        if (rc != 0) {
            return rc;
        }
        count += pg.count;
    }
    if (count != n || k->keys != n) {
        htkv_set_error("key index of segment %llu: %llu entries read back, %zu written",
                       (unsigned long long)k->d.seg_id, (unsigned long long)count, n);
        return HTKV_ECORRUPT;
    }
    return 0;
}

/* Write and open the key index of @p b->seg, which lists its head entries at or below @p upto
 * (rule 1), and read it back. 0, or the error of the write, open or read. */
static int
build_write(struct shard *sh, struct kix_build *b, uint64_t upto)
{
    char path[4200];
    htkv_kix_path(path, sizeof(path), b->seg->path);
    struct kix_desc d = { .shard = sh->id, .seg_id = b->seg->id, .seg_tail = b->seg->tail };
    int rc = htkv_kix_write(path, &d, b->ents, b->n);
    struct kix *k = rc == 0 ? htkv_mem_alloc(sizeof(*k)) : NULL;
    if (rc == 0 && k == NULL) {
        rc = -ENOMEM;
    }
    if (rc == 0) {
        rc = htkv_kix_open(path, sh->id, b->seg->id, b->seg->tail, k);
    }
    if (rc == 0 && (rc = kix_read_back(k, b->ents, b->n)) != 0) {
        htkv_kix_close(k);
    }
    if (rc != 0) {
        htkv_mem_free(k);
        (void)unlink(path);
        htkv_log(&sh->env->log, HTKV_LOG_WARN, "%s: key index not written: %s %s", path,
                 htkv_strerror(rc), htkv_last_error());
        return rc;
    }
    b->seg->kix = k;
    b->seg->kix_upto = upto;
    return 0;
}

/* Give each sealed segment of @p sh above kix_done_id a key index (one with no head needs
 * none) and add them to the cold set. Lock held. */
static int
cold_index_sealed(struct shard *sh)
{
    size_t first = 0, last = sh->nsegs - 1; /* segs[last] is active */
    while (first < last && sh->segs[first]->id <= sh->kix_done_id) {
        first++;
    }
    size_t nb = last - first;
    if (nb == 0) {
        return 0;
    }
    struct kix_build *b = htkv_mem_calloc(nb, sizeof(*b));
    struct seg **add = htkv_mem_calloc(nb, sizeof(*add));
    int rc = b != NULL && add != NULL ? 0 : -ENOMEM;
    for (size_t i = 0; rc == 0 && i < nb; i++) {
        b[i].seg = sh->segs[first + i];
    }
    uint64_t visible = atomic_load_explicit(&sh->env->ro[sh->id].visible, memory_order_relaxed);
    rc = rc == 0 ? build_collect(sh, b, nb, visible) : rc;
    size_t nadd = 0;
    for (size_t i = 0; rc == 0 && i < nb; i++) {
        struct seg *g = b[i].seg; /* a compaction victim (cold_out) gets none */
        if (b[i].n > 0 && g->kix == NULL && !g->cold_out &&
            (rc = build_write(sh, &b[i], visible)) == 0) {
            add[nadd++] = b[i].seg;
        }
    }
    if (nadd > 0 && cold_set_replace(sh, add, nadd, NULL) != 0) {
        for (size_t i = 0; i < nadd; i++) { /* not in the set: nothing may leave through it */
            htkv_kix_free(add[i]->kix);
            add[i]->kix = NULL;
        }
        rc = -ENOMEM;
    }
    if (rc == 0) {
        sh->kix_done_id = sh->segs[last - 1]->id;
    }
    for (size_t i = 0; b != NULL && i < nb; i++) {
        htkv_mem_free(b[i].ents);
    }
    htkv_mem_free(b);
    htkv_mem_free(add);
    return rc;
}

/* ---- eviction -------------------------------------------------------------------------------- */

/* May @p e leave memory now (rule 2, but for its key index's say)? Lock held. */
static inline bool
cold_may_leave(const struct hidx_ent *e, uint64_t upto)
{
    return e->seg->kix != NULL && !e->seg->cold_out && e->version <= upto &&
           atomic_load_explicit(&e->prev, memory_order_relaxed) == NULL;
}

static void
cold_evict_one(struct shard *sh, struct hidx_ent *e)
{
    htkv_hidx_remove(&sh->idx, e);
    if (atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        void *t = htkv_trie_delete(&sh->trie, hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len);
        HTKV_ASSERT(t == e);
    }
    if (e->del) {
        e->seg->cold_dels++;
    } else {
        e->seg->cold_vals++;
    }
    htkv_shard_retire_ent(sh, e);
    sh->cold_keys++;
    sh->evictions++;
}

/* Move the CLOCK hand until the shard's memory is at most @p target or the hand went twice
 * around. Returns the head entries seen in the active segment. Lock held. */
static uint64_t
cold_clock(struct shard *sh, uint64_t target)
{
    uint64_t upto = atomic_load_explicit(&sh->env->ro[sh->id].visible, memory_order_relaxed);
    if (sh->view_floor < upto) {
        upto = sh->view_floor;
    }
    const struct seg *active = sh->segs[sh->nsegs - 1];
    struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
    uint64_t in_active = 0, mem = cold_mem(sh);
    for (uint64_t n = 0; n < 2 * (t->mask + 1) && mem > target; n++) {
        cold_prefetch(t, sh->clock_hand, false);
        uint64_t slot =
            atomic_load_explicit(&t->slots[sh->clock_hand++ & t->mask], memory_order_relaxed);
        if (!hidx_slot_live(slot)) {
            continue;
        }
        struct hidx_ent *e = hidx_slot_ent(slot);
        in_active += e->seg == active;
        if (!cold_may_leave(e, upto)) {
            continue;
        }
        uint8_t ref = atomic_load_explicit(&e->ref, memory_order_relaxed);
        if (ref != 0) {
            if (ref != COLD_REF_KEEP) {
                atomic_store_explicit(&e->ref, 0, memory_order_relaxed); /* read: one more round */
            }
            continue;
        }
        if (htkv_shard_limbo_reserve(sh, 2) != 0) {
            break; /* no memory to retire it: it stays */
        }
        if (cold_listed(e)) {
            cold_evict_one(sh, e);
            mem -= sizeof(*e); /* and its trie node: counted again at the end */
        }
    }
    return in_active;
}

/* Has a sealed segment of @p sh not been given its key index yet? Lock held. */
static bool
cold_unindexed(const struct shard *sh)
{
    return sh->nsegs >= 2 && sh->segs[sh->nsegs - 2]->id > sh->kix_done_id;
}

/* After a pass of the hand that left @p sh at @p mem, with @p in_active head entries seen in the
 * active segment: when to try again, and whether to ask for a seal or key indexes (lock held). */
static void
cold_after_pass(struct shard *sh, uint64_t mem, uint64_t in_active)
{
    uint64_t share = sh->env->budget_share;
    const struct seg *a = sh->segs[sh->nsegs - 1];
    bool short_of_target = mem > share - share / 8;
    bool active_pins = in_active * sizeof(struct hidx_ent) >= share / 2 && a->tail >= COLD_SEAL_MIN;
    bool ask = short_of_target && !sh->cold_stuck;
    sh->evict_retry = 0;
    if (ask && (active_pins || cold_unindexed(sh))) {
        /* Entries that cannot leave yet hold most of the share: those of the active segment
         * leave once it is sealed and indexed, those of a sealed segment once it is indexed. A
         * write does both; if none comes, the compactor does (htkv_cold_idle_work()). */
        sh->seal_early = sh->seal_early || active_pins;
        if (!sh->cold_idle) {
            sh->cold_idle = true;
            htkv_periodic_run_soon(sh->env->compactor);
        }
    }
    if (ask && active_pins && mem > share) {
        return; /* the next write seals it: evict again right after */
    }
    if (mem > share) {
        sh->evict_retry = mem + share / 8; /* or sooner, once a view closed */
        sh->evict_floor = sh->view_floor;
    } else if (short_of_target) {
        /* The hand went twice around short of its target, and below the share: not again for
         * each entry a read brings back (two turns over the whole table to evict a few), only
         * after the shard grew by 1/64 of its share. */
        sh->evict_retry = mem + share / 64;
        sh->evict_floor = sh->view_floor;
    }
}

/* Evict @p sh down to 7/8 of its share now (lock held, a segment exists); with @p index, give
 * sealed segments their key index first (file writes: never on a reader's thread,
 * htkv_cold_touch()). Returns the key indexes' 0 or error. */
static int
cold_evict_now(struct shard *sh, bool index)
{
    uint64_t share = sh->env->budget_share;
    int rc = index ? cold_index_sealed(sh) : 0;
    if (rc != 0) {
        htkv_log(&sh->env->log, HTKV_LOG_WARN,
                 "shard %u: over its memory budget, and a key index failed: %s", sh->id,
                 htkv_strerror(rc));
    } else if (index) {
        sh->cold_stuck = false; /* indexes work again: readers may ask the compactor again */
    }
    uint64_t in_active = cold_clock(sh, share - share / 8);
    if (htkv_shard_limbo_reserve(sh, 1) == 0) {
        (void)htkv_hidx_tidy(&sh->idx, htkv_shard_retire_table, sh); /* -ENOMEM: keeps it */
    }
    cold_after_pass(sh, cold_mem(sh), in_active);
    return rc;
}

/* cold_evict_now() once @p sh is over its share, unless an earlier pass fell short and neither
 * the shard grew enough nor a view closed since (lock held). */
static void
cold_evict(struct shard *sh, bool index)
{
    uint64_t share = sh->env->budget_share, mem = cold_mem(sh);
    if (mem <= share || (mem < sh->evict_retry && sh->view_floor == sh->evict_floor) ||
        sh->nsegs == 0) {
        return; /* no segment: no entry either, only the smallest table */
    }
    (void)cold_evict_now(sh, index);
}

bool
htkv_cold_idle_work(struct shard *sh)
{
    pthread_mutex_lock(&sh->lock);
    bool asked = sh->cold_idle && sh->nsegs > 0;
    int rc = asked ? htkv_shard_check_writable(sh) : 0;
    if (asked && rc == 0 && sh->seal_early && sh->segs[sh->nsegs - 1]->records > 0) {
        rc = htkv_shard_make_room(sh, 0); /* seal_early: seals it, opens the next */
        rc = rc != 0 ? htkv_shard_prepare_failed(sh, rc) : 0;
        if (rc != 0) {
            htkv_log(&sh->env->log, HTKV_LOG_WARN,
                     "shard %u: sealing its active segment to evict: %s", sh->id,
                     htkv_strerror(rc));
        }
    }
    if (asked && rc == 0) {
        rc = cold_evict_now(sh, true);
        htkv_shard_reclaim(sh); /* what readers left of the evicted entries */
    }
    /* A request this very eviction made waits for a reader's next one; after a failure, none is
     * made until a write's eviction indexes again (no round per promoting read). */
    sh->cold_idle = false;
    sh->cold_stuck = asked && rc != 0;
    pthread_mutex_unlock(&sh->lock);
    return asked;
}

/* shard_env.over_budget: evict @p sh down to 7/8 of its share (lock held). */
static void
cold_over_budget(struct shard *sh)
{
    cold_evict(sh, true);
}

/* Set bit @p bit of @p sh's door; was it set already? */
static bool
door_bit(struct shard *sh, uint64_t bit)
{
    uint64_t mask = 1ull << (bit & 63);
    _Atomic uint64_t *w = &sh->door[(bit & (COLD_DOOR_BITS - 1)) / 64];
    if ((atomic_load_explicit(w, memory_order_relaxed) & mask) != 0) {
        return true;
    }
    atomic_fetch_or_explicit(w, mask, memory_order_relaxed);
    return false;
}

/* Was the key with @p hash read cold once lately? Marks it read either way (two bits, so that
 * another key's bits answer yes for it about 1 time in 250). The door keeps a key read once, as
 * most keys of a uniform workload are, from taking a hot key's place: only a second read within
 * about COLD_DOOR_BITS / 16 cold reads of the shard promotes it. */
static bool
door_seen(struct shard *sh, uint64_t hash)
{
    bool a = door_bit(sh, hash >> 20), b = door_bit(sh, hash >> 40);
    if (a && b) {
        return true;
    }
    if (atomic_fetch_add_explicit(&sh->door_sets, 1, memory_order_relaxed) + 1 ==
        COLD_DOOR_BITS / 16) {
        for (size_t i = 0; i < COLD_DOOR_BITS / 64; i++) { /* a new period */
            atomic_store_explicit(&sh->door[i], 0, memory_order_relaxed);
        }
        atomic_store_explicit(&sh->door_sets, 0, memory_order_relaxed);
    }
    return false;
}

void
htkv_cold_touch(struct shard *sh, uint64_t hash, const void *key, uint32_t klen)
{
    if (!door_seen(sh, hash) || pthread_mutex_trylock(&sh->lock) != 0) {
        return; /* a writer or compaction holds the shard: the key stays cold this time */
    }
    if (!sh->failed && cold_promote(sh, hash, key, klen) == 0) {
        struct hidx_ent *e = htkv_hidx_find(&sh->idx, hash, key, klen);
        if (e != NULL) {
            atomic_store_explicit(&e->ref, 1, memory_order_relaxed); /* read: a round to stay */
        }
        cold_evict(sh, false); /* the hand only: key indexes are written by writers */
    }
    pthread_mutex_unlock(&sh->lock);
}

/* htkv_cold_setup()'s work: the store, and whether a shard could not take its key indexes. */
struct cold_setup {
    struct htkv_db *db;
    _Atomic int rc;
};

/* Take shard @p i's key indexes and evict it at open (htkv_parallel_for()). */
static void
setup_one(void *ctx, uint32_t i)
{
    struct cold_setup *cs = ctx;
    struct shard *sh = db_shard(cs->db, i);
    pthread_mutex_lock(&sh->lock);
    int rc = cold_adopt(sh);
    if (rc != 0) {
        atomic_store(&cs->rc, rc); /* its cold keys would be missing: the open fails */
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    cold_over_budget(sh);
    htkv_shard_reclaim(sh); /* the evicted entries and old tables: no reader holds them yet */
    pthread_mutex_unlock(&sh->lock);
}

int
htkv_cold_setup(struct htkv_db *db)
{
    uint64_t budget = db->cfg.memory_budget_bytes;
    if (db->read_only || budget == 0) {
        return 0;
    }
    db->env.budget_share = budget / db->shard_count > 0 ? budget / db->shard_count : 1;
    db->env.promote = cold_promote;
    db->env.over_budget = cold_over_budget;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        sh->door = htkv_mem_calloc(COLD_DOOR_BITS / 64, sizeof(*sh->door));
        if (sh->door == NULL) {
            return -ENOMEM;
        }
    }
    struct cold_setup cs = { .db = db };
    htkv_parallel_for(db->shard_count, db->cpus, setup_one, &cs); /* one thread per CPU */
    if (atomic_load(&cs.rc) != 0) {
        return atomic_load(&cs.rc);
    }
    uint64_t evicted = 0;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        evicted += db_shard(db, i)->evictions;
    }
    /* Recovery held every key; what the evictions freed goes back to the system now, so the
     * store's anonymous memory after the open is near its budget, not near that peak. */
    if (evicted > 0) {
        htkv_mem_give_back();
    }
    return 0;
}

void
htkv_cold_stats(struct shard *sh, struct htkv_stats *out)
{
    if (sh->env->budget_share == 0) {
        return;
    }
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    for (uint32_t i = 0; cs != NULL && i < cs->n; i++) {
        out->kix_files++;
        out->kix_bytes += htkv_kix_mem_bytes(cs->f[i].kix);
    }
    out->hot_keys += sh->idx.entries;
    out->cold_keys += sh->cold_keys;
    out->evictions += sh->evictions;
    out->cold_keys_at_open += sh->cold_at_open;
    out->promotions += sh->promotions;
    out->kix_page_reads += atomic_load_explicit(&sh->kix_page_reads, memory_order_relaxed);
    out->bloom_negatives += atomic_load_explicit(&sh->bloom_negatives, memory_order_relaxed);
    out->bloom_false_positives +=
        atomic_load_explicit(&sh->bloom_false_positives, memory_order_relaxed);
}
