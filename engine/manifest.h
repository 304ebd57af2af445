/*
 * manifest.h - CURRENT and MANIFEST-NNNNNN: which shards and segments make up the store.
 *
 * MANIFEST-NNNNNN is an append-only edit log:
 *   header (32 B): magic "HTKVMAN1", format u32, zero u32, number u64, zero u32, crc32c u32 of
 * 0..27 edits: crc32c u32 (of the next 8 + len bytes), len u32, type u32, payload[len]; 4-byte
 * aligned MAN_INIT     {format u32, shard_count u32, hash_seed u64} MAN_SEG_ADD  {shard u32, zero
 * u32, seg_id u64} MAN_SEG_DROP {shard u32, zero u32, seg_id u64} MAN_NEXT_ID {zero u64, next
 * u64} MAN_BATCH_FLOOR {zero u64, floor u64}: every batch with a version <= floor is durable in
 * all of its shards, so recovery applies such a batch's part without looking for the other
 * parts (compaction may have dropped them with their segments). Every edit is fdatasynced before
 * the change it describes is used: a segment receives records only after its MAN_SEG_ADD is
 * durable, and is deleted only after its MAN_SEG_DROP is.
 * MAN_BATCH_ABORT {seg_limit u64, version u64}: a recovery found the batch @c version with a
 * part missing and did not apply it; its surviving parts lie in segments with ids below
 * seg_limit. Such a batch is never applied, even at or below the batch floor (the floor only
 * vouches for batches that were complete). Kept while a listed segment has an id below
 * seg_limit; a full rewrite leaves out the others.
 *
 * MAN_SEG_GONE {shard u32, zero u32, seg_id u64}: no file of this id is part of the store: it was
 * dropped (a full rewrite keeps the drops whose files are still on disk), or it is written by a
 * snapshot restore that has not committed yet. Recovery removes such files; a segment file the
 * manifest neither lists nor calls gone, holding anything after its header, is corruption: it
 * may hold acknowledged data, and nothing is deleted on a guess.
 * MAN_VERSIONS {hwm u64, applied u64}: no version above hwm was handed out; every version up to
 * applied may have been acknowledged (a delete compacted away leaves no record of its version).
 * The last edit wins: the writer raises hwm in blocks before it hands out versions above it, and
 * a clean close lowers it to applied (everything acknowledged is durable by then).
 * MAN_SEG_END {shard u32, zero u32, seg_id u64, end u64}: the records of the segment reach
 * offset end and are durable (recorded at a clean close). A record that fails its check before
 * this end is damage, never a torn tail; a segment shorter than it has lost data.
 *
 * CURRENT holds "MANIFEST-NNNNNN\n" and is replaced by CURRENT.tmp + fsync + rename + fsync(dir).
 *
 * Rules: a missing CURRENT in a directory that holds anything of a store, a CURRENT naming a
 * missing manifest, and a manifest damaged before its last edit are HTKV_ECORRUPT. A damaged
 * tail is cut only when it is shorter than one edit (a torn append of the last edit) or zeros.
 */
#ifndef HTKV_ENGINE_MANIFEST_H
#define HTKV_ENGINE_MANIFEST_H

#include <pthread.h>

#include "engine/internal.h"

#define MAN_MAGIC "HTKVMAN1"
#define MAN_HDR_BYTES 32u
/* Largest manifest file a load accepts (64 MiB); verify and repair use the same bound. */
#define MAN_BYTES_MAX (64ull << 20)
#define MAN_EDIT_HDR 12u
#define MAN_SHARDS_MAX 1024u
/* Largest segment id: file names have 12 decimal digits (NNNNNNNNNNNN.seg). */
#define MAN_SEG_ID_MAX 999999999999ull
/* Rewrite the manifest at open once its edit log passes 1 MiB (~40k segment edits). */
#define MAN_REWRITE_BYTES (1u << 20)

enum man_type {
    MAN_INIT = 1,
    MAN_SEG_ADD = 2,
    MAN_SEG_DROP = 3,
    MAN_NEXT_ID = 4,
    MAN_BATCH_FLOOR = 5,
    MAN_BATCH_ABORT = 6,
    MAN_SEG_GONE = 7,
    MAN_VERSIONS = 8,
    MAN_SEG_END = 9,
};

