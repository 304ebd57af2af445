/*
 * test_auth_users.c - users: create, read, list, delete, passwords, names, metadata, and every
 * error path of those calls.
 */
#include "tests/auth/auth_fixture.h"

/* Goal: a created user can be read by id and by name, in any ASCII case. Method: create, get. */
static void
test_auth_user_create_and_get(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u, g;
    af_user(f, "Captain", "it-doesnt-take-much", &u);
    assert_int_equal(strlen(u.id), HTKV_AUTH_ID_LEN);
    assert_string_equal(u.name, "Captain");
    assert_int_equal(u.created_at, AF_EPOCH);
    assert_int_equal(u.password_changed_at, AF_EPOCH);
    assert_int_equal(u.metadata_len, 0);
    assert_int_equal(u.key_id, 1);

    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), 0);
    assert_memory_equal(&u, &g, sizeof(u));
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "captain", &g), 0);
    assert_string_equal(g.id, u.id);
    assert_string_equal(g.name, "Captain");
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "CAPTAIN", &g), 0);
    assert_string_equal(g.id, u.id);

    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "nobody", &g), HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_get_user(f->auth, "00000000000000000000000000000000", &g),
                     HTKV_ENOTFOUND);
}

/* Goal: names are unique ignoring ASCII case only. Method: create variants. */
static void
test_auth_user_names_unique_ignoring_ascii_case(void **state)
{
    struct af *f = *state;
    af_user(f, "alice", "pw-1", NULL);
    assert_int_equal(htkv_auth_create_user(f->auth, "ALICE", "pw-2", 4, NULL), HTKV_EEXIST);
    assert_int_equal(htkv_auth_create_user(f->auth, "Alice", "pw-2", 4, NULL), HTKV_EEXIST);
    /* Non-ASCII letters are not folded: "Ä" and "ä" are two names. */
    af_user(f, "\xc3\x84rger", "pw", NULL);
    af_user(f, "\xc3\xa4rger", "pw", NULL);
    /* A taken name costs no Argon2 run. */
    unsigned long long runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_create_user(f->auth, "alice", "x", 1, NULL), HTKV_EEXIST);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs);
}

/* Goal: bad names are refused with -EINVAL and change nothing. Method: a table of bad names. */
static void
test_auth_user_name_validation(void **state)
{
    struct af *f = *state;
    char long_name[HTKV_AUTH_NAME_MAX + 2];
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    const char *bad[] = {
        "",                 /* empty */
        long_name,          /* 65 bytes */
        " lead",            /* leading space */
        "trail ",           /* trailing space */
        "tab\there",        /* C0 control */
        "del\x7f",          /* DEL */
        "c1\xc2\x85",       /* U+0085, a C1 control */
        "bad\xff",          /* not UTF-8 */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* beyond U+10FFFF */
        "cut\xe2\x82",      /* truncated sequence */
        "\x80lone",         /* lone continuation byte */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(htkv_auth_create_user(f->auth, bad[i], "pw", 2, NULL), -EINVAL);
        struct htkv_auth_user u;
        assert_int_equal(htkv_auth_get_user_by_name(f->auth, bad[i], &u), -EINVAL);
    }
    /* 64 bytes, multi-byte UTF-8, inner spaces and '/' are fine. */
    long_name[HTKV_AUTH_NAME_MAX] = '\0';
    af_user(f, long_name, "pw", NULL);
    af_user(f, "\xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 a/b", "pw", NULL);
    struct htkv_auth_user *all;
    size_t n;
    assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), 0);
    assert_int_equal(n, 2);
    htkv_auth_free(all);
}

