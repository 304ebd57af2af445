/*
 * test_htkvctl_repair.c - drive `htkvctl repair` (HTKVCTL_PATH) against damaged copies of one
 * closed store (2 shards, 64 KiB segments, puts, overwrites and deletes around a compaction
 * pass): CURRENT removed, every MANIFEST removed, the manifest cut to half or zeroed, the shard
 * directories swapped, a bit flipped in the middle of a segment (damage followed by valid
 * records) and one in a segment's header. For each: htkv_open refuses the store (HTKV_ECORRUPT),
 * `repair --dry-run` (text and JSON) changes no byte of the tree, `repair` exits 0, lost/ holds
 * what it moved away, the store opens and serves the model (for the damaged record: every key but
 * its own), `htkvctl verify` exits 0, and a second repair rewrites nothing. Also: a store open in
 * this process is refused (exit 3, nothing changed), a missing or empty directory is refused
 * without creating anything, and a store whose seed nothing names (no manifest, segments without
 * identity) is refused unchanged.
 */
#include "tests/support/testutil.h"
#include "tests/support/tool.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/crc32c.h"
#include "engine/internal.h"
#include "engine/rec.h"
#include "engine/seg.h"

#ifndef HTKVCTL_PATH
#error "HTKVCTL_PATH must name the htkvctl binary"
#endif

#define NKEYS 2500u
#define VAL_MAX 256u

/* ---- the model and the store ----------------------------------------------------------------- */

static int model_gen[NKEYS];      /* generation of the last acknowledged value; 0 = never */
static bool model_deleted[NKEYS]; /* the last acknowledged write was a delete */
static char *base_dir;
static htkv_config base_cfg;

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "rk-%05u", i);
}

static size_t
val_of(unsigned i, int gen, unsigned char *buf)
{
    size_t n = 20 + ((size_t)i * 13 + (size_t)gen * 7) % 200;
    tu_fill(buf, n, (uint64_t)i * 8 + (uint64_t)gen);
    return n;
}

static void
put_gen(htkv_db *db, unsigned i, int gen)
{
    char key[16];
    unsigned char val[VAL_MAX];
    size_t n = val_of(i, gen, val);
    assert_int_equal(htkv_put(db, key, key_of(i, key), val, n), 0);
    model_gen[i] = gen;
    model_deleted[i] = false;
}

static void
del_key(htkv_db *db, unsigned i)
{
    char key[16];
    int rc = htkv_delete(db, key, key_of(i, key));
    assert_int_equal(rc, model_deleted[i] ? HTKV_ENOTFOUND : 0);
    model_deleted[i] = true;
}

static int
setup(void **state)
{
    (void)state;
    base_dir = tu_tmpdir("repair-base");
    tu_config(&base_cfg, base_dir, HTKV_SYNC_NEVER);
    base_cfg.shard_count = 2;
    base_cfg.max_segment_bytes = 64u << 10;
    base_cfg.compaction_interval_ms = 0;
    base_cfg.emit_snapshot_after_compaction = 0;
    htkv_db *db = tu_open(&base_cfg);
    for (unsigned i = 0; i < NKEYS; i++) {
        put_gen(db, i, 1);
    }
    for (unsigned i = 0; i < 1200; i++) {
        put_gen(db, i, 2);
    }
    for (unsigned i = 0; i < NKEYS; i += 5) {
        del_key(db, i);
    }
    assert_int_equal(htkv_compact_now(db), 0);
    for (unsigned i = 100; i < 900; i++) {
        put_gen(db, i, 3);
    }
    for (unsigned i = 1; i < NKEYS; i += 11) {
        del_key(db, i);
    }
    assert_int_equal(htkv_close(db), 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    tu_rmrf(base_dir);
    free(base_dir);
    return 0;
}

/* Every key reads its model value, except @p skip (-1: none). */
static void
check_model(const char *dir, int skip)
{
    htkv_config cfg = base_cfg;
    cfg.data_dir = dir;
    cfg.create_if_missing = 0;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "open after repair: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
    }
    assert_int_equal(rc, 0);
    unsigned wrong = 0;
    for (unsigned i = 0; i < NKEYS; i++) {
        if ((int)i == skip) {
            continue;
        }
        char key[16];
        unsigned char want[VAL_MAX], got[VAL_MAX];
        size_t kl = key_of(i, key), n = 0;
        rc = htkv_get(db, key, kl, got, sizeof(got), &n);
        bool ok;
        if (model_deleted[i] || model_gen[i] == 0) {
            ok = rc == HTKV_ENOTFOUND;
        } else {
            size_t wn = val_of(i, model_gen[i], want);
            ok = rc == 0 && n == wn && memcmp(want, got, n) == 0;
        }
        if (!ok && wrong++ < 5) {
            fprintf(stderr, "%s: %s (gen %d%s)\n", key, rc == 0 ? "wrong value" : htkv_strerror(rc),
                    model_gen[i], model_deleted[i] ? ", deleted" : "");
        }
    }
    assert_int_equal(htkv_close(db), 0);
    assert_int_equal(wrong, 0);
}

