/*
 * fuzz_hint_store.h - the store that fuzz_hint builds around its input, shared with
 * fuzz_make_seeds so that the seeds hold the exact hint bytes the engine writes for it.
 *
 * Design. hs_build() creates a store of HS_SHARDS shards (max_segment_bytes 64 KiB, hint files
 * on, no background compaction) whose hash seed is replaced right after creation by a fixed one,
 * then applies a fixed list of writes: values of HS_BIG_BYTES until one shard has rotated (so
 * that a sealed segment with a SEAL record exists), then small puts, overwrites, deletes and two
 * batches, and closes it, which writes a hint beside every segment. The same writes go into an
 * independent model (struct hs_model): for each key its current value (or none) and every value
 * it ever held. Nothing depends on the time or on randomness, so every build gives the same
 * files.
 *
 * hs_segments() lists the store's segments in a fixed order (shard, then file name), the order
 * in which fuzz_hint numbers them.
 *
 * Invariants
 *   1. Two builds give byte-identical segment and hint files.
 *   2. The model is filled only from the writes issued, never from reading the store.
 */
#ifndef HTKV_TESTS_FUZZ_HINT_STORE_H
#define HTKV_TESTS_FUZZ_HINT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

#include "engine/crc32c.h"
#include "engine/manifest.h"
#include "tests/fuzz/fuzz_util.h"

/* The mode byte of a fuzz_hint input (its file comment describes each bit). */
#define HS_MODE_FIXUP 0x01u
#define HS_MODE_TARGET_SHIFT 1
#define HS_MODE_TARGET_MASK 0x07u
#define HS_MODE_BARE 0x10u
#define HS_MODE_RDONLY 0x20u
#define HS_MODE_REOPEN 0x40u

#define HS_SHARDS 2u
#define HS_SEG_BYTES (64u << 10)
#define HS_SEED 0x6a09e667f3bcc908ull
#define HS_BIG_BYTES 6000u
#define HS_BIG_MAX 40
#define HS_KEYS_MAX 64
#define HS_HIST_MAX 128
#define HS_SEGS_MAX 8
#define HS_NAME_MAX 32

struct hs_val {
    unsigned char *bytes; /* malloc'ed; NULL when len == 0 */
    size_t len;
};

struct hs_key {
    char name[HS_NAME_MAX];
    bool live;
    struct hs_val cur;
    struct hs_val hist[8]; /* every value the key held, oldest first */
    unsigned nhist;
};

struct hs_model {
    struct hs_key keys[HS_KEYS_MAX];
    unsigned nkeys;
    uint64_t live;
};

/* One segment of the built store: "shard-SSS/NNNNNNNNNNNN.seg" and its hint's name. */
struct hs_seg {
    uint32_t shard;
    char seg[64];
    char hint[64];
};

static inline void
hs_quiet_log(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)msg;
    (void)ctx;
}

static inline void
hs_config(htkv_config *cfg, const char *dir)
{
    htkv_config_init(cfg);
    cfg->data_dir = dir;
    cfg->shard_count = HS_SHARDS;
    cfg->max_segment_bytes = HS_SEG_BYTES;
    cfg->sync_mode = HTKV_SYNC_NEVER;
    cfg->compaction_interval_ms = 0;
    cfg->emit_snapshot_after_compaction = 0;
    cfg->hint_files = 1;
    cfg->log_fn = hs_quiet_log;
}

/* Value bytes number @p tag of @p len bytes (a pattern that differs between tags). */
static inline struct hs_val
hs_val_make(unsigned tag, size_t len)
{
    struct hs_val v = { NULL, len };
    if (len > 0) {
        v.bytes = malloc(len);
        FUZZ_CHECK(v.bytes != NULL);
        for (size_t i = 0; i < len; i++) {
            v.bytes[i] = (unsigned char)('a' + (tag * 7u + i * 3u) % 26u);
        }
    }
    return v;
}

