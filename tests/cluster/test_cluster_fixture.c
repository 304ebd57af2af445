/*
 * test_cluster_fixture.c - the cluster's state machine under raft_fixture: in-process members,
 * virtual time, a real htkv store per member.
 *
 * Goal: replicas fed by raft never diverge and never lose or repeat an acknowledged write, through
 * elections, an isolated leader, message loss, kill and revive, and snapshot installs. Method:
 * 3 and 5 members; every write puts a key of its own (so a write applied twice, or lost, shows in
 * that key's version); faults chosen by a seeded generator (HTKV_SEED replays a run); at the end
 * the cluster heals, a barrier makes every member apply everything committed, and every store
 * must hold every acknowledged write with its acknowledged version, the same latest version, and
 * byte-identical snapshots (htkv_snapshot_write).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <raft.h>
#include <raft/fixture.h>

#include <htkv/cluster.h>
#include <htkv/replication.h>

#include "cluster/entry.h"
#include "cluster/fsm.h"
#include "tests/support/testutil.h"

#define NODES_MAX 5
#define PEND_MAX 4096
#define REQS_MAX 8

/* One proposed entry of puts of keys [first, first + n). */
struct pend {
    struct raft_apply req;
    uint32_t first, n;
    bool done;
    int status;
    struct fsm_result res[REQS_MAX];
};

struct fx {
    struct raft_fixture f;
    unsigned n;
    char *dirs[NODES_MAX];
    htkv_db *db[NODES_MAX];
    struct cluster_fsm fsm[NODES_MAX];
    struct pend *pend[PEND_MAX];
    size_t npend;
    struct pend *last; /* the latest proposal, and its leader */
    unsigned last_leader;
    uint32_t next_key;
    uint64_t rng;
    bool expect_failed[NODES_MAX]; /* members whose state machine a test makes fail */
};

static void
key_of(uint32_t k, char out[16])
{
    snprintf(out, 16, "k%08u", k);
}

static size_t
val_of(uint32_t k, unsigned char out[64])
{
    size_t len = 8 + k % 57;
    tu_fill(out, len, k);
    return len;
}

/* The members' snapshot_bytes in the next fx_open() (0: snapshots by entries alone). */
static uint64_t fx_snap_bytes;

static struct fx *
fx_open(unsigned n, unsigned threshold, unsigned trailing, uint64_t seed)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    x->n = n;
    x->rng = seed;
    assert_int_equal(raft_fixture_initialize(&x->f), 0);
    for (unsigned i = 0; i < n; i++) {
        x->dirs[i] = tu_tmpdir("cluster-fx");
        htkv_config cfg;
        tu_config(&cfg, x->dirs[i], HTKV_SYNC_NEVER);
        x->db[i] = tu_open(&cfg);
        assert_int_equal(htkv_cfsm_init(&x->fsm[i], x->db[i], x->dirs[i], NULL, NULL), 0);
        /* raft_fixture 0.15 leaves its io at version 0 though it implements async_work (fixed
         * in 0.17.1), and raft_init refuses an FSM with asynchronous snapshots on it. raft_init
         * alone checks: the method goes back in after it, and the members take their snapshots
         * asynchronously, as htkv-node's do (each one 200 ms of virtual time while applies go
         * on). */
        int (*snapshot_async)(struct raft_fsm *, struct raft_buffer **, unsigned *) =
            x->fsm[i].fsm.snapshot_async;
        x->fsm[i].fsm.snapshot_async = NULL;
        assert_int_equal(raft_fixture_grow(&x->f, &x->fsm[i].fsm), 0);
        x->fsm[i].fsm.snapshot_async = snapshot_async;
        struct raft *r = raft_fixture_get(&x->f, i);
        r->io->version = 2;
        x->fsm[i].raft = r;
        raft_set_snapshot_threshold(r, threshold);
        htkv_cfsm_snapshot_policy(&x->fsm[i], threshold, fx_snap_bytes);
        raft_set_snapshot_trailing(r, trailing);
        raft_set_pre_vote(r, true); /* as htkv_cluster_open() sets it */
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&x->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&x->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&x->f), 0);
    return x;
}

