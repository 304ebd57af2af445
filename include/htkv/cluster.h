/*
 * htkv/cluster.h - a replicated htkv store: one member of a Raft cluster (canonical raft 0.15,
 * libraft) over TCP, with a local htkv store that every member feeds from the same log.
 *
 * This header is the manual of the library htkv_cluster (libhtkv_cluster, pkg-config
 * htkv-cluster). It builds on the public engine API only (htkv.h, replication.h); libhtkv itself
 * has no dependency on raft or libuv. cluster/README.md describes the design in more depth.
 *
 * Model
 *   Writes (put, delete, atomic batch with conditions) are proposed on the leader, replicated,
 *   committed by a majority and then applied by every member to its own store with
 *   htkv_submit(). Writes that callers of many threads make at the same time travel in one raft
 *   entry (group commit). A write returns its version once it is committed and applied on the
 *   leader. On a follower, writes and linearizable reads fail with HTKV_ENOTLEADER and report
 *   the leader (when known) so that the caller can forward.
 *
 * Versions
 *   A write carried by raft entry I as its J-th request (J counts from 1; at most
 *   HTKV_CLUSTER_ENTRY_WRITES_MAX requests in one entry) gets version I * 2^16 + J. Versions are
 *   therefore strictly increasing along the log, never repeat (an index is used once, also
 *   across snapshots and restarts), are the same on every member, and every member's store ends
 *   at the same latest version. Entries that write nothing (barriers, membership changes,
 *   failed conditions) use no version. Raft indexes up to 2^46 fit below the store's 2^62 limit.
 *
 * Threads
 *   Each member runs one libuv loop thread; every raft call and callback runs there. Calls of
 *   this API may come from any thread: they queue their request under a lock, wake the loop
 *   with uv_async_send() and wait for its answer. Local reads (htkv_cluster_get_local()) and the
 *   read half of htkv_cluster_get() run on the calling thread against the local store.
 *
 * Durability
 *   The raft log is the write-ahead log: raft makes an entry durable (fsync) on a majority before
 *   it commits, and the local store runs in HTKV_SYNC_NEVER (its writes survive a crash of the
 *   process in the page cache). After a power loss (the boot id changed and the store was not
 *   closed cleanly) the store is set aside and rebuilt from raft's snapshot and log, which hold
 *   every committed write. See cluster/README.md, "Durability".
 *
 * Common return codes: 0 on success; -EINVAL for a NULL handle or a bad argument (nothing is
 * changed); HTKV_ENOTLEADER; HTKV_ECLOSED (the member is closing); HTKV_EFAILED (the member
 * stopped after a failure of its store or of raft: close it and look at the log).
 */
#ifndef HTKV_CLUSTER_H
#define HTKV_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <htkv/htkv.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest "host:port" address, terminating NUL included. */
#define HTKV_CLUSTER_ADDRESS_MAX 64
/** Most members in a configuration (initial voters, or reported by htkv_cluster_status()). */
#define HTKV_CLUSTER_MEMBERS_MAX 16
/** Most write requests that one raft entry carries: the low 16 bits of a version, 0 unused. */
#define HTKV_CLUSTER_ENTRY_WRITES_MAX 65535u

typedef struct htkv_cluster htkv_cluster; /* one running member; thread-safe handle */

/** One member of the initial configuration. */
struct htkv_cluster_peer {
    uint64_t id;         /**< Node id, >= 1, unique in the cluster. */
    const char *address; /**< "host:port" (IPv4 literal or name, port 1..65535); borrowed. */
};

/**
 * Member configuration. Start from htkv_cluster_config_init(). Read by htkv_cluster_open() only;
 * nothing in it is kept (strings are copied).
 */
