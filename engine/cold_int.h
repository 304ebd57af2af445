/*
 * cold_int.h - what the memory budget's three files share (store layer; not for other owners,
 * which use cold.h):
 *   cold_set.c     the cold set, lookups of cold keys, their promotion into memory, and the
 *                  rescue of a segment whose key index fails (its records read instead);
 *   cold.c         ordered walks, compaction's release, key index building, eviction, the
 *                  door, setup at open and the counters;
 *   cold_reopen.c  the close's state of each shard (close.state) and the open's adoption of the
 *                  key index files it names.
 * Calls go cold.c -> cold_reopen.c -> cold_set.c and cold.c -> cold_set.c, never back.
 */
#ifndef HTKV_ENGINE_COLD_INT_H
#define HTKV_ENGINE_COLD_INT_H

#include "engine/cold.h"

/* hidx_ent.ref of an entry that must stay in memory (its key bytes were damaged); 1 is CLOCK's
 * "read since the hand last passed", set by readers only where ref is 0. */
#define COLD_REF_KEEP 2u

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

/* A record of a segment read back whole (cold_records()). */
struct cold_rec {
    uint64_t hash;
    uint64_t version;
    struct seg *seg;
    uint32_t off;
    bool newest; /* the newest record of its key among the segments read */
};

/* Publish @p sh's cold set with @p add (@p nadd segments, each with its kix) added and @p drop
 * (may be NULL) removed; the old set is retired through EBR. Lock held. 0 or -ENOMEM. */
int cold_set_replace(struct shard *sh, struct seg *const *add, size_t nadd, const struct seg *drop);

/* The record listing @p e of segment @p s names holds @p key with the listing's type, version
 * and lengths (and, with verify_checksums, its CRC): 0 or HTKV_ECORRUPT. */
int cold_check(struct htkv_db *db, const struct seg *s, const struct kix_ent *e, const void *key,
               uint32_t klen);

/* The newest version of key @p q among the key indexes of @p cs: 0 (*hit, record checked),
 * HTKV_ENOTFOUND or HTKV_ECORRUPT (q->bad: the file whose page or listing failed, if one did). */
int cold_find_q(struct htkv_db *db, struct shard *sh, const struct cold_set *cs, struct cold_q *q,
                struct cold_hit *hit);

/* cold_find_q() of one key, skipping nothing; *@p bad as q->bad. */
int cold_find_in(struct htkv_db *db, struct shard *sh, const struct cold_set *cs, uint64_t hash,
                 const void *key, uint32_t klen, struct cold_hit *hit, struct cold_file *bad);

/* Install the entry of the cold key found as @p hit (lock held). 0 or -ENOMEM. */
int cold_insert(struct shard *sh, uint64_t hash, uint32_t klen, const struct cold_hit *hit);

/* Does @p e's segment's key index list exactly @p e (rule 2 of cold.h)? Lock held. */
bool cold_listed(const struct hidx_ent *e);

/* Every value and tombstone record of segments @p segs[0..n) that a reader may see, checked,
 * sorted by hash and newest first, the newest of each key marked. 0 (*out: htkv_mem_free),
 * HTKV_ECORRUPT (*@p failed: the segment whose record failed) or -ENOMEM. */
int cold_records(struct shard *sh, struct seg *const *segs, size_t n, struct cold_rec **out,
                 size_t *nout, struct seg **failed);

/* Record @p x as a cold key's newest version. */
struct cold_hit cold_record_hit(const struct cold_rec *x);

/* Is @p s in @p sh's cold set now, with key index @p k (NULL: any)? Lock held. */
bool cold_in_set(const struct shard *sh, const struct seg *s, const struct kix *k);

/* htkv_cold_rescue() with the shard's lock held: segment @p s, key index @p k (NULL: any). */
int cold_rescue(struct shard *sh, struct seg *s, const struct kix *k);

/* At open, before any reader: take into @p sh's cold set the key index files recovery took
 * (closing.h), drop the loaded entries they show older, set the counters. Lock held. 0,
 * -ENOMEM or HTKV_ECORRUPT (a segment loaded instead failed its records). */
int cold_adopt(struct shard *sh);

#endif /* HTKV_ENGINE_COLD_INT_H */
