/*
 * testutil.c - helpers shared by the tests (see testutil.h).
 */
#include "tests/support/testutil.h"

#include "engine/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "engine/rec.h"
#include "engine/seg.h"

_Atomic int tu_log_warnings;
static char tu_ctx[512];

void
tu_context(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tu_ctx, sizeof(tu_ctx), fmt, ap);
    va_end(ap);
}

static void
tu_assert_to_fail(const char *expr, const char *file, int line)
{
    (void)expr;
    fprintf(stderr, "engine assertion failed while: %s\n", tu_ctx[0] ? tu_ctx : "(no context)");
    _fail(file, line);
}

void
tu_assert_hook_install(void)
{
    htkv_assert_hook = tu_assert_to_fail;
}

void
tu_assert_hook_reset(void)
{
    htkv_assert_hook = NULL;
}

/* $HTKV_TEST_TMP_FAST when it is a directory (or can be made one) with 4 GiB free. */
static const char *
fast_tmp(void)
{
    const char *fast = getenv("HTKV_TEST_TMP_FAST");
    if (fast == NULL || fast[0] == '\0') {
        return NULL;
    }
    mkdir(fast, 0755);
    struct statvfs vs;
    if (statvfs(fast, &vs) != 0 || (uint64_t)vs.f_bavail * vs.f_frsize < (4ull << 30)) {
        return NULL;
    }
    return fast;
}

static char *
tmpdir_under(const char *base, const char *tag)
{
    if (base == NULL) {
        base = getenv("HTKV_TEST_TMP");
    }
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    mkdir(base, 0755);
    char *path = malloc(4096);
    assert_non_null(path);
    snprintf(path, 4096, "%s/%s-XXXXXX", base, tag);
    assert_non_null(mkdtemp(path));
    return path;
}

char *
tu_tmpdir(const char *tag)
{
    return tmpdir_under(fast_tmp(), tag);
}

char *
tu_tmpdir_disk(const char *tag)
{
    return tmpdir_under(NULL, tag);
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void
tu_rmrf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t
tu_seed(const char *test)
{
    const char *s = getenv("HTKV_SEED");
    uint64_t seed;
    if (s != NULL && s[0] != '\0') {
        seed = strtoull(s, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    }
    if (seed == 0) {
        seed = 1;
    }
    fprintf(stderr, "[%s] HTKV_SEED=%llu\n", test, (unsigned long long)seed);
    return seed;
}

uint64_t
tu_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void
tu_quiet_log(int level, const char *msg, void *ctx)
{
    (void)msg;
    (void)ctx;
    if (level <= HTKV_LOG_WARN) {
        tu_log_warnings++;
    }
}

void
tu_config(htkv_config *cfg, const char *dir, int sync_mode)
{
    htkv_config_init(cfg);
    cfg->data_dir = dir;
    /* The suite runs once per execution mode: HTKV_TEST_WORKERS (default 0 = inline) and
     * HTKV_TEST_IO_BACKEND ("uring", "sync", default auto) select it. */
    const char *w = getenv("HTKV_TEST_WORKERS");
    cfg->worker_threads = w != NULL ? (unsigned)strtoul(w, NULL, 10) : 0;
    const char *b = getenv("HTKV_TEST_IO_BACKEND");
    if (b != NULL && strcmp(b, "uring") == 0) {
        cfg->io_backend = HTKV_IO_URING;
    } else if (b != NULL && strcmp(b, "sync") == 0) {
        cfg->io_backend = HTKV_IO_SYNC;
    }
    cfg->shard_count = 4;
    cfg->sync_mode = sync_mode;
    cfg->log_fn = tu_quiet_log;
    tu_assert_hook_install();
}

void
tu_close_as_crash(htkv_db *db)
{
    htkv_close_as_crash = true;
    int rc = htkv_close(db);
    htkv_close_as_crash = false;
    assert_int_equal(rc, 0);
}

htkv_db *
tu_open(const htkv_config *cfg)
{
    htkv_db *db = NULL;
    int rc = htkv_open(cfg, &db);
    if (rc != 0) {
        fprintf(stderr, "htkv_open(%s): %s (%s)\n", cfg->data_dir, htkv_strerror(rc),
                htkv_last_error());
    }
    assert_int_equal(rc, 0);
    assert_non_null(db);
    return db;
}

static int
cmp_path(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

size_t
tu_shard_files(const char *dir, const char *ext, char (*paths)[4096], size_t cap)
{
    size_t n = 0, el = strlen(ext);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, "shard-", 6) != 0) {
            continue;
        }
        char sd[3000];
        snprintf(sd, sizeof(sd), "%.2000s/%s", dir, de->d_name);
        DIR *s = opendir(sd);
        assert_non_null(s);
        struct dirent *fe;
        while ((fe = readdir(s)) != NULL) {
            size_t l = strlen(fe->d_name);
            if (fe->d_name[0] == '.' || l < el || strcmp(fe->d_name + l - el, ext) != 0) {
                continue;
            }
            if (n < cap) {
                snprintf(paths[n], 4096, "%s/%s", sd, fe->d_name);
            }
            n++;
        }
        closedir(s);
    }
    closedir(d);
    if (paths != NULL) {
        qsort(paths, n < cap ? n : cap, 4096, cmp_path);
    }
    return n;
}

