/*
 * test_htkvctl.c - drive the built htkvctl binary (HTKVCTL_PATH) against real stores: exit
 * statuses, text and JSON outputs, verify finding damage by file and offset, the lock policy
 * (refusal of a store another process has open; --read-only without the lock, also while that
 * process appends), usage errors, and the auth commands (users, keys-of) on a store whose auth
 * records this test writes through <htkv/auth.h>: their outputs, and that no secret reaches them.
 */
#include "tests/support/testutil.h"
#include "tests/support/tool.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <htkv/auth.h>

#include "engine/crc32c.h"
#include "engine/internal.h"
#include "engine/rec.h"
#include "engine/seg.h"

#ifndef HTKVCTL_PATH
#error "HTKVCTL_PATH must name the htkvctl binary"
#endif

#define STORE_KEYS 100 /* key000..key099 = "value-N"; key000..key009 deleted */
#define STORE_DELETED 10
#define STORE_BATCH 10 /* batch0..batch9 = "bv" in one batch */
/* Live keys: 90 + the binary key + the batch. */
#define STORE_LIVE (STORE_KEYS - STORE_DELETED + 1 + STORE_BATCH)

/* ---- running the binary (tests/support/tool.h) ---------------------------------------------- */

#define RUN(r, ...) tu_tool_run((r), HTKVCTL_PATH, TU_ARGS(__VA_ARGS__), 0)

/* ---- a strict JSON syntax check (RFC 8259) --------------------------------------------------- */

static const char *json_value(const char *p, int depth);

static const char *
json_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
        p++;
    }
    return p;
}

