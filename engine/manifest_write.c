/*
 * manifest_write.c - writing the store's edit log (format in manifest.h): edits appended and
 * fdatasynced (segments added and dropped, the batch floor, aborted batches, staged segments,
 * recorded ends, the version reservation), with the room to apply them reserved first; the full
 * rewrite into a new MANIFEST-NNNNNN and CURRENT switched to it (create, replace, rebuild,
 * rewrite, upgrade); the atomic replacement of a small file; cutting a torn tail off. What is
 * written is applied to the in-memory state with the steps of manifest.c (manifest_int.h).
 *
 * Layer: formats. Calls manifest.c (the state steps), the base layer (allocation, errors,
 * crc32c, file I/O, fault injection) and the format constants of rec.h and seg.h; knows no store
 * type.
 *
 * Structure. Append: man_append() or a caller's batch of edits -> man_write_edits(). Full
 * rewrite: man_write_full() -> man_encode_state() + man_encode_segs() -> man_full_persist() ->
 * man_full_adopt().
 *
 * Invariants
 *   1. An edit is appended at file_bytes and fdatasynced before the call returns; a failed
 *      append is overwritten with zeros, so no later edit follows a torn one.
 *   2. Room for applying an edit in memory is reserved before the edit is written: once it is
 *      durable, applying it cannot fail.
 *   3. A full rewrite leaves the old manifest in use until CURRENT names the new one durably.
 *   4. version_hwm is durable before any version above it is handed out (the callers' part).
 */
#include "engine/manifest.h"
#include "uring/ur_fault.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/manifest_int.h"
#include "engine/rec.h"
#include "engine/seg.h"

/* fsync with fault injection (a failed sync of a file being written fails the write). */
static int
man_fsync(int fd)
{
    int rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        htkv_fault_synced(fd);
    }
    return rc;
}

int
htkv_write_file_atomic(int dir_fd, const char *name, const void *data, size_t len, bool *renamed)
{
    *renamed = false;
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    int fd = htkv_fault_fails(HTKV_FAULT_CREATE)
                 ? -1
                 : openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int rc = htkv_pwrite_all(fd, data, len, 0);
    if (rc == 0) {
        rc = man_fsync(fd);
    }
    close(fd);
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_RENAME);
    }
    if (rc == 0 && renameat(dir_fd, tmp, dir_fd, name) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        /* Nothing changed under @p name. A .tmp left behind (the unlink failing too) is
         * truncated by the next write and removed by the next writable open. */
        (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(dir_fd, tmp, 0));
        return rc;
    }
    /* Renamed: @p name holds the new bytes now, but until the directory is synced a power loss
     * may bring the old ones back. A failure here is a failed sync: the caller must keep what
     * either version needs. */
    *renamed = true;
    rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    if (rc == 0 && fsync(dir_fd) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        htkv_fault_synced(dir_fd);
    }
    return rc;
}

static void
man_hdr_encode(unsigned char *h, uint64_t number)
{
    memset(h, 0, MAN_HDR_BYTES);
    memcpy(h, MAN_MAGIC, 8);
    htkv_store32(h + 8, HTKV_FORMAT_VERSION);
    htkv_store64(h + 16, number);
    htkv_store32(h + 28, htkv_crc32c(0, h, 28));
}

static size_t
man_edit_encode(unsigned char *d, uint32_t type, const void *payload, uint32_t len)
{
    htkv_store32(d + 4, len);
    htkv_store32(d + 8, type);
    memcpy(d + MAN_EDIT_HDR, payload, len);
    htkv_store32(d, htkv_crc32c(0, d + 4, 8 + len));
    return MAN_EDIT_HDR + len;
}

/* Is a segment or hint file of gone id @p g still in its shard's directory? An error other than
 * ENOENT counts as yes: the drop is then kept, which costs 28 bytes. */
static bool
man_gone_file_exists(const struct manifest *m, const struct man_gone *g)
{
    static const char *const ext[] = { "seg", "hint" };
    for (size_t i = 0; i < 2; i++) {
        char name[64];
        snprintf(name, sizeof(name), "shard-%03u/%012llu.%s", g->shard, (unsigned long long)g->id,
                 ext[i]);
        if (faccessat(m->dir_fd, name, F_OK, 0) == 0 || errno != ENOENT) {
            return true;
        }
    }
    return false;
}

