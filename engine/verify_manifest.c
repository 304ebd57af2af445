/*
 * verify_manifest.c - the verify walk of CURRENT, the manifest and the directory around them
 * (verify_int.h): CURRENT's syntax, or a store without it; the manifest's header and every edit
 * (checksum, meaning, damage followed by valid edits, a damaged tail longer than one torn edit),
 * building the walk's lists of segments, gone ids and recorded ends; and the files beside the
 * walked ones (other manifests, shard directories, segments and hints the manifest does not
 * list).
 *
 * The rules mirror the engine's: the edits man_replay() and man_tail_is_torn()
 * (engine/manifest.c), a directory without CURRENT check_fresh_dir() (engine/db.c), unlisted
 * files orphan_kind() (engine/recover.c). A change of those rules must be made here too.
 *
 * Layer: lifecycle (with the rest of the verify walk). Calls verify_walk.c (findings, freeing a
 * walk), the formats layer (manifest, record and segment constants; the unlisted-segment check
 * htkv_seg_file_has_record()) and the base layer (checksums, allocation, fault injection).
 *
 * Invariants
 *   1. Files are opened O_RDONLY and read with plain reads; directories only listed.
 *   2. Every edit length read from the manifest is bounded (INSPECT_EDIT_MAX, the file's length)
 *      before the payload is read.
 *   3. walk.shards lists exactly the segments added and not dropped by the valid edits, sorted by
 *      id; walk.shards is NULL until a valid INIT.
 */
#include "engine/verify_int.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "uring/ur_fault.h"

#define INSPECT_EDIT_MAX 64u /* man_replay(): longer payloads are damage */

static int
ishard_add(struct walk *w, uint32_t shard, uint64_t id)
{
    struct vec *v = &w->shards[shard].ids;
    uint64_t *ids = v->p;
    for (size_t i = 0; i < v->n; i++) {
        if (ids[i] == id) {
            return 1; /* added twice */
        }
    }
    int rc = vec_push(v, sizeof(id), &id);
    ids = v->p;
    for (size_t i = v->n - 1; rc == 0 && i > 0 && ids[i - 1] > ids[i]; i--) {
        uint64_t t = ids[i];
        ids[i] = ids[i - 1];
        ids[i - 1] = t;
    }
    return rc;
}

static bool
ishard_listed(const struct walk *w, uint32_t shard, uint64_t id)
{
    const struct vec *v = &w->shards[shard].ids;
    const uint64_t *ids = v->p;
    for (size_t i = 0; i < v->n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

static int
ishard_drop(struct walk *w, uint32_t shard, uint64_t id)
{
    struct vec *v = &w->shards[shard].ids;
    uint64_t *ids = v->p;
    for (size_t i = 0; i < v->n; i++) {
        if (ids[i] == id) {
            memmove(&ids[i], &ids[i + 1], (v->n - i - 1) * sizeof(*ids));
            v->n--;
            return 0;
        }
    }
    return 1;
}

/* INIT (16 bytes): format, shard count, hash seed. 0, 1 (stop: newer format) or -ENOMEM. */
static int
edit_init(struct walk *w, const char *rel, uint64_t off, const unsigned char *p)
{
    uint32_t format = htkv_load32(p), shards = htkv_load32(p + 4);
    w->sum->format = format;
    if (format > HTKV_FORMAT_VERSION) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off,
                           "INIT: format version %u is newer than %u", format, HTKV_FORMAT_VERSION);
        return 1;
    }
    if (shards == 0 || shards > MAN_SHARDS_MAX) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "INIT: %u shards", shards);
        return 0;
    }
    w->shards = htkv_mem_calloc(shards, sizeof(*w->shards));
    if (w->shards == NULL) {
        return -ENOMEM;
    }
    w->shard_count = w->sum->shard_count = shards;
    w->hash_seed = htkv_load64(p + 8);
    return 0;
}

