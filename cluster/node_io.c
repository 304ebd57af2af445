/*
 * node_io.c - the loop side of an htkv_cluster member: raft over libuv, group commit, read
 * barriers, status (the handle, threads and invariants are described in node.h).
 *
 * Design. on_wake() takes the whole request queue. When the member is not the leader, writes
 * and reads fail at once with HTKV_ENOTLEADER and the leader it knows. Otherwise writes and
 * reads join the loop's waiting lists and pump() sends them: at most one raft entry of writes is
 * in raft at a time; when it is applied, every write that arrived meanwhile goes out in the next
 * entry, in arrival order, up to entry_bytes_max bytes and HTKV_CLUSTER_ENTRY_WRITES_MAX
 * requests (group commit across the network). Likewise all waiting reads share one
 * raft_barrier(): once it is applied, this member was still the leader after the reads arrived
 * and its store holds every write committed before, so the callers read their store.
 *
 * raft 0.15 commits no no-op entry when a leader is elected: on becoming leader the member
 * proposes a barrier of its own and reports leader_ready once it is applied. Until that barrier
 * is stored, raft 0.15 may commit an entry of an earlier term by counting replicas (the check
 * that forbids it came in 0.17.1): proposing it at once narrows that window (README.md).
 *
 * Stopping: a failure of the state machine (fsm.h) or htkv_cluster_close() calls raft_close();
 * raft fails every request it still holds (their callbacks run), then on_raft_closed() closes
 * raft's I/O and transport. The loop's own handles close when the member is closing, so that a
 * member stopped by a failure still answers HTKV_EFAILED until it is closed.
 */
#include "cluster/node.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/entry.h"
#include "cluster/util.h"

/* One raft entry of writes on its way through raft. */
struct wbatch {
    struct raft_apply req; /* req.data = this */
    struct htkv_cluster *c;
    uint64_t term; /* the leader's term when proposed (for the trace) */
    uint32_t n;
    struct creq *reqs[]; /* in entry order */
};

/* The reads that share one barrier. */
struct rbatch {
    struct raft_barrier req; /* req.data = this */
    struct htkv_cluster *c;
    struct creq *reads; /* linked through next */
};

int
htkv_cnode_raft_code(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOMEM:
        return -ENOMEM;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return HTKV_ENOTLEADER;
    case RAFT_CORRUPT:
        return HTKV_ECORRUPT;
    case RAFT_NOSPACE:
        return -ENOSPC;
    case RAFT_CANCELED:
    case RAFT_SHUTDOWN:
        return HTKV_ECLOSED;
    default:
        return -EIO;
    }
}

void
htkv_cnode_done(struct htkv_cluster *c, struct creq *r, int rc)
{
    pthread_mutex_lock(&c->mu);
    CL_ASSERT(!r->done); /* invariant 1 */
    r->rc = rc;
    r->done = true;
    pthread_mutex_unlock(&c->mu);
}

void
htkv_cnode_leader(struct htkv_cluster *c, struct htkv_cluster_leader *out)
{
    raft_id id = 0;
    const char *address = NULL;
    CL_ASSERT(out != NULL);
    memset(out, 0, sizeof(*out));
    if (!c->raft_closed && !c->stopping) {
        raft_leader(&c->raft, &id, &address);
    }
    out->id = id;
    if (address != NULL) {
        snprintf(out->address, sizeof(out->address), "%s", address);
    }
}

/* Complete every request of @p list with @p rc (and the leader with HTKV_ENOTLEADER). */
static void
complete_list(struct htkv_cluster *c, struct creq *list, int rc)
{
    for (struct creq *r = list, *next; r != NULL; r = next) {
        next = r->next; /* read before done: the caller may return at once (invariant 1) */
        if (rc == HTKV_ENOTLEADER) {
            htkv_cnode_leader(c, &r->leader);
        }
        htkv_cnode_done(c, r, rc);
    }
    pthread_cond_broadcast(&c->cv);
}

static void pump(struct htkv_cluster *c);

