// Weight x activation products on the GPU with weights kept as stored in the file (GGUF blocks,
// F16, BF16, F32): the decode matvec (dequantize in registers, one weight read for all tokens),
// dequantization to halves for cuBLAS, and a tensor-core matmul that dequantizes tiles into
// shared memory.
#include <mma.h>

#include "kernels/cuda/dequant.cuh"
#include "kernels/cuda/pcu_internal.cuh"
#include "kernels/cuda/pcu_kernels.h"

namespace {

bool type_ok(int t) {
    switch (t) {
    case PAGODA_DTYPE_F32: case PAGODA_DTYPE_F16: case PAGODA_DTYPE_BF16: case PAGODA_DTYPE_Q4_0:
    case PAGODA_DTYPE_Q4_1: case PAGODA_DTYPE_Q5_0: case PAGODA_DTYPE_Q5_1: case PAGODA_DTYPE_Q8_0:
    case PAGODA_DTYPE_Q4_K: case PAGODA_DTYPE_Q5_K: case PAGODA_DTYPE_Q6_K: return true;
    default: return false;
    }
}

bool is_plain(int t) { return t == PAGODA_DTYPE_F32 || t == PAGODA_DTYPE_F16 || t == PAGODA_DTYPE_BF16; }

// ---- fast matvec pieces ------------------------------------------------------------------------
// A row is split into pieces of 8 elements, two runs of 4 contiguous elements (A at oa, B at ob
// inside the block), so activations load as float4. Quants become floats without I2F (a quarter-
// rate instruction on the decode hot path): OR-ing an integer < 2^23 into the mantissa of 2^23 and
// subtracting 2^23 (+ the quant offset) is exact and costs one integer and one float op.

constexpr uint32_t kMagic = 0x4B000000u;  // 2^23

// f[j] = (((v >> (8j + sh)) & mask) - off) * 256^(j&1) for the four bytes of v: masking bytes 1
// and 3 in place (no shift per byte) leaves them scaled by 256, which the caller folds into the
// activations (x.y and x.w pre-multiplied by 1/256, exact). Needs mask << 8 < 2^23.
__device__ __forceinline__ void ext4(uint32_t v, int sh, uint32_t mask, float off, float (&f)[4]) {
    const uint32_t lo = v >> sh, hi = v >> (sh + 16);
    f[0] = __uint_as_float((lo & mask) | kMagic) - (8388608.f + off);
    f[1] = __uint_as_float((lo & (mask << 8)) | kMagic) - (8388608.f + off * 256.f);
    f[2] = __uint_as_float((hi & mask) | kMagic) - (8388608.f + off);
    f[3] = __uint_as_float((hi & (mask << 8)) | kMagic) - (8388608.f + off * 256.f);
}
__device__ __forceinline__ float dot4(const float (&f)[4], float4 x) {
    return fmaf(f[3], x.w, fmaf(f[2], x.z, fmaf(f[1], x.y, f[0] * x.x)));
}
// Sum of the four activations of a run whose .y/.w were scaled by 1/256 (quantized types).
__device__ __forceinline__ float sum4(float4 x) { return fmaf(x.y + x.w, 256.f, x.x + x.z); }
// Activation run as the quantized decoders want it (see ext4).
__device__ __forceinline__ float4 xscale(float4 x) { return make_float4(x.x, x.y * (1.f / 256), x.z, x.w * (1.f / 256)); }

__device__ __forceinline__ uint32_t ld16(const uint8_t *p) { return *(const uint16_t *)p; }
__device__ __forceinline__ uint32_t ld32(const uint8_t *p) { return *(const uint32_t *)p; }
__device__ __forceinline__ uint32_t ld32_a2(const uint8_t *p) { return ld16(p) | (ld16(p + 2) << 16); }
__device__ __forceinline__ float ldh(const uint8_t *p) { return __half2float(__ushort_as_half((unsigned short)ld16(p))); }

// Q4_K/Q5_K: two runs of 4 elements with scales da/db and mins ma/mb (w = d*q - m) into acc
template <int NT>
__device__ __forceinline__ void kq_acc(float da, float db, float ma, float mb, const float (&fa)[4], const float (&fb)[4],
                                       const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = fmaf(da, dot4(fa, xa[t]), db * dot4(fb, xb[t]));
        acc[t] += s - fmaf(ma, sum4(xa[t]), mb * sum4(xb[t]));
    }
}

