/*
 * test_auth_storage.c - what reaches the disk: no plaintext secrets, tampering detected, blobs
 * bound to their record, both ciphers readable side by side.
 *
 * Documented behaviour checked here: a damaged or moved record gives HTKV_ECORRUPT from every
 * call that reads it (verify_password and authenticate_api_key included); a damaged auth/meta
 * makes htkv_auth_open_with() fail with HTKV_ECORRUPT, or HTKV_EAUTH when the damage is in the
 * key check value (indistinguishable from being given another key).
 */
#include "tests/auth/auth_fixture.h"

/* Goal: every single-byte change of a user record is detected. Method: flip each byte. */
static void
test_auth_storage_user_record_tamper_detected(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u, g;
    static const char meta[] = "role=admin";
    assert_int_equal(
        htkv_auth_create_user_with_metadata(f->auth, "tess", "pw-tess", 7, meta, strlen(meta), &u),
        0);
    char key[128];
    af_rkey(key, "auth/user/", u.id);
    size_t n;
    unsigned char *orig = af_raw_get(f, key, &n);
    assert_non_null(orig);
    assert_int_equal(orig[0], 1); /* format version byte */
    unsigned char *bad = malloc(n);
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, orig, n);
        bad[i] ^= 0x01;
        af_raw_put(f, key, bad, n);
        assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), HTKV_ECORRUPT);
        if (i % 16 == 0) { /* the slower calls on a sample of positions */
            assert_int_equal(htkv_auth_verify_password(f->auth, "tess", "pw-tess", 7, NULL),
                             HTKV_ECORRUPT);
            char buf[32];
            size_t len;
            assert_int_equal(htkv_auth_decrypt_user_metadata(f->auth, u.id, buf, sizeof(buf), &len),
                             HTKV_ECORRUPT);
            struct htkv_auth_user *all;
            assert_int_equal(htkv_auth_list_users(f->auth, &all, &len), HTKV_ECORRUPT);
        }
    }
    /* Truncated, extended, empty. */
    af_raw_put(f, key, orig, n - 1);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), HTKV_ECORRUPT);
    memcpy(bad, orig, n);
    af_raw_put(f, key, orig, 1);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), HTKV_ECORRUPT);
    af_raw_put(f, key, "", 0);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), HTKV_ECORRUPT);
    /* Restored: everything works again. */
    af_raw_put(f, key, orig, n);
    assert_int_equal(htkv_auth_get_user(f->auth, u.id, &g), 0);
    assert_int_equal(htkv_auth_verify_password(f->auth, "tess", "pw-tess", 7, NULL), 0);
    free(bad);
    free(orig);
}

