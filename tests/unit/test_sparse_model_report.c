/*
 * Unit tests for the metrics of the sparse models in worker/wkr_report:
 * test_logloss and test_auc appear (after test_acc) only for epochs that
 * have them, an undefined AUC is written as null, and the other models'
 * lines are unchanged.  Each line is parsed back with jansson.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "unit_tmp.h"
#include "wkr_report.h"

/* Writes one epoch record and returns the metrics line parsed. */
static json_t *one_line(const wkr_epoch_rec_t *e)
{
    char dir[256];
    assert_int_equal(ut_mkdtemp(dir, sizeof dir, "test_sparse_model_report"), 0);
    const char *path = ut_in_dir(dir, "m.jsonl");
    wkr_report_t r;
    assert_int_equal(wkr_report_init(&r, "none", path), 0);
    assert_int_equal(wkr_report_epoch(&r, e), 0);
    wkr_report_fini(&r);
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (j == NULL) {
        fail_msg("metrics line is not JSON: %s", err.text);
    }
    ut_rm_tree(dir);
    return j;
}

static void test_auc_fields(void **state)
{
    (void)state;
    wkr_epoch_rec_t e = {.epoch = 1,
                         .epochs = 2,
                         .step = 10,
                         .train_loss = 0.6,
                         .has_test = 1,
                         .test_loss = 0.55,
                         .test_acc = 0.7,
                         .has_auc = 1,
                         .test_auc = 0.8125};
    json_t *j = one_line(&e);
    assert_true(fabs(json_real_value(json_object_get(j, "test_logloss")) - 0.55) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(j, "test_auc")) - 0.8125) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(j, "test_loss")) - 0.55) < 1e-9);
    json_decref(j);
    /* One class in the test set: AUC undefined, written as null. */
    e.test_auc = NAN;
    j = one_line(&e);
    assert_true(json_is_null(json_object_get(j, "test_auc")));
    json_decref(j);
}

static void test_no_auc_for_other_models(void **state)
{
    (void)state;
    wkr_epoch_rec_t e = {.epoch = 1,
                         .epochs = 1,
                         .step = 5,
                         .train_loss = 1.0,
                         .has_test = 1,
                         .test_loss = 0.9,
                         .test_acc = 0.5};
    json_t *j = one_line(&e);
    assert_non_null(json_object_get(j, "test_acc"));
    assert_null(json_object_get(j, "test_logloss"));
    assert_null(json_object_get(j, "test_auc"));
    json_decref(j);
    /* An AUC without a test set (a rank without one) is not reported. */
    e.has_test = 0;
    e.has_auc = 1;
    e.test_auc = 0.7;
    j = one_line(&e);
    assert_null(json_object_get(j, "test_auc"));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_fields),
        cmocka_unit_test(test_no_auc_for_other_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
