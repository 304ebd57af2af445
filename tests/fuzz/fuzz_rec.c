/*
 * fuzz_rec.c - libFuzzer target for the record codec (engine/rec.h): htkv_rec_check() and
 * htkv_rec_hdr_decode() on arbitrary bytes at an arbitrary segment position.
 *
 * Input:
 *   off  size  field
 *     0     8  seg_id   (little-endian; any value)
 *     8     8  off      (any value; unaligned ones are checked but not re-encoded)
 *    16     4  val_max  (any value)
 *    20     1  mode     bit 0: the harness writes the right CRC into the record first, so that
 *                       the fuzzer spends its time past the checksum (framing, lengths, types)
 *    21     -  record bytes; avail = their count
 *
 * Design. The record bytes are copied into a heap buffer of exactly avail bytes, so that
 * AddressSanitizer reports any read past avail (rec.c invariant 2). The check is compared with a
 * model written from the layout in rec.h alone (field by field, and the CRC recomputed here), in
 * both directions: the decoder accepts exactly what the model accepts. An accepted record at an
 * aligned offset is re-encoded with htkv_rec_encode() into an exactly sized buffer and must give
 * back the same bytes with zero padding (rec.c invariant 1), and it must be accepted with exactly
 * its own length available and rejected with one byte less.
 *
 * Invariants (checked for every input)
 *   1. htkv_rec_check() returns 0 or HTKV_ECORRUPT, and 0 exactly when the model accepts.
 *   2. On 0, *out equals htkv_rec_hdr_decode() of the same bytes.
 *   3. encode(check(bytes)) == bytes for every accepted record at an 8-aligned offset.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/crc32c.h"
#include "engine/rec.h"
#include "tests/fuzz/fuzz_util.h"

#define IN_HDR_BYTES 21u
#define MODE_FIX_CRC 0x01u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The record CRC as rec.h defines it: over seg_id, off, header bytes 4..23, key and value. */
static uint32_t
model_crc(const unsigned char *p, uint64_t seg_id, uint64_t off, uint64_t body_bytes)
{
    unsigned char pos[16];
    htkv_store64(pos, seg_id);
    htkv_store64(pos + 8, off);
    uint32_t c = htkv_crc32c(0, pos, sizeof(pos));
    return htkv_crc32c(c, p + 4, REC_HDR_BYTES - 4 + body_bytes);
}

/* Would rec.h's layout accept these bytes? Written from the format comment, not from rec.c. */
static bool
model_accepts(const unsigned char *p, uint64_t avail, uint64_t seg_id, uint64_t off,
              uint32_t val_max)
{
    if (avail < REC_HDR_BYTES) {
        return false;
    }
    uint32_t key_len = (uint32_t)fuzz_load_le(p + 4, 4);
    uint32_t val_len = (uint32_t)fuzz_load_le(p + 8, 4);
    uint8_t type = p[12], flags = p[13];
    uint16_t reserved = (uint16_t)fuzz_load_le(p + 14, 2);
    uint64_t version = fuzz_load_le(p + 16, 8);
    if (reserved != 0 || version == 0 || version > REC_VERSION_MAX || (flags & ~REC_F_BATCH) != 0) {
        return false;
    }
    bool op = type == REC_SET || type == REC_DEL;
    if (op && (key_len == 0 || key_len > HTKV_KEY_MAX)) {
        return false;
    }
    if (type == REC_SET && val_len > val_max) {
        return false;
    }
    if (type == REC_DEL && val_len != 0) {
        return false;
    }
    uint32_t payload = type == REC_BATCH_BEGIN    ? REC_BEGIN_PAYLOAD
                       : type == REC_BATCH_COMMIT ? REC_COMMIT_PAYLOAD
                       : type == REC_SEAL         ? REC_SEAL_PAYLOAD
                                                  : 0;
    if (!op && payload == 0) {
        return false; /* unknown type */
    }
    if (!op && (key_len != 0 || val_len != payload || flags != 0)) {
        return false; /* control records: no key, fixed payload, never flagged */
    }
    uint64_t body = (uint64_t)key_len + val_len;
    if (REC_HDR_BYTES + body > avail) {
        return false;
    }
    return (uint32_t)fuzz_load_le(p, 4) == model_crc(p, seg_id, off, body);
}

