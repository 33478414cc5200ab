/* OpenAI request parsing and validation (see openai_request.h). Untrusted input: every field is
 * type-checked and range-checked, unknown fields are ignored and named for a warning (or, strict,
 * rejected by name), and a failure leaves no allocation behind. Fields land directly in the
 * engine's pagoda_request (oa_request.pr). */
#include "serve/openai_request.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct {
    oa_request *r;
    oa_error *err;
    int32_t n_vocab; /* 0: token ids are not checked against a vocabulary */
    int strict;      /* unknown fields are errors */
    int max_tokens_given;
    int n_predict_unlimited; /* "n_predict": -1 (and no max_tokens): up to the context's end */
    /* fields whose checks need others (JSON object keys come in any order) */
    int has_stream_options, has_top_logprobs, chat_logprobs, top_logprobs;
    long long best_of;
    int tool_choice_none;
    json_t *tools; /* borrowed from the parsed body */
} ctx;

static int fail(ctx *c, int status, const char *param, const char *fmt, ...) PG_PRINTF(4, 5);
static int fail(ctx *c, int status, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    c->err->status = status;
    c->err->type = "invalid_request_error";
    snprintf(c->err->param, sizeof c->err->param, "%s", param ? param : "");
    return -1;
}

const char *oa_json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

static int bad_type(ctx *c, const char *name, const char *want, const json_t *v) {
    return fail(c, 400, name, "Invalid type for '%s': expected %s, but got %s instead.", name, want, oa_json_type_name(v));
}

size_t oa_utf8_valid_prefix(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned min;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) n = 1, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) n = 2, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) n = 3, min = 0x10000;
        else return i;
        if (len - i <= n) return i;
        unsigned cp = c & (0x3F >> n);
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n + 1;
    }
    return len;
}

static char *dup_str(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int nomem(ctx *c) { return fail(c, 500, NULL, "out of memory while parsing the request"); }

static int get_bool(ctx *c, const char *name, const json_t *v, int *out) {
    if (!json_is_boolean(v)) return bad_type(c, name, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

/* Integers; a real with an integral value (16.0) is accepted too. */
static int get_int(ctx *c, const char *name, const json_t *v, long long lo, long long hi, long long *out) {
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d == floor(d)) || d < -9.2e18 || d > 9.2e18) return bad_type(c, name, "an integer", v);
        x = (long long)d;
    } else {
        return bad_type(c, name, "an integer", v);
    }
    if (x < lo) return fail(c, 400, name, "'%s' must be at least %lld, got %lld.", name, lo, x);
    if (x > hi) return fail(c, 400, name, "'%s' is too large: %lld (at most %lld).", name, x, hi);
    *out = x;
    return 0;
}

static int get_float(ctx *c, const char *name, const json_t *v, double lo, double hi, int lo_open, float *out) {
    if (!json_is_number(v)) return bad_type(c, name, "a number", v);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi || (lo_open && d == lo))
        return fail(c, 400, name, "'%s' must be %s %g and <= %g, got %g.", name, lo_open ? ">" : ">=", lo, hi, d);
    *out = (float)d;
    return 0;
}

/* A field this server does not know: 400 when strict, else ignored and named in r->unknown (the
 * server logs one warning per request naming them, as vLLM does). */
static int unknown(ctx *c, const char *name, const char *what) {
    if (c->strict) return fail(c, 400, name, "%s: '%.120s'.", what, name);
    char *list = c->r->unknown;
    size_t n = strlen(list), cap = sizeof c->r->unknown;
    if (n + 2 < cap) snprintf(list + n, cap - n, "%s%.80s", n ? ", " : "", name);
    return 0;
}

static int unsupported(ctx *c, const char *name, const char *why) {
    return fail(c, 400, name, "'%s' is not supported by this server%s%s.", name, why ? ": " : "", why ? why : "");
}

/* ---- prompt (completions) ---- */

static int ids_from_array(ctx *c, const char *name, const json_t *a, oa_prompt *out) {
    size_t n = json_array_size(a);
    if (n == 0) return fail(c, 400, name, "'%s' must not be empty.", name);
    if (n > OA_MAX_PROMPT_IDS) return fail(c, 400, name, "'%s' has too many tokens: %zu (at most %d).", name, n, OA_MAX_PROMPT_IDS);
    int32_t *ids = malloc(n * sizeof *ids);
    if (!ids) return nomem(c);
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(a, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
            free(ids);
            char p[128];
            snprintf(p, sizeof p, "%.80s[%zu]", name, i);
            if (!json_is_integer(t)) return bad_type(c, p, "a token id (integer)", t);
            return fail(c, 400, p, "'%s' must be a token id (>= 0), got %lld.", p, (long long)json_integer_value(t));
        }
        ids[i] = (int32_t)json_integer_value(t);
        if (c->n_vocab > 0 && ids[i] >= c->n_vocab) {
            free(ids);
            return fail(c, 400, name, "Prompt token %d (position %zu) is out of range: the vocabulary has %d tokens.",
                        (int)json_integer_value(t), i, c->n_vocab);
        }
    }
    out->ids = ids;
    out->n_ids = (int32_t)n;
    return 0;
}

