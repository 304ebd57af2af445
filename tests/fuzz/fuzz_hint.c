/*
 * fuzz_hint.c - libFuzzer target for the hint file loader and the recovery that uses hints: the
 * input becomes the hint file of one segment of a small store, which is opened through the
 * public API and compared key by key with a model of what was written to it.
 *
 * Input: byte 0 is a mode (HS_MODE_* of fuzz_hint_store.h), the rest the hint file.
 *   mode bit 0     FIXUP   recompute the header CRC and, when the size has the shape of a hint
 *                          (64 + 32 n + 8 bytes), the entry count n and the trailer's CRC, so
 *                          that the fuzzer reaches the entry checks instead of a checksum
 *   mode bits 1-3  TARGET  which segment (modulo their count, in shard and name order) gets the
 *                          input as its hint
 *   mode bit 4     BARE    the other segments have no hint (scanned); else their own hints
 *   mode bit 5     RDONLY  open read-only
 *   mode bit 6     REOPEN  unless RDONLY: close (which rewrites refused hints), open and check
 *                          again
 *
 * Design. LLVMFuzzerInitialize() builds the store of fuzz_hint_store.h once (2 shards, 64 KiB
 * segments, one of them sealed, hints on), keeps the bytes of each of its files and the model of
 * its contents, and removes it. Every run writes these files into a fresh scratch directory,
 * the input in place of the target's hint, and opens the store. Open must succeed or fail with
 * HTKV_ECORRUPT. Once open, every key the model knows is read back, the whole store iterated
 * and htkv_stats() compared with the model.
 *
 * How exact the store must be depends on what the hint says. A hint whose entries are the first
 * n entries of the hint the engine wrote for that segment (any n, header fields free) is true:
 * the store must then equal the model exactly (every value, no missing and no extra key,
 * live_keys), and so must it whenever recovery refused the hint (it logs a warning naming the
 * segment). A hint that passes every check of the loader and of recovery yet describes the
 * records differently (a version, hash, type or length that is not the record's, possible when
 * its CRCs are recomputed) is outside what the engine can tell from the hint alone: recovery
 * reads only the last record a hint names. For such a store the target checks what must hold
 * whatever the index holds: no crash, reads and iteration answer 0, HTKV_ENOTFOUND or
 * HTKV_ECORRUPT, and every value returned is one that key held at some time. With
 * HTKV_FUZZ_HINT_STRICT=1 in the environment such a store is reported as a finding too.
 *
 * Seeds (tests/fuzz/corpus/fuzz_hint/, written by fuzz_make_seeds): the engine's hint of each
 * segment with mode 0 and with FIXUP | BARE | REOPEN, and two hints that describe a record
 * wrongly with agreeing checksums (lie-hash, regress-del-named-set).
 *
 * Invariants (checked for every input)
 *   1. htkv_open() never crashes, sets the handle exactly on 0 and returns 0 or HTKV_ECORRUPT.
 *   2. A true or refused hint gives exactly the model's store, before and after a reopen.
 *   3. No read returns a value its key never held.
 *   4. No descriptor and no memory (LeakSanitizer) outlives the run.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/hint.h"
#include "engine/seg.h"
#include "tests/fuzz/fuzz_hint_store.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct blob {
    unsigned char *bytes;
    size_t len;
};

/* The store every run starts from (see the file comment). */
static struct {
    struct blob current;
    char manifest_name[64];
    struct blob manifest;
    struct hs_seg segs[HS_SEGS_MAX];
    struct blob seg_bytes[HS_SEGS_MAX];
    struct blob hint_bytes[HS_SEGS_MAX];
    unsigned nsegs;
    struct hs_model model;
    bool strict_env;
} tpl;

/* What the log of one open said about the target's hint. */
struct log_watch {
    const char *seg; /* "shard-SSS/NNNNNNNNNNNN.seg" */
    bool refused;
};

static void
watch_log(int level, const char *msg, void *ctx)
{
    struct log_watch *w = ctx;
    if (level == HTKV_LOG_WARN && strstr(msg, w->seg) != NULL && strstr(msg, "hint") != NULL) {
        w->refused = true;
    }
}