typedef struct htkv_cluster_config {
    uint64_t id;          /**< This member's node id (>= 1). Required. */
    const char *address;  /**< This member's listen address, "host:port". Required. */
    const char *data_dir; /**< Directory of this member: holds store/ (the local htkv store),
                               raft/ (raft's log, snapshots and metadata) and small files of the
                               cluster layer. Created if missing. Required. */
    /**
     * The initial voters, used to bootstrap a new cluster: every member of a new cluster is
     * given the same list, which must contain @ref id. Ignored when data_dir already holds raft
     * state (a restart). NULL with voter_count 0 starts without bootstrap: a member that joins
     * an existing cluster once its leader adds it (htkv_cluster_add()); until then it takes no
     * part in elections and knows no configuration.
     */
    const struct htkv_cluster_peer *voters;
    size_t voter_count;            /**< Entries of voters (0..HTKV_CLUSTER_MEMBERS_MAX). */
    unsigned election_timeout_ms;  /**< Default 1000. Must exceed heartbeat_timeout_ms. */
    unsigned heartbeat_timeout_ms; /**< Default 100. */
    unsigned snapshot_threshold;   /**< Entries applied between snapshots. Default 1024. */
    unsigned snapshot_trailing;    /**< Entries kept in the log after a snapshot. Default 128. */
    /**
     * Bytes of writes (the entries that carry them) applied since the last snapshot before the
     * next one is taken, besides snapshot_threshold entries. A snapshot writes the whole store,
     * and a linearizable read adds an entry (a barrier) that carries nothing: counting entries
     * alone, a member serving reads would snapshot every snapshot_threshold barriers (measured:
     * p99 of linearizable reads 10 ms, against 4 ms without those snapshots). Without enough
     * bytes a snapshot still comes after 64 x snapshot_threshold entries, so the log of a member
     * that only reads stays bounded. The log since the last snapshot, and snapshot_trailing
     * entries before it, is held in memory by raft 0.15 and replayed at a restart: about this
     * many bytes, or snapshot_threshold entries if they hold more (more while snapshots fail:
     * each is tried again after the next write). 0 = entries alone (raft's rule). Default
     * 64 MiB.
     */
    uint64_t snapshot_bytes;
    /**
     * How long the leader waits for a member to install a snapshot before it gives up and
     * starts over (raft's install snapshot timeout). A member that was down when the leader
     * began sending it a snapshot is caught up only once this has passed after it returns
     * (raft 0.15 keeps waiting for the lost install); an install that takes longer than this
     * (a large store on a slow link) is restarted and may never complete. Default 10000
     * (raft's own default is 30000). Must exceed heartbeat_timeout_ms.
     */
    unsigned install_snapshot_timeout_ms;
    uint32_t entry_bytes_max; /**< Group commit: largest raft entry the leader builds from
                                   waiting writes (one write larger than it still goes, on
                                   its own). Default 1 MiB. */
    /**
     * The local store's configuration (htkv_config_init() fills it). Its data_dir is ignored
     * (the store lives in DATA_DIR/store) and so are sync_mode (always HTKV_SYNC_NEVER, see
     * Durability above), read_only and create_if_missing. Every member must use the same
     * max_value_bytes. log_fn and log_ctx also receive the cluster layer's messages; with
     * HTKV_CLUSTER_TRACE=1 in the environment at open, also its trace (HTKV_LOG_INFO lines
     * "trace <time> id=<member> ...": roles and terms, every applied entry, snapshots,
     * restores, answered writes), for diagnosis: one line per entry on every member.
     */
    htkv_config store;
} htkv_cluster_config;

/** Role of a member, as htkv_cluster_status() reports it. */
enum htkv_cluster_role {
    HTKV_CLUSTER_UNAVAILABLE = 0, /**< Starting, stopping or stopped. */
    HTKV_CLUSTER_FOLLOWER = 1,
    HTKV_CLUSTER_CANDIDATE = 2,
    HTKV_CLUSTER_LEADER = 3,
};

/** The leader as a member knows it. */
struct htkv_cluster_leader {
    uint64_t id;                            /**< 0 when no leader is known. */
    char address[HTKV_CLUSTER_ADDRESS_MAX]; /**< "" when no leader is known. */
};

/** One member of the current configuration. */
struct htkv_cluster_member {
    uint64_t id;
    char address[HTKV_CLUSTER_ADDRESS_MAX];
    int voter;            /**< Boolean: a voter (1) or not (0: added, not yet promoted). */
    uint64_t match_index; /**< Reported by the leader only (0 elsewhere): the highest raft
                               index known to be in this member's log (the leader's own last
                               index for itself): how far it has caught up. */
};

