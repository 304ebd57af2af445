/*
 * trie.c - the ordered index of a shard: a crit-bit tree with one writer and lock-free readers
 * (the contract is in trie.h).
 *
 * Design. A key is read as a string of 9-bit symbols: symbol i is 0x100 | key[i] while i < len
 * and 0 past the end, so a key that ended sorts before any byte, and comparing symbol strings
 * bit by bit, most significant first, is the unsigned byte order with prefixes first. Two keys
 * differ first at a critical position (i << 4) | (8 - b): i is the first symbol where they differ
 * and b the highest bit in which those symbols differ (b = 8: one key ended at i). Smaller
 * positions come first in that bit order. An internal node holds one critical position and two
 * child slots; a key goes to child[bit of the key at pos]. A child slot holds a tagged word: a node
 * pointer, or a value pointer with TRIE_LEAF set (values are 8-byte aligned, nodes come from
 * malloc, so bit 0 is free). No node is allocated per key or per key byte: a tree of n keys has
 * exactly n - 1 nodes, 24 bytes each.
 *
 * Writer. Insert descends by the new key's bits to some leaf L, whose key shares with the new key
 * every bit the nodes on the way tested; the first difference p between the two keys is where the
 * new node belongs: above the first node on the same path whose position is > p. The node is built
 * with both children set, then published by one release store into that slot. Replace is one
 * release store of the new leaf into the old leaf's slot. Delete swings the slot that points to
 * the leaf's parent over to the leaf's sibling (one release store) and retires the parent. Readers
 * load every slot with acquire, so whatever they reach is fully initialised.
 *
 * Readers. A node's position and its place in the order never change (invariant 3), so a reader
 * that holds a node, even one unlinked since, knows every key it can reach through child[1] is
 * larger than every key it can reach through child[0]. The cursor keeps a stack of the nodes at
 * which it went left; next() pops one and descends its right subtree leftmost-first. Each key it
 * returns is larger than the previous one because it comes from the right side of a node whose
 * left side produced the previous one: no key twice, never out of order, whatever the writer did.
 * Seek is the crit-bit lower bound: descend by the key to some leaf, take the first difference
 * p, descend again to the first node past p and compare the key with a leaf of that subtree. That
 * second comparison also verifies the descent: when it finds the same p, every node on the path
 * tests a bit before p on which the key agrees with all keys below the node, so the subtrees left
 * of the path hold only smaller keys and those right of it only larger ones, at any time
 * (invariant 3). When the writer changed the path in between, p differs and the seek retries; after
 * TRIE_SEEK_TRIES tries (a writer rebuilding this very spot without pause) it scans from the
 * smallest key and skips keys below the seek key, which keeps every guarantee of trie.h.
 *
 * Invariants
 *   1. Every child slot holds a non-zero tagged word (a node, or a value with TRIE_LEAF set). The
 *      root is 0 exactly when the trie is empty.
 *   2. Positions strictly increase from a node to its child nodes.
 *   3. For every node N, the keys that can ever be reached through N agree on every bit before
 *      pos(N), and those reached through child[d] have bit d at pos(N). This holds after N is
 *      unlinked too, because the writer never stores into an unlinked node.
 *   4. A node is fully built before it is published with a release store; its pos never changes;
 *      an unlinked node goes to retire and is never written or freed by the trie again.
 *   5. node_count = key_count - 1 when the trie is not empty, 0 when it is (a full binary tree).
 *   6. Leaves in left-to-right order have strictly increasing keys (follows from 2 and 3).
 */
#include "engine/trie.h"

#include <stdio.h>

#define TRIE_LEAF ((uintptr_t)1)
#define TRIE_POS_NONE UINT32_MAX /* "keys are equal": after every real position */

struct trie_node {
    _Atomic uintptr_t child[2]; /* tagged words (invariant 1) */
    uint32_t pos;               /* critical position; immutable once published */
};
/* 2 slots + position, padded: 24 B; malloc gives it a 32 B chunk. */
HTKV_STATIC_ASSERT(sizeof(struct trie_node) == 24, "crit-bit node is 24 bytes");
HTKV_STATIC_ASSERT(((TRIE_KEY_MAX - 1) << 4 | 8) < TRIE_POS_NONE, "positions fit below NONE");

