/*
 * auth_flow.c - users, passwords, encrypted metadata and API keys with htkv's auth module: the
 * seed's "authentication helper" example, in C.
 *
 * Usage: auth_flow [DATA_DIR]   (default ./auth-data)
 *
 * The master key comes from the environment, HTKV_AUTH_MASTER_KEY (64 hex digits). Without it
 * the example makes a random key for this run only, which works once per data directory: a real
 * service keeps its key in a secrets manager, never in the code and never all zeros.
 * The token printed is redacted: a token is a password, it never goes to a log.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/auth.h>
#include <htkv/htkv.h>

static void
check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "%s: %s %s\n", what, htkv_strerror(rc), htkv_last_error());
        exit(1);
    }
}

/* Read the master key from HTKV_AUTH_MASTER_KEY, or make a random one. */
static void
master_key(unsigned char *key)
{
    const char *hex = getenv("HTKV_AUTH_MASTER_KEY");
    if (hex == NULL || strlen(hex) != 2 * HTKV_AUTH_KEY_BYTES) {
        fprintf(stderr, "HTKV_AUTH_MASTER_KEY not set: using a random key for this run\n");
        check(htkv_auth_generate_key(key), "generate key");
        return;
    }
    for (size_t i = 0; i < HTKV_AUTH_KEY_BYTES; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            fprintf(stderr, "HTKV_AUTH_MASTER_KEY: not hex\n");
            exit(1);
        }
        key[i] = (unsigned char)v;
    }
}

/* Print a token without its secret: "htkv_<key id>_" and the first 4 secret characters. */
static void
print_token_redacted(const char *token)
{
    printf("issued token %.42s... (secret redacted)\n", token);
}

int
main(int argc, char **argv)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = argc > 1 ? argv[1] : "./auth-data";
    htkv_db *db;
    check(htkv_open(&cfg, &db), "open store");

    unsigned char key[HTKV_AUTH_KEY_BYTES];
    master_key(key);
    htkv_auth *auth;
    int rc = htkv_auth_open(db, key, &auth);
    memset(key, 0, sizeof(key)); /* the handle keeps its own guarded copy */
    if (rc == HTKV_EAUTH) {
        fprintf(stderr, "%s was created with another master key\n", cfg.data_dir);
    }
    check(rc, "open auth");

    /* A user with encrypted metadata (or the one an earlier run created). */
    static const char password[] = "it-doesnt-take-much";
    static const char metadata[] = "{\"role\":\"ops\"}";
    struct htkv_auth_user user;
    rc = htkv_auth_create_user_with_metadata(auth, "captain", password, strlen(password), metadata,
                                             strlen(metadata), &user);
    const char *what = "created";
    if (rc == HTKV_EEXIST) {
        rc = htkv_auth_get_user_by_name(auth, "captain", &user);
        what = "found existing";
    }
    check(rc, "create user");
    printf("%s user %s (%s)\n", what, user.id, user.name);

    /* Password verification and metadata decryption. */
    check(htkv_auth_verify_password(auth, "captain", password, strlen(password), NULL),
          "verify password");
    printf("password verified\n");
    rc = htkv_auth_verify_password(auth, "captain", "wrong", 5, NULL);
    printf("wrong password => %s\n", htkv_strerror(rc));
    char meta[256];
    size_t meta_len;
    check(htkv_auth_decrypt_user_metadata(auth, user.id, meta, sizeof(meta), &meta_len),
          "decrypt metadata");
    printf("user metadata => %.*s\n", (int)meta_len, meta);

    /* API key issuance and validation. */
    char token[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key record;
    check(htkv_auth_create_api_key(auth, user.id, "example", token, &record), "create api key");
    printf("issued key %s\n", record.id);
    print_token_redacted(token);
    struct htkv_auth_api_key hydrated;
    check(htkv_auth_authenticate_api_key(auth, token, &hydrated), "authenticate");
    printf("token resolves to user %s\n", hydrated.user_id);

    check(htkv_auth_revoke_api_key(auth, record.id), "revoke");
    rc = htkv_auth_authenticate_api_key(auth, token, NULL);
    printf("revoked token => %s\n", htkv_strerror(rc));
    memset(token, 0, sizeof(token));
    if (rc != HTKV_EAUTH) {
        return 1;
    }

    /* The store stays usable alongside the auth service. */
    htkv_auth_close(auth);
    check(htkv_flush(db), "flush");
    check(htkv_close(db), "close");
    return 0;
}
