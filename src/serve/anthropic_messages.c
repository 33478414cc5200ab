/* Anthropic Messages over the chat runner (see anthropic_messages.h). The runner hands over
 * OpenAI chat objects; this file rewrites them: a chat.completion into a "message", and the
 * stream of chat.completion.chunk objects into Anthropic's events, one content block at a time
 * (text, or a tool_use whose input arrives as input_json_delta fragments). */
#include "serve/anthropic_messages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/anthropic_request.h"
#include "serve/completions.h"
#include "serve/openai_request.h"
#include "serve/model_route.h"
#include "serve/send.h"

/* One stream's state. */
typedef struct {
    int started;           /* message_start went out */
    int failed;            /* an error event went out: nothing follows it */
    int block;             /* index of the open content block; -1: none */
    int block_is_tool;
    int n_blocks;
    const char *stop_reason;
    char *stop_sequence;   /* owned */
    json_int_t output_tokens;
} an_stream_state;

static void state_free(void *p) {
    an_stream_state *st = p;
    if (!st) return;
    free(st->stop_sequence);
    free(st);
}

/* "call_X" (the runner's tool-call ids) -> "toolu_X" */
static json_t *tool_id(const char *call_id) {
    if (!call_id) call_id = "";
    if (!strncmp(call_id, "call_", 5)) call_id += 5;
    char buf[128];
    snprintf(buf, sizeof buf, "toolu_%.100s", call_id);
    return json_string(buf);
}

/* OpenAI finish_reason (+ the stop string, if one ended the choice) -> Anthropic stop_reason */
static const char *stop_reason_of(const char *finish, const char *stop_string) {
    if (!finish) return "end_turn";
    if (!strcmp(finish, "length")) return "max_tokens";
    if (!strcmp(finish, "tool_calls")) return "tool_use";
    if (!strcmp(finish, "stop") && stop_string) return "stop_sequence";
    return "end_turn";
}

static json_t *usage(json_int_t in, json_int_t out) {
    return json_pack("{s:I, s:I}", "input_tokens", in, "output_tokens", out);
}

/* ---- whole answers ---- */

/* arguments (a JSON string from the runner) -> the input object ({} if it is not one) */
static json_t *input_of(const char *args) {
    json_t *o = args ? json_loads(args, JSON_DECODE_ANY, NULL) : NULL;
    if (json_is_object(o)) return o;
    json_decref(o);
    return json_object();
}

static json_t *an_final(void *state, const gen_info *info, json_t *completion) {
    (void)state;
    json_t *choice = json_array_get(json_object_get(completion, "choices"), 0);
    json_t *msg = json_object_get(choice, "message"), *u = json_object_get(completion, "usage");
    const char *text = json_string_value(json_object_get(msg, "content"));
    const char *stop = json_string_value(json_object_get(choice, "stop_reason"));
    json_t *content = json_array();
    if (text && *text) json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text", "text", text));
    size_t i;
    json_t *call;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call) {
        json_t *f = json_object_get(call, "function");
        json_array_append_new(content, json_pack("{s:s, s:o, s:O, s:o}", "type", "tool_use", "id",
                                                 tool_id(json_string_value(json_object_get(call, "id"))), "name",
                                                 json_object_get(f, "name"), "input",
                                                 input_of(json_string_value(json_object_get(f, "arguments")))));
    }
    json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "id", info->id, "type", "message", "role",
                          "assistant", "model", info->model, "content", content, "stop_reason",
                          stop_reason_of(json_string_value(json_object_get(choice, "finish_reason")), stop),
                          "stop_sequence", stop ? json_string(stop) : json_null(), "usage",
                          usage(json_integer_value(json_object_get(u, "prompt_tokens")),
                                json_integer_value(json_object_get(u, "completion_tokens"))));
    json_decref(completion);
    return r;
}

/* ---- streams ---- */

static void event(oa_buf *out, const char *name, json_t *obj) {
    if (obj) json_object_set_new(obj, "type", json_string(name));
    sse_append_event(out, name, obj);
}

static void close_block(an_stream_state *st, oa_buf *out) {
    if (st->block < 0) return;
    event(out, "content_block_stop", json_pack("{s:i}", "index", st->block));
    st->block = -1;
}

static void open_block(an_stream_state *st, oa_buf *out, int tool, json_t *block /* stolen */) {
    close_block(st, out);
    st->block = st->n_blocks++;
    st->block_is_tool = tool;
    event(out, "content_block_start", json_pack("{s:i, s:o}", "index", st->block, "content_block", block));
}

static void delta(an_stream_state *st, oa_buf *out, const char *kind, const char *field, const char *s) {
    event(out, "content_block_delta",
          json_pack("{s:i, s:{s:s, s:s}}", "index", st->block, "delta", "type", kind, field, s));
}

