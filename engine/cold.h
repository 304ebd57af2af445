/*
 * cold.h - cold keys: a shard's index entries that left memory under a memory budget, found
 * again through the key index files of sealed segments (store layer; cold.c, kix.h).
 *
 * A key is *cold* when the shard's hash index has no entry for it while a segment in the shard's
 * cold set (shard.h: sealed segments with a key index) lists it. Its newest version is the
 * highest version any of those key indexes lists for it. The rules that make that true:
 *
 *   1. A segment's key index lists the published head entries that pointed into it when it was
 *      written, and a segment gets one only once sealed: no record is ever added to it after.
 *   2. An entry leaves memory (eviction) only when it is its key's head, published, at or below
 *      every open view's snapshot, with no older version kept for a view, and when its segment's
 *      key index, read back, lists exactly it (version and offset). So a view never needs a
 *      version of a cold key other than the newest, and no view is older than it.
 *   3. Nothing writes a cold key: every write first brings its entry back into memory
 *      (promotion, htkv_shard_promote()), so that the write supersedes it as any head.
 *   4. A segment enters the cold set (published, release) before any of its entries leaves
 *      memory, and leaves it only after every cold key whose newest version it holds was
 *      promoted, before compaction reads it (htkv_cold_release_seg()): so compaction sees every
 *      live record's entry in memory as without a budget, and a tombstone it forgets is listed
 *      by no key index in the set. A reader that missed in memory and in one cold set looks
 *      again when the set changed meanwhile (htkv_cold_lookup()), so a key that exists
 *      throughout a read is found.
 *   5. A key index file is used by the open that wrote it, or by a later one only when a clean
 *      close named it in close.state (closing.h) and the store is exactly as that close left
 *      it: so a record an earlier open left, which recovery discarded (a torn or incomplete
 *      batch), is never listed, and the counts of keys whose newest version each file holds are
 *      the close's. Such an open drops every entry it loaded that a taken file lists newer.
 *   6. A key index page that fails its check is never the last word: the segment's records are
 *      read instead (cold_rescue()), its cold keys brought into memory, and its key index
 *      retired through EBR (readers use the kix their cold set holds) and written again.
 */
#ifndef HTKV_ENGINE_COLD_H
#define HTKV_ENGINE_COLD_H

#include "engine/internal.h"
#include "engine/kix.h"
#include "engine/store.h"

/* htkv_cold_lookup(): the key has an entry in memory now; look it up there. */
#define COLD_HOT 1

/* A cold key's newest version, as a lookup found it (record checked). */
struct cold_hit {
    struct seg *seg;
    uint32_t off;
    uint32_t key_len;
    uint32_t val_len;
    uint64_t version;
    bool del;
};

/* The record of @p h and its value. */
static inline const unsigned char *
cold_hit_value(const struct cold_hit *h)
{
    return h->seg->map + h->off + REC_HDR_BYTES + h->key_len;
}

/* One key index's place in a walk (cold_walk). */
struct cold_walk_file {
    uint32_t page; /* the page read into pg */
    bool has;      /* cur is the file's next entry not walked */
    struct kix_page pg;
    struct kix_ent cur;
    /* Private copies of the pages (htkv_kix_page_copy()), two in turn: pg is in buf[which], and
     * the key of the page before stays readable while the walk steps past it. */
    unsigned char *buf[2];
    size_t cap[2];
    unsigned which;
};

/*
 * An ordered walk over the cold keys of one cold set: the key indexes merged, each key once with
 * its newest version among them. Lives inside one EBR section (the set and its files stay
 * valid), on one thread.
 */
struct cold_walk {
    struct htkv_db *db;
    struct shard *sh;
    const struct cold_set *cs;
    struct cold_walk_file *f; /* cs->n */
    struct cold_file bad;     /* after HTKV_ECORRUPT: the file whose page or listing failed */
};

/*
 * Start @p w over @p sh's cold set @p cs (loaded by the caller, acquire) at the first key >=
 * @p key (> with @p after). 0, -ENOMEM or HTKV_ECORRUPT (a page failed its check); free with
 * htkv_cold_walk_end() either way.
 */
int htkv_cold_walk_start(struct cold_walk *w, struct htkv_db *db, struct shard *sh,
                         const struct cold_set *cs, const void *key, uint32_t klen, bool after);

