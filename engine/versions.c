/*
 * versions.c - version allocation and its reservations in the manifest (shard layer; see
 * versions.h for the invariants). Calls the manifest and the base layer only.
 */
#include "engine/versions.h"

#include "engine/manifest.h"

int
htkv_versions_reserve(struct versions *ver, uint64_t v)
{
    if (ver->read_only) {
        return -EROFS;
    }
    uint64_t hwm =
        v > REC_VERSION_MAX - MAN_VERSION_BLOCK ? REC_VERSION_MAX : v + MAN_VERSION_BLOCK;
    int rc = htkv_manifest_set_versions(ver->man, hwm, 0, false);
    if (rc != 0) {
        htkv_set_error("%s: cannot reserve versions in the manifest: %s", ver->dir,
                       htkv_strerror(rc));
        return rc;
    }
    /* The manifest's value is the larger of the concurrent reservations. */
    uint64_t cur = atomic_load_explicit(&ver->hwm, memory_order_relaxed);
    while (cur < hwm && !atomic_compare_exchange_weak_explicit(
                            &ver->hwm, &cur, hwm, memory_order_release, memory_order_relaxed)) {
    }
    return 0;
}

uint64_t
htkv_versions_latest(struct versions *ver)
{
    uint64_t next = atomic_load_explicit(&ver->next, memory_order_acquire);
    uint64_t latest = next != ver->open_next ? next - 1 : ver->latest_at_open;
    uint64_t sub = atomic_load_explicit(&ver->submit_hi, memory_order_acquire);
    latest = sub > latest ? sub : latest;
    return latest > ver->latest_at_open ? latest : ver->latest_at_open;
}

int
htkv_versions_exhausted(void)
{
    htkv_set_error("the store's versions are used up (the largest, %llu, is taken)",
                   (unsigned long long)REC_VERSION_MAX);
    return -EOVERFLOW;
}

static int
version_not_above(uint64_t v, uint64_t latest)
{
    htkv_set_error("version %llu is not above the latest version %llu", (unsigned long long)v,
                   (unsigned long long)latest);
    return -ERANGE;
}

int
htkv_versions_take(struct versions *ver, uint64_t v)
{
    if (v > REC_VERSION_MAX) {
        htkv_set_error("version %llu is above the largest version %llu", (unsigned long long)v,
                       (unsigned long long)REC_VERSION_MAX);
        return -ERANGE;
    }
    if (v <= ver->latest_at_open) {
        return version_not_above(v, htkv_versions_latest(ver));
    }
    int rc = versions_check(ver, v);
    if (rc != 0) {
        return rc;
    }
    uint64_t cur = atomic_load_explicit(&ver->next, memory_order_relaxed);
    if (v >= ver->open_next) {
        do {
            if (v < cur) {
                return version_not_above(v, htkv_versions_latest(ver));
            }
        } while (!atomic_compare_exchange_weak_explicit(
            &ver->next, &cur, v + 1, memory_order_relaxed, memory_order_relaxed));
        return 0;
    }
    uint64_t hi = atomic_load_explicit(&ver->submit_hi, memory_order_relaxed);
    do {
        if (v <= hi || atomic_load_explicit(&ver->next, memory_order_relaxed) != cur ||
            cur != ver->open_next) {
            return version_not_above(v, htkv_versions_latest(ver));
        }
    } while (!atomic_compare_exchange_weak_explicit(&ver->submit_hi, &hi, v, memory_order_release,
                                                    memory_order_relaxed));
    return 0;
}

void
htkv_versions_raise(struct versions *ver, uint64_t v)
{
    uint64_t next = atomic_load(&ver->next);
    atomic_store(&ver->next, next > v ? next : v + 1);
    uint64_t hi = atomic_load(&ver->submit_hi);
    while (hi < v && !atomic_compare_exchange_weak(&ver->submit_hi, &hi, v)) {
    }
}
