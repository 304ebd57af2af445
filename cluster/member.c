/*
 * member.c - membership changes and leadership transfer on the loop thread: add (as spare, then
 * promoted to voter once caught up), remove, transfer (include/htkv/cluster.h documents them).
 *
 * Design. A member runs at most one change at a time (raft 0.15 allows one per cluster: its
 * own refusal, RAFT_CANTCHANGE, becomes -EBUSY). An addition is two raft changes: raft_add()
 * (the member joins as a spare, which raft sends nothing), then raft_assign(VOTER), which makes
 * raft send it the log (or a snapshot) in catch-up rounds and commit the promotion once a round
 * takes less than an election timeout. No raft call is made from a raft callback: raft 0.15
 * runs some of them while its leader state is half torn down (node_io.c, pump_after()), so the
 * promotion is started by the next tick (10 ms).
 *
 * A transfer's callback carries no status: raft calls it when this member sees the new leader
 * (success), or after an election timeout (failure), or when raft closes.
 *
 * Invariants
 *   1. change_stage is STAGE_IDLE exactly when raft holds no change or transfer of this member
 *      and no promotion waits for the tick.
 *   2. change_req is answered once (htkv_cnode_done()); after a timeout it is NULL while raft
 *      still holds the change, whose callback then only returns the stage to idle.
 */
#include "cluster/node.h"

#include <errno.h>

#include "cluster/util.h"

/* Answer the caller (if still waiting) and return to idle. */
static void
change_finish(struct htkv_cluster *c, int rc)
{
    if (c->change_req != NULL) {
        if (rc == HTKV_ENOTLEADER || c->change_stage == STAGE_TRANSFERRING) {
            htkv_cnode_leader(c, &c->change_req->leader);
        }
        htkv_cnode_done(c, c->change_req, rc);
        pthread_cond_broadcast(&c->cv);
        c->change_req = NULL;
    }
    c->change_stage = STAGE_IDLE;
}

/* raft's codes for a refused change, in cluster.h's terms. */
static int
change_code(int rv)
{
    switch (rv) {
    case RAFT_DUPLICATEID:
        return -EEXIST;
    case RAFT_DUPLICATEADDRESS:
        return -EADDRINUSE;
    case RAFT_CANTCHANGE:
        return -EBUSY;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return HTKV_ENOTFOUND;
    default:
        return htkv_cnode_raft_code(rv);
    }
}

/* The outcome of a stopped member, or 0 when it runs. */
static int
stopped_code(struct htkv_cluster *c)
{
    return atomic_load(&c->failed)         ? HTKV_EFAILED
           : c->stopping || c->raft_closed ? HTKV_ECLOSED
                                           : 0;
}

static void
on_change(struct raft_change *req, int status)
{
    struct htkv_cluster *c = req->data;
    CL_ASSERT(c->change_stage == STAGE_ADDING || c->change_stage == STAGE_PROMOTING ||
              c->change_stage == STAGE_REMOVING);
    int stopped = stopped_code(c);
    if (status == 0 && c->change_stage == STAGE_ADDING && stopped == 0) {
        c->change_stage = STAGE_PROMOTE_NEXT; /* not from here: see the design above */
        return;
    }
    /* A failed change was proposed and may still be committed by the next leader. */
    change_finish(c, status == 0 ? 0 : stopped != 0 ? stopped : -ECONNABORTED);
}

static void
on_transfer(struct raft_transfer *req)
{
    struct htkv_cluster *c = req->data;
    CL_ASSERT(c->change_stage == STAGE_TRANSFERRING);
    raft_id id = 0;
    const char *address = NULL;
    int rc = stopped_code(c);
    if (rc == 0) {
        raft_leader(&c->raft, &id, &address);
        bool moved = raft_state(&c->raft) != RAFT_LEADER && id != 0 && id != c->id;
        rc = moved && (c->change_target == 0 || id == c->change_target) ? 0 : -ETIMEDOUT;
    }
    change_finish(c, rc);
}

/* Ask raft for the change; 0 or the code to answer at once. */
static int
change_propose(struct htkv_cluster *c, struct creq *r)
{
    c->change.data = c;
    c->transfer.data = c;
    switch (r->change) {
    case CHANGE_ADD:
        c->change_stage = STAGE_ADDING;
        return raft_add(&c->raft, &c->change, r->target, r->address, on_change);
    case CHANGE_REMOVE:
        c->change_stage = STAGE_REMOVING;
        return raft_remove(&c->raft, &c->change, r->target, on_change);
    case CHANGE_TRANSFER:
        if (r->target == c->id) {
            return -EINVAL;
        }
        c->change_stage = STAGE_TRANSFERRING;
        return raft_transfer(&c->raft, &c->transfer, r->target, on_transfer);
    default:
        return -EINVAL;
    }
}

void
htkv_cnode_change_start(struct htkv_cluster *c, struct creq *r)
{
    CL_ASSERT(r->kind == CREQ_CHANGE);
    int rc = stopped_code(c);
    if (rc == 0 && raft_state(&c->raft) != RAFT_LEADER) {
        rc = HTKV_ENOTLEADER;
        htkv_cnode_leader(c, &r->leader);
    }
    if (rc == 0 && c->change_stage != STAGE_IDLE) {
        rc = -EBUSY;
    }
    bool proposed = rc == 0;
    if (proposed) {
        int rv = change_propose(c, r);
        rc = rv == -EINVAL ? rv : change_code(rv);
    }
    if (rc != 0) {
        if (proposed) {
            c->change_stage = STAGE_IDLE; /* raft took nothing */
        }
        htkv_cnode_done(c, r, rc);
        return;
    }
    c->change_req = r;
    c->change_target = r->target;
    uint64_t wait_ms = 20ull * c->election_timeout_ms;
    c->change_deadline = uv_now(&c->loop) + (wait_ms > 10000 ? wait_ms : 10000);
}

void
htkv_cnode_change_tick(struct htkv_cluster *c)
{
    int stopped = stopped_code(c);
    if (c->change_stage == STAGE_PROMOTE_NEXT) {
        int rc = stopped != 0 ? stopped
                 : raft_state(&c->raft) != RAFT_LEADER
                     ? -ECONNABORTED /* added, not promoted: leadership was lost */
                     : 0;
        if (rc == 0) {
            c->change_stage = STAGE_PROMOTING;
            rc = change_code(
                raft_assign(&c->raft, &c->change, c->change_target, RAFT_VOTER, on_change));
        }
        if (rc != 0) {
            change_finish(c, rc);
        }
        return;
    }
    if (c->change_stage != STAGE_IDLE && c->change_req != NULL &&
        uv_now(&c->loop) > c->change_deadline) {
        /* raft keeps the change (0.15 cannot cancel a promotion): only the caller is answered. */
        htkv_cnode_done(c, c->change_req, -ETIMEDOUT);
        pthread_cond_broadcast(&c->cv);
        c->change_req = NULL;
    }
}
