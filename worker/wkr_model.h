/*
 * wkr_model: the built-in models (linear regression, softmax regression, an
 * MLP with ReLU), forward and backward on OpenBLAS.
 *
 * Contract: wkr_model_new() allocates everything the model will ever need
 * (parameters, gradients, activations for `max_batch` samples), so the hot
 * path (accumulate/evaluate) never allocates.  The model owns its layout,
 * parameter and gradient arrays; the caller may read and overwrite their
 * contents through the returned pointers (e.g. copy pulled weights into
 * wkr_model_params()) but never frees them.  The caller owns x and y; they
 * are only read during the call.
 *
 * Layers are PyTorch nn.Linear: fcK.weight [out, in] then fcK.bias [out],
 * laid end to end in the flat space in layer order.
 *   linear   fc1 [1, features]; loss (y_hat - y)^2 per sample (classes ignored)
 *   softmax  fc1 [classes, features]; cross-entropy per sample
 *   mlp      fc1 [hidden[0], features], ..., fcN [classes, hidden[N-2]],
 *            ReLU between layers; cross-entropy per sample
 *
 * Gradients are sums over samples, not means: the caller accumulates
 * micro-batches and divides by the sample count itself.  BLAS threading is
 * the caller's choice (openblas_set_num_threads(1) per rank by default).
 * A model is not thread-safe: calls on one model must not overlap (the
 * activation buffers are shared by accumulate and evaluate).
 *
 * Failure: a negative PS_E* code and a ps_error_set() detail.  PS_EINVAL for
 * bad names, sizes, a non-integer label or a non-finite target; PS_ERANGE
 * for n > max_batch or a label outside [0, classes); PS_ENOMEM when an
 * allocation fails or a size overflows.  A failed accumulate leaves the
 * gradients untouched (targets are checked before any arithmetic).
 */
#ifndef WKR_MODEL_H
#define WKR_MODEL_H

#include "ps_layout.h"

#include <stddef.h>
#include <stdint.h>

/* At most this many hidden layers: two tensors per layer must fit in a
 * layout of PS_MAX_TENSORS. */
#define WKR_MODEL_MAX_HIDDEN (PS_MAX_TENSORS / 2 - 1)
/* Upper bound on any one width (features, classes, hidden) and on max_batch:
 * they are passed to BLAS as int. */
#define WKR_MODEL_MAX_DIM (1 << 28)

typedef enum { WKR_MODEL_LINEAR, WKR_MODEL_SOFTMAX, WKR_MODEL_MLP } wkr_model_kind_t;
typedef enum { WKR_INIT_DEFAULT, WKR_INIT_ZEROS } wkr_init_t;
typedef struct wkr_model wkr_model_t;

/* "linear" | "softmax" | "mlp"; PS_EINVAL with a detail otherwise. */
int wkr_model_parse_kind(const char *s, wkr_model_kind_t *out);
/* "default" | "zeros"; PS_EINVAL with a detail otherwise. */
int wkr_model_parse_init(const char *s, wkr_init_t *out);
/* Name of a kind ("linear", ...), for logs; never NULL. */
const char *wkr_model_kind_name(wkr_model_kind_t kind);

/* Build a model with parameters and gradients zeroed.  `hidden`/`nhidden`
 * are read only for mlp (1 <= nhidden <= WKR_MODEL_MAX_HIDDEN); classes >= 2
 * for softmax and mlp.  max_batch is the largest n later passed to
 * accumulate (evaluate splits larger inputs itself). */
int wkr_model_new(wkr_model_t **out, wkr_model_kind_t kind, int features, int classes,
                  const int *hidden, int nhidden, int max_batch);
/* Free everything; safe twice and on NULL, NULLs *m. */
void wkr_model_destroy(wkr_model_t **m);

const ps_layout_t *wkr_model_layout(const wkr_model_t *m);
/* Flat, layout order, layout->total floats.  Owned by the model. */
float *wkr_model_params(wkr_model_t *m);
float *wkr_model_grads(wkr_model_t *m);

/* WKR_INIT_DEFAULT is PyTorch nn.Linear's default: weight and bias
 * ~ U(-1/sqrt(in), 1/sqrt(in)), drawn in layout order from one ps_rng
 * stream seeded with `seed` (stream 0).  WKR_INIT_ZEROS sets all zero.
 * Deterministic given the seed; gradients are not touched. */
void wkr_model_fill_weights(wkr_model_t *m, wkr_init_t rule, uint64_t seed);
void wkr_model_zero_grads(wkr_model_t *m);

/* Called during backward once a layer's weight and bias gradients are final
 * for this call, from the last layer to the first; `first` is that layer's
 * weight offset in the flat space, so grads[first .. total) are all final.
 * The callback may read (not write) the gradients; the parameters must not
 * change until accumulate returns (backward still reads the weights). */
typedef void (*wkr_grad_ready_fn)(void *arg, size_t first);

/* Forward + backward on n samples (x: n x features row-major; y: the class
 * index as a float, or the regression target).  ADDS the sum over samples of
 * the per-sample loss gradient into the gradients and sets *loss_sum to the
 * sum of per-sample losses.  n == 0 is a no-op (no callback, *loss_sum = 0).
 * cb may be NULL. */
int wkr_model_accumulate(wkr_model_t *m, const float *x, const float *y, int n, double *loss_sum,
                         wkr_grad_ready_fn cb, void *arg);

/* Forward only: *loss_sum as above; *correct = samples whose argmax (first
 * maximum on ties) equals the label, 0 for linear.  Any n: inputs larger
 * than max_batch are processed in max_batch pieces.  Gradients untouched. */
int wkr_model_evaluate(wkr_model_t *m, const float *x, const float *y, size_t n, double *loss_sum,
                       int64_t *correct);

#endif
