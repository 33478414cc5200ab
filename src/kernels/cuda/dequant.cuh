// Exact dequantization of one element of a GGUF/plain weight row on the device, bit-identical
// to kref to_float (src/kernels/ref/quants.c). Shared by the products (matmul.cu: the fallback
// matvec, dequantization to halves, tensor-core tiles) and the embedding rows (ops.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "pagoda.h"

namespace {

// ---- block geometry of every weight type -----------------------------------------------------

template <int T> struct Geo;  // BE: elements per block, BB: bytes per block
template <> struct Geo<PAGODA_DTYPE_F32> { enum { BE = 1, BB = 4 }; };
template <> struct Geo<PAGODA_DTYPE_F16> { enum { BE = 1, BB = 2 }; };
template <> struct Geo<PAGODA_DTYPE_BF16> { enum { BE = 1, BB = 2 }; };
template <> struct Geo<PAGODA_DTYPE_Q4_0> { enum { BE = 32, BB = 18 }; };
template <> struct Geo<PAGODA_DTYPE_Q4_1> { enum { BE = 32, BB = 20 }; };
template <> struct Geo<PAGODA_DTYPE_Q5_0> { enum { BE = 32, BB = 22 }; };
template <> struct Geo<PAGODA_DTYPE_Q5_1> { enum { BE = 32, BB = 24 }; };
template <> struct Geo<PAGODA_DTYPE_Q8_0> { enum { BE = 32, BB = 34 }; };
template <> struct Geo<PAGODA_DTYPE_Q4_K> { enum { BE = 256, BB = 144 }; };
template <> struct Geo<PAGODA_DTYPE_Q5_K> { enum { BE = 256, BB = 176 }; };
template <> struct Geo<PAGODA_DTYPE_Q6_K> { enum { BE = 256, BB = 210 }; };

// ---- exact scalar dequantization (bit-identical to kref to_float) -------------------------------
// Byte loads only, so any alignment works. __fmul_rn/__fadd_rn keep nvcc from fusing into FMAs:
// the reference rounds every product and sum separately.

__device__ __forceinline__ uint32_t b8(const uint8_t *p, int i) { return p[i]; }
__device__ __forceinline__ float h16(const uint8_t *p, int off) {
    return __half2float(__ushort_as_half((unsigned short)(p[off] | (p[off + 1] << 8))));
}

// 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block (q: the 12 scale bytes).
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int &sc, int &m) {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Element e of the block at b.
template <int T> __device__ __forceinline__ float deq1(const uint8_t *b, int e);

template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_F32>(const uint8_t *b, int) {
    return __uint_as_float(b8(b, 0) | (b8(b, 1) << 8) | (b8(b, 2) << 16) | (b8(b, 3) << 24));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_F16>(const uint8_t *b, int) { return h16(b, 0); }
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_BF16>(const uint8_t *b, int) {
    return __uint_as_float((b8(b, 0) << 16) | (b8(b, 1) << 24));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q4_0>(const uint8_t *b, int e) {
    const int q = e < 16 ? (b[2 + e] & 0xf) : (b[2 + e - 16] >> 4);
    return __fmul_rn((float)(q - 8), h16(b, 0));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q4_1>(const uint8_t *b, int e) {
    const int q = e < 16 ? (b[4 + e] & 0xf) : (b[4 + e - 16] >> 4);
    return __fadd_rn(__fmul_rn((float)q, h16(b, 0)), h16(b, 2));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q5_0>(const uint8_t *b, int e) {
    const uint32_t qh = b8(b, 2) | (b8(b, 3) << 8) | (b8(b, 4) << 16) | (b8(b, 5) << 24);
    const int lo = e < 16 ? (b[6 + e] & 0xf) : (b[6 + e - 16] >> 4);
    const int q = lo | (int)(((qh >> e) & 1) << 4);  // element e's fifth bit is qh bit e
    return __fmul_rn((float)(q - 16), h16(b, 0));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q5_1>(const uint8_t *b, int e) {
    const uint32_t qh = b8(b, 4) | (b8(b, 5) << 8) | (b8(b, 6) << 16) | (b8(b, 7) << 24);
    const int lo = e < 16 ? (b[8 + e] & 0xf) : (b[8 + e - 16] >> 4);
    const int q = lo | (int)(((qh >> e) & 1) << 4);
    return __fadd_rn(__fmul_rn((float)q, h16(b, 0)), h16(b, 2));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q8_0>(const uint8_t *b, int e) {
    return __fmul_rn((float)(int8_t)b[2 + e], h16(b, 0));
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q4_K>(const uint8_t *b, int e) {
    const int c = e / 64, l = e % 64, hi = l >= 32;
    int sc, m;
    scale_min_k4(2 * c + hi, b + 4, sc, m);
    const uint8_t qb = b[16 + 32 * c + (l & 31)];
    const int q = hi ? (qb >> 4) : (qb & 0xf);
    const float d1 = __fmul_rn(h16(b, 0), (float)sc), m1 = __fmul_rn(h16(b, 2), (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)q), m1);
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q5_K>(const uint8_t *b, int e) {
    const int c = e / 64, l = e % 64, hi = l >= 32;
    int sc, m;
    scale_min_k4(2 * c + hi, b + 4, sc, m);
    const uint8_t qb = b[48 + 32 * c + (l & 31)];
    const int q = (hi ? (qb >> 4) : (qb & 0xf)) + (((b[16 + (l & 31)] >> (2 * c + hi)) & 1) ? 16 : 0);
    const float d1 = __fmul_rn(h16(b, 0), (float)sc), m1 = __fmul_rn(h16(b, 2), (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)q), m1);
}
template <> __device__ __forceinline__ float deq1<PAGODA_DTYPE_Q6_K>(const uint8_t *b, int e) {
    const int half = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    const uint8_t qlb = b[64 * half + 32 * (quarter & 1) + l];
    const int lo = quarter < 2 ? (qlb & 0xf) : (qlb >> 4);
    const int hi = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
    const int q = lo | (hi << 4);
    return __fmul_rn(__fmul_rn(h16(b, 208), (float)(int8_t)b[192 + e / 16]), (float)(q - 32));
}

// Element k of a row (any k; blocks found from the geometry).
template <int T> __device__ __forceinline__ float deq_row(const uint8_t *row, int64_t k) {
    return deq1<T>(row + (k / Geo<T>::BE) * Geo<T>::BB, (int)(k % Geo<T>::BE));
}

}  // namespace
