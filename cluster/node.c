/*
 * node.c - the API side of an htkv_cluster member (include/htkv/cluster.h): open and close,
 * and the calls that caller threads make (threads and invariants in node.h).
 *
 * Design. A call checks its arguments on the calling thread (bad input changes nothing and
 * never reaches the loop), encodes a write into its own buffer (entry.h), queues a request and
 * waits for the loop thread's answer (submit()). Local reads never involve the loop thread.
 */
#include "cluster/node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/config.h"
#include "cluster/entry.h"
#include "cluster/util.h"

/* Queue @p r, wake the loop and wait for the answer (invariant 1 of node.h). */
static int
submit(struct htkv_cluster *c, struct creq *r)
{
    r->done = false;
    r->next = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return HTKV_ECLOSED; /* invariant 3 */
    }
    *c->tail = r;
    c->tail = &r->next;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->wake);
    pthread_mutex_lock(&c->mu);
    while (!r->done) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return r->rc;
}

/* Encode and submit one write request. */
static int
write_request(htkv_cluster *c, int kind, const struct htkv_cluster_op *ops, size_t n,
              uint64_t *version, struct htkv_cluster_leader *leader)
{
    if (version != NULL) {
        *version = 0;
    }
    if (c == NULL) {
        return -EINVAL;
    }
    int rc = htkv_entry_ops_check(ops, n, c->val_max);
    if (rc != 0) {
        return rc;
    }
    if (atomic_load(&c->failed)) {
        return HTKV_EFAILED;
    }
    size_t len = htkv_entry_req_size(ops, n);
    unsigned char *bytes = malloc(len);
    if (bytes == NULL) {
        return -ENOMEM;
    }
    htkv_entry_req_encode(bytes, kind, ops, n);
    struct creq r = { .kind = CREQ_WRITE, .bytes = bytes, .len = len };
    rc = submit(c, &r);
    free(bytes);
    if (version != NULL) {
        *version = rc == 0 ? r.version : 0;
    }
    if (rc == HTKV_ENOTLEADER && leader != NULL) {
        *leader = r.leader;
    }
    return rc;
}

int
htkv_cluster_put(htkv_cluster *c, const void *key, size_t klen, const void *val, size_t vlen,
                 uint64_t *version, struct htkv_cluster_leader *leader)
{
    struct htkv_cluster_op op = {
        .type = HTKV_CLUSTER_OP_PUT, .key = key, .key_len = klen, .val = val, .val_len = vlen
    };
    return write_request(c, ENTRY_BATCH, &op, 1, version, leader);
}

int
htkv_cluster_delete(htkv_cluster *c, const void *key, size_t klen, uint64_t *version,
                    struct htkv_cluster_leader *leader)
{
    struct htkv_cluster_op op = { .type = HTKV_CLUSTER_OP_DELETE, .key = key, .key_len = klen };
    return write_request(c, ENTRY_DELETE_ONE, &op, 1, version, leader);
}

int
htkv_cluster_write(htkv_cluster *c, const struct htkv_cluster_op *ops, size_t n, uint64_t *version,
                   struct htkv_cluster_leader *leader)
{
    return write_request(c, ENTRY_BATCH, ops, n, version, leader);
}

/* The arguments every read checks, and the member's state: 0 or the code to return. */
static int
read_check(htkv_cluster *c, const void *key, size_t klen, const void *buf, size_t cap)
{
    if (c == NULL || (buf == NULL && cap > 0) || key == NULL || klen == 0) {
        return -EINVAL;
    }
    if (klen > HTKV_KEY_MAX) {
        return HTKV_ETOOBIG;
    }
    return atomic_load(&c->failed) ? HTKV_EFAILED : 0;
}

int
htkv_cluster_get(htkv_cluster *c, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen,
                 uint64_t *version, struct htkv_cluster_leader *leader)
{
    int rc = read_check(c, key, klen, buf, cap);
    if (rc != 0) {
        return rc;
    }
    struct creq r = { .kind = CREQ_READ };
    rc = submit(c, &r);
    if (rc == HTKV_ENOTLEADER && leader != NULL) {
        *leader = r.leader;
    }
    if (rc != 0) {
        return rc;
    }
    /* The barrier is applied: the store holds every write committed before this call. */
    return htkv_get_version(c->db, key, klen, buf, cap, vlen, version);
}

int
htkv_cluster_get_local(htkv_cluster *c, const void *key, size_t klen, void *buf, size_t cap,
                       size_t *vlen, uint64_t *version, uint64_t *applied)
{
    int rc = read_check(c, key, klen, buf, cap);
    if (rc != 0) {
        return rc;
    }
    uint64_t latest = 0;
    rc = htkv_latest_version(c->db, &latest);
    if (rc == 0) {
        rc = htkv_get_version(c->db, key, klen, buf, cap, vlen, version);
    }
    if (applied != NULL) {
        *applied = latest;
    }
    return rc;
}

int
htkv_cluster_status(htkv_cluster *c, struct htkv_cluster_status *out)
{
    if (c == NULL || out == NULL) {
        return -EINVAL;
    }
    struct creq r = { .kind = CREQ_STATUS, .status = out };
    return submit(c, &r);
}

/* Submit one membership change or transfer. */
static int
change_request(htkv_cluster *c, int change, uint64_t target, const char *address,
               struct htkv_cluster_leader *leader)
{
    struct creq r = { .kind = CREQ_CHANGE, .change = change, .target = target, .address = address };
    int rc = submit(c, &r);
    if (leader != NULL && (rc == HTKV_ENOTLEADER || (rc == 0 && change == CHANGE_TRANSFER))) {
        *leader = r.leader;
    }
    return rc;
}

int
htkv_cluster_add(htkv_cluster *c, uint64_t id, const char *address,
                 struct htkv_cluster_leader *leader)
{
    if (c == NULL || id == 0 || address == NULL || htkv_caddr_parse(address, NULL) != 0) {
        return -EINVAL;
    }
    return change_request(c, CHANGE_ADD, id, address, leader);
}

int
htkv_cluster_remove(htkv_cluster *c, uint64_t id, struct htkv_cluster_leader *leader)
{
    if (c == NULL || id == 0) {
        return -EINVAL;
    }
    return change_request(c, CHANGE_REMOVE, id, NULL, leader);
}

int
htkv_cluster_transfer(htkv_cluster *c, uint64_t id, struct htkv_cluster_leader *leader)
{
    if (c == NULL) {
        return -EINVAL;
    }
    return change_request(c, CHANGE_TRANSFER, id, NULL, leader);
}
