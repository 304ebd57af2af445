/*
 * merge.c - merge paths: the key order across every shard's sorted run, so that an iterator over
 * the whole store reads the runs without comparing keys between shards (features layer; the
 * contract is in merge.h).
 *
 * Invariants
 *   1. A published path refers to the run each shard published when it was built, one
 *      reference each, and is valid for new readers only while every shard still publishes that
 *      run and it is exact (path_valid()).
 *   2. db->path changes only under shard 0's lock; the path it replaces is retired through EBR
 *      (shard 0's limbo) and freed by its last reference.
 *   3. A path covers one run per shard of the store (2 to 256 of them): path[i] < nshards, n is
 *      the sum of the runs' lengths, each run's elements appear in order and each exactly once,
 *      and the keys along the path strictly increase (a key lives in one shard).
 *   4. refs counts the published reference and the readers' ones: never taken from zero,
 *      never released below it.
 * May call: the store (its shards), flat.h, EBR and the base layer.
 */
#include "engine/merge.h"

#include "engine/store.h"

/* Does every shard still publish the run @p p was built from, and is it exact? (EBR held.) */
static bool
path_valid(struct htkv_db *db, const struct merge_path *p)
{
    HTKV_ASSERT(p->nshards == db->shard_count); /* invariant 3 */
    for (uint32_t i = 0; i < p->nshards; i++) {
        struct shard *sh = db_shard(db, i);
        const struct shard_run *r = atomic_load_explicit(&sh->run, memory_order_acquire);
        if (r != p->runs[i] || r->gen != htkv_trie_gen(&sh->trie)) {
            return false;
        }
    }
    return true;
}

struct merge_path *
htkv_path_acquire(struct htkv_db *db)
{
    struct merge_path *p = atomic_load_explicit(&db->path, memory_order_acquire);
    if (p == NULL || !path_valid(db, p)) {
        return NULL;
    }
    /* Found published inside the critical section: its published reference still stands. */
    uint64_t refs = atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    HTKV_ASSERT(refs >= 1); /* invariant 4 */
    return p;
}

void
htkv_path_release(struct merge_path *p)
{
    if (p == NULL) {
        return;
    }
    uint64_t refs = atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel);
    HTKV_ASSERT(refs >= 1); /* invariant 4: released once per reference */
    if (refs != 1) {
        return;
    }
    for (uint32_t i = 0; i < p->nshards; i++) {
        htkv_run_release(p->runs[i]);
    }
    htkv_mem_free(p->path);
    htkv_mem_free(p);
}

static void
path_unpublished(void *p)
{
    htkv_path_release(p);
}

/* The sum of the shards' trie generations: it moves whenever any trie changes. */
static uint64_t
db_trie_gens(struct htkv_db *db)
{
    uint64_t g = 0;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        g += htkv_trie_gen(&db_shard(db, i)->trie);
    }
    return g;
}

void
htkv_path_note(struct htkv_db *db, uint64_t keys)
{
    htkv_run_credit_add(&db->path_credit, &db->path_credit_gen, db_trie_gens(db), keys);
}

/* The first 8 bytes of element @p x's key, abbreviated (htkv_key_abbrev()). */
static inline uint64_t
ent_abbrev(const struct run_ent *x)
{
    return htkv_key_abbrev(x->rec + REC_HDR_BYTES, x->klen, 0);
}

/* Merge the runs of @p p into its path: a one-time k-way merge on abbreviated keys (full
 * comparison on ties), an exhausted run's abbreviation pinned above every key. */
