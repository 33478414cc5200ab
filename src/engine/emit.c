/* The emit stage: token events (detokenized, stop strings held back and cut), finish events,
 * and the end of choices and requests. Stepping thread; callbacks run with no lock held. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/engine_internal.h"

void engine_emit(choice *ch, const char *text, size_t len, int32_t token, pagoda_finish_reason fin, const char *error,
                 const float *top_lp, const int32_t *top_tok, int32_t n_top, float logprob) {
    request *r = ch->r;
    if (!r->p.on_event) return;
    pagoda_event ev = {.request_id = r->id, .index = ch->index, .text = text ? text : "", .text_len = len,
                       .token = token, .logprob = logprob, .n_top = n_top, .top_tokens = top_tok,
                       .top_logprobs = top_lp, .finish = fin, .error = error,
                       .request_done = fin != PAGODA_FINISH_NONE && r->n_live == 0, .n_prompt_tokens = r->n_prompt,
                       .n_cached_tokens = r->n_cached, .n_completion_tokens = ch->n_generated,
                       .stop_index = fin == PAGODA_FINISH_STOP ? ch->stop.matched - 1 : -1};
    r->p.on_event(&ev, r->p.user);
}

static void unlink_live(pagoda_engine *e, request *r) {
    for (request **l = &e->live; *l; l = &(*l)->next)
        if (*l == r) {
            *l = r->next;
            return;
        }
}

/* Ends one choice: frees its sequence and sends the finish event, with whatever text was held
 * back (incomplete UTF-8, a possible stop-string start) when flush is set. */
void engine_end_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush) {
    if (ch->finish != PAGODA_FINISH_NONE) return;
    request *r = ch->r;
    /* a proposer that learns from finished sequences sees this one's tokens (not its drafts) */
    if (ch->seq && e->spec && e->spec->observe && !r->p.score_only && ch->n_generated > 0)
        e->spec->observe(e->spec, ch->seq->tokens, ch->seq->n_tokens - ch->seq->n_draft);
    if (ch->seq) sched_finish(e->sched, ch->seq);
    if (e->spec && e->spec->release) e->spec->release(e->spec, (r->id << 8) | (uint64_t)ch->index);
    ch->seq = NULL;
    ch->finish = why;
    r->n_live--;
    if (r->n_live == 0) { /* counters first, so whoever sees request_done also sees them settled */
        pthread_mutex_lock(&e->mu);
        e->stats.n_requests_finished++;
        e->stats.n_live_requests--;
        engine_set_gauges(e);
        pthread_mutex_unlock(&e->mu);
    }
    char *joined = NULL;
    size_t n_joined = 0;
    if (flush) {
        size_t n = ch->detok ? tok_stream_flush(ch->detok, e->text, e->cap_text) : 0;
        const char *head, *rest = "";
        size_t n_head, n_rest = 0;
        int stopped = stop_push(&ch->stop, e->text, n <= e->cap_text ? n : 0, &head, &n_head);
        if (stopped == 0) stop_flush(&ch->stop, &rest, &n_rest);
        if (stopped >= 0 && (joined = malloc(n_head + n_rest + 1))) {
            memcpy(joined, head, n_head);
            memcpy(joined + n_head, rest, n_rest);
            n_joined = n_head + n_rest;
        }
    }
    engine_emit(ch, joined, n_joined, -1, why, error, NULL, NULL, 0, 0);
    free(joined);
}

/* Frees a request once all its choices have ended. */
static void retire_if_done(pagoda_engine *e, request *r) {
    if (r->n_live > 0) return;
    unlink_live(e, r);
    engine_free_request(r);
}

/* Ends a choice and retires its request after the last one. A request whose other choices
 * were never forked ends with its first. */
void engine_finish_choice(pagoda_engine *e, choice *ch, pagoda_finish_reason why, const char *error, int flush) {
    request *r = ch->r;
    engine_end_choice(e, ch, why, error, flush);
    if (!r->forked && ch->index == 0)
        for (int32_t j = 1; j < r->p.n; j++) engine_end_choice(e, &r->choices[j], why, error, 0);
    retire_if_done(e, r);
}

