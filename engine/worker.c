/*
 * worker.c - worker threads (thread-per-core write path).
 *
 * Design. Shard s belongs to worker s % worker_threads; a batch goes to the worker of its lowest
 * shard. Callers push a request on the worker's bounded MPSC queue and wait on a futex (after a
 * short spin), or return at once (async). Each loop iteration the worker drains its queue and
 * stages every request: records are appended to the shard's segment and installed in the index
 * as pending entries. Without HTKV_SYNC_ALWAYS a staged write is published and acknowledged at
 * once (it is in the page cache). With it, the worker submits one fdatasync per shard that has
 * waiting requests, through its own I/O ring, and keeps draining meanwhile; when the fdatasync
 * completes it publishes the shard up to the version it covered and acknowledges every request
 * of the group (group commit). In HTKV_SYNC_INTERVAL the worker syncs its dirty shards every
 * fsync_interval_ms from the loop's timeout.
 *
 * Loop:
 *
 *      +--> drain queue (stage, ack non-durable) --> submit group fsyncs --> interval fsyncs
 *      |                                                                        |
 *      +-- ack requests now visible <-- deliver completions <-- wait (ring) <---+
 *
 * Invariants
 *   1. A request is acknowledged only after its version is visible in every shard it wrote, so
 *      in ALWAYS mode only after an fdatasync that started after its records were appended.
 *   2. At most one group fsync per shard is in flight per worker (inflight_target != 0).
 *   3. After stop is raised, the worker exits only with an empty queue, no waiting request and
 *      no fsync in flight.
 *   4. The sync hook (uring/ur_fault.h) runs for every successful fsync of the ring, on this
 *      thread, before the completion publishes anything.
 *   5. A request is completed exactly once (a synchronous one goes PENDING or SLEEPING -> DONE).
 *   6. A put or delete reaches the worker that owns its shard (shard % nworkers == id); a request
 *      that waits for a group sync names its shards (nparts >= 1) and carries a version no
 *      shard's group fsync can miss: the target taken under the shard's lock is >= it.
 *   7. At most DRAIN_MAX puts and deletes are set aside (pend) between two worker_stage_puts().
 *   8. A mark (WREQ_MARK) is completed only once every request the worker took before it is
 *      staged: versions taken, entries installed.
 *   9. The worker never sleeps while it holds a waiting request and no fsync is in flight: such
 *      a request is already visible, or its shard failed, or its sync must be submitted again,
 *      and no completion would wake the worker for it (a gathering can end without a drain).
 */
#include "engine/worker.h"

#include <sched.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "engine/batch.h"
#include "engine/store.h"
#include "engine/futex.h"
#include "engine/log.h"
#include "engine/rec.h"
#include "uring/ur_fault.h"

#define UD_INTERVAL (1ull << 63)
/*
 * Waiting. A sync caller spins up to wait_spins times (~10-40 us at the most) before it sleeps on
 * the futex, and an idle worker polls its queue up to idle_spins times before it sleeps: a caller
 * that writes in a loop comes back within a microsecond or two, and a wake-up costs ~10 us. A
 * spin pays only while the thread it waits for runs on another CPU; on an oversubscribed CPU the
 * spinner steals that thread's time. So both limits adapt (spin_next()): a spin that ends with
 * what it waited for doubles its limit (up to SPINS_MAX), one that ends without halves it, and at
 * 0 one wait in SPIN_PROBE_EVERY spins SPIN_PROBE times to learn whether spinning pays again.
 * With one CPU nobody spins. A worker that just staged requests also yields once before it
 * sleeps (worker_idle_yield()): the one wait that costs the other side nothing on any CPU.
 */
#define SPINS_MAX 2048u
#define SPIN_PROBE 128u
#define SPIN_PROBE_EVERY 64u
/* Requests staged per loop iteration at most, so completions are not starved. */
#define DRAIN_MAX 1024

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
}