/* Can a listed segment still hold a part of abort @p a (an id below its limit)? */
static bool
man_abort_relevant(const struct manifest *m, const struct man_abort *a)
{
    for (uint32_t s = 0; s < m->shard_count; s++) {
        if (m->shards[s].count > 0 && m->shards[s].seg_ids[0] < a->seg_limit) {
            return true;
        }
    }
    return false;
}

/* What a full rewrite kept of the manifest's memory: the aborts and gone ids it wrote. */
struct man_kept {
    size_t aborts;         /* BATCH_ABORT edits written (man_abort_relevant()) */
    struct man_gone *gone; /* the gone ids written, in order */
    size_t ngone;
};

/*
 * Encode at buf + @p n the edits of a full manifest that precede its segments: INIT, then
 * BATCH_FLOOR, the relevant BATCH_ABORTs, VERSIONS and the SEG_GONEs still needed (a drop is
 * remembered while a file of it may be on disk). Returns the new end. The caller sized @p buf.
 */
static size_t
man_encode_state(const struct manifest *m, unsigned char *buf, size_t n, struct man_kept *k)
{
    unsigned char p[16];
    htkv_store32(p, m->format);
    htkv_store32(p + 4, m->shard_count);
    htkv_store64(p + 8, m->hash_seed);
    n += man_edit_encode(buf + n, MAN_INIT, p, 16);
    if (m->batch_floor > 0) {
        memset(p, 0, 8);
        htkv_store64(p + 8, m->batch_floor);
        n += man_edit_encode(buf + n, MAN_BATCH_FLOOR, p, 16);
    }
    for (size_t i = 0; i < m->naborts; i++) {
        if (man_abort_relevant(m, &m->aborts[i])) {
            htkv_store64(p, m->aborts[i].seg_limit);
            htkv_store64(p + 8, m->aborts[i].version);
            n += man_edit_encode(buf + n, MAN_BATCH_ABORT, p, 16);
            k->aborts++;
        }
    }
    if (m->version_hwm > 0 || m->version_applied > 0) {
        htkv_store64(p, m->version_hwm);
        htkv_store64(p + 8, m->version_applied);
        n += man_edit_encode(buf + n, MAN_VERSIONS, p, 16);
    }
    for (size_t i = 0; i < m->ngone; i++) {
        if (!htkv_man_listed(m, m->gone[i].shard, m->gone[i].id) &&
            man_gone_file_exists(m, &m->gone[i])) {
            htkv_store32(p, m->gone[i].shard);
            htkv_store32(p + 4, 0);
            htkv_store64(p + 8, m->gone[i].id);
            n += man_edit_encode(buf + n, MAN_SEG_GONE, p, 16);
            k->gone[k->ngone++] = m->gone[i];
        }
    }
    HTKV_ASSERT(k->aborts <= m->naborts && k->ngone <= m->ngone);
    return n;
}

/*
 * Encode at buf + @p n the rest of a full manifest: NEXT_ID when ids above the live ones were
 * handed out, then SEG_ADD (and SEG_END where known) of every live segment, shard by shard in
 * id order. Returns the new end.
 */
static size_t
man_encode_segs(const struct manifest *m, unsigned char *buf, size_t n)
{
    unsigned char p[16];
    uint64_t max_id = 0;
    for (uint32_t s = 0; s < m->shard_count; s++) {
        for (size_t i = 0; i < m->shards[s].count; i++) {
            max_id = m->shards[s].seg_ids[i] > max_id ? m->shards[s].seg_ids[i] : max_id;
        }
    }
    if (m->next_seg_id > max_id + 1) {
        /* Ids above the live ones were handed out (dropped segments): keep them used. */
        memset(p, 0, 8);
        htkv_store64(p + 8, m->next_seg_id);
        n += man_edit_encode(buf + n, MAN_NEXT_ID, p, 16);
    }
    for (uint32_t s = 0; s < m->shard_count; s++) {
        for (size_t i = 0; i < m->shards[s].count; i++) {
            htkv_store32(p, s);
            htkv_store32(p + 4, 0);
            htkv_store64(p + 8, m->shards[s].seg_ids[i]);
            n += man_edit_encode(buf + n, MAN_SEG_ADD, p, 16);
            uint64_t end = htkv_manifest_seg_end(m, m->shards[s].seg_ids[i]);
            if (end > 0) {
                unsigned char q[24];
                memcpy(q, p, 16);
                htkv_store64(q + 16, end);
                n += man_edit_encode(buf + n, MAN_SEG_END, q, 24);
            }
        }
    }
    return n;
}

