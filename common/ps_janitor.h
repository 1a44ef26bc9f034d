/*
 * ps_janitor: a child shell that removes files after this process is gone.
 *
 * The janitor waits for the end of a pipe whose only writer is this
 * process, then runs its script.  The pipe ends however this process ends
 * (SIGKILL, MPI_Abort, mpirun's SIGTERM, a second Ctrl-C), so what it
 * removes never outlives the job.  posix_spawn does not copy this
 * process's memory (it may hold memory registered with a network card);
 * the shell keeps no other descriptor (mpirun's output pipes must close
 * when the server ends) and has a process group of its own (a Ctrl-C or a
 * group kill meant for the job must not end it first).  Used by ps_ipcdir
 * (the ipc socket folder) and ps_shm (the shared-memory segment).
 */
#ifndef PS_JANITOR_H
#define PS_JANITOR_H

#include <sys/types.h>

typedef struct {
    pid_t pid; /* the shell; 0: none */
    int fd;    /* the write end of its pipe; -1: none */
} ps_janitor_t;

/* An idle janitor (nothing started): stop is then a no-op. */
void ps_janitor_init(ps_janitor_t *j);
/* Starts `sh -c script name path`: the script sees `path` as $1.  When
 * it cannot start (no pipe, no /bin/sh) *j stays idle and a debug line
 * says that a process killed outright would leave `path` behind. */
void ps_janitor_start(ps_janitor_t *j, const char *script, const char *name, const char *path);
/* Closes the pipe and waits for the shell (which then finds nothing left
 * to remove when the caller removed it first); idle afterwards. */
void ps_janitor_stop(ps_janitor_t *j);

#endif