/* Goal: a record copied under another key is rejected (associated data = the record key). */
static void
test_auth_storage_moved_blob_rejected(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user a, b, g;
    af_user(f, "uma", "pw-a", &a);
    af_user(f, "victor", "pw-b", &b);
    char ka[128], kb[128];
    size_t n;
    /* A's user record under B's key. */
    af_rkey(ka, "auth/user/", a.id);
    af_rkey(kb, "auth/user/", b.id);
    unsigned char *va = af_raw_get(f, ka, &n);
    size_t nb;
    unsigned char *vb = af_raw_get(f, kb, &nb);
    af_raw_put(f, kb, va, n);
    assert_int_equal(htkv_auth_get_user(f->auth, b.id, &g), HTKV_ECORRUPT);
    assert_int_equal(htkv_auth_verify_password(f->auth, "victor", "pw-a", 4, NULL), HTKV_ECORRUPT);
    af_raw_put(f, kb, vb, nb);
    free(va);
    free(vb);
    /* A's name entry under B's name: would make "victor" log in as uma. */
    va = af_raw_get(f, "auth/user_by_name/uma", &n);
    vb = af_raw_get(f, "auth/user_by_name/victor", &nb);
    assert_non_null(va);
    af_raw_put(f, "auth/user_by_name/victor", va, n);
    assert_int_equal(htkv_auth_verify_password(f->auth, "victor", "pw-a", 4, NULL), HTKV_ECORRUPT);
    assert_int_equal(htkv_auth_get_user_by_name(f->auth, "victor", &g), HTKV_ECORRUPT);
    af_raw_put(f, "auth/user_by_name/victor", vb, nb);
    assert_int_equal(htkv_auth_verify_password(f->auth, "victor", "pw-b", 4, NULL), 0);
    free(va);
    free(vb);
    /* An API key record under another key id. */
    char t1[HTKV_AUTH_TOKEN_SIZE], t2[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k1, k2;
    assert_int_equal(htkv_auth_create_api_key(f->auth, a.id, NULL, t1, &k1), 0);
    assert_int_equal(htkv_auth_create_api_key(f->auth, b.id, NULL, t2, &k2), 0);
    af_rkey(ka, "auth/apikey/", k1.id);
    af_rkey(kb, "auth/apikey/", k2.id);
    va = af_raw_get(f, ka, &n);
    af_raw_put(f, kb, va, n);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t2, NULL), HTKV_ECORRUPT);
    free(va);
    /* A user list under another list's key: its body (a list of ids) would parse fine, so only
     * the binding of the ciphertext to its record key can tell. */
    for (int i = 0; i < 40; i++) {
        char name[16];
        snprintf(name, sizeof(name), "fill%d", i);
        af_user(f, name, "pw", NULL);
    }
    char lists[2][32];
    int found = 0;
    for (int h = 0; h < 16 && found < 2; h++) {
        snprintf(lists[found], sizeof(lists[found]), "auth/user_list/%x", h);
        unsigned char *v = af_raw_get(f, lists[found], &n);
        found += v != NULL;
        free(v);
    }
    assert_int_equal(found, 2);
    va = af_raw_get(f, lists[0], &n);
    af_raw_put(f, lists[1], va, n);
    struct htkv_auth_user *all;
    assert_int_equal(htkv_auth_list_users(f->auth, &all, &n), HTKV_ECORRUPT);
    free(va);
}

/* Goal: a damaged API key record is detected by every reader. Method: flip each byte. */
static void
test_auth_storage_key_record_tamper_detected(void **state)
{
    struct af *f = *state;
    struct htkv_auth_user u;
    af_user(f, "wendy", "pw", &u);
    char t[HTKV_AUTH_TOKEN_SIZE];
    struct htkv_auth_api_key k;
    assert_int_equal(htkv_auth_create_api_key_with_metadata(f->auth, u.id, "lbl", "m", 1, 0, t, &k),
                     0);
    char key[128];
    af_rkey(key, "auth/apikey/", k.id);
    size_t n;
    unsigned char *orig = af_raw_get(f, key, &n);
    unsigned char *bad = malloc(n);
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, orig, n);
        bad[i] ^= 0x80;
        af_raw_put(f, key, bad, n);
        assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), HTKV_ECORRUPT);
        struct htkv_auth_api_key *keys;
        size_t cnt;
        assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &cnt), HTKV_ECORRUPT);
        char buf[4];
        assert_int_equal(htkv_auth_decrypt_api_key_metadata(f->auth, k.id, buf, 4, &cnt),
                         HTKV_ECORRUPT);
    }
    af_raw_put(f, key, orig, n);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), 0);
    free(bad);
    free(orig);
    /* A damaged key list is detected too. */
    af_rkey(key, "auth/user_keys/", u.id);
    orig = af_raw_get(f, key, &n);
    orig[n - 1] ^= 1;
    af_raw_put(f, key, orig, n);
    struct htkv_auth_api_key *keys;
    assert_int_equal(htkv_auth_list_api_keys(f->auth, u.id, &keys, &n), HTKV_ECORRUPT);
    free(orig);
}

