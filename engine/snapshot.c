/*
 * snapshot.c - snapshot files: the whole store at one instant, and restoring one.
 *
 * File format (little-endian):
 *
 *   header (64 B): magic "HTKVSNP1", format u32, zero u32, version u64, count u64,
 *                  data_bytes u64, zero[20], crc32c u32 of bytes 0..59
 *   count entries, in strictly increasing unsigned byte order of their keys:
 *                  key_len u32, val_len u32, version u64, key, value   (no padding)
 *   trailer (16 B): magic "HTKVSEND", crc32c u32 of the data_bytes entry bytes, zero u32
 *
 * `version` is the store's version the snapshot is: every write at or below it and none above
 * (the view it was read from is a cut at its highest version, htkv_view_open_cut(); a caller
 * may open that view itself and write it later, htkv_view_snapshot_write(), or stream the same
 * bytes to a sink of its own, htkv_view_snapshot_stream()). Only
 * live keys are written, with the version of the write that stored each, so two stores that
 * applied the same writes with the same versions produce the same bytes.
 *
 * Writing reads a view (htkv_view_scan() over everything) and streams it to a temporary file of
 * its own (PATH.tmp.PID.N), then fsync + rename + fsync of the directory: a crash leaves the old
 * file or the new one, and concurrent writes to one path each rename a whole file.
 *
 * Restoring checks the whole file first (every length, the order, both checksums) and changes
 * nothing if anything is wrong. Then, with every shard's lock held (writers wait; readers go on
 * and see the old contents until each shard is switched):
 *
 *   write new segments (ids never used) --> build their indexes aside --> fsync them and the
 *   shard directories --> write a fresh manifest listing only them and rename CURRENT (the commit
 *   point) --> switch every shard's index and segment list --> retire the old ones
 *
 * Each new segment is recorded as gone (MAN_SEG_GONE) in the old manifest before its file is
 * created, and the new manifest calls the old segments gone: a crash before the rename leaves
 * the old manifest, whose open removes the new files; after it, the new manifest, whose open
 * removes the old files. Never a mix, and nothing removed on a guess.
 *
 * Invariants
 *   1. Nothing on disk or in memory changes before the file has been checked whole (except the
 *      version mark below, which only rises).
 *   2. After a restore, the store holds exactly the snapshot's keys with their versions. The
 *      restore has a version R: the snapshot's, or, when the store had gone past it (a
 *      rollback), one above everything applied. R is reserved and recorded as applied before
 *      anything changes and becomes the change feed's floor; next_version exceeds R and every
 *      version used before, also after a reopen.
 *   3. A restore runs with no view open (views.lock held, views.open == 0), every shard's lock
 *      held, and the compactor's lock held: nothing else reads the old indexes by version.
 *   4. The writer's buffer never holds more than SNAP_BUF_BYTES; the file it writes is the
 *      header, exactly data_bytes of entries (keys strictly increasing, versions in
 *      [1, header version]) and the trailer, so that snap_check() accepts it.
 *   5. A checked snapshot's entries tile [SNAP_HDR_BYTES, SNAP_HDR_BYTES + data_bytes) exactly;
 *      restore_build() walks them without checking again and places each in its hash's shard.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/snapshot.h"
#include "engine/store.h"
#include "engine/zombie.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/rec.h"
#include "engine/flat.h"
#include "engine/snapfile.h"
#include "engine/testhook.h"
#include "engine/view.h"
#include "uring/ur_fault.h"

/* Output buffer of the writer: 1 MiB per write() call. */
#define SNAP_BUF_BYTES (1u << 20)

/* ---- writing ---------------------------------------------------------------------------- */

struct snap_out {
    int fd;                  /* the file written, or -1 for a sink */
    htkv_snapshot_sink sink; /* htkv_view_snapshot_stream(): takes each flushed piece */
    void *sink_ctx;
    unsigned char *buf;
    size_t used;
    uint64_t off; /* file offset of buf[0] */
    uint32_t crc; /* of the entry bytes so far */
    int rc;
};

static void
out_flush(struct snap_out *o)
{
    if (o->sink != NULL) {
        if (o->rc == 0 && o->used > 0) {
            int rc = o->sink(o->sink_ctx, o->off, o->buf, o->used);
            o->rc = rc < 0 ? rc : 0;
        }
        o->off += o->used;
        o->used = 0;
        return;
    }
    int frc = htkv_fault_hit(HTKV_FAULT_WRITE);
    if (frc != 0 && o->rc == 0) {
        o->rc = frc == -HTKV_FAULT_TORN ? -EIO : frc;
    }
    size_t done = 0;
    while (o->rc == 0 && done < o->used) {
        ssize_t w = pwrite(o->fd, o->buf + done, o->used - done, (off_t)(o->off + done));
        if (w < 0 && errno != EINTR) {
            o->rc = -errno;
        } else if (w > 0) {
            done += (size_t)w;
        }
    }
    HTKV_ASSERT(o->rc != 0 || done == o->used);
    o->off += o->used;
    o->used = 0;
}

