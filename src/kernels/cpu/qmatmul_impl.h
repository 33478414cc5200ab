/* Internal interface between the qmatmul driver (qmatmul.c: planning, threads) and its AVX2
 * kernels (qmatmul_avx2.c). Not part of the public API. */
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
};
/* Layout of one prepared activation row in work */
enum {
    QMM_FMT_F32,   /* floats, zero padded to n_pad */
    QMM_FMT_I8R,   /* int8 codes; each 32-block stored as its 16 even then its 16 odd elements */
    QMM_FMT_I16,   /* int16 codes */
};

typedef struct {
    const k_qweight *w;
    k_act_kind act;
    int path, fmt;
    int64_t n_tok, n_pad, n_group;
    size_t a_row;  /* bytes between prepared rows */
    float *s_tok;  /* [n_tok] factor applied to each output of token t: s_t (K_ACT_INT8) or 1 */
    char *a;       /* prepared rows */
    float *y;
    int64_t ldy;
} qmm_plan;

/* Prepares activation rows [t0, t1) of x into the plan's work. */
void kcpu_qmm_prep_avx2(const qmm_plan *p, const float *x, int64_t t0, int64_t t1);
/* Computes outputs of rows [r0, r1) for every token. */
void kcpu_qmm_rows_avx2(const qmm_plan *p, int64_t r0, int64_t r1);

#endif
