/* Helpers shared by the K-quant kernels (gemm_kquant_avx2.c, gemm_kquant_avx512.c): the scales
 * of a Q4_K/Q5_K super-block and the sub-block sums' dot product, as llama.cpp's x86 dot products
 * compute them (integer, exact). Include only from files compiled with AVX2 or wider. */
#ifndef PG_KERNELS_CPU_KQUANT_SIMD_H
#define PG_KERNELS_CPU_KQUANT_SIMD_H

#include <immintrin.h>
#include <stdint.h>

#include "kernels/quants.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* The 8 six-bit scales and mins of a Q4_K/Q5_K super-block (get_scale_min_k4). */
static inline void scales_k4(const uint8_t *q, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        mn[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Sum over the 16 sub-blocks of a Q8_K block of coef[s] * bsums[s], coef as 16-bit lanes;
 * with pairs = 1 the bsums are first added in pairs (32-element sub-blocks, 8 coefs). */
static inline int bsum_dot(const int16_t *bsums, __m128i coef8, __m256i coef16, int pairs) {
    const __m256i b = _mm256_loadu_si256((const __m256i *)bsums);
    __m128i p;
    if (pairs) {
        __m128i s = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
        p = _mm_madd_epi16(coef8, s);
    } else {
        __m256i m = _mm256_madd_epi16(coef16, b);
        p = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    }
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

/* Super-block i of a Q4_K (five = 0) or Q5_K row: its quants, fifth bits (Q5_K, else NULL), the
 * 8 six-bit scales and mins, and the two float scales. */
typedef struct {
    const uint8_t *qs, *qh;
    uint8_t sc[8], mn[8];
    float d, dmin;
} kq45_block;

static inline void kq45_unpack(int five, const void *vw, int64_t i, kq45_block *b) {
    const uint8_t *scales;
    uint16_t dw, dmw;
    if (five) {
        const block_q5_K *x = (const block_q5_K *)vw + i;
        scales = x->scales, b->qs = x->qs, b->qh = x->qh, dw = x->d, dmw = x->dmin;
    } else {
        const block_q4_K *x = (const block_q4_K *)vw + i;
        scales = x->scales, b->qs = x->qs, b->qh = NULL, dw = x->d, dmw = x->dmin;
    }
    scales_k4(scales, b->sc, b->mn);
    b->d = h2f(dw), b->dmin = h2f(dmw);
}

#endif
