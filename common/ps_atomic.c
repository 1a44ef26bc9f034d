#include "ps_atomic.h"

#include "ps_cleanup.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Enough tries that only a directory full of our own temp names (or a
 * hostile peer creating them) runs out. */
#define TEMP_TRIES 64

/* A temp name suffix that differs between calls, threads and processes. */
static unsigned temp_suffix(void)
{
    static _Atomic unsigned counter;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (counter++ * 0x9E3779B9u);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9u;
    return (unsigned)(x ^ (x >> 32));
}

/* Step 1.  What mkstemp does (exclusive creation of a fresh random name),
 * but with mode 0666 & ~umask: mkstemp's 0600 would make model files and
 * checkpoints private, and reading the umask to undo that is racy. */
static int open_temp(const char *path, char **tmp, int *fd)
{
    size_t cap = strlen(path) + 40;
    *tmp = malloc(cap);
    if (*tmp == NULL) {
        ps_error_set("%s: out of memory for the temp file name", path);
        return PS_ENOMEM;
    }
    for (int i = 0; i < TEMP_TRIES; i++) {
        snprintf(*tmp, cap, "%s.tmp.%ld.%08x", path, (long)getpid(), temp_suffix());
        *fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (*fd >= 0) {
            return 0;
        }
        if (errno != EEXIST) {
            break;
        }
    }
    ps_error_set("%s: cannot create the temp file %s: %s", path, *tmp, strerror(errno));
    free(*tmp);
    *tmp = NULL;
    return PS_EIO;
}

/* Steps 2 and 3; always closes f. */
static int fill_and_sync(const char *path, const char *tmp, FILE *f, ps_atomic_fill_fn fill,
                         void *arg)
{
    int rv = fill(f, arg);
    if (rv != 0 && rv != PS_EIO) {
        fclose(f); /* fill said what went wrong */
        return rv;
    }
    const char *step = NULL;
    if (rv != 0 || ferror(f) || fflush(f) != 0) {
        step = "write";
    } else if (fsync(fileno(f)) != 0) {
        step = "fsync";
    }
    int err = errno;
    if (fclose(f) != 0 && step == NULL) {
        step = "close";
        err = errno;
    }
    if (step == NULL) {
        return 0;
    }
    ps_error_set("%s: cannot %s the temp file %s: %s", path, step, tmp, strerror(err));
    return PS_EIO;
}

int ps_atomic_write(const char *path, ps_atomic_fill_fn fill, void *arg)
{
    char *tmp;
    int fd;
    int rv = open_temp(path, &tmp, &fd);
    if (rv != 0) {
        return rv;
    }
    /* Best effort (a full table only means it may be left behind). */
    ps_cleanup_add_file(tmp);
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        ps_error_set("%s: cannot open a stream on %s: %s", path, tmp, strerror(errno));
        close(fd);
        rv = PS_EIO;
    } else {
        rv = fill_and_sync(path, tmp, f, fill, arg);
    }
    if (rv == 0 && rename(tmp, path) != 0) {
        ps_error_set("%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        rv = PS_EIO;
    }
    if (rv != 0) {
        unlink(tmp);
    }
    ps_cleanup_forget(tmp);
    free(tmp);
    return rv != 0 ? rv : ps_atomic_sync_dir(path);
}

typedef struct {
    const void *buf;
    size_t len;
} buf_arg_t;

static int fill_buf(FILE *f, void *arg)
{
    const buf_arg_t *b = arg;
    return b->len == 0 || fwrite(b->buf, 1, b->len, f) == b->len ? 0 : PS_EIO;
}

int ps_atomic_write_buf(const char *path, const void *buf, size_t len)
{
    buf_arg_t b = {buf, len};
    return ps_atomic_write(path, fill_buf, &b);
}

/* The rename is durable only once the directory entry is on disk. */
int ps_atomic_sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir =
        slash == NULL ? strdup(".") : strndup(path, slash == path ? 1 : (size_t)(slash - path));
    int fd = dir == NULL ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = 0;
    if (fd < 0 || fsync(fd) != 0) {
        ps_error_set("%s: cannot sync directory %s: %s", path, dir ? dir : "?", strerror(errno));
        rv = PS_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(dir);
    return rv;
}
