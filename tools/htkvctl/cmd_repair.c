/*
 * cmd_repair.c - `htkvctl repair [--dry-run] DIR`: bring back a store that htkv_open() refuses
 * (HTKV_ECORRUPT) because its CURRENT or MANIFEST is missing, damaged or older than the
 * segments, because a segment the manifest does not know holds data, or because a segment is
 * damaged before its end; the way LevelDB's and RocksDB's RepairDB do: the segments on disk are
 * the truth, the manifest is rebuilt from them.
 *
 * Design. The store is never opened through the engine (its open would refuse it). Under
 * DIR/LOCK (flock LOCK_EX | LOCK_NB, as a writer takes it) the command
 *   1. reads every MANIFEST-NNNNNN of DIR edit by edit (each edit checks its own CRC; past a
 *      damaged one the walk resyncs on the next valid edit), for the store's identity (INIT:
 *      shard count and hash seed), the segment ids it recorded as dropped or gone, the highest
 *      segment id and the versions it recorded; CURRENT names the manifest to prefer;
 *   2. lists every directory DIR/shard-* (also misnamed ones, such as shard-000.moved) and reads
 *      each segment's header (htkv_seg_read_header()); without a readable INIT, the segment
 *      headers tell the shard count and the hash seed (segments of older builds hold 0/0);
 *   3. walks the records of every segment with a good header with the rules of recovery
 *      (engine/recover.c: the record walk, batch framing, the shard of each key, SEAL), and
 *      decides: keep the file as it is (every record checks up to a torn tail, which the next
 *      open cuts), rewrite its good records into a new segment (damage followed by valid
 *      records, records out of place or of another shard: a batch is kept only when its BEGIN,
 *      every operation and its COMMIT are in the file), or move it to DIR/lost/ (another store,
 *      a name that is not its header's id, an id the manifest dropped, nothing left to keep).
 *      A segment with a bad header in a shard directory is walked with the id of its name and
 *      the shard of its directory (a record's CRC covers its segment id and offset, so the
 *      records that check are that segment's) and rewritten; a segment of this store in the
 *      wrong shard directory is moved to its own;
 *   4. writes the rewritten segments (header as seg.c writes it, records re-encoded for their
 *      new id and offset with the same type, flags and version, then a SEAL record) to a
 *      temporary name, fdatasyncs, renames, syncs the directory;
 *   5. writes the new manifest with htkv_manifest_rebuild() (number above every manifest seen,
 *      lost/ included; the kept segments; the next id above every id seen; versions up to the
 *      highest seen in any record or manifest, so that none is handed out twice), which
 *      switches CURRENT: the commit point.
 *
 * Crash safety. Until CURRENT is switched, DIR holds the old CURRENT and the manifest it names:
 * what moves before (hint files, temporary files, segments that no state can use, the damaged
 * originals of rewritten segments whose good records are in their new file) makes no store
 * that opened before refuse to open, and a second repair finishes the job. The old CURRENT is
 * linked into lost/ before the switch replaces it; the old manifests move to lost/ after it (a
 * crash in between leaves them in DIR, where the next writable open removes them). No file of
 * the store is ever unlinked: every file taken out of it is renamed into DIR/lost/, keeping its
 * path (lost/shard-000/000000000007.seg; a name already taken gets a .1, .2 ... suffix).
 *
 * The largest batch floor and every aborted batch any manifest recorded are kept: a batch with
 * parts in several shards at or below the floor was complete when the floor was recorded, and
 * compaction may since have dropped some of its parts with their segments (without the floor
 * the rest would not be applied: acknowledged writes lost); an aborted batch stays unapplied.
 * The price: a batch below the floor with a part in a segment moved to lost/ is applied in the
 * shards that kept theirs.
 *
 * Invariants
 *   1. With --dry-run nothing in DIR is created, written, renamed or removed (not even lost/ or
 *      LOCK); the report is the same plan.
 *   2. Every record that checks, in a segment of this store that no manifest records as
 *      dropped, and that is not left out for its framing (a batch not whole in its file) or its
 *      shard, is in a segment the new manifest lists, at its original version.
 *   3. A directory that holds no store is refused before anything is created in it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/hash.h"
#include "engine/internal.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "tools/htkvctl/ctl.h"

#define REP_TMP_SUFFIX ".repair-tmp" /* a rewritten segment before its rename */
#define REP_SEAL_BYTES (REC_HDR_BYTES + REC_SEAL_PAYLOAD)
#define REP_RANGES_SHOWN 16 /* dropped ranges printed per file in text */

/* ---- state ----------------------------------------------------------------------------------- */

enum fkind {
    FK_SEG,      /* NNNNNNNNNNNN.seg in a shard-* directory */
    FK_HINT,     /* *.hint, *.hint.tmp */
    FK_TMP,      /* CURRENT.tmp, a rewritten segment of an interrupted repair */
    FK_MANIFEST, /* MANIFEST-NNNNNN */
};

enum fact {
    FA_KEEP,    /* stays (possibly moved to its shard's directory) */
    FA_REWRITE, /* good records copied to a new segment, the file goes to lost/ */
    FA_LOST,    /* moved to lost/ */
};

/* A byte range of a segment that a rewrite leaves out. */
struct drop {
    uint64_t from, to;
    uint64_t records; /* valid records in it (0: damaged bytes) */
    const char *why;
};

struct rfile {
    char *rel; /* relative to DIR */
    enum fkind kind;
    enum fact act;
    char why[200]; /* FA_LOST: why */
    char *dest;    /* FA_LOST, FA_REWRITE: the name in lost/ */
    char *home;    /* FA_KEEP: the name in its shard's directory (== rel unless misplaced) */
    /* segments */
    bool hdr_ok;        /* header readable (magic, checksum) */
    bool salvage;       /* bad header: its records are checked against its name and directory */
    uint32_t dir_shard; /* shard of its directory, UINT32_MAX for a misnamed one */
    uint32_t shard;     /* from its header */
    uint64_t id;        /* from its header */
    uint64_t name_id;   /* from its name */
    uint32_t hdr_count;
    uint64_t hdr_seed;
    uint64_t size;
    bool sealed;
    uint64_t records;      /* valid records kept (SEAL excluded) */
    uint64_t dropped_recs; /* valid records left out */
    uint64_t torn_from;    /* a torn tail: where recovery (or the rewrite) cuts */
    uint64_t torn_bytes;   /* its non-zero bytes */
    uint64_t max_version;
    struct drop *drops;
    size_t ndrops, dcap;
    uint64_t *keep; /* offsets of the records a rewrite copies */
    size_t nkeep, kcap;
    uint64_t new_id;
    char *new_rel;
    uint64_t new_bytes;
};

struct rman {
    char name[32];
    uint64_t number;
    uint64_t size;
    bool hdr_ok;
    bool init;
    uint32_t format;
    uint32_t shard_count;
    uint64_t seed;
    uint64_t edits;      /* valid edits */
    uint64_t damaged_at; /* offset of the first damaged edit, 0 = none */
    bool readable;
    char *dest; /* its name in lost/ */
};

/* What the manifests say about a segment id: the last ADD, DROP or GONE wins. */
struct idstate {
    uint64_t id;
    bool gone;
};

struct rep {
    struct ctl *c;
    bool dry;
    int dir_fd;
    int lock_fd;
    /* manifests */
    struct rman *mans;
    size_t nmans, mcap;
    struct idstate *ids;
    size_t nids, icap;
    char current[64];        /* what CURRENT says, for the report */
    uint64_t current_number; /* the manifest it names, 0 = none */
    bool current_exists;
    uint64_t max_man_number;  /* in DIR, CURRENT and lost/ */
    uint64_t man_next_id;     /* NEXT_ID and the largest id in any edit, + 1 */
    uint64_t man_hwm;         /* largest MAN_VERSIONS hwm (the last edit of each manifest) */
    uint64_t man_applied;     /* largest applied mark or batch floor */
    uint64_t man_floor;       /* largest MAN_BATCH_FLOOR: batches at or below it were complete */
    struct man_abort *aborts; /* MAN_BATCH_ABORT versions of any manifest: never applied */
    size_t naborts, acap;
    /* identity */
    uint32_t shard_count;
    uint64_t seed;
    char ident_from[64];
    char ident_note[200];
    /* files */
    struct rfile *files;
    size_t nfiles, fcap;
    char **notes; /* things left alone or created */
    size_t nnotes, ncap;
    char **mkdirs; /* shard directories to create */
    size_t nmkdirs, mkcap;
    char **lost_names; /* names assigned in lost/ by this run */
    size_t nlost, lcap;
    uint64_t lost_max_id; /* largest segment id named in lost/ */
    /* plan */
    uint64_t next_id;
    uint64_t version;
    uint64_t new_number;
    struct man_shard *lists;
    char *current_dest; /* lost/ name of CURRENT's link */
    char **dirty;       /* directories changed and not yet synced */
    size_t ndirty, dcap;
};

/* ---- small helpers --------------------------------------------------------------------------- */

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        fputs("htkvctl: out of memory\n", stderr);
        exit(CTL_EXIT_FAIL);
    }
    return q;
}

static char *
xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL) {
        fputs("htkvctl: out of memory\n", stderr);
        exit(CTL_EXIT_FAIL);
    }
    return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fputs("htkvctl: out of memory\n", stderr);
        exit(CTL_EXIT_FAIL);
    }
    return s;
}

#define PUSH(arr, n, cap, val)                                                                     \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? (cap)*2 : 16;                                                          \
            (arr) = xrealloc((arr), (cap) * sizeof(*(arr)));                                       \
        }                                                                                          \
        (arr)[(n)++] = (val);                                                                      \
    } while (0)

