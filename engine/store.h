/*
 * store.h - the store handle (struct htkv_db): its shards, the threads it runs and the state it
 * shares between them (store layer).
 *
 * Invariants: shard_count, hash_seed, cfg and dir do not change after open; ro[i].shard is
 * shard i for the life of the handle; views.lock is taken before any shard lock. The store may
 * call the shard layer and everything below it; features (views, compaction, snapshots,
 * reports) call into it, never the other way round except through the declarations of their own
 * headers.
 */
#ifndef HTKV_ENGINE_STORE_H
#define HTKV_ENGINE_STORE_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/ebr.h"
#include "engine/hashindex.h"
#include "engine/internal.h"
#include "engine/manifest.h"
#include "engine/periodic.h"
#include "engine/putgroup.h"
#include "engine/shard.h"
#include "engine/versions.h"

struct htkv_view;
struct zombie;
struct worker;
struct merge_path;

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
    /* Open views: the list is taken before any shard lock. */
    struct {
        pthread_mutex_t lock;
        struct htkv_view *list;
        uint64_t open;
        uint64_t gen;           /* views opened so far (lock) */
        struct zombie *zombies; /* dropped segments that open views may still read (lock) */
    } views;
    /* Compaction: one pass at a time (lock), from htkv_compact_now() or the compactor thread
     * (compaction_interval_ms > 0). */
    struct {
        pthread_mutex_t lock;
        struct periodic thread;
        _Atomic uint64_t compactions;
        uint64_t snapshot_seq; /* number of the last snapshot-NNNNNN.snap written (lock) */
    } compactor;
    struct shard_env env; /* what the shards share (shard.h) */
    struct versions ver;  /* version allocation (versions.h); env.ver points at it */
    bool unlocked;        /* read-only without LOCK (htkv_db_open()): a writer may be appending */
    unsigned cpus;        /* CPUs this process may use at open (cpus.h): shard default, stats */
    _Alignas(HTKV_CACHELINE) _Atomic int closing;
    struct periodic syncer; /* INTERVAL-mode syncer thread */
    /* What recovery found (recover.c fills it at open; read-only after). */
    struct {
        /* Versions of batches that recovery found incomplete and did not apply (sorted): their
         * records stay on disk until compacted, and the change feed must not report them. */
        uint64_t *discarded;
        size_t ndiscarded;
        uint64_t records;         /* records recovery applied */
        uint64_t truncated_bytes; /* torn tails cut */
        uint64_t skipped_bytes;   /* damaged bytes skipped (HTKV_RECOVERY_SKIP_CORRUPT) */
    } recovery;
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

/* For assertions that a lock is held: true when @p m is locked (by anyone; the engine's mutexes
 * are default ones, whose trylock fails for the owner too). Leaves it as it was. */
static inline bool
db_mutex_locked(pthread_mutex_t *m)
{
    if (pthread_mutex_trylock(m) != 0) {
        return true;
    }
    pthread_mutex_unlock(m);
    return false;
}

/*
 * htkv_open() with a choice: @p take_lock false is allowed only with cfg->read_only and opens
 * without LOCK, for offline inspection of a store another process is writing (htkvctl
 * --read-only). Such a handle must cope with concurrent appends: a torn tail is the end.
 */
int htkv_db_open(const htkv_config *cfg, bool take_lock, htkv_db **out);

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

/* The call guard of the API. Enter a call: EBR slot plus the closing check. Returns the slot or
 * HTKV_ECLOSED. */
static inline int
db_enter(struct htkv_db *db, unsigned *slot)
{
    *slot = htkv_ebr_enter(&db->ebr);
    /* seq_cst pairs with htkv_close(): it stores closing, then scans the slots. */
    if (HTKV_UNLIKELY(atomic_load(&db->closing))) {
        htkv_ebr_exit(&db->ebr, *slot);
        return HTKV_ECLOSED;
    }
    return 0;
}

/* Leave a call entered with db_enter(). */
static inline void
db_exit(struct htkv_db *db, unsigned slot)
{
    htkv_ebr_exit(&db->ebr, slot);
}

/* One put or delete on the key's shard: through its put groups in inline HTKV_SYNC_ALWAYS
 * (putgroup.h), else htkv_shard_put1(). */
static inline int
db_put1(struct htkv_db *db, uint8_t type, const void *key, uint32_t klen, const void *val,
        uint32_t vlen, uint64_t hash, uint64_t *version, uint64_t t0_ns)
{
    struct shard *sh = db_shard(db, db_shard_of(db, hash));
    if (db->cfg.sync_mode == HTKV_SYNC_ALWAYS && db->nworkers == 0) {
        return htkv_putgroup_put(sh, type, key, klen, val, vlen, hash, version, t0_ns);
    }
    return htkv_shard_put1(sh, type, key, klen, val, vlen, hash, version, t0_ns);
}

/* A key argument of the API: 0, -EINVAL (NULL or empty) or HTKV_ETOOBIG. */
static inline int
check_key(const void *key, size_t klen)
{
    if (HTKV_UNLIKELY(key == NULL || klen == 0)) {
        return htkv_einval(__func__);
    }
    if (HTKV_UNLIKELY(klen > HTKV_KEY_MAX)) {
        return HTKV_ETOOBIG;
    }
    return 0;
}

/*
 * Test hook: while true, htkv_close() leaves the store as a process killed at that moment would
 * (every acknowledged write in the page cache; no final sync, trim, hints or clean-close record
 * in the manifest), for tests that damage the tail a crash leaves. Set it around one close.
 */
extern bool htkv_close_as_crash;

/* Log through cfg.log_fn (or stderr for warnings and errors). */
void htkv_db_log(struct htkv_db *db, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* HTKV_ENGINE_STORE_H */
