/*
 * metrics.c - the store's reports: htkv_stats(), and the text and Prometheus reports of
 * htkv_metrics_write() over the histograms of hist.c (features layer).
 *
 * Design. Every figure is collected where it happens at the cost of a few plain adds: writers
 * record their latency into their shard's histograms under the shard lock (or, in worker mode,
 * on the worker that owns the shard), fdatasyncs record their latency and the number of writes
 * they covered, and readers time one get in METRICS_GET_SAMPLE per thread into a shared
 * histogram with relaxed atomic adds. Puts and deletes are timed one in METRICS_WRITE_SAMPLE per
 * thread; the others are counted in their histogram's `untimed`, so op counts stay exact. Exact get
 * counts come from the EBR slot a get already owns (ebr_slot.reads), so the common get touches no
 * shared line it did not touch before. A report reads everything with relaxed loads: figures
 * recorded during the report may be partly seen, which is acceptable for monitoring.
 *
 * Invariant: in a report, a histogram's _count equals the sum of its buckets (both come from one
 * snapshot), so the +Inf bucket always equals _count.
 */
#include <stddef.h>
#include <stdio.h>

#include "engine/hist.h"
#include "engine/run.h"
#include "engine/cold.h"
#include "engine/store.h"
#include "engine/worker.h"

enum report_op { OP_GET, OP_PUT, OP_DEL, OP_BATCH, OP_COUNT };

static const char *const op_names[OP_COUNT] = { "get", "put", "delete", "batch" };

/* Everything a report prints, copied first so that formatting holds no lock. */
struct report {
    struct hist_snap ops[OP_COUNT]; /* store-wide */
    uint64_t gets;                  /* exact count of gets (the get histogram is sampled) */
    uint32_t nshards;
    uint32_t nworkers;
    bool budget;           /* a memory budget is in force: its counters are reported */
    uint64_t *queue_depth; /* per worker */
    struct report_shard {
        uint64_t keys;
        uint64_t bytes_written;
        uint64_t compact_read, compact_written, compact_segments, compact_tombstones;
        struct htkv_stats budget; /* the memory budget's counters (htkv_cold_stats()) */
        struct hist_snap sync;
        struct hist_snap group;
    } * shards;
};

static struct htkv_hist *
shard_op_hist(struct shard_metrics *m, int op)
{
    switch (op) {
    case OP_GET:
        return &m->get;
    case OP_PUT:
        return &m->put;
    case OP_DEL:
        return &m->del;
    case OP_BATCH:
        return &m->batch;
    }
    HTKV_UNREACHABLE();
}

static void
report_collect(struct htkv_db *db, struct report *r)
{
    struct hist_snap tmp;
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        struct report_shard *rs = &r->shards[i];
        for (int op = 0; op < OP_COUNT; op++) {
            htkv_hist_read(shard_op_hist(&sh->metrics, op), &tmp);
            htkv_hist_merge(&r->ops[op], &tmp);
        }
        htkv_hist_read(&sh->metrics.sync, &rs->sync);
        htkv_hist_read(&sh->metrics.group, &rs->group);
        rs->bytes_written = atomic_load_explicit(&sh->metrics.bytes_written, memory_order_relaxed);
        pthread_mutex_lock(&sh->lock);
        rs->keys = sh->live_keys;
        rs->compact_read = sh->metrics.compact_bytes_read;
        rs->compact_written = sh->metrics.compact_bytes_written;
        rs->compact_segments = sh->metrics.compact_segments;
        rs->compact_tombstones = sh->metrics.compact_tombstones;
        htkv_cold_stats(sh, &rs->budget);
        pthread_mutex_unlock(&sh->lock);
    }
    r->gets = htkv_ebr_reads(&db->ebr);
    for (uint32_t w = 0; w < r->nworkers; w++) {
        r->queue_depth[w] = htkv_mpsc_depth(&db->workers[w].q);
    }
}

