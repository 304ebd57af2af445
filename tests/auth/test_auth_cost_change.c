/*
 * test_auth_cost_change.c - Argon2 costs changed on reopen: a successful login rehashes a
 * password with the configured costs (and never undoes a concurrent change), and the dummy run
 * of an unknown name takes the costs of the stored users (the census, auth/census.c), whatever
 * mixture of costs is stored, so that timing does not tell unknown names from known ones.
 *
 * No timing is measured here: the tests compare the costs the dummy run would use
 * (htkv_auth_test_dummy_costs) with the costs stored in the users' hashes. Costs are the lowest
 * libargon2 accepts, so that every run is fast.
 */
#include "tests/auth/auth_fixture.h"

#include <ctype.h>

#include <htkv/replication.h>

/* The cheapest costs (8 KiB per lane, one pass), and two dearer sets. */
static const struct htkv_auth_test_costs CC_LOW = { 8, 1, 1, 0 };
static const struct htkv_auth_test_costs CC_HIGH = { 16, 2, 1, 0 };
static const struct htkv_auth_test_costs CC_LANES = { 16, 1, 2, 0 };

#define CC_USERS 8
#define CC_NAMES 256

static bool
cc_same(const struct htkv_auth_test_costs *x, const struct htkv_auth_test_costs *y)
{
    return x->memory_kib == y->memory_kib && x->iterations == y->iterations && x->lanes == y->lanes;
}

/* Close the auth handle (the store stays open) and open it again with costs @p c. */
static void
cc_reopen_with(struct af *f, const struct htkv_auth_test_costs *c)
{
    htkv_auth_close(f->auth);
    f->auth = NULL;
    f->acfg.argon2_memory_kib = c->memory_kib;
    f->acfg.argon2_iterations = c->iterations;
    f->acfg.argon2_lanes = c->lanes;
    af_open_auth(f);
}

static int
cc_setup(void **state)
{
    struct af *f = af_create("auth-cost");
    cc_reopen_with(f, &CC_LOW);
    *state = f;
    return 0;
}

static void
cc_user_name(int i, char *name, size_t cap)
{
    snprintf(name, cap, "user-%02d", i);
}

static void
cc_user_pw(int i, char *pw, size_t cap)
{
    snprintf(pw, cap, "secret-%02d", i);
}

/* Create users [from, to) with the handle's costs; their ids go to ids[i]. */
static void
cc_users(struct af *f, int from, int to, char ids[][HTKV_AUTH_ID_SIZE])
{
    for (int i = from; i < to; i++) {
        char name[32], pw[32];
        struct htkv_auth_user u;
        cc_user_name(i, name, sizeof(name));
        cc_user_pw(i, pw, sizeof(pw));
        af_user(f, name, pw, &u);
        memcpy(ids[i], u.id, HTKV_AUTH_ID_SIZE);
    }
}

static struct htkv_auth_test_costs
cc_user_costs(struct af *f, const char *id)
{
    struct htkv_auth_test_costs c;
    assert_int_equal(htkv_auth_test_user_costs(f->auth, id, &c), 0);
    return c;
}

static struct htkv_auth_test_costs
cc_dummy(struct af *f, const char *name)
{
    struct htkv_auth_test_costs c;
    assert_int_equal(htkv_auth_test_dummy_costs(f->auth, name, &c), 0);
    return c;
}

/* The census the handle sees must count exactly the costs stored in the hashes of @p ids. */
static void
cc_census_matches(struct af *f, char ids[][HTKV_AUTH_ID_SIZE], int n)
{
    struct htkv_auth_test_costs want[CC_USERS * 2];
    size_t want_n = 0;
    for (int i = 0; i < n; i++) {
        struct htkv_auth_test_costs c = cc_user_costs(f, ids[i]);
        size_t j = 0;
        while (j < want_n && !cc_same(&want[j], &c)) {
            j++;
        }
        if (j == want_n) {
            want[want_n] = c;
            want[want_n++].users = 0;
        }
        want[j].users++;
    }
    struct htkv_auth_test_costs got[CC_USERS * 2];
    size_t got_n = 0;
    assert_int_equal(htkv_auth_test_census(f->auth, got, CC_USERS * 2, &got_n), 0);
    assert_int_equal(got_n, want_n);
    for (size_t j = 0; j < want_n; j++) {
        bool found = false;
        for (size_t k = 0; k < got_n; k++) {
            if (cc_same(&got[k], &want[j])) {
                assert_int_equal(got[k].users, want[j].users);
                found = true;
            }
        }
        if (!found) {
            fail_msg("census lacks costs m=%u t=%u p=%u", want[j].memory_kib, want[j].iterations,
                     want[j].lanes);
        }
    }
}

