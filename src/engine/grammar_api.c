/* The public constrained-decoding API (pagoda_grammar_*): a grammar front end (JSON Schema,
 * regular expression, choice list, GBNF) compiled for a model's vocabulary, and matchers over it.
 * The engine keeps a matcher per choice (submit.c, sample.c); this file owns the grammar objects. */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "engine/grammar_api.h"
#include "engine/model_api.h"
#include "grammar/gbnf.h"
#include "grammar/json_schema.h"

#define GRAMMAR_MAX_TEXT ((size_t)8 << 20) /* a grammar or schema larger than this is refused */

static pthread_mutex_t g_vocab_mu = PTHREAD_MUTEX_INITIALIZER;

const gr_vocab *model_grammar_vocab(pagoda_model *pm) {
    if (!pm || !pm->tok) {
        pg_fail(PAGODA_ERR_INVALID, "structured output needs a model with a tokenizer");
        return NULL;
    }
    pthread_mutex_lock(&g_vocab_mu);
    gr_vocab *v = pm->gvocab;
    if (!v) {
        int32_t n = tok_n_vocab(pm->tok);
        const uint8_t **bytes = malloc((size_t)n * sizeof *bytes);
        uint32_t *lens = malloc((size_t)n * sizeof *lens);
        uint8_t *special = malloc((size_t)n);
        int32_t *eos = malloc((size_t)n * sizeof *eos);
        int32_t n_eos = 0;
        if (bytes && lens && special && eos) {
            for (int32_t t = 0; t < n; t++) {
                size_t len;
                bool sp;
                bytes[t] = (const uint8_t *)tok_token_bytes(pm->tok, t, &len, &sp);
                lens[t] = sp ? 0 : (uint32_t)len;
                special[t] = sp;
                if (tok_is_eog(pm->tok, t)) eos[n_eos++] = t;
            }
            v = pm->gvocab = gr_vocab_new(n, bytes, lens, special, eos, n_eos);
        }
        free(bytes), free(lens), free(special), free(eos);
        if (!v) pg_fail(PAGODA_ERR_NOMEM, "out of memory building the grammar vocabulary");
    }
    pthread_mutex_unlock(&g_vocab_mu);
    return v;
}

/* A grammar whose sentences are one of the strings of a JSON array. */
static gr_grammar *choice_grammar(const char *text, size_t n, char *err, size_t cap) {
    json_error_t je;
    json_t *a = json_loadb(text, n, 0, &je);
    if (!a || !json_is_array(a) || json_array_size(a) == 0) {
        snprintf(err, cap, "expected a non-empty JSON array of strings%s%s", a ? "" : ": ", a ? "" : je.text);
        json_decref(a);
        return NULL;
    }
    gr_grammar *g = gr_new();
    int root = g ? gr_nonterminal(g, "root") : -1;
    for (size_t i = 0; root >= 0 && i < json_array_size(a); i++) {
        json_t *s = json_array_get(a, i);
        if (!json_is_string(s)) {
            snprintf(err, cap, "entry %zu is not a string", i);
            root = -1;
            break;
        }
        int t = json_string_length(s) ? gr_literal(g, json_string_value(s), json_string_length(s)) : -2;
        if (t == -1 || gr_rule(g, root, &t, t == -2 ? 0 : 1)) root = -1;
    }
    json_decref(a);
    if (root < 0 || gr_set_start(g, root)) {
        if (g && !err[0]) snprintf(err, cap, "%s", gr_error(g));
        else if (!g) snprintf(err, cap, "out of memory");
        gr_free(g);
        return NULL;
    }
    return g;
}

static gr_grammar *regex_grammar(const char *text, size_t n, char *err, size_t cap) {
    gr_grammar *g = gr_new();
    int root = g ? gr_nonterminal(g, "root") : -1;
    int t = root >= 0 ? gr_regex(g, text, n) : -1;
    if (t < 0 || gr_rule(g, root, &t, 1) || gr_set_start(g, root)) {
        snprintf(err, cap, "%s", g ? gr_error(g) : "out of memory");
        gr_free(g);
        return NULL;
    }
    return g;
}

/* The spec's front end; prefix/suffix literals wrap the start symbol. */
static gr_grammar *build(const pagoda_grammar_spec *s, const char *text, size_t n, char *err, size_t cap) {
    js_options jo;
    js_options_default(&jo);
    jo.whitespace_flexible = s->whitespace_flexible != 0;
    jo.strict = s->strict != 0;
    gr_grammar *g = NULL;
    switch (s->kind) {
    case PAGODA_GRAMMAR_JSON_SCHEMA: g = js_compile(text, n, &jo, err, cap); break;
    case PAGODA_GRAMMAR_JSON_OBJECT: g = js_compile("{\"type\":\"object\"}", 17, &jo, err, cap); break;
    case PAGODA_GRAMMAR_REGEX: g = regex_grammar(text, n, err, cap); break;
    case PAGODA_GRAMMAR_CHOICE: g = choice_grammar(text, n, err, cap); break;
    case PAGODA_GRAMMAR_GBNF: g = gbnf_parse(text, n, err, cap); break;
    default: snprintf(err, cap, "unknown grammar kind %d", (int)s->kind); return NULL;
    }
    if (!g || (!s->prefix && !s->suffix && !s->min_repeat && !s->max_repeat)) return g;
    if (gr_wrap(g, s->prefix, s->suffix, s->separator, s->min_repeat, s->max_repeat)) {
        snprintf(err, cap, "%s", gr_error(g));
        gr_free(g);
        return NULL;
    }
    return g;
}

