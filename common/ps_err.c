#include "ps_err.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static _Thread_local char err_detail[512];
static char log_name[64] = "ps";
static int log_level = 1;

const char *ps_strerror(int rv)
{
    switch (rv) {
    case PS_OK: return "success";
    case PS_EINVAL: return "invalid argument";
    case PS_ENOMEM: return "out of memory or over a size limit";
    case PS_EIO: return "I/O error";
    case PS_EFORMAT: return "malformed input";
    case PS_EPROTO: return "protocol error";
    case PS_ERANGE: return "value out of range";
    case PS_ETIMEDOUT: return "timed out";
    case PS_ENOENT: return "not found";
    case PS_EMPI: return "MPI error";
    case PS_EZMQ: return "zmq error";
    case PS_ESTATE: return "invalid state";
    case PS_EAGAIN: return "try again";
    case PS_EINTR: return "stopped by a signal";
    default: return "unknown error";
    }
}

void ps_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_detail, sizeof err_detail, fmt, ap);
    va_end(ap);
}

const char *ps_error_msg(void)
{
    return err_detail[0] ? err_detail : "no detail recorded";
}

void ps_error_clear(void)
{
    err_detail[0] = '\0';
}

void ps_log_set_name(const char *role, int rank)
{
    if (rank >= 0) {
        snprintf(log_name, sizeof log_name, "%s[%d]", role, rank);
    } else {
        snprintf(log_name, sizeof log_name, "%s", role);
    }
}

const char *ps_log_name(void)
{
    return log_name;
}

void ps_log_set_level(int level)
{
    log_level = level;
}

static void vlog(const char *tag, const char *fmt, va_list ap)
{
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    /* One fprintf per line so lines from several ranks do not interleave. */
    fprintf(stderr, "%s: %s%s\n", log_name, tag, line);
}

void ps_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("error: ", fmt, ap);
    va_end(ap);
}

void ps_log_info(const char *fmt, ...)
{
    if (log_level < 1) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
}

void ps_log_debug(const char *fmt, ...)
{
    if (log_level < 2) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vlog("debug: ", fmt, ap);
    va_end(ap);
}

void ps_log_ratelimited(ps_ratelimit_t *rl, const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ts.tv_sec == rl->last_sec) {
        rl->dropped++;
        return;
    }
    rl->last_sec = ts.tv_sec;
    char line[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (rl->dropped) {
        fprintf(stderr, "%s: warning: %s (%lu similar lines suppressed)\n", log_name, line,
                rl->dropped);
    } else {
        fprintf(stderr, "%s: warning: %s\n", log_name, line);
    }
    rl->dropped = 0;
}

void ps_log_peak_memory(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        ps_log_info("peak memory %.1f MiB", (double)ru.ru_maxrss / 1024.0); /* KiB on Linux */
    }
}