/* Goal: passwords are 1..4096 arbitrary bytes. Method: binary, boundary, over the limit. */
static void
test_auth_user_password_bytes_and_limits(void **state)
{
    struct af *f = *state;
    unsigned char pw[HTKV_AUTH_PASSWORD_MAX + 1];
    for (size_t i = 0; i < sizeof(pw); i++) {
        pw[i] = (unsigned char)(i * 7); /* includes NUL bytes */
    }
    assert_int_equal(htkv_auth_create_user(f->auth, "max", pw, HTKV_AUTH_PASSWORD_MAX, NULL), 0);
    assert_int_equal(htkv_auth_verify_password(f->auth, "max", pw, HTKV_AUTH_PASSWORD_MAX, NULL),
                     0);
    assert_int_equal(
        htkv_auth_verify_password(f->auth, "max", pw, HTKV_AUTH_PASSWORD_MAX - 1, NULL),
        HTKV_EAUTH);
    assert_int_equal(htkv_auth_create_user(f->auth, "over", pw, HTKV_AUTH_PASSWORD_MAX + 1, NULL),
                     -EINVAL);
    assert_int_equal(
        htkv_auth_verify_password(f->auth, "max", pw, HTKV_AUTH_PASSWORD_MAX + 1, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_user(f->auth, "empty", "", 0, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_user(f->auth, "nullpw", NULL, 3, NULL), -EINVAL);
    /* An empty password never matches; it is not an error to try. */
    assert_int_equal(htkv_auth_verify_password(f->auth, "max", NULL, 0, NULL), HTKV_EAUTH);
    unsigned char one = 0;
    assert_int_equal(htkv_auth_create_user(f->auth, "nul", &one, 1, NULL), 0);
    assert_int_equal(htkv_auth_verify_password(f->auth, "nul", &one, 1, NULL), 0);
}

/* Goal: verify answers 0 / HTKV_EAUTH, and an unknown user runs Argon2 like a wrong password. */
static void
test_auth_user_verify_unknown_costs_one_hash(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u, v;
    af_user(f, "bob", "correct horse", &u);
    assert_int_equal(htkv_auth_verify_password(f->auth, "bob", "correct horse", 13, &v), 0);
    assert_string_equal(v.id, u.id);
    assert_int_equal(htkv_auth_verify_password(f->auth, "BOB", "correct horse", 13, NULL), 0);

    unsigned long long runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_verify_password(f->auth, "bob", "wrong", 5, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 1);
    assert_int_equal(htkv_auth_verify_password(f->auth, "nobody", "wrong", 5, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 2);
    /* An invalid name is an unknown user too, not a distinguishable error. */
    assert_int_equal(htkv_auth_verify_password(f->auth, " bob", "wrong", 5, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 3);
    assert_int_equal(htkv_auth_verify_password(f->auth, NULL, "x", 1, NULL), -EINVAL);
    assert_int_equal(htkv_auth_verify_password(NULL, "bob", "x", 1, NULL), -EINVAL);
}

/* Goal: change_password replaces the hash; wrong old or unknown user is HTKV_EAUTH. */
static void
test_auth_user_change_password(void **state)
{
    struct af *f = *state;
    af_user(f, "carol", "old-pass", NULL);
    atomic_store(&f->now, AF_EPOCH + 100);
    assert_int_equal(htkv_auth_change_password(f->auth, "carol", "bad", 3, "new-pass", 8),
                     HTKV_EAUTH);
    assert_int_equal(htkv_auth_change_password(f->auth, "nobody", "old-pass", 8, "new-pass", 8),
                     HTKV_EAUTH);
    assert_int_equal(htkv_auth_change_password(f->auth, "carol", "old-pass", 8, "", 0), -EINVAL);
    assert_int_equal(htkv_auth_change_password(f->auth, "carol", NULL, 1, "n", 1), -EINVAL);
    assert_int_equal(htkv_auth_change_password(f->auth, "CAROL", "old-pass", 8, "new-pass", 8), 0);
    assert_int_equal(htkv_auth_verify_password(f->auth, "carol", "old-pass", 8, NULL), HTKV_EAUTH);
    struct htkv_auth_user u;
    assert_int_equal(htkv_auth_verify_password(f->auth, "carol", "new-pass", 8, &u), 0);
    assert_int_equal(u.created_at, AF_EPOCH);
    assert_int_equal(u.password_changed_at, AF_EPOCH + 100);
    assert_int_equal(htkv_auth_change_password(f->auth, "carol", "old-pass", 8, "x", 1),
                     HTKV_EAUTH);
}

/* Goal: metadata is stored encrypted and decrypted on request. Method: round trip, sizes. */
static void
test_auth_user_metadata(void **state)
{
    struct af *f = *state;
    static const char meta[] = "{\"role\":\"ops\"}";
    struct htkv_auth_user u, plain;
    assert_int_equal(
        htkv_auth_create_user_with_metadata(f->auth, "dave", "pw", 2, meta, strlen(meta), &u), 0);
    assert_int_equal(u.metadata_len, strlen(meta));
    char buf[64];
    size_t n = 99;
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, buf, 4, &n), HTKV_ETOOSMALL);
    assert_int_equal(n, strlen(meta));
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, NULL, 0, &n), HTKV_ETOOSMALL);
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, strlen(meta));
    assert_memory_equal(buf, meta, n);

    af_user(f, "erin", "pw", &plain);
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, plain.id, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(
        htkv_auth_decrypt_user_metadata(f->auth, "ffffffffffffffffffffffffffffffff", buf, 1, &n),
        HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, "xyz", buf, 1, &n), -EINVAL);
    assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, NULL, 5, &n), -EINVAL);

    /* Largest metadata accepted, one more byte refused. */
    unsigned char *big = malloc(HTKV_AUTH_METADATA_MAX + 1);
    assert_non_null(big);
    memset(big, 'm', HTKV_AUTH_METADATA_MAX + 1);
    assert_int_equal(htkv_auth_create_user_with_metadata(f->auth, "big", "pw", 2, big,
                                                         HTKV_AUTH_METADATA_MAX, &u),
                     0);
    assert_int_equal(htkv_auth_create_user_with_metadata(f->auth, "bigger", "pw", 2, big,
                                                         HTKV_AUTH_METADATA_MAX + 1, NULL),
                     -EINVAL);
    assert_int_equal(
        htkv_auth_create_user_with_metadata(f->auth, "nullmeta", "pw", 2, NULL, 3, NULL), -EINVAL);
    unsigned char *out = malloc(HTKV_AUTH_METADATA_MAX);
    assert_int_equal(
        htkv_auth_decrypt_user_metadata(f->auth, u.id, out, HTKV_AUTH_METADATA_MAX, &n), 0);
    assert_int_equal(n, HTKV_AUTH_METADATA_MAX);
    assert_memory_equal(out, big, n);
    free(out);
    free(big);
}

