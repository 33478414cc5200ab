/* Transformer ops other than matrix products. kref_* are the scalar specification, kcpu_* the
 * fast versions with the same signature and results within a small float tolerance.
 * All tensors are float32, row-major, contiguous unless a stride says otherwise. */
#ifndef PG_KERNELS_OPS_H
#define PG_KERNELS_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include <stddef.h>

#include "core/batch.h"
#include "pagoda.h"

/* y = x / sqrt(mean(x^2) + eps) * w   (w may be NULL: no scale). y may equal x. */
void kref_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);
void kcpu_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);

/* y = (x - mean) / sqrt(var + eps) * w + b   (w, b may be NULL). y may equal x. */
void kref_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);
void kcpu_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);

/* Rotary embedding in place on one token's heads: x is [n_head][head_dim]; the first rope_dim
 * dims of each head rotate, by angle pos * inv_freq[i] for pair i (i < rope_dim/2).
 * neox = false: pairs are (x[2i], x[2i+1]) (GGUF llama layout, ggml mode 0);
 * neox = true: pairs are (x[i], x[i + rope_dim/2]) (Hugging Face rotate_half, ggml NEOX). */
void kref_rope(float *x, int n_head, int head_dim, int rope_dim, int32_t pos, const float *inv_freq, bool neox);
void kcpu_rope(float *x, int n_head, int head_dim, int rope_dim, int32_t pos, const float *inv_freq, bool neox);

/* In-place softmax over n values. */
void kref_softmax(float *x, int64_t n);
void kcpu_softmax(float *x, int64_t n);

/* gate[i] = silu(gate[i]) * up[i]  (SwiGLU). */
void kref_silu_mul(float *gate, const float *up, int64_t n);
void kcpu_silu_mul(float *gate, const float *up, int64_t n);

/* x[i] = gelu(x[i]), tanh approximation (gelu_pytorch_tanh / ggml gelu). */
void kref_gelu(float *x, int64_t n);
void kcpu_gelu(float *x, int64_t n);

/* Paged KV of one layer: position p of a sequence lives in block block_table[p / block_size],
 * slot p % block_size; a slot holds [n_head_kv][head_dim] elements of `type` (a pagoda_dtype):
 *  - PAGODA_DTYPE_F32 / PAGODA_DTYPE_F16: a block is [block_size][n_head_kv][head_dim] floats /
 *    IEEE halves (read as the floats they round to);
 *  - PAGODA_DTYPE_KV_INT8 / PAGODA_DTYPE_KV_FP8_E4M3: a block is the codes
 *    [block_size][n_head_kv][head_dim] (int8, or fp8 e4m3fn bytes) then the scales
 *    [block_size][n_head_kv] floats; element = code * scale of its (token, head). */
typedef struct {
    const void *k;              /* [n_blocks] blocks of k_kv_block_bytes() */
    const void *v;              /* same shape */
    const int32_t *block_table; /* the sequence's blocks */
    int block_size;
    int n_head_kv;
    int head_dim;
    int type;                   /* pagoda_dtype of the elements (0 = PAGODA_DTYPE_F32) */
} k_kv_view;

static inline bool k_kv_quantized(int type) { return type == PAGODA_DTYPE_KV_INT8 || type == PAGODA_DTYPE_KV_FP8_E4M3; }

/* Bytes of one block of K (or V). */
static inline size_t k_kv_block_bytes(int type, int block_size, int n_head_kv, int head_dim) {
    size_t per_head = type == PAGODA_DTYPE_F32 ? 4 * (size_t)head_dim
                      : type == PAGODA_DTYPE_F16 ? 2 * (size_t)head_dim : (size_t)head_dim + sizeof(float);
    return (size_t)block_size * (size_t)n_head_kv * per_head;
}

/* Byte offset of the elements (codes) of head h at slot `slot` of block `blk`, and for int8/fp8
 * the byte offset of its float scale. */
