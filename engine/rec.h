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
 * The one walk over a segment's records: every reader of records in order (recovery, verify,
 * compaction, hint building, the change feed, the unlisted-file check) steps with it, so that
 * "the record at off checks, the next one is at off + its size" is written once.
 *
 *   struct rec_walk w;
 *   htkv_rec_walk_init(&w, map, seg_id, from, end, val_max);
 *   while ((r = htkv_rec_walk_next(&w, &h)) != REC_WALK_END) { ... }
 *
 * Invariants
 *   1. Only bytes in [map + from, map + end) are read, whatever they say.
 *   2. After REC_WALK_RECORD, at is the record's offset and off = at + htkv_rec_size() of it
 *      (padding included: off may pass end when the file ends inside the padding).
 *   3. After REC_WALK_ZERO or REC_WALK_BAD, off == at: the walk stays on the bad bytes until the
 *      caller resyncs (htkv_rec_walk_resync()) or stops.
 *   4. at and off stay 8-aligned when from is.
 */
struct rec_walk {
    const unsigned char *map; /* the segment's bytes (a mapping or a buffer) */
    uint64_t seg_id;          /* the id each record's CRC covers */
    uint64_t end;             /* first byte not to read */
    uint64_t off;             /* where the next step reads */
    uint64_t at;              /* offset of the record (or bad bytes) the last step returned */
    uint32_t val_max;         /* largest value a SET may carry */
};

/* What one step of the walk found at w->at. */
enum rec_walk_res {
    REC_WALK_END = 0, /* off >= end: nothing left to read (at unchanged) */
    REC_WALK_RECORD,  /* a record that checks (htkv_rec_check()); *hdr filled, SEAL included */
    REC_WALK_ZERO,    /* fails its check, and its header bytes (as many as remain, up to 24)
                       * are all zero: where written data ends (a block lost with power) */
    REC_WALK_BAD,     /* fails its check and is not zero: a torn or damaged record
                       * (htkv_rec_walk_why() says how) */
};

/* Why the bytes at w->at failed their check (REC_WALK_ZERO or REC_WALK_BAD), in the order a
 * reader is told: too short for a header, lengths past the end, CRC, then the header's shape. */
enum rec_bad {
    REC_BAD_SHORT = 1, /* fewer than REC_HDR_BYTES bytes before end */
    REC_BAD_LENGTHS,   /* key and value lengths run past end */
    REC_BAD_CRC,       /* the CRC does not match */
    REC_BAD_HEADER,    /* type, flags, reserved, version or lengths no record can have */
};

static inline void
htkv_rec_walk_init(struct rec_walk *w, const unsigned char *map, uint64_t seg_id, uint64_t from,
                   uint64_t end, uint32_t val_max)
{
    *w = (struct rec_walk){
        .map = map, .seg_id = seg_id, .end = end, .off = from, .at = from, .val_max = val_max
    };
}

/* Cold half of htkv_rec_walk_next(): classify bytes that failed their check. */
enum rec_walk_res htkv_rec_walk_failed(const struct rec_walk *w);

/* One step: see enum rec_walk_res. Costs one htkv_rec_check() per record. */
static inline enum rec_walk_res
htkv_rec_walk_next(struct rec_walk *w, struct rec_hdr *hdr)
{
    if (w->off >= w->end) {
        return REC_WALK_END;
    }
    w->at = w->off;
    if (HTKV_UNLIKELY(htkv_rec_check(w->map + w->at, w->end - w->at, w->seg_id, w->at, w->val_max,
                                     hdr) != 0)) {
        return htkv_rec_walk_failed(w);
    }
    w->off = w->at + htkv_rec_size(hdr->key_len, hdr->val_len);
    return REC_WALK_RECORD;
}

/*
 * After a failed step: move to the first 8-aligned offset after w->at where a record checks
 * (htkv_rec_walk_seek() from w->at + REC_ALIGN). Returns that offset (now w->off), or 0 when none
 * follows (w->off stays at w->at).
 */
uint64_t htkv_rec_walk_resync(struct rec_walk *w);

/*
 * Scan 8-aligned offsets from w->off for the first where a record checks; offsets whose
 * lengths, type and version are all zero are skipped without a check. True with w->off there,
 * or false (w->off unchanged) when none does before end.
 */
bool htkv_rec_walk_seek(struct rec_walk *w);

/* Why the bytes at w->at failed their check (only after REC_WALK_ZERO or REC_WALK_BAD); fills
 * @p hdr with the decoded header when one fits before end. */
enum rec_bad htkv_rec_walk_why(const struct rec_walk *w, struct rec_hdr *hdr);

/* Decode the header fields only (no validation). */
void htkv_rec_hdr_decode(const void *p, struct rec_hdr *out);

/* Verify only the CRC of a record whose header was already validated. 0 or HTKV_ECORRUPT. */
int htkv_rec_verify_crc(const void *p, uint64_t seg_id, uint64_t off, const struct rec_hdr *h);

#endif
