/* POST /v1/completions and /v1/chat/completions (see completions.h). The body is parsed once into
 * the engine's request (openai_request.c); the prompt is built here (chat template, fill in the
 * middle, tokenization) and the request submitted (request.c). The engine's events come back
 * through the request's queue and every byte of the answer is built on the HTTP thread that
 * takes them: streamed requests as SSE chunks, pulled by MHD (send_sse_stream), the others as
 * one JSON response once the request is done. */
#include "serve/completions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "serve/model_route.h"
#include "serve/openai_request.h"
#include "serve/openai_response.h"
#include "serve/send.h"
#include "serve/tool_calls.h"
#include "serve/tool_grammar.h"

/* One choice, as the HTTP side builds it. */
typedef struct {
    oa_buf text;        /* non-streamed: the text so far */
    oa_logprob *lp;     /* non-streamed: [n_lp] */
    size_t n_lp, cap_lp;
    size_t text_offset; /* streamed completions: bytes sent so far (for logprobs offsets) */
    int finished;       /* streamed: its finish chunk went out */
    int32_t stop_index; /* streamed: the stop string that ended it (-1: none) */
    tc_parser *tc;      /* streamed chat with tools: the generated text -> content and tool calls */
} gen_choice;

/* One prompt of the request (chat: the one built from the messages). */
typedef struct {
    int32_t *ids;       /* its tokens (owned) */
    size_t n_ids;
    char *echo;         /* completions with echo: the prompt text */
    size_t echo_len;
    oa_logprob *lp;     /* echo with logprobs: its tokens' logprobs [n_lp], as the engine reports them */
    size_t n_lp, cap_lp;
    int echo_sent;      /* streamed: its choices' echo chunks went out */
} gen_prompt;

/* The endpoint's state of one request (hr->payload). */
typedef struct {
    oa_request q;       /* parsed in place; q.pr is what gets submitted */
    int chat;
    char id[48];
    int64_t created;
    gen_prompt *prompts; /* [n_prompts]; prompt i's choices are i * q.pr.n .. (i + 1) * q.pr.n - 1 */
    int32_t n_prompts;
    int echo_lp;        /* echo with logprobs: the prompt's tokens come first in the logprobs */
    gen_choice *choices; /* [n_choices] */
    int32_t n_choices;
    int trailer_sent;   /* streamed: usage and [DONE] went out */
    tc_config tools;    /* chat with tools: how calls are parsed (format NONE: not at all) */
    char **tool_names;  /* owned (one block): tools.tool_names */
    const char *triggers[2]; /* tool_choice auto: q.pr.grammar_triggers (static strings) */
    gen_dialect dialect; /* stream NULL: OpenAI's own shape */
} gen;

static void gen_free(void *p) {
    gen *g = p;
    if (!g) return;
    oa_request_free(&g->q);
    for (int32_t i = 0; i < g->n_prompts; i++) {
        gen_prompt *p = &g->prompts[i];
        free(p->ids);
        free(p->echo);
        for (size_t k = 0; k < p->n_lp; k++) oa_logprob_free(&p->lp[k]);
        free(p->lp);
    }
    free(g->prompts);
    for (int32_t i = 0; i < g->n_choices; i++) {
        gen_choice *c = &g->choices[i];
        oa_buf_free(&c->text);
        for (size_t k = 0; k < c->n_lp; k++) oa_logprob_free(&c->lp[k]);
        free(c->lp);
        tc_parser_destroy(c->tc);
    }
    free(g->choices);
    free(g->tool_names);
    if (g->dialect.state_free) g->dialect.state_free(g->dialect.state);
    free(g);
}

/* ---- tokens as text (for logprobs) ---- */

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

static int make_logprob(const pagoda_model *m, const serve_event *e, oa_logprob *lp) {
    memset(lp, 0, sizeof *lp);
    if (token_text(m, e->token, e->logprob, &lp->tok)) return -1;
    if (e->n_top < 0) lp->n_top = -1; /* the prompt's first token: no logprobs */
    if (e->n_top > 0) {
        if (!(lp->top = calloc((size_t)e->n_top, sizeof *lp->top))) return -1;
        for (int32_t k = 0; k < e->n_top; k++) {
            if (token_text(m, e->top_tokens[k], e->top_logprobs[k], &lp->top[k])) return -1;
            lp->n_top = k + 1;
        }
    }
    return 0;
}

/* 1 with *lp filled (release with oa_logprob_free) if the request wants logprobs for e */
static int event_logprob(const http_req *hr, const gen *g, const serve_event *e, oa_logprob *lp) {
    if (g->q.pr.logprobs < 0 || e->token < 0) return 0;
    if (make_logprob(hr->lease.model, e, lp) == 0) return 1;
    oa_logprob_free(lp);
    return 0;
}

