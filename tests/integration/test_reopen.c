/*
 * test_reopen.c - what was written is what a reopened store holds: keys and values of every
 * size, every sync mode, many segment rotations, and versions that continue across reopen.
 */
#include "tests/support/testutil.h"

#include "engine/crc32c.h"
#include "engine/manifest.h"

/* A table of keys (by index) and the value each should hold. */
struct kv_table {
    size_t n;
    unsigned char **key;
    size_t *klen;
    unsigned char **val; /* NULL = absent */
    size_t *vlen;
};

static void
kv_init(struct kv_table *t, size_t n)
{
    t->n = n;
    t->key = calloc(n, sizeof(*t->key));
    t->klen = calloc(n, sizeof(*t->klen));
    t->val = calloc(n, sizeof(*t->val));
    t->vlen = calloc(n, sizeof(*t->vlen));
    assert_true(t->key && t->klen && t->val && t->vlen);
}

static void
kv_fini(struct kv_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->key[i]);
        free(t->val[i]);
    }
    free(t->key);
    free(t->klen);
    free(t->val);
    free(t->vlen);
}

static void
kv_set_key(struct kv_table *t, size_t i, size_t klen, uint64_t tag)
{
    t->key[i] = malloc(klen);
    assert_non_null(t->key[i]);
    tu_fill(t->key[i], klen, tag);
    /* Keep keys distinct whatever the filler gives: the index goes into the first bytes. */
    if (klen >= 5) {
        memcpy(t->key[i], "k", 1);
        uint32_t id = (uint32_t)i;
        memcpy(t->key[i] + 1, &id, 4);
    }
    t->klen[i] = klen;
}

/* Put a value of @p vlen bytes under key @p i, in the store and in the table. */
static void
kv_put(htkv_db *db, struct kv_table *t, size_t i, size_t vlen, uint64_t tag)
{
    free(t->val[i]);
    t->val[i] = malloc(vlen + 1);
    assert_non_null(t->val[i]);
    tu_fill(t->val[i], vlen, tag);
    t->vlen[i] = vlen;
    int rc = htkv_put(db, t->key[i], t->klen[i], vlen == 0 ? NULL : t->val[i], vlen);
    if (rc != 0) {
        fprintf(stderr, "put key %zu (%zu bytes, value %zu): %s\n", i, t->klen[i], vlen,
                htkv_strerror(rc));
    }
    assert_int_equal(rc, 0);
}

static void
kv_delete(htkv_db *db, struct kv_table *t, size_t i)
{
    assert_int_equal(htkv_delete(db, t->key[i], t->klen[i]), t->val[i] ? 0 : HTKV_ENOTFOUND);
    free(t->val[i]);
    t->val[i] = NULL;
    t->vlen[i] = 0;
}

static void
kv_verify(htkv_db *db, const struct kv_table *t)
{
    uint64_t live = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->key[i] == NULL) {
            continue;
        }
        tu_expect(db, t->key[i], t->klen[i], t->val[i], t->vlen[i]);
        assert_int_equal(htkv_contains(db, t->key[i], t->klen[i]), t->val[i] != NULL);
        live += t->val[i] != NULL;
    }
    assert_int_equal(tu_stats(db).live_keys, live);
}

/* Build the key set: all 256 one-byte keys, keys of random lengths 2..300, and keys of
 * HTKV_KEY_MAX - 1 and HTKV_KEY_MAX bytes. Returns the table. */
static void
kv_make_keys(struct kv_table *t, uint64_t *rng)
{
    kv_init(t, 256 + 400 + 4);
    for (size_t i = 0; i < 256; i++) {
        t->key[i] = malloc(1);
        assert_non_null(t->key[i]);
        t->key[i][0] = (unsigned char)i;
        t->klen[i] = 1;
    }
    for (size_t i = 256; i < 656; i++) {
        kv_set_key(t, i, 5 + (size_t)(tu_rand(rng) % 296), i);
    }
    kv_set_key(t, 656, HTKV_KEY_MAX - 1, 656);
    for (size_t i = 657; i < 660; i++) {
        kv_set_key(t, i, HTKV_KEY_MAX, i);
    }
}

static const size_t value_sizes[] = { 0,    1,    7,    8,    9,     15,    16,    17,   23,   24,
                                      25,   63,   64,   100,  255,   256,   1000,  4071, 4072, 4073,
                                      4095, 4096, 4097, 8192, 12345, 65535, 65536, 65537 };
#define NSIZES (sizeof(value_sizes) / sizeof(value_sizes[0]))

