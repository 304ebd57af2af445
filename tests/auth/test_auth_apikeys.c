/*
 * test_auth_apikeys.c - API keys: issue, authenticate, list, revoke, expiry, last use, metadata,
 * token shape, and every error path of those calls.
 */
#include "tests/auth/auth_fixture.h"

#include <ctype.h>

/* Goal: an issued token authenticates without Argon2 and has the documented shape. */
static void
test_auth_key_issue_and_authenticate(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "ivy", "pw", &u);
    char token[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k, got;
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "ci", token, &k), 0);
    assert_int_equal(strlen(token), HTKV_AUTH_TOKEN_LEN);
    assert_memory_equal(token, "htkv_", 5);
    assert_memory_equal(token + 5, k.id, HTKV_AUTH_ID_LEN);
    assert_int_equal(token[37], '_');
    for (size_t i = 38; i < HTKV_AUTH_TOKEN_LEN; i++) {
        assert_true(isxdigit((unsigned char)token[i]) && !isupper((unsigned char)token[i]));
    }
    assert_string_equal(k.user_id, u.id);
    assert_string_equal(k.label, "ci");
    assert_int_equal(k.created_at, AF_EPOCH);
    assert_int_equal(k.expires_at, 0);
    assert_int_equal(k.last_used_at, 0);
    assert_int_equal(k.key_id, 1);

    unsigned long long runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, token, &got), 0);
    assert_string_equal(got.id, k.id);
    assert_string_equal(got.user_id, u.id);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, token, NULL), 0);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs); /* never Argon2 */

    /* Two keys of one user have different ids and secrets. */
    char token2[HTKV_AUTH_TOKEN_SIZE];
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, token2, NULL), 0);
    assert_memory_not_equal(token, token2, HTKV_AUTH_TOKEN_LEN);
    assert_memory_not_equal(token + 38, token2 + 38, 64);
}

/* Goal: malformed, mistyped and forged tokens are HTKV_EAUTH. Method: mutate a real token. */
static void
test_auth_key_bad_tokens(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "jack", "pw", &u);
    char token[HTKV_AUTH_TOKEN_SIZE], t[HTKV_AUTH_TOKEN_SIZE + 8];
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, token, NULL), 0);

    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, "", NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, "htkv_", NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_auth_authenticate_api_key(NULL, token, NULL), -EINVAL);
    /* Truncated, extended. */
    memcpy(t, token, sizeof(token));
    t[HTKV_AUTH_TOKEN_LEN - 1] = '\0';
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    snprintf(t, sizeof(t), "%sa", token);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    /* A typo anywhere fails the checksum. */
    for (size_t i = 0; i < HTKV_AUTH_TOKEN_LEN; i++) {
        memcpy(t, token, sizeof(token));
        t[i] = t[i] == '0' ? '1' : '0';
        assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    }
    /* Uppercase hex is a different token. */
    memcpy(t, token, sizeof(token));
    for (size_t i = 0; i < HTKV_AUTH_TOKEN_LEN; i++) {
        t[i] = (char)toupper((unsigned char)t[i]);
    }
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    /* A well-formed token with a wrong secret fails the keyed-hash comparison. */
    memcpy(t, token, sizeof(token));
    t[50] = t[50] == 'a' ? 'b' : 'a';
    htkv_auth_test_token_fix_checksum(t);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    /* A well-formed token for an unknown key id. */
    memcpy(t, token, sizeof(token));
    t[6] = t[6] == 'a' ? 'b' : 'a';
    htkv_auth_test_token_fix_checksum(t);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    /* The original still works. */
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, token, NULL), 0);
}

