#include "wkr_report.h"

#include "ps_clock.h"
#include "ps_err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

int wkr_report_init(wkr_report_t *r, const char *mode, const char *metrics_path)
{
    memset(r, 0, sizeof *r);
    if (strcmp(mode, "auto") == 0) {
        r->mode = user_sees_terminal() ? WKR_PROGRESS_BAR : WKR_PROGRESS_PLAIN;
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

void wkr_report_step(wkr_report_t *r, int epoch, int epochs, uint64_t done, uint64_t per_epoch,
                     double loss)
{
    if (r->mode != WKR_PROGRESS_BAR) {
        return;
    }
    double t = ps_clock_now();
    if (t - r->last_draw < 0.1 && done < per_epoch) {
        return;
    }
    r->last_draw = t;
    char bar[31];
    int fill = per_epoch ? (int)(30 * done / per_epoch) : 30;
    for (int i = 0; i < 30; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[30] = '\0';
    fprintf(stderr, "\repoch %d/%d [%s] %llu/%llu  loss %.4f ", epoch, epochs, bar,
            (unsigned long long)done, (unsigned long long)per_epoch, loss);
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
    if (r->mode == WKR_PROGRESS_BAR && r->drew) {
        fprintf(stderr, "\r\033[K");
    }
    if (r->mode != WKR_PROGRESS_NONE) {
        printf("epoch %d/%d  step %llu  train_loss %.4f%s  %.0f samples/s  %.1f s\n", e->epoch,
               e->epochs, (unsigned long long)e->step, e->train_loss, test, e->samples_per_s,
               e->elapsed_s);
        fflush(stdout);
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
