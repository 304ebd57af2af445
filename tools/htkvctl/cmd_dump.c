/*
 * cmd_dump.c - `htkvctl dump [--prefix P] [--limit N] DIR`: keys and values in byte order, one
 * "KEY<TAB>VALUE" line each (both escaped, so neither holds a raw tab or newline).
 * Shares its loop with `keys` (list.c).
 */
#include <stdlib.h>

#include "tools/htkvctl/list.h"

static int
dump_run(struct ctl *c, int argc, char **argv)
{
    struct list_args la;
    int rc = ctl_list_args(c, &ctl_cmd_dump, argc, argv, &la);
    if (rc != 0) {
        return rc < 0 ? CTL_EXIT_OK : rc;
    }
    rc = ctl_list_run(c, &la, true);
    free(la.prefix);
    return rc;
}

const struct ctl_cmd ctl_cmd_dump = {
    .name = "dump",
    .args = "[--prefix P] [--limit N] DIR",
    .summary = "print keys and values in byte order (KEY<TAB>VALUE)",
    .help = "  --prefix P  only keys that start with P (C escapes as for get's KEY)\n"
            "  --limit N   at most N items\n"
            "Keys and values print as text with C escapes, or hex with --hex.\n",
    .run = dump_run,
};
