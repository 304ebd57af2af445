/*
 * seg.c - segment files (see seg.h for the life cycle and the header layout).
 *
 * Invariants
 *   1. SEG_DATA_OFF <= tail <= file_bytes <= map_bytes.
 *   2. Every byte of [0, file_bytes) is allocated on disk (fallocate or written zeros), so stores
 *      through the mapping below file_bytes cannot fault for space.
 *   3. The header is written and fsynced before the file is handed out.
 */
#include "engine/seg.h"
#include "engine/kix.h"
#include "uring/ur_fault.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/log.h"
#include "engine/rec.h"

HTKV_STATIC_ASSERT(SEG_HDR_BYTES % 8 == 0, "records after the header stay 8-byte aligned");

void
htkv_seg_path(char *buf, size_t cap, const char *dir, uint64_t id)
{
    snprintf(buf, cap, "%s/%012llu.seg", dir, (unsigned long long)id);
}

void
htkv_seg_hdr_encode(unsigned char *h, const struct seg_owner *o, uint64_t id)
{
    memset(h, 0, SEG_HDR_BYTES);
    memcpy(h, SEG_MAGIC, 8);
    htkv_store32(h + 8, HTKV_FORMAT_VERSION);
    htkv_store32(h + 12, o->shard);
    htkv_store64(h + 16, id);
    htkv_store32(h + 24, o->shard_count);
    htkv_store64(h + 28, o->hash_seed);
    htkv_store32(h + 60, htkv_crc32c(0, h, 60));
}

static int
seg_hdr_check(const unsigned char *h, uint32_t shard, uint64_t id)
{
    if (memcmp(h, SEG_MAGIC, 8) != 0 || htkv_load32(h + 60) != htkv_crc32c(0, h, 60)) {
        return HTKV_ECORRUPT;
    }
    if (htkv_load32(h + 8) > HTKV_FORMAT_VERSION) {
        return HTKV_EVERSION;
    }
    if (htkv_load32(h + 12) != shard || htkv_load64(h + 16) != id) {
        return HTKV_ECORRUPT;
    }
    return 0;
}

/*
 * Allocate [from, to) of the file: fallocate, or written zeros where the file system has no
 * fallocate or when @p zero_fill asks for them. Written zeros cost a write now but make every
 * later fdatasync cheaper: overwriting allocated, initialised blocks needs no journal commit,
 * while the first write into a fallocated (unwritten) extent does.
 */
static int
seg_allocate(int fd, uint64_t from, uint64_t to, bool zero_fill)
{
    int frc = htkv_fault_hit(HTKV_FAULT_ALLOC);
    if (frc != 0) {
        return frc;
    }
    if (!zero_fill) {
        if (fallocate(fd, 0, (off_t)from, (off_t)(to - from)) == 0) {
            return 0;
        }
        if (errno != EOPNOTSUPP && errno != ENOSYS) {
            return -errno;
        }
    }
    static const unsigned char zeros[65536];
    for (uint64_t off = from; off < to;) {
        size_t n = (size_t)(to - off < sizeof(zeros) ? to - off : sizeof(zeros));
        ssize_t w = pwrite(fd, zeros, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        off += (uint64_t)w;
    }
    return 0;
}

/* Free what seg_new() made of @p s, and @p s. */
static void
seg_free(struct seg *s)
{
    pthread_mutex_destroy(&s->sync_lock);
    htkv_mem_free(s);
}

static struct seg *
seg_new(const char *path, uint32_t shard, uint64_t id)
{
    size_t plen = strlen(path) + 1;
    struct seg *s = htkv_mem_calloc(1, sizeof(*s) + plen);
    if (s == NULL) {
        return NULL;
    }
    memcpy(s->path, path, plen);
    s->id = id;
    s->shard = shard;
    s->fd = -1;
    if (pthread_mutex_init(&s->sync_lock, NULL) != 0) {
        htkv_mem_free(s);
        return NULL;
    }
    atomic_init(&s->live_bytes, 0);
    atomic_init(&s->dead_bytes, 0);
    return s;
}

static int
seg_map(struct seg *s, bool writable)
{
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void *m = mmap(NULL, s->map_bytes, prot, MAP_SHARED, s->fd, 0);
    if (m == MAP_FAILED) {
        return -errno;
    }
    s->map = m;
    s->writable = writable;
    return 0;
}

bool
htkv_seg_file_has_record(int dir_fd, const char *path, uint64_t id, uint32_t val_max)
{
    int fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return errno != ENOENT;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return true;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size <= SEG_DATA_OFF) {
        close(fd);
        return false;
    }
    unsigned char *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        return true;
    }
    /* Records of another segment copied or renamed to this name check with the id in its
     * header: look for those too. */
    uint64_t hid = memcmp(m, SEG_MAGIC, 8) == 0 ? htkv_load64(m + 16) : id;
    struct rec_walk w, wh;
    htkv_rec_walk_init(&w, m, id, SEG_DATA_OFF, size, val_max);
    htkv_rec_walk_init(&wh, m, hid, SEG_DATA_OFF, size, val_max);
    bool found = htkv_rec_walk_seek(&w) || (hid != id && htkv_rec_walk_seek(&wh));
    munmap(m, size);
    return found;
}

