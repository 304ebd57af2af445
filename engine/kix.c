/*
 * kix.c - writing, opening and reading key index files (format and trust rules in kix.h).
 *
 * Design. The writer sorts the entries it is given by key (newest version first), keeps each
 * key's first, cuts them into pages of one 4 KiB block (a key too long for one gets a page of its
 * own, of as many blocks as it needs), computes each page's separator, and writes header, fences,
 * filter and pages as one buffer to a temporary file that is fdatasynced and renamed into place.
 * A reader keeps only the header, the fences and the filter in memory and maps the file for its
 * pages, so that an open index costs no descriptor.
 *
 * The filter is a binary fuse filter (fuse.h) of the keys' hashes: a key's set never changes
 * once written, so a static filter fits. At about 9 bits a key it answers "maybe" for 1 absent
 * key in 256 (0.39%), where a blocked Bloom filter of 10 bits a key (this format's first
 * version) answered it for about 1 in 90: a store with many key index files a shard reads an
 * index page for a third as many misses, in three byte reads a file instead of one cache line.
 *
 * Layer: formats. Calls the base layer (allocation, errors, crc32c, fault injection) and the record
 * format (rec.h, seg.h: record sizes and the first record's offset); knows no store.
 *
 * Invariants
 *   1. Nothing read from a file is used before the check that bounds it: the header before the
 *      fences, the fences before any page, a whole page before any of its entries.
 *   2. Keys are strictly increasing across the file: within a page, and across pages through the
 *      separators (last(p - 1) < sep(p) <= first(p)).
 */
#include "engine/kix.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/fuse.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "uring/ur_fault.h"

HTKV_STATIC_ASSERT(KIX_PAGE_HDR + KIX_ENT_HDR + 1 <= KIX_BLOCK, "a page holds a short key");

/* ---- the filter --------------------------------------------------------------------------- */

bool
htkv_kix_may_contain(const struct kix *k, uint64_t hash)
{
    return k->keys > 0 && htkv_fuse_contains(&k->filter, hash);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int
ent_cmp(const void *a, const void *b)
{
    const struct kix_ent *x = a, *y = b;
    if (x->abbr != y->abbr) {
        return x->abbr < y->abbr ? -1 : 1; /* the order of the keys: their bytes not touched */
    }
    int c = htkv_key_cmp(x->key, x->key_len, y->key, y->key_len);
    if (c != 0) {
        return c;
    }
    return (x->version < y->version) - (x->version > y->version); /* newest first */
}

static uint64_t
ent_bytes(const struct kix_ent *e)
{
    return KIX_ENT_HDR + (uint64_t)e->key_len;
}

/* Sort, keep each key's newest entry; returns the count kept. */
static size_t
newest_per_key(struct kix_ent *ents, size_t n)
{
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        ents[i].abbr = htkv_key_abbrev(ents[i].key, ents[i].key_len, 0);
    }
    qsort(ents, n, sizeof(*ents), ent_cmp);
    size_t w = 1;
    for (size_t i = 1; i < n; i++) {
        const struct kix_ent *p = &ents[w - 1];
        if (p->abbr != ents[i].abbr ||
            htkv_key_cmp(p->key, p->key_len, ents[i].key, ents[i].key_len) != 0) {
            ents[w++] = ents[i];
        }
    }
    return w;
}

/* The page layout the writer computed: page i holds ents [first[i], first[i + 1]). */
struct layout {
    size_t *first;   /* pages + 1 */
    uint32_t *block; /* pages: first block */
    uint32_t pages, blocks;
    uint64_t fences_bytes;
};

static int
layout_pages(const struct kix_ent *e, size_t n, struct layout *l)
{
    l->first = htkv_mem_alloc((n + 1) * sizeof(*l->first));
    l->block = htkv_mem_alloc((n + 1) * sizeof(*l->block));
    if (l->first == NULL || l->block == NULL) {
        return -ENOMEM;
    }
    l->pages = l->blocks = 0;
    l->fences_bytes = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t b = ent_bytes(&e[i]);
        if (i == 0 || KIX_PAGE_HDR + used + b > KIX_BLOCK) {
            if (i > 0) {
                l->blocks += (uint32_t)(htkv_align_up(KIX_PAGE_HDR + used, KIX_BLOCK) / KIX_BLOCK);
            }
            l->first[l->pages] = i;
            l->block[l->pages++] = l->blocks;
            used = 0;
        }
        used += b;
    }
    if (n > 0) {
        l->blocks += (uint32_t)(htkv_align_up(KIX_PAGE_HDR + used, KIX_BLOCK) / KIX_BLOCK);
    }
    l->first[l->pages] = n;
    return 0;
}

