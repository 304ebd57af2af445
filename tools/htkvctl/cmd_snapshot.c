/*
 * cmd_snapshot.c - `htkvctl snapshot export FILE DIR` writes a snapshot of the store to FILE
 * (htkv_snapshot_write()); `htkvctl snapshot import [--force] FILE DIR` replaces the store's
 * whole contents with one (htkv_snapshot_restore()).
 *
 * Design. export only reads the store, so it opens it as every reading command does (shared
 * lock, or none with --read-only) and writes FILE, never a store file. import changes the
 * store: it refuses --read-only (exit 2), opens the store for writing (ctl_open_write()) and,
 * unless --force, refuses a store that holds live keys (exit 2), because the restore replaces
 * everything. The engine checks the whole file before it changes anything, so a damaged file is
 * exit 1 and the store is as it was. The figures printed (keys, version) come from the
 * snapshot's header (format and codec in engine/snapfile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/snapfile.h"
#include "tools/htkvctl/ctl.h"

/* What the header of a snapshot file says. */
struct snap_figures {
    uint64_t keys;
    uint64_t version;
    uint64_t bytes; /* file size */
};

/* Read the header of @p path (checked by the engine already). Returns 0 or -1. */
static int
snap_read_header(const char *path, struct snap_figures *f)
{
    unsigned char h[SNAP_HDR_BYTES];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return -1;
    }
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
              pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && memcmp(h, SNAP_MAGIC, 8) == 0;
    close(fd);
    if (!ok) {
        return -1;
    }
    struct snap_hdr sh;
    htkv_snapfile_hdr_decode(h, &sh);
    f->version = sh.version;
    f->keys = sh.count;
    f->bytes = (uint64_t)st.st_size;
    return 0;
}

/* The result document (or line) of export and import. */
static void
snap_report(const struct ctl *c, bool import, const char *file, const struct snap_figures *f,
            uint64_t replaced)
{
    if (c->json) {
        struct json j;
        json_init(&j, stdout);
        json_object_begin(&j);
        json_kv_string(&j, "store", c->dir);
        json_kv_string(&j, "operation", import ? "import" : "export");
        json_kv_string(&j, "file", file);
        json_kv_u64(&j, "keys", f->keys);
        json_kv_u64(&j, "version", f->version);
        json_kv_u64(&j, "bytes", f->bytes);
        if (import) {
            json_kv_u64(&j, "replaced_keys", replaced);
        }
        json_object_end(&j);
        json_finish(&j);
        return;
    }
    char h[32];
    if (import) {
        printf("imported %llu keys (snapshot version %llu, %s) from %s into %s, replacing its "
               "%llu keys\n",
               (unsigned long long)f->keys, (unsigned long long)f->version,
               ctl_human_bytes(h, sizeof(h), f->bytes), file, c->dir, (unsigned long long)replaced);
    } else {
        printf("exported %llu keys (version %llu) from %s to %s: %llu bytes (%s)\n",
               (unsigned long long)f->keys, (unsigned long long)f->version, c->dir, file,
               (unsigned long long)f->bytes, ctl_human_bytes(h, sizeof(h), f->bytes));
    }
}

/* Report the failure @p rc of @p what on @p file (with the engine's detail); exit status 1. */
static int
snap_failed(const struct ctl *c, const char *what, const char *file, int rc, const char *detail,
            bool unchanged)
{
    char msg[2048];
    snprintf(msg, sizeof(msg), "%s %s: %s%s%s%s%s", what, file, htkv_strerror(rc),
             detail[0] ? " (" : "", detail, detail[0] ? ")" : "",
             unchanged ? "; the store is unchanged" : "");
    ctl_error(c, "%s: %s", c->dir, msg);
    ctl_json_error(c, msg, CTL_EXIT_FAIL);
    return CTL_EXIT_FAIL;
}

static int
snap_export(struct ctl *c, const char *file)
{
    htkv_db *db;
    int rc = ctl_open(c, &db);
    if (rc != 0) {
        return rc;
    }
    rc = htkv_snapshot_write(db, file);
    if (rc != 0) {
        char detail[1024];
        snprintf(detail, sizeof(detail), "%s", htkv_last_error());
        ctl_close(db);
        return snap_failed(c, "cannot export to", file, rc, detail, false);
    }
    ctl_close(db);
    struct snap_figures f;
    if (snap_read_header(file, &f) != 0) {
        return snap_failed(c, "cannot read back", file, -EIO, "", false);
    }
    snap_report(c, false, file, &f, 0);
    return CTL_EXIT_OK;
}

