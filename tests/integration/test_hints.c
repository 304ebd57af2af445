/*
 * test_hints.c - hint files: written at close and by compaction, used at open, and never
 * trusted blindly: a damaged, missing or stale hint means the segment is scanned instead, and
 * damage in a hinted record, or a hinted record that is not what its entry says, still reads as
 * HTKV_ECORRUPT, never as a wrong value.
 */
#include <dirent.h>
#include <errno.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/hint.h"
#include "engine/rec.h"
#include "tests/support/testutil.h"

#define NKEYS 800

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "hint-%05u", i);
}

static void
put_all(htkv_db *db, uint64_t base, unsigned from, unsigned to)
{
    unsigned char val[300];
    char key[32];
    for (unsigned i = from; i < to; i++) {
        tu_fill(val, 10 + i % 250, i + base);
        assert_int_equal(htkv_put(db, key, key_of(i, key), val, 10 + i % 250), 0);
    }
}

static void
check_all(htkv_db *db, uint64_t base, unsigned from, unsigned to)
{
    unsigned char val[300];
    char key[32];
    for (unsigned i = from; i < to; i++) {
        tu_fill(val, 10 + i % 250, i + base);
        tu_context("key %u", i);
        tu_expect(db, key, key_of(i, key), val, 10 + i % 250);
    }
}

/* Paths of the hint files of the store; returns the count. */
static size_t
hint_files(const char *dir, char (*out)[4096], size_t cap)
{
    size_t n = 0;
    for (unsigned s = 0; s < 4; s++) {
        char sd[3000];
        snprintf(sd, sizeof(sd), "%s/shard-%03u", dir, s);
        DIR *d = opendir(sd);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t l = strlen(de->d_name);
            if (l > 5 && strcmp(de->d_name + l - 5, ".hint") == 0 && n < cap) {
                snprintf(out[n++], 4096, "%s/%s", sd, de->d_name);
            }
        }
        closedir(d);
    }
    return n;
}

static htkv_db *
open_store(char **dir, htkv_config *cfg)
{
    *dir = tu_tmpdir("hints");
    tu_config(cfg, *dir, HTKV_SYNC_NEVER);
    cfg->max_segment_bytes = 64u << 10;
    return tu_open(cfg);
}

/* Goal: close leaves a hint beside every segment with records; reopening with them gives the
 * same store; every hint damaged (a flipped bit each) or removed still opens correctly. */
