/* Requests in (any thread): validation, owned copies, the inbox and the cancel list; and, on
 * the stepping thread, taking them into the scheduler. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"
#include "engine/grammar_api.h"

void engine_free_request(request *r) {
    if (!r) return;
    for (int32_t i = 0; r->choices && i < r->p.n; i++) {
        sampler_destroy(r->choices[i].sampler);
        tok_stream_destroy(r->choices[i].detok);
        stop_free(&r->choices[i].stop);
        engine_constrain_free(&r->choices[i]);
    }
    pagoda_grammar_unref(r->p.grammar);
    for (int32_t i = 0; r->triggers && i < r->p.n_grammar_triggers; i++) free(r->triggers[i]);
    free(r->triggers);
    lp_bias_free(&r->bias);
    free(r->choices), free(r->prompt), free(r->stop_tokens), free(r->min_ban), free(r->pool), free(r);
}

static pagoda_status validate(const pagoda_engine *e, const pagoda_request *p) {
    const pagoda_sampling *s = &p->sampling;
    if (p->n < 1 || p->n > MAX_N) return pg_fail(PAGODA_ERR_INVALID, "n must be in [1, %d], got %d", MAX_N, p->n);
    if (p->logprobs > MAX_LOGPROBS) return pg_fail(PAGODA_ERR_INVALID, "logprobs must be at most %d, got %d", MAX_LOGPROBS, p->logprobs);
    if (!isfinite(s->temperature) || s->temperature < 0 || s->temperature > 100)
        return pg_fail(PAGODA_ERR_INVALID, "temperature must be in [0, 100], got %g", s->temperature);
    if (!isfinite(s->top_p) || s->top_p <= 0 || s->top_p > 1) return pg_fail(PAGODA_ERR_INVALID, "top_p must be in (0, 1], got %g", s->top_p);
    if (!isfinite(s->min_p) || s->min_p < 0 || s->min_p > 1) return pg_fail(PAGODA_ERR_INVALID, "min_p must be in [0, 1], got %g", s->min_p);
    if (s->top_k < -1) return pg_fail(PAGODA_ERR_INVALID, "top_k must be -1, 0 or positive, got %d", s->top_k);
    if (!isfinite(s->presence_penalty) || fabsf(s->presence_penalty) > 2)
        return pg_fail(PAGODA_ERR_INVALID, "presence_penalty must be in [-2, 2], got %g", s->presence_penalty);
    if (!isfinite(s->frequency_penalty) || fabsf(s->frequency_penalty) > 2)
        return pg_fail(PAGODA_ERR_INVALID, "frequency_penalty must be in [-2, 2], got %g", s->frequency_penalty);
    if (!isfinite(s->repetition_penalty) || s->repetition_penalty <= 0 || s->repetition_penalty > 10)
        return pg_fail(PAGODA_ERR_INVALID, "repetition_penalty must be in (0, 10], got %g", s->repetition_penalty);
    if (p->n_stop < 0 || p->n_stop > MAX_STOPS || (p->n_stop && !p->stop))
        return pg_fail(PAGODA_ERR_INVALID, "at most %d stop strings", MAX_STOPS);
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t l = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (l == 0 || l > MAX_STOP_LEN)
            return pg_fail(PAGODA_ERR_INVALID, "stop string %d must be 1 to %d bytes long", i, MAX_STOP_LEN);
    }
    if (p->n_stop_token_ids < 0 || p->n_stop_token_ids > MAX_STOP_TOKENS || (p->n_stop_token_ids && !p->stop_token_ids))
        return pg_fail(PAGODA_ERR_INVALID, "at most %d stop token ids", MAX_STOP_TOKENS);
    for (int32_t i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= e->n_vocab)
            return pg_fail(PAGODA_ERR_INVALID, "stop token id %d out of range [0, %d)", p->stop_token_ids[i], e->n_vocab);
    if (!p->prompt && (p->n_prompt_tokens <= 0 || !p->prompt_tokens))
        return pg_fail(PAGODA_ERR_INVALID, "the request has no prompt");
    if (p->min_tokens < 0 || (p->max_tokens > 0 && p->min_tokens > p->max_tokens))
        return pg_fail(PAGODA_ERR_INVALID, "min_tokens must be in [0, max_tokens], got %d (max_tokens %d)", p->min_tokens,
                       p->max_tokens);
    if (p->penalty_last_n < -1)
        return pg_fail(PAGODA_ERR_INVALID, "penalty_last_n must be -1, 0 or positive, got %d", p->penalty_last_n);
    if (p->n_grammar_triggers < 0 || p->n_grammar_triggers > MAX_TRIGGERS || (p->n_grammar_triggers && !p->grammar_triggers))
        return pg_fail(PAGODA_ERR_INVALID, "at most %d grammar triggers", MAX_TRIGGERS);
    if (p->n_grammar_triggers && !p->grammar) return pg_fail(PAGODA_ERR_INVALID, "grammar triggers need a grammar");
    for (int32_t i = 0; i < p->n_grammar_triggers; i++) {
        size_t l = p->grammar_triggers[i] ? strlen(p->grammar_triggers[i]) : 0;
        if (l == 0 || l > MAX_TRIGGER_LEN)
            return pg_fail(PAGODA_ERR_INVALID, "grammar trigger %d must be 1 to %d bytes long", i, MAX_TRIGGER_LEN);
    }
    if (p->n_logit_bias < 0 || p->n_logit_bias > PAGODA_MAX_LOGIT_BIAS || (p->n_logit_bias && !p->logit_bias))
        return pg_fail(PAGODA_ERR_INVALID, "logit_bias has %d entries; at most %d are allowed", p->n_logit_bias,
                       PAGODA_MAX_LOGIT_BIAS);
    return PAGODA_OK;
}

/* The penalty step of a choice's chain (self: its sampler). */
static void penalties_step(void *self, float *logits, int32_t n_vocab) {
    (void)n_vocab;
    sampler_apply_penalties(self, logits);
}

