/*
 * Goal: the crit-bit trie keeps byte-string keys in unsigned byte order (prefixes first), its
 * cursor seeks and iterates exactly, it fails cleanly without memory, and lock-free readers stay
 * correct while one writer inserts and deletes. Method: edge cases, a seeded model-based fuzz
 * against a sorted array, and one writer with three reader threads under EBR.
 */
#include "tests/support/testutil.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "engine/ebr.h"
#include "engine/trie.h"

#define REC_LIVE 0x7265632d6c697665ull /* "rec-live" */
#define REC_DEAD 0xdeaddeaddeaddeadull

/* A caller record: the trie's value, holding its own key (the trie never copies keys). */
struct rec {
    uint64_t magic;
    uint32_t id;  /* position in the test's key universe, or a serial */
    uint32_t len; /* key bytes */
    unsigned char key[];
};

/* The trie's key_of: a record's key lives in the record. */
static const unsigned char *
rec_key_of(const void *val, uint32_t *len, void *ctx)
{
    (void)ctx;
    const struct rec *r = val;
    *len = r->len;
    return r->key;
}

/* A live record holding a copy of @p key. */
static struct rec *
rec_new(const void *key, uint32_t len, uint32_t id)
{
    struct rec *r = malloc(sizeof(*r) + len);
    assert_non_null(r);
    r->magic = REC_LIVE;
    r->id = id;
    r->len = len;
    memcpy(r->key, key, len);
    return r;
}

/* Free a record; also the EBR free function for retired records. */
static void
rec_free(void *p)
{
    struct rec *r = p;
    r->magic = REC_DEAD; /* a reader that still sees the record after this fails loudly */
    free(r);
}

/* Unsigned byte order, a proper prefix first: the order the trie promises. */
static int
key_cmp(const unsigned char *a, uint32_t alen, const unsigned char *b, uint32_t blen)
{
    uint32_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : (alen > blen ? 1 : 0);
}

/* Key order of two records. */
static int
rec_cmp(const struct rec *a, const struct rec *b)
{
    return key_cmp(a->key, a->len, b->key, b->len);
}

/* ---- Fixture: a single-threaded trie that frees retired nodes at once -------------------- */

struct trie_fixture {
    struct trie t;
    struct rec **recs; /* every record made, freed at teardown */
    size_t recs_count;
    size_t recs_cap;
    uint64_t retired;
};

/* Single-threaded tests have no readers: a retired node is freed at once. */
static void
fixture_retire(void *ctx, void *node)
{
    struct trie_fixture *f = ctx;
    f->retired++;
    htkv_trie_node_free(node);
}

/* Fixture: an empty trie and an empty list of records. */
static int
trie_setup(void **state)
{
    struct trie_fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    htkv_trie_init(&f->t, rec_key_of, fixture_retire, f);
    *state = f;
    return 0;
}

/* Free the trie's nodes, then every record the test made. */
static int
trie_teardown(void **state)
{
    struct trie_fixture *f = *state;
    htkv_mem_fail_hook = NULL;
    htkv_trie_fini(&f->t);
    for (size_t i = 0; i < f->recs_count; i++) {
        rec_free(f->recs[i]);
    }
    free(f->recs);
    free(f);
    return 0;
}

/* A new record for @p key, freed at teardown. */
static struct rec *
fixture_rec(struct trie_fixture *f, const void *key, uint32_t len)
{
    if (f->recs_count == f->recs_cap) {
        f->recs_cap = f->recs_cap ? f->recs_cap * 2 : 64;
        f->recs = realloc(f->recs, f->recs_cap * sizeof(*f->recs));
        assert_non_null(f->recs);
    }
    struct rec *r = rec_new(key, len, (uint32_t)f->recs_count);
    f->recs[f->recs_count++] = r;
    return r;
}

/* Insert a fresh record for @p key; returns the value it replaced. */
static struct rec *
fixture_put(struct trie_fixture *f, const void *key, uint32_t len)
{
    struct rec *r = fixture_rec(f, key, len);
    void *prev = (void *)1;
    assert_int_equal(htkv_trie_insert(&f->t, r, &prev), 0);
    assert_ptr_equal(htkv_trie_get(&f->t, key, len), r);
    return prev;
}

/* Assert that a cursor seeked to @p seek returns exactly @p want[0..n). */
static void
expect_scan(struct trie_fixture *f, const void *seek, uint32_t slen, struct rec *const *want,
            size_t n)
{
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek(&c, seek, slen), 0);
    for (size_t i = 0; i < n; i++) {
        struct rec *r = htkv_trie_cursor_next(&c);
        assert_non_null(r);
        assert_int_equal(rec_cmp(r, want[i]), 0);
    }
    assert_null(htkv_trie_cursor_next(&c));
    assert_null(htkv_trie_cursor_next(&c)); /* stays at the end */
    assert_int_equal(htkv_trie_cursor_error(&c), 0);
    htkv_trie_cursor_fini(&c);
}

/* qsort comparator over struct rec pointers. */
static int
rec_ptr_cmp(const void *a, const void *b)
{
    return rec_cmp(*(struct rec *const *)a, *(struct rec *const *)b);
}

/* The fixture's live keys (the newest record per key), sorted: the expected scan. */
static size_t
fixture_sorted(struct trie_fixture *f, struct rec **out)
{
    size_t n = 0;
    for (size_t i = 0; i < f->recs_count; i++) {
        struct rec *r = f->recs[i];
        if (htkv_trie_get(&f->t, r->key, r->len) == r) {
            out[n++] = r;
        }
    }
    qsort(out, n, sizeof(*out), rec_ptr_cmp);
    return n;
}

/* ---- Edge cases --------------------------------------------------------------------------- */

