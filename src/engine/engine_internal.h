/* The engine's internals, shared by its files (one concept each):
 *   engine.c      create/destroy, the engine thread, stats
 *   submit.c      requests in: validation, copies, the inbox, cancellation
 *   step.c        one step as named stages: propose -> schedule -> build batch -> forward
 *                 -> prompt logits -> sample (logits processors + draw, verify drafts) -> accept
 *                 -> commit (prefix cache) -> emit
 *   sample.c      the sample stage: logits processors and draws on the kernel threads
 *   fork.c        n > 1: a request's choices fork off its prompt's sequence
 *   emit.c        token and finish events: detokenization, stop strings, lengths
 *   logits_proc.c the logits processor chain (logit_bias, penalties, masks)
 *   constrain.c   constrained decoding: a grammar matcher per choice, its mask step
 *   runner_forward.c the default runner (engine/runner.h) over the forward pass
 * Threads: see engine.c. */
#ifndef PG_ENGINE_ENGINE_INTERNAL_H
#define PG_ENGINE_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "engine/logits_proc.h"
#include "engine/runner.h"
#include "engine/sampler.h"
#include "engine/spec.h"
#include "engine/spec_cost.h"
#include "engine/stop.h"
#include "grammar/matcher.h"
#include "kv/block_pool.h"
#include "pagoda.h"
#include "sched/scheduler.h"
#include "tokenizer/tokenizer.h"

enum {
    MAX_STOPS = 16,
    MAX_STOP_LEN = 256,
    MAX_STOP_TOKENS = 64,
    MAX_N = 64,
    MAX_LOGPROBS = SAMPLER_MAX_LOGPROBS,
    MAX_DRAFT = 16, /* proposed tokens per sequence per step */
    MAX_TRIGGERS = 8,
    MAX_TRIGGER_LEN = 64,
};
#define SPEC_PRIOR_RATE 0.6f /* a new choice's guess of the share of drafts the model accepts */

typedef struct request request;

typedef struct {
    request *r;
    int32_t index;
    sched_seq *seq;          /* NULL before its fork exists and after it finishes */
    pg_sampler *sampler;
    lp_chain chain;          /* logits processors, in order: logit_bias, penalties, grammar mask */
    gr_matcher *gm;          /* the request's grammar, this choice's walk (NULL: free text) */
    uint32_t *gmask;         /* [(n_vocab + 31) / 32] its last mask */
    int32_t g_accepted;      /* tokens the matcher took */
    int32_t g_done_at;       /* > 0: after this many tokens only the end can follow */
    int g_dead;              /* the last mask allowed nothing: the choice cannot go on */
    int g_lazy;              /* lazy grammar: 1 waiting for a trigger, 2 never (free text), 0 on */
    uint8_t *g_text;         /* while waiting: the text a trigger may still start in */
    size_t g_len;
    tok_stream *detok;
    stop_matcher stop;
    int32_t n_generated;
    int32_t n_row;           /* sample stage: rows of this step already drawn (drafts verified) */
    float sp_rate;           /* speculation: running estimate of the share of drafts accepted
                                (< 0: not yet; the engine's sp_prior at the first proposal) */
    int32_t sp_wait;         /* steps to go without drafts (low acceptance) before the next probe */
    int32_t sp_refused;      /* steps in a row the cost model gave it no drafts (a probe after SPEC_PROBE) */
    int sp_prev;             /* its last decode step verified drafts (the proposer is in step with it) */
    int counted;             /* prompt/cache statistics taken at first admission */
    pagoda_finish_reason finish;
} choice;

