/* Internal interface between the qmatmul driver (qmatmul.c: planning, threads) and its AVX2 and
 * AVX-512 kernels (qmatmul_avx2.c, qmatmul_avx512.c). Not part of the public API. */
#ifndef PG_KERNELS_CPU_QMATMUL_IMPL_H
#define PG_KERNELS_CPU_QMATMUL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/qmatmul.h"

/* Kernel paths. Each output's arithmetic is fixed by the path alone (never by n_tok, the tile
 * shape or the thread), which is what makes the product batch and thread invariant. */
enum {
    QMM_FLOAT,   /* any weight kind; float activations (x, e4m3-rounded x, or int8 codes as floats) */
    QMM_Q4_I8,   /* INT4 x int8 codes, 32-element blocks, maddubs */
    QMM_Q8_I8,   /* INT8 x int8 codes widened to int16, madd */
    QMM_GENERIC, /* any group size: scalar, per element */
    QMM_W16_AVX2, /* INT4 x int16 codes as byte planes (QMM_FMT_W16S): maddubs per 64-column half
                     block, exact; each half's lanes scaled by their span's s_g s_span */
    /* AVX-512 (qmatmul_avx512.c): group_size % 32 == 0 or one group per row */
    QMM_F512,    /* float activations; per unit, sum q x then * s, minus z s sum(x) */
    QMM_Q4_VNNI, /* INT4 x int8 codes, vpdpbusd (q unsigned), minus z sum(a) */
    QMM_Q8_VNNI, /* INT8 (as q + 128, unsigned) x int8 codes, vpdpbusd, minus (128 + z) sum(a) */
    QMM_W16,     /* INT4 / INT8 x int16 codes (K_ACT_INT16), vpdpwssd per span, minus z sum(a), then
                    * s_g * s_span */
    QMM_Q8_ROW,  /* INT8 with one group per row x int8 codes: 512-bit vpdpbusd over the whole row,
                    one exact int32 dot product per output (n_in <= QMM_Q8_ROW_MAX_IN), scaled
                    in double as kref_qmatmul does */
};
/* The longest row QMM_Q8_ROW takes: sum (q + 128) a stays within int32 (255 x 127 x n < 2^31). */
#define QMM_Q8_ROW_MAX_IN 65536
/* Layout of one prepared activation row in work */
enum {
    QMM_FMT_F32,   /* floats, zero padded to n_pad */
    QMM_FMT_I8R,   /* int8 codes; each 32-block stored as its 16 even then its 16 odd elements */
    QMM_FMT_I16,   /* int16 codes */
    QMM_FMT_F32R,  /* floats, each 32-block stored as its 16 even then its 16 odd elements */
    QMM_FMT_I8,    /* int8 codes in column order */
    QMM_FMT_I8R128, /* int8 codes; each 128-block stored as its 64 even then its 64 odd elements,
                       zero padded to a multiple of 128 (QMM_Q4_VNNI with 128-column units) */
    QMM_FMT_W16R,  /* int16 codes (K_ACT_INT16), each 32-block stored as its 16 even then its 16 odd
                      elements; the spans' float scales at byte n_pad * 2 (QMM_W16 over INT4) */
    QMM_FMT_W16,   /* the same in column order (QMM_W16 over INT8) */
    QMM_FMT_W16S,  /* int16 codes split into two byte planes (QMM_W16 over INT4 with spans of 128
                      columns, or of 32 / 64 that are its groups): each code is a = 256 hi + lo,
                      hi = a >> 8 (signed), lo = a & 255 (unsigned); each 128-block takes 256
                      bytes: lo of its 64 even columns, lo of its 64 odd ones, then hi of the even,
                      hi of the odd; zero padded to a multiple of 128 columns; the spans' float
                      scales after the planes (qmm_w16_scales_at), their int32 sums at n_pad * 4 */
};

/* Byte offset of the spans' float scales in a prepared K_ACT_INT16 row */
static inline size_t qmm_w16_scales_at(int fmt, int64_t n_pad) {
    return fmt == QMM_FMT_W16S ? (size_t)((n_pad + 127) & ~(int64_t)127) * 2 : (size_t)n_pad * 2;
}

typedef struct {
    const k_qweight *w;
    k_act_kind act;
    int path, fmt;
    int64_t n_tok, n_pad, n_group;
    size_t a_row;  /* bytes between prepared rows: round64(n_pad * 4 + n_pad / 8) */
    /* AVX-512 paths: the row's sums over units of `unit` columns (unit u: columns
     * [u*unit, (u+1)*unit), never across a group), after the codes at byte n_pad * 4 of each
     * prepared row: int32 for the int8 formats (exact), floats (rounded from double) for the float
     * ones; 0: none. A unit is the span of one integer (or float) accumulation. */
    int64_t unit;
    int64_t span;  /* K_ACT_INT16: k_qmatmul_int16_span (QMM_W16: also the unit) */
    float *s_tok;  /* [n_tok] factor applied to each output of token t: s_t (K_ACT_INT8) or 1 */
    char *a;       /* prepared rows */
    float *y;
    int64_t ldy;
} qmm_plan;

/* Prepares activation rows [t0, t1) of x into the plan's work. */
void kcpu_qmm_prep_avx2(const qmm_plan *p, const float *x, int64_t t0, int64_t t1);
/* Computes outputs of rows [r0, r1) for every token. */
void kcpu_qmm_rows_avx2(const qmm_plan *p, int64_t r0, int64_t r1);
void kcpu_qmm_rows_avx512(const qmm_plan *p, int64_t r0, int64_t r1);

#endif