/* ---- running the binary (tests/support/tool.h) ---------------------------------------------- */

#define RUN(r, ...) tu_tool_run((r), HTKVCTL_PATH, TU_ARGS(__VA_ARGS__), 0)

/* ---- files ---------------------------------------------------------------------------------- */

/* Names of the top-level entries of @p dir that start with @p prefix; returns the count. */
static size_t
top_names(const char *dir, const char *prefix, char (*out)[64], size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && n < cap) {
            snprintf(out[n++], 64, "%.63s", de->d_name);
        }
    }
    closedir(d);
    return n;
}

/* ---- damage --------------------------------------------------------------------------------- */

/* What a case did to the store, for its checks afterwards. */
struct dmg {
    char lost[8][128]; /* files lost/ must hold after the repair */
    size_t nlost;
    int skip_key;          /* the key whose record was damaged, -1: none */
    const char *rewritten; /* what the report says of the rewritten segment, or NULL */
};

static void
expect_lost(struct dmg *d, const char *rel)
{
    assert_true(d->nlost < 8);
    snprintf(d->lost[d->nlost++], sizeof(d->lost[0]), "lost/%.120s", rel);
}

static void
manifest_names(const char *dir, char (*out)[64], size_t *n)
{
    *n = top_names(dir, "MANIFEST-", out, 8);
    assert_true(*n >= 1);
}

static void
dmg_rm_current(const char *dir, struct dmg *d)
{
    char man[8][64];
    size_t n;
    manifest_names(dir, man, &n);
    for (size_t i = 0; i < n; i++) {
        expect_lost(d, man[i]);
    }
    char p[4200];
    snprintf(p, sizeof(p), "%s/CURRENT", dir);
    assert_int_equal(unlink(p), 0);
}

static void
dmg_rm_manifests(const char *dir, struct dmg *d)
{
    char man[8][64];
    size_t n;
    manifest_names(dir, man, &n);
    for (size_t i = 0; i < n; i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s", dir, man[i]);
        assert_int_equal(unlink(p), 0);
    }
    expect_lost(d, "CURRENT");
}

static void
dmg_half_manifest(const char *dir, struct dmg *d)
{
    char man[8][64];
    size_t n;
    manifest_names(dir, man, &n);
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s", dir, man[0]);
    long long len = tu_file_size(p);
    assert_true(len > 64);
    assert_int_equal(tu_truncate(p, len / 2), 0);
    expect_lost(d, man[0]);
    expect_lost(d, "CURRENT");
}

static void
dmg_zero_manifest(const char *dir, struct dmg *d)
{
    char man[8][64];
    size_t n;
    manifest_names(dir, man, &n);
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s", dir, man[0]);
    long long len = tu_file_size(p);
    assert_true(len > 0);
    void *zeros = calloc(1, (size_t)len);
    assert_non_null(zeros);
    assert_int_equal(tu_write_at(p, 0, zeros, (size_t)len), 0);
    free(zeros);
    expect_lost(d, man[0]);
    expect_lost(d, "CURRENT");
}

static void
dmg_swap_shards(const char *dir, struct dmg *d)
{
    char a[4200], b[4200], t[4200];
    snprintf(a, sizeof(a), "%s/shard-000", dir);
    snprintf(b, sizeof(b), "%s/shard-001", dir);
    snprintf(t, sizeof(t), "%s/shard-tmp", dir);
    assert_int_equal(rename(a, t), 0);
    assert_int_equal(rename(b, a), 0);
    assert_int_equal(rename(t, b), 0);
    expect_lost(d, "CURRENT");
}

