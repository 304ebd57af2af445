/*
 * verify.c - the verify (fsck) walk of a store and its read-only inspection (API in verify.h):
 * verify walks every file on its own, with the rules of recovery, and reports every problem
 * instead of stopping at the first.
 *
 * Layer: features. Calls the formats layer (the record walk of rec.h, hint checks, manifest
 * and segment constants), the base layer, the public API (to compare with an open handle) and
 * the store (db.h: per-segment and manifest figures of an open store).
 *
 * Design. The verify walk shares no code path with htkv_open() beyond the record codec and its
 * walk (struct rec_walk, so "valid record" and "next record" mean the same thing) and the key
 * hash (shard check). It
 * reads CURRENT and the manifest with plain reads and maps each segment PROT_READ. Where
 * recovery would fail at damage followed by valid data, the walk reports it and resumes at the
 * next valid record or edit, as HTKV_RECOVERY_SKIP_CORRUPT would, so one run lists every
 * problem. From the records it rebuilds the index (a table of key -> newest version) and
 * compares it with an open handle, key by key.
 *
 * The segment walk mirrors recover_seg() (engine/recover.c); the manifest walk mirrors
 * man_replay() and man_tail_is_torn() (engine/manifest.c); the check of a directory without
 * CURRENT mirrors check_fresh_dir() (engine/db.c) and that of unlisted files orphan_kind()
 * (engine/recover.c). A change of those rules must be made here too; test_htkvctl checks that a
 * clean store verifies clean and that damage is found. The rules, as problems:
 *   - manifest: every edit valid (MAN_SEG_GONE for a listed id, an ADD of a gone id, a
 *     MAN_SEG_END of an unlisted segment, a MAN_VERSIONS with hwm below applied are not); after
 *     the last valid edit, damage that spans MAN_EDIT_MAX bytes or more (edits were lost);
 *   - CURRENT missing in a directory that holds anything of a store; a shard name that is not
 *     a directory;
 *   - a segment file the manifest neither lists nor calls gone that holds data after its
 *     header (it may hold acknowledged writes: recovery removes nothing on a guess);
 *   - damage or the end of the records before the end they are known to reach: the manifest's
 *     MAN_SEG_END (a clean close) or the tail of a whole hint file (written once the records it
 *     names were durable), whichever is larger;
 *   - a record version above the manifest's reservation (MAN_VERSIONS hwm): the manifest is
 *     older than its segments;
 *   - a segment header naming another store (shard count, hash seed; zero in older segments).
 *
 * A segment's walk is buffered (its findings, its operations, its batch parts) and committed to
 * the walk only once accepted: with HTKV_INSPECT_LIVE, a shard's last segment with a bad record
 * is walked again a few times, because another process may be in the middle of an append there.
 *
 * Invariants
 *   1. Nothing here writes to the store directory: files are opened O_RDONLY and mapped
 *      PROT_READ; the lock is only ever taken shared, or not at all (htkv_db_open() without it).
 *   2. Every length read from disk is bounded before it is used (htkv_rec_check() for records,
 *      explicit checks for the manifest and the headers).
 *   3. Keys in the rebuilt index point into segment mappings that stay mapped until the walk
 *      ends.
 *   4. For a store htkv_open() accepts, the rebuilt index equals the engine's: same keys, same
 *      versions (install rule: a version at least as new replaces, as recover_install()).
 */
#include "engine/verify.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/store.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "uring/ur_fault.h"

#define INSPECT_EDIT_MAX 64u             /* man_replay(): longer payloads are damage */
#define INSPECT_PROGRESS_STEP (4u << 20) /* progress callback about every 4 MiB */
/* Live mode: re-walk a shard's last segment up to 4 times, 20 ms apart (an append takes us). */
#define INSPECT_LIVE_TRIES 4
#define INSPECT_LIVE_WAIT_NS 20000000L
/* Per-key differences reported one by one before the rest are summed up in one finding. */
#define INSPECT_KEY_REPORTS 10u
/* Unlocked open: retries of a recovery that met damage followed by valid records (4 x 50 ms). */
#define INSPECT_OPEN_TRIES 4
#define INSPECT_OPEN_WAIT_NS 50000000L
#define INSPECT_PATH_MAX 4096

/* ---- small containers ----------------------------------------------------------------------- */

struct vec {
    void *p;
    size_t n, cap;
};

static int
vec_push(struct vec *v, size_t elem, const void *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        void *p = htkv_mem_realloc(v->p, cap * elem);
        if (p == NULL) {
            return -ENOMEM;
        }
        v->p = p;
        v->cap = cap;
    }
    memcpy((char *)v->p + v->n * elem, x, elem);
    v->n++;
    return 0;
}

static void
vec_free(struct vec *v)
{
    htkv_mem_free(v->p);
    *v = (struct vec){ 0 };
}

/* A segment id and a value (sorted vectors of the walk: gone ids, recorded ends). */
struct idval {
    uint64_t id;
    uint64_t val;
};

