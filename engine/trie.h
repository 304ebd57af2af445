/*
 * trie.h - a shard's ordered index: a crit-bit tree (binary PATRICIA trie) from byte-string keys to
 * caller values, with one writer and lock-free readers. It backs prefix and range queries; point
 * reads go through the hash index (hashindex.h).
 *
 * Keys are 1..HTKV_KEY_MAX arbitrary bytes (0x00 and 0xFF included), ordered by unsigned byte
 * comparison with a proper prefix before its extensions ("a" < "a\0" < "ab"). The trie does not
 * copy keys: a value is a caller pointer (8-byte aligned) to a record that holds its key, and the
 * key_of callback given to htkv_trie_init() reads it. Leaves are those value pointers, tagged; the
 * trie allocates only internal nodes, one per pair of keys that diverge: n keys use n - 1 nodes.
 * The design and the invariants are at the top of trie.c.
 *
 * Concurrency. One writer at a time calls insert, delete and fini (the caller serialises them
 * with a lock). Any number of readers call get and the cursor functions concurrently, without a
 * lock, each inside an EBR critical section (htkv_ebr_enter()/htkv_ebr_exit(), ebr.h). The writer
 * never changes a node a reader can reach except by one release store into one child slot, and it
 * hands each internal node it unlinks to the retire callback, which must defer the free (through
 * htkv_ebr_retire() with htkv_trie_node_free()) until every reader that could hold it has left.
 * Values deleted or replaced must be retired the same way by the caller: readers may still
 * return them.
 *
 * What a reader sees while the writer works:
 *   - htkv_trie_get() finds a key that is in the trie during the whole call; a key inserted or
 *     deleted during the call may or may not be found; a key replaced during the call is found
 *     with the old or the new value.
 *   - A cursor is positioned by htkv_trie_cursor_seek() at time t0 and read with
 *     htkv_trie_cursor_next(), all inside one critical section. Then:
 *       1. It never crashes and never reads freed memory.
 *       2. Keys come in strictly increasing order, each at most once, every one >= the seek key.
 *       3. Every value returned was in the trie at some moment between t0 and its return (it may
 *          have been deleted or replaced since).
 *       4. Every key >= the seek key that stays in the trie from t0 until the cursor returns a
 *          larger key or reaches the end is returned, exactly once, with a value it had at some
 *          moment in that interval (a replaced key with either value).
 *       5. Keys inserted or deleted between t0 and the end may or may not be returned.
 *     With no concurrent writer the cursor returns exactly the keys >= the seek key, in order.
 *   - A cursor used after its critical section ended may reach freed memory: seek again first.
 */
#ifndef HTKV_ENGINE_TRIE_H
#define HTKV_ENGINE_TRIE_H

#include <stdatomic.h>

#include "engine/internal.h"

/* Longest key. Critical positions are (byte index << 4) | bit rank: 65535 << 4 | 8 < 2^20. */
#define TRIE_KEY_MAX HTKV_KEY_MAX
/* Seek attempts before a cursor falls back to a scan from the smallest key (trie.c explains). */
#define TRIE_SEEK_TRIES 16u

struct trie_node; /* private to trie.c */

/*
 * Return the key of @p val: its bytes (view: valid while @p val is) and, through @p len, its
 * length (1..TRIE_KEY_MAX). Must be a pure function of @p val, callable from any thread.
 */
typedef const unsigned char *(*htkv_trie_key_fn)(const void *val, uint32_t *len, void *ctx);
/* Take @p node, just unlinked, and free it with htkv_trie_node_free() once no reader holds it. */
typedef void (*htkv_trie_retire_fn)(void *ctx, void *node);