/* Goal: revoke deletes the key; a second revoke is HTKV_ENOTFOUND. */
static void
test_auth_key_revoke(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "kate", "pw", &u);
    char t1[HTKV_AUTH_TOKEN_SIZE], t2[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k1, k2;
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "a", t1, &k1), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "b", t2, &k2), 0);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k1.id), 0);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t2, NULL), 0);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k1.id), HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, "zz"), -EINVAL);
    assert_int_equal(htkv_auth_revoke_api_key(NULL, k1.id), -EINVAL);
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].id, k2.id);
    htkv_auth_free(keys);
    /* Revoking the last key removes the user's key list; the user stays. */
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k2.id), 0);
    char key[128];
    af_rkey(key, "auth/user_keys/", u.id);
    assert_int_equal(htkv_contains(f->db, key, strlen(key)), 0);
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, 0);
    assert_null(keys);
    assert_int_equal(htkv_auth_verify_password(f->auth, "kate", "pw", 2, NULL), 0);
}

/* Goal: list_api_keys is per user, oldest first; unknown user HTKV_ENOTFOUND. */
static void
test_auth_key_list_per_user(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u, v;
    af_user(f, "liam", "pw", &u);
    af_user(f, "mia", "pw", &v);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key made[5];
    for (int i = 0; i < 5; i++) {
        atomic_store(&f->now, AF_EPOCH + 10 - i); /* created in reverse time order */
        char label[8];
        snprintf(label, sizeof(label), "k%d", i);
        assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, label, t, &made[i]), 0);
    }
    assert_int_equal(htkv_auth_create_api_key(f->auth, v.id, "other", t, NULL), 0);
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(keys[i].id, made[4 - i].id);
        assert_string_equal(keys[i].user_id, u.id);
    }
    htkv_auth_free(keys);
    assert_int_equal(htkv_auth_list_api_keys(f->auth, v.id, &keys, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].label, "other");
    htkv_auth_free(keys);
    assert_int_equal(
        htkv_auth_list_api_keys(f->auth, "0123456789abcdef0123456789abcdef", &keys, &n),
        HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_list_api_keys(f->auth, "bad", &keys, &n), -EINVAL);
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, NULL, &n), -EINVAL);
}

/* Goal: issuing checks its arguments and the owner. Method: each bad argument alone. */
static void
test_auth_key_issue_errors(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "noah", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    memset(t, 'x', sizeof(t));
    assert_int_equal(
        htkv_auth_create_api_key(f->auth, "0123456789abcdef0123456789abcdef", NULL, t, NULL),
        HTKV_ENOTFOUND);
    assert_int_equal(t[0], '\0'); /* wiped on failure */
    assert_int_equal(htkv_auth_create_api_key(f->auth, "nope", NULL, t, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_api_key(NULL, u.id, NULL, t, NULL), -EINVAL);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "bad\nlabel", t, NULL), -EINVAL);
    char long_label[HTKV_AUTH_LABEL_MAX + 2];
    memset(long_label, 'l', sizeof(long_label) - 1);
    long_label[sizeof(long_label) - 1] = '\0';
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, long_label, t, NULL), -EINVAL);
    long_label[HTKV_AUTH_LABEL_MAX] = '\0';
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, long_label, t, NULL), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "", t, NULL), 0);
    /* Expiry must be in the future; metadata bounded. */
    assert_int_equal(
        htkv_auth_create_api_key_with_metadata(f->auth, u.id, NULL, NULL, 0, AF_EPOCH, t, NULL),
        -EINVAL);
    assert_int_equal(
        htkv_auth_create_api_key_with_metadata(f->auth, u.id, NULL, NULL, 0, -5, t, NULL), -EINVAL);
    assert_int_equal(
        htkv_auth_create_api_key_with_metadata(f->auth, u.id, NULL, NULL, 1, 0, t, NULL), -EINVAL);
    void *big = calloc(1, HTKV_AUTH_METADATA_MAX + 1);
    assert_int_equal(htkv_auth_create_api_key_with_metadata(f->auth, u.id, NULL, big,
                                                            HTKV_AUTH_METADATA_MAX + 1, 0, t, NULL),
                     -EINVAL);
    free(big);
}