static const char *
json_str(const char *p)
{
    if (*p++ != '"') {
        return NULL;
    }
    while (*p != '"') {
        if ((unsigned char)*p < 0x20) {
            return NULL; /* includes the end of the text */
        }
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++) {
                    if (!strchr("0123456789abcdefABCDEF", p[i]) || p[i] == '\0') {
                        return NULL;
                    }
                }
                p += 4;
            } else if (*p == '\0' || !strchr("\"\\/bfnrt", *p)) {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *
json_num(const char *p)
{
    const char *s = p;
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return NULL;
    }
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') {
            return NULL;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (*p < '0' || *p > '9') {
            return NULL;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    return p > s ? p : NULL;
}

static const char *
json_container(const char *p, int depth, char close)
{
    p = json_ws(p + 1);
    if (*p == close) {
        return p + 1;
    }
    for (;;) {
        if (close == '}') {
            p = json_str(json_ws(p));
            if (p == NULL || *(p = json_ws(p)) != ':') {
                return NULL;
            }
            p++;
        }
        p = json_value(p, depth + 1);
        if (p == NULL) {
            return NULL;
        }
        p = json_ws(p);
        if (*p == close) {
            return p + 1;
        }
        if (*p++ != ',') {
            return NULL;
        }
    }
}

static const char *
json_value(const char *p, int depth)
{
    p = json_ws(p);
    if (depth > 64) {
        return NULL;
    }
    switch (*p) {
    case '{':
        return json_container(p, depth, '}');
    case '[':
        return json_container(p, depth, ']');
    case '"':
        return json_str(p);
    case 't':
        return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return json_num(p);
    }
}

/* The whole text is exactly one JSON object. */
static void
expect_json_object(const char *text)
{
    const char *p = json_ws(text);
    bool ok = *p == '{';
    if (ok) {
        p = json_value(p, 0);
        ok = p != NULL && *json_ws(p) == '\0';
    }
    if (!ok) {
        fprintf(stderr, "not one JSON object:\n%s\n", text);
    }
    assert_true(ok);
}

/* "key": value (as our writer prints it) is in @p text. */
static void
expect_json_member(const char *text, const char *key, const char *value)
{
    char needle[256];
    snprintf(needle, sizeof(needle), "\"%s\": %s", key, value ? value : "");
    tu_expect_contains(text, needle);
}

/* ---- stores --------------------------------------------------------------------------------- */

static void
fill_store(htkv_db *db)
{
    char k[32], v[32];
    for (int i = 0; i < STORE_KEYS; i++) {
        snprintf(k, sizeof(k), "key%03d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        assert_int_equal(htkv_put(db, k, strlen(k), v, strlen(v)), 0);
    }
    for (int i = 0; i < STORE_DELETED; i++) {
        snprintf(k, sizeof(k), "key%03d", i);
        assert_int_equal(htkv_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(htkv_put(db, "bin\x00\x01", 5, "\xff\x00\n\\x", 5), 0);
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < STORE_BATCH; i++) {
        snprintf(k, sizeof(k), "batch%d", i);
        assert_int_equal(htkv_batch_put(b, k, strlen(k), "bv", 2), 0);
    }
    assert_int_equal(htkv_write(db, b), 0);
    htkv_batch_destroy(b);
}

/* A closed store with the contents above. */
static char *
make_store(const char *tag)
{
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    fill_store(db);
    assert_int_equal(htkv_close(db), 0);
    return dir;
}

/* Bytes of every file of a store, concatenated in a fixed order (to prove nothing changed). */
static char *
store_bytes(const char *dir, size_t *len)
{
    char segs[64][4096];
    size_t n = tu_segments(dir, segs, 64);
    char paths[66][4096];
    snprintf(paths[0], sizeof(paths[0]), "%s/CURRENT", dir);
    snprintf(paths[1], sizeof(paths[1]), "%s/MANIFEST-000001", dir);
    for (size_t i = 0; i < n; i++) {
        memcpy(paths[i + 2], segs[i], sizeof(segs[i]));
    }
    char *all = NULL;
    *len = 0;
    for (size_t i = 0; i < n + 2; i++) {
        long long sz = tu_file_size(paths[i]);
        assert_true(sz >= 0);
        all = realloc(all, *len + (size_t)sz + 1);
        assert_non_null(all);
        assert_int_equal(tu_read_at(paths[i], 0, all + *len, (size_t)sz), 0);
        *len += (size_t)sz;
    }
    return all;
}

/* ---- auth stores ---------------------------------------------------------------------------- */

#define AUTH_EPOCH 1700000000 /* the auth clock while the records are written */
#define AUTH_EPOCH_TEXT "2023-11-14T22:13:20Z"
#define AUTH_CI_EXPIRES (AUTH_EPOCH + 86400) /* in the past by now: expired */
#define AUTH_CI_EXPIRES_TEXT "2023-11-15T22:13:20Z"
#define AUTH_FAR 4102444800LL /* 2100-01-01T00:00:00Z: not expired */
#define AUTH_FAR_TEXT "2100-01-01T00:00:00Z"
/* Low Argon2 costs, as tests/auth uses: the commands never hash, only the setup does. */
#define AUTH_MEMORY_KIB 1024u
#define AUTH_ITERATIONS 1u

static const char auth_alice_password[] = "alice-password-never-printed";
static const char auth_bob_password[] = "bob-password-never-printed";
static const char auth_alice_metadata[] = "alice-metadata-plaintext";
static const char auth_key_metadata[] = "apikey-metadata-plaintext";

/* A closed store with three users and three API keys, and key files in a directory of its own. */
struct auth_store {
    char *dir;                   /* the store */
    char *keys;                  /* the key files */
    char key_hex[4200];          /* the master key as 64 hex digits + newline, mode 0600 */
    char key_raw[4200];          /* the master key as 32 raw bytes, mode 0600 */
    char key_wrong[4200];        /* another key (hex), mode 0600 */
    char key_open[4200];         /* the master key (hex), mode 0644 */
    char master_hex[65];         /* the key's hex digits, to check that they never print */
    struct htkv_auth_user alice; /* 2 keys: laptop (never expires), ci (expired) */
    struct htkv_auth_user bob;   /* "Bob": 1 key, expiring in 2100 */
    struct htkv_auth_user carol; /* no key */
    struct htkv_auth_api_key laptop, ci, bobkey;
    char tokens[3][HTKV_AUTH_TOKEN_SIZE];
};

static int64_t
auth_clock(void *ctx)
{
    (void)ctx;
    return AUTH_EPOCH;
}

static void
auth_master_key(unsigned char *key)
{
    for (size_t i = 0; i < HTKV_AUTH_KEY_BYTES; i++) {
        key[i] = (unsigned char)(0xa0 + i);
    }
}

/* Open an auth handle on @p db with the test's master key and clock. */
static htkv_auth *
auth_open_test(htkv_db *db)
{
    unsigned char key[HTKV_AUTH_KEY_BYTES];
    auth_master_key(key);
    htkv_auth_config acfg;
    htkv_auth_config_init(&acfg);
    acfg.master_key = key;
    acfg.argon2_memory_kib = AUTH_MEMORY_KIB;
    acfg.argon2_iterations = AUTH_ITERATIONS;
    acfg.clock_fn = auth_clock;
    htkv_auth *auth;
    assert_int_equal(htkv_auth_open_with(db, &acfg, &auth), 0);
    return auth;
}

/* Write @p len bytes to @p path with permissions @p mode (whatever the umask). */
static void
write_file_mode(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
}

static void
auth_key_files(struct auth_store *s)
{
    unsigned char key[HTKV_AUTH_KEY_BYTES];
    auth_master_key(key);
    for (size_t i = 0; i < HTKV_AUTH_KEY_BYTES; i++) {
        snprintf(s->master_hex + 2 * i, 3, "%02x", key[i]);
    }
    char line[80];
    snprintf(line, sizeof(line), "%s\n", s->master_hex);
    snprintf(s->key_hex, sizeof(s->key_hex), "%s/master.hex", s->keys);
    write_file_mode(s->key_hex, line, strlen(line), 0600);
    snprintf(s->key_raw, sizeof(s->key_raw), "%s/master.raw", s->keys);
    write_file_mode(s->key_raw, key, sizeof(key), 0600);
    snprintf(s->key_open, sizeof(s->key_open), "%s/master-open.hex", s->keys);
    write_file_mode(s->key_open, line, strlen(line), 0644);
    line[5] ^= 1; /* '0' <-> '1', still hex */
    snprintf(s->key_wrong, sizeof(s->key_wrong), "%s/wrong.hex", s->keys);
    write_file_mode(s->key_wrong, line, strlen(line), 0600);
}

static void
auth_store_make(struct auth_store *s, const char *tag)
{
    memset(s, 0, sizeof(*s));
    s->dir = make_store(tag);
    s->keys = tu_tmpdir("ctl-auth-keys");
    auth_key_files(s);
    htkv_config cfg;
    tu_config(&cfg, s->dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    htkv_auth *auth = auth_open_test(db);
    assert_int_equal(htkv_auth_create_user_with_metadata(
                         auth, "alice", auth_alice_password, strlen(auth_alice_password),
                         auth_alice_metadata, strlen(auth_alice_metadata), &s->alice),
                     0);
    assert_int_equal(
        htkv_auth_create_user(auth, "Bob", auth_bob_password, strlen(auth_bob_password), &s->bob),
        0);
    assert_int_equal(htkv_auth_create_user(auth, "carol", "pw", 2, &s->carol), 0);
    assert_int_equal(
        htkv_auth_create_api_key(auth, s->alice.id, "laptop", s->tokens[0], &s->laptop), 0);
    assert_int_equal(htkv_auth_create_api_key_with_metadata(
                         auth, s->alice.id, "ci", auth_key_metadata, strlen(auth_key_metadata),
                         AUTH_CI_EXPIRES, s->tokens[1], &s->ci),
                     0);
    assert_int_equal(htkv_auth_create_api_key_with_metadata(auth, s->bob.id, NULL, NULL, 0,
                                                            AUTH_FAR, s->tokens[2], &s->bobkey),
                     0);
    htkv_auth_close(auth);
    assert_int_equal(htkv_close(db), 0);
}

static void
auth_store_free(struct auth_store *s)
{
    tu_rmrf(s->dir);
    tu_rmrf(s->keys);
    free(s->dir);
    free(s->keys);
}

static void
expect_absent(const char *hay, const char *needle)
{
    if (strstr(hay, needle) != NULL) {
        fprintf(stderr, "secret \"%s\" printed in:\n%s\n", needle, hay);
    }
    assert_null(strstr(hay, needle));
}

/* No secret of @p s appears on stdout or stderr of @p r. */
static void
expect_no_secrets(const struct auth_store *s, const struct tu_run *r)
{
    const char *const secrets[] = { auth_alice_password, auth_bob_password, auth_alice_metadata,
                                    auth_key_metadata, s->master_hex };
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        expect_absent(r->out, secrets[i]);
        expect_absent(r->err, secrets[i]);
    }
    for (size_t i = 0; i < 3; i++) {
        /* "htkv_" + key id + "_": what follows is the secret and its checksum. */
        const char *secret = s->tokens[i] + 5 + HTKV_AUTH_ID_LEN + 1;
        assert_int_equal(strlen(secret), 64 + 8);
        char part[17];
        memcpy(part, secret, 16); /* any 16 digits of it would do */
        part[16] = '\0';
        expect_absent(r->out, part);
        expect_absent(r->err, part);
    }
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* Goal: --help prints usage and succeeds; bad command lines exit 2 with usage on stderr.
 * Method: run each shape of bad argument list. */
static void
test_htkvctl_usage_and_bad_arguments(void **state)
{
    (void)state;
    struct tu_run r;
    RUN(&r, "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "usage: htkvctl");
    tu_expect_contains(r.out, "verify");
    tu_run_free(&r);
    RUN(&r, "verify", "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "usage: htkvctl [--json] [--read-only] [--hex] verify");
    tu_run_free(&r);
    RUN(&r, "help", "keys");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "--prefix");
    tu_run_free(&r);
    RUN(&r, "--version");
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    RUN(&r, "--help");
    tu_expect_contains(r.out, "users ");
    tu_expect_contains(r.out, "keys-of ");
    tu_run_free(&r);
    RUN(&r, "users", "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "--master-key-file FILE");
    tu_run_free(&r);
    RUN(&r, "keys-of", "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "keys-of USER --master-key-file FILE");
    tu_run_free(&r);
    RUN(&r, "--help");
    tu_expect_contains(r.out, "compact ");
    tu_expect_contains(r.out, "snapshot ");
    tu_run_free(&r);
    RUN(&r, "compact", "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "usage: htkvctl [--json] [--read-only] [--hex] compact DIR");
    tu_run_free(&r);
    RUN(&r, "snapshot", "--help");
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "snapshot {export|import} [--force] FILE DIR");
    tu_expect_contains(r.out, "--force");
    tu_run_free(&r);

    static const char *const bad[][7] = {
        { NULL },                                   /* no command */
        { "frobnicate", "/tmp", NULL },             /* unknown command */
        { "info", NULL },                           /* missing DIR */
        { "info", "a", "b", NULL },                 /* extra argument */
        { "--bogus", "info", "/tmp", NULL },        /* unknown global option */
        { "info", "--bogus", "/tmp", NULL },        /* unknown command option */
        { "keys", "--limit", "x", "/tmp", NULL },   /* bad count */
        { "keys", "--limit", "0", "/tmp", NULL },   /* zero count */
        { "keys", "/tmp", "--limit", NULL },        /* option without its value */
        { "get", "/tmp", NULL },                    /* missing KEY */
        { "get", "bad\\q", "/tmp", NULL },          /* unknown escape */
        { "get", "bad\\x4", "/tmp", NULL },         /* short \x */
        { "get", "", "/tmp", NULL },                /* empty key */
        { "verify", "--strict=yes", "/tmp", NULL }, /* flag with a value */
        { "users", "/tmp", NULL },                  /* no --master-key-file */
        { "keys-of", "--master-key-file", "/dev/null", "/tmp", NULL }, /* missing USER */
        { "users", "--master-key-id", "0", "/tmp", NULL },             /* bad key id */
        { "--read-only", "compact", "/tmp", NULL },                    /* compact writes */
        { "compact", "--force", "/tmp", NULL },                        /* no such option */
        { "snapshot", "export", "/tmp", NULL },                        /* missing FILE */
        { "snapshot", "frob", "f", "/tmp", NULL },                     /* unknown subcommand */
        { "snapshot", "export", "--force", "f", "/tmp", NULL },        /* --force: import only */
        { "--read-only", "snapshot", "import", "f", "/tmp", NULL },    /* import writes */
        { "snapshot", "import", "", "/tmp", NULL },                    /* empty FILE */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tu_context("bad argument list %zu", i);
        tu_tool_run(&r, HTKVCTL_PATH, bad[i], 0);
        tu_expect_status(&r, 2);
        tu_expect_contains(r.err, "usage: htkvctl");
        assert_string_equal(r.out, "");
        tu_run_free(&r);
    }
}

/* Goal: a directory without a store is exit 3 for every command, with a message.
 * Method: a missing path and an empty directory. */
static void
test_htkvctl_no_store_is_exit_3(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("ctl-empty");
    char missing[4200];
    snprintf(missing, sizeof(missing), "%s/none", dir);
    const char *cmds[] = { "info", "segments", "verify", "stats", "keys", "dump" };
    struct tu_run r;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        tu_context("%s on a missing store", cmds[i]);
        RUN(&r, cmds[i], missing);
        tu_expect_status(&r, 3);
        tu_expect_contains(r.err, "no htkv store");
        tu_run_free(&r);
        RUN(&r, "--read-only", cmds[i], dir);
        tu_expect_status(&r, 3);
        tu_run_free(&r);
    }
    const char *writers[][5] = { { "compact", missing }, { "snapshot", "import", "f", missing } };
    for (size_t i = 0; i < sizeof(writers) / sizeof(writers[0]); i++) {
        tu_context("%s on a missing store", writers[i][0]);
        tu_tool_run(&r, HTKVCTL_PATH, writers[i], 0);
        tu_expect_status(&r, 3);
        tu_expect_contains(r.err, "no htkv store");
        tu_run_free(&r);
    }
    struct stat st;
    assert_int_equal(stat(missing, &st), -1); /* nothing was created */
    tu_rmrf(dir);
    free(dir);
}

/* Goal: info reports the store's figures as text and as one JSON document.
 * Method: a store with known contents; check the figures in both forms. */
static void
test_htkvctl_info_text_and_json(void **state)
{
    (void)state;
    char *dir = make_store("ctl-info");
    struct tu_run r;
    RUN(&r, "info", dir);
    tu_expect_status(&r, 0);
    char line[128];
    snprintf(line, sizeof(line), "live keys:      %d\n", STORE_LIVE);
    tu_expect_contains(r.out, line);
    tu_expect_contains(r.out, "format version: 2\n");
    tu_expect_contains(r.out, "shards:         4\n");
    tu_expect_contains(r.out, "sync mode:      never (of the last writable open)");
    tu_expect_contains(r.out, "index memory:");
    tu_expect_contains(r.out, "dead bytes:");
    tu_run_free(&r);

    RUN(&r, "--json", "info", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    snprintf(line, sizeof(line), "%d", STORE_LIVE);
    expect_json_member(r.out, "live_keys", line);
    expect_json_member(r.out, "format_version", "2");
    expect_json_member(r.out, "shards", "4");
    expect_json_member(r.out, "sync_mode", "\"never\"");
    const char *keys[] = { "segments", "live_bytes", "dead_bytes", "last_version", "index_bytes" };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        expect_json_member(r.out, keys[i], NULL);
    }
    tu_run_free(&r);
    /* The global option may follow the command. */
    RUN(&r, "info", "--json", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: segments lists every segment file; stats prints htkv_stats. Method: compare with the
 * files on disk and the known key count. */
static void
test_htkvctl_segments_and_stats(void **state)
{
    (void)state;
    char *dir = make_store("ctl-segs");
    char paths[64][4096];
    size_t nsegs = tu_segments(dir, paths, 64);
    struct tu_run r;
    RUN(&r, "segments", dir);
    tu_expect_status(&r, 0);
    size_t lines = 0;
    for (const char *p = r.out; (p = strchr(p, '\n')) != NULL; p++) {
        lines++;
    }
    assert_int_equal(lines, nsegs + 1); /* header + one row per segment */
    tu_expect_contains(r.out, "SEALED");
    tu_run_free(&r);

    RUN(&r, "--json", "segments", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    size_t rows = 0;
    for (const char *p = r.out; (p = strstr(p, "\"shard\": ")) != NULL; p++) {
        rows++;
    }
    assert_int_equal(rows, nsegs);
    expect_json_member(r.out, "live_ratio", NULL);
    expect_json_member(r.out, "hint", "true"); /* close wrote a hint beside every segment */
    tu_run_free(&r);

    RUN(&r, "--json", "stats", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    char n[32];
    snprintf(n, sizeof(n), "%d", STORE_LIVE);
    expect_json_member(r.out, "live_keys", n);
    expect_json_member(r.out, "tombstones", "10");
    expect_json_member(r.out, "recovered_records", NULL);
    tu_run_free(&r);
    RUN(&r, "stats", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "live_keys");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: get prints values escaped, as hex, raw and in JSON; KEY takes escapes; a missing key is
 * exit 1. Method: plain and binary keys of the known store. */
static void
test_htkvctl_get_escapes_hex_raw_and_missing(void **state)
{
    (void)state;
    char *dir = make_store("ctl-get");
    struct tu_run r;
    RUN(&r, "get", "key050", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "value-50\n");
    tu_run_free(&r);
    RUN(&r, "get", "bin\\x00\\x01", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "\\xff\\x00\\n\\\\x\n");
    tu_run_free(&r);
    RUN(&r, "--hex", "get", "bin\\0\\x01", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "ff000a5c78\n");
    tu_run_free(&r);
    RUN(&r, "get", "--raw", "bin\\x00\\x01", dir);
    tu_expect_status(&r, 0);
    assert_memory_equal(r.out, "\xff\x00\n\\x", 5);
    tu_run_free(&r);
    RUN(&r, "--json", "get", "bin\\x00\\x01", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "found", "true");
    expect_json_member(r.out, "value", "\"\\\\xff\\\\x00\\\\n\\\\\\\\x\"");
    expect_json_member(r.out, "value_bytes", "5");
    tu_run_free(&r);

    RUN(&r, "get", "key005", dir); /* deleted */
    tu_expect_status(&r, 1);
    tu_expect_contains(r.err, "not found");
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    RUN(&r, "--json", "get", "nokey", dir);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "found", "false");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: keys and dump list in byte order, honour --prefix and --limit, escape binary bytes.
 * Method: the known store; exact outputs. */
static void
test_htkvctl_keys_and_dump(void **state)
{
    (void)state;
    char *dir = make_store("ctl-keys");
    struct tu_run r;
    RUN(&r, "keys", "--prefix", "batch", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "batch0\nbatch1\nbatch2\nbatch3\nbatch4\nbatch5\nbatch6\nbatch7\n"
                               "batch8\nbatch9\n");
    tu_run_free(&r);
    RUN(&r, "keys", "--limit", "3", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "batch0\nbatch1\nbatch2\n");
    tu_run_free(&r);
    RUN(&r, "keys", "--prefix=key09", "--limit=2", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "key090\nkey091\n");
    tu_run_free(&r);
    RUN(&r, "keys", "--prefix", "key00", dir); /* all deleted */
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    RUN(&r, "dump", "--prefix", "bin", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "bin\\x00\\x01\t\\xff\\x00\\n\\\\x\n");
    tu_run_free(&r);
    RUN(&r, "--hex", "dump", "--prefix", "bin\\x00", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "62696e0001\tff000a5c78\n");
    tu_run_free(&r);

    RUN(&r, "--json", "keys", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    char n[32];
    snprintf(n, sizeof(n), "%d", STORE_LIVE);
    expect_json_member(r.out, "count", n);
    tu_expect_contains(r.out, "\"bin\\\\x00\\\\x01\"");
    tu_run_free(&r);
    RUN(&r, "--json", "dump", "--limit", "2", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "count", "2");
    expect_json_member(r.out, "items", NULL);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a clean store verifies clean (text and JSON), and no command writes to it.
 * Method: verify; compare every file byte for byte before and after all commands. */
static void
test_htkvctl_verify_clean_store_changes_nothing(void **state)
{
    (void)state;
    char *dir = make_store("ctl-verify");
    size_t len0, len1;
    char *before = store_bytes(dir, &len0);
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ": clean (0 problems");
    assert_string_equal(r.err, ""); /* no progress bar: stderr is not a terminal */
    tu_run_free(&r);
    RUN(&r, "--json", "verify", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "clean", "true");
    expect_json_member(r.out, "problems", "[]");
    char n[32];
    snprintf(n, sizeof(n), "%d", STORE_LIVE);
    expect_json_member(r.out, "live_keys", n);
    expect_json_member(r.out, "engine_live_keys", n);
    tu_run_free(&r);
    const char *cmds[] = { "info", "segments", "stats", "keys", "dump" };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        RUN(&r, "--read-only", cmds[i], dir);
        tu_expect_status(&r, 0);
        tu_run_free(&r);
    }
    char *after = store_bytes(dir, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    tu_rmrf(dir);
    free(dir);
}

/* Find a SET record of @p dir followed by another record; returns its file and offset. */
static void
find_inner_record(const char *dir, char *path, long long *off, long long *val_off)
{
    char paths[64][4096];
    size_t n = tu_segments(dir, paths, 64);
    struct tu_rec recs[256];
    for (size_t i = 0; i < n; i++) {
        size_t k = tu_seg_scan(paths[i], recs, 256);
        for (size_t j = 0; j + 1 < k && j < 256; j++) {
            if (recs[j].type == REC_SET && recs[j].val_len > 0 && recs[j].flags == 0) {
                strcpy(path, paths[i]);
                *off = recs[j].off;
                *val_off = recs[j].off + REC_HDR_BYTES + recs[j].key_len;
                return;
            }
        }
    }
    fail_msg("no record followed by another one");
}

/* Goal: verify finds a flipped bit in a record value (not at the tail) and in the manifest,
 * and prints file and offset; exit 1. Method: flip, verify as text and as JSON. */
static void
test_htkvctl_verify_finds_flipped_bits(void **state)
{
    (void)state;
    char *dir = make_store("ctl-flip");
    char path[4096];
    long long off, voff;
    find_inner_record(dir, path, &off, &voff);
    assert_int_equal(tu_flip_bit(path, voff, 3), 0);
    const char *rel = path + strlen(dir) + 1; /* shard-SSS/NNN.seg */
    char where[4300];
    snprintf(where, sizeof(where), "%s:%lld: problem: record checksum mismatch", rel, off);
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out, where);
    tu_expect_contains(r.out, "PROBLEMS FOUND");
    tu_run_free(&r);
    RUN(&r, "--json", "verify", dir);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "clean", "false");
    char file[4300];
    snprintf(file, sizeof(file), "\"file\": \"%s\",\n", rel);
    tu_expect_contains(r.out, file);
    snprintf(where, sizeof(where), "\"offset\": %lld,", off);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    /* The engine refuses the store, so the other commands cannot open it. */
    RUN(&r, "info", dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "verify");
    tu_run_free(&r);

    /* Undo, then damage the manifest's first edit (INIT, at offset 32). */
    assert_int_equal(tu_flip_bit(path, voff, 3), 0);
    char man[4200];
    snprintf(man, sizeof(man), "%s/MANIFEST-000001", dir);
    assert_int_equal(tu_flip_bit(man, 32 + 12 + 1, 0), 0);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out, "MANIFEST-000001:32: problem:");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: a torn tail (garbage after the last record of an active segment) is a note, not a
 * problem, unless --strict; a read-only open ignores it and writes nothing. Method: append a
 * partial record header after the tail of one segment. */
static void
test_htkvctl_verify_torn_tail_is_a_note(void **state)
{
    (void)state;
    char *dir = make_store("ctl-torn");
    char paths[64][4096];
    size_t n = tu_shard_segments(dir, 0, paths, 64);
    assert_true(n >= 1);
    const char *seg = paths[n - 1];
    struct tu_rec recs[256];
    size_t k = tu_seg_scan(seg, recs, 256);
    assert_true(k >= 1 && k < 256);
    long long tail = recs[k - 1].off + recs[k - 1].size;
    long long size = tu_file_size(seg);
    if (size < tail + 64) {
        assert_int_equal(tu_truncate(seg, tail + 4096), 0);
    }
    static const unsigned char junk[20] = { 0xde, 0xad, 0xbe, 0xef, 7, 0, 0, 0, 9 };
    assert_int_equal(tu_write_at(seg, tail, junk, sizeof(junk)), 0);
    size_t len0, len1;
    char *before = store_bytes(dir, &len0);

    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    char where[4300];
    snprintf(where, sizeof(where), "%s:%lld: note: torn tail", seg + strlen(dir) + 1, tail);
    tu_expect_contains(r.out, where);
    tu_expect_contains(r.out, ": clean (0 problems, 1 notes)");
    tu_run_free(&r);
    RUN(&r, "verify", "--strict", dir);
    tu_expect_status(&r, 1);
    tu_run_free(&r);
    RUN(&r, "info", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "torn tail:");
    tu_run_free(&r);
    char *after = store_bytes(dir, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    tu_rmrf(dir);
    free(dir);
}

/* A closed store of one shard: the contents above, then "last" with a 200-byte value, closed
 * cleanly (hints and the clean-close record written) or as a killed process leaves it. */
static char *
make_store1(const char *tag, bool crash)
{
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.shard_count = 1;
    htkv_db *db = tu_open(&cfg);
    fill_store(db);
    unsigned char v[200];
    tu_fill(v, sizeof(v), 7);
    assert_int_equal(htkv_put(db, "last", 4, v, sizeof(v)), 0);
    if (crash) {
        tu_close_as_crash(db);
    } else {
        assert_int_equal(htkv_close(db), 0);
    }
    return dir;
}

/* The last record of the only segment of a make_store1() store (the put of "last"). */
static struct tu_rec
last_record(const char *dir, char *seg)
{
    char paths[8][4096];
    assert_int_equal(tu_shard_segments(dir, 0, paths, 8), 1);
    strcpy(seg, paths[0]);
    static struct tu_rec recs[256];
    size_t k = tu_seg_scan(seg, recs, 256);
    assert_true(k >= 1 && k < 256);
    assert_int_equal(recs[k - 1].type, REC_SET);
    assert_int_equal(recs[k - 1].key_len, 4);
    return recs[k - 1];
}

static void
expect_clean(const char *dir)
{
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ": clean (0 problems, 0 notes)");
    tu_run_free(&r);
}

/* Goal: verify calls a problem (exit 1) what htkv_open now refuses, and the store is clean
 * again once the damage is undone: a flipped bit in the last record of a cleanly closed store
 * (damage before the end the clean close recorded, not a torn tail), a segment the manifest
 * does not list that holds records, a missing CURRENT (not "no store"), a damaged manifest tail
 * longer than one edit (a shorter one is a torn last edit: a note). Method: one store of one
 * shard, each damage made and undone in turn. */
static void
test_htkvctl_verify_problems_where_open_refuses(void **state)
{
    (void)state;
    char *dir = make_store1("ctl-refuse", false);
    char seg[4096];
    struct tu_rec last = last_record(dir, seg);
    const char *rel = seg + strlen(dir) + 1;
    expect_clean(dir);

    long long voff = last.off + REC_HDR_BYTES + last.key_len + 100;
    assert_int_equal(tu_flip_bit(seg, voff, 2), 0);
    char where[4400];
    snprintf(where, sizeof(where),
             "%s:%lld: problem: damaged or missing records at offset %lld, before offset %lld "
             "that its records are known to reach",
             rel, last.off, last.off, last.off + last.size);
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out, where);
    tu_expect_contains(r.out, "problem: htkv_open refuses the store");
    tu_expect_contains(r.out, "PROBLEMS FOUND");
    tu_run_free(&r);
    RUN(&r, "info", dir);
    tu_expect_status(&r, 3);
    tu_run_free(&r);
    assert_int_equal(tu_flip_bit(seg, voff, 2), 0);
    expect_clean(dir);

    /* A copy of the segment under an id never used, header and all as they are. */
    long long size = tu_file_size(seg);
    assert_true(size > 0);
    char *bytes = malloc((size_t)size);
    assert_non_null(bytes);
    assert_int_equal(tu_read_at(seg, 0, bytes, (size_t)size), 0);
    char copy[4200];
    snprintf(copy, sizeof(copy), "%s/shard-000/000000000999.seg", dir);
    write_file_mode(copy, bytes, (size_t)size, 0644);
    free(bytes);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out,
                       "shard-000/000000000999.seg:0: problem: not in the manifest and holds "
                       "records");
    tu_run_free(&r);
    assert_int_equal(unlink(copy), 0);
    expect_clean(dir);

    char cur[4200], name[17] = { 0 };
    snprintf(cur, sizeof(cur), "%s/CURRENT", dir);
    assert_int_equal(tu_file_size(cur), 16);
    assert_int_equal(tu_read_at(cur, 0, name, 16), 0);
    assert_int_equal(unlink(cur), 0);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out, "/CURRENT:0: problem: CURRENT is missing, but the directory holds a "
                              "store");
    tu_run_free(&r);
    RUN(&r, "info", dir); /* the engine refuses it too, and creates nothing */
    tu_expect_status(&r, 3);
    tu_run_free(&r);
    assert_int_equal(tu_file_size(cur), -1);
    write_file_mode(cur, name, 16, 0644);
    expect_clean(dir);

    char man[4200];
    snprintf(man, sizeof(man), "%s/%.15s", dir, name); /* CURRENT holds "MANIFEST-NNNNNN\n" */
    long long mlen = tu_file_size(man);
    assert_true(mlen > 0);
    unsigned char junk[40];
    memset(junk, 0xa5, sizeof(junk));
    assert_int_equal(tu_write_at(man, mlen, junk, 20), 0);
    snprintf(where, sizeof(where), "%.15s:%lld: note: torn last edit (20 bytes)", name, mlen);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    assert_int_equal(tu_write_at(man, mlen, junk, sizeof(junk)), 0);
    snprintf(where, sizeof(where), "%.15s:%lld: problem: damaged edits from offset %lld on", name,
             mlen, mlen);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    assert_int_equal(tu_truncate(man, mlen), 0);
    expect_clean(dir);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the last record cut in half in a store a crash left (no clean-close record, no hint)
 * is a torn tail: a note, exit 0, as htkv_open cuts it. Method: make_store1() closed as a
 * crash; truncate the file in the middle of the last record. */
static void
test_htkvctl_verify_torn_last_record_after_crash_is_a_note(void **state)
{
    (void)state;
    char *dir = make_store1("ctl-crash", true);
    char seg[4096];
    struct tu_rec last = last_record(dir, seg);
    assert_int_equal(tu_truncate(seg, last.off + last.raw / 2), 0);
    char where[4400];
    snprintf(where, sizeof(where), "%s:%lld: note: torn tail", seg + strlen(dir) + 1, last.off);
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_expect_contains(r.out, ": clean (0 problems, 1 notes)");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: while another process has the store open for writing, every command is refused with
 * exit 3 and a message naming --read-only; with --read-only they work. Method: hold the store
 * open in this process (another open file description holds the flock) and run the binary. */
static void
test_htkvctl_locked_store_refused_unless_read_only(void **state)
{
    (void)state;
    char *dir = make_store("ctl-locked");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_put(db, "while-open", 10, "yes", 3), 0);

    const char *cmds[] = { "info", "segments", "stats", "verify", "keys", "dump" };
    struct tu_run r;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        tu_context("%s on a locked store", cmds[i]);
        RUN(&r, cmds[i], dir);
        tu_expect_status(&r, 3);
        tu_expect_contains(r.err, "open in another process");
        tu_expect_contains(r.err, "--read-only");
        tu_run_free(&r);
        RUN(&r, "--read-only", cmds[i], dir);
        tu_expect_status(&r, 0);
        tu_run_free(&r);
    }
    RUN(&r, "get", "while-open", dir);
    tu_expect_status(&r, 3);
    tu_run_free(&r);
    RUN(&r, "--json", "info", dir); /* a JSON document says why */
    tu_expect_status(&r, 3);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "3");
    tu_expect_contains(r.out, "open in another process");
    tu_run_free(&r);
    RUN(&r, "--read-only", "get", "while-open", dir); /* written after the store was opened */
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "yes\n");
    tu_run_free(&r);
    RUN(&r, "--read-only", "--json", "info", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    char n[32];
    snprintf(n, sizeof(n), "%d", STORE_LIVE + 1);
    expect_json_member(r.out, "live_keys", n);
    expect_json_member(r.out, "unlocked", "true");
    tu_run_free(&r);
    /* The writer is undisturbed. */
    assert_int_equal(htkv_put(db, "after", 5, "ok", 2), 0);
    tu_expect(db, "while-open", 10, "yes", 3);
    assert_int_equal(htkv_close(db), 0);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: --read-only copes with a writer appending concurrently: no false problem, no crash,
 * exit 0, across segment rotations. Method: keep writing (values of varied sizes, small
 * segments) while the binary runs verify, info and keys in turn. */
static void
test_htkvctl_read_only_during_appends(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_htkvctl_read_only_during_appends");
    char *dir = tu_tmpdir("ctl-live");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 1u << 16; /* rotate often */
    htkv_db *db = tu_open(&cfg);
    fill_store(db);
    static const char *const cmds[][3] = {
        { "verify", NULL }, { "info", NULL }, { "keys", "--limit=50" }, { "segments", NULL }
    };
    unsigned char val[2048];
    uint64_t writes = 0;
    for (int round = 0; round < 12; round++) {
        const char *const *cmd = cmds[round % 4];
        const char *args[6] = { "--read-only", cmd[0], cmd[1] ? cmd[1] : dir, cmd[1] ? dir : NULL,
                                NULL };
        int o = tu_tmpfile_fd(), e = tu_tmpfile_fd();
        pid_t pid = tu_tool_spawn(HTKVCTL_PATH, args, o, e);
        int st;
        /* At most 2,000 writes an inspection, then wait: under a sanitizer the tool runs slower
         * than the writer, and an unbounded writer grows the store each inspection reads. */
        uint64_t round_end = writes + 2000;
        while (writes < round_end && waitpid(pid, &st, WNOHANG) == 0) {
            char k[32];
            uint64_t x = tu_rand(&seed);
            snprintf(k, sizeof(k), "live%05llu", (unsigned long long)(x % 5000));
            size_t vlen = (size_t)(x >> 20) % sizeof(val);
            tu_fill(val, vlen, x);
            assert_int_equal(htkv_put(db, k, strlen(k), val, vlen), 0);
            writes++;
        }
        if (writes == round_end) {
            assert_int_equal(waitpid(pid, &st, 0), pid);
        }
        struct tu_run r = { .status = tu_exit_status(st),
                            .out = tu_slurp_fd(o),
                            .err = tu_slurp_fd(e) };
        close(o);
        close(e);
        tu_context("round %d: %s", round, cmd[0]);
        tu_expect_status(&r, 0);
        assert_null(strstr(r.out, "problem:"));
        tu_run_free(&r);
    }
    fprintf(stderr, "[ctl-live] %llu writes during 12 inspections\n", (unsigned long long)writes);
    assert_int_equal(htkv_close(db), 0);
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: users lists every user (name, id, created, API key count) as text and JSON, with either
 * form of key file, and prints no secret. Method: three users with 2, 1 and 0 keys. */
static void
test_htkvctl_users_text_and_json(void **state)
{
    (void)state;
    struct auth_store s;
    auth_store_make(&s, "ctl-users");
    const char *files[] = { s.key_hex, s.key_raw };
    struct tu_run r;
    char line[128];
    for (size_t i = 0; i < 2; i++) {
        tu_context("users with %s", files[i]);
        RUN(&r, "users", "--master-key-file", files[i], s.dir);
        tu_expect_status(&r, 0);
        assert_string_equal(r.err, "");
        tu_expect_contains(r.out, "NAME   ID ");
        /* Sorted by name in byte order: "Bob" < "alice" < "carol". */
        snprintf(line, sizeof(line), "Bob    %s  %s  1\n", s.bob.id, AUTH_EPOCH_TEXT);
        const char *bob = strstr(r.out, line);
        tu_expect_contains(r.out, line);
        snprintf(line, sizeof(line), "alice  %s  %s  2\n", s.alice.id, AUTH_EPOCH_TEXT);
        const char *alice = strstr(r.out, line);
        tu_expect_contains(r.out, line);
        snprintf(line, sizeof(line), "carol  %s  %s  0\n", s.carol.id, AUTH_EPOCH_TEXT);
        const char *carol = strstr(r.out, line);
        tu_expect_contains(r.out, line);
        assert_true(bob < alice && alice < carol);
        expect_no_secrets(&s, &r);
        tu_run_free(&r);
    }

    RUN(&r, "--json", "users", "--master-key-file=", s.dir); /* an empty name: usage error */
    tu_expect_status(&r, 2);
    tu_run_free(&r);
    RUN(&r, "users", "--json", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "auth_data", "true");
    expect_json_member(r.out, "count", "3");
    expect_json_member(r.out, "name", "\"alice\"");
    expect_json_member(r.out, "name", "\"Bob\"");
    snprintf(line, sizeof(line), "\"%s\"", s.alice.id);
    expect_json_member(r.out, "id", line);
    snprintf(line, sizeof(line), "%d", AUTH_EPOCH);
    expect_json_member(r.out, "created_at", line);
    expect_json_member(r.out, "api_keys", "2");
    expect_json_member(r.out, "api_keys", "1");
    expect_json_member(r.out, "api_keys", "0");
    expect_no_secrets(&s, &r);
    tu_run_free(&r);
    auth_store_free(&s);
}

/* Goal: keys-of lists a user's API keys (id, created, expiry or "never", status), by name in any
 * ASCII case or by id, as text and JSON, and prints no secret. Method: the users above. */
static void
test_htkvctl_keys_of_text_and_json(void **state)
{
    (void)state;
    struct auth_store s;
    auth_store_make(&s, "ctl-keysof");
    char upper[HTKV_AUTH_ID_SIZE];
    for (size_t i = 0; i < sizeof(upper); i++) {
        upper[i] = (char)toupper((unsigned char)s.alice.id[i]);
    }
    const char *names[] = { "alice", "ALICE", s.alice.id, upper };
    struct tu_run r;
    char line[128];
    char *first = NULL;
    for (size_t i = 0; i < 4; i++) {
        tu_context("keys-of %s", names[i]);
        RUN(&r, "keys-of", names[i], "--master-key-file", s.key_hex, s.dir);
        tu_expect_status(&r, 0);
        assert_string_equal(r.err, "");
        tu_expect_contains(r.out, "ID ");
        snprintf(line, sizeof(line), "%s  %s  %-20s  %-20s  active   laptop\n", s.laptop.id,
                 AUTH_EPOCH_TEXT, "never", "never");
        const char *laptop = strstr(r.out, line);
        tu_expect_contains(r.out, line);
        snprintf(line, sizeof(line), "%s  %s  %s  %-20s  expired  ci\n", s.ci.id, AUTH_EPOCH_TEXT,
                 AUTH_CI_EXPIRES_TEXT, "never");
        const char *ci = strstr(r.out, line);
        tu_expect_contains(r.out, line);
        /* Oldest first: both were created in the same second, so by id. */
        assert_true(strcmp(s.laptop.id, s.ci.id) < 0 ? laptop < ci : ci < laptop);
        assert_null(strstr(r.out, s.bobkey.id));
        expect_no_secrets(&s, &r);
        if (first == NULL) {
            first = strdup(r.out);
        } else {
            assert_string_equal(r.out, first); /* the same listing whatever names the user */
        }
        tu_run_free(&r);
    }
    free(first);

    RUN(&r, "--json", "keys-of", "bob", "--master-key-file", s.key_raw, s.dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "name", "\"Bob\"");
    snprintf(line, sizeof(line), "\"%s\"", s.bobkey.id);
    expect_json_member(r.out, "id", line);
    expect_json_member(r.out, "label", "\"\"");
    snprintf(line, sizeof(line), "%lld", AUTH_FAR);
    expect_json_member(r.out, "expires_at", line);
    expect_json_member(r.out, "expired", "false");
    expect_json_member(r.out, "last_used_at", "null");
    expect_json_member(r.out, "count", "1");
    expect_no_secrets(&s, &r);
    tu_run_free(&r);
    RUN(&r, "keys-of", "Bob", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, AUTH_FAR_TEXT "  never                 active   \n");
    tu_run_free(&r);

    RUN(&r, "--json", "keys-of", "alice", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "expires_at", "null");
    snprintf(line, sizeof(line), "%d", AUTH_CI_EXPIRES);
    expect_json_member(r.out, "expires_at", line);
    expect_json_member(r.out, "expired", "true");
    expect_json_member(r.out, "count", "2");
    expect_no_secrets(&s, &r);
    tu_run_free(&r);

    RUN(&r, "keys-of", "carol", "--master-key-file", s.key_hex, s.dir); /* no key: no row */
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    RUN(&r, "--json", "keys-of", "carol", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    expect_json_member(r.out, "api_keys", "[]");
    expect_json_member(r.out, "count", "0");
    tu_run_free(&r);
    auth_store_free(&s);
}

/* Goal: a wrong master key is exit 4 with a clear message, a malformed or missing key file and
 * a missing --master-key-file are exit 2, an unknown user is exit 1, a name that is another
 * user's id is refused, a key file others may read works with a warning; none prints a secret.
 * Method: the store above, with bad key files and arguments. */
static void
test_htkvctl_auth_bad_keys_and_users(void **state)
{
    (void)state;
    struct auth_store s;
    auth_store_make(&s, "ctl-authbad");
    struct tu_run r;
    RUN(&r, "users", "--master-key-file", s.key_wrong, s.dir);
    tu_expect_status(&r, 4);
    tu_expect_contains(r.err, "master key does not open this store's auth records");
    assert_string_equal(r.out, "");
    expect_no_secrets(&s, &r);
    tu_run_free(&r);
    RUN(&r, "--json", "keys-of", "alice", "--master-key-file", s.key_wrong, s.dir);
    tu_expect_status(&r, 4);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "4");
    tu_expect_contains(r.out, "does not open");
    tu_run_free(&r);
    RUN(&r, "users", "--master-key-file", s.key_hex, "--master-key-id", "2", s.dir);
    tu_expect_status(&r, 4);
    tu_run_free(&r);

    /* Malformed key files: exit 2, nothing on stdout, no byte of the file printed. */
    static const char *const bad[] = {
        "",
        "a0a1a2a3\n",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfzz", /* 66 */
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebg\n", /* not hex */
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n\n",
        "0123456789abcdef0123456789abcdef\n", /* 33 bytes */
    };
    char path[4300];
    snprintf(path, sizeof(path), "%s/bad", s.keys);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tu_context("malformed key file %zu", i);
        write_file_mode(path, bad[i], strlen(bad[i]), 0600);
        RUN(&r, "--json", "users", "--master-key-file", path, s.dir);
        tu_expect_status(&r, 2);
        tu_expect_contains(r.err, "not a master key file");
        assert_string_equal(r.out, "");
        if (strlen(bad[i]) > 8) {
            expect_absent(r.err, "a0a1a2a3");
        }
        tu_run_free(&r);
    }
    snprintf(path, sizeof(path), "%s/missing", s.keys);
    RUN(&r, "users", "--master-key-file", path, s.dir);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "cannot open the master key file");
    tu_run_free(&r);
    RUN(&r, "users", "--master-key-file", s.keys, s.dir); /* a directory */
    tu_expect_status(&r, 2);
    tu_run_free(&r);
    RUN(&r, "users", s.dir);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "--master-key-file FILE is required");
    tu_expect_contains(r.err, "usage: htkvctl");
    tu_run_free(&r);
    RUN(&r, "keys-of", "alice", s.dir);
    tu_expect_status(&r, 2);
    tu_run_free(&r);

    /* Readable by others: used, with a warning. */
    RUN(&r, "users", "--master-key-file", s.key_open, s.dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.err, "warning: the master key file");
    tu_expect_contains(r.err, "readable by group or others");
    tu_expect_contains(r.out, s.alice.id);
    tu_run_free(&r);

    /* Unknown users. */
    RUN(&r, "keys-of", "dave", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.err, "no user named 'dave'");
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    char id[HTKV_AUTH_ID_SIZE];
    memcpy(id, s.alice.id, sizeof(id));
    id[0] = id[0] == '0' ? '1' : '0';
    RUN(&r, "--json", "keys-of", id, "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "1");
    tu_expect_contains(r.out, "or with that id");
    tu_run_free(&r);

    /* A user named like another user's id. */
    htkv_config cfg;
    tu_config(&cfg, s.dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    htkv_auth *auth = auth_open_test(db);
    struct htkv_auth_user twin;
    assert_int_equal(htkv_auth_create_user(auth, s.bob.id, "pw", 2, &twin), 0);
    htkv_auth_close(auth);
    assert_int_equal(htkv_close(db), 0);
    RUN(&r, "keys-of", s.bob.id, "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "ambiguous");
    tu_expect_contains(r.err, twin.id); /* how to name each one */
    tu_expect_contains(r.err, "'Bob'");
    tu_run_free(&r);
    RUN(&r, "keys-of", twin.id, "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    auth_store_free(&s);
}

/* Goal: on a store without auth data, users prints nothing (JSON: an empty array) and exits 0,
 * keys-of finds no user, and neither creates auth data; on a store with auth data nothing
 * changes either. Method: compare every file byte for byte, look for auth/meta afterwards. */
static void
test_htkvctl_auth_commands_write_nothing(void **state)
{
    (void)state;
    struct auth_store s;
    auth_store_make(&s, "ctl-authro");
    char *plain = make_store("ctl-noauth");
    size_t len0, len1;
    char *before = store_bytes(plain, &len0);
    struct tu_run r;
    RUN(&r, "users", "--master-key-file", s.key_hex, plain);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "");
    tu_expect_contains(r.err, "no auth data");
    tu_run_free(&r);
    RUN(&r, "--json", "users", "--master-key-file", s.key_hex, plain);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    expect_json_member(r.out, "users", "[]");
    expect_json_member(r.out, "auth_data", "false");
    expect_json_member(r.out, "count", "0");
    tu_run_free(&r);
    RUN(&r, "--read-only", "users", "--master-key-file", s.key_wrong, plain);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    RUN(&r, "keys-of", "alice", "--master-key-file", s.key_hex, plain);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.err, "no auth data");
    tu_run_free(&r);
    char *after = store_bytes(plain, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    htkv_config cfg;
    tu_config(&cfg, plain, HTKV_SYNC_NEVER);
    cfg.read_only = 1;
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_contains(db, "auth/meta", 9), 0);
    assert_int_equal(htkv_close(db), 0);

    before = store_bytes(s.dir, &len0);
    RUN(&r, "users", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    RUN(&r, "keys-of", "alice", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    RUN(&r, "users", "--master-key-file", s.key_wrong, s.dir);
    tu_expect_status(&r, 4);
    tu_run_free(&r);
    after = store_bytes(s.dir, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    tu_rmrf(plain);
    free(plain);
    auth_store_free(&s);
}

/* Goal: users and keys-of refuse a store another process has open for writing (exit 3, naming
 * --read-only) and work with --read-only. Method: hold the store open in this process. */
static void
test_htkvctl_auth_locked_store_refused_unless_read_only(void **state)
{
    (void)state;
    struct auth_store s;
    auth_store_make(&s, "ctl-authlock");
    htkv_config cfg;
    tu_config(&cfg, s.dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    struct tu_run r;
    RUN(&r, "users", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "open in another process");
    tu_expect_contains(r.err, "--read-only");
    tu_run_free(&r);
    RUN(&r, "keys-of", "alice", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 3);
    tu_run_free(&r);
    RUN(&r, "--read-only", "users", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, s.alice.id);
    tu_run_free(&r);
    RUN(&r, "keys-of", "--read-only", "alice", "--master-key-file", s.key_hex, s.dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, s.laptop.id);
    tu_expect_contains(r.out, s.ci.id);
    tu_run_free(&r);
    RUN(&r, "--read-only", "users", "--master-key-file", s.key_wrong, s.dir);
    tu_expect_status(&r, 4);
    tu_run_free(&r);
    assert_int_equal(htkv_put(db, "after", 5, "ok", 2), 0); /* the writer is undisturbed */
    assert_int_equal(htkv_close(db), 0);
    auth_store_free(&s);
}

/* ---- maintenance: compact, snapshot, snapshot and hint files in verify ----------------------- */

/* The number after "KEY": in @p text, inside the object "OBJECT": { ... } when @p object is set. */
static uint64_t
json_u64_at(const char *text, const char *object, const char *key)
{
    const char *p = text;
    char needle[128];
    if (object != NULL) {
        snprintf(needle, sizeof(needle), "\"%s\": {", object);
        p = strstr(text, needle);
        if (p == NULL) {
            fprintf(stderr, "no object \"%s\" in:\n%s\n", object, text);
        }
        assert_non_null(p);
    }
    snprintf(needle, sizeof(needle), "\"%s\": ", key);
    const char *q = strstr(p, needle);
    if (q == NULL) {
        fprintf(stderr, "no member \"%s\" in:\n%s\n", key, p);
    }
    assert_non_null(q);
    return strtoull(q + strlen(needle), NULL, 10);
}

#define OVER_KEYS 600 /* over0000..over0599, written OVER_ROUNDS times; over0000..0049 deleted */
#define OVER_ROUNDS 6
#define OVER_DELETED 50

/* A closed store of small segments (64 KiB) holding mostly superseded records. */
static char *
make_overwritten_store(const char *tag)
{
    char *dir = tu_tmpdir(tag);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 1u << 16;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = tu_open(&cfg);
    char k[32], v[256];
    for (int r = 0; r < OVER_ROUNDS; r++) {
        for (int i = 0; i < OVER_KEYS; i++) {
            snprintf(k, sizeof(k), "over%04d", i);
            memset(v, 'a' + r, sizeof(v));
            int n = snprintf(v, sizeof(v), "round%d-%d", r, i);
            v[n] = '.';
            assert_int_equal(htkv_put(db, k, strlen(k), v, 200), 0);
        }
    }
    for (int i = 0; i < OVER_DELETED; i++) {
        snprintf(k, sizeof(k), "over%04d", i);
        assert_int_equal(htkv_delete(db, k, strlen(k)), 0);
    }
    assert_int_equal(htkv_close(db), 0);
    return dir;
}

/* Goal: compact rewrites a store of overwrites into fewer segments with no dead bytes, reports
 * before/after figures as text and JSON, and keeps every value. Method: 6 rounds of overwrites
 * in 64 KiB segments; compact (JSON), then again (text: nothing left to do); get, verify. */
static void
test_htkvctl_compact_shrinks_a_store_with_overwrites(void **state)
{
    (void)state;
    char *dir = make_overwritten_store("ctl-compact");
    char paths[256][4096];
    size_t segs0 = tu_segments(dir, paths, 256);
    assert_true(segs0 > 8);
    struct tu_run r;
    RUN(&r, "--json", "compact", dir);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    assert_string_equal(r.err, ""); /* no progress bar: stderr is not a terminal */
    const char *members[] = { "segments_compacted", "tombstones_dropped", "read_bytes",
                              "written_bytes",      "elapsed_s",          "read_mb_per_s" };
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        expect_json_member(r.out, members[i], NULL);
    }
    const char *fig[] = { "segments",   "live_keys",  "tombstones", "data_bytes",
                          "live_bytes", "dead_bytes", "disk_bytes" };
    for (size_t i = 0; i < sizeof(fig) / sizeof(fig[0]); i++) {
        json_u64_at(r.out, "before", fig[i]);
        json_u64_at(r.out, "after", fig[i]);
    }
    uint64_t seg_before = json_u64_at(r.out, "before", "segments");
    uint64_t seg_after = json_u64_at(r.out, "after", "segments");
    uint64_t dead_before = json_u64_at(r.out, "before", "dead_bytes");
    uint64_t dead_after = json_u64_at(r.out, "after", "dead_bytes");
    assert_int_equal(seg_before, segs0);
    assert_true(seg_after < seg_before);
    assert_true(dead_before > 0);
    assert_true(dead_after < dead_before);
    assert_true(json_u64_at(r.out, NULL, "segments_compacted") > 0);
    assert_true(json_u64_at(r.out, NULL, "read_bytes") > 0);
    assert_int_equal(json_u64_at(r.out, "after", "live_keys"), OVER_KEYS - OVER_DELETED);
    tu_run_free(&r);
    assert_true(tu_segments(dir, paths, 256) < segs0);

    RUN(&r, "compact", dir); /* nothing left to compact */
    tu_expect_status(&r, 0);
    const char *labels[] = { "before",
                             "segments ",
                             "data bytes",
                             "live bytes",
                             "dead bytes",
                             "disk bytes",
                             "segments compacted:  0",
                             "tombstones dropped:",
                             "bytes read:",
                             "bytes written:",
                             "elapsed:",
                             "read rate:" };
    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
        tu_expect_contains(r.out, labels[i]);
    }
    tu_run_free(&r);

    char key[32], want[64];
    for (int i = OVER_DELETED; i < OVER_KEYS; i += 97) {
        snprintf(key, sizeof(key), "over%04d", i);
        RUN(&r, "get", key, dir);
        tu_expect_status(&r, 0);
        snprintf(want, sizeof(want), "round%d-%d.", OVER_ROUNDS - 1, i);
        assert_int_equal(strncmp(r.out, want, strlen(want)), 0);
        assert_int_equal(strlen(r.out), 201); /* 200 bytes + newline */
        tu_run_free(&r);
    }
    RUN(&r, "get", "over0000", dir); /* deleted before the pass: still deleted */
    tu_expect_status(&r, 1);
    tu_run_free(&r);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: the commands that write refuse a store another process has open (exit 3, even a
 * read-only opener: they need the lock exclusively) and refuse --read-only (exit 2); the
 * store is untouched. Method: hold the store open for writing, then read-only, in this
 * process. */
static void
test_htkvctl_compact_and_import_refuse_locked_store(void **state)
{
    (void)state;
    char *dir = make_store("ctl-wlock");
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s.snap", dir);
    struct tu_run r;
    RUN(&r, "snapshot", "export", snap, dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    htkv_db *db = tu_open(&cfg);
    RUN(&r, "compact", dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "open in another process");
    tu_expect_contains(r.err, "stop that process first");
    tu_run_free(&r);
    RUN(&r, "--json", "compact", dir);
    tu_expect_status(&r, 3);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "3");
    tu_run_free(&r);
    RUN(&r, "snapshot", "import", "--force", snap, dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "open in another process");
    tu_run_free(&r);
    RUN(&r, "--read-only", "compact", dir);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "--read-only is not allowed: 'compact' changes the store");
    tu_run_free(&r);
    RUN(&r, "snapshot", "--read-only", "import", "--force", snap, dir);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "--read-only is not allowed: 'snapshot import' changes the store");
    tu_run_free(&r);
    RUN(&r, "--read-only", "snapshot", "export", snap, dir); /* export only reads */
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    assert_int_equal(htkv_put(db, "after", 5, "ok", 2), 0); /* the writer is undisturbed */
    assert_int_equal(htkv_close(db), 0);

    cfg.read_only = 1; /* a reader holds the lock shared: still no exclusive lock for us */
    db = tu_open(&cfg);
    RUN(&r, "compact", dir);
    tu_expect_status(&r, 3);
    tu_expect_contains(r.err, "open in another process");
    tu_run_free(&r);
    assert_int_equal(htkv_close(db), 0);
    RUN(&r, "get", "after", dir);
    tu_expect_status(&r, 0);
    assert_string_equal(r.out, "ok\n");
    tu_run_free(&r);
    unlink(snap);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: export then import into another store reproduces every key, value and version, and
 * both print the snapshot's key count and version (text and JSON). Method: the known store,
 * exported (also --read-only), imported into a fresh empty store; keys, dump and versions
 * compared. */
static void
test_htkvctl_snapshot_export_import_round_trip(void **state)
{
    (void)state;
    char *src = make_store("ctl-snap-src");
    char *dst = tu_tmpdir("ctl-snap-dst");
    htkv_config cfg;
    tu_config(&cfg, dst, HTKV_SYNC_NEVER);
    assert_int_equal(htkv_close(tu_open(&cfg)), 0); /* an empty store */
    char snap[4200], line[256];
    snprintf(snap, sizeof(snap), "%s.snap", src);
    struct tu_run r;
    RUN(&r, "snapshot", "export", snap, src);
    tu_expect_status(&r, 0);
    snprintf(line, sizeof(line), "exported %d keys (version ", STORE_LIVE);
    tu_expect_contains(r.out, line);
    tu_run_free(&r);
    RUN(&r, "--read-only", "--json", "snapshot", "export", snap, src);
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    assert_int_equal(json_u64_at(r.out, NULL, "keys"), STORE_LIVE);
    assert_int_equal(json_u64_at(r.out, NULL, "bytes"), (uint64_t)tu_file_size(snap));
    uint64_t version = json_u64_at(r.out, NULL, "version");
    assert_true(version > 0);
    tu_run_free(&r);

    RUN(&r, "--json", "snapshot", "import", snap, dst); /* empty: no --force needed */
    tu_expect_status(&r, 0);
    expect_json_object(r.out);
    assert_int_equal(json_u64_at(r.out, NULL, "keys"), STORE_LIVE);
    assert_int_equal(json_u64_at(r.out, NULL, "version"), version);
    expect_json_member(r.out, "replaced_keys", "0");
    tu_run_free(&r);
    const char *lists[][2] = { { "keys", NULL }, { "dump", NULL }, { "--hex", "dump" } };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        struct tu_run a, b;
        if (lists[i][1] == NULL) {
            RUN(&a, lists[i][0], src);
            RUN(&b, lists[i][0], dst);
        } else {
            RUN(&a, lists[i][0], lists[i][1], src);
            RUN(&b, lists[i][0], lists[i][1], dst);
        }
        tu_expect_status(&a, 0);
        tu_expect_status(&b, 0);
        assert_string_equal(a.out, b.out);
        tu_run_free(&a);
        tu_run_free(&b);
    }
    struct tu_run a, b; /* versions survive */
    RUN(&a, "--json", "get", "key050", src);
    RUN(&b, "--json", "get", "key050", dst);
    assert_int_equal(json_u64_at(a.out, NULL, "version"), json_u64_at(b.out, NULL, "version"));
    tu_run_free(&a);
    tu_run_free(&b);

    RUN(&r, "snapshot", "import", "--force", snap, dst); /* again, over the same keys */
    tu_expect_status(&r, 0);
    snprintf(line, sizeof(line), "imported %d keys (snapshot version %llu", STORE_LIVE,
             (unsigned long long)version);
    tu_expect_contains(r.out, line);
    snprintf(line, sizeof(line), "replacing its %d keys", STORE_LIVE);
    tu_expect_contains(r.out, line);
    tu_run_free(&r);
    RUN(&r, "verify", dst);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    unlink(snap);
    tu_rmrf(src);
    tu_rmrf(dst);
    free(src);
    free(dst);
}

/* Goal: import refuses a store with keys without --force (exit 2, the documented message); a
 * damaged or truncated snapshot fails (exit 1, the engine's reason) and leaves the store as it
 * was. Method: a snapshot of one store imported into another that holds other keys. */
static void
test_htkvctl_snapshot_import_refusals_and_damage(void **state)
{
    (void)state;
    char *src = make_overwritten_store("ctl-imp-src");
    char *dst = make_store("ctl-imp-dst");
    char snap[4200], bad[4200], cut[4200];
    snprintf(snap, sizeof(snap), "%s.snap", src);
    snprintf(bad, sizeof(bad), "%s.bad.snap", src);
    snprintf(cut, sizeof(cut), "%s.cut.snap", src);
    struct tu_run r;
    RUN(&r, "snapshot", "export", snap, src);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    long long size = tu_file_size(snap);
    assert_true(size > 4096);
    char *bytes = malloc((size_t)size);
    assert_non_null(bytes);
    assert_int_equal(tu_read_at(snap, 0, bytes, (size_t)size), 0);
    bytes[size / 2] ^= 0x10; /* a byte in the middle of the entries */
    FILE *f = fopen(bad, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)size, f), (size_t)size);
    assert_int_equal(fclose(f), 0);
    bytes[size / 2] ^= 0x10;
    f = fopen(cut, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, (size_t)size - 100, f), (size_t)size - 100);
    assert_int_equal(fclose(f), 0);
    free(bytes);

    struct tu_run dump0;
    RUN(&dump0, "dump", dst);
    tu_expect_status(&dump0, 0);
    size_t len0, len1;
    char *before = store_bytes(dst, &len0);

    RUN(&r, "snapshot", "import", snap, dst);
    tu_expect_status(&r, 2);
    tu_expect_contains(r.err, "store is not empty; --force replaces its whole contents");
    assert_string_equal(r.out, "");
    tu_run_free(&r);
    RUN(&r, "--json", "snapshot", "import", snap, dst);
    tu_expect_status(&r, 2);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "2");
    tu_run_free(&r);

    RUN(&r, "snapshot", "import", "--force", bad, dst);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.err, "cannot import");
    tu_expect_contains(r.err, "entry checksum mismatch at offset 64");
    tu_expect_contains(r.err, "the store is unchanged");
    tu_run_free(&r);
    RUN(&r, "--json", "snapshot", "import", "--force", cut, dst);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "exit_status", "1");
    tu_expect_contains(r.out, "the store is unchanged");
    tu_run_free(&r);
    char missing[4300];
    snprintf(missing, sizeof(missing), "%s.none", snap);
    RUN(&r, "snapshot", "import", "--force", missing, dst);
    tu_expect_status(&r, 1);
    tu_run_free(&r);

    struct tu_run dump1;
    RUN(&dump1, "dump", dst);
    tu_expect_status(&dump1, 0);
    assert_string_equal(dump0.out, dump1.out);
    tu_run_free(&dump0);
    tu_run_free(&dump1);
    char *after = store_bytes(dst, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    unlink(snap);
    unlink(bad);
    unlink(cut);
    tu_rmrf(src);
    tu_rmrf(dst);
    free(src);
    free(dst);
}

/* Goal: verify checks snapshot files in the store directory: a clean one is counted, a flipped
 * bit in its entries or its header is a problem with file and offset (text and JSON).
 * Method: export a snapshot as DIR/snapshot-000001.snap, then damage it. */
static void
test_htkvctl_verify_finds_damaged_snapshot_file(void **state)
{
    (void)state;
    char *dir = make_store("ctl-vsnap");
    char snap[4200];
    snprintf(snap, sizeof(snap), "%s/snapshot-000001.snap", dir);
    struct tu_run r;
    RUN(&r, "snapshot", "export", snap, dir);
    tu_expect_status(&r, 0);
    tu_run_free(&r);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ", 1 snapshot files, ");
    tu_expect_contains(r.out, ": clean (0 problems, 0 notes)");
    tu_run_free(&r);

    assert_int_equal(tu_flip_bit(snap, 64 + 16 + 2, 5), 0); /* the first entry's key */
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out,
                       "snapshot-000001.snap:64: problem: snapshot: entry checksum mismatch");
    tu_expect_contains(r.out, "PROBLEMS FOUND (1 problems");
    tu_run_free(&r);
    RUN(&r, "--json", "verify", dir);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "clean", "false");
    expect_json_member(r.out, "snapshot_files", "1");
    tu_expect_contains(r.out, "\"file\": \"snapshot-000001.snap\",\n");
    expect_json_member(r.out, "offset", "64");
    tu_run_free(&r);

    assert_int_equal(tu_flip_bit(snap, 64 + 16 + 2, 5), 0);
    assert_int_equal(tu_flip_bit(snap, 24, 0), 0); /* the header's entry count */
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 1);
    tu_expect_contains(r.out,
                       "snapshot-000001.snap:0: problem: snapshot: header checksum mismatch");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Paths of the hint files of @p dir (shards 0..3); returns the count (max @p cap). */
