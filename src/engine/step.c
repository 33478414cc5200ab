/* One engine step as named stages (../shared/DESIGN.md, "One step of the engine, as data"):
 *
 *   propose   drafts for speculative decoding (when a proposer is set)
 *   schedule  which sequences run and how many tokens each computes (sched/)
 *   spec prefill  the proposer's work for this step's prompt chunks (a draft model's prefill)
 *   build     KV block copies (copy-on-write), then the packed batch: tokens, positions, block
 *             tables, adapter ids, which tokens give logits rows
 *   forward   the runner runs the batch: logits rows, or greedy ids when every row is plain
 *             greedy and the runner can pick them on the device
 *   prompt logits  raw rows of prompt positions to requests that asked for them
 *   pool      hidden states of the positions embedding requests pool into their sums (embed.c)
 *   sample    logits processors + draw per row, drafts verified (sample.c)
 *   accept    k >= 1 tokens per sequence: accepted drafts + one sampled; rejected drafts' KV
 *             slots roll back (sched_accept)
 *   commit    only accepted full blocks enter the prefix cache (sched_publish)
 *   emit      token and finish events (emit.c); n > 1 forks off its prompt here (fork.c); an
 *             embedding request whose prompt is through gets its pooled vector (embed.c)
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "engine/engine_internal.h"

#define SPEC_MIN_RATE 0.3f /* below this share a choice rests SPEC_REST steps, then may try again */
#define SPEC_REST 8
#define SPEC_RELAX 0.0625f /* a candidate given no drafts moves its rate this much toward the prior */
#define SPEC_PROBE 32 /* a candidate refused drafts this many steps x running sequences gets its ask once */
#define SPEC_PRIOR_TRIALS 16.0f /* drafts' weight of the engine's running estimate (sp_prior) */

/* A new choice's first estimate, and where an idle one's drifts back to: the share of drafts this
 * engine's proposer had accepted lately, or SPEC_PRIOR_RATE if that is lower (optimistic, so
 * drafts get tried). A fixed prior left a new sequence with an expensive proposer (a draft
 * model on a CPU) without drafts for good: too low to be worth its cost, never tried, never
 * raised, though every sequence before it had kept 98% of its drafts. */
static float spec_prior(const pagoda_engine *e) { return e->sp_prior > SPEC_PRIOR_RATE ? e->sp_prior : SPEC_PRIOR_RATE; }

/* Drafts for the sequences that decode this step: how many each gets comes from the measured
 * cost model (spec_cost.h), then the proposer fills them. */
