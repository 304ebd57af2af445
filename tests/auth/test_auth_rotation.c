/*
 * test_auth_rotation.c - master key rotation: every record re-sealed, tokens kept, and a rotation
 * cut anywhere (simulated at every write, and by SIGKILL of a real process) leaves every record
 * readable with both keys and can be finished by calling it again.
 */
#include "tests/auth/auth_fixture.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROT_KEY2_ID 2

#define ROT_USERS_MAX 400

struct population {
    size_t users;
    char ids[ROT_USERS_MAX][HTKV_AUTH_ID_SIZE];
    char names[ROT_USERS_MAX][16];
    char tokens[ROT_USERS_MAX][2][HTKV_AUTH_TOKEN_SIZE];
};

/* A fixture whose Argon2 is as cheap as libargon2 allows (32 KiB): for large populations. */
static struct af *
af_create_cheap(const char *tag)
{
    struct af *f = af_create(tag);
    htkv_auth_close(f->auth);
    f->acfg.argon2_memory_kib = 32;
    af_open_auth(f);
    return f;
}

static void
rot_key2(unsigned char *key)
{
    for (int i = 0; i < HTKV_AUTH_KEY_BYTES; i++) {
        key[i] = (unsigned char)(0x11 * (i + 1));
    }
}

/* Users with metadata, two keys each (one with metadata). */
static void
populate(struct af *f, struct population *p, size_t users)
{
    p->users = users;
    for (size_t i = 0; i < users; i++) {
        struct htkv_auth_user u;
        snprintf(p->names[i], sizeof(p->names[i]), "rot%03u", (unsigned)(i % 1000u) % 1000u);
        assert_int_equal(htkv_auth_create_user_with_metadata(f->auth, p->names[i], p->names[i],
                                                             strlen(p->names[i]), "meta", 4, &u),
                         0);
        memcpy(p->ids[i], u.id, sizeof(u.id));
        assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, "a", p->tokens[i][0], NULL), 0);
        assert_int_equal(htkv_auth_create_api_key_with_metadata(f->auth, u.id, "b", "km", 2, 0,
                                                                p->tokens[i][1], NULL),
                         0);
    }
}

/* Every user, key and metadata readable through @p a; *all_key2 = all sealed with key id 2. */
static void
check_population(htkv_auth *a, const struct population *p, bool passwords, bool *all_key2)
{
    *all_key2 = true;
    struct htkv_auth_user *all;
    size_t n;
    assert_int_equal(htkv_auth_list_users(a, &all, &n), 0);
    assert_int_equal(n, p->users);
    for (size_t i = 0; i < n; i++) {
        *all_key2 &= all[i].key_id == ROT_KEY2_ID;
    }
    htkv_auth_free(all);
    for (size_t i = 0; i < p->users; i++) {
        struct htkv_auth_user u;
        assert_int_equal(htkv_auth_get_user_by_name(a, p->names[i], &u), 0);
        assert_string_equal(u.id, p->ids[i]);
        if (passwords) {
            assert_int_equal(
                htkv_auth_verify_password(a, p->names[i], p->names[i], strlen(p->names[i]), NULL),
                0);
        }
        char buf[8];
        size_t len;
        assert_int_equal(htkv_auth_decrypt_user_metadata(a, u.id, buf, sizeof(buf), &len), 0);
        assert_memory_equal(buf, "meta", 4);
        struct htkv_auth_api_key *keys;
        assert_int_equal(htkv_auth_list_api_keys(a, u.id, &keys, &len), 0);
        assert_int_equal(len, 2);
        for (size_t k = 0; k < len; k++) {
            *all_key2 &= keys[k].key_id == ROT_KEY2_ID;
        }
        htkv_auth_free(keys);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(htkv_auth_authenticate_api_key(a, p->tokens[i][k], NULL), 0);
        }
    }
}

