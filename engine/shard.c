/*
 * shard.c - a shard's write path: segment rotation, appends, group sync and index installs.
 *
 * One file of more than 1,000 lines, on purpose: the three phases below, rotation and group sync
 * all work on the shard's active segment and pending entries under its lock, and the put path
 * calls its staging steps (shard_reserve(), shard_install(), shard_commit(), ...) as static
 * inline functions, exporting only wrappers for batch.c and putgroup.c; split, those steps would
 * become calls across files on the hot path.
 *
 * Design. A write (one operation, or the part of a batch that falls in this shard) runs in
 * three phases under the locks of every shard it touches, taken in ascending shard order:
 *   1. prepare: check state and conditions, make room in the active segment (rotating when it
 *      is full), allocate index entries and index capacity. Nothing is written yet, so any
 *      failure leaves the store unchanged.
 *   2. append: encode every record into the active segment's mapping; in HTKV_SYNC_ALWAYS,
 *      fdatasync each touched segment.
 *   3. install: link the new entries into the index, then publish the write's version as the
 *      shard's visible version, then cut and retire the entries it superseded.
 *
 * Invariants
 *   1. Within a shard, versions are installed in increasing order (they are assigned under the
 *      shard's lock), so `visible` only grows.
 *   2. A record is in the page cache (a completed store into the MAP_SHARED mapping) before the
 *      entry that points at it is published.
 *   3. A segment created by this process keeps SEG_SEAL_BYTES free for its SEAL record; one
 *      reopened with no room left is sealed by a sync alone.
 *   4. A segment receives records only after its MAN_SEG_ADD edit is durable.
 */
#include "engine/shard.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/futex.h"
#include "engine/hash.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "uring/ur_fault.h"

static const unsigned char *
shard_trie_key(const void *val, uint32_t *len, void *ctx)
{
    (void)ctx;
    const struct hidx_ent *e = val;
    *len = e->key_len;
    return hidx_ent_rec(e) + REC_HDR_BYTES;
}

static void
shard_trie_retire(void *ctx, void *node)
{
    struct shard *sh = ctx;
    htkv_ebr_retire(sh->env->ebr, &sh->limbo, node, htkv_trie_node_free);
}

