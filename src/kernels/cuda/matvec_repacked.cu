// Decode matvec on a GPU-friendly copy of Q4_0 / Q8_0 weights (see pcu_kernels.h, matmul.cu
// section). GGUF blocks (18 / 34 bytes, only 2-byte aligned) force narrow loads; the repacked copy
// splits every matrix into a quant array and a scale array so a warp reads both with 16-byte
// coalesced loads and reads the activations with coalesced float4 loads.
//
// Layout of the copy: [n_out rows of QB quant bytes][n_out rows of SB scale bytes], QB = n_in/2
// (Q4_0) or n_in (Q8_0), SB = 2 * (n_in/32) rounded up to 16 (f16 scales, zero padding).
// A row is cut into tiles of TE = 128*GPL elements (GPL = 4-element groups per lane: 8 for Q4_0,
// 4 for Q8_0); the last tile may be shorter (E_t elements, L_t = E_t/(4*GPL) lanes). Lane l < L_t
// of a tile owns elements 4*(l + L_t*j) + c (j < GPL, c < 4) and reads them as one 16-byte chunk
// at tile offset 16*l: for group j the warp's float4 activation loads are contiguous.
//   Q4_0 chunk: word k (of 4), byte c: low nibble = quant of group 2k element c, high nibble =
//           group 2k+1 element c (raw q, 0..15).
//   Q8_0 chunk: word j, byte c = (uint8_t)(q + 128) of group j element c.
// Group (l, j) lies in block (l + L_t*j)/8 of the tile. Scales of a tile are stored (a tile holds
// 4*GPL blocks, the tail L_t*GPL/8) at position g*GPL + j for block g + j*L_t/8 (g = l/8) when
// L_t % 8 == 0, so the 8 lanes of group g read their GPL scales as one 16- or 8-byte load;
// otherwise (a tail tile only, n_in % 256 != 0 or % 128 for Q8_0) in block order.
//
// Dequantization is exact per element, as the reference: w = d*(q - 8) (Q4_0) or d*q (Q8_0)
// rounded once to float, then y += w*x in float. The quant becomes a float without I2F by OR-ing it
// into the mantissa of a power of two P whose ulp is 1 (bits 8..11 -> P = 2^15, bits 12..15 ->
// P = 2^11): m = P + q exactly; w = fma(d, m, -d*(P + off)), and d*(P + off) is exact in float
// (an 11-bit f16 mantissa times 4097, 257 or 257*2^k), so the fma's single rounding gives exactly
// round(d*(q - off)).
#include "kernels/cuda/pcu_internal.cuh"
#include "kernels/cuda/pcu_kernels.h"

namespace {

template <int T> struct RP;
template <> struct RP<PAGODA_DTYPE_Q4_0> { enum { GPL = 8, BB = 18 }; };
template <> struct RP<PAGODA_DTYPE_Q8_0> { enum { GPL = 4, BB = 34 }; };

__host__ __device__ inline int64_t quant_row_bytes(int t, int64_t n_in) { return t == PAGODA_DTYPE_Q4_0 ? n_in / 2 : n_in; }
__host__ __device__ inline int64_t scale_row_bytes(int64_t n_in) { return ((n_in / 32) * 2 + 15) / 16 * 16; }

// ---- repack --------------------------------------------------------------------------------

// Quant of element e of a GGUF row (as stored: Q4_0 nibble 0..15, Q8_0 byte q + 128).
template <int T> __device__ __forceinline__ uint32_t gguf_q(const uint8_t *row, int64_t e);
template <> __device__ __forceinline__ uint32_t gguf_q<PAGODA_DTYPE_Q4_0>(const uint8_t *row, int64_t e) {
    const uint8_t *b = row + (e / 32) * 18 + 2;
    const int i = (int)(e % 32);
    return i < 16 ? (b[i] & 0xfu) : (uint32_t)(b[i - 16] >> 4);
}
template <> __device__ __forceinline__ uint32_t gguf_q<PAGODA_DTYPE_Q8_0>(const uint8_t *row, int64_t e) {
    return (uint32_t)(row[(e / 32) * 34 + 2 + e % 32] ^ 0x80);
}

// One thread per 16-byte chunk (row, chunk index ci in the row).
template <int T>
__global__ void repack_quants(const uint8_t *__restrict__ w, int64_t n_in, int64_t n_out, uint8_t *__restrict__ out) {
    constexpr int GPL = RP<T>::GPL, TE = 128 * GPL;
    const int64_t chunks = quant_row_bytes(T, n_in) / 16;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= chunks * n_out) return;
    const int64_t row = i / chunks, ci = i % chunks;
    const int64_t nfull = n_in / TE, tile = ci / 32;
    const int l = (int)(ci % 32);
    const int lt = tile < nfull ? 32 : (int)((n_in - nfull * TE) / (4 * GPL));
    const uint8_t *wr = w + row * (n_in / 32) * RP<T>::BB;
    uint32_t words[4] = {0, 0, 0, 0};
    for (int j = 0; j < GPL; j++)
        for (int c = 0; c < 4; c++) {
            const uint32_t q = gguf_q<T>(wr, tile * TE + 4 * (l + (int64_t)lt * j) + c);
            if (T == PAGODA_DTYPE_Q4_0) words[j / 2] |= q << (8 * c + 4 * (j % 2));
            else words[j] |= q << (8 * c);
        }
    *(uint4 *)(out + row * quant_row_bytes(T, n_in) + ci * 16) = make_uint4(words[0], words[1], words[2], words[3]);
}

