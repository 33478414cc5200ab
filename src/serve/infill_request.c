/* /infill request parsing and prompt layout (see infill_request.h). Untrusted input: every known
 * field is type- and range-checked, and a failure leaves no allocation behind. */
#include "serve/infill_request.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    infill_request *r;
    infill_error *err;
} ctx;

static int fail(ctx *c, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    c->err->status = 400;
    snprintf(c->err->param, sizeof c->err->param, "%s", param ? param : "");
    return -1;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = 0;
    return d;
}

/* a JSON string's bytes with no NUL inside (jansson allows \u0000) */
static int get_str(ctx *c, const char *name, const json_t *v, char **out) {
    if (!json_is_string(v)) return fail(c, name, "\"%s\" must be a string", name);
    size_t n = json_string_length(v);
    if (memchr(json_string_value(v), 0, n)) return fail(c, name, "\"%s\" must not contain NUL characters", name);
    free(*out);
    if (!(*out = dup_n(json_string_value(v), n))) return fail(c, NULL, "out of memory");
    return 0;
}

static int get_bool(ctx *c, const char *name, const json_t *v, int *out) {
    if (!json_is_boolean(v)) return fail(c, name, "\"%s\" must be a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int get_num(ctx *c, const char *name, const json_t *v, double lo, double hi, double *out) {
    if (!json_is_number(v)) return fail(c, name, "\"%s\" must be a number", name);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) return fail(c, name, "\"%s\" must be in [%g, %g], got %g", name, lo, hi, d);
    *out = d;
    return 0;
}

static int get_int(ctx *c, const char *name, const json_t *v, double lo, double hi, int64_t *out) {
    double d = 0;
    if (get_num(c, name, v, lo, hi, &d)) return -1;
    if (d != floor(d)) return fail(c, name, "\"%s\" must be an integer, got %g", name, d);
    *out = (int64_t)d;
    return 0;
}

static int parse_extra(ctx *c, const json_t *v) {
    infill_request *r = c->r;
    if (!json_is_array(v)) return fail(c, "input_extra", "\"input_extra\" must be an array of {\"filename\": string, \"text\": string}");
    size_t n = json_array_size(v);
    if (n > INFILL_MAX_EXTRA) return fail(c, "input_extra", "\"input_extra\" has %zu chunks (at most %d)", n, INFILL_MAX_EXTRA);
    if (n && !(r->extra = calloc(n, sizeof *r->extra))) return fail(c, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *ch = json_array_get(v, i), *t = json_object_get(ch, "text"), *f = json_object_get(ch, "filename");
        char p[48];
        snprintf(p, sizeof p, "input_extra[%zu]", i);
        if (!json_is_object(ch)) return fail(c, p, "\"%s\" must be an object {\"filename\": string, \"text\": string}", p);
        r->n_extra = i + 1;
        /* as llama-server: text is required, filename optional ("tmp") */
        if (!t || !json_is_string(t)) return fail(c, p, "extra_context chunk must contain a \"text\" field with a string value");
        if (f && !json_is_null(f) && !json_is_string(f)) return fail(c, p, "extra_context chunk's \"filename\" field must be a string");
        if (get_str(c, p, t, &r->extra[i].text)) return -1;
        if (f && json_is_string(f)) {
            if (get_str(c, p, f, &r->extra[i].filename)) return -1;
        } else if (!(r->extra[i].filename = dup_n("tmp", 3))) {
            return fail(c, NULL, "out of memory");
        }
    }
    return 0;
}

static int parse_stop(ctx *c, const json_t *v) {
    infill_request *r = c->r;
    if (!json_is_array(v)) return fail(c, "stop", "\"stop\" must be an array of strings");
    if (json_array_size(v) > INFILL_MAX_STOP) return fail(c, "stop", "at most %d stop strings", INFILL_MAX_STOP);
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) return fail(c, "stop", "\"stop\" must be an array of strings");
        size_t n = json_string_length(s);
        if (n == 0) continue; /* an empty stop string matches nothing */
        if (n > INFILL_MAX_STOP_BYTES || memchr(json_string_value(s), 0, n))
            return fail(c, "stop", "stop strings must be 1 to %d bytes without NUL", INFILL_MAX_STOP_BYTES);
        if (!(r->stop[r->pr.n_stop] = dup_n(json_string_value(s), n))) return fail(c, NULL, "out of memory");
        r->pr.n_stop++;
    }
    return 0;
}

