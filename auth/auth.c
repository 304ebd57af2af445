/*
 * auth.c - the auth handle: configuration, open and close, master key rotation.
 *
 * Design. Opening copies the given master keys into sodium_malloc memory (reduced to their
 * derived sealing keys and check values, envelope.c), sets up the Argon2 hasher (pwhash.c) and
 * adopts auth/meta, creating it on a fresh store (core.c). A handle is shared by threads; its
 * mutable state is the key ring and the auth/meta state behind one mutex, and the hasher's
 * semaphore.
 *
 * Rotation, as a state machine over auth/meta (each arrow one conditional write):
 *
 *     current=A, from=0 --(rotate: meta_write(B, A))--> current=B, from=A
 *     current=B, from=A --(rotate_scan: re-seal each record sealed with A)--> (same meta)
 *     current=B, from=A --(meta_write(B, none))--> current=B, from=0
 *
 * While "from=A" is recorded, opening needs both keys, so a crash anywhere leaves every record
 * readable. Every batch of every handle checks the auth/meta version (core.c, invariant 1), so
 * after the first arrow nothing sealed with A commits any more, and the scan sees every record
 * that still needs re-sealing.
 *
 * Invariants
 *   1. A handle's key ring holds every key named by auth/meta as current or rotating-from.
 *   2. Only one rotation runs per handle (rotate_lock); a rotation by another handle makes this
 *      one's auth/meta write conflict instead of overwriting it.
 *   3. Master key bytes are never copied outside sodium_malloc memory and stack copies are wiped.
 */
#include "auth/core.h"

#include <sodium.h>

void
htkv_auth_config_init(htkv_auth_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    memset(cfg, 0, sizeof(*cfg));
    cfg->master_key_id = 1;
    cfg->argon2_memory_kib = HTKV_AUTH_ARGON2_MEMORY_KIB_DEFAULT;
    cfg->argon2_iterations = HTKV_AUTH_ARGON2_ITERATIONS_DEFAULT;
    cfg->argon2_lanes = HTKV_AUTH_ARGON2_LANES_DEFAULT;
    cfg->cipher = HTKV_AUTH_CIPHER_AUTO;
}

int
htkv_auth_generate_key(unsigned char *key)
{
    if (key == NULL) {
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        return -EIO;
    }
    randombytes_buf(key, HTKV_AUTH_KEY_BYTES);
    return 0;
}

int
htkv_auth_open(htkv_db *db, const unsigned char *master_key, htkv_auth **out)
{
    htkv_auth_config cfg;
    htkv_auth_config_init(&cfg);
    cfg.master_key = master_key;
    return htkv_auth_open_with(db, &cfg, out);
}

/* Check a configuration; resolve the cipher into *cipher. 0, -EINVAL or -ENOTSUP. */
static int
config_check(const htkv_auth_config *cfg, int *cipher)
{
    if (cfg->master_key == NULL || cfg->master_key_id == 0) {
        return -EINVAL;
    }
    if (cfg->previous_key != NULL &&
        (cfg->previous_key_id == 0 || cfg->previous_key_id == cfg->master_key_id)) {
        return -EINVAL;
    }
    if (!htkv_pwhash_costs_ok(cfg->argon2_memory_kib, cfg->argon2_iterations, cfg->argon2_lanes)) {
        return -EINVAL;
    }
    switch (cfg->cipher) {
    case HTKV_AUTH_CIPHER_AUTO:
        *cipher = htkv_envelope_aes_available() ? ENVELOPE_AES256GCM : ENVELOPE_XCHACHA20POLY1305;
        return 0;
    case HTKV_AUTH_CIPHER_AES256GCM:
        *cipher = ENVELOPE_AES256GCM;
        return htkv_envelope_aes_available() ? 0 : -ENOTSUP;
    case HTKV_AUTH_CIPHER_XCHACHA20POLY1305:
        *cipher = ENVELOPE_XCHACHA20POLY1305;
        return 0;
    default:
        return -EINVAL;
    }
}

/* Add the keys of @p cfg to the ring. */
static int
open_keys(struct htkv_auth *a, const htkv_auth_config *cfg)
{
    int rc = htkv_envelope_key_create(cfg->master_key, cfg->master_key_id, &a->keys[0]);
    if (rc != 0) {
        return rc;
    }
    a->key_count = 1;
    if (cfg->previous_key != NULL) {
        rc = htkv_envelope_key_create(cfg->previous_key, cfg->previous_key_id, &a->keys[1]);
        if (rc != 0) {
            return rc;
        }
        a->key_count = 2;
    }
    return 0;
}