static void
out_put(struct snap_out *o, const void *p, size_t n, bool entry)
{
    if (entry) {
        o->crc = htkv_crc32c(o->crc, p, n);
    }
    const unsigned char *c = p;
    while (n > 0 && o->rc == 0) {
        size_t k = SNAP_BUF_BYTES - o->used < n ? SNAP_BUF_BYTES - o->used : n;
        memcpy(o->buf + o->used, c, k);
        o->used += k;
        c += k;
        n -= k;
        if (o->used == SNAP_BUF_BYTES) {
            out_flush(o);
        }
    }
    HTKV_DASSERT(o->used < SNAP_BUF_BYTES); /* invariant 4 */
}

/* Stream view @p v into @p o after the header; returns the entry count or an error. */
static int
write_entries(htkv_view *v, struct snap_out *o, uint64_t *count, uint64_t *data_bytes)
{
    htkv_iter *it;
    int rc = htkv_view_scan(v, NULL, 0, NULL, 0, &it);
    if (rc != 0) {
        return rc;
    }
    const void *k, *val;
    size_t klen, vlen;
    *count = *data_bytes = 0;
#ifdef HTKV_DEBUG
    const void *pk = NULL; /* the key before, in a mapping the view keeps */
    size_t plen = 0;
#endif
    uint64_t start = o->off + o->used;
    while ((rc = htkv_iter_next(it, &k, &klen, &val, &vlen)) == 1 && o->rc == 0) {
        /* Invariant 4: what snap_check() will demand of the file. */
        HTKV_DASSERT(klen > 0 && klen <= HTKV_KEY_MAX);
        HTKV_DASSERT(htkv_iter_version(it) >= 1 && htkv_iter_version(it) <= htkv_view_version(v));
#ifdef HTKV_DEBUG
        HTKV_DASSERT(pk == NULL || htkv_key_cmp(pk, (uint32_t)plen, k, (uint32_t)klen) < 0);
        pk = k;
        plen = klen;
#endif
        unsigned char eh[SNAP_ENT_HDR];
        htkv_store32(eh, (uint32_t)klen);
        htkv_store32(eh + 4, (uint32_t)vlen);
        htkv_store64(eh + 8, htkv_iter_version(it));
        out_put(o, eh, sizeof(eh), true);
        out_put(o, k, klen, true);
        out_put(o, val, vlen, true);
        (*count)++;
        *data_bytes += SNAP_ENT_HDR + klen + vlen;
    }
    HTKV_ASSERT(o->rc != 0 || rc < 0 || o->off + o->used - start == *data_bytes);
    htkv_iter_destroy(it);
    return rc < 0 ? rc : o->rc;
}

/* Directory part of @p path into @p buf ("." when there is none). */
static void
dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(buf, cap, ".");
    } else if (slash == path) {
        snprintf(buf, cap, "/");
    } else {
        snprintf(buf, cap, "%.*s", (int)(slash - path), path);
    }
}

static int
fsync_dir(const char *dir)
{
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Temporary names of snapshot writes: one per call, so that concurrent writes to one path never
 * share a file (each renames a complete file of its own; the last rename wins). */
static _Atomic uint64_t snap_tmp_seq;

/* The snapshot of view @p v (a cut: the store at its version) into @p o: the header's place,
 * the entries, the trailer, then the header at offset 0 with the counts. 0 or an error. */
static int
snapshot_out(htkv_view *v, struct snap_out *o)
{
    unsigned char h[SNAP_HDR_BYTES] = { 0 };
    out_put(o, h, sizeof(h), false); /* placeholder: counts are known at the end */
    uint64_t count = 0, data_bytes = 0;
    int rc = write_entries(v, o, &count, &data_bytes);
    if (rc == 0) {
        unsigned char t[SNAP_TRAILER_BYTES];
        htkv_snapfile_trailer_encode(t, o->crc);
        out_put(o, t, sizeof(t), false);
        out_flush(o);
        rc = o->rc;
    }
    if (rc == 0) {
        htkv_snapfile_hdr_encode(h, htkv_view_version(v), count, data_bytes);
        o->off = 0;
        out_put(o, h, sizeof(h), false);
        out_flush(o);
        rc = o->rc;
    }
    return rc;
}

/* Write view @p v (a cut: the store at its version) to @p path; @p v stays open. */
static int
snapshot_write(htkv_view *v, const char *path)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.%llu", path, (long)getpid(),
                 (unsigned long long)atomic_fetch_add(&snap_tmp_seq, 1)) >= (int)sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    int rc = 0;
    struct snap_out o = { .fd = -1 };
    bool renamed = false;
    o.buf = htkv_mem_alloc(SNAP_BUF_BYTES);
    if (o.buf == NULL) {
        return -ENOMEM;
    }
    o.fd = htkv_fault_fails(HTKV_FAULT_CREATE)
               ? -1
               : open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (o.fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = snapshot_out(v, &o);
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    }
    if (rc == 0 && fsync(o.fd) != 0) {
        rc = -errno;
    }
    htkv_compact_hook_call("snapshot-written");
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_RENAME);
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    renamed = rc == 0;
    if (rc == 0) {
        /* After the rename @p path holds the complete, synced new file whatever happens here;
         * a failure to sync the directory is reported, since a power loss may take the name
         * back (to the previous file at @p path, or to none). */
        char dir[4200];
        dir_of(path, dir, sizeof(dir));
        rc = fsync_dir(dir);
    }
