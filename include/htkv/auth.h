/*
 * auth.h - users, passwords and API keys stored in an htkv store, with envelope encryption.
 *
 * This header is the manual of the auth module. It follows the conventions of htkv.h: every
 * function documents its return codes, the ownership of each pointer (borrowed: not kept after
 * return; kept: retained until a named event; taken: the callee frees it; view: a result valid
 * until a named event) and the threads that may call it.
 *
 * What it does
 *   - Users: a name (1..HTKV_AUTH_NAME_MAX bytes of UTF-8, unique ignoring ASCII case), a
 *     password hashed with Argon2id (libargon2; default m = 19 MiB, t = 2, p = 1, 16-byte random
 *     salt), optional metadata. Passwords are 1..HTKV_AUTH_PASSWORD_MAX arbitrary bytes. A hash
 *     keeps the costs it was made with; a successful login rehashes it with the configured costs
 *     when they differ (see "Changing the Argon2 costs").
 *   - API keys: a token "htkv_<key id>_<secret><checksum>" (HTKV_AUTH_TOKEN_LEN characters; the
 *     secret has 256 random bits, the checksum rejects typos before any lookup). Only a keyed
 *     BLAKE2b hash of the secret is stored; authenticating a key never runs Argon2 and compares in
 *     constant time. Keys belong to a user, may expire, carry an optional label and metadata.
 *   - Envelope encryption: every record (users, API keys, the name index and the lists) is
 *     encrypted and authenticated with AES-256-GCM or XChaCha20-Poly1305 under a key derived from
 *     the 32-byte master key. Each ciphertext names the id of the master key that sealed it and is
 *     bound to the engine key it is stored under, so a blob moved to another record is rejected.
 *     Password hashes, metadata and token hashes are never on disk in plaintext.
 *   - Master key rotation re-encrypts every record; a crash at any point leaves every record
 *     readable with the old and the new key (htkv_auth_rotate_master_key()).
 *
 * Storage (keys in the htkv store; every value starts with a format version byte)
 *   auth/meta                     current master key id, rotation state, wrapped token key
 *   auth/user/<user id>           user record
 *   auth/user_by_name/<name>      user id, under the ASCII-lowercased name
 *   auth/user_list/<h>            ids of the users whose id starts with hex digit <h> (16 lists)
 *   auth/user_keys/<user id>      ids of the user's API keys
 *   auth/apikey/<key id>          API key record
 *   auth/census/<h>               how many hashes of the users of list <h> use each set of
 *                                 Argon2 costs (absent in stores written before it existed:
 *                                 then counted from the users, and written by the next change)
 *   Ids are 128 random bits written as 32 lowercase hex digits: never reused, also after a
 *   restart. Every change is one atomic htkv batch whose conditions (htkv_batch_check()) name the
 *   version of every record it read, so concurrent writers never undo each other: a writer that
 *   lost a race re-reads and retries, or fails with the answer that is now true (HTKV_EEXIST,
 *   HTKV_ENOTFOUND, HTKV_EAUTH).
 *
 * Changing the Argon2 costs, and why unknown names cost what known ones cost
 *   The costs in htkv_auth_config apply to hashes made from then on. Existing hashes keep theirs
 *   (verification uses the costs stored with each hash) until the user's next successful
 *   htkv_auth_verify_password(), which hashes the password again with the configured costs and
 *   stores it, in one batch that commits only if the record still holds the very hash that was
 *   verified: a concurrent htkv_auth_change_password() (or another upgrade) always wins, an
 *   upgrade never undoes it. The configured costs are the target whichever way they changed, so
 *   handles open on one store should share them (two handles with different costs would rehash
 *   a user back and forth at each login).
 *
 *   An unknown user's login runs one Argon2 verification against a dummy hash, so that it fails
 *   in the time a wrong password takes. Its costs are not the configured ones (after a change of
 *   costs, every unknown name would answer in the new time and every known one in the old:
 *   names could be enumerated). They are drawn from the census of the stored hashes
 *   (auth/census/<h>, kept exact by every write that adds, removes or replaces a hash): a keyed
 *   hash of the ASCII-folded name (the key derives from the random root sealed in auth/meta)
 *   selects a set of costs with probability proportional to the number of users who have it.
 *   So unknown names take the costs of known ones in the same proportions, whatever mixture is
 *   stored; a name takes the same costs at every attempt, from every handle, after a restart or
 *   a master key rotation, and "Bob" the same as "bob"; as users log in and move to new costs,
 *   unknown names move with them, a few at a time. With no user stored, the configured costs.
 *   Known and unknown names also do the same census work before the Argon2 run (a version probe
 *   of the 16 census records, a re-read of those that changed). What remains differs by a few
 *   microseconds of record reads and decryption, against milliseconds of Argon2.
 *
 *   API keys have no such issue: authenticating never runs Argon2 (the secret has 256 random
 *   bits), an unknown key id hashes and compares like a known one, and key ids are 128 random
 *   bits that cannot be enumerated.
 *
 * Errors
 *   Codes are those of htkv.h. Credentials that are wrong in any way (unknown user, wrong
 *   password, malformed, unknown, revoked or expired token) give HTKV_EAUTH and nothing more; an
 *   unknown user costs one Argon2 run like a wrong password, with the costs of a stored user's
 *   hash (see above). A stored record that fails its
 *   authentication tag or does not parse (bit rot, tampering, a blob copied from another record)
 *   gives HTKV_ECORRUPT. Engine errors (HTKV_ECLOSED, HTKV_EREADONLY, HTKV_EFAILED, -ENOSPC,
 *   -EIO, -ENOMEM ...) are passed through; "engine errors" below stands for them. A handle that
 *   meets a record sealed with a master key it was not given (another handle rotated the store
 *   to a new key) gets HTKV_EAUTH from that call: reopen it with the new key.
 *
 * Threads
 *   An htkv_auth handle is thread-safe: any thread may call any function concurrently, except
 *   htkv_auth_close(), which must be the last call. At most max_concurrent_hashes Argon2 runs
 *   execute at once per handle; further callers block until a slot is free. The htkv_db must stay
 *   open until htkv_auth_close() returned.
 */
