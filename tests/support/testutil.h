/*
 * testutil.h - helpers shared by the tests: temporary stores, seeded randomness, file surgery,
 * snapshots of directory trees.
 */
#ifndef HTKV_TESTS_TESTUTIL_H
#define HTKV_TESTS_TESTUTIL_H

#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <htkv/htkv.h>

/* Make a fresh empty directory under $HTKV_TEST_TMP_FAST when that directory has 4 GiB free
 * (the test presets that need no real disk name a tmpfs), else under $HTKV_TEST_TMP (the build
 * tree's test-tmp/), else /tmp; returns its path, malloc'd (the caller frees it). */
char *tu_tmpdir(const char *tag);
/* tu_tmpdir() never under $HTKV_TEST_TMP_FAST: for a test whose claim needs an fdatasync that
 * takes time (on tmpfs it returns at once, and a group commit may find no one to group). */
char *tu_tmpdir_disk(const char *tag);
/* Remove a directory tree. */
void tu_rmrf(const char *path);

/* Seed from $HTKV_SEED, or from the clock; printed so that a failure can be replayed. */
uint64_t tu_seed(const char *test);
/* xorshift64* generator. */
uint64_t tu_rand(uint64_t *state);

/*
 * What the running test is doing (set with tu_context()), printed when an engine assertion
 * fires. tu_config() installs a hook that turns an engine assertion into a failure of the
 * running cmocka test instead of an abort of the whole executable, so that the other tests
 * still run (the store it happened in is leaked). Forked children should call
 * tu_assert_hook_reset() so that a failure aborts them.
 */
void tu_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tu_assert_hook_install(void);
void tu_assert_hook_reset(void);

/* Config for a test store in @p dir: inline, 4 shards, the given sync mode, quiet logs. */
void tu_config(htkv_config *cfg, const char *dir, int sync_mode);
/* Open or fail the test. */
htkv_db *tu_open(const htkv_config *cfg);
/* Close @p db as a process killed at that moment leaves the store (no final sync, hints or
 * clean-close record): what a test that tears the last record must start from, since a record
 * damaged before the end a clean close recorded is corruption, not a torn tail. */
void tu_close_as_crash(htkv_db *db);

/* Paths of every segment file of the store, sorted; returns the count (max @p cap). */
size_t tu_segments(const char *dir, char (*paths)[4096], size_t cap);

/* Files of the store's shard directories whose names end in @p ext ("" = all but dot files):
 * returns how many there are; the first @p cap of them go to @p paths (may be NULL with @p cap
 * 0), sorted. */
size_t tu_shard_files(const char *dir, const char *ext, char (*paths)[4096], size_t cap);
/* Whether @p dir/@p rel exists (lstat: a link counts, even a dangling one). */
bool tu_exists(const char *dir, const char *rel);
/* Size of a file, or -1. */
long long tu_file_size(const char *path);
/* Read/write the whole file or a range. */
int tu_truncate(const char *path, long long size);
int tu_flip_bit(const char *path, long long off, int bit);
int tu_read_at(const char *path, long long off, void *buf, size_t n);
int tu_write_at(const char *path, long long off, const void *buf, size_t n);
/* Copy a directory tree (flat two levels: dir and shard-* dirs). */
void tu_copy_store(const char *from, const char *to);

/* Paths of the segment files of shard @p shard, ascending id; returns the count (max @p cap). */
size_t tu_shard_segments(const char *dir, unsigned shard, char (*paths)[4096], size_t cap);
/* Id of a segment from its header (0 when the file cannot be read). */
uint64_t tu_seg_id(const char *path);

/* One valid record found in a segment file by tu_seg_scan(). */
struct tu_rec {
    long long off;         /* offset in the file */
    long long raw;         /* header + key + value */
    long long size;        /* raw rounded up to the record alignment */
    int type;              /* enum rec_type (engine/rec.h) */
    int flags;             /* REC_F_BATCH or 0 */
    uint64_t version;      /* as written */
    uint32_t key_len;      /* key bytes */
    uint32_t val_len;      /* value bytes (payload of control records) */
    unsigned char key[64]; /* first bytes of the key */
};
/*
 * Walk the records of segment @p path from the first one, checking each (framing + CRC) as
 * recovery does, and stop at the first that fails. Fills at most @p cap entries of @p recs
 * (NULL = count only); returns the number of valid records.
 */
size_t tu_seg_scan(const char *path, struct tu_rec *recs, size_t cap);

/* Deterministic filler bytes: value @p n bytes long derived from @p tag. */
void tu_fill(void *buf, size_t n, uint64_t tag);
/* Stats or fail the test. */
struct htkv_stats tu_stats(htkv_db *db);
/* Confine the calling thread (and the threads it makes afterwards) to the first CPU of its
 * affinity mask, as taskset does; the mask before goes to *@p saved (restore it with
 * sched_setaffinity(0, sizeof(*saved), saved)). Fails the test when it cannot. */
void tu_pin_one_cpu(cpu_set_t *saved);
/* Assert that @p key holds exactly @p val (vlen bytes); @p val NULL = the key is absent. */
void tu_expect(htkv_db *db, const void *key, size_t klen, const void *val, size_t vlen);

/* The whole of regular file @p path in a malloc'd buffer (one spare byte at the end; the caller
 * frees it), its length in *len; NULL (*len 0) when it cannot be opened or is not a regular file
 * (a FIFO is neither opened for long nor read). */
unsigned char *tu_read_whole(const char *path, size_t *len);

/* One entry of a directory tree taken by tu_tree_take(). */
struct tu_tree_ent {
    char rel[512];       /* path below the root, '/'-separated */
    unsigned type;       /* st_mode & S_IFMT (lstat: a link is a link); 0 when lstat failed */
    unsigned char *data; /* the bytes of a regular file, NULL for anything else */
    size_t len;          /* bytes in data */
};

/* Every entry below a root with the bytes of its regular files, sorted by rel. */
struct tu_tree {
    struct tu_tree_ent *ents;
    size_t n, cap;
    bool with_lock; /* taken by tu_tree_take_all() */
};

/*
 * Take every file and directory below @p root (recursively, links not followed) with the bytes
 * of each regular file, for "nothing was changed" checks. tu_tree_take() leaves out the LOCK at
 * the top (an opener creates it and a refused open may leave it); tu_tree_take_all() keeps it.
 * A root that cannot be read gives an empty tree. The caller owns the result and frees it with
 * tu_tree_free(). Test thread only: they fail the running test when memory runs out.
 */
struct tu_tree tu_tree_take(const char *root);
struct tu_tree tu_tree_take_all(const char *root);
void tu_tree_free(struct tu_tree *t);
/* Compare @p a (before) with @p b (after): false when they are equal; otherwise true, with the
 * first difference in @p why (@p cap bytes): "REL was removed", "REL was added", "REL changed
 * type", "REL changed size A -> B" or "REL changed at byte K". */
bool tu_tree_diff(const struct tu_tree *a, const struct tu_tree *b, char *why, size_t cap);
/* Take @p root again as @p before was taken and fail the running test unless the two are equal,
 * printing "@p what: <first difference>". @p before stays the caller's. Test thread only. */
void tu_tree_expect_unchanged(const struct tu_tree *before, const char *root, const char *what);

/* Counting log sink: counts warnings and errors instead of printing them. */
extern _Atomic int tu_log_warnings; /* log_fn may be called from any thread */
void tu_quiet_log(int level, const char *msg, void *ctx);

#endif