static void
wreq_complete(struct wreq *r, int rc, uint64_t version)
{
    if (r->hist != NULL && r->t0_ns == 0) {
        htkv_hist_count(r->hist); /* a put or delete not sampled (the owning worker writes it) */
    } else if (r->hist != NULL) {
        uint64_t now = htkv_now_ns();
        uint64_t ns = now > r->t0_ns ? now - r->t0_ns : 0;
        if (r->kind == WREQ_BATCH) {
            htkv_hist_record_shared(r->hist, ns);
        } else {
            htkv_hist_record(r->hist, ns);
        }
    }
    if (r->parts != NULL && r->parts != &r->part_one) {
        htkv_mem_free(r->parts);
    }
    r->parts = NULL;
    if (r->done != NULL) {
        r->done(rc, version, r->ctx);
        if (r->heap) {
            if (r->kind == WREQ_BATCH) {
                htkv_batch_destroy((htkv_batch *)r->batch);
            }
            htkv_mem_free(r);
        }
        return;
    }
    r->rc = rc;
    r->version = version;
    /* After this exchange the caller may return: r must not be touched again. */
    uint32_t old = atomic_exchange_explicit(&r->state, WREQ_DONE, memory_order_acq_rel);
    HTKV_ASSERT(old != WREQ_DONE); /* invariant 5 */
    if (old == WREQ_SLEEPING) {
        htkv_futex_wake(&r->state, 1);
    }
}

/* The spin limit to use now, from the adaptive @p limit (0: sleep at once). @p probe counts the
 * waits at limit 0 of the thread that spins; with one CPU (@p cpus) nobody spins. */
static inline uint32_t
spin_budget(uint32_t limit, uint32_t *probe, unsigned cpus)
{
    if (limit > 0 || cpus <= 1) {
        return limit;
    }
    return ++*probe % SPIN_PROBE_EVERY == 0 ? SPIN_PROBE : 0;
}

/* The limit after a spin at limit @p cur that @p won (got what it waited for) or not. */
static inline uint32_t
spin_next(uint32_t cur, bool won)
{
    if (!won) {
        return cur / 2;
    }
    uint32_t up = cur < SPIN_PROBE ? SPIN_PROBE : cur * 2;
    return up > SPINS_MAX ? SPINS_MAX : up;
}

static _Thread_local uint32_t wait_probe; /* this thread's waits at limit 0 */

static void
wreq_wait(struct worker *w, struct wreq *r)
{
    uint32_t limit = atomic_load_explicit(&w->wait_spins, memory_order_relaxed);
    uint32_t budget = spin_budget(limit, &wait_probe, w->db->cpus);
    bool won = false;
    for (uint32_t i = 0; i < budget && !won; i++) {
        won = atomic_load_explicit(&r->state, memory_order_acquire) == WREQ_DONE;
        cpu_relax();
    }
    uint32_t next = budget > 0 ? spin_next(limit, won) : limit;
    if (next != limit) { /* the callers' shared line is written only when the limit moves */
        atomic_store_explicit(&w->wait_spins, next, memory_order_relaxed);
    }
    if (won) {
        return;
    }
    uint32_t expected = WREQ_PENDING;
    if (!atomic_compare_exchange_strong(&r->state, &expected, WREQ_SLEEPING)) {
        return; /* DONE meanwhile */
    }
    while (atomic_load_explicit(&r->state, memory_order_acquire) != WREQ_DONE) {
        htkv_futex_wait(&r->state, WREQ_SLEEPING);
    }
}

