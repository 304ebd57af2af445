/*
 * test_seg.c - segment files (engine/seg.c) on their own: the header's encoding and reading,
 * create/open/map, growth (reserve, grow_to), zeroing, trimming at close, the test that
 * decides whether an unlisted file holds records (htkv_seg_file_has_record), and a failed
 * fdatasync that stays failed for every later sync of the file, its own or reported.
 */
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "uring/ur_fault.h"

#define VAL_MAX (1u << 20)

static const struct seg_owner OWNER = { .shard = 3, .shard_count = 8, .hash_seed = 0xC0FFEEull };

/* Append a SET record of @p key through the mapping, as a shard does; returns its offset. */
static uint64_t
append_set(struct seg *s, const char *key, uint32_t vlen, uint64_t version)
{
    uint32_t klen = (uint32_t)strlen(key);
    uint64_t size = htkv_rec_size(klen, vlen);
    assert_int_equal(htkv_seg_reserve(s, size), 0);
    unsigned char val[512];
    assert_true(vlen <= sizeof(val));
    tu_fill(val, vlen, version);
    uint64_t off = s->tail;
    assert_int_equal(
        htkv_rec_encode(s->map + off, s->id, off, REC_SET, 0, version, key, klen, val, vlen), size);
    s->tail += size;
    s->records++;
    return off;
}

static void
test_seg_path_names_the_id(void **state)
{
    (void)state;
    char buf[256];
    htkv_seg_path(buf, sizeof(buf), "/x/shard-003", 42);
    assert_string_equal(buf, "/x/shard-003/000000000042.seg");
}