static void
fx_close(struct fx *x)
{
    raft_fixture_close(&x->f);
    for (unsigned i = 0; i < x->n; i++) {
        assert_true(x->fsm[i].failed == x->expect_failed[i]);
        htkv_cfsm_fini(&x->fsm[i]);
        assert_int_equal(htkv_close(x->db[i]), 0);
        tu_rmrf(x->dirs[i]);
        free(x->dirs[i]);
    }
    for (size_t i = 0; i < x->npend; i++) {
        free(x->pend[i]);
    }
    free(x);
}

static void
on_applied(struct raft_apply *req, int status, void *result)
{
    struct pend *p = req->data;
    p->done = true;
    p->status = status;
    if (status == 0) {
        const struct fsm_results *res = result;
        assert_int_equal(res->count, p->n);
        memcpy(p->res, res->res, p->n * sizeof(p->res[0]));
    }
}

/* Encode @p n requests of @p ops (one op each) as one entry. */
static struct raft_buffer
encode(const struct htkv_cluster_op *ops, const int *kinds, uint32_t n)
{
    size_t bytes = ENTRY_HDR_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        bytes += htkv_entry_req_size(&ops[i], 1);
    }
    struct raft_buffer buf = { .base = raft_calloc(1, ENTRY_PAD(bytes)), .len = ENTRY_PAD(bytes) };
    assert_non_null(buf.base);
    htkv_entry_hdr_encode(buf.base, n);
    unsigned char *p = (unsigned char *)buf.base + ENTRY_HDR_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        htkv_entry_req_encode(p, kinds[i], &ops[i], 1);
        p += htkv_entry_req_size(&ops[i], 1);
    }
    return buf;
}

/* Propose an entry of 1..REQS_MAX puts of fresh keys on member @p i; NULL if it is not leader. */
static struct pend *
propose_puts(struct fx *x, unsigned i, uint32_t n)
{
    assert_true(x->npend < PEND_MAX);
    char keys[REQS_MAX][16];
    unsigned char vals[REQS_MAX][64];
    struct htkv_cluster_op ops[REQS_MAX];
    int kinds[REQS_MAX];
    struct pend *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    p->first = x->next_key;
    p->n = n;
    for (uint32_t j = 0; j < n; j++) {
        key_of(p->first + j, keys[j]);
        size_t vlen = val_of(p->first + j, vals[j]);
        ops[j] = (struct htkv_cluster_op){ .type = HTKV_CLUSTER_OP_PUT,
                                           .key = keys[j],
                                           .key_len = strlen(keys[j]),
                                           .val = vals[j],
                                           .val_len = vlen };
        kinds[j] = ENTRY_BATCH;
    }
    struct raft_buffer buf = encode(ops, kinds, n);
    p->req.data = p;
    if (raft_apply(raft_fixture_get(&x->f, i), &p->req, &buf, 1, on_applied) != 0) {
        raft_free(buf.base);
        free(p);
        return NULL;
    }
    x->next_key += n;
    x->pend[x->npend++] = p;
    return p;
}

/*
 * Propose a batch of puts on whoever leads now (if anyone), as a member does: only once its
 * previous entry is done (raft 0.15 commits only up to the leader's last stored entry; see
 * cluster/node_io.c, pump()).
 */
static void
propose_on_leader(struct fx *x)
{
    unsigned l = raft_fixture_leader_index(&x->f);
    if (l >= x->n || (x->last != NULL && !x->last->done && x->last_leader == l)) {
        return;
    }
    struct pend *p = propose_puts(x, l, 1 + (uint32_t)(tu_rand(&x->rng) % REQS_MAX));
    if (p != NULL) {
        x->last = p;
        x->last_leader = l;
    }
}

static unsigned
elect_any(struct fx *x)
{
    assert_true(raft_fixture_step_until_has_leader(&x->f, 10000));
    return raft_fixture_leader_index(&x->f);
}

static void
on_barrier(struct raft_barrier *req, int status)
{
    *(int *)req->data = status;
}

