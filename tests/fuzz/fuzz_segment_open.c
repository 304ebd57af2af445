/*
 * fuzz_segment_open.c - libFuzzer target for recovery and reads through the public API: the
 * input becomes the one segment file of a small store, which is opened, read back key by key and
 * closed.
 *
 * Input: byte 0 is a mode, the rest the segment bytes.
 *   mode bit 0  WHOLE   the bytes are the whole file, header included; else they follow a valid
 *                       64-byte segment header
 *   mode bit 1  RDONLY  open read-only (a torn tail is left in place)
 *   mode bit 2  SKIP    HTKV_RECOVERY_SKIP_CORRUPT instead of STRICT
 *   mode bit 3  SMALL   max_value_bytes = 64, so that longer values count as damage
 *   mode bit 4  ALWAYS  HTKV_SYNC_ALWAYS (segments grow with written zeros) instead of NEVER
 *   mode bit 5  WRITE   unless RDONLY: after the reads, put one key, close, reopen, read again
 *   mode bit 6  TIGHT   max_segment_bytes = 64 KiB (the least allowed) instead of 1 MiB, so that
 *                       an input of 64 KiB or more (-max_len) is a segment as large as its
 *                       capacity: the mapping then ends at the end of the file
 *
 * Design. A whole store directory is too much for the fuzzer to build, so the store around the
 * segment is real: LLVMFuzzerInitialize() creates one with htkv_open() (one shard), puts a key
 * (so that its segment file exists), closes it and keeps its CURRENT, its manifest, the name
 * and header of its segment, and its (empty) LOCK file. Every run writes these into a fresh scratch
 * directory with the input as the segment's contents, then: htkv_open(); an iteration over every
 * key (htkv_get_prefix() with the empty prefix), each key strictly above the one before, and
 * htkv_get_alloc() of each key giving the value the iterator gave; the count against htkv_stats();
 * htkv_close(). With WRITE, the recovered segment must take a new write (recovery left a usable
 * tail) that a reopen finds, next to every key found before.
 *
 * The template store is made deterministic: its hash seed, random at creation, is replaced in
 * the manifest by a fixed one (and the edit's CRC recomputed), so that a crashing input replays
 * the same way in every process. With one shard the seed decides nothing but hash placement.
 *
 * Invariants (checked for every input)
 *   1. htkv_open() never crashes, sets the handle exactly on 0, and returns 0, HTKV_ECORRUPT or
 *      HTKV_EVERSION: the answers to a damaged segment. Any other negative code (an -errno of
 *      the scratch file system included) is reported too, as worth a look.
 *   2. Once open, iteration and point reads agree with each other and with htkv_stats().
 *   3. A write acknowledged on a recovered store survives close and reopen.
 *   4. No descriptor and no memory (LeakSanitizer) outlives the run.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "tests/fuzz/fuzz_util.h"

#define MODE_WHOLE 0x01u
#define MODE_RDONLY 0x02u
#define MODE_SKIP 0x04u
#define MODE_SMALL 0x08u
#define MODE_ALWAYS 0x10u
#define MODE_WRITE 0x20u
#define MODE_TIGHT 0x40u

#define TEMPLATE_SEED 0x9e3779b97f4a7c15ull
#define SHARD_DIR "shard-000"
#define WRITE_KEY "fuzz-segment-open"
#define WRITE_VAL "acknowledged"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The store every run starts from (see the file comment). */
static struct {
    unsigned char *current;
    size_t current_len;
    char manifest_name[32];
    unsigned char *manifest;
    size_t manifest_len;
    char seg_name[64];
    unsigned char seg_header[SEG_HDR_BYTES];
} tpl;

static void
quiet_log(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)msg;
    (void)ctx;
}

/* Replace the hash seed of the INIT edit (the first edit) and fix that edit's CRC. */
static void
template_fix_seed(unsigned char *m, size_t len)
{
    size_t e = MAN_HDR_BYTES;
    FUZZ_CHECK(len >= e + MAN_EDIT_HDR + 16);
    FUZZ_CHECK(htkv_load32(m + e + 4) == 16);
    FUZZ_CHECK(htkv_load32(m + e + 8) == MAN_INIT);
    htkv_store64(m + e + MAN_EDIT_HDR + 8, TEMPLATE_SEED);
    htkv_store32(m + e, htkv_crc32c(0, m + e + 4, 8 + 16));
}