static int parse_field(ctx *c, const char *key, const json_t *v) {
    infill_request *r = c->r;
    pagoda_request *pr = &r->pr;
    pagoda_sampling *sp = &pr->sampling;
    double d = 0;
    int64_t x = 0;
    if (!strcmp(key, "input_prefix")) return get_str(c, key, v, &r->input_prefix);
    if (!strcmp(key, "input_suffix")) return get_str(c, key, v, &r->input_suffix);
    if (!strcmp(key, "prompt")) return get_str(c, key, v, &r->prompt);
    if (!strcmp(key, "input_extra")) return parse_extra(c, v);
    if (!strcmp(key, "stream")) return get_bool(c, key, v, &r->stream);
    if (!strcmp(key, "cache_prompt")) return get_bool(c, key, v, &r->cache_prompt);
    if (!strcmp(key, "return_tokens")) return get_bool(c, key, v, &r->return_tokens);
    if (!strcmp(key, "ignore_eos")) return get_bool(c, key, v, &pr->ignore_eos);
    if (!strcmp(key, "stop")) return parse_stop(c, v);
    if (!strcmp(key, "response_fields")) {
        if (!json_is_array(v) || json_array_size(v) > INFILL_MAX_FIELDS)
            return fail(c, key, "\"response_fields\" must be an array of at most %d strings", INFILL_MAX_FIELDS);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (get_str(c, key, json_array_get(v, i), &r->fields[r->n_fields])) return -1;
            r->n_fields++;
        }
        return 0;
    }
    if (!strcmp(key, "n_predict") || !strcmp(key, "max_tokens")) {
        if (get_int(c, key, v, -1, 1 << 20, &x)) return -1;
        pr->max_tokens = x < 0 ? 0 : (int32_t)x; /* -1: until the context is full */
        /* 0: the prompt only goes through the model (editor plugins warm the cache so) */
        pr->score_only = x == 0;
        if (x == 0) pr->max_tokens = 1;
        return 0;
    }
    if (!strcmp(key, "t_max_predict_ms")) {
        if (get_int(c, key, v, -1, 1e9, &x)) return -1;
        r->t_max_predict_ms = x;
        return 0;
    }
    if (!strcmp(key, "temperature")) {
        if (get_num(c, key, v, -1e9, 100, &d)) return -1;
        sp->temperature = d <= 0 ? 0 : (float)d; /* llama-server: <= 0 is greedy */
        return 0;
    }
    if (!strcmp(key, "top_k")) {
        if (get_int(c, key, v, -1e9, 1 << 24, &x)) return -1;
        sp->top_k = x <= 0 ? 0 : (int32_t)x;
        return 0;
    }
    if (!strcmp(key, "top_p")) {
        if (get_num(c, key, v, 0, 1e9, &d)) return -1;
        sp->top_p = d >= 1 || d <= 0 ? 1.0f : (float)d;
        return 0;
    }
    if (!strcmp(key, "min_p")) {
        if (get_num(c, key, v, 0, 1, &d)) return -1;
        sp->min_p = (float)d;
        return 0;
    }
    if (!strcmp(key, "repeat_penalty")) {
        if (get_num(c, key, v, 0, 10, &d)) return -1;
        sp->repetition_penalty = d <= 0 ? 1.0f : (float)d;
        return 0;
    }
    if (!strcmp(key, "presence_penalty")) {
        if (get_num(c, key, v, -2, 2, &d)) return -1;
        sp->presence_penalty = (float)d;
        return 0;
    }
    if (!strcmp(key, "frequency_penalty")) {
        if (get_num(c, key, v, -2, 2, &d)) return -1;
        sp->frequency_penalty = (float)d;
        return 0;
    }
    if (!strcmp(key, "repeat_last_n")) {
        if (get_int(c, key, v, -1, 1 << 20, &x)) return -1;
        pr->penalty_last_n = (int32_t)x; /* 0 is handled after parsing: penalties off */
        return 0;
    }
    if (!strcmp(key, "seed")) {
        if (get_int(c, key, v, -9.2e18, 9.2e18, &x)) return -1;
        sp->seed = x < 0 || x == 0xFFFFFFFFll ? -1 : x; /* llama-server: -1 / LLAMA_DEFAULT_SEED = random */
        return 0;
    }
    return 0; /* llama-server ignores fields it does not know (n_indent, samplers, id_slot, ...) */
}

