/*
 * test_recover_torn_tail.c - recovery (engine/recover.c) of a torn tail: a store whose last
 * record was torn (cut short, or followed by junk with nothing valid after it) opens with
 * everything before it, without it, and keeps working.
 *
 * Each test writes a store, leaves it as a crash would (a record damaged before the end a clean
 * close records is corruption, test_integrity_regress), and then for every byte offset inside
 * the last record of the active segment works on a fresh copy: cuts the file there (or overwrites
 * the rest with seeded junk), reopens, checks, writes, reopens again and checks again.
 */
#include <unistd.h>

#include "tests/support/testutil.h"

#define NKEYS 40

struct tt_store {
    char *dir;
    htkv_config cfg;
    char keys[NKEYS + 1][32];
    unsigned char vals[NKEYS + 1][400];
    size_t vlen[NKEYS + 1];
    bool present[NKEYS + 1];
    /* The last write: key index, and what the key holds with and without it. */
    size_t last;
    bool last_present_after;  /* the write is a put (true) or a delete (false) */
    bool last_present_before; /* the key had a value before the last write */
    size_t last_vlen_before;
    unsigned char last_val_before[400];
};

static void
tt_put(htkv_db *db, struct tt_store *s, size_t i, size_t vlen, uint64_t tag)
{
    tu_fill(s->vals[i], vlen, tag);
    s->vlen[i] = vlen;
    s->present[i] = true;
    assert_int_equal(htkv_put(db, s->keys[i], strlen(s->keys[i]), s->vals[i], vlen), 0);
}

/* The last write: a put of the new key "last-key-X" (10 bytes) with @p vlen bytes (tag @p tag). */
static void
tt_put_new_last_key(htkv_db *db, struct tt_store *s, size_t vlen, uint64_t tag)
{
    snprintf(s->keys[NKEYS], sizeof(s->keys[NKEYS]), "last-key-X");
    s->last = NKEYS;
    s->last_present_after = true;
    tt_put(db, s, NKEYS, vlen, tag);
}

/* A put of every key (key i with @p base + i * @p mul % 300 bytes), then the last write: a put
 * of the new key "last-key-X" with @p last_vlen bytes (tag @p last_tag). */
static void
tt_puts_then_new_key(htkv_db *db, struct tt_store *s, uint64_t seed, size_t base, size_t mul,
                     size_t last_vlen, uint64_t last_tag)
{
    for (size_t i = 0; i < NKEYS; i++) {
        tt_put(db, s, i, base + (i * mul) % 300, seed + i);
    }
    tt_put_new_last_key(db, s, last_vlen, last_tag);
}

/* Check every key but the last-written one against the table, and the last one against
 * @p last_state: 1 = its new value, 0 = what it held before, -1 = either. */
static void
tt_verify(htkv_db *db, const struct tt_store *s, int last_state)
{
    for (size_t i = 0; i <= NKEYS; i++) {
        if (s->keys[i][0] == '\0') {
            continue;
        }
        const char *k = s->keys[i];
        if (i != s->last) {
            tu_expect(db, k, strlen(k), s->present[i] ? s->vals[i] : NULL, s->vlen[i]);
            continue;
        }
        const void *after = s->last_present_after ? s->vals[i] : NULL;
        const void *before = s->last_present_before ? s->last_val_before : NULL;
        if (last_state == 1) {
            tu_expect(db, k, strlen(k), after, s->vlen[i]);
        } else if (last_state == 0) {
            tu_expect(db, k, strlen(k), before, s->last_vlen_before);
        } else {
            void *got = NULL;
            size_t n = 0;
            int rc = htkv_get_alloc(db, k, strlen(k), &got, &n);
            bool is_after = after == NULL ? rc == HTKV_ENOTFOUND
                                          : rc == 0 && n == s->vlen[i] &&
                                                (n == 0 || memcmp(got, after, n) == 0);
            bool is_before = before == NULL ? rc == HTKV_ENOTFOUND
                                            : rc == 0 && n == s->last_vlen_before &&
                                                  (n == 0 || memcmp(got, before, n) == 0);
            htkv_free(got);
            assert_true(is_after || is_before);
        }
    }
}