/* Appends lp to a growable array (released when there is no room). */
static void lp_push(oa_logprob **a, size_t *n, size_t *cap, oa_logprob *lp) {
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        oa_logprob *p = realloc(*a, c * sizeof *p);
        if (p) *a = p, *cap = c;
    }
    if (*n < *cap) (*a)[(*n)++] = *lp;
    else oa_logprob_free(lp);
}

/* A prompt token's logprob (echo with logprobs) into its prompt. 1 if e was one. */
static int take_prompt_event(http_req *hr, gen *g, const serve_event *e) {
    if (e->prompt_pos < 0) return 0;
    int32_t pi = g->q.pr.n > 0 ? e->index / g->q.pr.n : 0;
    if (pi < 0 || pi >= g->n_prompts) return 1;
    gen_prompt *p = &g->prompts[pi];
    oa_logprob lp;
    if (event_logprob(hr, g, e, &lp)) lp_push(&p->lp, &p->n_lp, &p->cap_lp, &lp);
    return 1;
}

/* ---- streamed answers ---- */

static gen_info info_of(const http_req *hr, const gen *g) {
    int32_t n_prompt = 0; /* (dialects are chat: one prompt) */
    for (int32_t i = 0; i < g->n_prompts; i++) n_prompt += (int32_t)g->prompts[i].n_ids;
    return (gen_info){.id = g->id, .created = g->created, .model = hr->lease.name, .n_prompt = n_prompt};
}

/* One chunk, error object or (NULL) the end of the stream, in the request's dialect. */
static void out_event(http_req *hr, gen *g, json_t *obj) {
    if (!g->dialect.stream) {
        sse_append(&hr->out, obj);
        return;
    }
    gen_info info = info_of(hr, g);
    g->dialect.stream(g->dialect.state, &info, obj, &hr->out);
}

/* A dialect's choice: "stop_reason" is the stop string that ended it (see completions.h). */
static void add_stop_reason(const gen *g, json_t *choice, int32_t stop_index) {
    if (g->dialect.stream && choice && stop_index >= 0 && stop_index < g->q.pr.n_stop)
        json_object_set_new(choice, "stop_reason", json_string(g->q.stop[stop_index]));
}

