/*
 * ctl.h - what every htkvctl command shares: options, the command table entry, exit codes,
 * opening the store, printing keys and values, and argument parsing.
 *
 * A command is one file, cmd_<verb>.c, that defines `const struct ctl_cmd ctl_cmd_<verb>`,
 * declared below and listed in main.c's table. It parses its own options with ctl_parse_args(),
 * opens the store with ctl_open() (which applies the lock policy), or ctl_open_write() for a
 * command that changes the store, and prints text, or one JSON document when c->json is set.
 */
#ifndef HTKV_TOOLS_HTKVCTL_CTL_H
#define HTKV_TOOLS_HTKVCTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <htkv/htkv.h>

#include "tools/htkvctl/json.h"

/** Exit statuses (documented in htkvctl.1). */
enum ctl_exit {
    CTL_EXIT_OK = 0,      /* done; verify: no problem found */
    CTL_EXIT_FAIL = 1,    /* verify found problems; get, keys-of: not found; a read failed;
                             compact, snapshot, repair: the operation failed (a damaged snapshot
                             file; repair: the seed cannot be told, an I/O error) */
    CTL_EXIT_USAGE = 2,   /* bad command line or master key file; keys-of: ambiguous USER;
                             snapshot import: the store is not empty and --force is missing */
    CTL_EXIT_NOSTORE = 3, /* the store cannot be opened: missing, locked, damaged, too new */
    CTL_EXIT_KEY = 4,     /* users, keys-of: the master key does not open the auth records */
};

/** Global options and the state every command receives. */
struct ctl {
    const char *prog; /* argv[0] for messages */
    bool json;        /* --json: print one JSON document on stdout */
    bool read_only;   /* --read-only: inspect a store another process has open, without its lock */
    bool hex;         /* --hex: print keys and values as hex */
    bool quiet_progress; /* no progress bar (set when stderr is not a terminal) */
    bool quiet_engine;   /* engine warnings not printed (verify reports them as notes) */
    bool writing;        /* the command opens the store for writing (ctl_open_write()) */
    const char *dir;     /* the store directory (the command's last argument) */
};

/** One command. */
struct ctl_cmd {
    const char *name;    /* the verb */
    const char *args;    /* synopsis after the verb, e.g. "[--prefix P] [--limit N] DIR" */
    const char *summary; /* one line for the command list */
    const char *help;    /* options and details for `htkvctl VERB --help` (may be "") */
    bool writes; /* modifies the store: --read-only is refused, the lock is exclusive (a command
                    with subcommands that write, like snapshot, refuses it itself) */
    int (*run)(struct ctl *c, int argc, char **argv); /* argv: the words after the verb */
};

/** The command table (main.c), NULL-terminated. */
extern const struct ctl_cmd *const ctl_commands[];

/* The commands, one per cmd_<verb>.c. A new command adds a line here and one in main.c. */
extern const struct ctl_cmd ctl_cmd_info;
extern const struct ctl_cmd ctl_cmd_segments;
extern const struct ctl_cmd ctl_cmd_verify;
extern const struct ctl_cmd ctl_cmd_get;
extern const struct ctl_cmd ctl_cmd_keys;
extern const struct ctl_cmd ctl_cmd_dump;
extern const struct ctl_cmd ctl_cmd_stats;
extern const struct ctl_cmd ctl_cmd_users;
extern const struct ctl_cmd ctl_cmd_keys_of;
extern const struct ctl_cmd ctl_cmd_compact;
extern const struct ctl_cmd ctl_cmd_snapshot;
extern const struct ctl_cmd ctl_cmd_repair;

/** Print `usage: htkvctl [GLOBAL] VERB ARGS` and the command's help to @p f. */
void ctl_cmd_usage(const struct ctl *c, const struct ctl_cmd *cmd, FILE *f);

