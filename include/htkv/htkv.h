/*
 * htkv.h - the htkv engine: an embedded, crash-safe key-value store for Linux.
 *
 * This header is the manual. Every function documents its return codes, the ownership of each
 * pointer (borrowed: not kept after return; kept: retained until a named event; taken: the callee
 * frees it; view: a result valid until a named event) and the threads that may call it.
 *
 * Conventions
 *   - Every fallible function returns int: 0 (or a documented non-negative count) on success, a
 *     negated errno (-EINVAL, -EIO, -ENOSPC, -ENOMEM, ...) or an HTKV_E* code on failure.
 *     htkv_strerror() names every code.
 *   - Keys are 1..HTKV_KEY_MAX arbitrary bytes; values are 0..max_value_bytes arbitrary bytes.
 *   - A handle (htkv_db) is thread-safe: any thread may call any function on it concurrently,
 *     except htkv_close(), which must be the last call on the handle.
 *   - Bad input returns an error and changes nothing.
 *
 * Versions
 *   Every write is assigned a version from one store-wide counter, strictly increasing in the
 *   order writes are applied to a shard; a batch gets a single version for all its operations.
 *   Version 0 means "absent". Versions never repeat: every write a store ever acknowledged has
 *   a distinct version, increasing with time, across reopen, compaction (a delete compacted
 *   away keeps its version used), snapshot restore (a rollback to an older snapshot takes a new
 *   version above everything applied) and crashes, power loss included: the manifest keeps a
 *   synced high-water mark, raised in blocks of 2^20 before versions above it are handed out,
 *   and a reopen after a crash resumes above it (a clean close records the exact latest version,
 *   so a clean reopen skips none).
 */
#ifndef HTKV_HTKV_H
#define HTKV_HTKV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HTKV_BUILDING)
#define HTKV_API __attribute__((visibility("default")))
#else
#define HTKV_API
#endif
#define HTKV_MUST_USE __attribute__((warn_unused_result))

/**
 * On-disk format version written by this library; a store with a newer one is refused
 * (HTKV_EVERSION). 2 added the manifest edits SEG_GONE, VERSIONS and SEG_END and the store's
 * shard count and hash seed in segment headers; stores of format 1 open unchanged (their hint
 * files are rewritten at the next close).
 */
#define HTKV_FORMAT_VERSION 2
/** Largest key, in bytes (64 KiB). */
#define HTKV_KEY_MAX (64u * 1024u)
/** Default and largest allowed value for htkv_config.max_value_bytes (64 MiB, 1 GiB). */
#define HTKV_VALUE_MAX_DEFAULT (64u * 1024u * 1024u)
#define HTKV_VALUE_MAX_LIMIT (1024u * 1024u * 1024u)

/**
 * Domain error codes, in [-1099, -1000]. Negated errno values are used for system conditions.
 */
enum htkv_err {
    HTKV_ENOTFOUND = -1000,  /* Key absent: an answer, not a failure of the store. */
    HTKV_ECORRUPT = -1001,   /* Framing or checksum mismatch in bytes read from disk. */
    HTKV_ETOOSMALL = -1002,  /* Caller buffer too small; the required size is returned. */
    HTKV_EAUTH = -1003,      /* Credentials rejected; deliberately carries no detail. */
    HTKV_EBUSY = -1004,      /* A bounded queue is full: back off and retry. */
    HTKV_EFULL = -1005,      /* A fixed bound was reached. */
    HTKV_EEXIST = -1006,     /* The object already exists. */
    HTKV_ELOCKED = -1007,    /* The store is open elsewhere (this or another process). */
    HTKV_EREADONLY = -1008,  /* The store was opened read-only. */
    HTKV_ETOOBIG = -1009,    /* Key, value or batch larger than its limit. */
    HTKV_ECONFLICT = -1010,  /* A conditional write found another version than expected. */
    HTKV_ECLOSED = -1011,    /* The handle is closing or closed. */
    HTKV_EFAILED = -1012,    /* An fdatasync failed: writes are refused until reopen. */
    HTKV_ENOTSTORE = -1013,  /* The directory holds files that are not an htkv store. */
    HTKV_EVERSION = -1014,   /* The store was written by a newer on-disk format version. */
    HTKV_ECOMPACTED = -1015, /* The history asked for was removed by compaction or a restore. */
    HTKV_ENOTLEADER = -1016, /* A cluster node that is not the leader was asked to lead. */
};

/** Durability of an acknowledged write (README.md, "Durability"). */
enum htkv_sync_mode {
    /** The kernel decides when to write back; survives a process crash, not power loss. */
    HTKV_SYNC_NEVER = 0,
    /** fdatasync at most fsync_interval_ms after the write; survives a process crash. */
    HTKV_SYNC_INTERVAL = 1,
    /** A write returns after its fdatasync: survives a process crash and power loss. */
    HTKV_SYNC_ALWAYS = 2,
};

/**
 * What recovery does with damage: a damaged record followed by valid ones, or one before the end
 * a segment's records are known to reach (a clean close, a hint file, a seal). A damaged record
 * after that end with nothing valid behind it is a torn tail and is always cut (ARCHITECTURE.md,
 * "Which bytes may be cut").
 */
enum htkv_recovery {
    /** Refuse to open with HTKV_ECORRUPT, naming file and offset (htkv_last_error()). */
    HTKV_RECOVERY_STRICT = 0,
    /** Skip the damaged bytes (up to the next valid record, or to the known end), logging each
     *  skip loudly and counting it in htkv_stats.skipped_bytes. A skipped write is lost: its key
     *  reads what it held before that write, so a skipped delete brings the value back. */
    HTKV_RECOVERY_SKIP_CORRUPT = 1,
};

/** I/O backend for the worker threads. */
enum htkv_io_backend {
    HTKV_IO_AUTO = 0,  /* io_uring, falling back to plain syscalls where unavailable. */
    HTKV_IO_URING = 1, /* io_uring only; htkv_open fails where it is unavailable. */
    HTKV_IO_SYNC = 2,  /* plain syscalls. */
};

/** Severity passed to htkv_config.log_fn. */
enum htkv_log_level {
    HTKV_LOG_ERROR = 0,
    HTKV_LOG_WARN = 1,
    HTKV_LOG_INFO = 2,
};

