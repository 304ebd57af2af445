/*
 * fsm.c - the raft state machine of htkv_cluster over one local htkv store (design, outcomes
 * and invariants in fsm.h).
 *
 * Design. apply walks the entry request by request. For each request it first asks whether the
 * store already holds its version (a replay after a restart: skipped), then decodes its ops
 * into htkv_commands while evaluating its conditions against the store, and finally submits the
 * commands as one run (one atomic batch with the request's version). A failure that is not a
 * verdict of the log stops the FSM (fsm_fail()).
 *
 * raft 0.15 passes snapshots as buffers in memory. Taking one is asynchronous (raft_fsm version
 * 3): the loop thread only opens a cut view of the store, and a libuv worker thread streams the
 * view's snapshot into one buffer, so heartbeats and applies go on meanwhile. A received one is
 * written to a scratch file for htkv_snapshot_restore(), which reads files; the file is removed
 * after each use.
 */
#include "cluster/fsm.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/entry.h"
#include "cluster/util.h"

static int
fsm_fail(struct cluster_fsm *f, int rc, const char *what)
{
    CL_ASSERT(rc < 0);
    if (!f->failed) {
        f->failed = true;
        f->fail_rc = rc;
        htkv_cl_log(f->log_fn, f->log_ctx, HTKV_LOG_ERROR,
                    "state machine stopped: %s: %s (%s); the member stops, its store keeps what "
                    "it applied before",
                    what, htkv_strerror(rc), htkv_last_error());
        if (f->on_fail != NULL) {
            f->on_fail(f);
        }
    }
    return RAFT_IOERR;
}

/* The version of @p key in the store (0 when absent), or a negative failure. */
static int
key_version(htkv_db *db, const void *key, size_t klen, uint64_t *version)
{
    size_t vlen = 0;
    int rc = htkv_get_version(db, key, klen, NULL, 0, &vlen, version);
    if (rc == HTKV_ENOTFOUND) {
        *version = 0;
        return 0;
    }
    return rc == HTKV_ETOOSMALL ? 0 : rc;
}

