/* Scalar reference kernels for the GGUF block types: the specification the fast kernels are
 * tested against. Block layouts and quantizer arithmetic follow llama.cpp (ggml-quants.c) so that
 * weights quantized here are byte-identical to llama-quantize output (no imatrix), and activation
 * quantization follows llama.cpp's x86 CPU path so logits match llama.cpp.
 *
 * Float expressions are written in the same order as llama.cpp on purpose: quantizer decisions
 * (rounding, best-scale search) flip on 1-ulp differences, so do not "simplify" them.
 * Dot products sum integer products exactly per block and accumulate blocks in double. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "kernels/kernels.h"
#include "kernels/quants.h"

/* Never fuse a*b+c into an FMA here (e.g. if built with -march=native): llama.cpp's quantizers run
 * without FMA, and one fused rounding changes which scale the search picks. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define GROUP_MAX_EPS 1e-15f

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }

/* Round to nearest, ties to even, for |f| <= 4194303 (llama.cpp's nearest_int: adding 1.5*2^23
 * leaves the rounded integer in the low mantissa bits). */
static inline int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline float h2f(uint16_t h) { return pg_fp16_to_fp32(h); }
static inline uint16_t f2h(float f) { return pg_fp32_to_fp16(f); }

/* ---- plain types ---- */

static void f32_from_float(const float *x, void *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof(float)); }
static void f32_to_float(const void *x, float *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof(float)); }
static float f32_vec_dot(int64_t n, const void *w, const void *a) {
    const float *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * y[i];
    return (float)s;
}

static void f16_from_float(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = f2h(x[i]);
}
static void f16_to_float(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = h2f(x[i]);
}
/* F16 weights . F16 activations (activations were rounded to F16, as llama.cpp does). */
static float f16_vec_dot(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)h2f(x[i]) * h2f(y[i]);
    return (float)s;
}

static void bf16_from_float(const float *x, void *vy, int64_t n) {
    uint16_t *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = pg_fp32_to_bf16(x[i]);
}
static void bf16_to_float(const void *vx, float *y, int64_t n) {
    const uint16_t *x = vx;
    for (int64_t i = 0; i < n; i++) y[i] = pg_bf16_to_fp32(x[i]);
}
/* BF16 weights . exact F32 activations (HF-level accuracy; llama.cpp would round to BF16). */
static float bf16_vec_dot(int64_t n, const void *w, const void *a) {
    const uint16_t *x = w;
    const float *y = a;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)pg_bf16_to_fp32(x[i]) * y[i];
    return (float)s;
}

/* ---- Q4_0 / Q4_1 / Q5_0 / Q5_1: weight-only, llama.cpp quantize_row_*_ref ---- */

static void q4_0_from_float(const float *x, void *vy, int64_t n) {
    block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / QK4_0; i++, x += QK4_0) {
        float amax = 0.0f, max = 0.0f; /* max keeps its sign: the scale maps it to -8 */
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QK4_0 / 2 + j] * id;
            const uint8_t q0 = (uint8_t)imin(15, (int8_t)(x0 + 8.5f));
            const uint8_t q1 = (uint8_t)imin(15, (int8_t)(x1 + 8.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q4_0_to_float(const void *vx, float *y, int64_t n) {
    const block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / QK4_0; i++, y += QK4_0) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = ((x[i].qs[j] & 0x0f) - 8) * d;
            y[j + QK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void q4_1_from_float(const float *x, void *vy, int64_t n) {
    block_q4_1 *y = vy;
    for (int64_t i = 0; i < n / QK4_1; i++, x += QK4_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[QK4_1 / 2 + j] - min) * id;
            const uint8_t q0 = (uint8_t)imin(15, (int8_t)(x0 + 0.5f));
            const uint8_t q1 = (uint8_t)imin(15, (int8_t)(x1 + 0.5f));
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q4_1_to_float(const void *vx, float *y, int64_t n) {
    const block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / QK4_1; i++, y += QK4_1) {
        const float d = h2f(x[i].d), m = h2f(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (x[i].qs[j] & 0x0f) * d + m;
            y[j + QK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
        }
    }
}

static void q5_0_from_float(const float *x, void *vy, int64_t n) {
    block_q5_0 *y = vy;
    for (int64_t i = 0; i < n / QK5_0; i++, x += QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; j++) {
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const float x0 = x[j] * id, x1 = x[QK5_0 / 2 + j] * id;
            const uint8_t q0 = (uint8_t)imin(31, (int8_t)(x0 + 16.5f));
            const uint8_t q1 = (uint8_t)imin(31, (int8_t)(x1 + 16.5f));
            y[i].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j; /* bit 4 of element j goes to qh bit j */
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + QK5_0 / 2);
        }
        memcpy(y[i].qh, &qh, sizeof qh);
    }
}

static void q5_0_to_float(const void *vx, float *y, int64_t n) {
    const block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / QK5_0; i++, y += QK5_0) {
        const float d = h2f(x[i].d);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int h0 = (qh >> j) & 1, h1 = (qh >> (j + QK5_0 / 2)) & 1;
            y[j] = (((x[i].qs[j] & 0x0f) | (h0 << 4)) - 16) * d;
            y[j + QK5_0 / 2] = (((x[i].qs[j] >> 4) | (h1 << 4)) - 16) * d;
        }
    }
}