#ifndef HTKV_AUTH_H
#define HTKV_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <htkv/htkv.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Bytes of a master key. */
#define HTKV_AUTH_KEY_BYTES 32
/** Characters of a user or API key id (lowercase hex of 128 random bits), and with its NUL. */
#define HTKV_AUTH_ID_LEN 32
#define HTKV_AUTH_ID_SIZE (HTKV_AUTH_ID_LEN + 1)
/** Longest user name and API key label, in bytes (without the NUL). */
#define HTKV_AUTH_NAME_MAX 64
#define HTKV_AUTH_LABEL_MAX 64
/** Longest password, in bytes (4 KiB). */
#define HTKV_AUTH_PASSWORD_MAX 4096
/** Largest metadata blob of a user or API key, in bytes (64 KiB). */
#define HTKV_AUTH_METADATA_MAX (64u * 1024u)
/** Most API keys a user may hold at once. */
#define HTKV_AUTH_KEYS_PER_USER_MAX 1024
/**
 * Characters of a token, and with its NUL:
 * "htkv_" (5) + key id (32) + "_" (1) + secret (64 hex = 256 bits) + checksum (8 hex) = 110.
 */
#define HTKV_AUTH_TOKEN_LEN 110
#define HTKV_AUTH_TOKEN_SIZE (HTKV_AUTH_TOKEN_LEN + 1)
/** Default Argon2id costs (OWASP's minimum for Argon2id): 19 MiB, 2 passes, 1 lane. */
#define HTKV_AUTH_ARGON2_MEMORY_KIB_DEFAULT 19456u
#define HTKV_AUTH_ARGON2_ITERATIONS_DEFAULT 2u
#define HTKV_AUTH_ARGON2_LANES_DEFAULT 1u
/** last_used_at of an API key is written at most once per this many seconds. */
#define HTKV_AUTH_LAST_USED_GRANULARITY_S 60