/**
 * Log sink. Called from whichever thread hit the event; must not call back into the store.
 * @param level  One of enum htkv_log_level.
 * @param msg    NUL-terminated message; view, valid during the call.
 * @param ctx    htkv_config.log_ctx.
 */
typedef void (*htkv_log_fn)(int level, const char *msg, void *ctx);

/**
 * Completion of an asynchronous write (htkv_put_async(), htkv_delete_async(), htkv_write_async()).
 * Runs on a worker thread (or, with worker_threads = 0, on the calling thread before the call
 * returns). Must be quick and must not wait for another write to complete; it may submit new
 * asynchronous writes.
 * @param rc       What the synchronous call would have returned.
 * @param version  The write's version (0 on failure or when nothing was written).
 * @param ctx      The ctx given with the call.
 */
typedef void (*htkv_done_fn)(int rc, uint64_t version, void *ctx);

/**
 * Store configuration. Always start from htkv_config_init() so that fields added later get
 * their defaults. All fields are read by htkv_open() only; the struct is not kept.
 */
typedef struct htkv_config {
    const char *data_dir; /**< Store directory; created if missing. Default ".hightower". */
    /**
     * Worker threads that own the shards and sync their writes in groups through io_uring;
     * 0 = inline: every write runs on the caller's thread under its shard's lock; in
     * HTKV_SYNC_ALWAYS concurrent puts and deletes of a shard are written and synced as a group
     * by one of their callers while the others sleep. With workers, asynchronous writes and
     * every write in HTKV_SYNC_ALWAYS go through the worker that owns the shard (in ALWAYS its
     * ring syncs them in groups); a synchronous write in NEVER or INTERVAL runs on the calling
     * thread, as inline, because a hand-off buys a caller that waits anyway nothing but two
     * context switches, except from a thread that has written asynchronously: its synchronous
     * writes queue behind its asynchronous ones (or run on it once the worker is parked with
     * an empty queue), so that a thread's writes always apply in its order. Default 0. A count
     * above the CPUs this process may use (htkv_stats.cpus) is kept, with a warning through
     * log_fn.
     */
    unsigned worker_threads;
    /**
     * Shards, fixed at creation (1..1024). 0 = 2 x CPUs (htkv_stats.cpus) in [4, 64], except for a
     * store created in HTKV_SYNC_ALWAYS: one per worker thread (1 inline), because each shard with
     * waiting writers costs an fdatasync of its own per group commit: fewer shards make larger
     * groups and fewer fdatasyncs per durable write, while more shards let more writers run in
     * parallel (a write holds its shard's lock). The count stays when the store is reopened in
     * another mode.
     */
    unsigned shard_count;
    uint64_t max_segment_bytes; /**< Segment rotation size. Default 64 MiB. */
    int sync_mode;              /**< enum htkv_sync_mode. Default HTKV_SYNC_INTERVAL. */
    /**
     * For HTKV_SYNC_INTERVAL (1..60000): a write is fdatasynced within about this long. Default
     * 25. An idle store does not tick: the thread that syncs sleeps without a timer once nothing
     * is left to sync, and the next write wakes it.
     */
    unsigned fsync_interval_ms;
    /**
     * Background compaction: every compaction_interval_ms a thread of the store rewrites the
     * sealed segments whose garbage ratio (dead / (live + dead) bytes) is at least
     * compaction_min_garbage_ratio, in steps that hold a shard's lock for at most 256 KiB of
     * records. 0 = only htkv_compact_now(). Default 60000. After a pass that found nothing to
     * do the thread sleeps until the next write (an idle store does not wake for it).
     */
    unsigned compaction_interval_ms;
    double compaction_min_garbage_ratio; /**< In [0, 1]. Default 0.5. */
    /**
     * Boolean: after a background pass that dropped segments, write DIR/snapshot-NNNNNN.snap
     * (htkv_snapshot_write()) and remove the older ones. Default 1.
     */
    int emit_snapshot_after_compaction;
    int io_backend;       /**< enum htkv_io_backend. Default HTKV_IO_AUTO. */
    unsigned queue_depth; /**< Per-worker queue and ring depth. Default 256. */
    /**
     * Most bytes of memory the store's key indexes may hold: hash-index entries and tables,
     * ordered indexes and sorted runs (htkv_stats.index_bytes + trie_bytes). 0 = unlimited: every
     * key stays in memory (the default). Above the budget, a key whose newest record lies in a
     * sealed segment leaves memory (a *cold* key, htkv_stats.cold_keys): its segment gets a key
     * index file (DIR/shard-SSS/NNNNNNNNNNNN.kix: the segment's keys sorted in 4 KiB pages, of
     * which only page fences and a filter of about 9 bits a key stay in memory), and a get of a
     * cold key reads about one index page and its record, while a get of an absent key reads
     * almost never. A write to a cold key, and compaction of its segment, bring it back first;
     * so does a get of a key read cold once before lately (keys read often end up in memory,
     * keys read once do not displace them, and scans bring nothing back). Every read, view,
     * iterator, snapshot, batch condition and the change feed see cold keys exactly as hot
     * ones. Eviction is CLOCK-like: a key read since the hand last passed stays.
     *
     * Not bounded by the budget: values (read from the page cache or the files); keys whose
     * newest record is in a shard's active segment (a shard seals it early once they alone take
     * half its share of the budget: at the next write, or, when only reads come, through the
     * background compactor, so not with compaction_interval_ms = 0); versions an open view may
     * still read; the index built while the store opens after anything but a clean close
     * (recovery then loads every key, evicts down to the budget, and gives the freed memory back
     * to the system before htkv_open() returns); and the key index files' own memory (kix_bytes,
     * ~1.2 B a cold key). The share of each shard is the budget divided by shard_count; a shard
     * never goes below its smallest hash table (8 KiB), and seals a segment early only once it
     * holds 64 KiB.
     *
     * Reopening: a clean close of a store with a budget writes DIR/shard-SSS/close.state, which
     * names each shard's key index files. A writable open with a budget takes the files it names
     * without reading their segments' records, as long as the store is exactly as that close
     * left it (htkv_stats.cold_keys_at_open counts the keys it left cold); after a crash, any
     * write since the close, or a budget of 0 in between, it loads every key as above. A writable
     * open removes every key index file it did not take; one without a budget removes them all.
     * A key index page that fails its check (a damaged file) makes the shard read that segment's
     * records instead and write it a new key index: reads still answer; only a record that fails
     * its check makes the read (or the write that needed it) fail with HTKV_ECORRUPT. A
     * read_only store ignores the budget. Default 0.
     */
    uint64_t memory_budget_bytes;
    uint32_t max_value_bytes; /**< Largest value (1..HTKV_VALUE_MAX_LIMIT). Default 64 MiB. */
    int read_only;            /**< Boolean: open without writing anything. Default 0. */
    int create_if_missing;    /**< Boolean: create an empty store if none exists. Default 1. */
    int recovery;             /**< enum htkv_recovery. Default HTKV_RECOVERY_STRICT. */
    /**
     * Record checksums on reads (gets, views, iterators): 0 = not checked; 1 = the CRC of a
     * record is checked by its first read after open, and later reads of the same record trust
     * it (records that recovery scanned, that compaction copied, or that this process wrote,
     * count as checked); 2 = checked on every read. Default 1. Mode 1 trusts the page cache
     * for bytes once checked, as a block cache would: damage that appears afterwards (a disk
     * returning other bytes when the kernel re-reads an evicted page) goes unnoticed until the
     * store is opened again. Recovery, compaction, snapshots and the change feed always check.
     */
    int verify_checksums;
    /**
     * Boolean: keep a hint file (key -> location table) beside each sealed segment and, at
     * close, for the active one, so that htkv_open() reads no values. With a hint, open trusts
     * it for the records it describes: damage in those records is reported by the read that
     * meets it (HTKV_ECORRUPT) and by `htkvctl verify`, not by open. 0: open reads and checks
     * every record. Default 1.
     */
    int hint_files;
    /**
     * Boolean: give each shard queried in order a sorted run, a flat copy of its ordered index
     * (24 bytes a key) that prefix and range queries read instead of walking the trie while the
     * shard's keys are unchanged, and the store a merge path over those runs (1 byte a key:
     * which shard holds each key in order), so that queries over an unchanged store compare no
     * keys. Both are built by a query, once the queries since the last change walked as many
     * keys as the build copies (so builds cost at most what the walks did, and a keyspace that
     * changes faster than it is read builds none); that query pays for the build (about as much
     * as a query over every key of the shard, or of the store for the path). Any write makes
     * them stale until the next build. Not built with verify_checksums = 2. 0: queries always
     * walk the tries. Default 1.
     */
    int sorted_runs;
    htkv_log_fn log_fn; /**< Log sink; NULL = warnings and errors to stderr. */
    void *log_ctx;      /**< Passed to log_fn; kept until htkv_close(). */
} htkv_config;

