/* Weight quantization with an importance matrix: what llama-quantize writes for a row of floats
 * when `--imatrix` gives each column a weight (ggml's quantize_row_*_impl with quant_weights).
 * Without weights the plain quantizers apply (kref_quantize_row). Q8_0 and the float types
 * ignore the weights, as in ggml.
 *
 * The searches below re-express ggml's weighted fits: a symmetric least-squares scale over 19
 * candidate scales (Q4_0, Q5_0, Q6_K sub-blocks), an asymmetric scale + min fit over 37 candidate
 * scales (Q4_1, Q5_1, Q4_K, Q5_K sub-blocks), and for the K-quants a weighted fit of the 6-bit
 * sub-block scales and mins against the super-block scale with a few rounds of per-element
 * refinement. Every float expression keeps ggml's operand order: the searches pick between
 * candidates on 1-ulp differences, so do not "simplify" them. */
#include <math.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/kernels.h"
#include "kernels/quants.h"

/* llama.cpp's quantizers run without FMA: never fuse a*b+c here. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define EPS_ZERO 1e-15f

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* round half to even for |f| <= 4194303, through the float's mantissa bits */
static inline int round_i(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* Symmetric codes in [-nmax, nmax-1] (stored + nmax) for n values with weights w: the scale with
 * the largest (sum w*x*l)^2 / sum w*l^2 among iscale = -(nmax + k/10)/max, k = -9..9. */
static float fit_symmetric(int n, int nmax, const float *x, int8_t *L, const float *w) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < EPS_ZERO) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imax(-nmax, imin(nmax - 1, round_i(iscale * x[i])));
        L[i] = (int8_t)(l + nmax);
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int k = -9; k <= 9; k++) {
        if (!k) continue;
        iscale = -(nmax + 0.1f * k) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(-nmax, imin(nmax - 1, round_i(iscale * x[i])));
            sumlx += w[i] * x[i] * l;
            suml2 += w[i] * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, round_i(iscale * x[i]))));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Asymmetric codes in [0, nmax] with x ~ scale*L - *neg_min: starts from the min/max grid, then
 * tries iscale = (nmax - 0.9 + 0.05*k)/(max - min), k = 0..36, each with the weighted
 * least-squares scale and min (min clamped to <= 0), keeping the smallest weighted squared error. */
static float fit_asymmetric(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min) {
    enum { NSTEP = 36 };
    const float rmin = -0.9f, rdelta = 0.05f;
    uint8_t Laux[32];
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)imax(0, imin(nmax, round_i(iscale * (x[i] - min))));
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best += w[i] * diff;
    }
    for (int k = 0; k <= NSTEP; k++) {
        iscale = (rmin + rdelta * k + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = imax(0, imin(nmax, round_i(iscale * (x[i] - min))));
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; i++) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                err += w[i] * diff;
            }
            if (err < best) {
                memcpy(L, Laux, (size_t)n);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *neg_min = -min;
    return scale;
}

/* Codes in [0, nmax] for n non-negative values (the sub-block scales or mins of a K-quant block)
 * under weights w: the best of 9 scales by weighted squared error, then up to 5 rounds moving
 * single codes while that raises (sum w*x*l)^2 / sum w*l^2. Returns the scale. */
static float fit_positive(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (!max) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; i++) L[i] = (uint8_t)round_i(iscale * x[i]);
    const float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * L[i];
        best += w[i] * diff * diff;
    }
    for (int k = -4; k <= 4; k++) {
        if (!k) continue;
        const float iscale_k = (0.1f * k + nmax) / max;
        const float scale_k = 1 / iscale_k;
        float mse = 0;
        for (int i = 0; i < n; i++) {
            const int l = imin(nmax, round_i(iscale_k * x[i]));
            const float diff = x[i] - scale_k * l;
            mse += w[i] * diff * diff;
        }
        if (mse < best) {
            best = mse;
            iscale = iscale_k;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = imin(nmax, round_i(iscale * x[i]));
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    for (int round = 0; round < 5; round++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i];
            float sl2 = suml2 - w[i] * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                const int new_l = imin(nmax, round_i(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    slx += w[i] * x[i] * new_l;
                    sl2 += w[i] * new_l * new_l;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed++;
                    }
                }
            }
        }
        if (!changed) break;
    }
    return sumlx / suml2;
}

