/*
 * apikey.c - API keys: issue, authenticate, list, revoke, metadata.
 *
 * Design. A token is "htkv_" | key id (32 hex) | "_" | secret (64 hex = 256 random bits) |
 * checksum (8 hex = the first 4 bytes of BLAKE2b-128 of everything before it). The checksum lets
 * a typo or a truncated paste fail before any lookup. The store keeps only
 * BLAKE2b-256(key = token key, key id || secret): a 256-bit secret needs no slow hash (nobody
 * can guess it, so stretching buys nothing), and a keyed hash means a stolen copy of the store
 * does not even allow an offline check of a guessed token. The token key is derived (crypto_kdf)
 * from a random root that auth/meta keeps sealed under the master key, so rotating the master
 * key keeps every issued token valid.
 *
 *   auth/apikey/<key id>     the key (owner, token hash, times, label, metadata), sealed
 *   auth/user_keys/<user id> ids of the user's keys, sealed; absent when the user has none
 *
 * Issuing checks the owner's record version, so a key is never issued to a user deleted
 * meanwhile. Revoking deletes the key and its list entry, conditional on both as read.
 * Authenticating writes only last_used_at, at most once a minute, conditional on the version it
 * read: it is dropped if the key changed or was revoked since, so it never resurrects a key.
 *
 * Invariants
 *   1. The secret is never stored, logged or kept: it lives on the caller's buffer and on this
 *      module's stack, wiped before return.
 *   2. Hashes are compared with sodium_memcmp (constant time); an unknown key id compares too.
 *   3. A key record names its owner, and the owner's key list names the key, or neither exists.
 */
#include "auth/core.h"

#include <sodium.h>

#define TOKEN_PREFIX "htkv_"
#define TOKEN_ID_OFF 5
#define TOKEN_SEP_OFF (TOKEN_ID_OFF + HTKV_AUTH_ID_LEN)
#define TOKEN_SECRET_OFF (TOKEN_SEP_OFF + 1)
#define TOKEN_CHECK_OFF (TOKEN_SECRET_OFF + 2 * CODEC_SECRET_BYTES)
#define TOKEN_CHECK_BYTES 4
HTKV_STATIC_ASSERT(TOKEN_CHECK_OFF + 2 * TOKEN_CHECK_BYTES == HTKV_AUTH_TOKEN_LEN,
                   "token layout adds up to HTKV_AUTH_TOKEN_LEN");
HTKV_STATIC_ASSERT(sizeof(TOKEN_PREFIX) - 1 == TOKEN_ID_OFF, "prefix length");

/* ---- tokens --------------------------------------------------------------------------------- */

/* Checksum of the first TOKEN_CHECK_OFF characters of @p token, as 8 hex digits. */
static void
token_checksum(const char *token, char *out)
{
    unsigned char h[16];
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, TOKEN_CHECK_OFF, NULL, 0);
    htkv_codec_hex_encode(h, TOKEN_CHECK_BYTES, out);
}

/* Keyed hash of a token: BLAKE2b-256(token key; key id || secret). */
static void
token_hash(struct htkv_auth *a, const unsigned char *id, const unsigned char *secret,
           unsigned char *out)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, a->token_key, 32, CODEC_TOKEN_HASH_BYTES);
    crypto_generichash_update(&st, id, CODEC_ID_BYTES);
    crypto_generichash_update(&st, secret, CODEC_SECRET_BYTES);
    crypto_generichash_final(&st, out, CODEC_TOKEN_HASH_BYTES);
    sodium_memzero(&st, sizeof(st));
}

int
htkv_apikey_token_parse(const char *token, unsigned char *id, unsigned char *secret)
{
    HTKV_ASSERT(token != NULL);
    HTKV_ASSERT(id != NULL && secret != NULL);
    if (strnlen(token, HTKV_AUTH_TOKEN_LEN + 1) != HTKV_AUTH_TOKEN_LEN ||
        memcmp(token, TOKEN_PREFIX, TOKEN_ID_OFF) != 0 || token[TOKEN_SEP_OFF] != '_') {
        return HTKV_EAUTH;
    }
    char check[2 * TOKEN_CHECK_BYTES];
    token_checksum(token, check);
    if (sodium_memcmp(check, token + TOKEN_CHECK_OFF, sizeof(check)) != 0) {
        return HTKV_EAUTH;
    }
    if (htkv_codec_hex_decode(token + TOKEN_ID_OFF, CODEC_ID_BYTES, id) != 0 ||
        htkv_codec_hex_decode(token + TOKEN_SECRET_OFF, CODEC_SECRET_BYTES, secret) != 0) {
        sodium_memzero(secret, CODEC_SECRET_BYTES);
        return HTKV_EAUTH;
    }
    return 0;
}

