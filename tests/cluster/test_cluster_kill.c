/*
 * test_cluster_kill.c - three htkv-node processes on 127.0.0.1 under a concurrent write load,
 * killed with SIGKILL again and again (the leader and followers), then checked.
 *
 * Goal: a crash of any member at any moment loses no acknowledged write and breaks no read:
 *   1. every acknowledged write is on every member afterwards, with its acknowledged version,
 *      and acknowledged versions never repeat;
 *   2. a write whose outcome is unknown (its member died, or lost its leadership) is on every
 *      member alike or on none;
 *   3. the register history is linearizable as far as versions tell: a read that started after
 *      a write was acknowledged returns that write or a later one; a read that started after
 *      another read ended returns that read's version or a later one; a read returns only a
 *      value some write proposed before the read ended, with the version it was acknowledged
 *      with;
 *   4. the cluster keeps making progress: after each restart some write is acknowledged;
 *   5. a member stops cleanly (exit 0) on "quit" at the end.
 * Method: the members are htkv-node processes (HTKV_NODE_PATH) with short timeouts (election
 * 200 ms, heartbeat 25 ms) and small snapshots (so that restarted members also catch up by
 * snapshot). WRITERS threads talk to them over their unix sockets: unique keys (checked by 1),
 * and puts and linearizable gets of REGISTERS keys (checked by 3), following NOTLEADER toward
 * the leader. The main thread kills the leader and a follower in turn
 * (HTKV_CLUSTER_KILL_CYCLES, default 30 kills), restarting each victim after a short pause;
 * every third cycle it also hands leadership to another member ("transfer ID"), and every
 * tenth kill (from the sixth) replaces a follower: removed from the configuration, its
 * directory wiped, a fresh member with a new id added at its address (membership changes under
 * load, and a catch-up from nothing); half of those removals and additions have their leader
 * SIGKILLed while the change is in flight.
 * Seeded: HTKV_SEED replays the choices (the timing of a real cluster is not replayed); the
 * seed is printed, and again on failure, with the members' logs, which are kept then. A failed
 * check of the writes first checks every key, then prints every member's answer for the first
 * keys that differ (with the write's version, raft index, answering member and wall-clock
 * time) and each member's status; HTKV_CLUSTER_TRACE=1 in the environment (inherited by the
 * members) puts the cluster layer's trace in their logs: roles and terms, every applied entry,
 * snapshots, restores, answers. The end prints how many stores were rebuilt after a torn write.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/testutil.h"
#include "tests/cluster/cluster_testutil.h"

#ifndef HTKV_NODE_PATH
#error "HTKV_NODE_PATH (the htkv-node binary) must be defined by the build"
#endif

#define MEMBERS 3
#define WRITERS 3
#define REGISTERS 4
#define ANSWER_MAX 512

enum op_kind { OP_UNIQUE = 1, OP_REG_PUT = 2, OP_REG_GET = 3 };
enum op_outcome { OUT_ACKED = 1, OUT_UNKNOWN = 2, OUT_READ = 3 };

/* One finished operation of a writer's history. */
struct op {
    uint8_t kind, outcome;
    uint16_t reg;       /* OP_REG_*: the register */
    uint32_t member_id; /* the member that answered (its node id) */
    uint32_t writer;    /* who proposed the write (reads: who wrote the value read) */
    uint64_t seq;       /* the write's number at its writer (reads: of the value read) */
    uint64_t start_ns, end_ns;
    uint64_t version; /* acknowledged or read version; 0 for unknown, NOTFOUND */
};

struct member {
    atomic_uint id; /* node id: i + 1, then a fresh one each time the slot is replaced */
    int join;       /* started with --join (a replacement): no --peers, ever after */
    pid_t pid;
    char addr[32];
    char dir[4200];
    char sock[108];
    char log[4300];
};

struct conn {
    int fd;
    char buf[ANSWER_MAX * 2];
    size_t len;
};

struct writer {
    pthread_t thread;
    unsigned id;
    uint64_t rng;
    struct conn c[MEMBERS];
    struct op *ops;
    size_t n, cap;
    uint64_t seq; /* writes proposed so far */
};

static struct kt {
    char *root;
    char peers[256];
    struct member m[MEMBERS];
    uint64_t seed;
    atomic_int stop;
    atomic_ulong acked;
    unsigned transfers;       /* leadership transfers that moved the leader */
    unsigned replaced;        /* members replaced by a fresh one (remove, then add) */
    unsigned crashed_changes; /* leaders killed during a membership change */
    unsigned next_id;         /* the id of the next replacement */
    struct writer w[WRITERS];
    uint64_t t0_mono, t0_real; /* now_ns() and the wall clock (ns) at the start */
} K;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void ask(unsigned i, const char *line, char *answer);

