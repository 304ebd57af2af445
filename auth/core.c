/*
 * core.c - record keys, loading and sealing records, the key ring, auth/meta and the optimistic
 * transaction runner shared by users.c, apikey.c and auth.c.
 *
 * Design. The auth module uses only the public engine API. Every change is one htkv batch that
 * carries a condition (htkv_batch_check) for the version of every record the change was computed
 * from, plus one for auth/meta. A change that raced with another fails with HTKV_ECONFLICT and
 * is recomputed from fresh reads (htkv_core_txn), so no writer ever overwrites a record it did
 * not see: there are no lost updates and nothing deleted comes back.
 *
 * auth/meta names the current master key (its id in the envelope, its check value in the
 * header), an unfinished rotation ("rotating from" key id and check value) and the token root
 * key. Because every batch requires the auth/meta version its records were sealed under, a
 * rotation that rewrites auth/meta makes every in-flight write sealed with the old key conflict
 * and be redone with the new one; so once a rotation's first write committed, no record sealed
 * with the old key can be written any more, and one pass over all records finishes the job.
 *
 * Invariants
 *   1. Every batch written by the module checks the auth/meta version of its snapshot.
 *   2. Every record a batch was computed from is checked at the version that was read (0 for
 *      "absent"), so the batch commits only against exactly the state it saw.
 *   3. meta_version only grows: a handle never adopts an older auth/meta than it knows.
 *   4. Key ring entries are never freed or changed before htkv_auth_close(): readers use them
 *      without the lock after looking them up.
 *   5. Every decrypted body is wiped before it is freed (htkv_codec_free).
 */
#include "auth/core.h"

#include <sched.h>
#include <sodium.h>
#include <stdio.h>
#include <time.h>

/* crypto_kdf contexts of the keys derived from the token root: token hashes, dummy cost picks. */
static const char CORE_TOKEN_KDF_CTX[crypto_kdf_CONTEXTBYTES + 1] = "htkvtokn";
static const char CORE_CENSUS_KDF_CTX[crypto_kdf_CONTEXTBYTES + 1] = "htkvcens";
/* First read of a value: most records are below 512 bytes; larger ones take a second read. */
#define CORE_LOAD_FIRST_CAP 512

_Noreturn void
htkv_auth_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "htkv auth: assertion failed: %s at %s:%d in %s()\n", expr, file, line, func);
    abort();
}

/* ---- engine keys ---------------------------------------------------------------------------- */

static size_t
rkey_with_id(char *out, const char *prefix, const unsigned char *id)
{
    size_t n = strlen(prefix);
    HTKV_ASSERT(n + HTKV_AUTH_ID_LEN < CORE_RKEY_MAX);
    memcpy(out, prefix, n);
    htkv_codec_id_format(id, out + n);
    return n + HTKV_AUTH_ID_LEN;
}

size_t
htkv_core_rkey_meta(char *out)
{
    static const char k[] = "auth/meta";
    memcpy(out, k, sizeof(k));
    return sizeof(k) - 1;
}

size_t
htkv_core_rkey_user(char *out, const unsigned char *user_id)
{
    return rkey_with_id(out, "auth/user/", user_id);
}

size_t
htkv_core_rkey_name(char *out, const char *folded, size_t len)
{
    static const char p[] = "auth/user_by_name/";
    HTKV_ASSERT(len >= 1 && len <= HTKV_AUTH_NAME_MAX);
    HTKV_STATIC_ASSERT(sizeof(p) - 1 + HTKV_AUTH_NAME_MAX < CORE_RKEY_MAX, "name keys fit");
    memcpy(out, p, sizeof(p) - 1);
    memcpy(out + sizeof(p) - 1, folded, len);
    return sizeof(p) - 1 + len;
}