static void q5_1_from_float(const float *x, void *vy, int64_t n) {
    block_q5_1 *y = vy;
    for (int64_t i = 0; i < n / QK5_1; i++, x += QK5_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK5_1; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f2h(d);
        y[i].m = f2h(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[QK5_1 / 2 + j] - min) * id;
            const uint8_t q0 = (uint8_t)(x0 + 0.5f);
            const uint8_t q1 = (uint8_t)(x1 + 0.5f);
            y[i].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)((q0 & 0x10u) >> 4) << j;
            qh |= (uint32_t)((q1 & 0x10u) >> 4) << (j + QK5_1 / 2);
        }
        memcpy(y[i].qh, &qh, sizeof qh);
    }
}

static void q5_1_to_float(const void *vx, float *y, int64_t n) {
    const block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / QK5_1; i++, y += QK5_1) {
        const float d = h2f(x[i].d), m = h2f(x[i].m);
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int h0 = (qh >> j) & 1, h1 = (qh >> (j + QK5_1 / 2)) & 1;
            y[j] = ((x[i].qs[j] & 0x0f) | (h0 << 4)) * d + m;
            y[j + QK5_1 / 2] = ((x[i].qs[j] >> 4) | (h1 << 4)) * d + m;
        }
    }
}

/* ---- Q8_0 / Q8_1 ----
 * One from_float serves both weights and activations, and we choose llama.cpp's x86 activation
 * numerics (quantize_row_q8_0/q8_1 with AVX2): d = amax/127 stored as fp16, q = round-half-even(
 * x * (127/amax)). Activation rounding is what decides whether logits match llama.cpp (every token,
 * every layer), while llama-quantize's Q8_0 weights (quantize_row_q8_0_ref: id = 1/d, roundf) differ
 * from ours only where x*id lands within ~1 ulp of a .5 tie: a few quants per 10^5, off by one.
 * The scale bytes are identical in both. */
static void q8_0_from_float(const float *x, void *vy, int64_t n) {
    block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = f2h(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)nearest_int(x[j] * id);
    }
}

static void q8_0_to_float(const void *vx, float *y, int64_t n) {
    const block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / QK8_0; i++, y += QK8_0) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < QK8_0; j++) y[j] = x[i].qs[j] * d;
    }
}

/* Activation-only; same numerics as Q8_0 plus s = fp16(d * sum(q)) with the unrounded d. */
static void q8_1_from_float(const float *x, void *vy, int64_t n) {
    block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / QK8_1; i++, x += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = f2h(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            y[i].qs[j] = (int8_t)nearest_int(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = f2h(d * (float)sum);
    }
}

static void q8_1_to_float(const void *vx, float *y, int64_t n) {
    const block_q8_1 *x = vx;
    for (int64_t i = 0; i < n / QK8_1; i++, y += QK8_1) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < QK8_1; j++) y[j] = x[i].qs[j] * d;
    }
}

/* ---- dot products of the 32-blocks ---- */