/* "prompt": a string, a token list, or a list of strings / token lists (one prompt each) */
static int parse_prompt(ctx *c, const json_t *v) {
    static const char *want = "a string, an array of token ids, or an array of strings or of token-id arrays";
    oa_request *r = c->r;
    const int list = json_is_array(v) && json_array_size(v) > 0 && !json_is_integer(json_array_get(v, 0));
    if (!json_is_string(v) && !json_is_array(v)) return bad_type(c, "prompt", want, v);
    size_t n = list ? json_array_size(v) : 1;
    if (json_is_array(v) && json_array_size(v) == 0) return fail(c, 400, "prompt", "'prompt' must not be empty.");
    if (n > OA_MAX_PROMPTS) return fail(c, 400, "prompt", "'prompt' has too many prompts: %zu (at most %d).", n, OA_MAX_PROMPTS);
    if (!(r->prompts = calloc(n, sizeof *r->prompts))) return nomem(c);
    r->n_prompts = (int32_t)n;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = list ? json_array_get(v, i) : v;
        char name[40];
        snprintf(name, sizeof name, list ? "prompt[%zu]" : "prompt", i);
        if (json_is_string(e)) {
            if (!(r->prompts[i].text = dup_str(json_string_value(e), json_string_length(e)))) return nomem(c);
        } else if (json_is_array(e) && (!list || json_array_size(e) == 0 || json_is_integer(json_array_get(e, 0)) ||
                                        !json_is_array(json_array_get(e, 0)))) {
            if (ids_from_array(c, name, e, &r->prompts[i])) return -1;
        } else {
            return bad_type(c, name, list ? "a string or an array of token ids" : want, e);
        }
    }
    return 0;
}

/* ---- messages (chat) ---- */