/** What htkv_cluster_status() reports. */
struct htkv_cluster_status {
    uint64_t id;                       /**< This member. */
    int role;                          /**< enum htkv_cluster_role. */
    int leader_ready;                  /**< Boolean: leader, and its first barrier is applied. */
    uint64_t term;                     /**< Current raft term. */
    uint64_t commit_index;             /**< Highest raft index known committed. */
    uint64_t applied_index;            /**< Highest raft index applied to the store. */
    uint64_t last_index;               /**< Highest raft index in the local log. */
    uint64_t store_version;            /**< htkv_latest_version() of the local store. */
    struct htkv_cluster_leader leader; /**< The leader as this member knows it. */
    size_t member_count;               /**< Entries of members. */
    struct htkv_cluster_member members[HTKV_CLUSTER_MEMBERS_MAX];
};

/** Kind of one operation of htkv_cluster_write(). */
enum htkv_cluster_op_type {
    HTKV_CLUSTER_OP_PUT = 1,    /**< Store val under key. */
    HTKV_CLUSTER_OP_DELETE = 2, /**< Delete key (a tombstone, even when the key is absent). */
    HTKV_CLUSTER_OP_CHECK = 3,  /**< Condition: key's version equals version (0 = absent). */
};

/** One operation of an atomic batch (htkv_cluster_write()). */
struct htkv_cluster_op {
    int type;         /**< enum htkv_cluster_op_type. */
    const void *key;  /**< 1..HTKV_KEY_MAX bytes; borrowed. */
    size_t key_len;   /**< Bytes of key. */
    const void *val;  /**< HTKV_CLUSTER_OP_PUT: the value; borrowed; NULL when val_len is 0. */
    size_t val_len;   /**< Bytes of val; 0 for the other kinds. */
    uint64_t version; /**< HTKV_CLUSTER_OP_CHECK: the expected version; 0 otherwise. */
};

/**
 * Fill @p cfg with the defaults (each field documents its own); the store's config gets
 * htkv_config_init()'s.
 * @param[out] cfg  Caller storage; borrowed.
 * @context Any thread. Does not block.
 */
HTKV_API void htkv_cluster_config_init(htkv_cluster_config *cfg);

/**
 * Open (or create) the member described by @p cfg: open its local store, open raft's
 * directory, bootstrap the cluster from cfg->voters when the directory is new, listen on
 * cfg->address and start the loop thread. The member then takes part in elections and
 * replication; htkv_cluster_status() tells when a leader is known.
 *
 * Checks first, changing nothing when they fail: id >= 1; address and every voter's address
 * "host:port" with a port in 1..65535 and no longer than HTKV_CLUSTER_ADDRESS_MAX - 1; voter ids
 * >= 1 and distinct; cfg->id among the voters (when voters are given); timeouts non-zero with
 * election above heartbeat; entry_bytes_max >= 4096. When a later step fails (htkv_open()
 * refuses cfg->store, raft cannot start), a data directory that this call created is removed.
 *
 * @param[in]  cfg  Configuration; borrowed (store.log_ctx is kept until htkv_cluster_close()).
 * @param[out] out  Receives the handle; NULL on failure; borrowed.
 * @return 0; -EINVAL (a check above failed, or a NULL argument); -EADDRINUSE (the address is
 *         taken: nothing was created); -EADDRNOTAVAIL (the host is not an address of this
 *         machine); HTKV_ECORRUPT (raft's files are damaged); any code of htkv_open() for the
 *         local store; -ENOMEM; -EIO or another -errno of the file system.
 * @context Any thread. Blocks while the store recovers and raft loads its log.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_open(const htkv_cluster_config *cfg, htkv_cluster **out);

/**
 * Stop the member: fail waiting requests with HTKV_ECLOSED, stop raft (writes it proposed that
 * were not yet committed may still be committed by the other members), stop the loop thread
 * and close the local store cleanly.
 * @param[in] c  Handle; taken. NULL is accepted and returns 0.
 * @return 0; the error of htkv_close() of the local store, or the -errno of recording the clean
 *         close in DATA_DIR/store.state (the handle is freed anyway; the next open then treats
 *         the store as possibly damaged only after a restart of the machine).
 * @context Any thread; the last call on @p c: no other call may be in progress or start.
 */
