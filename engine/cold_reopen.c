/*
 * cold_reopen.c - the memory budget across a clean close: each shard's close.state (closing.h)
 * written at the close, naming the key index files of its cold set and counting the keys whose
 * newest version each segment holds; and at the next open, the key index files recovery took
 * put into the cold set, the entries it loaded from other segments that a taken file shows
 * older dropped, and the counters set (ARCHITECTURE.md, "Reopening after a clean close").
 *
 * Invariants
 *   1. A close names a segment's key index only when it lists every head entry in memory that
 *      points into the segment (closing_listed()): a taken file then lists each key whose newest
 *      version the segment holds.
 *   2. After cold_adopt(), every key is a head entry in memory or cold, never both: an entry
 *      older than a taken file's listing of its key (or equal, in an older segment) is dropped.
 *   3. live_keys and tombstones count each key once: recovery counted the keys it loaded, the
 *      close the keys each taken segment holds the newest version of.
 */
#include "engine/cold_int.h"

#include <unistd.h>

#include "engine/closing.h"

/* Is there a version of @p e's key newer than @p e among the key indexes of @p cs (or the same
 * version in a newer segment)? 1, 0 or HTKV_ECORRUPT (*@p bad: the segment whose key index page
 * failed). */
static int
cold_shadows(const struct cold_set *cs, const struct hidx_ent *e, struct seg **bad)
{
    const unsigned char *key = hidx_ent_rec(e) + REC_HDR_BYTES;
    for (uint32_t i = 0; i < cs->n && cs->f[i].kix->d.max_version >= e->version; i++) {
        struct kix_ent k;
        if (!htkv_kix_may_contain(cs->f[i].kix, e->hash)) {
            continue;
        }
        int rc = htkv_kix_find(cs->f[i].kix, key, e->key_len, e->hash, &k, NULL);
        if (rc == 0 && (k.version > e->version ||
                        (k.version == e->version && cs->f[i].seg->id > e->seg->id))) {
            return 1; /* newer, or its compaction copy in a newer segment (the copy wins) */
        }
        if (rc != 0 && rc != HTKV_ENOTFOUND) {
            *bad = cs->f[i].seg;
            return rc;
        }
    }
    return 0;
}

/* At open, before any reader: forget entry @p e that recovery loaded, an older version of a key
 * that is cold (lock held). */
static void
cold_drop_loaded(struct shard *sh, struct hidx_ent *e)
{
    uint64_t bytes = htkv_align_up(e->rec_bytes, REC_ALIGN);
    atomic_fetch_sub_explicit(&e->seg->live_bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->seg->dead_bytes, bytes, memory_order_relaxed);
    if (e->del) {
        sh->tombstones--;
    } else {
        sh->live_keys--;
    }
    htkv_hidx_remove(&sh->idx, e);
    sh->entry_bytes -= sizeof(*e);
    htkv_mem_free(e); /* no reader yet */
}

/* At open, before any reader: install record @p x of @p s as recovery would have, the newest
 * version of its key so far (lock held). 0 or -ENOMEM. */
static int
cold_load_rec(struct shard *sh, struct seg *s, const struct cold_rec *x)
{
    struct cold_hit h = cold_record_hit(x);
    uint64_t bytes = htkv_align_up(REC_HDR_BYTES + h.key_len + h.val_len, REC_ALIGN);
    struct hidx_ent *old =
        x->newest ? htkv_hidx_find(&sh->idx, x->hash, s->map + x->off + REC_HDR_BYTES, h.key_len)
                  : NULL;
    if (!x->newest || (old != NULL && (old->version > h.version ||
                                       (old->version == h.version && old->seg->id > s->id)))) {
        atomic_fetch_add_explicit(&s->dead_bytes, bytes, memory_order_relaxed);
        return 0;
    }
    int rc = htkv_hidx_reserve(&sh->idx, 1, htkv_shard_retire_table, sh);
    struct hidx_ent *e = rc == 0 ? htkv_shard_ent_new(sh) : NULL;
    if (e == NULL) {
        return -ENOMEM;
    }
    if (old != NULL) {
        cold_drop_loaded(sh, old);
    }
    *e = (struct hidx_ent){ .version = h.version,
                            .hash = x->hash,
                            .seg = s,
                            .off = h.off,
                            .rec_bytes = REC_HDR_BYTES + h.key_len + h.val_len,
                            .key_len = h.key_len,
                            .del = h.del,
                            .checked = 1 }; /* cold_records() checked it */
    struct hidx_ent *was = htkv_hidx_install(&sh->idx, e, &rc, htkv_shard_retire_table, sh);
    HTKV_ASSERT(rc == 0 && was == NULL);
    atomic_fetch_add_explicit(&s->live_bytes, bytes, memory_order_relaxed);
    if (h.del) {
        sh->tombstones++;
    } else {
        sh->live_keys++;
    }
    return 0;
}

