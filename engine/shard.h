/*
 * shard.h - the shard: one slice of the key space with its own segments, hash index, trie and
 * visible version (shard layer).
 *
 * A shard owns an ordered list of segments (the last one active), a hash index and a visible
 * version. In inline mode, writers of a shard serialise on shard->lock; readers never take it.
 *
 * Invariants: versions are installed in increasing order within a shard (assigned under its
 * lock), so its visible version only grows; an entry is published only after its record is in
 * the page cache. The shard layer may call the base, formats and index layers; it never includes
 * the store (store.h) or anything above it.
 */
#ifndef HTKV_ENGINE_SHARD_H
#define HTKV_ENGINE_SHARD_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/ebr.h"
#include "engine/hashindex.h"
#include "engine/internal.h"
#include "engine/log.h"
#include "engine/periodic.h"
#include "engine/hist.h"
#include "engine/seg.h"
#include "engine/trie.h"
#include "engine/versions.h"

struct htkv_db;
struct manifest;
struct shard;
struct shard_ro;

/* A sealed segment of a cold set and the key index readers use for it (the segment's own kix
 * pointer is the writers', under the lock: a damaged one is replaced while readers still hold
 * the old set, and is retired through EBR). */
struct cold_file {
    struct seg *seg;
    struct kix *kix;
};

/* A shard's sealed segments that have a key index (cold.h), highest max_version first: one
 * allocation, published whole and retired through EBR when replaced. */
struct cold_set {
    uint32_t n;
    struct cold_file f[];
};

/*
 * What the shards of one store share. The store embeds it and fills it at open, before it
 * creates the first shard; each shard keeps a pointer. Everything but the atomics is fixed once
 * the shards exist.
 */
struct shard_env {
    const char *dir;            /* the store's directory: shard-SSS lives under it */
    uint64_t max_segment_bytes; /* htkv_config */
    int sync_mode;              /* htkv_config: HTKV_SYNC_* */
    int verify_checksums;       /* htkv_config: 0, 1 or 2 */
    bool sorted_runs;           /* htkv_config: ordered reads may build sorted runs (flat.h) */
    uint32_t shard_count;
    uint64_t hash_seed;
    struct manifest *man;
    struct ebr *ebr;
    struct versions *ver;
    struct shard_ro *ro; /* shard_count entries: ro[i] holds shard i's visible version */
    struct htkv_log_sink log;
    /* Threads that sleep untimed while the store is idle. A shard calls dirtied(dirtied_ctx,
     * its id), when set, as it goes from clean to dirty, under its lock: the store wakes
     * whoever syncs it (the INTERVAL syncer, or the shard's worker). It kicks the compactor
     * (periodic.h; never started, a kick does nothing) when it publishes a write. */
    void (*dirtied)(void *ctx, uint32_t id);
    void *dirtied_ctx;
    struct periodic *compactor;
    /* The memory budget (htkv_config.memory_budget_bytes; cold.h): each shard's share of it in
     * bytes, 0 = none. With a share, a shard calls promote(sh, ...) before it writes a key that
     * may be cold (lock held: brings the key's entry back into memory; 0 or an error that fails
     * the write), and over_budget(sh) after a publish that left it above its share (lock held).
     * Set by the store before the shards take writes. */
    uint64_t budget_share;
    int (*promote)(struct shard *sh, uint64_t hash, const void *key, uint32_t klen);
    void (*over_budget)(struct shard *sh);
    /* Store-wide states the shards set and the store reports. */
    _Alignas(HTKV_CACHELINE) _Atomic int no_space; /* ENOSPC seen: writes refused until reopen */
    _Atomic int failed;                            /* a shard failed (write or fdatasync) */
    _Atomic uint64_t syncs;                        /* fdatasyncs of segments */
};

/* Reclaim retired memory every 64 retirements: one slot scan (256 lines) per 64 writes. */
#define SHARD_RECLAIM_EVERY 64u

/* Limbo room a write reserves beside two a new entry (the version it replaces, a trie node): a
 * hash table replaced by a resize, a sorted run, a merge path, a cold set. */
#define SHARD_LIMBO_SLACK 8u

/*
 * A put or delete staged as part of a group (putgroup.c; worker.c): the caller's
 * command, and what staging made of it (rc, version). Lives on its caller's stack (or in a
 * worker's scratch array) until it is done.
 */
struct put_req {
    struct put_req *next;
    const void *key;
    const void *val;
    uint32_t klen, vlen;
    uint64_t hash;
    uint64_t version; /* staged version; 0 when staging failed */
    struct hidx_ent *ent;
    int rc;
    uint8_t type;           /* REC_SET or REC_DEL */
    bool counted;           /* put groups: still counted in active_writers */
    _Atomic uint32_t state; /* put groups: PR_* (putgroup.c) */
};

