/*
 * ps_err: error codes, the last error's detail message, and logging.
 *
 * Contract: every fallible function in the project returns int, 0 on
 * success or a negative PS_E* code.  A function that fails because of bad
 * input (a file, a flag, a network peer) also records a one-line, human
 * readable detail with ps_error_set(); callers print ps_error_msg() and
 * never have to guess what went wrong.  The detail buffer is thread-local,
 * so zmq I/O threads and the main thread do not overwrite each other.
 *
 * Logging goes to stderr, one line per call, prefixed with the process's
 * role and rank ("ps-server[0]: ").  ps_log_ratelimited() drops lines that
 * come faster than one per second per call site (for hostile peers).
 */
#ifndef PS_ERR_H
#define PS_ERR_H

#include <stdarg.h>

/* worker/ps.h repeats these for users: a new code goes there too, and into
 * the compile-time check at the top of worker/ps_api.c.  Included after
 * ps.h, this header uses ps.h's. */
#ifndef PS_H_ERROR_CODES
enum {
    PS_OK = 0,
    PS_EINVAL = -1,  /* bad argument, flag or value */
    PS_ENOMEM = -2,  /* allocation failed or size over a limit */
    PS_EIO = -3,     /* file or socket I/O failed */
    PS_EFORMAT = -4, /* malformed file content */
    PS_EPROTO = -5,  /* malformed or unexpected message */
    PS_ERANGE = -6,  /* value out of range (index, label, offset) */
    PS_ETIMEDOUT = -7,
    PS_ENOENT = -8,  /* file or name not found */
    PS_EMPI = -9,    /* an MPI call failed */
    PS_EZMQ = -10,   /* a zmq call failed */
    PS_ESTATE = -11, /* call not valid in the current state */
    PS_EAGAIN = -12, /* nothing available now; try again */
    PS_EINTR = -13,  /* stopped by SIGINT/SIGTERM (ps_signal) */
};
#endif

/* Static text for a PS_E* code; never NULL. */
const char *ps_strerror(int rv);

/* Record the detail of the current error (printf-style); returns nothing so
 * callers write `ps_error_set(...); return PS_EFORMAT;`. */
void ps_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The last detail recorded on this thread, or "no detail recorded" when
 * none was set; never NULL.  ps_error_clear() empties it. */
const char *ps_error_msg(void);
void ps_error_clear(void);

/* Name this process in log lines: ps_log_set_name("ps-server", 0). */
void ps_log_set_name(const char *role, int rank);
/* The prefix of this process's log lines ("ps-server[0]"). */
const char *ps_log_name(void);
/* Verbosity: 0 errors only, 1 info (default), 2 debug. */
void ps_log_set_level(int level);

void ps_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ps_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ps_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "peak memory N MiB" (this process's maximum resident set) at info level. */
void ps_log_peak_memory(void);

/* At most one line per second per limiter (a static ps_ratelimit_t at the
 * call site, zero-initialised); lines dropped in between are counted into
 * the next one. */
typedef struct {
    long last_sec;
    unsigned long dropped;
} ps_ratelimit_t;
void ps_log_ratelimited(ps_ratelimit_t *rl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
