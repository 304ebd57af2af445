/*
 * test_hashindex.c - the hash index (writer side and find): keys installed are found, growth keeps
 * them, replacing a key links the previous version.
 *
 * The records the entries point at live in a fake segment whose map is a malloc'd buffer, so
 * the index is tested without files.
 */
#include "tests/support/testutil.h"

#include "engine/hash.h"
#include "engine/hashindex.h"

#define HASH_SEED 0x5EEDull

struct hidx_fixture {
    struct hidx idx;
    struct seg *seg;
    uint64_t map_bytes;
    unsigned retired; /* tables handed to retire (each one a growth) */
    uint64_t version;
    uint64_t visits; /* foreach callback count */
};

static void
fx_retire(void *ctx, void *table)
{
    struct hidx_fixture *f = ctx;
    f->retired++;
    htkv_hidx_table_free(table); /* no concurrent reader in these tests */
}

static int
hidx_setup(void **state)
{
    struct hidx_fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->seg = calloc(1, sizeof(struct seg) + 16);
    assert_non_null(f->seg);
    f->map_bytes = 64ull << 20;
    f->seg->map = malloc(f->map_bytes);
    assert_non_null(f->seg->map);
    f->seg->id = 7;
    f->seg->map_bytes = f->map_bytes;
    f->seg->file_bytes = f->map_bytes;
    f->seg->tail = SEG_DATA_OFF;
    strcpy(f->seg->path, "fake.seg");
    assert_int_equal(htkv_hidx_init(&f->idx), 0);
    *state = f;
    return 0;
}

static int
hidx_teardown(void **state)
{
    struct hidx_fixture *f = *state;
    htkv_hidx_fini(&f->idx);
    free(f->seg->map);
    free(f->seg);
    free(f);
    return 0;
}

/* Append a record for @p key to the fake segment and return a fresh entry for it (not
 * installed). @p hash overrides the key's hash when non-zero. */
static struct hidx_ent *
fx_entry(struct hidx_fixture *f, const void *key, uint32_t klen, uint32_t vlen, uint64_t hash)
{
    struct seg *s = f->seg;
    uint64_t size = htkv_rec_size(klen, vlen);
    assert_true(s->tail + size <= f->map_bytes);
    unsigned char val[256];
    assert_true(vlen <= sizeof(val));
    tu_fill(val, vlen, f->version);
    uint64_t off = s->tail;
    uint64_t v = ++f->version;
    htkv_rec_encode(s->map + off, s->id, off, REC_SET, 0, v, key, klen, val, vlen);
    s->tail += size;
    struct hidx_ent *e = htkv_mem_alloc(sizeof(*e));
    assert_non_null(e);
    *e = (struct hidx_ent){ .version = v,
                            .hash = hash != 0 ? hash : htkv_hash(key, klen, HASH_SEED),
                            .seg = s,
                            .off = (uint32_t)off,
                            .rec_bytes = (uint32_t)(REC_HDR_BYTES + klen + vlen),
                            .key_len = klen,
                            .del = 0 };
    atomic_init(&e->prev, NULL);
    return e;
}

static size_t
key_of(char *buf, unsigned i)
{
    /* Keys of varied lengths (1..40 bytes) that are all distinct. */
    int n = snprintf(buf, 64, "%u", i);
    size_t pad = (i * 2654435761u) % 28;
    memset(buf + n, 'a' + (char)(i % 26), pad);
    buf[n + pad] = '/';
    return (size_t)n + pad + 1;
}

static struct hidx_ent *
fx_find(struct hidx_fixture *f, const void *key, size_t klen)
{
    return htkv_hidx_find(&f->idx, htkv_hash(key, klen, HASH_SEED), key, (uint32_t)klen);
}

static struct hidx_ent *
fx_install(struct hidx_fixture *f, struct hidx_ent *e)
{
    int rc = -1;
    struct hidx_ent *old = htkv_hidx_install(&f->idx, e, &rc, fx_retire, f);
    assert_int_equal(rc, 0);
    return old;
}

/* Goal: many keys installed are each found as themselves; absent keys are not found.
 * Method: install 100,000 keys of varied lengths; find each (its entry, right version); look
 * up 100,000 keys never installed. */