/* NEXT_ID, VERSIONS, BATCH_FLOOR or BATCH_ABORT (16 bytes). 0 or -ENOMEM. */
static int
edit_number(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p)
{
    switch (type) {
    case MAN_NEXT_ID: {
        uint64_t next = htkv_load64(p + 8);
        if (htkv_load64(p) != 0 || next == 0 || next > MAN_SEG_ID_MAX + 1) {
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid NEXT_ID edit");
        } else if (next > w->next_seg_id) {
            w->next_seg_id = next;
        }
        return 0;
    }
    case MAN_VERSIONS: {
        uint64_t hwm = htkv_load64(p), applied = htkv_load64(p + 8);
        if (hwm < applied || hwm > REC_VERSION_MAX) {
            htkv_verify_report(
                w, HTKV_INSPECT_PROBLEM, rel, off,
                "VERSIONS: reservation %llu below the applied mark %llu, or above 2^62",
                (unsigned long long)hwm, (unsigned long long)applied);
            return 0;
        }
        w->version_hwm = hwm; /* the last edit wins: a clean close lowers it */
        w->version_applied = applied > w->version_applied ? applied : w->version_applied;
        return 0;
    }
    case MAN_BATCH_FLOOR:
        if (htkv_load64(p) != 0) {
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid BATCH_FLOOR edit");
        } else if (htkv_load64(p + 8) > w->batch_floor) {
            w->batch_floor = htkv_load64(p + 8);
        }
        return 0;
    case MAN_BATCH_ABORT: {
        uint64_t limit = htkv_load64(p), version = htkv_load64(p + 8);
        if (version == 0 || limit == 0 || limit > MAN_SEG_ID_MAX + 1) {
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid BATCH_ABORT edit");
            return 0;
        }
        return vec_push(&w->aborted, sizeof(version), &version);
    }
    default:
        HTKV_UNREACHABLE();
    }
}

/* The shard and segment id that every segment edit starts with (@p p), as *@p shard and *@p id:
 * true when they are valid, else the problem is reported under @p what and false returned. */
static bool
seg_ref(struct walk *w, const char *rel, uint64_t off, const char *what, const unsigned char *p,
        uint32_t *shard, uint64_t *id)
{
    *shard = htkv_load32(p);
    *id = htkv_load64(p + 8);
    if (*shard >= w->shard_count || *id == 0 || *id > MAN_SEG_ID_MAX || htkv_load32(p + 4) != 0) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off,
                           "%s: invalid shard %u or segment %llu", what, *shard,
                           (unsigned long long)*id);
        return false;
    }
    return true;
}

/* SEG_GONE (16 bytes) or SEG_END (24 bytes). 0 or -ENOMEM. */
static int
edit_gone_end(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p)
{
    uint32_t shard;
    uint64_t id;
    if (!seg_ref(w, rel, off, type == MAN_SEG_GONE ? "SEG_GONE" : "SEG_END", p, &shard, &id)) {
        return 0;
    }
    bool listed = ishard_listed(w, shard, id);
    if (type == MAN_SEG_GONE) {
        if (listed) {
            htkv_verify_report(
                w, HTKV_INSPECT_PROBLEM, rel, off,
                "SEG_GONE: segment %llu of shard %u is listed (an id is never both listed "
                "and gone)",
                (unsigned long long)id, shard);
            return 0;
        }
        if (id >= w->next_seg_id) {
            w->next_seg_id = id + 1;
        }
        return idval_put(&w->gone, id, shard);
    }
    uint64_t end = htkv_load64(p + 16);
    if (!listed) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off,
                           "SEG_END: segment %llu of shard %u is not listed",
                           (unsigned long long)id, shard);
        return 0;
    }
    if (end < SEG_DATA_OFF || end > SEG_BYTES_LIMIT) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off,
                           "SEG_END: end %llu of segment %llu is out of [%u, %llu]",
                           (unsigned long long)end, (unsigned long long)id, SEG_DATA_OFF,
                           (unsigned long long)SEG_BYTES_LIMIT);
        return 0;
    }
    return idval_put(&w->ends, id, end);
}

/* SEG_ADD or SEG_DROP (16 bytes). 0 or -ENOMEM. */
static int
edit_add_drop(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p)
{
    uint32_t shard;
    uint64_t id;
    const char *what = type == MAN_SEG_ADD ? "SEG_ADD" : "SEG_DROP";
    if (!seg_ref(w, rel, off, what, p, &shard, &id)) {
        return 0;
    }
    if (type == MAN_SEG_ADD && idval_find(&w->gone, id) != NULL) {
        htkv_verify_report(
            w, HTKV_INSPECT_PROBLEM, rel, off,
            "SEG_ADD: segment %llu of shard %u was called gone before (ids are never "
            "reused)",
            (unsigned long long)id, shard);
        return 0;
    }
    int rc = type == MAN_SEG_ADD ? ishard_add(w, shard, id) : ishard_drop(w, shard, id);
    if (rc == 1) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "%s: segment %llu of shard %u %s",
                           what, (unsigned long long)id, shard,
                           type == MAN_SEG_ADD ? "added twice" : "was not there");
        return 0;
    }
    if (rc == 0 && type == MAN_SEG_ADD && id >= w->next_seg_id) {
        w->next_seg_id = id + 1;
    }
    if (rc == 0 && type == MAN_SEG_DROP) {
        /* htkv_man_apply_drop() (engine/manifest.c): its file is obsolete now, whether or not its
         * unlink happens. */
        idval_remove(&w->ends, id);
        rc = idval_put(&w->gone, id, shard);
    }
    return rc;
}