// One thread per stored scale slot (row, position p of the padded scale row).
template <int T>
__global__ void repack_scales(const uint8_t *__restrict__ w, int64_t n_in, int64_t n_out, uint8_t *__restrict__ out) {
    constexpr int GPL = RP<T>::GPL, BPT = 4 * GPL;  // blocks per full tile
    const int64_t slots = scale_row_bytes(n_in) / 2, nb = n_in / 32;
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= slots * n_out) return;
    const int64_t row = i / slots, p = i % slots;
    uint16_t v = 0;
    if (p < nb) {
        const int64_t tile = p / BPT, nfull = nb / BPT;
        const int pos = (int)(p % BPT);
        const int lt = tile < nfull ? 32 : (int)((nb - nfull * BPT) * 8 / GPL);  // lanes of the tile
        int blk = pos;
        if (lt % 8 == 0) blk = pos / GPL + (pos % GPL) * (lt / 8);
        const uint8_t *b = w + (row * nb + tile * BPT + blk) * RP<T>::BB;
        v = (uint16_t)(b[0] | (b[1] << 8));
    }
    *(uint16_t *)(out + n_out * quant_row_bytes(T, n_in) + row * scale_row_bytes(n_in) + p * 2) = v;
}

// ---- matvec --------------------------------------------------------------------------------

