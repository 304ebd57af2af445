/*
 * replication.c - deterministic commands with caller-given versions (include/htkv/replication.h).
 *
 * Design. htkv_submit() turns each run of commands that share a version into one batch carrying
 * that version (htkv_batch.fixed_version) and goes through htkv_write(), so it has the batch's
 * atomicity, durability and worker hand-off, and its commands apply in order.
 *
 * The stale rule is a function of the log alone: a run whose version is not above the store's
 * latest version (htkv_versions_latest(): the log position this store has reached, by applying
 * entries or installing a snapshot) is stale as a whole; any other run is applied as a whole, a
 * delete of an absent key included (it writes a tombstone). Nothing depends on what a replica
 * happens to hold: tombstones compaction dropped, snapshots taken, shard or worker counts. The
 * shard layer claims the version under the batch's locks (htkv_versions_take() in versions.c); when
 * another submitter got there first it refuses with -ERANGE, which is the same verdict: stale.
 *
 * Invariants
 *   1. The outcome of a command depends only on the log: replicas that reached the same log
 *      position give the same outcomes and reach the same latest version.
 *   2. A stale run writes nothing and uses no version.
 *   3. Commands reach submit_batch() checked (check_commands()) and grouped: [from, to) is a
 *      non-empty run of one version, no longer than the outcome buffer. An applied run's batch
 *      carries exactly that version, and after any run (applied or stale) the store's latest
 *      version is at least the run's: it never goes back to let a later duplicate through.
 */
#include <htkv/replication.h>

#include "engine/batch.h"
#include "engine/snapshot.h"
#include "engine/store.h"

static int
check_commands(const htkv_command *cmds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const htkv_command *c = &cmds[i];
        if ((c->type != HTKV_CMD_SET && c->type != HTKV_CMD_DELETE) || c->version == 0 ||
            (i > 0 && c->version < cmds[i - 1].version) || c->key == NULL || c->key_len == 0 ||
            (c->val == NULL && c->val_len > 0) || (c->type == HTKV_CMD_DELETE && c->val_len > 0)) {
            htkv_set_error("command %zu is invalid", i);
            return htkv_einval(__func__);
        }
        if (c->key_len > HTKV_KEY_MAX) {
            return HTKV_ETOOBIG;
        }
        if (c->version > REC_VERSION_MAX) {
            htkv_set_error("command %zu: version %llu is above the largest version %llu", i,
                           (unsigned long long)c->version, (unsigned long long)REC_VERSION_MAX);
            return -ERANGE;
        }
    }
    return 0;
}

/* Apply cmds[from, to) (one version) as one batch; fills their outcomes. Returns applied count. */
static int
submit_batch(htkv_db *db, htkv_batch *b, const htkv_command *cmds, size_t from, size_t to,
             uint8_t *stale, int *outcomes)
{
    HTKV_ASSERT(from < to && cmds[from].version == cmds[to - 1].version); /* invariant 3 */
    HTKV_ASSERT(cmds[from].version >= 1 && cmds[from].version <= REC_VERSION_MAX);
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
    bool is_stale = cmds[from].version <= htkv_versions_latest(&db->ver);
    if (!is_stale) {
        b->fixed_version = cmds[from].version;
        rc = htkv_write(db, b);
        b->fixed_version = 0;
        HTKV_ASSERT(rc != 0 || b->version == cmds[from].version); /* invariant 3 */
        is_stale = rc == -ERANGE; /* a concurrent submitter applied this version or a later one */
        if (rc != 0 && !is_stale) {
            return rc;
        }
    }
    /* Invariant 3: applied, stale by the check, or beaten to it by a concurrent submitter. */
    HTKV_ASSERT(htkv_versions_latest(&db->ver) >= cmds[from].version);
    memset(stale, is_stale, to - from);
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
        return htkv_einval(__func__);
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
        HTKV_ASSERT(to - from <= longest); /* stale[] holds the longest run */
        rc = submit_batch(db, b, cmds, from, to, stale, outcomes);
        HTKV_ASSERT(rc < 0 || (size_t)rc <= to - from);
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
        return htkv_einval(__func__);
    }
    if (atomic_load_explicit(&db->closing, memory_order_relaxed)) {
        return HTKV_ECLOSED;
    }
    *out = htkv_versions_latest(&db->ver);
    return 0;
}

int
htkv_snapshot_file_version(const char *path, uint64_t *version, uint64_t *count)
{
    if (path == NULL) {
        return htkv_einval(__func__);
    }
    uint64_t v = 0, n = 0;
    int rc = htkv_snapshot_check_file(path, HTKV_VALUE_MAX_LIMIT, &v, &n, NULL);
    if (rc == 0) {
        if (version != NULL) {
            *version = v;
        }
        if (count != NULL) {
            *count = n;
        }
    }
    return rc;
}

/* ---- the single-node implementation ----------------------------------------------------- */

static int
local_submit(void *impl, htkv_command *cmds, size_t n, int *outcomes)
{
    htkv_db *db = impl;
    uint64_t latest;
    int rc = htkv_latest_version(db, &latest);
    if (rc != 0) {
        return rc;
    }
    /* A log of one node: what is submitted is committed; unversioned commands form the next
     * entry. (Callers serialise submit() as a log would.) */
    for (size_t i = 0; i < n; i++) {
        if (cmds[i].version == 0) {
            cmds[i].version = latest + 1;
        }
    }
    return htkv_submit(db, cmds, n, outcomes);
}

static int
local_latest(void *impl, uint64_t *out)
{
    return htkv_latest_version(impl, out);
}

static int
local_snapshot_write(void *impl, const char *path, uint64_t *version)
{
    int rc = htkv_snapshot_write(impl, path);
    if (rc == 0 && version != NULL) {
        rc = htkv_snapshot_file_version(path, version, NULL);
    }
    return rc;
}

static int
local_snapshot_install(void *impl, const char *path)
{
    return htkv_snapshot_restore(impl, path);
}

static int
local_changes_since(void *impl, uint64_t version, htkv_changes **out)
{
    return htkv_changes_since(impl, version, out);
}

void
htkv_local_replication(htkv_db *db, htkv_replication *out)
{
    *out = (htkv_replication){ .submit = local_submit,
                               .latest_version = local_latest,
                               .snapshot_write = local_snapshot_write,
                               .snapshot_install = local_snapshot_install,
                               .changes_since = local_changes_since,
                               .impl = db };
}
