/*
 * ps_probe: find out before a long run whether its output can be written.
 *
 * A job that trains for hours and then cannot write its --save file, or
 * that writes no checkpoint at all, has lost the run; these checks run at
 * start-up instead.  Each creates a probe file with mkstemp in the target
 * directory (so permissions, a read-only mount, a missing directory or a
 * path through a regular file all show, for root too) and removes it at
 * once.  Plain C: no MPI, no zmq.
 *
 * Failure: PS_EIO (PS_EINVAL for a path that cannot be a file), with a
 * message that starts with `what` (the flag and its value, e.g.
 * "--save /x/model.st") and says which directory and why.
 */
#ifndef PS_PROBE_H
#define PS_PROBE_H

/* Whether a file can be created in `dir`.  create != 0: make `dir` first
 * (one level, mode 0755) when it does not exist, as a writer that makes
 * its own folder would. */
int ps_probe_dir(const char *dir, int create, const char *what);
/* Whether `path` can be written as a new file (by creating it under a
 * temporary name in its directory and renaming it, as atomic writers do):
 * its directory accepts a file and `path` is not a directory. */
int ps_probe_file(const char *path, const char *what);

#endif
