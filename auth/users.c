/*
 * users.c - users: create, read, list, delete, verify and change passwords, metadata.
 *
 * Design. A user is three kinds of record, changed together by one conditional batch:
 *   auth/user/<id>              the user (name, times, Argon2id hash, metadata), sealed
 *   auth/user_by_name/<folded>  the user's id, under the ASCII-lowercased name, sealed
 *   auth/user_list/<h>          ids of the users whose id starts with hex digit h, sealed
 * Listing reads these lists, not a prefix query (htkv_get_prefix()) over auth/user/: each list
 * changes in the same conditional batch as the users it names. Sixteen of them keep concurrent
 * creators apart and bound the bytes rewritten per create to 1/16 of all ids.
 *
 * Each bucket also has a census (auth/census/<h>, census.c): how many of its users' hashes use
 * each Argon2 parameter set. Every batch below that adds, removes or replaces a hash updates the
 * census of the user's bucket in the same batch, conditional on the census as read.
 *
 * Creating checks that the name key and the user key are absent (version 0) in the batch that
 * writes them, so of two creators of one name exactly one commits and the other then sees the
 * name taken (HTKV_EEXIST). change_password writes the new hash only over the very record whose
 * hash it verified; if another change got in first it verifies the old password again against
 * the hash now stored. delete_user removes the user, its name, its list entry and all its API
 * keys at once, conditional on all of them as read.
 *
 * Cost changes. A hash keeps the costs it was made with, so raising the configured costs leaves
 * the existing users on the old ones. verify_password upgrades them: when the password is right
 * and the stored hash's costs differ from the configured ones, it hashes the password again with
 * the configured costs and writes the new hash (and the census) in one batch, only if the record
 * still holds the very hash that was verified; if anything changed the hash meanwhile (a
 * change_password, another upgrade) the upgrade is dropped, so it never undoes a change. The
 * upgrade is best effort: its failure (a read-only store, contention) does not fail the login.
 * An unknown name's dummy run takes the costs the census assigns to that name, so that it costs
 * what the known users cost whatever mixture of costs is stored (census.c).
 *
 * Invariants
 *   1. A user record's id equals the id in its key, and its folded name maps back to it; a
 *      mismatch is HTKV_ECORRUPT.
 *   2. An unknown name costs one dummy Argon2 run, with costs drawn from the stored users', and
 *      returns HTKV_EAUTH, like a wrong password; known and unknown names do the same census
 *      work before it.
 *   3. Passwords and hashes on the stack are wiped before return.
 *   4. A hash is replaced only in a batch conditional on the record version whose hash was
 *      verified (change_password) or on the very hash verified (the upgrade at login).
 */
#include "auth/core.h"

#include <sodium.h>

/* ---- reading -------------------------------------------------------------------------------- */

/* Read user @p id: *body holds the plaintext (free with htkv_codec_free), u views into it. */
static int
user_read(struct htkv_auth *a, const unsigned char *id, uint64_t *version, unsigned char **body,
          size_t *body_len, struct codec_user *u, uint32_t *key_id)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_user(rkey, id);
    int rc = htkv_core_get(a, rkey, rkey_len, CORE_KIND_USER, version, body, body_len, key_id);
    if (rc == 0) {
        rc = htkv_codec_user_decode(*body, *body_len, u);
    }
    if (rc == 0 && memcmp(u->id, id, CODEC_ID_BYTES) != 0) {
        rc = HTKV_ECORRUPT;
    }
    if (rc != 0) {
        htkv_codec_free(*body, *body_len);
        *body = NULL;
        *body_len = 0;
        sodium_memzero(u, sizeof(*u));
    }
    return rc;
}

/* Read the id stored under folded name @p folded. */
static int
name_read(struct htkv_auth *a, const char *folded, size_t len, uint64_t *version, unsigned char *id)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_name(rkey, folded, len);
    unsigned char *body;
    size_t body_len;
    int rc = htkv_core_get(a, rkey, rkey_len, CORE_KIND_NAME, version, &body, &body_len, NULL);
    if (rc == 0) {
        rc = htkv_codec_name_decode(body, body_len, id);
        htkv_codec_free(body, body_len);
    }
    return rc;
}

