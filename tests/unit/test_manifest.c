/*
 * test_manifest.c - CURRENT and the MANIFEST edit log: create, edit, reload, and every kind of
 * damage (torn last edit, damaged edit in the middle, CURRENT naming nothing, newer format).
 */
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/manifest.h"

/* Header, then INIT, then one edit per segment change; every edit is 28 bytes. */
#define EDIT_BYTES (MAN_EDIT_HDR + 16)
#define M1 "MANIFEST-000001"

struct man_fixture {
    char *dir;
    int dir_fd;
    char path[4200]; /* MANIFEST-000001 */
};

static int
man_setup(void **state)
{
    struct man_fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = tu_tmpdir("manifest");
    f->dir_fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(f->dir_fd >= 0);
    snprintf(f->path, sizeof(f->path), "%s/" M1, f->dir);
    *state = f;
    return 0;
}

static int
man_teardown(void **state)
{
    struct man_fixture *f = *state;
    close(f->dir_fd);
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static struct manifest *
man_load(struct man_fixture *f, bool writable)
{
    struct manifest *m = NULL;
    int rc = htkv_manifest_load(f->dir_fd, writable, &m);
    if (rc != 0) {
        fprintf(stderr, "manifest load: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
    }
    assert_int_equal(rc, 0);
    assert_non_null(m);
    if (writable) {
        /* What an open does once every other check passed. */
        assert_int_equal(htkv_manifest_cut_torn(m), 0);
    }
    return m;
}

/* Expect shard @p shard of @p m to list exactly @p ids (ascending). */
static void
expect_segs(const struct manifest *m, uint32_t shard, const uint64_t *ids, size_t n)
{
    assert_true(shard < m->shard_count);
    assert_int_equal(m->shards[shard].count, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(m->shards[shard].seg_ids[i], ids[i]);
    }
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

static void
spit(const char *path, const void *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, len), (ssize_t)len);
    close(fd);
}

/* A store manifest with 4 shards: shard 0 = {1, 2, 3}, then 2 dropped; shard 2 = {4}.
 * Edits: INIT, ADD 0/1, ADD 0/2, ADD 0/3, ADD 2/4, DROP 0/2. */
static void
man_build(struct man_fixture *f)
{
    struct manifest *m = NULL;
    assert_int_equal(htkv_manifest_create(f->dir_fd, 4, 0xABCDEF, &m), 0);
    for (int i = 0; i < 3; i++) {
        uint64_t id = htkv_manifest_next_seg_id(m);
        assert_int_equal(id, (uint64_t)i + 1);
        assert_int_equal(htkv_manifest_add_seg(m, 0, id), 0);
    }
    assert_int_equal(htkv_manifest_add_seg(m, 2, htkv_manifest_next_seg_id(m)), 0);
    assert_int_equal(htkv_manifest_drop_seg(m, 0, 2), 0);
    htkv_manifest_close(m);
}

/* Goal: create writes MANIFEST-000001 (header + INIT) and a CURRENT naming it, durable and
 * complete. Method: create; inspect the files; load it back. */
static void
test_manifest_create_writes_current_and_manifest(void **state)
{
    struct man_fixture *f = *state;
    struct manifest *m = NULL;
    assert_int_equal(htkv_manifest_create(f->dir_fd, 16, 0x1122334455667788ull, &m), 0);
    assert_int_equal(m->number, 1);
    assert_int_equal(m->shard_count, 16);
    assert_int_equal(m->file_bytes, MAN_HDR_BYTES + EDIT_BYTES);
    htkv_manifest_close(m);

    char cur[64] = { 0 }, path[4200];
    snprintf(path, sizeof(path), "%s/CURRENT", f->dir);
    assert_int_equal(tu_file_size(path), 16);
    assert_int_equal(tu_read_at(path, 0, cur, 16), 0);
    assert_string_equal(cur, M1 "\n");
    assert_int_equal(tu_file_size(f->path), MAN_HDR_BYTES + EDIT_BYTES);
    snprintf(path, sizeof(path), "%s/CURRENT.tmp", f->dir);
    assert_int_equal(tu_file_size(path), -1); /* the temporary is renamed away */

    m = man_load(f, true);
    assert_int_equal(m->shard_count, 16);
    assert_true(m->hash_seed == 0x1122334455667788ull);
    assert_int_equal(m->format, HTKV_FORMAT_VERSION);
    assert_int_equal(m->next_seg_id, 1);
    for (uint32_t s = 0; s < 16; s++) {
        assert_int_equal(m->shards[s].count, 0);
    }
    htkv_manifest_close(m);
}

/* Goal: added and dropped segments are what a reload sees; ids keep increasing.
 * Method: man_build's edits, reload (writable and read-only), check lists and next id; add
 * more after the reload, reload again. */
static void
test_manifest_add_drop_survive_reload(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    assert_int_equal(tu_file_size(f->path), MAN_HDR_BYTES + 6 * EDIT_BYTES);
    for (int ro = 0; ro < 2; ro++) {
        struct manifest *m = man_load(f, ro == 0);
        const uint64_t s0[] = { 1, 3 }, s2[] = { 4 };
        expect_segs(m, 0, s0, 2);
        expect_segs(m, 1, NULL, 0);
        expect_segs(m, 2, s2, 1);
        expect_segs(m, 3, NULL, 0);
        assert_true(m->hash_seed == 0xABCDEF);
        assert_int_equal(m->next_seg_id, 5);
        assert_int_equal(m->file_bytes, MAN_HDR_BYTES + 6 * EDIT_BYTES);
        htkv_manifest_close(m);
    }
    struct manifest *m = man_load(f, true);
    uint64_t id = htkv_manifest_next_seg_id(m);
    assert_int_equal(id, 5);
    assert_int_equal(htkv_manifest_add_seg(m, 3, id), 0);
    assert_int_equal(htkv_manifest_drop_seg(m, 0, 1), 0);
    htkv_manifest_close(m);
    m = man_load(f, true);
    const uint64_t s0[] = { 3 }, s2[] = { 4 }, s3[] = { 5 };
    expect_segs(m, 0, s0, 1);
    expect_segs(m, 2, s2, 1);
    expect_segs(m, 3, s3, 1);
    assert_int_equal(m->next_seg_id, 6);
    htkv_manifest_close(m);
}

/* Goal: a torn last edit (cut anywhere, or any bit of it damaged, or followed by junk with
 * nothing valid after it) is cut off by a writable load and ignored by a read-only one, and
 * edits appended afterwards are read back. Method: for every length of the last edit and
 * every bit of it, rewrite the manifest, load read-only (file untouched), load writable (file
 * cut back), append an edit, reload. */
static void
test_manifest_torn_last_edit_is_cut(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    size_t len;
    unsigned char *orig = slurp(f->path, &len);
    const size_t good = len - EDIT_BYTES; /* end of the edit before the last (DROP 0/2) */
    const uint64_t s0_without_drop[] = { 1, 2, 3 };
    unsigned char *b = malloc(len + 256);
    assert_non_null(b);

    /* Cases: cut at every length in (good, len); every bit of the last edit flipped; the
     * last edit replaced by seeded junk of random length. */
    uint64_t seed = tu_seed("test_manifest_torn_last_edit_is_cut");
    uint64_t rng = seed;
    size_t ncases = (EDIT_BYTES - 1) + EDIT_BYTES * 8 + 32;
    for (size_t c = 0; c < ncases; c++) {
        size_t blen;
        memcpy(b, orig, len);
        if (c < EDIT_BYTES - 1) {
            blen = good + 1 + c;
        } else if (c < EDIT_BYTES - 1 + EDIT_BYTES * 8) {
            size_t bit = c - (EDIT_BYTES - 1);
            b[good + bit / 8] ^= (unsigned char)(1u << (bit % 8));
            blen = len;
        } else {
            /* Junk as long as one edit or more is not one torn append: edits were lost. */
            blen = good + 1 + (size_t)(tu_rand(&rng) % 255);
            for (size_t i = good; i < blen; i++) {
                b[i] = (unsigned char)tu_rand(&rng);
            }
            b[blen - 1] |= 1;
            if (blen - good >= MAN_EDIT_MAX) {
                spit(f->path, b, blen);
                struct manifest *m = NULL;
                assert_int_equal(htkv_manifest_load(f->dir_fd, false, &m), HTKV_ECORRUPT);
                assert_int_equal(htkv_manifest_load(f->dir_fd, true, &m), HTKV_ECORRUPT);
                assert_int_equal(tu_file_size(f->path), (long long)blen);
                continue;
            }
        }
        spit(f->path, b, blen);

        struct manifest *m = man_load(f, false);
        expect_segs(m, 0, s0_without_drop, 3);
        assert_int_equal(m->file_bytes, good);
        htkv_manifest_close(m);
        assert_int_equal(tu_file_size(f->path), (long long)blen); /* read-only wrote nothing */

        m = man_load(f, true);
        expect_segs(m, 0, s0_without_drop, 3);
        assert_int_equal(tu_file_size(f->path), (long long)good);
        assert_int_equal(htkv_manifest_add_seg(m, 1, htkv_manifest_next_seg_id(m)), 0);
        htkv_manifest_close(m);

        m = man_load(f, true);
        expect_segs(m, 0, s0_without_drop, 3);
        const uint64_t s1[] = { 5 };
        expect_segs(m, 1, s1, 1);
        htkv_manifest_close(m);
    }
    free(b);
    free(orig);
}

/* Goal: damage anywhere before the last edit (header, INIT, a middle edit) with valid edits
 * after it is corruption, reported with the manifest's name, and a writable load cuts nothing.
 * Method: flip every bit of the header and of every edit but the last, in turn; load both
 * ways; check the code, the error detail and that the file is unchanged. */
static void
test_manifest_damaged_edit_followed_by_valid_ones_is_corrupt(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    size_t len;
    unsigned char *orig = slurp(f->path, &len);
    unsigned char *b = malloc(len);
    assert_non_null(b);
    const size_t last = len - EDIT_BYTES;
    for (size_t bit = 0; bit < last * 8; bit++) {
        memcpy(b, orig, len);
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        spit(f->path, b, len);
        for (int ro = 0; ro < 2; ro++) {
            struct manifest *m = NULL;
            int rc = htkv_manifest_load(f->dir_fd, ro == 0, &m);
            if (rc != HTKV_ECORRUPT) {
                fprintf(stderr, "bit %zu (byte %zu) flipped: load gave %d (%s)\n", bit, bit / 8, rc,
                        htkv_strerror(rc));
            }
            assert_int_equal(rc, HTKV_ECORRUPT);
            assert_null(m);
            assert_non_null(strstr(htkv_last_error(), M1));
            assert_int_equal(tu_file_size(f->path), (long long)len);
        }
        if (bit / 8 >= MAN_HDR_BYTES + EDIT_BYTES) {
            /* Damage to a segment edit: the detail names the offset of the damaged edit. */
            size_t edit_off = MAN_HDR_BYTES + (bit / 8 - MAN_HDR_BYTES) / EDIT_BYTES * EDIT_BYTES;
            char want[64];
            snprintf(want, sizeof(want), "offset %zu", edit_off);
            if (strstr(htkv_last_error(), want) == NULL) {
                fprintf(stderr, "bit %zu: detail '%s' lacks '%s'\n", bit, htkv_last_error(), want);
            }
            assert_non_null(strstr(htkv_last_error(), want));
        }
        unsigned char *now = slurp(f->path, &len);
        assert_memory_equal(now, b, len);
        free(now);
    }
    free(b);
    free(orig);
}

/* Goal: CURRENT that names a missing manifest, or that is not a manifest name at all, is
 * corruption; no CURRENT means no store. Method: write such CURRENT files and load. */
static void
test_manifest_current_naming_missing_manifest_is_corrupt(void **state)
{
    struct man_fixture *f = *state;
    struct manifest *m = NULL;
    assert_int_equal(htkv_manifest_load(f->dir_fd, true, &m), HTKV_ENOTFOUND);
    assert_null(m);
    man_build(f);
    char cur[4200];
    snprintf(cur, sizeof(cur), "%s/CURRENT", f->dir);

    spit(cur, "MANIFEST-000009\n", 16);
    assert_int_equal(htkv_manifest_load(f->dir_fd, true, &m), HTKV_ECORRUPT);
    assert_null(m);
    assert_non_null(strstr(htkv_last_error(), "MANIFEST-000009"));
    assert_int_equal(htkv_manifest_load(f->dir_fd, false, &m), HTKV_ECORRUPT);

    const char *bad[] = { "",
                          "MANIFEST-000001",
                          "MANIFEST-000000\n",
                          "MANIFEST-00001\n",
                          "manifest-000001\n",
                          "MANIFEST-000001\nX",
                          "MANIFEST-0000a1\n" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        spit(cur, bad[i], strlen(bad[i]));
        int rc = htkv_manifest_load(f->dir_fd, true, &m);
        if (rc != HTKV_ECORRUPT) {
            fprintf(stderr, "CURRENT '%s': load gave %d\n", bad[i], rc);
        }
        assert_int_equal(rc, HTKV_ECORRUPT);
        assert_null(m);
    }
    spit(cur, M1 "\n", 16);
    m = man_load(f, true);
    htkv_manifest_close(m);
}

/* Goal: a manifest written by a newer format version is refused with HTKV_EVERSION, whether
 * the header or the INIT edit says so. Method: raise the version field and fix up the CRC. */
static void
test_manifest_newer_format_is_refused(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    size_t len;
    unsigned char *orig = slurp(f->path, &len);
    unsigned char *b = malloc(len);
    assert_non_null(b);
    uint32_t newer = HTKV_FORMAT_VERSION + 1;

    memcpy(b, orig, len);
    memcpy(b + 8, &newer, 4);
    uint32_t c = htkv_crc32c(0, b, 28);
    memcpy(b + 28, &c, 4);
    spit(f->path, b, len);
    struct manifest *m = NULL;
    assert_int_equal(htkv_manifest_load(f->dir_fd, true, &m), HTKV_EVERSION);
    assert_null(m);

    memcpy(b, orig, len);
    unsigned char *init = b + MAN_HDR_BYTES;
    memcpy(init + MAN_EDIT_HDR, &newer, 4);
    c = htkv_crc32c(0, init + 4, 8 + 16);
    memcpy(init, &c, 4);
    spit(f->path, b, len);
    assert_int_equal(htkv_manifest_load(f->dir_fd, true, &m), HTKV_EVERSION);
    assert_null(m);
    assert_int_equal(htkv_manifest_load(f->dir_fd, false, &m), HTKV_EVERSION);
    free(b);
    free(orig);
}

/* Goal: rewriting produces MANIFEST-000002 with the same state, switches CURRENT to it and
 * removes the old one. Method: build, rewrite, inspect files, reload. */
static void
test_manifest_rewrite_keeps_state_and_switches_current(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    struct manifest *m = man_load(f, true);
    assert_int_equal(htkv_manifest_rewrite(m), 0);
    assert_int_equal(m->number, 2);
    assert_int_equal(htkv_manifest_add_seg(m, 1, htkv_manifest_next_seg_id(m)), 0);
    htkv_manifest_close(m);
    assert_int_equal(tu_file_size(f->path), -1);
    char cur[64] = { 0 }, path[4200];
    snprintf(path, sizeof(path), "%s/CURRENT", f->dir);
    assert_int_equal(tu_read_at(path, 0, cur, 16), 0);
    assert_string_equal(cur, "MANIFEST-000002\n");
    m = man_load(f, true);
    assert_int_equal(m->number, 2);
    const uint64_t s0[] = { 1, 3 }, s1[] = { 5 }, s2[] = { 4 };
    expect_segs(m, 0, s0, 2);
    expect_segs(m, 1, s1, 1);
    expect_segs(m, 2, s2, 1);
    assert_true(m->hash_seed == 0xABCDEF);
    htkv_manifest_close(m);
}

/* Goal: a segment id, once added, is never handed out again (manifest.c invariant 2), also
 * when the segment that had it was dropped and the manifest was rewritten since. Method: add
 * 1..4, drop 4 (the highest), reload: next id > 4; rewrite, reload: next id still > 4. */
static void
test_manifest_segment_ids_never_reused(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    struct manifest *m = man_load(f, true);
    assert_int_equal(htkv_manifest_drop_seg(m, 2, 4), 0);
    htkv_manifest_close(m);
    m = man_load(f, true);
    assert_true(m->next_seg_id > 4);
    assert_int_equal(htkv_manifest_rewrite(m), 0);
    htkv_manifest_close(m);
    m = man_load(f, true);
    uint64_t id = htkv_manifest_next_seg_id(m);
    if (id <= 4) {
        fprintf(stderr, "segment id %llu handed out again after a manifest rewrite\n",
                (unsigned long long)id);
    }
    assert_true(id > 4);
    htkv_manifest_close(m);
}

/* Goal: ids that leave no successor are refused at load (a segment id of 2^64 - 1, or a
 * NEXT_ID past the 12-digit file names), instead of wrapping next_seg_id to 0 and making the
 * store unopenable after its next segment. Method: write such edits through the writer. */
static void
test_manifest_ids_without_successor_are_corrupt(void **state)
{
    struct man_fixture *f = *state;
    struct manifest *m = NULL;
    assert_int_equal(htkv_manifest_create(f->dir_fd, 1, 7, &m), 0);
    assert_int_equal(htkv_manifest_add_seg(m, 0, UINT64_MAX), 0);
    htkv_manifest_close(m);
    m = NULL;
    assert_int_equal(htkv_manifest_load(f->dir_fd, false, &m), HTKV_ECORRUPT);
    assert_null(m);

    assert_int_equal(htkv_manifest_create(f->dir_fd, 1, 7, &m), 0);
    assert_int_equal(htkv_manifest_add_seg(m, 0, MAN_SEG_ID_MAX), 0); /* the largest is fine */
    htkv_manifest_close(m);
    m = man_load(f, true);
    m->next_seg_id = UINT64_MAX; /* as a damaged NEXT_ID would leave it */
    assert_int_equal(htkv_manifest_rewrite(m), 0);
    htkv_manifest_close(m);
    m = NULL;
    assert_int_equal(htkv_manifest_load(f->dir_fd, false, &m), HTKV_ECORRUPT);
    assert_null(m);
}

/* Goal: batches recorded as not applied (MAN_BATCH_ABORT) stay recorded across reloads and
 * rewrites while a listed segment predates the record, and a rewrite forgets them once every
 * such segment is gone. Method: build (segments 1, 3, 4; next id 5); record 9, 7, 9 (a repeat);
 * reload; rewrite, reload; drop 1, 3, 4 and add 5; rewrite, reload. */
static void
test_manifest_batch_aborts_survive_until_their_segments_go(void **state)
{
    struct man_fixture *f = *state;
    man_build(f);
    struct manifest *m = man_load(f, true);
    const uint64_t v[] = { 9, 7, 9 };
    uint64_t bytes = m->file_bytes;
    assert_int_equal(htkv_manifest_abort_batches(m, v, 3), 0);
    assert_int_equal(m->file_bytes, bytes + 2 * EDIT_BYTES); /* the repeat is written once */
    assert_int_equal(htkv_manifest_abort_batches(m, v, 1), 0);
    assert_int_equal(m->file_bytes, bytes + 2 * EDIT_BYTES); /* already recorded: nothing */
    htkv_manifest_close(m);
    for (int round = 0; round < 2; round++) {
        m = man_load(f, true);
        assert_int_equal(m->naborts, 2);
        assert_true(htkv_manifest_batch_aborted(m, 7));
        assert_true(htkv_manifest_batch_aborted(m, 9));
        assert_false(htkv_manifest_batch_aborted(m, 8));
        assert_false(htkv_manifest_batch_aborted(m, 10));
        if (round == 0) {
            assert_int_equal(htkv_manifest_rewrite(m), 0);
        }
        htkv_manifest_close(m);
    }
    m = man_load(f, true);
    assert_int_equal(htkv_manifest_drop_seg(m, 0, 1), 0);
    assert_int_equal(htkv_manifest_drop_seg(m, 0, 3), 0);
    assert_int_equal(htkv_manifest_drop_seg(m, 2, 4), 0);
    assert_int_equal(htkv_manifest_add_seg(m, 1, htkv_manifest_next_seg_id(m)), 0);
    assert_int_equal(htkv_manifest_rewrite(m), 0);
    assert_int_equal(m->naborts, 0);
    htkv_manifest_close(m);
    m = man_load(f, true);
    assert_int_equal(m->naborts, 0);
    assert_false(htkv_manifest_batch_aborted(m, 7));
    htkv_manifest_close(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_manifest_ids_without_successor_are_corrupt, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_create_writes_current_and_manifest, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_add_drop_survive_reload, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_torn_last_edit_is_cut, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(
            test_manifest_damaged_edit_followed_by_valid_ones_is_corrupt, man_setup, man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_current_naming_missing_manifest_is_corrupt,
                                        man_setup, man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_newer_format_is_refused, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_rewrite_keeps_state_and_switches_current,
                                        man_setup, man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_segment_ids_never_reused, man_setup,
                                        man_teardown),
        cmocka_unit_test_setup_teardown(test_manifest_batch_aborts_survive_until_their_segments_go,
                                        man_setup, man_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
