/*
 * entry.h - the bytes of a raft entry of htkv_cluster: a group of write requests.
 *
 * An entry is what the leader proposes with raft_apply(): the write requests that were waiting
 * when it built the entry (group commit), each kept whole. Layout, little-endian:
 *
 *   entry    = u32 magic (ENTRY_MAGIC) | u32 request count R (1..HTKV_CLUSTER_ENTRY_WRITES_MAX)
 *              | R requests | 0..7 zero bytes (ENTRY_PAD)
 *   request  = u8 kind (enum entry_kind) | u32 op count | ops
 *   op       = u8 type (enum htkv_cluster_op_type) | u32 key length | u64 value length (PUT) or
 *              expected version (CHECK) or 0 (DELETE) | key bytes | value bytes (PUT)
 *
 * Invariants
 *   1. htkv_entry_req_encode() writes exactly htkv_entry_req_size() bytes, and only ops that
 *      htkv_entry_ops_check() accepted.
 *   2. The decoder never reads outside the buffer it was given: every length is checked against
 *      what is left before it is used; a malformed entry is reported, never trusted. Its
 *      verdict depends on the bytes alone, so every member reaches the same one.
 */
#ifndef HTKV_CLUSTER_ENTRY_H
#define HTKV_CLUSTER_ENTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <htkv/cluster.h>

#define ENTRY_MAGIC 0x434b5448u /* "HTKC" */
#define ENTRY_HDR_BYTES 8u      /* magic + request count */
#define ENTRY_REQ_HDR_BYTES 5u  /* kind + op count */
#define ENTRY_OP_HDR_BYTES 13u  /* type + key length + value length or version */
/*
 * Bytes of the raft buffer that carries an entry of @p n bytes: raft 0.15's disk format needs a
 * multiple of 8 (uvEncodeBatch() asserts it only in debug builds; a release build writes
 * unpadded data that its loader then refuses as a corrupt segment). The padding is zeros after
 * the last request; the decoder ignores bytes after the last request.
 */
#define ENTRY_PAD(n) (((n) + 7u) & ~(size_t)7u)

/** What a request asks for. */
enum entry_kind {
    ENTRY_BATCH = 1,      /* an atomic batch: checks, then puts and deletes */
    ENTRY_DELETE_ONE = 2, /* one delete that reports HTKV_ENOTFOUND for an absent key */
};

/*
 * Check @p n ops as htkv_cluster_write() documents: known types, 1..HTKV_KEY_MAX key bytes,
 * values only on puts (at most @p val_max bytes), versions only on checks.
 * Returns 0, -EINVAL or HTKV_ETOOBIG.
 */
int htkv_entry_ops_check(const struct htkv_cluster_op *ops, size_t n, uint64_t val_max);

/* Bytes that the request of @p n checked ops takes in an entry. */
size_t htkv_entry_req_size(const struct htkv_cluster_op *ops, size_t n);

/* Write the request (@p kind, @p ops) at @p out, which holds htkv_entry_req_size() bytes. */
void htkv_entry_req_encode(unsigned char *out, int kind, const struct htkv_cluster_op *ops,
                           size_t n);

/* Write the entry header for @p count requests at @p out (ENTRY_HDR_BYTES). */
void htkv_entry_hdr_encode(unsigned char *out, uint32_t count);

/* A cursor over the bytes of an entry (views into them). */
struct entry_reader {
    const unsigned char *p; /* next byte */
    size_t left;            /* bytes after p */
};

/*
 * Start reading the entry of @p len bytes at @p buf: sets *@p count to its request count.
 * Returns 0 or -EINVAL (malformed header).
 */
int htkv_entry_open(struct entry_reader *r, const void *buf, size_t len, uint32_t *count);

/*
 * Read the next request's header: its kind and op count. Returns 0 or -EINVAL.
 */
int htkv_entry_next_req(struct entry_reader *r, int *kind, uint32_t *nops);

/*
 * Read the next op of the current request into @p op (key and value are views into the entry).
 * Returns 0 or -EINVAL.
 */
int htkv_entry_next_op(struct entry_reader *r, struct htkv_cluster_op *op);

#endif /* HTKV_CLUSTER_ENTRY_H */
