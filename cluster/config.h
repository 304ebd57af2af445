/*
 * config.h - checks of an htkv_cluster_config (config.c), done before anything is created.
 *
 * Invariants: 1. a check reads the configuration only: no file, socket or memory is left
 * behind, whatever it returns.
 */
#ifndef HTKV_CLUSTER_CONFIG_H
#define HTKV_CLUSTER_CONFIG_H

#include <netinet/in.h>

#include <htkv/cluster.h>

/*
 * Parse "a.b.c.d:port" (an IPv4 literal: raft 0.15's TCP transport resolves no names) into
 * @p out (may be NULL). Returns 0 or -EINVAL.
 */
int htkv_caddr_parse(const char *address, struct sockaddr_in *out);

/* Check @p cfg as htkv_cluster_open() documents. Returns 0 or -EINVAL. */
int htkv_cconfig_check(const htkv_cluster_config *cfg);

/*
 * Whether @p address can be listened on now: binds a socket to it (SO_REUSEADDR, as libuv's
 * listener does) and closes it. Returns 0, -EADDRINUSE, -EADDRNOTAVAIL or another -errno.
 */
int htkv_caddr_probe(const char *address);

#endif /* HTKV_CLUSTER_CONFIG_H */