/* A bit of a value in the middle record of shard 0's middle segment (not its last one). */
static void
dmg_flip_segment(const char *dir, struct dmg *d)
{
    static char segs[64][4096];
    size_t n = tu_shard_segments(dir, 0, segs, 64);
    assert_true(n >= 3);
    const char *path = segs[n / 2 - 1 < n - 2 ? n / 2 - 1 : n - 2];
    enum { CAP = 4096 };
    struct tu_rec *recs = calloc(CAP, sizeof(*recs));
    assert_non_null(recs);
    size_t nr = tu_seg_scan(path, recs, CAP);
    assert_true(nr > 8 && nr <= CAP);
    size_t k = nr / 2;
    while (k < nr && !(recs[k].type == REC_SET && recs[k].flags == 0 && recs[k].val_len > 4)) {
        k++;
    }
    assert_true(k + 2 < nr); /* valid records follow the damage */
    const struct tu_rec *rec = &recs[k];
    char key[16];
    memcpy(key, rec->key, rec->key_len);
    key[rec->key_len] = '\0';
    assert_int_equal(sscanf(key, "rk-%05d", &d->skip_key), 1);
    assert_int_equal(tu_flip_bit(path, rec->off + REC_HDR_BYTES + rec->key_len + 2, 3), 0);
    free(recs);
    const char *rel = strstr(path, "shard-000/");
    assert_non_null(rel);
    expect_lost(d, rel);
    d->rewritten = "rewritten as shard-000/";
}

/* A bit of the header of shard 1's middle segment: its records still check against its name. */
static void
dmg_flip_header(const char *dir, struct dmg *d)
{
    static char segs[64][4096];
    size_t n = tu_shard_segments(dir, 1, segs, 64);
    assert_true(n >= 3);
    const char *path = segs[n / 2];
    assert_int_equal(tu_flip_bit(path, 17, 0), 0); /* the segment id in the header */
    const char *rel = strstr(path, "shard-001/");
    assert_non_null(rel);
    expect_lost(d, rel);
    d->rewritten = "rewritten as shard-001/";
}

/* ---- the cases ------------------------------------------------------------------------------ */

static void
repair_case(const char *what, void (*damage)(const char *, struct dmg *))
{
    tu_context("repair: %s", what);
    char *dir = tu_tmpdir("repair-case");
    tu_copy_store(base_dir, dir);
    struct dmg d = { .skip_key = -1 };
    damage(dir, &d);

    /* The engine refuses it (every record checked: no hints). */
    htkv_config cfg = base_cfg;
    cfg.data_dir = dir;
    cfg.create_if_missing = 0;
    cfg.hint_files = 0;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != HTKV_ECORRUPT) {
        fprintf(stderr, "%s: open gave %s (%s)\n", what, htkv_strerror(rc), htkv_last_error());
    }
    assert_int_equal(rc, HTKV_ECORRUPT);
    assert_null(db);

    /* A dry run reports the plan and changes nothing. */
    struct tu_tree before = tu_tree_take_all(dir);
    struct tu_run r;
    RUN(&r, "repair", "--dry-run", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "dry run: nothing was changed");
    tu_expect_contains(r.out, "new manifest: MANIFEST-");
    tu_run_free(&r);
    RUN(&r, "--json", "repair", "--dry-run", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "\"dry_run\": true");
    tu_expect_contains(r.out, "\"new_manifest\": {");
    tu_run_free(&r);
    char ctx[300];
    snprintf(ctx, sizeof(ctx), "%s: tree changed by `repair --dry-run`", what);
    tu_tree_expect_unchanged(&before, dir, ctx);
    tu_tree_free(&before);

    /* The repair. */
    RUN(&r, "repair", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "repaired");
    if (d.rewritten != NULL) {
        tu_expect_contains(r.out, d.rewritten);
    }
    tu_run_free(&r);
    for (size_t i = 0; i < d.nlost; i++) {
        if (!tu_exists(dir, d.lost[i])) {
            fprintf(stderr, "%s: %s missing after the repair\n", what, d.lost[i]);
        }
        assert_true(tu_exists(dir, d.lost[i]));
    }
    char names[8][64];
    assert_int_equal(top_names(dir, "MANIFEST-", names, 8), 1);
    assert_true(tu_exists(dir, "CURRENT"));

    check_model(dir, d.skip_key);

    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);

    /* A second repair of the repaired store changes what it serves in no way. */
    RUN(&r, "--json", "repair", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "\"segments_rewritten\": 0");
    tu_run_free(&r);
    check_model(dir, d.skip_key);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: CURRENT removed: refused, repaired exactly, the manifest kept in lost/. */
static void
test_repair_missing_current(void **state)
{
    (void)state;
    repair_case("CURRENT removed", dmg_rm_current);
}

/* Goal: every MANIFEST removed: the segment headers tell the store; repaired exactly. */
static void
test_repair_missing_manifest(void **state)
{
    (void)state;
    repair_case("MANIFEST removed", dmg_rm_manifests);
}

