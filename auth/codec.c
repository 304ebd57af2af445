/*
 * codec.c - plaintext bodies of the auth records, and the checks on names, ids and hex.
 *
 * Design. A body is what an envelope seals (envelope.c); it never reaches the disk in clear.
 * Every body starts with a version byte (CODEC_BODY_V1) so that a later release can change a
 * layout and still read the old one. Integers are little-endian, fixed width. Layouts (v1):
 *
 *   user  : ver | id[16] | name_len u8 | name | created_at i64 | password_changed_at i64
 *           | memory_kib u32 | iterations u32 | lanes u32 | salt[16] | hash[32]
 *           | meta_len u32 | meta
 *   key   : ver | id[16] | user id[16] | token_hash[32] | created_at i64 | expires_at i64
 *           | last_used_at i64 | label_len u8 | label | meta_len u32 | meta
 *   name  : ver | user id[16]
 *   list  : ver | count u32 | ids[count][16]
 *   meta  : ver | current key id u32 | rotating-from key id u32 | rotating-from check[16]
 *           | token root key[32]
 *   census: ver | count u32 | count x (memory_kib u32 | iterations u32 | lanes u32 | users u64),
 *           sets strictly ascending by (memory, iterations, lanes), users >= 1
 *
 * Decoders treat bodies as input even though the envelope authenticated them: every length is
 * checked, every name re-validated, every byte accounted for (no trailing garbage).
 *
 * Invariants
 *   1. A decoder never reads outside [body, body + len) and returns HTKV_ECORRUPT on any
 *      mismatch; views it returns point into the body.
 *   2. encode(decode(x)) == x for every valid body.
 *   3. Buffers that held a body are wiped before they are freed (htkv_codec_free).
 */
#include "auth/core.h"

#include <sodium.h>

/* ---- little-endian writer and reader -------------------------------------------------------- */

struct wcur {
    unsigned char *p;
    size_t cap;
    size_t off;
};

static void
put_bytes(struct wcur *w, const void *src, size_t n)
{
    HTKV_ASSERT(w->off + n <= w->cap);
    if (n > 0) {
        memcpy(w->p + w->off, src, n);
    }
    w->off += n;
}

static void
put_u8(struct wcur *w, uint8_t v)
{
    put_bytes(w, &v, 1);
}

static void
put_u32(struct wcur *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (unsigned char)(v >> (8 * i));
    }
    put_bytes(w, b, 4);
}

static void
put_i64(struct wcur *w, int64_t v)
{
    unsigned char b[8];
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(u >> (8 * i));
    }
    put_bytes(w, b, 8);
}

struct rcur {
    const unsigned char *p;
    size_t len;
    size_t off;
    bool bad;
};

static const unsigned char *
get_bytes(struct rcur *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *s = r->p + r->off;
    r->off += n;
    return s;
}

static void
get_copy(struct rcur *r, void *dst, size_t n)
{
    const unsigned char *s = get_bytes(r, n);
    if (s != NULL) {
        memcpy(dst, s, n);
    } else {
        memset(dst, 0, n);
    }
}

static uint8_t
get_u8(struct rcur *r)
{
    const unsigned char *s = get_bytes(r, 1);
    return s != NULL ? s[0] : 0;
}