size_t
tu_segments(const char *dir, char (*paths)[4096], size_t cap)
{
    size_t n = tu_shard_files(dir, ".seg", paths, cap);
    return n < cap ? n : cap;
}

bool
tu_exists(const char *dir, const char *rel)
{
    char p[8192];
    snprintf(p, sizeof(p), "%s/%s", dir, rel);
    struct stat st;
    return lstat(p, &st) == 0;
}

long long
tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int
tu_truncate(const char *path, long long size)
{
    return truncate(path, size);
}

int
tu_read_at(const char *path, long long off, void *buf, size_t n)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t r = pread(fd, buf, n, off);
    close(fd);
    return r == (ssize_t)n ? 0 : -1;
}

int
tu_write_at(const char *path, long long off, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t w = pwrite(fd, buf, n, off);
    close(fd);
    return w == (ssize_t)n ? 0 : -1;
}

int
tu_flip_bit(const char *path, long long off, int bit)
{
    unsigned char c;
    if (tu_read_at(path, off, &c, 1) != 0) {
        return -1;
    }
    c ^= (unsigned char)(1u << bit);
    return tu_write_at(path, off, &c, 1);
}

static void
copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY);
    assert_true(in >= 0);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    struct stat st;
    assert_int_equal(fstat(in, &st), 0);
    /* Sparse: holes (a segment's preallocated, unwritten space) and zero blocks stay holes, so
     * a copy costs its data, and a store opened on it reads what the original's open would. */
    char *buf = malloc(65536);
    assert_non_null(buf);
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t d = lseek(in, pos, SEEK_DATA);
        if (d < 0) {
            assert_int_equal(errno, ENXIO); /* only a hole is left; anything else: no copy */
            break;
        }
        off_t h = lseek(in, d, SEEK_HOLE);
        assert_true(h > d);
        for (off_t at = d; at < h;) {
            size_t want = (size_t)(h - at) < 65536 ? (size_t)(h - at) : 65536;
            ssize_t n = pread(in, buf, want, at);
            assert_true(n > 0);
            bool zero = true;
            for (ssize_t i = 0; i < n && zero; i++) {
                zero = buf[i] == 0;
            }
            if (!zero) {
                assert_int_equal(pwrite(out, buf, (size_t)n, at), n);
            }
            at += n;
        }
        pos = h;
    }
    assert_int_equal(ftruncate(out, st.st_size), 0);
    free(buf);
    close(in);
    close(out);
}