static void stage_propose(pagoda_engine *e) {
    const int32_t n_run = sched_n_running(e->sched);
    if (!e->spec || n_run > e->spec_max_seqs) return;
    int32_t nq = 0;
    uint8_t forced[e->c.max_seqs]; /* query i holds its grammar's forced text already (no proposer) */
    for (request *r = e->live; r && nq < e->c.max_seqs; r = r->next) {
        if (r->p.score_only || r->p.no_speculation || (r->p.n > 1 && !r->forked)) continue;
        for (int32_t i = 0; i < r->p.n && nq < e->c.max_seqs; i++) {
            choice *ch = &r->choices[i];
            sched_seq *q = ch->seq;
            if (!q || ch->finish || q->state != SEQ_RUNNING || q->n_draft || q->n_computed != q->n_tokens - 1) continue;
            if (ch->sp_rate < 0) ch->sp_rate = spec_prior(e);
            int32_t k = e->spec_k;
            /* drafts past the context or max_tokens could never be kept */
            if (k > e->max_model_len - 1 - q->n_tokens) k = e->max_model_len - 1 - q->n_tokens;
            if (k > r->max_tokens - ch->n_generated - 1) k = r->max_tokens - ch->n_generated - 1;
            if (k <= 0) continue;
            int32_t *out = e->sq_out + (size_t)nq * MAX_DRAFT;
            /* the text its grammar forces: drafts that need no proposer (asked for even while the
               choice rests after low acceptance; the cost model still decides how many are verified,
               and where it would give none, the text is not looked for) */
            const int32_t nf = ch->gm && (e->c.spec_fixed_k || spec_cost_would_draft(&e->sp_cost, n_run, ch->sp_rate, true))
                                   ? engine_spec_forced(e, ch, out, k)
                                   : 0;
            if (!nf && ch->sp_wait > 0 && !e->c.spec_fixed_k) {
                ch->sp_wait--;
                continue;
            }
            e->sq[nq] = (spec_query){.key = (r->id << 8) | (uint64_t)ch->index, .tokens = q->tokens, .n = q->n_tokens,
                                     .max_k = nf ? nf : k, .out = out, .n_out = nf};
            e->sq_seq[nq] = q, e->sq_rate[nq] = ch->sp_rate, e->sq_ask[nq] = e->sq[nq].max_k;
            forced[nq++] = nf > 0;
        }
    }
    if (!nq) return;
    int32_t asked = 0;
    if (e->c.spec_fixed_k)
        for (int32_t i = 0; i < nq; i++) asked += e->sq_k[i] = e->sq_ask[i];
    else
        asked = spec_cost_allocate(&e->sp_cost, n_run, e->sq_rate, e->sq_ask, forced, nq, e->sq_k, e->sq_work);
    int32_t m = 0;
    bool in_step = true; /* every proposal continues one of the step before (no catch-up of tokens decoded without it) */
    for (int32_t i = 0; i < nq; i++) {
        choice *ch = e->sq_seq[i]->owner;
        /* refused for long: once its ask, so that the costs behind the refusal are measured again
           (a cost measured once, under load or cold, would otherwise refuse it for good) */
        if (!e->sq_k[i] && ++ch->sp_refused >= SPEC_PROBE * n_run) asked += e->sq_k[i] = e->sq_ask[i];
        if (!e->sq_k[i]) { /* not worth its cost now: its estimate drifts back to the prior's */
            ch->sp_rate += (spec_prior(e) - ch->sp_rate) * SPEC_RELAX;
            continue;
        }
        ch->sp_refused = 0;
        if (forced[i]) { /* the forced text's first sq_k tokens; no proposer */
            asked -= e->sq_k[i];
            sched_propose(e->sched, e->sq_seq[i], e->sq[i].out, e->sq_k[i]); /* out of memory: no drafts */
            continue;
        }
        if (!ch->sp_prev) in_step = false;
        e->sq[i].max_k = e->sq_k[i];
        e->sq[m] = e->sq[i], e->sq_seq[m] = e->sq_seq[i], m++;
    }
    if (!m) return;
    double t0 = pg_now_s();
    e->spec->propose(e->spec, e->sq, m);
    /* the proposer's cost per draft, from steps without catch-up: a draft model catching up on the
       tokens decoded since its last proposal is not what a draft costs */
    if (in_step) spec_cost_record_proposer(&e->sp_cost, asked, pg_now_s() - t0);
    for (int32_t i = 0; i < m; i++) {
        int32_t k = e->sq[i].n_out < e->sq[i].max_k ? e->sq[i].n_out : e->sq[i].max_k;
        for (int32_t j = 0; j < k; j++)
            if (e->sq[i].out[j] < 0 || e->sq[i].out[j] >= e->n_vocab) k = j; /* a bad proposal ends the drafts */
        if (k > 0) sched_propose(e->sched, e->sq_seq[i], e->sq[i].out, k); /* out of memory: no drafts */
    }
}

/* The proposer's share of the prompt chunks this step computes (a draft model's prefill), for the
 * sequences it may later propose for: done with the prompt, not in the first proposal (where it
 * would count as decode time, and in the cost model as the proposer's cost per draft). */
static void stage_spec_prefill(pagoda_engine *e, const sched_plan *plan) {
    const int32_t n_run = sched_n_running(e->sched);
    if (!e->spec || !e->spec->prefill || n_run > e->spec_max_seqs) return;
    /* not while the cost model would give a new sequence no drafts (the proposer costs more than
       its drafts save at this batch size): its prefill would only add to the time to first token.
       A sequence probed later catches up inside that proposal (counted out of the proposer's cost). */
    if (!e->c.spec_fixed_k && !spec_cost_would_draft(&e->sp_cost, n_run, spec_prior(e), false)) return;
    int32_t nq = 0;
    for (int32_t i = 0; i < plan->n_seqs && nq < e->c.max_seqs; i++) {
        sched_seq *q = plan->seqs[i];
        choice *ch = q->owner;
        request *r = ch->r;
        const int32_t end = q->n_computed + plan->n_new[i];
        /* a chunk of tokens that are not drafts, other than the last token alone (a plain decode step) */
        if (r->p.score_only || r->p.no_speculation || (r->p.n > 1 && !r->forked) || q->n_draft ||
            plan->n_new[i] < 2 || end > q->n_tokens)
            continue;
        e->sq[nq++] = (spec_query){.key = (r->id << 8) | (uint64_t)ch->index, .tokens = q->tokens, .n = end};
    }
    if (nq) e->spec->prefill(e->spec, e->sq, nq);
}

