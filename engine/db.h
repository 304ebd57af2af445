/*
 * db.h - the store handle, its shards and batches (private to the engine).
 *
 * A shard owns an ordered list of segments (the last one active), a hash index and a visible
 * version. In inline mode, writers of a shard serialise on shard->lock; readers never take it.
 */
#ifndef HTKV_ENGINE_DB_H
#define HTKV_ENGINE_DB_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/ebr.h"
#include "engine/hidx.h"
#include "engine/internal.h"
#include "engine/manifest.h"
#include "engine/metrics.h"
#include "engine/seg.h"
#include "engine/trie.h"

/* Reclaim retired memory every 64 retirements: one slot scan (256 lines) per 64 writes. */
#define SHARD_RECLAIM_EVERY 64u
/* Largest batch: 1 GiB of records. */
#define BATCH_BYTES_MAX (1ull << 30)

/*
 * A put or delete staged as part of a group (shard.c, "put groups"; worker.c): the caller's
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
    _Atomic uint32_t state; /* put groups: PR_* (shard.c) */
};

struct shard {
    pthread_mutex_t lock; /* writers of this shard */
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
    uint64_t appended;          /* highest version appended to this shard */
    uint64_t view_floor;        /* smallest snapshot of an open view; UINT64_MAX = none */
    struct trie trie;           /* ordered index of head entries, once trie_ready */
    _Atomic bool trie_ready;    /* built on the first ordered query, maintained after */
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
    /* Inline puts and deletes in HTKV_SYNC_ALWAYS (shard.c, "put groups"): callers push their
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
    char dir[]; /* path of shard-SSS */
};

/* Per-shard fields readers touch, on their own cache line (shard structs are variable-size). */
struct shard_ro {
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t visible; /* every version <= it is installed */
    struct shard *shard;
};

struct htkv_db {
    htkv_config cfg; /* copy; cfg.data_dir points at dir */
    char *dir;
    int dir_fd;
    int lock_fd;
    bool read_only;
    bool lock_created; /* this open created LOCK */
    uint32_t shard_count;
    uint64_t hash_seed;
    struct manifest *man;
    struct shard_ro *ro; /* shard_count entries */
    unsigned *arenas;    /* narenas leased arenas: one per worker, or one in inline mode */
    unsigned narenas;
    struct ebr ebr;
    struct worker *workers; /* nworkers; NULL in inline mode */
    unsigned nworkers;
    /* Merge path of the shards' runs (run.h): NULL = none; path_credit counts keys merged
     * without one since a shard's trie last changed (path_credit_gen: the sum of the shards'
     * trie generations then); path_building admits one builder. */
    struct merge_path *_Atomic path;
    _Atomic uint64_t path_credit;
    _Atomic uint64_t path_credit_gen;
    _Atomic bool path_building;
    pthread_mutex_t views_lock; /* the list of open views; taken before any shard lock */
    struct htkv_view *views;
    uint64_t views_open;
    uint64_t view_gen;      /* views opened so far (views_lock) */
    struct zombie *zombies; /* dropped segments that open views may still read (views_lock) */
    /* Compaction: one pass at a time, from htkv_compact_now() or the compactor thread. */
    pthread_mutex_t compact_lock;
    pthread_t compactor;
    bool compactor_running;
    bool compactor_stop; /* under syncer_lock, signalled through compactor_cond */
    pthread_cond_t compactor_cond;
    _Atomic uint64_t compactions;
    uint64_t snapshot_seq; /* number of the last snapshot-NNNNNN.snap written (compact_lock) */
    /*
     * Versions never repeat (ARCHITECTURE.md, "Versions"). next_version is the next version a
     * local write takes; version_hwm mirrors the manifest's reservation: a version above it is
     * handed out only after htkv_db_reserve_versions() made a higher one durable. At open,
     * next_version starts above the reservation (versions a crash may have taken back are
     * skipped), latest_at_open is the latest version applied before, and open_next the first
     * version of this open; submit_hi is the highest version htkv_submit() applied below
     * open_next. htkv_db_latest() combines them.
     */
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t next_version;
    _Atomic uint64_t version_hwm;
    _Atomic uint64_t submit_hi;
    uint64_t latest_at_open;
    uint64_t open_next;
    bool unlocked; /* read-only without LOCK (htkv_db_open()): a writer may be appending */
    _Alignas(HTKV_CACHELINE) _Atomic int closing;
    _Atomic int no_space;
    _Atomic int failed;
    _Atomic uint64_t syncs;
    /* INTERVAL-mode syncer thread. */
    pthread_t syncer;
    bool syncer_running;
    bool syncer_stop;
    pthread_mutex_t syncer_lock;
    pthread_cond_t syncer_cond;
    /* Versions of batches that recovery found incomplete and did not apply (sorted): their
     * records stay on disk until compacted, and the change feed must not report them. */
    uint64_t *discarded;
    size_t ndiscarded;
    /* Recovery figures. */
    uint64_t recovered_records;
    uint64_t truncated_bytes;
    uint64_t skipped_bytes;
};

