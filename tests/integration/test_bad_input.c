/*
 * test_bad_input.c - every documented bad input gets its documented error and changes nothing.
 */
#include "tests/support/testutil.h"

#include <errno.h>
#include <math.h>

/* Keys and values present in the store of every test, and how to check nothing moved. */
struct bi_fixture {
    char *dir;
    htkv_config cfg;
    htkv_db *db;
    struct htkv_stats before;
};

static int
bi_setup(void **state)
{
    struct bi_fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = tu_tmpdir("bad-input");
    tu_config(&f->cfg, f->dir, HTKV_SYNC_INTERVAL);
    f->cfg.max_value_bytes = 1000;
    f->db = tu_open(&f->cfg);
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(htkv_put(f->db, key, strlen(key), key, strlen(key)), 0);
    }
    assert_int_equal(htkv_put(f->db, "empty", 5, NULL, 0), 0);
    assert_int_equal(htkv_delete(f->db, "k7", 2), 0);
    f->before = tu_stats(f->db);
    *state = f;
    return 0;
}

/* The store still holds exactly what bi_setup wrote. */
static void
bi_unchanged(struct bi_fixture *f)
{
    struct htkv_stats st = tu_stats(f->db);
    assert_int_equal(st.live_keys, f->before.live_keys);
    assert_int_equal(st.tombstones, f->before.tombstones);
    assert_int_equal(st.last_version, f->before.last_version);
    assert_int_equal(st.data_bytes, f->before.data_bytes);
    assert_int_equal(st.puts, f->before.puts);
    assert_int_equal(st.deletes, f->before.deletes);
    assert_int_equal(st.batches, f->before.batches);
    assert_int_equal(st.segments, f->before.segments);
    char key[16];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        tu_expect(f->db, key, strlen(key), i == 7 ? NULL : key, strlen(key));
    }
    tu_expect(f->db, "empty", 5, "", 0);
}

static int
bi_teardown(void **state)
{
    struct bi_fixture *f = *state;
    bi_unchanged(f);
    assert_int_equal(htkv_close(f->db), 0);
    /* And after reopen. */
    f->db = tu_open(&f->cfg);
    f->before.puts = f->before.deletes = f->before.batches = 0;
    f->before.tombstones = tu_stats(f->db).tombstones;
    bi_unchanged(f);
    assert_int_equal(htkv_close(f->db), 0);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Goal: a NULL handle is -EINVAL for every call (htkv_close(NULL) is 0). Method: call each. */
static void
test_bad_input_null_db(void **state)
{
    struct bi_fixture *f = *state;
    char buf[8];
    size_t n;
    uint64_t v;
    void *p = NULL;
    struct htkv_stats st;
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_put(NULL, "k", 1, "v", 1), -EINVAL);
    assert_int_equal(htkv_get(NULL, "k", 1, buf, sizeof(buf), &n), -EINVAL);
    assert_int_equal(htkv_get_version(NULL, "k", 1, buf, sizeof(buf), &n, &v), -EINVAL);
    assert_int_equal(htkv_get_alloc(NULL, "k", 1, &p, &n), -EINVAL);
    assert_null(p);
    assert_int_equal(htkv_delete(NULL, "k", 1), -EINVAL);
    assert_int_equal(htkv_contains(NULL, "k", 1), -EINVAL);
    assert_int_equal(htkv_write(NULL, b), -EINVAL);
    assert_int_equal(htkv_flush(NULL), -EINVAL);
    assert_int_equal(htkv_stats(NULL, &st), -EINVAL);
    assert_int_equal(htkv_close(NULL), 0);
    htkv_batch_destroy(b);
    bi_unchanged(f);
}

/* Goal: NULL key with a length, empty key (NULL or not) are -EINVAL, and a key of
 * HTKV_KEY_MAX + 1 bytes is HTKV_ETOOBIG, for every call that takes a key; HTKV_KEY_MAX itself
 * is fine. Method: call each; check the store after. */