/* Length of page @p p's separator: the shortest prefix of its first key above the key before. */
static uint32_t
sep_len(const struct kix_ent *e, const struct layout *l, uint32_t p)
{
    if (p == 0) {
        return 0;
    }
    const struct kix_ent *a = &e[l->first[p] - 1], *b = &e[l->first[p]];
    uint32_t m = a->key_len < b->key_len ? a->key_len : b->key_len, i = 0;
    while (i < m && a->key[i] == b->key[i]) {
        i++;
    }
    return i + 1; /* i < b->key_len: a < b and a is not b's prefix beyond a's end */
}

static unsigned char *
put_fences(unsigned char *p, const struct kix_ent *e, const struct layout *l)
{
    for (uint32_t i = 0; i < l->pages; i++) {
        uint32_t len = sep_len(e, l, i);
        htkv_store32(p, l->block[i]);
        htkv_store32(p + 4, len);
        memcpy(p + 8, e[l->first[i]].key, len);
        p += 8 + len;
    }
    return p;
}

static void
put_page(unsigned char *pg, const struct kix_ent *e, size_t from, size_t to)
{
    unsigned char *p = pg + KIX_PAGE_HDR;
    for (size_t i = from; i < to; i++) {
        htkv_store32(p, e[i].key_len);
        p[4] = e[i].type;
        p[5] = e[i].flags;
        htkv_store16(p + 6, 0);
        htkv_store32(p + 8, e[i].val_len);
        htkv_store32(p + 12, e[i].off);
        htkv_store64(p + 16, e[i].version);
        memcpy(p + KIX_ENT_HDR, e[i].key, e[i].key_len);
        p += KIX_ENT_HDR + e[i].key_len;
    }
    uint32_t used = (uint32_t)(p - pg - KIX_PAGE_HDR);
    htkv_store32(pg + 4, (uint32_t)(to - from));
    htkv_store32(pg + 8, used);
    htkv_store32(pg + 12, 0);
    htkv_store32(pg, htkv_crc32c(0, pg + 4, KIX_PAGE_HDR - 4 + used));
}

static void
put_header(unsigned char *h, const struct kix_desc *d, uint64_t keys, const struct layout *l,
           const unsigned char *fences, const struct fuse *filter, const unsigned char *pages)
{
    memcpy(h, KIX_MAGIC, 8);
    htkv_store32(h + 8, KIX_FORMAT);
    htkv_store32(h + 12, d->shard);
    htkv_store64(h + 16, d->seg_id);
    htkv_store64(h + 24, keys);
    htkv_store32(h + 32, l->pages);
    htkv_store32(h + 36, l->blocks);
    htkv_store64(h + 40, d->seg_tail);
    htkv_store64(h + 48, d->max_version);
    htkv_store32(h + 56, (uint32_t)l->fences_bytes);
    htkv_store32(h + 60, htkv_crc32c(0, fences, l->fences_bytes));
    htkv_store32(h + 64, (uint32_t)htkv_fuse_bytes(filter));
    htkv_store32(h + 68, filter->seg_len);
    htkv_store32(h + 72, htkv_crc32c(0, filter->fp, (size_t)htkv_fuse_bytes(filter)));
    htkv_store64(h + 76, filter->seed);
    /* The pages' CRC: the header's own CRC then names this file among any other listing the
     * same keys (a clean close names files by it: closing.h). */
    htkv_store32(h + 84, htkv_crc32c(0, pages, (size_t)l->blocks * KIX_BLOCK));
    htkv_store32(h + 124, htkv_crc32c(0, h, 124));
}

static int
write_file(const char *path, const unsigned char *buf, size_t len)
{
    char tmp[4200];
    int w = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (w < 0 || (size_t)w >= sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    int fd = htkv_fault_fails(HTKV_FAULT_CREATE)
                 ? -1
                 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int rc = htkv_pwrite_all(fd, buf, len, 0);
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    }
    if (rc == 0 && fdatasync(fd) != 0) {
        rc = -errno;
    }
    close(fd);
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_RENAME);
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(tmp)); /* else: removed at open */
    }
    return rc;
}