/* Goal: keys of 1 byte to HTKV_KEY_MAX and values of 0 bytes to 1 MiB, overwritten and deleted
 * in part, read back the same after close and reopen, in every sync mode, and also after a
 * reopen in another sync mode. Method: a table of 660 keys, value sizes cycling through the
 * size boundaries (record header, alignment, pages), three 1 MiB values; overwrite a third,
 * delete a fifth; verify before close, after reopen, after reopen in the next mode. */
static void
test_reopen_many_sizes_survive_in_each_sync_mode(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_reopen_many_sizes_survive_in_each_sync_mode");
    const int modes[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL, HTKV_SYNC_ALWAYS };
    for (int mi = 0; mi < 3; mi++) {
        uint64_t rng = seed + (uint64_t)mi;
        char *dir = tu_tmpdir("reopen-sizes");
        htkv_config cfg;
        tu_config(&cfg, dir, modes[mi]);
        struct kv_table t;
        kv_make_keys(&t, &rng);
        htkv_db *db = tu_open(&cfg);
        for (size_t i = 0; i < t.n; i++) {
            size_t vlen = value_sizes[(i + (size_t)mi) % NSIZES];
            if (i % 211 == 5) {
                vlen = 1u << 20;
            }
            kv_put(db, &t, i, vlen, seed ^ i);
        }
        for (size_t i = 0; i < t.n; i += 3) {
            kv_put(db, &t, i, value_sizes[tu_rand(&rng) % NSIZES], seed ^ (i << 20));
        }
        for (size_t i = 1; i < t.n; i += 5) {
            kv_delete(db, &t, i);
        }
        kv_delete(db, &t, 1); /* deleting an absent key writes nothing */
        kv_verify(db, &t);
        assert_int_equal(htkv_close(db), 0);

        db = tu_open(&cfg);
        kv_verify(db, &t);
        assert_int_equal(htkv_close(db), 0);

        cfg.sync_mode = modes[(mi + 1) % 3];
        db = tu_open(&cfg);
        kv_verify(db, &t);
        for (size_t i = 2; i < t.n; i += 7) {
            kv_put(db, &t, i, value_sizes[tu_rand(&rng) % NSIZES], seed ^ (i << 30));
        }
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
        kv_verify(db, &t);
        assert_int_equal(htkv_close(db), 0);
        kv_fini(&t);
        tu_rmrf(dir);
        free(dir);
    }
}

/* Goal: with 64 KiB segments the store rotates through many segments (and gives oversized
 * records a segment of their own), and every key survives reopen, also with another
 * max_segment_bytes. Method: 4,000 puts of 0..2,000-byte values, some overwritten, a few
 * 100 KiB values and a 64 KiB key with a 64 KiB value; check the segment count; reopen with
 * 64 KiB, write more, reopen with the default size; verify each time. */
static void
test_reopen_small_segments_rotate_many_times(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_reopen_small_segments_rotate_many_times");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("reopen-rotate");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    struct kv_table t;
    kv_init(&t, 3001);
    for (size_t i = 0; i < 3000; i++) {
        kv_set_key(&t, i, 5 + (size_t)(tu_rand(&rng) % 40), i);
    }
    kv_set_key(&t, 3000, HTKV_KEY_MAX, 3000);
    htkv_db *db = tu_open(&cfg);
    for (size_t i = 0; i < 3000; i++) {
        kv_put(db, &t, i, (size_t)(tu_rand(&rng) % 2001), seed + i);
    }
    for (size_t i = 0; i < 3000; i += 4) {
        kv_put(db, &t, i, (size_t)(tu_rand(&rng) % 2001), seed + i + 100000);
    }
    for (size_t i = 7; i < 3000; i += 500) {
        kv_put(db, &t, i, 100u << 10, seed + i + 200000); /* larger than a segment */
    }
    kv_put(db, &t, 3000, 64u << 10, seed + 3000);
    struct htkv_stats st = tu_stats(db);
    assert_true(st.segments >= 40); /* ~4 MB of records in 64 KiB segments */
    kv_verify(db, &t);
    assert_int_equal(htkv_close(db), 0);

    db = tu_open(&cfg);
    kv_verify(db, &t);
    struct htkv_stats st2 = tu_stats(db);
    assert_int_equal(st2.segments, st.segments);
    for (size_t i = 1; i < 3000; i += 3) {
        kv_put(db, &t, i, (size_t)(tu_rand(&rng) % 3000), seed + i + 300000);
    }
    for (size_t i = 2; i < 3000; i += 9) {
        kv_delete(db, &t, i);
    }
    assert_int_equal(htkv_close(db), 0);

    cfg.max_segment_bytes = 64ull << 20;
    db = tu_open(&cfg);
    kv_verify(db, &t);
    kv_put(db, &t, 3, 5000, seed + 400000);
    assert_int_equal(htkv_close(db), 0);
    cfg.max_segment_bytes = 64u << 10;
    db = tu_open(&cfg);
    kv_verify(db, &t);
    assert_int_equal(htkv_close(db), 0);
    kv_fini(&t);
    tu_rmrf(dir);
    free(dir);
}