/* Read the user named @p name (already checked, @p len bytes). */
static int
user_read_by_name(struct htkv_auth *a, const char *name, size_t len, uint64_t *version,
                  unsigned char **body, size_t *body_len, struct codec_user *u, uint32_t *key_id)
{
    char folded[HTKV_AUTH_NAME_MAX];
    unsigned char id[CODEC_ID_BYTES];
    htkv_codec_name_fold(name, len, folded);
    int rc = name_read(a, folded, len, NULL, id);
    if (rc == 0) {
        rc = user_read(a, id, version, body, body_len, u, key_id);
    }
    if (rc == 0) {
        char stored[HTKV_AUTH_NAME_MAX];
        htkv_codec_name_fold(u->name, u->name_len, stored);
        if (u->name_len != len || memcmp(stored, folded, len) != 0) {
            htkv_codec_free(*body, *body_len);
            *body = NULL;
            rc = HTKV_ECORRUPT; /* the name index points at a user of another name */
        }
    }
    return rc;
}

static int
password_check(const void *pw, size_t len, bool allow_empty)
{
    if ((pw == NULL && len > 0) || len > HTKV_AUTH_PASSWORD_MAX || (len == 0 && !allow_empty)) {
        return -EINVAL;
    }
    return 0;
}

/* ---- create --------------------------------------------------------------------------------- */

struct create_ctx {
    const char *name;
    size_t name_len;
    char folded[HTKV_AUTH_NAME_MAX];
    const struct pwhash_hash *pw;
    const void *meta;
    size_t meta_len;
    struct codec_user user; /* the record written, for the caller */
    uint32_t key_id;
};

static int
create_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct create_ctx *c = arg;
    HTKV_ASSERT(c->name_len >= 1 && c->name_len <= HTKV_AUTH_NAME_MAX);
    HTKV_ASSERT(c->pw != NULL);
    char nkey[CORE_RKEY_MAX], ukey[CORE_RKEY_MAX], lkey[CORE_RKEY_MAX];
    size_t nkey_len = htkv_core_rkey_name(nkey, c->folded, c->name_len);
    int rc = htkv_contains(a->db, nkey, nkey_len);
    if (rc != 0) {
        return rc == 1 ? HTKV_EEXIST : rc;
    }
    struct codec_user *u = &c->user;
    memset(u, 0, sizeof(*u));
    randombytes_buf(u->id, sizeof(u->id)); /* fresh each attempt; checked absent below */
    memcpy(u->name, c->name, c->name_len);
    u->name_len = c->name_len;
    u->created_at = u->password_changed_at = s->now;
    u->pw = *c->pw;
    u->meta = c->meta;
    u->meta_len = c->meta_len;
    c->key_id = s->key->id;
    size_t ukey_len = htkv_core_rkey_user(ukey, u->id);
    size_t lkey_len = htkv_core_rkey_user_list(lkey, u->id);

    uint64_t lver;
    struct codec_list list;
    struct census_edit census;
    memset(&census, 0, sizeof(census));
    unsigned char *lbody = NULL, *ubody = NULL, *nbody = NULL, *newlist = NULL;
    size_t lbody_len = 0, ubody_len = 0, nbody_len = 0, newlist_len = 0;
    rc = htkv_core_list_read(a, lkey, lkey_len, CORE_KIND_USER_LIST, &lver, &lbody, &lbody_len,
                             &list);
    if (rc == 0) {
        rc = htkv_codec_list_encode(&list, u->id, NULL, &newlist, &newlist_len);
    }
    if (rc == 0) {
        rc = htkv_census_edit_begin(a, b, u->id, &census); /* and its condition */
    }
    if (rc == 0) {
        rc = htkv_census_edit_count(&census, c->pw, 1);
    }
    if (rc == 0) {
        rc = htkv_codec_user_encode(u, &ubody, &ubody_len);
    }
    if (rc == 0) {
        rc = htkv_codec_name_encode(u->id, &nbody, &nbody_len);
    }
    /* The conditions: name and id still free, the list as read. */
    if (rc == 0) {
        rc = htkv_core_check(b, nkey, nkey_len, 0);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, ukey, ukey_len, 0);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, lkey, lkey_len, lver);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_USER, ukey, ukey_len, ubody, ubody_len);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_NAME, nkey, nkey_len, nbody, nbody_len);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_USER_LIST, lkey, lkey_len, newlist, newlist_len);
    }
    if (rc == 0) {
        rc = htkv_census_edit_put(a, s, b, &census);
    }
    htkv_census_edit_free(&census);
    htkv_codec_free(lbody, lbody_len);
    htkv_codec_free(newlist, newlist_len);
    htkv_codec_free(ubody, ubody_len);
    htkv_codec_free(nbody, nbody_len);
    return rc;
}

