/* Structured-output request fields (see structured_request.h). */
#include "serve/structured_request.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pagoda.h"

typedef struct {
    so_constraint *so;
    char *param, *msg;
    size_t param_cap, msg_cap;
} so_ctx;

static int bad(so_ctx *c, const char *param, const char *fmt, ...) PG_PRINTF(3, 4);
static int bad(so_ctx *c, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->msg_cap, fmt, ap);
    va_end(ap);
    snprintf(c->param, c->param_cap, "%s", param);
    return -1;
}

/* Records the constraint (text: a string's bytes, or a value dumped as compact JSON). */
static int set(so_ctx *c, const char *field, int kind, const json_t *v) {
    if (c->so->kind)
        return bad(c, field, "'%s' and '%s' both constrain the output; give at most one.", c->so->field, field);
    char *text = NULL;
    size_t len = 0;
    if (v && json_is_string(v)) {
        len = json_string_length(v);
        if ((text = malloc(len + 1))) memcpy(text, json_string_value(v), len + 1);
    } else if (v) {
        text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        len = text ? strlen(text) : 0;
    } else {
        text = calloc(1, 1);
    }
    if (!text) return bad(c, field, "out of memory");
    c->so->kind = kind;
    c->so->text = text;
    c->so->len = len;
    snprintf(c->so->field, sizeof c->so->field, "%s", field);
    return 0;
}

/* A schema given as an object (or, for vLLM's guided_json, a JSON string holding one). */
static int set_schema(so_ctx *c, const char *field, const json_t *v) {
    if (json_is_boolean(v) || json_is_object(v)) return set(c, field, PAGODA_GRAMMAR_JSON_SCHEMA, v);
    if (json_is_string(v)) {
        json_error_t je;
        json_t *s = json_loadb(json_string_value(v), json_string_length(v), 0, &je);
        if (!s) return bad(c, field, "'%s' is not valid JSON: %s.", field, je.text);
        int rc = json_is_object(s) || json_is_boolean(s) ? set(c, field, PAGODA_GRAMMAR_JSON_SCHEMA, s)
                                                         : bad(c, field, "'%s' must be a JSON Schema object.", field);
        json_decref(s);
        return rc;
    }
    return bad(c, field, "'%s' must be a JSON Schema object.", field);
}

static int set_choice(so_ctx *c, const char *field, const json_t *v) {
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(c, field, "'%s' must be a non-empty array of strings.", field);
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!json_is_string(json_array_get(v, i))) return bad(c, field, "'%s[%zu]' must be a string.", field, i);
    return set(c, field, PAGODA_GRAMMAR_CHOICE, v);
}

static int set_string(so_ctx *c, const char *field, int kind, const json_t *v) {
    if (!json_is_string(v) || json_string_length(v) == 0) return bad(c, field, "'%s' must be a non-empty string.", field);
    return set(c, field, kind, v);
}

static int response_format(so_ctx *c, const json_t *v) {
    if (!json_is_object(v)) return bad(c, "response_format", "'response_format' must be an object.");
    const json_t *t = json_object_get(v, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "";
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object")) return set(c, "response_format", PAGODA_GRAMMAR_JSON_OBJECT, NULL);
    if (!strcmp(type, "json_schema")) {
        const json_t *js = json_object_get(v, "json_schema");
        if (!json_is_object(js))
            return bad(c, "response_format.json_schema", "'response_format.json_schema' must be an object with a 'schema'.");
        const json_t *s = json_object_get(js, "schema");
        if (!s) s = json_object_get(js, "json_schema"); /* a common client mistake, as vLLM accepts */
        if (!s) return bad(c, "response_format.json_schema.schema", "'response_format.json_schema.schema' is required.");
        return set_schema(c, "response_format.json_schema.schema", s);
    }
    if (!strcmp(type, "regex") || !strcmp(type, "grammar") || !strcmp(type, "choice")) {
        /* some clients send vLLM's kinds here: {"type": "regex", "regex": "..."} */
        const json_t *x = json_object_get(v, type);
        if (!x) return bad(c, "response_format", "'response_format.%s' is required.", type);
        return !strcmp(type, "choice") ? set_choice(c, "response_format.choice", x)
                                       : set_string(c, "response_format", !strcmp(type, "regex") ? PAGODA_GRAMMAR_REGEX : PAGODA_GRAMMAR_GBNF, x);
    }
    return bad(c, "response_format.type",
               "'response_format.type' must be 'text', 'json_object' or 'json_schema', got '%.40s'.", type);
}

static int structured_outputs(so_ctx *c, const json_t *v) {
    if (!json_is_object(v)) return bad(c, "structured_outputs", "'structured_outputs' must be an object.");
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
        char f[64];
        snprintf(f, sizeof f, "structured_outputs.%.40s", k);
        int rc = 0;
        if (json_is_null(x)) continue;
        if (!strcmp(k, "json")) rc = set_schema(c, f, x);
        else if (!strcmp(k, "regex")) rc = set_string(c, f, PAGODA_GRAMMAR_REGEX, x);
        else if (!strcmp(k, "choice")) rc = set_choice(c, f, x);
        else if (!strcmp(k, "grammar")) rc = set_string(c, f, PAGODA_GRAMMAR_GBNF, x);
        else if (!strcmp(k, "json_object")) {
            if (!json_is_boolean(x)) return bad(c, f, "'%s' must be a boolean.", f);
            if (json_is_true(x)) rc = set(c, f, PAGODA_GRAMMAR_JSON_OBJECT, NULL);
        } else if (!strcmp(k, "disable_any_whitespace") || !strcmp(k, "disable_fallback") ||
                   !strcmp(k, "disable_additional_properties")) {
            if (!json_is_boolean(x)) return bad(c, f, "'%s' must be a boolean.", f);
        } else if (!strcmp(k, "whitespace_pattern")) {
            return bad(c, f, "'%s' is not supported: JSON output is compact (no whitespace between tokens).", f);
        } else if (!strcmp(k, "structural_tag")) {
            return bad(c, f, "'%s' is not supported by this server.", f);
        } else {
            return bad(c, f, "Unrecognized request argument supplied: %s", f);
        }
        if (rc) return rc;
    }
    return 0;
}

