/*
 * tool.h - run a command-line tool (the built htkvctl) from a test: fork and exec with its
 * stdout and stderr captured, and wait for a child with a deadline. The tool's path is an
 * argument: the tests that drive htkvctl get it as HTKVCTL_PATH (tools/htkvctl/CMakeLists.txt).
 */
#ifndef HTKV_TESTS_TOOL_H
#define HTKV_TESTS_TOOL_H

#include <sys/types.h>

/* The arguments of a tool, without argv[0]: TU_ARGS("verify", dir) is a NULL-terminated
 * array that lives as long as the enclosing block. */
#define TU_ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* What one run of a tool left. */
struct tu_run {
    int status; /* exit status; 128 + signal; -1 when it ran past its deadline (then killed) */
    char *out;  /* stdout, NUL-terminated; owned by the run, freed by tu_run_free() */
    char *err;  /* stderr, the same */
};

/* The status a waitpid() status @p wstatus stands for: the exit status, or 128 + signal. */
int tu_exit_status(int wstatus);
/*
 * Wait for child @p pid: at most @p seconds (0: without a limit), then kill it (SIGKILL) and
 * reap it. Returns its exit status, 128 + signal, or -1 when it ran past the deadline. Fails
 * the running test when @p pid is not a child of this process. Test thread only.
 */
int tu_wait_deadline(pid_t pid, unsigned seconds);

/* A descriptor of a new anonymous temporary file (the caller closes it). */
int tu_tmpfile_fd(void);
/* The whole content of file @p fd (from offset 0), NUL-terminated, malloc'd (the caller frees
 * it); the descriptor stays open. */
char *tu_slurp_fd(int fd);

/*
 * Start @p path with @p args (NULL-terminated, without argv[0]; at most 30) in a child whose
 * stdout and stderr are @p out_fd and @p err_fd (-1: /dev/null). Returns the child's pid; the
 * caller reaps it (tu_wait_deadline) and keeps its descriptors. A child that cannot exec exits
 * 127. Test thread only, as the helpers below: they fail the running test when fork or a
 * temporary file fails.
 */
pid_t tu_tool_spawn(const char *path, const char *const *args, int out_fd, int err_fd);
/* Run @p path with @p args to its end, or at most @p seconds (0: without a limit); fills @p r,
 * whose outputs the caller frees with tu_run_free(). */
void tu_tool_run(struct tu_run *r, const char *path, const char *const *args, unsigned seconds);
/* Run as tu_tool_run() with the outputs discarded; returns the status as tu_run.status. */
int tu_tool_status(const char *path, const char *const *args, unsigned seconds);
/* Free the outputs of @p r. */
void tu_run_free(struct tu_run *r);

/* Assert the exit status of @p r, printing both outputs when it is not the one expected. */
void tu_expect_status(const struct tu_run *r, int status);
/* Assert that @p hay contains @p needle, printing @p hay when it does not. */
void tu_expect_contains(const char *hay, const char *needle);

#endif
