/*
 * fuzz_util: helpers shared by the libFuzzer targets in tests/fuzz/.
 *
 * The loaders under test read files, so a target writes each input to a
 * file in one scratch folder per process (under /dev/shm when it exists,
 * so no disk is touched), made on first use and removed at a normal exit.
 * A crash leaves the folder behind: /dev/shm/ps-fuzz.* is safe to delete.
 *
 * FZ_CHECK is the targets' assertion: a broken invariant prints the
 * condition and aborts, which libFuzzer reports as a crash and saves the
 * input under build/fuzz/artifacts/.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_err.h"

#define FZ_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (last error: %s)\n", __FILE__, __LINE__,  \
                    #cond, ps_error_msg());                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static char fz_dir_path[128];

static inline void fz_dir_remove(void)
{
    DIR *d = opendir(fz_dir_path);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(p, sizeof p, "%s/%s", fz_dir_path, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(fz_dir_path);
}

/* The per-process scratch folder; aborts when none can be made (a broken
 * machine, not a finding). */
static inline const char *fz_dir(void)
{
    if (fz_dir_path[0] != '\0') {
        return fz_dir_path;
    }
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(fz_dir_path, sizeof fz_dir_path, "%s/ps-fuzz.XXXXXX", base);
    if (mkdtemp(fz_dir_path) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fz_dir_remove);
    return fz_dir_path;
}

/* DIR/name into buf. */
static inline void fz_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", fz_dir(), name);
}

/* Replaces `path` with exactly n bytes. */
static inline void fz_write(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror("fuzz: open");
        abort();
    }
    while (n > 0) {
        ssize_t k = write(fd, data, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            perror("fuzz: write");
            abort();
        }
        data += k;
        n -= (size_t)k;
    }
    close(fd);
}

/* The codes a loader may return, per the module headers. */
static inline int fz_known_error(int rv)
{
    return rv == PS_EINVAL || rv == PS_ENOMEM || rv == PS_EIO || rv == PS_EFORMAT ||
           rv == PS_ERANGE || rv == PS_ENOENT;
}

#endif