/** Cipher for records written from now on; records written with another one stay readable. */
enum htkv_auth_cipher {
    /** AES-256-GCM where the CPU has AES instructions, XChaCha20-Poly1305 elsewhere. */
    HTKV_AUTH_CIPHER_AUTO = 0,
    /** AES-256-GCM (libsodium), 96-bit random nonces; needs AES-NI / ARMv8 crypto. */
    HTKV_AUTH_CIPHER_AES256GCM = 1,
    /** XChaCha20-Poly1305 (libsodium), 192-bit random nonces; any CPU. */
    HTKV_AUTH_CIPHER_XCHACHA20POLY1305 = 2,
};

typedef struct htkv_auth htkv_auth; /* one auth service on an open store; thread-safe handle */

/**
 * Clock for timestamps and API key expiry.
 * @param ctx  htkv_auth_config.clock_ctx.
 * @return Seconds since the Unix epoch.
 */
typedef int64_t (*htkv_auth_clock_fn)(void *ctx);

/**
 * Auth configuration. Start from htkv_auth_config_init(). Read by htkv_auth_open_with() only;
 * the struct and the key bytes are not kept (keys are copied into guarded memory).
 */
typedef struct htkv_auth_config {
    /** The store's master key, HTKV_AUTH_KEY_BYTES bytes; required. */
    const unsigned char *master_key;
    /** Id of master_key (non-zero), recorded in every ciphertext it seals. Default 1. */
    uint32_t master_key_id;
    /**
     * A second key, or NULL: needed while a rotation is unfinished (give the new key as
     * master_key and the old one here) and accepted at any time. Default NULL.
     */
    const unsigned char *previous_key;
    uint32_t previous_key_id; /**< Id of previous_key; non-zero and != master_key_id. */
    /**
     * Argon2id memory in KiB for new hashes (8 x lanes .. 4 GiB). Default 19456 (19 MiB). The
     * three costs also are the target of the rehash at a successful login: a stored hash with
     * other costs is replaced (see "Changing the Argon2 costs" above).
     */
    uint32_t argon2_memory_kib;
    uint32_t argon2_iterations; /**< Argon2id passes (1..1024). Default 2. */
    uint32_t argon2_lanes;      /**< Argon2id lanes (1..64). Default 1. */
    /**
     * Argon2 runs allowed at once per handle (each takes argon2_memory_kib of memory).
     * 0 = max(1, min(online CPUs, 1 GiB / argon2_memory_kib)). Default 0.
     */
    unsigned max_concurrent_hashes;
    int cipher;                  /**< enum htkv_auth_cipher. Default HTKV_AUTH_CIPHER_AUTO. */
    htkv_auth_clock_fn clock_fn; /**< NULL = CLOCK_REALTIME. Default NULL. */
    void *clock_ctx;             /**< Passed to clock_fn; kept until htkv_auth_close(). */
} htkv_auth_config;

/** A user as read from the store. Holds no secret. */
struct htkv_auth_user {
    char id[HTKV_AUTH_ID_SIZE];        /**< 32 lowercase hex digits, NUL-terminated. */
    char name[HTKV_AUTH_NAME_MAX + 1]; /**< Name as created (case kept), NUL-terminated. */
    int64_t created_at;                /**< Unix seconds. */
    int64_t password_changed_at;       /**< Unix seconds (= created_at until changed). */
    size_t metadata_len;               /**< Bytes of metadata; 0 = none. */
    uint32_t key_id;                   /**< Id of the master key that sealed the record. */
};

/** An API key as read from the store. Holds no secret. */
struct htkv_auth_api_key {
    char id[HTKV_AUTH_ID_SIZE];          /**< Key id, 32 lowercase hex digits. */
    char user_id[HTKV_AUTH_ID_SIZE];     /**< Owner's user id. */
    char label[HTKV_AUTH_LABEL_MAX + 1]; /**< Label, "" = none. */
    int64_t created_at;                  /**< Unix seconds. */
    int64_t expires_at;                  /**< Unix seconds; 0 = never expires. */
    int64_t last_used_at;                /**< Unix seconds (granularity 60 s); 0 = never used. */
    size_t metadata_len;                 /**< Bytes of metadata; 0 = none. */
    uint32_t key_id;                     /**< Id of the master key that sealed the record. */
};