/* llama.cpp's grammar_triggers: words, as strings or {"type": "word", "value": "..."} */
static int triggers(so_ctx *c, const json_t *v) {
    const char *f = "grammar_triggers";
    if (!json_is_array(v)) return bad(c, f, "'%s' must be an array of words.", f);
    if (json_array_size(v) > SO_MAX_TRIGGERS) return bad(c, f, "'%s' has %zu entries; at most %d are allowed.", f, json_array_size(v), SO_MAX_TRIGGERS);
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        const json_t *w = t;
        if (json_is_object(t)) {
            const json_t *type = json_object_get(t, "type");
            if (type && !(json_is_string(type) && !strcmp(json_string_value(type), "word")))
                return bad(c, f, "'%s[%zu].type': only \"word\" triggers are supported.", f, i);
            w = json_object_get(t, "value");
        }
        size_t l = json_string_length(w);
        if (!json_is_string(w) || l == 0 || l > SO_MAX_TRIGGER_LEN || memchr(json_string_value(w), 0, l))
            return bad(c, f, "'%s[%zu]' must be a word of 1 to %d bytes.", f, i, SO_MAX_TRIGGER_LEN);
        char *d = strdup(json_string_value(w));
        if (!d) return bad(c, f, "out of memory");
        c->so->triggers[c->so->n_triggers++] = d;
    }
    return 0;
}

int so_parse_field(const char *key, const json_t *v, so_constraint *so, char *param, size_t param_cap, char *msg,
                   size_t msg_cap) {
    so_ctx c = {so, param, msg, param_cap, msg_cap};
    if (!strcmp(key, "response_format")) return response_format(&c, v);
    if (!strcmp(key, "structured_outputs")) return structured_outputs(&c, v);
    if (!strcmp(key, "guided_json") || !strcmp(key, "json_schema")) return set_schema(&c, key, v);
    if (!strcmp(key, "guided_regex")) return set_string(&c, key, PAGODA_GRAMMAR_REGEX, v);
    if (!strcmp(key, "guided_choice")) return set_choice(&c, key, v);
    if (!strcmp(key, "guided_grammar") || !strcmp(key, "grammar")) return set_string(&c, key, PAGODA_GRAMMAR_GBNF, v);
    if (!strcmp(key, "grammar_lazy")) {
        if (!json_is_boolean(v)) return bad(&c, key, "'%s' must be a boolean.", key);
        so->lazy = json_is_true(v);
        return 0;
    }
    if (!strcmp(key, "grammar_triggers")) return triggers(&c, v);
    if (!strcmp(key, "guided_decoding_backend")) return json_is_string(v) ? 0 : bad(&c, key, "'%s' must be a string.", key);
    if (!strcmp(key, "guided_whitespace_pattern"))
        return bad(&c, key, "'%s' is not supported: JSON output is compact (no whitespace between tokens).", key);
    return 1;
}

void so_constraint_free(so_constraint *so) {
    if (!so) return;
    free(so->text);
    for (int i = 0; i < so->n_triggers; i++) free(so->triggers[i]);
    memset(so, 0, sizeof *so);
}