void
tu_copy_store(const char *from, const char *to)
{
    mkdir(to, 0755);
    DIR *d = opendir(from);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }
        char a[8192], b[8192];
        snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
        struct stat st;
        assert_int_equal(stat(a, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            tu_copy_store(a, b);
        } else {
            copy_file(a, b);
        }
    }
    closedir(d);
}

size_t
tu_shard_segments(const char *dir, unsigned shard, char (*paths)[4096], size_t cap)
{
    char sd[4096];
    snprintf(sd, sizeof(sd), "%s/shard-%03u", dir, shard);
    size_t n = 0;
    DIR *d = opendir(sd);
    if (d == NULL) {
        return 0;
    }
    struct dirent *fe;
    while ((fe = readdir(d)) != NULL) {
        size_t l = strlen(fe->d_name);
        if (l > 4 && strcmp(fe->d_name + l - 4, ".seg") == 0 && n < cap) {
            snprintf(paths[n++], 4096, "%.3000s/%s", sd, fe->d_name);
        }
    }
    closedir(d);
    qsort(paths, n, 4096, cmp_path);
    return n;
}

uint64_t
tu_seg_id(const char *path)
{
    unsigned char h[SEG_HDR_BYTES];
    if (tu_read_at(path, 0, h, sizeof(h)) != 0) {
        return 0;
    }
    uint64_t id;
    memcpy(&id, h + 16, sizeof(id));
    return id;
}

size_t
tu_seg_scan(const char *path, struct tu_rec *recs, size_t cap)
{
    long long fsize = tu_file_size(path);
    assert_true(fsize >= (long long)SEG_HDR_BYTES);
    unsigned char *buf = malloc((size_t)fsize);
    assert_non_null(buf);
    assert_int_equal(tu_read_at(path, 0, buf, (size_t)fsize), 0);
    uint64_t id = tu_seg_id(path);
    size_t n = 0;
    uint64_t off = SEG_DATA_OFF;
    struct rec_hdr h;
    while (off < (uint64_t)fsize && htkv_rec_check(buf + off, (uint64_t)fsize - off, id, off,
                                                   HTKV_VALUE_MAX_LIMIT, &h) == 0) {
        if (recs != NULL && n < cap) {
            struct tu_rec *r = &recs[n];
            memset(r, 0, sizeof(*r));
            r->off = (long long)off;
            r->raw = (long long)(REC_HDR_BYTES + h.key_len + h.val_len);
            r->size = (long long)htkv_rec_size(h.key_len, h.val_len);
            r->type = h.type;
            r->flags = h.flags;
            r->version = h.version;
            r->key_len = h.key_len;
            r->val_len = h.val_len;
            memcpy(r->key, buf + off + REC_HDR_BYTES,
                   h.key_len < sizeof(r->key) ? h.key_len : sizeof(r->key));
        }
        n++;
        off += htkv_rec_size(h.key_len, h.val_len);
    }
    free(buf);
    return n;
}

void
tu_fill(void *buf, size_t n, uint64_t tag)
{
    unsigned char *p = buf;
    uint64_t x = tag * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x = x * 0x2545F4914F6CDD1Dull + 1;
        }
        p[i] = (unsigned char)(x >> (8 * (i % 8)));
    }
}

void
tu_pin_one_cpu(cpu_set_t *saved)
{
    cpu_set_t one;
    assert_int_equal(sched_getaffinity(0, sizeof(*saved), saved), 0);
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, saved)) {
            CPU_SET(c, &one);
            break;
        }
    }
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
}

struct htkv_stats
tu_stats(htkv_db *db)
{
    struct htkv_stats st;
    assert_int_equal(htkv_stats(db, &st), 0);
    return st;
}

void
tu_expect(htkv_db *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    void *got = NULL;
    size_t n = 0;
    int rc = htkv_get_alloc(db, key, klen, &got, &n);
    bool ok = val == NULL ? rc == HTKV_ENOTFOUND
                          : rc == 0 && n == vlen && (vlen == 0 || memcmp(got, val, vlen) == 0);
    if (!ok) {
        fprintf(stderr, "key '%.*s' (%zu bytes): got rc %d (%s) len %zu, want %s len %zu\n",
                (int)(klen < 40 ? klen : 40), (const char *)key, klen, rc, htkv_strerror(rc), n,
                val == NULL ? "absent" : "value", vlen);
    }
    htkv_free(got);
    assert_true(ok);
}