static inline struct hs_key *
hs_key_get(struct hs_model *m, const char *name)
{
    for (unsigned i = 0; i < m->nkeys; i++) {
        if (strcmp(m->keys[i].name, name) == 0) {
            return &m->keys[i];
        }
    }
    FUZZ_CHECK(m->nkeys < HS_KEYS_MAX);
    FUZZ_CHECK(strlen(name) < HS_NAME_MAX);
    struct hs_key *k = &m->keys[m->nkeys++];
    memset(k, 0, sizeof(*k));
    snprintf(k->name, sizeof(k->name), "%s", name);
    return k;
}

/* Model of an acknowledged put of @p v (owned by the model from now on). */
static inline void
hs_model_put(struct hs_model *m, const char *name, struct hs_val v)
{
    struct hs_key *k = hs_key_get(m, name);
    FUZZ_CHECK(k->nhist < sizeof(k->hist) / sizeof(k->hist[0]));
    k->hist[k->nhist++] = v;
    if (!k->live) {
        m->live++;
    }
    k->live = true;
    k->cur = v;
}

static inline void
hs_model_del(struct hs_model *m, const char *name)
{
    struct hs_key *k = hs_key_get(m, name);
    if (k->live) {
        m->live--;
    }
    k->live = false;
    k->cur = (struct hs_val){ NULL, 0 };
}

static inline void
hs_model_free(struct hs_model *m)
{
    for (unsigned i = 0; i < m->nkeys; i++) {
        for (unsigned j = 0; j < m->keys[i].nhist; j++) {
            free(m->keys[i].hist[j].bytes);
        }
    }
    memset(m, 0, sizeof(*m));
}

static inline void
hs_put(htkv_db *db, struct hs_model *m, const char *key, unsigned tag, size_t len)
{
    struct hs_val v = hs_val_make(tag, len);
    FUZZ_CHECK(htkv_put(db, key, strlen(key), v.bytes != NULL ? v.bytes : (void *)"", len) == 0);
    hs_model_put(m, key, v);
}

static inline void
hs_del(htkv_db *db, struct hs_model *m, const char *key)
{
    FUZZ_CHECK(htkv_delete(db, key, strlen(key)) == 0);
    hs_model_del(m, key);
}

/* Give the INIT edit (the manifest's first) of store @p dir the hash seed HS_SEED. */
static inline void
hs_fix_seed(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    unsigned char *cur, *m;
    size_t cur_len, len;
    FUZZ_CHECK(fuzz_read_file(fd, "CURRENT", &cur, &cur_len) == 0);
    FUZZ_CHECK(cur_len > 1);
    FUZZ_CHECK(cur_len < 64);
    FUZZ_CHECK(cur[cur_len - 1] == '\n');
    char name[64];
    memcpy(name, cur, cur_len - 1);
    name[cur_len - 1] = '\0';
    free(cur);
    FUZZ_CHECK(fuzz_read_file(fd, name, &m, &len) == 0);
    size_t e = MAN_HDR_BYTES;
    FUZZ_CHECK(len >= e + MAN_EDIT_HDR + 16);
    FUZZ_CHECK(htkv_load32(m + e + 4) == 16);
    FUZZ_CHECK(htkv_load32(m + e + 8) == MAN_INIT);
    htkv_store64(m + e + MAN_EDIT_HDR + 8, HS_SEED);
    htkv_store32(m + e, htkv_crc32c(0, m + e + 4, 8 + 16));
    FUZZ_CHECK(fuzz_write_file(fd, name, m, len) == 0);
    free(m);
    close(fd);
}