static int
waiting_push(struct worker *w, struct wreq *r)
{
    if (w->nwaiting == w->waiting_cap) {
        size_t cap = w->waiting_cap ? w->waiting_cap * 2 : 256;
        struct wreq **n = htkv_mem_realloc(w->waiting, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        w->waiting = n;
        w->waiting_cap = cap;
    }
    HTKV_DASSERT(w->nwaiting < w->waiting_cap);
    w->waiting[w->nwaiting++] = r;
    return 0;
}

/*
 * A request was staged with @p rc and @p version (its shards in r->parts): acknowledge it now
 * when nothing was written, else let it wait for the group syncs of its shards.
 */
static void
worker_staged(struct worker *w, struct wreq *r, int rc, uint64_t version)
{
    if (rc != 0 || version == 0) {
        wreq_complete(r, rc, version);
        return;
    }
    HTKV_ASSERT(r->parts != NULL && r->nparts >= 1); /* invariant 6 */
    r->version = version;
    if (waiting_push(w, r) != 0) {
        /* Staged but no room to wait: finish the wait synchronously, as inline mode does. */
        for (uint32_t i = 0; i < r->nparts; i++) {
            (void)htkv_shard_sync(db_shard(w->db, r->parts[i]));
        }
        wreq_complete(r, -ENOMEM, 0);
    }
}

/*
 * Stage the puts and deletes drained since the last batch (w->pend), one group per shard in
 * queue order, so that each shard gets one lock, one write (htkv_shard_stage_group: one pwrite()
 * for a group of SEG_WT_MIN_BYTES or more) and one publication for all of them. In HTKV_SYNC_ALWAYS
 * they then wait for their group syncs; in the other modes they are done once published.
 */
static void
worker_stage_puts(struct worker *w)
{
    bool always = w->db->cfg.sync_mode == HTKV_SYNC_ALWAYS;
    uint32_t n = w->npend;
    w->npend = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct wreq *r = w->pend[i];
        w->pr[i] = (struct put_req){ .key = r->key,
                                     .val = r->val,
                                     .klen = r->klen,
                                     .vlen = r->vlen,
                                     .hash = r->hash,
                                     .type = r->kind == WREQ_PUT ? REC_SET : REC_DEL };
    }
    for (uint32_t i = 0; i < n; i++) {
        if (w->pend[i] == NULL) {
            continue; /* staged with an earlier request's shard */
        }
        uint32_t shard = w->pend[i]->shard;
        struct put_req *head = NULL, **tail = &head;
        for (uint32_t k = i; k < n; k++) {
            if (w->pend[k] != NULL && w->pend[k]->shard == shard) {
                *tail = &w->pr[k];
                tail = &w->pr[k].next;
            }
        }
        *tail = NULL;
        struct shard *sh = db_shard(w->db, shard);
        pthread_mutex_lock(&sh->lock);
        uint64_t upto = htkv_shard_stage_group(sh, head);
        if (!always && upto > 0) {
            htkv_shard_mark_dirty(sh);
            htkv_shard_publish(sh, upto); /* in the page cache: done */
        }
        pthread_mutex_unlock(&sh->lock);
        for (uint32_t k = i; k < n; k++) {
            struct wreq *r = w->pend[k];
            if (r == NULL || r->shard != shard) {
                continue;
            }
            w->pend[k] = NULL;
            if (!always) {
                wreq_complete(r, w->pr[k].rc, w->pr[k].version);
                continue;
            }
            r->parts = &r->part_one;
            r->part_one = shard;
            r->nparts = 1;
            worker_staged(w, r, w->pr[k].rc, w->pr[k].version);
        }
    }
}

/* Does a shard of @p w hold appends not yet fdatasynced? (Sequentially consistent loads: the
 * Dekker of worker_loop()'s sleep with workers_dirtied().) */
static bool
worker_has_dirty(const struct worker *w)
{
    struct htkv_db *db = w->db;
    for (uint32_t s = w->id; s < db->shard_count; s += db->cfg.worker_threads) {
        if (atomic_load_explicit(&db_shard(db, s)->dirty, memory_order_seq_cst)) {
            return true;
        }
    }
    return false;
}

/*
 * HTKV_SYNC_INTERVAL: shard @p id went from clean to dirty (its lock held), written by a worker
 * (a batch reaches the shards of other workers) or by a caller that found the owner parked. The
 * owner wakes if it sleeps: worker_loop() announces its sleep, then looks at its shards' flags.
 */
static void
workers_dirtied(void *ctx, uint32_t id)
{
    struct htkv_db *db = ctx;
    struct worker *o = &db->workers[id % db->cfg.worker_threads];
    atomic_thread_fence(memory_order_seq_cst); /* the dirty flag, then `sleeping` */
    if (atomic_load_explicit(&o->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&o->sleeping, 0, memory_order_relaxed)) {
        htkv_ur_wake(&o->ur);
    }
}

/*
 * Stage one request (a batch, after the puts and deletes set aside before it), or set a put or
 * delete aside for worker_stage_puts().
 * Acknowledges it unless it must wait for a group sync.
 */
static void
worker_stage(struct worker *w, struct wreq *r)
{
    struct htkv_db *db = w->db;
    bool always = db->cfg.sync_mode == HTKV_SYNC_ALWAYS;
    uint64_t version = 0;
    int rc;
    if (r->kind == WREQ_PUT || r->kind == WREQ_DEL) {
        HTKV_ASSERT(w->npend < DRAIN_MAX && r->shard % db->nworkers == w->id); /* 6, 7 */
        w->pend[w->npend++] = r; /* room for a whole drain */
        return;
    }
    worker_stage_puts(w); /* what came before the batch or mark is staged before it */
    if (r->kind == WREQ_MARK) {
        wreq_complete(r, 0, 0);
        return;
    }
    if (!always) {
        rc = htkv_batch_apply(db, r->batch, &version);
        wreq_complete(r, rc, version);
        return;
    }
    size_t n = r->batch->nops;
    r->parts = n <= 1 ? &r->part_one : htkv_mem_alloc(n * sizeof(uint32_t));
    if (r->parts == NULL) {
        wreq_complete(r, -ENOMEM, 0);
        return;
    }
    rc = htkv_batch_stage(db, r->batch, &version, r->parts, &r->nparts);
    worker_staged(w, r, rc, version);
}

