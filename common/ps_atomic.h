/*
 * ps_atomic: replace a file atomically, so that a reader (or a crash) sees
 * the old content or the new content, never a mix or a truncated file.
 *
 * ps_atomic_write(path, fill, arg):
 *   1. creates a new temp file PATH.tmp.<pid>.<random> next to the target
 *      (same directory, hence same file system), exclusively (O_EXCL: an
 *      existing file or symlink of that name is never opened or followed),
 *      with mode 0666 less the umask, as fopen would;
 *   2. calls fill(f, arg) to write the content through a stdio stream;
 *   3. fflush + fsync + fclose: the data is on disk before the rename;
 *   4. renames the temp file over PATH (a symlink at PATH is replaced by
 *      the file, not followed);
 *   5. fsyncs PATH's directory, so the rename itself survives a crash.
 * Any failure in 1-4 removes the temp file and leaves PATH untouched (so
 * does a signal or abort meanwhile: the temp file is registered with
 * ps_cleanup until the rename).  A
 * failure in 5 comes after the replacement: PATH holds the new content.
 * Every failure returns a negative PS_E* code with a ps_error_set message
 * naming the path and the failing step (and errno's text).
 *
 * fill returns 0, or PS_EIO when a write to f failed (it need not set a
 * message: ps_atomic_write names the temp file and errno), or another
 * negative PS_E* code after setting its own message, which is kept.  The
 * stream's error flag is checked after fill too, so fill may ignore the
 * results of its fprintf calls.
 *
 * Not safe against another process replacing PATH at the same time (the
 * last rename wins, whole).
 */
#ifndef PS_ATOMIC_H
#define PS_ATOMIC_H

#include <stddef.h>
#include <stdio.h>

typedef int (*ps_atomic_fill_fn)(FILE *f, void *arg);

int ps_atomic_write(const char *path, ps_atomic_fill_fn fill, void *arg);

/* ps_atomic_write of `len` bytes from `buf`. */
int ps_atomic_write_buf(const char *path, const void *buf, size_t len);

/* fsync the directory that holds `path` (step 5 above); PS_EIO with a
 * message on failure. */
int ps_atomic_sync_dir(const char *path);

#endif
