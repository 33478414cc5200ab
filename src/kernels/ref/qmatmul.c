/* Reference matrix product over Hugging Face quantized weights (kernels/qmatmul.h): the
 * specification, scalar and plain. kcpu_qmatmul must agree with it within float summation error,
 * and must round activations exactly as it does.
 *
 * Work layout (shared with the CPU kernels, which size rows for their own formats):
 *   [n_tok floats: per-token activation scale, padded to 64 bytes]
 *   [n_tok rows of round64(n_pad * 4 + n_pad / 8) bytes], n_pad = n_in rounded up to 32
 *   (the last n_pad / 8 bytes of a row: room for the CPU kernels' per-block activation sums).
 * The reference keeps each row as floats: the (permuted) activations as the product sees them,
 * i.e. x itself (K_ACT_FLOAT), the int8 codes as floats (K_ACT_INT8, scale s_t kept aside), or
 * the rounded values times their scale (K_ACT_FP8: e4m3 codes times s_t; K_ACT_INT16: int16
 * codes times their span's scale). */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/qmatmul.h"
#include "kernels/quants.h"
#include "pagoda.h"

/* ---- e4m3fn ---- */

float k_fp8_e4m3_to_float(uint8_t code) {
    int e = (code >> 3) & 15, m = code & 7;
    if (e == 15 && m == 7) return NAN;
    float v = e == 0 ? ldexpf((float)m / 8.0f, -6)          /* subnormal: m/8 * 2^-6 */
                     : ldexpf(1.0f + (float)m / 8.0f, e - 7); /* normal, bias 7 */
    return (code & 0x80) ? -v : v;
}

uint8_t k_fp8_e4m3_from_float(float x) {
    if (isnan(x)) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (a >= 448.0f) return sign | 0x7e; /* saturate (also +-inf) */
    /* the spacing of e4m3 values around a: 2^(E-3) for a in [2^E, 2^(E+1)), E >= -6;
     * 2^-9 below 2^-6 (subnormals) */
    int e2;
    frexpf(a, &e2); /* a = f * 2^e2, f in [0.5, 1) */
    int E = e2 - 1;
    if (E < -6) E = -6;
    float q = ldexpf(1.0f, E - 3);
    float v = nearbyintf(a / q) * q; /* a / q is exact (q a power of two); ties to even */
    if (v == 0.0f) return sign;
    /* v may have carried into the next binade: encode from v itself */
    frexpf(v, &e2);
    E = e2 - 1;
    if (E < -6) return sign | (uint8_t)(v / ldexpf(1.0f, -9)); /* subnormal: m = v / 2^-9 */
    int m = (int)(v / ldexpf(1.0f, E - 3)) - 8;                  /* 8..15 -> 0..7 */
    return sign | (uint8_t)((E + 7) << 3) | (uint8_t)m;          /* v <= 448: never the NaN code */
}

/* ---- work ---- */

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t k_qmatmul_work_size(const k_qweight *w, int64_t n_tok, k_act_kind act) {
    (void)act;
    size_t n_pad = ((size_t)w->n_in + 31) & ~(size_t)31;
    return round64((size_t)n_tok * sizeof(float)) + (size_t)n_tok * round64(n_pad * sizeof(float) + n_pad / 8) + 64;
}

/* ---- activations ---- */

