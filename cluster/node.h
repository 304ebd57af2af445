/*
 * node.h - one running member of htkv_cluster: the handle shared by the API side (node.c, any
 * caller thread) and the loop side (node_io.c, the member's libuv loop thread).
 *
 * Threads. Every raft call and callback runs on the loop thread. A caller thread builds a
 * request (struct creq) on its own stack, appends it to the queue under mu, wakes the loop with
 * uv_async_send() (the only libuv call that is thread-safe) and sleeps on cv until the loop
 * thread sets done. The loop thread takes the whole queue at once, so requests that arrive
 * together are handled together: writes go out as few raft entries (group commit), reads
 * share one raft barrier.
 *
 * Request life (a creq):
 *
 *     queued --on_wake()--> proposed (in a wbatch / rbatch) --raft callback--> done
 *        \-----------------on_wake(): not leader, closing, failed------------/
 *
 * Invariants
 *   1. A creq is completed exactly once (creq_done(), under mu); the caller does not touch it
 *      between queueing it and seeing done, and the loop thread does not touch it after.
 *   2. Fields marked "loop" are read and written on the loop thread only (or before it starts
 *      and after it ends); fields marked "mu" only under mu.
 *   3. Once closing is set, no request is queued (the caller gets HTKV_ECLOSED); once stopping
 *      is set, no raft call is made other than what raft_close() drives.
 */
#ifndef HTKV_CLUSTER_NODE_H
#define HTKV_CLUSTER_NODE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include <htkv/cluster.h>

#include "cluster/fsm.h"

enum creq_kind {
    CREQ_WRITE = 1,  /* bytes: one encoded request (entry.h) */
    CREQ_READ = 2,   /* wait for a barrier, then the caller reads */
    CREQ_STATUS = 3, /* fill status */
    CREQ_CHANGE = 4, /* a membership change or a leadership transfer (member.c) */
};

/* What a CREQ_CHANGE asks for. */
enum creq_change {
    CHANGE_ADD = 1,      /* add target as spare, then promote it to voter */
    CHANGE_REMOVE = 2,   /* remove target */
    CHANGE_TRANSFER = 3, /* hand leadership to target (0: raft chooses) */
};

/* Where the one membership change of a member stands (loop). */
enum change_stage {
    STAGE_IDLE = 0,
    STAGE_ADDING = 1,       /* raft_add() in raft */
    STAGE_PROMOTE_NEXT = 2, /* added: the next tick calls raft_assign() */
    STAGE_PROMOTING = 3,    /* raft_assign(VOTER) in raft: catch-up, then the entry */
    STAGE_REMOVING = 4,     /* raft_remove() in raft */
    STAGE_TRANSFERRING = 5, /* raft_transfer() in raft */
};

struct creq {
    int kind;
    const unsigned char *bytes;         /* CREQ_WRITE: the encoded request; the caller's */
    size_t len;                         /* bytes of it */
    struct htkv_cluster_status *status; /* CREQ_STATUS: filled by the loop */
    int rc;                             /* the answer */
    uint64_t version;                   /* CREQ_WRITE: the write's version */
    struct htkv_cluster_leader leader;  /* on HTKV_ENOTLEADER (and after a transfer) */
    int change;                         /* CREQ_CHANGE: enum creq_change */
    uint64_t target;                    /* CREQ_CHANGE: the member it concerns */
    const char *address;                /* CHANGE_ADD: its address; the caller's */
    bool done;                          /* mu; invariant 1 */
    struct creq *next;                  /* queue link */
};

