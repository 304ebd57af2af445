/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every on-disk record and file header.
 */
#ifndef HTKV_ENGINE_CRC32C_H
#define HTKV_ENGINE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Buffers of at least this many bytes take the three-way hardware path (three interleaved crc32
 * chains merged with carry-less multiplication); shorter ones use one chain. Measured on a shared
 * 2-core VM (perf/crc_bench.c style loop, every length 56..112): the three-way path first wins at
 * 72 bytes (L = 24) by 4-7%, and from 96 (L = 32) by 15-20%, clear of the VM's noise; below 72 its
 * merge (two clmul + crc32, ~10 cycles) costs more than the ~2/3 of the chain it saves. Must be
 * >= 24 (3 blocks of 8 bytes).
 */
#define CRC32C_3WAY_MIN_BYTES 96

/*
 * Largest block of the three-way path: longer buffers are done in pieces of 3 blocks
 * (3 * 4096 = 12 KiB, so the three read streams share the L1/L2 working set); the merge
 * constants take 2 * 4096 / 8 + 1 entries of 4 bytes = 4 KiB.
 */
#define CRC32C_3WAY_BLOCK_MAX 4096

/*
 * Extend @p crc (0 to start) over @p n bytes at @p p. Uses the SSE4.2 instruction where the CPU
 * has it and a slicing-by-8 table otherwise; both give identical results.
 */
uint32_t htkv_crc32c(uint32_t crc, const void *p, size_t n);

/* Force the portable implementation (tests compare both). */
uint32_t htkv_crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif
