/*
 * test_corruption.c - damaged bytes in segments: open refuses (naming file and offset) or,
 * with HTKV_RECOVERY_SKIP_CORRUPT, skips them; a read of a damaged record fails its checksum;
 * and no damage ever yields a wrong value or a crash.
 */
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <unistd.h>

#define NREC 60

/* A one-shard store of NREC puts of distinct keys (each written once). */
struct cstore {
    char *dir;
    htkv_config cfg;
    char keys[NREC][16];
    unsigned char vals[NREC][256];
    size_t vlen[NREC];
    char seg[4096];
    struct tu_rec recs[NREC + 8];
    size_t nrec;
};

static void
cstore_make(struct cstore *c, uint64_t seed, int shards)
{
    memset(c, 0, sizeof(*c));
    c->dir = tu_tmpdir("corrupt");
    tu_config(&c->cfg, c->dir, HTKV_SYNC_NEVER);
    c->cfg.hint_files = 0; /* these tests check the scan of every record */
    c->cfg.shard_count = (unsigned)shards;
    htkv_db *db = tu_open(&c->cfg);
    for (size_t i = 0; i < NREC; i++) {
        snprintf(c->keys[i], sizeof(c->keys[i]), "key-%03zu", i);
        c->vlen[i] = 20 + (i * 37) % 200;
        tu_fill(c->vals[i], c->vlen[i], seed + i);
        assert_int_equal(htkv_put(db, c->keys[i], strlen(c->keys[i]), c->vals[i], c->vlen[i]), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    if (shards == 1) {
        char(*segs)[4096] = malloc(16 * 4096);
        assert_non_null(segs);
        assert_int_equal(tu_shard_segments(c->dir, 0, segs, 16), 1);
        strcpy(c->seg, segs[0]);
        free(segs);
        c->nrec = tu_seg_scan(c->seg, c->recs, NREC + 8);
        assert_int_equal(c->nrec, NREC);
    }
}

static void
cstore_free(struct cstore *c)
{
    tu_rmrf(c->dir);
    free(c->dir);
}

static unsigned char *
slurp(const char *path, size_t *len)
{
    long long n = tu_file_size(path);
    assert_true(n >= 0);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(tu_read_at(path, 0, b, (size_t)n), 0);
    *len = (size_t)n;
    return b;
}

/* Open @p cfg expecting HTKV_ECORRUPT with a detail naming @p path and "offset @p off". */
static void
expect_open_corrupt(const htkv_config *cfg, const char *path, long long off)
{
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    if (rc != HTKV_ECORRUPT) {
        fprintf(stderr, "open gave %d (%s), want HTKV_ECORRUPT\n", rc, htkv_strerror(rc));
        htkv_close(db);
    }
    assert_int_equal(rc, HTKV_ECORRUPT);
    assert_null(db);
    const char *err = htkv_last_error();
    char want[64];
    snprintf(want, sizeof(want), "offset %lld", off);
    if (strstr(err, path) == NULL || strstr(err, want) == NULL) {
        fprintf(stderr, "detail '%s' should name '%s' and '%s'\n", err, path, want);
    }
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, want));
}

/* Goal: a flipped bit in a record with valid records after it makes open fail with
 * HTKV_ECORRUPT naming the file and the record's offset, and changes no file. Method: for a
 * record in the middle, flip every bit of its header and seeded bits of its key and value, in
 * turn; open; check the code, the detail and the file bytes; flip back. */