/* Name of the only segment file (*.seg) in the template's shard directory. */
static void
template_find_segment(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/" SHARD_DIR, dir);
    DIR *d = opendir(path);
    FUZZ_CHECK(d != NULL);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] != '.' && len > 4 && strcmp(de->d_name + len - 4, ".seg") == 0) {
            FUZZ_CHECK(strlen(de->d_name) < sizeof(tpl.seg_name));
            snprintf(tpl.seg_name, sizeof(tpl.seg_name), "%s", de->d_name);
            n++;
        }
    }
    closedir(d);
    FUZZ_CHECK(n == 1);
}

static void
template_read(const char *dir)
{
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    FUZZ_CHECK(fuzz_read_file(dir_fd, "CURRENT", &tpl.current, &tpl.current_len) == 0);
    FUZZ_CHECK(tpl.current_len > 1);
    FUZZ_CHECK(tpl.current_len < sizeof(tpl.manifest_name));
    FUZZ_CHECK(tpl.current[tpl.current_len - 1] == '\n');
    memcpy(tpl.manifest_name, tpl.current, tpl.current_len - 1);
    FUZZ_CHECK(fuzz_read_file(dir_fd, tpl.manifest_name, &tpl.manifest, &tpl.manifest_len) == 0);
    template_fix_seed(tpl.manifest, tpl.manifest_len);
    template_find_segment(dir);
    char seg[128];
    snprintf(seg, sizeof(seg), SHARD_DIR "/%s", tpl.seg_name);
    unsigned char *s;
    size_t s_len;
    FUZZ_CHECK(fuzz_read_file(dir_fd, seg, &s, &s_len) == 0);
    FUZZ_CHECK(s_len >= SEG_HDR_BYTES);
    memcpy(tpl.seg_header, s, SEG_HDR_BYTES);
    free(s);
    close(dir_fd);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "segment-template") == 0);
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.shard_count = 1;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.hint_files = 0; /* the template is one segment file, nothing beside it */
    cfg.log_fn = quiet_log;
    htkv_db *db;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    FUZZ_CHECK(htkv_put(db, "k", 1, "v", 1) == 0);
    FUZZ_CHECK(htkv_close(db) == 0);
    template_read(dir);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
    return 0;
}

/* Write the template store with @p seg (@p len bytes) as its segment's contents. */
static void
store_write(const char *dir, bool whole, const uint8_t *seg, size_t len)
{
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, tpl.manifest_name, tpl.manifest, tpl.manifest_len) == 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, "CURRENT", tpl.current, tpl.current_len) == 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, "LOCK", "", 0) == 0); /* a read-only open needs it */
    FUZZ_CHECK(mkdirat(dir_fd, SHARD_DIR, 0755) == 0);
    int shard_fd = openat(dir_fd, SHARD_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(shard_fd >= 0);
    if (whole) {
        FUZZ_CHECK(fuzz_write_file(shard_fd, tpl.seg_name, seg, len) == 0);
    } else {
        unsigned char *buf = malloc(SEG_HDR_BYTES + len);
        FUZZ_CHECK(buf != NULL);
        memcpy(buf, tpl.seg_header, SEG_HDR_BYTES);
        if (len > 0) {
            memcpy(buf + SEG_HDR_BYTES, seg, len);
        }
        FUZZ_CHECK(fuzz_write_file(shard_fd, tpl.seg_name, buf, SEG_HDR_BYTES + len) == 0);
        free(buf);
    }
    close(shard_fd);
    close(dir_fd);
}

/*
 * Iterate over every key: each strictly above the one before, each readable with htkv_get_alloc()
 * with the iterator's value. Returns the number of keys; the iteration must end cleanly.
 */