static int parse_content(ctx *c, const char *name, const json_t *v, json_t **out) {
    if (json_is_string(v)) {
        *out = json_stringn(json_string_value(v), json_string_length(v));
        return *out ? 0 : nomem(c);
    }
    if (!json_is_array(v)) return bad_type(c, name, "a string or an array of content parts", v);
    /* text parts are joined with newlines, as vLLM does */
    size_t total = 0, n = json_array_size(v);
    for (size_t i = 0; i < n; i++) {
        const json_t *part = json_array_get(v, i);
        char p[128];
        snprintf(p, sizeof p, "%.80s[%zu]", name, i);
        if (!json_is_object(part)) return bad_type(c, p, "an object", part);
        const json_t *type = json_object_get(part, "type");
        if (!json_is_string(type)) return fail(c, 400, p, "'%s.type' must be a string such as \"text\".", p);
        if (strcmp(json_string_value(type), "text") != 0)
            return fail(c, 400, p, "content parts of type '%s' are not supported (only \"text\"): '%s'.", json_string_value(type), p);
        const json_t *text = json_object_get(part, "text");
        if (!json_is_string(text)) {
            snprintf(p + strlen(p), sizeof p - strlen(p), ".text");
            return text ? bad_type(c, p, "a string", text) : fail(c, 400, p, "'%s' is required.", p);
        }
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)part, key, val) {
            if (strcmp(key, "type") && strcmp(key, "text")) {
                char q[192];
                snprintf(q, sizeof q, "%.120s.%.40s", p, key);
                if (unknown(c, q, "Unrecognized field in a text content part")) return -1;
            }
        }
        total += json_string_length(text) + 1;
    }
    char *buf = malloc(total + 1), *w = buf;
    if (!buf) return nomem(c);
    for (size_t i = 0; i < n; i++) {
        const json_t *text = json_object_get(json_array_get(v, i), "text");
        if (i) *w++ = '\n';
        memcpy(w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    *out = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return *out ? 0 : nomem(c);
}

/* An assistant message's tool_calls: [{"id", "type": "function", "function": {"name", "arguments"}}].
 * Arguments come as a JSON string (OpenAI) and chat templates read them as a mapping
 * (`tool_call.arguments | tojson`, Qwen, Llama 3.1, Mistral) or accept either (Qwen3): a string
 * that holds a JSON object is replaced by that object, as vLLM does; other strings stay. */
static int parse_tool_calls(ctx *c, const char *name, const json_t *v, json_t **out) {
    *out = NULL;
    if (!json_is_array(v)) return bad_type(c, name, "an array", v);
    size_t i;
    const json_t *cv;
    json_array_foreach(v, i, cv) { /* validated on the request's own tree: errors name its nodes */
        char p[192];
        snprintf(p, sizeof p, "%.120s[%zu]", name, i);
        if (!json_is_object(cv)) return bad_type(c, p, "an object", cv);
        const json_t *f = json_object_get(cv, "function");
        snprintf(p + strlen(p), sizeof p - strlen(p), ".function");
        if (!json_is_object(f)) return f ? bad_type(c, p, "an object", f) : fail(c, 400, p, "'%s' is required.", p);
        const json_t *fname = json_object_get(f, "name");
        if (!json_is_string(fname)) {
            snprintf(p + strlen(p), sizeof p - strlen(p), ".name");
            return fname ? bad_type(c, p, "a string", fname) : fail(c, 400, p, "'%s' is required.", p);
        }
    }
    if (!(*out = json_deep_copy(v))) return nomem(c);
    json_t *call;
    json_array_foreach(*out, i, call) {
        json_t *f = json_object_get(call, "function");
        json_t *args = json_object_get(f, "arguments");
        if (json_is_string(args)) {
            json_t *obj = json_loadb(json_string_value(args), json_string_length(args), JSON_REJECT_DUPLICATES, NULL);
            if (json_is_object(obj)) json_object_set_new(f, "arguments", obj);
            else json_decref(obj);
        }
    }
    return 0;
}

/* The request's tools: [{"type": "function", "function": {"name", ...}}]. */
static int check_tools(ctx *c, const json_t *v) {
    if (!json_is_array(v)) return bad_type(c, "tools", "an array", v);
    size_t i;
    const json_t *t;
    json_array_foreach(v, i, t) {
        char p[96];
        snprintf(p, sizeof p, "tools[%zu]", i);
        if (!json_is_object(t)) return bad_type(c, p, "an object", t);
        const json_t *type = json_object_get(t, "type"), *f = json_object_get(t, "function");
        if (!json_is_string(type) || strcmp(json_string_value(type), "function"))
            return fail(c, 400, p, "'%s.type' must be \"function\".", p);
        if (!json_is_object(f)) {
            snprintf(p + strlen(p), sizeof p - strlen(p), ".function");
            return f ? bad_type(c, p, "an object", f) : fail(c, 400, p, "'%s' is required.", p);
        }
        const json_t *n = json_object_get(f, "name");
        snprintf(p + strlen(p), sizeof p - strlen(p), ".function.name");
        if (!json_is_string(n)) return n ? bad_type(c, p, "a string", n) : fail(c, 400, p, "'%s' is required.", p);
        if (json_string_length(n) == 0 || json_string_length(n) > 256 || strlen(json_string_value(n)) != json_string_length(n))
            return fail(c, 400, p, "'%s' must be a name of 1 to 256 characters.", p);
        const json_t *params = json_object_get(f, "parameters");
        snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
        if (params && !json_is_null(params) && !json_is_object(params)) return bad_type(c, p, "an object (a JSON Schema)", params);
    }
    return 0;
}

/* "none" | "auto" | "required" | {"type": "function", "function": {"name": N}} (also Responses'
 * flat {"type": "function", "name": N}); whether N is one of the tools is checked at the end */
static int parse_tool_choice(ctx *c, const json_t *v) {
    oa_request *r = c->r;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "none")) return c->tool_choice_none = 1, 0;
        if (!strcmp(s, "auto")) return 0;
        if (!strcmp(s, "required")) return r->tool_choice = OA_TOOL_CHOICE_REQUIRED, 0;
        return fail(c, 400, "tool_choice", "'tool_choice' must be \"none\", \"auto\", \"required\" or a function; got '%.64s'.", s);
    }
    if (!json_is_object(v)) return bad_type(c, "tool_choice", "a string or an object", v);
    const json_t *type = json_object_get(v, "type"), *f = json_object_get(v, "function");
    if (!json_is_string(type) || strcmp(json_string_value(type), "function"))
        return fail(c, 400, "tool_choice.type", "'tool_choice.type' must be \"function\".");
    const json_t *n = json_is_object(f) ? json_object_get(f, "name") : json_object_get(v, "name");
    if (!json_is_string(n) || json_string_length(n) == 0)
        return fail(c, 400, "tool_choice.function.name", "'tool_choice.function.name' is required (a function name).");
    free(r->tool_choice_name);
    if (!(r->tool_choice_name = dup_str(json_string_value(n), json_string_length(n)))) return nomem(c);
    r->tool_choice = OA_TOOL_CHOICE_NAMED;
    return 0;
}

