/*
 * serve.c - htkv-node's server: commands from stdin and from a local unix socket, one thread
 * per source, and a clean stop.
 *
 * Design. main's thread polls the listening socket and a stop pipe. Each accepted connection
 * and stdin get a detached thread that reads lines and answers them (node_command()). A stop
 * is asked for by writing a byte to the pipe: "quit" on any source, SIGINT or SIGTERM (the
 * handler writes the byte, which is async-signal-safe), or the end of stdin when there is no
 * socket. main's thread then refuses new commands, waits for those in progress, closes the
 * cluster and returns; the threads still blocked in a read end with the process.
 *
 * Invariants
 *   1. htkv_cluster_close() runs once, after busy reached 0 with stopping set (node.h, 2).
 *   2. A write to a peer that hung up fails with EPIPE (SIGPIPE is ignored), never kills us.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tools/htkv-node/node.h"

static int stop_fd = -1; /* the stop pipe's write end, for the signal handler */

struct conn {
    struct node_server *s;
    int in, out; /* the same socket, or stdin and stdout */
    int owns;    /* close in and out at the end */
    char line[NODE_LINE_MAX];
    char answer[NODE_ANSWER_MAX];
    struct node_reader rd;
};

static void
request_stop(void)
{
    char b = 1;
    ssize_t w = write(stop_fd, &b, 1);
    (void)w; /* a full pipe already asks for the stop */
}

static void
on_signal(int sig)
{
    (void)sig;
    request_stop();
}

static int
server_enter(struct node_server *s)
{
    pthread_mutex_lock(&s->mu);
    int ok = !s->stopping;
    if (ok) {
        s->busy++;
    }
    pthread_mutex_unlock(&s->mu);
    return ok ? 0 : -1;
}

static void
server_leave(struct node_server *s)
{
    pthread_mutex_lock(&s->mu);
    if (--s->busy == 0) {
        pthread_cond_broadcast(&s->idle);
    }
    pthread_mutex_unlock(&s->mu);
}

long
node_read_line(int fd, struct node_reader *rd, char *line, size_t cap)
{
    int skipping = 0;
    for (;;) {
        char *nl = memchr(rd->buf, '\n', rd->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - rd->buf);
            int fits = !skipping && n < cap;
            if (fits) {
                memcpy(line, rd->buf, n);
                line[n] = '\0';
            }
            rd->len -= n + 1;
            memmove(rd->buf, nl + 1, rd->len);
            return fits ? (long)n : -2;
        }
        if (rd->len == sizeof(rd->buf)) {
            skipping = 1; /* a line longer than the buffer: drop what we have */
            rd->len = 0;
        }
        ssize_t r = read(fd, rd->buf + rd->len, sizeof(rd->buf) - rd->len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        rd->len += (size_t)r;
    }
}

int
node_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *
conn_main(void *arg)
{
    struct conn *k = arg;
    for (;;) {
        long n = node_read_line(k->in, &k->rd, k->line, sizeof(k->line));
        if (n == -1) {
            break;
        }
        int quit = 0;
        if (n == -2) {
            snprintf(k->answer, sizeof(k->answer), "ERR %d line too long\n", HTKV_ETOOBIG);
        } else if (server_enter(k->s) != 0) {
            snprintf(k->answer, sizeof(k->answer), "ERR %d stopping\n", HTKV_ECLOSED);
        } else {
            quit = node_command(k->s->cluster, k->line, k->answer, sizeof(k->answer));
            server_leave(k->s);
        }
        if (node_write_all(k->out, k->answer, strlen(k->answer)) != 0 || quit) {
            if (quit) {
                request_stop();
            }
            break;
        }
    }
    if (k->owns) {
        close(k->in);
    } else if (k->s->listen_fd < 0) {
        request_stop(); /* stdin ended and there is no other source */
    }
    free(k);
    return NULL;
}

static int
conn_start(struct node_server *s, int in, int out, int owns)
{
    struct conn *k = calloc(1, sizeof(*k));
    pthread_t t;
    pthread_attr_t attr;
    if (k == NULL) {
        return -ENOMEM;
    }
    *k = (struct conn){ .s = s, .in = in, .out = out, .owns = owns };
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, conn_main, k);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        free(k);
        return -rc;
    }
    return 0;
}

static int
unix_address(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

int
node_listen(const char *path)
{
    struct sockaddr_un sa;
    struct stat st;
    int rc = unix_address(path, &sa);
    if (rc != 0) {
        return rc;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (lstat(path, &st) == 0) {
        /* A socket nobody answers on is a leftover of a killed member: replace it. */
        if (!S_ISSOCK(st.st_mode) || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ||
            errno != ECONNREFUSED) {
            close(fd);
            return -EADDRINUSE;
        }
        close(fd);
        unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            return -errno;
        }
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

static int
signals_install(struct node_server *s)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    if (pipe2(s->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        return -errno;
    }
    stop_fd = s->stop_pipe[1];
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

/* Accept connections until a byte arrives on the stop pipe. */
static void
serve_loop(struct node_server *s)
{
    for (;;) {
        struct pollfd p[2] = { { .fd = s->stop_pipe[0], .events = POLLIN },
                               { .fd = s->listen_fd, .events = POLLIN } };
        int n = poll(p, s->listen_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 || p[0].revents != 0) {
            return;
        }
        if (p[1].revents != 0) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0 && conn_start(s, fd, fd, 1) != 0) {
                close(fd);
            }
        }
    }
}

int
node_serve(struct node_server *s, const struct node_opts *opts)
{
    int rc = signals_install(s);
    if (rc == 0 && !opts->no_stdin) {
        rc = conn_start(s, STDIN_FILENO, STDOUT_FILENO, 0);
    }
    if (rc == 0) {
        fprintf(stderr, "htkv-node %llu: serving (listen %s%s%s)\n", (unsigned long long)opts->id,
                opts->listen, opts->socket_path ? ", socket " : "",
                opts->socket_path ? opts->socket_path : "");
        serve_loop(s);
    } else {
        fprintf(stderr, "htkv-node: cannot serve: %s\n", htkv_strerror(rc));
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    while (s->busy > 0) {
        pthread_cond_wait(&s->idle, &s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unlink(opts->socket_path);
    }
    int crc = htkv_cluster_close(s->cluster);
    s->cluster = NULL;
    if (crc != 0) {
        fprintf(stderr, "htkv-node: close: %s\n", htkv_strerror(crc));
    }
    return rc == 0 && crc == 0 ? NODE_EXIT_OK : NODE_EXIT_FAILED;
}

int
node_client(const char *path, const char *line)
{
    struct sockaddr_un sa;
    static struct node_reader rd;
    static char answer[NODE_ANSWER_MAX];
    if (unix_address(path, &sa) != 0) {
        fprintf(stderr, "htkv-node: socket path too long: %s\n", path);
        return NODE_EXIT_USAGE;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "htkv-node: cannot connect to %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NODE_EXIT_REFUSED;
    }
    signal(SIGPIPE, SIG_IGN);
    int ok = node_write_all(fd, line, strlen(line)) == 0 && node_write_all(fd, "\n", 1) == 0 &&
             node_read_line(fd, &rd, answer, sizeof(answer)) >= 0;
    close(fd);
    if (!ok) {
        fprintf(stderr, "htkv-node: no answer from %s\n", path);
        return NODE_EXIT_REFUSED;
    }
    printf("%s\n", answer);
    return NODE_EXIT_OK;
}
