/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every on-disk record and file header.
 */
#ifndef HTKV_ENGINE_CRC32C_H
#define HTKV_ENGINE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extend @p crc (0 to start) over @p n bytes at @p p. Uses the SSE4.2 instruction where the CPU
 * has it and a slicing-by-8 table otherwise; both give identical results.
 */
uint32_t htkv_crc32c(uint32_t crc, const void *p, size_t n);

/* Force the portable implementation (tests compare both). */
uint32_t htkv_crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif
