/*
 * htkv/replication.h - what a consensus layer needs from the store: deterministic commands with
 * caller-given versions, the latest version, consistent snapshots with their version, and a
 * feed of the commands applied after a version.
 *
 * The model. A leader orders writes into a log; every replica applies the log's entries in
 * order with htkv_submit(), each entry's commands carrying the entry's version (its index in
 * the log, or any strictly increasing number). Because every write of a replica comes from the
 * log, with the log's versions, and applying a command depends only on the store's state and
 * the command, replicas fed the same log hold the same keys, values and versions whatever their
 * worker counts or shard counts: their snapshots (htkv_snapshot_write()) are byte-identical.
 *
 * A new or lagging replica installs a snapshot (htkv_snapshot_restore(); its version is
 * htkv_snapshot_file_version()) and replays the log from that version on; entries at or below
 * it come back as HTKV_STALE and change nothing. A follower that is only a little behind can be
 * fed from a leader's htkv_changes_since() instead, while the leader still holds those records.
 *
 * Restores. htkv_snapshot_restore() of a snapshot older than the store's latest version (a
 * rollback) takes a version of its own, above everything applied, and raises the compaction
 * floor to it: every htkv_changes_since() from a version before the restore then fails with
 * HTKV_ECOMPACTED, so a consumer of the feed learns of the restore and installs a snapshot of the
 * store as it is now, instead of replaying writes on top of state the store no longer holds.
 *
 * htkv_local_replication() is the single-node implementation of this interface: a "log" of
 * one node, where submitting is applying (see examples/replication_local.c for how a consensus
 * library plugs into the same calls).
 *
 * Do not mix htkv_submit() with htkv_put()/htkv_delete()/htkv_write() on one store: those
 * assign versions themselves, and a command whose version is not above them is stale.
 */
#ifndef HTKV_REPLICATION_H
#define HTKV_REPLICATION_H

#include <stddef.h>
#include <stdint.h>

#include <htkv/htkv.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Kind of a command. */
enum htkv_command_type {
    HTKV_CMD_SET = 1,    /**< Store val under key. */
    HTKV_CMD_DELETE = 2, /**< Remove key (a tombstone with the command's version). */
};

/** Outcome of one command of htkv_submit(). */
enum htkv_apply_outcome {
    HTKV_APPLIED = 0, /**< The command changed the store. */
    HTKV_STALE = 1,   /**< The store is already past this version: ignored. */
};

/** One deterministic command. Consecutive commands with the same version form one atomic
 *  batch (one log entry with several writes). */
typedef struct htkv_command {
    int type;         /**< enum htkv_command_type. */
    const void *key;  /**< 1..HTKV_KEY_MAX bytes; borrowed. */
    size_t key_len;   /**< Bytes of key. */
    const void *val;  /**< Value (HTKV_CMD_SET); borrowed; may be NULL when val_len is 0. */
    size_t val_len;   /**< Bytes of val; 0 for HTKV_CMD_DELETE. */
    uint64_t version; /**< >= 1; non-decreasing along the array. */
} htkv_command;

/**
 * Apply @p n commands in order, with their own versions. Each run of commands sharing a version
 * is one atomic batch (one log entry), applied in order (`SET k` then `DELETE k` leaves k absent)
 * and all or nothing, also across a crash.
 *
 * The stale rule depends on the log alone, never on what a replica happens to hold: a run whose
 * version is at or below the store's latest version (htkv_latest_version(): the last entry it
 * applied, or the version of the snapshot it installed) is HTKV_STALE as a whole and changes
 * nothing; any other run is HTKV_APPLIED as a whole, and the store's latest version becomes its
 * version. A delete of a key that holds nothing is applied too (it writes a tombstone), so
 * replicas that compacted differently, installed snapshots, or run other shard and worker counts
 * give the same outcomes and reach the same latest version. Durability follows the store's
 * sync_mode, as htkv_write().
 *
 * Versions must be non-decreasing along @p cmds and at most 2^62.
 *
 * @param[in]  db        Open, writable store; borrowed.
 * @param[in]  cmds      @p n commands; borrowed.
 * @param[in]  n         Number of commands (0 is fine: nothing happens).
 * @param[out] outcomes  NULL, or @p n entries: enum htkv_apply_outcome of each command, valid
 *                       for the batches applied before an error.
 * @return The number of commands applied (not stale) on success; -EINVAL (a NULL pointer with a
 *         non-zero length, a bad type, a version of 0, versions that decrease, a value on a
 *         delete); -ERANGE (a version above 2^62: nothing was written);
 *         HTKV_ETOOBIG; HTKV_EREADONLY; HTKV_EFAILED; -ENOSPC; HTKV_ECLOSED; -ENOMEM; -EIO.
 * @context Any thread; one submitter at a time keeps the log's order. Blocks like htkv_write().
 */
HTKV_API HTKV_MUST_USE int htkv_submit(htkv_db *db, const htkv_command *cmds, size_t n,
                                       int *outcomes);

typedef struct htkv_changes htkv_changes; /* an iterator over applied commands */

