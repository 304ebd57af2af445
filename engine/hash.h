/*
 * hash.h - the 64-bit key hash that picks a key's shard and its index slot.
 *
 * The function is part of the on-disk contract: a key's shard is derived from
 * htkv_hash(key, seed) with the seed stored in the manifest at creation, so it must never change
 * for format version 1. It is a multiply-xorshift construction: every 8-byte word is folded in
 * with a 64x64->128 multiply, and a final avalanche spreads every input bit over the output.
 */
#ifndef HTKV_ENGINE_HASH_H
#define HTKV_ENGINE_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HASH_K1 0x9E3779B97F4A7C15ull /* 2^64 / golden ratio */
#define HASH_K2 0xC2B2AE3D27D4EB4Full
#define HASH_K3 0x165667B19E3779F9ull

static inline uint64_t
hash_fold(uint64_t a, uint64_t b)
{
    __uint128_t m = (__uint128_t)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

static inline uint64_t
htkv_hash(const void *key, size_t len, uint64_t seed)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ (len * HASH_K1);
    while (len >= 16) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        h = hash_fold(a ^ HASH_K2 ^ h, b ^ HASH_K3);
        p += 16;
        len -= 16;
    }
    uint64_t a = 0, b = 0;
    if (len >= 8) {
        memcpy(&a, p, 8);
        memcpy(&b, p + len - 8, 8); /* overlapping read of the last 8 bytes */
    } else if (len >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + len - 4, 4);
        a = x;
        b = y;
    } else if (len > 0) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[len >> 1] << 8) | p[len - 1];
    }
    h = hash_fold(a ^ HASH_K2 ^ h, b ^ HASH_K1 ^ len);
    /* Final avalanche. */
    h ^= h >> 33;
    h *= HASH_K2;
    h ^= h >> 29;
    h *= HASH_K3;
    h ^= h >> 32;
    return h;
}

#endif
