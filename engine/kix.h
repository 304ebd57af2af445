/*
 * kix.h - key index files: a sealed segment's keys, sorted, in pages, with in-memory fences and a
 * filter, so that a key whose index entry is not in RAM (a cold key) is found with one page
 * read and a miss costs almost never a read (formats layer; prefix htkv_kix_ / kix_).
 *
 * DIR/shard-SSS/NNNNNNNNNNNN.kix sits beside its segment. It lists, for each key with a record in
 * the segment, that key's newest record there (a value or a tombstone), sorted by key (unsigned
 * bytes, a proper prefix first). Layout, little-endian:
 *
 *   header (128 B): magic "HTKVKIX1", format u32 (2), shard u32, seg_id u64, keys u64, pages
 *       u32, blocks u32, seg_tail u64, max_version u64, fences_bytes u32, fences_crc u32,
 *       filter_bytes u32, filter_seg_len u32, filter_crc u32, filter_seed u64, pages_crc u32
 *       (of every page block; 0 in files written before it was added: not checked on open),
 *       zero[36], crc32c u32 of bytes 0..123 (which so names the file: closing.h)
 *   fences (fences_bytes): per page, its first block u32, a separator's length u32 and bytes
 *   filter (filter_bytes): a binary fuse filter of the keys' 64-bit hashes (fuse.h); format 1
 *       had a blocked Bloom filter here and is read as damaged (the segment is indexed again)
 *   zeros up to the next multiple of 4 KiB: pages_off
 *   pages (blocks x 4 KiB): each page one or more 4 KiB blocks (more only for a key too long for
 *       one), starting with crc32c u32 of bytes [4, 16 + used), count u32, used u32, zero u32,
 *       then count entries: key_len u32, type u8, flags u8, zero u16, val_len u32, off u32,
 *       version u64, then the key's bytes
 *
 * A page's separator S lies between the last key of the page before and the page's first key
 * (last(p - 1) < S <= first(p)): the shortest prefix of first(p) that is above last(p - 1), and the
 * empty key for page 0. So a key belongs to the last page whose separator is not above it, and the
 * fences cost a few bytes a page. With about 9 bits a key in the filter, a key costs about 1.2 B
 * of RAM.
 *
 * Trust. Every byte is input: htkv_kix_open() checks the header, the fences (separators strictly
 * increasing, first blocks strictly increasing and within the file) and the filter; a page is
 * checked whole (its CRC, entries within it, keys strictly increasing, between its separator and
 * the next, records within the segment's described bytes) the first time it is read in an open,
 * before any of its entries is used; later reads check its size and CRC again (the file may
 * change under the mapping) but not the walk its bytes passed. A file that fails is HTKV_ECORRUPT:
 * the caller scans the segment instead. Writing goes through NNNN.kix.tmp, fdatasync and rename,
 * and only for durable segments.
 */
#ifndef HTKV_ENGINE_KIX_H
#define HTKV_ENGINE_KIX_H

#include <stdatomic.h>

#include "engine/fuse.h"
#include "engine/internal.h"

#define KIX_MAGIC "HTKVKIX1"
#define KIX_FORMAT 2u
#define KIX_HDR_BYTES 128u
#define KIX_BLOCK 4096u
#define KIX_PAGE_HDR 16u
#define KIX_ENT_HDR 24u

/* One key's entry, as the writer takes it and a reader returns it. */
struct kix_ent {
    const unsigned char *key; /* writer: borrowed; reader: points into the file's mapping */
    uint32_t key_len;
    uint8_t type; /* REC_SET or REC_DEL */
    uint8_t flags;
    uint32_t val_len;
    uint32_t off; /* the record's offset in the segment */
    uint64_t version;
    uint64_t hash; /* writer only: the key's hash with the store's seed (for the filter) */
    uint64_t abbr; /* writer only, set by it: the key's first 8 bytes (htkv_key_abbrev()) */
};

/* What the file describes, as the writer is told it and htkv_kix_open() reads it. */
struct kix_desc {
    uint32_t shard;
    uint64_t seg_id;
    uint64_t seg_tail;    /* the segment's records described end at or before it */
    uint64_t max_version; /* highest version among them (the writer computes it) */
};

/* An open key index: header, fences and filter in memory (checked), pages mapped read-only. */
struct kix {
    struct kix_desc d;
    uint32_t hdr_crc; /* the header's CRC: which file this is (closing.h) */
    uint64_t keys;
    uint32_t pages, blocks;
    unsigned char *meta; /* fences then filter, as read (htkv_mem_alloc) */
    uint32_t *fence_at;  /* pages offsets into meta of each page's fence */
    struct fuse filter;  /* its array inside meta */
    /* Per page: 1 once it passed its whole check in this open (htkv_kix_page()). */
    _Atomic uint8_t *page_ok;
    const unsigned char *map; /* the whole file, read-only; no descriptor is kept */
    uint64_t map_bytes;
    uint64_t pages_off;
};