static void rep_note(struct rep *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
rep_note(struct rep *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    if (s != NULL) {
        PUSH(r->notes, r->nnotes, r->ncap, s);
    }
}

/*
 * Open directory @p rel of @p dir_fd for reading (not following a symbolic link), or @p dir_fd
 * itself from its first entry when @p rel is "". NULL with errno set; nothing leaks.
 */
static DIR *
dir_open(int dir_fd, const char *rel)
{
    int fd =
        rel[0] ? openat(dir_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW) : dup(dir_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL && fd >= 0) {
        int err = errno;
        close(fd);
        errno = err;
    }
    if (d != NULL && rel[0] == '\0') {
        rewinddir(d); /* a duplicate shares its position with dir_fd */
    }
    return d;
}

static bool
all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

/* "MANIFEST-NNNNNN" exactly. */
static bool
manifest_name(const char *name, uint64_t *number)
{
    if (strlen(name) != 15 || strncmp(name, "MANIFEST-", 9) != 0 || !all_digits(name + 9, 6)) {
        return false;
    }
    *number = strtoull(name + 9, NULL, 10);
    return *number > 0;
}

/* "NNNNNNNNNNNN.seg" exactly. */
static bool
segment_name(const char *name, uint64_t *id)
{
    if (strlen(name) != 16 || strcmp(name + 12, ".seg") != 0 || !all_digits(name, 12)) {
        return false;
    }
    *id = strtoull(name, NULL, 10);
    return true;
}

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* "shard-SSS" exactly: its number, or -1. */
static long
shard_dir_number(const char *name)
{
    if (strlen(name) != 9 || strncmp(name, "shard-", 6) != 0 || !all_digits(name + 6, 3)) {
        return -1;
    }
    return strtol(name + 6, NULL, 10);
}

static bool
exists_at(int dir_fd, const char *rel)
{
    struct stat st;
    return fstatat(dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
}

/* Is @p name taken in lost/ (on disk, or by this run)? */
static bool
lost_taken(const struct rep *r, const char *name)
{
    for (size_t i = 0; i < r->nlost; i++) {
        if (strcmp(r->lost_names[i], name) == 0) {
            return true;
        }
    }
    return exists_at(r->dir_fd, name);
}

/* The name in lost/ for file @p rel: lost/REL, or lost/REL.N when that is taken. */
static char *
lost_name(struct rep *r, const char *rel)
{
    char *name = xprintf("lost/%s", rel);
    for (unsigned n = 1; lost_taken(r, name); n++) {
        free(name);
        name = xprintf("lost/%s.%u", rel, n);
    }
    PUSH(r->lost_names, r->nlost, r->lcap, name);
    return xstrdup(name);
}

static uint64_t
max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* ---- step 1: the manifests ------------------------------------------------------------------- */

static struct idstate *
id_find(struct rep *r, uint64_t id, bool add)
{
    size_t lo = 0, hi = r->nids;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ids[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < r->nids && r->ids[lo].id == id) {
        return &r->ids[lo];
    }
    if (!add) {
        return NULL;
    }
    if (r->nids == r->icap) {
        r->icap = r->icap ? r->icap * 2 : 64;
        r->ids = xrealloc(r->ids, r->icap * sizeof(*r->ids));
    }
    memmove(&r->ids[lo + 1], &r->ids[lo], (r->nids - lo) * sizeof(*r->ids));
    r->nids++;
    r->ids[lo] = (struct idstate){ .id = id };
    return &r->ids[lo];
}

/* Remember aborted batch @p version (duplicates are harmless: the manifest merges them). */
static void
abort_add(struct rep *r, uint64_t version)
{
    if (r->naborts == r->acap) {
        r->acap = r->acap ? r->acap * 2 : 16;
        r->aborts = xrealloc(r->aborts, r->acap * sizeof(*r->aborts));
    }
    r->aborts[r->naborts++] = (struct man_abort){ .version = version };
}

static bool
edit_framed(const unsigned char *buf, uint64_t off, uint64_t len)
{
    uint32_t elen = htkv_load32(buf + off + 4);
    return elen <= 64 && off + MAN_EDIT_HDR + elen <= len &&
           htkv_load32(buf + off) == htkv_crc32c(0, buf + off + 4, 8 + elen);
}

/* Apply the valid edits of manifest @p m (its bytes in @p buf) to the id states and maxima. */
static void
man_walk(struct rep *r, struct rman *m, const unsigned char *buf, uint64_t len)
{
    uint64_t hwm = 0;
    bool have_hwm = false;
    for (uint64_t off = MAN_HDR_BYTES; off + MAN_EDIT_HDR <= len;) {
        if (!edit_framed(buf, off, len)) {
            uint64_t next = 0;
            for (uint64_t o = off + 4; o + MAN_EDIT_HDR <= len && next == 0; o += 4) {
                if (htkv_load32(buf + o + 4) > 0 && edit_framed(buf, o, len)) {
                    next = o;
                }
            }
            if (!htkv_seg_all_zero(buf + off, len - off) && m->damaged_at == 0) {
                m->damaged_at = off;
            }
            if (next == 0) {
                break;
            }
            off = next;
            continue;
        }
        uint32_t elen = htkv_load32(buf + off + 4), type = htkv_load32(buf + off + 8);
        const unsigned char *p = buf + off + MAN_EDIT_HDR;
        off += MAN_EDIT_HDR + elen;
        m->edits++;
        if (type == MAN_INIT && elen == 16 && !m->init) {
            m->init = true;
            m->format = htkv_load32(p);
            m->shard_count = htkv_load32(p + 4);
            m->seed = htkv_load64(p + 8);
            continue;
        }
        if (!m->init || elen < 16) {
            continue;
        }
        uint64_t a = htkv_load64(p), b = htkv_load64(p + 8);
        switch (type) {
        case MAN_SEG_ADD:
        case MAN_SEG_DROP:
        case MAN_SEG_GONE:
        case MAN_SEG_END:
            if (b > 0 && b <= MAN_SEG_ID_MAX) {
                r->man_next_id = max_u64(r->man_next_id, b + 1);
                if (type != MAN_SEG_END) {
                    id_find(r, b, true)->gone = type != MAN_SEG_ADD;
                }
            }
            break;
        case MAN_NEXT_ID:
            if (b <= MAN_SEG_ID_MAX + 1) {
                r->man_next_id = max_u64(r->man_next_id, b);
            }
            break;
        case MAN_BATCH_FLOOR:
            if (b <= REC_VERSION_MAX) {
                r->man_applied = max_u64(r->man_applied, b);
                r->man_floor = max_u64(r->man_floor, b);
            }
            break;
        case MAN_BATCH_ABORT:
            if (b > 0 && b <= REC_VERSION_MAX) {
                r->man_hwm = max_u64(r->man_hwm, b);
                abort_add(r, b);
            }
            break;
        case MAN_VERSIONS:
            if (a >= b && a <= REC_VERSION_MAX) {
                hwm = a; /* the last edit wins, as at load */
                have_hwm = true;
                r->man_applied = max_u64(r->man_applied, b);
            }
            break;
        default:
            break;
        }
    }
    if (have_hwm) {
        r->man_hwm = max_u64(r->man_hwm, hwm);
    }
}

static int
cmp_man(const void *a, const void *b)
{
    const struct rman *x = a, *y = b;
    return (x->number > y->number) - (x->number < y->number);
}

/* Read one manifest file; -errno only for an I/O error (a damaged one is reported). */
static int
man_read(struct rep *r, struct rman *m)
{
    int fd = openat(r->dir_fd, m->name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAN_BYTES_MAX) {
        close(fd);
        return 0; /* not one the engine could read: moved to lost/ like the others */
    }
    m->size = (uint64_t)st.st_size;
    unsigned char *buf = xrealloc(NULL, (size_t)m->size);
    ssize_t got = m->size ? pread(fd, buf, (size_t)m->size, 0) : 0;
    int err = errno;
    close(fd);
    if (got != (ssize_t)m->size) {
        free(buf);
        return got < 0 ? -err : -EIO;
    }
    m->readable = true;
    m->hdr_ok = m->size >= MAN_HDR_BYTES && memcmp(buf, MAN_MAGIC, 8) == 0 &&
                htkv_load32(buf + 28) == htkv_crc32c(0, buf, 28) &&
                htkv_load64(buf + 16) == m->number;
    if (m->size >= MAN_HDR_BYTES) {
        man_walk(r, m, buf, m->size);
    }
    free(buf);
    return 0;
}

/* Largest MANIFEST number and segment id named in lost/ (from an earlier repair). */
static void
scan_lost(struct rep *r)
{
    DIR *d = dir_open(r->dir_fd, "lost");
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned long long n;
        if (strncmp(de->d_name, "MANIFEST-", 9) == 0 && strlen(de->d_name) >= 15 &&
            all_digits(de->d_name + 9, 6)) {
            n = strtoull(de->d_name + 9, NULL, 10);
            r->max_man_number = max_u64(r->max_man_number, n);
            continue;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        DIR *sd = dir_open(dirfd(d), de->d_name);
        if (sd == NULL) {
            continue;
        }
        struct dirent *se;
        while ((se = readdir(sd)) != NULL) {
            if (strlen(se->d_name) >= 16 && all_digits(se->d_name, 12) && se->d_name[12] == '.') {
                n = strtoull(se->d_name, NULL, 10);
                if (n <= MAN_SEG_ID_MAX) {
                    r->lost_max_id = max_u64(r->lost_max_id, n);
                }
            }
        }
        closedir(sd);
    }
    closedir(d);
}

static int
read_manifests(struct rep *r)
{
    /* CURRENT */
    int fd = openat(r->dir_fd, "CURRENT", O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        r->current_exists = true;
        char buf[64] = { 0 };
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        unsigned long long num;
        char nl;
        if (n == 16 && sscanf(buf, "MANIFEST-%6llu%c", &num, &nl) == 2 && nl == '\n' && num) {
            r->current_number = num;
            r->max_man_number = max_u64(r->max_man_number, num);
        }
    } else if (errno != ENOENT) {
        r->current_exists = true; /* there, but unreadable: moved to lost/ all the same */
    }
    /* MANIFEST-* */
    DIR *d = dir_open(r->dir_fd, "");
    if (d == NULL) {
        int rc = -errno;
        return rc;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t n;
        if (manifest_name(de->d_name, &n)) {
            struct rman m = { .number = n };
            memcpy(m.name, de->d_name, 16); /* 15 characters and the NUL */
            PUSH(r->mans, r->nmans, r->mcap, m);
            r->max_man_number = max_u64(r->max_man_number, n);
        }
    }
    closedir(d);
    if (r->nmans > 1) {
        qsort(r->mans, r->nmans, sizeof(*r->mans), cmp_man);
    }
    /* Oldest first: for each segment id, the newest edit wins. */
    for (size_t i = 0; i < r->nmans; i++) {
        int rc = man_read(r, &r->mans[i]);
        if (rc != 0) {
            ctl_error(r->c, "%s/%s: cannot be read: %s", r->c->dir, r->mans[i].name, strerror(-rc));
            return rc;
        }
    }
    if (r->current_exists) {
        if (r->current_number == 0) {
            snprintf(r->current, sizeof(r->current), "damaged (names no manifest)");
        } else {
            bool there = false;
            for (size_t i = 0; i < r->nmans; i++) {
                there = there || r->mans[i].number == r->current_number;
            }
            snprintf(r->current, sizeof(r->current), "names MANIFEST-%06llu%s",
                     (unsigned long long)r->current_number, there ? "" : ", which is missing");
        }
    } else {
        snprintf(r->current, sizeof(r->current), "missing");
    }
    scan_lost(r);
    return 0;
}

/* ---- step 2: the files of the shard directories ---------------------------------------------- */

static struct rfile *
add_file(struct rep *r, const char *rel, enum fkind kind)
{
    struct rfile f = { .rel = xstrdup(rel), .kind = kind, .dir_shard = UINT32_MAX };
    PUSH(r->files, r->nfiles, r->fcap, f);
    return &r->files[r->nfiles - 1];
}

static int
list_shard_dir(struct rep *r, const char *dname)
{
    DIR *d = dir_open(r->dir_fd, dname);
    if (d == NULL) {
        int rc = -errno;
        if (rc == -ENOTDIR || rc == -ELOOP) {
            rep_note(r, "%s: not a directory; left alone", dname);
            return 0;
        }
        ctl_error(r->c, "%s/%s: cannot be listed: %s", r->c->dir, dname, strerror(-rc));
        return rc;
    }
    long sn = shard_dir_number(dname);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0) {
            continue;
        }
        char rel[600];
        snprintf(rel, sizeof(rel), "%s/%s", dname, n);
        uint64_t id;
        struct stat st;
        if (fstatat(r->dir_fd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) {
            rep_note(r, "%s: not a regular file; left alone", rel);
        } else if (segment_name(n, &id)) {
            struct rfile *f = add_file(r, rel, FK_SEG);
            f->name_id = id;
            f->dir_shard = sn >= 0 ? (uint32_t)sn : UINT32_MAX;
            f->size = (uint64_t)st.st_size;
        } else if (ends_with(n, ".hint") || ends_with(n, ".hint.tmp")) {
            add_file(r, rel, FK_HINT);
        } else if (ends_with(n, REP_TMP_SUFFIX)) {
            add_file(r, rel, FK_TMP);
        } else {
            rep_note(r, "%s: not a file of the store; left alone", rel);
        }
    }
    closedir(d);
    return 0;
}

static int
cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct rfile *)a)->rel, ((const struct rfile *)b)->rel);
}