/*
 * Create manifest file @p name holding the @p n bytes of @p buf, make it and its directory
 * durable, and point CURRENT at it. 0 with the file open in *fd_out. On failure the file is
 * removed, unless CURRENT was renamed without its directory being synced (*unsure: either
 * manifest may be current after a power loss, so both stay).
 */
static int
man_full_persist(struct manifest *m, const char *name, const unsigned char *buf, size_t n,
                 int *fd_out, bool *unsure)
{
    *unsure = false;
    int fd = htkv_fault_fails(HTKV_FAULT_CREATE)
                 ? -1
                 : openat(m->dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    int rc = htkv_pwrite_all(fd, buf, n, 0);
    if (rc == 0) {
        rc = man_fsync(fd);
    }
    if (rc == 0 && fsync(m->dir_fd) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        htkv_fault_synced(m->dir_fd);
        char cur[64];
        int clen = snprintf(cur, sizeof(cur), "%s\n", name);
        rc = htkv_write_file_atomic(m->dir_fd, "CURRENT", cur, (size_t)clen, unsure);
        /* Renamed but not synced: CURRENT names the new manifest, but may name the old one
         * again after a power loss: both stay on disk and in memory the old one stays in use
         * (the caller stops the store). The next open reads whichever CURRENT names and
         * removes the other. */
        *unsure = rc != 0 && *unsure;
    }
    if (rc != 0) {
        close(fd);
        if (!*unsure) {
            /* Never named by CURRENT. Left behind (the unlink failing too), it is truncated by
             * the next rewrite of this number and removed by the next writable open. */
            (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(m->dir_fd, name, 0));
        }
        return rc;
    }
    *fd_out = fd;
    return 0;
}

/*
 * CURRENT names manifest @p number (open in @p fd, @p n bytes): close and remove the old one
 * and forget what the rewrite left out (@p k).
 */
static void
man_full_adopt(struct manifest *m, uint64_t number, int fd, size_t n, const struct man_kept *k)
{
    if (m->fd >= 0) {
        char old[64];
        snprintf(old, sizeof(old), "MANIFEST-%06llu", (unsigned long long)m->number);
        close(m->fd);
        /* Unreferenced now: a failed unlink leaves a file that nothing reads and that the next
         * writable open removes (remove_leftovers() in engine/db.c). */
        (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(m->dir_fd, old, 0));
    }
    m->fd = fd;
    m->number = number;
    m->file_bytes = n;
    if (k->ngone > 0) {
        memcpy(m->gone, k->gone, k->ngone * sizeof(*k->gone));
    }
    m->ngone = k->ngone;
    if (k->aborts < m->naborts) {
        /* Forget the aborts left out: no listed segment can hold their parts any more. */
        size_t j = 0;
        for (size_t i = 0; i < m->naborts; i++) {
            if (man_abort_relevant(m, &m->aborts[i])) {
                m->aborts[j++] = m->aborts[i];
            }
        }
        HTKV_ASSERT(j == k->aborts);
        m->naborts = j;
    }
}

/*
 * Write manifest number @p number holding INIT and every live segment and switch CURRENT to it;
 * leaves it open in m->fd. On failure the old manifest stays in use, and *unsure tells whether
 * CURRENT was renamed without its directory being synced (both manifests are then kept on disk:
 * either may be current after a power loss).
 */
static int
man_write_full(struct manifest *m, uint64_t number, bool *unsure)
{
    size_t segs = 0;
    for (uint32_t s = 0; s < m->shard_count; s++) {
        segs += m->shards[s].count;
    }
    size_t cap = MAN_HDR_BYTES + MAN_EDIT_MAX * (segs + m->naborts + m->ngone + m->nends + 4);
    unsigned char *buf = htkv_mem_alloc(cap);
    struct man_kept k = { .gone = m->ngone ? htkv_mem_alloc(m->ngone * sizeof(*k.gone)) : NULL };
    if (buf == NULL || (m->ngone > 0 && k.gone == NULL)) {
        htkv_mem_free(buf);
        htkv_mem_free(k.gone);
        return -ENOMEM;
    }
    man_hdr_encode(buf, number);
    size_t n = man_encode_state(m, buf, MAN_HDR_BYTES, &k);
    n = man_encode_segs(m, buf, n);
    HTKV_ASSERT(n <= cap);
    char name[64];
    snprintf(name, sizeof(name), "MANIFEST-%06llu", (unsigned long long)number);
    int fd = -1;
    int rc = man_full_persist(m, name, buf, n, &fd, unsure);
    if (rc == 0) {
        man_full_adopt(m, number, fd, n, &k);
    }
    htkv_mem_free(buf);
    htkv_mem_free(k.gone);
    return rc;
}

int
htkv_manifest_create(int dir_fd, uint32_t shard_count, uint64_t hash_seed, struct manifest **out)
{
    HTKV_ASSERT(shard_count >= 1 && shard_count <= MAN_SHARDS_MAX);
    *out = NULL;
    struct manifest *m = htkv_man_new(dir_fd, true);
    if (m == NULL) {
        return -ENOMEM;
    }
    int rc = htkv_man_shards_alloc(m, shard_count);
    if (rc == 0) {
        m->hash_seed = hash_seed;
        bool unsure;
        rc = man_write_full(m, 1, &unsure);
    }
    if (rc != 0) {
        htkv_manifest_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

/*
 * Append the encoded edits @p e (@p n bytes) at file_bytes and fdatasync them (lock held). On
 * success file_bytes moves past them. On failure they may be partly on disk: they are
 * overwritten with zeros (@p e too) so a later edit cannot follow a torn one; if even that
 * fails, the next open sees a torn tail and cuts it. 0 or -errno.
 */
static int
man_write_edits(struct manifest *m, unsigned char *e, size_t n)
{
    int rc = htkv_pwrite_all(m->fd, e, n, (off_t)m->file_bytes);
    if (rc == 0) {
        rc = htkv_fault_hit(HTKV_FAULT_SYNC);
    }
    if (rc == 0 && fdatasync(m->fd) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        htkv_fault_synced(m->fd);
        m->file_bytes += n;
        return 0;
    }
    memset(e, 0, n);
    (void)htkv_pwrite_all(m->fd, e, n, (off_t)m->file_bytes);
    return rc;
}

static int
man_append(struct manifest *m, uint32_t type, uint32_t shard, uint64_t seg_id)
{
    HTKV_ASSERT(m->writable);
    HTKV_ASSERT(type == MAN_BATCH_FLOOR || shard < m->shard_count);
    unsigned char p[16], e[MAN_EDIT_HDR + 16];
    htkv_store32(p, shard);
    htkv_store32(p + 4, 0);
    htkv_store64(p + 8, seg_id);
    size_t n = man_edit_encode(e, type, p, 16);
    pthread_mutex_lock(&m->lock);
    if (type == MAN_BATCH_FLOOR && seg_id <= m->batch_floor) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    /* Room first: once the edit is durable, applying it in memory must not fail, or the caller
     * would undo (remove a new segment, keep a dropped one) what the manifest records. */
    int rc = type == MAN_SEG_ADD    ? htkv_man_list_reserve(&m->shards[shard])
             : type == MAN_SEG_DROP ? htkv_man_gone_reserve(m)
                                    : 0;
    if (rc == 0) {
        rc = man_write_edits(m, e, n);
    }
    if (rc == 0) {
        if (type == MAN_BATCH_FLOOR) {
            m->batch_floor = seg_id;
        } else {
            rc = type == MAN_SEG_ADD ? htkv_man_apply_add(m, shard, seg_id)
                                     : htkv_man_apply_drop(m, shard, seg_id);
        }
        /* Callers add fresh ids and drop live ones, with room reserved above. */
        HTKV_ASSERT(rc == 0);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int
htkv_manifest_add_seg(struct manifest *m, uint32_t shard, uint64_t seg_id)
{
    return man_append(m, MAN_SEG_ADD, shard, seg_id);
}

int
htkv_manifest_drop_seg(struct manifest *m, uint32_t shard, uint64_t seg_id)
{
    return man_append(m, MAN_SEG_DROP, shard, seg_id);
}

int
htkv_manifest_set_batch_floor(struct manifest *m, uint64_t floor)
{
    /* Payload {zero u32, zero u32, floor u64}: the shard field of man_append() is 0. */
    return man_append(m, MAN_BATCH_FLOOR, 0, floor);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int
htkv_manifest_abort_batches(struct manifest *m, const uint64_t *versions, size_t n)
{
    HTKV_ASSERT(m->writable);
    if (n == 0) {
        return 0;
    }
    uint64_t *v = htkv_mem_alloc(n * sizeof(*v));
    unsigned char *buf = htkv_mem_alloc(n * (MAN_EDIT_HDR + 16));
    if (v == NULL || buf == NULL) {
        htkv_mem_free(v);
        htkv_mem_free(buf);
        return -ENOMEM;
    }
    memcpy(v, versions, n * sizeof(*v));
    qsort(v, n, sizeof(*v), cmp_u64);
    pthread_mutex_lock(&m->lock);
    /* Every part of these batches was written before this open: in a segment below the next id. */
    uint64_t limit = m->next_seg_id;
    size_t k = 0, len = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != 0 && (k == 0 || v[k - 1] != v[i]) && !htkv_manifest_batch_aborted(m, v[i])) {
            v[k++] = v[i];
            unsigned char p[16];
            htkv_store64(p, limit);
            htkv_store64(p + 8, v[i]);
            len += man_edit_encode(buf + len, MAN_BATCH_ABORT, p, 16);
        }
    }
    int rc = 0;
    if (k > 0) {
        /* Reserve the memory first: once the edits are durable, nothing may fail. */
        rc = htkv_man_aborts_reserve(m, k);
        if (rc == 0) {
            rc = man_write_edits(m, buf, len);
        }
        for (size_t i = 0; rc == 0 && i < k; i++) {
            int arc = htkv_man_apply_abort(m, v[i], limit);
            HTKV_ASSERT(arc == 0); /* room reserved above */
        }
    }
    pthread_mutex_unlock(&m->lock);
    htkv_mem_free(v);
    htkv_mem_free(buf);
    return rc;
}

int
htkv_manifest_replace(struct manifest *m, const struct man_shard *lists, uint64_t batch_floor,
                      bool *unsure)
{
    HTKV_ASSERT(m->writable);
    *unsure = false;
    struct man_shard *n = htkv_mem_calloc(m->shard_count, sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    int rc = 0;
    for (uint32_t s = 0; s < m->shard_count && rc == 0; s++) {
        size_t c = lists[s].count;
        n[s].seg_ids = htkv_mem_alloc((c ? c : 1) * sizeof(uint64_t));
        if (n[s].seg_ids == NULL) {
            rc = -ENOMEM;
            break;
        }
        memcpy(n[s].seg_ids, lists[s].seg_ids, c * sizeof(uint64_t));
        n[s].count = n[s].cap = c;
        for (size_t i = 1; i < c; i++) {
            HTKV_ASSERT(n[s].seg_ids[i - 1] < n[s].seg_ids[i]);
        }
    }
    pthread_mutex_lock(&m->lock);
    struct man_shard *old = m->shards;
    uint64_t old_floor = m->batch_floor;
    /* The new manifest calls the old segments gone (their files are removed after the commit)
     * and lists the new ones, staged as gone until now. */
    struct man_gone *gone_was = NULL;
    size_t ngone_was = m->ngone;
    if (rc == 0 && ngone_was > 0) {
        gone_was = htkv_mem_alloc(ngone_was * sizeof(*gone_was));
        rc = gone_was == NULL ? -ENOMEM : 0;
        if (rc == 0) {
            memcpy(gone_was, m->gone, ngone_was * sizeof(*gone_was));
        }
    }
    for (uint32_t s = 0; s < m->shard_count && rc == 0; s++) {
        for (size_t i = 0; i < old[s].count && rc == 0; i++) {
            rc = htkv_man_gone_add(m, s, old[s].seg_ids[i]);
        }
        for (size_t i = 0; i < n[s].count; i++) {
            htkv_man_gone_remove(m, n[s].seg_ids[i]);
        }
    }
    if (rc == 0) {
        m->shards = n;
        m->batch_floor = batch_floor > old_floor ? batch_floor : old_floor;
        rc = man_write_full(m, m->number + 1, unsure);
        if (rc != 0) {
            m->shards = old;
            m->batch_floor = old_floor;
        }
    }
    if (rc != 0 && (gone_was != NULL || ngone_was == 0)) {
        if (ngone_was > 0) {
            memcpy(m->gone, gone_was, ngone_was * sizeof(*gone_was));
        }
        m->ngone = ngone_was;
    }
    htkv_mem_free(gone_was);
    pthread_mutex_unlock(&m->lock);
    struct man_shard *dead = rc == 0 ? old : n;
    for (uint32_t s = 0; s < m->shard_count; s++) {
        htkv_mem_free(dead[s].seg_ids);
    }
    htkv_mem_free(dead);
    return rc;
}

int
htkv_manifest_stage_segs(struct manifest *m, const uint32_t *shards, const uint64_t *ids, size_t n)
{
    HTKV_ASSERT(m->writable);
    if (n == 0) {
        return 0;
    }
    unsigned char *buf = htkv_mem_alloc(n * (MAN_EDIT_HDR + 16));
    if (buf == NULL) {
        return -ENOMEM;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        HTKV_ASSERT(shards[i] < m->shard_count && ids[i] > 0);
        unsigned char p[16];
        htkv_store32(p, shards[i]);
        htkv_store32(p + 4, 0);
        htkv_store64(p + 8, ids[i]);
        len += man_edit_encode(buf + len, MAN_SEG_GONE, p, 16);
    }
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    if (m->gone_cap < m->ngone + n) {
        /* Reserve first: once the edits are durable, nothing may fail. */
        struct man_gone *g = htkv_mem_realloc(m->gone, (m->ngone + n) * sizeof(*g));
        rc = g == NULL ? -ENOMEM : 0;
        if (g != NULL) {
            m->gone = g;
            m->gone_cap = m->ngone + n;
        }
    }
    if (rc == 0) {
        rc = man_write_edits(m, buf, len);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int grc = htkv_man_gone_add(m, shards[i], ids[i]);
        HTKV_ASSERT(grc == 0); /* room reserved above */
    }
    pthread_mutex_unlock(&m->lock);
    htkv_mem_free(buf);
    return rc;
}

int
htkv_manifest_record_ends(struct manifest *m, const uint32_t *shards, const struct man_end *ends,
                          size_t n)
{
    HTKV_ASSERT(m->writable);
    unsigned char *buf = n ? htkv_mem_alloc(n * (MAN_EDIT_HDR + 24)) : NULL;
    if (n > 0 && buf == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_lock(&m->lock);
    size_t len = 0, k = 0;
    for (size_t i = 0; i < n; i++) {
        if (ends[i].end <= htkv_manifest_seg_end(m, ends[i].id) ||
            !htkv_man_listed(m, shards[i], ends[i].id)) {
            continue;
        }
        unsigned char p[24];
        htkv_store32(p, shards[i]);
        htkv_store32(p + 4, 0);
        htkv_store64(p + 8, ends[i].id);
        htkv_store64(p + 16, ends[i].end);
        len += man_edit_encode(buf + len, MAN_SEG_END, p, 24);
        k++;
    }
    int rc = k > 0 ? htkv_man_ends_reserve(m, k) : 0;
    if (rc == 0 && k > 0) {
        rc = man_write_edits(m, buf, len);
    }
    for (size_t i = 0; rc == 0 && k > 0 && i < n; i++) {
        if (htkv_man_listed(m, shards[i], ends[i].id)) {
            int erc = htkv_man_apply_end(m, ends[i].id, ends[i].end);
            HTKV_ASSERT(erc == 0); /* room reserved above */
        }
    }
    pthread_mutex_unlock(&m->lock);
    htkv_mem_free(buf);
    return rc;
}

int
htkv_manifest_set_versions(struct manifest *m, uint64_t hwm, uint64_t applied, bool exact)
{
    HTKV_ASSERT(m->writable);
    pthread_mutex_lock(&m->lock);
    applied = applied > m->version_applied ? applied : m->version_applied;
    hwm = hwm > applied ? hwm : applied;
    hwm = exact || hwm > m->version_hwm ? hwm : m->version_hwm;
    hwm = hwm > REC_VERSION_MAX ? REC_VERSION_MAX : hwm;
    int rc = 0;
    if (hwm != m->version_hwm || applied != m->version_applied) {
        unsigned char p[16], e[MAN_EDIT_HDR + 16];
        htkv_store64(p, hwm);
        htkv_store64(p + 8, applied);
        rc = man_write_edits(m, e, man_edit_encode(e, MAN_VERSIONS, p, 16));
        if (rc == 0) {
            m->version_hwm = hwm;
            m->version_applied = applied;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int
htkv_manifest_rebuild(int dir_fd, const struct man_rebuild *r)
{
    if (r->shard_count == 0 || r->shard_count > MAN_SHARDS_MAX || r->number == 0 ||
        r->number > 999999 || r->version_hwm < r->version_applied ||
        r->version_hwm > REC_VERSION_MAX || r->batch_floor > REC_VERSION_MAX) {
        return htkv_einval(__func__);
    }
    struct manifest *m = htkv_man_new(dir_fd, true);
    if (m == NULL) {
        return -ENOMEM;
    }
    int rc = htkv_man_shards_alloc(m, r->shard_count);
    m->hash_seed = r->hash_seed;
    m->version_hwm = r->version_hwm;
    m->version_applied = r->version_applied;
    m->batch_floor = r->batch_floor;
    for (uint32_t s = 0; s < r->shard_count && rc == 0; s++) {
        for (size_t i = 0; i < r->lists[s].count && rc == 0; i++) {
            uint64_t id = r->lists[s].seg_ids[i];
            rc = id == 0 || id > MAN_SEG_ID_MAX ? -EINVAL : htkv_man_apply_add(m, s, id);
            rc = rc == HTKV_ECORRUPT ? htkv_einval(__func__) : rc;
        }
    }
    for (size_t i = 0; i < r->naborts && rc == 0; i++) {
        const struct man_abort *a = &r->aborts[i];
        rc = a->version == 0 || a->seg_limit == 0 || a->seg_limit > MAN_SEG_ID_MAX + 1
                 ? htkv_einval(__func__)
                 : htkv_man_apply_abort(m, a->version, a->seg_limit);
    }
    if (rc == 0 && r->next_seg_id > m->next_seg_id && r->next_seg_id <= MAN_SEG_ID_MAX + 1) {
        m->next_seg_id = r->next_seg_id;
    }
    if (rc == 0) {
        bool unsure;
        rc = man_write_full(m, r->number, &unsure);
    }
    htkv_manifest_close(m);
    return rc;
}

int
htkv_manifest_cut_torn(struct manifest *m)
{
    HTKV_ASSERT(m->writable);
    if (m->torn_end <= m->file_bytes) {
        return 0;
    }
    if (ftruncate(m->fd, (off_t)m->file_bytes) != 0 || fsync(m->fd) != 0) {
        return -errno;
    }
    m->torn_end = 0;
    return 0;
}

int
htkv_manifest_rewrite(struct manifest *m)
{
    HTKV_ASSERT(m->writable);
    pthread_mutex_lock(&m->lock);
    bool unsure;
    int rc = man_write_full(m, m->number + 1, &unsure);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int
htkv_manifest_upgrade_rewrite(struct manifest *m)
{
    HTKV_ASSERT(m->writable);
    pthread_mutex_lock(&m->lock);
    uint32_t was = m->format;
    m->format = HTKV_FORMAT_VERSION;
    bool unsure;
    int rc = man_write_full(m, m->number + 1, &unsure);
    if (rc != 0) {
        m->format = was;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}