int
htkv_auth_create_user(htkv_auth *auth, const char *name, const void *password, size_t password_len,
                      struct htkv_auth_user *out)
{
    return htkv_auth_create_user_with_metadata(auth, name, password, password_len, NULL, 0, out);
}

int
htkv_auth_create_user_with_metadata(htkv_auth *auth, const char *name, const void *password,
                                    size_t password_len, const void *metadata, size_t metadata_len,
                                    struct htkv_auth_user *out)
{
    struct create_ctx c;
    memset(&c, 0, sizeof(c));
    if (auth == NULL || password_check(password, password_len, false) != 0 ||
        (metadata == NULL && metadata_len > 0) || metadata_len > HTKV_AUTH_METADATA_MAX ||
        htkv_codec_name_check(name, HTKV_AUTH_NAME_MAX, false, &c.name_len) != 0) {
        return -EINVAL;
    }
    c.name = name;
    c.meta = metadata;
    c.meta_len = metadata_len;
    htkv_codec_name_fold(name, c.name_len, c.folded);
    /* Refuse a taken name before spending an Argon2 run on it; the batch checks again. */
    char nkey[CORE_RKEY_MAX];
    size_t nkey_len = htkv_core_rkey_name(nkey, c.folded, c.name_len);
    int rc = htkv_contains(auth->db, nkey, nkey_len);
    if (rc != 0) {
        return rc == 1 ? HTKV_EEXIST : rc;
    }
    struct pwhash_hash pw;
    rc = htkv_pwhash_hash(&auth->pw, password, password_len, &pw);
    if (rc == 0) {
        c.pw = &pw;
        rc = htkv_core_txn(auth, create_txn, &c);
    }
    if (rc == 0 && out != NULL) {
        htkv_core_user_out(&c.user, c.key_id, out);
    }
    sodium_memzero(&pw, sizeof(pw));
    sodium_memzero(&c, sizeof(c));
    return rc;
}

/* ---- read ----------------------------------------------------------------------------------- */

int
htkv_auth_get_user(htkv_auth *auth, const char *user_id, struct htkv_auth_user *out)
{
    unsigned char id[CODEC_ID_BYTES];
    if (auth == NULL || out == NULL || htkv_codec_id_parse(user_id, id) != 0) {
        return -EINVAL;
    }
    unsigned char *body;
    size_t body_len;
    struct codec_user u;
    uint32_t key_id;
    int rc = user_read(auth, id, NULL, &body, &body_len, &u, &key_id);
    if (rc == 0) {
        htkv_core_user_out(&u, key_id, out);
        htkv_codec_free(body, body_len);
    }
    sodium_memzero(&u, sizeof(u));
    return rc;
}