/*
 * After a request raft answered. raft 0.15 fails a leader's outstanding requests (status
 * RAFT_LEADERSHIPLOST) from convertClearLeader(), after it freed the leader's progress array but
 * before it changes its state: raft_state() still says leader there, and a raft_apply() or
 * raft_barrier() made from that callback reads the freed array and crashes (found by the kill
 * test). So after a failed request nothing is proposed from the callback: the loop's next tick
 * (10 ms) sends what waits, or fails it once the role has changed. A stop (raft_close()) or a
 * failure makes pump() touch no raft call, so it runs at once then.
 */
static void
pump_after(struct htkv_cluster *c, int status)
{
    if (status == 0 || c->stopping || atomic_load(&c->failed)) {
        pump(c);
    }
}

/* Trace an answered entry of writes: its index, terms, outcome and versions. */
static void
trace_applied(struct htkv_cluster *c, const struct wbatch *wb, int status,
              const struct fsm_results *res)
{
    uint64_t first = 0, last = 0;
    for (uint32_t i = 0; res != NULL && i < res->count; i++) {
        first = first == 0 ? res->res[i].version : first;
        last = res->res[i].version != 0 ? res->res[i].version : last;
    }
    htkv_cl_trace(c->log_fn, c->log_ctx, c->id,
                  "answer entry index=%llu proposed_term=%llu term=%llu status=%d writes=%u "
                  "versions=%llu..%llu",
                  (unsigned long long)wb->req.index, (unsigned long long)wb->term,
                  (unsigned long long)c->raft.current_term, status, wb->n,
                  (unsigned long long)first, (unsigned long long)last);
}

static void
on_applied(struct raft_apply *req, int status, void *result)
{
    struct wbatch *wb = req->data;
    struct htkv_cluster *c = wb->c;
    CL_ASSERT(c->write_busy); /* the one entry of writes in raft */
    CL_ASSERT(wb->n >= 1);
    const struct fsm_results *res = status == 0 ? result : NULL;
    /* A write that raft gave up on after proposing it may still be committed by the next
     * leader: its outcome is unknown, which is not HTKV_ENOTLEADER (nothing proposed). */
    int lost = atomic_load(&c->failed) ? HTKV_EFAILED : -ECONNABORTED;
    for (uint32_t i = 0; i < wb->n; i++) {
        struct creq *r = wb->reqs[i];
        int rc = lost;
        if (res != NULL) {
            rc = i < res->count ? res->res[i].rc : -EINVAL;
            r->version = i < res->count ? res->res[i].version : 0;
        }
        htkv_cnode_done(c, r, rc);
    }
    if (c->fsm.trace) {
        trace_applied(c, wb, status, res);
    }
    pthread_cond_broadcast(&c->cv);
    free(wb);
    c->write_busy = false;
    pump_after(c, status);
}

/* Take the waiting writes that fit in one entry off the queue: at least one, however large;
 * then up to entry_bytes_max bytes and HTKV_CLUSTER_ENTRY_WRITES_MAX requests. */
static struct wbatch *
take_entry(struct htkv_cluster *c, size_t *bytes)
{
    uint32_t n = 0;
    *bytes = 0;
    for (struct creq *r = c->writes; r != NULL; r = r->next) {
        if (n > 0 && (n == HTKV_CLUSTER_ENTRY_WRITES_MAX || *bytes + r->len > c->entry_bytes_max)) {
            break;
        }
        *bytes += r->len;
        n++;
    }
    struct wbatch *wb = malloc(sizeof(*wb) + n * sizeof(wb->reqs[0]));
    if (wb == NULL) {
        return NULL;
    }
    wb->c = c;
    wb->n = n;
    wb->req.data = wb;
    for (uint32_t i = 0; i < n; i++) {
        wb->reqs[i] = c->writes;
        c->writes = c->writes->next;
        wb->reqs[i]->next = NULL;
    }
    if (c->writes == NULL) {
        c->writes_tail = &c->writes;
    }
    CL_ASSERT(n >= 1);
    return wb;
}

