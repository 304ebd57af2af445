/*
 * test_damage_matrix.c - what a damaged store directory may do, file by file. A closed store
 * (2 shards, 64 KiB segments, hint files, a snapshot beside it, deletes as its last writes) is
 * copied once per case and one thing in the copy is damaged: CURRENT, the manifest, each
 * segment, each hint file and the snapshot are deleted, truncated (to 0, half, length - 1; a
 * segment also just before its last and its middle record, the manifest at a quarter and three
 * quarters), zeroed, garbled (8 seeded random bytes; one bit in the last 64 bytes of data; in a
 * segment also one bit of the key, and one of the value, of the newest record of an overwritten
 * key), or replaced by their older copy from a close halfway through the writes; each shard
 * directory is removed, renamed away, or swapped with the other one. Then htkv_open (with
 * create_if_missing 1 and 0) must either refuse and leave every file byte for byte as it was
 * (none removed, none added; LOCK aside), or open and serve every acknowledged write (a value is
 * its last acknowledged one or HTKV_ECORRUPT; no deleted key comes back; the iteration agrees).
 * A store that open refused must not verify clean (`htkvctl verify`); `htkvctl repair` must not
 * crash, keeps every byte of segment it removes (DIR/lost/), and when it succeeds the store
 * verifies clean, opens, and equals the model: exactly for damage to CURRENT, the manifest,
 * hints, the snapshot and renamed shard directories; for a damaged segment a key may be missing
 * (or show an older value, a deleted key its older value) only if that segment held the key's
 * newest record. A summary line per damage class and one in all is printed (cases, refused,
 * opened, lost, resurrected). The htkvctl parts need HTKVCTL_PATH (tools/htkvctl/CMakeLists.txt).
 * HTKV_DAMAGE_EVERY=N runs one case in N, the seed choosing which (make asan: 2; the release
 * pass runs them all).
 */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/testutil.h"
#include "tests/support/tool.h"

#define DM_KEYS 2400u
#define DM_HALF 1600u    /* keys written before the halfway close */
#define DM_MAX_GEN 3     /* values a key held: generations 1..3 */
#define DM_VAL_MAX 256   /* largest value */
#define DM_MAX_RECS 8192 /* records per segment, for the scan that finds record offsets */
#define DM_MAX_REPORTS 400
#define DM_TOOL_SECONDS 60

/* ---- the model ------------------------------------------------------------------------------ */

static int model_gen[DM_KEYS];      /* generation of the last acknowledged value; 0 = never */
static bool model_deleted[DM_KEYS]; /* the last acknowledged write was a delete */

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "dm-%05u", i);
}

static int
index_of(const void *key, size_t klen)
{
    char tmp[16];
    if (klen != 8 || memcmp(key, "dm-", 3) != 0) {
        return -1;
    }
    memcpy(tmp, key, klen);
    tmp[klen] = '\0';
    char *end = NULL;
    unsigned long v = strtoul(tmp + 3, &end, 10);
    if (end == NULL || *end != '\0' || v >= DM_KEYS) {
        return -1;
    }
    return (int)v;
}

static size_t
val_of(unsigned i, int gen, unsigned char *buf)
{
    size_t n = 16 + ((size_t)i * 7 + (size_t)gen * 13) % 90;
    tu_fill(buf, n, (uint64_t)i * 8 + (uint64_t)gen);
    return n;
}

/* The generation whose value @p v is, or -2 when it is none of the key's values. */
static int
gen_of(unsigned i, const void *v, size_t n)
{
    unsigned char want[DM_VAL_MAX];
    for (int g = 1; g <= DM_MAX_GEN; g++) {
        size_t wn = val_of(i, g, want);
        if (wn == n && memcmp(want, v, n) == 0) {
            return g;
        }
    }
    return -2;
}

/* ---- the store under test ------------------------------------------------------------------- */

static char *base_dir; /* the store as closed after every write */
static char *old_dir;  /* the same store as closed after the first half of the writes */
static uint64_t base_seed;
static htkv_config base_cfg;

static void
put_gen(htkv_db *db, unsigned i, int gen)
{
    char key[16];
    unsigned char val[DM_VAL_MAX];
    size_t n = val_of(i, gen, val);
    assert_int_equal(htkv_put(db, key, key_of(i, key), val, n), 0);
    model_gen[i] = gen;
    model_deleted[i] = false;
}

/* Exit status of the child that ran the midway compaction pass; -1: killed after 60 s. */
static int midway_compaction = -2;

/* The midway pass runs in a child with a deadline, so that a hang of htkv_compact_now() fails
 * test_midway_compaction_returns instead of stopping the matrix (a child killed in the pass is
 * a crash the next open recovers from, losing nothing). */
static int
compact_in_child(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_assert_hook_reset();
        htkv_db *db = NULL;
        int rc = htkv_open(&base_cfg, &db);
        if (rc == 0) {
            rc = htkv_compact_now(db);
            if (rc != 0) {
                fprintf(stderr, "htkv_compact_now: %s (%s)\n", htkv_strerror(rc),
                        htkv_last_error());
            }
            int crc = htkv_close(db);
            rc = rc != 0 ? rc : crc;
        } else {
            fprintf(stderr, "open before the midway compaction: %s\n", htkv_strerror(rc));
        }
        _exit(rc == 0 ? 0 : 1);
    }
    int st = tu_wait_deadline(pid, 60);
    if (st != 0) {
        fprintf(stderr,
                "[damage_matrix] the midway htkv_compact_now() %s; the matrix goes on over the "
                "store as that left it\n",
                st < 0 ? "did not return within 60 s (killed)" : "failed");
    }
    return st;
}