void
htkv_seg_owner_of(const struct seg *s, struct seg_owner *o)
{
    o->shard = s->shard;
    o->shard_count = htkv_load32(s->map + 24);
    o->hash_seed = htkv_load64(s->map + 28);
}

int
htkv_seg_read_header(const char *path, struct seg_owner *o, uint64_t *id)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return -errno;
    }
    unsigned char h[SEG_HDR_BYTES];
    struct stat st;
    ssize_t n = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? pread(fd, h, sizeof(h), 0) : -1;
    int err = errno;
    close(fd);
    if (n < 0) {
        return err ? -err : -EINVAL;
    }
    if (n != (ssize_t)sizeof(h) || memcmp(h, SEG_MAGIC, 8) != 0 ||
        htkv_load32(h + 60) != htkv_crc32c(0, h, 60)) {
        return HTKV_ECORRUPT;
    }
    if (htkv_load32(h + 8) > HTKV_FORMAT_VERSION) {
        return HTKV_EVERSION;
    }
    o->shard = htkv_load32(h + 12);
    *id = htkv_load64(h + 16);
    o->shard_count = htkv_load32(h + 24);
    o->hash_seed = htkv_load64(h + 28);
    return 0;
}

/*
 * The descriptor of @p s in s->fd, reopened by its path when it was released
 * (htkv_seg_release_fd()). The file must still be the one mapped: a file replaced under the store
 * (another device or inode) is refused with HTKV_ECORRUPT, never written. 0 or an error.
 */
static int
seg_fd(struct seg *s)
{
    if (HTKV_LIKELY(s->fd >= 0)) {
        return 0;
    }
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN)
                 ? -1
                 : open(s->path, (s->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        htkv_set_error("%s: cannot reopen the segment: %s", s->path, strerror(errno));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_dev != s->dev || st.st_ino != s->ino) {
        close(fd);
        htkv_set_error("%s: the segment file was replaced while the store was open", s->path);
        return HTKV_ECORRUPT;
    }
    s->fd = fd;
    return 0;
}

