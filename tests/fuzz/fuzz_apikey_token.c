/*
 * fuzz_apikey_token.c - libFuzzer target for the API-key token parser of auth/apikey.c
 * (htkv_apikey_token_parse(), declared in auth/core.h): "htkv_" | key id (32 hex) | "_" |
 * secret (64 hex) | checksum (8 hex), HTKV_AUTH_TOKEN_LEN characters.
 *
 * Input: byte 0 is a mode, the rest depends on it.
 *   mode bit 0 clear  RAW     the rest is the token as given: with fewer than
 *                             HTKV_AUTH_TOKEN_LEN + 1 bytes, in a buffer of exactly that many
 *                             bytes plus a NUL; otherwise its first HTKV_AUTH_TOKEN_LEN + 1
 *                             bytes, unterminated (the parser promises to read no more)
 *   mode bit 0 set    EDITED  bytes 1..48 are a key id and a secret (missing bytes are zero);
 *                             the token formatted from them must parse back to them; the bytes
 *                             after them are edits of that token, each an op byte and its
 *                             arguments: op % 3 = 0 (pos, c) sets character pos % length to c,
 *                             1 (n) cuts the token to n % (length + 1) characters, 2 (c)
 *                             appends c. The result goes to the parser as in RAW.
 *
 * Design. Random bytes almost never carry a right BLAKE2b checksum, so EDITED starts from a
 * well-formed token and damages it. Either way the token lies in a heap buffer that ends exactly
 * where the parser must stop, so AddressSanitizer reports any read past it. The property checked
 * is exact, with no probability in it: the parser accepts a string if and only if it is the
 * formatted token (htkv_apikey_token_format()) of some id and secret, and then returns those.
 * The harness decides "is a formatted token" on its own (shape, lower-case hex decoded here,
 * reformatted, compared), so a well-formed token the parser refused is caught too. Hex is lower
 * case only, so every (id, secret) has exactly one token.
 *
 * Invariants (checked for every input)
 *   1. htkv_apikey_token_parse() returns 0 or HTKV_EAUTH, and 0 exactly for formatted tokens.
 *   2. On 0, formatting the returned id and secret gives back the input string.
 *   3. A formatted token is accepted and parses to the id and secret it was made from.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/core.h"
#include "tests/fuzz/fuzz_util.h"

#define MODE_EDITED 0x01u
#define PAIR_BYTES (CODEC_ID_BYTES + CODEC_SECRET_BYTES)
/* The parser reads at most this many bytes (include/htkv/auth.h). */
#define READ_MAX (HTKV_AUTH_TOKEN_LEN + 1)
/* Longest edited token: appends may grow it past the limit the parser must notice. */
#define EDITED_MAX (2 * HTKV_AUTH_TOKEN_LEN)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decode @p n bytes of lower-case hex at @p in. false on any other character. */
static bool
hex_decode(const char *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(in[2 * i]), lo = hex_digit(in[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* Is @p s (@p len characters) the formatted token of some id and secret? */
static bool
is_formatted(const char *s, size_t len)
{
    /* "htkv_" (5) | id (2 * 16) | "_" | secret (2 * 32) | checksum (8) */
    const size_t id_off = 5, secret_off = id_off + 2 * CODEC_ID_BYTES + 1;
    if (len != HTKV_AUTH_TOKEN_LEN) {
        return false;
    }
    unsigned char id[CODEC_ID_BYTES], secret[CODEC_SECRET_BYTES];
    if (!hex_decode(s + id_off, CODEC_ID_BYTES, id) ||
        !hex_decode(s + secret_off, CODEC_SECRET_BYTES, secret)) {
        return false;
    }
    char want[HTKV_AUTH_TOKEN_SIZE];
    htkv_apikey_token_format(id, secret, want);
    return memcmp(want, s, HTKV_AUTH_TOKEN_LEN) == 0;
}

/* Parse @p s (@p len bytes, no NUL among them) the way a caller hands a token over. */
static void
check_parse(const char *s, size_t len)
{
    bool whole = len < READ_MAX;
    size_t cap = whole ? len + 1 : READ_MAX;
    char *buf = malloc(cap);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, s, whole ? len : READ_MAX);
    if (whole) {
        buf[len] = '\0';
    }
    unsigned char id[CODEC_ID_BYTES], secret[CODEC_SECRET_BYTES];
    int rc = htkv_apikey_token_parse(buf, id, secret);
    FUZZ_CHECK(rc == 0 || rc == HTKV_EAUTH);
    FUZZ_CHECK((rc == 0) == is_formatted(s, len));
    if (rc == 0) {
        char again[HTKV_AUTH_TOKEN_SIZE];
        htkv_apikey_token_format(id, secret, again);
        FUZZ_CHECK(whole);
        FUZZ_CHECK(len == HTKV_AUTH_TOKEN_LEN);
        FUZZ_CHECK(memcmp(again, buf, HTKV_AUTH_TOKEN_SIZE) == 0);
    }
    free(buf);
}

/* Length of the C string in s[0, n): a NUL ends it, as it would for the caller. */
static size_t
c_len(const uint8_t *s, size_t n)
{
    const uint8_t *z = memchr(s, 0, n);
    return z != NULL ? (size_t)(z - s) : n;
}

static void
run_edited(const uint8_t *data, size_t size)
{
    unsigned char pair[PAIR_BYTES] = { 0 };
    size_t used = size < PAIR_BYTES ? size : PAIR_BYTES;
    memcpy(pair, data, used);
    const unsigned char *id = pair, *secret = pair + CODEC_ID_BYTES;
    char tok[EDITED_MAX + 1];
    htkv_apikey_token_format(id, secret, tok);
    FUZZ_CHECK(strlen(tok) == HTKV_AUTH_TOKEN_LEN);
    unsigned char got_id[CODEC_ID_BYTES], got_secret[CODEC_SECRET_BYTES];
    FUZZ_CHECK(htkv_apikey_token_parse(tok, got_id, got_secret) == 0);
    FUZZ_CHECK(memcmp(got_id, id, CODEC_ID_BYTES) == 0);
    FUZZ_CHECK(memcmp(got_secret, secret, CODEC_SECRET_BYTES) == 0);

    size_t len = HTKV_AUTH_TOKEN_LEN;
    for (size_t i = used; i + 1 < size; i += 2) {
        uint8_t op = data[i] % 3, arg = data[i + 1];
        if (op == 0 && len > 0 && i + 2 < size) {
            tok[arg % len] = (char)data[i + 2];
            i++;
        } else if (op == 1) {
            len = arg % (len + 1);
        } else if (op == 2 && len < EDITED_MAX) {
            tok[len++] = (char)arg;
        }
    }
    check_parse(tok, c_len((const uint8_t *)tok, len));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if ((data[0] & MODE_EDITED) != 0) {
        run_edited(data + 1, size - 1);
    } else {
        check_parse((const char *)data + 1, c_len(data + 1, size - 1));
    }
    return 0;
}