/* Format @p ns for people: 850ns, 12.3us, 4.56ms, 1.23s. */
static const char *
fmt_ns(char *buf, size_t cap, uint64_t ns)
{
    if (ns < 1000) {
        snprintf(buf, cap, "%lluns", (unsigned long long)ns);
    } else if (ns < 1000000) {
        snprintf(buf, cap, "%.1fus", (double)ns / 1e3);
    } else if (ns < 1000000000) {
        snprintf(buf, cap, "%.2fms", (double)ns / 1e6);
    } else {
        snprintf(buf, cap, "%.2fs", (double)ns / 1e9);
    }
    return buf;
}

/* The memory budget's table: keys in memory and cold, and the cold lookups' costs. */
static void
report_text_budget(FILE *f, const struct report *r)
{
    fprintf(f, "\n%-6s %10s %10s %10s %10s %10s %12s %12s %10s\n", "shard", "hot_keys", "cold_keys",
            "evicted", "promoted", "kix_bytes", "page_reads", "bloom_neg", "bloom_fp");
    for (uint32_t i = 0; i < r->nshards; i++) {
        const struct htkv_stats *b = &r->shards[i].budget;
        fprintf(f, "%-6u %10llu %10llu %10llu %10llu %10llu %12llu %12llu %10llu\n", i,
                (unsigned long long)b->hot_keys, (unsigned long long)b->cold_keys,
                (unsigned long long)b->evictions, (unsigned long long)b->promotions,
                (unsigned long long)b->kix_bytes, (unsigned long long)b->kix_page_reads,
                (unsigned long long)b->bloom_negatives,
                (unsigned long long)b->bloom_false_positives);
    }
}

static void
report_text(FILE *f, const struct report *r)
{
    char a[32], b[32], c[32], d[32];
    fprintf(f, "%-8s %12s %10s %10s %10s %10s\n", "op", "count", "p50", "p99", "p99.9", "max");
    for (int op = 0; op < OP_COUNT; op++) {
        const struct hist_snap *s = &r->ops[op];
        uint64_t count = op == OP_GET ? r->gets : s->ops;
        fprintf(f, "%-8s %12llu %10s %10s %10s %10s\n", op_names[op], (unsigned long long)count,
                fmt_ns(a, sizeof(a), htkv_hist_percentile(s, 0.5)),
                fmt_ns(b, sizeof(b), htkv_hist_percentile(s, 0.99)),
                fmt_ns(c, sizeof(c), htkv_hist_percentile(s, 0.999)), fmt_ns(d, sizeof(d), s->max));
    }
    fprintf(f, "(latency: 1 get in %u, 1 put or delete in %u per thread is timed)\n\n",
            METRICS_GET_SAMPLE, METRICS_WRITE_SAMPLE);
    fprintf(f, "%-6s %12s %14s %10s %10s %10s %10s %10s\n", "shard", "keys", "bytes_written",
            "syncs", "group_p50", "group_max", "sync_p50", "sync_p99");
    for (uint32_t i = 0; i < r->nshards; i++) {
        const struct report_shard *rs = &r->shards[i];
        fprintf(f, "%-6u %12llu %14llu %10llu %10llu %10llu %10s %10s\n", i,
                (unsigned long long)rs->keys, (unsigned long long)rs->bytes_written,
                (unsigned long long)rs->sync.count,
                (unsigned long long)htkv_hist_percentile(&rs->group, 0.5),
                (unsigned long long)rs->group.max,
                fmt_ns(a, sizeof(a), htkv_hist_percentile(&rs->sync, 0.5)),
                fmt_ns(b, sizeof(b), htkv_hist_percentile(&rs->sync, 0.99)));
    }
    fprintf(f, "\n%-6s %14s %14s %12s %12s\n", "shard", "compact_read", "compact_copied",
            "segs_dropped", "tombs_dropped");
    for (uint32_t i = 0; i < r->nshards; i++) {
        const struct report_shard *rs = &r->shards[i];
        fprintf(f, "%-6u %14llu %14llu %12llu %12llu\n", i, (unsigned long long)rs->compact_read,
                (unsigned long long)rs->compact_written, (unsigned long long)rs->compact_segments,
                (unsigned long long)rs->compact_tombstones);
    }
    if (r->budget) {
        report_text_budget(f, r);
    }
    if (r->nworkers > 0) {
        fprintf(f, "\n%-6s %12s\n", "worker", "queue_depth");
        for (uint32_t w = 0; w < r->nworkers; w++) {
            fprintf(f, "%-6u %12llu\n", w, (unsigned long long)r->queue_depth[w]);
        }
    }
}

