/* How many drafts a step verifies, from measured costs (speculative decoding).
 *
 * A sequence whose drafts are accepted at rate a gains a^j expected tokens from its j-th draft
 * (all j drafts must be kept), and every verified draft costs one more query token in the step's
 * forward pass plus the proposer's work for it. The engine records the forward time of every
 * decode-only step by its token count and the proposer's time per draft; the model fits
 * forward(T) = alpha + beta * T to them and adds drafts, best gain first, while each raises the
 * expected tokens per second of the step:
 *
 *     E / C  ->  (E + g) / (C + beta + gamma)   kept while   g * C >= E * (beta + gamma)
 *
 * with E the expected tokens so far (one per decoding sequence plus the gains taken), C the
 * predicted cost so far, gamma the proposer's seconds per draft (0 for drafts that need no
 * proposer: text a grammar forces); drafts are taken by gain per cost. On a GPU, where a few more
 * query tokens are nearly free, it verifies everything likely; on a CPU, where a pass is
 * compute-bound early, only likely drafts and none in big batches. Until two token counts have
 * been seen, beta is a fixed share of the one measured cost (an optimistic guess, so drafts get
 * tried and measured). Which drafts are verified never changes the output (sample.c draws every
 * token from the target model's distribution). */
#ifndef PG_ENGINE_SPEC_COST_H
#define PG_ENGINE_SPEC_COST_H

#include <stdbool.h>
#include <stdint.h>

enum { SPEC_COST_MAX_T = 256 }; /* token counts recorded (larger steps are not decode steps of interest) */

typedef struct {
    float t[SPEC_COST_MAX_T + 1];    /* moving average of the forward seconds of decode-only steps of T tokens */
    uint16_t n[SPEC_COST_MAX_T + 1]; /* how many were seen (saturates) */
    float gamma;                     /* moving average of the proposer's seconds per draft asked */
    uint32_t n_gamma;
} spec_cost;

/* One decode-only forward pass of n_tok tokens took seconds. */
void spec_cost_record(spec_cost *c, int32_t n_tok, double seconds);

/* The proposer took seconds for n_drafts asked. */
void spec_cost_record_proposer(spec_cost *c, int32_t n_drafts, double seconds);

/* forward(T) ~ alpha + beta * T (seconds); false when no step was recorded yet. */
bool spec_cost_fit(const spec_cost *c, double *alpha, double *beta);

/* Drafts per candidate: n_base sequences decode this step; candidate i has acceptance rate
 * rate[i] and may take up to ask[i] drafts; no_proposer (NULL: none) marks candidates whose
 * drafts cost no proposer work (text a grammar forces: beta alone per draft, not beta + gamma).
 * Drafts are taken by gain per cost. Writes k[i] (0..ask[i]). work: 3 * sum(ask) floats' room
 * (gains, keys and owners). Returns the drafts given. */
int32_t spec_cost_allocate(const spec_cost *c, int32_t n_base, const float *rate, const int32_t *ask,
                           const uint8_t *no_proposer, int32_t n, int32_t *k, void *work);

/* Whether a candidate at acceptance rate `rate` would get at least one draft in a step where
 * n_base sequences decode (true while nothing is measured: drafts are tried then); no_proposer:
 * drafts that cost no proposer work. The engine asks it before paying a draft model's prefill for
 * sequences that would get no drafts anyway, and before looking for a grammar's forced text. */
bool spec_cost_would_draft(const spec_cost *c, int32_t n_base, float rate, bool no_proposer);

#endif
