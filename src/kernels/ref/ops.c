/* Scalar reference for the non-matmul transformer ops: the specification kcpu_* is tested
 * against. Plain loops; sums in double so the reference is the accurate side of a comparison. */
#include "core/fp16.h"
#include "kernels/ops.h"

#include <math.h>
#include <stddef.h>

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

/* Element i of a K or V buffer, as a float. */
static inline float kv_elem(const void *base, int f16, size_t i) {
    return f16 ? pg_fp16_to_fp32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

void kref_attention(float *out, const float *q, int n_q, int32_t pos0, int n_head, float scale,
                    int window, const k_kv_view *kv) {
    const int hd = kv->head_dim, bs = kv->block_size, n_kv_head = kv->n_head_kv;
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
                    size_t slot = (size_t)kv->block_table[t / bs] * bs + t % bs;
                    const size_t k = (slot * n_kv_head + kvh) * hd;
                    float dot = 0.0f;
                    for (int d = 0; d < hd; d++) dot += qh[d] * kv_elem(kv->k, kv->f16, k + d);
                    s[t - t0] = dot * scale;
                    if (s[t - t0] > tmax) tmax = s[t - t0];
                }
                float m_new = tmax > m ? tmax : m;
                float alpha = expf(m - m_new); /* rescales what was summed under the old max */
                l *= alpha;
                for (int d = 0; d < hd; d++) o[d] *= alpha;
                for (int32_t t = t0; t <= t1; t++) {
                    size_t slot = (size_t)kv->block_table[t / bs] * bs + t % bs;
                    const size_t v = (slot * n_kv_head + kvh) * hd;
                    float e = expf(s[t - t0] - m_new);
                    l += e;
                    for (int d = 0; d < hd; d++) o[d] += e * kv_elem(kv->v, kv->f16, v + d);
                }
                m = m_new;
            }
            float inv = 1.0f / l;
            for (int d = 0; d < hd; d++) o[d] *= inv;
        }
    }
}