/* A trie; storage owned by the caller. Fields are private to trie.c. */
struct trie {
    _Atomic uintptr_t root; /* 0 = empty; else a tagged child (trie.c) */
    htkv_trie_key_fn key_of;
    htkv_trie_retire_fn retire;
    void *ctx;
    struct trie_node *spare; /* htkv_trie_reserve(): nodes for the next new keys, linked */
    unsigned arena;          /* nodes come from it (htkv_mem_alloc_in()); 0 = default */
    uint32_t nspare;
    /* Counters change on every write: a line of their own keeps readers' root line quiet. */
    _Alignas(HTKV_CACHELINE) _Atomic uint64_t key_count;
    _Atomic uint64_t node_count;
    _Atomic uint64_t gen; /* bumped after every change of the key -> value map (htkv_trie_gen) */
};

/* A reader's position in a trie; storage owned by the caller. Fields are private to trie.c. */
struct trie_cursor {
    const struct trie *trie;  /* kept from init until fini */
    struct trie_node **stack; /* nodes whose right subtree is still to visit, deepest last */
    uint32_t depth;           /* entries in stack */
    uint32_t cap;             /* capacity of stack */
    uintptr_t pend;           /* subtree to visit before popping the stack; 0 = none */
    int err;                  /* 0 or -ENOMEM: the stack could not grow */
    uint32_t seek_tries;      /* TRIE_SEEK_TRIES; tests lower it to force the fallback */
};

/**
 * Make @p t an empty trie.
 * @param[out] t       Caller storage; kept until htkv_trie_fini().
 * @param[in]  key_of  Returns a value's key; kept.
 * @param[in]  retire  Receives each unlinked internal node; kept.
 * @param[in]  ctx     Passed to both callbacks; kept.
 * @context Before any other call on @p t. Does not allocate.
 */
void htkv_trie_init(struct trie *t, htkv_trie_key_fn key_of, htkv_trie_retire_fn retire, void *ctx);

/**
 * Free every internal node of @p t at once (values are the caller's and are left alone).
 * @param[in,out] t  Trie from htkv_trie_init(); empty afterwards. NULL is allowed.
 * @context The writer, with no reader left in @p t. O(nodes), no allocation.
 */
void htkv_trie_fini(struct trie *t);

/**
 * Insert @p val under its key, or replace the value already stored under that key.
 * @param[in,out] t     The trie.
 * @param[in]     val   The value, 8-byte aligned; kept until deleted, replaced or fini. Its key
 *                      must be readable by readers before the call.
 * @param[out]    prev  The value replaced (the caller retires it), or NULL for a new key.
 * @return 0, or -ENOMEM (a new key needed a node and none could be allocated; @p t unchanged).
 * @context The writer. Lock-free readers see either the old or the new state, never a mixture.
 */
HTKV_MUST_USE int htkv_trie_insert(struct trie *t, void *val, void **prev);

/**
 * Make sure the next @p n htkv_trie_insert() calls cannot fail: keep n nodes in reserve.
 * @return 0 or -ENOMEM. @context The writer.
 */
HTKV_MUST_USE int htkv_trie_reserve(struct trie *t, uint32_t n);

/**
 * Remove @p key. The internal node it frees goes to the retire callback.
 * @param[in,out] t     The trie.
 * @param[in]     key   0..TRIE_KEY_MAX bytes (the empty key is never present); borrowed.
 * @return The removed value (the caller retires it), or NULL when @p key is absent.
 * @context The writer. Does not allocate.
 */
void *htkv_trie_delete(struct trie *t, const void *key, uint32_t klen);

/**
 * Look @p key up.
 * @param[in] t    The trie.
 * @param[in] key  0..TRIE_KEY_MAX bytes (the empty key is never present); borrowed.
 * @return The value (view: valid until the critical section ends), or NULL.
 * @context Any thread, inside an EBR critical section, or the writer. Lock-free.
 */
void *htkv_trie_get(const struct trie *t, const void *key, uint32_t klen);

/**
 * Generation of @p t: the writer bumps it (release) after every insert, replace and delete has
 * been published, and at fini; it never goes back. A reader that loads the same generation twice
 * knows that no change completed in between: sorted runs (run.h) use it to tell whether their
 * flat copy of the trie is still exact.
 * @context Any thread. Lock-free.
 */