/*
 * One Prometheus histogram series: cumulative buckets at every power-of-two boundary (every
 * METRICS_SUB-th bucket, which keeps 4 x shards series readable) up to the last non-empty
 * bucket, then +Inf, _sum and _count. @p scale turns a recorded value into the metric's unit
 * (1e-9 for ns to seconds, 1 for counts). @p labels is `name="value"`.
 */
static void
prom_hist(FILE *f, const char *name, const char *labels, const struct hist_snap *s, double scale)
{
    unsigned last = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
        if (s->buckets[b] != 0) {
            last = b;
        }
    }
    uint64_t cum = 0;
    for (unsigned b = 0; b < METRICS_BUCKETS - 1; b++) {
        cum += s->buckets[b];
        if (b % METRICS_SUB == METRICS_SUB - 1 && b <= (last | (METRICS_SUB - 1))) {
            fprintf(f, "%s_bucket{%s,le=\"%.9g\"} %llu\n", name, labels,
                    (double)htkv_hist_upper(b) * scale, (unsigned long long)cum);
        }
    }
    fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)s->count);
    fprintf(f, "%s_sum{%s} %.9g\n", name, labels, (double)s->sum * scale);
    fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)s->count);
}

static void
prom_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The memory budget's series, per shard. */
static void
prom_budget(FILE *f, const struct report *r)
{
    static const struct {
        const char *name, *type, *help;
        size_t field;
    } m[] = {
        { "htkv_shard_hot_keys", "gauge", "Keys whose index entry is in memory.",
          offsetof(struct htkv_stats, hot_keys) },
        { "htkv_shard_cold_keys", "gauge", "Keys found only through key index files.",
          offsetof(struct htkv_stats, cold_keys) },
        { "htkv_shard_kix_bytes", "gauge", "Memory of the key indexes' fences and filters.",
          offsetof(struct htkv_stats, kix_bytes) },
        { "htkv_shard_cold_keys_at_open", "gauge",
          "Keys the open left cold in the key index files a clean close named.",
          offsetof(struct htkv_stats, cold_keys_at_open) },
        { "htkv_shard_evictions_total", "counter", "Keys that left memory.",
          offsetof(struct htkv_stats, evictions) },
        { "htkv_shard_promotions_total", "counter", "Cold keys brought back into memory.",
          offsetof(struct htkv_stats, promotions) },
        { "htkv_shard_kix_page_reads_total", "counter", "Key index pages read by lookups.",
          offsetof(struct htkv_stats, kix_page_reads) },
        { "htkv_shard_bloom_negatives_total", "counter", "Key index files skipped on their filter.",
          offsetof(struct htkv_stats, bloom_negatives) },
        { "htkv_shard_bloom_false_positives_total", "counter",
          "Key index pages read for a key the filter did not hold.",
          offsetof(struct htkv_stats, bloom_false_positives) },
    };
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        prom_head(f, m[k].name, m[k].type, m[k].help);
        for (uint32_t i = 0; i < r->nshards; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&r->shards[i].budget + m[k].field, sizeof(v));
            fprintf(f, "%s{shard=\"%u\"} %llu\n", m[k].name, i, (unsigned long long)v);
        }
    }
}

