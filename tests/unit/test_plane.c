/*
 * Unit tests for common/ps_plane: the rule that both ends of a pair apply
 * (written out by hand below, case by case), the flag's values, and the
 * start-up line's text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "ps_plane.h"

#include <string.h>

static void test_parse(void **state)
{
    (void)state;
    ps_plane_t p = PS_PLANE_TCP;
    assert_int_equal(ps_plane_parse("auto", "--transport", &p), 0);
    assert_int_equal(p, PS_PLANE_AUTO);
    assert_int_equal(ps_plane_parse("ipc", "--transport", &p), 0);
    assert_int_equal(p, PS_PLANE_IPC);
    assert_int_equal(ps_plane_parse("tcp", "--transport", &p), 0);
    assert_int_equal(p, PS_PLANE_TCP);
    assert_int_equal(ps_plane_parse("shm", "--transport", &p), 0);
    assert_int_equal(p, PS_PLANE_SHM);
    const char *bad[] = {"SHM", "", "TCP", "ipc ", "tcp://x", "mem"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = PS_PLANE_IPC;
        assert_int_equal(ps_plane_parse(bad[i], "--transport", &p), PS_EINVAL);
        assert_int_equal(p, PS_PLANE_IPC); /* untouched */
        assert_non_null(strstr(ps_error_msg(), "--transport"));
        assert_non_null(strstr(ps_error_msg(), "want auto, shm, ipc or tcp"));
    }
    assert_int_equal(ps_plane_parse(NULL, "--transport", &p), PS_EINVAL);
    assert_string_equal(ps_plane_name(PS_PLANE_AUTO), "auto");
    assert_string_equal(ps_plane_name(PS_PLANE_IPC), "ipc");
    assert_string_equal(ps_plane_name(PS_PLANE_TCP), "tcp");
    assert_string_equal(ps_plane_name(PS_PLANE_SHM), "shm");
    assert_string_equal(ps_plane_name((ps_plane_t)7), "?");
    /* ps.h's PS_TRANSPORT_* values are these numbers: they must not move. */
    assert_int_equal(PS_PLANE_AUTO, 0);
    assert_int_equal(PS_PLANE_IPC, 1);
    assert_int_equal(PS_PLANE_TCP, 2);
    assert_int_equal(PS_PLANE_SHM, 3);
}

/* Every combination of the two wishes, on one host and on two: the
 * expected plane (or -1 for an error), from the rule in ps_plane.h. */
static void test_decide_table(void **state)
{
    (void)state;
    enum { A = PS_PLANE_AUTO, I = PS_PLANE_IPC, T = PS_PLANE_TCP, M = PS_PLANE_SHM, E = -1 };
    static const struct {
        int same, srv, wkr, want;
    } rows[] = {
        /* one host */
        {1, A, A, M},
        {1, A, M, M},
        {1, A, I, I},
        {1, A, T, T},
        {1, M, A, M},
        {1, M, M, M},
        {1, M, I, E},
        {1, M, T, E},
        {1, I, A, I},
        {1, I, M, E},
        {1, I, I, I},
        {1, I, T, E},
        {1, T, A, T},
        {1, T, M, E},
        {1, T, I, E},
        {1, T, T, T},
        /* two hosts */
        {0, A, A, T},
        {0, A, M, E},
        {0, A, I, E},
        {0, A, T, T},
        {0, M, A, E},
        {0, M, M, E},
        {0, M, I, E},
        {0, M, T, E},
        {0, I, A, E},
        {0, I, M, E},
        {0, I, I, E},
        {0, I, T, E},
        {0, T, A, T},
        {0, T, M, E},
        {0, T, I, E},
        {0, T, T, T},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        ps_plane_pair_t p = {.server = 1,
                             .worker = 4,
                             .server_host = "alpha",
                             .worker_host = rows[i].same ? "alpha" : "beta",
                             .srv = (ps_plane_t)rows[i].srv,
                             .wkr = (ps_plane_t)rows[i].wkr};
        ps_plane_t got = (ps_plane_t)99;
        int rv = ps_plane_decide(&p, &got);
        if (rows[i].want == E) {
            assert_int_equal(rv, PS_EINVAL);
            assert_int_equal(got, 99);
            /* The message names both ranks, so the operator knows whom to fix. */
            assert_non_null(strstr(ps_error_msg(), "server 1"));
            assert_non_null(strstr(ps_error_msg(), "worker 4"));
        } else {
            assert_int_equal(rv, 0);
            assert_int_equal((int)got, rows[i].want);
        }
    }
}

