#include "ps_ipcdir.h"

#include "ps_cleanup.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

struct ps_ipcdir {
    char dir[PS_IPCDIR_PATH];
    char file[PS_IPCDIR_MAX_FILES][PS_IPCDIR_PATH];
    int nfiles;     /* socket files named so far */
    pid_t janitor;  /* removes the folder when we are gone; 0: none */
    int janitor_fd; /* the write end of its pipe; -1: none */
};

/* The janitor: a shell that waits for the end of a pipe whose only writer
 * is this process, then removes the folder.  The pipe ends however this
 * process ends (SIGKILL, MPI_Abort, mpirun's SIGTERM, a second Ctrl-C),
 * so the folder never outlives the job.  posix_spawn does not copy this
 * process's memory (it may hold memory registered with a network card);
 * the shell keeps no other descriptor (mpirun's output pipes must close
 * when the server ends) and has a process group of its own (a Ctrl-C or a
 * group kill meant for the job must not end it first). */
static const char JANITOR[] = "while read -r _; do :; done; rm -f -- \"$1\"/[0-9]; rmdir -- \"$1\"";

static void janitor_start(ps_ipcdir_t *d)
{
    int p[2];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    char *argv[] = {"sh", "-c", (char *)JANITOR, "ps-ipc-janitor", d->dir, NULL};
    extern char **environ;
    if (pipe2(p, O_CLOEXEC) != 0) {
        return;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    if (posix_spawn(&d->janitor, "/bin/sh", &fa, &at, argv, environ) == 0) {
        d->janitor_fd = p[1];
    } else {
        d->janitor = 0;
        close(p[1]);
        ps_log_debug("no janitor for %s (cannot run /bin/sh): a server killed outright "
                     "leaves it behind",
                     d->dir);
    }
    close(p[0]);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
}

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
    if (d->janitor_fd >= 0) {
        close(d->janitor_fd); /* it finds nothing left to remove, and ends */
        waitpid(d->janitor, NULL, 0);
    }
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
    d->janitor_fd = -1;
    int rv = make_private_dir(d, parent);
    if (rv != 0) {
        return rv;
    }
    /* Removed at once on a signal or an abort (ps_cleanup), and by the
     * janitor whatever happens. */
    janitor_start(d);
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
