/*
 * fuzz_util.h - what the libFuzzer targets of tests/fuzz share: an always-on check, scratch
 * directories, whole-file reads and writes, and a count of open file descriptors.
 *
 * Design. Header only (static inline), so that each target stays one translation unit linked
 * against the library it fuzzes and nothing else. A target reports a broken property through
 * FUZZ_CHECK, which prints the condition and aborts: libFuzzer treats the abort as a crash and
 * saves the input. Nothing here is random; the fuzzer's input is the only source of variation,
 * so every run replays from its input alone.
 *
 * Scratch directories go under $HTKV_FUZZ_TMP when set, else /dev/shm (no disk I/O per run),
 * else /tmp. A target removes its directory before it returns, so a long run leaves nothing.
 *
 * Invariants
 *   1. FUZZ_CHECK is on in every build type (it does not depend on NDEBUG or HTKV_DEBUG).
 *   2. The helpers return 0 or a negative errno (STYLE S3.1) and leave no descriptor open.
 */
#ifndef HTKV_TESTS_FUZZ_UTIL_H
#define HTKV_TESTS_FUZZ_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline _Noreturn void
fuzz_check_fail(const char *expr, const char *file, int line, const char *func)
{
    fprintf(stderr, "FUZZ_CHECK failed: %s at %s:%d in %s()\n", expr, file, line, func);
    abort();
}

/* One condition per check (STYLE S5.4); no side effects in @p cond. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fuzz_check_fail(#cond, __FILE__, __LINE__, __func__);                                  \
        }                                                                                          \
    } while (0)

/* Little-endian load of up to 8 bytes of @p p (fewer than 8 when @p n is short; missing = 0). */
static inline uint64_t
fuzz_load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* Base directory for scratch directories (see the file comment). */
static inline const char *
fuzz_tmp_base(void)
{
    const char *env = getenv("HTKV_FUZZ_TMP");
    if (env != NULL && env[0] != '\0') {
        return env;
    }
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) {
        return "/dev/shm";
    }
    return "/tmp";
}

/* Make a fresh empty directory "<base>/htkv-fuzz-<tag>-XXXXXX" into @p buf. 0 or -errno. */
static inline int
fuzz_tmpdir_make(char *buf, size_t cap, const char *tag)
{
    int n = snprintf(buf, cap, "%s/htkv-fuzz-%s-XXXXXX", fuzz_tmp_base(), tag);
    if (n < 0 || (size_t)n >= cap) {
        return -ENAMETOOLONG;
    }
    return mkdtemp(buf) != NULL ? 0 : -errno;
}

static inline int
fuzz_rmrf_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 ? 0 : -errno;
}

/* Remove the tree at @p path (nothing there is fine). 0 or -errno. */
static inline int
fuzz_rmrf(const char *path)
{
    int rc = nftw(path, fuzz_rmrf_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc != 0 && errno == ENOENT) {
        return 0;
    }
    return rc == 0 ? 0 : -errno;
}

/* Create or replace @p name in @p dir_fd with exactly @p len bytes. 0 or -errno. */
static inline int
fuzz_write_file(int dir_fd, const char *name, const void *data, size_t len)
{
    int fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    const unsigned char *p = data;
    int rc = 0;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            rc = -errno;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    close(fd);
    return rc;
}

/* Read all of @p name in @p dir_fd into a malloc'ed buffer (*data, free() it). 0 or -errno. */
static inline int
fuzz_read_file(int dir_fd, const char *name, unsigned char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : -errno;
    unsigned char *buf = NULL;
    if (rc == 0) {
        buf = malloc((size_t)st.st_size + 1); /* + 1: a zero-byte file still gets a buffer */
        rc = buf != NULL ? 0 : -ENOMEM;
    }
    size_t got = 0;
    while (rc == 0 && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = got;
    return 0;
}

/* Number of open descriptors of the process, or -errno. Compared around a run to catch leaks. */
static inline int
fuzz_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -errno;
    }
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

#endif
