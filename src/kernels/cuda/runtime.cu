// pcu.h: device, memory, streams, graphs and the cuBLAS dense product, behind a C interface.
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/pcu_internal.cuh"

extern "C" {
#include "core/log.h"
}

static pagoda_status cuda_fail(cudaError_t e, const char *what) {
    return pg_fail(e == cudaErrorMemoryAllocation ? PAGODA_ERR_NOMEM : PAGODA_ERR_CUDA, "CUDA: %s: %s", what,
                   cudaGetErrorString(e));
}
#define CU_TRY(call, what)                          \
    do {                                            \
        cudaError_t e_ = (call);                    \
        if (e_ != cudaSuccess) return cuda_fail(e_, what); \
    } while (0)

static const char *blas_status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

extern "C" {

bool pcu_available(char *why, size_t why_size) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        if (why && why_size) snprintf(why, why_size, "%s", e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
        cudaGetLastError(); // clear the sticky-free error so later calls start clean
        return false;
    }
    return true;
}

int pcu_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

pagoda_status pcu_set_device(int device) {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur == device) return PAGODA_OK;
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    return PAGODA_OK;
}

pagoda_status pcu_get_device_info(pcu_device_info *out) {
    memset(out, 0, sizeof *out);
    int dev = 0;
    CU_TRY(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp p;
    CU_TRY(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
    snprintf(out->name, sizeof out->name, "%s", p.name);
    out->cc_major = p.major, out->cc_minor = p.minor, out->n_sm = p.multiProcessorCount;
    out->smem_per_block_optin = p.sharedMemPerBlockOptin;
    CU_TRY(cudaMemGetInfo(&out->mem_free, &out->mem_total), "cudaMemGetInfo");
    return PAGODA_OK;
}

pagoda_status pcu_malloc(void **d_ptr, size_t bytes) {
    *d_ptr = NULL;
    cudaError_t e = cudaMalloc(d_ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *d_ptr = NULL;
        return pg_fail(PAGODA_ERR_NOMEM, "CUDA: cannot allocate %.1f MiB of device memory: %s", (double)bytes / 1048576.0,
                       cudaGetErrorString(e));
    }
    return PAGODA_OK;
}
void pcu_free(void *d_ptr) {
    if (d_ptr) cudaFree(d_ptr);
}
pagoda_status pcu_host_alloc(void **ptr, size_t bytes) {
    *ptr = NULL;
    cudaError_t e = cudaMallocHost(ptr, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return pg_fail(PAGODA_ERR_NOMEM, "CUDA: cannot allocate %.1f MiB of pinned host memory", (double)bytes / 1048576.0);
    }
    return PAGODA_OK;
}
void pcu_host_free(void *ptr) {
    if (ptr) cudaFreeHost(ptr);
}

pagoda_status pcu_stream_create(pcu_stream **out) {
    *out = NULL;
    pcu_stream *s = (pcu_stream *)calloc(1, sizeof *s);
    if (!s) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    cudaError_t e = cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(s);
        return cuda_fail(e, "cudaStreamCreate");
    }
    cublasStatus_t bs = cublasCreate(&s->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cudaStreamDestroy(s->st);
        free(s);
        return pg_fail(PAGODA_ERR_CUDA, "cuBLAS: cublasCreate: %s", blas_status_name(bs));
    }
    // A fixed workspace: cuBLAS then never allocates inside a graph capture.
    s->blas_ws_bytes = 32u << 20;
    if (cudaMalloc(&s->blas_ws, s->blas_ws_bytes) != cudaSuccess) {
        cudaGetLastError();
        cublasDestroy(s->blas);
        cudaStreamDestroy(s->st);
        free(s);
        return pg_fail(PAGODA_ERR_NOMEM, "CUDA: cannot allocate the cuBLAS workspace");
    }
    cublasSetStream(s->blas, s->st);
    cublasSetWorkspace(s->blas, s->blas_ws, s->blas_ws_bytes);
    cublasSetMathMode(s->blas, CUBLAS_DEFAULT_MATH); // no TF32 for float weights: parity with the CPU
    *out = s;
    return PAGODA_OK;
}

void pcu_stream_destroy(pcu_stream *s) {
    if (!s) return;
    cudaStreamSynchronize(s->st);
    cublasDestroy(s->blas);
    cudaFree(s->blas_ws);
    cudaStreamDestroy(s->st);
    free(s);
}

pagoda_status pcu_sync(pcu_stream *s) {
    CU_TRY(s ? cudaStreamSynchronize(s->st) : cudaDeviceSynchronize(), "kernel execution");
    CU_TRY(cudaGetLastError(), "kernel launch");
    return PAGODA_OK;
}

pagoda_status pcu_h2d(void *d_dst, const void *src, size_t bytes, pcu_stream *s) {
    if (!bytes) return PAGODA_OK;
    if (s) CU_TRY(cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, s->st), "copy to device");
    else CU_TRY(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), "copy to device");
    return PAGODA_OK;
}
pagoda_status pcu_d2h(void *dst, const void *d_src, size_t bytes, pcu_stream *s) {
    if (!bytes) return PAGODA_OK;
    if (s) CU_TRY(cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, s->st), "copy to host");
    else CU_TRY(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), "copy to host");
    return PAGODA_OK;
}
pagoda_status pcu_d2d(void *d_dst, const void *d_src, size_t bytes, pcu_stream *s) {
    if (!bytes) return PAGODA_OK;
    if (s) CU_TRY(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, s->st), "device copy");
    else CU_TRY(cudaMemcpy(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice), "device copy");
    return PAGODA_OK;
}
pagoda_status pcu_memset(void *d_dst, int value, size_t bytes, pcu_stream *s) {
    if (!bytes) return PAGODA_OK;
    if (s) CU_TRY(cudaMemsetAsync(d_dst, value, bytes, s->st), "memset");
    else CU_TRY(cudaMemset(d_dst, value, bytes), "memset");
    return PAGODA_OK;
}
pagoda_status pcu_check(const char *what) {
    CU_TRY(cudaGetLastError(), what);
    return PAGODA_OK;
}

