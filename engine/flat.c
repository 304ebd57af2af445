/*
 * flat.c - sorted runs: flat copies of a shard's trie for ordered reads (the contract is in
 * flat.h). May call the shard (its lock, trie and limbo), EBR, the record codec and the base
 * layer; never the store.
 *
 * Invariants
 *   1. A published run's elements are, in strictly increasing key order, the head entries the
 *      trie held at generation run->gen: the builder read the generation before its walk and
 *      found it unchanged under the shard lock after it, and every change of the trie bumps the
 *      generation after it is published, under that lock.
 *   2. sh->run changes only under the shard lock. The run it replaces is retired through EBR,
 *      whose callback drops the published reference: a reader that loaded the pointer inside
 *      its critical section can still take a reference (refs >= 1 until the callback runs), and
 *      the last reference frees it.
 *   3. No element refers to an index entry: a reader that needs the entry (RUN_SLOW, or a head
 *      newer than its snapshot) looks the key up in the trie.
 */
#include "engine/flat.h"

#include "engine/rec.h"
#include "engine/shard.h"

/* Shards smaller than this are never given a run: their trie walk is as short as a search. */
#define RUN_MIN_KEYS 32u

static size_t
run_size(uint64_t n)
{
    return sizeof(struct shard_run) + n * sizeof(struct run_ent);
}

struct shard_run *
htkv_run_acquire(struct shard *sh)
{
    struct shard_run *r = atomic_load_explicit(&sh->run, memory_order_acquire);
    if (r == NULL || r->gen != htkv_trie_gen(&sh->trie)) {
        return NULL;
    }
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void
htkv_run_release(struct shard_run *r)
{
    if (r != NULL && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) {
        htkv_mem_free(r);
    }
}

/* EBR's free function for a retired run: drops the published reference. */
static void
run_unpublished(void *p)
{
    htkv_run_release(p);
}

uint64_t
htkv_run_bytes(const struct shard *sh)
{
    const struct shard_run *r =
        atomic_load_explicit((struct shard_run * _Atomic *)&sh->run, memory_order_relaxed);
    return r == NULL ? 0 : run_size(r->n);
}

/* Keys copied per EBR critical section: a long walk must not hold back reclamation. */
#define RUN_WALK_CHUNK 4096u

/* The walk: copy the trie's head entries into @p r (room for @p cap), RUN_WALK_CHUNK keys per
 * critical section, each later one re-seeking past the last key copied. 0, -EAGAIN (the trie
 * changed since generation @p gen, or it grew past @p cap: the run would be stale), or -ENOMEM
 * from the cursor. */
static int
run_fill(struct shard *sh, struct shard_run *r, uint64_t cap, uint64_t gen)
{
    struct shard_env *env = sh->env;
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &sh->trie);
    uint64_t n = 0;
    int rc = 0;
    for (bool more = true; more && rc == 0;) {
        unsigned slot = htkv_ebr_enter(env->ebr);
        /* Unchanged since the walk began: no record copied so far was moved, so the last key
         * (in a segment mapping) is still mapped, and stays so until this section ends. */
        if (htkv_trie_gen(&sh->trie) != gen) {
            htkv_ebr_exit(env->ebr, slot);
            rc = -EAGAIN;
            break;
        }
        const struct run_ent *last = n > 0 ? &r->ents[n - 1] : NULL;
        rc = last != NULL ? htkv_trie_cursor_seek(&c, last->rec + REC_HDR_BYTES, last->klen)
                          : htkv_trie_cursor_seek(&c, NULL, 0);
        uint32_t k = 0;
        struct hidx_ent *e = NULL;
        while (rc == 0 && k < RUN_WALK_CHUNK && (e = htkv_trie_cursor_next(&c)) != NULL) {
            if (last != NULL && k == 0 && e->key_len == last->klen &&
                memcmp(hidx_ent_rec(e) + REC_HDR_BYTES, last->rec + REC_HDR_BYTES, last->klen) ==
                    0) {
                last = NULL; /* the seek lands on the last key copied */
                continue;
            }
            if (n == cap) {
                rc = -EAGAIN;
                break;
            }
            uint32_t vlen = e->rec_bytes - REC_HDR_BYTES - e->key_len;
            uint32_t flags = e->del ? RUN_DEL : 0;
            if (!e->del && shard_ent_check(env, e) != 0) {
                flags |= RUN_SLOW; /* the error is reported by the read that meets it */
            }
            HTKV_ASSERT(vlen <= RUN_VLEN_MASK);
            r->ents[n++] = (struct run_ent){ .rec = hidx_ent_rec(e),
                                             .version = e->version,
                                             .klen = e->key_len,
                                             .vflags = vlen | flags };
            k++;
        }
        if (rc == 0) {
            rc = htkv_trie_cursor_error(&c);
        }
        more = e != NULL;
        htkv_ebr_exit(env->ebr, slot);
    }
    htkv_trie_cursor_fini(&c);
    r->n = n;
    return rc;
}

