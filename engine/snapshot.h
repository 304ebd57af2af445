/*
 * snapshot.h - writing a snapshot of the store (features layer, snapshot.c).
 *
 * Invariant: snapshot numbers only grow (compactor.snapshot_seq, under compactor.lock), and a
 * written snapshot replaces every older one.
 */
#ifndef HTKV_ENGINE_SNAPSHOT_H
#define HTKV_ENGINE_SNAPSHOT_H

struct htkv_db;

/* Write DIR/snapshot-NNNNNN.snap and remove older ones (compactor.lock held). */
int htkv_snapshot_emit(struct htkv_db *db);

#endif /* HTKV_ENGINE_SNAPSHOT_H */
