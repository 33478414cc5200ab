/* Parsing the body of POST /v1/embeddings (see embeddings_request.h). */
#include "serve/embeddings_request.h"

#include "serve/openai_request.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(emb_error *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(emb_error *e, const char *param, const char *fmt, ...) {
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_id(const json_t *v) {
    return json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= INT32_MAX;
}

/* One array of token ids into in; -1 with err set. */
static int take_ids(emb_input *in, const json_t *a, const char *param, emb_error *err) {
    size_t n = json_array_size(a);
    if (n == 0) return fail(err, param, "'%s' is an empty list of token ids: each input must have at least one token", param);
    if (n > (size_t)INT32_MAX / 4) return fail(err, param, "'%s' has too many token ids", param);
    if (!(in->ids = malloc(n * sizeof *in->ids))) return fail(err, NULL, "out of memory");
    in->n_ids = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!is_id(v))
            return fail(err, param, "'%s'[%zu] must be a token id (an integer >= 0), not %s", param, i, oa_json_type_name(v));
        in->ids[i] = (int32_t)json_integer_value(v);
    }
    return 0;
}

static int take_text(emb_input *in, const json_t *s, const char *param, emb_error *err) {
    size_t n = json_string_length(s);
    if (n == 0) return fail(err, param, "'%s' is an empty string: each input must be a non-empty string", param);
    if (!(in->text = malloc(n + 1))) return fail(err, NULL, "out of memory");
    memcpy(in->text, json_string_value(s), n);
    in->text[n] = 0;
    in->text_len = n;
    return 0;
}

/* input: "text" | ["text", ...] | [id, ...] | [[id, ...], ...] */
static int parse_input(emb_request *r, const json_t *v, emb_error *err) {
    if (json_is_string(v)) {
        if (!(r->inputs = calloc(1, sizeof *r->inputs))) return fail(err, NULL, "out of memory");
        r->n_inputs = 1;
        return take_text(&r->inputs[0], v, "input", err);
    }
    if (!json_is_array(v))
        return fail(err, "input", "'input' must be a string, an array of strings, an array of token ids or an array of "
                                  "arrays of token ids, not %s", oa_json_type_name(v));
    size_t n = json_array_size(v);
    if (n == 0) return fail(err, "input", "'input' is an empty array: send at least one input");
    json_t *first = json_array_get(v, 0);
    if (is_id(first) || json_is_integer(first)) { /* one list of token ids */
        if (!(r->inputs = calloc(1, sizeof *r->inputs))) return fail(err, NULL, "out of memory");
        r->n_inputs = 1;
        return take_ids(&r->inputs[0], v, "input", err);
    }
    if (n > EMB_MAX_INPUTS)
        return fail(err, "input", "'input' has %zu items: at most %d inputs per request", n, EMB_MAX_INPUTS);
    if (!(r->inputs = calloc(n, sizeof *r->inputs))) return fail(err, NULL, "out of memory");
    r->n_inputs = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        char param[32];
        snprintf(param, sizeof param, "input[%zu]", i);
        if (json_is_string(x)) {
            if (!json_is_string(first)) return fail(err, "input", "'input' mixes strings and lists of token ids");
            if (take_text(&r->inputs[i], x, param, err)) return -1;
        } else if (json_is_array(x)) {
            if (!json_is_array(first)) return fail(err, "input", "'input' mixes strings and lists of token ids");
            if (take_ids(&r->inputs[i], x, param, err)) return -1;
        } else {
            return fail(err, "input", "'%s' must be a string or an array of token ids, not %s", param, oa_json_type_name(x));
        }
    }
    return 0;
}

int emb_request_parse(const char *body, size_t len, emb_request *r, emb_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    r->add_special = 1;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return fail(err, NULL, "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line,
                           jerr.column);
    int rc = -1, have_input = 0;
    if (!json_is_object(root)) {
        fail(err, NULL, "The request body must be a JSON object, not %s.", oa_json_type_name(root));
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "input")) {
            have_input = 1;
            if (parse_input(r, v, err)) goto out;
        } else if (!strcmp(key, "model")) {
            if (!json_is_string(v)) {
                fail(err, "model", "'model' must be a string, not %s", oa_json_type_name(v));
                goto out;
            }
            if (!(r->model = strdup(json_string_value(v)))) {
                fail(err, NULL, "out of memory");
                goto out;
            }
        } else if (!strcmp(key, "encoding_format")) {
            const char *f = json_string_value(v);
            if (json_is_null(v)) continue;
            if (!f || (strcmp(f, "float") && strcmp(f, "base64"))) {
                fail(err, "encoding_format", "'encoding_format' must be \"float\" or \"base64\"");
                goto out;
            }
            r->base64 = !strcmp(f, "base64");
        } else if (!strcmp(key, "dimensions")) {
            if (json_is_null(v)) continue;
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > EMB_MAX_DIMENSIONS) {
                fail(err, "dimensions", "'dimensions' must be an integer >= 1 (at most the model's embedding size)");
                goto out;
            }
            r->dimensions = (int32_t)json_integer_value(v);
        } else if (!strcmp(key, "truncate_prompt_tokens")) {
            if (json_is_null(v)) continue;
            if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) == 0 ||
                json_integer_value(v) > INT32_MAX) {
                fail(err, "truncate_prompt_tokens", "'truncate_prompt_tokens' must be -1 (the model's context) or an "
                                                    "integer >= 1 (keep the last k tokens)");
                goto out;
            }
            r->truncate = (int32_t)json_integer_value(v);
        } else if (!strcmp(key, "add_special_tokens")) {
            if (!json_is_boolean(v)) {
                fail(err, "add_special_tokens", "'add_special_tokens' must be a boolean, not %s", oa_json_type_name(v));
                goto out;
            }
            r->add_special = json_is_true(v);
        } else if (!strcmp(key, "user")) {
            if (!json_is_string(v) && !json_is_null(v)) {
                fail(err, "user", "'user' must be a string, not %s", oa_json_type_name(v));
                goto out;
            }
        } else {
            fail(err, key, "Unrecognized request argument supplied: %.60s", key);
            goto out;
        }
    }
    if (!have_input) {
        fail(err, "input", "'input' is a required property");
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    if (rc) emb_request_free(r);
    return rc;
}

void emb_request_free(emb_request *r) {
    if (!r) return;
    for (int32_t i = 0; r->inputs && i < r->n_inputs; i++) free(r->inputs[i].text), free(r->inputs[i].ids);
    free(r->inputs);
    free(r->model);
    memset(r, 0, sizeof *r);
}