static void
test_seg_header_round_trip(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-hdr");
    char path[4096];
    snprintf(path, sizeof(path), "%s/hdr.seg", dir);
    unsigned char h[SEG_HDR_BYTES];
    htkv_seg_hdr_encode(h, &OWNER, 77);
    assert_memory_equal(h, SEG_MAGIC, 8);
    assert_int_equal(htkv_load32(h + 60), htkv_crc32c(0, h, 60));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
    close(fd);

    struct seg_owner o = { 0 };
    uint64_t id = 0;
    assert_int_equal(htkv_seg_read_header(path, &o, &id), 0);
    assert_int_equal(id, 77);
    assert_int_equal(o.shard, OWNER.shard);
    assert_int_equal(o.shard_count, OWNER.shard_count);
    assert_int_equal(o.hash_seed, OWNER.hash_seed);

    /* One flipped bit anywhere in the checked bytes: corrupt. */
    assert_int_equal(tu_flip_bit(path, 17, 2), 0);
    assert_int_equal(htkv_seg_read_header(path, &o, &id), HTKV_ECORRUPT);
    assert_int_equal(tu_flip_bit(path, 17, 2), 0);
    assert_int_equal(htkv_seg_read_header(path, &o, &id), 0);

    /* A newer format (with a good checksum): refused as a version, not as damage. */
    unsigned char n[SEG_HDR_BYTES];
    memcpy(n, h, sizeof(n));
    htkv_store32(n + 8, HTKV_FORMAT_VERSION + 1);
    htkv_store32(n + 60, htkv_crc32c(0, n, 60));
    assert_int_equal(tu_write_at(path, 0, n, sizeof(n)), 0);
    assert_int_equal(htkv_seg_read_header(path, &o, &id), HTKV_EVERSION);

    /* Shorter than a header, and missing. */
    assert_int_equal(tu_write_at(path, 0, h, sizeof(h)), 0);
    assert_int_equal(tu_truncate(path, SEG_HDR_BYTES - 1), 0);
    assert_int_equal(htkv_seg_read_header(path, &o, &id), HTKV_ECORRUPT);
    unlink(path);
    assert_int_equal(htkv_seg_read_header(path, &o, &id), -ENOENT);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_create_then_open(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-create");
    const uint64_t cap = 8ull << 20;
    struct seg *s = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 5, cap, 0, false, &s), 0);
    assert_non_null(s);
    assert_int_equal(s->id, 5);
    assert_int_equal(s->shard, OWNER.shard);
    assert_int_equal(s->tail, SEG_DATA_OFF);
    assert_int_equal(s->map_bytes, cap);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN);
    assert_true(s->writable);
    assert_false(s->sealed);
    char path[4096];
    htkv_seg_path(path, sizeof(path), dir, 5);
    assert_string_equal(s->path, path);
    assert_int_equal(tu_file_size(path), (long long)SEG_GROW_MIN);
    struct seg_owner o;
    htkv_seg_owner_of(s, &o);
    assert_int_equal(o.shard, OWNER.shard);
    assert_int_equal(o.shard_count, OWNER.shard_count);
    assert_int_equal(o.hash_seed, OWNER.hash_seed);

    /* The id is taken: a second create of it fails and leaves the first file alone. */
    struct seg *dup = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 5, cap, 0, false, &dup), -EEXIST);
    assert_null(dup);
    assert_int_equal(tu_file_size(path), (long long)SEG_GROW_MIN);

    uint64_t off1 = append_set(s, "alpha", 100, 1);
    uint64_t off2 = append_set(s, "beta", 3, 2);
    uint64_t tail = s->tail;
    assert_int_equal(htkv_seg_sync(s), 0);
    htkv_seg_close(s);

    /* Reopened read-only: the header checks, the records are where they were written. */
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 5, 0, false, &s), 0);
    assert_false(s->writable);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN);
    assert_int_equal(s->map_bytes, SEG_GROW_MIN);
    assert_int_equal(s->tail, SEG_DATA_OFF);
    struct rec_hdr rh;
    assert_int_equal(htkv_rec_check(s->map + off1, s->file_bytes - off1, 5, off1, VAL_MAX, &rh), 0);
    assert_int_equal(rh.key_len, 5);
    assert_int_equal(rh.val_len, 100);
    assert_int_equal(rh.version, 1);
    assert_int_equal(htkv_rec_check(s->map + off2, s->file_bytes - off2, 5, off2, VAL_MAX, &rh), 0);
    assert_int_equal(rh.version, 2);
    assert_int_equal(htkv_seg_last_nonzero_end(s->map, SEG_DATA_OFF, s->file_bytes) <= tail, 1);
    assert_true(htkv_seg_all_zero(s->map + tail, s->file_bytes - tail));
    htkv_seg_close(s);

    /* A header for another shard or another id is damage. */
    assert_int_equal(htkv_seg_open(path, OWNER.shard + 1, 5, 0, false, &s), HTKV_ECORRUPT);
    assert_null(s);
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 6, 0, false, &s), HTKV_ECORRUPT);
    assert_null(s);
    char missing[4096];
    htkv_seg_path(missing, sizeof(missing), dir, 9);
    assert_int_equal(htkv_seg_open(missing, OWNER.shard, 9, 0, false, &s), -ENOENT);
    assert_null(s);
    htkv_seg_close(NULL);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_open_refuses_a_short_or_damaged_header(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-badhdr");
    struct seg *s = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 1, 4ull << 20, 0, false, &s), 0);
    char path[4096];
    snprintf(path, sizeof(path), "%s", s->path);
    htkv_seg_close(s);

    assert_int_equal(tu_flip_bit(path, 0, 0), 0); /* the magic */
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 1, 0, false, &s), HTKV_ECORRUPT);
    assert_int_equal(tu_flip_bit(path, 0, 0), 0);
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 1, 0, false, &s), 0);
    htkv_seg_close(s);
    assert_int_equal(tu_flip_bit(path, 40, 5), 0); /* zero bytes, under the checksum */
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 1, 0, false, &s), HTKV_ECORRUPT);
    assert_int_equal(tu_truncate(path, 10), 0);
    assert_int_equal(htkv_seg_open(path, OWNER.shard, 1, 0, false, &s), HTKV_ECORRUPT);
    assert_null(s);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_reserve_grows_up_to_capacity(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-grow");
    const uint64_t cap = 3ull << 20;
    struct seg *s = NULL;
    /* Zero-filled: the growth is written zeros. */
    assert_int_equal(htkv_seg_create(dir, &OWNER, 2, cap, 0, true, &s), 0);
    assert_true(s->zero_fill);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN);

    /* Within the allocated bytes: nothing changes. */
    assert_int_equal(htkv_seg_reserve(s, 4096), 0);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN);
    /* Past them: the file at least doubles, never past the capacity. */
    s->tail = SEG_GROW_MIN - 64;
    assert_int_equal(htkv_seg_reserve(s, 128), 0);
    assert_int_equal(s->file_bytes, 2 * SEG_GROW_MIN);
    assert_int_equal(tu_file_size(s->path), (long long)(2 * SEG_GROW_MIN));
    s->tail = 2 * SEG_GROW_MIN;
    assert_int_equal(htkv_seg_reserve(s, SEG_GROW_MIN + 1), HTKV_EFULL);
    assert_int_equal(htkv_seg_reserve(s, SEG_GROW_MIN), 0);
    assert_int_equal(s->file_bytes, cap);

    /* grow_to: only ever grows. */
    assert_int_equal(htkv_seg_grow_to(s, SEG_GROW_MIN), 0);
    assert_int_equal(s->file_bytes, cap);
    assert_int_equal(tu_file_size(s->path), (long long)cap);
    htkv_seg_close(s);

    assert_int_equal(htkv_seg_create(dir, &OWNER, 3, cap, 0, false, &s), 0);
    assert_int_equal(htkv_seg_grow_to(s, SEG_GROW_MIN + 8192), 0);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN + 8192);
    assert_int_equal(tu_file_size(s->path), (long long)(SEG_GROW_MIN + 8192));
    htkv_seg_close(s);

    /* A first allocation larger than the minimum, rounded to pages, capped by the capacity. */
    assert_int_equal(htkv_seg_create(dir, &OWNER, 4, cap, SEG_GROW_MIN + 1, false, &s), 0);
    assert_int_equal(s->file_bytes, SEG_GROW_MIN + 4096);
    htkv_seg_close(s);
    assert_int_equal(htkv_seg_create(dir, &OWNER, 5, cap, 16ull << 20, false, &s), 0);
    assert_int_equal(s->file_bytes, cap);
    htkv_seg_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_zero_and_trim(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-trim");
    struct seg *s = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 8, 8ull << 20, 0, false, &s), 0);
    uint64_t off1 = append_set(s, "keep", 200, 1);
    uint64_t off2 = append_set(s, "torn", 200, 2);
    assert_false(htkv_seg_all_zero(s->map + off2, s->tail - off2));
    assert_int_equal(htkv_seg_last_nonzero_end(s->map, SEG_DATA_OFF, s->file_bytes) > off2, 1);

    /* Zeroing the second record (a torn tail) leaves the first as it was. */
    assert_int_equal(htkv_seg_zero(s, off2, s->tail), 0);
    assert_true(htkv_seg_all_zero(s->map + off2, s->tail - off2));
    assert_int_equal(htkv_seg_last_nonzero_end(s->map, SEG_DATA_OFF, s->file_bytes) <= off2, 1);
    struct rec_hdr rh;
    assert_int_equal(htkv_rec_check(s->map + off1, off2 - off1, s->id, off1, VAL_MAX, &rh), 0);
    assert_int_equal(htkv_seg_zero(s, off2, off2), 0);
    s->tail = off2;

    /* Trim gives back everything past the page of the tail. */
    assert_int_equal(htkv_seg_trim(s), 0);
    assert_int_equal(s->file_bytes, htkv_align_up(off2, 4096));
    assert_int_equal(tu_file_size(s->path), (long long)htkv_align_up(off2, 4096));
    assert_int_equal(htkv_seg_trim(s), 0); /* nothing more to give back */
    assert_int_equal(s->file_bytes, htkv_align_up(off2, 4096));
    htkv_seg_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_all_zero_and_last_nonzero_end(void **state)
{
    (void)state;
    unsigned char b[64] = { 0 };
    assert_true(htkv_seg_all_zero(b, sizeof(b)));
    assert_true(htkv_seg_all_zero(b, 0));
    assert_int_equal(htkv_seg_last_nonzero_end(b, 0, sizeof(b)), 0);
    assert_int_equal(htkv_seg_last_nonzero_end(b, 16, sizeof(b)), 16);
    b[37] = 1;
    assert_false(htkv_seg_all_zero(b, sizeof(b)));
    assert_true(htkv_seg_all_zero(b, 37));
    assert_int_equal(htkv_seg_last_nonzero_end(b, 0, sizeof(b)), 38);
    assert_int_equal(htkv_seg_last_nonzero_end(b, 0, 37), 0);
    b[63] = 9;
    assert_int_equal(htkv_seg_last_nonzero_end(b, 0, sizeof(b)), 64);
    assert_int_equal(htkv_seg_last_nonzero_end(b, 40, 63), 40);
}