/* An fsync could not be submitted: its writes join the next group. */
static void
worker_sync_unbegin(struct shard *sh, uint64_t group)
{
    pthread_mutex_lock(&sh->lock);
    sh->metrics.unsynced_writes += group;
    pthread_mutex_unlock(&sh->lock);
}

/*
 * Should the group fsync about to be submitted run on this thread (htkv_seg_sync(), its result
 * posted to the ring: htkv_ur_post())? Yes when each worker owns at most one shard (the
 * HTKV_SYNC_ALWAYS default), nothing is in flight and nothing is queued: it has nothing to
 * overlap with the fsync, and a ring's fsync runs on a kernel worker thread whose wake-up and
 * hand-back cost ~25% of the puts of 16 durable writers on 2 CPUs (perf/README.md).
 */
static bool
worker_sync_here(struct worker *w)
{
    return w->db->shard_count <= w->db->cfg.worker_threads && w->ur.inflight == 0 &&
           htkv_mpsc_empty(&w->q);
}

static void worker_on_fsync(void *ctx, uint64_t ud, int res);

/* Submit a group fsync for every shard that a waiting request still needs. Returns true when
 * one ran on this thread (its result is ready in the ring). */
static bool
worker_submit_group_syncs(struct worker *w)
{
    bool ran_now = false;
    struct htkv_db *db = w->db;
    for (size_t i = 0; i < w->nwaiting; i++) {
        struct wreq *r = w->waiting[i];
        for (uint32_t k = 0; k < r->nparts; k++) {
            uint32_t s = r->parts[k];
            if (w->inflight_target[s] != 0 ||
                atomic_load_explicit(&db->ro[s].visible, memory_order_acquire) >= r->version) {
                continue;
            }
            struct shard *sh = db_shard(db, s);
            pthread_mutex_lock(&sh->lock);
            uint64_t target = sh->appended;
            HTKV_ASSERT(target >= r->version); /* invariant 6: the sync covers the request */
            struct seg *seg = shard_active(sh);
            bool failed = sh->failed || seg == NULL;
            uint64_t group = failed ? 0 : htkv_shard_sync_begin(sh);
            if (!failed) {
                htkv_seg_pin(seg); /* until worker_on_fsync(): compaction waits for it */
            }
            pthread_mutex_unlock(&sh->lock);
            if (failed) {
                continue;
            }
            w->inflight_t0[s] = htkv_now_ns();
            w->inflight_group[s] = group;
            if (worker_sync_here(w)) {
                /* Through htkv_seg_sync(): under the segment's sync_lock, like every caller's
                 * sync (seg.h), so no other sync of it can take its error. */
                w->inflight_target[s] = target;
                w->inflight_seg[s] = seg;
                atomic_fetch_add_explicit(&db->env.syncs, 1, memory_order_relaxed);
                int res = htkv_seg_sync(seg);
                if (htkv_ur_post(&w->ur, s, res) != 0) {
                    worker_on_fsync(w, s, res); /* no room in the ring: its completion now */
                }
                ran_now = true;
                continue;
            }
            int src = htkv_ur_fsync(&w->ur, seg->fd, s);
            if (src == 0) {
                w->inflight_target[s] = target;
                w->inflight_seg[s] = seg;
                atomic_fetch_add_explicit(&db->env.syncs, 1, memory_order_relaxed);
            } else {
                htkv_seg_unpin(seg);
                worker_sync_unbegin(sh, group);
            }
        }
    }
    return ran_now;
}