/** Report a usage error: message and the command's synopsis on stderr. Returns CTL_EXIT_USAGE. */
int ctl_usage_error(const struct ctl *c, const struct ctl_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Print "htkvctl: message" on stderr. */
void ctl_error(const struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** A command option: --name VALUE (value != NULL) or a flag --name (flag != NULL). */
struct ctl_opt {
    const char *name; /* without the leading dashes */
    const char **value;
    bool *flag;
};

/**
 * Parse a command's words: options from @p opts (also as --name=VALUE), --help, then exactly
 * @p npos positional words (the last one is DIR, stored in c->dir). "--" ends the options.
 * @return 0; CTL_EXIT_USAGE (reported); -1 when --help was printed (the caller exits 0).
 */
int ctl_parse_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv,
                   const struct ctl_opt *opts, size_t nopts, char **pos, size_t npos);

/** Parse a non-negative decimal count. Returns false when @p s is not one. */
bool ctl_parse_u64(const char *s, uint64_t *out);

/**
 * Open c->dir read-only with the lock policy of ctl_open() but print nothing.
 * @return 0 (*out set) or the code of htkv_open() / htkv_inspect_open_unlocked().
 */
int ctl_open_db(struct ctl *c, htkv_db **out);

/**
 * Open c->dir read-only for a command that only reads: shared lock (refused with a message when
 * a writer has the store open), or with --read-only no lock at all. Prints the reason on failure.
 * @return 0 (*out set); CTL_EXIT_NOSTORE.
 */
int ctl_open(struct ctl *c, htkv_db **out);

/**
 * Open c->dir for writing, as an application does (exclusive lock, recovery with its repairs:
 * a torn tail is truncated, files left over by a crash are removed), without creating a store,
 * without workers or background compaction. Sets c->writing. Prints the reason on failure.
 * @return 0 (*out set); CTL_EXIT_NOSTORE (also when any other process has the store open).
 */
int ctl_open_write(struct ctl *c, htkv_db **out);

/** With --json, print the document of a command that failed: {"store", "error", "exit_status"}. */
void ctl_json_error(const struct ctl *c, const char *msg, int status);

/**
 * Report that c->dir cannot be opened (code @p rc of ctl_open_db() or of the lock): a message on
 * stderr and, with --json, a JSON document {"store", "error", "exit_status"} on stdout.
 * @return CTL_EXIT_NOSTORE.
 */
int ctl_open_failed(const struct ctl *c, int rc);

/** Close a handle from ctl_open() or ctl_open_write(). */
void ctl_close(htkv_db *db);

/** Print the failure of an engine call (with htkv_last_error() when set). */
void ctl_engine_error(const struct ctl *c, const char *what, int rc);

/**
 * Decode a key given on the command line: C escapes \\ \n \r \t \0 \" \' \xNN (exactly two hex
 * digits), everything else literal. @p out receives a malloc'd buffer (free()).
 * @return 0; -1 with *err naming the problem.
 */
int ctl_unescape(const char *s, unsigned char **out, size_t *len, const char **err);

/**
 * Text form of bytes: printable ASCII as is, backslash as \\, \n \r \t, others \xNN; with @p hex,
 * lowercase hex digits. Returns a malloc'd NUL-terminated string (never NULL: aborts on OOM).
 */
char *ctl_format_bytes(const void *p, size_t n, bool hex);

/** Write ctl_format_bytes() of @p p to @p f. */
void ctl_print_bytes(FILE *f, const void *p, size_t n, bool hex);

/** "12.3 MiB" style size into @p buf. */
const char *ctl_human_bytes(char *buf, size_t cap, uint64_t n);

/**
 * A progress bar on stderr: "LABEL [#####....] 42% 1.2 MiB / 3.4 MiB", redrawn in place.
 * Nothing is drawn when c->quiet_progress is set (stderr is not a terminal). One thread at a
 * time may use a bar.
 */
struct ctl_bar {
    const struct ctl *c;
    const char *label; /* "verify", "compact" */
    bool shown;        /* a line is on the terminal: clear it before printing anything else */
    int last_pct;      /* last percentage drawn, -1 before the first */
};

/** Start a bar labelled @p label (borrowed; kept with the bar). Draws nothing yet. */
void ctl_bar_init(struct ctl_bar *b, const struct ctl *c, const char *label);

/** Draw @p done of @p total (clamped to 100%); redrawn only when the percentage changes. */
void ctl_bar_draw(struct ctl_bar *b, uint64_t done, uint64_t total);

/** Erase the bar's line if one is shown. */
void ctl_bar_clear(struct ctl_bar *b);

/** Name of an enum htkv_sync_mode. */
const char *ctl_sync_mode_name(int mode);

/**
 * Open a sorted iterator over the keys that start with @p prefix (htkv_get_prefix()), limited to
 * @p limit items (0 = all). Returns 0, or an error that was printed (-ENOSYS when this build of
 * the library has no iterators).
 */
int ctl_iter_prefix(struct ctl *c, htkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                    htkv_iter **out);

#endif /* HTKV_TOOLS_HTKVCTL_CTL_H */
