/*
 * test_integrity_regress.c - regressions for integrity holes a careless or hostile user can hit
 * through the public API and htkvctl, one test each, named after what it proves:
 * htkv_compact_now() returns on a store of distinct keys (a watchdog turns a hang into a
 * failure); a store without CURRENT, or with only its segments, is refused and nothing is
 * deleted; a half manifest never opens as an empty store; versions never repeat after a
 * compaction dropped the newest ones, nor after a restore of an older snapshot; a damaged last
 * tombstone is corruption, never a resurrection; a failed open of a foreign directory leaves no
 * LOCK; a regular file named shard-000 makes create fail without creating anything; a FIFO
 * given as a snapshot fails fast instead of blocking; htkv_last_error() does not keep an older
 * message after an -EINVAL. The htkvctl parts need HTKVCTL_PATH (tools/htkvctl/CMakeLists.txt).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <htkv/replication.h>

#include "tests/support/testutil.h"
#include "tests/support/tool.h"

/* ---- file trees (tu_tree_take(): every file and directory with its bytes, LOCK aside) ------ */

/* Entries of @p t whose name ends with @p ext. */
static size_t
tree_count(const struct tu_tree *t, const char *ext)
{
    size_t n = 0, e = strlen(ext);
    for (size_t i = 0; i < t->n; i++) {
        size_t l = strlen(t->ents[i].rel);
        if (l > e && strcmp(t->ents[i].rel + l - e, ext) == 0) {
            n++;
        }
    }
    return n;
}

/* ---- children with a deadline --------------------------------------------------------------- */

/* Run @p fn in a child process (its own store handles; no cmocka asserts there: it returns its
 * exit status, printing why it fails). A child that runs past @p seconds fails the test. */
static int
run_child(int (*fn)(void *), void *arg, unsigned seconds, const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tu_assert_hook_reset(); /* an engine assertion aborts the child */
        _exit(fn(arg));
    }
    int st = tu_wait_deadline(pid, seconds);
    if (st < 0) {
        fprintf(stderr, "%s did not return within %u s (killed)\n", what, seconds);
        fail();
    }
    return st;
}

#ifdef HTKVCTL_PATH
/* Run htkvctl with the arguments after @p secs, outputs discarded; its exit status, 128 + signal,
 * or -1 when it ran past @p secs seconds (tests/support/tool.h). */
#define TOOL(secs, ...) tu_tool_status(HTKVCTL_PATH, TU_ARGS(__VA_ARGS__), (secs))
#endif

/* ---- helpers -------------------------------------------------------------------------------- */

static size_t
key10(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "k%09u", i); /* 10 bytes */
}

static void
put_n(htkv_db *db, unsigned n, uint64_t tag)
{
    char key[16];
    unsigned char val[100];
    for (unsigned i = 0; i < n; i++) {
        tu_fill(val, sizeof(val), i * 4 + tag);
        assert_int_equal(htkv_put(db, key, key10(i, key), val, sizeof(val)), 0);
    }
}

static void
expect_n(htkv_db *db, unsigned n, uint64_t tag)
{
    char key[16];
    unsigned char val[100];
    for (unsigned i = 0; i < n; i++) {
        tu_fill(val, sizeof(val), i * 4 + tag);
        tu_context("key %u", i);
        tu_expect(db, key, key10(i, key), val, sizeof(val));
    }
}

/* Names in @p dir other than "." and "..", comma-separated into @p out; returns the count. */
static size_t
list_dir(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0, o = 0;
    out[0] = '\0';
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        n++;
        if (o < cap) {
            o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? "," : "", de->d_name);
        }
    }
    closedir(d);
    return n;
}

/* ---- compaction terminates ------------------------------------------------------------------ */

struct compact_arg {
    const char *dir;
    unsigned shards;
    bool overwrite;
};

#define CN_KEYS 2500u

static void
compact_config(htkv_config *cfg, const struct compact_arg *a)
{
    tu_config(cfg, a->dir, HTKV_SYNC_INTERVAL);
    cfg->shard_count = a->shards;
    cfg->max_segment_bytes = 65536;
    cfg->compaction_interval_ms = 0;
}

