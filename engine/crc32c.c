// clang-format off
/*
 * crc32c.c - CRC-32C with a hardware path (SSE4.2 crc32 instruction) and a table path.
 *
 * Design. The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle, so a
 * single dependent chain of crc32di runs at a third of the instruction's rate. For buffers of
 * CRC32C_3WAY_MIN_BYTES and more the hardware path cuts the buffer into three consecutive blocks
 * A, B, C of equal length L (a multiple of 8), runs three independent chains interleaved in one
 * loop, and merges them with carry-less multiplication (PCLMULQDQ). Buffers longer than
 * 3 * CRC32C_3WAY_BLOCK_MAX are done in pieces of that size first, which bounds the constant
 * table and keeps the three read streams close together in cache. Shorter buffers, and CPUs
 * without PCLMULQDQ, use the single chain.
 *
 * The merge. Write R(r, D) for the raw CRC register after feeding bytes D into register r (no
 * inversion), with polynomials in the reflected bit order (bit i of a 32-bit value is the
 * coefficient of x^(31-i)). Then R(r, D) = r * x^(8|D|) + D * x^32 mod P, which is linear:
 *   R(r, A || B) = R(R(r, A), B) = R(r, A) * x^(8|B|) + R(0, B)                    (mod P)
 * The public value is crc(c, D) = ~R(~c, D). Writing shift(v, n) = v * x^(8n) mod P, which is
 * linear in v, so shift(~v) = shift(v) ^ shift(~0):
 *   crc(c, A || B) = ~(shift(~crc(c, A), |B|) ^ R(0, B))
 *                  = ~(shift(crc(c, A), |B|) ^ shift(~0, |B|) ^ R(0, B))
 *                  = shift(crc(c, A), |B|) ^ ~R(~0, B)    [R(~0, B) = shift(~0, |B|) ^ R(0, B)]
 *                  = shift(crc(c, A), |B|) ^ crc(0, B)
 * The code works on raw registers, where the inversions never appear: the first chain starts at
 * ~c, the other two at 0, and
 *   R(~c, A || B || C) = shift(R(~c, A), 2L) ^ shift(R(0, B), L) ^ R(0, C).
 *
 * The shift. For 32-bit reflected values a and b, clmul(a, b) has bit k equal to the coefficient
 * of x^(62-k) of a*b; read as a 64-bit reflected value (bit k = x^(63-k)) it is a*b*x. The
 * instruction crc32di(0, w) computes w * x^32 mod P, so crc32di(0, clmul(a, b)) = a*b*x^33 mod P.
 * With k = x^(8n - 33) mod P that is a * x^(8n) mod P = shift(a, n). The constants for
 * n = 8m, m = 1 .. 2 * CRC32C_3WAY_BLOCK_MAX / 8, are built at init: k(1) = x^31 (the value 1),
 * and k(m + 1) = k(m) * x^64 mod P, which is the register after feeding 8 zero bytes into k(m).
 *
 * Invariants
 *   1. Both paths compute the reflected CRC-32C (polynomial 0x82F63B78) with pre- and
 *      post-inversion, so htkv_crc32c(0, "123456789", 9) == 0xE3069283.
 *   2. htkv_crc32c(htkv_crc32c(0, a, n), b, m) == htkv_crc32c(0, a || b, n + m): callers
 *      checksum a record in pieces.
 *   3. The three-way path returns exactly what the single chain returns for every input; it only
 *      changes the order of the work.
 *   4. crc_shift_k[m] == x^(64m - 33) mod P (reflected) for 1 <= m <= CRC_SHIFT_K_COUNT - 1.
 */
// clang-format on
#include "engine/internal.h"

#include "engine/crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

/* Entry m is the constant for shifting by 8m bytes; the merge shifts by at most 2 blocks. */
#define CRC_SHIFT_K_COUNT (2 * CRC32C_3WAY_BLOCK_MAX / 8 + 1)

HTKV_STATIC_ASSERT(CRC32C_3WAY_BLOCK_MAX % 8 == 0, "blocks are whole 8-byte words");
/* 3 blocks of at least 8 bytes each, so L >= 8 and 8L - 33 >= 31 keeps the constant's power >= 0.
 */
HTKV_STATIC_ASSERT(CRC32C_3WAY_MIN_BYTES >= 24, "three-way path needs L >= 8");
HTKV_STATIC_ASSERT(CRC32C_3WAY_MIN_BYTES <= 3 * CRC32C_3WAY_BLOCK_MAX, "threshold fits a piece");

