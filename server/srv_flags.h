/*
 * srv_flags: ps-server's flags: the table behind --help, their defaults,
 * their checks, and the settings string a checkpoint records.
 *
 * srv_flags_parse fills every field (defaults first) from argv and, for
 * --help/--version, prints and returns PS_OPTS_HELP/PS_OPTS_VERSION.
 * srv_flags_check validates what parsing could not (ranges, combinations)
 * and resolves the fields of `info` the servers broadcast; both leave a
 * message naming the flag on failure.  Strings point into argv or static
 * storage.
 */
#ifndef SRV_FLAGS_H
#define SRV_FLAGS_H

#include "ps_jobinfo.h"
#include "ps_plane.h"
#include "srv_optim.h"

#include <stddef.h>

typedef struct {
    srv_optim_cfg_t opt;
    const char *save;
    int chunk_kib;
    int io_threads;
    int timeout_s;
    const char *iface;
    const char *bind;
    const char *transport;
    const char *mode;
    long long staleness;
    const char *schedule;
    long long warmup;
    const char *form;
    int insecure;
    const char *endpoint_file;
    const char *on_nonfinite;
    const char *sparse_update; /* "exact" | "lazy" */
    long long max_table_mib;   /* 0: auto (most of the RAM free at start) */
    const char *ckpt_dir;
    long long ckpt_every;
    const char *resume;
    const char *trace;
    const char *config;
    int quiet;
    /* Resolved from the flags above. */
    ps_plane_t plane;
    ps_srvinfo_t info;
    ps_planinfo_t plan;
    int sparse_lazy; /* --sparse-update lazy */
} srv_cfg_t;

int srv_flags_parse(srv_cfg_t *c, int argc, char **argv);
int srv_flags_check(srv_cfg_t *c);
/* Everything a checkpoint must share with the run that resumes it, as
 * "key=value;..." (compared key by key by srv_settings). */
void srv_flags_describe(const srv_cfg_t *c, char *out, size_t cap);

#endif