void
htkv_seg_release_fd(struct seg *s)
{
    HTKV_ASSERT(atomic_load_explicit(&s->io_pins, memory_order_acquire) == 0);
    HTKV_ASSERT(s->wbuf_len == 0);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

int
htkv_seg_create(const char *dir, const struct seg_owner *o, uint64_t id, uint64_t cap,
                uint64_t first, bool zero_fill, struct seg **out)
{
    uint32_t shard = o->shard;
    HTKV_ASSERT(cap >= SEG_DATA_OFF && cap <= SEG_BYTES_LIMIT);
    *out = NULL;
    char path[4096];
    htkv_seg_path(path, sizeof(path), dir, id);
    struct seg *s = seg_new(path, shard, id);
    if (s == NULL) {
        return -ENOMEM;
    }
    int rc;
    int frc = htkv_fault_hit(HTKV_FAULT_CREATE);
    s->fd = frc != 0 ? (errno = -frc, -1) : open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        rc = -errno;
        goto fail_free;
    }
    uint64_t want = first > SEG_GROW_MIN ? first : SEG_GROW_MIN;
    want = htkv_align_up(want, 4096);
    if (want > cap) {
        want = cap;
    }
    s->zero_fill = zero_fill;
    rc = seg_allocate(s->fd, 0, want, zero_fill);
    if (rc != 0) {
        goto fail_unlink;
    }
    unsigned char h[SEG_HDR_BYTES];
    htkv_seg_hdr_encode(h, o, id);
    if (pwrite(s->fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        rc = errno ? -errno : -EIO;
        goto fail_unlink;
    }
    if (fdatasync(s->fd) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    htkv_fault_synced(s->fd);
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        rc = -errno;
        goto fail_unlink;
    }
    s->dev = st.st_dev; /* the file seg_fd() may reopen must be this one */
    s->ino = st.st_ino;
    s->map_bytes = cap;
    s->file_bytes = want;
    s->tail = SEG_DATA_OFF;
    rc = seg_map(s, true);
    if (rc != 0) {
        goto fail_unlink;
    }
    *out = s;
    return 0;

fail_unlink:
    /* Not in the manifest yet. When the unlink fails too, the file is an orphan that the next
     * writable open removes; its id is not handed out again (the manifest moved past it). */
    (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(path));
    close(s->fd);
fail_free:
    seg_free(s);
    return rc;
}

int
htkv_seg_open(const char *path, uint32_t shard, uint64_t id, uint64_t cap, bool writable,
              struct seg **out)
{
    *out = NULL;
    struct seg *s = seg_new(path, shard, id);
    if (s == NULL) {
        return -ENOMEM;
    }
    int rc;
    s->fd = htkv_fault_fails(HTKV_FAULT_OPEN)
                ? -1
                : open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (s->fd < 0) {
        rc = -errno;
        goto fail_free;
    }
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        rc = -errno;
        goto fail_close;
    }
    unsigned char h[SEG_HDR_BYTES];
    if ((uint64_t)st.st_size < SEG_HDR_BYTES) {
        htkv_set_error("%s: segment shorter than its header", path);
        rc = HTKV_ECORRUPT;
        goto fail_close;
    }
    /* A failed read is an I/O error, not damage: the caller sees the error itself. */
    ssize_t r = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(s->fd, h, sizeof(h), 0);
    if (r != (ssize_t)sizeof(h)) {
        rc = r < 0 ? -errno : HTKV_ECORRUPT;
        htkv_set_error("%s: cannot read the segment header: %s", path, htkv_strerror(rc));
        goto fail_close;
    }
    rc = seg_hdr_check(h, shard, id);
    if (rc != 0) {
        htkv_set_error("%s: bad segment header at offset 0", path);
        goto fail_close;
    }
    if ((uint64_t)st.st_size > SEG_BYTES_LIMIT) {
        htkv_set_error("%s: segment larger than 4 GiB", path);
        rc = HTKV_ECORRUPT;
        goto fail_close;
    }
    s->file_bytes = (uint64_t)st.st_size;
    s->dev = st.st_dev; /* the file seg_fd() may reopen must be this one */
    s->ino = st.st_ino;
    s->map_bytes = cap > s->file_bytes ? cap : s->file_bytes;
    s->tail = SEG_DATA_OFF;
    rc = seg_map(s, writable);
    if (rc != 0) {
        goto fail_close;
    }
    *out = s;
    return 0;

fail_close:
    close(s->fd);
fail_free:
    seg_free(s);
    return rc;
}

void
htkv_seg_map_advance(struct seg *s, uint64_t off)
{
    uint64_t from = off & ~(uint64_t)(SEG_MAP_CHUNK - 1);
    uint64_t to = s->tail & ~(uint64_t)(SEG_MAP_CHUNK - 1);
    /* Only whole chunks behind the tail, which appends do not reach again (unless a failed
     * write-out rolls the tail back: a store there faults its page in again, which is all a
     * dropped entry ever costs). A failure (a locked mapping) leaves the pages mapped, which is
     * only slower. */
    if (to > from) {
        (void)madvise(s->map + from, to - from, MADV_DONTNEED);
    }
}

