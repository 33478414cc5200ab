/* Proposers for speculative decoding: each step, before scheduling, the engine asks its proposer
 * for up to k draft tokens for every running sequence that decodes (one call for the whole
 * batch, so a draft model runs its steps batched); the drafts are verified in the step's one
 * forward pass (step.c, sample.c) and the accepted ones kept.
 *
 *   spec_ngram.c  prompt lookup: the earlier occurrence of the sequence's last n_min tokens whose
 *                 match reaches furthest back (up to n_max tokens), and the tokens that
 *                 followed it then
 *   spec_draft.c  a draft model with the same vocabulary, its own runner and paged KV cache,
 *                 k greedy tokens per step, batched over the sequences
 *   spec_grammar.c  nothing (the engine's drafts from grammar-forced text only, which it asks for
 *                 every constrained sequence before any proposer)
 *
 * A proposer never fails a step: whatever goes wrong, it proposes nothing (and logs). */
#ifndef PG_ENGINE_SPEC_H
#define PG_ENGINE_SPEC_H

#include <stdint.h>

#include "pagoda.h"

/* One sequence to propose for. */
typedef struct {
    uint64_t key;          /* the sequence, stable while it lives (request id and choice) */
    const int32_t *tokens; /* [n] its accepted tokens: prompt then generated (borrowed for the call) */
    int32_t n;
    int32_t max_k;         /* propose at most this many (>= 1) */
    int32_t *out;          /* [max_k] the proposals */
    int32_t n_out;         /* out: how many (0: none) */
} spec_query;

typedef struct spec_proposer spec_proposer;
struct spec_proposer {
    const char *name; /* "ngram", "draft" */
    /* Fills qs[i].out / n_out for every i < n (distinct keys). */
    void (*propose)(spec_proposer *p, spec_query *qs, int32_t n);
    /* Sequence key is gone (finished, cancelled, preempted and recomputed later): what the
     * proposer keeps for it may go. Optional (NULL). */
    void (*release)(spec_proposer *p, uint64_t key);
    void (*destroy)(spec_proposer *p);
    /* A sequence finished with these tokens (prompt and accepted output): the proposer may keep
     * them for later sequences. Optional (NULL). */
    void (*observe)(spec_proposer *p, const int32_t *tokens, int32_t n);
    /* The engine computes qs[i].tokens[0..n) of these sequences (a prompt chunk) this step: the
     * proposer may do its own work for them now, so that it is part of the prompt's cost and not
     * of the first proposal's (the draft model's prefill). Nothing is proposed (max_k, out,
     * n_out unused). Optional (NULL). */
    void (*prefill)(spec_proposer *p, spec_query *qs, int32_t n);
};

static inline void spec_destroy(spec_proposer *p) {
    if (p) p->destroy(p);
}

/* Prompt lookup with matches of n_min to n_max tokens (1 <= n_min <= n_max <= 64): the earlier
 * occurrence with the longest match wins, the most recent among equals. */
pagoda_status spec_ngram_create(int32_t n_min, int32_t n_max, spec_proposer **out);
/* The same, also looking up the last `history` tokens of finished sequences (0: none). */
pagoda_status spec_ngram_create_ex(int32_t n_min, int32_t n_max, int32_t history, spec_proposer **out);

/* A proposer that proposes nothing: with it, only the text a request's grammar forces is drafted. */
pagoda_status spec_grammar_create(spec_proposer **out);

/* A draft model (same vocabulary as the target: the caller checks) run by its own default runner
 * (engine/runner.h) on the CPU with c's threads, a KV cache of kv_mem_bytes for up to max_seqs
 * sequences of max_model_len tokens. The model is borrowed. */
pagoda_status spec_draft_create(pagoda_model *draft, const pagoda_engine_config *c, int32_t max_seqs,
                                int32_t max_model_len, spec_proposer **out);

#endif