/* Entries the format can hold for a segment whose records end at @p tail; sets *maxv. */
static bool
ents_valid(const struct kix_ent *e, size_t n, uint64_t tail, uint64_t *maxv)
{
    *maxv = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].key == NULL || e[i].key_len == 0 || e[i].key_len > HTKV_KEY_MAX ||
            (e[i].type != REC_SET && e[i].type != REC_DEL) || e[i].off < SEG_DATA_OFF ||
            e[i].off + htkv_rec_size(e[i].key_len, e[i].val_len) > tail || e[i].version == 0 ||
            e[i].version > REC_VERSION_MAX) {
            return false;
        }
        *maxv = e[i].version > *maxv ? e[i].version : *maxv;
    }
    return true;
}

/* The filter of the @p n keys' hashes: 0 and *@p f, its array in *@p fp (free it); -ENOMEM. */
static int
build_filter(const struct kix_ent *ents, size_t n, struct fuse *f, unsigned char **fp)
{
    uint64_t *h = htkv_mem_alloc((n ? n : 1) * sizeof(*h));
    if (h == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        h[i] = ents[i].hash;
    }
    int rc = htkv_fuse_build(h, n, f, fp);
    htkv_mem_free(h);
    return rc;
}

int
htkv_kix_write(const char *path, const struct kix_desc *d, struct kix_ent *ents, size_t n)
{
    struct kix_desc dd = *d;
    if (!ents_valid(ents, n, d->seg_tail, &dd.max_version) || d->seg_tail > SEG_BYTES_LIMIT) {
        return htkv_einval("htkv_kix_write");
    }
    d = &dd;
    n = newest_per_key(ents, n);
    struct layout l = { 0 };
    struct fuse filter = { 0 };
    unsigned char *fp = NULL, *buf = NULL;
    int rc = layout_pages(ents, n, &l);
    if (rc == 0) {
        rc = build_filter(ents, n, &filter, &fp);
    }
    if (rc == 0) {
        for (uint32_t i = 0; i < l.pages; i++) {
            l.fences_bytes += 8 + sep_len(ents, &l, i);
        }
        uint64_t pages_off =
            htkv_align_up(KIX_HDR_BYTES + l.fences_bytes + htkv_fuse_bytes(&filter), KIX_BLOCK);
        size_t len = (size_t)(pages_off + (uint64_t)l.blocks * KIX_BLOCK);
        buf = htkv_mem_calloc(1, len);
        if (buf == NULL) {
            rc = -ENOMEM;
        } else {
            unsigned char *fences = buf + KIX_HDR_BYTES;
            memcpy(put_fences(fences, ents, &l), fp, (size_t)htkv_fuse_bytes(&filter));
            for (uint32_t i = 0; i < l.pages; i++) {
                put_page(buf + pages_off + (uint64_t)l.block[i] * KIX_BLOCK, ents, l.first[i],
                         l.first[i + 1]);
            }
            put_header(buf, d, n, &l, fences, &filter, buf + pages_off);
            rc = write_file(path, buf, len);
        }
    }
    htkv_mem_free(buf);
    htkv_mem_free(fp);
    htkv_mem_free(l.first);
    htkv_mem_free(l.block);
    return rc;
}

/* ---- opening ------------------------------------------------------------------------------ */

/* Set the error detail for damage at @p off of @p path and return HTKV_ECORRUPT. */
static int
bad(const char *path, uint64_t off, const char *why, uint64_t *bad_off)
{
    if (bad_off != NULL) {
        *bad_off = off;
    }
    htkv_set_error("%s: %s at offset %llu", path, why, (unsigned long long)off);
    return HTKV_ECORRUPT;
}