struct request {
    uint64_t id;
    pagoda_request p;        /* copy; pointers below are owned */
    int32_t *prompt;
    int32_t n_prompt;
    int32_t *stop_tokens;
    char **triggers;         /* [p.n_grammar_triggers] lazy-grammar triggers (owned copies) */
    int32_t *min_ban;        /* min_tokens: the tokens banned until then (EOG unless ignore_eos, stop tokens) */
    int32_t n_min_ban;
    lp_bias bias;            /* logit_bias, merged and sorted (shared by the choices' chains) */
    int32_t max_tokens;      /* resolved: > 0 */
    int32_t n_logits_sent;   /* prompt positions whose logits went to on_prompt_logits */
    int32_t adapter_key;     /* 0: base; else (load generation << 8) | adapter id (adapters.c) */
    choice *choices;         /* [p.n] */
    int32_t n_live;          /* choices not finished */
    int32_t n_cached;
    int forked;
    /* embedding requests (p.on_embedding): */
    pagoda_pooling pooling;  /* resolved: MEAN, CLS or LAST */
    int normalize;           /* resolved: 0 or 1 */
    double *pool;            /* [n_embd] sum of the pooled positions' hidden states */
    int32_t n_pooled;        /* positions taken into pool (in order; a recompute after preemption
                                skips those already taken) */
    request *next;           /* inbox / live list */
};

/* What the sample stage picked from one logits row. */
typedef struct {
    int32_t token;
    float lp;                /* its log-probability, when the request asks for logprobs */
    int32_t top_tok[MAX_LOGPROBS];
    float top_lp[MAX_LOGPROBS];
} pick;


struct pagoda_engine {
    pagoda_model *pm;        /* NULL for an engine made on a bare runner (tests) */
    const pg_tokenizer *tok; /* NULL: token ids only */
    pagoda_engine_config c;
    int32_t n_vocab, max_model_len;
    engine_runner *runner;   /* owned */
    kv_pool *pool;
    scheduler *sched;
    /* speculative decoding (spec.h): */
    spec_proposer *spec;     /* owned; NULL: none */
    pagoda_model *spec_model; /* owned: the draft model of a draft proposer */
    int32_t spec_k;          /* most drafts per sequence per step */
    int32_t spec_max_seqs;   /* no drafts while more sequences run (the cost model decides below) */
    spec_query *sq;          /* [max_seqs] this step's queries */
    sched_seq **sq_seq;      /* [max_seqs] their sequences */
    int32_t *sq_out;         /* [max_seqs][MAX_DRAFT] */
    float *sq_rate;          /* [max_seqs] their acceptance rates */
    int32_t *sq_ask, *sq_k;  /* [max_seqs] drafts each may take, and gets (spec_cost_allocate) */
    void *sq_work;           /* [max_seqs * MAX_DRAFT] the allocation's gains */
    spec_cost sp_cost;       /* measured forward and proposer costs (spec_cost.h) */
    float sp_prior;          /* the share of drafts accepted over recent steps of every sequence: a
                                new choice's first estimate (at least SPEC_PRIOR_RATE) */
    int spec_greedy_accept;  /* TEST ONLY, a deliberate bug: keep a draft when it is the row's most
                                likely token instead of sampling (the sampling test must catch it) */
    /* step buffers, sized at create (rows grown outside the decode path, see engine_reserve_rows) */
    float *logits;           /* [cap_rows][n_vocab] from the runner's host_alloc */
    int32_t cap_rows;
    pick *picks;             /* [cap_rows] */
    int32_t *ids;            /* [cap_rows] greedy ids from the runner */
    pg_sample_ws **ws;       /* [n_pick_threads] sampling buffers, one per thread */
    int n_pick_threads;
    int32_t *b_tokens;       /* [max_batch_tokens] */
    uint8_t *b_mask;         /* [max_batch_tokens] */
    int32_t *b_seq_start;    /* [max_seqs + 1] */
    int32_t *b_pos0, *b_nblocks, *b_adapter; /* [max_seqs] */
    const int32_t **b_tables;    /* [max_seqs] */
    /* per planned sequence: its logits rows cover positions [row_pos[i], end of its chunk) */
    int32_t *row0;           /* [max_seqs] first row, -1: none */
    int32_t *row_pos;        /* [max_seqs] position of the token of row0 */
    int32_t *srow;           /* [max_seqs] first sampling row (1 + n_draft of them), -1: no sampling */
    int32_t *n_acc;          /* [max_seqs] tokens the accept stage took (accepted drafts + one sampled) */
    uint8_t *failed;         /* [max_seqs] KV copy failed: the sequence does not run */
    int use_ids;             /* this step brings back greedy ids, not logits */
    char *text;              /* detokenizer output */
    size_t cap_text;
    /* embeddings: hidden-state rows of a step (runner info n_embd > 0) */
    int32_t n_embd;
    float *hidden;           /* [max_batch_tokens][n_embd] from the runner's host_alloc */
    uint8_t *b_hmask;        /* [max_batch_tokens] */
    int32_t *hrow0, *hpos, *hcount; /* [max_seqs] per planned sequence: first hidden row (-1: none),
                                       its position, how many */
    float *emb_out;          /* [n_embd] the vector handed to on_embedding */
    request *live;           /* stepping thread only */
    /* shared with other threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    request *inbox, *inbox_tail;
    int32_t n_inbox;
    uint64_t *cancels;
    int32_t n_cancels, cap_cancels;
    int cancel_all;
    int flush_req;           /* a prefix-cache flush asked for (pagoda_engine_flush_prefix_cache) */
    uint64_t flush_gen;      /* flushes done so far; flush_cv is signalled after each */
    int32_t flush_n;         /* blocks the last flush forgot */
    pthread_cond_t flush_cv;
    int stop, started;
    pthread_t thread;
    uint64_t next_id, rng;
    pagoda_engine_stats stats;
    /* LoRA adapters (adapters.c), slots 1..max_adapters. Under mu: */
    struct pg_lora **ad;      /* [max_adapters + 1] loaded (NULL: free) */
    uint32_t *ad_gen;         /* [max_adapters + 1] loads of each slot so far */
    struct pg_lora **ad_trash; /* unloaded, freed by the stepping thread once no step reads them */
    int32_t n_trash, cap_trash;
    int ad_dirty;             /* the table changed since the stepping thread last took it */
    /* stepping thread only: */
    const struct pg_lora **ad_active; /* [max_adapters + 1] the table the runner reads */
    int32_t *ad_active_key;   /* [max_adapters + 1] key of each active slot (0: none) */
};