/* Goal: after the costs were raised on reopen, every unknown name (any case, invalid names too)
 * gets the costs the stored users have, not the new configured ones; an unknown name and a
 * wrong password still cost one Argon2 run and write nothing. Method: users made with low
 * costs, reopen with higher ones, compare the dummy costs of many names. */
static void
test_cost_change_unknown_names_take_stored_costs(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS][HTKV_AUTH_ID_SIZE];
    cc_users(f, 0, CC_USERS, ids);
    af_reopen(f); /* store and auth handle, still low costs */
    cc_reopen_with(f, &CC_HIGH);
    cc_census_matches(f, ids, CC_USERS);
    for (int i = 0; i < CC_USERS; i++) {
        struct htkv_auth_test_costs c = cc_user_costs(f, ids[i]);
        assert_true(cc_same(&c, &CC_LOW));
    }
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32], upper[32];
        snprintf(name, sizeof(name), "ghost-%d", i);
        for (size_t k = 0; k < sizeof(name); k++) {
            upper[k] = (char)toupper((unsigned char)name[k]);
        }
        struct htkv_auth_test_costs c = cc_dummy(f, name);
        assert_true(cc_same(&c, &CC_LOW));
        c = cc_dummy(f, upper);
        assert_true(cc_same(&c, &CC_LOW));
    }
    /* Invalid names cannot be users, and get the same answer. */
    struct htkv_auth_test_costs c = cc_dummy(f, " padded");
    assert_true(cc_same(&c, &CC_LOW));
    c = cc_dummy(f, "");
    assert_true(cc_same(&c, &CC_LOW));

    unsigned long long runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_verify_password(f->auth, "ghost-1", "secret-01", 9, NULL),
                     HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 1);
    assert_int_equal(htkv_auth_verify_password(f->auth, " ghost", "x", 1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 2);
    assert_int_equal(htkv_auth_change_password(f->auth, "ghost-2", "x", 1, "y", 1), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 3);
    /* A wrong password is one run at the stored costs, and upgrades nothing. */
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-00", "wrong", 5, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 4);
    c = cc_user_costs(f, ids[0]);
    assert_true(cc_same(&c, &CC_LOW));
    cc_census_matches(f, ids, CC_USERS);
}

/* Goal: a successful login stores the password again with the configured costs (the census
 * follows), keeps the password and its change time, and happens once; a store where every user
 * logged in gives unknown names the new costs; lowering the costs migrates back the same way.
 * Method: log in users one by one, read their stored costs and the census. */
static void
test_cost_change_login_upgrades_hash(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS][HTKV_AUTH_ID_SIZE];
    cc_users(f, 0, CC_USERS, ids);
    af_reopen(f);
    cc_reopen_with(f, &CC_HIGH);

    struct htkv_auth_user before, after;
    assert_int_equal(htkv_auth_get_user(f->auth, ids[0], &before), 0);
    atomic_store(&f->now, AF_EPOCH + 1000);
    unsigned long long runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_verify_password(f->auth, "User-00", "secret-00", 9, &after), 0);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 2); /* verify + rehash */
    assert_string_equal(after.id, ids[0]);
    struct htkv_auth_test_costs c = cc_user_costs(f, ids[0]);
    assert_true(cc_same(&c, &CC_HIGH));
    assert_int_equal(htkv_auth_get_user(f->auth, ids[0], &after), 0);
    assert_int_equal(after.password_changed_at, before.password_changed_at);
    assert_int_equal(after.created_at, before.created_at);
    cc_census_matches(f, ids, CC_USERS);
    /* The same password still works, now at the new costs and without another rehash. */
    runs = htkv_auth_test_hash_runs(f->auth);
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-00", "secret-00", 9, NULL), 0);
    assert_int_equal(htkv_auth_test_hash_runs(f->auth), runs + 1);
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-00", "secret-01", 9, NULL),
                     HTKV_EAUTH);
    /* Kept across a restart. */
    af_reopen(f);
    c = cc_user_costs(f, ids[0]);
    assert_true(cc_same(&c, &CC_HIGH));
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-00", "secret-00", 9, NULL), 0);

    /* Everybody logs in: no low-cost hash is left, and unknown names move to the new costs. */
    for (int i = 1; i < CC_USERS; i++) {
        char name[32], pw[32];
        cc_user_name(i, name, sizeof(name));
        cc_user_pw(i, pw, sizeof(pw));
        assert_int_equal(htkv_auth_verify_password(f->auth, name, pw, strlen(pw), NULL), 0);
        cc_census_matches(f, ids, CC_USERS);
    }
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ghost-%d", i);
        c = cc_dummy(f, name);
        assert_true(cc_same(&c, &CC_HIGH));
    }

    /* The configured costs are the target whichever way they changed (here: fewer passes, more
     * lanes). */
    cc_reopen_with(f, &CC_LANES);
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-03", "secret-03", 9, NULL), 0);
    c = cc_user_costs(f, ids[3]);
    assert_true(cc_same(&c, &CC_LANES));
    cc_census_matches(f, ids, CC_USERS);
}

