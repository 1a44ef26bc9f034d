#include "srv_ckpt_dir.h"

#include "ps_atomic.h"
#include "ps_err.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void srv_ckpt_dir_step(char *out, size_t cap, const char *dir, uint64_t step)
{
    snprintf(out, cap, "%s/step-%08" PRIu64, dir, step);
}

/* Creates `path` unless it exists; *made says whether this call did. */
static int mkdir_one(const char *path, int *made)
{
    *made = mkdir(path, 0755) == 0;
    if (!*made && errno != EEXIST) {
        ps_error_set("cannot create %s: %s", path, strerror(errno));
        return PS_EIO;
    }
    return 0;
}

/* DIR (when this server creates it) and DIR/step-N, each entry synced in
 * its parent.  Every server syncs DIR, not only the one that created the
 * step folder: that one may crash between its mkdir and its fsync. */
int srv_ckpt_dir_make(const char *dir, const char *sdir)
{
    int made, rv = mkdir_one(dir, &made);
    if (rv == 0 && made) {
        rv = ps_atomic_sync_dir(dir);
    }
    if (rv == 0) {
        rv = mkdir_one(sdir, &made);
    }
    return rv == 0 ? ps_atomic_sync_dir(sdir) : rv;
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x > y ? -1 : x < y;
}

/* The steps of DIR's `step-N` folders, newest first, in *out (malloc'd,
 * the caller frees it; NULL when there are none).  PS_ENOENT when DIR
 * cannot be opened (errno kept), PS_ENOMEM. */
int srv_ckpt_dir_list(const char *dir, uint64_t **out, size_t *n)
{
    size_t cap = 0;
    struct dirent *e;
    DIR *d = opendir(dir);
    *out = NULL;
    *n = 0;
    if (!d) {
        return PS_ENOENT;
    }
    while ((e = readdir(d))) {
        uint64_t v;
        char tail;
        if (sscanf(e->d_name, "step-%" SCNu64 "%c", &v, &tail) != 1) {
            continue;
        }
        if (*n == cap) {
            uint64_t *more = realloc(*out, (cap = cap ? 2 * cap : 16) * sizeof *more);
            if (!more) {
                closedir(d);
                free(*out);
                *out = NULL;
                ps_error_set("%s: no memory to list its checkpoints", dir);
                return PS_ENOMEM;
            }
            *out = more;
        }
        (*out)[(*n)++] = v;
    }
    closedir(d);
    if (*n > 1) { /* qsort's array must not be NULL, even for none */
        qsort(*out, *n, sizeof **out, cmp_desc);
    }
    return 0;
}

int srv_ckpt_dir_whole(const char *dir, uint64_t step)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/step-%08" PRIu64 "/MANIFEST", dir, step);
    return access(path, F_OK) == 0;
}

/* Removes one step folder and the files in it (parts, MANIFEST, temp
 * files of a write that was cut short). */
int srv_ckpt_dir_remove(const char *dir, uint64_t step)
{
    char sdir[4100], path[4400];
    struct dirent *e;
    srv_ckpt_dir_step(sdir, sizeof sdir, dir, step);
    DIR *sd = opendir(sdir);
    while (sd && (e = readdir(sd))) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", sdir, e->d_name);
            unlink(path);
        }
    }
    if (sd) {
        closedir(sd);
    }
    if (rmdir(sdir) != 0 && errno != ENOENT) {
        ps_error_set("cannot remove %s: %s", sdir, strerror(errno));
        return PS_EIO;
    }
    return 0;
}
