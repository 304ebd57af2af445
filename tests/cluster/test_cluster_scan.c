/*
 * test_cluster_scan.c - ordered reads through the cluster: htkv_cluster_scan() and
 * htkv_cluster_prefix(), linearizable on the leader and local on any member.
 *
 * Goal: on the leader a prefix read and a range read return exactly the acknowledged writes in
 * key order (values and versions, deleted keys absent), paging with a limit visits every item
 * once, a follower answers HTKV_ENOTLEADER naming the leader unless the read is local, a local
 * read on a follower that has caught up equals the leader's, fn's value stops a read and is
 * returned, bad arguments are refused. And the hazard of views on a member: a member that
 * installs a snapshot from the leader while local ordered reads run on it in a loop must not
 * stop (the store refuses a restore while a view is open; the install waits for the reads).
 * Method: three members in one process on 127.0.0.1 (ephemeral ports), election 300 ms,
 * snapshots every 64 entries keeping 16 and a 1 s install timeout, so that a follower down
 * during 300 writes and a fourth member added later are sent snapshots.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <htkv/cluster.h>

#include "tests/support/testutil.h"
#include "tests/cluster/cluster_testutil.h"

#define MEMBERS 3 /* voters at the start; a fourth is added */
#define SLOTS 4
/* Keys p:00000..p:00749: the first 300 written at the start (every 7th deleted), the next 300
 * while a follower is down, the last 150 before a member is added. */
#define KEYS 750
#define KEYS_START 300
#define KEYS_REJOIN 600

struct st {
    char *root;
    char dirs[SLOTS][4200];
    char addrs[SLOTS][HTKV_CLUSTER_ADDRESS_MAX];
    struct htkv_cluster_peer peers[SLOTS];
    htkv_cluster *m[SLOTS];
    uint64_t version[KEYS]; /* acknowledged version of key i; 0 = absent */
    uint64_t last;          /* the highest version acknowledged */
};

/* What a read collected. */
struct got {
    unsigned n;
    unsigned key[KEYS];
    uint64_t version[KEYS];
    char last[32];
    size_t last_len;
    int stop_after; /* > 0: return 7 after that many items */
};

static void
open_member(struct st *t, unsigned i)
{
    htkv_cluster_config cfg;
    htkv_cluster_config_init(&cfg);
    cfg.id = i + 1;
    cfg.address = t->addrs[i];
    cfg.data_dir = t->dirs[i];
    cfg.voters = i < MEMBERS ? t->peers : NULL; /* the fourth waits to be added */
    cfg.voter_count = i < MEMBERS ? MEMBERS : 0;
    cfg.election_timeout_ms = 300;
    cfg.heartbeat_timeout_ms = 30;
    cfg.snapshot_threshold = 64;
    cfg.snapshot_bytes = 0; /* snapshots by entries alone: often, here */
    cfg.snapshot_trailing = 16;
    cfg.install_snapshot_timeout_ms = 1000;
    cfg.store.shard_count = 2;
    cfg.store.log_fn = tu_quiet_log;
    assert_int_equal(htkv_cluster_open(&cfg, &t->m[i]), 0);
}

static unsigned
wait_leader(struct st *t)
{
    for (int tries = 0; tries < 1000; tries++) {
        for (unsigned i = 0; i < MEMBERS; i++) {
            struct htkv_cluster_status s;
            if (t->m[i] != NULL && htkv_cluster_status(t->m[i], &s) == 0 &&
                s.role == HTKV_CLUSTER_LEADER && s.leader_ready) {
                return i;
            }
        }
        ct_sleep_ms(10);
    }
    fail_msg("no leader within 10 s");
    return MEMBERS;
}

static size_t
key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "p:%05u", i);
}

static int
collect(const void *key, size_t klen, const void *val, size_t vlen, uint64_t version, void *ctx)
{
    struct got *g = ctx;
    char k[32];
    assert_true(klen == 7 && vlen == klen && memcmp(key, val, klen) == 0);
    memcpy(k, key, klen);
    k[klen] = 0;
    assert_true(g->n < KEYS);
    g->key[g->n] = (unsigned)strtoul(k + 2, NULL, 10);
    g->version[g->n++] = version;
    memcpy(g->last, key, klen);
    g->last_len = klen;
    return g->stop_after > 0 && (int)g->n == g->stop_after ? 7 : 0;
}