/** Figures reported by htkv_stats(). Counts are store-wide sums over shards. */
struct htkv_stats {
    uint64_t live_keys;          /**< Keys with a value. */
    uint64_t tombstones;         /**< Deleted keys still remembered by the index. */
    uint64_t segments;           /**< Segment files. */
    uint64_t disk_bytes;         /**< Bytes allocated to segment files (preallocation included). */
    uint64_t data_bytes;         /**< Bytes of records written to segments. */
    uint64_t live_bytes;         /**< Bytes of records that are the newest version of their key. */
    uint64_t dead_bytes;         /**< Bytes of superseded records: what compaction can reclaim. */
    uint64_t index_bytes;        /**< Memory of the hash indexes (tables and entries). */
    uint64_t trie_bytes;         /**< Memory of the ordered indexes: tries, sorted runs. */
    uint64_t views_open;         /**< Views (and iterators, which hold one) open now. */
    uint64_t last_version;       /**< The latest version applied (htkv_latest_version()). */
    uint64_t puts;               /**< Put operations applied since open (batches included). */
    uint64_t deletes;            /**< Delete operations applied since open. */
    uint64_t batches;            /**< Batches committed since open. */
    uint64_t syncs;              /**< fdatasync calls since open. */
    uint64_t recovered_records;  /**< Records read by recovery at open. */
    uint64_t truncated_bytes;    /**< Torn-tail bytes discarded by recovery at open. */
    uint64_t skipped_bytes;      /**< Damaged bytes skipped (HTKV_RECOVERY_SKIP_CORRUPT). */
    uint32_t shard_count;        /**< Shards of the store. */
    uint32_t worker_threads;     /**< Worker threads running (0 = inline). */
    const char *io_backend;      /**< "io_uring" or "sync" (the workers' I/O), "inline" without. */
    int sync_mode;               /**< enum htkv_sync_mode in force. */
    int failed;                  /**< Boolean: a shard refuses writes after a failed fdatasync. */
    int no_space;                /**< Boolean: writes are refused after ENOSPC. */
    uint64_t gets;               /**< htkv_get()/htkv_get_version() calls since open. */
    uint64_t compactions;        /**< Compaction passes that ran since open. */
    uint64_t compacted_segments; /**< Segments rewritten and dropped since open. */
    uint64_t compaction_read_bytes;    /**< Record bytes examined by compaction. */
    uint64_t compaction_written_bytes; /**< Live record bytes copied by compaction. */
    uint64_t tombstones_dropped;       /**< Tombstones compaction removed for good. */
    /**
     * Bytes allocated now from the store's jemalloc arenas: one per worker thread (one for the
     * store in inline mode), holding its shards' index entries and tables, trie nodes and the
     * worker's own memory. Frees made by other threads are counted once their thread caches
     * flush. 0 when the library is built without jemalloc (sanitizer builds).
     */
    uint64_t arena_bytes;
    uint32_t arenas; /**< jemalloc arenas of the store (0 without jemalloc). */
    /**
     * CPUs this process could use when the store was opened: its affinity mask (taskset,
     * cpuset), lowered to the CPU quota (rounded up) of its cgroup and its ancestors: cgroup v2
     * cpu.max, or v1 cpu.cfs_quota_us over cpu.cfs_period_us. The default shard count is sized from
     * it, and htkv_open() logs a warning when worker_threads is above it (the workers run, but
     * share CPUs with each other and their callers).
     */
    uint32_t cpus;
    /**
     * Batches recovery did not apply at this open: found incomplete (a part missing in another
     * shard, or a part cut by damage skipped with HTKV_RECOVERY_SKIP_CORRUPT), including those
     * an earlier open already found incomplete while parts of them remain on disk. Their versions
     * still count as used: htkv_latest_version() may name one of them, as it may name a batch cut
     * as a torn tail (truncated_bytes). A replica that skips log entries at or below its latest
     * version must not trust a store where either is non-zero.
     */
    uint64_t discarded_batches;
    /* The memory budget (htkv_config.memory_budget_bytes); all 0 without one. */
    /** Keys (live or tombstones) whose index entry is in memory; with cold_keys, the sum is
     *  live_keys + tombstones, which count cold keys too. */
    uint64_t hot_keys;
    uint64_t cold_keys;  /**< Keys found only through key index files. */
    uint64_t kix_files;  /**< Key index files in use. */
    uint64_t kix_bytes;  /**< Memory of their page fences and filters. */
    uint64_t evictions;  /**< Keys that left memory since open. */
    uint64_t promotions; /**< Cold keys brought back into memory since open. */
    /** Key index pages read since open: lookups of keys not in memory (gets, writes that bring
     *  a key back, conditions) and ordered queries' walks. */
    uint64_t kix_page_reads;
    /** Key index files a lookup skipped on their filter alone since open (a binary fuse
     *  filter; the field keeps the name it had when it was a Bloom filter). */
    uint64_t bloom_negatives;
    /** Key index pages read because of the filter that did not hold the key since open. */
    uint64_t bloom_false_positives;
    /** Keys the open left cold: listed by the key index files a clean close named, which the
     *  open took instead of loading their keys (included in cold_keys while they stay cold). */
    uint64_t cold_keys_at_open;
};