/* Goal: a damaged auth/meta stops open with HTKV_ECORRUPT or HTKV_EAUTH, never succeeds. */
static void
test_auth_storage_meta_tamper_detected(void **state)
{
    struct af *f = *state;
    af_user(f, "xena", "pw", NULL);
    size_t n;
    unsigned char *orig = af_raw_get(f, "auth/meta", &n);
    assert_non_null(orig);
    unsigned char *bad = malloc(n);
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, orig, n);
        bad[i] ^= 0x04;
        af_raw_put(f, "auth/meta", bad, n);
        htkv_auth *a = NULL;
        int rc = htkv_auth_open_with(f->db, &f->acfg, &a);
        if (rc != HTKV_ECORRUPT && rc != HTKV_EAUTH) {
            fail_msg("byte %zu: open gave %d (%s)", i, rc, htkv_strerror(rc));
        }
        assert_null(a);
    }
    af_raw_put(f, "auth/meta", orig, n);
    htkv_auth *a = NULL;
    assert_int_equal(htkv_auth_open_with(f->db, &f->acfg, &a), 0);
    assert_int_equal(htkv_auth_verify_password(a, "xena", "pw", 2, NULL), 0);
    htkv_auth_close(a);
    free(bad);
    free(orig);
}

/* Goal: no password, metadata or token secret reaches the disk in plaintext. Method: write
 * them with distinctive bytes, close the store, read every file of the directory byte-wise. */
static void
test_auth_storage_no_plaintext_on_disk(void **state)
{
    struct af *f = *state;
    static const char pw[] = "PLAINTEXT-PASSWORD-7f3a9c";
    static const char pw2[] = "PLAINTEXT-NEWPASSWORD-81d0";
    static const char umeta[] = "USER-METADATA-SECRET-91c2";
    static const char kmeta[] = "KEY-METADATA-SECRET-55aa";
    static const char label[] = "KEY-LABEL-c0ffee";
    struct htkv_auth_user u;
    assert_int_equal(htkv_auth_create_user_with_metadata(f->auth, "grep-user", pw, strlen(pw),
                                                         umeta, strlen(umeta), &u),
                     0);
    assert_int_equal(
        htkv_auth_change_password(f->auth, "grep-user", pw, strlen(pw), pw2, strlen(pw2)), 0);
    char t[HTKV_AUTH_TOKEN_SIZE];
    assert_int_equal(htkv_auth_create_api_key_with_metadata(f->auth, u.id, label, kmeta,
                                                            strlen(kmeta), 0, t, NULL),
                     0);
    atomic_store(&f->now, AF_EPOCH + 3600); /* so that authenticate writes last_used_at */
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), 0);
    unsigned char secret_raw[32];
    for (int i = 0; i < 32; i++) {
        unsigned v;
        assert_int_equal(sscanf(t + 38 + 2 * i, "%2x", &v), 1);
        secret_raw[i] = (unsigned char)v;
    }
    htkv_auth_close(f->auth);
    f->auth = NULL;
    assert_int_equal(htkv_close(f->db), 0);
    f->db = NULL;

    assert_true(af_dir_bytes(f->dir) > 0);
    /* Positive control: keys are plaintext, so the scanner must find the name index key. */
    assert_true(af_dir_contains(f->dir, "auth/user_by_name/grep-user", 27));
    assert_false(af_dir_contains(f->dir, pw, strlen(pw)));
    assert_false(af_dir_contains(f->dir, pw2, strlen(pw2)));
    assert_false(af_dir_contains(f->dir, umeta, strlen(umeta)));
    assert_false(af_dir_contains(f->dir, kmeta, strlen(kmeta)));
    assert_false(af_dir_contains(f->dir, label, strlen(label)));
    assert_false(af_dir_contains(f->dir, t + 38, 64));                     /* secret, hex */
    assert_false(af_dir_contains(f->dir, secret_raw, sizeof(secret_raw))); /* secret, raw */
    assert_false(af_dir_contains(f->dir, t, HTKV_AUTH_TOKEN_LEN));
    assert_false(af_dir_contains(f->dir, f->key, sizeof(f->key))); /* the master key */
    f->db = tu_open(&f->cfg);
    af_open_auth(f);
    assert_int_equal(htkv_auth_authenticate_api_key(f->auth, t, NULL), 0);
}