void
htkv_apikey_token_format(const unsigned char *id, const unsigned char *secret, char *token)
{
    HTKV_ASSERT(id != NULL && secret != NULL);
    memcpy(token, TOKEN_PREFIX, TOKEN_ID_OFF);
    htkv_codec_hex_encode(id, CODEC_ID_BYTES, token + TOKEN_ID_OFF);
    token[TOKEN_SEP_OFF] = '_';
    htkv_codec_hex_encode(secret, CODEC_SECRET_BYTES, token + TOKEN_SECRET_OFF);
    token_checksum(token, token + TOKEN_CHECK_OFF);
    token[HTKV_AUTH_TOKEN_LEN] = '\0';
    HTKV_ASSERT(strlen(token) == HTKV_AUTH_TOKEN_LEN);
}

/* ---- reading -------------------------------------------------------------------------------- */

/* Read key @p id: *body holds the plaintext (free with htkv_codec_free), k views into it. */
static int
key_read(struct htkv_auth *a, const unsigned char *id, uint64_t *version, unsigned char **body,
         size_t *body_len, struct codec_key *k, uint32_t *key_id)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_apikey(rkey, id);
    int rc = htkv_core_get(a, rkey, rkey_len, CORE_KIND_APIKEY, version, body, body_len, key_id);
    if (rc == 0) {
        rc = htkv_codec_key_decode(*body, *body_len, k);
    }
    if (rc == 0 && memcmp(k->id, id, CODEC_ID_BYTES) != 0) {
        rc = HTKV_ECORRUPT;
    }
    if (rc != 0) {
        htkv_codec_free(*body, *body_len);
        *body = NULL;
        *body_len = 0;
        sodium_memzero(k, sizeof(*k));
    }
    return rc;
}

/* ---- issue ---------------------------------------------------------------------------------- */

struct issue_ctx {
    unsigned char user[CODEC_ID_BYTES];
    unsigned char id[CODEC_ID_BYTES];
    unsigned char token_hash[CODEC_TOKEN_HASH_BYTES];
    const char *label;
    size_t label_len;
    const void *meta;
    size_t meta_len;
    int64_t expires_at;
    struct codec_key key; /* the record written, for the caller */
    uint32_t key_id;
};

static int
issue_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct issue_ctx *c = arg;
    HTKV_ASSERT(c->label != NULL && c->label_len <= HTKV_AUTH_LABEL_MAX);
    HTKV_ASSERT(c->meta != NULL || c->meta_len == 0);
    char ukey[CORE_RKEY_MAX], kkey[CORE_RKEY_MAX], akey[CORE_RKEY_MAX];
    size_t ukey_len = htkv_core_rkey_user(ukey, c->user);
    size_t kkey_len = htkv_core_rkey_user_keys(kkey, c->user);
    size_t akey_len = htkv_core_rkey_apikey(akey, c->id);
    struct core_rec user;
    int rc = htkv_core_load(a, ukey, ukey_len, &user);
    if (rc != 0) {
        return rc; /* HTKV_ENOTFOUND: no such user (any more) */
    }
    uint64_t uver = user.version;
    htkv_core_rec_free(&user);

    uint64_t kver;
    struct codec_list keys;
    unsigned char *kbody = NULL, *newlist = NULL, *abody = NULL;
    size_t kbody_len = 0, newlist_len = 0, abody_len = 0;
    rc = htkv_core_list_read(a, kkey, kkey_len, CORE_KIND_USER_KEYS, &kver, &kbody, &kbody_len,
                             &keys);
    if (rc == 0 && keys.count >= HTKV_AUTH_KEYS_PER_USER_MAX) {
        rc = HTKV_EFULL;
    }
    if (rc == 0) {
        rc = htkv_codec_list_encode(&keys, c->id, NULL, &newlist, &newlist_len);
    }
    struct codec_key *k = &c->key;
    memset(k, 0, sizeof(*k));
    memcpy(k->id, c->id, CODEC_ID_BYTES);
    memcpy(k->user, c->user, CODEC_ID_BYTES);
    memcpy(k->token_hash, c->token_hash, CODEC_TOKEN_HASH_BYTES);
    k->created_at = s->now;
    k->expires_at = c->expires_at;
    memcpy(k->label, c->label, c->label_len);
    k->label_len = c->label_len;
    k->meta = c->meta;
    k->meta_len = c->meta_len;
    c->key_id = s->key->id;
    if (rc == 0) {
        rc = htkv_codec_key_encode(k, &abody, &abody_len);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, ukey, ukey_len, uver);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, kkey, kkey_len, kver);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, akey, akey_len, 0);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_APIKEY, akey, akey_len, abody, abody_len);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_USER_KEYS, kkey, kkey_len, newlist, newlist_len);
    }
    htkv_codec_free(kbody, kbody_len);
    htkv_codec_free(newlist, newlist_len);
    htkv_codec_free(abody, abody_len);
    return rc;
}

