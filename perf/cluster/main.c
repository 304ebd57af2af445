/*
 * main.c - htkv-cluster-bench: a client that loads a running three-member cluster through its
 * leader, htkv (htkv-node members, their unix sockets) or etcd (its JSON gateway), and measures
 * it. perf/cluster/run.sh starts the members and runs every measurement; this program only
 * talks to them (and, for failover, SIGKILLs the leader by its pid). Modes:
 *   load      puts (new keys), linearizable gets or local gets: ops/s, p50, p99, max
 *   failover  htkv: SIGKILL the leader, time until a write is acknowledged by the new one
 *   watch     htkv: heavy load while every member's status is polled (heartbeat starvation)
 * Output: one line per measurement, "RESULT ...", "FAILOVER ..." or "WATCH ...".
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf/cluster/cbench.h"

static const char usage[] =
    "usage: htkv-cluster-bench MODE --system htkv|etcd --endpoints E1,E2,E3 [options]\n"
    "  MODE: load | failover | watch\n"
    "  --endpoints LIST  htkv: the members' socket paths; etcd: their client HOST:PORT\n"
    "  --op put|get|lget load: the operation (default put)\n"
    "  --threads N       client threads, one connection each (default 16)\n"
    "  --seconds S       measured time (default 5); --warm S: before it (default 1)\n"
    "  --value-bytes N   value size of puts (default 100); keys are 16 bytes\n"
    "  --keys N          gets: keys written first and read at random (default 1000);\n"
    "                    puts: keys per thread, cycled (default 0: every put a new key)\n"
    "  --tag C           first byte of put keys (default a)\n"
    "  --pids P1,P2,P3   failover: the members' process ids, in --endpoints order\n";

struct args {
    char *eps[CB_MEMBERS];
    int pids[CB_MEMBERS];
    int n, npids;
    struct cb_load l;
};

static int
split(char *s, char **out, int max)
{
    int n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t != NULL && n < max;
         t = strtok_r(NULL, ",", &save)) {
        out[n++] = t;
    }
    return n;
}

static int
set_option(struct args *a, int opt, char *arg)
{
    char *pids[CB_MEMBERS];
    switch (opt) {
    case 's':
        a->l.system = strcmp(arg, "etcd") == 0 ? CB_ETCD : CB_HTKV;
        return strcmp(arg, "etcd") == 0 || strcmp(arg, "htkv") == 0 ? 0 : -1;
    case 'e':
        a->n = split(arg, a->eps, CB_MEMBERS);
        return 0;
    case 'o':
        a->l.op = strcmp(arg, "get") == 0 ? CB_GET : strcmp(arg, "lget") == 0 ? CB_LGET : CB_PUT;
        return 0;
    case 't':
        a->l.threads = atoi(arg);
        return a->l.threads > 0 && a->l.threads <= 1024 ? 0 : -1;
    case 'S':
        a->l.secs = atof(arg);
        return 0;
    case 'w':
        a->l.warm_s = atof(arg);
        return 0;
    case 'v':
        a->l.vlen = (size_t)atol(arg);
        return a->l.vlen > 0 && a->l.vlen <= 60000 ? 0 : -1;
    case 'k':
        a->l.keys = (unsigned)atol(arg);
        return 0;
    case 'g':
        a->l.tag = arg[0];
        return 0;
    case 'p':
        a->npids = split(arg, pids, CB_MEMBERS);
        for (int i = 0; i < a->npids; i++) {
            a->pids[i] = atoi(pids[i]);
        }
        return 0;
    default:
        return -1;
    }
}

static int
parse(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {
        { "system", required_argument, NULL, 's' },
        { "endpoints", required_argument, NULL, 'e' },
        { "op", required_argument, NULL, 'o' },
        { "threads", required_argument, NULL, 't' },
        { "seconds", required_argument, NULL, 'S' },
        { "warm", required_argument, NULL, 'w' },
        { "value-bytes", required_argument, NULL, 'v' },
        { "keys", required_argument, NULL, 'k' },
        { "tag", required_argument, NULL, 'g' },
        { "pids", required_argument, NULL, 'p' },
        { NULL, 0, NULL, 0 },
    };
    memset(a, 0, sizeof(*a));
    a->l = (struct cb_load){ .threads = 16, .vlen = 100, .tag = 'a', .warm_s = 1, .secs = 5 };
    int opt, keys_set = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        keys_set |= opt == 'k';
        if (set_option(a, opt, optarg) != 0) {
            return -1;
        }
    }
    if (!keys_set && a->l.op != CB_PUT) {
        a->l.keys = 1000;
    }
    return a->n == CB_MEMBERS && optind == argc ? 0 : -1;
}

static const char *
op_name(int op)
{
    return op == CB_PUT ? "put" : op == CB_GET ? "get" : "lget";
}

/* Finds the leader, writes the keys gets read (when reading), runs the load, prints RESULT. */
static int
run_load(struct args *a)
{
    uint64_t term = 0;
    int leader = cb_find_leader(a->l.system, a->eps, a->n, &term);
    if (leader < 0) {
        fprintf(stderr, "htkv-cluster-bench: no leader among the endpoints\n");
        return 1;
    }
    a->l.endpoint = a->eps[leader];
    struct cb_result r;
    if (a->l.op != CB_PUT) {
        struct cb_load fill = a->l;
        fill.op = CB_FILL;
        if (cb_load_run(&fill, &r) != 0 || r.ops < a->l.keys) {
            fprintf(stderr, "htkv-cluster-bench: writing the keys to read failed\n");
            return 1;
        }
    }
    if (cb_load_run(&a->l, &r) != 0) {
        return 1;
    }
    printf("RESULT system=%s op=%s threads=%d value_bytes=%zu ops_s=%.0f p50_us=%.0f p99_us=%.0f"
           " max_us=%.0f ops=%" PRIu64 " refused=%" PRIu64 " broken=%" PRIu64 " leader=%d"
           " term=%" PRIu64 "\n",
           a->l.system == CB_HTKV ? "htkv" : "etcd", op_name(a->l.op), a->l.threads, a->l.vlen,
           r.ops_s, r.p50_us, r.p99_us, r.max_us, r.ops, r.refused, r.broken, leader + 1, term);
    fflush(stdout);
    return r.ops > 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
    struct args a;
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *mode = argv[1];
    argv[1] = argv[0];
    if (parse(argc - 1, argv + 1, &a) != 0) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(mode, "load") == 0) {
        return run_load(&a);
    }
    if (strcmp(mode, "failover") == 0 && a.l.system == CB_HTKV && a.npids == a.n) {
        return cb_failover(a.eps, a.n, a.pids) == 0 ? 0 : 1;
    }
    if (strcmp(mode, "watch") == 0 && a.l.system == CB_HTKV) {
        return cb_watch(a.eps, a.n, &a.l) == 0 ? 0 : 1;
    }
    fputs(usage, stderr);
    return 2;
}