size_t
htkv_core_rkey_user_list(char *out, const unsigned char *user_id)
{
    static const char p[] = "auth/user_list/";
    char hex[HTKV_AUTH_ID_SIZE];
    htkv_codec_id_format(user_id, hex);
    memcpy(out, p, sizeof(p) - 1);
    out[sizeof(p) - 1] = hex[0]; /* one list per first hex digit: CORE_USER_LISTS lists */
    return sizeof(p);
}

size_t
htkv_core_rkey_census(char *out, const unsigned char *user_id)
{
    static const char p[] = "auth/census/";
    char hex[HTKV_AUTH_ID_SIZE];
    htkv_codec_id_format(user_id, hex);
    memcpy(out, p, sizeof(p) - 1);
    out[sizeof(p) - 1] = hex[0]; /* the bucket of htkv_core_rkey_user_list() */
    return sizeof(p);
}

size_t
htkv_core_rkey_user_keys(char *out, const unsigned char *user_id)
{
    return rkey_with_id(out, "auth/user_keys/", user_id);
}

size_t
htkv_core_rkey_apikey(char *out, const unsigned char *key_id)
{
    return rkey_with_id(out, "auth/apikey/", key_id);
}

/* ---- records -------------------------------------------------------------------------------- */

int
htkv_core_load(struct htkv_auth *a, const char *rkey, size_t rkey_len, struct core_rec *rec)
{
    HTKV_ASSERT(rkey_len > 0 && rkey_len < CORE_RKEY_MAX);
    memset(rec, 0, sizeof(*rec));
    size_t cap = CORE_LOAD_FIRST_CAP;
    for (;;) {
        unsigned char *buf = malloc(cap > 0 ? cap : 1);
        if (buf == NULL) {
            return -ENOMEM;
        }
        size_t len = 0;
        uint64_t version = 0;
        int rc = htkv_get_version(a->db, rkey, rkey_len, buf, cap, &len, &version);
        if (rc == 0) {
            rec->val = buf;
            rec->len = len;
            rec->version = version;
            HTKV_ASSERT(version != 0);
            return 0;
        }
        free(buf);
        if (rc != HTKV_ETOOSMALL) {
            return rc;
        }
        HTKV_ASSERT(len > cap);
        cap = len; /* the value grew between the reads: read again at the new size */
    }
}

void
htkv_core_rec_free(struct core_rec *rec)
{
    free(rec->val);
    memset(rec, 0, sizeof(*rec));
}

const struct envelope_key *
htkv_core_key_find(struct htkv_auth *a, uint32_t id)
{
    const struct envelope_key *k = NULL;
    pthread_mutex_lock(&a->lock);
    for (unsigned i = 0; i < a->key_count; i++) {
        if (a->keys[i]->id == id) {
            k = a->keys[i];
            break;
        }
    }
    pthread_mutex_unlock(&a->lock);
    return k;
}

static size_t
core_header_bytes(int kind)
{
    return kind == CORE_KIND_META ? CORE_META_HEADER_BYTES : CORE_HEADER_BYTES;
}

int
htkv_core_open(struct htkv_auth *a, const char *rkey, size_t rkey_len, const struct core_rec *rec,
               int kind, unsigned char **body, size_t *body_len, uint32_t *key_id)
{
    HTKV_ASSERT(rec->val != NULL);
    HTKV_ASSERT(rec->version != 0);
    *body = NULL;
    *body_len = 0;
    size_t hdr = core_header_bytes(kind);
    if (rec->len < hdr || rec->val[0] != CORE_FORMAT_V1 || rec->val[1] != kind) {
        return HTKV_ECORRUPT;
    }
    uint32_t id;
    int rc = htkv_envelope_key_id(rec->val, rec->len, hdr, &id);
    if (rc != 0) {
        return rc;
    }
    const struct envelope_key *k = htkv_core_key_find(a, id);
    if (k == NULL && kind != CORE_KIND_META) {
        /* Another handle may have rotated to a key we were given but have not adopted yet. */
        rc = htkv_core_meta_refresh(a);
        if (rc != 0) {
            return rc;
        }
        k = htkv_core_key_find(a, id);
    }
    if (k == NULL) {
        return kind == CORE_KIND_META ? HTKV_EAUTH : HTKV_ECORRUPT;
    }
    if (key_id != NULL) {
        *key_id = id;
    }
    return htkv_envelope_open(k, rec->val, rec->len, hdr, rkey, rkey_len, body, body_len);
}

