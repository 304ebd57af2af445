/*
 * closing.h - a shard's state as a clean close left it, so that the next open under a memory
 * budget can take its sealed segments' key index files as they are instead of loading every key
 * (formats layer; prefix htkv_closing_).
 *
 * DIR/shard-SSS/close.state, written at a clean close of a store with a memory budget, little-
 * endian:
 *
 *   header (64 B): magic "HTKVCLS1", format u32 (1), shard u32, manifest number u64, manifest
 *       bytes u64 (its size after the close's edits), applied u64 (the latest version), zero
 *       u64 x 2, segment count u32, zero u32
 *   segments (64 B each, the shard's segments in manifest order): id u64, tail u64, records u64,
 *       max_version u64, live bytes u64, dead bytes u64, key index header CRC u32, flags u32
 *       (CLOSING_KIX: its key index was in the cold set; CLOSING_HINT: its hint reached its
 *       tail), head values u32, head tombstones u32 (keys whose newest version it holds)
 *   trailer (8 B): crc32c u32 of every byte before it, zero u32
 *
 * Trust. The file only describes; it proves nothing by itself. It speaks for the store only
 * while the manifest is byte for byte as that close left it (same number and size, no torn
 * tail, hwm == applied == the file's applied): every change of the store's contents (a write, a
 * compaction's drop, a restore, a repair) appends to the manifest first or replaces it. A key
 * index file is taken only when its header CRC is the one recorded here, so a file some other
 * open wrote (a crashed one, whose listings may name records recovery then discarded) never
 * passes for it. The file is written without fsync: lost or torn, it fails its CRC or names an
 * older manifest size, and the next open loads every key, as without it.
 */
#ifndef HTKV_ENGINE_CLOSING_H
#define HTKV_ENGINE_CLOSING_H

#include "engine/internal.h"

#define CLOSING_MAGIC "HTKVCLS1"
#define CLOSING_FORMAT 1u
#define CLOSING_HDR_BYTES 64u
#define CLOSING_SEG_BYTES 64u
#define CLOSING_TRAILER_BYTES 8u
#define CLOSING_NAME "close.state"

enum { CLOSING_KIX = 1u, CLOSING_HINT = 2u };

/* One segment as the close left it. */
struct closing_seg {
    uint64_t id;
    uint64_t tail;
    uint64_t records;
    uint64_t max_version;
    uint64_t live_bytes;
    uint64_t dead_bytes;
    uint32_t kix_crc; /* with CLOSING_KIX: the header CRC of its key index file */
    uint32_t flags;
    uint32_t heads_vals; /* keys whose newest version it holds: values */
    uint32_t heads_dels; /* and tombstones */
};

/* One shard as the close left it. */
struct closing {
    uint32_t shard;
    uint64_t man_number;
    uint64_t man_bytes;
    uint64_t applied;
    uint32_t nsegs;
    struct closing_seg *segs; /* htkv_mem_alloc; manifest order */
};

/*
 * Write @p c as @p shard_dir/close.state (through close.state.tmp and a rename, no fsync: see
 * the top of the file). 0, -EINVAL (more segments than the format holds), -ENOMEM or -errno.
 */
int htkv_closing_write(const char *shard_dir, const struct closing *c);

/*
 * Read and check @p shard_dir/close.state of shard @p shard (magic, format, size against the
 * segment count, CRC, shard), a file of at most @p max_segs segments (the manifest's count: a
 * larger file is refused before it is read). 0 and *@p out (free with htkv_closing_free()),
 * HTKV_ENOTFOUND (no file), HTKV_ECORRUPT (damaged, torn, too large or another shard's),
 * -ENOMEM or -errno. Nothing is allocated on failure.
 */
int htkv_closing_load(const char *shard_dir, uint32_t shard, uint32_t max_segs,
                      struct closing *out);

void htkv_closing_free(struct closing *c);

#endif /* HTKV_ENGINE_CLOSING_H */