static size_t
find_hints(const char *dir, char (*paths)[4096], size_t cap)
{
    size_t n = 0;
    for (unsigned s = 0; s < 4; s++) {
        char sd[3800]; /* + "/" + a 17-byte name < 4096 */
        snprintf(sd, sizeof(sd), "%s/shard-%03u", dir, s);
        DIR *d = opendir(sd);
        if (d == NULL) {
            continue;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL && n < cap) {
            size_t len = strlen(de->d_name);
            if (len == 17 && strcmp(de->d_name + 12, ".hint") == 0) {
                snprintf(paths[n++], 4096, "%s/%s", sd, de->d_name);
            }
        }
        closedir(d);
    }
    return n;
}

/* Goal: a flipped bit in a hint file the engine wrote is a note (recovery ignores the hint),
 * a problem with --strict. Method: a store whose segments rotate (64 KiB), compacted and
 * closed; skipped while the engine writes no hint files. */
static void
test_htkvctl_verify_finds_damaged_engine_hint(void **state)
{
    (void)state;
    char *dir = make_overwritten_store("ctl-ehint");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_NEVER);
    cfg.max_segment_bytes = 1u << 16;
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_compact_now(db), 0);
    assert_int_equal(htkv_close(db), 0);
    char hints[64][4096];
    size_t n = find_hints(dir, hints, 64);
    if (n == 0) {
        fprintf(stderr, "[ctl-ehint] the engine wrote no hint file: skipped\n");
        tu_rmrf(dir);
        free(dir);
        skip();
    }
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ": clean (0 problems, 0 notes)");
    tu_run_free(&r);
    assert_int_equal(tu_flip_bit(hints[0], 40, 1), 0); /* the header's record count */
    char where[4300];
    snprintf(where, sizeof(where), "%s:0: note: hint: header checksum mismatch",
             hints[0] + strlen(dir) + 1);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    RUN(&r, "verify", "--strict", dir);
    tu_expect_status(&r, 1);
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Write a hint file for the first @p nrec records of segment @p seg (format in engine/hint.h;
 * the key hashes are left 0: a hint's own checks do not cover them). */
static void
write_hint(const char *seg, unsigned shard, size_t nrec, const char *path)
{
    struct tu_rec recs[16];
    size_t k = tu_seg_scan(seg, recs, 16);
    assert_true(k >= nrec && nrec > 0);
    unsigned char buf[64 + 16 * 32 + 8];
    memset(buf, 0, sizeof(buf));
    memcpy(buf, "HTKVHNT1", 8);
    htkv_store32(buf + 8, HTKV_FORMAT_VERSION);
    htkv_store32(buf + 12, shard);
    htkv_store64(buf + 16, tu_seg_id(seg));
    htkv_store64(buf + 24, nrec);
    htkv_store64(buf + 32, (uint64_t)(recs[nrec - 1].off + recs[nrec - 1].size));
    htkv_store64(buf + 40, nrec);
    uint64_t maxv = 0;
    for (size_t i = 0; i < nrec; i++) {
        unsigned char *e = buf + 64 + i * 32;
        htkv_store64(e + 8, recs[i].version);
        htkv_store32(e + 16, (uint32_t)recs[i].off);
        htkv_store32(e + 20, recs[i].key_len);
        htkv_store32(e + 24, recs[i].val_len);
        e[28] = (unsigned char)recs[i].type;
        e[29] = (unsigned char)recs[i].flags;
        maxv = recs[i].version > maxv ? recs[i].version : maxv;
    }
    htkv_store64(buf + 48, maxv);
    htkv_store32(buf + 60, htkv_crc32c(0, buf, 60));
    unsigned char *t = buf + 64 + nrec * 32;
    htkv_store32(t, htkv_crc32c(0, buf + 64, nrec * 32));
    write_file_mode(path, buf, 64 + nrec * 32 + 8, 0644);
}

/* Goal: verify checks hint files with recovery's rules: a well-formed one is counted and
 * clean; damage (entries, header, the segment it names) is a note with file and offset, a
 * problem with --strict; a hint without its segment is a note. Method: hints written here
 * by the documented format beside the segments of the known store (any the engine wrote
 * removed first). */
static void
test_htkvctl_verify_checks_hint_files(void **state)
{
    (void)state;
    char *dir = make_store("ctl-hint");
    char hints[64][4096]; /* an engine that writes hints at close left some: start without */
    for (size_t i = 0, n = find_hints(dir, hints, 64); i < n; i++) {
        assert_int_equal(unlink(hints[i]), 0);
    }
    char segs[8][4096];
    assert_true(tu_shard_segments(dir, 1, segs, 8) >= 1);
    char hint[4200];
    snprintf(hint, sizeof(hint), "%.*s.hint", (int)(strlen(segs[0]) - 4), segs[0]);
    write_hint(segs[0], 1, 3, hint);
    const char *rel = hint + strlen(dir) + 1;
    struct tu_run r;
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ", 1 hint files; ");
    tu_expect_contains(r.out, ": clean (0 problems, 0 notes)");
    tu_run_free(&r);

    char where[4400];
    assert_int_equal(tu_flip_bit(hint, 64 + 32 + 8, 0), 0); /* the second entry's version */
    snprintf(where, sizeof(where),
             "%s:160: note: hint: entry checksum mismatch; recovery ignores the hint and scans "
             "the segment",
             rel);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_expect_contains(r.out, ": clean (0 problems, 1 notes)");
    tu_run_free(&r);
    RUN(&r, "--json", "verify", "--strict", dir);
    tu_expect_status(&r, 1);
    expect_json_object(r.out);
    expect_json_member(r.out, "hint_files", "1");
    expect_json_member(r.out, "offset", "160");
    tu_run_free(&r);

    write_hint(segs[0], 2, 3, hint); /* names shard 2 */
    snprintf(where, sizeof(where), "%s:12: note: hint: names another shard or segment", rel);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    write_hint(segs[0], 1, 3, hint);
    assert_int_equal(tu_flip_bit(hint, 50, 3), 0); /* max_version, under the header CRC */
    snprintf(where, sizeof(where), "%s:0: note: hint: header checksum mismatch", rel);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    assert_int_equal(tu_truncate(hint, 40), 0);
    snprintf(where, sizeof(where), "%s:0: note: hint: size out of range", rel);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, where);
    tu_run_free(&r);
    unlink(hint);

    snprintf(hint, sizeof(hint), "%s/shard-001/999999999999.hint", dir);
    write_hint(segs[0], 1, 3, hint);
    RUN(&r, "verify", dir);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, "shard-001/999999999999.hint:0: note: hint: its segment does not "
                              "exist");
    tu_run_free(&r);
    unlink(hint);
    RUN(&r, "verify", dir); /* no hint at all: hints are optional */
    tu_expect_status(&r, 0);
    tu_expect_contains(r.out, ", 0 hint files; ");
    tu_expect_contains(r.out, ": clean (0 problems, 0 notes)");
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: while stderr is a terminal, compact draws its progress bar there and erases it; stdout
 * gets only the report. Method: stderr on a pseudo-terminal. */