static uint32_t
get_u32(struct rcur *r)
{
    const unsigned char *s = get_bytes(r, 4);
    if (s == NULL) {
        return 0;
    }
    return (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
}

static uint64_t
get_u64(struct rcur *r)
{
    const unsigned char *s = get_bytes(r, 8);
    uint64_t u = 0;
    for (int i = 0; s != NULL && i < 8; i++) {
        u |= (uint64_t)s[i] << (8 * i);
    }
    return u;
}

static int64_t
get_i64(struct rcur *r)
{
    return (int64_t)get_u64(r);
}

/* Start a reader on @p body: the version byte must be CODEC_BODY_V1. */
static struct rcur
rcur_start(const unsigned char *body, size_t len)
{
    struct rcur r = { .p = body, .len = len, .off = 0, .bad = false };
    if (get_u8(&r) != CODEC_BODY_V1) {
        r.bad = true;
    }
    return r;
}

/* A reader ends well when nothing failed and every byte was consumed. */
static int
rcur_end(const struct rcur *r)
{
    return r->bad || r->off != r->len ? HTKV_ECORRUPT : 0;
}

static int
wcur_alloc(struct wcur *w, size_t cap)
{
    w->p = malloc(cap);
    w->cap = cap;
    w->off = 0;
    return w->p == NULL ? -ENOMEM : 0;
}

static void
wcur_done(struct wcur *w, unsigned char **out, size_t *len)
{
    HTKV_ASSERT(w->off == w->cap); /* sizes are computed exactly */
    *out = w->p;
    *len = w->off;
}

void
htkv_codec_free(unsigned char *body, size_t len)
{
    if (body != NULL) {
        sodium_memzero(body, len);
        free(body);
    }
}

/* Copy a decoded name or label of n bytes (checked as one) into dst[max + 1]. */
static void
get_name(struct rcur *r, size_t n, size_t max, bool allow_empty, char *dst, size_t *dst_len)
{
    const unsigned char *s = n <= max ? get_bytes(r, n) : NULL;
    dst[0] = '\0';
    *dst_len = 0;
    if (s == NULL) {
        r->bad = true;
        return;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    size_t checked;
    if (htkv_codec_name_check(dst, max, allow_empty, &checked) != 0 || checked != n) {
        r->bad = true;
        return;
    }
    *dst_len = n;
}

/* ---- user ----------------------------------------------------------------------------------- */

int
htkv_codec_user_encode(const struct codec_user *u, unsigned char **out, size_t *len)
{
    HTKV_ASSERT(u->name_len >= 1 && u->name_len <= HTKV_AUTH_NAME_MAX);
    HTKV_ASSERT(u->meta_len <= HTKV_AUTH_METADATA_MAX);
    struct wcur w;
    size_t cap = 1 + CODEC_ID_BYTES + 1 + u->name_len + 8 + 8 + 12 + PWHASH_SALT_BYTES +
                 PWHASH_HASH_BYTES + 4 + u->meta_len;
    if (wcur_alloc(&w, cap) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_bytes(&w, u->id, CODEC_ID_BYTES);
    put_u8(&w, (uint8_t)u->name_len);
    put_bytes(&w, u->name, u->name_len);
    put_i64(&w, u->created_at);
    put_i64(&w, u->password_changed_at);
    put_u32(&w, u->pw.memory_kib);
    put_u32(&w, u->pw.iterations);
    put_u32(&w, u->pw.lanes);
    put_bytes(&w, u->pw.salt, PWHASH_SALT_BYTES);
    put_bytes(&w, u->pw.hash, PWHASH_HASH_BYTES);
    put_u32(&w, (uint32_t)u->meta_len);
    put_bytes(&w, u->meta, u->meta_len);
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_user_decode(const unsigned char *body, size_t len, struct codec_user *u)
{
    memset(u, 0, sizeof(*u));
    struct rcur r = rcur_start(body, len);
    get_copy(&r, u->id, CODEC_ID_BYTES);
    size_t name_len = get_u8(&r);
    get_name(&r, name_len, HTKV_AUTH_NAME_MAX, false, u->name, &u->name_len);
    u->created_at = get_i64(&r);
    u->password_changed_at = get_i64(&r);
    u->pw.memory_kib = get_u32(&r);
    u->pw.iterations = get_u32(&r);
    u->pw.lanes = get_u32(&r);
    get_copy(&r, u->pw.salt, PWHASH_SALT_BYTES);
    get_copy(&r, u->pw.hash, PWHASH_HASH_BYTES);
    u->meta_len = get_u32(&r);
    if (u->meta_len > HTKV_AUTH_METADATA_MAX) {
        r.bad = true;
    }
    u->meta = get_bytes(&r, u->meta_len);
    if (!htkv_pwhash_costs_ok(u->pw.memory_kib, u->pw.iterations, u->pw.lanes)) {
        r.bad = true;
    }
    return rcur_end(&r);
}

/* ---- API key -------------------------------------------------------------------------------- */

int
htkv_codec_key_encode(const struct codec_key *k, unsigned char **out, size_t *len)
{
    HTKV_ASSERT(k->label_len <= HTKV_AUTH_LABEL_MAX);
    HTKV_ASSERT(k->meta_len <= HTKV_AUTH_METADATA_MAX);
    struct wcur w;
    size_t cap = 1 + 2 * CODEC_ID_BYTES + CODEC_TOKEN_HASH_BYTES + 3 * 8 + 1 + k->label_len + 4 +
                 k->meta_len;
    if (wcur_alloc(&w, cap) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_bytes(&w, k->id, CODEC_ID_BYTES);
    put_bytes(&w, k->user, CODEC_ID_BYTES);
    put_bytes(&w, k->token_hash, CODEC_TOKEN_HASH_BYTES);
    put_i64(&w, k->created_at);
    put_i64(&w, k->expires_at);
    put_i64(&w, k->last_used_at);
    put_u8(&w, (uint8_t)k->label_len);
    put_bytes(&w, k->label, k->label_len);
    put_u32(&w, (uint32_t)k->meta_len);
    put_bytes(&w, k->meta, k->meta_len);
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_key_decode(const unsigned char *body, size_t len, struct codec_key *k)
{
    memset(k, 0, sizeof(*k));
    struct rcur r = rcur_start(body, len);
    get_copy(&r, k->id, CODEC_ID_BYTES);
    get_copy(&r, k->user, CODEC_ID_BYTES);
    get_copy(&r, k->token_hash, CODEC_TOKEN_HASH_BYTES);
    k->created_at = get_i64(&r);
    k->expires_at = get_i64(&r);
    k->last_used_at = get_i64(&r);
    size_t label_len = get_u8(&r);
    get_name(&r, label_len, HTKV_AUTH_LABEL_MAX, true, k->label, &k->label_len);
    k->meta_len = get_u32(&r);
    if (k->meta_len > HTKV_AUTH_METADATA_MAX) {
        r.bad = true;
    }
    k->meta = get_bytes(&r, k->meta_len);
    return rcur_end(&r);
}

/* ---- name index, lists, meta ---------------------------------------------------------------- */

int
htkv_codec_name_encode(const unsigned char *user_id, unsigned char **out, size_t *len)
{
    struct wcur w;
    if (wcur_alloc(&w, 1 + CODEC_ID_BYTES) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_bytes(&w, user_id, CODEC_ID_BYTES);
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_name_decode(const unsigned char *body, size_t len, unsigned char *user_id)
{
    struct rcur r = rcur_start(body, len);
    get_copy(&r, user_id, CODEC_ID_BYTES);
    return rcur_end(&r);
}

bool
htkv_codec_list_has(const struct codec_list *l, const unsigned char *id)
{
    for (uint32_t i = 0; i < l->count; i++) {
        if (memcmp(l->ids + (size_t)i * CODEC_ID_BYTES, id, CODEC_ID_BYTES) == 0) {
            return true;
        }
    }
    return false;
}

int
htkv_codec_list_encode(const struct codec_list *l, const unsigned char *add,
                       const unsigned char *remove, unsigned char **out, size_t *len)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < l->count; i++) {
        const unsigned char *id = l->ids + (size_t)i * CODEC_ID_BYTES;
        keep += remove == NULL || memcmp(id, remove, CODEC_ID_BYTES) != 0;
    }
    uint32_t count = keep + (add != NULL);
    HTKV_ASSERT(count >= keep); /* no wrap: lists are bounded by the value size */
    struct wcur w;
    if (wcur_alloc(&w, 1 + 4 + (size_t)count * CODEC_ID_BYTES) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_u32(&w, count);
    for (uint32_t i = 0; i < l->count; i++) {
        const unsigned char *id = l->ids + (size_t)i * CODEC_ID_BYTES;
        if (remove == NULL || memcmp(id, remove, CODEC_ID_BYTES) != 0) {
            put_bytes(&w, id, CODEC_ID_BYTES);
        }
    }
    if (add != NULL) {
        put_bytes(&w, add, CODEC_ID_BYTES);
    }
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_list_decode(const unsigned char *body, size_t len, struct codec_list *l)
{
    HTKV_ASSERT(body != NULL || len == 0);
    struct rcur r = rcur_start(body, len);
    l->count = get_u32(&r);
    if ((size_t)l->count > (len / CODEC_ID_BYTES)) {
        r.bad = true;
    }
    l->ids = get_bytes(&r, (size_t)l->count * CODEC_ID_BYTES);
    if (r.bad) {
        l->count = 0;
        l->ids = NULL;
    }
    return rcur_end(&r);
}

int
htkv_codec_meta_encode(const struct codec_meta *m, unsigned char **out, size_t *len)
{
    struct wcur w;
    if (wcur_alloc(&w, 1 + 4 + 4 + sizeof(m->rotating_from_check) + sizeof(m->token_root)) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_u32(&w, m->current_key_id);
    put_u32(&w, m->rotating_from_key_id);
    put_bytes(&w, m->rotating_from_check, sizeof(m->rotating_from_check));
    put_bytes(&w, m->token_root, sizeof(m->token_root));
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_meta_decode(const unsigned char *body, size_t len, struct codec_meta *m)
{
    struct rcur r = rcur_start(body, len);
    m->current_key_id = get_u32(&r);
    m->rotating_from_key_id = get_u32(&r);
    get_copy(&r, m->rotating_from_check, sizeof(m->rotating_from_check));
    get_copy(&r, m->token_root, sizeof(m->token_root));
    if (m->current_key_id == 0 || m->rotating_from_key_id == m->current_key_id) {
        r.bad = true;
    }
    return rcur_end(&r);
}

/* ---- census -------------------------------------------------------------------------------- */

int
htkv_codec_census_cmp(const struct codec_census_set *x, const struct codec_census_set *y)
{
    if (x->memory_kib != y->memory_kib) {
        return x->memory_kib < y->memory_kib ? -1 : 1;
    }
    if (x->iterations != y->iterations) {
        return x->iterations < y->iterations ? -1 : 1;
    }
    if (x->lanes != y->lanes) {
        return x->lanes < y->lanes ? -1 : 1;
    }
    return 0;
}

int
htkv_codec_census_encode(const struct codec_census_set *sets, uint32_t count, unsigned char **out,
                         size_t *len)
{
    HTKV_ASSERT(sets != NULL || count == 0);
    struct wcur w;
    if (wcur_alloc(&w, 1 + 4 + (size_t)count * CODEC_CENSUS_SET_BYTES) != 0) {
        return -ENOMEM;
    }
    put_u8(&w, CODEC_BODY_V1);
    put_u32(&w, count);
    for (uint32_t i = 0; i < count; i++) {
        HTKV_ASSERT(sets[i].users >= 1);
        HTKV_ASSERT(i == 0 || htkv_codec_census_cmp(&sets[i - 1], &sets[i]) < 0);
        put_u32(&w, sets[i].memory_kib);
        put_u32(&w, sets[i].iterations);
        put_u32(&w, sets[i].lanes);
        put_i64(&w, (int64_t)sets[i].users);
    }
    wcur_done(&w, out, len);
    return 0;
}

int
htkv_codec_census_decode(const unsigned char *body, size_t len, struct codec_census *c)
{
    HTKV_ASSERT(body != NULL || len == 0);
    struct rcur r = rcur_start(body, len);
    c->count = get_u32(&r);
    if ((size_t)c->count > len / CODEC_CENSUS_SET_BYTES) {
        r.bad = true;
    }
    c->raw = get_bytes(&r, (size_t)c->count * CODEC_CENSUS_SET_BYTES);
    struct codec_census_set prev = { 0 };
    for (uint32_t i = 0; !r.bad && i < c->count; i++) {
        struct codec_census_set cur;
        htkv_codec_census_get(c, i, &cur);
        if (cur.users == 0 || !htkv_pwhash_costs_ok(cur.memory_kib, cur.iterations, cur.lanes) ||
            (i > 0 && htkv_codec_census_cmp(&prev, &cur) >= 0)) {
            r.bad = true;
        }
        prev = cur;
    }
    if (r.bad) {
        c->count = 0;
        c->raw = NULL;
    }
    return rcur_end(&r);
}

void
htkv_codec_census_get(const struct codec_census *c, uint32_t i, struct codec_census_set *set)
{
    HTKV_ASSERT(i < c->count);
    struct rcur r = { .p = c->raw + (size_t)i * CODEC_CENSUS_SET_BYTES,
                      .len = CODEC_CENSUS_SET_BYTES,
                      .off = 0,
                      .bad = false };
    set->memory_kib = get_u32(&r);
    set->iterations = get_u32(&r);
    set->lanes = get_u32(&r);
    set->users = get_u64(&r);
    HTKV_ASSERT(!r.bad);
}

/* ---- names, ids, hex ------------------------------------------------------------------------ */

/*
 * Length of the UTF-8 sequence at s (n bytes available) if it is a valid, shortest-form encoding
 * of a scalar value that is not a control character; 0 otherwise.
 */
static size_t
utf8_char(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) {
        return c >= 0x20 && c != 0x7f ? 1 : 0;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0; /* continuation byte, overlong lead (c0, c1) or beyond U+10FFFF */
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0; /* overlong, out of range or a surrogate */
    }
    if (cp >= 0x80 && cp <= 0x9f) {
        return 0; /* C1 control */
    }
    return len;
}

int
htkv_codec_name_check(const char *name, size_t max, bool allow_empty, size_t *len)
{
    if (name == NULL) {
        return -EINVAL;
    }
    size_t n = strnlen(name, max + 1);
    if (n > max || (n == 0 && !allow_empty)) {
        return -EINVAL;
    }
    if (n > 0 && (name[0] == ' ' || name[n - 1] == ' ')) {
        return -EINVAL;
    }
    const unsigned char *s = (const unsigned char *)name;
    for (size_t i = 0; i < n;) {
        size_t step = utf8_char(s + i, n - i);
        if (step == 0) {
            return -EINVAL;
        }
        i += step;
    }
    *len = n;
    return 0;
}

void
htkv_codec_name_fold(const char *name, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

void
htkv_codec_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

int
htkv_codec_hex_decode(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(in[2 * i]);
        int lo = hex_value(in[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return -EINVAL;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int
htkv_codec_id_parse(const char *hex, unsigned char *id)
{
    if (hex == NULL || strnlen(hex, HTKV_AUTH_ID_LEN + 1) != HTKV_AUTH_ID_LEN) {
        return -EINVAL;
    }
    return htkv_codec_hex_decode(hex, CODEC_ID_BYTES, id);
}

void
htkv_codec_id_format(const unsigned char *id, char *hex)
{
    htkv_codec_hex_encode(id, CODEC_ID_BYTES, hex);
    hex[HTKV_AUTH_ID_LEN] = '\0';
}
