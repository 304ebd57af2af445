/*
 * snapfile.c - encode and decode snapshot headers and trailers (format in snapfile.h).
 *
 * Layer: formats. Calls the base layer only (internal.h, crc32c).
 *
 * Invariants
 *   1. htkv_snapfile_hdr_decode() returns the fields htkv_snapfile_hdr_encode() wrote, and a
 *      header it wrote passes htkv_snapfile_hdr_crc_ok().
 */
#include "engine/snapfile.h"

#include "engine/crc32c.h"

HTKV_STATIC_ASSERT(SNAP_HDR_DATA_BYTES + 8 <= SNAP_HDR_CRC, "header fields precede its CRC");
HTKV_STATIC_ASSERT(SNAP_HDR_CRC + 4 == SNAP_HDR_BYTES, "the CRC ends the header");
HTKV_STATIC_ASSERT(SNAP_TRAILER_ZERO + 4 == SNAP_TRAILER_BYTES, "trailer is 16 bytes");

void
htkv_snapfile_hdr_encode(unsigned char *h, uint64_t version, uint64_t count, uint64_t data_bytes)
{
    memset(h, 0, SNAP_HDR_BYTES);
    memcpy(h, SNAP_MAGIC, 8);
    htkv_store32(h + SNAP_HDR_FORMAT, HTKV_FORMAT_VERSION);
    htkv_store64(h + SNAP_HDR_VERSION, version);
    htkv_store64(h + SNAP_HDR_COUNT, count);
    htkv_store64(h + SNAP_HDR_DATA_BYTES, data_bytes);
    htkv_store32(h + SNAP_HDR_CRC, htkv_crc32c(0, h, SNAP_HDR_CRC));
}

void
htkv_snapfile_hdr_decode(const unsigned char *h, struct snap_hdr *out)
{
    out->format = htkv_load32(h + SNAP_HDR_FORMAT);
    out->version = htkv_load64(h + SNAP_HDR_VERSION);
    out->count = htkv_load64(h + SNAP_HDR_COUNT);
    out->data_bytes = htkv_load64(h + SNAP_HDR_DATA_BYTES);
}

bool
htkv_snapfile_hdr_crc_ok(const unsigned char *h)
{
    return htkv_load32(h + SNAP_HDR_CRC) == htkv_crc32c(0, h, SNAP_HDR_CRC);
}

void
htkv_snapfile_trailer_encode(unsigned char *t, uint32_t crc)
{
    memset(t, 0, SNAP_TRAILER_BYTES);
    memcpy(t, SNAP_END_MAGIC, 8);
    htkv_store32(t + SNAP_TRAILER_CRC, crc);
}
