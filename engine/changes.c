/*
 * changes.c - the change feed: the commands applied after a version, in version order, read
 * back from the segments (include/htkv/replication.h).
 *
 * Design. The segments are the log: every write is a record with its version, and records stay
 * until compaction drops their segment. htkv_changes_since(v) opens a view (so no segment it
 * will read is closed, and each shard has a snapshot version), takes each shard's segment list
 * and tails under its lock, then walks the records below those tails (immutable) and keeps the
 * puts and deletes with v < version <= the shard's snapshot, skipping batches that recovery did
 * not apply. No compaction pass runs meanwhile (compactor.lock), and every copy an earlier pass
 * made is at or below the floor, so nothing is reported twice. They are sorted
 * by (version, shard, position): a batch's commands come out together, in its own order within a
 * shard. Values are not copied: the feed hands out views into the mappings.
 *
 * What compaction removes. A pass records its fence W as the batch floor in the manifest; every
 * record it can have dropped or copied has a version <= W. So the history after v is complete
 * exactly when v >= the floor; below it the feed answers HTKV_ECOMPACTED. A restore raises the
 * floor to the latest version applied before it, or the snapshot's if higher (the history before
 * it is not in the store), so a consumer of the feed learns of the restore through
 * HTKV_ECOMPACTED and installs a snapshot.
 *
 * Invariants
 *   1. Every command reported was applied, exactly once, and none applied after v up to the
 *      view's instant is missing.
 *   2. Commands come in non-decreasing version order, each with since < version <= the view's
 *      complete version, and no record twice (the items are distinct by shard, segment and
 *      offset).
 *   3. Segments are collected with compactor.lock held, and a shard's are read only below the
 *      tails taken under its lock, within their files; the view keeps their mappings, so an
 *      item's (seg, off) stays readable until htkv_changes_destroy().
 *   4. pos <= count <= cap.
 */
#include <htkv/replication.h>

#include <stdlib.h>

#include "engine/store.h"
#include "engine/view.h"
#include "engine/rec.h"

struct change {
    uint64_t version;
    const struct seg *seg;
    uint32_t off;
    uint32_t shard;
};

struct htkv_changes {
    struct htkv_db *db;
    htkv_view *view;
    struct change *items;
    size_t count, pos, cap;
};

static int
cmp_change(const void *a, const void *b)
{
    const struct change *x = a, *y = b;
    if (x->version != y->version) {
        return x->version < y->version ? -1 : 1;
    }
    if (x->shard != y->shard) {
        return x->shard < y->shard ? -1 : 1;
    }
    if (x->seg->id != y->seg->id) {
        return x->seg->id < y->seg->id ? -1 : 1;
    }
    return (x->off > y->off) - (x->off < y->off);
}

static int
cmp_u64_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Is @p h a record of a batch that was never applied: found incomplete by this open's recovery,
 * or by an earlier one (MAN_BATCH_ABORT: its parts may lie in segments this open took with
 * their key indexes, whose records recovery did not read)? */
static bool
discarded(const struct htkv_db *db, const struct rec_hdr *h)
{
    if ((h->flags & REC_F_BATCH) == 0) {
        return false;
    }
    return (db->recovery.ndiscarded > 0 &&
            bsearch(&h->version, db->recovery.discarded, db->recovery.ndiscarded, sizeof(uint64_t),
                    cmp_u64_key) != NULL) ||
           htkv_manifest_batch_aborted(db->man, h->version);
}

static int
push(struct htkv_changes *c, const struct change *ch)
{
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct change *n = htkv_mem_realloc(c->items, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        c->items = n;
        c->cap = cap;
    }
    HTKV_DASSERT(c->count < c->cap && ch->version >= 1); /* invariant 4 */
    c->items[c->count++] = *ch;
    return 0;
}