/* Goal: with a mixture of stored costs, unknown names get each set in proportion to its users,
 * the same set every time (any case, any handle, across a restart). Method: half the users at
 * one cost, half at another; then one eighth; count the sets over many names. */
static void
test_cost_change_mixture_follows_census(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS + 1][HTKV_AUTH_ID_SIZE];
    static struct htkv_auth_test_costs first[CC_NAMES];
    cc_users(f, 0, CC_USERS / 2, ids);
    cc_reopen_with(f, &CC_HIGH);
    cc_users(f, CC_USERS / 2, CC_USERS, ids);
    cc_reopen_with(f, &CC_LANES); /* configured costs that no stored hash has */
    cc_census_matches(f, ids, CC_USERS);
    int low = 0, high = 0;
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "Nobody-%d", i);
        first[i] = cc_dummy(f, name);
        low += cc_same(&first[i], &CC_LOW);
        high += cc_same(&first[i], &CC_HIGH);
        struct htkv_auth_test_costs again = cc_dummy(f, name);
        assert_true(cc_same(&again, &first[i]));
        name[0] = 'n';
        again = cc_dummy(f, name);
        assert_true(cc_same(&again, &first[i]));
    }
    assert_int_equal(low + high, CC_NAMES); /* never the configured costs */
    /* Half and half: far from 0 or 256 (binomial, the bounds fail with odds below 1e-15). */
    assert_in_range(low, CC_NAMES / 4, 3 * CC_NAMES / 4);
    /* Another handle, after a restart, gives every name the same costs. */
    af_reopen(f);
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "NOBODY-%d", i);
        struct htkv_auth_test_costs again = cc_dummy(f, name);
        assert_true(cc_same(&again, &first[i]));
    }
    /* One more user (4 + 5): the shares move a little, and so few names change costs (about one
     * in eighteen), all of them towards the set that grew. */
    cc_reopen_with(f, &CC_HIGH);
    cc_users(f, CC_USERS, CC_USERS + 1, ids);
    cc_census_matches(f, ids, CC_USERS + 1);
    int moved = 0;
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "nobody-%d", i);
        struct htkv_auth_test_costs now = cc_dummy(f, name);
        moved += !cc_same(&now, &first[i]);
        assert_true(cc_same(&now, &first[i]) || cc_same(&now, &CC_HIGH));
    }
    assert_in_range(moved, 0, CC_NAMES / 4);
    /* Seven of nine users move to the high costs: the low set keeps about one name in nine. */
    for (int i = 1; i < CC_USERS / 2; i++) {
        char name[32], pw[32];
        cc_user_name(i, name, sizeof(name));
        cc_user_pw(i, pw, sizeof(pw));
        assert_int_equal(htkv_auth_verify_password(f->auth, name, pw, strlen(pw), NULL), 0);
    }
    cc_census_matches(f, ids, CC_USERS + 1);
    low = 0;
    int moved_up = 0, moved_down = 0;
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "nobody-%d", i);
        struct htkv_auth_test_costs now = cc_dummy(f, name);
        low += cc_same(&now, &CC_LOW);
        moved_up += cc_same(&first[i], &CC_LOW) && cc_same(&now, &CC_HIGH);
        moved_down += cc_same(&first[i], &CC_HIGH) && !cc_same(&now, &CC_HIGH);
    }
    assert_in_range(low, 1, CC_NAMES / 4); /* expected 28 */
    assert_true(moved_up > 0);
    assert_int_equal(moved_down, 0); /* names only follow the users' move */
}

/* Goal: create, change_password and delete keep the census exact, and write one census per
 * bucket in use. Method: recount the stored costs after each step, look at the raw records. */