int
htkv_auth_get_user_by_name(htkv_auth *auth, const char *name, struct htkv_auth_user *out)
{
    size_t len;
    if (auth == NULL || out == NULL ||
        htkv_codec_name_check(name, HTKV_AUTH_NAME_MAX, false, &len) != 0) {
        return -EINVAL;
    }
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_user u;
    uint32_t key_id;
    int rc = user_read_by_name(auth, name, len, NULL, &body, &body_len, &u, &key_id);
    if (rc == 0) {
        htkv_core_user_out(&u, key_id, out);
        htkv_codec_free(body, body_len);
    }
    sodium_memzero(&u, sizeof(u));
    return rc;
}

static int
user_by_name_cmp(const void *x, const void *y)
{
    const struct htkv_auth_user *a = x, *b = y;
    return strcmp(a->name, b->name);
}

/* Append the users listed in bucket @p bucket to *users. */
static int
list_bucket(struct htkv_auth *a, unsigned bucket, struct htkv_auth_user **users, size_t *count,
            size_t *cap)
{
    HTKV_ASSERT(bucket < CORE_USER_LISTS);
    HTKV_ASSERT(*count <= *cap);
    unsigned char probe[CODEC_ID_BYTES] = { (unsigned char)(bucket << 4) };
    char lkey[CORE_RKEY_MAX];
    size_t lkey_len = htkv_core_rkey_user_list(lkey, probe);
    uint64_t lver;
    unsigned char *lbody = NULL;
    size_t lbody_len = 0;
    struct codec_list list;
    int rc = htkv_core_list_read(a, lkey, lkey_len, CORE_KIND_USER_LIST, &lver, &lbody, &lbody_len,
                                 &list);
    for (uint32_t i = 0; rc == 0 && i < list.count; i++) {
        unsigned char *body;
        size_t body_len;
        struct codec_user u;
        uint32_t key_id;
        rc = user_read(a, list.ids + (size_t)i * CODEC_ID_BYTES, NULL, &body, &body_len, &u,
                       &key_id);
        if (rc == HTKV_ENOTFOUND) {
            rc = 0; /* deleted since the list was read */
            continue;
        }
        if (rc != 0) {
            break;
        }
        if (*count == *cap) {
            size_t ncap = *cap ? *cap * 2 : 16;
            struct htkv_auth_user *n = realloc(*users, ncap * sizeof(*n));
            if (n == NULL) {
                rc = -ENOMEM;
            } else {
                *users = n;
                *cap = ncap;
            }
        }
        if (rc == 0) {
            htkv_core_user_out(&u, key_id, &(*users)[(*count)++]);
        }
        htkv_codec_free(body, body_len);
        sodium_memzero(&u, sizeof(u));
    }
    htkv_codec_free(lbody, lbody_len);
    return rc;
}

int
htkv_auth_list_users(htkv_auth *auth, struct htkv_auth_user **users, size_t *count)
{
    if (users != NULL) {
        *users = NULL;
    }
    if (count != NULL) {
        *count = 0;
    }
    if (auth == NULL || users == NULL || count == NULL) {
        return -EINVAL;
    }
    struct htkv_auth_user *arr = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (unsigned bucket = 0; bucket < CORE_USER_LISTS && rc == 0; bucket++) {
        rc = list_bucket(auth, bucket, &arr, &n, &cap);
    }
    if (rc != 0 || n == 0) {
        free(arr);
        return rc;
    }
    qsort(arr, n, sizeof(*arr), user_by_name_cmp);
    *users = arr;
    *count = n;
    return 0;
}

/* ---- delete --------------------------------------------------------------------------------- */

struct delete_ctx {
    unsigned char id[CODEC_ID_BYTES];
};