/* Collect the records of segment @p s below @p tail with since < version <= snap. */
static int
collect_seg(struct htkv_changes *c, uint32_t shard, const struct seg *s, uint64_t tail,
            uint64_t since, uint64_t snap)
{
    struct htkv_db *db = c->db;
    struct rec_walk w;
    struct rec_hdr h;
    enum rec_walk_res r;
    HTKV_ASSERT(tail >= SEG_DATA_OFF && tail <= s->map_bytes); /* invariant 3 */
    htkv_rec_walk_init(&w, s->map, s->id, SEG_DATA_OFF, tail, db->cfg.max_value_bytes);
    while ((r = htkv_rec_walk_next(&w, &h)) != REC_WALK_END) {
        if (r != REC_WALK_RECORD) {
            htkv_set_error("%s: damaged record at offset %llu", s->path, (unsigned long long)w.at);
            return HTKV_ECORRUPT;
        }
        if ((h.type == REC_SET || h.type == REC_DEL) && h.version > since && h.version <= snap &&
            !discarded(db, &h)) {
            HTKV_DASSERT(w.at >= SEG_DATA_OFF && w.at < tail && w.at <= UINT32_MAX);
            struct change ch = {
                .version = h.version, .seg = s, .off = (uint32_t)w.at, .shard = shard
            };
            int rc = push(c, &ch);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* A segment of a shard as collect_shard() found it under the shard's lock. */
struct seg_at {
    struct seg *seg;
    uint64_t tail;
    uint64_t max_version;
};

static int
collect_shard(struct htkv_changes *c, uint32_t i, uint64_t since)
{
    struct shard *sh = db_shard(c->db, i);
    /* No pass moves records meanwhile (see htkv_changes_since()). */
    HTKV_ASSERT(db_mutex_locked(&c->db->compactor.lock));
    /* Nothing above the view's complete version: in HTKV_SYNC_ALWAYS a shard publishes after
     * its group sync, so a lower version may still be pending in another shard, and a consumer
     * that went on from a higher one would never be told of it. */
    uint64_t snap = htkv_view_shard_snap(c->view, i);
    uint64_t complete = htkv_view_complete(c->view);
    snap = snap < complete ? snap : complete;
    HTKV_ASSERT(complete <= htkv_view_version(c->view));
    pthread_mutex_lock(&sh->lock);
    size_t n = sh->nsegs;
    /* Per segment, read under the lock (writers of the active segment change them under it):
     * its tail and its highest version. */
    struct seg_at *at = n ? htkv_mem_alloc(n * sizeof(*at)) : NULL;
    if (n > 0 && at == NULL) {
        pthread_mutex_unlock(&sh->lock);
        return -ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        at[k] = (struct seg_at){ .seg = sh->segs[k],
                                 .tail = sh->segs[k]->tail,
                                 .max_version = sh->segs[k]->max_version };
    }
    pthread_mutex_unlock(&sh->lock);
    /* The view keeps these segments mapped even if compaction drops them meanwhile. */
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (at[k].max_version > since) {
            rc = collect_seg(c, i, at[k].seg, at[k].tail, since, snap);
        }
    }
    htkv_mem_free(at);
    return rc;
}

int
htkv_changes_since(htkv_db *db, uint64_t version, htkv_changes **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (db == NULL || out == NULL) {
        return htkv_einval(__func__);
    }
    struct htkv_changes *c = htkv_mem_calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    c->db = db;
    int rc = htkv_view_open(db, &c->view);
    if (rc != 0) {
        htkv_mem_free(c);
        return rc;
    }
    /* No compaction pass runs while the segments are collected: every copy a finished pass made
     * is at or below the floor checked here, so none is reported twice. The call guard is held
     * until the lock is, as in htkv_compact_now(), so that htkv_close() waits for this call. */
    unsigned slot = htkv_ebr_enter(&db->ebr);
    if (atomic_load(&db->closing)) {
        htkv_ebr_exit(&db->ebr, slot);
        htkv_changes_destroy(c);
        return HTKV_ECLOSED;
    }
    pthread_mutex_lock(&db->compactor.lock);
    htkv_ebr_exit(&db->ebr, slot);
    if (version < db->man->batch_floor) {
        htkv_set_error("changes after version %llu: compaction kept only those after %llu",
                       (unsigned long long)version, (unsigned long long)db->man->batch_floor);
        rc = HTKV_ECOMPACTED;
    }
    for (uint32_t i = 0; rc == 0 && i < db->shard_count; i++) {
        rc = collect_shard(c, i, version);
    }
    pthread_mutex_unlock(&db->compactor.lock);
    if (rc != 0) {
        htkv_changes_destroy(c);
        return rc;
    }
    if (c->count > 1) {
        qsort(c->items, c->count, sizeof(*c->items), cmp_change);
    }
    for (size_t k = 0; k < c->count; k++) { /* invariant 2 (the loop is empty in release builds) */
        HTKV_DASSERT(c->items[k].version > version &&
                     c->items[k].version <= htkv_view_complete(c->view));
        HTKV_DASSERT(k == 0 || cmp_change(&c->items[k - 1], &c->items[k]) < 0);
    }
    *out = c;
    return 0;
}

int
htkv_changes_next(htkv_changes *c, htkv_command *cmd)
{
    if (c == NULL || cmd == NULL) {
        return htkv_einval(__func__);
    }
    HTKV_ASSERT(c->pos <= c->count && c->count <= c->cap); /* invariant 4 */
    if (c->pos == c->count) {
        return 0;
    }
    const struct change *ch = &c->items[c->pos++];
    const unsigned char *rec = ch->seg->map + ch->off;
    struct rec_hdr h;
    htkv_rec_hdr_decode(rec, &h);
    if (c->db->cfg.verify_checksums && htkv_rec_verify_crc(rec, ch->seg->id, ch->off, &h) != 0) {
        htkv_set_error("%s: checksum mismatch in record at offset %u", ch->seg->path, ch->off);
        return HTKV_ECORRUPT;
    }
    /* The record collected (checked by the walk then, again just now when checksums are on). */
    HTKV_DASSERT(!c->db->cfg.verify_checksums ||
                 (h.version == ch->version && (h.type == REC_SET || h.type == REC_DEL)));
    *cmd = (htkv_command){ .type = h.type == REC_SET ? HTKV_CMD_SET : HTKV_CMD_DELETE,
                           .key = rec + REC_HDR_BYTES,
                           .key_len = h.key_len,
                           .val = rec + REC_HDR_BYTES + h.key_len,
                           .val_len = h.val_len,
                           .version = h.version };
    return 1;
}

uint64_t
htkv_changes_count(const htkv_changes *c)
{
    return c == NULL ? 0 : c->count;
}

void
htkv_changes_destroy(htkv_changes *c)
{
    if (c == NULL) {
        return;
    }
    htkv_view_close(c->view);
    htkv_mem_free(c->items);
    htkv_mem_free(c);
}
