/*
 * testutil.h - helpers shared by the tests: temporary stores, seeded randomness, file surgery.
 */
#ifndef HTKV_TESTS_TESTUTIL_H
#define HTKV_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <htkv/htkv.h>

/* Make a fresh empty directory under $HTKV_TEST_TMP (or /tmp); returns a static-lifetime path. */
char *tu_tmpdir(const char *tag);
/* Remove a directory tree. */
void tu_rmrf(const char *path);

/* Seed from $HTKV_SEED, or from the clock; printed so that a failure can be replayed. */
uint64_t tu_seed(const char *test);
/* xorshift64* generator. */
uint64_t tu_rand(uint64_t *state);

/* Config for a test store in @p dir: inline, 4 shards, the given sync mode, quiet logs. */
void tu_config(htkv_config *cfg, const char *dir, int sync_mode);
/* Open or fail the test. */
htkv_db *tu_open(const htkv_config *cfg);

/* Paths of every segment file of the store, sorted; returns the count (max @p cap). */
size_t tu_segments(const char *dir, char (*paths)[4096], size_t cap);
/* Size of a file, or -1. */
long long tu_file_size(const char *path);
/* Read/write the whole file or a range. */
int tu_truncate(const char *path, long long size);
int tu_flip_bit(const char *path, long long off, int bit);
int tu_read_at(const char *path, long long off, void *buf, size_t n);
int tu_write_at(const char *path, long long off, const void *buf, size_t n);
/* Copy a directory tree (flat two levels: dir and shard-* dirs). */
void tu_copy_store(const char *from, const char *to);

/* Counting log sink: counts warnings and errors instead of printing them. */
extern int tu_log_warnings;
void tu_quiet_log(int level, const char *msg, void *ctx);

#endif