/* Goal: an empty trie answers every call. Method: get, delete, seeks, prefix, counters. */
static void
test_trie_empty_answers_nothing(void **state)
{
    struct trie_fixture *f = *state;
    assert_null(htkv_trie_get(&f->t, "a", 1));
    assert_null(htkv_trie_get(&f->t, NULL, 0));
    assert_null(htkv_trie_delete(&f->t, "a", 1));
    assert_int_equal(htkv_trie_count(&f->t), 0);
    assert_int_equal(htkv_trie_bytes(&f->t), 0);
    assert_true(htkv_trie_verify(&f->t));
    expect_scan(f, NULL, 0, NULL, 0);
    expect_scan(f, "\xff", 1, NULL, 0);
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_null(htkv_trie_cursor_next(&c)); /* never positioned */
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "a", 1), 0);
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, NULL, 0), 0);
    assert_null(htkv_trie_cursor_next(&c));
    htkv_trie_cursor_fini(&c);
    htkv_trie_cursor_fini(NULL);
    htkv_trie_fini(NULL);
}

/* Goal: one key is found, replaced, sought around and deleted. Method: every call on "k". */
static void
test_trie_one_key_lifecycle(void **state)
{
    struct trie_fixture *f = *state;
    assert_null(fixture_put(f, "k", 1));
    struct rec *k1 = f->recs[0];
    assert_int_equal(htkv_trie_count(&f->t), 1);
    assert_int_equal(htkv_trie_bytes(&f->t), 0); /* a lone key needs no node */
    assert_null(htkv_trie_get(&f->t, "k\0", 2));
    assert_null(htkv_trie_get(&f->t, "j", 1));
    expect_scan(f, NULL, 0, &k1, 1);
    expect_scan(f, "a", 1, &k1, 1);
    expect_scan(f, "k", 1, &k1, 1);
    expect_scan(f, "k\0", 2, NULL, 0);
    expect_scan(f, "l", 1, NULL, 0);

    assert_ptr_equal(fixture_put(f, "k", 1), k1); /* replace returns the old value */
    struct rec *k2 = f->recs[1];
    assert_int_equal(htkv_trie_count(&f->t), 1);
    expect_scan(f, "k", 1, &k2, 1);
    assert_null(htkv_trie_delete(&f->t, "kk", 2));
    assert_ptr_equal(htkv_trie_delete(&f->t, "k", 1), k2);
    assert_null(htkv_trie_delete(&f->t, "k", 1));
    assert_int_equal(htkv_trie_count(&f->t), 0);
    assert_null(htkv_trie_get(&f->t, "k", 1));
    assert_true(htkv_trie_verify(&f->t));
    assert_int_equal(f->retired, 0);
}

static const struct {
    const char *s;
    uint32_t len;
} nested_keys[] = {
    { "a", 1 },      { "ab", 2 },   { "abc", 3 },    { "a\0", 2 },      { "a\xff", 2 },
    { "\0", 1 },     { "\0\0", 2 }, { "\xff", 1 },   { "\xff\xff", 2 }, { "abc\0", 4 },
    { "ab\xff", 3 }, { "b", 1 },    { "\0\xff", 2 }, { "\x7f", 1 },     { "\x80", 1 },
};
#define NESTED_COUNT (sizeof(nested_keys) / sizeof(nested_keys[0]))

/* Goal: keys that are prefixes of others, and 0x00/0xFF bytes, sort as unsigned bytes with the
 * prefix first; seeks land before, on and between keys; prefixes select the right run.
 * Method: insert in several seeded orders; compare every scan with a sorted copy. */
static void
test_trie_prefix_keys_and_extreme_bytes_keep_order(void **state)
{
    struct trie_fixture *f = *state;
    uint64_t rs = tu_seed("trie_prefix_keys");
    size_t order[NESTED_COUNT];
    for (size_t i = 0; i < NESTED_COUNT; i++) {
        order[i] = i;
    }
    for (int round = 0; round < 8; round++) {
        for (size_t i = NESTED_COUNT - 1; i > 0; i--) {
            size_t j = tu_rand(&rs) % (i + 1);
            size_t x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        for (size_t i = 0; i < NESTED_COUNT; i++) {
            (void)fixture_put(f, nested_keys[order[i]].s, nested_keys[order[i]].len);
            assert_true(htkv_trie_verify(&f->t));
        }
        assert_int_equal(htkv_trie_count(&f->t), NESTED_COUNT);
        struct rec *sorted[NESTED_COUNT];
        assert_int_equal(fixture_sorted(f, sorted), NESTED_COUNT);
        expect_scan(f, NULL, 0, sorted, NESTED_COUNT);
        /* Seek on every key, just before it (a shorter or smaller key) and just after it. */
        for (size_t i = 0; i < NESTED_COUNT; i++) {
            struct rec *r = sorted[i];
            expect_scan(f, r->key, r->len, sorted + i, NESTED_COUNT - i);
            unsigned char k[8];
            memcpy(k, r->key, r->len);
            k[r->len] = 0; /* the smallest key after r */
            expect_scan(f, k, r->len + 1, sorted + i + 1, NESTED_COUNT - i - 1);
            if (r->len > 1) { /* a proper prefix of r sorts at or before r */
                size_t at = i;
                while (at > 0 &&
                       key_cmp(sorted[at - 1]->key, sorted[at - 1]->len, r->key, r->len - 1) >= 0) {
                    at--;
                }
                expect_scan(f, r->key, r->len - 1, sorted + at, NESTED_COUNT - at);
            }
        }
        expect_scan(f, "\xff\xff\xff", 3, NULL, 0);
        /* "ab" is a whole key and a prefix: "ab", "abc", "abc\0", "ab\xff" follow in order. */
        struct trie_cursor c;
        htkv_trie_cursor_init(&c, &f->t);
        assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "ab", 2), 1);
        const char *want[] = { "ab", "abc", "abc", "ab\xff" };
        uint32_t want_len[] = { 2, 3, 4, 3 };
        for (size_t i = 0; i < 4; i++) {
            struct rec *r = htkv_trie_cursor_next(&c);
            assert_non_null(r);
            assert_int_equal(key_cmp(r->key, r->len, (const unsigned char *)want[i], want_len[i]),
                             0);
        }
        struct rec *r = htkv_trie_cursor_next(&c); /* the first key past the prefix */
        assert_non_null(r);
        assert_int_equal(key_cmp(r->key, r->len, (const unsigned char *)"a\xff", 2), 0);
        assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "abc\0", 4), 1);
        r = htkv_trie_cursor_next(&c);
        assert_int_equal(r->len, 4);
        assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "abd", 3), 0);
        assert_null(htkv_trie_cursor_next(&c));
        assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "\0", 1), 1);
        r = htkv_trie_cursor_next(&c);
        assert_int_equal(key_cmp(r->key, r->len, (const unsigned char *)"\0", 1), 0);
        assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "\xff\xff\xff", 3), 0);
        htkv_trie_cursor_fini(&c);
        /* Delete in the same order; the rest stays ordered. */
        for (size_t i = 0; i < NESTED_COUNT; i++) {
            struct rec *d =
                htkv_trie_delete(&f->t, nested_keys[order[i]].s, nested_keys[order[i]].len);
            assert_non_null(d);
            assert_true(htkv_trie_verify(&f->t));
            struct rec *left[NESTED_COUNT];
            size_t n = fixture_sorted(f, left);
            assert_int_equal(n, NESTED_COUNT - i - 1);
            expect_scan(f, NULL, 0, left, n);
        }
        assert_int_equal(htkv_trie_bytes(&f->t), 0);
    }
}

