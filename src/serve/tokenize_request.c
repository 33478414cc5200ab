/* /tokenize and /detokenize request parsing (see tokenize_request.h). Untrusted input: types are
 * checked, ids range-checked, and a failure leaves nothing allocated. */
#include "serve/tokenize_request.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(oa_error *err, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(oa_error *err, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->status = 400;
    err->type = "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    return -1;
}

static int bad_type(oa_error *err, const char *name, const char *want, const json_t *v) {
    return fail(err, name, "Invalid type for '%s': expected %s, but got %s instead.", name, want, oa_json_type_name(v));
}

/* The body as a JSON object (*root owned by the caller). */
static int load_object(const char *body, size_t len, json_t **root, oa_error *err) {
    *root = NULL;
    if (!body || len == 0) return fail(err, NULL, "The request body is empty: expected a JSON object.");
    size_t ok = oa_utf8_valid_prefix(body, len);
    if (ok != len)
        return fail(err, NULL, "The request body is not valid UTF-8 (byte 0x%02x at offset %zu).",
                    (unsigned char)body[ok], ok);
    json_error_t jerr;
    if (!(*root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)))
        return fail(err, NULL, "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line,
                    jerr.column);
    if (!json_is_object(*root)) {
        fail(err, NULL, "The request body must be a JSON object, got %s.", oa_json_type_name(*root));
        json_decref(*root);
        *root = NULL;
        return -1;
    }
    return 0;
}