HTKV_API int htkv_cluster_close(htkv_cluster *c);

/**
 * Replicate a put of @p val under @p key; returns once it is committed and applied on this
 * member (the leader).
 * @param[in]  c        Handle; borrowed.
 * @param[in]  key      1..HTKV_KEY_MAX bytes; borrowed.
 * @param[in]  val      0..store.max_value_bytes bytes; borrowed; may be NULL when vlen is 0.
 * @param[out] version  The write's version; may be NULL.
 * @param[out] leader   Filled on HTKV_ENOTLEADER (the leader, or id 0 when none is known); may
 *                      be NULL; borrowed.
 * @return 0; HTKV_ENOTLEADER (nothing proposed: forward to the leader); -ECONNABORTED (this
 *         member lost its leadership while the write was in flight: the write may or may not
 *         be applied; read it back on the new leader); -EINVAL; HTKV_ETOOBIG; -ENOMEM;
 *         HTKV_ECLOSED (the member is closing; a write already in raft gets -ECONNABORTED);
 *         HTKV_EFAILED (the member stopped: a write already in raft may still be committed by
 *         the others).
 * @context Any thread. Blocks until the write is applied, or fails.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_put(htkv_cluster *c, const void *key, size_t klen,
                                            const void *val, size_t vlen, uint64_t *version,
                                            struct htkv_cluster_leader *leader);

/**
 * Replicate a delete of @p key. Whether the key is present is decided when the write is applied,
 * in log order, identically on every member.
 * @return 0 (deleted); HTKV_ENOTFOUND (absent when applied: nothing written, no version); the
 *         other codes of htkv_cluster_put().
 * @context As htkv_cluster_put().
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_delete(htkv_cluster *c, const void *key, size_t klen,
                                               uint64_t *version,
                                               struct htkv_cluster_leader *leader);

/**
 * Replicate an atomic batch: every condition (HTKV_CLUSTER_OP_CHECK) is evaluated when the batch
 * is applied, against the store as the log left it, and only if all hold are the puts and
 * deletes applied, in order, all with one version. The outcome is the same on every member.
 * @param[in] ops  @p n operations (1..HTKV_CLUSTER_ENTRY_WRITES_MAX); borrowed; copied before the
 *                 call returns from its checks.
 * @return 0; HTKV_ECONFLICT (a condition failed: nothing written, no version); the codes of
 *         htkv_cluster_put() (-EINVAL also for an unknown type, a value on a delete or check, a
 *         version on a put or delete).
 * @context As htkv_cluster_put().
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_write(htkv_cluster *c, const struct htkv_cluster_op *ops,
                                              size_t n, uint64_t *version,
                                              struct htkv_cluster_leader *leader);

/**
 * Linearizable read: the leader confirms that it still leads with one raft barrier for every
 * group of reads waiting together (raft 0.15 has no ReadIndex and no leases), then reads its
 * store: the value returned reflects every write acknowledged before the call started.
 * @param[out] buf, cap, vlen  As htkv_get().
 * @param[out] version  The value's version (0 with HTKV_ENOTFOUND); may be NULL.
 * @param[out] leader   As htkv_cluster_put().
 * @return 0; HTKV_ENOTFOUND; HTKV_ETOOSMALL (*vlen = size needed); HTKV_ENOTLEADER (also when
 *         leadership was lost during the barrier); HTKV_ECORRUPT; -EINVAL; HTKV_ETOOBIG;
 *         -ENOMEM; HTKV_ECLOSED; HTKV_EFAILED.
 * @context Any thread. Blocks for one barrier round trip to a majority.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_get(htkv_cluster *c, const void *key, size_t klen,
                                            void *buf, size_t cap, size_t *vlen, uint64_t *version,
                                            struct htkv_cluster_leader *leader);

/**
 * Stale read from this member's store, on any member: what it has applied so far, which may
 * lag the leader.
 * @param[out] version  The value's version (0 with HTKV_ENOTFOUND); may be NULL.
 * @param[out] applied  The store's latest version when the read was made (everything at or
 *                      below it that the cluster committed is in the answer); may be NULL.
 * @return As htkv_get(); HTKV_EFAILED.
 * @context Any thread. Lock-free: never waits for the loop thread.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_get_local(htkv_cluster *c, const void *key, size_t klen,
                                                  void *buf, size_t cap, size_t *vlen,
                                                  uint64_t *version, uint64_t *applied);

/** htkv_cluster_scan() and htkv_cluster_prefix() flags. */
#define HTKV_CLUSTER_READ_LOCAL                                                                    \
    1u /**< A stale read of this member's store: any member, no barrier. */

