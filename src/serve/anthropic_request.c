/* Anthropic Messages bodies -> OpenAI chat bodies (see anthropic_request.h). Untrusted input:
 * every field is type-checked, unknown fields are refused by name; sampling values, stop strings
 * and the tools' schemas are range-checked again by the chat parser that reads the result. */
#include "serve/anthropic_request.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/body_translate.h"

static const char *const k_text[] = {"text", NULL};
static const char *const k_skip_thinking[] = {"thinking", "redacted_thinking", NULL};

/* The text of a string or of text blocks, as a JSON string. */
static int text_of(oa_error *err, const char *name, const json_t *v, const char *const *skip, json_t **out) {
    if (json_is_string(v)) {
        *out = json_stringn(json_string_value(v), json_string_length(v));
        return *out ? 0 : bt_nomem(err);
    }
    if (!json_is_array(v)) return bt_bad_type(err, name, "a string or an array of content blocks", v);
    return bt_join_text(err, name, v, k_text, skip, out);
}

static int need_string(oa_error *err, const char *name, const json_t *v) {
    if (json_is_string(v) && json_string_length(v) > 0) return 0;
    return v ? bt_bad_type(err, name, "a non-empty string", v) : bt_fail(err, 400, name, "'%s' is required.", name);
}

/* A tool_use block -> {"id", "type": "function", "function": {"name", "arguments"}} */
static int tool_use(oa_error *err, const char *p, const json_t *b, json_t *calls) {
    char q[192];
    const json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name"), *input = json_object_get(b, "input");
    snprintf(q, sizeof q, "%s.id", p);
    if (need_string(err, q, id)) return -1;
    snprintf(q, sizeof q, "%s.name", p);
    if (need_string(err, q, name)) return -1;
    snprintf(q, sizeof q, "%s.input", p);
    if (input && !json_is_object(input)) return bt_bad_type(err, q, "an object", input);
    json_t *empty = input ? NULL : json_object();
    char *args = input || empty ? json_dumps(input ? input : empty, JSON_COMPACT) : NULL;
    json_decref(empty);
    json_t *call = args ? json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", name,
                                    "arguments", args)
                        : NULL;
    free(args);
    if (!call || json_array_append_new(calls, call)) return bt_nomem(err);
    return 0;
}

/* A tool_result block -> {"role": "tool", "tool_call_id", "content"} */
static int tool_result(oa_error *err, const char *p, const json_t *b, json_t *out) {
    char q[192];
    const json_t *id = json_object_get(b, "tool_use_id"), *content = json_object_get(b, "content");
    snprintf(q, sizeof q, "%s.tool_use_id", p);
    if (need_string(err, q, id)) return -1;
    json_t *text = NULL;
    snprintf(q, sizeof q, "%s.content", p);
    if (!content || json_is_null(content)) text = json_string("");
    else if (text_of(err, q, content, NULL, &text)) return -1;
    json_t *m = text ? json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", id, "content", text) : NULL;
    if (!m || json_array_append_new(out, m)) return bt_nomem(err);
    return 0;
}

/* One message -> chat messages appended to out (a user turn's tool results come first, as
 * "tool" messages, then its text). */
