/*
 * verify.h - the verify (fsck) walk of a store and its read-only inspection, for htkvctl and
 * tests: an independent walk of every file (verify), per-segment and manifest figures of an open
 * store, and a lock-free read-only open for inspecting a store that another process is writing.
 *
 * Nothing in this module writes to the store directory, ever: files are opened O_RDONLY, mapped
 * PROT_READ, and the lock is taken shared (or not at all). The API uses only public types, so
 * that the tool needs no other engine header. The check of one hint file,
 * htkv_hint_check_file(), is declared with the hint format in hint.h (the formats layer, which
 * includes nothing of this one).
 */
#ifndef HTKV_ENGINE_VERIFY_H
#define HTKV_ENGINE_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include <htkv/htkv.h>

/** What a finding of htkv_inspect_verify() means. */
enum htkv_inspect_kind {
    /** Damage or an inconsistency: htkv_open() would refuse the store, or return wrong data. */
    HTKV_INSPECT_PROBLEM = 1,
    /** Worth knowing, handled by recovery (a torn tail, a leftover file, a dropped batch). */
    HTKV_INSPECT_NOTE = 2,
};

/** One finding, passed to the issue callback. Every pointer is a view valid during the call. */
struct htkv_inspect_issue {
    int kind;           /**< enum htkv_inspect_kind */
    const char *file;   /**< Relative to the store directory ("CURRENT", "MANIFEST-000001",
                             "shard-000/000000000001.seg"); "" for the store as a whole. */
    uint64_t offset;    /**< Byte offset in @c file (0 for the store as a whole). */
    const char *reason; /**< One sentence, no trailing newline. */
};

/** Flags of htkv_inspect_verify(). */
enum htkv_inspect_flag {
    /** Another process may be appending: a bad record at the end of a shard's last segment is
     *  re-read a few times before it is reported (an append in progress), torn tails of last
     *  segments are not mentioned, differences with @p db are notes, not problems, a segment
     *  the manifest does not list that holds data is a note when the writer may have added it
     *  since the manifest was read (its id not handed out yet, or listed by the manifest read
     *  again), and versions are not checked against the manifest's reservation. */
    HTKV_INSPECT_LIVE = 1u << 0,
    /** Report torn tails and incomplete batches as problems instead of notes. */
    HTKV_INSPECT_STRICT = 1u << 1,
};

/** Figures gathered by htkv_inspect_verify(). */
struct htkv_inspect_summary {
    uint32_t format;          /**< Format version of the manifest's INIT edit. */
    uint32_t shard_count;     /**< Shards of the manifest. */
    uint64_t manifest_number; /**< NNNNNN of the manifest named by CURRENT. */
    uint64_t manifest_edits;  /**< Valid edits of that manifest. */
    uint64_t segments;        /**< Segment files listed by the manifest. */
    uint64_t records;         /**< Valid records in them (control records included). */
    uint64_t bytes_checked;   /**< Bytes of every file walked. */
    uint64_t live_keys;       /**< Keys with a value in the index rebuilt from the files. */
    uint64_t tombstones;      /**< Deleted keys in that index. */
    uint64_t max_version;     /**< Highest version found in the records, or the manifest's
                                   applied mark or batch floor when higher: what recovery
                                   resumes after (the engine's last version). */
    uint64_t keys_compared;   /**< Keys looked up in @p db (0 without one). */
    uint64_t problems;        /**< Findings of kind HTKV_INSPECT_PROBLEM. */
    uint64_t notes;           /**< Findings of kind HTKV_INSPECT_NOTE. */
};

/**
 * Receives each finding of htkv_inspect_verify().
 * @param issue  The finding; view, valid during the call.
 * @param ctx    The ctx given to htkv_inspect_verify().
 */
typedef void (*htkv_inspect_issue_fn)(const struct htkv_inspect_issue *issue, void *ctx);

/**
 * Receives progress of htkv_inspect_verify(): bytes walked so far out of the total.
 * Called at least once per file and about every 4 MiB within one.
 */
typedef void (*htkv_inspect_progress_fn)(uint64_t done_bytes, uint64_t total_bytes, void *ctx);

/**
 * Walk every file of the store in @p dir independently of htkv_open(), with the rules of
 * recovery (engine/recover.c), and report each problem as file + offset + reason: CURRENT
 * (syntax; missing while the directory holds a store), the manifest (header checksum, each
 * edit's checksum and meaning, damage followed by valid edits, a damaged tail longer than one
 * torn edit), every listed segment (header checksum and identity, the store it names, every
 * record's framing and checksum, batch framing, shard of each key, SEAL, damage or missing
 * records before the end they are known to reach by the manifest or a whole hint file, versions
 * above the manifest's reservation), missing files, and unlisted files (a segment neither listed
 * nor called gone that holds data is a problem, other leftovers are notes). Where recovery
 * would stop at the first damage, the walk skips to the next valid record and goes on, so that
 * one run lists every problem. From the records it rebuilds the index (newest version of each
 * key wins; a batch counts only when every part is committed) and, when @p db is given, compares
 * it with that handle: live key count, last version, and the version of every key.
 *
 * The caller is responsible for excluding writers (hold the lock with htkv_inspect_lock_shared(),
 * or an open read-only @p db), or passes HTKV_INSPECT_LIVE.
 *
 * @param[in]  dir          Store directory; borrowed.
 * @param[in]  flags        enum htkv_inspect_flag bits.
 * @param[in]  db           Handle open on the same store to compare with, or NULL; borrowed.
 * @param[out] out          Figures; borrowed. Filled also when problems are found.
 * @param[in]  issue_fn     Receives each finding; may be NULL (then only counted).
 * @param[in]  progress_fn  Receives progress; may be NULL.
 * @param[in]  ctx          Passed to both callbacks; kept until the call returns.
 * @return 0 when the walk completed (whatever it found: see out->problems); HTKV_ENOTFOUND (no
 *         store in @p dir: no directory, or no CURRENT and nothing of a store, as an
 *         interrupted creation leaves); -EINVAL; -ENOMEM; -EIO or another -errno when a file
 *         cannot be read.
 * @context Any thread. Blocks on file I/O; never writes.
 */
