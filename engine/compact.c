/*
 * compact.c - compaction: rewrite the live records of segments with much garbage, then drop them.
 *
 * Design. A pass works shard by shard on *victims*: sealed segments whose garbage ratio
 * (dead / (live + dead) bytes) reaches compaction_min_garbage_ratio, or, for htkv_compact_now(),
 * every sealed segment with any garbage (the active segment is sealed first so that it can be
 * compacted too). A victim is read in steps of COMPACT_STEP_BYTES under its shard's lock, so
 * writers of the shard wait at most one step and readers never wait. For each record of a step:
 *
 *   - a record that is not the head of its key in the index is garbage and is skipped, unless the
 *     head is not published yet (readers still see an older version: the victim waits);
 *   - a live head is appended, with its own version and type, to the shard's active segment and
 *     the index (and trie) entry is replaced by one pointing at the copy; the reader that still
 *     holds the old entry reads the same bytes from the victim, which stays mapped (below);
 *   - a tombstone head in the shard's oldest segment, at or below the pass's fence (below),
 *     is dropped from disk and from the index: every older record of its key was written
 *     before it (a copy is only ever made of a head), so it lies in this segment or an older
 *     one, and none of those remain after the drop. A newer tombstone is copied like a live
 *     head: the change feed reports every version above the fence, deletes included.
 *
 * Because the copies are made under the lock from the head entry, an update that races with
 * compaction simply becomes the new head: compaction never writes an older version over a newer
 * one. Recovery keeps the highest version of each key whatever the segment order, so the copies
 * (which may be older than records before them) are safe at any point.
 *
 * Drop sequence of a victim (each step durable before the next):
 *
 *     copy live records --> fdatasync the copies --> MAN_SEG_DROP --> unlink the file
 *
 * A crash before the drop edit leaves duplicates (the same version twice: either wins); after
 * it, the file is an orphan that the next open removes.
 *
 * Batches. A batch that spans shards is applied by recovery only when each of its parts is found
 * committed; dropping a victim would remove one part. So a pass first fences: every batch with a
 * version <= W (the last version assigned when the pass began) has finished appending in every
 * shard once each shard's lock has been taken once, and is durable once each shard's active
 * segment is fdatasynced; then MAN_BATCH_FLOOR W is recorded. Recovery treats a batch <= the
 * floor as complete. A victim holding a batch record above the floor is left for a later pass.
 *
 * Readers and views. The victim leaves the shard's segment list under the lock, but its mapping
 * stays valid while anything may still read it: lock-free readers (EBR), in-flight fdatasyncs
 * started when it was active (io_pins), and views opened before the drop, which may read older
 * versions through it (a *zombie* segment, released when the last such view closes).
 *
 * Invariants
 *   1. A segment is dropped from the manifest only after every live record it held is durable
 *      in another segment of the same shard (or, for a tombstone, nothing older remains).
 *   2. Every record at or below the batch floor belongs to a batch durable in all its shards.
 *   3. A relocated entry hands its chain of older versions and its place in the pending list to
 *      its copy, so views read through the copy exactly what they read before; only published
 *      entries (version <= visible) move, and a tombstone leaves the index only when no open
 *      view can need what is behind it (version <= view_floor).
 *   4. A dropped segment is closed only after EBR, its io_pins and the views that predate the
 *      drop have all let go of it.
 *   5. A pass ends: per shard it takes only victims with ids below the active segment it found
 *      there, so it rewrites each segment that existed then at most once and never its copies.
 *   6. A pass runs with compactor.lock held, a step with its shard's lock held; a step walks a
 *      sealed victim, never the active segment, from SEG_DATA_OFF to exactly its tail, in step
 *      with the offset it reports.
 *   7. The batch floor only rises: a fence's W (the latest version applied) is never below the
 *      floor recorded before (a restore also sets it to at most its own version).
 *   8. A relocated record is its entry's own (same version, same type), and the copy lands at
 *      the active segment's tail.
 */
#include "engine/compact.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "engine/cold.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/rec.h"
#include "engine/snapshot.h"
#include "engine/store.h"
#include "engine/testhook.h"
#include "engine/zombie.h"
#include "uring/ur_fault.h"

/* Bytes of a victim examined per lock hold: 256 KiB is ~30-60 us of copying on this class of
 * machine, the longest a writer of the shard waits for compaction. */
