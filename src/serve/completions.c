/* POST /v1/completions and /v1/chat/completions: request -> prompt tokens -> engine submit, and
 * the engine's events -> OpenAI responses. Streaming requests answer with an SSE body read by
 * MHD from a per-request buffer that the engine thread fills; the connection is suspended while
 * the buffer is empty and resumed by the next event. Non-streaming requests stay suspended until
 * the request is done, then the whole response is built on the HTTP thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "serve/server_internal.h"
#include "core/clock.h"

static int is_chat(const http_req *hr) { return hr->route == ROUTE_CHAT; }

void gen_free(http_req *hr) {
    oa_request_free(&hr->req);
    free(hr->echo);
    hr->echo = NULL;
    for (int32_t i = 0; i < hr->n_choices; i++) {
        gen_choice *c = &hr->choices[i];
        oa_buf_free(&c->text);
        for (size_t k = 0; k < c->n_lp; k++) oa_logprob_free(&c->lp[k]);
        free(c->lp);
    }
    free(hr->choices);
    hr->choices = NULL;
    hr->n_choices = 0;
    oa_buf_free(&hr->out);
    free(hr->error);
    hr->error = NULL;
}

/* ---- events (engine thread) ---- */

static int token_text(const pagoda_model *m, int32_t id, float logprob, oa_token *t) {
    char buf[128];
    size_t n = pagoda_token_text(m, id, buf, sizeof buf);
    if (n > 1 << 16) n = 1 << 16;
    if (!(t->text = malloc(n + 1))) return -1;
    if (n < sizeof buf) memcpy(t->text, buf, n);
    else pagoda_token_text(m, id, t->text, n + 1);
    t->text[n] = 0;
    t->len = n;
    t->logprob = logprob;
    return 0;
}

static int make_logprob(const pagoda_model *m, const pagoda_event *ev, oa_logprob *lp) {
    memset(lp, 0, sizeof *lp);
    if (token_text(m, ev->token, ev->logprob, &lp->tok)) return -1;
    if (ev->n_top > 0 && ev->top_tokens && ev->top_logprobs) {
        if (!(lp->top = calloc((size_t)ev->n_top, sizeof *lp->top))) return -1;
        for (int32_t k = 0; k < ev->n_top; k++) {
            if (token_text(m, ev->top_tokens[k], ev->top_logprobs[k], &lp->top[k])) return -1;
            lp->n_top = k + 1;
        }
    }
    return 0;
}

static json_t *chunk_head(const http_req *hr) {
    json_t *o = oa_response_head(hr->id, is_chat(hr) ? "chat.completion.chunk" : "text_completion", hr->created,
                                 hr->srv->name);
    if (o && hr->req.include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* One streamed choice delta. text may be NULL (none); logprobs stolen (NULL: null). */
static void emit_choice(http_req *hr, int32_t index, const char *text, size_t len, int role, json_t *logprobs,
                        const char *finish) {
    json_t *o = chunk_head(hr), *c;
    if (is_chat(hr)) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text) json_object_set_new(delta, "content", oa_json_text(text, len));
        c = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs",
                      logprobs ? logprobs : json_null(), "finish_reason", finish ? json_string(finish) : json_null());
    } else {
        c = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "text", oa_json_text(text ? text : "", text ? len : 0),
                      "logprobs", logprobs ? logprobs : json_null(), "finish_reason",
                      finish ? json_string(finish) : json_null());
    }
    if (o && c) json_array_append_new(json_object_get(o, "choices"), c);
    else json_decref(c);
    oa_sse_append(&hr->out, o);
}

static int32_t total_completion(const http_req *hr) {
    int32_t n = 0;
    for (int32_t i = 0; i < hr->n_choices; i++) n += hr->choices[i].n_completion;
    return n;
}

