/*
 * test_cluster_badinput.c - htkv_cluster_open() refuses bad configurations with clear codes and
 * changes nothing.
 *
 * Goal: an unknown node id, malformed addresses, duplicate voters, bad timeouts and an address
 * already in use are refused before anything is created. Method: each case opens a member whose
 * data directory does not exist yet, expects the code, and checks that the directory still does
 * not exist; the address in use is held by a listening socket of the test.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <htkv/cluster.h>

#include "tests/support/testutil.h"

struct bad {
    char *root;
    char dir[4200];
    char addr[3][HTKV_CLUSTER_ADDRESS_MAX];
    struct htkv_cluster_peer peers[3];
    htkv_cluster_config cfg;
};

/* A socket listening on 127.0.0.1 (an ephemeral port); its address goes to @p addr. */
static int
listen_any(char addr[HTKV_CLUSTER_ADDRESS_MAX])
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    snprintf(addr, HTKV_CLUSTER_ADDRESS_MAX, "127.0.0.1:%u", ntohs(sa.sin_port));
    return fd;
}

static int
bad_setup(void **state)
{
    struct bad *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->root = tu_tmpdir("cluster-bad");
    snprintf(b->dir, sizeof(b->dir), "%s/member", b->root);
    for (unsigned i = 0; i < 3; i++) {
        snprintf(b->addr[i], sizeof(b->addr[i]), "127.0.0.1:%u", 40001 + i);
        b->peers[i] = (struct htkv_cluster_peer){ .id = i + 1, .address = b->addr[i] };
    }
    /* This member's own address must be free: a case that passes the checks probes it. */
    close(listen_any(b->addr[0]));
    htkv_cluster_config_init(&b->cfg);
    b->cfg.id = 1;
    b->cfg.address = b->addr[0];
    b->cfg.data_dir = b->dir;
    b->cfg.voters = b->peers;
    b->cfg.voter_count = 3;
    b->cfg.store.log_fn = tu_quiet_log;
    *state = b;
    return 0;
}

static int
bad_teardown(void **state)
{
    struct bad *b = *state;
    tu_rmrf(b->root);
    free(b->root);
    free(b);
    return 0;
}

/* Open must fail with @p want, leave no handle and create nothing. */
static void
expect_refused(struct bad *b, int want)
{
    htkv_cluster *c = (htkv_cluster *)1;
    assert_int_equal(htkv_cluster_open(&b->cfg, &c), want);
    assert_null(c);
    struct stat st;
    assert_int_equal(stat(b->dir, &st), -1); /* nothing created */
}

/* Goal: the member's id must be one of the voters, with its own address. */
static void
test_cluster_badinput_unknown_node_id(void **state)
{
    struct bad *b = *state;
    b->cfg.id = 4;
    expect_refused(b, -EINVAL);
    b->cfg.id = 0;
    expect_refused(b, -EINVAL);
    b->cfg.id = 2; /* a voter, but the address given is voter 1's */
    expect_refused(b, -EINVAL);
}

/* Goal: addresses must be "IPv4:port" with a port in 1..65535. */
static void
test_cluster_badinput_malformed_address(void **state)
{
    struct bad *b = *state;
    const char *bad[] = { "127.0.0.1",
                          "127.0.0.1:",
                          ":4000",
                          "127.0.0.1:0",
                          "127.0.0.1:65536",
                          "127.0.0.1:12ab",
                          "localhost:4000",
                          "1.2.3:4000",
                          "127.0.0.1:-1",
                          "127.0.0.1:4000 ",
                          "" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b->cfg.address = bad[i];
        b->peers[0].address = bad[i];
        expect_refused(b, -EINVAL);
    }
    b->cfg.address = b->addr[0];
    b->peers[0].address = b->addr[0];
    b->peers[2].address = "10.0.0.1"; /* another voter's address */
    expect_refused(b, -EINVAL);
}

/* Goal: voters must have distinct ids and addresses; limits and timeouts are checked. */
static void
test_cluster_badinput_bad_peer_list(void **state)
{
    struct bad *b = *state;
    b->peers[2].id = 2;
    expect_refused(b, -EINVAL);
    b->peers[2].id = 3;
    b->peers[2].address = b->addr[1];
    expect_refused(b, -EINVAL);
    b->peers[2].address = b->addr[2];
    b->cfg.voters = NULL;
    expect_refused(b, -EINVAL);
    b->cfg.voters = b->peers;
    b->cfg.voter_count = HTKV_CLUSTER_MEMBERS_MAX + 1;
    expect_refused(b, -EINVAL);
    b->cfg.voter_count = 3;
    b->cfg.election_timeout_ms = b->cfg.heartbeat_timeout_ms;
    expect_refused(b, -EINVAL);
    b->cfg.election_timeout_ms = 1000;
    b->cfg.install_snapshot_timeout_ms = b->cfg.heartbeat_timeout_ms;
    expect_refused(b, -EINVAL);
    b->cfg.install_snapshot_timeout_ms = 10000;
    b->cfg.entry_bytes_max = 100;
    expect_refused(b, -EINVAL);
    b->cfg.entry_bytes_max = 1u << 20;
    b->cfg.store.shard_count = 5000; /* refused by htkv_open(), after the directory was made */
    expect_refused(b, -EINVAL);
    b->cfg.store.shard_count = 0;
    b->cfg.data_dir = "";
    expect_refused(b, -EINVAL);
    assert_int_equal(htkv_cluster_open(NULL, NULL), -EINVAL);
    assert_int_equal(htkv_cluster_close(NULL), 0);
}

/* Goal: an address another socket listens on is refused with -EADDRINUSE. */
static void
test_cluster_badinput_address_in_use(void **state)
{
    struct bad *b = *state;
    int fd = listen_any(b->addr[0]);
    expect_refused(b, -EADDRINUSE);
    close(fd);
    snprintf(b->addr[0], sizeof(b->addr[0]), "192.0.2.1:4000"); /* not this machine's */
    expect_refused(b, -EADDRNOTAVAIL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cluster_badinput_unknown_node_id, bad_setup,
                                        bad_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_badinput_malformed_address, bad_setup,
                                        bad_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_badinput_bad_peer_list, bad_setup,
                                        bad_teardown),
        cmocka_unit_test_setup_teardown(test_cluster_badinput_address_in_use, bad_setup,
                                        bad_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