static void
path_fill(struct merge_path *p)
{
    uint32_t k = p->nshards;
    uint64_t pos[256] = { 0 };
    uint64_t ab[256];
    bool live[256];
    HTKV_ASSERT(k >= 2 && k <= 256); /* the arrays above and a shard number per byte */
    for (uint32_t s = 0; s < k; s++) {
        live[s] = p->runs[s]->n > 0;
        ab[s] = live[s] ? ent_abbrev(&p->runs[s]->ents[0]) : UINT64_MAX;
    }
    for (uint64_t i = 0; i < p->n; i++) {
        uint32_t best = UINT32_MAX;
        for (uint32_t s = 0; s < k; s++) {
            if (!live[s]) {
                continue;
            }
            if (best == UINT32_MAX || ab[s] < ab[best]) {
                best = s;
                continue;
            }
            const struct run_ent *x = &p->runs[s]->ents[pos[s]];
            const struct run_ent *y = &p->runs[best]->ents[pos[best]];
            if (ab[s] == ab[best] && htkv_key_cmp(x->rec + REC_HDR_BYTES, x->klen,
                                                  y->rec + REC_HDR_BYTES, y->klen) < 0) {
                best = s;
            }
        }
        HTKV_ASSERT(best != UINT32_MAX);
        p->path[i] = (uint8_t)best;
        const struct shard_run *r = p->runs[best];
#ifdef HTKV_DEBUG
        if (i > 0) { /* invariant 3: the key before came from another shard or earlier here */
            uint32_t q = p->path[i - 1];
            const struct run_ent *a = &p->runs[q]->ents[pos[q] - 1], *b = &r->ents[pos[best]];
            HTKV_DASSERT(
                htkv_key_cmp(a->rec + REC_HDR_BYTES, a->klen, b->rec + REC_HDR_BYTES, b->klen) < 0);
        }
#endif
        if (++pos[best] < r->n) {
            ab[best] = ent_abbrev(&r->ents[pos[best]]);
        } else {
            live[best] = false;
        }
    }
    for (uint32_t s = 0; s < k; s++) {
        HTKV_ASSERT(!live[s] && pos[s] == p->runs[s]->n); /* invariant 3: each element once */
    }
}

void
htkv_path_refresh(struct htkv_db *db)
{
    int eager = atomic_load_explicit(&htkv_run_eager, memory_order_relaxed);
    uint32_t k = db->shard_count;
    if (!db->cfg.sorted_runs || db->cfg.verify_checksums == 2 || k < 2 || k > 256) {
        return;
    }
    unsigned slot = htkv_ebr_enter(&db->ebr);
    const struct merge_path *cur = atomic_load_explicit(&db->path, memory_order_acquire);
    bool valid = cur != NULL && path_valid(db, cur);
    htkv_ebr_exit(&db->ebr, slot);
    if (valid) {
        return;
    }
    if (eager < 2) {
        uint64_t keys = 0;
        for (uint32_t i = 0; i < k; i++) {
            keys += htkv_trie_count(&db_shard(db, i)->trie);
        }
        if (eager == 1 || atomic_load_explicit(&db->path_credit, memory_order_relaxed) <
                              RUN_CREDIT_FACTOR * keys) {
            return; /* not earned yet: nothing to allocate */
        }
    }
    bool idle = false;
    if (!atomic_compare_exchange_strong(&db->path_building, &idle, true)) {
        return;
    }
    struct merge_path *p = htkv_mem_alloc(sizeof(*p) + k * sizeof(struct shard_run *));
    if (p == NULL) {
        atomic_store_explicit(&db->path_building, false, memory_order_release);
        return;
    }
    atomic_init(&p->refs, 1);
    p->nshards = 0;
    p->n = 0;
    p->runs = (struct shard_run **)(p + 1);
    p->path = NULL;
    slot = htkv_ebr_enter(&db->ebr);
    for (uint32_t i = 0; i < k; i++) {
        struct shard_run *r = htkv_run_acquire(db_shard(db, i));
        if (r == NULL) {
            break; /* a shard without an exact run: no path */
        }
        p->runs[p->nshards++] = r;
        p->n += r->n;
    }
    htkv_ebr_exit(&db->ebr, slot);
    uint64_t credit = atomic_load_explicit(&db->path_credit, memory_order_relaxed);
    if (p->nshards == k && (eager >= 2 || credit >= RUN_CREDIT_FACTOR * p->n) &&
        (p->path = htkv_mem_alloc(p->n > 0 ? p->n : 1)) != NULL) {
        atomic_store_explicit(&db->path_credit, 0, memory_order_relaxed);
        path_fill(p);
        /* Published under shard 0's lock: its limbo takes the path replaced (no room: the new
         * one is dropped below instead). */
        struct shard *sh0 = db_shard(db, 0);
        pthread_mutex_lock(&sh0->lock);
        if (htkv_shard_limbo_reserve(sh0, 1) == 0) {
            struct merge_path *old = atomic_exchange_explicit(&db->path, p, memory_order_acq_rel);
            if (old != NULL) {
                htkv_shard_retire(sh0, old, path_unpublished);
            }
            p = NULL;
        }
        pthread_mutex_unlock(&sh0->lock);
    }
    htkv_path_release(p); /* not published: frees it and its run references */
    atomic_store_explicit(&db->path_building, false, memory_order_release);
}

void
htkv_path_fini(struct htkv_db *db)
{
    htkv_path_release(atomic_exchange_explicit(&db->path, NULL, memory_order_relaxed));
}
