/* POST /infill (see infill.h). The request runs on the engine like a completion; its events are
 * taken as they come (also when the answer is one JSON object) so that t_max_predict_ms can end
 * it: once a newline was generated and that much time has passed since the first token, the
 * request is cancelled and answered as stopped by the limit, as llama-server does. */
#include "serve/infill.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "serve/infill_request.h"
#include "serve/openai_response.h"
#include "serve/model_route.h"
#include "serve/send.h"

enum { LLAMA_N_BATCH = 2048 }; /* llama-server's default --batch-size: the FIM prefix/suffix budget */

typedef struct {
    infill_request q;
    int32_t *prompt;      /* the laid-out prompt [n_prompt] */
    size_t n_prompt;
    oa_buf content;
    int32_t *tokens;      /* generated ids (return_tokens) */
    size_t n_tokens, cap_tokens;
    int32_t n_predicted;
    int has_new_line, limit_hit, eos_hit, done_sent;
    double t_start, t_first, t_last;
} infill_state;

static void state_free(void *p) {
    infill_state *st = p;
    if (!st) return;
    infill_request_free(&st->q);
    free(st->prompt);
    oa_buf_free(&st->content);
    free(st->tokens);
    free(st);
}

static int tokenize_cb(void *user, const char *text, int parse_special, int32_t **ids, size_t *n) {
    int32_t *t = NULL;
    if (pagoda_tokenize(user, text, strlen(text), 0, parse_special, &t, n)) return -1;
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    if (*ids && *n) memcpy(*ids, t, *n * sizeof **ids);
    pagoda_free(t);
    return *ids ? 0 : -1;
}

/* whether the model adds a BOS when it tokenizes with special tokens */
static int model_adds_bos(const http_req *hr) {
    int32_t *t = NULL;
    size_t n = 0;
    int yes = 0;
    if (pagoda_tokenize(hr->lease.model, "", 0, 1, 0, &t, &n) == PAGODA_OK) yes = n > 0 && hr->lease.info->bos >= 0 && t[0] == hr->lease.info->bos;
    pagoda_free(t);
    return yes;
}

static const char *stop_type(const http_req *hr, const infill_state *st) {
    if (st->limit_hit) return "limit";
    pagoda_finish_reason f = hr->n_choices > 0 ? hr->choices[0].finish : PAGODA_FINISH_NONE;
    if (f == PAGODA_FINISH_LENGTH) return "limit";
    if (f == PAGODA_FINISH_STOP) return st->eos_hit ? "eos" : "word";
    return "none";
}

/* The final object (llama-server's completion result, non-OpenAI shape). */
static json_t *final_json(http_req *hr, infill_state *st) {
    req_usage u;
    req_get_usage(hr, &u, NULL, 0);
    double now = pg_now_s();
    double t_first = st->t_first > 0 ? st->t_first : now, t_last = st->t_last > 0 ? st->t_last : now;
    double prompt_ms = (t_first - st->t_start) * 1e3, pred_ms = (t_last - t_first) * 1e3;
    /* the engine's count (events without text are not all seen here), what was answered when cut */
    int32_t prompt_n = u.n_prompt - u.n_cached, pred_n = st->limit_hit ? st->n_predicted : u.n_completion;
    if (st->eos_hit && pred_n > 0 && !st->limit_hit) pred_n--; /* the end-of-generation token is no text */
    json_t *timings = json_pack("{s:i, s:f, s:f, s:f, s:i, s:f, s:f, s:f}", "prompt_n", prompt_n, "prompt_ms", prompt_ms,
                                "prompt_per_token_ms", prompt_n > 0 ? prompt_ms / prompt_n : 0.0, "prompt_per_second",
                                prompt_ms > 0 ? 1e3 * prompt_n / prompt_ms : 0.0, "predicted_n", pred_n, "predicted_ms",
                                pred_ms, "predicted_per_token_ms", pred_n > 0 ? pred_ms / pred_n : 0.0,
                                "predicted_per_second", pred_ms > 0 ? 1e3 * pred_n / pred_ms : 0.0);
    const pagoda_request *pr = &st->q.pr;
    json_t *stops = json_array();
    for (int32_t i = 0; i < pr->n_stop; i++) json_array_append_new(stops, json_string(pr->stop[i]));
    json_t *settings = json_pack("{s:i, s:I, s:f, s:i, s:f, s:f, s:i, s:f, s:f, s:f, s:o, s:b, s:b, s:I}", "n_predict",
                                 pr->max_tokens > 0 ? pr->max_tokens : -1, "seed", (json_int_t)pr->sampling.seed,
                                 "temperature", pr->sampling.temperature, "top_k", pr->sampling.top_k, "top_p",
                                 pr->sampling.top_p, "min_p", pr->sampling.min_p, "repeat_last_n", pr->penalty_last_n,
                                 "repeat_penalty", pr->sampling.repetition_penalty, "presence_penalty",
                                 pr->sampling.presence_penalty, "frequency_penalty", pr->sampling.frequency_penalty,
                                 "stop", stops, "ignore_eos", pr->ignore_eos, "stream", st->q.stream, "t_max_predict_ms",
                                 (json_int_t)st->q.t_max_predict_ms);
    char *ptext = NULL;
    size_t plen = 0;
    if (pagoda_detokenize(hr->lease.model, st->prompt, st->n_prompt, 0, &ptext, &plen)) ptext = NULL, plen = 0;
    json_t *toks = json_array();
    for (size_t i = 0; st->q.return_tokens && !st->q.stream && i < st->n_tokens; i++)
        json_array_append_new(toks, json_integer(st->tokens[i]));
    const char *stype = stop_type(hr, st);
    json_t *o = json_pack("{s:i, s:o, s:o, s:i, s:b, s:s, s:i, s:i, s:o, s:o, s:b, s:b, s:s, s:s, s:i, s:o}", "index", 0,
                          "content", oa_json_text(st->q.stream ? "" : (st->content.p ? st->content.p : ""),
                                                  st->q.stream ? 0 : st->content.len),
                          "tokens", toks, "id_slot", 0, "stop", 1, "model", hr->lease.name, "tokens_predicted", pred_n,
                          "tokens_evaluated", u.n_prompt, "generation_settings", settings, "prompt",
                          oa_json_text(ptext ? ptext : "", plen), "has_new_line", st->has_new_line, "truncated", 0,
                          "stop_type", stype, "stopping_word",
                          !strcmp(stype, "word") && pr->n_stop == 1 ? pr->stop[0] : "", "tokens_cached", u.n_prompt + pred_n,
                          "timings", timings);
    pagoda_free(ptext);
    return o;
}