/* tool_choice against the tools: a named function must be one of them; required needs tools */
static int check_tool_choice(ctx *c) {
    oa_request *r = c->r;
    if (c->tool_choice_none || r->tool_choice == OA_TOOL_CHOICE_AUTO) return 0;
    if (!c->tools || !json_array_size(c->tools))
        return fail(c, 400, "tool_choice", "'tool_choice' \"%s\" needs 'tools'.",
                    r->tool_choice == OA_TOOL_CHOICE_REQUIRED ? "required" : "function");
    if (r->constraint.kind)
        return fail(c, 400, "tool_choice", "'tool_choice' cannot be combined with '%s': both constrain the output.",
                    r->constraint.field);
    if (r->tool_choice == OA_TOOL_CHOICE_REQUIRED) return 0;
    size_t i;
    const json_t *t;
    json_array_foreach(c->tools, i, t) {
        const char *name = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (name && !strcmp(name, r->tool_choice_name)) return 0;
    }
    return fail(c, 400, "tool_choice", "'tool_choice' names the function '%.128s', which is not in 'tools'.",
                r->tool_choice_name);
}

static int parse_message(ctx *c, size_t i, const json_t *m, json_t *out_arr) {
    char name[64], p[128];
    snprintf(name, sizeof name, "messages[%zu]", i);
    if (!json_is_object(m)) return bad_type(c, name, "an object", m);
    const json_t *role = json_object_get(m, "role");
    snprintf(p, sizeof p, "%s.role", name);
    if (!role) return fail(c, 400, p, "'%s' is required.", p);
    if (!json_is_string(role)) return bad_type(c, p, "a string", role);
    const char *rs = json_string_value(role);
    static const char *roles[] = {"system", "developer", "user", "assistant", "tool"};
    int ok = 0;
    for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++) ok |= !strcmp(rs, roles[k]);
    if (!ok)
        return fail(c, 400, p, "'%s' must be one of system, developer, user, assistant, tool; got '%.64s'.", p, rs);
    json_t *msg = json_object();
    if (!msg || json_array_append_new(out_arr, msg)) return nomem(c);
    /* templates know "system"; "developer" is OpenAI's newer name for it */
    json_object_set_new(msg, "role", json_string(!strcmp(rs, "developer") ? "system" : rs));
    const json_t *content = json_object_get(m, "content");
    snprintf(p, sizeof p, "%s.content", name);
    json_t *cv = NULL;
    if (content && !json_is_null(content)) {
        if (parse_content(c, p, content, &cv)) return -1;
    } else if (!strcmp(rs, "assistant") && json_object_get(m, "tool_calls")) {
        cv = json_string("");
    } else {
        return fail(c, 400, p, "'%s' is required.", p);
    }
    if (!cv || json_object_set_new(msg, "content", cv)) return nomem(c);
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)m, key, val) {
        snprintf(p, sizeof p, "%s.%.40s", name, key);
        if (!strcmp(key, "role") || !strcmp(key, "content")) continue;
        if (!strcmp(key, "name") || !strcmp(key, "tool_call_id")) {
            if (json_is_null(val)) continue;
            if (!json_is_string(val)) return bad_type(c, p, "a string", val);
            json_object_set(msg, key, val);
        } else if (!strcmp(key, "tool_calls")) {
            if (json_is_null(val)) continue;
            json_t *calls = NULL;
            if (parse_tool_calls(c, p, val, &calls)) return -1;
            json_object_set_new(msg, key, calls);
        } else if (!strcmp(key, "refusal") || !strcmp(key, "reasoning_content") || !strcmp(key, "reasoning") ||
                   !strcmp(key, "audio")) {
            continue; /* earlier assistant output that the templates do not use */
        } else if (unknown(c, p, "Unrecognized field in a message")) {
            return -1;
        }
    }
    return 0;
}

static int parse_messages(ctx *c, const json_t *v) {
    if (!json_is_array(v)) return bad_type(c, "messages", "an array", v);
    size_t n = json_array_size(v);
    if (n == 0) return fail(c, 400, "messages", "'messages' must be a non-empty array.");
    if (n > OA_MAX_MESSAGES) return fail(c, 400, "messages", "too many messages: %zu (at most %d).", n, OA_MAX_MESSAGES);
    json_t *arr = json_array();
    if (!arr) return nomem(c);
    for (size_t i = 0; i < n; i++)
        if (parse_message(c, i, json_array_get(v, i), arr)) {
            json_decref(arr);
            return -1;
        }
    c->r->messages_json = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    return c->r->messages_json ? 0 : nomem(c);
}

/* ---- stop ---- */

static int add_stop(ctx *c, const char *name, const json_t *s) {
    if (!json_is_string(s)) return bad_type(c, name, "a string", s);
    size_t len = json_string_length(s);
    if (len == 0) return 0; /* an empty stop string would end every completion at once: ignore it */
    if (len > OA_MAX_STOP_BYTES)
        return fail(c, 400, name, "'%s' is too long: %zu bytes (at most %d).", name, len, OA_MAX_STOP_BYTES);
    if (c->r->pr.n_stop >= OA_MAX_STOP) return fail(c, 400, "stop", "too many stop strings (at most %d).", OA_MAX_STOP);
    if (!(c->r->stop[c->r->pr.n_stop] = dup_str(json_string_value(s), len))) return nomem(c);
    c->r->pr.n_stop++;
    return 0;
}