/* Propose the next entry of waiting writes. */
static void
propose_writes(struct htkv_cluster *c)
{
    size_t bytes = 0;
    CL_ASSERT(!c->write_busy);
    CL_ASSERT(c->writes != NULL);
    struct wbatch *wb = take_entry(c, &bytes);
    if (wb == NULL) {
        return; /* -ENOMEM: they keep waiting; the next wake or tick tries again */
    }
    struct raft_buffer buf = { .len = ENTRY_PAD(ENTRY_HDR_BYTES + bytes) };
    buf.base = raft_malloc(buf.len);
    int rc = buf.base == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        memset((char *)buf.base + buf.len - 8, 0, 8); /* the padding */
        htkv_entry_hdr_encode(buf.base, wb->n);
        unsigned char *p = (unsigned char *)buf.base + ENTRY_HDR_BYTES;
        for (uint32_t i = 0; i < wb->n; i++) {
            memcpy(p, wb->reqs[i]->bytes, wb->reqs[i]->len);
            p += wb->reqs[i]->len;
        }
        wb->term = c->raft.current_term;
        rc = htkv_cnode_raft_code(raft_apply(&c->raft, &wb->req, &buf, 1, on_applied));
    }
    if (rc == 0) {
        c->write_busy = true;
        return;
    }
    raft_free(buf.base); /* raft took nothing */
    for (uint32_t i = 0; i < wb->n; i++) {
        wb->reqs[i]->next = i + 1 < wb->n ? wb->reqs[i + 1] : NULL;
    }
    complete_list(c, wb->reqs[0], rc);
    free(wb);
}

static void
on_read_barrier(struct raft_barrier *req, int status)
{
    struct rbatch *rb = req->data;
    struct htkv_cluster *c = rb->c;
    CL_ASSERT(c->read_busy); /* the one read barrier in raft */
    complete_list(c, rb->reads, status == 0 ? 0 : HTKV_ENOTLEADER);
    free(rb);
    c->read_busy = false;
    pump_after(c, status);
}

/* Start one barrier for every waiting read. */
static void
start_reads(struct htkv_cluster *c)
{
    CL_ASSERT(!c->read_busy);
    CL_ASSERT(c->reads != NULL);
    struct rbatch *rb = malloc(sizeof(*rb));
    if (rb == NULL) {
        return; /* they keep waiting */
    }
    rb->c = c;
    rb->reads = c->reads;
    rb->req.data = rb;
    c->reads = NULL;
    c->reads_tail = &c->reads;
    int rc = htkv_cnode_raft_code(raft_barrier(&c->raft, &rb->req, on_read_barrier));
    if (rc != 0) {
        complete_list(c, rb->reads, rc);
        free(rb);
        return;
    }
    c->read_busy = true;
}

/*
 * Send what waits: at most one entry of writes and one read barrier in raft at a time. raft 0.15
 * advances the commit index only to the leader's last stored entry (replicationQuorum() is
 * given last_stored, fixed upstream in 0.17.1): a leader that kept appending would commit
 * nothing while followers trail by an entry. Waiting for the previous entry also makes the
 * groups: writers that arrive during one round trip share the next entry.
 */
static void
pump(struct htkv_cluster *c)
{
    int rc = atomic_load(&c->failed) ? HTKV_EFAILED : c->stopping ? HTKV_ECLOSED : 0;
    if (rc == 0 && raft_state(&c->raft) != RAFT_LEADER) {
        rc = HTKV_ENOTLEADER;
    }
    if (rc != 0) {
        complete_list(c, c->writes, rc);
        complete_list(c, c->reads, rc);
        c->writes = NULL;
        c->writes_tail = &c->writes;
        c->reads = NULL;
        c->reads_tail = &c->reads;
        return;
    }
    if (!c->write_busy && c->writes != NULL) {
        propose_writes(c);
    }
    if (!c->read_busy && c->reads != NULL) {
        start_reads(c);
    }
}