out:
    if (o.fd >= 0) {
        close(o.fd);
        if (rc != 0 && !renamed) {
            /* A .tmp that cannot be removed either is only a file (for the store's own
             * snapshots, removed by the next writable open). */
            (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(tmp));
        }
    }
    htkv_mem_free(o.buf);
    return rc;
}

/* The store now, at one version: the file says it, and a replica that installs the file replays
 * the change feed from there. */
static int
snapshot_of_store(struct htkv_db *db, const char *path)
{
    htkv_view *v;
    int rc = htkv_view_open_cut(db, &v);
    if (rc == 0) {
        rc = snapshot_write(v, path);
        htkv_view_close(v);
    }
    return rc;
}

int
htkv_snapshot_write(htkv_db *db, const char *path)
{
    if (db == NULL || path == NULL || path[0] == '\0') {
        return htkv_einval(__func__);
    }
    if (atomic_load(&db->closing)) {
        return HTKV_ECLOSED;
    }
    return snapshot_of_store(db, path);
}

/* -EINVAL unless @p v is the store at one version (htkv_view_open_cut()). */
static int
check_cut(const htkv_view *v)
{
    if (htkv_view_complete(v) != htkv_view_version(v)) {
        htkv_set_error("the view is not the store at one version: open it with "
                       "htkv_view_open_cut()");
        return -EINVAL;
    }
    return 0;
}

int
htkv_view_snapshot_write(htkv_view *v, const char *path)
{
    if (v == NULL || path == NULL || path[0] == '\0') {
        return htkv_einval(__func__);
    }
    int rc = check_cut(v);
    return rc == 0 ? snapshot_write(v, path) : rc;
}

int
htkv_view_snapshot_stream(htkv_view *v, htkv_snapshot_sink sink, void *ctx)
{
    if (v == NULL || sink == NULL) {
        return htkv_einval(__func__);
    }
    int rc = check_cut(v);
    if (rc != 0) {
        return rc;
    }
    struct snap_out o = { .fd = -1, .sink = sink, .sink_ctx = ctx };
    o.buf = htkv_mem_alloc(SNAP_BUF_BYTES);
    if (o.buf == NULL) {
        return -ENOMEM;
    }
    rc = snapshot_out(v, &o);
    htkv_mem_free(o.buf);
    return rc;
}

/*
 * Largest NNNNNN of DIR/snapshot-NNNNNN.snap (0 when there is none) into *seq. 0 or -errno of
 * opendir: without the listing no snapshot is written, since a number at or below an existing
 * one would make an older snapshot look like the newest.
 */
static int
last_snapshot_seq(struct htkv_db *db, uint64_t *seq)
{
    DIR *d = htkv_fault_fails(HTKV_FAULT_OPEN) ? NULL : opendir(db->dir);
    uint64_t max = 0;
    if (d == NULL) {
        return -errno;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned long long n;
        char tail[8];
        if (sscanf(de->d_name, "snapshot-%6llu.%4s", &n, tail) == 2 && strcmp(tail, "snap") == 0 &&
            n > max) {
            max = n;
        }
    }
    closedir(d);
    *seq = max;
    return 0;
}

int
htkv_snapshot_emit(struct htkv_db *db)
{
    HTKV_ASSERT(db_mutex_locked(&db->compactor.lock)); /* it guards snapshot_seq */
    if (db->compactor.snapshot_seq == 0) {
        int rc = last_snapshot_seq(db, &db->compactor.snapshot_seq);
        if (rc != 0) {
            return rc;
        }
    }
    uint64_t seq = db->compactor.snapshot_seq + 1;
    char path[4200];
    snprintf(path, sizeof(path), "%s/snapshot-%06llu.snap", db->dir, (unsigned long long)seq);
    int rc = snapshot_of_store(db, path);
    if (rc != 0) {
        return rc;
    }
    db->compactor.snapshot_seq = seq;
    /* The new one is durable: the older ones are redundant. One that cannot be removed stays
     * (logged) and is tried again after the next snapshot: a lower number never passes for the
     * newest one. */
    for (uint64_t n = seq - 1; n > 0 && seq - n <= 1000000; n--) {
        snprintf(path, sizeof(path), "%s/snapshot-%06llu.snap", db->dir, (unsigned long long)n);
        if ((htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(path)) == 0) {
            continue;
        }
        if (errno != ENOENT) {
            htkv_db_log(db, HTKV_LOG_WARN, "%s: older snapshot not removed: %s", path,
                        strerror(errno));
        } else if (seq - n > 16) {
            break; /* older numbers were removed by earlier runs */
        }
    }
    return 0;
}

