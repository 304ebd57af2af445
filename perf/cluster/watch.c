/*
 * watch.c - htkv-cluster-bench heartbeat check: a heavy write load on the leader (many writers,
 * large values: group commit builds entries near entry_bytes_max) while every member is asked
 * for its status every 10 ms on a connection of its own. Reported per member: term at the start
 * and at the end, leader changes seen, the longest status answer (a status is answered by the
 * member's loop thread, which also runs raft's applies, snapshots and heartbeats: on the leader
 * it bounds how long one apply or snapshot held the loop) and, on followers, the longest time
 * between two advances of the commit index (a follower learns the commit index only from the
 * leader's appends and heartbeats: the longest gap between appends it saw, rounded to the poll).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perf/cluster/cbench.h"

struct member {
    struct cb_conn c;
    uint64_t term0, term, leader, leader_changes;
    uint64_t commit, commit_at, commit_gap_max, status_max, polls;
    uint64_t status_max_wall_ms; /* CLOCK_REALTIME when the longest status was asked */
    int leader_role;
};

struct bg {
    const struct cb_load *l;
    struct cb_result r;
    _Atomic int done;
};

static void *
bg_main(void *arg)
{
    struct bg *b = arg;
    (void)cb_load_run(b->l, &b->r);
    b->done = 1;
    return NULL;
}

static void
poll_member(struct member *m, const char *endpoint)
{
    char line[4096];
    if (m->c.fd < 0 && cb_conn_open(&m->c, CB_HTKV, endpoint) != 0) {
        return;
    }
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    uint64_t t0 = cb_now_ns();
    if (cb_htkv_status(&m->c, line, sizeof(line)) != 0) {
        cb_conn_close(&m->c);
        return;
    }
    uint64_t t1 = cb_now_ns(), commit = cb_field(line, "commit="), lead = cb_field(line, "leader=");
    if (t1 - t0 > m->status_max) {
        m->status_max = t1 - t0;
        m->status_max_wall_ms = (uint64_t)wall.tv_sec * 1000u + (uint64_t)wall.tv_nsec / 1000000u;
    }
    m->term = cb_field(line, "term=");
    if (m->polls++ == 0) {
        m->term0 = m->term;
        m->leader = lead;
        m->commit = commit;
        m->commit_at = t1;
    }
    m->leader_changes += lead != m->leader;
    m->leader = lead;
    m->leader_role = strstr(line, "role=leader") != NULL;
    if (commit != m->commit) {
        uint64_t gap = t1 - m->commit_at;
        m->commit_gap_max = gap > m->commit_gap_max ? gap : m->commit_gap_max;
        m->commit = commit;
        m->commit_at = t1;
    }
}

static void
report(const struct member *ms, int n, const struct bg *b)
{
    for (int i = 0; i < n; i++) {
        const struct member *m = &ms[i];
        printf("WATCH member=%d role=%s term_before=%" PRIu64 " term_after=%" PRIu64
               " leader_changes=%" PRIu64 " polls=%" PRIu64 " status_max_ms=%.1f"
               " status_max_at_ms=%" PRIu64 " commit_gap_max_ms=%.1f\n",
               i + 1, m->leader_role ? "leader" : "follower", m->term0, m->term, m->leader_changes,
               m->polls, (double)m->status_max / 1e6, m->status_max_wall_ms,
               (double)m->commit_gap_max / 1e6);
    }
    printf("WATCH load puts_s=%.0f MB_s=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f refused=%" PRIu64
           " broken=%" PRIu64 "\n",
           b->r.ops_s, b->r.ops_s * (double)b->l->vlen / 1e6, b->r.p50_us / 1e3, b->r.p99_us / 1e3,
           b->r.max_us / 1e3, b->r.refused, b->r.broken);
}

/* l: the load (its endpoint is set here to the leader). 0, or -1 without a leader. */
int
cb_watch(char *const *endpoints, int n, const struct cb_load *l)
{
    uint64_t term = 0;
    int leader = cb_find_leader(CB_HTKV, endpoints, n, &term);
    struct member *ms = calloc((size_t)n, sizeof(*ms));
    if (leader < 0 || ms == NULL) {
        fprintf(stderr, "watch: no leader\n");
        free(ms);
        return -1;
    }
    struct cb_load load = *l;
    load.endpoint = endpoints[leader];
    struct bg b = { .l = &load };
    for (int i = 0; i < n; i++) {
        ms[i].c.fd = -1;
        poll_member(&ms[i], endpoints[i]);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, bg_main, &b) != 0) {
        free(ms);
        return -1;
    }
    while (!b.done) {
        for (int i = 0; i < n; i++) {
            poll_member(&ms[i], endpoints[i]);
        }
        cb_sleep_ms(10);
    }
    pthread_join(th, NULL);
    report(ms, n, &b);
    for (int i = 0; i < n; i++) {
        cb_conn_close(&ms[i].c);
    }
    free(ms);
    return 0;
}