/**
 * The commands applied after @p version, in version order (a batch's commands together), as of
 * the moment of the call: read back from the segments, which hold every write until compaction
 * rewrites them. What comes back is a prefix without gaps: a command is reported only once every
 * lower version a write took is visible (in HTKV_SYNC_ALWAYS a shard publishes after its group
 * sync, so a higher version of another shard waits for the next call), so a consumer can always
 * go on from the highest version it got. Puts and deletes come back as HTKV_CMD_SET /
 * HTKV_CMD_DELETE with the versions they were applied with; feeding them to another store's
 * htkv_submit() in order reproduces the writes. Holds a view open until destroyed (see
 * htkv_view_open() for its cost); writers go on.
 *
 * History is complete only after the store's compaction floor (the last version a compaction
 * pass fenced, raised by htkv_snapshot_restore() to the restore's version): asking for changes
 * since an older version fails with HTKV_ECOMPACTED; a follower that far behind installs a
 * snapshot instead. Commands of batches that recovery did not apply are never reported.
 * Memory: 24 bytes per command until destroyed; values are not copied.
 *
 * @param[in]  db       Open store; borrowed.
 * @param[in]  version  Report commands with a version above it (0 = all history kept).
 * @param[out] out      The iterator; NULL on failure.
 * @return 0; HTKV_ECOMPACTED; HTKV_ECORRUPT (a record failed its check); HTKV_ECLOSED; -ENOMEM;
 *         -EINVAL.
 * @context Any thread. Reads every segment holding a version above @p version before returning;
 *          a compaction pass waits for that.
 */
HTKV_API HTKV_MUST_USE int htkv_changes_since(htkv_db *db, uint64_t version, htkv_changes **out);

/**
 * Next command of @p c.
 * @param[out] cmd  The command; its key and value are views valid until htkv_changes_destroy().
 * @return 1 (a command); 0 (the end); HTKV_ECORRUPT (its record failed its checksum); -EINVAL.
 * @context The thread using @p c.
 */
HTKV_API HTKV_MUST_USE int htkv_changes_next(htkv_changes *c, htkv_command *cmd);

/** Number of commands @p c holds in all (returned or not). */
HTKV_API uint64_t htkv_changes_count(const htkv_changes *c);

/** Free @p c (taken) and close its view; NULL accepted. */
HTKV_API void htkv_changes_destroy(htkv_changes *c);

/**
 * The latest version the store applied: the highest version of a write it acknowledged, of a
 * snapshot it installed, or of a restore (see the top of this file); 0 for a new store. It never
 * goes back: not across reopen, compaction (a delete compacted away keeps its version counted),
 * restore or a crash that loses nothing acknowledged. Versions never repeat: every write a store
 * ever acknowledged has a version of its own, above every earlier one (htkv.h, "Versions").
 * @param[in]  db   Open store; borrowed.
 * @param[out] out  The version.
 * @return 0; -EINVAL; HTKV_ECLOSED.
 * @context Any thread. Lock-free.
 */
HTKV_API HTKV_MUST_USE int htkv_latest_version(htkv_db *db, uint64_t *out);

/**
 * Read the version and entry count of the snapshot file at @p path, after checking it whole as
 * htkv_snapshot_restore() does (a follower checks what it received before installing it).
 * @param[in]  path     Snapshot file; borrowed.
 * @param[out] version  The snapshot's version: it holds every write at or below it, none above;
 *                      may be NULL.
 * @param[out] count    Its number of keys; may be NULL.
 * @return 0; HTKV_ECORRUPT (htkv_last_error() says where); HTKV_EVERSION; -EINVAL; -errno.
 * @context Any thread; no store needed. Reads the whole file.
 */
HTKV_API HTKV_MUST_USE int htkv_snapshot_file_version(const char *path, uint64_t *version,
                                                      uint64_t *count);

/**
 * The replication interface a consensus layer drives, as a table of calls on an implementation.
 * A Raft integration implements submit() by appending the commands to its log and, once the
 * entry is committed, applying it on every replica with htkv_submit() and the entry's index as
 * version; latest_version() tells it where a restarted replica stands; snapshot_write() and
 * snapshot_install() back its snapshot transfer; changes_since() serves a follower that is only
 * a little behind without a snapshot.
 */
typedef struct htkv_replication {
    /** Order and apply @p n commands; a version of 0 asks the implementation to assign one
     *  (the single-node one gives all of them latest + 1: one atomic batch). Returns as
     *  htkv_submit(). */
    int (*submit)(void *impl, htkv_command *cmds, size_t n, int *outcomes);
    int (*latest_version)(void *impl, uint64_t *out); /**< htkv_latest_version() */
    int (*snapshot_write)(void *impl, const char *path, uint64_t *version); /**< with its version */
    int (*snapshot_install)(void *impl, const char *path);                  /**< restore, checked */
    int (*changes_since)(void *impl, uint64_t version, htkv_changes **out); /**< the change feed */
    void *impl; /**< The implementation's state (for the local one: the htkv_db). */
} htkv_replication;

/**
 * Fill @p out with the single-node implementation over @p db: submit() assigns versions (when
 * given 0) and calls htkv_submit(); the rest call htkv_latest_version(),
 * htkv_snapshot_write() (then htkv_snapshot_file_version()), htkv_snapshot_restore() and
 * htkv_changes_since(). See examples/replication_local.c.
 * @param[in]  db   Open store; kept (the table refers to it until the store is closed).
 * @param[out] out  The table.
 * @context Any thread. Never fails.
 */
HTKV_API void htkv_local_replication(htkv_db *db, htkv_replication *out);

#ifdef __cplusplus
}
#endif

#endif
