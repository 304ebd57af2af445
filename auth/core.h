/*
 * core.h - the auth handle and what every auth module shares: assertions, record keys, loading
 * and sealing records, the key ring and the optimistic transaction runner (see core.c).
 *
 * Every auth .c includes this file first. Nothing here is part of the public API.
 */
#ifndef HTKV_AUTH_CORE_H
#define HTKV_AUTH_CORE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/auth.h>
#include <htkv/htkv.h>

#include "auth/census.h"
#include "auth/codec.h"
#include "auth/envelope.h"
#include "auth/pwhash.h"

/* Assertions (STYLE S5). The engine's internal.h is not ours to include: auth uses only the
 * public engine API, so it carries its own always-on assertion. */
_Noreturn void htkv_auth_assert_fail(const char *expr, const char *file, int line,
                                     const char *func);
#ifndef HTKV_ASSERT
#define HTKV_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0)) {                                                        \
            htkv_auth_assert_fail(#cond, __FILE__, __LINE__, __func__);                            \
        }                                                                                          \
    } while (0)
#endif
#ifndef HTKV_STATIC_ASSERT
#define HTKV_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

/* Format version byte that starts every auth value. */
#define CORE_FORMAT_V1 1
/* Record kinds: the second byte of every value. */
#define CORE_KIND_META 'M'
#define CORE_KIND_USER 'U'
#define CORE_KIND_NAME 'N'
#define CORE_KIND_USER_LIST 'L'
#define CORE_KIND_USER_KEYS 'K'
#define CORE_KIND_APIKEY 'A'
#define CORE_KIND_CENSUS 'C'
/* Header bytes before the envelope: format + kind, and for auth/meta the current key's check. */
#define CORE_HEADER_BYTES 2
#define CORE_META_HEADER_BYTES (CORE_HEADER_BYTES + ENVELOPE_CHECK_BYTES)
/* Number of user list buckets: one per first hex digit of the user id. */
#define CORE_USER_LISTS 16
/* Key ring size: master + previous + rotations during the handle's life. */
#define CORE_KEYRING_MAX 16
/* Attempts of an optimistic transaction before HTKV_ECONFLICT (each re-reads what it needs). */
#define CORE_TXN_ATTEMPTS 200
/* Longest engine key built here: "auth/user_by_name/" (18) + 64-byte name = 82. */
#define CORE_RKEY_MAX 96
/* A transaction function's answer "nothing to write": the runner returns 0. */
#define CORE_TXN_NOOP 1

struct htkv_auth {
    htkv_db *db;                 /* kept until htkv_auth_close() */
    int cipher;                  /* ENVELOPE_* for new seals */
    htkv_auth_clock_fn clock_fn; /* NULL = CLOCK_REALTIME */
    void *clock_ctx;
    struct pwhash pw;
    unsigned char *token_key;   /* sodium_malloc: BLAKE2b key of token hashes (kdf of the root) */
    unsigned char *token_root;  /* sodium_malloc: the root stored sealed in auth/meta */
    unsigned char *census_key;  /* sodium_malloc: BLAKE2b key of dummy cost picks (kdf of root) */
    struct census_cache census; /* the census records as last read (census.c) */
    atomic_bool rehash_off;     /* set when an upgrade of a hash met a read-only store */

    pthread_mutex_t lock;                        /* guards the fields below */
    struct envelope_key *keys[CORE_KEYRING_MAX]; /* appended only; freed at close */
    unsigned key_count;
    const struct envelope_key *current; /* seals new records; one of keys[] */
    uint32_t rotating_from;             /* key id of an unfinished rotation, 0 = none */
    uint64_t meta_version;              /* engine version of auth/meta as last read or written */

    pthread_mutex_t rotate_lock;       /* one rotation at a time */
    _Atomic long test_rotation_budget; /* writes left to a rotation; -1 = no limit (tests) */
};

/* What a write was prepared against: the sealing key and the auth/meta version it requires. */
struct core_snap {
    const struct envelope_key *key;
    uint64_t meta_version;
    int64_t now;
};

/* A record as read from the engine: raw value and its version (0 and NULL when absent). */
struct core_rec {
    unsigned char *val;
    size_t len;
    uint64_t version;
};

/* Engine keys. Each returns the key length; out has CORE_RKEY_MAX bytes. */
size_t htkv_core_rkey_meta(char *out);
size_t htkv_core_rkey_user(char *out, const unsigned char *user_id);
size_t htkv_core_rkey_name(char *out, const char *folded, size_t len);
size_t htkv_core_rkey_user_list(char *out, const unsigned char *user_id);
size_t htkv_core_rkey_user_keys(char *out, const unsigned char *user_id);
size_t htkv_core_rkey_apikey(char *out, const unsigned char *key_id);
/* "auth/census/<h>": the census of the user list bucket of @p user_id (census.c). */
size_t htkv_core_rkey_census(char *out, const unsigned char *user_id);

