/*
 * test_kix.c - key index files (engine/kix.h): every key found with its newest entry, misses
 * rejected by the filter at about the rate it promises, pages walked in key order, and damage
 * (every bit of a small file flipped in turn, cuts, another segment's file) refused or harmless:
 * a lookup answers what the model says or HTKV_ECORRUPT, never another entry. Seeded
 * (HTKV_SEED), the seed printed on failure.
 */
#include <fcntl.h>
#include <unistd.h>

#include "engine/hash.h"
#include "engine/kix.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "tests/support/testutil.h"

#define SEED 0x5eedull
#define TAIL (64ull << 20)

struct model {
    struct kix_ent *ents; /* what was written (sorted and deduplicated by the writer) */
    unsigned char **keys;
    size_t n, kept;
};

static int
key_cmp_ent(const void *a, const void *b)
{
    const struct kix_ent *x = a, *y = b;
    return htkv_key_cmp(x->key, x->key_len, y->key, y->key_len);
}

/* Key order, newest version first (the model's own sort, not the writer's). */
static int
model_cmp(const void *a, const void *b)
{
    const struct kix_ent *x = a, *y = b;
    int c = key_cmp_ent(a, b);
    return c != 0 ? c : (x->version < y->version) - (x->version > y->version);
}

/* @p n random entries, a quarter of them older versions of earlier keys, some keys long. */
static void
model_make(struct model *m, size_t n, uint64_t *rng)
{
    m->ents = calloc(n, sizeof(*m->ents));
    m->keys = calloc(n, sizeof(*m->keys));
    assert_true(m->ents != NULL && m->keys != NULL);
    m->n = n;
    for (size_t i = 0; i < n; i++) {
        struct kix_ent *e = &m->ents[i];
        uint64_t r = tu_rand(rng);
        if (i > 0 && r % 4 == 0) {
            *e = m->ents[tu_rand(rng) % i];
            e->version = e->version > 1 ? e->version - 1 : e->version; /* an older duplicate */
            e->off += 8;
            continue;
        }
        uint32_t len = r % 97 == 0 ? 4000 + (uint32_t)(tu_rand(rng) % 9000)
                                   : 1 + (uint32_t)(tu_rand(rng) % 40);
        m->keys[i] = malloc(len);
        assert_non_null(m->keys[i]);
        for (uint32_t j = 0; j < len; j++) {
            m->keys[i][j] = (unsigned char)("abcdefgh"[tu_rand(rng) % 8]);
        }
        *e = (struct kix_ent){ .key = m->keys[i],
                               .key_len = len,
                               .type = r % 5 == 0 ? REC_DEL : REC_SET,
                               .val_len = (uint32_t)(tu_rand(rng) % 300),
                               .off = SEG_DATA_OFF + 8 * (uint32_t)(tu_rand(rng) % 100000),
                               .version = 1000 + 2 * (uint64_t)i, /* unique per key */
                               .hash = htkv_hash(m->keys[i], len, SEED) };
    }
}

static void
model_free(struct model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->keys[i]);
    }
    free(m->keys);
    free(m->ents);
}

static void
write_model(struct model *m, const char *path)
{
    struct kix_desc d = { .shard = 3, .seg_id = 77, .seg_tail = TAIL };
    struct kix_ent *copy = malloc(m->n * sizeof(*copy) + 1);
    assert_non_null(copy);
    memcpy(copy, m->ents, m->n * sizeof(*copy));
    assert_int_equal(htkv_kix_write(path, &d, copy, m->n), 0); /* reorders its input */
    free(copy);
    /* The model: the newest entry of each key. */
    qsort(m->ents, m->n, sizeof(*m->ents), model_cmp);
    size_t w = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (w == 0 || key_cmp_ent(&m->ents[w - 1], &m->ents[i]) != 0) {
            m->ents[w++] = m->ents[i];
        }
    }
    m->kept = w;
}