/* Check the header @p h of a file of @p size bytes and fill @p k from it. */
static int
hdr_check(const char *path, const unsigned char *h, uint64_t size, uint32_t shard, uint64_t seg_id,
          uint64_t seg_bytes, struct kix *k, uint64_t *bad_off)
{
    if (memcmp(h, KIX_MAGIC, 8) != 0 || htkv_load32(h + 124) != htkv_crc32c(0, h, 124)) {
        return bad(path, 0, "bad key index header", bad_off);
    }
    if (htkv_load32(h + 8) > KIX_FORMAT) {
        return HTKV_EVERSION;
    }
    k->d = (struct kix_desc){ .shard = htkv_load32(h + 12),
                              .seg_id = htkv_load64(h + 16),
                              .seg_tail = htkv_load64(h + 40),
                              .max_version = htkv_load64(h + 48) };
    k->hdr_crc = htkv_load32(h + 124);
    k->keys = htkv_load64(h + 24);
    k->pages = htkv_load32(h + 32);
    k->blocks = htkv_load32(h + 36);
    uint64_t fences = htkv_load32(h + 56), filter = htkv_load32(h + 64);
    k->filter.seg_len = htkv_load32(h + 68);
    k->filter.seed = htkv_load64(h + 76);
    if (htkv_load32(h + 8) != KIX_FORMAT) {
        return bad(path, 8, "key index of an older format", bad_off); /* rebuilt by the caller */
    }
    if (k->d.shard != shard || k->d.seg_id != seg_id) {
        return bad(path, 12, "key index of another segment", bad_off);
    }
    if (k->d.seg_tail > seg_bytes || k->d.max_version > REC_VERSION_MAX ||
        (k->keys == 0) != (k->pages == 0) || k->keys < k->pages || k->pages > k->blocks ||
        fences < 8ull * k->pages || !htkv_fuse_shape_ok(k->filter.seg_len, filter)) {
        return bad(path, 24, "inconsistent key index header", bad_off);
    }
    k->filter.seg_count = (uint32_t)(filter / k->filter.seg_len - 2);
    k->pages_off = htkv_align_up(KIX_HDR_BYTES + fences + filter, KIX_BLOCK);
    if (k->pages_off + (uint64_t)k->blocks * KIX_BLOCK != size) {
        return bad(path, 32, "key index size does not match its header", bad_off);
    }
    return 0;
}

/* Parse and check the fences (meta holds fences_bytes of them). */
static int
fences_check(const char *path, struct kix *k, uint64_t fences_bytes, uint64_t *bad_off)
{
    const unsigned char *m = k->meta;
    uint64_t at = 0;
    for (uint32_t i = 0; i < k->pages; i++) {
        uint64_t foff = KIX_HDR_BYTES + at;
        if (fences_bytes - at < 8) {
            return bad(path, foff, "fences cut short", bad_off);
        }
        uint32_t block = htkv_load32(m + at), len = htkv_load32(m + at + 4);
        if (len > HTKV_KEY_MAX || fences_bytes - at - 8 < len || (i == 0) != (len == 0) ||
            block >= k->blocks || (i == 0 && block != 0)) {
            return bad(path, foff, "bad fence", bad_off);
        }
        if (i > 0) {
            const unsigned char *prev = m + k->fence_at[i - 1];
            if (block <= htkv_load32(prev) ||
                htkv_key_cmp(prev + 8, htkv_load32(prev + 4), m + at + 8, len) >= 0) {
                return bad(path, foff, "fences out of order", bad_off);
            }
        }
        k->fence_at[i] = (uint32_t)at;
        at += 8 + len;
    }
    return at == fences_bytes ? 0 : bad(path, KIX_HDR_BYTES + at, "stray fence bytes", bad_off);
}

static int
read_exact(int fd, void *buf, size_t n, off_t off)
{
    ssize_t r = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(fd, buf, n, off);
    if (r < 0) {
        return -errno;
    }
    return (size_t)r == n ? 0 : HTKV_ECORRUPT;
}

/* Read and check the fences and the filter of an opened file (header already checked). */
static int
meta_load(const char *path, int fd, const unsigned char *h, struct kix *k, uint64_t *bad_off)
{
    uint64_t fences = htkv_load32(h + 56), filter = htkv_fuse_bytes(&k->filter);
    k->meta = htkv_mem_alloc(fences + filter);
    k->fence_at = htkv_mem_alloc(((size_t)k->pages + 1) * sizeof(*k->fence_at));
    k->page_ok = htkv_mem_calloc((size_t)k->pages + 1, sizeof(*k->page_ok));
    if (k->meta == NULL || k->fence_at == NULL || k->page_ok == NULL) {
        return -ENOMEM;
    }
    int rc = read_exact(fd, k->meta, fences + filter, KIX_HDR_BYTES);
    if (rc != 0) {
        return rc == HTKV_ECORRUPT ? bad(path, KIX_HDR_BYTES, "key index cut short", bad_off) : rc;
    }
    if (htkv_crc32c(0, k->meta, fences) != htkv_load32(h + 60)) {
        return bad(path, KIX_HDR_BYTES, "fences checksum mismatch", bad_off);
    }
    k->filter.fp = k->meta + fences;
    if (htkv_crc32c(0, k->filter.fp, filter) != htkv_load32(h + 72)) {
        return bad(path, KIX_HDR_BYTES + fences, "filter checksum mismatch", bad_off);
    }
    return fences_check(path, k, fences, bad_off);
}