/* One operation of a batch, or a condition (type 0). */
struct batch_op {
    uint8_t type; /* REC_SET, REC_DEL, or 0 for a check */
    uint32_t klen;
    uint32_t vlen;
    uint64_t data_off; /* key then value in batch->data */
    uint64_t version;  /* expected version, for checks */
};

struct htkv_batch {
    struct batch_op *ops;
    size_t nops;   /* puts + deletes + checks */
    size_t ncount; /* puts + deletes */
    size_t ops_cap;
    unsigned char *data;
    uint64_t data_len;
    uint64_t data_cap;
    uint64_t rec_bytes; /* sum of record sizes of puts and deletes */
    uint64_t version;   /* assigned by the last successful write */
    /* htkv_submit(): the version the caller gives (0 = assign one); it must be above every
     * version applied, or the write fails with -ERANGE and writes nothing. */
    uint64_t fixed_version;
};

static inline struct shard *
db_shard(struct htkv_db *db, uint32_t i)
{
    return db->ro[i].shard;
}

static inline uint32_t
db_shard_of(const struct htkv_db *db, uint64_t hash)
{
    return (uint32_t)((hash >> 32) % db->shard_count);
}

/*
 * htkv_open() with a choice: @p take_lock false is allowed only with cfg->read_only and opens
 * without LOCK, for offline inspection of a store another process is writing (htkvctl
 * --read-only). Such a handle must cope with concurrent appends: a torn tail is the end.
 */
int htkv_db_open(const htkv_config *cfg, bool take_lock, htkv_db **out);

/* Verify the CRC and header of the SET record behind live entry @p e and mark it checked.
 * 0 or HTKV_ECORRUPT. */
int htkv_ent_check_slow(struct hidx_ent *e);

/* Does the record behind @p e check (CRC) and agree with the entry (type, lengths, version)?
 * The record must lie in its segment's mapping (any entry of an index does). */
bool htkv_ent_record_ok(const struct hidx_ent *e);

/* cfg.verify_checksums for a read of @p e (inside an EBR section): 0 or HTKV_ECORRUPT. */
static inline int
db_ent_check(struct htkv_db *db, struct hidx_ent *e)
{
    int mode = db->cfg.verify_checksums;
    if (HTKV_LIKELY(mode == 0 ||
                    (mode == 1 && atomic_load_explicit(&e->checked, memory_order_relaxed)))) {
        return 0;
    }
    return htkv_ent_check_slow(e);
}

/*
 * Make versions up to @p v safe to hand out: record a reservation above @p v in the manifest
 * (one fdatasync) unless one is already there. 0, -EROFS on a read-only handle, or the error of
 * the manifest write (the version must then not be used).
 */
int htkv_db_reserve_versions(struct htkv_db *db, uint64_t v);

/* Version @p v may be handed out: 0 (the usual case, one load), or as htkv_db_reserve_versions. */
static inline int
db_version_check(struct htkv_db *db, uint64_t v)
{
    if (HTKV_LIKELY(v <= atomic_load_explicit(&db->version_hwm, memory_order_acquire))) {
        return 0;
    }
    return htkv_db_reserve_versions(db, v);
}

/* The latest version applied (htkv_latest_version()): never below one acknowledged before. */
uint64_t htkv_db_latest(struct htkv_db *db);

/*
 * Test hook: while true, htkv_close() leaves the store as a process killed at that moment would
 * (every acknowledged write in the page cache; no final sync, trim, hints or clean-close record
 * in the manifest), for tests that damage the tail a crash leaves. Set it around one close.
 */
extern bool htkv_close_as_crash;

