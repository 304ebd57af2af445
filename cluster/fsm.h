/*
 * fsm.h - the raft state machine of htkv_cluster: a raft_fsm over one local htkv store.
 *
 * apply   decodes an entry (entry.h) and applies its requests in order with htkv_submit(), the
 *         J-th request of the entry at index I with version I * 2^16 + J (FSM_VERSION()).
 *         raft 0.15 does not pass the index to apply: it is raft_last_applied() + 1, because
 *         raft applies entries one at a time, in order, and advances last_applied only after
 *         an entry's apply returned 0 (barriers and configuration entries included).
 * snapshot on the loop thread, between applies (so at the snapshot's index): only a cut view of
 *         the store (htkv_view_open_cut(): every write at or below its version, none above).
 *         snapshot_async, on a libuv worker thread while the loop applies and sends heartbeats:
 *         htkv_view_snapshot_stream() of that view into one raft buffer (no file, no disk
 *         write). snapshot_finalize, on the loop thread once raft stored it or gave it up: the
 *         buffer and the view are freed. raft 0.15 takes one snapshot at a time and refuses to
 *         install one meanwhile, so the view is never open during a restore.
 * restore checks the snapshot, and installs it with htkv_snapshot_restore() only when it is
 *         newer than the store (a restarted member whose store already holds it skips it).
 *
 * Outcomes. A request's result is deterministic (the same on every member): 0, HTKV_ECONFLICT
 * (a condition failed), HTKV_ENOTFOUND (a delete-one of an absent key), -EINVAL (a malformed
 * entry: every member decodes the same bytes). Any other failure (the store's I/O, a checksum,
 * memory) is not: the FSM stops for good (failed), logs it, calls on_fail once, and returns
 * RAFT_IOERR for this and every later apply, so the entry is never counted as applied.
 *
 * Invariants
 *   1. Versions given to htkv_submit() strictly increase along the log; a request whose version
 *      is at or below htkv_latest_version() was applied before (a replay after a restart) and
 *      is skipped whole, before its conditions are evaluated. This needs a store that holds
 *      every write up to its latest version: node_open.c rebuilds one that may not (a power
 *      loss; a write torn by a crash of the process, whose version recovery still counts).
 *   2. Conditions are evaluated against the store as the log left it before the request: the
 *      requests before it in the same entry are applied first.
 *   3. After failed is set, the store is not written again by this FSM.
 */
#ifndef HTKV_CLUSTER_FSM_H
#define HTKV_CLUSTER_FSM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <raft.h>

#include <htkv/cluster.h>
#include <htkv/replication.h>

/* Version of the @p j-th request (1-based) of the entry at raft index @p index. */
#define FSM_VERSION(index, j) (((uint64_t)(index) << 16) | (uint64_t)(j))
/* Largest raft index whose versions fit under the store's limit of 2^62. */
#define FSM_INDEX_MAX ((UINT64_C(1) << 46) - 1)

/* Result of one request of the entry just applied. */
struct fsm_result {
    int rc;           /* 0 or a deterministic code (see the top of this file) */
    uint64_t version; /* the write's version; 0 when nothing was written */
};

/* What apply hands to raft_apply's callback: valid only during that callback. */
struct fsm_results {
    uint32_t count;
    struct fsm_result *res;
};

struct cluster_fsm {
    struct raft_fsm fsm;    /* handed to raft; fsm.data points back here */
    struct raft *raft;      /* set before raft starts: apply asks it for last_applied */
    htkv_db *db;            /* the local store; kept */
    char *snap_path;        /* scratch file for a received snapshot (owned) */
    htkv_view *snap_view;   /* the snapshot being taken: from snapshot to snapshot_finalize */
    uint64_t snap_index;    /* its raft index (for the trace) */
    struct fsm_results out; /* results of the last entry */
    uint32_t res_cap;
    htkv_command *cmds; /* scratch for one request's commands */
    size_t cmds_cap;
    bool failed;      /* invariant 3 */
    bool snap_warned; /* a failed snapshot was logged; cleared by the next that works */
    int fail_rc;      /* the first failure's code */
    htkv_log_fn log_fn;
    void *log_ctx;
    void (*on_fail)(struct cluster_fsm *f); /* called once, when failed is set; may be NULL */
    void *ctx;                              /* for on_fail */
    /* Ordered reads hold it shared while their view of the store is open; a restore takes it
     * exclusively (htkv_snapshot_restore() refuses to run while a view is open). */
    pthread_rwlock_t views;
    uint64_t applied_entries; /* statistics for the tests */
    uint64_t restores;
    uint64_t snapshots; /* made by snapshot_async (raft may fail to store one) */
    /* Snapshot policy (htkv_cfsm_snapshot_policy()): raft's threshold is snap_every entries
     * once bytes_since reached snap_bytes, FSM_SNAP_STRETCH times that before. */
    unsigned snap_every;
    uint64_t snap_bytes;  /* 0: entries alone */
    uint64_t bytes_since; /* entry bytes applied since the last snapshot stored, restore or open */
    uint64_t bytes_at_take;          /* bytes_since when the snapshot in progress was taken */
    uint64_t applied_under_snapshot; /* entries applied while one was being taken */
    bool trace;       /* HTKV_CLUSTER_TRACE: log every apply, snapshot and restore (util.h) */
    uint32_t skipped; /* requests of the entry being applied skipped by invariant 1 */
};

/*
 * Set up @p f over @p db; @p scratch_dir holds the FSM's scratch file. Returns 0 or -ENOMEM.
 * The caller sets f->raft before raft starts.
 */
int htkv_cfsm_init(struct cluster_fsm *f, htkv_db *db, const char *scratch_dir, htkv_log_fn log_fn,
                   void *log_ctx);

/* Without snapshot_bytes of writes since the last snapshot, raft waits this many times longer. */
#define FSM_SNAP_STRETCH 64u

/*
 * Take snapshots after @p every entries applied once @p bytes of entries (writes) were applied
 * since the last one, and after FSM_SNAP_STRETCH * @p every entries otherwise; @p bytes 0 =
 * after @p every entries (raft's rule). Loop thread; f->raft set. Sets raft's threshold now and
 * after each apply, stored snapshot and restore. A snapshot that fails to be stored leaves the
 * bytes counted: raft tries again after the next apply.
 */
void htkv_cfsm_snapshot_policy(struct cluster_fsm *f, unsigned every, uint64_t bytes);

/* Free what htkv_cfsm_init() allocated (the store is not closed). */
void htkv_cfsm_fini(struct cluster_fsm *f);

#endif /* HTKV_CLUSTER_FSM_H */
