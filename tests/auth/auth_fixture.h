/*
 * auth_fixture.h - a test store with an auth handle: low Argon2 costs, a settable clock, helpers
 * to reopen, to read raw records and to scan the data directory. Header-only (static inline) so
 * that each test_auth_*.c stays one executable.
 */
#ifndef HTKV_TESTS_AUTH_FIXTURE_H
#define HTKV_TESTS_AUTH_FIXTURE_H

#include "tests/support/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <htkv/auth.h>

#include "auth/test_hooks.h"

/* Low costs for speed (the KAT and one default-cost test use the real ones). */
#define AF_MEMORY_KIB 1024u
#define AF_ITERATIONS 1u
#define AF_EPOCH 1700000000

struct af {
    char *dir;
    htkv_config cfg;
    htkv_db *db;
    htkv_auth *auth;
    htkv_auth_config acfg;
    unsigned char key[HTKV_AUTH_KEY_BYTES];
    _Atomic int64_t now;  /* the auth clock */
    _Atomic int64_t tick; /* added to now on every clock read (0 = frozen) */
};

static inline int64_t
af_clock(void *ctx)
{
    struct af *f = ctx;
    return atomic_fetch_add(&f->now, atomic_load(&f->tick));
}

/* Fill @p c with the fixture's defaults: low costs, f->key (id 1), the fixture clock. */
static inline void
af_auth_config(struct af *f, htkv_auth_config *c)
{
    htkv_auth_config_init(c);
    c->master_key = f->key;
    c->argon2_memory_kib = AF_MEMORY_KIB;
    c->argon2_iterations = AF_ITERATIONS;
    c->clock_fn = af_clock;
    c->clock_ctx = f;
}

static inline void
af_open_auth(struct af *f)
{
    int rc = htkv_auth_open_with(f->db, &f->acfg, &f->auth);
    if (rc != 0) {
        fail_msg("htkv_auth_open_with: %s", htkv_strerror(rc));
    }
}

/* A fresh store in a temporary directory, with an auth handle. */
static inline struct af *
af_create(const char *tag)
{
    struct af *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = tu_tmpdir(tag);
    tu_config(&f->cfg, f->dir, HTKV_SYNC_NEVER);
    f->db = tu_open(&f->cfg);
    for (size_t i = 0; i < sizeof(f->key); i++) {
        f->key[i] = (unsigned char)(0xa0 + i);
    }
    atomic_init(&f->now, AF_EPOCH);
    atomic_init(&f->tick, 0);
    af_auth_config(f, &f->acfg);
    af_open_auth(f);
    return f;
}

/* Close auth and store, reopen both (same configuration). */
static inline void
af_reopen(struct af *f)
{
    htkv_auth_close(f->auth);
    f->auth = NULL;
    assert_int_equal(htkv_close(f->db), 0);
    f->db = tu_open(&f->cfg);
    af_open_auth(f);
}

static inline void
af_destroy(struct af *f)
{
    if (f == NULL) {
        return;
    }
    htkv_auth_close(f->auth);
    if (f->db != NULL) {
        assert_int_equal(htkv_close(f->db), 0);
    }
    tu_rmrf(f->dir);
    free(f->dir);
    free(f);
}

static inline int
af_setup(void **state)
{
    *state = af_create("auth");
    return 0;
}

static inline int
af_teardown(void **state)
{
    af_destroy(*state);
    return 0;
}

/* Create user @p name with password @p pw (a string) or fail the test. */
static inline void
af_user(struct af *f, const char *name, const char *pw, struct htkv_auth_user *out)
{
    int rc = htkv_auth_create_user(f->auth, name, pw, strlen(pw), out);
    if (rc != 0) {
        fail_msg("create_user(%s): %s", name, htkv_strerror(rc));
    }
}

/* Engine key "<prefix><id>" into out (128 bytes). */
static inline size_t
af_rkey(char *out, const char *prefix, const char *id)
{
    return (size_t)snprintf(out, 128, "%s%s", prefix, id);
}

/* Read a raw value into a malloc'ed buffer; NULL when absent. */
static inline unsigned char *
af_raw_get(struct af *f, const char *key, size_t *len)
{
    void *v = NULL;
    int rc = htkv_get_alloc(f->db, key, strlen(key), &v, len);
    if (rc == HTKV_ENOTFOUND) {
        return NULL;
    }
    assert_int_equal(rc, 0);
    return v;
}

static inline void
af_raw_put(struct af *f, const char *key, const void *val, size_t len)
{
    assert_int_equal(htkv_put(f->db, key, strlen(key), val, len), 0);
}

/* True when @p needle occurs in any file under @p dir (recursive, every byte read). */
static inline bool
af_dir_contains(const char *dir, const void *needle, size_t n)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char path[4096];
        int w = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        assert_true(w > 0 && (size_t)w < sizeof(path));
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        if (S_ISDIR(st.st_mode)) {
            found = af_dir_contains(path, needle, n);
            continue;
        }
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        unsigned char *buf = malloc((size_t)st.st_size + 1);
        assert_non_null(buf);
        size_t got = fread(buf, 1, (size_t)st.st_size, fp);
        fclose(fp);
        for (size_t i = 0; !found && n <= got && i <= got - n; i++) {
            found = memcmp(buf + i, needle, n) == 0;
        }
        free(buf);
    }
    closedir(d);
    return found;
}

/* Total bytes of the files under @p dir (sanity: the scan above did read something). */
static inline long long
af_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        char path[4096];
        int w = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        assert_true(w > 0 && (size_t)w < sizeof(path));
        struct stat st;
        assert_int_equal(lstat(path, &st), 0);
        total += S_ISDIR(st.st_mode) ? af_dir_bytes(path) : (long long)st.st_size;
    }
    closedir(d);
    return total;
}

#endif
