/*
 * cmd_compact.c - `htkvctl compact DIR`: open the store for writing, run one full compaction
 * pass (htkv_compact_now()) and report the store's figures before and after, what the pass did
 * and how fast it read.
 *
 * Design. The store is opened as a writer opens it (ctl_open_write(): the exclusive lock, so a
 * store another process has open is refused), with background compaction off, so that the only
 * pass is the one asked for. While the pass runs on the main thread, a second thread polls
 * htkv_stats() every 100 ms and redraws the progress bar on stderr (when it is a terminal):
 * compaction_read_bytes against the live + dead bytes at the start, which is what a full pass
 * reads at most (control records aside; the bar stops at 100%). The rate is the bytes the pass
 * read over its elapsed time, in MB/s (10^6 bytes per second).
 *
 * Invariants
 *   1. The poller only reads (htkv_stats(), which any thread may call) and draws; it is joined
 *      before the main thread prints anything or closes the store.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "tools/htkvctl/ctl.h"

/* Poll interval of the progress bar: 100 ms = 10 redraws a second. */
#define COMPACT_POLL_NS 100000000L

/* The progress poller: shared by the main thread and the poller thread. */
struct poller {
    htkv_db *db;
    struct ctl_bar bar;
    uint64_t read0; /* compaction_read_bytes at the start */
    uint64_t total; /* live + dead bytes at the start */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop; /* under lock */
    bool running;
    pthread_t thread;
};

static void
poll_draw(struct poller *p)
{
    struct htkv_stats st;
    if (htkv_stats(p->db, &st) == 0) {
        ctl_bar_draw(&p->bar, st.compaction_read_bytes - p->read0, p->total);
    }
}

