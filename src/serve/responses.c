/* The Responses API over the chat runner (see responses.h). The runner hands over OpenAI chat
 * objects; this file rewrites them: a chat.completion into a "response", and the stream of
 * chat.completion.chunk objects into the Responses events, one output item at a time (a message
 * with one output_text part, or a function_call whose arguments arrive as deltas). */
#include "serve/responses.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/completions.h"
#include "serve/openai_response.h"
#include "serve/responses_request.h"
#include "serve/send.h"

typedef struct {
    json_t *echo;        /* the request's fields that the response repeats (owned) */
    /* streams */
    int started, failed;
    json_int_t seq;      /* sequence_number of the next event */
    json_t *output;      /* finished items (owned) */
    int open;            /* 0 none, 1 a message, 2 a function call */
    json_t *item;        /* the open item (owned) */
    oa_buf text;         /* the open item's text or arguments */
    const char *finish;
    json_int_t n_prompt, n_completion, n_cached;
} rs_state;

static void state_free(void *p) {
    rs_state *st = p;
    if (!st) return;
    json_decref(st->echo);
    json_decref(st->output);
    json_decref(st->item);
    oa_buf_free(&st->text);
    free(st);
}

static json_t *usage(json_int_t in, json_int_t out, json_int_t cached) {
    return json_pack("{s:I, s:{s:I}, s:I, s:{s:i}, s:I}", "input_tokens", in, "input_tokens_details", "cached_tokens",
                     cached, "output_tokens", out, "output_tokens_details", "reasoning_tokens", 0, "total_tokens",
                     in + out);
}

static json_t *echoed(const rs_state *st, const char *key, json_t *dflt /* stolen */) {
    json_t *v = json_object_get(st->echo, key);
    if (!v) return dflt;
    json_decref(dflt);
    return json_incref(v);
}

/* The response object; output and usage stolen (NULL: JSON null). status: "in_progress",
 * "completed", "incomplete". */
static json_t *response(const rs_state *st, const gen_info *info, const char *status, json_t *output, json_t *u) {
    const int incomplete = !strcmp(status, "incomplete");
    json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:n, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
                          "s:o, s:n, s:n}",
                          "id", info->id, "object", "response", "created_at", (json_int_t)info->created, "status", status,
                          "error", "incomplete_details",
                          incomplete ? json_pack("{s:s}", "reason", "max_output_tokens") : json_null(), "instructions",
                          echoed(st, "instructions", json_null()), "max_output_tokens",
                          echoed(st, "max_output_tokens", json_null()), "model", info->model, "output",
                          output ? output : json_array(), "parallel_tool_calls",
                          echoed(st, "parallel_tool_calls", json_true()), "temperature",
                          echoed(st, "temperature", json_real(1.0)), "tool_choice",
                          echoed(st, "tool_choice", json_string("auto")), "tools", echoed(st, "tools", json_array()),
                          "top_p", echoed(st, "top_p", json_real(1.0)), "text",
                          echoed(st, "text", json_pack("{s:{s:s}}", "format", "type", "text")), "metadata",
                          echoed(st, "metadata", json_object()), "store", echoed(st, "store", json_false()), "usage",
                          u ? u : json_null(), "previous_response_id", "reasoning");
    return r;
}

static void item_id(char *buf, size_t cap, const char *prefix, const gen_info *info, size_t index) {
    const char *id = strchr(info->id, '_');
    snprintf(buf, cap, "%s_%s_%zu", prefix, id ? id + 1 : info->id, index);
}

static json_t *message_item(const char *id, const char *status, const char *text, size_t len) {
    json_t *content = json_array();
    if (text)
        json_array_append_new(content, json_pack("{s:s, s:o, s:[], s:[]}", "type", "output_text", "text",
                                                 oa_json_text(text, len), "annotations", "logprobs"));
    return json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", id, "type", "message", "status", status, "role", "assistant",
                     "content", content);
}

static json_t *call_item(const char *id, const char *status, const json_t *call_id, const json_t *name, const char *args,
                         size_t len) {
    return json_pack("{s:s, s:s, s:s, s:O, s:O, s:o}", "id", id, "type", "function_call", "status", status, "call_id",
                     call_id, "name", name, "arguments", oa_json_text(args, len));
}

/* ---- whole answers ---- */