/* Add the deletion of every key in the user's key list (and of the list) to @p b. */
static int
delete_user_keys(struct htkv_auth *a, htkv_batch *b, const unsigned char *user_id)
{
    char kkey[CORE_RKEY_MAX];
    size_t kkey_len = htkv_core_rkey_user_keys(kkey, user_id);
    uint64_t kver;
    unsigned char *kbody = NULL;
    size_t kbody_len = 0;
    struct codec_list keys;
    int rc = htkv_core_list_read(a, kkey, kkey_len, CORE_KIND_USER_KEYS, &kver, &kbody, &kbody_len,
                                 &keys);
    if (rc == 0) {
        rc = htkv_core_check(b, kkey, kkey_len, kver);
    }
    if (rc == 0 && kver != 0) {
        rc = htkv_batch_delete(b, kkey, kkey_len);
    }
    for (uint32_t i = 0; rc == 0 && i < keys.count; i++) {
        char akey[CORE_RKEY_MAX];
        size_t akey_len = htkv_core_rkey_apikey(akey, keys.ids + (size_t)i * CODEC_ID_BYTES);
        struct core_rec rec;
        rc = htkv_core_load(a, akey, akey_len, &rec);
        if (rc == 0) {
            rc = htkv_core_check(b, akey, akey_len, rec.version);
            htkv_core_rec_free(&rec);
            if (rc == 0) {
                rc = htkv_batch_delete(b, akey, akey_len);
            }
        } else if (rc == HTKV_ENOTFOUND) {
            rc = htkv_core_check(b, akey, akey_len, 0);
        }
    }
    htkv_codec_free(kbody, kbody_len);
    return rc;
}

static int
delete_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct delete_ctx *c = arg;
    HTKV_ASSERT(htkv_batch_count(b) == 0);
    unsigned char *ubody = NULL, *lbody = NULL, *newlist = NULL;
    size_t ubody_len = 0, lbody_len = 0, newlist_len = 0;
    struct codec_user u;
    uint64_t uver;
    int rc = user_read(a, c->id, &uver, &ubody, &ubody_len, &u, NULL);
    if (rc != 0) {
        return rc;
    }
    char ukey[CORE_RKEY_MAX], nkey[CORE_RKEY_MAX], lkey[CORE_RKEY_MAX];
    char folded[HTKV_AUTH_NAME_MAX];
    size_t ukey_len = htkv_core_rkey_user(ukey, c->id);
    htkv_codec_name_fold(u.name, u.name_len, folded);
    size_t nkey_len = htkv_core_rkey_name(nkey, folded, u.name_len);
    size_t lkey_len = htkv_core_rkey_user_list(lkey, c->id);
    rc = htkv_core_check(b, ukey, ukey_len, uver);
    if (rc == 0) {
        rc = htkv_batch_delete(b, ukey, ukey_len);
    }
    /* The name entry, if it still names this user (it always should). */
    unsigned char owner[CODEC_ID_BYTES];
    uint64_t nver = 0;
    if (rc == 0) {
        rc = name_read(a, folded, u.name_len, &nver, owner);
        if (rc == HTKV_ENOTFOUND) {
            rc = 0;
        } else if (rc == 0 && memcmp(owner, c->id, CODEC_ID_BYTES) == 0) {
            rc = htkv_batch_delete(b, nkey, nkey_len);
        }
    }
    if (rc == 0) {
        rc = htkv_core_check(b, nkey, nkey_len, nver);
    }
    uint64_t lver;
    struct codec_list list;
    if (rc == 0) {
        rc = htkv_core_list_read(a, lkey, lkey_len, CORE_KIND_USER_LIST, &lver, &lbody, &lbody_len,
                                 &list);
    }
    if (rc == 0) {
        rc = htkv_core_check(b, lkey, lkey_len, lver);
    }
    if (rc == 0 && lver != 0) {
        rc = htkv_codec_list_encode(&list, NULL, c->id, &newlist, &newlist_len);
        if (rc == 0) {
            rc = htkv_core_put(a, s, b, CORE_KIND_USER_LIST, lkey, lkey_len, newlist, newlist_len);
        }
    }
    /* The census counts the listed users: this one's hash leaves it. */
    struct census_edit census;
    memset(&census, 0, sizeof(census));
    if (rc == 0 && lver != 0 && htkv_codec_list_has(&list, c->id)) {
        rc = htkv_census_edit_begin(a, b, c->id, &census);
        if (rc == 0) {
            rc = htkv_census_edit_count(&census, &u.pw, -1);
        }
        if (rc == 0) {
            rc = htkv_census_edit_put(a, s, b, &census);
        }
    }
    htkv_census_edit_free(&census);
    if (rc == 0) {
        rc = delete_user_keys(a, b, c->id);
    }
    htkv_codec_free(ubody, ubody_len);
    htkv_codec_free(lbody, lbody_len);
    htkv_codec_free(newlist, newlist_len);
    sodium_memzero(&u, sizeof(u));
    return rc;
}