/*
 * The smallest key not walked yet and its newest version (with @p check, its record checked as
 * by lookups), then step past it: 1 and *@p hit, with *@p key pointing at the key in the record
 * (valid only when checked); 0 at the end; HTKV_ECORRUPT.
 */
int htkv_cold_walk_next(struct cold_walk *w, bool check, struct cold_hit *hit,
                        const unsigned char **key);

/* The smallest key not walked yet, not taken: 1 and *@p key, *@p klen; 0 at the end. */
int htkv_cold_walk_peek(const struct cold_walk *w, const unsigned char **key, uint32_t *klen);

void htkv_cold_walk_end(struct cold_walk *w);

/*
 * Set up the memory budget of a writable store after recovery: each shard's share, the shards'
 * hooks, then evict each shard down to its share, on up to one thread per CPU. Without a budget
 * (or read-only), nothing. A key index that cannot be written is logged, and the keys it would
 * have listed stay in memory. 0 or -ENOMEM.
 */
int htkv_cold_setup(struct htkv_db *db);

/*
 * Look up a key that had no entry in @p sh's hash index (inside an EBR section, no lock):
 * 0 and *@p hit; HTKV_ENOTFOUND; COLD_HOT (it has an entry now: find it there); HTKV_ECORRUPT
 * (a key index page or the record failed its check; htkv_last_error() says where).
 */
int htkv_cold_lookup(struct htkv_db *db, struct shard *sh, uint64_t hash, const void *key,
                     uint32_t klen, struct cold_hit *hit);

/*
 * Before compaction reads sealed segment @p s of @p sh (no lock held; compactor.lock): mark it
 * so that it gets no key index and its entries stay in memory from now on, then, if it is in the
 * cold set, bring every cold key whose newest version is in @p s back into memory, a key index
 * page at a time under the shard's lock, and take @p s out of the set. 0, -ENOMEM or HTKV_ECORRUPT
 * (@p s stays in the set; the victim waits for a later pass).
 */
int htkv_cold_release_seg(struct htkv_db *db, struct shard *sh, struct seg *s);

/*
 * A page of segment bad->seg's key index bad->kix failed its check, or a listing did not match
 * its record (HTKV_ECORRUPT from a lookup or a walk over @p sh's cold set): take the shard's
 * lock, read the segment's records instead, bring every cold key whose newest version it holds
 * into memory, take it out of the cold set and retire that key index (the next eviction that
 * indexes sealed segments writes it a new one). The caller looks again. 0 (also when another
 * thread did it first, or the segment has another key index by now), -ENOMEM or HTKV_ECORRUPT
 * (a record fails: the data is damaged; later calls for that segment answer so at once). Any
 * thread, no lock held (inside an EBR section is fine).
 */
int htkv_cold_rescue(struct shard *sh, const struct cold_file *bad);

/*
 * A get found @p key cold: when it was read cold once lately too, bring it into memory if the
 * shard's lock is free now (never waits), then move the eviction hand if that went above the
 * share (it writes no key index: that is left to writers and compaction).
 * Keys read often so end up in memory, keys read once do not displace them, and ordered walks
 * never promote, so a scan does not flush the hot keys. Any thread.
 */
void htkv_cold_touch(struct shard *sh, uint64_t hash, const void *key, uint32_t klen);

/*
 * The compactor's part (compactor.lock held, shard lock not), asked for by an eviction on a
 * reader's thread that fell short because entries that cannot leave yet held most of @p sh's
 * share: seal the active segment if those were its entries, give sealed segments their key
 * indexes, and evict. Writers do this as they write; a store that only reads would otherwise
 * keep those entries for good, and its evictions would fall on the keys its reads bring back.
 * Returns whether it was asked (then the caller may hand the memory the key index builds used
 * back to the system: htkv_mem_give_back()).
 */
bool htkv_cold_idle_work(struct shard *sh);

/*
 * At a clean close, once the manifest recorded it (nothing writes any more): write each shard's
 * close.state (closing.h), naming the key index files of its cold set, so that the next open
 * takes them instead of loading their keys. Only under a memory budget. A failure is logged:
 * the next open then loads every key.
 */
void htkv_cold_record_close(struct htkv_db *db);

/* Memory of @p sh's key indexes and the counters of its budget, added to @p out (lock held). */
void htkv_cold_stats(struct shard *sh, struct htkv_stats *out);

#endif /* HTKV_ENGINE_COLD_H */