/* ---- checking ------------------------------------------------------------------------------ */

struct snap_in {
    const unsigned char *map;
    uint64_t size;
    uint64_t version;
    uint64_t count;
    uint64_t data_bytes;
};

/* Offset of the damage snap_bad() reported last on this thread (htkv_snapshot_check_file()). */
static _Thread_local uint64_t snap_bad_off;

static int
snap_bad(const char *path, const char *what, uint64_t off)
{
    htkv_set_error("%s: %s at offset %llu", path, what, (unsigned long long)off);
    snap_bad_off = off;
    return HTKV_ECORRUPT;
}

/* Check every byte of the mapped snapshot, values up to @p max_value_bytes long.
 * 0, HTKV_ECORRUPT or HTKV_EVERSION (htkv_last_error() says why). */
static int
snap_check(uint32_t max_value_bytes, const char *path, struct snap_in *in)
{
    const unsigned char *m = in->map;
    if (in->size < SNAP_HDR_BYTES + SNAP_TRAILER_BYTES || memcmp(m, SNAP_MAGIC, 8) != 0) {
        return snap_bad(path, "not an htkv snapshot", 0);
    }
    if (!htkv_snapfile_hdr_crc_ok(m)) {
        return snap_bad(path, "header checksum mismatch", 0);
    }
    struct snap_hdr sh;
    htkv_snapfile_hdr_decode(m, &sh);
    if (sh.format > HTKV_FORMAT_VERSION) {
        htkv_set_error("%s: format version %u is newer than %u", path, sh.format,
                       HTKV_FORMAT_VERSION);
        return HTKV_EVERSION;
    }
    in->version = sh.version;
    if (in->version > REC_VERSION_MAX) {
        return snap_bad(path, "version out of range", SNAP_HDR_VERSION);
    }
    in->count = sh.count;
    in->data_bytes = sh.data_bytes;
    if (in->data_bytes != in->size - SNAP_HDR_BYTES - SNAP_TRAILER_BYTES) {
        return snap_bad(path, "size does not match the header", 0);
    }
    const unsigned char *t = m + in->size - SNAP_TRAILER_BYTES;
    if (memcmp(t, SNAP_END_MAGIC, 8) != 0 || htkv_load32(t + SNAP_TRAILER_ZERO) != 0) {
        return snap_bad(path, "bad trailer", in->size - SNAP_TRAILER_BYTES);
    }
    if (htkv_load32(t + SNAP_TRAILER_CRC) != htkv_crc32c(0, m + SNAP_HDR_BYTES, in->data_bytes)) {
        return snap_bad(path, "entry checksum mismatch", SNAP_HDR_BYTES);
    }
    uint64_t off = SNAP_HDR_BYTES, end = SNAP_HDR_BYTES + in->data_bytes, n = 0;
    const unsigned char *pk = NULL;
    uint32_t plen = 0;
    while (off < end) {
        if (end - off < SNAP_ENT_HDR) {
            return snap_bad(path, "truncated entry", off);
        }
        uint32_t klen = htkv_load32(m + off), vlen = htkv_load32(m + off + 4);
        uint64_t version = htkv_load64(m + off + 8);
        if (klen == 0 || klen > HTKV_KEY_MAX || (uint64_t)klen + vlen > end - off - SNAP_ENT_HDR) {
            return snap_bad(path, "entry length out of range", off);
        }
        if (vlen > max_value_bytes) {
            htkv_set_error("%s: value of %u bytes at offset %llu exceeds max_value_bytes (%u)",
                           path, vlen, (unsigned long long)off, max_value_bytes);
            return HTKV_ETOOBIG;
        }
        if (version == 0 || version > in->version) {
            return snap_bad(path, "entry version out of range", off);
        }
        const unsigned char *k = m + off + SNAP_ENT_HDR;
        if (pk != NULL) {
            int c = memcmp(pk, k, plen < klen ? plen : klen);
            if (c > 0 || (c == 0 && plen >= klen)) {
                return snap_bad(path, "keys out of order", off);
            }
        }
        pk = k;
        plen = klen;
        off += SNAP_ENT_HDR + klen + vlen;
        n++;
    }
    HTKV_ASSERT(off == end); /* the lengths were checked against end - off */
    if (n != in->count) {
        return snap_bad(path, "entry count does not match the header", 0);
    }
    return 0;
}

/*
 * Map the snapshot at @p path read-only into @p in and check it whole (snap_check()). On return
 * in->map is the mapping (munmap it) or NULL. 0, HTKV_ECORRUPT, HTKV_EVERSION, HTKV_ETOOBIG or
 * -errno of open/fstat/mmap (htkv_last_error() names the file).
 */