/* Goal: 64 KiB keys that differ only in the last byte, or by length, order and delete
 * correctly. Method: five maximal keys; scan, seek between them, delete one by one. */
static void
test_trie_64k_keys_differ_at_the_end(void **state)
{
    struct trie_fixture *f = *state;
    uint32_t max = TRIE_KEY_MAX;
    unsigned char *k = malloc(max);
    assert_non_null(k);
    memset(k, 0, max);
    (void)fixture_put(f, k, max); /* 0x00 * 64Ki */
    memset(k, 'x', max);
    (void)fixture_put(f, k, max - 1); /* 'x' * (64Ki - 1), a prefix of the next */
    (void)fixture_put(f, k, max);     /* 'x' * 64Ki */
    k[max - 1] = 'y';
    (void)fixture_put(f, k, max); /* 'x' * (64Ki - 1) + 'y' */
    memset(k, 0xff, max);
    (void)fixture_put(f, k, max); /* 0xff * 64Ki */
    struct rec **r = f->recs;
    struct rec *want[5] = { r[0], r[1], r[2], r[3], r[4] };
    assert_true(htkv_trie_verify(&f->t));
    expect_scan(f, NULL, 0, want, 5);
    expect_scan(f, r[2]->key, max, want + 2, 3);
    memset(k, 'x', max);
    k[max - 1] = 'x' + 1; /* == r[3] */
    expect_scan(f, k, max, want + 3, 2);
    k[max - 1] = 'x' - 1; /* between 'x'*(64Ki-1) and 'x'*64Ki */
    expect_scan(f, k, max, want + 2, 3);
    expect_scan(f, k, max - 2, want + 1, 4);
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, k, max - 1), 1);
    assert_ptr_equal(htkv_trie_cursor_next(&c), r[1]);
    htkv_trie_cursor_fini(&c);
    assert_ptr_equal(htkv_trie_delete(&f->t, r[2]->key, max), r[2]);
    assert_null(htkv_trie_get(&f->t, r[2]->key, max));
    assert_ptr_equal(htkv_trie_get(&f->t, r[3]->key, max), r[3]);
    assert_true(htkv_trie_verify(&f->t));
    want[2] = r[3];
    want[3] = r[4];
    expect_scan(f, NULL, 0, want, 4);
    free(k);
}

/* Goal: seeks before all, after all, between and on keys return the right suffix.
 * Method: 200 keys "k000".."k398" (even numbers); seek every number 0..400 and a few others. */
static void
test_trie_seek_before_after_between_all_keys(void **state)
{
    struct trie_fixture *f = *state;
    char k[8];
    for (int i = 398; i >= 0; i -= 2) {
        snprintf(k, sizeof(k), "k%03d", i);
        (void)fixture_put(f, k, 4);
    }
    struct rec *sorted[200];
    assert_int_equal(fixture_sorted(f, sorted), 200);
    for (int i = 0; i <= 400; i++) {
        snprintf(k, sizeof(k), "k%03d", i);
        size_t first = (size_t)(i + 1) / 2;
        expect_scan(f, k, 4, sorted + first, 200 - first);
    }
    expect_scan(f, "a", 1, sorted, 200);
    expect_scan(f, "k", 1, sorted, 200);
    expect_scan(f, "k1", 2, sorted + 50, 150);
    expect_scan(f, "k1\xff", 3, sorted + 100, 100);
    expect_scan(f, "k398\0", 5, NULL, 0);
    expect_scan(f, "l", 1, NULL, 0);
    /* Every count of steps from a seek: next() continues where the seek put it. */
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "k2", 2), 1);
    for (size_t i = 100; i < 150; i++) {
        assert_ptr_equal(htkv_trie_cursor_next(&c), sorted[i]);
    }
    struct rec *r = htkv_trie_cursor_next(&c); /* the caller stops: "k300" lacks the prefix */
    assert_int_equal(memcmp(r->key, "k300", 4), 0);
    htkv_trie_cursor_fini(&c);
}

