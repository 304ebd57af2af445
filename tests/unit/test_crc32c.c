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

/* Compare htkv_crc32c against the table path for one buffer, whole and split at @p split, with
 * both paths on either side of the split; print the seed and the case on a mismatch. */
static void
crc_check_one(uint64_t seed, const unsigned char *p, size_t len, size_t split, uint32_t init)
{
    uint32_t sw = htkv_crc32c_sw(init, p, len);
    uint32_t hw = htkv_crc32c(init, p, len);
    uint32_t a = htkv_crc32c(htkv_crc32c(init, p, split), p + split, len - split);
    uint32_t b = htkv_crc32c_sw(htkv_crc32c(init, p, split), p + split, len - split);
    uint32_t c = htkv_crc32c(htkv_crc32c_sw(init, p, split), p + split, len - split);
    if (hw != sw || a != sw || b != sw || c != sw) {
        fprintf(stderr,
                "seed %llu: len %zu split %zu init %08x align %u: sw %08x hw %08x pieces %08x "
                "%08x %08x\n",
                (unsigned long long)seed, len, split, init, (unsigned)((uintptr_t)p % 64), sw, hw,
                a, b, c);
    }
    assert_int_equal(hw, sw);
    assert_int_equal(a, sw);
    assert_int_equal(b, sw);
    assert_int_equal(c, sw);
}

/* Goal: the three-way hardware path (and the one-chain path below it) equals the table path for
 * every length 0..4096, at random alignments, seeds and split points. Method: a seeded random
 * buffer; each length twice, with a random start offset 0..63, a random seed CRC (0 half the
 * time) and a random split point, plus the splits at 0 and len. */
static void
test_crc32c_every_length_to_4096_matches_table(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_crc32c_every_length_to_4096_matches_table");
    uint64_t rng = seed;
    size_t cap = 4096 + 64;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t i = 0; i < cap; i++) {
        buf[i] = (unsigned char)tu_rand(&rng);
    }
    for (size_t len = 0; len <= 4096; len++) {
        for (int rep = 0; rep < 2; rep++) {
            const unsigned char *p = buf + tu_rand(&rng) % 64;
            uint32_t init = (tu_rand(&rng) % 2 == 0) ? (uint32_t)tu_rand(&rng) : 0;
            size_t split = (size_t)(tu_rand(&rng) % (len + 1));
            crc_check_one(seed, p, len, split, init);
        }
        crc_check_one(seed, buf + 1, len, 0, 0xFFFFFFFFu);
        crc_check_one(seed, buf + 3, len, len, 0x12345678u);
    }
    free(buf);
}

/* Goal: no off-by-one where the path changes: the three-way threshold, the largest single
 * piece (3 * CRC32C_3WAY_BLOCK_MAX) and its multiples, each +-1 and +-8 (one word), including
 * splits that leave one side just under the threshold. Method: seeded random buffer, every
 * alignment 0..7, random seeds; splits at 0, len, threshold - 1 and random. */
static void
test_crc32c_thresholds_match_table(void **state)
{
    (void)state;
    uint64_t seed = tu_seed("test_crc32c_thresholds_match_table");
    uint64_t rng = seed;
    const size_t piece = 3 * CRC32C_3WAY_BLOCK_MAX;
    size_t cap = 4 * piece + 256;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t i = 0; i < cap; i++) {
        buf[i] = (unsigned char)tu_rand(&rng);
    }
    const size_t bases[] = { CRC32C_3WAY_MIN_BYTES,         piece,    2 * piece, 3 * piece,
                             piece + CRC32C_3WAY_MIN_BYTES, 4 * piece };
    const int deltas[] = { -9, -8, -7, -1, 0, 1, 7, 8, 9 };
    for (size_t bi = 0; bi < sizeof(bases) / sizeof(bases[0]); bi++) {
        for (size_t di = 0; di < sizeof(deltas) / sizeof(deltas[0]); di++) {
            size_t len = (size_t)((long)bases[bi] + deltas[di]);
            assert_true(len + 8 <= cap);
            for (size_t align = 0; align < 8; align++) {
                const unsigned char *p = buf + align;
                uint32_t init = (uint32_t)tu_rand(&rng);
                crc_check_one(seed, p, len, 0, init);
                crc_check_one(seed, p, len, len, 0);
                crc_check_one(seed, p, len, (size_t)(tu_rand(&rng) % (len + 1)), init);
                if (len >= CRC32C_3WAY_MIN_BYTES - 1) {
                    crc_check_one(seed, p, len, CRC32C_3WAY_MIN_BYTES - 1, init);
                    crc_check_one(seed, p, len, len - (CRC32C_3WAY_MIN_BYTES - 1), init);
                }
            }
        }
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
        cmocka_unit_test(test_crc32c_every_length_to_4096_matches_table),
        cmocka_unit_test(test_crc32c_thresholds_match_table),
        cmocka_unit_test(test_crc32c_detects_every_single_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