struct shard {
    pthread_mutex_t lock; /* writers of this shard */
    struct shard_env *env;
    /* The store that owns the shard, for its callers that hold only the shard: opaque here (the
     * shard layer never looks into it). */
    struct htkv_db *db;
    uint32_t id;
    unsigned arena; /* its worker's (internal.h): entries, tables and trie nodes come from it */
    struct hidx idx;
    struct seg **segs; /* every segment, ascending id; segs[nsegs - 1] is active */
    size_t nsegs;
    size_t segs_cap;
    struct ebr_limbo limbo;
    unsigned since_reclaim;
    bool failed;        /* an fdatasync failed: writes refused until reopen */
    _Atomic bool dirty; /* appends not yet fdatasynced */
    /* Entries installed but not yet visible (their version > visible), in version order. */
    struct hidx_ent **pending;
    size_t pend_head, pend_count, pend_cap;
    uint64_t appended;       /* highest version appended to this shard */
    uint64_t view_floor;     /* smallest snapshot of an open view; UINT64_MAX = none */
    struct trie trie;        /* ordered index of head entries, once trie_ready */
    _Atomic bool trie_ready; /* built on the first ordered query, maintained after */
    /* Set (before trie_ready) when the trie's build met an entry whose record's key bytes were
     * damaged after its hint was written: the id of its segment (0 = none) and its offset.
     * Ordered queries of the shard fail with HTKV_ECORRUPT rather than leave out a key they
     * cannot place. A restore clears it. */
    uint64_t damaged_seg;
    uint32_t damaged_off;
    bool syncing;               /* a group sync is in flight (HTKV_SYNC_ALWAYS) */
    pthread_cond_t synced_cond; /* signalled when a group sync ends */
    /* Callers' group syncs (HTKV_SYNC_ALWAYS): syncs_done counts those ended (lock); the writers
     * covered by sync number k sleep on sync_word[k & 1], bumped (then woken) when it ends. */
    uint64_t syncs_done;
    _Atomic uint32_t sync_word[2];
    _Atomic uint32_t sync_sleepers; /* callers asleep on a sync_word (counted under the lock) */
    /* Gathering: before a group sync the leader waits (at most half the last sync's time, on
     * staged_cond) until as many writes are staged as callers are inside htkv_put/delete on this
     * shard (active_writers), so that writers just woken by the previous sync make this one. */
    _Atomic uint32_t active_writers;
    bool gathering;
    pthread_cond_t staged_cond; /* CLOCK_MONOTONIC */
    /* Inline puts and deletes in HTKV_SYNC_ALWAYS (putgroup.c): callers push their
     * request on a lock-free stack (intake, intake_n of them) and sleep on done_word; the one
     * that sets `leading` drains the stack, stages the whole group under the lock with one
     * pwrite() and covers it with one fdatasync, then bumps done_word and wakes them. */
    struct put_req *_Atomic intake;
    _Atomic uint32_t intake_n;
    _Atomic uint32_t leading;
    _Atomic uint32_t done_word;
    _Atomic uint64_t last_sync_ns; /* duration of the last group sync (relaxed) */
    uint64_t live_keys;
    uint64_t tombstones;
    uint64_t entry_bytes;
    uint64_t puts, deletes, batches;
    /* Sorted run of the trie for ordered reads (run.h): NULL = none. run_credit counts the keys
     * readers walked in the trie since it last changed (run_credit_gen: its generation then);
     * run_building admits one builder. */
    struct shard_run *_Atomic run;
    _Atomic uint64_t run_credit;
    _Atomic uint64_t run_credit_gen;
    _Atomic bool run_building;
    struct shard_metrics metrics;
    /* Cold keys (cold.c; all zero without a memory budget). The set is published for lock-free
     * readers and replaced under the lock; the counters below it are written under the lock,
     * the lookups' counters by readers (relaxed). */
    struct cold_set *_Atomic cold;
    uint64_t cold_keys;
    uint64_t evictions, promotions;
    uint64_t cold_at_open; /* cold keys the open took from a clean close's key indexes */
    uint64_t clock_hand;   /* next slot the eviction hand looks at */
    uint64_t kix_done_id;  /* sealed segments up to this id were given a key index (or none) */
    uint64_t evict_retry;  /* memory at which eviction tries again after a pass fell short */
    uint64_t evict_floor;  /* view_floor then: a view that closed since lets it try at once */
    bool seal_early;       /* seal the active segment at the next write (its keys may leave) */
    bool cold_idle;        /* readers' evictions fell short: the compactor seals and indexes */
    bool cold_stuck;       /* that failed: no more asking until a write's eviction indexes */
    _Atomic uint64_t kix_page_reads, bloom_negatives, bloom_false_positives;
    /* Cold keys read once lately (cold.c's door: a bit per hash, COLD_DOOR_BITS of them,
     * cleared every COLD_DOOR_BITS / 16 sets); NULL without a budget. */
    _Atomic uint64_t *door;
    _Atomic uint32_t door_sets;
    char dir[]; /* path of shard-SSS */
};