static int
kix_open(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_bytes, struct kix *k,
         uint64_t *bad_off)
{
    memset(k, 0, sizeof(*k));
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? HTKV_ENOTFOUND : -errno;
    }
    struct stat st;
    unsigned char h[KIX_HDR_BYTES];
    int rc = fstat(fd, &st) != 0 ? -errno : 0;
    if (rc == 0 && (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < KIX_HDR_BYTES)) {
        rc = bad(path, 0, "not a key index (no header)", bad_off);
    }
    if (rc == 0 && (rc = read_exact(fd, h, sizeof(h), 0)) == HTKV_ECORRUPT) {
        rc = bad(path, 0, "key index header cut short", bad_off);
    }
    if (rc == 0) {
        rc = hdr_check(path, h, (uint64_t)st.st_size, shard, seg_id, seg_bytes, k, bad_off);
    }
    if (rc == 0) {
        rc = meta_load(path, fd, h, k, bad_off);
    }
    if (rc == 0) {
        k->map_bytes = (uint64_t)st.st_size;
        void *m = mmap(NULL, k->map_bytes, PROT_READ, MAP_SHARED, fd, 0);
        rc = m == MAP_FAILED ? -errno : 0;
        k->map = rc == 0 ? m : NULL;
    }
    close(fd);
    if (rc != 0) {
        htkv_kix_close(k);
    }
    return rc;
}

int
htkv_kix_open(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_bytes,
              struct kix *out)
{
    return kix_open(path, shard, seg_id, seg_bytes, out, NULL);
}

void
htkv_kix_close(struct kix *k)
{
    if (k->map != NULL) {
        munmap((void *)k->map, k->map_bytes);
    }
    htkv_mem_free(k->meta);
    htkv_mem_free(k->fence_at);
    htkv_mem_free((void *)k->page_ok);
    memset(k, 0, sizeof(*k));
}

void
htkv_kix_free(void *k)
{
    if (k != NULL) {
        htkv_kix_close(k);
        htkv_mem_free(k);
    }
}

uint64_t
htkv_kix_mem_bytes(const struct kix *k)
{
    return (uint64_t)(k->filter.fp - k->meta) + htkv_fuse_bytes(&k->filter) +
           ((uint64_t)k->pages + 1) * (sizeof(*k->fence_at) + sizeof(*k->page_ok));
}

/* ---- reading ------------------------------------------------------------------------------ */

static const unsigned char *
fence_key(const struct kix *k, uint32_t i, uint32_t *len)
{
    const unsigned char *f = k->meta + k->fence_at[i];
    *len = htkv_load32(f + 4);
    return f + 8;
}

