/*
 * open.c - opening, locking and closing a store (lifecycle layer, above the features it starts and
 * stops): the directory and its LOCK, creating a store or loading its manifest, the shards,
 * recovery, leftovers, the worker and periodic threads; at close the final syncs, hints and the
 * clean-close record.
 *
 * Open sequence (create_store when there is no CURRENT):
 *   mkdir -> LOCK (flock) -> CURRENT? -- no --> nothing of a store at any depth? (check_fresh_dir)
 *                                               -- yes -> create shard dirs, MANIFEST-000001,
 *                                                         CURRENT;  -- no -> HTKV_ECORRUPT
 *                                     -- yes -> load manifest
 *   -> open shards -> recover (checks, then changes) -> remove leftovers -> rewrite a large
 *   manifest -> start workers, syncer, compactor
 *
 * Invariants
 *   1. Only the process holding LOCK (flock, per open file description) writes the directory.
 *   2. CURRENT exists only once the store is complete. A directory without CURRENT is created
 *      into only when it holds nothing of a store at any depth; otherwise it is a store that
 *      lost its CURRENT: refused with HTKV_ECORRUPT, nothing touched (htkvctl repair).
 *   3. After htkv_close() has waited for the EBR slots, no call touches the store any more.
 *   4. A failed open changes nothing it did not create: it removes the LOCK it created, and
 *      recovery writes nothing before every check passed.
 *   5. A clean close records each segment's end and the exact latest version in the manifest
 *      after the final sync (record_clean_close()): damage before those ends is corruption, and
 *      a clean reopen skips no version.
 *   6. The shards' environment (env) is complete before the first shard is created.
 *   7. A store has 1 to MAN_SHARDS_MAX shards; a writable handle leases one arena per worker
 *      (one in inline mode) and runs exactly cfg.worker_threads workers once open.
 *   8. No shard publishes a version above the latest version applied (htkv_versions_latest()):
 *      after recovery, and at a clean close, whose recorded latest covers every shard.
 * May call: the shard layer, recovery, workers, the periodic helper, compaction and snapshots
 * (the compactor thread), the manifest and segments.
 */
#include "engine/cold.h"
#include "engine/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/compact.h"
#include "engine/cpus.h"
#include "engine/log.h"
#include "engine/rec.h"
#include "engine/recover.h"
#include "engine/flat.h"
#include "engine/merge.h"
#include "engine/worker.h"
#include "engine/zombie.h"
#include "uring/ur_fault.h"

/* ---- configuration -------------------------------------------------------------------------- */

static int
config_check(const htkv_config *c)
{
    if (c->data_dir == NULL || c->data_dir[0] == '\0' || strlen(c->data_dir) > 3800) {
        htkv_set_error("data_dir must be a non-empty path of at most 3800 bytes");
        return htkv_einval(__func__);
    }
    if (c->shard_count > MAN_SHARDS_MAX) {
        htkv_set_error("shard_count must be at most %u", MAN_SHARDS_MAX);
        return htkv_einval(__func__);
    }
    if (c->max_segment_bytes < (1u << 16) || c->max_segment_bytes > SEG_BYTES_LIMIT) {
        htkv_set_error("max_segment_bytes must be in [64 KiB, 4 GiB)");
        return htkv_einval(__func__);
    }
    if (c->verify_checksums < 0 || c->verify_checksums > 2) {
        htkv_set_error("verify_checksums must be 0, 1 or 2");
        return htkv_einval(__func__);
    }
    if (c->sync_mode < HTKV_SYNC_NEVER || c->sync_mode > HTKV_SYNC_ALWAYS) {
        htkv_set_error("unknown sync_mode %d", c->sync_mode);
        return htkv_einval(__func__);
    }
    if (c->sync_mode == HTKV_SYNC_INTERVAL &&
        (c->fsync_interval_ms == 0 || c->fsync_interval_ms > 60000)) {
        htkv_set_error("fsync_interval_ms must be in [1, 60000]");
        return htkv_einval(__func__);
    }
    if (c->io_backend < HTKV_IO_AUTO || c->io_backend > HTKV_IO_SYNC) {
        htkv_set_error("unknown io_backend %d", c->io_backend);
        return htkv_einval(__func__);
    }
    if (c->worker_threads > 256) {
        htkv_set_error("worker_threads must be at most 256");
        return htkv_einval(__func__);
    }
    if (c->queue_depth == 0 || c->queue_depth > (1u << 20)) {
        htkv_set_error("queue_depth must be in [1, 1048576]");
        return htkv_einval(__func__);
    }
    if (c->recovery != HTKV_RECOVERY_STRICT && c->recovery != HTKV_RECOVERY_SKIP_CORRUPT) {
        htkv_set_error("unknown recovery policy %d", c->recovery);
        return htkv_einval(__func__);
    }
    if (c->max_value_bytes == 0 || c->max_value_bytes > HTKV_VALUE_MAX_LIMIT) {
        htkv_set_error("max_value_bytes must be in [1, %u]", HTKV_VALUE_MAX_LIMIT);
        return htkv_einval(__func__);
    }
    if (!(c->compaction_min_garbage_ratio >= 0.0 && c->compaction_min_garbage_ratio <= 1.0)) {
        htkv_set_error("compaction_min_garbage_ratio must be in [0, 1]");
        return htkv_einval(__func__);
    }
    return 0;
}

