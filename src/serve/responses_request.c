/* OpenAI Responses bodies -> chat bodies (see responses_request.h). Untrusted input: every field
 * is type-checked, unknown fields are refused by name; sampling values and schemas are checked
 * again by the chat parser that reads the result. */
#include "serve/responses_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/body_translate.h"

static const char *const k_text[] = {"input_text", "output_text", "text", NULL};
static const char *const k_skip[] = {"refusal", NULL};

static int need_string(oa_error *err, const char *name, const json_t *v) {
    if (json_is_string(v) && json_string_length(v) > 0) return 0;
    return v ? bt_bad_type(err, name, "a non-empty string", v) : bt_fail(err, 400, name, "'%s' is required.", name);
}

static int content_text(oa_error *err, const char *name, const json_t *v, json_t **out) {
    if (json_is_string(v)) {
        *out = json_stringn(json_string_value(v), json_string_length(v));
        return *out ? 0 : bt_nomem(err);
    }
    if (!json_is_array(v)) return bt_bad_type(err, name, "a string or an array of content parts", v);
    return bt_join_text(err, name, v, k_text, k_skip, out);
}

static int append(oa_error *err, json_t *msgs, json_t *m) {
    if (!m || json_array_append_new(msgs, m)) return bt_nomem(err);
    return 0;
}

/* The last message if it is an assistant's (function calls join it), else a new one. */
static json_t *assistant_for_call(json_t *msgs) {
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *role = json_string_value(json_object_get(last, "role"));
    if (last && role && !strcmp(role, "assistant")) return last;
    json_t *m = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
    if (m && json_array_append_new(msgs, m)) return NULL;
    return m;
}

static int item(oa_error *err, size_t i, const json_t *it, json_t *msgs) {
    char name[48], p[96];
    snprintf(name, sizeof name, "input[%zu]", i);
    if (!json_is_object(it)) return bt_bad_type(err, name, "an object", it);
    const json_t *tv = json_object_get(it, "type");
    const char *type = json_is_string(tv) ? json_string_value(tv) : tv ? NULL : "message";
    if (!type) return bt_bad_type(err, name, "an item with a string 'type'", tv);
    if (!strcmp(type, "message")) {
        const json_t *role = json_object_get(it, "role");
        const char *rs = json_string_value(role);
        snprintf(p, sizeof p, "%s.role", name);
        if (!rs || !bt_is_any(rs, (const char *const[]){"user", "system", "developer", "assistant", NULL}))
            return bt_fail(err, 400, p, "'%s' must be one of user, system, developer, assistant.", p);
        if (bt_only_keys(err, it, name, "a message item", (const char *const[]){"type", "role", "content", "id", "status", NULL}))
            return -1;
        snprintf(p, sizeof p, "%s.content", name);
        const json_t *c = json_object_get(it, "content");
        if (!c) return bt_fail(err, 400, p, "'%s' is required.", p);
        json_t *text = NULL;
        if (content_text(err, p, c, &text)) return -1;
        return append(err, msgs, json_pack("{s:s, s:o}", "role", rs, "content", text));
    }
    if (!strcmp(type, "function_call")) {
        const json_t *call_id = json_object_get(it, "call_id"), *fname = json_object_get(it, "name"),
                     *args = json_object_get(it, "arguments");
        snprintf(p, sizeof p, "%s.call_id", name);
        if (need_string(err, p, call_id)) return -1;
        snprintf(p, sizeof p, "%s.name", name);
        if (need_string(err, p, fname)) return -1;
        snprintf(p, sizeof p, "%s.arguments", name);
        if (!json_is_string(args)) return args ? bt_bad_type(err, p, "a string", args) : bt_fail(err, 400, p, "'%s' is required.", p);
        json_t *m = assistant_for_call(msgs);
        if (!m) return bt_nomem(err);
        json_t *calls = json_object_get(m, "tool_calls");
        if (!calls && (!(calls = json_array()) || json_object_set_new(m, "tool_calls", calls))) return bt_nomem(err);
        json_t *call = json_pack("{s:O, s:s, s:{s:O, s:O}}", "id", call_id, "type", "function", "function", "name",
                                 fname, "arguments", args);
        if (!call || json_array_append_new(calls, call)) return bt_nomem(err);
        return 0;
    }
    if (!strcmp(type, "function_call_output")) {
        const json_t *call_id = json_object_get(it, "call_id"), *out = json_object_get(it, "output");
        snprintf(p, sizeof p, "%s.call_id", name);
        if (need_string(err, p, call_id)) return -1;
        snprintf(p, sizeof p, "%s.output", name);
        if (!out) return bt_fail(err, 400, p, "'%s' is required.", p);
        json_t *text = NULL;
        if (content_text(err, p, out, &text)) return -1;
        return append(err, msgs, json_pack("{s:s, s:O, s:o}", "role", "tool", "tool_call_id", call_id, "content", text));
    }
    if (!strcmp(type, "reasoning")) return 0; /* earlier output that the templates do not use */
    if (!strcmp(type, "item_reference"))
        return bt_fail(err, 400, name, "'%s': item references are not supported: this server stores nothing; send the items themselves.", name);
    return bt_fail(err, 400, name, "'%s': items of type '%.60s' are not supported by this server.", name, type);
}

