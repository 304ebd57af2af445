/*
 * test_auth_races.c - concurrent callers never undo each other (pthreads): one winner per name,
 * no lost list updates, change_password vs verify and vs itself, revoke vs authenticate, delete
 * vs issue, rotation vs writers, and the bound on concurrent Argon2 runs.
 */
#include "tests/auth/auth_fixture.h"

#include <unistd.h>

#define RACE_THREADS 8

struct race {
    struct af *f;
    pthread_barrier_t barrier;
    atomic_int stop;
    int index;
    int round;
    int rc[RACE_THREADS];
    char arg[RACE_THREADS][HTKV_AUTH_TOKEN_SIZE];
};

struct worker {
    struct race *r;
    int index;
};

static void
run_threads(struct race *r, int n, void *(*fn)(void *))
{
    pthread_t th[RACE_THREADS];
    struct worker w[RACE_THREADS];
    assert_true(n <= RACE_THREADS);
    for (int i = 0; i < n; i++) {
        w[i].r = r;
        w[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
}

/* ---- one name, many creators ---------------------------------------------------------------- */

static void *
same_name_worker(void *arg)
{
    struct worker *w = arg;
    struct race *r = w->r;
    char name[32], pw[32];
    snprintf(name, sizeof(name), "race-%d", r->round);
    snprintf(pw, sizeof(pw), "pw-%d", w->index);
    pthread_barrier_wait(&r->barrier);
    r->rc[w->index] = htkv_auth_create_user(r->f->auth, name, pw, strlen(pw), NULL);
    return NULL;
}

/* Goal: of concurrent creators of one name exactly one wins; the others get HTKV_EEXIST. */
static void
test_auth_race_same_name_exactly_one_wins(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    assert_int_equal(pthread_barrier_init(&r.barrier, NULL, RACE_THREADS), 0);
    for (r.round = 0; r.round < 20; r.round++) {
        run_threads(&r, RACE_THREADS, same_name_worker);
        int winners = 0, winner = -1;
        for (int i = 0; i < RACE_THREADS; i++) {
            if (r.rc[i] == 0) {
                winners++;
                winner = i;
            } else {
                assert_int_equal(r.rc[i], HTKV_EEXIST);
            }
        }
        assert_int_equal(winners, 1);
        char name[32], pw[32];
        snprintf(name, sizeof(name), "RACE-%d", r.round);
        snprintf(pw, sizeof(pw), "pw-%d", winner);
        assert_int_equal(htkv_auth_verify_password(r.f->auth, name, pw, strlen(pw), NULL), 0);
    }
    struct htkv_auth_user *all;
    size_t n;
    assert_int_equal(htkv_auth_list_users(r.f->auth, &all, &n), 0);
    assert_int_equal(n, 20);
    htkv_auth_free(all);
    pthread_barrier_destroy(&r.barrier);
}

/* ---- many names, many creators -------------------------------------------------------------- */

static void *
distinct_worker(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(&w->r->barrier);
    for (int i = 0; i < 25; i++) {
        char name[32];
        snprintf(name, sizeof(name), "t%d-u%d", w->index, i);
        int rc = htkv_auth_create_user(w->r->f->auth, name, "pw", 2, NULL);
        if (rc != 0) {
            w->r->rc[w->index] = rc;
        }
    }
    return NULL;
}

/* Goal: concurrent creates of distinct names all land in the user lists (no lost update). */
static void
test_auth_race_distinct_creates_all_listed(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    assert_int_equal(pthread_barrier_init(&r.barrier, NULL, RACE_THREADS), 0);
    run_threads(&r, RACE_THREADS, distinct_worker);
    for (int i = 0; i < RACE_THREADS; i++) {
        assert_int_equal(r.rc[i], 0);
    }
    struct htkv_auth_user *all;
    size_t n;
    assert_int_equal(htkv_auth_list_users(r.f->auth, &all, &n), 0);
    assert_int_equal(n, RACE_THREADS * 25);
    htkv_auth_free(all);
    pthread_barrier_destroy(&r.barrier);
}

/* ---- change_password vs verify_password ----------------------------------------------------- */

static void *
verify_worker(void *arg)
{
    struct worker *w = arg;
    struct race *r = w->r;
    while (!atomic_load(&r->stop)) {
        for (int j = 0; j <= 20; j++) {
            char pw[16];
            snprintf(pw, sizeof(pw), "p%d", j);
            int rc = htkv_auth_verify_password(r->f->auth, "vic", pw, strlen(pw), NULL);
            if (rc != 0 && rc != HTKV_EAUTH) {
                r->rc[w->index] = rc;
            }
        }
    }
    return NULL;
}

static void *
change_worker(void *arg)
{
    struct worker *w = arg;
    struct race *r = w->r;
    for (int j = 0; j < 20; j++) {
        char old[16], neu[16];
        snprintf(old, sizeof(old), "p%d", j);
        snprintf(neu, sizeof(neu), "p%d", j + 1);
        int rc = htkv_auth_change_password(r->f->auth, "vic", old, strlen(old), neu, strlen(neu));
        if (rc != 0) {
            r->rc[w->index] = rc;
        }
    }
    atomic_store(&r->stop, 1);
    return NULL;
}

static void *
change_or_verify_worker(void *arg)
{
    struct worker *w = arg;
    return w->index == 0 ? change_worker(arg) : verify_worker(arg);
}

/* Goal: verifiers never revert a concurrent password change (with the handle's costs they write
 * nothing; test_auth_cost_change.c races the upgrade a login writes after a change of costs). */
static void
test_auth_race_change_vs_verify(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    af_user(r.f, "vic", "p0", NULL);
    run_threads(&r, 5, change_or_verify_worker);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(r.rc[i], 0);
    }
    assert_int_equal(htkv_auth_verify_password(r.f->auth, "vic", "p20", 3, NULL), 0);
    for (int j = 0; j < 20; j++) {
        char pw[16];
        snprintf(pw, sizeof(pw), "p%d", j);
        assert_int_equal(htkv_auth_verify_password(r.f->auth, "vic", pw, strlen(pw), NULL),
                         HTKV_EAUTH);
    }
}

/* ---- two changers from the same old password ------------------------------------------------ */

static void *
two_changers_worker(void *arg)
{
    struct worker *w = arg;
    struct race *r = w->r;
    char neu[32];
    snprintf(neu, sizeof(neu), "r%d-t%d", r->round, w->index);
    pthread_barrier_wait(&r->barrier);
    r->rc[w->index] = htkv_auth_change_password(r->f->auth, "wes", r->arg[0], strlen(r->arg[0]),
                                                neu, strlen(neu));
    return NULL;
}

/* Goal: of concurrent changes from one old password exactly one wins; the loser is told
 * HTKV_EAUTH (its old password is no longer current) instead of overwriting the winner. */
static void
test_auth_race_two_changers_one_wins(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    af_user(r.f, "wes", "start", NULL);
    snprintf(r.arg[0], sizeof(r.arg[0]), "start");
    assert_int_equal(pthread_barrier_init(&r.barrier, NULL, 4), 0);
    for (r.round = 0; r.round < 10; r.round++) {
        run_threads(&r, 4, two_changers_worker);
        int winners = 0, winner = -1;
        for (int i = 0; i < 4; i++) {
            if (r.rc[i] == 0) {
                winners++;
                winner = i;
            } else {
                assert_int_equal(r.rc[i], HTKV_EAUTH);
            }
        }
        assert_int_equal(winners, 1);
        snprintf(r.arg[0], sizeof(r.arg[0]), "r%d-t%d", r.round, winner);
        assert_int_equal(
            htkv_auth_verify_password(r.f->auth, "wes", r.arg[0], strlen(r.arg[0]), NULL), 0);
        for (int i = 0; i < 4; i++) {
            char other[32];
            snprintf(other, sizeof(other), "r%d-t%d", r.round, i);
            if (i != winner) {
                assert_int_equal(
                    htkv_auth_verify_password(r.f->auth, "wes", other, strlen(other), NULL),
                    HTKV_EAUTH);
            }
        }
    }
    pthread_barrier_destroy(&r.barrier);
}

/* ---- revoke vs authenticate ----------------------------------------------------------------- */

#define REVOKE_KEYS 32

struct revoke_race {
    struct af *f;
    char tokens[REVOKE_KEYS][HTKV_AUTH_TOKEN_SIZE];
    char ids[REVOKE_KEYS][HTKV_AUTH_ID_SIZE];
    atomic_int revoked[REVOKE_KEYS];
    atomic_int stop;
    atomic_int violations;
    atomic_int errors;
    atomic_long auths;
};

static void *
authenticate_worker(void *arg)
{
    struct revoke_race *r = arg;
    while (!atomic_load(&r->stop)) {
        for (int i = 0; i < REVOKE_KEYS; i++) {
            int was_revoked = atomic_load(&r->revoked[i]);
            int rc = htkv_auth_authenticate_api_key(r->f->auth, r->tokens[i], NULL);
            atomic_fetch_add(&r->auths, 1);
            if (rc == 0 && was_revoked) {
                atomic_fetch_add(&r->violations, 1); /* a revoked key came back */
            } else if (rc != 0 && rc != HTKV_EAUTH) {
                atomic_fetch_add(&r->errors, 1);
            }
        }
    }
    return NULL;
}

/* Goal: authenticate (which writes last_used_at) never resurrects or blocks a revocation.
 * Method: the clock advances a minute per read so every authentication writes; a revoker
 * revokes each key while four threads authenticate all keys in a loop. */
static void
test_auth_race_revoke_vs_authenticate(void **state)
{
    static struct revoke_race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    struct htkv_auth_user u;
    af_user(r.f, "xavier", "pw", &u);
    for (int i = 0; i < REVOKE_KEYS; i++) {
        struct htkv_auth_api_key k;
        assert_int_equal(htkv_auth_create_api_key(r.f->auth, u.id, NULL, r.tokens[i], &k), 0);
        memcpy(r.ids[i], k.id, sizeof(k.id));
    }
    atomic_store(&r.f->tick, HTKV_AUTH_LAST_USED_GRANULARITY_S);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, authenticate_worker, &r), 0);
    }
    usleep(2000);
    for (int i = 0; i < REVOKE_KEYS; i++) {
        assert_int_equal(htkv_auth_revoke_api_key(r.f->auth, r.ids[i]), 0);
        atomic_store(&r.revoked[i], 1);
        usleep(200);
    }
    usleep(2000);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    atomic_store(&r.f->tick, 0);
    print_message("%ld authentications during the revocations\n", atomic_load(&r.auths));
    assert_int_equal(atomic_load(&r.violations), 0);
    assert_int_equal(atomic_load(&r.errors), 0);
    for (int i = 0; i < REVOKE_KEYS; i++) {
        char key[128];
        af_rkey(key, "auth/apikey/", r.ids[i]);
        assert_int_equal(htkv_contains(r.f->db, key, strlen(key)), 0);
        assert_int_equal(htkv_auth_authenticate_api_key(r.f->auth, r.tokens[i], NULL), HTKV_EAUTH);
    }
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(r.f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, 0);
    af_reopen(r.f);
    for (int i = 0; i < REVOKE_KEYS; i++) {
        assert_int_equal(htkv_auth_authenticate_api_key(r.f->auth, r.tokens[i], NULL), HTKV_EAUTH);
    }
}