/* First cursor stack: 32 entries. Random keys make paths of about log2(keys) nodes (20 for 1M
 * keys), so most cursors never grow it; deeper paths (long shared prefixes) double it. */
#define TRIE_STACK_MIN 32u

/* True when the tagged word @p w is a value, false when it is a node. */
static inline bool
is_leaf(uintptr_t w)
{
    return (w & TRIE_LEAF) != 0;
}

/* The node behind a tagged word without TRIE_LEAF. */
static inline struct trie_node *
word_node(uintptr_t w)
{
    return (struct trie_node *)w;
}

/* The value behind a tagged word with TRIE_LEAF. */
static inline void *
word_val(uintptr_t w)
{
    return (void *)(w & ~TRIE_LEAF);
}

/* A reader's load of a slot: pairs with the writer's release store that filled it. The const
 * is cast away only because atomic_load() does not take a const pointer in C11. */
static inline uintptr_t
load_acquire(const _Atomic uintptr_t *slot)
{
    return atomic_load_explicit((_Atomic uintptr_t *)slot, memory_order_acquire);
}

/* The writer's load of a slot: only the writer stores, so it always sees its own latest store. */
static inline uintptr_t
load_relaxed(const _Atomic uintptr_t *slot)
{
    return atomic_load_explicit((_Atomic uintptr_t *)slot, memory_order_relaxed);
}

/* The bit of @p key at position @p pos (symbols past the end are 0). */
static inline unsigned
key_bit(uint32_t pos, const unsigned char *key, uint32_t klen)
{
    uint32_t i = pos >> 4;
    if (i >= klen) {
        return 0;
    }
    unsigned sym = 0x100u | key[i];
    return (sym >> (8u - (pos & 15u))) & 1u;
}

/* Position of the first difference between symbols @p i of two keys, whose bytes differ. */
static inline uint32_t
byte_pos(uint32_t i, unsigned char a, unsigned char b)
{
    HTKV_ASSERT(a != b);
    unsigned x = (unsigned)(a ^ b);
    unsigned bit = 31u - (unsigned)__builtin_clz(x); /* 0..7: highest differing bit */
    return (i << 4) | (8u - bit);
}

/* First position at which @p a and @p b differ, or TRIE_POS_NONE when they are equal. */
static uint32_t
key_diff(const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    HTKV_ASSERT(alen <= TRIE_KEY_MAX);
    HTKV_ASSERT(blen <= TRIE_KEY_MAX);
    uint32_t n = alen < blen ? alen : blen;
    uint32_t i = 0;
    /* 8 bytes a step; on little-endian the lowest set byte of the XOR is the first difference. */
    for (; i + 8 <= n; i += 8) {
        uint64_t x = htkv_load64(a + i) ^ htkv_load64(b + i);
        if (x != 0) {
            uint32_t j = i + ((uint32_t)__builtin_ctzll(x) >> 3);
            return byte_pos(j, a[j], b[j]);
        }
    }
    for (; i < n; i++) {
        if (a[i] != b[i]) {
            return byte_pos(i, a[i], b[i]);
        }
    }
    if (alen == blen) {
        return TRIE_POS_NONE;
    }
    return n << 4; /* the shorter key ended: bit 8 of symbol n, rank 0 */
}

/* <0, 0, >0 as @p a sorts before, equal to, after @p b. */
static int
key_cmp(const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    uint32_t p = key_diff(a, alen, b, blen);
    if (p == TRIE_POS_NONE) {
        return 0;
    }
    return key_bit(p, a, alen) ? 1 : -1;
}

/* The key of @p val, through the caller's key_of, checked for length. */
static inline const unsigned char *
val_key(const struct trie *t, const void *val, uint32_t *len)
{
    const unsigned char *k = t->key_of(val, len, t->ctx);
    HTKV_ASSERT(*len >= 1 && *len <= TRIE_KEY_MAX);
    return k;
}

