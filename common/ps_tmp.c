#include "ps_tmp.h"

#include "ps_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ps_tmp_dir(void)
{
    const char *d = getenv("TMPDIR");
    return d && *d ? d : "/tmp";
}

int ps_tmp_create(char *path, size_t cap, const char *stem, const char *suffix, int *fd)
{
    const char *dir = ps_tmp_dir();
    int n = snprintf(path, cap, "%s/%s-XXXXXX%s", dir, stem, suffix);
    if (n < 0 || (size_t)n >= cap) {
        ps_error_set("a temporary file name in %s (TMPDIR) is too long", dir);
        return PS_EINVAL;
    }
    *fd = mkstemps(path, (int)strlen(suffix));
    if (*fd < 0) {
        ps_error_set("cannot create a temporary file %s in %s (TMPDIR): %s", path, dir,
                     strerror(errno));
        return PS_EIO;
    }
    return 0;
}