static void *
poll_main(void *arg)
{
    struct poller *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        pthread_mutex_unlock(&p->lock);
        poll_draw(p);
        pthread_mutex_lock(&p->lock);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += COMPACT_POLL_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        while (!p->stop && pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT) {
            /* woken early (spuriously, or to stop) */
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Start the poller when a bar can be drawn. Without a thread (quiet, or pthread_create
 * failed), the pass simply runs without a bar. */
static void
poll_start(struct poller *p, const struct ctl *c, htkv_db *db, const struct htkv_stats *before)
{
    *p = (struct poller){ .db = db,
                          .read0 = before->compaction_read_bytes,
                          .total = before->live_bytes + before->dead_bytes };
    ctl_bar_init(&p->bar, c, "compact");
    if (c->quiet_progress || p->total == 0) {
        return;
    }
    poll_draw(p); /* at once: a pass may end before the poller first runs */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->lock, NULL);
    p->running = pthread_create(&p->thread, NULL, poll_main, p) == 0;
    if (!p->running) {
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
    }
}

static void
poll_stop(struct poller *p)
{
    if (p->running) {
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        p->running = false;
    }
    ctl_bar_clear(&p->bar);
}

/* What the pass did: the differences of the counters, elapsed time and rate. */
struct compact_report {
    struct htkv_stats before, after;
    uint64_t segments_compacted;
    uint64_t tombstones_dropped;
    uint64_t read_bytes;
    uint64_t written_bytes;
    double elapsed_s;
    double mb_per_s; /* < 0: not measurable (no time elapsed) */
};

static void
text_row(const char *name, uint64_t before, uint64_t after, bool bytes)
{
    char b[64], a[64], h[32];
    if (bytes) {
        snprintf(b, sizeof(b), "%llu (%s)", (unsigned long long)before,
                 ctl_human_bytes(h, sizeof(h), before));
        snprintf(a, sizeof(a), "%llu (%s)", (unsigned long long)after,
                 ctl_human_bytes(h, sizeof(h), after));
    } else {
        snprintf(b, sizeof(b), "%llu", (unsigned long long)before);
        snprintf(a, sizeof(a), "%llu", (unsigned long long)after);
    }
    printf("%-20s %-26s %s\n", name, b, a);
}

static void
compact_text(const struct ctl *c, const struct compact_report *r)
{
    char h[32];
    printf("store:               %s\n", c->dir);
    printf("%-20s %-26s %s\n", "", "before", "after");
    text_row("segments", r->before.segments, r->after.segments, false);
    text_row("live keys", r->before.live_keys, r->after.live_keys, false);
    text_row("tombstones", r->before.tombstones, r->after.tombstones, false);
    text_row("data bytes", r->before.data_bytes, r->after.data_bytes, true);
    text_row("live bytes", r->before.live_bytes, r->after.live_bytes, true);
    text_row("dead bytes", r->before.dead_bytes, r->after.dead_bytes, true);
    text_row("disk bytes", r->before.disk_bytes, r->after.disk_bytes, true);
    printf("segments compacted:  %llu\n", (unsigned long long)r->segments_compacted);
    printf("tombstones dropped:  %llu\n", (unsigned long long)r->tombstones_dropped);
    printf("bytes read:          %llu (%s)\n", (unsigned long long)r->read_bytes,
           ctl_human_bytes(h, sizeof(h), r->read_bytes));
    printf("bytes written:       %llu (%s)\n", (unsigned long long)r->written_bytes,
           ctl_human_bytes(h, sizeof(h), r->written_bytes));
    printf("elapsed:             %.3f s\n", r->elapsed_s);
    if (r->mb_per_s >= 0) {
        printf("read rate:           %.1f MB/s\n", r->mb_per_s);
    } else {
        printf("read rate:           -\n");
    }
}

static void
json_figures(struct json *j, const char *key, const struct htkv_stats *st)
{
    json_key(j, key);
    json_object_begin(j);
    json_kv_u64(j, "segments", st->segments);
    json_kv_u64(j, "live_keys", st->live_keys);
    json_kv_u64(j, "tombstones", st->tombstones);
    json_kv_u64(j, "data_bytes", st->data_bytes);
    json_kv_u64(j, "live_bytes", st->live_bytes);
    json_kv_u64(j, "dead_bytes", st->dead_bytes);
    json_kv_u64(j, "disk_bytes", st->disk_bytes);
    json_object_end(j);
}

static void
compact_json(const struct ctl *c, const struct compact_report *r)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", c->dir);
    json_figures(&j, "before", &r->before);
    json_figures(&j, "after", &r->after);
    json_kv_u64(&j, "segments_compacted", r->segments_compacted);
    json_kv_u64(&j, "tombstones_dropped", r->tombstones_dropped);
    json_kv_u64(&j, "read_bytes", r->read_bytes);
    json_kv_u64(&j, "written_bytes", r->written_bytes);
    json_key(&j, "elapsed_s");
    json_double(&j, r->elapsed_s);
    json_key(&j, "read_mb_per_s");
    if (r->mb_per_s >= 0) {
        json_double(&j, r->mb_per_s);
    } else {
        json_null(&j);
    }
    json_object_end(&j);
    json_finish(&j);
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run the pass with the progress bar; fill @p r. Returns 0 or the engine's code (reported). */
static int
compact_pass(struct ctl *c, htkv_db *db, struct compact_report *r)
{
    int rc = htkv_stats(db, &r->before);
    if (rc != 0) {
        ctl_engine_error(c, "cannot read the store's figures", rc);
        return rc;
    }
    struct poller p;
    poll_start(&p, c, db, &r->before);
    double t0 = now_s();
    rc = htkv_compact_now(db);
    r->elapsed_s = now_s() - t0;
    poll_stop(&p);
    if (rc != 0) {
        ctl_engine_error(c, "compaction failed", rc);
        return rc;
    }
    rc = htkv_stats(db, &r->after);
    if (rc != 0) {
        ctl_engine_error(c, "cannot read the store's figures", rc);
        return rc;
    }
    r->segments_compacted = r->after.compacted_segments - r->before.compacted_segments;
    r->tombstones_dropped = r->after.tombstones_dropped - r->before.tombstones_dropped;
    r->read_bytes = r->after.compaction_read_bytes - r->before.compaction_read_bytes;
    r->written_bytes = r->after.compaction_written_bytes - r->before.compaction_written_bytes;
    r->mb_per_s = r->elapsed_s > 0 ? (double)r->read_bytes / r->elapsed_s / 1e6 : -1.0;
    return 0;
}

static int
compact_run(struct ctl *c, int argc, char **argv)
{
    char *pos[1];
    int rc = ctl_parse_args(c, &ctl_cmd_compact, argc, argv, NULL, 0, pos, 1);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    htkv_db *db;
    rc = ctl_open_write(c, &db);
    if (rc != 0) {
        return rc;
    }
    struct compact_report r = { 0 };
    rc = compact_pass(c, db, &r);
    if (rc != 0) {
        ctl_json_error(c, htkv_strerror(rc), CTL_EXIT_FAIL);
        ctl_close(db);
        return CTL_EXIT_FAIL;
    }
    /* Close before reporting success: the close makes the pass's last writes durable. */
    rc = htkv_close(db);
    if (rc != 0) {
        ctl_engine_error(c, "closing the store failed", rc);
        ctl_json_error(c, htkv_strerror(rc), CTL_EXIT_FAIL);
        return CTL_EXIT_FAIL;
    }
    /* The close trims each shard's active segment to its data: the "after" figures are those
     * of the store as it now lies on disk (those of the open handle count the room the active
     * segments were given to grow into). */
    if (ctl_open_db(c, &db) == 0) {
        struct htkv_stats st;
        if (htkv_stats(db, &st) == 0) {
            r.after = st;
        }
        ctl_close(db);
    }
    if (c->json) {
        compact_json(c, &r);
    } else {
        compact_text(c, &r);
    }
    return CTL_EXIT_OK;
}

const struct ctl_cmd ctl_cmd_compact = {
    .name = "compact",
    .args = "DIR",
    .summary = "run a full compaction pass now; print segments and bytes before and after",
    .help =
        "Opens the store for writing (refused while another process has it open; --read-only\n"
        "is refused), runs htkv_compact_now() (every sealed segment with garbage, and the\n"
        "active one, is rewritten) and prints, before and after: segments, live keys,\n"
        "tombstones, data, live, dead and disk bytes; then the segments compacted, tombstones\n"
        "dropped, bytes read and written by the pass, its elapsed time and read rate (MB/s =\n"
        "10^6 bytes/s). A progress bar goes to stderr when it is a terminal. New segments get\n"
        "the default size (64 MiB); the opening is an application's: recovery truncates a torn\n"
        "tail and removes files left over by a crash.\n",
    .writes = true,
    .run = compact_run,
};
