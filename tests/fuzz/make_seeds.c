/*
 * make_seeds.c - writes the seed corpora of the fuzz targets: make_seeds DIR fills
 * DIR/fuzz_rec, DIR/fuzz_manifest, DIR/fuzz_segment_open, DIR/fuzz_hint, DIR/fuzz_kix,
 * DIR/fuzz_closing and DIR/fuzz_apikey_token.
 *
 * Design. Every seed is made by the code that makes such bytes in production, never typed in by
 * hand: records by htkv_rec_encode(), manifests by htkv_open() and the manifest API, segments by
 * a store written through the public API, hints by closing the store fuzz_hint builds
 * (fuzz_hint_store.h), key indexes by htkv_kix_write(), close states by htkv_closing_write(),
 * tokens by htkv_apikey_token_format().
 * Inputs are fixed, so the output only changes when a format does; the seeds in tests/fuzz/corpus/
 * were made with it (build-fuzz/fuzz/fuzz_make_seeds tests/fuzz/corpus). Each seed is laid out as
 * its target's file comment describes (mode bytes, position fields).
 *
 * Invariants
 *   1. Each seed is accepted as valid by its target's model, except those named bad-* or torn-*,
 *      which carry one deliberate fault, and the fuzz_hint seeds named lie-* or regress-*,
 *      hints whose checksums agree with entries that describe a record wrongly.
 *   2. The segment seeds are of segment 1 of shard 0, the one segment of the store that
 *      fuzz_segment_open builds around its input.
 *   3. The hint seeds are the hint files of that store's segments, byte for byte.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/hash.h"
#include "engine/hint.h"
#include "engine/closing.h"
#include "engine/kix.h"
#include "engine/manifest.h"
#include "engine/rec.h"
#include "engine/seg.h"
/* After the engine's headers: auth/core.h keeps the engine's HTKV_ASSERT when one is defined. */
#include "auth/core.h"
#include "tests/fuzz/fuzz_hint_store.h"
#include "tests/fuzz/fuzz_util.h"

static const char *out_root;

static void
seed_write(const char *target, const char *name, const void *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", out_root, target);
    FUZZ_CHECK(mkdir(path, 0755) == 0 || errno == EEXIST);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(fuzz_write_file(fd, name, data, len) == 0);
    close(fd);
    printf("%s/%s: %zu bytes\n", target, name, len);
}

static void
quiet_log(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)msg;
    (void)ctx;
}

/* ---- fuzz_rec: seg_id u64 | off u64 | val_max u32 | mode u8 | record ------------------------ */

static void
rec_seed(const char *name, uint64_t seg_id, uint64_t off, uint8_t mode, uint8_t type, uint8_t flags,
         uint64_t version, const char *key, const void *val, uint32_t val_len)
{
    uint32_t key_len = key != NULL ? (uint32_t)strlen(key) : 0;
    uint64_t size = htkv_rec_size(key_len, val_len);
    unsigned char *buf = calloc(1, 21 + size);
    FUZZ_CHECK(buf != NULL);
    htkv_store64(buf, seg_id);
    htkv_store64(buf + 8, off);
    htkv_store32(buf + 16, 1u << 20);
    buf[20] = mode;
    FUZZ_CHECK(htkv_rec_encode(buf + 21, seg_id, off, type, flags, version, key, key_len, val,
                               val_len) == size);
    if (mode != 0) {
        buf[21] ^= 0xff; /* the harness rewrites the CRC in this mode */
    }
    seed_write("fuzz_rec", name, buf, 21 + size);
    free(buf);
}

