/*
 * test_cluster_node.c - the htkv-node program: its arguments, exit statuses and line protocol.
 *
 * Goal: bad arguments are refused with exit status 2 and a message naming the problem, before
 * anything is created; a listen address or a socket path in use gives 3; --connect with nobody
 * listening gives 4; --help prints the manual; a one-member cluster driven on stdin answers each
 * command with its one documented line (OK, VALUE, NOTFOUND, STATUS, ERR, BYE) and exits 0 on
 * quit; the same commands work over the unix socket through --connect.
 * Method: the binary (HTKV_NODE_PATH) run with fork/exec, its stdin and stdout on pipes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/testutil.h"
#include "tests/cluster/cluster_testutil.h"

#ifndef HTKV_NODE_PATH
#error "HTKV_NODE_PATH (the htkv-node binary) must be defined by the build"
#endif

struct proc {
    pid_t pid;
    int in;  /* its stdin */
    int out; /* its stdout and stderr */
};

/* Start htkv-node with @p argv (NULL-terminated, argv[0] ignored); its stdout on a pipe, and
 * its stderr too when @p join, else /dev/null (answers only). */
static struct proc
spawn(char **argv, int join)
{
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    struct proc p = { .pid = fork() };
    assert_true(p.pid >= 0);
    if (p.pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        int err = join ? out[1] : open("/dev/null", O_WRONLY);
        dup2(err, 2);
        close(in[1]);
        close(out[0]);
        argv[0] = HTKV_NODE_PATH;
        execv(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p.in = in[1];
    p.out = out[0];
    return p;
}

/* Wait for @p p to end (10 s at most); returns its exit status and what it printed. */
static int
finish(struct proc p, char *text, size_t cap)
{
    size_t n = 0;
    ssize_t r;
    close(p.in);
    while (n + 1 < cap && (r = read(p.out, text + n, cap - 1 - n)) > 0) {
        n += (size_t)r;
    }
    text[n] = '\0';
    close(p.out);
    int status = 0;
    assert_int_equal(waitpid(p.pid, &status, 0), p.pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Run htkv-node with @p argv to its end; check its status and that its output holds @p want. */
static void
expect_run(char **argv, int status, const char *want)
{
    char text[16384];
    int rc = finish(spawn(argv, 1), text, sizeof(text));
    if (rc != status || strstr(text, want) == NULL) {
        fail_msg("htkv-node %s ...: status %d (want %d), output:\n%s\n(want '%s')", argv[1], rc,
                 status, text, want);
    }
}

static void
test_node_bad_arguments(void **state)
{
    (void)state;
    char *root = tu_tmpdir("cluster-node-args");
    char dir[4200], addr[32], peers[64];
    snprintf(dir, sizeof(dir), "%s/m1", root);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ct_free_port_checked());
    snprintf(peers, sizeof(peers), "1=%s", addr);
#define RUN(status, want, ...)                                                                     \
    do {                                                                                           \
        char *argv[] = { "", __VA_ARGS__, NULL };                                                  \
        expect_run(argv, status, want);                                                            \
    } while (0)
    RUN(0, "SYNOPSIS", "--help");
    RUN(2, "are required", "--id", "1");
    RUN(2, "bad node id '0'", "--id", "0", "--listen", addr, "--data", dir, "--peers", peers);
    RUN(2, "bad address 'nope'", "--id", "1", "--listen", "nope", "--data", dir, "--peers", peers);
    RUN(2, "must list this member", "--id", "2", "--listen", addr, "--data", dir, "--peers", peers);
    RUN(2, "listed twice", "--id", "1", "--listen", addr, "--data", dir, "--peers",
        "1=127.0.0.1:1,1=127.0.0.1:2");
    RUN(2, "another address", "--id", "1", "--listen", "127.0.0.1:9", "--data", dir, "--peers",
        peers);
    RUN(2, "must exceed", "--id", "1", "--listen", addr, "--data", dir, "--peers", peers,
        "--election-ms", "100", "--heartbeat-ms", "100");
    RUN(2, "bad number", "--id", "1", "--listen", addr, "--data", dir, "--peers", peers, "--shards",
        "x");
    RUN(2, "either --peers", "--id", "1", "--listen", addr, "--data", dir, "--peers", peers,
        "--join");
    RUN(2, "unknown option", "--frobnicate");
    RUN(2, "unexpected argument", "--id", "1", "--listen", addr, "--data", dir, "--peers", peers,
        "extra");
    RUN(2, "no command given", "--connect", "/nonexistent.sock");
    RUN(4, "cannot connect", "--connect", "/nonexistent/htkv-node.sock", "status");
    struct stat st;
    assert_int_equal(stat(dir, &st), -1); /* nothing was created */

    /* A listen address in use: exit 3, and again nothing is created. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char busy[32], busy_peers[64];
    snprintf(busy, sizeof(busy), "127.0.0.1:%u", ntohs(sa.sin_port));
    snprintf(busy_peers, sizeof(busy_peers), "1=%s", busy);
    RUN(3, "Address already in use", "--id", "1", "--listen", busy, "--data", dir, "--peers",
        busy_peers, "--no-stdin");
    close(fd);
    assert_int_equal(stat(dir, &st), -1);
#undef RUN
    tu_rmrf(root);
    free(root);
}

/* Send one command line on @p p's stdin and read its one answer line (5 s at most). */
static void
say(struct proc *p, const char *line, char *answer, size_t cap)
{
    size_t n = 0;
    assert_int_equal(write(p->in, line, strlen(line)), (ssize_t)strlen(line));
    assert_int_equal(write(p->in, "\n", 1), 1);
    for (int waited = 0; n + 1 < cap; waited++) {
        assert_true(waited < 5000);
        ssize_t r = read(p->out, answer + n, 1); /* byte by byte: no answer is read past */
        assert_true(r == 1);
        if (answer[n] == '\n') {
            break;
        }
        n++;
    }
    answer[n] = '\0';
}

/* The answer to @p line starts with @p want. */
static void
expect_answer(struct proc *p, const char *line, const char *want)
{
    char a[1024];
    say(p, line, a, sizeof(a));
    if (strncmp(a, want, strlen(want)) != 0) {
        fail_msg("'%s' answered '%s' (want '%s...')", line, a, want);
    }
}

/* A one-member cluster on stdin, and the same member through its socket with --connect. */
static void
test_node_protocol(void **state)
{
    (void)state;
    char *root = tu_tmpdir("cluster-node-proto");
    char dir[4200], sock[4200], addr[32], peers[64], a[1024];
    snprintf(dir, sizeof(dir), "%s/m1", root);
    snprintf(sock, sizeof(sock), "%s/s", root);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ct_free_port_checked());
    snprintf(peers, sizeof(peers), "1=%s", addr);
    char *argv[] = { "",    "--id",           "1",   "--listen", addr, "--data",
                     dir,   "--peers",        peers, "--socket", sock, "--election-ms",
                     "200", "--heartbeat-ms", "20",  "--quiet",  NULL };
    struct proc p = spawn(argv, 0);
    say(&p, "status", a, sizeof(a));
    for (int t = 0; strstr(a, "ready=1") == NULL; t++) {
        assert_true(t < 500);
        ct_sleep_ms(10);
        say(&p, "status", a, sizeof(a));
    }
    expect_answer(&p, "put k hello world", "OK ");
    expect_answer(&p, "get k", "VALUE ");
    say(&p, "lget k", a, sizeof(a));
    assert_non_null(strstr(a, " hello world"));
    expect_answer(&p, "del k", "OK ");
    expect_answer(&p, "get k", "NOTFOUND");
    expect_answer(&p, "del k", "NOTFOUND");
    expect_answer(&p, "put k", "ERR -22 usage: put KEY VALUE");
    expect_answer(&p, "frob", "ERR -22 unknown command");
    expect_answer(&p, "add 0 127.0.0.1:1", "ERR -22 usage: add");
    expect_answer(&p, "add 2 localhost:1", "ERR -22 ");
    expect_answer(&p, "add 2 127.0.0.1:1 x", "ERR -22 usage: add");
    expect_answer(&p, "remove 7", "NOTFOUND");
    expect_answer(&p, "transfer", "NOTFOUND"); /* no other voter */
    expect_answer(&p, "transfer 1", "ERR -22 ");
    expect_answer(&p, "status", "STATUS id=1 role=leader ");

    /* The socket: the same protocol through --connect; a second member on it is refused. */
    char *put[] = { "", "--connect", sock, "put", "s", "over", "the", "socket", NULL };
    expect_run(put, 0, "OK ");
    char *get[] = { "", "--connect", sock, "lget", "s", NULL };
    expect_run(get, 0, " over the socket");
    char other[4200];
    snprintf(other, sizeof(other), "%s/m2", root);
    char *again[] = { "",       "--id",       "1",       "--listen",      "127.0.0.1:1",
                      "--data", other,        "--peers", "1=127.0.0.1:1", "--socket",
                      sock,     "--no-stdin", NULL };
    expect_run(again, 3, "Address already in use");

    expect_answer(&p, "quit", "BYE");
    char text[4096];
    assert_int_equal(finish(p, text, sizeof(text)), 0);
    struct stat st;
    assert_int_equal(stat(sock, &st), -1); /* the socket is removed at a clean stop */
    tu_rmrf(root);
    free(root);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_bad_arguments),
        cmocka_unit_test(test_node_protocol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
