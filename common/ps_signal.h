/*
 * ps_signal: SIGINT and SIGTERM as a request to stop.
 *
 * Nothing is installed unless the program asks: ps-server and ps-worker
 * call ps_signal_install; libpsclient does only when the caller sets
 * ps_options_t.signals (a library must not take a program's signals
 * behind its back).
 *
 * On the first SIGINT or SIGTERM the handler
 *   - records it: ps_signal_stop_requested() returns the signal number;
 *   - removes the files registered with ps_cleanup at once, since a
 *     launcher may follow with SIGKILL (Open MPI's mpirun sends SIGTERM to
 *     every rank 1 s after it got SIGINT or SIGTERM itself, then SIGKILL
 *     1 s later: --mca odls_base_sigkill_timeout);
 *   - makes the installing thread's blocking call return with EINTR (a
 *     signal caught on another thread is forwarded to it), so the data
 *     plane's wait (ps_tp_recv) returns PS_EINTR and the program stops in
 *     order: servers at the next message, workers between steps;
 *   - wakes a watchdog thread that, if the process has not ended within
 *     grace_ms, removes the registered files again and ends it with exit
 *     status 128 + the signal number: the way out of waits that no signal
 *     interrupts (an MPI collective whose peers are gone).
 * Later signals only repeat the forwarding.  Handlers are installed with
 * SA_RESTART, so file I/O is not disturbed: poll(2), under zmq_poll, is
 * interrupted regardless (signal(7)).
 */
#ifndef PS_SIGNAL_H
#define PS_SIGNAL_H

#define PS_SIGNAL_GRACE_MS 5000 /* the programs' watchdog */

/* Install the handlers for SIGINT and SIGTERM and start the watchdog;
 * the calling thread is the one whose waits are interrupted.  A second
 * call does nothing.  PS_EINVAL with a message when sigaction or the
 * thread fails. */
int ps_signal_install(int grace_ms);
/* Put back the handlers found at install and end the watchdog (unless a
 * stop was requested: then the process is ending anyway).  Safe without
 * install. */
void ps_signal_uninstall(void);
/* 0, or the signal that asked to stop. */
int ps_signal_stop_requested(void);
/* PS_EINTR with the message "stopped by SIGTERM" (or the signal's name). */
int ps_signal_stopped(void);
/* "SIGINT", "SIGTERM", else "signal N" (static text). */
const char *ps_signal_name(int sig);

#endif