int
htkv_auth_create_api_key(htkv_auth *auth, const char *user_id, const char *label, char *token,
                         struct htkv_auth_api_key *out)
{
    return htkv_auth_create_api_key_with_metadata(auth, user_id, label, NULL, 0, 0, token, out);
}

int
htkv_auth_create_api_key_with_metadata(htkv_auth *auth, const char *user_id, const char *label,
                                       const void *metadata, size_t metadata_len,
                                       int64_t expires_at, char *token,
                                       struct htkv_auth_api_key *out)
{
    struct issue_ctx c;
    memset(&c, 0, sizeof(c));
    if (token != NULL) {
        sodium_memzero(token, HTKV_AUTH_TOKEN_SIZE);
    }
    if (auth == NULL || token == NULL || htkv_codec_id_parse(user_id, c.user) != 0 ||
        (metadata == NULL && metadata_len > 0) || metadata_len > HTKV_AUTH_METADATA_MAX ||
        expires_at < 0 || (expires_at > 0 && expires_at <= htkv_core_now(auth))) {
        return -EINVAL;
    }
    c.label = "";
    if (label != NULL) {
        if (htkv_codec_name_check(label, HTKV_AUTH_LABEL_MAX, true, &c.label_len) != 0) {
            return -EINVAL;
        }
        c.label = label;
    }
    c.meta = metadata;
    c.meta_len = metadata_len;
    c.expires_at = expires_at;
    unsigned char secret[CODEC_SECRET_BYTES];
    randombytes_buf(c.id, sizeof(c.id));
    randombytes_buf(secret, sizeof(secret));
    token_hash(auth, c.id, secret, c.token_hash);
    int rc = htkv_core_txn(auth, issue_txn, &c);
    if (rc == 0) {
        htkv_apikey_token_format(c.id, secret, token);
        if (out != NULL) {
            htkv_core_key_out(&c.key, c.key_id, out);
        }
    }
    sodium_memzero(secret, sizeof(secret));
    sodium_memzero(&c, sizeof(c));
    return rc;
}

/* ---- authenticate --------------------------------------------------------------------------- */

/*
 * Record that key @p k (read at @p version) was used now: one conditional write, no retry. It is
 * dropped when the key changed or was deleted since it was read. Returns the write's result.
 */
static int
key_touch(struct htkv_auth *a, struct codec_key *k, uint64_t version)
{
    HTKV_ASSERT(version != 0);
    HTKV_ASSERT(k != NULL);
    struct core_snap s;
    htkv_core_snap(a, &s);
    char akey[CORE_RKEY_MAX], mkey[CORE_RKEY_MAX];
    size_t akey_len = htkv_core_rkey_apikey(akey, k->id);
    size_t mkey_len = htkv_core_rkey_meta(mkey);
    int64_t last = k->last_used_at;
    k->last_used_at = s.now;
    unsigned char *body = NULL;
    size_t body_len = 0;
    htkv_batch *b = NULL;
    int rc = htkv_codec_key_encode(k, &body, &body_len);
    if (rc == 0) {
        rc = htkv_batch_create(&b);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, akey, akey_len, version);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, mkey, mkey_len, s.meta_version);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, &s, b, CORE_KIND_APIKEY, akey, akey_len, body, body_len);
    }
    if (rc == 0) {
        rc = htkv_write(a->db, b);
    }
    if (rc != 0) {
        k->last_used_at = last;
    }
    htkv_batch_destroy(b);
    htkv_codec_free(body, body_len);
    return rc;
}