/* Heal everything, commit a barrier on the leader and wait until every member applied it. */
static void
converge(struct fx *x)
{
    for (unsigned i = 0; i < x->n; i++) {
        if (!raft_fixture_alive(&x->f, i)) {
            raft_fixture_revive(&x->f, i);
        }
        for (unsigned j = 0; j < x->n; j++) {
            if (i != j) {
                raft_fixture_reconnect(&x->f, i, j);
                raft_fixture_desaturate(&x->f, i, j);
            }
        }
    }
    for (int attempt = 0; attempt < 20; attempt++) {
        unsigned l = elect_any(x);
        struct raft_barrier b;
        int status = 1;
        b.data = &status;
        struct raft *r = raft_fixture_get(&x->f, l);
        if (raft_barrier(r, &b, on_barrier) != 0) {
            raft_fixture_step_until_elapsed(&x->f, 500);
            continue;
        }
        raft_index want = raft_last_index(r);
        for (int s = 0; s < 100000 && status == 1; s++) {
            raft_fixture_step(&x->f);
        }
        if (status == 0 && raft_fixture_step_until_applied(&x->f, x->n, want, 20000)) {
            return;
        }
    }
    fail_msg("the cluster did not converge");
}

/* Commit @p n barriers (as linearizable reads do), one at a time, on whoever leads. */
static void
barriers(struct fx *x, unsigned n)
{
    for (unsigned done = 0, tries = 0; done < n; tries++) {
        assert_true(tries < 10 * n);
        struct raft_barrier b;
        int status = 1;
        b.data = &status;
        if (raft_barrier(raft_fixture_get(&x->f, elect_any(x)), &b, on_barrier) != 0) {
            raft_fixture_step_until_elapsed(&x->f, 100);
            continue;
        }
        for (int s = 0; s < 100000 && status == 1; s++) {
            raft_fixture_step(&x->f);
        }
        assert_true(status != 1);
        done += status == 0;
    }
}

/* Every acknowledged write is in every store with its value and version; nothing else differs. */
static void
check_stores(struct fx *x)
{
    size_t acked = 0;
    for (size_t i = 0; i < x->npend; i++) {
        struct pend *p = x->pend[i];
        if (!p->done || p->status != 0) {
            continue;
        }
        for (uint32_t j = 0; j < p->n; j++, acked++) {
            char key[16];
            unsigned char want[64], got[64];
            key_of(p->first + j, key);
            size_t wlen = val_of(p->first + j, want), glen = 0;
            assert_int_equal(p->res[j].rc, 0);
            for (unsigned m = 0; m < x->n; m++) {
                uint64_t ver = 0;
                assert_int_equal(
                    htkv_get_version(x->db[m], key, strlen(key), got, sizeof(got), &glen, &ver), 0);
                assert_int_equal(ver, p->res[j].version); /* not lost, not applied twice */
                assert_memory_equal(got, want, wlen);
                assert_int_equal(glen, wlen);
            }
        }
    }
    uint64_t v0 = 0;
    size_t len0 = 0;
    unsigned char *snap0 = NULL;
    for (unsigned m = 0; m < x->n; m++) {
        uint64_t v = 0;
        assert_int_equal(htkv_latest_version(x->db[m], &v), 0);
        char path[4200];
        snprintf(path, sizeof(path), "%s/check.snap", x->dirs[m]);
        assert_int_equal(htkv_snapshot_write(x->db[m], path), 0);
        size_t len = 0;
        unsigned char *snap = tu_read_whole(path, &len);
        assert_non_null(snap);
        if (m == 0) {
            v0 = v, len0 = len, snap0 = snap;
            continue;
        }
        assert_int_equal(v, v0);
        assert_int_equal(len, len0);
        assert_memory_equal(snap, snap0, len);
        free(snap);
    }
    free(snap0);
    assert_true(acked > 0);
}