static void
build_store(void)
{
    base_dir = tu_tmpdir("dmg-base");
    tu_config(&base_cfg, base_dir, HTKV_SYNC_INTERVAL);
    base_cfg.shard_count = 2;
    base_cfg.max_segment_bytes = 64u << 10;
    base_cfg.compaction_interval_ms = 0;
    base_cfg.emit_snapshot_after_compaction = 0;

    /* First half: 1,600 keys, the first 400 overwritten; close; keep a copy. */
    htkv_db *db = tu_open(&base_cfg);
    for (unsigned i = 0; i < DM_HALF; i++) {
        put_gen(db, i, 1);
    }
    for (unsigned i = 0; i < 400; i++) {
        put_gen(db, i, 2);
    }
    assert_int_equal(htkv_close(db), 0);
    old_dir = tu_tmpdir("dmg-old");
    tu_copy_store(base_dir, old_dir);

    /* Second half: a compaction pass (so that hints exist), 800 new keys, overwrites, a
     * snapshot beside the store, and deletes as the last writes. */
    midway_compaction = compact_in_child();
    db = tu_open(&base_cfg);
    for (unsigned i = DM_HALF; i < DM_KEYS; i++) {
        put_gen(db, i, 1);
    }
    for (unsigned i = 400; i < 1000; i++) {
        put_gen(db, i, 2);
    }
    for (unsigned i = 0; i < 200; i++) {
        put_gen(db, i, 3);
    }
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/snapshot-000001.snap", base_dir);
    assert_int_equal(htkv_snapshot_write(db, snap), 0);
    char key[16];
    for (unsigned i = 3; i < DM_KEYS; i += 7) {
        assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
        model_deleted[i] = true;
    }
    assert_int_equal(htkv_close(db), 0);
}

/* ---- segment bytes -------------------------------------------------------------------------- */

#ifdef HTKVCTL_PATH
/* Bytes of every *.seg file under @p root (recursively), skipping the folder lost/ at the top;
 * with @p all_files, every regular file counts, not only segments. */
static unsigned long long
seg_bytes(const char *root, const char *rel, bool skip_lost, bool all_files)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (d == NULL) {
        return 0;
    }
    unsigned long long sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (skip_lost && rel[0] == '\0' && strcmp(de->d_name, "lost") == 0) {
            continue;
        }
        char sub[1024];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        char full[5200];
        snprintf(full, sizeof(full), "%s/%s", root, sub);
        struct stat st;
        if (lstat(full, &st) != 0) {
            continue;
        }
        size_t l = strlen(de->d_name);
        if (S_ISDIR(st.st_mode)) {
            sum += seg_bytes(root, sub, skip_lost, all_files);
        } else if (S_ISREG(st.st_mode) &&
                   (all_files || (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0))) {
            sum += (unsigned long long)st.st_size;
        }
    }
    closedir(d);
    return sum;
}
#endif

/* ---- running htkvctl ------------------------------------------------------------------------ */

struct tool_run {
    int status; /* exit status; 128 + signal; -1 when it ran past its deadline */
    char err[600];
};

#ifdef HTKVCTL_PATH
/* Run `htkvctl @p cmd @p dir` with a deadline (tests/support/tool.h); keep the start of its
 * stderr on one line ('|' between lines) for the reports. */
static void
tool_run(struct tool_run *r, const char *cmd, const char *dir)
{
    struct tu_run run;
    tu_tool_run(&run, HTKVCTL_PATH, TU_ARGS(cmd, dir), DM_TOOL_SECONDS);
    r->status = run.status;
    size_t n = strlen(run.err);
    n = n < sizeof(r->err) - 1 ? n : sizeof(r->err) - 1;
    memcpy(r->err, run.err, n);
    r->err[n] = '\0';
    for (size_t k = 0; k < n; k++) {
        if (r->err[k] == '\n') {
            r->err[k] = k + 1 < n ? '|' : '\0';
        }
    }
    tu_run_free(&run);
}
#endif

/* ---- damage --------------------------------------------------------------------------------- */

enum cls {
    C_CONTROL,   /* CURRENT, MANIFEST-* */
    C_SEGMENT,   /* a segment */
    C_HINT,      /* a hint file */
    C_SNAPSHOT,  /* the snapshot beside the store */
    C_SHARD_RM,  /* a shard directory removed */
    C_SHARD_MOVE /* a shard directory renamed */
};

enum kind {
    K_DELETE,
    K_TRUNC,
    K_ZERO,
    K_GARBLE,
    K_FLIP_END,
    K_FLIP_AT,
    K_OLDER,
    K_RMRF,
    K_RENAME,
    K_SWAP
};

struct dcase {
    enum cls cls;
    enum kind kind;
    char rel[256];    /* the file or directory, relative to the store */
    long long off;    /* K_TRUNC: the new length; K_FLIP_AT: the byte whose low bit flips */
    const char *what; /* words for the report */
    bool all_segs;    /* K_DELETE of every segment at once */
    bool *plaus;      /* keys whose newest record is in the damaged file(s); NULL: none */
};

struct tally {
    unsigned cases, opens, refused_opens, opened_opens, refused_cases, opened_cases;
    unsigned lost, resurrected, older, wrong, corrupt_reads, changed, not_ecorrupt;
    unsigned verify_clean, repairs, repair_ok, repair_declined, repair_bad;
    unsigned lost_repaired, resurrected_repaired, stale_repaired;
    unsigned failures;
};