int
htkv_auth_open_with(htkv_db *db, const htkv_auth_config *cfg, htkv_auth **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    int cipher = 0;
    if (db == NULL || cfg == NULL || out == NULL) {
        return -EINVAL;
    }
    if (sodium_init() < 0) {
        return -EIO;
    }
    int rc = config_check(cfg, &cipher);
    if (rc != 0) {
        return rc;
    }
    struct htkv_auth *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return -ENOMEM;
    }
    a->db = db;
    a->cipher = cipher;
    a->clock_fn = cfg->clock_fn;
    a->clock_ctx = cfg->clock_ctx;
    atomic_init(&a->test_rotation_budget, -1);
    atomic_init(&a->rehash_off, false);
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->rotate_lock, NULL);
    rc = htkv_census_cache_init(&a->census);
    if (rc != 0) {
        pthread_mutex_destroy(&a->rotate_lock);
        pthread_mutex_destroy(&a->lock);
        free(a);
        return rc;
    }
    a->token_root = sodium_malloc(32);
    a->token_key = sodium_malloc(32);
    a->census_key = sodium_malloc(32);
    if (a->token_root == NULL || a->token_key == NULL || a->census_key == NULL) {
        rc = -ENOMEM;
        goto fail_keys;
    }
    rc = open_keys(a, cfg);
    if (rc != 0) {
        goto fail_keys;
    }
    rc = htkv_pwhash_init(&a->pw, cfg->argon2_memory_kib, cfg->argon2_iterations, cfg->argon2_lanes,
                          cfg->max_concurrent_hashes);
    if (rc != 0) {
        goto fail_keys;
    }
    rc = htkv_core_meta_init(a, a->keys[0]);
    if (rc != 0) {
        goto fail_pwhash;
    }
    HTKV_ASSERT(a->current != NULL);
    HTKV_ASSERT(a->meta_version != 0);
    *out = a;
    return 0;

fail_pwhash:
    htkv_pwhash_fini(&a->pw);
fail_keys:
    for (unsigned i = 0; i < a->key_count; i++) {
        htkv_envelope_key_destroy(a->keys[i]);
    }
    sodium_free(a->token_root);
    sodium_free(a->token_key);
    sodium_free(a->census_key);
    htkv_census_cache_fini(&a->census);
    pthread_mutex_destroy(&a->rotate_lock);
    pthread_mutex_destroy(&a->lock);
    free(a);
    return rc;
}

void
htkv_auth_close(htkv_auth *auth)
{
    if (auth == NULL) {
        return;
    }
    htkv_pwhash_fini(&auth->pw);
    for (unsigned i = 0; i < auth->key_count; i++) {
        htkv_envelope_key_destroy(auth->keys[i]);
    }
    sodium_free(auth->token_root);
    sodium_free(auth->token_key);
    sodium_free(auth->census_key);
    htkv_census_cache_fini(&auth->census);
    pthread_mutex_destroy(&auth->rotate_lock);
    pthread_mutex_destroy(&auth->lock);
    free(auth);
}

int
htkv_auth_cipher(const htkv_auth *auth)
{
    return auth == NULL ? -EINVAL : auth->cipher;
}

void
htkv_auth_free(void *p)
{
    free(p);
}

/* ---- rotation ------------------------------------------------------------------------------- */

struct reseal_ctx {
    const char *rkey;
    size_t rkey_len;
    int kind;
};

/* Re-seal one record with the snapshot's key unless it already is. */
static int
reseal_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct reseal_ctx *c = arg;
    HTKV_ASSERT(c->kind != CORE_KIND_META);
    HTKV_ASSERT(s->key != NULL);
    struct core_rec rec;
    int rc = htkv_core_load(a, c->rkey, c->rkey_len, &rec);
    if (rc == HTKV_ENOTFOUND) {
        return CORE_TXN_NOOP; /* deleted meanwhile */
    }
    if (rc != 0) {
        return rc;
    }
    uint32_t id = 0;
    rc = htkv_envelope_key_id(rec.val, rec.len, CORE_HEADER_BYTES, &id);
    if (rc == 0 && id == s->key->id) {
        rc = CORE_TXN_NOOP;
    }
    unsigned char *body = NULL;
    size_t body_len = 0;
    if (rc == 0) {
        rc = htkv_core_open(a, c->rkey, c->rkey_len, &rec, c->kind, &body, &body_len, NULL);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, c->rkey, c->rkey_len, rec.version);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, c->kind, c->rkey, c->rkey_len, body, body_len);
    }
    htkv_codec_free(body, body_len);
    htkv_core_rec_free(&rec);
    return rc;
}