static int
compact_child(void *p)
{
    const struct compact_arg *a = p;
    htkv_config cfg;
    compact_config(&cfg, a);
    tu_assert_hook_reset();
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", htkv_strerror(rc));
        return 1;
    }
    char key[16];
    unsigned char val[100], buf[128];
    for (unsigned pass = 0; pass < (a->overwrite ? 2u : 1u); pass++) {
        for (unsigned i = 0; i < CN_KEYS; i++) {
            tu_fill(val, sizeof(val), i * 4 + pass);
            rc = htkv_put(db, key, key10(i, key), val, sizeof(val));
            if (rc != 0) {
                fprintf(stderr, "put %u: %s\n", i, htkv_strerror(rc));
                return 1;
            }
        }
    }
    rc = htkv_compact_now(db);
    if (rc != 0) {
        fprintf(stderr, "htkv_compact_now: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
        return 2;
    }
    for (unsigned i = 0; i < CN_KEYS; i++) {
        size_t n = 0;
        tu_fill(val, sizeof(val), i * 4 + (a->overwrite ? 1 : 0));
        rc = htkv_get(db, key, key10(i, key), buf, sizeof(buf), &n);
        if (rc != 0 || n != sizeof(val) || memcmp(buf, val, n) != 0) {
            fprintf(stderr, "after compaction, key %u: %s, %zu bytes\n", i, htkv_strerror(rc), n);
            return 3;
        }
    }
    rc = htkv_close(db);
    if (rc != 0) {
        fprintf(stderr, "close: %s\n", htkv_strerror(rc));
        return 4;
    }
    return 0;
}

/* Goal: a full pass over segments of only distinct keys (and, again, with every key overwritten
 * once) returns, with 1 and 4 shards; the data is intact after it and after a reopen. Method:
 * the writes and the pass run in a child that a 60 s deadline kills. */
static void
test_compact_now_terminates_on_distinct_keys(void **state)
{
    (void)state;
    const struct {
        unsigned shards;
        bool overwrite;
    } variants[] = { { 1, false }, { 4, false }, { 1, true }, { 4, true } };
    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        char *dir = tu_tmpdir("regress-compact");
        struct compact_arg a = { dir, variants[v].shards, variants[v].overwrite };
        char what[128];
        snprintf(what, sizeof(what), "htkv_compact_now (%u shards, %s)", a.shards,
                 a.overwrite ? "every key overwritten once" : "distinct keys");
        int st = run_child(compact_child, &a, 60, what);
        if (st != 0) {
            fprintf(stderr, "%s: child exit status %d\n", what, st);
        }
        assert_int_equal(st, 0);
        htkv_config cfg;
        compact_config(&cfg, &a);
        htkv_db *db = tu_open(&cfg);
        expect_n(db, CN_KEYS, a.overwrite ? 1 : 0);
        assert_int_equal(tu_stats(db).live_keys, CN_KEYS);
        assert_int_equal(htkv_close(db), 0);
        tu_rmrf(dir);
        free(dir);
    }
}

/* ---- a store without CURRENT ---------------------------------------------------------------- */

static void
fill_2000(const char *dir)
{
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    put_n(db, 2000, 0);
    assert_int_equal(htkv_close(db), 0);
}

/* Open @p dir with defaults (create_if_missing 1): must be HTKV_ECORRUPT with every file as it
 * was. */
static void
expect_refused_unchanged(const char *dir, const char *what)
{
    struct tu_tree before = tu_tree_take(dir);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != HTKV_ECORRUPT) {
        fprintf(stderr, "%s: htkv_open gave %d (%s), want HTKV_ECORRUPT\n", what, rc,
                htkv_strerror(rc));
    }
    if (rc == 0) {
        fprintf(stderr, "%s: opened with %llu live keys\n", what,
                (unsigned long long)tu_stats(db).live_keys);
        assert_int_equal(htkv_close(db), 0);
    }
    char w[256];
    snprintf(w, sizeof(w), "%s, open gave %s", what, htkv_strerror(rc));
    tu_tree_expect_unchanged(&before, dir, w);
    assert_int_equal(rc, HTKV_ECORRUPT);
    assert_null(db);
    tu_tree_free(&before);
}

/* Goal: a store whose CURRENT is gone is refused (HTKV_ECORRUPT), not re-created over its
 * segments: every segment and hint stays, byte for byte; same for a directory that holds only
 * shard-000 and its segments. */
