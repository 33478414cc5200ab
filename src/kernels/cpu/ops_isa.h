/* Internal to kernels/cpu: the per-ISA pieces behind the kcpu_* ops of ops.h. ops.c picks
 * them by the level dispatch.c chose (kcpu_isa_level(), see cpu_impl.h). */
#ifndef PG_KERNELS_CPU_OPS_ISA_H
#define PG_KERNELS_CPU_OPS_ISA_H

#include <stdint.h>

/* One query row against n keys of one tile (online softmax step):
 *   s_j = scale * dot(q, k_j);  m' = max(m, max_j s_j);
 *   o = o * exp(m - m') + sum_j exp(s_j - m') v_j;  l = l * exp(m - m') + sum_j exp(s_j - m')
 * kp/vp: n pointers to head_dim floats. n <= KOPS_ATTN_TILE. o is unnormalised until the end. */
#define KOPS_ATTN_TILE 64
typedef void (*kops_attn_tile_fn)(float *o, const float *q, const float *const *kp,
                                  const float *const *vp, int n, int hd, float scale, float *m,
                                  float *l);

void kavx2_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
void kavx2_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);
void kavx2_softmax(float *x, int64_t n);
void kavx2_silu_mul(float *gate, const float *up, int64_t n);
void kavx2_gelu(float *x, int64_t n);
void kavx2_attn_tile(float *o, const float *q, const float *const *kp, const float *const *vp,
                     int n, int hd, float scale, float *m, float *l); /* hd % 8 == 0 */

void kavx512_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
void kavx512_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);
void kavx512_softmax(float *x, int64_t n);
void kavx512_silu_mul(float *gate, const float *up, int64_t n);
void kavx512_gelu(float *x, int64_t n);
void kavx512_attn_tile(float *o, const float *q, const float *const *kp, const float *const *vp,
                       int n, int hd, float scale, float *m, float *l); /* any hd */

#endif
