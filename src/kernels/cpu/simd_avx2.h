/* Small AVX helpers shared by the SIMD kernel files (those built with -mavx2 / -mavx512*). */
#ifndef PG_KERNELS_CPU_SIMD_AVX2_H
#define PG_KERNELS_CPU_SIMD_AVX2_H

#include <immintrin.h>

/* Sum of the 8 lanes: (lo128 + hi128), then pairs, then the last two. Every kernel that reduces an
 * 8-float accumulator uses this one order, so their results stay bit-identical to each other. */
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
