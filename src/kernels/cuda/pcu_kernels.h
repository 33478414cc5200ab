/* CUDA kernel launchers (extern "C"), one section per .cu file in src/kernels/cuda/.
 * All pointers named d_* are device memory; all launches are asynchronous on the stream; none
 * allocates, synchronizes or copies to the host, so every launcher may be captured in a CUDA graph.
 * Launch errors surface at the next pcu_check()/pcu_sync(). Float tensors are row-major. */
#ifndef PG_KERNELS_CUDA_PCU_KERNELS_H
#define PG_KERNELS_CUDA_PCU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/cuda/pcu.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- matmul.cu: weights as stored in the file (GGUF blocks, F16, BF16, F32) ---------------- */

/* Most activation rows pcu_matvec takes per launch. */
#define PCU_MMV_MAX_TOK 8

/* true if weights of this type can live on the GPU (pcu_matvec and pcu_dequant_f16 take them):
 * F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. */
bool pcu_weight_supported(int wtype);

/* y[t][r] = dot(W row r, x row t) for t < n_tok <= PCU_MMV_MAX_TOK, r < n_out.
 * W: n_out rows of n_in elements of wtype (dtype_row_size bytes per row, rows contiguous).
 * x: [n_tok][n_in] floats; y: [n_tok][ldy] floats. Reads each weight byte once for all n_tok rows,
 * dequantizing in registers; accumulates in float. */
void pcu_matvec(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out,
                const float *d_x, int n_tok, float *d_y, int64_t ldy);

/* W -> halves [n_out][n_in] (for cuBLAS on larger batches). */
void pcu_dequant_f16(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, void *d_out);

/* Element conversions: n floats -> IEEE halves / bfloat16 (round to nearest even). */
void pcu_f32_to_f16(pcu_stream *s, const float *d_x, void *d_y, int64_t n);
void pcu_f32_to_bf16(pcu_stream *s, const float *d_x, void *d_y, int64_t n);

/* Quantized weights times many activation rows on tensor cores, dequantizing weight tiles into
 * shared memory (no half copy of W in global memory). Any n_tok >= 1. x: [n_tok][n_in] halves.
 * pcu_mma_supported says which weight types it takes (others: pcu_dequant_f16 + pcu_gemm). */
bool pcu_mma_supported(int wtype);
void pcu_matmul_mma(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out,
                    const void *d_x_f16, int64_t n_tok, float *d_y, int64_t ldy);

/* Decode matvec on a repacked copy of the weights (matvec_repacked.cu): GGUF Q4_0/Q8_0 rows split
 * into a quant array and an f16 scale array laid out for 16-byte coalesced loads (made once, at
 * upload; the copy replaces the GGUF one for the decode path). Same values as pcu_matvec's
 * reference: every weight is dequantized exactly (d*(q-8), d*q rounded to float), times x,
 * accumulated in float. n_in a multiple of 32; d_rep 16-byte aligned. */
bool pcu_repack_supported(int wtype); /* Q4_0, Q8_0 */
/* Bytes of the repacked copy of an n_out x n_in matrix. */
size_t pcu_repack_bytes(int wtype, int64_t n_in, int64_t n_out);
/* Writes the repacked layout of W (GGUF rows, device) into d_out (pcu_repack_bytes bytes). */
void pcu_repack(pcu_stream *s, int wtype, const void *d_w, int64_t n_in, int64_t n_out, void *d_out);
/* pcu_matvec's contract (y[t][r] for t < n_tok <= PCU_MMV_MAX_TOK, y row stride ldy) on the copy. */
void pcu_matvec_repacked(pcu_stream *s, int wtype, const void *d_rep, int64_t n_in, int64_t n_out,
                         const float *d_x, int n_tok, float *d_y, int64_t ldy);

/* ---- ops.cu: element-wise and row ops ------------------------------------------------------ */

/* out[i] = row ids[i] - row0 of a table (any pcu_weight_supported type, n_cols per row) as floats,
 * zeros where that is outside [0, n_rows) (a vocabulary slice of an embedding); accumulate:
 * out[i] += that row instead. out: [n][n_cols]. */
void pcu_get_rows(pcu_stream *s, int dtype, const void *d_table, int64_t n_cols, const int32_t *d_ids,
                  int n, float *d_out, bool accumulate, int64_t row0, int64_t n_rows);

/* Residual add fused with the next norm, for each of `rows` rows of n floats (row stride n):
 *   if d_delta: x += delta (+ delta_bias, if not NULL, broadcast over rows)
 *   y = layernorm ? (x - mean)/sqrt(var + eps) * w + b : x / sqrt(mean(x^2) + eps) * w
 * w, b may be NULL (no scale / no shift). y may equal x only when d_delta is NULL.
 * d_y_half (may be NULL): y again as IEEE halves (round to nearest even), the input a tensor-core
 * product reads next, so no separate conversion pass is needed. */