/* Per-shard fields readers touch, on their own cache line (shard structs are variable-size). */
struct shard_ro {
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t visible; /* every version <= it is installed */
    struct shard *shard;
};

/* Create shard @p id of the store @p owner (shard-SSS under env->dir), allocating from @p arena.
 * 0 or -ENOMEM. */
int htkv_shard_create(struct shard_env *env, struct htkv_db *owner, uint32_t id, unsigned arena,
                      struct shard **out);
/* Free @p sh (NULL: nothing) and close its segments. Its sorted run must be gone already
 * (htkv_run_fini(), flat.h: the shard never calls the layer file above it). */
void htkv_shard_destroy(struct shard *sh);
int htkv_shard_new_segment(struct shard *sh, uint64_t need);
void htkv_shard_retire_table(void *ctx, void *table);
void htkv_shard_retire_ent(struct shard *sh, struct hidx_ent *e);

/* One group sync of everything staged so far, as the leader (lock held, released during the
 * fdatasync; syncing set by the caller). Returns the fdatasync's result; the shard has failed
 * when it is not 0. */
int htkv_shard_group_sync(struct shard *sh);

/* Longest gathering wait before a group sync, whatever the syncs cost. */
#define SHARD_GATHER_MAX_NS 500000u

/* How long a writer's group sync waits for writers just woken to come back, after a sync that
 * took @p last_sync_ns: twice that, at most SHARD_GATHER_MAX_NS (put groups, putgroup.c, and
 * workers, worker.c; the measurements are in putgroup.c's group_gather()). */
static inline uint64_t
htkv_shard_gather_limit(uint64_t last_sync_ns)
{
    uint64_t limit = 2 * last_sync_ns;
    return limit > SHARD_GATHER_MAX_NS ? SHARD_GATHER_MAX_NS : limit;
}

/*
 * Single-op fast path used by htkv_put/htkv_delete on shard @p sh (the key's), except in inline
 * HTKV_SYNC_ALWAYS (put groups, putgroup.h): stage, commit and publish under the shard lock,
 * returning once the write is durable and visible. A non-zero @p t0_ns (htkv_now_ns() when the
 * caller's call began) records the call's latency in the shard's put or delete histogram; 0 records
 * nothing (a worker: the caller's latency is recorded at completion).
 */
int htkv_shard_put1(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
                    uint32_t vlen, uint64_t hash, uint64_t *version, uint64_t t0_ns);

/*
 * Stage one put or delete in @p sh (lock held): prepare, append, install as a pending entry.
 * Sets *version. The write is not visible until htkv_shard_publish() covers its version.
 */
int htkv_shard_stage1(struct shard *sh, uint8_t type, const void *key, uint32_t klen,
                      const void *val, uint32_t vlen, uint64_t hash, uint64_t *version);

/*
 * Stage the puts and deletes of @p list (linked by next, all of shard @p sh) in order, lock
 * held: each gets rc, and version when rc is 0 (a delete of an absent key: HTKV_ENOTFOUND).
 * Their records go out with one write (more only around deletes and segment rotations); a
 * failed write fails every request it carried and stops the shard. Returns the highest
 * version staged, 0 for none. Nothing is visible until htkv_shard_publish() covers it.
 */
uint64_t htkv_shard_stage_group(struct shard *sh, struct put_req *list);

/* Make every staged version <= @p version visible and retire what it superseded (lock held).
 * Kicks the compactor (env->compactor). */
void htkv_shard_publish(struct shard *sh, uint64_t version);

/* Appends of @p sh are not fdatasynced yet: set `dirty`, and on its change from clean call
 * env->dirtied. Lock held. */
void htkv_shard_mark_dirty(struct shard *sh);

/* Retire what open views no longer need after view_floor rose (lock held). */
void htkv_shard_prune_to_floor(struct shard *sh);

/* Build the shard's trie if it is not built yet (takes the lock). 0 or -ENOMEM. */
int htkv_shard_trie_ensure(struct shard *sh);