/* Step the cluster @p ms of virtual time, proposing an entry every 5..24 ms of it. */
static void
run_load(struct fx *x, unsigned ms)
{
    raft_time now = raft_fixture_time(&x->f), end = now + ms, next = now;
    while (now < end) {
        if (now >= next) {
            propose_on_leader(x);
            next = now + 5 + tu_rand(&x->rng) % 20;
        }
        raft_fixture_step(&x->f);
        now = raft_fixture_time(&x->f);
    }
}

/* Goal: writes replicate to every member of 3 and 5. Method: load, converge, compare. */
static void
run_replicate(unsigned n, const char *name)
{
    uint64_t seed = tu_seed(name);
    struct fx *x = fx_open(n, 64, 16, seed);
    elect_any(x);
    run_load(x, 3000);
    converge(x);
    check_stores(x);
    fx_close(x);
}

static void
test_cluster_fixture_three_members_replicate(void **state)
{
    (void)state;
    run_replicate(3, "cluster_fixture_three");
}

static void
test_cluster_fixture_five_members_replicate(void **state)
{
    (void)state;
    run_replicate(5, "cluster_fixture_five");
}

static bool
deposed_and_replaced(struct raft_fixture *f, void *arg)
{
    unsigned old = *(unsigned *)arg;
    unsigned l = raft_fixture_leader_index(f);
    return raft_state(raft_fixture_get(f, old)) != RAFT_LEADER && l < f->n && l != old;
}

/*
 * Goal: an isolated leader is deposed; the writes it accepted alone are never acknowledged and
 * never applied anywhere, and a barrier on it fails. Method: cut the leader off, propose on it,
 * step until another member leads, write there, heal, converge, check.
 */
static void
run_isolated_leader(unsigned n, const char *name)
{
    struct fx *x = fx_open(n, 64, 16, tu_seed(name));
    unsigned old = elect_any(x);
    run_load(x, 1000);
    for (unsigned j = 0; j < n; j++) {
        if (j != old) {
            raft_fixture_saturate(&x->f, old, j);
            raft_fixture_saturate(&x->f, j, old);
        }
    }
    size_t first = x->npend;
    for (int i = 0; i < 5; i++) {
        assert_non_null(propose_puts(x, old, 3));
    }
    size_t last = x->npend;
    struct raft_barrier b;
    int bstatus = 1;
    b.data = &bstatus;
    assert_int_equal(raft_barrier(raft_fixture_get(&x->f, old), &b, on_barrier), 0);
    assert_true(raft_fixture_step_until(&x->f, deposed_and_replaced, &old, 20000));
    run_load(x, 1000);
    converge(x);
    check_stores(x);
    assert_int_not_equal(bstatus, 0);
    assert_int_not_equal(bstatus, 1);
    for (size_t i = first; i < last; i++) {
        struct pend *p = x->pend[i];
        assert_true(p->done);
        assert_int_not_equal(p->status, 0); /* never acknowledged */
        for (uint32_t j = 0; j < p->n; j++) {
            char key[16];
            key_of(p->first + j, key);
            for (unsigned m = 0; m < n; m++) {
                assert_int_equal(htkv_contains(x->db[m], key, strlen(key)), 0);
            }
        }
    }
    fx_close(x);
}

static void
test_cluster_fixture_isolated_leader_three(void **state)
{
    (void)state;
    run_isolated_leader(3, "cluster_fixture_isolated3");
}

static void
test_cluster_fixture_isolated_leader_five(void **state)
{
    (void)state;
    run_isolated_leader(5, "cluster_fixture_isolated5");
}

/* One random fault: drop or restore the messages of one direction of a link, kill or revive a
 * member (at most a minority dead at a time), or change how long a member's messages take to
 * arrive (1-200 ms of virtual time; 15 by default) or its log appends to be stored (1-100 ms; 10
 * by default). */