/* Fail the whole test: print why and the seed, kill every member, keep their logs. */
static void __attribute__((format(printf, 1, 2), noreturn)) kt_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "test_cluster_kill: FAILED: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    for (unsigned i = 0; i < MEMBERS; i++) {
        char a[ANSWER_MAX] = "(down)";
        if (K.m[i].pid > 0) {
            ask(i, "status\n", a);
        }
        fprintf(stderr, "  member slot %u (id %u, pid %d): %s\n", i + 1, atomic_load(&K.m[i].id),
                (int)K.m[i].pid, a);
    }
    fprintf(stderr, "test_cluster_kill: replay with HTKV_SEED=%" PRIu64 "; members' logs:", K.seed);
    for (unsigned i = 0; i < MEMBERS; i++) {
        if (K.m[i].pid > 0) {
            kill(K.m[i].pid, SIGKILL);
        }
        fprintf(stderr, " %s", K.m[i].log);
    }
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(1);
}

static unsigned
free_port(void)
{
    unsigned port = ct_free_port();
    if (port == 0) {
        kt_fail("no free port: %s", strerror(errno));
    }
    return port;
}

/* Start member i (its pid in K.m[i].pid); stdin from /dev/null, stderr to its log. */
static void
member_start(unsigned i)
{
    struct member *m = &K.m[i];
    char id[16];
    snprintf(id, sizeof(id), "%u", atomic_load(&m->id));
    char *argv[] = { HTKV_NODE_PATH,
                     "--id",
                     id,
                     "--listen",
                     m->addr,
                     "--data",
                     m->dir,
                     "--socket",
                     m->sock,
                     "--no-stdin",
                     "--election-ms",
                     "200",
                     "--heartbeat-ms",
                     "25",
                     "--snapshot-threshold",
                     "256",
                     "--snapshot-bytes",
                     "0",
                     "--snapshot-trailing",
                     "64",
                     "--shards",
                     "2",
                     m->join ? "--join" : "--peers",
                     m->join ? NULL : K.peers,
                     NULL };
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = open(m->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (null < 0 || log < 0) {
        kt_fail("open /dev/null or %s: %s", m->log, strerror(errno));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* A member dies with the test (a ctest timeout kills the test with SIGKILL). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
            _exit(127);
        }
        dup2(null, 0);
        dup2(null, 1);
        dup2(log, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    if (pid < 0) {
        kt_fail("fork: %s", strerror(errno));
    }
    close(null);
    close(log);
    m->pid = pid;
}

static void
member_kill(unsigned i)
{
    if (kill(K.m[i].pid, SIGKILL) != 0 || waitpid(K.m[i].pid, NULL, 0) != K.m[i].pid) {
        kt_fail("kill member %u: %s", i + 1, strerror(errno));
    }
    K.m[i].pid = 0;
}

/* Every member that should run does: none exited on its own. */
static void
check_alive(void)
{
    for (unsigned i = 0; i < MEMBERS; i++) {
        int status = 0;
        if (K.m[i].pid > 0 && waitpid(K.m[i].pid, &status, WNOHANG) == K.m[i].pid) {
            K.m[i].pid = 0;
            kt_fail("member %u ended on its own: %s %d", i + 1,
                    WIFSIGNALED(status) ? "signal" : "exit status",
                    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    c->len = 0;
}

/* Connect @p c to member i's socket (answers within 5 s, or the request fails). */
static int
conn_open(struct conn *c, unsigned i)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 5 };
    memcpy(sa.sun_path, K.m[i].sock, strlen(K.m[i].sock) + 1);
    c->len = 0;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return -1;
    }
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Send one command to member i and read its one answer line. @return 0, or -1 (the
 * connection failed: the member is down, or the request's outcome is unknown). */
static int
rpc(struct conn *c, unsigned i, const char *line, char *answer)
{
    if (c->fd < 0 && conn_open(c, i) != 0) {
        return -1;
    }
    size_t n = strlen(line);
    if (send(c->fd, line, n, MSG_NOSIGNAL) != (ssize_t)n) {
        conn_close(c);
        return -1;
    }
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t l = (size_t)(nl - c->buf);
            if (l >= ANSWER_MAX) {
                kt_fail("answer too long from member %u", i + 1);
            }
            memcpy(answer, c->buf, l);
            answer[l] = '\0';
            c->len -= l + 1;
            memmove(c->buf, nl + 1, c->len);
            return 0;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0 || c->len + (size_t)r >= sizeof(c->buf)) {
            conn_close(c);
            return -1;
        }
        c->len += (size_t)r;
    }
}

/* The slot of the member with node id @p id, or MEMBERS. */
static unsigned
slot_of(unsigned id)
{
    for (unsigned i = 0; i < MEMBERS; i++) {
        if (id != 0 && atomic_load(&K.m[i].id) == id) {
            return i;
        }
    }
    return MEMBERS;
}

static void
record(struct writer *w, const struct op *o)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        w->ops = realloc(w->ops, w->cap * sizeof(*w->ops));
        if (w->ops == NULL) {
            kt_fail("out of memory");
        }
    }
    w->ops[w->n++] = *o;
}