static int
list_files(struct rep *r)
{
    DIR *d = dir_open(r->dir_fd, "");
    if (d == NULL) {
        int rc = -errno;
        return rc;
    }
    char **dirs = NULL;
    size_t ndirs = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "shard-", 6) == 0) {
            PUSH(dirs, ndirs, cap, xstrdup(de->d_name));
        } else if (strcmp(de->d_name, "CURRENT.tmp") == 0) {
            add_file(r, de->d_name, FK_TMP);
        }
    }
    closedir(d);
    int rc = 0;
    for (size_t i = 0; i < ndirs; i++) {
        if (rc == 0) {
            rc = list_shard_dir(r, dirs[i]);
        }
        free(dirs[i]);
    }
    free(dirs);
    if (rc != 0) {
        return rc;
    }
    if (r->nfiles > 1) {
        qsort(r->files, r->nfiles, sizeof(*r->files), cmp_file);
    }
    /* Read every segment header. */
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind != FK_SEG) {
            continue;
        }
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", r->c->dir, f->rel);
        struct seg_owner o;
        uint64_t id;
        int hrc = htkv_seg_read_header(path, &o, &id);
        if (hrc == 0) {
            f->hdr_ok = true;
            f->shard = o.shard;
            f->id = id;
            f->hdr_count = o.shard_count;
            f->hdr_seed = o.hash_seed;
        } else if (hrc == HTKV_ECORRUPT) {
            snprintf(f->why, sizeof(f->why), "bad header (magic or checksum), or shorter than one");
        } else if (hrc == HTKV_EVERSION) {
            ctl_error(r->c, "%s: written by a newer on-disk format than %d; use a newer htkvctl",
                      path, HTKV_FORMAT_VERSION);
            return HTKV_EVERSION;
        } else {
            ctl_error(r->c, "%s: cannot read its header: %s", path, htkv_strerror(hrc));
            return hrc;
        }
    }
    return 0;
}

/* ---- the store's identity -------------------------------------------------------------------- */

/* Segments whose header names the store (@p count, @p seed). */
static size_t
header_votes(const struct rep *r, uint32_t count, uint64_t seed)
{
    size_t votes = 0;
    for (size_t j = 0; j < r->nfiles; j++) {
        const struct rfile *g = &r->files[j];
        votes += g->kind == FK_SEG && g->hdr_ok && g->hdr_count == count && g->hdr_seed == seed;
    }
    return votes;
}

/*
 * The store's shard count and hash seed: the INIT edit of the manifest CURRENT names (or of the
 * newest one that has one), unless segment headers name a store and none of them names that one
 * (a manifest of another store); else what most segment headers name. 0, 1 (nothing tells) or
 * HTKV_EVERSION (reported).
 */
static int
identify(struct rep *r)
{
    uint32_t cand_count = 0;
    uint64_t cand_seed = 0;
    size_t cand_votes = 0, kinds = 0;
    for (size_t i = 0; i < r->nfiles; i++) {
        const struct rfile *f = &r->files[i];
        if (f->kind != FK_SEG || !f->hdr_ok || f->hdr_count == 0 || f->hdr_count > MAN_SHARDS_MAX) {
            continue;
        }
        bool first = true;
        for (size_t j = 0; j < i && first; j++) {
            const struct rfile *g = &r->files[j];
            first = !(g->kind == FK_SEG && g->hdr_ok && g->hdr_count == f->hdr_count &&
                      g->hdr_seed == f->hdr_seed);
        }
        if (!first) {
            continue;
        }
        kinds++;
        size_t votes = header_votes(r, f->hdr_count, f->hdr_seed);
        if (votes > cand_votes) {
            cand_votes = votes;
            cand_count = f->hdr_count;
            cand_seed = f->hdr_seed;
        }
    }
    const struct rman *best = NULL;
    for (size_t i = 0; i < r->nmans; i++) {
        const struct rman *m = &r->mans[i];
        if (!m->init || m->shard_count == 0 || m->shard_count > MAN_SHARDS_MAX) {
            continue;
        }
        if (best == NULL || m->number == r->current_number ||
            (best->number != r->current_number && m->number > best->number)) {
            best = m;
        }
    }
    if (best != NULL && best->format > HTKV_FORMAT_VERSION) {
        ctl_error(r->c, "%s/%s: format version %u is newer than %d; use a newer htkvctl", r->c->dir,
                  best->name, best->format, HTKV_FORMAT_VERSION);
        return HTKV_EVERSION;
    }
    if (best != NULL && (cand_votes == 0 || header_votes(r, best->shard_count, best->seed) > 0)) {
        r->shard_count = best->shard_count;
        r->seed = best->seed;
        snprintf(r->ident_from, sizeof(r->ident_from), "%s", best->name);
        for (size_t i = 0; i < r->nmans; i++) {
            const struct rman *m = &r->mans[i];
            if (m->init && (m->shard_count != r->shard_count || m->seed != r->seed)) {
                snprintf(r->ident_note, sizeof(r->ident_note),
                         "%s names another store (%u shards, hash seed 0x%016" PRIx64 ")", m->name,
                         m->shard_count, m->seed);
            }
        }
        return 0;
    }
    if (cand_votes == 0) {
        return 1;
    }
    r->shard_count = cand_count;
    r->seed = cand_seed;
    snprintf(r->ident_from, sizeof(r->ident_from), "segment headers");
    if (best != NULL) {
        snprintf(r->ident_note, sizeof(r->ident_note),
                 "%s names another store (%u shards, hash seed 0x%016" PRIx64
                 "), which no segment header names",
                 best->name, best->shard_count, best->seed);
    } else if (kinds > 1) {
        snprintf(r->ident_note, sizeof(r->ident_note),
                 "segment headers name %zu stores; %zu segments name this one", kinds, cand_votes);
    }
    return 0;
}

/* ---- step 3: walking a segment's records ----------------------------------------------------- */

struct walk {
    struct rep *r;
    struct rfile *f;
    const unsigned char *map;
    uint64_t end;
    bool rewrite;
    bool in_batch;
    bool b_broken;
    uint64_t b_version, b_begin;
    uint32_t b_ops, b_parts, b_seen;
    size_t b_keep; /* index in f->keep of the open batch's BEGIN */
};

static void
add_drop(struct rfile *f, uint64_t from, uint64_t to, uint64_t records, const char *why)
{
    struct drop d = { from, to, records, why };
    PUSH(f->drops, f->ndrops, f->dcap, d);
    f->dropped_recs += records;
}

static void
keep(struct rfile *f, uint64_t off)
{
    PUSH(f->keep, f->nkeep, f->kcap, off);
}

static uint64_t
rec_bytes_at(const unsigned char *map, uint64_t off)
{
    return htkv_rec_size(htkv_load32(map + off + 4), htkv_load32(map + off + 8));
}

/* Leave out the records of the open batch (BEGIN and operations kept so far). */
static void
drop_batch(struct walk *w, const char *why)
{
    struct rfile *f = w->f;
    for (size_t i = w->b_keep; i < f->nkeep; i++) {
        uint64_t off = f->keep[i];
        add_drop(f, off, off + rec_bytes_at(w->map, off), 1, why);
    }
    f->nkeep = w->b_keep;
    w->in_batch = false;
}

static bool
key_in_shard(const struct walk *w, uint64_t off, const struct rec_hdr *h)
{
    uint64_t hash = htkv_hash(w->map + off + REC_HDR_BYTES, h->key_len, w->r->seed);
    return (uint32_t)((hash >> 32) % w->r->shard_count) == w->f->shard;
}

