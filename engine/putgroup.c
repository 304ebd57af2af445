/*
 * putgroup.c - put groups: inline puts and deletes in HTKV_SYNC_ALWAYS share one pwrite() and
 * one fdatasync per group (shard layer).
 *
 * A caller pushes a put_req on the shard's lock-free intake and sleeps on done_word; the one that
 * takes `leading` drains the intake, stages the group under the shard lock
 * (htkv_shard_stage_group()), syncs it, marks the requests done and wakes them. Design and
 * measurements: ARCHITECTURE.md, "Put groups".
 *
 * Invariants
 *   1. At most one leader per shard (`leading`); followers never take the shard lock.
 *   2. No request is lost between leaders: a pusher tries to take `leading` after its push, and
 *      a leader that lets go re-reads the intake after clearing `leading` (both sequentially
 *      consistent), so one of the two sees the other.
 *   3. A request is marked PR_DONE only once its version is durable and visible, or it failed.
 *   4. Batches and htkv_submit keep the per-caller path (htkv_shard_wait_durable()); the leader
 *      takes part in its protocol (syncing, syncs_done, sync_word, synced_cond), so either kind
 *      of caller waits for a sync the other runs.
 * May call: the shard (shard.h), futexes and the base layer.
 */
#include "engine/putgroup.h"

#include <limits.h>
#include <sched.h>
#include <time.h>

#include "engine/futex.h"
#include "engine/rec.h"

enum { PR_WAIT = 0, PR_DONE = 1, PR_LEAD = 2 };

/* Groups one leader runs in a row at most (test hook: putgroup.h). */
unsigned htkv_put_group_rounds = 4;

/* The caller of @p self no longer waits to push (its request is done): groups gathered from now
 * on do not count it in active_writers. */
static void
group_uncount(struct shard *sh, struct put_req *self)
{
    if (self->counted) {
        atomic_fetch_sub(&sh->active_writers, 1);
        self->counted = false;
    }
}

/*
 * Make every version up to @p upto durable and visible (lock held; released while waiting and
 * syncing). Joins a sync in flight (a batch's), or runs one. 0 or HTKV_EFAILED.
 */
