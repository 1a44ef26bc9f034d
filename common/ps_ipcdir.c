#include "ps_ipcdir.h"

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_janitor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct ps_ipcdir {
    char dir[PS_IPCDIR_PATH];
    char file[PS_IPCDIR_MAX_FILES][PS_IPCDIR_PATH];
    int nfiles;           /* socket files named so far */
    ps_janitor_t janitor; /* removes the folder when we are gone */
};

/* The janitor (ps_janitor) removes the sockets and the folder once this
 * process is gone, however it ends. */
static const char JANITOR[] = "while read -r _; do :; done; rm -f -- \"$1\"/[0-9]; rmdir -- \"$1\"";

static void remove_all(ps_ipcdir_t *d)
{
    for (int i = 0; i < d->nfiles; i++) {
        unlink(d->file[i]);
        ps_cleanup_forget(d->file[i]);
    }
    if (d->dir[0]) {
        rmdir(d->dir);
        ps_cleanup_forget(d->dir);
    }
    ps_janitor_stop(&d->janitor); /* it finds nothing left to remove, and ends */
}

/* A fresh folder only we can enter (mkdtemp makes it 0700), named with
 * random bits so nobody can guess it either: the first guard of the ipc
 * sockets (other users cannot even reach them). */
static int make_private_dir(ps_ipcdir_t *d, const char *parent)
{
    unsigned char r[6];
    char hex[13];
    /* the folder, "/", a lane's one-digit name */
    if (strlen(parent) + strlen("/ps-0123456789ab-XXXXXX") + 2 >= PS_IPCDIR_PATH) {
        ps_error_set("ipc socket paths in '%s' would be longer than %d bytes: set TMPDIR to a "
                     "shorter folder, or use --transport tcp",
                     parent, PS_IPCDIR_PATH - 1);
        return PS_EINVAL;
    }
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        ps_error_set("getrandom: %s", strerror(errno));
        return PS_EIO;
    }
    for (int i = 0; i < 6; i++) {
        snprintf(hex + 2 * i, 3, "%02x", r[i]);
    }
    snprintf(d->dir, sizeof d->dir, "%s/ps-%s-XXXXXX", parent, hex);
    if (!mkdtemp(d->dir)) {
        ps_error_set("cannot make a private folder for the data port's sockets in %s: %s "
                     "(set TMPDIR, or use --transport tcp)",
                     parent, strerror(errno));
        d->dir[0] = '\0';
        return PS_EIO;
    }
    return 0;
}

int ps_ipcdir_new(ps_ipcdir_t **out, const char *parent)
{
    ps_ipcdir_t *d = calloc(1, sizeof *d);
    *out = d;
    if (!d) {
        ps_error_set("no memory for the ipc socket folder");
        return PS_ENOMEM;
    }
    ps_janitor_init(&d->janitor);
    int rv = make_private_dir(d, parent);
    if (rv != 0) {
        return rv;
    }
    /* Removed at once on a signal or an abort (ps_cleanup), and by the
     * janitor whatever happens. */
    ps_janitor_start(&d->janitor, JANITOR, "ps-ipc-janitor", d->dir);
    return ps_cleanup_add_dir(d->dir);
}

int ps_ipcdir_add(ps_ipcdir_t *d, int i, const char **path)
{
    if (i < 0 || i >= PS_IPCDIR_MAX_FILES || i != d->nfiles) {
        ps_error_set("ipc socket %d: want the next of at most %d", i, PS_IPCDIR_MAX_FILES);
        return PS_EINVAL;
    }
    char name[PS_IPCDIR_PATH + 16];
    int n = snprintf(name, sizeof name, "%s/%d", d->dir, i);
    if (n < 0 || n >= PS_IPCDIR_PATH) { /* make_private_dir left room for one digit */
        ps_error_set("ipc socket path %s is too long", name);
        return PS_EINVAL;
    }
    memcpy(d->file[i], name, (size_t)n + 1);
    d->nfiles = i + 1; /* removed even if the bind fails half-way */
    *path = d->file[i];
    return ps_cleanup_add_file(d->file[i]);
}

void ps_ipcdir_destroy(ps_ipcdir_t **dp)
{
    if (!dp || !*dp) {
        return;
    }
    remove_all(*dp);
    free(*dp);
    *dp = NULL;
}
