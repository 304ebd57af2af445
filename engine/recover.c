/*
 * recover.c - rebuild every shard's index from its segments at open.
 *
 * One file of more than 1,000 lines, on purpose: every step of the scan (hints, records,
 * batches, cross-shard parts, unlisted files, versions) fills the one struct recov whose whole
 * content must be known before recover_apply() changes a byte on disk (invariant 3), and all of
 * them are static; split, that state and those steps would be exported to each other for no
 * caller outside recovery.
 *
 * Design. Segments of a shard are scanned in id order. Every record is checked (framing and a
 * CRC that covers its segment id and offset). Operations outside a batch are installed at once;
 * operations inside a batch are held until its COMMIT; a batch with parts in several shards is
 * installed only when every part was found committed. Installs keep the newest version of each
 * key, whatever order the records are met in (compaction output may hold older versions in newer
 * segments), so nothing stale or deleted comes back.
 *
 * A bad record ends the scan of a segment in one of three ways:
 *   - torn tail: nothing valid follows it (or, in the shard's last segment, its header is all
 *     zeros: a block lost with power before it was synced). Recovery cuts the log there, back to
 *     the start of an unfinished batch, zeroes the rest and syncs before anything is appended.
 *   - corruption: valid records follow. Open fails with HTKV_ECORRUPT naming file and offset, or,
 *     with HTKV_RECOVERY_SKIP_CORRUPT, the bytes up to the next valid record are skipped, loudly.
 *
 * Layer: store. Calls the formats layer (the record walk of rec.h, hints, the manifest,
 * segments), the shard's index and the store (db.h) whose shards it fills.
 *
 * Shards are independent until their batches are matched: each is recovered into a struct recov
 * of its own, on up to one thread per CPU (htkv_parallel_for()), and the opening thread then merges
 * them in shard order and does the rest alone (cross-shard batches, versions, fixups), so the
 * outcome, the error reported (the lowest failing shard's) included, is the sequential one.
 *
 * Structure. htkv_recover() -> recover_shard() per shard -> recover_seg() per segment, which
 * takes the segment's hint (recover_hint()) and walks the records after it (struct seg_scan):
 * scan_bad() for bytes that fail their check, scan_orphan() after a skip, scan_record() ->
 * scan_op() / scan_control() for records that check, scan_end_whole() / scan_end_torn() at the
 * end. Nothing on disk changes until recover_apply().
 *
 * Invariants
 *   1. After recovery, each key's head entry is its record with the highest version.
 *   2. next_version exceeds every version seen on disk, applied or not, the manifest's applied
 *      mark and its reservation (MAN_VERSIONS), so none is reused, not even one whose record
 *      compaction or a power loss removed.
 *   5. Nothing is deleted on a guess: a file the manifest does not list is removed only when
 *      the manifest calls it gone or it holds no record; otherwise the open fails.
 *   6. A record that fails its check before the end the segment's records are known to reach
 *      (a clean close's MAN_SEG_END, a whole hint's tail, a SEAL) is damage, never a torn tail.
 *   3. When the store is writable, a cut tail is zeroed and fdatasynced before open returns;
 *      nothing on disk changes before every check passed (recover_apply()), so a refused open
 *      leaves every file byte for byte as it was.
 *   4. A batch found incomplete is never applied later: when the store is writable its version
 *      is recorded in the manifest (MAN_BATCH_ABORT) before open returns, so that a batch floor
 *      raised past it later does not make its surviving parts count as complete.
 */
#include "engine/recover.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/closing.h"
#include "engine/cpus.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/kix.h"
#include "engine/rec.h"
#include "engine/store.h"
#include "uring/ur_fault.h"

/* A committed part of a batch that spans shards, waiting for the other parts. */
struct pend_part {
    uint64_t version;
    uint32_t parts;
    size_t ent_start;
    size_t ent_count;
};

/* A change recovery makes to a segment once every check has passed (see htkv_recover()). */
struct fixup {
    struct seg *s;
    uint64_t from, to;
    bool grow; /* allocate the file up to @c to; else zero [from, to) */
};

struct recov {
    struct htkv_db *db;
    int rc;        /* recover_shard()'s result (recov_one()) */
    char err[512]; /* and htkv_last_error() then, from the thread that ran it */
    uint64_t max_version;
    uint64_t records, truncated_bytes, skipped_bytes; /* for db->recovery */
    uint64_t *disc;                                   /* versions of batches not applied */
    size_t ndisc, disc_cap;
    struct fixup *fix;
    size_t nfix, fix_cap;
    struct pend_part *pend;
    size_t npend, pend_cap;
    struct hidx_ent **pents; /* entries of pending parts */
    size_t npents, pents_cap;
    struct hidx_ent **bents; /* entries of the batch being scanned */
    size_t nbents, bents_cap;
    /* The shard's close.state when it speaks for the store (closing_valid()); its applied is
     * closed_upto: every batch at or below it was complete in all its shards. */
    struct closing *cl;
    bool cl_ok;
    uint64_t closed_upto;
    struct closing *cls; /* the merged one's: every shard's (shard order) */
};

static int
vec_push(void **v, size_t *n, size_t *cap, size_t elem, const void *x)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        void *p = htkv_mem_realloc(*v, c * elem);
        if (p == NULL) {
            return -ENOMEM;
        }
        *v = p;
        *cap = c;
    }
    memcpy((char *)*v + *n * elem, x, elem);
    (*n)++;
    return 0;
}

/* Remember that batch @p version was not applied (sorted at the end of recovery). */
static int
discard_version(struct recov *rv, uint64_t version)
{
    return vec_push((void **)&rv->disc, &rv->ndisc, &rv->disc_cap, sizeof(version), &version);
}

static void
seg_dead(struct hidx_ent *e)
{
    atomic_fetch_add_explicit(&e->seg->dead_bytes, htkv_align_up(e->rec_bytes, REC_ALIGN),
                              memory_order_relaxed);
}

/*
 * Does the record behind @p e, installed from a hint without being read, check and agree with
 * the entry? (An entry the scan made was checked.)
 */
static bool
ent_record_ok(const struct hidx_ent *e)
{
    return e->checked || htkv_ent_record_ok(e);
}

/*
 * @p e has a twin (another key with its 64-bit hash: htkv_hidx_twin()). Recovery from hints
 * reads no record, so a record whose key bytes were damaged looks like a new key that shares
 * its hash with the real one, and would leave the real key's older version visible (a deleted
 * key back, an older value). Check both records: a damaged one is HTKV_ECORRUPT, or with
 * HTKV_RECOVERY_SKIP_CORRUPT it is logged and, when it is @p e, not installed (*skip). Two
 * records that check are a true collision: both are installed.
 */
static int
twin_check(struct recov *rv, struct shard *sh, struct hidx_ent *e, const struct hidx_ent *twin,
           bool *skip)
{
    struct htkv_db *db = sh->db;
    const struct hidx_ent *bad = !ent_record_ok(e) ? e : !ent_record_ok(twin) ? twin : NULL;
    *skip = false;
    if (bad == NULL) {
        return 0;
    }
    if (db->cfg.recovery != HTKV_RECOVERY_SKIP_CORRUPT) {
        htkv_set_error("%s: damaged record at offset %llu (its hint describes it; its key does "
                       "not match the key of its hash)",
                       bad->seg->path, (unsigned long long)bad->off);
        return HTKV_ECORRUPT;
    }
    htkv_db_log(db, HTKV_LOG_ERROR, "%s: skipping the damaged record at offset %llu",
                bad->seg->path, (unsigned long long)bad->off);
    rv->skipped_bytes += bad->rec_bytes;
    *skip = bad == e;
    return 0;
}