static void
rec_seeds(void)
{
    unsigned char begin[REC_BEGIN_PAYLOAD] = { 0 }, commit[REC_COMMIT_PAYLOAD] = { 0 };
    unsigned char seal[REC_SEAL_PAYLOAD];
    htkv_store32(begin, 2);     /* op_count */
    htkv_store32(begin + 4, 1); /* part_count */
    memcpy(commit, begin, sizeof(commit));
    htkv_store64(seal, 5);         /* record_count */
    htkv_store64(seal + 8, 65536); /* data_end = its own offset */
    rec_seed("set", 1, SEG_DATA_OFF, 0, REC_SET, 0, 7, "user:42", "value bytes", 11);
    rec_seed("del-in-batch", 3, 4096, 0, REC_DEL, REC_F_BATCH, 9, "gone", NULL, 0);
    rec_seed("begin", 3, 4064, 0, REC_BATCH_BEGIN, 0, 9, NULL, begin, sizeof(begin));
    rec_seed("commit", 3, 4128, 0, REC_BATCH_COMMIT, 0, 9, NULL, commit, sizeof(commit));
    rec_seed("seal", 2, 65536, 0, REC_SEAL, 0, 12, NULL, seal, sizeof(seal));
    rec_seed("crc-fixed-by-harness", 1, 128, 1, REC_SET, 0, 3, "k", "", 0);
}

/* ---- fuzz_manifest: the file's bytes --------------------------------------------------------- */

/* Read MANIFEST-<number> of @p dir, renumbered 1 (the number the harness's CURRENT names). */
static unsigned char *
manifest_read(const char *dir, unsigned number, size_t *len)
{
    char name[32];
    snprintf(name, sizeof(name), "MANIFEST-%06u", number);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    unsigned char *m;
    FUZZ_CHECK(fuzz_read_file(fd, name, &m, len) == 0);
    close(fd);
    FUZZ_CHECK(*len >= MAN_HDR_BYTES);
    htkv_store64(m + 16, 1);
    htkv_store32(m + 28, htkv_crc32c(0, m, 28));
    return m;
}

/* Give the INIT edit (the first edit) of manifest @p m a fixed hash seed, so that the seed file
 * does not change with the random one of each new store; the edit's CRC is recomputed. */
static void
manifest_fix_seed(unsigned char *m, size_t len)
{
    size_t e = MAN_HDR_BYTES;
    FUZZ_CHECK(len >= e + MAN_EDIT_HDR + 16);
    FUZZ_CHECK(htkv_load32(m + e + 4) == 16);
    FUZZ_CHECK(htkv_load32(m + e + 8) == MAN_INIT);
    htkv_store64(m + e + MAN_EDIT_HDR + 8, 0x9e3779b97f4a7c15ull);
    htkv_store32(m + e, htkv_crc32c(0, m + e + 4, 8 + 16));
}

/* A store of 4 shards after 8 puts. Its hash seed is fixed before the puts (see above), so that
 * the keys land in the same shards, and the seed file is the same, every time. */
static void
manifest_seed_store(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seed-store") == 0);
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.shard_count = 4;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.log_fn = quiet_log;
    htkv_db *db;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    FUZZ_CHECK(htkv_close(db) == 0);
    size_t len;
    unsigned char *m = manifest_read(dir, 1, &len);
    manifest_fix_seed(m, len);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(fuzz_write_file(fd, "MANIFEST-000001", m, len) == 0);
    close(fd);
    free(m);

    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    for (int i = 0; i < 8; i++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "key-%d", i);
        FUZZ_CHECK(htkv_put(db, key, (size_t)n, "v", 1) == 0);
    }
    FUZZ_CHECK(htkv_close(db) == 0);
    m = manifest_read(dir, 1, &len);
    seed_write("fuzz_manifest", "store", m, len);
    free(m);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

