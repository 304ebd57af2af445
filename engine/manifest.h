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
 * CURRENT holds "MANIFEST-NNNNNN\n" and is replaced by CURRENT.tmp + fsync + rename + fsync(dir).
 */
#ifndef HTKV_ENGINE_MANIFEST_H
#define HTKV_ENGINE_MANIFEST_H

#include <pthread.h>

#include "engine/internal.h"

#define MAN_HDR_BYTES 32u
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
};

struct man_shard {
    uint64_t *seg_ids; /* sorted ascending */
    size_t count;
    size_t cap;
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
};

/* Create a new store's manifest and CURRENT in @p dir_fd (borrowed). */
int htkv_manifest_create(int dir_fd, uint32_t shard_count, uint64_t hash_seed,
                         struct manifest **out);

/*
 * Load CURRENT and its manifest. A torn last edit is cut off (when @p writable). Returns 0,
 * HTKV_ENOTFOUND (no CURRENT), HTKV_ECORRUPT, HTKV_EVERSION, -ENOMEM, -errno.
 */
int htkv_manifest_load(int dir_fd, bool writable, struct manifest **out);

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

/* Reserve a new segment id (not yet added). Thread-safe. */
uint64_t htkv_manifest_next_seg_id(struct manifest *m);

/* Hand out no id below @p next from now on (a file of that id is on disk and could not be
 * removed). Kept in memory: the next MAN_SEG_ADD or rewrite makes it durable. Thread-safe. */
void htkv_manifest_reserve_ids(struct manifest *m, uint64_t next);

/* Write a fresh manifest holding the current state and switch CURRENT to it. 0 or -errno
 * (on failure the old manifest stays in use; both files are kept when CURRENT's directory sync
 * failed after the rename, see htkv_manifest_replace()). */
int htkv_manifest_rewrite(struct manifest *m);

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