/* @p g holds exactly the present keys of [lo, hi), in order, with their versions. */
static void
expect_model(const struct st *t, const struct got *g, unsigned lo, unsigned hi)
{
    unsigned at = 0;
    for (unsigned i = lo; i < hi; i++) {
        if (t->version[i] == 0) {
            continue;
        }
        tu_context("key %u, item %u of %u", i, at, g->n);
        assert_true(at < g->n);
        assert_int_equal(g->key[at], i);
        assert_int_equal(g->version[at], t->version[i]);
        at++;
    }
    assert_int_equal(at, g->n);
}

static void
write_keys(struct st *t, unsigned leader, unsigned from, unsigned to)
{
    for (unsigned i = from; i < to; i++) {
        char k[32];
        size_t kl = key_of(i, k);
        uint64_t v = 0;
        assert_int_equal(htkv_cluster_put(t->m[leader], k, kl, k, kl, &v, NULL), 0);
        t->version[i] = v;
        t->last = v;
    }
}

/* Local reads of the whole prefix on member @p i, in a loop, until told to stop. */
struct looper {
    htkv_cluster *c;
    atomic_int stop;
    unsigned reads;
    int bad_rc;
};

static void *
looper_main(void *arg)
{
    struct looper *l = arg;
    static struct got g;
    while (!atomic_load(&l->stop)) {
        g.n = 0;
        int rc =
            htkv_cluster_prefix(l->c, "p:", 2, 0, HTKV_CLUSTER_READ_LOCAL, collect, &g, NULL, NULL);
        if (rc != 0) {
            l->bad_rc = rc;
        }
        l->reads++;
    }
    return NULL;
}

static void
check_reads_on_leader(struct st *t, unsigned leader)
{
    static struct got g;
    uint64_t rv = 0;
    memset(&g, 0, sizeof(g));
    assert_int_equal(htkv_cluster_prefix(t->m[leader], "p:", 2, 0, 0, collect, &g, &rv, NULL), 0);
    expect_model(t, &g, 0, KEYS);
    assert_true(rv >= t->last);
    memset(&g, 0, sizeof(g));
    assert_int_equal(
        htkv_cluster_scan(t->m[leader], "p:00100", 7, "p:00200", 7, 0, 0, collect, &g, NULL, NULL),
        0);
    expect_model(t, &g, 100, 200);
    /* Paging, 17 items a read, from the last key plus 0x00. */
    static struct got all, page;
    memset(&all, 0, sizeof(all));
    char from[40] = "";
    size_t flen = 0;
    do {
        memset(&page, 0, sizeof(page));
        assert_int_equal(htkv_cluster_scan(t->m[leader], from, flen, "p:99999", 7, 17, 0, collect,
                                           &page, NULL, NULL),
                         0);
        for (unsigned k = 0; k < page.n; k++) {
            all.key[all.n] = page.key[k];
            all.version[all.n++] = page.version[k];
        }
        memcpy(from, page.last, page.last_len);
        from[page.last_len] = 0;
        flen = page.last_len + 1;
    } while (page.n == 17);
    expect_model(t, &all, 0, KEYS);
    memset(&g, 0, sizeof(g));
    g.stop_after = 5;
    assert_int_equal(htkv_cluster_prefix(t->m[leader], "p:", 2, 0, 0, collect, &g, NULL, NULL), 7);
    assert_int_equal(g.n, 5);
}

