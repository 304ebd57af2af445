/*
 * fuzz_snapshot.c - libFuzzer target for the snapshot parser and restore: the input becomes a
 * snapshot file, which htkv_snapshot_check_file() judges and, when it is accepted,
 * htkv_snapshot_restore() installs into a store that is then read back.
 *
 * Input: byte 0 is a mode, the rest the file.
 *   mode bit 0  FIXUP  recompute the header CRC and the trailer's entry CRC (and the header's
 *                      data_bytes) before writing, so that the fuzzer reaches the per-entry
 *                      checks (lengths, versions, key order) instead of stopping at a checksum
 *
 * Design. One store (one shard, in a scratch directory under /dev/shm) is opened once per
 * process and reused: every accepted input replaces its contents. After a restore the store
 * must hold exactly the snapshot's entry count, keys strictly increasing by iteration, each key
 * readable with the value the iterator gave; a new write must then succeed.
 *
 * Seeds (tests/fuzz/corpus/fuzz_snapshot/): the snapshots htkv_snapshot_write() gives for an
 * empty store and for one of four keys, each with mode 0 and mode 1.
 *
 * Invariants (checked for every input)
 *   1. The checker returns 0, HTKV_ECORRUPT, HTKV_EVERSION or HTKV_ETOOBIG and never crashes;
 *      restore answers the same for the same file, except -EOVERFLOW for a rollback once the
 *      store's versions are used up (an earlier input claimed the largest).
 *   2. After a successful restore the store holds the snapshot's key count, sorted, readable.
 *   3. A refused file changes nothing: the key count stays what it was.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/verify.h"
#include "engine/rec.h"
#include "tests/fuzz/fuzz_util.h"

#define MODE_FIXUP 0x01u
#define HDR 64u
#define TRAILER 16u

static char dir[512];
static char path[640];
static htkv_db *db;

static void
quiet_log(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)msg;
    (void)ctx;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "snapshot") == 0);
    char store[600];
    snprintf(store, sizeof(store), "%s/store", dir);
    snprintf(path, sizeof(path), "%s/input.snap", dir);
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = store;
    cfg.shard_count = 1;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.compaction_interval_ms = 0;
    cfg.max_value_bytes = 1u << 16;
    cfg.log_fn = quiet_log;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    return 0;
}

static void
store32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void
store64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* Make the checksums (and data_bytes) of @p f agree with its contents. */
static void
fixup(uint8_t *f, size_t n)
{
    if (n < HDR + TRAILER) {
        return;
    }
    store64(f + 32, n - HDR - TRAILER);
    store32(f + 60, htkv_crc32c(0, f, 60));
    store32(f + n - TRAILER + 8, htkv_crc32c(0, f + HDR, n - HDR - TRAILER));
}

static uint64_t
live_keys(void)
{
    struct htkv_stats st;
    FUZZ_CHECK(htkv_stats(db, &st) == 0);
    return st.live_keys;
}

/* Read the whole store back: sorted keys, point reads equal to the iterator's values. */
static uint64_t
read_back(void)
{
    htkv_iter *it;
    FUZZ_CHECK(htkv_get_prefix(db, NULL, 0, &it) == 0);
    const void *k, *v;
    size_t kl, vl, pl = 0;
    unsigned char prev[65536];
    uint64_t n = 0;
    int rc;
    while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        if (n > 0) {
            int c = memcmp(prev, k, pl < kl ? pl : kl);
            FUZZ_CHECK(c < 0 || (c == 0 && pl < kl));
        }
        void *got = NULL;
        size_t gl = 0;
        FUZZ_CHECK(htkv_get_alloc(db, k, kl, &got, &gl) == 0);
        FUZZ_CHECK(gl == vl);
        FUZZ_CHECK(vl == 0 || memcmp(got, v, vl) == 0);
        htkv_free(got);
        memcpy(prev, k, kl);
        pl = kl;
        n++;
    }
    FUZZ_CHECK(rc == 0);
    htkv_iter_destroy(it);
    return n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned mode = data[0];
    size_t n = size - 1;
    uint8_t *f = malloc(n ? n : 1);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data + 1, n);
    if ((mode & MODE_FIXUP) != 0) {
        fixup(f, n);
    }
    FUZZ_CHECK(fuzz_write_file(AT_FDCWD, path, f, n) == 0);
    free(f);

    uint64_t version = 0, count = 0, bad = 0;
    int crc = htkv_snapshot_check_file(path, 1u << 16, &version, &count, &bad);
    FUZZ_CHECK(crc == 0 || crc == HTKV_ECORRUPT || crc == HTKV_EVERSION || crc == HTKV_ETOOBIG);
    uint64_t before = live_keys();
    struct htkv_stats st;
    FUZZ_CHECK(htkv_stats(db, &st) == 0);
    int rrc = htkv_snapshot_restore(db, path);
    /* The file decides, except that a rollback (a snapshot below the store's latest version)
     * takes a version of its own: none is left once an earlier input claimed the largest. */
    FUZZ_CHECK(rrc == crc || (crc == 0 && rrc == -EOVERFLOW && version < st.last_version &&
                              st.last_version >= REC_VERSION_MAX));
    if (rrc == 0) {
        FUZZ_CHECK(live_keys() == count);
        FUZZ_CHECK(read_back() == count);
        /* A snapshot may claim versions up to the largest (REC_VERSION_MAX), this one or one
         * restored before into this store: then no version is left and the write is refused. */
        int prc = htkv_put(db, "fuzz-after", 10, "x", 1);
        FUZZ_CHECK(prc == 0 || (prc == -EOVERFLOW && htkv_stats(db, &st) == 0 &&
                                st.last_version >= REC_VERSION_MAX));
    } else {
        FUZZ_CHECK(live_keys() == before);
    }
    return 0;
}