/** Output format of htkv_metrics_write(). */
enum htkv_metrics_format {
    /** A table for people: per operation and per shard, one line each. */
    HTKV_METRICS_TEXT = 0,
    /** The Prometheus text exposition format (version 0.0.4), metric names prefixed htkv_. */
    HTKV_METRICS_PROMETHEUS = 1,
};

typedef struct htkv_db htkv_db;       /* one open store; thread-safe handle */
typedef struct htkv_batch htkv_batch; /* atomic group of puts and deletes */
typedef struct htkv_iter htkv_iter;   /* sorted results of a prefix or range query */
typedef struct htkv_view htkv_view;   /* consistent point-in-time view of the whole store */

/**
 * Name an error code.
 * @param err  Any value returned by an htkv function (negative errno or HTKV_E*).
 * @return A static NUL-terminated string; never NULL.
 * @context Any thread.
 */
HTKV_API const char *htkv_strerror(int err);

/**
 * Detail of the last failure on the calling thread, such as the file and offset of a damaged
 * record found by htkv_open().
 * @return A thread-local NUL-terminated string, "" when there is none; view, valid until the next
 *         htkv call on this thread.
 * @context Any thread; each thread has its own.
 */
HTKV_API const char *htkv_last_error(void);

/**
 * Fill @p cfg with the defaults (each field of htkv_config documents its own).
 * @param[out] cfg  Caller storage; borrowed.
 * @context Any thread. Does not block.
 */
HTKV_API void htkv_config_init(htkv_config *cfg);

/**
 * Open (or create) the store in cfg->data_dir: take its lock, recover every shard and make
 * the store ready for reads and writes.
 *
 * Recovery truncates a torn tail (an incomplete or damaged record with nothing valid after it)
 * and makes that truncation durable before any new append; a batch cut anywhere is applied whole
 * or not at all; the newest version of every key wins. A damaged record followed by valid ones
 * fails with HTKV_ECORRUPT (htkv_last_error() names the file and offset) unless cfg->recovery is
 * HTKV_RECOVERY_SKIP_CORRUPT. A writable open also removes files nothing reads any more (segments
 * and hints the manifest does not list, manifests CURRENT does not name, temporary files); one
 * that cannot be removed is logged and left for the next open.
 *
 * A file or directory the store needs that cannot be opened or read fails the open with that
 * error (no handle); by then the open may have done what recovery always does (removed files
 * nothing reads, cut a torn tail) and nothing else. A hint file that cannot be read is only
 * logged (its segment is scanned instead).
 *
 * @param[in]  cfg  Configuration; borrowed (log_ctx is kept until htkv_close()).
 * @param[out] out  Receives the handle, NULL on failure; borrowed.
 * @return 0; -EINVAL (bad configuration or NULL argument); HTKV_ELOCKED (open elsewhere, in this
 *         or another process); HTKV_ENOTSTORE (directory holds foreign files); HTKV_EVERSION
 *         (newer format); HTKV_ECORRUPT (damaged files); HTKV_ENOTFOUND (no store and
 *         create_if_missing is 0, or read_only); -ENOMEM; -ENOSPC; -EIO or another errno from the
 *         file system. A read_only open writes nothing: a torn tail is left as it is and simply
 *         ends what the store serves.
 * @context Any thread. Blocks for recovery, which reads the shards on up to one thread per CPU
 *          this process may use (log_fn may be called from those threads).
 */
HTKV_API HTKV_MUST_USE int htkv_open(const htkv_config *cfg, htkv_db **out);

/**
 * Close the store: wait for calls in progress, make every acknowledged write durable, release
 * the lock and free the handle. Calls that race with htkv_close() return HTKV_ECLOSED; a call
 * that starts after htkv_close() returned is undefined behaviour (the handle is freed).
 * @param[in] db  Handle; taken. NULL is accepted and returns 0.
 * @return 0; HTKV_EFAILED or -EIO when the final fdatasync failed (the handle is freed anyway).
 * @context Any thread; the last call on @p db. Blocks.
 */
HTKV_API int htkv_close(htkv_db *db);

/**
 * Store @p val under @p key, replacing any previous value.
 * @param[in] db   Handle; borrowed.
 * @param[in] key  1..HTKV_KEY_MAX bytes; borrowed.
 * @param[in] val  0..max_value_bytes bytes; borrowed. May be NULL when vlen is 0.
 * @return 0; -EINVAL (NULL db, NULL pointer with a non-zero length, empty key); HTKV_ETOOBIG;
 *         HTKV_EREADONLY; HTKV_ECLOSED; HTKV_EFAILED (an fdatasync failed earlier); -ENOSPC
 *         (no space: the store refuses writes until reopened, reads go on); -ENOMEM; -EIO;
 *         -EOVERFLOW (every version up to 2^62 is taken: only a store restored or recovered
 *         from files that claim versions that high gets there; nothing is written);
 *         HTKV_ECORRUPT (with a memory budget: the key is cold and its key index page or record
 *         fails its check; nothing is written). In
 *         HTKV_SYNC_ALWAYS the puts and deletes that concurrent callers make in one shard are
 *         written and synced together: a failed write or fdatasync fails all of them (-EIO or
 *         HTKV_EFAILED), and the shard then refuses writes until the store is reopened.
 * @context Any thread. Returns after the write is applied (visible to every later get, from any
 *          thread) and, in HTKV_SYNC_ALWAYS, durable.
 */