/* Longest edit (MAN_SEG_END): a damaged tail at least this long is not one torn append. */
#define MAN_EDIT_MAX (MAN_EDIT_HDR + 24u)
/* Versions reserved by one MAN_VERSIONS edit ahead of the counter: one fdatasync of the
 * manifest per 2^20 writes, and at most that many versions skipped after a crash. */
#define MAN_VERSION_BLOCK (1ull << 20)

struct man_shard {
    uint64_t *seg_ids; /* sorted ascending */
    size_t count;
    size_t cap;
};

/* A segment id that is not part of the store (MAN_SEG_GONE, or dropped). */
struct man_gone {
    uint64_t id;
    uint32_t shard;
};

/* The durable end of a segment's records (MAN_SEG_END). */
struct man_end {
    uint64_t id;
    uint64_t end;
};

/* A batch a recovery did not apply (MAN_BATCH_ABORT). */
struct man_abort {
    uint64_t version;
    uint64_t seg_limit; /* its parts lie in segments with lower ids */
};

struct manifest {
    pthread_mutex_t lock; /* serialises edits from shard writers */
    int dir_fd;
    int fd;
    bool writable;
    uint64_t number;     /* NNNNNN of the live manifest */
    uint64_t file_bytes; /* end of the last valid edit */
    uint32_t format;
    uint32_t shard_count;
    uint64_t hash_seed;
    uint64_t next_seg_id; /* one past the largest segment id ever added */
    uint64_t batch_floor; /* MAN_BATCH_FLOOR: batches <= it are complete everywhere */
    struct man_shard *shards;
    struct man_abort *aborts; /* sorted by version, no duplicates */
    size_t naborts, aborts_cap;
    struct man_gone *gone; /* sorted by id, no duplicates */
    size_t ngone, gone_cap;
    struct man_end *ends; /* sorted by id, no duplicates */
    size_t nends, ends_cap;
    uint64_t torn_end;        /* file size at load when a torn tail follows file_bytes */
    uint64_t version_hwm;     /* MAN_VERSIONS hwm (0: none recorded, a store of older format) */
    uint64_t version_applied; /* MAN_VERSIONS applied */
};

/* Create a new store's manifest and CURRENT in @p dir_fd (borrowed). */
int htkv_manifest_create(int dir_fd, uint32_t shard_count, uint64_t hash_seed,
                         struct manifest **out);

/*
 * Load CURRENT and its manifest, changing nothing on disk: a torn last edit is left for
 * htkv_manifest_cut_torn(). Returns 0, HTKV_ENOTFOUND (no CURRENT), HTKV_ECORRUPT,
 * HTKV_EVERSION, -ENOMEM, -errno.
 */
int htkv_manifest_load(int dir_fd, bool writable, struct manifest **out);

/* Cut a torn last edit found by the load (ftruncate + fsync); call before appending. 0 or
 * -errno. */
int htkv_manifest_cut_torn(struct manifest *m);

/* Append and fdatasync one edit, then apply it in memory. 0, -ENOMEM or -errno. */
int htkv_manifest_add_seg(struct manifest *m, uint32_t shard, uint64_t seg_id);
int htkv_manifest_drop_seg(struct manifest *m, uint32_t shard, uint64_t seg_id);

/* Append and fdatasync MAN_BATCH_FLOOR @p floor (no-op when not above the current one). */
int htkv_manifest_set_batch_floor(struct manifest *m, uint64_t floor);

/*
 * Record that recovery did not apply the batches @p versions (@p n of them, any order; those
 * already recorded are skipped): one fdatasynced append for all. Call before anything can
 * raise the batch floor above them. 0, -ENOMEM or -errno (nothing recorded in memory then).
 */
int htkv_manifest_abort_batches(struct manifest *m, const uint64_t *versions, size_t n);

/* Was batch @p version recorded as not applied (MAN_BATCH_ABORT)? */
bool htkv_manifest_batch_aborted(const struct manifest *m, uint64_t version);

/*
 * Replace every shard's segment list at once (snapshot restore): write a fresh manifest holding
 * @p lists (shard_count entries, ids sorted, borrowed) and @p batch_floor, then switch CURRENT to
 * it: the rename is the commit point. On success the manifest holds the new lists; on failure
 * the old lists stay in use, and nothing changed on disk unless *unsure is set: CURRENT was
 * renamed but the fsync of its directory failed, so after a power loss it may name either
 * manifest. Both are then kept, and the caller must keep every file either one lists and stop
 * writing until the store is reopened. 0, -ENOMEM or -errno.
 */