static void
blob_read(int dir_fd, const char *name, struct blob *out)
{
    FUZZ_CHECK(fuzz_read_file(dir_fd, name, &out->bytes, &out->len) == 0);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *strict = getenv("HTKV_FUZZ_HINT_STRICT");
    tpl.strict_env = strict != NULL && strcmp(strict, "1") == 0;
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "hint-template") == 0);
    hs_build(dir, &tpl.model);
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    blob_read(dir_fd, "CURRENT", &tpl.current);
    FUZZ_CHECK(tpl.current.len > 1);
    FUZZ_CHECK(tpl.current.len < sizeof(tpl.manifest_name));
    FUZZ_CHECK(tpl.current.bytes[tpl.current.len - 1] == '\n');
    memcpy(tpl.manifest_name, tpl.current.bytes, tpl.current.len - 1);
    blob_read(dir_fd, tpl.manifest_name, &tpl.manifest);
    tpl.nsegs = hs_segments(dir, tpl.segs);
    FUZZ_CHECK(tpl.nsegs >= HS_SHARDS + 1);
    for (unsigned i = 0; i < tpl.nsegs; i++) {
        blob_read(dir_fd, tpl.segs[i].seg, &tpl.seg_bytes[i]);
        blob_read(dir_fd, tpl.segs[i].hint, &tpl.hint_bytes[i]);
        FUZZ_CHECK(tpl.hint_bytes[i].len >= HINT_HDR_BYTES + HINT_TRAILER_BYTES);
    }
    close(dir_fd);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
    return 0;
}

/* Make the checksums (and, when the size allows, the entry count) of hint @p f agree with it. */
static void
fixup(unsigned char *f, size_t n)
{
    if (n < HINT_HDR_BYTES) {
        return;
    }
    size_t body = n - HINT_HDR_BYTES;
    if (body >= HINT_TRAILER_BYTES && (body - HINT_TRAILER_BYTES) % HINT_ENT_BYTES == 0) {
        size_t ents = (body - HINT_TRAILER_BYTES) / HINT_ENT_BYTES;
        htkv_store64(f + 24, ents);
        htkv_store32(f + n - HINT_TRAILER_BYTES,
                     htkv_crc32c(0, f + HINT_HDR_BYTES, ents * HINT_ENT_BYTES));
    }
    htkv_store32(f + 60, htkv_crc32c(0, f, 60));
}

/* The fields of entry @p i of hint bytes @p h that recovery uses. */
static void
ent_decode(const unsigned char *h, uint64_t i, struct hint_ent *e)
{
    const unsigned char *p = h + HINT_HDR_BYTES + i * HINT_ENT_BYTES;
    e->hash = htkv_load64(p);
    e->version = htkv_load64(p + 8);
    e->off = htkv_load32(p + 16);
    e->key_len = htkv_load32(p + 20);
    e->val_len = htkv_load32(p + 24);
    e->type = p[28];
    e->flags = p[29];
}

/*
 * Whether hint bytes @p h describe the records of segment @p t as the engine's own hint does:
 * the size of a hint, entries equal to the first entries of the engine's, and a tail where the
 * last of them ends. Header fields recovery does not use are not compared.
 */
static bool
hint_true(unsigned t, const unsigned char *h, size_t len)
{
    const struct blob *g = &tpl.hint_bytes[t];
    uint64_t g_count = htkv_load64(g->bytes + 24);
    if (len < HINT_HDR_BYTES + HINT_TRAILER_BYTES) {
        return false;
    }
    uint64_t n = htkv_load64(h + 24);
    if (n > g_count || len != HINT_HDR_BYTES + n * HINT_ENT_BYTES + HINT_TRAILER_BYTES) {
        return false;
    }
    for (uint64_t i = 0; i < n; i++) {
        struct hint_ent a, b;
        ent_decode(h, i, &a);
        ent_decode(g->bytes, i, &b);
        if (a.hash != b.hash || a.version != b.version || a.off != b.off ||
            a.key_len != b.key_len || a.val_len != b.val_len || a.type != b.type ||
            a.flags != b.flags) {
            return false;
        }
    }
    uint64_t end = SEG_DATA_OFF;
    if (n < g_count) {
        struct hint_ent next;
        ent_decode(g->bytes, n, &next);
        end = next.off;
    } else {
        end = htkv_load64(g->bytes + 32);
    }
    return htkv_load64(h + 32) == end;
}

