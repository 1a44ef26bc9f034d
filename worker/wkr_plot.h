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

int wkr_plot_metrics(const char *metrics_path, const char *png_path);

#endif
