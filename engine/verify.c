/*
 * verify.c - the verify (fsck) walk of a store and its read-only inspection (API in verify.h):
 * verify walks every file on its own, with the rules of recovery, and reports every problem
 * instead of stopping at the first.
 *
 * Files. verify.c (this file) drives the walk (htkv_inspect_verify()), resolves cross-shard
 * batches, compares the rebuilt index with an open handle, and holds the inspection of an open
 * store (htkv_inspect_segments(), htkv_inspect_store()), the shared lock and the unlocked open;
 * verify_manifest.c walks CURRENT, the manifest and the files beside them; verify_seg.c walks
 * the segments; verify_walk.c holds the walk's findings and rebuilt index (verify_int.h).
 *
 * Layer: lifecycle. Calls the other verify files, the formats layer (hint paths, manifest and
 * segment figures), the base layer, the public API (to compare with an open handle, to close one)
 * and the store (store.h: per-segment and manifest figures of an open store, htkv_db_open()).
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
 * (engine/recover.c). A change of those rules must be made in the verify files too (verify_seg.c,
 * verify_manifest.c); test_htkvctl checks that a clean store verifies clean and that damage is
 * found. The rules, as problems:
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

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/hint.h"
#include "engine/manifest.h"
#include "engine/seg.h"
#include "engine/store.h"
#include "engine/verify_int.h"
#include "uring/ur_fault.h"

/* Per-key differences reported one by one before the rest are summed up in one finding. */
#define INSPECT_KEY_REPORTS 10u
/* Unlocked open: retries of a recovery that met damage followed by valid records (4 x 50 ms). */
#define INSPECT_OPEN_TRIES 4
#define INSPECT_OPEN_WAIT_NS 50000000L
#define INSPECT_PATH_MAX 4096

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
            htkv_verify_report(
                w, htkv_verify_tail_kind(w), rel, p[i].begin_off,
                "batch version %llu: %zu of %u parts committed; recovery does not apply it",
                (unsigned long long)p[i].version, j - i, p[i].parts);
        }
        for (size_t k = i; k < j && complete && rc == 0; k++) {
            for (size_t n = 0; n < p[k].count && rc == 0; n++) {
                rc = htkv_verify_index_install(&w->idx, &ops[p[k].start + n]);
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
    htkv_verify_report(
        w, (w->flags & HTKV_INSPECT_LIVE) ? HTKV_INSPECT_NOTE : HTKV_INSPECT_PROBLEM, "", 0,
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
        htkv_verify_report(w, HTKV_INSPECT_PROBLEM, "", 0, "index: htkv_stats failed");
        return;
    }
    if (st.live_keys != w->sum->live_keys) {
        htkv_verify_report(w, kind, "", 0, "index: the engine has %llu live keys, the files %llu",
                           (unsigned long long)st.live_keys, (unsigned long long)w->sum->live_keys);
    }
    if (st.last_version != w->sum->max_version) {
        htkv_verify_report(
            w, kind, "", 0, "index: the engine's last version is %llu, the files' %llu",
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
        htkv_verify_report(w, kind, "", 0, "index: %llu more keys differ",
                           (unsigned long long)(mismatches - INSPECT_KEY_REPORTS));
    }
}

/* ---- verify --------------------------------------------------------------------------------- */

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
    int rc = htkv_verify_walk_current(&w, &number);
    if (rc == 0) {
        out->manifest_number = number;
        char rel[64];
        struct stat st;
        snprintf(rel, sizeof(rel), "MANIFEST-%06llu", (unsigned long long)number);
        w.total = fstatat(w.dir_fd, rel, &st, 0) == 0 ? (uint64_t)st.st_size : 0;
        rc = htkv_verify_walk_manifest(&w, number);
    }
    if (rc == 0) {
        rc = htkv_verify_walk_segments(&w);
    }
    if (rc == 0) {
        htkv_verify_walk_leftovers(&w);
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
    htkv_verify_walk_free(&w);
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
