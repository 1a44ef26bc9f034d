#include "wkr_lines.h"

#include "ps_err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

int wkr_lines_open(wkr_lines_t *r, const char *path)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->fp = fopen(path, "r");
    if (r->fp == NULL) {
        int e = errno;
        ps_error_set("%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? PS_ENOENT : PS_EIO;
    }
    return 0;
}

int wkr_lines_next(wkr_lines_t *r, char **s)
{
    errno = 0;
    ssize_t len = getline(&r->line, &r->cap, r->fp);
    if (len < 0) {
        if (ferror(r->fp)) {
            ps_error_set("%s:%zu: read error: %s", r->path, r->lineno + 1,
                         strerror(errno ? errno : EIO));
            return PS_EIO;
        }
        return 0;
    }
    r->lineno++;
    if (memchr(r->line, '\0', (size_t)len) != NULL) {
        ps_error_set("%s:%zu: NUL byte in a text line (binary file?)", r->path, r->lineno);
        return PS_EFORMAT;
    }
    while (len > 0 && (r->line[len - 1] == '\n' || r->line[len - 1] == '\r')) {
        r->line[--len] = '\0';
    }
    *s = r->line;
    return 1;
}

void wkr_lines_close(wkr_lines_t *r)
{
    free(r->line);
    r->line = NULL;
    if (r->fp) {
        fclose(r->fp);
        r->fp = NULL;
    }
}

int wkr_lines_rewind(wkr_lines_t *r)
{
    if (fseek(r->fp, 0, SEEK_SET) != 0) {
        ps_error_set("%s: cannot rewind for the second pass: %s", r->path, strerror(errno));
        return PS_EIO;
    }
    r->lineno = 0;
    return 0;
}

char *wkr_lines_token(char **s)
{
    char *p = *s + strspn(*s, " \t");
    if (*p == '\0') {
        return NULL;
    }
    char *e = p + strcspn(p, " \t");
    *s = *e ? e + 1 : e;
    *e = '\0';
    return p;
}
