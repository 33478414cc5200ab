// Element-wise and row ops of the forward pass (the "ops.cu" section of pcu_kernels.h).
// Each kernel follows its kref_* specification in src/kernels/ref/ops.c; pcu_get_rows dequantizes
// with dequant.cuh, bit for bit what ref/quants.c's to_float gives.
#include "kernels/cuda/dequant.cuh"
#include "kernels/cuda/pcu_internal.cuh"
#include "kernels/cuda/pcu_kernels.h"

#include <math.h>

#include "kernels/quants.h"

namespace {

template <int T>
__global__ void get_rows_kernel(const uint8_t *table, size_t row_bytes, int64_t n_cols, const int32_t *ids,
                                float *out, bool accumulate, int64_t row0, int64_t n_rows) {
    const int64_t e = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (e >= n_cols) return;
    const int i = blockIdx.x;
    const int64_t row = (int64_t)ids[i] - row0;
    const float v = row >= 0 && row < n_rows ? deq_row<T>(table + (size_t)row * row_bytes, e) : 0.0f;
    float *o = out + (int64_t)i * n_cols + e;
    *o = accumulate ? *o + v : v;
}

// Bytes of a row of n elements (n a whole number of blocks, as the caller guarantees).
size_t row_bytes(int t, int64_t n) {
    switch (t) {
    case PAGODA_DTYPE_F32: return (size_t)n * 4;
    case PAGODA_DTYPE_F16:
    case PAGODA_DTYPE_BF16: return (size_t)n * 2;
    case PAGODA_DTYPE_Q4_0: return (size_t)(n / 32) * sizeof(block_q4_0);
    case PAGODA_DTYPE_Q4_1: return (size_t)(n / 32) * sizeof(block_q4_1);
    case PAGODA_DTYPE_Q5_0: return (size_t)(n / 32) * sizeof(block_q5_0);
    case PAGODA_DTYPE_Q5_1: return (size_t)(n / 32) * sizeof(block_q5_1);
    case PAGODA_DTYPE_Q8_0: return (size_t)(n / 32) * sizeof(block_q8_0);
    case PAGODA_DTYPE_Q4_K: return (size_t)(n / 256) * sizeof(block_q4_K);
    case PAGODA_DTYPE_Q5_K: return (size_t)(n / 256) * sizeof(block_q5_K);
    case PAGODA_DTYPE_Q6_K: return (size_t)(n / 256) * sizeof(block_q6_K);
    default: return 0;
    }
}

// ---- norms -------------------------------------------------------------------------------------

constexpr int NORM_THREADS = 256;

// Sum over the block; every thread gets the total. sh: 32 doubles of shared memory.
__device__ double block_sum(double v, double *sh) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[w] = v;
    __syncthreads();
    double t = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

// Statistics in double like the reference (layernorm with |mean| >> std must not cancel);
// the cost is nil next to the memory traffic.
__global__ void add_norm_kernel(float *x, const float *delta, const float *delta_bias, float *y, __half *yh,
                                const float *w, const float *b, int64_t n, float eps, bool layernorm) {
    __shared__ double sh[32];
    float *xr = x + (int64_t)blockIdx.x * n;
    float *yr = y + (int64_t)blockIdx.x * n;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            float d = delta[(int64_t)blockIdx.x * n + i];
            if (delta_bias) d += delta_bias[i]; // the bias belongs to the delta's matmul
            v += d;
            xr[i] = v; // each thread re-reads only what it wrote itself
        }
        s += layernorm ? (double)v : (double)v * v;
    }
    s = block_sum(s, sh);
    if (!layernorm) {
        const float sc = (float)(1.0 / sqrt(s / (double)n + (double)eps));
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = xr[i] * sc * (w ? w[i] : 1.0f);
            yr[i] = v;
            if (yh) yh[(int64_t)blockIdx.x * n + i] = __float2half_rn(v);
        }
        return;
    }
    const double mean = s / (double)n;
    double var = 0.0; // second pass over the (cached) row
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const double d = xr[i] - mean;
        var += d * d;
    }
    var = block_sum(var, sh);
    const double sc = 1.0 / sqrt(var / (double)n + (double)eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = (float)((xr[i] - mean) * sc);
        if (w) v *= w[i];
        if (b) v += b[i];
        yr[i] = v;
        if (yh) yh[(int64_t)blockIdx.x * n + i] = __float2half_rn(v);
    }
}

// One warp per (token, head); head_dim <= 256 floats are few, so a warp is enough.
__global__ void head_rmsnorm_kernel(float *x, int n_tok, int n_head, int head_dim, int64_t row_stride,
                                    const float *w, float eps) {
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (int64_t)n_tok * n_head) return; // whole warp leaves together
    const int lane = threadIdx.x & 31;
    float *xh = x + (wid / n_head) * row_stride + (wid % n_head) * head_dim;
    double s = 0.0;
    for (int d = lane; d < head_dim; d += 32) s += (double)xh[d] * xh[d];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    const float sc = (float)(1.0 / sqrt(s / (double)head_dim + (double)eps));
    for (int d = lane; d < head_dim; d += 32) xh[d] = xh[d] * sc * (w ? w[d] : 1.0f);
}

