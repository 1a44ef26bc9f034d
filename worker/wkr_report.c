#include "wkr_report.h"

#include "ps_clock.h"
#include "ps_err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Narrow enough that a frame fits 80 columns (a wrapped frame would not
 * be redrawn in place). */
enum { WKR_BAR_WIDTH = 16 };

int wkr_report_parse_mode(const char *s, wkr_progress_t *out)
{
    if (strcmp(s, "bar") == 0) {
        *out = WKR_PROGRESS_BAR;
    } else if (strcmp(s, "plain") == 0) {
        *out = WKR_PROGRESS_PLAIN;
    } else if (strcmp(s, "none") == 0) {
        *out = WKR_PROGRESS_NONE;
    } else {
        ps_error_set("--progress '%s': want auto, bar, plain or none", s);
        return PS_EINVAL;
    }
    return 0;
}

/* mpirun gives every rank a pty, so look at what the launcher writes to. */
static int user_sees_terminal(void)
{
    char path[64], comm[64] = "", target[256];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)getppid());
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(comm, sizeof comm, f)) {
            comm[0] = '\0';
        }
        fclose(f);
    }
    if (strncmp(comm, "mpirun", 6) && strncmp(comm, "mpiexec", 7) && strncmp(comm, "orterun", 7) &&
        strncmp(comm, "prterun", 7)) {
        return isatty(STDERR_FILENO);
    }
    snprintf(path, sizeof path, "/proc/%d/fd/1", (int)getppid());
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n <= 0) {
        return 0;
    }
    target[n] = '\0';
    return strncmp(target, "/dev/pts/", 9) == 0 || strncmp(target, "/dev/tty", 8) == 0;
}

/* What --progress auto shows: the launcher's word, else the terminal. */
static int resolve_auto(wkr_progress_t *out)
{
    const char *env = getenv("PS_PROGRESS_AUTO");
    if (!env || !*env) {
        *out = user_sees_terminal() ? WKR_PROGRESS_BAR : WKR_PROGRESS_PLAIN;
    } else if (strcmp(env, "bar") == 0) {
        *out = WKR_PROGRESS_BAR;
    } else if (strcmp(env, "plain") == 0) {
        *out = WKR_PROGRESS_PLAIN;
    } else {
        ps_error_set("PS_PROGRESS_AUTO '%s': want bar or plain (what --progress auto shows)", env);
        return PS_EINVAL;
    }
    return 0;
}

int wkr_report_init(wkr_report_t *r, const char *mode, const char *metrics_path)
{
    memset(r, 0, sizeof *r);
    if (strcmp(mode, "auto") == 0) {
        if (resolve_auto(&r->mode) != 0) {
            return PS_EINVAL;
        }
    } else if (wkr_report_parse_mode(mode, &r->mode) != 0) {
        return PS_EINVAL;
    }
    if (metrics_path) {
        r->metrics = fopen(metrics_path, "w");
        if (!r->metrics) {
            ps_error_set("--metrics %s: %s", metrics_path, strerror(errno));
            return PS_EIO;
        }
    }
    return 0;
}

void wkr_report_plan(wkr_report_t *r, uint64_t total_steps, uint64_t samples_per_step,
                     uint64_t samples_per_epoch)
{
    r->total_steps = total_steps;
    r->samples_per_step = samples_per_step;
    r->samples_per_epoch = samples_per_epoch;
}

/* Samples in the first `steps` steps of the run (an epoch's last step may
 * be short, so not simply steps x W x K x B). */
static double samples_done(const wkr_report_t *r, uint64_t steps, uint64_t per_epoch)
{
    uint64_t e = per_epoch ? steps / per_epoch : 0, j = per_epoch ? steps % per_epoch : steps;
    uint64_t in_epoch = j * r->samples_per_step;
    if (in_epoch > r->samples_per_epoch) {
        in_epoch = r->samples_per_epoch;
    }
    return (double)e * (double)r->samples_per_epoch + (double)in_epoch;
}

/* " 12345 samples/s 1:23 left" over the steps since the first draw;
 * dashes until there is a rate. */
static void format_rate(const wkr_report_t *r, uint64_t step, uint64_t per_epoch, double t,
                        char *out, size_t n)
{
    double dt = t - r->first_t;
    if (r->samples_per_step == 0 || step <= r->first_step || dt <= 0) {
        snprintf(out, n, " - samples/s -:-- left");
        return;
    }
    double sps =
        (samples_done(r, step, per_epoch) - samples_done(r, r->first_step, per_epoch)) / dt;
    double left_steps = r->total_steps > step ? (double)(r->total_steps - step) : 0;
    long left = lround(left_steps * dt / (double)(step - r->first_step));
    if (left >= 3600) {
        snprintf(out, n, " %.0f samples/s %ld:%02ld:%02ld left", sps, left / 3600, left / 60 % 60,
                 left % 60);
    } else {
        snprintf(out, n, " %.0f samples/s %ld:%02ld left", sps, left / 60, left % 60);
    }
}