/* Build and publish a run for @p sh now, unless another thread is building one. 0 (published,
 * or left to the other builder), -EAGAIN (the trie changed during the walk: nothing published),
 * -ENOMEM, or -ENOTSUP (sorted_runs off, verify_checksums = 2, or the trie is not built yet). */
static int
run_build(struct shard *sh)
{
    struct shard_env *env = sh->env;
    if (!env->sorted_runs || env->verify_checksums == 2 ||
        !atomic_load_explicit(&sh->trie_ready, memory_order_acquire)) {
        return -ENOTSUP;
    }
    bool idle = false;
    if (!atomic_compare_exchange_strong(&sh->run_building, &idle, true)) {
        return 0;
    }
    atomic_store_explicit(&sh->run_credit, 0, memory_order_relaxed);
    uint64_t gen = htkv_trie_gen(&sh->trie);
    /* A few more than counted: keys inserted before the walk reaches them still fit (the run is
     * then dropped for its generation, but the walk need not stop short). */
    uint64_t cap = htkv_trie_count(&sh->trie) + 16;
    struct shard_run *r = htkv_mem_alloc_in(sh->arena, run_size(cap));
    int rc = r == NULL ? -ENOMEM : run_fill(sh, r, cap, gen);
    if (rc == 0) {
        atomic_init(&r->refs, 1);
        r->gen = gen;
        pthread_mutex_lock(&sh->lock);
        if (htkv_trie_gen(&sh->trie) != gen ||
            !atomic_load_explicit(&sh->trie_ready, memory_order_relaxed)) {
            rc = -EAGAIN;
        } else if (htkv_shard_limbo_reserve(sh, 1) != 0) {
            rc = -ENOMEM; /* no room to retire the run it would replace */
        } else {
            struct shard_run *old = atomic_exchange_explicit(&sh->run, r, memory_order_acq_rel);
            if (old != NULL) {
                htkv_shard_retire(sh, old, run_unpublished);
            }
            r = NULL;
        }
        pthread_mutex_unlock(&sh->lock);
    }
    htkv_mem_free(r);
    atomic_store_explicit(&sh->run_building, false, memory_order_release);
    return rc;
}

/* Test hook (flat.h): build at every query whatever the credit. */
_Atomic int htkv_run_eager = 0;

void
htkv_run_note(struct shard *sh, uint64_t keys)
{
    htkv_run_credit_add(&sh->run_credit, &sh->run_credit_gen, htkv_trie_gen(&sh->trie), keys);
}

void
htkv_run_refresh(struct shard *sh)
{
    struct shard_env *env = sh->env;
    if (!env->sorted_runs || env->verify_checksums == 2) {
        return;
    }
    uint64_t count = htkv_trie_count(&sh->trie);
    bool eager = atomic_load_explicit(&htkv_run_eager, memory_order_relaxed) >= 1 && count > 0;
    if (!eager &&
        (count < RUN_MIN_KEYS ||
         atomic_load_explicit(&sh->run_credit, memory_order_relaxed) < RUN_CREDIT_FACTOR * count)) {
        return;
    }
    unsigned slot = htkv_ebr_enter(env->ebr);
    const struct shard_run *r = atomic_load_explicit(&sh->run, memory_order_acquire);
    bool exact = r != NULL && r->gen == htkv_trie_gen(&sh->trie);
    htkv_ebr_exit(env->ebr, slot);
    if (!exact) {
        (void)run_build(sh);
    }
}

void
htkv_run_drop(struct shard *sh)
{
    struct shard_run *old = atomic_exchange_explicit(&sh->run, NULL, memory_order_acq_rel);
    if (old != NULL) {
        htkv_shard_retire(sh, old, run_unpublished);
    }
}

void
htkv_run_fini(struct shard *sh)
{
    htkv_run_release(atomic_exchange_explicit(&sh->run, NULL, memory_order_relaxed));
}

uint64_t
htkv_run_lower_bound(const struct shard_run *r, const unsigned char *key, uint32_t klen,
                     bool strict)
{
    uint64_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const struct run_ent *x = &r->ents[mid];
        int c = htkv_key_cmp(x->rec + REC_HDR_BYTES, x->klen, key, klen);
        if (c < 0 || (strict && c == 0)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

uint64_t
htkv_run_prefix_end(const struct shard_run *r, const unsigned char *prefix, uint32_t plen)
{
    /* Past the prefix's keys exactly when the key's first min(klen, plen) bytes compare above
     * the prefix's: a monotone predicate over the sorted elements. */
    uint64_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const struct run_ent *x = &r->ents[mid];
        uint32_t n = x->klen < plen ? x->klen : plen;
        if (memcmp(x->rec + REC_HDR_BYTES, prefix, n) > 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}
