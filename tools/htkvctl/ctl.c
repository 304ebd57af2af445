/*
 * ctl.c - what every htkvctl command shares (see ctl.h): argument parsing, the lock policy of
 * ctl_open() and ctl_open_write(), the text form of keys and values, messages, the progress bar.
 *
 * Lock policy. Every command that only reads opens the store read-only. Without --read-only it
 * takes the store's lock shared, as any read-only opener does: while a process has the store
 * open for writing, the command is refused with exit status 3 and a message that names
 * --read-only. With --read-only it takes no lock at all (htkv_inspect_open_unlocked()) and reads
 * a snapshot of the store as of its open; an append in progress looks like a torn tail and is
 * taken as the end of the log. Commands that write (compact, snapshot import, repair) refuse
 * --read-only (exit 2) and open the store with ctl_open_write(): the exclusive lock, as any
 * writer takes it, so they are refused (exit 3) while any other process has the store open.
 *
 * Invariants
 *   1. No code path of the tool opens a store file for writing except through
 *      ctl_open_write(), which only compact and snapshot import call, and repair
 *      (cmd_repair.c), which takes the lock exclusively itself, because the engine refuses
 *      the stores it is for; it renames what it cannot use into DIR/lost/ and deletes nothing.
 *   2. Keys and values reach the terminal only through ctl_format_bytes(): no control byte of
 *      the store's data is ever written raw, except by `get --raw`, which asks for it.
 */
#include "tools/htkvctl/ctl.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/verify.h"

/* ---- messages ------------------------------------------------------------------------------- */

void
ctl_error(const struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", c->prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void
ctl_cmd_usage(const struct ctl *c, const struct ctl_cmd *cmd, FILE *f)
{
    fprintf(f, "usage: %s [--json] [--read-only] [--hex] %s %s\n", c->prog, cmd->name, cmd->args);
    fprintf(f, "%s\n", cmd->summary);
    if (cmd->help != NULL && cmd->help[0] != '\0') {
        fprintf(f, "\n%s", cmd->help);
    }
}

int
ctl_usage_error(const struct ctl *c, const struct ctl_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: %s: ", c->prog, cmd->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "usage: %s [--json] [--read-only] [--hex] %s %s\n", c->prog, cmd->name,
            cmd->args);
    fprintf(stderr, "Try '%s %s --help'.\n", c->prog, cmd->name);
    return CTL_EXIT_USAGE;
}

void
ctl_engine_error(const struct ctl *c, const char *what, int rc)
{
    const char *detail = htkv_last_error();
    if (detail != NULL && detail[0] != '\0') {
        ctl_error(c, "%s: %s: %s (%s)", c->dir, what, htkv_strerror(rc), detail);
    } else {
        ctl_error(c, "%s: %s: %s", c->dir, what, htkv_strerror(rc));
    }
}

/* ---- arguments ------------------------------------------------------------------------------ */

bool
ctl_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* Match "--name" or "--name=value" against @p opts. Returns the option or NULL. */
static const struct ctl_opt *
find_opt(const char *arg, const struct ctl_opt *opts, size_t nopts, const char **inline_value)
{
    *inline_value = NULL;
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    for (size_t i = 0; i < nopts; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            *inline_value = eq ? eq + 1 : NULL;
            return &opts[i];
        }
    }
    return NULL;
}

int
ctl_parse_args(struct ctl *c, const struct ctl_cmd *cmd, int argc, char **argv,
               const struct ctl_opt *opts, size_t nopts, char **pos, size_t npos)
{
    size_t n = 0;
    bool options = true;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (options && strcmp(a, "--") == 0) {
            options = false;
        } else if (options && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            ctl_cmd_usage(c, cmd, stdout);
            return -1;
        } else if (options && strncmp(a, "--", 2) == 0) {
            const char *v;
            const struct ctl_opt *o = find_opt(a, opts, nopts, &v);
            if (o == NULL) {
                return ctl_usage_error(c, cmd, "unknown option '%s'", a);
            }
            if (o->flag != NULL) {
                if (v != NULL) {
                    return ctl_usage_error(c, cmd, "option '--%s' takes no value", o->name);
                }
                *o->flag = true;
            } else if (v != NULL) {
                *o->value = v;
            } else if (i + 1 < argc) {
                *o->value = argv[++i];
            } else {
                return ctl_usage_error(c, cmd, "option '--%s' needs a value", o->name);
            }
        } else if (options && a[0] == '-' && a[1] != '\0') {
            return ctl_usage_error(c, cmd, "unknown option '%s'", a);
        } else if (n < npos) {
            pos[n++] = argv[i];
        } else {
            return ctl_usage_error(c, cmd, "unexpected argument '%s'", a);
        }
    }
    if (n < npos) {
        return ctl_usage_error(c, cmd, n + 1 == npos ? "missing DIR" : "missing arguments");
    }
    c->dir = pos[npos - 1];
    if (c->dir[0] == '\0') {
        return ctl_usage_error(c, cmd, "empty DIR");
    }
    return 0;
}