static uint64_t
version_of(htkv_db *db, const char *key)
{
    uint64_t v = 0;
    size_t n;
    char buf[64];
    assert_int_equal(htkv_get_version(db, key, strlen(key), buf, sizeof(buf), &n, &v), 0);
    return v;
}

/* Goal: the version counter resumes after the highest version on disk, whatever the last
 * write was (put, delete, batch, or nothing since the last reopen). Method: record
 * stats.last_version before each close and compare after reopen; the next put gets the next
 * version. */
static void
test_reopen_last_version_continues(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("reopen-version");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).last_version, 0);
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        assert_int_equal(htkv_put(db, key, strlen(key), "v", 1), 0);
        assert_int_equal(version_of(db, key), (uint64_t)i + 1);
    }
    assert_int_equal(tu_stats(db).last_version, 100);
    assert_int_equal(htkv_close(db), 0);

    /* Last write a put. */
    db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).last_version, 100);
    assert_int_equal(htkv_put(db, "next", 4, "x", 1), 0);
    assert_int_equal(version_of(db, "next"), 101);
    assert_int_equal(htkv_delete(db, "key-3", 5), 0); /* 102 */
    assert_int_equal(tu_stats(db).last_version, 102);
    assert_int_equal(htkv_close(db), 0);

    /* Last write a delete; then nothing written between two reopens. */
    for (int round = 0; round < 2; round++) {
        db = tu_open(&cfg);
        assert_int_equal(tu_stats(db).last_version, 102);
        assert_int_equal(htkv_delete(db, "key-3", 5), HTKV_ENOTFOUND); /* writes nothing */
        assert_int_equal(htkv_close(db), 0);
    }

    /* Last write a batch across shards. */
    db = tu_open(&cfg);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "batch-%d", i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), "b", 1), 0);
    }
    assert_int_equal(htkv_write(db, b), 0);
    assert_int_equal(htkv_batch_version(b), 103);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).last_version, 103);
    assert_int_equal(version_of(db, "batch-7"), 103);
    assert_int_equal(htkv_put(db, "after", 5, "y", 1), 0);
    assert_int_equal(version_of(db, "after"), 104);
    assert_int_equal(version_of(db, "key-50"), 51);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Put @p vlen bytes under @p key and check the store took it. */
static void
put_len(htkv_db *db, const char *key, size_t vlen, uint64_t tag)
{
    unsigned char *v = malloc(vlen + 1);
    assert_non_null(v);
    tu_fill(v, vlen, tag);
    int rc = htkv_put(db, key, strlen(key), v, vlen);
    if (rc != 0) {
        fprintf(stderr, "put %s (%zu bytes): %s\n", key, vlen, htkv_strerror(rc));
    }
    assert_int_equal(rc, 0);
    free(v);
}

static void
expect_len(htkv_db *db, const char *key, size_t vlen, uint64_t tag)
{
    unsigned char *v = malloc(vlen + 1);
    assert_non_null(v);
    tu_fill(v, vlen, tag);
    tu_expect(db, key, strlen(key), v, vlen);
    free(v);
}

/* Goal: when the active segment at reopen is larger than max_segment_bytes (it holds an
 * oversized record, or the option was lowered since) and its data ends at (or within a SEAL
 * record of) a page boundary, the store still rotates on the next write and takes it: writes
 * are never refused (HTKV_EFAILED) for lack of room for the old segment's SEAL. Method: one
 * shard; (a) 64 KiB segments, a record sized so that its segment's data ends exactly at a page
 * boundary as the last write, close, reopen, put; (b) 1 MiB segments, data ending at a page
 * boundary past 64 KiB, reopen with 64 KiB segments, put; both then reopened and checked. */
