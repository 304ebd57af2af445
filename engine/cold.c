/*
 * cold.c - the memory budget: eviction of index entries to key index files, lookups of cold
 * keys, and their promotion back into memory. The rules are in cold.h.
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
#include "engine/cold.h"

#include <stdlib.h>
#include <unistd.h>

#include "engine/closing.h"
#include "engine/cpus.h"
#include "engine/flat.h"
#include "engine/hash.h"
#include "engine/rec.h"

/* The active segment is sealed early only once it holds this much: smaller segments would cost
 * more in files and manifest edits than their keys cost in memory. */
#define COLD_SEAL_MIN (64u << 10)

/* hidx_ent.ref of an entry that must stay in memory (its key bytes were damaged); 1 is CLOCK's
 * "read since the hand last passed", set by readers only where ref is 0. */
#define COLD_REF_KEEP 2u

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

/* ---- the cold set ---------------------------------------------------------------------------- */

static int
by_max_version_desc(const void *a, const void *b)
{
    const struct cold_file *x = a, *y = b;
    uint64_t vx = x->kix->d.max_version, vy = y->kix->d.max_version;
    return vx < vy ? 1 : (vx > vy ? -1 : 0);
}

/* Publish @p sh's cold set with @p add (@p nadd segments, each with its kix) added and @p drop
 * (may be NULL) removed; the old set is retired through EBR. Lock held. 0 or -ENOMEM. */
static int
cold_set_replace(struct shard *sh, struct seg *const *add, size_t nadd, const struct seg *drop)
{
    struct cold_set *old = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    size_t n = old != NULL ? old->n : 0;
    if (htkv_shard_limbo_reserve(sh, 1) != 0) {
        return -ENOMEM;
    }
    struct cold_set *cs = htkv_mem_alloc(sizeof(*cs) + (n + nadd) * sizeof(cs->f[0]));
    if (cs == NULL) {
        return -ENOMEM;
    }
    cs->n = 0;
    for (size_t i = 0; i < n; i++) {
        if (old->f[i].seg != drop) {
            cs->f[cs->n++] = old->f[i];
        }
    }
    for (size_t i = 0; i < nadd; i++) {
        cs->f[cs->n++] = (struct cold_file){ .seg = add[i], .kix = add[i]->kix };
    }
    qsort(cs->f, cs->n, sizeof(cs->f[0]), by_max_version_desc);
    /* Rule 4: published before any entry of an added segment leaves the hash index. */
    atomic_store_explicit(&sh->cold, cs, memory_order_release);
    if (old != NULL) {
        htkv_ebr_retire(sh->env->ebr, &sh->limbo, old, htkv_mem_free);
    }
    return 0;
}

/* ---- lookups --------------------------------------------------------------------------------- */

/* The record a key index entry names holds @p key with that entry's type, version and lengths
 * (and, with verify_checksums, its CRC): 0 or HTKV_ECORRUPT. */
static int
cold_check(struct htkv_db *db, const struct seg *s, const struct kix_ent *e, const void *key,
           uint32_t klen)
{
    const unsigned char *rec = s->map + e->off;
    struct rec_hdr h;
    htkv_rec_hdr_decode(rec, &h);
    bool ok = h.type == e->type && h.version == e->version && h.key_len == klen &&
              h.val_len == e->val_len && memcmp(rec + REC_HDR_BYTES, key, klen) == 0;
    if (ok && db->cfg.verify_checksums > 0) {
        ok = htkv_rec_verify_crc(rec, s->id, e->off, &h) == 0;
    }
    if (!ok) {
        htkv_set_error("%s: the record at offset %u, named by the segment's key index, does not "
                       "hold the key read",
                       s->path, e->off);
        return HTKV_ECORRUPT;
    }
    return 0;
}

/* A key looked up among key indexes: its bytes and hash; segments whose key indexes a lookup
 * skips (none when nskip is 0), and where it reports one whose page failed its check
 * (cold_rescue()). */
struct cold_q {
    uint64_t hash;
    const void *key;
    uint32_t klen;
    struct seg *const *skip;
    size_t nskip;
    struct cold_file bad; /* seg NULL: none */
};

