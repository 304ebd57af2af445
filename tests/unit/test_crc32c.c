/*
 * test_crc32c.c - CRC-32C: known answers, and the hardware and table paths agree everywhere.
 */
#include "tests/support/testutil.h"

#include "engine/crc32c.h"

/* Goal: both paths give the published CRC-32C check values. Method: "123456789" and the
 * RFC 3720 (iSCSI) B.4 vectors, through htkv_crc32c and htkv_crc32c_sw. */
static void
test_crc32c_known_vectors(void **state)
{
    (void)state;
    assert_int_equal(htkv_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(htkv_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(htkv_crc32c(0, "", 0), 0u);
    assert_int_equal(htkv_crc32c_sw(0, "", 0), 0u);

    unsigned char zeros[32] = { 0 }, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        ones[i] = 0xFF;
        inc[i] = (unsigned char)i;
        dec[i] = (unsigned char)(31 - i);
    }
    const struct {
        const unsigned char *p;
        uint32_t want;
    } v[] = {
        { zeros, 0x8A9136AAu }, { ones, 0x62A8AB43u }, { inc, 0x46DD794Eu }, { dec, 0x113FDB5Cu }
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        assert_int_equal(htkv_crc32c(0, v[i].p, 32), v[i].want);
        assert_int_equal(htkv_crc32c_sw(0, v[i].p, 32), v[i].want);
    }
}

/* Goal: the hardware path (when the CPU has it) equals the table path for every length,
 * alignment and split point, and checksumming in pieces equals checksumming at once.
 * Method: seeded random buffers; lengths 0..2048, random ones to 4 KiB and a few to 1 MiB; random
 * start offsets (misaligned); random split points, mixing the two paths across the split. */
static void
test_crc32c_hw_and_sw_agree_on_random_buffers(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_crc32c_hw_and_sw_agree_on_random_buffers");
    uint64_t rng = seed;
    size_t cap = (1u << 20) + 64;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t i = 0; i < cap; i++) {
        buf[i] = (unsigned char)tu_rand(&rng);
    }
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        uint64_t r = tu_rand(&rng);
        if (iter < 2049) {
            len = (size_t)iter; /* every small length once */
        } else if (r % 128 == 0) {
            len = (size_t)(tu_rand(&rng) % (1u << 20));
        } else {
            len = (size_t)(tu_rand(&rng) % 4096);
        }
        size_t start = (size_t)(tu_rand(&rng) % 64);
        const unsigned char *p = buf + start;
        uint32_t init = (tu_rand(&rng) % 4 == 0) ? (uint32_t)tu_rand(&rng) : 0;
        uint32_t hw = htkv_crc32c(init, p, len);
        uint32_t sw = htkv_crc32c_sw(init, p, len);
        if (hw != sw) {
            fprintf(stderr, "seed %llu: len %zu start %zu init %08x: hw %08x sw %08x\n",
                    (unsigned long long)seed, len, start, init, hw, sw);
        }
        assert_int_equal(hw, sw);
        size_t split = len == 0 ? 0 : (size_t)(tu_rand(&rng) % (len + 1));
        uint32_t a = htkv_crc32c(htkv_crc32c(init, p, split), p + split, len - split);
        uint32_t b = htkv_crc32c_sw(htkv_crc32c(init, p, split), p + split, len - split);
        uint32_t c = htkv_crc32c(htkv_crc32c_sw(init, p, split), p + split, len - split);
        if (a != hw || b != hw || c != hw) {
            fprintf(stderr, "seed %llu: len %zu split %zu: whole %08x pieces %08x %08x %08x\n",
                    (unsigned long long)seed, len, split, hw, a, b, c);
        }
        assert_int_equal(a, hw);
        assert_int_equal(b, hw);
        assert_int_equal(c, hw);
    }
    free(buf);
}

/* Goal: a single flipped bit always changes the CRC (CRC-32C detects every 1-bit error).
 * Method: a 256-byte seeded buffer, every bit flipped in turn, both paths. */
static void
test_crc32c_detects_every_single_bit_flip(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_crc32c_detects_every_single_bit_flip");
    uint64_t rng = seed;
    unsigned char b[256];
    for (size_t i = 0; i < sizeof(b); i++) {
        b[i] = (unsigned char)tu_rand(&rng);
    }
    uint32_t base = htkv_crc32c(0, b, sizeof(b));
    for (size_t bit = 0; bit < sizeof(b) * 8; bit++) {
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        assert_int_not_equal(htkv_crc32c(0, b, sizeof(b)), base);
        assert_int_not_equal(htkv_crc32c_sw(0, b, sizeof(b)), base);
        b[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_known_vectors),
        cmocka_unit_test(test_crc32c_hw_and_sw_agree_on_random_buffers),
        cmocka_unit_test(test_crc32c_detects_every_single_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