static int
role_of(int state)
{
    switch (state) {
    case RAFT_FOLLOWER:
        return HTKV_CLUSTER_FOLLOWER;
    case RAFT_CANDIDATE:
        return HTKV_CLUSTER_CANDIDATE;
    case RAFT_LEADER:
        return HTKV_CLUSTER_LEADER;
    default:
        return HTKV_CLUSTER_UNAVAILABLE;
    }
}

static void
fill_status(struct htkv_cluster *c, struct htkv_cluster_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = c->id;
    if (htkv_latest_version(c->db, &st->store_version) != 0) {
        st->store_version = 0;
    }
    if (c->stopping || c->raft_closed) {
        return;
    }
    st->role = role_of(raft_state(&c->raft));
    st->leader_ready = st->role == HTKV_CLUSTER_LEADER && c->leader_ready;
    st->term = c->raft.current_term;
    st->commit_index = c->raft.commit_index;
    st->applied_index = raft_last_applied(&c->raft);
    st->last_index = raft_last_index(&c->raft);
    htkv_cnode_leader(c, &st->leader);
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n && i < HTKV_CLUSTER_MEMBERS_MAX; i++) {
        struct htkv_cluster_member *m = &st->members[st->member_count++];
        m->id = conf->servers[i].id;
        snprintf(m->address, sizeof(m->address), "%s", conf->servers[i].address);
        m->voter = conf->servers[i].role == RAFT_VOTER;
        if (st->role == HTKV_CLUSTER_LEADER && c->raft.leader_state.progress != NULL) {
            m->match_index =
                m->id == c->id ? st->last_index : c->raft.leader_state.progress[i].match_index;
        }
    }
}

static void
on_leader_barrier(struct raft_barrier *req, int status)
{
    struct htkv_cluster *c = req->data;
    c->leader_barrier_busy = false;
    c->leader_ready = status == 0 && c->was_leader;
}

/* Trace a change of role, term or known leader (HTKV_CLUSTER_TRACE). */
static void
trace_role(struct htkv_cluster *c)
{
    int state = raft_state(&c->raft);
    raft_id leader = 0;
    const char *address = NULL;
    raft_leader(&c->raft, &leader, &address);
    if (state == c->traced_state && c->raft.current_term == c->traced_term &&
        leader == c->traced_leader) {
        return;
    }
    c->traced_state = state;
    c->traced_term = c->raft.current_term;
    c->traced_leader = leader;
    uint64_t version = 0;
    if (htkv_latest_version(c->db, &version) != 0) {
        version = 0;
    }
    htkv_cl_trace(c->log_fn, c->log_ctx, c->id,
                  "role=%s term=%llu leader=%llu commit=%llu applied=%llu last=%llu "
                  "snapshot=%llu version=%llu",
                  state == RAFT_LEADER      ? "leader"
                  : state == RAFT_CANDIDATE ? "candidate"
                  : state == RAFT_FOLLOWER  ? "follower"
                                            : "unavailable",
                  (unsigned long long)c->raft.current_term, (unsigned long long)leader,
                  (unsigned long long)c->raft.commit_index,
                  (unsigned long long)raft_last_applied(&c->raft),
                  (unsigned long long)raft_last_index(&c->raft),
                  (unsigned long long)c->raft.log.snapshot.last_index, (unsigned long long)version);
}

/* Follow role changes: a new leader proposes its barrier (raft 0.15 commits no no-op). */
static void
watch_role(struct htkv_cluster *c)
{
    if (c->stopping || c->raft_closed) {
        return;
    }
    if (c->fsm.trace) {
        trace_role(c);
    }
    bool leader = raft_state(&c->raft) == RAFT_LEADER;
    if (!leader || c->raft.current_term != c->leader_term) {
        /* Not leader, or leader again in a later term (lost and won between two polls). */
        c->was_leader = false;
        c->leader_ready = false;
    }
    if (leader && !c->was_leader && !c->leader_barrier_busy) {
        c->leader_barrier.data = c;
        if (raft_barrier(&c->raft, &c->leader_barrier, on_leader_barrier) == 0) {
            c->was_leader = true;
            c->leader_term = c->raft.current_term;
            c->leader_barrier_busy = true;
        }
    }
}