int
htkv_shard_create(struct shard_env *env, struct htkv_db *owner, uint32_t id, unsigned arena,
                  struct shard **out)
{
    char dir[4096];
    int n = snprintf(dir, sizeof(dir), "%s/shard-%03u", env->dir, id);
    HTKV_ASSERT(n > 0 && (size_t)n < sizeof(dir));
    HTKV_ASSERT(id < env->shard_count);
    struct shard *sh = htkv_mem_calloc_in(arena, 1, sizeof(*sh) + (size_t)n + 1);
    if (sh == NULL) {
        return -ENOMEM;
    }
    memcpy(sh->dir, dir, (size_t)n + 1);
    sh->env = env;
    sh->db = owner;
    sh->id = id;
    sh->arena = arena;
    atomic_init(&sh->dirty, false);
    int rc = htkv_hidx_init_in(&sh->idx, arena);
    if (rc != 0) {
        htkv_mem_free(sh);
        return rc;
    }
    sh->pending = htkv_mem_calloc_in(arena, 64, sizeof(*sh->pending));
    if (sh->pending == NULL) {
        htkv_hidx_fini(&sh->idx);
        htkv_mem_free(sh);
        return -ENOMEM;
    }
    sh->pend_cap = 64;
    sh->view_floor = UINT64_MAX;
    htkv_trie_init(&sh->trie, shard_trie_key, shard_trie_retire, sh);
    sh->trie.arena = arena;
    atomic_init(&sh->trie_ready, false);
    atomic_init(&sh->run, NULL);
    atomic_init(&sh->run_credit, 0);
    atomic_init(&sh->run_credit_gen, 0);
    atomic_init(&sh->run_building, false);
    pthread_mutex_init(&sh->lock, NULL);
    pthread_cond_init(&sh->synced_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->staged_cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = sh;
    return 0;
}

void
htkv_shard_destroy(struct shard *sh)
{
    if (sh == NULL) {
        return;
    }
    HTKV_ASSERT(atomic_load_explicit(&sh->run, memory_order_relaxed) == NULL); /* htkv_run_fini() */
    htkv_trie_fini(&sh->trie);
    htkv_ebr_limbo_fini(sh->env->ebr, &sh->limbo);
    htkv_hidx_fini(&sh->idx);
    for (size_t i = 0; i < sh->nsegs; i++) {
        htkv_seg_close(sh->segs[i]);
    }
    htkv_mem_free(sh->segs);
    htkv_mem_free(atomic_load_explicit(&sh->cold, memory_order_relaxed));
    htkv_mem_free((void *)sh->door);
    htkv_mem_free(sh->pending);
    pthread_cond_destroy(&sh->synced_cond);
    pthread_cond_destroy(&sh->staged_cond);
    pthread_mutex_destroy(&sh->lock);
    htkv_mem_free(sh);
}

void
htkv_shard_retire_table(void *ctx, void *table)
{
    struct shard *sh = ctx;
    htkv_ebr_retire(sh->env->ebr, &sh->limbo, table, htkv_hidx_table_free);
}

/* Free what readers have left, once every SHARD_RECLAIM_EVERY writes while anything waits:
 * also the tables a growing index retired, which a store that only inserts would otherwise keep
 * until close (half the index's slots again). Lock held. */
static inline void
shard_reclaim_tick(struct shard *sh)
{
    if (sh->limbo.head != sh->limbo.count && ++sh->since_reclaim >= SHARD_RECLAIM_EVERY) {
        sh->since_reclaim = 0;
        htkv_ebr_reclaim(sh->env->ebr, &sh->limbo);
    }
}

void
htkv_shard_retire_ent(struct shard *sh, struct hidx_ent *e)
{
    htkv_ebr_retire(sh->env->ebr, &sh->limbo, e, htkv_mem_free);
    sh->entry_bytes -= sizeof(*e);
    shard_reclaim_tick(sh);
}

/* htkv_seg_write_out() of the active segment, and in HTKV_SYNC_NEVER the start of its early
 * writeback (htkv_seg_writeback_start()); a failure stops the shard's writes. Lock held. */
static inline int
shard_write_out(struct shard *sh, struct seg *s)
{
    int rc = htkv_seg_write_out(s);
    if (rc == 0 && sh->env->sync_mode == HTKV_SYNC_NEVER) {
        htkv_seg_writeback_start(s);
    }
    if (rc != 0) {
        sh->failed = true;
        atomic_store(&sh->env->failed, 1);
        htkv_log(&sh->env->log, HTKV_LOG_ERROR,
                 "%s: write failed: %s; shard %u refuses writes until reopen", s->path,
                 htkv_strerror(rc), sh->id);
    }
    return rc;
}

static int
shard_segs_push(struct shard *sh, struct seg *s)
{
    if (sh->nsegs == sh->segs_cap) {
        size_t cap = sh->segs_cap ? sh->segs_cap * 2 : 8;
        struct seg **n = htkv_mem_realloc(sh->segs, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        sh->segs = n;
        sh->segs_cap = cap;
    }
    sh->segs[sh->nsegs++] = s;
    return 0;
}

/*
 * Open a new active segment with room for @p need bytes of records, then seal the old one.
 * Creating first means a failure (ENOSPC) leaves the old segment active and nothing changed.
 */
int
htkv_shard_new_segment(struct shard *sh, uint64_t need)
{
    struct shard_env *env = sh->env;
    uint64_t cap = env->max_segment_bytes;
    uint64_t min = SEG_DATA_OFF + need + SEG_SEAL_BYTES;
    if (cap < min) {
        cap = htkv_align_up(min, 4096); /* an oversized record gets a segment of its own */
    }
    if (cap > SEG_BYTES_LIMIT) {
        return HTKV_ETOOBIG;
    }
    if (sh->nsegs == sh->segs_cap && shard_segs_push(sh, NULL) == 0) {
        sh->nsegs--; /* grow the array now so that the push below cannot fail */
    }
    if (sh->nsegs == sh->segs_cap) {
        return -ENOMEM;
    }
    uint64_t id = htkv_manifest_next_seg_id(env->man);
    struct seg *s;
    bool zero_fill = env->sync_mode == HTKV_SYNC_ALWAYS;
    struct seg_owner o = { .shard = sh->id,
                           .shard_count = env->shard_count,
                           .hash_seed = env->hash_seed };
    int rc = htkv_seg_create(sh->dir, &o, id, cap, min, zero_fill, &s);
    if (rc != 0) {
        htkv_set_error("%s: cannot create segment %llu: %s", sh->dir, (unsigned long long)id,
                       htkv_strerror(rc));
        return rc;
    }
    s->write_through = zero_fill;
    s->wt_now = zero_fill;
    int dfd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(sh->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        rc = -errno;
    } else {
        htkv_fault_synced(dfd);
    }
    if (dfd >= 0) {
        close(dfd);
    }
    if (rc == 0) {
        rc = htkv_manifest_add_seg(env->man, sh->id, id);
    }
    if (rc != 0) {
        /* Not in the manifest: an orphan file, removed now or, when the unlink fails too, by
         * the next writable open. Its id is never handed out again. */
        (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(s->path));
        htkv_seg_close(s);
        return rc;
    }
    struct seg *old = shard_active(sh);
    if (old != NULL && !old->sealed) {
        rc = htkv_seg_seal(old);
        if (rc != 0) {
            /* The old segment's data may not be durable: same rule as any failed sync. */
            htkv_shard_fail_sync(sh, old, rc);
            rc = 0; /* the new segment is in the manifest: keep it */
        }
    }
    rc = shard_segs_push(sh, s);
    HTKV_ASSERT(rc == 0);
    htkv_shard_release_fds(sh);
    return sh->failed ? HTKV_EFAILED : 0;
}

void
htkv_shard_release_fds(struct shard *sh)
{
    /* Only the active segment gains pins (under this lock), so a sealed one seen unpinned here
     * stays unpinned; one still pinned by an fdatasync begun while it was active keeps its
     * descriptor until the next rotation. */
    for (size_t i = 0; i + 1 < sh->nsegs; i++) {
        struct seg *g = sh->segs[i];
        if (g->fd >= 0 && atomic_load_explicit(&g->io_pins, memory_order_acquire) == 0) {
            htkv_seg_release_fd(g);
        }
    }
}

int
htkv_shard_make_room(struct shard *sh, uint64_t need)
{
    struct seg *s = shard_active(sh);
    if (s == NULL || s->sealed || s->tail + need + SEG_SEAL_BYTES > s->map_bytes ||
        (sh->seal_early && s->records > 0)) {
        sh->seal_early = false;
        int rc = htkv_shard_new_segment(sh, need);
        if (rc != 0) {
            return rc;
        }
        s = shard_active(sh);
    }
    int rc = htkv_seg_reserve(s, need + SEG_SEAL_BYTES);
    return rc == 0 ? htkv_seg_wbuf_reserve(s, need) : rc;
}

int
htkv_shard_check_writable(struct shard *sh)
{
    if (sh->failed) {
        return HTKV_EFAILED;
    }
    if (atomic_load_explicit(&sh->env->no_space, memory_order_relaxed)) {
        return -ENOSPC;
    }
    return 0;
}

int
htkv_shard_prepare_failed(struct shard *sh, int rc)
{
    if (rc == -ENOSPC || rc == -EDQUOT) {
        if (!atomic_exchange(&sh->env->no_space, 1)) {
            htkv_log(&sh->env->log, HTKV_LOG_ERROR,
                     "shard %u: no space left; writes are refused until reopen, reads go on",
                     sh->id);
        }
        return -ENOSPC;
    }
    return rc;
}

/* Make room for @p n more pending entries, so that installing cannot fail. */
static int
pending_reserve(struct shard *sh, size_t n)
{
    if (sh->pend_head > 0 && sh->pend_head == sh->pend_count) {
        sh->pend_head = sh->pend_count = 0;
    }
    if (sh->pend_count + n <= sh->pend_cap) {
        return 0;
    }
    if (sh->pend_head > 0) {
        memmove(sh->pending, sh->pending + sh->pend_head,
                (sh->pend_count - sh->pend_head) * sizeof(*sh->pending));
        sh->pend_count -= sh->pend_head;
        sh->pend_head = 0;
    }
    size_t cap = sh->pend_cap;
    while (sh->pend_count + n > cap) {
        cap *= 2;
    }
    if (cap == sh->pend_cap) {
        return 0;
    }
    struct hidx_ent **p = htkv_mem_realloc_in(sh->arena, sh->pending, cap * sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    sh->pending = p;
    sh->pend_cap = cap;
    return 0;
}

static inline int
shard_reserve(struct shard *sh, uint64_t bytes, uint32_t nents)
{
    int rc = htkv_ebr_reserve(&sh->limbo, 2 * (size_t)nents + SHARD_LIMBO_SLACK);
    if (rc == 0) {
        rc = htkv_shard_make_room(sh, bytes);
    }
    if (rc == 0) {
        rc = htkv_hidx_reserve(&sh->idx, nents, htkv_shard_retire_table, sh);
    }
    if (rc == 0) {
        rc = pending_reserve(sh, nents);
    }
    if (rc == 0 && atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        rc = htkv_trie_reserve(&sh->trie, nents);
    }
    return rc != 0 ? htkv_shard_prepare_failed(sh, rc) : 0;
}

static inline struct hidx_ent *
ent_new(struct shard *sh)
{
    struct hidx_ent *e = htkv_mem_alloc_in(sh->arena, sizeof(*e));
    if (e != NULL) {
        sh->entry_bytes += sizeof(*e);
    }
    return e;
}

static inline void
ent_drop(struct shard *sh, struct hidx_ent *e)
{
    sh->entry_bytes -= sizeof(*e);
    htkv_mem_free(e);
}

/*
 * Install @p e (already filled) as the newest version of its key. A delete of an absent key
 * installs nothing. Updates the live/dead byte counts and key counts.
 */
static inline void
shard_install(struct shard *sh, struct hidx_ent *e)
{
    uint64_t size = htkv_align_up(e->rec_bytes, REC_ALIGN);
    if (e->del) {
        struct hidx_ent *cur =
            htkv_hidx_find(&sh->idx, e->hash, hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len);
        if (cur == NULL) {
            atomic_fetch_add_explicit(&e->seg->dead_bytes, size, memory_order_relaxed);
            ent_drop(sh, e);
            return;
        }
    }
    int rc;
    struct hidx_ent *old = htkv_hidx_install(&sh->idx, e, &rc, htkv_shard_retire_table, sh);
    HTKV_ASSERT(rc == 0); /* capacity was reserved in the prepare phase */
    if (atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        void *prev;
        rc = htkv_trie_insert(&sh->trie, e, &prev);
        HTKV_ASSERT(rc == 0); /* nodes were reserved in the prepare phase */
        HTKV_ASSERT(prev == old);
    }
    atomic_fetch_add_explicit(&e->seg->live_bytes, size, memory_order_relaxed);
    if (old != NULL) {
        uint64_t osize = htkv_align_up(old->rec_bytes, REC_ALIGN);
        atomic_fetch_sub_explicit(&old->seg->live_bytes, osize, memory_order_relaxed);
        atomic_fetch_add_explicit(&old->seg->dead_bytes, osize, memory_order_relaxed);
        if (old->del) {
            sh->tombstones--;
        } else {
            sh->live_keys--;
        }
    }
    if (e->del) {
        sh->tombstones++;
        sh->deletes++;
    } else {
        sh->live_keys++;
        sh->puts++;
    }
    shard_reclaim_tick(sh);
    HTKV_ASSERT(sh->pend_count < sh->pend_cap); /* pending_reserve() ran in the prepare phase */
    /* The pending list stays in version order (invariant 1): readers and compaction search it. */
    HTKV_ASSERT(sh->pend_count == sh->pend_head ||
                sh->pending[sh->pend_count - 1]->version <= e->version);
    sh->pending[sh->pend_count++] = e;
}

/* After the new version is visible, no reader needs the older ones any more. A batch that
 * wrote one key twice leaves a chain of two behind the head: retire all of it. */
static void
shard_prune(struct shard *sh, struct hidx_ent *e)
{
    struct hidx_ent *old = atomic_load_explicit(&e->prev, memory_order_relaxed);
    if (old == NULL) {
        return;
    }
    atomic_store_explicit(&e->prev, NULL, memory_order_release);
    while (old != NULL) {
        struct hidx_ent *next = atomic_load_explicit(&old->prev, memory_order_relaxed);
        htkv_shard_retire_ent(sh, old);
        old = next;
    }
}

void
htkv_shard_fail_sync(struct shard *sh, struct seg *s, int rc)
{
    sh->failed = true;
    atomic_store(&sh->env->failed, 1);
    htkv_log(&sh->env->log, HTKV_LOG_ERROR,
             "%s: fdatasync failed: %s; shard %u refuses writes until reopen", s->path,
             htkv_strerror(rc), sh->id);
}

void
htkv_shard_publish(struct shard *sh, uint64_t version)
{
    struct shard_ro *ro = &sh->env->ro[sh->id];
    HTKV_ASSERT(version <= sh->appended);
    if (version <= atomic_load_explicit(&ro->visible, memory_order_relaxed)) {
        return;
    }
    atomic_store_explicit(&ro->visible, version, memory_order_release);
    htkv_shard_prune_to_floor(sh);
    htkv_periodic_kick(sh->env->compactor); /* new garbage, maybe: an idle compactor wakes */
    if (sh->env->budget_share != 0) {
        sh->env->over_budget(sh);
    }
}

void
htkv_shard_prune_to_floor(struct shard *sh)
{
    /* Readers that start now see `visible`: the versions behind an entry it covers are needed
     * only by readers already walking (EBR protects them) and by open views whose snapshot is
     * older than the entry (view_floor keeps them). */
    HTKV_ASSERT(sh->pend_head <= sh->pend_count && sh->pend_count <= sh->pend_cap);
    uint64_t upto = atomic_load_explicit(&sh->env->ro[sh->id].visible, memory_order_relaxed);
    if (sh->view_floor < upto) {
        upto = sh->view_floor;
    }
    while (sh->pend_head < sh->pend_count && sh->pending[sh->pend_head]->version <= upto) {
        shard_prune(sh, sh->pending[sh->pend_head++]);
    }
    if (sh->pend_head == sh->pend_count) {
        sh->pend_head = sh->pend_count = 0;
    }
}

bool
htkv_shard_key_intact(const struct shard *sh, const struct hidx_ent *e)
{
    return atomic_load_explicit(&e->checked, memory_order_relaxed) ||
           htkv_hash(hidx_ent_rec(e) + REC_HDR_BYTES, e->key_len, sh->env->hash_seed) == e->hash;
}

/* Remember the first entry whose key bytes are not intact (htkv_shard_key_intact()): a hint
 * installed it for a key whose bytes were damaged since, so the trie orders it under other
 * bytes and an ordered query cannot tell where that key belongs (shard.h: damaged_seg). Lock
 * held. */
static void
shard_key_check(struct shard *sh, const struct hidx_ent *e)
{
    if (sh->damaged_seg == 0 && !htkv_shard_key_intact(sh, e)) {
        sh->damaged_seg = e->seg->id;
        sh->damaged_off = e->off;
    }
}

int
htkv_shard_trie_ensure(struct shard *sh)
{
    if (atomic_load_explicit(&sh->trie_ready, memory_order_acquire)) {
        return 0;
    }
    pthread_mutex_lock(&sh->lock);
    int rc = 0;
    if (!atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
        for (uint64_t i = 0; i <= t->mask && rc == 0; i++) {
            uint64_t slot = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
            void *prev;
            if (hidx_slot_live(slot)) {
                shard_key_check(sh, hidx_slot_ent(slot));
                rc = htkv_trie_insert(&sh->trie, hidx_slot_ent(slot), &prev);
            }
        }
        if (rc == 0) {
            atomic_store_explicit(&sh->trie_ready, true, memory_order_release);
        } else {
            htkv_trie_fini(&sh->trie); /* no reader uses it before trie_ready */
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

uint64_t
htkv_shard_sync_begin(struct shard *sh)
{
    uint64_t group = sh->metrics.unsynced_writes;
    sh->metrics.unsynced_writes = 0;
    return group;
}

void
htkv_shard_sync_end(struct shard *sh, uint64_t group, uint64_t t0_ns)
{
    uint64_t now = htkv_now_ns();
    htkv_hist_record(&sh->metrics.sync, now > t0_ns ? now - t0_ns : 0);
    htkv_hist_record(&sh->metrics.group, group);
}

/* Group syncs one leader runs back to back at most, for writers that staged meanwhile. */
#define LEADER_SYNCS_MAX 4

/* One group sync of everything staged so far, as the leader (lock held, released during the
 * fdatasync). Returns the fdatasync's result; the shard has failed when it is not 0. */
int
htkv_shard_group_sync(struct shard *sh)
{
    sh->syncing = true;
    uint64_t target = sh->appended;
    struct seg *s = shard_active(sh); /* segments sealed earlier were synced by the seal */
    uint64_t group = htkv_shard_sync_begin(sh);
    uint64_t t0 = htkv_now_ns();
    htkv_seg_pin(s);
    pthread_mutex_unlock(&sh->lock);
    int rc = htkv_seg_sync(s);
    atomic_fetch_add_explicit(&sh->env->syncs, 1, memory_order_relaxed);
    pthread_mutex_lock(&sh->lock);
    htkv_seg_unpin(s);
    htkv_shard_sync_end(sh, group, t0);
    atomic_store_explicit(&sh->last_sync_ns, htkv_now_ns() - t0, memory_order_relaxed);
    sh->syncing = false;
    if (rc != 0) {
        htkv_shard_fail_sync(sh, s, rc);
    } else if (!sh->failed) {
        /* A failure reported meanwhile to another fdatasync of the file (a seal's, on the same
         * descriptor) is not reported to this one: once the shard failed nothing is published. */
        htkv_shard_publish(sh, target);
    }
    return rc;
}

/*
 * Before a group sync (lock held, syncing set): wait until every caller inside a put or delete
 * of this shard has staged, at most half the last sync's duration. In a closed loop the writers
 * the previous sync just woke come back within a wake-up; without the wait the next sync starts
 * at once without them and they wait for the one after, so each writer gets every other sync.
 * A lone writer never waits (it is the only active one, and staged).
 */
static void
shard_gather(struct shard *sh)
{
    uint64_t limit = atomic_load_explicit(&sh->last_sync_ns, memory_order_relaxed) / 2;
    limit = limit > SHARD_GATHER_MAX_NS ? SHARD_GATHER_MAX_NS : limit;
    if (limit == 0 || sh->metrics.unsynced_writes >=
                          atomic_load_explicit(&sh->active_writers, memory_order_relaxed)) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + limit;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    sh->gathering = true;
    while (sh->metrics.unsynced_writes <
           atomic_load_explicit(&sh->active_writers, memory_order_relaxed)) {
        if (pthread_cond_timedwait(&sh->staged_cond, &sh->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }
    sh->gathering = false;
}

/* After a group sync: 0 when @p version is visible, HTKV_EFAILED otherwise (the sync failed, or
 * the shard had failed and published nothing). */
static int
shard_durable_rc(struct shard_ro *ro, uint64_t version)
{
    return atomic_load_explicit(&ro->visible, memory_order_acquire) >= version ? 0 : HTKV_EFAILED;
}

/*
 * Wait until @p version is durable and visible (group commit). Called with the lock held;
 * returns with it released. With no sync in flight the caller leads one that covers every write
 * staged so far; a writer that stages while one is in flight needs the next. The leader then
 * runs the next sync itself at once when writers staged meanwhile (at most LEADER_SYNCS_MAX in
 * a row, so its own caller is not held for long), saving a wake-up between syncs. Followers
 * sleep without the lock on the futex of the sync that covers them (two words, by the parity of
 * its number, so that the end of one sync wakes only the writers it covered) and return without
 * taking the lock again.
 */
int
htkv_shard_wait_durable(struct shard *sh, uint64_t version)
{
    struct shard_ro *ro = &sh->env->ro[sh->id];
    for (;;) {
        if (atomic_load_explicit(&ro->visible, memory_order_acquire) >= version) {
            break;
        }
        if (sh->failed) {
            pthread_mutex_unlock(&sh->lock);
            return HTKV_EFAILED;
        }
        if (sh->syncing) {
            /* Covered by sync number syncs_done + 2 (+ 1 while its leader is still gathering);
             * its leader bumps the word under the lock before waking it: no lost wake-up. */
            if (sh->gathering) {
                pthread_cond_signal(&sh->staged_cond);
            }
            _Atomic uint32_t *w = &sh->sync_word[(sh->syncs_done + (sh->gathering ? 1 : 2)) & 1];
            uint32_t seen = atomic_load_explicit(w, memory_order_relaxed);
            atomic_fetch_add_explicit(&sh->sync_sleepers, 1, memory_order_relaxed);
            pthread_mutex_unlock(&sh->lock);
            htkv_futex_wait(w, seen);
            atomic_fetch_sub_explicit(&sh->sync_sleepers, 1, memory_order_relaxed);
            if (atomic_load_explicit(&ro->visible, memory_order_acquire) >= version) {
                return 0;
            }
            pthread_mutex_lock(&sh->lock);
            continue;
        }
        int rc = 0;
        for (int n = 0; n < LEADER_SYNCS_MAX; n++) {
            sh->syncing = true; /* while gathering too: arrivals follow */
            shard_gather(sh);
            rc = htkv_shard_group_sync(sh);
            _Atomic uint32_t *w = &sh->sync_word[++sh->syncs_done & 1];
            atomic_fetch_add_explicit(w, 1, memory_order_relaxed);
            bool more = rc == 0 && !sh->failed &&
                        sh->appended > atomic_load_explicit(&ro->visible, memory_order_relaxed);
            if (!more || n + 1 == LEADER_SYNCS_MAX) {
                /* No leader for what staged meanwhile: wake its writers too; one of them
                 * leads the next sync. */
                atomic_fetch_add_explicit(&sh->sync_word[(sh->syncs_done + 1) & 1], 1,
                                          memory_order_relaxed);
                pthread_cond_broadcast(&sh->synced_cond);
                pthread_mutex_unlock(&sh->lock);
                htkv_futex_wake(&sh->sync_word[0], INT_MAX);
                htkv_futex_wake(&sh->sync_word[1], INT_MAX);
                return shard_durable_rc(ro, version); /* covered by the first sync */
            }
            pthread_mutex_unlock(&sh->lock);
            htkv_futex_wake(w, INT_MAX);
            pthread_mutex_lock(&sh->lock);
            if (sh->syncing || sh->failed) {
                break; /* a writer took the lock meanwhile and leads the next sync itself */
            }
        }
        pthread_mutex_unlock(&sh->lock);
        return shard_durable_rc(ro, version);
    }
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

/* After staging without HTKV_SYNC_ALWAYS: publish at once (in the page cache). Lock held. */
static inline void
shard_commit(struct shard *sh, uint64_t version)
{
    htkv_shard_mark_dirty(sh);
    htkv_shard_publish(sh, version);
}

void
htkv_shard_mark_dirty(struct shard *sh)
{
    if (!atomic_load_explicit(&sh->dirty, memory_order_relaxed)) {
        atomic_store_explicit(&sh->dirty, true, memory_order_relaxed);
        if (sh->env->dirtied != NULL) {
            sh->env->dirtied(sh->env->dirtied_ctx, sh->id); /* whoever syncs it wakes */
        }
    }
}

/*
 * Prepare one record (lock held): check, reserve room for @p more uninstalled entries
 * (this one included), take a version and encode the record into the active segment's
 * write-through buffer. *@p ent is filled but not installed: the caller writes the buffer out
 * (htkv_shard_write_out) and then installs it, or drops it if that fails.
 */
static int
shard_prepare1(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
               uint32_t vlen, uint64_t hash, uint32_t more, struct hidx_ent **ent)
{
    uint64_t size = htkv_rec_size(klen, vlen);
    int rc = htkv_shard_check_writable(sh);
    if (rc != 0) {
        return rc;
    }
    rc = htkv_shard_promote(sh, hash, key, klen);
    if (rc != 0) {
        return rc;
    }
    if (type == REC_DEL && htkv_shard_current_version(sh, hash, key, klen) == 0) {
        return HTKV_ENOTFOUND; /* nothing to delete: write nothing */
    }
    rc = shard_reserve(sh, size, more);
    if (rc != 0) {
        return rc;
    }
    struct hidx_ent *e = ent_new(sh);
    if (e == NULL) {
        return -ENOMEM;
    }
    struct seg *s = shard_active(sh);
    uint64_t v = 0;
    rc = versions_next(sh->env->ver, &v);
    if (HTKV_UNLIKELY(rc != 0)) {
        ent_drop(sh, e);
        return rc;
    }
    uint64_t off = htkv_seg_append_wt(s, type, 0, v, key, klen, val, vlen);
    *e = (struct hidx_ent){ .version = v,
                            .hash = hash,
                            .seg = s,
                            .off = (uint32_t)off,
                            .rec_bytes = (uint32_t)(REC_HDR_BYTES + klen + vlen),
                            .key_len = klen,
                            .del = type == REC_DEL,
                            .checked = 1 };
    *ent = e;
    return 0;
}

/* Install a prepared entry whose record was written out (lock held). */
static void
shard_commit1(struct shard *sh, struct hidx_ent *e)
{
    HTKV_ASSERT(e->version > sh->appended); /* invariant 1: increasing order within a shard */
    shard_install(sh, e);
    sh->appended = e->version;
    sh->metrics.unsynced_writes++;
    hist_add(&sh->metrics.bytes_written, htkv_align_up(e->rec_bytes, REC_ALIGN));
}

int
htkv_shard_stage1(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
                  uint32_t vlen, uint64_t hash, uint64_t *version)
{
    struct hidx_ent *e = NULL;
    int rc = shard_prepare1(sh, type, key, klen, val, vlen, hash, 1, &e);
    if (rc == 0) {
        rc = shard_write_out(sh, shard_active(sh));
    }
    if (rc != 0) {
        if (e != NULL) {
            ent_drop(sh, e);
        }
        return rc;
    }
    uint64_t v = e->version;
    shard_commit1(sh, e);
    *version = v;
    return 0;
}

/* ---- record checks ------------------------------------------------------------------------ */

bool
htkv_ent_record_ok(const struct hidx_ent *e)
{
    const unsigned char *rec = hidx_ent_rec(e);
    struct rec_hdr h;
    htkv_rec_hdr_decode(rec, &h);
    /* The type too: an entry that a hint file calls a SET may point at a DEL record (an empty
     * value the key never held). */
    return h.type == (e->del ? REC_DEL : REC_SET) && h.key_len == e->key_len &&
           h.val_len == e->rec_bytes - REC_HDR_BYTES - e->key_len && h.version == e->version &&
           htkv_rec_verify_crc(rec, e->seg->id, e->off, &h) == 0;
}

int
htkv_ent_check_slow(struct hidx_ent *e)
{
    /* A value is only ever read from a SET record. */
    if (e->del || !htkv_ent_record_ok(e)) {
        htkv_set_error("%s: checksum mismatch in record at offset %u", e->seg->path, e->off);
        return HTKV_ECORRUPT;
    }
    atomic_store_explicit(&e->checked, 1, memory_order_relaxed);
    return 0;
}

/* ---- staging a group (put groups, putgroup.c, and workers) ---------------------------------- */

/*
 * Write out the records prepared for the requests [from, to) and install them, or fail them
 * all if the write fails (lock held).
 */
static void
group_flush(struct shard *sh, struct put_req *from, struct put_req *to, uint32_t prepared)
{
    if (prepared == 0) {
        return; /* nothing buffered (and maybe no active segment: a failed rotation) */
    }
    int rc = shard_write_out(sh, shard_active(sh));
    for (struct put_req *r = from; r != to; r = r->next) {
        if (r->ent == NULL) {
            continue;
        }
        if (rc == 0) {
            r->version = r->ent->version;
            shard_commit1(sh, r->ent);
        } else {
            ent_drop(sh, r->ent);
            r->rc = rc;
        }
        r->ent = NULL;
    }
}

/* Would a record of @p size bytes start a new segment (htkv_shard_make_room)? */
static bool
shard_needs_segment(struct shard *sh, uint64_t size)
{
    struct seg *s = shard_active(sh);
    return s == NULL || s->sealed || s->tail + size + SEG_SEAL_BYTES > s->map_bytes;
}

/*
 * Records go out with one pwrite(), except that what is prepared is written and installed
 * first before a delete (it reads the index) and before a record that starts a new segment
 * (sealing writes behind the buffer).
 */
uint64_t
htkv_shard_stage_group(struct shard *sh, struct put_req *list)
{
    /* Each install reads the key's slot, its entry and the old record's key: cache misses in
     * three dependent steps. Taken a step at a time over the whole group, they overlap. */
    for (int stage = 0; stage < 3 && list != NULL && list->next != NULL; stage++) {
        for (struct put_req *r = list; r != NULL; r = r->next) {
            htkv_hidx_prefetch(&sh->idx, r->hash, stage);
        }
    }
    /* One write for the whole group: through pwrite() when it is large enough (seg.h). */
    uint64_t bytes = 0;
    for (struct put_req *r = list; r != NULL; r = r->next) {
        bytes += htkv_rec_size(r->klen, r->vlen);
    }
    struct seg *active = shard_active(sh);
    if (active != NULL && !active->sealed) {
        htkv_seg_wt_begin(active, bytes);
    }
    struct put_req *from = list;
    uint32_t prepared = 0;
    for (struct put_req *r = list; r != NULL; r = r->next) {
        if (prepared > 0 &&
            (r->type == REC_DEL || shard_needs_segment(sh, htkv_rec_size(r->klen, r->vlen)))) {
            group_flush(sh, from, r, prepared);
            from = r;
            prepared = 0;
        }
        r->ent = NULL;
        r->version = 0;
        r->rc = shard_prepare1(sh, r->type, r->key, r->klen, r->val, r->vlen, r->hash, prepared + 1,
                               &r->ent);
        prepared += r->rc == 0;
    }
    group_flush(sh, from, NULL, prepared);
    uint64_t upto = 0; /* versions rise along the list; a failed request has none */
    for (struct put_req *r = list; r != NULL; r = r->next) {
        upto = r->version > upto ? r->version : upto;
    }
    return upto;
}

int
htkv_shard_put1(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
                uint32_t vlen, uint64_t hash, uint64_t *version_out, uint64_t t0_ns)
{
    struct htkv_hist *hist = type == REC_SET ? &sh->metrics.put : &sh->metrics.del;
    uint64_t version = 0;
    pthread_mutex_lock(&sh->lock);
    int rc = htkv_shard_stage1(sh, type, key, klen, val, vlen, hash, &version);
    if (rc == 0) {
        shard_commit(sh, version);
    }
    /* Under the lock: this thread is the histogram's only writer now. */
    if (t0_ns != 0) {
        uint64_t now = htkv_now_ns();
        htkv_hist_record(hist, now > t0_ns ? now - t0_ns : 0);
    } else {
        htkv_hist_count(hist);
    }
    pthread_mutex_unlock(&sh->lock);
    *version_out = rc == 0 ? version : 0;
    return rc;
}

/* ---- the staging steps for batch.c and putgroup.c (inline here) ----------------------------- */

int
htkv_shard_write_out(struct shard *sh, struct seg *s)
{
    return shard_write_out(sh, s);
}

/* How far ahead htkv_shard_install_all() prefetches each level of an install: the key's home
 * slot, the entry that slot names, and that entry's key bytes (each needs the one before). */
enum { INSTALL_AHEAD_SLOT = 16, INSTALL_AHEAD_ENT = 8, INSTALL_AHEAD_KEY = 4 };

void
htkv_shard_install_all(struct shard *sh, struct hidx_ent **ents, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        if (k + INSTALL_AHEAD_SLOT < n) {
            htkv_hidx_prefetch(&sh->idx, ents[k + INSTALL_AHEAD_SLOT]->hash, 0);
        }
        if (k + INSTALL_AHEAD_ENT < n) {
            htkv_hidx_prefetch(&sh->idx, ents[k + INSTALL_AHEAD_ENT]->hash, 1);
        }
        if (k + INSTALL_AHEAD_KEY < n) {
            htkv_hidx_prefetch(&sh->idx, ents[k + INSTALL_AHEAD_KEY]->hash, 2);
        }
        shard_install(sh, ents[k]);
        ents[k] = NULL;
    }
}

int
htkv_shard_reserve(struct shard *sh, uint64_t bytes, uint32_t nents)
{
    return shard_reserve(sh, bytes, nents);
}

void
htkv_shard_commit(struct shard *sh, uint64_t version)
{
    shard_commit(sh, version);
}

struct hidx_ent *
htkv_shard_ent_new(struct shard *sh)
{
    return ent_new(sh);
}

void
htkv_shard_ent_drop(struct shard *sh, struct hidx_ent *e)
{
    ent_drop(sh, e);
}

/* ---- whole-shard changes (compaction, restore) ---------------------------------------------- */

bool
htkv_shard_pending_find(const struct shard *sh, const struct hidx_ent *e, size_t *at)
{
    size_t lo = sh->pend_head, hi = sh->pend_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sh->pending[mid]->version < e->version) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (; lo < sh->pend_count && sh->pending[lo]->version == e->version; lo++) {
        if (sh->pending[lo] == e) {
            *at = lo;
            return true;
        }
    }
    return false;
}

void
htkv_shard_pending_swap(struct shard *sh, size_t at, const struct hidx_ent *e, struct hidx_ent *n)
{
    HTKV_ASSERT(at >= sh->pend_head && at < sh->pend_count && sh->pending[at] == e);
    HTKV_ASSERT(n->version == e->version); /* the list stays in version order */
    sh->pending[at] = n;
}

uint64_t
htkv_shard_first_unpublished(const struct shard *sh, uint64_t visible)
{
    size_t lo = sh->pend_head, hi = sh->pend_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sh->pending[mid]->version <= visible) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < sh->pend_count ? sh->pending[lo]->version : UINT64_MAX;
}

void
htkv_shard_retire(struct shard *sh, void *p, void (*free_fn)(void *))
{
    htkv_ebr_retire(sh->env->ebr, &sh->limbo, p, free_fn);
}

int
htkv_shard_limbo_reserve(struct shard *sh, size_t n)
{
    return htkv_ebr_reserve(&sh->limbo, n);
}

void
htkv_shard_retire_seg(struct shard *sh, struct seg *s)
{
    htkv_shard_retire(sh, s, htkv_seg_close_cb);
}

size_t
htkv_shard_seg_index(const struct shard *sh, uint64_t id)
{
    size_t lo = 0, hi = sh->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sh->segs[mid]->id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < sh->nsegs && sh->segs[lo]->id == id ? lo : sh->nsegs;
}

void
htkv_shard_reclaim(struct shard *sh)
{
    htkv_ebr_reclaim(sh->env->ebr, &sh->limbo);
}

void
htkv_shard_wait_sync_end(struct shard *sh)
{
    while (sh->syncing) {
        pthread_cond_wait(&sh->synced_cond, &sh->lock);
    }
}

void
htkv_shard_reset_for_restore(struct shard *sh, struct hidx *idx, struct seg **segs, size_t nsegs,
                             size_t cap, uint64_t keys, uint64_t visible, struct seg ***old,
                             size_t *nold)
{
    HTKV_ASSERT(!sh->syncing); /* no group sync of the old contents is in flight */
    struct hidx_table *t = atomic_load_explicit(&sh->idx.table, memory_order_relaxed);
    atomic_store_explicit(&sh->idx.table, atomic_load(&idx->table), memory_order_release);
    /* Then the old contents' cold keys go: a reader that finds no cold set sees the new table
     * (cold.h); one that still finds the old set reads the old contents, as a read that began
     * before the restore may. The new contents are all in memory. */
    struct cold_set *cs = atomic_load_explicit(&sh->cold, memory_order_relaxed);
    atomic_store_explicit(&sh->cold, NULL, memory_order_release);
    if (cs != NULL) {
        htkv_shard_retire(sh, cs, htkv_mem_free);
    }
    sh->cold_keys = 0;
    sh->kix_done_id = 0;
    sh->evict_retry = 0;
    sh->seal_early = false;
    sh->cold_idle = false;
    sh->cold_stuck = false;
    sh->damaged_seg = 0;
    sh->idx.entries = idx->entries;
    /* Readers may still be inside the old table or its entries: retire all of it. */
    for (uint64_t i = 0; i <= t->mask; i++) {
        uint64_t slot = atomic_load_explicit(&t->slots[i], memory_order_relaxed);
        if (!hidx_slot_live(slot)) {
            continue;
        }
        for (struct hidx_ent *e = hidx_slot_ent(slot); e != NULL;) {
            struct hidx_ent *p = atomic_load_explicit(&e->prev, memory_order_relaxed);
            htkv_ebr_retire(sh->env->ebr, &sh->limbo, e, htkv_mem_free);
            e = p;
        }
    }
    htkv_ebr_retire(sh->env->ebr, &sh->limbo, t, htkv_mem_free);
    sh->pend_head = sh->pend_count = 0;
    if (atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
        /* No view is open (restore refuses to run with one), so no reader is in the trie. */
        atomic_store_explicit(&sh->trie_ready, false, memory_order_release);
        htkv_trie_fini(&sh->trie);
    } /* the caller drops the sorted run built from the old trie (htkv_run_drop()) */
    *old = sh->segs;
    *nold = sh->nsegs;
    sh->segs = segs;
    sh->nsegs = nsegs;
    sh->segs_cap = cap;
    sh->live_keys = keys;
    sh->tombstones = 0;
    sh->entry_bytes = keys * sizeof(struct hidx_ent);
    atomic_store_explicit(&sh->dirty, false, memory_order_relaxed);
    sh->appended = visible;
    atomic_store_explicit(&sh->env->ro[sh->id].visible, visible, memory_order_release);
}

/* fdatasync the active segment (only when dirty unless @p force), outside the lock; *@p synced
 * (may be NULL) tells whether it did. */
static int
shard_sync_active(struct shard *sh, bool force, bool *synced)
{
    if (synced != NULL) {
        *synced = false;
    }
    pthread_mutex_lock(&sh->lock);
    if (sh->failed) {
        pthread_mutex_unlock(&sh->lock);
        return HTKV_EFAILED;
    }
    bool was_dirty = atomic_exchange_explicit(&sh->dirty, false, memory_order_relaxed);
    struct seg *s = shard_active(sh);
    if ((!was_dirty && !force) || s == NULL) {
        pthread_mutex_unlock(&sh->lock);
        return 0;
    }
    /* The pin keeps the segment open outside the lock should it be sealed and then dropped by
     * compaction meanwhile (compact.c waits for io_pins to fall to 0), so the fdatasync does
     * not hold writers up. Segments sealed since were synced by their seal. */
    if (synced != NULL) {
        *synced = true;
    }
    uint64_t group = htkv_shard_sync_begin(sh);
    uint64_t t0 = htkv_now_ns();
    htkv_seg_pin(s);
    pthread_mutex_unlock(&sh->lock);
    int rc = htkv_seg_sync(s);
    atomic_fetch_add_explicit(&sh->env->syncs, 1, memory_order_relaxed);
    pthread_mutex_lock(&sh->lock);
    htkv_shard_sync_end(sh, group, t0);
    if (rc != 0) {
        htkv_shard_fail_sync(sh, s, rc);
    }
    htkv_seg_unpin(s);
    pthread_mutex_unlock(&sh->lock);
    return rc != 0 ? HTKV_EFAILED : 0;
}

int
htkv_shard_sync(struct shard *sh)
{
    return shard_sync_active(sh, false, NULL);
}

int
htkv_shard_sync_dirty(struct shard *sh, bool *synced)
{
    return shard_sync_active(sh, false, synced);
}

int
htkv_shard_sync_force(struct shard *sh)
{
    return shard_sync_active(sh, true, NULL);
}
