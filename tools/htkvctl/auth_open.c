/*
 * auth_open.c - the master key file and the opening of a store's auth records, for `users` and
 * `keys-of` (see auth_open.h).
 *
 * Design. The auth records are sealed with the store's master key, so a command that lists
 * them needs it: --master-key-file names a file holding the 32 bytes, raw or as 64 hex digits
 * (an optional newline after them, as `echo` or an editor leaves). The file is read with
 * read(2) into a stack buffer, not through stdio, so that no copy of the key is left in a
 * buffer the tool cannot wipe. A file that group or others may read is still used, with a
 * warning: refusing it would not take back what it exposed, and secret mounts (container
 * orchestrators) are often 0644. The key goes to htkv_auth_open_with(), which keeps its own
 * guarded copy, and the tool's copies are wiped right after.
 *
 * htkv_auth_open_with() creates auth/meta on a store that has none. The tool only reads, so it
 * looks for auth/meta first (htkv_contains(); the key is documented in <htkv/auth.h>) and, when
 * it is absent, reports a store without auth data instead of opening the service.
 *
 * Invariants
 *   1. Every copy of the master key in the tool's memory is wiped (ctl_wipe()) before
 *      ctl_auth_args() fails or ctl_auth_open() returns.
 *   2. No byte of the key file reaches the terminal, not even in an error message.
 *   3. The auth service is opened only on a store that already has auth/meta, so opening it
 *      writes nothing.
 */
#include "tools/htkvctl/auth_open.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bytes read from a key file at most: 64 hex digits + a newline + one byte that tells a longer
 * file from a valid one. */
#define KEY_FILE_READ_MAX (2 * HTKV_AUTH_KEY_BYTES + 2)

void
ctl_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    for (size_t i = 0; i < n; i++) {
        v[i] = 0;
    }
    __asm__ __volatile__("" : : "r"(p) : "memory"); /* the stores happen before any later use */
}

static int
key_hex_digit(unsigned char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Decode the @p n bytes of a key file into @p key. Returns 0, or -1 with *why set. */
static int
key_parse(const unsigned char *buf, size_t n, unsigned char *key, const char **why)
{
    if (n == HTKV_AUTH_KEY_BYTES) {
        memcpy(key, buf, HTKV_AUTH_KEY_BYTES);
        return 0;
    }
    if (n == 2 * HTKV_AUTH_KEY_BYTES + 1 && buf[n - 1] == '\n') {
        n--;
    }
    if (n != 2 * HTKV_AUTH_KEY_BYTES) {
        *why = n == 0                   ? "the file is empty"
               : n >= KEY_FILE_READ_MAX ? "the file is too long"
                                        : "the file has the wrong length";
        return -1;
    }
    for (size_t i = 0; i < HTKV_AUTH_KEY_BYTES; i++) {
        int hi = key_hex_digit(buf[2 * i]), lo = key_hex_digit(buf[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            ctl_wipe(key, HTKV_AUTH_KEY_BYTES);
            *why = "64 characters, but not all hex digits";
            return -1;
        }
        key[i] = (unsigned char)(hi * 16 + lo);
    }
    return 0;
}

/* Read the key file @p path into key->bytes. Returns 0 or CTL_EXIT_USAGE (reported). */
static int
key_file_read(const struct ctl *c, const char *path, struct ctl_master_key *key)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        ctl_error(c, "cannot open the master key file %s: %s", path, strerror(errno));
        return CTL_EXIT_USAGE;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & (S_IRGRP | S_IROTH)) != 0) {
        fprintf(stderr,
                "%s: warning: the master key file %s is readable by group or others (mode "
                "%04o); make it private: chmod 600 %s\n",
                c->prog, path, (unsigned)(st.st_mode & 07777), path);
    }
    unsigned char buf[KEY_FILE_READ_MAX];
    size_t n = 0;
    int err = 0;
    while (n < sizeof(buf)) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            err = errno;
            break;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    const char *why = NULL;
    int rc = err != 0 ? -1 : key_parse(buf, n, key->bytes, &why);
    ctl_wipe(buf, sizeof(buf));
    if (err != 0) {
        ctl_error(c, "cannot read the master key file %s: %s", path, strerror(err));
    } else if (rc != 0) {
        ctl_error(c,
                  "%s is not a master key file: %s (expected %d raw bytes, or %d hex digits and "
                  "an optional newline)",
                  path, why, HTKV_AUTH_KEY_BYTES, 2 * HTKV_AUTH_KEY_BYTES);
    }
    return rc == 0 ? 0 : CTL_EXIT_USAGE;
}