HTKV_API HTKV_MUST_USE int htkv_put(htkv_db *db, const void *key, size_t klen, const void *val,
                                    size_t vlen);

/**
 * Copy the value stored under @p key into @p buf.
 * @param[in]  db    Handle; borrowed.
 * @param[in]  key   1..HTKV_KEY_MAX bytes; borrowed.
 * @param[out] buf   Destination of cap bytes; borrowed. May be NULL when cap is 0.
 * @param[in]  cap   Capacity of @p buf.
 * @param[out] vlen  Receives the value's length (also on HTKV_ETOOSMALL); borrowed; may be NULL.
 * @return 0; HTKV_ENOTFOUND; HTKV_ETOOSMALL (nothing copied, *vlen = size needed); -EINVAL;
 *         HTKV_ETOOBIG (key too long); HTKV_ECORRUPT (checksum mismatch); HTKV_ECLOSED.
 * @context Any thread. Lock-free: never waits for a writer.
 */
HTKV_API HTKV_MUST_USE int htkv_get(htkv_db *db, const void *key, size_t klen, void *buf,
                                    size_t cap, size_t *vlen);

/**
 * Like htkv_get(), and also report the version of the value read.
 * @param[out] version  Receives the value's version (also with HTKV_ETOOSMALL, so a call with
 *                      cap 0 learns the version without copying; 0 with HTKV_ENOTFOUND);
 *                      borrowed; may be NULL.
 * @return As htkv_get().
 * @context Any thread. Lock-free.
 */
HTKV_API HTKV_MUST_USE int htkv_get_version(htkv_db *db, const void *key, size_t klen, void *buf,
                                            size_t cap, size_t *vlen, uint64_t *version);

/**
 * Return a copy of the value stored under @p key in memory allocated by the library.
 * @param[out] val   Receives the copy (free it with htkv_free()), NULL on failure; borrowed.
 *                   A zero-length value yields a non-NULL pointer.
 * @param[out] vlen  Receives the value's length; borrowed; may be NULL.
 * @return 0; HTKV_ENOTFOUND; -EINVAL; HTKV_ETOOBIG; HTKV_ECORRUPT; HTKV_ECLOSED; -ENOMEM.
 * @context Any thread. Lock-free.
 */
HTKV_API HTKV_MUST_USE int htkv_get_alloc(htkv_db *db, const void *key, size_t klen, void **val,
                                          size_t *vlen);

/**
 * Free memory returned by an htkv_*_alloc function.
 * @param[in] p  Taken; NULL is accepted.
 * @context Any thread.
 */
HTKV_API void htkv_free(void *p);

/**
 * Delete @p key. Deleting an absent key writes nothing.
 * @return 0 (deleted); HTKV_ENOTFOUND (was absent; nothing written); the errors of htkv_put().
 * @context Any thread. Returns after the delete is applied and, in HTKV_SYNC_ALWAYS, durable.
 */
HTKV_API HTKV_MUST_USE int htkv_delete(htkv_db *db, const void *key, size_t klen);

/**
 * Tell whether @p key has a value.
 * @return 1 (present); 0 (absent); -EINVAL; HTKV_ETOOBIG; HTKV_ECORRUPT; HTKV_ECLOSED.
 * @context Any thread. Lock-free.
 */
HTKV_API HTKV_MUST_USE int htkv_contains(htkv_db *db, const void *key, size_t klen);

/**
 * Create an empty batch: an ordered group of puts and deletes applied all or nothing, also
 * across a crash. Operations on one key apply in order (the last wins). A batch may carry
 * conditions (htkv_batch_check()) that must all hold for it to commit.
 * @param[out] out  Receives the batch, NULL on failure; borrowed.
 * @return 0; -EINVAL; -ENOMEM.
 * @context Any thread. A batch is not thread-safe: one thread at a time may use it.
 */
HTKV_API HTKV_MUST_USE int htkv_batch_create(htkv_batch **out);

/**
 * Append a put to @p b. Key and value are copied.
 * @return 0; -EINVAL; HTKV_ETOOBIG (key or value over its limit, or the batch over 1 GiB of
 *         records or 64 Mi operations and conditions); -ENOMEM. On failure the batch is
 *         unchanged.
 * @context The thread using @p b.
 */
HTKV_API HTKV_MUST_USE int htkv_batch_put(htkv_batch *b, const void *key, size_t klen,
                                          const void *val, size_t vlen);

/**
 * Append a delete to @p b. Unlike htkv_delete(), a delete of an absent key within a batch is
 * written (a tombstone, with the batch's version): the batch's outcome never depends on what
 * the key holds, and a follower fed by the change feed sees the same delete.
 * @return As htkv_batch_put().
 * @context The thread using @p b.
 */
HTKV_API HTKV_MUST_USE int htkv_batch_delete(htkv_batch *b, const void *key, size_t klen);

/**
 * Make the batch conditional: it commits only if @p key's current version equals @p version
 * (0 = the key must be absent); otherwise htkv_write() fails with HTKV_ECONFLICT and writes
 * nothing. Checks are evaluated atomically with the commit.
 * @return As htkv_batch_put().
 * @context The thread using @p b.
 */
HTKV_API HTKV_MUST_USE int htkv_batch_check(htkv_batch *b, const void *key, size_t klen,
                                            uint64_t version);

/** Remove every operation and condition from @p b; keeps its memory for reuse. */
HTKV_API void htkv_batch_clear(htkv_batch *b);

/** Number of puts and deletes in @p b (conditions not counted); 0 for NULL. */
HTKV_API size_t htkv_batch_count(const htkv_batch *b);

/**
 * Version assigned to @p b by its last successful htkv_write(), 0 if none.
 * @context The thread using @p b.
 */
HTKV_API uint64_t htkv_batch_version(const htkv_batch *b);

/** Free @p b (taken); NULL is accepted. */
HTKV_API void htkv_batch_destroy(htkv_batch *b);