static inline uint64_t
htkv_trie_gen(const struct trie *t)
{
    return atomic_load_explicit((_Atomic uint64_t *)&t->gen, memory_order_acquire);
}

/** Keys in @p t. @context Any thread; exact for the writer, a recent value for others. */
uint64_t htkv_trie_count(const struct trie *t);

/**
 * Bytes of internal nodes: 24 per node, keys - 1 nodes (values and allocator rounding, 32 B a
 * node with glibc, not included). @context As htkv_trie_count().
 */
uint64_t htkv_trie_bytes(const struct trie *t);

/** Free an internal node handed to the retire callback; a valid EBR free function. */
void htkv_trie_node_free(void *node);

/**
 * Check every invariant of @p t (trie.c): O(keys * depth). Meant for HTKV_DASSERT and tests.
 * @return true when the trie is well formed; false otherwise, or when there is no memory for a
 *         cursor; htkv_last_error() says what was wrong.
 * @context The writer, or any thread when no writer runs.
 */
bool htkv_trie_verify(const struct trie *t);

/**
 * Attach a cursor to @p t. The cursor returns nothing until it is positioned by a seek.
 * @param[out] c  Caller storage; kept until htkv_trie_cursor_fini().
 * @param[in]  t  The trie; kept until htkv_trie_cursor_fini().
 * @context Any thread. Does not allocate.
 */
void htkv_trie_cursor_init(struct trie_cursor *c, const struct trie *t);

/** Free the cursor's stack. @p c may be NULL. @context The thread using the cursor. */
void htkv_trie_cursor_fini(struct trie_cursor *c);

/**
 * Position @p c so that htkv_trie_cursor_next() returns the first key >= @p key (the empty key
 * gives the smallest) and then the following keys in order. See the top of this file for what a
 * cursor sees while the writer works.
 * @param[in,out] c     The cursor.
 * @param[in]     key   0..TRIE_KEY_MAX bytes; borrowed (not kept after return).
 * @return 0, or -ENOMEM (the stack could not grow; the cursor is at its end).
 * @context The cursor's thread, inside an EBR critical section that lasts until the last
 *          htkv_trie_cursor_next() of this scan. Lock-free. O(depth) in the usual case.
 */
HTKV_MUST_USE int htkv_trie_cursor_seek(struct trie_cursor *c, const void *key, uint32_t klen);

/**
 * Position @p c at the first key that starts with @p prefix. The following keys come in order
 * and leave the prefix at some point: the caller stops at the first one that does not match.
 * @param[in,out] c       The cursor.
 * @param[in]     prefix  0..TRIE_KEY_MAX bytes (empty = every key); borrowed.
 * @return 1 (the next htkv_trie_cursor_next() returns a key with the prefix), 0 (no key has it;
 *         the cursor is at its end), or -ENOMEM (the cursor is at its end).
 * @context As htkv_trie_cursor_seek().
 */
HTKV_MUST_USE int htkv_trie_cursor_seek_prefix(struct trie_cursor *c, const void *prefix,
                                               uint32_t plen);

/**
 * Return the next value in key order. Amortised O(1): each node is pushed and popped once.
 * @param[in,out] c  A positioned cursor.
 * @return A value (view: valid until the critical section ends), or NULL at the end or when the
 *         stack could not grow (htkv_trie_cursor_error() tells which).
 * @context The cursor's thread, in the critical section of the seek. Lock-free.
 */
void *htkv_trie_cursor_next(struct trie_cursor *c);

/** 0, or -ENOMEM when the last seek or next stopped for lack of memory. @context As next. */
static inline int
htkv_trie_cursor_error(const struct trie_cursor *c)
{
    return c->err;
}

#endif /* HTKV_ENGINE_TRIE_H */
