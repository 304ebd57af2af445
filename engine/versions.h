/*
 * versions.h - version allocation for one store's writes (shard layer).
 *
 * Versions never repeat (ARCHITECTURE.md, "Versions"). next is the next version a local write
 * takes; hwm mirrors the manifest's reservation: a version above it is handed out only after
 * htkv_versions_reserve() made a higher one durable. At open, next starts above the reservation
 * (versions a crash may have taken back are skipped), latest_at_open is the latest version
 * applied before, and open_next the first version of this open; submit_hi is the highest version
 * htkv_submit() applied below open_next. htkv_versions_latest() combines them.
 *
 * Invariants: hwm only grows, and never above what the manifest holds durably; every version
 * handed out is <= hwm and <= REC_VERSION_MAX; latest_at_open < open_next <= next.
 * May call: the base layer, the record codec (REC_VERSION_MAX) and the manifest.
 */
#ifndef HTKV_ENGINE_VERSIONS_H
#define HTKV_ENGINE_VERSIONS_H

#include <stdatomic.h>

#include "engine/internal.h"
#include "engine/rec.h"

struct manifest;

struct versions {
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t next;
    _Atomic uint64_t hwm;
    _Atomic uint64_t submit_hi;
    uint64_t latest_at_open;
    uint64_t open_next;
    /* Where reservations go; set at open before any version is handed out. */
    struct manifest *man;
    const char *dir; /* the store's directory, for error details */
    bool read_only;  /* reservations fail with -EROFS */
};

/*
 * Make versions up to @p v safe to hand out: record a reservation above @p v in the manifest
 * (one fdatasync) unless one is already there. 0, -EROFS on a read-only handle, or the error of
 * the manifest write (the version must then not be used).
 */
int htkv_versions_reserve(struct versions *ver, uint64_t v);

/* Version @p v may be handed out: 0 (the usual case, one load), or as htkv_versions_reserve. */
static inline int
versions_check(struct versions *ver, uint64_t v)
{
    if (HTKV_LIKELY(v <= atomic_load_explicit(&ver->hwm, memory_order_acquire))) {
        return 0;
    }
    return htkv_versions_reserve(ver, v);
}

/* Every version up to REC_VERSION_MAX is used (only a store restored or recovered from input
 * that claims versions that high gets here): sets the error detail, returns -EOVERFLOW. */
int htkv_versions_exhausted(void);

/*
 * Take the next local version into *@p out: 0, -EOVERFLOW (htkv_versions_exhausted()) or the
 * error of the reservation. A version taken and then refused is lost, never handed out again.
 */
static inline int
versions_next(struct versions *ver, uint64_t *out)
{
    uint64_t v = atomic_fetch_add_explicit(&ver->next, 1, memory_order_relaxed);
    if (HTKV_UNLIKELY(v > REC_VERSION_MAX)) {
        return htkv_versions_exhausted();
    }
    int rc = versions_check(ver, v);
    if (HTKV_UNLIKELY(rc != 0)) {
        return rc;
    }
    *out = v;
    return 0;
}

/*
 * Claim the caller's version @p v (htkv_submit()): it must be above every version applied so far
 * (htkv_versions_latest()), so that each shard still installs versions in increasing order. A
 * version at or above this open's first local version moves the local counter past it; one below
 * (a replica re-applying the log after a reopen skipped the versions a crash may have taken
 * back) is tracked in submit_hi, and allowed only while no local write took a version in this
 * open. 0, -ERANGE, or the error of reserving it (versions_check()).
 */
int htkv_versions_take(struct versions *ver, uint64_t v);

/* Version @p v (reserved) is now applied, all at once (a restore, every shard's locks held): the
 * next local version and submit_hi move above and up to it, never back. */
void htkv_versions_raise(struct versions *ver, uint64_t v);

/* The latest version applied (htkv_latest_version()): never below one acknowledged before. */
uint64_t htkv_versions_latest(struct versions *ver);

#endif /* HTKV_ENGINE_VERSIONS_H */
