/* Logits processors: a per-sequence chain of steps that change a logits row between the model
 * and the sampler's draw (after the forward pass, before temperature / top-k / top-p / min-p).
 * The engine's chain, in order: logit_bias (OpenAI semantics), then the repetition / presence /
 * frequency penalties; a token mask (constrained decoding) plugs in as one more step. Steps
 * run on a copy of the row: the raw row stays as the model wrote it, so logprobs reported to
 * the caller are those of the model's distribution. */
#ifndef PG_ENGINE_LOGITS_PROC_H
#define PG_ENGINE_LOGITS_PROC_H

#include <stdint.h>

#include "pagoda.h"

/* One step: changes logits [n_vocab] in place. self is the step's own state (borrowed). */
typedef void (*lp_fn)(void *self, float *logits, int32_t n_vocab);

enum { LP_MAX_STEPS = 4 };

typedef struct {
    struct {
        lp_fn fn;
        void *self;
    } step[LP_MAX_STEPS];
    int32_t n;
} lp_chain;

/* Appends a step (runs after the ones already there). PAGODA_ERR_INVALID if the chain is full. */
pagoda_status lp_chain_add(lp_chain *c, lp_fn fn, void *self);
/* The row the sampler should draw from: row itself when the chain is empty, else scratch
 * [n_vocab] holding a copy of row with every step applied in order. */
const float *lp_chain_run(const lp_chain *c, const float *row, int32_t n_vocab, float *scratch);

/* logit_bias: a sorted list of distinct tokens with their summed biases (owned). */
typedef struct {
    int32_t n;
    int32_t *tokens; /* [n] ascending */
    float *bias;     /* [n] */
} lp_bias;

/* Checks and copies a request's logit_bias (at most PAGODA_MAX_LOGIT_BIAS entries, token ids in
 * [0, n_vocab), bias finite in [-100, 100]; a repeated token's biases add up). PAGODA_ERR_INVALID
 * names the offending entry. n == 0: an empty bias (nothing allocated). */
pagoda_status lp_bias_init(lp_bias *b, const pagoda_logit_bias *entries, int32_t n, int32_t n_vocab);
void lp_bias_free(lp_bias *b);
/* The lp_fn of a bias (self: an lp_bias): logits[token] += bias. */
void lp_bias_apply(void *self, float *logits, int32_t n_vocab);

#endif
