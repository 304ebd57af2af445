/*
 * envelope.c - master keys and authenticated encryption of record values (libsodium).
 *
 * Design. The master key itself never seals anything: crypto_kdf derives from it a sealing key
 * (subkey 1, context "htkvauth") and a check key (subkey 2) whose keyed BLAKE2b of a constant is
 * the key's check value. The check value tells at open whether a key given under an id is the
 * key the store uses under that id, without a decryption attempt and without revealing the key.
 * Only the derived keys are kept, in sodium_malloc memory made read-only.
 *
 * A value is: header (format version, record kind, kind-specific public bytes) | envelope.
 *   envelope = cipher (u8) | key id (u32 LE) | nonce (12 B AES-GCM, 24 B XChaCha) | ct | tag (16 B)
 * The associated data is the header, the envelope header and the record's engine key, so a
 * ciphertext cannot be moved to another record, relabelled with another key id or cipher, or
 * combined with another header. Nonces are random: 96 bits for AES-GCM (fine far below 2^32
 * seals per key; a rotation starts a new key), 192 bits for XChaCha20-Poly1305.
 *
 * Invariants
 *   1. Every sealed value names the id of the key that sealed it.
 *   2. Open verifies the tag before any byte of plaintext is returned; on failure the output
 *      buffer is wiped and freed.
 *   3. Derived keys and check keys on the stack are wiped before return.
 */
#include "auth/core.h"

#include <sodium.h>

/* crypto_kdf context: exactly crypto_kdf_CONTEXTBYTES (8) characters. */
static const char ENVELOPE_KDF_CTX[crypto_kdf_CONTEXTBYTES + 1] = "htkvauth";
#define ENVELOPE_SUBKEY_SEAL 1
#define ENVELOPE_SUBKEY_CHECK 2
static const char ENVELOPE_CHECK_MSG[] = "htkv-auth key check v1";

HTKV_STATIC_ASSERT(crypto_kdf_KEYBYTES == HTKV_AUTH_KEY_BYTES, "master key is a kdf key");
HTKV_STATIC_ASSERT(crypto_aead_aes256gcm_KEYBYTES == 32, "AES-256-GCM key is 32 bytes");
HTKV_STATIC_ASSERT(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32, "XChaCha key is 32 bytes");
HTKV_STATIC_ASSERT(crypto_aead_aes256gcm_ABYTES == ENVELOPE_TAG_BYTES, "GCM tag is 16 bytes");
HTKV_STATIC_ASSERT(crypto_aead_xchacha20poly1305_ietf_ABYTES == ENVELOPE_TAG_BYTES,
                   "Poly1305 tag is 16 bytes");
HTKV_STATIC_ASSERT(ENVELOPE_AES256GCM == HTKV_AUTH_CIPHER_AES256GCM, "cipher ids match");
HTKV_STATIC_ASSERT(ENVELOPE_XCHACHA20POLY1305 == HTKV_AUTH_CIPHER_XCHACHA20POLY1305,
                   "cipher ids match");

int
htkv_envelope_key_create(const unsigned char *master, uint32_t id, struct envelope_key **out)
{
    HTKV_ASSERT(master != NULL);
    HTKV_ASSERT(id != 0);
    *out = NULL;
    struct envelope_key *k = sodium_malloc(sizeof(*k));
    if (k == NULL) {
        return -ENOMEM;
    }
    unsigned char check_key[32];
    k->id = id;
    crypto_kdf_derive_from_key(k->seal_key, sizeof(k->seal_key), ENVELOPE_SUBKEY_SEAL,
                               ENVELOPE_KDF_CTX, master);
    crypto_kdf_derive_from_key(check_key, sizeof(check_key), ENVELOPE_SUBKEY_CHECK,
                               ENVELOPE_KDF_CTX, master);
    crypto_generichash(k->check, sizeof(k->check), (const unsigned char *)ENVELOPE_CHECK_MSG,
                       sizeof(ENVELOPE_CHECK_MSG) - 1, check_key, sizeof(check_key));
    sodium_memzero(check_key, sizeof(check_key));
    sodium_mprotect_readonly(k);
    *out = k;
    return 0;
}

void
htkv_envelope_key_destroy(struct envelope_key *k)
{
    if (k != NULL) {
        sodium_free(k); /* wipes before unmapping */
    }
}

int
htkv_envelope_aes_available(void)
{
    return crypto_aead_aes256gcm_is_available();
}

static size_t
envelope_nonce_bytes(int cipher)
{
    switch (cipher) {
    case ENVELOPE_AES256GCM:
        return crypto_aead_aes256gcm_NPUBBYTES;
    case ENVELOPE_XCHACHA20POLY1305:
        return crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    default:
        return 0;
    }
}

size_t
htkv_envelope_overhead(int cipher)
{
    size_t nonce = envelope_nonce_bytes(cipher);
    HTKV_ASSERT(nonce > 0);
    return ENVELOPE_HEADER_BYTES + nonce + ENVELOPE_TAG_BYTES;
}

/* Associated data: header and envelope header (the first ad_head bytes of val) || rkey. */
static int
envelope_ad(const unsigned char *val, size_t ad_head, const void *rkey, size_t rkey_len,
            unsigned char *ad, size_t *ad_len)
{
    if (ad_head + rkey_len > ENVELOPE_AD_MAX) {
        return -EINVAL;
    }
    memcpy(ad, val, ad_head);
    memcpy(ad + ad_head, rkey, rkey_len);
    *ad_len = ad_head + rkey_len;
    return 0;
}