/* response_fields: only the fields named by their paths ("timings/prompt_n"), keyed so (as
 * llama-server's json_get_nested_values); o stolen. */
static json_t *pick_fields(const infill_request *q, json_t *o) {
    if (!q->n_fields || !o) return o;
    json_t *out = json_object();
    for (size_t i = 0; out && i < q->n_fields; i++) {
        const json_t *v = o;
        char path[256];
        snprintf(path, sizeof path, "%s", q->fields[i]);
        for (char *save = NULL, *part = strtok_r(path, "/", &save); v && part; part = strtok_r(NULL, "/", &save))
            v = json_is_object(v) ? json_object_get(v, part) : NULL;
        if (v) json_object_set(out, q->fields[i], (json_t *)v);
    }
    json_decref(o);
    return out;
}

/* Takes the events queued so far: content, tokens, the time limit. Streamed: one SSE object per
 * event with text. */
static void take_events(http_req *hr, infill_state *st, const serve_event *events) {
    for (const serve_event *e = events; e; e = e->next) {
        double now = pg_now_s();
        if (e->token >= 0) {
            if (st->t_first == 0) st->t_first = now;
            st->t_last = now;
            if (e->finish == PAGODA_FINISH_NONE) st->n_predicted++;
            else if (pagoda_token_is_eog(hr->lease.model, e->token)) st->eos_hit = 1;
            else st->n_predicted++;
            if (st->q.return_tokens || st->q.stream) {
                if (st->n_tokens == st->cap_tokens) {
                    size_t cap = st->cap_tokens ? 2 * st->cap_tokens : 64;
                    int32_t *p = realloc(st->tokens, cap * sizeof *p);
                    if (p) st->tokens = p, st->cap_tokens = cap;
                }
                if (st->n_tokens < st->cap_tokens) st->tokens[st->n_tokens++] = e->token;
            }
        }
        if (st->limit_hit) continue; /* cancelled: what came after the limit is not answered */
        if (e->text_len) {
            if (memchr(e->text, '\n', e->text_len)) st->has_new_line = 1;
            if (st->q.stream) {
                json_t *tok = json_array();
                if (e->token >= 0) json_array_append_new(tok, json_integer(e->token));
                sse_append(&hr->out, json_pack("{s:i, s:o, s:o, s:b, s:i, s:i}", "index", 0, "content",
                                               oa_json_text(e->text, e->text_len), "tokens", tok, "stop", 0, "id_slot", 0,
                                               "tokens_predicted", st->n_predicted));
            } else {
                oa_buf_append(&st->content, e->text, e->text_len);
            }
        }
        if (st->q.t_max_predict_ms > 0 && st->has_new_line && st->t_first > 0 && e->finish == PAGODA_FINISH_NONE &&
            (now - st->t_first) * 1e3 > (double)st->q.t_max_predict_ms) {
            st->limit_hit = 1;
            req_cancel_engine(hr);
        }
    }
}

static int stream_fill(http_req *hr) {
    infill_state *st = hr->payload;
    serve_event *events = NULL;
    switch (req_take(hr, &events)) {
    case REQ_SUSPENDED: return 0;
    case REQ_EVENTS:
        if (!events) { /* the watchdog's probe */
            oa_buf_append(&hr->out, ": ping\n\n", 8);
            return 1;
        }
        take_events(hr, st, events);
        req_events_free(events);
        return 1;
    case REQ_DRAINED: break;
    }
    if (st->done_sent) return -1;
    st->done_sent = 1;
    sse_append(&hr->out, pick_fields(&st->q, final_json(hr, st)));
    return 1;
}

