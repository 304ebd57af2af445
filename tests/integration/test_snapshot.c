/*
 * test_snapshot.c - snapshot files: a consistent, checksummed copy of the store that restores
 * exactly, deterministically written, and refused whole when damaged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "tests/support/testutil.h"

#include "engine/crc32c.h"
#include <htkv/replication.h>

#define NKEYS 500

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "snap-%05u", i);
}

/* Puts every key i with tag i + base (length 1 + i % 200), deletes every 7th. */
static void
fill(htkv_db *db, uint64_t base)
{
    unsigned char val[256];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        tu_fill(val, 1 + i % 200, i + base);
        assert_int_equal(htkv_put(db, key, key_of(i, key), val, 1 + i % 200), 0);
    }
    for (unsigned i = 0; i < NKEYS; i += 7) {
        assert_int_equal(htkv_delete(db, key, key_of(i, key)), 0);
    }
}

static void
check_filled_plus(htkv_db *db, uint64_t base, uint64_t extra)
{
    unsigned char val[256];
    char key[32];
    for (unsigned i = 0; i < NKEYS; i++) {
        size_t kl = key_of(i, key);
        if (i % 7 == 0) {
            tu_expect(db, key, kl, NULL, 0);
        } else {
            tu_fill(val, 1 + i % 200, i + base);
            tu_expect(db, key, kl, val, 1 + i % 200);
        }
    }
    assert_int_equal(tu_stats(db).live_keys, NKEYS - (NKEYS + 6) / 7 + extra);
}

static void
check_filled(htkv_db *db, uint64_t base)
{
    check_filled_plus(db, base, 0);
}

static htkv_db *
open_store(const char *tag, char **dir_out, htkv_config *cfg)
{
    char *dir = tu_tmpdir(tag);
    tu_config(cfg, dir, HTKV_SYNC_NEVER);
    cfg->max_segment_bytes = 64u << 10;
    *dir_out = dir;
    return tu_open(cfg);
}

/* Goal: a snapshot restored into another store (other shard count) reproduces every key, value
 * and version, replaces what was there, and survives reopen; later writes get higher versions.
 * Method: fill A, snapshot; B holds other keys; restore into B; compare; reopen; compare. */
static void
test_snapshot_restore_replaces_contents(void **state)
{
    (void)state;
    htkv_config ca, cb;
    char *da, *dbd;
    htkv_db *a = open_store("snap-a", &da, &ca);
    fill(a, 1);
    char path[4200];
    snprintf(path, sizeof(path), "%s/a.snap", da);
    assert_int_equal(htkv_snapshot_write(a, path), 0);
    uint64_t va = tu_stats(a).last_version;

    char *d2 = tu_tmpdir("snap-b");
    tu_config(&cb, d2, HTKV_SYNC_NEVER);
    cb.shard_count = 3;
    dbd = d2;
    htkv_db *b = tu_open(&cb);
    assert_int_equal(htkv_put(b, "other", 5, "x", 1), 0);
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(htkv_put(b, "spin", 4, "y", 1), 0); /* a higher version counter */
    }
    uint64_t vb = tu_stats(b).last_version;
    assert_int_equal(htkv_snapshot_restore(b, path), 0);
    check_filled(b, 1);
    tu_expect(b, "other", 5, NULL, 0);
    tu_expect(b, "spin", 4, NULL, 0);
    char key[32];
    uint64_t ver = 0;
    size_t n = 0;
    unsigned char buf[256];
    assert_int_equal(htkv_get_version(b, key, key_of(1, key), buf, sizeof(buf), &n, &ver), 0);
    uint64_t va1 = 0;
    assert_int_equal(htkv_get_version(a, key, key_of(1, key), buf, sizeof(buf), &n, &va1), 0);
    assert_int_equal(ver, va1);
    assert_int_equal(htkv_put(b, "after", 5, "z", 1), 0);
    assert_int_equal(htkv_get_version(b, "after", 5, buf, sizeof(buf), &n, &ver), 0);
    assert_true(ver > va && ver > vb);
    assert_int_equal(htkv_close(b), 0);
    b = tu_open(&cb);
    check_filled_plus(b, 1, 1);
    tu_expect(b, "after", 5, "z", 1);
    /* Ordered queries see the restored keys. */
    htkv_iter *it;
    assert_int_equal(htkv_get_prefix(b, "snap-", 5, &it), 0);
    uint64_t count = 0;
    while (htkv_iter_next(it, NULL, NULL, NULL, NULL) == 1) {
        count++;
    }
    htkv_iter_destroy(it);
    assert_int_equal(count, NKEYS - (NKEYS + 6) / 7);
    assert_int_equal(htkv_close(b), 0);
    assert_int_equal(htkv_close(a), 0);
    tu_rmrf(da);
    free(da);
    tu_rmrf(dbd);
    free(dbd);
}

