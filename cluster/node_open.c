/*
 * node_open.c - opening and closing an htkv_cluster member, and the store's trust record.
 *
 * Durability (cluster/README.md, "Durability"). The local store runs in HTKV_SYNC_NEVER: raft's
 * log is the write-ahead log. DATA_DIR/store.state says whether the store can be trusted at
 * open: "clean" after a clean close, "open <boot id>" while open. A store still marked open
 * under another boot id went through a power loss or a kernel crash, which may have lost
 * writes it had applied (in any order across its shards), so it is set aside as
 * DATA_DIR/store.lost (replacing an older one) and a fresh store is rebuilt by raft from its
 * last snapshot and the log after it, which hold every committed write durably. A store marked
 * open under the same boot id was left by a crash of the process only: the page cache kept
 * every write it finished applying, in order, so it is kept and raft's replay skips what it
 * holds; except the write it was applying when the process died, which recovery cuts as a torn
 * tail while the store's latest version still counts it (a version seen on disk is never used
 * again), so that raft's replay would skip it for good (found by test_cluster_kill: a write
 * missing on one member); likewise a batch over several shards killed between its parts. A
 * store whose recovery cut, skipped or dropped anything is therefore set aside and rebuilt too.
 * While that check runs, store.state says "check": a crash during it sets the store aside at the
 * next open. A store whose store.state is missing, empty or anything else this layer does not
 * write (a file deleted or damaged by hand or by the disk) is set aside too: nothing vouches
 * for it, and raft's snapshot and log rebuild it.
 *
 * Invariants
 *   1. Every check of htkv_cluster_open() that can fail on bad input runs before anything is
 *      created (config.h); a later failure (a store configuration htkv_open() refuses, raft
 *      refusing to start) removes the data directory again when this open created it.
 *   2. store.state is "open ..." or "check" (durably: written, fsynced, directory fsynced)
 *      before the store is opened for writing, and "clean" only after htkv_close() succeeded.
 *   3. The store handed to raft's state machine holds, for every version up to its latest, the
 *      write the log has there: a store that may not (a power loss, a torn write) is rebuilt.
 */
#include "cluster/node.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/config.h"
#include "cluster/util.h"

static char *
path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL) {
        snprintf(p, n, "%s/%s", dir, name);
    }
    return p;
}

static int
fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Replace DATA_DIR/store.state with @p text durably (tmp, fsync, rename, fsync dir). */
static int
state_write(struct htkv_cluster *c, const char *text)
{
    char *path = path_join(c->data_dir, "store.state");
    char *tmp = path_join(c->data_dir, "store.state.tmp");
    int rc = path == NULL || tmp == NULL ? -ENOMEM : 0;
    int fd = rc == 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (rc == 0 && fd < 0) {
        rc = -errno;
    }
    size_t len = strlen(text);
    if (rc == 0 && (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0)) {
        rc = errno != 0 ? -errno : -EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = fsync_dir(c->data_dir);
    }
    free(path);
    free(tmp);
    return rc;
}

