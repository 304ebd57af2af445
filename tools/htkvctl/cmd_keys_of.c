/*
 * cmd_keys_of.c - `htkvctl keys-of USER --master-key-file FILE DIR`: the API keys of one auth
 * user, oldest first: key id, creation, expiry ("never" when none), last use, label
 * (htkv_auth_list_api_keys()).
 *
 * USER is a user name (ASCII case ignored, as the auth module compares names) or a user id (32
 * hex digits). Names and ids are different sets only by convention: a name may look like an id.
 * So an id-shaped USER is looked up both ways, and when it is the name of one user and the id of
 * another the command refuses it (exit 2) and tells how to name each of them unambiguously.
 *
 * Nothing secret is printed: a key record holds a keyed hash of the token's secret and sealed
 * metadata, and neither reaches the output (struct htkv_auth_api_key carries neither).
 *
 * Invariants
 *   1. Names and labels reach the terminal only through ctl_format_bytes() (ctl.c invariant 2).
 *   2. Only fields of struct htkv_auth_user / htkv_auth_api_key are printed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/htkvctl/auth_open.h"

/* Copy @p s lowercased into @p id when it is HTKV_AUTH_ID_LEN hex digits; false otherwise. */
static bool
id_shaped(const char *s, char *id)
{
    if (strlen(s) != HTKV_AUTH_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < HTKV_AUTH_ID_LEN; i++) {
        if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
        id[i] = (char)tolower((unsigned char)s[i]);
    }
    id[HTKV_AUTH_ID_LEN] = '\0';
    return true;
}

/* Report that USER names nobody. Returns CTL_EXIT_FAIL. */
static int
user_not_found(const struct ctl *c, const char *arg, bool id, bool auth_data)
{
    char msg[512];
    char *a = ctl_format_bytes(arg, strlen(arg), false);
    snprintf(msg, sizeof(msg), "%sno user named '%s'%s", auth_data ? "" : "no auth data: ", a,
             id ? " or with that id" : "");
    free(a);
    ctl_error(c, "%s: %s", c->dir, msg);
    ctl_json_error(c, msg, CTL_EXIT_FAIL);
    return CTL_EXIT_FAIL;
}

/* Report that USER is the name of @p by_name and the id of @p by_id. Returns CTL_EXIT_USAGE. */
static int
user_ambiguous(const struct ctl *c, const char *arg, const struct htkv_auth_user *by_name,
               const struct htkv_auth_user *by_id)
{
    char msg[1024];
    char *a = ctl_format_bytes(arg, strlen(arg), false);
    char *n = ctl_format_bytes(by_id->name, strlen(by_id->name), false);
    snprintf(msg, sizeof(msg),
             "'%s' is ambiguous: the name of the user with id %s, and the id of the user named "
             "'%s'; give that id or that name instead",
             a, by_name->id, n);
    free(a);
    free(n);
    ctl_error(c, "%s: %s", c->dir, msg);
    ctl_json_error(c, msg, CTL_EXIT_USAGE);
    return CTL_EXIT_USAGE;
}

/* Find the user @p arg names, by name or by id. Returns an exit status (reported). */
static int
user_resolve(const struct ctl *c, htkv_auth *auth, const char *arg, struct htkv_auth_user *u)
{
    char id[HTKV_AUTH_ID_SIZE];
    bool maybe_id = id_shaped(arg, id);
    struct htkv_auth_user by_name, by_id;
    int rn = htkv_auth_get_user_by_name(auth, arg, &by_name);
    if (rn == -EINVAL) {
        rn = HTKV_ENOTFOUND; /* not a valid name, so nobody's */
    }
    int ri = maybe_id ? htkv_auth_get_user(auth, id, &by_id) : HTKV_ENOTFOUND;
    if (rn != 0 && rn != HTKV_ENOTFOUND) {
        return ctl_auth_failed(c, "cannot read the user", rn);
    }
    if (ri != 0 && ri != HTKV_ENOTFOUND) {
        return ctl_auth_failed(c, "cannot read the user", ri);
    }
    if (rn == 0 && ri == 0 && strcmp(by_name.id, by_id.id) != 0) {
        return user_ambiguous(c, arg, &by_name, &by_id);
    }
    if (rn != 0 && ri != 0) {
        return user_not_found(c, arg, maybe_id, true);
    }
    *u = rn == 0 ? by_name : by_id;
    return CTL_EXIT_OK;
}

/* "never" for 0, else the UTC time. */
static const char *
time_or_never(char *buf, size_t cap, int64_t t)
{
    return t == 0 ? "never" : ctl_time_utc(buf, cap, t);
}

