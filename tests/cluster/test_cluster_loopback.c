/*
 * test_cluster_loopback.c - three htkv_cluster members in one process on 127.0.0.1, through the
 * public API only (raft_uv over TCP, one loop thread per member).
 *
 * Goal: the API works end to end: a leader is elected, writes from several threads on the
 * leader return increasing versions once applied, a follower refuses writes and linearizable
 * reads with HTKV_ENOTLEADER naming the leader, linearizable and local reads return what was
 * written, bad arguments change nothing, and a restart of every member keeps every write, also
 * for a member whose store must be rebuilt from raft after a (simulated) power loss, also when
 * the power loss damaged it and when its trust record is missing or damaged.
 * Method: ephemeral ports chosen by binding port 0; short timeouts (election 300 ms) so that
 * the test stays within seconds; every wait is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <htkv/cluster.h>

#include "tests/support/testutil.h"
#include "tests/cluster/cluster_testutil.h"

#define MEMBERS 3
#define WRITERS 4
#define PUTS_PER_WRITER 50

struct lb {
    char *root;
    char dirs[MEMBERS][4200];
    char addrs[MEMBERS][HTKV_CLUSTER_ADDRESS_MAX];
    struct htkv_cluster_peer peers[MEMBERS];
    htkv_cluster *m[MEMBERS];
};

static void
member_config(struct lb *t, unsigned i, htkv_cluster_config *cfg)
{
    htkv_cluster_config_init(cfg);
    cfg->id = i + 1;
    cfg->address = t->addrs[i];
    cfg->data_dir = t->dirs[i];
    cfg->voters = t->peers;
    cfg->voter_count = MEMBERS;
    cfg->election_timeout_ms = 300;
    cfg->heartbeat_timeout_ms = 30;
    cfg->snapshot_threshold = 64;
    cfg->snapshot_bytes = 0; /* snapshots by entries alone: often, here */
    cfg->snapshot_trailing = 16;
    cfg->store.worker_threads = 0;
    cfg->store.shard_count = 4;
    cfg->store.log_fn = getenv("LB_LOG") ? NULL : tu_quiet_log;
}

static void
open_all(struct lb *t)
{
    for (unsigned i = 0; i < MEMBERS; i++) {
        htkv_cluster_config cfg;
        member_config(t, i, &cfg);
        assert_int_equal(htkv_cluster_open(&cfg, &t->m[i]), 0);
    }
}

static void
close_all(struct lb *t)
{
    for (unsigned i = 0; i < MEMBERS; i++) {
        assert_int_equal(htkv_cluster_close(t->m[i]), 0);
        t->m[i] = NULL;
    }
}

/* Wait (at most 10 s) for a leader whose first barrier is applied; returns its index. */
static unsigned
wait_leader(struct lb *t)
{
    for (int tries = 0; tries < 1000; tries++) {
        for (unsigned i = 0; i < MEMBERS; i++) {
            struct htkv_cluster_status st;
            assert_int_equal(htkv_cluster_status(t->m[i], &st), 0);
            if (st.role == HTKV_CLUSTER_LEADER && st.leader_ready) {
                assert_int_equal(st.member_count, MEMBERS);
                return i;
            }
        }
        ct_sleep_ms(10);
    }
    fail_msg("no leader within 10 s");
    return MEMBERS;
}

struct writer {
    htkv_cluster *leader;
    unsigned id;
    uint64_t versions[PUTS_PER_WRITER];
};

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    for (unsigned i = 0; i < PUTS_PER_WRITER; i++) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "w%u-%03u", w->id, i);
        snprintf(val, sizeof(val), "value %u %u", w->id, i);
        int rc =
            htkv_cluster_put(w->leader, key, strlen(key), val, strlen(val), &w->versions[i], NULL);
        if (rc != 0) {
            w->versions[i] = 0;
        }
    }
    return NULL;
}

/* The version each put was acknowledged with, by writer and put (0: none yet). */
typedef uint64_t acked_t[WRITERS][PUTS_PER_WRITER];

/* Every writer's puts were acknowledged with versions that grow along each writer's calls;
 * they go to @p acked (may be NULL). */