/* mean of x^2 over the row: the legacy types' sigma^2 */
static float row_sigma2(const float *x, int64_t n) {
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++) sum_x2 += x[j] * x[j];
    return sum_x2 / n;
}

/* w[j] = qw[j] * sqrt(sigma2 + x[j]^2), the per-element weight of the legacy and K 4/5-bit types */
static void element_weights(const float *x, const float *qw, float sigma2, float *w, int n) {
    for (int j = 0; j < n; j++) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
}

static void pack_qh32(const uint8_t *L, uint8_t *qs, uint8_t *qh_out) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const uint8_t a = L[j], b = L[j + 16];
        qs[j] = (uint8_t)((a & 0x0F) | ((b & 0x0F) << 4));
        qh |= ((a & 0x10u) >> 4) << j;
        qh |= ((b & 0x10u) >> 4) << (j + 16);
    }
    memcpy(qh_out, &qh, sizeof qh);
}

static void q4_0_w(const float *x, block_q4_0 *y, int64_t n, const float *qw) {
    float w[QK4_0];
    int8_t L[QK4_0];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK4_0; ib++) {
        const float *xb = x + QK4_0 * ib;
        element_weights(xb, qw + QK4_0 * ib, sigma2, w, QK4_0);
        y[ib].d = pg_fp32_to_fp16(fit_symmetric(QK4_0, 8, xb, L, w));
        for (int j = 0; j < 16; j++) y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void q5_0_w(const float *x, block_q5_0 *y, int64_t n, const float *qw) {
    float w[QK5_0];
    int8_t L[QK5_0];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK5_0; ib++) {
        const float *xb = x + QK5_0 * ib;
        element_weights(xb, qw + QK5_0 * ib, sigma2, w, QK5_0);
        y[ib].d = pg_fp32_to_fp16(fit_symmetric(QK5_0, 16, xb, L, w));
        pack_qh32((const uint8_t *)L, y[ib].qs, y[ib].qh);
    }
}

static void q4_1_w(const float *x, block_q4_1 *y, int64_t n, const float *qw) {
    float w[QK4_1], neg_min;
    uint8_t L[QK4_1];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK4_1; ib++) {
        const float *xb = x + QK4_1 * ib;
        element_weights(xb, qw + QK4_1 * ib, sigma2, w, QK4_1);
        const float d = fit_asymmetric(QK4_1, 15, xb, w, L, &neg_min);
        y[ib].d = pg_fp32_to_fp16(d);
        y[ib].m = pg_fp32_to_fp16(-neg_min);
        for (int j = 0; j < 16; j++) y[ib].qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
    }
}

static void q5_1_w(const float *x, block_q5_1 *y, int64_t n, const float *qw) {
    float w[QK5_1], neg_min;
    uint8_t L[QK5_1];
    const float sigma2 = row_sigma2(x, n);
    for (int64_t ib = 0; ib < n / QK5_1; ib++) {
        const float *xb = x + QK5_1 * ib;
        element_weights(xb, qw + QK5_1 * ib, sigma2, w, QK5_1);
        const float d = fit_asymmetric(QK5_1, 31, xb, w, L, &neg_min);
        y[ib].d = pg_fp32_to_fp16(d);
        y[ib].m = pg_fp32_to_fp16(-neg_min);
        pack_qh32(L, y[ib].qs, y[ib].qh);
    }
}

/* Q4_K / Q5_K super-block: 8 sub-blocks fitted with fit_asymmetric, their scales and mins coded
 * in 6 bits by fit_positive (weighted by each sub-block's total weight), then the codes redone
 * from the rounded scales. Fills L[256] and the header fields. */