/* Goal: the manifest cut to half its length (edits lost): repaired exactly. */
static void
test_repair_truncated_manifest(void **state)
{
    (void)state;
    repair_case("MANIFEST cut to half", dmg_half_manifest);
}

/* Goal: the manifest zeroed: repaired exactly from the segment headers. */
static void
test_repair_zeroed_manifest(void **state)
{
    (void)state;
    repair_case("MANIFEST zeroed", dmg_zero_manifest);
}

/* Goal: the two shard directories swapped: each segment goes back to its shard; exact. */
static void
test_repair_swapped_shard_directories(void **state)
{
    (void)state;
    repair_case("shard directories swapped", dmg_swap_shards);
}

/* Goal: a bit flipped in a record in the middle of a segment: the segment's other records are
 * rewritten into a new segment, the damaged file goes to lost/, only the damaged key may
 * differ. */
static void
test_repair_damaged_segment(void **state)
{
    (void)state;
    repair_case("a segment damaged in the middle", dmg_flip_segment);
}

/* Goal: the header of a segment damaged: its records, which check against the id of its name,
 * are rewritten into a new segment; nothing is lost. */
static void
test_repair_damaged_segment_header(void **state)
{
    (void)state;
    repair_case("a segment header damaged", dmg_flip_header);
}

/* Goal: a store open in another handle (this process) is refused, nothing changed. */
static void
test_repair_refuses_locked_store(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("repair-locked");
    tu_copy_store(base_dir, dir);
    htkv_config cfg = base_cfg;
    cfg.data_dir = dir;
    htkv_db *db = tu_open(&cfg);
    struct tu_tree before = tu_tree_take_all(dir);
    struct tu_run r;
    RUN(&r, "repair", dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "open in another process");
    tu_run_free(&r);
    RUN(&r, "repair", "--dry-run", dir);
    tu_expect_status(&r, 3);
    tu_run_free(&r);
    tu_tree_expect_unchanged(&before, dir, "tree changed by a refused repair of a locked store");
    tu_tree_free(&before);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: no store (a missing or an empty directory): exit 3, nothing created. */
static void
test_repair_no_store(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("repair-empty");
    struct tu_run r;
    RUN(&r, "repair", dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "no htkv store here");
    tu_run_free(&r);
    struct tu_tree t = tu_tree_take_all(dir);
    assert_int_equal(t.n, 0);
    tu_tree_free(&t);
    char missing[4200];
    snprintf(missing, sizeof(missing), "%s/nothing", dir);
    RUN(&r, "--json", "repair", missing);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.out, "\"exit_status\": 3");
    tu_run_free(&r);
    struct stat st;
    assert_int_equal(stat(missing, &st), -1);
    RUN(&r, "--read-only", "repair", dir);
    tu_expect_status(&r, 2);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: no manifest and segments of an older build (no identity in their headers): the seed
 * cannot be told; refused with a message, nothing changed. */
static void
test_repair_cannot_tell_seed(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("repair-noseed");
    tu_copy_store(base_dir, dir);
    struct dmg d = { .skip_key = -1 };
    dmg_rm_manifests(dir, &d);
    for (unsigned s = 0; s < 2; s++) {
        static char segs[64][4096];
        size_t n = tu_shard_segments(dir, s, segs, 64);
        for (size_t i = 0; i < n; i++) {
            unsigned char h[SEG_HDR_BYTES];
            assert_int_equal(tu_read_at(segs[i], 0, h, sizeof(h)), 0);
            memset(h + 24, 0, 12); /* shard count and hash seed, as older builds wrote them */
            htkv_store32(h + 60, htkv_crc32c(0, h, 60));
            assert_int_equal(tu_write_at(segs[i], 0, h, sizeof(h)), 0);
        }
    }
    struct tu_tree before = tu_tree_take_all(dir);
    struct tu_run r;
    RUN(&r, "repair", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.err, "cannot tell the store's hash seed");
    tu_run_free(&r);
    tu_tree_expect_unchanged(&before, dir, "tree changed by a repair that cannot tell the seed");
    tu_tree_free(&before);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repair_missing_current),
        cmocka_unit_test(test_repair_missing_manifest),
        cmocka_unit_test(test_repair_truncated_manifest),
        cmocka_unit_test(test_repair_zeroed_manifest),
        cmocka_unit_test(test_repair_swapped_shard_directories),
        cmocka_unit_test(test_repair_damaged_segment),
        cmocka_unit_test(test_repair_damaged_segment_header),
        cmocka_unit_test(test_repair_refuses_locked_store),
        cmocka_unit_test(test_repair_no_store),
        cmocka_unit_test(test_repair_cannot_tell_seed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