int
htkv_seg_reserve(struct seg *s, uint64_t need)
{
    HTKV_ASSERT(s->writable);
    HTKV_ASSERT(s->tail <= s->file_bytes);
    uint64_t end = s->tail + need;
    if (end <= s->file_bytes) {
        return 0;
    }
    if (end > s->map_bytes) {
        return HTKV_EFULL;
    }
    /* Grow by at least the current size (doubling) so appends allocate O(log n) times. */
    uint64_t grow = s->file_bytes > SEG_GROW_MIN ? s->file_bytes : SEG_GROW_MIN;
    uint64_t target = s->file_bytes + grow;
    if (target < end) {
        target = end;
    }
    target = htkv_align_up(target, 4096);
    if (target > s->map_bytes) {
        target = s->map_bytes;
    }
    int rc = seg_fd(s);
    if (rc == 0) {
        rc = seg_allocate(s->fd, s->file_bytes, target, s->zero_fill);
    }
    if (rc != 0) {
        return rc;
    }
    s->file_bytes = target;
    HTKV_ASSERT(s->tail + need <= s->file_bytes);
    return 0;
}

int
htkv_seg_grow_to(struct seg *s, uint64_t size)
{
    HTKV_ASSERT(s->writable);
    HTKV_ASSERT(size <= s->map_bytes);
    if (size <= s->file_bytes) {
        return 0;
    }
    int rc = seg_fd(s);
    if (rc == 0) {
        rc = seg_allocate(s->fd, s->file_bytes, size, s->zero_fill);
    }
    if (rc == 0) {
        s->file_bytes = size;
    }
    return rc;
}

/* A write-through buffer larger than this is given back after each write-out. */
#define WBUF_KEEP (256u << 10)

int
htkv_seg_wbuf_reserve(struct seg *s, uint64_t need)
{
    if (!s->wt_now && need >= SEG_WT_MIN_BYTES && !s->direct_since_out) {
        s->wt_now = true;
    }
    if (!s->wt_now || s->wbuf_cap - s->wbuf_len >= need) {
        return 0;
    }
    size_t cap = s->wbuf_cap ? s->wbuf_cap : 4096;
    while (cap - s->wbuf_len < need) {
        cap *= 2;
    }
    unsigned char *n = htkv_mem_realloc(s->wbuf, cap);
    if (n == NULL) {
        return -ENOMEM;
    }
    s->wbuf = n;
    s->wbuf_cap = cap;
    return 0;
}

int
htkv_seg_write_out(struct seg *s)
{
    s->wt_now = s->write_through;
    s->direct_since_out = false;
    if (s->wbuf_len == 0) {
        return 0;
    }
    HTKV_ASSERT(s->wbuf_off + s->wbuf_len == s->tail);
    int rc = seg_fd(s);
    if (rc == 0) {
        rc = htkv_pwrite_all(s->fd, s->wbuf, s->wbuf_len, (off_t)s->wbuf_off);
    }
    if (rc != 0) {
        /* What reached the file beyond the tail is overwritten by the next appends, or, after a
         * crash, read by recovery as a torn tail. */
        s->tail = s->wbuf_off;
        s->records -= s->wbuf_recs;
    }
    s->wbuf_len = 0;
    s->wbuf_recs = 0;
    if (s->wbuf_cap > WBUF_KEEP) {
        htkv_mem_free(s->wbuf);
        s->wbuf = NULL;
        s->wbuf_cap = 0;
    }
    return rc;
}

void
htkv_seg_writeback_start(struct seg *s)
{
    uint64_t end = s->tail & ~(uint64_t)4095;
    if (end < s->wb_from + SEG_WRITEBACK_CHUNK || s->fd < 0) {
        return; /* not enough yet, or the descriptor was released (the cache of open files) */
    }
    (void)sync_file_range(s->fd, (off_t)s->wb_from, (off_t)(end - s->wb_from),
                          SYNC_FILE_RANGE_WRITE);
    s->wb_from = end;
}