int
htkv_auth_delete_user(htkv_auth *auth, const char *user_id)
{
    struct delete_ctx c;
    if (auth == NULL || htkv_codec_id_parse(user_id, c.id) != 0) {
        return -EINVAL;
    }
    return htkv_core_txn(auth, delete_txn, &c);
}

/* ---- passwords ------------------------------------------------------------------------------ */

struct rehash_ctx {
    unsigned char id[CODEC_ID_BYTES];
    struct pwhash_hash verified;     /* the stored hash the password matched */
    const struct pwhash_hash *fresh; /* the same password hashed with the configured costs */
};

/* Replace the verified hash by the fresh one, unless the record no longer holds it. */
static int
rehash_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct rehash_ctx *c = arg;
    HTKV_ASSERT(c->fresh != NULL);
    unsigned char *body = NULL, *nbody = NULL;
    size_t body_len = 0, nbody_len = 0;
    struct codec_user u;
    uint64_t ver;
    int rc = user_read(a, c->id, &ver, &body, &body_len, &u, NULL);
    if (rc == HTKV_ENOTFOUND) {
        return CORE_TXN_NOOP; /* deleted meanwhile */
    }
    if (rc != 0) {
        return rc;
    }
    struct census_edit census;
    memset(&census, 0, sizeof(census));
    if (sodium_memcmp(&u.pw, &c->verified, sizeof(u.pw)) != 0) {
        rc = CORE_TXN_NOOP; /* the hash changed meanwhile: never undo that change */
    }
    if (rc == 0) {
        rc = htkv_census_edit_begin(a, b, c->id, &census);
    }
    if (rc == 0) {
        rc = htkv_census_edit_count(&census, &u.pw, -1);
    }
    if (rc == 0) {
        rc = htkv_census_edit_count(&census, c->fresh, 1);
    }
    if (rc == 0) {
        u.pw = *c->fresh; /* password_changed_at stays: the password is the same */
        rc = htkv_codec_user_encode(&u, &nbody, &nbody_len);
    }
    char ukey[CORE_RKEY_MAX];
    size_t ukey_len = htkv_core_rkey_user(ukey, c->id);
    if (rc == 0) {
        rc = htkv_core_check(b, ukey, ukey_len, ver);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_USER, ukey, ukey_len, nbody, nbody_len);
    }
    if (rc == 0) {
        rc = htkv_census_edit_put(a, s, b, &census);
    }
    htkv_census_edit_free(&census);
    htkv_codec_free(body, body_len);
    htkv_codec_free(nbody, nbody_len);
    sodium_memzero(&u, sizeof(u));
    return rc;
}

/*
 * After a successful login with a hash of other costs than the configured ones: hash @p pw with
 * the configured costs and store it over @p u's hash if that is still the one stored. Best effort:
 * the login succeeded whatever happens here. A read-only store turns upgrades off for the handle.
 */
static void
user_rehash(struct htkv_auth *a, const struct codec_user *u, const void *pw, size_t pw_len)
{
    if (atomic_load(&a->rehash_off)) {
        return;
    }
    struct rehash_ctx c;
    memset(&c, 0, sizeof(c));
    memcpy(c.id, u->id, CODEC_ID_BYTES);
    c.verified = u->pw;
    struct pwhash_hash fresh;
    int rc = htkv_pwhash_hash(&a->pw, pw, pw_len, &fresh);
    if (rc == 0) {
        c.fresh = &fresh;
        rc = htkv_core_txn(a, rehash_txn, &c);
    }
    if (rc == HTKV_EREADONLY) {
        atomic_store(&a->rehash_off, true);
    }
    sodium_memzero(&fresh, sizeof(fresh));
    sodium_memzero(&c, sizeof(c));
}