/* Index of the first entry of @p v (struct idval, sorted by id) with an id >= @p id. */
static size_t
idval_lower(const struct vec *v, uint64_t id)
{
    const struct idval *a = v->p;
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static const struct idval *
idval_find(const struct vec *v, uint64_t id)
{
    const struct idval *a = v->p;
    size_t i = idval_lower(v, id);
    return i < v->n && a[i].id == id ? &a[i] : NULL;
}

/* Insert {@p id, @p val}, or raise the value of @p id to @p val. 0 or -ENOMEM. */
static int
idval_put(struct vec *v, uint64_t id, uint64_t val)
{
    size_t i = idval_lower(v, id);
    struct idval *a = v->p;
    if (i < v->n && a[i].id == id) {
        a[i].val = val > a[i].val ? val : a[i].val;
        return 0;
    }
    struct idval x = { id, val };
    int rc = vec_push(v, sizeof(x), &x);
    if (rc != 0) {
        return rc;
    }
    a = v->p;
    memmove(&a[i + 1], &a[i], (v->n - 1 - i) * sizeof(*a));
    a[i] = x;
    return 0;
}

static void
idval_remove(struct vec *v, uint64_t id)
{
    size_t i = idval_lower(v, id);
    struct idval *a = v->p;
    if (i < v->n && a[i].id == id) {
        memmove(&a[i], &a[i + 1], (v->n - i - 1) * sizeof(*a));
        v->n--;
    }
}

/* One put or delete found in a segment. */
struct iop {
    const unsigned char *key; /* into a segment mapping (invariant 3) */
    uint64_t hash;
    uint64_t version;
    uint32_t klen;
    bool del;
};

/* A committed part of a batch with parts in several shards, waiting for the others. */
struct ipart {
    uint64_t version;
    uint32_t parts;
    uint32_t shard;
    uint64_t seg_id;
    uint64_t begin_off;
    size_t start, count; /* its operations in walk.parked */
};

/* A finding of a segment walk, held until the walk is accepted. */
struct ifinding {
    int kind;
    uint64_t off;
    char reason[240];
};

/* A mapping kept until the end of the walk. */
struct imap {
    void *p;
    size_t len;
};

/* ---- rebuilt index: open addressing, linear probing ----------------------------------------- */

struct islot {
    struct iop op; /* op.key == NULL: empty */
};

struct iindex {
    struct islot *slots;
    size_t mask;
    size_t used;
};

static bool
iop_key_eq(const struct iop *a, const struct iop *b)
{
    return a->hash == b->hash && a->klen == b->klen && memcmp(a->key, b->key, a->klen) == 0;
}

static int
iindex_grow(struct iindex *ix)
{
    size_t n = ix->slots ? (ix->mask + 1) * 2 : 1024;
    struct islot *s = htkv_mem_calloc(n, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; ix->slots != NULL && i <= ix->mask; i++) {
        if (ix->slots[i].op.key == NULL) {
            continue;
        }
        size_t j = ix->slots[i].op.hash & (n - 1);
        while (s[j].op.key != NULL) {
            j = (j + 1) & (n - 1);
        }
        s[j] = ix->slots[i];
    }
    htkv_mem_free(ix->slots);
    ix->slots = s;
    ix->mask = n - 1;
    return 0;
}

/* Install @p op unless a newer version of its key is there (recover_install()'s rule). */
static int
iindex_install(struct iindex *ix, const struct iop *op)
{
    HTKV_ASSERT(op->key != NULL);
    /* Grow at 3/4 load: linear probing stays short. */
    if (ix->slots == NULL || (ix->used + 1) * 4 > (ix->mask + 1) * 3) {
        int rc = iindex_grow(ix);
        if (rc != 0) {
            return rc;
        }
    }
    size_t j = op->hash & ix->mask;
    while (ix->slots[j].op.key != NULL) {
        if (iop_key_eq(&ix->slots[j].op, op)) {
            if (ix->slots[j].op.version <= op->version) {
                ix->slots[j].op = *op;
            }
            return 0;
        }
        j = (j + 1) & ix->mask;
    }
    ix->slots[j].op = *op;
    ix->used++;
    HTKV_ASSERT(ix->used <= ix->mask);
    return 0;
}

/* ---- walk state and findings ---------------------------------------------------------------- */

struct ishard {
    struct vec ids; /* uint64_t segment ids, ascending */
};

struct walk {
    const char *dir;
    int dir_fd;
    unsigned flags;
    struct htkv_inspect_summary *sum;
    htkv_inspect_issue_fn issue_fn;
    htkv_inspect_progress_fn progress_fn;
    void *ctx;
    uint64_t done, total, progress_at;
    uint32_t shard_count;
    uint64_t hash_seed;
    uint64_t batch_floor;     /* MAN_BATCH_FLOOR: batches at or below it are complete */
    struct vec aborted;       /* uint64_t versions of MAN_BATCH_ABORT edits: never applied */
    uint64_t next_seg_id;     /* one past every id added, called gone or named by MAN_NEXT_ID */
    uint64_t version_hwm;     /* MAN_VERSIONS: the last edit's hwm (0: none, an older store) */
    uint64_t version_applied; /* MAN_VERSIONS: the largest applied mark */
    struct vec gone;          /* struct idval {id, shard}: ids not part of the store */
    struct vec ends;          /* struct idval {id, end}: MAN_SEG_END, the largest per id */
    struct ishard *shards;
    struct iindex idx;
    struct vec parts;    /* struct ipart */
    struct vec parked;   /* struct iop of the parts */
    struct vec maps;     /* struct imap */
    unsigned char *vbuf; /* values read from the engine by compare_key() */
    size_t vcap;
};

static void report(struct walk *w, int kind, const char *file, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
report(struct walk *w, int kind, const char *file, uint64_t off, const char *fmt, ...)
{
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (kind == HTKV_INSPECT_PROBLEM) {
        w->sum->problems++;
    } else {
        w->sum->notes++;
    }
    if (w->issue_fn != NULL) {
        struct htkv_inspect_issue is = {
            .kind = kind, .file = file, .offset = off, .reason = reason
        };
        w->issue_fn(&is, w->ctx);
    }
}

/* Kind of a finding that recovery handles by itself but that --strict counts as a problem. */
static int
tail_kind(const struct walk *w)
{
    return (w->flags & HTKV_INSPECT_STRICT) ? HTKV_INSPECT_PROBLEM : HTKV_INSPECT_NOTE;
}

static void
progress(struct walk *w, uint64_t done)
{
    if (w->progress_fn == NULL) {
        return;
    }
    if (done < w->progress_at + INSPECT_PROGRESS_STEP && done != w->total) {
        return;
    }
    w->progress_at = done;
    w->progress_fn(done, w->total > done ? w->total : done, w->ctx);
}

/* Printable form of a key for findings: at most 64 bytes, others escaped as \xNN. */
static void
key_text(char *buf, size_t cap, const unsigned char *key, uint32_t klen)
{
    size_t n = 0;
    uint32_t shown = klen < 64 ? klen : 64;
    for (uint32_t i = 0; i < shown && n + 5 < cap; i++) {
        unsigned char c = key[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
            buf[n++] = (char)c;
        } else {
            n += (size_t)snprintf(buf + n, cap - n, "\\x%02x", c);
        }
    }
    if (shown < klen && n + 4 < cap) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n < cap ? n : cap - 1] = '\0';
}

/* ---- segments ------------------------------------------------------------------------------- */

/* The walk of one segment, committed to the store's walk only when accepted. */
struct segwalk {
    uint32_t shard;
    uint64_t id;
    bool last;   /* the shard's last segment: an all-zero header is the end of the log */
    bool strict; /* HTKV_INSPECT_STRICT: a torn tail is a problem */
    const unsigned char *map;
    uint64_t end;
    uint32_t shard_count;
    uint64_t hash_seed;
    uint64_t known;        /* the end its records are known to reach (0: none) */
    const char *known_why; /* where @c known comes from, for the finding */
    uint64_t hwm;          /* MAN_VERSIONS hwm to check versions against (0: no check) */
    bool above_hwm;        /* a record above @c hwm was reported */
    struct vec findings;   /* struct ifinding */
    struct vec ops;        /* struct iop, in file order: plain ops and one-part batches */
    struct vec parts;      /* struct ipart; start/count index pops */
    struct vec pops;       /* struct iop of multi-part batch parts */
    struct vec bops;       /* struct iop of the batch being scanned */
    uint64_t records;
    uint64_t max_version;
    uint64_t problems;
    bool sealed;
};

static void
segwalk_free(struct segwalk *sw)
{
    vec_free(&sw->findings);
    vec_free(&sw->ops);
    vec_free(&sw->parts);
    vec_free(&sw->pops);
    vec_free(&sw->bops);
}

static int seg_find(struct segwalk *sw, int kind, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
seg_find(struct segwalk *sw, int kind, uint64_t off, const char *fmt, ...)
{
    struct ifinding f = { .kind = kind, .off = off };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f.reason, sizeof(f.reason), fmt, ap);
    va_end(ap);
    if (kind == HTKV_INSPECT_PROBLEM) {
        sw->problems++;
    }
    return vec_push(&sw->findings, sizeof(f), &f);
}

/* Why the walk's last step refused the record at w->at, in words. */
static void
bad_record_reason(const struct rec_walk *rw, char *buf, size_t cap)
{
    struct rec_hdr h;
    switch (htkv_rec_walk_why(rw, &h)) {
    case REC_BAD_SHORT:
        snprintf(buf, cap, "truncated record header (%llu bytes)",
                 (unsigned long long)(rw->end - rw->at));
        break;
    case REC_BAD_LENGTHS:
        snprintf(buf, cap, "record lengths run past the end of the file (key %u, value %u bytes)",
                 h.key_len, h.val_len);
        break;
    case REC_BAD_CRC:
        snprintf(buf, cap, "record checksum mismatch (type %u, key %u, value %u bytes)", h.type,
                 h.key_len, h.val_len);
        break;
    case REC_BAD_HEADER:
        snprintf(buf, cap,
                 "bad record header (type %u, flags 0x%x, reserved %u, key %u, value %u bytes, "
                 "version %llu)",
                 h.type, h.flags, h.reserved, h.key_len, h.val_len, (unsigned long long)h.version);
        break;
    default:
        HTKV_UNREACHABLE();
    }
}

static void
batch_drop(struct segwalk *sw)
{
    sw->bops.n = 0;
}

/* COMMIT of the batch being scanned: keep its operations (one part) or park them (several). */
static int
batch_keep(struct segwalk *sw, uint64_t version, uint32_t parts, uint64_t begin_off)
{
    const struct iop *ops = sw->bops.p;
    int rc = 0;
    if (parts == 1) {
        for (size_t i = 0; i < sw->bops.n && rc == 0; i++) {
            rc = vec_push(&sw->ops, sizeof(*ops), &ops[i]);
        }
    } else {
        struct ipart p = { .version = version,
                           .parts = parts,
                           .shard = sw->shard,
                           .seg_id = sw->id,
                           .begin_off = begin_off,
                           .start = sw->pops.n,
                           .count = sw->bops.n };
        for (size_t i = 0; i < sw->bops.n && rc == 0; i++) {
            rc = vec_push(&sw->pops, sizeof(*ops), &ops[i]);
        }
        if (rc == 0) {
            rc = vec_push(&sw->parts, sizeof(p), &p);
        }
    }
    batch_drop(sw);
    return rc;
}

/* Batch state of a segment walk (recover_seg()'s locals). */
struct bstate {
    bool in_batch;
    bool orphans; /* after a skip: drop the rest of a batch whose start was skipped */
    uint64_t version, begin;
    uint32_t ops, parts, seen;
};

/* A SET or DEL: check its framing and shard, then keep it (plain) or add it to the batch. */
static int
walk_op(struct segwalk *sw, struct bstate *b, uint64_t off, const struct rec_hdr *h)
{
    HTKV_ASSERT(h->type == REC_SET || h->type == REC_DEL);
    HTKV_ASSERT(off + REC_HDR_BYTES + h->key_len <= sw->end); /* htkv_rec_check() bounded it */
    bool flagged = (h->flags & REC_F_BATCH) != 0;
    if (flagged != b->in_batch) {
        return seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                        flagged ? "batch operation outside a batch (no BEGIN before it)"
                                : "plain operation inside a batch");
    }
    if (b->in_batch && (h->version != b->version || b->seen >= b->ops)) {
        return seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                        "batch operation out of place (version %llu, batch %llu, op %u of %u)",
                        (unsigned long long)h->version, (unsigned long long)b->version, b->seen + 1,
                        b->ops);
    }
    const unsigned char *key = sw->map + off + REC_HDR_BYTES;
    struct iop op = { .key = key,
                      .hash = htkv_hash(key, h->key_len, sw->hash_seed),
                      .version = h->version,
                      .klen = h->key_len,
                      .del = h->type == REC_DEL };
    uint32_t home = (uint32_t)((op.hash >> 32) % sw->shard_count); /* db_shard_of() */
    if (home != sw->shard) {
        return seg_find(sw, HTKV_INSPECT_PROBLEM, off, "record belongs to shard %u, not %u", home,
                        sw->shard);
    }
    if (b->in_batch) {
        b->seen++;
        return vec_push(&sw->bops, sizeof(op), &op);
    }
    return vec_push(&sw->ops, sizeof(op), &op);
}