/* Record or apply the file's first failed sync (sync_lock held): see sync_err. */
static int
seg_sync_settle(struct seg *s, int res)
{
    if (res != 0 && s->sync_err == 0) {
        s->sync_err = res;
    }
    return s->sync_err;
}

int
htkv_seg_sync(struct seg *s)
{
    pthread_mutex_lock(&s->sync_lock);
    int rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    if (rc == 0) {
        rc = seg_fd(s);
    }
    if (rc == 0 && fdatasync(s->fd) != 0) {
        rc = -errno;
    }
    rc = seg_sync_settle(s, rc);
    if (rc == 0) {
        htkv_fault_synced(s->fd);
    }
    pthread_mutex_unlock(&s->sync_lock);
    return rc;
}

int
htkv_seg_sync_result(struct seg *s, int res)
{
    pthread_mutex_lock(&s->sync_lock);
    res = seg_sync_settle(s, res);
    pthread_mutex_unlock(&s->sync_lock);
    return res;
}

int
htkv_seg_zero(struct seg *s, uint64_t from, uint64_t to)
{
    HTKV_ASSERT(from <= to);
    HTKV_ASSERT(to <= s->file_bytes);
    if (from == to) {
        return 0;
    }
    int rc = seg_fd(s);
    if (rc != 0) {
        return rc;
    }
    /* Write through the file, not the mapping: the same page cache pages either way. */
    static const unsigned char zeros[65536];
    for (uint64_t off = from; off < to;) {
        size_t n = (size_t)(to - off < sizeof(zeros) ? to - off : sizeof(zeros));
        ssize_t w = pwrite(s->fd, zeros, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        off += (uint64_t)w;
    }
    return htkv_seg_sync(s);
}

int
htkv_seg_trim(struct seg *s)
{
    HTKV_ASSERT(s->writable);
    uint64_t keep = htkv_align_up(s->tail, 4096);
    if (keep >= s->file_bytes) {
        return 0;
    }
    int rc = seg_fd(s);
    if (rc != 0) {
        return rc;
    }
    if (ftruncate(s->fd, (off_t)keep) != 0) {
        return -errno;
    }
    s->file_bytes = keep;
    return fsync(s->fd) == 0 ? 0 : -errno;
}

bool
htkv_seg_all_zero(const unsigned char *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

uint64_t
htkv_seg_last_nonzero_end(const unsigned char *map, uint64_t from, uint64_t end)
{
    uint64_t i = end;
    while (i > from && (i - from) >= 8 && htkv_load64(map + i - 8) == 0) {
        i -= 8;
    }
    while (i > from && map[i - 1] == 0) {
        i--;
    }
    return i;
}

/*
 * The data regions of [from, end) that the file system reports (SEEK_DATA, SEEK_HOLE) are read;
 * its holes are not: a hole reads as zeros by definition, and the unwritten space that a segment
 * was preallocated with is one (ext4, XFS, tmpfs), so a torn tail's scan reads the records' few
 * pages instead of the whole segment. A file system without the two seeks reports one data
 * region to the end of the file: the whole range is read, as by htkv_seg_last_nonzero_end().
 * A caller that must not miss a byte written through the page cache but not yet to the disk
 * (a crash's torn tail) fdatasyncs the file first: some file systems have reported such dirty
 * pages over unwritten extents as a hole.
 */
uint64_t
htkv_seg_data_end(const struct seg *s, uint64_t from, uint64_t end)
{
    uint64_t last = from;
    uint64_t pos = from;
    while (s->fd >= 0 && pos < end) {
        off_t d = lseek(s->fd, (off_t)pos, SEEK_DATA);
        if (d < 0 && errno == ENXIO) {
            return last; /* nothing but a hole from pos to the end of the file */
        }
        off_t h = d < 0 ? -1 : lseek(s->fd, d, SEEK_HOLE);
        if (h < 0 || (uint64_t)d < pos || h <= d) {
            break; /* no answer, or one that makes no sense: read the rest */
        }
        uint64_t lo = (uint64_t)d < end ? (uint64_t)d : end;
        uint64_t hi = (uint64_t)h < end ? (uint64_t)h : end;
        uint64_t e = htkv_seg_last_nonzero_end(s->map, lo, hi);
        last = e > lo ? e : last;
        pos = hi;
    }
    uint64_t e = pos < end ? htkv_seg_last_nonzero_end(s->map, pos, end) : pos;
    return e > pos ? e : last;
}

void
htkv_seg_close(struct seg *s)
{
    if (s == NULL) {
        return;
    }
    if (s->map != NULL) {
        munmap(s->map, s->map_bytes);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    htkv_mem_free(s->wbuf);
    if (s->kix != NULL) {
        /* Its file stays: a clean close names it for the next open (closing.h), which removes
         * any it does not take. */
        htkv_kix_free(s->kix);
    }
    seg_free(s);
}

/* ---- appending and sealing (the shard's lock held on the active segment) ------------------ */

int
htkv_seg_seal(struct seg *s)
{
    unsigned char p[REC_SEAL_PAYLOAD];
    htkv_store64(p, s->records);
    htkv_store64(p + 8, s->tail);
    int rc = htkv_seg_reserve(s, SEG_SEAL_BYTES);
    if (rc == 0) {
        htkv_seg_append(s, REC_SEAL, 0, 1, NULL, 0, p, REC_SEAL_PAYLOAD);
        atomic_fetch_add_explicit(&s->dead_bytes, SEG_SEAL_BYTES, memory_order_relaxed);
    } else if (rc != HTKV_EFULL) {
        return rc;
    }
    /* HTKV_EFULL: a segment reopened with its mapping ending right after its data (an oversized
     * record's segment, or a larger max_segment_bytes then) has no room for SEAL. The record is
     * an optimisation only: recovery scans a segment without it the same way. */
    rc = htkv_seg_sync(s);
    if (rc == 0) {
        s->sealed = true;
    }
    return rc;
}

/* ---- removal ------------------------------------------------------------------------------ */

void
htkv_seg_close_cb(void *p)
{
    htkv_seg_close(p);
}

/* The path of a file beside segment file @p seg_path: its name with @p ext for ".seg". */
static void
seg_sibling_path(char *buf, size_t cap, const char *seg_path, const char *ext)
{
    size_t n = strlen(seg_path);
    HTKV_ASSERT(n > 4 && strcmp(seg_path + n - 4, ".seg") == 0);
    int w = snprintf(buf, cap, "%.*s%s", (int)(n - 4), seg_path, ext);
    HTKV_ASSERT(w > 0 && (size_t)w < cap);
}

void
htkv_hint_path(char *buf, size_t cap, const char *seg_path)
{
    seg_sibling_path(buf, cap, seg_path, ".hint");
}

void
htkv_kix_path(char *buf, size_t cap, const char *seg_path)
{
    seg_sibling_path(buf, cap, seg_path, ".kix");
}

void
htkv_seg_remove_files(const struct htkv_log_sink *log, struct seg *s)
{
    while (atomic_load_explicit(&s->io_pins, memory_order_acquire) != 0) {
        sched_yield(); /* an fdatasync started while it was active: milliseconds at most */
    }
    char hint[4200], kix[4200];
    htkv_hint_path(hint, sizeof(hint), s->path);
    htkv_kix_path(kix, sizeof(kix), s->path);
    /* The segment is out of the manifest already (its drop is durable), so a file an unlink
     * leaves behind is an orphan: never read, removed by the next writable open. The failure is
     * logged and costs disk space until then, never data: the caller goes on. The mapping stays
     * valid until the segment is closed. */
    const char *paths[3] = { s->path, hint, kix };
    for (int i = 0; i < 3; i++) {
        if ((htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(paths[i])) != 0 && errno != ENOENT) {
            htkv_log(log, HTKV_LOG_WARN, "%s: not removed (%s); the next open removes it", paths[i],
                     strerror(errno));
        }
    }
}
