/*
 * hint.c - writing and checking hint files (format in hint.h).
 *
 * Design. A hint is built by walking the segment's records once (header checks and CRCs, so a
 * hint never vouches for a damaged record), hashing each key with the store's seed, and written
 * to NNNN.hint.tmp, fsynced and renamed over NNNN.hint. Loading reads the whole file, checks the
 * header against the segment, the size against the entry count and the trailer's CRC, and hands
 * the entries to recovery, which checks each one against the segment's bounds as it goes.
 *
 * Layer: formats. Calls the base layer (allocation, errors, crc32c, hash, the crash-test hook,
 * fault injection), the record walk (rec.h) and the segment type (seg.h); knows no store: the
 * caller passes the store's hash seed and value limit, and logs what fails (errors are
 * returned, with htkv_set_error() where there is more to say).
 *
 * Invariants
 *   1. A hint on disk describes only records that were durable before it was written.
 *   2. A hint that fails any check is ignored (the segment is scanned) and never half-used:
 *      htkv_hint_load() checks the whole file before returning any entry.
 */
#include "engine/hint.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/hash.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "engine/testhook.h"
#include "uring/ur_fault.h"

HTKV_STATIC_ASSERT(HINT_HDR_BYTES == 64, "hint header is 64 bytes");
HTKV_STATIC_ASSERT(HINT_ENT_BYTES == 32, "hint entry is 32 bytes");

