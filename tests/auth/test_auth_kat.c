/*
 * test_auth_kat.c - Argon2id known answers (STYLE S7.5) through the module's own Argon2 call, and
 * the module's hash/verify path at the default costs.
 *
 * Vectors: libargon2's own test suite (phc-winner-argon2, src/test.c, "Test Argon2id version
 * number: 13": password "password", salt "somesalt", 32-byte tag, m = 2^k KiB) and RFC 9106
 * section 5.3 (Argon2id with secret and associated data). Each was checked against libargon2's
 * argon2id_hash_raw() and against the published values before being written here.
 */
#include "tests/auth/auth_fixture.h"

struct kat {
    uint32_t t, m_log2, p;
    const char *pw, *salt, *hex;
};

/* phc-winner-argon2 src/test.c, Argon2id, version 0x13. */
static const struct kat libargon2_vectors[] = {
    { 2, 16, 1, "password", "somesalt",
      "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7" },
    { 2, 18, 1, "password", "somesalt",
      "78fe1ec91fb3aa5657d72e710854e4c3d9b9198c742f9616c2f085bed95b2e8c" },
    { 2, 8, 1, "password", "somesalt",
      "9dfeb910e80bad0311fee20f9c0e2b12c17987b4cac90c2ef54d5b3021c68bfe" },
    { 2, 8, 2, "password", "somesalt",
      "6d093c501fd5999645e0ea3bf620d7b8be7fd2db59c20d9fff9539da2bf57037" },
    { 1, 16, 1, "password", "somesalt",
      "f6a5adc1ba723dddef9b5ac1d464e180fcd9dffc9d1cbf76cca2fed795d9ca98" },
    { 4, 16, 1, "password", "somesalt",
      "9025d48e68ef7395cca9079da4c4ec3affb3c8911fe4f86d1a2520856f63172c" },
    { 2, 16, 1, "differentpassword", "somesalt",
      "0b84d652cf6b0c4beaef0dfe278ba6a80df6696281d7e0d2891b817d8c458fde" },
    { 2, 16, 1, "password", "diffsalt",
      "bdf32b05ccc42eb15d58fd19b1f856b113da1e9a5874fdcc544308565aa8141c" },
};

static void
to_hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        snprintf(out + 2 * i, 3, "%02x", in[i]);
    }
}

/* Goal: the module's Argon2id matches the reference suite. Method: each vector, compare hex. */
static void
test_auth_kat_libargon2_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(libargon2_vectors) / sizeof(libargon2_vectors[0]); i++) {
        const struct kat *v = &libargon2_vectors[i];
        unsigned char out[32];
        char hex[65];
        assert_int_equal(htkv_auth_test_argon2id(v->t, 1u << v->m_log2, v->p, v->pw, strlen(v->pw),
                                                 v->salt, strlen(v->salt), NULL, 0, NULL, 0, out,
                                                 sizeof(out)),
                         0);
        to_hex(out, sizeof(out), hex);
        if (strcmp(hex, v->hex) != 0) {
            fail_msg("vector %zu (t=%u m=2^%u p=%u): got %s want %s", i, v->t, v->m_log2, v->p, hex,
                     v->hex);
        }
    }
}

/* Goal: RFC 9106 section 5.3 Argon2id. Method: P=01x32, S=02x16, K=03x8, X=04x12, m=32 t=3 p=4. */
static void
test_auth_kat_rfc9106_argon2id(void **state)
{
    (void)state;
    unsigned char pw[32], salt[16], secret[8], ad[12], out[32];
    memset(pw, 0x01, sizeof(pw));
    memset(salt, 0x02, sizeof(salt));
    memset(secret, 0x03, sizeof(secret));
    memset(ad, 0x04, sizeof(ad));
    assert_int_equal(htkv_auth_test_argon2id(3, 32, 4, pw, sizeof(pw), salt, sizeof(salt), secret,
                                             sizeof(secret), ad, sizeof(ad), out, sizeof(out)),
                     0);
    char hex[65];
    to_hex(out, sizeof(out), hex);
    assert_string_equal(hex, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659");
}

/* Goal: bad Argon2 parameters are errors, not crashes. */
static void
test_auth_kat_bad_parameters(void **state)
{
    (void)state;
    unsigned char out[32];
    /* Salt below libargon2's 8-byte minimum, memory below 8 KiB per lane, no passes. */
    assert_true(htkv_auth_test_argon2id(1, 64, 1, "pw", 2, "short", 5, NULL, 0, NULL, 0, out,
                                        sizeof(out)) < 0);
    assert_true(htkv_auth_test_argon2id(1, 8, 2, "pw", 2, "somesalt", 8, NULL, 0, NULL, 0, out,
                                        sizeof(out)) < 0);
    assert_true(htkv_auth_test_argon2id(0, 64, 1, "pw", 2, "somesalt", 8, NULL, 0, NULL, 0, out,
                                        sizeof(out)) < 0);
}

/* Goal: the module hashes at the default costs and verifies in constant time. */
static void
test_auth_kat_default_cost_round_trip(void **state)
{
    struct af *f = af_create("auth-kat");
    (void)state;
    htkv_auth *def;
    assert_int_equal(htkv_auth_open(f->db, f->key, &def), 0);
    assert_int_equal(htkv_auth_create_user(def, "kat", "password", 8, NULL), 0);
    assert_int_equal(htkv_auth_verify_password(def, "kat", "password", 8, NULL), 0);
    assert_int_equal(htkv_auth_verify_password(def, "kat", "passwore", 8, NULL), HTKV_EAUTH);
    htkv_auth_close(def);
    af_destroy(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_kat_libargon2_vectors),
        cmocka_unit_test(test_auth_kat_rfc9106_argon2id),
        cmocka_unit_test(test_auth_kat_bad_parameters),
        cmocka_unit_test(test_auth_kat_default_cost_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