static int
cmds_reserve(struct cluster_fsm *f, size_t n)
{
    if (n <= f->cmds_cap) {
        return 0;
    }
    htkv_command *c = realloc(f->cmds, n * sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    f->cmds = c;
    f->cmds_cap = n;
    return 0;
}

/*
 * Decode the @p nops ops of the current request, evaluating its conditions (invariant 2).
 * Returns 0 with *@p ncmds commands in f->cmds, a verdict (HTKV_ECONFLICT, HTKV_ENOTFOUND,
 * -EINVAL) with *@p det set, or a failure (*@p det clear).
 */
static int
decode_request(struct cluster_fsm *f, struct entry_reader *r, int kind, uint32_t nops,
               uint64_t version, size_t *ncmds, bool *det)
{
    *det = true;
    *ncmds = 0;
    int verdict = 0;
    for (uint32_t i = 0; i < nops; i++) {
        struct htkv_cluster_op op;
        if (htkv_entry_next_op(r, &op) != 0) {
            return -EINVAL;
        }
        bool one_delete = kind == ENTRY_DELETE_ONE;
        if (one_delete && (nops != 1 || op.type != HTKV_CLUSTER_OP_DELETE)) {
            return -EINVAL;
        }
        if (op.type == HTKV_CLUSTER_OP_CHECK || one_delete) {
            uint64_t have = 0;
            int rc = key_version(f->db, op.key, op.key_len, &have);
            if (rc != 0) {
                *det = false;
                return rc;
            }
            if (op.type == HTKV_CLUSTER_OP_CHECK && have != op.version && verdict == 0) {
                verdict = HTKV_ECONFLICT; /* go on: the rest of the request must still parse */
            } else if (one_delete && have == 0) {
                verdict = HTKV_ENOTFOUND;
            }
            if (op.type == HTKV_CLUSTER_OP_CHECK) {
                continue;
            }
        }
        htkv_command *c = &f->cmds[(*ncmds)++];
        *c =
            (htkv_command){ .type = op.type == HTKV_CLUSTER_OP_PUT ? HTKV_CMD_SET : HTKV_CMD_DELETE,
                            .key = op.key,
                            .key_len = op.key_len,
                            .val = op.val,
                            .val_len = op.val_len,
                            .version = version };
    }
    return verdict;
}

/*
 * Apply the next request of the entry with @p version into @p res. Returns 0 (a result,
 * deterministic, is in @p res) or RAFT_IOERR (the FSM failed).
 */
static int
apply_request(struct cluster_fsm *f, struct entry_reader *r, uint64_t version,
              struct fsm_result *res)
{
    int kind = 0;
    uint32_t nops = 0;
    *res = (struct fsm_result){ .rc = htkv_entry_next_req(r, &kind, &nops) };
    if (res->rc != 0) {
        return 0;
    }
    uint64_t latest = 0;
    int rc = htkv_latest_version(f->db, &latest);
    if (rc == 0) {
        rc = cmds_reserve(f, nops);
    }
    if (rc != 0) {
        return fsm_fail(f, rc, "reading the store's version");
    }
    size_t ncmds = 0;
    bool det = true;
    if (version <= latest) { /* invariant 1: applied before this restart; walk past it */
        f->skipped++;
        for (uint32_t i = 0; i < nops && res->rc == 0; i++) {
            struct htkv_cluster_op op;
            res->rc = htkv_entry_next_op(r, &op);
        }
        return 0;
    }
    res->rc = decode_request(f, r, kind, nops, version, &ncmds, &det);
    if (!det) {
        return fsm_fail(f, res->rc, "evaluating a condition");
    }
    if (res->rc != 0 || ncmds == 0) {
        return 0;
    }
    rc = htkv_submit(f->db, f->cmds, ncmds, NULL);
    if (rc < 0) {
        return fsm_fail(f, rc, "applying a committed write");
    }
    CL_ASSERT((size_t)rc == ncmds); /* not stale: its version is above the latest */
    res->version = version;
    return 0;
}

static int
results_reserve(struct cluster_fsm *f, uint32_t n)
{
    if (n <= f->res_cap) {
        return 0;
    }
    struct fsm_result *r = realloc(f->out.res, (size_t)n * sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    f->out.res = r;
    f->res_cap = n;
    return 0;
}

/* FNV-1a of an entry's bytes: members that applied different bytes at one index differ. */
static uint64_t
entry_hash(const struct raft_buffer *buf)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < buf->len; i++) {
        h = (h ^ ((const unsigned char *)buf->base)[i]) * UINT64_C(1099511628211);
    }
    return h;
}

/* One trace line per applied entry: what it wrote, skipped, decided (HTKV_CLUSTER_TRACE). */
static void
trace_apply(struct cluster_fsm *f, raft_index index, const struct raft_buffer *buf,
            uint64_t latest_before)
{
    uint32_t written = 0, verdicts = 0;
    for (uint32_t j = 0; j < f->out.count; j++) {
        written += f->out.res[j].version != 0;
        verdicts += f->out.res[j].rc != 0;
    }
    uint64_t latest = 0;
    if (htkv_latest_version(f->db, &latest) != 0) {
        latest = 0;
    }
    htkv_cl_trace(f->log_fn, f->log_ctx, f->raft->id,
                  "apply index=%llu requests=%u written=%u skipped=%u verdicts=%u "
                  "latest=%llu->%llu bytes=%zu hash=%016llx",
                  (unsigned long long)index, f->out.count, written, f->skipped, verdicts,
                  (unsigned long long)latest_before, (unsigned long long)latest, buf->len,
                  (unsigned long long)entry_hash(buf));
}