static void
test_corruption_flipped_bit_mid_segment_fails_open(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_corruption_flipped_bit_mid_segment_fails_open");
    uint64_t rng = seed;
    struct cstore c;
    cstore_make(&c, seed, 1);
    size_t len;
    unsigned char *orig = slurp(c.seg, &len);
    const size_t victims[] = { 0, 29, NREC - 2 };
    for (size_t v = 0; v < 3; v++) {
        const struct tu_rec *r = &c.recs[victims[v]];
        for (int k = 0; k < 24 * 8 + 48; k++) {
            long long bit =
                k < 24 * 8 ? k : 24 * 8 + (long long)(tu_rand(&rng) % ((r->raw - 24) * 8));
            long long at = r->off + bit / 8;
            tu_context("seed %llu: record %zu at %lld, bit %lld", (unsigned long long)seed,
                       victims[v], r->off, bit);
            assert_int_equal(tu_flip_bit(c.seg, at, (int)(bit % 8)), 0);
            expect_open_corrupt(&c.cfg, c.seg, r->off);
            size_t now_len;
            unsigned char *now = slurp(c.seg, &now_len);
            assert_int_equal(now_len, len);
            assert_int_equal(now[at], orig[at] ^ (1u << (bit % 8)));
            assert_int_equal(tu_flip_bit(c.seg, at, (int)(bit % 8)), 0);
            assert_memory_equal(now, orig, (size_t)at); /* nothing before it rewritten */
            assert_memory_equal(now + at + 1, orig + at + 1, len - (size_t)at - 1);
            free(now);
        }
    }
    htkv_db *db = tu_open(&c.cfg); /* all flipped back: opens */
    for (size_t i = 0; i < NREC; i++) {
        tu_expect(db, c.keys[i], strlen(c.keys[i]), c.vals[i], c.vlen[i]);
    }
    assert_int_equal(htkv_close(db), 0);
    free(orig);
    cstore_free(&c);
}

/* Goal: with HTKV_RECOVERY_SKIP_CORRUPT a store with a damaged record opens, loudly; the
 * damaged key is absent (never a wrong value), every other key is intact, and the store keeps
 * working across reopen. Method: on copies, flip a seeded bit in the checked bytes of a
 * seeded middle record; open with SKIP_CORRUPT; verify; write; reopen; verify. */
static void
test_corruption_skip_corrupt_opens_without_wrong_values(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_corruption_skip_corrupt_opens_without_wrong_values");
    uint64_t rng = seed;
    struct cstore c;
    cstore_make(&c, seed, 1);
    for (int iter = 0; iter < 30; iter++) {
        size_t victim = (size_t)(tu_rand(&rng) % (NREC - 1));
        const struct tu_rec *r = &c.recs[victim];
        long long bit = (long long)(tu_rand(&rng) % ((uint64_t)r->raw * 8));
        tu_context("seed %llu: iteration %d: record %zu, bit %lld", (unsigned long long)seed, iter,
                   victim, bit);
        char *work = tu_tmpdir("corrupt-skip");
        tu_copy_store(c.dir, work);
        char wseg[8192];
        snprintf(wseg, sizeof(wseg), "%s%s", work, c.seg + strlen(c.dir));
        assert_int_equal(tu_flip_bit(wseg, r->off + bit / 8, (int)(bit % 8)), 0);
        htkv_config cfg = c.cfg;
        cfg.data_dir = work;
        htkv_db *db = NULL;
        assert_int_equal(htkv_open(&cfg, &db), HTKV_ECORRUPT);
        cfg.recovery = HTKV_RECOVERY_SKIP_CORRUPT;
        int warnings = tu_log_warnings;
        db = tu_open(&cfg);
        assert_true(tu_log_warnings > warnings); /* skipping is loud */
        struct htkv_stats st = tu_stats(db);
        assert_true(st.skipped_bytes >= (uint64_t)r->size);
        for (int round = 0; round < 2; round++) {
            for (size_t i = 0; i < NREC; i++) {
                tu_expect(db, c.keys[i], strlen(c.keys[i]), i == victim ? NULL : c.vals[i],
                          c.vlen[i]);
            }
            if (round == 0) {
                assert_int_equal(htkv_put(db, "new", 3, "value", 5), 0);
                assert_int_equal(htkv_close(db), 0);
                db = tu_open(&cfg);
            }
            tu_expect(db, "new", 3, "value", 5);
        }
        /* The damaged key can be written again. */
        assert_int_equal(htkv_put(db, c.keys[victim], strlen(c.keys[victim]), "again", 5), 0);
        tu_expect(db, c.keys[victim], strlen(c.keys[victim]), "again", 5);
        assert_int_equal(htkv_close(db), 0);
        tu_rmrf(work);
        free(work);
    }
    cstore_free(&c);
}

