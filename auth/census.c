/*
 * census.c - which Argon2 parameter sets the stored password hashes use, and how much the dummy
 * verification of an unknown user costs.
 *
 * Problem. Every hash keeps the costs it was made with (pwhash.c), so a store whose users were
 * created under other costs than the handle's holds hashes of several costs. A login for an
 * unknown name runs a dummy verification so that it takes as long as a wrong password; if the
 * dummy ran with the configured costs while known users verify with their stored ones, the time
 * alone would tell which names exist (raise the costs from 33 ms to 94 ms and every unknown name
 * answers in 94 ms, every known one in 33 ms). The dummy must cost what a known user costs.
 *
 * Design. Each user list bucket h (users whose id starts with hex digit h) has a census record,
 * auth/census/<h>, sealed like every record: the parameter sets its users' hashes use, each with
 * its number of users. Every change of a bucket's hashes updates its census in the same
 * conditional batch (create, delete, change_password, and the upgrade of a hash at login in
 * users.c), so the census is exact: its version is checked by every such batch, and two writers
 * of one bucket serialise on it exactly as creators already do on the bucket's list.
 *
 * The dummy for a name uses the set found by a keyed hash of the ASCII-folded name: the hash,
 * read as a fraction of 2^64, is scaled to the number of users, and the sets, in ascending cost
 * order, each own a share of that range as large as their user count. So
 *   - the costs of unknown names follow the distribution of the known users' costs, whatever
 *     mixture of costs is stored;
 *   - a name always gets the same costs (as a known user does: its hash does not change between
 *     two attempts), also across handles and restarts: the key is derived from the token root in
 *     auth/meta (core.c), not from the master key, so it survives rotations too, and nobody
 *     without it can tell which costs an unknown name will get;
 *   - "Alice" and "alice" get the same costs, as they name one user;
 *   - when the census moves (users created, deleted or upgraded) only names near a share's edge
 *     change costs, and in the direction the users moved (a census migrating to new costs moves
 *     names over to the new costs at the pace of the users' logins).
 * Alternatives considered: the configured costs (the defect); the costs of one existing user
 * drawn by the name's hash (needs the user lists on every unknown login: megabytes with many
 * users); a census counted in memory at open (a scan of every user at each open, and blind to
 * the other handles' changes).
 *
 * Reading. A handle caches the census of every bucket. Every verify_password and
 * change_password, for known and unknown names alike, probes the 16 census versions (engine
 * reads without copying a value) and re-reads only those that changed, then computes the keyed
 * hash: both paths do the same work before Argon2, and a change made by another handle is seen
 * by the next call. Errors of this refresh are not reported to those calls (a damaged census must
 * not make an unknown name answer differently from a known one); the bucket keeps what the cache
 * had, and the next write to the bucket reports HTKV_ECORRUPT.
 *
 * Stores written before the census existed have users but no census records. An absent census
 * is counted from the bucket's list and user records: by a writer, inside its transaction, which
 * then writes it (its condition "census absent" conflicts with any other writer of the bucket,
 * all of which write the census); by a reader, in memory, cached under the list's version (while
 * the census is absent the list determines the bucket: every writer that changes a hash writes
 * the census). Opening writes nothing (htkvctl opens stores it must not change).
 *
 * Invariants
 *   1. After a committed batch, auth/census/<h> counts exactly the hashes of the users listed in
 *      list h, by parameter set; sets have users >= 1 and are strictly ascending.
 *   2. Every batch that creates, deletes or rehashes a user checks and writes the census of the
 *      user's bucket (htkv_census_edit_*).
 *   3. The dummy costs of a name depend only on the folded name, the census key and the census.
 *   4. Lock order: census cache lock, then the handle's lock (core.c, via htkv_core_open).
 */
#include "auth/core.h"

#include <sodium.h>

HTKV_STATIC_ASSERT(CENSUS_BUCKETS == CORE_USER_LISTS, "one census per user list");

/* ---- sets ----------------------------------------------------------------------------------- */

