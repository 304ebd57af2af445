/*
 * basic_kv.c - create, read, update and delete with htkv.
 *
 * Usage: basic_kv [DATA_DIR]   (default ./kv-data)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <htkv/htkv.h>

static void
check(int rc, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "%s: %s %s\n", what, htkv_strerror(rc), htkv_last_error());
        exit(1);
    }
}

static void
show(htkv_db *db, const char *key)
{
    char buf[256];
    size_t n;
    int rc = htkv_get(db, key, strlen(key), buf, sizeof(buf), &n);
    if (rc == HTKV_ENOTFOUND) {
        printf("%s => (absent)\n", key);
        return;
    }
    check(rc, "get");
    printf("%s => %.*s\n", key, (int)n, buf);
}

int
main(int argc, char **argv)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = argc > 1 ? argv[1] : "./kv-data";

    htkv_db *db;
    check(htkv_open(&cfg, &db), "open");

    /* Create */
    check(htkv_put(db, "alpha", 5, "bravo", 5), "put alpha");
    check(htkv_put(db, "charlie", 7, "delta", 5), "put charlie");

    /* Read */
    show(db, "alpha");

    /* Update */
    check(htkv_put(db, "alpha", 5, "echo", 4), "update alpha");
    show(db, "alpha");

    /* Delete */
    check(htkv_delete(db, "charlie", 7), "delete charlie");
    show(db, "charlie");

    /* An atomic batch: both keys or neither, also across a crash. */
    htkv_batch *b;
    check(htkv_batch_create(&b), "batch");
    check(htkv_batch_put(b, "user:123", 8, "alice", 5), "batch put");
    check(htkv_batch_put(b, "user:456", 8, "bob", 3), "batch put");
    check(htkv_write(db, b), "write batch");
    printf("batch of %zu written at version %llu\n", htkv_batch_count(b),
           (unsigned long long)htkv_batch_version(b));
    htkv_batch_destroy(b);
    show(db, "user:456");

    check(htkv_flush(db), "flush");
    struct htkv_stats st;
    check(htkv_stats(db, &st), "stats");
    printf("%llu live keys in %u shards, %llu segment(s)\n", (unsigned long long)st.live_keys,
           st.shard_count, (unsigned long long)st.segments);
    check(htkv_close(db), "close");
    return 0;
}