static int
group_sync(struct shard *sh, uint64_t upto)
{
    struct shard_ro *ro = &sh->env->ro[sh->id];
    bool woke = false;
    int rc = 0;
    while (atomic_load_explicit(&ro->visible, memory_order_acquire) < upto) {
        if (sh->failed) {
            rc = HTKV_EFAILED;
            break;
        }
        if (sh->syncing) {
            /* Another caller's sync: it may have started before these records; wait for its
             * end (bumped under the lock: no lost wake-up) and look again. */
            if (sh->gathering) {
                pthread_cond_signal(&sh->staged_cond);
            }
            _Atomic uint32_t *w = &sh->sync_word[(sh->syncs_done + 1) & 1];
            uint32_t seen = atomic_load_explicit(w, memory_order_relaxed);
            pthread_mutex_unlock(&sh->lock);
            htkv_futex_wait(w, seen);
            pthread_mutex_lock(&sh->lock);
            continue;
        }
        rc = htkv_shard_group_sync(sh);
        /* This sync's waiters, and those of the next one: it has no leader yet, so they lead. */
        atomic_fetch_add_explicit(&sh->sync_word[++sh->syncs_done & 1], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&sh->sync_word[(sh->syncs_done + 1) & 1], 1,
                                  memory_order_relaxed);
        pthread_cond_broadcast(&sh->synced_cond);
        /* A caller of htkv_shard_wait_durable() counts itself under the lock before it reads a word
         * to sleep on: none counted now, none sleeps on a value older than these bumps. */
        woke = atomic_load_explicit(&sh->sync_sleepers, memory_order_relaxed) > 0;
        if (rc != 0) {
            rc = HTKV_EFAILED;
            break;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    if (woke) {
        htkv_futex_wake(&sh->sync_word[0], INT_MAX);
        htkv_futex_wake(&sh->sync_word[1], INT_MAX);
    }
    return rc;
}

/*
 * Before a group: wait until every caller inside a put or delete of the shard has pushed its
 * request, at most htkv_shard_gather_limit() (twice the last sync). The leader yields rather than
 * sleeps: the callers it waits for are runnable (just woken by the last group's end), and a
 * sleep would add its own wake-up to the group's. A caller that misses the group waits for the
 * whole next one, and on a busy CPU the last of a woken group comes back late: with 16 durable
 * writers on 2 CPUs, waiting up to half a sync (as batches do, shard_gather) left ~3 of them out
 * of each group; up to twice a sync fills groups to ~15.5 and gives 1.1-1.25x the puts/s, with
 * a lower p99 (perf/README.md).
 */
static void
group_gather(struct shard *sh)
{
    uint64_t limit =
        htkv_shard_gather_limit(atomic_load_explicit(&sh->last_sync_ns, memory_order_relaxed));
    uint64_t deadline = 0;
    while (limit != 0 && atomic_load(&sh->intake_n) < atomic_load(&sh->active_writers)) {
        uint64_t now = htkv_now_ns();
        if (deadline == 0) {
            deadline = now + limit;
        } else if (now >= deadline) {
            break;
        }
        sched_yield();
    }
}

/*
 * Drain the intake and run one group: stage, sync, and mark every request done; the caller
 * wakes them (group_wake). Returns how many requests of other callers were completed.
 */
static uint32_t
group_run(struct shard *sh, struct put_req *self)
{
    group_gather(sh);
    struct put_req *list = atomic_exchange_explicit(&sh->intake, NULL, memory_order_acquire);
    struct put_req *fifo = NULL;
    uint32_t n = 0;
    while (list != NULL) { /* the stack is newest first: stage in arrival order */
        struct put_req *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
        n++;
    }
    atomic_fetch_sub(&sh->intake_n, n);
    pthread_mutex_lock(&sh->lock);
    uint64_t upto = htkv_shard_stage_group(sh, fifo);
    int src = 0;
    if (upto != 0) {
        src = group_sync(sh, upto); /* releases the lock */
    } else {
        pthread_mutex_unlock(&sh->lock);
    }
    uint32_t others = 0;
    for (struct put_req *r = fifo, *next; r != NULL; r = next) {
        next = r->next; /* read before PR_DONE: then the request may be gone */
        if (r->rc == 0 && src != 0) {
            r->rc = src;
        }
        if (r == self) {
            group_uncount(sh, self); /* the leader's next groups need not wait for it */
        } else {
            others++;
        }
        atomic_store_explicit(&r->state, PR_DONE, memory_order_release);
    }
    return others;
}

/* Wake every caller sleeping on the shard's put groups: they look at their requests again. */
static void
group_wake(struct shard *sh)
{
    atomic_fetch_add(&sh->done_word, 1);
    htkv_futex_wake(&sh->done_word, INT_MAX);
}

/*
 * Let go of `leading`, then look at the intake again (after the store, sequentially
 * consistent: a request pushed before it is seen here, one pushed after finds no leader).
 * Returns true when this caller took `leading` back to run what is there.
 */
static bool
group_release(struct shard *sh)
{
    atomic_store(&sh->leading, 0);
    if (atomic_load(&sh->intake) == NULL) {
        return false;
    }
    uint32_t free_ = 0;
    return atomic_compare_exchange_strong(&sh->leading, &free_, 1);
}

/*
 * Lead (`leading` is set) until the intake is empty or htkv_put_group_rounds groups ran. After each
 * group the leader lets go *before* it wakes the group: in a closed loop the woken callers come
 * back as pushers and the first of them leads the next group, with no hand-over wake-up.
 */
static void
group_lead(struct shard *sh, struct put_req *self)
{
    unsigned rounds = 0;
    for (;;) {
        if (atomic_load_explicit(&self->state, memory_order_acquire) == PR_DONE) {
            group_uncount(sh, self); /* completed by the leader before this one */
        }
        struct put_req *top = atomic_load(&sh->intake); /* stays: only a leader drains */
        if (top == NULL) {
            if (!group_release(sh)) {
                return;
            }
            continue;
        }
        if (rounds++ == htkv_put_group_rounds) {
            /* Hand over to the caller of a waiting request. It may find a pusher leading
             * already: that one drains its request. */
            uint32_t waiting = PR_WAIT;
            (void)atomic_compare_exchange_strong(&top->state, &waiting, PR_LEAD);
            atomic_store(&sh->leading, 0);
            group_wake(sh);
            return;
        }
        uint32_t others = group_run(sh, self);
        bool again = group_release(sh);
        if (others > 0) {
            group_wake(sh);
        }
        if (!again) {
            return;
        }
    }
}

/* Push one request on the intake, lead when no one does, and wait until it is done. */
static int
putgroup_wait(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
              uint32_t vlen, uint64_t hash, uint64_t *version)
{
    struct put_req r = { .key = key,
                         .val = val,
                         .klen = klen,
                         .vlen = vlen,
                         .hash = hash,
                         .type = type,
                         .counted = true };
    atomic_init(&r.state, PR_WAIT);
    atomic_fetch_add(&sh->active_writers, 1);
    struct put_req *top = atomic_load_explicit(&sh->intake, memory_order_relaxed);
    do {
        r.next = top;
    } while (!atomic_compare_exchange_weak(&sh->intake, &top, &r)); /* seq_cst: see above */
    atomic_fetch_add(&sh->intake_n, 1);
    for (;;) {
        uint32_t free_ = 0;
        if (atomic_compare_exchange_strong(&sh->leading, &free_, 1)) {
            group_lead(sh, &r);
        }
        uint32_t st;
        for (;;) {
            uint32_t seen = atomic_load(&sh->done_word);
            if ((st = atomic_load_explicit(&r.state, memory_order_acquire)) != PR_WAIT) {
                break;
            }
            htkv_futex_wait(&sh->done_word, seen);
        }
        if (st == PR_DONE) {
            break;
        }
        /* PR_LEAD: a leader handed over; try to lead (a leader may complete us meanwhile). */
        uint32_t lead = PR_LEAD;
        if (!atomic_compare_exchange_strong(&r.state, &lead, PR_WAIT)) {
            break; /* PR_DONE */
        }
    }
    group_uncount(sh, &r);
    *version = r.rc == 0 ? r.version : 0; /* a failed sync keeps the staged version */
    return r.rc;
}

int
htkv_putgroup_put(struct shard *sh, uint8_t type, const void *key, uint32_t klen, const void *val,
                  uint32_t vlen, uint64_t hash, uint64_t *version, uint64_t t0_ns)
{
    int rc = putgroup_wait(sh, type, key, klen, val, vlen, hash, version);
    struct htkv_hist *hist = type == REC_SET ? &sh->metrics.put : &sh->metrics.del;
    if (t0_ns != 0) {
        uint64_t now = htkv_now_ns();
        htkv_hist_record_shared(hist, now > t0_ns ? now - t0_ns : 0);
    } else {
        htkv_hist_count_shared(hist);
    }
    return rc;
}