static void on_done(http_req *hr, double now) {
    pg_server *s = hr->srv;
    if (hr->stream) {
        if (hr->req.include_usage) {
            json_t *o = oa_response_head(hr->id, is_chat(hr) ? "chat.completion.chunk" : "text_completion", hr->created,
                                         s->name);
            if (o) json_object_set_new(o, "usage", oa_usage(hr->n_prompt, total_completion(hr), hr->n_cached));
            oa_sse_append(&hr->out, o);
        }
        oa_sse_append(&hr->out, NULL); /* data: [DONE] */
    }
    pagoda_finish_reason fin[OA_MAX_N];
    int32_t max_tok = 0;
    for (int32_t i = 0; i < hr->n_choices; i++) {
        fin[i] = hr->choices[i].finish;
        if (hr->choices[i].n_completion > max_tok) max_tok = hr->choices[i].n_completion;
    }
    double ttft = hr->t_first > 0 ? hr->t_first - hr->t0 : -1;
    double tpot = max_tok > 1 && hr->t_last > hr->t_first ? (hr->t_last - hr->t_first) / (max_tok - 1) : -1;
    metrics_observe_request(s->metrics, now - hr->t0, ttft, tpot, fin, hr->n_choices);
}

static void on_event(const pagoda_event *ev, void *user) {
    http_req *hr = user;
    pg_server *s = hr->srv;
    double now = pg_now_s();
    pthread_mutex_lock(&hr->mu);
    if (ev->n_prompt_tokens > 0) hr->n_prompt = ev->n_prompt_tokens;
    if (ev->n_cached_tokens >= 0) hr->n_cached = ev->n_cached_tokens;
    gen_choice *ch = ev->index >= 0 && ev->index < hr->n_choices ? &hr->choices[ev->index] : NULL;
    if (ch) {
        if (ev->token >= 0) {
            if (hr->t_first == 0) hr->t_first = now;
            hr->t_last = now;
        }
        if (ev->n_completion_tokens > ch->n_completion) ch->n_completion = ev->n_completion_tokens;
        /* once the client is gone (the request is being cancelled) nothing is built for it */
        const int want_lp = hr->req.logprobs >= 0 && ev->token >= 0 && !hr->http_done;
        oa_logprob lp;
        int have_lp = want_lp && make_logprob(s->model, ev, &lp) == 0;
        if (want_lp && !have_lp) oa_logprob_free(&lp);
        if (hr->http_done) {
            /* nothing to send */
        } else if (hr->stream) {
            if (ev->text_len > 0 || have_lp) {
                json_t *lpj = NULL;
                if (have_lp)
                    lpj = is_chat(hr) ? oa_logprobs_chat(&lp, 1) : oa_logprobs_completion(&lp, 1, ch->text_offset);
                emit_choice(hr, ev->index, ev->text ? ev->text : "", ev->text ? ev->text_len : 0, 0, lpj, NULL);
                ch->text_offset += ev->text_len;
            }
            if (have_lp) oa_logprob_free(&lp);
        } else {
            if (ev->text_len > 0 && ev->text) oa_buf_append(&ch->text, ev->text, ev->text_len);
            if (have_lp) {
                if (ch->n_lp == ch->cap_lp) {
                    size_t cap = ch->cap_lp ? 2 * ch->cap_lp : 16;
                    oa_logprob *p = realloc(ch->lp, cap * sizeof *p);
                    if (p) ch->lp = p, ch->cap_lp = cap;
                }
                if (ch->n_lp < ch->cap_lp) ch->lp[ch->n_lp++] = lp;
                else oa_logprob_free(&lp);
            }
        }
        if (ev->finish != PAGODA_FINISH_NONE && ch->finish == PAGODA_FINISH_NONE) {
            ch->finish = ev->finish;
            if (ev->finish == PAGODA_FINISH_ERROR && !hr->error) {
                const char *msg = ev->error ? ev->error : "generation failed";
                size_t n = strlen(msg);
                if ((hr->error = malloc(n + 1))) memcpy(hr->error, msg, n + 1);
            }
            if (hr->stream && !hr->http_done) {
                if (ev->finish == PAGODA_FINISH_ERROR)
                    oa_sse_append(&hr->out, oa_error_body(ev->error ? ev->error : "generation failed", "server_error",
                                                          NULL, NULL));
                emit_choice(hr, ev->index, is_chat(hr) ? NULL : "", 0, 0, NULL, oa_finish_reason(ev->finish));
            }
        }
    }
    int done = ev->request_done;
    if (done) {
        /* choices the engine never finished explicitly count as cancelled */
        for (int32_t i = 0; i < hr->n_choices; i++)
            if (hr->choices[i].finish == PAGODA_FINISH_NONE) hr->choices[i].finish = PAGODA_FINISH_CANCELLED;
        on_done(hr, now);
        hr->engine_done = 1;
    }
    if (hr->suspended && !hr->http_done && (hr->stream ? hr->out.len > hr->out_pos || done : done)) {
        hr->suspended = 0;
        MHD_resume_connection(hr->conn);
    }
    pthread_mutex_unlock(&hr->mu);
    if (done) {
        atomic_fetch_sub(&s->n_gen_engine, 1);
        http_req_unref(hr); /* the engine's reference */
    }
}

