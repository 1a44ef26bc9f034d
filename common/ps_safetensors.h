/*
 * ps_safetensors: read and write safetensors files holding float32 tensors
 * (the format of Hugging Face's `safetensors`, loadable in PyTorch).
 *
 * File layout: an 8-byte little-endian header length N; N bytes of JSON
 *     {"__metadata__":{"key":"value",...},
 *      "name":{"dtype":"F32","shape":[d0,...],"data_offsets":[begin,end]},...}
 * padded with spaces so the data starts 8-byte aligned; then the data
 * section, raw little-endian float32, offsets relative to its start.  The
 * JSON is read and written with libjansson; the checks below are this
 * module's.
 *
 * A tensor name, for the writer and the reader alike: non-empty, valid
 * UTF-8, not "__metadata__".
 *
 * Writing (ps_st_write): the caller owns the tensors and strings; the file
 * is replaced atomically (ps_atomic_write: temp file, fsync, rename, fsync
 * of the directory), so a reader sees the old file or the new one, never a
 * mix.  The header is written as safetensors' own writer (serde_json)
 * writes one: "__metadata__" first (only when nmeta > 0), then the
 * tensors in the order given and laid out in that order, no spaces,
 * '"', '\' and control characters escaped as serde_json does (\n, \u001f),
 * other UTF-8 as is.  Fails with PS_EINVAL (bad argument: duplicate or
 * invalid name, negative dim, more than PS_MAX_DIMS dims, invalid UTF-8),
 * PS_ENOMEM or PS_EIO.
 *
 * Reading (ps_st_open): the whole file is read into memory and validated
 * before anything is returned; the ps_st_file_t owns every pointer it hands
 * out (names, data, metadata) until ps_st_close().  Checks: header length
 * <= 100 MiB and within the file; strict JSON (UTF-8, no duplicate keys, no
 * \u0000, nothing after the object); a top-level object whose
 * "__metadata__", if present, maps strings to strings; every other key a
 * valid tensor name whose value has exactly dtype, shape and data_offsets;
 * every dtype F32 or I64 (a sparse table's keys); at most PS_MAX_DIMS
 * dims; shape and offsets non-negative
 * integers up to 2^63-1 (a fraction, an exponent or a larger number is
 * refused; "-0" reads as 0); shape product * 4 (I64: * 8) == end - begin;
 * the
 * tensors, sorted by offset, tile the data section exactly, without
 * overlap or gap (as safetensors' own validate() requires), so the data
 * section length == the last end.  Any violation: PS_EFORMAT with a
 * ps_error_msg() naming the path and the problem (jansson's text and byte
 * position for a JSON syntax error).  A missing file is PS_ENOENT, other
 * I/O failures PS_EIO.  Parsing builds jansson's tree of the whole header
 * before checking it: a hostile header of tiny values costs about 20 bytes
 * of memory per header byte (2 GiB at the limit) while it is refused.
 */
#ifndef PS_SAFETENSORS_H
#define PS_SAFETENSORS_H

#include <stdint.h>

#include "ps_layout.h"

typedef struct {
    const char *name;
    int ndim; /* 0 (a scalar) .. PS_MAX_DIMS */
    const int64_t *shape;
    const float *data; /* product(shape) floats; may be NULL when that is 0 */
} ps_st_tensor_t;

/* Write n tensors and nmeta metadata pairs (meta[2k] = key, meta[2k+1] =
 * value) to `path`, replacing it atomically (see ps_atomic.h: a failure
 * leaves the old file and no temp file). */
int ps_st_write(const char *path, const ps_st_tensor_t *t, int n, const char *const *meta,
                int nmeta);

/* The same, where i64[k] != 0 marks tensor k as dtype I64: its data then
 * points at product(shape) int64_t (a sparse table's keys).  i64 NULL:
 * every tensor F32. */
int ps_st_write_typed(const char *path, const ps_st_tensor_t *t, const int *i64, int n,
                      const char *const *meta, int nmeta);

typedef struct ps_st_file ps_st_file_t;

/* Read and validate a whole file (see above); *out is NULL on failure. */
int ps_st_open(ps_st_file_t **out, const char *path);
int ps_st_count(const ps_st_file_t *f);
/* Name of tensor i in file (header) order; NULL when i is out of range. */
const char *ps_st_name(const ps_st_file_t *f, int i);
/* Tensor `name`: data (4-byte aligned, owned by f), ndim and shape
 * (room for PS_MAX_DIMS).  Any output pointer may be NULL.  PS_ENOENT
 * (detail set) if there is no such tensor. */
int ps_st_get(const ps_st_file_t *f, const char *name, const float **data, int *ndim,
              int64_t *shape);
/* 1 when tensor `name` is I64 (its data are int64 values, little-endian,
 * possibly only 4-byte aligned: read them with memcpy), 0 when F32,
 * PS_ENOENT when there is no such tensor. */
int ps_st_is_i64(const ps_st_file_t *f, const char *name);
/* Metadata value for `key`, or NULL if absent. */
const char *ps_st_meta(const ps_st_file_t *f, const char *key);
/* Free everything and NULL *f; safe twice and on NULL. */
void ps_st_close(ps_st_file_t **f);

#endif