/* Find the last record of the active segment of shard 0: its path, offset and sizes. */
static void
tt_last_record(const char *dir, char *path, struct tu_rec *last)
{
    char(*segs)[4096] = malloc(256 * 4096);
    assert_non_null(segs);
    size_t n = tu_shard_segments(dir, 0, segs, 256);
    assert_true(n >= 1);
    strcpy(path, segs[n - 1]);
    free(segs);
    struct tu_rec *recs = malloc(4096 * sizeof(*recs));
    assert_non_null(recs);
    size_t nr = tu_seg_scan(path, recs, 4096);
    assert_true(nr >= 1 && nr < 4096);
    *last = recs[nr - 1];
    free(recs);
}

/* Which offsets of the last record to cut at. */
enum tt_range {
    TT_CHECKED, /* [off, off + raw): header, key and value */
    TT_PADDING, /* [off + raw, off + size): the zero padding after them */
};

/*
 * The cut loop. For every offset of @p range in the last record: copy the store, damage the
 * copy's active segment from that offset (mode 0: truncate; mode 1: overwrite the rest and up
 * to 600 bytes more with seeded junk), open, verify, put a new key, reopen, verify.
 */
static void
tt_cut_every_offset(struct tt_store *s, uint64_t seed, enum tt_range range)
{
    char seg[4096];
    struct tu_rec last;
    tt_last_record(s->dir, seg, &last);
    assert_true(memcmp(last.key, s->keys[s->last], strlen(s->keys[s->last])) == 0);
    const char *rel = seg + strlen(s->dir); /* "/shard-000/NNN.seg" */
    uint64_t rng = seed;
    unsigned char junk[8192];
    long long from = range == TT_CHECKED ? last.off : last.off + last.raw;
    long long to = range == TT_CHECKED ? last.off + last.raw : last.off + last.size;
    assert_true(from < to);
    for (int mode = 0; mode < 2; mode++) {
        for (long long cut = from; cut < to; cut++) {
            tu_context(
                "seed %llu: mode %d, cut at %lld of a record at %lld (raw %lld, padded %lld)",
                (unsigned long long)seed, mode, cut, last.off, last.raw, last.size);
            char *work = tu_tmpdir("torn-work");
            tu_copy_store(s->dir, work);
            char wseg[8192];
            snprintf(wseg, sizeof(wseg), "%s%s", work, rel);
            size_t junk_len = 0;
            if (mode == 0) {
                assert_int_equal(tu_truncate(wseg, cut), 0);
            } else {
                long long to_end = tu_file_size(wseg) - cut;
                junk_len = (size_t)(to_end > 0 ? to_end : 0) + 1 + (size_t)(tu_rand(&rng) % 600);
                if (junk_len > sizeof(junk)) {
                    junk_len = sizeof(junk);
                }
                for (size_t i = 0; i < junk_len; i++) {
                    junk[i] = (unsigned char)tu_rand(&rng);
                }
                /* The first junk byte must differ from the byte it replaces: a junk byte equal
                 * to the last byte of the record would leave the record whole (1 in 256). */
                unsigned char orig;
                if (tu_read_at(wseg, cut, &orig, 1) == 0 && junk[0] == orig) {
                    junk[0] ^= 0xFF;
                }
                assert_int_equal(tu_write_at(wseg, cut, junk, junk_len), 0);
            }
            htkv_config cfg = s->cfg;
            cfg.data_dir = work;
            htkv_db *db = NULL;
            int rc = htkv_open(&cfg, &db);
            if (rc != 0) {
                fprintf(stderr,
                        "seed %llu: mode %d cut at %lld (record at %lld, %lld bytes): %s (%s)\n",
                        (unsigned long long)seed, mode, cut, last.off, last.raw, htkv_strerror(rc),
                        htkv_last_error());
            }
            assert_int_equal(rc, 0);
            /* Cut inside the checked bytes: the write is gone. Cut in the padding: truncating
             * may keep or drop it; junk after the padding leaves the record whole. */
            int state = cut < last.off + last.raw ? 0 : mode == 1 ? 1 : -1;
            tt_verify(db, s, state);
            struct htkv_stats st = tu_stats(db);
            if (state == 0 && mode == 1) {
                assert_true(st.truncated_bytes > 0);
            }
            assert_int_equal(htkv_put(db, "after-cut", 9, "fresh", 5), 0);
            tu_expect(db, "after-cut", 9, "fresh", 5);
            assert_int_equal(htkv_close(db), 0);

            db = tu_open(&cfg);
            tt_verify(db, s, state);
            tu_expect(db, "after-cut", 9, "fresh", 5);
            st = tu_stats(db);
            assert_int_equal(st.truncated_bytes, 0); /* the cut was made durable and clean */
            assert_int_equal(htkv_close(db), 0);
            tu_rmrf(work);
            free(work);
        }
    }
}