static int get_bool(oa_error *err, const char *name, const json_t *v, int *out) {
    if (!json_is_boolean(v)) return bad_type(err, name, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

static int nomem(oa_error *err) {
    err->status = 500, err->type = "server_error";
    snprintf(err->message, sizeof err->message, "out of memory");
    return -1;
}

static int get_string(oa_error *err, const char *name, const json_t *v, char **out, size_t *len) {
    if (!json_is_string(v)) return bad_type(err, name, "a string", v);
    size_t n = json_string_length(v);
    if (!(*out = malloc(n + 1))) return nomem(err);
    memcpy(*out, json_string_value(v), n);
    (*out)[n] = 0;
    if (len) *len = n;
    return 0;
}

/* An unknown field: an error when strict, else its name is noted for the warning. */
static int unknown_field(oa_error *err, int strict, char *list, size_t cap, const char *key) {
    if (strict) return fail(err, key, "Unrecognized request argument supplied: %.80s", key);
    size_t n = strlen(list);
    if (n + 2 < cap) snprintf(list + n, cap - n, "%s%.64s", n ? ", " : "", key);
    return 0;
}

/* vLLM's messages (and tools), normalized by the chat-completions parser: same checks, same
 * shape, the prompt a chat completion of them gets. */
static int parse_chat(const json_t *messages, const json_t *tools, tk_tokenize_req *r, oa_error *err) {
    json_t *wrap = json_pack("{s:O}", "messages", (json_t *)messages);
    if (wrap && tools) json_object_set(wrap, "tools", (json_t *)tools);
    char *body = wrap ? json_dumps(wrap, JSON_COMPACT) : NULL;
    json_decref(wrap);
    if (!body) return fail(err, "messages", "'messages' could not be read.");
    oa_request q;
    int rc = oa_request_parse(body, strlen(body), OA_CHAT, NULL, &q, err);
    free(body);
    if (rc) return -1;
    r->messages_json = q.messages_json, q.messages_json = NULL;
    r->tools_json = q.tools_json, q.tools_json = NULL;
    oa_request_free(&q);
    return 0;
}

/* A token id of an array, checked against the vocabulary. */
static int get_id(const json_t *t, const char *name, size_t i, int32_t n_vocab, int32_t *out, oa_error *err) {
    char p[48];
    snprintf(p, sizeof p, "%s[%zu]", name, i);
    if (!json_is_integer(t)) return bad_type(err, p, "a token id (integer)", t);
    json_int_t id = json_integer_value(t);
    if (id < 0 || id > INT32_MAX || (n_vocab > 0 && id >= n_vocab))
        return fail(err, p, "'%s' = %lld is not a token id: the vocabulary has ids 0 to %d.", p, (long long)id,
                    n_vocab > 0 ? n_vocab - 1 : INT32_MAX);
    *out = (int32_t)id;
    return 0;
}

/* llama-server's "content" as an array: strings (tokenized) and token ids (kept). */
static int parse_parts(const json_t *v, int32_t n_vocab, tk_tokenize_req *r, oa_error *err) {
    size_t n = json_array_size(v);
    if (n > TK_MAX_IDS)
        return fail(err, "content", "'content' has too many elements: %zu (at most %d).", n, TK_MAX_IDS);
    if (!(r->parts = calloc(n ? n : 1, sizeof *r->parts))) return nomem(err);
    for (size_t i = 0; i < n; i++, r->n_parts++) {
        const json_t *e = json_array_get(v, i);
        tk_part *p = &r->parts[i];
        if (json_is_string(e)) {
            if (get_string(err, "content", e, &p->text, &p->len)) return -1;
        } else if (!json_is_integer(e)) {
            char name[48];
            snprintf(name, sizeof name, "content[%zu]", i);
            return bad_type(err, name, "a string or a token id", e);
        } else if (get_id(e, "content", i, n_vocab, &p->id, err)) {
            return -1;
        }
    }
    return 0;
}

int tk_tokenize_parse(const char *body, size_t len, int strict, int32_t n_vocab, tk_tokenize_req *r, oa_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    r->parse_special = 1;
    r->add_generation_prompt = 1;
    json_t *root;
    if (load_object(body, len, &root, err)) return -1;
    const json_t *content = json_object_get(root, "content"), *prompt = json_object_get(root, "prompt"),
                 *messages = json_object_get(root, "messages");
    int given = !!(content && !json_is_null(content)) + !!(prompt && !json_is_null(prompt)) +
                !!(messages && !json_is_null(messages));
    int rc = -1, add_special = -1;
    if (given != 1) {
        fail(err, given ? "content" : NULL,
             given ? "Give one of 'content' (llama.cpp), 'prompt' or 'messages' (vLLM), not several."
                   : "'content' (llama.cpp) or 'prompt' / 'messages' (vLLM) is required.");
        goto done;
    }
    r->dialect = content && !json_is_null(content) ? TK_LLAMA : TK_VLLM;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (json_is_null(v)) continue;
        int e = 0;
        if (!strcmp(key, "content") && json_is_array(v)) e = parse_parts(v, n_vocab, r, err);
        else if (!strcmp(key, "content") || !strcmp(key, "prompt")) e = get_string(err, key, v, &r->text, &r->text_len);
        else if (!strcmp(key, "messages") || !strcmp(key, "tools")) continue; /* below, together */
        else if (!strcmp(key, "chat_template_kwargs")) e = json_is_object(v) ? 0 : bad_type(err, key, "an object", v);
        else if (!strcmp(key, "model")) e = get_string(err, key, v, &r->model, NULL);
        else if (!strcmp(key, "add_special") || !strcmp(key, "add_special_tokens"))
            e = get_bool(err, key, v, &add_special);
        else if (!strcmp(key, "parse_special")) e = get_bool(err, key, v, &r->parse_special);
        else if (!strcmp(key, "with_pieces")) e = get_bool(err, key, v, &r->with_pieces);
        else if (!strcmp(key, "add_generation_prompt")) e = get_bool(err, key, v, &r->add_generation_prompt);
        else if (!strcmp(key, "return_token_strs")) e = get_bool(err, key, v, &r->return_token_strs);
        else e = unknown_field(err, strict, r->unknown, sizeof r->unknown, key);
        if (e) goto done;
    }
    const json_t *tools = json_object_get(root, "tools");
    if (tools && json_is_null(tools)) tools = NULL;
    if (tools && !(messages && !json_is_null(messages))) {
        fail(err, "tools", "'tools' needs 'messages'.");
        goto done;
    }
    if (messages && !json_is_null(messages) && parse_chat(messages, tools, r, err)) goto done;
    /* defaults: llama-server adds no BOS unless asked; vLLM adds it to a prompt, not to messages
     * (the template writes what the model needs) */
    r->add_special = add_special >= 0 ? add_special : (r->dialect == TK_VLLM && !r->messages_json);
    rc = 0;
done:
    json_decref(root);
    if (rc) tk_tokenize_free(r);
    return rc;
}

void tk_tokenize_free(tk_tokenize_req *r) {
    if (!r) return;
    free(r->model);
    free(r->text);
    for (size_t i = 0; i < r->n_parts; i++) free(r->parts[i].text);
    free(r->parts);
    free(r->messages_json);
    free(r->tools_json);
    memset(r, 0, sizeof *r);
}

static int parse_ids(const json_t *v, int32_t n_vocab, tk_detokenize_req *r, oa_error *err) {
    if (!json_is_array(v)) return bad_type(err, "tokens", "an array of token ids", v);
    size_t n = json_array_size(v);
    if (n > TK_MAX_IDS) return fail(err, "tokens", "'tokens' has too many ids: %zu (at most %d).", n, TK_MAX_IDS);
    if (!(r->ids = malloc((n ? n : 1) * sizeof *r->ids))) return nomem(err);
    for (size_t i = 0; i < n; i++)
        if (get_id(json_array_get(v, i), "tokens", i, n_vocab, &r->ids[i], err)) return -1;
    r->n_ids = n;
    return 0;
}

int tk_detokenize_parse(const char *body, size_t len, int strict, int32_t n_vocab, tk_detokenize_req *r,
                        oa_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    json_t *root;
    if (load_object(body, len, &root, err)) return -1;
    int rc = -1;
    const json_t *tokens = json_object_get(root, "tokens");
    if (!tokens || json_is_null(tokens)) {
        fail(err, "tokens", "'tokens' is required (an array of token ids).");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (json_is_null(v)) continue;
        int e = 0;
        if (!strcmp(key, "tokens")) e = parse_ids(v, n_vocab, r, err);
        else if (!strcmp(key, "model")) e = get_string(err, key, v, &r->model, NULL);
        else e = unknown_field(err, strict, r->unknown, sizeof r->unknown, key);
        if (e) goto done;
    }
    r->dialect = r->model ? TK_VLLM : TK_LLAMA;
    rc = 0;
done:
    json_decref(root);
    if (rc) tk_detokenize_free(r);
    return rc;
}

void tk_detokenize_free(tk_detokenize_req *r) {
    if (!r) return;
    free(r->model);
    free(r->ids);
    memset(r, 0, sizeof *r);
}
