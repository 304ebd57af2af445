/*
 * envelope.h - master keys and authenticated encryption of record values (see envelope.c).
 */
#ifndef HTKV_AUTH_ENVELOPE_H
#define HTKV_AUTH_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

/* Cipher ids as stored in an envelope; the same values as enum htkv_auth_cipher. */
#define ENVELOPE_AES256GCM 1
#define ENVELOPE_XCHACHA20POLY1305 2
/* Bytes of a key check value. */
#define ENVELOPE_CHECK_BYTES 16
/* Envelope header: cipher (1) + key id (4, little-endian). */
#define ENVELOPE_HEADER_BYTES 5
/* Tag bytes of both AEADs. */
#define ENVELOPE_TAG_BYTES 16
/* Largest header before the envelope plus record key accepted as associated data. */
#define ENVELOPE_AD_MAX 256

/** One master key, reduced to what the module needs. Lives in sodium_malloc memory, read-only. */
struct envelope_key {
    uint32_t id;
    unsigned char seal_key[32];                /* crypto_kdf subkey 1: seals records */
    unsigned char check[ENVELOPE_CHECK_BYTES]; /* identifies the key without revealing it */
};

/* Derive the key entry of @p master (32 bytes). 0 or -ENOMEM. */
int htkv_envelope_key_create(const unsigned char *master, uint32_t id, struct envelope_key **out);
/* Wipe and free; NULL is accepted. */
void htkv_envelope_key_destroy(struct envelope_key *k);
/* True when the CPU can run AES-256-GCM through libsodium. */
int htkv_envelope_aes_available(void);
/* Bytes that sealing adds to a plaintext: header + nonce + tag. */
size_t htkv_envelope_overhead(int cipher);

/*
 * Build a value: @p hdr (hdr_len bytes, copied first), then the envelope of @p pt sealed with
 * @p k. The associated data is hdr || envelope header || @p rkey, binding the ciphertext to the
 * record key, the header and the key id. *out is malloc'ed. 0, -ENOMEM or -ENOTSUP.
 */
int htkv_envelope_seal(const struct envelope_key *k, int cipher, const unsigned char *hdr,
                       size_t hdr_len, const void *rkey, size_t rkey_len, const unsigned char *pt,
                       size_t pt_len, unsigned char **out, size_t *out_len);
/* Read the key id of the envelope that follows @p hdr_len bytes of @p val. 0 or ECORRUPT. */
int htkv_envelope_key_id(const unsigned char *val, size_t len, size_t hdr_len, uint32_t *id);
/*
 * Open the envelope of @p val (after hdr_len header bytes) with @p k into a malloc'ed plaintext.
 * 0; HTKV_ECORRUPT (bad framing or tag); -ENOTSUP (AES record, no AES here); -ENOMEM.
 */
int htkv_envelope_open(const struct envelope_key *k, const unsigned char *val, size_t len,
                       size_t hdr_len, const void *rkey, size_t rkey_len, unsigned char **pt,
                       size_t *pt_len);

#endif