static int input(oa_error *err, const json_t *v, json_t *msgs) {
    if (json_is_string(v)) return append(err, msgs, json_pack("{s:s, s:O}", "role", "user", "content", v));
    if (!json_is_array(v)) return bt_bad_type(err, "input", "a string or an array of items", v);
    if (json_array_size(v) > OA_MAX_MESSAGES)
        return bt_fail(err, 400, "input", "too many items: %zu (at most %d).", json_array_size(v), OA_MAX_MESSAGES);
    for (size_t i = 0; i < json_array_size(v); i++)
        if (item(err, i, json_array_get(v, i), msgs)) return -1;
    return 0;
}

/* tools [{type: "function", name, description, parameters, strict}] -> chat tools */
static int tools(oa_error *err, const json_t *v, json_t *out) {
    if (!json_is_array(v)) return bt_bad_type(err, "tools", "an array", v);
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        char p[32], q[96];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!json_is_object(t)) return bt_bad_type(err, p, "an object", t);
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!type || strcmp(type, "function"))
            return bt_fail(err, 400, p, "'%s': tools of type '%.60s' are not supported by this server (only \"function\").", p,
                           type ? type : "?");
        if (bt_only_keys(err, t, p, "a function tool",
                         (const char *const[]){"type", "name", "description", "parameters", "strict", NULL}))
            return -1;
        const json_t *name = json_object_get(t, "name");
        snprintf(q, sizeof q, "%s.name", p);
        if (need_string(err, q, name)) return -1;
        json_t *f = json_pack("{s:O}", "name", name);
        if (!f) return bt_nomem(err);
        json_t *tool = json_pack("{s:s, s:o}", "type", "function", "function", f);
        if (!tool || json_array_append_new(out, tool)) return bt_nomem(err);
        /* description, parameters and strict: checked by the chat parser */
        static const char *const copied[] = {"description", "parameters", NULL};
        for (const char *const *k = copied; *k; k++)
            if (json_object_get(t, *k) && json_object_set(f, *k, json_object_get((json_t *)t, *k))) return bt_nomem(err);
    }
    return 0;
}

/* tool_choice: "none" | "auto" | "required" | {type: "function", name} */
static int tool_choice(oa_error *err, const json_t *v, json_t *chat) {
    if (json_is_object(v)) {
        const char *type = json_string_value(json_object_get(v, "type"));
        if (!type || strcmp(type, "function"))
            return bt_fail(err, 400, "tool_choice", "'tool_choice' of type '%.60s' is not supported (\"function\" only).",
                           type ? type : "?");
        if (need_string(err, "tool_choice.name", json_object_get(v, "name"))) return -1;
        json_t *c = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name", json_object_get(v, "name"));
        return !c || json_object_set_new(chat, "tool_choice", c) ? bt_nomem(err) : 0;
    }
    if (!json_is_string(v)) return bt_bad_type(err, "tool_choice", "a string or an object", v);
    return json_object_set(chat, "tool_choice", (json_t *)v) ? bt_nomem(err) : 0; /* values checked by the chat parser */
}

/* text: {format: {type: text | json_object | json_schema, name, schema, strict, description}, verbosity} */
static int text_format(oa_error *err, const json_t *v, json_t *chat) {
    if (!json_is_object(v)) return bt_bad_type(err, "text", "an object", v);
    if (bt_only_keys(err, v, "text", "text", (const char *const[]){"format", "verbosity", NULL})) return -1;
    const json_t *f = json_object_get(v, "format");
    if (!f || json_is_null(f)) return 0;
    if (!json_is_object(f)) return bt_bad_type(err, "text.format", "an object", f);
    const char *type = json_string_value(json_object_get(f, "type"));
    if (!type) return bt_fail(err, 400, "text.format.type", "'text.format.type' is required.");
    json_t *rf = NULL;
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) {
        rf = json_pack("{s:s}", "type", "json_object");
    } else if (!strcmp(type, "json_schema")) {
        if (need_string(err, "text.format.name", json_object_get(f, "name"))) return -1;
        const json_t *schema = json_object_get(f, "schema");
        if (!json_is_object(schema))
            return schema ? bt_bad_type(err, "text.format.schema", "an object (a JSON Schema)", schema)
                          : bt_fail(err, 400, "text.format.schema", "'text.format.schema' is required.");
        json_t *js = json_deep_copy(f);
        if (js) json_object_del(js, "type");
        rf = js ? json_pack("{s:s, s:o}", "type", "json_schema", "json_schema", js) : NULL;
    } else {
        return bt_fail(err, 400, "text.format.type", "'text.format.type' must be \"text\", \"json_object\" or \"json_schema\".");
    }
    return !rf || json_object_set_new(chat, "response_format", rf) ? bt_nomem(err) : 0;
}