static json_t *chunk_head(const http_req *hr, const gen *g) {
    json_t *o = oa_response_head(g->id, g->chat ? "chat.completion.chunk" : "text_completion", g->created,
                                 hr->lease.name);
    if (o && g->q.include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* One streamed choice delta into hr->out. text may be NULL (none); logprobs stolen (NULL: null). */
static void emit_choice(http_req *hr, gen *g, int32_t index, const char *text, size_t len, int role,
                        json_t *logprobs, const char *finish) {
    json_t *o = chunk_head(hr, g), *c;
    if (g->chat) {
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
    if (finish) add_stop_reason(g, c, g->choices[index].stop_index);
    if (o && c) json_array_append_new(json_object_get(o, "choices"), c);
    else json_decref(c);
    out_event(hr, g, o);
}

/* A streamed tool-call delta: {"tool_calls": [{"index", "id", "type", "function": {"name",
 * "arguments"}}]} for a call's start, {"tool_calls": [{"index", "function": {"arguments"}}]} for
 * an argument fragment. logprobs stolen (NULL: null). */
static void emit_tool_delta(http_req *hr, gen *g, int32_t index, const tc_delta *d, json_t *logprobs) {
    json_t *o = chunk_head(hr, g), *call;
    if (d->kind == TC_DELTA_CALL_START)
        call = json_pack("{s:i, s:s, s:s, s:{s:o, s:s}}", "index", d->index, "id", d->id, "type", "function", "function",
                         "name", oa_json_text(d->text, d->len), "arguments", "");
    else
        call = json_pack("{s:i, s:{s:o}}", "index", d->index, "function", "arguments", oa_json_text(d->text, d->len));
    json_t *c = json_pack("{s:i, s:{s:[o]}, s:o, s:n}", "index", index, "delta", "tool_calls", call, "logprobs",
                          logprobs ? logprobs : json_null(), "finish_reason");
    if (o && c) json_array_append_new(json_object_get(o, "choices"), c);
    else json_decref(c);
    out_event(hr, g, o);
}

/* The parser's deltas as chunks; the first carries lpj (stolen). 1 if any went out. */
static int emit_tool_deltas(http_req *hr, gen *g, int32_t index, json_t **lpj) {
    const tc_delta *d;
    size_t n = tc_parser_take(g->choices[index].tc, &d);
    for (size_t i = 0; i < n; i++) {
        if (d[i].kind == TC_DELTA_CONTENT) emit_choice(hr, g, index, d[i].text, d[i].len, 0, *lpj, NULL);
        else emit_tool_delta(hr, g, index, &d[i], *lpj);
        *lpj = NULL;
    }
    return n > 0;
}

/* Streamed chat with tools: the text goes through the choice's tool-call parser. */
static void stream_event_tools(http_req *hr, gen *g, const serve_event *e, int have_lp, oa_logprob *lp) {
    gen_choice *ch = &g->choices[e->index];
    json_t *lpj = have_lp ? oa_logprobs_chat(lp, 1) : NULL;
    if (e->text_len > 0 && tc_parser_feed(ch->tc, e->text, e->text_len))
        out_event(hr, g, oa_error_body("out of memory: part of the response was lost", "server_error", NULL, NULL));
    emit_tool_deltas(hr, g, e->index, &lpj);
    if (lpj) emit_choice(hr, g, e->index, NULL, 0, 0, lpj, NULL); /* logprobs of text held back */
    if (e->finish != PAGODA_FINISH_NONE && !ch->finished) {
        ch->finished = 1;
        ch->stop_index = e->stop_index;
        tc_parser_finish(ch->tc);
        emit_tool_deltas(hr, g, e->index, &lpj);
        if (e->finish == PAGODA_FINISH_ERROR) out_event(hr, g, oa_error_body(e->error, "server_error", NULL, NULL));
        const char *finish = oa_finish_reason(e->finish);
        if (e->finish == PAGODA_FINISH_STOP && tc_parser_n_calls(ch->tc) > 0 && tc_parser_calls_valid(ch->tc))
            finish = "tool_calls";
        emit_choice(hr, g, e->index, NULL, 0, 0, NULL, finish);
    }
}

/* Streamed echo with logprobs: once prompt pi's tokens are all in, its choices' first chunks
 * (the prompt's text and logprobs). */
static void stream_echo(http_req *hr, gen *g, int32_t pi) {
    gen_prompt *p = &g->prompts[pi];
    if (p->echo_sent) return;
    p->echo_sent = 1;
    for (int32_t j = 0; j < g->q.pr.n; j++) {
        int32_t i = pi * g->q.pr.n + j;
        json_t *lpj = oa_logprobs_completion(p->lp, p->n_lp, 0);
        emit_choice(hr, g, i, p->echo ? p->echo : "", p->echo_len, 0, lpj, NULL);
    }
}

static void stream_event(http_req *hr, gen *g, const serve_event *e) {
    if (e->index < 0 || e->index >= g->n_choices) return;
    if (take_prompt_event(hr, g, e)) {
        if (e->prompt_last) stream_echo(hr, g, e->index / g->q.pr.n);
        return;
    }
    /* the prompt's tokens are all in before anything generated (or a failure) */
    if (g->echo_lp) stream_echo(hr, g, e->index / g->q.pr.n);
    gen_choice *ch = &g->choices[e->index];
    oa_logprob lp;
    const int have_lp = event_logprob(hr, g, e, &lp);
    if (ch->tc) {
        stream_event_tools(hr, g, e, have_lp, &lp);
        if (have_lp) oa_logprob_free(&lp);
        return;
    }
    if (e->text_len > 0 || have_lp) {
        json_t *lpj = NULL;
        if (have_lp) lpj = g->chat ? oa_logprobs_chat(&lp, 1) : oa_logprobs_completion(&lp, 1, ch->text_offset);
        emit_choice(hr, g, e->index, e->text, e->text_len, 0, lpj, NULL);
        ch->text_offset += e->text_len;
    }
    if (have_lp) oa_logprob_free(&lp);
    if (e->finish != PAGODA_FINISH_NONE && !ch->finished) {
        ch->finished = 1;
        ch->stop_index = e->stop_index;
        if (e->finish == PAGODA_FINISH_ERROR) out_event(hr, g, oa_error_body(e->error, "server_error", NULL, NULL));
        emit_choice(hr, g, e->index, g->chat ? NULL : "", 0, 0, NULL, oa_finish_reason(e->finish));
    }
}

/* usage (if asked for) and data: [DONE] */
static void stream_trailer(http_req *hr, gen *g) {
    req_usage u;
    req_get_usage(hr, &u, NULL, 0);
    if (u.events_lost)
        out_event(hr, g, oa_error_body("out of memory: part of the response was lost", "server_error", NULL, NULL));
    if (u.overflow) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "The client did not read the stream: more than %zu bytes were waiting to be sent, so the "
                 "request was cancelled (the server's --max-unsent-bytes).",
                 hr->srv->cfg.max_unsent_bytes);
        out_event(hr, g, oa_error_body(msg, "server_error", NULL, "stream_not_read"));
    }
    if (g->q.include_usage) {
        json_t *o = oa_response_head(g->id, g->chat ? "chat.completion.chunk" : "text_completion", g->created,
                                     hr->lease.name);
        if (o) json_object_set_new(o, "usage", oa_usage(u.n_prompt, u.n_completion, u.n_cached));
        out_event(hr, g, o);
    }
    out_event(hr, g, NULL);
}

static int stream_fill(http_req *hr) {
    gen *g = hr->payload;
    serve_event *events = NULL;
    switch (req_take(hr, &events)) {
    case REQ_SUSPENDED: return 0;
    case REQ_EVENTS:
        if (!events) { /* the watchdog's probe: a comment, which SSE clients ignore */
            oa_buf_append(&hr->out, ": ping\n\n", 8);
            return 1;
        }
        for (const serve_event *e = events; e; e = e->next) stream_event(hr, g, e);
        req_events_free(events);
        return 1;
    case REQ_DRAINED: break;
    }
    if (g->trailer_sent) return -1;
    g->trailer_sent = 1;
    stream_trailer(hr, g);
    return 1;
}

/* ---- whole answers ---- */

static void collect_event(http_req *hr, gen *g, const serve_event *e) {
    if (e->index < 0 || e->index >= g->n_choices) return;
    if (take_prompt_event(hr, g, e)) return;
    gen_choice *ch = &g->choices[e->index];
    if (e->text_len > 0) oa_buf_append(&ch->text, e->text, e->text_len);
    oa_logprob lp;
    if (event_logprob(hr, g, e, &lp)) lp_push(&ch->lp, &ch->n_lp, &ch->cap_lp, &lp);
}

/* Completions logprobs of choice i: with echo, the prompt's tokens first (offsets from 0). */
static json_t *completion_logprobs(const gen *g, int32_t i) {
    const gen_choice *c = &g->choices[i];
    const gen_prompt *p = &g->prompts[i / g->q.pr.n];
    if (!g->echo_lp) return oa_logprobs_completion(c->lp, c->n_lp, p->echo_len);
    oa_logprob *all = malloc((p->n_lp + c->n_lp + 1) * sizeof *all); /* shallow copies: read only */
    if (!all) return NULL;
    if (p->n_lp) memcpy(all, p->lp, p->n_lp * sizeof *all);
    if (c->n_lp) memcpy(all + p->n_lp, c->lp, c->n_lp * sizeof *all);
    json_t *o = oa_logprobs_completion(all, p->n_lp + c->n_lp, 0);
    free(all);
    return o;
}

/* The id generator's seed of choice i: distinct per request and choice. */
static uint64_t call_id_seed(const pg_server *s, const gen *g, int32_t i) {
    uint64_t h = s->id_nonce ^ 0x5851F42D4C957F2Dull;
    for (const char *p = g->id; *p; p++) h = (h ^ (unsigned char)*p) * 0x100000001B3ull;
    return h + (uint64_t)i * 0x9E3779B97F4A7C15ull;
}

/* A chat choice whose text is parsed for tool calls: {"index", "message": {"role", "content"
 * (null when only calls), "tool_calls"}, "logprobs" (stolen), "finish_reason"}. NULL: no memory. */
static json_t *chat_choice_tools(const pg_server *s, const gen *g, int32_t i, const char *text, size_t len, json_t *lp,
                                 const char *finish) {
    tc_result r;
    tc_config cfg = g->tools;
    cfg.id_seed = call_id_seed(s, g, i);
    if (tc_parse(&cfg, text, len, &r)) {
        json_decref(lp);
        return NULL;
    }
    json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content",
                            r.content ? oa_json_text(r.content, r.content_len) : json_null());
    if (msg && r.n_calls) {
        json_t *calls = json_array();
        for (size_t k = 0; calls && k < r.n_calls; k++)
            json_array_append_new(calls, json_pack("{s:s, s:s, s:{s:o, s:o}}", "id", r.calls[k].id, "type", "function",
                                                   "function", "name", oa_json_text(r.calls[k].name, strlen(r.calls[k].name)),
                                                   "arguments",
                                                   oa_json_text(r.calls[k].arguments, strlen(r.calls[k].arguments))));
        json_object_set_new(msg, "tool_calls", calls ? calls : json_array());
        if (finish && !strcmp(finish, "stop")) finish = "tool_calls";
    }
    tc_result_free(&r);
    return json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", lp, "finish_reason", finish);
}

