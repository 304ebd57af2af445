/*
 * pwhash.c - Argon2id password hashing (libargon2) behind a counting semaphore.
 *
 * Design. A hash is Argon2id (argon2_ctx(), version 0x13, no secret, no associated data) over the
 * password with a 16-byte random salt, 32 bytes out; the costs travel with the hash (struct
 * pwhash_hash) so that changing the configuration never breaks verification of older hashes. Each
 * Argon2 run fills memory_kib of memory, so an attacker who sends many login attempts at once could
 * make the process allocate without bound; the semaphore caps the runs in flight per handle (by
 * default at the number of online CPUs, and at 1 GiB of Argon2 memory), further callers wait their
 * turn. An unknown user runs the same computation against a random dummy hash, so that it takes as
 * long and fails the same way as a wrong password; its costs are those of the stored users, not
 * the configured ones (census.c), since stored hashes keep the costs they were made with until
 * a successful login rehashes them with the configured costs (users.c).
 *
 * Invariants
 *   1. At most slot_count Argon2 runs of one handle execute at once (running <= slot_count).
 *   2. Comparison of hashes is constant-time (sodium_memcmp).
 *   3. Every derived hash is wiped from the stack before return.
 *   4. Costs read from a record are checked (htkv_pwhash_costs_ok) before any run: a record is
 *      authenticated, but bounds keep a bug elsewhere from asking for terabytes.
 */
#include "auth/core.h"

#include <argon2.h>
#include <sodium.h>
#include <unistd.h>

/* Budget of Argon2 memory for the automatic slot count: 1 GiB = 2^20 KiB (53 runs at 19 MiB). */
#define PWHASH_AUTO_BUDGET_KIB (1024u * 1024u)

bool
htkv_pwhash_costs_ok(uint32_t memory_kib, uint32_t iterations, uint32_t lanes)
{
    if (lanes < 1 || lanes > PWHASH_LANES_MAX) {
        return false;
    }
    if (iterations < 1 || iterations > PWHASH_ITERATIONS_MAX) {
        return false;
    }
    /* libargon2 needs 8 blocks of 1 KiB per lane (ARGON2_MIN_MEMORY = 2 x 4 sync points). */
    return memory_kib >= 8u * lanes && memory_kib <= PWHASH_MEMORY_KIB_MAX;
}

int
htkv_pwhash_init(struct pwhash *ph, uint32_t memory_kib, uint32_t iterations, uint32_t lanes,
                 unsigned slot_count)
{
    HTKV_ASSERT(ph != NULL);
    if (!htkv_pwhash_costs_ok(memory_kib, iterations, lanes)) {
        return -EINVAL;
    }
    if (slot_count == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned by_mem = PWHASH_AUTO_BUDGET_KIB / memory_kib;
        slot_count = cpus > 0 ? (unsigned)cpus : 1;
        if (slot_count > by_mem) {
            slot_count = by_mem;
        }
        if (slot_count == 0) {
            slot_count = 1;
        }
    }
    if (sem_init(&ph->slots, 0, slot_count) != 0) {
        return -errno;
    }
    ph->slot_count = slot_count;
    ph->memory_kib = memory_kib;
    ph->iterations = iterations;
    ph->lanes = lanes;
    randombytes_buf(ph->dummy_salt, sizeof(ph->dummy_salt));
    randombytes_buf(ph->dummy_hash, sizeof(ph->dummy_hash));
    atomic_init(&ph->running, 0);
    atomic_init(&ph->peak, 0);
    atomic_init(&ph->runs, 0);
    return 0;
}

void
htkv_pwhash_fini(struct pwhash *ph)
{
    if (ph == NULL) {
        return;
    }
    HTKV_ASSERT(atomic_load(&ph->running) == 0);
    sem_destroy(&ph->slots);
    sodium_memzero(ph->dummy_hash, sizeof(ph->dummy_hash));
}