/* Spend one write of the test budget: -EIO when it is exhausted (a simulated crash). */
static int
rotation_budget_take(struct htkv_auth *a)
{
    long left = atomic_load(&a->test_rotation_budget);
    while (left > 0 && !atomic_compare_exchange_weak(&a->test_rotation_budget, &left, left - 1)) {
    }
    return left == 0 ? -EIO : 0;
}

static int
reseal(struct htkv_auth *a, const char *rkey, size_t rkey_len, int kind)
{
    struct reseal_ctx c = { .rkey = rkey, .rkey_len = rkey_len, .kind = kind };
    int rc = rotation_budget_take(a);
    return rc != 0 ? rc : htkv_core_txn(a, reseal_txn, &c);
}

/* Write auth/meta for a rotation step (spends test budget like a re-seal). */
static int
rotate_meta_write(struct htkv_auth *a, const struct envelope_key *current,
                  const struct envelope_key *from)
{
    int rc = rotation_budget_take(a);
    return rc != 0 ? rc : htkv_core_meta_write(a, current, from);
}

/* Re-seal a user, its name entry, its key list and its keys. */
static int
rotate_user(struct htkv_auth *a, const unsigned char *id)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_user(rkey, id);
    int rc = reseal(a, rkey, rkey_len, CORE_KIND_USER);
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_user u;
    if (rc == 0) {
        rc = htkv_core_get(a, rkey, rkey_len, CORE_KIND_USER, NULL, &body, &body_len, NULL);
    }
    if (rc == HTKV_ENOTFOUND) {
        return 0; /* deleted meanwhile, with its name and keys */
    }
    if (rc == 0) {
        rc = htkv_codec_user_decode(body, body_len, &u);
    }
    if (rc == 0) {
        char folded[HTKV_AUTH_NAME_MAX];
        htkv_codec_name_fold(u.name, u.name_len, folded);
        rkey_len = htkv_core_rkey_name(rkey, folded, u.name_len);
        rc = reseal(a, rkey, rkey_len, CORE_KIND_NAME);
    }
    htkv_codec_free(body, body_len);
    sodium_memzero(&u, sizeof(u));
    body = NULL;
    body_len = 0;
    rkey_len = htkv_core_rkey_user_keys(rkey, id);
    if (rc == 0) {
        rc = reseal(a, rkey, rkey_len, CORE_KIND_USER_KEYS);
    }
    uint64_t ver;
    struct codec_list keys;
    if (rc == 0) {
        rc = htkv_core_list_read(a, rkey, rkey_len, CORE_KIND_USER_KEYS, &ver, &body, &body_len,
                                 &keys);
    }
    for (uint32_t i = 0; rc == 0 && i < keys.count; i++) {
        char akey[CORE_RKEY_MAX];
        size_t akey_len = htkv_core_rkey_apikey(akey, keys.ids + (size_t)i * CODEC_ID_BYTES);
        rc = reseal(a, akey, akey_len, CORE_KIND_APIKEY);
    }
    htkv_codec_free(body, body_len);
    return rc;
}

/* Re-seal every record reachable from the user lists, and the censuses, with the current key. */
static int
rotate_scan(struct htkv_auth *a)
{
    int rc = 0;
    for (unsigned bucket = 0; bucket < CORE_USER_LISTS && rc == 0; bucket++) {
        unsigned char probe[CODEC_ID_BYTES] = { (unsigned char)(bucket << 4) };
        char lkey[CORE_RKEY_MAX];
        size_t lkey_len = htkv_core_rkey_census(lkey, probe);
        rc = reseal(a, lkey, lkey_len, CORE_KIND_CENSUS);
        lkey_len = htkv_core_rkey_user_list(lkey, probe);
        if (rc == 0) {
            rc = reseal(a, lkey, lkey_len, CORE_KIND_USER_LIST);
        }
        uint64_t ver;
        unsigned char *body = NULL;
        size_t body_len = 0;
        struct codec_list list;
        if (rc == 0) {
            rc = htkv_core_list_read(a, lkey, lkey_len, CORE_KIND_USER_LIST, &ver, &body, &body_len,
                                     &list);
        }
        for (uint32_t i = 0; rc == 0 && i < list.count; i++) {
            rc = rotate_user(a, list.ids + (size_t)i * CODEC_ID_BYTES);
        }
        htkv_codec_free(body, body_len);
    }
    return rc;
}