/* A BEGIN, COMMIT or SEAL. Sets sw->sealed on a good SEAL. */
static int
walk_control(struct segwalk *sw, struct bstate *b, uint64_t off, const struct rec_hdr *h)
{
    HTKV_ASSERT(h->key_len == 0);
    HTKV_ASSERT(off + REC_HDR_BYTES + h->val_len <= sw->end); /* payload read below */
    const unsigned char *pl = sw->map + off + REC_HDR_BYTES + h->key_len;
    int rc = 0;
    switch (h->type) {
    case REC_BATCH_BEGIN:
        if (b->in_batch) {
            rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                          "batch BEGIN inside the batch begun at offset %llu (no COMMIT)",
                          (unsigned long long)b->begin);
            batch_drop(sw);
        }
        b->in_batch = htkv_load32(pl) > 0 && htkv_load32(pl + 4) >= 1;
        if (!b->in_batch && rc == 0) {
            rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off, "batch BEGIN with %u operations, %u parts",
                          htkv_load32(pl), htkv_load32(pl + 4));
        }
        *b = (struct bstate){ .in_batch = b->in_batch,
                              .version = h->version,
                              .begin = off,
                              .ops = htkv_load32(pl),
                              .parts = htkv_load32(pl + 4) };
        return rc;
    case REC_BATCH_COMMIT:
        if (!b->in_batch || h->version != b->version || htkv_load32(pl) != b->ops ||
            htkv_load32(pl + 4) != b->parts || b->seen != b->ops) {
            rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                          "batch COMMIT out of place (version %llu, %u operations, %u parts; "
                          "%u operations seen)",
                          (unsigned long long)h->version, htkv_load32(pl), htkv_load32(pl + 4),
                          b->in_batch ? b->seen : 0);
            batch_drop(sw);
        } else {
            rc = batch_keep(sw, b->version, b->parts, b->begin);
        }
        b->in_batch = false;
        return rc;
    case REC_SEAL:
        if (b->in_batch || htkv_load64(pl + 8) != off) {
            return seg_find(sw, HTKV_INSPECT_PROBLEM, off, "SEAL out of place (data end %llu%s)",
                            (unsigned long long)htkv_load64(pl + 8),
                            b->in_batch ? ", inside a batch" : "");
        }
        if (htkv_load64(pl) != sw->records) {
            rc = seg_find(sw, HTKV_INSPECT_NOTE, off, "SEAL counts %llu records, %llu found",
                          (unsigned long long)htkv_load64(pl), (unsigned long long)sw->records);
        }
        sw->sealed = true;
        return rc;
    default:
        HTKV_UNREACHABLE();
    }
}

/*
 * A bad record at rw->at (the walk's step returned @p r): the end of the log (torn) or damage to
 * skip. Sets *next (0 = end); the walk is then at *next.
 */
