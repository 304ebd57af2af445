/*
 * fuzz_closing.c - libFuzzer target for a shard's close.state (engine/closing.h): the input
 * becomes the close.state of shard 1, which is loaded, written back and loaded again.
 *
 * Input: byte 0 is a mode, the rest the file.
 *   mode bit 0  FIXUP  recompute the trailer's CRC (over every byte before the trailer), so that
 *                      the fuzzer reaches the checks behind it
 *
 * Invariants (checked for every input)
 *   1. Nothing crashes or reads outside the file (ASan), and no descriptor or memory outlives
 *      the run.
 *   2. htkv_closing_load() answers 0 or HTKV_ECORRUPT (the file exists), and 0 only for a file
 *      of exactly a header, its segments and a trailer, of at most FC_MAX_SEGS segments, with
 *      known flags only.
 *   3. A state that loads is written back by htkv_closing_write() byte for byte as it was read,
 *      and loads again equal: nothing in a valid file is lost or invented by the parser.
 *
 * Seeds (tests/fuzz/corpus/fuzz_closing/, written by fuzz_make_seeds): states of 0, 1 and 5
 * segments, each with mode 0 and FIXUP.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/closing.h"
#include "engine/crc32c.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FC_SHARD 1u
#define FC_MAX_SEGS 64u

static char dir[256];

static bool
same_state(const struct closing *a, const struct closing *b)
{
    return a->shard == b->shard && a->man_number == b->man_number && a->man_bytes == b->man_bytes &&
           a->applied == b->applied && a->nsegs == b->nsegs &&
           (a->nsegs == 0 || memcmp(a->segs, b->segs, a->nsegs * sizeof(*a->segs)) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (dir[0] == 0) {
        FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "closing") == 0);
    }
    int fds = fuzz_fd_count();
    size_t len = size - 1;
    unsigned char *f = malloc(len + 1);
    FUZZ_CHECK(f != NULL);
    memcpy(f, data + 1, len);
    if ((data[0] & 1) != 0 && len >= CLOSING_TRAILER_BYTES) {
        htkv_store32(f + len - CLOSING_TRAILER_BYTES,
                     htkv_crc32c(0, f, len - CLOSING_TRAILER_BYTES));
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, CLOSING_NAME);
    FUZZ_CHECK(fuzz_write_file(AT_FDCWD, path, f, len) == 0);

    struct closing c;
    int rc = htkv_closing_load(dir, FC_SHARD, FC_MAX_SEGS, &c);
    FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT); /* invariant 2 */
    if (rc == 0) {
        FUZZ_CHECK(c.nsegs <= FC_MAX_SEGS && c.shard == FC_SHARD);
        FUZZ_CHECK(len ==
                   CLOSING_HDR_BYTES + (size_t)c.nsegs * CLOSING_SEG_BYTES + CLOSING_TRAILER_BYTES);
        for (uint32_t i = 0; i < c.nsegs; i++) {
            FUZZ_CHECK((c.segs[i].flags & ~(uint32_t)(CLOSING_KIX | CLOSING_HINT)) == 0);
        }
        /* Invariant 3: written back as read, and loaded again equal. */
        FUZZ_CHECK(htkv_closing_write(dir, &c) == 0);
        unsigned char *back;
        size_t blen;
        FUZZ_CHECK(fuzz_read_file(AT_FDCWD, path, &back, &blen) == 0);
        FUZZ_CHECK(blen == len && memcmp(back, f, len) == 0);
        free(back);
        struct closing again;
        FUZZ_CHECK(htkv_closing_load(dir, FC_SHARD, FC_MAX_SEGS, &again) == 0);
        FUZZ_CHECK(same_state(&c, &again));
        htkv_closing_free(&again);
        htkv_closing_free(&c);
    }
    free(f);
    FUZZ_CHECK(unlink(path) == 0);
    FUZZ_CHECK(fuzz_fd_count() == fds); /* invariant 1 */
    return 0;
}
