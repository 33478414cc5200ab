/* LoRA inner loops with AVX2 + FMA + F16C: the A product's dot of a half row with a float row,
 * and the B product's axpy of a half (or float) row into an output row. */
#include <immintrin.h>

#include "kernels/cpu/cpu_impl.h"
#include "kernels/cpu/simd_avx2.h"

static inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

float kcpu_lora_dot_f16_avx2(int64_t n, const uint16_t *w, const float *x) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
    float s = hsum8(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += half_to_float(w[i]) * x[i];
    return s;
}

void kcpu_lora_axpy_f16_avx2(int64_t n, float a, const uint16_t *b, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * half_to_float(b[i]);
}

void kcpu_lora_axpy_f32_avx2(int64_t n, float a, const float *b, float *y) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(b + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * b[i];
}