static enum MHD_Result send_final(http_req *hr, gen *g) {
    req_usage u;
    char error[512];
    req_get_usage(hr, &u, error, sizeof error);
    if (u.n_error)
        return send_error(hr, 500, "server_error", NULL, NULL, "Generation failed: %s", *error ? error : "unknown error");
    if (u.n_cancelled == g->n_choices)
        return send_error(hr, 503, "server_error", NULL, "cancelled",
                          "The request was cancelled before it finished (the server is shutting down).");
    if (u.events_lost) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    json_t *resp = oa_response_head(g->id, g->chat ? "chat.completion" : "text_completion", g->created, hr->lease.name);
    json_t *choices = json_object_get(resp, "choices");
    for (int32_t i = 0; resp && i < g->n_choices; i++) {
        gen_choice *c = &g->choices[i];
        /* the engine is done (req_take said so under the request's lock): finish reasons are final */
        const char *finish = oa_finish_reason(hr->choices[i].finish);
        const char *text = c->text.p ? c->text.p : "";
        json_t *lp = json_null(), *o;
        if (g->q.pr.logprobs >= 0) {
            json_decref(lp);
            lp = g->chat ? oa_logprobs_chat(c->lp, c->n_lp) : completion_logprobs(g, i);
        }
        if (g->chat && g->tools.format != TC_FORMAT_NONE) {
            o = chat_choice_tools(hr->srv, g, i, text, c->text.len, lp, finish);
        } else if (g->chat) {
            o = json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", i, "message", "role", "assistant", "content",
                          oa_json_text(text, c->text.len), "logprobs", lp, "finish_reason", finish);
        } else {
            oa_buf full = {0};
            const gen_prompt *p = &g->prompts[i / g->q.pr.n];
            if (p->echo) oa_buf_append(&full, p->echo, p->echo_len);
            oa_buf_append(&full, text, c->text.len);
            o = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "text", oa_json_text(full.p ? full.p : "", full.len),
                          "logprobs", lp, "finish_reason", finish);
            oa_buf_free(&full);
        }
        add_stop_reason(g, o, hr->choices[i].stop_index);
        json_array_append_new(choices, o);
    }
    if (resp) json_object_set_new(resp, "usage", oa_usage(u.n_prompt, u.n_completion, u.n_cached));
    if (resp && g->dialect.final) {
        gen_info info = info_of(hr, g);
        resp = g->dialect.final(g->dialect.state, &info, resp);
    }
    if (!resp) return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    return send_json(hr, 200, resp);
}