/**
 * Apply every operation of @p b atomically: after a crash either all of them are there or none.
 * Readers of one shard see all of the batch's operations in that shard at once. An empty batch
 * (conditions only) checks its conditions and writes nothing.
 * @param[in] db  Handle; borrowed.
 * @param[in] b   Batch; borrowed (unchanged, may be written again).
 * @return 0; HTKV_ECONFLICT (a condition failed; nothing written); -EINVAL; HTKV_EREADONLY;
 *         HTKV_ECLOSED; HTKV_EFAILED; -ENOSPC; -ENOMEM; -EIO; -EOVERFLOW; HTKV_ECORRUPT (as
 *         htkv_put()).
 * @context Any thread. Returns when applied and, in HTKV_SYNC_ALWAYS, durable. A batch over
 *          shards of several workers, from a thread that wrote asynchronously, first waits until
 *          the other workers have staged what they were given before it (htkv_write_async()).
 */
HTKV_API HTKV_MUST_USE int htkv_write(htkv_db *db, htkv_batch *b);

/**
 * Asynchronous htkv_put(): copy key and value, hand the write to the owning worker and return.
 * @p done runs once the write is applied (and, in HTKV_SYNC_ALWAYS, durable) or failed. A
 * thread's writes to one shard (so to one key) apply in the order it made them, also mixed
 * with its synchronous writes; its writes to different shards may apply, and take versions,
 * in another order (a worker stages what it drained shard by shard).
 * @param[in] done  Completion callback; required.
 * @param[in] ctx   Passed to @p done; kept until @p done runs.
 * @return 0 (done will run); -EINVAL, HTKV_ETOOBIG, HTKV_EREADONLY, HTKV_ECLOSED, -ENOMEM
 *         (done will not run); HTKV_EBUSY (the worker's queue is full: retry later; done will
 *         not run).
 * @context Any thread. Never blocks with workers; with worker_threads = 0 the write runs on the
 *          calling thread and @p done is called before the function returns.
 */
HTKV_API HTKV_MUST_USE int htkv_put_async(htkv_db *db, const void *key, size_t klen,
                                          const void *val, size_t vlen, htkv_done_fn done,
                                          void *ctx);

/** Asynchronous htkv_delete(); as htkv_put_async(). rc HTKV_ENOTFOUND reaches @p done. */
HTKV_API HTKV_MUST_USE int htkv_delete_async(htkv_db *db, const void *key, size_t klen,
                                             htkv_done_fn done, void *ctx);

/**
 * Asynchronous htkv_write(); the batch is copied, so @p b may be reused or destroyed at once.
 * htkv_batch_version(b) is not updated: the version reaches @p done. One worker runs the batch;
 * when its keys belong to shards of several workers, the call first waits until the others
 * have staged what they were given before it (the thread's earlier writes to those keys then
 * apply before the batch, as the thread made them), except when called from a done callback.
 * @return As htkv_put_async().
 * @context Any thread. Blocks only as said above.
 */
HTKV_API HTKV_MUST_USE int htkv_write_async(htkv_db *db, htkv_batch *b, htkv_done_fn done,
                                            void *ctx);

/**
 * Iterate over every key that starts with @p prefix, in unsigned byte order of the key, as of
 * the moment of the call (the iterator reads a private view: later writes do not change it).
 * An empty prefix iterates over the whole store. Results stream: memory stays bounded whatever
 * the number of keys. The call may build a shard's sorted run or the store's merge path first
 * (see htkv_config.sorted_runs); an iterator that reads them keeps them allocated until it is
 * destroyed, even after writes made them stale (at most one run per shard and one path each).
 * @param[in]  db      Handle; borrowed.
 * @param[in]  prefix  0..HTKV_KEY_MAX bytes; borrowed. May be NULL when plen is 0.
 * @param[out] out     Receives the iterator (free with htkv_iter_destroy()); borrowed.
 * @return 0; -EINVAL; HTKV_ETOOBIG; HTKV_ECLOSED; -ENOMEM.
 * @context Any thread. The iterator must be used by one thread at a time and destroyed before
 *          htkv_close().
 */
HTKV_API HTKV_MUST_USE int htkv_get_prefix(htkv_db *db, const void *prefix, size_t plen,
                                           htkv_iter **out);

/**
 * Iterate over the keys in [@p start, @p end) in unsigned byte order, as of the moment of the
 * call. An empty @p start means from the smallest key; an empty @p end means to the largest.
 * @return As htkv_get_prefix().
 * @context As htkv_get_prefix().
 */
HTKV_API HTKV_MUST_USE int htkv_scan(htkv_db *db, const void *start, size_t slen, const void *end,
                                     size_t elen, htkv_iter **out);

/**
 * Stop @p it after @p limit more items (0 = no limit). Page through a range by scanning again
 * from the last key returned plus a 0x00 byte. A last key of HTKV_KEY_MAX bytes has no room for
 * that byte; no longer key exists, so restart from its successor instead: drop its trailing 0xFF
 * bytes and add one to the last byte left.
 * @return 0; -EINVAL (NULL iterator).
 */
HTKV_API HTKV_MUST_USE int htkv_iter_set_limit(htkv_iter *it, uint64_t limit);

/**
 * Advance @p it.
 * @param[out] key, klen, val, vlen  The item; view, valid until the next call on @p it. Any of
 *                                   them may be NULL.
 * @return 1 (an item); 0 (the end); HTKV_ECORRUPT (a record failed its checksum: the iteration
 *         stops); -ENOMEM; -EINVAL.
 * @context The thread using @p it.
 */
HTKV_API HTKV_MUST_USE int htkv_iter_next(htkv_iter *it, const void **key, size_t *klen,
                                          const void **val, size_t *vlen);

/**
 * Version of the item htkv_iter_next() returned last (the write that stored it).
 * @param[in] it  Iterator; borrowed. NULL gives 0.
 * @return The version, or 0 before the first item.
 * @context The iterator's thread.
 */
HTKV_API uint64_t htkv_iter_version(const htkv_iter *it);

/** Free @p it (taken); NULL accepted. */
HTKV_API void htkv_iter_destroy(htkv_iter *it);

/**
 * Open a consistent point-in-time view of the whole store: it reads every shard as of one
 * moment, a batch is in it entirely or not at all, and later writes, deletes and compaction never
 * change what it reads. O(shards) to open. While a view is open, the versions it may read are
 * kept: memory grows with the writes made meanwhile (about 48 bytes per overwritten or deleted
 * key) and is given back when the last view that needs it closes. Close views promptly.
 * @param[out] out  Receives the view; borrowed.
 * @return 0; -EINVAL; HTKV_ECLOSED; -ENOMEM.
 * @context Any thread. A view may be used by several threads at once; close it once, before
 *          htkv_close().
 */
