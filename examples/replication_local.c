/*
 * replication_local.c - how a consensus layer drives htkv, shown with the single-node
 * implementation (htkv_local_replication()) and a follower store in the same process.
 *
 *   build/replication_local DIR
 *
 * The leader submits commands through the replication table (a Raft layer would append them to
 * its log and apply them on commit, with the log index as version). A new follower installs
 * the leader's snapshot, then catches up from the change feed; both end byte-identical, which
 * the program checks by comparing their snapshot files. Exit status 0 on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <htkv/htkv.h>
#include <htkv/replication.h>

static int
fail(const char *what, int rc)
{
    fprintf(stderr, "%s: %s %s\n", what, htkv_strerror(rc), htkv_last_error());
    return 1;
}

static htkv_db *
open_at(const char *dir)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = dir;
    cfg.compaction_interval_ms = 0;
    htkv_db *db = NULL;
    int rc = htkv_open(&cfg, &db);
    if (rc != 0) {
        fail(dir, rc);
        exit(1);
    }
    return db;
}

/* Write n "pod/<i>" keys through the replication table, one log entry per call. */
static int
leader_writes(htkv_replication *r, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char key[32], val[64];
        snprintf(key, sizeof(key), "pod/%04d", i % 50);
        snprintf(val, sizeof(val), "{\"node\":\"n%d\",\"gen\":%d}", i % 7, i);
        htkv_command cmds[2] = {
            { .type = HTKV_CMD_SET,
              .key = key,
              .key_len = strlen(key),
              .val = val,
              .val_len = strlen(val) },
            { .type = HTKV_CMD_DELETE, .key = "pod/0000", .key_len = 8 },
        };
        int rc = r->submit(r->impl, cmds, i % 10 == 9 ? 2 : 1, NULL); /* versions 0: assigned */
        if (rc < 0) {
            return fail("submit", rc);
        }
    }
    return 0;
}

static long
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int
same_file(const char *a, const char *b)
{
    long n = file_size(a);
    if (n < 0 || n != file_size(b)) {
        return 0;
    }
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa != NULL && fb != NULL;
    for (long i = 0; same && i < n; i++) {
        same = fgetc(fa) == fgetc(fb);
    }
    if (fa != NULL) {
        fclose(fa);
    }
    if (fb != NULL) {
        fclose(fb);
    }
    return same;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    char ldir[4096], fdir[4096], snap[4200], a[4200], b[4200];
    snprintf(ldir, sizeof(ldir), "%s/leader", argv[1]);
    snprintf(fdir, sizeof(fdir), "%s/follower", argv[1]);
    snprintf(snap, sizeof(snap), "%s/leader.snap", argv[1]);
    mkdir(argv[1], 0755);
    htkv_db *leader = open_at(ldir), *follower = open_at(fdir);
    htkv_replication lr, fr;
    htkv_local_replication(leader, &lr);
    htkv_local_replication(follower, &fr);

    if (leader_writes(&lr, 0, 300) != 0) {
        return 1;
    }
    uint64_t snap_version;
    int rc = lr.snapshot_write(lr.impl, snap, &snap_version);
    if (rc != 0) {
        return fail("snapshot", rc);
    }
    if (leader_writes(&lr, 300, 200) != 0) { /* the follower will miss these at first */
        return 1;
    }
    rc = fr.snapshot_install(fr.impl, snap);
    if (rc != 0) {
        return fail("install", rc);
    }
    uint64_t at;
    rc = fr.latest_version(fr.impl, &at);
    printf("follower installed the snapshot at version %llu\n", (unsigned long long)at);

    /* Catch up from the leader's change feed, one version (log entry) at a time. */
    htkv_changes *ch;
    rc = lr.changes_since(lr.impl, at, &ch);
    if (rc != 0) {
        return fail("changes_since", rc);
    }
    printf("leader has %llu commands after it\n", (unsigned long long)htkv_changes_count(ch));
    htkv_command entry[8];
    size_t n = 0;
    htkv_command c;
    while ((rc = htkv_changes_next(ch, &c)) == 1 || n > 0) {
        if (n > 0 && (rc != 1 || c.version != entry[0].version)) {
            int src = fr.submit(fr.impl, entry, n, NULL);
            if (src < 0) {
                return fail("follower submit", src);
            }
            n = 0;
        }
        if (rc != 1) {
            break;
        }
        entry[n++] = c;
    }
    htkv_changes_destroy(ch);
    if (rc < 0) {
        return fail("changes_next", rc);
    }

    uint64_t lv, fv;
    if ((rc = lr.latest_version(lr.impl, &lv)) != 0 ||
        (rc = fr.latest_version(fr.impl, &fv)) != 0) {
        return fail("latest_version", rc);
    }
    snprintf(a, sizeof(a), "%s/check-leader.snap", argv[1]);
    snprintf(b, sizeof(b), "%s/check-follower.snap", argv[1]);
    if ((rc = htkv_snapshot_write(leader, a)) != 0 ||
        (rc = htkv_snapshot_write(follower, b)) != 0) {
        return fail("snapshot", rc);
    }
    int same = same_file(a, b);
    printf("leader at version %llu, follower at %llu: snapshots %s\n", (unsigned long long)lv,
           (unsigned long long)fv, same ? "identical" : "DIFFER");
    if ((rc = htkv_close(leader)) != 0 || (rc = htkv_close(follower)) != 0) {
        return fail("close", rc);
    }
    return same && lv == fv ? 0 : 1;
}
