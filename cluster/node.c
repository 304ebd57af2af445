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

/* The bounds of an ordered read: a prefix (prefix set) or a range [start, end). */
struct read_span {
    bool prefix;
    const void *start, *end;
    size_t slen, elen;
};

/* Walk @p it into fn, @p limit items at most: 0, fn's value or the iterator's error. */
static int
walk_items(htkv_iter *it, uint64_t limit, htkv_cluster_item_fn fn, void *ctx)
{
    int rc = limit > 0 ? htkv_iter_set_limit(it, limit) : 0;
    while (rc == 0) {
        const void *k, *v;
        size_t kl, vl;
        rc = htkv_iter_next(it, &k, &kl, &v, &vl);
        if (rc != 1) {
            break;
        }
        rc = fn(k, kl, v, vl, htkv_iter_version(it), ctx);
    }
    return rc;
}

/* Read @p sp from one view of the store, with the views lock shared (fsm.h). */
static int
read_span_local(htkv_cluster *c, const struct read_span *sp, uint64_t limit,
                htkv_cluster_item_fn fn, void *ctx, uint64_t *read_version)
{
    pthread_rwlock_rdlock(&c->fsm.views);
    htkv_view *v = NULL;
    htkv_iter *it = NULL;
    int rc = htkv_view_open(c->db, &v);
    if (rc == 0) {
        rc = sp->prefix ? htkv_view_get_prefix(v, sp->start, sp->slen, &it)
                        : htkv_view_scan(v, sp->start, sp->slen, sp->end, sp->elen, &it);
    }
    if (rc == 0) {
        rc = walk_items(it, limit, fn, ctx);
    }
    if (v != NULL && read_version != NULL) {
        *read_version = htkv_view_version(v);
    }
    htkv_iter_destroy(it);
    htkv_view_close(v);
    pthread_rwlock_unlock(&c->fsm.views);
    return rc;
}

static int
read_span(htkv_cluster *c, const struct read_span *sp, uint64_t limit, unsigned flags,
          htkv_cluster_item_fn fn, void *ctx, uint64_t *read_version,
          struct htkv_cluster_leader *leader)
{
    if (c == NULL || fn == NULL || (flags & ~HTKV_CLUSTER_READ_LOCAL) != 0 ||
        (sp->start == NULL && sp->slen > 0) || (sp->end == NULL && sp->elen > 0)) {
        return -EINVAL;
    }
    if (sp->slen > HTKV_KEY_MAX || sp->elen > HTKV_KEY_MAX) {
        return HTKV_ETOOBIG;
    }
    if (atomic_load(&c->failed)) {
        return HTKV_EFAILED;
    }
    if ((flags & HTKV_CLUSTER_READ_LOCAL) == 0) {
        struct creq r = { .kind = CREQ_READ };
        int rc = submit(c, &r);
        if (rc == HTKV_ENOTLEADER && leader != NULL) {
            *leader = r.leader;
        }
        if (rc != 0) {
            return rc;
        }
    }
    return read_span_local(c, sp, limit, fn, ctx, read_version);
}

int
htkv_cluster_scan(htkv_cluster *c, const void *start, size_t slen, const void *end, size_t elen,
                  uint64_t limit, unsigned flags, htkv_cluster_item_fn fn, void *ctx,
                  uint64_t *read_version, struct htkv_cluster_leader *leader)
{
    struct read_span sp = { .start = start, .slen = slen, .end = end, .elen = elen };
    return read_span(c, &sp, limit, flags, fn, ctx, read_version, leader);
}

int
htkv_cluster_prefix(htkv_cluster *c, const void *prefix, size_t plen, uint64_t limit,
                    unsigned flags, htkv_cluster_item_fn fn, void *ctx, uint64_t *read_version,
                    struct htkv_cluster_leader *leader)
{
    struct read_span sp = { .prefix = true, .start = prefix, .slen = plen };
    return read_span(c, &sp, limit, flags, fn, ctx, read_version, leader);
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