/**
 * Fill @p cfg with the defaults (no key, key id 1, Argon2id 19 MiB / 2 passes / 1 lane,
 * automatic hash concurrency and cipher, the real-time clock).
 * @param[out] cfg  Caller storage; borrowed.
 * @context Any thread. Does not block.
 */
HTKV_API void htkv_auth_config_init(htkv_auth_config *cfg);

/**
 * Fill @p key with HTKV_AUTH_KEY_BYTES bytes from the operating system's CSPRNG: a fresh master
 * key. Keep it somewhere safer than the store (a secrets manager, a KMS, a TPM).
 * @param[out] key  HTKV_AUTH_KEY_BYTES bytes; borrowed. The caller wipes it after use.
 * @return 0; -EINVAL (NULL); -EIO (libsodium could not initialise).
 * @context Any thread.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_generate_key(unsigned char *key);

/**
 * Open the auth service on @p db with the defaults and @p master_key (id 1): the equivalent of
 * the original's into_argon2_hasher_aes_gcm_auth_service(). See htkv_auth_open_with().
 * @param[in]  db          Open store; kept until htkv_auth_close().
 * @param[in]  master_key  HTKV_AUTH_KEY_BYTES bytes; borrowed (copied into guarded memory).
 * @param[out] out         Receives the handle, NULL on failure; borrowed.
 * @return As htkv_auth_open_with().
 * @context Any thread. Blocks for a few store reads (and one write on a fresh store).
 */
HTKV_API HTKV_MUST_USE int htkv_auth_open(htkv_db *db, const unsigned char *master_key,
                                          htkv_auth **out);

/**
 * Open the auth service on @p db.
 *
 * On a store without auth data, writes auth/meta: the master key id, a key check value and a
 * fresh random token-hashing key sealed under the master key. On a store with auth data, the
 * store's current key must be config's master_key or previous_key (same id and same key), and
 * when a rotation is unfinished both of its keys must be given. Records written afterwards are
 * sealed with the store's current key (config's master_key, except after a crash that hit
 * htkv_auth_rotate_master_key() before its first write: then call it again to rotate).
 * Several handles may be open on one store; see htkv_auth_rotate_master_key() for the one rule.
 * On a store with auth data, opening writes nothing: costs that differ from those the users'
 * hashes were made with take effect as described in "Changing the Argon2 costs" above.
 *
 * @param[in]  db   Open store; kept until htkv_auth_close().
 * @param[in]  cfg  Configuration; borrowed (clock_ctx is kept until htkv_auth_close()).
 * @param[out] out  Receives the handle, NULL on failure; borrowed.
 * @return 0; -EINVAL (NULL argument, no master_key, key id 0 or equal ids, Argon2 costs out of
 *         range, unknown cipher); -ENOTSUP (AES-256-GCM asked for on a CPU without AES);
 *         HTKV_EAUTH (a given key does not match the store's key of the same id, or the store
 *         needs a key that was not given); HTKV_ECORRUPT (auth/meta damaged); HTKV_ECONFLICT
 *         (auth/meta kept changing under heavy contention); -EIO (libsodium could not
 *         initialise); -ENOMEM; engine errors (HTKV_EREADONLY on a read-only store without auth
 *         data).
 * @context Any thread. Blocks for a few store reads (and one write on a fresh store).
 */
HTKV_API HTKV_MUST_USE int htkv_auth_open_with(htkv_db *db, const htkv_auth_config *cfg,
                                               htkv_auth **out);

/**
 * Close the auth service: wipe and free every key and the handle. Does not close the store.
 * @param[in] auth  Handle; taken. NULL is accepted.
 * @context Any thread; the last call on @p auth (no call may be in progress).
 */
HTKV_API void htkv_auth_close(htkv_auth *auth);

