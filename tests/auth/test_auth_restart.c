/*
 * test_auth_restart.c - a restart keeps users, keys and metadata, and never reuses an id (the
 * original's counter restarted at 1 and handed the next user someone else's account).
 */
#include "tests/auth/auth_fixture.h"

#define RESTART_ROUNDS 4
#define RESTART_USERS 6

struct seen {
    char ids[RESTART_ROUNDS * RESTART_USERS * 2 + 1][HTKV_AUTH_ID_SIZE];
    size_t count;
};

static void
seen_add(struct seen *s, const char *id)
{
    assert_true(s->count < sizeof(s->ids) / sizeof(s->ids[0]));
    for (size_t i = 0; i < s->count; i++) {
        if (strcmp(s->ids[i], id) == 0) {
            fail_msg("id %s handed out twice", id);
        }
    }
    memcpy(s->ids[s->count++], id, HTKV_AUTH_ID_SIZE);
}

/* Goal: users, passwords, keys and metadata survive reopen; ids are never reused.
 * Method: several rounds of create + reopen; every id ever issued is remembered. */
static void
test_auth_restart_keeps_everything_and_never_reuses_ids(void **state)
{
    struct af *f = *state;
    static struct seen seen;
    static char tokens[RESTART_ROUNDS * RESTART_USERS][HTKV_AUTH_TOKEN_SIZE];
    static char names[RESTART_ROUNDS * RESTART_USERS][16];
    size_t users = 0;
    memset(&seen, 0, sizeof(seen));
    for (int round = 0; round < RESTART_ROUNDS; round++) {
        for (int i = 0; i < RESTART_USERS; i++) {
            struct htkv_auth_user u;
            struct htkv_auth_api_key k;
            snprintf(names[users], sizeof(names[users]), "r%d-u%d", round, i);
            assert_int_equal(htkv_auth_create_user_with_metadata(f->auth, names[users], "pw", 2,
                                                                 names[users], strlen(names[users]),
                                                                 &u),
                             0);
            seen_add(&seen, u.id);
            assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, tokens[users], &k), 0);
            seen_add(&seen, k.id);
            users++;
        }
        af_reopen(f);
        /* Everything created so far is still there and usable. */
        struct htkv_auth_user *all;
        size_t n;
        assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), 0);
        assert_int_equal(n, users);
        htkv_auth_free(all);
        for (size_t i = 0; i < users; i++) {
            struct htkv_auth_user u;
            assert_int_equal(htkv_auth_verify_password(f->auth, names[i], "pw", 2, &u), 0);
            char buf[16];
            size_t len;
            assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, buf, sizeof(buf), &len),
                             0);
            assert_memory_equal(buf, names[i], len);
            struct htkv_auth_api_key k;
            assert_int_equal(htkv_auth_authenticate_api_key(f->auth, tokens[i], &k), 0);
            assert_string_equal(k.user_id, u.id);
        }
    }
    /* Deleted users' ids stay unused too: delete one, create one, compare. */
    struct htkv_auth_user u;
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, names[0], &u), 0);
    assert_int_equal(htkv_auth_delete_user(f->auth, u.id), 0);
    af_reopen(f);
    af_user(f, names[0], "pw", &u);
    seen_add(&seen, u.id);
    /* The revoked keys of the deleted user stay revoked after reopen. */
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, tokens[0], NULL), HTKV_EAUTH);
}

/* Goal: changes of passwords and revocations are durable across reopen. */
static void
test_auth_restart_keeps_changes_and_revocations(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "yara", "first", &u);
    char t1[HTKV_AUTH_TOKEN_SIZE], t2[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k1;
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t1, &k1), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t2, NULL), 0);
    assert_int_equal(htkv_auth_change_password(f->auth, "yara", "first", 5, "second", 6), 0);
    assert_int_equal(htkv_auth_revoke_api_key(f->auth, k1.id), 0);
    af_reopen(f);
    assert_int_equal(htkv_auth_verify_password(f->auth, "yara", "first", 5, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_verify_password(f->auth, "yara", "second", 6, NULL), 0);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t2, NULL), 0);
    /* A second handle on the same store sees the same state (no per-handle counters). */
    htkv_auth *second;
    assert_int_equal(htkv_auth_open_with(f->db, &f->acfg, &second), 0);
    assert_int_equal(htkv_auth_verify_password(second, "yara", "second", 6, NULL), 0);
    struct htkv_auth_user z;
    assert_int_equal(htkv_auth_create_user(second, "zack", "pw", 2, &z), 0);
    assert_int_equal(htkv_auth_verify_password(f->auth, "zack", "pw", 2, NULL), 0);
    htkv_auth_close(second);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_restart_keeps_everything_and_never_reuses_ids,
                                        af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_restart_keeps_changes_and_revocations, af_setup,
                                        af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