HTKV_API HTKV_MUST_USE int htkv_view_open(htkv_db *db, htkv_view **out);

/**
 * htkv_view_open() for a view that is the store at exactly one version, htkv_view_version():
 * every write at or below it is in the view and none above. A plain view is one instant of what
 * readers see; in HTKV_SYNC_ALWAYS it may miss a write at or below its version that still waits
 * for its shard's group sync. This call waits for such writes first (an fdatasync at most; never
 * in the other sync modes). Such a view can be written as a snapshot by htkv_view_snapshot_write()
 * or htkv_view_snapshot_stream().
 * @param[out] out  Receives the view; borrowed. NULL on failure.
 * @return 0; -EINVAL; HTKV_ECLOSED (also when the store starts closing while it waits);
 *         HTKV_EFAILED (a write at or below the version will never be visible: its shard
 *         stopped after an I/O error); -ENOMEM.
 * @context Any thread. Close the view once, before htkv_close().
 */
HTKV_API HTKV_MUST_USE int htkv_view_open_cut(htkv_db *db, htkv_view **out);

/** htkv_get() as of the view. Same codes. */
HTKV_API HTKV_MUST_USE int htkv_view_get(htkv_view *v, const void *key, size_t klen, void *buf,
                                         size_t cap, size_t *vlen);

/** htkv_get_prefix() as of the view; the iterator must be destroyed before the view closes. */
HTKV_API HTKV_MUST_USE int htkv_view_get_prefix(htkv_view *v, const void *prefix, size_t plen,
                                                htkv_iter **out);

/** htkv_scan() as of the view; the iterator must be destroyed before the view closes. */
HTKV_API HTKV_MUST_USE int htkv_view_scan(htkv_view *v, const void *start, size_t slen,
                                          const void *end, size_t elen, htkv_iter **out);

/** Highest version the view can see. */
HTKV_API uint64_t htkv_view_version(const htkv_view *v);

/** Close @p v (taken); NULL accepted. */
HTKV_API void htkv_view_close(htkv_view *v);

/**
 * Open a view, call @p fn with it, close it.
 * @return What @p fn returned, or an error of htkv_view_open().
 */
HTKV_API HTKV_MUST_USE int htkv_read_with(htkv_db *db, int (*fn)(htkv_view *v, void *ctx),
                                          void *ctx);

/**
 * Make every write acknowledged so far durable (fdatasync of every shard with unsynced data).
 * @return 0; HTKV_EFAILED (an fdatasync failed, now or before: the store refuses writes until
 *         reopened); HTKV_ECLOSED; -EINVAL.
 * @context Any thread. Blocks for the syncs.
 */
HTKV_API HTKV_MUST_USE int htkv_flush(htkv_db *db);

/**
 * Run a full compaction pass now and wait for it: seal each shard's active segment if it holds
 * garbage, then rewrite every sealed segment with garbage: its live records are copied to the
 * shard's active segment (with their versions), tombstones with nothing older left are dropped,
 * and the segment is removed once the copies are durable and the drop is in the manifest. A crash
 * at any point loses nothing and resurrects nothing.
 *
 * Writers of a shard wait at most one step (256 KiB of records) at a time; readers never wait;
 * open views keep reading what they read before (a dropped segment stays mapped, and its disk
 * space allocated, until the views opened before the drop are closed). A segment whose records
 * an open view or an unsynced write still needs in place is left for a later pass.
 * Runs one pass at a time with the background compactor.
 * @param[in] db  Open store; borrowed.
 * @return 0; HTKV_EREADONLY; HTKV_EFAILED (a sync failed: the store refuses writes); -ENOSPC
 *         (no room for the copies: the store refuses writes until reopened, nothing is lost);
 *         HTKV_ECORRUPT (a record of a segment failed its check: that segment is kept as it is;
 *         htkv_last_error() names it); HTKV_ECLOSED; -ENOMEM; -EINVAL; another -errno. A dropped
 *         segment whose file cannot be removed is not an error: it is logged and the next open
 *         removes it.
 * @context Any thread. Blocks for the pass (its fdatasyncs and copies).
 */
HTKV_API HTKV_MUST_USE int htkv_compact_now(htkv_db *db);

/**
 * Write a snapshot of the whole store to @p path: every live key with its value and version, in
 * key order, checksummed, as the store is at the snapshot's version V: every write at or below V
 * is in it and none above, so a replica that installs it and replays the change feed from V on
 * misses nothing. V is the highest version visible when the call starts; writes at or below it
 * that still wait for their group sync (HTKV_SYNC_ALWAYS) are waited for first. The
 * file is written as PATH.tmp, fsynced and renamed, then the directory is fsynced: a crash
 * leaves the old file (or none) or the complete new one. Writers go on meanwhile.
 * Format: see engine/snapshot.c; two stores that applied the same writes with the same versions
 * write identical bytes.
 * @param[in] db    Open store (also read-only); borrowed.
 * @param[in] path  Destination file; borrowed. Its directory must exist.
 * @return 0; HTKV_ECORRUPT (a record failed its checksum while reading); HTKV_ECLOSED;
 *         HTKV_EFAILED (a write at or below V will never be visible: its shard stopped after an
 *         I/O error); -ENOMEM; -EINVAL; -errno of open/write/fsync/rename (e.g. -ENOSPC,
 *         -EACCES). After a failure
 *         @p path is as it was, except when only the final fsync of the directory failed: the
 *         new, complete file is then in place, but a power loss may take its name back.
 * @context Any thread. Blocks for the write; holds a view open meanwhile.
 */
HTKV_API HTKV_MUST_USE int htkv_snapshot_write(htkv_db *db, const char *path);

/**
 * htkv_snapshot_write() of the store at the moment of view @p v (from htkv_view_open_cut()):
 * the file holds what @p v reads and says htkv_view_version(v). The moment is fixed when the view
 * opens, so a caller that must not block may open the view where the moment matters and write it
 * elsewhere (another thread, later) while writers go on; what they write after the view opened is
 * not in the file. Two views of the same writes write identical bytes.
 * @param[in] v     Open view; borrowed. It stays open; other threads may read it meanwhile.
 * @param[in] path  Destination file; borrowed. Its directory must exist.
 * @return As htkv_snapshot_write(), and -EINVAL when @p v is not the store at one version
 *         (htkv_last_error() says so): a view from htkv_view_open_cut() always is; one from
 *         htkv_view_open() is only when no write at or below its version was still waiting for
 *         its group sync (HTKV_SYNC_ALWAYS) when it opened.
 * @context Any thread. Blocks for the write.
 */
