/*
 * test_compact_concurrent.c - compaction while writers, readers and views run.
 *
 * Writer threads each own a key range and keep a model of it (puts, deletes and batches across
 * shards); after each write they read the key back (read-your-writes). Reader threads read
 * random keys of every range and check that whatever they get is an intact value written for
 * that key. A view thread opens views, reads a set of keys twice with writes and compactions in
 * between, and requires both reads to agree. A compactor thread runs htkv_compact_now() in a
 * loop. At the end every writer's model must match the store, before and after a reopen. Runs
 * inline and with 2 workers (both backends), in NEVER and ALWAYS; TSan runs it too.
 */
#include "tests/concurrency/cc_util.h"

#define WRITERS 3
#define RANGE 300u
#define VIEW_KEYS 32u

struct shared {
    htkv_db *db;
    _Atomic int stop;
    _Atomic uint64_t compactions;
    uint64_t seed;
};

struct writer {
    struct shared *sh;
    unsigned id;
    uint64_t tag[RANGE]; /* 0 = absent */
};

static size_t
key_of(uint32_t key_id, char *buf)
{
    return (size_t)sprintf(buf, "cc-%08u", key_id);
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    struct shared *sh = w->sh;
    uint64_t rng = cc_subseed(sh->seed, w->id, 1);
    unsigned char val[CC_VAL_MAX], buf[CC_VAL_MAX];
    char key[32];
    htkv_batch *b = NULL;
    CC_CHECK(htkv_batch_create(&b) == 0, "batch");
    unsigned ops = cc_ops(2500);
    for (unsigned n = 0; n < ops && !cc_failed(); n++) {
        uint64_t r = tu_rand(&rng);
        unsigned i = (unsigned)(r % RANGE);
        uint32_t id = w->id * RANGE + i;
        uint64_t tag = ((uint64_t)w->id << 48) | ((uint64_t)n + 1);
        size_t kl = key_of(id, key);
        unsigned kind = (unsigned)((r >> 32) % 10);
        if (kind < 2) {
            int rc = htkv_delete(sh->db, key, kl);
            CC_CHECK(rc == (w->tag[i] ? 0 : HTKV_ENOTFOUND), "delete %u: %d", id, rc);
            w->tag[i] = 0;
        } else if (kind < 3) {
            htkv_batch_clear(b);
            uint32_t ids[4];
            for (unsigned k = 0; k < 4; k++) {
                unsigned j = (i + k * 71u) % RANGE;
                ids[k] = w->id * RANGE + j;
                size_t vl = cc_value(tag + k, ids[k], CC_VAL_HDR, val);
                CC_CHECK(htkv_batch_put(b, key, key_of(ids[k], key), val, vl) == 0, "bput");
            }
            CC_CHECK(htkv_write(sh->db, b) == 0, "write");
            for (unsigned k = 0; k < 4; k++) {
                w->tag[ids[k] - w->id * RANGE] = tag + k;
            }
            kl = key_of(id, key);
        } else {
            size_t vl = cc_value(tag, id, CC_VAL_HDR, val);
            CC_CHECK(htkv_put(sh->db, key, kl, val, vl) == 0, "put %u", id);
            w->tag[i] = tag;
        }
        size_t got = 0;
        int rc = htkv_get(sh->db, key, kl, buf, sizeof(buf), &got);
        uint64_t t = 0;
        if (w->tag[i] == 0) {
            CC_CHECK(rc == HTKV_ENOTFOUND, "read-your-writes %u: %d", id, rc);
        } else {
            CC_CHECK(rc == 0 && cc_value_decode(buf, got, id, &t) && t == w->tag[i],
                     "read-your-writes %u: rc %d tag %llu want %llu", id, rc, (unsigned long long)t,
                     (unsigned long long)w->tag[i]);
        }
    }
    htkv_batch_destroy(b);
    return NULL;
}

static void *
reader_main(void *arg)
{
    struct shared *sh = arg;
    uint64_t rng = cc_subseed(sh->seed, 99, 2);
    unsigned char buf[CC_VAL_MAX];
    char key[32];
    while (!atomic_load(&sh->stop) && !cc_failed()) {
        uint32_t id = (uint32_t)(tu_rand(&rng) % (WRITERS * RANGE));
        size_t got = 0;
        int rc = htkv_get(sh->db, key, key_of(id, key), buf, sizeof(buf), &got);
        uint64_t t;
        CC_CHECK(rc == HTKV_ENOTFOUND || (rc == 0 && cc_value_decode(buf, got, id, &t)),
                 "reader %u: rc %d", id, rc);
    }
    return NULL;
}

/* Read VIEW_KEYS keys through @p v into tags (0 = absent). */
static void *
view_read(htkv_view *v, uint32_t first, uint64_t *tags)
{
    unsigned char buf[CC_VAL_MAX];
    char key[32];
    for (uint32_t k = 0; k < VIEW_KEYS; k++) {
        uint32_t id = (first + k * 37u) % (WRITERS * RANGE);
        size_t got = 0;
        int rc = htkv_view_get(v, key, key_of(id, key), buf, sizeof(buf), &got);
        tags[k] = 0;
        CC_CHECK(rc == HTKV_ENOTFOUND || (rc == 0 && cc_value_decode(buf, got, id, &tags[k])),
                 "view get %u: %d", id, rc);
    }
    return NULL;
}