/* A key of the left-leaning chain: i zero bytes then 0x01. Longer keys sort first, so the
 * leftmost path of a trie holding keys 0..n-1 has n - 1 nodes. */
static uint32_t
left_chain_key(unsigned char *k, uint32_t i)
{
    memset(k, 0, i);
    k[i] = 1;
    return i + 1;
}

/* Goal: chains as deep as the trie gets (n keys, n - 1 nodes on one path) insert, iterate, seek
 * and delete correctly, and the cursor stack grows as needed. Method: a right-leaning chain
 * ("a", "aa", ...) and a left-leaning one ("\1", "\0\1", "\0\0\1", ...), 3000 keys each. */
static void
test_trie_deep_chains_grow_cursor_stack(void **state)
{
    struct trie_fixture *f = *state;
    enum { CHAIN = 3000 };
    unsigned char *k = malloc(CHAIN + 1);
    assert_non_null(k);
    memset(k, 'a', CHAIN);
    for (uint32_t n = CHAIN; n >= 1; n--) {
        (void)fixture_put(f, k, n);
    }
    for (uint32_t i = 0; i < CHAIN; i++) {
        (void)fixture_put(f, k, left_chain_key(k, i));
    }
    assert_true(htkv_trie_verify(&f->t));
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek(&c, NULL, 0), 0); /* leftmost: 2 * CHAIN - 1 deep */
    for (uint32_t i = CHAIN; i-- > 0;) {
        struct rec *r = htkv_trie_cursor_next(&c);
        assert_non_null(r);
        assert_int_equal(r->len, i + 1);
        assert_int_equal(r->key[i], 1);
    }
    for (uint32_t n = 1; n <= CHAIN; n++) {
        struct rec *r = htkv_trie_cursor_next(&c);
        assert_non_null(r);
        assert_int_equal(r->len, n);
        assert_int_equal(r->key[0], 'a');
    }
    assert_null(htkv_trie_cursor_next(&c));
    assert_true(c.cap >= CHAIN);
    /* Seek into the middle of both chains. */
    assert_int_equal(htkv_trie_cursor_seek(&c, k, left_chain_key(k, 1500)), 0);
    assert_int_equal(((struct rec *)htkv_trie_cursor_next(&c))->len, 1501);
    assert_int_equal(((struct rec *)htkv_trie_cursor_next(&c))->len, 1500);
    k[1500] = 2; /* after every left-chain key with more than 1500 zeros, before the rest */
    assert_int_equal(htkv_trie_cursor_seek(&c, k, 1501), 0);
    assert_int_equal(((struct rec *)htkv_trie_cursor_next(&c))->len, 1500);
    memset(k, 'a', CHAIN);
    assert_int_equal(htkv_trie_cursor_seek(&c, k, 2000), 0);
    assert_int_equal(((struct rec *)htkv_trie_cursor_next(&c))->len, 2000);
    k[1500] = 'b';
    assert_int_equal(htkv_trie_cursor_seek(&c, k, 2000), 0); /* after "a" * 3000: the end */
    assert_null(htkv_trie_cursor_next(&c));
    htkv_trie_cursor_fini(&c);
    memset(k, 'a', CHAIN);
    for (uint32_t n = 1; n <= CHAIN; n++) {
        assert_non_null(htkv_trie_delete(&f->t, k, n));
    }
    assert_true(htkv_trie_verify(&f->t));
    for (uint32_t i = CHAIN; i-- > 0;) {
        assert_non_null(htkv_trie_delete(&f->t, k, left_chain_key(k, i)));
    }
    assert_int_equal(htkv_trie_count(&f->t), 0);
    assert_int_equal(f->retired, 2 * CHAIN - 1);
    free(k);
}

static int fail_after; /* allocations left before htkv_mem_alloc starts failing */

/* htkv_mem_fail_hook: let fail_after allocations through, then fail every one. */
static bool
fail_countdown(size_t n)
{
    (void)n;
    if (fail_after == 0) {
        return true;
    }
    fail_after--;
    return false;
}

/* Goal: without memory an insert of a new key fails with -ENOMEM and changes nothing, while
 * replacing and the first key need no memory; a cursor reports -ENOMEM and ends.
 * Method: htkv_mem_fail_hook refuses allocations at chosen points. */