static void
random_fault(struct fx *x)
{
    unsigned a = (unsigned)(tu_rand(&x->rng) % x->n), b = (unsigned)(tu_rand(&x->rng) % x->n);
    unsigned dead = 0;
    for (unsigned i = 0; i < x->n; i++) {
        dead += !raft_fixture_alive(&x->f, i);
    }
    switch (tu_rand(&x->rng) % 6) {
    case 4:
        raft_fixture_set_network_latency(&x->f, a, 1 + (unsigned)(tu_rand(&x->rng) % 200));
        break;
    case 5:
        raft_fixture_set_disk_latency(&x->f, a, 1 + (unsigned)(tu_rand(&x->rng) % 100));
        break;
    case 0: /* messages from a to b are lost from now on */
        if (a != b) {
            raft_fixture_saturate(&x->f, a, b);
        }
        break;
    case 1:
        if (a != b) {
            raft_fixture_desaturate(&x->f, a, b);
        }
        break;
    case 2:
        if (raft_fixture_alive(&x->f, a) && dead + 1 < (x->n + 1) / 2) {
            raft_fixture_kill(&x->f, a);
        }
        break;
    default:
        if (!raft_fixture_alive(&x->f, a)) {
            raft_fixture_revive(&x->f, a);
        }
        break;
    }
}

/*
 * Goal: message loss, partitions, kill/revive and changing network and disk latencies under
 * load lose no acknowledged write and leave identical stores. Method: 5 members, a seeded fault
 * (random_fault()) every 300 ms of virtual time for 30 s,
 * then heal and check. No snapshots here: raft 0.15's fixture truncates its in-memory log as if
 * it started at index 1 (ioMethodTruncate() ignores the snapshot offset), so a member that took
 * a snapshot and then drops conflicting entries reads past its array (found by ASan); snapshots
 * are covered by test_cluster_fixture_snapshot_install, where no log is truncated.
 */
static void
test_cluster_fixture_faults_under_load(void **state)
{
    (void)state;
    struct fx *x = fx_open(5, 1u << 30, 8, tu_seed("cluster_fixture_faults"));
    elect_any(x);
    for (int round = 0; round < 100; round++) {
        random_fault(x);
        run_load(x, 300);
    }
    converge(x);
    check_stores(x);
    fx_close(x);
}

/*
 * Goal: a member that fell behind the leader's trailing log catches up by installing a snapshot,
 * and a snapshot taken while applies go on holds its index's moment (the stores end identical).
 * Method: 3 members, threshold 16, trailing 4; kill a follower, write 300 entries, revive it;
 * snapshots take 200 ms of virtual time on a worker, and entries are applied meanwhile.
 */
static void
test_cluster_fixture_snapshot_install(void **state)
{
    (void)state;
    struct fx *x = fx_open(3, 16, 4, tu_seed("cluster_fixture_snapshot"));
    unsigned l = elect_any(x);
    unsigned lag = (l + 1) % 3;
    run_load(x, 500);
    raft_fixture_kill(&x->f, lag);
    while (raft_last_index(raft_fixture_get(&x->f, l)) < 300) {
        run_load(x, 100);
        l = elect_any(x);
    }
    raft_fixture_revive(&x->f, lag);
    converge(x);
    check_stores(x);
    assert_true(x->fsm[lag].restores >= 1);
    /* Snapshots were taken asynchronously: entries were applied while one was written. */
    uint64_t taken = 0, under = 0;
    for (unsigned i = 0; i < 3; i++) {
        taken += x->fsm[i].snapshots;
        under += x->fsm[i].applied_under_snapshot;
    }
    assert_true(taken >= 1);
    assert_true(under >= 1);
    fx_close(x);
}

/*
 * Goal: with snapshot_bytes, barriers (linearizable reads: entries without writes) do not bring
 * snapshots on before FSM_SNAP_STRETCH times snapshot_threshold entries, and writes of
 * snapshot_bytes do after snapshot_threshold. Method: 3 members, threshold 16, 8 KiB; 984
 * barriers: no snapshot; 5 s of writes (~25 KiB): a snapshot on every member; 1,100 barriers:
 * one or two more, not one every 16.
 */