/* A SET or DEL at @p off: kept unless out of its batch's framing or of another shard. */
static void
walk_op(struct walk *w, uint64_t off, const struct rec_hdr *h, uint64_t size)
{
    struct rfile *f = w->f;
    bool flagged = (h->flags & REC_F_BATCH) != 0;
    if (flagged != w->in_batch ||
        (w->in_batch && (h->version != w->b_version || w->b_seen >= w->b_ops))) {
        w->rewrite = true;
        if (w->in_batch) {
            drop_batch(w, "batch cut short (not followed by its COMMIT)");
        }
        if (flagged) {
            add_drop(f, off, off + size, 1, "batch operation out of place");
            return;
        }
    }
    if (!key_in_shard(w, off, h)) {
        w->rewrite = true;
        add_drop(f, off, off + size, 1, "key of another shard");
        if (w->in_batch) {
            w->b_broken = true;
            w->b_seen++;
        }
        return;
    }
    w->b_seen += w->in_batch;
    keep(f, off);
}

/* A BEGIN at @p off (payload @p pl): opens a batch, ending one left open. */
static void
walk_begin(struct walk *w, uint64_t off, const struct rec_hdr *h, uint64_t size,
           const unsigned char *pl)
{
    struct rfile *f = w->f;
    if (w->in_batch) {
        w->rewrite = true;
        drop_batch(w, "batch cut short (not followed by its COMMIT)");
    }
    uint32_t ops = htkv_load32(pl), parts = htkv_load32(pl + 4);
    if (ops == 0 || parts == 0) {
        w->rewrite = true;
        add_drop(f, off, off + size, 1, "invalid batch start");
        return;
    }
    w->in_batch = true;
    w->b_broken = false;
    w->b_version = h->version;
    w->b_begin = off;
    w->b_ops = ops;
    w->b_parts = parts;
    w->b_seen = 0;
    w->b_keep = f->nkeep;
    keep(f, off);
}

/* A COMMIT at @p off (payload @p pl): closes the open batch when it matches it. */
static void
walk_commit(struct walk *w, uint64_t off, const struct rec_hdr *h, uint64_t size,
            const unsigned char *pl)
{
    struct rfile *f = w->f;
    bool ok = w->in_batch && h->version == w->b_version && htkv_load32(pl) == w->b_ops &&
              htkv_load32(pl + 4) == w->b_parts && w->b_seen == w->b_ops;
    if (!ok) {
        w->rewrite = true;
        if (w->in_batch) {
            drop_batch(w, "batch whose COMMIT does not match it");
        }
        add_drop(f, off, off + size, 1, "batch COMMIT out of place");
        return;
    }
    keep(f, off);
    if (w->b_broken) {
        drop_batch(w, "batch with an operation of another shard");
    }
    w->in_batch = false;
}

/* A SEAL at @p off (payload @p pl); returns false when nothing follows it (the walk ends). */
static bool
walk_seal(struct walk *w, uint64_t off, uint64_t size, const unsigned char *pl)
{
    struct rfile *f = w->f;
    if (w->in_batch || htkv_load64(pl + 8) != off) {
        w->rewrite = true;
        if (w->in_batch) {
            drop_batch(w, "batch cut short (not followed by its COMMIT)");
        }
        add_drop(f, off, off + size, 1, "SEAL out of place");
        return true;
    }
    if (htkv_seg_last_nonzero_end(w->map, off + size, w->end) == off + size) {
        f->sealed = true;
        return false;
    }
    /* Data after a SEAL: the rewrite ends with a SEAL of its own. */
    w->rewrite = true;
    return true;
}

/* One valid record at @p off; returns false when the walk ends (a SEAL with nothing after). */
static bool
walk_record(struct walk *w, uint64_t off, const struct rec_hdr *h, uint64_t size)
{
    const unsigned char *pl = w->map + off + REC_HDR_BYTES + h->key_len;
    switch (h->type) {
    case REC_SET:
    case REC_DEL:
        walk_op(w, off, h, size);
        return true;
    case REC_BATCH_BEGIN:
        walk_begin(w, off, h, size, pl);
        return true;
    case REC_BATCH_COMMIT:
        walk_commit(w, off, h, size, pl);
        return true;
    case REC_SEAL:
        return walk_seal(w, off, size, pl);
    default:
        HTKV_UNREACHABLE();
    }
}

/* The log ends with bytes at @p off that fail their check and no valid record after them: a
 * torn tail, which recovery cuts (back to an unfinished batch). */
static void
walk_torn_tail(struct walk *w, uint64_t off)
{
    struct rfile *f = w->f;
    uint64_t cut = w->in_batch ? w->b_begin : off;
    if (w->in_batch) {
        drop_batch(w, "unfinished batch before a torn tail");
    }
    uint64_t junk = htkv_seg_last_nonzero_end(w->map, off, w->end);
    f->torn_from = cut;
    f->torn_bytes = junk > off ? junk - off : 0;
    if (junk > off) {
        add_drop(f, off, junk, 0, "torn tail");
    }
}

/* Walk segment @p f's records with the record walk (htkv_rec_walk_next()) under recovery's
 * rules, deciding which it keeps; damaged bytes followed by a valid record (a resync) call for
 * a rewrite, those followed by none are the torn tail. */
static void
walk_segment(struct rep *r, struct rfile *f, const unsigned char *map)
{
    struct walk w = { .r = r, .f = f, .map = map, .end = f->size, .rewrite = f->salvage };
    if (f->salvage) {
        add_drop(f, 0, SEG_DATA_OFF, 0, "bad header");
    }
    bool orphans = false; /* after damage: the rest of a batch whose start was lost */
    struct rec_walk rw;
    htkv_rec_walk_init(&rw, map, f->id, SEG_DATA_OFF, w.end, HTKV_VALUE_MAX_LIMIT);
    struct rec_hdr h;
    enum rec_walk_res res;
    while ((res = htkv_rec_walk_next(&rw, &h)) != REC_WALK_END) {
        uint64_t off = rw.at;
        if (res != REC_WALK_RECORD) { /* REC_WALK_ZERO or REC_WALK_BAD: the same here */
            uint64_t next = htkv_rec_walk_resync(&rw);
            if (next == 0) {
                walk_torn_tail(&w, off);
                break;
            }
            w.rewrite = true;
            add_drop(f, off, next, 0, "damaged");
            if (w.in_batch) {
                drop_batch(&w, "batch with damaged records");
            }
            orphans = true;
            continue;
        }
        uint64_t size = rw.off - rw.at;
        if (h.type != REC_SEAL) {
            f->max_version = max_u64(f->max_version, h.version);
        }
        if (orphans && ((h.flags & REC_F_BATCH) != 0 || h.type == REC_BATCH_COMMIT)) {
            add_drop(f, off, off + size, 1, "rest of a batch whose start is damaged");
            continue;
        }
        orphans = false;
        if (!walk_record(&w, off, &h, size)) {
            break;
        }
    }
    if (w.in_batch) {
        f->torn_from = w.b_begin; /* the file ends inside a batch: recovery cuts it there */
        drop_batch(&w, "unfinished batch at the end of the file");
    }
    f->records = f->nkeep;
    if (!w.rewrite) {
        /* Kept as it is: what the walk left out is the torn tail that recovery cuts. */
        free(f->drops);
        f->drops = NULL;
        f->ndrops = f->dcap = 0;
        f->dropped_recs = 0;
        free(f->keep);
        f->keep = NULL;
        f->kcap = f->nkeep = 0;
        return;
    }
    f->act = FA_REWRITE;
}

static int
cmp_drop(const void *a, const void *b)
{
    const struct drop *x = a, *y = b;
    return (x->from > y->from) - (x->from < y->from);
}

/* Sort the dropped ranges and merge neighbours dropped for the same reason. */
static void
merge_drops(struct rfile *f)
{
    if (f->ndrops > 1) {
        qsort(f->drops, f->ndrops, sizeof(*f->drops), cmp_drop);
    }
    size_t k = 0;
    for (size_t i = 0; i < f->ndrops; i++) {
        if (k > 0 && f->drops[k - 1].to == f->drops[i].from &&
            strcmp(f->drops[k - 1].why, f->drops[i].why) == 0) {
            f->drops[k - 1].to = f->drops[i].to;
            f->drops[k - 1].records += f->drops[i].records;
        } else {
            f->drops[k++] = f->drops[i];
        }
    }
    f->ndrops = k;
}

static uint64_t
dropped_bytes(const struct rfile *f)
{
    uint64_t n = 0;
    for (size_t i = 0; i < f->ndrops; i++) {
        n += f->drops[i].to - f->drops[i].from;
    }
    return n;
}