static bool
ent_same(const struct kix_ent *a, const struct kix_ent *b)
{
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0 &&
           a->type == b->type && a->val_len == b->val_len && a->off == b->off &&
           a->version == b->version;
}

/* Every model key through htkv_kix_find(): 0 with its entry, or HTKV_ECORRUPT when @p damaged. */
static void
expect_all(const struct kix *k, const struct model *m, bool damaged)
{
    for (size_t i = 0; i < m->kept; i++) {
        const struct kix_ent *want = &m->ents[i];
        struct kix_ent got;
        uint64_t reads = 0;
        int rc = htkv_kix_find(k, want->key, want->key_len, want->hash, &got, &reads);
        if (damaged && rc == HTKV_ECORRUPT) {
            continue;
        }
        if (rc != 0 || !ent_same(&got, want)) {
            fail_msg("key %zu of %zu (len %u): rc %d, or another entry", i, m->kept, want->key_len,
                     rc);
        }
        assert_int_equal(reads, 1);
    }
}

static void
test_find_scan_and_filter(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("test_kix");
    char *dir = tu_tmpdir("kix");
    char path[4200];
    snprintf(path, sizeof(path), "%s/000000000077.kix", dir);
    struct model m;
    model_make(&m, 20000, &rng);
    write_model(&m, path);

    struct kix k;
    assert_int_equal(htkv_kix_open(path, 3, 77, TAIL, &k), 0);
    assert_int_equal(k.keys, m.kept);
    expect_all(&k, &m, false);
    /* The pages in order are the model in order. */
    size_t at = 0;
    for (uint32_t p = 0; p < k.pages; p++) {
        struct kix_page pg;
        assert_int_equal(htkv_kix_page(&k, p, &pg), 0);
        struct kix_ent e;
        while (htkv_kix_page_next(&pg, &e)) {
            assert_true(at < m.kept && ent_same(&e, &m.ents[at]));
            at++;
        }
    }
    assert_int_equal(at, m.kept);
    /* Misses: absent keys (digits never occur in model keys) pass the filter about 0.4% of the
     * time, and are never found. */
    size_t positives = 0, misses = 40000;
    for (size_t i = 0; i < misses; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "%zu-%llu", i, (unsigned long long)tu_rand(&rng));
        uint64_t h = htkv_hash(key, (size_t)len, SEED);
        positives += htkv_kix_may_contain(&k, h);
        struct kix_ent e;
        assert_int_equal(htkv_kix_find(&k, key, (uint32_t)len, h, &e, NULL), HTKV_ENOTFOUND);
    }
    double fpr = (double)positives / (double)misses;
    tu_context("false positive rate %.4f", fpr);
    assert_true(fpr < 0.02);
    /* About 1.2 bytes of RAM a key with short keys: the filter and a fence a page. */
    assert_true(htkv_kix_mem_bytes(&k) < 2 * k.keys + 64 * 1024);
    htkv_kix_close(&k);
    assert_int_equal(htkv_kix_check_file(path, 3, 77, TAIL, NULL), 0);
    /* Another segment's index, or one that claims records beyond the segment, is refused. */
    assert_int_equal(htkv_kix_open(path, 3, 78, TAIL, &k), HTKV_ECORRUPT);
    assert_int_equal(htkv_kix_open(path, 4, 77, TAIL, &k), HTKV_ECORRUPT);
    assert_int_equal(htkv_kix_open(path, 3, 77, TAIL - 1, &k), HTKV_ECORRUPT);
    strcat(path, ".none");
    assert_int_equal(htkv_kix_open(path, 3, 77, TAIL, &k), HTKV_ENOTFOUND);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}