static int
snap_map_check(const char *path, uint32_t max_value_bytes, struct snap_in *in)
{
    /* O_NONBLOCK: a FIFO or device named by mistake must not block the caller (who may hold
     * the store's locks); only a regular file is read. */
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int rc = -errno;
        htkv_set_error("%s: cannot open: %s", path, htkv_strerror(rc));
        return rc;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    if (rc == 0 && !S_ISREG(st.st_mode)) {
        htkv_set_error("%s: not a regular file", path);
        rc = -EINVAL;
    }
    if (rc == 0 && st.st_size < (off_t)(SNAP_HDR_BYTES + SNAP_TRAILER_BYTES)) {
        rc = snap_bad(path, "too short for a snapshot", 0);
    }
    if (rc == 0) {
        /* The file is read through this mapping: its failure stands for a failed read. */
        in->size = (uint64_t)st.st_size;
        void *m = htkv_fault_fails(HTKV_FAULT_READ)
                      ? MAP_FAILED
                      : mmap(NULL, in->size, PROT_READ, MAP_PRIVATE, fd, 0);
        rc = m == MAP_FAILED ? -errno : 0;
        in->map = rc == 0 ? m : NULL;
        if (rc != 0) {
            htkv_set_error("%s: cannot be read: %s", path, htkv_strerror(rc));
        }
    }
    close(fd);
    if (rc == 0) {
        rc = snap_check(max_value_bytes, path, in);
    }
    return rc;
}

/* ---- restoring ----------------------------------------------------------------------------- */

/* What restore builds for one shard before the commit point. */
struct shard_new {
    struct seg **segs;
    size_t nsegs, cap;
    struct hidx idx;
    bool idx_ready;
    uint64_t keys;
    uint64_t bytes; /* records to write */
};

static int
new_seg(struct htkv_db *db, struct shard *sh, struct shard_new *n, uint64_t need)
{
    if (n->nsegs == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 4;
        struct seg **p = htkv_mem_realloc(n->segs, cap * sizeof(*p));
        if (p == NULL) {
            return -ENOMEM;
        }
        n->segs = p;
        n->cap = cap;
    }
    uint64_t seal = REC_HDR_BYTES + REC_SEAL_PAYLOAD;
    uint64_t cap = db->cfg.max_segment_bytes;
    if (cap < SEG_DATA_OFF + need + seal) {
        cap = htkv_align_up(SEG_DATA_OFF + need + seal, 4096);
    }
    if (cap > SEG_BYTES_LIMIT) {
        return HTKV_ETOOBIG;
    }
    uint64_t first = n->bytes + SEG_DATA_OFF + seal;
    first = first > cap ? cap : first;
    HTKV_ASSERT(SEG_DATA_OFF + need + seal <= cap); /* the record that asked fits */
    struct seg *s;
    uint64_t id = htkv_manifest_next_seg_id(db->man);
    /* Known as gone before it exists: if the restore never commits, the next open removes the
     * file instead of finding data it cannot place. */
    int rc = htkv_manifest_stage_segs(db->man, &sh->id, &id, 1);
    if (rc == 0) {
        struct seg_owner o = { .shard = sh->id,
                               .shard_count = db->shard_count,
                               .hash_seed = db->hash_seed };
        rc =
            htkv_seg_create(sh->dir, &o, id, cap, first, db->cfg.sync_mode == HTKV_SYNC_ALWAYS, &s);
    }
    if (rc == 0) {
        n->segs[n->nsegs++] = s;
    }
    return rc;
}

/* Append one snapshot entry to shard @p sh's new segments and index it aside. */
static int
restore_put(struct htkv_db *db, struct shard *sh, struct shard_new *n, const unsigned char *key,
            uint32_t klen, const unsigned char *val, uint32_t vlen, uint64_t version, uint64_t hash)
{
    uint64_t size = htkv_rec_size(klen, vlen), seal = REC_HDR_BYTES + REC_SEAL_PAYLOAD;
    struct seg *s = n->nsegs ? n->segs[n->nsegs - 1] : NULL;
    int rc = 0;
    /* snap_check() let only these through; the shard is the key's. */
    HTKV_DASSERT(klen > 0 && klen <= HTKV_KEY_MAX && version >= 1 && version <= REC_VERSION_MAX);
    HTKV_DASSERT(n->idx_ready);
    if (s == NULL || s->tail + size + seal > s->map_bytes) {
        if (s != NULL && (rc = htkv_seg_seal(s)) != 0) {
            return rc;
        }
        if (s != NULL) {
            htkv_seg_release_fd(s); /* sealed and not yet seen by anyone */
        }
        if ((rc = new_seg(db, sh, n, size)) != 0) {
            return rc;
        }
        s = n->segs[n->nsegs - 1];
    }
    rc = htkv_seg_reserve(s, size + seal);
    if (rc != 0) {
        return rc;
    }
    struct hidx_ent *e = htkv_mem_alloc_in(sh->arena, sizeof(*e));
    if (e == NULL) {
        return -ENOMEM;
    }
    uint64_t off = htkv_seg_append(s, REC_SET, 0, version, key, klen, val, vlen);
    HTKV_DASSERT(off >= SEG_DATA_OFF && off + size + seal <= s->map_bytes && off <= UINT32_MAX);
    *e = (struct hidx_ent){ .version = version,
                            .hash = hash,
                            .seg = s,
                            .off = (uint32_t)off,
                            .rec_bytes = REC_HDR_BYTES + klen + vlen,
                            .key_len = klen };
    struct hidx_ent *old = htkv_hidx_install(&n->idx, e, &rc, htkv_shard_retire_table, sh);
    if (rc != 0) {
        htkv_mem_free(e);
        return rc;
    }
    HTKV_ASSERT(old == NULL); /* keys are distinct: checked in order */
    atomic_fetch_add_explicit(&s->live_bytes, htkv_align_up(e->rec_bytes, REC_ALIGN),
                              memory_order_relaxed);
    n->keys++;
    return 0;
}

