/*
 * cmd_verify.c - `htkvctl verify [--strict] DIR`: check every checksum of every file and the
 * index the engine rebuilds; exit status 0 when clean, 1 when problems were found.
 *
 * Design. The store's lock is taken shared first (so no writer starts while the files are
 * walked), then the store is opened read-only through htkv_open(), then engine/verify.c walks
 * every file on its own, with the rules of recovery, and compares the index it rebuilds with the
 * open handle key by key. A store htkv_open() refuses (damage) is still walked: the refusal is
 * one more problem. With --read-only nothing is locked and the walk runs in live mode (see
 * HTKV_INSPECT_LIVE): differences with the handle, which cannot see later appends, are notes.
 * Then the files the engine's walk leaves out are checked one by one: every snapshot file
 * (DIR/snapshot-N.snap, htkv_snapshot_check_file(): a damaged one is a problem, since a restore
 * from it would be refused) and every hint file (DIR/shard-SSS/NNNNNNNNNNNN.hint,
 * htkv_hint_check_file(): a damaged one is a note, or a problem with --strict, since recovery
 * ignores it and scans the segment; a missing hint is nothing, hints are optional). A whole hint
 * whose segment does not hold the records it names intact is a problem of the walk (records are
 * known to reach its tail: recovery refuses the store).
 *
 * Text output: one line per finding, "DIR/FILE:OFFSET: problem: REASON" (or "note:"), then a
 * summary line. A progress bar goes to stderr when it is a terminal.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/hint.h"
#include "engine/verify.h"
#include "tools/htkvctl/ctl.h"

/* A finding kept for the JSON document. */
struct finding {
    int kind;
    char *file;
    uint64_t offset;
    char *reason;
};

struct verify {
    struct ctl *c;
    struct finding *found;
    size_t nfound, cap;
    struct ctl_bar bar;
    uint64_t snapshot_files; /* snapshot files checked (DIR/snapshot-N.snap) */
    uint64_t hint_files;     /* hint files checked (DIR/shard-SSS/NNNNNNNNNNNN.hint) */
    char open_error[512];    /* why htkv_open() refused the store, "" when it opened */
    int open_rc;             /* what htkv_open() returned */
};

static void
verify_progress(uint64_t done, uint64_t total, void *ctx)
{
    struct verify *v = ctx;
    ctl_bar_draw(&v->bar, done, total);
}

static void
verify_issue(const struct htkv_inspect_issue *is, void *ctx)
{
    struct verify *v = ctx;
    const char *kind = is->kind == HTKV_INSPECT_PROBLEM ? "problem" : "note";
    if (!v->c->json) {
        ctl_bar_clear(&v->bar);
        if (is->file[0] != '\0') {
            printf("%s/%s:%llu: %s: %s\n", v->c->dir, is->file, (unsigned long long)is->offset,
                   kind, is->reason);
        } else {
            printf("%s: %s: %s\n", v->c->dir, kind, is->reason);
        }
        fflush(stdout);
        return;
    }
    if (v->nfound == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        struct finding *f = realloc(v->found, cap * sizeof(*f));
        if (f == NULL) {
            return; /* the count in the summary stays right; the list is short of one */
        }
        v->found = f;
        v->cap = cap;
    }
    struct finding *f = &v->found[v->nfound];
    f->kind = is->kind;
    f->offset = is->offset;
    f->file = strdup(is->file);
    f->reason = strdup(is->reason);
    if (f->file != NULL && f->reason != NULL) {
        v->nfound++;
    } else {
        free(f->file);
        free(f->reason);
    }
}

/* ---- snapshot and hint files ---------------------------------------------------------------- */

/* Report and count a finding of the tool's own checks. */
static void
add_finding(struct verify *v, struct htkv_inspect_summary *sum, int kind, const char *rel,
            uint64_t off, const char *reason)
{
    struct htkv_inspect_issue is = { kind, rel, off, reason };
    verify_issue(&is, v);
    if (kind == HTKV_INSPECT_PROBLEM) {
        sum->problems++;
    } else {
        sum->notes++;
    }
}

/* Report a finding about file @p rel (DIR/@p rel is @p path): the engine's detail without the
 * path and the offset, which the finding carries itself. */
static void
file_finding(struct verify *v, struct htkv_inspect_summary *sum, int kind, const char *rel,
             const char *path, uint64_t off, const char *what, const char *after)
{
    const char *detail = htkv_last_error();
    size_t plen = strlen(path);
    if (strncmp(detail, path, plen) == 0 && strncmp(detail + plen, ": ", 2) == 0) {
        detail += plen + 2;
    }
    char suffix[48];
    snprintf(suffix, sizeof(suffix), " at offset %llu", (unsigned long long)off);
    size_t dlen = strlen(detail), slen = strlen(suffix);
    if (dlen >= slen && strcmp(detail + dlen - slen, suffix) == 0) {
        dlen -= slen;
    }
    char reason[768];
    snprintf(reason, sizeof(reason), "%s: %.*s%s", what, (int)dlen, detail, after);
    add_finding(v, sum, kind, rel, off, reason);
}

