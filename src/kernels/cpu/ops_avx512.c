/* AVX-512 versions of the non-matmul ops (built with AVX-512 flags; called only after the
 * runtime check in ops.c). Tails use masked loads/stores. */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/ops_isa.h"

/* e^x: 2^n * P(r), r = x - n ln2 (two-constant split), Cephes polynomial (~1-2 ulp).
 * scalef does the 2^n scaling with correct underflow to 0 (x = -inf clamps to -104 -> 0). */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.5f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(int64_t r) { return (__mmask16)((1u << r) - 1u); }

/* Squares of 16 floats added into two double accumulators. */
static inline void acc_sq_pd(__m512 v, __m512d *a0, __m512d *a1) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    *a0 = _mm512_fmadd_pd(lo, lo, *a0);
    *a1 = _mm512_fmadd_pd(hi, hi, *a1);
}

void kavx512_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc_sq_pd(_mm512_loadu_ps(x + i), &a0, &a1);
    if (i < n) acc_sq_pd(_mm512_maskz_loadu_ps(tail_mask(n - i), x + i), &a0, &a1);
    double ss = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
    __m512 vs = _mm512_set1_ps((float)(1.0 / sqrt(ss / (double)n + (double)eps)));
    for (i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vs);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i));
        _mm512_mask_storeu_ps(y + i, k, v);
    }
}

void kavx512_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_maskz_loadu_ps(n - i >= 16 ? 0xFFFF : tail_mask(n - i), x + i);
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
    }
    double mean = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1)) / (double)n;
    const __m512d vm = _mm512_set1_pd(mean);
    a0 = a1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        /* masked-off lanes would add mean^2: zero them after the subtraction */
        __m512d lo = _mm512_maskz_sub_pd((__mmask8)k, _mm512_cvtps_pd(_mm512_castps512_ps256(v)), vm);
        __m512d hi = _mm512_maskz_sub_pd((__mmask8)(k >> 8), _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)), vm);
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    double var = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
    /* mean as float hi + lo, see ops_avx2.c */
    const float fm = (float)mean;
    const __m512 vfm = _mm512_set1_ps(fm), vlo = _mm512_set1_ps((float)(mean - fm));
    const __m512 vfs = _mm512_set1_ps((float)(1.0 / sqrt(var / (double)n + (double)eps)));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vfm), vlo);
        v = _mm512_mul_ps(v, vfs);
        if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i));
        if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
        _mm512_mask_storeu_ps(y + i, k, v);
    }
}

void kavx512_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_maskz_loadu_ps(k, x + i));
    }
    const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm)));
        _mm512_mask_storeu_ps(x + i, k, e);
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    }
    const __m512 inv = _mm512_set1_ps((float)(1.0 / _mm512_reduce_add_pd(_mm512_add_pd(a0, a1))));
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv));
    }
}

void kavx512_silu_mul(float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(k, gate + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 r = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(k, up + i));
        _mm512_mask_storeu_ps(gate + i, k, r);
    }
}

/* 0.5 x (1 + tanh(u)) == x / (1 + e^-2u); see ops_avx2.c. */
void kavx512_gelu(float *x, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        __m512 u = _mm512_mul_ps(_mm512_set1_ps(-2.0f * 0.7978845608028654f),
                                 _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, v));
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(v, _mm512_add_ps(one, exp512(u))));
    }
}

/* Lane i of the result = sum of the lanes of a_i. */
static inline __m256 hsum8x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 a4, __m512 a5,
                              __m512 a6, __m512 a7) {
#define H(a) _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1))
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(H(a0), H(a1)), _mm256_hadd_ps(H(a2), H(a3)));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(H(a4), H(a5)), _mm256_hadd_ps(H(a6), H(a7)));
#undef H
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