/**
 * Called by an ordered read for each item, in unsigned byte order of the keys.
 * @param[in] key, klen, val, vlen  The item: views into the member's store, valid during the
 *                                  call only.
 * @param[in] version  The version of the write that stored it.
 * @param[in] ctx      As passed to the read.
 * @return 0 to go on; any other value stops the read, which returns it (use a positive value
 *         to tell it from the read's own errors).
 */
typedef int (*htkv_cluster_item_fn)(const void *key, size_t klen, const void *val, size_t vlen,
                                    uint64_t version, void *ctx);

/**
 * Ordered read of the keys in [@p start, @p end) (an empty @p start: from the smallest key; an
 * empty @p end: to the largest), all as of one moment of this member's store. By default it is
 * linearizable, like htkv_cluster_get(): one barrier shared with the reads waiting with it, on
 * the leader only, and the items reflect every write acknowledged before the call started. With
 * HTKV_CLUSTER_READ_LOCAL it reads what this member has applied, on any member.
 * @param[in]  c            Handle; borrowed.
 * @param[in]  start, end   0..HTKV_KEY_MAX bytes each; borrowed; may be NULL with length 0.
 * @param[in]  limit        Items at most (0 = no limit). Page through a range by reading again
 *                          from the last key returned plus a 0x00 byte.
 * @param[in]  flags        0 or HTKV_CLUSTER_READ_LOCAL.
 * @param[in]  fn, ctx      Called for each item on the calling thread (see
 *                          htkv_cluster_item_fn); borrowed.
 * @param[out] read_version The store's version the items are read at (every write at or below
 *                          it that the cluster committed is in the read, none above), once the
 *                          read reached the store (also when @p fn stopped it); may be NULL.
 * @param[out] leader       As htkv_cluster_put(); may be NULL.
 * @return 0 (every item in range, or @p limit of them, passed to @p fn); the non-zero value @p fn
 *         returned; -EINVAL (NULL handle or @p fn, NULL bound with a length, unknown flags);
 *         HTKV_ETOOBIG (a bound longer than HTKV_KEY_MAX); HTKV_ENOTLEADER (not with
 *         HTKV_CLUSTER_READ_LOCAL); HTKV_ECORRUPT (a record failed its checksum: the read
 *         stops); -ENOMEM; HTKV_ECLOSED; HTKV_EFAILED.
 * @context Any thread. While the read holds its view of the store, this member cannot install
 *          a snapshot from the leader: the install (on the member's loop thread, which also
 *          sends its heartbeats) waits for the read to end, so keep @p fn short and use
 *          @p limit for large ranges.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_scan(htkv_cluster *c, const void *start, size_t slen,
                                             const void *end, size_t elen, uint64_t limit,
                                             unsigned flags, htkv_cluster_item_fn fn, void *ctx,
                                             uint64_t *read_version,
                                             struct htkv_cluster_leader *leader);

/**
 * Ordered read of every key that starts with @p prefix (an empty prefix: the whole store), as
 * htkv_cluster_scan().
 * @param[in] prefix  0..HTKV_KEY_MAX bytes; borrowed; may be NULL when @p plen is 0.
 * @return As htkv_cluster_scan().
 * @context As htkv_cluster_scan().
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_prefix(htkv_cluster *c, const void *prefix, size_t plen,
                                               uint64_t limit, unsigned flags,
                                               htkv_cluster_item_fn fn, void *ctx,
                                               uint64_t *read_version,
                                               struct htkv_cluster_leader *leader);

/**
 * Report this member's raft state and its view of the configuration.
 * @param[out] out  Caller storage; borrowed.
 * @return 0; -EINVAL; HTKV_ECLOSED; HTKV_EFAILED (out still filled, role UNAVAILABLE).
 * @context Any thread. Waits for one turn of the loop thread.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_status(htkv_cluster *c, struct htkv_cluster_status *out);

/**
 * Add member @p id at @p address to the cluster, on the leader: it joins as a non-voter
 * (raft's spare), is sent the log (or a snapshot) and is promoted to voter once it has caught
 * up (raft 0.15's catch-up rounds: its log reaches the leader's last index within one election
 * timeout). The new member must run already or start soon, opened with no voters (voters NULL,
 * voter_count 0). One membership change runs at a time in the cluster.
 * @param[in]  c        Handle; borrowed.
 * @param[in]  address  "host:port" of the new member (IPv4 literal); borrowed.
 * @param[out] leader   Filled on HTKV_ENOTLEADER; may be NULL; borrowed.
 * @return 0 (the member is a voter); -EINVAL (id 0, a malformed address, NULL); -EEXIST (@p id
 *         is already a member); -EADDRINUSE (a member already has @p address); -EBUSY (another
 *         membership change or a leadership transfer is in progress); HTKV_ENOTLEADER (nothing
 *         changed); -ETIMEDOUT (added as non-voter but not caught up within 10 s or 20
 *         election timeouts: the leader keeps trying to promote it, and other changes get
 *         -EBUSY until it is promoted or leadership changes); -ECONNABORTED (leadership was
 *         lost during the change: it may or may not be done; look at htkv_cluster_status());
 *         -ENOMEM; HTKV_ECLOSED; HTKV_EFAILED; -EIO (raft refused the change otherwise).
 * @context Any thread. Blocks for the change's commit (two configuration entries) and the new
 *          member's catch-up.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_add(htkv_cluster *c, uint64_t id, const char *address,
                                            struct htkv_cluster_leader *leader);

/**
 * Remove member @p id from the cluster, on the leader. When @p id is the leader itself, it
 * steps down once the change is committed (transfer leadership first to keep the cluster
 * writable without an election). A removed member takes no further part: close it.
 * @return 0 (the change is committed); -EINVAL (id 0, NULL); HTKV_ENOTFOUND (@p id is not a
 *         member); -EBUSY; HTKV_ENOTLEADER; -ECONNABORTED; -ENOMEM; HTKV_ECLOSED; HTKV_EFAILED;
 *         -EIO: as htkv_cluster_add().
 * @context Any thread. Blocks for the change's commit.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_remove(htkv_cluster *c, uint64_t id,
                                               struct htkv_cluster_leader *leader);

/**
 * Hand leadership from this member (the leader) to voter @p id, or to an up-to-date voter
 * chosen by raft when @p id is 0. Writes and linearizable reads on this member get
 * HTKV_ENOTLEADER while the transfer runs (nothing proposed).
 * @param[out] leader  Filled on HTKV_ENOTLEADER; on success, the new leader; may be NULL.
 * @return 0 (this member follows the new leader); -EINVAL (@p id is this member, NULL);
 *         HTKV_ENOTFOUND (@p id is not a voter of the cluster, or there is no other voter);
 *         -EBUSY (a transfer is in progress); HTKV_ENOTLEADER; -ETIMEDOUT (no new leader
 *         within one election timeout: this member may still lead); -ENOMEM; HTKV_ECLOSED;
 *         HTKV_EFAILED; -EIO.
 * @context Any thread. Blocks at most about one election timeout.
 */
HTKV_API HTKV_MUST_USE int htkv_cluster_transfer(htkv_cluster *c, uint64_t id,
                                                 struct htkv_cluster_leader *leader);

#ifdef __cplusplus
}
#endif

#endif /* HTKV_CLUSTER_H */