template <int LD> __device__ __forceinline__ uint4 ldw4(const uint8_t *p) {
    uint4 v;
    if (LD == 1)
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    else
        v = __ldg((const uint4 *)p);
    return v;
}
template <int LD> __device__ __forceinline__ uint2 ldw2(const uint8_t *p) {
    uint2 v;
    if (LD == 1)
        asm("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    else
        v = __ldg((const uint2 *)p);
    return v;
}

__device__ __forceinline__ float hf(uint32_t h) { return __half2float(__ushort_as_half((unsigned short)h)); }

// The GPL scales of a lane's groups, as stored.
template <int T> struct Scales;
template <> struct Scales<PAGODA_DTYPE_Q4_0> {
    uint4 v;
    __device__ __forceinline__ float get(int j) const {
        const uint32_t w = j < 2 ? v.x : j < 4 ? v.y : j < 6 ? v.z : v.w;
        return hf(j % 2 ? w >> 16 : w & 0xffff);
    }
};
template <> struct Scales<PAGODA_DTYPE_Q8_0> {
    uint2 v;
    __device__ __forceinline__ float get(int j) const {
        const uint32_t w = j < 2 ? v.x : v.y;
        return hf(j % 2 ? w >> 16 : w & 0xffff);
    }
};
template <int T, int LD> __device__ __forceinline__ void load_scales(Scales<T> &s, const uint8_t *p) {
    if constexpr (T == PAGODA_DTYPE_Q4_0) s.v = ldw4<LD>(p);
    else s.v = ldw2<LD>(p);
}

// Scales of a lane in a tail tile whose scales are in block order (L_t % 8 != 0).
template <int T> __device__ __forceinline__ void gather_scales(Scales<T> &s, const uint8_t *tile_sc, int l, int lt) {
    constexpr int GPL = RP<T>::GPL;
    uint32_t h[GPL];
#pragma unroll
    for (int j = 0; j < GPL; j++) h[j] = *(const uint16_t *)(tile_sc + 2 * ((l + lt * j) / 8));
    if constexpr (GPL == 8) s.v = make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
    else s.v = make_uint2(h[0] | h[1] << 16, h[2] | h[3] << 16);
}

// acc[r][t] += sum over the lane's chunk of row r (quants q[r], scales s[r]) of w * x; xg(j) ->
// the 4 activations of group j for token 0 (token t at + t*n_in), loaded once for all R rows.
template <int T, int NT, int R> struct Dot;

// the 4 activations of a group for NT tokens (token t at xp + t * n_in)
template <int NT>
__device__ __forceinline__ void load_x(const float *xp, int64_t n_in, float4 (&xv)[NT]) {
#pragma unroll
    for (int t = 0; t < NT; t++) xv[t] = __ldg((const float4 *)(xp + t * n_in));
}

// acc[t] += the 4 weights . token t's 4 activations, in a fixed order
template <int NT>
__device__ __forceinline__ void fma4(const float (&wv)[4], const float4 (&xv)[NT], float (&acc)[NT]) {
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = fmaf(wv[3], xv[t].w, fmaf(wv[2], xv[t].z, fmaf(wv[1], xv[t].y, fmaf(wv[0], xv[t].x, acc[t]))));
}

template <int NT, int R> struct Dot<PAGODA_DTYPE_Q4_0, NT, R> {
    template <class XP>
    static __device__ __forceinline__ void run(const uint4 (&q)[R], const Scales<PAGODA_DTYPE_Q4_0> (&s)[R], XP xg, int64_t n_in,
                                               float (&acc)[R][NT]) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = 2 * k + h;
                float4 xv[NT];
                const float *xp = xg(j);
                load_x(xp, n_in, xv);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    const uint32_t wd = k == 0 ? q[r].x : k == 1 ? q[r].y : k == 2 ? q[r].z : q[r].w;
                    // byte c of the word at bits 8..15: low nibble -> P = 2^15, high nibble -> P = 2^11
                    const uint32_t sh[4] = {wd << 8, wd, wd >> 8, wd >> 16};
                    const float d = s[r].get(j);
                    const float nd = __fmul_rn(d, h ? -2056.f : -32776.f);  // -d*(P + 8), exact
                    float wv[4];
#pragma unroll
                    for (int c = 0; c < 4; c++) {
                        const uint32_t bits = h ? ((sh[c] & 0xf000u) | 0x45000000u) : ((sh[c] & 0x0f00u) | 0x47000000u);
                        wv[c] = fmaf(d, __uint_as_float(bits), nd);
                    }
                    fma4(wv, xv, acc[r]);
                }
            }
        }
    }
};

template <int NT, int R> struct Dot<PAGODA_DTYPE_Q8_0, NT, R> {
    template <class XP>
    static __device__ __forceinline__ void run(const uint4 (&q)[R], const Scales<PAGODA_DTYPE_Q8_0> (&s)[R], XP xg, int64_t n_in,
                                               float (&acc)[R][NT]) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float4 xv[NT];
            const float *xp = xg(j);
            load_x(xp, n_in, xv);
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint32_t wd = j == 0 ? q[r].x : j == 1 ? q[r].y : j == 2 ? q[r].z : q[r].w;
                const float d = s[r].get(j);
                const float nd = __fmul_rn(d, -32896.f);  // -d*(2^15 + 128), exact
                float wv[4];
#pragma unroll
                for (int c = 0; c < 4; c++)  // byte c -> bits 8..15 under the exponent of 2^15
                    wv[c] = fmaf(d, __uint_as_float(__byte_perm(wd, 0x47000000u, 0x7504u | (c << 4))), nd);
                fma4(wv, xv, acc[r]);
            }
        }
    }
};