static void
keys_of_text(const struct htkv_auth_api_key *keys, size_t count, int64_t now)
{
    if (count == 0) {
        return;
    }
    printf("%-*s  %-20s  %-20s  %-20s  %-7s  %s\n", HTKV_AUTH_ID_LEN, "ID", "CREATED", "EXPIRES",
           "LAST_USED", "STATUS", "LABEL");
    for (size_t i = 0; i < count; i++) {
        const struct htkv_auth_api_key *k = &keys[i];
        char created[64], expires[64], used[64];
        char *label = ctl_format_bytes(k->label, strlen(k->label), false);
        bool expired = k->expires_at != 0 && now >= k->expires_at;
        printf("%-*s  %-20s  %-20s  %-20s  %-7s  %s\n", HTKV_AUTH_ID_LEN, k->id,
               ctl_time_utc(created, sizeof(created), k->created_at),
               time_or_never(expires, sizeof(expires), k->expires_at),
               time_or_never(used, sizeof(used), k->last_used_at), expired ? "expired" : "active",
               label);
        free(label);
    }
}

/* A Unix time member, null when @p t is 0 (never). */
static void
json_kv_time(struct json *j, const char *key, int64_t t)
{
    json_key(j, key);
    if (t == 0) {
        json_null(j);
    } else {
        json_i64(j, t);
    }
}

static void
keys_of_json(const struct ctl *c, const struct htkv_auth_user *u,
             const struct htkv_auth_api_key *keys, size_t count, int64_t now)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", c->dir);
    json_key(&j, "user");
    json_object_begin(&j);
    json_kv_string(&j, "name", u->name);
    json_kv_string(&j, "id", u->id);
    json_object_end(&j);
    json_key(&j, "api_keys");
    json_array_begin(&j);
    for (size_t i = 0; i < count; i++) {
        const struct htkv_auth_api_key *k = &keys[i];
        json_object_begin(&j);
        json_kv_string(&j, "id", k->id);
        json_kv_string(&j, "label", k->label);
        json_key(&j, "created_at");
        json_i64(&j, k->created_at);
        json_kv_time(&j, "expires_at", k->expires_at);
        json_kv_bool(&j, "expired", k->expires_at != 0 && now >= k->expires_at);
        json_kv_time(&j, "last_used_at", k->last_used_at);
        json_object_end(&j);
    }
    json_array_end(&j);
    json_kv_u64(&j, "count", count);
    json_object_end(&j);
    json_finish(&j);
}

static int
keys_of_run(struct ctl *c, int argc, char **argv)
{
    struct ctl_master_key key;
    char *pos[2];
    int status = ctl_auth_args(c, &ctl_cmd_keys_of, argc, argv, pos, 2, &key);
    if (status != 0) {
        return status < 0 ? CTL_EXIT_OK : status;
    }
    if (pos[0][0] == '\0') {
        ctl_wipe(&key, sizeof(key));
        return ctl_usage_error(c, &ctl_cmd_keys_of, "empty USER");
    }
    htkv_db *db;
    htkv_auth *auth;
    status = ctl_auth_open(c, &key, &db, &auth);
    if (status != 0) {
        return status;
    }
    char id[HTKV_AUTH_ID_SIZE];
    struct htkv_auth_user u;
    if (auth == NULL) {
        status = user_not_found(c, pos[0], id_shaped(pos[0], id), false);
    } else {
        status = user_resolve(c, auth, pos[0], &u);
    }
    if (status != CTL_EXIT_OK) {
        goto out_close;
    }
    struct htkv_auth_api_key *keys = NULL;
    size_t count = 0;
    int rc = htkv_auth_list_api_keys(auth, u.id, &keys, &count);
    if (rc == HTKV_ENOTFOUND) {
        status = user_not_found(c, pos[0], false, true); /* deleted since it was found */
    } else if (rc != 0) {
        status = ctl_auth_failed(c, "cannot list the API keys", rc);
    } else if (c->json) {
        keys_of_json(c, &u, keys, count, (int64_t)time(NULL));
    } else {
        keys_of_text(keys, count, (int64_t)time(NULL));
    }
    htkv_auth_free(keys);
out_close:
    ctl_auth_close(db, auth);
    return status;
}

const struct ctl_cmd ctl_cmd_keys_of = {
    .name = "keys-of",
    .args = "USER --master-key-file FILE [--master-key-id N] DIR",
    .summary = "API keys of an auth user: id, created, expires, last used (no secrets)",
    .help = CTL_AUTH_HELP
    "\n"
    "USER is a user name (ASCII case ignored) or a user id (32 hex digits).\n"
    "One row per API key, oldest first: ID, CREATED, EXPIRES (\"never\" when it does not),\n"
    "LAST_USED, STATUS (active or expired), LABEL; times in UTC. Tokens, their hashes and\n"
    "metadata are never printed. With --json, times are Unix seconds (null for never).\n"
    "Exit status 1 when no user is USER; 4 when the key does not open the auth records.\n",
    .run = keys_of_run,
};