static inline size_t k_kv_elem_offset(int type, int block_size, int n_head_kv, int head_dim, int32_t blk, int slot, int h) {
    if (k_kv_quantized(type))
        return (size_t)blk * k_kv_block_bytes(type, block_size, n_head_kv, head_dim) +
               ((size_t)slot * n_head_kv + h) * (size_t)head_dim;
    return (((size_t)blk * block_size + slot) * n_head_kv + h) * (size_t)head_dim * (type == PAGODA_DTYPE_F16 ? 2 : 4);
}
static inline size_t k_kv_scale_offset(int block_size, int n_head_kv, int head_dim, int32_t blk, int slot, int h) {
    return (size_t)blk * (size_t)block_size * n_head_kv * ((size_t)head_dim + sizeof(float)) +
           (size_t)block_size * n_head_kv * head_dim + ((size_t)slot * n_head_kv + h) * sizeof(float);
}

/* One head's n values to codes and their scale (type int8 or fp8): scale = max|x| / 127 (int8)
 * or / 448 (fp8), code = x / scale rounded to nearest (even), saturated; all zeros: scale 0. */
void k_kv_quantize(int type, uint8_t *codes, float *scale, const float *x, int n);
/* Back: x[i] = value of codes[i] * scale (the float each element reads as). */
void k_kv_dequantize(int type, float *x, const uint8_t *codes, float scale, int n);

/* Causal attention for n_q queries of one sequence at positions pos0 .. pos0+n_q-1, against keys
 * at positions 0 .. pos0+n_q-1 already in the cache (query i sees keys <= pos0+i; with
 * window > 0 only keys > pos0+i-window). Query head h uses KV head h / (n_head / n_head_kv).
 * q, out: [n_q][n_head][head_dim]. Computed tile by tile with an online softmax: no [n_q, n_kv]
 * score matrix. kcpu_ threads over heads and query tiles. */
void kref_attention(float *out, const float *q, int n_q, int32_t pos0, int n_head, float scale,
                    int window, const k_kv_view *kv);
void kcpu_attention(float *out, const float *q, int n_q, int32_t pos0, int n_head, float scale,
                    int window, const k_kv_view *kv);

/* kcpu_attention for every sequence of a batch in one parallel region (decode batches have many
 * short sequences: one region per sequence would leave threads waiting at each one's end).
 * Each sequence's result is the one kcpu_attention gives it alone. */
typedef struct {
    float *out;       /* [n_q][n_head][head_dim] */
    const float *q;   /* [n_q][n_head][head_dim] */
    int n_q;
    int32_t pos0;
    k_kv_view kv;
} k_attn_seq;
void kcpu_attention_batch(const k_attn_seq *seqs, int n_seq, int n_head, float scale, int window);

/* LoRA delta for rows x[0..rows) ([rows][n_in] contiguous): y[t][o] += scale * sum_k Bt[k][o] * (A[k] . x[t])
 * for o < n_out (y row stride ldy). A: [rank][n_in], Bt: [rank][n_out] (B transposed), tmp: rows*rank
 * floats of scratch. kcpu_lora runs the A product on the threaded f32 matmul. */
void kref_lora(const float *x, int32_t rows, int64_t n_in, const float *A, int32_t rank, const float *Bt, int64_t n_out,
               float scale, float *y, int64_t ldy, float *tmp);
void kcpu_lora(const float *x, int32_t rows, int64_t n_in, const float *A, int32_t rank, const float *Bt, int64_t n_out,
               float scale, float *y, int64_t ldy, float *tmp);
/* The deltas of n segments (pg_lora_seg, core/batch.h; of one or several projections, outputs
 * disjoint) in one thread-pool job where rows are many (each row's A then B product by one
 * thread), or two where they are few (A products, then B axpys over (row, column chunk)), so a
 * decode step with a different adapter per sequence does not pay fork/joins per sequence and
 * projection. Each segment's result is kcpu_lora's for it alone. */
void kcpu_lora_batch(const pg_lora_seg *segs, int32_t n);

#endif
