/*
 * test_cluster_members.c - membership changes and leadership transfer through the public API:
 * htkv_cluster_add(), htkv_cluster_remove(), htkv_cluster_transfer(), and the members' progress
 * in htkv_cluster_status().
 *
 * Goal: under a running write load, a fourth member opened without voters is added (as
 * non-voter, promoted once caught up) and ends with every write; leadership moves to a chosen
 * voter; a member is removed and the others go on; bad requests (unknown member, an id or an
 * address already in the cluster, a malformed address, a follower asked, a transfer to itself)
 * are refused with their documented codes and change nothing. Every acknowledged write is on
 * every remaining member with its version at the end.
 * Method: four members in one process on 127.0.0.1 (ephemeral ports), election 300 ms; one
 * writer thread puts unique keys on whichever member leads (following HTKV_ENOTLEADER).
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

#define MEMBERS 4 /* three voters at the start, the fourth added */
#define PUTS_MAX 100000

struct mt {
    char *root;
    char dirs[MEMBERS][4200];
    char addrs[MEMBERS][HTKV_CLUSTER_ADDRESS_MAX];
    struct htkv_cluster_peer peers[MEMBERS];
    htkv_cluster *m[MEMBERS];
    atomic_int stop;
    pthread_mutex_t mu; /* guards m[] against the writer while a member is closed */
    uint64_t versions[PUTS_MAX];
    unsigned puts;
};

/* Open member i: the first three bootstrap the cluster, the fourth waits to be added. */
static void
open_member(struct mt *t, unsigned i)
{
    htkv_cluster_config cfg;
    htkv_cluster_config_init(&cfg);
    cfg.id = i + 1;
    cfg.address = t->addrs[i];
    cfg.data_dir = t->dirs[i];
    cfg.voters = i < 3 ? t->peers : NULL;
    cfg.voter_count = i < 3 ? 3 : 0;
    cfg.election_timeout_ms = 300;
    cfg.heartbeat_timeout_ms = 30;
    cfg.snapshot_threshold = 64;
    cfg.snapshot_bytes = 0; /* snapshots by entries alone: often, here */
    cfg.snapshot_trailing = 16;
    cfg.store.worker_threads = 0;
    cfg.store.shard_count = 2;
    cfg.store.log_fn = getenv("LB_LOG") ? NULL : tu_quiet_log;
    assert_int_equal(htkv_cluster_open(&cfg, &t->m[i]), 0);
}

/* The index of the member that leads with its barrier applied (10 s at most). */
static unsigned
wait_leader(struct mt *t)
{
    for (int tries = 0; tries < 1000; tries++) {
        for (unsigned i = 0; i < MEMBERS; i++) {
            struct htkv_cluster_status st;
            if (t->m[i] != NULL && htkv_cluster_status(t->m[i], &st) == 0 &&
                st.role == HTKV_CLUSTER_LEADER && st.leader_ready) {
                return i;
            }
        }
        ct_sleep_ms(10);
    }
    fail_msg("no leader within 10 s");
    return MEMBERS;
}

/* Put key "k<n>" on whichever member leads until the test stops it. */
static void *
writer_main(void *arg)
{
    struct mt *t = arg;
    unsigned target = 0;
    while (!atomic_load(&t->stop) && t->puts < PUTS_MAX) {
        char key[32];
        uint64_t version = 0;
        snprintf(key, sizeof(key), "k%u", t->puts);
        pthread_mutex_lock(&t->mu);
        int rc = t->m[target] == NULL ? HTKV_ENOTLEADER
                                      : htkv_cluster_put(t->m[target], key, strlen(key), key,
                                                         strlen(key), &version, NULL);
        pthread_mutex_unlock(&t->mu);
        if (rc == 0) {
            t->versions[t->puts++] = version;
        } else {
            t->versions[t->puts++] = 0; /* not acknowledged: outcome unknown or not proposed */
            target = (target + 1) % MEMBERS;
            ct_sleep_ms(2);
        }
    }
    return NULL;
}