void
htkv_trie_init(struct trie *t, htkv_trie_key_fn key_of, htkv_trie_retire_fn retire, void *ctx)
{
    HTKV_ASSERT(t != NULL);
    HTKV_ASSERT(key_of != NULL);
    HTKV_ASSERT(retire != NULL);
    atomic_init(&t->root, 0);
    t->key_of = key_of;
    t->retire = retire;
    t->ctx = ctx;
    t->spare = NULL;
    t->nspare = 0;
    t->arena = 0;
    atomic_init(&t->key_count, 0);
    atomic_init(&t->node_count, 0);
    atomic_init(&t->gen, 0);
}

/* After a change is published: a reader that sees the new generation sees the change. */
static inline void
gen_bump(struct trie *t)
{
    atomic_store_explicit(&t->gen, atomic_load_explicit(&t->gen, memory_order_relaxed) + 1,
                          memory_order_release);
}

void
htkv_trie_fini(struct trie *t)
{
    if (t == NULL) {
        return;
    }
    while (t->spare != NULL) {
        struct trie_node *nn = t->spare;
        t->spare = (struct trie_node *)load_relaxed(&nn->child[0]);
        htkv_mem_free(nn);
    }
    t->nspare = 0;
    /* Free without a stack: rotate left-leaning nodes right until the left child is a leaf,
     * then free the node and continue in its right subtree. Each rotation moves one node off
     * the left spine for good, so the walk is O(nodes) and needs no memory. */
    uintptr_t w = load_relaxed(&t->root);
    uint64_t freed = 0;
    while (w != 0 && !is_leaf(w)) {
        struct trie_node *n = word_node(w);
        uintptr_t left = load_relaxed(&n->child[0]);
        HTKV_ASSERT(left != 0);
        if (is_leaf(left)) {
            w = load_relaxed(&n->child[1]);
            htkv_mem_free(n);
            freed++;
        } else {
            struct trie_node *l = word_node(left);
            atomic_store_explicit(&n->child[0], load_relaxed(&l->child[1]), memory_order_relaxed);
            atomic_store_explicit(&l->child[1], w, memory_order_relaxed);
            w = left;
        }
    }
    HTKV_ASSERT(freed == atomic_load_explicit(&t->node_count, memory_order_relaxed));
    atomic_store_explicit(&t->root, 0, memory_order_relaxed);
    atomic_store_explicit(&t->key_count, 0, memory_order_relaxed);
    atomic_store_explicit(&t->node_count, 0, memory_order_relaxed);
    gen_bump(t);
}

/* Writer-only counter updates: relaxed, as only the writer stores and stats read them. */
static inline void
count_add(_Atomic uint64_t *c, int64_t d)
{
    uint64_t v = atomic_load_explicit(c, memory_order_relaxed);
    atomic_store_explicit(c, v + (uint64_t)d, memory_order_relaxed);
}

/*
 * Link a new node for @p leaf (key @p key) at position @p pos: above the first node on the key's
 * path whose position is greater, or above the leaf that ends the path.
 */
static void
insert_link(struct trie *t, struct trie_node *nn, uint32_t pos, uintptr_t leaf,
            const unsigned char *key, uint32_t klen)
{
    HTKV_ASSERT(pos != TRIE_POS_NONE);
    _Atomic uintptr_t *slot = &t->root;
    uintptr_t w = load_relaxed(slot);
    HTKV_ASSERT(w != 0); /* the caller found a leaf to differ from */
    while (!is_leaf(w)) {
        struct trie_node *n = word_node(w);
        HTKV_ASSERT(n->pos != pos); /* the key agrees with every key below at pos(n) < pos */
        if (n->pos > pos) {
            break;
        }
        slot = &n->child[key_bit(n->pos, key, klen)];
        w = load_relaxed(slot);
    }
    unsigned d = key_bit(pos, key, klen);
    nn->pos = pos;
    atomic_init(&nn->child[d], leaf);
    atomic_init(&nn->child[d ^ 1u], w);
    /* Publish: everything above is visible to a reader that acquires the slot. */
    atomic_store_explicit(slot, (uintptr_t)nn, memory_order_release);
}