/* engine.c */
/* c = cfg (NULL: the defaults) with defaults in its zero fields, ranges checked. */
pagoda_status engine_normalize_config(const pagoda_engine_config *cfg, pagoda_engine_config *c);
/* An engine over runner r (owned from the call on, also on failure). pm: the model for the
 * tokenizer (text prompts, stop strings, detokenization), or NULL for token ids only. */
pagoda_status engine_create_with_runner(pagoda_model *pm, engine_runner *r, const pagoda_engine_config *c,
                                        pagoda_engine **out);
/* Room for n logits rows per step (grows the row buffers; not on the decode path). */
pagoda_status engine_reserve_rows(pagoda_engine *e, int32_t n);
/* Speculative decoding: every running choice of a request with n == 1 (or forked), without
 * no_speculation, gets up to max_k (1..MAX_DRAFT) drafts per step from p, which the engine owns
 * from the call on (also on failure). NULL: none. Call before the first step. */
pagoda_status engine_set_proposer(pagoda_engine *e, spec_proposer *p, int32_t max_k);
/* The scheduler's and the pool's invariants (sched_check). For tests. */
int engine_check(const pagoda_engine *e);
void engine_set_gauges(pagoda_engine *e);  /* caller holds mu */
void engine_update_gauges(pagoda_engine *e);

/* adapters.c */
pagoda_status engine_adapters_create(pagoda_engine *e); /* at create: the slot tables */
void engine_adapters_destroy(pagoda_engine *e);
/* Stepping thread, under mu, between steps: hands a changed table to the runner and frees
 * unloaded adapters. */
void engine_adapters_sync(pagoda_engine *e);
/* The key a request for adapter id gets (under mu); PAGODA_ERR_INVALID if id is not loaded. */
pagoda_status engine_adapter_key(const pagoda_engine *e, int32_t id, int32_t *key);
/* Stepping thread: whether key still names the adapter loaded in its slot (0: always). */
int engine_adapter_live(const pagoda_engine *e, int32_t key);