// ---- element-wise --------------------------------------------------------------------------------

__global__ void add_bias_kernel(float *y, const float *b, int rows, int64_t n, int64_t ld) {
    const int64_t total = (int64_t)rows * n;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        y[(i / n) * ld + i % n] += b[i % n];
}

__global__ void silu_mul_kernel(float *gate, const float *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// Greedy token of each row: the largest value, the lowest index among equals (NaN counts as
// -inf), as the CPU sampler picks it. One block per row.
__global__ void argmax_rows_kernel(const float *x, int64_t n, int32_t *out) {
    const float *row = x + (int64_t)blockIdx.x * n;
    float best = -INFINITY;
    int64_t bi = 0;
    bool found = false;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        float v = row[i];
        if (v > best || (!found && v == best)) best = v, bi = i, found = true; // strided: first hit is the lowest
    }
    if (!found) bi = n; // this thread saw only NaN / -inf
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        long long oi = __shfl_xor_sync(0xffffffffu, (long long)bi, o);
        if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
    }
    __shared__ float sv[32];
    __shared__ long long si[32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
    if (lane == 0) sv[warp] = best, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        best = lane < n_warps ? sv[lane] : -INFINITY;
        bi = lane < n_warps ? si[lane] : n;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            long long oi = __shfl_xor_sync(0xffffffffu, (long long)bi, o);
            if (ov > best || (ov == best && oi < bi)) best = ov, bi = oi;
        }
        if (lane == 0) out[blockIdx.x] = bi < n ? (int32_t)bi : 0; // every value NaN / -inf: token 0
    }
}

// SwiGLU over fused gate|up rows: out[r][i] = silu(in[r][i]) * in[r][n + i].
__global__ void swiglu_rows_kernel(float *out, __half *out_h, const float *in, int rows, int64_t n) {
    const int64_t total = (int64_t)rows * n;
    for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < total; k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = k / n, i = k - r * n;
        const float g = in[r * 2 * n + i];
        const float v = g / (1.0f + expf(-g)) * in[r * 2 * n + n + i];
        out[k] = v;
        if (out_h) out_h[k] = __float2half_rn(v);
    }
}

__global__ void gelu_kernel(float *x, int64_t n) {
    const float k = 0.7978845608028654f; // sqrt(2/pi)
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

// One thread per rotated pair (token, head, i < rope_dim/2).
__global__ void rope_kernel(float *x, int n_tok, int64_t row_stride, int n_head, int head_dim, int rope_dim,
                            const int32_t *pos, const float *inv_freq, bool neox) {
    const int half = rope_dim / 2;
    const int64_t total = (int64_t)n_tok * n_head * half;
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int i = (int)(idx % half);
    const int h = (int)((idx / half) % n_head);
    const int64_t t = idx / ((int64_t)half * n_head);
    const int32_t p = pos[t];
    if (p < 0) return;
    const float theta = (float)p * inv_freq[i]; // rounded to float, as the reference
    float s, c;
    sincosf(theta, &s, &c);
    float *xh = x + t * row_stride + (int64_t)h * head_dim;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float a = xh[i0], bb = xh[i1];
    xh[i0] = a * c - bb * s;
    xh[i1] = a * s + bb * c;
}

template <bool F16>
__global__ void kv_store_kernel(void *kc, void *vc, const float *k, const float *v, int64_t ld, int n_tok, int kvd,
                                const int32_t *slot) {
    const int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (int64_t)n_tok * kvd) return;
    const int64_t t = idx / kvd, j = idx % kvd;
    const int32_t sl = slot[t];
    if (sl < 0) return;
    const int64_t dst = (int64_t)sl * kvd + j;
    const float kv = k[t * ld + j], vv = v[t * ld + j];
    if (F16) {
        ((__half *)kc)[dst] = __float2half_rn(kv);
        ((__half *)vc)[dst] = __float2half_rn(vv);
    } else {
        ((float *)kc)[dst] = kv;
        ((float *)vc)[dst] = vv;
    }
}

// Grid for a grid-stride loop over n elements: enough blocks to fill the GPU, no more.
int stride_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return (int)(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

} // namespace

