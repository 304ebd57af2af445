/*
 * manifest.c - the store's edit log of shards and segments (format in manifest.h): reading it,
 * and the state it describes. Load: CURRENT, the manifest file read whole, its header checked
 * and its edits replayed into memory, with at most one torn append after the last good edit;
 * the in-memory state those edits build (segment lists, gone ids, recorded ends, aborted
 * batches) and its queries; handing out segment ids; closing. Writing (edits appended, full
 * rewrite, CURRENT, cutting a torn tail) is in manifest_write.c, which applies what it writes
 * with the state steps declared in manifest_int.h.
 *
 * Layer: formats. Calls the base layer (allocation, errors, crc32c, fault injection) and the
 * format constants of rec.h and seg.h; knows no store type. Calls nothing of manifest_write.c.
 *
 * Structure. Load: man_read_current() -> man_read_file() -> man_parse() -> man_replay() ->
 * man_replay_edit() per edit (man_replay_init/_number/_seg).
 *
 * Invariants
 *   1. In memory, m->shards[s] lists exactly the segments added and not dropped by the durable
 *      edits, sorted by id.
 *   2. next_seg_id is greater than every segment id ever added, so ids are never reused.
 *   3. An id is never both listed and gone; a gone id is never added again.
 *   4. The gone ids, recorded ends and aborts are sorted by id (version), one entry each.
 *   5. A load accepts after the last good edit only one torn append (fewer non-zero bytes than
 *      one edit, nothing that frames as an edit later); more is HTKV_ECORRUPT.
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

int
htkv_man_shards_alloc(struct manifest *m, uint32_t shard_count)
{
    m->shards = htkv_mem_calloc(shard_count, sizeof(*m->shards));
    if (m->shards == NULL) {
        return -ENOMEM;
    }
    m->shard_count = shard_count;
    return 0;
}

/* Room for one more id in @p s. 0 or -ENOMEM. */
int
htkv_man_list_reserve(struct man_shard *s)
{
    if (s->count == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        uint64_t *n = htkv_mem_realloc(s->seg_ids, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        s->seg_ids = n;
        s->cap = cap;
    }
    return 0;
}

int
htkv_man_apply_add(struct manifest *m, uint32_t shard, uint64_t id)
{
    struct man_shard *s = &m->shards[shard];
    int rc = htkv_man_list_reserve(s);
    if (rc != 0) {
        return rc;
    }
    size_t i = s->count;
    while (i > 0 && s->seg_ids[i - 1] > id) {
        s->seg_ids[i] = s->seg_ids[i - 1];
        i--;
    }
    if ((i > 0 && s->seg_ids[i - 1] == id) || htkv_manifest_seg_gone(m, id)) {
        memmove(&s->seg_ids[i], &s->seg_ids[i + 1], (s->count - i) * sizeof(uint64_t));
        return HTKV_ECORRUPT; /* added twice, or an id reused */
    }
    s->seg_ids[i] = id;
    s->count++;
    if (id >= m->next_seg_id) {
        m->next_seg_id = id + 1;
    }
    return 0;
}

/* Index of the first gone id >= @p id. */
static size_t
man_gone_lower(const struct manifest *m, uint64_t id)
{
    size_t lo = 0, hi = m->ngone;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->gone[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

bool
htkv_manifest_seg_gone(const struct manifest *m, uint64_t id)
{
    size_t i = man_gone_lower(m, id);
    return i < m->ngone && m->gone[i].id == id;
}

/* Room for one more gone id. 0 or -ENOMEM. */
int
htkv_man_gone_reserve(struct manifest *m)
{
    if (m->ngone == m->gone_cap) {
        size_t cap = m->gone_cap ? m->gone_cap * 2 : 16;
        struct man_gone *n = htkv_mem_realloc(m->gone, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        m->gone = n;
        m->gone_cap = cap;
    }
    return 0;
}

int
htkv_man_gone_add(struct manifest *m, uint32_t shard, uint64_t id)
{
    size_t i = man_gone_lower(m, id);
    if (i < m->ngone && m->gone[i].id == id) {
        return 0;
    }
    int rc = htkv_man_gone_reserve(m);
    if (rc != 0) {
        return rc;
    }
    memmove(&m->gone[i + 1], &m->gone[i], (m->ngone - i) * sizeof(*m->gone));
    m->gone[i] = (struct man_gone){ .id = id, .shard = shard };
    m->ngone++;
    return 0;
}

void
htkv_man_gone_remove(struct manifest *m, uint64_t id)
{
    size_t i = man_gone_lower(m, id);
    if (i < m->ngone && m->gone[i].id == id) {
        memmove(&m->gone[i], &m->gone[i + 1], (m->ngone - i - 1) * sizeof(*m->gone));
        m->ngone--;
    }
}

/* Index of the first recorded end with an id >= @p id. */
static size_t
man_end_lower(const struct manifest *m, uint64_t id)
{
    size_t lo = 0, hi = m->nends;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->ends[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

uint64_t
htkv_manifest_seg_end(const struct manifest *m, uint64_t id)
{
    size_t i = man_end_lower(m, id);
    return i < m->nends && m->ends[i].id == id ? m->ends[i].end : 0;
}

/* Room for @p more recorded ends without reallocating. 0 or -ENOMEM. */
int
htkv_man_ends_reserve(struct manifest *m, size_t more)
{
    while (m->ends_cap < m->nends + more) {
        size_t cap = m->ends_cap ? m->ends_cap * 2 : 16;
        struct man_end *n = htkv_mem_realloc(m->ends, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        m->ends = n;
        m->ends_cap = cap;
    }
    return 0;
}

/* Remember MAN_SEG_END {@p id, @p end}; a lower end than the one recorded changes nothing. */
int
htkv_man_apply_end(struct manifest *m, uint64_t id, uint64_t end)
{
    size_t i = man_end_lower(m, id);
    if (i < m->nends && m->ends[i].id == id) {
        m->ends[i].end = end > m->ends[i].end ? end : m->ends[i].end;
        return 0;
    }
    int rc = htkv_man_ends_reserve(m, 1);
    if (rc != 0) {
        return rc;
    }
    memmove(&m->ends[i + 1], &m->ends[i], (m->nends - i) * sizeof(*m->ends));
    m->ends[i] = (struct man_end){ .id = id, .end = end };
    m->nends++;
    return 0;
}

static void
man_end_remove(struct manifest *m, uint64_t id)
{
    size_t i = man_end_lower(m, id);
    if (i < m->nends && m->ends[i].id == id) {
        memmove(&m->ends[i], &m->ends[i + 1], (m->nends - i - 1) * sizeof(*m->ends));
        m->nends--;
    }
}

int
htkv_man_apply_drop(struct manifest *m, uint32_t shard, uint64_t id)
{
    struct man_shard *s = &m->shards[shard];
    for (size_t i = 0; i < s->count; i++) {
        if (s->seg_ids[i] == id) {
            memmove(&s->seg_ids[i], &s->seg_ids[i + 1], (s->count - i - 1) * sizeof(uint64_t));
            s->count--;
            man_end_remove(m, id);
            /* Its file is obsolete now, whether or not its unlink happens. */
            return htkv_man_gone_add(m, shard, id);
        }
    }
    return HTKV_ECORRUPT; /* dropping a segment that is not there */
}

/* Is @p id listed in shard @p shard? */
bool
htkv_man_listed(const struct manifest *m, uint32_t shard, uint64_t id)
{
    const struct man_shard *s = &m->shards[shard];
    for (size_t i = 0; i < s->count; i++) {
        if (s->seg_ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Index of the first abort with a version >= @p version. */
static size_t
man_abort_lower(const struct manifest *m, uint64_t version)
{
    size_t lo = 0, hi = m->naborts;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->aborts[mid].version < version) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Room for @p more aborts without reallocating. 0 or -ENOMEM. */
int
htkv_man_aborts_reserve(struct manifest *m, size_t more)
{
    while (m->aborts_cap < m->naborts + more) {
        size_t cap = m->aborts_cap ? m->aborts_cap * 2 : 8;
        struct man_abort *n = htkv_mem_realloc(m->aborts, cap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        m->aborts = n;
        m->aborts_cap = cap;
    }
    return 0;
}

/* Remember MAN_BATCH_ABORT {@p limit, @p version}; a repeat keeps the larger limit. */
int
htkv_man_apply_abort(struct manifest *m, uint64_t version, uint64_t limit)
{
    size_t i = man_abort_lower(m, version);
    if (i < m->naborts && m->aborts[i].version == version) {
        m->aborts[i].seg_limit = limit > m->aborts[i].seg_limit ? limit : m->aborts[i].seg_limit;
        return 0;
    }
    int rc = htkv_man_aborts_reserve(m, 1);
    if (rc != 0) {
        return rc;
    }
    memmove(&m->aborts[i + 1], &m->aborts[i], (m->naborts - i) * sizeof(*m->aborts));
    m->aborts[i] = (struct man_abort){ .version = version, .seg_limit = limit };
    m->naborts++;
    return 0;
}

bool
htkv_manifest_batch_aborted(const struct manifest *m, uint64_t version)
{
    size_t i = man_abort_lower(m, version);
    return i < m->naborts && m->aborts[i].version == version;
}

struct manifest *
htkv_man_new(int dir_fd, bool writable)
{
    struct manifest *m = htkv_mem_calloc(1, sizeof(*m));
    if (m == NULL) {
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->dir_fd = dir_fd;
    m->fd = -1;
    m->writable = writable;
    m->next_seg_id = 1;
    m->format = HTKV_FORMAT_VERSION;
    return m;
}

static int
man_read_current(int dir_fd, uint64_t *number)
{
    int fd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(dir_fd, "CURRENT", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return HTKV_ENOTFOUND;
        }
        int rc = -errno;
        htkv_set_error("CURRENT: cannot be opened: %s", htkv_strerror(rc));
        return rc;
    }
    char buf[64] = { 0 };
    ssize_t n = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : read(fd, buf, sizeof(buf) - 1);
    int err = errno;
    close(fd);
    if (n < 0) {
        htkv_set_error("CURRENT: cannot be read: %s", htkv_strerror(-err));
        return -err;
    }
    unsigned long long num;
    char nl;
    if (n != 16 || sscanf(buf, "MANIFEST-%6llu%c", &num, &nl) != 2 || nl != '\n' || num == 0) {
        htkv_set_error("CURRENT: does not name a manifest");
        return HTKV_ECORRUPT;
    }
    *number = num;
    return 0;
}

/* MAN_INIT (payload @p p, 16 bytes): format, shard count and hash seed. 0, HTKV_EVERSION,
 * HTKV_ECORRUPT or -ENOMEM. */
static int
man_replay_init(struct manifest *m, const unsigned char *p)
{
    m->format = htkv_load32(p);
    uint32_t shards = htkv_load32(p + 4);
    m->hash_seed = htkv_load64(p + 8);
    if (m->format > HTKV_FORMAT_VERSION) {
        htkv_set_error("MANIFEST-%06llu: format version %u is newer than %u",
                       (unsigned long long)m->number, m->format, HTKV_FORMAT_VERSION);
        return HTKV_EVERSION;
    }
    if (shards == 0 || shards > MAN_SHARDS_MAX) {
        return HTKV_ECORRUPT;
    }
    return htkv_man_shards_alloc(m, shards);
}

/* An edit that sets one of the manifest's numbers (payload @p p: two u64): NEXT_ID,
 * BATCH_FLOOR, BATCH_ABORT or VERSIONS. 0, HTKV_ECORRUPT or -ENOMEM. */
static int
man_replay_number(struct manifest *m, uint32_t type, const unsigned char *p)
{
    uint64_t a = htkv_load64(p), b = htkv_load64(p + 8);
    switch (type) {
    case MAN_NEXT_ID: /* 0, next id */
        if (a != 0 || b == 0 || b > MAN_SEG_ID_MAX + 1) {
            return HTKV_ECORRUPT;
        }
        m->next_seg_id = b > m->next_seg_id ? b : m->next_seg_id;
        return 0;
    case MAN_BATCH_FLOOR: /* 0, floor */
        if (a != 0) {
            return HTKV_ECORRUPT;
        }
        m->batch_floor = b > m->batch_floor ? b : m->batch_floor;
        return 0;
    case MAN_BATCH_ABORT: /* segment id limit, version */
        if (b == 0 || a == 0 || a > MAN_SEG_ID_MAX + 1) {
            return HTKV_ECORRUPT;
        }
        return htkv_man_apply_abort(m, b, a);
    case MAN_VERSIONS: /* reserved up to, applied */
        if (a < b || a > REC_VERSION_MAX) {
            return HTKV_ECORRUPT;
        }
        m->version_hwm = a; /* the last edit wins: a clean close lowers it */
        m->version_applied = b > m->version_applied ? b : m->version_applied;
        return 0;
    default:
        HTKV_UNREACHABLE();
    }
}

/* An edit of one segment (payload @p p: shard u32, zero u32, id u64, and for SEG_END its end
 * u64): SEG_ADD, SEG_DROP, SEG_GONE or SEG_END. 0, HTKV_ECORRUPT or -ENOMEM. */
static int
man_replay_seg(struct manifest *m, uint32_t type, const unsigned char *p)
{
    uint32_t shard = htkv_load32(p);
    uint64_t id = htkv_load64(p + 8);
    if (shard >= m->shard_count || id == 0 || id > MAN_SEG_ID_MAX || htkv_load32(p + 4) != 0) {
        return HTKV_ECORRUPT;
    }
    int rc;
    switch (type) {
    case MAN_SEG_ADD:
        return htkv_man_apply_add(m, shard, id);
    case MAN_SEG_DROP:
        return htkv_man_apply_drop(m, shard, id);
    case MAN_SEG_GONE:
        rc = htkv_man_listed(m, shard, id) ? HTKV_ECORRUPT : htkv_man_gone_add(m, shard, id);
        if (rc == 0 && id >= m->next_seg_id) {
            m->next_seg_id = id + 1;
        }
        return rc;
    case MAN_SEG_END: {
        uint64_t end = htkv_load64(p + 16);
        return !htkv_man_listed(m, shard, id) || end < SEG_DATA_OFF || end > SEG_BYTES_LIMIT
                   ? HTKV_ECORRUPT
                   : htkv_man_apply_end(m, id, end);
    }
    default:
        HTKV_UNREACHABLE();
    }
}

/* Payload bytes of an edit of @p type, or 0 for a type no edit has. */
static uint32_t
man_edit_len(uint32_t type)
{
    switch (type) {
    case MAN_INIT:
    case MAN_SEG_ADD:
    case MAN_SEG_DROP:
    case MAN_NEXT_ID:
    case MAN_BATCH_FLOOR:
    case MAN_BATCH_ABORT:
    case MAN_SEG_GONE:
    case MAN_VERSIONS:
        return 16;
    case MAN_SEG_END:
        return 24;
    default:
        return 0;
    }
}

/*
 * Apply one framed edit (@p type, payload @p p of @p elen bytes). INIT comes first and once
 * (*have_init); any other edit before it, an unknown type or a wrong length is HTKV_ECORRUPT.
 */
static int
man_replay_edit(struct manifest *m, uint32_t type, uint32_t elen, const unsigned char *p,
                bool *have_init)
{
    uint32_t want = man_edit_len(type);
    if (want == 0 || elen != want || (type == MAN_INIT) == *have_init) {
        return HTKV_ECORRUPT;
    }
    switch (type) {
    case MAN_INIT: {
        int rc = man_replay_init(m, p);
        *have_init = rc == 0;
        return rc;
    }
    case MAN_SEG_ADD:
    case MAN_SEG_DROP:
    case MAN_SEG_GONE:
    case MAN_SEG_END:
        return man_replay_seg(m, type, p);
    default:
        return man_replay_number(m, type, p);
    }
}

/*
 * Replay the edits of buf[0, len). Sets *valid_end to the end of the last good edit: what
 * follows does not frame as an edit (bad length or CRC), which the caller judges.
 */
static int
man_replay(struct manifest *m, const unsigned char *buf, uint64_t len, uint64_t *valid_end)
{
    uint64_t off = MAN_HDR_BYTES;
    bool have_init = false;
    while (off + MAN_EDIT_HDR <= len) {
        uint32_t elen = htkv_load32(buf + off + 4);
        uint32_t type = htkv_load32(buf + off + 8);
        if (elen > 64 || off + MAN_EDIT_HDR + elen > len ||
            htkv_load32(buf + off) != htkv_crc32c(0, buf + off + 4, 8 + elen)) {
            break; /* torn or damaged: decided by the caller */
        }
        int rc = man_replay_edit(m, type, elen, buf + off + MAN_EDIT_HDR, &have_init);
        if (rc != 0) {
            if (rc == HTKV_ECORRUPT) {
                htkv_set_error("MANIFEST-%06llu: invalid edit at offset %llu",
                               (unsigned long long)m->number, (unsigned long long)off);
            }
            return rc;
        }
        off += MAN_EDIT_HDR + elen;
    }
    HTKV_ASSERT(off <= len);
    if (!have_init) {
        htkv_set_error("MANIFEST-%06llu: no INIT edit", (unsigned long long)m->number);
        return HTKV_ECORRUPT;
    }
    *valid_end = off;
    return 0;
}

/*
 * After the last good edit, only one torn append may follow: its non-zero bytes must be fewer
 * than one edit (an append that failed is zeroed by man_write_edits(); a torn one leaves part of
 * one edit), and nothing later may frame as an edit. More means edits were lost (a cut or
 * damaged file): corruption, since what they recorded was acted upon.
 */
static bool
man_tail_is_torn(const unsigned char *buf, uint64_t from, uint64_t len)
{
    uint64_t last = len;
    while (last > from && buf[last - 1] == 0) {
        last--;
    }
    if (last - from >= MAN_EDIT_MAX) {
        return false;
    }
    for (uint64_t off = from + 4; off + MAN_EDIT_HDR <= len; off += 4) {
        uint32_t elen = htkv_load32(buf + off + 4);
        if (elen <= 64 && off + MAN_EDIT_HDR + elen <= len && elen > 0 &&
            htkv_load32(buf + off) == htkv_crc32c(0, buf + off + 4, 8 + elen)) {
            return false;
        }
    }
    return true;
}

/*
 * Open manifest file @p name (m->fd, kept open on failure for the caller to close) and read it
 * whole into *buf_out (htkv_mem_alloc) of *len_out bytes, between a header's size and 64 MiB.
 * 0, HTKV_ECORRUPT, -ENOMEM or -errno, with the error set.
 */
static int
man_read_file(struct manifest *m, const char *name, unsigned char **buf_out, uint64_t *len_out)
{
    m->fd = htkv_fault_fails(HTKV_FAULT_OPEN)
                ? -1
                : openat(m->dir_fd, name, (m->writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (m->fd < 0) {
        int rc = errno == ENOENT ? HTKV_ECORRUPT : -errno;
        htkv_set_error("%s: named by CURRENT but cannot be opened: %s", name, htkv_strerror(rc));
        return rc;
    }
    struct stat st;
    if (fstat(m->fd, &st) != 0) {
        return -errno;
    }
    uint64_t len = (uint64_t)st.st_size;
    if (len < MAN_HDR_BYTES || len > MAN_BYTES_MAX) {
        htkv_set_error("%s: bad size %llu", name, (unsigned long long)len);
        return HTKV_ECORRUPT;
    }
    unsigned char *buf = htkv_mem_alloc(len);
    if (buf == NULL) {
        return -ENOMEM;
    }
    ssize_t got = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(m->fd, buf, len, 0);
    if (got != (ssize_t)len) {
        /* A short read: the file shrank while being read, which only another process can do. */
        int rc = got < 0 ? -errno : -EIO;
        htkv_set_error("%s: cannot be read: %s", name, htkv_strerror(rc));
        htkv_mem_free(buf);
        return rc;
    }
    *buf_out = buf;
    *len_out = len;
    return 0;
}

/*
 * Check the manifest read whole (@p buf, @p len bytes, at least a header) and replay it into
 * @p m: header, edits, and at most one torn append after the last good edit. 0, HTKV_ECORRUPT,
 * HTKV_EVERSION or -ENOMEM, with the error set.
 */
static int
man_parse(struct manifest *m, const char *name, const unsigned char *buf, uint64_t len)
{
    HTKV_ASSERT(len >= MAN_HDR_BYTES);
    if (memcmp(buf, MAN_MAGIC, 8) != 0 || htkv_load32(buf + 28) != htkv_crc32c(0, buf, 28) ||
        htkv_load64(buf + 16) != m->number) {
        htkv_set_error("%s: bad header at offset 0", name);
        return HTKV_ECORRUPT;
    }
    if (htkv_load32(buf + 8) > HTKV_FORMAT_VERSION) {
        htkv_set_error("%s: format version %u is newer than %u", name, htkv_load32(buf + 8),
                       HTKV_FORMAT_VERSION);
        return HTKV_EVERSION;
    }
    uint64_t end;
    int rc = man_replay(m, buf, len, &end);
    if (rc != 0) {
        return rc;
    }
    if (end < len && !man_tail_is_torn(buf, end, len)) {
        htkv_set_error("%s: damaged edits from offset %llu on (more than one torn append: "
                       "edits were lost)",
                       name, (unsigned long long)end);
        return HTKV_ECORRUPT;
    }
    /* A torn last edit was never acted upon: htkv_manifest_cut_torn() cuts it off before
     * anything is appended, once the open has checked everything else. */
    m->file_bytes = end;
    m->torn_end = len;
    return 0;
}

int
htkv_manifest_load(int dir_fd, bool writable, struct manifest **out)
{
    *out = NULL;
    uint64_t number = 0;
    int rc = man_read_current(dir_fd, &number);
    if (rc != 0) {
        return rc;
    }
    struct manifest *m = htkv_man_new(dir_fd, writable);
    if (m == NULL) {
        return -ENOMEM;
    }
    m->number = number;
    unsigned char *buf = NULL;
    uint64_t len = 0;
    char name[64];
    snprintf(name, sizeof(name), "MANIFEST-%06llu", (unsigned long long)number);
    rc = man_read_file(m, name, &buf, &len);
    if (rc == 0) {
        rc = man_parse(m, name, buf, len);
    }
    htkv_mem_free(buf);
    if (rc != 0) {
        htkv_manifest_close(m);
        return rc;
    }
    *out = m;
    return 0;
}

uint64_t
htkv_manifest_next_seg_id(struct manifest *m)
{
    pthread_mutex_lock(&m->lock);
    uint64_t id = m->next_seg_id++;
    pthread_mutex_unlock(&m->lock);
    /* 10^12 ids: a segment a microsecond for eleven days. The loader refuses larger ones. */
    HTKV_ASSERT(id <= MAN_SEG_ID_MAX);
    return id;
}

void
htkv_manifest_reserve_ids(struct manifest *m, uint64_t next)
{
    pthread_mutex_lock(&m->lock);
    if (next > m->next_seg_id && next <= MAN_SEG_ID_MAX + 1) {
        m->next_seg_id = next;
    }
    pthread_mutex_unlock(&m->lock);
}

void
htkv_manifest_close(struct manifest *m)
{
    if (m == NULL) {
        return;
    }
    if (m->fd >= 0) {
        close(m->fd);
    }
    if (m->shards != NULL) {
        for (uint32_t s = 0; s < m->shard_count; s++) {
            htkv_mem_free(m->shards[s].seg_ids);
        }
        htkv_mem_free(m->shards);
    }
    htkv_mem_free(m->aborts);
    htkv_mem_free(m->gone);
    htkv_mem_free(m->ends);
    pthread_mutex_destroy(&m->lock);
    htkv_mem_free(m);
}
