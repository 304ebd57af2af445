/*
 * batch.h - batches (htkv_batch_* of the public API) and their atomic commit across shards
 * (store layer).
 *
 * A batch is a list of operations (puts, deletes, and checks of a key's version) whose keys and
 * values are copied into one buffer. Invariants: ncount <= nops; rec_bytes is the sum of the
 * record sizes of its puts and deletes and stays <= BATCH_BYTES_MAX; a committed batch is all
 * visible at one version or not at all.
 */
#ifndef HTKV_ENGINE_BATCH_H
#define HTKV_ENGINE_BATCH_H

#include "engine/internal.h"

struct htkv_db;

/* Largest batch: 1 GiB of records, and 64 Mi operations and conditions (checks have no record:
 * this bounds them, and keeps every index into a batch's operations within 32 bits). */
#define BATCH_BYTES_MAX (1ull << 30)
#define BATCH_OPS_MAX (1u << 26)

/* One operation of a batch, or a condition (type 0). */
struct batch_op {
    uint8_t type; /* REC_SET, REC_DEL, or 0 for a check */
    uint32_t klen;
    uint32_t vlen;
    uint64_t data_off; /* key then value in batch->data */
    uint64_t version;  /* expected version, for checks */
};

struct htkv_batch {
    struct batch_op *ops;
    size_t nops;   /* puts + deletes + checks */
    size_t ncount; /* puts + deletes */
    size_t ops_cap;
    unsigned char *data;
    uint64_t data_len;
    uint64_t data_cap;
    uint64_t rec_bytes; /* sum of record sizes of puts and deletes */
    uint64_t version;   /* assigned by the last successful write */
    /* htkv_submit(): the version the caller gives (0 = assign one); it must be above every
     * version applied, or the write fails with -ERANGE and writes nothing. */
    uint64_t fixed_version;
};

/*
 * Apply batch @p b atomically in every shard it touches: take the shard locks in ascending
 * order, check its conditions, write, sync (ALWAYS), install. Returns 0 and the version through
 * @p version_out (0 when nothing was written), or an error with nothing applied.
 */
int htkv_batch_apply(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out);

/*
 * The first half of htkv_batch_apply(): under the shard locks, check, append and install the
 * batch; publish it unless the sync mode is ALWAYS. Fills @p shards_out (room for b->nops ids)
 * with the shards that received records. *version_out = 0 when nothing was written.
 */
int htkv_batch_stage(struct htkv_db *db, const struct htkv_batch *b, uint64_t *version_out,
                     uint32_t *shards_out, uint32_t *nshards_out);

#endif /* HTKV_ENGINE_BATCH_H */
