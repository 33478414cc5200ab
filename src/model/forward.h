/* One forward pass over a packed batch of sequences (variable lengths, no padding), reading and
 * writing K/V through per-sequence block tables. The paged engine drives exactly this. */
#ifndef PG_MODEL_FORWARD_H
#define PG_MODEL_FORWARD_H

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
} pg_batch;

typedef struct pg_forward pg_forward;

/* Scratch for batches of up to max_tokens tokens (allocated once; no malloc per step). */
pagoda_status forward_create(const pg_model *m, int32_t max_tokens, pg_forward **out);
void forward_destroy(pg_forward *f); /* NULL is a no-op */

/* Runs the batch. logits: [n_out][n_vocab] for the selected tokens in batch order.
 * The batch is validated (token ids, positions, block tables) before anything is written. */
pagoda_status forward_run(pg_forward *f, const pg_batch *b, kv_cache *kv, float *logits);

#endif