/* "snapshot-" digits ".snap": the snapshots the engine writes into the store directory. */
static int
snapshot_name(const struct dirent *de)
{
    const char *n = de->d_name;
    if (strncmp(n, "snapshot-", 9) != 0) {
        return 0;
    }
    size_t d = strspn(n + 9, "0123456789");
    return d > 0 && strcmp(n + 9 + d, ".snap") == 0;
}

static int
shard_name(const struct dirent *de)
{
    unsigned s;
    int used = 0;
    return sscanf(de->d_name, "shard-%3u%n", &s, &used) == 1 && used == 9 &&
           de->d_name[used] == '\0';
}

/* NNNNNNNNNNNN.hint (engine/hint.h). */
static int
hint_name(const struct dirent *de)
{
    const char *n = de->d_name;
    return strspn(n, "0123456789") == 12 && strcmp(n + 12, ".hint") == 0;
}

static void
free_names(struct dirent **names, int n)
{
    for (int i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

/* Check every snapshot file: a damaged one is a problem (a restore from it would fail). */
static void
verify_snapshots(struct verify *v, struct htkv_inspect_summary *sum)
{
    struct dirent **names;
    int n = scandir(v->c->dir, &names, snapshot_name, alphasort);
    for (int i = 0; i < n; i++) {
        const char *rel = names[i]->d_name;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", v->c->dir, rel);
        uint64_t off;
        int rc = htkv_snapshot_check_file(path, HTKV_VALUE_MAX_LIMIT, NULL, NULL, &off);
        if (rc == -ENOENT) {
            continue; /* replaced by a newer one since the directory was read */
        }
        v->snapshot_files++;
        if (rc == HTKV_ECORRUPT) {
            file_finding(v, sum, HTKV_INSPECT_PROBLEM, rel, path, off, "snapshot",
                         "; htkv_snapshot_restore() refuses it");
        } else if (rc == HTKV_EVERSION) {
            file_finding(v, sum, HTKV_INSPECT_NOTE, rel, path, off, "snapshot", "; not checked");
        } else if (rc != 0) {
            char reason[256];
            snprintf(reason, sizeof(reason), "snapshot: cannot be read: %s", htkv_strerror(rc));
            add_finding(v, sum, HTKV_INSPECT_PROBLEM, rel, 0, reason);
        }
    }
    if (n > 0) {
        free_names(names, n);
    }
}

/* Check the hint files of shard directory @p sd. Hints are optional: recovery ignores a bad one
 * and scans its segment, so a finding is a note (a problem with --strict: it is damage). */
static void
verify_shard_hints(struct verify *v, struct htkv_inspect_summary *sum, const char *sd, bool strict)
{
    char dir[4400];
    snprintf(dir, sizeof(dir), "%s/%s", v->c->dir, sd);
    unsigned shard = 0;
    sscanf(sd, "shard-%3u", &shard);
    struct dirent **names;
    int n = scandir(dir, &names, hint_name, alphasort);
    int kind = strict ? HTKV_INSPECT_PROBLEM : HTKV_INSPECT_NOTE;
    for (int i = 0; i < n; i++) {
        char rel[600], path[4800], seg[4800]; /* shard-SSS/ + a 255-byte name */
        snprintf(rel, sizeof(rel), "%s/%s", sd, names[i]->d_name);
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        snprintf(seg, sizeof(seg), "%s/%.12s.seg", dir, names[i]->d_name);
        unsigned long long id = strtoull(names[i]->d_name, NULL, 10);
        struct stat st;
        if (stat(seg, &st) != 0) {
            add_finding(v, sum, HTKV_INSPECT_NOTE, rel, 0,
                        "hint: its segment does not exist (left over); unused");
            continue;
        }
        uint64_t off;
        int rc = htkv_hint_check_file(path, shard, id, (uint64_t)st.st_size, &off);
        if (rc == HTKV_ENOTFOUND) {
            continue; /* rewritten or removed since the directory was read */
        }
        v->hint_files++;
        if (rc == HTKV_ECORRUPT) {
            file_finding(v, sum, kind, rel, path, off, "hint",
                         "; recovery ignores the hint and scans the segment");
        } else if (rc != 0) {
            char reason[256];
            snprintf(reason, sizeof(reason), "hint: cannot be read: %s", htkv_strerror(rc));
            add_finding(v, sum, kind, rel, 0, reason);
        }
    }
    if (n > 0) {
        free_names(names, n);
    }
}

/* The files htkv_inspect_verify() does not walk: snapshots and hints. */
static void
verify_files(struct verify *v, struct htkv_inspect_summary *sum, bool strict)
{
    verify_snapshots(v, sum);
    struct dirent **shards;
    int n = scandir(v->c->dir, &shards, shard_name, alphasort);
    for (int i = 0; i < n; i++) {
        verify_shard_hints(v, sum, shards[i]->d_name, strict);
    }
    if (n > 0) {
        free_names(shards, n);
    }
}

static void
json_findings(struct verify *v, struct json *j, int kind)
{
    json_array_begin(j);
    for (size_t i = 0; i < v->nfound; i++) {
        const struct finding *f = &v->found[i];
        if (f->kind != kind) {
            continue;
        }
        json_object_begin(j);
        json_kv_string(j, "file", f->file);
        json_kv_u64(j, "offset", f->offset);
        json_kv_string(j, "reason", f->reason);
        json_object_end(j);
    }
    json_array_end(j);
}

static void
verify_json(struct verify *v, const struct htkv_inspect_summary *s, const struct htkv_stats *st)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", v->c->dir);
    json_kv_bool(&j, "clean", s->problems == 0);
    json_kv_bool(&j, "unlocked", v->c->read_only);
    json_kv_u64(&j, "problem_count", s->problems);
    json_kv_u64(&j, "note_count", s->notes);
    json_key(&j, "problems");
    json_findings(v, &j, HTKV_INSPECT_PROBLEM);
    json_key(&j, "notes");
    json_findings(v, &j, HTKV_INSPECT_NOTE);
    json_kv_u64(&j, "format_version", s->format);
    json_kv_u64(&j, "shards", s->shard_count);
    json_kv_u64(&j, "manifest_number", s->manifest_number);
    json_kv_u64(&j, "manifest_edits", s->manifest_edits);
    json_kv_u64(&j, "segments", s->segments);
    json_kv_u64(&j, "records", s->records);
    json_kv_u64(&j, "bytes_checked", s->bytes_checked);
    json_kv_u64(&j, "snapshot_files", v->snapshot_files);
    json_kv_u64(&j, "hint_files", v->hint_files);
    json_key(&j, "index");
    json_object_begin(&j);
    json_kv_u64(&j, "live_keys", s->live_keys);
    json_kv_u64(&j, "tombstones", s->tombstones);
    json_kv_u64(&j, "last_version", s->max_version);
    json_kv_u64(&j, "keys_compared", s->keys_compared);
    json_key(&j, "engine_live_keys");
    st != NULL ? json_u64(&j, st->live_keys) : json_null(&j);
    json_key(&j, "engine_last_version");
    st != NULL ? json_u64(&j, st->last_version) : json_null(&j);
    json_key(&j, "engine_open_error");
    v->open_error[0] != '\0' ? json_string(&j, v->open_error) : json_null(&j);
    json_object_end(&j);
    json_object_end(&j);
    json_finish(&j);
}

static void
verify_text(struct verify *v, const struct htkv_inspect_summary *s, const struct htkv_stats *st)
{
    char h[32];
    printf("verify: %llu segments, %llu records, %s checked, %llu snapshot files, %llu hint "
           "files; files: %llu live keys, %llu tombstones, last version %llu",
           (unsigned long long)s->segments, (unsigned long long)s->records,
           ctl_human_bytes(h, sizeof(h), s->bytes_checked), (unsigned long long)v->snapshot_files,
           (unsigned long long)v->hint_files, (unsigned long long)s->live_keys,
           (unsigned long long)s->tombstones, (unsigned long long)s->max_version);
    if (st != NULL) {
        printf("; engine: %llu live keys, last version %llu, %llu keys compared",
               (unsigned long long)st->live_keys, (unsigned long long)st->last_version,
               (unsigned long long)s->keys_compared);
    }
    printf("\n%s: %s (%llu problems, %llu notes)\n", v->c->dir,
           s->problems == 0 ? "clean" : "PROBLEMS FOUND", (unsigned long long)s->problems,
           (unsigned long long)s->notes);
}

/* Lock (unless --read-only) and open the store. Returns 0 or an exit status (printed). */
static int
verify_open(struct verify *v, int *lock_fd, htkv_db **db)
{
    struct ctl *c = v->c;
    *lock_fd = -1;
    *db = NULL;
    int rc = c->read_only ? 0 : htkv_inspect_lock_shared(c->dir, lock_fd);
    if (rc == 0) {
        rc = ctl_open_db(c, db);
        v->open_rc = rc;
        if (rc == HTKV_ECORRUPT || rc == HTKV_EVERSION || rc == HTKV_EREADONLY ||
            rc == HTKV_ENOTFOUND || rc == HTKV_ENOTSTORE) {
            /* A refusal is a finding: the walk says where the damage is (or that there is no
             * store at all: no CURRENT and nothing of a store; foreign files alone keep the
             * open's answer). */
            snprintf(v->open_error, sizeof(v->open_error), "%s (%s)",
                     rc == HTKV_ENOTFOUND ? "no store" : htkv_strerror(rc), htkv_last_error());
            rc = 0;
        }
    }
    if (rc == 0) {
        return 0;
    }
    htkv_inspect_unlock(*lock_fd);
    *lock_fd = -1;
    return ctl_open_failed(c, rc);
}

static int
verify_run(struct ctl *c, int argc, char **argv)
{
    bool strict = false;
    const struct ctl_opt opts[] = { { "strict", NULL, &strict } };
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_verify, argc, argv, opts, 1, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    struct verify v = { .c = c };
    ctl_bar_init(&v.bar, c, "verify");
    c->quiet_engine = true; /* the walk reports torn tails and dropped batches itself */
    int lock_fd;
    htkv_db *db;
    rc = verify_open(&v, &lock_fd, &db);
    if (rc != 0) {
        return rc;
    }
    unsigned flags = (strict ? HTKV_INSPECT_STRICT : 0) | (c->read_only ? HTKV_INSPECT_LIVE : 0);
    struct htkv_inspect_summary sum;
    rc = htkv_inspect_verify(c->dir, flags, db, &sum, verify_issue, verify_progress, &v);
    ctl_bar_clear(&v.bar);
    if (rc == 0) {
        verify_files(&v, &sum, strict);
    }
    if (rc == 0 && v.open_error[0] != '\0') {
        char reason[600];
        snprintf(reason, sizeof(reason), "htkv_open refuses the store: %s", v.open_error);
        struct htkv_inspect_issue is = { HTKV_INSPECT_PROBLEM, "", 0, reason };
        verify_issue(&is, &v);
        sum.problems++;
    }
    struct htkv_stats st;
    bool have_st = db != NULL && htkv_stats(db, &st) == 0;
    if (rc == HTKV_ENOTFOUND && v.open_rc == HTKV_ENOTSTORE) {
        char msg[700];
        snprintf(msg, sizeof(msg), "cannot open the store: %s", v.open_error);
        ctl_error(c, "%s: %s", c->dir, msg);
        ctl_json_error(c, msg, CTL_EXIT_NOSTORE);
        rc = CTL_EXIT_NOSTORE;
    } else if (rc == HTKV_ENOTFOUND) {
        rc = ctl_open_failed(c, rc);
    } else if (rc != 0) {
        ctl_engine_error(c, "verify could not read the store", rc);
        ctl_json_error(c, htkv_strerror(rc), CTL_EXIT_FAIL);
        rc = CTL_EXIT_FAIL;
    } else {
        if (c->json) {
            verify_json(&v, &sum, have_st ? &st : NULL);
        } else {
            verify_text(&v, &sum, have_st ? &st : NULL);
        }
        rc = sum.problems == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    }
    for (size_t i = 0; i < v.nfound; i++) {
        free(v.found[i].file);
        free(v.found[i].reason);
    }
    free(v.found);
    ctl_close(db);
    htkv_inspect_unlock(lock_fd);
    return rc;
}

const struct ctl_cmd ctl_cmd_verify = {
    .name = "verify",
    .args = "[--strict] DIR",
    .summary = "check every checksum of every file and the rebuilt index (exit 1 on problems)",
    .help = "Walks CURRENT, the manifest (header and every edit) and every segment (header and\n"
            "every record) with the rules of recovery, independently of the engine's open, and\n"
            "compares the index it rebuilds with a read-only open, key by key. Then checks\n"
            "every snapshot file (DIR/snapshot-N.snap: checksums, lengths, key order; damage is\n"
            "a problem) and every hint file (DIR/shard-SSS/N.hint: header, size, checksums;\n"
            "damage is a note, as recovery ignores a bad hint). Each finding is printed as\n"
            "DIR/FILE:OFFSET: problem|note: REASON. Notes (torn tails, leftover files,\n"
            "incomplete batches, damaged hints) are handled by recovery and do not fail the\n"
            "check. Problems are what htkv_open refuses: damage, records missing before the\n"
            "end a clean close or a hint recorded, a missing CURRENT, a segment the manifest\n"
            "does not list that holds data, a manifest older than its segments.\n"
            "  --strict  count torn tails, incomplete batches and damaged hints as problems\n",
    .run = verify_run,
};