static void
test_missing_current_refuses_and_deletes_nothing(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-current");
    fill_2000(dir);
    char p[4300];
    snprintf(p, sizeof(p), "%s/CURRENT", dir);
    assert_int_equal(unlink(p), 0);
    struct tu_tree t = tu_tree_take(dir);
    assert_true(tree_count(&t, ".seg") >= 4);
    assert_true(tree_count(&t, ".hint") >= 1);
    tu_tree_free(&t);
    expect_refused_unchanged(dir, "store without CURRENT");

    /* Only shard-000 and its segments: the rest moved away. */
    char *only = tu_tmpdir("regress-segs-only");
    snprintf(p, sizeof(p), "%s/shard-000", only);
    assert_int_equal(mkdir(p, 0755), 0);
    static char segs[64][4096];
    size_t n = tu_shard_segments(dir, 0, segs, 64);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        unsigned char *buf = tu_read_whole(segs[i], &len);
        assert_non_null(buf);
        char to[8400];
        snprintf(to, sizeof(to), "%s/%s", p, strrchr(segs[i], '/') + 1);
        int fd = open(to, O_WRONLY | O_CREAT | O_EXCL, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, buf, len), (ssize_t)len);
        close(fd);
        free(buf);
    }
    expect_refused_unchanged(only, "directory holding only shard-000/*.seg");
    tu_rmrf(only);
    free(only);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a truncated manifest ------------------------------------------------------------------- */

/* Goal: a manifest cut to half its length is refused (HTKV_ECORRUPT, nothing changed) or opens
 * with every key: never as a store that lost its segments. */
static void
test_truncated_manifest_refuses(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-manifest");
    fill_2000(dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    char man[4400] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "MANIFEST-", 9) == 0) {
            snprintf(man, sizeof(man), "%s/%s", dir, de->d_name);
        }
    }
    closedir(d);
    assert_true(man[0] != '\0');
    long long len = tu_file_size(man);
    assert_true(len > 2);
    assert_int_equal(tu_truncate(man, len / 2), 0);

    struct tu_tree before = tu_tree_take(dir);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        char w[256];
        snprintf(w, sizeof(w), "manifest cut to half, open refused with %s", htkv_strerror(rc));
        tu_tree_expect_unchanged(&before, dir, w);
        if (rc != HTKV_ECORRUPT) {
            fprintf(stderr, "open refused with %s, want HTKV_ECORRUPT\n", htkv_strerror(rc));
        }
        assert_int_equal(rc, HTKV_ECORRUPT);
    } else {
        uint64_t live = tu_stats(db).live_keys;
        if (live != 2000) {
            fprintf(stderr, "manifest cut to half: opened with %llu live keys of 2000\n",
                    (unsigned long long)live);
        }
        expect_n(db, 2000, 0);
        assert_int_equal(live, 2000);
        assert_int_equal(htkv_close(db), 0);
    }
    tu_tree_free(&before);
    tu_rmrf(dir);
    free(dir);
}

/* ---- versions ------------------------------------------------------------------------------- */

static uint64_t
latest(htkv_db *db)
{
    uint64_t v = 0;
    assert_int_equal(htkv_latest_version(db, &v), 0);
    return v;
}

static uint64_t
put_version(htkv_db *db, const char *key, const char *val)
{
    assert_int_equal(htkv_put(db, key, strlen(key), val, strlen(val)), 0);
    uint64_t v = 0;
    size_t n = 0;
    char buf[64];
    assert_int_equal(htkv_get_version(db, key, strlen(key), buf, sizeof(buf), &n, &v), 0);
    return v;
}

/* Goal: a compaction that drops the newest records (tombstones of the last writes) does not let
 * a reopened store hand out those versions again, and the change feed reports the next write;
 * the same after restoring an older snapshot: the next write is above every version acknowledged
 * before. */