static void
test_cluster_fixture_snapshots_by_bytes(void **state)
{
    (void)state;
    fx_snap_bytes = 8 * 1024;
    struct fx *x = fx_open(3, 16, 4, tu_seed("cluster_fixture_snap_bytes"));
    fx_snap_bytes = 0;
    elect_any(x);
    barriers(x, 16 * FSM_SNAP_STRETCH - 40);
    uint64_t before[3];
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(x->fsm[i].snapshots, 0);
    }
    run_load(x, 5000);
    converge(x);
    for (unsigned i = 0; i < 3; i++) {
        assert_true(x->fsm[i].snapshots >= 1);
        before[i] = x->fsm[i].snapshots;
    }
    barriers(x, 16 * FSM_SNAP_STRETCH + 76);
    converge(x);
    for (unsigned i = 0; i < 3; i++) {
        /* One after 16 entries if the writes left enough bytes, one after the stretch: never
         * one every 16 barriers (about 68 here). */
        assert_true(x->fsm[i].snapshots > before[i]);
        assert_true(x->fsm[i].snapshots <= before[i] + 2);
    }
    check_stores(x);
    fx_close(x);
}

/*
 * Goal: conditions and deletes are decided in log order, the same on every member, and a
 * malformed entry is refused identically everywhere. Method: one entry of five requests whose
 * conditions depend on the requests before them in the same entry; then a garbage entry.
 */
static void
test_cluster_fixture_conditions_in_log_order(void **state)
{
    (void)state;
    struct fx *x = fx_open(3, 64, 16, tu_seed("cluster_fixture_conditions"));
    unsigned l = elect_any(x);
    struct raft *r = raft_fixture_get(&x->f, l);
    raft_index idx = raft_last_index(r) + 1;
    /* Each request is one op here except the two conditional batches, built by hand below. */
    struct htkv_cluster_op put = {
        .type = HTKV_CLUSTER_OP_PUT, .key = "cas", .key_len = 3, .val = "a", .val_len = 1
    };
    struct htkv_cluster_op cond0[2] = {
        { .type = HTKV_CLUSTER_OP_CHECK, .key = "cas", .key_len = 3, .version = 0 },
        { .type = HTKV_CLUSTER_OP_PUT, .key = "cas", .key_len = 3, .val = "b", .val_len = 1 },
    };
    struct htkv_cluster_op cond1[2] = {
        { .type = HTKV_CLUSTER_OP_CHECK,
          .key = "cas",
          .key_len = 3,
          .version = FSM_VERSION(idx, 1) },
        { .type = HTKV_CLUSTER_OP_PUT, .key = "cas", .key_len = 3, .val = "c", .val_len = 1 },
    };
    struct htkv_cluster_op del = { .type = HTKV_CLUSTER_OP_DELETE, .key = "none", .key_len = 4 };
    struct htkv_cluster_op del2 = { .type = HTKV_CLUSTER_OP_DELETE, .key = "cas", .key_len = 3 };
    size_t sizes[5] = { htkv_entry_req_size(&put, 1), htkv_entry_req_size(cond0, 2),
                        htkv_entry_req_size(cond1, 2), htkv_entry_req_size(&del, 1),
                        htkv_entry_req_size(&del2, 1) };
    size_t bytes = ENTRY_HDR_BYTES + sizes[0] + sizes[1] + sizes[2] + sizes[3] + sizes[4];
    struct raft_buffer buf = { .base = raft_calloc(1, ENTRY_PAD(bytes)), .len = ENTRY_PAD(bytes) };
    unsigned char *p = buf.base;
    htkv_entry_hdr_encode(p, 5);
    p += ENTRY_HDR_BYTES;
    htkv_entry_req_encode(p, ENTRY_BATCH, &put, 1);
    p += sizes[0];
    htkv_entry_req_encode(p, ENTRY_BATCH, cond0, 2);
    p += sizes[1];
    htkv_entry_req_encode(p, ENTRY_BATCH, cond1, 2);
    p += sizes[2];
    htkv_entry_req_encode(p, ENTRY_DELETE_ONE, &del, 1);
    p += sizes[3];
    htkv_entry_req_encode(p, ENTRY_BATCH, &del2, 1);
    struct pend *pe = calloc(1, sizeof(*pe));
    pe->n = 5;
    pe->req.data = pe;
    assert_int_equal(raft_apply(r, &pe->req, &buf, 1, on_applied), 0);
    assert_int_equal(pe->req.index, idx);
    assert_true(raft_fixture_step_until_applied(&x->f, 3, idx, 5000));
    assert_true(pe->done);
    assert_int_equal(pe->status, 0);
    int want_rc[5] = { 0, HTKV_ECONFLICT, 0, HTKV_ENOTFOUND, 0 };
    uint64_t want_ver[5] = { FSM_VERSION(idx, 1), 0, FSM_VERSION(idx, 3), 0, FSM_VERSION(idx, 5) };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(pe->res[i].rc, want_rc[i]);
        assert_int_equal(pe->res[i].version, want_ver[i]);
    }
    free(pe);
    /* A malformed entry: every request fails with -EINVAL everywhere; members go on. */
    struct raft_buffer junk = { .base = raft_malloc(16), .len = 16 };
    memset(junk.base, 0xAB, 16);
    struct pend *pj = calloc(1, sizeof(*pj));
    pj->req.data = pj;
    assert_int_equal(raft_apply(r, &pj->req, &junk, 1, on_applied), 0);
    assert_true(raft_fixture_step_until_applied(&x->f, 3, pj->req.index, 5000));
    assert_true(pj->done);
    free(pj);
    run_load(x, 500);
    converge(x);
    check_stores(x);
    for (unsigned m = 0; m < 3; m++) {
        assert_int_equal(htkv_contains(x->db[m], "cas", 3), 0); /* deleted by request 5 */
    }
    fx_close(x);
}