/* Open an auth handle on f->db with key2 as master and (optionally) key1 as previous. */
static int
open_with_keys(struct af *f, const unsigned char *key2, bool with_previous, htkv_auth **out)
{
    htkv_auth_config c;
    af_auth_config(f, &c);
    c.master_key = key2;
    c.master_key_id = ROT_KEY2_ID;
    if (with_previous) {
        c.previous_key = f->key;
        c.previous_key_id = 1;
    }
    return htkv_auth_open_with(f->db, &c, out);
}

/* Goal: rotation re-seals every record and keeps tokens; afterwards key2 alone opens the store. */
static void
test_auth_rotation_reseals_everything(void **state)
{
    struct af *f = *state;
    static struct population p;
    populate(f, &p, 24);
    unsigned char key2[HTKV_AUTH_KEY_BYTES];
    rot_key2(key2);
    bool all2;
    check_population(f->auth, &p, false, &all2);
    assert_false(all2);
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, key2, ROT_KEY2_ID), 0);
    check_population(f->auth, &p, true, &all2);
    assert_true(all2);
    /* New records use key2 at once. */
    struct htkv_auth_user u;
    af_user(f, "after", "pw", &u);
    assert_int_equal(u.key_id, ROT_KEY2_ID);
    assert_int_equal(htkv_auth_delete_user(f->auth, u.id), 0);
    /* Again with the same key: nothing to do, accepted. */
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, key2, ROT_KEY2_ID), 0);
    /* Id 2 for another key is refused; bad arguments too. */
    unsigned char other[HTKV_AUTH_KEY_BYTES];
    memset(other, 0x5a, sizeof(other));
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, other, ROT_KEY2_ID), HTKV_EAUTH);
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, other, 0), -EINVAL);
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, NULL, 3), -EINVAL);
    assert_int_equal(htkv_auth_rotate_master_key(NULL, other, 3), -EINVAL);

    /* Only key2 is needed now; key1 alone is refused. */
    htkv_auth_close(f->auth);
    f->auth = NULL;
    htkv_auth *a;
    assert_int_equal(htkv_auth_open_with(f->db, &f->acfg, &a), HTKV_EAUTH);
    assert_int_equal(open_with_keys(f, key2, false, &a), 0);
    check_population(a, &p, false, &all2);
    assert_true(all2);
    htkv_auth_close(a);
}

/* Goal: a rotation cut after any number of writes is recoverable. Method: the test budget makes
 * the k-th write fail as if the process died there, for every k; then reopen and resume. */
static void
test_auth_rotation_cut_at_every_write(void **state)
{
    (void)state;
    unsigned char key2[HTKV_AUTH_KEY_BYTES];
    rot_key2(key2);
    static struct population p;
    bool finished = false;
    for (long budget = 0; !finished; budget++) {
        assert_true(budget < 200);
        struct af *f = af_create("auth-rot-cut");
        populate(f, &p, 5);
        htkv_auth_test_rotation_budget(f->auth, budget);
        int rc = htkv_auth_rotate_master_key(f->auth, key2, ROT_KEY2_ID);
        finished = rc == 0;
        if (!finished) {
            assert_int_equal(rc, -EIO);
        }
        /* "Crash": drop the handle, reopen the store. */
        htkv_auth_close(f->auth);
        f->auth = NULL;
        assert_int_equal(htkv_close(f->db), 0);
        f->db = tu_open(&f->cfg);
        htkv_auth *a;
        bool all2;
        if (budget > 0 && !finished) {
            /* auth/meta names key2 and a rotation from key1: key1 alone cannot open it... */
            assert_int_equal(htkv_auth_open_with(f->db, &f->acfg, &a), HTKV_EAUTH);
            /* ...nor key2 alone, since records may still be sealed with key1. */
            assert_int_equal(open_with_keys(f, key2, false, &a), HTKV_EAUTH);
        }
        assert_int_equal(open_with_keys(f, key2, true, &a), 0);
        check_population(a, &p, false, &all2);
        /* Resume (or, cut before the first write, rotate). */
        assert_int_equal(htkv_auth_rotate_master_key(a, key2, ROT_KEY2_ID), 0);
        check_population(a, &p, budget % 4 == 0, &all2);
        assert_true(all2);
        htkv_auth_close(a);
        assert_int_equal(open_with_keys(f, key2, false, &a), 0);
        check_population(a, &p, false, &all2);
        assert_true(all2);
        htkv_auth_close(a);
        af_destroy(f);
    }
}

