#include "wkr_plot.h"

#include "ps_err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The number after "key": in a JSON line, or NAN-free failure. */
static int json_number(const char *line, const char *key, double *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) {
        return 0;
    }
    char *end;
    *out = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

/* Metrics JSON lines -> whitespace columns gnuplot reads:
 * step elapsed_s train_loss test_loss test_acc ("NaN" when absent). */
static int write_columns(const char *metrics_path, FILE *out, int *has_test)
{
    FILE *in = fopen(metrics_path, "r");
    char line[4096];
    int rows = 0;
    if (!in) {
        ps_error_set("--plot: cannot read %s: %s", metrics_path, strerror(errno));
        return PS_EIO;
    }
    *has_test = 0;
    while (fgets(line, sizeof line, in)) {
        double step, t, loss, tl = 0, acc = 0;
        if (!json_number(line, "step", &step) || !json_number(line, "elapsed_s", &t) ||
            !json_number(line, "train_loss", &loss)) {
            continue;
        }
        int test = json_number(line, "test_loss", &tl) && json_number(line, "test_acc", &acc);
        *has_test |= test;
        fprintf(out, "%.0f %.6g %.8g ", step, t, loss);
        fprintf(out, test ? "%.8g %.6g\n" : "NaN NaN\n", tl, acc);
        rows++;
    }
    fclose(in);
    if (rows == 0) {
        ps_error_set("--plot: %s has no metrics lines (step, elapsed_s, train_loss)",
                     metrics_path);
        return PS_EFORMAT;
    }
    return 0;
}

static void write_script(FILE *g, const char *dat, const char *png, int has_test)
{
    fprintf(g, "set terminal pngcairo size 1200,800 font ',10'\n"
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
    char dat[] = "/tmp/ps-plot-XXXXXX";
    int fd = mkstemp(dat), has_test = 0, rv;
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        ps_error_set("--plot: cannot create a temporary file: %s", strerror(errno));
        return PS_EIO;
    }
    rv = write_columns(metrics_path, f, &has_test);
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
    return rv;
}
