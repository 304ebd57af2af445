/*
 * main.c - htkv-node: one member of a replicated htkv cluster (libhtkv_cluster) as a process,
 * driven by line commands on stdin and on a local unix socket. The usage text below is its
 * manual.
 *
 * Design. main() parses and checks every argument before anything is created (a usage error
 * changes nothing and exits 2), creates the socket (so that a taken path fails before the data
 * directory is touched), opens the member and hands it to node_serve() (serve.c), which runs
 * until quit or a signal and closes the member. --connect is a small client for scripts.
 *
 * Invariants
 *   1. Exit statuses are enum node_exit (node.h), as the usage text lists them.
 *   2. Every message for a person goes to stderr; stdout carries answers only.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/htkv-node/node.h"

static const char usage_text[] =
    "NAME\n"
    "    htkv-node - run one member of a replicated htkv cluster\n"
    "\n"
    "SYNOPSIS\n"
    "    htkv-node --id N --listen HOST:PORT --data DIR --peers ID=HOST:PORT[,...] [options]\n"
    "    htkv-node --id N --listen HOST:PORT --data DIR --join [options]\n"
    "    htkv-node --connect PATH COMMAND [ARGS...]\n"
    "\n"
    "DESCRIPTION\n"
    "    Runs member N of a Raft cluster (canonical raft, TCP) with a local htkv store in DIR.\n"
    "    --peers lists the initial voters, this member included; every member of a new cluster\n"
    "    is given the same list. It is ignored when DIR already holds the member's raft state\n"
    "    (a restart). HOST is an IPv4 literal (e.g. 127.0.0.1). A member started with --join\n"
    "    instead waits until the leader adds it (add ID HOST:PORT, sent to the leader).\n"
    "\n"
    "    Commands are read one per line from stdin and from every connection to the unix\n"
    "    socket PATH (--socket); each gets exactly one answer line:\n"
    "      put KEY VALUE  OK <version>          VALUE is the rest of the line\n"
    "      del KEY        OK <version> | NOTFOUND\n"
    "      get KEY        VALUE <version> <value> | NOTFOUND   linearizable (leader only)\n"
    "      lget KEY       VALUE <version> <value> | NOTFOUND   this member's store, may lag\n"
    "      status         STATUS id= role= term= commit= applied= last= version= ready=\n"
    "                            leader=<id>@<addr> members=<id>@<addr>/<voter|spare>/<match>,..\n"
    "                     (match: the member's last raft index as the leader knows it, else 0)\n"
    "      add ID ADDR    OK   add member ID (started with --join) at ADDR as non-voter,\n"
    "                          promoted to voter once caught up (on the leader)\n"
    "      remove ID      OK   remove member ID (on the leader)\n"
    "      transfer [ID]  OK <id>   hand leadership to voter ID, or to one raft picks\n"
    "      quit           BYE, then the member stops cleanly\n"
    "    Any command may instead answer NOTLEADER <id> <addr> (send it to that member; id 0\n"
    "    and addr - while no leader is known) or ERR <code> <text>. A write answered ERR\n"
    "    -103 (connection aborted) or whose connection broke may or may not be applied.\n"
    "\n"
    "OPTIONS\n"
    "    --id N                 this member's node id (1 or more)\n"
    "    --listen HOST:PORT     raft's TCP address of this member (must be in --peers)\n"
    "    --data DIR             the member's directory (created if missing)\n"
    "    --peers LIST           initial voters: ID=HOST:PORT, comma-separated (at most 16)\n"
    "    --join                 no --peers: join an existing cluster when its leader adds us\n"
    "    --socket PATH          also take commands on this unix socket\n"
    "    --no-stdin             do not read stdin (e.g. when run in the background)\n"
    "    --election-ms MS       election timeout (default 1000); must exceed the heartbeat\n"
    "    --heartbeat-ms MS      heartbeat interval (default 100)\n"
    "    --snapshot-threshold N entries applied between snapshots (default 1024)\n"
    "    --snapshot-trailing N  entries kept in the log after a snapshot (default 128)\n"
    "    --snapshot-bytes N     bytes of writes applied between snapshots, besides the entries\n"
    "                           (default 67108864; 0 = entries alone)\n"
    "    --install-snapshot-ms N  how long the leader waits for a member's snapshot install\n"
    "                           before it starts over (default 10000)\n"
    "    --shards N             shards of the local store (default 4)\n"
    "    --quiet                no log lines from the library (errors of this program remain)\n"
    "    --connect PATH CMD...  client: send one command to the member at PATH, print the answer\n"
    "    --help                 this text\n"
    "\n"
    "SIGNALS\n"
    "    SIGINT and SIGTERM stop the member cleanly, like quit. End of stdin stops it only\n"
    "    when there is no --socket.\n"
    "\n"
    "EXIT STATUS\n"
    "    0 stopped cleanly; 1 the member could not start or failed; 2 bad arguments;\n"
    "    3 the listen address or the socket path is in use; 4 (--connect) no member answers.\n";

enum {
    OPT_ID = 256,
    OPT_LISTEN,
    OPT_DATA,
    OPT_PEERS,
    OPT_SOCKET,
    OPT_ELECTION,
    OPT_HEARTBEAT,
    OPT_SNAP_THRESHOLD,
    OPT_SNAP_TRAILING,
    OPT_SNAP_BYTES,
    OPT_INSTALL_SNAPSHOT,
    OPT_SHARDS,
    OPT_QUIET,
    OPT_NO_STDIN,
    OPT_CONNECT,
    OPT_HELP,
    OPT_JOIN,
};

static const struct option long_opts[] = {
    { "id", required_argument, NULL, OPT_ID },
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "data", required_argument, NULL, OPT_DATA },
    { "peers", required_argument, NULL, OPT_PEERS },
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "election-ms", required_argument, NULL, OPT_ELECTION },
    { "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT },
    { "snapshot-threshold", required_argument, NULL, OPT_SNAP_THRESHOLD },
    { "snapshot-trailing", required_argument, NULL, OPT_SNAP_TRAILING },
    { "snapshot-bytes", required_argument, NULL, OPT_SNAP_BYTES },
    { "install-snapshot-ms", required_argument, NULL, OPT_INSTALL_SNAPSHOT },
    { "shards", required_argument, NULL, OPT_SHARDS },
    { "quiet", no_argument, NULL, OPT_QUIET },
    { "no-stdin", no_argument, NULL, OPT_NO_STDIN },
    { "connect", required_argument, NULL, OPT_CONNECT },
    { "help", no_argument, NULL, OPT_HELP },
    { "join", no_argument, NULL, OPT_JOIN },
    { NULL, 0, NULL, 0 },
};

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "htkv-node: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'htkv-node --help'.\n");
    return NODE_EXIT_USAGE;
}

/* A decimal number in [lo, hi]; nothing else on the word. */
static int
parse_number(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    if (s[0] < '0' || s[0] > '9') {
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

/* "HOST:PORT" with a port in 1..65535 (the library checks the host). */
static int
check_address(const char *a)
{
    const char *colon = strrchr(a, ':');
    uint64_t port;
    if (colon == NULL || colon == a || strlen(a) >= HTKV_CLUSTER_ADDRESS_MAX) {
        return -1;
    }
    return parse_number(colon + 1, 1, 65535, &port);
}

/* "ID=HOST:PORT[,ID=HOST:PORT...]": ids distinct, addresses well formed. */
static int
parse_peers(struct node_opts *o, const char *list)
{
    char buf[HTKV_CLUSTER_MEMBERS_MAX * (HTKV_CLUSTER_ADDRESS_MAX + 24)];
    char *save = NULL;
    if (strlen(list) >= sizeof(buf)) {
        return usage_error("--peers: list too long: %s", list);
    }
    memcpy(buf, list, strlen(list) + 1);
    o->peer_count = 0;
    for (char *p = strtok_r(buf, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        size_t i = o->peer_count;
        if (i == HTKV_CLUSTER_MEMBERS_MAX) {
            return usage_error("--peers: more than 16 members: %s", list);
        }
        if (eq == NULL) {
            return usage_error("--peers: '%s' is not ID=HOST:PORT", p);
        }
        *eq = '\0';
        if (parse_number(p, 1, UINT64_MAX, &o->peers[i].id) != 0) {
            return usage_error("--peers: bad node id '%s' (want 1 or more)", p);
        }
        if (check_address(eq + 1) != 0) {
            return usage_error("--peers: bad address '%s' (want HOST:PORT)", eq + 1);
        }
        for (size_t j = 0; j < i; j++) {
            if (o->peers[j].id == o->peers[i].id) {
                return usage_error("--peers: node id %s listed twice", p);
            }
        }
        memcpy(o->peer_addrs[i], eq + 1, strlen(eq + 1) + 1);
        o->peers[i].address = o->peer_addrs[i];
        o->peer_count++;
    }
    return o->peer_count > 0 ? 0 : usage_error("--peers: empty list%s", "");
}

static int
parse_option(struct node_opts *o, int opt, const char *arg)
{
    uint64_t v = 0;
    unsigned *field = NULL;
    switch (opt) {
    case OPT_ID:
        return parse_number(arg, 1, UINT64_MAX, &o->id) == 0
                   ? 0
                   : usage_error("--id: bad node id '%s' (want 1 or more)", arg);
    case OPT_LISTEN:
        if (check_address(arg) != 0) {
            return usage_error("--listen: bad address '%s' (want HOST:PORT)", arg);
        }
        memcpy(o->listen, arg, strlen(arg) + 1);
        return 0;
    case OPT_DATA:
        o->data_dir = arg;
        return 0;
    case OPT_PEERS:
        return parse_peers(o, arg);
    case OPT_SOCKET:
        o->socket_path = arg;
        return 0;
    case OPT_QUIET:
        o->quiet = 1;
        return 0;
    case OPT_NO_STDIN:
        o->no_stdin = 1;
        return 0;
    case OPT_JOIN:
        o->join = 1;
        return 0;
    case OPT_ELECTION:
        field = &o->election_ms;
        break;
    case OPT_HEARTBEAT:
        field = &o->heartbeat_ms;
        break;
    case OPT_SNAP_THRESHOLD:
        field = &o->snapshot_threshold;
        break;
    case OPT_SNAP_TRAILING:
        field = &o->snapshot_trailing;
        break;
    case OPT_SNAP_BYTES:
        return parse_number(arg, 0, UINT64_MAX, &o->snapshot_bytes) == 0
                   ? 0
                   : usage_error("--snapshot-bytes: bad number '%s' (want 0 or more)", arg);
    case OPT_INSTALL_SNAPSHOT:
        field = &o->install_snapshot_ms;
        break;
    case OPT_SHARDS:
        field = &o->shards;
        break;
    default:
        return usage_error("unknown option%s", "");
    }
    if (parse_number(arg, 1, 1000000000, &v) != 0) {
        return usage_error("bad number '%s' (want 1 to 1000000000)", arg);
    }
    *field = (unsigned)v;
    return 0;
}

/* Whole-command checks, once every option is known. */
static int
check_opts(const struct node_opts *o)
{
    if (o->id == 0 || o->listen[0] == '\0' || o->data_dir == NULL) {
        return usage_error("%s", "--id, --listen and --data are required");
    }
    if ((o->peer_count == 0) == (o->join == 0)) {
        return usage_error("%s", "give either --peers (a new or restarted member) or --join");
    }
    if (o->join) {
        return 0;
    }
    if (o->heartbeat_ms >= o->election_ms) {
        return usage_error("%s", "--election-ms must exceed --heartbeat-ms");
    }
    for (size_t i = 0; i < o->peer_count; i++) {
        if (o->peers[i].id == o->id) {
            return strcmp(o->peers[i].address, o->listen) == 0
                       ? 0
                       : usage_error("--peers gives this member (--id) another address than "
                                     "--listen %s",
                                     o->listen);
        }
    }
    return usage_error("%s", "--peers must list this member (--id)");
}

static int
parse_args(int argc, char **argv, struct node_opts *o)
{
    int opt;
    *o = (struct node_opts){ .election_ms = 1000,
                             .heartbeat_ms = 100,
                             .shards = 4,
                             .snapshot_threshold = 1024,
                             .snapshot_trailing = 128,
                             .snapshot_bytes = 64u << 20,
                             .install_snapshot_ms = 10000 };
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+", long_opts, NULL)) != -1) {
        if (opt == OPT_HELP) {
            fputs(usage_text, stdout);
            exit(NODE_EXIT_OK);
        }
        if (opt == OPT_CONNECT) {
            o->connect_path = optarg;
            return 0; /* the rest of the words are the command */
        }
        if (opt == '?' || opt == ':') {
            return usage_error("unknown option or missing argument: %s", argv[optind - 1]);
        }
        int rc = parse_option(o, opt, optarg);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument '%s'", argv[optind]);
    }
    return check_opts(o);
}

static void
quiet_log(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)msg;
    (void)ctx;
}

static int
open_member(const struct node_opts *o, htkv_cluster **out)
{
    htkv_cluster_config cfg;
    htkv_cluster_config_init(&cfg);
    cfg.id = o->id;
    cfg.address = o->listen;
    cfg.data_dir = o->data_dir;
    cfg.voters = o->join ? NULL : o->peers;
    cfg.voter_count = o->peer_count;
    cfg.election_timeout_ms = o->election_ms;
    cfg.heartbeat_timeout_ms = o->heartbeat_ms;
    cfg.snapshot_threshold = o->snapshot_threshold;
    cfg.snapshot_trailing = o->snapshot_trailing;
    cfg.snapshot_bytes = o->snapshot_bytes;
    cfg.install_snapshot_timeout_ms = o->install_snapshot_ms;
    cfg.store.shard_count = o->shards;
    cfg.store.worker_threads = 0;
    cfg.store.max_value_bytes = NODE_LINE_MAX;
    if (o->quiet) {
        cfg.store.log_fn = quiet_log;
    }
    int rc = htkv_cluster_open(&cfg, out);
    if (rc != 0) {
        fprintf(stderr, "htkv-node: cannot open member %" PRIu64 " (%s, %s): %s\n", o->id,
                o->listen, o->data_dir, htkv_strerror(rc));
    }
    return rc == 0 ? 0 : rc == -EADDRINUSE ? NODE_EXIT_INUSE : NODE_EXIT_FAILED;
}

/* --connect PATH WORD...: the words joined by single spaces make the command line. */
static int
run_client(const char *path, int argc, char **argv)
{
    char line[NODE_LINE_MAX];
    size_t n = 0;
    if (argc == 0) {
        return usage_error("--connect %s: no command given", path);
    }
    for (int i = 0; i < argc; i++) {
        size_t w = strlen(argv[i]);
        if (n + w + 2 > sizeof(line)) {
            return usage_error("--connect %s: command too long", path);
        }
        if (i > 0) {
            line[n++] = ' ';
        }
        memcpy(line + n, argv[i], w);
        n += w;
    }
    line[n] = '\0';
    return node_client(path, line);
}

int
main(int argc, char **argv)
{
    static struct node_opts o;
    static struct node_server s = { .mu = PTHREAD_MUTEX_INITIALIZER,
                                    .idle = PTHREAD_COND_INITIALIZER,
                                    .listen_fd = -1 };
    int rc = parse_args(argc, argv, &o);
    if (rc != 0 || o.connect_path != NULL) {
        return rc != 0 ? rc : run_client(o.connect_path, argc - optind, argv + optind);
    }
    if (o.socket_path != NULL) {
        s.listen_fd = node_listen(o.socket_path);
        if (s.listen_fd < 0) {
            fprintf(stderr, "htkv-node: --socket %s: %s\n", o.socket_path,
                    htkv_strerror(s.listen_fd));
            return s.listen_fd == -EADDRINUSE ? NODE_EXIT_INUSE : NODE_EXIT_FAILED;
        }
    }
    rc = open_member(&o, &s.cluster);
    if (rc != 0) {
        if (s.listen_fd >= 0) {
            close(s.listen_fd);
            unlink(o.socket_path);
        }
        return rc;
    }
    return node_serve(&s, &o);
}
