/* AVX2/FMA versions of the non-matmul ops (built with -mavx2 -mfma; called only after the
 * runtime check in ops.c). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/exp_avx2.h"
#include "kernels/cpu/ops_isa.h"


static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline double hsum256d(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* Lane i of the result = sum of the lanes of a_i: eight dot products finished at once. */
static inline __m256 hsum8x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5,
                             __m256 a6, __m256 a7) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* Sum of squares in double: the norms must track HF float32 to 1e-4 on logits. */
void kavx2_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    double ss = hsum256d(_mm256_add_pd(a0, a1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    __m256 vs = _mm256_set1_ps(s);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vs);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) y[i] = x[i] * s * (w ? w[i] : 1.0f);
}

void kavx2_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double sum = hsum256d(_mm256_add_pd(a0, a1));
    for (; i < n; i++) sum += x[i];
    double mean = sum / (double)n;
    __m256d vm = _mm256_set1_pd(mean);
    a0 = a1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vm);
        __m256d hi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vm);
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    double var = hsum256d(_mm256_add_pd(a0, a1));
    for (; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    double sd = 1.0 / sqrt(var / (double)n + (double)eps);
    /* mean as float hi + lo: x - hi is exact when x is near the mean (the large-offset case),
     * so (x - hi) - lo loses nothing a float mean would */
    float fm = (float)mean, fm_lo = (float)(mean - fm), fs = (float)sd;
    __m256 vfm = _mm256_set1_ps(fm), vlo = _mm256_set1_ps(fm_lo), vfs = _mm256_set1_ps(fs);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vfm), vlo), vfs);
        if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) {
        float v = ((x[i] - fm) - fm_lo) * fs;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

void kavx2_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float mx = hmax256(vmax);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    __m256 vm = _mm256_set1_ps(mx);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double sum = hsum256d(_mm256_add_pd(a0, a1));
    if (i < n) { /* padding lanes are -inf: exp 0 */
        float t[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, exp256(_mm256_sub_ps(_mm256_loadu_ps(t), vm)));
        for (int64_t j = i; j < n; j++) sum += t[j - i];
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= _mm256_cvtss_f32(inv);
}

static inline __m256 silu_mul8(__m256 g, __m256 u) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

void kavx2_silu_mul(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(gate + i, silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    if (i < n) { /* last n % 8 through a padded buffer: same math as the full lanes */
        float g[8] = {0}, u[8] = {0};
        memcpy(g, gate + i, (size_t)(n - i) * sizeof(float));
        memcpy(u, up + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(g, silu_mul8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(gate + i, g, (size_t)(n - i) * sizeof(float));
    }
}

/* 0.5 x (1 + tanh(u)) == x * sigmoid(2u) = x / (1 + e^-2u): same function, and it avoids the
 * cancellation in 1 + tanh(u) for negative u. */
static inline __m256 gelu8(__m256 x) {
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                             _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    __m256 e = exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

void kavx2_gelu(float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
    if (i < n) {
        float t[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(t, gelu8(_mm256_loadu_ps(t)));
        memcpy(x + i, t, (size_t)(n - i) * sizeof(float));
    }
}

void kavx2_attn_tile(float *o, const float *q, const float *const *kp, const float *const *vp,
                     int n, int hd, float scale, float *m, float *l) {
    float s[KOPS_ATTN_TILE + 8];
    const __m256 vscale = _mm256_set1_ps(scale);
    int j = 0;
    /* scores, eight keys at a time: each q chunk is loaded once for the eight keys */
    for (; j + 8 <= n; j += 8) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        const float *k0 = kp[j], *k1 = kp[j + 1], *k2 = kp[j + 2], *k3 = kp[j + 3];
        const float *k4 = kp[j + 4], *k5 = kp[j + 5], *k6 = kp[j + 6], *k7 = kp[j + 7];
        for (int d = 0; d < hd; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
            a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k4 + d), a4);
            a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k5 + d), a5);
            a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k6 + d), a6);
            a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k7 + d), a7);
        }
        _mm256_storeu_ps(s + j, _mm256_mul_ps(hsum8x8(a0, a1, a2, a3, a4, a5, a6, a7), vscale));
    }
    for (; j < n; j++) {
        __m256 a = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kp[j] + d), a);
        s[j] = hsum256(a) * scale;
    }
    /* pad to whole vectors with -inf: those lanes become exp() = 0 */
    int n8 = (n + 7) & ~7;
    for (j = n; j < n8; j++) s[j] = -INFINITY;

    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (j = 0; j < n8; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
    float tmax = hmax256(vmax);
    float m_new = tmax > *m ? tmax : *m;
    float alpha = expf(*m - m_new); /* 0 on the first tile (m = -inf) */
    __m256 vmn = _mm256_set1_ps(m_new), vsum = _mm256_setzero_ps();
    for (j = 0; j < n8; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmn));
        vsum = _mm256_add_ps(vsum, e);
        _mm256_storeu_ps(s + j, e);
    }
    *l = *l * alpha + hsum256(vsum);
    *m = m_new;

    /* o = o * alpha + sum_j p_j v_j; 4 vectors of o in registers, two keys per step (two
     * accumulator sets keep both FMA pipes busy) */
    const __m256 va = _mm256_set1_ps(alpha);
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(o + d), va);
        __m256 a1 = _mm256_mul_ps(_mm256_loadu_ps(o + d + 8), va);
        __m256 a2 = _mm256_mul_ps(_mm256_loadu_ps(o + d + 16), va);
        __m256 a3 = _mm256_mul_ps(_mm256_loadu_ps(o + d + 24), va);
        __m256 b0 = _mm256_setzero_ps(), b1 = b0, b2 = b0, b3 = b0;
        for (j = 0; j + 2 <= n; j += 2) {
            __m256 p0 = _mm256_broadcast_ss(s + j), p1 = _mm256_broadcast_ss(s + j + 1);
            const float *v0 = vp[j] + d, *v1 = vp[j + 1] + d;
            a0 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0), a0);
            a1 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8), a1);
            a2 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 16), a2);
            a3 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 24), a3);
            b0 = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1), b0);
            b1 = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 8), b1);
            b2 = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 16), b2);
            b3 = _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + 24), b3);
        }
        if (j < n) {
            __m256 p0 = _mm256_broadcast_ss(s + j);
            const float *v0 = vp[j] + d;
            a0 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0), a0);
            a1 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 8), a1);
            a2 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 16), a2);
            a3 = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + 24), a3);
        }
        _mm256_storeu_ps(o + d, _mm256_add_ps(a0, b0));
        _mm256_storeu_ps(o + d + 8, _mm256_add_ps(a1, b1));
        _mm256_storeu_ps(o + d + 16, _mm256_add_ps(a2, b2));
        _mm256_storeu_ps(o + d + 24, _mm256_add_ps(a3, b3));
    }
    for (; d < hd; d += 8) {
        __m256 a0 = _mm256_mul_ps(_mm256_loadu_ps(o + d), va), b0 = _mm256_setzero_ps();
        for (j = 0; j + 2 <= n; j += 2) {
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + j), _mm256_loadu_ps(vp[j] + d), a0);
            b0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + j + 1), _mm256_loadu_ps(vp[j + 1] + d), b0);
        }
        if (j < n) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + j), _mm256_loadu_ps(vp[j] + d), a0);
        _mm256_storeu_ps(o + d, _mm256_add_ps(a0, b0));
    }
}