static void
write_from_threads(htkv_cluster *leader, uint64_t *max_version, acked_t *acked)
{
    pthread_t th[WRITERS];
    struct writer w[WRITERS];
    for (unsigned i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ .leader = leader, .id = i };
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    *max_version = 0;
    for (unsigned i = 0; i < WRITERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        for (unsigned j = 0; j < PUTS_PER_WRITER; j++) {
            assert_true(w[i].versions[j] > 0);
            if (j > 0) {
                assert_true(w[i].versions[j] > w[i].versions[j - 1]);
            }
            *max_version = w[i].versions[j] > *max_version ? w[i].versions[j] : *max_version;
            if (acked != NULL) {
                (*acked)[i][j] = w[i].versions[j];
            }
        }
    }
}

/* Every member's store holds every writer's puts (local reads, once it applied up to @p v),
 * each with the version it was acknowledged with when @p acked is given. */
static void
expect_acked_everywhere(struct lb *t, uint64_t v, const acked_t *acked)
{
    for (unsigned m = 0; m < MEMBERS; m++) {
        uint64_t applied = 0;
        for (int tries = 0; tries < 500 && applied < v; tries++) {
            size_t vlen = 0;
            int rc = htkv_cluster_get_local(t->m[m], "w0-000", 6, NULL, 0, &vlen, NULL, &applied);
            assert_true(rc == 0 || rc == HTKV_ETOOSMALL || rc == HTKV_ENOTFOUND);
            if (applied < v) {
                ct_sleep_ms(10);
            }
        }
        assert_true(applied >= v);
        for (unsigned w = 0; w < WRITERS; w++) {
            for (unsigned i = 0; i < PUTS_PER_WRITER; i++) {
                char key[32], want[32], got[32];
                snprintf(key, sizeof(key), "w%u-%03u", w, i);
                snprintf(want, sizeof(want), "value %u %u", w, i);
                size_t glen = 0;
                uint64_t ver = 0;
                assert_int_equal(htkv_cluster_get_local(t->m[m], key, strlen(key), got, sizeof(got),
                                                        &glen, &ver, NULL),
                                 0);
                assert_int_equal(glen, strlen(want));
                assert_memory_equal(got, want, glen);
                if (acked != NULL) {
                    assert_int_equal(ver, (*acked)[w][i]);
                }
            }
        }
    }
}

static void
expect_everywhere(struct lb *t, uint64_t v)
{
    expect_acked_everywhere(t, v, NULL);
}

/* A follower refuses writes and linearizable reads, naming the leader. */
static void
check_follower(struct lb *t, unsigned leader, unsigned follower)
{
    struct htkv_cluster_leader who;
    uint64_t v = 1;
    memset(&who, 0, sizeof(who));
    assert_int_equal(htkv_cluster_put(t->m[follower], "f", 1, "x", 1, &v, &who), HTKV_ENOTLEADER);
    assert_int_equal(v, 0);
    assert_int_equal(who.id, leader + 1);
    assert_string_equal(who.address, t->addrs[leader]);
    memset(&who, 0, sizeof(who));
    char buf[8];
    size_t vlen = 0;
    assert_int_equal(
        htkv_cluster_get(t->m[follower], "w0-000", 6, buf, sizeof(buf), &vlen, NULL, &who),
        HTKV_ENOTLEADER);
    assert_int_equal(who.id, leader + 1);
    assert_int_equal(
        htkv_cluster_get_local(t->m[follower], "f", 1, buf, sizeof(buf), &vlen, NULL, NULL),
        HTKV_ENOTFOUND);
}