/* llama-server's defaults (common_params_sampling) */
static void defaults(infill_request *r) {
    pagoda_request *pr = &r->pr;
    pr->sampling.temperature = 0.8f;
    pr->sampling.top_k = 40;
    pr->sampling.top_p = 0.95f;
    pr->sampling.min_p = 0.05f;
    pr->sampling.repetition_penalty = 1.0f;
    pr->sampling.seed = -1;
    pr->penalty_last_n = 64;
    pr->n = 1;
    pr->logprobs = -1;
    pr->skip_special = 1;
    pr->stop = (const char *const *)r->stop;
    r->cache_prompt = 1;
}

int infill_request_parse(const char *body, size_t len, infill_request *r, infill_error *err) {
    memset(r, 0, sizeof *r);
    memset(err, 0, sizeof *err);
    ctx c = {.r = r, .err = err};
    defaults(r);
    json_error_t jerr;
    json_t *root = body && len ? json_loadb(body, len, 0, &jerr) : NULL;
    int rc = -1;
    if (!root) {
        if (!body || !len) fail(&c, NULL, "The request body is empty: expected a JSON object.");
        else fail(&c, NULL, "The request body is not valid JSON: %s (line %d, column %d).", jerr.text, jerr.line, jerr.column);
        goto done;
    }
    if (!json_is_object(root)) {
        fail(&c, NULL, "The request body must be a JSON object.");
        goto done;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (json_is_null(v) && strcmp(key, "input_extra") != 0) continue;
        if (parse_field(&c, key, v)) goto done;
    }
    if (!r->input_prefix) {
        fail(&c, "input_prefix", "\"input_prefix\" is required");
        goto done;
    }
    if (!r->input_suffix) {
        fail(&c, "input_suffix", "\"input_suffix\" is required");
        goto done;
    }
    if (!r->prompt && !(r->prompt = dup_n("", 0))) {
        fail(&c, NULL, "out of memory");
        goto done;
    }
    if (r->pr.penalty_last_n == 0) { /* llama.cpp: repeat_last_n 0 turns the penalties off */
        r->pr.sampling.repetition_penalty = 1.0f;
        r->pr.sampling.presence_penalty = r->pr.sampling.frequency_penalty = 0;
    }
    rc = 0;
done:
    json_decref(root);
    if (rc) infill_request_free(r);
    return rc;
}

void infill_request_free(infill_request *r) {
    if (!r) return;
    free(r->input_prefix), free(r->input_suffix), free(r->prompt);
    for (size_t i = 0; i < r->n_extra; i++) free(r->extra[i].filename), free(r->extra[i].text);
    free(r->extra);
    for (int32_t i = 0; i < r->pr.n_stop && i < INFILL_MAX_STOP; i++) free(r->stop[i]);
    for (size_t i = 0; i < r->n_fields && i < INFILL_MAX_FIELDS; i++) free(r->fields[i]);
    memset(r, 0, sizeof *r);
}

/* ---- the prompt ---- */

typedef struct {
    int32_t *p;
    size_t n, cap;
} ids_buf;

