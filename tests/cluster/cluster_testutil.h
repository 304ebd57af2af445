/*
 * cluster_testutil.h - small helpers the cluster tests share (header only: each test is one
 * executable with its own copy, no library to link). Include it after the test's cmocka header
 * (tests/support/testutil.h) for ct_free_port_checked().
 */
#ifndef HTKV_TESTS_CLUSTER_TESTUTIL_H
#define HTKV_TESTS_CLUSTER_TESTUTIL_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline void
ct_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* A TCP port of 127.0.0.1 that was free a moment ago (bind port 0, read it back, close), or 0
 * when none could be had (errno says why). */
static inline unsigned
ct_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    if (fd >= 0) {
        close(fd);
    }
    return port;
}

#ifdef cmocka_unit_test
/* ct_free_port() in a cmocka test: the test fails when no port can be had. */
static inline unsigned
ct_free_port_checked(void)
{
    unsigned port = ct_free_port();
    assert_true(port != 0);
    return port;
}
#endif

#endif
