/* Token sampling from logits: greedy, temperature, top-k, top-p, min-p, and repetition /
 * presence / frequency penalties, with a seeded RNG (same seed and inputs, same tokens). */
#ifndef PG_ENGINE_SAMPLER_H
#define PG_ENGINE_SAMPLER_H

#include <stdint.h>

#include "pagoda.h"

typedef struct {
    float temperature;        /* <= 0: greedy (argmax, lowest id wins ties) */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off; keep tokens with p >= min_p * p_max */
    float repetition_penalty; /* 1: off; logits of seen tokens: >0 divided, <0 multiplied (HF/llama.cpp) */
    float presence_penalty;   /* 0: off; OpenAI: logit -= presence * (count > 0) */
    float frequency_penalty;  /* 0: off; OpenAI: logit -= frequency * count */
    int32_t penalty_last_n;   /* tokens of history the penalties look at; -1: all, 0: none */
    uint64_t seed;
} pg_sampling_params;

/* Defaults: temperature 1, top_k 0, top_p 1, min_p 0, penalties off, penalty_last_n 64, seed 0. */
pg_sampling_params sampler_default_params(void);

typedef struct pg_sampler pg_sampler;

/* All buffers sized here, so sampling never allocates. */
pagoda_status sampler_create(const pg_sampling_params *p, int32_t n_vocab, pg_sampler **out);
void sampler_destroy(pg_sampler *s); /* NULL is a no-op */

/* Records a token of the sequence (prompt or generated) for the penalties. */
void sampler_accept(pg_sampler *s, int32_t token);
/* Picks the next token. logits [n_vocab] are modified (penalties, temperature). */
int32_t sampler_sample(pg_sampler *s, float *logits);
/* Back to the state right after create (history cleared, RNG reseeded). */
void sampler_reset(pg_sampler *s);

#endif
