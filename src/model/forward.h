/* One forward pass over a packed batch of sequences (variable lengths, no padding), reading and
 * writing K/V through per-sequence block tables. The paged engine drives exactly this. */
#ifndef PG_MODEL_FORWARD_H
#define PG_MODEL_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "kv/kv_cache.h"
#include "model/model.h"

typedef struct {
    int32_t n_tok;
    const int32_t *tokens;              /* [n_tok]: tokens of seq 0, then seq 1, ... */
    int32_t n_seq;
    const int32_t *seq_start;           /* [n_seq+1]: seq s owns tokens [seq_start[s], seq_start[s+1]) */
    const int32_t *seq_pos0;            /* [n_seq]: position of each sequence's first token here;
                                           positions before it are already in the cache */
    const int32_t *const *block_tables; /* [n_seq][n_blocks[s]]: KV blocks by position / block_size */
    const int32_t *n_blocks;            /* [n_seq] */
    const uint8_t *logits_mask;         /* [n_tok]: 1 = return logits; NULL = last token of each seq */
    const int32_t *seq_adapter;         /* [n_seq]: adapter (LoRA) id of each sequence, 0 = the base
                                           model; NULL = all 0. Only 0 is served today. */
} pg_batch;

typedef struct pg_forward pg_forward;

/* Where the forward pass runs. */
typedef struct {
    int32_t n_gpu_layers; /* 0: all on the CPU; n: embedding + the first n layers on the GPU (CUDA),
                             the rest on the CPU; >= n_layer: everything, head included, on the GPU */
} pg_forward_opts;

/* Scratch for batches of up to max_tokens tokens (allocated once; no malloc per step). CPU only. */
pagoda_status forward_create(const pg_model *m, int32_t max_tokens, pg_forward **out);
/* Same, placed as opts says (NULL: CPU); GPU weights are uploaded here. */
pagoda_status forward_create_ex(const pg_model *m, int32_t max_tokens, const pg_forward_opts *opts, pg_forward **out);
void forward_destroy(pg_forward *f); /* NULL is a no-op */

/* forward_run that returns each logits row's greedy token (the largest logit, the lowest id among
 * equals) in ids[n_out] instead of the logits: on the GPU only ids cross the bus. Needs every
 * layer on the GPU (forward_has_device_argmax). */
pagoda_status forward_run_argmax(pg_forward *f, const pg_batch *b, kv_cache *kv, int32_t *ids);
bool forward_has_device_argmax(const pg_forward *f);

/* Host memory for results the forward pass writes (logits): page-locked when it runs on a GPU,
 * so the device copies straight into it. Free with forward_host_free on the same forward pass. */
void *forward_host_alloc(const pg_forward *f, size_t bytes);
void forward_host_free(const pg_forward *f, void *p);
/* GPU memory left for KV blocks if pagoda may hold `utilization` of the device's memory, after
 * the weights and scratch already allocated (0 on the CPU). */
uint64_t forward_gpu_kv_budget(const pg_forward *f, float utilization);
/* A KV cache laid out for this forward pass: the GPU layers' K/V in device memory, the rest in
 * host memory (dtype: PAGODA_DTYPE_F32 or F16). */
pagoda_status forward_kv_create(const pg_forward *f, int32_t n_blocks, int32_t block_size, int dtype, kv_cache **out);

/* Runs the batch. logits: [n_out][n_vocab] for the selected tokens in batch order.
 * The batch is validated (token ids, positions, block tables) before anything is written. */
pagoda_status forward_run(pg_forward *f, const pg_batch *b, kv_cache *kv, float *logits);

#endif