static unsigned char *
slurp(const char *path, long long *len)
{
    *len = tu_file_size(path);
    assert_true(*len > 0);
    unsigned char *p = malloc((size_t)*len);
    assert_non_null(p);
    assert_int_equal(tu_read_at(path, 0, p, (size_t)*len), 0);
    return p;
}

/* Goal: two stores given the same writes write byte-identical snapshots, whatever their shard
 * counts or segment sizes; an empty store writes a valid empty snapshot. */
static void
test_snapshot_bytes_are_deterministic(void **state)
{
    (void)state;
    htkv_config ca, cb;
    char *da, *dbd;
    htkv_db *a = open_store("snap-det-a", &da, &ca);
    char *d2 = tu_tmpdir("snap-det-b");
    tu_config(&cb, d2, HTKV_SYNC_NEVER);
    cb.shard_count = 7;
    cb.max_segment_bytes = 1u << 20;
    dbd = d2;
    htkv_db *b = tu_open(&cb);
    char pa[4200], pb[4200];
    snprintf(pa, sizeof(pa), "%s/empty.snap", da);
    assert_int_equal(htkv_snapshot_write(a, pa), 0);
    htkv_db *c;
    {
        htkv_config cc;
        char *dc = tu_tmpdir("snap-det-c");
        tu_config(&cc, dc, HTKV_SYNC_NEVER);
        c = tu_open(&cc);
        assert_int_equal(htkv_put(c, "k", 1, "v", 1), 0);
        assert_int_equal(htkv_snapshot_restore(c, pa), 0);
        assert_int_equal(tu_stats(c).live_keys, 0);
        assert_int_equal(htkv_close(c), 0);
        tu_rmrf(dc);
        free(dc);
    }
    fill(a, 9);
    fill(b, 9);
    snprintf(pa, sizeof(pa), "%s/x.snap", da);
    snprintf(pb, sizeof(pb), "%s/x.snap", dbd);
    assert_int_equal(htkv_snapshot_write(a, pa), 0);
    assert_int_equal(htkv_snapshot_write(b, pb), 0);
    long long la, lb;
    unsigned char *xa = slurp(pa, &la), *xb = slurp(pb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(xa, xb, (size_t)la);
    free(xa);
    free(xb);
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    tu_rmrf(da);
    free(da);
    tu_rmrf(dbd);
    free(dbd);
}

/* Write @p snap (@p len bytes) to @p path with header version @p version and its header checksum
 * recomputed, so that only the version is out of the ordinary. */
static void
write_with_version(const unsigned char *snap, long long len, uint64_t version, const char *path)
{
    unsigned char *p = malloc((size_t)len);
    assert_non_null(p);
    memcpy(p, snap, (size_t)len);
    for (int i = 0; i < 8; i++) {
        p[16 + i] = (unsigned char)(version >> (8 * i));
    }
    uint32_t crc = htkv_crc32c(0, p, 60);
    for (int i = 0; i < 4; i++) {
        p[60 + i] = (unsigned char)(crc >> (8 * i));
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    free(p);
}

/* Goal: a damaged snapshot (any flipped bit, a cut at any length, a wrong magic) is refused
 * with HTKV_ECORRUPT and the store is unchanged. Method: every bit of the header, a bit every
 * 97 bytes of the body, cuts at 64 points. */
static void
test_snapshot_damaged_file_changes_nothing(void **state)
{
    (void)state;
    htkv_config ca, cb;
    char *da, *dbd;
    htkv_db *a = open_store("snap-bad-a", &da, &ca);
    fill(a, 3);
    char path[4200], bad[4200];
    snprintf(path, sizeof(path), "%s/good.snap", da);
    snprintf(bad, sizeof(bad), "%s/bad.snap", da);
    assert_int_equal(htkv_snapshot_write(a, path), 0);
    htkv_db *b = open_store("snap-bad-b", &dbd, &cb);
    fill(b, 100);
    long long len;
    unsigned char *good = slurp(path, &len);
    FILE *f;
    int tried = 0;
    for (long long bit = 0; bit < len * 8; bit += bit < 64 * 8 ? 1 : 97 * 8 + 3) {
        f = fopen(bad, "wb");
        assert_non_null(f);
        good[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        assert_int_equal(fwrite(good, 1, (size_t)len, f), (size_t)len);
        good[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        fclose(f);
        tu_context("bit %lld", bit);
        int rc = htkv_snapshot_restore(b, bad);
        /* Flipping a reserved header byte is caught by the header CRC too. */
        assert_true(rc == HTKV_ECORRUPT || rc == HTKV_EVERSION);
        tried++;
    }
    for (int k = 0; k < 64; k++) {
        long long cut = len * k / 64;
        f = fopen(bad, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(good, 1, (size_t)cut, f), (size_t)cut);
        fclose(f);
        tu_context("cut at %lld", cut);
        assert_int_equal(htkv_snapshot_restore(b, bad), HTKV_ECORRUPT);
    }
    assert_int_equal(htkv_snapshot_restore(b, "/nonexistent/x.snap"), -ENOENT);
    /* A header whose checksum agrees but whose version is past 2^62: restoring it would carry
     * the store's version counter to the edge of wrapping; refused like any damage. */
    write_with_version(good, len, UINT64_MAX, bad);
    assert_int_equal(htkv_snapshot_restore(b, bad), HTKV_ECORRUPT);
    assert_non_null(strstr(htkv_last_error(), "version out of range"));
    check_filled(b, 100);
    assert_true(tried > 100);
    /* The good one still restores. */
    assert_int_equal(htkv_snapshot_restore(b, path), 0);
    check_filled(b, 3);
    /* A snapshot that claims the largest version, 2^62, restores; the store then has no version
     * left: writes fail with -EOVERFLOW and change nothing; versions never go back. */
    write_with_version(good, len, UINT64_C(1) << 62, bad);
    assert_int_equal(htkv_snapshot_restore(b, bad), 0);
    check_filled(b, 3);
    assert_int_equal(htkv_put(b, "over", 4, "x", 1), -EOVERFLOW);
    htkv_batch *batch;
    assert_int_equal(htkv_batch_create(&batch), 0);
    assert_int_equal(htkv_batch_put(batch, "over", 4, "x", 1), 0);
    assert_int_equal(htkv_write(b, batch), -EOVERFLOW);
    htkv_batch_destroy(batch);
    /* Rolling back to an older snapshot takes a version of its own (it marks the restore for
     * the change feed): there is none left, so it is refused and changes nothing. */
    assert_int_equal(htkv_snapshot_restore(b, path), -EOVERFLOW);
    assert_int_equal(htkv_put(b, "over", 4, "x", 1), -EOVERFLOW);
    check_filled(b, 3);
    free(good);
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    tu_rmrf(da);
    free(da);
    tu_rmrf(dbd);
    free(dbd);
}

/* Goal: restore refuses to run under open views (HTKV_EBUSY) and on a read-only store; bad
 * arguments are refused; a snapshot taken under concurrent writes holds a consistent instant
 * (a view: the batch written meanwhile is all in or all out). */
static void
test_snapshot_refusals_and_consistency(void **state)
{
    (void)state;
    htkv_config ca;
    char *da;
    htkv_db *a = open_store("snap-ref", &da, &ca);
    fill(a, 5);
    char path[4200];
    snprintf(path, sizeof(path), "%s/s.snap", da);
    assert_int_equal(htkv_snapshot_write(NULL, path), -EINVAL);
    assert_int_equal(htkv_snapshot_write(a, NULL), -EINVAL);
    assert_int_equal(htkv_snapshot_restore(NULL, path), -EINVAL);
    assert_int_equal(htkv_snapshot_write(a, "/nonexistent/dir/s.snap"), -ENOENT);
    assert_int_equal(htkv_snapshot_write(a, path), 0);
    htkv_view *v;
    assert_int_equal(htkv_view_open(a, &v), 0);
    assert_int_equal(htkv_snapshot_restore(a, path), HTKV_EBUSY);
    htkv_view_close(v);
    assert_int_equal(htkv_snapshot_restore(a, path), 0);
    check_filled(a, 5);
    assert_int_equal(htkv_close(a), 0);
    ca.read_only = 1;
    a = tu_open(&ca);
    assert_int_equal(htkv_snapshot_restore(a, path), HTKV_EREADONLY);
    char p2[4200];
    snprintf(p2, sizeof(p2), "%s/ro.snap", da);
    assert_int_equal(htkv_snapshot_write(a, p2), 0); /* reading is fine */
    assert_int_equal(htkv_close(a), 0);
    tu_rmrf(da);
    free(da);
}

/* A sink that keeps the bytes in memory, or fails at its call number fail_at (from 1). */
struct mem_sink {
    unsigned char *p;
    size_t cap, size;
    unsigned calls, fail_at;
};

static int
mem_sink_put(void *ctx, uint64_t off, const void *buf, size_t len)
{
    struct mem_sink *m = ctx;
    if (++m->calls == m->fail_at) {
        return -ENOSPC;
    }
    assert_true(len > 0 && len <= (1u << 20));
    if (off + len > m->cap) {
        m->cap = (size_t)(off + len) * 2;
        m->p = realloc(m->p, m->cap);
        assert_non_null(m->p);
    }
    memcpy(m->p + off, buf, len);
    m->size = off + len > m->size ? (size_t)(off + len) : m->size;
    return 0;
}

struct snap_job {
    htkv_view *v;
    const char *path;
    int rc;
};

static void *
snap_job_main(void *arg)
{
    struct snap_job *j = arg;
    j->rc = htkv_view_snapshot_write(j->v, j->path);
    return NULL;
}

/* Goal: a view from htkv_view_open_cut() written later, on another thread, holds the store as it
 * was when the view opened, byte for byte, whatever was written meanwhile; the view stays usable
 * and blocks a restore until closed. Method: fill A; open a cut view; overwrite, delete and add;
 * write the view on a thread; B given only the first fill writes the same bytes. */
static void
test_view_snapshot_is_its_moment(void **state)
{
    (void)state;
    htkv_config ca, cb;
    char *da, *dbd;
    htkv_db *a = open_store("snap-view-a", &da, &ca);
    htkv_db *b = open_store("snap-view-b", &dbd, &cb);
    fill(a, 3);
    fill(b, 3);
    htkv_view *v;
    assert_int_equal(htkv_view_open_cut(NULL, &v), -EINVAL);
    assert_int_equal(htkv_view_open_cut(a, NULL), -EINVAL);
    assert_int_equal(htkv_view_open_cut(a, &v), 0);
    uint64_t latest = 0;
    assert_int_equal(htkv_latest_version(a, &latest), 0);
    assert_int_equal(htkv_view_version(v), latest);
    fill(a, 40);
    assert_int_equal(htkv_put(a, "late", 4, "x", 1), 0);
    char pa[4200], pb[4200];
    snprintf(pa, sizeof(pa), "%s/v.snap", da);
    snprintf(pb, sizeof(pb), "%s/b.snap", dbd);
    assert_int_equal(htkv_view_snapshot_write(NULL, pa), -EINVAL);
    assert_int_equal(htkv_view_snapshot_write(v, NULL), -EINVAL);
    assert_int_equal(htkv_view_snapshot_write(v, ""), -EINVAL);
    struct snap_job j = { .v = v, .path = pa, .rc = 1 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, snap_job_main, &j), 0);
    unsigned char out[8];
    size_t vlen = 0;
    assert_int_equal(htkv_view_get(v, "late", 4, out, sizeof(out), &vlen), HTKV_ENOTFOUND);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(j.rc, 0);
    assert_int_equal(htkv_snapshot_restore(a, pa), HTKV_EBUSY); /* the view is still open */
    htkv_view_close(v);
    assert_int_equal(htkv_snapshot_write(b, pb), 0);
    size_t la, lb;
    unsigned char *xa = tu_read_whole(pa, &la), *xb = tu_read_whole(pb, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(xa, xb, la);
    free(xb);
    assert_int_equal(htkv_snapshot_restore(a, pa), 0);
    check_filled(a, 3);
    /* Streamed: the same bytes as the file, in pieces of at most 1 MiB (the store holds more
     * than 3 MiB), header last; a sink's error at any call stops it. */
    static unsigned char big[100000];
    for (unsigned i = 0; i < 40; i++) {
        char key[32];
        tu_fill(big, sizeof(big), 1000 + i);
        assert_int_equal(htkv_put(a, key, (size_t)sprintf(key, "big-%02u", i), big, sizeof(big)),
                         0);
    }
    assert_int_equal(htkv_view_open_cut(a, &v), 0);
    struct mem_sink m = { 0 };
    assert_int_equal(htkv_view_snapshot_stream(v, NULL, &m), -EINVAL);
    assert_int_equal(htkv_view_snapshot_stream(NULL, mem_sink_put, &m), -EINVAL);
    assert_int_equal(htkv_view_snapshot_stream(v, mem_sink_put, &m), 0);
    assert_int_equal(htkv_view_snapshot_write(v, pa), 0);
    free(xa);
    xa = tu_read_whole(pa, &la);
    assert_int_equal(m.size, la);
    assert_memory_equal(m.p, xa, la);
    unsigned calls = m.calls;
    assert_true(calls >= 5); /* 4 pieces or more, and the header again */
    for (unsigned f = 1; f <= calls; f++) {
        struct mem_sink bad = { .fail_at = f };
        assert_int_equal(htkv_view_snapshot_stream(v, mem_sink_put, &bad), -ENOSPC);
        assert_int_equal(bad.calls, f);
        free(bad.p);
    }
    htkv_view_close(v);
    free(m.p);
    free(xa);
    assert_int_equal(htkv_close(a), 0);
    assert_int_equal(htkv_close(b), 0);
    tu_rmrf(da);
    free(da);
    tu_rmrf(dbd);
    free(dbd);
}

#define CUT_WRITERS 4
#define CUT_PUTS 400

struct cut_writer {
    htkv_db *db;
    unsigned id;
    _Atomic unsigned acked; /* puts returned 0 so far: keys 0 .. acked - 1 */
};

static void *
cut_writer_main(void *arg)
{
    struct cut_writer *w = arg;
    for (unsigned i = 0; i < CUT_PUTS; i++) {
        char key[32];
        int n = sprintf(key, "w%u-%05u", w->id, i);
        assert_int_equal(htkv_put(w->db, key, (size_t)n, key, (size_t)n), 0);
        atomic_store(&w->acked, i + 1);
    }
    return NULL;
}

/* One cut taken while the writers run: what was acknowledged around it, its version, its file. */
struct cut_point {
    unsigned before[CUT_WRITERS], after[CUT_WRITERS];
    uint64_t version;
    char path[4200];
};

static void
cut_take(htkv_db *db, struct cut_writer *w, const char *dir, unsigned n, struct cut_point *cp)
{
    for (unsigned i = 0; i < CUT_WRITERS; i++) {
        cp->before[i] = atomic_load(&w[i].acked);
    }
    htkv_view *v;
    assert_int_equal(htkv_view_open_cut(db, &v), 0);
    for (unsigned i = 0; i < CUT_WRITERS; i++) {
        cp->after[i] = atomic_load(&w[i].acked);
    }
    cp->version = htkv_view_version(v);
    snprintf(cp->path, sizeof(cp->path), "%s/cut-%u.snap", dir, n);
    assert_int_equal(htkv_view_snapshot_write(v, cp->path), 0);
    htkv_view_close(v);
}

/* The store @p c, restored from @p cp, against the final store @p a. */
static void
cut_check(htkv_db *a, htkv_db *c, const struct cut_point *cp)
{
    assert_int_equal(htkv_snapshot_restore(c, cp->path), 0);
    for (unsigned i = 0; i < CUT_WRITERS; i++) {
        for (unsigned k = 0; k < CUT_PUTS; k++) {
            char key[32], out[32];
            int n = sprintf(key, "w%u-%05u", i, k);
            size_t vlen = 0;
            uint64_t ver = 0;
            assert_int_equal(htkv_get_version(a, key, (size_t)n, NULL, 0, &vlen, &ver),
                             HTKV_ETOOSMALL);
            int rc = htkv_get(c, key, (size_t)n, out, sizeof(out), &vlen);
            /* Exactly the writes at or below the cut's version, which holds every put
             * acknowledged before it was asked for and none begun after it returned. */
            bool in = ver <= cp->version;
            if ((rc == 0) != in || (k < cp->before[i] && !in) || (k > cp->after[i] && in)) {
                print_message("writer %u key %u version %llu, cut %llu: %s in the snapshot; "
                              "acknowledged %u before the cut, %u after\n",
                              i, k, (unsigned long long)ver, (unsigned long long)cp->version,
                              rc == 0 ? "" : "not", cp->before[i], cp->after[i]);
                fail();
            }
        }
    }
}

#define CUT_POINTS 6

/* Goal: in HTKV_SYNC_ALWAYS, under durable writers on several threads, a cut view's snapshot
 * holds exactly the writes at or below its version: every put acknowledged before the view was
 * asked for, none begun after it returned, and no write still waiting for its group sync left
 * out (a plain view may miss one). Method: 4 writers on a real disk; 6 cuts as they write; each
 * snapshot restored into a fresh store and checked against the versions of the final store. */
static void
test_view_snapshot_cut_under_durable_writers(void **state)
{
    (void)state;
    htkv_config ca, cc;
    char *da = tu_tmpdir_disk("snap-cut-a"), *dc = tu_tmpdir("snap-cut-c");
    tu_config(&ca, da, HTKV_SYNC_ALWAYS);
    ca.shard_count = 4;
    htkv_db *a = tu_open(&ca);
    struct cut_writer w[CUT_WRITERS];
    pthread_t t[CUT_WRITERS];
    for (unsigned i = 0; i < CUT_WRITERS; i++) {
        w[i].db = a;
        w[i].id = i;
        atomic_init(&w[i].acked, 0);
        assert_int_equal(pthread_create(&t[i], NULL, cut_writer_main, &w[i]), 0);
    }
    static struct cut_point cp[CUT_POINTS];
    for (unsigned n = 0; n < CUT_POINTS; n++) {
        while (atomic_load(&w[0].acked) < (n + 1) * CUT_PUTS / (CUT_POINTS + 2)) {
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
        }
        cut_take(a, w, da, n, &cp[n]);
    }
    for (unsigned i = 0; i < CUT_WRITERS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    tu_config(&cc, dc, HTKV_SYNC_NEVER);
    htkv_db *c = tu_open(&cc);
    for (unsigned n = 0; n < CUT_POINTS; n++) {
        cut_check(a, c, &cp[n]);
    }
    assert_int_equal(htkv_close(c), 0);
    assert_int_equal(htkv_close(a), 0);
    tu_rmrf(da);
    free(da);
    tu_rmrf(dc);
    free(dc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_restore_replaces_contents),
        cmocka_unit_test(test_snapshot_bytes_are_deterministic),
        cmocka_unit_test(test_snapshot_damaged_file_changes_nothing),
        cmocka_unit_test(test_snapshot_refusals_and_consistency),
        cmocka_unit_test(test_view_snapshot_is_its_moment),
        cmocka_unit_test(test_view_snapshot_cut_under_durable_writers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