#define COMPACT_STEP_BYTES (256u << 10)

#define hook htkv_compact_hook_call

static uint64_t
seg_garbage(const struct seg *s, double *ratio)
{
    uint64_t live = atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
    uint64_t dead = atomic_load_explicit(&s->dead_bytes, memory_order_relaxed);
    *ratio = live + dead == 0 ? 1.0 : (double)dead / (double)(live + dead);
    return dead;
}

/* Is @p s a victim for this pass? (lock held) */
static bool
is_victim(const struct htkv_db *db, const struct shard *sh, const struct seg *s, bool full)
{
    HTKV_ASSERT(sh->nsegs >= 1); /* a shard always has its active segment */
    if (!s->sealed || s == sh->segs[sh->nsegs - 1]) {
        return false;
    }
    double ratio;
    uint64_t dead = seg_garbage(s, &ratio);
    if (full) {
        /* With tombstones in the shard, every sealed segment: a tombstone can go only once
         * nothing older than its segment remains, so the clean segments before it go too. */
        return dead > 0 || sh->tombstones > 0 ||
               atomic_load_explicit(&s->live_bytes, memory_order_relaxed) == 0;
    }
    return dead > 0 && ratio >= db->cfg.compaction_min_garbage_ratio;
}

/* htkv_compact_now(): seal an active segment with garbage so that the pass can rewrite it. */
static int
seal_active(struct shard *sh)
{
    pthread_mutex_lock(&sh->lock);
    int rc = 0;
    struct seg *s = shard_active(sh);
    if (s != NULL && !sh->failed && s->tail > SEG_DATA_OFF &&
        (atomic_load_explicit(&s->dead_bytes, memory_order_relaxed) > 0 || sh->tombstones > 0)) {
        rc = htkv_shard_new_segment(sh, 0);
        if (rc != 0) {
            rc = htkv_shard_prepare_failed(sh, rc);
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* The batch fence (see the top of the file). Returns 0 and the floor, or an error. */
static int
fence(struct htkv_db *db, uint64_t *floor)
{
    uint64_t w = htkv_versions_latest(&db->ver);
    HTKV_ASSERT(w >= db->man->batch_floor); /* invariant 7 */
    for (uint32_t i = 0; i < db->shard_count; i++) {
        int rc = htkv_shard_sync_force(db_shard(db, i));
        if (rc != 0) {
            return rc;
        }
    }
    hook("fence-synced");
    int rc = htkv_manifest_set_batch_floor(db->man, w);
    if (rc == 0) {
        *floor = w;
    }
    return rc;
}

/*
 * Replace head entry @p e (in the victim) by a copy of its record in the active segment. The
 * copy takes over e's chain of older versions (open views may walk it) and, when @p pend is
 * not SIZE_MAX, e's place in the pending list.
 */
static int
relocate(struct shard *sh, struct hidx_ent *e, const struct rec_hdr *h, size_t pend)
{
    uint64_t size = htkv_rec_size(h->key_len, h->val_len);
    int rc = htkv_shard_limbo_reserve(sh, 2);
    if (rc == 0) {
        rc = htkv_shard_make_room(sh, size);
    }
    if (rc == 0 && atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        rc = htkv_trie_reserve(&sh->trie, 1);
    }
    if (rc != 0) {
        return htkv_shard_prepare_failed(sh, rc);
    }
    struct hidx_ent *n = htkv_mem_alloc_in(sh->arena, sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    sh->entry_bytes += sizeof(*n);
    struct seg *d = shard_active(sh);
    HTKV_ASSERT(d != e->seg);
    /* Invariants 3 and 8: a published head, and the record read is its own. */
    HTKV_ASSERT(h->version == e->version && (h->type == REC_DEL) == (bool)e->del);
    HTKV_ASSERT(h->key_len == e->key_len &&
                e->rec_bytes == REC_HDR_BYTES + h->key_len + h->val_len);
    HTKV_ASSERT(e->version <=
                atomic_load_explicit(&sh->db->ro[sh->id].visible, memory_order_relaxed));
    const unsigned char *key = hidx_ent_rec(e) + REC_HDR_BYTES;
    uint64_t off =
        htkv_seg_append(d, h->type, 0, h->version, key, h->key_len, key + h->key_len, h->val_len);
    HTKV_ASSERT(off + size == d->tail && off <= UINT32_MAX); /* invariant 8 */
    *n = (struct hidx_ent){ .version = e->version,
                            .hash = e->hash,
                            .seg = d,
                            .off = (uint32_t)off,
                            .rec_bytes = e->rec_bytes,
                            .key_len = e->key_len,
                            .del = e->del,
                            .checked = 1 };
    struct hidx_ent *old = htkv_hidx_install(&sh->idx, n, &rc, htkv_shard_retire_table, sh);
    HTKV_ASSERT(rc == 0); /* the key is in the table: no new slot */
    HTKV_ASSERT(old == e);
    /* A reader that just reached e keeps walking e's chain, which stays intact until e is
     * freed (EBR); one that reads the slot from now on walks n's, the same chain. */
    atomic_store_explicit(&n->prev, atomic_load_explicit(&e->prev, memory_order_relaxed),
                          memory_order_release);
    if (pend != SIZE_MAX) {
        htkv_shard_pending_swap(sh, pend, e, n);
    }
    if (atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        void *prev;
        rc = htkv_trie_insert(&sh->trie, n, &prev);
        HTKV_ASSERT(rc == 0);
        HTKV_ASSERT(prev == e);
    }
    uint64_t asize = htkv_align_up(e->rec_bytes, REC_ALIGN);
    atomic_fetch_add_explicit(&d->live_bytes, asize, memory_order_relaxed);
    atomic_fetch_sub_explicit(&e->seg->live_bytes, asize, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->seg->dead_bytes, asize, memory_order_relaxed);
    htkv_shard_mark_dirty(sh);
    htkv_shard_retire_ent(sh, e);
    sh->metrics.compact_bytes_written += size;
    return 0;
}

/* Drop tombstone head @p e, in the shard's oldest segment, from the index. */
static void
drop_tombstone(struct shard *sh, struct hidx_ent *e)
{
    HTKV_ASSERT(e->del);
    HTKV_ASSERT(atomic_load_explicit(&e->prev, memory_order_relaxed) == NULL);
    HTKV_ASSERT(e->version <= sh->view_floor && sh->tombstones > 0); /* invariant 3 */
    HTKV_ASSERT(e->seg == sh->segs[0]);                              /* the oldest segment */
    htkv_hidx_remove(&sh->idx, e);
    if (atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        void *t = htkv_trie_delete(&sh->trie, hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len);
        HTKV_ASSERT(t == e);
    }
    uint64_t asize = htkv_align_up(e->rec_bytes, REC_ALIGN);
    atomic_fetch_sub_explicit(&e->seg->live_bytes, asize, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->seg->dead_bytes, asize, memory_order_relaxed);
    sh->tombstones--;
    sh->metrics.compact_tombstones++;
    htkv_shard_retire_ent(sh, e);
}

enum step_result { STEP_MORE, STEP_DONE, STEP_POSTPONE };

/*
 * One step over victim @p v from *off (lock held): relocate or drop the live heads of up to
 * COMPACT_STEP_BYTES of records. Returns a step_result or a negative error.
 */
static int
compact_step(struct shard *sh, struct seg *v, uint64_t *off, uint64_t floor)
{
    struct htkv_db *db = sh->db;
    /* Invariant 6. */
    HTKV_ASSERT(db_mutex_locked(&sh->lock) && db_mutex_locked(&db->compactor.lock));
    HTKV_ASSERT(v->sealed && v != shard_active(sh) && *off >= SEG_DATA_OFF && *off <= v->tail);
    htkv_shard_prune_to_floor(sh);
    uint64_t visible = atomic_load_explicit(&db->ro[sh->id].visible, memory_order_relaxed);
    uint64_t upto = sh->view_floor < visible ? sh->view_floor : visible;
    bool oldest = sh->segs[0] == v;
    uint64_t budget = COMPACT_STEP_BYTES;
    struct rec_walk w;
    htkv_rec_walk_init(&w, v->map, v->id, *off, v->tail, db->cfg.max_value_bytes);
    while (budget > 0) {
        struct rec_hdr h;
        enum rec_walk_res r = htkv_rec_walk_next(&w, &h);
        if (r == REC_WALK_END) {
            break;
        }
        if (r != REC_WALK_RECORD) {
            htkv_set_error("%s: damaged record at offset %llu; segment not compacted", v->path,
                           (unsigned long long)*off);
            return HTKV_ECORRUPT;
        }
        uint64_t size = w.off - w.at;
        HTKV_DASSERT(w.at == *off && w.off <= v->tail); /* the keys are read at *off */
        if (h.type == REC_SET || h.type == REC_DEL) {
            if ((h.flags & REC_F_BATCH) != 0 && h.version > floor) {
                return STEP_POSTPONE;
            }
            const unsigned char *key = v->map + *off + REC_HDR_BYTES;
            uint64_t hash = htkv_hash(key, h.key_len, db->hash_seed);
            struct hidx_ent *e = htkv_hidx_find(&sh->idx, hash, key, h.key_len);
            if (e != NULL && e->version > visible) {
                /* The key's newest write is not published yet (a group sync is in flight):
                 * readers still see an older version, which may be this very record. */
                return STEP_POSTPONE;
            }
            if (e != NULL && e->seg == v && e->off == *off) {
                size_t pend = SIZE_MAX;
                if (e->version > upto && !htkv_shard_pending_find(sh, e, &pend)) {
                    return STEP_POSTPONE;
                }
                /* Only a tombstone at or below the fence goes: the change feed reports every
                 * version above the floor, and a follower must still learn of this delete. */
                if (e->del && oldest && e->version <= upto && e->version <= floor) {
                    if (htkv_shard_limbo_reserve(sh, 2) != 0) {
                        return -ENOMEM;
                    }
                    drop_tombstone(sh, e);
                } else {
                    int rc = relocate(sh, e, &h, pend);
                    if (rc != 0) {
                        return rc;
                    }
                }
            }
        }
        sh->metrics.compact_bytes_read += size;
        *off = w.off;
        budget = size >= budget ? 0 : budget - size;
    }
    HTKV_ASSERT(*off <= v->tail);
    return *off >= v->tail ? STEP_DONE : STEP_MORE;
}

/* Remove @p v from the shard's list after its MAN_SEG_DROP is durable, then unlink it. */
static void
drop_victim(struct htkv_db *db, struct shard *sh, struct seg *v, struct zombie *z)
{
    htkv_seg_remove_files(&db->env.log, v);
    pthread_mutex_lock(&db->views.lock);
    pthread_mutex_lock(&sh->lock);
    size_t i = 0;
    while (i < sh->nsegs && sh->segs[i] != v) {
        i++;
    }
    HTKV_ASSERT(i < sh->nsegs);
    HTKV_ASSERT(i + 1 < sh->nsegs); /* never the active segment */
    memmove(&sh->segs[i], &sh->segs[i + 1], (sh->nsegs - i - 1) * sizeof(*sh->segs));
    sh->nsegs--;
    sh->metrics.compact_segments++;
    htkv_zombie_retire(db, sh, v, z);
    pthread_mutex_unlock(&sh->lock);
    pthread_mutex_unlock(&db->views.lock);
}

/* Compact victim @p v of @p sh. Returns 1 when it was dropped, 0 when postponed, or an error. */
static int
compact_seg(struct htkv_db *db, struct shard *sh, struct seg *v, uint64_t floor)
{
    uint64_t off = SEG_DATA_OFF;
    /* Its cold keys come back into memory and it leaves the cold set (cold.h, rule 4), so that
     * the steps find every live record's entry in the index. */
    int rc = htkv_cold_release_seg(db, sh, v);
    if (rc != 0) {
        return rc;
    }
    do {
        if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
            return HTKV_ECLOSED;
        }
        pthread_mutex_lock(&sh->lock);
        rc = sh->failed ? HTKV_EFAILED : compact_step(sh, v, &off, floor);
        if (db->env.budget_share != 0) {
            db->env.over_budget(sh); /* the copies leave memory as writes would (cold.h) */
        }
        pthread_mutex_unlock(&sh->lock);
        hook("step");
    } while (rc == STEP_MORE);
    if (rc == STEP_POSTPONE) {
        return 0;
    }
    if (rc != STEP_DONE) {
        return rc;
    }
    HTKV_ASSERT(off == v->tail); /* invariant 6: every record examined */
    /* Allocated now so that nothing can fail once the drop is in the manifest. */
    struct zombie *z = htkv_mem_alloc(sizeof(*z));
    if (z == NULL) {
        return -ENOMEM;
    }
    rc = htkv_shard_sync_force(sh); /* the copies are durable before the victim goes */
    if (rc == 0) {
        hook("copies-synced");
        rc = htkv_manifest_drop_seg(db->man, sh->id, v->id);
    }
    if (rc != 0) {
        htkv_mem_free(z);
        return rc;
    }
    hook("dropped");
    drop_victim(db, sh, v, z);
    return 1;
}

/*
 * Oldest victim of @p sh with an id in (@p after, @p below), or NULL (lock taken). A pass bounds
 * @p below by the shard's active segment when it starts on the shard: its copies go to that
 * segment and to newer ones, which must never become its own victims, or a full pass over a
 * shard with tombstones (every sealed segment is a victim) would chase its own output forever.
 */
static struct seg *
next_victim(struct htkv_db *db, struct shard *sh, uint64_t after, uint64_t below, bool full)
{
    pthread_mutex_lock(&sh->lock);
    struct seg *v = NULL;
    for (size_t i = 0; i < sh->nsegs && v == NULL; i++) {
        struct seg *s = sh->segs[i];
        if (s->id > after && s->id < below && is_victim(db, sh, s, full)) {
            v = s;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return v;
}

/* Id of the active segment of @p sh (every older one is a candidate), or UINT64_MAX. */
static uint64_t
active_id(struct shard *sh)
{
    pthread_mutex_lock(&sh->lock);
    struct seg *s = shard_active(sh);
    uint64_t id = s != NULL ? s->id : UINT64_MAX;
    pthread_mutex_unlock(&sh->lock);
    return id;
}

static bool
any_victim(struct htkv_db *db, bool full)
{
    for (uint32_t i = 0; i < db->shard_count; i++) {
        if (next_victim(db, db_shard(db, i), 0, UINT64_MAX, full) != NULL) {
            return true;
        }
    }
    return false;
}

int
htkv_hints_write(struct htkv_db *db, struct shard *sh, bool active)
{
    if (!db->cfg.hint_files) {
        return 0;
    }
    pthread_mutex_lock(&sh->lock);
    size_t n = sh->nsegs;
    struct seg **todo = n ? htkv_mem_alloc(n * sizeof(*todo)) : NULL;
    size_t k = 0;
    for (size_t i = 0; todo != NULL && i < n; i++) {
        struct seg *s = sh->segs[i];
        bool last = i + 1 == n;
        if ((s->sealed && s->hint_tail == 0) ||
            (last && active && !s->sealed && s->tail > SEG_DATA_OFF && s->hint_tail < s->tail)) {
            todo[k++] = s;
        }
    }
    bool failed = sh->failed;
    pthread_mutex_unlock(&sh->lock);
    if (n > 0 && todo == NULL) {
        return -ENOMEM;
    }
    int rc = 0;
    /* Sealed segments are immutable and only compaction (which holds compactor.lock, as the
     * caller does) or htkv_close() removes them; the active one is written only at close. */
    for (size_t i = 0; i < k && !failed; i++) {
        int wrc = htkv_hint_write(todo[i], db->hash_seed, db->cfg.max_value_bytes);
        if (wrc != 0) {
            htkv_db_log(db, HTKV_LOG_WARN, "%s: no hint written: %s", todo[i]->path,
                        htkv_strerror(wrc));
            rc = rc == 0 ? wrc : rc;
        }
    }
    htkv_mem_free(todo);
    return rc;
}

int
htkv_compact_pass(struct htkv_db *db, bool full, struct compact_result *res)
{
    memset(res, 0, sizeof(*res));
    if (atomic_load(&db->env.failed)) {
        return HTKV_EFAILED;
    }
    if (atomic_load(&db->env.no_space)) {
        return -ENOSPC;
    }
    uint64_t t0 = htkv_now_ns();
    int rc = 0;
    HTKV_ASSERT(db_mutex_locked(&db->compactor.lock)); /* invariant 6 */
    for (uint32_t i = 0; full && i < db->shard_count && rc == 0; i++) {
        rc = seal_active(db_shard(db, i));
    }
    if (rc != 0 || !any_victim(db, full)) {
        return rc;
    }
    uint64_t floor = 0;
    rc = fence(db, &floor);
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        struct shard *sh = db_shard(db, i);
        uint64_t after = 0, below = active_id(sh);
        struct seg *v;
        while (rc == 0 && (v = next_victim(db, sh, after, below, full)) != NULL) {
            after = v->id;
            uint64_t bytes = v->tail - SEG_DATA_OFF;
            rc = compact_seg(db, sh, v, floor);
            if (rc == 1) {
                res->segments++;
                res->bytes_in += bytes;
                rc = 0;
            } else if (rc == 0) {
                res->postponed++;
            }
        }
        /* Invariant 5: segment ids only grow, so the copies stayed at or above the bound. */
        HTKV_ASSERT(rc != 0 || below == UINT64_MAX || below <= active_id(sh));
    }
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        (void)htkv_hints_write(db, db_shard(db, i), false); /* hints are optional: logged */
    }
    res->ns = htkv_now_ns() - t0;
    atomic_fetch_add_explicit(&db->compactor.compactions, 1, memory_order_relaxed);
    return rc;
}

int
htkv_compact_now(htkv_db *db)
{
    if (db == NULL) {
        return htkv_einval(__func__);
    }
    if (db->read_only) {
        return HTKV_EREADONLY;
    }
    unsigned slot;
    int rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    /* Take the pass lock before leaving the call guard: htkv_close() waits for the guard, then
     * for this lock, so the handle outlives the pass. */
    pthread_mutex_lock(&db->compactor.lock);
    db_exit(db, slot);
    struct compact_result r;
    rc = htkv_compact_pass(db, true, &r);
    pthread_mutex_unlock(&db->compactor.lock);
    return rc;
}

/* ---- compactor (compaction_interval_ms > 0) -------------------------------------------------- */

/* One background pass, then the snapshot it may call for. compactor.lock held. Returns whether
 * it dropped segments or failed (either way, run again after the interval). */
static bool
compactor_pass(struct htkv_db *db)
{
    struct compact_result r;
    int rc = htkv_compact_pass(db, false, &r);
    if (rc != 0 && rc != HTKV_ECLOSED) {
        htkv_db_log(db, HTKV_LOG_WARN, "background compaction: %s%s%s", htkv_strerror(rc),
                    htkv_last_error()[0] ? ": " : "", htkv_last_error());
        return true; /* try again after the interval */
    }
    bool dropped = rc == 0 && r.segments > 0;
    if (dropped && db->cfg.emit_snapshot_after_compaction) {
        rc = htkv_snapshot_emit(db);
        if (rc != 0 && rc != HTKV_ECLOSED) {
            htkv_db_log(db, HTKV_LOG_WARN, "snapshot after compaction: %s", htkv_strerror(rc));
        }
    }
    return dropped;
}

/* One background pass. Returns whether it did work: when it did not, the compactor sleeps
 * until a shard publishes a write (periodic.h; a write that races with it going to sleep may
 * leave its garbage to the pass after the next write). */
static bool
compactor_round(void *arg)
{
    struct htkv_db *db = arg;
    pthread_mutex_lock(&db->compactor.lock);
    bool busy = compactor_pass(db), idle_work = false;
    bool closing = atomic_load(&db->closing);
    for (uint32_t i = 0; db->cfg.memory_budget_bytes > 0 && !closing && i < db->shard_count; i++) {
        idle_work = htkv_cold_idle_work(db_shard(db, i)) || idle_work;
    }
    if (idle_work) {
        htkv_mem_give_back(); /* a reading store: its key index builds' memory, now */
    }
    pthread_mutex_lock(&db->views.lock);
    if (db->views.open == 0 && db->views.zombies != NULL) {
        htkv_zombie_release(db, UINT64_MAX); /* those kept for want of memory */
    }
    pthread_mutex_unlock(&db->views.lock);
    busy = busy || idle_work;
    pthread_mutex_unlock(&db->compactor.lock);
    return busy;
}

int
htkv_compactor_start(struct htkv_db *db)
{
    if (db->read_only || db->cfg.compaction_interval_ms == 0) {
        return 0;
    }
    return htkv_periodic_start(&db->compactor.thread, db->cfg.compaction_interval_ms,
                               compactor_round, db);
}