/* The min_tokens step of a choice's chain (self: the choice): until it has generated min_tokens
 * tokens, the tokens that would end it cannot be drawn. */
static void min_tokens_step(void *self, float *logits, int32_t n_vocab) {
    const choice *ch = self;
    const request *r = ch->r;
    if (ch->n_generated + ch->n_row >= r->p.min_tokens) return; /* n_row: drafts kept before this row */
    for (int32_t i = 0; i < r->n_min_ban; i++)
        if (r->min_ban[i] < n_vocab) logits[r->min_ban[i]] = -INFINITY;
}

/* r->min_ban: end-of-generation tokens (unless ignore_eos) and the stop token ids. */
static pagoda_status min_ban_init(const pagoda_engine *e, request *r) {
    int32_t n = r->p.n_stop_token_ids;
    if (e->tok && !r->p.ignore_eos)
        for (int32_t t = 0; t < e->n_vocab; t++) n += tok_is_eog(e->tok, t);
    if (!(r->min_ban = malloc((size_t)(n ? n : 1) * sizeof *r->min_ban))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if (e->tok && !r->p.ignore_eos)
        for (int32_t t = 0; t < e->n_vocab; t++)
            if (tok_is_eog(e->tok, t)) r->min_ban[r->n_min_ban++] = t;
    for (int32_t i = 0; i < r->p.n_stop_token_ids; i++) r->min_ban[r->n_min_ban++] = r->stop_tokens[i];
    return PAGODA_OK;
}

static pagoda_status make_request(pagoda_engine *e, const pagoda_request *p, request **out) {
    *out = NULL;
    pagoda_status st = validate(e, p);
    if (st) return st;
    request *r = calloc(1, sizeof *r);
    if (!r) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    r->p = *p;
    r->p.stop = NULL, r->p.stop_token_ids = NULL, r->p.prompt = NULL, r->p.prompt_tokens = NULL, r->p.logit_bias = NULL;
    r->p.grammar = NULL;
    r->p.grammar_triggers = NULL;
    if (p->n_grammar_triggers) {
        if (!(r->triggers = calloc((size_t)p->n_grammar_triggers, sizeof *r->triggers))) goto nomem;
        for (int32_t i = 0; i < p->n_grammar_triggers; i++)
            if (!(r->triggers[i] = strdup(p->grammar_triggers[i]))) goto nomem;
    }
    if (p->grammar) {
        if (p->grammar->n_vocab > e->n_vocab || (e->pm && p->grammar->model != e->pm)) {
            st = pg_fail(PAGODA_ERR_INVALID, "the grammar was compiled for another model");
            goto fail;
        }
        r->p.grammar = pagoda_grammar_ref(p->grammar);
    }
    if ((st = lp_bias_init(&r->bias, p->logit_bias, p->n_logit_bias, e->n_vocab))) goto fail;
    if ((st = engine_embed_init(e, r))) goto fail;
    if (p->prompt && !e->tok) {
        st = pg_fail(PAGODA_ERR_INVALID, "this model has no tokenizer: send the prompt as token ids");
        goto fail;
    }
    if (p->n_stop && !e->tok) {
        st = pg_fail(PAGODA_ERR_INVALID, "this model has no tokenizer: stop strings cannot be matched");
        goto fail;
    }
    if (p->prompt) {
        size_t n = 0, len = p->prompt_len ? p->prompt_len : strlen(p->prompt);
        if ((st = tok_encode(e->tok, p->prompt, len, true, true, &r->prompt, &n))) goto fail;
        /* a prompt that already starts with BOS (rendered chat templates do) gets no second one */
        if (n >= 2 && r->prompt[0] == tok_bos(e->tok) && r->prompt[1] == r->prompt[0]) {
            memmove(r->prompt, r->prompt + 1, (n - 1) * sizeof(int32_t));
            n--;
        }
        if (n > (size_t)INT32_MAX) n = INT32_MAX;
        r->n_prompt = (int32_t)n;
    } else {
        r->n_prompt = p->n_prompt_tokens;
        if (!(r->prompt = malloc((size_t)r->n_prompt * sizeof(int32_t)))) goto nomem;
        for (int32_t i = 0; i < r->n_prompt; i++) {
            if (p->prompt_tokens[i] < 0 || p->prompt_tokens[i] >= e->n_vocab) {
                st = pg_fail(PAGODA_ERR_INVALID, "prompt token %d at position %d is out of range [0, %d)",
                             p->prompt_tokens[i], i, e->n_vocab);
                goto fail;
            }
            r->prompt[i] = p->prompt_tokens[i];
        }
    }
    if (r->n_prompt <= 0) {
        st = pg_fail(PAGODA_ERR_INVALID, "the prompt is empty");
        goto fail;
    }
    if (r->p.score_only && r->n_prompt <= e->max_model_len) {
        r->max_tokens = 1; /* nothing is generated */
    } else if (r->n_prompt >= e->max_model_len) {
        st = pg_fail(PAGODA_ERR_INVALID,
                     "the prompt has %d tokens, but this model's context is %d tokens (at least one must be left to generate)",
                     r->n_prompt, e->max_model_len);
        goto fail;
    } else {
        r->max_tokens = p->max_tokens > 0 ? p->max_tokens : e->max_model_len - r->n_prompt;
    }
    if (!r->p.score_only && (int64_t)r->n_prompt + r->max_tokens > e->max_model_len) {
        st = pg_fail(PAGODA_ERR_INVALID,
                     "the prompt has %d tokens and max_tokens is %d: %lld in all, over this model's context of %d tokens",
                     r->n_prompt, r->max_tokens, (long long)r->n_prompt + r->max_tokens, e->max_model_len);
        goto fail;
    }
    if (p->n_stop_token_ids) {
        if (!(r->stop_tokens = malloc((size_t)p->n_stop_token_ids * sizeof(int32_t)))) goto nomem;
        memcpy(r->stop_tokens, p->stop_token_ids, (size_t)p->n_stop_token_ids * sizeof(int32_t));
    }
    if (!(r->choices = calloc((size_t)p->n, sizeof *r->choices))) goto nomem;
    if (p->min_tokens > 0 && !p->score_only && (st = min_ban_init(e, r))) goto fail;
    pthread_mutex_lock(&e->mu);
    uint64_t seed = p->sampling.seed >= 0 ? (uint64_t)p->sampling.seed : (e->rng = e->rng * 6364136223846793005ull + 1442695040888963407ull);
    pthread_mutex_unlock(&e->mu);
    for (int32_t i = 0; i < p->n; i++) {
        choice *ch = &r->choices[i];
        ch->r = r, ch->index = i;
        ch->sp_rate = -1.0f; /* the engine's estimate at its first proposal (stage_propose) */
        pg_sampling_params sp = sampler_default_params();
        sp.temperature = p->sampling.temperature;
        sp.top_k = p->sampling.top_k > 0 ? p->sampling.top_k : 0;
        sp.top_p = p->sampling.top_p;
        sp.min_p = p->sampling.min_p;
        sp.repetition_penalty = p->sampling.repetition_penalty;
        sp.presence_penalty = p->sampling.presence_penalty;
        sp.frequency_penalty = p->sampling.frequency_penalty;
        /* 0: the penalties look at the generated tokens (OpenAI semantics); else a window over
         * prompt + generation (llama.cpp's repeat-last-n), the prompt recorded below */
        sp.penalty_last_n = p->penalty_last_n ? p->penalty_last_n : -1;
        sp.seed = seed + (uint64_t)i;
        if ((st = sampler_create_lean(&sp, e->n_vocab, &ch->sampler)) ||
            (e->tok && (st = tok_stream_create(e->tok, p->skip_special != 0, &ch->detok))) ||
            (st = stop_init(&ch->stop, p->stop, p->n_stop)))
            goto fail;
        if (p->penalty_last_n)
            for (int32_t j = 0; j < r->n_prompt; j++) sampler_accept(ch->sampler, r->prompt[j]);
        /* the logits processors, in order: logit_bias first, then the penalties, min_tokens */
        if ((r->bias.n && (st = lp_chain_add(&ch->chain, lp_bias_apply, &r->bias))) ||
            (sampler_penalties_on(ch->sampler) && (st = lp_chain_add(&ch->chain, penalties_step, ch->sampler))) ||
            (r->n_min_ban && (st = lp_chain_add(&ch->chain, min_tokens_step, ch))) ||
            (st = engine_constrain_init(e, ch)))
            goto fail;
    }
    r->n_live = p->n;
    *out = r;
    return PAGODA_OK;
nomem:
    st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
fail:
    engine_free_request(r);
    return st;
}

pagoda_status pagoda_engine_submit(pagoda_engine *e, const pagoda_request *p, uint64_t *id) {
    if (id) *id = 0;
    if (!e || !p) return pg_fail(PAGODA_ERR_INVALID, "engine and request are required");
    if (e->c.max_waiting > 0) {
        pthread_mutex_lock(&e->mu);
        int busy = e->n_inbox + e->stats.n_waiting >= e->c.max_waiting;
        pthread_mutex_unlock(&e->mu);
        if (busy) return pg_fail(PAGODA_ERR_BUSY, "server busy: %d requests are already waiting", e->c.max_waiting);
    }
    request *r;
    pagoda_status st = make_request(e, p, &r);
    if (st) return st;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        engine_free_request(r);
        return pg_fail(PAGODA_ERR_BUSY, "the engine is shutting down");
    }
    if ((st = engine_adapter_key(e, p->adapter, &r->adapter_key))) {
        pthread_mutex_unlock(&e->mu);
        engine_free_request(r);
        return st;
    }
    r->id = e->next_id++;
    uint64_t rid = r->id; /* r belongs to the engine thread once unlocked (it may finish and free it) */
    if (e->inbox_tail) e->inbox_tail->next = r; else e->inbox = r;
    e->inbox_tail = r;
    e->n_inbox++;
    e->stats.n_requests_submitted++;
    e->stats.n_live_requests++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (id) *id = rid;
    return PAGODA_OK;
}

