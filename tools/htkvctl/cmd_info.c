/*
 * cmd_info.c - `htkvctl info DIR`: what the store is (format, shards, segments) and how full
 * (live keys, live and dead bytes, last version, index memory), from a read-only open.
 *
 * The sync mode of the last writable open comes from DIR/OPTIONS, which the engine writes at
 * each writable open (informational, not synced): "unknown" when it is missing.
 */
#include <stdio.h>
#include <string.h>

#include "tools/htkvctl/ctl.h"

#include "engine/verify.h"

/* The value of "sync_mode=" in DIR/OPTIONS: "always", "interval", "never", or "unknown". */
static const char *
last_sync_mode(const struct ctl *c)
{
    static const char *const modes[] = { "always", "interval", "never" };
    char path[4200], line[256];
    snprintf(path, sizeof(path), "%s/OPTIONS", c->dir);
    const char *mode = "unknown";
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return mode;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "sync_mode=", 10) == 0) {
            line[strcspn(line, "\n")] = '\0';
            for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
                if (strcmp(line + 10, modes[i]) == 0) {
                    mode = modes[i];
                }
            }
            break;
        }
    }
    fclose(f);
    return mode;
}

static void
info_text(const struct ctl *c, const struct htkv_stats *st, const struct htkv_inspect_store *ms)
{
    char h[32];
    printf("store:          %s\n", c->dir);
    printf("format version: %u\n", ms->format);
    printf("manifest:       MANIFEST-%06llu (%llu bytes)\n",
           (unsigned long long)ms->manifest_number, (unsigned long long)ms->manifest_bytes);
    printf("shards:         %u\n", ms->shard_count);
    printf("segments:       %llu\n", (unsigned long long)st->segments);
    printf("live keys:      %llu\n", (unsigned long long)st->live_keys);
    printf("tombstones:     %llu\n", (unsigned long long)st->tombstones);
    printf("live bytes:     %llu (%s)\n", (unsigned long long)st->live_bytes,
           ctl_human_bytes(h, sizeof(h), st->live_bytes));
    printf("dead bytes:     %llu (%s)\n", (unsigned long long)st->dead_bytes,
           ctl_human_bytes(h, sizeof(h), st->dead_bytes));
    printf("data bytes:     %llu (%s)\n", (unsigned long long)st->data_bytes,
           ctl_human_bytes(h, sizeof(h), st->data_bytes));
    printf("disk bytes:     %llu (%s)\n", (unsigned long long)st->disk_bytes,
           ctl_human_bytes(h, sizeof(h), st->disk_bytes));
    printf("last version:   %llu\n", (unsigned long long)st->last_version);
    printf("index memory:   %llu (%s, estimate)\n", (unsigned long long)st->index_bytes,
           ctl_human_bytes(h, sizeof(h), st->index_bytes));
    printf("sync mode:      %s (of the last writable open)\n", last_sync_mode(c));
    if (st->truncated_bytes > 0) {
        printf("torn tail:      %llu bytes ignored by this read-only open\n",
               (unsigned long long)st->truncated_bytes);
    }
}

static void
info_json(const struct ctl *c, const struct htkv_stats *st, const struct htkv_inspect_store *ms)
{
    struct json j;
    char man[32];
    snprintf(man, sizeof(man), "MANIFEST-%06llu", (unsigned long long)ms->manifest_number);
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", c->dir);
    json_kv_u64(&j, "format_version", ms->format);
    json_kv_string(&j, "manifest", man);
    json_kv_u64(&j, "manifest_bytes", ms->manifest_bytes);
    json_kv_u64(&j, "shards", ms->shard_count);
    json_kv_u64(&j, "segments", st->segments);
    json_kv_u64(&j, "live_keys", st->live_keys);
    json_kv_u64(&j, "tombstones", st->tombstones);
    json_kv_u64(&j, "live_bytes", st->live_bytes);
    json_kv_u64(&j, "dead_bytes", st->dead_bytes);
    json_kv_u64(&j, "data_bytes", st->data_bytes);
    json_kv_u64(&j, "disk_bytes", st->disk_bytes);
    json_kv_u64(&j, "last_version", st->last_version);
    json_kv_u64(&j, "index_bytes", st->index_bytes);
    json_kv_string(&j, "sync_mode", last_sync_mode(c));
    json_kv_u64(&j, "torn_tail_bytes", st->truncated_bytes);
    json_kv_bool(&j, "unlocked", c->read_only);
    json_object_end(&j);
    json_finish(&j);
}

static int
info_run(struct ctl *c, int argc, char **argv)
{
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_info, argc, argv, NULL, 0, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    htkv_db *db;
    rc = ctl_open(c, &db);
    if (rc != 0) {
        return rc;
    }
    struct htkv_stats st;
    struct htkv_inspect_store ms;
    rc = htkv_stats(db, &st);
    if (rc == 0) {
        rc = htkv_inspect_store(db, &ms);
    }
    if (rc != 0) {
        ctl_engine_error(c, "cannot read the store's figures", rc);
        ctl_close(db);
        return CTL_EXIT_FAIL;
    }
    if (c->json) {
        info_json(c, &st, &ms);
    } else {
        info_text(c, &st, &ms);
    }
    ctl_close(db);
    return CTL_EXIT_OK;
}

const struct ctl_cmd ctl_cmd_info = {
    .name = "info",
    .args = "DIR",
    .summary = "format, shards, segments, live keys, live/dead bytes, last version, index memory",
    .help = "SYNC MODE is that of the last writable open, from DIR/OPTIONS (\"unknown\" when the\n"
            "file is missing).\n",
    .run = info_run,
};