extern "C" {

void pcu_get_rows(pcu_stream *s, int dtype, const void *d_table, int64_t n_cols, const int32_t *d_ids, int n,
                  float *d_out, bool accumulate, int64_t row0, int64_t n_rows) {
    if (n <= 0 || n_cols <= 0) return;
    const int threads = 256;
    const dim3 grid((unsigned)n, (unsigned)pcu_div_up(n_cols, threads));
    const uint8_t *tab = (const uint8_t *)d_table;
    const size_t rb = row_bytes(dtype, n_cols);
    cudaStream_t st = pcu_cuda_stream(s);
#define PCU_GET_ROWS(T) \
    case T: get_rows_kernel<T><<<grid, threads, 0, st>>>(tab, rb, n_cols, d_ids, d_out, accumulate, row0, n_rows); break
    switch (dtype) {
        PCU_GET_ROWS(PAGODA_DTYPE_F32);
        PCU_GET_ROWS(PAGODA_DTYPE_F16);
        PCU_GET_ROWS(PAGODA_DTYPE_BF16);
        PCU_GET_ROWS(PAGODA_DTYPE_Q4_0);
        PCU_GET_ROWS(PAGODA_DTYPE_Q4_1);
        PCU_GET_ROWS(PAGODA_DTYPE_Q5_0);
        PCU_GET_ROWS(PAGODA_DTYPE_Q5_1);
        PCU_GET_ROWS(PAGODA_DTYPE_Q8_0);
        PCU_GET_ROWS(PAGODA_DTYPE_Q4_K);
        PCU_GET_ROWS(PAGODA_DTYPE_Q5_K);
        PCU_GET_ROWS(PAGODA_DTYPE_Q6_K);
    default: break; // callers check pcu_weight_supported first
    }
#undef PCU_GET_ROWS
}

void pcu_add_norm(pcu_stream *s, float *d_x, const float *d_delta, const float *d_delta_bias, float *d_y,
                  const float *d_w, const float *d_b, int64_t n, int rows, float eps, bool layernorm, void *d_y_half) {
    if (rows <= 0 || n <= 0) return;
    add_norm_kernel<<<rows, NORM_THREADS, 0, pcu_cuda_stream(s)>>>(d_x, d_delta, d_delta_bias, d_y, (__half *)d_y_half, d_w,
                                                                   d_b, n, eps, layernorm);
}

void pcu_head_rmsnorm(pcu_stream *s, float *d_x, int n_tok, int n_head, int head_dim, int64_t row_stride,
                      const float *d_w, float eps) {
    const int64_t warps = (int64_t)n_tok * n_head;
    if (warps <= 0) return;
    head_rmsnorm_kernel<<<pcu_div_up(warps, 4), 128, 0, pcu_cuda_stream(s)>>>(d_x, n_tok, n_head, head_dim, row_stride,
                                                                             d_w, eps);
}

void pcu_add_bias(pcu_stream *s, float *d_y, const float *d_b, int rows, int64_t n, int64_t ld) {
    if (rows <= 0 || n <= 0) return;
    add_bias_kernel<<<stride_blocks((int64_t)rows * n, 256), 256, 0, pcu_cuda_stream(s)>>>(d_y, d_b, rows, n, ld);
}

void pcu_silu_mul(pcu_stream *s, float *d_gate, const float *d_up, int64_t n) {
    if (n <= 0) return;
    silu_mul_kernel<<<stride_blocks(n, 256), 256, 0, pcu_cuda_stream(s)>>>(d_gate, d_up, n);
}

void pcu_argmax_rows(pcu_stream *s, const float *d_x, int rows, int64_t n, int32_t *d_out) {
    if (rows <= 0 || n <= 0) return;
    argmax_rows_kernel<<<rows, 1024, 0, pcu_cuda_stream(s)>>>(d_x, n, d_out);
}

void pcu_swiglu_rows(pcu_stream *s, float *d_out, const float *d_in, int rows, int64_t n, void *d_out_half) {
    if (rows <= 0 || n <= 0) return;
    swiglu_rows_kernel<<<stride_blocks((int64_t)rows * n, 256), 256, 0, pcu_cuda_stream(s)>>>(d_out, (__half *)d_out_half,
                                                                                            d_in, rows, n);
}

void pcu_gelu(pcu_stream *s, float *d_x, int64_t n) {
    if (n <= 0) return;
    gelu_kernel<<<stride_blocks(n, 256), 256, 0, pcu_cuda_stream(s)>>>(d_x, n);
}

void pcu_rope(pcu_stream *s, float *d_x, int n_tok, int64_t row_stride, int n_head, int head_dim, int rope_dim,
              const int32_t *d_pos, const float *d_inv_freq, bool neox) {
    const int64_t total = (int64_t)n_tok * n_head * (rope_dim / 2);
    if (total <= 0) return;
    rope_kernel<<<pcu_div_up(total, 256), 256, 0, pcu_cuda_stream(s)>>>(d_x, n_tok, row_stride, n_head, head_dim,
                                                                       rope_dim, d_pos, d_inv_freq, neox);
}

void pcu_kv_store(pcu_stream *s, void *d_k_cache, void *d_v_cache, bool f16, const float *d_k, const float *d_v,
                  int64_t ld, int n_tok, int kvd, const int32_t *d_slot) {
    const int64_t total = (int64_t)n_tok * kvd;
    if (total <= 0) return;
    const int blocks = pcu_div_up(total, 256);
    cudaStream_t st = pcu_cuda_stream(s);
    if (f16)
        kv_store_kernel<true><<<blocks, 256, 0, st>>>(d_k_cache, d_v_cache, d_k, d_v, ld, n_tok, kvd, d_slot);
    else
        kv_store_kernel<false><<<blocks, 256, 0, st>>>(d_k_cache, d_v_cache, d_k, d_v, ld, n_tok, kvd, d_slot);
}

} // extern "C"
