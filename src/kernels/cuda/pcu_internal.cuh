// Shared by the .cu files: the stream object behind pcu_stream and small device helpers.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/pcu.h"

struct pcu_stream {
    cudaStream_t st;
    cublasHandle_t blas;
    void *blas_ws;     // cuBLAS workspace (set explicitly, so graph capture never allocates)
    size_t blas_ws_bytes;
};

static inline cudaStream_t pcu_cuda_stream(pcu_stream *s) { return s ? s->st : (cudaStream_t)0; }

static inline int pcu_div_up(long long a, long long b) { return (int)((a + b - 1) / b); }

__device__ __forceinline__ float pcu_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float pcu_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