/* Free what restore built for a shard; with @p keep_files, its segment files stay on disk. */
static void
shard_new_discard(struct shard_new *n, bool keep_files)
{
    if (n->idx_ready) {
        htkv_hidx_fini(&n->idx);
    }
    for (size_t i = 0; i < n->nsegs; i++) {
        /* Listed by no manifest CURRENT names: a file the unlink leaves is an orphan that the
         * next writable open removes. */
        if (!keep_files) {
            (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlink(n->segs[i]->path));
        }
        htkv_seg_close(n->segs[i]);
    }
    htkv_mem_free(n->segs);
    memset(n, 0, sizeof(*n));
}

/* Write and index every entry of @p in into @p ns (one per shard), then make it durable. */
static int
restore_build(struct htkv_db *db, const struct snap_in *in, struct shard_new *ns)
{
    int rc = 0;
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        rc = htkv_hidx_init_in(&ns[i].idx, db_shard(db, i)->arena);
        ns[i].idx_ready = rc == 0;
    }
    const unsigned char *m = in->map;
    uint64_t off = SNAP_HDR_BYTES, end = SNAP_HDR_BYTES + in->data_bytes;
    /* First pass: bytes per shard, so each shard's first segment is allocated once. */
    for (; rc == 0 && off < end;) {
        uint32_t klen = htkv_load32(m + off), vlen = htkv_load32(m + off + 4);
        uint64_t hash = htkv_hash(m + off + SNAP_ENT_HDR, klen, db->hash_seed);
        ns[db_shard_of(db, hash)].bytes += htkv_rec_size(klen, vlen);
        off += SNAP_ENT_HDR + klen + vlen;
    }
    HTKV_ASSERT(rc != 0 || off == end); /* invariant 5 */
    for (off = SNAP_HDR_BYTES; rc == 0 && off < end;) {
        uint32_t klen = htkv_load32(m + off), vlen = htkv_load32(m + off + 4);
        const unsigned char *k = m + off + SNAP_ENT_HDR;
        uint64_t hash = htkv_hash(k, klen, db->hash_seed);
        uint32_t s = db_shard_of(db, hash);
        rc = restore_put(db, db_shard(db, s), &ns[s], k, klen, k + klen, vlen,
                         htkv_load64(m + off + 8), hash);
        off += SNAP_ENT_HDR + klen + vlen;
    }
    uint64_t keys = 0;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        keys += ns[i].keys;
    }
    HTKV_ASSERT(rc != 0 || (off == end && keys == in->count)); /* every entry placed once */
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        struct shard_new *n = &ns[i];
        if (n->nsegs > 0) {
            rc = htkv_seg_sync(n->segs[n->nsegs - 1]); /* earlier ones were synced by SEAL */
        }
        if (rc == 0 && n->nsegs > 0) {
            rc = fsync_dir(db_shard(db, i)->dir);
        }
    }
    return rc;
}

/* After the commit point: give shard @p sh its new index and segments (lock held). The old
 * segments are returned through @p old (taken by the caller). */
static void
restore_switch(struct shard *sh, struct shard_new *n, uint64_t visible, struct seg ***old,
               size_t *nold)
{
    HTKV_ASSERT(n->idx_ready && n->nsegs <= n->cap && (n->nsegs == 0) == (n->keys == 0));
    htkv_shard_reset_for_restore(sh, &n->idx, n->segs, n->nsegs, n->cap, n->keys, visible, old,
                                 nold);
    htkv_run_drop(sh); /* its trie is gone: no reader may take the run built from it */
    memset(n, 0, sizeof(*n));
}

/* Close the segments a restore replaced, once nothing uses them. */
static void
restore_retire(struct htkv_db *db, struct shard *sh, struct seg **old, size_t nold)
{
    for (size_t i = 0; i < nold; i++) {
        struct seg *s = old[i];
        htkv_seg_remove_files(&db->env.log, s);
        /* The room reserved before the commit may be taken by writers since: without room, the
         * segment waits as a zombie (htkv_zombie_retire() reserves under the shard's lock). */
        struct zombie *z = htkv_mem_alloc(sizeof(*z));
        pthread_mutex_lock(&db->views.lock);
        pthread_mutex_lock(&sh->lock);
        if (z != NULL) {
            htkv_zombie_retire(db, sh, s, z);
        } else {
            htkv_shard_retire_seg(sh, s); /* no memory at all: the limbo's own fallback */
        }
        pthread_mutex_unlock(&sh->lock);
        pthread_mutex_unlock(&db->views.lock);
    }
    /* Free what earlier retirements left (segments of an earlier restore among them) without
     * waiting for writes to do it: a store that takes no writes would keep their descriptors. */
    pthread_mutex_lock(&sh->lock);
    htkv_shard_reclaim(sh);
    pthread_mutex_unlock(&sh->lock);
    htkv_mem_free(old);
}