unsigned char *
tu_read_whole(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return NULL;
    }
    unsigned char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return buf;
}

static int
cmp_tree_ent(const void *a, const void *b)
{
    return strcmp(((const struct tu_tree_ent *)a)->rel, ((const struct tu_tree_ent *)b)->rel);
}

static void
tree_walk(struct tu_tree *t, const char *root, const char *rel, bool with_lock)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (!with_lock && rel[0] == '\0' && strcmp(de->d_name, "LOCK") == 0) {
            continue;
        }
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 64;
            t->ents = realloc(t->ents, t->cap * sizeof(*t->ents));
            assert_non_null(t->ents);
        }
        struct tu_tree_ent *e = &t->ents[t->n++];
        memset(e, 0, sizeof(*e));
        snprintf(e->rel, sizeof(e->rel), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name);
        char full[4700];
        snprintf(full, sizeof(full), "%s/%s", root, e->rel);
        struct stat st;
        if (lstat(full, &st) != 0) {
            continue;
        }
        e->type = (unsigned)(st.st_mode & S_IFMT);
        if (S_ISDIR(st.st_mode)) {
            char sub[512];
            snprintf(sub, sizeof(sub), "%s", e->rel);
            tree_walk(t, root, sub, with_lock); /* may move t->ents: e is not used after it */
        } else if (S_ISREG(st.st_mode)) {
            e->data = tu_read_whole(full, &e->len);
        }
    }
    closedir(d);
}

static struct tu_tree
tree_take(const char *root, bool with_lock)
{
    struct tu_tree t = { .with_lock = with_lock };
    tree_walk(&t, root, "", with_lock);
    if (t.n > 1) {
        qsort(t.ents, t.n, sizeof(*t.ents), cmp_tree_ent);
    }
    return t;
}

struct tu_tree
tu_tree_take(const char *root)
{
    return tree_take(root, false);
}

struct tu_tree
tu_tree_take_all(const char *root)
{
    return tree_take(root, true);
}

void
tu_tree_free(struct tu_tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->ents[i].data);
    }
    free(t->ents);
    memset(t, 0, sizeof(*t));
}

bool
tu_tree_diff(const struct tu_tree *a, const struct tu_tree *b, char *why, size_t cap)
{
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        int c = i == a->n ? 1 : j == b->n ? -1 : strcmp(a->ents[i].rel, b->ents[j].rel);
        if (c < 0) {
            snprintf(why, cap, "%s was removed", a->ents[i].rel);
            return true;
        }
        if (c > 0) {
            snprintf(why, cap, "%s was added", b->ents[j].rel);
            return true;
        }
        const struct tu_tree_ent *x = &a->ents[i], *y = &b->ents[j];
        if (x->type != y->type) {
            snprintf(why, cap, "%s changed type", x->rel);
            return true;
        }
        if (x->len != y->len) {
            snprintf(why, cap, "%s changed size %zu -> %zu", x->rel, x->len, y->len);
            return true;
        }
        if (x->len > 0 && memcmp(x->data, y->data, x->len) != 0) {
            size_t k = 0;
            while (x->data[k] == y->data[k]) {
                k++;
            }
            snprintf(why, cap, "%s changed at byte %zu", x->rel, k);
            return true;
        }
        i++;
        j++;
    }
    return false;
}

void
tu_tree_expect_unchanged(const struct tu_tree *before, const char *root, const char *what)
{
    struct tu_tree after = tree_take(root, before->with_lock);
    char why[700];
    bool differs = tu_tree_diff(before, &after, why, sizeof(why));
    tu_tree_free(&after);
    if (differs) {
        fprintf(stderr, "%s: %s\n", what, why);
        fail();
    }
}
