/*
 * Unit tests for common/ps_cleanup and common/ps_signal.
 *
 * The registry: files go before folders, inner folders before outer ones,
 * forgotten paths stay, a full table and a long path are refused with a
 * message.  The signals, each in a forked child (a handler and a watchdog
 * are for the life of a process): SIGTERM removes the registered files at
 * once and is reported by ps_signal_stop_requested; a signal caught on
 * another thread still interrupts the installer's poll (EINTR); a process
 * that does not end within the grace is ended by the watchdog with status
 * 128 + the signal; and without ps_signal_install nothing is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_signal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char tmp[256];

static int group_setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/ps-sig-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmp) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(tmp); /* fails, and so the run, when a test left a file */
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_registry_order(void **state)
{
    (void)state;
    char outer[300], inner[320], a[340], b[340], kept[300];
    snprintf(outer, sizeof outer, "%s/outer", tmp);
    snprintf(inner, sizeof inner, "%s/inner", outer);
    snprintf(a, sizeof a, "%s/a.ipc", inner);
    snprintf(b, sizeof b, "%s/b", outer);
    snprintf(kept, sizeof kept, "%s/kept", tmp);
    assert_int_equal(mkdir(outer, 0700), 0);
    assert_int_equal(mkdir(inner, 0700), 0);
    touch(a);
    touch(b);
    touch(kept);
    /* Folders registered first, files last: the run must still empty
     * them before removing them, innermost first. */
    assert_int_equal(ps_cleanup_add_dir(outer), 0);
    assert_int_equal(ps_cleanup_add_dir(inner), 0);
    assert_int_equal(ps_cleanup_add_file(a), 0);
    assert_int_equal(ps_cleanup_add_file(kept), 0);
    assert_int_equal(ps_cleanup_add_file(b), 0);
    ps_cleanup_forget(kept); /* its owner took it over */
    ps_cleanup_forget("/no/such/path");
    assert_int_equal(ps_cleanup_count(), 4);
    ps_cleanup_run();
    assert_int_equal(ps_cleanup_count(), 0);
    assert_false(exists(a));
    assert_false(exists(b));
    assert_false(exists(inner));
    assert_false(exists(outer));
    assert_true(exists(kept));
    ps_cleanup_run(); /* nothing registered: nothing happens */
    assert_true(exists(kept));
    assert_int_equal(unlink(kept), 0);
}

static void test_registry_limits(void **state)
{
    (void)state;
    char path[PS_CLEANUP_PATH_MAX + 8];
    memset(path, 'x', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    assert_int_equal(ps_cleanup_add_file(path), PS_EINVAL);
    assert_int_equal(ps_cleanup_add_file(""), PS_EINVAL);
    assert_int_equal(ps_cleanup_add_dir(NULL), PS_EINVAL);
    for (int i = 0; i < PS_CLEANUP_MAX; i++) {
        snprintf(path, sizeof path, "%s/never-%d", tmp, i);
        assert_int_equal(ps_cleanup_add_file(path), 0);
    }
    assert_int_equal(ps_cleanup_add_file("/one/too/many"), PS_ENOMEM);
    assert_non_null(strstr(ps_error_msg(), "/one/too/many"));
    ps_cleanup_run(); /* unlinks files that do not exist: harmless */
    assert_int_equal(ps_cleanup_count(), 0);
}

/* Run fn in a child; its exit status (or 128 + the signal it died of). */
static int in_child(void (*fn)(void), double *seconds)
{
    double t0 = now();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *seconds = now() - t0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Child: exits 10 + the failed check's number, 0 when all hold. */
static char victim[300];

static void child_term_removes_files(void)
{
    touch(victim);
    if (ps_signal_install(60000) != 0 || ps_cleanup_add_file(victim) != 0) {
        _exit(11);
    }
    if (ps_signal_stop_requested() != 0) {
        _exit(12);
    }
    raise(SIGTERM); /* handled on this thread, before raise returns */
    if (ps_signal_stop_requested() != SIGTERM) {
        _exit(13);
    }
    if (exists(victim)) {
        _exit(14);
    }
    if (ps_signal_stopped() != PS_EINTR || strcmp(ps_error_msg(), "stopped by SIGTERM") != 0) {
        _exit(15);
    }
    _exit(0);
}

static void test_term_removes_files(void **state)
{
    (void)state;
    double s;
    snprintf(victim, sizeof victim, "%s/ps-1-0.ipc", tmp);
    assert_int_equal(in_child(child_term_removes_files, &s), 0);
    assert_false(exists(victim));
}

static void *send_sigint(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    pthread_kill(pthread_self(), SIGINT); /* caught here, not on the installer */
    return NULL;
}

static void child_other_thread(void)
{
    pthread_t t;
    if (ps_signal_install(60000) != 0 || pthread_create(&t, NULL, send_sigint, NULL) != 0) {
        _exit(11);
    }
    double t0 = now();
    int rc = poll(NULL, 0, 5000);
    int err = errno;
    pthread_join(t, NULL);
    if (rc != -1 || err != EINTR) {
        _exit(12); /* the wait ran on: the forward did not happen */
    }
    if (now() - t0 > 2.0 || ps_signal_stop_requested() != SIGINT) {
        _exit(13);
    }
    _exit(0);
}

static void test_other_thread_interrupts_installer(void **state)
{
    (void)state;
    double s;
    assert_int_equal(in_child(child_other_thread, &s), 0);
    assert_true(s < 3.0);
}

static void child_stuck(void)
{
    touch(victim);
    if (ps_signal_install(300) != 0) {
        _exit(11);
    }
    raise(SIGTERM);
    touch(victim); /* made again after the handler: the watchdog removes it */
    if (ps_cleanup_add_file(victim) != 0) {
        _exit(12);
    }
    for (;;) {
        pause(); /* a wait the program never leaves by itself */
    }
}

static void test_watchdog_ends_a_stuck_process(void **state)
{
    (void)state;
    double s;
    snprintf(victim, sizeof victim, "%s/ps-2-0.ipc", tmp);
    assert_int_equal(in_child(child_stuck, &s), 128 + SIGTERM);
    assert_true(s >= 0.25 && s < 3.0);
    assert_false(exists(victim));
}

static void child_uninstalled(void)
{
    if (ps_signal_install(300) != 0) {
        _exit(11);
    }
    ps_signal_uninstall(); /* the default action again: SIGTERM kills */
    raise(SIGTERM);
    _exit(12);
}

static void test_uninstall_restores_default(void **state)
{
    (void)state;
    double s;
    assert_int_equal(in_child(child_uninstalled, &s), 128 + SIGTERM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_order),
        cmocka_unit_test(test_registry_limits),
        cmocka_unit_test(test_term_removes_files),
        cmocka_unit_test(test_other_thread_interrupts_installer),
        cmocka_unit_test(test_watchdog_ends_a_stuck_process),
        cmocka_unit_test(test_uninstall_restores_default),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