int
htkv_trie_insert(struct trie *t, void *val, void **prev)
{
    HTKV_ASSERT(val != NULL);
    HTKV_ASSERT(((uintptr_t)val & 7u) == 0);
    HTKV_ASSERT(prev != NULL);
    uint32_t klen;
    const unsigned char *key = val_key(t, val, &klen);
    uintptr_t leaf = (uintptr_t)val | TRIE_LEAF;
    *prev = NULL;

    uintptr_t root = load_relaxed(&t->root);
    if (root == 0) {
        atomic_store_explicit(&t->root, leaf, memory_order_release);
        count_add(&t->key_count, 1);
        gen_bump(t);
        return 0;
    }
    /* Descend by the key's bits to the leaf that shares the most tested bits with it. */
    _Atomic uintptr_t *slot = &t->root;
    uintptr_t w = root;
    while (!is_leaf(w)) {
        struct trie_node *n = word_node(w);
        slot = &n->child[key_bit(n->pos, key, klen)];
        w = load_relaxed(slot);
    }
    uint32_t olen;
    const unsigned char *okey = val_key(t, word_val(w), &olen);
    uint32_t pos = key_diff(key, klen, okey, olen);
    if (pos == TRIE_POS_NONE) {
        *prev = word_val(w);
        atomic_store_explicit(slot, leaf, memory_order_release);
        gen_bump(t);
        HTKV_DASSERT(htkv_trie_get(t, key, klen) == val);
        return 0;
    }
    struct trie_node *nn = t->spare;
    if (nn != NULL) {
        t->spare = (struct trie_node *)load_relaxed(&nn->child[0]);
        t->nspare--;
    } else if ((nn = htkv_mem_alloc_in(t->arena, sizeof(*nn))) == NULL) {
        return -ENOMEM;
    }
    insert_link(t, nn, pos, leaf, key, klen);
    count_add(&t->key_count, 1);
    count_add(&t->node_count, 1);
    gen_bump(t);
    HTKV_ASSERT(atomic_load_explicit(&t->node_count, memory_order_relaxed) + 1 ==
                atomic_load_explicit(&t->key_count, memory_order_relaxed));
    HTKV_DASSERT(htkv_trie_get(t, key, klen) == val);
    return 0;
}

int
htkv_trie_reserve(struct trie *t, uint32_t n)
{
    while (t->nspare < n) {
        struct trie_node *nn = htkv_mem_alloc_in(t->arena, sizeof(*nn));
        if (nn == NULL) {
            return -ENOMEM;
        }
        atomic_init(&nn->child[0], (uintptr_t)t->spare); /* not reachable by readers */
        t->spare = nn;
        t->nspare++;
    }
    return 0;
}

void *
htkv_trie_delete(struct trie *t, const void *key, uint32_t klen)
{
    HTKV_ASSERT(key != NULL || klen == 0);
    HTKV_ASSERT(klen <= TRIE_KEY_MAX);
    uintptr_t w = load_relaxed(&t->root);
    if (w == 0 || klen == 0) {
        return NULL;
    }
    const unsigned char *k = key;
    _Atomic uintptr_t *slot = &t->root; /* holds w */
    _Atomic uintptr_t *pslot = NULL;    /* holds the parent of w */
    struct trie_node *parent = NULL;
    unsigned d = 0;
    while (!is_leaf(w)) {
        pslot = slot;
        parent = word_node(w);
        d = key_bit(parent->pos, k, klen);
        slot = &parent->child[d];
        w = load_relaxed(slot);
    }
    void *val = word_val(w);
    uint32_t vlen;
    const unsigned char *vkey = val_key(t, val, &vlen);
    if (vlen != klen || memcmp(vkey, k, klen) != 0) {
        return NULL;
    }
    if (parent == NULL) {
        HTKV_ASSERT(atomic_load_explicit(&t->key_count, memory_order_relaxed) == 1);
        atomic_store_explicit(&t->root, 0, memory_order_release);
        count_add(&t->key_count, -1);
        gen_bump(t);
        return val;
    }
    /* One store unlinks both the leaf and its parent; the sibling moves up a level. */
    uintptr_t sibling = load_relaxed(&parent->child[d ^ 1u]);
    HTKV_ASSERT(sibling != 0);
    atomic_store_explicit(pslot, sibling, memory_order_release);
    gen_bump(t);
    t->retire(t->ctx, parent);
    count_add(&t->key_count, -1);
    count_add(&t->node_count, -1);
    HTKV_ASSERT(atomic_load_explicit(&t->node_count, memory_order_relaxed) + 1 ==
                atomic_load_explicit(&t->key_count, memory_order_relaxed));
    return val;
}

