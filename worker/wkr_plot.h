/*
 * wkr_plot: loss and accuracy curves from a metrics file, as a PNG.
 *
 * Reads the JSON lines ps-worker --metrics writes (one object per epoch)
 * and draws, with gnuplot (Debian's gnuplot-nox, pngcairo terminal), four
 * panels: training and test loss, and test accuracy, against steps and
 * against wall time.  Used by `ps-worker --plot` at the end of a run and by
 * `ps-worker --plot-metrics FILE --plot OUT.png` (no MPI; `make plot`).
 * Fails with a message when the file has no usable line or gnuplot is
 * missing or fails; the caller owns both paths.
 */
#ifndef WKR_PLOT_H
#define WKR_PLOT_H

#include <stdio.h>

int wkr_plot_metrics(const char *metrics_path, const char *png_path);

/* The data gnuplot reads: per metrics line (a JSON object, parsed with
 * libjansson) "step elapsed_s train_loss test_loss test_acc\n", "NaN" for
 * a value that is missing, null or not finite; test_loss and test_acc only
 * when the line has both (*has_test is set when any line has).  Lines that
 * are not JSON objects with step, elapsed_s and train_loss are skipped
 * (counted in an info line); none at all is PS_EFORMAT with a message. */
int wkr_plot_columns(const char *metrics_path, FILE *out, int *has_test);

#endif
