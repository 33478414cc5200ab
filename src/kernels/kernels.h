/* Weight types and matrix products: the reference (kref_*, the specification) and the fast CPU
 * versions (kcpu_*, SIMD + OpenMP, runtime dispatch) share these signatures.
 *
 * Weights are used in place: a matrix W of n_out rows, each row n_in elements of type wtype
 * stored contiguously (dtype_row_size(wtype, n_in) bytes per row), as in GGUF (ne0 = n_in) and
 * in Hugging Face Linear weights ([out, in] row-major).
 *
 * Numerics follow llama.cpp: before a dot product the activation row is converted to the weight
 * type's vec_dot_type (F16 weights: activations rounded to F16; Q4_0/Q5_0/Q8_0: Q8_0;
 * Q4_1/Q5_1: Q8_1; K-quants: Q8_K; F32 and BF16: F32, i.e. exact). */
#ifndef PG_KERNELS_KERNELS_H
#define PG_KERNELS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

/* Converts n floats to a row of this type (n a multiple of the block size). */
typedef void (*k_from_float_fn)(const float *x, void *y, int64_t n);
/* Converts a row of this type to n floats. */
typedef void (*k_to_float_fn)(const void *x, float *y, int64_t n);
/* Dot product of n elements: w is a row of the weight type, a a row of its vec_dot_type. */
typedef float (*k_vec_dot_fn)(int64_t n, const void *w, const void *a);

typedef struct {
    int vec_dot_type;          /* type activations are converted to before vec_dot */
    k_from_float_fn from_float; /* quantize/convert (NULL if this type cannot be produced) */
    k_to_float_fn to_float;
    k_vec_dot_fn vec_dot;      /* NULL if this type cannot be a weight (e.g. Q8_K) */
} k_type_traits;

/* Reference traits for a type, NULL if pagoda has no kernels for it. */
const k_type_traits *kref_traits(int dtype);
/* Quantizes n floats (a multiple of the block size) to a row of weights of this type exactly as
 * llama-quantize does without an imatrix (ggml's reference quantizers); differs from from_float
 * only for Q8_0, whose from_float follows the activation path. false if the type cannot be a
 * weight pagoda produces. */
bool kref_quantize_row(int dtype, const float *x, void *y, int64_t n);
/* The same with an importance matrix: qw holds one weight per column of the row (n values), as
 * llama-quantize --imatrix uses them (ggml's quantize_row_*_impl). qw NULL, and the types ggml
 * quantizes without weights (Q8_0, F16, BF16, F32), give kref_quantize_row's result. */
bool kref_quantize_row_weighted(int dtype, const float *x, void *y, int64_t n, const float *qw);
/* Fastest traits for this CPU (falls back to kref_traits). */
const k_type_traits *kcpu_traits(int dtype);

/* true if matmul supports weights of this type. */
bool k_matmul_supported(int wtype);

/* Bytes of scratch the matmul needs for n_tok activation rows of n_in (converted rows). */
size_t k_matmul_work_size(int wtype, int64_t n_in, int64_t n_tok);

/* y[t*n_out + r] = dot(W row r, x row t) for t < n_tok, r < n_out.
 * x: [n_tok][n_in] floats, y: [n_tok][n_out], work: k_matmul_work_size() bytes. */
void kref_matmul(int wtype, const void *w, int64_t n_in, int64_t n_out,
                 const float *x, int64_t n_tok, float *y, void *work);
void kcpu_matmul(int wtype, const void *w, int64_t n_in, int64_t n_out,
                 const float *x, int64_t n_tok, float *y, void *work);

/* Threads used by kcpu_* (OpenMP) called from this thread; <= 0 means all cores. Per thread, so
 * two engines stepping on two threads each run their own team size. */
void kcpu_set_threads(int n);
int kcpu_get_threads(void);
/* "avx512", "avx2", or "scalar": the SIMD level runtime dispatch chose. */
const char *kcpu_isa(void);

#endif