int
htkv_core_get(struct htkv_auth *a, const char *rkey, size_t rkey_len, int kind, uint64_t *version,
              unsigned char **body, size_t *body_len, uint32_t *key_id)
{
    *body = NULL;
    *body_len = 0;
    struct core_rec rec;
    int rc = htkv_core_load(a, rkey, rkey_len, &rec);
    if (version != NULL) {
        *version = rec.version;
    }
    if (rc != 0) {
        return rc;
    }
    rc = htkv_core_open(a, rkey, rkey_len, &rec, kind, body, body_len, key_id);
    htkv_core_rec_free(&rec);
    return rc;
}

int
htkv_core_list_read(struct htkv_auth *a, const char *rkey, size_t rkey_len, int kind,
                    uint64_t *version, unsigned char **body, size_t *body_len, struct codec_list *l)
{
    memset(l, 0, sizeof(*l));
    int rc = htkv_core_get(a, rkey, rkey_len, kind, version, body, body_len, NULL);
    if (rc == HTKV_ENOTFOUND) {
        *version = 0;
        return 0;
    }
    if (rc == 0) {
        rc = htkv_codec_list_decode(*body, *body_len, l);
        if (rc != 0) {
            htkv_codec_free(*body, *body_len);
            *body = NULL;
            *body_len = 0;
        }
    }
    return rc;
}

int
htkv_core_put(struct htkv_auth *a, const struct core_snap *s, htkv_batch *b, int kind,
              const char *rkey, size_t rkey_len, const unsigned char *body, size_t body_len)
{
    HTKV_ASSERT(kind != CORE_KIND_META); /* auth/meta has its own writer */
    HTKV_ASSERT(s->key != NULL);
    HTKV_ASSERT(body != NULL && body_len > 0); /* every body has at least its version byte */
    const unsigned char hdr[CORE_HEADER_BYTES] = { CORE_FORMAT_V1, (unsigned char)kind };
    unsigned char *val;
    size_t len;
    int rc = htkv_envelope_seal(s->key, a->cipher, hdr, sizeof(hdr), rkey, rkey_len, body, body_len,
                                &val, &len);
    if (rc != 0) {
        return rc;
    }
    rc = htkv_batch_put(b, rkey, rkey_len, val, len);
    free(val);
    return rc;
}

int
htkv_core_check(htkv_batch *b, const char *rkey, size_t rkey_len, uint64_t version)
{
    return htkv_batch_check(b, rkey, rkey_len, version);
}

/* ---- clock, snapshot ------------------------------------------------------------------------ */