/* Parse "VALUE <version> w<writer>-<seq>" or "NOTFOUND" into a read. @return 0, or -1. */
static int
parse_read(const char *a, struct op *o)
{
    unsigned writer;
    uint64_t version, seq;
    if (strcmp(a, "NOTFOUND") == 0) {
        o->version = 0;
        return 0;
    }
    if (sscanf(a, "VALUE %" SCNu64 " w%u-%" SCNu64, &version, &writer, &seq) != 3) {
        return -1;
    }
    o->version = version;
    o->writer = writer;
    o->seq = seq;
    return 0;
}

/*
 * Run one operation to its end on the member the writer believes leads, following NOTLEADER
 * (a NOTLEADER proposed nothing: the same operation is sent again). A write whose connection
 * broke or that was answered ERR is recorded with an unknown outcome.
 */
static void
writer_op(struct writer *w, unsigned *target, struct op *o, const char *line)
{
    char a[ANSWER_MAX];
    for (;;) {
        if (atomic_load(&K.stop)) {
            return;
        }
        o->start_ns = now_ns();
        o->member_id = atomic_load(&K.m[*target].id);
        int rc = rpc(&w->c[*target], *target, line, a);
        o->end_ns = now_ns();
        unsigned id;
        if (rc == 0 && sscanf(a, "NOTLEADER %u", &id) == 1) {
            unsigned slot = slot_of(id);
            *target = slot < MEMBERS && slot != *target ? slot : (*target + 1) % MEMBERS;
            ct_sleep_ms(id == 0 ? 10 : 1);
            continue;
        }
        if (o->kind == OP_REG_GET) {
            if (rc == 0 && parse_read(a, o) == 0) {
                o->outcome = OUT_READ;
                record(w, o);
            } else if (rc == 0 && strncmp(a, "ERR ", 4) != 0) {
                kt_fail("member %u answered '%s' to '%s'", *target + 1, a, line);
            }
        } else if (rc == 0 && sscanf(a, "OK %" SCNu64, &o->version) == 1) {
            o->outcome = OUT_ACKED;
            record(w, o);
            atomic_fetch_add(&K.acked, 1);
        } else if (rc != 0 || strncmp(a, "ERR ", 4) == 0) {
            o->outcome = OUT_UNKNOWN;
            o->version = 0;
            record(w, o);
        } else {
            kt_fail("member %u answered '%s' to '%s'", *target + 1, a, line);
        }
        if (rc != 0 || a[0] == 'E') {
            *target = (*target + 1) % MEMBERS;
            ct_sleep_ms(5);
        }
        return;
    }
}

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    unsigned target = w->id % MEMBERS;
    char line[128];
    while (!atomic_load(&K.stop)) {
        uint64_t r = tu_rand(&w->rng);
        struct op o = { .writer = w->id, .reg = (uint16_t)((r >> 8) % REGISTERS) };
        switch (r % 4) {
        case 0:
        case 1:
            o.kind = OP_UNIQUE;
            o.seq = ++w->seq;
            snprintf(line, sizeof(line), "put u%u-%" PRIu64 " v%u-%" PRIu64 "\n", w->id, o.seq,
                     w->id, o.seq);
            break;
        case 2:
            o.kind = OP_REG_PUT;
            o.seq = ++w->seq;
            snprintf(line, sizeof(line), "put r%u w%u-%" PRIu64 "\n", o.reg, w->id, o.seq);
            break;
        default:
            o.kind = OP_REG_GET;
            snprintf(line, sizeof(line), "get r%u\n", o.reg);
            break;
        }
        writer_op(w, &target, &o, line);
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        conn_close(&w->c[i]);
    }
    return NULL;
}

/* The answer of member i to one command on a connection of its own; "" when it is down. */
static void
ask(unsigned i, const char *line, char *answer)
{
    struct conn c = { .fd = -1 };
    if (rpc(&c, i, line, answer) != 0) {
        answer[0] = '\0';
    }
    conn_close(&c);
}