static int parse_stop(ctx *c, const json_t *v) {
    if (json_is_string(v)) return add_stop(c, "stop", v);
    if (!json_is_array(v)) return bad_type(c, "stop", "a string or an array of strings", v);
    if (json_array_size(v) > OA_MAX_STOP)
        return fail(c, 400, "stop", "too many stop strings: %zu (at most %d).", json_array_size(v), OA_MAX_STOP);
    for (size_t i = 0; i < json_array_size(v); i++) {
        char p[32];
        snprintf(p, sizeof p, "stop[%zu]", i);
        if (add_stop(c, p, json_array_get(v, i))) return -1;
    }
    return 0;
}

/* ---- logit_bias: {"token id": bias, ...} ---- */

static int parse_logit_bias(ctx *c, const json_t *v) {
    static const char *name = "logit_bias";
    if (!json_is_object(v)) return bad_type(c, name, "an object mapping token ids to biases", v);
    size_t n = json_object_size(v);
    if (n == 0) return 0;
    if (n > OA_MAX_LOGIT_BIAS)
        return fail(c, 400, name, "'logit_bias' has too many entries: %zu (at most %d).", n, OA_MAX_LOGIT_BIAS);
    pagoda_logit_bias *b = malloc(n * sizeof *b);
    if (!b) return nomem(c);
    c->r->logit_bias = b;
    c->r->pr.logit_bias = b;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        /* keys are token ids written in decimal ("50256"); a sign is read only to name the range */
        const char *p = key + (*key == '-');
        long long id = 0;
        int digits = 0, big = 0;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (id > (INT64_MAX - 9) / 10) big = 1;
            else id = id * 10 + (*p - '0');
        }
        if (!digits || *p)
            return fail(c, 400, name, "'logit_bias' keys must be token ids (integers written as strings), got '%.64s'.",
                        key);
        if (*key == '-') id = -id;
        if (big || id < 0 || (c->n_vocab > 0 && id >= c->n_vocab) || id > INT32_MAX) {
            if (c->n_vocab > 0)
                return fail(c, 400, name,
                            "'logit_bias' token id %.64s is out of range: the vocabulary has %d tokens (ids 0 to %d).",
                            key, c->n_vocab, c->n_vocab - 1);
            return fail(c, 400, name, "'logit_bias' token id %.64s is out of range.", key);
        }
        if (!json_is_number(val))
            return fail(c, 400, name, "Invalid type for 'logit_bias' entry '%.64s': expected a number, but got %s instead.",
                        key, oa_json_type_name(val));
        double d = json_number_value(val);
        if (!isfinite(d) || d < -100 || d > 100)
            return fail(c, 400, name, "'logit_bias' entry '%.64s' must be a bias in [-100, 100], got %g.", key, d);
        b[c->r->pr.n_logit_bias].token = (int32_t)id;
        b[c->r->pr.n_logit_bias].bias = (float)d;
        c->r->pr.n_logit_bias++;
    }
    return 0;
}

/* ---- one top-level field ---- */

static int is_any(const char *key, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(key, *names)) return 1;
    return 0;
}

/* accepted and ignored: bookkeeping fields OpenAI clients may send */
static const char *const k_ignored[] = {"user", "store", "metadata", "service_tier", "safety_identifier",
                                        "prompt_cache_key", "prompt_cache_retention", NULL};
/* llama-server's and vLLM's fields that need nothing here (or are another part's): accepted
 * without a warning. cache_prompt: prefix caching is always on; chat_template_kwargs: the
 * template layer takes no extra variables yet (checked to be an object, then not used). */
static const char *const k_ignored_compat[] = {"cache_prompt", "id_slot", "samplers", "t_max_predict_ms",
                                               "timings_per_token", "return_progress",
                                               "n_cmpl", "priority", "request_id", NULL};
/* SGLang's fields that sglang-router and vllm-router add to every request they forward, at values
 * that ask for what pagoda does anyway: stop strings trimmed, the last message not continued, no
 * hidden states. Accepted without a warning at those values only; any other value is an unknown
 * field (a warning, or 400 when strict). The reasoning switches mean nothing without a reasoning
 * parser (pagoda has none: reasoning stays in the content), so any boolean passes. */
static const char *const k_router_false[] = {"no_stop_trim", "continue_final_message", "return_hidden_states", NULL};
static const char *const k_router_any_bool[] = {"separate_reasoning", "stream_reasoning", "include_reasoning", NULL};
/* OpenAI chat fields this server does not implement */
static const char *const k_unsupported_chat[] = {"functions", "function_call", "audio", "prediction",
                                                 "web_search_options", "reasoning_effort", "verbosity",
                                                 "moderation", "prompt_cache_options", NULL};