/* ---- concurrent issue for one user; delete vs issue ----------------------------------------- */

struct issue_race {
    struct af *f;
    char user[HTKV_AUTH_ID_SIZE];
    atomic_int stop;
    atomic_int errors;
    atomic_int issued;
    char ids[RACE_THREADS][256][HTKV_AUTH_ID_SIZE];
    int count[RACE_THREADS];
    int limit;
};

static void *
issue_worker(void *arg)
{
    struct worker *w = arg;
    struct issue_race *r = (struct issue_race *)w->r;
    for (int i = 0; i < r->limit && !atomic_load(&r->stop); i++) {
        char t[HTKV_AUTH_TOKEN_SIZE];
        struct htkv_auth_api_key k;
        int rc = htkv_auth_create_api_key(r->f->auth, r->user, NULL, t, &k);
        if (rc == 0) {
            memcpy(r->ids[w->index][r->count[w->index]++], k.id, sizeof(k.id));
            atomic_fetch_add(&r->issued, 1);
        } else if (rc == HTKV_ENOTFOUND) {
            break; /* the user is gone */
        } else {
            atomic_fetch_add(&r->errors, 1);
        }
    }
    return NULL;
}

static void
run_issuers(struct issue_race *r, int n, long delete_after_us)
{
    pthread_t th[RACE_THREADS];
    struct worker w[RACE_THREADS];
    for (int i = 0; i < n; i++) {
        w[i].r = (struct race *)r;
        w[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, issue_worker, &w[i]), 0);
    }
    if (delete_after_us >= 0) {
        usleep((useconds_t)delete_after_us);
        assert_int_equal(htkv_auth_delete_user(r->f->auth, r->user), 0);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
}