static void
manifest_seed_edits(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seed-manifest") == 0);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    struct manifest *m;
    FUZZ_CHECK(htkv_manifest_create(fd, 2, 0x0123456789abcdefull, &m) == 0);
    FUZZ_CHECK(htkv_manifest_add_seg(m, 0, htkv_manifest_next_seg_id(m)) == 0); /* 1 */
    FUZZ_CHECK(htkv_manifest_add_seg(m, 1, htkv_manifest_next_seg_id(m)) == 0); /* 2 */
    FUZZ_CHECK(htkv_manifest_add_seg(m, 1, htkv_manifest_next_seg_id(m)) == 0); /* 3 */
    FUZZ_CHECK(htkv_manifest_drop_seg(m, 1, 2) == 0);
    FUZZ_CHECK(htkv_manifest_drop_seg(m, 1, 3) == 0);
    size_t len;
    unsigned char *b = manifest_read(dir, 1, &len);
    seed_write("fuzz_manifest", "edits", b, len);
    /* The last edit cut in the middle, as a crash during its write leaves it. */
    seed_write("fuzz_manifest", "torn-last-edit", b, len - 9);
    free(b);
    /* A rewrite keeps the dropped id 3 used with a NEXT_ID edit. */
    FUZZ_CHECK(htkv_manifest_rewrite(m) == 0);
    b = manifest_read(dir, 2, &len);
    seed_write("fuzz_manifest", "rewritten-next-id", b, len);
    free(b);
    htkv_manifest_close(m);
    close(fd);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

/* ---- fuzz_segment_open: mode u8 | segment bytes ---------------------------------------------- */

static void
segment_seed(const char *name, uint8_t mode, const unsigned char *seg, size_t len)
{
    unsigned char *buf = malloc(1 + len);
    FUZZ_CHECK(buf != NULL);
    buf[0] = mode;
    memcpy(buf + 1, seg, len);
    seed_write("fuzz_segment_open", name, buf, 1 + len);
    free(buf);
}

/* Fill a one-shard store: single puts, an overwrite, a delete and a batch. */
static void
segment_fill(htkv_db *db)
{
    FUZZ_CHECK(htkv_put(db, "apple", 5, "red", 3) == 0);
    FUZZ_CHECK(htkv_put(db, "banana", 6, "yellow", 6) == 0);
    FUZZ_CHECK(htkv_put(db, "cherry", 6, "", 0) == 0);
    FUZZ_CHECK(htkv_put(db, "apple", 5, "green", 5) == 0);
    FUZZ_CHECK(htkv_delete(db, "banana", 6) == 0);
    htkv_batch *b;
    FUZZ_CHECK(htkv_batch_create(&b) == 0);
    FUZZ_CHECK(htkv_batch_put(b, "date", 4, "brown", 5) == 0);
    FUZZ_CHECK(htkv_batch_put(b, "elder", 5, "black", 5) == 0);
    FUZZ_CHECK(htkv_batch_delete(b, "cherry", 6) == 0);
    FUZZ_CHECK(htkv_write(db, b) == 0);
    htkv_batch_destroy(b);
}

/* Encode a record at offset @p *off of segment 1 into @p seg, advancing *off. */
static void
segment_append(unsigned char *seg, uint64_t *off, uint8_t type, uint8_t flags, uint64_t version,
               const char *key, const void *val, uint32_t val_len)
{
    uint32_t key_len = key != NULL ? (uint32_t)strlen(key) : 0;
    *off += htkv_rec_encode(seg + *off, 1, *off, type, flags, version, key, key_len, val, val_len);
}

/*
 * Segments the store above does not write in a few hundred bytes, made of its @p len bytes plus
 * records encoded as shard.c writes them: a SEAL (what rotation leaves at the end of a full
 * segment), and a committed part of a batch that names a second part nowhere to be found.
 */
static void
segment_seeds_extended(const unsigned char *s, size_t len)
{
    uint64_t records = 0;
    struct rec_hdr h;
    for (uint64_t off = SEG_DATA_OFF; off < len; off += htkv_rec_size(h.key_len, h.val_len)) {
        FUZZ_CHECK(htkv_rec_check(s + off, len - off, 1, off, 1u << 20, &h) == 0);
        records++;
    }
    size_t cap = len + 256;
    unsigned char *seg = calloc(1, cap);
    FUZZ_CHECK(seg != NULL);
    memcpy(seg, s, len);

    uint64_t off = len;
    unsigned char seal[REC_SEAL_PAYLOAD];
    htkv_store64(seal, records);
    htkv_store64(seal + 8, off);
    segment_append(seg, &off, REC_SEAL, 0, 1, NULL, seal, sizeof(seal));
    FUZZ_CHECK(off <= cap);
    segment_seed("sealed-write", 0x20, seg + SEG_DATA_OFF, off - SEG_DATA_OFF);

    off = len;
    unsigned char begin[REC_BEGIN_PAYLOAD] = { 0 };
    htkv_store32(begin, 1);     /* op_count */
    htkv_store32(begin + 4, 2); /* part_count: the other part is in no segment */
    segment_append(seg, &off, REC_BATCH_BEGIN, 0, 100, NULL, begin, sizeof(begin));
    segment_append(seg, &off, REC_SET, REC_F_BATCH, 100, "fig", "purple", 6);
    segment_append(seg, &off, REC_BATCH_COMMIT, 0, 100, NULL, begin, REC_COMMIT_PAYLOAD);
    FUZZ_CHECK(off <= cap);
    segment_seed("batch-missing-part", 0x00, seg + SEG_DATA_OFF, off - SEG_DATA_OFF);
    free(seg);
}

static void
segment_seeds(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seed-segment") == 0);
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.shard_count = 1;
    cfg.sync_mode = HTKV_SYNC_NEVER;
    cfg.log_fn = quiet_log;
    htkv_db *db;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    segment_fill(db);
    FUZZ_CHECK(htkv_close(db) == 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/shard-000", dir);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    unsigned char *s;
    size_t len;
    FUZZ_CHECK(fuzz_read_file(fd, "000000000001.seg", &s, &len) == 0);
    close(fd);
    /* The file is padded with zeros to a page: keep the records (8-aligned) only. */
    while (len > SEG_DATA_OFF && s[len - 1] == 0) {
        len--;
    }
    len = htkv_align_up(len, REC_ALIGN);
    FUZZ_CHECK(len > SEG_DATA_OFF);
    const unsigned char *recs = s + SEG_DATA_OFF;
    size_t recs_len = len - SEG_DATA_OFF;
    segment_seed("records", 0x00, recs, recs_len);
    segment_seed("whole-file", 0x01, s, len);
    segment_seed("records-write", 0x20, recs, recs_len);
    segment_seed("torn-tail-write", 0x20, recs, recs_len - 5);
    segment_seed("records-read-only-skip", 0x06, recs, recs_len);
    segment_seeds_extended(s, len);
    free(s);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

/* ---- fuzz_hint: mode u8 | hint file ---------------------------------------------------------- */

/*
 * Entry @p i of hint @p h (its bytes after the mode byte, @p len long) with field byte @p at
 * changed by @p x, in a seed of its own, FIXUP mode: the harness makes the CRCs agree again.
 */
static void
hint_seed_lie(const char *name, unsigned target, const unsigned char *h, size_t len, uint64_t i,
              size_t at, unsigned char x)
{
    FUZZ_CHECK(HINT_HDR_BYTES + (i + 1) * HINT_ENT_BYTES <= len);
    unsigned char *buf = malloc(1 + len);
    FUZZ_CHECK(buf != NULL);
    buf[0] = (unsigned char)((target << HS_MODE_TARGET_SHIFT) | HS_MODE_FIXUP);
    memcpy(buf + 1, h, len);
    buf[1 + HINT_HDR_BYTES + i * HINT_ENT_BYTES + at] ^= x;
    seed_write("fuzz_hint", name, buf, 1 + len);
    free(buf);
}

/*
 * The hint of every segment of the fuzz_hint store as written by the engine: once as it is
 * (mode 0) and once with the harness's checksum fix-up and a reopen (a no-op fix-up on a valid
 * hint), the other segments without hints. Then two hints that describe a record wrongly with
 * checksums that agree: the first entry of the first segment with a hash bit flipped
 * (lie-hash), and the first DEL entry called a SET (regress-del-named-set: read as the deleted
 * key with an empty value before reads compared the record's type).
 */
static void
hint_seeds(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seed-hint") == 0);
    struct hs_model m;
    hs_build(dir, &m);
    struct hs_seg segs[HS_SEGS_MAX];
    unsigned n = hs_segments(dir, segs);
    FUZZ_CHECK(n <= HS_MODE_TARGET_MASK + 1);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    bool del_done = false;
    for (unsigned i = 0; i < n; i++) {
        unsigned char *h;
        size_t len;
        FUZZ_CHECK(fuzz_read_file(fd, segs[i].hint, &h, &len) == 0);
        unsigned char *buf = malloc(1 + len);
        FUZZ_CHECK(buf != NULL);
        memcpy(buf + 1, h, len);
        char name[32];
        buf[0] = (unsigned char)(i << HS_MODE_TARGET_SHIFT);
        snprintf(name, sizeof(name), "seg%u", i);
        seed_write("fuzz_hint", name, buf, 1 + len);
        buf[0] |= HS_MODE_FIXUP | HS_MODE_BARE | HS_MODE_REOPEN;
        snprintf(name, sizeof(name), "seg%u-fixup-bare-reopen", i);
        seed_write("fuzz_hint", name, buf, 1 + len);
        free(buf);
        if (i == 0) {
            hint_seed_lie("lie-hash", i, h, len, 0, 0, 0x01);
        }
        for (uint64_t e = 0; !del_done && e < htkv_load64(h + 24); e++) {
            unsigned char *type = h + HINT_HDR_BYTES + e * HINT_ENT_BYTES + 28;
            if (*type == REC_DEL) {
                hint_seed_lie("regress-del-named-set", i, h, len, e, 28, REC_DEL ^ REC_SET);
                del_done = true;
            }
        }
        free(h);
    }
    FUZZ_CHECK(del_done);
    close(fd);
    hs_model_free(&m);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

/* ---- fuzz_apikey_token: mode u8 | token, or mode u8 | id | secret | edits -------------------- */

static void
token_seeds(void)
{
    unsigned char pair[CODEC_ID_BYTES + CODEC_SECRET_BYTES];
    for (size_t i = 0; i < sizeof(pair); i++) {
        pair[i] = (unsigned char)(i * 37 + 11);
    }
    char tok[1 + HTKV_AUTH_TOKEN_SIZE];
    tok[0] = 0x00; /* RAW */
    htkv_apikey_token_format(pair, pair + CODEC_ID_BYTES, tok + 1);
    seed_write("fuzz_apikey_token", "valid", tok, 1 + HTKV_AUTH_TOKEN_LEN);
    tok[HTKV_AUTH_TOKEN_LEN] ^= 0x01; /* last checksum digit */
    seed_write("fuzz_apikey_token", "bad-checksum", tok, 1 + HTKV_AUTH_TOKEN_LEN);
    tok[HTKV_AUTH_TOKEN_LEN] ^= 0x01;
    seed_write("fuzz_apikey_token", "bad-truncated", tok, HTKV_AUTH_TOKEN_LEN);

    unsigned char ed[1 + sizeof(pair) + 8];
    ed[0] = 0x01; /* EDITED */
    memcpy(ed + 1, pair, sizeof(pair));
    seed_write("fuzz_apikey_token", "edited-none", ed, 1 + sizeof(pair));
    size_t n = 1 + sizeof(pair);
    ed[n++] = 0; /* set character 10 to 'A' (upper-case hex is refused) */
    ed[n++] = 10;
    ed[n++] = 'A';
    ed[n++] = 2; /* append 'f' */
    ed[n++] = 'f';
    seed_write("fuzz_apikey_token", "edited-bad", ed, n);
}

/* ---- fuzz_kix: mode u8 | key index file --------------------------------------------------- */

/* The file at @p path as two seeds of @p target, "NAME-0" and "NAME-1": a mode byte (0, then 1:
 * the target's fix-up, a no-op on a valid file) and the file's bytes. */
static void
seed_file_modes(const char *target, const char *name, const char *path)
{
    unsigned char *f;
    size_t len;
    FUZZ_CHECK(fuzz_read_file(AT_FDCWD, path, &f, &len) == 0);
    unsigned char *buf = malloc(1 + len);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf + 1, f, len);
    for (unsigned mode = 0; mode < 2; mode++) {
        char seed[64];
        snprintf(seed, sizeof(seed), "%s-%u", name, mode);
        buf[0] = (unsigned char)mode;
        seed_write(target, seed, buf, 1 + len);
    }
    free(buf);
    free(f);
}

/* One key index of @p n keys (key length @p klen, or long every 50th key when @p long_keys),
 * seeded as written (mode 0) and with the harness's fix-up (a no-op on a valid file). */
static void
kix_seed(const char *dir, const char *name, size_t n, uint32_t klen, bool long_keys)
{
    struct kix_ent *e = calloc(n + 1, sizeof(*e));
    unsigned char *keys = calloc(n + 1, 20000);
    FUZZ_CHECK(e != NULL && keys != NULL);
    for (size_t i = 0; i < n; i++) {
        unsigned char *k = keys + i * 20000;
        uint32_t len = long_keys && i % 50 == 0 ? 5000 + (uint32_t)i : klen;
        for (uint32_t j = 0; j < len; j++) {
            k[j] = (unsigned char)('a' + (i * 7 + j * 3) % 26);
        }
        snprintf((char *)k, 12, "%011zu", i);
        e[i] = (struct kix_ent){ .key = k,
                                 .key_len = len,
                                 .type = i % 9 == 0 ? REC_DEL : REC_SET,
                                 .val_len = (uint32_t)(i % 200),
                                 .off = SEG_DATA_OFF + 512 * (uint32_t)i,
                                 .version = 10 + i,
                                 .hash = htkv_hash(k, len, 42) };
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.kix", dir, name);
    struct kix_desc d = { .shard = 1, .seg_id = 7, .seg_tail = 1u << 20 };
    FUZZ_CHECK(htkv_kix_write(path, &d, e, n) == 0);
    seed_file_modes("fuzz_kix", name, path);
    free(keys);
    free(e);
}

/* ---- fuzz_closing: mode u8 | close.state ------------------------------------------------- */

/* A close.state of @p n segments, seeded as written (mode 0) and with the harness's fix-up. */
static void
closing_seed(const char *dir, uint32_t n)
{
    struct closing c = {
        .shard = 1, .man_number = 3, .man_bytes = 4096, .applied = 900, .nsegs = n
    };
    c.segs = calloc(n + 1, sizeof(*c.segs));
    FUZZ_CHECK(c.segs != NULL);
    for (uint32_t i = 0; i < n; i++) {
        c.segs[i] = (struct closing_seg){ .id = 4 + 4 * i,
                                          .tail = 65536 - 64 * i,
                                          .records = 400 + i,
                                          .max_version = 100 * (i + 1),
                                          .live_bytes = 30000,
                                          .dead_bytes = 1000 * i,
                                          .kix_crc = 0x9E3779B9u * (i + 1),
                                          .flags = i + 1 < n ? CLOSING_KIX | CLOSING_HINT : 0,
                                          .heads_vals = 300 + i,
                                          .heads_dels = i };
    }
    FUZZ_CHECK(htkv_closing_write(dir, &c) == 0);
    char path[512], name[32];
    snprintf(path, sizeof(path), "%s/%s", dir, CLOSING_NAME);
    snprintf(name, sizeof(name), "segs%u", n);
    seed_file_modes("fuzz_closing", name, path);
    free(c.segs);
}

static void
closing_seeds(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seeds-closing") == 0);
    closing_seed(dir, 0);
    closing_seed(dir, 1);
    closing_seed(dir, 5);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

static void
kix_seeds(void)
{
    char dir[256];
    FUZZ_CHECK(fuzz_tmpdir_make(dir, sizeof(dir), "seed-kix") == 0);
    kix_seed(dir, "empty", 0, 8, false);
    kix_seed(dir, "small", 12, 16, false);
    kix_seed(dir, "pages", 400, 24, false);
    kix_seed(dir, "long-keys", 120, 16, true);
    FUZZ_CHECK(fuzz_rmrf(dir) == 0);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR   (writes DIR/fuzz_<target>/<seed>)\n", argv[0]);
        return 2;
    }
    out_root = argv[1];
    FUZZ_CHECK(mkdir(out_root, 0755) == 0 || errno == EEXIST);
    rec_seeds();
    manifest_seed_store();
    manifest_seed_edits();
    segment_seeds();
    hint_seeds();
    kix_seeds();
    closing_seeds();
    token_seeds();
    return 0;
}