int64_t
htkv_core_now(struct htkv_auth *a)
{
    if (a->clock_fn != NULL) {
        return a->clock_fn(a->clock_ctx);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

void
htkv_core_snap(struct htkv_auth *a, struct core_snap *s)
{
    pthread_mutex_lock(&a->lock);
    s->key = a->current;
    s->meta_version = a->meta_version;
    pthread_mutex_unlock(&a->lock);
    HTKV_ASSERT(s->key != NULL);
    HTKV_ASSERT(s->meta_version != 0);
    s->now = htkv_core_now(a);
}

/* ---- auth/meta ------------------------------------------------------------------------------ */

/*
 * Check and decrypt an auth/meta value. The key it names must be in the ring with the same check
 * value (else the caller was given another key under that id: HTKV_EAUTH), and so must the key
 * of an unfinished rotation.
 */
static int
meta_parse(struct htkv_auth *a, const struct core_rec *rec, struct codec_meta *m,
           const struct envelope_key **cur)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_meta(rkey);
    if (rec->len < CORE_META_HEADER_BYTES || rec->val[0] != CORE_FORMAT_V1 ||
        rec->val[1] != CORE_KIND_META) {
        return HTKV_ECORRUPT;
    }
    uint32_t id;
    int rc = htkv_envelope_key_id(rec->val, rec->len, CORE_META_HEADER_BYTES, &id);
    if (rc != 0) {
        return rc;
    }
    const struct envelope_key *k = htkv_core_key_find(a, id);
    if (k == NULL ||
        sodium_memcmp(k->check, rec->val + CORE_HEADER_BYTES, ENVELOPE_CHECK_BYTES) != 0) {
        return HTKV_EAUTH;
    }
    unsigned char *body;
    size_t body_len;
    rc = htkv_envelope_open(k, rec->val, rec->len, CORE_META_HEADER_BYTES, rkey, rkey_len, &body,
                            &body_len);
    if (rc != 0) {
        return rc;
    }
    rc = htkv_codec_meta_decode(body, body_len, m);
    htkv_codec_free(body, body_len);
    if (rc == 0 && m->current_key_id != id) {
        rc = HTKV_ECORRUPT;
    }
    if (rc == 0 && m->rotating_from_key_id != 0) {
        const struct envelope_key *f = htkv_core_key_find(a, m->rotating_from_key_id);
        if (f == NULL ||
            sodium_memcmp(f->check, m->rotating_from_check, ENVELOPE_CHECK_BYTES) != 0) {
            rc = HTKV_EAUTH; /* an unfinished rotation needs its old key: previous_key */
        }
    }
    *cur = rc == 0 ? k : NULL;
    return rc;
}

/* Adopt a parsed auth/meta of @p version unless the handle already knows a newer one. */
static void
meta_adopt(struct htkv_auth *a, const struct codec_meta *m, const struct envelope_key *cur,
           uint64_t version)
{
    pthread_mutex_lock(&a->lock);
    if (version > a->meta_version) {
        a->current = cur;
        a->rotating_from = m->rotating_from_key_id;
        a->meta_version = version;
    }
    pthread_mutex_unlock(&a->lock);
}

/* Install the token root (first time) or check that auth/meta still carries the same one. */
static int
meta_token_root(struct htkv_auth *a, const struct codec_meta *m, bool first)
{
    if (!first) {
        return sodium_memcmp(a->token_root, m->token_root, 32) == 0 ? 0 : HTKV_ECORRUPT;
    }
    sodium_mprotect_readwrite(a->token_root);
    sodium_mprotect_readwrite(a->token_key);
    sodium_mprotect_readwrite(a->census_key);
    memcpy(a->token_root, m->token_root, 32);
    crypto_kdf_derive_from_key(a->token_key, 32, 1, CORE_TOKEN_KDF_CTX, a->token_root);
    crypto_kdf_derive_from_key(a->census_key, 32, 1, CORE_CENSUS_KDF_CTX, a->token_root);
    sodium_mprotect_readonly(a->token_root);
    sodium_mprotect_readonly(a->token_key);
    sodium_mprotect_readonly(a->census_key);
    return 0;
}

int
htkv_core_meta_refresh(struct htkv_auth *a)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_meta(rkey);
    struct core_rec rec;
    int rc = htkv_core_load(a, rkey, rkey_len, &rec);
    if (rc == HTKV_ENOTFOUND) {
        return HTKV_ECORRUPT; /* auth/meta is never deleted */
    }
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&a->lock);
    bool same = rec.version == a->meta_version;
    pthread_mutex_unlock(&a->lock);
    if (!same) {
        struct codec_meta m;
        const struct envelope_key *cur;
        rc = meta_parse(a, &rec, &m, &cur);
        if (rc == 0) {
            rc = meta_token_root(a, &m, false);
        }
        if (rc == 0) {
            meta_adopt(a, &m, cur, rec.version);
        }
        sodium_memzero(&m, sizeof(m));
    }
    htkv_core_rec_free(&rec);
    return rc;
}