static void
test_hashindex_install_find_many_keys(void **state)
{
    struct hidx_fixture *f = *state;
    const unsigned n = 100000;
    struct hidx_ent **ents = malloc(n * sizeof(*ents));
    assert_non_null(ents);
    char key[64];
    for (unsigned i = 0; i < n; i++) {
        size_t kl = key_of(key, i);
        ents[i] = fx_entry(f, key, (uint32_t)kl, i % 17, 0);
        assert_null(fx_install(f, ents[i]));
    }
    assert_int_equal(f->idx.entries, n);
    for (unsigned i = 0; i < n; i++) {
        size_t kl = key_of(key, i);
        struct hidx_ent *e = fx_find(f, key, kl);
        assert_ptr_equal(e, ents[i]);
        assert_true(hidx_ent_key_eq(e, key, (uint32_t)kl));
        assert_null(atomic_load(&e->prev));
    }
    for (unsigned i = n; i < 2 * n; i++) {
        size_t kl = key_of(key, i);
        assert_null(fx_find(f, key, kl));
    }
    /* A prefix or an extension of a stored key is another key. */
    size_t kl = key_of(key, 12345);
    assert_null(fx_find(f, key, kl - 1));
    key[kl] = 'x';
    assert_null(fx_find(f, key, kl + 1));
    free(ents);
}

/* Goal: growing the table keeps every key findable, and the load factor bound holds.
 * Method: install keys one at a time; whenever a growth happened (retire called), find every
 * key installed so far in the new table and check used <= 3/4 of the slots. */
static void
test_hashindex_growth_keeps_every_key_findable(void **state)
{
    struct hidx_fixture *f = *state;
    const unsigned n = 60000;
    struct hidx_ent **ents = malloc(n * sizeof(*ents));
    assert_non_null(ents);
    char key[64];
    unsigned growths = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t kl = key_of(key, i);
        ents[i] = fx_entry(f, key, (uint32_t)kl, 3, 0);
        unsigned before = f->retired;
        assert_null(fx_install(f, ents[i]));
        struct hidx_table *t = atomic_load(&f->idx.table);
        assert_true(t->used * HIDX_LOAD_DEN <= (t->mask + 1) * HIDX_LOAD_NUM);
        assert_int_equal(t->used, i + 1);
        if (f->retired != before) {
            growths++;
            assert_int_equal((t->mask + 1) & t->mask, 0); /* power of two */
            for (unsigned k = 0; k <= i; k++) {
                size_t kk = key_of(key, k);
                assert_ptr_equal(fx_find(f, key, kk), ents[k]);
            }
        }
    }
    /* 1024 slots hold 768 keys; 60,000 keys need 131,072 slots: 7 doublings. */
    assert_int_equal(growths, 7);
    assert_int_equal(atomic_load(&f->idx.table)->mask + 1, 131072);
    free(ents);
}

/* Goal: a new version of a key replaces it as head and links the old one as prev; the count
 * of keys does not change. Method: install five versions of 2,000 keys, with growth happening
 * in between; check the returned old head, the head's chain and find. */
static void
test_hashindex_replacing_a_key_links_prev(void **state)
{
    struct hidx_fixture *f = *state;
    const unsigned n = 2000, versions = 5;
    struct hidx_ent **ents = calloc((size_t)n * versions, sizeof(*ents));
    assert_non_null(ents);
    char key[64];
    for (unsigned v = 0; v < versions; v++) {
        for (unsigned i = 0; i < n; i++) {
            size_t kl = key_of(key, i);
            struct hidx_ent *e = fx_entry(f, key, (uint32_t)kl, 8, 0);
            ents[(size_t)v * n + i] = e;
            struct hidx_ent *old = fx_install(f, e);
            if (v == 0) {
                assert_null(old);
            } else {
                assert_ptr_equal(old, ents[(size_t)(v - 1) * n + i]);
            }
            assert_ptr_equal(atomic_load(&e->prev), old);
        }
        assert_int_equal(f->idx.entries, n);
    }
    for (unsigned i = 0; i < n; i++) {
        size_t kl = key_of(key, i);
        struct hidx_ent *e = fx_find(f, key, kl);
        for (int v = (int)versions - 1; v >= 0; v--) {
            assert_ptr_equal(e, ents[(size_t)v * n + i]);
            e = atomic_load(&e->prev);
        }
        assert_null(e);
    }
    assert_true(f->retired >= 1); /* 2,000 keys grew the table past 1,024 slots */
    free(ents);
}

/* Goal: keys whose hashes collide fully, or share a slot but not a tag, are kept apart by the
 * key comparison. Method: 500 keys all given one hash; 500 keys whose hashes differ only in
 * the tag bits; 500 that share the tag and differ in the slot bits; find each. */
