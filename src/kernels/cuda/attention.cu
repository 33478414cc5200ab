// Paged causal attention over the KV cache (the "attention.cu" section of pcu_kernels.h).
//
// One kernel serves decode and prefill. A block takes a tile of query rows that share one
// sequence and one KV head: up to QT consecutive batch tokens of the same sequence times HB
// query heads of that KV head (QT*HB <= RMAX), and walks that sequence's keys in tiles of TK
// positions staged in shared memory, so every K/V byte loaded is used by all rows of the tile
// (the 48 heads of an MQA model, or the 16 tokens of a prefill tile). Online softmax in float,
// in the log2 domain (scores pre-scaled by log2 e, exp2f).
//
// Decode-sized batches (n_tok <= DEC_TOK) also split each query's keys into chunks of `chunk`
// positions handled by separate blocks (flash-decoding): each writes a partial (m, l, acc[D])
// to scratch and attn_combine merges them. The grid is sized from max_ctx; blocks whose chunk
// lies outside their tile's keys exit at once. Larger batches have enough tiles to fill the GPU
// and write normalized outputs directly (no scratch, so scratch stays bounded by DEC_TOK tokens).
#include "kernels/cuda/pcu_internal.cuh"
#include "kernels/cuda/pcu_kernels.h"

#include <limits.h>
#include <math.h>