static int message(oa_error *err, size_t i, const json_t *m, json_t *out) {
    char name[48], p[160];
    snprintf(name, sizeof name, "messages[%zu]", i);
    if (!json_is_object(m)) return bt_bad_type(err, name, "an object", m);
    if (bt_only_keys(err, m, name, "a message", (const char *const[]){"role", "content", NULL})) return -1;
    const json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
    snprintf(p, sizeof p, "%s.role", name);
    const char *rs = json_string_value(role);
    if (!rs || (strcmp(rs, "user") && strcmp(rs, "assistant")))
        return bt_fail(err, 400, p, "'%s' must be \"user\" or \"assistant\".", p);
    const int assistant = !strcmp(rs, "assistant");
    snprintf(p, sizeof p, "%s.content", name);
    if (!content) return bt_fail(err, 400, p, "'%s' is required.", p);
    if (json_is_string(content)) {
        json_t *msg = json_pack("{s:s, s:O}", "role", rs, "content", content);
        if (!msg || json_array_append_new(out, msg)) return bt_nomem(err);
        return 0;
    }
    if (!json_is_array(content)) return bt_bad_type(err, p, "a string or an array of content blocks", content);
    json_t *texts = json_array(), *calls = json_array();
    int rc = texts && calls ? 0 : bt_nomem(err);
    size_t k;
    const json_t *b;
    json_array_foreach(content, k, b) {
        if (rc) break;
        char q[160];
        snprintf(q, sizeof q, "%s.content[%zu]", name, k);
        const char *type = json_is_object(b) ? json_string_value(json_object_get(b, "type")) : NULL;
        if (!json_is_object(b)) rc = bt_bad_type(err, q, "an object", b);
        else if (!type) rc = bt_fail(err, 400, q, "'%s.type' is required (a string).", q);
        else if (!strcmp(type, "tool_use") && assistant) rc = tool_use(err, q, b, calls);
        else if (!strcmp(type, "tool_result") && !assistant) rc = tool_result(err, q, b, out);
        else if (!strcmp(type, "tool_use") || !strcmp(type, "tool_result"))
            rc = bt_fail(err, 400, q, "'%s': a %s block belongs in %s message.", q, type,
                         assistant ? "a user" : "an assistant");
        else if (json_array_append(texts, (json_t *)b)) rc = bt_nomem(err); /* checked by bt_join_text */
    }
    json_t *text = NULL;
    if (!rc && json_array_size(texts)) rc = bt_join_text(err, p, texts, k_text, k_skip_thinking, &text);
    if (!rc && (text || json_array_size(calls) || (!assistant && !json_array_size(content)))) {
        json_t *msg = json_pack("{s:s, s:o}", "role", rs, "content", text ? text : json_string(""));
        text = NULL;
        if (msg && json_array_size(calls)) json_object_set(msg, "tool_calls", calls);
        if (!msg || json_array_append_new(out, msg)) rc = bt_nomem(err);
    }
    json_decref(text);
    json_decref(texts);
    json_decref(calls);
    return rc;
}

/* tools [{name, description, input_schema}] -> [{"type": "function", "function": {...}}] */
static int tools(oa_error *err, const json_t *v, json_t *out) {
    if (!json_is_array(v)) return bt_bad_type(err, "tools", "an array", v);
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        char p[32], q[96];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!json_is_object(t)) return bt_bad_type(err, p, "an object", t);
        const json_t *type = json_object_get(t, "type");
        if (type && !json_is_null(type) && (!json_is_string(type) || strcmp(json_string_value(type), "custom")))
            return bt_fail(err, 400, p,
                           "'%s': server tools (type '%.60s') are not supported by this server; only client tools "
                           "{name, description, input_schema}.",
                           p, json_is_string(type) ? json_string_value(type) : "?");
        if (bt_only_keys(err, t, p, "a tool",
                         (const char *const[]){"type", "name", "description", "input_schema", "cache_control", NULL}))
            return -1;
        const json_t *name = json_object_get(t, "name"), *desc = json_object_get(t, "description"),
                     *schema = json_object_get(t, "input_schema");
        snprintf(q, sizeof q, "%s.name", p);
        if (need_string(err, q, name)) return -1;
        snprintf(q, sizeof q, "%s.description", p);
        if (desc && !json_is_string(desc)) return bt_bad_type(err, q, "a string", desc);
        snprintf(q, sizeof q, "%s.input_schema", p);
        if (!json_is_object(schema))
            return schema ? bt_bad_type(err, q, "an object (a JSON Schema)", schema)
                          : bt_fail(err, 400, q, "'%s' is required.", q);
        json_t *f = json_pack("{s:O, s:O}", "name", name, "parameters", schema);
        if (f && desc) json_object_set(f, "description", (json_t *)desc);
        json_t *tool = f ? json_pack("{s:s, s:o}", "type", "function", "function", f) : NULL;
        if (!tool || json_array_append_new(out, tool)) return bt_nomem(err);
    }
    return 0;
}

