/* One step's work as plain data: a packed batch of sequences (variable lengths, no padding) whose
 * K/V are read and written through per-sequence block tables. The engine builds it, the model
 * runs it, backends read its per-token metadata. */
#ifndef PG_CORE_BATCH_H
#define PG_CORE_BATCH_H

#include <stdint.h>

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
    const uint8_t *hidden_mask;         /* [n_tok]: 1 = return the final hidden state (after the final
                                           norm, before the LM head: embeddings); NULL = none. A
                                           token wants logits or its hidden state, not both */
} pg_batch;

/* One run of rows that share a LoRA adapter on one projection, for the backend's lora op:
 * y[t][o] += scale * sum_k Bt[k][o] * (A[k] . x[t]) for t < rows, o < n_out. */
typedef struct {
    int64_t n_in, n_out, ldy;
    const float *x;  /* [rows][n_in] contiguous */
    float *y;        /* rows ldy floats apart */
    float *tmp;      /* rows * rank floats of scratch */
    const float *A;  /* [rank][n_in] */
    const float *Bt; /* [rank][n_out] (B transposed) */
    const uint16_t *A16, *Bt16; /* the same as IEEE halves: used instead of A, Bt when set */
    int32_t rows, rank;
    float scale;
} pg_lora_seg;

#endif