/* Build the store in the empty directory @p dir and fill @p m with its contents. */
static inline void
hs_build(const char *dir, struct hs_model *m)
{
    memset(m, 0, sizeof(*m));
    htkv_config cfg;
    hs_config(&cfg, dir);
    htkv_db *db;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);
    FUZZ_CHECK(htkv_close(db) == 0);
    hs_fix_seed(dir);
    cfg.create_if_missing = 0;
    FUZZ_CHECK(htkv_open(&cfg, &db) == 0);

    /* Large values until a shard has rotated: HS_SHARDS active segments plus a sealed one. */
    struct htkv_stats st;
    int big = 0;
    do {
        FUZZ_CHECK(big < HS_BIG_MAX);
        char key[HS_NAME_MAX];
        snprintf(key, sizeof(key), "big-%02d", big);
        hs_put(db, m, key, (unsigned)big, HS_BIG_BYTES);
        big++;
        FUZZ_CHECK(htkv_stats(db, &st) == 0);
    } while (st.segments < HS_SHARDS + 1);

    hs_put(db, m, "apple", 100, 3);
    hs_put(db, m, "banana", 101, 6);
    hs_put(db, m, "cherry", 102, 0);
    hs_put(db, m, "apple", 103, 5);
    hs_del(db, m, "banana");
    hs_put(db, m, "big-00", 104, 9); /* its older, larger value is in an earlier segment */
    hs_del(db, m, "big-01");

    /* A batch over several keys (and so, likely, both shards), then one of a single put. */
    htkv_batch *b;
    FUZZ_CHECK(htkv_batch_create(&b) == 0);
    struct hs_val date = hs_val_make(105, 5), elder = hs_val_make(106, 5);
    struct hs_val fig = hs_val_make(107, 0), big2 = hs_val_make(108, 40);
    FUZZ_CHECK(htkv_batch_put(b, "date", 4, date.bytes, date.len) == 0);
    FUZZ_CHECK(htkv_batch_put(b, "elder", 5, elder.bytes, elder.len) == 0);
    FUZZ_CHECK(htkv_batch_delete(b, "cherry", 6) == 0);
    FUZZ_CHECK(htkv_batch_put(b, "fig", 3, "", 0) == 0);
    FUZZ_CHECK(htkv_batch_put(b, "big-02", 6, big2.bytes, big2.len) == 0);
    FUZZ_CHECK(htkv_write(db, b) == 0);
    hs_model_put(m, "date", date);
    hs_model_put(m, "elder", elder);
    hs_model_del(m, "cherry");
    hs_model_put(m, "fig", fig);
    hs_model_put(m, "big-02", big2);
    htkv_batch_clear(b);
    struct hs_val grape = hs_val_make(109, 6);
    FUZZ_CHECK(htkv_batch_put(b, "grape", 5, grape.bytes, grape.len) == 0);
    FUZZ_CHECK(htkv_write(db, b) == 0);
    hs_model_put(m, "grape", grape);
    htkv_batch_destroy(b);

    hs_put(db, m, "apple", 110, 4);
    hs_put(db, m, "kiwi", 111, 0);
    FUZZ_CHECK(htkv_stats(db, &st) == 0);
    FUZZ_CHECK(st.live_keys == m->live);
    FUZZ_CHECK(htkv_close(db) == 0);
}

static inline int
hs_seg_cmp(const void *a, const void *b)
{
    const struct hs_seg *x = a, *y = b;
    if (x->shard != y->shard) {
        return x->shard < y->shard ? -1 : 1;
    }
    return strcmp(x->seg, y->seg);
}

/* The segments of the store in @p dir, in shard and name order; returns their count. */
static inline unsigned
hs_segments(const char *dir, struct hs_seg *out)
{
    unsigned n = 0;
    for (uint32_t s = 0; s < HS_SHARDS; s++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/shard-%03u", dir, (unsigned)s);
        DIR *d = opendir(path);
        FUZZ_CHECK(d != NULL);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t len = strlen(de->d_name);
            if (de->d_name[0] == '.' || len < 5 || len > 40 ||
                strcmp(de->d_name + len - 4, ".seg") != 0) {
                continue;
            }
            FUZZ_CHECK(n < HS_SEGS_MAX);
            out[n].shard = s;
            snprintf(out[n].seg, sizeof(out[n].seg), "shard-%03u/%s", (unsigned)s, de->d_name);
            snprintf(out[n].hint, sizeof(out[n].hint), "shard-%03u/%.*s.hint", (unsigned)s,
                     (int)(len - 4), de->d_name);
            n++;
        }
        closedir(d);
    }
    qsort(out, n, sizeof(*out), hs_seg_cmp);
    return n;
}

#endif
