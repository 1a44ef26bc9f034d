/*
 * wkr_sparse_model: the built-in models over a sparse table (issue 14),
 * forward and backward; the trainer moves the rows (ps_pull_rows /
 * ps_push_rows) and the dense tensors.
 *
 *   logreg     table fc1.weight (dim 1, key = the LIBSVM feature index)
 *              and dense fc1.bias [1]: logit = bias + sum_j w[key_j] * val_j
 *   embed-mlp  table emb.weight (dim D, key = f * 2^32 + h for Criteo
 *              categorical field f in 1..26), input concat(26 x D field
 *              embeddings (a missing field: zeros), the row's 13 dense
 *              values), an MLP fc1 .. fcN with ReLU between layers (PyTorch
 *              nn.Linear names and layouts), one logit
 * Both: loss = binary cross entropy of sigmoid(logit) per sample.
 *
 * Use per batch: wkr_sparse_model_batch() takes the samples and collects
 * their unique keys (ascending); the caller writes those keys' rows into
 * wkr_sparse_model_rows() (a pull); then wkr_sparse_model_train() (or
 * _predict()).  After train, wkr_sparse_model_row_grads() holds one
 * gradient row per unique key and wkr_sparse_model_grads() the dense
 * gradients, both `scale` times the sum over the batch's samples
 * (scale = 1/n: the mean-loss gradient, what ps_push_rows and ps_push
 * want).  Both are overwritten, not accumulated.
 *
 * Ownership: the model owns its layout, parameter, gradient, key and row
 * arrays (the pointers stay valid until the next _batch() call, which may
 * reallocate the key and row arrays, or _destroy()); the caller owns the
 * data set, which must outlive the batch.  Not thread-safe.
 *
 * Failure: a negative PS_E* code and a ps_error_set() detail: PS_EINVAL
 * for bad sizes, a data set of the wrong form (logreg wants rows without
 * dense values, embed-mlp Criteo rows), a key whose field is not 1..26;
 * PS_ERANGE for n > max_batch; PS_ENOMEM.
 */
#ifndef WKR_SPARSE_MODEL_H
#define WKR_SPARSE_MODEL_H

#include "ps_layout.h"
#include "wkr_data_sparse.h"

#include <stddef.h>
#include <stdint.h>

#define WKR_SPARSE_MODEL_MAX_HIDDEN 16
#define WKR_SPARSE_MODEL_MAX_DIM (1 << 16) /* embedding dim and layer widths */

typedef enum { WKR_SPARSE_LOGREG, WKR_SPARSE_EMBED_MLP } wkr_sparse_kind_t;
typedef struct wkr_sparse_model wkr_sparse_model_t;

/* "logreg" | "embed-mlp" -> 0 and *out; 1 for another name (no error set:
 * it may be a dense model's). */
int wkr_sparse_model_parse_kind(const char *s, wkr_sparse_kind_t *out);

/* embed_dim and hidden/nhidden (1..WKR_SPARSE_MODEL_MAX_HIDDEN layers) are
 * read for embed-mlp only.  max_batch: the most samples of one batch. */
int wkr_sparse_model_new(wkr_sparse_model_t **out, wkr_sparse_kind_t kind, int embed_dim,
                         const int *hidden, int nhidden, int max_batch);
/* A model of the same kind and shape (its own parameters, zeroed, and
 * buffers), e.g. for evaluation in batches of another size. */
int wkr_sparse_model_new_like(wkr_sparse_model_t **out, const wkr_sparse_model_t *m, int max_batch);
void wkr_sparse_model_destroy(wkr_sparse_model_t **m);

/* The table's name ("fc1.weight" or "emb.weight") and row width. */
const char *wkr_sparse_model_table(const wkr_sparse_model_t *m);
int wkr_sparse_model_dim(const wkr_sparse_model_t *m);
/* The dense tensors, flat in layout order (as wkr_model's). */
const ps_layout_t *wkr_sparse_model_layout(const wkr_sparse_model_t *m);
float *wkr_sparse_model_params(wkr_sparse_model_t *m);
float *wkr_sparse_model_grads(wkr_sparse_model_t *m);
/* The dense tensors' initial values: nn.Linear's default, U(-1/sqrt(in),
 * 1/sqrt(in)) for weight and bias, from one ps_rng stream of `seed`, for
 * the MLP; logreg's bias 0.  zeros: every one 0. */
void wkr_sparse_model_fill_weights(wkr_sparse_model_t *m, int zeros, uint64_t seed);
/* The table's initial rows: logreg 0 (*bound = 0); embed-mlp
 * U(-bound, bound) with *bound = 1/sqrt(D) (0 when zeros). */
float wkr_sparse_model_table_bound(const wkr_sparse_model_t *m, int zeros);

/* The samples rows[0..n) of ds form the batch; collects their unique keys. */
int wkr_sparse_model_batch(wkr_sparse_model_t *m, const wkr_sparse_ds_t *ds, const uint32_t *rows,
                           size_t n);
size_t wkr_sparse_model_nkeys(const wkr_sparse_model_t *m);
const uint64_t *wkr_sparse_model_keys(const wkr_sparse_model_t *m);
/* nkeys x dim: the caller writes the keys' rows here before train/predict. */
float *wkr_sparse_model_rows(wkr_sparse_model_t *m);
/* nkeys x dim: the rows' gradients after train. */
float *wkr_sparse_model_row_grads(wkr_sparse_model_t *m);

/* Forward + backward on the batch: *loss_sum is the sum of per-sample
 * losses; gradients as described above. */
int wkr_sparse_model_train(wkr_sparse_model_t *m, float scale, double *loss_sum);
/* Forward only: logits[0..n) of the batch's samples, *loss_sum. */
int wkr_sparse_model_predict(wkr_sparse_model_t *m, float *logits, double *loss_sum);

/* BCE with logits of one sample, computed stably. */
double wkr_sparse_model_bce(float logit, float y);
/* Exact ROC AUC of scores against 0/1 labels: sorted, tied scores share
 * their average rank (Mann-Whitney U).  NaN when a class is absent or a
 * score is NaN. */
double wkr_sparse_model_auc(const float *score, const float *y, size_t n);

#endif
