/*
 * unit_tmp.h: a private scratch folder for a unit test, and its removal.
 * Header-only (static functions), shared by the unit tests that touch the
 * file system; not part of any library.
 */
#ifndef UNIT_TMP_H
#define UNIT_TMP_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A new folder $TMPDIR/TAG.XXXXXX (or under /tmp), its canonical path in
 * out[cap]; 0, or -1 when it cannot be made. */
static inline int ut_mkdtemp(char *out, size_t cap, const char *tag)
{
    const char *t = getenv("TMPDIR");
    char made[512];
    snprintf(made, sizeof made, "%s/%s.XXXXXX", t && *t ? t : "/tmp", tag);
    if (mkdtemp(made) == NULL || strlen(made) >= cap) {
        return -1;
    }
    /* Canonical: tests compare it with paths the kernel reports. */
    char *real = realpath(made, NULL);
    if (real == NULL || strlen(real) >= cap) {
        free(real);
        return -1;
    }
    snprintf(out, cap, "%s", real);
    free(real);
    return 0;
}

/* "DIR/NAME", in one of four rotating static buffers (so a call may take
 * up to four such paths as arguments). */
static inline const char *ut_in_dir(const char *dir, const char *name)
{
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

/* Removes path and, when it is a folder, everything below it; 0 when it is
 * gone. */
static inline int ut_rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        return unlink(path) == 0 || access(path, F_OK) != 0 ? 0 : -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            char sub[1024];
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub) {
                ut_rm_tree(sub);
            }
        }
    }
    closedir(d);
    return rmdir(path);
}

#endif
