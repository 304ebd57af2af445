/*
 * transport.c - raft_uv_tcp with TCP_NODELAY: a thin wrapper around raft 0.15's TCP transport
 * that turns Nagle's algorithm off on every connection it opens or accepts.
 *
 * Why. raft 0.15 never sets TCP_NODELAY. A member that writes a second small message (an
 * append result, a heartbeat) while the first is not yet acknowledged has it held by Nagle
 * until the peer's delayed ACK, 40 ms on Linux. perf/cluster (htkv-cluster-bench) showed it: with
 * 8 or 16 writers the p99 of a put was ~43 ms against a p50 of 1-2 ms; with the option on (set
 * through an LD_PRELOAD shim for the diagnosis) the p99 fell to 7-9 ms.
 *
 * How. htkv_cnode_transport_nodelay() keeps raft_uv_tcp's listen and connect and installs
 * wrappers: an accepted stream and a connected stream get uv_tcp_nodelay() before raft sees
 * them. A connect request gets a wrapper of its own (freed when raft_uv_tcp answers it: always
 * once, also when cancelled at close), which calls raft's callback with raft's own request.
 * Nothing else changes: a failure to set the option is ignored (the connection still works).
 */
#include <stddef.h>
#include <stdlib.h>

#include "cluster/node.h"

struct nodelay_connect {
    struct raft_uv_connect inner;  /* handed to raft_uv_tcp; inner.data = this */
    struct raft_uv_connect *outer; /* raft's request */
    raft_uv_connect_cb cb;         /* raft's callback */
};

static struct htkv_cluster *
of_transport(struct raft_uv_transport *t)
{
    return (struct htkv_cluster *)((char *)t - offsetof(struct htkv_cluster, transport));
}

static void
set_nodelay(struct uv_stream_s *stream)
{
    if (stream != NULL && stream->type == UV_TCP) {
        (void)uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    }
}

static void
on_accepted(struct raft_uv_transport *t, raft_id id, const char *address,
            struct uv_stream_s *stream)
{
    set_nodelay(stream);
    of_transport(t)->tcp_accept_cb(t, id, address, stream);
}

static int
nodelay_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct htkv_cluster *c = of_transport(t);
    c->tcp_accept_cb = cb;
    return c->tcp_listen(t, on_accepted);
}

static void
on_connected(struct raft_uv_connect *inner, struct uv_stream_s *stream, int status)
{
    struct nodelay_connect *w = inner->data;
    struct raft_uv_connect *outer = w->outer;
    raft_uv_connect_cb cb = w->cb;
    free(w);
    if (status == 0) {
        set_nodelay(stream);
    }
    cb(outer, stream, status);
}

static int
nodelay_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                const char *address, raft_uv_connect_cb cb)
{
    struct nodelay_connect *w = malloc(sizeof(*w));
    if (w == NULL) {
        return RAFT_NOMEM;
    }
    w->inner.data = w;
    w->outer = req;
    w->cb = cb;
    int rv = of_transport(t)->tcp_connect(t, &w->inner, id, address, on_connected);
    if (rv != 0) {
        free(w); /* raft_uv_tcp took nothing */
    }
    return rv;
}

void
htkv_cnode_transport_nodelay(struct htkv_cluster *c)
{
    c->tcp_listen = c->transport.listen;
    c->tcp_connect = c->transport.connect;
    c->transport.listen = nodelay_listen;
    c->transport.connect = nodelay_connect;
}
