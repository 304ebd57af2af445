/*
 * entry.c - encode and decode the raft entries of htkv_cluster (layout and invariants in
 * entry.h).
 *
 * Design. Caller threads encode their own request (a copy of their ops) before handing it to
 * the loop thread, which only concatenates requests behind a header; members decode entries in
 * their FSM. Every integer is written byte by byte in little-endian order, so the bytes are the
 * same on every member whatever its architecture.
 */
#include "cluster/entry.h"

#include "cluster/util.h"

#include <errno.h>
#include <string.h>

static void
put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void
put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static uint32_t
get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static int
op_check(const struct htkv_cluster_op *op, uint64_t val_max)
{
    if (op->key == NULL || op->key_len == 0) {
        return -EINVAL;
    }
    if (op->key_len > HTKV_KEY_MAX) {
        return HTKV_ETOOBIG;
    }
    switch (op->type) {
    case HTKV_CLUSTER_OP_PUT:
        if ((op->val == NULL && op->val_len > 0) || op->version != 0) {
            return -EINVAL;
        }
        return op->val_len > val_max ? HTKV_ETOOBIG : 0;
    case HTKV_CLUSTER_OP_DELETE:
        return op->val_len != 0 || op->version != 0 ? -EINVAL : 0;
    case HTKV_CLUSTER_OP_CHECK:
        return op->val_len != 0 ? -EINVAL : 0;
    default:
        return -EINVAL;
    }
}

int
htkv_entry_ops_check(const struct htkv_cluster_op *ops, size_t n, uint64_t val_max)
{
    if (ops == NULL || n == 0 || n > HTKV_CLUSTER_ENTRY_WRITES_MAX) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = op_check(&ops[i], val_max);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

size_t
htkv_entry_req_size(const struct htkv_cluster_op *ops, size_t n)
{
    size_t bytes = ENTRY_REQ_HDR_BYTES;
    for (size_t i = 0; i < n; i++) {
        bytes += ENTRY_OP_HDR_BYTES + ops[i].key_len + ops[i].val_len;
    }
    return bytes;
}

void
htkv_entry_req_encode(unsigned char *out, int kind, const struct htkv_cluster_op *ops, size_t n)
{
    CL_ASSERT(kind == ENTRY_BATCH || kind == ENTRY_DELETE_ONE);
    CL_ASSERT(n >= 1 && n <= HTKV_CLUSTER_ENTRY_WRITES_MAX);
    unsigned char *p = out;
    *p++ = (unsigned char)kind;
    put_u32(p, (uint32_t)n);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        const struct htkv_cluster_op *op = &ops[i];
        *p++ = (unsigned char)op->type;
        put_u32(p, (uint32_t)op->key_len);
        put_u64(p + 4, op->type == HTKV_CLUSTER_OP_CHECK ? op->version : op->val_len);
        p += 12;
        memcpy(p, op->key, op->key_len);
        p += op->key_len;
        if (op->val_len > 0) {
            memcpy(p, op->val, op->val_len);
            p += op->val_len;
        }
    }
    CL_ASSERT((size_t)(p - out) == htkv_entry_req_size(ops, n)); /* invariant 1 */
}

void
htkv_entry_hdr_encode(unsigned char *out, uint32_t count)
{
    CL_ASSERT(count >= 1 && count <= HTKV_CLUSTER_ENTRY_WRITES_MAX);
    put_u32(out, ENTRY_MAGIC);
    put_u32(out + 4, count);
}

int
htkv_entry_open(struct entry_reader *r, const void *buf, size_t len, uint32_t *count)
{
    if (buf == NULL || len < ENTRY_HDR_BYTES || get_u32(buf) != ENTRY_MAGIC) {
        return -EINVAL;
    }
    r->p = (const unsigned char *)buf + ENTRY_HDR_BYTES;
    r->left = len - ENTRY_HDR_BYTES;
    *count = get_u32((const unsigned char *)buf + 4);
    return *count >= 1 && *count <= HTKV_CLUSTER_ENTRY_WRITES_MAX ? 0 : -EINVAL;
}

int
htkv_entry_next_req(struct entry_reader *r, int *kind, uint32_t *nops)
{
    if (r->left < ENTRY_REQ_HDR_BYTES) {
        return -EINVAL;
    }
    *kind = r->p[0];
    *nops = get_u32(r->p + 1);
    r->p += ENTRY_REQ_HDR_BYTES;
    r->left -= ENTRY_REQ_HDR_BYTES;
    bool known = *kind == ENTRY_BATCH || *kind == ENTRY_DELETE_ONE;
    return known && *nops >= 1 && *nops <= HTKV_CLUSTER_ENTRY_WRITES_MAX ? 0 : -EINVAL;
}

int
htkv_entry_next_op(struct entry_reader *r, struct htkv_cluster_op *op)
{
    if (r->left < ENTRY_OP_HDR_BYTES) {
        return -EINVAL;
    }
    memset(op, 0, sizeof(*op));
    op->type = r->p[0];
    op->key_len = get_u32(r->p + 1);
    uint64_t word = get_u64(r->p + 5);
    r->p += ENTRY_OP_HDR_BYTES;
    r->left -= ENTRY_OP_HDR_BYTES;
    if (op->type == HTKV_CLUSTER_OP_CHECK) {
        op->version = word;
    } else if (op->type == HTKV_CLUSTER_OP_PUT) {
        if (word > r->left) {
            return -EINVAL;
        }
        op->val_len = (size_t)word;
    } else if (word != 0) {
        return -EINVAL;
    }
    /* Invariant 2: both lengths are checked against what is left before anything is read. */
    if (op->key_len > r->left || op->val_len > r->left - op->key_len) {
        return -EINVAL;
    }
    op->key = r->p;
    op->val = op->val_len > 0 ? r->p + op->key_len : NULL;
    r->p += op->key_len + op->val_len;
    r->left -= op->key_len + op->val_len;
    return op_check(op, UINT64_MAX);
}