void *
htkv_trie_get(const struct trie *t, const void *key, uint32_t klen)
{
    HTKV_ASSERT(key != NULL || klen == 0);
    HTKV_ASSERT(klen <= TRIE_KEY_MAX);
    const unsigned char *k = key;
    uintptr_t w = load_acquire(&t->root);
    if (w == 0 || klen == 0) {
        return NULL;
    }
    while (!is_leaf(w)) {
        const struct trie_node *n = word_node(w);
        w = load_acquire(&n->child[key_bit(n->pos, k, klen)]);
    }
    void *val = word_val(w);
    uint32_t vlen;
    const unsigned char *vkey = val_key(t, val, &vlen);
    if (vlen != klen || memcmp(vkey, k, klen) != 0) {
        return NULL;
    }
    return val;
}

uint64_t
htkv_trie_count(const struct trie *t)
{
    return atomic_load_explicit((_Atomic uint64_t *)&t->key_count, memory_order_relaxed);
}

uint64_t
htkv_trie_bytes(const struct trie *t)
{
    uint64_t nodes = atomic_load_explicit((_Atomic uint64_t *)&t->node_count, memory_order_relaxed);
    return nodes * sizeof(struct trie_node);
}

void
htkv_trie_node_free(void *node)
{
    htkv_mem_free(node);
}

/* ---- Cursor ------------------------------------------------------------------------------- */

void
htkv_trie_cursor_init(struct trie_cursor *c, const struct trie *t)
{
    HTKV_ASSERT(c != NULL);
    HTKV_ASSERT(t != NULL);
    *c = (struct trie_cursor){ .trie = t, .seek_tries = TRIE_SEEK_TRIES };
}

void
htkv_trie_cursor_fini(struct trie_cursor *c)
{
    if (c == NULL) {
        return;
    }
    htkv_mem_free(c->stack);
    *c = (struct trie_cursor){ 0 };
}

/* Reset to "returns nothing"; the stack's memory is kept for the next seek. */
static inline void
cursor_clear(struct trie_cursor *c)
{
    c->depth = 0;
    c->pend = 0;
}

/* Grow the stack (doubling keeps pushes amortised O(1)). False and c->err on no memory. */
static bool
cursor_grow(struct trie_cursor *c)
{
    HTKV_ASSERT(c->depth == c->cap);
    /* The stack is one path and positions strictly increase along it: depth < 2^20. */
    HTKV_ASSERT(c->cap < (1u << 22));
    uint32_t cap = c->cap == 0 ? TRIE_STACK_MIN : c->cap * 2;
    struct trie_node **s = htkv_mem_realloc(c->stack, (size_t)cap * sizeof(*s));
    if (s == NULL) {
        c->err = -ENOMEM;
        cursor_clear(c);
        return false;
    }
    c->stack = s;
    c->cap = cap;
    return true;
}

/* Push @p n, whose right subtree is still to visit. False (c->err set) on no memory. */
static inline bool
cursor_push(struct trie_cursor *c, struct trie_node *n)
{
    if (HTKV_UNLIKELY(c->depth == c->cap) && !cursor_grow(c)) {
        return false;
    }
    c->stack[c->depth++] = n;
    return true;
}

void *
htkv_trie_cursor_next(struct trie_cursor *c)
{
    HTKV_ASSERT(c->trie != NULL);
    HTKV_ASSERT(c->depth <= c->cap);
    if (c->err != 0) {
        return NULL;
    }
    uintptr_t w = c->pend;
    c->pend = 0;
    if (w == 0) {
        if (c->depth == 0) {
            return NULL;
        }
        /* Everything left of this node was returned: its right side is next (invariant 3). */
        struct trie_node *n = c->stack[--c->depth];
        w = load_acquire(&n->child[1]);
    }
    while (!is_leaf(w)) {
        HTKV_ASSERT(w != 0);
        struct trie_node *n = word_node(w);
        if (!cursor_push(c, n)) {
            return NULL;
        }
        w = load_acquire(&n->child[0]);
    }
    return word_val(w);
}