static int push(ids_buf *b, const int32_t *ids, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        int32_t *p = realloc(b->p, cap * sizeof *p);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, ids, n * sizeof *ids);
    b->n += n;
    return 0;
}

static int push1(ids_buf *b, int32_t id) { return push(b, &id, 1); }

static int push_text(ids_buf *b, const char *text, int parse_special, infill_tokenize_fn tok, void *user) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok(user, text, parse_special, &ids, &n)) return -1;
    int rc = push(b, ids, n);
    free(ids);
    return rc;
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

int infill_build_prompt(const infill_layout *L, const infill_request *r, infill_tokenize_fn tok, void *user,
                        int32_t **ids, size_t *n) {
    *ids = NULL, *n = 0;
    ids_buf extra = {0}, pre = {0}, suf = {0}, prm = {0}, out = {0};
    int rc = -1;
    /* pieces as llama-server tokenizes them: prefix, suffix and chunks as plain text, the prompt
     * with special tokens parsed */
    if (push_text(&pre, r->input_prefix, 0, tok, user) || push_text(&suf, r->input_suffix, 0, tok, user) ||
        push_text(&prm, r->prompt ? r->prompt : "", 1, tok, user))
        goto done;
    if (L->rep >= 0 && (push1(&extra, L->rep) || push_text(&extra, "myproject\n", 0, tok, user))) goto done;
    for (size_t i = 0; i < r->n_extra; i++) {
        const infill_chunk *c = &r->extra[i];
        if (L->sep >= 0) {
            size_t fl = strlen(c->filename);
            char *f = malloc(fl + 2);
            if (!f) goto done;
            memcpy(f, c->filename, fl);
            f[fl] = '\n', f[fl + 1] = 0;
            int e = push1(&extra, L->sep) || push_text(&extra, f, 0, tok, user);
            free(f);
            if (e) goto done;
        } else if (push_text(&extra, "\n\n--- snippet ---\n\n", 0, tok, user)) {
            goto done;
        }
        if (push_text(&extra, c->text, 0, tok, user)) goto done;
    }
    if (L->sep >= 0 && (push1(&extra, L->sep) || push_text(&extra, "filename\n", 0, tok, user))) goto done;

    /* budgets (llama-server: prefix:suffix = 3:1 of a batch, the rest of the context for the extra) */
    const int64_t nb = L->n_batch;
    size_t n_pre = min_sz(pre.n, (size_t)(3 * (nb / 4) > 0 ? 3 * (nb / 4) : 0));
    int64_t suf_room = nb / 4 - (2 + (int64_t)prm.n);
    size_t n_suf = min_sz(suf.n, suf_room > 0 ? (size_t)suf_room : 0);
    int64_t extra_room = (int64_t)L->n_ctx - nb - 2 * (int64_t)L->n_predict;
    size_t n_extra = min_sz(extra.n, extra_room > 0 ? (size_t)extra_room : 0);

    /* [extra tail] [BOS] <PRE> prefix-tail prompt <SUF> suffix-head <MID>  (SPM: suffix part first) */
    if (n_extra && push(&out, extra.p + (extra.n - n_extra), n_extra)) goto done;
    if (L->add_bos && L->bos >= 0 && push1(&out, L->bos)) goto done;
    for (int part = 0; part < 2; part++) {
        int is_prefix = (part == 0) != (L->spm != 0);
        if (is_prefix) {
            if (push1(&out, L->pre) || (n_pre && push(&out, pre.p + (pre.n - n_pre), n_pre)) ||
                (prm.n && push(&out, prm.p, prm.n)))
                goto done;
        } else {
            if (push1(&out, L->suf) || (n_suf && push(&out, suf.p, n_suf))) goto done;
        }
    }
    if (push1(&out, L->mid)) goto done;
    *ids = out.p, *n = out.n;
    out.p = NULL;
    rc = 0;
done:
    free(extra.p), free(pre.p), free(suf.p), free(prm.p), free(out.p);
    return rc;
}