/* HTKV_SYNC_INTERVAL: fdatasync this worker's dirty shards. */
static void
worker_interval_syncs(struct worker *w)
{
    struct htkv_db *db = w->db;
    unsigned n = db->cfg.worker_threads;
    for (uint32_t s = w->id; s < db->shard_count; s += n) {
        struct shard *sh = db_shard(db, s);
        if (!atomic_load_explicit(&sh->dirty, memory_order_relaxed) ||
            w->inflight_iseg[s] != NULL) {
            continue; /* clean, or the last interval fsync has not completed yet */
        }
        pthread_mutex_lock(&sh->lock);
        atomic_store_explicit(&sh->dirty, false, memory_order_relaxed);
        struct seg *seg = shard_active(sh);
        if (seg == NULL) {
            pthread_mutex_unlock(&sh->lock);
            continue;
        }
        uint64_t group = htkv_shard_sync_begin(sh);
        htkv_seg_pin(seg);
        pthread_mutex_unlock(&sh->lock);
        w->inflight_t0[s] = htkv_now_ns();
        w->inflight_group[s] = group;
        if (htkv_ur_fsync(&w->ur, seg->fd, UD_INTERVAL | s) == 0) {
            w->inflight_iseg[s] = seg;
            atomic_fetch_add_explicit(&db->env.syncs, 1, memory_order_relaxed);
        } else {
            htkv_seg_unpin(seg);
            atomic_store_explicit(&sh->dirty, true, memory_order_relaxed); /* retry next time */
            worker_sync_unbegin(sh, group);
        }
    }
}

static void
worker_on_fsync(void *ctx, uint64_t ud, int res)
{
    struct worker *w = ctx;
    struct htkv_db *db = w->db;
    uint32_t s = (uint32_t)(ud & 0xFFFFFFFFu);
    HTKV_ASSERT(s < db->shard_count);
    struct shard *sh = db_shard(db, s);
    bool interval = (ud & UD_INTERVAL) != 0;
    struct seg *seg = interval ? w->inflight_iseg[s] : w->inflight_seg[s];
    HTKV_ASSERT(seg != NULL);
    HTKV_ASSERT(interval || w->inflight_target[s] != 0); /* invariant 2: the group in flight */
    res = htkv_seg_sync_result(seg, res); /* a failure another sync of the file took counts */
    if (res < 0) {
        pthread_mutex_lock(&sh->lock);
        htkv_shard_sync_end(sh, w->inflight_group[s], w->inflight_t0[s]);
        htkv_shard_fail_sync(sh, seg, res);
    } else {
        /* The sync hook sees the file before the publish below acknowledges the writes the sync
         * covers, outside the shard's lock (a sync run on this thread through htkv_seg_sync()
         * showed it the same bytes already). The pin keeps seg->fd open. */
        htkv_fault_synced(seg->fd);
        if (!interval) {
            w->last_sync_ns = htkv_now_ns() - w->inflight_t0[s];
        }
        pthread_mutex_lock(&sh->lock);
        htkv_shard_sync_end(sh, w->inflight_group[s], w->inflight_t0[s]);
        if (!interval && !sh->failed) {
            /* Not after a failure reported to another fdatasync of the same descriptor (a
             * seal's, a caller's): this one does not see it. */
            htkv_shard_publish(sh, w->inflight_target[s]);
        }
    }
    htkv_seg_unpin(seg);
    if (interval) {
        w->inflight_iseg[s] = NULL;
    } else {
        w->inflight_seg[s] = NULL;
    }
    pthread_cond_broadcast(&sh->synced_cond);
    pthread_mutex_unlock(&sh->lock);
    if ((ud & UD_INTERVAL) == 0) {
        w->inflight_target[s] = 0;
    }
}

/* Acknowledge waiting requests that are now visible everywhere, or failed. */
static void
worker_ack_waiting(struct worker *w)
{
    struct htkv_db *db = w->db;
    size_t keep = 0;
    for (size_t i = 0; i < w->nwaiting; i++) {
        struct wreq *r = w->waiting[i];
        int rc = 0;
        bool ready = true;
        for (uint32_t k = 0; k < r->nparts; k++) {
            uint32_t s = r->parts[k];
            if (atomic_load_explicit(&db->ro[s].visible, memory_order_acquire) >= r->version) {
                continue;
            }
            struct shard *sh = db_shard(db, s);
            pthread_mutex_lock(&sh->lock);
            bool failed = sh->failed;
            pthread_mutex_unlock(&sh->lock);
            if (failed && w->inflight_target[s] == 0) {
                rc = HTKV_EFAILED;
            } else {
                ready = false;
            }
        }
        if (ready) {
            wreq_complete(r, rc, rc == 0 ? r->version : 0);
        } else {
            w->waiting[keep++] = r;
        }
    }
    w->nwaiting = keep;
}

/* How long the loop may wait: 0 when busy; when idle, until the next interval sync if a shard is
 * dirty (HTKV_SYNC_INTERVAL), else without a timer (-1): an idle store does not wake. */
