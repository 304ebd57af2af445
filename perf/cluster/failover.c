/*
 * failover.c - htkv-cluster-bench failover: SIGKILL of the leader (htkv-node), then puts sent
 * round-robin to the survivors (a follower answers NOTLEADER at once) until one is acknowledged.
 * Failover time = from the kill to that first acknowledged write, which includes the election
 * timeout, the vote, the new leader noticing its role (10 ms poll) and its first barrier. The
 * caller restarts the killed member.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "perf/cluster/cbench.h"

/* One put on survivor c: 0 acknowledged, else not (reconnects on the next call). */
static int
try_put(struct cb_conn *c, const char *endpoint, const char *key, const char *val)
{
    if (c->fd < 0 && cb_conn_open(c, CB_HTKV, endpoint) != 0) {
        return -1;
    }
    int rc = cb_op(c, CB_PUT, key, val, 100);
    if (rc < 0) {
        cb_conn_close(c);
    }
    return rc;
}

/* Kills the leader, prints "FAILOVER ms=..." and the terms; 0, or -1 (no leader, no write). */
int
cb_failover(char *const *endpoints, int n, const int *pids)
{
    uint64_t term0 = 0, term1 = 0;
    int leader = cb_find_leader(CB_HTKV, endpoints, n, &term0);
    struct cb_conn *cs = calloc((size_t)n, sizeof(*cs));
    char key[CB_KEY_BYTES + 1], val[101];
    if (leader < 0 || cs == NULL) {
        fprintf(stderr, "failover: no leader\n");
        free(cs);
        return -1;
    }
    memset(val, 'f', 100);
    val[100] = '\0';
    for (int i = 0; i < n; i++) {
        cs[i].fd = -1;
        if (i != leader) {
            (void)cb_conn_open(&cs[i], CB_HTKV, endpoints[i]);
        }
    }
    uint64_t t0 = cb_now_ns(), t1 = 0;
    kill((pid_t)pids[leader], SIGKILL);
    int next = -1;
    for (uint64_t tries = 0; t1 == 0 && cb_now_ns() - t0 < 30000000000ull; tries++) {
        for (int i = 0; i < n && t1 == 0; i++) {
            snprintf(key, sizeof(key), "f%015" PRIu64, (t0 / 1000 + tries) % 1000000000000000u);
            if (i != leader && try_put(&cs[i], endpoints[i], key, val) == 0) {
                t1 = cb_now_ns();
                next = i;
            }
        }
        if (t1 == 0) {
            cb_sleep_ms(1);
        }
    }
    for (int i = 0; i < n; i++) {
        cb_conn_close(&cs[i]);
    }
    free(cs);
    if (t1 == 0) {
        fprintf(stderr, "failover: no write acknowledged within 30 s\n");
        return -1;
    }
    (void)cb_find_leader(CB_HTKV, endpoints, n, &term1);
    printf("FAILOVER ms=%.1f killed=%d new=%d term_before=%" PRIu64 " term_after=%" PRIu64 "\n",
           (double)(t1 - t0) / 1e6, leader + 1, next + 1, term0, term1);
    return 0;
}
