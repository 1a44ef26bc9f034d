#include "wkr_plot.h"

#include "ps_cleanup.h"
#include "ps_err.h"
#include "ps_tmp.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The number `key` of a metrics object: 1 with its value, 1 with NaN for
 * null (the metrics writer's non-finite loss), 0 when absent or not a
 * number. */
static int metric(json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    *out = json_is_number(v) ? json_number_value(v) : NAN;
    return json_is_number(v) || json_is_null(v);
}

/* A value for gnuplot: "NaN" (its missing value) unless finite; then
 * `end`. */
static void put_value(FILE *out, const char *fmt, double v, char end)
{
    if (isfinite(v)) {
        fprintf(out, fmt, v);
    } else {
        fputs("NaN", out);
    }
    fputc(end, out);
}

/* One line: 1 and a row written when it is a metrics object (step,
 * elapsed_s and train_loss; test_loss and test_acc when both are there). */
static int put_row(const char *line, size_t len, FILE *out, int *has_test)
{
    double step, t, loss, tl, acc;
    json_t *o = json_loadb(line, len, 0, NULL);
    int ok = json_is_object(o) && metric(o, "step", &step) && isfinite(step) &&
             metric(o, "elapsed_s", &t) && metric(o, "train_loss", &loss);
    int test = ok && metric(o, "test_loss", &tl) && metric(o, "test_acc", &acc);
    json_decref(o);
    if (!ok) {
        return 0;
    }
    *has_test |= test;
    fprintf(out, "%.0f ", step);
    put_value(out, "%.6g", t, ' ');
    put_value(out, "%.8g", loss, ' ');
    put_value(out, "%.8g", test ? tl : NAN, ' ');
    put_value(out, "%.6g", test ? acc : NAN, '\n');
    return 1;
}

int wkr_plot_columns(const char *metrics_path, FILE *out, int *has_test)
{
    FILE *in = fopen(metrics_path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rows = 0, lineno = 0, skipped = 0, first_skipped = 0;
    if (!in) {
        ps_error_set("--plot: cannot read %s: %s", metrics_path, strerror(errno));
        return PS_EIO;
    }
    *has_test = 0;
    while ((len = getline(&line, &cap, in)) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) {
            continue; /* blank */
        }
        if (put_row(line, (size_t)len, out, has_test)) {
            rows++;
        } else if (skipped++ == 0) {
            first_skipped = lineno;
        }
    }
    free(line);
    fclose(in);
    if (rows == 0) {
        ps_error_set("--plot: %s has no metrics lines (JSON objects with step, elapsed_s, "
                     "train_loss)",
                     metrics_path);
        return PS_EFORMAT;
    }
    if (skipped > 0) {
        ps_log_info("--plot: %s: %d lines are not metrics lines and were skipped (the first "
                    "is line %d)",
                    metrics_path, skipped, first_skipped);
    }
    return 0;
}

static void write_script(FILE *g, const char *dat, const char *png, int has_test)
{
    fprintf(g,
            "set terminal pngcairo size 1200,800 font ',10'\n"
            "set output '%s'\nset datafile missing 'NaN'\nset grid\nset key top right\n"
            "set multiplot layout 2,2 title 'ps training run'\n",
            png);
    const char *x[2][2] = {{"1", "step"}, {"2", "wall time (s)"}};
    for (int i = 0; i < 2; i++) {
        fprintf(g, "set xlabel '%s'\nset ylabel 'loss'\n", x[i][1]);
        fprintf(g, "plot '%s' using %s:3 with linespoints title 'train loss'%s", dat, x[i][0],
                has_test ? "" : "\n");
        if (has_test) {
            fprintf(g, ", '' using %s:4 with linespoints title 'test loss'\n", x[i][0]);
        }
    }
    fprintf(g, "set key bottom right\n");
    for (int i = 0; i < 2; i++) {
        fprintf(g, "set xlabel '%s'\nset ylabel 'test accuracy'\n", x[i][1]);
        if (has_test) {
            fprintf(g, "plot '%s' using %s:5 with linespoints title 'test accuracy'\n", dat,
                    x[i][0]);
        } else {
            fprintf(g, "set label 1 'no test set' at graph 0.4,0.5\nplot NaN notitle\n"
                       "unset label 1\n");
        }
    }
    fprintf(g, "unset multiplot\n");
}

int wkr_plot_metrics(const char *metrics_path, const char *png_path)
{
    char dat[4200];
    int fd, has_test = 0, rv = ps_tmp_create(dat, sizeof dat, "ps-plot", ".dat", &fd);
    if (rv != 0) {
        return rv;
    }
    ps_cleanup_add_file(dat); /* gone even if a signal ends the process meanwhile */
    FILE *f = strchr(dat, '\'') ? NULL : fdopen(fd, "w");
    if (!f) {
        /* gnuplot reads the name inside '...', which cannot hold a quote. */
        ps_error_set(strchr(dat, '\'') ? "--plot: TMPDIR %s has a quote (') gnuplot cannot read"
                                       : "--plot: cannot open %s: %s",
                     strchr(dat, '\'') ? ps_tmp_dir() : dat, strerror(errno));
        close(fd);
        unlink(dat);
        ps_cleanup_forget(dat);
        return PS_EIO;
    }
    rv = wkr_plot_columns(metrics_path, f, &has_test);
    fclose(f);
    if (rv == 0) {
        FILE *g = popen("gnuplot 2>&1", "w");
        if (!g) {
            ps_error_set("--plot needs gnuplot (Debian: gnuplot-nox)");
            rv = PS_EIO;
        } else {
            write_script(g, dat, png_path, has_test);
            int st = pclose(g);
            if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                ps_error_set("--plot: gnuplot failed (exit %d) writing %s; is gnuplot "
                             "(Debian: gnuplot-nox) installed?",
                             WIFEXITED(st) ? WEXITSTATUS(st) : -1, png_path);
                rv = PS_EIO;
            }
        }
    }
    unlink(dat);
    ps_cleanup_forget(dat);
    return rv;
}