/* Whether the hint of segment @p t now in store @p dir is true for it (absent counts as true). */
static bool
hint_file_true(const char *dir, unsigned t)
{
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    unsigned char *h;
    size_t len;
    int rc = fuzz_read_file(dir_fd, tpl.segs[t].hint, &h, &len);
    close(dir_fd);
    if (rc == -ENOENT) {
        return true;
    }
    FUZZ_CHECK(rc == 0);
    bool ok = hint_true(t, h, len);
    free(h);
    return ok;
}

static void
store_write(const char *dir, unsigned target, bool bare, const unsigned char *hint, size_t len)
{
    int dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(dir_fd >= 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, tpl.manifest_name, tpl.manifest.bytes, tpl.manifest.len) ==
               0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, "CURRENT", tpl.current.bytes, tpl.current.len) == 0);
    FUZZ_CHECK(fuzz_write_file(dir_fd, "LOCK", "", 0) == 0); /* a read-only open needs it */
    for (uint32_t s = 0; s < HS_SHARDS; s++) {
        char name[32];
        snprintf(name, sizeof(name), "shard-%03u", (unsigned)s);
        FUZZ_CHECK(mkdirat(dir_fd, name, 0755) == 0);
    }
    for (unsigned i = 0; i < tpl.nsegs; i++) {
        const struct blob *b = &tpl.seg_bytes[i];
        FUZZ_CHECK(fuzz_write_file(dir_fd, tpl.segs[i].seg, b->bytes, b->len) == 0);
        if (i == target) {
            FUZZ_CHECK(fuzz_write_file(dir_fd, tpl.segs[i].hint, hint, len) == 0);
        } else if (!bare) {
            b = &tpl.hint_bytes[i];
            FUZZ_CHECK(fuzz_write_file(dir_fd, tpl.segs[i].hint, b->bytes, b->len) == 0);
        }
    }
    close(dir_fd);
}

static bool
val_eq(const struct hs_val *v, const void *p, size_t len)
{
    return v->len == len && (len == 0 || memcmp(v->bytes, p, len) == 0);
}

/* Whether @p key held the value @p p at some time. */
static bool
val_held(const struct hs_key *k, const void *p, size_t len)
{
    for (unsigned i = 0; i < k->nhist; i++) {
        if (val_eq(&k->hist[i], p, len)) {
            return true;
        }
    }
    return false;
}

static const struct hs_key *
model_key(const void *key, size_t klen)
{
    for (unsigned i = 0; i < tpl.model.nkeys; i++) {
        const struct hs_key *k = &tpl.model.keys[i];
        if (strlen(k->name) == klen && memcmp(k->name, key, klen) == 0) {
            return k;
        }
    }
    return NULL;
}

/* Point reads of every key the model knows. */
static void
check_gets(htkv_db *db, bool strict)
{
    for (unsigned i = 0; i < tpl.model.nkeys; i++) {
        const struct hs_key *k = &tpl.model.keys[i];
        void *got = NULL;
        size_t len = 0;
        int rc = htkv_get_alloc(db, k->name, strlen(k->name), &got, &len);
        if (strict) {
            FUZZ_CHECK(rc == (k->live ? 0 : HTKV_ENOTFOUND));
            FUZZ_CHECK(!k->live || val_eq(&k->cur, got, len));
        } else {
            FUZZ_CHECK(rc == 0 || rc == HTKV_ENOTFOUND || rc == HTKV_ECORRUPT);
            FUZZ_CHECK(rc != 0 || val_held(k, got, len));
        }
        htkv_free(got);
    }
}