/* htkv_seg_data_end() skips what the file system reports as holes, and answers what a read of
 * every byte answers: a non-zero byte anywhere in a preallocated segment is found, whether it lies
 * in the written records' pages, alone in the unwritten space, or in its last byte. */
static void
test_seg_data_end_matches_a_full_read(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-dataend");
    struct seg *s = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 3, 4ull << 20, 4ull << 20, false, &s), 0);
    append_set(s, "alpha", 300, 1);
    assert_int_equal(htkv_seg_sync(s), 0);
    uint64_t end = s->file_bytes;
    if ((uint64_t)lseek(s->fd, (off_t)s->tail, SEEK_HOLE) >= end) {
        fprintf(stderr, "note: this file system reports no hole in the preallocated space: "
                        "the checks below hold, but do not exercise the holes' skipping\n");
    }
    uint64_t base = htkv_seg_last_nonzero_end(s->map, SEG_DATA_OFF, end); /* the record's end */
    assert_true(base > SEG_DATA_OFF && base <= s->tail);
    assert_int_equal(htkv_seg_data_end(s, s->tail, end), s->tail);
    assert_int_equal(htkv_seg_data_end(s, SEG_DATA_OFF, end), base);
    const uint64_t at[] = {
        s->tail, s->tail + 5000, 1ull << 20, (2ull << 20) + 4095, (3ull << 20) + 12345, end - 1
    };
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        tu_context("byte %zu at %llu", i, (unsigned long long)at[i]);
        unsigned char one = 0x5a;
        assert_int_equal(pwrite(s->fd, &one, 1, (off_t)at[i]), 1);
        uint64_t want = htkv_seg_last_nonzero_end(s->map, SEG_DATA_OFF, end);
        assert_int_equal(want, at[i] + 1);
        assert_int_equal(htkv_seg_data_end(s, SEG_DATA_OFF, end), want);
        assert_int_equal(htkv_seg_data_end(s, at[i] + 1, end), at[i] + 1);
        assert_int_equal(htkv_seg_data_end(s, at[i], at[i] + 1), at[i] + 1);
        one = 0;
        assert_int_equal(pwrite(s->fd, &one, 1, (off_t)at[i]), 1);
        assert_int_equal(htkv_seg_data_end(s, SEG_DATA_OFF, end), base);
    }
    htkv_seg_close(s);
    tu_rmrf(dir);
    free(dir);
}