/* Does @p q skip the key index of @p s? */
static bool
cold_q_skips(const struct cold_q *q, const struct seg *s)
{
    for (size_t i = 0; i < q->nskip; i++) {
        if (q->skip[i] == s) {
            return true;
        }
    }
    return false;
}

/* The newest version of key @p q among the key indexes of @p cs: 0 (*hit, record checked),
 * HTKV_ENOTFOUND or HTKV_ECORRUPT (q->bad: the segment whose key index page failed, else the
 * record did). Segments come highest max_version first, so the search ends at the first whose
 * versions are all below what was found. */
static int
cold_find_q(struct htkv_db *db, struct shard *sh, const struct cold_set *cs, struct cold_q *q,
            struct cold_hit *hit)
{
    struct kix_ent best = { 0 };
    const struct seg *from = NULL;
    const struct kix *from_kix = NULL;
    uint64_t hash = q->hash;
    const void *key = q->key;
    uint32_t klen = q->klen;
    for (uint32_t i = 0; i < cs->n; i++) {
        const struct seg *s = cs->f[i].seg;
        const struct kix *k = cs->f[i].kix;
        if (from != NULL && best.version > k->d.max_version) {
            break;
        }
        if (cold_q_skips(q, s)) {
            continue;
        }
        if (!htkv_kix_may_contain(k, hash)) {
            atomic_fetch_add_explicit(&sh->bloom_negatives, 1, memory_order_relaxed);
            continue;
        }
        struct kix_ent e;
        uint64_t reads = 0;
        int rc = htkv_kix_find(k, key, klen, hash, &e, &reads);
        atomic_fetch_add_explicit(&sh->kix_page_reads, reads, memory_order_relaxed);
        if (rc == HTKV_ENOTFOUND) {
            atomic_fetch_add_explicit(&sh->bloom_false_positives, reads, memory_order_relaxed);
            continue;
        }
        if (rc != 0) {
            q->bad = cs->f[i];
            return rc;
        }
        /* A tie is a record and its compaction copy: the copy, in the newer segment, wins, so
         * that nothing promoted points into a victim about to be dropped. */
        if (from == NULL || e.version > best.version ||
            (e.version == best.version && s->id > from->id)) {
            best = e;
            from = s;
            from_kix = k;
        }
    }
    if (from == NULL) {
        return HTKV_ENOTFOUND;
    }
    *hit = (struct cold_hit){ .seg = (struct seg *)from,
                              .off = best.off,
                              .key_len = klen,
                              .val_len = best.val_len,
                              .version = best.version,
                              .del = best.type == REC_DEL };
    int rc = cold_check(db, from, &best, key, klen);
    if (rc != 0) { /* the listing or the record: a rescue tells which */
        q->bad = (struct cold_file){ .seg = (struct seg *)from, .kix = (struct kix *)from_kix };
    }
    return rc;
}

static int
cold_find_in(struct htkv_db *db, struct shard *sh, const struct cold_set *cs, uint64_t hash,
             const void *key, uint32_t klen, struct cold_hit *hit, struct cold_file *bad)
{
    struct cold_q q = { .hash = hash, .key = key, .klen = klen };
    int rc = cold_find_q(db, sh, cs, &q, hit);
    *bad = q.bad;
    return rc;
}

int
htkv_cold_lookup(struct htkv_db *db, struct shard *sh, uint64_t hash, const void *key,
                 uint32_t klen, struct cold_hit *hit)
{
    for (;;) {
        const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_acquire);
        if (htkv_hidx_find(&sh->idx, hash, key, klen) != NULL) {
            return COLD_HOT;
        }
        struct cold_file bad = { 0 };
        int rc = cs != NULL ? cold_find_in(db, sh, cs, hash, key, klen, hit, &bad) : HTKV_ENOTFOUND;
        if (rc == HTKV_ECORRUPT && bad.seg != NULL) {
            rc = htkv_cold_rescue(sh, &bad); /* its keys come into memory: look again */
            if (rc != 0) {
                return rc;
            }
            continue;
        }
        if (rc != HTKV_ENOTFOUND) {
            return rc;
        }
        /* Rule 4: a set replaced since it was loaded may have taken the key along with it. */
        if (atomic_load_explicit(&sh->cold, memory_order_acquire) == cs) {
            return HTKV_ENOTFOUND;
        }
    }
}