/* ---- opening the store ---------------------------------------------------------------------- */

static void
ctl_log(int level, const char *msg, void *ctx)
{
    const struct ctl *c = ctx;
    /* With --read-only a torn tail is an append in progress: only errors are worth a line. */
    if (level == HTKV_LOG_ERROR || (level == HTKV_LOG_WARN && !c->read_only && !c->quiet_engine)) {
        fprintf(stderr, "%s: engine: %s\n", c->prog, msg);
    }
}

/* The writer closed (and trimmed) a segment while we read it through a mapping. */
static void
ctl_sigbus(int sig)
{
    (void)sig;
    static const char msg[] = "htkvctl: a store file shrank while it was being read (the other "
                              "process closed the store?); run the command again\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(CTL_EXIT_NOSTORE);
}

int
ctl_open_db(struct ctl *c, htkv_db **out)
{
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = c->dir;
    cfg.read_only = 1;
    cfg.create_if_missing = 0;
    cfg.worker_threads = 0;
    cfg.io_backend = HTKV_IO_SYNC;
    cfg.hint_files = 0; /* an inspection tool reads and checks every record, trusts no hint */
    /* Accept every value a store may hold, whatever max_value_bytes its writer used. */
    cfg.max_value_bytes = HTKV_VALUE_MAX_LIMIT;
    cfg.log_fn = ctl_log;
    cfg.log_ctx = c;
    int rc;
    if (c->read_only) {
        signal(SIGBUS, ctl_sigbus);
        rc = htkv_inspect_open_unlocked(&cfg, out);
    } else {
        rc = htkv_open(&cfg, out);
    }
    return rc;
}

void
ctl_json_error(const struct ctl *c, const char *msg, int status)
{
    if (!c->json) {
        return;
    }
    struct json j;
    json_init(&j, stdout);
    json_object_begin(&j);
    json_kv_string(&j, "store", c->dir);
    json_kv_string(&j, "error", msg);
    json_kv_u64(&j, "exit_status", (uint64_t)status);
    json_object_end(&j);
    json_finish(&j);
}

int
ctl_open_failed(const struct ctl *c, int rc)
{
    char msg[2048];
    const char *detail = htkv_last_error();
    switch (rc) {
    case HTKV_ELOCKED:
        if (c->writing) {
            snprintf(msg, sizeof(msg),
                     "the store is open in another process (it holds the lock); this command "
                     "changes the store, so stop that process first");
        } else {
            snprintf(msg, sizeof(msg),
                     "the store is open in another process (it holds the lock); stop that "
                     "process, or pass --read-only to inspect the live store without the lock");
        }
        break;
    case HTKV_ENOTFOUND:
        snprintf(msg, sizeof(msg), "no htkv store here");
        break;
    default:
        snprintf(msg, sizeof(msg), "cannot open the store: %s%s%s%s", htkv_strerror(rc),
                 detail[0] ? " (" : "", detail, detail[0] ? ")" : "");
        if (rc == HTKV_ECORRUPT) {
            snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
                     "; 'htkvctl verify' lists every problem");
        }
        break;
    }
    ctl_error(c, "%s: %s", c->dir, msg);
    ctl_json_error(c, msg, CTL_EXIT_NOSTORE);
    return CTL_EXIT_NOSTORE;
}

int
ctl_open(struct ctl *c, htkv_db **out)
{
    int rc = ctl_open_db(c, out);
    return rc == 0 ? 0 : ctl_open_failed(c, rc);
}

int
ctl_open_write(struct ctl *c, htkv_db **out)
{
    c->writing = true;
    htkv_config cfg;
    htkv_config_init(&cfg);
    cfg.data_dir = c->dir;
    cfg.create_if_missing = 0;
    cfg.worker_threads = 0;
    cfg.io_backend = HTKV_IO_SYNC;
    cfg.compaction_interval_ms = 0; /* only the pass the command asks for */
    cfg.emit_snapshot_after_compaction = 0;
    /* Accept every value a store may hold, whatever max_value_bytes its writer used. */
    cfg.max_value_bytes = HTKV_VALUE_MAX_LIMIT;
    cfg.log_fn = ctl_log;
    cfg.log_ctx = c;
    int rc = htkv_open(&cfg, out);
    return rc == 0 ? 0 : ctl_open_failed(c, rc);
}

void
ctl_close(htkv_db *db)
{
    (void)htkv_inspect_close(db);
}

/* ---- keys and values as text ---------------------------------------------------------------- */

