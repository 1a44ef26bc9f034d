#include "ps_signal.h"

#include "ps_cleanup.h"
#include "ps_err.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const int SIGNALS[2] = {SIGINT, SIGTERM};

static struct {
    int installed;
    pthread_t main_thread; /* the installer: its waits are interrupted */
    pthread_t watchdog;
    sem_t wake;
    int grace_ms;
    atomic_int quit; /* uninstall: the watchdog ends without a stop */
    struct sigaction old[2];
} sig;

/* The first stop signal.  An atomic, not a volatile sig_atomic_t: the
 * handler can run in two threads at once (the thread the kernel picked,
 * then the installer, which that one re-signals), and exactly one of them
 * must run the cleanup and wake the watchdog.  Lock-free atomics are
 * async-signal-safe. */
static atomic_int stop_sig;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag must be lock-free in a handler");

/* Only async-signal-safe calls: sem_post, pthread_kill, unlink/rmdir. */
static void on_signal(int s)
{
    int saved = errno;
    int none = 0;
    if (atomic_compare_exchange_strong(&stop_sig, &none, s)) {
        ps_cleanup_run();
        sem_post(&sig.wake);
    }
    if (!pthread_equal(pthread_self(), sig.main_thread)) {
        pthread_kill(sig.main_thread, s); /* so its poll returns EINTR */
    }
    errno = saved;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The process did not end in order within the grace: end it now. */
static void *watchdog(void *arg)
{
    (void)arg;
    while (sem_wait(&sig.wake) != 0) {
    }
    if (atomic_load(&sig.quit)) {
        return NULL;
    }
    sleep_ms(sig.grace_ms);
    int s = atomic_load(&stop_sig);
    char line[256];
    int n = snprintf(line, sizeof line,
                     "%s: error: stopped by %s, but not within %d ms: exiting "
                     "now (status %d)\n",
                     ps_log_name(), ps_signal_name(s), sig.grace_ms, 128 + s);
    ps_cleanup_run();
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nothing left to tell */
    }
    _exit(128 + s);
}

/* The watchdog starts with every signal blocked, so it never runs a
 * handler itself. */
static int start_watchdog(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rv = pthread_create(&sig.watchdog, NULL, watchdog, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        ps_error_set("signals: cannot start the watchdog thread: %s", strerror(rv));
        return PS_EINVAL;
    }
    return 0;
}

/* Ends the watchdog of a process that is not stopping. */
static void stop_watchdog(void)
{
    atomic_store(&sig.quit, 1);
    sem_post(&sig.wake);
    pthread_join(sig.watchdog, NULL);
    sem_destroy(&sig.wake);
}

int ps_signal_install(int grace_ms)
{
    if (sig.installed) {
        return 0;
    }
    sig.main_thread = pthread_self();
    sig.grace_ms = grace_ms > 0 ? grace_ms : PS_SIGNAL_GRACE_MS;
    atomic_store(&sig.quit, 0);
    if (sem_init(&sig.wake, 0, 0) != 0) {
        ps_error_set("signals: sem_init: %s", strerror(errno));
        return PS_EINVAL;
    }
    int rv = start_watchdog();
    if (rv != 0) {
        sem_destroy(&sig.wake);
        return rv;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* SA_RESTART spares file reads and writes a spurious EINTR; poll (the
     * data plane's wait) and nanosleep are interrupted regardless. */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) {
        if (sigaction(SIGNALS[i], &sa, &sig.old[i]) != 0) {
            ps_error_set("signals: sigaction(%s): %s", ps_signal_name(SIGNALS[i]), strerror(errno));
            for (int j = 0; j < i; j++) {
                sigaction(SIGNALS[j], &sig.old[j], NULL);
            }
            stop_watchdog();
            return PS_EINVAL;
        }
    }
    sig.installed = 1;
    return 0;
}

void ps_signal_uninstall(void)
{
    if (!sig.installed) {
        return;
    }
    for (int i = 0; i < 2; i++) {
        sigaction(SIGNALS[i], &sig.old[i], NULL);
    }
    sig.installed = 0;
    if (atomic_load(&stop_sig)) {
        return; /* the watchdog is counting down: the process is ending */
    }
    stop_watchdog();
}

int ps_signal_stop_requested(void)
{
    return atomic_load(&stop_sig);
}

int ps_signal_stopped(void)
{
    ps_error_set("stopped by %s", ps_signal_name(atomic_load(&stop_sig)));
    return PS_EINTR;
}

const char *ps_signal_name(int s)
{
    static char other[32];
    switch (s) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    default: snprintf(other, sizeof other, "signal %d", s); return other;
    }
}