/* Goal: an expired key is refused. Method: the fixture clock crosses expires_at. */
static void
test_auth_key_expiry(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "olga", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k;
    assert_int_equal(htkv_auth_create_api_key_with_metadata(f->auth, u.id, "temp", NULL, 0,
                                                            AF_EPOCH + 3600, t, &k),
                     0);
    assert_int_equal(k.expires_at, AF_EPOCH + 3600);
    atomic_store(&f->now, AF_EPOCH + 3599);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), 0);
    atomic_store(&f->now, AF_EPOCH + 3600);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    atomic_store(&f->now, AF_EPOCH + 100000);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
    /* Still listed (and revocable) until revoked. */
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k.id), 0);
}

/* Goal: last_used_at is written at most once per granularity. Method: clock steps, versions. */
static void
test_auth_key_last_used_granularity(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "pete", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k, got;
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, &k), 0);
    char key[128];
    af_rkey(key, "auth/apikey/", k.id);
    size_t n;
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, &got), 0);
    assert_int_equal(got.last_used_at, AF_EPOCH);
    unsigned char *raw1 = af_raw_get(f, key, &n);
    /* Within the minute: no write. */
    atomic_store(&f->now, AF_EPOCH + HTKV_AUTH_LAST_USED_GRANULARITY_S - 1);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, &got), 0);
    assert_int_equal(got.last_used_at, AF_EPOCH);
    size_t n2;
    unsigned char *raw2 = af_raw_get(f, key, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(raw1, raw2, n);
    free(raw2);
    /* A minute later: one write. */
    atomic_store(&f->now, AF_EPOCH + HTKV_AUTH_LAST_USED_GRANULARITY_S);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, &got), 0);
    assert_int_equal(got.last_used_at, AF_EPOCH + HTKV_AUTH_LAST_USED_GRANULARITY_S);
    raw2 = af_raw_get(f, key, &n2);
    assert_memory_not_equal(raw1, raw2, n < n2 ? n : n2);
    free(raw1);
    free(raw2);
    struct htkv_auth_api_key *keys;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), 0);
    assert_int_equal(keys[0].last_used_at, AF_EPOCH + HTKV_AUTH_LAST_USED_GRANULARITY_S);
    htkv_auth_free(keys);
}

/* Goal: API key metadata round-trips encrypted. */
static void
test_auth_key_metadata(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "quinn", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k, plain;
    static const unsigned char meta[] = { 0, 1, 2, 0xff, 'x' };
    assert_int_equal(
        htkv_auth_create_api_key_with_metadata(f->auth, u.id, "m", meta, sizeof(meta), 0, t, &k),
        0);
    assert_int_equal(k.metadata_len, sizeof(meta));
    unsigned char buf[16];
    size_t n;
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, k.id, buf, 2, &n), HTKV_ETOOSMALL);
    assert_int_equal(n, sizeof(meta));
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, k.id, buf, sizeof(buf), &n), 0);
    assert_memory_equal(buf, meta, sizeof(meta));
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, &plain), 0);
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, plain.id, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k.id), 0);
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, k.id, buf, sizeof(buf), &n),
                     HTKV_ENOTFOUND);
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, "q", buf, sizeof(buf), &n),
                     -EINVAL);
    assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, plain.id, buf, 1, NULL), -EINVAL);
}

/* Goal: a user holds at most HTKV_AUTH_KEYS_PER_USER_MAX keys. Method: fill, one more. */
static void
test_auth_key_per_user_bound(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "rosa", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key first;
    for (int i = 0; i < HTKV_AUTH_KEYS_PER_USER_MAX; i++) {
        assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, i == 0 ? &first : NULL),
                         0);
    }
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, NULL), HTKV_EFULL);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, first.id), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, NULL), 0);
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, HTKV_AUTH_KEYS_PER_USER_MAX);
    htkv_auth_free(keys);
    /* Deleting the user revokes all of them in one batch. */
    assert_int_equal(htkv_auth_delete_user(f->auth, u.id), 0);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_EAUTH);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_key_issue_and_authenticate, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_bad_tokens, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_revoke, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_list_per_user, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_issue_errors, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_expiry, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_last_used_granularity, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_metadata, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_key_per_user_bound, af_setup, af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