/* Read a raw value with its version. 0; HTKV_ENOTFOUND (rec zeroed); -ENOMEM; engine errors. */
int htkv_core_load(struct htkv_auth *a, const char *rkey, size_t rkey_len, struct core_rec *rec);
void htkv_core_rec_free(struct core_rec *rec);
/*
 * Check the header of @p rec (format, @p kind) and open its envelope with the key it names.
 * *body is malloc'ed (free with htkv_codec_free). 0; HTKV_ECORRUPT; HTKV_EAUTH (sealed with a
 * key this handle lacks, after a refresh of auth/meta); -ENOTSUP; -ENOMEM.
 */
int htkv_core_open(struct htkv_auth *a, const char *rkey, size_t rkey_len,
                   const struct core_rec *rec, int kind, unsigned char **body, size_t *body_len,
                   uint32_t *key_id);
/* htkv_core_load() then htkv_core_open(); version receives the record's version (may be NULL). */
int htkv_core_get(struct htkv_auth *a, const char *rkey, size_t rkey_len, int kind,
                  uint64_t *version, unsigned char **body, size_t *body_len, uint32_t *key_id);
/* Read an id list (user list or key list); an absent list reads as empty with version 0. */
int htkv_core_list_read(struct htkv_auth *a, const char *rkey, size_t rkey_len, int kind,
                        uint64_t *version, unsigned char **body, size_t *body_len,
                        struct codec_list *l);
/* Seal @p body as a @p kind record under @p rkey with the snapshot's key and add a put to @p b. */
int htkv_core_put(struct htkv_auth *a, const struct core_snap *s, htkv_batch *b, int kind,
                  const char *rkey, size_t rkey_len, const unsigned char *body, size_t body_len);

/* Current sealing key, auth/meta version and time. */
void htkv_core_snap(struct htkv_auth *a, struct core_snap *s);
/* Key of id @p id, or NULL. */
const struct envelope_key *htkv_core_key_find(struct htkv_auth *a, uint32_t id);
/* Re-read auth/meta if it changed since the handle last saw it, and adopt its state. */
int htkv_core_meta_refresh(struct htkv_auth *a);
/*
 * Load and adopt auth/meta, or create it sealed with @p master on a fresh store. 0; HTKV_EAUTH
 * (the store's key is not in the ring, or differs from the one given under its id);
 * HTKV_ECORRUPT; HTKV_ECONFLICT; -ENOMEM; engine errors.
 */
int htkv_core_meta_init(struct htkv_auth *a, const struct envelope_key *master);
/*
 * Write auth/meta naming @p current (and a rotation from @p from, or none when NULL),
 * conditional on the auth/meta version the handle knows, and adopt it. 0; HTKV_ECONFLICT
 * (auth/meta changed meanwhile: refresh and decide again); -ENOMEM; engine errors.
 */
int htkv_core_meta_write(struct htkv_auth *a, const struct envelope_key *current,
                         const struct envelope_key *from);
/* Seconds since the epoch from the configured clock. */
int64_t htkv_core_now(struct htkv_auth *a);

/*
 * One attempt of an optimistic transaction: read what it needs, add every read record's version
 * as a condition (htkv_batch_check) and the puts/deletes to @p b. Returns 0 (commit b),
 * CORE_TXN_NOOP (nothing to write), or a negative code (stop; HTKV_ECONFLICT = try again).
 */
typedef int (*htkv_core_txn_fn)(struct htkv_auth *a, htkv_batch *b, const struct core_snap *s,
                                void *ctx);
/*
 * Run @p fn until its batch commits: each attempt takes a fresh snapshot, the batch also requires
 * the auth/meta version of the snapshot (so nothing sealed with a retired key commits after a
 * rotation started), and a conflict refreshes auth/meta and backs off. Returns fn's error, 0, or
 * HTKV_ECONFLICT after CORE_TXN_ATTEMPTS attempts.
 */
int htkv_core_txn(struct htkv_auth *a, htkv_core_txn_fn fn, void *ctx);

/* Add a condition "rkey still has version v" to b. */
int htkv_core_check(htkv_batch *b, const char *rkey, size_t rkey_len, uint64_t version);

/*
 * API key tokens (apikey.c): "htkv_" | key id (32 hex) | "_" | secret (64 hex) | checksum (8 hex).
 * Shared with tests/fuzz/fuzz_apikey_token.c, which checks that the two are exact inverses.
 */
/* Split NUL-terminated @p token into @p id (CODEC_ID_BYTES) and @p secret (CODEC_SECRET_BYTES).
 * Reads at most HTKV_AUTH_TOKEN_LEN + 1 bytes. 0 or HTKV_EAUTH (any malformation). */
int htkv_apikey_token_parse(const char *token, unsigned char *id, unsigned char *secret);
/* Write the token of key @p id with @p secret into @p token (HTKV_AUTH_TOKEN_SIZE bytes). */
void htkv_apikey_token_format(const unsigned char *id, const unsigned char *secret, char *token);

/* Fill a public struct from a decoded record. */
void htkv_core_user_out(const struct codec_user *u, uint32_t key_id, struct htkv_auth_user *out);
void htkv_core_key_out(const struct codec_key *k, uint32_t key_id, struct htkv_auth_api_key *out);
/* Copy metadata into a caller buffer: 0 or HTKV_ETOOSMALL, *len = meta_len either way. */
int htkv_core_meta_copy(const unsigned char *meta, size_t meta_len, void *buf, size_t cap,
                        size_t *len);

#include "auth/test_hooks.h"

#endif
