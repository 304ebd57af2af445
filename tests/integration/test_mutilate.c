/*
 * test_mutilate.c - whole blocks damaged the way disks damage them: a block of a segment zeroed
 * (a lost write), a block copied over another (a misdirected write), and a manifest or hint
 * block copied over; with and without hint files. Open either succeeds or fails with
 * HTKV_ECORRUPT; a get returns the right value, HTKV_ENOTFOUND (the record is gone) or
 * HTKV_ECORRUPT, never a wrong value. Records carry a CRC over their segment id and offset, so a
 * copied block cannot pass for the one it overwrote.
 */
#include <errno.h>
#include <unistd.h>

#include "tests/support/testutil.h"

#define NKEYS 1200
#define BLOCK 4096

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "mut-%05u", i);
}

static void
fill_store(const htkv_config *cfg)
{
    htkv_db *db = tu_open(cfg);
    unsigned char val[700];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        tu_fill(val, 1 + i % 700, i + 7);
        assert_int_equal(htkv_put(db, key, key_of(i, key), val, 1 + i % 700), 0);
    }
    assert_int_equal(htkv_close(db), 0);
}

/* Open the damaged copy: ECORRUPT, or every get right / absent / ECORRUPT. */
static void
check_never_wrong(const htkv_config *cfg, int *opened, int *refused)
{
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    assert_true(rc == 0 || rc == HTKV_ECORRUPT);
    if (rc != 0) {
        (*refused)++;
        return;
    }
    (*opened)++;
    unsigned char val[700], buf[700];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t n = 0;
        rc = htkv_get(db, key, key_of(i, key), buf, sizeof(buf), &n);
        tu_context("key %u: %s", i, htkv_strerror(rc));
        assert_true(rc == 0 || rc == HTKV_ENOTFOUND || rc == HTKV_ECORRUPT);
        if (rc == 0) {
            tu_fill(val, 1 + i % 700, i + 7);
            assert_int_equal(n, 1 + i % 700);
            assert_memory_equal(buf, val, n);
        }
    }
    assert_int_equal(htkv_close(db), 0);
}

enum damage { ZERO_BLOCK, COPY_BLOCK };

static void
damage_file(const char *path, enum damage d, long long at, long long from)
{
    unsigned char blk[BLOCK];
    if (d == ZERO_BLOCK) {
        memset(blk, 0, sizeof(blk));
    } else {
        assert_int_equal(tu_read_at(path, from, blk, sizeof(blk)), 0);
    }
    assert_int_equal(tu_write_at(path, at, blk, sizeof(blk)), 0);
}

/* Goal: see the file header. Method: a store of 1,200 keys over 64 KiB segments; for each
 * segment, each of a few blocks, zeroed and copied over from another block of the same or
 * another segment, in a fresh copy of the store; with hint_files 0 and 1. */
static void
test_mutilate_blocks_never_give_a_wrong_value(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("mutilate");
    char *dir = tu_tmpdir("mutilate");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    fill_store(&cfg);
    static char segs[64][4096];
    size_t nsegs = tu_segments(dir, segs, 64);
    assert_true(nsegs >= 8);
    int opened = 0, refused = 0, cases = 0;
    for (int hints = 0; hints < 2; hints++) {
        for (int k = 0; k < 24; k++) {
            size_t si = (size_t)(tu_rand(&seed) % nsegs);
            long long size = tu_file_size(segs[si]);
            if (size < 2 * BLOCK) {
                continue;
            }
            long long blocks = size / BLOCK;
            long long at = (long long)(tu_rand(&seed) % (uint64_t)blocks) * BLOCK;
            enum damage d = k % 2 == 0 ? ZERO_BLOCK : COPY_BLOCK;
            size_t sj = (size_t)(tu_rand(&seed) % nsegs); /* the source may be another segment */
            long long sblocks = tu_file_size(segs[sj]) / BLOCK;
            long long from = (long long)(tu_rand(&seed) % (uint64_t)sblocks) * BLOCK;
            char *copy = tu_tmpdir("mutilate-copy");
            tu_copy_store(dir, copy);
            char path[8200];
            snprintf(path, sizeof(path), "%s%s", copy, segs[si] + strlen(dir));
            char src[8200];
            snprintf(src, sizeof(src), "%s%s", copy, segs[sj] + strlen(dir));
            if (d == COPY_BLOCK) {
                unsigned char blk[BLOCK];
                assert_int_equal(tu_read_at(src, from, blk, sizeof(blk)), 0);
                assert_int_equal(tu_write_at(path, at, blk, sizeof(blk)), 0);
            } else {
                damage_file(path, d, at, 0);
            }
            htkv_config c2 = cfg;
            c2.data_dir = copy;
            c2.hint_files = hints;
            tu_context("%s block %lld of %s (from %s %lld), hints %d",
                       d == ZERO_BLOCK ? "zeroed" : "copied", at / BLOCK, segs[si], segs[sj],
                       from / BLOCK, hints);
            check_never_wrong(&c2, &opened, &refused);
            cases++;
            tu_rmrf(copy);
            free(copy);
        }
    }
    /* The manifest: its only block copied over by a segment's block. */
    char *copy = tu_tmpdir("mutilate-man");
    tu_copy_store(dir, copy);
    char man[8200];
    snprintf(man, sizeof(man), "%s/MANIFEST-000001", copy);
    if (tu_file_size(man) > 0) {
        unsigned char blk[BLOCK];
        char src[8200];
        snprintf(src, sizeof(src), "%s%s", copy, segs[0] + strlen(dir));
        assert_int_equal(tu_read_at(src, 0, blk, sizeof(blk)), 0);
        assert_int_equal(tu_write_at(man, 0, blk, sizeof(blk)), 0);
        htkv_config c2 = cfg;
        c2.data_dir = copy;
        htkv_db *db = NULL;
        assert_int_equal(htkv_open(&c2, &db), HTKV_ECORRUPT);
        assert_null(db);
    }
    tu_rmrf(copy);
    free(copy);
    fprintf(stderr, "[mutilate] %d damaged copies: %d opened (no wrong value), %d refused\n", cases,
            opened, refused);
    assert_true(cases >= 40);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutilate_blocks_never_give_a_wrong_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