/* The index of the member that leads with its first barrier applied, within @p ms, or
 * MEMBERS when none does. */
static unsigned
find_leader(unsigned ms)
{
    char a[ANSWER_MAX];
    uint64_t end = now_ns() + (uint64_t)ms * 1000000u;
    do {
        for (unsigned i = 0; i < MEMBERS; i++) {
            if (K.m[i].pid > 0) {
                ask(i, "status\n", a);
                if (strstr(a, " role=leader ") != NULL && strstr(a, " ready=1 ") != NULL) {
                    return i;
                }
            }
        }
        ct_sleep_ms(10);
    } while (now_ns() < end);
    return MEMBERS;
}

/* Wait (10 s at most) until member i answers status. */
static void
wait_up(unsigned i)
{
    char a[ANSWER_MAX];
    for (int t = 0; t < 1000; t++) {
        ask(i, "status\n", a);
        if (strncmp(a, "STATUS ", 7) == 0) {
            return;
        }
        ct_sleep_ms(10);
    }
    kt_fail("member %u does not answer 10 s after its start", i + 1);
}

/* Wait (10 s at most) until one more write than @p before is acknowledged. */
static void
wait_progress(unsigned long before, unsigned cycle)
{
    for (int t = 0; t < 1000; t++) {
        if (atomic_load(&K.acked) > before) {
            return;
        }
        check_alive();
        ct_sleep_ms(10);
    }
    kt_fail("no write acknowledged within 10 s after kill cycle %u", cycle);
}

/*
 * Hand leadership from the leader to another member under load ("transfer ID"): it moves, or
 * the transfer times out (ERR -110), or another change is in flight (ERR -16), or the leader
 * lost its role meanwhile (NOTLEADER).
 */
static void
transfer_leader(uint64_t *rng, unsigned cycle)
{
    char line[32], a[ANSWER_MAX];
    unsigned leader = find_leader(5000);
    if (leader == MEMBERS) {
        kt_fail("no leader within 5 s before the transfer of cycle %u", cycle);
    }
    unsigned target = (leader + 1 + (unsigned)(tu_rand(rng) % (MEMBERS - 1))) % MEMBERS;
    unsigned target_id = atomic_load(&K.m[target].id);
    snprintf(line, sizeof(line), "transfer %u\n", target_id);
    ask(leader, line, a);
    unsigned id = 0;
    int moved = sscanf(a, "OK %u", &id) == 1 && id == target_id;
    if (!moved && strncmp(a, "ERR -110 ", 9) != 0 && strncmp(a, "ERR -16 ", 8) != 0 &&
        strncmp(a, "NOTLEADER ", 10) != 0) {
        kt_fail("member %u answers '%s' to '%s'", leader + 1, a, "transfer");
    }
    K.transfers += moved;
}

/* The role of member @p id in a status line's member list: 0 absent, 1 non-voter, 2 voter. */
static int
member_role(const char *status, unsigned id)
{
    const char *p = strstr(status, " members=");
    char head[24];
    int n = snprintf(head, sizeof(head), "%u@", id);
    for (p = p != NULL ? p + 9 : NULL; p != NULL && *p != '\0';) {
        if (strncmp(p, head, (size_t)n) == 0) {
            const char *slash = strchr(p, '/');
            return slash != NULL && strncmp(slash, "/voter", 6) == 0 ? 2 : 1;
        }
        p = strchr(p, ',');
        p = p != NULL ? p + 1 : NULL;
    }
    return 0;
}

/*
 * Drive the configuration until member @p id is absent (@p addr NULL) or a voter at @p addr,
 * as the leader reports it: "remove ID" or "add ID ADDR" on whichever member leads, again after
 * any answer that did not get there (a change cut by an election may leave it a non-voter,
 * which is removed and added again). 10 s at most.
 */
static void
change_until(unsigned id, const char *addr, unsigned cycle)
{
    char line[96], a[ANSWER_MAX];
    for (int t = 0; t < 100; t++) {
        unsigned leader = find_leader(5000);
        if (leader == MEMBERS) {
            kt_fail("no leader within 5 s during the replacement of cycle %u", cycle);
        }
        ask(leader, "status\n", a);
        int role = member_role(a, id);
        if ((addr == NULL && role == 0) || (addr != NULL && role == 2)) {
            return;
        }
        if (addr == NULL || role == 1) {
            snprintf(line, sizeof(line), "remove %u\n", id);
        } else {
            snprintf(line, sizeof(line), "add %u %s\n", id, addr);
        }
        ask(leader, line, a);
        if (strcmp(a, "OK") != 0) {
            ct_sleep_ms(100);
        }
    }
    kt_fail("member %u is not %s after 100 tries (cycle %u)", id, addr ? "a voter" : "removed",
            cycle);
}