static unsigned fail_calls;

static void
count_fail(struct cluster_fsm *f)
{
    (void)f;
    fail_calls++;
}

/*
 * Goal: a failure of a member's store that is not a verdict of the log (here: the store turned
 * read-only) stops that member's state machine loudly and for good, without writing anything,
 * while the others go on. Method: 3 members; member 2's store is reopened read-only; load;
 * the other two converge and stay identical; member 2 applied nothing more and failed once.
 */
static void
test_cluster_fixture_store_failure_stops_member(void **state)
{
    (void)state;
    struct fx *x = fx_open(3, 1u << 30, 8, tu_seed("cluster_fixture_store_failure"));
    unsigned l = elect_any(x);
    unsigned bad = (l + 1) % 3;
    assert_int_equal(htkv_close(x->db[bad]), 0);
    htkv_config cfg;
    tu_config(&cfg, x->dirs[bad], HTKV_SYNC_NEVER);
    cfg.read_only = 1;
    x->db[bad] = tu_open(&cfg);
    x->fsm[bad].db = x->db[bad];
    x->fsm[bad].on_fail = count_fail;
    x->expect_failed[bad] = true;
    fail_calls = 0;
    run_load(x, 2000);
    for (int i = 0; i < 50 && !x->last->done; i++) {
        raft_fixture_step_until_elapsed(&x->f, 100);
    }
    assert_true(x->last->done);
    assert_int_equal(x->last->status, 0);
    assert_true(x->fsm[bad].failed);
    assert_int_equal(x->fsm[bad].fail_rc, HTKV_EREADONLY);
    assert_int_equal(fail_calls, 1);
    uint64_t v = 1;
    assert_int_equal(htkv_latest_version(x->db[bad], &v), 0);
    assert_int_equal(v, 0); /* nothing written after the failure (nothing before either) */
    fx_close(x);
}

int
main(void)
{
    tu_assert_hook_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_fixture_three_members_replicate),
        cmocka_unit_test(test_cluster_fixture_five_members_replicate),
        cmocka_unit_test(test_cluster_fixture_isolated_leader_three),
        cmocka_unit_test(test_cluster_fixture_isolated_leader_five),
        cmocka_unit_test(test_cluster_fixture_faults_under_load),
        cmocka_unit_test(test_cluster_fixture_snapshot_install),
        cmocka_unit_test(test_cluster_fixture_snapshots_by_bytes),
        cmocka_unit_test(test_cluster_fixture_conditions_in_log_order),
        cmocka_unit_test(test_cluster_fixture_store_failure_stops_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