static float row_absmax(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

/* Row t as the product sees it, column order (a[i] from x[perm[i]]); returns the row's scale s_t
 * for K_ACT_INT8 (a holds the integer codes), 1 otherwise. span: K_ACT_INT16's. */
static float prepare_row(const float *x, int64_t n, const int32_t *perm, k_act_kind act, int64_t span, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = x[perm ? perm[i] : i];
    if (act == K_ACT_INT16) {
        for (int64_t i0 = 0; i0 < n; i0 += span) {
            const int64_t len = n - i0 < span ? n - i0 : span;
            const float s = row_absmax(a + i0, len) / 32767.0f;
            for (int64_t i = i0; i < i0 + len; i++) {
                float q = s == 0.0f ? 0.0f : roundf(a[i] / s); /* ties away from zero */
                q = q > 32767.0f ? 32767.0f : q < -32767.0f ? -32767.0f : q;
                a[i] = q * s;
            }
        }
        return 1.0f;
    }
    if (act == K_ACT_INT8) {
        float s = row_absmax(x, n) / 127.0f;
        for (int64_t i = 0; i < n; i++) {
            float q = s == 0.0f ? 0.0f : roundf(a[i] / s); /* ties away from zero */
            a[i] = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        }
        return s;
    }
    if (act == K_ACT_FP8) {
        float s = row_absmax(x, n) / 448.0f;
        for (int64_t i = 0; i < n; i++)
            a[i] = s == 0.0f ? 0.0f : k_fp8_e4m3_to_float(k_fp8_e4m3_from_float(a[i] / s)) * s;
    }
    return 1.0f;
}

/* ---- weights ---- */

/* The code of element (r, i) as an integer (INT4: 0..15, INT8: -128..127). */
static int code_int(const k_qweight *w, int64_t r, int64_t i) {
    const uint8_t *row = w->codes + (size_t)r * k_qweight_row_bytes(w);
    if (w->kind == K_QW_INT4) return (row[i / 2] >> ((i & 1) * 4)) & 15;
    return (int8_t)row[i];
}

static int zero_point(const k_qweight *w, int64_t r, int64_t g) {
    if (!w->zeros) return w->kind == K_QW_INT4 ? 8 : 0;
    uint8_t z = w->zeros[r * k_qweight_n_group(w) + g];
    return w->kind == K_QW_INT8 ? (int8_t)z : z;
}

/* The unscaled value of element (r, i): q - z, or e4m3(code). */
static float unscaled(const k_qweight *w, int64_t r, int64_t i, int z) {
    if (w->kind == K_QW_FP8) return k_fp8_e4m3_to_float(w->codes[(size_t)r * (size_t)w->n_in + (size_t)i]);
    return (float)(code_int(w, r, i) - z);
}

void kref_qmatmul(const k_qweight *w, k_act_kind act, const float *x, int64_t n_tok, float *y, int64_t ldy,
                  void *work) {
    const int64_t n_in = w->n_in, n_out = w->n_out, gs = w->group_size, ng = k_qweight_n_group(w);
    const size_t row_floats = round64((((size_t)n_in + 31) & ~(size_t)31) * sizeof(float)) / sizeof(float);
    float *s_tok = work;
    float *rows = (float *)((char *)work + round64((size_t)n_tok * sizeof(float)));
    for (int64_t t = 0; t < n_tok; t++) s_tok[t] = prepare_row(x + t * n_in, n_in, w->perm, act, k_qmatmul_int16_span(w), rows + t * row_floats);

    for (int64_t t = 0; t < n_tok; t++) {
        const float *a = rows + t * row_floats;
        for (int64_t r = 0; r < n_out; r++) {
            double acc = 0.0;
            for (int64_t g = 0; g < ng; g++) {
                int64_t i0 = g * gs, i1 = i0 + gs < n_in ? i0 + gs : n_in;
                float scale = w->scales[r * ng + g];
                int z = w->kind == K_QW_FP8 ? 0 : zero_point(w, r, g);
                if (act == K_ACT_INT8 && w->kind != K_QW_FP8) {
                    /* integer dot product of the group, then its scale times the row's */
                    int32_t dot = 0;
                    for (int64_t i = i0; i < i1; i++) dot += (code_int(w, r, i) - z) * (int32_t)a[i];
                    acc += (double)(scale * s_tok[t]) * dot;
                } else if (act == K_ACT_INT8) {
                    /* FP8 weights: the group's sum of e4m3(code) * integer activation is exact */
                    double dot = 0.0;
                    for (int64_t i = i0; i < i1; i++) dot += (double)unscaled(w, r, i, 0) * a[i];
                    acc += (double)(scale * s_tok[t]) * dot;
                } else {
                    /* dequantized weight (float) times the activation */
                    for (int64_t i = i0; i < i1; i++) acc += (double)(scale * unscaled(w, r, i, z)) * a[i];
                }
            }
            y[t * ldy + r] = (float)acc;
        }
    }
}

void kref_qweight_dequant(const k_qweight *w, int64_t r0, int64_t n_rows, float *out) {
    const int64_t n_in = w->n_in, gs = w->group_size, ng = k_qweight_n_group(w);
    for (int64_t r = r0; r < r0 + n_rows; r++) {
        float *o = out + (r - r0) * n_in;
        for (int64_t g = 0; g < ng; g++) {
            int64_t i0 = g * gs, i1 = i0 + gs < n_in ? i0 + gs : n_in;
            float scale = w->scales[r * ng + g];
            int z = w->kind == K_QW_FP8 ? 0 : zero_point(w, r, g);
            for (int64_t i = i0; i < i1; i++) o[w->perm ? w->perm[i] : i] = scale * unscaled(w, r, i, z);
        }
    }
}

/* ---- the same values as GGML blocks ---- */

static bool half_exact(float s) { return pg_fp16_to_fp32(pg_fp32_to_fp16(s)) == s; }

int kref_qweight_ggml_type(const k_qweight *w) {
    if (w->perm || w->n_in % 32 || (w->group_size % 32 && w->group_size != w->n_in)) return 0;
    if (w->kind != K_QW_INT4 && w->kind != K_QW_INT8) return 0;
    const int64_t ng = k_qweight_n_group(w);
    const int zero = w->kind == K_QW_INT4 ? 8 : 0; /* what GGML's Q4_0 / Q8_0 subtract */
    for (int64_t r = 0; r < w->n_out; r++)
        for (int64_t g = 0; g < ng; g++) {
            if (!half_exact(w->scales[r * ng + g])) return 0;
            if (w->zeros && zero_point(w, r, g) != zero) return 0;
        }
    return w->kind == K_QW_INT4 ? PAGODA_DTYPE_Q4_0 : PAGODA_DTYPE_Q8_0;
}

int kref_qweight_to_ggml(const k_qweight *w, void *dst) {
    const int type = kref_qweight_ggml_type(w);
    if (!type) return 0;
    const int64_t nb = w->n_in / 32, ng = k_qweight_n_group(w);
    for (int64_t r = 0; r < w->n_out; r++)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t i0 = b * 32;
            const uint16_t d = pg_fp32_to_fp16(w->scales[r * ng + i0 / w->group_size]);
            if (type == PAGODA_DTYPE_Q4_0) {
                block_q4_0 *q = (block_q4_0 *)dst + r * nb + b;
                q->d = d;
                for (int j = 0; j < 16; j++)
                    q->qs[j] = (uint8_t)(code_int(w, r, i0 + j) | code_int(w, r, i0 + j + 16) << 4);
            } else {
                block_q8_0 *q = (block_q8_0 *)dst + r * nb + b;
                q->d = d;
                for (int j = 0; j < 32; j++) q->qs[j] = (int8_t)code_int(w, r, i0 + j);
            }
        }
    return type;
}