static int
walk_bad(struct segwalk *sw, struct bstate *b, struct rec_walk *rw, enum rec_walk_res r,
         uint64_t *next)
{
    uint64_t off = rw->at;
    bool hole = sw->last && r == REC_WALK_ZERO;
    *next = hole ? 0 : htkv_rec_walk_resync(rw);
    if (*next == 0) {
        return 0;
    }
    char why[160];
    bad_record_reason(rw, why, sizeof(why));
    int rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                      "%s, followed by valid records (%llu bytes unreadable, next record at "
                      "offset %llu)",
                      why, (unsigned long long)(*next - off), (unsigned long long)*next);
    if (b->in_batch) {
        batch_drop(sw); /* a batch with a hole in it is not applied */
        b->in_batch = false;
    }
    b->orphans = true;
    return rc;
}

/* The log ends at @p off (torn, or end of file): describe what recovery cuts. */
static int
walk_end(struct segwalk *sw, struct bstate *b, uint64_t off, bool torn, bool live)
{
    uint64_t cut = off;
    if (b->in_batch) {
        torn = true;
        cut = b->begin; /* the file ends inside a batch */
        batch_drop(sw);
    }
    if (cut < sw->known) {
        /* before_known_end(): only what lies after that end may be a torn tail. */
        return seg_find(sw, HTKV_INSPECT_PROBLEM, cut,
                        "damaged or missing records at offset %llu, before offset %llu that its "
                        "records are known to reach (%s): records were lost; htkv_open refuses "
                        "the store",
                        (unsigned long long)cut, (unsigned long long)sw->known, sw->known_why);
    }
    if (!torn || (live && sw->last) || cut >= sw->end) {
        return 0;
    }
    uint64_t junk = htkv_seg_last_nonzero_end(sw->map, cut, sw->end);
    if (junk <= cut) {
        return 0;
    }
    return seg_find(sw, sw->strict ? HTKV_INSPECT_PROBLEM : HTKV_INSPECT_NOTE, cut,
                    "torn tail: %llu bytes%s that are not a complete record; recovery ignores "
                    "them (a writable open zeroes them)",
                    (unsigned long long)(junk - cut), b->in_batch ? " (an unfinished batch)" : "");
}

/* Walk the records of one segment (recover_seg()'s loop). Returns 0 or -ENOMEM. */
static int
walk_records(struct walk *w, struct segwalk *sw, bool live)
{
    HTKV_ASSERT(sw->map != NULL);
    HTKV_ASSERT(sw->end >= SEG_HDR_BYTES && sw->end <= SEG_BYTES_LIMIT);
    struct bstate b = { 0 };
    uint64_t off = SEG_DATA_OFF;
    bool torn = false;
    int rc = 0;
    struct rec_hdr h;
    struct rec_walk rw;
    htkv_rec_walk_init(&rw, sw->map, sw->id, off, sw->end, HTKV_VALUE_MAX_LIMIT);
    while (off < sw->end && rc == 0) {
        progress(w, w->done + off);
        enum rec_walk_res r = htkv_rec_walk_next(&rw, &h);
        HTKV_ASSERT(r != REC_WALK_END && rw.at == off);
        if (r != REC_WALK_RECORD) {
            uint64_t next;
            rc = walk_bad(sw, &b, &rw, r, &next);
            if (next == 0) {
                torn = true;
                break;
            }
            off = next;
            continue;
        }
        uint64_t size = rw.off - rw.at;
        if (h.version > sw->max_version && h.type != REC_SEAL) {
            sw->max_version = h.version;
        }
        if (sw->hwm > 0 && h.version > sw->hwm && h.type != REC_SEAL && !sw->above_hwm) {
            /* recover_versions(): versions above the reservation were never handed out by the
             * manifest that is there. */
            sw->above_hwm = true;
            rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off,
                          "record version %llu is above %llu, the highest the manifest reserved "
                          "(MAN_VERSIONS): the manifest is older than its segments; htkv_open "
                          "refuses the store",
                          (unsigned long long)h.version, (unsigned long long)sw->hwm);
            if (rc != 0) {
                break;
            }
        }
        if (b.orphans && ((h.flags & REC_F_BATCH) != 0 || h.type == REC_BATCH_COMMIT)) {
            sw->records++;
            off += size; /* recovery drops the rest of a batch whose start was skipped */
            continue;
        }
        b.orphans = false;
        if (h.type == REC_SET || h.type == REC_DEL) {
            rc = walk_op(sw, &b, off, &h);
        } else {
            rc = walk_control(sw, &b, off, &h); /* SEAL compares sw->records: not counted yet */
        }
        sw->records++;
        off += size;
        if (sw->sealed) {
            if (rc == 0 && htkv_seg_last_nonzero_end(sw->map, off, sw->end) != off) {
                rc = seg_find(sw, HTKV_INSPECT_PROBLEM, off, "data after the SEAL record");
            }
            break;
        }
    }
    if (rc == 0) {
        rc = walk_end(sw, &b, off, torn, live);
    }
    return rc;
}

/* Check the 64-byte header of a segment (seg_hdr_check()), reporting each mismatch. */
static void
check_seg_header(struct walk *w, const char *rel, const unsigned char *hd, uint32_t shard,
                 uint64_t id)
{
    if (memcmp(hd, SEG_MAGIC, 8) != 0) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad segment magic");
    }
    if (htkv_load32(hd + 60) != htkv_crc32c(0, hd, 60)) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 60, "segment header checksum mismatch");
    }
    if (htkv_load32(hd + 8) > HTKV_FORMAT_VERSION) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 8, "segment format version %u is newer than %u",
               htkv_load32(hd + 8), HTKV_FORMAT_VERSION);
    }
    if (htkv_load32(hd + 12) != shard) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 12, "header names shard %u, the manifest %u",
               htkv_load32(hd + 12), shard);
    }
    if (htkv_load64(hd + 16) != id) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 16, "header names segment %llu, the manifest %llu",
               (unsigned long long)htkv_load64(hd + 16), (unsigned long long)id);
    }
    /* The store the segment belongs to (bytes 24..35), zero in segments of older builds; the
     * rest up to the checksum is not checked (zero as written). */
    uint32_t count = htkv_load32(hd + 24);
    uint64_t seed = htkv_load64(hd + 28);
    if (count != 0 && count != w->shard_count) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 24,
               "header names a store of %u shards, the manifest %u: a segment of another store",
               count, w->shard_count);
    }
    if (seed != 0 && seed != w->hash_seed) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 28,
               "header names hash seed 0x%016llx, the manifest 0x%016llx: a segment of another "
               "store",
               (unsigned long long)seed, (unsigned long long)w->hash_seed);
    }
}

/*
 * The tail of the hint file of segment @p id of shard @p shard when the hint is whole (header,
 * size and trailer checksum valid), else 0 (none, unreadable, damaged: cmd_verify checks hint
 * files on their own). A hint is written only once the records it names are durable, so a whole
 * one tells where the segment's records are known to reach, also when the segment disagrees
 * with it (recover_hint()).
 */
