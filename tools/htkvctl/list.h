/*
 * list.h - the loop shared by `keys` and `dump`: parse --prefix/--limit, iterate with
 * htkv_get_prefix(), print each item as text or JSON.
 */
#ifndef HTKV_TOOLS_HTKVCTL_LIST_H
#define HTKV_TOOLS_HTKVCTL_LIST_H

#include "tools/htkvctl/ctl.h"

/* The parsed --prefix and --limit. */
struct list_args {
    unsigned char *prefix; /* malloc'd, NULL when absent; free() it */
    size_t plen;
    uint64_t limit; /* 0 = all */
};

/* Parse --prefix/--limit (and DIR) for @p cmd. Returns 0, -1 (help printed), CTL_EXIT_USAGE. */
int ctl_list_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv,
                  struct list_args *la);

/* Iterate and print: keys only (@p values false) or keys and values. Returns an exit status. */
int ctl_list_run(struct ctl *c, const struct list_args *la, bool values);

#endif /* HTKV_TOOLS_HTKVCTL_LIST_H */