/* ---- streaming body (HTTP thread) ---- */

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    http_req *hr = cls;
    pthread_mutex_lock(&hr->mu);
    size_t avail = hr->out.len - hr->out_pos;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, hr->out.p + hr->out_pos, n);
        hr->out_pos += n;
        if (hr->out_pos == hr->out.len) hr->out_pos = hr->out.len = 0;
        pthread_mutex_unlock(&hr->mu);
        return (ssize_t)n;
    }
    if (hr->engine_done) {
        pthread_mutex_unlock(&hr->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* nothing yet: park the connection until the next event resumes it */
    hr->suspended = 1;
    MHD_suspend_connection(hr->conn);
    pthread_mutex_unlock(&hr->mu);
    return 0;
}

static void stream_free(void *cls) { http_req_unref(cls); }

/* ---- whole responses (HTTP thread) ---- */

static enum MHD_Result send_final(http_req *hr) {
    pg_server *s = hr->srv;
    int n_cancelled = 0;
    for (int32_t i = 0; i < hr->n_choices; i++) {
        if (hr->choices[i].finish == PAGODA_FINISH_ERROR)
            return serve_send_error(hr, 500, "server_error", NULL, NULL, "Generation failed: %s",
                                    hr->error ? hr->error : "unknown error");
        n_cancelled += hr->choices[i].finish == PAGODA_FINISH_CANCELLED;
    }
    if (n_cancelled == hr->n_choices)
        return serve_send_error(hr, 503, "server_error", NULL, "cancelled",
                                "The request was cancelled before it finished (the server is shutting down).");
    json_t *resp = oa_response_head(hr->id, is_chat(hr) ? "chat.completion" : "text_completion", hr->created, s->name);
    json_t *choices = json_object_get(resp, "choices");
    for (int32_t i = 0; resp && i < hr->n_choices; i++) {
        gen_choice *c = &hr->choices[i];
        const char *text = c->text.p ? c->text.p : "";
        json_t *lp = json_null(), *o;
        if (hr->req.logprobs >= 0) {
            json_decref(lp);
            lp = is_chat(hr) ? oa_logprobs_chat(c->lp, c->n_lp) : oa_logprobs_completion(c->lp, c->n_lp, hr->echo_len);
        }
        if (is_chat(hr)) {
            o = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", i, "message", "role", "assistant", "content",
                          oa_json_text(text, c->text.len), "logprobs", lp, "finish_reason",
                          oa_finish_reason(c->finish));
        } else {
            oa_buf full = {0};
            if (hr->echo) oa_buf_append(&full, hr->echo, hr->echo_len);
            oa_buf_append(&full, text, c->text.len);
            o = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "text", oa_json_text(full.p ? full.p : "", full.len),
                          "logprobs", lp, "finish_reason", oa_finish_reason(c->finish));
            oa_buf_free(&full);
        }
        json_array_append_new(choices, o);
    }
    if (resp) json_object_set_new(resp, "usage", oa_usage(hr->n_prompt, total_completion(hr), hr->n_cached));
    if (!resp) return serve_send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return serve_send_json(hr, 200, resp);
}