/* Goal: list_users returns every user sorted by name. Method: create in random order. */
static void
test_auth_user_list_sorted(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user *all = (void *)1;
    size_t n = 7;
    assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), 0);
    assert_null(all);
    assert_int_equal(n, 0);
    const char *names[] = { "mike", "alpha", "zulu", "Kilo", "bravo", "yankee", "echo" };
    for (size_t i = 0; i < 7; i++) {
        af_user(f, names[i], "pw", NULL);
    }
    /* Enough users to land in several of the 16 lists. */
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "u%02d", i);
        af_user(f, name, "pw", NULL);
    }
    assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), 0);
    assert_int_equal(n, 47);
    for (size_t i = 1; i < n; i++) {
        assert_true(strcmp(all[i - 1].name, all[i].name) < 0);
    }
    assert_string_equal(all[0].name, "Kilo"); /* byte order: uppercase first */
    htkv_auth_free(all);
    assert_int_equal(htkv_auth_list_users(NULL, &all, &n), -EINVAL);
    assert_int_equal(htkv_auth_list_users(f->auth, NULL, &n), -EINVAL);
}

/* Goal: delete_user removes the user, frees the name and revokes the user's keys. */
static void
test_auth_user_delete_revokes_keys(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u, other, again;
    af_user(f, "frank", "pw", &u);
    af_user(f, "grace", "pw", &other);
    char t1[HTKV_AUTH_TOKEN_SIZE], t2[HTKV_AUTH_TOKEN_SIZE], t3[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k1, k2;
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "one", t1, &k1), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "two", t2, &k2), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, other.id, NULL, t3, NULL), 0);

    assert_int_equal(htkv_auth_delete_user(f->auth, u.id), 0);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &again), HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "frank", &again), HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_verify_password(f->auth, "frank", "pw", 2, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t2, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t3, NULL), 0);
    char key[128];
    af_rkey(key, "auth/apikey/", k1.id);
    assert_int_equal(htkv_contains(f->db, key, strlen(key)), 0);
    af_rkey(key, "auth/user_keys/", u.id);
    assert_int_equal(htkv_contains(f->db, key, strlen(key)), 0);
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), HTKV_ENOTFOUND);
    struct htkv_auth_user *all;
    assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(all[0].id, other.id);
    htkv_auth_free(all);

    assert_int_equal(htkv_auth_delete_user(f->auth, u.id), HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_delete_user(f->auth, "not-an-id"), -EINVAL);
    assert_int_equal(htkv_auth_delete_user(NULL, u.id), -EINVAL);
    /* The name is free again, under a new id. */
    af_user(f, "Frank", "pw2", &again);
    assert_string_not_equal(again.id, u.id);
}