static void
test_trie_out_of_memory_leaves_trie_unchanged(void **state)
{
    struct trie_fixture *f = *state;
    fail_after = 0;
    htkv_mem_fail_hook = fail_countdown;
    struct rec *a = fixture_rec(f, "a", 1);
    void *prev;
    assert_int_equal(htkv_trie_insert(&f->t, a, &prev), 0); /* the first key is the root */
    struct rec *b = fixture_rec(f, "b", 1);
    assert_int_equal(htkv_trie_insert(&f->t, b, &prev), -ENOMEM);
    assert_int_equal(htkv_trie_count(&f->t), 1);
    assert_null(htkv_trie_get(&f->t, "b", 1));
    struct rec *a2 = fixture_rec(f, "a", 1);
    assert_int_equal(htkv_trie_insert(&f->t, a2, &prev), 0); /* replace needs no node */
    assert_ptr_equal(prev, a);
    htkv_mem_fail_hook = NULL;
    assert_true(htkv_trie_verify(&f->t));

    /* Build a leftmost path deeper than the cursor's first stack, then fail its growth. */
    unsigned char k[101];
    for (uint32_t i = 0; i < 100; i++) {
        (void)fixture_put(f, k, left_chain_key(k, i));
    }
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    fail_after = 0;
    htkv_mem_fail_hook = fail_countdown;
    assert_int_equal(htkv_trie_cursor_seek(&c, "\0", 1), -ENOMEM); /* goes left: pushes */
    assert_int_equal(htkv_trie_cursor_error(&c), -ENOMEM);
    assert_null(htkv_trie_cursor_next(&c));
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, "\0", 1), -ENOMEM);
    fail_after = 1; /* the first stack, not its growth: next() runs out in the chain */
    assert_int_equal(htkv_trie_cursor_seek(&c, NULL, 0), 0);
    assert_null(htkv_trie_cursor_next(&c));
    assert_int_equal(htkv_trie_cursor_error(&c), -ENOMEM);
    htkv_mem_fail_hook = NULL;
    assert_true(htkv_trie_verify(&f->t));
    assert_int_equal(htkv_trie_cursor_seek(&c, NULL, 0), 0); /* a new seek clears the error */
    size_t n = 0;
    while (htkv_trie_cursor_next(&c) != NULL) {
        n++;
    }
    assert_int_equal(n, 101);
    assert_int_equal(htkv_trie_cursor_error(&c), 0);
    htkv_trie_cursor_fini(&c);
}

/* ---- Model-based fuzz ------------------------------------------------------------------------ */

/* The oracle: live records sorted by key. */
struct oracle {
    struct rec **a;
    size_t n;
};

/* Index of the first record >= key; *found when it equals key. */
static size_t
oracle_lower(const struct oracle *o, const unsigned char *key, uint32_t len, bool *found)
{
    size_t lo = 0;
    size_t hi = o->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (key_cmp(o->a[mid]->key, o->a[mid]->len, key, len) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = lo < o->n && key_cmp(o->a[lo]->key, o->a[lo]->len, key, len) == 0;
    return lo;
}

/* A key for the fuzz: small alphabets make shared prefixes, 0x00 and 0xFF common. */
static uint32_t
fuzz_key(uint64_t *rs, unsigned char *k)
{
    static const unsigned char alpha[] = { 0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff };
    uint64_t kind = tu_rand(rs) % 8;
    uint32_t len;
    if (kind < 5) {
        len = 1 + (uint32_t)(tu_rand(rs) % 5);
        for (uint32_t i = 0; i < len; i++) {
            k[i] = alpha[tu_rand(rs) % (kind < 3 ? 3 : sizeof(alpha))];
        }
    } else if (kind < 7) {
        len = 1 + (uint32_t)(tu_rand(rs) % 24);
        for (uint32_t i = 0; i < len; i++) {
            k[i] = (unsigned char)(i < 8 ? 'p' : tu_rand(rs)); /* long shared prefix */
        }
    } else {
        len = 1 + (uint32_t)(tu_rand(rs) % 3);
        for (uint32_t i = 0; i < len; i++) {
            k[i] = (unsigned char)tu_rand(rs);
        }
    }
    return len;
}

/* Seek @p k and compare up to @p limit values with the oracle (and the end, when reached). */
static void
fuzz_check_scan(struct trie_fixture *f, const struct oracle *o, const unsigned char *k,
                uint32_t len, size_t limit)
{
    bool found;
    size_t at = oracle_lower(o, k, len, &found);
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek(&c, k, len), 0);
    for (size_t i = at; i < o->n && i - at < limit; i++) {
        assert_ptr_equal(htkv_trie_cursor_next(&c), o->a[i]);
    }
    if (o->n - at <= limit) {
        assert_null(htkv_trie_cursor_next(&c));
    }
    htkv_trie_cursor_fini(&c);
}

/* Prefix seek of @p k: its answer and the run of matching keys agree with the oracle. */
static void
fuzz_check_prefix(struct trie_fixture *f, const struct oracle *o, const unsigned char *k,
                  uint32_t len)
{
    bool found;
    size_t at = oracle_lower(o, k, len, &found);
    bool has = at < o->n && o->a[at]->len >= len && memcmp(o->a[at]->key, k, len) == 0;
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &f->t);
    assert_int_equal(htkv_trie_cursor_seek_prefix(&c, k, len), has ? 1 : 0);
    for (size_t i = at; has && i < o->n; i++) {
        struct rec *r = htkv_trie_cursor_next(&c);
        assert_ptr_equal(r, o->a[i]);
        if (r->len < len || memcmp(r->key, k, len) != 0) {
            break;
        }
    }
    htkv_trie_cursor_fini(&c);
}

/* Compare the whole trie with the oracle: count, bytes, a full scan, and (debug) verify. */
static void
fuzz_check_all(struct trie_fixture *f, const struct oracle *o, uint64_t node_bytes)
{
    assert_int_equal(htkv_trie_count(&f->t), o->n);
    assert_int_equal(htkv_trie_bytes(&f->t), (o->n > 0 ? o->n - 1 : 0) * node_bytes);
    fuzz_check_scan(f, o, NULL, 0, SIZE_MAX);
    HTKV_DASSERT(htkv_trie_verify(&f->t));
}

/* Goal: random inserts, replaces, deletes, gets, seeks, prefix seeks and scans agree with a
 * sorted array after every step. Method: seeded ops on a few hundred clustered keys. */