/* Apply one well-framed edit (man_replay()'s rules). Returns 0, 1 (stop: newer format), -ENOMEM. */
static int
apply_edit(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p,
           uint32_t len)
{
    HTKV_ASSERT(len <= INSPECT_EDIT_MAX); /* edit_framed() bounded it */
    bool init = w->shards != NULL;
    if (type == MAN_INIT && len == 16 && !init) {
        return edit_init(w, rel, off, p);
    }
    if (init && len == 16 &&
        (type == MAN_NEXT_ID || type == MAN_VERSIONS || type == MAN_BATCH_FLOOR ||
         type == MAN_BATCH_ABORT)) {
        return edit_number(w, rel, off, type, p);
    }
    if (init && ((type == MAN_SEG_GONE && len == 16) || (type == MAN_SEG_END && len == 24))) {
        return edit_gone_end(w, rel, off, type, p);
    }
    if (init && len == 16 && (type == MAN_SEG_ADD || type == MAN_SEG_DROP)) {
        return edit_add_drop(w, rel, off, type, p);
    }
    htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid edit (type %u, %u bytes%s)",
                       type, len, init ? "" : ", before INIT");
    return 0;
}

static bool
edit_framed(const unsigned char *buf, uint64_t off, uint64_t len)
{
    uint32_t elen = htkv_load32(buf + off + 4);
    return elen <= INSPECT_EDIT_MAX && off + MAN_EDIT_HDR + elen <= len &&
           htkv_load32(buf + off) == htkv_crc32c(0, buf + off + 4, 8 + elen);
}

/* Next offset after @p from (4-aligned) where a well-framed edit starts, or 0 (as
 * man_tail_is_torn(): a non-empty edit). */
static uint64_t
edit_resync(const unsigned char *buf, uint64_t from, uint64_t len)
{
    for (uint64_t off = from + 4; off + MAN_EDIT_HDR <= len; off += 4) {
        if (htkv_load32(buf + off + 4) > 0 && edit_framed(buf, off, len)) {
            return off;
        }
    }
    return 0;
}

/* Walk the edits of a manifest held in @p buf. Returns 0, 1 (cannot go on), -ENOMEM. */
static int
walk_edits(struct walk *w, const char *rel, const unsigned char *buf, uint64_t len)
{
    uint64_t off = MAN_HDR_BYTES;
    while (off + MAN_EDIT_HDR <= len) {
        if (!edit_framed(buf, off, len)) {
            uint64_t next = edit_resync(buf, off, len);
            if (next == 0) {
                break;
            }
            htkv_verify_report(
                w, HTKV_INSPECT_PROBLEM, rel, off,
                "damaged edit followed by valid edits (next valid edit at offset %llu)",
                (unsigned long long)next);
            off = next;
            continue;
        }
        uint32_t elen = htkv_load32(buf + off + 4);
        int rc =
            apply_edit(w, rel, off, htkv_load32(buf + off + 8), buf + off + MAN_EDIT_HDR, elen);
        if (rc != 0) {
            return rc;
        }
        w->sum->manifest_edits++;
        off += MAN_EDIT_HDR + elen;
    }
    /* man_tail_is_torn(): nothing after @p off frames as an edit (edit_resync() found none);
     * what is not zero there must be shorter than one edit to be one torn append. */
    uint64_t last = len;
    while (last > off && buf[last - 1] == 0) {
        last--;
    }
    if (last > off && last - off < MAN_EDIT_MAX) {
        htkv_verify_report(w, htkv_verify_tail_kind(w), rel, off,
                           "torn last edit (%llu bytes): never acted upon; a writable open cuts it",
                           (unsigned long long)(last - off));
    } else if (last > off) {
        htkv_verify_report(
            w, HTKV_INSPECT_PROBLEM, rel, off,
            "damaged edits from offset %llu on (%llu bytes, more than one torn append): "
            "edits were lost; htkv_open refuses the store",
            (unsigned long long)off, (unsigned long long)(last - off));
    }
    if (w->shards == NULL) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, MAN_HDR_BYTES, "no INIT edit");
        return 1;
    }
    return 0;
}

