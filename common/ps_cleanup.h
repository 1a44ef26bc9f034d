/*
 * ps_cleanup: the files and folders this process must not leave behind
 * when it ends early (a signal, an abort, a forgotten path).
 *
 * A module that creates a file or folder other processes will not remove
 * (an ipc socket file, the endpoint file, a temporary file before its
 * rename, a private socket folder) registers its path here, and removes it
 * itself on its normal way out, then forgets it.  ps_cleanup_run removes
 * whatever is still registered: the signal handlers (ps_signal) run it at
 * once, ps_boot_abort runs it before MPI_Abort, and it is registered with
 * atexit.  Files are unlinked before folders are removed (rmdir: only an
 * empty folder goes), so a folder registered around its files is left
 * clean.
 *
 * Plain C, no MPI, no allocation: a fixed table of PS_CLEANUP_MAX paths.
 * Every call is thread-safe, and ps_cleanup_run is async-signal-safe (it
 * may run in a signal handler while another thread adds or forgets).  A
 * path is removed at most once; forgetting an unknown path is a no-op.
 */
#ifndef PS_CLEANUP_H
#define PS_CLEANUP_H

#define PS_CLEANUP_MAX 32        /* paths registered at once */
#define PS_CLEANUP_PATH_MAX 1024 /* bytes of a path, with its NUL */

/* Register a file to unlink / an (empty, by then) folder to rmdir.
 * PS_ENOMEM with a message when the table is full, PS_EINVAL when the
 * path is empty or longer than PS_CLEANUP_PATH_MAX - 1. */
int ps_cleanup_add_file(const char *path);
int ps_cleanup_add_dir(const char *path);
/* The owner removed (or renamed) the path itself: do not touch it. */
void ps_cleanup_forget(const char *path);
/* Unlink every registered file, then rmdir every registered folder (in
 * reverse order of registration), and forget them all. */
void ps_cleanup_run(void);
/* Paths registered now (for tests). */
int ps_cleanup_count(void);

#endif