/* Seal and write auth/meta conditional on @p expect; *version receives the new version. */
static int
meta_put(struct htkv_auth *a, const struct codec_meta *m, const struct envelope_key *k,
         uint64_t expect, uint64_t *version)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_meta(rkey);
    HTKV_ASSERT(m->current_key_id == k->id);
    HTKV_ASSERT(m->rotating_from_key_id != k->id);
    unsigned char hdr[CORE_META_HEADER_BYTES] = { CORE_FORMAT_V1, CORE_KIND_META };
    memcpy(hdr + CORE_HEADER_BYTES, k->check, ENVELOPE_CHECK_BYTES);
    unsigned char *body = NULL, *val = NULL;
    size_t body_len = 0, len = 0;
    htkv_batch *b = NULL;
    int rc = htkv_codec_meta_encode(m, &body, &body_len);
    if (rc == 0) {
        rc = htkv_envelope_seal(k, a->cipher, hdr, sizeof(hdr), rkey, rkey_len, body, body_len,
                                &val, &len);
    }
    if (rc == 0) {
        rc = htkv_batch_create(&b);
    }
    if (rc == 0) {
        rc = htkv_batch_check(b, rkey, rkey_len, expect);
    }
    if (rc == 0) {
        rc = htkv_batch_put(b, rkey, rkey_len, val, len);
    }
    if (rc == 0) {
        rc = htkv_write(a->db, b);
    }
    if (rc == 0) {
        *version = htkv_batch_version(b);
        HTKV_ASSERT(*version > expect);
    }
    htkv_batch_destroy(b);
    free(val);
    htkv_codec_free(body, body_len);
    return rc;
}

int
htkv_core_meta_init(struct htkv_auth *a, const struct envelope_key *master)
{
    char rkey[CORE_RKEY_MAX];
    size_t rkey_len = htkv_core_rkey_meta(rkey);
    int rc = HTKV_ECONFLICT;
    for (int attempt = 0; attempt < CORE_TXN_ATTEMPTS && rc == HTKV_ECONFLICT; attempt++) {
        struct core_rec rec;
        struct codec_meta m;
        memset(&m, 0, sizeof(m));
        rc = htkv_core_load(a, rkey, rkey_len, &rec);
        if (rc == HTKV_ENOTFOUND) {
            /* A fresh store: this handle's master key becomes the store's key. */
            m.current_key_id = master->id;
            randombytes_buf(m.token_root, sizeof(m.token_root));
            uint64_t version = 0;
            rc = meta_put(a, &m, master, 0, &version);
            if (rc == 0) {
                rc = meta_token_root(a, &m, true);
                meta_adopt(a, &m, master, version);
            }
        } else if (rc == 0) {
            const struct envelope_key *cur;
            rc = meta_parse(a, &rec, &m, &cur);
            if (rc == 0) {
                rc = meta_token_root(a, &m, true);
                meta_adopt(a, &m, cur, rec.version);
            }
            htkv_core_rec_free(&rec);
        }
        sodium_memzero(&m, sizeof(m));
    }
    return rc;
}

int
htkv_core_meta_write(struct htkv_auth *a, const struct envelope_key *current,
                     const struct envelope_key *from)
{
    HTKV_ASSERT(current != NULL);
    struct codec_meta m;
    memset(&m, 0, sizeof(m));
    m.current_key_id = current->id;
    if (from != NULL) {
        HTKV_ASSERT(from->id != current->id);
        m.rotating_from_key_id = from->id;
        memcpy(m.rotating_from_check, from->check, ENVELOPE_CHECK_BYTES);
    }
    memcpy(m.token_root, a->token_root, sizeof(m.token_root));
    pthread_mutex_lock(&a->lock);
    uint64_t expect = a->meta_version;
    pthread_mutex_unlock(&a->lock);
    uint64_t version = 0;
    int rc = meta_put(a, &m, current, expect, &version);
    if (rc == 0) {
        meta_adopt(a, &m, current, version);
    }
    sodium_memzero(&m, sizeof(m));
    return rc;
}