/* Install the entry of the cold key found as @p hit (lock held). 0 or -ENOMEM. */
static int
cold_insert(struct shard *sh, uint64_t hash, uint32_t klen, const struct cold_hit *hit)
{
    bool trie = atomic_load_explicit(&sh->trie_ready, memory_order_relaxed);
    int rc = htkv_shard_limbo_reserve(sh, 2); /* a replaced table, and the eviction after */
    if (rc == 0) {
        rc = htkv_hidx_reserve(&sh->idx, 1, htkv_shard_retire_table, sh);
    }
    if (rc == 0 && trie) {
        rc = htkv_trie_reserve(&sh->trie, 1);
    }
    struct hidx_ent *e = rc == 0 ? htkv_shard_ent_new(sh) : NULL;
    if (e == NULL) {
        return -ENOMEM;
    }
    *e = (struct hidx_ent){ .version = hit->version,
                            .hash = hash,
                            .seg = hit->seg,
                            .off = hit->off,
                            .rec_bytes = REC_HDR_BYTES + klen + hit->val_len,
                            .key_len = klen,
                            .del = hit->del,
                            .checked = sh->db->cfg.verify_checksums > 0 }; /* cold_check() */
    struct hidx_ent *old = htkv_hidx_install(&sh->idx, e, &rc, htkv_shard_retire_table, sh);
    HTKV_ASSERT(rc == 0 && old == NULL); /* room reserved above; the key had no entry */
    if (trie) {
        void *prev;
        rc = htkv_trie_insert(&sh->trie, e, &prev);
        HTKV_ASSERT(rc == 0 && prev == NULL);
    }
    HTKV_DASSERT(sh->cold_keys > 0);
    sh->cold_keys -= sh->cold_keys > 0;
    uint32_t *heads = hit->del ? &hit->seg->cold_dels : &hit->seg->cold_vals;
    HTKV_DASSERT(*heads > 0);
    *heads -= *heads > 0;
    sh->promotions++;
    return 0;
}

/* ---- key indexes whose pages fail: their segments' records instead ------------------------- */

/* Segments rescued together at most: a lookup for one may meet another damaged key index. */
#define COLD_RESCUE_MAX 16u

/* A record of a segment read back whole (rescue_collect()). */
struct rescue_rec {
    uint64_t hash;
    uint64_t version;
    struct seg *seg;
    uint32_t off;
    bool newest; /* the newest record of its key among the segments read */
};

/* By hash, then newest first: the higher version, then the newer segment (a compaction copy),
 * then the later offset (a batch's later operation on the same key). */
static int
by_hash_version_desc(const void *a, const void *b)
{
    const struct rescue_rec *x = a, *y = b;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    if (x->version != y->version) {
        return x->version < y->version ? 1 : -1;
    }
    if (x->seg != y->seg) {
        return x->seg->id < y->seg->id ? 1 : -1;
    }
    return x->off < y->off ? 1 : (x->off > y->off ? -1 : 0);
}

/* Do records @p a and @p b hold the same key? */
static bool
same_key(const struct rescue_rec *a, const struct rescue_rec *b)
{
    struct rec_hdr x, y;
    htkv_rec_hdr_decode(a->seg->map + a->off, &x);
    htkv_rec_hdr_decode(b->seg->map + b->off, &y);
    return x.key_len == y.key_len && memcmp(a->seg->map + a->off + REC_HDR_BYTES,
                                            b->seg->map + b->off + REC_HDR_BYTES, x.key_len) == 0;
}

/* Append to @p v every value and tombstone record of sealed segment @p s that a reader may see
 * (published; not of a batch a recovery found incomplete), each checked whole. 0,
 * HTKV_ECORRUPT (a record fails its check: the segment itself is damaged) or -ENOMEM. */
