/*
 * pwhash.h - Argon2id password hashing with a bounded number of concurrent runs (see pwhash.c).
 */
#ifndef HTKV_AUTH_PWHASH_H
#define HTKV_AUTH_PWHASH_H

#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PWHASH_SALT_BYTES 16
#define PWHASH_HASH_BYTES 32
/* Cost bounds accepted in a configuration and in a stored record. 4 GiB = 2^22 KiB. */
#define PWHASH_MEMORY_KIB_MAX (4u * 1024u * 1024u)
#define PWHASH_ITERATIONS_MAX 1024u
#define PWHASH_LANES_MAX 64u

/** An Argon2id hash with the costs and salt that produced it. */
struct pwhash_hash {
    uint32_t memory_kib;
    uint32_t iterations;
    uint32_t lanes;
    unsigned char salt[PWHASH_SALT_BYTES];
    unsigned char hash[PWHASH_HASH_BYTES];
};

/** The hasher of one auth handle. */
struct pwhash {
    sem_t slots;         /* counts free Argon2 slots */
    unsigned slot_count; /* initial value of slots */
    uint32_t memory_kib; /* costs for new hashes (the dummy run's come from the census) */
    uint32_t iterations;
    uint32_t lanes;
    unsigned char dummy_salt[PWHASH_SALT_BYTES];
    unsigned char dummy_hash[PWHASH_HASH_BYTES]; /* random: no password matches it */
    atomic_uint running;                         /* Argon2 runs in progress */
    atomic_uint peak;   /* most runs seen at once (tests check the bound) */
    atomic_ullong runs; /* Argon2 runs completed */
};

/*
 * Argon2id v1.3 of @p pw into @p out: the one place that calls libargon2 (the known-answer tests
 * call it too). secret and ad may be NULL with length 0. 0, -EINVAL or -ENOMEM.
 */
int htkv_pwhash_raw(uint32_t iterations, uint32_t memory_kib, uint32_t lanes, const void *pw,
                    size_t pw_len, const void *salt, size_t salt_len, const void *secret,
                    size_t secret_len, const void *ad, size_t ad_len, unsigned char *out,
                    size_t out_len);
/* True when the costs are within the bounds above and libargon2's (memory >= 8 x lanes). */
bool htkv_pwhash_costs_ok(uint32_t memory_kib, uint32_t iterations, uint32_t lanes);
/* Slots = @p slot_count, or the automatic bound when 0. 0, -EINVAL or -ENOMEM. */
int htkv_pwhash_init(struct pwhash *ph, uint32_t memory_kib, uint32_t iterations, uint32_t lanes,
                     unsigned slot_count);
void htkv_pwhash_fini(struct pwhash *ph);
/* Hash @p pw with a fresh salt and the configured costs. 0, -ENOMEM or -EINVAL. */
int htkv_pwhash_hash(struct pwhash *ph, const void *pw, size_t pw_len, struct pwhash_hash *out);
/* Check @p pw against @p stored with its costs. 0 (match), HTKV_EAUTH, -ENOMEM or -EINVAL. */
int htkv_pwhash_verify(struct pwhash *ph, const void *pw, size_t pw_len,
                       const struct pwhash_hash *stored);
/*
 * Run one verification against the dummy hash with the costs of @p costs (its salt and hash are
 * not used): what checking a stored hash of those costs takes. HTKV_EAUTH, -ENOMEM or -EINVAL.
 * The costs come from htkv_census_dummy_costs() (census.c), which matches the stored users'.
 */
int htkv_pwhash_dummy(struct pwhash *ph, const struct pwhash_hash *costs, const void *pw,
                      size_t pw_len);
/* True when @p h was made with the configured costs (else a successful login rehashes it). */
bool htkv_pwhash_costs_current(const struct pwhash *ph, const struct pwhash_hash *h);

#endif