static void
test_bad_input_bad_keys(void **state)
{
    struct bi_fixture *f = *state;
    char buf[8];
    size_t n;
    uint64_t v;
    void *p = NULL;
    unsigned char *big = malloc(HTKV_KEY_MAX + 1);
    assert_non_null(big);
    memset(big, 'k', HTKV_KEY_MAX + 1);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    struct {
        const void *key;
        size_t klen;
        int want;
    } cases[] = {
        { NULL, 1, -EINVAL },
        { NULL, 0, -EINVAL },
        { "k1", 0, -EINVAL },
        { big, HTKV_KEY_MAX + 1, HTKV_ETOOBIG },
        { big, (size_t)1 << 40, HTKV_ETOOBIG },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const void *k = cases[i].key;
        size_t kl = cases[i].klen;
        int want = cases[i].want;
        assert_int_equal(htkv_put(f->db, k, kl, "v", 1), want);
        assert_int_equal(htkv_get(f->db, k, kl, buf, sizeof(buf), &n), want);
        v = 77;
        assert_int_equal(htkv_get_version(f->db, k, kl, buf, sizeof(buf), &n, &v), want);
        assert_int_equal(v, 0);
        assert_int_equal(htkv_get_alloc(f->db, k, kl, &p, &n), want);
        assert_null(p);
        assert_int_equal(htkv_delete(f->db, k, kl), want);
        assert_int_equal(htkv_contains(f->db, k, kl), want);
        assert_int_equal(htkv_batch_put(b, k, kl, "v", 1), want);
        assert_int_equal(htkv_batch_delete(b, k, kl), want);
        assert_int_equal(htkv_batch_check(b, k, kl, 0), want);
        assert_int_equal(htkv_batch_count(b), 0); /* a refused operation is not added */
    }
    assert_int_equal(htkv_write(f->db, b), 0); /* still empty */
    htkv_batch_destroy(b);
    bi_unchanged(f);
    /* The largest key works, and can be deleted again. */
    assert_int_equal(htkv_put(f->db, big, HTKV_KEY_MAX, "v", 1), 0);
    tu_expect(f->db, big, HTKV_KEY_MAX, "v", 1);
    big[HTKV_KEY_MAX - 1] = 'x';
    tu_expect(f->db, big, HTKV_KEY_MAX, NULL, 0);
    big[HTKV_KEY_MAX - 1] = 'k';
    assert_int_equal(htkv_delete(f->db, big, HTKV_KEY_MAX), 0);
    free(big);
    f->before = tu_stats(f->db); /* the two writes above moved the figures */
}

/* Goal: a value over max_value_bytes is HTKV_ETOOBIG (put, and a batch holding one: nothing
 * of the batch written); exactly max_value_bytes is fine; a NULL value with a non-zero length
 * is -EINVAL; a NULL value with length 0 is an empty value. Method: call; check. */
static void
test_bad_input_bad_values(void **state)
{
    struct bi_fixture *f = *state;
    unsigned char *val = calloc(1, 2000);
    assert_non_null(val);
    assert_int_equal(htkv_put(f->db, "k1", 2, val, 1001), HTKV_ETOOBIG);
    assert_int_equal(htkv_put(f->db, "k1", 2, val, (size_t)1 << 40), HTKV_ETOOBIG);
    assert_int_equal(htkv_put(f->db, "k1", 2, NULL, 1), -EINVAL);
    assert_int_equal(htkv_put(f->db, "new", 3, NULL, 5), -EINVAL);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_put(b, "k1", 2, NULL, 1), -EINVAL);
    assert_int_equal(htkv_batch_put(b, "k1", 2, val, (size_t)HTKV_VALUE_MAX_LIMIT + 1),
                     HTKV_ETOOBIG);
    assert_int_equal(htkv_batch_count(b), 0);
    assert_int_equal(htkv_batch_put(b, "k2", 2, "ok", 2), 0);
    assert_int_equal(htkv_batch_put(b, "k3", 2, val, 1001), 0); /* limit known at write time */
    assert_int_equal(htkv_batch_delete(b, "k4", 2), 0);
    assert_int_equal(htkv_write(f->db, b), HTKV_ETOOBIG);
    assert_int_equal(htkv_batch_version(b), 0);
    htkv_batch_destroy(b);
    bi_unchanged(f);

    assert_int_equal(htkv_put(f->db, "max", 3, val, 1000), 0);
    tu_expect(f->db, "max", 3, val, 1000);
    assert_int_equal(htkv_put(f->db, "nullempty", 9, NULL, 0), 0);
    tu_expect(f->db, "nullempty", 9, "", 0);
    assert_int_equal(htkv_delete(f->db, "max", 3), 0);
    assert_int_equal(htkv_delete(f->db, "nullempty", 9), 0);
    free(val);
    f->before = tu_stats(f->db);
}