/* A page read and checked (htkv_kix_page()): entries are walked with htkv_kix_page_next(). */
struct kix_page {
    const unsigned char *p;
    uint32_t count;
    uint32_t used;
    uint32_t next; /* walk: index of the next entry */
    uint32_t at;   /* walk: its byte offset in the page */
    bool changed;  /* walk: an entry ran past the page: its bytes changed since its check */
};

/*
 * Write the key index of a segment described by @p d to @p path (through @p path.tmp: written,
 * fdatasynced, renamed), for the @p n entries @p ents: each key's newest entry is kept (the
 * highest version; @p ents is sorted in place). The records must be durable. 0, -EINVAL (an
 * entry with an empty or oversized key, a bad type or version, or a record beyond
 * d->seg_tail), -ENOMEM or -errno.
 */
int htkv_kix_write(const char *path, const struct kix_desc *d, struct kix_ent *ents, size_t n);

/*
 * Open the key index at @p path for segment @p seg_id of shard @p shard whose records end at or
 * before @p seg_bytes, and check its header, fences and filter. 0 (free with htkv_kix_close()),
 * HTKV_ENOTFOUND (no file), HTKV_ECORRUPT (htkv_last_error(): "PATH: REASON at offset N"),
 * HTKV_EVERSION, -ENOMEM or -errno. Nothing is kept open on failure.
 */
int htkv_kix_open(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_bytes,
                  struct kix *out);

void htkv_kix_close(struct kix *k);

/* Close and free @p k, an open key index allocated with htkv_mem_alloc() (NULL: nothing); takes
 * a void * so that it can be handed to EBR as a free function. */
void htkv_kix_free(void *k);

/* Bytes of RAM the open index holds (fences, filter, their offsets). */
uint64_t htkv_kix_mem_bytes(const struct kix *k);

/* False when the key with hash @p hash is surely not in the index. */
bool htkv_kix_may_contain(const struct kix *k, uint64_t hash);

/* The page a key would be in: the last whose separator is not above it. */
uint32_t htkv_kix_page_of(const struct kix *k, const void *key, uint32_t klen);

/* Read and check page @p i (i < k->pages). 0 or HTKV_ECORRUPT (htkv_last_error() says where). */
int htkv_kix_page(const struct kix *k, uint32_t i, struct kix_page *out);

/*
 * htkv_kix_page() on a private copy: page @p i is copied into *@p buf (grown with
 * htkv_mem_realloc() when smaller than the page; *@p cap its size; the caller frees it) and
 * checked there, so that a walk of *@p out reads exactly the bytes that were checked, even if the
 * file is written under its mapping meanwhile. 0, HTKV_ECORRUPT or -ENOMEM.
 */
int htkv_kix_page_copy(const struct kix *k, uint32_t i, unsigned char **buf, size_t *cap,
                       struct kix_page *out);

/*
 * The next entry of a checked page, in key order: true and *e, or false at its end. The page is
 * read through the file's mapping: were its bytes changed since its check (the file written
 * under the open store), an entry that would run past the page ends the walk with
 * pg->changed set, and nothing is read outside the page.
 */
bool htkv_kix_page_next(struct kix_page *pg, struct kix_ent *e);

/* Do the bytes of checked page @p pg still match its CRC, with no entry run past its end? What a
 * walk read from it is what the file held when it was checked only if so. */
bool htkv_kix_page_same(const struct kix_page *pg);

/*
 * Point lookup of @p key (hash @p hash with the store's seed): the filter, then the fences, then
 * one page. 0 and *e; HTKV_ENOTFOUND; HTKV_ECORRUPT (the page failed its checks, or changed under
 * the search: a key is never reported absent from bytes that no longer match the page's CRC).
 * *page_reads (may be NULL) is incremented for each page read (0 or 1).
 */
int htkv_kix_find(const struct kix *k, const void *key, uint32_t klen, uint64_t hash,
                  struct kix_ent *e, uint64_t *page_reads);

/*
 * Check the whole file at @p path as htkv_kix_open() and htkv_kix_page() would, every page
 * included (htkvctl verify): 0, HTKV_ENOTFOUND (none: key indexes are optional), HTKV_ECORRUPT
 * (*bad_off: the offset that failed; may be NULL), -ENOMEM or -errno.
 */
int htkv_kix_check_file(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_bytes,
                        uint64_t *bad_off);

#endif
