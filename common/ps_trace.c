#include "ps_trace.h"

#include "ps_atomic.h"
#include "ps_err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS (1u << 20)

typedef struct {
    const char *name; /* a string literal */
    int64_t ts, dur, step;
} event_t;

static struct {
    int on;
    char path[4096];
    char label[64];
    int rank;
    event_t *ev;
    uint32_t n;
    uint64_t dropped;
} tr;

int64_t ps_trace_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int ps_trace_start(const char *path, int world_rank, const char *label)
{
    tr.ev = malloc(MAX_EVENTS * sizeof *tr.ev);
    if (!tr.ev) {
        ps_error_set("--trace: no memory for %d events", (int)MAX_EVENTS);
        return PS_ENOMEM;
    }
    snprintf(tr.path, sizeof tr.path, "%s", path);
    snprintf(tr.label, sizeof tr.label, "%s", label);
    tr.rank = world_rank;
    tr.n = 0;
    tr.on = 1;
    return 0;
}

int ps_trace_on(void)
{
    return tr.on;
}

void ps_trace_event(const char *name, int64_t start_us, int64_t step)
{
    if (!tr.on) {
        return;
    }
    if (tr.n == MAX_EVENTS) {
        tr.dropped++; /* keep the start of the run; count the rest */
        return;
    }
    tr.ev[tr.n++] = (event_t){name, start_us, ps_trace_now() - start_us, step};
}

static void part_path(char *out, size_t cap, int rank)
{
    snprintf(out, cap, "%s.part-%d", tr.path, rank);
}

static int write_events(FILE *f, void *arg)
{
    (void)arg;
    fprintf(f,
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
            "\"args\":{\"name\":\"%s\"}}",
            tr.rank, tr.label);
    for (uint32_t i = 0; i < tr.n; i++) {
        const event_t *e = &tr.ev[i];
        fprintf(f, ",\n{\"name\":\"%s\",\"ph\":\"X\",\"ts\":%lld,\"dur\":%lld,\"pid\":%d,\"tid\":0",
                e->name, (long long)e->ts, (long long)e->dur, tr.rank);
        if (e->step >= 0) {
            fprintf(f, ",\"args\":{\"step\":%lld}", (long long)e->step);
        }
        fputc('}', f);
    }
    return 0;
}

int ps_trace_write_part(void)
{
    char path[4200];
    if (!tr.on) {
        return 0;
    }
    part_path(path, sizeof path, tr.rank);
    /* The part's name is predictable (the merging rank looks for it), so
     * it is never opened for writing: a symlink planted there is replaced
     * by the rename, not followed. */
    int rv = ps_atomic_write(path, write_events, NULL);
    if (rv != 0) {
        char why[4400];
        snprintf(why, sizeof why, "%s", ps_error_msg());
        ps_error_set("--trace: %s", why);
        return rv;
    }
    if (tr.dropped) {
        ps_log_info("--trace: buffer full, %llu later events not recorded",
                    (unsigned long long)tr.dropped);
    }
    return 0;
}

/* Append one part's text to the merged file. */
static int copy_part(FILE *out, const char *path, int *first)
{
    /* O_NOFOLLOW: a rank without --trace leaves no part, and a symlink
     * planted at its name must not pull another file into the trace. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    FILE *in = fd >= 0 ? fdopen(fd, "r") : NULL;
    char buf[65536];
    size_t n;
    if (!in) {
        if (fd >= 0) {
            close(fd);
        }
        return PS_ENOENT;
    }
    if (!*first) {
        fputs(",\n", out);
    }
    *first = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        fwrite(buf, 1, n, out);
    }
    fclose(in);
    return 0;
}

typedef struct {
    int nranks, missing;
} merge_t;

static int merge_parts(FILE *out, void *arg)
{
    merge_t *m = arg;
    char part[4200];
    int first = 1;
    m->missing = 0;
    fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n", out);
    for (int r = 0; r < m->nranks; r++) {
        part_path(part, sizeof part, r);
        m->missing += copy_part(out, part, &first) != 0;
    }
    fputs("\n]}\n", out);
    return 0;
}

int ps_trace_merge(int nranks)
{
    char part[4200];
    merge_t m = {nranks, 0};
    if (!tr.on) {
        return 0;
    }
    int rv = ps_atomic_write(tr.path, merge_parts, &m);
    if (rv != 0) {
        return rv;
    }
    /* Only once the merged file is in place: a failed merge keeps them. */
    for (int r = 0; r < nranks; r++) {
        part_path(part, sizeof part, r);
        unlink(part);
    }
    if (m.missing) {
        ps_log_info("--trace: %d of %d ranks left no part next to %s (no --trace, or "
                    "another host)",
                    m.missing, nranks, tr.path);
    }
    return 0;
}

void ps_trace_stop(void)
{
    free(tr.ev);
    memset(&tr, 0, sizeof tr);
}