/* Check the 32-byte manifest header; returns 1 when the edits cannot be interpreted. */
static int
check_man_header(struct walk *w, const char *rel, const unsigned char *buf, uint64_t number)
{
    if (memcmp(buf, MAN_MAGIC, 8) != 0) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad manifest magic");
    }
    if (htkv_load32(buf + 28) != htkv_crc32c(0, buf, 28)) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 28, "manifest header checksum mismatch");
    }
    if (htkv_load64(buf + 16) != number) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 16,
                           "header names manifest %llu, the file name %llu",
                           (unsigned long long)htkv_load64(buf + 16), (unsigned long long)number);
    }
    if (htkv_load32(buf + 8) > HTKV_FORMAT_VERSION) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 8, "format version %u is newer than %u",
                           htkv_load32(buf + 8), HTKV_FORMAT_VERSION);
        return 1;
    }
    return 0;
}

/* Read and walk MANIFEST-@p number. Returns 0, 1 (cannot go on), -errno. */
int
htkv_verify_walk_manifest(struct walk *w, uint64_t number)
{
    char rel[64];
    snprintf(rel, sizeof(rel), "MANIFEST-%06llu", (unsigned long long)number);
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(w->dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0,
                           "named by CURRENT but cannot be opened: %s", strerror(errno));
        return 1;
    }
    struct stat st;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    uint64_t len = (uint64_t)st.st_size;
    if (len < MAN_HDR_BYTES || len > MAN_BYTES_MAX) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad manifest size %llu",
                           (unsigned long long)len);
        rc = 1;
        goto out;
    }
    buf = htkv_mem_alloc(len);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    ssize_t got = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(fd, buf, len, 0);
    if (got != (ssize_t)len) {
        rc = got < 0 ? -errno : -EIO;
        htkv_set_error("%s/%s: cannot be read: %s", w->dir, rel, htkv_strerror(rc));
        goto out;
    }
    w->sum->bytes_checked += len;
    w->done += len;
    rc = check_man_header(w, rel, buf, number);
    if (rc == 0) {
        rc = walk_edits(w, rel, buf, len);
    }
out:
    htkv_mem_free(buf);
    close(fd);
    return rc;
}

/* Parse "MANIFEST-NNNNNN" (exactly) into *number. */
static bool
manifest_name(const char *name, uint64_t *number)
{
    unsigned long long n;
    int used = 0;
    if (strlen(name) != 15 || sscanf(name, "MANIFEST-%6llu%n", &n, &used) != 1 || used != 15 ||
        n == 0) {
        return false;
    }
    *number = n;
    return true;
}

/* Is @p name @p prefix followed by exactly @p digits decimal digits and then @p suffix? */
static bool
numbered_name(const char *name, const char *prefix, size_t digits, const char *suffix)
{
    size_t p = strlen(prefix);
    return strncmp(name, prefix, p) == 0 && strspn(name + p, "0123456789") == digits &&
           strcmp(name + p + digits, suffix) == 0;
}

/*
 * Does top-level entry @p name show that a store lived here (holds_store_data())? A shard
 * directory holding anything, a manifest longer than the header and INIT edit that creation
 * writes first, OPTIONS or a snapshot do. 1 = yes, 0 = no, -1 = a shard name that is not a
 * directory (reported: htkv_open refuses such a directory).
 */
static int
holds_store_data(struct walk *w, const char *name)
{
    bool shard = numbered_name(name, "shard-", 3, "") || strcmp(name, "lost") == 0;
    bool man = numbered_name(name, "MANIFEST-", 6, "");
    if (!shard && !man && strcmp(name, "OPTIONS") != 0 &&
        !numbered_name(name, "snapshot-", 6, ".snap")) {
        return 0;
    }
    struct stat st;
    if (fstatat(w->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return 0; /* gone since the directory was read */
    }
    if (man) {
        return (uint64_t)st.st_size > MAN_HDR_BYTES + MAN_EDIT_HDR + 16;
    }
    if (!shard) {
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, name, 0,
                           "not a directory, so this is not an htkv store: htkv_open refuses it");
        return -1;
    }
    int fd = openat(w->dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0) {
            close(fd);
        }
        return 1; /* cannot be listed: it may hold anything */
    }
    int found = 0;
    struct dirent *de;
    while (found == 0 && (de = readdir(d)) != NULL) {
        found = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    }
    closedir(d);
    return found;
}