/**
 * Report the cipher used for records written from now on.
 * @param[in] auth  Handle; borrowed.
 * @return HTKV_AUTH_CIPHER_AES256GCM or HTKV_AUTH_CIPHER_XCHACHA20POLY1305; -EINVAL (NULL).
 * @context Any thread. Does not block.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_cipher(const htkv_auth *auth);

/**
 * Create a user. Same as htkv_auth_create_user_with_metadata() without metadata.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_create_user(htkv_auth *auth, const char *name,
                                                 const void *password, size_t password_len,
                                                 struct htkv_auth_user *out);

/**
 * Create a user named @p name with @p password and encrypted @p metadata.
 *
 * The name must be 1..HTKV_AUTH_NAME_MAX bytes of valid UTF-8 without control characters
 * (U+0000..U+001F, U+007F..U+009F) and without a leading or trailing space. Names are unique
 * ignoring ASCII case ("Alice" and "alice" are one name; "Ä" and "ä" are two). The user record,
 * the name index entry, the user list and its census change in one atomic batch that commits
 * only if the name is still free: of two concurrent creators of one name exactly one succeeds.
 * The password is hashed with the configured costs.
 *
 * @param[in]  auth          Handle; borrowed.
 * @param[in]  name          NUL-terminated name; borrowed.
 * @param[in]  password      1..HTKV_AUTH_PASSWORD_MAX arbitrary bytes; borrowed, never kept.
 * @param[in]  metadata      0..HTKV_AUTH_METADATA_MAX bytes, stored encrypted; borrowed. May be
 *                           NULL when metadata_len is 0 (no metadata).
 * @param[out] out           Receives the new user; borrowed; may be NULL.
 * @return 0; -EINVAL (NULL argument, bad name, empty or too long password, metadata too long);
 *         HTKV_EEXIST (the name is taken); HTKV_ECONFLICT (contention outlasted the retries);
 *         HTKV_EAUTH (another handle rotated to a master key this one lacks); HTKV_ECORRUPT (the
 *         user list or the census of the new id's bucket is damaged: writes that change a
 *         bucket's hashes report a damaged census, logins do not); -ENOMEM; engine errors.
 * @context Any thread. Blocks for one Argon2 run (waiting for a hash slot) and one write (the
 *          first write to a bucket of a store written before the census also reads the users
 *          of that bucket, to count them).
 */
HTKV_API HTKV_MUST_USE int
htkv_auth_create_user_with_metadata(htkv_auth *auth, const char *name, const void *password,
                                    size_t password_len, const void *metadata, size_t metadata_len,
                                    struct htkv_auth_user *out);