static void
test_reopen_last_segment_larger_than_max_segment_bytes_takes_writes(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        char *dir = tu_tmpdir("reopen-oversized");
        htkv_config cfg;
        tu_config(&cfg, dir, HTKV_SYNC_NEVER);
        cfg.shard_count = 1;
        cfg.max_segment_bytes = variant == 0 ? 64u << 10 : 1u << 20;
        htkv_db *db = tu_open(&cfg);
        put_len(db, "first", 10, 1);
        /* Data of the active segment starts at 64 (its header); a record of key "big" (3
         * bytes) and V bytes takes align8(27 + V). Make the segment's data end at 17 pages. */
        uint64_t start = variant == 0 ? 64 : tu_stats(db).data_bytes + 64;
        size_t vlen = (size_t)(17 * 4096 - start - 24 - 3);
        put_len(db, "big", vlen, 2);
        struct htkv_stats st = tu_stats(db);
        assert_int_equal(st.segments, variant == 0 ? 2 : 1);
        assert_int_equal(htkv_close(db), 0);

        cfg.max_segment_bytes = 64u << 10;
        for (int round = 0; round < 2; round++) {
            db = tu_open(&cfg);
            expect_len(db, "first", 10, 1);
            expect_len(db, "big", vlen, 2);
            if (round == 0) {
                put_len(db, "after", 100, 3);
                put_len(db, "after2", 5000, 4);
                assert_false(tu_stats(db).failed);
            } else {
                expect_len(db, "after", 100, 3);
                expect_len(db, "after2", 5000, 4);
            }
            assert_int_equal(htkv_close(db), 0);
        }
        tu_rmrf(dir);
        free(dir);
    }
}

/* Set the format fields of MANIFEST-NNNNNN in @p dir (header and INIT edit) to @p format, with
 * their checksums: the store as a build of that format would have written it. */
static void
set_manifest_format(const char *dir, uint32_t format)
{
    char cur[17] = { 0 }, path[4200];
    snprintf(path, sizeof(path), "%s/CURRENT", dir);
    assert_int_equal(tu_read_at(path, 0, cur, 16), 0);
    cur[15] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dir, cur);
    unsigned char h[32 + 12 + 16];
    assert_int_equal(tu_read_at(path, 0, h, sizeof(h)), 0);
    htkv_store32(h + 8, format);
    htkv_store32(h + 28, htkv_crc32c(0, h, 28));
    assert_int_equal(htkv_load32(h + 32 + 8), MAN_INIT);
    htkv_store32(h + 32 + 12, format);
    htkv_store32(h + 32, htkv_crc32c(0, h + 32 + 4, 8 + 16));
    assert_int_equal(tu_write_at(path, 0, h, sizeof(h)), 0);
}

/* Goal: a store of format 1 opens with everything in it, and its writable open rewrites the
 * manifest in this build's format before appending edits of this format, so that a build of
 * format 1 then refuses it with HTKV_EVERSION instead of meeting edits it does not know.
 * Method: a store whose manifest says format 1; open; the new manifest's header says
 * HTKV_FORMAT_VERSION; every key reads back, also after another reopen. */
static void
test_reopen_format_1_store_is_upgraded(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("reopen-fmt1");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof(k), "f%d", i);
        assert_int_equal(htkv_put(db, k, strlen(k), k, strlen(k)), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    set_manifest_format(dir, 1);
    for (int round = 0; round < 2; round++) {
        db = tu_open(&cfg);
        for (int i = 0; i < 200; i++) {
            char k[16];
            snprintf(k, sizeof(k), "f%d", i);
            tu_expect(db, k, strlen(k), k, strlen(k));
        }
        assert_int_equal(htkv_close(db), 0);
        char cur[17] = { 0 }, path[4200];
        snprintf(path, sizeof(path), "%s/CURRENT", dir);
        assert_int_equal(tu_read_at(path, 0, cur, 16), 0);
        cur[15] = '\0';
        snprintf(path, sizeof(path), "%s/%s", dir, cur);
        unsigned char h[32 + 12 + 16];
        assert_int_equal(tu_read_at(path, 0, h, sizeof(h)), 0);
        assert_int_equal(htkv_load32(h + 8), HTKV_FORMAT_VERSION);
        assert_int_equal(htkv_load32(h + 32 + 12), HTKV_FORMAT_VERSION);
    }
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reopen_many_sizes_survive_in_each_sync_mode),
        cmocka_unit_test(test_reopen_small_segments_rotate_many_times),
        cmocka_unit_test(test_reopen_last_version_continues),
        cmocka_unit_test(test_reopen_last_segment_larger_than_max_segment_bytes_takes_writes),
        cmocka_unit_test(test_reopen_format_1_store_is_upgraded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