/*
 * No CURRENT (check_fresh_dir()): no store when the directory holds nothing of one (empty, or
 * what an interrupted creation leaves); otherwise a store that lost its CURRENT, which
 * htkv_open refuses, and the newest MANIFEST-* there is, if any, is walked. Returns 0 (*number
 * set), 1 (nothing to walk), HTKV_ENOTFOUND or -errno.
 */
static int
current_missing(struct walk *w, uint64_t newest, uint64_t *number)
{
    DIR *d = fdopendir(dup(w->dir_fd));
    if (d == NULL) {
        return -errno;
    }
    rewinddir(d);
    char held[256] = "";
    bool refused = false;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int r = holds_store_data(w, de->d_name);
        refused = refused || r < 0;
        if (r > 0 && held[0] == '\0') {
            snprintf(held, sizeof(held), "%s", de->d_name);
        }
    }
    closedir(d);
    if (held[0] == '\0' && !refused) {
        htkv_set_error("%s: no store here (no CURRENT, and nothing of a store)", w->dir);
        return HTKV_ENOTFOUND;
    }
    if (held[0] != '\0') {
        htkv_verify_report(
            w, HTKV_INSPECT_PROBLEM, "CURRENT", 0,
            "CURRENT is missing, but the directory holds a store ('%s'): htkv_open refuses "
            "it%s",
            held, newest ? "; walking the newest MANIFEST file instead" : "");
    }
    *number = newest;
    return newest ? 0 : 1;
}

/* Read CURRENT (man_read_current()); on damage, fall back to the newest MANIFEST-* there is. */
int
htkv_verify_walk_current(struct walk *w, uint64_t *number)
{
    uint64_t newest = 0;
    DIR *d = fdopendir(dup(w->dir_fd));
    if (d == NULL) {
        return -errno;
    }
    rewinddir(d); /* the duplicate shares its position with every other one */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t n;
        if (manifest_name(de->d_name, &n) && n > newest) {
            newest = n;
        }
    }
    closedir(d);
    char buf[64] = { 0 };
    ssize_t n = -1;
    int fd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(w->dir_fd, "CURRENT", O_RDONLY | O_CLOEXEC);
    int open_err = fd < 0 ? errno : 0;
    if (fd < 0 && open_err == ENOENT) {
        return current_missing(w, newest, number);
    }
    if (fd >= 0) {
        n = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : read(fd, buf, sizeof(buf) - 1);
        int err = errno;
        close(fd);
        if (n < 0) {
            /* An I/O error says nothing about what CURRENT holds: the walk stops with it. */
            htkv_set_error("%s/CURRENT: cannot be read: %s", w->dir, strerror(err));
            return -err;
        }
    }
    unsigned long long num = 0;
    char nl = 0;
    if (n == 16 && sscanf(buf, "MANIFEST-%6llu%c", &num, &nl) == 2 && nl == '\n' && num != 0) {
        *number = num;
        w->sum->bytes_checked += 16;
        return 0;
    }
    htkv_verify_report(w, HTKV_INSPECT_PROBLEM, "CURRENT", 0, "%s%s%s",
                       fd < 0 ? "cannot be opened: " : "does not name a manifest",
                       fd < 0 ? strerror(open_err) : "",
                       newest ? "; walking the newest MANIFEST file instead" : "");
    *number = newest;
    return newest ? 0 : 1;
}

/*
 * Does the manifest that CURRENT names now list segment @p id of shard @p shard, or call it
 * gone? Live mode: a writer adds a segment (and only then writes records to it) after the
 * manifest was read. The manifest is read again, its findings discarded.
 */