struct pcu_graph {
    cudaGraph_t g;
    cudaGraphExec_t exec;
};

pagoda_status pcu_graph_begin(pcu_stream *s) {
    CU_TRY(cudaStreamBeginCapture(s->st, cudaStreamCaptureModeThreadLocal), "begin graph capture");
    return PAGODA_OK;
}
pagoda_status pcu_graph_end(pcu_stream *s, pcu_graph **out) {
    *out = NULL;
    pcu_graph *g = (pcu_graph *)calloc(1, sizeof *g);
    cudaError_t e = cudaStreamEndCapture(s->st, g ? &g->g : NULL);
    if (!g) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (e != cudaSuccess) {
        free(g);
        return cuda_fail(e, "end graph capture");
    }
    e = cudaGraphInstantiate(&g->exec, g->g, 0);
    if (e != cudaSuccess) {
        cudaGraphDestroy(g->g);
        free(g);
        return cuda_fail(e, "instantiate graph");
    }
    *out = g;
    return PAGODA_OK;
}
pagoda_status pcu_graph_launch(pcu_graph *g, pcu_stream *s) {
    CU_TRY(cudaGraphLaunch(g->exec, s->st), "graph launch");
    return PAGODA_OK;
}
void pcu_graph_destroy(pcu_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    cudaGraphDestroy(g->g);
    free(g);
}

pagoda_status pcu_gemm(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, const void *d_x,
                       int64_t n_tok, float *d_y, int64_t ldy) {
    // Column-major view: W is [n_in x n_out] (lda = n_in), X is [n_in x n_tok] (ldb = n_in),
    // Y = W^T X is [n_out x n_tok] (ldc = ldy).
    cudaDataType_t t;
    cublasComputeType_t ct = CUBLAS_COMPUTE_32F;
    switch (wtype) {
    case PAGODA_DTYPE_F16: t = CUDA_R_16F; break;
    case PAGODA_DTYPE_BF16: t = CUDA_R_16BF; break;
    case PAGODA_DTYPE_F32: t = CUDA_R_32F; break;
    default: return pg_fail(PAGODA_ERR_UNSUPPORTED, "cuBLAS product for weight type %d", wtype);
    }
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t bs = cublasGemmEx(s->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)n_out, (int)n_tok, (int)n_in, &one, d_w, t,
                                     (int)n_in, d_x, t, (int)n_in, &zero, d_y, CUDA_R_32F, (int)ldy, ct,
                                     CUBLAS_GEMM_DEFAULT);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return pg_fail(PAGODA_ERR_CUDA, "cuBLAS: gemm %lldx%lld by %lld tokens: %s", (long long)n_out, (long long)n_in,
                       (long long)n_tok, blas_status_name(bs));
    return PAGODA_OK;
}

} // extern "C"
