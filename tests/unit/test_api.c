/*
 * Unit tests for what libpsclient's ps_init reads from the caller before
 * any MPI call: ps_options_t by its struct_size, so that a program built
 * against an older (shorter) or newer (longer) ps.h is read correctly.
 * The calls that need a job are exercised by tests/integration/api_probe.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ps_api.h"

#include <string.h>

/* Room for a longer struct of a later ps.h. */
typedef struct {
    ps_options_t o;
    unsigned char later[16];
} newer_t;

static void test_null_means_defaults(void **state)
{
    (void)state;
    ps_options_t o;
    memset(&o, 0x5a, sizeof o);
    assert_int_equal(ps_api_options(NULL, &o), 0);
    assert_int_equal(o.struct_size, sizeof o);
    assert_null(o.name);
    assert_int_equal(o.timeout_s, 300);
    assert_int_equal(o.io_threads, PS_DEFAULT_IO_THREADS);
    assert_int_equal(o.streams, PS_DEFAULT_STREAMS);
    assert_int_equal(o.compress, PS_COMPRESS_NONE);
    assert_int_equal(o.quiet, 0);
    assert_int_equal(o.transport, PS_TRANSPORT_AUTO);
}

static void test_current_size(void **state)
{
    (void)state;
    ps_options_t in = PS_OPTIONS_INIT, o;
    in.name = "me";
    in.timeout_s = 7;
    in.streams = 3;
    in.compress = PS_COMPRESS_BF16;
    in.transport = PS_TRANSPORT_TCP;
    assert_int_equal(in.struct_size, sizeof in);
    assert_int_equal(ps_api_options(&in, &o), 0);
    assert_int_equal(o.transport, PS_TRANSPORT_TCP);
    assert_string_equal(o.name, "me");
    assert_int_equal(o.timeout_s, 7);
    assert_int_equal(o.streams, 3);
    assert_int_equal(o.compress, PS_COMPRESS_BF16);
    assert_int_equal(o.io_threads, PS_DEFAULT_IO_THREADS); /* 0: the default */
}

/* A caller compiled when ps_options_t ended before `streams` (as in API
 * version 1, before compress and streams were added): what lies beyond
 * its struct is not read, whatever it holds. */
static void test_older_shorter_struct(void **state)
{
    (void)state;
    newer_t buf;
    ps_options_t o;
    memset(&buf, 0xab, sizeof buf); /* garbage where the older struct ends */
    buf.o.struct_size = offsetof(ps_options_t, compress);
    buf.o.name = "old";
    buf.o.timeout_s = 9;
    buf.o.io_threads = 4;
    buf.o.quiet = 1;
    assert_int_equal(ps_api_options(&buf.o, &o), 0);
    assert_int_equal(o.struct_size, sizeof o);
    assert_string_equal(o.name, "old");
    assert_int_equal(o.timeout_s, 9);
    assert_int_equal(o.io_threads, 4);
    assert_int_equal(o.quiet, 1);
    assert_int_equal(o.compress, PS_COMPRESS_NONE);  /* not 0xabababab */
    assert_int_equal(o.streams, PS_DEFAULT_STREAMS); /* not 0xabababab */
    /* API 4's struct ended before `transport`: auto, not the garbage. */
    buf.o.struct_size = offsetof(ps_options_t, transport);
    buf.o.compress = PS_COMPRESS_FP16;
    buf.o.streams = 3;
    buf.o.signals = PS_SIGNALS_NONE;
    assert_int_equal(ps_api_options(&buf.o, &o), 0);
    assert_int_equal(o.streams, 3);
    assert_int_equal(o.transport, PS_TRANSPORT_AUTO);
    /* Only the size field: everything defaults. */
    buf.o.struct_size = sizeof(size_t);
    assert_int_equal(ps_api_options(&buf.o, &o), 0);
    assert_null(o.name);
    assert_int_equal(o.timeout_s, 300);
}

/* A caller of a later ps.h: fields this library does not know are fine
 * when unset, refused when set. */
static void test_newer_longer_struct(void **state)
{
    (void)state;
    newer_t buf;
    ps_options_t o;
    memset(&buf, 0, sizeof buf);
    buf.o.struct_size = sizeof buf;
    buf.o.streams = 5;
    assert_int_equal(ps_api_options(&buf.o, &o), 0);
    assert_int_equal(o.streams, 5);
    assert_int_equal(o.struct_size, sizeof o);
    buf.later[15] = 1;
    assert_int_equal(ps_api_options(&buf.o, &o), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "does not know"));
}

static void test_refused(void **state)
{
    (void)state;
    ps_options_t in = PS_OPTIONS_INIT, o;
    in.struct_size = 0; /* e.g. {.name = "x"} without PS_OPTIONS_INIT */
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "PS_OPTIONS_INIT"));
    in.struct_size = sizeof in;
    in.streams = PS_MAX_STREAMS + 1;
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "streams"));
    in.streams = 0;
    in.compress = 3;
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
    in.compress = 0;
    in.io_threads = 65;
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
    in.io_threads = 0;
    in.transport = PS_TRANSPORT_SHM; /* 3, the last one */
    assert_int_equal(ps_api_options(&in, &o), 0);
    in.transport = 4;
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
    assert_non_null(strstr(ps_error_msg(), "transport 4"));
    in.transport = -1;
    assert_int_equal(ps_api_options(&in, &o), PS_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_means_defaults),
        cmocka_unit_test(test_current_size),
        cmocka_unit_test(test_older_shorter_struct),
        cmocka_unit_test(test_newer_longer_struct),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
