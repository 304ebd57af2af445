/*
 * verify_seg.c - the verify walk of the segments the manifest lists (htkv_verify_walk_segments(),
 * verify_int.h): each segment's header, every record's framing and checksum, batch framing, the
 * shard of each key, SEAL, the end its records are known to reach (the manifest's MAN_SEG_END or
 * the tail of a whole hint file), and versions above the manifest's reservation. The walk of a
 * segment mirrors recover_seg() (engine/recover.c): a change of its rules must be made here too.
 *
 * A segment's walk is buffered (its findings, its operations, its batch parts) and committed to
 * the walk only once accepted: with HTKV_INSPECT_LIVE, a shard's last segment with a bad record
 * is walked again a few times, because another process may be in the middle of an append there.
 *
 * Layer: lifecycle (with the rest of the verify walk). Calls verify_walk.c (findings, the
 * rebuilt index), the formats layer (the record walk of rec.h, segment and hint constants) and
 * the base layer (checksums, the key hash, fault injection).
 *
 * Invariants
 *   1. Segments are opened O_RDONLY and mapped PROT_READ; nothing here writes.
 *   2. Every record is bounded by htkv_rec_check() (through the record walk) before its key or
 *      payload is read; header and hint fields are checked before they are used.
 *   3. An accepted segment stays mapped until the walk ends (walk.maps): its keys are in the
 *      rebuilt index.
 */
#include "engine/verify_int.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "uring/ur_fault.h"

#define INSPECT_PROGRESS_STEP (4u << 20) /* progress callback about every 4 MiB */
/* Live mode: re-walk a shard's last segment up to 4 times, 20 ms apart (an append takes us). */
#define INSPECT_LIVE_TRIES 4
#define INSPECT_LIVE_WAIT_NS 20000000L

/* A finding of a segment walk, held until the walk is accepted. */
struct ifinding {
    int kind;
    uint64_t off;
    char reason[240];
};

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
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "bad segment magic");
    }
    if (htkv_load32(hd + 60) != htkv_crc32c(0, hd, 60)) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 60, "segment header checksum mismatch");
    }
    if (htkv_load32(hd + 8) > HTKV_FORMAT_VERSION) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 8,
                           "segment format version %u is newer than %u", htkv_load32(hd + 8),
                           HTKV_FORMAT_VERSION);
    }
    if (htkv_load32(hd + 12) != shard) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 12,
                           "header names shard %u, the manifest %u", htkv_load32(hd + 12), shard);
    }
    if (htkv_load64(hd + 16) != id) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 16,
                           "header names segment %llu, the manifest %llu",
                           (unsigned long long)htkv_load64(hd + 16), (unsigned long long)id);
    }
    /* The store the segment belongs to (bytes 24..35), zero in segments of older builds; the
     * rest up to the checksum is not checked (zero as written). */
    uint32_t count = htkv_load32(hd + 24);
    uint64_t seed = htkv_load64(hd + 28);
    if (count != 0 && count != w->shard_count) {
        htkv_verify_report(
            w, HTKV_INSPECT_PROBLEM, rel, 24,
            "header names a store of %u shards, the manifest %u: a segment of another store", count,
            w->shard_count);
    }
    if (seed != 0 && seed != w->hash_seed) {
        htkv_verify_report(
            w, HTKV_INSPECT_PROBLEM, rel, 28,
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
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0,
                               "listed in the manifest but missing");
        } else {
            htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "cannot be opened: %s",
                               strerror(errno));
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
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "shorter than its %u-byte header",
                           SEG_HDR_BYTES);
    } else if ((uint64_t)st.st_size > SEG_BYTES_LIMIT) {
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, rel, 0, "larger than 4 GiB (%llu bytes)",
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
        htkv_verify_report(w, f[i].kind, rel, f[i].off, "%s", f[i].reason);
    }
    int rc = 0;
    const struct iop *ops = sw->ops.p;
    for (size_t i = 0; i < sw->ops.n && rc == 0; i++) {
        rc = htkv_verify_index_install(&w->idx, &ops[i]);
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

/* Walk every listed segment, shard by shard (the last one of a shard may be torn). */
int
htkv_verify_walk_segments(struct walk *w)
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
