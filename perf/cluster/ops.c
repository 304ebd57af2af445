/*
 * ops.c - the operations htkv-cluster-bench runs on either system, and how it finds the leader.
 *   htkv (htkv-node's socket): "put KEY VALUE" -> "OK version"; "get KEY" (linearizable: one raft
 *     barrier per group of reads) and "lget KEY" (the member's store) -> "VALUE version value";
 *     "status" -> "STATUS id= role= term= ...".
 *   etcd (its gRPC gateway, JSON over HTTP/1.1): POST /v3/kv/put {"key","value"} (base64);
 *     POST /v3/kv/range {"key"} (linearizable, etcd's default: a ReadIndex round) or with
 *     "serializable":true (the member's own store); POST /v3/maintenance/status {} for the
 *     member id, the leader's id and the raft term.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf/cluster/cbench.h"

static size_t
b64(const char *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        v |= i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0;
        v |= i + 2 < n ? (uint32_t)p[i + 2] : 0;
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int
htkv_op(struct cb_conn *c, int op, const char *key, const char *val, size_t vlen)
{
    char req[CB_BUF_BYTES];
    int n;
    if (op == CB_PUT || op == CB_FILL) {
        n = snprintf(req, sizeof(req), "put %.*s %.*s\n", CB_KEY_BYTES, key, (int)vlen, val);
    } else {
        n = snprintf(req, sizeof(req), "%s %.*s\n", op == CB_GET ? "get" : "lget", CB_KEY_BYTES,
                     key);
    }
    if (n < 0 || (size_t)n >= sizeof(req) || cb_conn_send(c, req, (size_t)n) != 0) {
        return -1;
    }
    if (cb_conn_line(c, req, sizeof(req)) < 0) {
        return -1;
    }
    if (op == CB_PUT || op == CB_FILL) {
        return strncmp(req, "OK ", 3) == 0 ? 0 : 1;
    }
    return strncmp(req, "VALUE ", 6) == 0 ? 0 : 1;
}

static int
etcd_op(struct cb_conn *c, int op, const char *key, const char *val, size_t vlen)
{
    char k64[64], body[CB_BUF_BYTES], resp[4096];
    b64(key, CB_KEY_BYTES, k64);
    int n;
    const char *path = "/v3/kv/range";
    if (op == CB_PUT || op == CB_FILL) {
        char *v64 = malloc(vlen * 4 / 3 + 8);
        if (v64 == NULL) {
            return -1;
        }
        b64(val, vlen, v64);
        n = snprintf(body, sizeof(body), "{\"key\":\"%s\",\"value\":\"%s\"}", k64, v64);
        free(v64);
        path = "/v3/kv/put";
    } else {
        n = snprintf(body, sizeof(body), "{\"key\":\"%s\"%s}", k64,
                     op == CB_LGET ? ",\"serializable\":true" : "");
    }
    if (n < 0 || (size_t)n >= sizeof(body)) {
        return -1;
    }
    int status = cb_conn_http(c, path, body, (size_t)n, resp, sizeof(resp));
    if (status < 0) {
        return -1;
    }
    if (status != 200) {
        return 1;
    }
    return op == CB_PUT || op == CB_FILL || strstr(resp, "\"kvs\"") != NULL ? 0 : 1;
}

int
cb_op(struct cb_conn *c, int op, const char *key, const char *val, size_t vlen)
{
    return c->system == CB_HTKV ? htkv_op(c, op, key, val, vlen) : etcd_op(c, op, key, val, vlen);
}

/* The number after `name` in s ("term=" or "\"leader\":\""), 0 when absent. */
uint64_t
cb_field(const char *s, const char *name)
{
    const char *p = strstr(s, name);
    return p == NULL ? 0 : strtoull(p + strlen(name), NULL, 10);
}

int
cb_htkv_status(struct cb_conn *c, char *line, size_t cap)
{
    if (cb_conn_send(c, "status\n", 7) != 0 || cb_conn_line(c, line, cap) < 0) {
        return -1;
    }
    return strncmp(line, "STATUS ", 7) == 0 ? 0 : 1;
}

/* Is this member the leader? 1 yes, 0 no, -1 no answer; *term gets its raft term. */
static int
is_leader(int system, const char *endpoint, uint64_t *term)
{
    struct cb_conn *c = malloc(sizeof(*c));
    char resp[4096];
    int rc = -1;
    if (c == NULL || cb_conn_open(c, system, endpoint) != 0) {
        free(c);
        return -1;
    }
    if (system == CB_HTKV) {
        if (cb_htkv_status(c, resp, sizeof(resp)) == 0) {
            *term = cb_field(resp, "term=");
            rc = strstr(resp, "role=leader") != NULL && strstr(resp, "ready=1") != NULL;
        }
    } else if (cb_conn_http(c, "/v3/maintenance/status", "{}", 2, resp, sizeof(resp)) == 200) {
        *term = cb_field(resp, "\"raft_term\":\"");
        uint64_t me = cb_field(resp, "\"member_id\":\"");
        rc = me != 0 && me == cb_field(resp, "\"leader\":\"");
    }
    cb_conn_close(c);
    free(c);
    return rc;
}

/* The index of the leader among endpoints, or -1 when none says so. */
int
cb_find_leader(int system, char *const *endpoints, int n, uint64_t *term)
{
    for (int i = 0; i < n; i++) {
        if (is_leader(system, endpoints[i], term) == 1) {
            return i;
        }
    }
    return -1;
}