static int
write_all(int fd, const void *p, size_t n)
{
    const unsigned char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void
ent_encode(unsigned char *p, uint64_t hash, const struct rec_hdr *h, uint64_t off)
{
    htkv_store64(p, hash);
    htkv_store64(p + 8, h->version);
    htkv_store32(p + 16, (uint32_t)off);
    htkv_store32(p + 20, h->key_len);
    htkv_store32(p + 24, h->val_len);
    p[28] = h->type;
    p[29] = h->flags;
    p[30] = p[31] = 0;
}

/* Bytes of a hint buffer with room for @p cap entries (header and trailer included). */
static size_t
buf_bytes(uint64_t cap)
{
    return HINT_HDR_BYTES + cap * HINT_ENT_BYTES + HINT_TRAILER_BYTES;
}

/* Double the room of hint buffer *@p buf (*@p cap entries). 0 or -ENOMEM (*buf unchanged). */
static int
buf_grow(unsigned char **buf, uint64_t *cap)
{
    unsigned char *b = htkv_mem_map(buf_bytes(*cap * 2));
    if (b == NULL) {
        return -ENOMEM;
    }
    memcpy(b, *buf, buf_bytes(*cap));
    htkv_mem_unmap(*buf, buf_bytes(*cap));
    *buf = b;
    *cap *= 2;
    return 0;
}

/*
 * Entries of [SEG_DATA_OFF, upto) into a new buffer (header and trailer left for the caller),
 * mapped (htkv_mem_map(), *@p cap entries) so that its pages go back to the system once the
 * hint is written: sized for the segment's record count, grown should the walk find more.
 */
static int
build(const struct seg *s, uint64_t seed, uint32_t val_max, uint64_t *upto, unsigned char **out,
      uint64_t *cap, uint64_t *count, uint64_t *maxv)
{
    uint64_t end = *upto, n = 0;
    *cap = s->records > 1024 ? s->records : 1024;
    unsigned char *buf = htkv_mem_map(buf_bytes(*cap));
    if (buf == NULL) {
        return -ENOMEM;
    }
    *maxv = 0;
    struct rec_walk w;
    struct rec_hdr h;
    enum rec_walk_res r;
    uint64_t off = SEG_DATA_OFF; /* end of the records described so far (a SEAL's offset) */
    htkv_rec_walk_init(&w, s->map, s->id, SEG_DATA_OFF, end, val_max);
    while ((r = htkv_rec_walk_next(&w, &h)) != REC_WALK_END) {
        if (r != REC_WALK_RECORD) {
            htkv_mem_unmap(buf, buf_bytes(*cap));
            htkv_set_error("%s: damaged record at offset %llu; no hint written", s->path,
                           (unsigned long long)w.at);
            return HTKV_ECORRUPT;
        }
        if (h.type == REC_SEAL) {
            break; /* the hint ends before SEAL: recovery checks that record itself */
        }
        if (n == *cap && buf_grow(&buf, cap) != 0) {
            htkv_mem_unmap(buf, buf_bytes(*cap));
            return -ENOMEM;
        }
        uint64_t hash = 0;
        struct rec_hdr e = h;
        if (h.type == REC_SET || h.type == REC_DEL) {
            hash = htkv_hash(s->map + w.at + REC_HDR_BYTES, h.key_len, seed);
        } else {
            /* BEGIN / COMMIT: op_count and part_count from the payload. */
            const unsigned char *pl = s->map + w.at + REC_HDR_BYTES;
            e.val_len = htkv_load32(pl);
            e.key_len = htkv_load32(pl + 4);
        }
        ent_encode(buf + HINT_HDR_BYTES + n * HINT_ENT_BYTES, hash, &e, w.at);
        n++;
        *maxv = h.version > *maxv ? h.version : *maxv;
        off = w.off;
    }
    *out = buf;
    *count = n;
    *upto = off;
    return 0;
}

int
htkv_hint_write(struct seg *s, uint64_t hash_seed, uint32_t val_max)
{
    unsigned char *buf;
    uint64_t cap, n, maxv, upto = s->tail;
    int rc = build(s, hash_seed, val_max, &upto, &buf, &cap, &n, &maxv);
    if (rc != 0) {
        return rc;
    }
    memset(buf, 0, HINT_HDR_BYTES);
    memcpy(buf, HINT_MAGIC, 8);
    htkv_store32(buf + 8, HTKV_FORMAT_VERSION);
    htkv_store32(buf + 12, s->shard);
    htkv_store64(buf + 16, s->id);
    htkv_store64(buf + 24, n);
    htkv_store64(buf + 32, upto);
    htkv_store64(buf + 40, n);
    htkv_store64(buf + 48, maxv);
    htkv_store32(buf + 60, htkv_crc32c(0, buf, 60));
    unsigned char *t = buf + HINT_HDR_BYTES + n * HINT_ENT_BYTES;
    htkv_store32(t, htkv_crc32c(0, buf + HINT_HDR_BYTES, n * HINT_ENT_BYTES));
    htkv_store32(t + 4, 0);
    size_t len = HINT_HDR_BYTES + n * HINT_ENT_BYTES + HINT_TRAILER_BYTES;

    char path[4200], tmp[4210];
    htkv_hint_path(path, sizeof(path), s->path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = htkv_fault_fails(HTKV_FAULT_CREATE)
                 ? -1
                 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
    } else {
        rc = htkv_fault_hit(HTKV_FAULT_WRITE);
        rc = rc == 0 ? write_all(fd, buf, len) : rc == -HTKV_FAULT_TORN ? -EIO : rc;
        if (rc == 0) {
            rc = htkv_fault_hit(HTKV_FAULT_SYNC);
        }
        if (rc == 0 && fdatasync(fd) != 0) {
            rc = -errno;
        }
        close(fd);
        htkv_compact_hook_call("hint-written");
        if (rc == 0) {
            rc = htkv_fault_hit(HTKV_FAULT_RENAME);
        }
        if (rc == 0 && rename(tmp, path) != 0) {
            rc = -errno;
        }
        if (rc != 0) {
            /* A .tmp left behind is never read; the next writable open removes it. */
            (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(tmp));
        }
    }
    htkv_mem_unmap(buf, buf_bytes(cap));
    if (rc == 0) {
        s->hint_tail = upto;
    }
    return rc;
}

/*
 * Read the hint at @p path into a new buffer (htkv_mem_map(), @p *size_out bytes). 0;
 * HTKV_ENOTFOUND (no file); HTKV_ECORRUPT (a size no hint can have, or the file shrank while read);
 * -ENOMEM; -errno.
 */
static int
hint_read(const char *path, unsigned char **buf_out, uint64_t *size_out)
{
    *buf_out = NULL;
    *size_out = 0;
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? HTKV_ENOTFOUND : -errno;
    }
    struct stat st;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if ((uint64_t)st.st_size < HINT_HDR_BYTES + HINT_TRAILER_BYTES ||
               (uint64_t)st.st_size > (1ull << 36)) {
        rc = HTKV_ECORRUPT;
    } else if ((buf = htkv_mem_map((size_t)st.st_size)) == NULL) {
        rc = -ENOMEM;
    } else {
        size_t got = 0;
        while (rc == 0 && got < (size_t)st.st_size) {
            ssize_t r = htkv_fault_fails(HTKV_FAULT_READ)
                            ? -1
                            : pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
            if (r < 0 && errno != EINTR) {
                rc = -errno;
            } else if (r == 0) {
                rc = HTKV_ECORRUPT;
            } else if (r > 0) {
                got += (size_t)r;
            }
        }
    }
    close(fd);
    if (rc != 0) {
        htkv_mem_unmap(buf, (size_t)st.st_size);
        return rc;
    }
    *buf_out = buf;
    *size_out = (uint64_t)st.st_size;
    return 0;
}

/* Record a failed check of hint_check(): what failed, at which offset. Returns false. */
static bool
hint_fail(const char *what, uint64_t at, const char **why, uint64_t *off)
{
    *why = what;
    *off = at;
    return false;
}

/*
 * Every check of a hint read whole (@p size bytes, at least header + trailer) that describes
 * segment @p seg_id of shard @p shard, @p seg_file_bytes long. Returns true when it passes;
 * otherwise false with what failed in *why and the offset of the field that failed in *off.
 */