/**
 * Read the user with id @p user_id.
 * @param[in]  auth     Handle; borrowed.
 * @param[in]  user_id  NUL-terminated id (32 lowercase hex digits); borrowed.
 * @param[out] out      Caller storage; borrowed.
 * @return 0; -EINVAL (NULL argument, malformed id); HTKV_ENOTFOUND; HTKV_ECORRUPT; -ENOMEM;
 *         engine errors.
 * @context Any thread. Lock-free reads; does not run Argon2.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_get_user(htkv_auth *auth, const char *user_id,
                                              struct htkv_auth_user *out);

/**
 * Read the user named @p name (ASCII case ignored).
 * @param[in]  name  NUL-terminated name; borrowed.
 * @param[out] out   Caller storage; borrowed.
 * @return 0; -EINVAL (NULL argument, invalid name); HTKV_ENOTFOUND; HTKV_ECORRUPT; -ENOMEM;
 *         engine errors.
 * @context Any thread. Lock-free reads; does not run Argon2.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_get_user_by_name(htkv_auth *auth, const char *name,
                                                      struct htkv_auth_user *out);

/**
 * List every user, sorted by name (byte order).
 * @param[in]  auth   Handle; borrowed.
 * @param[out] users  Receives an array of *count users (free it with htkv_auth_free()); NULL
 *                    when there are none or on failure; borrowed.
 * @param[out] count  Receives the number of users; borrowed.
 * @return 0; -EINVAL; HTKV_ECORRUPT; -ENOMEM; engine errors.
 * @context Any thread. Reads 16 lists and every user record; a user created or deleted during
 *          the call may or may not be listed.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_list_users(htkv_auth *auth, struct htkv_auth_user **users,
                                                size_t *count);

/**
 * Delete a user: its record, its name (free for reuse), its hash's place in the census, and every
 * API key it holds (revoked in the same atomic batch). Its id is never reused.
 * @param[in] auth     Handle; borrowed.
 * @param[in] user_id  NUL-terminated id; borrowed.
 * @return 0; -EINVAL; HTKV_ENOTFOUND; HTKV_ECORRUPT; HTKV_ECONFLICT; HTKV_EAUTH (as for
 *         create); -ENOMEM; engine errors.
 * @context Any thread. Blocks for one write.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_delete_user(htkv_auth *auth, const char *user_id);

/**
 * Check @p password for the user named @p name.
 *
 * Verification uses the costs stored with the hash. An unknown or invalid name runs one Argon2
 * verification on a dummy hash, with the costs the census assigns to that name (those of stored
 * users, in their proportions: see "Changing the Argon2 costs" above), and returns the same
 * HTKV_EAUTH as a wrong password, in about the same time.
 *
 * Writes nothing, except when the password is right and the stored hash's costs differ from the
 * configured ones: then the password is hashed again with the configured costs and stored (with
 * the census) in one batch that commits only if the record still holds the hash just verified,
 * so it never undoes a concurrent change_password. That upgrade is best effort: if it fails
 * (contention, a full disk; a read-only store turns it off for the handle) the call still
 * returns 0 and the next login tries again. password_changed_at is not changed by it.
 *
 * @param[in]  auth      Handle; borrowed.
 * @param[in]  name      NUL-terminated name; borrowed.
 * @param[in]  password  0..HTKV_AUTH_PASSWORD_MAX bytes; borrowed, never kept. May be NULL when
 *                       password_len is 0 (which never matches).
 * @param[out] out       Receives the user on success; borrowed; may be NULL.
 * @return 0 (the password is right); HTKV_EAUTH (unknown user or wrong password); -EINVAL (NULL
 *         name or auth, password too long); HTKV_ECORRUPT (the user's records; a damaged census
 *         is not reported here, as an unknown name must answer like a known one); -ENOMEM;
 *         engine errors from reading the user.
 * @context Any thread. Blocks for one Argon2 run (waiting for a hash slot); a login that
 *          upgrades the hash, for a second run and one write. The first call of a handle on a
 *          store written before the census reads the user records of the buckets that have no
 *          census yet, once, to count them.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_verify_password(htkv_auth *auth, const char *name,
                                                     const void *password, size_t password_len,
                                                     struct htkv_auth_user *out);

/**
 * Replace the password of the user named @p name, given the current one.
 *
 * The new hash, made with the configured costs, is written (with the census) only if the record
 * is still the one whose password was verified; if a concurrent change or upgrade got there
 * first, the old password is checked again against the hash now stored (a change usually fails
 * it with HTKV_EAUTH; an upgrade keeps the password, so it passes). An unknown or invalid name
 * runs one dummy verification as htkv_auth_verify_password() does. API keys are not touched.
 *
 * @param[in] old_password  0..HTKV_AUTH_PASSWORD_MAX bytes; borrowed, never kept.
 * @param[in] new_password  1..HTKV_AUTH_PASSWORD_MAX bytes; borrowed, never kept.
 * @return 0; HTKV_EAUTH (unknown user or wrong old password); -EINVAL (NULL argument, new
 *         password empty, a password too long); HTKV_ECORRUPT; HTKV_ECONFLICT; -ENOMEM; engine
 *         errors.
 * @context Any thread. Blocks for two Argon2 runs (more if it loses a race) and one write.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_change_password(htkv_auth *auth, const char *name,
                                                     const void *old_password,
                                                     size_t old_password_len,
                                                     const void *new_password,
                                                     size_t new_password_len);

/**
 * Decrypt the metadata of user @p user_id (as currently stored) into @p buf.
 * @param[in]  user_id  NUL-terminated id; borrowed.
 * @param[out] buf      Destination of @p cap bytes; borrowed. May be NULL when cap is 0. Holds
 *                      plaintext: the caller wipes it when done.
 * @param[out] len      Receives the metadata length (0 = none; also on HTKV_ETOOSMALL); borrowed.
 * @return 0; HTKV_ETOOSMALL (nothing copied, *len = size needed); -EINVAL; HTKV_ENOTFOUND;
 *         HTKV_ECORRUPT (the record or its metadata fails authentication); -ENOMEM; engine
 *         errors.
 * @context Any thread. Lock-free reads.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_decrypt_user_metadata(htkv_auth *auth, const char *user_id,
                                                           void *buf, size_t cap, size_t *len);

/**
 * Issue an API key for user @p user_id. Same as htkv_auth_create_api_key_with_metadata()
 * without metadata and without expiry.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_create_api_key(htkv_auth *auth, const char *user_id,
                                                    const char *label, char *token,
                                                    struct htkv_auth_api_key *out);

/**
 * Issue an API key for user @p user_id and write its token into @p token.
 *
 * The token is returned once and never stored: only a keyed hash of its secret is. The key
 * record and the user's key list change in one atomic batch that also requires the user record
 * to be unchanged since it was read, so a key is never issued to a user deleted meanwhile.
 *
 * @param[in]  user_id     NUL-terminated id of the owner; borrowed.
 * @param[in]  label       NULL or a NUL-terminated label (0..HTKV_AUTH_LABEL_MAX bytes, same
 *                         rules as a name, but may be empty); borrowed.
 * @param[in]  metadata    0..HTKV_AUTH_METADATA_MAX bytes, stored encrypted; borrowed; may be NULL
 *                         when metadata_len is 0.
 * @param[in]  expires_at  Unix seconds after which the key is refused, > now; 0 = never.
 * @param[out] token       HTKV_AUTH_TOKEN_SIZE bytes; receives the NUL-terminated token (wiped
 *                         on failure); borrowed. A secret: wipe it when done, never log it.
 * @param[out] out         Receives the key's record; borrowed; may be NULL.
 * @return 0; -EINVAL (NULL argument, malformed id, bad label, metadata too long, expires_at in
 *         the past); HTKV_ENOTFOUND (no such user); HTKV_EFULL (the user holds
 *         HTKV_AUTH_KEYS_PER_USER_MAX keys); HTKV_ECORRUPT; HTKV_ECONFLICT; HTKV_EAUTH (as for
 *         create_user); -ENOMEM; engine errors.
 * @context Any thread. Blocks for one write. Does not run Argon2.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_create_api_key_with_metadata(
    htkv_auth *auth, const char *user_id, const char *label, const void *metadata,
    size_t metadata_len, int64_t expires_at, char *token, struct htkv_auth_api_key *out);

/**
 * Check an API key token.
 *
 * Rejects a token of the wrong shape or with a bad checksum before any lookup; then hashes the
 * secret with the store's token key (BLAKE2b, no Argon2) and compares in constant time. An
 * unknown key id also hashes and compares. The Argon2 costs play no part here, so changing them
 * changes nothing for API keys. Records last_used_at at most once per
 * HTKV_AUTH_LAST_USED_GRANULARITY_S, with a conditional write that is dropped if the key changed
 * or was revoked meanwhile (a revoked key is never brought back); a failure of that write does not
 * fail the authentication.
 *
 * @param[in]  token  NUL-terminated token; borrowed, never kept (only the first
 *                    HTKV_AUTH_TOKEN_LEN + 1 bytes are read).
 * @param[out] out    Receives the key's record on success; borrowed; may be NULL.
 * @return 0; HTKV_EAUTH (malformed, unknown, revoked, expired or wrong token); -EINVAL (NULL
 *         auth or token); HTKV_ECORRUPT; -ENOMEM; engine errors from the read.
 * @context Any thread. Lock-free reads and at most one write.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_authenticate_api_key(htkv_auth *auth, const char *token,
                                                          struct htkv_auth_api_key *out);

/**
 * List the API keys of user @p user_id, oldest first (ties by id).
 * @param[out] keys   Receives an array of *count keys (free it with htkv_auth_free()); NULL when
 *                    there are none or on failure; borrowed.
 * @param[out] count  Receives the number of keys; borrowed.
 * @return 0; -EINVAL; HTKV_ENOTFOUND (no such user); HTKV_ECORRUPT; -ENOMEM; engine errors.
 * @context Any thread. Lock-free reads.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_list_api_keys(htkv_auth *auth, const char *user_id,
                                                   struct htkv_auth_api_key **keys, size_t *count);

/**
 * Revoke (delete) the API key @p key_id. Once this returned, every authentication that starts
 * later fails, and no concurrent authentication can bring the key back.
 * @param[in] key_id  NUL-terminated key id; borrowed.
 * @return 0; -EINVAL; HTKV_ENOTFOUND (no such key, or already revoked); HTKV_ECORRUPT;
 *         HTKV_ECONFLICT; HTKV_EAUTH (as for create_user); -ENOMEM; engine errors.
 * @context Any thread. Blocks for one write.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_revoke_api_key(htkv_auth *auth, const char *key_id);

/**
 * Decrypt the metadata of API key @p key_id into @p buf. As htkv_auth_decrypt_user_metadata().
 * @return 0; HTKV_ETOOSMALL; -EINVAL; HTKV_ENOTFOUND; HTKV_ECORRUPT; -ENOMEM; engine errors.
 * @context Any thread. Lock-free reads.
 */