/* Install a recovered entry if it is the newest version of its key (no readers yet). */
static int
recover_install(struct recov *rv, struct shard *sh, struct hidx_ent *e)
{
    struct hidx_ent *twin = htkv_hidx_twin(&sh->idx, e);
    if (HTKV_UNLIKELY(twin != NULL)) {
        bool skip;
        int trc = twin_check(rv, sh, e, twin, &skip);
        if (trc != 0 || skip) {
            seg_dead(e);
            sh->entry_bytes -= sizeof(*e);
            htkv_mem_free(e);
            return trc;
        }
    }
    /* One probe in the common case (a key met for the first time, or a newer version): install,
     * and put the old head back in the rare case that it was the newer one. */
    int rc;
    struct hidx_ent *old = htkv_hidx_install(&sh->idx, e, &rc, htkv_shard_retire_table, sh);
    if (rc != 0) {
        return rc;
    }
    if (old != NULL && old->version > e->version) {
        struct hidx_ent *back = htkv_hidx_install(&sh->idx, old, &rc, htkv_shard_retire_table, sh);
        HTKV_ASSERT(rc == 0 && back == e); /* the key's slot exists: no growth */
        atomic_store_explicit(&old->prev, NULL, memory_order_relaxed);
        seg_dead(e);
        sh->entry_bytes -= sizeof(*e);
        htkv_mem_free(e);
        return 0;
    }
    atomic_fetch_add_explicit(&e->seg->live_bytes, htkv_align_up(e->rec_bytes, REC_ALIGN),
                              memory_order_relaxed);
    if (old != NULL) {
        atomic_store_explicit(&e->prev, NULL, memory_order_relaxed);
        atomic_fetch_sub_explicit(&old->seg->live_bytes, htkv_align_up(old->rec_bytes, REC_ALIGN),
                                  memory_order_relaxed);
        seg_dead(old);
        if (old->del) {
            sh->tombstones--;
        } else {
            sh->live_keys--;
        }
        sh->entry_bytes -= sizeof(*old);
        htkv_mem_free(old);
    }
    if (e->del) {
        sh->tombstones++;
    } else {
        sh->live_keys++;
    }
    return 0;
}

static struct hidx_ent *
recover_ent(struct recov *rv, struct shard *sh, struct seg *s, uint64_t off,
            const struct rec_hdr *h)
{
    struct hidx_ent *e = htkv_mem_alloc_in(sh->arena, sizeof(*e));
    if (e == NULL) {
        return NULL;
    }
    sh->entry_bytes += sizeof(*e);
    const unsigned char *key = s->map + off + REC_HDR_BYTES;
    *e = (struct hidx_ent){ .version = h->version,
                            .hash = htkv_hash(key, h->key_len, rv->db->hash_seed),
                            .seg = s,
                            .off = (uint32_t)off,
                            .rec_bytes = REC_HDR_BYTES + h->key_len + h->val_len,
                            .key_len = h->key_len,
                            .del = h->type == REC_DEL,
                            .checked = 1 }; /* the scan checked its CRC */
    return e;
}

enum scan_end { SCAN_EOF, SCAN_TORN, SCAN_SEALED };

/* Flush the batch being scanned: install it (one part) or park it (several parts). */
static int
batch_commit(struct recov *rv, struct shard *sh, uint64_t version, uint32_t parts)
{
    HTKV_ASSERT(parts >= 1); /* BEGIN was checked: at least one part */
    int rc = 0;
    if (parts == 1) {
        for (size_t i = 0; i < rv->nbents && rc == 0; i++) {
            rc = recover_install(rv, sh, rv->bents[i]);
            rv->bents[i] = NULL;
        }
    } else {
        struct pend_part p = {
            .version = version, .parts = parts, .ent_start = rv->npents, .ent_count = rv->nbents
        };
        for (size_t i = 0; i < rv->nbents && rc == 0; i++) {
            rc = vec_push((void **)&rv->pents, &rv->npents, &rv->pents_cap, sizeof(void *),
                          &rv->bents[i]);
            if (rc == 0) {
                rv->bents[i] = NULL;
            }
        }
        if (rc == 0) {
            HTKV_ASSERT(rv->npents == p.ent_start + p.ent_count);
            rc = vec_push((void **)&rv->pend, &rv->npend, &rv->pend_cap, sizeof(p), &p);
        }
    }
    return rc;
}

static void
batch_discard(struct recov *rv, struct shard *sh)
{
    for (size_t i = 0; i < rv->nbents; i++) {
        if (rv->bents[i] != NULL) {
            sh->entry_bytes -= sizeof(struct hidx_ent);
            htkv_mem_free(rv->bents[i]);
        }
    }
    rv->nbents = 0;
}

/* hint_check(): the hint is whole, but the segment is shorter than it or its last record fails. */
#define HINT_SEG_DAMAGED 1

/*
 * Check hint @p hh of segment @p s whole against the segment's bounds and the batch framing
 * rules of recover_seg(), without reading the segment except the last record (whose CRC ties
 * the hint to these bytes). Returns 0, HTKV_ECORRUPT (the hint is damaged or stale) or
 * HINT_SEG_DAMAGED.
 */
static int
hint_check(struct recov *rv, struct shard *sh, struct seg *s, const struct hint *hh)
{
    struct htkv_db *db = rv->db;
    uint64_t expect = SEG_DATA_OFF, last = 0;
    bool in_batch = false;
    uint64_t b_version = 0;
    uint32_t b_ops = 0, b_parts = 0, b_seen = 0;
    for (uint64_t i = 0; i < hh->count; i++) {
        struct hint_ent e;
        htkv_hint_get(hh, i, &e);
        uint64_t size;
        bool ok = e.off == expect && e.version >= 1;
        switch (e.type) {
        case REC_SET:
        case REC_DEL:
            size = htkv_rec_size(e.key_len, e.val_len);
            ok = ok && e.key_len >= 1 && e.key_len <= HTKV_KEY_MAX &&
                 e.val_len <= db->cfg.max_value_bytes && (e.type == REC_SET || e.val_len == 0) &&
                 db_shard_of(db, e.hash) == sh->id;
            ok = ok && ((e.flags & REC_F_BATCH) != 0) == in_batch &&
                 (e.flags & ~REC_F_BATCH) == 0 &&
                 (!in_batch || (e.version == b_version && b_seen < b_ops));
            b_seen += in_batch;
            break;
        case REC_BATCH_BEGIN:
            size = htkv_rec_size(0, REC_BEGIN_PAYLOAD);
            ok = ok && !in_batch && e.val_len > 0 && e.key_len >= 1;
            in_batch = true;
            b_version = e.version;
            b_ops = e.val_len;
            b_parts = e.key_len;
            b_seen = 0;
            break;
        case REC_BATCH_COMMIT:
            size = htkv_rec_size(0, REC_COMMIT_PAYLOAD);
            ok = ok && in_batch && e.version == b_version && e.val_len == b_ops &&
                 e.key_len == b_parts && b_seen == b_ops;
            in_batch = false;
            break;
        default:
            ok = false;
            size = 0;
        }
        if (!ok || size > hh->tail - e.off) {
            return HTKV_ECORRUPT;
        }
        last = e.off;
        expect = e.off + size;
    }
    if (expect != hh->tail || in_batch) {
        return HTKV_ECORRUPT;
    }
    /* The hint is whole: it was written after the records it names were durable, so a segment
     * that disagrees with it has lost or damaged them. */
    struct rec_hdr h;
    if (hh->tail > s->file_bytes ||
        (hh->count > 0 && htkv_rec_check(s->map + last, hh->tail - last, s->id, last,
                                         db->cfg.max_value_bytes, &h) != 0)) {
        return HINT_SEG_DAMAGED;
    }
    return 0;
}