/* Goal: concurrent issues for one user all land in its key list (no lost update). */
static void
test_auth_race_concurrent_issue_all_listed(void **state)
{
    static struct issue_race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    struct htkv_auth_user u;
    af_user(r.f, "yves", "pw", &u);
    memcpy(r.user, u.id, sizeof(u.id));
    r.limit = 16;
    run_issuers(&r, RACE_THREADS, -1);
    assert_int_equal(atomic_load(&r.errors), 0);
    assert_int_equal(atomic_load(&r.issued), RACE_THREADS * 16);
    struct htkv_auth_api_key *keys;
    size_t n;
    assert_int_equal(htkv_auth_list_api_keys(r.f->auth, u.id, &keys, &n), 0);
    assert_int_equal(n, RACE_THREADS * 16);
    htkv_auth_free(keys);
}

/* Goal: a user deleted while keys are being issued leaves no key behind (no orphan that would
 * still authenticate). Method: per round, issuers loop until HTKV_ENOTFOUND while the main
 * thread deletes the user after a seeded random delay; then no issued key may exist. */
static void
test_auth_race_delete_vs_issue_no_orphans(void **state)
{
    static struct issue_race r;
    struct af *f = *state;
    uint64_t seed = tu_seed("test_auth_race_delete_vs_issue_no_orphans");
    int issued = 0;
    for (int round = 0; round < 40; round++) {
        memset(&r, 0, sizeof(r));
        r.f = f;
        struct htkv_auth_user u;
        char name[16];
        snprintf(name, sizeof(name), "zoe%d", round);
        af_user(f, name, "pw", &u);
        memcpy(r.user, u.id, sizeof(u.id));
        r.limit = 250;
        run_issuers(&r, 4, (long)(tu_rand(&seed) % 1500));
        assert_int_equal(atomic_load(&r.errors), 0);
        issued += atomic_load(&r.issued);
        for (int t = 0; t < 4; t++) {
            for (int i = 0; i < r.count[t]; i++) {
                char key[128];
                af_rkey(key, "auth/apikey/", r.ids[t][i]);
                if (htkv_contains(f->db, key, strlen(key)) != 0) {
                    fail_msg("round %d: key %s outlived its deleted owner", round, r.ids[t][i]);
                }
            }
        }
        char key[128];
        af_rkey(key, "auth/user_keys/", u.id);
        assert_int_equal(htkv_contains(f->db, key, strlen(key)), 0);
        char t[HTKV_AUTH_TOKEN_SIZE];
        assert_int_equal(htkv_auth_create_api_key(f->auth, u.id, NULL, t, NULL), HTKV_ENOTFOUND);
    }
    print_message("%d keys issued over the rounds\n", issued);
}