/* Map and walk segment @p f. 0 or -errno. */
static int
walk_file(struct rep *r, struct rfile *f)
{
    int fd = openat(r->dir_fd, f->rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    f->size = (uint64_t)st.st_size;
    void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
    int rc = map == MAP_FAILED ? -errno : 0;
    close(fd);
    if (rc != 0) {
        return rc;
    }
    walk_segment(r, f, map);
    munmap(map, (size_t)f->size);
    return 0;
}

/* ---- the plan -------------------------------------------------------------------------------- */

static void to_lost(struct rep *r, struct rfile *f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
to_lost(struct rep *r, struct rfile *f, const char *fmt, ...)
{
    (void)r;
    f->act = FA_LOST;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->why, sizeof(f->why), fmt, ap);
    va_end(ap);
}

/* Is @p rel, a shard directory's segment, taken by another file of the plan (kept there)? */
static bool
home_taken(const struct rep *r, const struct rfile *self, const char *rel)
{
    for (size_t i = 0; i < r->nfiles; i++) {
        const struct rfile *g = &r->files[i];
        if (g != self && g->kind == FK_SEG &&
            ((g->home != NULL && strcmp(g->home, rel) == 0) || strcmp(g->rel, rel) == 0)) {
            return true;
        }
    }
    return false;
}

/* Does segment @p f's header name another store (segments of older builds name none)? */
static bool
other_store(const struct rep *r, const struct rfile *f)
{
    return (f->hdr_count != 0 || f->hdr_seed != 0) &&
           (f->hdr_count != r->shard_count || f->hdr_seed != r->seed);
}

/* Decide where segment @p f belongs (f->home), or send it to lost/ with the reason. */
static void
place_segment(struct rep *r, struct rfile *f, bool in_place)
{
    if (!f->hdr_ok && (f->dir_shard >= r->shard_count || f->name_id == 0 ||
                       f->size <= SEG_DATA_OFF + REC_HDR_BYTES)) {
        f->act = FA_LOST; /* the reason was set with the header */
        return;
    }
    if (!f->hdr_ok) {
        /* Its records name their segment (the CRC covers the id): those that check
         * against the id of its name are kept, in a rewrite. */
        f->salvage = true;
        f->shard = f->dir_shard;
        f->id = f->name_id;
    }
    if (other_store(r, f)) {
        to_lost(r, f, "belongs to another store (%" PRIu32 " shards, hash seed 0x%016" PRIx64 ")",
                f->hdr_count, f->hdr_seed);
        return;
    }
    if (f->shard >= r->shard_count) {
        to_lost(r, f, "its header names shard %" PRIu32 ", outside the store's %" PRIu32, f->shard,
                r->shard_count);
        return;
    }
    if (f->id != f->name_id || f->id == 0 || f->id > MAN_SEG_ID_MAX) {
        to_lost(r, f, "its header names segment %" PRIu64 ", not the one of its name", f->id);
        return;
    }
    struct idstate *st = id_find(r, f->id, false);
    if (st != NULL && st->gone) {
        to_lost(r, f,
                "the manifest records segment %" PRIu64
                " as dropped (compacted) or never committed",
                f->id);
        return;
    }
    char home[64];
    snprintf(home, sizeof(home), "shard-%03" PRIu32 "/%012" PRIu64 ".seg", f->shard, f->id);
    bool dup = false;
    for (size_t j = 0; j < r->nfiles && !dup; j++) {
        const struct rfile *g = &r->files[j];
        dup = g != f && g->kind == FK_SEG && g->home != NULL && g->id == f->id;
    }
    if (dup || (!in_place && home_taken(r, f, home))) {
        to_lost(r, f, "another file holds segment %" PRIu64 " already", f->id);
        return;
    }
    f->home = xstrdup(home);
}

/* Walk segment @p f (also one going to lost/, for its versions) and settle a rewrite that keeps
 * nothing. 0 or -errno. */
static int
walk_and_settle(struct rep *r, struct rfile *f)
{
    if (f->size > SEG_BYTES_LIMIT) {
        if (f->act != FA_LOST) {
            to_lost(r, f, "larger than a segment can be (4 GiB)");
        }
        return 0;
    }
    enum fact before = f->act;
    int rc = walk_file(r, f);
    if (rc != 0) {
        ctl_error(r->c, "%s/%s: cannot be read: %s", r->c->dir, f->rel, strerror(-rc));
        return rc;
    }
    if (before == FA_LOST) {
        f->act = FA_LOST; /* walked for its versions only */
        return 0;
    }
    if (f->act == FA_REWRITE) {
        merge_drops(f);
        if (f->nkeep == 0 && f->salvage) {
            to_lost(r, f,
                    "bad header (magic or checksum), and no record checks against the "
                    "id of its name");
        } else if (f->nkeep == 0) {
            to_lost(r, f, "no record of it can be kept");
        }
    }
    return 0;
}

/* Decide what happens to each segment. 0 or -errno. */
static int
classify(struct rep *r)
{
    /* First the segments in their own directories, so that a misplaced copy never displaces
     * the file that is where it belongs. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < r->nfiles; i++) {
            struct rfile *f = &r->files[i];
            if (f->kind != FK_SEG || f->home != NULL || f->act == FA_LOST) {
                continue;
            }
            bool in_place = f->hdr_ok && f->dir_shard == f->shard;
            if (pass == 0 && !in_place && f->hdr_ok) {
                continue;
            }
            place_segment(r, f, in_place);
        }
    }
    /* Walk every segment of this store (also those going to lost/, for their versions). */
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind != FK_SEG || !(f->hdr_ok || f->salvage) || f->shard >= r->shard_count ||
            other_store(r, f) || f->id != f->name_id) {
            continue;
        }
        int rc = walk_and_settle(r, f);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t
rewrite_size(const struct rfile *f, const unsigned char *map)
{
    uint64_t n = SEG_DATA_OFF;
    for (size_t i = 0; i < f->nkeep; i++) {
        n += rec_bytes_at(map, f->keep[i]);
    }
    return n + htkv_rec_size(0, REC_SEAL_PAYLOAD);
}

/* Ids, names in lost/, the new manifest's lists and versions. 0 or an error (reported). */
static int
plan(struct rep *r)
{
    uint64_t max_id = max_u64(r->lost_max_id, r->man_next_id ? r->man_next_id - 1 : 0);
    uint64_t version = max_u64(r->man_applied, r->man_hwm);
    for (size_t i = 0; i < r->nfiles; i++) {
        const struct rfile *f = &r->files[i];
        if (f->kind == FK_SEG) {
            max_id = max_u64(max_id, f->name_id <= MAN_SEG_ID_MAX ? f->name_id : 0);
            if (f->hdr_ok && f->id <= MAN_SEG_ID_MAX) {
                max_id = max_u64(max_id, f->id);
            }
            version = max_u64(version, f->max_version);
        }
    }
    r->version = version > REC_VERSION_MAX ? REC_VERSION_MAX : version;
    r->next_id = max_id + 1;
    r->new_number = r->max_man_number + 1;
    if (r->new_number > 999999) {
        ctl_error(r->c, "%s: manifest numbers are used up to 999999", r->c->dir);
        return -ERANGE;
    }
    r->lists = xrealloc(NULL, r->shard_count * sizeof(*r->lists));
    memset(r->lists, 0, r->shard_count * sizeof(*r->lists));
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind == FK_SEG && f->act == FA_REWRITE) {
            if (r->next_id > MAN_SEG_ID_MAX) {
                ctl_error(r->c, "%s: segment ids are used up", r->c->dir);
                return -ERANGE;
            }
            f->new_id = r->next_id++;
            f->new_rel = xprintf("shard-%03" PRIu32 "/%012" PRIu64 ".seg", f->shard, f->new_id);
        }
        if (f->kind == FK_SEG && f->act != FA_LOST) {
            uint64_t id = f->act == FA_REWRITE ? f->new_id : f->id;
            struct man_shard *l = &r->lists[f->shard];
            PUSH(l->seg_ids, l->count, l->cap, id);
        }
        if (f->act != FA_KEEP || f->kind != FK_SEG) {
            f->dest = lost_name(r, f->rel);
        }
    }
    for (uint32_t s = 0; s < r->shard_count; s++) {
        if (r->lists[s].count > 1) {
            qsort(r->lists[s].seg_ids, r->lists[s].count, sizeof(uint64_t), cmp_u64);
        }
        char name[32];
        snprintf(name, sizeof(name), "shard-%03" PRIu32, s);
        struct stat st;
        if (fstatat(r->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            PUSH(r->mkdirs, r->nmkdirs, r->mkcap, xstrdup(name));
        } else if (!S_ISDIR(st.st_mode)) {
            ctl_error(r->c, "%s/%s: not a directory; move it away and run repair again", r->c->dir,
                      name);
            return -ENOTDIR;
        }
    }
    for (size_t i = 0; i < r->nmans; i++) {
        r->mans[i].dest = lost_name(r, r->mans[i].name);
    }
    if (r->current_exists) {
        r->current_dest = lost_name(r, "CURRENT");
    }
    return 0;
}

/* ---- step 4: writing ------------------------------------------------------------------------- */