/* Tell raft the threshold the policy asks for now (htkv_cfsm_snapshot_policy()). */
static void
snapshot_policy_apply(struct cluster_fsm *f)
{
    unsigned stretched =
        f->snap_every > UINT_MAX / FSM_SNAP_STRETCH ? UINT_MAX : f->snap_every * FSM_SNAP_STRETCH;
    unsigned want =
        f->snap_bytes == 0 || f->bytes_since >= f->snap_bytes ? f->snap_every : stretched;
    raft_set_snapshot_threshold(f->raft, want); /* a store of one field */
}

void
htkv_cfsm_snapshot_policy(struct cluster_fsm *f, unsigned every, uint64_t bytes)
{
    CL_ASSERT(every > 0);
    CL_ASSERT(f->raft != NULL);
    f->snap_every = every;
    f->snap_bytes = bytes;
    snapshot_policy_apply(f);
}

static int
fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    struct cluster_fsm *f = fsm->data;
    CL_ASSERT(f->raft != NULL);
    if (f->failed) {
        return RAFT_IOERR; /* invariant 3 */
    }
    raft_index index = raft_last_applied(f->raft) + 1;
    if (index > FSM_INDEX_MAX) {
        return fsm_fail(f, -EOVERFLOW, "the raft index is past the versions of the store");
    }
    struct entry_reader r;
    uint32_t count = 0;
    uint64_t latest_before = 0;
    f->out.count = 0;
    f->skipped = 0;
    *result = &f->out;
    if (f->trace) {
        if (htkv_latest_version(f->db, &latest_before) != 0) {
            latest_before = 0;
        }
    }
    if (htkv_entry_open(&r, buf->base, buf->len, &count) != 0) {
        if (f->trace) {
            trace_apply(f, index, buf, latest_before);
        }
        return 0; /* malformed: no results; every request of it fails with -EINVAL */
    }
    if (results_reserve(f, count) != 0) {
        return fsm_fail(f, -ENOMEM, "allocating results");
    }
    for (uint32_t j = 0; j < count; j++) {
        struct fsm_result *res = &f->out.res[j];
        if (j > 0 && f->out.res[j - 1].rc == -EINVAL) {
            *res = (struct fsm_result){ .rc = -EINVAL }; /* lost the framing */
        } else if (apply_request(f, &r, FSM_VERSION(index, j + 1), res) != 0) {
            return RAFT_IOERR;
        }
        f->out.count = j + 1;
    }
    f->applied_entries++;
    f->applied_under_snapshot += f->snap_view != NULL;
    f->bytes_since += buf->len;
    snapshot_policy_apply(f);
    if (f->trace) {
        trace_apply(f, index, buf, latest_before);
    }
    return 0;
}

/* A snapshot that failed is not fatal (the store is intact): raft 0.15 tries again after a later
 * apply. Logged once until one works. */
static void
snapshot_warn(struct cluster_fsm *f, int rc, const char *what)
{
    if (!f->snap_warned) {
        htkv_cl_log(f->log_fn, f->log_ctx, HTKV_LOG_WARN, "snapshot failed (%s): %s (%s)", what,
                    htkv_strerror(rc), htkv_last_error());
    }
    f->snap_warned = true;
}

/*
 * Loop thread, between applies: fix the snapshot's moment. A cut view is the store at its
 * version, which is the store at raft's last applied index (the snapshot's). Nothing is written
 * here: fsm_snapshot_async() writes the view on a libuv worker thread while applies go on.
 */
static int
fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster_fsm *f = fsm->data;
    if (f->failed) {
        return RAFT_IOERR;
    }
    CL_ASSERT(f->snap_view == NULL); /* raft takes one snapshot at a time */
    int rc = htkv_view_open_cut(f->db, &f->snap_view);
    if (rc != 0) {
        /* RAFT_BUSY is the code raft 0.15 treats as transient (takeSnapshot()); it calls no
         * finalize after a failed snapshot, and nothing is held. */
        snapshot_warn(f, rc, "opening a view");
        return RAFT_BUSY;
    }
    f->snap_index = raft_last_applied(f->raft);
    f->bytes_at_take = f->bytes_since; /* counted off once raft stored it (finalize) */
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