int
htkv_envelope_seal(const struct envelope_key *k, int cipher, const unsigned char *hdr,
                   size_t hdr_len, const void *rkey, size_t rkey_len, const unsigned char *pt,
                   size_t pt_len, unsigned char **out, size_t *out_len)
{
    HTKV_ASSERT(k != NULL);
    HTKV_ASSERT(pt != NULL || pt_len == 0);
    size_t nonce_len = envelope_nonce_bytes(cipher);
    HTKV_ASSERT(nonce_len > 0);
    if (cipher == ENVELOPE_AES256GCM && !crypto_aead_aes256gcm_is_available()) {
        return -ENOTSUP;
    }
    size_t total = hdr_len + htkv_envelope_overhead(cipher) + pt_len;
    unsigned char *v = malloc(total);
    if (v == NULL) {
        return -ENOMEM;
    }
    memcpy(v, hdr, hdr_len);
    unsigned char *env = v + hdr_len;
    env[0] = (unsigned char)cipher;
    for (int i = 0; i < 4; i++) {
        env[1 + i] = (unsigned char)(k->id >> (8 * i));
    }
    unsigned char *nonce = env + ENVELOPE_HEADER_BYTES;
    randombytes_buf(nonce, nonce_len);
    unsigned char ad[ENVELOPE_AD_MAX];
    size_t ad_len;
    int rc = envelope_ad(v, hdr_len + ENVELOPE_HEADER_BYTES, rkey, rkey_len, ad, &ad_len);
    HTKV_ASSERT(rc == 0); /* our own keys and headers are short */
    unsigned char *ct = nonce + nonce_len;
    unsigned long long ct_len = 0;
    if (cipher == ENVELOPE_AES256GCM) {
        crypto_aead_aes256gcm_encrypt(ct, &ct_len, pt, pt_len, ad, ad_len, NULL, nonce,
                                      k->seal_key);
    } else {
        crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &ct_len, pt, pt_len, ad, ad_len, NULL, nonce,
                                                   k->seal_key);
    }
    HTKV_ASSERT(ct_len == pt_len + ENVELOPE_TAG_BYTES);
    *out = v;
    *out_len = total;
    return 0;
}

int
htkv_envelope_key_id(const unsigned char *val, size_t len, size_t hdr_len, uint32_t *id)
{
    if (len < hdr_len + ENVELOPE_HEADER_BYTES) {
        return HTKV_ECORRUPT;
    }
    const unsigned char *env = val + hdr_len;
    if (envelope_nonce_bytes(env[0]) == 0) {
        return HTKV_ECORRUPT;
    }
    *id =
        (uint32_t)env[1] | (uint32_t)env[2] << 8 | (uint32_t)env[3] << 16 | (uint32_t)env[4] << 24;
    return 0;
}

int
htkv_envelope_open(const struct envelope_key *k, const unsigned char *val, size_t len,
                   size_t hdr_len, const void *rkey, size_t rkey_len, unsigned char **pt,
                   size_t *pt_len)
{
    HTKV_ASSERT(k != NULL);
    *pt = NULL;
    *pt_len = 0;
    uint32_t id;
    if (htkv_envelope_key_id(val, len, hdr_len, &id) != 0 || id != k->id) {
        return HTKV_ECORRUPT;
    }
    int cipher = val[hdr_len];
    size_t nonce_len = envelope_nonce_bytes(cipher);
    size_t over = htkv_envelope_overhead(cipher);
    if (len < hdr_len + over) {
        return HTKV_ECORRUPT;
    }
    if (cipher == ENVELOPE_AES256GCM && !crypto_aead_aes256gcm_is_available()) {
        return -ENOTSUP;
    }
    unsigned char ad[ENVELOPE_AD_MAX];
    size_t ad_len;
    if (envelope_ad(val, hdr_len + ENVELOPE_HEADER_BYTES, rkey, rkey_len, ad, &ad_len) != 0) {
        return HTKV_ECORRUPT;
    }
    const unsigned char *nonce = val + hdr_len + ENVELOPE_HEADER_BYTES;
    const unsigned char *ct = nonce + nonce_len;
    size_t ct_len = len - hdr_len - ENVELOPE_HEADER_BYTES - nonce_len;
    size_t cap = ct_len - ENVELOPE_TAG_BYTES;
    unsigned char *out = malloc(cap > 0 ? cap : 1);
    if (out == NULL) {
        return -ENOMEM;
    }
    unsigned long long out_len = 0;
    int rc;
    if (cipher == ENVELOPE_AES256GCM) {
        rc = crypto_aead_aes256gcm_decrypt(out, &out_len, NULL, ct, ct_len, ad, ad_len, nonce,
                                           k->seal_key);
    } else {
        rc = crypto_aead_xchacha20poly1305_ietf_decrypt(out, &out_len, NULL, ct, ct_len, ad, ad_len,
                                                        nonce, k->seal_key);
    }
    if (rc != 0) {
        sodium_memzero(out, cap > 0 ? cap : 1);
        free(out);
        return HTKV_ECORRUPT;
    }
    HTKV_ASSERT(out_len == cap);
    *pt = out;
    *pt_len = cap;
    return 0;
}