/* Not streamed: events are taken as they come (for the time limit); the answer once all are in. */
static enum MHD_Result wait_or_send(http_req *hr) {
    infill_state *st = hr->payload;
    for (;;) {
        serve_event *events = NULL;
        req_take_result r = req_take(hr, &events);
        if (r == REQ_SUSPENDED) return MHD_YES;
        if (r == REQ_DRAINED) break;
        take_events(hr, st, events);
        req_events_free(events);
    }
    req_usage u;
    char error[256];
    req_get_usage(hr, &u, error, sizeof error);
    if (u.n_error) return send_error(hr, 500, "server_error", NULL, NULL, "Generation failed: %s", error);
    if (u.n_cancelled && !st->limit_hit)
        return send_error(hr, 503, "server_error", NULL, "cancelled", "The request was cancelled before it finished.");
    json_t *o = pick_fields(&st->q, final_json(hr, st));
    if (!o) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return send_json(hr, 200, o);
}

static enum MHD_Result start(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    const pagoda_model_info *mi = hr->lease.info;
    char missing[96] = "";
    if (mi->fim_prefix < 0) strcat(missing, "prefix token is missing. ");
    if (mi->fim_suffix < 0) strcat(missing, "suffix token is missing. ");
    if (mi->fim_middle < 0) strcat(missing, "middle token is missing. ");
    if (*missing)
        return send_error(hr, 400, "invalid_request_error", NULL, "not_supported",
                          "Infill is not supported by this model: %s(it has no fill-in-the-middle tokens)", missing);
    infill_state *st = calloc(1, sizeof *st);
    if (!st) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    hr->payload = st;
    hr->payload_free = state_free;
    infill_error err;
    if (infill_request_parse(hr->body, hr->body_len, &st->q, &err))
        return send_error(hr, (unsigned)err.status, "invalid_request_error", *err.param ? err.param : NULL, NULL, "%s",
                          err.message);
    free(hr->body);
    hr->body = NULL;
    hr->body_len = hr->body_cap = 0;
    if (atomic_load(&s->draining))
        return send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");
    pagoda_engine_stats es;
    pagoda_engine_get_stats(hr->lease.engine, &es);
    const infill_layout L = {.pre = mi->fim_prefix, .suf = mi->fim_suffix, .mid = mi->fim_middle, .rep = mi->fim_repo,
                             .sep = mi->fim_sep, .bos = mi->bos, .add_bos = model_adds_bos(hr), .spm = 0,
                             .n_ctx = es.max_model_len, .n_batch = LLAMA_N_BATCH, .n_predict = -1};
    if (infill_build_prompt(&L, &st->q, tokenize_cb, hr->lease.model, &st->prompt, &st->n_prompt))
        return send_error(hr, 400, "invalid_request_error", NULL, NULL, "Cannot tokenize the request: %s",
                          *pagoda_last_error() ? pagoda_last_error() : "out of memory");
    pagoda_request *pr = &st->q.pr;
    pr->prompt = NULL;
    pr->prompt_tokens = st->prompt;
    pr->n_prompt_tokens = (int32_t)st->n_prompt;
    /* the repository tokens end generation, as llama.cpp counts them end-of-generation tokens */
    int32_t stop_ids[2];
    pr->n_stop_token_ids = 0;
    if (mi->fim_sep >= 0) stop_ids[pr->n_stop_token_ids++] = mi->fim_sep;
    if (mi->fim_repo >= 0) stop_ids[pr->n_stop_token_ids++] = mi->fim_repo;
    pr->stop_token_ids = pr->n_stop_token_ids ? stop_ids : NULL;
    pr->logprobs = st->q.return_tokens || st->q.stream ? 0 : -1; /* token events also without text */
    /* until the context is full when n_predict is absent or -1 */
    if (pr->max_tokens <= 0 && es.max_model_len > 0 && (int64_t)st->n_prompt >= es.max_model_len)
        return send_error(hr, 400, "invalid_request_error", "input_prefix", NULL,
                          "The infill prompt has %zu tokens, over this model's context of %d tokens.", st->n_prompt,
                          es.max_model_len);
    st->t_start = pg_now_s();
    pagoda_status rc = req_submit(hr, pr, 1);
    pr->stop_token_ids = NULL;
    pr->n_stop_token_ids = 0;
    if (rc) {
        const char *e = pagoda_last_error();
        if (rc == PAGODA_ERR_BUSY)
            return send_error(hr, 429, "rate_limit_error", NULL, "queue_full", "The server is busy: %s", e);
        return send_error(hr, rc == PAGODA_ERR_INVALID ? 400 : 500, rc == PAGODA_ERR_INVALID ? "invalid_request_error" : "server_error",
                          NULL, NULL, "%s", *e ? e : pagoda_status_name(rc));
    }
    if (st->q.stream) return send_sse_stream(hr, stream_fill);
    return wait_or_send(hr);
}

enum MHD_Result infill_handle(http_req *hr) {
    if (!hr->gen_started) return start(hr);
    infill_state *st = hr->payload;
    if (!hr->submitted || !st || st->q.stream) return MHD_NO; /* not reached */
    return wait_or_send(hr);
}