static void
test_versions_never_repeat_after_compaction(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-versions");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.shard_count = 1;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    char key[16];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put_version(db, key, "v");
    }
    assert_int_equal(htkv_delete(db, "k9", 2), 0);
    assert_int_equal(htkv_delete(db, "k8", 2), 0);
    uint64_t acked = latest(db);
    assert_true(acked >= 12);
    assert_int_equal(htkv_compact_now(db), 0);
    assert_int_equal(htkv_close(db), 0);

    db = tu_open(&cfg);
    uint64_t l = latest(db);
    if (l < acked) {
        fprintf(stderr, "after compaction and reopen: latest version %llu, %llu was acknowledged\n",
                (unsigned long long)l, (unsigned long long)acked);
    }
    assert_true(l >= acked);
    uint64_t v = put_version(db, "k10", "new");
    if (v <= acked) {
        fprintf(stderr, "the next put got version %llu, %llu was acknowledged before\n",
                (unsigned long long)v, (unsigned long long)acked);
    }
    assert_true(v > acked);
    htkv_changes *ch = NULL;
    int rc = htkv_changes_since(db, acked, &ch);
    if (rc != 0) {
        fprintf(stderr, "htkv_changes_since(%llu): %s\n", (unsigned long long)acked,
                htkv_strerror(rc));
    }
    assert_int_equal(rc, 0);
    htkv_command cmd;
    bool found = false;
    while ((rc = htkv_changes_next(ch, &cmd)) == 1) {
        if (cmd.type == HTKV_CMD_SET && cmd.key_len == 3 && memcmp(cmd.key, "k10", 3) == 0 &&
            cmd.version == v) {
            found = true;
        }
    }
    assert_int_equal(rc, 0);
    htkv_changes_destroy(ch);
    assert_true(found);

    /* An older snapshot restored: the store's versions go back with it, the counter must not. */
    char snap[4300];
    snprintf(snap, sizeof(snap), "%s.snap", dir);
    assert_int_equal(htkv_snapshot_write(db, snap), 0);
    for (int i = 11; i < 15; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put_version(db, key, "later");
    }
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(htkv_delete(db, key, strlen(key)), 0);
    }
    assert_int_equal(htkv_compact_now(db), 0);
    acked = latest(db);
    rc = htkv_snapshot_restore(db, snap);
    if (rc != 0) {
        fprintf(stderr, "restore: %s (%s)\n", htkv_strerror(rc), htkv_last_error());
    }
    assert_int_equal(rc, 0);
    assert_int_equal(htkv_close(db), 0);
    db = tu_open(&cfg);
    tu_expect(db, "k10", 3, "new", 3);
    tu_expect(db, "k0", 2, "v", 1);
    tu_expect(db, "k11", 3, NULL, 0);
    l = latest(db);
    if (l < acked) {
        fprintf(stderr, "after restore and reopen: latest version %llu, %llu was acknowledged\n",
                (unsigned long long)l, (unsigned long long)acked);
    }
    assert_true(l >= acked);
    v = put_version(db, "k99", "after-restore");
    if (v <= acked) {
        fprintf(stderr,
                "after restore and reopen the next put got version %llu, %llu was "
                "acknowledged before\n",
                (unsigned long long)v, (unsigned long long)acked);
    }
    assert_true(v > acked);
    assert_int_equal(htkv_close(db), 0);
    unlink(snap);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a damaged last tombstone --------------------------------------------------------------- */

#define VICTIM "victim-key"

/* Open a fresh copy of @p damaged with @p cfg's options: HTKV_ECORRUPT, or opened and the victim
 * does not read its old value; except with HTKV_RECOVERY_SKIP_CORRUPT, which loses the damaged
 * tombstone by contract (htkv.h): there the skip must be counted, and the old value may show.
 * Returns the open's code. */
static int
open_copy_victim(const char *damaged, htkv_config cfg, const char *what)
{
    bool skip = cfg.recovery == HTKV_RECOVERY_SKIP_CORRUPT;
    char *copy = tu_tmpdir("regress-tomb-copy");
    tu_copy_store(damaged, copy);
    cfg.data_dir = copy;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    int g = HTKV_ENOTFOUND, c = 0;
    if (rc == 0) {
        char buf[64];
        size_t n = 0;
        g = htkv_get(db, VICTIM, strlen(VICTIM), buf, sizeof(buf), &n);
        c = htkv_contains(db, VICTIM, strlen(VICTIM));
        if (skip) {
            assert_true(tu_stats(db).skipped_bytes > 0); /* loud: the loss is counted */
            g = g == 0 ? HTKV_ENOTFOUND : g;
            c = 0;
        }
        if (g != HTKV_ENOTFOUND && g != HTKV_ECORRUPT) {
            fprintf(stderr, "%s: opened, and the deleted key reads %s (%zu bytes)\n", what,
                    htkv_strerror(g), n);
        }
        assert_int_equal(htkv_close(db), 0);
    } else if (rc != HTKV_ECORRUPT) {
        fprintf(stderr, "%s: open gave %s\n", what, htkv_strerror(rc));
    }
    tu_rmrf(copy);
    free(copy);
    assert_true(rc == 0 || rc == HTKV_ECORRUPT);
    assert_true(g == HTKV_ENOTFOUND || g == HTKV_ECORRUPT);
    assert_true(c == 0 || c == HTKV_ECORRUPT);
    return rc;
}