/* KV copies for the plan; a failed copy-on-write finishes its sequence's choice with an error
 * (never a step over a block that does not hold what the block table says). The plan is
 * compacted over the failed ones. */
static void stage_copy(pagoda_engine *e, sched_plan *plan) {
    if (!plan->n_copies) return;
    int any = 0;
    char msg[512] = "";
    memset(e->failed, 0, (size_t)plan->n_seqs);
    for (int32_t c = 0; c < plan->n_copies; c++) {
        pagoda_status st = e->runner->copy_block(e->runner, plan->copies[c][0], plan->copies[c][1]);
        if (st) {
            e->failed[plan->copy_seq[c]] = 1, any = 1;
            snprintf(msg, sizeof msg, "KV copy-on-write failed: %s", pagoda_last_error());
        }
    }
    if (!any) return;
    pg_log(PAGODA_LOG_ERROR, "%s", msg);
    int32_t n = 0;
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        if (e->failed[i]) { /* frees only this sequence: every planned one is a distinct live choice */
            plan->n_tokens -= plan->n_new[i];
            engine_finish_choice(e, plan->seqs[i]->owner, PAGODA_FINISH_ERROR, msg, 0);
            continue;
        }
        plan->seqs[n] = plan->seqs[i], plan->n_new[n] = plan->n_new[i], n++;
    }
    plan->n_seqs = n;
}

/* Packs the plan into b; the rows each sequence wants logits for (row0/row_pos/srow). Returns
 * the number of rows. Counts prompt and cached tokens at each request's first admission. */
static int32_t stage_build(pagoda_engine *e, const sched_plan *plan, engine_batch *b, uint64_t *prompt_tokens,
                           uint64_t *cached_tokens) {
    int32_t t = 0, rows = 0, hrows = 0;
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        sched_seq *q = plan->seqs[i];
        choice *ch = q->owner;
        request *r = ch->r;
        if (!ch->counted && q->n_computed == q->n_cached) { /* first admission */
            ch->counted = 1;
            if (ch->index == 0) {
                r->n_cached = q->n_cached;
                *prompt_tokens += (uint64_t)r->n_prompt;
                *cached_tokens += (uint64_t)q->n_cached;
            }
        }
        const int32_t start = q->n_computed, end = start + plan->n_new[i];
        e->b_seq_start[i] = t;
        e->b_pos0[i] = start;
        e->b_tables[i] = q->blocks;
        e->b_nblocks[i] = q->n_blocks;
        e->b_adapter[i] = q->adapter & 0xff; /* the key's slot: the runner's table index (adapters.c) */
        memcpy(e->b_tokens + t, q->tokens + start, (size_t)plan->n_new[i] * sizeof(int32_t));
        memset(e->b_mask + t, 0, (size_t)plan->n_new[i]);
        /* rows: the last accepted token and the drafts when the chunk reaches the end (the
         * sampling rows), and before them prompt positions whose logits were asked for */
        int32_t lo = end, s = -1;
        if (end == q->n_tokens && !r->p.score_only) s = lo = q->n_tokens - 1 - q->n_draft;
        if (r->p.on_prompt_logits && ch->index == 0 && r->n_logits_sent < r->n_prompt) {
            int32_t p0 = start > r->n_logits_sent ? start : r->n_logits_sent;
            if (p0 < end && p0 < r->n_prompt && p0 < lo) lo = p0;
        }
        if (lo < start) lo = start; /* not reached: drafts run whole (sched_schedule) */
        e->row0[i] = lo < end ? rows : -1;
        e->row_pos[i] = lo;
        e->srow[i] = s >= lo ? rows + (s - lo) : -1;
        memset(e->b_mask + t + (lo - start), 1, (size_t)(end - lo));
        rows += end - lo;
        if (e->b_hmask) { /* embedding requests: the positions they pool return hidden states */
            memset(e->b_hmask + t, 0, (size_t)plan->n_new[i]);
            hrows += engine_embed_rows(e, i, r, q->n_tokens, start, end, t, hrows);
        }
        t += plan->n_new[i];
    }
    e->b_seq_start[plan->n_seqs] = t;
    *b = (engine_batch){.b = {.n_tok = t, .tokens = e->b_tokens, .n_seq = plan->n_seqs, .seq_start = e->b_seq_start,
                        .seq_pos0 = e->b_pos0, .block_tables = e->b_tables, .n_blocks = e->b_nblocks,
                        .logits_mask = e->b_mask, .seq_adapter = e->b_adapter,
                        .hidden_mask = hrows ? e->b_hmask : NULL}, .n_rows = rows, .n_hidden = hrows,
                        .hidden = hrows ? e->hidden : NULL};
    return rows;
}

