/*
 * list.c - the loop shared by `keys` and `dump` (see list.h).
 *
 * Items stream from the iterator to stdout: memory stays bounded whatever the number of keys.
 * An iteration error (a record failing its checksum) ends the listing with exit status 1; in
 * JSON the document is still complete and carries an "error" member.
 */
#include "tools/htkvctl/list.h"

#include <stdlib.h>

int
ctl_list_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv, struct list_args *la)
{
    const char *prefix = NULL, *limit = NULL;
    const struct ctl_opt opts[] = { { "prefix", &prefix, NULL }, { "limit", &limit, NULL } };
    char *pos[1];
    *la = (struct list_args){ 0 };
    int rc = ctl_parse_args(c, cmd, argc, argv, opts, 2, pos, 1);
    if (rc != 0) {
        return rc;
    }
    if (limit != NULL && (!ctl_parse_u64(limit, &la->limit) || la->limit == 0)) {
        return ctl_usage_error(c, cmd, "--limit needs a positive count, not '%s'", limit);
    }
    const char *err;
    if (prefix != NULL && ctl_unescape(prefix, &la->prefix, &la->plen, &err) != 0) {
        return ctl_usage_error(c, cmd, "--prefix: %s", err);
    }
    if (la->plen > HTKV_KEY_MAX) {
        free(la->prefix);
        la->prefix = NULL;
        return ctl_usage_error(c, cmd, "--prefix is longer than a key may be");
    }
    return 0;
}

static void
list_item(const struct ctl *c, struct json *j, const void *key, size_t klen, const void *val,
          size_t vlen, bool values)
{
    char *k = ctl_format_bytes(key, klen, c->hex);
    if (!c->json) {
        fputs(k, stdout);
        if (values) {
            fputc('\t', stdout);
            ctl_print_bytes(stdout, val, vlen, c->hex);
        }
        fputc('\n', stdout);
    } else if (!values) {
        json_string(j, k);
    } else {
        char *v = ctl_format_bytes(val, vlen, c->hex);
        json_object_begin(j);
        json_kv_string(j, "key", k);
        json_kv_string(j, "value", v);
        json_object_end(j);
        free(v);
    }
    free(k);
}

int
ctl_list_run(struct ctl *c, const struct list_args *la, bool values)
{
    htkv_db *db;
    int rc = ctl_open(c, &db);
    if (rc != 0) {
        return rc;
    }
    htkv_iter *it = NULL;
    rc = ctl_iter_prefix(c, db, la->prefix, la->plen, la->limit, &it);
    if (rc != 0) {
        ctl_close(db);
        return CTL_EXIT_FAIL;
    }
    struct json j;
    if (c->json) {
        json_init(&j, stdout);
        json_object_begin(&j);
        json_kv_string(&j, "store", c->dir);
        char *p = ctl_format_bytes(la->prefix, la->plen, c->hex);
        json_kv_string(&j, "prefix", p);
        free(p);
        json_kv_string(&j, "encoding", c->hex ? "hex" : "escaped");
        json_key(&j, values ? "items" : "keys");
        json_array_begin(&j);
    }
    uint64_t count = 0;
    const void *key, *val;
    size_t klen, vlen;
    while ((rc = htkv_iter_next(it, &key, &klen, &val, &vlen)) == 1) {
        list_item(c, &j, key, klen, val, vlen, values);
        count++;
    }
    if (c->json) {
        json_array_end(&j);
        json_kv_u64(&j, "count", count);
        if (rc != 0) {
            json_kv_string(&j, "error", htkv_strerror(rc));
        }
        json_object_end(&j);
        json_finish(&j);
    }
    if (rc != 0) {
        ctl_engine_error(c, "iteration stopped", rc);
    }
    htkv_iter_destroy(it);
    ctl_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
}
