/*
 * prefix_queries.c - prefix and range queries with htkv: results come sorted by key.
 *
 * Usage: prefix_queries [DATA_DIR]   (default ./prefix-data)
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
put(htkv_db *db, const char *k, const char *v)
{
    check(htkv_put(db, k, strlen(k), v, strlen(v)), "put");
}

static void
print_all(htkv_iter *it, const char *title)
{
    printf("%s\n", title);
    const void *k, *v;
    size_t kl, vl;
    int rc;
    size_t n = 0;
    while ((rc = htkv_iter_next(it, &k, &kl, &v, &vl)) == 1) {
        printf("  %.*s => %.*s\n", (int)kl, (const char *)k, (int)vl, (const char *)v);
        n++;
    }
    check(rc, "iterate");
    printf("  (%zu)\n", n);
    htkv_iter_destroy(it);
}

int
main(int argc, char **argv)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = argc > 1 ? argv[1] : "./prefix-data";
    htkv_db *db;
    check(htkv_open(&cfg, &db), "open");

    put(db, "user:456", "bob");
    put(db, "session:789", "active");
    put(db, "user:123", "alice");
    put(db, "user:789", "carol");
    put(db, "usage:total", "42");

    htkv_iter *it;
    check(htkv_get_prefix(db, "user:", 5, &it), "get_prefix");
    print_all(it, "keys with prefix \"user:\"");

    check(htkv_scan(db, "session", 7, "user:5", 6, &it), "scan");
    print_all(it, "keys in [\"session\", \"user:5\")");

    /* Paging: two at a time, restarting after the last key returned. */
    char start[64] = "";
    size_t slen = 0;
    for (int page = 1;; page++) {
        check(htkv_scan(db, start, slen, NULL, 0, &it), "scan page");
        check(htkv_iter_set_limit(it, 2), "limit");
        const void *k;
        size_t kl;
        int rc, n = 0;
        while ((rc = htkv_iter_next(it, &k, &kl, NULL, NULL)) == 1) {
            printf("page %d: %.*s\n", page, (int)kl, (const char *)k);
            memcpy(start, k, kl);
            start[kl] = '\0'; /* the smallest key after k is k followed by a 0x00 byte */
            slen = kl + 1;
            n++;
        }
        check(rc, "iterate page");
        htkv_iter_destroy(it);
        if (n < 2) {
            break;
        }
    }
    check(htkv_close(db), "close");
    return 0;
}
