/*
 * config.c - defaults and checks of an htkv_cluster_config (config.h).
 *
 * Design. Everything htkv_cluster_open() can refuse on sight is refused here, before a
 * directory, a store or a socket exists, so that bad input changes nothing (invariant 1 of
 * config.h). The one check that needs the outside world, whether the listen address is free,
 * binds and closes a probe socket.
 */
#include "cluster/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/util.h"

void
htkv_cluster_config_init(htkv_cluster_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    memset(cfg, 0, sizeof(*cfg));
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_timeout_ms = 100;
    cfg->snapshot_threshold = 1024;
    cfg->snapshot_trailing = 128;
    cfg->snapshot_bytes = 64u << 20;
    cfg->install_snapshot_timeout_ms = 10000;
    cfg->entry_bytes_max = 1u << 20;
    htkv_config_init(&cfg->store);
}

int
htkv_caddr_parse(const char *address, struct sockaddr_in *out)
{
    if (address == NULL) {
        return -EINVAL;
    }
    size_t len = strnlen(address, HTKV_CLUSTER_ADDRESS_MAX);
    const char *colon = strrchr(address, ':');
    if (len >= HTKV_CLUSTER_ADDRESS_MAX || colon == NULL || colon == address) {
        return -EINVAL;
    }
    char host[HTKV_CLUSTER_ADDRESS_MAX];
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    const char *port = colon + 1;
    size_t digits = strspn(port, "0123456789");
    if (digits == 0 || digits > 5 || port[digits] != '\0') {
        return -EINVAL;
    }
    long p = strtol(port, NULL, 10);
    struct in_addr ip;
    if (p < 1 || p > 65535 || inet_pton(AF_INET, host, &ip) != 1) {
        return -EINVAL;
    }
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
        out->sin_family = AF_INET;
        out->sin_port = htons((uint16_t)p);
        out->sin_addr = ip;
    }
    return 0;
}

static int
voters_check(const htkv_cluster_config *cfg)
{
    if (cfg->voter_count > HTKV_CLUSTER_MEMBERS_MAX || (cfg->voters == NULL && cfg->voter_count)) {
        return -EINVAL;
    }
    bool self = cfg->voter_count == 0;
    for (size_t i = 0; i < cfg->voter_count; i++) {
        const struct htkv_cluster_peer *v = &cfg->voters[i];
        if (v->id == 0 || htkv_caddr_parse(v->address, NULL) != 0) {
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (cfg->voters[j].id == v->id || strcmp(cfg->voters[j].address, v->address) == 0) {
                return -EINVAL;
            }
        }
        if (v->id == cfg->id) {
            self = strcmp(v->address, cfg->address) == 0;
        }
    }
    return self ? 0 : -EINVAL;
}

int
htkv_cconfig_check(const htkv_cluster_config *cfg)
{
    if (cfg == NULL || cfg->id == 0 || cfg->data_dir == NULL || cfg->data_dir[0] == '\0') {
        return -EINVAL;
    }
    if (htkv_caddr_parse(cfg->address, NULL) != 0) {
        return -EINVAL;
    }
    if (cfg->heartbeat_timeout_ms == 0 || cfg->election_timeout_ms <= cfg->heartbeat_timeout_ms ||
        cfg->install_snapshot_timeout_ms <= cfg->heartbeat_timeout_ms) {
        return -EINVAL;
    }
    if (cfg->snapshot_threshold == 0 || cfg->entry_bytes_max < 4096) {
        return -EINVAL;
    }
    return voters_check(cfg);
}

int
htkv_caddr_probe(const char *address)
{
    struct sockaddr_in sa;
    int rc = htkv_caddr_parse(address, &sa);
    if (rc != 0) {
        return rc;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int on = 1;
    rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (rc == 0) {
        rc = bind(fd, (const struct sockaddr *)&sa, sizeof(sa));
    }
    if (rc == 0) {
        rc = listen(fd, 1);
    }
    rc = rc == 0 ? 0 : -errno;
    close(fd);
    return rc;
}