HTKV_API HTKV_MUST_USE int htkv_view_snapshot_write(htkv_view *v, const char *path);

/**
 * Where htkv_view_snapshot_stream() puts a snapshot: the @p len bytes at @p buf are the
 * snapshot's bytes at offset @p off. @p buf is valid during the call only.
 * @return 0 to go on; a negative code stops the stream, which returns it.
 */
typedef int (*htkv_snapshot_sink)(void *ctx, uint64_t off, const void *buf, size_t len);

/**
 * htkv_view_snapshot_write() without a file: the same bytes (what htkv_snapshot_restore() reads
 * from a file), handed to @p sink in pieces of at most 1 MiB at increasing offsets from 0, except
 * that the first 64 bytes (the header, whose counts are known only at the end) come twice: as
 * zeros first, and complete in the last call. The snapshot's size is the end of the last piece
 * but one. Nothing is written to disk or synced: for a caller that sends or stores the bytes
 * itself.
 * @param[in] v     Open view from htkv_view_open_cut(); borrowed, stays open.
 * @param[in] sink  Called on this thread for each piece; @p ctx is passed to it.
 * @return 0; what @p sink returned when it stopped the stream; -EINVAL (a NULL argument, or
 *         @p v is not the store at one version); HTKV_ECORRUPT (a record failed its checksum);
 *         HTKV_ECLOSED; -ENOMEM.
 * @context Any thread; other threads may read @p v meanwhile.
 */
HTKV_API HTKV_MUST_USE int htkv_view_snapshot_stream(htkv_view *v, htkv_snapshot_sink sink,
                                                     void *ctx);

/**
 * Replace the store's whole contents with the snapshot at @p path, atomically: after a crash at
 * any point the store holds either its old contents or exactly the snapshot's, never a mix.
 * The file is checked whole first (lengths, key order, checksums); a bad file changes nothing.
 * Keys keep the snapshot's versions; later writes get versions above both the snapshot's and
 * every version used before. Writers wait while it runs; readers go on and see the old contents
 * until the switch. Writes acknowledged before the call returns may be replaced.
 * @param[in] db    Open, writable store; borrowed.
 * @param[in] path  Snapshot file (htkv_snapshot_write()); borrowed.
 * @return 0; HTKV_ECORRUPT (not a valid snapshot: htkv_last_error() says where);
 *         HTKV_EVERSION (a newer format); HTKV_EBUSY (views or iterators are open: close them
 *         first); HTKV_EREADONLY; HTKV_EFAILED (a sync failed earlier, or the fsync of the
 *         directory after switching CURRENT failed: the commit is in doubt, so every file stays,
 *         the old contents are served, writes are refused until reopen, and the reopened store
 *         holds either the old contents or the snapshot's, whole); -ENOSPC; HTKV_ETOOBIG (a value
 *         longer than this store's max_value_bytes); -EOVERFLOW (a rollback to a version
 *         below the store's latest needs a version of its own, and the store has used the
 *         largest: nothing changed); HTKV_ECLOSED; -ENOMEM; -EINVAL; -errno (e.g. -ENOENT,
 *         -EIO: nothing changed).
 * @context Any thread. Blocks for the whole restore.
 */
HTKV_API HTKV_MUST_USE int htkv_snapshot_restore(htkv_db *db, const char *path);

/**
 * Report the store's figures.
 * @param[out] out  Caller storage; borrowed.
 * @return 0; -EINVAL; HTKV_ECLOSED.
 * @context Any thread. Takes each shard's writer lock briefly.
 */
HTKV_API HTKV_MUST_USE int htkv_stats(htkv_db *db, struct htkv_stats *out);

/**
 * Write the store's operation metrics to @p f: counts and latency histograms per operation
 * (get, put, delete, batch); per shard, live keys, record bytes written, fdatasync latency
 * and group size (writes made durable by each fdatasync); per worker, the requests waiting in
 * its queue.
 *
 * Metrics are always on and cost a few adds per operation: every batch is timed (as its caller
 * sees it: queueing, lock and sync waits included), and one get, one put and one delete in 64 per
 * thread (a clock read costs about a tenth of a small put), while every count is exact:
 * htkv_ops_total and the text report's count column count every operation, a latency
 * histogram's _count the timed ones. Latency buckets are log-linear (4 per power of two, so a
 * percentile is within 25% of the true value). Figures count from htkv_open() and are not
 * persisted; operations that return an error are counted too.
 *
 * HTKV_METRICS_TEXT prints a table: per operation count, p50, p99, p99.9 and max; per shard
 * keys, bytes_written, syncs, group size p50/max, fdatasync p50/p99; per worker queue_depth.
 * HTKV_METRICS_PROMETHEUS prints `# HELP`/`# TYPE` lines and samples: htkv_ops_total{op},
 * htkv_op_latency_seconds{op} (histogram), htkv_shard_keys{shard} (gauge),
 * htkv_shard_bytes_written_total{shard}, htkv_shard_fdatasync_seconds{shard} (histogram) and
 * htkv_shard_sync_group_size{shard} (histogram), htkv_worker_queue_depth{worker} (gauge, with
 * workers only); histogram buckets are cumulative, at each
 * power of two up to the largest value seen, then le="+Inf", which equals _count.
 *
 * @param[in] db      Handle; borrowed.
 * @param[in] f       Open stream; borrowed. Flushed before returning, not closed.
 * @param[in] format  One of enum htkv_metrics_format.
 * @return 0; -EINVAL (NULL @p db or @p f, unknown format); HTKV_ECLOSED; -ENOMEM; -EIO (writing
 *         to @p f failed: its error indicator is set, the output may be partial).
 * @context Any thread. Takes each shard's writer lock briefly; does not wait for I/O of the
 *          store (only for @p f).
 */
HTKV_API HTKV_MUST_USE int htkv_metrics_write(htkv_db *db, FILE *f, int format);

#ifdef __cplusplus
}
#endif

#endif /* HTKV_HTKV_H */