static int
sync_dir(struct rep *r, const char *rel)
{
    int fd = rel[0] ? openat(r->dir_fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : dup(r->dir_fd);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* The directory part of @p rel ("" for a top-level name) into @p buf. */
static const char *
dir_of(const char *rel, char *buf, size_t cap)
{
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(buf, rel, n);
    buf[n] = '\0';
    return buf;
}

/* Remember that directory @p rel ("" = DIR) changed: synced by the next sync_dirty(). */
static void
mark_dirty(struct rep *r, const char *rel)
{
    for (size_t i = 0; i < r->ndirty; i++) {
        if (strcmp(r->dirty[i], rel) == 0) {
            return;
        }
    }
    PUSH(r->dirty, r->ndirty, r->dcap, xstrdup(rel));
}

/* fsync every directory changed since the last call: renames and new entries are durable. */
static int
sync_dirty(struct rep *r)
{
    int rc = 0;
    for (size_t i = 0; i < r->ndirty; i++) {
        if (rc == 0) {
            rc = sync_dir(r, r->dirty[i]);
        }
        free(r->dirty[i]);
    }
    r->ndirty = 0;
    return rc;
}

/* mkdir -p @p rel under DIR; new entries mark their parents dirty. */
static int
mkdir_p(struct rep *r, const char *rel)
{
    char buf[1024], parent[1024];
    snprintf(buf, sizeof(buf), "%s", rel);
    size_t n = strlen(buf);
    for (size_t i = 0; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        char c = buf[i];
        buf[i] = '\0';
        if (mkdirat(r->dir_fd, buf, 0755) == 0) {
            mark_dirty(r, dir_of(buf, parent, sizeof(parent)));
        } else if (errno != EEXIST) {
            return -errno;
        }
        buf[i] = c;
    }
    return 0;
}

/* Rename @p from to @p to, never over an existing file; both directories become dirty. */
static int
move_file(struct rep *r, const char *from, const char *to)
{
    char d1[1024], d2[1024];
    dir_of(to, d2, sizeof(d2));
    if (d2[0] != '\0') {
        int rc = mkdir_p(r, d2);
        if (rc != 0) {
            return rc;
        }
    }
    if (exists_at(r->dir_fd, to)) {
        return -EEXIST;
    }
    if (renameat(r->dir_fd, from, r->dir_fd, to) != 0) {
        return -errno;
    }
    mark_dirty(r, d2);
    mark_dirty(r, dir_of(from, d1, sizeof(d1)));
    return 0;
}

struct wbuf {
    int fd;
    unsigned char *p;
    size_t len, cap;
    uint64_t file_off; /* where p[0] goes */
};

static int
wbuf_flush(struct wbuf *b)
{
    int rc = b->len ? htkv_pwrite_all(b->fd, b->p, b->len, (off_t)b->file_off) : 0;
    b->file_off += b->len;
    b->len = 0;
    return rc;
}

/* Room for @p n more bytes at b->p + b->len. */
static int
wbuf_room(struct wbuf *b, size_t n)
{
    if (b->len + n > b->cap) {
        int rc = wbuf_flush(b);
        if (rc != 0) {
            return rc;
        }
        if (n > b->cap) {
            b->cap = n;
            b->p = xrealloc(b->p, b->cap);
        }
    }
    return 0;
}

/* Write the new segment of @p f (mapped at @p map): tmp name, fdatasync, rename, sync. */
static int
write_rewrite(struct rep *r, struct rfile *f, const unsigned char *map)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s%s", f->new_rel, REP_TMP_SUFFIX);
    struct wbuf b = { .cap = 1u << 20 };
    b.p = xrealloc(NULL, b.cap);
    b.fd = openat(r->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (b.fd < 0) {
        free(b.p);
        return -errno;
    }
    const struct seg_owner owner = { .shard = f->shard,
                                     .shard_count = r->shard_count,
                                     .hash_seed = r->seed };
    htkv_seg_hdr_encode(b.p, &owner, f->new_id);
    b.len = SEG_HDR_BYTES;
    uint64_t off = SEG_DATA_OFF;
    int rc = 0;
    for (size_t i = 0; i < f->nkeep && rc == 0; i++) {
        struct rec_hdr h;
        const unsigned char *src = map + f->keep[i];
        htkv_rec_hdr_decode(src, &h);
        uint64_t size = htkv_rec_size(h.key_len, h.val_len);
        rc = wbuf_room(&b, (size_t)size);
        if (rc == 0) {
            const unsigned char *key = src + REC_HDR_BYTES;
            off += htkv_rec_encode(b.p + b.len, f->new_id, off, h.type, h.flags, h.version, key,
                                   h.key_len, key + h.key_len, h.val_len);
            b.len += (size_t)size;
        }
    }
    if (rc == 0) {
        unsigned char pl[REC_SEAL_PAYLOAD];
        htkv_store64(pl, f->nkeep);
        htkv_store64(pl + 8, off);
        uint64_t size = htkv_rec_size(0, REC_SEAL_PAYLOAD);
        rc = wbuf_room(&b, (size_t)size);
        if (rc == 0) {
            off += htkv_rec_encode(b.p + b.len, f->new_id, off, REC_SEAL, 0, 1, NULL, 0, pl,
                                   REC_SEAL_PAYLOAD);
            b.len += (size_t)size;
        }
    }
    if (rc == 0) {
        rc = wbuf_flush(&b);
    }
    if (rc == 0 && fdatasync(b.fd) != 0) {
        rc = -errno;
    }
    free(b.p);
    if (close(b.fd) != 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == 0) {
        /* The engine must read it as its own: check the header written. */
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", r->c->dir, tmp);
        struct seg_owner o;
        uint64_t id;
        rc = htkv_seg_read_header(path, &o, &id);
        if (rc == 0 && (o.shard != f->shard || id != f->new_id)) {
            rc = -EIO;
        }
    }
    if (rc == 0) {
        rc = move_file(r, tmp, f->new_rel);
    }
    if (rc != 0) {
        (void)unlinkat(r->dir_fd, tmp, 0); /* this run's own partial copy, not store data */
    }
    return rc;
}

static int
rewrite_file(struct rep *r, struct rfile *f)
{
    int fd = openat(r->dir_fd, f->rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
    int rc = map == MAP_FAILED ? -errno : 0;
    close(fd);
    if (rc == 0) {
        rc = write_rewrite(r, f, map);
        munmap(map, (size_t)f->size);
    }
    return rc;
}

/* New sizes of the rewritten segments (for the report, also in a dry run). */
static int
size_rewrites(struct rep *r)
{
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind != FK_SEG || f->act != FA_REWRITE) {
            continue;
        }
        int fd = openat(r->dir_fd, f->rel, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return -errno;
        }
        void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, fd, 0);
        int rc = map == MAP_FAILED ? -errno : 0;
        close(fd);
        if (rc != 0) {
            return rc;
        }
        f->new_bytes = rewrite_size(f, map);
        munmap(map, (size_t)f->size);
    }
    return 0;
}

/* Link (or, where links are refused, copy) CURRENT into lost/ before the switch replaces it. */
static int
keep_current(struct rep *r)
{
    char d[1024];
    int rc = mkdir_p(r, dir_of(r->current_dest, d, sizeof(d)));
    if (rc != 0) {
        return rc;
    }
    if (linkat(r->dir_fd, "CURRENT", r->dir_fd, r->current_dest, 0) != 0) {
        if (errno == ENOENT) {
            return 0;
        }
        int in = openat(r->dir_fd, "CURRENT", O_RDONLY | O_CLOEXEC);
        if (in < 0) {
            return -errno;
        }
        unsigned char buf[4096];
        ssize_t n = read(in, buf, sizeof(buf));
        close(in);
        if (n < 0) {
            return -errno;
        }
        int out = openat(r->dir_fd, r->current_dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (out < 0) {
            return -errno;
        }
        rc = htkv_pwrite_all(out, buf, (size_t)n, 0);
        if (rc == 0 && fsync(out) != 0) {
            rc = -errno;
        }
        close(out);
        if (rc != 0) {
            return rc;
        }
    }
    mark_dirty(r, d);
    return 0;
}

/* Before the switch, first: caches and leftovers to lost/, missing shard directories,
 * misplaced segments to their shard's directory, the rewritten segments, then a barrier. */
static int
apply_new_files(struct rep *r, const char **step, const char **what)
{
    int rc = 0;
    *step = "moving a file to lost/";
    for (size_t i = 0; i < r->nfiles && rc == 0; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind == FK_HINT || f->kind == FK_TMP) {
            *what = f->rel;
            rc = move_file(r, f->rel, f->dest);
        }
    }
    for (size_t i = 0; i < r->nmkdirs && rc == 0; i++) {
        *step = "creating a shard directory";
        *what = r->mkdirs[i];
        rc = mkdir_p(r, r->mkdirs[i]);
    }
    for (size_t i = 0; i < r->nfiles && rc == 0; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind == FK_SEG && f->act == FA_KEEP && strcmp(f->home, f->rel) != 0) {
            *step = "moving a segment to its shard's directory";
            *what = f->rel;
            rc = move_file(r, f->rel, f->home);
        }
    }
    for (size_t i = 0; i < r->nfiles && rc == 0; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind == FK_SEG && f->act == FA_REWRITE) {
            *step = "writing a rewritten segment";
            *what = f->new_rel;
            rc = rewrite_file(r, f);
        }
    }
    if (rc == 0) {
        *step = "syncing the store's directories";
        *what = "";
        rc = sync_dirty(r);
    }
    return rc;
}

/* Before the switch, then: the segments no state uses any more to lost/, CURRENT linked into
 * lost/, and a barrier. */
static int
apply_retire_segments(struct rep *r, const char **step, const char **what)
{
    int rc = 0;
    for (size_t i = 0; i < r->nfiles && rc == 0; i++) {
        struct rfile *f = &r->files[i];
        if (f->kind == FK_SEG && f->act != FA_KEEP) {
            *step = "moving a segment to lost/";
            *what = f->rel;
            rc = move_file(r, f->rel, f->dest);
        }
    }
    if (rc == 0 && r->current_exists) {
        *step = "keeping CURRENT in lost/";
        *what = "CURRENT";
        rc = keep_current(r);
    }
    if (rc == 0) {
        *step = "syncing the store's directories";
        *what = "";
        rc = sync_dirty(r);
    }
    return rc;
}

/* The switch: the new manifest, then CURRENT renamed over the old one. */
static int
apply_switch(struct rep *r, const char **step, const char **what)
{
    *step = "writing the new manifest";
    *what = "";
    /* Aborted batches stay aborted: their parts may lie in any kept segment (all below next). */
    for (size_t i = 0; i < r->naborts; i++) {
        r->aborts[i].seg_limit = r->next_id;
    }
    const struct man_rebuild mr = { .number = r->new_number,
                                    .shard_count = r->shard_count,
                                    .hash_seed = r->seed,
                                    .lists = r->lists,
                                    .next_seg_id = r->next_id,
                                    .version_hwm = r->version,
                                    .version_applied = r->version,
                                    .batch_floor = r->man_floor,
                                    .aborts = r->aborts,
                                    .naborts = r->naborts };
    return htkv_manifest_rebuild(r->dir_fd, &mr);
}

/*
 * Carry the plan out. 0 or -errno with *step and *what naming what failed. Barriers
 * (sync_dirty()) order the steps on disk: the new segments are durable before their originals
 * leave the shard directories, and everything is before the switch of CURRENT.
 */
static int
apply(struct rep *r, const char **step, const char **what)
{
    *what = "";
    int rc = apply_new_files(r, step, what);
    if (rc == 0) {
        rc = apply_retire_segments(r, step, what);
    }
    if (rc == 0) {
        rc = apply_switch(r, step, what);
    }
    if (rc != 0) {
        return rc;
    }
    /* After it: the old manifests (a crash before leaves them to the next open, which removes
     * manifests CURRENT does not name). */
    *step = "moving an old manifest to lost/";
    for (size_t i = 0; i < r->nmans && rc == 0; i++) {
        *what = r->mans[i].name;
        rc = move_file(r, r->mans[i].name, r->mans[i].dest);
    }
    if (rc == 0) {
        *step = "syncing the store's directories";
        *what = "";
        rc = sync_dirty(r);
    }
    return rc;
}

/* ---- the report ------------------------------------------------------------------------------ */

static const char *
action_name(const struct rfile *f)
{
    switch (f->act) {
    case FA_KEEP:
        return f->home != NULL && strcmp(f->home, f->rel) != 0 ? "moved" : "kept";
    case FA_REWRITE:
        return "rewritten";
    case FA_LOST:
    default:
        return "lost";
    }
}