uint32_t
htkv_kix_page_of(const struct kix *k, const void *key, uint32_t klen)
{
    uint32_t lo = 0, hi = k->pages; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2, flen;
        const unsigned char *f = fence_key(k, mid, &flen);
        if (htkv_key_cmp(f, flen, key, klen) <= 0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void
ent_decode(const unsigned char *p, struct kix_ent *e)
{
    e->key_len = htkv_load32(p);
    e->type = p[4];
    e->flags = p[5];
    e->val_len = htkv_load32(p + 8);
    e->off = htkv_load32(p + 12);
    e->version = htkv_load64(p + 16);
    e->key = p + KIX_ENT_HDR;
    e->hash = 0;
}

/* The checks of one entry at byte @p at of a page's @p used entry bytes; NULL when it is good. */
static const char *
ent_check(const struct kix *k, const unsigned char *p, uint32_t at, uint32_t used,
          struct kix_ent *e)
{
    if (used - at < KIX_ENT_HDR) {
        return "entry cut short";
    }
    ent_decode(p + at, e);
    if (e->key_len == 0 || e->key_len > HTKV_KEY_MAX || used - at - KIX_ENT_HDR < e->key_len) {
        return "bad key length";
    }
    if ((e->type != REC_SET && e->type != REC_DEL) || htkv_load16(p + at + 6) != 0) {
        return "bad entry type";
    }
    if (e->off < SEG_DATA_OFF || e->off + htkv_rec_size(e->key_len, e->val_len) > k->d.seg_tail) {
        return "record outside the segment";
    }
    if (e->version == 0 || e->version > k->d.max_version) {
        return "bad version";
    }
    return NULL;
}

/* Check every entry of page @p i (at @p p, @p used bytes of entries, @p count of them). */
static const char *
page_walk_check(const struct kix *k, uint32_t i, const unsigned char *p, uint32_t used,
                uint32_t count)
{
    uint32_t at = 0, lo_len, hi_len = 0;
    const unsigned char *lo = fence_key(k, i, &lo_len), *hi = NULL;
    if (i + 1 < k->pages) {
        hi = fence_key(k, i + 1, &hi_len);
    }
    struct kix_ent e, prev = { 0 };
    for (uint32_t n = 0; n < count; n++) {
        const char *why = ent_check(k, p, at, used, &e);
        if (why != NULL) {
            return why;
        }
        if (n == 0 ? htkv_key_cmp(lo, lo_len, e.key, e.key_len) > 0
                   : htkv_key_cmp(prev.key, prev.key_len, e.key, e.key_len) >= 0) {
            return "keys out of order";
        }
        prev = e;
        at += KIX_ENT_HDR + e.key_len;
    }
    if (at != used) {
        return "stray entry bytes";
    }
    if (hi != NULL && htkv_key_cmp(prev.key, prev.key_len, hi, hi_len) >= 0) {
        return "key beyond the next page's separator";
    }
    return NULL;
}

/*
 * Check page @p i (its offset in the file in *@p at_out): its size and CRC always; the rest of
 * its header and the walk of its entries (page_walk_check()) unless @p again, a page that passed
 * them in this open (the file may have been changed under the mapping since; the same bytes need
 * no second walk). NULL and *@p out set, or why it fails.
 */
/* Where page @p i lies in the file (*@p at) and how many bytes it takes. */
static uint64_t
page_span(const struct kix *k, uint32_t i, uint64_t *at)
{
    uint32_t first = htkv_load32(k->meta + k->fence_at[i]);
    uint32_t end = i + 1 < k->pages ? htkv_load32(k->meta + k->fence_at[i + 1]) : k->blocks;
    *at = k->pages_off + (uint64_t)first * KIX_BLOCK;
    return (uint64_t)(end - first) * KIX_BLOCK;
}

static const char *
page_check(const struct kix *k, uint32_t i, bool again, struct kix_page *out, uint64_t *at_out,
           const unsigned char *copy)
{
    uint64_t bytes = page_span(k, i, at_out);
    const unsigned char *p = copy != NULL ? copy : k->map + *at_out;
    uint32_t count = htkv_load32(p + 4), used = htkv_load32(p + 8);
    if (KIX_PAGE_HDR + (uint64_t)used > bytes ||
        (!again && (count == 0 || htkv_load32(p + 12) != 0)) ||
        htkv_crc32c(0, p + 4, KIX_PAGE_HDR - 4 + used) != htkv_load32(p)) {
        return "bad page (checksum or size)";
    }
    const char *why = again ? NULL : page_walk_check(k, i, p + KIX_PAGE_HDR, used, count);
    if (why == NULL) {
        *out = (struct kix_page){ .p = p + KIX_PAGE_HDR, .count = count, .used = used };
    }
    return why;
}

int
htkv_kix_page(const struct kix *k, uint32_t i, struct kix_page *out)
{
    HTKV_ASSERT(i < k->pages);
    uint64_t at;
    const char *why = page_check(k, i, atomic_load_explicit(&k->page_ok[i], memory_order_acquire),
                                 out, &at, NULL);
    if (why == NULL) {
        atomic_store_explicit(&k->page_ok[i], 1, memory_order_release);
    }
    if (why != NULL) {
        htkv_set_error("key index of segment %llu (shard %u): page %u: %s at offset %llu",
                       (unsigned long long)k->d.seg_id, k->d.shard, i, why, (unsigned long long)at);
        return HTKV_ECORRUPT;
    }
    return 0;
}

int
htkv_kix_page_copy(const struct kix *k, uint32_t i, unsigned char **buf, size_t *cap,
                   struct kix_page *out)
{
    HTKV_ASSERT(i < k->pages);
    uint64_t at, bytes = page_span(k, i, &at);
    if (bytes > *cap) {
        unsigned char *n = htkv_mem_realloc(*buf, (size_t)bytes);
        if (n == NULL) {
            return -ENOMEM;
        }
        *buf = n;
        *cap = (size_t)bytes;
    }
    /* The header, then only the bytes it says are used (the rest of the block is zeros). */
    memcpy(*buf, k->map + at, KIX_PAGE_HDR);
    uint64_t used = htkv_load32(*buf + 8);
    used = used < bytes - KIX_PAGE_HDR ? used : bytes - KIX_PAGE_HDR;
    memcpy(*buf + KIX_PAGE_HDR, k->map + at + KIX_PAGE_HDR, (size_t)used);
    const char *why = page_check(k, i, atomic_load_explicit(&k->page_ok[i], memory_order_acquire),
                                 out, &at, *buf);
    if (why != NULL) {
        htkv_set_error("key index of segment %llu (shard %u): page %u: %s at offset %llu",
                       (unsigned long long)k->d.seg_id, k->d.shard, i, why, (unsigned long long)at);
        return HTKV_ECORRUPT;
    }
    atomic_store_explicit(&k->page_ok[i], 1, memory_order_release);
    return 0;
}

bool
htkv_kix_page_next(struct kix_page *pg, struct kix_ent *e)
{
    if (pg->next == pg->count) {
        return false;
    }
    if (pg->used - pg->at < KIX_ENT_HDR ||
        htkv_load32(pg->p + pg->at) > pg->used - pg->at - KIX_ENT_HDR) {
        pg->changed = true; /* checked whole before: changed under the mapping since */
        return false;
    }
    ent_decode(pg->p + pg->at, e);
    pg->at += KIX_ENT_HDR + e->key_len;
    pg->next++;
    return true;
}

bool
htkv_kix_page_same(const struct kix_page *pg)
{
    const unsigned char *h = pg->p - KIX_PAGE_HDR;
    return !pg->changed && htkv_load32(h + 8) == pg->used &&
           htkv_crc32c(0, h + 4, KIX_PAGE_HDR - 4 + pg->used) == htkv_load32(h);
}

int
htkv_kix_find(const struct kix *k, const void *key, uint32_t klen, uint64_t hash, struct kix_ent *e,
              uint64_t *page_reads)
{
    if (!htkv_kix_may_contain(k, hash)) {
        return HTKV_ENOTFOUND;
    }
    struct kix_page pg;
    if (page_reads != NULL) {
        (*page_reads)++;
    }
    int rc = htkv_kix_page(k, htkv_kix_page_of(k, key, klen), &pg);
    if (rc != 0) {
        return rc;
    }
    /* Keys compare on their first 8 bytes first (big-endian, zero-padded; equal for a key and
     * its zero-extended prefix), the full comparison only on a tie. */
    uint64_t want = htkv_key_abbrev(key, klen, 0);
    while (htkv_kix_page_next(&pg, e)) {
        uint64_t have = htkv_key_abbrev(e->key, e->key_len, 0);
        if (have < want) {
            continue;
        }
        int c = have > want ? 1 : htkv_key_cmp(e->key, e->key_len, key, klen);
        if (c == 0) {
            return 0; /* the caller checks the record it names */
        }
        if (c > 0) {
            break;
        }
    }
    if (!htkv_kix_page_same(&pg)) {
        htkv_set_error("key index of segment %llu (shard %u): a page changed while read",
                       (unsigned long long)k->d.seg_id, k->d.shard);
        return HTKV_ECORRUPT;
    }
    return HTKV_ENOTFOUND;
}

int
htkv_kix_check_file(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_bytes,
                    uint64_t *bad_off)
{
    if (bad_off != NULL) {
        *bad_off = 0;
    }
    struct kix k;
    int rc = kix_open(path, shard, seg_id, seg_bytes, &k, bad_off);
    if (rc != 0) {
        return rc;
    }
    uint64_t keys = 0;
    for (uint32_t i = 0; i < k.pages && rc == 0; i++) {
        struct kix_page pg;
        uint64_t at;
        const char *why = page_check(&k, i, false, &pg, &at, NULL);
        rc = why != NULL ? bad(path, at, why, bad_off) : 0;
        keys += rc == 0 ? pg.count : 0;
    }
    if (rc == 0 && keys != k.keys) {
        rc = bad(path, 24, "key count does not match the pages", bad_off);
    }
    htkv_kix_close(&k);
    return rc;
}