/*
 * At open, before any reader: a page of the key index recovery took for @p s failed its check.
 * Take @p s back out of the cold set and load its records as recovery does for a segment
 * without one (its byte counts recounted). Lock held. 0, -ENOMEM or HTKV_ECORRUPT (a record of
 * @p s fails: the segment is damaged, and the open fails as recovery would have).
 */
static int
cold_untake(struct shard *sh, struct seg *s)
{
    htkv_log(&sh->env->log, HTKV_LOG_WARN,
             "%s: a page of its key index fails its check (%s); loading its keys", s->path,
             htkv_last_error());
    int rc = cold_set_replace(sh, NULL, 0, s);
    if (rc != 0) {
        return rc;
    }
    htkv_kix_free(s->kix); /* no reader yet */
    s->kix = NULL;
    s->kix_upto = 0;
    s->cold_vals = s->cold_dels = 0;
    atomic_store_explicit(&s->live_bytes, 0, memory_order_relaxed);
    atomic_store_explicit(&s->dead_bytes, 0, memory_order_relaxed);
    struct cold_rec *v = NULL;
    size_t n = 0;
    struct seg *failed;
    rc = cold_records(sh, &s, 1, &v, &n, &failed);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = cold_load_rec(sh, s, &v[i]);
    }
    htkv_mem_free(v);
    return rc;
}

/* Drop each entry recovery loaded whose key a listing of the cold set shows newer. 0, or
 * HTKV_ECORRUPT with *@p bad (a key index page failed). Lock held, no reader yet. */
static int
cold_shadow_pass(struct shard *sh, struct seg **bad)
{
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
    for (uint64_t i = 0; cs != NULL && i <= t->mask; i++) {
        uint64_t slot = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        struct hidx_ent *e = hidx_slot_live(slot) ? hidx_slot_ent(slot) : NULL;
        int rc = e != NULL ? cold_shadows(cs, e, bad) : 0;
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            cold_drop_loaded(sh, e);
        }
    }
    return 0;
}

/*
 * At open, before any reader: put the sealed segments recovery took with their key indexes
 * (closing.h) into @p sh's cold set, and drop each entry recovery loaded from another segment
 * whose key a listing shows newer (a compaction copy in a newer segment holds an older
 * version; an index that was not taken holds what it described in memory): that key is cold.
 * A set's listings are newest first, so only entries older than a file's newest version are
 * looked up at all. Lock held. 0 or -ENOMEM (nothing taken: the files stay in memory unused).
 */
int
cold_adopt(struct shard *sh)
{
    struct seg **add = htkv_mem_alloc((sh->nsegs ? sh->nsegs : 1) * sizeof(*add));
    if (add == NULL) {
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < sh->nsegs; i++) {
        if (sh->segs[i]->kix != NULL) {
            add[n++] = sh->segs[i];
        }
    }
    int rc = n > 0 ? cold_set_replace(sh, add, n, NULL) : 0;
    htkv_mem_free(add);
    if (rc != 0 || n == 0) {
        return rc;
    }
    struct seg *bad = NULL;
    while ((rc = cold_shadow_pass(sh, &bad)) == HTKV_ECORRUPT) {
        rc = cold_untake(sh, bad); /* then the whole pass again, with the set it left */
        if (rc != 0) {
            return rc;
        }
    }
    /* The keys whose newest version a taken segment holds are its cold keys (the close counted
     * them); recovery counted the keys it loaded. */
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    sh->cold_keys = 0;
    for (uint32_t i = 0; i < cs->n; i++) {
        const struct seg *g = cs->f[i].seg;
        sh->live_keys += g->cold_vals;
        sh->tombstones += g->cold_dels;
        sh->cold_keys += (uint64_t)g->cold_vals + g->cold_dels;
    }
    sh->cold_at_open = sh->cold_keys;
    return 0;
}