static int
snap_import(struct ctl *c, const char *file, bool force)
{
    htkv_db *db;
    int rc = ctl_open_write(c, &db);
    if (rc != 0) {
        return rc;
    }
    struct htkv_stats st;
    rc = htkv_stats(db, &st);
    if (rc != 0) {
        ctl_engine_error(c, "cannot read the store's figures", rc);
        ctl_json_error(c, htkv_strerror(rc), CTL_EXIT_FAIL);
        ctl_close(db);
        return CTL_EXIT_FAIL;
    }
    if (st.live_keys > 0 && !force) {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "store is not empty; --force replaces its whole contents (%llu live keys)",
                 (unsigned long long)st.live_keys);
        ctl_error(c, "%s: %s", c->dir, msg);
        ctl_json_error(c, msg, CTL_EXIT_USAGE);
        ctl_close(db);
        return CTL_EXIT_USAGE;
    }
    rc = htkv_snapshot_restore(db, file);
    if (rc != 0) {
        char detail[1024];
        snprintf(detail, sizeof(detail), "%s", htkv_last_error());
        ctl_close(db);
        /* The engine checks the whole file before it changes anything (snapshot.c inv. 1). */
        bool unchanged =
            rc == HTKV_ECORRUPT || rc == HTKV_EVERSION || rc == -ENOENT || rc == -EINVAL;
        return snap_failed(c, "cannot import", file, rc, detail, unchanged);
    }
    rc = htkv_close(db);
    if (rc != 0) {
        return snap_failed(c, "closing the store after importing", file, rc, "", false);
    }
    struct snap_figures f;
    if (snap_read_header(file, &f) != 0) {
        return snap_failed(c, "imported, but cannot read back", file, -EIO, "", false);
    }
    snap_report(c, true, file, &f, st.live_keys);
    return CTL_EXIT_OK;
}

static int
snapshot_run(struct ctl *c, int argc, char **argv)
{
    bool force = false;
    const struct ctl_opt opts[] = { { "force", NULL, &force } };
    char *pos[3];
    int rc = ctl_parse_args(c, &ctl_cmd_snapshot, argc, argv, opts, 1, pos, 3);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    const char *sub = pos[0], *file = pos[1];
    if (file[0] == '\0') {
        return ctl_usage_error(c, &ctl_cmd_snapshot, "empty FILE");
    }
    if (strcmp(sub, "export") == 0) {
        if (force) {
            return ctl_usage_error(c, &ctl_cmd_snapshot, "--force applies to import only");
        }
        return snap_export(c, file);
    }
    if (strcmp(sub, "import") == 0) {
        if (c->read_only) {
            return ctl_usage_error(c, &ctl_cmd_snapshot,
                                   "--read-only is not allowed: 'snapshot import' changes the "
                                   "store");
        }
        return snap_import(c, file, force);
    }
    return ctl_usage_error(c, &ctl_cmd_snapshot, "unknown subcommand '%s' (export or import)", sub);
}

const struct ctl_cmd ctl_cmd_snapshot = {
    .name = "snapshot",
    .args = "{export|import} [--force] FILE DIR",
    .summary = "write the store to a snapshot FILE, or replace the store with one",
    .help =
        "export  write every live key, its value and version, as of one instant, to FILE\n"
        "        (htkv_snapshot_write(): FILE.tmp, fsync, rename; an existing FILE is\n"
        "        replaced). Only reads the store: --read-only works.\n"
        "import  replace the store's whole contents with FILE, atomically\n"
        "        (htkv_snapshot_restore()). Opens the store for writing: refused while another\n"
        "        process has it open, and with --read-only. The whole file is checked first: a\n"
        "        damaged FILE is exit status 1 and the store is unchanged.\n"
        "  --force  import into a store that holds keys (without it: exit status 2)\n"
        "Both print the keys and the version of the snapshot (from its header).\n",
    .run = snapshot_run,
};