int
htkv_pwhash_raw(uint32_t iterations, uint32_t memory_kib, uint32_t lanes, const void *pw,
                size_t pw_len, const void *salt, size_t salt_len, const void *secret,
                size_t secret_len, const void *ad, size_t ad_len, unsigned char *out,
                size_t out_len)
{
    HTKV_ASSERT(out != NULL);
    if (pw_len > UINT32_MAX || salt_len > UINT32_MAX || secret_len > UINT32_MAX ||
        ad_len > UINT32_MAX || out_len > UINT32_MAX) {
        return -EINVAL;
    }
    /* libargon2 takes non-const pointers but writes only with ARGON2_FLAG_CLEAR_*, unset here. */
    argon2_context ctx = {
        .out = out,
        .outlen = (uint32_t)out_len,
        .pwd = (uint8_t *)(uintptr_t)pw,
        .pwdlen = (uint32_t)pw_len,
        .salt = (uint8_t *)(uintptr_t)salt,
        .saltlen = (uint32_t)salt_len,
        .secret = (uint8_t *)(uintptr_t)secret,
        .secretlen = (uint32_t)secret_len,
        .ad = (uint8_t *)(uintptr_t)ad,
        .adlen = (uint32_t)ad_len,
        .t_cost = iterations,
        .m_cost = memory_kib,
        .lanes = lanes,
        .threads = lanes,
        .version = ARGON2_VERSION_13,
        .allocate_cbk = NULL,
        .free_cbk = NULL,
        .flags = ARGON2_DEFAULT_FLAGS,
    };
    int rc = argon2_ctx(&ctx, Argon2_id);
    if (rc == ARGON2_OK) {
        return 0;
    }
    return rc == ARGON2_MEMORY_ALLOCATION_ERROR ? -ENOMEM : -EINVAL;
}

/* Run Argon2id with @p costs over @p pw into @p out (32 bytes), holding one slot meanwhile. */
static int
pwhash_run(struct pwhash *ph, const struct pwhash_hash *costs, const void *pw, size_t pw_len,
           unsigned char *out)
{
    HTKV_ASSERT(pw_len <= HTKV_AUTH_PASSWORD_MAX);
    HTKV_ASSERT(pw != NULL || pw_len == 0);
    if (!htkv_pwhash_costs_ok(costs->memory_kib, costs->iterations, costs->lanes)) {
        return -EINVAL;
    }
    while (sem_wait(&ph->slots) != 0) {
        HTKV_ASSERT(errno == EINTR);
    }
    unsigned now = atomic_fetch_add(&ph->running, 1) + 1;
    HTKV_ASSERT(now <= ph->slot_count);
    unsigned peak = atomic_load(&ph->peak);
    while (now > peak && !atomic_compare_exchange_weak(&ph->peak, &peak, now)) {
    }
    int rc =
        htkv_pwhash_raw(costs->iterations, costs->memory_kib, costs->lanes, pw, pw_len, costs->salt,
                        PWHASH_SALT_BYTES, NULL, 0, NULL, 0, out, PWHASH_HASH_BYTES);
    atomic_fetch_sub(&ph->running, 1);
    atomic_fetch_add(&ph->runs, 1);
    sem_post(&ph->slots);
    return rc;
}

int
htkv_pwhash_hash(struct pwhash *ph, const void *pw, size_t pw_len, struct pwhash_hash *out)
{
    HTKV_ASSERT(ph != NULL);
    HTKV_ASSERT(out != NULL);
    out->memory_kib = ph->memory_kib;
    out->iterations = ph->iterations;
    out->lanes = ph->lanes;
    randombytes_buf(out->salt, sizeof(out->salt));
    int rc = pwhash_run(ph, out, pw, pw_len, out->hash);
    if (rc != 0) {
        sodium_memzero(out, sizeof(*out));
    }
    return rc;
}

int
htkv_pwhash_verify(struct pwhash *ph, const void *pw, size_t pw_len,
                   const struct pwhash_hash *stored)
{
    HTKV_ASSERT(ph != NULL);
    HTKV_ASSERT(stored != NULL);
    unsigned char got[PWHASH_HASH_BYTES];
    int rc = pwhash_run(ph, stored, pw, pw_len, got);
    if (rc == 0 && sodium_memcmp(got, stored->hash, sizeof(got)) != 0) {
        rc = HTKV_EAUTH;
    }
    sodium_memzero(got, sizeof(got));
    return rc;
}

bool
htkv_pwhash_costs_current(const struct pwhash *ph, const struct pwhash_hash *h)
{
    return h->memory_kib == ph->memory_kib && h->iterations == ph->iterations &&
           h->lanes == ph->lanes;
}

int
htkv_pwhash_dummy(struct pwhash *ph, const struct pwhash_hash *costs, const void *pw, size_t pw_len)
{
    HTKV_ASSERT(ph != NULL);
    HTKV_ASSERT(costs != NULL);
    struct pwhash_hash dummy = {
        .memory_kib = costs->memory_kib,
        .iterations = costs->iterations,
        .lanes = costs->lanes,
    };
    memcpy(dummy.salt, ph->dummy_salt, sizeof(dummy.salt));
    memcpy(dummy.hash, ph->dummy_hash, sizeof(dummy.hash));
    int rc = htkv_pwhash_verify(ph, pw, pw_len, &dummy);
    sodium_memzero(&dummy, sizeof(dummy));
    /* 2^-256 that a password hashes to the random dummy; never let that succeed. */
    return rc == 0 ? HTKV_EAUTH : rc;
}