/* Non-streamed: answer once the engine is done, else park the connection until it is. */
static enum MHD_Result wait_or_send(http_req *hr) {
    gen *g = hr->payload;
    serve_event *events = NULL;
    if (req_take(hr, &events) == REQ_SUSPENDED) return MHD_YES;
    for (const serve_event *e = events; e; e = e->next) collect_event(hr, g, e);
    req_events_free(events);
    return send_final(hr, g);
}

/* ---- building the prompt ---- */

static enum MHD_Result bad(http_req *hr, const char *param, const char *msg) {
    return send_error(hr, 400, "invalid_request_error", param, NULL, "%s", msg);
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

/* A prompt's token ids into p->ids (malloc'd): the chat's messages (op NULL) or completions
 * prompt op. 0 ok; otherwise a response was queued and *ret holds its result. Token ids in the
 * body were checked against the vocabulary by the parser; the rest come from the tokenizer. */
static int build_prompt(http_req *hr, gen *g, const oa_prompt *op, gen_prompt *p, enum MHD_Result *ret) {
    pg_server *s = hr->srv;
    oa_request *q = &g->q;
    int32_t *ids = NULL;
    size_t n = 0;
    if (g->chat) {
        int32_t *t = NULL;
        int allow = q->allow_special_in_content >= 0 ? q->allow_special_in_content : s->cfg.allow_special_in_content;
        pagoda_status st = pagoda_chat_tokenize(hr->lease.model, q->messages_json, q->tools_json, 1, allow, &t, &n);
        if (st == PAGODA_ERR_UNSUPPORTED) {
            *ret = bad(hr, "messages",
                       "This model has no chat template, so /v1/chat/completions cannot format messages; use "
                       "/v1/completions with a plain prompt.");
            return -1;
        }
        if (st) {
            *ret = send_error(hr, st == PAGODA_ERR_INVALID ? 400 : 500, "invalid_request_error", "messages", NULL,
                              "Cannot apply the chat template: %s", pagoda_last_error());
            return -1;
        }
        /* into memory of our own (malloc), so every id array here is released with free() */
        if ((ids = malloc((n ? n : 1) * sizeof *ids))) memcpy(ids, t, n * sizeof *ids);
        pagoda_free(t);
        if (!ids) {
            pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto tok_fail;
        }
    } else if (q->suffix) {
        if (hr->lease.info->fim_prefix < 0 || hr->lease.info->fim_suffix < 0 || hr->lease.info->fim_middle < 0) {
            *ret = bad(hr, "suffix",
                       "'suffix' needs fill-in-the-middle tokens (FIM prefix/suffix/middle), and this model has none.");
            return -1;
        }
        int32_t *pre = NULL, *suf = NULL, *bos = NULL;
        size_t n_pre = 0, n_suf = 0, n_bos = 0;
        pagoda_status st = PAGODA_OK;
        /* [BOS if the model adds one] <fim_prefix> prompt <fim_suffix> suffix <fim_middle> */
        if (tokenize(hr->lease.model, "", 1, 0, &bos, &n_bos)) n_bos = 0;
        int add_bos = n_bos > 0 && hr->lease.info->bos >= 0 && bos[0] == hr->lease.info->bos;
        free(bos);
        if (op->text) st = tokenize(hr->lease.model, op->text, 0, 0, &pre, &n_pre);
        if (!st) st = tokenize(hr->lease.model, q->suffix, 0, 0, &suf, &n_suf);
        size_t n_p = op->text ? n_pre : (size_t)op->n_ids;
        if (!st && !(ids = malloc((n_p + n_suf + 4) * sizeof *ids))) st = PAGODA_ERR_NOMEM;
        if (!st) {
            if (add_bos) ids[n++] = hr->lease.info->bos;
            ids[n++] = hr->lease.info->fim_prefix;
            memcpy(ids + n, op->text ? pre : op->ids, n_p * sizeof *ids);
            n += n_p;
            ids[n++] = hr->lease.info->fim_suffix;
            memcpy(ids + n, suf, n_suf * sizeof *ids);
            n += n_suf;
            ids[n++] = hr->lease.info->fim_middle;
        }
        free(pre);
        free(suf);
        if (st) {
            free(ids);
            goto tok_fail;
        }
    } else if (op->ids) {
        if (!(ids = malloc((size_t)op->n_ids * sizeof *ids))) {
            pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto tok_fail;
        }
        memcpy(ids, op->ids, (size_t)op->n_ids * sizeof *ids);
        n = (size_t)op->n_ids;
    } else {
        if (tokenize(hr->lease.model, op->text, 1, 1, &ids, &n)) goto tok_fail;
    }
    if (n == 0) {
        free(ids);
        *ret = bad(hr, g->chat ? "messages" : "prompt", "The prompt is empty (it encodes to 0 tokens).");
        return -1;
    }
    p->ids = ids;
    p->n_ids = n > INT32_MAX ? INT32_MAX : n;
    return 0;
tok_fail:
    *ret = send_error(hr, 400, "invalid_request_error", g->chat ? "messages" : "prompt", NULL,
                      "Cannot tokenize the prompt: %s", *pagoda_last_error() ? pagoda_last_error() : "error");
    return -1;
}

/* completions with echo: the prompt as text */
static void make_echo(const http_req *hr, const oa_prompt *op, gen_prompt *p) {
    if (op->text) {
        p->echo_len = strlen(op->text);
        if ((p->echo = malloc(p->echo_len + 1))) memcpy(p->echo, op->text, p->echo_len + 1);
        else p->echo_len = 0;
        return;
    }
    char *t = NULL;
    size_t len = 0;
    if (pagoda_detokenize(hr->lease.model, op->ids, (size_t)op->n_ids, 0, &t, &len) == PAGODA_OK && (p->echo = malloc(len + 1))) {
        memcpy(p->echo, t, len);
        p->echo[len] = 0;
        p->echo_len = len;
    }
    pagoda_free(t);
}

/* ---- the request ---- */

static enum MHD_Result submit_failed(http_req *hr, pagoda_status st) {
    const char *e = pagoda_last_error();
    switch (st) {
    case PAGODA_ERR_BUSY:
        return send_error(hr, 429, "rate_limit_error", NULL, "queue_full",
                          "The server is busy: its request queue is full. Retry later%s%s", *e ? ". " : ".", e);
    case PAGODA_ERR_INVALID:
    case PAGODA_ERR_UNSUPPORTED:
        return send_error(hr, 400, "invalid_request_error", NULL, NULL, "%s", *e ? e : "invalid request");
    default:
        return send_error(hr, 500, "server_error", NULL, NULL, "The engine could not take the request: %s",
                          *e ? e : pagoda_status_name(st));
    }
}

static enum MHD_Result start(http_req *hr, const gen_dialect *d) {
    pg_server *s = hr->srv;
    hr->gen_started = 1;
    gen *g = calloc(1, sizeof *g);
    if (!g) {
        if (d && d->state_free) d->state_free(d->state);
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    hr->payload = g;
    hr->payload_free = gen_free;
    if (d) g->dialect = *d;
    g->chat = hr->route == ROUTE_CHAT || d;
    oa_error err;
    const oa_limits lim = {.n_vocab = hr->lease.info->n_vocab, .strict = s->cfg.strict_requests};
    if (oa_request_parse(hr->body, hr->body_len, g->chat ? OA_CHAT : OA_COMPLETIONS, &lim, &g->q, &err))
        return send_error(hr, (unsigned)err.status, err.type, err.param, NULL, "%s", err.message);
    if (g->q.unknown[0])
        pg_log(PAGODA_LOG_WARN, "%s %s (request %s): ignored unknown field(s): %s", hr->method, hr->path,
               hr->request_id, g->q.unknown);
    free(hr->body);
    hr->body = NULL;
    hr->body_len = hr->body_cap = 0;
    oa_request *q = &g->q;
    /* the model was resolved (and a lease taken) before this handler: model_take */
    enum MHD_Result mret;
    if (model_missing(hr, &mret)) return mret;
    if (atomic_load(&s->draining))
        return send_error(hr, 503, "server_error", NULL, "shutting_down", "The server is shutting down.");

    if (g->chat && q->tools_json && SM(hr)->tool_format != TC_FORMAT_NONE) {
        size_t n_names = 0;
        if (tc_tool_names(q->tools_json, &g->tool_names, &n_names))
            return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
        g->tools = (tc_config){.format = SM(hr)->tool_format,
                               .tool_names = (const char *const *)g->tool_names,
                               .n_tool_names = n_names,
                               .parallel = q->parallel_tool_calls};
        /* llama3's <|python_tag|> and mistral's [TOOL_CALLS] / [ARGS] are control tokens: keep
         * their text so the parser sees them (end-of-generation tokens never become text) */
        if (SM(hr)->tool_format == TC_FORMAT_LLAMA3 || SM(hr)->tool_format == TC_FORMAT_MISTRAL) q->pr.skip_special = 0;
    }

    enum MHD_Result ret = MHD_NO;
    pagoda_grammar *grammar = NULL;
    if (q->constraint.kind) { /* structured output: compiled (or found in the cache) before anything runs */
        pagoda_grammar_spec spec = {.kind = (pagoda_grammar_kind)q->constraint.kind,
                                    .text = q->constraint.text,
                                    .len = q->constraint.len,
                                    .whitespace_flexible = q->constraint.whitespace_flexible,
                                    /* an object's undeclared properties are not generated unless
                                       its schema allows them (additionalProperties), as llama.cpp
                                       and vLLM's XGrammar do: output stays valid and a small
                                       model does not invent keys */
                                    .strict = q->constraint.kind == PAGODA_GRAMMAR_JSON_SCHEMA};
        pagoda_status gst = grammar_cache_get(SM(hr)->grammars, &spec, &grammar);
        if (gst == PAGODA_ERR_INVALID)
            return send_error(hr, 400, "invalid_request_error", q->constraint.field, NULL, "'%s': %s", q->constraint.field,
                              pagoda_last_error());
        if (gst) return send_error(hr, 500, "server_error", NULL, NULL, "%s", pagoda_last_error());
        q->pr.grammar = grammar;
        if (q->constraint.lazy) {
            q->pr.grammar_triggers = (const char *const *)q->constraint.triggers;
            q->pr.n_grammar_triggers = q->constraint.n_triggers;
        }
    } else if (g->chat && q->tools_json &&
               (q->tool_choice != OA_TOOL_CHOICE_AUTO || (s->cfg.auto_tool_grammar && SM(hr)->tool_format != TC_FORMAT_NONE))) {
        if (SM(hr)->tool_format == TC_FORMAT_NONE)
            return send_error(hr, 400, "invalid_request_error", "tool_choice", NULL,
                              "'tool_choice' needs tool-call parsing, which this server has off (--tool-call-parser none).");
        /* required / named: the call is enforced by a grammar, arguments following the tool's schema.
         * Named: one call (as vLLM); required: one call unless parallel_tool_calls is given true
         * (as llama-server: a forced list of calls lets a small model repeat calls until max_tokens).
         * auto: the same grammar, lazily: free text until the model starts a call (the format's
         * opening text), the calls then follow the tools' schemas (as llama-server's grammar
         * triggers); several calls unless parallel_tool_calls is false (OpenAI's default) */
        int named = q->tool_choice == OA_TOOL_CHOICE_NAMED, lazy = q->tool_choice == OA_TOOL_CHOICE_AUTO;
        int parallel = lazy ? q->parallel_tool_calls : !named && q->parallel_tool_calls_given && q->parallel_tool_calls;
        tg_spec ts;
        char terr[256];
        if (tg_build(SM(hr)->tool_format, q->tools_json, named ? q->tool_choice_name : NULL, parallel, &ts, terr, sizeof terr))
            return send_error(hr, 400, "invalid_request_error", "tool_choice", NULL, "'tool_choice': %s", terr);
        pagoda_grammar_spec spec = {.kind = PAGODA_GRAMMAR_JSON_SCHEMA,
                                    .text = ts.schema,
                                    .prefix = ts.prefix,
                                    .suffix = ts.suffix,
                                    .separator = ts.separator,
                                    .min_repeat = ts.min_repeat,
                                    .max_repeat = ts.max_repeat,
                                    .strict = 1};
        pagoda_status gst = grammar_cache_get(SM(hr)->grammars, &spec, &grammar);
        if (lazy) { /* the triggers are static strings: they outlive ts */
            for (int i = 0; i < ts.n_triggers; i++) g->triggers[i] = ts.triggers[i];
            q->pr.grammar_triggers = g->triggers;
            q->pr.n_grammar_triggers = ts.n_triggers;
            q->pr.grammar_trigger_at_start = ts.trigger_at_start;
        }
        tg_spec_free(&ts);
        if (gst == PAGODA_ERR_INVALID && lazy) {
            /* auto: tools whose parameters cannot be compiled are still offered, calls only parsed */
            pg_log(PAGODA_LOG_INFO, "tool_choice auto: calls not constrained (%s)", pagoda_last_error());
            grammar = NULL;
            q->pr.grammar_triggers = NULL;
            q->pr.n_grammar_triggers = 0;
        } else if (gst == PAGODA_ERR_INVALID) {
            return send_error(hr, 400, "invalid_request_error", "tools", NULL,
                              "'tool_choice' cannot be enforced: a tool's parameters do not compile: %s", pagoda_last_error());
        } else if (gst) {
            return send_error(hr, 500, "server_error", NULL, NULL, "%s", pagoda_last_error());
        }
        q->pr.grammar = grammar;
    }
    /* every prompt built before anything is submitted; then all submitted at once, so they batch */
    const int32_t n_prompts = g->chat ? 1 : q->n_prompts, n = q->pr.n;
    pagoda_request *prs = NULL;
    if (!(g->prompts = calloc((size_t)n_prompts, sizeof *g->prompts)) || !(prs = calloc((size_t)n_prompts, sizeof *prs))) {
        pagoda_grammar_unref(grammar);
        q->pr.grammar = NULL;
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    g->n_prompts = n_prompts;
    g->echo_lp = q->echo && q->pr.logprobs >= 0;
    for (int32_t i = 0; i < n_prompts; i++) {
        if (build_prompt(hr, g, g->chat ? NULL : &q->prompts[i], &g->prompts[i], &ret)) {
            free(prs);
            pagoda_grammar_unref(grammar);
            q->pr.grammar = NULL;
            return ret;
        }
        if (q->echo) make_echo(hr, &q->prompts[i], &g->prompts[i]);
        prs[i] = q->pr;
        prs[i].prompt = NULL;
        prs[i].prompt_tokens = g->prompts[i].ids;
        prs[i].n_prompt_tokens = (int32_t)g->prompts[i].n_ids;
    }
    if (!(g->choices = calloc((size_t)n_prompts * (size_t)n, sizeof *g->choices))) {
        free(prs);
        pagoda_grammar_unref(grammar);
        q->pr.grammar = NULL;
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    g->n_choices = n_prompts * n;
    g->created = (int64_t)time(NULL);
    if (d)
        snprintf(g->id, sizeof g->id, "%s_%016llx%08llx", d->id_prefix, (unsigned long long)s->id_nonce,
                 (unsigned long long)(atomic_fetch_add(&s->next_id, 1) & 0xffffffffu));
    else if (hr->request_id_made) /* the response id is the X-Request-Id made for the request */
        snprintf(g->id, sizeof g->id, "%s-%s", g->chat ? "chatcmpl" : "cmpl", hr->request_id + 4);
    else
        snprintf(g->id, sizeof g->id, "%s-%016llx%08llx", g->chat ? "chatcmpl" : "cmpl", (unsigned long long)s->id_nonce,
                 (unsigned long long)(atomic_fetch_add(&s->next_id, 1) & 0xffffffffu));
    if (g->tools.format != TC_FORMAT_NONE && q->stream) {
        for (int32_t i = 0; i < g->n_choices; i++) {
            tc_config cfg = g->tools;
            cfg.id_seed = call_id_seed(s, g, i);
            if (!(g->choices[i].tc = tc_parser_create(&cfg))) {
                free(prs);
                pagoda_grammar_unref(grammar);
                q->pr.grammar = NULL;
                return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
            }
        }
    }
    for (int32_t i = 0; i < g->n_choices; i++) g->choices[i].stop_index = -1;
    if (q->stream) {
        /* the first chunks go out at once: the role (chat), or the echoed prompt (completions;
         * with logprobs it waits for them) */
        for (int32_t i = 0; i < g->n_choices; i++) {
            const gen_prompt *p = &g->prompts[i / n];
            if (g->chat) emit_choice(hr, g, i, "", 0, 1, NULL, NULL);
            else if (p->echo && !g->echo_lp) emit_choice(hr, g, i, p->echo, p->echo_len, 0, NULL, NULL);
            g->choices[i].text_offset = p->echo_len;
        }
    }
    pagoda_status st = req_submit_many(hr, prs, n_prompts, q->stream, g->echo_lp);
    free(prs);
    pagoda_grammar_unref(grammar); /* the engine holds its own reference */
    q->pr.grammar = NULL;
    if (st) {
        oa_buf_free(&hr->out);
        return submit_failed(hr, st);
    }
    if (!q->stream) return wait_or_send(hr);
    return send_sse_stream(hr, stream_fill); /* MHD_NO: MHD ends the request, which cancels it */
}

enum MHD_Result completions_start_dialect(http_req *hr, const gen_dialect *d) { return start(hr, d); }

enum MHD_Result completions_handle(http_req *hr) {
    if (!hr->gen_started) return start(hr, NULL);
    if (!hr->submitted || hr->stream) return MHD_NO; /* not reached */
    return wait_or_send(hr);
}
