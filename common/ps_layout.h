/*
 * ps_layout: the model's parameter layout, an ordered list of named float32
 * tensors laid end to end in one flat array ("the flat parameter space").
 *
 * Names and shapes follow PyTorch: `fc1.weight` is [out, in], `fc1.bias` is
 * [out].  A tensor's `offset` is its first element in the flat space.
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

typedef struct {
    char name[PS_MAX_NAME + 1];
    int ndim;
    int64_t dims[PS_MAX_DIMS];
    size_t offset; /* first element in the flat space */
    size_t numel;
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
/* Index of the tensor holding flat element `idx`, or -1. */
int ps_layout_tensor_at(const ps_layout_t *l, size_t idx);
/* Index of the tensor called `name`, or -1. */
int ps_layout_find(const ps_layout_t *l, const char *name);
/* FNV-1a over the encoded form: equal layouts give equal hashes. */
uint64_t ps_layout_hash(const ps_layout_t *l);
/* "fc1.weight[256,784] fc1.bias[256] ..." truncated to fit `cap`. */
void ps_layout_describe(const ps_layout_t *l, char *buf, size_t cap);

/* Wire form, little endian: u32 count, then per tensor u8 name length, name
 * bytes, u8 ndim, ndim x u64 dims.  encode returns the bytes written or a
 * negative PS_E* code when `cap` is too small; decode rejects anything
 * malformed (PS_EPROTO, detail set). */
long ps_layout_encode(const ps_layout_t *l, uint8_t *buf, size_t cap);
int ps_layout_decode(ps_layout_t *l, const uint8_t *buf, size_t len);

#endif