static float q4_0_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            sumi += ((x[i].qs[j] & 0x0f) - 8) * y[i].qs[j];
            sumi += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
        }
        s += (double)(h2f(x[i].d) * h2f(y[i].d)) * sumi;
    }
    return (float)s;
}

/* Q4_1 . Q8_1: sum(d*q + m)*(dy*qy) = d*dy*sum(q*qy) + m*s, which is why Q8_1 carries s. */
static float q4_1_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        int sumi = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            sumi += (x[i].qs[j] & 0x0f) * y[i].qs[j];
            sumi += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
        }
        s += (double)(h2f(x[i].d) * h2f(y[i].d)) * sumi + (double)(h2f(x[i].m) * h2f(y[i].s));
    }
    return (float)s;
}

static float q5_0_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        int sumi = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int q0 = ((x[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4)) - 16;
            const int q1 = ((x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_0 / 2];
        }
        s += (double)(h2f(x[i].d) * h2f(y[i].d)) * sumi;
    }
    return (float)s;
}

static float q5_1_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        uint32_t qh;
        memcpy(&qh, x[i].qh, sizeof qh);
        int sumi = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int q0 = (x[i].qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            const int q1 = (x[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            sumi += q0 * y[i].qs[j] + q1 * y[i].qs[j + QK5_1 / 2];
        }
        s += (double)(h2f(x[i].d) * h2f(y[i].d)) * sumi + (double)(h2f(x[i].m) * h2f(y[i].s));
    }
    return (float)s;
}

static float q8_0_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q8_0 *x = w;
    const block_q8_0 *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) sumi += x[i].qs[j] * y[i].qs[j];
        s += (double)(h2f(x[i].d) * h2f(y[i].d)) * sumi;
    }
    return (float)s;
}

/* ---- K-quant helpers (llama.cpp make_qx_quants / make_qkx2_quants, no imatrix) ---- */

/* Symmetric quants in [-nmax, nmax-1] (stored +nmax) with a weighted least-squares scale search;
 * rmse_type 1 = weights x^2, the only mode Q6_K uses without an imatrix. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        const float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = nearest_int(iscale * x[i]);
        l = imax(-nmax, imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * x[i]);
            l = imax(-nmax, imin(nmax - 1, l));
            const float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Asymmetric quants in [0, nmax] with x ~ scale*L - the_min: tries nstep+1 candidate scales and
 * keeps the weighted least-squares fit (scale and min) with the smallest weighted error. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                              float *the_min, uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; i++) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)imax(0, imin(nmax, l));
        const float diff = scale * L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = nearest_int(iscale * (x[i] - min));
            l = imax(0, imin(nmax, l));
            Laux[i] = (uint8_t)l;
            const float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; i++) {
                const float diff = this_scale * Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* 6-bit scale and min of sub-block j from the 12 packed bytes (Q4_K/Q5_K). */
static inline void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32, each fitted with
 * make_qkx2_quants, scales and mins quantized to 6 bits against the super-block maxima, then the
 * quants recomputed from the rounded scales. Fills L[256] and the header fields of y. */
static void quantize_kx_block(const float *x, int nmax, float rmin, int nstep, uint16_t *yd, uint16_t *ydmin,
                              uint8_t *yscales, uint8_t *L) {
    uint8_t Laux[32];
    float weights[32], mins[QK_K / 32], scales[QK_K / 32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 32; j++) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]); /* wraps like llama.cpp's uint8_t */
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = (uint8_t)imin(63, ls);
        lm = (uint8_t)imin(63, lm);
        if (j < 4) {
            yscales[j] = ls;
            yscales[j + 4] = lm;
        } else {
            yscales[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
            yscales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            yscales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    *yd = f2h(max_scale / 63.f);
    *ydmin = f2h(max_min / 63.f);
    for (int j = 0; j < QK_K / 32; j++) {
        uint8_t sc, m;
        get_scale_min_k4(j, yscales, &sc, &m);
        const float d = h2f(*yd) * sc;
        if (!d) continue;
        const float dm = h2f(*ydmin) * m;
        for (int ii = 0; ii < 32; ii++) {
            const int l = nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)imax(0, imin(nmax, l));
        }
    }
}