static void
check_bad_input(struct st *t, unsigned leader)
{
    htkv_cluster *l = t->m[leader];
    static struct got g;
    static char big[HTKV_KEY_MAX + 1];
    assert_int_equal(htkv_cluster_prefix(NULL, "p", 1, 0, 0, collect, &g, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_prefix(l, "p", 1, 0, 0, NULL, &g, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_prefix(l, NULL, 1, 0, 0, collect, &g, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_prefix(l, "p", 1, 0, 2, collect, &g, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_scan(l, "a", 1, NULL, 3, 0, 0, collect, &g, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_scan(l, big, sizeof(big), NULL, 0, 0, 0, collect, &g, NULL, NULL),
                     HTKV_ETOOBIG);
}

/* Local prefix reads on member @p f until it has applied the last acknowledged write (within
 * @p ms), then the read equals the model. */
static void
expect_local_caught_up(struct st *t, unsigned f, unsigned ms)
{
    static struct got g;
    for (unsigned waited = 0;; waited += 10) {
        uint64_t rv = 0;
        memset(&g, 0, sizeof(g));
        assert_int_equal(htkv_cluster_prefix(t->m[f], "p:", 2, 0, HTKV_CLUSTER_READ_LOCAL, collect,
                                             &g, &rv, NULL),
                         0);
        if (rv >= t->last) {
            expect_model(t, &g, 0, KEYS);
            return;
        }
        tu_context("member %u applied %llu of %llu after %u ms", f + 1, (unsigned long long)rv,
                   (unsigned long long)t->last, waited);
        assert_true(waited < ms);
        ct_sleep_ms(10);
    }
}

/* A follower: linearizable reads are refused with the leader named; local ones, once caught
 * up, equal the leader's. */
static void
check_follower(struct st *t, unsigned leader)
{
    unsigned f = (leader + 1) % MEMBERS;
    static struct got g;
    struct htkv_cluster_leader who;
    memset(&who, 0, sizeof(who));
    assert_int_equal(htkv_cluster_prefix(t->m[f], "p:", 2, 0, 0, collect, &g, NULL, &who),
                     HTKV_ENOTLEADER);
    assert_int_equal(who.id, leader + 1);
    expect_local_caught_up(t, f, 5000);
}

/* A member added to the cluster is sent a snapshot (the leader keeps 16 entries behind its
 * last one) while local ordered reads loop on it: it installs the snapshot (after the reads in
 * progress: the store refuses a restore while a view is open) and does not stop. */
static void
check_install_during_reads(struct st *t, unsigned leader)
{
    write_keys(t, leader, KEYS_REJOIN, KEYS);
    unsigned f = MEMBERS;
    open_member(t, f);
    static struct looper l;
    memset(&l, 0, sizeof(l));
    l.c = t->m[f];
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, looper_main, &l), 0);
    assert_int_equal(htkv_cluster_add(t->m[leader], f + 1, t->addrs[f], NULL), 0);
    struct htkv_cluster_status s;
    expect_local_caught_up(t, f, 10000);
    atomic_store(&l.stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(htkv_cluster_status(t->m[f], &s), 0);
    tu_context("%u local reads during the catch-up, last error %d", l.reads, l.bad_rc);
    assert_int_equal(l.bad_rc, 0);
    assert_true(l.reads > 0);
    assert_int_equal(s.role, HTKV_CLUSTER_FOLLOWER);
}

/* A follower closed while the leader writes past its log (and tries to send it a snapshot) is
 * caught up once it returns, within the install timeout (1 s here) and a few heartbeats: raft
 * 0.15 ignores its rejections until the lost install times out (30 s by default). */
static void
check_rejoin(struct st *t, unsigned leader)
{
    unsigned f = (leader + 2) % MEMBERS;
    assert_int_equal(htkv_cluster_close(t->m[f]), 0);
    t->m[f] = NULL;
    write_keys(t, leader, KEYS_START, KEYS_REJOIN);
    open_member(t, f);
    expect_local_caught_up(t, f, 8000);
}

static void
test_cluster_ordered_reads(void **state)
{
    (void)state;
    static struct st t;
    memset(&t, 0, sizeof(t));
    t.root = tu_tmpdir("cluster-scan");
    for (unsigned i = 0; i < SLOTS; i++) {
        snprintf(t.dirs[i], sizeof(t.dirs[i]), "%s/m%u", t.root, i + 1);
        snprintf(t.addrs[i], sizeof(t.addrs[i]), "127.0.0.1:%u", ct_free_port_checked());
        t.peers[i] = (struct htkv_cluster_peer){ .id = i + 1, .address = t.addrs[i] };
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        open_member(&t, i);
    }
    unsigned leader = wait_leader(&t);
    write_keys(&t, leader, 0, KEYS_START);
    for (unsigned i = 0; i < KEYS_START; i += 7) { /* deleted keys are absent from every read */
        char k[32];
        size_t kl = key_of(i, k);
        assert_int_equal(htkv_cluster_delete(t.m[leader], k, kl, &t.last, NULL), 0);
        t.version[i] = 0;
    }
    check_reads_on_leader(&t, leader);
    check_bad_input(&t, leader);
    check_follower(&t, leader);
    check_rejoin(&t, leader);
    check_install_during_reads(&t, leader);
    leader = wait_leader(&t);
    check_reads_on_leader(&t, leader);
    for (unsigned i = 0; i < SLOTS; i++) {
        assert_int_equal(htkv_cluster_close(t.m[i]), 0);
    }
    tu_rmrf(t.root);
    free(t.root);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_ordered_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