static void stream_choice(an_stream_state *st, oa_buf *out, const json_t *choice) {
    const json_t *d = json_object_get(choice, "delta");
    const char *text = json_string_value(json_object_get(d, "content"));
    if (text && *text) {
        if (st->block < 0 || st->block_is_tool)
            open_block(st, out, 0, json_pack("{s:s, s:s}", "type", "text", "text", ""));
        delta(st, out, "text_delta", "text", text);
    }
    size_t i;
    const json_t *call;
    json_array_foreach(json_object_get(d, "tool_calls"), i, call) {
        const json_t *f = json_object_get(call, "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        if (id)
            open_block(st, out, 1,
                       json_pack("{s:s, s:o, s:O, s:{}}", "type", "tool_use", "id", tool_id(id), "name",
                                 json_object_get(f, "name"), "input"));
        const char *args = json_string_value(json_object_get(f, "arguments"));
        if (args && *args && st->block >= 0 && st->block_is_tool) delta(st, out, "input_json_delta", "partial_json", args);
    }
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    if (finish) {
        const char *stop = json_string_value(json_object_get(choice, "stop_reason"));
        st->stop_reason = stop_reason_of(finish, stop);
        free(st->stop_sequence);
        st->stop_sequence = stop ? strdup(stop) : NULL;
    }
}

static void an_stream(void *state, const gen_info *info, json_t *obj, oa_buf *out) {
    an_stream_state *st = state;
    if (!st->started) {
        st->started = 1;
        event(out, "message_start",
              json_pack("{s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:o}}", "message", "id", info->id, "type", "message",
                        "role", "assistant", "model", info->model, "content", "stop_reason", "stop_sequence", "usage",
                        usage(info->n_prompt, 0)));
        event(out, "ping", json_object());
    }
    if (st->failed) {
        json_decref(obj);
        return;
    }
    if (!obj) { /* the end */
        close_block(st, out);
        event(out, "message_delta",
              json_pack("{s:{s:s, s:o}, s:{s:I}}", "delta", "stop_reason", st->stop_reason ? st->stop_reason : "end_turn",
                        "stop_sequence", st->stop_sequence ? json_string(st->stop_sequence) : json_null(), "usage",
                        "output_tokens", st->output_tokens));
        event(out, "message_stop", json_object());
        return;
    }
    const json_t *err = json_object_get(obj, "error");
    if (err) {
        st->failed = 1;
        const char *msg = json_string_value(json_object_get(err, "message"));
        sse_append_event(out, "error", anthropic_error_body(500, msg ? msg : "generation failed"));
        json_decref(obj);
        return;
    }
    const json_t *u = json_object_get(obj, "usage");
    if (json_is_object(u)) st->output_tokens = json_integer_value(json_object_get(u, "completion_tokens"));
    size_t i;
    const json_t *choice;
    json_array_foreach(json_object_get(obj, "choices"), i, choice) stream_choice(st, out, choice);
    json_decref(obj);
}

/* ---- the routes ---- */

static enum MHD_Result count_tokens(http_req *hr) {
    pg_server *s = hr->srv;
    char *chat = NULL;
    size_t n = 0;
    oa_error err;
    oa_request q;
    if (anthropic_request_translate(hr->body, hr->body_len, AN_COUNT_TOKENS, &chat, &n, &err))
        return send_error(hr, (unsigned)err.status, err.type, NULL, NULL, "%s", err.message);
    const oa_limits lim = {.n_vocab = hr->lease.info->n_vocab};
    int rc = oa_request_parse(chat, n, OA_CHAT, &lim, &q, &err);
    free(chat);
    if (rc) return send_error(hr, (unsigned)err.status, err.type, NULL, NULL, "%s", err.message);
    enum MHD_Result ret;
    if (model_missing(hr, &ret)) {
    } else { /* the model was resolved before this handler (model_take) */
        int32_t *t = NULL;
        size_t n_tok = 0;
        int allow = s->cfg.allow_special_in_content;
        pagoda_status st = pagoda_chat_tokenize(hr->lease.model, q.messages_json, q.tools_json, 1, allow, &t, &n_tok);
        pagoda_free(t);
        if (st == PAGODA_ERR_UNSUPPORTED)
            ret = send_error(hr, 400, "invalid_request_error", NULL, NULL,
                             "This model has no chat template, so messages cannot be formatted.");
        else if (st)
            ret = send_error(hr, st == PAGODA_ERR_INVALID ? 400 : 500, "invalid_request_error", NULL, NULL,
                             "Cannot apply the chat template: %s", pagoda_last_error());
        else
            ret = send_json(hr, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n_tok));
    }
    oa_request_free(&q);
    return ret;
}

enum MHD_Result anthropic_messages_handle(http_req *hr) {
    if (hr->gen_started) return completions_handle(hr); /* a resumed non-streamed request */
    if (hr->route == ROUTE_MESSAGES_COUNT) {
        hr->gen_started = 1;
        return count_tokens(hr);
    }
    char *chat = NULL;
    size_t n = 0;
    oa_error err;
    if (anthropic_request_translate(hr->body, hr->body_len, AN_MESSAGES, &chat, &n, &err)) {
        hr->gen_started = 1;
        return send_error(hr, (unsigned)err.status, err.type, NULL, NULL, "%s", err.message);
    }
    free(hr->body);
    hr->body = chat;
    hr->body_len = n;
    hr->body_cap = n + 1;
    an_stream_state *st = calloc(1, sizeof *st);
    if (!st) {
        hr->gen_started = 1;
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    st->block = -1;
    const gen_dialect d = {
        .id_prefix = "msg", .stream = an_stream, .final = an_final, .state = st, .state_free = state_free};
    return completions_start_dialect(hr, &d);
}