/*
 * One seek attempt for @p key, given @p *pos: the first difference between the key and some key
 * of the trie as far as known (TRIE_POS_NONE at first). Returns 1 when the cursor is positioned,
 * 0 when *pos was updated and the caller should try again, or -ENOMEM.
 */
static int
cursor_seek_try(struct trie_cursor *c, const unsigned char *key, uint32_t klen, uint32_t *pos)
{
    HTKV_ASSERT(klen >= 1);
    HTKV_ASSERT(c->err == 0);
    const struct trie *t = c->trie;
    uint32_t p = *pos;
    cursor_clear(c);
    uintptr_t w = load_acquire(&t->root);
    if (w == 0) {
        return 1;
    }
    /* Down the key's path to the first node past p: remember where the key went left. */
    uint32_t path_nodes = 0;
    uint32_t path_pos_max = 0;
    while (!is_leaf(w)) {
        struct trie_node *n = word_node(w);
        if (n->pos > p) {
            break;
        }
        unsigned d = key_bit(n->pos, key, klen);
        if (d == 0 && !cursor_push(c, n)) {
            return -ENOMEM;
        }
        path_nodes++;
        path_pos_max = n->pos;
        w = load_acquire(&n->child[d]);
    }
    /* Check the descent against the smallest key of the subtree reached. */
    uint32_t base = c->depth;
    uintptr_t m = w;
    while (!is_leaf(m)) {
        struct trie_node *n = word_node(m);
        if (!cursor_push(c, n)) {
            return -ENOMEM;
        }
        m = load_acquire(&n->child[0]);
    }
    uint32_t mlen;
    const unsigned char *mkey = val_key(t, word_val(m), &mlen);
    uint32_t got = key_diff(key, klen, mkey, mlen);
    if (got != p) {
        *pos = got;
        return 0;
    }
    /* Verified: m, below every path node, agrees with the key before p, so no path node can
     * test p itself (m went the key's way there): the key agrees with each node's keys up to
     * the bit the node tests. */
    HTKV_ASSERT(path_nodes == 0 || path_pos_max < p);
    if (p == TRIE_POS_NONE || key_bit(p, key, klen) == 0) {
        c->pend = m; /* the whole subtree is >= key, and m is its first key */
    } else {
        c->depth = base; /* the whole subtree is < key: go on right of the path */
    }
    return 1;
}

/* Fallback of seek: scan from the smallest key, skipping keys below @p key (trie.c design). */
static int
cursor_seek_scan(struct trie_cursor *c, const unsigned char *key, uint32_t klen)
{
    HTKV_ASSERT(klen >= 1);
    HTKV_ASSERT(c->err == 0);
    const struct trie *t = c->trie;
    cursor_clear(c);
    c->pend = load_acquire(&t->root);
    for (;;) {
        void *v = htkv_trie_cursor_next(c);
        if (v == NULL) {
            return c->err;
        }
        uint32_t vlen;
        const unsigned char *vkey = val_key(t, v, &vlen);
        if (key_cmp(vkey, vlen, key, klen) >= 0) {
            c->pend = (uintptr_t)v | TRIE_LEAF; /* next() returns it first */
            return 0;
        }
    }
}

int
htkv_trie_cursor_seek(struct trie_cursor *c, const void *key, uint32_t klen)
{
    HTKV_ASSERT(c->trie != NULL);
    HTKV_ASSERT(key != NULL || klen == 0);
    HTKV_ASSERT(klen <= TRIE_KEY_MAX);
    c->err = 0;
    cursor_clear(c);
    if (klen == 0) {
        c->pend = load_acquire(&c->trie->root); /* every key is >= the empty key */
        return 0;
    }
    /* Without a concurrent writer the first try finds an equal key or the first difference,
     * and the second try confirms it: at most 2 tries. */
    uint32_t pos = TRIE_POS_NONE;
    for (uint32_t i = 0; i < c->seek_tries; i++) {
        int rc = cursor_seek_try(c, key, klen, &pos);
        if (rc != 0) {
            return rc < 0 ? rc : 0;
        }
    }
    return cursor_seek_scan(c, key, klen);
}

