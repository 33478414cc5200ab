/* A step's batch cut into micro-batches: contiguous runs of whole sequences with about equal
 * token counts, so pipeline stages can work on different micro-batches at once (stage k on
 * micro-batch m while stage k + 1 runs m - 1). Plain data: views into the step's arrays. */
#ifndef PG_ENGINE_MICROBATCH_H
#define PG_ENGINE_MICROBATCH_H

#include "core/batch.h"

typedef struct {
    pg_batch b;          /* sequences [s0, s0 + b.n_seq) of the step; seq_start rebased to 0 */
    int32_t s0, t0;      /* its first sequence and first token in the step */
    int32_t out0, hid0;  /* its first logits row and first hidden-state row in the step's order
                            (logits rows in batch order, hidden rows in batch order: see
                            forward_out_rows) */
} microbatch;

/* Cuts b into at most max_mb micro-batches of whole sequences, no more than n_tok / min_tokens
 * (so they average at least min_tokens tokens) nor than n_seq, each ending at the sequence that
 * reaches its share of the tokens; returns how many (>= 1; 1: mb[0] is b itself).
 * seq_start: scratch of n_seq + max_mb int32 for the rebased seq_start arrays; mb: [max_mb]. The
 * cut depends only on b, max_mb and min_tokens, so every rank that holds the same step cuts it
 * the same way. */
int32_t microbatch_split(const pg_batch *b, int32_t max_mb, int32_t min_tokens, int32_t *seq_start, microbatch *mb);

#endif
