/*
 * snapfile.h - the snapshot file format: the one home of its magic numbers, layout and header
 * codec (the writer and restore are in snapshot.c; htkvctl and verify read headers too).
 *
 * Layer: formats. Depends on internal.h only; knows no store type.
 *
 * File layout (little-endian):
 *
 *   header (64 B): magic "HTKVSNP1", format u32, zero u32, version u64, count u64,
 *                  data_bytes u64, zero[20], crc32c u32 of bytes 0..59
 *   count entries, in strictly increasing unsigned byte order of their keys:
 *                  key_len u32, val_len u32, version u64, key, value   (no padding)
 *   trailer (16 B): magic "HTKVSEND", crc32c u32 of the data_bytes entry bytes, zero u32
 *
 * Invariants
 *   1. A file is at least SNAP_HDR_BYTES + SNAP_TRAILER_BYTES long, and
 *      data_bytes == size - SNAP_HDR_BYTES - SNAP_TRAILER_BYTES.
 *   2. htkv_snapfile_hdr_decode() reads only the SNAP_HDR_BYTES it is given and checks nothing:
 *      the caller checks the magic (SNAP_MAGIC) and htkv_snapfile_hdr_crc_ok() as it needs.
 */
#ifndef HTKV_ENGINE_SNAPFILE_H
#define HTKV_ENGINE_SNAPFILE_H

#include "engine/internal.h"

#define SNAP_MAGIC "HTKVSNP1"
#define SNAP_END_MAGIC "HTKVSEND"
#define SNAP_HDR_BYTES 64u
#define SNAP_ENT_HDR 16u
#define SNAP_TRAILER_BYTES 16u

/* Header field offsets. */
#define SNAP_HDR_FORMAT 8u
#define SNAP_HDR_VERSION 16u
#define SNAP_HDR_COUNT 24u
#define SNAP_HDR_DATA_BYTES 32u
#define SNAP_HDR_CRC 60u /* crc32c of bytes [0, SNAP_HDR_CRC) */

/* Trailer field offsets (from the trailer's start). */
#define SNAP_TRAILER_CRC 8u
#define SNAP_TRAILER_ZERO 12u

/* The fields of a snapshot header. */
struct snap_hdr {
    uint32_t format;
    uint64_t version;    /* the highest version the snapshot covers */
    uint64_t count;      /* entries */
    uint64_t data_bytes; /* bytes of the entries */
};

/* Encode the SNAP_HDR_BYTES header of a snapshot of this engine's format into @p h. */
void htkv_snapfile_hdr_encode(unsigned char *h, uint64_t version, uint64_t count,
                              uint64_t data_bytes);

/* Decode the header fields of @p h (SNAP_HDR_BYTES bytes) without checking them. */
void htkv_snapfile_hdr_decode(const unsigned char *h, struct snap_hdr *out);

/* Does the header checksum of @p h (SNAP_HDR_BYTES bytes) match? */
bool htkv_snapfile_hdr_crc_ok(const unsigned char *h);

/* Encode the SNAP_TRAILER_BYTES trailer with the entries' checksum @p crc into @p t. */
void htkv_snapfile_trailer_encode(unsigned char *t, uint32_t crc);

#endif