static void
test_cost_change_census_tracks_writes(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS][HTKV_AUTH_ID_SIZE];
    cc_users(f, 0, CC_USERS, ids);
    cc_census_matches(f, ids, CC_USERS);
    for (int i = 0; i < CC_USERS; i++) {
        char key[32];
        size_t n;
        snprintf(key, sizeof(key), "auth/census/%c", ids[i][0]);
        unsigned char *v = af_raw_get(f, key, &n);
        assert_non_null(v);
        assert_int_equal(v[0], 1); /* format version byte, then a sealed body */
        assert_int_equal(v[1], 'C');
        free(v);
    }
    cc_reopen_with(f, &CC_HIGH);
    /* A password change stores the new password with the configured costs. */
    assert_int_equal(htkv_auth_change_password(f->auth, "user-02", "secret-02", 9, "fresh", 5), 0);
    struct htkv_auth_test_costs c = cc_user_costs(f, ids[2]);
    assert_true(cc_same(&c, &CC_HIGH));
    cc_census_matches(f, ids, CC_USERS);
    /* Deleting a user takes its hash out of the census. */
    assert_int_equal(htkv_auth_delete_user(f->auth, ids[2]), 0);
    assert_int_equal(htkv_auth_delete_user(f->auth, ids[5]), 0);
    memcpy(ids[2], ids[CC_USERS - 1], HTKV_AUTH_ID_SIZE);
    memcpy(ids[5], ids[CC_USERS - 2], HTKV_AUTH_ID_SIZE);
    cc_census_matches(f, ids, CC_USERS - 2);
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ghost-%d", i);
        c = cc_dummy(f, name);
        assert_true(cc_same(&c, &CC_LOW));
    }
    /* No users at all: the configured costs. */
    for (int i = 0; i < CC_USERS - 2; i++) {
        assert_int_equal(htkv_auth_delete_user(f->auth, ids[i]), 0);
    }
    struct htkv_auth_test_costs sets[4];
    size_t n = 99;
    assert_int_equal(htkv_auth_test_census(f->auth, sets, 4, &n), 0);
    assert_int_equal(n, 0);
    c = cc_dummy(f, "ghost");
    assert_true(cc_same(&c, &CC_HIGH));
}

/* Goal: a store written before the census existed (users, no census records) gets the same
 * answers: unknown names take the stored costs, counted from the users; opening and failed
 * logins write nothing; the first write to a bucket stores its census. Method: delete the census
 * records by hand, reopen with higher costs. */
