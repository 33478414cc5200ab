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

/* All buffers sized here, so sampling never allocates. The penalty history (3 x n_vocab ints)
 * exists only when a penalty is on. */
pagoda_status sampler_create(const pg_sampling_params *p, int32_t n_vocab, pg_sampler **out);
/* A sampler without its own working buffers (about 12 x n_vocab bytes less): it draws only
 * through sampler_sample_ws. An engine keeps one per sequence and a workspace per thread. */
pagoda_status sampler_create_lean(const pg_sampling_params *p, int32_t n_vocab, pg_sampler **out);
void sampler_destroy(pg_sampler *s); /* NULL is a no-op */

/* Records a token of the sequence (prompt or generated) for the penalties. */
void sampler_accept(pg_sampler *s, int32_t token);
/* Picks the next token. logits [n_vocab] are modified (penalties, temperature). */
int32_t sampler_sample(pg_sampler *s, float *logits); /* -1 for a lean sampler */

/* Working buffers for one draw at a time: one per sampling thread. */
typedef struct pg_sample_ws pg_sample_ws;
pagoda_status sampler_ws_create(int32_t n_vocab, pg_sample_ws **out);
void sampler_ws_destroy(pg_sample_ws *w); /* NULL is a no-op */
/* The draw sampler_sample makes (same tokens for the same seed), with logits left as they are
 * (penalties go to a copy in w) and w's buffers: samplers share nothing, so rows of different
 * samplers can be drawn on different threads, each with its own w. -1 if w's vocab differs. */
int32_t sampler_sample_ws(pg_sampler *s, const float *logits, pg_sample_ws *w);
/* The pieces of sampler_sample_ws, for an engine that runs its own chain of logits processors
 * (engine/logits_proc.h) between the model and the draw:
 * sampler_sample_ws(s, x, w) == copy x, sampler_apply_penalties, sampler_draw_ws on the copy. */
/* true if s was made with a penalty on (it keeps a history; its chain needs a penalty step). */
int sampler_penalties_on(const pg_sampler *s);
/* Applies the repetition/presence/frequency penalties of the tokens seen so far to logits [n_vocab]. */
void sampler_apply_penalties(const pg_sampler *s, float *logits);
/* Draws from logits [n_vocab] as they are (no penalties): greedy, top-k, temperature, top-p, min-p. */
int32_t sampler_draw_ws(pg_sampler *s, const float *logits, pg_sample_ws *w);
/* w's [n_vocab] float buffer for a processed copy of a logits row (the draw does not use it). */
float *sampler_ws_scratch(pg_sample_ws *w);
int32_t sampler_ws_n_vocab(const pg_sample_ws *w);

/* Back to the state right after create (history cleared, RNG reseeded). */
void sampler_reset(pg_sampler *s);

enum { SAMPLER_MAX_LOGPROBS = 20 };

/* log-softmax of logits [V] at token; with k > 0 (at most SAMPLER_MAX_LOGPROBS) also the k most
 * likely tokens and their log-probabilities, best first (lower id first on ties). One vectorized
 * pass for the normalizer instead of V double-precision exps. Thread-safe. */
float sampler_logprobs(const float *logits, int32_t V, int32_t token, int32_t k, int32_t *top_tok, float *top_lp);

#endif