static void
on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

/* Close the loop's own handles once raft is closed and the member is closing. */
static void
maybe_close_handles(struct htkv_cluster *c, bool closing)
{
    if (closing && c->raft_closed && !c->handles_closed) {
        c->handles_closed = true;
        uv_close((uv_handle_t *)&c->wake, on_handle_closed);
        uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    }
}

static void
on_raft_closed(struct raft *r)
{
    struct htkv_cluster *c = r->data;
    raft_uv_close(&c->io);
    raft_uv_tcp_close(&c->transport);
    c->raft_closed = true;
    htkv_cnode_change_tick(c); /* answers an addition waiting for the (stopped) tick */
    pthread_mutex_lock(&c->mu);
    bool closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    maybe_close_handles(c, closing);
}

static void
stop_raft(struct htkv_cluster *c)
{
    if (!c->stopping) {
        c->stopping = true;
        uv_timer_stop(&c->tick);
        raft_close(&c->raft, on_raft_closed);
    }
}

/* Answer statuses; queue writes and reads behind those waiting; send what can go. */
static void
dispatch(struct htkv_cluster *c, struct creq *list)
{
    for (struct creq *r = list, *next; r != NULL; r = next) {
        next = r->next;
        r->next = NULL;
        if (r->kind == CREQ_STATUS) {
            fill_status(c, r->status);
            htkv_cnode_done(c, r, atomic_load(&c->failed) ? HTKV_EFAILED : 0);
        } else if (r->kind == CREQ_CHANGE) {
            htkv_cnode_change_start(c, r);
        } else if (r->kind == CREQ_WRITE) {
            *c->writes_tail = r;
            c->writes_tail = &r->next;
        } else {
            *c->reads_tail = r;
            c->reads_tail = &r->next;
        }
    }
    pthread_cond_broadcast(&c->cv);
    pump(c);
}

static void
on_wake(uv_async_t *h)
{
    struct htkv_cluster *c = h->data;
    pthread_mutex_lock(&c->mu);
    struct creq *list = c->head;
    c->head = NULL;
    c->tail = &c->head;
    bool closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    if (atomic_load(&c->failed) || closing) {
        stop_raft(c); /* a failed member takes no further part (fsm.h) */
    }
    watch_role(c);
    dispatch(c, list);
    maybe_close_handles(c, closing);
}

static void
on_tick(uv_timer_t *h)
{
    struct htkv_cluster *c = h->data;
    watch_role(c);
    htkv_cnode_change_tick(c);
    pump(c); /* fails what waits if leadership was lost meanwhile */
}

static void drain_loop(struct htkv_cluster *c, bool raft_up);

static void
on_fsm_fail(struct cluster_fsm *f)
{
    struct htkv_cluster *c = f->ctx;
    atomic_store(&c->failed, true);
    uv_async_send(&c->wake); /* stop raft from on_wake(), outside raft's own callback */
}

void
htkv_cnode_io_abort(struct htkv_cluster *c)
{
    drain_loop(c, true);
}