void engine_cancel_request(pagoda_engine *e, request *r, pagoda_finish_reason why, const char *error) {
    for (int32_t i = 0; i < r->p.n; i++) engine_end_choice(e, &r->choices[i], why, error, 0);
    retire_if_done(e, r);
}

static int is_stop_token(const request *r, int32_t t) {
    for (int32_t i = 0; i < r->p.n_stop_token_ids; i++)
        if (r->stop_tokens[i] == t) return 1;
    return 0;
}

int engine_emit_token(pagoda_engine *e, choice *ch, int32_t t, int32_t pos, const pick *pk, int last) {
    request *r = ch->r;
    if (t == -2) { /* the grammar allowed no token */
        const char *why = ch->gm ? gr_matcher_error(ch->gm) : "";
        pg_log(PAGODA_LOG_ERROR, "request %llu: the grammar allows no token here%s%s", (unsigned long long)r->id,
               why[0] ? ": " : "", why);
        engine_finish_choice(e, ch, PAGODA_FINISH_ERROR,
                             why[0] ? why : "the grammar allows no token here (the output cannot go on)", 0);
        return 1;
    }
    if (t < 0) { /* the sampler found no token: the logits row was not finite */
        pg_log(PAGODA_LOG_ERROR, "request %llu: the model produced NaN or infinite logits", (unsigned long long)r->id);
        engine_finish_choice(e, ch, PAGODA_FINISH_ERROR,
                             "the model produced NaN or infinite logits (broken weights or a numeric overflow)", 0);
        return 1;
    }
    ch->n_generated++;
    pthread_mutex_lock(&e->mu);
    e->stats.n_generated_tokens++;
    pthread_mutex_unlock(&e->mu);
    if ((!r->p.ignore_eos && e->tok && tok_is_eog(e->tok, t)) || is_stop_token(r, t)) {
        engine_finish_choice(e, ch, PAGODA_FINISH_STOP, NULL, 1);
        return 1;
    }
    int32_t k = r->p.logprobs > 0 && pk ? r->p.logprobs : 0;
    float lp = r->p.logprobs >= 0 && pk ? pk->lp : 0;
    size_t n = ch->detok ? tok_stream_push(ch->detok, t, e->text, e->cap_text) : 0;
    while (n > e->cap_text) { /* a very long token piece: grow once and retry */
        char *b = realloc(e->text, n * 2);
        if (!b) {
            engine_finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 0);
            return 1;
        }
        e->text = b, e->cap_text = n * 2;
        n = tok_stream_push(ch->detok, t, e->text, e->cap_text);
    }
    const char *out;
    size_t n_out;
    int stopped = stop_push(&ch->stop, e->text, n, &out, &n_out);
    if (stopped < 0) {
        engine_finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 0);
        return 1;
    }
    engine_emit(ch, out, n_out, t, PAGODA_FINISH_NONE, NULL, k ? pk->top_lp : NULL, k ? pk->top_tok : NULL, k, lp);
    if (stopped || (ch->g_done_at && ch->n_generated >= ch->g_done_at)) { /* a stop string, or the grammar is complete */
        engine_finish_choice(e, ch, PAGODA_FINISH_STOP, NULL, !stopped);
    } else if (ch->n_generated >= r->max_tokens || pos + 1 >= e->max_model_len) {
        /* pos + 1 tokens before t: the sequence would hold pos + 2 with t, one past the last
         * position the context allows to be computed */
        engine_finish_choice(e, ch, PAGODA_FINISH_LENGTH, NULL, 1);
    } else if (last && sched_append(e->sched, ch->seq, t)) {
        engine_finish_choice(e, ch, PAGODA_FINISH_ERROR, "out of memory", 1);
    } else {
        return 0;
    }
    return 1;
}