static bool
listed_now(struct walk *w, uint32_t shard, uint64_t id)
{
    struct htkv_inspect_summary sum;
    memset(&sum, 0, sizeof(sum));
    struct walk w2 = { .dir = w->dir, .flags = w->flags, .sum = &sum, .next_seg_id = 1 };
    w2.dir_fd = fcntl(w->dir_fd, F_DUPFD_CLOEXEC, 0);
    if (w2.dir_fd < 0) {
        return false;
    }
    uint64_t number = 0;
    bool found = false;
    if (htkv_verify_walk_current(&w2, &number) == 0 &&
        htkv_verify_walk_manifest(&w2, number) == 0 && w2.shards != NULL &&
        shard < w2.shard_count) {
        found = ishard_listed(&w2, shard, id) || idval_find(&w2.gone, id) != NULL;
    }
    htkv_verify_walk_free(&w2);
    return found;
}

/*
 * What recovery makes of segment @p id of shard @p shard, which the manifest does not list
 * (orphan_kind()): a note (a file it removes) or a problem (one with data it may not remove,
 * which fails the open). *why says why.
 */
static int
orphan_verdict(struct walk *w, uint32_t shard, uint64_t id, const char **why)
{
    if (idval_find(&w->gone, id) != NULL) {
        *why = "but the manifest calls it gone (dropped, or staged by a restore that did not "
               "commit): left over; a writable open removes it";
        return HTKV_INSPECT_NOTE;
    }
    char rel[64];
    snprintf(rel, sizeof(rel), "shard-%03u/%012llu.seg", shard, (unsigned long long)id);
    if (!htkv_seg_file_has_record(w->dir_fd, rel, id, HTKV_VALUE_MAX_LIMIT)) {
        *why = "and holds no record that checks (a crash while creating it); a writable open "
               "removes it";
        return HTKV_INSPECT_NOTE;
    }
    if ((w->flags & HTKV_INSPECT_LIVE) && (id >= w->next_seg_id || listed_now(w, shard, id))) {
        *why = "as read, and holds records: a segment the writer added since";
        return HTKV_INSPECT_NOTE;
    }
    *why = "and holds records (the manifest may be older than its segments): htkv_open "
           "refuses the store and removes nothing";
    return HTKV_INSPECT_PROBLEM;
}

/*
 * Files beside the walked ones: manifests CURRENT does not name (notes), shard directories
 * (missing or not a directory: problems, as the open fails to list them), and segment and hint
 * files the manifest does not list (orphan_verdict()). A hint whose segment file does not exist
 * is left to the hint checks of cmd_verify.
 */
void
htkv_verify_walk_leftovers(struct walk *w)
{
    DIR *d = fdopendir(dup(w->dir_fd));
    if (d == NULL) {
        return;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t n;
        if (manifest_name(de->d_name, &n) && n != w->sum->manifest_number) {
            htkv_verify_report(
                w, HTKV_INSPECT_NOTE, de->d_name, 0,
                "not named by CURRENT: left over, unused; a writable open removes it");
        }
    }
    closedir(d);
    for (uint32_t s = 0; s < w->shard_count; s++) {
        char sd[24];
        snprintf(sd, sizeof(sd), "shard-%03u", s);
        int fd = htkv_fault_fails(HTKV_FAULT_OPEN)
                     ? -1
                     : openat(w->dir_fd, sd, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *sdir = fd >= 0 ? fdopendir(fd) : NULL;
        if (sdir == NULL) {
            int err = errno;
            if (fd >= 0) {
                close(fd);
            }
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, sd, 0,
                               "shard directory cannot be listed: %s; htkv_open refuses the store",
                               strerror(err));
            continue;
        }
        while ((de = readdir(sdir)) != NULL) {
            unsigned long long id;
            bool seg = numbered_name(de->d_name, "", 12, ".seg");
            if ((!seg && !numbered_name(de->d_name, "", 12, ".hint")) ||
                sscanf(de->d_name, "%12llu", &id) != 1 || ishard_listed(w, s, id)) {
                continue;
            }
            char rel[300]; /* shard-SSS/ + a 255-byte name */
            snprintf(rel, sizeof(rel), "%s/%s", sd, de->d_name);
            char seg_rel[64];
            snprintf(seg_rel, sizeof(seg_rel), "%s/%012llu.seg", sd, id);
            struct stat st;
            if (!seg && fstatat(w->dir_fd, seg_rel, &st, 0) != 0 && errno == ENOENT) {
                continue; /* a hint without its segment: cmd_verify's hint checks say so */
            }
            const char *why;
            int kind = orphan_verdict(w, s, (uint64_t)id, &why);
            htkv_verify_report(w, kind, rel, 0, "%snot in the manifest %s",
                               seg ? "" : "hint of a segment that is ", why);
        }
        closedir(sdir);
    }
}
