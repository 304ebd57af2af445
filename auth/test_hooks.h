/*
 * test_hooks.h - figures the tests read from an auth handle; not part of the public API.
 */
#ifndef HTKV_AUTH_TEST_HOOKS_H
#define HTKV_AUTH_TEST_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include <htkv/auth.h>

/* Argon2 slots of the handle (the bound on concurrent runs). */
unsigned htkv_auth_test_hash_slots(htkv_auth *a);
/* Most Argon2 runs seen in flight at once since open. */
unsigned htkv_auth_test_hash_peak(htkv_auth *a);
/* Argon2 runs completed since open. */
unsigned long long htkv_auth_test_hash_runs(htkv_auth *a);
/* The module's Argon2id v1.3 call (argon2_ctx), for the known-answer tests. 0 or < 0. */
int htkv_auth_test_argon2id(uint32_t iterations, uint32_t memory_kib, uint32_t lanes,
                            const void *pw, size_t pw_len, const void *salt, size_t salt_len,
                            const void *secret, size_t secret_len, const void *ad, size_t ad_len,
                            unsigned char *out, size_t out_len);
/* Rewrite the checksum of a HTKV_AUTH_TOKEN_LEN-character token so that it is well formed. */
void htkv_auth_test_token_fix_checksum(char *token);
/*
 * Let the next rotation make only @p writes writes (auth/meta writes and re-seals), then fail
 * with -EIO as if the process had died there; -1 = no limit (the default).
 */
void htkv_auth_test_rotation_budget(htkv_auth *a, long writes);
/* Argon2 costs, with a number of users (census) or 1 (one user's hash) or 0 (dummy costs). */
struct htkv_auth_test_costs {
    uint32_t memory_kib;
    uint32_t iterations;
    uint32_t lanes;
    uint64_t users;
};
/* The costs the dummy verification of @p name would take now (after the census refresh that
 * verify_password does first). 0 or the refresh's error. */
int htkv_auth_test_dummy_costs(htkv_auth *a, const char *name, struct htkv_auth_test_costs *out);
/* The census as the handle sees it (all buckets merged, ascending): up to @p cap sets into
 * @p out, *count = number of sets. 0 or the refresh's error. */
int htkv_auth_test_census(htkv_auth *a, struct htkv_auth_test_costs *out, size_t cap,
                          size_t *count);
/* The costs of the hash stored for user @p user_id. 0; -EINVAL; HTKV_ENOTFOUND; HTKV_ECORRUPT. */
int htkv_auth_test_user_costs(htkv_auth *a, const char *user_id, struct htkv_auth_test_costs *out);
/* Make every transaction of the calling thread pause @p us microseconds between preparing its
 * batch and writing it (widens race windows in tests); 0 = no pause. */
void htkv_auth_test_txn_delay(long us);

#endif