/* Goal: with verify_checksums = 2, a record damaged while the store is open is caught by the
 * read: htkv_get, htkv_get_version and htkv_get_alloc return HTKV_ECORRUPT naming the file,
 * never the damaged bytes; other keys read fine. (The default, 1, checks a record once: see
 * test_hints.c for damage caught by the first read after open.) Method: flush, then flip each
 * bit of one record's header and value through the file (the same page cache the store maps),
 * read, flip back, read. */
static void
test_corruption_value_bit_flip_detected_by_get_while_open(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("corrupt-live");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.hint_files = 0; /* these tests check the scan of every record */
    cfg.shard_count = 1;
    cfg.verify_checksums = 2;
    htkv_db *db = tu_open(&cfg);
    char key[16];
    unsigned char val[64];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "live-%02d", i);
        tu_fill(val, 40, (uint64_t)i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, 40), 0);
    }
    assert_int_equal(htkv_flush(db), 0);
    char(*segs)[4096] = malloc(4 * 4096);
    assert_non_null(segs);
    assert_int_equal(tu_shard_segments(dir, 0, segs, 4), 1);
    struct tu_rec recs[32];
    assert_int_equal(tu_seg_scan(segs[0], recs, 32), 20);
    const struct tu_rec *r = &recs[7];
    assert_memory_equal(r->key, "live-07", 7);
    unsigned char want[64], got[64], other[64];
    tu_fill(want, 40, 7);
    tu_fill(other, 40, 6);
    /* Every bit of the header (but the key length, checked below) and of the value. */
    for (long long bit = 0; bit < r->raw * 8; bit++) {
        long long at = r->off + bit / 8;
        bool in_key = at >= r->off + 24 && at < r->off + 24 + (long long)r->key_len;
        if (in_key) {
            continue; /* a damaged key no longer matches its lookup: see below */
        }
        tu_context("bit %lld of the record at %lld", bit, r->off);
        assert_int_equal(tu_flip_bit(segs[0], at, (int)(bit % 8)), 0);
        size_t n = 0;
        memset(got, 0, sizeof(got));
        assert_int_equal(htkv_get(db, "live-07", 7, got, sizeof(got), &n), HTKV_ECORRUPT);
        assert_non_null(strstr(htkv_last_error(), segs[0]));
        uint64_t ver = 99;
        assert_int_equal(htkv_get_version(db, "live-07", 7, got, sizeof(got), &n, &ver),
                         HTKV_ECORRUPT);
        assert_int_equal(ver, 0);
        void *p = (void *)1;
        assert_int_equal(htkv_get_alloc(db, "live-07", 7, &p, &n), HTKV_ECORRUPT);
        assert_null(p);
        tu_expect(db, "live-06", 7, other, 40);
        assert_int_equal(tu_flip_bit(segs[0], at, (int)(bit % 8)), 0);
        assert_int_equal(htkv_get(db, "live-07", 7, got, sizeof(got), &n), 0);
        assert_int_equal(n, 40);
        assert_memory_equal(got, want, 40);
    }
    /* A damaged key byte: the key cannot be found any more, but no other key's value (or a
     * wrong value) comes back for it. */
    assert_int_equal(tu_flip_bit(segs[0], r->off + 24 + 6, 0), 0); /* "live-07" -> "live-06" */
    size_t n = 0;
    int rc = htkv_get(db, "live-07", 7, got, sizeof(got), &n);
    assert_true(rc == HTKV_ECORRUPT || rc == HTKV_ENOTFOUND);
    tu_fill(want, 40, 6);
    rc = htkv_get(db, "live-06", 7, got, sizeof(got), &n);
    assert_true(rc == HTKV_ECORRUPT || (rc == 0 && n == 40 && memcmp(got, want, 40) == 0));
    assert_int_equal(tu_flip_bit(segs[0], r->off + 24 + 6, 0), 0);
    free(segs);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a damaged segment header is corruption (HTKV_ECORRUPT naming the file, offset 0),
 * for the active segment and for a sealed one; so are a segment shorter than its header and a
 * segment the manifest lists but that is missing. Method: flip every header bit in turn and
 * open; truncate; delete. */