static int
rescue_collect_seg(struct shard *sh, struct seg *s, struct rescue_rec **v, size_t *len, size_t *cap)
{
    struct htkv_db *db = sh->db;
    uint64_t visible = atomic_load_explicit(&sh->env->ro[sh->id].visible, memory_order_relaxed);
    struct rec_walk w;
    struct rec_hdr h;
    enum rec_walk_res r;
    htkv_rec_walk_init(&w, s->map, s->id, SEG_DATA_OFF, s->tail, db->cfg.max_value_bytes);
    while ((r = htkv_rec_walk_next(&w, &h)) != REC_WALK_END) {
        if (r != REC_WALK_RECORD) {
            htkv_set_error("%s: damaged record at offset %llu", s->path, (unsigned long long)w.at);
            return HTKV_ECORRUPT;
        }
        if ((h.type != REC_SET && h.type != REC_DEL) || h.version > visible ||
            ((h.flags & REC_F_BATCH) != 0 && htkv_manifest_batch_aborted(db->man, h.version))) {
            continue;
        }
        if (*len == *cap) {
            size_t c = *cap ? *cap * 2 : 1024;
            struct rescue_rec *n = htkv_mem_realloc(*v, c * sizeof(*n));
            if (n == NULL) {
                return -ENOMEM;
            }
            *v = n;
            *cap = c;
        }
        const unsigned char *key = s->map + w.at + REC_HDR_BYTES;
        (*v)[(*len)++] = (struct rescue_rec){ .hash = htkv_hash(key, h.key_len, db->hash_seed),
                                              .version = h.version,
                                              .seg = s,
                                              .off = (uint32_t)w.at };
    }
    return 0;
}

/* The records of segments @p segs[0..n) (rescue_collect_seg()), sorted by hash and newest first,
 * the newest of each key marked. 0 (*out: htkv_mem_free), HTKV_ECORRUPT (*@p failed: the
 * segment whose record failed) or -ENOMEM. */
static int
rescue_collect(struct shard *sh, struct seg *const *segs, size_t n, struct rescue_rec **out,
               size_t *nout, struct seg **failed)
{
    struct rescue_rec *v = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    *failed = NULL;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = rescue_collect_seg(sh, segs[i], &v, &len, &cap);
        *failed = rc == HTKV_ECORRUPT ? segs[i] : NULL;
    }
    if (rc != 0) {
        htkv_mem_free(v);
        return rc;
    }
    qsort(v, len, sizeof(*v), by_hash_version_desc);
    for (size_t i = 0; i < len; i++) {
        v[i].newest = true; /* unless a newer record of its key came before it */
        for (size_t j = i; j-- > 0 && v[j].hash == v[i].hash;) {
            if (same_key(&v[j], &v[i])) {
                v[i].newest = false;
                break;
            }
        }
    }
    *out = v;
    *nout = len;
    return 0;
}

/* Record @p x as a cold key's newest version. */
static struct cold_hit
rescue_hit(const struct rescue_rec *x)
{
    struct rec_hdr h;
    htkv_rec_hdr_decode(x->seg->map + x->off, &h);
    return (struct cold_hit){ .seg = x->seg,
                              .off = x->off,
                              .key_len = h.key_len,
                              .val_len = h.val_len,
                              .version = h.version,
                              .del = h.type == REC_DEL };
}

/*
 * Bring the key of record @p x into memory when @p x is its newest version: no entry in memory,
 * none newer (nor a copy in a newer segment) in the rest of the cold set, which @p q skips the
 * rescued segments of. Lock held. 0, -ENOMEM or HTKV_ECORRUPT (q->bad: another key index
 * failed too).
 */
static int
rescue_key(struct shard *sh, const struct rescue_rec *x, struct cold_q *q)
{
    struct cold_hit mine = rescue_hit(x);
    const unsigned char *key = x->seg->map + x->off + REC_HDR_BYTES;
    if (!x->newest || htkv_hidx_find(&sh->idx, x->hash, key, mine.key_len) != NULL) {
        return 0;
    }
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    q->hash = x->hash;
    q->key = key;
    q->klen = mine.key_len;
    q->bad = (struct cold_file){ 0 };
    struct cold_hit other;
    int rc = cold_find_q(sh->db, sh, cs, q, &other);
    if (rc == 0 && (other.version > mine.version ||
                    (other.version == mine.version && other.seg->id > x->seg->id))) {
        return 0; /* not its newest version */
    }
    if (rc != 0 && rc != HTKV_ENOTFOUND) {
        return rc;
    }
    return cold_insert(sh, x->hash, mine.key_len, &mine);
}