void wkr_report_step(wkr_report_t *r, int epoch, int epochs, uint64_t done, uint64_t per_epoch,
                     double loss)
{
    if (r->mode != WKR_PROGRESS_BAR) {
        return;
    }
    double t = ps_clock_now();
    uint64_t step = (uint64_t)(epoch - 1) * per_epoch + done; /* global steps done */
    if (!r->started) {
        r->started = 1;
        r->first_t = t;
        r->first_step = step;
    } else if (t - r->last_draw < 0.1 && done < per_epoch) {
        return;
    }
    r->last_draw = t;
    char bar[WKR_BAR_WIDTH + 1], rate[64];
    int fill = per_epoch ? (int)(WKR_BAR_WIDTH * done / per_epoch) : WKR_BAR_WIDTH;
    for (int i = 0; i < WKR_BAR_WIDTH; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[WKR_BAR_WIDTH] = '\0';
    format_rate(r, step, per_epoch, t, rate, sizeof rate);
    /* "\033[K" erases what a longer earlier frame left on the line. */
    fprintf(stderr, "\repoch %d/%d [%s] %llu/%llu loss %.4f%s\033[K", epoch, epochs, bar,
            (unsigned long long)done, (unsigned long long)per_epoch, loss, rate);
    fflush(stderr);
    r->drew = 1;
}

/* JSON has no NaN or Infinity: a diverged loss is written as null (the
 * "nan" printf makes would break every JSON reader of the file). */
static void put_loss(FILE *f, const char *key, double v)
{
    if (isfinite(v)) {
        fprintf(f, ",\"%s\":%.6g", key, v);
    } else {
        fprintf(f, ",\"%s\":null", key);
    }
}

static void write_json(FILE *f, const wkr_epoch_rec_t *e)
{
    fprintf(f, "{\"epoch\":%d,\"step\":%llu", e->epoch, (unsigned long long)e->step);
    put_loss(f, "train_loss", e->train_loss);
    if (e->has_test) {
        put_loss(f, "test_loss", e->test_loss);
        fprintf(f, ",\"test_acc\":%.6g", e->test_acc);
    }
    if (e->has_test && e->has_auc) {
        put_loss(f, "test_logloss", e->test_loss);
        put_loss(f, "test_auc", e->test_auc); /* NaN (one class) as null */
    }
    fprintf(f, ",\"lr\":%.9g", e->lr);
    if (e->has_staleness) {
        fprintf(f, ",\"staleness_max\":%.6g,\"staleness_mean\":%.6g", e->staleness_max,
                e->staleness_mean);
    }
    fprintf(f, ",\"samples_per_s\":%.6g,\"elapsed_s\":%.6g,\"compute_s\":%.6g,\"wait_s\":%.6g",
            e->samples_per_s, e->elapsed_s, e->compute_s, e->wait_s);
    fprintf(f, ",\"push_s\":%.6g,\"server_apply_s\":%.6g,\"comm_s\":%.6g,\"comm_hidden\":%.4g}\n",
            e->push_s, e->server_apply_s, e->comm_s, e->comm_hidden);
}

int wkr_report_epoch(wkr_report_t *r, const wkr_epoch_rec_t *e)
{
    char test[96] = "";
    if (e->has_test) {
        snprintf(test, sizeof test, "  test_loss %.4f  test_acc %.4f", e->test_loss, e->test_acc);
    }
    if (e->has_test && e->has_auc) {
        snprintf(test + strlen(test), sizeof test - strlen(test), "  test_auc %.4f", e->test_auc);
    }
    /* With the bar, the line that replaces it goes the bar's way: mpirun
     * forwards a rank's stdout and stderr apart, so a line on stdout could
     * land in the middle of the bar's frames, or under the next ones. */
    FILE *out = r->mode == WKR_PROGRESS_BAR ? stderr : stdout;
    if (r->mode == WKR_PROGRESS_BAR && r->drew) {
        fprintf(stderr, "\r\033[K");
    }
    if (r->mode != WKR_PROGRESS_NONE) {
        fprintf(out, "epoch %d/%d  step %llu  train_loss %.4f%s  %.0f samples/s  %.1f s\n",
                e->epoch, e->epochs, (unsigned long long)e->step, e->train_loss, test,
                e->samples_per_s, e->elapsed_s);
        fflush(out);
    }
    if (r->metrics) {
        write_json(r->metrics, e);
        if (fflush(r->metrics) != 0) {
            ps_error_set("writing the metrics file: %s", strerror(errno));
            return PS_EIO;
        }
    }
    return 0;
}

void wkr_report_fini(wkr_report_t *r)
{
    if (r->metrics) {
        fclose(r->metrics);
        r->metrics = NULL;
    }
}