// Bit i of the low 4 bits of b moved to bit 8i+4 (the fifth bit of byte i): b * 0x204081 puts
// bit i at 8i with no carries (all partial products land on distinct bits).
__device__ __forceinline__ uint32_t spread4(uint32_t b) { return ((b * 0x00204081u) & 0x01010101u) << 4; }

// Per type: PE/BB/NP (plain types use 8-element "blocks"), run offsets, and the piece's
// contribution acc[t] += sum_j w_j x_t[j]. Block alignment (given a 16-aligned base) decides the
// load width: Q4_0/Q5_0/Q8_0/Q6_K blocks are only 2-aligned.
template <int T> struct MV;

template <> struct MV<PAGODA_DTYPE_Q4_0> {
    enum { BE = 32, BB = 18, NP = 4 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) { oa = 4 * k, ob = 16 + 4 * k; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint32_t q = ld32_a2(b + 2 + 4 * k);
        const float d = ldh(b);
        float fa[4], fb[4];
        ext4(q, 0, 0xf, 8.f, fa);
        ext4(q, 4, 0xf, 8.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = fmaf(d, dot4(fa, xa[t]) + dot4(fb, xb[t]), acc[t]);
    }
};
template <> struct MV<PAGODA_DTYPE_Q4_1> {
    enum { BE = 32, BB = 20, NP = 4 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) { oa = 4 * k, ob = 16 + 4 * k; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint32_t q = ld32(b + 4 + 4 * k);
        const float d = ldh(b), m = ldh(b + 2);
        float fa[4], fb[4];
        ext4(q, 0, 0xf, 0.f, fa);
        ext4(q, 4, 0xf, 0.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[t] = fmaf(d, dot4(fa, xa[t]) + dot4(fb, xb[t]), fmaf(m, sum4(xa[t]) + sum4(xb[t]), acc[t]));
    }
};
template <> struct MV<PAGODA_DTYPE_Q5_0> {
    enum { BE = 32, BB = 22, NP = 4 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) { oa = 4 * k, ob = 16 + 4 * k; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint32_t qh = ld32_a2(b + 2), q = ld32_a2(b + 6 + 4 * k);
        const float d = ldh(b);
        const uint32_t va = (q & 0x0f0f0f0fu) | spread4((qh >> (4 * k)) & 0xf);
        const uint32_t vb = ((q >> 4) & 0x0f0f0f0fu) | spread4((qh >> (16 + 4 * k)) & 0xf);
        float fa[4], fb[4];
        ext4(va, 0, 0x1f, 16.f, fa);
        ext4(vb, 0, 0x1f, 16.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = fmaf(d, dot4(fa, xa[t]) + dot4(fb, xb[t]), acc[t]);
    }
};
template <> struct MV<PAGODA_DTYPE_Q5_1> {
    enum { BE = 32, BB = 24, NP = 4 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) { oa = 4 * k, ob = 16 + 4 * k; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint32_t qh = ld32(b + 4), q = ld32(b + 8 + 4 * k);
        const float d = ldh(b), m = ldh(b + 2);
        const uint32_t va = (q & 0x0f0f0f0fu) | spread4((qh >> (4 * k)) & 0xf);
        const uint32_t vb = ((q >> 4) & 0x0f0f0f0fu) | spread4((qh >> (16 + 4 * k)) & 0xf);
        float fa[4], fb[4];
        ext4(va, 0, 0x1f, 0.f, fa);
        ext4(vb, 0, 0x1f, 0.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++)
            acc[t] = fmaf(d, dot4(fa, xa[t]) + dot4(fb, xb[t]), fmaf(m, sum4(xa[t]) + sum4(xb[t]), acc[t]));
    }
};
template <> struct MV<PAGODA_DTYPE_Q8_0> {
    enum { BE = 32, BB = 34, NP = 4 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) { oa = 8 * k, ob = 8 * k + 4; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        // int8 q: (q ^ 0x80) is q + 128 as an unsigned byte
        const uint32_t qa = ld32_a2(b + 2 + 8 * k) ^ 0x80808080u, qb = ld32_a2(b + 6 + 8 * k) ^ 0x80808080u;
        const float d = ldh(b);
        float fa[4], fb[4];
        ext4(qa, 0, 0xff, 128.f, fa);
        ext4(qb, 0, 0xff, 128.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = fmaf(d, dot4(fa, xa[t]) + dot4(fb, xb[t]), acc[t]);
    }
};

// Scales of sub-blocks j and j+1 (j even) from the 12 scale bytes as three words, branch-free
// (the lanes of a warp hold different j).
__device__ __forceinline__ void k4_scales(const uint8_t *sp, int j, int (&sc)[2], int (&mn)[2]) {
    const uint32_t s0 = ld32(sp), s1 = ld32(sp + 4), s2 = ld32(sp + 8);
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int jj = j + u, i = jj & 3, sh = 8 * i;
        const uint32_t a0 = (s0 >> sh) & 0xff, a1 = (s1 >> sh) & 0xff, a2 = (s2 >> sh) & 0xff;
        sc[u] = jj < 4 ? (int)(a0 & 63) : (int)((a2 & 0xf) | ((a0 >> 6) << 4));
        mn[u] = jj < 4 ? (int)(a1 & 63) : (int)((a2 >> 4) | ((a1 >> 6) << 4));
    }
}

// Q4_K/Q5_K piece k (0..31): quant bytes 4k..4k+3 of qs, i.e. chunk g = k/8 of 64 elements,
// l0 = 4(k%8): run A = 64g + l0 (low nibbles, sub-block 2g), run B = 64g + 32 + l0 (2g+1).
template <> struct MV<PAGODA_DTYPE_Q4_K> {
    enum { BE = 256, BB = 144, NP = 32 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) {
        oa = 64 * (k >> 3) + 4 * (k & 7), ob = oa + 32;
    }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint32_t q = ld32(b + 16 + 4 * k);
        const float2 dm = __half22float2(*(const __half2 *)b);
        int sc[2], mn[2];
        k4_scales(b + 4, 2 * (k >> 3), sc, mn);
        const float da = dm.x * sc[0], db = dm.x * sc[1], ma = dm.y * mn[0], mb = dm.y * mn[1];
        float fa[4], fb[4];
        ext4(q, 0, 0xf, 0.f, fa);
        ext4(q, 4, 0xf, 0.f, fb);
        kq_acc(da, db, ma, mb, fa, fb, xa, xb, acc);
    }
};
template <> struct MV<PAGODA_DTYPE_Q5_K> {
    enum { BE = 256, BB = 176, NP = 32 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) {
        oa = 64 * (k >> 3) + 4 * (k & 7), ob = oa + 32;
    }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const int g = k >> 3;
        const uint32_t q = ld32(b + 48 + 4 * k), qh = ld32(b + 16 + 4 * (k & 7));
        const float2 dm = __half22float2(*(const __half2 *)b);
        int sc[2], mn[2];
        k4_scales(b + 4, 2 * g, sc, mn);
        const float da = dm.x * sc[0], db = dm.x * sc[1], ma = dm.y * mn[0], mb = dm.y * mn[1];
        const uint32_t va = (q & 0x0f0f0f0fu) | (((qh >> (2 * g)) & 0x01010101u) << 4);
        const uint32_t vb = ((q >> 4) & 0x0f0f0f0fu) | (((qh >> (2 * g + 1)) & 0x01010101u) << 4);
        float fa[4], fb[4];
        ext4(va, 0, 0x1f, 0.f, fa);
        ext4(vb, 0, 0x1f, 0.f, fb);
        kq_acc(da, db, ma, mb, fa, fb, xa, xb, acc);
    }
};
// Q6_K piece k (0..31): ql bytes 4k..4k+3; h = k/16, q1 = (k/8)&1, l0 = 4(k%8). Run A: element
// 128h + 32q1 + l0 (low nibbles, qh bits at 2q1); run B: +64 (high nibbles, qh bits at 2q1+4).
template <> struct MV<PAGODA_DTYPE_Q6_K> {
    enum { BE = 256, BB = 210, NP = 32 };
    static __device__ __forceinline__ void runs(int k, int &oa, int &ob) {
        oa = 128 * (k >> 4) + 32 * ((k >> 3) & 1) + 4 * (k & 7), ob = oa + 64;
    }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int k, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const int h = k >> 4, q1 = (k >> 3) & 1, l0 = 4 * (k & 7);
        const uint32_t ql = ld32_a2(b + 4 * k), qh = ld32_a2(b + 128 + 32 * h + l0);
        int oa, ob;
        runs(k, oa, ob);
        const float d = ldh(b + 208);
        const float sa = d * (float)(int8_t)b[192 + oa / 16], sb = d * (float)(int8_t)b[192 + ob / 16];
        const uint32_t va = (ql & 0x0f0f0f0fu) | (((qh >> (2 * q1)) & 0x03030303u) << 4);
        const uint32_t vb = ((ql >> 4) & 0x0f0f0f0fu) | (((qh >> (2 * q1 + 4)) & 0x03030303u) << 4);
        float fa[4], fb[4];
        ext4(va, 0, 0x3f, 32.f, fa);
        ext4(vb, 0, 0x3f, 32.f, fb);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] = fmaf(sa, dot4(fa, xa[t]), fmaf(sb, dot4(fb, xb[t]), acc[t]));
    }
};
// Plain types: a "block" is 8 elements (16 or 32 bytes, 16-aligned: the fast path needs
// n_in % 8 == 0 and a 16-aligned base).
template <> struct MV<PAGODA_DTYPE_F16> {
    enum { BE = 8, BB = 16, NP = 1 };
    static __device__ __forceinline__ void runs(int, int &oa, int &ob) { oa = 0, ob = 4; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint4 v = *(const uint4 *)b;
        const float2 p0 = __half22float2(*(const __half2 *)&v.x), p1 = __half22float2(*(const __half2 *)&v.y);
        const float2 p2 = __half22float2(*(const __half2 *)&v.z), p3 = __half22float2(*(const __half2 *)&v.w);
        const float fa[4] = {p0.x, p0.y, p1.x, p1.y}, fb[4] = {p2.x, p2.y, p3.x, p3.y};
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += dot4(fa, xa[t]) + dot4(fb, xb[t]);
    }
};
template <> struct MV<PAGODA_DTYPE_BF16> {
    enum { BE = 8, BB = 16, NP = 1 };
    static __device__ __forceinline__ void runs(int, int &oa, int &ob) { oa = 0, ob = 4; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const uint4 v = *(const uint4 *)b;
        const float fa[4] = {__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                             __uint_as_float(v.y & 0xffff0000u)};
        const float fb[4] = {__uint_as_float(v.z << 16), __uint_as_float(v.z & 0xffff0000u), __uint_as_float(v.w << 16),
                             __uint_as_float(v.w & 0xffff0000u)};
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += dot4(fa, xa[t]) + dot4(fb, xb[t]);
    }
};
template <> struct MV<PAGODA_DTYPE_F32> {
    enum { BE = 8, BB = 32, NP = 1 };
    static __device__ __forceinline__ void runs(int, int &oa, int &ob) { oa = 0, ob = 4; }
    template <int NT>
    static __device__ __forceinline__ void dot(const uint8_t *b, int, const float4 (&xa)[NT], const float4 (&xb)[NT], float (&acc)[NT]) {
        const float4 a = *(const float4 *)b, c = *(const float4 *)(b + 16);
        const float fa[4] = {a.x, a.y, a.z, a.w}, fb[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += dot4(fa, xa[t]) + dot4(fb, xb[t]);
    }
};

constexpr int kMvThreads = 128;
constexpr int kMvWarps = kMvThreads / 32;

// Rows per CTA: every activation float4 loaded is reused for R rows from registers (the L1
// traffic of x would otherwise exceed that of 4-bit weights several times).
template <int NT> constexpr int mv_rows() { return NT <= 4 ? 4 : 2; }

// The R*NT partial sums of every thread -> y (warp shuffles, then across the CTA's warps).
template <int R, int NT>
__device__ __forceinline__ void mv_reduce_store(float (&acc)[R][NT], int64_t row0, int64_t n_out, float *y, int64_t ldy) {
    __shared__ float red[kMvWarps][R * NT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = pcu_warp_sum(acc[r][t]);
            if (lane == 0) red[warp][r * NT + t] = v;
        }
    __syncthreads();
    if (threadIdx.x < R * NT) {
        float s = 0;
#pragma unroll
        for (int w = 0; w < kMvWarps; w++) s += red[w][threadIdx.x];
        const int64_t row = row0 + threadIdx.x / NT;
        if (row < n_out) y[(threadIdx.x % NT) * ldy + row] = s;
    }
}

// CTA = R consecutive rows; its threads stride over the rows' pieces (consecutive threads read
// consecutive bytes), each weight piece read once and applied to all NT activation rows. NP
// divides the CTA size, so a thread keeps the same piece index k in every block it visits and
// just advances its pointers by a constant stride (no per-piece 64-bit index arithmetic).
template <int T, int NT>
__global__ void __launch_bounds__(kMvThreads) mv_fast(const uint8_t *__restrict__ w, int64_t row_bytes, int64_t n_in,
                                                       int64_t n_out, const float *__restrict__ x, float *__restrict__ y,
                                                       int64_t ldy) {
    using P = MV<T>;
    constexpr int R = mv_rows<NT>();
    constexpr int STEP = kMvThreads / P::NP;  // blocks between a thread's consecutive pieces
    static_assert(kMvThreads % P::NP == 0, "pieces per block divide the CTA");
    // U pieces per thread in flight: their loads are issued before any is used (a 4096-wide
    // row is only a few pieces per thread).
    constexpr int U = NT <= 2 ? 4 : 2;
    const int64_t row0 = (int64_t)blockIdx.x * R;
    const int k = threadIdx.x % P::NP;
    int oa, ob;
    P::runs(k, oa, ob);
    const int nb = (int)(n_in / P::BE);  // blocks per row
    int b = threadIdx.x / P::NP;
    const uint8_t *wp[R];
#pragma unroll
    for (int r = 0; r < R; r++)  // rows past the end re-read the last one (never stored)
        wp[r] = w + (row0 + r < n_out ? row0 + r : n_out - 1) * row_bytes + (int64_t)b * P::BB;
    const float *xp = x + (int64_t)b * P::BE;
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.f;

    auto piece = [&](int u) {
        float4 xa[NT], xb[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            xa[t] = *(const float4 *)(xp + t * n_in + u * STEP * P::BE + oa);
            xb[t] = *(const float4 *)(xp + t * n_in + u * STEP * P::BE + ob);
            if (P::BE > 8) xa[t] = xscale(xa[t]), xb[t] = xscale(xb[t]);  // quantized: see ext4
        }
#pragma unroll
        for (int r = 0; r < R; r++) P::template dot<NT>(wp[r] + u * STEP * P::BB, k, xa, xb, acc[r]);
    };
    for (; b + (U - 1) * STEP < nb; b += U * STEP) {
#pragma unroll
        for (int u = 0; u < U; u++) piece(u);
#pragma unroll
        for (int r = 0; r < R; r++) wp[r] += U * STEP * P::BB;
        xp += U * STEP * P::BE;
    }
    for (; b < nb; b += STEP) {
        piece(0);
#pragma unroll
        for (int r = 0; r < R; r++) wp[r] += STEP * P::BB;
        xp += STEP * P::BE;
    }
    mv_reduce_store<R, NT>(acc, row0, n_out, y, ldy);
}

// Any alignment, any n_in: element by element with the exact scalar dequantizer (slow; only
// for weights or activations that are not 16-byte aligned, or plain rows with n_in % 8 != 0).
template <int T, int NT>
__global__ void __launch_bounds__(kMvThreads) mv_slow(const uint8_t *__restrict__ w, int64_t row_bytes, int64_t n_in,
                                                       int64_t n_out, const float *__restrict__ x, float *__restrict__ y,
                                                       int64_t ldy) {
    const int64_t row0 = blockIdx.x;
    const uint8_t *row = w + row0 * row_bytes;
    float acc[1][NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[0][t] = 0.f;
    for (int64_t i = threadIdx.x; i < n_in; i += kMvThreads) {
        const float v = deq_row<T>(row, i);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[0][t] = fmaf(v, x[t * n_in + i], acc[0][t]);
    }
    mv_reduce_store<1, NT>(acc, row0, n_out, y, ldy);
}

template <int T, int NT>
void mv_launch(cudaStream_t st, const void *w, int64_t row_bytes, int64_t n_in, int64_t n_out, const float *x, float *y,
               int64_t ldy, bool fast) {
    const uint8_t *wb = (const uint8_t *)w;
    if (fast) {
        constexpr int R = mv_rows<NT>();
        mv_fast<T, NT><<<pcu_div_up(n_out, R), kMvThreads, 0, st>>>(wb, row_bytes, n_in, n_out, x, y, ldy);
    } else {
        mv_slow<T, NT><<<(unsigned)n_out, kMvThreads, 0, st>>>(wb, row_bytes, n_in, n_out, x, y, ldy);
    }
}

template <int T>
void mv_type(cudaStream_t st, const void *w, int64_t row_bytes, int64_t n_in, int64_t n_out, const float *x, int n_tok,
             float *y, int64_t ldy, bool fast) {
    switch (n_tok) {
    case 1: mv_launch<T, 1>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 2: mv_launch<T, 2>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 3: mv_launch<T, 3>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 4: mv_launch<T, 4>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 5: mv_launch<T, 5>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 6: mv_launch<T, 6>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    case 7: mv_launch<T, 7>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    default: mv_launch<T, 8>(st, w, row_bytes, n_in, n_out, x, y, ldy, fast); break;
    }
}

// Calls F::template run<T>() for the runtime type id (a supported one).
template <class F> void dispatch(int t, F &&f) {
    switch (t) {
    case PAGODA_DTYPE_F32: f.template run<PAGODA_DTYPE_F32>(); break;
    case PAGODA_DTYPE_F16: f.template run<PAGODA_DTYPE_F16>(); break;
    case PAGODA_DTYPE_BF16: f.template run<PAGODA_DTYPE_BF16>(); break;
    case PAGODA_DTYPE_Q4_0: f.template run<PAGODA_DTYPE_Q4_0>(); break;
    case PAGODA_DTYPE_Q4_1: f.template run<PAGODA_DTYPE_Q4_1>(); break;
    case PAGODA_DTYPE_Q5_0: f.template run<PAGODA_DTYPE_Q5_0>(); break;
    case PAGODA_DTYPE_Q5_1: f.template run<PAGODA_DTYPE_Q5_1>(); break;
    case PAGODA_DTYPE_Q8_0: f.template run<PAGODA_DTYPE_Q8_0>(); break;
    case PAGODA_DTYPE_Q4_K: f.template run<PAGODA_DTYPE_Q4_K>(); break;
    case PAGODA_DTYPE_Q5_K: f.template run<PAGODA_DTYPE_Q5_K>(); break;
    case PAGODA_DTYPE_Q6_K: f.template run<PAGODA_DTYPE_Q6_K>(); break;
    default: break;
    }
}

struct GeoOf {
    int64_t be = 1, bb = 0;
    template <int T> void run() { be = Geo<T>::BE, bb = Geo<T>::BB; }
};
int64_t row_bytes_of(int t, int64_t n_in) {
    GeoOf g;
    dispatch(t, g);
    return n_in / g.be * g.bb;
}

// ---- dequantization to halves ------------------------------------------------------------------

// One thread per 8 consecutive elements of a row (n_in % 8 == 0): one 16-byte store.
template <int T>
__global__ void dequant8_kernel(const uint8_t *__restrict__ w, int64_t row_bytes, int64_t n_in, int64_t n_groups,
                                __half *__restrict__ out) {
    const int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (gi >= n_groups) return;
    const int64_t gpr = n_in / 8, r = gi / gpr, k = (gi % gpr) * 8;
    const uint8_t *row = w + r * row_bytes;
    __align__(16) __half h[8];
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = __float2half_rn(deq_row<T>(row, k + j));
    *(uint4 *)(out + r * n_in + k) = *(const uint4 *)h;
}

// Plain types with n_in % 8 != 0 (or unaligned output): element by element.
template <int T>
__global__ void dequant1_kernel(const uint8_t *__restrict__ w, int64_t row_bytes, int64_t n_in, int64_t n,
                                __half *__restrict__ out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[i] = __float2half_rn(deq_row<T>(w + (i / n_in) * row_bytes, i % n_in));
}

// ---- tensor-core matmul ------------------------------------------------------------------------
// CTA: 4 warps, a tile of 64 weight rows x BN tokens; each warp owns 16 rows x BN tokens
// (BN/16 wmma accumulators). Per K step of 128 the CTA dequantizes the 64x128 weight tile to
// halves in shared memory (exact values, rounded once to half) and copies the BN x 128 activation
// tile; rows/tokens/columns past the ends are zero-filled, so partial tiles need no other masks.

constexpr int kMmBM = 64, kMmBK = 128, kMmLD = kMmBK + 8;  // +8 halves: rows start on different banks
constexpr int kMmThreads = 128;

template <int T, int BN>
__global__ void __launch_bounds__(kMmThreads) mm_kernel(const uint8_t *__restrict__ w, int64_t row_bytes, int64_t n_in,
                                                         int64_t n_out, const __half *__restrict__ x, int64_t n_tok,
                                                         float *__restrict__ y, int64_t ldy) {
    using namespace nvcuda;
    __shared__ __align__(128) __half ws[kMmBM * kMmLD];
    __shared__ __align__(128) __half xs[BN * kMmLD];
    static_assert(kMmBM * kMmLD * sizeof(__half) >= 4 * 16 * BN * sizeof(float), "output staging fits in ws");

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t m0 = (int64_t)blockIdx.x * kMmBM, n0 = (int64_t)blockIdx.y * BN;
    const bool x16 = ((uintptr_t)x & 15) == 0;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[BN / 16];
#pragma unroll
    for (int j = 0; j < BN / 16; j++) wmma::fill_fragment(acc[j], 0.f);

    for (int64_t k0 = 0; k0 < n_in; k0 += kMmBK) {
        // weight tile: 64 rows x 16 groups of 8 elements
#pragma unroll 2
        for (int gi = tid; gi < kMmBM * (kMmBK / 8); gi += kMmThreads) {
            const int r = gi / (kMmBK / 8), c = (gi % (kMmBK / 8)) * 8;
            const int64_t row = m0 + r, k = k0 + c;
            __align__(16) __half h[8];
            if (row < n_out && k < n_in) {  // n_in % 8 == 0: a group is all in or all out
                const uint8_t *rp = w + row * row_bytes;
#pragma unroll
                for (int j = 0; j < 8; j++) h[j] = __float2half_rn(deq_row<T>(rp, k + j));
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) h[j] = __float2half_rn(0.f);
            }
            *(uint4 *)(ws + r * kMmLD + c) = *(const uint4 *)h;
        }
        // activation tile: BN tokens x 16 groups of 8 halves
        for (int gi = tid; gi < BN * (kMmBK / 8); gi += kMmThreads) {
            const int t = gi / (kMmBK / 8), c = (gi % (kMmBK / 8)) * 8;
            const int64_t tok = n0 + t, k = k0 + c;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (tok < n_tok && k < n_in) {
                const __half *src = x + tok * n_in + k;
                if (x16) {
                    v = *(const uint4 *)src;
                } else {
                    __align__(16) __half h[8];
#pragma unroll
                    for (int j = 0; j < 8; j++) h[j] = src[j];
                    v = *(const uint4 *)h;
                }
            }
            *(uint4 *)(xs + t * kMmLD + c) = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kMmBK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
            wmma::load_matrix_sync(a, ws + warp * 16 * kMmLD + kk, kMmLD);
#pragma unroll
            for (int j = 0; j < BN / 16; j++) {
                // B (k x token) is the activation tile read column-major: element (k, n) at xs[n*LD + k]
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
                wmma::load_matrix_sync(b, xs + j * 16 * kMmLD + kk, kMmLD);
                wmma::mma_sync(acc[j], a, b, acc[j]);
            }
        }
        __syncthreads();
    }

    // Stage each warp's 16 x BN block as [token][row] floats, then write y[t][r] (rows coalesced).
    float *ob = (float *)ws + warp * 16 * BN;
#pragma unroll
    for (int j = 0; j < BN / 16; j++) wmma::store_matrix_sync(ob + j * 16 * 16, acc[j], 16, wmma::mem_col_major);
    __syncwarp();
    for (int i = lane; i < 16 * BN; i += 32) {
        const int64_t tok = n0 + i / 16, row = m0 + warp * 16 + i % 16;
        if (tok < n_tok && row < n_out) y[tok * ldy + row] = ob[i];
    }
}

template <int T, int BN>
void mm_launch(cudaStream_t st, const void *w, int64_t n_in, int64_t n_out, const void *x, int64_t n_tok, float *y,
               int64_t ldy) {
    const dim3 grid((unsigned)pcu_div_up(n_out, kMmBM), (unsigned)pcu_div_up(n_tok, BN));
    mm_kernel<T, BN><<<grid, kMmThreads, 0, st>>>((const uint8_t *)w, row_bytes_of(T, n_in), n_in, n_out,
                                                   (const __half *)x, n_tok, y, ldy);
}

// ---- element conversions -----------------------------------------------------------------------

__global__ void f32_to_f16_kernel(const float *__restrict__ x, __half *__restrict__ y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}
__global__ void f32_to_bf16_kernel(const float *__restrict__ x, __nv_bfloat16 *__restrict__ y, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

unsigned conv_blocks(int64_t n) {
    const int64_t b = (n + 255) / 256;
    return (unsigned)(b < 65536 ? (b > 0 ? b : 1) : 65536);  // grid-stride beyond that
}

// Launch functors for dispatch(): the runtime type id picks the instantiation.
struct MvF {
    cudaStream_t st;
    const void *w;
    int64_t rb, n_in, n_out;
    const float *x;
    int n_tok;
    float *y;
    int64_t ldy;
    bool fast;
    template <int T> void run() { mv_type<T>(st, w, rb, n_in, n_out, x, n_tok, y, ldy, fast); }
};

struct DqF {
    cudaStream_t st;
    const uint8_t *w;
    int64_t rb, n_in, n_out;
    __half *out;
    bool vec;
    template <int T> void run() {
        if (vec) {
            const int64_t ng = n_out * (n_in / 8);
            dequant8_kernel<T><<<(unsigned)((ng + 255) / 256), 256, 0, st>>>(w, rb, n_in, ng, out);
        } else {
            const int64_t n = n_out * n_in;
            dequant1_kernel<T><<<(unsigned)((n + 255) / 256), 256, 0, st>>>(w, rb, n_in, n, out);
        }
    }
};

struct MmF {
    cudaStream_t st;
    const void *w;
    int64_t n_in, n_out;
    const void *x;
    int64_t n_tok;
    float *y;
    int64_t ldy;
    template <int T> void run() {
        if constexpr (Geo<T>::BE > 1) {  // quantized types only (plain ones go to cuBLAS)
            if (n_tok <= 16)
                mm_launch<T, 16>(st, w, n_in, n_out, x, n_tok, y, ldy);
            else if (n_tok <= 32)
                mm_launch<T, 32>(st, w, n_in, n_out, x, n_tok, y, ldy);
            else
                mm_launch<T, 64>(st, w, n_in, n_out, x, n_tok, y, ldy);
        }
    }
};

}  // namespace

extern "C" {

bool pcu_weight_supported(int wtype) { return type_ok(wtype); }

void pcu_matvec(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, const float *d_x, int n_tok,
                float *d_y, int64_t ldy) {
    if (!type_ok(wtype) || n_out <= 0 || n_in <= 0 || n_tok <= 0) return;
    if (n_tok > PCU_MMV_MAX_TOK) n_tok = PCU_MMV_MAX_TOK;
    const int64_t rb = row_bytes_of(wtype, n_in);
    // Fast path: 16-aligned weights and activations, whole 8-element pieces for plain types.
    const bool fast = ((uintptr_t)d_w & 15) == 0 && ((uintptr_t)d_x & 15) == 0 && (!is_plain(wtype) || n_in % 8 == 0);
    cudaStream_t st = pcu_cuda_stream(s);
    dispatch(wtype, MvF{st, d_w, rb, n_in, n_out, d_x, n_tok, d_y, ldy, fast});
}

void pcu_dequant_f16(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, void *d_out) {
    if (!type_ok(wtype) || n_out <= 0 || n_in <= 0) return;
    const int64_t rb = row_bytes_of(wtype, n_in);
    const bool vec = n_in % 8 == 0 && ((uintptr_t)d_out & 15) == 0;
    cudaStream_t st = pcu_cuda_stream(s);
    dispatch(wtype, DqF{st, (const uint8_t *)d_w, rb, n_in, n_out, (__half *)d_out, vec});
}

void pcu_f32_to_f16(pcu_stream *s, const float *d_x, void *d_y, int64_t n) {
    if (n <= 0) return;
    f32_to_f16_kernel<<<conv_blocks(n), 256, 0, pcu_cuda_stream(s)>>>(d_x, (__half *)d_y, n);
}

void pcu_f32_to_bf16(pcu_stream *s, const float *d_x, void *d_y, int64_t n) {
    if (n <= 0) return;
    f32_to_bf16_kernel<<<conv_blocks(n), 256, 0, pcu_cuda_stream(s)>>>(d_x, (__nv_bfloat16 *)d_y, n);
}

bool pcu_mma_supported(int wtype) { return type_ok(wtype) && !is_plain(wtype); }

void pcu_matmul_mma(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, const void *d_x_f16,
                    int64_t n_tok, float *d_y, int64_t ldy) {
    if (!pcu_mma_supported(wtype) || n_out <= 0 || n_in <= 0 || n_tok <= 0) return;
    cudaStream_t st = pcu_cuda_stream(s);
    dispatch(wtype, MmF{st, d_w, n_in, n_out, d_x_f16, n_tok, d_y, ldy});
}

}  // extern "C"
