/*
 * test_metrics_write.c - htkv_metrics_write(): the counts it reports equal the operations done,
 * in INTERVAL and ALWAYS, inline and with workers; the Prometheus output parses line by line
 * (every sample has a TYPE line before it, histogram buckets are cumulative and end with
 * le="+Inf" equal to _count); bad arguments and write errors return their codes.
 */
#include <errno.h>

#include "tests/support/testutil.h"

#define NPUT 300
#define NGET 500
#define NDEL 40
#define NBATCH 20

/* Run the workload; returns the store. Keys k-000..k-299; batches write 3 keys each. */
static htkv_db *
metrics_workload(const char *dir, int sync_mode, unsigned workers)
{
    htkv_config cfg;
    tu_config(&cfg, dir, sync_mode);
    cfg.worker_threads = workers;
    htkv_db *db = tu_open(&cfg);
    char key[32], val[64];
    for (int i = 0; i < NPUT; i++) {
        snprintf(key, sizeof(key), "k-%03d", i);
        snprintf(val, sizeof(val), "value-%d", i);
        assert_int_equal(htkv_put(db, key, strlen(key), val, strlen(val)), 0);
    }
    for (int i = 0; i < NGET; i++) {
        size_t n;
        snprintf(key, sizeof(key), "k-%03d", i % NPUT);
        assert_int_equal(htkv_get(db, key, strlen(key), val, sizeof(val), &n), 0);
    }
    for (int i = 0; i < NDEL; i++) {
        snprintf(key, sizeof(key), "k-%03d", i);
        assert_int_equal(htkv_delete(db, key, strlen(key)), 0);
    }
    htkv_batch *b;
    assert_int_equal(htkv_batch_create(&b), 0);
    for (int i = 0; i < NBATCH; i++) {
        htkv_batch_clear(b);
        for (int k = 0; k < 3; k++) {
            snprintf(key, sizeof(key), "b-%03d-%d", i, k);
            assert_int_equal(htkv_batch_put(b, key, strlen(key), "x", 1), 0);
        }
        assert_int_equal(htkv_write(db, b), 0);
    }
    htkv_batch_destroy(b);
    return db;
}

/* Write the metrics in @p format to a heap string (free it). */
static char *
metrics_string(htkv_db *db, int format)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(htkv_metrics_write(db, f, format), 0);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    return buf;
}

/* Count column of the text table's row for @p op. */
static unsigned long long
text_count(const char *text, const char *op)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "\n%s ", op);
    const char *p = strstr(text, pat);
    if (p == NULL && strncmp(text, pat + 1, strlen(pat + 1)) == 0) {
        p = text - 1;
    }
    assert_non_null(p);
    unsigned long long n = 0;
    assert_int_equal(sscanf(p + strlen(pat), "%llu", &n), 1);
    return n;
}

/* Value of the sample line that starts with @p prefix (name and labels). */
static double
prom_value(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        if (strncmp(p, prefix, n) == 0 && p[n] == ' ') {
            return strtod(p + n + 1, NULL);
        }
    }
    fail_msg("no sample %s", prefix);
    return -1;
}

#define MAX_TYPES 32

/* Check the exposition format line by line (see the file comment). */
static void
prom_check(char *text, unsigned workers)
{
    char names[MAX_TYPES][64], types[MAX_TYPES][16];
    int ntypes = 0;
    char series[256] = "";
    double cum = -1, inf = -1;
    int samples = 0;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(ntypes < MAX_TYPES);
            assert_int_equal(sscanf(line + 7, "%63s %15s", names[ntypes], types[ntypes]), 2);
            assert_true(strcmp(types[ntypes], "counter") == 0 ||
                        strcmp(types[ntypes], "gauge") == 0 ||
                        strcmp(types[ntypes], "histogram") == 0);
            assert_int_equal(strncmp(names[ntypes], "htkv_", 5), 0);
            ntypes++;
            continue;
        }
        /* name{labels} value */
        char *brace = strchr(line, '{');
        char *close = brace ? strchr(brace, '}') : NULL;
        if (brace == NULL || close == NULL || close[1] != ' ') {
            fail_msg("bad sample line: %s", line);
        }
        char *end;
        double v = strtod(close + 2, &end);
        if (*end != '\0' || end == close + 2) {
            fail_msg("bad value: %s", line);
        }
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(brace - line), line);
        /* The TYPE line must come first: the last one names this family. */
        assert_true(ntypes > 0);
        const char *fam = names[ntypes - 1];
        size_t fl = strlen(fam);
        assert_int_equal(strncmp(name, fam, fl), 0);
        const char *suffix = name + fl;
        if (strcmp(types[ntypes - 1], "histogram") != 0) {
            assert_string_equal(suffix, "");
            samples++;
            continue;
        }
        char *le = strstr(brace, ",le=\"");
        if (strcmp(suffix, "_bucket") == 0) {
            assert_non_null(le);
            char key[256];
            snprintf(key, sizeof(key), "%s%.*s", name, (int)(le - brace), brace);
            if (strcmp(key, series) != 0) {
                assert_true(cum < 0); /* the previous series ended with +Inf */
                snprintf(series, sizeof(series), "%s", key);
                cum = 0;
            }
            assert_true(v >= cum); /* cumulative */
            cum = v;
            if (strncmp(le, ",le=\"+Inf\"}", 11) == 0) {
                inf = v;
                cum = -1;
                series[0] = '\0';
            }
        } else if (strcmp(suffix, "_sum") == 0) {
            assert_true(v >= 0);
        } else if (strcmp(suffix, "_count") == 0) {
            assert_true(v == inf); /* +Inf bucket == _count */
            inf = -1;
        } else {
            fail_msg("unknown histogram sample %s", name);
        }
        samples++;
    }
    /* 6 + 4 compaction counters; htkv_worker_queue_depth with workers */
    assert_true(ntypes == (workers > 0 ? 11 : 10));
    assert_true(samples > 20);
}

