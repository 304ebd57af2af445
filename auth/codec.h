/*
 * codec.h - plaintext bodies of the auth records, names, ids and hex (see codec.c).
 */
#ifndef HTKV_AUTH_CODEC_H
#define HTKV_AUTH_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <htkv/auth.h>

#include "auth/pwhash.h"

/** Raw bytes of a user or key id (128 bits). */
#define CODEC_ID_BYTES 16
/** Raw bytes of an API key secret (256 bits) and of its keyed hash. */
#define CODEC_SECRET_BYTES 32
#define CODEC_TOKEN_HASH_BYTES 32
/** Version byte that starts every plaintext body. */
#define CODEC_BODY_V1 1

/** Decoded user record body. meta is a view into the decoded body. */
struct codec_user {
    unsigned char id[CODEC_ID_BYTES];
    char name[HTKV_AUTH_NAME_MAX + 1]; /* NUL-terminated, case kept */
    size_t name_len;
    int64_t created_at;
    int64_t password_changed_at;
    struct pwhash_hash pw;
    const unsigned char *meta;
    size_t meta_len;
};

/** Decoded API key record body. meta is a view into the decoded body. */
struct codec_key {
    unsigned char id[CODEC_ID_BYTES];
    unsigned char user[CODEC_ID_BYTES];
    unsigned char token_hash[CODEC_TOKEN_HASH_BYTES];
    int64_t created_at;
    int64_t expires_at;
    int64_t last_used_at;
    char label[HTKV_AUTH_LABEL_MAX + 1];
    size_t label_len;
    const unsigned char *meta;
    size_t meta_len;
};

/** Decoded id list (user list bucket or a user's key list). ids is a view: count x 16 bytes. */
struct codec_list {
    uint32_t count;
    const unsigned char *ids;
};

/** One Argon2 parameter set of a census and the number of users whose hash uses it. */
struct codec_census_set {
    uint32_t memory_kib;
    uint32_t iterations;
    uint32_t lanes;
    uint64_t users; /* >= 1 */
};

/** Decoded census body. raw is a view: count entries of CODEC_CENSUS_SET_BYTES each. */
struct codec_census {
    uint32_t count;
    const unsigned char *raw;
};
#define CODEC_CENSUS_SET_BYTES 20

/** Decoded auth/meta body. */
struct codec_meta {
    uint32_t current_key_id;
    uint32_t rotating_from_key_id; /* 0 = no rotation in progress */
    unsigned char rotating_from_check[16];
    unsigned char token_root[32];
};

/*
 * Encoders allocate *out with malloc (the caller wipes and frees it with htkv_codec_free());
 * they return 0 or -ENOMEM. Decoders return 0 or HTKV_ECORRUPT and never read past len.
 */
int htkv_codec_user_encode(const struct codec_user *u, unsigned char **out, size_t *len);
int htkv_codec_user_decode(const unsigned char *body, size_t len, struct codec_user *u);
int htkv_codec_key_encode(const struct codec_key *k, unsigned char **out, size_t *len);
int htkv_codec_key_decode(const unsigned char *body, size_t len, struct codec_key *k);
int htkv_codec_name_encode(const unsigned char *user_id, unsigned char **out, size_t *len);
int htkv_codec_name_decode(const unsigned char *body, size_t len, unsigned char *user_id);
int htkv_codec_meta_encode(const struct codec_meta *m, unsigned char **out, size_t *len);
int htkv_codec_meta_decode(const unsigned char *body, size_t len, struct codec_meta *m);
/* Census: @p count sets, strictly ascending (htkv_codec_census_cmp), each with users >= 1 and
 * costs within bounds; the decoder checks all of it. */
int htkv_codec_census_encode(const struct codec_census_set *sets, uint32_t count,
                             unsigned char **out, size_t *len);
int htkv_codec_census_decode(const unsigned char *body, size_t len, struct codec_census *c);
/* Set @p i (< c->count) of a decoded census. */
void htkv_codec_census_get(const struct codec_census *c, uint32_t i, struct codec_census_set *set);
/* Order of census sets: by memory, then iterations, then lanes (users ignored). */
int htkv_codec_census_cmp(const struct codec_census_set *x, const struct codec_census_set *y);
/* Encode @p l with @p add appended (unless NULL) and every copy of @p remove left out. */
int htkv_codec_list_encode(const struct codec_list *l, const unsigned char *add,
                           const unsigned char *remove, unsigned char **out, size_t *len);
int htkv_codec_list_decode(const unsigned char *body, size_t len, struct codec_list *l);
/* True when @p l holds @p id. */
bool htkv_codec_list_has(const struct codec_list *l, const unsigned char *id);
/* Wipe and free an encoded or decrypted body; NULL is accepted. */
void htkv_codec_free(unsigned char *body, size_t len);

/*
 * Check a user name or label: 1..max bytes (0..max with allow_empty) of valid UTF-8 without
 * control characters, no leading or trailing space, NUL-terminated within max + 1 bytes.
 * Returns 0 with *len set, or -EINVAL.
 */
int htkv_codec_name_check(const char *name, size_t max, bool allow_empty, size_t *len);
/* ASCII-lowercase @p len bytes of @p name into @p out (not NUL-terminated). */
void htkv_codec_name_fold(const char *name, size_t len, char *out);
/* Parse exactly 32 lowercase hex digits and a NUL into 16 bytes; 0 or -EINVAL. */
int htkv_codec_id_parse(const char *hex, unsigned char *id);
/* Write 16 bytes as 32 lowercase hex digits and a NUL. */
void htkv_codec_id_format(const unsigned char *id, char *hex);
/* Lowercase hex: encode n bytes into 2n chars (no NUL); decode 2n chars, 0 or -EINVAL. */
void htkv_codec_hex_encode(const unsigned char *in, size_t n, char *out);
int htkv_codec_hex_decode(const char *in, size_t n, unsigned char *out);

#endif