static json_t *rs_final(void *state, const gen_info *info, json_t *completion) {
    rs_state *st = state;
    json_t *choice = json_array_get(json_object_get(completion, "choices"), 0);
    json_t *msg = json_object_get(choice, "message"), *u = json_object_get(completion, "usage");
    json_t *calls = json_object_get(msg, "tool_calls"), *output = json_array();
    const char *text = json_string_value(json_object_get(msg, "content"));
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    const int cut = finish && !strcmp(finish, "length"); /* the last item was cut off by the token limit */
    char id[96];
    if ((text && *text) || !json_array_size(calls)) {
        item_id(id, sizeof id, "msg", info, 0);
        json_array_append_new(output, message_item(id, cut && !json_array_size(calls) ? "incomplete" : "completed",
                                                   text ? text : "", text ? strlen(text) : 0));
    }
    size_t i;
    json_t *call;
    json_array_foreach(calls, i, call) {
        json_t *f = json_object_get(call, "function");
        const char *args = json_string_value(json_object_get(f, "arguments"));
        item_id(id, sizeof id, "fc", info, json_array_size(output));
        json_array_append_new(output, call_item(id, "completed", json_object_get(call, "id"), json_object_get(f, "name"),
                                                args ? args : "", args ? strlen(args) : 0));
    }
    json_t *r = response(st, info, cut ? "incomplete" : "completed", output,
                         usage(json_integer_value(json_object_get(u, "prompt_tokens")),
                               json_integer_value(json_object_get(u, "completion_tokens")),
                               json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"),
                                                                  "cached_tokens"))));
    json_decref(completion);
    return r;
}

/* ---- streams ---- */

static void event(rs_state *st, oa_buf *out, const char *type, json_t *obj) {
    if (obj) {
        json_object_set_new(obj, "type", json_string(type));
        json_object_set_new(obj, "sequence_number", json_integer(st->seq++));
    }
    sse_append_event(out, type, obj);
}

static int out_index(const rs_state *st) { return (int)json_array_size(st->output); }

static void close_item(rs_state *st, oa_buf *out) {
    if (!st->open) return;
    const int idx = out_index(st);
    const char *id = json_string_value(json_object_get(st->item, "id"));
    const char *text = st->text.p ? st->text.p : "";
    /* the finish reason is known only at the end, so an item closed then is the one the token limit cut */
    const char *status = st->finish && !strcmp(st->finish, "incomplete") ? "incomplete" : "completed";
    json_t *done;
    if (st->open == 1) {
        json_t *part = json_pack("{s:s, s:o, s:[]}", "type", "output_text", "text", oa_json_text(text, st->text.len),
                                 "annotations");
        event(st, out, "response.output_text.done",
              json_pack("{s:s, s:i, s:i, s:o, s:[]}", "item_id", id, "output_index", idx, "content_index", 0, "text",
                        oa_json_text(text, st->text.len), "logprobs"));
        event(st, out, "response.content_part.done",
              json_pack("{s:s, s:i, s:i, s:o}", "item_id", id, "output_index", idx, "content_index", 0, "part", part));
        done = message_item(id, status, text, st->text.len);
    } else {
        const json_t *name = json_object_get(st->item, "name");
        event(st, out, "response.function_call_arguments.done",
              json_pack("{s:s, s:i, s:o, s:O}", "item_id", id, "output_index", idx, "arguments",
                        oa_json_text(text, st->text.len), "name", name));
        done = call_item(id, status, json_object_get(st->item, "call_id"), name, text, st->text.len);
    }
    event(st, out, "response.output_item.done", json_pack("{s:i, s:O}", "output_index", idx, "item", done));
    json_array_append_new(st->output, done);
    json_decref(st->item);
    st->item = NULL;
    st->open = 0;
    oa_buf_free(&st->text);
}

static void open_message(rs_state *st, const gen_info *info, oa_buf *out) {
    close_item(st, out);
    char id[96];
    const int idx = out_index(st);
    item_id(id, sizeof id, "msg", info, (size_t)idx);
    st->item = message_item(id, "in_progress", NULL, 0);
    st->open = 1;
    event(st, out, "response.output_item.added", json_pack("{s:i, s:O}", "output_index", idx, "item", st->item));
    event(st, out, "response.content_part.added",
          json_pack("{s:s, s:i, s:i, s:{s:s, s:s, s:[]}}", "item_id", id, "output_index", idx, "content_index", 0, "part",
                    "type", "output_text", "text", "", "annotations"));
}

static void open_call(rs_state *st, const gen_info *info, oa_buf *out, const json_t *call_id, const json_t *name) {
    close_item(st, out);
    char id[96];
    const int idx = out_index(st);
    item_id(id, sizeof id, "fc", info, (size_t)idx);
    st->item = call_item(id, "in_progress", call_id, name, "", 0);
    st->open = 2;
    event(st, out, "response.output_item.added", json_pack("{s:i, s:O}", "output_index", idx, "item", st->item));
}