/* Write the CRC the model expects into @p p when the lengths it names fit in @p avail. */
static void
fix_crc(unsigned char *p, uint64_t avail, uint64_t seg_id, uint64_t off)
{
    if (avail < REC_HDR_BYTES) {
        return;
    }
    uint64_t body = fuzz_load_le(p + 4, 4) + fuzz_load_le(p + 8, 4);
    if (REC_HDR_BYTES + body <= avail) {
        htkv_store32(p, model_crc(p, seg_id, off, body));
    }
}

static void
check_same_hdr(const struct rec_hdr *a, const struct rec_hdr *b)
{
    FUZZ_CHECK(a->crc == b->crc);
    FUZZ_CHECK(a->key_len == b->key_len);
    FUZZ_CHECK(a->val_len == b->val_len);
    FUZZ_CHECK(a->type == b->type);
    FUZZ_CHECK(a->flags == b->flags);
    FUZZ_CHECK(a->reserved == b->reserved);
    FUZZ_CHECK(a->version == b->version);
}

/* An accepted record: re-encode it and check the exact-length boundaries. */
static void
check_accepted(const unsigned char *p, uint64_t seg_id, uint64_t off, uint32_t val_max,
               const struct rec_hdr *h)
{
    uint64_t raw = REC_HDR_BYTES + (uint64_t)h->key_len + h->val_len;
    struct rec_hdr again;
    /* Exactly raw bytes available: still accepted; one less: rejected (own buffers for ASan). */
    unsigned char *exact = malloc(raw);
    FUZZ_CHECK(exact != NULL);
    memcpy(exact, p, raw);
    FUZZ_CHECK(htkv_rec_check(exact, raw, seg_id, off, val_max, &again) == 0);
    check_same_hdr(h, &again);
    FUZZ_CHECK(htkv_rec_check(exact, raw - 1, seg_id, off, val_max, &again) == HTKV_ECORRUPT);
    free(exact);
    if (off % REC_ALIGN != 0) {
        return; /* the encoder only writes at aligned offsets (it asserts so) */
    }
    uint64_t size = htkv_rec_size(h->key_len, h->val_len);
    FUZZ_CHECK(size >= raw);
    FUZZ_CHECK(size - raw < REC_ALIGN);
    unsigned char *enc = malloc(size);
    FUZZ_CHECK(enc != NULL);
    const unsigned char *key = p + REC_HDR_BYTES;
    const unsigned char *val = key + h->key_len;
    uint64_t w = htkv_rec_encode(enc, seg_id, off, h->type, h->flags, h->version, key, h->key_len,
                                 val, h->val_len);
    FUZZ_CHECK(w == size);
    FUZZ_CHECK(memcmp(enc, p, raw) == 0);
    for (uint64_t i = raw; i < size; i++) {
        FUZZ_CHECK(enc[i] == 0);
    }
    FUZZ_CHECK(htkv_rec_check(enc, size, seg_id, off, val_max, &again) == 0);
    check_same_hdr(h, &again);
    free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < IN_HDR_BYTES) {
        return 0;
    }
    uint64_t seg_id = fuzz_load_le(data, 8);
    uint64_t off = fuzz_load_le(data + 8, 8);
    uint32_t val_max = (uint32_t)fuzz_load_le(data + 16, 4);
    uint8_t mode = data[20];
    uint64_t avail = size - IN_HDR_BYTES;
    /* Exactly avail bytes (malloc(0) may return NULL: keep one byte, never read). */
    unsigned char *buf = malloc(avail > 0 ? avail : 1);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data + IN_HDR_BYTES, avail);
    if ((mode & MODE_FIX_CRC) != 0) {
        fix_crc(buf, avail, seg_id, off);
    }

    struct rec_hdr h;
    int rc = htkv_rec_check(buf, avail, seg_id, off, val_max, &h);
    FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT);
    FUZZ_CHECK((rc == 0) == model_accepts(buf, avail, seg_id, off, val_max));
    if (avail >= REC_HDR_BYTES) {
        struct rec_hdr d;
        htkv_rec_hdr_decode(buf, &d);
        if (rc == 0) {
            check_same_hdr(&h, &d);
        }
    }
    if (rc == 0) {
        check_accepted(buf, seg_id, off, val_max, &h);
    }
    free(buf);
    return 0;
}