void pcu_add_norm(pcu_stream *s, float *d_x, const float *d_delta, const float *d_delta_bias, float *d_y,
                  const float *d_w, const float *d_b, int64_t n, int rows, float eps, bool layernorm, void *d_y_half);

/* RMSNorm of every head in place (Qwen3 q/k norm): head h of token t is the head_dim floats at
 * x + t*row_stride + h*head_dim; w: [head_dim]. */
void pcu_head_rmsnorm(pcu_stream *s, float *d_x, int n_tok, int n_head, int head_dim, int64_t row_stride,
                      const float *d_w, float eps);

/* y[r][i] += b[i] for r < rows, i < n; row stride ld. */
void pcu_add_bias(pcu_stream *s, float *d_y, const float *d_b, int rows, int64_t n, int64_t ld);

/* gate[i] = silu(gate[i]) * up[i]  (n elements, contiguous). */
void pcu_silu_mul(pcu_stream *s, float *d_gate, const float *d_up, int64_t n);
/* out[r] = the index of the largest of x[r][0..n) (the lowest among equals; NaN never wins; a row
 * of NaN / -inf gives 0): greedy sampling on the GPU, so only token ids come back. */
void pcu_argmax_rows(pcu_stream *s, const float *d_x, int rows, int64_t n, int32_t *d_out);
/* SwiGLU on fused gate|up rows: out[r][i] = silu(in[r][i]) * in[r][n + i] for r < rows, i < n
 * (in: [rows][2n], out: [rows][n]), the same float math as pcu_silu_mul; d_out_half (may be
 * NULL): out again as halves. */
void pcu_swiglu_rows(pcu_stream *s, float *d_out, const float *d_in, int rows, int64_t n, void *d_out_half);
/* x[i] = gelu(x[i]), tanh approximation. */
void pcu_gelu(pcu_stream *s, float *d_x, int64_t n);

/* Rotary embedding in place, same contract as kref_rope, for n_tok rows (row stride row_stride) of
 * n_head heads; token t rotates by pos[t] (pos[t] < 0: untouched). inv_freq: [rope_dim/2]. */
void pcu_rope(pcu_stream *s, float *d_x, int n_tok, int64_t row_stride, int n_head, int head_dim, int rope_dim,
              const int32_t *d_pos, const float *d_inv_freq, bool neox);

/* Writes each token's K and V rows (kvd = n_head_kv*head_dim floats at k + t*ld, v + t*ld) into
 * slot[t] of the layer's caches (slot = block*block_size + offset; slot[t] < 0: skipped), as halves
 * (round to nearest even) if f16 else floats. Caches: [n_slots][kvd]. */
void pcu_kv_store(pcu_stream *s, void *d_k_cache, void *d_v_cache, bool f16, const float *d_k, const float *d_v,
                  int64_t ld, int n_tok, int kvd, const int32_t *d_slot);

/* ---- attention.cu: paged attention over the KV cache ---------------------------------------- */

typedef struct {
    const void *d_k_cache, *d_v_cache; /* this layer: [n_blocks][block_size][n_head_kv][head_dim] */
    bool f16;                          /* halves, else floats */
    int block_size, n_head, n_head_kv, head_dim; /* head_dim <= 256, even */
    float scale;                       /* multiplies q.k */
    int window;                        /* > 0: query at p sees keys in (p - window, p] */
    const int32_t *d_tok_pos;          /* [n_tok] query positions; < 0: padding (output zeros) */
    const int32_t *d_tok_seq;          /* [n_tok] sequence index of each query */
    const int32_t *d_block_tables;     /* [n_seq][max_blocks] block ids by position / block_size */
    int max_blocks;
} pcu_attn_args;

/* Scratch pcu_attention needs for up to max_tok queries and contexts up to max_ctx positions. */
size_t pcu_attention_scratch_bytes(int max_tok, int n_head, int head_dim, int max_ctx);

/* Causal attention of n_tok queries: query t (position p = tok_pos[t], sequence tok_seq[t]) attends
 * keys at positions 0..p of its sequence (their K/V are already in the cache, including the ones
 * this batch wrote), query head h using KV head h / (n_head / n_head_kv), online softmax in float.
 * q: rows of n_head*head_dim floats with row stride q_stride; out: [n_tok][n_head*head_dim].
 * max_ctx: an upper bound on p+1 over the batch (it sizes the grid only, so a graph captured with
 * one bound serves every batch within it). d_scratch: pcu_attention_scratch_bytes(). */
void pcu_attention(pcu_stream *s, const pcu_attn_args *a, float *d_out, const float *d_q, int64_t q_stride,
                   int n_tok, int max_ctx, void *d_scratch);

#ifdef __cplusplus
}
#endif

#endif