static struct tally total;

/* Seconds spent per phase, in all: copies, opens of damaged copies, htkvctl runs, and the open
 * and check after a repair. */
static double time_copy, time_open, time_verify, time_repair, time_after;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(struct tally *t, const struct dcase *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report(struct tally *t, const struct dcase *c, const char *fmt, ...)
{
    t->failures++;
    if (t->failures > DM_MAX_REPORTS) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "[damage_matrix] FAIL %s %s: %s\n", c->what, c->rel, msg);
}

/* One past the last non-zero byte of @p buf (0 when it is all zeros). */
static size_t
data_end(const unsigned char *buf, size_t n)
{
    while (n > 0 && buf[n - 1] == 0) {
        n--;
    }
    return n;
}

static void
apply_damage(const struct dcase *c, const char *dir, uint64_t seed)
{
    char path[4500];
    snprintf(path, sizeof(path), "%s/%s", dir, c->rel);
    switch (c->kind) {
    case K_DELETE:
        if (c->all_segs) {
            static char segs[256][4096];
            size_t n = tu_segments(dir, segs, 256);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(unlink(segs[i]), 0);
            }
        } else {
            assert_int_equal(unlink(path), 0);
        }
        break;
    case K_TRUNC:
        assert_int_equal(tu_truncate(path, c->off), 0);
        break;
    case K_ZERO: {
        size_t n;
        unsigned char *buf = tu_read_whole(path, &n);
        assert_non_null(buf);
        memset(buf, 0, n);
        assert_int_equal(tu_write_at(path, 0, buf, n), 0);
        free(buf);
        break;
    }
    case K_GARBLE: {
        size_t n;
        unsigned char *buf = tu_read_whole(path, &n);
        assert_non_null(buf);
        size_t end = data_end(buf, n);
        if (end == 0) {
            end = n;
        }
        for (int k = 0; k < 8 && end > 0; k++) {
            size_t at = (size_t)(tu_rand(&seed) % end);
            buf[at] ^= (unsigned char)(1 + tu_rand(&seed) % 255);
        }
        assert_int_equal(tu_write_at(path, 0, buf, n), 0);
        free(buf);
        break;
    }
    case K_FLIP_END: {
        size_t n;
        unsigned char *buf = tu_read_whole(path, &n);
        assert_non_null(buf);
        size_t end = data_end(buf, n);
        assert_true(end > 0);
        size_t span = end < 64 ? end : 64;
        size_t at = end - 1 - (size_t)(tu_rand(&seed) % span);
        free(buf);
        assert_int_equal(tu_flip_bit(path, (long long)at, (int)(tu_rand(&seed) % 8)), 0);
        break;
    }
    case K_FLIP_AT:
        assert_int_equal(tu_flip_bit(path, c->off, 0), 0);
        break;
    case K_OLDER: {
        char from[4500];
        snprintf(from, sizeof(from), "%s/%s", old_dir, c->rel);
        size_t n;
        unsigned char *buf = tu_read_whole(from, &n);
        assert_non_null(buf);
        assert_int_equal(tu_truncate(path, 0), 0);
        assert_int_equal(tu_write_at(path, 0, buf, n), 0);
        free(buf);
        break;
    }
    case K_RMRF:
        tu_rmrf(path);
        break;
    case K_RENAME: {
        char to[4600];
        snprintf(to, sizeof(to), "%s.moved", path);
        assert_int_equal(rename(path, to), 0);
        break;
    }
    case K_SWAP: {
        char a[4500], b[4500], tmp[4600];
        snprintf(a, sizeof(a), "%s/shard-000", dir);
        snprintf(b, sizeof(b), "%s/shard-001", dir);
        snprintf(tmp, sizeof(tmp), "%s/swap.tmp", dir);
        assert_int_equal(rename(a, tmp), 0);
        assert_int_equal(rename(b, a), 0);
        assert_int_equal(rename(tmp, b), 0);
        break;
    }
    }
}

/* ---- checking an open store against the model ----------------------------------------------- */

enum check_mode {
    M_DAMAGED, /* opened over damage: a value is right or HTKV_ECORRUPT, nothing lost or back */
    M_EXACT,   /* repaired, nothing may be lost: the store equals the model */
    M_REPAIRED /* repaired after segment damage: losses only of keys whose newest record it held */
};

static int got_gen[DM_KEYS]; /* per key: generation read; 0 absent; -1 HTKV_ECORRUPT; -2 junk */

/* What one check of a store found: counts, and the first key of each kind as an example. */
struct findings {
    unsigned lost, older, junk, back, errors, corrupt;
    char lost_ex[64], older_ex[64], junk_ex[64], back_ex[64], error_ex[160];
};

static void note(unsigned *count, char *ex, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
note(unsigned *count, char *ex, size_t cap, const char *fmt, ...)
{
    if ((*count)++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ex, cap, fmt, ap);
        va_end(ap);
    }
}

#define NOTE(f, kind, ...) note(&(f)->kind, (f)->kind##_ex, sizeof((f)->kind##_ex), __VA_ARGS__)

