/*
 * cmd_get.c - `htkvctl get [--raw] KEY DIR`: the value stored under KEY and its version.
 *
 * KEY accepts C escapes (\xNN, \n, \\, ...), so any key can be typed. The value prints as
 * escaped text (or hex with --hex); --raw writes its bytes unchanged, without a newline.
 * A missing key is exit status 1.
 */
#include <errno.h>
#include <stdlib.h>

#include "tools/htkvctl/ctl.h"

/* Read @p key's value into a malloc'd buffer: 0, HTKV_ENOTFOUND, or another engine error. */
static int
get_value(htkv_db *db, const unsigned char *key, size_t klen, unsigned char **val, size_t *vlen,
          uint64_t *version)
{
    *val = NULL;
    size_t need = 0;
    int rc = htkv_get_version(db, key, klen, NULL, 0, &need, version);
    while (rc == HTKV_ETOOSMALL) {
        /* The version comes only with the value: read again with room for it. */
        free(*val);
        *val = malloc(need);
        if (*val == NULL) {
            return -ENOMEM;
        }
        size_t cap = need;
        rc = htkv_get_version(db, key, klen, *val, cap, &need, version);
    }
    *vlen = rc == 0 ? need : 0;
    return rc;
}

static void
get_json(const struct ctl *c, const unsigned char *key, size_t klen, int rc,
         const unsigned char *val, size_t vlen, uint64_t version)
{
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    char *k = ctl_format_bytes(key, klen, c->hex);
    json_kv_string(&j, "key", k);
    free(k);
    json_kv_string(&j, "encoding", c->hex ? "hex" : "escaped");
    json_kv_bool(&j, "found", rc == 0);
    if (rc == 0) {
        json_kv_u64(&j, "version", version);
        json_kv_u64(&j, "value_bytes", vlen);
        char *v = ctl_format_bytes(val, vlen, c->hex);
        json_kv_string(&j, "value", v);
        free(v);
    } else if (rc != HTKV_ENOTFOUND) {
        json_kv_string(&j, "error", htkv_strerror(rc));
    }
    json_object_end(&j);
    json_finish(&j);
}

static int
get_run(struct ctl *c, int argc, char **argv)
{
    bool raw = false;
    const struct ctl_opt opts[] = { { "raw", NULL, &raw } };
    char *pos[2];
    int rc = ctl_parse_args(c, &ctl_cmd_get, argc, argv, opts, 1, pos, 2);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    unsigned char *key;
    size_t klen;
    const char *err;
    if (ctl_unescape(pos[0], &key, &klen, &err) != 0) {
        return ctl_usage_error(c, &ctl_cmd_get, "KEY: %s", err);
    }
    if (klen == 0 || klen > HTKV_KEY_MAX) {
        free(key);
        return ctl_usage_error(c, &ctl_cmd_get, "KEY must be 1..%u bytes", HTKV_KEY_MAX);
    }
    htkv_db *db;
    rc = ctl_open(c, &db);
    if (rc != 0) {
        free(key);
        return rc;
    }
    unsigned char *val = NULL;
    size_t vlen = 0;
    uint64_t version = 0;
    rc = get_value(db, key, klen, &val, &vlen, &version);
    if (c->json) {
        get_json(c, key, klen, rc, val, vlen, version);
    } else if (rc == 0 && raw) {
        fwrite(val, 1, vlen, stdout);
    } else if (rc == 0) {
        ctl_print_bytes(stdout, val, vlen, c->hex);
        fputc('\n', stdout);
    }
    if (rc == HTKV_ENOTFOUND) {
        char *k = ctl_format_bytes(key, klen, c->hex);
        ctl_error(c, "%s: key \"%s\" not found", c->dir, k);
        free(k);
    } else if (rc != 0) {
        ctl_engine_error(c, "cannot read the key", rc);
    }
    free(val);
    free(key);
    ctl_close(db);
    return rc == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
}

const struct ctl_cmd ctl_cmd_get = {
    .name = "get",
    .args = "[--raw] KEY DIR",
    .summary = "print the value stored under KEY (exit status 1 when absent)",
    .help = "KEY accepts C escapes: \\\\ \\n \\r \\t \\0 \\\" \\' and \\xNN (two hex digits).\n"
            "The value prints as text with the same escapes (or hex with --hex).\n"
            "  --raw   write the value's bytes unchanged, without a newline\n",
    .run = get_run,
};
