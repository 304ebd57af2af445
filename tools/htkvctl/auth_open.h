/*
 * auth_open.h - what `users` and `keys-of` share: the master key file, opening the store's auth
 * records with it, reporting auth failures, and timestamps as text.
 */
#ifndef HTKV_TOOLS_HTKVCTL_AUTH_OPEN_H
#define HTKV_TOOLS_HTKVCTL_AUTH_OPEN_H

#include <htkv/auth.h>

#include "tools/htkvctl/ctl.h"

/** The master key read from --master-key-file, and its id (--master-key-id, default 1). */
struct ctl_master_key {
    unsigned char bytes[HTKV_AUTH_KEY_BYTES];
    uint32_t id;
};

/** The options of a command that reads auth records, for its help text. */
#define CTL_AUTH_HELP                                                                              \
    "  --master-key-file FILE  the store's 32-byte master key: 32 raw bytes, or 64 hex digits\n"   \
    "                          and an optional newline (required; keep it chmod 600)\n"            \
    "  --master-key-id N       the id of that key (default 1; each rotation gives a new one)\n"

/**
 * Parse the words of @p cmd: --master-key-file FILE (required), --master-key-id N, then
 * @p npos positional words, the last one DIR; then read the key file into @p key.
 * A key file readable by group or others is read, with a warning on stderr.
 * @param[out] key  Receives the key; borrowed. On 0 it holds the key: pass it to
 *                  ctl_auth_open(), which wipes it. Wiped on every other return.
 * @return 0; -1 when --help was printed (the caller exits 0); CTL_EXIT_USAGE (bad command line,
 *         or a key file that cannot be read or holds no key; reported).
 */
int ctl_auth_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv, char **pos,
                  size_t npos, struct ctl_master_key *key);

/**
 * Open c->dir with ctl_open() and its auth records with @p key. A store without auth data
 * (no auth/meta record) is opened without opening the auth service, which would create that
 * record: *auth is then NULL and nothing is written.
 * @param[in,out] key   Borrowed; wiped before return, whatever the outcome.
 * @param[out]    db    Receives the store on 0; close with ctl_auth_close().
 * @param[out]    auth  Receives the auth handle on 0, or NULL when the store has no auth data.
 * @return 0; CTL_EXIT_NOSTORE; CTL_EXIT_KEY (the key does not open the records); CTL_EXIT_FAIL
 *         (a read failed). Failures are reported (with --json, as the error document).
 */
int ctl_auth_open(struct ctl *c, struct ctl_master_key *key, htkv_db **db, htkv_auth **auth);

/** Close what ctl_auth_open() opened (@p auth may be NULL). */
void ctl_auth_close(htkv_db *db, htkv_auth *auth);

/**
 * Report the failure @p rc of an auth call about @p what: on stderr and, with --json, as the
 * error document. HTKV_EAUTH means that the key does not open a record.
 * @return CTL_EXIT_KEY for HTKV_EAUTH, CTL_EXIT_FAIL otherwise.
 */
int ctl_auth_failed(const struct ctl *c, const char *what, int rc);

/** A Unix time as "2023-11-14T22:13:20Z" (UTC) into @p buf; the number when out of range. */
const char *ctl_time_utc(char *buf, size_t cap, int64_t t);

/** Overwrite @p n bytes at @p p with zeros in a way the compiler cannot drop. */
void ctl_wipe(void *p, size_t n);

#endif /* HTKV_TOOLS_HTKVCTL_AUTH_OPEN_H */
