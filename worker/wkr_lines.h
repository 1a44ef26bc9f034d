/*
 * wkr_lines: a text file read line by line, for the text loaders (LIBSVM
 * and CSV in wkr_data_text, LIBSVM with 64-bit indices and Criteo in
 * wkr_data_libsvm64 / wkr_data_criteo).  A line comes without its end of
 * line; a NUL byte in a line (a binary file) and read errors are refused
 * naming PATH:LINE.  The caller owns `path` (kept, not copied) and closes
 * the reader.
 */
#ifndef WKR_LINES_H
#define WKR_LINES_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    const char *path;
    FILE *fp;
    char *line;
    size_t cap;
    size_t lineno;
} wkr_lines_t;

/* Opens path (PS_ENOENT / PS_EIO naming it). */
int wkr_lines_open(wkr_lines_t *r, const char *path);
/* Next line without its end of line in *s: 1 a line, 0 end of file, or a
 * negative code (read error, NUL byte) naming PATH:LINE. */
int wkr_lines_next(wkr_lines_t *r, char **s);
void wkr_lines_close(wkr_lines_t *r);
/* Back to the first line (a second pass): PS_EIO naming the file. */
int wkr_lines_rewind(wkr_lines_t *r);
/* Next blank-separated (space, tab) token of *s, NUL-terminated in place;
 * NULL at the end.  *s moves past it. */
char *wkr_lines_token(char **s);

#endif
