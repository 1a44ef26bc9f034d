#include "ps_probe.h"

#include "ps_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE_NAME ".ps-probe-XXXXXX"

int ps_probe_dir(const char *dir, int create, const char *what)
{
    char probe[4200];
    if (create && mkdir(dir, 0755) != 0 && errno != EEXIST) {
        ps_error_set("%s: cannot create the directory %s: %s", what, dir, strerror(errno));
        return PS_EIO;
    }
    if ((size_t)snprintf(probe, sizeof probe, "%s/%s", dir, PROBE_NAME) >= sizeof probe) {
        ps_error_set("%s: the path is too long", what);
        return PS_EINVAL;
    }
    /* mkstemp: O_EXCL in the directory itself, so it neither follows a
     * planted symlink nor clobbers anything. */
    int fd = mkstemp(probe);
    if (fd < 0) {
        ps_error_set("%s: cannot create a file in %s: %s", what, dir, strerror(errno));
        return PS_EIO;
    }
    close(fd);
    if (unlink(probe) != 0) {
        ps_error_set("%s: cannot remove the probe file %s: %s", what, probe, strerror(errno));
        return PS_EIO;
    }
    return 0;
}

int ps_probe_file(const char *path, const char *what)
{
    char dir[4200];
    struct stat st;
    size_t len = strlen(path);
    if (len == 0 || path[len - 1] == '/' || (stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
        ps_error_set("%s: is a directory, not a file name", what);
        return PS_EINVAL;
    }
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else if ((size_t)(slash - path) >= sizeof dir) {
        ps_error_set("%s: the path is too long", what);
        return PS_EINVAL;
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    return ps_probe_dir(dir, 0, what);
}