static uint64_t
read_all(htkv_db *db)
{
    static unsigned char prev[HTKV_KEY_MAX];
    size_t prev_len = 0;
    uint64_t count = 0;
    htkv_iter *it;
    FUZZ_CHECK(htkv_get_prefix(db, NULL, 0, &it) == 0);
    for (;;) {
        const void *key, *val;
        size_t klen, vlen;
        int rc = htkv_iter_next(it, &key, &klen, &val, &vlen);
        FUZZ_CHECK(rc == 0 || rc == 1);
        if (rc == 0) {
            break;
        }
        FUZZ_CHECK(klen >= 1);
        FUZZ_CHECK(klen <= HTKV_KEY_MAX);
        if (count > 0) {
            size_t common = prev_len < klen ? prev_len : klen;
            int c = memcmp(prev, key, common);
            FUZZ_CHECK(c < 0 || (c == 0 && prev_len < klen));
        }
        memcpy(prev, key, klen);
        prev_len = klen;
        void *got;
        size_t got_len;
        FUZZ_CHECK(htkv_get_alloc(db, key, klen, &got, &got_len) == 0);
        FUZZ_CHECK(got_len == vlen);
        FUZZ_CHECK(vlen == 0 || memcmp(got, val, vlen) == 0);
        htkv_free(got);
        count++;
    }
    htkv_iter_destroy(it);
    struct htkv_stats st;
    FUZZ_CHECK(htkv_stats(db, &st) == 0);
    FUZZ_CHECK(st.live_keys == count);
    return count;
}

/* Put one key into the open store, close, reopen: the key and every earlier key are there. */
static void
write_and_reopen(htkv_db *db, const htkv_config *cfg, uint64_t count)
{
    int had = htkv_contains(db, WRITE_KEY, sizeof(WRITE_KEY) - 1);
    FUZZ_CHECK(had == 0 || had == 1);
    int rc = htkv_put(db, WRITE_KEY, sizeof(WRITE_KEY) - 1, WRITE_VAL, sizeof(WRITE_VAL) - 1);
    if (rc == -EOVERFLOW) {
        /* A record claimed the largest version: the store has none left and writes nothing. */
        struct htkv_stats st;
        FUZZ_CHECK(htkv_stats(db, &st) == 0 && st.last_version >= REC_VERSION_MAX);
        FUZZ_CHECK(htkv_contains(db, WRITE_KEY, sizeof(WRITE_KEY) - 1) == had);
        FUZZ_CHECK(htkv_close(db) == 0);
        return;
    }
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(htkv_close(db) == 0);
    FUZZ_CHECK(htkv_open(cfg, &db) == 0);
    char buf[sizeof(WRITE_VAL)];
    size_t vlen;
    FUZZ_CHECK(htkv_get(db, WRITE_KEY, sizeof(WRITE_KEY) - 1, buf, sizeof(buf), &vlen) == 0);
    FUZZ_CHECK(vlen == sizeof(WRITE_VAL) - 1);
    FUZZ_CHECK(memcmp(buf, WRITE_VAL, vlen) == 0);
    FUZZ_CHECK(read_all(db) == count + (had == 0 ? 1 : 0));
    FUZZ_CHECK(htkv_close(db) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t mode = size > 0 ? data[0] : 0;
    const uint8_t *seg = size > 0 ? data + 1 : data;
    size_t seg_len = size > 0 ? size - 1 : 0;
    int fds = fuzz_fd_count();
    FUZZ_CHECK(fds > 0);
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "segment") == 0);
    store_write(dir, (mode & MODE_WHOLE) != 0, seg, seg_len);

    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.shard_count = 1;
    cfg.max_segment_bytes = (mode & MODE_TIGHT) != 0 ? 1u << 16 : 1u << 20;
    cfg.create_if_missing = 0;
    cfg.read_only = (mode & MODE_RDONLY) != 0;
    cfg.recovery = (mode & MODE_SKIP) != 0 ? HTKV_RECOVERY_SKIP_CORRUPT : HTKV_RECOVERY_STRICT;
    if ((mode & MODE_SMALL) != 0) {
        cfg.max_value_bytes = 64;
    }
    cfg.sync_mode = (mode & MODE_ALWAYS) != 0 ? HTKV_SYNC_ALWAYS : HTKV_SYNC_NEVER;
    cfg.log_fn = quiet_log;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT || rc == HTKV_EVERSION);
    FUZZ_CHECK((rc == 0) == (db != NULL));
    if (rc == 0) {
        uint64_t count = read_all(db);
        if (!cfg.read_only && (mode & MODE_WRITE) != 0) {
            write_and_reopen(db, &cfg, count); /* closes db */
        } else {
            FUZZ_CHECK(htkv_close(db) == 0);
        }
    }
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
    FUZZ_CHECK(fuzz_fd_count() == fds);
    return 0;
}
