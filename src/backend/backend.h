/* The interface a device implements (in the spirit of ggml's backend table, smaller: pagoda writes
 * the transformer by hand in model/forward.c and calls these ops in order).
 *
 * A backend instance owns one device context (the CPU with its kernel threads, or one CUDA device
 * with its stream: every entry point makes that device current), the weights uploaded to it, its
 * scratch, and the KV memory of the layers it runs. Pointers to backend memory ("buffers") are
 * plain void* / float*: host memory on the CPU, device memory on a GPU. The caller never touches
 * them directly; it hands them back to ops of the same instance.
 *
 * One step: begin_step(batch) -> ops (embedding rows, add+norm, products, rope, KV store,
 * attention, activations) -> end_step -> read results (logits, greedy ids, or the residual stream
 * for the next backend of a CPU/GPU hybrid). Ops are asynchronous on a GPU; read_* and sync wait.
 * Ops return nothing: a launch error is kept and returned by end_step / read_* / sync. */
#ifndef PG_BACKEND_BACKEND_H
#define PG_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/batch.h"
#include "core/tensor.h"
#include "pagoda.h"

typedef struct pg_backend pg_backend;

/* A weight as a backend holds it. */
typedef struct {
    const void *data; /* backend memory; NULL: absent */
    int dtype;        /* pagoda_dtype of data */
    int64_t n_in;     /* contiguous dimension */
    int64_t n_out;    /* rows (1 for vectors) */
    const void *aux;  /* backend-private (CUDA: a half copy and/or a repacked copy), or NULL */
    const void *delta; /* reserved (NULL); LoRA deltas are applied per sequence by the lora op */
    int64_t row0;      /* get_rows tables: the id of the first row held (a vocabulary-parallel
                          embedding holds rows [row0, row0 + n_out)); other ids read as zeros */
} pg_bweight;

/* Which rows of the step a part of the model shares with the batch: the backend keeps the batch's
 * per-token metadata from begin_step and ops refer to it by these names. */
enum { PG_IDS_TOKENS, PG_IDS_POSITIONS };

/* KV memory of one layer as an op reads and writes it. */
typedef struct {
    void *k, *v;       /* [n_blocks] blocks of K / V (backend memory); layout: k_kv_view, kernels/ops.h */
    int32_t block_size, n_head_kv, head_dim;
    int dtype;         /* PAGODA_DTYPE_F32, _F16, _KV_INT8 or _KV_FP8_E4M3 (backends with kv_quant) */
} pg_kv_layer;

/* What begin_step decided. */
typedef struct {
    int32_t n_tok;  /* tokens the ops must cover (a GPU may pad decode steps to a graph's size) */
    int32_t n_out;  /* logits rows the ops must cover */
    bool replayed;  /* the whole step was launched from a recorded graph: issue no ops */
} pg_step_plan;

