/* pagoda's CUDA runtime layer, callable from C: devices, memory, streams, graphs, cuBLAS.
 * C code never includes CUDA headers; everything CUDA goes through pcu_* (the .cu files of src/kernels/cuda).
 * Only built when CMake finds nvcc (PAGODA_CUDA defined); callers guard with #ifdef PAGODA_CUDA.
 * Device pointers are plain void* / float*; "d_" names say a pointer is on the device. */
#ifndef PG_KERNELS_CUDA_PCU_H
#define PG_KERNELS_CUDA_PCU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pcu_stream pcu_stream; /* a CUDA stream with its own cuBLAS handle and workspace */
typedef struct pcu_graph pcu_graph;   /* an instantiated CUDA graph */

typedef struct {
    char name[256];
    int cc_major, cc_minor;
    int n_sm;
    size_t mem_total, mem_free;
    size_t smem_per_block_optin; /* shared memory a block may ask for */
} pcu_device_info;

/* true if a CUDA device can be used; otherwise why (e.g. "no CUDA device: ..."). */
bool pcu_available(char *why, size_t why_size);
int pcu_device_count(void); /* 0 when none answers */
/* Makes a device current for the calling thread (every later pcu_* call of that thread uses it). */
pagoda_status pcu_set_device(int device);
/* The current device's properties and memory. */
pagoda_status pcu_get_device_info(pcu_device_info *out);

pagoda_status pcu_malloc(void **d_ptr, size_t bytes); /* fails with PAGODA_ERR_NOMEM naming the size */
void pcu_free(void *d_ptr);                           /* NULL is a no-op */
pagoda_status pcu_host_alloc(void **ptr, size_t bytes); /* pinned host memory (fast async copies) */
void pcu_host_free(void *ptr);

pagoda_status pcu_stream_create(pcu_stream **out);
void pcu_stream_destroy(pcu_stream *s);
pagoda_status pcu_sync(pcu_stream *s); /* waits for the stream; reports any kernel error */

/* Copies are asynchronous on s (s == NULL: synchronous). */
pagoda_status pcu_h2d(void *d_dst, const void *src, size_t bytes, pcu_stream *s);
pagoda_status pcu_d2h(void *dst, const void *d_src, size_t bytes, pcu_stream *s);
pagoda_status pcu_d2d(void *d_dst, const void *d_src, size_t bytes, pcu_stream *s);
pagoda_status pcu_memset(void *d_dst, int value, size_t bytes, pcu_stream *s);

/* Launch errors (bad configuration etc.) since the last check, as a pagoda_status with a log line. */
pagoda_status pcu_check(const char *what);

/* Graph capture of everything launched on s between begin and end (no sync, no host copies). */
pagoda_status pcu_graph_begin(pcu_stream *s);
pagoda_status pcu_graph_end(pcu_stream *s, pcu_graph **out);
pagoda_status pcu_graph_launch(pcu_graph *g, pcu_stream *s);
void pcu_graph_destroy(pcu_graph *g);

/* Dense product through cuBLAS, weights as stored (row-major [n_out][n_in], i.e. column-major
 * [n_in][n_out] transposed): y[t][r] = sum_i W[r][i] * x[t][i], y row stride ldy (>= n_out).
 *   wtype F16:  x is [n_tok][n_in] halves;  BF16: x is bfloat16;  F32: x is floats (no TF32).
 * Accumulates in float; y is float. */
pagoda_status pcu_gemm(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out,
                       const void *d_x, int64_t n_tok, float *d_y, int64_t ldy);

/* ---- NCCL: a sum over the GPUs of a tensor-parallel group (nccl.cu) ----
 * libnccl.so.2 is loaded on first use (not linked), so pagoda runs where NCCL is not installed and
 * only these calls say it is missing (PAGODA_ERR_UNSUPPORTED, naming what failed to load). */
#define PCU_NCCL_ID_BYTES 128
typedef struct pcu_nccl pcu_nccl; /* this device's place in a group */
/* NCCL's version code (e.g. 22809 for 2.28.9), or 0 with why it cannot be loaded. */
int pcu_nccl_version(char *why, size_t why_size);
/* A new group's id (rank 0 makes it and hands it to every rank; needs no GPU). */
pagoda_status pcu_nccl_make_id(uint8_t id[PCU_NCCL_ID_BYTES]);
/* Joins group id as rank of size on the current device; collective: returns when all have joined. */
pagoda_status pcu_nccl_init(const uint8_t id[PCU_NCCL_ID_BYTES], int rank, int size, pcu_nccl **out);
/* d_x[0..n) = the sum over the group's ranks, in place, asynchronous on s. */
pagoda_status pcu_nccl_all_reduce(pcu_nccl *c, float *d_x, int64_t n, pcu_stream *s);
/* failed: after an error (the group is aborted, not torn down with the other ranks). NULL: no-op. */
void pcu_nccl_destroy(pcu_nccl *c, bool failed);

#ifdef __cplusplus
}
#endif

#endif