int
htkv_auth_verify_password(htkv_auth *auth, const char *name, const void *password,
                          size_t password_len, struct htkv_auth_user *out)
{
    if (auth == NULL || name == NULL || password_check(password, password_len, true) != 0) {
        return -EINVAL;
    }
    /* Known and unknown names alike: the costs an unknown one would take (census.c). */
    struct pwhash_hash dummy;
    htkv_census_dummy_costs(auth, name, &dummy);
    size_t len;
    if (htkv_codec_name_check(name, HTKV_AUTH_NAME_MAX, false, &len) != 0) {
        return htkv_pwhash_dummy(&auth->pw, &dummy, password, password_len);
    }
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_user u;
    uint32_t key_id = 0;
    int rc = user_read_by_name(auth, name, len, NULL, &body, &body_len, &u, &key_id);
    if (rc == HTKV_ENOTFOUND) {
        return htkv_pwhash_dummy(&auth->pw, &dummy, password, password_len);
    }
    if (rc == 0) {
        rc = htkv_pwhash_verify(&auth->pw, password, password_len, &u.pw);
    }
    if (rc == 0 && !htkv_pwhash_costs_current(&auth->pw, &u.pw)) {
        user_rehash(auth, &u, password, password_len);
    }
    if (rc == 0 && out != NULL) {
        htkv_core_user_out(&u, key_id, out);
    }
    htkv_codec_free(body, body_len);
    sodium_memzero(&u, sizeof(u));
    return rc;
}

struct change_ctx {
    unsigned char id[CODEC_ID_BYTES];
    struct pwhash_hash verified; /* the stored hash the old password matched */
    const void *old_pw;
    size_t old_len;
    const struct pwhash_hash *new_pw;
};

static int
change_txn(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s, void *arg)
{
    struct change_ctx *c = arg;
    HTKV_ASSERT(c->new_pw != NULL);
    HTKV_ASSERT(c->old_pw != NULL || c->old_len == 0);
    unsigned char *body = NULL, *nbody = NULL;
    size_t body_len = 0, nbody_len = 0;
    struct codec_user u;
    uint64_t ver;
    int rc = user_read(a, c->id, &ver, &body, &body_len, &u, NULL);
    if (rc == HTKV_ENOTFOUND) {
        return HTKV_EAUTH; /* deleted meanwhile: the credentials no longer name a user */
    }
    if (rc != 0) {
        return rc;
    }
    if (sodium_memcmp(&u.pw, &c->verified, sizeof(u.pw)) != 0) {
        /* Another change got in first: the old password must match the hash stored now. */
        rc = htkv_pwhash_verify(&a->pw, c->old_pw, c->old_len, &u.pw);
        if (rc == 0) {
            c->verified = u.pw;
        }
    }
    struct census_edit census;
    memset(&census, 0, sizeof(census));
    if (rc == 0) {
        rc = htkv_census_edit_begin(a, b, c->id, &census);
    }
    if (rc == 0) {
        rc = htkv_census_edit_count(&census, &u.pw, -1);
    }
    if (rc == 0) {
        rc = htkv_census_edit_count(&census, c->new_pw, 1);
    }
    if (rc == 0) {
        rc = htkv_census_edit_put(a, s, b, &census);
    }
    htkv_census_edit_free(&census);
    if (rc == 0) {
        u.pw = *c->new_pw;
        u.password_changed_at = s->now;
        rc = htkv_codec_user_encode(&u, &nbody, &nbody_len);
    }
    char ukey[CORE_RKEY_MAX];
    size_t ukey_len = htkv_core_rkey_user(ukey, c->id);
    if (rc == 0) {
        rc = htkv_core_check(b, ukey, ukey_len, ver);
    }
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_USER, ukey, ukey_len, nbody, nbody_len);
    }
    htkv_codec_free(body, body_len);
    htkv_codec_free(nbody, nbody_len);
    sodium_memzero(&u, sizeof(u));
    return rc;
}

