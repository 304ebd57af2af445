/*
 * conn.c - htkv-cluster-bench's client connections: a unix socket to htkv-node (one command
 * line, one answer line) or a TCP connection to etcd's gRPC gateway speaking HTTP/1.1 with
 * keep-alive (one POST, one response, Content-Length or chunked body). Blocking sockets, one
 * connection per client thread.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "perf/cluster/cbench.h"

uint64_t
cb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
cb_sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int
open_unix(const char *path)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a.sun_path)) {
        return -1;
    }
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static int
open_tcp(const char *hostport)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* endpoint: a socket path (htkv) or "HOST:PORT" (etcd). 0, or -1 when nobody answers. */
int
cb_conn_open(struct cb_conn *c, int system, const char *endpoint)
{
    c->system = system;
    c->off = c->len = 0;
    snprintf(c->host, sizeof(c->host), "%s", endpoint);
    c->fd = system == CB_HTKV ? open_unix(endpoint) : open_tcp(endpoint);
    return c->fd >= 0 ? 0 : -1;
}

void
cb_conn_close(struct cb_conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
}

int
cb_conn_send(struct cb_conn *c, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
fill(struct cb_conn *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len);
        c->off = 0;
    }
    if (c->len == sizeof(c->buf)) {
        return -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        c->len += (size_t)r;
        return 0;
    }
}

/* One line without its "\n" (and "\r") into out (cut to cap - 1): its length, or -1. */
int
cb_conn_line(struct cb_conn *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->off, '\n', c->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (c->buf + c->off));
            size_t keep = n > 0 && nl[-1] == '\r' ? n - 1 : n;
            keep = keep < cap - 1 ? keep : cap - 1;
            memcpy(out, c->buf + c->off, keep);
            out[keep] = '\0';
            c->off += n + 1;
            c->len -= n + 1;
            return (int)keep;
        }
        if (fill(c) != 0) {
            return -1;
        }
    }
}

/* n bytes of body into out (what exceeds cap - 1 is dropped). */
static int
read_bytes(struct cb_conn *c, size_t n, char *out, size_t cap, size_t *at)
{
    while (n > 0) {
        if (c->len == 0 && fill(c) != 0) {
            return -1;
        }
        size_t take = n < c->len ? n : c->len;
        size_t room = *at + 1 < cap ? cap - 1 - *at : 0;
        size_t copy = take < room ? take : room;
        memcpy(out + *at, c->buf + c->off, copy);
        *at += copy;
        c->off += take;
        c->len -= take;
        n -= take;
    }
    out[*at] = '\0';
    return 0;
}

static int
read_chunked(struct cb_conn *c, char *out, size_t cap, size_t *at)
{
    char line[64];
    for (;;) {
        if (cb_conn_line(c, line, sizeof(line)) < 0) {
            return -1;
        }
        size_t n = strtoul(line, NULL, 16);
        if (n == 0) {
            return cb_conn_line(c, line, sizeof(line)) < 0 ? -1 : 0; /* the last "\r\n" */
        }
        if (read_bytes(c, n, out, cap, at) != 0 || cb_conn_line(c, line, sizeof(line)) < 0) {
            return -1;
        }
    }
}

/* POST body to path; the response body into out. Returns the HTTP status, or -1. */
int
cb_conn_http(struct cb_conn *c, const char *path, const char *body, size_t blen, char *out,
             size_t cap)
{
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      path, c->host, blen);
    if (cb_conn_send(c, head, (size_t)hl) != 0 || cb_conn_send(c, body, blen) != 0) {
        return -1;
    }
    char line[512];
    if (cb_conn_line(c, line, sizeof(line)) < 0 || strncmp(line, "HTTP/1.", 7) != 0) {
        return -1;
    }
    int status = atoi(line + 9);
    long length = -1;
    int chunked = 0;
    while (cb_conn_line(c, line, sizeof(line)) > 0) {
        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            length = atol(line + 15);
        } else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0 && strstr(line, "chunked")) {
            chunked = 1;
        }
    }
    size_t at = 0;
    out[0] = '\0';
    int rc = chunked ? read_chunked(c, out, cap, &at)
                     : read_bytes(c, length > 0 ? (size_t)length : 0, out, cap, &at);
    return rc == 0 ? status : -1;
}