static const char *
kind_name(enum fkind k)
{
    switch (k) {
    case FK_SEG:
        return "segment";
    case FK_HINT:
        return "hint";
    case FK_TMP:
        return "temporary";
    case FK_MANIFEST:
    default:
        return "manifest";
    }
}

struct totals {
    uint64_t kept, moved, rewritten, lost_segs, hints, tmps;
    uint64_t records_kept, records_dropped, bytes_dropped, torn_bytes;
};

static void
count_totals(const struct rep *r, struct totals *t)
{
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < r->nfiles; i++) {
        const struct rfile *f = &r->files[i];
        if (f->kind == FK_HINT) {
            t->hints++;
        } else if (f->kind == FK_TMP) {
            t->tmps++;
        } else if (f->act == FA_KEEP) {
            t->kept++;
            t->moved += strcmp(f->home, f->rel) != 0;
            t->records_kept += f->records;
            t->torn_bytes += f->torn_bytes;
        } else if (f->act == FA_REWRITE) {
            t->rewritten++;
            t->records_kept += f->records;
            t->records_dropped += f->dropped_recs;
            t->bytes_dropped += dropped_bytes(f);
        } else {
            t->lost_segs++;
            t->bytes_dropped += f->size > SEG_DATA_OFF ? f->size - SEG_DATA_OFF : 0;
        }
    }
}

/* "1-3 7 9-12" */
static void
print_ids(FILE *out, const struct man_shard *l)
{
    if (l->count == 0) {
        fputs(" (none)", out);
    }
    for (size_t i = 0; i < l->count;) {
        size_t j = i;
        while (j + 1 < l->count && l->seg_ids[j + 1] == l->seg_ids[j] + 1) {
            j++;
        }
        if (j > i) {
            fprintf(out, " %" PRIu64 "-%" PRIu64, l->seg_ids[i], l->seg_ids[j]);
        } else {
            fprintf(out, " %" PRIu64, l->seg_ids[i]);
        }
        i = j + 1;
    }
}

/* The store, its identity and what each manifest holds. */
static void
text_store(const struct rep *r)
{
    printf("store: %s\n", r->c->dir);
    if (r->dry) {
        printf("dry run: nothing was changed; this is what repair would do\n");
    }
    printf("identity: %" PRIu32 " shards, hash seed 0x%016" PRIx64 ", from %s\n", r->shard_count,
           r->seed, r->ident_from);
    if (r->ident_note[0]) {
        printf("note: %s\n", r->ident_note);
    }
    printf("CURRENT: %s\n", r->current);
    for (size_t i = 0; i < r->nmans; i++) {
        const struct rman *m = &r->mans[i];
        printf("%s: %" PRIu64 " bytes, %" PRIu64 " valid edits%s%s", m->name, m->size, m->edits,
               m->readable && !m->hdr_ok ? ", bad header" : "", m->init ? "" : ", no INIT edit");
        if (m->damaged_at) {
            printf(", damaged at offset %" PRIu64, m->damaged_at);
        }
        printf("\n");
    }
}

static void
text_kept_segment(const struct rfile *f)
{
    if (strcmp(f->home, f->rel) != 0) {
        printf("%s: moved to %s (its header names shard %" PRIu32 "); ", f->rel, f->home, f->shard);
    } else {
        printf("%s: ", f->rel);
    }
    printf("kept (%" PRIu64 " records%s)", f->records, f->sealed ? ", sealed" : "");
    if (f->torn_bytes > 0) {
        printf("; torn tail of %" PRIu64 " bytes at offset %" PRIu64 " (the next open cuts it)",
               f->torn_bytes, f->torn_from);
    }
    printf("\n");
}

/* A rewritten segment with its first REP_RANGES_SHOWN dropped ranges. */
static void
text_rewritten_segment(const struct rfile *f)
{
    printf("%s: rewritten as %s (%" PRIu64 " records, %" PRIu64 " bytes); dropped %" PRIu64
           " valid records and %" PRIu64 " bytes:",
           f->rel, f->new_rel, f->records, f->new_bytes, f->dropped_recs, dropped_bytes(f));
    for (size_t k = 0; k < f->ndrops && k < REP_RANGES_SHOWN; k++) {
        const struct drop *d = &f->drops[k];
        printf("%s %" PRIu64 "..%" PRIu64 " %s", k ? ";" : "", d->from, d->to, d->why);
        if (d->records) {
            printf(" (%" PRIu64 " record%s)", d->records, d->records == 1 ? "" : "s");
        }
    }
    if (f->ndrops > REP_RANGES_SHOWN) {
        printf("; and %zu more ranges", f->ndrops - REP_RANGES_SHOWN);
    }
    printf("; the original moved to %s\n", f->dest);
}

/* One line per file but hint files, which are counted in one line after the others. */
static void
text_files(const struct rep *r)
{
    size_t hints = 0;
    for (size_t i = 0; i < r->nfiles; i++) {
        const struct rfile *f = &r->files[i];
        if (f->kind == FK_HINT) {
            hints++;
        } else if (f->kind != FK_SEG) {
            printf("%s: moved to %s (left by an interrupted write)\n", f->rel, f->dest);
        } else if (f->act == FA_KEEP) {
            text_kept_segment(f);
        } else if (f->act == FA_REWRITE) {
            text_rewritten_segment(f);
        } else {
            printf("%s: moved to %s: %s\n", f->rel, f->dest, f->why);
        }
    }
    if (hints > 0) {
        printf("hint files: %zu moved to lost/ under their own names (caches: the next open scans "
               "each segment and writes a new one)\n",
               hints);
    }
}

static void
report_text(const struct rep *r)
{
    const struct ctl *c = r->c;
    text_store(r);
    for (size_t i = 0; i < r->nmkdirs; i++) {
        printf("%s/: missing; created (empty)\n", r->mkdirs[i]);
    }
    text_files(r);
    for (size_t i = 0; i < r->nmans; i++) {
        printf("%s: moved to %s\n", r->mans[i].name, r->mans[i].dest);
    }
    if (r->current_exists) {
        printf("CURRENT: the old one moved to %s\n", r->current_dest);
    }
    for (size_t i = 0; i < r->nnotes; i++) {
        printf("note: %s\n", r->notes[i]);
    }
    printf("new manifest: MANIFEST-%06" PRIu64 ", next segment id %" PRIu64
           ", versions up to %" PRIu64 "\n",
           r->new_number, r->next_id, r->version);
    for (uint32_t s = 0; s < r->shard_count; s++) {
        printf("  shard-%03" PRIu32 ":", s);
        print_ids(stdout, &r->lists[s]);
        printf("\n");
    }
    struct totals t;
    count_totals(r, &t);
    char h[32];
    printf("totals: %" PRIu64 " segments kept (%" PRIu64 " moved to their shard), %" PRIu64
           " rewritten, %" PRIu64 " moved to lost/; %" PRIu64 " records kept, %" PRIu64
           " valid records and %" PRIu64 " bytes (%s) dropped; %" PRIu64
           " hint files and %zu manifests moved to lost/\n",
           t.kept, t.moved, t.rewritten, t.lost_segs, t.records_kept, t.records_dropped,
           t.bytes_dropped, ctl_human_bytes(h, sizeof(h), t.bytes_dropped), t.hints, r->nmans);
    if (r->dry) {
        printf("dry run: run without --dry-run to repair\n");
    } else {
        printf("repaired: the store opens; 'htkvctl verify %s' checks it\n", c->dir);
    }
}

/* "manifests": each manifest read, and where it goes. */
static void
json_manifests(struct json *j, const struct rep *r)
{
    json_key(j, "manifests");
    json_array_begin(j);
    for (size_t i = 0; i < r->nmans; i++) {
        const struct rman *m = &r->mans[i];
        json_object_begin(j);
        json_kv_string(j, "file", m->name);
        json_kv_u64(j, "bytes", m->size);
        json_kv_u64(j, "valid_edits", m->edits);
        json_kv_bool(j, "header_ok", m->hdr_ok);
        json_kv_bool(j, "init", m->init);
        json_key(j, "damaged_at");
        if (m->damaged_at) {
            json_u64(j, m->damaged_at);
        } else {
            json_null(j);
        }
        json_kv_string(j, "to", r->mans[i].dest);
        json_object_end(j);
    }
    json_array_end(j);
}

/* The fields of a rewritten segment, its dropped ranges included. */
static void
json_rewritten_segment(struct json *j, const struct rfile *f)
{
    json_kv_string(j, "to", f->dest);
    json_kv_u64(j, "segment_id", f->id);
    json_kv_u64(j, "shard", f->shard);
    json_kv_string(j, "new_file", f->new_rel);
    json_kv_u64(j, "new_segment_id", f->new_id);
    json_kv_u64(j, "new_bytes", f->new_bytes);
    json_kv_u64(j, "records", f->records);
    json_kv_u64(j, "records_dropped", f->dropped_recs);
    json_kv_u64(j, "bytes_dropped", dropped_bytes(f));
    json_key(j, "dropped");
    json_array_begin(j);
    for (size_t k = 0; k < f->ndrops; k++) {
        json_object_begin(j);
        json_kv_u64(j, "from", f->drops[k].from);
        json_kv_u64(j, "to", f->drops[k].to);
        json_kv_u64(j, "records", f->drops[k].records);
        json_kv_string(j, "why", f->drops[k].why);
        json_object_end(j);
    }
    json_array_end(j);
}

/* One element of "files": a file of the store and what happens to it. */
static void
json_file(struct json *j, const struct rfile *f)
{
    json_object_begin(j);
    json_kv_string(j, "file", f->rel);
    json_kv_string(j, "kind", kind_name(f->kind));
    json_kv_string(j, "action", f->kind == FK_SEG ? action_name(f) : "lost");
    if (f->kind != FK_SEG) {
        json_kv_string(j, "to", f->dest);
        json_object_end(j);
        return;
    }
    json_kv_u64(j, "bytes", f->size);
    if (f->act == FA_KEEP) {
        json_kv_string(j, "to", f->home);
        json_kv_u64(j, "segment_id", f->id);
        json_kv_u64(j, "shard", f->shard);
        json_kv_u64(j, "records", f->records);
        json_kv_bool(j, "sealed", f->sealed);
        json_kv_u64(j, "torn_tail_bytes", f->torn_bytes);
        if (f->torn_bytes) {
            json_kv_u64(j, "torn_tail_offset", f->torn_from);
        }
    } else if (f->act == FA_REWRITE) {
        json_rewritten_segment(j, f);
    } else {
        json_kv_string(j, "to", f->dest);
        json_kv_string(j, "why", f->why);
    }
    json_object_end(j);
}

