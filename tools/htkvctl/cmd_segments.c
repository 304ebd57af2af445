/*
 * cmd_segments.c - `htkvctl segments DIR`: one row per segment file (shard, id, sizes, records,
 * live ratio, sealed, hint present), from a read-only open: the live figures come from the
 * index that recovery rebuilt.
 *
 * The live ratio is live bytes over data bytes; control records (batch frames, SEAL) are neither
 * live nor dead, so a segment of batches never reaches 100%.
 */
#include "tools/htkvctl/ctl.h"

#include "engine/verify.h"

struct seg_out {
    struct ctl *c;
    struct json j;
};

static double
live_ratio(const struct htkv_inspect_seg *s)
{
    return s->data_bytes > 0 ? (double)s->live_bytes / (double)s->data_bytes : 0.0;
}

static int
seg_row(const struct htkv_inspect_seg *s, void *ctx)
{
    struct seg_out *o = ctx;
    if (!o->c->json) {
        char ratio[16];
        if (s->data_bytes > 0) {
            snprintf(ratio, sizeof(ratio), "%.1f%%", 100.0 * live_ratio(s));
        } else {
            snprintf(ratio, sizeof(ratio), "-");
        }
        printf("%5u %12llu %12llu %12llu %9llu %12llu %6s %-6s %s\n", s->shard,
               (unsigned long long)s->id, (unsigned long long)s->file_bytes,
               (unsigned long long)s->data_bytes, (unsigned long long)s->records,
               (unsigned long long)s->live_bytes, ratio, s->sealed ? "yes" : "no",
               s->hint ? "yes" : "no");
        return 0;
    }
    struct json *j = &o->j;
    json_object_begin(j);
    json_kv_u64(j, "shard", s->shard);
    json_kv_u64(j, "id", s->id);
    json_kv_u64(j, "file_bytes", s->file_bytes);
    json_kv_u64(j, "data_bytes", s->data_bytes);
    json_kv_u64(j, "records", s->records);
    json_kv_u64(j, "live_bytes", s->live_bytes);
    json_kv_u64(j, "dead_bytes", s->dead_bytes);
    json_key(j, "live_ratio");
    if (s->data_bytes > 0) {
        json_double(j, live_ratio(s));
    } else {
        json_null(j);
    }
    json_kv_bool(j, "sealed", s->sealed);
    json_kv_bool(j, "hint", s->hint);
    json_object_end(j);
    return 0;
}

static int
segments_run(struct ctl *c, int argc, char **argv)
{
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_segments, argc, argv, NULL, 0, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    htkv_db *db;
    rc = ctl_open(c, &db);
    if (rc != 0) {
        return rc;
    }
    struct seg_out o = { .c = c };
    if (c->json) {
        json_init(&o.j, stdout);
        json_object_begin(&o.j);
        json_kv_string(&o.j, "store", c->dir);
        json_key(&o.j, "segments");
        json_array_begin(&o.j);
    } else {
        printf("%5s %12s %12s %12s %9s %12s %6s %-6s %s\n", "SHARD", "SEGMENT", "FILE_BYTES",
               "DATA_BYTES", "RECORDS", "LIVE_BYTES", "LIVE", "SEALED", "HINT");
    }
    rc = htkv_inspect_segments(db, seg_row, &o);
    if (c->json) {
        json_array_end(&o.j);
        json_object_end(&o.j);
        json_finish(&o.j);
    }
    if (rc != 0) {
        ctl_engine_error(c, "cannot list the segments", rc);
    }
    ctl_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
}

const struct ctl_cmd ctl_cmd_segments = {
    .name = "segments",
    .args = "DIR",
    .summary = "one row per segment: shard, id, bytes, records, live ratio, sealed, hint",
    .help = "LIVE is live bytes / data bytes (batch frames and SEAL count as neither).\n"
            "HINT says whether a hint file (NNNN.hint) sits beside the segment.\n",
    .run = segments_run,
};