/* Hint entries ahead of the one installed: their slots, entries and keys are fetched in three
 * steps (htkv_hidx_prefetch()), so that the cache misses of several installs overlap. */
#define HINT_AHEAD 16u

static inline void
hint_prefetch(struct shard *sh, const struct hint *hh, uint64_t i)
{
    static const uint64_t dist[3] = { HINT_AHEAD, HINT_AHEAD / 2, HINT_AHEAD / 4 };
    for (int stage = 0; stage < 3; stage++) {
        if (i + dist[stage] < hh->count) {
            struct hint_ent a;
            htkv_hint_get(hh, i + dist[stage], &a);
            htkv_hidx_prefetch(&sh->idx, a.hash, stage);
        }
    }
}

/*
 * Install the records described by a checked hint, as recover_seg() would after scanning them
 * (keys are hashed already; values are not read). Returns 0, -ENOMEM or another -errno.
 */
static int
hint_apply(struct recov *rv, struct shard *sh, struct seg *s, const struct hint *hh)
{
    int rc = 0;
    uint64_t b_version = 0;
    uint32_t b_parts = 0;
    for (uint64_t i = 0; i < hh->count && rc == 0; i++) {
        hint_prefetch(sh, hh, i);
        struct hint_ent e;
        htkv_hint_get(hh, i, &e);
        HTKV_ASSERT(e.off >= SEG_DATA_OFF && e.off < hh->tail); /* hint_check() passed */
        rv->max_version = e.version > rv->max_version ? e.version : rv->max_version;
        s->max_version = e.version > s->max_version ? e.version : s->max_version;
        s->records++;
        rv->records++;
        if (e.type == REC_BATCH_BEGIN) {
            b_version = e.version;
            b_parts = e.key_len;
            continue;
        }
        if (e.type == REC_BATCH_COMMIT) {
            rc = batch_commit(rv, sh, b_version, b_parts);
            rv->nbents = 0;
            continue;
        }
        struct hidx_ent *n = htkv_mem_alloc_in(sh->arena, sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        sh->entry_bytes += sizeof(*n);
        *n = (struct hidx_ent){ .version = e.version,
                                .hash = e.hash,
                                .seg = s,
                                .off = e.off,
                                .rec_bytes = REC_HDR_BYTES + e.key_len + e.val_len,
                                .key_len = e.key_len,
                                .del = e.type == REC_DEL };
        if ((e.flags & REC_F_BATCH) != 0) {
            rc = vec_push((void **)&rv->bents, &rv->nbents, &rv->bents_cap, sizeof(n), &n);
        } else {
            rc = recover_install(rv, sh, n);
        }
    }
    if (rc == 0) {
        s->hint_tail = hh->tail;
    }
    return rc;
}

/*
 * Use the hint of @p s if it checks: returns the offset to scan from (SEG_DATA_OFF without), and
 * raises *known to the end its records are known to reach (a whole hint's tail, also when the
 * segment disagrees with it: the scan then finds the damage before that end).
 */
static int
recover_hint(struct recov *rv, struct shard *sh, struct seg *s, uint64_t *from, uint64_t *known)
{
    *from = SEG_DATA_OFF;
    if (!rv->db->cfg.hint_files) {
        return 0;
    }
    struct hint hh;
    int rc = htkv_hint_load(s, &hh);
    if (rc == HTKV_ENOTFOUND) {
        return 0;
    }
    if (rc != 0 && rc != HTKV_ECORRUPT && rc != -ENOMEM) {
        /* Hints are optional: one that cannot be opened or read costs a scan of the segment,
         * which checks every record, never the open. */
        htkv_db_log(rv->db, HTKV_LOG_WARN, "%s: hint file cannot be read (%s); scanning instead",
                    s->path, htkv_strerror(rc));
        return 0;
    }
    if (rc == 0) {
        rc = hint_check(rv, sh, s, &hh);
    }
    if (rc == HINT_SEG_DAMAGED) {
        htkv_db_log(rv->db, HTKV_LOG_ERROR,
                    "%s: its hint names records up to offset %llu that the segment does not hold "
                    "intact; scanning",
                    s->path, (unsigned long long)hh.tail);
        *known = hh.tail > *known ? hh.tail : *known;
        htkv_hint_free(&hh);
        return 0;
    }
    if (rc == HTKV_ECORRUPT) {
        htkv_db_log(rv->db, HTKV_LOG_WARN, "%s: hint file is damaged or stale; scanning instead",
                    s->path);
        htkv_hint_free(&hh); /* loaded, then refused by hint_check(): free it (no-op if not) */
        return 0;
    }
    if (rc == 0) {
        /* Size the table once for the hint's keys instead of doubling it (and rehashing every
         * key) ~18 times while installing a million of them. */
        rc = htkv_hidx_reserve(&sh->idx, hh.count, htkv_shard_retire_table, sh);
    }
    if (rc == 0) {
        rc = hint_apply(rv, sh, s, &hh);
        *from = hh.tail;
        *known = hh.tail > *known ? hh.tail : *known;
    }
    htkv_hint_free(&hh);
    return rc;
}

/*
 * The records of @p s end (or are cut) at @p at: fine at or after the end they are known to
 * reach (@p known), damage before it. Damage is HTKV_ECORRUPT, or with
 * HTKV_RECOVERY_SKIP_CORRUPT logged and counted as skipped (the rest is then cut). 0 or
 * HTKV_ECORRUPT.
 */
static int
before_known_end(struct recov *rv, struct seg *s, uint64_t at, uint64_t known)
{
    struct htkv_db *db = rv->db;
    if (at >= known) {
        return 0;
    }
    if (db->cfg.recovery != HTKV_RECOVERY_SKIP_CORRUPT) {
        htkv_set_error("%s: damaged or missing records at offset %llu, before offset %llu that "
                       "its records are known to reach",
                       s->path, (unsigned long long)at, (unsigned long long)known);
        return HTKV_ECORRUPT;
    }
    htkv_db_log(db, HTKV_LOG_ERROR,
                "%s: skipping damaged or missing records from offset %llu to %llu, which its "
                "records are known to reach",
                s->path, (unsigned long long)at, (unsigned long long)known);
    rv->skipped_bytes += known - at;
    return 0;
}

/*
 * One segment's scan (recover_seg()'s state).
 *
 * Invariants
 *   1. w.off is where the next record is read: every record before it was checked and applied,
 *      dropped or held in the batch being scanned (rv->bents).
 *   2. in_batch: a BEGIN at b_begin (version b_version, b_ops operations, b_parts parts) was met
 *      and b_seen <= b_ops of its operations since; rv->nbents == b_seen. Otherwise
 *      rv->nbents == 0.
 *   3. how == SCAN_TORN: the log ends at cut (an unfinished batch's BEGIN or the first bad
 *      byte), cut <= w.off.
 */
struct seg_scan {
    struct recov *rv;
    struct shard *sh;
    struct seg *s;
    struct rec_walk w;
    uint64_t known; /* the end the records are known to reach: only what lies after may be torn */
    bool last;      /* the shard's last segment: a zero header there is a lost block */
    bool in_batch;
    bool orphans; /* after a skip: drop the rest of a batch whose start was skipped */
    uint64_t b_version, b_begin;
    uint32_t b_ops, b_parts, b_seen;
    uint64_t cut;
    enum scan_end how;
};

/* Drop the batch being scanned (a hole in it, or the log ends inside it). */
static int
scan_drop_batch(struct seg_scan *sc)
{
    batch_discard(sc->rv, sc->sh); /* a batch with a hole in it is not applied */
    sc->in_batch = false;
    return discard_version(sc->rv, sc->b_version) != 0 ? -ENOMEM : 0;
}

/*
 * The step at sc->w.at failed (@p r): the log ends there (torn: *stop) or, when valid records
 * follow, damage that fails the open or, with HTKV_RECOVERY_SKIP_CORRUPT, is skipped. 0 or an
 * error.
 */
static int
scan_bad(struct seg_scan *sc, enum rec_walk_res r, bool *stop)
{
    struct htkv_db *db = sc->rv->db;
    struct seg *s = sc->s;
    uint64_t off = sc->w.at;
    HTKV_ASSERT(r == REC_WALK_ZERO || r == REC_WALK_BAD);
    bool hole = sc->last && r == REC_WALK_ZERO;
    uint64_t next = hole ? 0 : htkv_rec_walk_resync(&sc->w);
    if (next == 0) {
        sc->how = SCAN_TORN;
        sc->cut = sc->in_batch ? sc->b_begin : off;
        *stop = true;
        return before_known_end(sc->rv, s, sc->cut, sc->known);
    }
    HTKV_ASSERT(next > off && sc->w.off == next);
    if (db->cfg.recovery != HTKV_RECOVERY_SKIP_CORRUPT) {
        htkv_set_error("%s: damaged record at offset %llu followed by valid records", s->path,
                       (unsigned long long)off);
        return HTKV_ECORRUPT;
    }
    htkv_db_log(db, HTKV_LOG_ERROR, "%s: skipping %llu damaged bytes at offset %llu", s->path,
                (unsigned long long)(next - off), (unsigned long long)off);
    sc->rv->skipped_bytes += next - off;
    atomic_fetch_add_explicit(&s->dead_bytes, next - off, memory_order_relaxed);
    sc->orphans = true;
    return sc->in_batch ? scan_drop_batch(sc) : 0;
}

/*
 * After a skip: the record @p h at sc->w.at belongs to a batch whose start was skipped (*dropped:
 * it is counted and dropped) or ends that state. 0 or -ENOMEM.
 */
static int
scan_orphan(struct seg_scan *sc, const struct rec_hdr *h, bool *dropped)
{
    HTKV_ASSERT(sc->orphans && !sc->in_batch);
    *dropped = (h->flags & REC_F_BATCH) != 0 || h->type == REC_BATCH_COMMIT;
    if (!*dropped) {
        sc->orphans = false;
        return 0;
    }
    struct htkv_db *db = sc->rv->db;
    uint64_t size = sc->w.off - sc->w.at;
    htkv_db_log(db, HTKV_LOG_ERROR,
                "%s: dropping record at offset %llu of a batch whose start was skipped",
                sc->s->path, (unsigned long long)sc->w.at);
    if (h->version > sc->rv->max_version) {
        sc->rv->max_version = h->version;
    }
    if (discard_version(sc->rv, h->version) != 0) {
        return -ENOMEM;
    }
    atomic_fetch_add_explicit(&sc->s->dead_bytes, size, memory_order_relaxed);
    sc->rv->skipped_bytes += size;
    sc->s->records++;
    return 0;
}

/* A SET or DEL that checks: install it, or hold it in the batch being scanned (*ok: it is in
 * place). 0 or an error. */
static int
scan_op(struct seg_scan *sc, const struct rec_hdr *h, bool *ok)
{
    HTKV_ASSERT(h->type == REC_SET || h->type == REC_DEL);
    struct recov *rv = sc->rv;
    bool flagged = (h->flags & REC_F_BATCH) != 0;
    *ok = flagged == sc->in_batch &&
          (!sc->in_batch || (h->version == sc->b_version && sc->b_seen < sc->b_ops));
    if (!*ok) {
        return 0;
    }
    struct hidx_ent *e = recover_ent(rv, sc->sh, sc->s, sc->w.at, h);
    if (e == NULL) {
        return -ENOMEM;
    }
    if (db_shard_of(rv->db, e->hash) != sc->sh->id) {
        sc->sh->entry_bytes -= sizeof(*e);
        htkv_mem_free(e);
        htkv_set_error("%s: record at offset %llu belongs to another shard", sc->s->path,
                       (unsigned long long)sc->w.at);
        return HTKV_ECORRUPT;
    }
    if (!sc->in_batch) {
        return recover_install(sc->rv, sc->sh, e);
    }
    sc->b_seen++;
    HTKV_ASSERT(rv->nbents + 1 == sc->b_seen);
    return vec_push((void **)&rv->bents, &rv->nbents, &rv->bents_cap, sizeof(e), &e);
}

/* A BEGIN, COMMIT or SEAL that checks (*ok: it is in place). 0 or an error. */
static int
scan_control(struct seg_scan *sc, const struct rec_hdr *h, bool *ok)
{
    HTKV_ASSERT(h->key_len == 0 && sc->w.at + REC_HDR_BYTES + h->val_len <= sc->w.end);
    const unsigned char *pl = sc->s->map + sc->w.at + REC_HDR_BYTES;
    switch (h->type) {
    case REC_BATCH_BEGIN:
        *ok = !sc->in_batch && htkv_load32(pl) > 0 && htkv_load32(pl + 4) >= 1;
        sc->in_batch = *ok;
        sc->b_version = h->version;
        sc->b_begin = sc->w.at;
        sc->b_ops = htkv_load32(pl);
        sc->b_parts = htkv_load32(pl + 4);
        sc->b_seen = 0;
        return 0;
    case REC_BATCH_COMMIT:
        *ok = sc->in_batch && h->version == sc->b_version && htkv_load32(pl) == sc->b_ops &&
              htkv_load32(pl + 4) == sc->b_parts && sc->b_seen == sc->b_ops;
        if (!*ok) {
            return 0;
        }
        HTKV_ASSERT(sc->rv->nbents == sc->b_ops);
        sc->in_batch = false;
        int rc = batch_commit(sc->rv, sc->sh, sc->b_version, sc->b_parts);
        sc->rv->nbents = 0;
        return rc;
    case REC_SEAL:
        *ok = !sc->in_batch && htkv_load64(pl + 8) == sc->w.at;
        if (*ok) {
            sc->how = SCAN_SEALED;
        }
        return 0;
    default:
        HTKV_UNREACHABLE();
    }
}

/* A record @p h that checks, at sc->w.at: apply it (*stop after a SEAL). 0 or an error. */
static int
scan_record(struct seg_scan *sc, const struct rec_hdr *h, bool *stop)
{
    struct recov *rv = sc->rv;
    struct seg *s = sc->s;
    if (h->version > rv->max_version && h->type != REC_SEAL) {
        rv->max_version = h->version;
    }
    if (h->version > s->max_version && h->type != REC_SEAL) {
        s->max_version = h->version;
    }
    bool ok = true;
    int rc =
        h->type == REC_SET || h->type == REC_DEL ? scan_op(sc, h, &ok) : scan_control(sc, h, &ok);
    if (rc != 0) {
        return rc;
    }
    if (!ok) {
        htkv_set_error("%s: record at offset %llu is out of place (batch framing)", s->path,
                       (unsigned long long)sc->w.at);
        return HTKV_ECORRUPT;
    }
    s->records++;
    rv->records++;
    if (sc->how != SCAN_SEALED) {
        return 0;
    }
    *stop = true;
    if (htkv_seg_data_end(s, sc->w.off, sc->w.end) != sc->w.off) {
        htkv_set_error("%s: data after the SEAL record at offset %llu", s->path,
                       (unsigned long long)sc->w.off);
        return HTKV_ECORRUPT;
    }
    s->sealed = true;
    return 0;
}

/*
 * The records of the segment end at @p off, whole (sealed or end of file): set the tail. A file
 * that ends inside the last record's padding (a cut after its last byte) holds a whole record;
 * the padding gets its bytes back before anything is appended after it. A segment whose mapping
 * has no room for them (not the last one, or one as large as its capacity) takes no more
 * appends: it counts as sealed (it has no SEAL record, which recovery does not need), so the
 * next write rotates without touching it. 0 or -ENOMEM.
 */
static int
scan_end_whole(struct seg_scan *sc, uint64_t off)
{
    struct seg *s = sc->s;
    s->tail = off;
    if (off <= sc->w.end || !s->writable) {
        return 0;
    }
    HTKV_ASSERT(off - sc->w.end < REC_ALIGN); /* only padding lies past the end */
    if (htkv_align_up(off, 4096) > s->map_bytes) {
        s->sealed = true;
        return 0;
    }
    struct fixup f = { .s = s, .to = htkv_align_up(off, 4096), .grow = true };
    return vec_push((void **)&sc->rv->fix, &sc->rv->nfix, &sc->rv->fix_cap, sizeof(f), &f);
}

/* The log is torn at sc->cut: drop the unfinished batch and plan to zero what follows (when
 * writable; recover_apply() does it). 0, -ENOMEM, or the error of the fdatasync below (a
 * writable open). */
static int
scan_end_torn(struct seg_scan *sc)
{
    struct htkv_db *db = sc->rv->db;
    struct seg *s = sc->s;
    batch_discard(sc->rv, sc->sh);
    /* Pages a crash left dirty are written out first: then no file system can report them as
     * a hole (some did, over unwritten extents, while they were dirty). Without that, every
     * byte is read. */
    int frc = s->fd >= 0 && fdatasync(s->fd) != 0 ? -errno : 0;
    bool settled = s->fd >= 0 && frc == 0;
    if (frc != 0 && s->writable) {
        /* The records just scanned may be only in the page cache: serving them as the store's
         * would acknowledge what a power loss can take back. */
        htkv_set_error("%s: writing out what a crash left in memory failed: %s", s->path,
                       strerror(-frc));
        return frc;
    }
    uint64_t junk = settled ? htkv_seg_data_end(s, sc->cut, sc->w.end)
                            : htkv_seg_last_nonzero_end(s->map, sc->cut, sc->w.end);
    s->tail = sc->cut;
    if (junk <= sc->cut) {
        return 0;
    }
    sc->rv->truncated_bytes += junk - sc->cut;
    htkv_db_log(db, HTKV_LOG_WARN, "%s: %s a torn tail of %llu bytes at offset %llu", s->path,
                s->writable ? "cutting" : "ignoring (read-only)",
                (unsigned long long)(junk - sc->cut), (unsigned long long)sc->cut);
    if (!s->writable) {
        return 0;
    }
    struct fixup f = { .s = s, .from = sc->cut, .to = junk };
    return vec_push((void **)&sc->rv->fix, &sc->rv->nfix, &sc->rv->fix_cap, sizeof(f), &f);
}

/*
 * Scan one segment. On a torn tail, cuts it (when writable). Returns 0 or an error; the segment's
 * tail, records and sealed fields are set.
 */
static int
recover_seg(struct recov *rv, struct shard *sh, struct seg *s, bool last)
{
    struct htkv_db *db = rv->db;
    struct seg_scan sc = { .rv = rv, .sh = sh, .s = s, .last = last, .how = SCAN_EOF };
    uint64_t from;
    /* The end the records are known to reach: recorded at a clean close, or by a hint. */
    sc.known = htkv_manifest_seg_end(db->man, s->id);
    int rc = recover_hint(rv, sh, s, &from, &sc.known);
    if (rc != 0) {
        return rc;
    }
    HTKV_ASSERT(rv->nbents == 0 && from >= SEG_DATA_OFF);
    htkv_rec_walk_init(&sc.w, s->map, s->id, from, s->file_bytes, db->cfg.max_value_bytes);
    struct rec_hdr h;
    enum rec_walk_res r;
    bool stop = false;
    while (rc == 0 && !stop && (r = htkv_rec_walk_next(&sc.w, &h)) != REC_WALK_END) {
        bool dropped = false;
        if (r != REC_WALK_RECORD) {
            rc = scan_bad(&sc, r, &stop);
        } else if (sc.orphans && ((rc = scan_orphan(&sc, &h, &dropped)) != 0 || dropped)) {
            continue;
        } else {
            rc = scan_record(&sc, &h, &stop);
        }
    }
    if (rc != 0) {
        return rc;
    }
    if (sc.how == SCAN_EOF && sc.in_batch) {
        sc.how = SCAN_TORN; /* the file ends inside a batch */
        sc.cut = sc.b_begin;
    }
    HTKV_ASSERT(sc.how != SCAN_TORN || sc.cut <= sc.w.off);
    rc = before_known_end(rv, s, sc.how == SCAN_TORN ? sc.cut : sc.w.off, sc.known);
    if (rc != 0) {
        return rc;
    }
    return sc.how == SCAN_TORN ? scan_end_torn(&sc) : scan_end_whole(&sc, sc.w.off);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int
cmp_pend(const void *a, const void *b)
{
    const struct pend_part *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* Install the batches whose every part was found committed; drop the others. */
static int
recover_cross_shard(struct recov *rv)
{
    struct htkv_db *db = rv->db;
    if (rv->npend == 0) {
        return 0;
    }
    qsort(rv->pend, rv->npend, sizeof(*rv->pend), cmp_pend);
    int rc = 0;
    for (size_t i = 0; i < rv->npend;) {
        size_t j = i;
        while (j < rv->npend && rv->pend[j].version == rv->pend[i].version) {
            j++;
        }
        HTKV_ASSERT(j > i); /* parts of one batch version, sorted together */
        bool complete = (j - i) == rv->pend[i].parts;
        for (size_t k = i; k < j; k++) {
            HTKV_ASSERT(rv->pend[k].ent_start + rv->pend[k].ent_count <= rv->npents);
            complete = complete && rv->pend[k].parts == rv->pend[i].parts;
        }
        /* At or below the batch floor every part was durable before compaction could drop
         * any of them: the parts found are all that is left, and they stand. So is every batch
         * a clean close covered (closed_upto), whose other parts may lie in segments taken
         * with their key indexes, whose records are not read. Unless an earlier
         * recovery found the batch incomplete (MAN_BATCH_ABORT): the floor may have risen past
         * it since, while its surviving parts stayed on disk. */
        bool aborted = htkv_manifest_batch_aborted(db->man, rv->pend[i].version);
        complete = !aborted && (complete || rv->pend[i].version <= db->man->batch_floor ||
                                rv->pend[i].version <= rv->closed_upto);
        if (!complete) {
            if (aborted) {
                htkv_db_log(db, HTKV_LOG_INFO,
                            "batch version %llu: not applied (incomplete at an earlier open)",
                            (unsigned long long)rv->pend[i].version);
            } else {
                htkv_db_log(db, HTKV_LOG_WARN,
                            "batch version %llu: %zu of %u parts committed; not applied",
                            (unsigned long long)rv->pend[i].version, j - i, rv->pend[i].parts);
            }
            rc = rc == 0 ? discard_version(rv, rv->pend[i].version) : rc;
        }
        for (size_t k = i; k < j; k++) {
            for (size_t n = 0; n < rv->pend[k].ent_count; n++) {
                struct hidx_ent *e = rv->pents[rv->pend[k].ent_start + n];
                struct shard *sh = db_shard(db, e->seg->shard);
                if (complete && rc == 0) {
                    rc = recover_install(rv, sh, e);
                } else {
                    seg_dead(e);
                    sh->entry_bytes -= sizeof(*e);
                    htkv_mem_free(e);
                }
            }
        }
        i = j;
    }
    return rc;
}

static bool
listed(const struct man_shard *ms, uint64_t id)
{
    for (size_t i = 0; i < ms->count; i++) {
        if (ms->seg_ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Remove @p name of @p sh's directory (orphan_kind() said so); a failure is logged. */
static void
remove_orphan(struct htkv_db *db, struct shard *sh, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", sh->dir, name);
    const char *why = strstr(name, ".tmp") != NULL ? "left over" : "not part of the store";
    if ((htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(path)) == 0) {
        htkv_db_log(db, HTKV_LOG_WARN, "%s: %s; removed", path, why);
    } else if (errno != ENOENT) {
        htkv_db_log(db, HTKV_LOG_WARN, "%s: %s; not removed: %s", path, why, strerror(errno));
        unsigned long long id;
        if (sscanf(name, "%12llu", &id) == 1) {
            htkv_manifest_reserve_ids(db->man, (uint64_t)id + 1);
        }
    }
}

/* Did this open take the key index of segment @p id of @p sh (trust_seg())? */
static bool
kix_taken(const struct shard *sh, uint64_t id)
{
    size_t i = htkv_shard_seg_index(sh, id);
    return i < sh->nsegs && sh->segs[i]->kix != NULL;
}

/*
 * Classify a file of a shard directory that the manifest does not list: *remove is set for what
 * the manifest proves obsolete (a drop, or a restore's staged segment, recorded as gone), for a
 * segment that holds no record that checks (one a crash left between its creation and its
 * MAN_SEG_ADD: records are written only once that edit is durable; a torn sector there holds
 * none), for a hint whose segment is removable or absent, for a hint .tmp, and for key indexes
 * (.kix.tmp, and a .kix this open did not take from a clean close). Nothing is deleted on a guess:
 * a segment the manifest does not know that holds records may hold acknowledged writes (a manifest
 * older than its segments, or a CURRENT naming the wrong one), and fails the open. 0 or
 * HTKV_ECORRUPT.
 */
static int
orphan_kind(struct htkv_db *db, struct shard *sh, const char *name, bool *remove)
{
    unsigned long long id;
    char tail[16];
    *remove = false;
    if (sscanf(name, "%12llu.%15s", &id, tail) != 2 || strlen(name) < 16) {
        return 0;
    }
    if (strcmp(tail, "hint.tmp") == 0 || strcmp(tail, "kix.tmp") == 0) {
        *remove = true;
        return 0;
    }
    if (strcmp(tail, "kix") == 0) {
        *remove = !kix_taken(sh, id); /* only one a clean close named is kept (cold.h, rule 5) */
        return 0;
    }
    if ((strcmp(tail, "seg") != 0 && strcmp(tail, "hint") != 0) ||
        listed(&db->man->shards[sh->id], id)) {
        return 0;
    }
    if (htkv_manifest_seg_gone(db->man, id)) {
        *remove = true;
        return 0;
    }
    char path[4200];
    htkv_seg_path(path, sizeof(path), sh->dir, id); /* the segment, also for its hint */
    if (htkv_seg_file_has_record(AT_FDCWD, path, id, db->cfg.max_value_bytes)) {
        htkv_set_error("%s: not in the manifest and holds records (the manifest may be older "
                       "than its segments); nothing removed, see htkvctl repair",
                       path);
        return HTKV_ECORRUPT;
    }
    *remove = true;
    return 0;
}

/*
 * Classify every file of @p sh's directory (orphan_kind()) and, when @p remove, remove those the
 * manifest proves obsolete. Recovery classifies every shard before it removes anything, so that
 * a refused open removes nothing. A shard directory that cannot be listed fails the open with
 * that error (HTKV_ECORRUPT when it is missing), as any directory the store needs. A file that
 * cannot be removed does not: it is never read, and it is logged and tried again at the next
 * open. Its id is kept from being handed out again, so that no new segment of that id meets it.
 * Returns 0, HTKV_ECORRUPT or -errno of opendir.
 */
static int
sweep_orphans(struct htkv_db *db, struct shard *sh, bool remove)
{
    DIR *d = htkv_fault_fails(HTKV_FAULT_OPEN) ? NULL : opendir(sh->dir);
    if (d == NULL) {
        int rc = errno == ENOENT ? HTKV_ECORRUPT : -errno;
        htkv_set_error("%s: cannot be listed: %s", sh->dir, strerror(errno));
        return rc;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        bool obsolete;
        rc = orphan_kind(db, sh, de->d_name, &obsolete);
        if (rc == 0 && obsolete && remove) {
            remove_orphan(db, sh, de->d_name);
        }
    }
    closedir(d);
    return rc;
}

/* Does the header of @p s name this store (or no store: segments of older builds)? */
static bool
seg_of_this_store(const struct htkv_db *db, const struct seg *s)
{
    struct seg_owner o;
    htkv_seg_owner_of(s, &o);
    return (o.shard_count == 0 && o.hash_seed == 0) ||
           (o.shard_count == db->shard_count && o.hash_seed == db->hash_seed);
}

/* ---- a clean close's state: sealed segments taken with their key indexes ------------------- */

/* Does @p c, read from @p sh's close.state, speak for the store as recovery finds it: the
 * manifest exactly as that close left it, and the same segments (closing.h)? */
static bool
closing_valid(const struct htkv_db *db, const struct man_shard *ms, const struct closing *c)
{
    const struct manifest *m = db->man;
    if (c->man_number != m->number || c->man_bytes != m->file_bytes ||
        m->torn_end > m->file_bytes || m->version_hwm != m->version_applied ||
        c->applied != m->version_applied || c->nsegs != ms->count) {
        return false;
    }
    for (size_t i = 0; i < ms->count; i++) {
        if (c->segs[i].id != ms->seg_ids[i]) {
            return false;
        }
    }
    return true;
}

/* Would every key @p c counts fit in the shard's share of the budget (an entry and about two
 * table slots each)? Then the open loads them all instead of leaving them cold. */
static bool
closing_fits(const struct htkv_db *db, const struct closing *c)
{
    uint64_t keys = 0;
    for (uint32_t i = 0; i < c->nsegs; i++) {
        keys += (uint64_t)c->segs[i].heads_vals + c->segs[i].heads_dels;
    }
    uint64_t share = db->cfg.memory_budget_bytes / db->shard_count;
    return keys <= share / (sizeof(struct hidx_ent) + 2 * sizeof(uint64_t));
}

/* Load @p sh's close.state into rv->cl when this open may use it: writable, under a memory
 * budget (only then are key indexes read), and not skipping damage (a skip changes what the
 * state counted). */
static void
closing_load(struct recov *rv, struct shard *sh, const struct man_shard *ms)
{
    const struct htkv_db *db = rv->db;
    if (rv->cl == NULL || db->read_only || db->unlocked || db->cfg.memory_budget_bytes == 0 ||
        db->cfg.recovery == HTKV_RECOVERY_SKIP_CORRUPT) {
        return;
    }
    uint32_t max = ms->count < UINT32_MAX ? (uint32_t)ms->count : UINT32_MAX;
    int rc = htkv_closing_load(sh->dir, sh->id, max, rv->cl);
    if (rc == 0 && closing_valid(db, ms, rv->cl) && !closing_fits(db, rv->cl)) {
        rv->cl_ok = true;
        rv->closed_upto = rv->cl->applied;
        return;
    }
    if (rc == 0 && closing_valid(db, ms, rv->cl)) {
        htkv_closing_free(rv->cl); /* every key fits in the shard's share: load them all */
        return;
    }
    if (rc != HTKV_ENOTFOUND) {
        htkv_db_log(rv->db, HTKV_LOG_INFO, "%s/%s: %s; loading every key", sh->dir, CLOSING_NAME,
                    rc == 0 ? "from an earlier state of the store" : htkv_strerror(rc));
    }
    htkv_closing_free(rv->cl);
}

/* Does sealed segment @p s end exactly at @p tail with its SEAL record, and nothing after? */
static bool
sealed_at(const struct htkv_db *db, const struct seg *s, uint64_t tail)
{
    if (tail < SEG_DATA_OFF + SEG_SEAL_BYTES || tail > s->file_bytes) {
        return false;
    }
    uint64_t off = tail - SEG_SEAL_BYTES;
    struct rec_hdr h;
    return htkv_rec_check(s->map + off, SEG_SEAL_BYTES, s->id, off, db->cfg.max_value_bytes, &h) ==
               0 &&
           h.type == REC_SEAL && htkv_load64(s->map + off + REC_HDR_BYTES + 8) == off &&
           htkv_seg_data_end(s, tail, s->file_bytes) == tail;
}

/*
 * Take sealed segment @p s as the clean close described it (@p c), with the key index file it
 * named, instead of loading its keys: its records are not read and its keys stay cold. Refused
 * (false: the caller recovers the segment as usual) unless the manifest's end, the SEAL record
 * and the key index file (its checks and its header CRC) all agree with @p c.
 */
static bool
trust_seg(struct recov *rv, struct shard *sh, struct seg *s, const struct closing_seg *c)
{
    struct htkv_db *db = rv->db;
    if ((c->flags & CLOSING_KIX) == 0 || htkv_manifest_seg_end(db->man, s->id) != c->tail ||
        !sealed_at(db, s, c->tail)) {
        return false;
    }
    char path[4200];
    htkv_kix_path(path, sizeof(path), s->path);
    struct kix *k = htkv_mem_alloc(sizeof(*k));
    int rc = k == NULL ? -ENOMEM : htkv_kix_open(path, sh->id, s->id, c->tail, k);
    if (rc == 0 && (k->hdr_crc != c->kix_crc || k->d.seg_tail != c->tail)) {
        htkv_kix_free(k);
        k = NULL;
        rc = HTKV_ECORRUPT;
    }
    if (rc != 0) {
        htkv_db_log(db, HTKV_LOG_INFO, "%s: key index not taken (%s); loading its keys", path,
                    htkv_strerror(rc));
        htkv_mem_free(k); /* not opened: nothing to close */
        return false;
    }
    s->tail = c->tail;
    s->sealed = true;
    s->records = c->records;
    s->max_version = c->max_version;
    char hint[4200];
    htkv_hint_path(hint, sizeof(hint), s->path);
    bool has_hint = (c->flags & CLOSING_HINT) != 0 && access(hint, F_OK) == 0;
    s->hint_tail = has_hint ? c->tail - SEG_SEAL_BYTES : 0; /* else compaction writes one */
    atomic_store_explicit(&s->live_bytes, c->live_bytes, memory_order_relaxed);
    atomic_store_explicit(&s->dead_bytes, c->dead_bytes, memory_order_relaxed);
    s->cold_vals = c->heads_vals;
    s->cold_dels = c->heads_dels;
    s->kix = k;
    /* A head entry into it can only come from its own listing (a promotion): all listed. */
    s->kix_upto = k->d.max_version;
    rv->max_version = c->max_version > rv->max_version ? c->max_version : rv->max_version;
    return true;
}

static int
recover_shard(struct recov *rv, struct shard *sh)
{
    struct htkv_db *db = rv->db;
    const struct man_shard *ms = &db->man->shards[sh->id];
    if (!db->unlocked) {
        /* A read-only open checks the same (verify and open agree) and removes nothing; one
         * without the lock may race a writer creating segments, and checks nothing. */
        int rc = sweep_orphans(db, sh, false);
        if (rc != 0) {
            return rc;
        }
    }
    closing_load(rv, sh, ms);
    for (size_t i = 0; i < ms->count; i++) {
        char path[4200];
        htkv_seg_path(path, sizeof(path), sh->dir, ms->seg_ids[i]);
        bool last = i + 1 == ms->count;
        struct seg *s;
        int rc = htkv_seg_open(path, sh->id, ms->seg_ids[i], last ? db->cfg.max_segment_bytes : 0,
                               !db->read_only, &s);
        if (rc == -ENOENT) {
            htkv_set_error("%s: listed in the manifest but missing", path);
            rc = HTKV_ECORRUPT;
        }
        if (rc == 0 && !seg_of_this_store(db, s)) {
            htkv_seg_close(s);
            htkv_set_error("%s: its header names another store (shard count or hash seed)", path);
            rc = HTKV_ECORRUPT;
        }
        if (rc != 0) {
            return rc;
        }
        s->zero_fill = db->cfg.sync_mode == HTKV_SYNC_ALWAYS;
        s->write_through = s->zero_fill;
        s->wt_now = s->zero_fill;
        if (sh->nsegs == sh->segs_cap) {
            size_t cap = sh->segs_cap ? sh->segs_cap * 2 : 8;
            struct seg **n = htkv_mem_realloc(sh->segs, cap * sizeof(*n));
            if (n == NULL) {
                htkv_seg_close(s);
                return -ENOMEM;
            }
            sh->segs = n;
            sh->segs_cap = cap;
        }
        sh->segs[sh->nsegs++] = s;
        if (!rv->cl_ok || last || !trust_seg(rv, sh, s, &rv->cl->segs[i])) {
            rc = recover_seg(rv, sh, s, last);
        }
        if (rc != 0) {
            return rc;
        }
        if (!last) {
            htkv_seg_release_fd(s); /* read through its mapping from now on (seg.h) */
        }
    }
    return 0;
}

/*
 * Resume the version counter (invariant 2): the latest version applied is the largest of those
 * on disk (@p seen), the manifest's applied mark and its batch floor (deletes compacted away take
 * their versions with them); new versions start above the manifest's reservation too, since a
 * crash may have taken back versions acknowledged up to it. A record above the reservation means
 * the manifest is older than the segments (a damaged or replaced manifest): HTKV_ECORRUPT.
 */
static int
recover_versions(struct htkv_db *db, uint64_t seen)
{
    const struct manifest *m = db->man;
    if (m->version_hwm > 0 && seen > m->version_hwm && !db->unlocked) {
        htkv_set_error("%s: records carry version %llu, above the %llu the manifest reserved: "
                       "the manifest is older than the segments; see htkvctl repair",
                       db->dir, (unsigned long long)seen, (unsigned long long)m->version_hwm);
        return HTKV_ECORRUPT;
    }
    uint64_t latest = seen > m->version_applied ? seen : m->version_applied;
    latest = latest > m->batch_floor ? latest : m->batch_floor;
    uint64_t next = (latest > m->version_hwm ? latest : m->version_hwm) + 1;
    db->ver.latest_at_open = latest;
    db->ver.open_next = next;
    atomic_store(&db->ver.next, next);
    atomic_store(&db->ver.hwm, m->version_hwm);
    for (uint32_t i = 0; i < db->shard_count; i++) {
        atomic_store(&db->ro[i].visible, latest);
        db_shard(db, i)->appended = latest;
    }
    return 0;
}

/*
 * The second phase of a writable open, once every check passed: cut the manifest's torn tail,
 * remove what the manifest proves obsolete, zero the segments' torn tails (durable before
 * anything new is appended) and give cut padding back its bytes. Until here recovery changed no
 * byte on disk, so a refused open leaves every file as it was. 0 or an error.
 */
static int
recover_apply(struct htkv_db *db, struct recov *rv)
{
    int rc = htkv_manifest_cut_torn(db->man);
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        rc = sweep_orphans(db, db_shard(db, i), true);
    }
    for (size_t i = 0; i < rv->nfix && rc == 0; i++) {
        const struct fixup *f = &rv->fix[i];
        rc = f->grow ? htkv_seg_grow_to(f->s, f->to) : htkv_seg_zero(f->s, f->from, f->to);
    }
    for (uint32_t i = 0; i < db->shard_count; i++) {
        htkv_shard_release_fds(db_shard(db, i)); /* the fixups reopened some */
    }
    return rc;
}

/* Free what a shard's recovery parked and did not install (a failed open). */
static void
recov_drop_parked(struct recov *rv)
{
    for (size_t i = 0; i < rv->npents; i++) {
        htkv_mem_free(rv->pents[i]);
    }
    for (size_t i = 0; i < rv->nbents; i++) {
        htkv_mem_free(rv->bents[i]);
    }
    rv->npents = rv->nbents = 0;
}

static void
recov_free(struct recov *rv)
{
    htkv_mem_free(rv->pend);
    htkv_mem_free(rv->pents);
    htkv_mem_free(rv->bents);
    htkv_mem_free(rv->fix);
    htkv_mem_free(rv->disc);
}

/* Append @p n elements of @p elem bytes at @p x to vector @p v. 0 or -ENOMEM. */
static int
vec_append(void **v, size_t *len, size_t *cap, size_t elem, const void *x, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = vec_push(v, len, cap, elem, (const unsigned char *)x + i * elem);
    }
    return rc;
}

/* Move what shard recovery @p from found into @p to (its parked parts rebased on to's). */
static int
recov_merge(struct recov *to, struct recov *from)
{
    size_t base = to->npents;
    int rc = vec_append((void **)&to->pents, &to->npents, &to->pents_cap, sizeof(void *),
                        from->pents, from->npents);
    for (size_t i = 0; i < from->npend && rc == 0; i++) {
        struct pend_part p = from->pend[i];
        p.ent_start += base;
        rc = vec_push((void **)&to->pend, &to->npend, &to->pend_cap, sizeof(p), &p);
    }
    if (rc == 0) {
        rc = vec_append((void **)&to->fix, &to->nfix, &to->fix_cap, sizeof(struct fixup), from->fix,
                        from->nfix);
    }
    if (rc == 0) {
        rc = vec_append((void **)&to->disc, &to->ndisc, &to->disc_cap, sizeof(uint64_t), from->disc,
                        from->ndisc);
    }
    if (rc != 0) {
        to->npents = base; /* from keeps its parked entries: the caller frees them */
        return rc;
    }
    from->npents = 0; /* now to's */
    to->max_version = from->max_version > to->max_version ? from->max_version : to->max_version;
    to->closed_upto = from->closed_upto > to->closed_upto ? from->closed_upto : to->closed_upto;
    to->records += from->records;
    to->truncated_bytes += from->truncated_bytes;
    to->skipped_bytes += from->skipped_bytes;
    return 0;
}

/*
 * Shards recover in parallel (htkv_parallel_for(), one thread per CPU): each has its own files,
 * index and struct recov, and nothing else is written until every shard is done (the
 * cross-shard batches, the versions and the fixups run afterwards on the opening thread).
 */
static void
recov_one(void *ctx, uint32_t i)
{
    struct recov *rv = &((struct recov *)ctx)[i];
    htkv_clear_error();
    rv->rc = recover_shard(rv, db_shard(rv->db, i));
    if (rv->rc != 0) {
        snprintf(rv->err, sizeof(rv->err), "%s", htkv_last_error());
    }
}

/* Recover the shards and gather what they found into @p rv (shard order): 0 or the first
 * shard's error, with its message. */
static int
recover_all_shards(struct htkv_db *db, struct recov *rv)
{
    struct recov *rvs = htkv_mem_calloc(db->shard_count, sizeof(*rvs));
    if (rvs == NULL) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < db->shard_count; i++) {
        rvs[i].db = db;
        rvs[i].cl = &rv->cls[i];
    }
    htkv_parallel_for(db->shard_count, db->cpus, recov_one, rvs);
    int rc = 0;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        if (rc == 0 && rvs[i].rc != 0) {
            rc = rvs[i].rc;
            htkv_set_error("%s", rvs[i].err);
        }
        if (rc == 0) {
            rc = recov_merge(rv, &rvs[i]);
        }
        recov_drop_parked(&rvs[i]); /* nothing left after a merge */
        recov_free(&rvs[i]);
    }
    htkv_mem_free(rvs);
    return rc;
}

int
htkv_recover(struct htkv_db *db)
{
    struct recov rv = { .db = db };
    rv.cls = htkv_mem_calloc(db->shard_count, sizeof(*rv.cls));
    int rc = rv.cls == NULL ? -ENOMEM : recover_all_shards(db, &rv);
    if (rc == 0) {
        rc = recover_cross_shard(&rv);
    } else {
        recov_drop_parked(&rv);
    }
    for (uint32_t i = 0; rv.cls != NULL && i < db->shard_count; i++) {
        htkv_closing_free(&rv.cls[i]);
    }
    htkv_mem_free(rv.cls);
    rv.cls = NULL;
    if (rc == 0) {
        rc = recover_versions(db, rv.max_version);
    }
    if (rc == 0 && !db->read_only) {
        rc = recover_apply(db, &rv);
    }
    db->recovery.records = rv.records;
    db->recovery.truncated_bytes = rv.truncated_bytes;
    db->recovery.skipped_bytes = rv.skipped_bytes;
    db->recovery.discarded = rv.disc; /* the store's now, freed with it */
    db->recovery.ndiscarded = rv.ndisc;
    rv.disc = NULL;
    recov_free(&rv);
    if (rc != 0) {
        return rc;
    }
    if (db->recovery.ndiscarded > 1) {
        qsort(db->recovery.discarded, db->recovery.ndiscarded, sizeof(*db->recovery.discarded),
              cmp_u64);
    }
    if (!db->read_only && db->recovery.ndiscarded > 0) {
        /* Durable before anything can raise the batch floor past these versions (invariant 4). */
        int arc =
            htkv_manifest_abort_batches(db->man, db->recovery.discarded, db->recovery.ndiscarded);
        if (arc != 0) {
            htkv_set_error("recording %zu batches not applied in the manifest: %s",
                           db->recovery.ndiscarded, htkv_strerror(arc));
            return arc;
        }
    }
    return 0;
}