/* "new_manifest": its name, next segment id, version and the segments of each shard. */
static void
json_new_manifest(struct json *j, const struct rep *r)
{
    json_key(j, "new_manifest");
    json_object_begin(j);
    char name[32];
    snprintf(name, sizeof(name), "MANIFEST-%06" PRIu64, r->new_number);
    json_kv_string(j, "file", name);
    json_kv_u64(j, "next_segment_id", r->next_id);
    json_kv_u64(j, "version", r->version);
    json_key(j, "shards");
    json_array_begin(j);
    for (uint32_t s = 0; s < r->shard_count; s++) {
        json_array_begin(j);
        for (size_t k = 0; k < r->lists[s].count; k++) {
            json_u64(j, r->lists[s].seg_ids[k]);
        }
        json_array_end(j);
    }
    json_array_end(j);
    json_object_end(j);
}

static void
json_totals(struct json *j, const struct rep *r)
{
    struct totals t;
    count_totals(r, &t);
    json_key(j, "totals");
    json_object_begin(j);
    json_kv_u64(j, "segments_kept", t.kept);
    json_kv_u64(j, "segments_moved", t.moved);
    json_kv_u64(j, "segments_rewritten", t.rewritten);
    json_kv_u64(j, "segments_lost", t.lost_segs);
    json_kv_u64(j, "records_kept", t.records_kept);
    json_kv_u64(j, "records_dropped", t.records_dropped);
    json_kv_u64(j, "bytes_dropped", t.bytes_dropped);
    json_kv_u64(j, "torn_tail_bytes", t.torn_bytes);
    json_kv_u64(j, "hint_files", t.hints);
    json_kv_u64(j, "temporary_files", t.tmps);
    json_kv_u64(j, "manifests", r->nmans);
    json_object_end(j);
}

static void
report_json(const struct rep *r)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", r->c->dir);
    json_kv_bool(&j, "dry_run", r->dry);
    json_kv_bool(&j, "repaired", !r->dry);
    json_kv_u64(&j, "shard_count", r->shard_count);
    char seed[32];
    snprintf(seed, sizeof(seed), "0x%016" PRIx64, r->seed);
    json_kv_string(&j, "hash_seed", seed);
    json_kv_string(&j, "identity_from", r->ident_from);
    if (r->ident_note[0]) {
        json_kv_string(&j, "identity_note", r->ident_note);
    }
    json_kv_string(&j, "current", r->current);
    json_manifests(&j, r);
    json_key(&j, "created");
    json_array_begin(&j);
    for (size_t i = 0; i < r->nmkdirs; i++) {
        json_string(&j, r->mkdirs[i]);
    }
    json_array_end(&j);
    json_key(&j, "files");
    json_array_begin(&j);
    for (size_t i = 0; i < r->nfiles; i++) {
        json_file(&j, &r->files[i]);
    }
    json_array_end(&j);
    if (r->current_exists) {
        json_kv_string(&j, "current_to", r->current_dest);
    }
    json_key(&j, "notes");
    json_array_begin(&j);
    for (size_t i = 0; i < r->nnotes; i++) {
        json_string(&j, r->notes[i]);
    }
    json_array_end(&j);
    json_new_manifest(&j, r);
    json_totals(&j, r);
    json_kv_u64(&j, "exit_status", CTL_EXIT_OK);
    json_object_end(&j);
    json_finish(&j);
}

/* ---- the command ----------------------------------------------------------------------------- */

static int fail(const struct rep *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(const struct rep *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctl_error(r->c, "%s: repair: %s", r->c->dir, msg);
    ctl_json_error(r->c, msg, status);
    return status;
}

/* Does DIR hold anything of a store: CURRENT, a manifest, or a segment in a shard-* directory? */
static bool
looks_like_store(int dir_fd)
{
    DIR *d = dir_open(dir_fd, "");
    if (d == NULL) {
        return false;
    }
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d)) != NULL) {
        uint64_t n;
        if (strcmp(de->d_name, "CURRENT") == 0 || manifest_name(de->d_name, &n)) {
            found = true;
        } else if (strncmp(de->d_name, "shard-", 6) == 0) {
            DIR *sd = dir_open(dir_fd, de->d_name);
            if (sd == NULL) {
                continue;
            }
            struct dirent *se;
            while (!found && (se = readdir(sd)) != NULL) {
                found = ends_with(se->d_name, ".seg");
            }
            closedir(sd);
        }
    }
    closedir(d);
    return found;
}

static void
rep_free(struct rep *r)
{
    for (size_t i = 0; i < r->nfiles; i++) {
        struct rfile *f = &r->files[i];
        free(f->rel);
        free(f->dest);
        free(f->home);
        free(f->drops);
        free(f->keep);
        free(f->new_rel);
    }
    free(r->files);
    for (size_t i = 0; i < r->nmans; i++) {
        free(r->mans[i].dest);
    }
    free(r->mans);
    free(r->ids);
    free(r->aborts);
    for (size_t i = 0; i < r->nnotes; i++) {
        free(r->notes[i]);
    }
    free(r->notes);
    for (size_t i = 0; i < r->nmkdirs; i++) {
        free(r->mkdirs[i]);
    }
    free(r->mkdirs);
    for (size_t i = 0; i < r->nlost; i++) {
        free(r->lost_names[i]);
    }
    free(r->lost_names);
    if (r->lists != NULL) {
        for (uint32_t s = 0; s < r->shard_count; s++) {
            free(r->lists[s].seg_ids);
        }
        free(r->lists);
    }
    free(r->current_dest);
    (void)sync_dirty(r); /* frees the names; a failure was reported by the caller's barrier */
    free(r->dirty);
    if (r->lock_fd >= 0) {
        close(r->lock_fd);
    }
    if (r->dir_fd >= 0) {
        close(r->dir_fd);
    }
}

static int
repair(struct rep *r)
{
    const char *dir = r->c->dir;
    r->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r->dir_fd < 0) {
        return fail(r, CTL_EXIT_NOSTORE, "no htkv store here (%s)", strerror(errno));
    }
    if (!looks_like_store(r->dir_fd)) {
        return fail(r, CTL_EXIT_NOSTORE,
                    "no htkv store here (no CURRENT, no MANIFEST file and no segment)");
    }
    /* The lock, as a writer takes it. A dry run creates no LOCK (without one, nobody holds it). */
    r->lock_fd = openat(r->dir_fd, "LOCK",
                        (r->dry ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (r->lock_fd < 0 && !(r->dry && errno == ENOENT)) {
        return fail(r, CTL_EXIT_NOSTORE, "LOCK cannot be opened: %s", strerror(errno));
    }
    if (r->lock_fd >= 0 && flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            return fail(r, CTL_EXIT_NOSTORE,
                        "the store is open in another process (it holds the lock); repair "
                        "changes the store, so stop that process first");
        }
        return fail(r, CTL_EXIT_NOSTORE, "LOCK cannot be taken: %s", strerror(errno));
    }
    int rc = read_manifests(r);
    if (rc == 0) {
        rc = list_files(r);
    }
    if (rc == HTKV_EVERSION) {
        return fail(r, CTL_EXIT_NOSTORE, "the store was written by a newer on-disk format");
    }
    if (rc != 0) {
        return fail(r, CTL_EXIT_FAIL, "cannot read the store: %s; nothing was changed",
                    htkv_strerror(rc));
    }
    rc = identify(r);
    if (rc == HTKV_EVERSION) {
        return fail(r, CTL_EXIT_NOSTORE, "the store was written by a newer on-disk format");
    }
    if (rc != 0) {
        return fail(r, CTL_EXIT_FAIL,
                    "cannot tell the store's hash seed: no manifest holds a readable INIT edit "
                    "and no segment header names the store (segments of older builds do not); "
                    "nothing was changed");
    }
    rc = classify(r);
    if (rc == 0) {
        rc = plan(r);
    }
    if (rc == 0) {
        rc = size_rewrites(r);
    }
    if (rc != 0) {
        return fail(r, CTL_EXIT_FAIL, "stopped before changing anything: %s", htkv_strerror(rc));
    }
    if (!r->dry) {
        const char *step, *what;
        rc = apply(r, &step, &what);
        if (rc != 0) {
            return fail(r, CTL_EXIT_FAIL,
                        "%s%s%s failed: %s; every file is in the store or in lost/: run repair "
                        "again once the cause is fixed",
                        step, what[0] ? " " : "", what, htkv_strerror(rc));
        }
    }
    if (r->c->json) {
        report_json(r);
    } else {
        report_text(r);
    }
    return CTL_EXIT_OK;
}

static int
run_repair(struct ctl *c, int argc, char **argv)
{
    bool dry = false;
    const struct ctl_opt opts[] = { { "dry-run", NULL, &dry } };
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_repair, argc, argv, opts, 1, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    struct rep r = { .c = c, .dry = dry, .dir_fd = -1, .lock_fd = -1 };
    rc = repair(&r);
    rep_free(&r);
    return rc;
}

const struct ctl_cmd ctl_cmd_repair = {
    .name = "repair",
    .args = "[--dry-run] DIR",
    .summary = "rebuild the manifest of a store that open refuses (damage moved to lost/)",
    .help = "Options:\n"
            "  --dry-run  report what would be done; change nothing\n\n"
            "The store must not be open anywhere (its lock is taken exclusively). The segments\n"
            "on disk are the truth: a segment whose records all check is kept as it is (a torn\n"
            "tail is cut by the next open), one with damage followed by valid records is\n"
            "rewritten into a new segment holding its good records, and the damaged file, bad\n"
            "or foreign segments, hint files and the old CURRENT and MANIFEST files are moved\n"
            "(never deleted) to DIR/lost/. Then a new MANIFEST is written and CURRENT switched\n"
            "to it. Exit status 0 when the store was repaired (or, with --dry-run, would be).\n",
    .writes = true,
    .run = run_repair,
};
