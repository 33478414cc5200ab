/* Host side of one GPU forward step, kept apart from CUDA so it is tested on any machine: the
 * per-token metadata the kernels read (tokens, positions, KV slots, sequence of each token,
 * logits rows), the block tables, and the launch shape. Decode steps (one token per sequence,
 * every row wanting logits) are padded to a few batch sizes and a power-of-two context bound, so
 * a CUDA graph captured for (n_tok, ctx) is replayed by every later step of that shape. */
#ifndef PG_BACKEND_CUDA_BATCH_H
#define PG_BACKEND_CUDA_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/batch.h"
#include "pagoda.h"

/* Rows of the metadata array: meta[field * max_tokens + t]. */
enum {
    GPU_META_TOK,  /* token id (padding: 0) */
    GPU_META_POS,  /* position (padding: -1: no KV write, zero attention output) */
    GPU_META_POSC, /* position clamped to >= 0 (learned position embeddings) */
    GPU_META_SEQ,  /* sequence index, row of the block tables (padding: 0) */
    GPU_META_SLOT, /* KV slot = block * block_size + offset (padding: -1) */
    GPU_META_ROW,  /* batch token of logits row i (padded rows: 0) */
    GPU_META_N
};

typedef struct {
    int32_t n_tok;  /* tokens to launch (the batch's, or its padded decode size) */
    int32_t n_rows; /* logits rows to launch */
    int32_t ctx;    /* bound on position + 1 the attention grid is sized for */
    bool replay;    /* a decode step whose launches may come from a graph keyed (n_tok, ctx) */
} gpu_step_shape;

/* Padded decode batch size >= n (-1 if n is beyond the largest). */
int32_t gpu_decode_bucket(int32_t n);
/* Power-of-two context bound >= need (at least 256), capped at max_ctx. */
int32_t gpu_ctx_bucket(int32_t need, int32_t max_ctx);

/* Packs a validated batch: meta [GPU_META_N][max_tokens], btab [n_seq][btab_stride] (rows are
 * written up to each sequence's block count). out_rows[0..n_out): batch tokens wanting logits.
 * allow_replay: decode steps may be padded for graph replay. Fails (PAGODA_ERR_INVALID) when a
 * position reaches max_ctx or a block table is longer than btab_stride. */
pagoda_status gpu_batch_pack(const pg_batch *b, int32_t block_size, const int32_t *out_rows, int32_t n_out,
                             bool allow_replay, int32_t max_tokens, int32_t max_ctx, int32_t btab_stride, int32_t *meta,
                             int32_t *btab, gpu_step_shape *shape);

#endif