/* Linearizable reads, deletes, conditional batches and bad arguments on the leader. */
static void
check_leader_calls(htkv_cluster *l)
{
    char buf[64];
    size_t vlen = 0;
    uint64_t ver = 0, v2 = 0;
    assert_int_equal(htkv_cluster_put(l, "reg", 3, "one", 3, &ver, NULL), 0);
    assert_int_equal(htkv_cluster_get(l, "reg", 3, buf, sizeof(buf), &vlen, &v2, NULL), 0);
    assert_int_equal(vlen, 3);
    assert_memory_equal(buf, "one", 3);
    assert_int_equal(v2, ver);
    struct htkv_cluster_op cas[2] = {
        { .type = HTKV_CLUSTER_OP_CHECK, .key = "reg", .key_len = 3, .version = ver + 1 },
        { .type = HTKV_CLUSTER_OP_PUT, .key = "reg", .key_len = 3, .val = "two", .val_len = 3 },
    };
    assert_int_equal(htkv_cluster_write(l, cas, 2, &v2, NULL), HTKV_ECONFLICT);
    cas[0].version = ver;
    assert_int_equal(htkv_cluster_write(l, cas, 2, &v2, NULL), 0);
    assert_true(v2 > ver);
    assert_int_equal(htkv_cluster_delete(l, "nothing", 7, &v2, NULL), HTKV_ENOTFOUND);
    assert_int_equal(htkv_cluster_delete(l, "reg", 3, &v2, NULL), 0);
    assert_int_equal(htkv_cluster_get(l, "reg", 3, buf, sizeof(buf), &vlen, NULL, NULL),
                     HTKV_ENOTFOUND);
    /* Bad arguments: refused on the calling thread, nothing proposed. */
    static char big[HTKV_KEY_MAX + 1];
    assert_int_equal(htkv_cluster_put(l, NULL, 1, "x", 1, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_put(l, "k", 0, "x", 1, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_put(l, big, sizeof(big), "x", 1, NULL, NULL), HTKV_ETOOBIG);
    assert_int_equal(htkv_cluster_put(l, "k", 1, NULL, 1, NULL, NULL), -EINVAL);
    struct htkv_cluster_op bad = { .type = 9, .key = "k", .key_len = 1 };
    assert_int_equal(htkv_cluster_write(l, &bad, 1, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_write(l, &bad, 0, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_get(l, "k", 1, NULL, 4, &vlen, NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_status(l, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_get(l, "k", 1, buf, sizeof(buf), &vlen, NULL, NULL),
                     HTKV_ENOTFOUND);
}

/* Three members' directories and addresses (nothing opened). */
static struct lb *
lb_new(void)
{
    struct lb *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->root = tu_tmpdir("cluster-lb");
    for (unsigned i = 0; i < MEMBERS; i++) {
        snprintf(t->dirs[i], sizeof(t->dirs[i]), "%s/m%u", t->root, i + 1);
        snprintf(t->addrs[i], sizeof(t->addrs[i]), "127.0.0.1:%u", ct_free_port_checked());
        t->peers[i] = (struct htkv_cluster_peer){ .id = i + 1, .address = t->addrs[i] };
    }
    return t;
}

static void
lb_free(struct lb *t)
{
    tu_rmrf(t->root);
    free(t->root);
    free(t);
}

static void
test_cluster_loopback_three_members(void **state)
{
    (void)state;
    struct lb *t = lb_new();
    open_all(t);
    unsigned l = wait_leader(t);
    uint64_t max_version = 0;
    struct htkv_cluster_status before, after;
    assert_int_equal(htkv_cluster_status(t->m[l], &before), 0);
    write_from_threads(t->m[l], &max_version, NULL);
    assert_int_equal(htkv_cluster_status(t->m[l], &after), 0);
    /* Group commit: writers that waited together shared raft entries. */
    assert_true(after.last_index - before.last_index < WRITERS * PUTS_PER_WRITER);
    assert_true(after.applied_index >= max_version >> 16);
    assert_int_equal(after.store_version, max_version);
    assert_int_equal(after.leader.id, l + 1);
    check_follower(t, l, (l + 1) % MEMBERS);
    check_leader_calls(t->m[l]);
    expect_everywhere(t, max_version);
    /* A restart of every member keeps every write; new writes get higher versions. Member 1
     * restarts as after a power loss (its store left open under another boot): its store is set
     * aside and rebuilt from raft's snapshot and log. */
    close_all(t);
    char path[4300];
    snprintf(path, sizeof(path), "%s/store.state", t->dirs[0]);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("open 00000000-0000-0000-0000-000000000000\n", f);
    fclose(f);
    open_all(t);
    assert_true(tu_exists(t->dirs[0], "store.lost"));
    assert_false(tu_exists(t->dirs[1], "store.lost"));
    l = wait_leader(t);
    expect_everywhere(t, max_version);
    uint64_t v = 0;
    assert_int_equal(htkv_cluster_put(t->m[l], "after", 5, "restart", 7, &v, NULL), 0);
    assert_true(v > max_version);
    close_all(t);
    lb_free(t);
}

/* Write @p text as member @p m's store.state (@p len bytes; what a damaged file could hold). */
static void
state_put(struct lb *t, unsigned m, const char *text, size_t len)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/store.state", t->dirs[m]);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* The newest segment of shard @p shard of member @p m's store, and its records (at most 4096). */
static size_t
newest_segment(struct lb *t, unsigned m, unsigned shard, char path[4096], struct tu_rec *recs)
{
    char store[4300];
    snprintf(store, sizeof(store), "%s/store", t->dirs[m]);
    static char paths[64][4096];
    size_t n = tu_shard_segments(store, shard, paths, 64);
    assert_true(n >= 1 && n <= 64);
    memcpy(path, paths[n - 1], 4096);
    size_t r = tu_seg_scan(path, recs, 4096);
    assert_true(r <= 4096);
    return r;
}

/*
 * Damage member @p m's store as a power loss can leave it, besides marking it open under another
 * boot: shard 0's newest segment cut inside its last record, a bit of shard 1's last record
 * flipped, shard 2's newest segment gone.
 */
static void
damage_as_power_loss(struct lb *t, unsigned m)
{
    static const char other_boot[] = "open 00000000-0000-0000-0000-000000000000\n";
    state_put(t, m, other_boot, sizeof(other_boot) - 1);
    static struct tu_rec recs[4096];
    char path[4096];
    size_t n = newest_segment(t, m, 0, path, recs);
    assert_true(n >= 1);
    assert_int_equal(tu_truncate(path, recs[n - 1].off + recs[n - 1].raw / 2), 0);
    n = newest_segment(t, m, 1, path, recs);
    assert_true(n >= 1);
    assert_int_equal(tu_flip_bit(path, recs[n - 1].off + recs[n - 1].raw - 1, 3), 0);
    newest_segment(t, m, 2, path, recs);
    assert_int_equal(unlink(path), 0);
}

/*
 * Goal: a member whose store cannot be trusted (left open by a power loss and damaged by it, or
 * with its trust record missing or not one the member wrote) sets the store aside, keeps it
 * as store.lost, and is rebuilt from raft: afterwards every acknowledged write is on every
 * member with its acknowledged version. A store whose record says clean is kept.
 * Method: three members, writers, clean close; then member 1 as after a power loss (cut,
 * flipped and missing segments), member 2 without store.state, member 3 untouched; reopen and
 * check. Then member 3's store.state holds garbage bytes; reopen and check again. Then member 3
 * has no store and a record saying "check": its store.lost must stay as it was.
 */
static void
test_cluster_loopback_untrusted_stores_rebuilt(void **state)
{
    (void)state;
    struct lb *t = lb_new();
    open_all(t);
    unsigned l = wait_leader(t);
    uint64_t max_version = 0;
    static acked_t acked;
    write_from_threads(t->m[l], &max_version, &acked);
    expect_acked_everywhere(t, max_version, &acked);
    close_all(t);
    damage_as_power_loss(t, 0);
    char path[4300];
    snprintf(path, sizeof(path), "%s/store.state", t->dirs[1]);
    assert_int_equal(unlink(path), 0);
    open_all(t);
    assert_true(tu_exists(t->dirs[0], "store.lost"));
    assert_true(tu_exists(t->dirs[1], "store.lost"));
    assert_false(tu_exists(t->dirs[2], "store.lost"));
    l = wait_leader(t);
    expect_acked_everywhere(t, max_version, &acked);
    close_all(t);
    state_put(t, 2, "cl\0ean\xff\n", 8);
    open_all(t);
    assert_true(tu_exists(t->dirs[2], "store.lost"));
    l = wait_leader(t);
    expect_acked_everywhere(t, max_version, &acked);
    /* A power loss right after a set-aside leaves no store and a record that is not clean: the
     * store set aside stays as it is (nothing to replace it with), and a fresh one is rebuilt. */
    close_all(t);
    char store[4300], lost[4300];
    snprintf(store, sizeof(store), "%s/store", t->dirs[2]);
    snprintf(lost, sizeof(lost), "%s/store.lost", t->dirs[2]);
    struct tu_tree before = tu_tree_take_all(lost);
    tu_rmrf(store);
    state_put(t, 2, "check\n", 6);
    open_all(t);
    tu_tree_expect_unchanged(&before, lost, "store.lost after an open without a store");
    tu_tree_free(&before);
    l = wait_leader(t);
    expect_acked_everywhere(t, max_version, &acked);
    uint64_t v = 0;
    assert_int_equal(htkv_cluster_put(t->m[l], "after", 5, "rebuilt", 7, &v, NULL), 0);
    assert_true(v > max_version);
    close_all(t);
    lb_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_loopback_three_members),
        cmocka_unit_test(test_cluster_loopback_untrusted_stores_rebuilt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