/* Log through cfg.log_fn (or stderr for warnings and errors). */
void htkv_db_log(struct htkv_db *db, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* shard.c */
int htkv_shard_create(struct htkv_db *db, uint32_t id, struct shard **out);
void htkv_shard_destroy(struct shard *sh);
int htkv_shard_new_segment(struct shard *sh, uint64_t need);
void htkv_shard_retire_table(void *ctx, void *table);
void htkv_shard_retire_ent(struct shard *sh, struct hidx_ent *e);

/*
 * Apply batch @p b atomically in every shard it touches: take the shard locks in ascending
 * order, check its conditions, write, sync (ALWAYS), install. Returns 0 and the version through
 * @p version_out (0 when nothing was written), or an error with nothing applied.
 */
int htkv_shard_apply(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out);

/*
 * The first half of htkv_shard_apply(): under the shard locks, check, append and install the
 * batch; publish it unless the sync mode is ALWAYS. Fills @p shards_out (room for b->nops ids)
 * with the shards that received records. *version_out = 0 when nothing was written.
 */
int htkv_shard_stage_batch(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out,
                           uint32_t *shards_out, uint32_t *nshards_out);

/* Test hook: groups a put-group leader runs in a row before it hands over (default 4; at
 * least 1). Tests set 1 so that leadership changes hands after almost every group. Set it
 * before any writer runs. */
extern unsigned htkv_put_group_rounds;

/*
 * Single-op fast path used by htkv_put/htkv_delete: under the shard lock, or in inline
 * HTKV_SYNC_ALWAYS through the shard's put groups (shard.c), returning once the write is
 * durable and visible. A non-zero @p t0_ns (htkv_now_ns() when the caller's call began) records
 * the call's latency in the shard's put or delete histogram; 0 records nothing (a worker: the
 * caller's latency is recorded at completion).
 */
int htkv_shard_put1(struct htkv_db *db, uint8_t type, const void *key, uint32_t klen,
                    const void *val, uint32_t vlen, uint64_t hash, uint64_t *version,
                    uint64_t t0_ns);

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

/* Make every staged version <= @p version visible and retire what it superseded (lock held). */
void htkv_shard_publish(struct shard *sh, uint64_t version);

/* Retire what open views no longer need after view_floor rose (lock held). */
void htkv_shard_prune_to_floor(struct shard *sh);

/* Build the shard's trie if it is not built yet (takes the lock). 0 or -ENOMEM. */
int htkv_shard_trie_ensure(struct shard *sh);

/* Record a failed fdatasync of @p s: the shard refuses writes from now on (lock held). */
void htkv_shard_fail_sync(struct shard *sh, struct seg *s, int rc);

/*
 * Append one record at the tail of @p s (room reserved by htkv_shard_make_room()); returns its
 * offset. Lock held.
 */
uint64_t htkv_shard_append(struct seg *s, uint8_t type, uint8_t flags, uint64_t version,
                           const void *key, uint32_t klen, const void *val, uint32_t vlen);

/*
 * htkv_shard_append() for a caller's write: in a write_through segment the record goes to the
 * segment's buffer (room reserved by htkv_shard_make_room()), and the caller must
 * htkv_seg_write_out() before anything points at it. Lock held.
 */
uint64_t htkv_shard_append_wt(struct seg *s, uint8_t type, uint8_t flags, uint64_t version,
                              const void *key, uint32_t klen, const void *val, uint32_t vlen);

/* Make room for @p need bytes of records in the active segment, rotating if it is full. Lock
 * held. 0, -ENOSPC, -ENOMEM, HTKV_EFAILED, HTKV_ETOOBIG or -errno. */
int htkv_shard_make_room(struct shard *sh, uint64_t need);

/* Turn a space or I/O failure of a prepare phase into the store's policy (ENOSPC: the store
 * refuses writes until reopen). Returns the code to report. */
int htkv_shard_prepare_failed(struct htkv_db *db, struct shard *sh, int rc);

/* Write SEAL at the tail of @p s and fdatasync it; s->sealed on success. 0 or -errno. */
int htkv_shard_seal(struct seg *s);

/* view.c: the snapshot version of shard @p shard in view @p v. */
uint64_t htkv_view_shard_snap(const htkv_view *v, uint32_t shard);

/* view.c: every version up to it that a write took is visible in @p v (none is still pending
 * in a shard whose group sync is in flight): the change feed reports nothing above it. */
uint64_t htkv_view_complete(const htkv_view *v);

/* snapshot.c: write DIR/snapshot-NNNNNN.snap and remove older ones (compact_lock held). */
int htkv_snapshot_emit(struct htkv_db *db);

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

/* The same whether dirty or not (compaction: appends of ALWAYS mode do not mark it dirty). */
int htkv_shard_sync_force(struct shard *sh);

/* metrics.c: write the report of htkv_metrics_write() (call guard held, format checked). */
int htkv_metrics_emit(struct htkv_db *db, FILE *f, int format);

/* recover.c */
int htkv_recover(struct htkv_db *db);

#endif