static const char *kind_name(pagoda_grammar_kind k) {
    switch (k) {
    case PAGODA_GRAMMAR_JSON_SCHEMA: return "json_schema";
    case PAGODA_GRAMMAR_JSON_OBJECT: return "json_object";
    case PAGODA_GRAMMAR_REGEX: return "regex";
    case PAGODA_GRAMMAR_CHOICE: return "choice";
    case PAGODA_GRAMMAR_GBNF: return "grammar";
    }
    return "grammar";
}

pagoda_status pagoda_grammar_compile(pagoda_model *m, const pagoda_grammar_spec *s, pagoda_grammar **out) {
    if (out) *out = NULL;
    if (!m || !s || !out) return pg_fail(PAGODA_ERR_INVALID, "pagoda_grammar_compile: model, spec and out are required");
    const char *text = s->text ? s->text : "";
    size_t n = s->len ? s->len : strlen(text);
    if (n > GRAMMAR_MAX_TEXT)
        return pg_fail(PAGODA_ERR_INVALID, "%s: %zu bytes, over the limit of %zu", kind_name(s->kind), n, GRAMMAR_MAX_TEXT);
    if (s->min_repeat < 0 || (s->max_repeat >= 0 && s->max_repeat < s->min_repeat) || s->max_repeat > 4096 ||
        s->min_repeat > 4096 || (s->max_repeat == 0 && s->min_repeat > 0))
        return pg_fail(PAGODA_ERR_INVALID, "%s: repeat bounds %d..%d are not 0 <= min <= max <= 4096 (max < 0: unbounded)",
                       kind_name(s->kind), (int)s->min_repeat, (int)s->max_repeat);
    if (s->kind != PAGODA_GRAMMAR_JSON_OBJECT && n == 0)
        return pg_fail(PAGODA_ERR_INVALID, "%s: empty", kind_name(s->kind));
    const gr_vocab *v = model_grammar_vocab(m);
    if (!v) return PAGODA_ERR_INVALID;
    char err[512] = "";
    gr_grammar *g = build(s, text, n, err, sizeof err);
    if (!g) return pg_fail(PAGODA_ERR_INVALID, "%s: %s", kind_name(s->kind), err[0] ? err : "cannot be compiled");
    gr_compiled *c = gr_compile(g, v, err, sizeof err);
    gr_free(g);
    if (!c) return pg_fail(PAGODA_ERR_INVALID, "%s: %s", kind_name(s->kind), err);
    pagoda_grammar *pg = calloc(1, sizeof *pg);
    if (!pg) {
        gr_compiled_free(c);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    atomic_init(&pg->refs, 1);
    pg->c = c;
    pg->n_vocab = gr_vocab_size(v);
    pg->model = m;
    *out = pg;
    return PAGODA_OK;
}

pagoda_grammar *pagoda_grammar_ref(pagoda_grammar *g) {
    if (g) atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void pagoda_grammar_unref(pagoda_grammar *g) {
    if (!g || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1) return;
    gr_compiled_free(g->c);
    free(g);
}

struct pagoda_grammar_matcher {
    pagoda_grammar *g;
    gr_matcher *m;
};

pagoda_status pagoda_grammar_matcher_create(pagoda_grammar *g, pagoda_grammar_matcher **out) {
    if (out) *out = NULL;
    if (!g || !out) return pg_fail(PAGODA_ERR_INVALID, "pagoda_grammar_matcher_create: grammar and out are required");
    pagoda_grammar_matcher *m = calloc(1, sizeof *m);
    if (!m || !(m->m = gr_matcher_new(g->c))) {
        free(m);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    }
    m->g = pagoda_grammar_ref(g);
    *out = m;
    return PAGODA_OK;
}

void pagoda_grammar_matcher_destroy(pagoda_grammar_matcher *m) {
    if (!m) return;
    gr_matcher_free(m->m);
    pagoda_grammar_unref(m->g);
    free(m);
}

int32_t pagoda_grammar_matcher_mask(pagoda_grammar_matcher *m, uint32_t *mask) { return gr_matcher_mask(m->m, mask); }

pagoda_status pagoda_grammar_matcher_accept(pagoda_grammar_matcher *m, int32_t token) {
    if (token < 0 || token >= m->g->n_vocab) return pg_fail(PAGODA_ERR_INVALID, "token %d out of range", token);
    if (gr_matcher_accept(m->m, token)) return pg_fail(PAGODA_ERR_INVALID, "token %d is not allowed here", token);
    return PAGODA_OK;
}

pagoda_status pagoda_grammar_matcher_rollback(pagoda_grammar_matcher *m, int32_t n_tokens) {
    if (n_tokens < 0 || gr_matcher_rollback(m->m, n_tokens))
        return pg_fail(PAGODA_ERR_INVALID, "cannot roll back %d tokens", n_tokens);
    return PAGODA_OK;
}

int pagoda_grammar_matcher_can_end(const pagoda_grammar_matcher *m) { return gr_matcher_can_end(m->m); }
int pagoda_grammar_matcher_is_done(const pagoda_grammar_matcher *m) { return gr_matcher_is_done(m->m); }
const char *pagoda_grammar_matcher_error(const pagoda_grammar_matcher *m) { return gr_matcher_error(m->m); }
size_t pagoda_grammar_matcher_forced(pagoda_grammar_matcher *m, char *buf, size_t cap) {
    return m && buf ? gr_matcher_forced(m->m, (uint8_t *)buf, cap) : 0;
}