static void
test_trie_fuzz_matches_sorted_array(void **state)
{
    struct trie_fixture *f = *state;
    uint64_t rs = tu_seed("trie_fuzz");
    enum { UNIVERSE = 600 };
    static unsigned char keys[UNIVERSE][32];
    static uint32_t lens[UNIVERSE];
    for (int i = 0; i < UNIVERSE; i++) {
        lens[i] = fuzz_key(&rs, keys[i]); /* duplicates are fine: the oracle compares keys */
    }
    struct oracle o = { .a = calloc(UNIVERSE, sizeof(struct rec *)) };
    assert_non_null(o.a);
    unsigned char k[32];
    uint64_t node_bytes = 0;
    const int ops = 20000;
    for (int step = 0; step < ops; step++) {
        uint64_t op = tu_rand(&rs) % 100;
        uint32_t len;
        if (op >= 45 && tu_rand(&rs) % 8 == 0) {
            len = fuzz_key(&rs, k); /* mostly absent: misses, seeks between keys */
        } else {
            uint64_t u = tu_rand(&rs) % UNIVERSE;
            len = lens[u];
            memcpy(k, keys[u], len);
        }
        bool found;
        size_t at = oracle_lower(&o, k, len, &found);
        if (op < 45) {
            struct rec *r = fixture_rec(f, k, len);
            void *prev;
            assert_int_equal(htkv_trie_insert(&f->t, r, &prev), 0);
            assert_ptr_equal(prev, found ? o.a[at] : NULL);
            if (!found) {
                assert_true(o.n < UNIVERSE);
                memmove(o.a + at + 1, o.a + at, (o.n - at) * sizeof(*o.a));
                o.n++;
            }
            o.a[at] = r;
            if (node_bytes == 0 && o.n == 2) {
                node_bytes = htkv_trie_bytes(&f->t);
            }
        } else if (op < 80) {
            assert_ptr_equal(htkv_trie_delete(&f->t, k, len), found ? o.a[at] : NULL);
            if (found) {
                memmove(o.a + at, o.a + at + 1, (o.n - at - 1) * sizeof(*o.a));
                o.n--;
            }
        } else if (op < 88) {
            assert_ptr_equal(htkv_trie_get(&f->t, k, len), found ? o.a[at] : NULL);
        } else if (op < 96) {
            uint32_t cut = (uint32_t)(tu_rand(&rs) % (len + 1)); /* also the empty key */
            fuzz_check_scan(f, &o, k, cut, tu_rand(&rs) % 40);
        } else {
            fuzz_check_prefix(f, &o, k, (uint32_t)(tu_rand(&rs) % (len + 1)));
        }
        assert_true(node_bytes != 0 || o.n < 2);
        fuzz_check_all(f, &o, node_bytes);
        if (step % 500 == 0) {
            assert_true(htkv_trie_verify(&f->t));
        }
    }
    assert_true(htkv_trie_verify(&f->t));
    free(o.a);
}

/* Goal: the seek fallback (a scan from the smallest key, used when a writer keeps changing the
 * path) returns what the normal seek does. Method: seek_tries = 0 and 1 against the oracle. */
static void
test_trie_seek_fallback_scan_matches_seek(void **state)
{
    struct trie_fixture *f = *state;
    uint64_t rs = tu_seed("trie_seek_fallback");
    unsigned char k[32];
    for (int i = 0; i < 300; i++) {
        uint32_t len = fuzz_key(&rs, k);
        (void)fixture_put(f, k, len);
    }
    struct rec **sorted = calloc(f->recs_count, sizeof(*sorted));
    assert_non_null(sorted);
    size_t n = fixture_sorted(f, sorted);
    struct oracle o = { .a = sorted, .n = n };
    for (uint32_t tries = 0; tries <= 2; tries++) {
        for (int i = 0; i < 300; i++) {
            uint32_t len = fuzz_key(&rs, k);
            bool found;
            size_t at = oracle_lower(&o, k, len, &found);
            struct trie_cursor c;
            htkv_trie_cursor_init(&c, &f->t);
            c.seek_tries = tries;
            assert_int_equal(htkv_trie_cursor_seek(&c, k, len), 0);
            for (size_t j = at; j < n; j++) {
                assert_ptr_equal(htkv_trie_cursor_next(&c), sorted[j]);
            }
            assert_null(htkv_trie_cursor_next(&c));
            htkv_trie_cursor_fini(&c);
        }
    }
    free(sorted);
}

/* ---- Concurrency ------------------------------------------------------------------------------
 */

/*
 * Universe: every string of 1..6 symbols over { 0x00, 'A', 0xFF } (1092 keys, deeply nested).
 * id % 4 == 0: stable, inserted before the readers start, never deleted, often replaced.
 * id % 4 == 1 or 2: inserted and deleted at random by the writer.
 * id % 4 == 3: never inserted: a reader that returns one has read garbage.
 */
#define CONC_KEYS 1092u
#define CONC_READERS 3

struct conc {
    struct trie t;
    struct ebr *ebr;
    struct ebr_limbo limbo;
    unsigned char keys[CONC_KEYS][6];
    uint32_t lens[CONC_KEYS];
    uint32_t stable[CONC_KEYS]; /* ids of stable keys, in key order */
    uint32_t stable_count;
    struct rec *cur[CONC_KEYS]; /* writer's view: the live record per id */
    atomic_bool stop;
    atomic_int failures;
    atomic_ullong scans;
    atomic_ullong items;
    uint64_t seed;
};

struct reader_arg {
    struct conc *cc;
    uint64_t rs;
    unsigned long long scans;
};

/* The trie's retire callback: unlinked nodes wait in the writer's EBR limbo. */
static void
conc_retire(void *ctx, void *node)
{
    struct conc *cc = ctx;
    htkv_ebr_retire(cc->ebr, &cc->limbo, node, htkv_trie_node_free);
}

/* Count a reader's failure (cmocka asserts only on the main thread); print the first few. */
static void
conc_fail(struct conc *cc, const char *what, const struct rec *r)
{
    if (atomic_fetch_add(&cc->failures, 1) < 5) {
        fprintf(stderr, "reader: %s (id %u, len %u)\n", what, r ? r->id : 0, r ? r->len : 0);
    }
}