static int
worker_timeout_ms(struct worker *w, bool idle)
{
    if (!idle) {
        return 0;
    }
    if (w->db->cfg.sync_mode != HTKV_SYNC_INTERVAL || !worker_has_dirty(w)) {
        return -1;
    }
    uint64_t now = now_ns();
    if (now >= w->next_interval_ns) {
        return 0;
    }
    return (int)((w->next_interval_ns - now + 999999) / 1000000);
}

/* Poll the empty queue before sleeping, for as long as that has been paying (see "Waiting").
 * Returns whether a request came. */
static bool
worker_idle_spin(struct worker *w)
{
    uint32_t budget = spin_budget(w->idle_spins, &w->idle_probe, w->db->cpus);
    bool won = false;
    for (uint32_t i = 0; i < budget && !won; i++) {
        won = !htkv_mpsc_empty(&w->q);
        cpu_relax();
    }
    if (budget > 0) {
        w->idle_spins = spin_next(w->idle_spins, won);
    }
    return won;
}

/* After a round that staged requests, give the CPU away once before sleeping. A caller that
 * shares this CPU (or more threads than CPUs) runs now and queues requests without waking this
 * worker, which then takes them all in one round; woken per request instead, each costs two
 * context switches. With nobody else runnable the yield returns at once. Returns whether a
 * request came. */
static bool
worker_idle_yield(struct worker *w, int drained_before)
{
    if (drained_before == 0) {
        return false;
    }
    sched_yield();
    return !htkv_mpsc_empty(&w->q);
}

/*
 * HTKV_SYNC_ALWAYS: should the next group syncs wait for more requests? Yes while fewer requests
 * wait for a sync than sync callers are inside a call (active: those just acknowledged count until
 * they return, so in a closed loop they are expected back), no fsync is in flight, and the
 * gathering has lasted less than htkv_shard_gather_limit() of the last group fsync. A caller
 * that misses a group waits for the whole next one: putgroup.c gathers the same way for inline
 * writers.
 */
static bool
worker_gathering(struct worker *w)
{
    if (w->db->cfg.sync_mode != HTKV_SYNC_ALWAYS || w->nwaiting == 0 || w->ur.inflight != 0 ||
        w->nwaiting >= atomic_load_explicit(&w->active, memory_order_relaxed)) {
        w->gather_until = 0;
        return false;
    }
    uint64_t now = htkv_now_ns();
    if (w->gather_until == 0) {
        w->gather_until = now + htkv_shard_gather_limit(w->last_sync_ns);
    }
    if (now >= w->gather_until) {
        w->gather_until = 0;
        return false;
    }
    return true;
}

static void
worker_loop(struct worker *w)
{
    struct htkv_db *db = w->db;
    uint64_t interval_ns = (uint64_t)db->cfg.fsync_interval_ms * 1000000ull;
    w->next_interval_ns = now_ns() + interval_ns;
    int drained_before = 0;
    for (;;) {
        int drained = 0;
        struct wreq *r;
        while (drained < DRAIN_MAX && (r = htkv_mpsc_pop(&w->q)) != NULL) {
            worker_stage(w, r);
            drained++;
        }
        worker_stage_puts(w);
        if (worker_gathering(w)) {
            sched_yield(); /* the callers it waits for are runnable: let them push */
            drained_before = drained;
            continue;
        }
        bool ready = worker_submit_group_syncs(w);
        if (db->cfg.sync_mode == HTKV_SYNC_INTERVAL && now_ns() >= w->next_interval_ns) {
            worker_interval_syncs(w);
            w->next_interval_ns = now_ns() + interval_ns;
        }
        bool stop = atomic_load_explicit(&w->stop, memory_order_acquire);
        if (stop && drained == 0 && htkv_mpsc_empty(&w->q) && w->nwaiting == 0 &&
            w->ur.inflight == 0) {
            HTKV_ASSERT(w->npend == 0); /* invariant 3: nothing set aside either */
            return;
        }
        /* Never asleep with a result ready in the ring, nor with waiting requests that no
         * completion will come for (invariant 9). */
        bool settle = ready || (w->nwaiting > 0 && w->ur.inflight == 0);
        bool idle = drained == 0 && !settle && !worker_idle_spin(w) &&
                    !worker_idle_yield(w, drained_before);
        drained_before = drained;
        if (idle) {
            /* Dekker with htkv_worker_submit(): announce sleep, then look at the queue again. */
            atomic_store_explicit(&w->sleeping, 1, memory_order_seq_cst);
            if (!htkv_mpsc_empty(&w->q) || (stop && w->ur.inflight == 0)) {
                atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
                idle = false;
            }
        }
        int timeout = worker_timeout_ms(w, idle);
        int rc = htkv_ur_wait(&w->ur, timeout, worker_on_fsync, w);
        atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
        if (timeout < 0) {
            w->next_interval_ns = now_ns() + interval_ns; /* a write dirties it from now on */
        }
        if (rc < 0) {
            htkv_log(&db->env.log, HTKV_LOG_ERROR, "worker %u: waiting on %s failed: %s", w->id,
                     htkv_ur_backend_name(&w->ur), htkv_strerror(rc));
            struct timespec ts = { 0, 1000000 };
            nanosleep(&ts, NULL); /* do not spin on a persistent error */
        }
        if (w->nwaiting > 0) {
            worker_ack_waiting(w);
        }
    }
}