/* Goal: both ciphers work, and records of either stay readable when the other is configured. */
static void
test_auth_storage_both_ciphers(void **state)
{
    struct af *f = *state;
    int aes = htkv_auth_cipher(f->auth) == HTKV_AUTH_CIPHER_AES256GCM;
    htkv_auth_config c;
    af_auth_config(f, &c);
    c.cipher = HTKV_AUTH_CIPHER_XCHACHA20POLY1305;
    htkv_auth *x;
    assert_int_equal(htkv_auth_open_with(f->db, &c, &x), 0);
    assert_int_equal(htkv_auth_cipher(x), HTKV_AUTH_CIPHER_XCHACHA20POLY1305);
    struct htkv_auth_user ux, ua;
    assert_int_equal(htkv_auth_create_user_with_metadata(x, "xchacha", "pw", 2, "mx", 2, &ux), 0);
    char tx[HTKV_AUTH_TOKEN_SIZE];
    assert_int_equal(htkv_auth_create_api_key(x, ux.id, NULL, tx, NULL), 0);

    c.cipher = HTKV_AUTH_CIPHER_AES256GCM;
    htkv_auth *g = NULL;
    int rc = htkv_auth_open_with(f->db, &c, &g);
    if (!aes) {
        assert_int_equal(rc, -ENOTSUP);
        print_message("no AES instructions here: AES-256-GCM part skipped\n");
        htkv_auth_close(x);
        return;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(htkv_auth_cipher(g), HTKV_AUTH_CIPHER_AES256GCM);
    assert_int_equal(htkv_auth_create_user_with_metadata(g, "aesgcm", "pw", 2, "ma", 2, &ua), 0);
    char ta[HTKV_AUTH_TOKEN_SIZE];
    assert_int_equal(htkv_auth_create_api_key(g, ua.id, NULL, ta, NULL), 0);
    /* Each handle reads the other's records. */
    htkv_auth *h[2] = { x, g };
    for (int i = 0; i < 2; i++) {
        char buf[4];
        size_t n;
        assert_int_equal(htkv_auth_verify_password(h[i], "xchacha", "pw", 2, NULL), 0);
        assert_int_equal(htkv_auth_verify_password(h[i], "aesgcm", "pw", 2, NULL), 0);
        assert_int_equal(htkv_auth_authenticate_api_key(h[i], tx, NULL), 0);
        assert_int_equal(htkv_auth_authenticate_api_key(h[i], ta, NULL), 0);
        assert_int_equal(htkv_auth_decrypt_user_metadata(h[i], ux.id, buf, sizeof(buf), &n), 0);
        assert_memory_equal(buf, "mx", 2);
        assert_int_equal(htkv_auth_decrypt_user_metadata(h[i], ua.id, buf, sizeof(buf), &n), 0);
        assert_memory_equal(buf, "ma", 2);
    }
    /* The cipher byte is part of the record: XChaCha uses a 24-byte nonce, GCM a 12-byte one. */
    char kx[128], ka[128];
    size_t nx, na;
    af_rkey(kx, "auth/user/", ux.id);
    af_rkey(ka, "auth/user/", ua.id);
    unsigned char *vx = af_raw_get(f, kx, &nx), *va = af_raw_get(f, ka, &na);
    assert_int_equal(vx[2], HTKV_AUTH_CIPHER_XCHACHA20POLY1305);
    assert_int_equal(va[2], HTKV_AUTH_CIPHER_AES256GCM);
    free(vx);
    free(va);
    htkv_auth_close(g);
    htkv_auth_close(x);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_auth_storage_user_record_tamper_detected, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_storage_moved_blob_rejected, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_storage_key_record_tamper_detected, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_storage_meta_tamper_detected, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_storage_no_plaintext_on_disk, af_setup,
                                        af_teardown),
        cmocka_unit_test_setup_teardown(test_auth_storage_both_ciphers, af_setup, af_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