int htkv_manifest_replace(struct manifest *m, const struct man_shard *lists, uint64_t batch_floor,
                          bool *unsure);

/*
 * Record that the segments @p ids (of shards @p shards, @p n of them) are not part of the store
 * (MAN_SEG_GONE), before their files are created: a snapshot restore writes its segments only
 * after this, so that files of a restore that never committed are known to be removable. Their
 * listing by a later htkv_manifest_replace() takes precedence. 0, -ENOMEM or -errno.
 */
int htkv_manifest_stage_segs(struct manifest *m, const uint32_t *shards, const uint64_t *ids,
                             size_t n);

/* Is segment @p id known not to be part of the store (dropped, or staged)? */
bool htkv_manifest_seg_gone(const struct manifest *m, uint64_t id);

/* The durable end of segment @p id's records recorded by MAN_SEG_END, or 0. */
uint64_t htkv_manifest_seg_end(const struct manifest *m, uint64_t id);

/* Record MAN_SEG_END for @p n segments (one fdatasynced append; ends not above the recorded
 * ones are skipped). 0, -ENOMEM or -errno. */
int htkv_manifest_record_ends(struct manifest *m, const uint32_t *shards,
                              const struct man_end *ends, size_t n);

/*
 * Record MAN_VERSIONS {hwm, applied} (one fdatasynced append when either changes); @p applied
 * never moves back. Without @p exact, hwm only rises (call before any version above the old hwm
 * is handed out); with it, hwm becomes max(@p hwm, applied), which is allowed only when nothing
 * above it was handed out (a clean close). 0 or -errno (nothing changed).
 */
int htkv_manifest_set_versions(struct manifest *m, uint64_t hwm, uint64_t applied, bool exact);

/* What htkv_manifest_rebuild() writes; every pointer borrowed. */
struct man_rebuild {
    uint64_t number; /* NNNNNN of the new manifest, above every one on disk */
    uint32_t shard_count;
    uint64_t hash_seed;
    const struct man_shard *lists; /* shard_count lists, ids ascending */
    uint64_t next_seg_id;          /* above every id seen */
    uint64_t version_hwm, version_applied;
    uint64_t batch_floor;           /* MAN_BATCH_FLOOR to keep (0: none) */
    const struct man_abort *aborts; /* MAN_BATCH_ABORT entries to keep */
    size_t naborts;
};

/*
 * Write a store's manifest from @p r into @p dir_fd (borrowed), then switch CURRENT to it
 * (htkvctl repair). The manifest is not kept open. 0, -EINVAL (a bad field), -ENOMEM or -errno.
 */
int htkv_manifest_rebuild(int dir_fd, const struct man_rebuild *r);

/* Reserve a new segment id (not yet added). Thread-safe. */
uint64_t htkv_manifest_next_seg_id(struct manifest *m);

/* Hand out no id below @p next from now on (a file of that id is on disk and could not be
 * removed). Kept in memory: the next MAN_SEG_ADD or rewrite makes it durable. Thread-safe. */
void htkv_manifest_reserve_ids(struct manifest *m, uint64_t next);

/* Write a fresh manifest holding the current state and switch CURRENT to it. 0 or -errno
 * (on failure the old manifest stays in use; both files are kept when CURRENT's directory sync
 * failed after the rename, see htkv_manifest_replace()). */
int htkv_manifest_rewrite(struct manifest *m);

/* htkv_manifest_rewrite() in this library's format (HTKV_FORMAT_VERSION in INIT and header). */
int htkv_manifest_upgrade_rewrite(struct manifest *m);

void htkv_manifest_close(struct manifest *m);

/*
 * Write @p len bytes to @p name in @p dir_fd via name.tmp + fsync + rename + fsync(dir). 0 or
 * -errno. *renamed tells whether the rename happened: after a failure with *renamed false,
 * @p name is as it was; with *renamed true, only the directory's fsync failed and @p name holds
 * the new bytes, which a power loss may take back.
 */
int htkv_write_file_atomic(int dir_fd, const char *name, const void *data, size_t len,
                           bool *renamed);

#endif
