/*
 * ps_tmp: private temporary files that nobody else can predict or plant.
 *
 * A temporary file goes in $TMPDIR (or /tmp when it is unset or empty),
 * as STEM-XXXXXX SUFFIX with six random characters, created by mkstemps:
 * exclusively (O_EXCL, so a file or a symlink already at that name is
 * never opened or followed), mode 0600.  A fixed name such as
 * /tmp/ps-metrics-PID.jsonl opened with fopen("w") would let another user
 * of the machine plant a symlink there and have the job overwrite any
 * file the job's user may write.  Plain C: no MPI, no zmq.
 */
#ifndef PS_TMP_H
#define PS_TMP_H

#include <stddef.h>

/* The folder temporary files go in: $TMPDIR, or "/tmp". */
const char *ps_tmp_dir(void);
/* Create a new temporary file (see above); its path is written to
 * path[cap] and *fd is open for writing (the caller closes it and
 * removes the file).  PS_EINVAL when the name does not fit in cap;
 * PS_EIO naming the folder and the reason (a TMPDIR that does not exist
 * or cannot be written). */
int ps_tmp_create(char *path, size_t cap, const char *stem, const char *suffix, int *fd);

#endif
