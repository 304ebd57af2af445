/*
 * cmd_users.c - `htkvctl users --master-key-file FILE DIR`: the auth users of the store, sorted
 * by name, with id, creation time and number of API keys (htkv_auth_list_users(),
 * htkv_auth_list_api_keys()).
 *
 * Nothing secret is printed: the user records hold a password hash and sealed metadata, and
 * neither reaches the output (struct htkv_auth_user carries neither). A store without auth data
 * prints no row (JSON: an empty "users" array, "auth_data": false) and exits 0.
 *
 * Invariants
 *   1. Names reach the terminal only through ctl_format_bytes() (ctl.c invariant 2).
 *   2. Only fields of struct htkv_auth_user and the count of its API keys are printed.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/htkvctl/auth_open.h"

/* API keys of each user; SIZE_MAX for a user deleted since the list was read (not printed). */
static int
users_key_counts(const struct ctl *c, htkv_auth *auth, const struct htkv_auth_user *users,
                 size_t count, size_t *nkeys)
{
    for (size_t i = 0; i < count; i++) {
        struct htkv_auth_api_key *keys = NULL;
        size_t n = 0;
        int rc = htkv_auth_list_api_keys(auth, users[i].id, &keys, &n);
        htkv_auth_free(keys);
        if (rc == HTKV_ENOTFOUND) {
            n = SIZE_MAX;
        } else if (rc != 0) {
            return ctl_auth_failed(c, "cannot list the API keys", rc);
        }
        nkeys[i] = n;
    }
    return CTL_EXIT_OK;
}

static void
users_text(const struct htkv_auth_user *users, size_t count, const size_t *nkeys)
{
    char **names = calloc(count, sizeof(*names));
    if (names == NULL) {
        fputs("htkvctl: out of memory\n", stderr);
        abort();
    }
    int width = 4; /* "NAME" */
    for (size_t i = 0; i < count; i++) {
        names[i] = ctl_format_bytes(users[i].name, strlen(users[i].name), false);
        int len = (int)strlen(names[i]);
        width = len > width ? len : width;
    }
    printf("%-*s  %-*s  %-20s  %s\n", width, "NAME", HTKV_AUTH_ID_LEN, "ID", "CREATED", "API_KEYS");
    for (size_t i = 0; i < count; i++) {
        if (nkeys[i] != SIZE_MAX) {
            char t[64];
            printf("%-*s  %-*s  %-20s  %zu\n", width, names[i], HTKV_AUTH_ID_LEN, users[i].id,
                   ctl_time_utc(t, sizeof(t), users[i].created_at), nkeys[i]);
        }
        free(names[i]);
    }
    free(names);
}

static void
users_json(const struct ctl *c, bool auth_data, const struct htkv_auth_user *users, size_t count,
           const size_t *nkeys)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", c->dir);
    json_kv_bool(&j, "auth_data", auth_data);
    json_key(&j, "users");
    json_array_begin(&j);
    uint64_t listed = 0;
    for (size_t i = 0; i < count; i++) {
        if (nkeys[i] == SIZE_MAX) {
            continue;
        }
        json_object_begin(&j);
        json_kv_string(&j, "name", users[i].name);
        json_kv_string(&j, "id", users[i].id);
        json_key(&j, "created_at");
        json_i64(&j, users[i].created_at);
        json_kv_u64(&j, "api_keys", nkeys[i]);
        json_object_end(&j);
        listed++;
    }
    json_array_end(&j);
    json_kv_u64(&j, "count", listed);
    json_object_end(&j);
    json_finish(&j);
}

static int
users_run(struct ctl *c, int argc, char **argv)
{
    struct ctl_master_key key;
    char *pos[1];
    int status = ctl_auth_args(c, &ctl_cmd_users, argc, argv, pos, 1, &key);
    if (status != 0) {
        return status < 0 ? CTL_EXIT_OK : status;
    }
    htkv_db *db;
    htkv_auth *auth;
    status = ctl_auth_open(c, &key, &db, &auth);
    if (status != 0) {
        return status;
    }
    struct htkv_auth_user *users = NULL;
    size_t count = 0;
    if (auth != NULL) {
        int rc = htkv_auth_list_users(auth, &users, &count);
        if (rc != 0) {
            status = ctl_auth_failed(c, "cannot list the users", rc);
            goto out_close;
        }
    } else if (!c->json) {
        ctl_error(c, "%s: no auth data in this store (no auth/meta record): no users", c->dir);
    }
    size_t *nkeys = calloc(count > 0 ? count : 1, sizeof(*nkeys));
    if (nkeys == NULL) {
        ctl_error(c, "out of memory");
        status = CTL_EXIT_FAIL;
        goto out_users;
    }
    status = users_key_counts(c, auth, users, count, nkeys);
    if (status == CTL_EXIT_OK && c->json) {
        users_json(c, auth != NULL, users, count, nkeys);
    } else if (status == CTL_EXIT_OK && count > 0) {
        users_text(users, count, nkeys);
    }
    free(nkeys);
out_users:
    htkv_auth_free(users);
out_close:
    ctl_auth_close(db, auth);
    return status;
}

const struct ctl_cmd ctl_cmd_users = {
    .name = "users",
    .args = "--master-key-file FILE [--master-key-id N] DIR",
    .summary = "auth users: name, id, created, number of API keys (no secrets)",
    .help = CTL_AUTH_HELP
    "\n"
    "One row per user, sorted by name: NAME, ID, CREATED (UTC), API_KEYS; nothing when the store\n"
    "has no auth data. Password hashes and metadata are never printed. With --json, created_at\n"
    "is in Unix seconds. Exit status 4 when the key does not open the store's auth records.\n",
    .run = users_run,
};