/* A snapshot streamed into memory: one raft buffer growing to hold it. */
struct snap_sink {
    void *base;
    size_t cap;
    size_t size; /* the end of the furthest piece: the snapshot's size once done */
};

/* htkv_view_snapshot_stream()'s sink. */
static int
snapshot_sink(void *ctx, uint64_t off, const void *buf, size_t len)
{
    struct snap_sink *k = ctx;
    if (off + len > k->cap) {
        size_t cap = k->cap < 64 * 1024 ? 64 * 1024 : k->cap;
        while (cap < off + len) {
            cap *= 2;
        }
        void *p = raft_realloc(k->base, cap);
        if (p == NULL) {
            return -ENOMEM;
        }
        k->base = p;
        k->cap = cap;
    }
    memcpy((char *)k->base + off, buf, len);
    k->size = off + len > k->size ? (size_t)(off + len) : k->size;
    return 0;
}

/*
 * A libuv worker thread: the view's snapshot into one buffer (raft 0.15 takes a snapshot as
 * buffers in memory), streamed: no file, no disk write, no sync. Touches only the view and the
 * fields fsm_snapshot() set; the loop thread applies meanwhile. A failure returns an error: raft
 * then calls fsm_snapshot_finalize() and takes no snapshot this time.
 */
static int
fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster_fsm *f = fsm->data;
    CL_ASSERT(f->snap_view != NULL);
    struct snap_sink k = { 0 };
    int rc = htkv_view_snapshot_stream(f->snap_view, snapshot_sink, &k);
    if (rc == 0) {
        *bufs = raft_malloc(sizeof(**bufs));
        rc = *bufs == NULL ? -ENOMEM : 0;
    }
    struct raft_buffer b = { .base = k.base, .len = k.size };
    if (rc != 0) {
        raft_free(b.base);
        snapshot_warn(f, rc, "writing it");
        return RAFT_IOERR;
    }
    f->snap_warned = false;
    (*bufs)[0] = b;
    *n_bufs = 1;
    if (f->trace) {
        htkv_cl_trace(f->log_fn, f->log_ctx, f->raft->id,
                      "snapshot taken at applied index=%llu version=%llu bytes=%zu",
                      (unsigned long long)f->snap_index,
                      (unsigned long long)htkv_view_version(f->snap_view), b.len);
    }
    return 0;
}

/* Loop thread, once raft stored the snapshot or gave it up: free the buffer and the view. */
static int
fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster_fsm *f = fsm->data;
    f->snapshots += *n_bufs > 0;
    if (f->raft->log.snapshot.last_index == f->snap_index) {
        /* raft stored it (takeSnapshotCb() moves the log's snapshot before it finalizes): the
         * bytes it holds no longer count. Otherwise they do, and raft tries after the next
         * apply, as after a failed snapshot before this policy. */
        f->bytes_since -= f->bytes_at_take;
        f->bytes_at_take = 0;
        snapshot_policy_apply(f);
    }
    for (unsigned i = 0; *bufs != NULL && i < *n_bufs; i++) {
        raft_free((*bufs)[i].base);
    }
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    htkv_view_close(f->snap_view);
    f->snap_view = NULL;
    return 0;
}

static int
write_file(const char *path, const struct raft_buffer *buf)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    int rc = 0;
    for (size_t done = 0; done < buf->len && rc == 0;) {
        ssize_t n = write(fd, (const char *)buf->base + done, buf->len - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        rc = n < 0 ? -errno : 0;
        done += n > 0 ? (size_t)n : 0;
    }
    close(fd);
    return rc;
}