static void
sets_free(struct census_sets *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* Index of @p key in @p s, or where it would be inserted; *found tells which. */
static size_t
sets_find(const struct census_sets *s, const struct codec_census_set *key, bool *found)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (htkv_codec_census_cmp(&s->v[mid], key) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = lo < s->count && htkv_codec_census_cmp(&s->v[lo], key) == 0;
    return lo;
}

/* Add @p users users to the set of @p key's costs, inserting it in order. 0 or -ENOMEM. */
static int
sets_add(struct census_sets *s, const struct codec_census_set *key, uint64_t users)
{
    HTKV_ASSERT(users >= 1);
    bool found;
    size_t i = sets_find(s, key, &found);
    if (found) {
        s->v[i].users += users;
        return 0;
    }
    if (s->count == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4;
        struct codec_census_set *n = realloc(s->v, ncap * sizeof(*n));
        if (n == NULL) {
            return -ENOMEM;
        }
        s->v = n;
        s->cap = ncap;
    }
    memmove(&s->v[i + 1], &s->v[i], (s->count - i) * sizeof(*s->v));
    s->v[i] = *key;
    s->v[i].users = users;
    s->count++;
    return 0;
}

/* Remove one user from the set of @p key's costs (the set goes when it has none left). */
static void
sets_remove_one(struct census_sets *s, const struct codec_census_set *key)
{
    bool found;
    size_t i = sets_find(s, key, &found);
    if (!found) {
        return; /* not counted: nothing to take back (invariant 1 says this does not happen) */
    }
    HTKV_ASSERT(s->v[i].users >= 1);
    if (--s->v[i].users == 0) {
        memmove(&s->v[i], &s->v[i + 1], (s->count - i - 1) * sizeof(*s->v));
        s->count--;
    }
}

static struct codec_census_set
set_of(const struct pwhash_hash *costs)
{
    struct codec_census_set k = {
        .memory_kib = costs->memory_kib,
        .iterations = costs->iterations,
        .lanes = costs->lanes,
        .users = 0,
    };
    return k;
}

/* Decode a census body into @p out. 0; HTKV_ECORRUPT; -ENOMEM. */
static int
sets_from_body(const unsigned char *body, size_t len, struct census_sets *out)
{
    struct codec_census c;
    int rc = htkv_codec_census_decode(body, len, &c);
    for (uint32_t i = 0; rc == 0 && i < c.count; i++) {
        struct codec_census_set set;
        htkv_codec_census_get(&c, i, &set);
        rc = sets_add(out, &set, set.users); /* ascending: appends */
    }
    return rc;
}

/* ---- counting a bucket from its users ------------------------------------------------------- */

/* Count the hashes of the users listed in @p bucket; *list_version receives the list's version. */
static int
census_build(struct htkv_auth *a, unsigned bucket, struct census_sets *out, uint64_t *list_version)
{
    HTKV_ASSERT(bucket < CENSUS_BUCKETS);
    unsigned char probe[CODEC_ID_BYTES] = { (unsigned char)(bucket << 4) };
    char lkey[CORE_RKEY_MAX];
    size_t lkey_len = htkv_core_rkey_user_list(lkey, probe);
    unsigned char *lbody = NULL;
    size_t lbody_len = 0;
    struct codec_list list;
    int rc = htkv_core_list_read(a, lkey, lkey_len, CORE_KIND_USER_LIST, list_version, &lbody,
                                 &lbody_len, &list);
    for (uint32_t i = 0; rc == 0 && i < list.count; i++) {
        const unsigned char *id = list.ids + (size_t)i * CODEC_ID_BYTES;
        char ukey[CORE_RKEY_MAX];
        size_t ukey_len = htkv_core_rkey_user(ukey, id);
        unsigned char *body = NULL;
        size_t body_len = 0;
        struct codec_user u;
        memset(&u, 0, sizeof(u));
        rc = htkv_core_get(a, ukey, ukey_len, CORE_KIND_USER, NULL, &body, &body_len, NULL);
        if (rc == HTKV_ENOTFOUND) {
            rc = 0; /* deleted since the list was read (and the census written with it) */
            continue;
        }
        if (rc == 0) {
            rc = htkv_codec_user_decode(body, body_len, &u);
        }
        if (rc == 0 && memcmp(u.id, id, CODEC_ID_BYTES) != 0) {
            rc = HTKV_ECORRUPT;
        }
        if (rc == 0) {
            struct codec_census_set set = set_of(&u.pw);
            rc = sets_add(out, &set, 1);
        }
        htkv_codec_free(body, body_len);
        sodium_memzero(&u, sizeof(u));
    }
    htkv_codec_free(lbody, lbody_len);
    if (rc != 0) {
        sets_free(out);
    }
    return rc;
}

/* ---- writers -------------------------------------------------------------------------------- */

int
htkv_census_edit_begin(struct htkv_auth *a, htkv_batch *b, const unsigned char *user_id,
                       struct census_edit *e)
{
    memset(e, 0, sizeof(*e));
    e->bucket = user_id[0] >> 4;
    char ckey[CORE_RKEY_MAX];
    size_t ckey_len = htkv_core_rkey_census(ckey, user_id);
    unsigned char *body = NULL;
    size_t body_len = 0;
    int rc =
        htkv_core_get(a, ckey, ckey_len, CORE_KIND_CENSUS, &e->version, &body, &body_len, NULL);
    if (rc == HTKV_ENOTFOUND) {
        uint64_t lver;
        e->version = 0;
        rc = census_build(a, e->bucket, &e->sets, &lver);
    } else if (rc == 0) {
        rc = sets_from_body(body, body_len, &e->sets);
    }
    htkv_codec_free(body, body_len);
    if (rc == 0) {
        rc = htkv_core_check(b, ckey, ckey_len, e->version);
    }
    return rc;
}

int
htkv_census_edit_count(struct census_edit *e, const struct pwhash_hash *costs, int delta)
{
    HTKV_ASSERT(delta == 1 || delta == -1);
    struct codec_census_set set = set_of(costs);
    if (delta < 0) {
        sets_remove_one(&e->sets, &set);
        return 0;
    }
    return sets_add(&e->sets, &set, 1);
}

int
htkv_census_edit_put(struct htkv_auth *a, const struct core_snap *s, htkv_batch *b,
                     const struct census_edit *e)
{
    HTKV_ASSERT(e->bucket < CENSUS_BUCKETS);
    HTKV_ASSERT(e->sets.count <= UINT32_MAX);
    unsigned char probe[CODEC_ID_BYTES] = { (unsigned char)(e->bucket << 4) };
    char ckey[CORE_RKEY_MAX];
    size_t ckey_len = htkv_core_rkey_census(ckey, probe);
    unsigned char *body = NULL;
    size_t body_len = 0;
    int rc = htkv_codec_census_encode(e->sets.v, (uint32_t)e->sets.count, &body, &body_len);
    if (rc == 0) {
        rc = htkv_core_put(a, s, b, CORE_KIND_CENSUS, ckey, ckey_len, body, body_len);
    }
    htkv_codec_free(body, body_len);
    return rc;
}

void
htkv_census_edit_free(struct census_edit *e)
{
    sets_free(&e->sets);
}

/* ---- the handle's cache --------------------------------------------------------------------- */

int
htkv_census_cache_init(struct census_cache *c)
{
    memset(c, 0, sizeof(*c));
    int rc = pthread_mutex_init(&c->lock, NULL);
    return rc == 0 ? 0 : -rc;
}

void
htkv_census_cache_fini(struct census_cache *c)
{
    for (unsigned i = 0; i < CENSUS_BUCKETS; i++) {
        sets_free(&c->bucket[i]);
    }
    sets_free(&c->total);
    pthread_mutex_destroy(&c->lock);
}

/* Version of @p rkey without copying its value; 0 when absent. */
static int
census_probe(struct htkv_auth *a, const char *rkey, size_t rkey_len, uint64_t *version)
{
    size_t vlen = 0;
    *version = 0;
    int rc = htkv_get_version(a->db, rkey, rkey_len, NULL, 0, &vlen, version);
    if (rc == HTKV_ENOTFOUND) {
        *version = 0;
        return 0;
    }
    return rc == HTKV_ETOOSMALL ? 0 : rc;
}

/* Bring bucket @p bucket of the cache up to date; *changed is set when it was replaced.
 * Called with the cache lock held. */
static int
refresh_bucket(struct htkv_auth *a, unsigned bucket, bool *changed)
{
    struct census_cache *c = &a->census;
    unsigned char probe[CODEC_ID_BYTES] = { (unsigned char)(bucket << 4) };
    char ckey[CORE_RKEY_MAX], lkey[CORE_RKEY_MAX];
    size_t ckey_len = htkv_core_rkey_census(ckey, probe);
    size_t lkey_len = htkv_core_rkey_user_list(lkey, probe);
    uint64_t ver = 0, lver = 0;
    int rc = census_probe(a, ckey, ckey_len, &ver);
    if (rc == 0 && ver == 0) {
        rc = census_probe(a, lkey, lkey_len, &lver);
    }
    if (rc != 0) {
        return rc;
    }
    if (c->valid[bucket] && c->version[bucket] == ver &&
        (ver != 0 || c->list_version[bucket] == lver)) {
        return 0;
    }
    struct census_sets sets = { 0 };
    uint64_t got = 0, built_from = 0;
    if (ver != 0) {
        unsigned char *body = NULL;
        size_t body_len = 0;
        rc = htkv_core_get(a, ckey, ckey_len, CORE_KIND_CENSUS, &got, &body, &body_len, NULL);
        if (rc == 0) {
            rc = sets_from_body(body, body_len, &sets);
        }
        htkv_codec_free(body, body_len);
        if (rc == HTKV_ENOTFOUND) {
            return 0; /* a census is never deleted; a restored store: the next call sees it */
        }
    } else if (lver != 0) {
        rc = census_build(a, bucket, &sets, &built_from);
    }
    if (rc != 0) {
        sets_free(&sets);
        return rc;
    }
    sets_free(&c->bucket[bucket]);
    c->bucket[bucket] = sets;
    c->version[bucket] = got;
    c->list_version[bucket] = got != 0 ? 0 : built_from;
    c->valid[bucket] = true;
    *changed = true;
    return 0;
}

/* Merge the buckets into c->total. Called with the cache lock held. 0 or -ENOMEM. */
static int
census_merge(struct census_cache *c)
{
    struct census_sets t = { 0 };
    uint64_t users = 0;
    int rc = 0;
    for (unsigned b = 0; rc == 0 && b < CENSUS_BUCKETS; b++) {
        for (size_t i = 0; rc == 0 && i < c->bucket[b].count; i++) {
            rc = sets_add(&t, &c->bucket[b].v[i], c->bucket[b].v[i].users);
            users += c->bucket[b].v[i].users;
        }
    }
    if (rc != 0) {
        sets_free(&t);
        return rc;
    }
    sets_free(&c->total);
    c->total = t;
    c->total_users = users;
    return 0;
}

int
htkv_census_refresh(struct htkv_auth *a)
{
    struct census_cache *c = &a->census;
    int first = 0;
    bool changed = false;
    pthread_mutex_lock(&c->lock);
    for (unsigned b = 0; b < CENSUS_BUCKETS; b++) {
        int rc = refresh_bucket(a, b, &changed);
        if (rc != 0 && first == 0) {
            first = rc;
        }
    }
    if (changed) {
        int rc = census_merge(c);
        if (rc != 0 && first == 0) {
            first = rc;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return first;
}

/* High 64 bits of the 128-bit product @p x * @p y. */
static uint64_t
mul_high(uint64_t x, uint64_t y)
{
    uint64_t xl = (uint32_t)x, xh = x >> 32, yl = (uint32_t)y, yh = y >> 32;
    uint64_t ll = xl * yl, lh = xl * yh, hl = xh * yl, hh = xh * yh;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
    return hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
}

/* Pick the dummy costs of @p name from the cache (no refresh). */
static void
census_pick(struct htkv_auth *a, const char *name, struct pwhash_hash *costs)
{
    memset(costs, 0, sizeof(*costs));
    costs->memory_kib = a->pw.memory_kib;
    costs->iterations = a->pw.iterations;
    costs->lanes = a->pw.lanes;
    /* Keyed hash of the folded name (invalid names too: up to one byte past the longest). */
    char folded[HTKV_AUTH_NAME_MAX + 1];
    size_t n = strnlen(name, sizeof(folded));
    htkv_codec_name_fold(name, n, folded);
    unsigned char h[16];
    crypto_generichash(h, sizeof(h), (const unsigned char *)folded, n, a->census_key, 32);
    uint64_t r = 0;
    for (int i = 0; i < 8; i++) {
        r |= (uint64_t)h[i] << (8 * i);
    }
    sodium_memzero(folded, sizeof(folded));
    sodium_memzero(h, sizeof(h));

    struct census_cache *c = &a->census;
    pthread_mutex_lock(&c->lock);
    if (c->total_users > 0) {
        uint64_t target = mul_high(r, c->total_users); /* < total_users */
        uint64_t below = 0;
        for (size_t i = 0; i < c->total.count; i++) {
            below += c->total.v[i].users;
            if (target < below) {
                costs->memory_kib = c->total.v[i].memory_kib;
                costs->iterations = c->total.v[i].iterations;
                costs->lanes = c->total.v[i].lanes;
                break;
            }
        }
    }
    pthread_mutex_unlock(&c->lock);
}

void
htkv_census_dummy_costs(struct htkv_auth *a, const char *name, struct pwhash_hash *costs)
{
    HTKV_ASSERT(name != NULL);
    (void)htkv_census_refresh(a); /* errors: see the design note above */
    census_pick(a, name, costs);
}

/* ---- test hooks ----------------------------------------------------------------------------- */

int
htkv_auth_test_dummy_costs(htkv_auth *a, const char *name, struct htkv_auth_test_costs *out)
{
    int rc = htkv_census_refresh(a);
    if (rc != 0) {
        return rc;
    }
    struct pwhash_hash costs;
    census_pick(a, name, &costs);
    out->memory_kib = costs.memory_kib;
    out->iterations = costs.iterations;
    out->lanes = costs.lanes;
    out->users = 0;
    return 0;
}

int
htkv_auth_test_census(htkv_auth *a, struct htkv_auth_test_costs *out, size_t cap, size_t *count)
{
    int rc = htkv_census_refresh(a);
    *count = 0;
    if (rc != 0) {
        return rc;
    }
    struct census_cache *c = &a->census;
    pthread_mutex_lock(&c->lock);
    *count = c->total.count;
    for (size_t i = 0; i < c->total.count && i < cap; i++) {
        out[i].memory_kib = c->total.v[i].memory_kib;
        out[i].iterations = c->total.v[i].iterations;
        out[i].lanes = c->total.v[i].lanes;
        out[i].users = c->total.v[i].users;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}
