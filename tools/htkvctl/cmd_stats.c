/*
 * cmd_stats.c - `htkvctl stats DIR`: htkv_stats() of a fresh read-only open, every field.
 *
 * Counters "since open" (puts, deletes, batches, syncs) are 0 by construction; the recovery
 * figures (records read, torn-tail bytes ignored) are the interesting ones.
 */
#include <string.h>

#include "tools/htkvctl/ctl.h"

/* One htkv_stats field: name and value (strings for io_backend and sync_mode). */
struct stat_field {
    const char *name;
    uint64_t value;
    const char *text; /* when not NULL, printed instead of value */
};

static size_t
stats_fields(const struct htkv_stats *st, struct stat_field *f)
{
    size_t n = 0;
    f[n++] = (struct stat_field){ "live_keys", st->live_keys, NULL };
    f[n++] = (struct stat_field){ "tombstones", st->tombstones, NULL };
    f[n++] = (struct stat_field){ "segments", st->segments, NULL };
    f[n++] = (struct stat_field){ "disk_bytes", st->disk_bytes, NULL };
    f[n++] = (struct stat_field){ "data_bytes", st->data_bytes, NULL };
    f[n++] = (struct stat_field){ "live_bytes", st->live_bytes, NULL };
    f[n++] = (struct stat_field){ "dead_bytes", st->dead_bytes, NULL };
    f[n++] = (struct stat_field){ "index_bytes", st->index_bytes, NULL };
    f[n++] = (struct stat_field){ "last_version", st->last_version, NULL };
    f[n++] = (struct stat_field){ "puts", st->puts, NULL };
    f[n++] = (struct stat_field){ "deletes", st->deletes, NULL };
    f[n++] = (struct stat_field){ "batches", st->batches, NULL };
    f[n++] = (struct stat_field){ "syncs", st->syncs, NULL };
    f[n++] = (struct stat_field){ "recovered_records", st->recovered_records, NULL };
    f[n++] = (struct stat_field){ "truncated_bytes", st->truncated_bytes, NULL };
    f[n++] = (struct stat_field){ "skipped_bytes", st->skipped_bytes, NULL };
    f[n++] = (struct stat_field){ "shard_count", st->shard_count, NULL };
    f[n++] = (struct stat_field){ "worker_threads", st->worker_threads, NULL };
    f[n++] = (struct stat_field){ "io_backend", 0, st->io_backend ? st->io_backend : "unknown" };
    f[n++] = (struct stat_field){ "sync_mode", 0, ctl_sync_mode_name(st->sync_mode) };
    f[n++] = (struct stat_field){ "failed", (uint64_t)(st->failed != 0), NULL };
    f[n++] = (struct stat_field){ "no_space", (uint64_t)(st->no_space != 0), NULL };
    return n;
}

static int
stats_run(struct ctl *c, int argc, char **argv)
{
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_stats, argc, argv, NULL, 0, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    htkv_db *db;
    rc = ctl_open(c, &db);
    if (rc != 0) {
        return rc;
    }
    struct htkv_stats st;
    rc = htkv_stats(db, &st);
    if (rc != 0) {
        ctl_engine_error(c, "htkv_stats", rc);
        ctl_close(db);
        return CTL_EXIT_FAIL;
    }
    struct stat_field f[32];
    size_t n = stats_fields(&st, f);
    if (c->json) {
        struct json j;
        json_init(&j, stdout);
        json_object_begin(&j);
        for (size_t i = 0; i < n; i++) {
            if (f[i].text != NULL) {
                json_kv_string(&j, f[i].name, f[i].text);
            } else if (strcmp(f[i].name, "failed") == 0 || strcmp(f[i].name, "no_space") == 0) {
                json_kv_bool(&j, f[i].name, f[i].value != 0);
            } else {
                json_kv_u64(&j, f[i].name, f[i].value);
            }
        }
        json_object_end(&j);
        json_finish(&j);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (f[i].text != NULL) {
                printf("%-18s %s\n", f[i].name, f[i].text);
            } else {
                printf("%-18s %llu\n", f[i].name, (unsigned long long)f[i].value);
            }
        }
    }
    ctl_close(db);
    return CTL_EXIT_OK;
}

const struct ctl_cmd ctl_cmd_stats = {
    .name = "stats",
    .args = "DIR",
    .summary = "the engine's htkv_stats() of a fresh read-only open",
    .help =
        "Counters since open (puts, deletes, batches, syncs) are 0; worker_threads, io_backend\n"
        "and sync_mode describe this read-only open, not the store's writer.\n",
    .run = stats_run,
};