/* Goal: ids are 32 lowercase hex digits; other spellings are -EINVAL. */
static void
test_auth_user_malformed_ids(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "henry", "pw", &u);
    char upper[HTKV_AUTH_ID_SIZE];
    for (size_t i = 0; i < sizeof(upper); i++) {
        upper[i] = (char)(u.id[i] >= 'a' && u.id[i] <= 'f' ? u.id[i] - 32 : u.id[i]);
    }
    int has_letter = strcmp(upper, u.id) != 0;
    if (has_letter) {
        assert_int_equal(htkv_auth_get_user(f->auth, upper, &u), -EINVAL);
    }
    char longer[40];
    snprintf(longer, sizeof(longer), "%s0", u.id);
    assert_int_equal(htkv_auth_get_user(f->auth, longer, &u), -EINVAL);
    assert_int_equal(htkv_auth_get_user(f->auth, "0123", &u), -EINVAL);
    assert_int_equal(htkv_auth_get_user(f->auth, "g0000000000000000000000000000000", &u), -EINVAL);
    assert_int_equal(htkv_auth_get_user(f->auth, NULL, &u), -EINVAL);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, NULL), -EINVAL);
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "henry", NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_user(NULL, "x", "pw", 2, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_user(f->auth, NULL, "pw", 2, NULL), -EINVAL);
}

/* Goal: the default costs (19 MiB, t=2, p=1) work end to end. Method: own handle, defaults. */
static void
test_auth_user_default_costs(void **state)
{
    struct af *f = *state;
    htkv_auth *def;
    assert_int_equal(htkv_auth_open(f->db, f->key, &def), 0);
    struct htkv_auth_user u;
    assert_int_equal(htkv_auth_create_user(def, "default", "pw-default", 10, &u), 0);
    assert_int_equal(htkv_auth_verify_password(def, "default", "pw-default", 10, NULL), 0);
    assert_int_equal(htkv_auth_verify_password(def, "default", "pw-defaulx", 10, NULL), HTKV_EAUTH);
    /* A handle with other costs verifies with the costs stored in the record. */
    assert_int_equal(htkv_auth_verify_password(f->auth, "default", "pw-default", 10, NULL), 0);
    assert_true(htkv_auth_test_hash_slots(def) >= 1);
    htkv_auth_close(def);
}

/* Goal: bad configurations are refused. Method: one field wrong at a time. */
static void
test_auth_open_config_errors(void **state)
{
    struct af *f = *state;
    htkv_auth *a = (void *)1;
    htkv_auth_config c;
    af_auth_config(f, &c);
    assert_int_equal(htkv_auth_open_with(NULL, &c, &a), -EINVAL);
    assert_null(a);
    assert_int_equal(htkv_auth_open_with(f->db, NULL, &a), -EINVAL);
    assert_int_equal(htkv_auth_open_with(f->db, &c, NULL), -EINVAL);
    assert_int_equal(htkv_auth_open(f->db, NULL, &a), -EINVAL);
    c.master_key_id = 0;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    af_auth_config(f, &c);
    c.previous_key = f->key;
    c.previous_key_id = 1;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    af_auth_config(f, &c);
    c.argon2_memory_kib = 4; /* below 8 KiB per lane */
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    af_auth_config(f, &c);
    c.argon2_iterations = 0;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    af_auth_config(f, &c);
    c.argon2_lanes = 65;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    af_auth_config(f, &c);
    c.cipher = 7;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), -EINVAL);
    assert_int_equal(htkv_auth_cipher(NULL), -EINVAL);
    htkv_auth_close(NULL);
    htkv_auth_free(NULL);
    assert_int_equal(htkv_auth_generate_key(NULL), -EINVAL);
    /* The wrong key for an existing store. */
    unsigned char other[HTKV_AUTH_KEY_BYTES];
    assert_int_equal(htkv_auth_generate_key(other), 0);
    af_auth_config(f, &c);
    c.master_key = other;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), HTKV_EAUTH);
    assert_null(a);
    c.master_key_id = 2; /* a key id the store never heard of */
    assert_int_equal(htkv_auth_open_with(f->db, &c, &a), HTKV_EAUTH);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_user_create_and_get, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_names_unique_ignoring_ascii_case, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_name_validation, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_password_bytes_and_limits, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_verify_unknown_costs_one_hash, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_change_password, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_metadata, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_list_sorted, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_delete_revokes_keys, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_malformed_ids, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_user_default_costs, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_open_config_errors, af_setup, af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