static void *
viewer_main(void *arg)
{
    struct shared *sh = arg;
    uint64_t rng = cc_subseed(sh->seed, 77, 3);
    while (!atomic_load(&sh->stop) && !cc_failed()) {
        htkv_view *v;
        if (htkv_view_open(sh->db, &v) != 0) {
            CC_CHECK(false, "view_open");
            break;
        }
        uint32_t first = (uint32_t)(tu_rand(&rng) % (WRITERS * RANGE));
        uint64_t a[VIEW_KEYS], b[VIEW_KEYS];
        (void)view_read(v, first, a);
        uint64_t c0 = atomic_load(&sh->compactions);
        for (int spin = 0;
             spin < 200 && atomic_load(&sh->compactions) == c0 && !atomic_load(&sh->stop); spin++) {
            cc_sleep_ms(1); /* let a compaction happen under the open view */
        }
        (void)view_read(v, first, b);
        for (unsigned k = 0; k < VIEW_KEYS; k++) {
            CC_CHECK(a[k] == b[k], "view changed under it: key %u %llu -> %llu", k,
                     (unsigned long long)a[k], (unsigned long long)b[k]);
        }
        htkv_view_close(v);
    }
    return NULL;
}

static void *
compactor_main(void *arg)
{
    struct shared *sh = arg;
    while (!atomic_load(&sh->stop) && !cc_failed()) {
        int rc = htkv_compact_now(sh->db);
        CC_CHECK(rc == 0, "compact_now: %s", htkv_strerror(rc));
        atomic_fetch_add(&sh->compactions, 1);
        cc_sleep_ms(5);
    }
    return NULL;
}

static void *
check_models(htkv_db *db, const struct writer *ws)
{
    unsigned char buf[CC_VAL_MAX];
    char key[32];
    for (unsigned w = 0; w < WRITERS; w++) {
        for (unsigned i = 0; i < RANGE; i++) {
            uint32_t id = w * RANGE + i;
            size_t got = 0;
            int rc = htkv_get(db, key, key_of(id, key), buf, sizeof(buf), &got);
            uint64_t t = 0;
            if (ws[w].tag[i] == 0) {
                CC_CHECK(rc == HTKV_ENOTFOUND, "final %u: %d", id, rc);
            } else {
                CC_CHECK(rc == 0 && cc_value_decode(buf, got, id, &t) && t == ws[w].tag[i],
                         "final %u: rc %d", id, rc);
            }
        }
    }
    return NULL;
}

static void
run_mode(const struct cc_mode *m)
{
    cc_set_mode(m);
    char *dir = tu_tmpdir("cc-compact");
    htkv_config cfg;
    cc_config(&cfg, dir, m);
    cfg.max_segment_bytes = 64u * 1024; /* many rotations, many victims */
    cfg.compaction_interval_ms = 0;
    static struct shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.db = cc_open(&cfg);
    sh.seed = cc_seed_value;
    static struct writer ws[WRITERS];
    memset(ws, 0, sizeof(ws));
    for (unsigned i = 0; i < WRITERS; i++) {
        ws[i].sh = &sh;
        ws[i].id = i;
    }
    pthread_t rd, vw, cp;
    assert_int_equal(pthread_create(&rd, NULL, reader_main, &sh), 0);
    assert_int_equal(pthread_create(&vw, NULL, viewer_main, &sh), 0);
    assert_int_equal(pthread_create(&cp, NULL, compactor_main, &sh), 0);
    cc_run_threads(WRITERS, writer_main, ws, sizeof(ws[0]));
    atomic_store(&sh.stop, 1);
    assert_int_equal(pthread_join(rd, NULL), 0);
    assert_int_equal(pthread_join(vw, NULL), 0);
    assert_int_equal(pthread_join(cp, NULL), 0);
    cc_assert_ok();
    assert_true(atomic_load(&sh.compactions) > 0);
    assert_int_equal(htkv_compact_now(sh.db), 0);
    (void)check_models(sh.db, ws);
    assert_true(tu_stats(sh.db).compacted_segments > 0);
    assert_int_equal(htkv_close(sh.db), 0);
    htkv_db *db = cc_open(&cfg);
    (void)check_models(db, ws);
    assert_int_equal(htkv_close(db), 0);
    cc_assert_ok();
    tu_rmrf(dir);
    free(dir);
}

static void
test_compact_concurrent_with_writers_readers_views(void **state)
{
    (void)state;
    cc_seed("cc-compact");
    static const struct cc_mode modes[] = {
        { 0, HTKV_IO_AUTO, HTKV_SYNC_NEVER },    { 0, HTKV_IO_AUTO, HTKV_SYNC_ALWAYS },
        { 2, HTKV_IO_SYNC, HTKV_SYNC_NEVER },    { 2, HTKV_IO_URING, HTKV_SYNC_ALWAYS },
        { 2, HTKV_IO_SYNC, HTKV_SYNC_INTERVAL },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (modes[i].backend == HTKV_IO_URING && !cc_uring_available()) {
            continue;
        }
        run_mode(&modes[i]);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact_concurrent_with_writers_readers_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