static void
test_cost_change_store_without_census(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS][HTKV_AUTH_ID_SIZE];
    cc_users(f, 0, CC_USERS, ids);
    for (int h = 0; h < 16; h++) {
        char key[32];
        snprintf(key, sizeof(key), "auth/census/%x", h);
        int rc = htkv_delete(f->db, key, strlen(key));
        assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
    }
    af_reopen(f);
    cc_reopen_with(f, &CC_HIGH);
    uint64_t latest = 0, now = 0;
    assert_int_equal(htkv_latest_version(f->db, &latest), 0);
    cc_census_matches(f, ids, CC_USERS);
    for (int i = 0; i < CC_NAMES; i++) {
        char name[32];
        snprintf(name, sizeof(name), "ghost-%d", i);
        struct htkv_auth_test_costs c = cc_dummy(f, name);
        assert_true(cc_same(&c, &CC_LOW));
    }
    assert_int_equal(htkv_auth_verify_password(f->auth, "ghost", "x", 1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-01", "x", 1, NULL), HTKV_EAUTH);
    assert_int_equal(htkv_latest_version(f->db, &now), 0);
    assert_int_equal(now, latest); /* nothing written */

    /* A login upgrades user-04 and stores the census of its bucket, counted from its users. */
    char key[32];
    size_t n;
    snprintf(key, sizeof(key), "auth/census/%c", ids[4][0]);
    assert_null(af_raw_get(f, key, &n));
    assert_int_equal(htkv_auth_verify_password(f->auth, "user-04", "secret-04", 9, NULL), 0);
    unsigned char *v = af_raw_get(f, key, &n);
    assert_non_null(v);
    free(v);
    cc_census_matches(f, ids, CC_USERS);
    /* Another handle, with the census of one bucket stored and the others counted. */
    af_reopen(f);
    cc_census_matches(f, ids, CC_USERS);
}

/* ---- an upgrade racing a password change ---------------------------------------------------- */

struct cc_race {
    htkv_auth *high;
    const char *pw;
    int rc;
};

static void *
cc_upgrader(void *arg)
{
    struct cc_race *r = arg;
    htkv_auth_test_txn_delay(50000); /* prepare the upgrade, wait 50 ms, then write it */
    r->rc = htkv_auth_verify_password(r->high, "rita", r->pw, strlen(r->pw), NULL);
    htkv_auth_test_txn_delay(0);
    return NULL;
}

/* Goal: an upgrade at login never undoes a concurrent password change: the new password stays,
 * the old one stays refused, the census stays exact. Method: two handles on one store (low and
 * high costs); the high one verifies the old password and holds its upgrade back while the low
 * one changes the password; repeated. */
static void
test_cost_change_upgrade_never_undoes_change(void **state)
{
    struct af *f = *state;
    static char ids[1][HTKV_AUTH_ID_SIZE];
    struct htkv_auth_user u;
    af_user(f, "rita", "pw-0", &u);
    memcpy(ids[0], u.id, HTKV_AUTH_ID_SIZE);
    htkv_auth_config hc = f->acfg;
    hc.argon2_memory_kib = CC_HIGH.memory_kib;
    hc.argon2_iterations = CC_HIGH.iterations;
    hc.argon2_lanes = CC_HIGH.lanes;
    htkv_auth *high = NULL;
    assert_int_equal(htkv_auth_open_with(f->db, &hc, &high), 0);
    int upgraded_first = 0;
    /* Until the window was hit three times (a loaded machine may start the upgrader late). */
    for (int round = 0; round < 60 && upgraded_first < 3; round++) {
        char old_pw[16], new_pw[16];
        snprintf(old_pw, sizeof(old_pw), "pw-%d", round);
        snprintf(new_pw, sizeof(new_pw), "pw-%d", round + 1);
        struct cc_race r = { .high = high, .pw = old_pw, .rc = -1 };
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, cc_upgrader, &r), 0);
        struct timespec ts = { 0, 5 * 1000 * 1000 }; /* the upgrader has verified by then */
        nanosleep(&ts, NULL);
        /* The low handle changes the password (and stores a low-cost hash). */
        assert_int_equal(htkv_auth_change_password(f->auth, "rita", old_pw, strlen(old_pw), new_pw,
                                                   strlen(new_pw)),
                         0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_true(r.rc == 0 || r.rc == HTKV_EAUTH); /* verified before or after the change */
        upgraded_first += r.rc == 0;
        /* Whatever the order, the change holds. */
        struct htkv_auth_test_costs c;
        assert_int_equal(htkv_auth_test_user_costs(f->auth, ids[0], &c), 0);
        if (r.rc == 0) {
            assert_true(cc_same(&c, &CC_LOW)); /* the change's hash, not the upgrade's */
        }
        cc_census_matches(f, ids, 1);
        /* Checked through the low handle, whose costs the hash has: no rehash in between. */
        assert_int_equal(htkv_auth_verify_password(f->auth, "rita", old_pw, strlen(old_pw), NULL),
                         HTKV_EAUTH);
        assert_int_equal(htkv_auth_verify_password(f->auth, "rita", new_pw, strlen(new_pw), NULL),
                         0);
    }
    assert_true(upgraded_first > 0); /* the window was hit at least once */
    htkv_auth_close(high);
}

/* Goal: a master key rotation re-seals the censuses, so a handle holding only the new key reads
 * them. Method: rotate, reopen with the new key alone, read the census. */
static void
test_cost_change_rotation_reseals_census(void **state)
{
    struct af *f = *state;
    static char ids[CC_USERS][HTKV_AUTH_ID_SIZE];
    cc_users(f, 0, CC_USERS, ids);
    unsigned char key2[HTKV_AUTH_KEY_BYTES];
    for (size_t i = 0; i < sizeof(key2); i++) {
        key2[i] = (unsigned char)(0x30 + i);
    }
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, key2, 2), 0);
    htkv_auth_close(f->auth);
    f->auth = NULL;
    f->acfg.master_key = key2;
    f->acfg.master_key_id = 2;
    f->acfg.argon2_memory_kib = CC_HIGH.memory_kib;
    f->acfg.argon2_iterations = CC_HIGH.iterations;
    af_open_auth(f);
    cc_census_matches(f, ids, CC_USERS);
    struct htkv_auth_test_costs c = cc_dummy(f, "ghost");
    assert_true(cc_same(&c, &CC_LOW));
    f->acfg.master_key = f->key; /* f->acfg must not point at this frame after return */
    f->acfg.master_key_id = 1;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cost_change_unknown_names_take_stored_costs, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_login_upgrades_hash, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_mixture_follows_census, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_census_tracks_writes, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_store_without_census, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_upgrade_never_undoes_change, cc_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_cost_change_rotation_reseals_census, cc_setup,
                                        af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
