/*
 * cold_set.c - the cold set of a shard and lookups of cold keys (rules in cold.h): publishing a
 * set, the newest version of a key among its key indexes (filter, fences, one page, the record
 * checked), promotion of a cold key into memory, and the rescue of a segment whose key index
 * fails its checks: the segment's records are read instead, each cold key whose newest version
 * it holds comes into memory, and its key index is retired and written again.
 *
 * Invariants
 *   1. A reader finds a key that exists throughout its read: a set is replaced whole (release),
 *      a segment leaves it only after its cold keys were promoted, and a reader that missed in
 *      one set looks again when the set changed (cold.h, rule 4).
 *   2. A key index page or listing that fails is never the last word: only a record that fails
 *      its check makes a read fail (cold.h, rule 6).
 *   3. A key index a reader may still use (through a set it loaded) is freed through EBR only.
 */
#include "engine/cold_int.h"

#include <stdlib.h>

#include "engine/hash.h"
#include "engine/rec.h"

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
int
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
int
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
int
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

int
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
int
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

/* By hash, then newest first: the higher version, then the newer segment (a compaction copy),
 * then the later offset (a batch's later operation on the same key). */
static int
by_hash_version_desc(const void *a, const void *b)
{
    const struct cold_rec *x = a, *y = b;
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
same_key(const struct cold_rec *a, const struct cold_rec *b)
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
rescue_collect_seg(struct shard *sh, struct seg *s, struct cold_rec **v, size_t *len, size_t *cap)
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
            struct cold_rec *n = htkv_mem_realloc(*v, c * sizeof(*n));
            if (n == NULL) {
                return -ENOMEM;
            }
            *v = n;
            *cap = c;
        }
        const unsigned char *key = s->map + w.at + REC_HDR_BYTES;
        (*v)[(*len)++] = (struct cold_rec){ .hash = htkv_hash(key, h.key_len, db->hash_seed),
                                            .version = h.version,
                                            .seg = s,
                                            .off = (uint32_t)w.at };
    }
    return 0;
}

/* The records of segments @p segs[0..n) (rescue_collect_seg()), sorted by hash and newest first,
 * the newest of each key marked. 0 (*out: htkv_mem_free), HTKV_ECORRUPT (*@p failed: the
 * segment whose record failed) or -ENOMEM. */
int
cold_records(struct shard *sh, struct seg *const *segs, size_t n, struct cold_rec **out,
             size_t *nout, struct seg **failed)
{
    struct cold_rec *v = NULL;
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
struct cold_hit
cold_record_hit(const struct cold_rec *x)
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
rescue_key(struct shard *sh, const struct cold_rec *x, struct cold_q *q)
{
    struct cold_hit mine = cold_record_hit(x);
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

/* Is @p s in @p sh's cold set now, with key index @p k (NULL: any)? Lock held. */
bool
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
    struct cold_rec *v = NULL;
    size_t n = 0;
    q->bad = (struct cold_file){ 0 };
    int rc = cold_records(sh, q->skip, q->nskip, &v, &n, failed);
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
    htkv_shard_retire(sh, s->kix, htkv_kix_free); /* readers of an older set may still read it */
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
int
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

/* Does @p e's segment's key index list exactly @p e (rule 2)? A head at or below the index's
 * kix_upto is listed (the index was written from the heads and read back whole; one whose key
 * bytes were damaged was left out and marked COLD_REF_KEEP); another, one published after the
 * index was written, is looked up. */
bool
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