/* Goal: when the last write of a store was a delete, a flipped bit in that tombstone is
 * corruption (strict open: HTKV_ECORRUPT, nothing changed; `htkvctl verify` not clean), never a
 * torn tail that brings the key's old value back; no open that succeeds (read-only, without
 * hints) reads the old value; skip-corrupt skips it loudly (counted), as htkv.h says. */
static void
test_damaged_last_tombstone_is_corruption(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-tomb");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.shard_count = 1;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    put_n(db, 200, 0);
    assert_int_equal(htkv_put(db, VICTIM, strlen(VICTIM), "old value", 9), 0);
    put_n(db, 20, 1);
    assert_int_equal(htkv_delete(db, VICTIM, strlen(VICTIM)), 0);
    assert_int_equal(htkv_close(db), 0);

    static char segs[64][4096];
    size_t n = tu_shard_segments(dir, 0, segs, 64);
    assert_true(n >= 1);
    const char *seg = segs[n - 1];
    struct tu_rec *recs = calloc(4096, sizeof(*recs));
    assert_non_null(recs);
    size_t nr = tu_seg_scan(seg, recs, 4096);
    assert_true(nr >= 1 && nr <= 4096);
    const struct tu_rec *last = &recs[nr - 1];
    /* The delete was the last write: the newest segment's last record is the victim's
     * tombstone (no value bytes). */
    assert_int_equal(last->key_len, strlen(VICTIM));
    assert_memory_equal(last->key, VICTIM, strlen(VICTIM));
    assert_int_equal(last->val_len, 0);
    /* Its last key byte: the last non-zero byte of the segment's data. */
    long long at = last->off + last->raw - 1;
    assert_int_equal(tu_flip_bit(seg, at, 0), 0);
    free(recs);

    char *damaged = tu_tmpdir("regress-tomb-damaged");
    tu_copy_store(dir, damaged);

    /* Strict, defaults: refused, nothing changed. */
    struct tu_tree before = tu_tree_take(dir);
    htkv_config strict;
    tu_config(&strict, dir, HTKV_SYNC_INTERVAL);
    db = NULL;
    int rc = htkv_open(&strict, &db);
    if (rc == 0) {
        char buf[64];
        size_t vn = 0;
        int g = htkv_get(db, VICTIM, strlen(VICTIM), buf, sizeof(buf), &vn);
        fprintf(stderr,
                "strict open of a damaged last tombstone succeeded; the deleted key "
                "reads %s%s\n",
                htkv_strerror(g), g == 0 ? " (its old value is back)" : "");
        assert_int_equal(htkv_close(db), 0);
    }
    assert_int_equal(rc, HTKV_ECORRUPT);
    tu_tree_expect_unchanged(&before, dir, "strict open refused the damaged tombstone");
    tu_tree_free(&before);

#ifdef HTKVCTL_PATH
    int st = TOOL(60, "verify", damaged);
    if (st == 0) {
        fprintf(stderr, "`htkvctl verify` says clean on a damaged last tombstone\n");
    }
    assert_true(st != 0 && st != -1 && st < 126);
#endif

    htkv_config c2 = strict;
    c2.recovery = HTKV_RECOVERY_SKIP_CORRUPT;
    open_copy_victim(damaged, c2, "recovery = skip-corrupt");
    c2 = strict;
    c2.read_only = 1;
    open_copy_victim(damaged, c2, "read_only");
    c2 = strict;
    c2.hint_files = 0;
    open_copy_victim(damaged, c2, "hint_files = 0");
    c2.recovery = HTKV_RECOVERY_SKIP_CORRUPT;
    open_copy_victim(damaged, c2, "hint_files = 0, skip-corrupt");

    tu_rmrf(damaged);
    free(damaged);
    tu_rmrf(dir);
    free(dir);
}