static void
report_prometheus(FILE *f, const struct report *r)
{
    char labels[64];
    prom_head(f, "htkv_ops_total", "counter", "Operations completed since open, by kind.");
    for (int op = 0; op < OP_COUNT; op++) {
        uint64_t count = op == OP_GET ? r->gets : r->ops[op].ops;
        fprintf(f, "htkv_ops_total{op=\"%s\"} %llu\n", op_names[op], (unsigned long long)count);
    }
    prom_head(f, "htkv_op_latency_seconds", "histogram",
              "Latency of operations as the caller sees it (gets, puts and deletes: 1 in 64 per "
              "thread sampled).");
    for (int op = 0; op < OP_COUNT; op++) {
        snprintf(labels, sizeof(labels), "op=\"%s\"", op_names[op]);
        prom_hist(f, "htkv_op_latency_seconds", labels, &r->ops[op], 1e-9);
    }
    prom_head(f, "htkv_shard_keys", "gauge", "Live keys of a shard.");
    for (uint32_t i = 0; i < r->nshards; i++) {
        fprintf(f, "htkv_shard_keys{shard=\"%u\"} %llu\n", i,
                (unsigned long long)r->shards[i].keys);
    }
    prom_head(f, "htkv_shard_bytes_written_total", "counter",
              "Record bytes appended to a shard's segments by writes since open.");
    for (uint32_t i = 0; i < r->nshards; i++) {
        fprintf(f, "htkv_shard_bytes_written_total{shard=\"%u\"} %llu\n", i,
                (unsigned long long)r->shards[i].bytes_written);
    }
    static const struct {
        const char *name, *help;
        size_t field;
    } compact_metrics[] = {
        { "htkv_shard_compaction_read_bytes_total", "Record bytes examined by compaction.",
          offsetof(struct report_shard, compact_read) },
        { "htkv_shard_compaction_written_bytes_total", "Live record bytes copied by compaction.",
          offsetof(struct report_shard, compact_written) },
        { "htkv_shard_compaction_segments_total", "Segments compaction rewrote and dropped.",
          offsetof(struct report_shard, compact_segments) },
        { "htkv_shard_compaction_tombstones_total", "Tombstones compaction removed for good.",
          offsetof(struct report_shard, compact_tombstones) },
    };
    for (size_t m = 0; m < sizeof(compact_metrics) / sizeof(compact_metrics[0]); m++) {
        prom_head(f, compact_metrics[m].name, "counter", compact_metrics[m].help);
        for (uint32_t i = 0; i < r->nshards; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&r->shards[i] + compact_metrics[m].field, sizeof(v));
            fprintf(f, "%s{shard=\"%u\"} %llu\n", compact_metrics[m].name, i,
                    (unsigned long long)v);
        }
    }
    if (r->budget) {
        prom_budget(f, r);
    }
    prom_head(f, "htkv_shard_fdatasync_seconds", "histogram",
              "Latency of a shard's fdatasync calls.");
    for (uint32_t i = 0; i < r->nshards; i++) {
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        prom_hist(f, "htkv_shard_fdatasync_seconds", labels, &r->shards[i].sync, 1e-9);
    }
    prom_head(f, "htkv_shard_sync_group_size", "histogram",
              "Writes made durable by each fdatasync of a shard (group commit size).");
    for (uint32_t i = 0; i < r->nshards; i++) {
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        prom_hist(f, "htkv_shard_sync_group_size", labels, &r->shards[i].group, 1.0);
    }
    if (r->nworkers > 0) {
        prom_head(f, "htkv_worker_queue_depth", "gauge",
                  "Write requests waiting in a worker's queue.");
        for (uint32_t w = 0; w < r->nworkers; w++) {
            fprintf(f, "htkv_worker_queue_depth{worker=\"%u\"} %llu\n", w,
                    (unsigned long long)r->queue_depth[w]);
        }
    }
}

/* Write the report of htkv_metrics_write() (call guard held, format checked). */
static int
metrics_emit(struct htkv_db *db, FILE *f, int format)
{
    HTKV_ASSERT(format == HTKV_METRICS_TEXT || format == HTKV_METRICS_PROMETHEUS);
    struct report *r = htkv_mem_calloc(1, sizeof(*r));
    if (r == NULL) {
        return -ENOMEM;
    }
    r->nshards = db->shard_count;
    r->nworkers = db->nworkers;
    r->budget = db->env.budget_share != 0;
    r->shards = htkv_mem_calloc(db->shard_count, sizeof(*r->shards));
    r->queue_depth = htkv_mem_calloc(db->nworkers > 0 ? db->nworkers : 1, sizeof(uint64_t));
    if (r->shards == NULL || r->queue_depth == NULL) {
        htkv_mem_free(r->shards);
        htkv_mem_free(r->queue_depth);
        htkv_mem_free(r);
        return -ENOMEM;
    }
    report_collect(db, r);
    if (format == HTKV_METRICS_TEXT) {
        report_text(f, r);
    } else {
        report_prometheus(f, r);
    }
    htkv_mem_free(r->shards);
    htkv_mem_free(r->queue_depth);
    htkv_mem_free(r);
    return (fflush(f) != 0 || ferror(f)) ? -EIO : 0;
}

