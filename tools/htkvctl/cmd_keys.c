/*
 * cmd_keys.c - `htkvctl keys [--prefix P] [--limit N] DIR`: keys in byte order, one per line
 * (escaped text, or hex with --hex), through htkv_get_prefix().
 */
#include <stdlib.h>

#include "tools/htkvctl/list.h"

static int
keys_run(struct ctl *c, int argc, char **argv)
{
    struct list_args la;
    int rc = ctl_list_args(c, &ctl_cmd_keys, argc, argv, &la);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    rc = ctl_list_run(c, &la, false);
    free(la.prefix);
    return rc;
}

const struct ctl_cmd ctl_cmd_keys = {
    .name = "keys",
    .args = "[--prefix P] [--limit N] DIR",
    .summary = "list keys in byte order",
    .help = "  --prefix P  only keys that start with P (C escapes as for get's KEY)\n"
            "  --limit N   at most N keys\n"
            "Keys print as text with C escapes for unprintable bytes, or hex with --hex.\n",
    .run = keys_run,
};