static uint64_t
hint_known_end(struct walk *w, uint32_t shard, uint64_t id)
{
    char rel[64];
    snprintf(rel, sizeof(rel), "shard-%03u/%012llu.hint", shard, (unsigned long long)id);
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(w->dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    unsigned char buf[16384];
    struct stat st;
    uint64_t tail = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size >= HINT_HDR_BYTES + HINT_TRAILER_BYTES &&
        pread(fd, buf, HINT_HDR_BYTES, 0) == (ssize_t)HINT_HDR_BYTES) {
        uint64_t size = (uint64_t)st.st_size, n = htkv_load64(buf + 24);
        uint64_t t = htkv_load64(buf + 32);
        bool ok = memcmp(buf, HINT_MAGIC, 8) == 0 &&
                  htkv_load32(buf + 60) == htkv_crc32c(0, buf, 60) &&
                  htkv_load32(buf + 8) == HTKV_FORMAT_VERSION && htkv_load32(buf + 12) == shard &&
                  htkv_load64(buf + 16) == id && htkv_load32(buf + 56) == 0 &&
                  n <= (size - HINT_HDR_BYTES - HINT_TRAILER_BYTES) / HINT_ENT_BYTES &&
                  size == HINT_HDR_BYTES + n * HINT_ENT_BYTES + HINT_TRAILER_BYTES &&
                  t >= SEG_DATA_OFF && t % REC_ALIGN == 0 && t <= SEG_BYTES_LIMIT;
        uint32_t crc = 0;
        uint64_t ents = n * HINT_ENT_BYTES;
        for (uint64_t off = 0; ok && off < ents;) {
            size_t want = ents - off < sizeof(buf) ? (size_t)(ents - off) : sizeof(buf);
            ssize_t got = pread(fd, buf, want, (off_t)(HINT_HDR_BYTES + off));
            if (got <= 0) {
                ok = false;
                break;
            }
            crc = htkv_crc32c(crc, buf, (size_t)got);
            off += (uint64_t)got;
        }
        ok = ok &&
             pread(fd, buf, HINT_TRAILER_BYTES, (off_t)(HINT_HDR_BYTES + ents)) ==
                 (ssize_t)HINT_TRAILER_BYTES &&
             htkv_load32(buf) == crc && htkv_load32(buf + 4) == 0;
        tail = ok ? t : 0;
    }
    close(fd);
    return tail;
}

/* Map @p rel read-only. Returns 0 (*map set, NULL for a file too short), or a finding's -errno. */
static int
map_segment(struct walk *w, const char *rel, uint32_t shard, uint64_t id, void **map, uint64_t *len)
{
    *map = NULL;
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(w->dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            report(w, HTKV_INSPECT_PROBLEM, rel, 0, "listed in the manifest but missing");
        } else {
            report(w, HTKV_INSPECT_PROBLEM, rel, 0, "cannot be opened: %s", strerror(errno));
        }
        return 0;
    }
    struct stat st;
    int rc = 0;
    unsigned char hd[SEG_HDR_BYTES];
    ssize_t got = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
    } else if ((uint64_t)st.st_size >= SEG_HDR_BYTES &&
               (got = htkv_fault_fails(HTKV_FAULT_READ) ? -1 : pread(fd, hd, sizeof(hd), 0)) < 0) {
        rc = -errno; /* an I/O error is not a finding about the file: the walk stops */
        htkv_set_error("%s/%s: cannot be read: %s", w->dir, rel, strerror(errno));
    } else if ((uint64_t)st.st_size < SEG_HDR_BYTES || got != (ssize_t)sizeof(hd)) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "shorter than its %u-byte header", SEG_HDR_BYTES);
    } else if ((uint64_t)st.st_size > SEG_BYTES_LIMIT) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "larger than 4 GiB (%llu bytes)",
               (unsigned long long)st.st_size);
    } else {
        check_seg_header(w, rel, hd, shard, id);
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            rc = -errno;
        } else {
            *map = m;
            *len = (uint64_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

/* Commit an accepted segment walk: findings, index installs, batch parts. */
static int
segwalk_commit(struct walk *w, struct segwalk *sw, const char *rel)
{
    HTKV_ASSERT(sw->bops.n == 0); /* every batch was kept or dropped by walk_end() */
    const struct ifinding *f = sw->findings.p;
    for (size_t i = 0; i < sw->findings.n; i++) {
        report(w, f[i].kind, rel, f[i].off, "%s", f[i].reason);
    }
    int rc = 0;
    const struct iop *ops = sw->ops.p;
    for (size_t i = 0; i < sw->ops.n && rc == 0; i++) {
        rc = iindex_install(&w->idx, &ops[i]);
    }
    const struct iop *pops = sw->pops.p;
    struct ipart *parts = sw->parts.p;
    for (size_t i = 0; i < sw->parts.n && rc == 0; i++) {
        size_t start = w->parked.n;
        for (size_t k = 0; k < parts[i].count && rc == 0; k++) {
            rc = vec_push(&w->parked, sizeof(struct iop), &pops[parts[i].start + k]);
        }
        parts[i].start = start;
        if (rc == 0) {
            rc = vec_push(&w->parts, sizeof(parts[i]), &parts[i]);
        }
    }
    w->sum->records += sw->records;
    if (sw->max_version > w->sum->max_version) {
        w->sum->max_version = sw->max_version;
    }
    return rc;
}

/* Walk one listed segment; in live mode, a last segment with problems is read again. */
static int
walk_segment(struct walk *w, uint32_t shard, uint64_t id, bool last)
{
    HTKV_ASSERT(shard < w->shard_count);
    HTKV_ASSERT(id != 0);
    char rel[64];
    snprintf(rel, sizeof(rel), "shard-%03u/%012llu.seg", shard, (unsigned long long)id);
    bool live = (w->flags & HTKV_INSPECT_LIVE) != 0;
    int tries = live && last ? INSPECT_LIVE_TRIES : 1;
    /* recover_seg(): the end its records are known to reach, a clean close's or a hint's. */
    const struct idval *e = idval_find(&w->ends, id);
    uint64_t recorded = e != NULL ? e->val : 0, hinted = hint_known_end(w, shard, id);
    uint64_t known = recorded > hinted ? recorded : hinted;
    const char *known_why = recorded >= hinted ? "recorded in the manifest at a clean close"
                                               : "the tail its hint file names";
    for (int t = 1;; t++) {
        void *map;
        uint64_t len = 0;
        int rc = map_segment(w, rel, shard, id, &map, &len);
        if (rc != 0 || map == NULL) {
            return rc;
        }
        struct segwalk sw = { .shard = shard,
                              .id = id,
                              .last = last,
                              .strict = (w->flags & HTKV_INSPECT_STRICT) != 0,
                              .map = map,
                              .end = len,
                              .shard_count = w->shard_count,
                              .hash_seed = w->hash_seed,
                              .known = known,
                              .known_why = known_why,
                              /* A writer may reserve and use versions after the manifest was
                               * read: no check in live mode. */
                              .hwm = live ? 0 : w->version_hwm };
        rc = walk_records(w, &sw, live);
        if (rc == 0 && sw.problems > 0 && t < tries) {
            segwalk_free(&sw);
            munmap(map, len);
            struct timespec ts = { 0, INSPECT_LIVE_WAIT_NS };
            nanosleep(&ts, NULL);
            continue; /* an append in progress: look again */
        }
        struct imap m = { map, len };
        if (rc == 0) {
            rc = vec_push(&w->maps, sizeof(m), &m);
        }
        if (rc == 0) {
            rc = segwalk_commit(w, &sw, rel);
        } else {
            munmap(map, len);
        }
        segwalk_free(&sw);
        w->done += len;
        progress(w, w->done);
        w->sum->bytes_checked += len;
        return rc;
    }
}

/* ---- manifest ------------------------------------------------------------------------------- */

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
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "INIT: format version %u is newer than %u",
               format, HTKV_FORMAT_VERSION);
        return 1;
    }
    if (shards == 0 || shards > MAN_SHARDS_MAX) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "INIT: %u shards", shards);
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
            report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid NEXT_ID edit");
        } else if (next > w->next_seg_id) {
            w->next_seg_id = next;
        }
        return 0;
    }
    case MAN_VERSIONS: {
        uint64_t hwm = htkv_load64(p), applied = htkv_load64(p + 8);
        if (hwm < applied || hwm > REC_VERSION_MAX) {
            report(w, HTKV_INSPECT_PROBLEM, rel, off,
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
            report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid BATCH_FLOOR edit");
        } else if (htkv_load64(p + 8) > w->batch_floor) {
            w->batch_floor = htkv_load64(p + 8);
        }
        return 0;
    case MAN_BATCH_ABORT: {
        uint64_t limit = htkv_load64(p), version = htkv_load64(p + 8);
        if (version == 0 || limit == 0 || limit > MAN_SEG_ID_MAX + 1) {
            report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid BATCH_ABORT edit");
            return 0;
        }
        return vec_push(&w->aborted, sizeof(version), &version);
    }
    default:
        HTKV_UNREACHABLE();
    }
}