namespace {

constexpr int NT = 128;          // threads per block
constexpr int TK = 64;           // keys per shared-memory tile (two per lane in the softmax step)
constexpr int RMAX = 16;         // query rows (token x head) per block
constexpr int CHUNK_MIN = 256;   // keys per split, at least (a multiple of TK)
constexpr int MAX_SPLITS = 32;   // splits per query, at most (the combine gives one per lane)
constexpr int DEC_TOK = 128;     // batches up to this many tokens use splits

struct Plan {
    int n_chunks, chunk; // chunk: keys per split; n_chunks == 1: no split, direct output
};

Plan plan(int n_tok, int max_ctx) {
    if (n_tok > DEC_TOK || max_ctx <= CHUNK_MIN) return {1, INT_MAX};
    int c = (max_ctx + MAX_SPLITS - 1) / MAX_SPLITS;
    c = (c + TK - 1) / TK * TK;
    if (c < CHUNK_MIN) c = CHUNK_MIN;
    const int n = (max_ctx + c - 1) / c;
    if (n <= 1) return {1, INT_MAX};
    return {n, c};
}

// Upper bound of plan().n_chunks over all max_ctx' <= max_ctx (what scratch is sized for).
int chunks_bound(int max_ctx) {
    int n = (max_ctx + CHUNK_MIN - 1) / CHUNK_MIN;
    return n < 1 ? 1 : (n > MAX_SPLITS ? MAX_SPLITS : n);
}

struct Params {
    const void *k, *v;
    int bs, n_head, n_kv, hd, window;
    float scale_log2;
    const int32_t *pos, *seq, *bt;
    int max_blocks;
    const float *q;
    int64_t q_stride;
    float *out;
    int n_tok;
    int G, HB, nhb, QT; // group size, heads per block, head blocks per KV head, tokens per tile
    int n_chunks, chunk;
    float *part_ml, *part_acc; // split partials: [n_tok][n_head][n_chunks] x (m, l) and x acc[D]
};

// Shared-memory layout, computed the same way on host and device. K rows are padded (16 bytes
// on the vector path) so lanes reading different keys hit different banks.
struct Layout {
    int ks;                      // K row stride, elements
    size_t q, acc, s, m, l, al, pos, lo, slot, k, v, bytes; // byte offsets
};

__host__ __device__ inline size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

__host__ __device__ inline Layout make_layout(int ra, int d, int esz) {
    Layout L;
    const int vec = 16 / esz;
    L.ks = d % vec == 0 ? d + vec : d + 2;
    size_t o = 0;
    L.q = o, o += (size_t)ra * d * 4;
    L.acc = o, o += (size_t)ra * d * 4;
    L.s = o, o += (size_t)ra * (TK + 1) * 4;
    L.m = o, o += (size_t)ra * 4;
    L.l = o, o += (size_t)ra * 4;
    L.al = o, o += (size_t)ra * 4;
    L.pos = o, o += (size_t)ra * 4;
    L.lo = o, o += (size_t)ra * 4;
    L.slot = o, o += (size_t)TK * 4;
    o = align16(o);
    L.k = o, o += align16((size_t)TK * L.ks * esz);
    L.v = o, o += (size_t)TK * d * esz;
    L.bytes = align16(o);
    return L;
}

template <typename T> struct Pair;
template <> struct Pair<float> {
    typedef float2 type;
    static __device__ __forceinline__ float2 f2(float2 x) { return x; }
};
template <> struct Pair<__half> {
    typedef __half2 type;
    static __device__ __forceinline__ float2 f2(__half2 x) { return __half22float2(x); }
};

// q . k over one 16-byte unit of K (8 halves or 4 floats); q: floats, 16-byte aligned.
__device__ __forceinline__ float dot16(const uint4 &w, const float *q, const __half *) {
    const float4 qa = *(const float4 *)q, qb = *(const float4 *)(q + 4);
    const float2 k0 = __half22float2(*(const __half2 *)&w.x), k1 = __half22float2(*(const __half2 *)&w.y);
    const float2 k2 = __half22float2(*(const __half2 *)&w.z), k3 = __half22float2(*(const __half2 *)&w.w);
    return qa.x * k0.x + qa.y * k0.y + qa.z * k1.x + qa.w * k1.y + qb.x * k2.x + qb.y * k2.y + qb.z * k3.x +
           qb.w * k3.y;
}
__device__ __forceinline__ float dot16(const uint4 &w, const float *q, const float *) {
    const float4 qa = *(const float4 *)q;
    return qa.x * __uint_as_float(w.x) + qa.y * __uint_as_float(w.y) + qa.z * __uint_as_float(w.z) +
           qa.w * __uint_as_float(w.w);
}

template <typename T, int DT>
__global__ void __launch_bounds__(NT) attn_kernel(Params p) {
    typedef typename Pair<T>::type T2;
    const int D = DT > 0 ? DT : p.hd;
    constexpr int VEC = 16 / (int)sizeof(T);
    const bool vec = D % VEC == 0; // compile-time when DT > 0
    const bool direct = p.n_chunks == 1;

    // The tile: token t0 starts one if it is QT-aligned or begins a run of its sequence; it
    // extends over following tokens of the same sequence up to the next QT boundary.
    const int t0 = blockIdx.x;
    const int s0 = p.seq[t0];
    if (t0 % p.QT != 0 && p.seq[t0 - 1] == s0) return;
    int ntt = 1;
    while (t0 + ntt < p.n_tok && (t0 + ntt) % p.QT != 0 && p.seq[t0 + ntt] == s0) ntt++;
    const int g = blockIdx.y / p.nhb, hb = blockIdx.y % p.nhb;
    const int h0 = g * p.G + hb * p.HB;
    const int hbe = min(p.HB, p.G - hb * p.HB); // heads this block really has
    const int R = ntt * p.HB;                   // rows r: token t0 + r / HB, head h0 + r % HB
    const int64_t out_row = (int64_t)p.n_head * D;

    // Keys any row of the tile sees (every thread computes the same, so exits are uniform).
    int Lo = INT_MAX, Hi = -1;
    for (int j = 0; j < ntt; j++) {
        const int pp = p.pos[t0 + j];
        if (pp < 0) continue;
        Lo = min(Lo, p.window > 0 ? max(0, pp - p.window + 1) : 0);
        Hi = max(Hi, pp);
    }
    if (direct) // padding rows are zeros (with splits, attn_combine writes them)
        for (int u = threadIdx.x; u < R * D; u += NT) {
            const int r = u / D, tt = t0 + r / p.HB, i = r % p.HB;
            if (i < hbe && p.pos[tt] < 0) p.out[tt * out_row + (int64_t)(h0 + i) * D + u % D] = 0.0f;
        }
    const int c = blockIdx.z;
    const int clo = direct ? Lo : max(Lo, c * p.chunk);
    const int chi = direct ? Hi : min(Hi, c * p.chunk + p.chunk - 1);
    if (Hi < 0 || clo > chi) return;

    extern __shared__ float4 smem4[];
    char *smem = (char *)smem4;
    const Layout L = make_layout(p.QT * p.HB, D, (int)sizeof(T));
    float *q_s = (float *)(smem + L.q), *acc_s = (float *)(smem + L.acc), *S = (float *)(smem + L.s);
    float *m_s = (float *)(smem + L.m), *l_s = (float *)(smem + L.l), *al_s = (float *)(smem + L.al);
    int *pos_s = (int *)(smem + L.pos), *lo_s = (int *)(smem + L.lo), *slot_s = (int *)(smem + L.slot);
    T *K_s = (T *)(smem + L.k), *V_s = (T *)(smem + L.v);
    const int KS = L.ks;

    for (int r = threadIdx.x; r < R; r += NT) {
        const int i = r % p.HB;
        const int pp = i < hbe ? p.pos[t0 + r / p.HB] : -1;
        pos_s[r] = pp;
        lo_s[r] = p.window > 0 ? max(0, pp - p.window + 1) : 0;
        m_s[r] = -INFINITY;
        l_s[r] = 0.0f;
    }
    for (int u = threadIdx.x; u < R * D; u += NT) {
        const int r = u / D, d = u % D, tt = t0 + r / p.HB, i = r % p.HB;
        float qv = 0.0f;
        if (i < hbe) qv = p.q[tt * p.q_stride + (int64_t)(h0 + i) * D + d] * p.scale_log2;
        q_s[u] = qv;
        acc_s[u] = 0.0f;
    }

    const int32_t *bt = p.bt + (int64_t)s0 * p.max_blocks;
    const T *kg = (const T *)p.k, *vg = (const T *)p.v;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    for (int k0 = clo; k0 <= chi; k0 += TK) {
        const int nk = min(TK, chi - k0 + 1);
        if (threadIdx.x < TK) {
            const int kp = k0 + threadIdx.x;
            slot_s[threadIdx.x] = (int)threadIdx.x < nk ? bt[kp / p.bs] * p.bs + kp % p.bs : -1;
        }
        __syncthreads(); // slot_s ready; q_s/pos_s (first tile) too

        // Stage K and V rows of this KV head; missing keys become zeros (never NaN garbage).
        if (vec) {
            const int upr = D / VEC;
            for (int u = threadIdx.x; u < TK * upr; u += NT) {
                const int kk = u / upr, part = u % upr, sl = slot_s[kk];
                uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
                if (sl >= 0) {
                    const size_t off = ((size_t)sl * p.n_kv + g) * D + (size_t)part * VEC;
                    kw = *(const uint4 *)(kg + off);
                    vw = *(const uint4 *)(vg + off);
                }
                *(uint4 *)(K_s + kk * KS + part * VEC) = kw;
                *(uint4 *)(V_s + kk * D + part * VEC) = vw;
            }
        } else {
            const int ppr = D / 2;
            for (int u = threadIdx.x; u < TK * ppr; u += NT) {
                const int kk = u / ppr, part = u % ppr, sl = slot_s[kk];
                T2 kw, vw;
                if (sl >= 0) {
                    const size_t off = ((size_t)sl * p.n_kv + g) * D + (size_t)part * 2;
                    kw = *(const T2 *)(kg + off);
                    vw = *(const T2 *)(vg + off);
                } else {
                    const float2 z = make_float2(0.0f, 0.0f);
                    if constexpr (sizeof(T) == 2) kw = vw = __float22half2_rn(z);
                    else kw = vw = z;
                }
                *(T2 *)(K_s + kk * KS + part * 2) = kw;
                *(T2 *)(V_s + kk * D + part * 2) = vw;
            }
        }
        __syncthreads();

        // Scores: lanes take consecutive keys of one row (q reads broadcast, K rows padded).
        for (int u = threadIdx.x; u < R * TK; u += NT) {
            const int r = u / TK, kk = u % TK, kp = k0 + kk;
            float sc = -INFINITY;
            if (kk < nk && kp >= lo_s[r] && kp <= pos_s[r]) {
                const float *qr = q_s + r * D;
                const T *kr = K_s + kk * KS;
                float a0 = 0.0f, a1 = 0.0f;
                if (vec) {
                    int j = 0;
                    for (; j + 2 * VEC <= D; j += 2 * VEC) {
                        a0 += dot16(*(const uint4 *)(kr + j), qr + j, kr);
                        a1 += dot16(*(const uint4 *)(kr + j + VEC), qr + j + VEC, kr);
                    }
                    if (j < D) a0 += dot16(*(const uint4 *)(kr + j), qr + j, kr);
                } else {
                    for (int j = 0; j < D; j += 2) {
                        const float2 kf = Pair<T>::f2(*(const T2 *)(kr + j));
                        a0 += qr[j] * kf.x;
                        a1 += qr[j + 1] * kf.y;
                    }
                }
                sc = a0 + a1;
            }
            S[r * (TK + 1) + kk] = sc;
        }
        __syncthreads();

        // Online softmax, one warp per row; S becomes the probabilities of this tile.
        for (int r = warp; r < R; r += NT / 32) {
            float *Sr = S + r * (TK + 1);
            const float x0 = Sr[lane], x1 = Sr[lane + 32];
            const float mt = pcu_warp_max(fmaxf(x0, x1));
            const float mo = m_s[r], mn = fmaxf(mo, mt);
            float alpha = 1.0f, p0 = 0.0f, p1 = 0.0f;
            if (mn != -INFINITY) { // rows with nothing visible yet stay at m = -inf, l = 0
                alpha = exp2f(mo - mn);
                p0 = exp2f(x0 - mn);
                p1 = exp2f(x1 - mn);
            }
            const float ls = pcu_warp_sum(p0 + p1);
            Sr[lane] = p0;
            Sr[lane + 32] = p1;
            if (lane == 0) {
                m_s[r] = mn;
                l_s[r] = l_s[r] * alpha + ls;
                al_s[r] = alpha;
            }
        }
        __syncthreads();

        // acc = acc * alpha + P V: lanes take consecutive dimension pairs of one row.
        const int dp2 = D / 2;
        for (int u = threadIdx.x; u < R * dp2; u += NT) {
            const int r = u / dp2, dp = u % dp2;
            float2 a = ((float2 *)acc_s)[u];
            const float al = al_s[r];
            a.x *= al;
            a.y *= al;
            if (pos_s[r] >= 0) {
                const float *Pr = S + r * (TK + 1);
                const T2 *vc = (const T2 *)V_s + dp;
                for (int kk = 0; kk < nk; kk++) {
                    const float w = Pr[kk];
                    const float2 vf = Pair<T>::f2(vc[kk * dp2]);
                    a.x = fmaf(w, vf.x, a.x);
                    a.y = fmaf(w, vf.y, a.y);
                }
            }
            ((float2 *)acc_s)[u] = a;
        }
        __syncthreads(); // the next tile overwrites slot_s, K_s, V_s and S
    }

    for (int u = threadIdx.x; u < R * D; u += NT) {
        const int r = u / D, d = u % D, tt = t0 + r / p.HB, i = r % p.HB;
        if (i >= hbe || pos_s[r] < 0) continue;
        const int h = h0 + i;
        if (direct) {
            const float l = l_s[r];
            p.out[tt * out_row + (int64_t)h * D + d] = l > 0.0f ? acc_s[u] / l : 0.0f;
        } else {
            const int64_t pr = ((int64_t)tt * p.n_head + h) * p.n_chunks + c;
            p.part_acc[pr * D + d] = acc_s[u];
            if (d == 0) {
                p.part_ml[pr * 2] = m_s[r];
                p.part_ml[pr * 2 + 1] = l_s[r];
            }
        }
    }
}

// Merges the split partials of each (token, head): one warp each, one chunk per lane.
__global__ void attn_combine(Params p) {
    const int64_t wid = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (int64_t)p.n_tok * p.n_head) return; // whole warp leaves together
    const int lane = threadIdx.x & 31, D = p.hd;
    const int64_t t = wid / p.n_head;
    const int h = (int)(wid % p.n_head);
    float *o = p.out + t * ((int64_t)p.n_head * D) + (int64_t)h * D;
    const int pp = p.pos[t];
    if (pp < 0) {
        for (int d = lane; d < D; d += 32) o[d] = 0.0f;
        return;
    }
    const int lo = p.window > 0 ? max(0, pp - p.window + 1) : 0;
    const int c0 = lo / p.chunk, c1 = min(pp / p.chunk, p.n_chunks - 1);
    const int64_t base = wid * p.n_chunks;
    const int c = c0 + lane;
    const float mc = c <= c1 ? p.part_ml[(base + c) * 2] : -INFINITY;
    const float M = pcu_warp_max(mc);
    const float lc = c <= c1 ? p.part_ml[(base + c) * 2 + 1] * exp2f(mc - M) : 0.0f;
    const float inv = 1.0f / pcu_warp_sum(lc);
    for (int d = lane; d < D; d += 32) {
        float a = 0.0f;
        for (int cc = c0; cc <= c1; cc++) a += p.part_acc[(base + cc) * D + d] * exp2f(p.part_ml[(base + cc) * 2] - M);
        o[d] = a * inv;
    }
}