int
htkv_auth_authenticate_api_key(htkv_auth *auth, const char *token, struct htkv_auth_api_key *out)
{
    if (auth == NULL || token == NULL) {
        return -EINVAL;
    }
    unsigned char id[CODEC_ID_BYTES], secret[CODEC_SECRET_BYTES];
    unsigned char want[CODEC_TOKEN_HASH_BYTES];
    int rc = htkv_apikey_token_parse(token, id, secret);
    if (rc != 0) {
        return rc;
    }
    token_hash(auth, id, secret, want);
    sodium_memzero(secret, sizeof(secret));

    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_key k;
    uint64_t version = 0;
    uint32_t key_id = 0;
    rc = key_read(auth, id, &version, &body, &body_len, &k, &key_id);
    if (rc == HTKV_ENOTFOUND) {
        /* Compare anyway, against a hash nothing matches, so a miss costs what a hit costs. */
        unsigned char none[CODEC_TOKEN_HASH_BYTES];
        randombytes_buf(none, sizeof(none));
        int same = sodium_memcmp(want, none, sizeof(want));
        (void)same; /* a miss is a miss whatever the comparison says */
        rc = HTKV_EAUTH;
    } else if (rc == 0) {
        if (sodium_memcmp(want, k.token_hash, sizeof(want)) != 0) {
            rc = HTKV_EAUTH;
        }
    }
    int64_t now = rc == 0 ? htkv_core_now(auth) : 0;
    if (rc == 0 && k.expires_at != 0 && now >= k.expires_at) {
        rc = HTKV_EAUTH;
    }
    if (rc == 0 && now - k.last_used_at >= HTKV_AUTH_LAST_USED_GRANULARITY_S) {
        (void)key_touch(auth, &k, version); /* best effort: the key was valid when read */
    }
    if (rc == 0 && out != NULL) {
        htkv_core_key_out(&k, key_id, out);
    }
    htkv_codec_free(body, body_len);
    sodium_memzero(&k, sizeof(k));
    sodium_memzero(want, sizeof(want));
    return rc;
}

/* ---- list, revoke, metadata ----------------------------------------------------------------- */

static int
key_order_cmp(const void *x, const void *y)
{
    const struct htkv_auth_api_key *a = x, *b = y;
    if (a->created_at != b->created_at) {
        return a->created_at < b->created_at ? -1 : 1;
    }
    return strcmp(a->id, b->id);
}

int
htkv_auth_list_api_keys(htkv_auth *auth, const char *user_id, struct htkv_auth_api_key **keys,
                        size_t *count)
{
    unsigned char user[CODEC_ID_BYTES];
    if (keys != NULL) {
        *keys = NULL;
    }
    if (count != NULL) {
        *count = 0;
    }
    if (auth == NULL || keys == NULL || count == NULL || htkv_codec_id_parse(user_id, user) != 0) {
        return -EINVAL;
    }
    char ukey[CORE_RKEY_MAX], kkey[CORE_RKEY_MAX];
    size_t ukey_len = htkv_core_rkey_user(ukey, user);
    size_t kkey_len = htkv_core_rkey_user_keys(kkey, user);
    int rc = htkv_contains(auth->db, ukey, ukey_len);
    if (rc != 1) {
        return rc == 0 ? HTKV_ENOTFOUND : rc;
    }
    uint64_t kver;
    struct codec_list list;
    unsigned char *lbody = NULL;
    size_t lbody_len = 0;
    rc = htkv_core_list_read(auth, kkey, kkey_len, CORE_KIND_USER_KEYS, &kver, &lbody, &lbody_len,
                             &list);
    struct htkv_auth_api_key *arr = NULL;
    size_t n = 0;
    if (rc == 0 && list.count > 0) {
        arr = calloc(list.count, sizeof(*arr));
        rc = arr == NULL ? -ENOMEM : 0;
    }
    for (uint32_t i = 0; rc == 0 && i < list.count; i++) {
        unsigned char *body;
        size_t body_len;
        struct codec_key k;
        uint32_t key_id;
        rc = key_read(auth, list.ids + (size_t)i * CODEC_ID_BYTES, NULL, &body, &body_len, &k,
                      &key_id);
        if (rc == HTKV_ENOTFOUND) {
            rc = 0; /* revoked since the list was read */
            continue;
        }
        if (rc == 0 && memcmp(k.user, user, CODEC_ID_BYTES) != 0) {
            rc = HTKV_ECORRUPT;
        }
        if (rc == 0) {
            htkv_core_key_out(&k, key_id, &arr[n++]);
        }
        htkv_codec_free(body, body_len);
        sodium_memzero(&k, sizeof(k));
    }
    htkv_codec_free(lbody, lbody_len);
    if (rc != 0 || n == 0) {
        free(arr);
        return rc;
    }
    qsort(arr, n, sizeof(*arr), key_order_cmp);
    *keys = arr;
    *count = n;
    return 0;
}