static void
check_store(htkv_db *db, const struct dcase *c, enum check_mode mode, struct tally *t,
            const char *when)
{
    struct findings f;
    memset(&f, 0, sizeof(f));
    char key[16];
    unsigned char buf[DM_VAL_MAX];
    for (unsigned i = 0; i < DM_KEYS; i++) {
        size_t n = 0;
        size_t kl = key_of(i, key);
        int rc = htkv_get(db, key, kl, buf, sizeof(buf), &n);
        bool plaus = mode == M_REPAIRED && c->plaus != NULL && c->plaus[i];
        got_gen[i] = rc == 0 ? gen_of(i, buf, n) : rc == HTKV_ENOTFOUND ? 0 : -1;
        if (rc != 0 && rc != HTKV_ENOTFOUND && rc != HTKV_ECORRUPT) {
            note(&f.errors, f.error_ex, sizeof(f.error_ex), "get %s: %s", key, htkv_strerror(rc));
            continue;
        }
        if (rc == HTKV_ECORRUPT) {
            f.corrupt++;
            if (mode != M_DAMAGED) {
                note(&f.errors, f.error_ex, sizeof(f.error_ex), "get %s: HTKV_ECORRUPT", key);
            }
            continue;
        }
        if (!model_deleted[i]) {
            if (rc == HTKV_ENOTFOUND) {
                if (plaus) {
                    t->lost_repaired++;
                } else {
                    NOTE(&f, lost, "%s (gen %d)", key, model_gen[i]);
                }
            } else if (got_gen[i] != model_gen[i]) {
                if (plaus && got_gen[i] > 0) {
                    t->stale_repaired++;
                } else if (got_gen[i] > 0) {
                    NOTE(&f, older, "%s gen %d not %d", key, got_gen[i], model_gen[i]);
                } else {
                    NOTE(&f, junk, "%s (%zu bytes)", key, n);
                }
            }
        } else if (rc == 0) {
            if (plaus && got_gen[i] > 0) {
                t->resurrected_repaired++;
            } else {
                NOTE(&f, back, "%s (gen %d)", key, got_gen[i]);
            }
        }
    }

    /* The whole store in order: no key outside the model, no deleted key, the values the gets
     * read; complete unless a record failed its check (only allowed before a repair). */
    htkv_iter *it = NULL;
    int rc = htkv_get_prefix(db, "", 0, &it);
    if (rc != 0) {
        note(&f.errors, f.error_ex, sizeof(f.error_ex), "htkv_get_prefix: %s", htkv_strerror(rc));
    } else {
        static bool seen[DM_KEYS];
        memset(seen, 0, sizeof(seen));
        const void *k, *v;
        size_t kl, vl;
        while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
            int i = index_of(k, kl);
            if (i < 0) {
                NOTE(&f, junk, "iteration: a key never written (%zu bytes)", kl);
                continue;
            }
            seen[i] = true;
            int g = gen_of((unsigned)i, v, vl);
            if (got_gen[i] == -1) {
                continue; /* its get failed its check; the iterator met another copy */
            }
            if (model_deleted[i] && got_gen[i] == 0 &&
                !(mode == M_REPAIRED && c->plaus != NULL && c->plaus[i])) {
                NOTE(&f, back, "dm-%05d (gen %d) in the iteration only", i, g);
            } else if (g != got_gen[i]) {
                note(&f.errors, f.error_ex, sizeof(f.error_ex),
                     "iteration gives dm-%05d gen %d, get gave %d (model %d%s)", i, g, got_gen[i],
                     model_gen[i], model_deleted[i] ? ", deleted" : "");
            }
        }
        htkv_iter_destroy(it);
        if (rc == 0) {
            for (unsigned i = 0; i < DM_KEYS; i++) {
                if (!seen[i] && got_gen[i] > 0) {
                    note(&f.errors, f.error_ex, sizeof(f.error_ex),
                         "dm-%05u reads back but the iteration skips it", i);
                }
            }
        } else if (rc != HTKV_ECORRUPT || mode != M_DAMAGED) {
            note(&f.errors, f.error_ex, sizeof(f.error_ex), "htkv_iter_next: %s",
                 htkv_strerror(rc));
        }
    }

    t->corrupt_reads += f.corrupt;
    t->lost += f.lost;
    t->resurrected += f.back;
    t->older += f.older;
    t->wrong += f.junk;
    if (f.lost + f.older + f.junk + f.back + f.errors > 0) {
        char msg[900];
        int o = snprintf(msg, sizeof(msg), "%s:", when);
        if (f.lost) {
            o += snprintf(msg + o, sizeof(msg) - (size_t)o, " %u keys lost (%s);", f.lost,
                          f.lost_ex);
        }
        if (f.back) {
            o += snprintf(msg + o, sizeof(msg) - (size_t)o, " %u deleted keys back (%s);", f.back,
                          f.back_ex);
        }
        if (f.older) {
            o += snprintf(msg + o, sizeof(msg) - (size_t)o, " %u older values (%s);", f.older,
                          f.older_ex);
        }
        if (f.junk) {
            o += snprintf(msg + o, sizeof(msg) - (size_t)o, " %u wrong values (%s);", f.junk,
                          f.junk_ex);
        }
        if (f.errors) {
            snprintf(msg + o, sizeof(msg) - (size_t)o, " %u other problems (%s)", f.errors,
                     f.error_ex);
        }
        report(t, c, "%s", msg);
    }
}

/* ---- one case ------------------------------------------------------------------------------- */

/* Open @p dir with create_if_missing @p cim; check the store or that a refusal changed nothing.
 * Returns true when the open was refused. */