void *
htkv_cnode_io_thread(void *arg)
{
    struct htkv_cluster *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

static int
bootstrap(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    if (cfg->voter_count == 0) {
        return 0;
    }
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    for (size_t i = 0; i < cfg->voter_count && rv == 0; i++) {
        rv = raft_configuration_add(&conf, cfg->voters[i].id, cfg->voters[i].address, RAFT_VOTER);
    }
    if (rv == 0) {
        rv = raft_bootstrap(&c->raft, &conf);
        rv = rv == RAFT_CANTBOOTSTRAP ? 0 : rv; /* a restart: raft's directory has state */
    }
    raft_configuration_close(&conf);
    if (rv != 0) {
        htkv_cl_log(c->log_fn, c->log_ctx, HTKV_LOG_ERROR, "bootstrap failed: %s",
                    raft_strerror(rv));
    }
    return htkv_cnode_raft_code(rv);
}

static void
configure_raft(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    raft_set_election_timeout(&c->raft, cfg->election_timeout_ms);
    c->election_timeout_ms = cfg->election_timeout_ms;
    raft_set_heartbeat_timeout(&c->raft, cfg->heartbeat_timeout_ms);
    raft_set_snapshot_threshold(&c->raft, cfg->snapshot_threshold);
    htkv_cfsm_snapshot_policy(&c->fsm, cfg->snapshot_threshold, cfg->snapshot_bytes);
    raft_set_snapshot_trailing(&c->raft, cfg->snapshot_trailing);
    raft_set_install_snapshot_timeout(&c->raft, cfg->install_snapshot_timeout_ms);
    /* A member cut off from the others does not raise the term when it comes back. */
    raft_set_pre_vote(&c->raft, true);
}

/* Run the loop on this thread until everything set up so far is closed (a failed start). */
static void
drain_loop(struct htkv_cluster *c, bool raft_up)
{
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    if (raft_up) {
        stop_raft(c);
    } else {
        c->raft_closed = true;
    }
    uv_run(&c->loop, UV_RUN_DEFAULT); /* raft_close's callbacks, if any */
    maybe_close_handles(c, true);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
}

static int
start_loop(struct htkv_cluster *c)
{
    int rv = uv_loop_init(&c->loop);
    if (rv != 0) {
        return rv;
    }
    c->wake.data = c;
    c->tick.data = c;
    c->writes_tail = &c->writes;
    c->reads_tail = &c->reads;
    rv = uv_async_init(&c->loop, &c->wake, on_wake);
    if (rv == 0) {
        uv_timer_init(&c->loop, &c->tick);
        return 0;
    }
    uv_loop_close(&c->loop);
    return rv;
}

int
htkv_cnode_io_start(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    int rc = start_loop(c);
    if (rc != 0) {
        return rc;
    }
    c->fsm.on_fail = on_fsm_fail;
    c->fsm.ctx = c;
    int rv = raft_uv_tcp_init(&c->transport, &c->loop);
    if (rv != 0) {
        drain_loop(c, false);
        return htkv_cnode_raft_code(rv);
    }
    htkv_cnode_transport_nodelay(c);
    rv = raft_uv_init(&c->io, &c->loop, c->raft_dir, &c->transport);
    if (rv == 0) {
        /* raft_uv 0.15 implements async_work (version 2's method) but says version 1, and
         * raft_init refuses an FSM with asynchronous snapshots on a version 1 io. Version 0.17.1
         * says 2 ("uv: set io version to 2"); say it here. */
        CL_ASSERT(c->io.async_work != NULL);
        c->io.version = 2;
        rv = raft_init(&c->raft, &c->io, &c->fsm.fsm, c->id, c->address);
        if (rv != 0) {
            htkv_cl_log(c->log_fn, c->log_ctx, HTKV_LOG_ERROR, "raft init: %s",
                        raft_errmsg(&c->raft));
            raft_uv_close(&c->io);
        }
    }
    if (rv != 0) {
        htkv_cl_log(c->log_fn, c->log_ctx, HTKV_LOG_ERROR, "raft setup failed: %s",
                    raft_strerror(rv));
        raft_uv_tcp_close(&c->transport);
        drain_loop(c, false);
        return htkv_cnode_raft_code(rv);
    }
    c->raft.data = c;
    c->fsm.raft = &c->raft;
    configure_raft(c, cfg);
    rc = bootstrap(c, cfg);
    if (rc == 0 && (rv = raft_start(&c->raft)) != 0) {
        htkv_cl_log(c->log_fn, c->log_ctx, HTKV_LOG_ERROR, "raft start failed: %s",
                    raft_errmsg(&c->raft));
        rc = htkv_cnode_raft_code(rv);
    }
    if (rc != 0) {
        drain_loop(c, true);
        return rc;
    }
    /* Role changes are noticed by polling (raft 0.15 has no callback for them): every 10 ms,
     * so that a new leader's barrier follows its election closely. */
    unsigned period = 10;
    uv_timer_start(&c->tick, on_tick, period, period);
    return 0;
}