struct revoke_ctx {
    unsigned char id[CODEC_ID_BYTES];
};

static int
revoke_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct revoke_ctx *c = arg;
    HTKV_ASSERT(htkv_batch_count(b) == 0);
    unsigned char *body = NULL, *lbody = NULL, *newlist = NULL;
    size_t body_len = 0, lbody_len = 0, newlist_len = 0;
    struct codec_key k;
    uint64_t aver;
    int rc = key_read(a, c->id, &aver, &body, &body_len, &k, NULL);
    if (rc != 0) {
        return rc;
    }
    char akey[CORE_RKEY_MAX], kkey[CORE_RKEY_MAX];
    size_t akey_len = htkv_core_rkey_apikey(akey, c->id);
    size_t kkey_len = htkv_core_rkey_user_keys(kkey, k.user);
    uint64_t kver;
    struct codec_list list;
    rc = htkv_core_list_read(a, kkey, kkey_len, CORE_KIND_USER_KEYS, &kver, &lbody, &lbody_len,
                             &list);
    if (rc == 0) {
        rc = htkv_core_check(b, akey, akey_len, aver);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, kkey, kkey_len, kver);
    }
    if (rc == 0) {
        rc = htkv_batch_delete(b, akey, akey_len);
    }
    if (rc == 0 && htkv_codec_list_has(&list, c->id)) {
        if (list.count == 1) {
            rc = htkv_batch_delete(b, kkey, kkey_len); /* the user's last key */
        } else {
            rc = htkv_codec_list_encode(&list, NULL, c->id, &newlist, &newlist_len);
            if (rc == 0) {
                rc = htkv_core_put(a, s, b, CORE_KIND_USER_KEYS, kkey, kkey_len, newlist,
                                   newlist_len);
            }
        }
    }
    htkv_codec_free(body, body_len);
    htkv_codec_free(lbody, lbody_len);
    htkv_codec_free(newlist, newlist_len);
    sodium_memzero(&k, sizeof(k));
    return rc;
}

int
htkv_auth_revoke_api_key(htkv_auth *auth, const char *key_id)
{
    struct revoke_ctx c;
    if (auth == NULL || htkv_codec_id_parse(key_id, c.id) != 0) {
        return -EINVAL;
    }
    return htkv_core_txn(auth, revoke_txn, &c);
}

int
htkv_auth_decrypt_api_key_metadata(htkv_auth *auth, const char *key_id, void *buf, size_t cap,
                                   size_t *len)
{
    unsigned char id[CODEC_ID_BYTES];
    if (auth == NULL || len == NULL || (buf == NULL && cap > 0) ||
        htkv_codec_id_parse(key_id, id) != 0) {
        return -EINVAL;
    }
    *len = 0;
    unsigned char *body;
    size_t body_len;
    struct codec_key k;
    int rc = key_read(auth, id, NULL, &body, &body_len, &k, NULL);
    if (rc == 0) {
        rc = htkv_core_meta_copy(k.meta, k.meta_len, buf, cap, len);
        htkv_codec_free(body, body_len);
    }
    sodium_memzero(&k, sizeof(k));
    return rc;
}

void
htkv_auth_test_token_fix_checksum(char *token)
{
    token_checksum(token, token + TOKEN_CHECK_OFF);
}
