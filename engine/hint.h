/*
 * hint.h - hint files: a segment's key -> location table, so that reopening reads no values.
 *
 * DIR/shard-SSS/NNNNNNNNNNNN.hint sits beside its segment and describes the records of
 * [SEG_DATA_OFF, tail) of it, in order (SEAL excluded):
 *
 *   header (64 B): magic "HTKVHNT1", format u32, shard u32, seg_id u64, count u64, tail u64,
 *                  records u64, max_version u64, zero u32, crc32c u32 of bytes 0..59
 *   count entries (32 B): hash u64, version u64, off u32, key_len u32, val_len u32, type u8,
 *                  flags u8, zero u16  (for BEGIN/COMMIT: key_len = part_count, val_len = op_count)
 *   trailer (8 B): crc32c u32 of every entry byte, zero u32
 *
 * A hint is written only for bytes already fdatasynced (tmp + fsync + rename), so it never
 * describes data a power loss could take back. Recovery uses it when everything checks (header,
 * size, trailer, the segment's own header, and entries within the segment's bounds, in order)
 * and scans the segment otherwise, then rewrites it. Records past the hint's tail (an active
 * segment appended to after its hint was written) are scanned as usual.
 */
#ifndef HTKV_ENGINE_HINT_H
#define HTKV_ENGINE_HINT_H

#include "engine/internal.h"
#include "engine/seg.h" /* struct seg; htkv_hint_path() */

#define HINT_HDR_BYTES 64u
#define HINT_ENT_BYTES 32u
#define HINT_TRAILER_BYTES 8u
#define HINT_MAGIC "HTKVHNT1"

/* One decoded hint entry. */
struct hint_ent {
    uint64_t hash;
    uint64_t version;
    uint32_t off;
    uint32_t key_len;
    uint32_t val_len;
    uint8_t type;
    uint8_t flags;
};

/* A hint file read into memory and checked. */
struct hint {
    unsigned char *buf; /* the whole file (htkv_mem_map(): given back at once when freed) */
    uint64_t bytes;     /* its size */
    uint64_t count;
    uint64_t tail;
    uint64_t records;
    uint64_t max_version;
};

/*
 * Write the hint of @p s for its records from SEG_DATA_OFF up to its tail or its SEAL record,
 * whichever comes first, replacing any older hint; sets s->hint_tail. The records must be
 * durable (fdatasynced) and stable (nothing appended concurrently below the tail: the caller
 * holds the shard's lock or is its only writer). Keys are hashed with the store's @p hash_seed;
 * records are checked with values up to @p val_max. Logs nothing: 0, HTKV_ECORRUPT (a record
 * fails its check: no hint, htkv_set_error() says where), -ENOMEM or -errno.
 */
int htkv_hint_write(struct seg *s, uint64_t hash_seed, uint32_t val_max);

/*
 * Load and check the hint of @p s. Returns 0 and fills @p out (free with htkv_hint_free()),
 * HTKV_ENOTFOUND (no hint), HTKV_ECORRUPT (a damaged or mismatched hint), -ENOMEM or -errno (the
 * hint cannot be opened or read). Nothing is allocated on failure.
 */
int htkv_hint_load(const struct seg *s, struct hint *out);

/* Entry @p i of a loaded hint. */
void htkv_hint_get(const struct hint *h, uint64_t i, struct hint_ent *out);

void htkv_hint_free(struct hint *h);

/**
 * Check the hint file at @p path with every check recovery applies before it uses a hint
 * (htkv_hint_load(): header magic, checksum, format, shard and segment, size against the entry
 * count, trailer checksum of the entries, tail within the segment), for segment @p seg_id of
 * shard @p shard whose file is @p seg_file_bytes long.
 * @param[in]  path     Hint file (DIR/shard-SSS/NNNNNNNNNNNN.hint); borrowed; never written.
 * @param[out] bad_off  On HTKV_ECORRUPT, the offset of the field that failed; else 0; may be NULL.
 * @return 0; HTKV_ENOTFOUND (no such file: hints are optional); HTKV_ECORRUPT (recovery would
 *         ignore the hint and scan the segment; htkv_last_error(): "PATH: REASON at offset N");
 *         -ENOMEM; -EINVAL; -errno.
 * @context Any thread. Blocks on file I/O.
 */
int htkv_hint_check_file(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_file_bytes,
                         uint64_t *bad_off);

#endif
