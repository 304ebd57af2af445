/*
 * crc32c.c - CRC-32C with a hardware path (SSE4.2 crc32 instruction) and a table path.
 *
 * Invariants
 *   1. Both paths compute the reflected CRC-32C (polynomial 0x82F63B78) with pre- and
 *      post-inversion, so htkv_crc32c(0, "123456789", 9) == 0xE3069283.
 *   2. htkv_crc32c(htkv_crc32c(0, a, n), b, m) == htkv_crc32c(0, a || b, n + m): callers
 *      checksum a record in pieces.
 */
#include "engine/crc32c.h"

#include <pthread.h>
#include <string.h>

#define CRC32C_POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_hw;

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
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_have_hw = __builtin_cpu_supports("sse4.2");
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
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t c = (uint32_t)~crc;
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