/* Install the snapshot in f->snap_path if it is newer than the store. */
static int
restore_file(struct cluster_fsm *f)
{
    uint64_t snap = 0, latest = 0;
    int rc = htkv_snapshot_file_version(f->snap_path, &snap, NULL);
    if (rc != 0) {
        htkv_cl_log(f->log_fn, f->log_ctx, HTKV_LOG_ERROR, "snapshot received is bad: %s (%s)",
                    htkv_strerror(rc), htkv_last_error());
        return RAFT_CORRUPT; /* not installed; the store is unchanged */
    }
    rc = htkv_latest_version(f->db, &latest);
    if (rc == 0 && snap > latest) {
        pthread_rwlock_wrlock(&f->views); /* ordered reads in progress end first */
        rc = htkv_snapshot_restore(f->db, f->snap_path);
        pthread_rwlock_unlock(&f->views);
        f->restores += rc == 0;
    }
    if (rc == 0) {
        f->bytes_since = 0; /* raft's log starts at the snapshot, installed or not */
        snapshot_policy_apply(f);
    }
    if (f->trace) {
        /* raft set its log's snapshot to the one being restored before calling restore */
        htkv_cl_trace(f->log_fn, f->log_ctx, f->raft->id,
                      "restore snapshot index=%llu version=%llu store=%llu: %s (rc %d)",
                      (unsigned long long)f->raft->log.snapshot.last_index,
                      (unsigned long long)snap, (unsigned long long)latest,
                      snap > latest ? "installed" : "kept the store", rc);
    }
    return rc == 0 ? 0 : fsm_fail(f, rc, "installing a snapshot");
}

static int
fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct cluster_fsm *f = fsm->data;
    if (f->failed) {
        return RAFT_IOERR;
    }
    if (f->snap_view != NULL) {
        /* raft 0.15 refuses an install while it takes a snapshot (and the store would refuse a
         * restore under an open view): reaching here would be raft's bug, so stop loudly. */
        return fsm_fail(f, HTKV_EBUSY, "installing a snapshot while taking one");
    }
    int rc = write_file(f->snap_path, buf);
    if (rc != 0) {
        unlink(f->snap_path);
        return fsm_fail(f, rc, "writing a received snapshot");
    }
    rc = restore_file(f);
    unlink(f->snap_path);
    if (rc == 0) {
        raft_free(buf->base); /* on success the buffer is ours (raft 0.15 snapshotRestore) */
    }
    return rc;
}

int
htkv_cfsm_init(struct cluster_fsm *f, htkv_db *db, const char *scratch_dir, htkv_log_fn log_fn,
               void *log_ctx)
{
    CL_ASSERT(db != NULL);
    CL_ASSERT(scratch_dir != NULL);
    memset(f, 0, sizeof(*f));
    size_t n = strlen(scratch_dir) + sizeof("/snapshot.tmp");
    f->snap_path = malloc(n);
    if (f->snap_path == NULL) {
        return -ENOMEM;
    }
    snprintf(f->snap_path, n, "%s/snapshot.tmp", scratch_dir);
    /* Writer first: a restore waiting for reads in progress must not wait for new ones too
     * (glibc's default lets readers that keep coming starve it). */
    pthread_rwlockattr_t attr;
    int rc = pthread_rwlockattr_init(&attr);
    if (rc == 0) {
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        rc = pthread_rwlock_init(&f->views, &attr);
        pthread_rwlockattr_destroy(&attr);
    }
    if (rc != 0) {
        free(f->snap_path);
        f->snap_path = NULL;
        return -rc;
    }
    f->db = db;
    f->log_fn = log_fn;
    f->log_ctx = log_ctx;
    f->trace = htkv_cl_trace_wanted();
    f->fsm = (struct raft_fsm){ .version = 3,
                                .data = f,
                                .apply = fsm_apply,
                                .snapshot = fsm_snapshot,
                                .restore = fsm_restore,
                                .snapshot_finalize = fsm_snapshot_finalize,
                                .snapshot_async = fsm_snapshot_async };
    return 0;
}

void
htkv_cfsm_fini(struct cluster_fsm *f)
{
    if (f->snap_path != NULL) {
        pthread_rwlock_destroy(&f->views); /* initialised with it */
    }
    CL_ASSERT(f->snap_view == NULL); /* raft finalized every snapshot before it closed */
    free(f->snap_path);
    free(f->out.res);
    free(f->cmds);
    memset(f, 0, sizeof(*f));
}