static bool
hint_check(const unsigned char *buf, uint64_t size, uint32_t shard, uint64_t seg_id,
           uint64_t seg_file_bytes, const char **why, uint64_t *off)
{
    HTKV_ASSERT(size >= HINT_HDR_BYTES + HINT_TRAILER_BYTES);
    if (memcmp(buf, HINT_MAGIC, 8) != 0) {
        return hint_fail("not an htkv hint file", 0, why, off);
    }
    if (htkv_load32(buf + 60) != htkv_crc32c(0, buf, 60)) {
        return hint_fail("header checksum mismatch", 0, why, off);
    }
    if (htkv_load32(buf + 8) != HTKV_FORMAT_VERSION) {
        return hint_fail("format version is not this engine's", 8, why, off);
    }
    if (htkv_load32(buf + 12) != shard || htkv_load64(buf + 16) != seg_id) {
        return hint_fail("names another shard or segment", 12, why, off);
    }
    if (htkv_load32(buf + 56) != 0) {
        return hint_fail("reserved header field is not zero", 56, why, off);
    }
    uint64_t n = htkv_load64(buf + 24);
    if (n > (size - HINT_HDR_BYTES) / HINT_ENT_BYTES ||
        size != HINT_HDR_BYTES + n * HINT_ENT_BYTES + HINT_TRAILER_BYTES) {
        return hint_fail("size does not match the entry count", 24, why, off);
    }
    const unsigned char *t = buf + HINT_HDR_BYTES + n * HINT_ENT_BYTES;
    if (htkv_load32(t) != htkv_crc32c(0, buf + HINT_HDR_BYTES, n * HINT_ENT_BYTES) ||
        htkv_load32(t + 4) != 0) {
        return hint_fail("entry checksum mismatch", HINT_HDR_BYTES + n * HINT_ENT_BYTES, why, off);
    }
    uint64_t tail = htkv_load64(buf + 32);
    if (tail < SEG_DATA_OFF || tail > seg_file_bytes || tail % REC_ALIGN != 0) {
        return hint_fail("tail out of the segment's bounds", 32, why, off);
    }
    if (htkv_load64(buf + 48) > REC_VERSION_MAX) {
        return hint_fail("version out of range", 48, why, off);
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = htkv_load64(buf + HINT_HDR_BYTES + i * HINT_ENT_BYTES + 8);
        if (v == 0 || v > REC_VERSION_MAX) {
            return hint_fail("entry version out of range", HINT_HDR_BYTES + i * HINT_ENT_BYTES + 8,
                             why, off);
        }
    }
    *why = NULL;
    *off = 0;
    return true;
}

int
htkv_hint_load(const struct seg *s, struct hint *out)
{
    memset(out, 0, sizeof(*out));
    char path[4200];
    htkv_hint_path(path, sizeof(path), s->path);
    unsigned char *buf;
    uint64_t size;
    int rc = hint_read(path, &buf, &size);
    if (rc != 0) {
        return rc;
    }
    const char *why;
    uint64_t off;
    /* Bounded by the largest segment, not by this one's size: a whole hint whose tail lies past
     * the end of its segment proves that the segment lost records, which recovery must see
     * (recover.c, HINT_SEG_DAMAGED) instead of a hint refused as stale. */
    if (!hint_check(buf, size, s->shard, s->id, SEG_BYTES_LIMIT, &why, &off)) {
        htkv_mem_unmap(buf, size);
        return HTKV_ECORRUPT;
    }
    out->buf = buf;
    out->bytes = size;
    out->count = htkv_load64(buf + 24);
    out->tail = htkv_load64(buf + 32);
    out->records = htkv_load64(buf + 40);
    out->max_version = htkv_load64(buf + 48);
    return 0;
}

void
htkv_hint_get(const struct hint *h, uint64_t i, struct hint_ent *out)
{
    HTKV_ASSERT(i < h->count);
    const unsigned char *p = h->buf + HINT_HDR_BYTES + i * HINT_ENT_BYTES;
    out->hash = htkv_load64(p);
    out->version = htkv_load64(p + 8);
    out->off = htkv_load32(p + 16);
    out->key_len = htkv_load32(p + 20);
    out->val_len = htkv_load32(p + 24);
    out->type = p[28];
    out->flags = p[29];
}

void
htkv_hint_free(struct hint *h)
{
    htkv_mem_unmap(h->buf, h->bytes);
    memset(h, 0, sizeof(*h));
}

int
htkv_hint_check_file(const char *path, uint32_t shard, uint64_t seg_id, uint64_t seg_file_bytes,
                     uint64_t *bad_off)
{
    if (bad_off != NULL) {
        *bad_off = 0;
    }
    if (path == NULL) {
        return htkv_einval(__func__);
    }
    unsigned char *buf;
    uint64_t size;
    int rc = hint_read(path, &buf, &size);
    if (rc == HTKV_ECORRUPT) {
        htkv_set_error("%s: %s at offset 0", path,
                       "size out of range for a hint (or the file shrank while read)");
        return rc;
    }
    if (rc != 0) {
        return rc;
    }
    const char *why;
    uint64_t off;
    if (!hint_check(buf, size, shard, seg_id, seg_file_bytes, &why, &off)) {
        htkv_set_error("%s: %s at offset %llu", path, why, (unsigned long long)off);
        rc = HTKV_ECORRUPT;
        if (bad_off != NULL) {
            *bad_off = off;
        }
    }
    htkv_mem_unmap(buf, size);
    return rc;
}