int htkv_inspect_verify(const char *dir, unsigned flags, htkv_db *db,
                        struct htkv_inspect_summary *out, htkv_inspect_issue_fn issue_fn,
                        htkv_inspect_progress_fn progress_fn, void *ctx);

/** Figures of one segment of an open store (htkv_inspect_segments()). */
struct htkv_inspect_seg {
    uint32_t shard;
    uint64_t id;
    uint64_t file_bytes; /**< Allocated size of the file. */
    uint64_t data_bytes; /**< Bytes of records (after the 64-byte header). */
    uint64_t records;    /**< Records, control records (batch frames, SEAL) included. */
    uint64_t live_bytes; /**< Bytes of records that are the newest version of their key. */
    uint64_t dead_bytes; /**< Bytes of superseded records (and SEAL). */
    bool sealed;         /**< Ends with a SEAL record: never appended to again. */
    bool hint;           /**< A hint file was used for it (hint files do not exist yet). */
};

/**
 * Receives one segment; returning non-zero stops the walk and becomes the result.
 * @param seg  View, valid during the call.
 */
typedef int (*htkv_inspect_seg_fn)(const struct htkv_inspect_seg *seg, void *ctx);

/**
 * Call @p fn for every segment of @p db, shard by shard, ascending id.
 * @param[in] db   Handle; borrowed. Opened read-only (nothing appends while the walk runs).
 * @param[in] fn   Callback; required.
 * @param[in] ctx  Passed to @p fn.
 * @return 0; -EINVAL; or what @p fn returned.
 * @context The thread that uses @p db; takes each shard's writer lock while it reads it.
 */
int htkv_inspect_segments(htkv_db *db, htkv_inspect_seg_fn fn, void *ctx);

/** Manifest figures of an open store (htkv_inspect_store()). */
struct htkv_inspect_store {
    uint32_t format;          /**< On-disk format version recorded at creation. */
    uint32_t shard_count;     /**< Shards, fixed at creation. */
    uint64_t manifest_number; /**< NNNNNN of the live MANIFEST file. */
    uint64_t manifest_bytes;  /**< Length of its valid edit log. */
    uint64_t next_seg_id;     /**< One past the largest segment id ever used. */
};

/**
 * Fill @p out from the manifest of @p db.
 * @return 0; -EINVAL.
 * @context The thread that uses @p db.
 */
int htkv_inspect_store(htkv_db *db, struct htkv_inspect_store *out);

/**
 * Take the store's lock shared, as a read-only htkv_open() does: writers are kept out until
 * htkv_inspect_unlock(), read-only openers are not. Creates nothing.
 * @param[in]  dir     Store directory; borrowed.
 * @param[out] fd_out  Receives the descriptor that holds the lock; borrowed.
 * @return 0; HTKV_ELOCKED (a writer has the store open); HTKV_ENOTFOUND (no directory or no
 *         LOCK file); -errno.
 * @context Any thread. Does not block.
 */
int htkv_inspect_lock_shared(const char *dir, int *fd_out);

/** Release a lock from htkv_inspect_lock_shared(); a negative @p fd is ignored. */
void htkv_inspect_unlock(int fd);

/**
 * Open the store read-only WITHOUT its lock, to inspect a store that another process has open
 * for writing. Only for tools: the handle reads a snapshot of the store as of the open (writes
 * made later by the other process are not seen), and a torn record at the end of a segment,
 * which is what an append in progress looks like, is taken as the end of the log. Recovery runs
 * as in htkv_open() with read_only set (it writes nothing); when it meets damage followed by
 * valid records it is retried a few times, since the writer may have completed the record
 * meanwhile.
 *
 * How: the engine's read-only open without taking LOCK (htkv_db_open()); it writes nothing.
 *
 * @param[in]  cfg  Configuration; borrowed; read_only must be set. log_fn/log_ctx are kept until
 *                  htkv_inspect_close().
 * @param[out] out  Receives the handle, NULL on failure; borrowed.
 * @return As htkv_open() with read_only (never HTKV_ELOCKED); -EINVAL when read_only is not set.
 * @context Any thread. Blocks for recovery.
 */
int htkv_inspect_open_unlocked(const htkv_config *cfg, htkv_db **out);

/**
 * Close a handle from htkv_inspect_open_unlocked() or htkv_open().
 * @param[in] db  Taken; NULL accepted.
 * @return What htkv_close() returned.
 */
int htkv_inspect_close(htkv_db *db);

/* htkv_snapshot_check_file() (one snapshot file checked whole) is in snapshot.h. */
#include "engine/snapshot.h"

#endif /* HTKV_ENGINE_VERIFY_H */
