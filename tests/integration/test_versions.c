/*
 * test_versions.c - the newest version of every key wins across segments and reopens; deletes
 * stay deleted; and a seeded random workload matches a trivially correct in-memory model.
 */
#include "tests/support/testutil.h"

static uint64_t
get_version(htkv_db *db, const void *key, size_t klen)
{
    uint64_t v = 0;
    size_t n = 0;
    int rc = htkv_get_version(db, key, klen, NULL, 0, &n, &v);
    if (rc == HTKV_ETOOSMALL) {
        void *buf = malloc(n);
        assert_non_null(buf);
        rc = htkv_get_version(db, key, klen, buf, n, &n, &v);
        free(buf);
    }
    assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
    return rc == 0 ? v : 0;
}

/* Goal: 1,500 versions of one key spread over many segments, then a delete written in an
 * older segment than the last, come back as "deleted" after every reopen (no older version
 * resurrects), and a later put wins again. Method: 64 KiB segments; interleave the key's
 * versions with filler writes; delete; more filler (rotations); reopen twice; re-put;
 * reopen. */
static void
test_versions_many_versions_then_delete_no_resurrection(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("versions-many");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    unsigned char val[200];
    char key[32];
    uint64_t last = 0;
    for (int v = 0; v < 1500; v++) {
        tu_fill(val, sizeof(val), (uint64_t)v);
        assert_int_equal(htkv_put(db, "hot", 3, val, sizeof(val)), 0);
        uint64_t ver = get_version(db, "hot", 3);
        assert_true(ver > last);
        last = ver;
        snprintf(key, sizeof(key), "filler-%d", v % 97);
        assert_int_equal(htkv_put(db, key, strlen(key), val, 100), 0);
    }
    tu_expect(db, "hot", 3, val, sizeof(val));
    uint64_t segs_before = tu_stats(db).segments;
    assert_true(segs_before >= 8);
    assert_int_equal(htkv_close(db), 0);

    db = tu_open(&cfg);
    tu_expect(db, "hot", 3, val, sizeof(val));
    assert_int_equal(get_version(db, "hot", 3), last);
    assert_int_equal(htkv_delete(db, "hot", 3), 0);
    for (int v = 0; v < 3000; v++) {
        snprintf(key, sizeof(key), "filler-%d", v % 97);
        assert_int_equal(htkv_put(db, key, strlen(key), val, 200), 0);
    }
    assert_true(tu_stats(db).segments >= segs_before + 6); /* about 2 more in every shard */
    uint64_t live = tu_stats(db).live_keys;
    assert_int_equal(htkv_close(db), 0);

    for (int round = 0; round < 2; round++) {
        db = tu_open(&cfg);
        tu_expect(db, "hot", 3, NULL, 0);
        assert_int_equal(htkv_contains(db, "hot", 3), 0);
        assert_int_equal(htkv_delete(db, "hot", 3), HTKV_ENOTFOUND);
        assert_int_equal(tu_stats(db).live_keys, live);
        assert_int_equal(htkv_close(db), 0);
    }
    db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "hot", 3, "back", 4), 0);
    uint64_t back = get_version(db, "hot", 3);
    assert_true(back > last);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "hot", 3, "back", 4);
    assert_int_equal(get_version(db, "hot", 3), back);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: delete then re-put (and the reverse), also inside one batch, give the last operation's
 * result after reopen, with increasing versions. Method: short sequences per key, reopen,
 * check each key. */