static void
test_hints_written_used_and_checked(void **state)
{
    (void)state;
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store(&dir, &cfg);
    put_all(db, 1, 0, NKEYS);
    put_all(db, 2, 0, NKEYS / 2);
    uint64_t segs = tu_stats(db).segments;
    assert_int_equal(htkv_close(db), 0);
    static char paths[64][4096];
    size_t n = hint_files(dir, paths, 64);
    assert_int_equal(n, segs);
    db = tu_open(&cfg);
    check_all(db, 2, 0, NKEYS / 2);
    check_all(db, 1, NKEYS / 2, NKEYS);
    assert_int_equal(htkv_close(db), 0);
    /* Damage each hint in turn (header, an entry, the trailer). */
    for (size_t i = 0; i < n; i++) {
        long long len = tu_file_size(paths[i]);
        long long at = (long long)(i * 7919) % len;
        assert_int_equal(tu_flip_bit(paths[i], at, (int)(i % 8)), 0);
        tu_log_warnings = 0;
        db = tu_open(&cfg);
        tu_context("hint %s damaged at %lld", paths[i], at);
        assert_true(tu_log_warnings >= 1); /* "hint file is damaged or stale; scanning" */
        check_all(db, 2, 0, NKEYS / 2);
        check_all(db, 1, NKEYS / 2, NKEYS);
        assert_int_equal(htkv_close(db), 0); /* rewrites the hint of the active segment */
    }
    for (size_t i = 0; i < n; i++) {
        unlink(paths[i]);
    }
    db = tu_open(&cfg);
    check_all(db, 2, 0, NKEYS / 2);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a record damaged inside a hinted segment is not noticed by open, but its read fails
 * with HTKV_ECORRUPT and every other key reads right; with hint_files = 0 the same damage
 * fails open, as without hints. */
static void
test_hints_damaged_record_reads_as_corrupt(void **state)
{
    (void)state;
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store(&dir, &cfg);
    put_all(db, 5, 0, NKEYS);
    assert_int_equal(htkv_close(db), 0);
    static char segs[64][4096];
    size_t ns = tu_segments(dir, segs, 64);
    assert_true(ns >= 4);
    static struct tu_rec recs[4096];
    size_t nr = tu_seg_scan(segs[0], recs, 4096);
    assert_true(nr > 10);
    const struct tu_rec *r = &recs[nr / 2];
    assert_int_equal(tu_flip_bit(segs[0], r->off + r->raw - 1, 3), 0); /* last value byte */
    db = tu_open(&cfg);
    char key[64];
    memcpy(key, r->key, r->key_len);
    unsigned char buf[512];
    size_t vlen = 0;
    assert_int_equal(htkv_get(db, key, r->key_len, buf, sizeof(buf), &vlen), HTKV_ECORRUPT);
    unsigned bad = (unsigned)atoi(key + 5);
    check_all(db, 5, 0, bad);
    check_all(db, 5, bad + 1, NKEYS);
    assert_int_equal(htkv_close(db), 0);
    cfg.hint_files = 0;
    htkv_db *x = NULL;
    assert_int_equal(htkv_open(&cfg, &x), HTKV_ECORRUPT);
    assert_null(x);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the active segment's hint covers only what was there at close; records appended after
 * it (and never closed: a crash) are found by scanning past the hint. Method: close (hint), open,
 * append, copy the files of the open store (what a crash leaves), open the copy. */
static void
test_hints_prefix_then_scan(void **state)
{
    (void)state;
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store(&dir, &cfg);
    put_all(db, 7, 0, NKEYS / 2);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    put_all(db, 8, NKEYS / 2, NKEYS);
    put_all(db, 9, 0, 50);
    char *copy = tu_tmpdir("hints-copy");
    tu_copy_store(dir, copy);
    assert_int_equal(htkv_close(db), 0);
    htkv_config c2;
    tu_config(&c2, copy, HTKV_SYNC_NEVER);
    c2.max_segment_bytes = 64u << 10;
    htkv_db *d2 = tu_open(&c2);
    check_all(d2, 9, 0, 50);
    check_all(d2, 7, 50, NKEYS / 2);
    check_all(d2, 8, NKEYS / 2, NKEYS);
    assert_int_equal(htkv_close(d2), 0);
    tu_rmrf(copy);
    free(copy);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the hints of the segments compaction drops go with them; after close every segment
 * has its hint and no hint is left without its segment. */
static void
test_hints_follow_compaction(void **state)
{
    (void)state;
    char *dir;
    htkv_config cfg;
    htkv_db *db = open_store(&dir, &cfg);
    for (int r = 0; r < 4; r++) {
        put_all(db, 20 + (uint64_t)r, 0, NKEYS);
    }
    assert_int_equal(htkv_compact_now(db), 0);
    static char paths[256][4096];
    struct htkv_stats st = tu_stats(db);
    assert_true(st.compacted_segments > 0);
    assert_int_equal(htkv_close(db), 0);
    size_t n = hint_files(dir, paths, 256);
    assert_int_equal(n, st.segments);
    for (size_t i = 0; i < n; i++) {
        char seg[4096];
        size_t l = strlen(paths[i]);
        snprintf(seg, sizeof(seg), "%.*s.seg", (int)(l - 5), paths[i]);
        tu_context("hint %s", paths[i]);
        assert_true(tu_file_size(seg) > 0);
    }
    db = tu_open(&cfg);
    check_all(db, 23, 0, NKEYS);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/*
 * Goal: an index entry that a hint file calls a SET while the record it names is a DEL (a hint
 * whose checksums agree with wrong contents) never resurrects the deleted key with the DEL's
 * empty value: reads and iteration answer HTKV_ECORRUPT. Method: one shard; put "keep" and
 * "gone", delete "gone", close; in the hint, turn the DEL entry's type into SET and recompute
 * the trailer's CRC; reopen.
 */
static void
test_hints_del_named_set_reads_as_corrupt(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("hints-del-set");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 1;
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "keep", 4, "kept", 4), 0);
    assert_int_equal(htkv_put(db, "gone", 4, "value", 5), 0);
    assert_int_equal(htkv_delete(db, "gone", 4), 0);
    assert_int_equal(htkv_close(db), 0);

    char seg[1][4096];
    assert_int_equal(tu_segments(dir, seg, 1), 1);
    char hint[4200];
    htkv_hint_path(hint, sizeof(hint), seg[0]);
    long long len = tu_file_size(hint);
    assert_int_equal(len, HINT_HDR_BYTES + 3 * HINT_ENT_BYTES + HINT_TRAILER_BYTES);
    unsigned char buf[HINT_HDR_BYTES + 3 * HINT_ENT_BYTES + HINT_TRAILER_BYTES];
    assert_int_equal(tu_read_at(hint, 0, buf, sizeof(buf)), 0);
    unsigned char *del = buf + HINT_HDR_BYTES + 2 * HINT_ENT_BYTES;
    assert_int_equal(del[28], REC_DEL);
    del[28] = REC_SET;
    htkv_store32(buf + HINT_HDR_BYTES + 3 * HINT_ENT_BYTES,
                 htkv_crc32c(0, buf + HINT_HDR_BYTES, 3 * HINT_ENT_BYTES));
    assert_int_equal(tu_write_at(hint, 0, buf, sizeof(buf)), 0);

    db = tu_open(&cfg);
    char val[16];
    size_t vlen = 0;
    assert_int_equal(htkv_get(db, "gone", 4, val, sizeof(val), &vlen), HTKV_ECORRUPT);
    tu_expect(db, "keep", 4, "kept", 4);
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(db, "g", 1, &it), 0);
    const void *k, *v;
    size_t kl, vl;
    assert_int_equal(htkv_iter_next(it, &k, &kl, &v, &vl), HTKV_ECORRUPT);
    htkv_iter_destroy(it);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hints_written_used_and_checked),
        cmocka_unit_test(test_hints_damaged_record_reads_as_corrupt),
        cmocka_unit_test(test_hints_prefix_then_scan),
        cmocka_unit_test(test_hints_follow_compaction),
        cmocka_unit_test(test_hints_del_named_set_reads_as_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