/* submit.c */
void engine_free_request(request *r);
void engine_take_inbox(pagoda_engine *e);

/* emit.c */
void engine_emit(choice *ch, const char *text, size_t len, int32_t token, pagoda_finish_reason fin, const char *error,
                 const float *top_lp, const int32_t *top_tok, int32_t n_top, float logprob);
void engine_end_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush);
void engine_finish_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush);
void engine_cancel_request(pagoda_engine *e, request *r, pagoda_finish_reason why, const char *error);
/* Emits token t of ch at position pos of its sequence (pk: its logprobs, NULL when none were
 * asked for). last: t is the step's last token for ch (appended to its sequence if it goes on);
 * otherwise t is an accepted draft already there. Returns 1 if the choice finished. */
int engine_emit_token(pagoda_engine *e, choice *ch, int32_t t, int32_t pos, const pick *pk, int last);

/* sample.c */
/* Samples ch's next token from a logits row through its processors (and the raw row's logprobs,
 * if asked for); records it in ch's sampler (penalty history). */
void engine_pick_token(pagoda_engine *e, choice *ch, const float *row, pg_sample_ws *ws, pick *out);
/* Whether this step may bring back greedy ids instead of logits rows (every row plain greedy). */
int engine_plan_wants_ids(const pagoda_engine *e, const sched_plan *plan);
/* The sample stage: every sequence with sampling rows (except requests about to fork) gets its
 * tokens, drafts verified: n_acc[i] tokens in picks[srow[i] ...]. In parallel over sequences. */
void engine_sample_stage(pagoda_engine *e, const sched_plan *plan);

/* constrain.c */
/* A matcher and mask step for ch when its request has a grammar (no-op otherwise). */
pagoda_status engine_constrain_init(pagoda_engine *e, choice *ch);
/* Advances ch's matcher by the drawn token. */
void engine_constrain_accept(pagoda_engine *e, choice *ch, int32_t token);
void engine_constrain_free(choice *ch);

/* spec_grammar.c */
/* The tokens of the text ch's grammar forces next (every continuation starts with it), at most
 * max_k, into out: the model's tokenization of that text, cut at the first token the grammar
 * would not take. 0 when nothing is forced (or no grammar, a lazy one, no tokenizer). */
int32_t engine_spec_forced(pagoda_engine *e, choice *ch, int32_t *out, int32_t max_k);

/* fork.c */
/* The prompt of r (sequence q, logits row `row`) is done: its other choices fork off q, and each
 * choice samples its first token from the row and emits it. */
void engine_fork_and_sample(pagoda_engine *e, sched_seq *q, const float *row);

/* embed.c */
/* Resolves an embedding request's pooling and normalization and allocates its sum (marks it
 * score_only); refuses a generation request on a model without an LM head. */
pagoda_status engine_embed_init(pagoda_engine *e, request *r);
/* Build stage: the hidden rows of planned sequence i (request r, n_tokens tokens, chunk
 * [start, end) at batch token t, rows so far `rows`): marks b_hmask, sets hrow0/hpos/hcount;
 * returns how many rows it adds. */
int32_t engine_embed_rows(pagoda_engine *e, int32_t i, const request *r, int32_t n_tokens, int32_t start, int32_t end,
                          int32_t t, int32_t rows);
/* After the forward pass: hidden rows into their requests' sums. */
void engine_embed_stage(pagoda_engine *e, const sched_plan *plan);
/* The prompt of r is through: its pooled vector to on_embedding. */
void engine_embed_deliver(pagoda_engine *e, request *r);
/* The pooling math: acc (sum of n_rows rows) -> out = acc / n_rows, L2-normalized if normalize
 * (a zero vector stays zero). */
void embed_pool_finish(const double *acc, int32_t n_rows, int normalize, float *out, int32_t n);

/* step.c */
/* One engine step. Returns 1 if it ran a forward pass, 0 if there was nothing to run. */
int engine_step(pagoda_engine *e);

#endif