struct htkv_cluster {
    uint64_t id;
    char address[HTKV_CLUSTER_ADDRESS_MAX];
    char *data_dir;   /* owned */
    char *raft_dir;   /* DATA_DIR/raft, owned */
    char *store_dir;  /* DATA_DIR/store, owned */
    bool created_dir; /* htkv_cluster_open() created data_dir */
    htkv_log_fn log_fn;
    void *log_ctx;
    uint32_t entry_bytes_max;
    uint64_t val_max; /* the store's max_value_bytes */
    htkv_db *db;
    struct cluster_fsm fsm;

    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t tick;
    struct raft_uv_transport transport; /* raft_uv_tcp, with transport.c's wrappers */
    int (*tcp_listen)(struct raft_uv_transport *t, raft_uv_accept_cb cb); /* raft_uv_tcp's */
    int (*tcp_connect)(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                       const char *address, raft_uv_connect_cb cb);
    raft_uv_accept_cb tcp_accept_cb; /* raft's, given to listen */
    struct raft_io io;
    struct raft raft;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct creq *head; /* mu: the queue */
    struct creq **tail;
    bool closing; /* mu; invariant 3 */

    atomic_bool failed;                 /* the FSM or raft stopped the member */
    bool stopping;                      /* loop: raft_close() called */
    bool raft_closed;                   /* loop: raft and its I/O are closed */
    bool handles_closed;                /* loop: wake and tick closed: the loop ends */
    bool was_leader;                    /* loop: leader in leader_term, its barrier proposed */
    uint64_t leader_term;               /* loop */
    bool leader_ready;                  /* loop: the barrier of this leadership is applied */
    bool leader_barrier_busy;           /* loop */
    struct raft_barrier leader_barrier; /* loop */
    /* loop: at most one entry of writes and one barrier of reads are in raft at a time; what
     * arrives meanwhile waits here and goes out together (group commit). See node_io.c for
     * why (raft 0.15 commits only up to the leader's last stored entry). */
    bool write_busy;
    bool read_busy;
    struct creq *writes; /* loop: waiting writes, in arrival order */
    struct creq **writes_tail;
    struct creq *reads; /* loop: waiting reads */
    struct creq **reads_tail;
    /* loop: the one membership change or transfer this member runs (member.c) */
    int change_stage;              /* enum change_stage */
    struct creq *change_req;       /* its caller; NULL once answered (a timeout) */
    uint64_t change_target;        /* the member it concerns */
    uint64_t change_deadline;      /* uv_now() after which the caller gets -ETIMEDOUT */
    unsigned election_timeout_ms;  /* the configuration's */
    struct raft_change change;     /* data = the handle */
    struct raft_transfer transfer; /* data = the handle */
    /* loop: what the last trace line said (HTKV_CLUSTER_TRACE, fsm.trace) */
    int traced_state;
    uint64_t traced_term;
    uint64_t traced_leader;
};

/* Complete @p r with @p rc (invariant 1). Takes mu; the caller broadcasts cv afterwards. */
void htkv_cnode_done(struct htkv_cluster *c, struct creq *r, int rc);

/* Fill @p out with the leader as this member knows it. Loop thread. */
void htkv_cnode_leader(struct htkv_cluster *c, struct htkv_cluster_leader *out);

/*
 * Set up the loop, the transport, raft's I/O and raft itself, bootstrap when the directory is
 * new, and start raft (it listens on the address). Runs on the opening thread before the loop
 * thread exists. On failure everything it set up is torn down. Returns 0 or a code of
 * htkv_cluster_open().
 */
int htkv_cnode_io_start(struct htkv_cluster *c, const htkv_cluster_config *cfg);

/* transport.c: TCP_NODELAY on raft's connections (call after raft_uv_tcp_init()). */
void htkv_cnode_transport_nodelay(struct htkv_cluster *c);

/* Stop what htkv_cnode_io_start() started, running the loop on this thread (the loop thread
 * could not be created). */
void htkv_cnode_io_abort(struct htkv_cluster *c);

/* Convert a raft error code to htkv's (the codes of cluster.h). */
int htkv_cnode_raft_code(int rv);

/* Start the membership change or transfer @p r asks for, or answer it at once. Loop thread. */
void htkv_cnode_change_start(struct htkv_cluster *c, struct creq *r);

/* Every tick: the next step of an addition (promote), the caller's deadline. Loop thread. */
void htkv_cnode_change_tick(struct htkv_cluster *c);

/* Body of the loop thread: runs the loop until raft and every handle are closed. */
void *htkv_cnode_io_thread(void *arg);

#endif /* HTKV_CLUSTER_NODE_H */