static void test_decide_messages(void **state)
{
    (void)state;
    ps_plane_t got;
    ps_plane_pair_t p = {.server = 0,
                         .worker = 2,
                         .server_host = "n1",
                         .worker_host = "n2",
                         .srv = PS_PLANE_AUTO,
                         .wkr = PS_PLANE_IPC};
    assert_int_equal(ps_plane_decide(&p, &got), PS_EINVAL);
    assert_string_equal(ps_error_msg(),
                        "worker 2 says --transport ipc, but server 0 runs on n1 and worker 2 on "
                        "n2: ipc reaches only ranks on one host (use auto)");
    p.worker_host = "n1";
    p.srv = PS_PLANE_TCP;
    assert_int_equal(ps_plane_decide(&p, &got), PS_EINVAL);
    assert_string_equal(ps_error_msg(),
                        "server 0 says --transport tcp and worker 2 says --transport ipc (both "
                        "on n1): give them the same, or auto to one of them");
    p.srv = PS_PLANE_SHM;
    p.worker_host = "n2";
    p.wkr = PS_PLANE_AUTO;
    assert_int_equal(ps_plane_decide(&p, &got), PS_EINVAL);
    assert_string_equal(ps_error_msg(),
                        "server 0 says --transport shm, but server 0 runs on n1 and worker 2 on "
                        "n2: shm reaches only ranks on one host (use auto)");
}

static void test_describe(void **state)
{
    (void)state;
    char s[256];
    ps_plane_count_t c = {.ipc = 2, .tcp_local = 0, .tcp_remote = 1};
    ps_plane_describe(&c, 1, s, sizeof s);
    assert_string_equal(s, "ipc (peer credentials) to 2 local workers, tcp+CurveZMQ to 1 remote "
                           "worker");
    c = (ps_plane_count_t){.ipc = 1};
    ps_plane_describe(&c, 1, s, sizeof s);
    assert_string_equal(s, "ipc (peer credentials) to 1 local worker");
    c = (ps_plane_count_t){.tcp_local = 1, .tcp_remote = 3};
    ps_plane_describe(&c, 1, s, sizeof s);
    assert_string_equal(s, "tcp+CurveZMQ to 1 local and 3 remote workers");
    c = (ps_plane_count_t){.ipc = 3, .tcp_remote = 2};
    ps_plane_describe(&c, 0, s, sizeof s);
    assert_string_equal(s, "ipc (no authentication) to 3 local workers, tcp (no authentication) "
                           "to 2 remote workers");
    c = (ps_plane_count_t){.shm = 2, .tcp_remote = 1};
    ps_plane_describe(&c, 1, s, sizeof s);
    assert_string_equal(s, "shm + ipc (peer credentials) to 2 local workers, tcp+CurveZMQ to 1 "
                           "remote worker");
    c = (ps_plane_count_t){.shm = 1, .ipc = 1};
    ps_plane_describe(&c, 0, s, sizeof s);
    assert_string_equal(s, "shm + ipc (no authentication) to 1 local worker, ipc (no "
                           "authentication) to 1 local worker");
    c = (ps_plane_count_t){0};
    ps_plane_describe(&c, 1, s, sizeof s);
    assert_string_equal(s, "no workers");
    /* A short buffer is cut, never overrun. */
    char small[10];
    c = (ps_plane_count_t){.ipc = 2, .tcp_remote = 1};
    ps_plane_describe(&c, 1, small, sizeof small);
    assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_decide_table),
        cmocka_unit_test(test_decide_messages),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