HTKV_API HTKV_MUST_USE int htkv_auth_decrypt_api_key_metadata(htkv_auth *auth, const char *key_id,
                                                              void *buf, size_t cap, size_t *len);

/**
 * Re-encrypt every auth record with @p new_key (id @p new_key_id) and make it the current key.
 *
 * Steps, each an atomic write: (1) auth/meta names new_key as current and the old key as
 * "rotating from", with the old key's check value; from then on every write of every handle
 * seals with new_key (a write sealed with the old key conflicts on auth/meta and is redone);
 * (2) every record still sealed with another key is re-sealed, each with a conditional write;
 * (3) auth/meta records that the rotation is complete. Records stay readable throughout, as each
 * names the id of its key.
 *
 * After a crash: open with master_key = new_key and previous_key = the old key, then call this
 * again with new_key: it resumes (a call with the current key is allowed and finishes any
 * unfinished rotation; with nothing to do it only checks). The old key is needed until a call
 * returned 0. Other handles open on the same store keep working only if they were opened with
 * new_key as well (they pick up the new state on their next write); others get HTKV_EAUTH.
 * Only records reachable from the user lists, and the 16 census records, are re-sealed.
 *
 * @param[in] auth        Handle; borrowed.
 * @param[in] new_key     HTKV_AUTH_KEY_BYTES bytes; borrowed (copied into guarded memory).
 * @param[in] new_key_id  Non-zero id, not used before by another key of this store.
 * @return 0; -EINVAL (NULL, id 0); HTKV_EAUTH (new_key_id already names another key);
 *         HTKV_EFULL (the handle's ring of 16 keys is full after many rotations: reopen it);
 *         HTKV_ECORRUPT
 *         (a record fails authentication: the rotation stops and can be resumed after repair);
 *         HTKV_ECONFLICT; -ENOMEM; engine errors. On failure the rotation may be unfinished;
 *         every record stays readable by a handle holding both keys.
 * @context Any thread; one rotation at a time per handle (others wait). Other calls go on
 *          concurrently. Blocks for a read and a write of every record.
 */
HTKV_API HTKV_MUST_USE int
htkv_auth_rotate_master_key(htkv_auth *auth, const unsigned char *new_key, uint32_t new_key_id);

/**
 * Free an array returned by htkv_auth_list_users() or htkv_auth_list_api_keys().
 * @param[in] p  Taken; NULL is accepted.
 * @context Any thread.
 */
HTKV_API void htkv_auth_free(void *p);

#ifdef __cplusplus
}
#endif

#endif /* HTKV_AUTH_H */