/* Goal: NULL out pointers and NULL buffers with a capacity are -EINVAL; the optional outputs
 * (vlen, version) may be NULL. Method: call each. */
static void
test_bad_input_null_out_pointers(void **state)
{
    struct bi_fixture *f = *state;
    size_t n = 0;
    char buf[8];
    assert_int_equal(htkv_open(&f->cfg, NULL), -EINVAL);
    htkv_db *db = NULL;
    assert_int_equal(htkv_open(NULL, &db), -EINVAL);
    assert_int_equal(htkv_stats(f->db, NULL), -EINVAL);
    assert_int_equal(htkv_get_alloc(f->db, "k1", 2, NULL, &n), -EINVAL);
    assert_int_equal(htkv_batch_create(NULL), -EINVAL);
    assert_int_equal(htkv_get(f->db, "k1", 2, NULL, 5, &n), -EINVAL);
    assert_int_equal(htkv_get_version(f->db, "k1", 2, NULL, 5, &n, NULL), -EINVAL);
    /* Optional outputs. */
    assert_int_equal(htkv_get(f->db, "k1", 2, buf, sizeof(buf), NULL), 0);
    assert_memory_equal(buf, "k1", 2);
    assert_int_equal(htkv_get_version(f->db, "k1", 2, buf, sizeof(buf), NULL, NULL), 0);
    void *p = NULL;
    assert_int_equal(htkv_get_alloc(f->db, "k1", 2, &p, NULL), 0);
    assert_memory_equal(p, "k1", 2);
    htkv_free(p);
    htkv_free(NULL);
    /* NULL batch. */
    assert_int_equal(htkv_write(f->db, NULL), -EINVAL);
    assert_int_equal(htkv_batch_put(NULL, "k", 1, "v", 1), -EINVAL);
    assert_int_equal(htkv_batch_delete(NULL, "k", 1), -EINVAL);
    assert_int_equal(htkv_batch_check(NULL, "k", 1, 0), -EINVAL);
    htkv_batch_clear(NULL);
    htkv_batch_destroy(NULL);
    bi_unchanged(f);
}

/* Goal: a failed htkv_open leaves NULL in *out whatever the reason ("NULL on failure", STYLE
 * S3.4), so that a caller's later htkv_close(db) is harmless. Method: a non-NULL sentinel in
 * the out pointer; open with a NULL config, a bad config, a locked store. */
static void
test_bad_input_failed_open_sets_out_to_null(void **state)
{
    struct bi_fixture *f = *state;
    htkv_db *sentinel = (htkv_db *)f;
    htkv_db *db = sentinel;
    htkv_config bad = f->cfg;
    bad.sync_mode = 99;
    assert_int_equal(htkv_open(&bad, &db), -EINVAL);
    assert_null(db);
    db = sentinel;
    assert_int_equal(htkv_open(&f->cfg, &db), HTKV_ELOCKED);
    assert_null(db);
    db = sentinel;
    assert_int_equal(htkv_open(NULL, &db), -EINVAL);
    assert_null(db);
    bi_unchanged(f);
}

/* Goal: htkv_get into a too-small buffer returns HTKV_ETOOSMALL with the size needed and
 * copies nothing; the right size works; a zero-length value needs no buffer. Method: sizes
 * around the value's length, a canary in the buffer. */