static uint32_t crc_table[8][256];
static uint32_t crc_shift_k[CRC_SHIFT_K_COUNT]; /* 2 * 4096 / 8 + 1 entries = 4 KiB */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_hw;
static int crc_have_clmul;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            uint32_t prev = crc_table[t - 1][i];
            crc_table[t][i] = (prev >> 8) ^ crc_table[0][prev & 0xff];
        }
    }
    /* Invariant 4: k(1) = x^31 is bit 0 in reflected order; each step feeds 8 zero bytes. */
    crc_shift_k[0] = 0; /* unused: a zero-length shift never happens */
    crc_shift_k[1] = 1;
    for (size_t m = 2; m < CRC_SHIFT_K_COUNT; m++) {
        uint32_t c = crc_shift_k[m - 1];
        for (int k = 0; k < 8; k++) {
            c = (c >> 8) ^ crc_table[0][c & 0xff];
        }
        crc_shift_k[m] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_have_hw = __builtin_cpu_supports("sse4.2");
    crc_have_clmul = crc_have_hw && __builtin_cpu_supports("pclmul");
#endif
}

uint32_t
htkv_crc32c_sw(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const unsigned char *s = p;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        s += 8;
        n -= 8;
    }
    while (n-- > 0) {
        c = (c >> 8) ^ crc_table[0][(c ^ *s++) & 0xff];
    }
    return ~c;
}

#if defined(__x86_64__)
typedef long long crc_v2di __attribute__((vector_size(16)));

/* shift(r, 8m bytes) = r * x^(64m) mod P; see "The shift" above. */
__attribute__((target("sse4.2,pclmul"))) static inline uint64_t
crc_shift(uint64_t r, size_t m)
{
    HTKV_ASSERT(m >= 1);
    HTKV_ASSERT(m < CRC_SHIFT_K_COUNT);
    crc_v2di a = { (long long)r, 0 };
    crc_v2di k = { (long long)crc_shift_k[m], 0 };
    crc_v2di prod = __builtin_ia32_pclmulqdq128(a, k, 0x00);
    return __builtin_ia32_crc32di(0, (uint64_t)prod[0]);
}

/*
 * Raw register after feeding 3 * @p block_bytes bytes at @p s into @p c: three chains over the
 * consecutive blocks, merged as R(c, A) * x^(16L) ^ R(0, B) * x^(8L) ^ R(0, C).
 */
__attribute__((target("sse4.2,pclmul"))) static uint64_t
crc3_hw(uint64_t c, const unsigned char *s, size_t block_bytes)
{
    HTKV_ASSERT(block_bytes % 8 == 0);
    HTKV_ASSERT(block_bytes >= 8 && block_bytes <= CRC32C_3WAY_BLOCK_MAX);
    uint64_t c1 = 0, c2 = 0;
    const unsigned char *end = s + block_bytes;
    for (; s < end; s += 8) {
        uint64_t w0, w1, w2;
        memcpy(&w0, s, 8);
        memcpy(&w1, s + block_bytes, 8);
        memcpy(&w2, s + 2 * block_bytes, 8);
        c = __builtin_ia32_crc32di(c, w0);
        c1 = __builtin_ia32_crc32di(c1, w1);
        c2 = __builtin_ia32_crc32di(c2, w2);
    }
    size_t m = block_bytes / 8;
    uint64_t r = crc_shift(c, 2 * m) ^ crc_shift(c1, m) ^ c2;
    HTKV_DASSERT(r >> 32 == 0);
    return r;
}
#endif

#if defined(__x86_64__)
/* Only sse4.2 here: this also runs on CPUs without PCLMULQDQ, which never reach crc3_hw(). */
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t c = (uint32_t)~crc;
    if (crc_have_clmul) {
        while (n >= 3 * CRC32C_3WAY_BLOCK_MAX) {
            c = crc3_hw(c, s, CRC32C_3WAY_BLOCK_MAX);
            s += 3 * CRC32C_3WAY_BLOCK_MAX;
            n -= 3 * CRC32C_3WAY_BLOCK_MAX;
        }
        if (n >= CRC32C_3WAY_MIN_BYTES) {
            size_t block_bytes = (n / 3) & ~(size_t)7;
            c = crc3_hw(c, s, block_bytes);
            s += 3 * block_bytes;
            n -= 3 * block_bytes;
            /* n / 3 lost at most 7 bytes per block to rounding, plus 2 to the division. */
            HTKV_ASSERT(n < 24);
        }
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        c = __builtin_ia32_crc32di(c, w);
        s += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n-- > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *s++);
    }
    return ~c32;
}
#endif

uint32_t
htkv_crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_have_hw) {
        return crc32c_hw(crc, p, n);
    }
#endif
    return htkv_crc32c_sw(crc, p, n);
}