static void kx_block_w(const float *x, const float *qw, int nmax, uint16_t *yd, uint16_t *ydmin, uint8_t *ysc,
                       uint8_t *L) {
    float w[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
    uint8_t Ls[QK_K / 32], Lm[QK_K / 32];
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; l++) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / QK_K;
    for (int j = 0; j < QK_K / 32; j++) {
        element_weights(x + 32 * j, qw + 32 * j, sigma2, w, 32);
        float sumw = 0;
        for (int l = 0; l < 32; l++) sumw += w[l];
        sw[j] = sumw;
        scales[j] = fit_asymmetric(32, nmax, x + 32 * j, w, L + 32 * j, &mins[j]);
    }
    const float d_block = fit_positive(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = fit_positive(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; j++) {
        const uint8_t ls = Ls[j], lm = Lm[j];
        if (j < 4) {
            ysc[j] = ls;
            ysc[j + 4] = lm;
        } else {
            ysc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            ysc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            ysc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *yd = pg_fp32_to_fp16(d_block);
    *ydmin = pg_fp32_to_fp16(m_block);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        if (j < 4) {
            sc = ysc[j] & 63;
            m = ysc[j + 4] & 63;
        } else {
            sc = (uint8_t)((ysc[j + 4] & 0xF) | ((ysc[j - 4] >> 6) << 4));
            m = (uint8_t)((ysc[j + 4] >> 4) | ((ysc[j] >> 6) << 4));
        }
        const float d = pg_fp16_to_fp32(*yd) * sc;
        if (!d) continue;
        const float dm = pg_fp16_to_fp32(*ydmin) * m;
        for (int ii = 0; ii < 32; ii++)
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, round_i((x[32 * j + ii] + dm) / d)));
    }
}

static void q4_K_w(const float *x, block_q4_K *y, int64_t n, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        memset(y[i].scales, 0, sizeof y[i].scales);
        kx_block_w(x, qw + QK_K * i, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void q5_K_w(const float *x, block_q5_K *y, int64_t n, const float *qw) {
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        memset(y[i].scales, 0, sizeof y[i].scales);
        kx_block_w(x, qw + QK_K * i, 31, &y[i].d, &y[i].dmin, y[i].scales, L);
        uint8_t *qh = y[i].qh, *ql = y[i].qs;
        memset(qh, 0, QK_K / 8);
        uint8_t m1 = 1, m2 = 2;
        for (int k = 0; k < QK_K; k += 64, ql += 32) {
            for (int j = 0; j < 32; j++) {
                int l1 = L[k + j], l2 = L[k + j + 32];
                if (l1 > 15) {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* Q6_K: each 16-value sub-block fitted by fit_symmetric with the imatrix weights as they are
 * (no sigma term), then the plain Q6_K scale coding. */
static void q6_K_w(const float *x, block_q6_K *y, int64_t n, const float *qw) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = fit_symmetric(16, 32, x + 16 * ib, L + 16 * ib, qw + QK_K * i + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < EPS_ZERO) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = pg_fp32_to_fp16(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) y[i].scales[ib] = (int8_t)imin(127, round_i(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = pg_fp16_to_fp32(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++)
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, round_i(x[16 * j + ii] / d))) + 32);
        }
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; l++) {
                const uint8_t q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf;
                const uint8_t q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
                ql[l] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

bool kref_quantize_row_weighted(int dtype, const float *x, void *y, int64_t n, const float *qw) {
    if (!qw) return kref_quantize_row(dtype, x, y, n);
    switch (dtype) {
    case PAGODA_DTYPE_Q4_0: q4_0_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q4_1: q4_1_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q5_0: q5_0_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q5_1: q5_1_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q4_K: q4_K_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q5_K: q5_K_w(x, y, n, qw); return true;
    case PAGODA_DTYPE_Q6_K: q6_K_w(x, y, n, qw); return true;
    default: return kref_quantize_row(dtype, x, y, n); /* Q8_0, F16, BF16, F32: no weights in ggml */
    }
}