static bool
try_open_once(const struct dcase *c, const char *dir, int cim, struct tally *t)
{
    struct tu_tree before = tu_tree_take(dir);
    htkv_config cfg = base_cfg;
    cfg.data_dir = dir;
    cfg.create_if_missing = cim;
    htkv_db *db = NULL;
    tu_context("%s %s, create_if_missing %d", c->what, c->rel, cim);
    int rc = htkv_open(&cfg, &db);
    t->opens++;
    if (rc != 0) {
        t->refused_opens++;
        if (db != NULL) {
            report(t, c, "a failed open returned a handle");
        }
        if (rc != HTKV_ECORRUPT && !(rc == HTKV_ENOTFOUND && cim == 0)) {
            t->not_ecorrupt++; /* allowed: any refusal; HTKV_ECORRUPT is the expected code */
        }
        struct tu_tree after = tu_tree_take(dir);
        char why[700];
        if (tu_tree_diff(&before, &after, why, sizeof(why))) {
            t->changed++;
            report(t, c, "create_if_missing %d: open refused (%s) but %s", cim, htkv_strerror(rc),
                   why);
        }
        tu_tree_free(&after);
        tu_tree_free(&before);
        return true;
    }
    tu_tree_free(&before);
    t->opened_opens++;
    check_store(db, c, M_DAMAGED, t,
                cim ? "opened (create_if_missing 1)" : "opened (create_if_missing 0)");
    int crc = htkv_close(db);
    if (crc != 0) {
        report(t, c, "htkv_close after the open: %s", htkv_strerror(crc));
    }
    return false;
}

static bool
try_open(const struct dcase *c, const char *dir, int cim, struct tally *t)
{
    double t0 = now_s();
    bool refused = try_open_once(c, dir, cim, t);
    time_open += now_s() - t0;
    return refused;
}

#ifdef HTKVCTL_PATH
static bool
exact_after_repair(enum cls cls)
{
    return cls == C_CONTROL || cls == C_HINT || cls == C_SNAPSHOT || cls == C_SHARD_MOVE;
}
#endif

/* The store in @p dir was refused: it must not verify clean; repair it and check the result. */
static void
repair_case(const struct dcase *c, const char *dir, struct tally *t)
{
#ifdef HTKVCTL_PATH
    struct tool_run r;
    double t0 = now_s();
    tool_run(&r, "verify", dir);
    time_verify += now_s() - t0;
    if (r.status == 0) {
        t->verify_clean++;
        report(t, c, "open refused it but `htkvctl verify` says clean");
    } else if (r.status < 0 || r.status >= 126) {
        report(t, c, "`htkvctl verify` on the damaged store: status %d (%s)", r.status, r.err);
    }

    unsigned long long before = seg_bytes(dir, "", true, false);
    t->repairs++;
    t0 = now_s();
    tool_run(&r, "repair", dir);
    time_repair += now_s() - t0;
    if (r.status != 0) {
        if (r.status < 0) {
            t->repair_bad++;
            report(t, c, "`htkvctl repair` ran past %d s", DM_TOOL_SECONDS);
        } else if (r.status >= 126) {
            t->repair_bad++;
            report(t, c, "`htkvctl repair` crashed or did not run: status %d (%s)", r.status,
                   r.err);
        } else if (r.status == 2) {
            t->repair_bad++;
            report(t, c, "`htkvctl repair`: usage error, status 2 (%s)", r.err);
        } else if (exact_after_repair(c->cls)) {
            t->repair_bad++;
            report(t, c, "`htkvctl repair` gave up on damage it must repair: status %d (%s)",
                   r.status, r.err);
        } else if (r.err[0] == '\0') {
            t->repair_bad++;
            report(t, c, "`htkvctl repair` failed with status %d and no message", r.status);
        } else {
            t->repair_declined++;
        }
        return;
    }
    t->repair_ok++;
    char lost[4300];
    snprintf(lost, sizeof(lost), "%s/lost", dir);
    unsigned long long after = seg_bytes(dir, "", true, false) + seg_bytes(lost, "", false, true);
    if (after < before) {
        report(t, c, "repair dropped segment bytes: %llu before, %llu in segments and lost/ after",
               before, after);
    }
    t0 = now_s();
    tool_run(&r, "verify", dir);
    time_verify += now_s() - t0;
    t0 = now_s();
    if (r.status != 0) {
        report(t, c, "`htkvctl verify` after a successful repair: status %d (%s)", r.status, r.err);
    }
    htkv_config cfg = base_cfg;
    cfg.data_dir = dir;
    htkv_db *db = NULL;
    tu_context("%s %s, after repair", c->what, c->rel);
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        report(t, c, "open after a successful repair: %s (%s)", htkv_strerror(rc),
               htkv_last_error());
        return;
    }
    check_store(db, c, exact_after_repair(c->cls) ? M_EXACT : M_REPAIRED, t, "after repair");
    rc = htkv_close(db);
    if (rc != 0) {
        report(t, c, "htkv_close after repair: %s", htkv_strerror(rc));
    }
    time_after += now_s() - t0;
#else
    (void)c;
    (void)dir;
    (void)t;
#endif
}

/* HTKV_DAMAGE_EVERY (1 = every case), and the cases offered so far. */
static uint64_t case_every = 1;
static uint64_t case_offered;

