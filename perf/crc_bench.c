/*
 * crc_bench.c - throughput of htkv_crc32c() (GB/s) for a range of buffer lengths.
 *
 * Not built by default. Build against the library from the normal build tree:
 *   cmake --build build -j2
 *   cc -std=c11 -O2 -I. -Iinclude perf/crc_bench.c build/libhtkv.a -lpthread -o build/crc_bench
 *   build/crc_bench            # or: build/crc_bench --sw  (table path, for comparison)
 *
 * Each length is timed over about 64 MiB of checksummed input per trial, five trials, and the
 * best trial is reported, because on a shared VM the minimum time is the least noisy estimate.
 * Successive calls chain their result into the next call's seed so the compiler cannot hoist
 * or drop them and so each call depends on the previous one, as when a record is checksummed in
 * pieces.
 */
#define _POSIX_C_SOURCE 200809L
#include "engine/crc32c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int
main(int argc, char **argv)
{
    int use_sw = argc > 1 && strcmp(argv[1], "--sw") == 0;
    static const size_t lens[] = { 24, 64, 128, 256, 1024, 4096, 65536 };
    size_t cap = 65536 + 64;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) {
        return 1;
    }
    for (size_t i = 0; i < cap; i++) {
        buf[i] = (unsigned char)(i * 131u + 7u);
    }
    uint32_t sink = 0;
    printf("%-8s %10s %12s\n", "len", "GB/s", "ns/call");
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        size_t len = lens[li];
        size_t calls = ((size_t)64 << 20) / len;
        double best = 1e30;
        for (int trial = 0; trial < 5; trial++) {
            uint32_t c = sink;
            double t0 = now_s();
            for (size_t k = 0; k < calls; k++) {
                c = use_sw ? htkv_crc32c_sw(c, buf + (k & 7), len)
                           : htkv_crc32c(c, buf + (k & 7), len);
            }
            double dt = now_s() - t0;
            sink ^= c;
            if (dt < best) {
                best = dt;
            }
        }
        double bytes = (double)calls * (double)len;
        printf("%-8zu %10.2f %12.2f\n", len, bytes / best / 1e9, best / (double)calls * 1e9);
    }
    printf("(sink %08x)\n", sink);
    free(buf);
    return 0;
}