/* Raw logits rows of prompt positions, in order, to the requests that asked for them. */
static void stage_prompt_logits(pagoda_engine *e, const sched_plan *plan) {
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        if (e->row0[i] < 0) continue;
        sched_seq *q = plan->seqs[i];
        choice *ch = q->owner;
        request *r = ch->r;
        if (!r->p.on_prompt_logits || ch->index != 0) continue;
        int32_t end = q->n_computed + plan->n_new[i]; /* before commit */
        if (end > r->n_prompt) end = r->n_prompt;
        for (int32_t p = r->n_logits_sent > e->row_pos[i] ? r->n_logits_sent : e->row_pos[i]; p < end; p++) {
            pagoda_logits_event ev = {.request_id = r->id, .pos = p, .n_vocab = e->n_vocab,
                                      .logits = e->logits + (size_t)(e->row0[i] + p - e->row_pos[i]) * (size_t)e->n_vocab};
            r->p.on_prompt_logits(&ev, r->p.user);
            r->n_logits_sent = p + 1;
        }
    }
}

/* The accept and commit stages: drafts beyond the accepted ones roll back, then every planned
 * sequence publishes its accepted full blocks. */
static void stage_accept_commit(pagoda_engine *e, const sched_plan *plan) {
    uint64_t drafts = 0, proposed = 0, accepted = 0;
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        sched_seq *q = plan->seqs[i];
        ((choice *)q->owner)->sp_prev = q->n_draft > 0;
        if (e->n_acc[i] <= 0 || !q->n_draft) continue;
        const int32_t n_draft = q->n_draft, kept = e->n_acc[i] - 1;
        choice *ch = q->owner;
        /* the share of drafts kept, as a geometric rate: every kept draft was a success, the first
         * rejected one a failure, later ones never tried; old steps count less */
        const float tried = (float)kept + (kept < n_draft ? 1.0f : 0.0f);
        ch->sp_rate = (ch->sp_rate * 4.0f + (float)kept) / (4.0f + tried);
        e->sp_prior = (e->sp_prior * SPEC_PRIOR_TRIALS + (float)kept) / (SPEC_PRIOR_TRIALS + tried);
        if (ch->sp_rate < SPEC_MIN_RATE) ch->sp_wait = SPEC_REST;
        drafts++, proposed += (uint64_t)n_draft, accepted += (uint64_t)kept;
        sched_accept(e->sched, q, kept);
    }
    if (drafts) {
        pthread_mutex_lock(&e->mu);
        e->stats.n_spec_drafts += drafts;
        e->stats.n_spec_proposed += proposed;
        e->stats.n_spec_accepted += accepted;
        pthread_mutex_unlock(&e->mu);
    }
    for (int32_t i = 0; i < plan->n_seqs; i++) sched_publish(e->sched, plan->seqs[i]);
}

/* In batch order; finishing a choice never invalidates another planned sequence (each planned
 * sequence is a distinct live choice). */
