/*
 * ps_layout: the model's parameter layout, an ordered list of named float32
 * tensors laid end to end in one flat array ("the flat parameter space").
 *
 * Names and shapes follow PyTorch: `fc1.weight` is [out, in], `fc1.bias` is
 * [out].  A tensor's `offset` is its first element in the flat space.
 *
 * A tensor may carry its own weight decay and learning-rate multiplier
 * (torch param groups); they are part of the layout, its encoding and its
 * hash, so the workers agree on them and the servers apply them.
 *
 * The layout travels in a REGISTER message (ps_layout_encode/decode); its
 * 64-bit hash lets ranks compare layouts cheaply.  Decoding checks every
 * length and count against the fixed limits below before using it.
 */
#ifndef PS_LAYOUT_H
#define PS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define PS_MAX_TENSORS 1024
#define PS_MAX_NAME 63 /* bytes, without the terminating NUL */
#define PS_MAX_DIMS 4
#define PS_MAX_ELEMS ((size_t)1 << 34) /* 64 GiB of float32: a sanity bound */

/* Per-tensor optimizer options (ps_tensor_t.opts): which of the two values
 * replace the servers' settings for this tensor. */
#define PS_TOPT_WD 1u /* weight_decay replaces the servers' --weight-decay */
#define PS_TOPT_LR 2u /* the learning rate is the servers' times lr_scale */

typedef struct {
    char name[PS_MAX_NAME + 1];
    int ndim;
    int64_t dims[PS_MAX_DIMS];
    size_t offset; /* first element in the flat space */
    size_t numel;
    unsigned opts;       /* PS_TOPT_* set for this tensor; 0: the servers' settings */
    double weight_decay; /* with PS_TOPT_WD (else 0) */
    double lr_scale;     /* with PS_TOPT_LR (else 0) */
} ps_tensor_t;

typedef struct {
    int n;
    ps_tensor_t t[PS_MAX_TENSORS];
    size_t total; /* elements in the flat space */
} ps_layout_t;

void ps_layout_init(ps_layout_t *l);
/* Append a tensor; fails (PS_EINVAL, detail set) on a bad name or shape or
 * when a limit would be exceeded. */
int ps_layout_add(ps_layout_t *l, const char *name, int ndim, const int64_t *dims);
/* Remove the last tensor (undoes ps_layout_add); no-op on an empty layout. */
void ps_layout_drop_last(ps_layout_t *l);
/* Set tensor i's options: `opts` a set of PS_TOPT_*, the values finite and
 * >= 0 (those not in `opts` are ignored and stored as 0).  PS_EINVAL with
 * a detail naming the tensor otherwise. */
int ps_layout_set_opts(ps_layout_t *l, int i, unsigned opts, double weight_decay, double lr_scale);
/* Whether any tensor has options (the layout then travels as version 2). */
int ps_layout_has_opts(const ps_layout_t *l);
/* "fc1.bias: weight_decay 0, lr_scale 2; ..." for the tensors with
 * options (empty when none), truncated to fit `cap`. */
void ps_layout_describe_opts(const ps_layout_t *l, char *buf, size_t cap);
/* The first tensor index where a and b differ (name, shape or options),
 * min(a->n, b->n) when one is the other's prefix, -1 when they are equal. */
int ps_layout_first_diff(const ps_layout_t *a, const ps_layout_t *b);
/* One tensor as "'fc1.bias' [256]" plus " weight_decay W lr_scale S" for
 * the options it has. */
void ps_layout_describe_tensor(const ps_tensor_t *t, char *buf, size_t cap);
/* Index of the tensor holding flat element `idx`, or -1. */
int ps_layout_tensor_at(const ps_layout_t *l, size_t idx);
/* Index of the tensor called `name`, or -1. */
int ps_layout_find(const ps_layout_t *l, const char *name);
/* FNV-1a over the encoded form: equal layouts give equal hashes. */
uint64_t ps_layout_hash(const ps_layout_t *l);
/* "fc1.weight[256,784] fc1.bias[256] ..." truncated to fit `cap`. */
void ps_layout_describe(const ps_layout_t *l, char *buf, size_t cap);

/* Wire form, little endian.  Version 1 (a layout without tensor options,
 * byte for byte what every earlier release sent, so its hash and the
 * checkpoints that record it are unchanged): u32 count, then per tensor u8
 * name length, name bytes, u8 ndim, ndim x u64 dims.  Version 2 (some
 * tensor has options): u32 PS_LAYOUT_V2_MAGIC (above PS_MAX_TENSORS, so a
 * version-1 decoder refuses it), u32 count, then per tensor the version-1
 * fields followed by u8 opts (PS_TOPT_* bits), f64 weight_decay, f64
 * lr_scale (IEEE-754 bits as u64; 0 when the bit is clear).  encode
 * returns the bytes written or a negative PS_E* code when `cap` is too
 * small; decode takes either version and rejects anything malformed or
 * not canonical (PS_EPROTO, detail set). */
#define PS_LAYOUT_V2_MAGIC 0x324c5350u /* "PSL2" little endian */
#define PS_LAYOUT_MAX_ENCODED (8 + PS_MAX_TENSORS * (2 + PS_MAX_NAME + 8 * PS_MAX_DIMS + 17))
long ps_layout_encode(const ps_layout_t *l, uint8_t *buf, size_t cap);
int ps_layout_decode(ps_layout_t *l, const uint8_t *buf, size_t len);

#endif