static void
test_seg_file_has_record(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-hasrec");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    struct seg *s = NULL;

    /* A new segment with no record: none. */
    assert_int_equal(htkv_seg_create(dir, &OWNER, 11, 4ull << 20, 0, false, &s), 0);
    const char *name11 = "000000000011.seg";
    assert_false(htkv_seg_file_has_record(dfd, name11, 11, VAL_MAX));
    /* One record: found, by relative and by absolute path. */
    append_set(s, "k", 10, 1);
    char abs[4096];
    snprintf(abs, sizeof(abs), "%s", s->path);
    htkv_seg_close(s);
    assert_true(htkv_seg_file_has_record(dfd, name11, 11, VAL_MAX));
    assert_true(htkv_seg_file_has_record(AT_FDCWD, abs, 11, VAL_MAX));
    /* The same file under another segment's name: its records check with the id of its header. */
    char renamed[4096];
    htkv_seg_path(renamed, sizeof(renamed), dir, 12);
    assert_int_equal(rename(abs, renamed), 0);
    assert_true(htkv_seg_file_has_record(dfd, "000000000012.seg", 12, VAL_MAX));
    /* A damaged record checks nowhere: none. */
    assert_int_equal(tu_flip_bit(renamed, SEG_DATA_OFF + REC_HDR_BYTES, 0), 0);
    assert_false(htkv_seg_file_has_record(dfd, "000000000012.seg", 12, VAL_MAX));

    /* Missing: none. Not a regular file: counts as holding records. Header only: none. */
    assert_false(htkv_seg_file_has_record(dfd, "000000000099.seg", 99, VAL_MAX));
    assert_int_equal(mkdirat(dfd, "000000000013.seg", 0755), 0);
    assert_true(htkv_seg_file_has_record(dfd, "000000000013.seg", 13, VAL_MAX));
    unsigned char h[SEG_HDR_BYTES];
    htkv_seg_hdr_encode(h, &OWNER, 14);
    char p14[4096];
    htkv_seg_path(p14, sizeof(p14), dir, 14);
    int fd = open(p14, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
    close(fd);
    assert_false(htkv_seg_file_has_record(dfd, "000000000014.seg", 14, VAL_MAX));
    close(dfd);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: early writeback starts once a chunk of whole pages lies behind the tail, covers whole
 * pages only (never the page the tail is in), starts nothing again below where it got to, and
 * leaves the records as they were. */
static void
test_seg_writeback_starts_by_chunks(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-wb");
    struct seg *s = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 21, 8ull << 20, 0, false, &s), 0);
    uint64_t v = 1;
    while (s->tail < SEG_WRITEBACK_CHUNK - 4096) {
        append_set(s, "key", 500, v++);
    }
    htkv_seg_writeback_start(s);
    assert_int_equal(s->wb_from, 0); /* less than a chunk of whole pages */
    while (s->tail < SEG_WRITEBACK_CHUNK + 10000) {
        append_set(s, "key", 500, v++);
    }
    uint64_t tail = s->tail;
    htkv_seg_writeback_start(s);
    assert_int_equal(s->wb_from, tail & ~(uint64_t)4095);
    assert_true(s->wb_from < tail && tail - s->wb_from < 4096);
    append_set(s, "key", 500, v++);
    htkv_seg_writeback_start(s);
    assert_int_equal(s->wb_from, tail & ~(uint64_t)4095); /* not a chunk more yet */
    /* The records read back as written. */
    char path[4096];
    snprintf(path, sizeof(path), "%s", s->path);
    uint64_t records = s->records;
    htkv_seg_close(s);
    assert_int_equal(tu_seg_scan(path, NULL, 0), records);
    tu_rmrf(dir);
    free(dir);
}