/* ---- rotation vs writers -------------------------------------------------------------------- */

static void *
rotation_writer(void *arg)
{
    struct worker *w = arg;
    struct race *r = w->r;
    htkv_auth_test_txn_delay(1000); /* seal, wait 1 ms, write: straddles rotation steps */
    for (int i = 0; !atomic_load(&r->stop) && i < 400; i++) {
        char name[32];
        snprintf(name, sizeof(name), "w%d-%d", w->index, i);
        struct htkv_auth_user u;
        int rc = htkv_auth_create_user(r->f->auth, name, "pw", 2, &u);
        char t[HTKV_AUTH_TOKEN_SIZE];
        if (rc == 0) {
            rc = htkv_auth_create_api_key(r->f->auth, u.id, NULL, t, NULL);
        }
        if (rc == 0) {
            rc = htkv_auth_authenticate_api_key(r->f->auth, t, NULL);
        }
        if (rc != 0) {
            r->rc[w->index] = rc;
            break;
        }
    }
    return NULL;
}

/* Goal: records written during a rotation end up sealed with the new key (their writes conflict
 * on auth/meta and are redone), so the old key is not needed afterwards. */
static void
test_auth_race_rotation_vs_writers(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    r.f->acfg.argon2_memory_kib = 32;
    htkv_auth_close(r.f->auth);
    af_open_auth(r.f);
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof(name), "pre%d", i);
        af_user(r.f, name, "pw", NULL);
    }
    pthread_t th[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i].r = &r;
        w[i].index = i;
        assert_int_equal(pthread_create(&th[i], NULL, rotation_writer, &w[i]), 0);
    }
    usleep(2000);
    unsigned char key2[HTKV_AUTH_KEY_BYTES];
    memset(key2, 0x77, sizeof(key2));
    assert_int_equal(htkv_auth_rotate_master_key(r.f->auth, key2, 2), 0);
    usleep(2000);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(r.rc[i], 0);
    }
    /* Reopen with the new key alone: everything must be readable and sealed with key 2. */
    htkv_auth_close(r.f->auth);
    r.f->acfg.master_key = key2;
    r.f->acfg.master_key_id = 2;
    af_open_auth(r.f);
    struct htkv_auth_user *all;
    size_t n;
    assert_int_equal(htkv_auth_list_users(r.f->auth, &all, &n), 0);
    print_message("%zu users after the rotation\n", n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(all[i].key_id, 2);
        struct htkv_auth_api_key *keys;
        size_t kn;
        assert_int_equal(htkv_auth_list_api_keys(r.f->auth, all[i].id, &keys, &kn), 0);
        for (size_t k = 0; k < kn; k++) {
            assert_int_equal(keys[k].key_id, 2);
        }
        htkv_auth_free(keys);
    }
    htkv_auth_free(all);
    memcpy(r.f->key, key2, sizeof(key2));
    r.f->acfg.master_key = r.f->key;
}