/* ---- transactions --------------------------------------------------------------------------- */

/* Test hook: a pause between preparing and writing a batch, for the calling thread only. */
static _Thread_local long core_test_txn_delay_us;

void
htkv_auth_test_txn_delay(long us)
{
    core_test_txn_delay_us = us;
}

/* Back off after a conflict: yield first, then sleep up to 2^attempt us (at most ~1 ms). */
static void
core_backoff(int attempt)
{
    if (attempt == 0) {
        sched_yield();
        return;
    }
    uint32_t cap_us = attempt < 10 ? 1u << attempt : 1024u;
    struct timespec ts = { 0, (long)randombytes_uniform(cap_us) * 1000L };
    nanosleep(&ts, NULL);
}

int
htkv_core_txn(struct htkv_auth *a, htkv_core_txn_fn fn, void *ctx)
{
    char mkey[CORE_RKEY_MAX];
    size_t mkey_len = htkv_core_rkey_meta(mkey);
    HTKV_ASSERT(a != NULL);
    HTKV_ASSERT(fn != NULL);
    htkv_batch *b;
    int rc = htkv_batch_create(&b);
    if (rc != 0) {
        return rc;
    }
    for (int attempt = 0; attempt < CORE_TXN_ATTEMPTS; attempt++) {
        struct core_snap s;
        htkv_core_snap(a, &s);
        htkv_batch_clear(b);
        rc = fn(a, b, &s, ctx);
        if (rc == CORE_TXN_NOOP) {
            rc = 0;
            break;
        }
        if (rc == 0) {
            rc = htkv_batch_check(b, mkey, mkey_len, s.meta_version);
        }
        if (rc == 0 && core_test_txn_delay_us > 0) {
            struct timespec ts = { 0, core_test_txn_delay_us * 1000L };
            nanosleep(&ts, NULL);
        }
        if (rc == 0) {
            rc = htkv_write(a->db, b);
        }
        if (rc != HTKV_ECONFLICT) {
            break;
        }
        int refresh = htkv_core_meta_refresh(a);
        if (refresh != 0) {
            rc = refresh;
            break;
        }
        core_backoff(attempt);
    }
    htkv_batch_destroy(b);
    return rc;
}

/* ---- output --------------------------------------------------------------------------------- */

void
htkv_core_user_out(const struct codec_user *u, uint32_t key_id, struct htkv_auth_user *out)
{
    memset(out, 0, sizeof(*out));
    htkv_codec_id_format(u->id, out->id);
    memcpy(out->name, u->name, u->name_len);
    out->name[u->name_len] = '\0';
    out->created_at = u->created_at;
    out->password_changed_at = u->password_changed_at;
    out->metadata_len = u->meta_len;
    out->key_id = key_id;
}

void
htkv_core_key_out(const struct codec_key *k, uint32_t key_id, struct htkv_auth_api_key *out)
{
    memset(out, 0, sizeof(*out));
    htkv_codec_id_format(k->id, out->id);
    htkv_codec_id_format(k->user, out->user_id);
    memcpy(out->label, k->label, k->label_len);
    out->label[k->label_len] = '\0';
    out->created_at = k->created_at;
    out->expires_at = k->expires_at;
    out->last_used_at = k->last_used_at;
    out->metadata_len = k->meta_len;
    out->key_id = key_id;
}

int
htkv_core_meta_copy(const unsigned char *meta, size_t meta_len, void *buf, size_t cap, size_t *len)
{
    *len = meta_len;
    if (meta_len > cap) {
        return HTKV_ETOOSMALL;
    }
    if (meta_len > 0) {
        memcpy(buf, meta, meta_len);
    }
    return 0;
}
