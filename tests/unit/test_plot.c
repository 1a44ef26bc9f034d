/*
 * Unit tests for worker/wkr_plot's metrics reader (wkr_plot_columns, the
 * columns gnuplot reads) and for the metrics lines worker/wkr_report
 * writes: each line is JSON (a diverged loss is null, not "nan"), and what
 * the reader makes of lines is compared with columns written out by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "ps_err.h"
#include "wkr_plot.h"
#include "wkr_report.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_path[64];

static int setup(void **state)
{
    (void)state;
    strcpy(g_path, "/tmp/ps-plot-test-XXXXXX");
    int fd = mkstemp(g_path);
    if (fd < 0) {
        return -1;
    }
    close(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return unlink(g_path);
}

static void put_text(const char *text)
{
    FILE *f = fopen(g_path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* wkr_plot_columns of g_path into a string (caller frees). */
static char *columns(int *rv, int *has_test)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    *has_test = -1;
    *rv = wkr_plot_columns(g_path, out, has_test);
    assert_int_equal(fclose(out), 0);
    return buf;
}

static void test_columns_from_lines(void **state)
{
    (void)state;
    char pad[6000];
    memset(pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    char *text = NULL;
    size_t tlen = 0;
    FILE *t = open_memstream(&text, &tlen);
    assert_non_null(t);
    fputs("{\"epoch\":1,\"step\":10,\"train_loss\":2.5,\"test_loss\":2.25,\"test_acc\":0.5,"
          "\"lr\":0.1,\"elapsed_s\":1.5}\n",
          t);
    /* Any key order and whitespace; no test set on this line. */
    fputs("  { \"elapsed_s\" : 3 , \"train_loss\":1e-3,\t\"step\": 20 }\r\n", t);
    /* A diverged run: null losses are gnuplot's missing value. */
    fputs("{\"step\":30,\"elapsed_s\":4.5,\"train_loss\":null,\"test_loss\":null,"
          "\"test_acc\":0.125}\n",
          t);
    /* The top-level "step", not the first "step" in the text. */
    fputs("{\"prev\":{\"step\":99,\"train_loss\":7},\"step\":40,\"elapsed_s\":5,"
          "\"train_loss\":0.25}\n",
          t);
    fputs("\n", t);                                                  /* blank: ignored */
    fputs("epoch 1 loss 0.3\n", t);                                  /* not JSON */
    fputs("{\"step\":50,\"elapsed_s\":6,\"train_loss\":nan}\n", t);  /* not JSON */
    fputs("[1,2]\n", t);                                             /* not an object */
    fputs("{\"elapsed_s\":6,\"train_loss\":1}\n", t);                /* no step */
    fputs("{\"step\":\"7\",\"elapsed_s\":6,\"train_loss\":1}\n", t); /* a string */
    /* Longer than any fixed line buffer. */
    fprintf(t, "{\"step\":60,\"elapsed_s\":7,\"train_loss\":0.5,\"note\":\"%s\"}", pad);
    assert_int_equal(fclose(t), 0);
    put_text(text);
    free(text);

    int rv, has_test;
    char *got = columns(&rv, &has_test);
    assert_int_equal(rv, 0);
    assert_int_equal(has_test, 1);
    assert_string_equal(got, "10 1.5 2.5 2.25 0.5\n"
                             "20 3 0.001 NaN NaN\n"
                             "30 4.5 NaN NaN 0.125\n"
                             "40 5 0.25 NaN NaN\n"
                             "60 7 0.5 NaN NaN\n");
    free(got);
}

static void test_no_test_set(void **state)
{
    (void)state;
    /* test_loss without test_acc is not a test point. */
    put_text("{\"step\":1,\"elapsed_s\":0.5,\"train_loss\":3,\"test_loss\":2}\n");
    int rv, has_test;
    char *got = columns(&rv, &has_test);
    assert_int_equal(rv, 0);
    assert_int_equal(has_test, 0);
    assert_string_equal(got, "1 0.5 3 NaN NaN\n");
    free(got);
}

static void test_no_metrics_lines(void **state)
{
    (void)state;
    put_text("label,f0,f1\n1,0.5,0.25\n");
    int rv, has_test;
    ps_error_clear();
    char *got = columns(&rv, &has_test);
    assert_int_equal(rv, PS_EFORMAT);
    assert_non_null(strstr(ps_error_msg(), "no metrics lines"));
    assert_non_null(strstr(ps_error_msg(), g_path));
    assert_string_equal(got, "");
    free(got);
    put_text("");
    got = columns(&rv, &has_test);
    assert_int_equal(rv, PS_EFORMAT);
    free(got);

    FILE *out = fopen("/dev/null", "w");
    assert_non_null(out);
    assert_int_equal(wkr_plot_columns("/nonexistent/metrics.jsonl", out, &has_test), PS_EIO);
    assert_non_null(strstr(ps_error_msg(), "/nonexistent/metrics.jsonl"));
    fclose(out);
}

/* The metrics writer's lines are JSON, a non-finite loss null, and the
 * reader draws them. */
static void test_report_lines_are_json(void **state)
{
    (void)state;
    wkr_report_t r;
    assert_int_equal(wkr_report_init(&r, "none", g_path), 0);
    wkr_epoch_rec_t e = {.epoch = 1,
                         .epochs = 2,
                         .step = 5,
                         .train_loss = 1.5,
                         .has_test = 1,
                         .test_loss = 1.25,
                         .test_acc = 0.75,
                         .elapsed_s = 2,
                         .lr = 0.1};
    assert_int_equal(wkr_report_epoch(&r, &e), 0);
    e.epoch = 2, e.step = 10, e.train_loss = NAN, e.test_loss = INFINITY, e.elapsed_s = 4;
    assert_int_equal(wkr_report_epoch(&r, &e), 0);
    wkr_report_fini(&r);

    FILE *f = fopen(g_path, "r");
    assert_non_null(f);
    char line[2048];
    const double want_loss[2] = {1.5, NAN}, want_test[2] = {1.25, NAN};
    for (int i = 0; i < 2; i++) {
        assert_non_null(fgets(line, sizeof line, f));
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (o == NULL) {
            fail_msg("line %d is not JSON (%s): %s", i + 1, err.text, line);
        }
        json_t *tl = json_object_get(o, "train_loss"), *te = json_object_get(o, "test_loss");
        if (isnan(want_loss[i])) {
            assert_true(json_is_null(tl) && json_is_null(te));
        } else {
            assert_true(json_real_value(tl) == want_loss[i]);
            assert_true(json_real_value(te) == want_test[i]);
        }
        assert_true(json_number_value(json_object_get(o, "test_acc")) == 0.75);
        json_decref(o);
    }
    assert_null(fgets(line, sizeof line, f));
    fclose(f);

    int rv, has_test;
    char *got = columns(&rv, &has_test);
    assert_int_equal(rv, 0);
    assert_string_equal(got, "5 2 1.5 1.25 0.75\n10 4 NaN NaN 0.75\n");
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_columns_from_lines),
        cmocka_unit_test(test_no_test_set),
        cmocka_unit_test(test_no_metrics_lines),
        cmocka_unit_test(test_report_lines_are_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