/* tool_choice {type: auto | any | tool | none, name, disable_parallel_tool_use} */
static int tool_choice(oa_error *err, const json_t *v, json_t *chat) {
    if (!json_is_object(v)) return bt_bad_type(err, "tool_choice", "an object", v);
    const char *type = json_string_value(json_object_get(v, "type"));
    const json_t *name = json_object_get(v, "name"), *dp = json_object_get(v, "disable_parallel_tool_use");
    if (bt_only_keys(err, v, "tool_choice", "tool_choice", (const char *const[]){"type", "name", "disable_parallel_tool_use", NULL}))
        return -1;
    if (dp && !json_is_null(dp) && !json_is_boolean(dp))
        return bt_bad_type(err, "tool_choice.disable_parallel_tool_use", "a boolean", dp);
    json_t *c;
    if (type && !strcmp(type, "auto")) c = json_string("auto");
    else if (type && !strcmp(type, "any")) c = json_string("required");
    else if (type && !strcmp(type, "none")) c = json_string("none");
    else if (type && !strcmp(type, "tool")) {
        if (need_string(err, "tool_choice.name", name)) return -1;
        c = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", name);
    } else
        return bt_fail(err, 400, "tool_choice.type", "'tool_choice.type' must be \"auto\", \"any\", \"tool\" or \"none\".");
    if (!c || json_object_set_new(chat, "tool_choice", c)) return bt_nomem(err);
    if (json_is_true(dp) && json_object_set_new(chat, "parallel_tool_calls", json_false())) return bt_nomem(err);
    return 0;
}

/* output_config {effort (ignored), format: {type: "json_schema", schema}} -> response_format */
static int output_config(oa_error *err, const json_t *v, json_t *chat) {
    if (!json_is_object(v)) return bt_bad_type(err, "output_config", "an object", v);
    if (bt_only_keys(err, v, "output_config", "output_config", (const char *const[]){"effort", "format", NULL})) return -1;
    const json_t *f = json_object_get(v, "format");
    if (!f || json_is_null(f)) return 0;
    const char *type = json_is_object(f) ? json_string_value(json_object_get(f, "type")) : NULL;
    const json_t *schema = json_object_get(f, "schema");
    if (!type || strcmp(type, "json_schema"))
        return bt_fail(err, 400, "output_config.format.type", "'output_config.format.type' must be \"json_schema\".");
    if (!json_is_object(schema))
        return bt_fail(err, 400, "output_config.format.schema", "'output_config.format.schema' must be a JSON Schema object.");
    json_t *rf = json_pack("{s:s, s:{s:s, s:O, s:b}}", "type", "json_schema", "json_schema", "name", "output", "schema",
                           schema, "strict", 1);
    return !rf || json_object_set_new(chat, "response_format", rf) ? bt_nomem(err) : 0;
}

/* fields copied as they are (the chat parser checks their values); temperature, top_p and top_k
 * are no longer in the newest SDK, but older clients send them */
static const char *const k_copied[] = {"model", "temperature", "top_p", "top_k", NULL};
/* accepted and ignored (request bookkeeping, and what has no meaning here: thinking, effort,
 * speed, where to run) */
static const char *const k_ignored[] = {"metadata",    "thinking",      "service_tier",    "cache_control",
                                        "diagnostics", "inference_geo", "speed",           "user_profile_id",
                                        "workspace_id", NULL};