static int parse_field(ctx *c, const char *key, json_t *v) {
    oa_request *r = c->r;
    pagoda_request *pr = &r->pr;
    pagoda_sampling *sp = &pr->sampling;
    const int chat = r->kind == OA_CHAT;
    long long x;
    if (is_any(key, k_ignored)) return 0;
    int so = so_parse_field(key, v, &r->constraint, c->err->param, sizeof c->err->param, c->err->message,
                            sizeof c->err->message);
    if (so <= 0) {
        if (so < 0) c->err->status = 400, c->err->type = "invalid_request_error";
        return so;
    }
    if (!strcmp(key, "model")) {
        if (!json_is_string(v)) return bad_type(c, key, "a string", v);
        if (!(r->model = dup_str(json_string_value(v), json_string_length(v)))) return nomem(c);
        return 0;
    }
    if (!strcmp(key, "stream")) return get_bool(c, key, v, &r->stream);
    if (!strcmp(key, "stream_options")) {
        if (!json_is_object(v)) return bad_type(c, key, "an object", v);
        c->has_stream_options = 1;
        const char *k2;
        json_t *v2;
        json_object_foreach(v, k2, v2) {
            char p[96];
            snprintf(p, sizeof p, "stream_options.%.60s", k2);
            if (!strcmp(k2, "include_usage")) {
                if (!json_is_null(v2) && get_bool(c, p, v2, &r->include_usage)) return -1;
            } else if (!strcmp(k2, "include_obfuscation") || !strcmp(k2, "continuous_usage_stats")) {
                if (!json_is_null(v2) && !json_is_boolean(v2)) return bad_type(c, p, "a boolean", v2);
            } else if (unknown(c, p, "Unrecognized request argument supplied")) {
                return -1;
            }
        }
        return 0;
    }
    if (!strcmp(key, "max_tokens") || (chat && !strcmp(key, "max_completion_tokens"))) {
        /* completions: 0 is allowed with echo (the prompt scored, nothing generated) */
        if (get_int(c, key, v, chat ? 1 : 0, OA_MAX_TOKENS_CAP, &x)) return -1;
        if (!chat) r->max_tokens_zero = x == 0;
        /* max_completion_tokens wins when both are given */
        if (!strcmp(key, "max_completion_tokens") || !c->max_tokens_given || !chat) pr->max_tokens = (int32_t)x;
        c->max_tokens_given = 1;
        return 0;
    }
    if (!strcmp(key, "n_predict")) { /* llama-server's max_tokens (-1: until the context ends); max_tokens wins */
        if (get_int(c, key, v, -1, OA_MAX_TOKENS_CAP, &x)) return -1;
        if (x == 0) return fail(c, 400, key, "'n_predict' must be at least 1 (or -1: no limit), got 0.");
        if (!c->max_tokens_given) pr->max_tokens = x < 0 ? 0 : (int32_t)x;
        c->n_predict_unlimited = x < 0;
        return 0;
    }
    if (!strcmp(key, "temperature")) return get_float(c, key, v, 0, 2, 0, &sp->temperature);
    if (!strcmp(key, "top_p")) return get_float(c, key, v, 0, 1, 0, &sp->top_p);
    if (!strcmp(key, "min_p")) return get_float(c, key, v, 0, 1, 0, &sp->min_p);
    if (!strcmp(key, "presence_penalty")) return get_float(c, key, v, -2, 2, 0, &sp->presence_penalty);
    if (!strcmp(key, "frequency_penalty")) return get_float(c, key, v, -2, 2, 0, &sp->frequency_penalty);
    if (!strcmp(key, "repetition_penalty")) return get_float(c, key, v, 0, 10, 1, &sp->repetition_penalty);
    if (!strcmp(key, "top_k")) {
        if (get_int(c, key, v, -1, 1 << 24, &x)) return -1;
        sp->top_k = (int32_t)x;
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (get_int(c, key, v, INT64_MIN, INT64_MAX, &x)) return -1;
        sp->seed = (int64_t)((uint64_t)x & (uint64_t)INT64_MAX); /* any integer is a valid seed */
        return 0;
    }
    if (!strcmp(key, "n")) {
        if (get_int(c, key, v, 1, OA_MAX_N, &x)) return -1;
        pr->n = (int32_t)x;
        return 0;
    }
    if (!strcmp(key, "stop")) return parse_stop(c, v);
    if (!strcmp(key, "stop_token_ids")) {
        if (!json_is_array(v)) return bad_type(c, key, "an array of token ids", v);
        if (json_array_size(v) > OA_MAX_STOP_TOKEN_IDS)
            return fail(c, 400, key, "too many stop_token_ids: %zu (at most %d).", json_array_size(v), OA_MAX_STOP_TOKEN_IDS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            char p[40];
            snprintf(p, sizeof p, "stop_token_ids[%zu]", i);
            if (get_int(c, p, json_array_get(v, i), 0, c->n_vocab > 0 ? c->n_vocab - 1 : INT32_MAX, &x)) return -1;
            r->stop_token_ids[pr->n_stop_token_ids++] = (int32_t)x;
        }
        return 0;
    }
    if (!strcmp(key, "ignore_eos")) return get_bool(c, key, v, &pr->ignore_eos);
    if (!strcmp(key, "speculative")) { /* false: no drafts for this request (the server's --speculative) */
        int on = 1;
        if (get_bool(c, key, v, &on)) return -1;
        pr->no_speculation = !on;
        return 0;
    }
    if (!strcmp(key, "min_tokens")) { /* vLLM: no end of generation before this many tokens */
        if (get_int(c, key, v, 0, OA_MAX_TOKENS_CAP, &x)) return -1;
        pr->min_tokens = (int32_t)x;
        return 0;
    }
    if (!strcmp(key, "skip_special_tokens")) return get_bool(c, key, v, &pr->skip_special);
    if (!strcmp(key, "logit_bias")) return parse_logit_bias(c, v);
    if (!chat) {
        if (!strcmp(key, "prompt")) return parse_prompt(c, v);
        if (!strcmp(key, "suffix")) {
            if (!json_is_string(v)) return bad_type(c, key, "a string", v);
            if (!(r->suffix = dup_str(json_string_value(v), json_string_length(v)))) return nomem(c);
            return 0;
        }
        if (!strcmp(key, "echo")) return get_bool(c, key, v, &r->echo);
        if (!strcmp(key, "logprobs")) {
            if (get_int(c, key, v, 0, 5, &x)) return -1;
            pr->logprobs = (int32_t)x;
            return 0;
        }
        if (!strcmp(key, "best_of")) return get_int(c, key, v, 1, OA_MAX_N, &c->best_of);
    } else {
        if (!strcmp(key, "messages")) return parse_messages(c, v);
        if (!strcmp(key, "allow_special_in_content")) return get_bool(c, key, v, &r->allow_special_in_content);
        if (!strcmp(key, "logprobs")) return get_bool(c, key, v, &c->chat_logprobs);
        if (!strcmp(key, "top_logprobs")) {
            if (get_int(c, key, v, 0, 20, &x)) return -1;
            c->has_top_logprobs = 1;
            c->top_logprobs = (int)x;
            return 0;
        }
        if (!strcmp(key, "tools")) {
            if (check_tools(c, v)) return -1;
            c->tools = v;
            return 0;
        }
        if (!strcmp(key, "tool_choice")) return parse_tool_choice(c, v);
        if (!strcmp(key, "parallel_tool_calls")) {
            r->parallel_tool_calls_given = 1;
            return get_bool(c, key, v, &r->parallel_tool_calls);
        }
        if (!strcmp(key, "modalities")) {
            if (!json_is_array(v)) return bad_type(c, key, "an array", v);
            for (size_t i = 0; i < json_array_size(v); i++) {
                const json_t *m = json_array_get(v, i);
                if (!json_is_string(m) || strcmp(json_string_value(m), "text"))
                    return unsupported(c, key, "only [\"text\"] is accepted");
            }
            return 0;
        }
        if (is_any(key, k_unsupported_chat)) return unsupported(c, key, NULL);
    }
    if (!strcmp(key, "chat_template_kwargs")) return json_is_object(v) ? 0 : bad_type(c, key, "an object", v);
    if (is_any(key, k_ignored_compat)) return 0;
    if ((is_any(key, k_router_false) && json_is_false(v)) || (is_any(key, k_router_any_bool) && json_is_boolean(v)))
        return 0;
    return unknown(c, key, "Unrecognized request argument supplied");
}