constexpr int kWarps = 4;  // warps per CTA

// Each warp: R consecutive rows, all of n_in; U full tiles per row in flight per lane.
template <int T, int NT, int R, int U, int LD>
__global__ void __launch_bounds__(kWarps * 32) mvr_kernel(const uint8_t *__restrict__ rep, int64_t n_in, int64_t n_out,
                                                          const float *__restrict__ x, float *__restrict__ y, int64_t ldy) {
    constexpr int GPL = RP<T>::GPL, TE = 128 * GPL, BPT = 4 * GPL;
    const int lane = threadIdx.x % 32;
    const int64_t row0 = ((int64_t)blockIdx.x * kWarps + threadIdx.x / 32) * R;
    if (row0 >= n_out) return;
    const int64_t qb = quant_row_bytes(T, n_in), sb = scale_row_bytes(n_in);
    const uint8_t *qp[R], *sp[R];
#pragma unroll
    for (int r = 0; r < R; r++) {  // rows past the end re-read the last one (never stored)
        const int64_t row = row0 + r < n_out ? row0 + r : n_out - 1;
        qp[r] = rep + row * qb + 16 * lane;
        sp[r] = rep + n_out * qb + row * sb;
    }
    const int g = lane / 8;
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.f;

    const int nfull = (int)(n_in / TE);
    const float *xl = x + 4 * lane;
    int tile = 0;
    for (; tile + U <= nfull; tile += U) {
        uint4 q[U][R];
        Scales<T> s[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                q[u][r] = ldw4<LD>(qp[r] + (int64_t)(tile + u) * 512);
                load_scales<T, LD>(s[u][r], sp[r] + (tile + u) * (2 * BPT) + g * (2 * GPL));
            }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const float *xt = xl + (int64_t)(tile + u) * TE;
            Dot<T, NT, R>::run(q[u], s[u], [&](int j) { return xt + 128 * j; }, n_in, acc);
        }
    }
    if constexpr (U > 1) {
        for (; tile < nfull; tile++) {
            uint4 q[R];
            Scales<T> s[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                q[r] = ldw4<LD>(qp[r] + (int64_t)tile * 512);
                load_scales<T, LD>(s[r], sp[r] + tile * (2 * BPT) + g * (2 * GPL));
            }
            const float *xt = xl + (int64_t)tile * TE;
            Dot<T, NT, R>::run(q, s, [&](int j) { return xt + 128 * j; }, n_in, acc);
        }
    }
    const int lt = (int)((n_in - (int64_t)nfull * TE) / (4 * GPL));  // lanes of the tail tile
    if (lane < lt) {
        const float *xt = xl + (int64_t)nfull * TE;
        uint4 q[R];
        Scales<T> s[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            q[r] = ldw4<LD>(qp[r] + (int64_t)nfull * 512);
            const uint8_t *tsc = sp[r] + nfull * (2 * BPT);
            if (lt % 8 == 0) load_scales<T, LD>(s[r], tsc + g * (2 * GPL));
            else gather_scales<T>(s[r], tsc, lane, lt);
        }
        Dot<T, NT, R>::run(q, s, [&](int j) { return xt + 4 * lt * j; }, n_in, acc);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = pcu_warp_sum(acc[r][t]);
            if (lane == (r * NT + t) % 32 && row0 + r < n_out) y[t * ldy + row0 + r] = v;
        }
}

template <int T, int NT, int R, int U, int LD>
void mvr_launch(cudaStream_t st, const void *rep, int64_t n_in, int64_t n_out, const float *x, float *y, int64_t ldy) {
    const int64_t warps = (n_out + R - 1) / R;
    mvr_kernel<T, NT, R, U, LD><<<pcu_div_up(warps, kWarps), kWarps * 32, 0, st>>>((const uint8_t *)rep, n_in, n_out, x, y, ldy);
}