static void
test_corruption_damaged_segment_header_fails_open(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("corrupt-hdr");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.hint_files = 0; /* these tests check the scan of every record */
    cfg.shard_count = 1;
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    unsigned char val[1000];
    char key[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "h-%03d", i);
        tu_fill(val, sizeof(val), (uint64_t)i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, sizeof(val)), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    char(*segs)[4096] = malloc(8 * 4096);
    assert_non_null(segs);
    size_t nseg = tu_shard_segments(dir, 0, segs, 8);
    assert_int_equal(nseg, 2); /* one sealed, one active */
    for (size_t s = 0; s < nseg; s++) {
        for (int bit = 0; bit < 64 * 8; bit++) {
            tu_context("segment %zu header bit %d", s, bit);
            assert_int_equal(tu_flip_bit(segs[s], bit / 8, bit % 8), 0);
            expect_open_corrupt(&cfg, segs[s], 0);
            assert_int_equal(tu_flip_bit(segs[s], bit / 8, bit % 8), 0);
        }
    }
    /* Shorter than its header. */
    char save[8192];
    snprintf(save, sizeof(save), "%s.save", segs[1]);
    assert_int_equal(rename(segs[1], save), 0);
    int fd = open(segs[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "HTKVSEG1", 8), 8);
    close(fd);
    htkv_db *bad = NULL;
    assert_int_equal(htkv_open(&cfg, &bad), HTKV_ECORRUPT);
    assert_non_null(strstr(htkv_last_error(), segs[1]));
    /* Missing. */
    assert_int_equal(unlink(segs[1]), 0);
    assert_int_equal(htkv_open(&cfg, &bad), HTKV_ECORRUPT);
    assert_non_null(strstr(htkv_last_error(), segs[1]));
    assert_null(bad);
    assert_int_equal(rename(save, segs[1]), 0);
    db = tu_open(&cfg);
    tu_fill(val, sizeof(val), 99);
    tu_expect(db, "h-099", 5, val, sizeof(val));
    assert_int_equal(htkv_close(db), 0);
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: damage in a sealed segment, including its last record before the SEAL, is corruption
 * (the SEAL after it is valid), never a torn tail to cut. Method: 64 KiB segments; flip a value
 * bit in the first, a middle and the last data record of the sealed segment; open. */
static void
test_corruption_damage_in_sealed_segment_fails_open(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("corrupt-sealed");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.hint_files = 0; /* these tests check the scan of every record */
    cfg.shard_count = 1;
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    unsigned char val[700];
    char key[16];
    for (int i = 0; i < 150; i++) {
        snprintf(key, sizeof(key), "s-%03d", i);
        tu_fill(val, sizeof(val), (uint64_t)i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, sizeof(val)), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    char(*segs)[4096] = malloc(8 * 4096);
    assert_non_null(segs);
    assert_true(tu_shard_segments(dir, 0, segs, 8) >= 2);
    struct tu_rec recs[200];
    size_t nr = tu_seg_scan(segs[0], recs, 200);
    assert_true(nr >= 3);
    assert_int_equal(recs[nr - 1].type, 5); /* REC_SEAL */
    const size_t victims[] = { 0, nr / 2, nr - 2 };
    for (size_t v = 0; v < 3; v++) {
        long long at = recs[victims[v]].off + 24 + recs[victims[v]].key_len + 3;
        assert_int_equal(tu_flip_bit(segs[0], at, 5), 0);
        expect_open_corrupt(&cfg, segs[0], recs[victims[v]].off);
        assert_int_equal(tu_flip_bit(segs[0], at, 5), 0);
    }
    db = tu_open(&cfg);
    assert_int_equal(htkv_close(db), 0);
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: with HTKV_RECOVERY_SKIP_CORRUPT, a damaged record inside a batch (its BEGIN or one of
 * its operations) drops the whole batch and nothing else: the store opens, none of the
 * batch's keys is there, the writes around it are. Method: one shard; puts, a batch of 5,
 * puts; flip a value bit in each batch record in turn (on copies); open with SKIP_CORRUPT. */
static void
test_corruption_skip_corrupt_damaged_batch_drops_whole_batch(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("corrupt-batch");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.hint_files = 0; /* these tests check the scan of every record */
    cfg.shard_count = 1;
    htkv_db *db = tu_open(&cfg);
    char key[16];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "pre-%d", i);
        assert_int_equal(htkv_put(db, key, strlen(key), "p", 1), 0);
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "bat-%d", i);
        assert_int_equal(htkv_batch_put(b, key, strlen(key), "batchvalue", 10), 0);
    }
    assert_int_equal(htkv_write(db, b), 0);
    htkv_batch_destroy(b);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "post-%d", i);
        assert_int_equal(htkv_put(db, key, strlen(key), "q", 1), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    char(*segs)[4096] = malloc(4 * 4096);
    assert_non_null(segs);
    assert_int_equal(tu_shard_segments(dir, 0, segs, 4), 1);
    struct tu_rec recs[64];
    size_t nr = tu_seg_scan(segs[0], recs, 64);
    assert_int_equal(nr, 10 + 7 + 10);
    assert_int_equal(recs[10].type, 3); /* REC_BATCH_BEGIN */
    assert_int_equal(recs[16].type, 4); /* REC_BATCH_COMMIT */
    /* BEGIN, each operation, COMMIT. */
    for (size_t v = 10; v <= 16; v++) {
        tu_context("damaged batch record %zu (type %d)", v, recs[v].type);
        char *work = tu_tmpdir("corrupt-batch-work");
        tu_copy_store(dir, work);
        char wseg[8192];
        snprintf(wseg, sizeof(wseg), "%s%s", work, segs[0] + strlen(dir));
        assert_int_equal(tu_flip_bit(wseg, recs[v].off + recs[v].raw - 1, 2), 0);
        htkv_config wc = cfg;
        wc.data_dir = work;
        wc.recovery = HTKV_RECOVERY_SKIP_CORRUPT;
        htkv_db *w = NULL;
        int rc = htkv_open(&wc, &w);
        if (rc != 0) {
            fprintf(stderr, "batch record %zu (type %d) damaged: open gave %s (%s)\n", v,
                    recs[v].type, htkv_strerror(rc), htkv_last_error());
        }
        assert_int_equal(rc, 0);
        for (int i = 0; i < 10; i++) {
            snprintf(key, sizeof(key), "pre-%d", i);
            tu_expect(w, key, strlen(key), "p", 1);
            snprintf(key, sizeof(key), "post-%d", i);
            tu_expect(w, key, strlen(key), "q", 1);
        }
        for (int i = 0; i < 5; i++) {
            snprintf(key, sizeof(key), "bat-%d", i);
            tu_expect(w, key, strlen(key), NULL, 0);
        }
        assert_int_equal(htkv_close(w), 0);
        tu_rmrf(work);
        free(work);
    }
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

/* A store for the random-damage test: unique keys only (each written once), some in batches
 * across shards, so that every key has exactly one right answer: its value, or absent. */
#define RKEYS 1500
struct rstore {
    char *dir;
    htkv_config cfg;
    size_t vlen[RKEYS];
    int batch[RKEYS]; /* batch number, or -1 */
};

static void
rkey(char *buf, size_t i)
{
    snprintf(buf, 24, "r-%04zu", i);
}

/* Goal: damage anywhere in any segment (header, records, padding, seal, zeros) never crashes
 * open or reads and never yields a wrong value: open either fails with HTKV_ECORRUPT or
 * succeeds, and then every key holds its value or is absent, and every batch is all there or
 * not at all; in both recovery modes. Method: seeded; on copies of a 4-shard store with 64 KiB
 * segments, flip 1-3 random bits of one random segment; open strict and skip; verify. */
static void
test_corruption_random_damage_never_gives_wrong_value(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_corruption_random_damage_never_gives_wrong_value");
    uint64_t rng = seed;
    struct rstore s;
    memset(&s, 0, sizeof(s));
    s.dir = tu_tmpdir("corrupt-rand");
    tu_config(&s.cfg, s.dir, HTKV_SYNC_NEVER);
    s.cfg.hint_files = 0; /* these tests check the scan of every record */
    s.cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&s.cfg);
    char key[24];
    unsigned char val[1500];
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    int nb = 0;
    for (size_t i = 0; i < RKEYS;) {
        if (tu_rand(&rng) % 4 == 0 && i + 6 <= RKEYS) {
            htkv_batch_clear(b);
            for (int k = 0; k < 6; k++, i++) {
                rkey(key, i);
                s.vlen[i] = (size_t)(tu_rand(&rng) % 300);
                s.batch[i] = nb;
                tu_fill(val, s.vlen[i], seed + i);
                assert_int_equal(htkv_batch_put(b, key, strlen(key), val, s.vlen[i]), 0);
            }
            assert_int_equal(htkv_write(db, b), 0);
            nb++;
        } else {
            rkey(key, i);
            s.vlen[i] = (size_t)(tu_rand(&rng) % 1500);
            s.batch[i] = -1;
            tu_fill(val, s.vlen[i], seed + i);
            assert_int_equal(htkv_put(db, key, strlen(key), val, s.vlen[i]), 0);
            i++;
        }
    }
    htkv_batch_destroy(b);
    assert_int_equal(htkv_close(db), 0);
    char(*segs)[4096] = malloc(256 * 4096);
    assert_non_null(segs);
    size_t nseg = tu_segments(s.dir, segs, 256);
    assert_true(nseg >= 10); /* several sealed segments per shard */

    int opened[2] = { 0, 0 };
    for (int iter = 0; iter < 150; iter++) {
        size_t si = (size_t)(tu_rand(&rng) % nseg);
        long long fsize = tu_file_size(segs[si]);
        int flips = 1 + (int)(tu_rand(&rng) % 3);
        long long at[3];
        int bit[3];
        for (int f = 0; f < flips; f++) {
            at[f] = (long long)(tu_rand(&rng) % (uint64_t)fsize);
            bit[f] = (int)(tu_rand(&rng) % 8);
        }
        for (int mode = 0; mode < 2; mode++) {
            tu_context("seed %llu: iteration %d, segment %s, %d flips at %lld.., recovery %d",
                       (unsigned long long)seed, iter, segs[si], flips, at[0], mode);
            char *work = tu_tmpdir("corrupt-rand-work");
            tu_copy_store(s.dir, work);
            char wseg[8192];
            snprintf(wseg, sizeof(wseg), "%s%s", work, segs[si] + strlen(s.dir));
            for (int f = 0; f < flips; f++) {
                assert_int_equal(tu_flip_bit(wseg, at[f], bit[f]), 0);
            }
            htkv_config cfg = s.cfg;
            cfg.data_dir = work;
            cfg.recovery = mode == 0 ? HTKV_RECOVERY_STRICT : HTKV_RECOVERY_SKIP_CORRUPT;
            db = NULL;
            int rc = htkv_open(&cfg, &db);
            if (rc != 0 && rc != HTKV_ECORRUPT) {
                fprintf(stderr, "seed %llu: iteration %d: open gave %s (%s)\n",
                        (unsigned long long)seed, iter, htkv_strerror(rc), htkv_last_error());
            }
            assert_true(rc == 0 || rc == HTKV_ECORRUPT);
            if (rc == 0) {
                opened[mode]++;
                int batch_seen[RKEYS];
                for (int k = 0; k < nb; k++) {
                    batch_seen[k] = -1;
                }
                for (size_t i = 0; i < RKEYS; i++) {
                    rkey(key, i);
                    void *got = NULL;
                    size_t n = 0;
                    int g = htkv_get_alloc(db, key, strlen(key), &got, &n);
                    assert_true(g == 0 || g == HTKV_ENOTFOUND || g == HTKV_ECORRUPT);
                    if (g == 0) {
                        tu_fill(val, s.vlen[i], seed + i);
                        if (n != s.vlen[i] || memcmp(got, val, n) != 0) {
                            fprintf(stderr, "seed %llu: iteration %d: key %s: wrong value\n",
                                    (unsigned long long)seed, iter, key);
                        }
                        assert_int_equal(n, s.vlen[i]);
                        assert_memory_equal(got, val, n);
                    }
                    htkv_free(got);
                    if (s.batch[i] >= 0 && g != HTKV_ECORRUPT) {
                        int present = g == 0;
                        if (batch_seen[s.batch[i]] == -1) {
                            batch_seen[s.batch[i]] = present;
                        }
                        assert_int_equal(batch_seen[s.batch[i]], present);
                    }
                }
                assert_int_equal(htkv_put(db, "fresh", 5, "x", 1), 0);
                assert_int_equal(htkv_close(db), 0);
            }
            tu_rmrf(work);
            free(work);
        }
    }
    fprintf(stderr, "random damage: opened %d (strict) and %d (skip) of 150\n", opened[0],
            opened[1]);
    free(segs);
    tu_rmrf(s.dir);
    free(s.dir);
}

