/*
 * fuse.h - binary fuse filters: a fixed set of 64-bit hashes in about 9 bits an item (formats
 * layer; prefix htkv_fuse_ / fuse_).
 *
 * A filter answers "maybe" for every hash it was built from and for about 1 in 256 others (an
 * 8-bit fingerprint), in three independent byte reads. It replaces a Bloom filter where the set
 * never changes after it is written (a sealed segment's key index): at 9 bits an item it gives
 * about a third of the false positives a blocked Bloom filter gives at 10.
 *
 * Shape. The fingerprints array has seg_count + 2 segments of seg_len bytes (seg_len a power of
 * two). An item's hash, mixed with the filter's seed, picks a slot in each of three consecutive
 * segments; the item is "maybe" when the xor of the three bytes equals its fingerprint. Building
 * finds, for the items in some order, a slot of each item that no later item uses (peeling);
 * filling the slots in the reverse order then satisfies every item. A seed for which peeling
 * fails (two items with the same slots, or a core of items that share slots) is replaced by the
 * next one; after a few, the array grows by a segment.
 *
 * Invariants
 *   1. Every hash the filter was built from is contained (no false negatives).
 *   2. The shape read from a file is checked (htkv_fuse_shape_ok()) before any lookup: a slot is
 *      always inside the array.
 */
#ifndef HTKV_ENGINE_FUSE_H
#define HTKV_ENGINE_FUSE_H

#include "engine/internal.h"

/* The largest segment: beyond it, more segments (locality matters less than a good fit). */
#define FUSE_SEG_LEN_MAX (1u << 18)

struct fuse {
    const unsigned char *fp; /* (seg_count + 2) * seg_len fingerprints */
    uint64_t seed;
    uint32_t seg_len; /* a power of two, 4 .. FUSE_SEG_LEN_MAX */
    uint32_t seg_count;
};

/* The bytes of @p f's fingerprints array. */
static inline uint64_t
htkv_fuse_bytes(const struct fuse *f)
{
    return ((uint64_t)f->seg_count + 2) * f->seg_len;
}

/*
 * Build the filter of the @p n hashes at @p hashes (sorted and deduplicated in place: the filter
 * holds a set). 0 with *@p out set and out->fp pointing to *@p array, allocated with
 * htkv_mem_alloc() for the caller to free; -ENOMEM; -EOVERFLOW (no shape fits: more than
 * 2^32 slots, or none of 64 seeds over 16 growing shapes peeled, never seen). Deterministic: the
 * same set gives the same bytes. Time and scratch memory are linear: about 20 bytes an item and
 * 0.2 s a million items on this machine (the sort, then random reads and writes).
 */
int htkv_fuse_build(uint64_t *hashes, size_t n, struct fuse *out, unsigned char **array);

/* Whether a filter of @p bytes fingerprints may have segments of @p seg_len bytes. */
bool htkv_fuse_shape_ok(uint32_t seg_len, uint64_t bytes);

/* False when @p hash is surely not one the filter was built from. */
bool htkv_fuse_contains(const struct fuse *f, uint64_t hash);

#endif /* HTKV_ENGINE_FUSE_H */
