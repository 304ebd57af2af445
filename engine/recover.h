/*
 * recover.h - rebuilding a store's shards from its manifest, hint files and segments at open
 * (store layer, recover.c).
 *
 * Invariant: on success every shard's index holds the newest durable version of each key, and
 * the store's next version exceeds every version found on disk.
 */
#ifndef HTKV_ENGINE_RECOVER_H
#define HTKV_ENGINE_RECOVER_H

struct htkv_db;

/* Recover @p db (shards created, manifest read). 0 or an error; the handle is then closed. */
int htkv_recover(struct htkv_db *db);

#endif /* HTKV_ENGINE_RECOVER_H */