static void
test_empty_and_bad_input(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("kix-empty");
    char path[4200];
    snprintf(path, sizeof(path), "%s/1.kix", dir);
    struct kix_desc d = { .shard = 0, .seg_id = 1, .seg_tail = 4096 };
    assert_int_equal(htkv_kix_write(path, &d, NULL, 0), 0);
    struct kix k;
    assert_int_equal(htkv_kix_open(path, 0, 1, 4096, &k), 0);
    struct kix_ent e;
    assert_int_equal(htkv_kix_find(&k, "a", 1, 1, &e, NULL), HTKV_ENOTFOUND);
    htkv_kix_close(&k);
    struct kix_ent bad = { .key = (const unsigned char *)"k",
                           .key_len = 1,
                           .type = REC_SET,
                           .off = SEG_DATA_OFF,
                           .version = 1 };
    struct kix_ent one = bad;
    one.key_len = 0;
    assert_int_equal(htkv_kix_write(path, &d, &one, 1), -EINVAL);
    one = bad;
    one.type = 9;
    assert_int_equal(htkv_kix_write(path, &d, &one, 1), -EINVAL);
    one = bad;
    one.off = 4096; /* its record would end beyond the segment's tail */
    assert_int_equal(htkv_kix_write(path, &d, &one, 1), -EINVAL);
    one = bad;
    one.version = 0;
    assert_int_equal(htkv_kix_write(path, &d, &one, 1), -EINVAL);
    /* The refused writes left the empty index as it was. */
    assert_int_equal(htkv_kix_check_file(path, 0, 1, 4096, NULL), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Flip every bit of a small index in turn (and cut it at every length): open, check and lookups
 * either refuse it or answer exactly as the model. */
static void
test_damage(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("test_kix_damage");
    char *dir = tu_tmpdir("kix-damage");
    char path[4200];
    snprintf(path, sizeof(path), "%s/000000000077.kix", dir);
    struct model m;
    model_make(&m, 120, &rng);
    for (size_t i = 0; i < m.n; i++) { /* short keys only: a small file */
        m.ents[i].key_len = m.ents[i].key_len > 40 ? 40 : m.ents[i].key_len;
        m.ents[i].hash = htkv_hash(m.ents[i].key, m.ents[i].key_len, SEED);
    }
    write_model(&m, path);
    size_t len;
    unsigned char *orig = tu_read_whole(path, &len);
    assert_non_null(orig);
    struct kix k0;
    assert_int_equal(htkv_kix_open(path, 3, 77, TAIL, &k0), 0);
    size_t meta_end = KIX_HDR_BYTES + (size_t)htkv_kix_mem_bytes(&k0), pad_end = k0.pages_off;
    htkv_kix_close(&k0);
    for (size_t off = 0; off < len; off += off >= meta_end && off < pad_end ? 61 : 1) {
        /* Every bit of the header, one bit of each later byte. */
        for (int bit = off < KIX_HDR_BYTES ? 0 : (int)(off % 8); bit < 8;
             bit += off < KIX_HDR_BYTES ? 1 : 8) {
            unsigned char b = orig[off] ^ (unsigned char)(1u << bit);
            assert_int_equal(tu_write_at(path, (long long)off, &b, 1), 0);
            tu_context("bit %d of byte %zu", bit, off);
            struct kix k;
            int rc = htkv_kix_open(path, 3, 77, TAIL, &k);
            if (rc == 0) {
                int crc = htkv_kix_check_file(path, 3, 77, TAIL, NULL);
                expect_all(&k, &m, crc != 0);
                htkv_kix_close(&k);
            } else {
                assert_true(rc == HTKV_ECORRUPT || rc == HTKV_EVERSION);
            }
            assert_int_equal(tu_write_at(path, (long long)off, &orig[off], 1), 0);
        }
    }
    for (size_t cut = 0; cut < len; cut += 7) {
        assert_int_equal(tu_truncate(path, (long long)cut), 0);
        struct kix k;
        assert_int_equal(htkv_kix_open(path, 3, 77, TAIL, &k), HTKV_ECORRUPT);
        assert_int_equal(tu_write_at(path, 0, orig, len), 0);
    }
    free(orig);
    model_free(&m);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_scan_and_filter),
        cmocka_unit_test(test_empty_and_bad_input),
        cmocka_unit_test(test_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