/* ---- bounded Argon2 concurrency ------------------------------------------------------------- */

static void *
hash_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 4; i++) {
        int rc = htkv_auth_verify_password(w->r->f->auth, "hash", "wrong", 5, NULL);
        if (rc != HTKV_EAUTH) {
            w->r->rc[w->index] = rc;
        }
    }
    return NULL;
}

/* Goal: at most max_concurrent_hashes Argon2 runs execute at once. Method: 8 threads verify
 * with a bound of 2 and 8 MiB per run; the hasher records the peak it saw. */
static void
test_auth_race_hash_concurrency_bounded(void **state)
{
    static struct race r;
    memset(&r, 0, sizeof(r));
    r.f = *state;
    af_user(r.f, "hash", "right", NULL);
    htkv_auth_close(r.f->auth);
    r.f->acfg.max_concurrent_hashes = 2;
    r.f->acfg.argon2_memory_kib = 8192;
    af_open_auth(r.f);
    assert_int_equal(htkv_auth_test_hash_slots(r.f->auth), 2);
    run_threads(&r, RACE_THREADS, hash_worker);
    for (int i = 0; i < RACE_THREADS; i++) {
        assert_int_equal(r.rc[i], 0);
    }
    unsigned peak = htkv_auth_test_hash_peak(r.f->auth);
    print_message("peak concurrent Argon2 runs: %u (bound 2)\n", peak);
    assert_true(peak >= 1 && peak <= 2);
    assert_int_equal(htkv_auth_test_hash_runs(r.f->auth), RACE_THREADS * 4);
    /* The automatic bound: online CPUs, at most 1 GiB of Argon2 memory, at least 1. */
    htkv_auth_close(r.f->auth);
    r.f->acfg.max_concurrent_hashes = 0;
    r.f->acfg.argon2_memory_kib = 512u * 1024u; /* 512 MiB: at most 2 at once */
    af_open_auth(r.f);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = cpus < 1 ? 1 : (unsigned)cpus;
    want = want > 2 ? 2 : want;
    assert_int_equal(htkv_auth_test_hash_slots(r.f->auth), want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_race_same_name_exactly_one_wins, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_distinct_creates_all_listed, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_change_vs_verify, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_two_changers_one_wins, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_revoke_vs_authenticate, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_concurrent_issue_all_listed, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_delete_vs_issue_no_orphans, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_rotation_vs_writers, af_setup, af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_race_hash_concurrency_bounded, af_setup,
                                        af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