static void stream_choice(rs_state *st, const gen_info *info, oa_buf *out, const json_t *choice) {
    const json_t *d = json_object_get(choice, "delta");
    const json_t *content = json_object_get(d, "content");
    if (json_string_length(content) > 0) {
        if (st->open != 1) open_message(st, info, out);
        oa_buf_append(&st->text, json_string_value(content), json_string_length(content));
        event(st, out, "response.output_text.delta",
              json_pack("{s:O, s:i, s:i, s:O, s:[]}", "item_id", json_object_get(st->item, "id"), "output_index",
                        out_index(st), "content_index", 0, "delta", content, "logprobs"));
    }
    size_t i;
    const json_t *call;
    json_array_foreach(json_object_get(d, "tool_calls"), i, call) {
        const json_t *f = json_object_get(call, "function"), *id = json_object_get(call, "id");
        if (json_is_string(id)) open_call(st, info, out, id, json_object_get(f, "name"));
        const json_t *args = json_object_get(f, "arguments");
        if (st->open == 2 && json_string_length(args) > 0) {
            oa_buf_append(&st->text, json_string_value(args), json_string_length(args));
            event(st, out, "response.function_call_arguments.delta",
                  json_pack("{s:O, s:i, s:O}", "item_id", json_object_get(st->item, "id"), "output_index", out_index(st),
                            "delta", args));
        }
    }
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    if (finish) st->finish = !strcmp(finish, "length") ? "incomplete" : "completed";
}

static void rs_stream(void *state, const gen_info *info, json_t *obj, oa_buf *out) {
    rs_state *st = state;
    if (!st->started) {
        st->started = 1;
        event(st, out, "response.created", json_pack("{s:o}", "response", response(st, info, "in_progress", NULL, NULL)));
        event(st, out, "response.in_progress", json_pack("{s:o}", "response", response(st, info, "in_progress", NULL, NULL)));
    }
    if (st->failed) {
        json_decref(obj);
        return;
    }
    if (!obj) { /* the end */
        if (!st->open && !json_array_size(st->output)) open_message(st, info, out);
        close_item(st, out);
        const char *status = st->finish ? st->finish : "completed";
        json_t *r = response(st, info, status, json_incref(st->output), usage(st->n_prompt, st->n_completion, st->n_cached));
        event(st, out, !strcmp(status, "incomplete") ? "response.incomplete" : "response.completed",
              json_pack("{s:o}", "response", r));
        return;
    }
    const json_t *err = json_object_get(obj, "error");
    if (err) {
        st->failed = 1;
        const char *msg = json_string_value(json_object_get(err, "message"));
        event(st, out, "error",
              json_pack("{s:O, s:s, s:n}", "code", json_object_get(err, "code"), "message", msg ? msg : "generation failed",
                        "param"));
        json_decref(obj);
        return;
    }
    const json_t *u = json_object_get(obj, "usage");
    if (json_is_object(u)) {
        st->n_prompt = json_integer_value(json_object_get(u, "prompt_tokens"));
        st->n_completion = json_integer_value(json_object_get(u, "completion_tokens"));
        st->n_cached = json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens"));
    }
    size_t i;
    const json_t *choice;
    json_array_foreach(json_object_get(obj, "choices"), i, choice) stream_choice(st, info, out, choice);
    json_decref(obj);
}

/* ---- the route ---- */

enum MHD_Result responses_handle(http_req *hr) {
    if (hr->gen_started) return completions_handle(hr); /* a resumed non-streamed request */
    char *chat = NULL;
    size_t n = 0;
    json_t *echo = NULL;
    oa_error err;
    if (responses_request_translate(hr->body, hr->body_len, &chat, &n, &echo, &err)) {
        hr->gen_started = 1;
        return send_error(hr, (unsigned)err.status, err.type, err.param[0] ? err.param : NULL, NULL, "%s", err.message);
    }
    free(hr->body);
    hr->body = chat;
    hr->body_len = n;
    hr->body_cap = n + 1;
    rs_state *st = calloc(1, sizeof *st);
    if (!st || !(st->output = json_array())) {
        free(st);
        json_decref(echo);
        hr->gen_started = 1;
        return send_error(hr, 500, "server_error", NULL, NULL, "out of memory");
    }
    st->echo = echo;
    const gen_dialect d = {
        .id_prefix = "resp", .stream = rs_stream, .final = rs_final, .state = st, .state_free = state_free};
    return completions_start_dialect(hr, &d);
}