/* ---- Q4_K ---- */

static void q4_K_from_float(const float *x, void *vy, int64_t n) {
    block_q4_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quantize_kx_block(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* 64 elements per 32 bytes: first 32 in low nibbles, next 32 in high nibbles */
        uint8_t *q = y[i].qs;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

static void q4_K_to_float(const void *vx, float *y, int64_t n) {
    const block_q4_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(x[i].d), min = h2f(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0, is = 0; j < QK_K; j += 64, q += 32, is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (q[l] & 0xf) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

/* Q4_K . Q8_K: sum_j d*sc_j*sum(q*qy) - dmin*m_j*sum(qy); the second sum comes from bsums. */
static float q4_K_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q4_K *x = w;
    const block_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const uint8_t *q = x[i].qs;
        const int8_t *qy = y[i].qs;
        int sum_q = 0, sum_m = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            const uint8_t *qq = q + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            int sumi = 0;
            for (int l = 0; l < 32; l++) sumi += ((qq[l] >> shift) & 0xf) * qy[32 * j + l];
            sum_q += sc * sumi;
            sum_m += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        s += (double)(h2f(x[i].d) * y[i].d) * sum_q - (double)(h2f(x[i].dmin) * y[i].d) * sum_m;
    }
    return (float)s;
}

/* ---- Q5_K ---- */

static void q5_K_from_float(const float *x, void *vy, int64_t n) {
    block_q5_K *y = vy;
    uint8_t L[QK_K];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        quantize_kx_block(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* low 4 bits as in Q4_K; bit 4 of element 64*k + l (+32) goes to qh[l] bit 2k (2k+1) */
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

static void q5_K_to_float(const void *vx, float *y, int64_t n) {
    const block_q5_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(x[i].d), min = h2f(x[i].dmin);
        const uint8_t *ql = x[i].qs, *qh = x[i].qh;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < QK_K; j += 64, ql += 32, is += 2) {
            uint8_t sc, m;
            get_scale_min_k4(is, x[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            get_scale_min_k4(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * ((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static float q5_K_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q5_K *x = w;
    const block_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const int8_t *qy = y[i].qs;
        int sum_q = 0, sum_m = 0;
        for (int j = 0; j < QK_K / 32; j++) {
            uint8_t sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            const uint8_t *ql = x[i].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            int sumi = 0;
            for (int l = 0; l < 32; l++) {
                const int q = ((ql[l] >> shift) & 0xf) | (((x[i].qh[l] >> j) & 1) << 4);
                sumi += q * qy[32 * j + l];
            }
            sum_q += sc * sumi;
            sum_m += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
        }
        s += (double)(h2f(x[i].d) * y[i].d) * sum_q - (double)(h2f(x[i].dmin) * y[i].d) * sum_m;
    }
    return (float)s;
}

/* ---- Q6_K ---- */

/* Element e of a super-block (0..255): 6-bit quant in [0, 63] (subtract 32 for the value). */
static inline int q6_K_quant(const block_q6_K *b, int e) {
    const int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    const uint8_t *ql = b->ql + 64 * half + 32 * (quarter & 1);
    const int lo = quarter < 2 ? (ql[l] & 0xf) : (ql[l] >> 4);
    const int hi = (b->qh[32 * half + l] >> (2 * quarter)) & 3;
    return lo | (hi << 4);
}

static void q6_K_from_float(const float *x, void *vy, int64_t n) {
    block_q6_K *y = vy;
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < QK_K / 16; ib++) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            if (fabsf(scale) > max_abs_scale) {
                max_abs_scale = fabsf(scale);
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -128.f / max_scale;
        y[i].d = f2h(1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ib++) y[i].scales[ib] = (int8_t)imin(127, nearest_int(iscale * scales[ib]));
        for (int j = 0; j < QK_K / 16; j++) {
            const float d = h2f(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ii++) {
                const int l = nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(imax(-32, imin(31, l)) + 32);
            }
        }
        /* per 128: ql[l] = e(l) | e(l+64)<<4, ql[l+32] = e(l+32) | e(l+96)<<4, qh[l] = 2-bit highs */
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

static void q6_K_to_float(const void *vx, float *y, int64_t n) {
    const block_q6_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K) {
        const float d = h2f(x[i].d);
        for (int e = 0; e < QK_K; e++) y[e] = d * x[i].scales[e / 16] * (q6_K_quant(&x[i], e) - 32);
    }
}

static float q6_K_vec_dot(int64_t n, const void *w, const void *a) {
    const block_q6_K *x = w;
    const block_q8_K *y = a;
    double s = 0;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int sum = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int sumi = 0;
            for (int l = 0; l < 16; l++) sumi += (q6_K_quant(&x[i], 16 * j + l) - 32) * y[i].qs[16 * j + l];
            sum += x[i].scales[j] * sumi;
        }
        s += (double)(h2f(x[i].d) * y[i].d) * sum;
    }
    return (float)s;
}

/* ---- Q8_K (activations for K-quant dot products), llama.cpp quantize_row_q8_K_ref, which is
 * also what its x86 CPU path uses: the signed element with the largest |x| maps to -127. ---- */

static void q8_K_from_float(const float *x, void *vy, int64_t n) {
    block_q8_K *y = vy;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0, amax = 0;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]); /* llama.cpp leaves bsums stale here; zero is the right sum */
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) y[i].qs[j] = (int8_t)imin(127, nearest_int(iscale * x[j]));
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

static void q8_K_to_float(const void *vx, float *y, int64_t n) {
    const block_q8_K *x = vx;
    for (int64_t i = 0; i < n / QK_K; i++, y += QK_K)
        for (int j = 0; j < QK_K; j++) y[j] = x[i].d * x[i].qs[j];
}

/* ---- table ---- */

static const k_type_traits k_ref_traits[PAGODA_DTYPE_COUNT] = {
    [PAGODA_DTYPE_F32] = {PAGODA_DTYPE_F32, f32_from_float, f32_to_float, f32_vec_dot},
    [PAGODA_DTYPE_F16] = {PAGODA_DTYPE_F16, f16_from_float, f16_to_float, f16_vec_dot},
    [PAGODA_DTYPE_BF16] = {PAGODA_DTYPE_F32, bf16_from_float, bf16_to_float, bf16_vec_dot},
    [PAGODA_DTYPE_Q4_0] = {PAGODA_DTYPE_Q8_0, q4_0_from_float, q4_0_to_float, q4_0_vec_dot},
    [PAGODA_DTYPE_Q4_1] = {PAGODA_DTYPE_Q8_1, q4_1_from_float, q4_1_to_float, q4_1_vec_dot},
    [PAGODA_DTYPE_Q5_0] = {PAGODA_DTYPE_Q8_0, q5_0_from_float, q5_0_to_float, q5_0_vec_dot},
    [PAGODA_DTYPE_Q5_1] = {PAGODA_DTYPE_Q8_1, q5_1_from_float, q5_1_to_float, q5_1_vec_dot},
    [PAGODA_DTYPE_Q8_0] = {PAGODA_DTYPE_Q8_0, q8_0_from_float, q8_0_to_float, q8_0_vec_dot},
    [PAGODA_DTYPE_Q8_1] = {PAGODA_DTYPE_Q8_1, q8_1_from_float, q8_1_to_float, NULL},
    [PAGODA_DTYPE_Q4_K] = {PAGODA_DTYPE_Q8_K, q4_K_from_float, q4_K_to_float, q4_K_vec_dot},
    [PAGODA_DTYPE_Q5_K] = {PAGODA_DTYPE_Q8_K, q5_K_from_float, q5_K_to_float, q5_K_vec_dot},
    [PAGODA_DTYPE_Q6_K] = {PAGODA_DTYPE_Q8_K, q6_K_from_float, q6_K_to_float, q6_K_vec_dot},
    [PAGODA_DTYPE_Q8_K] = {PAGODA_DTYPE_Q8_K, q8_K_from_float, q8_K_to_float, NULL},
};

const k_type_traits *kref_traits(int dtype) {
    if (dtype < 0 || dtype >= PAGODA_DTYPE_COUNT || !k_ref_traits[dtype].to_float) return NULL;
    return &k_ref_traits[dtype];
}