/* fields copied as they are (the chat parser checks their values) */
static const char *const k_copied[] = {"model", "temperature", "top_p", "parallel_tool_calls", NULL};
/* accepted and ignored (store: accepted, but nothing is stored) */
static const char *const k_ignored[] = {"store", "metadata", "user", "service_tier", "safety_identifier",
                                        "prompt_cache_key", "prompt_cache_retention", "truncation", "include",
                                        "reasoning", "stream_options", NULL};
/* what the response object repeats of the request */
static const char *const k_echoed[] = {"instructions", "tools", "tool_choice", "parallel_tool_calls", "temperature",
                                       "top_p", "max_output_tokens", "text", "metadata", "store", NULL};

static int field(oa_error *err, const char *key, json_t *v, json_t *chat, json_t *msgs, json_t **instructions) {
    if (bt_is_any(key, k_ignored)) return 0;
    if (bt_is_any(key, k_copied)) return json_object_set(chat, key, v) ? bt_nomem(err) : 0;
    if (!strcmp(key, "input")) return input(err, v, msgs);
    if (!strcmp(key, "instructions")) {
        if (!json_is_string(v)) return bt_bad_type(err, key, "a string", v);
        *instructions = json_incref(v);
        return 0;
    }
    if (!strcmp(key, "max_output_tokens")) return json_object_set(chat, "max_completion_tokens", v) ? bt_nomem(err) : 0;
    if (!strcmp(key, "stream")) return bt_stream(err, key, v, chat);
    if (!strcmp(key, "tools")) {
        json_t *t = json_array();
        if (!t) return bt_nomem(err);
        if (tools(err, v, t)) return json_decref(t), -1;
        if (!json_array_size(t)) return json_decref(t), 0;
        return json_object_set_new(chat, "tools", t) ? bt_nomem(err) : 0;
    }
    if (!strcmp(key, "tool_choice")) return tool_choice(err, v, chat);
    if (!strcmp(key, "text")) return text_format(err, v, chat);
    if (!strcmp(key, "previous_response_id") || !strcmp(key, "conversation"))
        return bt_fail(err, 400, key,
                       "'%s' is not supported: this server is stateless and stores no responses; send the whole "
                       "conversation in 'input'.",
                       key);
    if (!strcmp(key, "background") && json_is_false(v)) return 0;
    if (!strcmp(key, "top_logprobs") && json_is_integer(v) && json_integer_value(v) == 0) return 0;
    if (bt_is_any(key, (const char *const[]){"background", "prompt", "max_tool_calls", "top_logprobs", NULL}))
        return bt_fail(err, 400, key, "'%s' is not supported by this server.", key);
    return bt_fail(err, 400, key, "Unrecognized request argument supplied: %.80s", key);
}

int responses_request_translate(const char *body, size_t len, char **chat_out, size_t *chat_len, json_t **echo,
                                oa_error *err) {
    memset(err, 0, sizeof *err);
    *chat_out = NULL;
    *chat_len = 0;
    *echo = NULL;
    json_t *root = bt_load(body, len, err);
    if (!root) return -1;
    json_t *chat = json_object(), *msgs = json_array(), *instructions = NULL, *e = json_object();
    int rc = chat && msgs && e ? 0 : bt_nomem(err);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (rc) break;
        if (json_is_null(v)) continue;
        rc = field(err, key, v, chat, msgs, &instructions);
        if (!rc && bt_is_any(key, k_echoed) && json_object_set(e, key, v)) rc = bt_nomem(err);
    }
    if (!rc && !json_object_get(root, "input")) rc = bt_fail(err, 400, "input", "'input' is required.");
    if (!rc && instructions && json_string_length(instructions) &&
        json_array_insert_new(msgs, 0, json_pack("{s:s, s:O}", "role", "system", "content", instructions)))
        rc = bt_nomem(err);
    if (!rc && !json_array_size(msgs)) rc = bt_fail(err, 400, "input", "'input' holds no messages.");
    if (!rc && json_object_set(chat, "messages", msgs)) rc = bt_nomem(err);
    if (!rc) rc = bt_dump(err, chat, chat_out, chat_len);
    if (!rc) *echo = e;
    else json_decref(e);
    json_decref(instructions);
    json_decref(msgs);
    json_decref(chat);
    json_decref(root);
    return rc;
}