static void
run_case(const struct dcase *c, struct tally *t)
{
    if ((case_offered++ + base_seed) % case_every != 0) {
        return; /* another run's case (HTKV_DAMAGE_EVERY) */
    }
    t->cases++;
    unsigned failures_before = t->failures;
    uint64_t seed = base_seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(total.cases + t->cases));
    if (seed == 0) {
        seed = 1;
    }
    double t0 = now_s();
    char *a = tu_tmpdir("dmg-case");
    tu_copy_store(base_dir, a);
    apply_damage(c, a, seed);
    time_copy += now_s() - t0;
    bool refused = false;
    if (try_open(c, a, 1, t)) {
        refused = true;
        if (try_open(c, a, 0, t)) {
            repair_case(c, a, t);
        }
    } else {
        t0 = now_s();
        char *b = tu_tmpdir("dmg-case");
        tu_copy_store(base_dir, b);
        apply_damage(c, b, seed);
        time_copy += now_s() - t0;
        if (try_open(c, b, 0, t)) {
            refused = true;
            repair_case(c, b, t);
        }
        tu_rmrf(b);
        free(b);
    }
    if (refused) {
        t->refused_cases++;
    } else {
        t->opened_cases++;
    }
    tu_rmrf(a);
    free(a);

    /* The layout of the store depends on its hash seed, which the engine draws at creation, so
     * HTKV_SEED alone does not replay a case: keep the damaged store of the first few failing
     * cases (as damaged, before any open) for a replay. */
    static unsigned kept;
    if (t->failures != failures_before && kept < 5) {
        kept++;
        char *k = tu_tmpdir("dmg-failed-case");
        tu_copy_store(base_dir, k);
        apply_damage(c, k, seed);
        fprintf(stderr, "[damage_matrix]   the damaged store of this case is kept in %s\n", k);
        free(k);
    }
}

/* ---- case lists ----------------------------------------------------------------------------- */

/* Per key, the highest version of a record of it in any segment of the undamaged store. */
static uint64_t newest_version[DM_KEYS];

/* Record versions of segment @p path: raise newest_version (@p plaus NULL), or mark in @p plaus
 * the keys whose newest record is in it: the only keys that damage to it may cost a value (or
 * a tombstone). */
static void
scan_segment(const char *path, bool *plaus)
{
    struct tu_rec *recs = calloc(DM_MAX_RECS, sizeof(*recs));
    assert_non_null(recs);
    size_t n = tu_seg_scan(path, recs, DM_MAX_RECS);
    for (size_t i = 0; i < n && i < DM_MAX_RECS; i++) {
        int k = index_of(recs[i].key, recs[i].key_len);
        if (k < 0) {
            continue;
        }
        if (plaus == NULL) {
            if (recs[i].version > newest_version[k]) {
                newest_version[k] = recs[i].version;
            }
        } else if (recs[i].version == newest_version[k]) {
            plaus[k] = true;
        }
    }
    free(recs);
}

static bool
same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *x = tu_read_whole(a, &na), *y = tu_read_whole(b, &nb);
    bool same = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void
add_trunc(struct dcase *c, long long *done, size_t *ndone, long long off, long long len,
          const char *what, struct tally *t)
{
    if (off < 0 || off >= len) {
        return;
    }
    for (size_t i = 0; i < *ndone; i++) {
        if (done[i] == off) {
            return;
        }
    }
    done[(*ndone)++] = off;
    c->kind = K_TRUNC;
    c->off = off;
    char w[96];
    snprintf(w, sizeof(w), "truncated to %lld (%s) of", off, what);
    c->what = w;
    run_case(c, t);
}

/* Every damage of one file: deleted, truncated, zeroed, garbled, its last bytes flipped,
 * replaced by its older copy. */
static void
file_cases(enum cls cls, const char *rel, bool *plaus, struct tally *t)
{
    char path[4500];
    snprintf(path, sizeof(path), "%s/%s", base_dir, rel);
    long long len = tu_file_size(path);
    assert_true(len >= 0);
    struct dcase c;
    memset(&c, 0, sizeof(c));
    c.cls = cls;
    c.plaus = plaus;
    snprintf(c.rel, sizeof(c.rel), "%s", rel);

    c.kind = K_DELETE;
    c.what = "deleted";
    run_case(&c, t);

    long long done[16];
    size_t ndone = 0;
    add_trunc(&c, done, &ndone, 0, len, "empty", t);
    add_trunc(&c, done, &ndone, len / 2, len, "half", t);
    add_trunc(&c, done, &ndone, len - 1, len, "length - 1", t);
    if (cls == C_SEGMENT) {
        struct tu_rec *recs = calloc(DM_MAX_RECS, sizeof(*recs));
        assert_non_null(recs);
        size_t n = tu_seg_scan(path, recs, DM_MAX_RECS);
        if (n > DM_MAX_RECS) {
            n = DM_MAX_RECS;
        }
        if (n > 0) {
            add_trunc(&c, done, &ndone, recs[n - 1].off, len, "before the last record", t);
            add_trunc(&c, done, &ndone, recs[n / 2].off, len, "before the middle record", t);
        }
        /* A bit of the key, and one of the value, of the newest record of a key that held an
         * older value, which is still on disk: the read must fail its check, not fall back to
         * the older value (nor find the record under another key). */
        for (size_t i = 0; i < n; i++) {
            int k = index_of(recs[i].key, recs[i].key_len);
            if (k >= 0 && recs[i].val_len > 0 && !model_deleted[k] && model_gen[k] >= 2 &&
                recs[i].version == newest_version[k]) {
                long long val_at = recs[i].off + recs[i].raw - recs[i].val_len;
                char w[128];
                c.kind = K_FLIP_AT;
                c.off = val_at - 1; /* the last byte of the key */
                snprintf(w, sizeof(w),
                         "a bit flipped in the key of the newest record of dm-%05d in", k);
                c.what = w;
                run_case(&c, t);
                c.off = val_at + recs[i].val_len / 2;
                snprintf(w, sizeof(w), "a bit flipped in the newest value of dm-%05d in", k);
                run_case(&c, t);
                break;
            }
        }
        free(recs);
    } else if (strncmp(rel, "MANIFEST-", 9) == 0) {
        add_trunc(&c, done, &ndone, len / 4, len, "a quarter", t);
        add_trunc(&c, done, &ndone, len * 3 / 4, len, "three quarters", t);
    }

    if (len > 0) {
        c.kind = K_ZERO;
        c.what = "zeroed";
        run_case(&c, t);
        c.kind = K_GARBLE;
        c.what = "8 random bytes garbled in";
        run_case(&c, t);
        c.kind = K_FLIP_END;
        c.what = "one bit flipped in the last 64 bytes of data of";
        run_case(&c, t);
    }

    char old[4500];
    snprintf(old, sizeof(old), "%s/%s", old_dir, rel);
    if (tu_exists(old_dir, rel) && !same_bytes(old, path)) {
        c.kind = K_OLDER;
        c.what = "replaced by its copy from the halfway close:";
        run_case(&c, t);
    }
}