int
htkv_trie_cursor_seek_prefix(struct trie_cursor *c, const void *prefix, uint32_t plen)
{
    HTKV_ASSERT(prefix != NULL || plen == 0);
    int rc = htkv_trie_cursor_seek(c, prefix, plen);
    if (rc < 0) {
        return rc;
    }
    /* Look at the first key without consuming it: next() hands a pending leaf back first. */
    void *v = htkv_trie_cursor_next(c);
    if (v == NULL) {
        return c->err;
    }
    uint32_t vlen;
    const unsigned char *vkey = val_key(c->trie, v, &vlen);
    if (vlen < plen || (plen > 0 && memcmp(vkey, prefix, plen) != 0)) {
        cursor_clear(c);
        return 0;
    }
    HTKV_ASSERT(c->pend == 0);
    c->pend = (uintptr_t)v | TRIE_LEAF;
    return 1;
}

/* ---- Verification ------------------------------------------------------------------------- */

/*
 * Check the path of @p val's key: it must lead to @p val through strictly increasing positions
 * (invariants 1, 2 and the bit half of 3). When @p prev (the key before, in order) is given,
 * the first node where the two paths part must test exactly their first difference, which with
 * the order check gives the prefix half of invariant 3. Returns the depth, or -1.
 */
static int64_t
verify_path(const struct trie *t, const void *val, const unsigned char *key, uint32_t klen,
            const unsigned char *prev, uint32_t plen)
{
    HTKV_ASSERT(val != NULL);
    HTKV_ASSERT(klen >= 1);
    uint32_t diff = prev != NULL ? key_diff(prev, plen, key, klen) : TRIE_POS_NONE;
    bool parted = prev == NULL;
    int64_t depth = 0;
    uint32_t last = 0;
    uintptr_t w = load_acquire(&t->root);
    while (w != 0 && !is_leaf(w)) {
        const struct trie_node *n = word_node(w);
        if (depth > 0 && n->pos <= last) {
            htkv_set_error("trie: position %u below %u at depth %lld", n->pos, last,
                           (long long)depth);
            return -1;
        }
        unsigned d = key_bit(n->pos, key, klen);
        if (!parted && key_bit(n->pos, prev, plen) != d) {
            if (n->pos != diff) {
                htkv_set_error("trie: paths part at %u, keys differ at %u", n->pos, diff);
                return -1;
            }
            parted = true;
        }
        last = n->pos;
        depth++;
        w = load_acquire(&n->child[d]);
    }
    if (w != ((uintptr_t)val | TRIE_LEAF) || !parted) {
        htkv_set_error("trie: key's path does not lead to its leaf (depth %lld)", (long long)depth);
        return -1;
    }
    return depth;
}

bool
htkv_trie_verify(const struct trie *t)
{
    HTKV_ASSERT(t != NULL);
    HTKV_ASSERT(t->key_of != NULL);
    uint64_t keys = htkv_trie_count(t);
    uint64_t nodes = atomic_load_explicit((_Atomic uint64_t *)&t->node_count, memory_order_relaxed);
    if (nodes != (keys == 0 ? 0 : keys - 1)) {
        htkv_set_error("trie: %llu nodes for %llu keys", (unsigned long long)nodes,
                       (unsigned long long)keys);
        return false;
    }
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, t);
    bool ok = htkv_trie_cursor_seek(&c, NULL, 0) == 0;
    const unsigned char *prev = NULL;
    uint32_t plen = 0;
    uint64_t seen = 0;
    void *v;
    while (ok && (v = htkv_trie_cursor_next(&c)) != NULL) {
        uint32_t klen;
        const unsigned char *key = val_key(t, v, &klen);
        if (prev != NULL && key_cmp(prev, plen, key, klen) >= 0) {
            htkv_set_error("trie: key %llu not above the one before", (unsigned long long)seen);
            ok = false;
            break;
        }
        ok = verify_path(t, v, key, klen, prev, plen) >= 0;
        prev = key;
        plen = klen;
        seen++;
    }
    if (ok && htkv_trie_cursor_error(&c) != 0) {
        htkv_set_error("trie: no memory to verify");
        ok = false;
    }
    if (ok && seen != keys) {
        htkv_set_error("trie: %llu keys reachable, %llu counted", (unsigned long long)seen,
                       (unsigned long long)keys);
        ok = false;
    }
    htkv_trie_cursor_fini(&c);
    return ok;
}
