/*
 * verify_int.h - what the files of the verify walk share (private to engine/verify*.c): the
 * walk's state (struct walk), its small sorted containers, the rebuilt index, and the steps one
 * file hands another.
 *
 * The walk is cut by what it reads: verify_manifest.c reads CURRENT, the manifest and the
 * directory listings (the files beside the walked ones); verify_seg.c reads the segments and
 * their hint files; verify_walk.c holds what both report into (findings, the rebuilt index);
 * verify.c drives them (htkv_inspect_verify()), resolves cross-shard batches, compares the
 * result with an open handle, and holds the inspection of an open store, the shared lock and
 * the unlocked open.
 *
 * Invariants (those of the walk: see verify.c)
 *   1. Nothing reachable from here writes to the store directory.
 *   2. Keys of struct iop point into segment mappings listed in walk.maps, unmapped only by
 *      htkv_verify_walk_free().
 *   3. struct idval vectors are sorted by id, with one entry per id.
 *
 * Includes: verify.h (the public types of the walk) and the base layer (internal.h).
 */
#ifndef HTKV_ENGINE_VERIFY_INT_H
#define HTKV_ENGINE_VERIFY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/verify.h"

/* ---- small containers ----------------------------------------------------------------------- */

struct vec {
    void *p;
    size_t n, cap;
};

static inline int
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

static inline void
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
static inline size_t
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

static inline const struct idval *
idval_find(const struct vec *v, uint64_t id)
{
    const struct idval *a = v->p;
    size_t i = idval_lower(v, id);
    return i < v->n && a[i].id == id ? &a[i] : NULL;
}

/* Insert {@p id, @p val}, or raise the value of @p id to @p val. 0 or -ENOMEM. */
static inline int
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

static inline void
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

/* A mapping kept until the end of the walk. */
struct imap {
    void *p;
    size_t len;
};

/* ---- rebuilt index (verify_walk.c): open addressing, linear probing
 * ----------------------------------------- */

struct islot {
    struct iop op; /* op.key == NULL: empty */
};

struct iindex {
    struct islot *slots;
    size_t mask;
    size_t used;
};

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

/* ---- verify_walk.c: findings, the rebuilt index, the end of a walk ----------------------------
 */

/* Count a finding and pass it to the issue callback (@p file relative to the store). */
void htkv_verify_report(struct walk *w, int kind, const char *file, uint64_t off, const char *fmt,
                        ...) __attribute__((format(printf, 5, 6)));

/* Kind of a finding that recovery handles by itself but that --strict counts as a problem. */
int htkv_verify_tail_kind(const struct walk *w);

/* Install @p op unless a newer version of its key is there (recover_install()'s rule). 0 or
 * -ENOMEM. */
int htkv_verify_index_install(struct iindex *ix, const struct iop *op);

/* Free what the walk holds: containers, the index, the segment mappings, the directory. */
void htkv_verify_walk_free(struct walk *w);

/* ---- verify_manifest.c: CURRENT, the manifest, the files beside them ------------------------ */

/* Read CURRENT (man_read_current()); on damage, fall back to the newest MANIFEST-* there is.
 * Returns 0 (*number set), 1 (nothing to walk), HTKV_ENOTFOUND or -errno. */
int htkv_verify_walk_current(struct walk *w, uint64_t *number);

/* Read and walk MANIFEST-@p number into @p w. Returns 0, 1 (cannot go on), -errno. */
int htkv_verify_walk_manifest(struct walk *w, uint64_t number);

/* Report manifests CURRENT does not name, shard directories that cannot be listed, and segment
 * and hint files the manifest does not list. */
void htkv_verify_walk_leftovers(struct walk *w);

/* ---- verify_seg.c: the segments ------------------------------------------------------------- */

/* Walk every segment the manifest lists, shard by shard. 0 or -errno. */
int htkv_verify_walk_segments(struct walk *w);

#endif /* HTKV_ENGINE_VERIFY_INT_H */