/* SEG_GONE (16 bytes) or SEG_END (24 bytes). 0 or -ENOMEM. */
static int
edit_gone_end(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p)
{
    uint32_t shard = htkv_load32(p);
    uint64_t id = htkv_load64(p + 8);
    const char *what = type == MAN_SEG_GONE ? "SEG_GONE" : "SEG_END";
    if (shard >= w->shard_count || id == 0 || id > MAN_SEG_ID_MAX || htkv_load32(p + 4) != 0) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "%s: invalid shard %u or segment %llu", what,
               shard, (unsigned long long)id);
        return 0;
    }
    bool listed = ishard_listed(w, shard, id);
    if (type == MAN_SEG_GONE) {
        if (listed) {
            report(w, HTKV_INSPECT_PROBLEM, rel, off,
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
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "SEG_END: segment %llu of shard %u is not listed",
               (unsigned long long)id, shard);
        return 0;
    }
    if (end < SEG_DATA_OFF || end > SEG_BYTES_LIMIT) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off,
               "SEG_END: end %llu of segment %llu is out of [%u, %llu]", (unsigned long long)end,
               (unsigned long long)id, SEG_DATA_OFF, (unsigned long long)SEG_BYTES_LIMIT);
        return 0;
    }
    return idval_put(&w->ends, id, end);
}

/* SEG_ADD or SEG_DROP (16 bytes). 0 or -ENOMEM. */
static int
edit_add_drop(struct walk *w, const char *rel, uint64_t off, uint32_t type, const unsigned char *p)
{
    uint32_t shard = htkv_load32(p);
    uint64_t id = htkv_load64(p + 8);
    const char *what = type == MAN_SEG_ADD ? "SEG_ADD" : "SEG_DROP";
    if (shard >= w->shard_count || id == 0 || id > MAN_SEG_ID_MAX || htkv_load32(p + 4) != 0) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "%s: invalid shard %u or segment %llu", what,
               shard, (unsigned long long)id);
        return 0;
    }
    if (type == MAN_SEG_ADD && idval_find(&w->gone, id) != NULL) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off,
               "SEG_ADD: segment %llu of shard %u was called gone before (ids are never "
               "reused)",
               (unsigned long long)id, shard);
        return 0;
    }
    int rc = type == MAN_SEG_ADD ? ishard_add(w, shard, id) : ishard_drop(w, shard, id);
    if (rc == 1) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off, "%s: segment %llu of shard %u %s", what,
               (unsigned long long)id, shard,
               type == MAN_SEG_ADD ? "added twice" : "was not there");
        return 0;
    }
    if (rc == 0 && type == MAN_SEG_ADD && id >= w->next_seg_id) {
        w->next_seg_id = id + 1;
    }
    if (rc == 0 && type == MAN_SEG_DROP) {
        /* man_apply_drop(): its file is obsolete now, whether or not its unlink happens. */
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
    report(w, HTKV_INSPECT_PROBLEM, rel, off, "invalid edit (type %u, %u bytes%s)", type, len,
           init ? "" : ", before INIT");
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
            report(w, HTKV_INSPECT_PROBLEM, rel, off,
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
        report(w, tail_kind(w), rel, off,
               "torn last edit (%llu bytes): never acted upon; a writable open cuts it",
               (unsigned long long)(last - off));
    } else if (last > off) {
        report(w, HTKV_INSPECT_PROBLEM, rel, off,
               "damaged edits from offset %llu on (%llu bytes, more than one torn append): "
               "edits were lost; htkv_open refuses the store",
               (unsigned long long)off, (unsigned long long)(last - off));
    }
    if (w->shards == NULL) {
        report(w, HTKV_INSPECT_PROBLEM, rel, MAN_HDR_BYTES, "no INIT edit");
        return 1;
    }
    return 0;
}

/* Check the 32-byte manifest header; returns 1 when the edits cannot be interpreted. */
static int
check_man_header(struct walk *w, const char *rel, const unsigned char *buf, uint64_t number)
{
    if (memcmp(buf, MAN_MAGIC, 8) != 0) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad manifest magic");
    }
    if (htkv_load32(buf + 28) != htkv_crc32c(0, buf, 28)) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 28, "manifest header checksum mismatch");
    }
    if (htkv_load64(buf + 16) != number) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 16, "header names manifest %llu, the file name %llu",
               (unsigned long long)htkv_load64(buf + 16), (unsigned long long)number);
    }
    if (htkv_load32(buf + 8) > HTKV_FORMAT_VERSION) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 8, "format version %u is newer than %u",
               htkv_load32(buf + 8), HTKV_FORMAT_VERSION);
        return 1;
    }
    return 0;
}

/* Read and walk MANIFEST-@p number. Returns 0, 1 (cannot go on), -errno. */
static int
walk_manifest_file(struct walk *w, uint64_t number)
{
    char rel[64];
    snprintf(rel, sizeof(rel), "MANIFEST-%06llu", (unsigned long long)number);
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : openat(w->dir_fd, rel, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "named by CURRENT but cannot be opened: %s",
               strerror(errno));
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
        report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad manifest size %llu", (unsigned long long)len);
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
        report(w, HTKV_INSPECT_PROBLEM, name, 0,
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
        report(w, HTKV_INSPECT_PROBLEM, "CURRENT", 0,
               "CURRENT is missing, but the directory holds a store ('%s'): htkv_open refuses "
               "it%s",
               held, newest ? "; walking the newest MANIFEST file instead" : "");
    }
    *number = newest;
    return newest ? 0 : 1;
}

/* Read CURRENT (man_read_current()); on damage, fall back to the newest MANIFEST-* there is. */
static int
walk_current(struct walk *w, uint64_t *number)
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
    report(w, HTKV_INSPECT_PROBLEM, "CURRENT", 0, "%s%s%s",
           fd < 0 ? "cannot be opened: " : "does not name a manifest",
           fd < 0 ? strerror(open_err) : "",
           newest ? "; walking the newest MANIFEST file instead" : "");
    *number = newest;
    return newest ? 0 : 1;
}