typedef struct pg_backend_ops {
    const char *name; /* "cpu", "cuda" */
    bool host_memory; /* buffers are host memory: results can be written straight to the caller's */
    bool kv_quant;    /* kv_store/attention take int8 and fp8 KV (pg_kv_layer.dtype); else f32/f16 only */
    void (*destroy)(pg_backend *be);

    /* ---- memory ---- */
    /* Copies a host tensor (rows x n_in of dtype) to the backend (the CPU uses it in place).
     * matrix: it is a product operand, so the backend may prepare copies its products read faster
     * (CUDA: repacked rows, a half copy for tensor cores). The same host data uploaded twice
     * (tied embeddings) is stored once. */
    pagoda_status (*upload)(pg_backend *be, const pg_tensor *t, bool matrix, pg_bweight *out);
    /* Stacks matrices that read the same input into one (rows of parts[0], then parts[1], ...),
     * so one product covers them (Q|K|V, gate|up). PAGODA_ERR_UNSUPPORTED: the backend does not
     * stack these (the caller uploads them one by one); not an error. */
    pagoda_status (*upload_stacked)(pg_backend *be, const pg_tensor *const *parts, int n, pg_bweight *out);
    /* Scratch owned by the backend, freed with it (NULL on failure). */
    void *(*alloc)(pg_backend *be, size_t bytes);
    /* Host memory the backend copies results into fastest (page-locked on a GPU). */
    void *(*host_alloc)(pg_backend *be, size_t bytes);
    void (*host_free)(pg_backend *be, void *p);
    /* KV memory: zeroed, released with kv_free. */
    pagoda_status (*kv_alloc)(pg_backend *be, size_t bytes, void **mem);
    void (*kv_free)(pg_backend *be, void *mem);
    /* Copies bytes within backend memory (KV block copy-on-write); ordered after the ops before it. */
    pagoda_status (*copy)(pg_backend *be, void *dst, const void *src, size_t bytes);
    /* Bytes of memory this backend may still take for KV blocks if it may hold `utilization` of
     * its device (a GPU: free memory less the reserve); 0: no device limit (the CPU: the caller's
     * host budget applies). */
    uint64_t (*kv_budget)(pg_backend *be, float utilization);

    /* ---- a step ---- */
    /* Takes the batch's metadata (tokens, positions, KV slots, block tables: the batch and its
     * tables must stay valid until end_step), out_rows[0..n_out): batch tokens whose logits are
     * wanted. may_replay: the caller issues the same ops for the same plan, so a GPU may record
     * them as a graph and replay it. */
    pagoda_status (*begin_step)(pg_backend *be, const pg_batch *batch, int32_t block_size, const int32_t *out_rows,
                                int32_t n_out, bool may_replay, pg_step_plan *plan);
    /* Ends the ops of a step. *again = true: recording them failed and the caller must issue them
     * once more (they will run eagerly). */
    pagoda_status (*end_step)(pg_backend *be, bool *again);

    /* ---- ops (shapes: T tokens; rows of floats; ld = row stride in floats) ---- */
    /* out[t] (+)= row ids[t] of table, ids = the batch's tokens or positions (table->row0: the id of
       its first row; ids outside its rows read as zeros). */
    void (*get_rows)(pg_backend *be, const pg_bweight *table, int ids, int32_t T, float *out, bool accumulate);
    /* out[i] = x[out_rows[i]] for the step's logits rows (n floats each). */
    void (*gather_out_rows)(pg_backend *be, const float *x, int64_t n, int32_t n_out, float *out);
    /* if delta: x += delta + delta_bias (bias may be absent); then if w: y = norm(x) (RMSNorm, or
     * LayerNorm with b); y is needed even without w (a GPU writes it anyway); y_half: also leave
     * y as halves for the next product (wants_half). */
    void (*add_norm)(pg_backend *be, float *x, const float *delta, const pg_bweight *delta_bias, float *y,
                     const pg_bweight *w, const pg_bweight *b, int64_t n, int32_t rows, float eps, bool layernorm,
                     bool y_half);
    /* y[t][0..n_out) (row stride ldy) = W · x[t]; x: [T][n_in]. x_half: x is also waiting as
     * halves (an earlier op wrote them). */
    void (*matmul)(pg_backend *be, const pg_bweight *w, const float *x, int32_t T, float *y, int64_t ldy, bool x_half);
    /* true if a product of w with T tokens reads its input as halves (the op before may write them). */
    bool (*wants_half)(pg_backend *be, const pg_bweight *w, int32_t T);
    /* y[r][0..n) += b for r < rows (b absent: nothing). */
    void (*add_bias)(pg_backend *be, float *y, const pg_bweight *b, int32_t rows, int64_t n, int64_t ld);
    /* RMSNorm of each head in place (q/k norm): head h of token t at x + t*ld + h*head_dim. */
    void (*head_norm)(pg_backend *be, float *x, int32_t T, int n_head, int head_dim, int64_t ld, const pg_bweight *w,
                      float eps);
    /* Rotary embedding in place by each token's position, n_head heads per row. */
    void (*rope)(pg_backend *be, float *x, int32_t T, int64_t ld, int n_head, int head_dim, int rope_dim,
                 const pg_bweight *inv_freq, bool neox);
    /* Writes each token's K and V rows (n_head_kv*head_dim floats at k + t*ld, v + t*ld) into its
     * KV slot of the layer. */
    void (*kv_store)(pg_backend *be, const pg_kv_layer *kv, const float *k, const float *v, int64_t ld, int32_t T);
    /* Causal paged attention of the step's queries (q rows of stride q_ld) over the layer's cache;
     * out: [T][n_head*head_dim]. window > 0: sliding window. */
    void (*attention)(pg_backend *be, const pg_kv_layer *kv, float *out, const float *q, int64_t q_ld, int32_t T,
                      int n_head, float scale, int window);
    void (*silu_mul)(pg_backend *be, float *gate, const float *up, int64_t n);          /* gate = silu(gate)*up */
    void (*swiglu_rows)(pg_backend *be, float *out, const float *in, int32_t rows, int64_t n, bool out_half);
    void (*gelu)(pg_backend *be, float *x, int64_t n);
    /* Collective over the devices of a tensor-parallel group (sum); a no-op for one device. */
    pagoda_status (*all_reduce)(pg_backend *be, float *x, int64_t n);

    /* ---- results (asynchronous on a GPU, ordered after the step's ops: sync before reading) ---- */
    pagoda_status (*read)(pg_backend *be, void *host, const void *src, size_t bytes);
    pagoda_status (*write)(pg_backend *be, void *dst, const void *host, size_t bytes);
    /* ids[r] = argmax of row r of x (lowest id among equals; NaN never wins), into host memory.
     * NULL where the backend has no such capability (the sampler then picks on the host). */
    pagoda_status (*argmax_rows)(pg_backend *be, const float *x, int32_t rows, int64_t n, int32_t *ids);
    pagoda_status (*sync)(pg_backend *be);

    /* ---- optional ---- */
    /* LoRA deltas of n segments (pg_lora_seg, core/batch.h: each a run of rows with its adapter's
     * A [rank][n_in] and Bt [rank][n_out], f32 or f16, in backend memory, for one projection;
     * several projections may come in one call, their outputs disjoint): y[t] (stride ldy) +=
     * scale * B·(A·x[t]). NULL: the backend applies no adapters (the forward pass refuses
     * batches that use one). */
    void (*lora)(pg_backend *be, const pg_lora_seg *segs, int32_t n);
} pg_backend_ops;