int
htkv_auth_change_password(htkv_auth *auth, const char *name, const void *old_password,
                          size_t old_password_len, const void *new_password,
                          size_t new_password_len)
{
    if (auth == NULL || name == NULL || password_check(old_password, old_password_len, true) != 0 ||
        password_check(new_password, new_password_len, false) != 0) {
        return -EINVAL;
    }
    struct pwhash_hash dummy;
    htkv_census_dummy_costs(auth, name, &dummy);
    size_t len;
    if (htkv_codec_name_check(name, HTKV_AUTH_NAME_MAX, false, &len) != 0) {
        return htkv_pwhash_dummy(&auth->pw, &dummy, old_password, old_password_len);
    }
    struct change_ctx c;
    memset(&c, 0, sizeof(c));
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_user u;
    int rc = user_read_by_name(auth, name, len, NULL, &body, &body_len, &u, NULL);
    if (rc == HTKV_ENOTFOUND) {
        return htkv_pwhash_dummy(&auth->pw, &dummy, old_password, old_password_len);
    }
    if (rc == 0) {
        rc = htkv_pwhash_verify(&auth->pw, old_password, old_password_len, &u.pw);
    }
    struct pwhash_hash new_pw;
    memset(&new_pw, 0, sizeof(new_pw));
    if (rc == 0) {
        memcpy(c.id, u.id, CODEC_ID_BYTES);
        c.verified = u.pw;
        c.old_pw = old_password;
        c.old_len = old_password_len;
        rc = htkv_pwhash_hash(&auth->pw, new_password, new_password_len, &new_pw);
    }
    if (rc == 0) {
        c.new_pw = &new_pw;
        rc = htkv_core_txn(auth, change_txn, &c);
    }
    htkv_codec_free(body, body_len);
    sodium_memzero(&u, sizeof(u));
    sodium_memzero(&new_pw, sizeof(new_pw));
    sodium_memzero(&c, sizeof(c));
    return rc;
}

/* ---- metadata ------------------------------------------------------------------------------- */

int
htkv_auth_decrypt_user_metadata(htkv_auth *auth, const char *user_id, void *buf, size_t cap,
                                size_t *len)
{
    unsigned char id[CODEC_ID_BYTES];
    if (auth == NULL || len == NULL || (buf == NULL && cap > 0) ||
        htkv_codec_id_parse(user_id, id) != 0) {
        return -EINVAL;
    }
    *len = 0;
    unsigned char *body;
    size_t body_len;
    struct codec_user u;
    int rc = user_read(auth, id, NULL, &body, &body_len, &u, NULL);
    if (rc == 0) {
        rc = htkv_core_meta_copy(u.meta, u.meta_len, buf, cap, len);
        htkv_codec_free(body, body_len);
    }
    sodium_memzero(&u, sizeof(u));
    return rc;
}

/* ---- test hooks ----------------------------------------------------------------------------- */

int
htkv_auth_test_user_costs(htkv_auth *a, const char *user_id, struct htkv_auth_test_costs *out)
{
    unsigned char id[CODEC_ID_BYTES];
    if (a == NULL || out == NULL || htkv_codec_id_parse(user_id, id) != 0) {
        return -EINVAL;
    }
    unsigned char *body = NULL;
    size_t body_len = 0;
    struct codec_user u;
    int rc = user_read(a, id, NULL, &body, &body_len, &u, NULL);
    if (rc == 0) {
        out->memory_kib = u.pw.memory_kib;
        out->iterations = u.pw.iterations;
        out->lanes = u.pw.lanes;
        out->users = 1;
        htkv_codec_free(body, body_len);
    }
    sodium_memzero(&u, sizeof(u));
    return rc;
}