template <typename T, int DT> void launch(const Params &p, dim3 grid, size_t smem, cudaStream_t st) {
    static size_t opted = 48 * 1024; // dynamic shared memory this instantiation may use so far
    if (smem > opted) {
        cudaFuncSetAttribute(attn_kernel<T, DT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        opted = smem;
    }
    attn_kernel<T, DT><<<grid, NT, smem, st>>>(p);
}

template <typename T> void dispatch(const Params &p, dim3 grid, size_t smem, cudaStream_t st) {
    switch (p.hd) {
    case 64: launch<T, 64>(p, grid, smem, st); break;
    case 128: launch<T, 128>(p, grid, smem, st); break;
    case 256: launch<T, 256>(p, grid, smem, st); break;
    default: launch<T, 0>(p, grid, smem, st); break;
    }
}

// Scratch floats: (m, l) pairs first, then the accumulators from a 16-byte boundary.
size_t ml_floats(int n_tok, int n_head, int n_chunks) {
    return ((size_t)n_tok * n_head * n_chunks * 2 + 3) & ~(size_t)3;
}

} // namespace

extern "C" {

size_t pcu_attention_scratch_bytes(int max_tok, int n_head, int head_dim, int max_ctx) {
    const int t = max_tok < DEC_TOK ? max_tok : DEC_TOK;
    if (t <= 0) return 0;
    const int nc = chunks_bound(max_ctx);
    return (ml_floats(t, n_head, nc) + (size_t)t * n_head * nc * head_dim) * sizeof(float);
}

void pcu_attention(pcu_stream *s, const pcu_attn_args *a, float *d_out, const float *d_q, int64_t q_stride,
                   int n_tok, int max_ctx, void *d_scratch) {
    if (n_tok <= 0) return;
    const Plan pl = plan(n_tok, max_ctx);
    Params p;
    p.k = a->d_k_cache;
    p.v = a->d_v_cache;
    p.bs = a->block_size;
    p.n_head = a->n_head;
    p.n_kv = a->n_head_kv;
    p.hd = a->head_dim;
    p.window = a->window;
    p.scale_log2 = a->scale * 1.4426950408889634f; // exp(x) = exp2(x * log2 e)
    p.pos = a->d_tok_pos;
    p.seq = a->d_tok_seq;
    p.bt = a->d_block_tables;
    p.max_blocks = a->max_blocks;
    p.q = d_q;
    p.q_stride = q_stride;
    p.out = d_out;
    p.n_tok = n_tok;
    p.G = a->n_head / a->n_head_kv;
    p.HB = p.G < RMAX ? p.G : RMAX;
    p.nhb = (p.G + p.HB - 1) / p.HB;
    p.QT = RMAX / p.HB;
    p.n_chunks = pl.n_chunks;
    p.chunk = pl.chunk;
    p.part_ml = (float *)d_scratch;
    p.part_acc = p.part_ml + ml_floats(n_tok, p.n_head, pl.n_chunks);

    const dim3 grid((unsigned)n_tok, (unsigned)(p.n_kv * p.nhb), (unsigned)pl.n_chunks);
    const Layout L = make_layout(p.QT * p.HB, p.hd, a->f16 ? 2 : 4);
    cudaStream_t st = pcu_cuda_stream(s);
    if (a->f16)
        dispatch<__half>(p, grid, L.bytes, st);
    else
        dispatch<float>(p, grid, L.bytes, st);
    if (pl.n_chunks > 1) attn_combine<<<pcu_div_up((int64_t)n_tok * p.n_head, NT / 32), NT, 0, st>>>(p);
}

} // extern "C"
