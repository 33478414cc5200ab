/* Internal interface of the fast CPU matmul: each SIMD file (*_avx2.c, *_avx512.c) fills a table
 * of per-type kernels; dispatch.c picks the table for this CPU, matmul.c drives it with OpenMP.
 * Not part of the public API; tests include it to force a lower ISA level. */
#ifndef PG_KERNELS_CPU_IMPL_H
#define PG_KERNELS_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Block of outputs: y[t*y_stride + r] = dot(W row r, A row t) for r < nr, t < nt.
 * w: nr rows of the weight type, w_stride bytes apart; a: nt activation rows already converted
 * to the weight's vec_dot_type (F32 rows for F32/BF16), a_stride bytes apart.
 * Contract for every kernel: the value of one output depends only on its W row and A row, never
 * on nr, nt or the position inside the block (batch and thread invariance). */
typedef void (*kcpu_gemm_fn)(int64_t n_in, const void *w, size_t w_stride, const void *a, size_t a_stride,
                             float *y, int64_t y_stride, int64_t nr, int64_t nt);

enum { KCPU_ISA_SCALAR = 0, KCPU_ISA_AVX2 = 1, KCPU_ISA_AVX512 = 2 };

typedef struct {
    kcpu_gemm_fn gemm[PAGODA_DTYPE_COUNT];          /* by weight type; NULL: use kref_matmul */
    int tile_rows[PAGODA_DTYPE_COUNT];              /* rows per micro-kernel (for chunking) */
    k_from_float_fn from_float[PAGODA_DTYPE_COUNT]; /* bit-exact with kref's; NULL: use kref's */
    k_vec_dot_fn vec_dot[PAGODA_DTYPE_COUNT];       /* NULL: use kref's */
} kcpu_fns;

/* Filled by the SIMD files; each sets only the entries it implements. */
void kcpu_fill_float_avx2(kcpu_fns *f);
void kcpu_fill_quant_avx2(kcpu_fns *f);
void kcpu_fill_kquant_avx2(kcpu_fns *f);
void kcpu_fill_convert_avx2(kcpu_fns *f);
void kcpu_fill_float_avx512(kcpu_fns *f);
void kcpu_fill_quant_avx512(kcpu_fns *f);
void kcpu_fill_kquant_avx512(kcpu_fns *f);

/* LoRA inner loops (lora_avx2.c; lora.c picks them when the active level is AVX2 or above) */
float kcpu_lora_dot_f16_avx2(int64_t n, const uint16_t *w, const float *x);
void kcpu_lora_axpy_f16_avx2(int64_t n, float a, const uint16_t *b, float *y);
void kcpu_lora_axpy_f32_avx2(int64_t n, float a, const float *b, float *y);

/* The table for the active ISA level. */
const kcpu_fns *kcpu_active(void);
/* Highest level this CPU supports, and the active one. */
int kcpu_isa_max(void);
int kcpu_isa_level(void);
/* Forces the active level to min(level, kcpu_isa_max()); returns the level now active.
 * Not thread-safe against concurrent matmuls (tests and benches only). */
int kcpu_isa_force(int level);


#endif
