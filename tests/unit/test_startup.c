/*
 * Unit tests for common/ps_startup: the start-up table both roles run.
 * The order itself is checked against the real binaries by every
 * integration test, and a skew by tests/integration/test_startup.sh; here,
 * the table's own promises: every step named, names unique (a skew message
 * must say which step), kinds from the enum, out-of-range lookups safe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "ps_startup.h"

#include <string.h>

static void test_every_step_named_once(void **state)
{
    (void)state;
    for (int s = 0; s < PS_STEP_COUNT; s++) {
        const ps_step_info_t *i = ps_step_info(s);
        assert_non_null(i);
        assert_non_null(i->name);
        assert_true(i->name[0] != '\0' && strlen(i->name) < 16);
        assert_non_null(i->what);
        assert_true(i->kind >= PS_STEP_AGREE && i->kind <= PS_STEP_BCAST_WORKER0);
        assert_string_equal(ps_step_name(s), i->name);
        for (int t = 0; t < s; t++) {
            assert_true(strcmp(ps_step_info(t)->name, i->name) != 0);
        }
    }
}

/* The sequence the protocol document promises (docs/protocol.md): the
 * exchange before anything needs an endpoint, settings before the workers
 * size their chunks, the plan before the servers' resume check (which
 * compares it), registration before the start step, done last. */
static void test_order_and_kinds(void **state)
{
    (void)state;
    assert_int_equal(PS_STEP_COUNT, 10);
    assert_int_equal(ps_step_info(PS_STEP_FLAGS)->kind, PS_STEP_AGREE);
    assert_int_equal(ps_step_info(PS_STEP_EXCHANGE)->kind, PS_STEP_EXCHANGE_ALL);
    assert_int_equal(ps_step_info(PS_STEP_SETTINGS)->kind, PS_STEP_BCAST_SERVER0);
    assert_int_equal(ps_step_info(PS_STEP_PLAN)->kind, PS_STEP_BCAST_WORKER0);
    assert_int_equal(ps_step_info(PS_STEP_START)->kind, PS_STEP_BCAST_SERVER0);
    assert_int_equal(ps_step_info(PS_STEP_DONE)->kind, PS_STEP_AGREE);
    assert_true(PS_STEP_FLAGS < PS_STEP_EXCHANGE && PS_STEP_EXCHANGE < PS_STEP_SETTINGS);
    assert_true(PS_STEP_PLAN < PS_STEP_RESUME && PS_STEP_RESUME < PS_STEP_REGISTER);
    assert_true(PS_STEP_REGISTER < PS_STEP_START && PS_STEP_START < PS_STEP_DONE);
    assert_int_equal(PS_STEP_DONE, PS_STEP_COUNT - 1);
}

static void test_out_of_range(void **state)
{
    (void)state;
    assert_null(ps_step_info(-1));
    assert_null(ps_step_info(PS_STEP_COUNT));
    assert_string_equal(ps_step_name(-1), "?");
    assert_string_equal(ps_step_name(PS_STEP_COUNT), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_step_named_once),
        cmocka_unit_test(test_order_and_kinds),
        cmocka_unit_test(test_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