static void
tt_store_init(struct tt_store *s, const char *tag, uint64_t seg_bytes)
{
    memset(s, 0, sizeof(*s));
    s->dir = tu_tmpdir(tag);
    tu_config(&s->cfg, s->dir, HTKV_SYNC_NEVER);
    s->cfg.shard_count = 1;
    s->cfg.max_segment_bytes = seg_bytes;
    for (size_t i = 0; i < NKEYS; i++) {
        snprintf(s->keys[i], sizeof(s->keys[i]), "key-%02zu", i);
    }
}

static void
tt_store_fini(struct tt_store *s)
{
    tu_rmrf(s->dir);
    free(s->dir);
}

/* Goal: a torn last put (new key) loses only that put, at every cut offset of its checked
 * bytes, and the store keeps working. Method: 40 puts (some overwritten) then a put of a new key
 * whose record has 3 bytes of padding; tt_cut_every_offset. */
static void
test_torn_tail_last_put_cut_at_every_offset(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_torn_tail_last_put_cut_at_every_offset");
    struct tt_store s;
    tt_store_init(&s, "torn-put", 64ull << 20);
    htkv_db *db = tu_open(&s.cfg);
    for (size_t i = 0; i < NKEYS; i++) {
        tt_put(db, &s, i, (i * 37) % 300, seed + i);
    }
    for (size_t i = 0; i < NKEYS; i += 3) {
        tt_put(db, &s, i, (i * 53) % 400, seed + i + 1000);
    }
    assert_int_equal(htkv_delete(db, s.keys[5], strlen(s.keys[5])), 0);
    s.present[5] = false;
    s.vlen[5] = 0;
    tt_put_new_last_key(db, &s, 51, seed + 99); /* 51 bytes: raw 85, padded 88 */
    tu_close_as_crash(db);                      /* a torn tail is what a crash leaves */
    tt_cut_every_offset(&s, seed, TT_CHECKED);
    tt_store_fini(&s);
}

/* Goal: a torn last overwrite brings back the value before it, never a mix; a torn delete
 * brings back the deleted value. Method: overwrite an existing key last (then, in a second
 * store, delete one last); tt_cut_every_offset. */
static void
test_torn_tail_last_overwrite_or_delete_cut_at_every_offset(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_torn_tail_last_overwrite_or_delete_cut_at_every_offset");
    for (int del = 0; del < 2; del++) {
        struct tt_store s;
        tt_store_init(&s, "torn-over", 64ull << 20);
        htkv_db *db = tu_open(&s.cfg);
        for (size_t i = 0; i < NKEYS; i++) {
            tt_put(db, &s, i, 10 + (i * 29) % 200, seed + i);
        }
        s.last = 17;
        s.last_present_before = true;
        s.last_vlen_before = s.vlen[17];
        memcpy(s.last_val_before, s.vals[17], s.vlen[17]);
        if (del) {
            assert_int_equal(htkv_delete(db, s.keys[17], strlen(s.keys[17])), 0);
            s.present[17] = false;
            s.vlen[17] = 0;
            s.last_present_after = false;
        } else {
            tt_put(db, &s, 17, 45, seed + 555);
            s.last_present_after = true;
        }
        tu_close_as_crash(db); /* a torn tail is what a crash leaves */
        tt_cut_every_offset(&s, seed + (uint64_t)del, TT_CHECKED);
        tt_store_fini(&s);
    }
}

/* Goal: when the torn record is the only record of a freshly rotated active segment (the
 * sealed one before it intact), the cut leaves an empty active segment that takes new writes.
 * Method: 64 KiB segments; put until a put starts a new segment, stop there; cut every offset
 * of that record. */