static int field(oa_error *err, an_kind kind, const char *key, json_t *v, json_t *chat, json_t *msgs, json_t **system) {
    if (bt_is_any(key, k_ignored)) return 0;
    if (bt_is_any(key, k_copied)) return json_object_set(chat, key, v) ? bt_nomem(err) : 0;
    if (!strcmp(key, "system")) return text_of(err, "system", v, NULL, system);
    if (!strcmp(key, "messages")) {
        if (!json_is_array(v)) return bt_bad_type(err, key, "an array", v);
        if (!json_array_size(v)) return bt_fail(err, 400, key, "'messages' must be a non-empty array.");
        if (json_array_size(v) > OA_MAX_MESSAGES)
            return bt_fail(err, 400, key, "too many messages: %zu (at most %d).", json_array_size(v), OA_MAX_MESSAGES);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (message(err, i, json_array_get(v, i), msgs)) return -1;
        return 0;
    }
    if (!strcmp(key, "max_tokens")) {
        if (kind == AN_COUNT_TOKENS) return 0;
        return json_object_set(chat, key, v) ? bt_nomem(err) : 0;
    }
    if (!strcmp(key, "stop_sequences")) {
        if (!json_is_array(v)) return bt_bad_type(err, key, "an array of strings", v);
        return json_array_size(v) && json_object_set(chat, "stop", v) ? bt_nomem(err) : 0;
    }
    if (!strcmp(key, "stream")) {
        if (kind == AN_COUNT_TOKENS) return bt_fail(err, 400, key, "'stream' is not accepted by count_tokens.");
        return bt_stream(err, key, v, chat);
    }
    if (!strcmp(key, "tools")) {
        json_t *t = json_array();
        if (!t) return bt_nomem(err);
        if (tools(err, v, t)) return json_decref(t), -1;
        if (!json_array_size(t)) return json_decref(t), 0;
        return json_object_set_new(chat, "tools", t) ? bt_nomem(err) : 0;
    }
    if (!strcmp(key, "tool_choice")) return tool_choice(err, v, chat);
    if (!strcmp(key, "output_config")) return output_config(err, v, chat);
    if (!strcmp(key, "mcp_servers") || !strcmp(key, "container"))
        return bt_fail(err, 400, key, "'%s' is not supported by this server.", key);
    return bt_fail(err, 400, key, "%s: Extra inputs are not permitted.", key);
}

int anthropic_request_translate(const char *body, size_t len, an_kind kind, char **chat_out, size_t *chat_len,
                                oa_error *err) {
    memset(err, 0, sizeof *err);
    *chat_out = NULL;
    *chat_len = 0;
    json_t *root = bt_load(body, len, err);
    if (!root) return -1;
    json_t *chat = json_object(), *msgs = json_array(), *system = NULL;
    int rc = chat && msgs ? 0 : bt_nomem(err);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (rc) break;
        if (json_is_null(v)) continue;
        rc = field(err, kind, key, v, chat, msgs, &system);
    }
    if (!rc && !json_object_get(root, "model")) rc = bt_fail(err, 400, "model", "model: Field required");
    if (!rc && !json_object_get(root, "messages")) rc = bt_fail(err, 400, "messages", "messages: Field required");
    if (!rc && kind == AN_MESSAGES && !json_object_get(chat, "max_tokens"))
        rc = bt_fail(err, 400, "max_tokens", "max_tokens: Field required");
    if (!rc && !json_array_size(msgs))
        rc = bt_fail(err, 400, "messages", "'messages' holds nothing to send (no text or tool results).");
    if (!rc && system && json_string_length(system) &&
        json_array_insert_new(msgs, 0, json_pack("{s:s, s:O}", "role", "system", "content", system)))
        rc = bt_nomem(err);
    if (!rc && json_object_set(chat, "messages", msgs)) rc = bt_nomem(err);
    if (!rc) rc = bt_dump(err, chat, chat_out, chat_len);
    json_decref(system);
    json_decref(msgs);
    json_decref(chat);
    json_decref(root);
    return rc;
}