static void
summary(const char *name, const struct tally *t)
{
    fprintf(stderr,
            "[damage_matrix] %s: cases %u, refused %u, opened %u, lost: %u, resurrected: %u | "
            "opens %u (%u refused, %u opened), older values %u, wrong values %u, corrupt reads "
            "%u, refusals that changed files %u, refusals other than HTKV_ECORRUPT %u, refused "
            "stores verifying clean %u | repairs %u: %u ok, %u declined, %u bad; after repair "
            "%u keys lost, %u older values, %u deleted keys back (keys whose newest record the "
            "damaged segment held) | failures %u\n",
            name, t->cases, t->refused_cases, t->opened_cases, t->lost, t->resurrected, t->opens,
            t->refused_opens, t->opened_opens, t->older, t->wrong, t->corrupt_reads, t->changed,
            t->not_ecorrupt, t->verify_clean, t->repairs, t->repair_ok, t->repair_declined,
            t->repair_bad, t->lost_repaired, t->stale_repaired, t->resurrected_repaired,
            t->failures);
}

static void
finish(const char *name, struct tally *t)
{
    summary(name, t);
    total.cases += t->cases;
    total.opens += t->opens;
    total.refused_opens += t->refused_opens;
    total.opened_opens += t->opened_opens;
    total.refused_cases += t->refused_cases;
    total.opened_cases += t->opened_cases;
    total.lost += t->lost;
    total.resurrected += t->resurrected;
    total.older += t->older;
    total.wrong += t->wrong;
    total.corrupt_reads += t->corrupt_reads;
    total.changed += t->changed;
    total.not_ecorrupt += t->not_ecorrupt;
    total.verify_clean += t->verify_clean;
    total.repairs += t->repairs;
    total.repair_ok += t->repair_ok;
    total.repair_declined += t->repair_declined;
    total.repair_bad += t->repair_bad;
    total.lost_repaired += t->lost_repaired;
    total.stale_repaired += t->stale_repaired;
    total.resurrected_repaired += t->resurrected_repaired;
    total.failures += t->failures;
    if (t->failures > 0) {
        fprintf(stderr,
                "[damage_matrix] %s: %u failures (HTKV_SEED=%llu replays the garbled offsets; the "
                "store's layout is the engine's draw: replay a case from its kept store)\n",
                name, t->failures, (unsigned long long)base_seed);
    }
    assert_int_equal(t->lost, 0);
    assert_int_equal(t->resurrected, 0);
    assert_int_equal(t->failures, 0);
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Top-level files of the store whose names start with @p prefix, sorted. */
static size_t
top_files(const char *prefix, char (*out)[256], size_t cap)
{
    DIR *d = opendir(base_dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && n < cap) {
            snprintf(out[n++], 256, "%s", de->d_name);
        }
    }
    closedir(d);
    qsort(out, n, 256, cmp_name);
    return n;
}

/* Files of both shard directories that end with @p ext, relative to the store, sorted. */
static size_t
shard_files(const char *ext, char (*out)[256], size_t cap)
{
    size_t n = 0;
    for (unsigned s = 0; s < 2; s++) {
        char sd[4200];
        snprintf(sd, sizeof(sd), "%s/shard-%03u", base_dir, s);
        DIR *d = opendir(sd);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t l = strlen(de->d_name), e = strlen(ext);
            if (l > e && strcmp(de->d_name + l - e, ext) == 0 && n < cap) {
                snprintf(out[n++], 256, "shard-%03u/%.200s", s, de->d_name);
            }
        }
        closedir(d);
    }
    qsort(out, n, 256, cmp_name);
    return n;
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* Goal: the compaction pass halfway through building the store returned 0 within 60 s. */
static void
test_midway_compaction_returns(void **state)
{
    (void)state;
    assert_int_equal(midway_compaction, 0);
}

/* Goal: CURRENT and the manifest damaged every way: refused without a change, or served whole;
 * repaired to exactly the model. */
static void
test_damaged_current_and_manifest(void **state)
{
    (void)state;
    struct tally t = { 0 };
    file_cases(C_CONTROL, "CURRENT", NULL, &t);
    char man[8][256];
    size_t n = top_files("MANIFEST-", man, 8);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        file_cases(C_CONTROL, man[i], NULL, &t);
    }
    finish("CURRENT and MANIFEST", &t);
}