/* Record a failed fdatasync of @p s: the shard refuses writes from now on (lock held). */
void htkv_shard_fail_sync(struct shard *sh, struct seg *s, int rc);

/* Close the descriptors of the shard's sealed segments that no fdatasync holds (seg.h,
 * htkv_seg_release_fd()): a shard keeps one open file, its active segment (two while the sync
 * of the one before is in flight). Lock held, or no concurrent user (recovery). */
void htkv_shard_release_fds(struct shard *sh);

/* Make room for @p need bytes of records in the active segment, rotating if it is full. Lock
 * held. 0, -ENOSPC, -ENOMEM, HTKV_EFAILED, HTKV_ETOOBIG or -errno. */
int htkv_shard_make_room(struct shard *sh, uint64_t need);

/* Turn a space or I/O failure of a prepare phase into the store's policy (ENOSPC: the store
 * refuses writes until reopen). Returns the code to report. */
int htkv_shard_prepare_failed(struct shard *sh, int rc);

/* 0, or why @p sh refuses writes now: HTKV_EFAILED (it failed) or -ENOSPC (the store ran out of
 * space). Lock held. */
int htkv_shard_check_writable(struct shard *sh);

/* The prepare phase's reservations for @p nents entries and @p bytes of records (lock held):
 * room in the active segment, index, pending list and trie capacity, so that appending and
 * installing cannot fail. 0 or the code of htkv_shard_prepare_failed(). */
int htkv_shard_reserve(struct shard *sh, uint64_t bytes, uint32_t nents);

/* Version of the key's newest entry as a condition sees it (0 = absent or deleted). Lock held. */
/*
 * Before writing @p key (lock held): with a memory budget and cold keys in the shard, bring the
 * key's entry back into memory (env->promote) so that the write finds and supersedes it as with
 * any key. 0, or the promotion's error (-ENOMEM, HTKV_ECORRUPT).
 */
static inline int
htkv_shard_promote(struct shard *sh, uint64_t hash, const void *key, uint32_t klen)
{
    if (HTKV_LIKELY(atomic_load_explicit(&sh->cold, memory_order_relaxed) == NULL)) {
        return 0;
    }
    return sh->env->promote(sh, hash, key, klen);
}

static inline uint64_t
htkv_shard_current_version(struct shard *sh, uint64_t hash, const void *key, uint32_t klen)
{
    struct hidx_ent *e = htkv_hidx_find(&sh->idx, hash, key, klen);
    return (e == NULL || e->del) ? 0 : e->version;
}

/* An index entry from the shard's arena (counted in entry_bytes), or NULL; and its release when
 * it was never installed. */
struct hidx_ent *htkv_shard_ent_new(struct shard *sh);
void htkv_shard_ent_drop(struct shard *sh, struct hidx_ent *e);

/* Install the @p n entries of @p ents (filled, their records written out) in order, each as the
 * newest version of its key, pending until htkv_shard_publish() covers its version; each slot
 * is set to NULL once its entry is installed. Cannot fail after htkv_shard_reserve(). The
 * index's cache misses of later entries are started ahead (one level of htkv_hidx_prefetch()
 * each, at three distances), so that they overlap. Lock held. */
void htkv_shard_install_all(struct shard *sh, struct hidx_ent **ents, uint32_t n);

/* htkv_seg_write_out() of @p s, the active segment; a failure stops the shard's writes. Lock
 * held. 0 or -errno. */
int htkv_shard_write_out(struct shard *sh, struct seg *s);

/* After staging without HTKV_SYNC_ALWAYS: mark the shard dirty and publish @p version at once
 * (it is in the page cache). Lock held. */
void htkv_shard_commit(struct shard *sh, uint64_t version);

/* Return once @p version is durable and visible in @p sh, leading or joining its group syncs
 * (HTKV_SYNC_ALWAYS). Called with the lock held; returns with it released. 0 or HTKV_EFAILED. */
int htkv_shard_wait_durable(struct shard *sh, uint64_t version);

/*
 * Find @p e in the pending list of @p sh (entries newer than the last prune, in version order):
 * true and its index through @p at, or false. O(log n) plus the entries of one batch. Lock held.
 */
bool htkv_shard_pending_find(const struct shard *sh, const struct hidx_ent *e, size_t *at);

/* Put @p n in the place of @p e (found at @p at) in the pending list: a copy of the same
 * version (compaction's relocation). Lock held. */
void htkv_shard_pending_swap(struct shard *sh, size_t at, const struct hidx_ent *e,
                             struct hidx_ent *n);

/* Lowest version of @p sh installed but above @p visible (a group sync in flight), or
 * UINT64_MAX. Lock held. Every write installs its entries under the lock, in version order, into
 * the pending list, so a binary search over it finds the first one. */