/* Bad requests: refused with their codes; the configuration stays as it was. */
static void
check_bad_requests(struct mt *t, unsigned leader)
{
    htkv_cluster *l = t->m[leader];
    htkv_cluster *f = t->m[(leader + 1) % 3];
    struct htkv_cluster_leader who;
    assert_int_equal(htkv_cluster_add(l, 2, t->addrs[3], NULL), -EEXIST);
    assert_int_equal(htkv_cluster_add(l, 9, t->addrs[0], NULL), -EADDRINUSE);
    assert_int_equal(htkv_cluster_add(l, 9, "localhost:1", NULL), -EINVAL);
    assert_int_equal(htkv_cluster_add(l, 0, t->addrs[3], NULL), -EINVAL);
    assert_int_equal(htkv_cluster_add(NULL, 4, t->addrs[3], NULL), -EINVAL);
    assert_int_equal(htkv_cluster_add(f, 4, t->addrs[3], &who), HTKV_ENOTLEADER);
    assert_int_equal(who.id, leader + 1);
    assert_int_equal(htkv_cluster_remove(l, 42, NULL), HTKV_ENOTFOUND);
    assert_int_equal(htkv_cluster_remove(l, 0, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_remove(f, 1, NULL), HTKV_ENOTLEADER);
    assert_int_equal(htkv_cluster_transfer(l, 42, NULL), HTKV_ENOTFOUND);
    assert_int_equal(htkv_cluster_transfer(l, leader + 1, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_transfer(f, 0, NULL), HTKV_ENOTLEADER);
    struct htkv_cluster_status st;
    assert_int_equal(htkv_cluster_status(l, &st), 0);
    assert_int_equal(st.member_count, 3);
    for (size_t i = 0; i < st.member_count; i++) {
        assert_true(st.members[i].voter);
        assert_true(st.members[i].match_index > 0); /* progress, as the leader knows it */
    }
}

/* Member i holds every acknowledged write with its version (waits 10 s for it to apply). */
static void
check_member(struct mt *t, unsigned i, uint64_t latest)
{
    uint64_t applied = 0;
    for (int tries = 0; tries < 1000 && applied < latest; tries++) {
        char buf[8];
        size_t len;
        int rc = htkv_cluster_get_local(t->m[i], "k0", 2, buf, sizeof(buf), &len, NULL, &applied);
        assert_true(rc == 0 || rc == HTKV_ENOTFOUND);
        if (applied < latest) {
            ct_sleep_ms(10);
        }
    }
    assert_true(applied >= latest);
    for (unsigned n = 0; n < t->puts; n++) {
        char key[32], buf[32];
        size_t len = 0;
        uint64_t version = 0;
        snprintf(key, sizeof(key), "k%u", n);
        int rc = htkv_cluster_get_local(t->m[i], key, strlen(key), buf, sizeof(buf), &len, &version,
                                        NULL);
        if (t->versions[n] != 0) {
            assert_int_equal(rc, 0);
            assert_int_equal(version, t->versions[n]);
            assert_memory_equal(buf, key, len);
        }
    }
}

/* Wait until @p n members are known to the leader and all are voters (10 s at most). */
static struct htkv_cluster_status
wait_members(struct mt *t, unsigned leader, size_t n)
{
    struct htkv_cluster_status st;
    for (int tries = 0; tries < 1000; tries++) {
        assert_int_equal(htkv_cluster_status(t->m[leader], &st), 0);
        size_t voters = 0;
        for (size_t i = 0; i < st.member_count; i++) {
            voters += st.members[i].voter ? 1 : 0;
        }
        if (st.member_count == n && voters == n) {
            break;
        }
        ct_sleep_ms(10);
    }
    assert_int_equal(st.member_count, n);
    return st;
}

static void
test_cluster_members_add_transfer_remove(void **state)
{
    (void)state;
    struct mt *t = calloc(1, sizeof(*t));
    pthread_t writer;
    assert_non_null(t);
    pthread_mutex_init(&t->mu, NULL);
    t->root = tu_tmpdir("cluster-members");
    for (unsigned i = 0; i < MEMBERS; i++) {
        snprintf(t->dirs[i], sizeof(t->dirs[i]), "%s/m%u", t->root, i + 1);
        snprintf(t->addrs[i], sizeof(t->addrs[i]), "127.0.0.1:%u", ct_free_port_checked());
        t->peers[i] = (struct htkv_cluster_peer){ .id = i + 1, .address = t->addrs[i] };
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        open_member(t, i);
    }
    unsigned leader = wait_leader(t);
    assert_int_equal(pthread_create(&writer, NULL, writer_main, t), 0);
    ct_sleep_ms(200);
    check_bad_requests(t, leader);

    /* Add member 4 under load: a non-voter first, a voter once caught up. */
    assert_int_equal(htkv_cluster_add(t->m[leader], 4, t->addrs[3], NULL), 0);
    struct htkv_cluster_status st = wait_members(t, leader, 4);
    assert_true(st.members[3].id == 4 && st.members[3].voter);
    assert_int_equal(htkv_cluster_add(t->m[leader], 4, t->addrs[3], NULL), -EEXIST);
    ct_sleep_ms(200);

    /* Hand leadership to member 4, the newest voter. */
    struct htkv_cluster_leader who;
    assert_int_equal(htkv_cluster_transfer(t->m[leader], 4, &who), 0);
    assert_int_equal(who.id, 4);
    unsigned old = leader;
    leader = wait_leader(t);
    assert_int_equal(leader, 3);
    ct_sleep_ms(200);

    /* Remove the old leader; the three others go on. */
    assert_int_equal(htkv_cluster_remove(t->m[leader], old + 1, NULL), 0);
    wait_members(t, leader, 3);
    pthread_mutex_lock(&t->mu);
    assert_int_equal(htkv_cluster_close(t->m[old]), 0);
    t->m[old] = NULL;
    pthread_mutex_unlock(&t->mu);
    ct_sleep_ms(300);
    atomic_store(&t->stop, 1);
    pthread_join(writer, NULL);

    uint64_t latest = 0;
    unsigned acked = 0;
    for (unsigned n = 0; n < t->puts; n++) {
        latest = t->versions[n] > latest ? t->versions[n] : latest;
        acked += t->versions[n] != 0;
    }
    assert_true(acked > 10);
    for (unsigned i = 0; i < MEMBERS; i++) {
        if (t->m[i] != NULL) {
            check_member(t, i, latest);
        }
    }
    fprintf(stderr, "[cluster_members] %u of %u writes acknowledged, all on every member\n", acked,
            t->puts);
    for (unsigned i = 0; i < MEMBERS; i++) {
        assert_int_equal(htkv_cluster_close(t->m[i]), 0);
    }
    pthread_mutex_destroy(&t->mu);
    tu_rmrf(t->root);
    free(t->root);
    free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_members_add_transfer_remove),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