/* Iteration over the whole store: sorted keys the model knows, each with a value it held. */
static void
check_iter(htkv_db *db, bool strict)
{
    htkv_iter *it;
    FUZZ_CHECK(htkv_get_prefix(db, NULL, 0, &it) == 0);
    char prev[HS_NAME_MAX];
    size_t prev_len = 0;
    uint64_t n = 0;
    for (;;) {
        const void *key, *val;
        size_t klen, vlen;
        int rc = htkv_iter_next(it, &key, &klen, &val, &vlen);
        if (strict) {
            FUZZ_CHECK(rc == 0 || rc == 1);
        } else {
            FUZZ_CHECK(rc == 0 || rc == 1 || rc == HTKV_ECORRUPT);
        }
        if (rc != 1) {
            break;
        }
        const struct hs_key *k = model_key(key, klen);
        FUZZ_CHECK(k != NULL);
        if (strict) {
            FUZZ_CHECK(k->live);
            FUZZ_CHECK(val_eq(&k->cur, val, vlen));
        } else {
            FUZZ_CHECK(val_held(k, val, vlen));
        }
        if (n > 0) {
            int c = memcmp(prev, key, prev_len < klen ? prev_len : klen);
            FUZZ_CHECK(c < 0 || (c == 0 && prev_len < klen));
        }
        memcpy(prev, key, klen);
        prev_len = klen;
        n++;
    }
    htkv_iter_destroy(it);
    struct htkv_stats st;
    FUZZ_CHECK(htkv_stats(db, &st) == 0);
    if (strict) {
        FUZZ_CHECK(n == tpl.model.live);
        FUZZ_CHECK(st.live_keys == tpl.model.live);
    }
}

/*
 * Open the store in @p cfg->data_dir and check it. @p *strict is true when every open before
 * this one gave the exact store; it is cleared when this one may not. Returns the open handle
 * or NULL (open refused the store with HTKV_ECORRUPT).
 */
static htkv_db *
open_check(htkv_config *cfg, unsigned target, bool *strict)
{
    struct log_watch w = { .seg = tpl.segs[target].seg, .refused = false };
    bool truthful = hint_file_true(cfg->data_dir, target);
    cfg->log_fn = watch_log;
    cfg->log_ctx = &w;
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    FUZZ_CHECK(rc == 0 || rc == HTKV_ECORRUPT);
    FUZZ_CHECK((rc == 0) == (db != NULL));
    /* Every segment is valid: only a hint that was used, and is not true, can make open fail. */
    bool before = *strict;
    *strict = before && (truthful || w.refused) && rc == 0;
    FUZZ_CHECK(*strict || !tpl.strict_env);
    if (rc != 0) {
        FUZZ_CHECK(!before || (!truthful && !w.refused));
        return NULL;
    }
    check_gets(db, *strict);
    check_iter(db, *strict);
    return db;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t mode = size > 0 ? data[0] : 0;
    size_t len = size > 0 ? size - 1 : 0;
    unsigned char *hint = malloc(len + 1);
    FUZZ_CHECK(hint != NULL);
    if (len > 0) {
        memcpy(hint, data + 1, len);
    }
    if ((mode & HS_MODE_FIXUP) != 0) {
        fixup(hint, len);
    }
    unsigned target = ((mode >> HS_MODE_TARGET_SHIFT) & HS_MODE_TARGET_MASK) % tpl.nsegs;
    int fds = fuzz_fd_count();
    FUZZ_CHECK(fds > 0);
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "hint") == 0);
    store_write(dir, target, (mode & HS_MODE_BARE) != 0, hint, len);
    free(hint);

    htkv_config cfg;
    hs_config(&cfg, dir);
    cfg.create_if_missing = 0;
    cfg.read_only = (mode & HS_MODE_RDONLY) != 0;
    bool strict = true;
    htkv_db *db = open_check(&cfg, target, &strict);
    if (db != NULL) {
        FUZZ_CHECK(htkv_close(db) == 0);
        if (!cfg.read_only && (mode & HS_MODE_REOPEN) != 0) {
            db = open_check(&cfg, target, &strict);
            if (db != NULL) {
                FUZZ_CHECK(htkv_close(db) == 0);
            }
        }
    }
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
    FUZZ_CHECK(fuzz_fd_count() == fds);
    return 0;
}