/* This boot's id (/proc/sys/kernel/random/boot_id) into @p out (37 bytes), "" if unknown. */
static void
boot_id(char out[64])
{
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (f == NULL) {
        return;
    }
    if (fgets(out, 64, f) == NULL) {
        out[0] = '\0';
    }
    out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

/* Read store.state into @p text ("" when absent). 0 or a negative errno (unreadable). */
static int
state_read(struct htkv_cluster *c, char text[128])
{
    char *path = path_join(c->data_dir, "store.state");
    int rc = path == NULL ? -ENOMEM : 0;
    text[0] = '\0';
    FILE *f = rc == 0 ? fopen(path, "re") : NULL;
    if (rc == 0 && f == NULL && errno != ENOENT) {
        rc = -errno; /* unreadable: neither trusted nor set aside */
    }
    if (f != NULL) {
        if (fgets(text, 128, f) == NULL) {
            text[0] = '\0';
        }
        fclose(f);
    }
    text[strcspn(text, "\n")] = '\0';
    free(path);
    return rc;
}

/* Set the store aside as DATA_DIR/store.lost (replacing an older one), durably; raft rebuilds
 * a fresh one from its last snapshot and the log after it. @p why is logged. Without a store,
 * nothing: there is nothing to distrust, and an older store.lost stays. */
static int
set_aside(struct htkv_cluster *c, const char *why)
{
    struct stat st;
    if (lstat(c->store_dir, &st) != 0) {
        return errno == ENOENT ? 0 : -errno; /* nothing to set aside: the older one stays */
    }
    char *lost = path_join(c->data_dir, "store.lost");
    int rc = lost == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        htkv_cl_log(c->log_fn, c->log_ctx, HTKV_LOG_WARN,
                    "%s %s: it is set aside as %s and rebuilt from raft's snapshot and log",
                    c->store_dir, why, lost);
    }
    if (rc == 0 && nftw(lost, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
        rc = -errno;
    }
    if (rc == 0 && rename(c->store_dir, lost) != 0) {
        rc = -errno;
    }
    if (rc == 0) {
        rc = fsync_dir(c->data_dir);
    }
    free(lost);
    return rc;
}

/*
 * Decide from store.state whether the store can be trusted (see the top): set it aside when it
 * may have lost writes (another boot, or a check cut short); *@p crashed when the process died
 * in this boot (the store is checked after its recovery, check_crashed()). 0 or an error.
 */
static int
state_check(struct htkv_cluster *c, const char *boot, bool *crashed)
{
    char text[128];
    int rc = state_read(c, text);
    bool open = strncmp(text, "open ", 5) == 0;
    bool other_boot = open && (boot[0] == '\0' || strcmp(text + 5, boot) != 0);
    *crashed = rc == 0 && open && !other_boot;
    /* Only a record this layer wrote vouches for a store; set_aside() leaves alone a member
     * with no store (a new one, or a power loss right after a set-aside). */
    if (rc != 0 || *crashed || strcmp(text, "clean") == 0) {
        return rc;
    }
    if (other_boot) {
        return set_aside(c, "was not closed cleanly before a restart of the machine");
    }
    if (strcmp(text, "check") == 0) {
        return set_aside(c, "was being checked after a crash when the process stopped again");
    }
    for (char *p = text; *p != '\0'; p++) {
        *p = *p >= 0x20 && *p < 0x7f ? *p : '?'; /* the log gets no control bytes */
    }
    char why[200];
    snprintf(why, sizeof(why), "has %s (store.state%s%.60s%s), so nothing vouches for it",
             text[0] == '\0' ? "no trust record" : "a trust record this member did not write",
             text[0] == '\0' ? " missing or empty" : ": \"", text, text[0] == '\0' ? "" : "\"");
    return set_aside(c, why);
}

/* Open the store at c->store_dir with the settings the member forces on it. */
static int
store_open(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    htkv_config sc = cfg->store;
    sc.data_dir = c->store_dir;
    sc.sync_mode = HTKV_SYNC_NEVER;
    sc.read_only = 0;
    sc.create_if_missing = 1;
    return htkv_open(&sc, &c->db);
}

/*
 * After a crash of the process (invariant 3): a store whose recovery cut a torn tail, skipped
 * damaged bytes or dropped an incomplete batch (a part written in one shard, not in another)
 * lost the write it was applying when the process died, but its latest version still counts
 * that write (the store never reuses a version it saw on disk), so raft's replay would skip
 * the entry as applied before. Such a store is closed, set aside and rebuilt.
 */
static int
check_crashed(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    struct htkv_stats st;
    int rc = htkv_stats(c->db, &st);
    if (rc != 0 ||
        (st.truncated_bytes == 0 && st.skipped_bytes == 0 && st.discarded_batches == 0)) {
        return rc;
    }
    char why[200];
    snprintf(why, sizeof(why),
             "lost the write it was applying when the process died (recovery cut %llu torn "
             "bytes, skipped %llu damaged bytes, dropped %llu incomplete batches)",
             (unsigned long long)st.truncated_bytes, (unsigned long long)st.skipped_bytes,
             (unsigned long long)st.discarded_batches);
    rc = htkv_close(c->db);
    c->db = NULL;
    if (rc == 0) {
        rc = set_aside(c, why);
    }
    return rc == 0 ? store_open(c, cfg) : rc;
}

static int
make_dir(const char *dir)
{
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

/* Allocate @p c's paths and copy what it keeps of @p cfg. */
static int
node_init(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    c->id = cfg->id;
    snprintf(c->address, sizeof(c->address), "%s", cfg->address);
    c->log_fn = cfg->store.log_fn;
    c->log_ctx = cfg->store.log_ctx;
    c->entry_bytes_max = cfg->entry_bytes_max;
    c->val_max = cfg->store.max_value_bytes;
    c->tail = &c->head;
    atomic_init(&c->failed, false);
    c->data_dir = strdup(cfg->data_dir);
    c->raft_dir = path_join(cfg->data_dir, "raft");
    c->store_dir = path_join(cfg->data_dir, "store");
    if (c->data_dir == NULL || c->raft_dir == NULL || c->store_dir == NULL) {
        return -ENOMEM;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        return -ENOMEM;
    }
    if (pthread_cond_init(&c->cv, NULL) != 0) {
        pthread_mutex_destroy(&c->mu);
        return -ENOMEM;
    }
    return 0;
}

static void
node_free(struct htkv_cluster *c)
{
    free(c->data_dir);
    free(c->raft_dir);
    free(c->store_dir);
    free(c);
}

/* Directories, trust record (invariants 2 and 3), store and state machine. */
static int
open_store(struct htkv_cluster *c, const htkv_cluster_config *cfg)
{
    char boot[64];
    boot_id(boot);
    char text[96];
    snprintf(text, sizeof(text), "open %s\n", boot);
    bool crashed = false;
    int rc = mkdir(c->data_dir, 0700) == 0 ? 0 : -errno;
    c->created_dir = rc == 0;
    rc = rc == -EEXIST ? 0 : rc;
    if (rc == 0) {
        rc = make_dir(c->raft_dir);
    }
    if (rc == 0) {
        rc = state_check(c, boot, &crashed);
    }
    if (rc == 0) {
        rc = state_write(c, crashed ? "check\n" : text);
    }
    if (rc == 0) {
        rc = store_open(c, cfg);
    }
    if (rc == 0 && crashed) {
        rc = check_crashed(c, cfg);
        rc = rc == 0 ? state_write(c, text) : rc;
    }
    if (rc != 0) {
        if (c->db != NULL) {
            (void)htkv_close(c->db);
            c->db = NULL;
        }
        return rc;
    }
    rc = htkv_cfsm_init(&c->fsm, c->db, c->data_dir, c->log_fn, c->log_ctx);
    if (rc != 0) {
        (void)htkv_close(c->db);
        c->db = NULL;
    }
    return rc;
}

/*
 * Start the loop thread with every signal blocked: the host's signals go to its own threads,
 * and a write to a peer that closed its connection returns EPIPE instead of raising SIGPIPE,
 * whose default action would end the host process (libuv writes to sockets with write(2)).
 */
static int
start_thread(struct htkv_cluster *c)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = -pthread_create(&c->thread, NULL, htkv_cnode_io_thread, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int
htkv_cluster_open(const htkv_cluster_config *cfg, htkv_cluster **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    *out = NULL;
    int rc = htkv_cconfig_check(cfg); /* invariant 1 */
    if (rc == 0) {
        rc = htkv_caddr_probe(cfg->address);
    }
    if (rc != 0) {
        return rc;
    }
    struct htkv_cluster *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    rc = node_init(c, cfg);
    if (rc != 0) {
        goto fail_free;
    }
    rc = open_store(c, cfg);
    if (rc != 0) {
        goto fail_sync;
    }
    rc = htkv_cnode_io_start(c, cfg);
    if (rc != 0) {
        goto fail_store;
    }
    rc = start_thread(c);
    if (rc != 0) {
        htkv_cnode_io_abort(c);
        goto fail_store;
    }
    *out = c;
    return 0;
fail_store:
    htkv_cfsm_fini(&c->fsm);
    (void)htkv_close(c->db);
fail_sync:
    if (c->created_dir) {
        /* Made by this call and holding only what it wrote: a failed open leaves nothing. */
        (void)nftw(c->data_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
fail_free:
    node_free(c);
    return rc;
}

int
htkv_cluster_close(htkv_cluster *c)
{
    if (c == NULL) {
        return 0;
    }
    pthread_mutex_lock(&c->mu);
    c->closing = true; /* invariant 3 of node.h */
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->wake);
    pthread_join(c->thread, NULL);
    CL_ASSERT(c->head == NULL);
    uv_loop_close(&c->loop);
    htkv_cfsm_fini(&c->fsm);
    int rc = htkv_close(c->db);
    if (rc == 0) {
        rc = state_write(c, "clean\n"); /* invariant 2 */
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    node_free(c);
    return rc;
}
