/*
 * fuzz_manifest.c - libFuzzer target for the manifest loader (engine/manifest.h): the input is
 * written as MANIFEST-000001, with a CURRENT naming it, and htkv_manifest_load() reads it.
 *
 * Design. Each run gets a fresh scratch directory (fuzz_util.h), removed before it returns. The
 * file is loaded read-only, then writable; both see the same bytes, so they must agree on the
 * result and on the state. A writable load, then htkv_manifest_cut_torn() as an open does, cuts a
 * torn last edit off, so the file must then end
 * at file_bytes and a reload must find nothing torn and the same state. Then the writable handle
 * is exercised the way an open store uses it, and the result reloaded each time: one
 * htkv_manifest_add_seg() of a fresh id (an edit appended after the cut must be found; a torn
 * edit left in place would turn into "damage followed by valid edits"), then
 * htkv_manifest_rewrite() (the compacted manifest must load to the same state).
 *
 * Invariants (checked for every input)
 *   1. Every load returns 0 or a negative code, and *out is NULL exactly when it fails.
 *   2. A loaded manifest is sane: number 1, format <= HTKV_FORMAT_VERSION, 1..MAN_SHARDS_MAX
 *      shards, every shard's ids non-zero and strictly ascending, next_seg_id above all of them
 *      (manifest.c invariants 1 and 2), MAN_HDR_BYTES <= file_bytes <= the file's size.
 *   3. No descriptor and no memory (LeakSanitizer) outlives the run.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/manifest.h"
#include "tests/fuzz/fuzz_util.h"

#define M1 "MANIFEST-000001"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_sane(const struct manifest *m, uint64_t number, uint64_t file_size)
{
    FUZZ_CHECK(m->fd >= 0);
    FUZZ_CHECK(m->number == number);
    FUZZ_CHECK(m->format <= HTKV_FORMAT_VERSION);
    FUZZ_CHECK(m->shard_count >= 1);
    FUZZ_CHECK(m->shard_count <= MAN_SHARDS_MAX);
    FUZZ_CHECK(m->shards != NULL);
    FUZZ_CHECK(m->file_bytes >= MAN_HDR_BYTES);
    FUZZ_CHECK(m->file_bytes <= file_size);
    FUZZ_CHECK(m->next_seg_id >= 1);
    for (uint32_t s = 0; s < m->shard_count; s++) {
        const struct man_shard *ms = &m->shards[s];
        FUZZ_CHECK(ms->count <= ms->cap);
        if (ms->count > 0) {
            FUZZ_CHECK(ms->seg_ids != NULL);
        }
        for (size_t i = 0; i < ms->count; i++) {
            FUZZ_CHECK(ms->seg_ids[i] != 0);
            FUZZ_CHECK(ms->seg_ids[i] < m->next_seg_id);
            if (i > 0) {
                FUZZ_CHECK(ms->seg_ids[i - 1] < ms->seg_ids[i]);
            }
        }
    }
}

/* The state two loads of the same edits must share (not the file, number or handle). */
static void
check_same_state(const struct manifest *a, const struct manifest *b)
{
    FUZZ_CHECK(a->format == b->format);
    FUZZ_CHECK(a->shard_count == b->shard_count);
    FUZZ_CHECK(a->hash_seed == b->hash_seed);
    FUZZ_CHECK(a->next_seg_id == b->next_seg_id);
    for (uint32_t s = 0; s < a->shard_count; s++) {
        FUZZ_CHECK(a->shards[s].count == b->shards[s].count);
        for (size_t i = 0; i < a->shards[s].count; i++) {
            FUZZ_CHECK(a->shards[s].seg_ids[i] == b->shards[s].seg_ids[i]);
        }
    }
}

static uint64_t
file_size(int dir_fd, const char *name)
{
    struct stat st;
    FUZZ_CHECK(fstatat(dir_fd, name, &st, 0) == 0);
    return (uint64_t)st.st_size;
}

/* Load and check invariants 1 and 2; returns the load's code, *out set on 0. */
static int
load(int dir_fd, bool writable, uint64_t number, const char *name, struct manifest **out)
{
    int rc = htkv_manifest_load(dir_fd, writable, out);
    FUZZ_CHECK(rc <= 0);
    FUZZ_CHECK((rc == 0) == (*out != NULL));
    if (rc == 0) {
        FUZZ_CHECK((*out)->writable == writable);
        if (writable) {
            FUZZ_CHECK(htkv_manifest_cut_torn(*out) == 0); /* what an open does next */
        }
        check_sane(*out, number, file_size(dir_fd, name));
    }
    return rc;
}

/* Append a fresh segment to the writable @p m and reload: the edit must be there. */
static void
check_append(int dir_fd, struct manifest *m)
{
    uint32_t shard = m->shard_count - 1;
    uint64_t id = htkv_manifest_next_seg_id(m);
    FUZZ_CHECK(id != 0);
    FUZZ_CHECK(htkv_manifest_add_seg(m, shard, id) == 0);
    check_sane(m, 1, file_size(dir_fd, M1));
    FUZZ_CHECK(m->file_bytes == file_size(dir_fd, M1));
    struct manifest *r;
    FUZZ_CHECK(load(dir_fd, false, 1, M1, &r) == 0);
    check_same_state(m, r);
    FUZZ_CHECK(r->file_bytes == m->file_bytes);
    htkv_manifest_close(r);
}

/* Rewrite the writable @p m into MANIFEST-000002 and reload it through CURRENT. */
static void
check_rewrite(int dir_fd, struct manifest *m)
{
    FUZZ_CHECK(htkv_manifest_rewrite(m) == 0);
    check_sane(m, 2, file_size(dir_fd, "MANIFEST-000002"));
    struct manifest *r;
    FUZZ_CHECK(load(dir_fd, false, 2, "MANIFEST-000002", &r) == 0);
    check_same_state(m, r);
    FUZZ_CHECK(r->file_bytes == m->file_bytes);
    htkv_manifest_close(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fds = fuzz_fd_count();
    FUZZ_CHECK(fds > 0);
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "manifest") == 0);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, M1, data, size) == 0);
    static const char current[] = M1 "\n";
    FUZZ_CHECK(fuzz_write_file(dir_fd, "CURRENT", current, sizeof(current) - 1) == 0);

    struct manifest *ro = NULL, *rw = NULL, *again = NULL;
    int rc = load(dir_fd, false, 1, M1, &ro);
    FUZZ_CHECK(load(dir_fd, true, 1, M1, &rw) == rc);
    if (rc == 0) {
        check_same_state(ro, rw);
        FUZZ_CHECK(ro->file_bytes == rw->file_bytes);
        FUZZ_CHECK(rw->file_bytes == file_size(dir_fd, M1)); /* a torn tail is cut */
        FUZZ_CHECK(load(dir_fd, false, 1, M1, &again) == 0);
        check_same_state(rw, again);
        check_append(dir_fd, rw);
        check_rewrite(dir_fd, rw);
    }
    htkv_manifest_close(again);
    htkv_manifest_close(rw);
    htkv_manifest_close(ro);
    close(dir_fd);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
    FUZZ_CHECK(fuzz_fd_count() == fds);
    return 0;
}