static void stage_emit(pagoda_engine *e, const sched_plan *plan) {
    for (int32_t i = 0; i < plan->n_seqs; i++) {
        sched_seq *q = plan->seqs[i];
        choice *ch = q->owner;
        request *r = ch->r;
        if (e->srow[i] < 0) {
            if (r->p.score_only && q->n_computed == q->n_tokens) { /* the prompt is through */
                if (r->p.on_embedding) engine_embed_deliver(e, r);
                engine_finish_choice(e, ch, r->p.on_embedding ? PAGODA_FINISH_STOP : PAGODA_FINISH_LENGTH, NULL, 0);
            }
            continue;
        }
        if (r->p.n > 1 && !r->forked) {
            engine_fork_and_sample(e, q, e->logits + (size_t)e->srow[i] * (size_t)e->n_vocab);
            continue;
        }
        const int32_t n = e->n_acc[i], pos0 = q->n_tokens - (n - 1); /* the kept drafts end the sequence */
        for (int32_t j = 0; j < n; j++) {
            const pick *pk = &e->picks[e->srow[i] + j];
            if (engine_emit_token(e, ch, pk->token, pos0 + j, e->use_ids ? NULL : pk, j == n - 1)) break;
        }
    }
}

int engine_step(pagoda_engine *e) {
    double t_start = pg_now_s();
    engine_take_inbox(e);
    stage_propose(e);
    sched_plan plan;
    sched_schedule(e->sched, &plan);
    stage_copy(e, &plan);
    stage_spec_prefill(e, &plan);
    if (plan.n_seqs == 0) {
        engine_update_gauges(e);
        return plan.n_copies > 0;
    }
    engine_batch b;
    uint64_t prompt_tokens = 0, cached_tokens = 0;
    int32_t rows = stage_build(e, &plan, &b, &prompt_tokens, &cached_tokens);
    e->use_ids = b.n_hidden == 0 && engine_plan_wants_ids(e, &plan);
    /* a step where every sequence computes its last token and its drafts feeds the cost model */
    bool decode_only = e->spec && b.n_hidden == 0;
    for (int32_t i = 0; decode_only && i < plan.n_seqs; i++) {
        const sched_seq *q = plan.seqs[i];
        decode_only = plan.n_new[i] == 1 + q->n_draft && q->n_computed + plan.n_new[i] == q->n_tokens;
    }
    double t_fwd = pg_now_s();
    pagoda_status st = rows > e->cap_rows ? pg_fail(PAGODA_ERR_INVALID, "engine: %d logits rows in a step, room for %d", rows, e->cap_rows)
                       : e->runner->run(e->runner, &b, e->use_ids ? NULL : e->logits, e->use_ids ? e->ids : NULL);
    t_fwd = pg_now_s() - t_fwd;
    if (decode_only && !st) spec_cost_record(&e->sp_cost, b.b.n_tok, t_fwd);
    if (st) {
        char msg[512];
        snprintf(msg, sizeof msg, "forward pass failed: %s", pagoda_last_error());
        pg_log(PAGODA_LOG_ERROR, "%s", msg);
        sched_commit(e->sched, &plan);
        for (int32_t i = 0; i < plan.n_seqs; i++) engine_finish_choice(e, plan.seqs[i]->owner, PAGODA_FINISH_ERROR, msg, 0);
        engine_update_gauges(e);
        return 1;
    }
    stage_prompt_logits(e, &plan);
    if (b.n_hidden) engine_embed_stage(e, &plan);
    sched_commit(e->sched, &plan);
    pthread_mutex_lock(&e->mu);
    e->stats.n_steps++;
    e->stats.n_computed_tokens += (uint64_t)plan.n_tokens;
    e->stats.n_prompt_tokens += prompt_tokens;
    e->stats.n_cached_tokens += cached_tokens;
    e->stats.n_preemptions += (uint64_t)plan.n_preempted;
    pthread_mutex_unlock(&e->mu);
    engine_sample_stage(e, &plan);
    stage_accept_commit(e, &plan);
    stage_emit(e, &plan);
    engine_update_gauges(e);
    double t_step = pg_now_s() - t_start;
    pthread_mutex_lock(&e->mu);
    e->stats.step_seconds += t_step;
    e->stats.forward_seconds += t_fwd;
    pthread_mutex_unlock(&e->mu);
    return 1;
}