uint64_t htkv_shard_first_unpublished(const struct shard *sh, uint64_t visible);

/* Hand @p p to EBR through the shard's limbo: @p free_fn(p) once no reader can reach it. Lock
 * held. */
void htkv_shard_retire(struct shard *sh, void *p, void (*free_fn)(void *));

/* Room in the shard's limbo for @p n retirements, taken before anything they retire is unlinked
 * (htkv_ebr_reserve()). 0 or -ENOMEM. Lock held. */
int htkv_shard_limbo_reserve(struct shard *sh, size_t n);

/* Segments of the shard, the active one included. Lock held. */
static inline size_t
htkv_shard_seg_count(const struct shard *sh)
{
    return sh->nsegs;
}

/* Index entries the shard holds: heads and the versions behind them. Lock held. */
static inline size_t
htkv_shard_entry_count(const struct shard *sh)
{
    return (size_t)(sh->entry_bytes / sizeof(struct hidx_ent));
}

/* Hand segment @p s, out of the shard's list, to EBR to be closed once no reader can reach it;
 * and reclaim what the shard retired so far. Lock held. */
void htkv_shard_retire_seg(struct shard *sh, struct seg *s);

/* Index in sh->segs (ascending ids) of segment @p id, or sh->nsegs when the shard has none. Lock
 * held, or no writer yet. */
size_t htkv_shard_seg_index(const struct shard *sh, uint64_t id);
void htkv_shard_reclaim(struct shard *sh);

/* Do @p e's record's key bytes still hash to its hash? A record checked once (its CRC), or
 * written by this process, has them intact and is not hashed again; another, installed from a
 * hint, is. Lock held (or no writer). */
bool htkv_shard_key_intact(const struct shard *sh, const struct hidx_ent *e);

/* Wait (lock held, released while waiting) until no group sync of @p sh is in flight. */
void htkv_shard_wait_sync_end(struct shard *sh);

/*
 * Replace the whole contents of @p sh (restore, after its commit point; lock held, no view
 * open, no group sync in flight): its index becomes @p idx's table (taken), its segments @p segs
 * (@p nsegs of them in an array of @p cap, taken), holding @p keys live keys, all visible at
 * @p visible. The old table and entries go to EBR, the trie and run are dropped, and the old
 * segment array is returned through @p old and @p nold for the caller to retire.
 */
void htkv_shard_reset_for_restore(struct shard *sh, struct hidx *idx, struct seg **segs,
                                  size_t nsegs, size_t cap, uint64_t keys, uint64_t visible,
                                  struct seg ***old, size_t *nold);

/* Verify the CRC and header of the SET record behind live entry @p e and mark it checked.
 * 0 or HTKV_ECORRUPT. */
int htkv_ent_check_slow(struct hidx_ent *e);

/* Does the record behind @p e check (CRC) and agree with the entry (type, lengths, version)?
 * The record must lie in its segment's mapping (any entry of an index does). */
bool htkv_ent_record_ok(const struct hidx_ent *e);

/* env->verify_checksums for a read of @p e (inside an EBR section): 0 or HTKV_ECORRUPT. */
static inline int
shard_ent_check(const struct shard_env *env, struct hidx_ent *e)
{
    int mode = env->verify_checksums;
    if (HTKV_LIKELY(mode == 0 ||
                    (mode == 1 && atomic_load_explicit(&e->checked, memory_order_relaxed)))) {
        return 0;
    }
    return htkv_ent_check_slow(e);
}

/* Active segment of @p sh (lock held). */
static inline struct seg *
shard_active(struct shard *sh)
{
    return sh->nsegs > 0 ? sh->segs[sh->nsegs - 1] : NULL;
}

/*
 * Metrics of a group sync of @p sh (lock held at both calls): begin returns the writes the sync
 * covers and starts a new group; end records the sync's latency since @p t0_ns and the group.
 */
uint64_t htkv_shard_sync_begin(struct shard *sh);
void htkv_shard_sync_end(struct shard *sh, uint64_t group, uint64_t t0_ns);

/* fdatasync the active segment of @p sh if dirty. 0, HTKV_EFAILED. */
int htkv_shard_sync(struct shard *sh);

/* htkv_shard_sync(), and *@p synced tells whether the shard was dirty (looked at under its lock:
 * invariant 2 of periodic.h). */
int htkv_shard_sync_dirty(struct shard *sh, bool *synced);

/* The same whether dirty or not (compaction: appends of ALWAYS mode do not mark it dirty). */
int htkv_shard_sync_force(struct shard *sh);

#endif /* HTKV_ENGINE_SHARD_H */