static void walk_free(struct walk *w);

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
    if (walk_current(&w2, &number) == 0 && walk_manifest_file(&w2, number) == 0 &&
        w2.shards != NULL && shard < w2.shard_count) {
        found = ishard_listed(&w2, shard, id) || idval_find(&w2.gone, id) != NULL;
    }
    walk_free(&w2);
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
static void
walk_leftovers(struct walk *w)
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
            report(w, HTKV_INSPECT_NOTE, de->d_name, 0,
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
            report(w, HTKV_INSPECT_PROBLEM, sd, 0,
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
            report(w, kind, rel, 0, "%snot in the manifest %s",
                   seg ? "" : "hint of a segment that is ", why);
        }
        closedir(sdir);
    }
}

/* ---- cross-shard batches and the comparison with the engine ---------------------------------- */

static int
cmp_part(const void *a, const void *b)
{
    const struct ipart *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

/* Install the batches whose every part was found committed (recover_cross_shard()). */
static int
resolve_parts(struct walk *w)
{
    HTKV_ASSERT(w->parts.n == 0 || w->parts.p != NULL);
    if (w->parts.n == 0) {
        return 0; /* qsort() may not be given NULL, even for no elements */
    }
    struct ipart *p = w->parts.p;
    const struct iop *ops = w->parked.p;
    qsort(p, w->parts.n, sizeof(*p), cmp_part);
    int rc = 0;
    for (size_t i = 0; i < w->parts.n && rc == 0;) {
        size_t j = i;
        bool complete = true;
        while (j < w->parts.n && p[j].version == p[i].version) {
            complete = complete && p[j].parts == p[i].parts;
            j++;
        }
        complete = complete && j - i == p[i].parts;
        /* recover_cross_shard(): at or below the batch floor the parts found stand, unless an
         * earlier recovery recorded the batch as not applied. */
        bool aborted = false;
        for (size_t a = 0; a < w->aborted.n && !aborted; a++) {
            aborted = ((const uint64_t *)w->aborted.p)[a] == p[i].version;
        }
        complete = !aborted && (complete || p[i].version <= w->batch_floor);
        if (!complete && !aborted && !(w->flags & HTKV_INSPECT_LIVE)) {
            char rel[64];
            snprintf(rel, sizeof(rel), "shard-%03u/%012llu.seg", p[i].shard,
                     (unsigned long long)p[i].seg_id);
            report(w, tail_kind(w), rel, p[i].begin_off,
                   "batch version %llu: %zu of %u parts committed; recovery does not apply it",
                   (unsigned long long)p[i].version, j - i, p[i].parts);
        }
        for (size_t k = i; k < j && complete && rc == 0; k++) {
            for (size_t n = 0; n < p[k].count && rc == 0; n++) {
                rc = iindex_install(&w->idx, &ops[p[k].start + n]);
            }
        }
        i = j;
    }
    return rc;
}

/* Look up one key of the rebuilt index in @p db; returns true when both agree. */
static bool
compare_key(struct walk *w, htkv_db *db, const struct iop *op, uint64_t *mismatches)
{
    size_t vlen = 0;
    uint64_t version = 0;
    int rc = htkv_get_version(db, op->key, op->klen, w->vbuf, w->vcap, &vlen, &version);
    if (rc == HTKV_ETOOSMALL) {
        /* The version comes only with the value: make room for it and read again. */
        unsigned char *b = htkv_mem_realloc(w->vbuf, vlen);
        if (b == NULL) {
            rc = -ENOMEM;
        } else {
            w->vbuf = b;
            w->vcap = vlen;
            rc = htkv_get_version(db, op->key, op->klen, w->vbuf, w->vcap, &vlen, &version);
        }
    }
    bool present = rc == 0;
    bool ok = op->del ? rc == HTKV_ENOTFOUND : present && version == op->version;
    w->sum->keys_compared++;
    if (ok) {
        return true;
    }
    if (++*mismatches > INSPECT_KEY_REPORTS) {
        return false;
    }
    char key[300];
    key_text(key, sizeof(key), op->key, op->klen);
    char got[128];
    if (present) {
        snprintf(got, sizeof(got), "version %llu", (unsigned long long)version);
    } else {
        snprintf(got, sizeof(got), "%s", htkv_strerror(rc));
    }
    report(w, (w->flags & HTKV_INSPECT_LIVE) ? HTKV_INSPECT_NOTE : HTKV_INSPECT_PROBLEM, "", 0,
           "index: key \"%s\": the files hold %s version %llu, the engine returns %s", key,
           op->del ? "a delete at" : "a value at", (unsigned long long)op->version, got);
    return false;
}

/* Compare the rebuilt index with the engine's (invariant 4). */
static void
compare_db(struct walk *w, htkv_db *db)
{
    struct htkv_stats st;
    int kind = (w->flags & HTKV_INSPECT_LIVE) ? HTKV_INSPECT_NOTE : HTKV_INSPECT_PROBLEM;
    if (htkv_stats(db, &st) != 0) {
        report(w, HTKV_INSPECT_PROBLEM, "", 0, "index: htkv_stats failed");
        return;
    }
    if (st.live_keys != w->sum->live_keys) {
        report(w, kind, "", 0, "index: the engine has %llu live keys, the files %llu",
               (unsigned long long)st.live_keys, (unsigned long long)w->sum->live_keys);
    }
    if (st.last_version != w->sum->max_version) {
        report(w, kind, "", 0, "index: the engine's last version is %llu, the files' %llu",
               (unsigned long long)st.last_version, (unsigned long long)w->sum->max_version);
    }
    if (w->flags & HTKV_INSPECT_LIVE) {
        return; /* the other process keeps writing: key-by-key differences mean nothing */
    }
    uint64_t mismatches = 0;
    for (size_t i = 0; w->idx.slots != NULL && i <= w->idx.mask; i++) {
        if (w->idx.slots[i].op.key != NULL) {
            (void)compare_key(w, db, &w->idx.slots[i].op, &mismatches);
        }
    }
    if (mismatches > INSPECT_KEY_REPORTS) {
        report(w, kind, "", 0, "index: %llu more keys differ",
               (unsigned long long)(mismatches - INSPECT_KEY_REPORTS));
    }
}

/* ---- verify --------------------------------------------------------------------------------- */

static int
walk_segments(struct walk *w)
{
    for (uint32_t s = 0; s < w->shard_count; s++) {
        const uint64_t *ids = w->shards[s].ids.p;
        for (size_t i = 0; i < w->shards[s].ids.n; i++) {
            char rel[64];
            struct stat st;
            snprintf(rel, sizeof(rel), "shard-%03u/%012llu.seg", s, (unsigned long long)ids[i]);
            if (fstatat(w->dir_fd, rel, &st, 0) == 0) {
                w->total += (uint64_t)st.st_size;
            }
        }
        w->sum->segments += w->shards[s].ids.n;
    }
    int rc = 0;
    for (uint32_t s = 0; s < w->shard_count && rc == 0; s++) {
        const uint64_t *ids = w->shards[s].ids.p;
        size_t n = w->shards[s].ids.n;
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = walk_segment(w, s, ids[i], i + 1 == n);
        }
    }
    return rc;
}