/* ---- failed opens create nothing ------------------------------------------------------------ */

/* Goal: opening a directory that holds a foreign file fails and leaves it as it was, without a
 * LOCK file: with create_if_missing 0 (any error) and 1 (HTKV_ENOTSTORE). */
static void
test_failed_open_leaves_no_lock_in_foreign_dir(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-foreign");
    char p[4300];
    snprintf(p, sizeof(p), "%s/notes.txt", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a store\n", 12), 12);
    close(fd);
    for (int cim = 0; cim <= 1; cim++) {
        htkv_config cfg;
        tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
        cfg.create_if_missing = cim;
        htkv_db *db = NULL;
        int rc = htkv_open(&cfg, &db);
        char names[512];
        size_t n = list_dir(dir, names, sizeof(names));
        if (rc == 0 || n != 1) {
            fprintf(stderr, "create_if_missing %d: open gave %s; the directory holds: %s\n", cim,
                    htkv_strerror(rc), names);
        }
        if (rc == 0) {
            assert_int_equal(htkv_close(db), 0);
        }
        assert_true(rc != 0);
        assert_null(db);
        if (cim) {
            assert_int_equal(rc, HTKV_ENOTSTORE);
        }
        assert_false(tu_exists(dir, "LOCK"));
        assert_int_equal(n, 1);
    }
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a regular file named shard-000 in an empty directory makes create fail without creating
 * anything (no CURRENT, no manifest, no shard directory, no LOCK; the file untouched);
 * `htkvctl verify` does not call the directory clean. */
static void
test_regular_file_named_like_shard_dir(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-shardfile");
    char p[4300];
    snprintf(p, sizeof(p), "%s/shard-000", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    char names[512];
    list_dir(dir, names, sizeof(names));
    if (rc == 0) {
        fprintf(stderr, "create over a regular file shard-000 succeeded; the directory holds: %s\n",
                names);
        assert_int_equal(htkv_close(db), 0);
    }
    assert_true(rc != 0);
    assert_null(db);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    bool created = false;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strcmp(de->d_name, "shard-000") == 0) {
            continue;
        }
        created = true;
    }
    closedir(d);
    if (created) {
        fprintf(stderr, "the failed create (%s) left: %s\n", htkv_strerror(rc), names);
    }
    assert_false(created);
    size_t len = 0;
    unsigned char *buf = tu_read_whole(p, &len);
    assert_non_null(buf); /* still a regular file */
    assert_int_equal(len, 1);
    assert_int_equal(buf[0], 'x');
    free(buf);
#ifdef HTKVCTL_PATH
    int st = TOOL(30, "verify", dir);
    if (st == 0) {
        fprintf(stderr, "`htkvctl verify` says clean on a directory with a file shard-000\n");
    }
    assert_true(st != 0 && st != -1 && st < 126);
#endif
    tu_rmrf(dir);
    free(dir);
}

/* ---- a FIFO as a snapshot ------------------------------------------------------------------- */

struct fifo_arg {
    const char *dir;
    const char *fifo;
};

static int
fifo_child(void *p)
{
    const struct fifo_arg *a = p;
    htkv_config cfg;
    tu_config(&cfg, a->dir, HTKV_SYNC_INTERVAL);
    tu_assert_hook_reset();
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "open: %s\n", htkv_strerror(rc));
        return 1;
    }
    rc = htkv_put(db, "kept", 4, "yes", 3);
    if (rc != 0) {
        return 1;
    }
    rc = htkv_snapshot_restore(db, a->fifo);
    if (rc == 0) {
        fprintf(stderr, "htkv_snapshot_restore of a FIFO succeeded\n");
        return 2;
    }
    char buf[8];
    size_t n = 0;
    rc = htkv_get(db, "kept", 4, buf, sizeof(buf), &n);
    if (rc != 0 || n != 3 || memcmp(buf, "yes", 3) != 0) {
        fprintf(stderr, "the failed restore changed the store: %s\n", htkv_strerror(rc));
        return 3;
    }
    uint64_t version = 0, count = 0;
    rc = htkv_snapshot_file_version(a->fifo, &version, &count);
    if (rc == 0) {
        fprintf(stderr, "htkv_snapshot_file_version of a FIFO succeeded\n");
        return 4;
    }
    htkv_close(db);
    return 0;
}

