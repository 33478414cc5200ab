/* A step's batch cut into micro-batches of about equal token counts, so pipeline stages can work
 * on different micro-batches at once (stage k on micro-batch m while stage k + 1 runs m - 1). With
 * at least as many sequences as micro-batches the cuts fall between sequences; with fewer (a long
 * prompt, say) they fall inside sequences: a later piece of a sequence starts at a later position
 * and reads the earlier piece's K/V, which every stage wrote the micro-batch before. Plain data:
 * views into the step's arrays and the caller's scratch. */
#ifndef PG_ENGINE_MICROBATCH_H
#define PG_ENGINE_MICROBATCH_H

#include "core/batch.h"

typedef struct {
    pg_batch b;          /* tokens [t0, t0 + b.n_tok) of the step: sequences s0.. (pieces of them
                            where a cut falls inside); seq_start rebased to 0 */
    int32_t s0, t0;      /* its first sequence and first token in the step */
    int32_t out0, hid0;  /* its first logits row and first hidden-state row in the step's order
                            (logits rows in batch order, hidden rows in batch order: see
                            forward_out_rows) */
} microbatch;

/* What microbatch_split writes besides mb, for steps of up to max_tokens tokens and max_mb pieces. */
typedef struct {
    int32_t *seq_start; /* [max_tokens + 2 * max_mb] the pieces' rebased seq_start arrays */
    int32_t *seq_pos0;  /* [max_tokens + max_mb] the pieces' first positions */
    uint8_t *mask;      /* [max_tokens] the step's logits mask when cuts inside sequences need it spelled out */
} microbatch_scratch;

/* Cuts b into at most max_mb micro-batches, no more than n_tok / min_tokens (so they average at
 * least min_tokens tokens); returns how many (>= 1; 1: mb[0] is b itself). mb: [max_mb]. The cut
 * depends only on b, max_mb and min_tokens, so every rank that holds the same step cuts it the
 * same way. The pieces' logits and hidden rows, in order, are the step's. */
int32_t microbatch_split(const pg_batch *b, int32_t max_mb, int32_t min_tokens, const microbatch_scratch *scratch,
                         microbatch *mb);

#endif