/*
 * A crash in the middle of a membership change: send @p line ("add ..." or "remove ...") to the
 * leader, SIGKILL the leader a moment later (before, during or after the change's commit) and
 * restart it. change_until() then finds out where the change stands and finishes it.
 */
static void
crash_during(const char *line, uint64_t *rng, unsigned cycle)
{
    struct conn c = { .fd = -1 };
    unsigned leader = find_leader(5000);
    if (leader == MEMBERS) {
        kt_fail("no leader within 5 s during the replacement of cycle %u", cycle);
    }
    if (conn_open(&c, leader) == 0) {
        ssize_t n = send(c.fd, line, strlen(line), MSG_NOSIGNAL);
        (void)n; /* whatever it did, change_until() looks at the outcome */
    }
    ct_sleep_ms((unsigned)(tu_rand(rng) % 80));
    member_kill(leader);
    conn_close(&c);
    ct_sleep_ms(20 + (unsigned)(tu_rand(rng) % 50));
    member_start(leader);
    wait_up(leader);
    K.crashed_changes++;
}

/*
 * Replace a follower by a fresh member: SIGKILL it, remove it from the configuration, wipe its
 * directory, start a member with a new id at the same address with --join, and add it (as a
 * non-voter, promoted once it caught up from nothing: a snapshot install).
 */
static void
replace_member(uint64_t *rng, unsigned cycle)
{
    unsigned leader = find_leader(5000);
    if (leader == MEMBERS) {
        kt_fail("no leader within 5 s before the replacement of cycle %u", cycle);
    }
    unsigned f = (leader + 1 + (unsigned)(tu_rand(rng) % (MEMBERS - 1))) % MEMBERS;
    struct member *m = &K.m[f];
    char line[96];
    member_kill(f);
    if (tu_rand(rng) % 2 == 0) {
        snprintf(line, sizeof(line), "remove %u\n", atomic_load(&m->id));
        crash_during(line, rng, cycle);
    }
    change_until(atomic_load(&m->id), NULL, cycle);
    tu_rmrf(m->dir);
    atomic_store(&m->id, K.next_id++);
    m->join = 1;
    member_start(f);
    wait_up(f);
    if (tu_rand(rng) % 2 == 0) {
        snprintf(line, sizeof(line), "add %u %s\n", atomic_load(&m->id), m->addr);
        crash_during(line, rng, cycle);
    }
    change_until(atomic_load(&m->id), m->addr, cycle);
    K.replaced++;
}

/* Kill the leader (even cycles) or a follower (odd ones), wait a little, restart it. */
static void
kill_cycles(unsigned cycles, uint64_t *rng)
{
    for (unsigned cycle = 0; cycle < cycles; cycle++) {
        check_alive();
        if (cycle % 10 == 5) {
            unsigned long before = atomic_load(&K.acked);
            replace_member(rng, cycle);
            wait_progress(before, cycle);
            continue;
        }
        unsigned leader = find_leader(5000);
        unsigned victim = leader;
        if (leader == MEMBERS) {
            kt_fail("no leader within 5 s before kill cycle %u", cycle);
        }
        if (cycle % 2 == 1) {
            victim = (leader + 1 + (unsigned)(tu_rand(rng) % (MEMBERS - 1))) % MEMBERS;
        }
        ct_sleep_ms((unsigned)(tu_rand(rng) % 60));
        member_kill(victim);
        ct_sleep_ms(20 + (unsigned)(tu_rand(rng) % 100));
        unsigned long before = atomic_load(&K.acked);
        member_start(victim);
        wait_up(victim);
        wait_progress(before, cycle);
        if (cycle % 3 == 2) {
            before = atomic_load(&K.acked);
            transfer_leader(rng, cycle);
            wait_progress(before, cycle);
        }
    }
}

/* Parse "version=<n>" and "commit=... applied=..." of a status line. */
static uint64_t
status_field(const char *a, const char *name)
{
    const char *p = strstr(a, name);
    return p != NULL ? strtoull(p + strlen(name), NULL, 10) : UINT64_MAX;
}

