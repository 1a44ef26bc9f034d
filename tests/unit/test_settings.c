/*
 * Unit tests for server/srv_settings: which checkpoint settings a run may
 * resume, and what the refusal says.  The settings strings are written by
 * hand in describe_settings' format (server/srv_main.c), the expected
 * messages from the rule in srv_settings.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "srv_settings.h"

#include <stdio.h>
#include <string.h>

/* Settings of a run: lr, the schedule, the mode and total_steps vary. */
static void settings_mode(char *out, size_t cap, const char *lr, const char *sched,
                          const char *mode, unsigned long long total)
{
    snprintf(out, cap,
             "lr=%s;momentum=0.90000000000000002;dampening=0;nesterov=1;weight_decay=0;"
             "form=torch;maximize=0;clip=0;decoupled=0;schedule=%s;mode=%s;nonfinite=abort;"
             "steps_per_epoch=12;total_steps=%llu",
             lr, sched, mode, total);
}

static void settings(char *out, size_t cap, const char *lr, const char *sched,
                     unsigned long long total)
{
    settings_mode(out, cap, lr, sched, "sync", total);
}

static void test_same_settings(void **state)
{
    (void)state;
    char a[600], why[400];
    settings(a, sizeof a, "0.01", "cosine", 36);
    assert_int_equal(srv_settings_check_resume(a, a, 24, why, sizeof why), 0);
    assert_string_equal(why, "");
}

static void test_names_what_differs(void **state)
{
    (void)state;
    char a[600], b[600], why[400];
    settings(a, sizeof a, "0.01", "constant", 36);
    settings_mode(b, sizeof b, "0.5", "constant", "ssp", 36);
    assert_int_equal(srv_settings_check_resume(a, b, 24, why, sizeof why), PS_EINVAL);
    assert_string_equal(why, "lr (checkpoint 0.01, this run 0.5); "
                             "mode (checkpoint sync, this run ssp)");
}

static void test_longer_run_constant_and_step(void **state)
{
    (void)state;
    char a[600], b[600], why[400];
    const char *free_len[] = {"constant", "step:2,4:0.1", "constant;warmup=5"};
    for (int i = 0; i < 3; i++) {
        settings(a, sizeof a, "0.01", free_len[i], 36);
        settings(b, sizeof b, "0.01", free_len[i], 60);
        assert_int_equal(srv_settings_check_resume(a, b, 36, why, sizeof why), 0);
        /* Shorter is fine too, while the checkpoint is not past the end. */
        settings(b, sizeof b, "0.01", free_len[i], 30);
        assert_int_equal(srv_settings_check_resume(a, b, 24, why, sizeof why), 0);
        assert_int_equal(srv_settings_check_resume(a, b, 36, why, sizeof why), PS_EINVAL);
        assert_string_equal(why, "total_steps (this run's 30 is before the checkpoint's step 36)");
    }
}

static void test_longer_run_cosine_refused(void **state)
{
    (void)state;
    char a[600], b[600], why[400];
    settings(a, sizeof a, "0.01", "cosine", 36);
    settings(b, sizeof b, "0.01", "cosine", 60);
    assert_int_equal(srv_settings_check_resume(a, b, 36, why, sizeof why), PS_EINVAL);
    assert_string_equal(why, "total_steps (checkpoint 36, this run 60: the cosine schedule "
                             "depends on the run's length, so a run of another length is "
                             "another trajectory)");
}

static void test_keys_only_on_one_side(void **state)
{
    (void)state;
    char why[400];
    assert_int_equal(srv_settings_check_resume("lr=1;old=2", "lr=1;new=3", 0, why, sizeof why),
                     PS_EINVAL);
    assert_string_equal(why, "old (checkpoint 2, this run absent); "
                             "new (checkpoint absent, this run 3)");
    /* The warm-up inside the schedule's value reads as a key of its own. */
    assert_int_equal(srv_settings_check_resume("schedule=constant;warmup=5;total_steps=9",
                                               "schedule=constant;total_steps=9", 0, why,
                                               sizeof why),
                     PS_EINVAL);
    assert_string_equal(why, "warmup (checkpoint 5, this run absent)");
}

static void test_long_message_is_cut(void **state)
{
    (void)state;
    char a[600], b[600], why[40];
    settings(a, sizeof a, "0.01", "cosine", 36);
    settings(b, sizeof b, "0.02", "step:1:0.5", 48);
    assert_int_equal(srv_settings_check_resume(a, b, 12, why, sizeof why), PS_EINVAL);
    assert_int_equal(strlen(why), sizeof why - 1);
    assert_string_equal(why + sizeof why - 4, "...");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_settings),
        cmocka_unit_test(test_names_what_differs),
        cmocka_unit_test(test_longer_run_constant_and_step),
        cmocka_unit_test(test_longer_run_cosine_refused),
        cmocka_unit_test(test_keys_only_on_one_side),
        cmocka_unit_test(test_long_message_is_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