/* The store whose worker the calling thread is (NULL for any other thread). */
static _Thread_local const struct htkv_db *worker_of;

bool
htkv_worker_thread(const struct htkv_db *db)
{
    return worker_of == db;
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    struct htkv_db *db = w->db;
    worker_of = db;
    char name[16];
    snprintf(name, sizeof(name), "htkv-w%u", w->id);
    prctl(PR_SET_NAME, name); /* top, perf and gdb show which thread is a worker */
    /* Everything this thread allocates comes from its arena (its shards' memory included). */
    htkv_arena_bind(db->narenas > 0 ? db->arenas[w->id % db->narenas] : 0);
    int backend = db->cfg.io_backend == HTKV_IO_URING  ? UR_URING
                  : db->cfg.io_backend == HTKV_IO_SYNC ? UR_SYNC
                                                       : UR_AUTO;
    unsigned depth = 64;
    while (depth < db->cfg.queue_depth && depth < 4096) {
        depth *= 2;
    }
    w->init_rc = htkv_ur_init(&w->ur, backend, depth);
    atomic_store_explicit(&w->init_done, 1, memory_order_release);
    if (w->init_rc != 0) {
        return NULL;
    }
    worker_loop(w);
    /* The ring and eventfd are closed by htkv_workers_stop() after the join: a stopper may still
     * be writing to the eventfd to wake this thread. */
    return NULL;
}

static void
worker_free(struct worker *w)
{
    htkv_mpsc_fini(&w->q);
    htkv_mem_free(w->waiting);
    htkv_mem_free(w->inflight_target);
    htkv_mem_free(w->inflight_seg);
    htkv_mem_free(w->inflight_iseg);
    htkv_mem_free(w->inflight_t0);
    htkv_mem_free(w->inflight_group);
    htkv_mem_free(w->pend);
    htkv_mem_free(w->pr);
}

int
htkv_workers_start(struct htkv_db *db)
{
    unsigned n = db->cfg.worker_threads;
    HTKV_ASSERT(n > 0);
    db->workers = htkv_mem_calloc(n, sizeof(*db->workers));
    if (db->workers == NULL) {
        return -ENOMEM;
    }
    uint64_t qcap = 64;
    while (qcap < db->cfg.queue_depth && qcap < (1u << 20)) {
        qcap *= 2;
    }
    int rc = 0;
    unsigned started = 0;
    for (unsigned i = 0; i < n && rc == 0; i++) {
        struct worker *w = &db->workers[i];
        w->db = db;
        w->id = i;
        atomic_init(&w->sleeping, 0);
        uint32_t spins = db->cpus > 1 ? SPINS_MAX : 0; /* optimistic: the first waits teach */
        atomic_init(&w->wait_spins, spins);
        w->idle_spins = spins;
        w->idle_probe = 0;
        atomic_init(&w->stop, 0);
        atomic_init(&w->init_done, 0);
        rc = htkv_mpsc_init(&w->q, qcap);
        w->inflight_target = htkv_mem_calloc(db->shard_count, sizeof(uint64_t));
        w->inflight_seg = htkv_mem_calloc(db->shard_count, sizeof(struct seg *));
        w->inflight_iseg = htkv_mem_calloc(db->shard_count, sizeof(struct seg *));
        w->inflight_t0 = htkv_mem_calloc(db->shard_count, sizeof(uint64_t));
        w->inflight_group = htkv_mem_calloc(db->shard_count, sizeof(uint64_t));
        w->pend = htkv_mem_calloc(DRAIN_MAX, sizeof(*w->pend));
        w->pr = htkv_mem_calloc(DRAIN_MAX, sizeof(*w->pr));
        if (rc == 0 && (w->inflight_target == NULL || w->inflight_seg == NULL ||
                        w->inflight_iseg == NULL || w->inflight_t0 == NULL ||
                        w->inflight_group == NULL || w->pend == NULL || w->pr == NULL)) {
            rc = -ENOMEM;
        }
        if (rc == 0) {
            rc = -pthread_create(&w->thread, NULL, worker_main, w);
        }
        if (rc != 0) {
            worker_free(w);
            break;
        }
        started++;
        while (!atomic_load_explicit(&w->init_done, memory_order_acquire)) {
            sched_yield();
        }
        if (w->init_rc != 0) {
            rc = w->init_rc;
            pthread_join(w->thread, NULL);
            worker_free(w);
            started--;
            htkv_set_error("worker %u: cannot set up %s: %s", i,
                           db->cfg.io_backend == HTKV_IO_URING ? "io_uring" : "I/O",
                           htkv_strerror(rc));
        }
    }
    db->nworkers = started;
    if (rc != 0) {
        htkv_workers_stop(db);
        return rc;
    }
    if (db->cfg.sync_mode == HTKV_SYNC_INTERVAL) {
        db->env.dirtied = workers_dirtied; /* before any write: callers wait for the open */
        db->env.dirtied_ctx = db;
    }
    return 0;
}

