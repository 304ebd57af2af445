/*
 * worker.h - worker threads: each owns a set of shards, drains its MPSC queue of write requests,
 * and syncs them in groups through its own I/O ring (thread-per-core).
 */
#ifndef HTKV_ENGINE_WORKER_H
#define HTKV_ENGINE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine/internal.h"
#include "engine/hist.h"
#include "engine/mpsc.h"
#include "uring/ur.h"

struct htkv_db;
struct htkv_batch;

enum wreq_kind {
    WREQ_PUT = 1,
    WREQ_DEL = 2,
    WREQ_BATCH = 3,
    WREQ_MARK = 4, /* completed once what the worker took before it is staged (htkv_worker_mark) */
};

enum wreq_state {
    WREQ_PENDING = 0,
    WREQ_DONE = 1,
    WREQ_SLEEPING = 2, /* the caller sleeps on the futex */
};

/* A write handed to a worker. Lives on the caller's stack (sync calls) or the heap (async). */
struct wreq {
    uint8_t kind;
    bool heap;     /* async: freed by the worker after the callback */
    uint32_t klen; /* WREQ_PUT / WREQ_DEL */
    uint32_t vlen;
    uint32_t shard;
    const void *key;
    const void *val;
    uint64_t hash;
    const struct htkv_batch *batch; /* WREQ_BATCH */
    uint32_t *parts;                /* shards written by a staged batch */
    uint32_t nparts;
    uint32_t part_one; /* storage for a single part */
    uint64_t version;
    int rc;
    _Atomic uint32_t state;
    htkv_done_fn done; /* async */
    void *ctx;
    /* Latency of the caller's call, recorded at completion into `hist` when it is set: plainly
     * for puts and deletes (the worker owning the shard is the histogram's only writer), with
     * atomic adds for batches (any worker may run one). A put or delete with t0_ns 0 was not
     * sampled (METRICS_WRITE_SAMPLE): it is only counted. */
    struct htkv_hist *hist;
    uint64_t t0_ns;
};

struct worker {
    struct htkv_db *db;
    unsigned id;
    pthread_t thread;
    struct mpsc q;
    struct ur ur;
    /* Adaptive spin limits (worker.c, "Waiting"): of the sync callers waiting for this worker
     * (read by each wait, written only when it moves), and of this worker's own idle polling,
     * with idle_probe counting its idle waits at limit 0. */
    _Alignas(HTKV_CACHELINE) _Atomic uint32_t wait_spins;
    uint32_t idle_spins;
    uint32_t idle_probe;
    _Alignas(HTKV_CACHELINE) _Atomic int sleeping;
    /* Sync callers inside htkv_worker_submit() for this worker, from before their push until
     * they return (their request done and their thread running again): in HTKV_SYNC_ALWAYS the
     * worker holds its next group syncs back for those coming back (worker_gathering()). */
    _Atomic uint32_t active;
    _Atomic int stop;
    int init_rc;
    _Atomic int init_done;
    /* From here on the worker's own fields, on lines of their own: callers write the line above
     * (sleeping, active) on every call. */
    /* Requests staged and waiting for their group sync (HTKV_SYNC_ALWAYS). */
    _Alignas(HTKV_CACHELINE) struct wreq **waiting;
    size_t nwaiting, waiting_cap;
    /* Per shard of the store: target version of this worker's fsync in flight (0 = none). */
    uint64_t *inflight_target;
    struct seg **inflight_seg;  /* segment of each shard's group fsync in flight (pinned) */
    struct seg **inflight_iseg; /* segment of each shard's interval fsync in flight (pinned) */
    uint64_t *inflight_t0;      /* when each shard's fsync in flight was submitted (metrics) */
    uint64_t *inflight_group;   /* writes it covers (metrics) */
    uint64_t next_interval_ns;  /* HTKV_SYNC_INTERVAL: when to sync dirty shards next */
    uint64_t last_sync_ns;      /* duration of the last group fsync (HTKV_SYNC_ALWAYS) */
    uint64_t gather_until;      /* deadline of the gathering under way (0 = none) */
    /* Puts and deletes of this drain not staged yet (npend of them; room for DRAIN_MAX), and
     * the scratch requests that stage them (worker_stage_puts). */
    struct wreq **pend;
    uint32_t npend;
    struct put_req *pr;
};

/* Start db->cfg.worker_threads workers. Returns 0 or an error (none left running). */
int htkv_workers_start(struct htkv_db *db);
/* Drain every queue, finish every sync, join and free the workers. */
void htkv_workers_stop(struct htkv_db *db);

/*
 * Hand @p r to the worker owning @p shard. Sync callers (r->done == NULL) wait for completion
 * and get r->rc; async callers get HTKV_EBUSY when the queue is full.
 */
int htkv_worker_submit(struct htkv_db *db, uint32_t shard, struct wreq *r);

/*
 * Is the worker that owns @p shard parked: asleep, its queue empty, everything it took done? A
 * synchronous put or delete outside HTKV_SYNC_ALWAYS then runs on the calling thread instead of
 * waking it (two context switches for a write the caller waits for anyway); the caller's own
 * earlier writes through that worker are all applied, so its order holds. Any thread.
 */
bool htkv_worker_parked(struct htkv_db *db, uint32_t shard);

/*
 * Wait until the worker owning @p shard has staged every request queued before this call (none
 * queued and everything done: no wait). A batch over shards of several workers is run by one of
 * them; the calling thread first marks the others, so that its earlier writes to their shards
 * take their versions first. Not from a worker thread of @p db (htkv_worker_thread()): a worker
 * waiting for another could wait for itself. 0, or HTKV_ECLOSED.
 */
int htkv_worker_mark(struct htkv_db *db, uint32_t shard);

/* Is the calling thread one of @p db's workers (a done callback runs on one)? */
bool htkv_worker_thread(const struct htkv_db *db);

/* Name of the I/O backend the workers use ("io_uring", "sync"), or "none" in inline mode. */
const char *htkv_workers_backend(const struct htkv_db *db);

#endif