int
ctl_auth_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv, char **pos,
              size_t npos, struct ctl_master_key *key)
{
    const char *file = NULL, *id = NULL;
    const struct ctl_opt opts[] = { { "master-key-file", &file, NULL },
                                    { "master-key-id", &id, NULL } };
    memset(key, 0, sizeof(*key));
    int rc = ctl_parse_args(c, cmd, argc, argv, opts, 2, pos, npos);
    if (rc != 0) {
        return rc;
    }
    uint64_t v = 1;
    if (id != NULL && (!ctl_parse_u64(id, &v) || v == 0 || v > UINT32_MAX)) {
        return ctl_usage_error(c, cmd, "--master-key-id needs an id from 1 to %u, not '%s'",
                               (unsigned)UINT32_MAX, id);
    }
    if (file == NULL) {
        return ctl_usage_error(c, cmd,
                               "--master-key-file FILE is required (the auth records are sealed "
                               "with the store's master key)");
    }
    if (file[0] == '\0') {
        return ctl_usage_error(c, cmd, "--master-key-file needs a file name");
    }
    key->id = (uint32_t)v;
    rc = key_file_read(c, file, key);
    if (rc != 0) {
        ctl_wipe(key, sizeof(*key));
    }
    return rc;
}

int
ctl_auth_failed(const struct ctl *c, const char *what, int rc)
{
    char msg[1024];
    int status = CTL_EXIT_FAIL;
    const char *detail = htkv_last_error();
    if (rc == HTKV_EAUTH) {
        snprintf(msg, sizeof(msg),
                 "the master key does not open this store's auth records (another key, or "
                 "another --master-key-id: each rotation gives the store's key a new id)");
        status = CTL_EXIT_KEY;
    } else if (rc == HTKV_ECORRUPT) {
        snprintf(msg, sizeof(msg),
                 "%s: an auth record is damaged (it fails its check or does not parse); "
                 "'htkvctl verify' checks the store's files",
                 what);
    } else {
        snprintf(msg, sizeof(msg), "%s: %s%s%s%s", what, htkv_strerror(rc),
                 detail != NULL && detail[0] ? " (" : "", detail != NULL ? detail : "",
                 detail != NULL && detail[0] ? ")" : "");
    }
    ctl_error(c, "%s: %s", c->dir, msg);
    ctl_json_error(c, msg, status);
    return status;
}

int
ctl_auth_open(struct ctl *c, struct ctl_master_key *key, htkv_db **db, htkv_auth **auth)
{
    static const char meta[] = "auth/meta";
    *db = NULL;
    *auth = NULL;
    int status = ctl_open(c, db);
    if (status != 0) {
        goto out_wipe;
    }
    int rc = htkv_contains(*db, meta, sizeof(meta) - 1);
    if (rc == 1) {
        htkv_auth_config cfg;
        htkv_auth_config_init(&cfg);
        cfg.master_key = key->bytes;
        cfg.master_key_id = key->id;
        cfg.max_concurrent_hashes = 1; /* the commands never hash a password */
        rc = htkv_auth_open_with(*db, &cfg, auth);
    }
    if (rc < 0) {
        status = ctl_auth_failed(c, "cannot open the auth records", rc);
        ctl_close(*db);
        *db = NULL;
    }
out_wipe:
    ctl_wipe(key, sizeof(*key));
    return status;
}

void
ctl_auth_close(htkv_db *db, htkv_auth *auth)
{
    htkv_auth_close(auth); /* before the store: the handle reads through it */
    if (db != NULL) {
        ctl_close(db);
    }
}

const char *
ctl_time_utc(char *buf, size_t cap, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if ((int64_t)tt != t || gmtime_r(&tt, &tm) == NULL ||
        strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, cap, "%lld", (long long)t);
    }
    return buf;
}
