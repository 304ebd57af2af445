/*
 * closing.c - writing and reading a shard's close.state (format and trust rules in closing.h).
 *
 * Layer: formats. Calls the base layer (allocation, errors, crc32c, fault injection); knows no
 * store: the caller fills and judges the struct closing.
 *
 * Invariants
 *   1. htkv_closing_load() returns a state only after the whole file checked (size, CRC, shard,
 *      zero fields): never a half-read one.
 *   2. A write that fails leaves the old file or none, never a torn close.state (a .tmp left
 *      behind is removed by the next write, and is never read).
 */
#include "engine/closing.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "uring/ur_fault.h"

HTKV_STATIC_ASSERT(sizeof(struct closing_seg) == 64, "closing_seg has no padding");

static size_t
closing_bytes(uint32_t nsegs)
{
    return CLOSING_HDR_BYTES + (size_t)nsegs * CLOSING_SEG_BYTES + CLOSING_TRAILER_BYTES;
}

static void
seg_encode(unsigned char *p, const struct closing_seg *s)
{
    htkv_store64(p, s->id);
    htkv_store64(p + 8, s->tail);
    htkv_store64(p + 16, s->records);
    htkv_store64(p + 24, s->max_version);
    htkv_store64(p + 32, s->live_bytes);
    htkv_store64(p + 40, s->dead_bytes);
    htkv_store32(p + 48, s->kix_crc);
    htkv_store32(p + 52, s->flags);
    htkv_store32(p + 56, s->heads_vals);
    htkv_store32(p + 60, s->heads_dels);
}

static bool
seg_decode(const unsigned char *p, struct closing_seg *s)
{
    *s = (struct closing_seg){ .id = htkv_load64(p),
                               .tail = htkv_load64(p + 8),
                               .records = htkv_load64(p + 16),
                               .max_version = htkv_load64(p + 24),
                               .live_bytes = htkv_load64(p + 32),
                               .dead_bytes = htkv_load64(p + 40),
                               .kix_crc = htkv_load32(p + 48),
                               .flags = htkv_load32(p + 52),
                               .heads_vals = htkv_load32(p + 56),
                               .heads_dels = htkv_load32(p + 60) };
    return (s->flags & ~(uint32_t)(CLOSING_KIX | CLOSING_HINT)) == 0;
}

int
htkv_closing_write(const char *shard_dir, const struct closing *c)
{
    if (c->nsegs > (1u << 24)) {
        return htkv_einval(__func__);
    }
    size_t n = closing_bytes(c->nsegs);
    unsigned char *buf = htkv_mem_calloc(1, n);
    if (buf == NULL) {
        return -ENOMEM;
    }
    memcpy(buf, CLOSING_MAGIC, 8);
    htkv_store32(buf + 8, CLOSING_FORMAT);
    htkv_store32(buf + 12, c->shard);
    htkv_store64(buf + 16, c->man_number);
    htkv_store64(buf + 24, c->man_bytes);
    htkv_store64(buf + 32, c->applied);
    htkv_store32(buf + 56, c->nsegs);
    for (uint32_t i = 0; i < c->nsegs; i++) {
        seg_encode(buf + CLOSING_HDR_BYTES + (size_t)i * CLOSING_SEG_BYTES, &c->segs[i]);
    }
    htkv_store32(buf + n - CLOSING_TRAILER_BYTES, htkv_crc32c(0, buf, n - CLOSING_TRAILER_BYTES));

    char path[4200], tmp[4210];
    snprintf(path, sizeof(path), "%s/%s", shard_dir, CLOSING_NAME);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = htkv_fault_fails(HTKV_FAULT_CREATE)
                 ? -1
                 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : htkv_pwrite_all(fd, buf, n, 0);
    if (fd >= 0) {
        close(fd);
    }
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_RENAME);
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0 && fd >= 0) {
        (void)unlink(tmp);
    }
    htkv_mem_free(buf);
    return rc;
}

/* Read the whole file at @p path (at most @p max bytes) into *@p buf. */
static int
read_file(const char *path, size_t max, unsigned char **buf, size_t *len)
{
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? HTKV_ENOTFOUND : -errno;
    }
    struct stat st;
    int rc = fstat(fd, &st) != 0 ? -errno : 0;
    if (rc == 0 && (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < closing_bytes(0) ||
                    (uint64_t)st.st_size > max)) {
        rc = HTKV_ECORRUPT;
    }
    unsigned char *b = rc == 0 ? htkv_mem_alloc((size_t)st.st_size) : NULL;
    if (rc == 0 && b == NULL) {
        rc = -ENOMEM;
    }
    if (rc == 0) {
        ssize_t r = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(fd, b, (size_t)st.st_size, 0);
        rc = r < 0 ? -errno : (size_t)r != (size_t)st.st_size ? HTKV_ECORRUPT : 0;
    }
    close(fd);
    if (rc != 0) {
        htkv_mem_free(b);
        return rc;
    }
    *buf = b;
    *len = (size_t)st.st_size;
    return 0;
}

int
htkv_closing_load(const char *shard_dir, uint32_t shard, uint32_t max_segs, struct closing *out)
{
    memset(out, 0, sizeof(*out));
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", shard_dir, CLOSING_NAME);
    unsigned char *b = NULL;
    size_t n = 0;
    int rc = read_file(path, closing_bytes(max_segs < (1u << 24) ? max_segs : 1u << 24), &b, &n);
    if (rc != 0) {
        return rc;
    }
    uint32_t nsegs = htkv_load32(b + 56);
    bool ok = memcmp(b, CLOSING_MAGIC, 8) == 0 && htkv_load32(b + 8) == CLOSING_FORMAT &&
              htkv_load32(b + 12) == shard && htkv_load64(b + 40) == 0 &&
              htkv_load64(b + 48) == 0 && htkv_load32(b + 60) == 0 && n == closing_bytes(nsegs) &&
              htkv_load32(b + n - CLOSING_TRAILER_BYTES) ==
                  htkv_crc32c(0, b, n - CLOSING_TRAILER_BYTES) &&
              htkv_load32(b + n - 4) == 0;
    out->segs = ok && nsegs > 0 ? htkv_mem_alloc((size_t)nsegs * sizeof(*out->segs)) : NULL;
    rc = !ok ? HTKV_ECORRUPT : (nsegs > 0 && out->segs == NULL) ? -ENOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < nsegs; i++) {
        if (!seg_decode(b + CLOSING_HDR_BYTES + (size_t)i * CLOSING_SEG_BYTES, &out->segs[i])) {
            rc = HTKV_ECORRUPT;
        }
    }
    if (rc == 0) {
        out->shard = shard;
        out->man_number = htkv_load64(b + 16);
        out->man_bytes = htkv_load64(b + 24);
        out->applied = htkv_load64(b + 32);
        out->nsegs = nsegs;
    } else {
        htkv_closing_free(out);
    }
    htkv_mem_free(b);
    return rc;
}

void
htkv_closing_free(struct closing *c)
{
    htkv_mem_free(c->segs);
    memset(c, 0, sizeof(*c));
}