static void
walk_free(struct walk *w)
{
    for (uint32_t s = 0; w->shards != NULL && s < w->shard_count; s++) {
        vec_free(&w->shards[s].ids);
    }
    htkv_mem_free(w->shards);
    htkv_mem_free(w->idx.slots);
    vec_free(&w->parts);
    vec_free(&w->parked);
    vec_free(&w->aborted);
    vec_free(&w->gone);
    vec_free(&w->ends);
    const struct imap *m = w->maps.p;
    for (size_t i = 0; i < w->maps.n; i++) {
        munmap(m[i].p, m[i].len);
    }
    vec_free(&w->maps);
    htkv_mem_free(w->vbuf);
    if (w->dir_fd >= 0) {
        close(w->dir_fd);
    }
}

int
htkv_inspect_verify(const char *dir, unsigned flags, htkv_db *db, struct htkv_inspect_summary *out,
                    htkv_inspect_issue_fn issue_fn, htkv_inspect_progress_fn progress_fn, void *ctx)
{
    if (dir == NULL || out == NULL) {
        return htkv_einval(__func__);
    }
    memset(out, 0, sizeof(*out));
    struct walk w = { .dir = dir,
                      .flags = flags,
                      .sum = out,
                      .issue_fn = issue_fn,
                      .progress_fn = progress_fn,
                      .ctx = ctx,
                      .next_seg_id = 1 };
    w.dir_fd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w.dir_fd < 0) {
        int rc = errno == ENOENT || errno == ENOTDIR ? HTKV_ENOTFOUND : -errno;
        htkv_set_error("%s: cannot open directory", dir);
        return rc;
    }
    uint64_t number = 0;
    int rc = walk_current(&w, &number);
    if (rc == 0) {
        out->manifest_number = number;
        char rel[64];
        struct stat st;
        snprintf(rel, sizeof(rel), "MANIFEST-%06llu", (unsigned long long)number);
        w.total = fstatat(w.dir_fd, rel, &st, 0) == 0 ? (uint64_t)st.st_size : 0;
        rc = walk_manifest_file(&w, number);
    }
    if (rc == 0) {
        rc = walk_segments(&w);
    }
    if (rc == 0) {
        walk_leftovers(&w);
        rc = resolve_parts(&w);
    }
    for (size_t i = 0; rc == 0 && w.idx.slots != NULL && i <= w.idx.mask; i++) {
        if (w.idx.slots[i].op.key != NULL) {
            w.idx.slots[i].op.del ? out->tombstones++ : out->live_keys++;
        }
    }
    /* recover_versions(): recovery resumes after the manifest's applied mark and batch floor
     * too (a delete compacted away leaves no record of its version). */
    if (w.version_applied > out->max_version) {
        out->max_version = w.version_applied;
    }
    if (w.batch_floor > out->max_version) {
        out->max_version = w.batch_floor;
    }
    if (rc == 0 && db != NULL) {
        compare_db(&w, db);
    }
    walk_free(&w);
    return rc == 1 ? 0 : rc; /* 1: the walk stopped at a problem it reported */
}

/* ---- figures of an open store ---------------------------------------------------------------- */

/* Whether segment @p s has a hint file beside it (present; htkvctl verify checks it). */
static bool
seg_hint_present(const struct seg *s)
{
    char hint[4200];
    htkv_hint_path(hint, sizeof(hint), s->path);
    return access(hint, F_OK) == 0;
}

int
htkv_inspect_segments(htkv_db *db, htkv_inspect_seg_fn fn, void *ctx)
{
    if (db == NULL || fn == NULL) {
        return htkv_einval(__func__);
    }
    int rc = 0;
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        struct shard *sh = db_shard(db, i);
        /* Copy under the lock, call back without it: the callback may use the handle. */
        pthread_mutex_lock(&sh->lock);
        size_t n = sh->nsegs;
        struct htkv_inspect_seg *segs = htkv_mem_calloc(n ? n : 1, sizeof(*segs));
        for (size_t k = 0; segs != NULL && k < n; k++) {
            const struct seg *s = sh->segs[k];
            segs[k] = (struct htkv_inspect_seg){
                .shard = i,
                .id = s->id,
                .file_bytes = s->file_bytes,
                .data_bytes = s->tail - SEG_DATA_OFF,
                .records = s->records,
                .live_bytes = atomic_load_explicit(&s->live_bytes, memory_order_relaxed),
                .dead_bytes = atomic_load_explicit(&s->dead_bytes, memory_order_relaxed),
                .sealed = s->sealed,
                .hint = seg_hint_present(s),
            };
        }
        pthread_mutex_unlock(&sh->lock);
        if (segs == NULL) {
            return -ENOMEM;
        }
        for (size_t k = 0; k < n && rc == 0; k++) {
            rc = fn(&segs[k], ctx);
        }
        htkv_mem_free(segs);
    }
    return rc;
}

int
htkv_inspect_store(htkv_db *db, struct htkv_inspect_store *out)
{
    if (db == NULL || out == NULL) {
        return htkv_einval(__func__);
    }
    HTKV_ASSERT(db->man != NULL);
    *out = (struct htkv_inspect_store){ .format = db->man->format,
                                        .shard_count = db->man->shard_count,
                                        .manifest_number = db->man->number,
                                        .manifest_bytes = db->man->file_bytes,
                                        .next_seg_id = db->man->next_seg_id };
    return 0;
}

/* ---- locking -------------------------------------------------------------------------------- */

int
htkv_inspect_lock_shared(const char *dir, int *fd_out)
{
    if (dir == NULL || fd_out == NULL) {
        return htkv_einval(__func__);
    }
    *fd_out = -1;
    char path[INSPECT_PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/LOCK", dir) >= (int)sizeof(path)) {
        return -ENAMETOOLONG;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = errno == ENOENT || errno == ENOTDIR ? HTKV_ENOTFOUND : -errno;
        htkv_set_error("%s: no store here (no LOCK file)", dir);
        return rc;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        int rc = errno == EWOULDBLOCK ? HTKV_ELOCKED : -errno;
        htkv_set_error("%s: the store is open for writing in another handle or process", dir);
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

void
htkv_inspect_unlock(int fd)
{
    if (fd >= 0) {
        close(fd); /* releases the flock */
    }
}

/* ---- unlocked read-only open --------------------------------------------------------------- */

int
htkv_inspect_open_unlocked(const htkv_config *cfg, htkv_db **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (cfg == NULL || out == NULL || !cfg->read_only || cfg->data_dir == NULL) {
        return htkv_einval(__func__);
    }
    int rc;
    for (int t = 1;; t++) {
        rc = htkv_db_open(cfg, false, out);
        if (rc != HTKV_ECORRUPT || t == INSPECT_OPEN_TRIES) {
            break;
        }
        /* Damage followed by valid records may be a record the writer was still copying. */
        struct timespec ts = { 0, INSPECT_OPEN_WAIT_NS };
        nanosleep(&ts, NULL);
    }
    return rc;
}

int
htkv_inspect_close(htkv_db *db)
{
    return htkv_close(db);
}