static void
metrics_check(int sync_mode, unsigned workers)
{
    tu_context("sync_mode %d workers %u", sync_mode, workers);
    char *dir = tu_tmpdir("metrics");
    htkv_db *db = metrics_workload(dir, sync_mode, workers);

    char *text = metrics_string(db, HTKV_METRICS_TEXT);
    assert_int_equal(text_count(text, "put"), NPUT);
    assert_int_equal(text_count(text, "get"), NGET);
    assert_int_equal(text_count(text, "delete"), NDEL);
    assert_int_equal(text_count(text, "batch"), NBATCH);
    assert_non_null(strstr(text, "bytes_written"));
    free(text);

    char *prom = metrics_string(db, HTKV_METRICS_PROMETHEUS);
    assert_true(prom_value(prom, "htkv_ops_total{op=\"put\"}") == NPUT);
    assert_true(prom_value(prom, "htkv_ops_total{op=\"get\"}") == NGET);
    assert_true(prom_value(prom, "htkv_ops_total{op=\"delete\"}") == NDEL);
    assert_true(prom_value(prom, "htkv_ops_total{op=\"batch\"}") == NBATCH);
    /* Puts are timed one in 64 per thread (the NPUT puts are consecutive calls): the histogram
     * counts the timed ones, htkv_ops_total every one. */
    double timed = prom_value(prom, "htkv_op_latency_seconds_count{op=\"put\"}");
    assert_true(timed >= NPUT / 64 && timed <= NPUT / 64 + 1);
    assert_true(prom_value(prom, "htkv_ops_total{op=\"put\"}") == NPUT);
    assert_true(prom_value(prom, "htkv_op_latency_seconds_count{op=\"batch\"}") == NBATCH);
    double syncs = 0, bytes = 0;
    for (int s = 0; s < 4; s++) {
        char p[96];
        snprintf(p, sizeof(p), "htkv_shard_fdatasync_seconds_count{shard=\"%d\"}", s);
        syncs += prom_value(prom, p);
        snprintf(p, sizeof(p), "htkv_shard_bytes_written_total{shard=\"%d\"}", s);
        bytes += prom_value(prom, p);
    }
    assert_true(bytes > 0);
    if (sync_mode == HTKV_SYNC_ALWAYS) {
        assert_true(syncs > 0);
    }
    struct htkv_stats st;
    assert_int_equal(htkv_stats(db, &st), 0);
    assert_int_equal(st.gets, NGET);
    /* stats.syncs counts syncs when they are issued, the histograms when they complete. In
     * INTERVAL mode a worker's timed sync may be in flight or start at any moment, so only the
     * order is certain; in ALWAYS mode every sync completed before its writes returned. */
    if (sync_mode == HTKV_SYNC_ALWAYS) {
        assert_true(syncs == (double)st.syncs);
    } else {
        assert_true(syncs <= (double)st.syncs);
    }
    prom_check(prom, workers);
    free(prom);

    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

/* Goal: counts match the workload, both formats, INTERVAL. Method: fixed workload, parse. */
static void
test_metrics_write_counts_interval(void **state)
{
    (void)state;
    metrics_check(HTKV_SYNC_INTERVAL, 0);
    metrics_check(HTKV_SYNC_INTERVAL, 2);
}

/* Goal: same in ALWAYS, where every write is covered by a group fdatasync. */
static void
test_metrics_write_counts_always(void **state)
{
    (void)state;
    metrics_check(HTKV_SYNC_ALWAYS, 0);
    metrics_check(HTKV_SYNC_ALWAYS, 2);
}

/* Goal: bad arguments and a failing stream return their codes. Method: NULLs, a read-only FILE. */
static void
test_metrics_write_rejects_bad_input(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("metrics-bad");
    htkv_config cfg;
    tu_config(&cfg, dir, HTKV_SYNC_INTERVAL);
    htkv_db *db = tu_open(&cfg);
    assert_int_equal(htkv_metrics_write(NULL, stdout, HTKV_METRICS_TEXT), -EINVAL);
    assert_int_equal(htkv_metrics_write(db, NULL, HTKV_METRICS_TEXT), -EINVAL);
    assert_int_equal(htkv_metrics_write(db, stdout, 7), -EINVAL);
    FILE *ro = fopen("/dev/null", "r");
    assert_non_null(ro);
    assert_int_equal(htkv_metrics_write(db, ro, HTKV_METRICS_PROMETHEUS), -EIO);
    fclose(ro);
    assert_int_equal(htkv_close(db), 0);
    tu_rmrf(dir);
    free(dir);
}

int
main(void)
{
    tu_assert_hook_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_write_counts_interval),
        cmocka_unit_test(test_metrics_write_counts_always),
        cmocka_unit_test(test_metrics_write_rejects_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
