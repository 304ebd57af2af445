/*
 * replication.c - deterministic commands with caller-given versions (include/htkv/replication.h).
 *
 * Design. htkv_submit() turns each run of commands that share a version into one batch carrying
 * that version (htkv_batch.fixed_version) and goes through htkv_write(), so it has the batch's
 * atomicity, durability and worker hand-off. The shard layer decides staleness under the locks
 * of the batch's shards (batch_op_stale() in shard.c), skips stale operations, and claims the
 * version only when something is written, refusing one that is not above every version used
 * (batch_take_version()), so each shard still installs versions in increasing order.
 *
 * Invariants
 *   1. The outcome of a command depends only on the store's records and the command: two stores
 *      that applied the same commands give the same outcomes and hold the same versions.
 *   2. A batch whose commands are all stale writes nothing and uses no version.
 */
#include <htkv/replication.h>

#include "engine/db.h"

static int
check_commands(const htkv_command *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const htkv_command *c = &cmds[i];
        if ((c->type != HTKV_CMD_SET && c->type != HTKV_CMD_DELETE) || c->version == 0 ||
            (i > 0 && c->version < cmds[i - 1].version) || c->key == NULL || c->key_len == 0 ||
            (c->val == NULL && c->val_len > 0) || (c->type == HTKV_CMD_DELETE && c->val_len > 0)) {
            htkv_set_error("command %zu is invalid", i);
            return -EINVAL;
        }
        if (c->key_len > HTKV_KEY_MAX) {
            return HTKV_ETOOBIG;
        }
    }
    return 0;
}

/* Apply cmds[from, to) (one version) as one batch; fills their outcomes. Returns applied count. */
static int
submit_batch(htkv_db *db, htkv_batch *b, const htkv_command *cmds, size_t from, size_t to,
             uint8_t *stale, int *outcomes)
{
    htkv_batch_clear(b);
    int rc = 0;
    for (size_t i = from; i < to && rc == 0; i++) {
        const htkv_command *c = &cmds[i];
        rc = c->type == HTKV_CMD_SET ? htkv_batch_put(b, c->key, c->key_len, c->val, c->val_len)
                                     : htkv_batch_delete(b, c->key, c->key_len);
    }
    if (rc != 0) {
        return rc;
    }
    memset(stale, 0, to - from);
    b->fixed_version = cmds[from].version;
    b->stale_out = stale;
    rc = htkv_write(db, b);
    b->fixed_version = 0;
    b->stale_out = NULL;
    if (rc != 0) {
        return rc;
    }
    int applied = 0;
    for (size_t i = from; i < to; i++) {
        bool s = stale[i - from] != 0;
        applied += !s;
        if (outcomes != NULL) {
            outcomes[i] = s ? HTKV_STALE : HTKV_APPLIED;
        }
    }
    return applied;
}

int
htkv_submit(htkv_db *db, const htkv_command *cmds, size_t n, int *outcomes)
{
    if (db == NULL || (cmds == NULL && n > 0)) {
        return -EINVAL;
    }
    if (n == 0) {
        return 0;
    }
    int rc = check_commands(cmds, n);
    if (rc != 0) {
        return rc;
    }
    size_t longest = 1;
    for (size_t i = 0, run = 1; i + 1 < n; i++) {
        run = cmds[i + 1].version == cmds[i].version ? run + 1 : 1;
        longest = run > longest ? run : longest;
    }
    uint8_t *stale = htkv_mem_alloc(longest);
    htkv_batch *b = NULL;
    if (stale == NULL || htkv_batch_create(&b) != 0) {
        htkv_mem_free(stale);
        return -ENOMEM;
    }
    int applied = 0;
    for (size_t from = 0; from < n && rc >= 0;) {
        size_t to = from + 1;
        while (to < n && cmds[to].version == cmds[from].version) {
            to++;
        }
        rc = submit_batch(db, b, cmds, from, to, stale, outcomes);
        applied += rc > 0 ? rc : 0;
        from = to;
    }
    htkv_batch_destroy(b);
    htkv_mem_free(stale);
    return rc < 0 ? rc : applied;
}

int
htkv_latest_version(htkv_db *db, uint64_t *out)
{
    if (db == NULL || out == NULL) {
        return -EINVAL;
    }
    if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
        return HTKV_ECLOSED;
    }
    *out = atomic_load_explicit(&db->next_version, memory_order_acquire) - 1;
    return 0;
}
