/*
 * snapshot.h - writing a snapshot of the store, and checking one snapshot file whole (features
 * layer, snapshot.c).
 *
 * Invariant: snapshot numbers only grow (compactor.snapshot_seq, under compactor.lock), and a
 * written snapshot replaces every older one.
 */
#ifndef HTKV_ENGINE_SNAPSHOT_H
#define HTKV_ENGINE_SNAPSHOT_H

#include <stdint.h>

struct htkv_db;

/* Write DIR/snapshot-NNNNNN.snap and remove older ones (compactor.lock held). */
int htkv_snapshot_emit(struct htkv_db *db);

/**
 * Check the snapshot file at @p path whole, as htkv_snapshot_restore() does before it changes
 * anything: header (magic, checksum, format), size, trailer, the checksum of every entry byte,
 * every entry's lengths and version, strictly increasing key order, the entry count.
 * @param[in]  path             Snapshot file; borrowed. Mapped PROT_READ, never written.
 * @param[in]  max_value_bytes  Longest value accepted (HTKV_VALUE_MAX_LIMIT: any).
 * @param[out] version          Highest version the snapshot covers (0 on failure); may be NULL.
 * @param[out] count            Its entry count (0 on failure); may be NULL.
 * @param[out] bad_off          On HTKV_ECORRUPT / HTKV_EVERSION, the offset of the damage;
 *                              0 otherwise; may be NULL.
 * @return 0; HTKV_ECORRUPT (htkv_last_error(): "PATH: REASON at offset N"); HTKV_EVERSION (a
 *         newer format); -EINVAL; -errno of open/fstat/mmap (-ENOENT: no such file).
 * @context Any thread. Blocks on file I/O.
 */
int htkv_snapshot_check_file(const char *path, uint32_t max_value_bytes, uint64_t *version,
                             uint64_t *count, uint64_t *bad_off);

#endif /* HTKV_ENGINE_SNAPSHOT_H */