struct pg_backend {
    const pg_backend_ops *ops;
};

/* ---- the backends ---- */

/* An observer of products: called on the stepping thread with the input x [T][n_in] (contiguous
 * floats) of a product over the matrix uploaded as weight_name (pg_tensor.name, "?" when it had
 * none), before the product runs. x is the backend's memory: read it, never keep it. */
typedef void (*pg_matmul_observer)(void *user, const char *weight_name, const float *x, int32_t T, int64_t n_in);

typedef struct {
    int32_t n_threads;   /* kernel threads of this backend (OpenMP team size); <= 0: all cores */
    int32_t max_tokens;  /* tokens per step */
    int64_t max_strided_cols; /* widest product output written with a row stride other than its
                                 width (Q, K or V rows of a fused Q|K|V buffer) */
    int32_t quant_act;   /* pagoda_quant_act: activations of products over GPTQ/AWQ/compressed-tensors
                            weights (0: as each checkpoint declares) */
    pg_matmul_observer observe; /* optional: sees the input rows of every product over an uploaded
                                   matrix before it runs (NULL: none; pagoda imatrix) */
    void *observe_user;
    /* optional: the collective of a tensor-parallel group (sum over the group's processes, in
       place), what the all_reduce op calls (NULL: a group of one, the op does nothing) */
    pagoda_status (*all_reduce)(void *user, float *x, int64_t n);
    void *all_reduce_user;
} pg_cpu_config;
pagoda_status be_cpu_create(const pg_cpu_config *c, pg_backend **out);

#define PG_NCCL_ID_BYTES 128 /* an NCCL group's id (ncclUniqueId) */