void kavx512_attn_tile(float *o, const float *q, const float *const *kp, const float *const *vp,
                       int n, int hd, float scale, float *m, float *l) {
    float s[KOPS_ATTN_TILE + 16];
    const int hd16 = hd & ~15;
    const __mmask16 km = tail_mask(hd - hd16);
    const __m256 vscale = _mm256_set1_ps(scale);
    int j = 0;
    /* scores, eight keys at a time sharing each q chunk */
    for (; j + 8 <= n; j += 8) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        const float *k0 = kp[j], *k1 = kp[j + 1], *k2 = kp[j + 2], *k3 = kp[j + 3];
        const float *k4 = kp[j + 4], *k5 = kp[j + 5], *k6 = kp[j + 6], *k7 = kp[j + 7];
        int d = 0;
        for (; d < hd16; d += 16) {
            __m512 qv = _mm512_loadu_ps(q + d);
            a0 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k0 + d), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k1 + d), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k2 + d), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k3 + d), a3);
            a4 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k4 + d), a4);
            a5 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k5 + d), a5);
            a6 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k6 + d), a6);
            a7 = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k7 + d), a7);
        }
        if (km) {
            __m512 qv = _mm512_maskz_loadu_ps(km, q + d);
            a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k0 + d), a0);
            a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k1 + d), a1);
            a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k2 + d), a2);
            a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k3 + d), a3);
            a4 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k4 + d), a4);
            a5 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k5 + d), a5);
            a6 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k6 + d), a6);
            a7 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(km, k7 + d), a7);
        }
        _mm256_storeu_ps(s + j, _mm256_mul_ps(hsum8x16(a0, a1, a2, a3, a4, a5, a6, a7), vscale));
    }
    for (; j < n; j++) {
        __m512 a = _mm512_setzero_ps();
        int d = 0;
        for (; d < hd16; d += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(kp[j] + d), a);
        if (km) a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(km, q + d), _mm512_maskz_loadu_ps(km, kp[j] + d), a);
        s[j] = _mm512_reduce_add_ps(a) * scale;
    }

    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? 0xFFFF : tail_mask(n - j);
        vmax = _mm512_mask_max_ps(vmax, k, vmax, _mm512_maskz_loadu_ps(k, s + j));
    }
    float tmax = _mm512_reduce_max_ps(vmax);
    float m_new = tmax > *m ? tmax : *m;
    float alpha = expf(*m - m_new); /* 0 on the first tile (m = -inf) */
    const __m512 vmn = _mm512_set1_ps(m_new);
    __m512 vsum = _mm512_setzero_ps();
    for (j = 0; j < n; j += 16) {
        __mmask16 k = n - j >= 16 ? 0xFFFF : tail_mask(n - j);
        __m512 e = _mm512_maskz_mov_ps(k, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vmn)));
        vsum = _mm512_add_ps(vsum, e);
        _mm512_mask_storeu_ps(s + j, k, e);
    }
    *l = *l * alpha + _mm512_reduce_add_ps(vsum);
    *m = m_new;

    /* o = o * alpha + sum_j p_j v_j: 4 vectors of o in registers, two keys per step */
    const __m512 va = _mm512_set1_ps(alpha);
    int d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(o + d), va);
        __m512 a1 = _mm512_mul_ps(_mm512_loadu_ps(o + d + 16), va);
        __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(o + d + 32), va);
        __m512 a3 = _mm512_mul_ps(_mm512_loadu_ps(o + d + 48), va);
        __m512 b0 = _mm512_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
        for (j = 0; j + 2 <= n; j += 2) {
            __m512 p0 = _mm512_set1_ps(s[j]), p1 = _mm512_set1_ps(s[j + 1]);
            const float *v0 = vp[j] + d, *v1 = vp[j + 1] + d;
            a0 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0), a0);
            a1 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16), a1);
            a2 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 32), a2);
            a3 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 48), a3);
            b0 = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1), b0);
            b1 = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1 + 16), b1);
            b2 = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1 + 32), b2);
            b3 = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1 + 48), b3);
        }
        if (j < n) {
            __m512 p0 = _mm512_set1_ps(s[j]);
            const float *v0 = vp[j] + d;
            a0 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0), a0);
            a1 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 16), a1);
            a2 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 32), a2);
            a3 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0 + 48), a3);
        }
        _mm512_storeu_ps(o + d, _mm512_add_ps(a0, b0));
        _mm512_storeu_ps(o + d + 16, _mm512_add_ps(a1, b1));
        _mm512_storeu_ps(o + d + 32, _mm512_add_ps(a2, b2));
        _mm512_storeu_ps(o + d + 48, _mm512_add_ps(a3, b3));
    }
    for (; d < hd; d += 16) {
        __mmask16 k = hd - d >= 16 ? 0xFFFF : tail_mask(hd - d);
        __m512 a0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, o + d), va), b0 = _mm512_setzero_ps();
        for (j = 0; j + 2 <= n; j += 2) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), _mm512_maskz_loadu_ps(k, vp[j] + d), a0);
            b0 = _mm512_fmadd_ps(_mm512_set1_ps(s[j + 1]), _mm512_maskz_loadu_ps(k, vp[j + 1] + d), b0);
        }
        if (j < n) a0 = _mm512_fmadd_ps(_mm512_set1_ps(s[j]), _mm512_maskz_loadu_ps(k, vp[j] + d), a0);
        _mm512_mask_storeu_ps(o + d, k, _mm512_add_ps(a0, b0));
    }
}