/* The commit of a restore is in doubt (every shard's lock held): stop every shard. */
static void
restore_fail_unsure(struct htkv_db *db, int rc)
{
    for (uint32_t i = 0; i < db->shard_count; i++) {
        db_shard(db, i)->failed = true;
    }
    atomic_store(&db->env.failed, 1);
    htkv_db_log(db, HTKV_LOG_ERROR,
                "restore: syncing the directory after switching CURRENT failed: %s; the store "
                "refuses writes until reopen, which finds the old contents or the snapshot's",
                htkv_strerror(rc));
}

/* The commit point of a restore: the manifest lists the new segments of every shard (@p ns)
 * instead of the old ones. 0, or an error with *@p unsure when the manifest may have switched
 * anyway (htkv_manifest_replace()). */
static int
restore_commit(struct htkv_db *db, const struct shard_new *ns, uint64_t latest, bool *unsure)
{
    struct man_shard *lists = htkv_mem_calloc(db->shard_count, sizeof(*lists));
    int rc = lists == NULL ? -ENOMEM : 0;
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        lists[i].count = ns[i].nsegs;
        lists[i].seg_ids = htkv_mem_alloc((ns[i].nsegs + 1) * sizeof(uint64_t));
        if (lists[i].seg_ids == NULL) {
            rc = -ENOMEM;
            break;
        }
        for (size_t k = 0; k < ns[i].nsegs; k++) {
            lists[i].seg_ids[k] = ns[i].segs[k]->id;
        }
    }
    if (rc == 0) {
        /* The history before the restore is not in the store any more: the change feed
         * starts at the restore's version, so a consumer that read up to any version before
         * it is told HTKV_ECOMPACTED (and installs a snapshot) instead of missing it. */
        uint64_t floor = db->man->batch_floor > latest ? db->man->batch_floor : latest;
        rc = htkv_manifest_replace(db->man, lists, floor, unsure);
    }
    for (uint32_t i = 0; lists != NULL && i < db->shard_count; i++) {
        htkv_mem_free(lists[i].seg_ids);
    }
    htkv_mem_free(lists);
    return rc;
}

/* The locked part of a restore: build, commit, switch. */
/* Limbo room for what the switch and restore_retire() retire from @p sh: every entry (heads,
 * and the versions behind them not yet published), every segment, the table, the cold set, the
 * sorted run. 0 or -ENOMEM. Lock held. */
static int
restore_reserve_limbo(struct shard *sh)
{
    return htkv_shard_limbo_reserve(sh, htkv_shard_entry_count(sh) + htkv_shard_seg_count(sh) +
                                            SHARD_LIMBO_SLACK);
}

static int
restore_locked(struct htkv_db *db, const struct snap_in *in, struct shard_new *ns,
               struct seg ***olds, size_t *nolds)
{
    HTKV_ASSERT(db->views.open == 0); /* invariant 3: the caller checked, holding views.lock */
    HTKV_ASSERT(db_mutex_locked(&db->views.lock) && db_mutex_locked(&db->compactor.lock));
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        HTKV_ASSERT(db_mutex_locked(&sh->lock));
        if (sh->failed) {
            return HTKV_EFAILED;
        }
        htkv_shard_wait_sync_end(sh); /* a group sync of the old data */
    }
    if (atomic_load(&db->env.no_space)) {
        return -ENOSPC;
    }
    /* The restore's version: the snapshot's, or, when the store has gone past it (a rollback),
     * a new one above everything applied, which marks the restore for the change feed. Either
     * way it is reserved and recorded as applied before anything changes, so that the counter
     * never falls back, not even after a reopen. */
    uint64_t latest = htkv_versions_latest(&db->ver);
    latest = in->version >= latest ? in->version : latest + 1;
    int rc = 0;
    if (latest > REC_VERSION_MAX) {
        htkv_set_error("%s: a rollback to version %llu needs a version, and none is left", db->dir,
                       (unsigned long long)in->version);
        rc = -EOVERFLOW;
    }
    rc = rc != 0 ? rc : versions_check(&db->ver, latest);
    if (rc == 0) {
        rc = htkv_manifest_set_versions(db->man, 0, latest, false);
    }
    if (rc == 0) {
        rc = restore_build(db, in, ns);
    }
    for (uint32_t i = 0; rc == 0 && i < db->shard_count; i++) {
        rc = restore_reserve_limbo(db_shard(db, i)); /* the switch retires without failing */
    }
    htkv_compact_hook_call("restore-built");
    bool unsure = false;
    if (rc == 0) {
        rc = restore_commit(db, ns, latest, &unsure);
    }
    if (rc != 0) {
        /* Unsure: CURRENT was renamed but its directory not synced, so the next open may find
         * the old manifest or the new one. Each needs its own segments: keep every file, serve
         * the old contents and refuse writes until reopened (the rule of a failed sync). */
        for (uint32_t i = 0; i < db->shard_count; i++) {
            shard_new_discard(&ns[i], unsure);
        }
        if (unsure) {
            restore_fail_unsure(db, rc);
            rc = HTKV_EFAILED;
        }
        return rc;
    }
    htkv_compact_hook_call("restore-committed");
    /* Committed: from here on nothing can fail. */
    /* Every shard publishes the restore's version (the highest its entries can carry, and the
     * version a snapshot written next reports); the counter stays above it and above the
     * reservation a reopen may have skipped to. */
    uint64_t visible = latest;
    htkv_versions_raise(&db->ver, latest);
    /* Invariant 2: R is applied, and the next local version lies above it. */
    HTKV_ASSERT(htkv_versions_latest(&db->ver) >= latest);
    HTKV_ASSERT(atomic_load_explicit(&db->ver.next, memory_order_relaxed) > latest);
    for (uint32_t i = 0; i < db->shard_count; i++) {
        restore_switch(db_shard(db, i), &ns[i], visible, &olds[i], &nolds[i]);
    }
    return 0;
}

