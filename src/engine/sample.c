/* The sample stage: each sequence's logits rows go through its chain of logits processors
 * (logits_proc.h) and its sampler; drafts (speculation) are verified row by row. Rows of
 * different sequences are drawn in parallel on the kernel threads: at a few hundred sequences,
 * sampling one row after another took longer than a GPU forward pass. */
#include <stdatomic.h>
#include <string.h>

#include "core/finite.h"
#include "core/thread_pool.h"
#include "engine/engine_internal.h"

void engine_pick_token(pagoda_engine *e, choice *ch, const float *row, pg_sample_ws *ws, pick *out) {
    const request *r = ch->r;
    const int32_t V = e->n_vocab;
    /* A NaN or infinite logit means the forward pass went wrong (broken weights, an overflow):
     * no token is drawn, and the emit stage ends the choice with an error. One pass over the row,
     * small beside the product that made it. */
    if (pg_first_nonfinite(row, V, PG_FLOAT_F32) >= 0) {
        out->token = -1;
        out->lp = 0;
        return;
    }
    const float *x = lp_chain_run(&ch->chain, row, V, sampler_ws_scratch(ws));
    if (ch->g_dead) { /* the grammar allows no token: the emit stage ends the choice */
        out->token = -2;
        out->lp = 0;
        return;
    }
    out->token = sampler_draw_ws(ch->sampler, x, ws);
    /* logprobs are those of the model's distribution with the request's logit_bias added (as the
     * OpenAI API reports them: a banned token's logprob falls by the bias), before penalties and
     * temperature. The processed row in the scratch is no longer needed after the draw. */
    int32_t k = r->p.logprobs > 0 ? r->p.logprobs : 0;
    if (r->p.logprobs >= 0) {
        const float *lrow = row;
        if (r->bias.n > 0) {
            float *b = sampler_ws_scratch(ws);
            memcpy(b, row, (size_t)V * sizeof(float));
            lp_bias_apply((void *)&r->bias, b, V);
            lrow = b;
        }
        out->lp = sampler_logprobs(lrow, V, out->token, k, out->top_tok, out->top_lp);
    }
    sampler_accept(ch->sampler, out->token);
    engine_constrain_accept(e, ch, out->token);
}

/* true if a choice's next token is the plain argmax of the raw row (no processors, no
 * logprobs, one choice): a runner that can pick it on the device sends back the id only. */
static int plain_greedy(const choice *ch) {
    const request *r = ch->r;
    const pagoda_sampling *p = &r->p.sampling;
    return (p->temperature <= 0 || p->top_k == 1) && ch->chain.n == 0 && r->p.logprobs < 0 && r->p.n == 1;
}

int engine_plan_wants_ids(const pagoda_engine *e, const sched_plan *plan) {
    if (!e->runner->info.greedy_ids) return 0;
    int any = 0;
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        if (e->row0[i] < 0) continue;
        if (e->srow[i] != e->row0[i] || !plain_greedy(plan->seqs[i]->owner)) return 0; /* prompt logits or a processor */
        any = 1;
    }
    return any;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Samples q's rows: the token after its last accepted one, then, while the sampled token equals
 * the next draft, the token after that draft. With a draft that is a point mass this is exact
 * speculative sampling: a draft is kept with the probability the model gives it, and a rejected
 * one is replaced by a draw from the model's distribution without it. */
static void sample_seq(pagoda_engine *e, sched_seq *q, int32_t i, pg_sample_ws *ws) {
    choice *ch = q->owner;
    const int32_t n_draft = q->n_draft, first_draft = q->n_tokens - n_draft, s = e->srow[i];
    int32_t j = 0;
    for (;; j++) {
        pick *pk = &e->picks[s + j];
        const float *row = e->logits + (size_t)(s + j) * (size_t)e->n_vocab;
        ch->n_row = j;
        if (e->use_ids) {
            pk->token = e->ids[s + j];
            sampler_accept(ch->sampler, pk->token);
        } else if (e->spec_greedy_accept && j < n_draft && argmax(row, e->n_vocab) == q->tokens[first_draft + j]) {
            pk->token = q->tokens[first_draft + j]; /* the deliberate bug (tests only): no draw */
            pk->lp = 0;
            sampler_accept(ch->sampler, pk->token);
            engine_constrain_accept(e, ch, pk->token);
        } else {
            engine_pick_token(e, ch, row, ws, pk);
        }
        if (j == n_draft || pk->token != q->tokens[first_draft + j]) break;
    }
    ch->n_row = 0;
    e->n_acc[i] = j + 1;
}

typedef struct {
    pagoda_engine *e;
    const sched_plan *plan;
    _Atomic int32_t next;
} pick_job;

/* Sequences one at a time, first come first served; thread ith draws with its own workspace. */
static void pick_rows(void *ctx, int ith, int nth) {
    (void)nth;
    pick_job *j = ctx;
    pagoda_engine *e = j->e;
    for (int32_t i; (i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->plan->n_seqs;) {
        if (e->srow[i] < 0) continue;
        sched_seq *q = j->plan->seqs[i];
        const request *r = ((choice *)q->owner)->r;
        if (r->p.n > 1 && !r->forked) continue; /* forks in batch order, in the emit stage */
        sample_seq(e, q, i, e->ws[ith]);
    }
}

void engine_sample_stage(pagoda_engine *e, const sched_plan *plan) {
    const int32_t n = plan->n_seqs;
    int32_t rows = 0;
    for (int32_t i = 0; i < n; i++) {
        e->n_acc[i] = 0;
        rows += e->srow[i] >= 0;
    }
    if (e->use_ids) { /* ids only: nothing to draw */
        for (int32_t i = 0; i < n; i++)
            if (e->srow[i] >= 0) sample_seq(e, plan->seqs[i], i, e->ws[0]);
        return;
    }
    int nt = e->n_pick_threads < rows ? e->n_pick_threads : rows;
    pick_job j = {.e = e, .plan = plan};
    atomic_init(&j.next, 0);
    pg_parallel(nt, pick_rows, &j);
}
