/*
 * rec.h - the record codec: how one write is framed in a segment.
 *
 * Record layout (little-endian, 8-byte aligned in the segment, zero padding after):
 *
 *   off  size  field
 *     0     4  crc32c   over (seg_id u64, rec_off u64, bytes 4..23 of this header, key, value)
 *     4     4  key_len  1..HTKV_KEY_MAX for SET/DEL, 0 for control records
 *     8     4  val_len  value bytes (SET), 0 (DEL), payload bytes (control records)
 *    12     1  type     enum rec_type
 *    13     1  flags    REC_F_BATCH for operations inside a batch
 *    14     2  reserved 0
 *    16     8  version  1..REC_VERSION_MAX (2^62)
 *    24        key, then value
 *
 * Because the CRC covers the segment id and the offset, a record copied to another place (a
 * stale block, a misdirected write, a record of another segment) fails its check.
 *
 * Batch framing: BEGIN {op_count u32, part_count u32, zero u64}, then op_count operations with
 * REC_F_BATCH and the batch's version, then COMMIT {op_count u32, part_count u32}. part_count is
 * the number of shards holding a part of the batch; recovery applies a batch only when every part
 * is committed. A sealed segment ends with SEAL {record_count u64, data_end u64}.
 */
#ifndef HTKV_ENGINE_REC_H
#define HTKV_ENGINE_REC_H

#include "engine/internal.h"

#define REC_HDR_BYTES 24u
#define REC_ALIGN 8u
/* Largest version any input may carry (records, hint files, snapshots): 2^62. The store's
 * counter continues from the largest version it reads, so a damaged or crafted file claiming
 * a version near 2^64 must be refused, not let it wrap around to 0. Writing 2^62 versions at
 * ten million a second takes over 14,000 years. */
#define REC_VERSION_MAX (UINT64_C(1) << 62)
#define REC_BEGIN_PAYLOAD 16u
#define REC_COMMIT_PAYLOAD 8u
#define REC_SEAL_PAYLOAD 16u

enum rec_type {
    REC_SET = 1,
    REC_DEL = 2,
    REC_BATCH_BEGIN = 3,
    REC_BATCH_COMMIT = 4,
    REC_SEAL = 5,
};

#define REC_F_BATCH 0x01u

struct rec_hdr {
    uint32_t crc;
    uint32_t key_len;
    uint32_t val_len;
    uint8_t type;
    uint8_t flags;
    uint16_t reserved;
    uint64_t version;
};

/* Bytes a record with these lengths occupies in a segment, padding included. */
static inline uint64_t
htkv_rec_size(uint64_t key_len, uint64_t val_len)
{
    return htkv_align_up(REC_HDR_BYTES + key_len + val_len, REC_ALIGN);
}

/*
 * Encode one record at @p dst (which must have htkv_rec_size() bytes) for position
 * (@p seg_id, @p off). The value may be given in two pieces (@p v1, @p v2) so that control
 * payloads need no staging buffer. Returns the bytes written, padding included.
 */
uint64_t htkv_rec_encode(void *dst, uint64_t seg_id, uint64_t off, uint8_t type, uint8_t flags,
                         uint64_t version, const void *key, uint32_t key_len, const void *val,
                         uint32_t val_len);

/*
 * Check the record at @p p (with @p avail readable bytes) for position (@p seg_id, @p off):
 * framing, lengths against @p val_max, and the CRC. Fills @p out on success.
 * Returns 0 or HTKV_ECORRUPT. Never reads past @p avail.
 */
int htkv_rec_check(const void *p, uint64_t avail, uint64_t seg_id, uint64_t off, uint32_t val_max,
                   struct rec_hdr *out);

/*
 * First 8-aligned offset in [@p from, @p end) of @p map where a record of segment @p seg_id
 * checks (htkv_rec_check(), values up to @p val_max), or 0 when there is none. Offsets whose
 * lengths, type and version are all zero are skipped without a check. Used to resync after
 * damage and to tell whether a file holds anything a store could read.
 */
uint64_t htkv_rec_find(const unsigned char *map, uint64_t from, uint64_t end, uint64_t seg_id,
                       uint32_t val_max);

/* Decode the header fields only (no validation). */
void htkv_rec_hdr_decode(const void *p, struct rec_hdr *out);

/* Verify only the CRC of a record whose header was already validated. 0 or HTKV_ECORRUPT. */
int htkv_rec_verify_crc(const void *p, uint64_t seg_id, uint64_t off, const struct rec_hdr *h);

#endif