void pagoda_engine_cancel(pagoda_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (e->n_cancels == e->cap_cancels) {
        int32_t cap = e->cap_cancels ? 2 * e->cap_cancels : 64;
        uint64_t *c = realloc(e->cancels, (size_t)cap * sizeof *c);
        if (c) e->cancels = c, e->cap_cancels = cap;
    }
    if (e->n_cancels < e->cap_cancels) e->cancels[e->n_cancels++] = id;
    else e->cancel_all = 1; /* out of memory: better to cancel too much than to leak a request */
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void pagoda_engine_cancel_all(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    e->cancel_all = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}


/* New requests become sequences; cancellations are applied. */
void engine_take_inbox(pagoda_engine *e) {
    pthread_mutex_lock(&e->mu);
    request *in = e->inbox;
    e->inbox = e->inbox_tail = NULL;
    e->n_inbox = 0;
    int all = e->cancel_all;
    e->cancel_all = 0;
    int32_t n_cancels = e->n_cancels;
    uint64_t stack_ids[64], *ids = stack_ids;
    if (n_cancels > 64 && !(ids = malloc((size_t)n_cancels * sizeof *ids))) ids = stack_ids, n_cancels = 0, all = 1;
    if (n_cancels) memcpy(ids, e->cancels, (size_t)n_cancels * sizeof *ids);
    e->n_cancels = 0;
    engine_adapters_sync(e);
    pthread_mutex_unlock(&e->mu);
    while (in) {
        request *r = in;
        in = in->next;
        r->next = e->live;
        e->live = r;
        /* prompt logits: a row per prompt token of a chunk, so room for a row per batch token
         * (grown here, once, not in the decode path) */
        int32_t rows = e->c.max_batch_tokens > e->c.max_seqs ? e->c.max_batch_tokens : e->c.max_seqs;
        if (r->p.on_prompt_logits && engine_reserve_rows(e, rows)) {
            engine_cancel_request(e, r, PAGODA_FINISH_ERROR, "out of memory for prompt logits");
            continue;
        }
        if (!engine_adapter_live(e, r->adapter_key)) {
            char msg[64];
            snprintf(msg, sizeof msg, "adapter %d was unloaded", r->adapter_key & 0xff);
            engine_cancel_request(e, r, PAGODA_FINISH_ERROR, msg);
            continue;
        }
        if (sched_add(e->sched, r->id, &r->choices[0], r->prompt, r->n_prompt, r->adapter_key, &r->choices[0].seq)) {
            engine_cancel_request(e, r, PAGODA_FINISH_ERROR, "out of memory");
            continue;
        }
        /* every prompt position goes through the model when its logits are wanted */
        if (r->p.on_prompt_logits) r->choices[0].seq->no_prefix_reuse = 1;
        /* and when an embedding pools positions a cached prefix would skip */
        if (r->p.on_embedding && r->pooling != PAGODA_POOLING_LAST) r->choices[0].seq->no_prefix_reuse = 1;
    }
    for (int32_t i = 0; i < n_cancels; i++)
        for (request *r = e->live; r; r = r->next)
            if (r->id == ids[i]) {
                engine_cancel_request(e, r, PAGODA_FINISH_CANCELLED, NULL);
                break;
            }
    if (ids != stack_ids) free(ids);
    /* requests whose adapter was unloaded end here, before a step reads its table */
    for (request *r = e->live, *next; r; r = next) {
        next = r->next;
        if (!engine_adapter_live(e, r->adapter_key)) {
            char msg[64];
            snprintf(msg, sizeof msg, "adapter %d was unloaded", r->adapter_key & 0xff);
            engine_cancel_request(e, r, PAGODA_FINISH_ERROR, msg);
        }
    }
    if (all)
        while (e->live) engine_cancel_request(e, e->live, PAGODA_FINISH_CANCELLED, NULL);
}
