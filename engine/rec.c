/*
 * rec.c - encode and check records, and the one walk over a segment's records (layout and the
 * walk's contract in rec.h).
 *
 * Layer: formats. Calls only the base layer (internal.h, crc32c); knows no store, shard or
 * segment type: a walk is given bytes, a segment id and a value limit.
 *
 * Invariants
 *   1. htkv_rec_check() accepts exactly what htkv_rec_encode() produces for the same position.
 *   2. htkv_rec_check() reads only inside [p, p + avail) whatever the bytes say: every length is
 *      bounded before it is used.
 *   3. The walk reads only inside [map + from, map + end): each step checks before it advances,
 *      and a failed step never advances (rec.h, struct rec_walk).
 */
#include "engine/rec.h"

#include "engine/crc32c.h"

HTKV_STATIC_ASSERT(sizeof(struct rec_hdr) == REC_HDR_BYTES, "record header is 24 bytes");
HTKV_STATIC_ASSERT((REC_ALIGN & (REC_ALIGN - 1)) == 0, "record alignment is a power of two");

/* The CRC of the record at @p rec: its position, then the rest of its header, its key and its
 * value (contiguous, @p body_bytes after the CRC field) in one run. */
static uint32_t
rec_crc(const unsigned char *rec, uint64_t seg_id, uint64_t off, uint64_t body_bytes)
{
    unsigned char pos[16];
    htkv_store64(pos, seg_id);
    htkv_store64(pos + 8, off);
    uint32_t c = htkv_crc32c(0, pos, sizeof(pos));
    return htkv_crc32c(c, rec + 4, (size_t)body_bytes);
}

uint64_t
htkv_rec_encode(void *dst, uint64_t seg_id, uint64_t off, uint8_t type, uint8_t flags,
                uint64_t version, const void *key, uint32_t key_len, const void *val,
                uint32_t val_len)
{
    HTKV_ASSERT(type >= REC_SET && type <= REC_SEAL);
    HTKV_ASSERT(version >= 1 && version <= REC_VERSION_MAX);
    HTKV_ASSERT(off % REC_ALIGN == 0);
    unsigned char *d = dst;
    htkv_store32(d + 4, key_len);
    htkv_store32(d + 8, val_len);
    d[12] = type;
    d[13] = flags;
    htkv_store16(d + 14, 0);
    htkv_store64(d + 16, version);
    if (key_len > 0) {
        memcpy(d + REC_HDR_BYTES, key, key_len);
    }
    if (val_len > 0) {
        memcpy(d + REC_HDR_BYTES + key_len, val, val_len);
    }
    uint64_t raw = REC_HDR_BYTES + (uint64_t)key_len + val_len;
    uint64_t total = htkv_align_up(raw, REC_ALIGN);
    memset(d + raw, 0, total - raw);
    htkv_store32(d, rec_crc(d, seg_id, off, raw - 4));
    return total;
}

void
htkv_rec_hdr_decode(const void *p, struct rec_hdr *out)
{
    const unsigned char *s = p;
    out->crc = htkv_load32(s);
    out->key_len = htkv_load32(s + 4);
    out->val_len = htkv_load32(s + 8);
    out->type = s[12];
    out->flags = s[13];
    out->reserved = htkv_load16(s + 14);
    out->version = htkv_load64(s + 16);
}

static bool
rec_shape_ok(const struct rec_hdr *h, uint32_t val_max)
{
    if (h->reserved != 0 || h->version == 0 || h->version > REC_VERSION_MAX ||
        (h->flags & ~REC_F_BATCH) != 0) {
        return false;
    }
    switch (h->type) {
    case REC_SET:
        return h->key_len >= 1 && h->key_len <= HTKV_KEY_MAX && h->val_len <= val_max;
    case REC_DEL:
        return h->key_len >= 1 && h->key_len <= HTKV_KEY_MAX && h->val_len == 0;
    case REC_BATCH_BEGIN:
        return h->key_len == 0 && h->val_len == REC_BEGIN_PAYLOAD && h->flags == 0;
    case REC_BATCH_COMMIT:
        return h->key_len == 0 && h->val_len == REC_COMMIT_PAYLOAD && h->flags == 0;
    case REC_SEAL:
        return h->key_len == 0 && h->val_len == REC_SEAL_PAYLOAD && h->flags == 0;
    default:
        return false;
    }
}

int
htkv_rec_verify_crc(const void *p, uint64_t seg_id, uint64_t off, const struct rec_hdr *h)
{
    const unsigned char *s = p;
    uint32_t c = rec_crc(s, seg_id, off, REC_HDR_BYTES - 4 + (uint64_t)h->key_len + h->val_len);
    return c == h->crc ? 0 : HTKV_ECORRUPT;
}

int
htkv_rec_check(const void *p, uint64_t avail, uint64_t seg_id, uint64_t off, uint32_t val_max,
               struct rec_hdr *out)
{
    if (avail < REC_HDR_BYTES) {
        return HTKV_ECORRUPT;
    }
    htkv_rec_hdr_decode(p, out);
    if (!rec_shape_ok(out, val_max)) {
        return HTKV_ECORRUPT;
    }
    if (REC_HDR_BYTES + (uint64_t)out->key_len + out->val_len > avail) {
        return HTKV_ECORRUPT;
    }
    return htkv_rec_verify_crc(p, seg_id, off, out);
}

static bool
all_zero(const unsigned char *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

enum rec_walk_res
htkv_rec_walk_failed(const struct rec_walk *w)
{
    HTKV_ASSERT(w->at == w->off && w->at < w->end);
    uint64_t avail = w->end - w->at;
    return all_zero(w->map + w->at, avail < REC_HDR_BYTES ? avail : REC_HDR_BYTES) ? REC_WALK_ZERO
                                                                                   : REC_WALK_BAD;
}

bool
htkv_rec_walk_seek(struct rec_walk *w)
{
    struct rec_hdr h;
    for (uint64_t off = htkv_align_up(w->off, REC_ALIGN); off + REC_HDR_BYTES <= w->end;
         off += REC_ALIGN) {
        if (htkv_load64(w->map + off + 8) == 0 && htkv_load64(w->map + off + 16) == 0) {
            continue; /* lengths, type and version zero: not a record */
        }
        if (htkv_rec_check(w->map + off, w->end - off, w->seg_id, off, w->val_max, &h) == 0) {
            w->off = off;
            return true;
        }
    }
    return false;
}

uint64_t
htkv_rec_walk_resync(struct rec_walk *w)
{
    HTKV_ASSERT(w->off == w->at); /* only after a failed step */
    w->off = w->at + REC_ALIGN;
    if (htkv_rec_walk_seek(w)) {
        HTKV_ASSERT(w->off > w->at);
        return w->off;
    }
    w->off = w->at;
    return 0;
}

enum rec_bad
htkv_rec_walk_why(const struct rec_walk *w, struct rec_hdr *hdr)
{
    HTKV_ASSERT(w->at < w->end);
    uint64_t avail = w->end - w->at;
    memset(hdr, 0, sizeof(*hdr));
    if (avail < REC_HDR_BYTES) {
        return REC_BAD_SHORT;
    }
    htkv_rec_hdr_decode(w->map + w->at, hdr);
    if (REC_HDR_BYTES + (uint64_t)hdr->key_len + hdr->val_len > avail) {
        return REC_BAD_LENGTHS;
    }
    if (htkv_rec_verify_crc(w->map + w->at, w->seg_id, w->at, hdr) != 0) {
        return REC_BAD_CRC;
    }
    return REC_BAD_HEADER;
}