static void
test_hashindex_colliding_hashes_stay_distinct(void **state)
{
    struct hidx_fixture *f = *state;
    const unsigned n = 500;
    struct hidx_ent *ents[3][500];
    char key[64];
    for (unsigned g = 0; g < 3; g++) {
        for (unsigned i = 0; i < n; i++) {
            size_t kl = key_of(key, g * 1000 + i);
            uint64_t hash = g == 0   ? 0xDEADBEEFCAFEF00Dull
                            : g == 1 ? (0x0000BEEFCAFEF00Dull | ((uint64_t)(i + 1) << 48))
                                     : (0xABCD000000000000ull | (uint64_t)(i + 1) * 4099);
            ents[g][i] = fx_entry(f, key, (uint32_t)kl, 1, hash);
            assert_null(fx_install(f, ents[g][i]));
        }
    }
    assert_int_equal(f->idx.entries, 3 * n);
    for (unsigned g = 0; g < 3; g++) {
        for (unsigned i = 0; i < n; i++) {
            size_t kl = key_of(key, g * 1000 + i);
            assert_ptr_equal(htkv_hidx_find(&f->idx, ents[g][i]->hash, key, (uint32_t)kl),
                             ents[g][i]);
        }
    }
    /* Same hash, key not stored. */
    size_t kl = key_of(key, 999);
    assert_null(htkv_hidx_find(&f->idx, 0xDEADBEEFCAFEF00Dull, key, (uint32_t)kl));
    /* A replacement among full collisions replaces the right key only. */
    kl = key_of(key, 250);
    struct hidx_ent *e = fx_entry(f, key, (uint32_t)kl, 1, 0xDEADBEEFCAFEF00Dull);
    assert_ptr_equal(fx_install(f, e), ents[0][250]);
    assert_ptr_equal(htkv_hidx_find(&f->idx, e->hash, key, (uint32_t)kl), e);
    kl = key_of(key, 251);
    assert_ptr_equal(htkv_hidx_find(&f->idx, e->hash, key, (uint32_t)kl), ents[0][251]);
}

/* Goal: after htkv_hidx_reserve(n), n new keys install without growing (the write path relies
 * on it: install must not fail after records are written). Method: reserve, then install and
 * watch the table pointer and the retire count. */
static void
test_hashindex_reserve_prevents_growth_during_installs(void **state)
{
    struct hidx_fixture *f = *state;
    char key[64];
    for (unsigned round = 0; round < 6; round++) {
        unsigned more = 700 + round * 1500;
        assert_int_equal(htkv_hidx_reserve(&f->idx, more, fx_retire, f), 0);
        struct hidx_table *t = atomic_load(&f->idx.table);
        unsigned retired = f->retired;
        uint64_t base = f->idx.entries;
        for (unsigned i = 0; i < more; i++) {
            size_t kl = key_of(key, (unsigned)base + i);
            assert_null(fx_install(f, fx_entry(f, key, (uint32_t)kl, 0, 0)));
        }
        assert_ptr_equal(atomic_load(&f->idx.table), t);
        assert_int_equal(f->retired, retired);
    }
    assert_true(f->retired > 0);
}

static void
count_ent(struct hidx_ent *e, void *ctx)
{
    struct hidx_fixture *f = ctx;
    /* Every head must be its key's newest version: the one find returns. */
    const unsigned char *key = hidx_ent_rec(e) + REC_HDR_BYTES;
    assert_ptr_equal(htkv_hidx_find(&f->idx, e->hash, key, e->key_len), e);
    f->visits++;
}

/* Goal: foreach visits exactly the head entry of every key. Method: 3,000 keys, a third
 * replaced once; count visits and check each visited entry is what find returns. */
static void
test_hashindex_foreach_visits_every_head_once(void **state)
{
    struct hidx_fixture *f = *state;
    char key[64];
    const unsigned n = 3000;
    for (unsigned i = 0; i < n; i++) {
        size_t kl = key_of(key, i);
        fx_install(f, fx_entry(f, key, (uint32_t)kl, 2, 0));
    }
    for (unsigned i = 0; i < n; i += 3) {
        size_t kl = key_of(key, i);
        assert_non_null(fx_install(f, fx_entry(f, key, (uint32_t)kl, 2, 0)));
    }
    htkv_hidx_foreach(&f->idx, count_ent, f);
    assert_int_equal(f->visits, n);
    assert_true(htkv_hidx_table_bytes(&f->idx) >= 4096 * sizeof(uint64_t));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hashindex_install_find_many_keys, hidx_setup,
                                        hidx_teardown),
        cmocka_unit_test_setup_teardown(test_hashindex_growth_keeps_every_key_findable, hidx_setup,
                                        hidx_teardown),
        cmocka_unit_test_setup_teardown(test_hashindex_replacing_a_key_links_prev, hidx_setup,
                                        hidx_teardown),
        cmocka_unit_test_setup_teardown(test_hashindex_colliding_hashes_stay_distinct, hidx_setup,
                                        hidx_teardown),
        cmocka_unit_test_setup_teardown(test_hashindex_reserve_prevents_growth_during_installs,
                                        hidx_setup, hidx_teardown),
        cmocka_unit_test_setup_teardown(test_hashindex_foreach_visits_every_head_once, hidx_setup,
                                        hidx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