static void
test_torn_tail_only_record_of_new_segment_cut_at_every_offset(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_torn_tail_only_record_of_new_segment_cut_at_every_offset");
    struct tt_store s;
    tt_store_init(&s, "torn-rot", 64u << 10);
    htkv_db *db = tu_open(&s.cfg);
    uint64_t segs = tu_stats(db).segments;
    size_t i = 0;
    for (int round = 0; round < 100000; round++) {
        i = (size_t)round % NKEYS;
        tt_put(db, &s, i, 300 + (size_t)round % 50, seed + (uint64_t)round);
        uint64_t now = tu_stats(db).segments;
        if (now != segs && round > NKEYS) {
            break;
        }
        segs = now;
    }
    assert_int_equal(tu_stats(db).segments, 2);
    /* The last put went to the new segment; its previous value is in the sealed one. */
    s.last = i;
    s.last_present_after = true;
    tu_close_as_crash(db); /* a torn tail is what a crash leaves */
    /* What the key held before: read it back from a copy where the last record is cut. */
    char *probe = tu_tmpdir("torn-probe");
    tu_copy_store(s.dir, probe);
    char seg[4096];
    struct tu_rec last;
    tt_last_record(probe, seg, &last);
    assert_int_equal(last.off, 64); /* first record of its segment */
    assert_int_equal(tu_truncate(seg, last.off), 0);
    htkv_config pc = s.cfg;
    pc.data_dir = probe;
    pc.read_only = 1;
    db = tu_open(&pc);
    size_t n = 0;
    assert_int_equal(htkv_get(db, s.keys[i], strlen(s.keys[i]), s.last_val_before,
                              sizeof(s.last_val_before), &n),
                     0);
    s.last_vlen_before = n;
    s.last_present_before = true;
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(probe);
    free(probe);
    tt_cut_every_offset(&s, seed, TT_CHECKED);
    tt_store_fini(&s);
}

/* Goal: a file that ends inside the zero padding of its last record (every checked byte
 * present; a truncated copy, a file system that lost the last block's tail) opens, keeps or
 * drops that record whole, and takes new writes (seg.c invariant 1: tail <= file size).
 * Method: as test_torn_tail_last_put_cut_at_every_offset, cutting only in the padding. */
static void
test_torn_tail_cut_in_padding_of_last_record(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_torn_tail_cut_in_padding_of_last_record");
    struct tt_store s;
    tt_store_init(&s, "torn-pad", 64ull << 20);
    htkv_db *db = tu_open(&s.cfg);
    tt_puts_then_new_key(db, &s, seed, 1, 41, 49, seed + 98); /* raw 83: 5 bytes of padding */
    assert_int_equal(htkv_close(db), 0);
    tt_cut_every_offset(&s, seed, TT_PADDING);
    tt_store_fini(&s);
}

/* Goal: a segment as large as its capacity whose file ends inside its last record's padding
 * (the record itself whole) opens and reads, instead of recovery asking for room past the
 * mapping. Method: one record that fills a 64 KiB segment; cut the file at the record's last
 * byte; reopen writable; read; write more. */