void
htkv_workers_stop(struct htkv_db *db)
{
    for (unsigned i = 0; i < db->nworkers; i++) {
        struct worker *w = &db->workers[i];
        atomic_store_explicit(&w->stop, 1, memory_order_release);
        htkv_ur_wake(&w->ur);
    }
    for (unsigned i = 0; i < db->nworkers; i++) {
        pthread_join(db->workers[i].thread, NULL);
        htkv_ur_fini(&db->workers[i].ur);
        worker_free(&db->workers[i]);
    }
    db->env.dirtied = NULL; /* joined: nothing writes through the workers any more */
    htkv_mem_free(db->workers);
    db->workers = NULL;
    db->nworkers = 0;
}

bool
htkv_worker_parked(struct htkv_db *db, uint32_t shard)
{
    HTKV_DASSERT(db->nworkers > 0 && shard < db->shard_count);
    struct worker *w = &db->workers[shard % db->nworkers];
    /* sleeping is set after the worker completed everything it popped and found its queue
     * empty; a caller's own push resets it (htkv_worker_submit()), so a 1 read here was set after
     * each of this caller's requests was completed, and depth 0 means none is queued. */
    return atomic_load_explicit(&w->sleeping, memory_order_acquire) && htkv_mpsc_depth(&w->q) == 0;
}

int
htkv_worker_submit(struct htkv_db *db, uint32_t shard, struct wreq *r)
{
    HTKV_DASSERT(db->nworkers > 0 && shard < db->shard_count);
    HTKV_DASSERT(r->kind == WREQ_BATCH || r->shard == shard); /* invariant 6 */
    struct worker *w = &db->workers[shard % db->nworkers];
    /* An async request may be completed and freed by the worker as soon as it is pushed: decide
     * everything about it before the push. */
    bool async = r->done != NULL;
    atomic_init(&r->state, WREQ_PENDING);
    r->parts = NULL;
    r->nparts = 0;
    if (!async) {
        atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed); /* before the push */
    }
    while (!htkv_mpsc_push(&w->q, r)) {
        if (async) {
            return HTKV_EBUSY;
        }
        htkv_ur_wake(&w->ur); /* back-pressure: make sure the worker drains, then retry */
        sched_yield();
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&w->sleeping, 0, memory_order_relaxed)) {
        htkv_ur_wake(&w->ur);
    }
    if (async) {
        return 0;
    }
    wreq_wait(w, r);
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
    return r->rc;
}

int
htkv_worker_mark(struct htkv_db *db, uint32_t shard)
{
    HTKV_ASSERT(!htkv_worker_thread(db)); /* it could wait for itself */
    if (htkv_worker_parked(db, shard)) {
        return 0;
    }
    struct wreq m = { .kind = WREQ_MARK, .shard = shard };
    return htkv_worker_submit(db, shard, &m);
}

const char *
htkv_workers_backend(const struct htkv_db *db)
{
    return db->nworkers > 0 ? htkv_ur_backend_name(&db->workers[0].ur) : "inline";
}