static void
test_bad_input_get_too_small_buffer(void **state)
{
    struct bi_fixture *f = *state;
    unsigned char val[600];
    tu_fill(val, sizeof(val), 5);
    assert_int_equal(htkv_put(f->db, "long", 4, val, sizeof(val)), 0);
    unsigned char buf[700];
    for (size_t cap = 0; cap < sizeof(val); cap += 37) {
        memset(buf, 0xCC, sizeof(buf));
        size_t n = 0;
        uint64_t v = 9;
        assert_int_equal(htkv_get(f->db, "long", 4, cap ? buf : NULL, cap, &n), HTKV_ETOOSMALL);
        assert_int_equal(n, sizeof(val));
        n = 0;
        assert_int_equal(htkv_get_version(f->db, "long", 4, buf, cap, &n, &v), HTKV_ETOOSMALL);
        assert_int_equal(n, sizeof(val));
        for (size_t i = 0; i < sizeof(buf); i++) {
            assert_int_equal(buf[i], 0xCC); /* nothing copied */
        }
    }
    size_t n = 0;
    assert_int_equal(htkv_get(f->db, "long", 4, buf, sizeof(val) - 1, &n), HTKV_ETOOSMALL);
    assert_int_equal(htkv_get(f->db, "long", 4, buf, sizeof(val), &n), 0);
    assert_int_equal(n, sizeof(val));
    assert_memory_equal(buf, val, sizeof(val));
    assert_int_equal(htkv_get(f->db, "empty", 5, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    void *p = NULL;
    assert_int_equal(htkv_get_alloc(f->db, "empty", 5, &p, &n), 0);
    assert_non_null(p); /* documented: a zero-length value yields a non-NULL pointer */
    assert_int_equal(n, 0);
    htkv_free(p);
    assert_int_equal(htkv_get(f->db, "k7", 2, NULL, 0, &n), HTKV_ENOTFOUND);
    assert_int_equal(htkv_delete(f->db, "long", 4), 0);
    f->before = tu_stats(f->db);
}

/* Goal: deleting an absent key (never written, or deleted) is HTKV_ENOTFOUND and writes
 * nothing. Method: delete; compare the figures. */
static void
test_bad_input_delete_absent_writes_nothing(void **state)
{
    struct bi_fixture *f = *state;
    assert_int_equal(htkv_delete(f->db, "never", 5), HTKV_ENOTFOUND);
    assert_int_equal(htkv_delete(f->db, "k7", 2), HTKV_ENOTFOUND);
    bi_unchanged(f);
}

/* Goal: every write on a read-only store is HTKV_EREADONLY, bad arguments keep their own
 * codes, and reads work. Method: reopen read-only; call; check. */
static void
test_bad_input_writes_on_read_only_store(void **state)
{
    struct bi_fixture *f = *state;
    assert_int_equal(htkv_close(f->db), 0);
    htkv_config ro = f->cfg;
    ro.read_only = 1;
    f->db = tu_open(&ro);
    assert_int_equal(htkv_put(f->db, "k1", 2, "x", 1), HTKV_EREADONLY);
    assert_int_equal(htkv_put(f->db, "new", 3, NULL, 0), HTKV_EREADONLY);
    assert_int_equal(htkv_delete(f->db, "k1", 2), HTKV_EREADONLY);
    assert_int_equal(htkv_delete(f->db, "never", 5), HTKV_EREADONLY);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_write(f->db, b), HTKV_EREADONLY);
    assert_int_equal(htkv_batch_put(b, "k2", 2, "x", 1), 0);
    assert_int_equal(htkv_write(f->db, b), HTKV_EREADONLY);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_put(f->db, NULL, 1, "x", 1), -EINVAL);
    assert_int_equal(htkv_put(f->db, "k1", 0, "x", 1), -EINVAL);
    assert_int_equal(htkv_flush(f->db), 0);
    f->before.puts = f->before.deletes = f->before.batches = 0;
    f->before.tombstones = tu_stats(f->db).tombstones;
    bi_unchanged(f);
    assert_int_equal(htkv_close(f->db), 0);
    f->db = tu_open(&f->cfg);
    f->before = tu_stats(f->db);
}

/* Open @p cfg expecting -EINVAL, and check the directory was not even created. */
static void
expect_einval(const htkv_config *cfg, const char *what)
{
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    if (rc != -EINVAL) {
        fprintf(stderr, "config with %s: open gave %d (%s)\n", what, rc, htkv_strerror(rc));
        (void)htkv_close(db);
    }
    assert_int_equal(rc, -EINVAL);
    assert_null(db);
    if (cfg->data_dir != NULL && cfg->data_dir[0] != '\0') {
        assert_int_equal(tu_file_size(cfg->data_dir), -1);
    }
}

/* Goal: every invalid configuration field is -EINVAL before anything is created; the edges of
 * each valid range are accepted. Method: one bad field at a time on a fresh path. */