/* ---- syncer (HTKV_SYNC_INTERVAL) ------------------------------------------------------------ */

/* One round of the syncer: fdatasync every dirty shard. Returns whether any was: when none is,
 * the syncer sleeps until a shard that becomes dirty kicks it (periodic.h). */
static bool
syncer_round(void *arg)
{
    struct htkv_db *db = arg;
    bool any = false;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        bool synced = false;
        (void)htkv_shard_sync_dirty(db_shard(db, i), &synced); /* a failure marks it failed */
        any |= synced;
    }
    return any;
}

/* ---- OPTIONS ------------------------------------------------------------------------------ */

static const char *
sync_mode_name(int m)
{
    return m == HTKV_SYNC_ALWAYS ? "always" : m == HTKV_SYNC_NEVER ? "never" : "interval";
}

/*
 * DIR/OPTIONS: the configuration of the last writable open, for operators (htkvctl info). It
 * is informational: written through OPTIONS.tmp and a rename but not fsynced (an open must not
 * pay two syncs for it), never read by the engine, and a lost or stale copy changes nothing.
 */
static void
write_options(struct htkv_db *db)
{
    char buf[1024];
    time_t now = time(NULL);
    struct tm tm;
    char when[32] = "unknown";
    if (gmtime_r(&now, &tm) != NULL) {
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    const htkv_config *c = &db->cfg;
    int n = snprintf(buf, sizeof(buf),
                     "# htkv: configuration of the last writable open (informational)\n"
                     "opened_at=%s\nsync_mode=%s\nfsync_interval_ms=%u\nworker_threads=%u\n"
                     "shard_count=%u\nmax_segment_bytes=%llu\ncompaction_interval_ms=%u\n"
                     "compaction_min_garbage_ratio=%.3f\nhint_files=%d\n",
                     when, sync_mode_name(c->sync_mode), c->fsync_interval_ms, db->nworkers,
                     db->shard_count, (unsigned long long)c->max_segment_bytes,
                     c->compaction_interval_ms, c->compaction_min_garbage_ratio, c->hint_files);
    if (n <= 0 || (size_t)n >= sizeof(buf)) {
        return;
    }
    int fd =
        htkv_fault_fails(HTKV_FAULT_CREATE)
            ? -1
            : openat(db->dir_fd, "OPTIONS.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return;
    }
    bool ok = write(fd, buf, (size_t)n) == n;
    close(fd);
    if (!ok || renameat(db->dir_fd, "OPTIONS.tmp", db->dir_fd, "OPTIONS") != 0) {
        /* A leftover OPTIONS.tmp is truncated by the next writable open. */
        (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(db->dir_fd, "OPTIONS.tmp", 0));
    }
}

/* ---- open ----------------------------------------------------------------------------------- */

/* Names an htkv store may hold at its top level (CURRENT aside; lost/ is where htkvctl repair
 * moves what it could not use). */
static bool
is_store_name(const char *name)
{
    unsigned long long n;
    unsigned s;
    char c;
    return strcmp(name, "LOCK") == 0 || strcmp(name, "CURRENT.tmp") == 0 ||
           strcmp(name, "OPTIONS") == 0 || strcmp(name, "OPTIONS.tmp") == 0 ||
           strcmp(name, "lost") == 0 ||
           (sscanf(name, "MANIFEST-%6llu%c", &n, &c) == 1 && strlen(name) == 15) ||
           (sscanf(name, "shard-%3u%c", &s, &c) == 1 && strlen(name) == 9) ||
           (sscanf(name, "snapshot-%6llu.sna%c", &n, &c) == 2 && c == 'p' && strlen(name) == 22);
}

/*
 * Does top-level entry @p name (a store name) show that a store lived here? A shard directory
 * holding anything, a manifest longer than the header and INIT edit that creation writes first,
 * OPTIONS (written by a successful open) or a snapshot do. 1 = yes, 0 = no (what an interrupted
 * creation leaves), HTKV_ENOTSTORE when a shard name is not a directory, or -errno.
 */
static int
holds_store_data(struct htkv_db *db, const char *name)
{
    struct stat st;
    if (fstatat(db->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    if (strncmp(name, "shard-", 6) == 0 || strcmp(name, "lost") == 0) {
        if (!S_ISDIR(st.st_mode)) {
            htkv_set_error("%s: '%s' is not a directory, so this is not an htkv store", db->dir,
                           name);
            return HTKV_ENOTSTORE;
        }
        int fd = openat(db->dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        if (d == NULL) {
            int rc = -errno;
            if (fd >= 0) {
                close(fd);
            }
            return rc;
        }
        int found = 0;
        struct dirent *de;
        while (found == 0 && (de = readdir(d)) != NULL) {
            found = strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        }
        closedir(d);
        return found;
    }
    if (strncmp(name, "MANIFEST-", 9) == 0) {
        return st.st_size > (off_t)(MAN_HDR_BYTES + MAN_EDIT_HDR + 16);
    }
    return strcmp(name, "OPTIONS") == 0 || strncmp(name, "snapshot-", 9) == 0;
}

/*
 * A directory without CURRENT is new only when it holds nothing of a store at any depth: it is
 * empty, or holds what an interrupted creation leaves (LOCK, empty shard directories, the first
 * manifest before CURRENT named it). 0, HTKV_ENOTSTORE (a name that is not part of a store),
 * HTKV_ECORRUPT (a store that lost its CURRENT: nothing of it is touched, see htkvctl repair)
 * or -errno.
 */
static int
check_fresh_dir(struct htkv_db *db)
{
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : dup(db->dir_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int rc = -errno;
        htkv_set_error("%s: cannot be listed: %s", db->dir, htkv_strerror(rc));
        if (fd >= 0) {
            close(fd);
        }
        return rc;
    }
    rewinddir(d); /* the duplicate shares its position with db->dir_fd */
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        if (!is_store_name(de->d_name)) {
            htkv_set_error("%s: holds '%s', which is not part of an htkv store", db->dir,
                           de->d_name);
            rc = HTKV_ENOTSTORE;
            break;
        }
        rc = holds_store_data(db, de->d_name);
        if (rc == 1) {
            htkv_set_error("%s: CURRENT is missing, but the directory holds a store ('%s'); "
                           "nothing was changed: see htkvctl repair",
                           db->dir, de->d_name);
            rc = HTKV_ECORRUPT;
        }
    }
    closedir(d);
    return rc;
}

static int
mkdir_durable(int parent_fd, const char *name)
{
    if (mkdirat(parent_fd, name, 0755) != 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

static int
create_store(struct htkv_db *db)
{
    unsigned shards = db->cfg.shard_count;
    if (shards == 0 && db->cfg.sync_mode == HTKV_SYNC_ALWAYS) {
        /* Every shard with waiting writers costs its own fdatasync per group: one shard per
         * thread that syncs (a worker, or the callers' leader inline) groups the most. */
        shards = db->cfg.worker_threads > 0 ? db->cfg.worker_threads : 1;
        shards = shards > MAN_SHARDS_MAX ? MAN_SHARDS_MAX : shards;
    } else if (shards == 0) {
        shards = 2 * db->cpus;
        shards = shards < 4 ? 4 : shards > 64 ? 64 : shards;
    }
    /* Invariants 1 and 7: created under LOCK, by a writable open; config_check() bounded it. */
    HTKV_ASSERT(!db->read_only && db->lock_fd >= 0 && db->man == NULL);
    HTKV_ASSERT(shards >= 1 && shards <= MAN_SHARDS_MAX);
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
        return -errno;
    }
    for (unsigned i = 0; i < shards; i++) {
        char name[32];
        snprintf(name, sizeof(name), "shard-%03u", i);
        int rc = mkdir_durable(db->dir_fd, name);
        if (rc != 0) {
            return rc;
        }
    }
    if (fsync(db->dir_fd) != 0) {
        return -errno;
    }
    htkv_fault_synced(db->dir_fd);
    /* The manifest write ends with CURRENT: the store exists from that point on. */
    return htkv_manifest_create(db->dir_fd, shards, seed, &db->man);
}

/*
 * Make the name of the store's directory durable by syncing its parent. When this open created
 * the directory, a failure fails the open: nothing written to the store could be promised to
 * survive a power loss that takes the directory back. Otherwise an earlier open made it durable
 * and this sync is a second chance only, so its failure is ignored; so is a parent that cannot
 * be read (EACCES: nothing the store can do about it). 0 or -errno.
 */
static int
sync_parent_dir(struct htkv_db *db, bool created)
{
    char parent[4096];
    snprintf(parent, sizeof(parent), "%s/..", db->dir);
    int pfd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (pfd < 0) {
        rc = errno == EACCES || errno == EPERM ? 0 : -errno;
    } else {
        rc = fsync(pfd) == 0 ? 0 : -errno;
        close(pfd);
    }
    if (rc != 0 && created) {
        htkv_set_error("%s: cannot sync the new directory's parent: %s", db->dir,
                       htkv_strerror(rc));
        return rc;
    }
    return 0;
}

static int
open_dir_and_lock(struct htkv_db *db, bool take_lock)
{
    bool created = false;
    if (!db->read_only && db->cfg.create_if_missing) {
        if (mkdir(db->dir, 0755) == 0) {
            created = true;
        } else if (errno != EEXIST) {
            int rc = -errno;
            htkv_set_error("%s: cannot create directory", db->dir);
            return rc;
        }
    }
    db->dir_fd =
        htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : open(db->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (db->dir_fd < 0) {
        int rc = errno == ENOENT ? HTKV_ENOTFOUND : -errno;
        htkv_set_error("%s: cannot open directory: %s", db->dir, htkv_strerror(rc));
        return rc;
    }
    if (!db->read_only) {
        int rc = sync_parent_dir(db, created);
        if (rc != 0) {
            return rc;
        }
    }
    int flags = db->read_only ? O_RDONLY : O_RDWR | O_CREAT;
    if (!db->read_only) {
        /* Remember whether LOCK is ours, to remove it again from a foreign directory. */
        int fd = openat(db->dir_fd, "LOCK", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0) {
            db->lock_created = true;
            close(fd);
        }
    }
    db->lock_fd = htkv_fault_fails(HTKV_FAULT_OPEN)
                      ? -1
                      : openat(db->dir_fd, "LOCK", flags | O_CLOEXEC, 0644);
    if (db->lock_fd < 0) {
        if (db->read_only && errno == ENOENT) {
            htkv_set_error("%s: no store here", db->dir);
            return HTKV_ENOTFOUND;
        }
        int rc = -errno;
        htkv_set_error("%s/LOCK: cannot be opened: %s", db->dir, htkv_strerror(rc));
        return rc;
    }
    /* A read-only opener shares the lock with other read-only openers, never with a writer. */
    if (take_lock && flock(db->lock_fd, (db->read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            htkv_set_error("%s: the store is open in another handle or process", db->dir);
            return HTKV_ELOCKED;
        }
        return -errno;
    }
    return 0;
}

/*
 * At a writable open of an existing store, before anything is removed: sync the store's
 * directory, so that CURRENT names on disk the manifest it names now. A rename of CURRENT whose
 * directory sync failed or never ran (a crash in between) is settled here; without it, removing
 * the files only the other manifest lists could leave a power loss nothing to open. A failure
 * fails the open (a failed sync is never trusted). 0 or -errno.
 */
static int
sync_store_dir(struct htkv_db *db)
{
    if (fsync(db->dir_fd) != 0) {
        int rc = -errno;
        htkv_set_error("%s: cannot sync the directory: %s", db->dir, htkv_strerror(rc));
        return rc;
    }
    htkv_fault_synced(db->dir_fd);
    return 0;
}

/*
 * Remove files of the store's directory that nothing reads: manifests CURRENT does not name
 * (one whose unlink failed after a rewrite, or one written before a failed switch of CURRENT)
 * and temporary files of interrupted writes (CURRENT.tmp, snapshot-NNNNNN.snap.tmp). They only
 * take space, so a directory that cannot be listed or a file that cannot be removed is logged
 * and the open goes on; the next open tries again.
 */
static void
remove_leftovers(struct htkv_db *db)
{
    HTKV_ASSERT(!db->read_only && db->lock_fd >= 0 && !db->unlocked); /* invariant 1 */
    int fd = htkv_fault_fails(HTKV_FAULT_OPEN) ? -1 : dup(db->dir_fd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        htkv_db_log(db, HTKV_LOG_WARN, "%s: cannot be listed (%s); leftovers not removed", db->dir,
                    strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    rewinddir(d); /* the duplicate shares its position with db->dir_fd */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        unsigned long long n;
        char c, tail[16];
        bool manifest = sscanf(de->d_name, "MANIFEST-%6llu%c", &n, &c) == 1 &&
                        strlen(de->d_name) == 15 && n != db->man->number;
        bool tmp = strcmp(de->d_name, "CURRENT.tmp") == 0 ||
                   (sscanf(de->d_name, "snapshot-%6llu.%15s", &n, tail) == 2 &&
                    strncmp(tail, "snap.tmp", 8) == 0 && (tail[8] == '\0' || tail[8] == '.') &&
                    strncmp(de->d_name + 15, ".snap.tmp", 9) == 0);
        if (!manifest && !tmp) {
            continue;
        }
        if ((htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(db->dir_fd, de->d_name, 0)) == 0) {
            htkv_db_log(db, HTKV_LOG_INFO, "%s/%s: left over; removed", db->dir, de->d_name);
        } else if (errno != ENOENT) {
            htkv_db_log(db, HTKV_LOG_WARN, "%s/%s: left over; not removed: %s", db->dir, de->d_name,
                        strerror(errno));
        }
    }
    closedir(d);
}

static int
open_shards(struct htkv_db *db)
{
    db->shard_count = db->man->shard_count;
    db->hash_seed = db->man->hash_seed;
    /* Invariant 7: the manifest was checked when it was loaded or created. */
    HTKV_ASSERT(db->shard_count >= 1 && db->shard_count <= MAN_SHARDS_MAX);
    HTKV_ASSERT(db->ro == NULL && db->narenas == 0);
    db->ro = aligned_alloc(HTKV_CACHELINE,
                           htkv_align_up(db->shard_count * sizeof(*db->ro), HTKV_CACHELINE));
    if (db->ro == NULL) {
        return -ENOMEM;
    }
    memset(db->ro, 0, db->shard_count * sizeof(*db->ro));
    /* One arena per worker (the shards it owns allocate from it), one in inline mode. */
    unsigned want = !db->read_only && db->cfg.worker_threads > 0 ? db->cfg.worker_threads : 1;
    db->arenas = htkv_mem_calloc(want, sizeof(*db->arenas));
    if (db->arenas == NULL) {
        return -ENOMEM;
    }
    for (; db->narenas < want; db->narenas++) {
        int rc = htkv_arena_lease(&db->arenas[db->narenas]);
        if (rc != 0) {
            return rc;
        }
    }
    db->ver.man = db->man;
    db->ver.dir = db->dir;
    db->ver.read_only = db->read_only;
    /* env.log and the atomics were set at the start of the open. */
    db->env.dir = db->dir;
    db->env.max_segment_bytes = db->cfg.max_segment_bytes;
    db->env.sync_mode = db->cfg.sync_mode;
    db->env.verify_checksums = db->cfg.verify_checksums;
    db->env.sorted_runs = db->cfg.sorted_runs != 0;
    db->env.shard_count = db->shard_count;
    db->env.hash_seed = db->hash_seed;
    db->env.man = db->man;
    db->env.ebr = &db->ebr;
    db->env.ver = &db->ver;
    db->env.ro = db->ro;
    db->env.compactor = &db->compactor.thread;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        atomic_init(&db->ro[i].visible, 0);
        /* Shard s belongs to worker s % workers (worker.c), whose arena it uses. */
        unsigned arena = db->narenas > 0 ? db->arenas[i % db->narenas] : 0;
        int rc = htkv_shard_create(&db->env, db, i, arena, &db->ro[i].shard);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void
db_free(struct htkv_db *db)
{
    /* Both periodic threads are stopped already unless an open failed after starting one. */
    htkv_periodic_stop(&db->compactor.thread);
    htkv_periodic_stop(&db->syncer);
    if (db->workers != NULL) {
        htkv_workers_stop(db);
    }
    htkv_zombie_free_all(db);
    htkv_path_fini(db);
    if (db->ro != NULL) {
        for (uint32_t i = 0; i < db->shard_count; i++) {
            if (db->ro[i].shard != NULL) {
                htkv_run_fini(
                    db->ro[i].shard); /* the sorted run first: shard.c never calls flat.c */
            }
            htkv_shard_destroy(db->ro[i].shard);
        }
        free(db->ro);
    }
    /* Every allocation from the arenas is freed now (shards, entries, retired memory). */
    for (unsigned i = 0; i < db->narenas; i++) {
        htkv_arena_release(db->arenas[i]);
    }
    htkv_mem_free(db->arenas);
    htkv_manifest_close(db->man);
    if (db->lock_fd >= 0) {
        close(db->lock_fd); /* releases the flock */
    }
    if (db->dir_fd >= 0) {
        close(db->dir_fd);
    }
    htkv_periodic_fini(&db->syncer);
    pthread_mutex_destroy(&db->views.lock);
    pthread_mutex_destroy(&db->compactor.lock);
    htkv_mem_free(db->recovery.discarded);
    htkv_periodic_fini(&db->compactor.thread);
    htkv_mem_free(db->dir);
    free(db);
}

/* A shard went from clean to dirty (its lock held): an idle syncer wakes (periodic.h,
 * invariant 2: the syncer looks at each shard under its lock). */
static void
syncer_dirtied(void *ctx, uint32_t id)
{
    (void)id;
    htkv_periodic_kick(ctx);
}

static int
start_syncer(struct htkv_db *db)
{
    if (db->read_only || db->nworkers > 0 || db->cfg.sync_mode != HTKV_SYNC_INTERVAL) {
        return 0; /* workers sync from their own loops */
    }
    db->env.dirtied = syncer_dirtied;
    db->env.dirtied_ctx = &db->syncer;
    return htkv_periodic_start(&db->syncer, db->cfg.fsync_interval_ms, syncer_round, db);
}

int
htkv_open(const htkv_config *cfg, htkv_db **out)
{
    return htkv_db_open(cfg, true, out);
}

/* A handle for @p cfg with nothing opened yet, or NULL (-ENOMEM). db->dir NULL: -ENOMEM too,
 * and the handle goes to db_free(). */
static struct htkv_db *
db_new(const htkv_config *cfg, bool take_lock)
{
    struct htkv_db *db = aligned_alloc(HTKV_CACHELINE, htkv_align_up(sizeof(*db), HTKV_CACHELINE));
    if (db == NULL) {
        return NULL;
    }
    memset(db, 0, sizeof(*db));
    db->cfg = *cfg;
    db->dir_fd = db->lock_fd = -1;
    db->read_only = cfg->read_only != 0;
    db->unlocked = !take_lock;
    htkv_periodic_init(&db->syncer);
    pthread_mutex_init(&db->views.lock, NULL);
    pthread_mutex_init(&db->compactor.lock, NULL);
    htkv_periodic_init(&db->compactor.thread);
    htkv_ebr_init(&db->ebr);
    atomic_init(&db->ver.next, 1);
    db->env.log = (struct htkv_log_sink){ .fn = cfg->log_fn, .ctx = cfg->log_ctx };
    db->cpus = htkv_cpus_available();
    if (cfg->worker_threads > db->cpus && !db->read_only) {
        htkv_log(&db->env.log, HTKV_LOG_WARN,
                 "worker_threads = %u but this process may use %u CPUs (affinity and cgroup "
                 "quota): workers and callers will share CPUs",
                 cfg->worker_threads, db->cpus);
    }
    size_t dir_len = strlen(cfg->data_dir);
    db->dir = htkv_mem_alloc(dir_len + 1); /* freed by htkv_mem_free() */
    if (db->dir != NULL) {
        memcpy(db->dir, cfg->data_dir, dir_len + 1);
        db->cfg.data_dir = db->dir;
    }
    return db;
}

/* Load the manifest (LOCK taken), or create the store when there is none and that is allowed. */
static int
open_manifest(struct htkv_db *db)
{
    int rc = htkv_manifest_load(db->dir_fd, !db->read_only, &db->man);
    if (rc == HTKV_ENOTFOUND) {
        rc = check_fresh_dir(db);
        if (rc == 0 && (db->read_only || !db->cfg.create_if_missing)) {
            htkv_set_error("%s: no store here", db->dir);
            rc = HTKV_ENOTFOUND;
        } else if (rc == 0) {
            rc = create_store(db);
        }
        if (rc != 0 && db->lock_created) {
            /* Leave the directory as it was: the LOCK this open created goes (one the unlink
             * leaves is only a file); nothing else was written. */
            (void)(htkv_fault_fails(HTKV_FAULT_UNLINK) ? -1 : unlinkat(db->dir_fd, "LOCK", 0));
        }
    } else if (rc == 0 && !db->read_only) {
        rc = sync_store_dir(db);
    }
    return rc;
}

/* After the manifest: shards, recovery, leftovers, a manifest rewrite, the threads. */
static int
open_contents(struct htkv_db *db)
{
    int rc = open_shards(db);
    if (rc == 0) {
        rc = htkv_recover(db);
    }
    for (uint32_t i = 0; rc == 0 && i < db->shard_count; i++) { /* invariant 8 */
        HTKV_ASSERT(atomic_load(&db->ro[i].visible) <= htkv_versions_latest(&db->ver));
    }
    if (rc == 0 && !db->read_only) {
        remove_leftovers(db); /* only once recovery accepted the store: they are evidence */
    }
    if (rc == 0 && !db->read_only &&
        (db->man->file_bytes > MAN_REWRITE_BYTES || db->man->format < HTKV_FORMAT_VERSION)) {
        /* Also a store of an older format: its manifest is rewritten in this one's format
         * before any edit of this format is appended, so an older build refuses it cleanly
         * (HTKV_EVERSION) instead of meeting edits it does not know. */
        rc = htkv_manifest_upgrade_rewrite(db->man);
    }
    if (rc == 0) {
        rc = htkv_cold_setup(db); /* the memory budget: evict down to it before any write */
    }
    if (rc == 0 && !db->read_only && db->cfg.worker_threads > 0) {
        rc = htkv_workers_start(db);
    }
    HTKV_ASSERT(rc != 0 || db->read_only || db->nworkers == db->cfg.worker_threads); /* 7 */
    if (rc == 0) {
        rc = start_syncer(db);
    }
    if (rc == 0) {
        rc = htkv_compactor_start(db);
    }
    return rc;
}

int
htkv_db_open(const htkv_config *cfg, bool take_lock, htkv_db **out)
{
    htkv_clear_error();
    if (out != NULL) {
        *out = NULL;
    }
    if (out == NULL || cfg == NULL || (!take_lock && !cfg->read_only)) {
        return htkv_einval(__func__);
    }
    int rc = config_check(cfg);
    if (rc != 0) {
        return rc;
    }
    struct htkv_db *db = db_new(cfg, take_lock);
    if (db == NULL) {
        return -ENOMEM;
    }
    rc = db->dir == NULL ? -ENOMEM : open_dir_and_lock(db, take_lock);
    if (rc == 0) {
        rc = open_manifest(db);
    }
    if (rc == 0) {
        rc = open_contents(db);
    }
    if (rc != 0) {
        db_free(db);
        return rc;
    }
    /* A writable handle holds LOCK; one without LOCK is read-only (htkvctl --read-only). */
    HTKV_ASSERT(db->read_only || (!db->unlocked && db->lock_fd >= 0));
    HTKV_ASSERT(db->env.ro == db->ro && db->env.ver == &db->ver);
    if (!db->read_only) {
        write_options(db);
    }
    *out = db;
    return 0;
}

/* ---- close ---------------------------------------------------------------------------------- */

/* Test hook (store.h): close as a process killed at that moment leaves the store. */
bool htkv_close_as_crash = false;

/*
 * After every shard's final sync succeeded: record in the manifest where each segment's records
 * end (damage before that end is then never taken for a torn tail) and the latest version, which
 * becomes the reservation too (nothing above it was acknowledged), so that a clean reopen skips
 * no versions. Both are optional (a failure costs these checks or a skipped block of versions at
 * the next open), so a failure is logged only.
 */
static void
record_clean_close(struct htkv_db *db)
{
    size_t n = 0;
    uint64_t latest = htkv_versions_latest(&db->ver);
    HTKV_ASSERT(!db->read_only && !db->unlocked);
    for (uint32_t i = 0; i < db->shard_count; i++) {
        n += db_shard(db, i)->nsegs;
        HTKV_ASSERT(atomic_load(&db->ro[i].visible) <= latest); /* invariant 8 */
    }
    uint32_t *shards = htkv_mem_alloc((n ? n : 1) * sizeof(*shards));
    struct man_end *ends = htkv_mem_alloc((n ? n : 1) * sizeof(*ends));
    int rc = shards == NULL || ends == NULL ? -ENOMEM : 0;
    size_t k = 0;
    for (uint32_t i = 0; i < db->shard_count && rc == 0; i++) {
        struct shard *sh = db_shard(db, i);
        for (size_t j = 0; j < sh->nsegs; j++) {
            if (sh->segs[j]->tail > SEG_DATA_OFF) {
                shards[k] = sh->id;
                ends[k++] = (struct man_end){ .id = sh->segs[j]->id, .end = sh->segs[j]->tail };
            }
        }
    }
    if (rc == 0) {
        rc = htkv_manifest_record_ends(db->man, shards, ends, k);
    }
    if (rc == 0) {
        /* Nothing writes any more (the workers and the callers are gone): still the latest. */
        HTKV_ASSERT(htkv_versions_latest(&db->ver) == latest);
        rc = htkv_manifest_set_versions(db->man, latest, latest, true);
    }
    if (rc == 0) {
        htkv_cold_record_close(db); /* after the manifest's last edit: it names its size */
    }
    if (rc != 0) {
        htkv_db_log(db, HTKV_LOG_WARN, "%s: clean close not recorded in the manifest: %s", db->dir,
                    htkv_strerror(rc));
    }
    htkv_mem_free(shards);
    htkv_mem_free(ends);
}

int
htkv_close(htkv_db *db)
{
    if (db == NULL) {
        return 0;
    }
    atomic_store(&db->closing, 1);
    while (!htkv_ebr_idle(&db->ebr)) {
        sched_yield();
    }
    /* A pass in progress stops at its next step once it sees closing; none starts after. */
    htkv_periodic_stop(&db->compactor.thread);
    pthread_mutex_lock(&db->compactor.lock);
    pthread_mutex_unlock(&db->compactor.lock);
    if (db->workers != NULL) {
        htkv_workers_stop(db); /* drains queued asynchronous writes and their syncs */
    }
    HTKV_ASSERT(db->workers == NULL && db->nworkers == 0);
    htkv_periodic_stop(&db->syncer);
    int rc = 0;
    bool clean = true;
    if (!db->read_only && !htkv_close_as_crash) {
        for (uint32_t i = 0; i < db->shard_count; i++) {
            struct shard *sh = db_shard(db, i);
            int src = htkv_shard_sync(sh);
            if (src != 0 && rc == 0) {
                rc = src;
            }
            /* Give back preallocated space; the next open extends again. */
            if (src == 0 && sh->nsegs > 0 && !sh->failed) {
                (void)htkv_seg_trim(sh->segs[sh->nsegs - 1]);
            }
            /* Hints of everything now durable, so that the next open reads no values. */
            if (src == 0 && !sh->failed) {
                (void)htkv_hints_write(db, sh, true);
            }
            clean = clean && src == 0 && !sh->failed;
        }
        if (clean && !atomic_load(&db->env.failed)) {
            record_clean_close(db);
        }
    }
    db_free(db);
    return rc;
}
