/*
 * ps_ipcdir: a server's private folder for its ipc socket files.
 *
 * The folder is made with mkdtemp (mode 0700) under a random name in the
 * given parent ($TMPDIR or /tmp), so other users can neither enter nor
 * guess it: the first guard of the one-host data plane (the second is the
 * peer-credential check in ps_tp_auth).  Its files are named 0, 1, ... (one
 * per lane).  The folder and its files never outlive the process:
 * ps_ipcdir_destroy removes them; a signal or an abort removes them through
 * ps_cleanup; and a janitor process, which waits on a pipe only this
 * process holds, removes them when the process ends any other way
 * (SIGKILL included).  Plain C, no zmq: the transport binds the sockets.
 */
#ifndef PS_IPCDIR_H
#define PS_IPCDIR_H

#define PS_IPCDIR_PATH 108     /* sun_path: an ipc socket's path is at most 107 bytes */
#define PS_IPCDIR_MAX_FILES 16 /* at least PS_TP_MAX_LANES */

typedef struct ps_ipcdir ps_ipcdir_t;

/* Makes the folder in `parent`; *out is set even on failure (then
 * destroy it).  PS_EINVAL when the socket paths would be too long (set a
 * shorter TMPDIR), PS_EIO when the folder cannot be made, each with a
 * message saying what to do. */
int ps_ipcdir_new(ps_ipcdir_t **out, const char *parent);
/* The path of socket file i (the next one: 0, 1, ...), registered for
 * removal; the string is owned by d. */
int ps_ipcdir_add(ps_ipcdir_t *d, int i, const char **path);
/* Removes the files and the folder, stops the janitor, frees d; safe on
 * NULL and twice (NULLs *dp). */
void ps_ipcdir_destroy(ps_ipcdir_t **dp);

#endif