static void
kix_free(void *p)
{
    htkv_kix_close(p);
    htkv_mem_free(p);
}

/* Is @p s in @p sh's cold set now, with key index @p k (NULL: any)? Lock held. */
static bool
cold_in_set(const struct shard *sh, const struct seg *s, const struct kix *k)
{
    const struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    for (uint32_t i = 0; cs != NULL && i < cs->n; i++) {
        if (cs->f[i].seg == s) {
            return k == NULL || cs->f[i].kix == k;
        }
    }
    return false;
}

/* Bring into memory every cold key whose newest version one of @p q->skip[0..nskip) holds,
 * from their records. Lock held. 0, -ENOMEM or HTKV_ECORRUPT (q->bad.seg: a key index not in
 * the list failed too; else *@p failed: the segment whose record failed, or NULL). */
static int
rescue_run(struct shard *sh, struct cold_q *q, struct seg **failed)
{
    struct rescue_rec *v = NULL;
    size_t n = 0;
    q->bad = (struct cold_file){ 0 };
    int rc = rescue_collect(sh, q->skip, q->nskip, &v, &n, failed);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = rescue_key(sh, &v[i], q);
    }
    htkv_mem_free(v);
    return rc;
}

/* Take rescued segment @p s out of the cold set and retire its key index, so that the next
 * eviction that indexes sealed segments writes it a new one. Lock held. 0 or -ENOMEM. */
static int
rescue_drop(struct shard *sh, struct seg *s)
{
    int rc = cold_set_replace(sh, NULL, 0, s);
    if (rc != 0 || s->cold_out) {
        return rc; /* a compaction victim keeps its file until it is dropped */
    }
    if (htkv_shard_limbo_reserve(sh, 1) != 0) {
        s->cold_out = true; /* no room to retire it: its keys stay in memory */
        return 0;
    }
    htkv_shard_retire(sh, s->kix, kix_free); /* readers of an older set may still read it */
    s->kix = NULL;
    s->kix_upto = 0;
    if (sh->kix_done_id >= s->id) {
        sh->kix_done_id = s->id - 1;
    }
    return 0;
}

/*
 * A page of @p s's key index failed its check (the file was damaged after it was written or
 * taken), or a listing did not match its record: read the segment's records instead, bring every
 * cold key whose newest version it holds into memory, take it out of the cold set and retire its
 * key index, so that the next eviction writes it a new one. Another damaged key index met on the
 * way joins the rescue (its keys are compared with the rescued ones by their records). Lock held. 0
 * (also when @p s is not in the set any more), -ENOMEM or HTKV_ECORRUPT (a record fails: the data
 * itself is damaged).
 */
static int
cold_rescue(struct shard *sh, struct seg *s, const struct kix *k)
{
    if (!cold_in_set(sh, s, k)) {
        return 0; /* rescued, released or indexed again already */
    }
    if (s->rescue_failed) {
        htkv_set_error("%s: a damaged record (its key index was checked against its records)",
                       s->path);
        return HTKV_ECORRUPT; /* not again for every read of it */
    }
    struct seg *segs[COLD_RESCUE_MAX] = { s }, *failed = NULL;
    struct cold_q q = { .skip = segs, .nskip = 1 };
    int rc;
    for (;;) {
        htkv_log(&sh->env->log, HTKV_LOG_ERROR,
                 "%s: a page of its key index fails its check; reading its records instead (%s)",
                 segs[q.nskip - 1]->path, htkv_last_error());
        rc = rescue_run(sh, &q, &failed);
        if (rc != HTKV_ECORRUPT || q.bad.seg == NULL || q.nskip == COLD_RESCUE_MAX ||
            q.bad.seg->rescue_failed || !cold_in_set(sh, q.bad.seg, q.bad.kix)) {
            break;
        }
        segs[q.nskip++] = q.bad.seg; /* the keys brought back so far stay: each was right */
    }
    if (rc == HTKV_ECORRUPT && failed != NULL) {
        failed->rescue_failed = true; /* its records fail: the data is damaged, not a listing */
    }
    for (size_t i = 0; rc == 0 && i < q.nskip; i++) {
        rc = rescue_drop(sh, segs[i]);
    }
    return rc;
}