/* pagoda_request_default's values, which are also OpenAI's defaults (temperature 1, top_p 1,
 * n 1, no logprobs, random seed); set here because this file links against nothing of the engine */
static void request_defaults(oa_request *r) {
    pagoda_request *pr = &r->pr;
    pr->sampling.temperature = 1.0f;
    pr->sampling.top_p = 1.0f;
    pr->sampling.repetition_penalty = 1.0f;
    pr->sampling.seed = -1;
    pr->n = 1;
    pr->logprobs = -1;
    pr->skip_special = 1;
    r->allow_special_in_content = -1;
    r->parallel_tool_calls = 1;
    pr->stop = (const char *const *)r->stop;
    pr->stop_token_ids = r->stop_token_ids;
}

int oa_request_parse(const char *body, size_t len, oa_kind kind, const oa_limits *lim, oa_request *r, oa_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    ctx c = {.r = r, .err = err, .n_vocab = lim && lim->n_vocab > 0 ? lim->n_vocab : 0, .strict = lim && lim->strict};
    r->kind = kind;
    request_defaults(r);
    if (!body || len == 0) return fail(&c, 400, NULL, "The request body is empty: expected a JSON object.");
    size_t ok = oa_utf8_valid_prefix(body, len);
    if (ok != len)
        return fail(&c, 400, NULL, "The request body is not valid UTF-8 (byte 0x%02x at offset %zu).",
                    (unsigned char)body[ok], ok);
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return fail(&c, 400, NULL, "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line,
                    jerr.column);
    int rc = -1;
    if (!json_is_object(root)) {
        bad_type(&c, "body", "a JSON object", root);
        snprintf(err->message, sizeof err->message, "The request body must be a JSON object, got %s.", oa_json_type_name(root));
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (json_is_null(v)) continue; /* null means "not given" */
        if (parse_field(&c, key, v)) goto done;
    }
    if (r->constraint.lazy && (!r->constraint.kind || !r->constraint.n_triggers)) {
        fail(&c, 400, "grammar_lazy", "'grammar_lazy' needs 'grammar_triggers' and a constraint ('grammar', 'json_schema', ...).");
        goto done;
    }
    if (kind == OA_CHAT) {
        if (!r->messages_json) {
            fail(&c, 400, "messages", "'messages' is required.");
            goto done;
        }
        if (c.has_top_logprobs && !c.chat_logprobs) {
            fail(&c, 400, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true.");
            goto done;
        }
        if (c.chat_logprobs) r->pr.logprobs = c.top_logprobs;
        if (check_tool_choice(&c)) goto done;
        if (c.tool_choice_none) {
            r->tool_choice = OA_TOOL_CHOICE_AUTO;
            free(r->tool_choice_name);
            r->tool_choice_name = NULL;
        }
        if (c.tools && json_array_size(c.tools) && !c.tool_choice_none) {
            if (!(r->tools_json = json_dumps(c.tools, JSON_COMPACT))) {
                nomem(&c);
                goto done;
            }
        }
    } else {
        if (!r->n_prompts) {
            fail(&c, 400, "prompt", "'prompt' is required.");
            goto done;
        }
        if ((long long)r->n_prompts * r->pr.n > OA_MAX_CHOICES_TOTAL) {
            fail(&c, 400, "n", "%d prompts x n = %d is %lld choices, over this server's limit of %d.", (int)r->n_prompts,
                 (int)r->pr.n, (long long)r->n_prompts * r->pr.n, OA_MAX_CHOICES_TOTAL);
            goto done;
        }
        if (r->max_tokens_zero && !r->echo) {
            /* as vLLM: nothing to answer without the echoed prompt */
            fail(&c, 400, "max_tokens", "'max_tokens' must be at least 1, got 0 (0 is only allowed with 'echo': true, "
                                        "which returns the prompt and its logprobs).");
            goto done;
        }
        if (r->max_tokens_zero) r->pr.score_only = 1, r->pr.max_tokens = 1;
        if (c.best_of > 1 && c.best_of != r->pr.n) {
            unsupported(&c, "best_of", "only best_of = n is accepted");
            goto done;
        }
        if (r->echo && r->suffix) {
            fail(&c, 400, "echo", "'echo' and 'suffix' cannot be used together.");
            goto done;
        }
    }
    if (c.has_stream_options && !r->stream) {
        fail(&c, 400, "stream_options", "'stream_options' is only allowed when 'stream' is true.");
        goto done;
    }
    /* chat: 0 (until the context limit) */
    if (kind == OA_COMPLETIONS && r->pr.max_tokens == 0 && !(c.n_predict_unlimited && !c.max_tokens_given))
        r->pr.max_tokens = OA_DEFAULT_MAX_TOKENS_COMPLETIONS;
    if (r->pr.min_tokens > 0 && r->pr.max_tokens > 0 && r->pr.min_tokens > r->pr.max_tokens) {
        fail(&c, 400, "min_tokens", "'min_tokens' (%d) must not exceed 'max_tokens' (%d%s).", (int)r->pr.min_tokens,
             (int)r->pr.max_tokens,
             c.max_tokens_given ? "" : ", the default");
        goto done;
    }
    if (!r->pr.n_logit_bias) r->pr.logit_bias = NULL;
    rc = 0;
done:
    json_decref(root);
    if (rc) oa_request_free(r);
    r->kind = kind;
    return rc;
}

void oa_request_free(oa_request *r) {
    if (!r) return;
    free(r->model);
    for (int32_t i = 0; r->prompts && i < r->n_prompts; i++) free(r->prompts[i].text), free(r->prompts[i].ids);
    free(r->prompts);
    free(r->suffix);
    free(r->messages_json);
    free(r->tools_json);
    free(r->tool_choice_name);
    free(r->logit_bias);
    so_constraint_free(&r->constraint);
    for (int32_t i = 0; i < r->pr.n_stop && i < OA_MAX_STOP; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