// Configuration per token count (rows per warp, full tiles in flight), tuned on an H100 (n_tok
// 1, 2, 4, 8 on Llama-2-7B shapes; the others interpolated, checked free of register spills).
template <int T, int NT>
void mvr_prod(cudaStream_t st, const void *rep, int64_t n_in, int64_t n_out, const float *x, float *y, int64_t ldy) {
    constexpr bool q4 = T == PAGODA_DTYPE_Q4_0;
    constexpr int R = NT <= (q4 ? 4 : 2) ? 2 : 4;
    constexpr int U = NT == 1 ? 4 : (q4 && NT > 4) ? 1 : 2;
    mvr_launch<T, NT, R, U, 1>(st, rep, n_in, n_out, x, y, ldy);
}

template <int T>
void mvr_type(cudaStream_t st, const void *rep, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y, int64_t ldy) {
    switch (n_tok) {
    case 1: mvr_prod<T, 1>(st, rep, n_in, n_out, x, y, ldy); break;
    case 2: mvr_prod<T, 2>(st, rep, n_in, n_out, x, y, ldy); break;
    case 3: mvr_prod<T, 3>(st, rep, n_in, n_out, x, y, ldy); break;
    case 4: mvr_prod<T, 4>(st, rep, n_in, n_out, x, y, ldy); break;
    case 5: mvr_prod<T, 5>(st, rep, n_in, n_out, x, y, ldy); break;
    case 6: mvr_prod<T, 6>(st, rep, n_in, n_out, x, y, ldy); break;
    case 7: mvr_prod<T, 7>(st, rep, n_in, n_out, x, y, ldy); break;
    default: mvr_prod<T, 8>(st, rep, n_in, n_out, x, y, ldy); break;
    }
}

}  // namespace

extern "C" bool pcu_repack_supported(int wtype) { return wtype == PAGODA_DTYPE_Q4_0 || wtype == PAGODA_DTYPE_Q8_0; }

extern "C" size_t pcu_repack_bytes(int wtype, int64_t n_in, int64_t n_out) {
    if (!pcu_repack_supported(wtype)) return 0;
    return (size_t)n_out * (size_t)(quant_row_bytes(wtype, n_in) + scale_row_bytes(n_in));
}

extern "C" void pcu_repack(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, void *d_out) {
    if (!pcu_repack_supported(wtype) || n_out <= 0 || n_in <= 0) return;
    cudaStream_t st = pcu_cuda_stream(s);
    const int th = 256;
    const int64_t nq = quant_row_bytes(wtype, n_in) / 16 * n_out, ns = scale_row_bytes(n_in) / 2 * n_out;
    const uint8_t *w = (const uint8_t *)d_w;
    uint8_t *o = (uint8_t *)d_out;
    if (wtype == PAGODA_DTYPE_Q4_0) {
        repack_quants<PAGODA_DTYPE_Q4_0><<<pcu_div_up(nq, th), th, 0, st>>>(w, n_in, n_out, o);
        repack_scales<PAGODA_DTYPE_Q4_0><<<pcu_div_up(ns, th), th, 0, st>>>(w, n_in, n_out, o);
    } else {
        repack_quants<PAGODA_DTYPE_Q8_0><<<pcu_div_up(nq, th), th, 0, st>>>(w, n_in, n_out, o);
        repack_scales<PAGODA_DTYPE_Q8_0><<<pcu_div_up(ns, th), th, 0, st>>>(w, n_in, n_out, o);
    }
}

extern "C" void pcu_matvec_repacked(pcu_stream *s, int wtype, const void *d_rep, int64_t n_in, int64_t n_out,
                                    const float *d_x, int n_tok, float *d_y, int64_t ldy) {
    if (n_tok <= 0 || n_out <= 0) return;
    cudaStream_t st = pcu_cuda_stream(s);
    if (wtype == PAGODA_DTYPE_Q4_0) mvr_type<PAGODA_DTYPE_Q4_0>(st, d_rep, n_in, n_out, d_x, n_tok, d_y, ldy);
    else if (wtype == PAGODA_DTYPE_Q8_0) mvr_type<PAGODA_DTYPE_Q8_0>(st, d_rep, n_in, n_out, d_x, n_tok, d_y, ldy);
}