/* Finish the rotation recorded in auth/meta, if any: re-seal everything, then clear it. */
static int
rotate_finish(struct htkv_auth *a)
{
    pthread_mutex_lock(&a->lock);
    uint32_t from = a->rotating_from;
    const struct envelope_key *cur = a->current;
    pthread_mutex_unlock(&a->lock);
    if (from == 0) {
        return 0;
    }
    int rc = rotate_scan(a);
    if (rc == 0) {
        rc = rotate_meta_write(a, cur, NULL);
    }
    return rc;
}

/* Find @p nk's id in the ring (same key required) or add @p nk; *use receives the entry. */
static int
rotate_ring_add(struct htkv_auth *a, struct envelope_key *nk, const struct envelope_key **use)
{
    HTKV_ASSERT(nk != NULL);
    int rc = 0;
    *use = NULL;
    pthread_mutex_lock(&a->lock);
    HTKV_ASSERT(a->key_count >= 1 && a->key_count <= CORE_KEYRING_MAX);
    for (unsigned i = 0; i < a->key_count; i++) {
        if (a->keys[i]->id == nk->id) {
            *use = a->keys[i];
        }
    }
    if (*use != NULL) {
        rc = sodium_memcmp((*use)->check, nk->check, ENVELOPE_CHECK_BYTES) == 0 ? 0 : HTKV_EAUTH;
        if (rc != 0) {
            *use = NULL;
        }
    } else if (a->key_count == CORE_KEYRING_MAX) {
        rc = HTKV_EFULL;
    } else {
        a->keys[a->key_count++] = nk;
        *use = nk;
        nk = NULL;
    }
    pthread_mutex_unlock(&a->lock);
    htkv_envelope_key_destroy(nk); /* a duplicate of a ring entry, or refused */
    return rc;
}

int
htkv_auth_rotate_master_key(htkv_auth *auth, const unsigned char *new_key, uint32_t new_key_id)
{
    if (auth == NULL || new_key == NULL || new_key_id == 0) {
        return -EINVAL;
    }
    pthread_mutex_lock(&auth->rotate_lock);
    struct envelope_key *nk = NULL;
    const struct envelope_key *target = NULL;
    int rc = htkv_core_meta_refresh(auth);
    if (rc == 0) {
        rc = htkv_envelope_key_create(new_key, new_key_id, &nk);
    }
    if (rc == 0) {
        rc = rotate_ring_add(auth, nk, &target);
    }
    /* An unfinished rotation is completed first: its old key must not be forgotten. */
    if (rc == 0) {
        rc = rotate_finish(auth);
    }
    pthread_mutex_lock(&auth->lock);
    const struct envelope_key *cur = auth->current;
    pthread_mutex_unlock(&auth->lock);
    if (rc == 0 && target != cur) {
        rc = rotate_meta_write(auth, target, cur);
        if (rc == 0) {
            rc = rotate_finish(auth);
        }
    }
    pthread_mutex_unlock(&auth->rotate_lock);
    return rc;
}

/* ---- test hooks ----------------------------------------------------------------------------- */

unsigned
htkv_auth_test_hash_slots(htkv_auth *a)
{
    return a->pw.slot_count;
}

unsigned
htkv_auth_test_hash_peak(htkv_auth *a)
{
    return atomic_load(&a->pw.peak);
}

unsigned long long
htkv_auth_test_hash_runs(htkv_auth *a)
{
    return atomic_load(&a->pw.runs);
}

int
htkv_auth_test_argon2id(uint32_t iterations, uint32_t memory_kib, uint32_t lanes, const void *pw,
                        size_t pw_len, const void *salt, size_t salt_len, const void *secret,
                        size_t secret_len, const void *ad, size_t ad_len, unsigned char *out,
                        size_t out_len)
{
    return htkv_pwhash_raw(iterations, memory_kib, lanes, pw, pw_len, salt, salt_len, secret,
                           secret_len, ad, ad_len, out, out_len);
}

void
htkv_auth_test_rotation_budget(htkv_auth *a, long writes)
{
    atomic_store(&a->test_rotation_budget, writes);
}
