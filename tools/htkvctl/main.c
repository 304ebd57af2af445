/*
 * main.c - htkvctl, the offline inspection and maintenance tool of htkv:
 *
 *     htkvctl [--json] [--read-only] [--hex] COMMAND [options] DIR
 *
 * Design. main() separates the global options (accepted before or after COMMAND, up to "--")
 * from the command's own words, finds the command in ctl_commands[] and runs it. Each command
 * lives in cmd_<verb>.c; adding one is one new file, its declaration in ctl.h and one line in
 * the table below. The manual is htkvctl.1.
 *
 * Invariants
 *   1. Exit statuses are those of enum ctl_exit: 0 ok, 1 problems found, a failed read or a
 *      failed compaction or snapshot, 2 usage error (also: import into a store with keys
 *      without --force), 3 the store cannot be opened (missing, locked, damaged, newer),
 *      4 the master key does not open the store's auth records.
 *   2. --read-only is refused for a command that writes (exit 2), whatever its other arguments
 *      (here for compact and repair; snapshot refuses it for import only, in cmd_snapshot.c).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/htkvctl/ctl.h"

#ifndef HTKVCTL_VERSION
#define HTKVCTL_VERSION "0"
#endif

/* One line per command, in the order of `htkvctl --help`. */
const struct ctl_cmd *const ctl_commands[] = {
    &ctl_cmd_info,
    &ctl_cmd_segments,
    &ctl_cmd_verify,
    &ctl_cmd_get,
    &ctl_cmd_keys,
    &ctl_cmd_dump,
    &ctl_cmd_stats,
    &ctl_cmd_users,
    &ctl_cmd_keys_of,
    &ctl_cmd_compact,
    &ctl_cmd_snapshot,
    &ctl_cmd_repair,
    NULL,
};

static void
usage(const struct ctl *c, FILE *f)
{
    fprintf(f,
            "usage: %s [--json] [--read-only] [--hex] COMMAND [options] DIR\n"
            "Inspect, check and maintain the htkv store in DIR. Only compact, snapshot\n"
            "import and repair change it.\n\n"
            "Commands:\n",
            c->prog);
    for (size_t i = 0; ctl_commands[i] != NULL; i++) {
        const struct ctl_cmd *cmd = ctl_commands[i];
        fprintf(f, "  %-9s %s\n", cmd->name, cmd->summary);
    }
    fprintf(f,
            "\nGlobal options (before or after COMMAND):\n"
            "  --json       print one JSON document on stdout\n"
            "  --read-only  inspect a store that another process has open, without its lock\n"
            "               (a snapshot as of the open; commands that write refuse it)\n"
            "  --hex        print keys and values as hex instead of escaped text\n"
            "  --help       this text; 'COMMAND --help' for a command's options\n"
            "  --version    print the version\n\n"
            "Exit status: 0 ok; 1 problems found, key or user not found, a read failed, or\n"
            "compaction, a snapshot export/import (a damaged snapshot file) or a repair\n"
            "failed; 2 usage error, bad master key file, or import into a store with keys\n"
            "without --force;\n"
            "3 the store cannot be opened (missing, open in another process, damaged, too new);\n"
            "4 the master key does not open the store's auth records.\n"
            "See htkvctl(1).\n");
}

static const struct ctl_cmd *
find_cmd(const char *name)
{
    for (size_t i = 0; ctl_commands[i] != NULL; i++) {
        if (strcmp(ctl_commands[i]->name, name) == 0) {
            return ctl_commands[i];
        }
    }
    return NULL;
}

/* Consume a global option; returns false when @p a is not one. */
static bool
global_opt(struct ctl *c, const char *a)
{
    if (strcmp(a, "--json") == 0) {
        c->json = true;
    } else if (strcmp(a, "--read-only") == 0) {
        c->read_only = true;
    } else if (strcmp(a, "--hex") == 0) {
        c->hex = true;
    } else {
        return false;
    }
    return true;
}

/* `htkvctl help [COMMAND]`. */
static int
run_help(struct ctl *c, int argc, char **argv)
{
    if (argc == 0) {
        usage(c, stdout);
        return CTL_EXIT_OK;
    }
    const struct ctl_cmd *cmd = find_cmd(argv[0]);
    if (cmd == NULL || argc > 1) {
        fprintf(stderr, "%s: help: unknown command '%s'\n", c->prog, argv[0]);
        usage(c, stderr);
        return CTL_EXIT_USAGE;
    }
    ctl_cmd_usage(c, cmd, stdout);
    return CTL_EXIT_OK;
}

int
main(int argc, char **argv)
{
    struct ctl c = { .prog = "htkvctl" };
    c.quiet_progress = !isatty(STDERR_FILENO);
    /* The command's words, global options removed; argv has room for all of them. */
    char **words = calloc((size_t)argc + 1, sizeof(*words));
    if (words == NULL) {
        fputs("htkvctl: out of memory\n", stderr);
        return CTL_EXIT_FAIL;
    }
    const char *verb = NULL;
    int nwords = 0;
    bool options = true;
    int rc = -1;
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        if (options && global_opt(&c, a)) {
            continue;
        }
        if (verb != NULL) {
            options = options && strcmp(a, "--") != 0;
            words[nwords++] = argv[i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(&c, stdout);
            rc = CTL_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("htkvctl %s (on-disk format %d)\n", HTKVCTL_VERSION, HTKV_FORMAT_VERSION);
            rc = CTL_EXIT_OK;
        } else if (a[0] == '-') {
            fprintf(stderr, "%s: unknown option '%s'\n", c.prog, a);
            usage(&c, stderr);
            rc = CTL_EXIT_USAGE;
        } else {
            verb = a;
        }
    }
    if (rc < 0 && verb == NULL) {
        fprintf(stderr, "%s: missing COMMAND\n", c.prog);
        usage(&c, stderr);
        rc = CTL_EXIT_USAGE;
    }
    if (rc < 0 && strcmp(verb, "help") == 0) {
        rc = run_help(&c, nwords, words);
    }
    if (rc < 0) {
        const struct ctl_cmd *cmd = find_cmd(verb);
        if (cmd == NULL) {
            fprintf(stderr, "%s: unknown command '%s'\n", c.prog, verb);
            usage(&c, stderr);
            rc = CTL_EXIT_USAGE;
        } else if (cmd->writes && c.read_only) {
            rc = ctl_usage_error(&c, cmd, "--read-only is not allowed: '%s' changes the store",
                                 cmd->name);
        } else {
            rc = cmd->run(&c, nwords, words);
        }
    }
    free(words);
    if (fflush(stdout) != 0 && rc == CTL_EXIT_OK) {
        rc = CTL_EXIT_FAIL; /* e.g. stdout on a full disk */
    }
    return rc;
}