/* Goal: shards recover in parallel, yet a store damaged in several shards fails to open with
 * the error of the lowest damaged shard every time, and with HTKV_RECOVERY_SKIP_CORRUPT opens
 * with every damaged shard's bytes counted once and every other key intact. Method: an 8-shard
 * store; flip a header bit of the first record of shards 2, 5 and 7 (records follow each);
 * open strict 20 times (threads race differently each time); open with SKIP_CORRUPT; compare
 * skipped_bytes with the three records' sizes; read every key. */
static void
test_corruption_several_shards_lowest_reported(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_corruption_several_shards_lowest_reported");
    struct cstore c;
    cstore_make(&c, seed, 8);
    char first_seg[4096] = "";
    long long first_off = 0, skipped = 0;
    char victims[3][16];
    /* Three shards, from the third up, each holding at least two records (a record follows the
     * damaged one: damage, not a torn tail). Keys go to shards by the store's random hash seed,
     * so a given shard may hold fewer. */
    uint32_t shard = 2;
    for (size_t d = 0; d < 3; d++, shard++) {
        char segs[4][4096];
        struct tu_rec recs[NREC + 8];
        size_t n = 0;
        for (; shard < 8; shard++) {
            assert_int_equal(tu_shard_segments(c.dir, shard, segs, 4), 1);
            if ((n = tu_seg_scan(segs[0], recs, NREC + 8)) >= 2) {
                break;
            }
        }
        assert_true(shard < 8 && n >= 2);
        assert_int_equal(tu_flip_bit(segs[0], recs[0].off, 3), 0); /* its checksum */
        skipped += recs[0].size;
        snprintf(victims[d], sizeof(victims[d]), "%.*s", (int)recs[0].key_len, recs[0].key);
        if (d == 0) {
            snprintf(first_seg, sizeof(first_seg), "%s", segs[0]);
            first_off = recs[0].off;
        }
    }
    for (int i = 0; i < 20; i++) {
        tu_context("seed %llu: open %d", (unsigned long long)seed, i);
        expect_open_corrupt(&c.cfg, first_seg, first_off);
    }
    htkv_config cfg = c.cfg;
    cfg.recovery = HTKV_RECOVERY_SKIP_CORRUPT;
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(tu_stats(db).skipped_bytes, (uint64_t)skipped);
    for (size_t i = 0; i < NREC; i++) {
        bool victim = false;
        for (size_t d = 0; d < 3; d++) {
            victim = victim || strcmp(c.keys[i], victims[d]) == 0;
        }
        if (victim) {
            tu_expect(db, c.keys[i], strlen(c.keys[i]), NULL, 0);
        } else {
            tu_expect(db, c.keys[i], strlen(c.keys[i]), c.vals[i], c.vlen[i]);
        }
    }
    assert_int_equal(htkv_close(db), 0);
    cstore_free(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corruption_flipped_bit_mid_segment_fails_open),
        cmocka_unit_test(test_corruption_skip_corrupt_opens_without_wrong_values),
        cmocka_unit_test(test_corruption_value_bit_flip_detected_by_get_while_open),
        cmocka_unit_test(test_corruption_damaged_segment_header_fails_open),
        cmocka_unit_test(test_corruption_damage_in_sealed_segment_fails_open),
        cmocka_unit_test(test_corruption_skip_corrupt_damaged_batch_drops_whole_batch),
        cmocka_unit_test(test_corruption_random_damage_never_gives_wrong_value),
        cmocka_unit_test(test_corruption_several_shards_lowest_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