static void
test_versions_delete_then_reput(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("versions-reput");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    /* a: put, delete, put.  b: put, delete.  c: put, delete, put, delete.
     * d: batch {put, delete, put}.  e: batch {delete(absent), put}.  f: put; batch {put, delete}.
     */
    assert_int_equal(htkv_put(db, "a", 1, "a1", 2), 0);
    uint64_t va1 = get_version(db, "a", 1);
    assert_int_equal(htkv_delete(db, "a", 1), 0);
    assert_int_equal(htkv_put(db, "a", 1, "a2", 2), 0);
    assert_true(get_version(db, "a", 1) > va1);
    assert_int_equal(htkv_put(db, "b", 1, "b1", 2), 0);
    assert_int_equal(htkv_delete(db, "b", 1), 0);
    assert_int_equal(htkv_put(db, "c", 1, "c1", 2), 0);
    assert_int_equal(htkv_delete(db, "c", 1), 0);
    assert_int_equal(htkv_put(db, "c", 1, "c2", 2), 0);
    assert_int_equal(htkv_delete(db, "c", 1), 0);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_put(b, "d", 1, "d1", 2), 0);
    assert_int_equal(htkv_batch_delete(b, "d", 1), 0);
    assert_int_equal(htkv_batch_put(b, "d", 1, "d2", 2), 0);
    assert_int_equal(htkv_batch_delete(b, "e", 1), 0);
    assert_int_equal(htkv_batch_put(b, "e", 1, "e1", 2), 0);
    assert_int_equal(htkv_write(db, b), 0);
    assert_int_equal(htkv_put(db, "f", 1, "f1", 2), 0);
    htkv_batch_clear(b);
    assert_int_equal(htkv_batch_put(b, "f", 1, "f2", 2), 0);
    assert_int_equal(htkv_batch_delete(b, "f", 1), 0);
    assert_int_equal(htkv_write(db, b), 0);
    htkv_batch_destroy(b);
    for (int round = 0; round < 3; round++) {
        tu_expect(db, "a", 1, "a2", 2);
        tu_expect(db, "b", 1, NULL, 0);
        tu_expect(db, "c", 1, NULL, 0);
        tu_expect(db, "d", 1, "d2", 2);
        tu_expect(db, "e", 1, "e1", 2);
        tu_expect(db, "f", 1, NULL, 0);
        assert_int_equal(tu_stats(db).live_keys, 3);
        assert_int_equal(htkv_close(db), 0);
        db = tu_open(&cfg);
    }
    assert_int_equal(htkv_put(db, "b", 1, "b2", 2), 0);
    assert_int_equal(htkv_put(db, "f", 1, "f3", 2), 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "b", 1, "b2", 2);
    tu_expect(db, "f", 1, "f3", 2);
    tu_expect(db, "c", 1, NULL, 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* ---- the model test ------------------------------------------------------------------------ */

#define MKEYS 300

struct model {
    unsigned char key[MKEYS][128];
    size_t klen[MKEYS];
    unsigned char *val[MKEYS]; /* NULL = absent */
    size_t vlen[MKEYS];
    uint64_t version[MKEYS];
    uint64_t last_version;
};

static void
model_set(struct model *m, size_t k, const unsigned char *v, size_t n, uint64_t version)
{
    free(m->val[k]);
    m->val[k] = malloc(n + 1);
    assert_non_null(m->val[k]);
    memcpy(m->val[k], v, n);
    m->vlen[k] = n;
    m->version[k] = version;
}

static void
model_del(struct model *m, size_t k)
{
    free(m->val[k]);
    m->val[k] = NULL;
    m->vlen[k] = 0;
    m->version[k] = 0;
}

static void
model_check_key(htkv_db *db, const struct model *m, size_t k, uint64_t seed, long op)
{
    void *got = NULL;
    size_t n = 0;
    int rc = htkv_get_alloc(db, m->key[k], m->klen[k], &got, &n);
    bool ok = m->val[k] == NULL ? rc == HTKV_ENOTFOUND
                                : rc == 0 && n == m->vlen[k] && memcmp(got, m->val[k], n) == 0;
    htkv_free(got);
    uint64_t v = ok && m->val[k] != NULL ? get_version(db, m->key[k], m->klen[k]) : 0;
    if (!ok || v != m->version[k]) {
        fprintf(stderr,
                "seed %llu, op %ld: key %zu: got rc %d len %zu version %llu; model: %s len %zu "
                "version %llu\n",
                (unsigned long long)seed, op, k, rc, n, (unsigned long long)v,
                m->val[k] ? "present" : "absent", m->vlen[k], (unsigned long long)m->version[k]);
    }
    assert_true(ok);
    assert_int_equal(v, m->version[k]);
}

static void
model_check_all(htkv_db *db, const struct model *m, uint64_t seed, long op)
{
    uint64_t live = 0;
    for (size_t k = 0; k < MKEYS; k++) {
        model_check_key(db, m, k, seed, op);
        live += m->val[k] != NULL;
    }
    struct htkv_stats st = tu_stats(db);
    assert_int_equal(st.live_keys, live);
    assert_int_equal(st.last_version, m->last_version);
}

/* Goal: any interleaving of puts, deletes, batches (with repeated keys and conditions) and
 * reopens (in every sync mode, with small and large segments) leaves the store equal to a
 * simple model: same value, same version, same presence for every key, after every reopen.
 * Method: seeded random operations on 300 keys of 1..128 bytes, values of 0..3,000 bytes;
 * apply each to the store and to the model; spot-check reads; full comparison after each
 * reopen and at the end. */
static void
test_versions_random_model_matches_after_every_reopen(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_versions_random_model_matches_after_every_reopen");
    uint64_t rng = seed;
    char *dir = tu_tmpdir("versions-model");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    struct model *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    for (size_t k = 0; k < MKEYS; k++) {
        m->klen[k] = 1 + (size_t)(tu_rand(&rng) % 128);
        tu_fill(m->key[k], m->klen[k], seed ^ (k * 7919));
        if (m->klen[k] >= 3) {
            m->key[k][0] = (unsigned char)(k >> 8);
            m->key[k][1] = (unsigned char)k;
            m->key[k][2] = 0xEE;
        } else {
            m->klen[k] = 3; /* short keys collide in the filler; keep them unique */
            m->key[k][0] = (unsigned char)(k >> 8);
            m->key[k][1] = (unsigned char)k;
            m->key[k][2] = 0xDD;
        }
    }
    /* A handful of 1- and 2-byte keys too. */
    for (size_t k = 0; k < 8; k++) {
        m->klen[k] = 1 + k % 2;
        m->key[k][0] = (unsigned char)('A' + k);
        m->key[k][1] = '!';
    }
    unsigned char *val = malloc(70000);
    assert_non_null(val);
    htkv_db *db = tu_open(&cfg);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    const long nops = 8000;
    int reopens = 0;
    for (long op = 0; op < nops; op++) {
        tu_context("seed %llu, op %ld", (unsigned long long)seed, op);
        uint64_t r = tu_rand(&rng) % 100;
        size_t k = (size_t)(tu_rand(&rng) % MKEYS);
        if (r < 45) {
            size_t n = (size_t)(tu_rand(&rng) % 3001);
            if (tu_rand(&rng) % 200 == 0) {
                n = 65536 + (size_t)(tu_rand(&rng) % 4000); /* larger than a segment */
            }
            tu_fill(val, n, rng);
            assert_int_equal(htkv_put(db, m->key[k], m->klen[k], val, n), 0);
            uint64_t v = get_version(db, m->key[k], m->klen[k]);
            assert_true(v > m->last_version);
            m->last_version = v;
            model_set(m, k, val, n, v);
        } else if (r < 65) {
            int rc = htkv_delete(db, m->key[k], m->klen[k]);
            assert_int_equal(rc, m->val[k] ? 0 : HTKV_ENOTFOUND);
            if (rc == 0) {
                m->last_version++;
                assert_int_equal(tu_stats(db).last_version, m->last_version);
            }
            model_del(m, k);
        } else if (r < 77) {
            /* A batch: 1..12 operations, keys may repeat; sometimes conditions. */
            htkv_batch_clear(b);
            int nb = 1 + (int)(tu_rand(&rng) % 12);
            size_t keys[12];
            int puts[12];
            size_t lens[12];
            uint64_t tags[12];
            for (int i = 0; i < nb; i++) {
                keys[i] = tu_rand(&rng) % 4 == 0 ? k : (size_t)(tu_rand(&rng) % MKEYS);
                puts[i] = tu_rand(&rng) % 3 != 0;
                lens[i] = (size_t)(tu_rand(&rng) % 1000);
                tags[i] = tu_rand(&rng);
                if (puts[i]) {
                    tu_fill(val, lens[i], tags[i]);
                    assert_int_equal(
                        htkv_batch_put(b, m->key[keys[i]], m->klen[keys[i]], val, lens[i]), 0);
                } else {
                    assert_int_equal(htkv_batch_delete(b, m->key[keys[i]], m->klen[keys[i]]), 0);
                }
            }
            bool conflict = false;
            if (tu_rand(&rng) % 3 == 0) {
                size_t ck = (size_t)(tu_rand(&rng) % MKEYS);
                uint64_t want = m->version[ck];
                if (tu_rand(&rng) % 3 == 0) {
                    want = want == 0 ? 1 + tu_rand(&rng) % 5 : want + 1; /* stale or wrong */
                    conflict = true;
                }
                assert_int_equal(htkv_batch_check(b, m->key[ck], m->klen[ck], want), 0);
            }
            assert_int_equal((int)htkv_batch_count(b), nb);
            int rc = htkv_write(db, b);
            if (conflict) {
                assert_int_equal(rc, HTKV_ECONFLICT);
                assert_int_equal(tu_stats(db).last_version, m->last_version);
            } else {
                assert_int_equal(rc, 0);
                uint64_t bv = htkv_batch_version(b);
                assert_true(bv > m->last_version);
                m->last_version = bv;
                for (int i = 0; i < nb; i++) {
                    if (puts[i]) {
                        tu_fill(val, lens[i], tags[i]);
                        model_set(m, keys[i], val, lens[i], bv);
                    } else {
                        model_del(m, keys[i]);
                    }
                }
            }
        } else if (r < 78) {
            assert_int_equal(htkv_close(db), 0);
            const int modes[] = { HTKV_SYNC_NEVER, HTKV_SYNC_INTERVAL, HTKV_SYNC_ALWAYS };
            cfg.sync_mode = modes[tu_rand(&rng) % 3];
            cfg.max_segment_bytes = tu_rand(&rng) % 2 ? 64u << 10 : 1u << 20;
            db = tu_open(&cfg);
            reopens++;
            model_check_all(db, m, seed, op);
        } else {
            model_check_key(db, m, k, seed, op);
        }
    }
    model_check_all(db, m, seed, nops);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    model_check_all(db, m, seed, nops + 1);
    assert_int_equal(htkv_close(db), 0);
    assert_true(reopens > 20);
    htkv_batch_destroy(b);
    for (size_t k = 0; k < MKEYS; k++) {
        free(m->val[k]);
    }
    free(m);
    free(val);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions_many_versions_then_delete_no_resurrection),
        cmocka_unit_test(test_versions_delete_then_reput),
        cmocka_unit_test(test_versions_random_model_matches_after_every_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