int
htkv_cold_rescue(struct shard *sh, const struct cold_file *bad)
{
    pthread_mutex_lock(&sh->lock);
    int rc = cold_rescue(sh, bad->seg, bad->kix);
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/* ---- ordered walks --------------------------------------------------------------------------- */

/* File @p f's page changed under the mapping while walked (the file was written). */
static int
walk_changed(struct cold_walk *w, const struct cold_walk_file *f)
{
    w->bad = w->cs->f[f - w->f]; /* for htkv_cold_rescue() */
    htkv_set_error("key index of segment %llu: a page changed while read",
                   (unsigned long long)w->bad.seg->id);
    return HTKV_ECORRUPT;
}

int
htkv_cold_walk_verify(struct cold_walk *w)
{
    for (uint32_t i = 0; i < w->cs->n; i++) {
        if (w->f[i].has && !htkv_kix_page_same(&w->f[i].pg)) {
            return walk_changed(w, &w->f[i]);
        }
    }
    return 0;
}

/* Move @p f to its next entry, reading the next page when one ends (which must still be as it
 * was checked). 0 or HTKV_ECORRUPT. */
static int
walk_advance(struct cold_walk *w, struct cold_walk_file *f, const struct kix *k)
{
    while (!htkv_kix_page_next(&f->pg, &f->cur)) {
        if (!htkv_kix_page_same(&f->pg)) {
            f->has = false;
            return walk_changed(w, f);
        }
        if (f->page + 1 >= k->pages) {
            f->has = false;
            return 0;
        }
        f->page++;
        atomic_fetch_add_explicit(&w->sh->kix_page_reads, 1, memory_order_relaxed);
        int rc = htkv_kix_page(k, f->page, &f->pg);
        if (rc != 0) {
            f->has = false;
            w->bad = w->cs->f[f - w->f]; /* for htkv_cold_rescue() */
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
        atomic_fetch_add_explicit(&sh->kix_page_reads, 1, memory_order_relaxed);
        int rc = htkv_kix_page(k, f->page, &f->pg);
        w->bad = rc != 0 ? cs->f[i] : (struct cold_file){ 0 };
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
            htkv_kix_close(add[i]->kix);
            htkv_mem_free(add[i]->kix);
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

/* Does @p e's segment's key index list exactly @p e (rule 2)? A head at or below the index's
 * kix_upto is listed (the index was written from the heads and read back whole; one whose key
 * bytes were damaged was left out and marked COLD_REF_KEEP); another, one published after the
 * index was written, is looked up. */
static bool
cold_listed(const struct hidx_ent *e)
{
    if (e->version <= e->seg->kix_upto) {
        return true; /* a damaged one is COLD_REF_KEEP: the hand never gets here with it */
    }
    struct kix_ent k;
    uint64_t reads = 0;
    int rc = htkv_kix_find(e->seg->kix, hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len, e->hash, &k,
                           &reads);
    return rc == 0 && k.version == e->version && k.off == e->off &&
           k.type == (e->del ? REC_DEL : REC_SET);
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
cold_load_rec(struct shard *sh, struct seg *s, const struct rescue_rec *x)
{
    struct cold_hit h = rescue_hit(x);
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
                            .checked = 1 }; /* rescue_collect() checked it */
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
    htkv_kix_close(s->kix); /* no reader yet */
    htkv_mem_free(s->kix);
    s->kix = NULL;
    s->kix_upto = 0;
    s->cold_vals = s->cold_dels = 0;
    atomic_store_explicit(&s->live_bytes, 0, memory_order_relaxed);
    atomic_store_explicit(&s->dead_bytes, 0, memory_order_relaxed);
    struct rescue_rec *v = NULL;
    size_t n = 0;
    struct seg *failed;
    rc = rescue_collect(sh, &s, 1, &v, &n, &failed);
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
static int
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
        size_t lo = 0, hi = sh->nsegs; /* segs in ascending id order */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (sh->segs[mid]->id < e->seg->id) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
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