/* Non-streaming: answer if done, else park the connection until the last event resumes it. */
static enum MHD_Result wait_or_send(http_req *hr) {
    pthread_mutex_lock(&hr->mu);
    int done = hr->engine_done;
    if (!done) {
        hr->suspended = 1;
        MHD_suspend_connection(hr->conn);
    }
    pthread_mutex_unlock(&hr->mu);
    return done ? send_final(hr) : MHD_YES;
}

/* ---- building the prompt ---- */

static enum MHD_Result bad(http_req *hr, const char *param, const char *msg) {
    return serve_send_error(hr, 400, "invalid_request_error", param, NULL, "%s", msg);
}

/* pagoda_tokenize into memory of our own (malloc), so every id array here is released with free() */
static pagoda_status tokenize(const pagoda_model *m, const char *text, int add_special, int parse_special,
                              int32_t **ids, size_t *n) {
    int32_t *t = NULL;
    *ids = NULL;
    *n = 0;
    pagoda_status st = pagoda_tokenize(m, text, strlen(text), add_special, parse_special, &t, n);
    if (st) return st;
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    if (*ids) memcpy(*ids, t, *n * sizeof **ids);
    pagoda_free(t);
    if (!*ids) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    return PAGODA_OK;
}

/* 0 ok; otherwise a response was queued and *ret holds its result */
static int build_prompt(http_req *hr, int32_t **ids_out, size_t *n_out, enum MHD_Result *ret) {
    pg_server *s = hr->srv;
    const oa_request *q = &hr->req;
    int32_t *ids = NULL;
    size_t n = 0;
    if (is_chat(hr)) {
        char *text = NULL;
        pagoda_status st = pagoda_chat_render(s->model, q->messages_json, q->tools_json, 1, &text);
        if (st == PAGODA_ERR_UNSUPPORTED) {
            *ret = bad(hr, "messages",
                       "This model has no chat template, so /v1/chat/completions cannot format messages; use "
                       "/v1/completions with a plain prompt.");
            return -1;
        }
        if (st) {
            *ret = serve_send_error(hr, st == PAGODA_ERR_INVALID ? 400 : 500, "invalid_request_error", "messages", NULL,
                                    "Cannot apply the chat template: %s", pagoda_last_error());
            return -1;
        }
        st = tokenize(s->model, text, 1, 1, &ids, &n);
        pagoda_free(text);
        if (st) goto tok_fail;
        /* templates that write the BOS text themselves would get a second one from add_special */
        if (n >= 2 && s->info.bos >= 0 && ids[0] == s->info.bos && ids[1] == s->info.bos) memmove(ids, ids + 1, --n * sizeof *ids);
    } else if (q->suffix) {
        if (s->info.fim_prefix < 0 || s->info.fim_suffix < 0 || s->info.fim_middle < 0) {
            *ret = bad(hr, "suffix",
                       "'suffix' needs fill-in-the-middle tokens (FIM prefix/suffix/middle), and this model has none.");
            return -1;
        }
        int32_t *pre = NULL, *suf = NULL, *bos = NULL;
        size_t n_pre = 0, n_suf = 0, n_bos = 0;
        pagoda_status st = PAGODA_OK;
        /* [BOS if the model adds one] <fim_prefix> prompt <fim_suffix> suffix <fim_middle> */
        if (tokenize(s->model, "", 1, 0, &bos, &n_bos)) n_bos = 0;
        int add_bos = n_bos > 0 && s->info.bos >= 0 && bos[0] == s->info.bos;
        free(bos);
        if (q->prompt) st = tokenize(s->model, q->prompt, 0, 0, &pre, &n_pre);
        if (!st) st = tokenize(s->model, q->suffix, 0, 0, &suf, &n_suf);
        size_t n_p = q->prompt ? n_pre : (size_t)q->n_prompt_ids;
        if (!st && !(ids = malloc((n_p + n_suf + 4) * sizeof *ids))) st = PAGODA_ERR_NOMEM;
        if (!st) {
            if (add_bos) ids[n++] = s->info.bos;
            ids[n++] = s->info.fim_prefix;
            memcpy(ids + n, q->prompt ? pre : q->prompt_ids, n_p * sizeof *ids);
            n += n_p;
            ids[n++] = s->info.fim_suffix;
            memcpy(ids + n, suf, n_suf * sizeof *ids);
            n += n_suf;
            ids[n++] = s->info.fim_middle;
        }
        free(pre);
        free(suf);
        if (st) {
            free(ids);
            ids = NULL;
            goto tok_fail;
        }
    } else if (q->prompt_ids) {
        n = (size_t)q->n_prompt_ids;
        if (!(ids = malloc(n * sizeof *ids))) goto tok_fail;
        memcpy(ids, q->prompt_ids, n * sizeof *ids);
    } else {
        if (tokenize(s->model, q->prompt, 1, 1, &ids, &n)) goto tok_fail;
    }
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->info.n_vocab) {
            char msg[160];
            snprintf(msg, sizeof msg, "Prompt token %d (position %zu) is out of range: the vocabulary has %d tokens.",
                     ids[i], i, s->info.n_vocab);
            free(ids);
            *ret = bad(hr, "prompt", msg);
            return -1;
        }
    if (n == 0) {
        free(ids);
        *ret = bad(hr, is_chat(hr) ? "messages" : "prompt", "The prompt is empty (it encodes to 0 tokens).");
        return -1;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
tok_fail:
    *ret = serve_send_error(hr, 400, "invalid_request_error", is_chat(hr) ? "messages" : "prompt", NULL,
                            "Cannot tokenize the prompt: %s", *pagoda_last_error() ? pagoda_last_error() : "error");
    return -1;
}