/* Check one record a reader got: alive, one of ours, never a key that was never inserted. */
static bool
conc_rec_ok(struct conc *cc, const struct rec *r)
{
    if (r->magic != REC_LIVE) {
        conc_fail(cc, "freed record returned", NULL);
        return false;
    }
    if (r->id >= CONC_KEYS || r->id % 4 == 3) {
        conc_fail(cc, "never-inserted key returned", r);
        return false;
    }
    if (key_cmp(r->key, r->len, cc->keys[r->id], cc->lens[r->id]) != 0) {
        conc_fail(cc, "record key does not match its id", r);
        return false;
    }
    return true;
}

/* One scan from a random key: strict order, >= the seek key, and no stable key left out. */
static void
conc_scan(struct conc *cc, struct trie_cursor *c, uint64_t *rs)
{
    uint32_t sid = (uint32_t)(tu_rand(rs) % CONC_KEYS);
    uint32_t slen = (uint32_t)(tu_rand(rs) % (cc->lens[sid] + 1));
    const unsigned char *skey = cc->keys[sid];
    bool prefix = tu_rand(rs) % 4 == 0;
    /* Mostly short scans, so that most time goes to seeks, where the races are subtle. */
    unsigned long long limit = tu_rand(rs) % 4 == 0 ? ULLONG_MAX : tu_rand(rs) % 8;
    /* The first stable key >= the seek key: from there on none may be missing. */
    uint32_t j = 0;
    while (j < cc->stable_count &&
           key_cmp(cc->keys[cc->stable[j]], cc->lens[cc->stable[j]], skey, slen) < 0) {
        j++;
    }
    unsigned slot = htkv_ebr_enter(cc->ebr);
    int rc =
        prefix ? htkv_trie_cursor_seek_prefix(c, skey, slen) : htkv_trie_cursor_seek(c, skey, slen);
    if (rc < 0) {
        conc_fail(cc, "seek failed", NULL);
    }
    if (prefix && rc == 0) {
        /* No key has the prefix: then no stable key may have it either. */
        if (j < cc->stable_count && cc->lens[cc->stable[j]] >= slen &&
            memcmp(cc->keys[cc->stable[j]], skey, slen) == 0) {
            conc_fail(cc, "prefix seek missed a stable key", NULL);
        }
        j = cc->stable_count;
    }
    const struct rec *prev = NULL;
    const struct rec *r = NULL;
    unsigned long long n = 0;
    while (n < limit && (r = htkv_trie_cursor_next(c)) != NULL && conc_rec_ok(cc, r)) {
        n++;
        if (key_cmp(r->key, r->len, skey, slen) < 0) {
            conc_fail(cc, "key below the seek key", r);
        }
        if (prev != NULL && rec_cmp(prev, r) >= 0) {
            conc_fail(cc, "keys out of order or repeated", r);
        }
        while (j < cc->stable_count &&
               key_cmp(cc->keys[cc->stable[j]], cc->lens[cc->stable[j]], r->key, r->len) < 0) {
            conc_fail(cc, "stable key skipped", r);
            j++;
        }
        if (j < cc->stable_count && cc->stable[j] == r->id) {
            j++;
        }
        prev = r;
    }
    if (n < limit && r == NULL && j != cc->stable_count) {
        conc_fail(cc, "stable key missing at the end", prev);
    }
    /* Point reads: a stable key is always there, a never-inserted key never. */
    uint32_t gid = (uint32_t)(tu_rand(rs) % CONC_KEYS);
    const struct rec *g = htkv_trie_get(&cc->t, cc->keys[gid], cc->lens[gid]);
    if (gid % 4 == 0 && (g == NULL || !conc_rec_ok(cc, g) || g->id != gid)) {
        conc_fail(cc, "stable key not found", g);
    }
    if (gid % 4 == 3 && g != NULL) {
        conc_fail(cc, "never-inserted key found", g);
    }
    htkv_ebr_exit(cc->ebr, slot);
    atomic_fetch_add_explicit(&cc->items, n, memory_order_relaxed);
}

/* Reader thread: scan until the writer stops (at least once). */
static void *
conc_reader(void *p)
{
    struct reader_arg *a = p;
    struct conc *cc = a->cc;
    struct trie_cursor c;
    htkv_trie_cursor_init(&c, &cc->t);
    while (!atomic_load(&cc->stop) || a->scans == 0) {
        conc_scan(cc, &c, &a->rs);
        a->scans++;
    }
    htkv_trie_cursor_fini(&c);
    atomic_fetch_add(&cc->scans, a->scans);
    return NULL;
}

/* qsort_r comparator: universe ids by key. */
static int
conc_id_cmp(const void *a, const void *b, void *ctx)
{
    struct conc *cc = ctx;
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return key_cmp(cc->keys[x], cc->lens[x], cc->keys[y], cc->lens[y]);
}

/* Build the key universe and the sorted list of stable ids. */
static void
conc_build(struct conc *cc)
{
    uint32_t id = 0;
    static const unsigned char alpha[3] = { 0x00, 'A', 0xff };
    for (uint32_t len = 1; len <= 6; len++) {
        uint32_t total = 1;
        for (uint32_t i = 0; i < len; i++) {
            total *= 3;
        }
        for (uint32_t v = 0; v < total; v++, id++) {
            uint32_t x = v;
            for (uint32_t i = 0; i < len; i++) {
                cc->keys[id][len - 1 - i] = alpha[x % 3];
                x /= 3;
            }
            cc->lens[id] = len;
        }
    }
    assert_int_equal(id, CONC_KEYS);
    for (uint32_t i = 0; i < CONC_KEYS; i += 4) {
        cc->stable[cc->stable_count++] = i;
    }
    qsort_r(cc->stable, cc->stable_count, sizeof(uint32_t), conc_id_cmp, cc);
}

