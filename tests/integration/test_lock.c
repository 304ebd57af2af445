/*
 * test_lock.c - who may open a store: one writer (this process or another gets HTKV_ELOCKED),
 * read-only openers, and directories that are not (or not yet, or too new) an htkv store.
 */
#include "tests/support/testutil.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/crc32c.h"

static htkv_db *
make_store(const char *dir, htkv_config *cfg)
{
    tu_config(cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(cfg);
    assert_int_equal(htkv_put(db, "key", 3, "value", 5), 0);
    return db;
}

/* Run htkv_open(@p cfg) in a forked child; returns its code (the child's exit status carries
 * 0 for success or the negated code). */
static int
open_in_child(const htkv_config *cfg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_assert_hook_reset();
        htkv_db *db = NULL;
        int rc = htkv_open(cfg, &db);
        if (rc == 0) {
            (void)htkv_close(db);
        }
        _exit(rc == 0 ? 0 : rc == HTKV_ELOCKED ? 1 : 2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    switch (WEXITSTATUS(status)) {
    case 0:
        return 0;
    case 1:
        return HTKV_ELOCKED;
    default:
        return -1;
    }
}

/* Goal: while a store is open for writing, a second htkv_open of the same directory in the
 * same process (by the same or another path spelling) gets HTKV_ELOCKED and disturbs nothing;
 * after close it opens. Method: open, open again, use the first handle, close, reopen. */
static void
test_lock_second_open_same_process_is_locked(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("lock-same");
    htkv_config cfg;
    htkv_db *db = make_store(dir, &cfg);
    htkv_db *second = (htkv_db *)&cfg; /* must be reset to NULL */
    assert_int_equal(htkv_open(&cfg, &second), HTKV_ELOCKED);
    assert_null(second);
    assert_true(strlen(htkv_last_error()) > 0);
    char other[8192];
    snprintf(other, sizeof(other), "%s/./shard-000/..", dir);
    htkv_config cfg2 = cfg;
    cfg2.data_dir = other;
    assert_int_equal(htkv_open(&cfg2, &second), HTKV_ELOCKED);
    htkv_config ro = cfg;
    ro.read_only = 1;
    assert_int_equal(htkv_open(&ro, &second), HTKV_ELOCKED); /* no reader beside a writer */
    /* The first handle is unaffected. */
    assert_int_equal(htkv_put(db, "more", 4, "m", 1), 0);
    tu_expect(db, "key", 3, "value", 5);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "more", 4, "m", 1);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: another process cannot open a store this process has open (HTKV_ELOCKED), not even
 * read-only, and can once it is closed. Method: fork children that try. */
static void
test_lock_forked_child_is_locked(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("lock-fork");
    htkv_config cfg;
    htkv_db *db = make_store(dir, &cfg);
    assert_int_equal(open_in_child(&cfg), HTKV_ELOCKED);
    htkv_config ro = cfg;
    ro.read_only = 1;
    assert_int_equal(open_in_child(&ro), HTKV_ELOCKED);
    assert_int_equal(htkv_close(db), 0);
    assert_int_equal(open_in_child(&cfg), 0);
    assert_int_equal(open_in_child(&ro), 0);
    /* A read-only opener keeps writers out but lets other readers in. */
    db = tu_open(&ro);
    assert_int_equal(open_in_child(&cfg), HTKV_ELOCKED);
    assert_int_equal(open_in_child(&ro), 0);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a read-only open serves reads, refuses every write with HTKV_EREADONLY and writes
 * nothing to the directory, also when recovery finds a torn tail (which it must then either
 * leave alone or refuse with HTKV_EREADONLY); a read-only open of a missing store is
 * HTKV_ENOTFOUND and creates nothing. Method: every file and its bytes before and after. */
static void
test_lock_read_only_open(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("lock-ro");
    htkv_config cfg;
    htkv_db *db = make_store(dir, &cfg);
    char key[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(htkv_put(db, key, strlen(key), key, strlen(key)), 0);
    }
    /* Left as a crash leaves it, so that the cut below is a torn tail (a cut before the end a
     * clean close records is damage, which a read-only open refuses too). */
    tu_close_as_crash(db);
    htkv_config ro = cfg;
    ro.read_only = 1;
    struct tu_tree before = tu_tree_take_all(dir);
    db = tu_open(&ro);
    tu_expect(db, "key", 3, "value", 5);
    tu_expect(db, "k49", 3, "k49", 3);
    assert_int_equal(htkv_put(db, "x", 1, "y", 1), HTKV_EREADONLY);
    assert_int_equal(htkv_delete(db, "key", 3), HTKV_EREADONLY);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    assert_int_equal(htkv_batch_put(b, "x", 1, "y", 1), 0);
    assert_int_equal(htkv_write(db, b), HTKV_EREADONLY);
    htkv_batch_destroy(b);
    assert_int_equal(htkv_flush(db), 0);
    tu_expect(db, "x", 1, NULL, 0);
    tu_expect(db, "key", 3, "value", 5);
    assert_int_equal(tu_stats(db).live_keys, 51);
    assert_int_equal(htkv_close(db), 0);
    tu_tree_expect_unchanged(&before, dir, "a read-only open and its refused writes");
    tu_tree_free(&before);

    /* A torn tail: cut the last record of a segment in half. */
    char(*segs)[4096] = malloc(64 * 4096);
    assert_non_null(segs);
    size_t ns = tu_segments(dir, segs, 64);
    assert_true(ns >= 1);
    struct tu_rec recs[128];
    size_t nr = tu_seg_scan(segs[0], recs, 128);
    assert_true(nr >= 1);
    assert_int_equal(tu_truncate(segs[0], recs[nr - 1].off + recs[nr - 1].raw / 2), 0);
    before = tu_tree_take_all(dir);
    htkv_db *rdb = NULL;
    int rc = htkv_open(&ro, &rdb);
    assert_true(rc == 0 || rc == HTKV_EREADONLY);
    if (rc == 0) {
        char k[64];
        memcpy(k, recs[nr - 1].key, recs[nr - 1].key_len);
        tu_expect(rdb, k, recs[nr - 1].key_len, NULL, 0);
        tu_expect(rdb, "key", 3, "value", 5);
        assert_int_equal(htkv_close(rdb), 0);
    }
    tu_tree_expect_unchanged(&before, dir, "a read-only open of a torn tail");
    tu_tree_free(&before);
    free(segs);
    db = tu_open(&cfg); /* a writer repairs it */
    assert_int_equal(htkv_close(db), 0);

    /* No store there: ENOTFOUND, nothing created. */
    char missing[8192];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    ro.data_dir = missing;
    assert_int_equal(htkv_open(&ro, &rdb), HTKV_ENOTFOUND);
    assert_int_equal(tu_file_size(missing), -1);
    htkv_config nc = cfg;
    nc.data_dir = missing;
    nc.create_if_missing = 0;
    assert_int_equal(htkv_open(&nc, &rdb), HTKV_ENOTFOUND);
    assert_int_equal(tu_file_size(missing), -1);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a directory holding files that are not an htkv store is refused with HTKV_ENOTSTORE
 * and its files are left as they were; so is a directory that holds a store's shard
 * directories and other files; an empty directory becomes a store. Method: foreign files in
 * fresh directories; open; compare contents. */
static void
test_lock_foreign_directory_is_not_a_store(void **state)
{
    (void)state;
    const char *names[] = { "notes.txt", "CURRENTX", "data.db", "MANIFEST-1", "shard-1" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char *dir = tu_tmpdir("lock-foreign");
        char path[8192];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "precious", 8), 8);
        close(fd);
        htkv_config cfg;
        tu_config(&cfg, dir, HTKV_SYNC_NEVER);
        htkv_db *db = NULL;
        int rc = htkv_open(&cfg, &db);
        if (rc != HTKV_ENOTSTORE) {
            fprintf(stderr, "foreign file '%s': open gave %s\n", names[i], htkv_strerror(rc));
        }
        assert_int_equal(rc, HTKV_ENOTSTORE);
        assert_null(db);
        assert_non_null(strstr(htkv_last_error(), names[i]));
        char got[16] = { 0 };
        assert_int_equal(tu_read_at(path, 0, got, 8), 0);
        assert_string_equal(got, "precious");
        snprintf(path, sizeof(path), "%s/CURRENT", dir);
        assert_int_equal(tu_file_size(path), -1); /* no store was created around it */
        snprintf(path, sizeof(path), "%s/shard-000", dir);
        assert_int_equal(tu_file_size(path), -1);
        tu_rmrf(dir);
        free(dir);
    }
    char *dir = tu_tmpdir("lock-empty");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Rewrite a 4-byte format field at @p off of @p path and fix the CRC over [crc_from, crc_to)
 * stored at @p crc_at. */
static void
bump_format(const char *path, long long off, long long crc_from, long long crc_to, long long crc_at)
{
    unsigned char buf[256];
    assert_true(crc_to - crc_from <= (long long)sizeof(buf));
    uint32_t v = HTKV_FORMAT_VERSION + 1;
    assert_int_equal(tu_write_at(path, off, &v, 4), 0);
    assert_int_equal(tu_read_at(path, crc_from, buf, (size_t)(crc_to - crc_from)), 0);
    uint32_t c = htkv_crc32c(0, buf, (size_t)(crc_to - crc_from));
    assert_int_equal(tu_write_at(path, crc_at, &c, 4), 0);
}

/* Goal: a store written by a newer on-disk format (manifest header, manifest INIT edit, or a
 * segment header says so) is refused with HTKV_EVERSION, not misread and not "repaired".
 * Method: raise each format field in a copy (fixing its CRC); open; check nothing changed. */
static void
test_lock_newer_format_version_is_refused(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("lock-version");
    htkv_config cfg;
    htkv_db *db = make_store(dir, &cfg);
    assert_int_equal(htkv_close(db), 0);
    char(*segs)[4096] = malloc(64 * 4096);
    assert_non_null(segs);
    size_t ns = tu_segments(dir, segs, 64);
    assert_true(ns >= 1);
    for (int where = 0; where < 3; where++) {
        char *work = tu_tmpdir("lock-version-work");
        tu_copy_store(dir, work);
        char path[8192];
        if (where == 0) { /* manifest header: format at 8, crc of [0, 28) at 28 */
            snprintf(path, sizeof(path), "%s/MANIFEST-000001", work);
            bump_format(path, 8, 0, 28, 28);
        } else if (where == 1) { /* INIT edit at 32: crc, len, type, {format, ...} */
            snprintf(path, sizeof(path), "%s/MANIFEST-000001", work);
            bump_format(path, 32 + 12, 36, 32 + 12 + 16, 32);
        } else { /* segment header: format at 8, crc of [0, 60) at 60 */
            snprintf(path, sizeof(path), "%s%s", work, segs[0] + strlen(dir));
            bump_format(path, 8, 0, 60, 60);
        }
        struct tu_tree before = tu_tree_take_all(work);
        htkv_config wc = cfg;
        wc.data_dir = work;
        htkv_db *w = NULL;
        int rc = htkv_open(&wc, &w);
        if (rc != HTKV_EVERSION) {
            fprintf(stderr, "newer format in place %d: open gave %s (%s)\n", where,
                    htkv_strerror(rc), htkv_last_error());
        }
        assert_int_equal(rc, HTKV_EVERSION);
        assert_null(w);
        wc.read_only = 1;
        assert_int_equal(htkv_open(&wc, &w), HTKV_EVERSION);
        char what[64];
        snprintf(what, sizeof(what), "a refused open of newer format %d", where);
        tu_tree_expect_unchanged(&before, work, what);
        tu_tree_free(&before);
        tu_rmrf(work);
        free(work);
    }
    free(segs);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_second_open_same_process_is_locked),
        cmocka_unit_test(test_lock_forked_child_is_locked),
        cmocka_unit_test(test_lock_read_only_open),
        cmocka_unit_test(test_lock_foreign_directory_is_not_a_store),
        cmocka_unit_test(test_lock_newer_format_version_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