/* Wait (15 s at most) until every member applied the same latest version, twice in a row. */
static uint64_t
converge(void)
{
    char a[ANSWER_MAX];
    uint64_t last = UINT64_MAX;
    for (int t = 0; t < 1500; t++) {
        uint64_t v[MEMBERS];
        for (unsigned i = 0; i < MEMBERS; i++) {
            ask(i, "status\n", a);
            v[i] = status_field(a, " version=");
        }
        int same = v[0] != UINT64_MAX && v[0] == v[1] && v[1] == v[2];
        if (same && v[0] == last) {
            return last;
        }
        last = same ? v[0] : UINT64_MAX;
        ct_sleep_ms(10);
    }
    kt_fail("members do not converge to one version within 15 s");
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Up to this many keys that fail check 1 or 2 are printed (every member's answer), then the
 * test fails with the counts of all of them. */
#define BAD_KEYS_SHOWN 20

/* Every member's answer to "lget KEY" for the unique write @p o, into a[]. */
static void
lget_all(struct conn *c, const struct op *o, char a[MEMBERS][ANSWER_MAX])
{
    char line[128];
    snprintf(line, sizeof(line), "lget u%u-%" PRIu64 "\n", o->writer, o->seq);
    for (unsigned i = 0; i < MEMBERS; i++) {
        if (rpc(&c[i], i, line, a[i]) != 0) {
            kt_fail("member %u does not answer lget", i + 1);
        }
    }
}

/* Check 1 or 2 on one unique write: 0, or 1 (printed while fewer than BAD_KEYS_SHOWN were). */
static int
check_one_write(struct conn *c, const struct op *o, unsigned *missing, size_t shown)
{
    char a[MEMBERS][ANSWER_MAX], want[128];
    snprintf(want, sizeof(want), "VALUE %" PRIu64 " v%u-%" PRIu64, o->version, o->writer, o->seq);
    lget_all(c, o, a);
    int bad = 0;
    for (unsigned i = 0; i < MEMBERS; i++) {
        int off = o->outcome == OUT_ACKED ? strcmp(a[i], want) != 0 : strcmp(a[i], a[0]) != 0;
        missing[i] += off;
        bad |= off;
    }
    if (bad && shown < BAD_KEYS_SHOWN) {
        fprintf(stderr,
                "test_cluster_kill: %s write u%u-%" PRIu64 " (version %" PRIu64 ", index %" PRIu64
                ", answered by member id %u at wall clock %.3f, the "
                "members' trace time):",
                o->outcome == OUT_ACKED ? "acknowledged" : "unknown", o->writer, o->seq, o->version,
                o->version >> 16, o->member_id,
                (double)(K.t0_real + (o->end_ns - K.t0_mono)) / 1e9);
        for (unsigned i = 0; i < MEMBERS; i++) {
            fprintf(stderr, " member %u (id %u) '%s';", i + 1, atomic_load(&K.m[i].id), a[i]);
        }
        fprintf(stderr, "\n");
    }
    return bad;
}

/* Check 1 and 2 for every write: what every member holds (lget) against what was answered.
 * Every key is checked before a failure, which prints every member's answer for the first
 * keys that fail and how many fail on each member. */
static void
check_writes(void)
{
    struct conn c[MEMBERS];
    size_t nacked = 0, bad = 0;
    unsigned missing[MEMBERS] = { 0 };
    uint64_t *versions = NULL;
    for (unsigned i = 0; i < MEMBERS; i++) {
        c[i] = (struct conn){ .fd = -1 };
    }
    for (unsigned wi = 0; wi < WRITERS; wi++) {
        struct writer *w = &K.w[wi];
        versions = realloc(versions, (nacked + w->n) * sizeof(*versions) + 1);
        for (size_t k = 0; k < w->n; k++) {
            const struct op *o = &w->ops[k];
            if (o->kind == OP_UNIQUE) {
                bad += (size_t)check_one_write(c, o, missing, bad);
            }
            if ((o->kind == OP_UNIQUE || o->kind == OP_REG_PUT) && o->outcome == OUT_ACKED) {
                versions[nacked++] = o->version;
            }
        }
    }
    if (bad > 0) {
        kt_fail("%zu writes not alike on every member (acknowledged: not with their version; "
                "unknown: not the same everywhere); differing keys per member: %u, %u, %u",
                bad, missing[0], missing[1], missing[2]);
    }
    qsort(versions, nacked, sizeof(*versions), cmp_u64);
    for (size_t k = 1; k < nacked; k++) {
        if (versions[k] == versions[k - 1]) {
            kt_fail("two acknowledged writes share version %" PRIu64, versions[k]);
        }
    }
    fprintf(stderr, "test_cluster_kill: %zu acknowledged writes on every member\n", nacked);
    free(versions);
    for (unsigned i = 0; i < MEMBERS; i++) {
        conn_close(&c[i]);
    }
}

/* The register operations of one register, for check 3. */
struct reg_ops {
    const struct op **writes; /* acknowledged writes, by end time */
    const struct op **reads;  /* reads, by end time */
    size_t nw, nr;
};

static int
cmp_end(const void *a, const void *b)
{
    const struct op *x = *(const struct op *const *)a, *y = *(const struct op *const *)b;
    return x->end_ns < y->end_ns ? -1 : x->end_ns > y->end_ns;
}

/* The highest version among ops[0..n) (sorted by end) that ended before @p t. */
static uint64_t
max_before(const struct op **ops, size_t n, uint64_t t)
{
    uint64_t best = 0;
    for (size_t k = 0; k < n && ops[k]->end_ns < t; k++) {
        best = ops[k]->version > best ? ops[k]->version : best;
    }
    return best;
}

/* The write a read returned: it exists, on the read's register, proposed before the read
 * ended, and with its acknowledged version if it was acknowledged. */
static void
check_read_source(const struct op *r)
{
    if (r->version == 0) {
        return;
    }
    const struct op *w = NULL;
    if (r->writer < WRITERS) {
        for (size_t k = 0; k < K.w[r->writer].n && w == NULL; k++) {
            const struct op *o = &K.w[r->writer].ops[k];
            w = o->kind == OP_REG_PUT && o->seq == r->seq ? o : NULL;
        }
    }
    if (w == NULL || w->reg != r->reg || w->start_ns >= r->end_ns) {
        kt_fail("a read of r%u returned w%u-%" PRIu64 ", which no write on it proposed before",
                r->reg, r->writer, r->seq);
    }
    if (w->outcome == OUT_ACKED && w->version != r->version) {
        kt_fail("a read of r%u returned w%u-%" PRIu64 " at version %" PRIu64
                ", acknowledged at %" PRIu64,
                r->reg, r->writer, r->seq, r->version, w->version);
    }
}

static void
check_register(struct reg_ops *g, unsigned reg)
{
    qsort(g->writes, g->nw, sizeof(*g->writes), cmp_end);
    qsort(g->reads, g->nr, sizeof(*g->reads), cmp_end);
    for (size_t k = 0; k < g->nr; k++) {
        const struct op *r = g->reads[k];
        uint64_t w = max_before(g->writes, g->nw, r->start_ns);
        uint64_t p = max_before(g->reads, g->nr, r->start_ns);
        if (r->version < w) {
            kt_fail("stale read of r%u: version %" PRIu64 " after a write acknowledged at %" PRIu64,
                    reg, r->version, w);
        }
        if (r->version < p) {
            kt_fail("stale read of r%u: version %" PRIu64 " after a read returned %" PRIu64, reg,
                    r->version, p);
        }
        check_read_source(r);
    }
    char line[32], a[ANSWER_MAX], first[ANSWER_MAX] = "";
    struct op final = { .reg = (uint16_t)reg, .end_ns = UINT64_MAX };
    snprintf(line, sizeof(line), "lget r%u\n", reg);
    for (unsigned i = 0; i < MEMBERS; i++) {
        ask(i, line, a);
        if (i > 0 && strcmp(a, first) != 0) {
            kt_fail("r%u: member 1 holds '%s', member %u '%s'", reg, first, i + 1, a);
        }
        memcpy(first, a, strlen(a) + 1);
    }
    if (parse_read(first, &final) != 0 ||
        final.version < max_before(g->writes, g->nw, UINT64_MAX)) {
        kt_fail("r%u ends as '%s', older than an acknowledged write", reg, first);
    }
    check_read_source(&final);
}

/* Check 3 on every register. */
static void
check_registers(void)
{
    size_t total = 0, reads = 0;
    for (unsigned wi = 0; wi < WRITERS; wi++) {
        total += K.w[wi].n;
    }
    for (unsigned reg = 0; reg < REGISTERS; reg++) {
        struct reg_ops g = { .writes = calloc(total + 1, sizeof(*g.writes)),
                             .reads = calloc(total + 1, sizeof(*g.reads)) };
        for (unsigned wi = 0; wi < WRITERS; wi++) {
            for (size_t k = 0; k < K.w[wi].n; k++) {
                const struct op *o = &K.w[wi].ops[k];
                if (o->reg == reg && o->kind == OP_REG_PUT && o->outcome == OUT_ACKED) {
                    g.writes[g.nw++] = o;
                } else if (o->reg == reg && o->kind == OP_REG_GET) {
                    g.reads[g.nr++] = o;
                }
            }
        }
        check_register(&g, reg);
        reads += g.nr;
        free(g.writes);
        free(g.reads);
    }
    fprintf(stderr, "test_cluster_kill: %zu linearizable reads checked\n", reads);
}

static void
setup_members(void)
{
    size_t off = 0;
    K.root = tu_tmpdir("cluster_kill");
    K.next_id = MEMBERS + 1;
    for (unsigned i = 0; i < MEMBERS; i++) {
        struct member *m = &K.m[i];
        atomic_store(&m->id, i + 1);
        snprintf(m->addr, sizeof(m->addr), "127.0.0.1:%u", free_port());
        snprintf(m->dir, sizeof(m->dir), "%s/m%u", K.root, i + 1);
        snprintf(m->log, sizeof(m->log), "%s/m%u.log", K.root, i + 1);
        /* A unix socket path is short (108 bytes): fall back to /tmp for a deep build tree. */
        if (strlen(K.root) + 8 < sizeof(m->sock)) {
            snprintf(m->sock, sizeof(m->sock), "%s/s%u", K.root, i + 1);
        } else {
            snprintf(m->sock, sizeof(m->sock), "/tmp/htkv-kill-%d-%u", (int)getpid(), i + 1);
        }
        off += (size_t)snprintf(K.peers + off, sizeof(K.peers) - off, "%s%u=%s", i ? "," : "",
                                i + 1, m->addr);
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        member_start(i);
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        wait_up(i);
    }
}

/* Lines of every member's log that contain @p what (how often something happened). */
static unsigned
count_in_logs(const char *what)
{
    unsigned n = 0;
    char line[1024];
    for (unsigned i = 0; i < MEMBERS; i++) {
        FILE *f = fopen(K.m[i].log, "re");
        while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
            n += strstr(line, what) != NULL;
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    return n;
}

/* Check 5: "quit" stops every member with exit status 0 (within 10 s). */
static void
stop_members(void)
{
    char a[ANSWER_MAX];
    for (unsigned i = 0; i < MEMBERS; i++) {
        ask(i, "quit\n", a);
        if (strcmp(a, "BYE") != 0) {
            kt_fail("member %u answers '%s' to quit", i + 1, a);
        }
    }
    for (unsigned i = 0; i < MEMBERS; i++) {
        int status = 0;
        pid_t r = 0;
        for (int t = 0; t < 1000 && r == 0; t++) {
            r = waitpid(K.m[i].pid, &status, WNOHANG);
            if (r == 0) {
                ct_sleep_ms(10);
            }
        }
        if (r != K.m[i].pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            kt_fail("member %u did not stop cleanly after quit (status %d)", i + 1, status);
        }
        K.m[i].pid = 0;
    }
}

static void
test_cluster_kill_loop(void **state)
{
    (void)state;
    const char *env = getenv("HTKV_CLUSTER_KILL_CYCLES");
    unsigned cycles = env != NULL ? (unsigned)strtoul(env, NULL, 10) : 30;
    K.seed = tu_seed("cluster_kill");
    uint64_t rng = K.seed;
    uint64_t t0 = now_ns();
    struct timespec real;
    clock_gettime(CLOCK_REALTIME, &real);
    K.t0_mono = t0;
    K.t0_real = (uint64_t)real.tv_sec * 1000000000u + (uint64_t)real.tv_nsec;
    setup_members();
    if (find_leader(10000) == MEMBERS) {
        kt_fail("no leader within 10 s of the start");
    }
    for (unsigned i = 0; i < WRITERS; i++) {
        struct writer *w = &K.w[i];
        w->id = i;
        w->rng = K.seed ^ (0x9e3779b97f4a7c15ull * (i + 1));
        for (unsigned j = 0; j < MEMBERS; j++) {
            w->c[j] = (struct conn){ .fd = -1 };
        }
        assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
    }
    kill_cycles(cycles, &rng);
    ct_sleep_ms(100);
    atomic_store(&K.stop, 1);
    for (unsigned i = 0; i < WRITERS; i++) {
        pthread_join(K.w[i].thread, NULL);
    }
    uint64_t v = converge();
    check_writes();
    check_registers();
    stop_members();
    fprintf(stderr,
            "test_cluster_kill: %u kill cycles (%u of them replaced the member, %u more kills of "
            "a leader during a membership change), %u leadership transfers, %u stores rebuilt "
            "after a torn write, last version %" PRIu64 ", %.1f s\n",
            cycles, K.replaced, K.crashed_changes, K.transfers,
            count_in_logs("lost the write it was applying"), v, (double)(now_ns() - t0) / 1e9);
    for (unsigned i = 0; i < WRITERS; i++) {
        free(K.w[i].ops);
    }
    tu_rmrf(K.root);
    free(K.root);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_kill_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
