/*
 * cmd_verify.c - `htkvctl verify [--strict] DIR`: check every checksum of every file and the
 * index the engine rebuilds; exit status 0 when clean, 1 when problems were found.
 *
 * Design. The store's lock is taken shared first (so no writer starts while the files are
 * walked), then the store is opened read-only through htkv_open(), then engine/inspect.c walks
 * every file on its own, with the rules of recovery, and compares the index it rebuilds with the
 * open handle key by key. A store htkv_open() refuses (damage) is still walked: the refusal is
 * one more problem. With --read-only nothing is locked and the walk runs in live mode (see
 * HTKV_INSPECT_LIVE): differences with the handle, which cannot see later appends, are notes.
 *
 * Text output: one line per finding, "DIR/FILE:OFFSET: problem: REASON" (or "note:"), then a
 * summary line. A progress bar goes to stderr when it is a terminal.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/inspect.h"
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
    char open_error[512]; /* why htkv_open() refused the store, "" when it opened */
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
    printf("verify: %llu segments, %llu records, %s checked; files: %llu live keys, %llu "
           "tombstones, last version %llu",
           (unsigned long long)s->segments, (unsigned long long)s->records,
           ctl_human_bytes(h, sizeof(h), s->bytes_checked), (unsigned long long)s->live_keys,
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
        if (rc == HTKV_ECORRUPT || rc == HTKV_EVERSION || rc == HTKV_EREADONLY ||
            rc == HTKV_ENOTFOUND) {
            /* A refusal is a finding: the walk says where the damage is (or that there is no
             * store at all: no CURRENT and no manifest). */
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
    if (rc == 0 && v.open_error[0] != '\0') {
        char reason[600];
        snprintf(reason, sizeof(reason), "htkv_open refuses the store: %s", v.open_error);
        struct htkv_inspect_issue is = { HTKV_INSPECT_PROBLEM, "", 0, reason };
        verify_issue(&is, &v);
        sum.problems++;
    }
    struct htkv_stats st;
    bool have_st = db != NULL && htkv_stats(db, &st) == 0;
    if (rc == HTKV_ENOTFOUND) {
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
            "compares the index it rebuilds with a read-only open, key by key. Each finding is\n"
            "printed as DIR/FILE:OFFSET: problem|note: REASON. Notes (torn tails, leftover\n"
            "files, incomplete batches) are handled by recovery and do not fail the check.\n"
            "  --strict  count torn tails and incomplete batches as problems\n",
    .run = verify_run,
};
