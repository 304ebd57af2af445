/*
 * cbench.h - htkv-cluster-bench's shared declarations: client connections to a cluster member
 * (htkv-node's line protocol on a unix socket, or etcd's JSON gateway over HTTP/1.1 keep-alive),
 * the operations both systems share, and the load driver.
 */
#ifndef HTKV_PERF_CLUSTER_CBENCH_H
#define HTKV_PERF_CLUSTER_CBENCH_H
#include <stddef.h>
#include <stdint.h>

#define CB_KEY_BYTES 16
#define CB_BUF_BYTES (1u << 17)
#define CB_MEMBERS 3

enum cb_system { CB_HTKV = 0, CB_ETCD = 1 };
enum cb_op { CB_PUT = 0, CB_GET = 1, CB_LGET = 2, CB_FILL = 3 };

/* One client connection with its read buffer. */
struct cb_conn {
    int fd;
    int system;      /* enum cb_system */
    char host[64];   /* etcd: "HOST:PORT" for the Host header */
    size_t off, len; /* unread bytes in buf */
    char buf[CB_BUF_BYTES];
};

/* conn.c */
uint64_t cb_now_ns(void);
void cb_sleep_ms(unsigned ms);
int cb_conn_open(struct cb_conn *c, int system, const char *endpoint);
void cb_conn_close(struct cb_conn *c);
int cb_conn_send(struct cb_conn *c, const char *p, size_t n);
int cb_conn_line(struct cb_conn *c, char *out, size_t cap);
int cb_conn_http(struct cb_conn *c, const char *path, const char *body, size_t blen, char *out,
                 size_t cap);

/* ops.c: 0 done, 1 refused (not the leader, or an error answer), -1 the connection broke. */
int cb_op(struct cb_conn *c, int op, const char *key, const char *val, size_t vlen);
int cb_find_leader(int system, char *const *endpoints, int n, uint64_t *term);
int cb_htkv_status(struct cb_conn *c, char *line, size_t cap);
uint64_t cb_field(const char *s, const char *name);

/* load.c */
struct cb_load {
    int system;
    const char *endpoint; /* the leader */
    int threads;
    int op;        /* enum cb_op */
    size_t vlen;   /* value bytes of puts */
    unsigned keys; /* gets: keys p000...0 .. keys-1 preloaded; fill: how many to write;
                      puts: keys per thread, cycled (0: every put a new key) */
    char tag;      /* first byte of put keys: each run writes new keys */
    double warm_s; /* not measured */
    double secs;   /* measured */
};
struct cb_result {
    double ops_s;
    double p50_us, p99_us, max_us;
    uint64_t ops, refused, broken;
};
int cb_load_run(const struct cb_load *l, struct cb_result *r);

/* failover.c, watch.c */
int cb_failover(char *const *endpoints, int n, const int *pids);
int cb_watch(char *const *endpoints, int n, const struct cb_load *l);

#endif