typedef enum {
    PG_CUDA_QGEMM_SHADOW = 0, /* quantized x > few tokens: cuBLAS on a half copy (fastest, 2 B/weight) */
    PG_CUDA_QGEMM_DEQUANT,    /* cuBLAS after dequantizing the matrix per product (no extra memory) */
    PG_CUDA_QGEMM_MMA,        /* tensor-core kernel dequantizing tiles in shared memory */
} pg_cuda_qgemm;

typedef struct {
    int device;           /* CUDA device id */
    int32_t max_tokens;   /* tokens per step */
    int32_t max_ctx;      /* longest context a step attends over */
    int32_t n_embd, n_head, head_dim; /* attention scratch sizing */
    bool graphs;          /* record decode steps as CUDA graphs and replay them (default true) */
    bool repack;          /* repacked Q4_0/Q8_0 copies for the decode matvec (default true) */
    pg_cuda_qgemm qgemm;
    /* tensor parallelism across GPUs: nccl_size >= 1: this device is rank nccl_rank of an NCCL
       group of nccl_size devices (one per process) whose id rank 0 made with be_cuda_nccl_id and
       handed to every rank; creation joins the group (collective) and the all_reduce op sums over
       it on the stream. 0: alone (all_reduce does nothing). */
    int32_t nccl_rank, nccl_size;
    uint8_t nccl_id[PG_NCCL_ID_BYTES];
} pg_cuda_config;
void be_cuda_config_default(pg_cuda_config *c);
/* PAGODA_ERR_CUDA with the reason when no usable device answers, PAGODA_ERR_UNSUPPORTED when
 * pagoda was built without CUDA. */
pagoda_status be_cuda_create(const pg_cuda_config *c, pg_backend **out);
/* A new NCCL group's id (needs no GPU): PAGODA_ERR_UNSUPPORTED, with the reason, when pagoda was
 * built without CUDA or NCCL cannot be loaded. */
pagoda_status be_cuda_nccl_id(uint8_t id[PG_NCCL_ID_BYTES]);
/* NCCL's version code where it loads, else 0 and why (built without CUDA, library missing). */
int be_cuda_nccl_version(char *why, size_t why_size);
/* CUDA devices that answer (0 without CUDA). */
int be_cuda_device_count(void);
/* 1 when built with MPI (mpi_group.c), 0 otherwise (mpi_none.c). */
int be_mpi_built(void);

/* A shard of a weight for tensor parallelism: part `index` of `count` equal parts of its rows
 * (output features) or columns (input features). */
typedef enum { PG_SHARD_ROWS, PG_SHARD_COLS } pg_shard_dim;
typedef struct {
    pg_shard_dim dim;
    int32_t index, count;
} pg_shard;
/* The view of t that shard s selects, to upload like a whole tensor. Rows: a view into t's memory
 * (rows are contiguous). Columns: PAGODA_ERR_UNSUPPORTED (they need a strided copy: be_shard_copy).
 * PAGODA_ERR_INVALID when the rows do not divide evenly or s is out of range. */
pagoda_status be_shard_view(const pg_tensor *t, const pg_shard *s, pg_tensor *out);
/* Bytes of the copy be_shard_copy makes of shard s of t (rows or columns). PAGODA_ERR_INVALID
 * when the dimension does not split into s->count equal parts, or (block types) a column part is
 * not a whole number of blocks; PAGODA_ERR_UNSUPPORTED for weights with scales/zero points. */
pagoda_status be_shard_bytes(const pg_tensor *t, const pg_shard *s, size_t *bytes);
/* Copies shard s of t into dst (be_shard_bytes bytes of host memory the caller owns: for columns,
 * each row's column range of elements or blocks) and describes it in *out (data = dst). */
pagoda_status be_shard_copy(const pg_tensor *t, const pg_shard *s, void *dst, pg_tensor *out);

static inline void be_destroy(pg_backend *be) {
    if (be) be->ops->destroy(be);
}

#endif