int
htkv_metrics_write(htkv_db *db, FILE *f, int format)
{
    if (db == NULL || f == NULL ||
        (format != HTKV_METRICS_TEXT && format != HTKV_METRICS_PROMETHEUS)) {
        return htkv_einval(__func__);
    }
    unsigned slot;
    int rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    rc = metrics_emit(db, f, format);
    db_exit(db, slot);
    return rc;
}

/* ---- htkv_stats() ---------------------------------------------------------------------------- */

int
htkv_stats(htkv_db *db, struct htkv_stats *out)
{
    if (db == NULL || out == NULL) {
        return htkv_einval(__func__);
    }
    unsigned slot;
    int rc = db_enter(db, &slot);
    if (rc != 0) {
        return rc;
    }
    memset(out, 0, sizeof(*out));
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        pthread_mutex_lock(&sh->lock);
        out->live_keys += sh->live_keys;
        out->tombstones += sh->tombstones;
        out->puts += sh->puts;
        out->deletes += sh->deletes;
        out->batches += sh->batches;
        out->index_bytes += sh->entry_bytes + htkv_hidx_table_bytes(&sh->idx);
        out->trie_bytes += htkv_trie_bytes(&sh->trie) + htkv_run_bytes(sh);
        out->segments += sh->nsegs;
        for (size_t k = 0; k < sh->nsegs; k++) {
            struct seg *s = sh->segs[k];
            out->disk_bytes += s->file_bytes;
            out->data_bytes += s->tail - SEG_DATA_OFF;
            out->live_bytes += atomic_load_explicit(&s->live_bytes, memory_order_relaxed);
            out->dead_bytes += atomic_load_explicit(&s->dead_bytes, memory_order_relaxed);
        }
        out->failed |= sh->failed;
        htkv_cold_stats(sh, out);
        pthread_mutex_unlock(&sh->lock);
    }
    /* Inside db_enter()'s critical section: a path retired meanwhile is not freed yet. */
    const struct merge_path *path = atomic_load_explicit(&db->path, memory_order_acquire);
    if (path != NULL) {
        out->trie_bytes += sizeof(*path) + path->nshards * sizeof(path->runs[0]) + path->n;
    }
    out->last_version = htkv_versions_latest(&db->ver);
    pthread_mutex_lock(&db->views.lock);
    out->views_open = db->views.open;
    pthread_mutex_unlock(&db->views.lock);
    out->syncs = atomic_load(&db->env.syncs);
    out->recovered_records = db->recovery.records;
    out->truncated_bytes = db->recovery.truncated_bytes;
    out->skipped_bytes = db->recovery.skipped_bytes;
    out->discarded_batches = db->recovery.ndiscarded;
    out->shard_count = db->shard_count;
    out->worker_threads = db->nworkers;
    out->cpus = db->cpus;
    out->io_backend = htkv_workers_backend(db);
    out->sync_mode = db->cfg.sync_mode;
    out->no_space = atomic_load(&db->env.no_space);
    out->gets = htkv_ebr_reads(&db->ebr);
    out->compactions = atomic_load(&db->compactor.compactions);
    out->arena_bytes = htkv_arenas_allocated(db->arenas, db->narenas);
    for (unsigned i = 0; i < db->narenas; i++) {
        out->arenas += db->arenas[i] != 0;
    }
    for (uint32_t i = 0; i < db->shard_count; i++) {
        struct shard *sh = db_shard(db, i);
        pthread_mutex_lock(&sh->lock);
        out->compacted_segments += sh->metrics.compact_segments;
        out->compaction_read_bytes += sh->metrics.compact_bytes_read;
        out->compaction_written_bytes += sh->metrics.compact_bytes_written;
        out->tombstones_dropped += sh->metrics.compact_tombstones;
        pthread_mutex_unlock(&sh->lock);
    }
    db_exit(db, slot);
    return 0;
}