static int
hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

int
ctl_unescape(const char *s, unsigned char **out, size_t *len, const char **err)
{
    size_t n = strlen(s);
    unsigned char *b = malloc(n + 1);
    if (b == NULL) {
        *err = "out of memory";
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            b[k++] = (unsigned char)s[i];
            continue;
        }
        char e = s[++i];
        switch (e) {
        case '\\':
        case '"':
        case '\'':
            b[k++] = (unsigned char)e;
            break;
        case 'n':
            b[k++] = '\n';
            break;
        case 'r':
            b[k++] = '\r';
            break;
        case 't':
            b[k++] = '\t';
            break;
        case '0':
            b[k++] = '\0';
            break;
        case 'x': {
            int hi = hex_digit(s[i + 1]), lo = hi < 0 ? -1 : hex_digit(s[i + 2]);
            if (lo < 0) {
                free(b);
                *err = "\\x needs exactly two hex digits";
                return -1;
            }
            b[k++] = (unsigned char)(hi * 16 + lo);
            i += 2;
            break;
        }
        default:
            free(b);
            *err = e == '\0' ? "trailing backslash"
                             : "unknown escape (use \\\\ \\n \\r \\t \\0 "
                               "\\\" \\' or \\xNN)";
            return -1;
        }
    }
    *out = b;
    *len = k;
    return 0;
}

char *
ctl_format_bytes(const void *p, size_t n, bool hex)
{
    const unsigned char *s = p;
    /* Worst case 4 output bytes per input byte (\xNN), + NUL. */
    char *b = malloc(4 * n + 1);
    if (b == NULL) {
        fputs("htkvctl: out of memory\n", stderr);
        abort();
    }
    static const char digits[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (hex) {
            b[k++] = digits[ch >> 4];
            b[k++] = digits[ch & 15];
        } else if (ch == '\\') {
            b[k++] = '\\';
            b[k++] = '\\';
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            b[k++] = '\\';
            b[k++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else if (ch >= 0x20 && ch < 0x7f) {
            b[k++] = (char)ch;
        } else {
            b[k++] = '\\';
            b[k++] = 'x';
            b[k++] = digits[ch >> 4];
            b[k++] = digits[ch & 15];
        }
    }
    b[k] = '\0';
    return b;
}

void
ctl_print_bytes(FILE *f, const void *p, size_t n, bool hex)
{
    char *s = ctl_format_bytes(p, n, hex);
    fputs(s, f);
    free(s);
}

const char *
ctl_human_bytes(char *buf, size_t cap, uint64_t n)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (u == 0) {
        snprintf(buf, cap, "%llu B", (unsigned long long)n);
    } else {
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    }
    return buf;
}

/* ---- progress bar --------------------------------------------------------------------------- */

void
ctl_bar_init(struct ctl_bar *b, const struct ctl *c, const char *label)
{
    *b = (struct ctl_bar){ .c = c, .label = label, .last_pct = -1 };
}

void
ctl_bar_draw(struct ctl_bar *b, uint64_t done, uint64_t total)
{
    if (b->c->quiet_progress || total == 0) {
        return;
    }
    done = done < total ? done : total;
    int pct = (int)(done * 100 / total);
    if (pct == b->last_pct && done != total) {
        return;
    }
    b->last_pct = pct;
    char x[32], y[32];
    int filled = pct / 4; /* 25 cells of 4% */
    fprintf(stderr, "\r%s [%.*s%.*s] %3d%% %s / %s", b->label, filled, "#########################",
            25 - filled, ".........................", pct, ctl_human_bytes(x, sizeof(x), done),
            ctl_human_bytes(y, sizeof(y), total));
    fflush(stderr);
    b->shown = true;
}

void
ctl_bar_clear(struct ctl_bar *b)
{
    if (b->shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        b->shown = false;
    }
}

const char *
ctl_sync_mode_name(int mode)
{
    switch (mode) {
    case HTKV_SYNC_NEVER:
        return "never";
    case HTKV_SYNC_INTERVAL:
        return "interval";
    case HTKV_SYNC_ALWAYS:
        return "always";
    default:
        return "unknown";
    }
}

/* ---- iterators ------------------------------------------------------------------------------ */

int
ctl_iter_prefix(struct ctl *c, htkv_db *db, const void *prefix, size_t plen, uint64_t limit,
                htkv_iter **out)
{
    int rc = htkv_get_prefix(db, prefix, plen, out);
    if (rc == 0 && limit > 0) {
        rc = htkv_iter_set_limit(*out, limit);
        if (rc != 0) {
            htkv_iter_destroy(*out);
            *out = NULL;
        }
    }
    if (rc != 0) {
        ctl_engine_error(c, "cannot iterate", rc);
    }
    return rc;
}