/* Goal: a FIFO given as the snapshot to restore (htkv_snapshot_restore(),
 * htkv_snapshot_file_version(), `htkvctl snapshot import`) is refused within seconds instead of
 * blocking until a writer appears; the store is unchanged. */
static void
test_snapshot_restore_of_fifo_fails_fast(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-fifo");
    char *fdir = tu_tmpdir("regress-fifo-file");
    char fifo[4300];
    snprintf(fifo, sizeof(fifo), "%s/snap.fifo", fdir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    struct fifo_arg a = { dir, fifo };
    int st = run_child(fifo_child, &a, 10, "htkv_snapshot_restore(FIFO)");
    assert_int_equal(st, 0);

    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    tu_expect(db, "kept", 4, "yes", 3);
    assert_int_equal(htkv_delete(db, "kept", 4), 0); /* empty: import needs no --force */
    assert_int_equal(htkv_close(db), 0);
#ifdef HTKVCTL_PATH
    st = TOOL(10, "snapshot", "import", fifo, dir);
    if (st == -1) {
        fprintf(stderr, "`htkvctl snapshot import FIFO DIR` still blocked after 10 s (killed)\n");
    }
    assert_true(st != 0 && st != -1 && st < 126);
#endif
    unlink(fifo);
    tu_rmrf(fdir);
    free(fdir);
    tu_rmrf(dir);
    free(dir);
}

/* ---- htkv_last_error ------------------------------------------------------------------------ */

/* Make the calling thread's last error a message about a missing store; returns a copy. */
static char *
older_error(const char *missing)
{
    htkv_config cfg;
    tu_config(&cfg, missing, HTKV_SYNC_INTERVAL);
    cfg.create_if_missing = 0;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    assert_true(rc != 0);
    const char *msg = htkv_last_error();
    assert_non_null(msg);
    if (msg[0] == '\0') {
        fprintf(stderr,
                "opening a missing store with create_if_missing 0 (%s) leaves no "
                "htkv_last_error() message\n",
                htkv_strerror(rc));
    }
    assert_true(msg[0] != '\0');
    char *copy = strdup(msg);
    assert_non_null(copy);
    return copy;
}

static void
expect_fresh(const char *old, int rc, const char *call)
{
    const char *now = htkv_last_error();
    assert_non_null(now);
    if (strcmp(now, old) == 0) {
        fprintf(stderr, "%s returned %s but htkv_last_error() still says: %s\n", call,
                htkv_strerror(rc), now);
    }
    assert_int_equal(rc, -EINVAL);
    assert_string_not_equal(now, old);
}

/* Goal: after a failure with a message, a call that fails with -EINVAL does not leave that
 * older, unrelated message in htkv_last_error() (it is empty or about the new failure). */
static void
test_last_error_is_fresh_after_einval(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-lasterr");
    char missing[4300];
    snprintf(missing, sizeof(missing), "%s/no-such-store/below", dir);
    char *live = tu_tmpdir("regress-lasterr-db");
    htkv_config cfg;
    tu_config(&cfg, live, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);

    char *old = older_error(missing);
    int rc = htkv_put(db, NULL, 5, "v", 1);
    expect_fresh(old, rc, "htkv_put(db, NULL key, 5 bytes)");
    free(old);

    old = older_error(missing);
    htkv_db *none = NULL;
    rc = htkv_open(NULL, &none);
    expect_fresh(old, rc, "htkv_open(NULL, ...)");
    free(old);

    old = older_error(missing);
    char buf[8];
    size_t n = 0;
    rc = htkv_get(db, NULL, 3, buf, sizeof(buf), &n);
    expect_fresh(old, rc, "htkv_get(db, NULL key, 3 bytes)");
    free(old);

    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(live);
    free(live);
    tu_rmrf(dir);
    free(dir);
}

/* ---- known ends without a clean close ------------------------------------------------------- */

/* Goal: a hint file is a known end too: when a crash left no clean-close record, a segment cut
 * below the end its (whole) hint names is refused, not taken for a torn tail (a hint past the
 * end of its segment was once dropped as stale, and the cut records lost in silence).
 * Method: 64 KiB segments, overwrites, a full compaction (it writes hints for the segments it
 * seals), more writes, a crash-like close; cut a segment that has a hint in its middle record;
 * open must refuse with every file as it was. */
static void
test_segment_cut_below_its_hint_after_a_crash_is_corruption(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("regress-hint-end");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    cfg.shard_count = 1;
    cfg.max_segment_bytes = 64u << 10;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    put_n(db, 1500, 0);
    put_n(db, 1500, 1);
    assert_int_equal(htkv_compact_now(db), 0);
    put_n(db, 300, 2);
    tu_close_as_crash(db);

    static char segs[256][4096];
    size_t n = tu_shard_segments(dir, 0, segs, 256);
    assert_true(n >= 2);
    const char *victim = NULL;
    for (size_t i = 0; i + 1 < n && victim == NULL; i++) {
        char hint[4200];
        snprintf(hint, sizeof(hint), "%.*s.hint", (int)(strlen(segs[i]) - 4), segs[i]);
        if (tu_file_size(hint) > 0) {
            victim = segs[i];
        }
    }
    assert_non_null(victim); /* compaction wrote a hint for a sealed segment */
    struct tu_rec *recs = calloc(4096, sizeof(*recs));
    assert_non_null(recs);
    size_t nr = tu_seg_scan(victim, recs, 4096);
    assert_true(nr >= 4);
    assert_int_equal(tu_truncate(victim, recs[nr / 2].off), 0);
    free(recs);
    expect_refused_unchanged(dir, "a segment cut below its hint's end after a crash");
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a segment of another store put in place of one of this store's (same name, same id,
 * same length, same versions, so its records check where they lie) is refused, never served.
 * Method: two one-shard stores written alike with different keys; copy B's first segment over
 * A's; open A: HTKV_ECORRUPT, every file as it was. */
static void
test_segment_of_another_store_is_refused(void **state)
{
    (void)state;
    char *da = tu_tmpdir("regress-own-a"), *dbb = tu_tmpdir("regress-own-b");
    htkv_config ca, cb;
    tu_config(&ca, da, HTKV_SYNC_INTERVAL);
    ca.shard_count = 1;
    ca.compaction_interval_ms = 0;
    cb = ca;
    cb.data_dir = dbb;
    htkv_db *a = tu_open(&ca), *b = tu_open(&cb);
    unsigned char val[100];
    for (unsigned i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof(k), "a%08u", i);
        tu_fill(val, sizeof(val), i);
        assert_int_equal(htkv_put(a, k, strlen(k), val, sizeof(val)), 0);
        k[0] = 'b';
        assert_int_equal(htkv_put(b, k, strlen(k), val, sizeof(val)), 0);
    }
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    static char sa[8][4096], sb[8][4096];
    assert_int_equal(tu_shard_segments(da, 0, sa, 8), 1);
    assert_int_equal(tu_shard_segments(dbb, 0, sb, 8), 1);
    assert_string_equal(strrchr(sa[0], '/'), strrchr(sb[0], '/')); /* the same id */
    long long len = tu_file_size(sb[0]);
    assert_true(len > 0);
    unsigned char *bytes = malloc((size_t)len);
    assert_non_null(bytes);
    assert_int_equal(tu_read_at(sb[0], 0, bytes, (size_t)len), 0);
    assert_int_equal(tu_truncate(sa[0], 0), 0);
    assert_int_equal(tu_write_at(sa[0], 0, bytes, (size_t)len), 0);
    free(bytes);
    expect_refused_unchanged(da, "a segment of another store");
    tu_rmrf(da);
    tu_rmrf(dbb);
    free(da);
    free(dbb);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact_now_terminates_on_distinct_keys),
        cmocka_unit_test(test_missing_current_refuses_and_deletes_nothing),
        cmocka_unit_test(test_truncated_manifest_refuses),
        cmocka_unit_test(test_versions_never_repeat_after_compaction),
        cmocka_unit_test(test_damaged_last_tombstone_is_corruption),
        cmocka_unit_test(test_failed_open_leaves_no_lock_in_foreign_dir),
        cmocka_unit_test(test_regular_file_named_like_shard_dir),
        cmocka_unit_test(test_snapshot_restore_of_fifo_fails_fast),
        cmocka_unit_test(test_last_error_is_fresh_after_einval),
        cmocka_unit_test(test_segment_cut_below_its_hint_after_a_crash_is_corruption),
        cmocka_unit_test(test_segment_of_another_store_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
