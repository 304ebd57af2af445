/*
 * tool.c - run a command-line tool from a test (see tool.h).
 */
#include "tests/support/tool.h"

#include "tests/support/testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
tu_exit_status(int wstatus)
{
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
}

int
tu_wait_deadline(pid_t pid, unsigned seconds)
{
    int st = 0;
    if (seconds == 0) {
        assert_int_equal(waitpid(pid, &st, 0), pid);
        return tu_exit_status(st);
    }
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            return tu_exit_status(st);
        }
        assert_int_equal(w, 0);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= (time_t)seconds) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec nap = { 0, 2 * 1000 * 1000 };
        nanosleep(&nap, NULL);
    }
}

int
tu_tmpfile_fd(void)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int fd = dup(fileno(f));
    fclose(f);
    assert_true(fd >= 0);
    return fd;
}

char *
tu_slurp_fd(int fd)
{
    off_t n = lseek(fd, 0, SEEK_END);
    assert_true(n >= 0);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(pread(fd, b, (size_t)n, 0), n);
    b[n] = '\0';
    return b;
}

pid_t
tu_tool_spawn(const char *path, const char *const *args, int out_fd, int err_fd)
{
    const char *argv[32] = { path };
    size_t n = 1;
    for (; args[n - 1] != NULL; n++) {
        assert_true(n < 31);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = out_fd < 0 || err_fd < 0 ? open("/dev/null", O_WRONLY) : -1;
        dup2(out_fd >= 0 ? out_fd : null, STDOUT_FILENO);
        dup2(err_fd >= 0 ? err_fd : null, STDERR_FILENO);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

void
tu_tool_run(struct tu_run *r, const char *path, const char *const *args, unsigned seconds)
{
    int out_fd = tu_tmpfile_fd(), err_fd = tu_tmpfile_fd();
    pid_t pid = tu_tool_spawn(path, args, out_fd, err_fd);
    r->status = tu_wait_deadline(pid, seconds);
    r->out = tu_slurp_fd(out_fd);
    r->err = tu_slurp_fd(err_fd);
    close(out_fd);
    close(err_fd);
}

int
tu_tool_status(const char *path, const char *const *args, unsigned seconds)
{
    return tu_wait_deadline(tu_tool_spawn(path, args, -1, -1), seconds);
}

void
tu_run_free(struct tu_run *r)
{
    free(r->out);
    free(r->err);
    r->out = NULL;
    r->err = NULL;
}

void
tu_expect_status(const struct tu_run *r, int status)
{
    if (r->status != status) {
        fprintf(stderr, "htkvctl exited %d, expected %d\n--- stdout\n%s--- stderr\n%s---\n",
                r->status, status, r->out, r->err);
    }
    assert_int_equal(r->status, status);
}

void
tu_expect_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL) {
        fprintf(stderr, "missing \"%s\" in:\n%s\n", needle, hay);
    }
    assert_non_null(strstr(hay, needle));
}
