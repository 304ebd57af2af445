/*
 * node.h - htkv-node, one member of a replicated htkv cluster as a process: the pieces that its
 * files share (options, the line protocol, the server).
 *
 * Invariants
 *   1. Every answer is exactly one line (NODE_ANSWER_MAX bytes at most, '\n' included).
 *   2. A command runs on the cluster only between node_server_enter() and node_server_leave();
 *      htkv_cluster_close() runs only once no command is in progress and none can start.
 */
#ifndef HTKV_TOOLS_NODE_H
#define HTKV_TOOLS_NODE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <htkv/cluster.h>

/** Longest command line, '\n' included; a longer one is refused (ERR) and skipped. */
#define NODE_LINE_MAX 65536
/** Longest answer line: a value of a line's size plus the words around it. */
#define NODE_ANSWER_MAX (NODE_LINE_MAX + 128)

/** Exit statuses (the manual in main.c's usage text). */
enum node_exit {
    NODE_EXIT_OK = 0,      /* stopped cleanly (quit, SIGINT, SIGTERM) */
    NODE_EXIT_FAILED = 1,  /* the member could not start, or stopped on a failure */
    NODE_EXIT_USAGE = 2,   /* bad arguments */
    NODE_EXIT_INUSE = 3,   /* the listen address or the socket path is taken */
    NODE_EXIT_REFUSED = 4, /* --connect: nothing answers at the socket */
};

/** The command line, parsed. */
struct node_opts {
    uint64_t id;
    char listen[HTKV_CLUSTER_ADDRESS_MAX];
    const char *data_dir;
    const char *socket_path;  /* NULL: stdin only */
    const char *connect_path; /* --connect: client mode */
    struct htkv_cluster_peer peers[HTKV_CLUSTER_MEMBERS_MAX];
    char peer_addrs[HTKV_CLUSTER_MEMBERS_MAX][HTKV_CLUSTER_ADDRESS_MAX];
    size_t peer_count;
    unsigned election_ms, heartbeat_ms, snapshot_threshold, snapshot_trailing, shards;
    uint64_t snapshot_bytes;
    unsigned install_snapshot_ms;
    int quiet;    /* no log lines from the library */
    int no_stdin; /* do not read commands from stdin */
    int join;     /* start without voters: wait to be added */
};

/** The member and what guards its closing. */
struct node_server {
    htkv_cluster *cluster;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when busy drops to 0 */
    unsigned busy;       /* commands in progress */
    int stopping;        /* no command may start */
    int stop_pipe[2];    /* a byte written to [1] asks main to stop (also from a signal) */
    int listen_fd;       /* -1 without --socket */
};

/**
 * Run one command line (no '\n') against @p c and write its one answer line ('\n' included,
 * NUL-terminated) to @p answer.
 * @return 1 when the command was quit (the answer is "BYE"), else 0.
 * @context Any thread, between node_server_enter() and node_server_leave().
 */
int node_command(htkv_cluster *c, char *line, char *answer, size_t cap);

/**
 * Serve until asked to stop: commands from stdin (unless opts->no_stdin) and from connections
 * to opts->socket_path (when set), each on a thread of its own; SIGINT and SIGTERM stop it.
 * Closes the cluster (s->cluster, taken) before it returns.
 * @return enum node_exit.
 */
int node_serve(struct node_server *s, const struct node_opts *opts);

/**
 * Create the listening unix socket at @p path, replacing a leftover socket that nobody answers
 * on (a member that was killed).
 * @return the socket (>= 0); -EADDRINUSE (a member answers there, or the path is not a
 *         socket); -ENAMETOOLONG; another -errno.
 */
int node_listen(const char *path);

/**
 * Client mode: send @p line to the member listening at @p path and print its answer.
 * @return enum node_exit (NODE_EXIT_REFUSED when nothing answers).
 */
int node_client(const char *path, const char *line);

/**
 * Read one line from @p fd into @p buf (at most @p cap - 1 bytes, NUL-terminated, '\n'
 * dropped). @p rd keeps the bytes read past the line between calls (zero it before the first).
 * @return the line's length; -2 for a line too long (skipped); -1 at the end or on an error.
 */
struct node_reader {
    char buf[NODE_LINE_MAX];
    size_t len;
};
long node_read_line(int fd, struct node_reader *rd, char *line, size_t cap);

/** Write all of @p n bytes of @p buf to @p fd (a socket or a pipe). @return 0, or -1. */
int node_write_all(int fd, const char *buf, size_t n);

#endif /* HTKV_TOOLS_NODE_H */