static void
test_torn_tail_cut_in_padding_of_full_segment(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("torn-full-pad");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 1;
    cfg.max_segment_bytes = 64u << 10;
    htkv_db *db = tu_open(&cfg);
    static unsigned char val[65450];
    tu_fill(val, sizeof(val), 77);
    assert_int_equal(htkv_put(db, "k", 1, val, sizeof(val)), 0);
    assert_int_equal(htkv_close(db), 0);
    static char segs[8][4096];
    size_t n = tu_segments(dir, segs, 8);
    assert_true(n >= 1);
    struct tu_rec r[4];
    size_t nr = tu_seg_scan(segs[n - 1], r, 4);
    assert_true(nr >= 1);
    assert_true(r[nr - 1].raw < r[nr - 1].size); /* it has padding */
    assert_int_equal(tu_truncate(segs[n - 1], r[nr - 1].off + r[nr - 1].raw), 0);
    char hint[4200];
    snprintf(hint, sizeof(hint), "%.*s.hint", (int)(strlen(segs[n - 1]) - 4), segs[n - 1]);
    unlink(hint);
    db = tu_open(&cfg);
    tu_expect(db, "k", 1, val, sizeof(val));
    assert_int_equal(htkv_put(db, "after", 5, "x", 1), 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "k", 1, val, sizeof(val));
    tu_expect(db, "after", 5, "x", 1);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: junk far past a torn tail, with unwritten space between (a write that reached the
 * disk out of order, a stray block), is found and zeroed like junk right after it, wherever it
 * lies: recovery skips the file's holes (SEEK_DATA) but must read every region with data, the
 * file's last byte included. Method: a torn last record, then 1 to 64 junk bytes at offsets
 * spread over the preallocated remainder (one or two regions each time); open, check the last
 * put is gone, the others kept, the junk counted; write; close (the junk is zeroed or trimmed
 * away); reopen: nothing cut again. */
static void
test_torn_tail_junk_beyond_a_hole(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_torn_tail_junk_beyond_a_hole");
    struct tt_store s;
    tt_store_init(&s, "torn-hole", 8ull << 20);
    htkv_db *db = tu_open(&s.cfg);
    tt_puts_then_new_key(db, &s, seed, 20, 37, 51, seed + 99);
    tu_close_as_crash(db);
    char seg[4096];
    struct tu_rec last;
    tt_last_record(s.dir, seg, &last);
    const char *rel = seg + strlen(s.dir);
    uint64_t rng = seed;
    for (int round = 0; round < 12; round++) {
        char *work = tu_tmpdir("torn-hole-work");
        tu_copy_store(s.dir, work);
        char wseg[8192];
        snprintf(wseg, sizeof(wseg), "%s%s", work, rel);
        long long size = tu_file_size(wseg);
        assert_true(size > last.off + last.size + (1 << 16));
        unsigned char flip;
        assert_int_equal(tu_read_at(wseg, last.off + 30, &flip, 1), 0);
        flip ^= 0x40; /* the last record's key: it fails its check, the tail is torn there */
        assert_int_equal(tu_write_at(wseg, last.off + 30, &flip, 1), 0);
        long long far_end = last.off + last.size;
        for (int j = 0; j < 1 + round % 2; j++) {
            unsigned char junk[64];
            size_t n = 1 + (size_t)(tu_rand(&rng) % sizeof(junk));
            long long room = size - (last.off + last.size + 8192) - (long long)n;
            long long at = round == 0 && j == 0 ? size - (long long)n /* the file's end */
                                                : last.off + last.size + 8192 +
                                                      (long long)(tu_rand(&rng) % (uint64_t)room);
            tu_fill(junk, n, tu_rand(&rng));
            junk[n - 1] |= 1; /* the junk's end is where recovery must find it */
            assert_int_equal(tu_write_at(wseg, at, junk, n), 0);
            far_end = at + (long long)n > far_end ? at + (long long)n : far_end;
        }
        tu_context("seed %llu: round %d, junk ending at %lld of %lld", (unsigned long long)seed,
                   round, far_end, size);
        htkv_config cfg = s.cfg;
        cfg.data_dir = work;
        db = tu_open(&cfg);
        tt_verify(db, &s, 0);
        struct htkv_stats st = tu_stats(db);
        assert_true(st.truncated_bytes >= (uint64_t)(far_end - (last.off + 30)));
        assert_int_equal(htkv_put(db, "after-cut", 9, "fresh", 5), 0);
        assert_int_equal(htkv_close(db), 0);
        unsigned char tail = 0; /* zeroed on disk, or cut off by the close's trim */
        assert_true(tu_file_size(wseg) < far_end || tu_read_at(wseg, far_end - 1, &tail, 1) == 0);
        assert_int_equal(tail, 0);
        db = tu_open(&cfg);
        tt_verify(db, &s, 0);
        tu_expect(db, "after-cut", 9, "fresh", 5);
        st = tu_stats(db);
        assert_int_equal(st.truncated_bytes, 0);
        assert_int_equal(htkv_close(db), 0);
        tu_rmrf(work);
        free(work);
    }
    tt_store_fini(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torn_tail_last_put_cut_at_every_offset),
        cmocka_unit_test(test_torn_tail_last_overwrite_or_delete_cut_at_every_offset),
        cmocka_unit_test(test_torn_tail_only_record_of_new_segment_cut_at_every_offset),
        cmocka_unit_test(test_torn_tail_cut_in_padding_of_last_record),
        cmocka_unit_test(test_torn_tail_cut_in_padding_of_full_segment),
        cmocka_unit_test(test_torn_tail_junk_beyond_a_hole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