/* closing_heads()'s mark of a segment holding a head its key index does not list. */
#define CLOSING_UNLISTED 0x80000000u

/* Does its segment's key index list head entry @p e? Not one published after the index was
 * written (a record staged when the segment was sealed), nor one left out for its damaged key
 * bytes: such a segment's file must not be taken, or that head would be lost. */
static bool
closing_listed(const struct hidx_ent *e)
{
    return atomic_load_explicit(&e->ref, memory_order_relaxed) != COLD_REF_KEEP && cold_listed(e);
}

/* Count into c->segs[] the head entries in memory that point into each of @p sh's segments, and
 * mark (CLOSING_UNLISTED) those whose key index does not list one. */
static void
closing_heads(const struct shard *sh, struct closing *c)
{
    struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t slot = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (!hidx_slot_live(slot)) {
            continue;
        }
        const struct hidx_ent *e = hidx_slot_ent(slot);
        size_t lo = htkv_shard_seg_index(sh, e->seg->id);
        if (lo < sh->nsegs && sh->segs[lo] == e->seg) {
            if (e->del) {
                c->segs[lo].heads_dels++;
            } else {
                c->segs[lo].heads_vals++;
            }
            if (e->seg->kix != NULL && !e->seg->cold_out && !closing_listed(e)) {
                c->segs[lo].flags |= CLOSING_UNLISTED;
            }
        }
    }
}

/* The state of @p sh as the clean close of @p m leaves it (closing.h), into @p c. 0 or -ENOMEM. */
static int
closing_of(const struct shard *sh, const struct manifest *m, struct closing *c)
{
    *c = (struct closing){ .shard = sh->id,
                           .man_number = m->number,
                           .man_bytes = m->file_bytes,
                           .applied = m->version_applied,
                           .nsegs = (uint32_t)sh->nsegs };
    c->segs = htkv_mem_calloc(sh->nsegs ? sh->nsegs : 1, sizeof(*c->segs));
    if (c->segs == NULL) {
        return -ENOMEM;
    }
    closing_heads(sh, c);
    for (size_t i = 0; i < sh->nsegs; i++) {
        const struct seg *s = sh->segs[i];
        bool kix = s->kix != NULL && !s->cold_out && (c->segs[i].flags & CLOSING_UNLISTED) == 0;
        c->segs[i] = (struct closing_seg){
            .id = s->id,
            .tail = s->tail,
            .records = s->records,
            .max_version = s->max_version,
            .live_bytes = atomic_load_explicit(&s->live_bytes, memory_order_relaxed),
            .dead_bytes = atomic_load_explicit(&s->dead_bytes, memory_order_relaxed),
            .kix_crc = kix ? s->kix->hdr_crc : 0,
            .flags = (kix ? CLOSING_KIX : 0) | (s->hint_tail != 0 ? CLOSING_HINT : 0),
            .heads_vals = c->segs[i].heads_vals + s->cold_vals,
            .heads_dels = c->segs[i].heads_dels + s->cold_dels
        };
    }
    return 0;
}

void
htkv_cold_record_close(struct htkv_db *db)
{
    if (db->cfg.memory_budget_bytes == 0 || db->read_only) {
        return;
    }
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        struct closing c;
        int rc = closing_of(sh, db->man, &c);
        rc = rc == 0 ? htkv_closing_write(sh->dir, &c) : rc;
        if (rc != 0) {
            htkv_log(&sh->env->log, HTKV_LOG_WARN,
                     "shard %u: close state not written (%s): the next open loads every key",
                     sh->id, htkv_strerror(rc));
        }
        htkv_closing_free(&c);
    }
}