/* Writer step: replace a stable key, or flip a volatile key in or out. */
static void
conc_write(struct conc *cc, uint64_t *rs)
{
    uint32_t id = (uint32_t)(tu_rand(rs) % CONC_KEYS);
    if (id % 4 == 3) {
        id -= 1 + (uint32_t)(tu_rand(rs) % 2);
    }
    if (id % 4 != 0 && cc->cur[id] != NULL) {
        struct rec *d = htkv_trie_delete(&cc->t, cc->keys[id], cc->lens[id]);
        assert_ptr_equal(d, cc->cur[id]);
        htkv_ebr_retire(cc->ebr, &cc->limbo, d, rec_free);
        cc->cur[id] = NULL;
        return;
    }
    struct rec *r = rec_new(cc->keys[id], cc->lens[id], id);
    void *prev;
    assert_int_equal(htkv_trie_insert(&cc->t, r, &prev), 0);
    assert_ptr_equal(prev, cc->cur[id]);
    if (prev != NULL) {
        htkv_ebr_retire(cc->ebr, &cc->limbo, prev, rec_free);
    }
    cc->cur[id] = r;
}

/* Monotonic time in seconds. */
static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Goal: with one writer inserting, replacing and deleting, three lock-free readers always see
 * keys in strict order, never a key that was never inserted, never a freed record, and every
 * key that stays in the trie. Method: readers scan from random keys under EBR while the writer
 * churns a nested key set; nodes and records are retired through EBR. */
static void
test_trie_concurrent_readers_see_ordered_keys(void **state)
{
    (void)state;
    struct conc *cc = calloc(1, sizeof(*cc));
    assert_non_null(cc);
    cc->ebr = aligned_alloc(HTKV_CACHELINE, sizeof(struct ebr));
    assert_non_null(cc->ebr);
    htkv_ebr_init(cc->ebr);
    htkv_trie_init(&cc->t, rec_key_of, conc_retire, cc);
    cc->seed = tu_seed("trie_concurrency");
    uint64_t rs = cc->seed;
    conc_build(cc);
    for (uint32_t id = 0; id < CONC_KEYS; id++) {
        if (id % 4 == 0 || (id % 4 != 3 && tu_rand(&rs) % 2 == 0)) {
            cc->cur[id] = rec_new(cc->keys[id], cc->lens[id], id);
            void *prev;
            assert_int_equal(htkv_trie_insert(&cc->t, cc->cur[id], &prev), 0);
        }
    }
    assert_true(htkv_trie_verify(&cc->t));

    pthread_t th[CONC_READERS];
    struct reader_arg args[CONC_READERS];
    for (int i = 0; i < CONC_READERS; i++) {
        args[i] = (struct reader_arg){ .cc = cc, .rs = cc->seed * 2654435761u + (uint64_t)i + 1 };
        assert_int_equal(pthread_create(&th[i], NULL, conc_reader, &args[i]), 0);
    }
    /* At least 400k writes and 1 s of overlap; at most 3 s, which keeps sanitizer runs short. */
    double start = now_s();
    long ops = 0;
    for (;; ops++) {
        double t = now_s() - start;
        if ((ops >= 400000 && t >= 1.0) || t >= 3.0) {
            break;
        }
        conc_write(cc, &rs);
        if (ops % 64 == 0) {
            htkv_ebr_reclaim(cc->ebr, &cc->limbo);
        }
        if (ops % 5000 == 0) {
            HTKV_DASSERT(htkv_trie_verify(&cc->t));
        }
    }
    atomic_store(&cc->stop, true);
    for (int i = 0; i < CONC_READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    fprintf(stderr, "[trie_concurrency] %ld writes, %llu scans, %llu items, %d failures\n", ops,
            (unsigned long long)atomic_load(&cc->scans),
            (unsigned long long)atomic_load(&cc->items), atomic_load(&cc->failures));
    assert_int_equal(atomic_load(&cc->failures), 0);
    assert_true(atomic_load(&cc->scans) >= CONC_READERS);
    assert_true(htkv_trie_verify(&cc->t));
    size_t live = 0;
    for (uint32_t id = 0; id < CONC_KEYS; id++) {
        live += cc->cur[id] != NULL;
    }
    assert_int_equal(htkv_trie_count(&cc->t), live);

    htkv_trie_fini(&cc->t);
    htkv_ebr_limbo_fini(cc->ebr, &cc->limbo);
    for (uint32_t id = 0; id < CONC_KEYS; id++) {
        if (cc->cur[id] != NULL) {
            rec_free(cc->cur[id]);
        }
    }
    free(cc->ebr);
    free(cc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_trie_empty_answers_nothing, trie_setup, trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_one_key_lifecycle, trie_setup, trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_prefix_keys_and_extreme_bytes_keep_order,
                                        trie_setup, trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_64k_keys_differ_at_the_end, trie_setup,
                                        trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_seek_before_after_between_all_keys, trie_setup,
                                        trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_deep_chains_grow_cursor_stack, trie_setup,
                                        trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_out_of_memory_leaves_trie_unchanged, trie_setup,
                                        trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_fuzz_matches_sorted_array, trie_setup,
                                        trie_teardown),
        cmocka_unit_test_setup_teardown(test_trie_seek_fallback_scan_matches_seek, trie_setup,
                                        trie_teardown),
        cmocka_unit_test(test_trie_concurrent_readers_see_ordered_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