/* ---- the request ---- */

static enum MHD_Result gen_start(http_req *hr) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    oa_error err;
    if (oa_request_parse(hr->body, hr->body_len, is_chat(hr) ? OA_CHAT : OA_COMPLETIONS, &hr->req, &err))
        return serve_send_error(hr, (unsigned)err.status, err.type, err.param, NULL, "%s", err.message);
    free(hr->body);
    hr->body = NULL;
    hr->body_len = hr->body_cap = 0;
    oa_request *q = &hr->req;
    if (q->model && strcmp(q->model, s->name) != 0 && strcmp(q->model, s->model_path) != 0)
        return serve_send_error(hr, 404, "invalid_request_error", "model", "model_not_found",
                                "The model '%.200s' does not exist (this server serves '%s').", q->model, s->name);
    if (atomic_load(&s->draining))
        return serve_send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");

    enum MHD_Result ret = MHD_NO;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (build_prompt(hr, &ids, &n_ids, &ret)) return ret;
    if (q->echo) {
        if (q->prompt) {
            hr->echo_len = strlen(q->prompt);
            hr->echo = malloc(hr->echo_len + 1);
            if (hr->echo) memcpy(hr->echo, q->prompt, hr->echo_len + 1);
        } else {
            char *t = NULL;
            size_t len = 0;
            if (pagoda_detokenize(s->model, q->prompt_ids, (size_t)q->n_prompt_ids, 0, &t, &len) == PAGODA_OK &&
                (hr->echo = malloc(len + 1))) {
                memcpy(hr->echo, t, len);
                hr->echo[len] = 0;
                hr->echo_len = len;
            }
            pagoda_free(t);
        }
    }
    hr->stream = q->stream;
    hr->n_choices = q->n;
    if (!(hr->choices = calloc((size_t)q->n, sizeof *hr->choices))) {
        free(ids);
        return serve_send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    hr->created = (int64_t)time(NULL);
    snprintf(hr->id, sizeof hr->id, "%s-%016llx%08llx", is_chat(hr) ? "chatcmpl" : "cmpl",
             (unsigned long long)s->id_nonce, (unsigned long long)(atomic_fetch_add(&s->next_id, 1) & 0xffffffffu));
    if (hr->stream) {
        /* the first chunks go out at once: the role (chat), or the echoed prompt (completions) */
        for (int32_t i = 0; i < hr->n_choices; i++) {
            if (is_chat(hr)) emit_choice(hr, i, "", 0, 1, NULL, NULL);
            else if (hr->echo) emit_choice(hr, i, hr->echo, hr->echo_len, 0, NULL, NULL);
            hr->choices[i].text_offset = hr->echo_len;
        }
    }

    pagoda_request pr;
    pagoda_request_default(&pr);
    pr.prompt = NULL;
    pr.prompt_tokens = ids;
    pr.n_prompt_tokens = (int32_t)n_ids;
    pagoda_sampling_default(&pr.sampling);
    pr.sampling.temperature = q->temperature;
    pr.sampling.top_k = q->top_k > 0 ? q->top_k : 0;
    pr.sampling.top_p = q->top_p;
    pr.sampling.min_p = q->min_p;
    pr.sampling.repetition_penalty = q->repetition_penalty;
    pr.sampling.presence_penalty = q->presence_penalty;
    pr.sampling.frequency_penalty = q->frequency_penalty;
    pr.sampling.seed = q->seed;
    pr.max_tokens = q->max_tokens > 0 ? q->max_tokens : (is_chat(hr) ? 0 : 16);
    pr.stop = (const char *const *)q->stop;
    pr.n_stop = q->n_stop;
    pr.stop_token_ids = q->stop_token_ids;
    pr.n_stop_token_ids = q->n_stop_token_ids;
    pr.ignore_eos = q->ignore_eos;
    pr.skip_special = q->skip_special;
    pr.n = q->n;
    pr.logprobs = q->logprobs;
    pr.on_event = on_event;
    pr.user = hr;

    http_req_ref(hr); /* the engine's reference, released on request_done */
    atomic_fetch_add(&s->n_gen_engine, 1);
    uint64_t id = 0;
    pagoda_status st = pagoda_engine_submit(s->engine, &pr, &id);
    free(ids);
    if (st) {
        atomic_fetch_sub(&s->n_gen_engine, 1);
        http_req_unref(hr);
        const char *e = pagoda_last_error();
        switch (st) {
        case PAGODA_ERR_BUSY:
            return serve_send_error(hr, 429, "rate_limit_error", NULL, "queue_full",
                                    "The server is busy: its request queue is full. Retry later%s%s", *e ? ". " : ".",
                                    e);
        case PAGODA_ERR_INVALID:
        case PAGODA_ERR_UNSUPPORTED:
            return serve_send_error(hr, 400, "invalid_request_error", NULL, NULL, "%s", *e ? e : "invalid request");
        default:
            return serve_send_error(hr, 500, "server_error", NULL, NULL, "The engine could not take the request: %s",
                                    *e ? e : pagoda_status_name(st));
        }
    }
    pthread_mutex_lock(&hr->mu);
    hr->submitted = 1;
    hr->engine_id = id;
    pthread_mutex_unlock(&hr->mu);
    hr->gen_counted = 1;
    atomic_fetch_add(&s->n_gen_http, 1);
    serve_live_add(hr);

    if (!hr->stream) return wait_or_send(hr);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, hr, stream_free);
    if (!r) return MHD_NO; /* on_completed cancels the request */
    http_req_ref(hr);      /* the response's reference, released by stream_free */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    hr->status = 200;
    metrics_observe_http(s->metrics, 200);
    enum MHD_Result qr = MHD_queue_response(hr->conn, 200, r);
    MHD_destroy_response(r);
    return qr;
}

enum MHD_Result gen_handle(http_req *hr) {
    if (!hr->gen_started) return gen_start(hr);
    if (!hr->submitted || hr->stream) return MHD_NO; /* not reached */
    return wait_or_send(hr);
}
