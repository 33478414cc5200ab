/* Scalar reference for the non-matmul transformer ops: the specification kcpu_* is tested
 * against. Plain loops; sums in double so the reference is the accurate side of a comparison. */
#include "core/fp16.h"
#include "core/fp8.h"
#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

void kref_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    /* HF: x * rsqrt(mean + eps) in float32; we compute the scale in double and round once. */
    float s = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * (w ? w[i] : 1.0f);
}

void kref_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mean = sum / (double)n;
    double var = 0.0; /* two passes: no cancellation when |mean| >> std */
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    double s = 1.0 / sqrt(var / (double)n + (double)eps);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)((x[i] - mean) * s);
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

void kref_rope(float *x, int n_head, int head_dim, int rope_dim, int32_t pos, const float *inv_freq, bool neox) {
    int half = rope_dim / 2;
    for (int h = 0; h < n_head; h++) {
        float *xh = x + (size_t)h * head_dim;
        for (int i = 0; i < half; i++) {
            /* angle rounded to float as HF does (float32 positions times float32 inv_freq) */
            float theta = (float)pos * inv_freq[i];
            float c = cosf(theta), s = sinf(theta);
            int i0 = neox ? i : 2 * i;
            int i1 = neox ? i + half : 2 * i + 1;
            float a = xh[i0], bb = xh[i1];
            xh[i0] = a * c - bb * s;
            xh[i1] = a * s + bb * c;
        }
    }
}

void kref_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void kref_silu_mul(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kref_gelu(float *x, int64_t n) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

/* Keys are visited in tiles of this many positions; each tile updates a running max m, running
 * sum l and an unnormalised accumulator per query head (online softmax). */
#define REF_KV_TILE 32

/* Where head kvh of position t starts in a K or V buffer, and its scale (1 for f32/f16). */
static inline const uint8_t *kv_head(const void *base, const k_kv_view *kv, int32_t t, int kvh, float *sc) {
    const int32_t blk = kv->block_table[t / kv->block_size];
    const int slot = t % kv->block_size;
    const uint8_t *b = base;
    *sc = 1.0f;
    if (k_kv_quantized(kv->type))
        memcpy(sc, b + k_kv_scale_offset(kv->block_size, kv->n_head_kv, kv->head_dim, blk, slot, kvh), sizeof(float));
    return b + k_kv_elem_offset(kv->type, kv->block_size, kv->n_head_kv, kv->head_dim, blk, slot, kvh);
}

/* Element d of a head, as a float (int8 and fp8: the code's value, before the scale). */
static inline float kv_elem(const uint8_t *p, int type, int d) {
    switch (type) {
    case PAGODA_DTYPE_F16: return pg_fp16_to_fp32(((const uint16_t *)p)[d]);
    case PAGODA_DTYPE_KV_INT8: return (float)(int8_t)p[d];
    case PAGODA_DTYPE_KV_FP8_E4M3: return pg_fp8_e4m3_to_fp32(p[d]);
    default: return ((const float *)p)[d];
    }
}

void k_kv_quantize(int type, uint8_t *codes, float *scale, const float *x, int n) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const bool fp8 = type == PAGODA_DTYPE_KV_FP8_E4M3;
    const float s = amax / (fp8 ? PG_FP8_E4M3_MAX : 127.0f);
    *scale = s;
    for (int i = 0; i < n; i++) {
        float r = s > 0.0f ? x[i] / s : 0.0f;
        if (fp8) {
            codes[i] = pg_fp32_to_fp8_e4m3(r);
        } else {
            r = rintf(r); /* nearest, ties to even */
            codes[i] = (uint8_t)(int8_t)(r > 127.0f ? 127 : r < -127.0f ? -127 : (int)r);
        }
    }
}

void k_kv_dequantize(int type, float *x, const uint8_t *codes, float scale, int n) {
    for (int i = 0; i < n; i++) x[i] = kv_elem(codes, type, i) * scale;
}

void kref_attention(float *out, const float *q, int n_q, int32_t pos0, int n_head, float scale,
                    int window, const k_kv_view *kv) {
    const int hd = kv->head_dim, n_kv_head = kv->n_head_kv, type = kv->type;
    const bool quant = k_kv_quantized(type);
    const int group = n_head / n_kv_head;
    for (int i = 0; i < n_q; i++) {
        const int32_t p = pos0 + i; /* this query's position: sees keys lo .. p */
        const int32_t lo = (window > 0 && p - window + 1 > 0) ? p - window + 1 : 0;
        for (int h = 0; h < n_head; h++) {
            const float *qh = q + ((size_t)i * n_head + h) * hd;
            float *o = out + ((size_t)i * n_head + h) * hd;
            const int kvh = h / group;
            float m = -INFINITY, l = 0.0f;
            for (int d = 0; d < hd; d++) o[d] = 0.0f;
            for (int32_t t0 = lo; t0 <= p; t0 += REF_KV_TILE) {
                int32_t t1 = t0 + REF_KV_TILE - 1 < p ? t0 + REF_KV_TILE - 1 : p;
                float s[REF_KV_TILE];
                float tmax = -INFINITY;
                for (int32_t t = t0; t <= t1; t++) {
                    float sk;
                    const uint8_t *k = kv_head(kv->k, kv, t, kvh, &sk);
                    float dot = 0.0f; /* int8/fp8: q against the codes, the scale once after */
                    for (int d = 0; d < hd; d++) dot += qh[d] * kv_elem(k, type, d);
                    s[t - t0] = quant ? dot * sk * scale : dot * scale;
                    if (s[t - t0] > tmax) tmax = s[t - t0];
                }
                float m_new = tmax > m ? tmax : m;
                float alpha = expf(m - m_new); /* rescales what was summed under the old max */
                l *= alpha;
                for (int d = 0; d < hd; d++) o[d] *= alpha;
                for (int32_t t = t0; t <= t1; t++) {
                    float sv;
                    const uint8_t *v = kv_head(kv->v, kv, t, kvh, &sv);
                    float e = expf(s[t - t0] - m_new);
                    l += e;
                    const float ev = quant ? e * sv : e; /* the weight times the head's scale */
                    for (int d = 0; d < hd; d++) o[d] += ev * kv_elem(v, type, d);
                }
                m = m_new;
            }
            float inv = 1.0f / l;
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
    }
}