/* Child: open the store, tell the parent, rotate; the parent kills it at some point. */
static _Noreturn void
rotation_child(struct af *f, const unsigned char *key2, int ready_fd)
{
    htkv_db *db = NULL;
    if (htkv_open(&f->cfg, &db) != 0) {
        _exit(3);
    }
    htkv_auth *a;
    if (htkv_auth_open_with(db, &f->acfg, &a) != 0) {
        _exit(4);
    }
    char go = 1;
    if (write(ready_fd, &go, 1) != 1) {
        _exit(5);
    }
    int rc = htkv_auth_rotate_master_key(a, key2, ROT_KEY2_ID);
    _exit(rc == 0 ? 0 : 6);
}

static double
seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Goal: SIGKILL during a real rotation loses nothing. Method: per round, a fresh store; fork a
 * child that rotates; kill it a seeded random time into the rotation (timed on a first store);
 * reopen with both keys, check everything, resume, check again with key2 alone. */
static void
test_auth_rotation_survives_sigkill(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_auth_rotation_survives_sigkill");
    unsigned char key2[HTKV_AUTH_KEY_BYTES];
    rot_key2(key2);
    static struct population p;
    /* How long does a rotation of this population take here? */
    struct af *f = af_create_cheap("auth-rot-time");
    populate(f, &p, ROT_USERS_MAX);
    double t0 = seconds_now();
    assert_int_equal(htkv_auth_rotate_master_key(f->auth, key2, ROT_KEY2_ID), 0);
    double span_us = (seconds_now() - t0) * 1e6;
    af_destroy(f);
    int killed = 0, completed = 0;
    for (int round = 0; round < 8; round++) {
        f = af_create_cheap("auth-rot-kill");
        populate(f, &p, ROT_USERS_MAX);
        htkv_auth_close(f->auth);
        f->auth = NULL;
        assert_int_equal(htkv_close(f->db), 0);
        f->db = NULL;
        int ready[2];
        assert_int_equal(pipe(ready), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(ready[0]);
            rotation_child(f, key2, ready[1]);
        }
        close(ready[1]);
        char go;
        assert_int_equal(read(ready[0], &go, 1), 1);
        close(ready[0]);
        long delay_us = (long)((double)(tu_rand(&seed) % 1000) / 1000.0 * span_us * 1.1);
        struct timespec ts = { delay_us / 1000000, (delay_us % 1000000) * 1000L };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) {
            killed++;
        } else {
            assert_int_equal(WEXITSTATUS(status), 0);
            completed++;
        }
        f->db = tu_open(&f->cfg);
        htkv_auth *a;
        bool all2;
        assert_int_equal(open_with_keys(f, key2, true, &a), 0);
        check_population(a, &p, round == 0, &all2);
        assert_int_equal(htkv_auth_rotate_master_key(a, key2, ROT_KEY2_ID), 0);
        check_population(a, &p, false, &all2);
        assert_true(all2);
        htkv_auth_close(a);
        assert_int_equal(open_with_keys(f, key2, false, &a), 0);
        check_population(a, &p, false, &all2);
        assert_true(all2);
        htkv_auth_close(a);
        af_destroy(f);
    }
    print_message("rotation of %d users: %.0f us; %d rounds killed, %d completed\n", ROT_USERS_MAX,
                  span_us, killed, completed);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_rotation_reseals_everything, af_setup,
                                        af_teardown),
        cmocka_unit_test(test_auth_rotation_cut_at_every_write),
        cmocka_unit_test(test_auth_rotation_survives_sigkill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