int
htkv_snapshot_restore(htkv_db *db, const char *path)
{
    if (db == NULL || path == NULL) {
        return htkv_einval(__func__);
    }
    if (db->read_only) {
        return HTKV_EREADONLY;
    }
    struct snap_in in = { 0 };
    int rc = snap_map_check(path, db->cfg.max_value_bytes, &in);
    struct shard_new *ns = NULL;
    struct seg ***olds = NULL;
    size_t *nolds = NULL;
    if (rc == 0) {
        ns = htkv_mem_calloc(db->shard_count, sizeof(*ns));
        olds = htkv_mem_calloc(db->shard_count, sizeof(*olds));
        nolds = htkv_mem_calloc(db->shard_count, sizeof(*nolds));
        rc = ns == NULL || olds == NULL || nolds == NULL ? -ENOMEM : 0;
    }
    unsigned slot = 0;
    bool entered = false;
    if (rc == 0) {
        slot = htkv_ebr_enter(&db->ebr);
        entered = true;
        rc = atomic_load(&db->closing) ? HTKV_ECLOSED : 0;
    }
    if (rc == 0) {
        /* One structural change at a time: no compaction pass runs during a restore. */
        pthread_mutex_lock(&db->compactor.lock);
        htkv_ebr_exit(&db->ebr, slot);
        entered = false;
        pthread_mutex_lock(&db->views.lock);
        if (db->views.open > 0) {
            htkv_set_error("%llu views or iterators are open", (unsigned long long)db->views.open);
            rc = HTKV_EBUSY;
        } else {
            for (uint32_t i = 0; i < db->shard_count; i++) {
                pthread_mutex_lock(&db_shard(db, i)->lock);
            }
            rc = restore_locked(db, &in, ns, olds, nolds);
            for (uint32_t i = db->shard_count; i > 0; i--) {
                pthread_mutex_unlock(&db_shard(db, i - 1)->lock);
            }
        }
        pthread_mutex_unlock(&db->views.lock);
        for (uint32_t i = 0; rc == 0 && i < db->shard_count; i++) {
            restore_retire(db, db_shard(db, i), olds[i], nolds[i]);
        }
        pthread_mutex_unlock(&db->compactor.lock);
    }
    if (entered) {
        htkv_ebr_exit(&db->ebr, slot);
    }
    htkv_mem_free(ns);
    htkv_mem_free(olds);
    htkv_mem_free(nolds);
    if (in.map != NULL) {
        munmap((void *)in.map, in.size);
    }
    return rc;
}

/* ---- checking a file on its own (htkvctl verify) ------------------------------------------- */

int
htkv_snapshot_check_file(const char *path, uint32_t max_value_bytes, uint64_t *version,
                         uint64_t *count, uint64_t *bad_off)
{
    if (path == NULL) {
        return htkv_einval(__func__);
    }
    snap_bad_off = 0;
    struct snap_in in = { 0 };
    int rc = snap_map_check(path, max_value_bytes, &in);
    if (rc == HTKV_EVERSION) {
        snap_bad_off = 8; /* the format field */
    }
    if (in.map != NULL) {
        munmap((void *)in.map, in.size);
    }
    HTKV_ASSERT(rc <= 0);
    if (version != NULL) {
        *version = rc == 0 ? in.version : 0;
    }
    if (count != NULL) {
        *count = rc == 0 ? in.count : 0;
    }
    if (bad_off != NULL) {
        *bad_off = rc == HTKV_ECORRUPT || rc == HTKV_EVERSION ? snap_bad_off : 0;
    }
    return rc;
}