static void
test_htkvctl_compact_progress_bar_on_a_terminal(void **state)
{
    (void)state;
    char *dir = make_overwritten_store("ctl-bar");
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        fprintf(stderr, "[ctl-bar] no pseudo-terminal: skipped\n");
        if (master >= 0) {
            close(master);
        }
        tu_rmrf(dir);
        free(dir);
        skip();
    }
    int slave = open(ptsname(master), O_RDWR | O_NOCTTY);
    assert_true(slave >= 0);
    int out = tu_tmpfile_fd();
    pid_t pid = tu_tool_spawn(HTKVCTL_PATH, TU_ARGS("compact", dir), out, slave);
    /* Drain the terminal while the child runs, so that it never blocks on a full buffer. The
     * slave stays open here until the child has exited and everything is read: once no slave
     * descriptor is open, Linux answers EIO on the master and may drop what the child wrote (a
     * child faster than the first read left nothing to check). */
    assert_int_equal(fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK), 0);
    char term[65536];
    size_t got = 0;
    int st = -1;
    bool exited = false;
    for (int quiet = 0; !exited || quiet < 50;) { /* after the exit: 50 ms without output */
        ssize_t k = read(master, term + got, sizeof(term) - 1 - got);
        if (k > 0) {
            got += (size_t)k;
            quiet = 0;
            continue;
        }
        assert_true(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        int ws = 0;
        pid_t w = exited ? 0 : waitpid(pid, &ws, WNOHANG);
        assert_true(w == 0 || w == pid);
        if (w == pid) {
            exited = true;
            st = tu_exit_status(ws);
        }
        quiet += exited;
        struct timespec nap = { 0, 1000 * 1000 };
        nanosleep(&nap, NULL);
    }
    term[got] = '\0';
    close(slave);
    close(master);
    struct tu_run r = { .status = st, .out = tu_slurp_fd(out), .err = strdup(term) };
    close(out);
    tu_expect_status(&r, 0);
    tu_expect_contains(r.err, "\rcompact [");
    tu_expect_contains(r.err, "\r\033[K");
    tu_expect_contains(r.out, "segments compacted:");
    assert_null(strstr(r.out, "compact ["));
    tu_run_free(&r);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_htkvctl_usage_and_bad_arguments),
        cmocka_unit_test(test_htkvctl_no_store_is_exit_3),
        cmocka_unit_test(test_htkvctl_info_text_and_json),
        cmocka_unit_test(test_htkvctl_segments_and_stats),
        cmocka_unit_test(test_htkvctl_get_escapes_hex_raw_and_missing),
        cmocka_unit_test(test_htkvctl_keys_and_dump),
        cmocka_unit_test(test_htkvctl_verify_clean_store_changes_nothing),
        cmocka_unit_test(test_htkvctl_verify_finds_flipped_bits),
        cmocka_unit_test(test_htkvctl_verify_torn_tail_is_a_note),
        cmocka_unit_test(test_htkvctl_verify_problems_where_open_refuses),
        cmocka_unit_test(test_htkvctl_verify_torn_last_record_after_crash_is_a_note),
        cmocka_unit_test(test_htkvctl_locked_store_refused_unless_read_only),
        cmocka_unit_test(test_htkvctl_read_only_during_appends),
        cmocka_unit_test(test_htkvctl_users_text_and_json),
        cmocka_unit_test(test_htkvctl_keys_of_text_and_json),
        cmocka_unit_test(test_htkvctl_auth_bad_keys_and_users),
        cmocka_unit_test(test_htkvctl_auth_commands_write_nothing),
        cmocka_unit_test(test_htkvctl_auth_locked_store_refused_unless_read_only),
        cmocka_unit_test(test_htkvctl_compact_shrinks_a_store_with_overwrites),
        cmocka_unit_test(test_htkvctl_compact_and_import_refuse_locked_store),
        cmocka_unit_test(test_htkvctl_snapshot_export_import_round_trip),
        cmocka_unit_test(test_htkvctl_snapshot_import_refusals_and_damage),
        cmocka_unit_test(test_htkvctl_verify_finds_damaged_snapshot_file),
        cmocka_unit_test(test_htkvctl_verify_finds_damaged_engine_hint),
        cmocka_unit_test(test_htkvctl_verify_checks_hint_files),
        cmocka_unit_test(test_htkvctl_compact_progress_bar_on_a_terminal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