static void
test_bad_input_invalid_config_fields(void **state)
{
    struct bi_fixture *f = *state;
    char path[8192];
    snprintf(path, sizeof(path), "%s-cfg", f->dir);
    htkv_config base;
    tu_config(&base, path, HTKV_SYNC_INTERVAL);
    htkv_config c;
    char *longdir = malloc(5000);
    assert_non_null(longdir);
    memset(longdir, 'd', 4999);
    longdir[0] = '/';
    longdir[4999] = '\0';

#define BAD(field, value)                                                                          \
    do {                                                                                           \
        c = base;                                                                                  \
        c.field = value;                                                                           \
        expect_einval(&c, #field " = " #value);                                                    \
    } while (0)

    BAD(data_dir, NULL);
    BAD(data_dir, "");
    BAD(data_dir, longdir);
    BAD(shard_count, 1025);
    BAD(shard_count, 0xFFFFFFFFu);
    BAD(max_segment_bytes, (64u << 10) - 1);
    BAD(max_segment_bytes, 0);
    BAD(max_segment_bytes, 4ull << 30);
    BAD(max_segment_bytes, UINT64_MAX);
    BAD(sync_mode, -1);
    BAD(sync_mode, 3);
    BAD(fsync_interval_ms, 0);
    BAD(fsync_interval_ms, 60001);
    BAD(io_backend, -1);
    BAD(io_backend, 3);
    BAD(recovery, -1);
    BAD(recovery, 2);
    BAD(max_value_bytes, 0);
    BAD(max_value_bytes, HTKV_VALUE_MAX_LIMIT + 1);
    BAD(compaction_min_garbage_ratio, -0.01);
    BAD(compaction_min_garbage_ratio, 1.01);
    BAD(verify_checksums, -1);
    BAD(verify_checksums, 3);
#undef BAD
    free(longdir);

    /* Edges that are valid. */
    const struct {
        unsigned shard_count;
        uint64_t seg;
        unsigned interval;
        uint32_t vmax;
        double ratio;
        int verify;
    } ok[] = {
        { 1, 64u << 10, 1, 1, 0.0, 0 },
        { 1024, 0xFFFFF000ull - 4096, 60000, HTKV_VALUE_MAX_LIMIT, 1.0, 2 },
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        c = base;
        c.shard_count = ok[i].shard_count;
        c.max_segment_bytes = ok[i].seg;
        c.fsync_interval_ms = ok[i].interval;
        c.max_value_bytes = ok[i].vmax;
        c.compaction_min_garbage_ratio = ok[i].ratio;
        c.verify_checksums = ok[i].verify;
        htkv_db *db = tu_open(&c);
        assert_int_equal(tu_stats(db).shard_count, ok[i].shard_count);
        assert_int_equal(htkv_close(db), 0);
        tu_rmrf(path);
    }
    bi_unchanged(f);
}

/* Goal: a NaN garbage ratio is rejected like any other value outside [0, 1]. Method: open
 * with NAN. */
static void
test_bad_input_nan_garbage_ratio(void **state)
{
    struct bi_fixture *f = *state;
    char path[8192];
    snprintf(path, sizeof(path), "%s-nan", f->dir);
    htkv_config c;
    tu_config(&c, path, HTKV_SYNC_INTERVAL);
    c.compaction_min_garbage_ratio = NAN;
    htkv_db *db = NULL;
    int rc = htkv_open(&c, &db);
    if (rc == 0) {
        (void)htkv_close(db);
        tu_rmrf(path);
    }
    assert_int_equal(rc, -EINVAL);
}

/* Goal: htkv_strerror names every code, and never returns NULL. Method: every HTKV_E* code,
 * some errnos, unknown values. */
static void
test_bad_input_strerror_names_every_code(void **state)
{
    (void)state;
    for (int code = -1014; code <= -1000; code++) {
        const char *s = htkv_strerror(code);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, "unknown error");
    }
    const int errs[] = { -EINVAL, -EIO, -ENOSPC, -ENOMEM, 0 };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        assert_non_null(htkv_strerror(errs[i]));
        assert_true(strlen(htkv_strerror(errs[i])) > 0);
    }
    assert_non_null(htkv_strerror(12345));
    assert_non_null(htkv_strerror(-1099));
    assert_non_null(htkv_strerror(-99999));
}

#define T(name) cmocka_unit_test_setup_teardown(name, bi_setup, bi_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_bad_input_null_db),
        T(test_bad_input_bad_keys),
        T(test_bad_input_bad_values),
        T(test_bad_input_null_out_pointers),
        T(test_bad_input_failed_open_sets_out_to_null),
        T(test_bad_input_get_too_small_buffer),
        T(test_bad_input_delete_absent_writes_nothing),
        T(test_bad_input_writes_on_read_only_store),
        T(test_bad_input_invalid_config_fields),
        T(test_bad_input_nan_garbage_ratio),
        cmocka_unit_test(test_bad_input_strerror_names_every_code),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