/* Goal: each segment damaged every way, and every segment deleted at once: refused without a
 * change, or served with nothing lost or back; a repair loses only keys whose newest record the
 * segment held. */
static void
test_damaged_segments(void **state)
{
    (void)state;
    struct tally t = { 0 };
    static char segs[64][256];
    size_t n = shard_files(".seg", segs, 64);
    assert_true(n >= 4);
    bool *plaus = calloc(DM_KEYS, sizeof(bool));
    assert_non_null(plaus);
    for (size_t i = 0; i < n; i++) {
        char path[4500];
        snprintf(path, sizeof(path), "%s/%s", base_dir, segs[i]);
        memset(plaus, 0, DM_KEYS * sizeof(bool));
        scan_segment(path, plaus);
        file_cases(C_SEGMENT, segs[i], plaus, &t);
    }
    memset(plaus, 1, DM_KEYS * sizeof(bool));
    struct dcase c;
    memset(&c, 0, sizeof(c));
    c.cls = C_SEGMENT;
    c.kind = K_DELETE;
    c.all_segs = true;
    c.plaus = plaus;
    c.what = "deleted: every segment,";
    snprintf(c.rel, sizeof(c.rel), "shard-*/*.seg");
    run_case(&c, &t);
    free(plaus);
    finish("segments", &t);
}

/* Goal: each hint file damaged every way: a hint is only an accelerator, so the store is served
 * whole (or refused without a change and repaired to exactly the model). */
static void
test_damaged_hints(void **state)
{
    (void)state;
    struct tally t = { 0 };
    static char hints[64][256];
    size_t n = shard_files(".hint", hints, 64);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++) {
        file_cases(C_HINT, hints[i], NULL, &t);
    }
    finish("hints", &t);
}

/* Goal: the snapshot beside the store damaged every way changes nothing the store serves. */
static void
test_damaged_snapshot(void **state)
{
    (void)state;
    struct tally t = { 0 };
    char snaps[8][256];
    size_t n = top_files("snapshot-", snaps, 8);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        file_cases(C_SNAPSHOT, snaps[i], NULL, &t);
    }
    finish("snapshot", &t);
}

/* Goal: a shard directory removed, renamed away (DIR/shard-SSS.moved) or swapped with the other
 * one: refused without a change, never served with half the keys; after a repair, a renamed
 * directory loses nothing, a removed one only its own keys. */
static void
test_damaged_shard_directories(void **state)
{
    (void)state;
    struct tally t = { 0 };
    bool *plaus = calloc(DM_KEYS, sizeof(bool));
    assert_non_null(plaus);
    for (unsigned s = 0; s < 2; s++) {
        struct dcase c;
        memset(&c, 0, sizeof(c));
        snprintf(c.rel, sizeof(c.rel), "shard-%03u", s);
        memset(plaus, 0, DM_KEYS * sizeof(bool));
        static char segs[64][4096];
        size_t n = tu_shard_segments(base_dir, s, segs, 64);
        for (size_t i = 0; i < n; i++) {
            scan_segment(segs[i], plaus);
        }
        c.cls = C_SHARD_RM;
        c.kind = K_RMRF;
        c.plaus = plaus;
        c.what = "removed (rm -rf):";
        run_case(&c, &t);
        c.cls = C_SHARD_MOVE;
        c.kind = K_RENAME;
        c.plaus = NULL;
        c.what = "renamed to .moved:";
        run_case(&c, &t);
    }
    struct dcase c;
    memset(&c, 0, sizeof(c));
    snprintf(c.rel, sizeof(c.rel), "shard-000 <-> shard-001");
    c.cls = C_SHARD_MOVE;
    c.kind = K_SWAP;
    c.what = "swapped:";
    run_case(&c, &t);
    free(plaus);
    finish("shard directories", &t);
}

static int
setup(void **state)
{
    (void)state;
    base_seed = tu_seed("damage_matrix");
    const char *every = getenv("HTKV_DAMAGE_EVERY");
    if (every != NULL && strtoull(every, NULL, 10) > 1) {
        case_every = strtoull(every, NULL, 10);
        fprintf(stderr, "[damage_matrix] one case in %llu (HTKV_DAMAGE_EVERY)\n",
                (unsigned long long)case_every);
    }
    build_store();
    static char segs[256][4096];
    size_t n = tu_segments(base_dir, segs, 256);
    for (size_t i = 0; i < n; i++) {
        scan_segment(segs[i], NULL);
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    summary("total", &total);
    fprintf(stderr,
            "[damage_matrix] time: copies %.1f s, opens and checks of damaged copies %.1f s, "
            "htkvctl verify "
            "%.1f s, repair %.1f s, open and check after repair %.1f s\n",
            time_copy, time_open, time_verify, time_repair, time_after);
#ifndef HTKVCTL_PATH
    fprintf(stderr, "[damage_matrix] HTKVCTL_PATH not defined: verify and repair not run\n");
#endif
    tu_rmrf(base_dir);
    tu_rmrf(old_dir);
    free(base_dir);
    free(old_dir);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_midway_compaction_returns),
        cmocka_unit_test(test_damaged_current_and_manifest),
        cmocka_unit_test(test_damaged_segments),
        cmocka_unit_test(test_damaged_hints),
        cmocka_unit_test(test_damaged_snapshot),
        cmocka_unit_test(test_damaged_shard_directories),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