/* A write-back error is reported to one fdatasync of a descriptor only; the one that did not see
 * it must not count as a success over the lost pages. Once a sync of the file failed, every
 * later one fails with that error, including the results of syncs run elsewhere. */
static void
test_seg_failed_sync_stays_failed(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("seg-syncfail");
    struct seg *s = NULL, *other = NULL;
    assert_int_equal(htkv_seg_create(dir, &OWNER, 1, 4ull << 20, 0, false, &s), 0);
    assert_int_equal(htkv_seg_create(dir, &OWNER, 2, 4ull << 20, 0, false, &other), 0);
    assert_int_equal(htkv_seg_sync(s), 0);
    assert_int_equal(htkv_seg_sync_result(s, 0), 0);
    htkv_fault_arm(HTKV_FAULT_SYNC, 1, EIO, false); /* the next sync only */
    assert_int_equal(htkv_seg_sync(s), -EIO);
    htkv_fault_disarm();
    assert_int_equal(htkv_seg_sync(s), -EIO);           /* a real, successful fdatasync now */
    assert_int_equal(htkv_seg_sync_result(s, 0), -EIO); /* a ring's success: the same */
    assert_int_equal(htkv_seg_sync(other), 0);          /* per file */
    /* A failure first seen in a result stays as well, with its own error. */
    assert_int_equal(htkv_seg_sync_result(other, -ENOSPC), -ENOSPC);
    assert_int_equal(htkv_seg_sync(other), -ENOSPC);
    htkv_seg_close(s);
    htkv_seg_close(other);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seg_path_names_the_id),
        cmocka_unit_test(test_seg_writeback_starts_by_chunks),
        cmocka_unit_test(test_seg_header_round_trip),
        cmocka_unit_test(test_seg_create_then_open),
        cmocka_unit_test(test_seg_open_refuses_a_short_or_damaged_header),
        cmocka_unit_test(test_seg_reserve_grows_up_to_capacity),
        cmocka_unit_test(test_seg_zero_and_trim),
        cmocka_unit_test(test_seg_all_zero_and_last_nonzero_end),
        cmocka_unit_test(test_seg_data_end_matches_a_full_read),
        cmocka_unit_test(test_seg_file_has_record),
        cmocka_unit_test(test_seg_failed_sync_stays_failed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
