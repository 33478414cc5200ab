/* JSON Schema -> grammar (json_schema.h): the driver. Keywords, errors, `$ref` resolution, the
 * memo of compiled subschemas and the dispatch of a subschema by keyword and type. The rest:
 *   json_schema_merge.c   allOf (and `$ref` beside other keywords) merged into one schema; `not`
 *   json_schema_oneof.c   type inference and disjointness: when a oneOf may be a plain choice
 *   json_schema_scalar.c  enum/const values, strings and numbers as lexemes
 *   json_schema_object.c  objects;  json_schema_array.c  arrays
 *   json_schema_re.c      the regexes of the lexemes (json_schema_impl.h)
 * They share the compiler context of json_schema_compile.h.
 *
 * Lexemes are large: a whole string (quotes, escapes and any `pattern` / length / `format`
 * included) is one regex, a number one regex, a property key one literal, so the parser only sees
 * structure. Schemas are compiled once each (memoized by node), which also makes `$ref` cycles
 * plain recursive rules. allOf (and `$ref` beside other keywords in 2019-09+) is merged into one
 * schema where the keywords combine exactly, else refused; anyOf is a choice; oneOf is a choice
 * only when its alternatives are provably disjoint. */
#include "grammar/json_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"
#include "grammar/lexer.h"

int jsc_fail(jsc *c, const char *path, const char *fmt, ...) {
    if (c->failed) return -1;
    c->failed = 1;
    /* a long pointer (property names are the schema's own text) is cut in the middle, so that
     * the reason after it always fits */
    const char *p = path[0] ? path : "/";
    size_t n = strlen(p), keep = c->cap / 3;
    int k = n > keep && keep > 8 ? snprintf(c->err, c->cap, "%.*s...%s: ", (int)(keep / 2), p, p + n - (keep / 2 - 3))
                                 : snprintf(c->err, c->cap, "%s: ", p);
    if (k >= 0 && (size_t)k < c->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, c->cap - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int jsc_gfail(jsc *c, const char *path) { return jsc_fail(c, path, "%s", gr_error(c->g)[0] ? gr_error(c->g) : "grammar error"); }

/* ---- keywords ---- */

static int in_list(const char *k, const char *const *l) {
    for (int i = 0; l[i]; i++)
        if (!strcmp(k, l[i])) return 1;
    return 0;
}

/* keywords this compiler understands (anything else that is not an annotation is an unknown
 * keyword, which validators ignore) */
static const char *const k_handled[] = {
    "type", "enum", "const", "properties", "required", "additionalProperties", "patternProperties", "items",
    "prefixItems", "additionalItems", "minItems", "maxItems", "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf", "allOf", "$ref", "nullable",
    "uniqueItems", "minProperties", "maxProperties", "multipleOf", JS_NOT_STRINGS, NULL};
static const char *const k_unsupported[] = {
    "not", "if", "then", "else", "dependencies", "dependentRequired", "dependentSchemas", "propertyNames",
    "contains", "minContains", "maxContains", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
    "$recursiveRef", NULL};

int jsc_is_constraint(const char *k) { return in_list(k, k_handled) || in_list(k, k_unsupported); }

/* keywords that only constrain one type of instance */
static const char *const k_obj[] = {"properties", "required", "additionalProperties", "patternProperties",
                                    "minProperties", "maxProperties", "dependencies", "propertyNames",
                                    "dependentRequired", "dependentSchemas", "unevaluatedProperties", NULL};
static const char *const k_arr[] = {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
                                    "contains", "minContains", "maxContains", "unevaluatedItems", NULL};
static const char *const k_str[] = {"minLength", "maxLength", "pattern", "format", JS_NOT_STRINGS, NULL};
static const char *const k_num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", NULL};

/* 1 if keyword k does not constrain instances of type bit t */
int jsc_irrelevant_for(const char *k, int t) {
    if (in_list(k, k_obj)) return t != T_OBJ;
    if (in_list(k, k_arr)) return t != T_ARR;
    if (in_list(k, k_str)) return t != T_STR;
    if (in_list(k, k_num)) return !(t & (T_INT | T_NUM));
    return !jsc_is_constraint(k);
}

/* the schema has keywords besides `skip` that constrain instances */
int jsc_has_constraints(const json_t *s, const char *skip, const char *skip2) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if ((skip && !strcmp(k, skip)) || (skip2 && !strcmp(k, skip2))) continue;
        if (jsc_is_constraint(k)) return 1;
    }
    return 0;
}

int jsc_is_trivial(const json_t *s) { return json_is_true(s) || (json_is_object(s) && !jsc_has_constraints(s, NULL, NULL)); }
/* ---- $ref ---- */

json_t *jsc_resolve(jsc *c, const char *ref, const char *path) {
    const char *p = ref;
    const char *id = json_string_value(json_object_get(c->root, "$id"));
    if (!id) id = json_string_value(json_object_get(c->root, "id"));
    if (id) {
        size_t n = strlen(id);
        while (n && id[n - 1] == '#') n--;
        if (n && !strncmp(p, id, n) && (p[n] == '#' || !p[n])) p += n;
    }
    if (!*p) return c->root;
    if (*p != '#') {
        jsc_fail(c, path, "$ref '%.100s' is not a reference inside the schema", ref);
        return NULL;
    }
    p++;
    json_t *cur = c->root;
    if (!*p) return cur;
    if (*p != '/') {
        jsc_fail(c, path, "$ref '%.100s': anchors are not supported", ref);
        return NULL;
    }
    while (*p == '/') {
        p++;
        char tok[512];
        size_t n = 0;
        while (*p && *p != '/' && n < sizeof tok - 1) {
            char ch = *p++;
            if (ch == '~' && (*p == '0' || *p == '1')) ch = *p++ == '0' ? '~' : '/';
            else if (ch == '%' && p[0] && p[1]) {
                char h[3] = {p[0], p[1], 0};
                char *e;
                long v = strtol(h, &e, 16);
                if (!*e) ch = (char)v, p += 2;
            }
            tok[n++] = ch;
        }
        tok[n] = 0;
        if (json_is_object(cur)) cur = json_object_get(cur, tok);
        else if (json_is_array(cur)) {
            char *e;
            long i = strtol(tok, &e, 10);
            cur = *e || !n ? NULL : json_array_get(cur, (size_t)i);
        } else cur = NULL;
        if (!cur) {
            jsc_fail(c, path, "$ref '%.100s' does not resolve", ref);
            return NULL;
        }
    }
    return cur;
}

/* ---- the grammar ---- */




int jsc_regex_sym(jsc *c, const jre_buf *b, const char *path) {
    if (b->oom) return jsc_fail(c, path, "out of memory");
    int t = gr_regex(c->g, b->s, b->n);
    return t < 0 ? jsc_gfail(c, path) : t;
}

int jsc_literal_sym(jsc *c, const jre_buf *b, const char *path) {
    if (b->oom) return jsc_fail(c, path, "out of memory");
    int t = gr_literal(c->g, b->s, b->n);
    return t < 0 ? jsc_gfail(c, path) : t;
}

static int compile_alts(jsc *c, json_t *s, const char *kw, const char *path) {
    json_t *alts = json_object_get(s, kw);
    if (!json_is_array(alts) || !json_array_size(alts)) return jsc_fail(c, path, "'%s' must be a non-empty array", kw);
    json_t *rest = jsc_keep(c, json_copy(s));
    json_object_del(rest, kw);
    int plain = !jsc_has_constraints(rest, NULL, NULL);
    size_t n = json_array_size(alts);
    json_t **m = calloc(n, sizeof *m);
    if (!m) return jsc_fail(c, path, "out of memory");
    char sp[512];
    for (size_t i = 0; i < n; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        subpath(sp, sizeof sp, path, kw, idx);
        m[i] = plain ? json_array_get(alts, i) : jsc_merge(c, rest, json_array_get(alts, i), sp, 0);
        if (!m[i]) {
            free(m);
            return -1;
        }
    }
    if (!strcmp(kw, "oneOf") && n > 1 && jsc_one_of_exact(c, m, n, path)) {
        free(m);
        return -1;
    }
    int ch = nt(c, kw);
    for (size_t i = 0; i < n && ch >= 0; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        subpath(sp, sizeof sp, path, kw, idx);
        int a = jsc_compile(c, m[i], sp);
        if (a < 0) ch = -1;
        else rule1(c, ch, a);
    }
    free(m);
    return ch;
}

static int compile_body(jsc *c, json_t *s, const char *path) {
    if (json_is_true(s)) return c->any;
    if (json_is_false(s)) return c->never;
    if (!json_is_object(s)) return jsc_fail(c, path, "a schema must be an object or a boolean");
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!in_list(k, k_unsupported)) continue;
        if (!strcmp(k, "if") && !json_object_get(s, "then") && !json_object_get(s, "else")) continue;
        if ((!strcmp(k, "then") || !strcmp(k, "else")) && !json_object_get(s, "if")) continue;
        static const char *const typed[] = {"dependencies", "dependentRequired", "dependentSchemas", "propertyNames",
                                            "unevaluatedProperties", "contains", "minContains", "maxContains",
                                            "unevaluatedItems", NULL};
        if (in_list(k, typed) || !strcmp(k, "not")) continue; /* checked where the type applies / below */
        return jsc_fail(c, path, "keyword '%s' is not supported", k);
    }
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) return jsc_fail(c, path, "'$ref' must be a string");
        json_t *t = jsc_resolve(c, json_string_value(ref), path);
        if (!t) return -1;
        if (c->draft <= 7 || !jsc_has_constraints(s, "$ref", NULL)) return jsc_compile(c, t, path);
        json_t *rest = jsc_keep(c, json_copy(s));
        json_object_del(rest, "$ref");
        json_t *mg = jsc_merge(c, t, rest, path, 0);
        return mg ? jsc_compile(c, mg, path) : -1;
    }
    if (json_object_get(s, "not")) {
        json_t *r = jsc_rewrite_not(c, s, path);
        return r ? jsc_compile(c, r, path) : -1;
    }
    if (json_object_get(s, "allOf")) {
        if (!json_is_array(json_object_get(s, "allOf"))) return jsc_fail(c, path, "'allOf' must be an array");
        json_t *mg = jsc_deref(c, s, path, 0);
        return mg ? jsc_compile(c, mg, path) : -1;
    }
    if (json_object_get(s, "anyOf")) return compile_alts(c, s, "anyOf", path);
    if (json_object_get(s, "oneOf")) return compile_alts(c, s, "oneOf", path);
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    int nullable = json_is_true(json_object_get(s, "nullable"));
    if (en || cn) {
        if (en && !json_is_array(en)) return jsc_fail(c, path, "'enum' must be an array");
        json_t *vals = cn ? json_pack("[O]", cn) : json_incref(en);
        json_t *rest = jsc_keep(c, json_copy(s));
        json_object_del(rest, "enum");
        json_object_del(rest, "const");
        if (cn && en) json_object_set(rest, "enum", en);
        json_object_del(rest, "nullable");
        int filter = jsc_has_constraints(rest, NULL, NULL);
        int ch = nt(c, "enum");
        int rc = 0;
        if (nullable) rule1(c, ch, c->t_null);
        for (size_t i = 0; i < json_array_size(vals) && !rc; i++) {
            json_t *x = json_array_get(vals, i);
            if (filter) {
                int ok = jsc_check_value(c, rest, x, path);
                if (ok < 0) rc = jsc_fail(c, path, "enum/const together with other keywords is not supported here");
                if (ok <= 0) continue;
            }
            int sym = jsc_value_sym(c, x, path);
            if (sym < 0) rc = -1;
            else rule1(c, ch, sym);
        }
        json_decref(vals);
        return rc ? -1 : ch;
    }
    json_t *tj = json_object_get(s, "type");
    int types = jsc_type_bits(tj);
    if (types < 0) return jsc_fail(c, path, "bad 'type'");
    if (nullable) types |= T_NULL;
    int ch = nt(c, "value");
    if (ch < 0) return jsc_gfail(c, path);
    if (types & T_NULL) rule1(c, ch, c->t_null);
    if (types & T_BOOL) rule1(c, ch, c->t_true), rule1(c, ch, c->t_false);
    if (types & T_STR) {
        jre_buf b = {0};
        int r = jsc_string_regex(c, s, &b, path);
        if (!r) r = jsc_regex_sym(c, &b, path);
        jre_free(&b);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & (T_INT | T_NUM)) {
        jre_buf b = {0};
        int r = jsc_number_regex(c, s, !(types & T_NUM), &b, path);
        if (!r) r = jsc_regex_sym(c, &b, path);
        jre_free(&b);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & T_OBJ) {
        int r = jsc_object_sym(c, s, path);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & T_ARR) {
        int r = jsc_array_sym(c, s, path);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    return gr_error(c->g)[0] ? jsc_gfail(c, path) : ch;
}

static int memo_find(jsc *c, const json_t *s, int add) {
    if (c->hash_cap == 0 || c->n_memo * 2 >= c->hash_cap) {
        int nc = c->hash_cap ? c->hash_cap * 2 : 256;
        int *h = calloc((size_t)nc, sizeof *h);
        if (!h) return -1;
        for (int i = 0; i < c->n_memo; i++) {
            size_t x = ((uintptr_t)c->memo[i].s >> 4) * 0x9E3779B97F4A7C15ull;
            size_t j = x & (size_t)(nc - 1);
            while (h[j]) j = (j + 1) & (size_t)(nc - 1);
            h[j] = i + 1;
        }
        free(c->hash);
        c->hash = h;
        c->hash_cap = nc;
    }
    size_t x = ((uintptr_t)s >> 4) * 0x9E3779B97F4A7C15ull;
    size_t j = x & (size_t)(c->hash_cap - 1);
    while (c->hash[j]) {
        if (c->memo[c->hash[j] - 1].s == s) return c->hash[j] - 1;
        j = (j + 1) & (size_t)(c->hash_cap - 1);
    }
    if (!add) return -1;
    if (c->n_memo == c->cap_memo) {
        int nc = c->cap_memo ? c->cap_memo * 2 : 64;
        memo_e *q = realloc(c->memo, (size_t)nc * sizeof *q);
        if (!q) return -1;
        c->memo = q;
        c->cap_memo = nc;
    }
    c->memo[c->n_memo] = (memo_e){s, -1, -1, 0};
    c->hash[j] = ++c->n_memo;
    return c->n_memo - 1;
}

int jsc_compile(jsc *c, json_t *s, const char *path) {
    if (c->failed) return -1;
    if (++c->work > JS_MAX_WORK) return jsc_fail(c, path, "schema too large");
    if (c->depth >= JS_MAX_DEPTH) return jsc_fail(c, path, "schema nested too deeply");
    if (json_is_boolean(s)) return json_is_true(s) ? c->any : c->never;
    int i = memo_find(c, s, 1);
    if (i < 0) return jsc_fail(c, path, "out of memory");
    if (c->memo[i].state == 2) return c->memo[i].sym;
    if (c->memo[i].state == 1) {
        if (c->memo[i].fwd < 0) c->memo[i].fwd = nt(c, "ref");
        return c->memo[i].fwd < 0 ? jsc_gfail(c, path) : c->memo[i].fwd;
    }
    c->memo[i].state = 1;
    c->depth++;
    int sym = compile_body(c, s, path);
    c->depth--;
    if (sym < 0) return -1;
    /* the memo may have moved */
    int fwd = c->memo[i].fwd;
    if (fwd >= 0) {
        if (rule1(c, fwd, sym)) return jsc_gfail(c, path);
        sym = fwd;
    }
    c->memo[i].sym = sym;
    c->memo[i].state = 2;
    return sym;
}

static int any_value(jsc *c) {
    int v = nt(c, "json"), obj = nt(c, "jobject"), arr = nt(c, "jarray");
    int mem = nt(c, "jmembers"), el = nt(c, "jelems"), pair = nt(c, "jpair");
    if (el < 0) return -1;
    int syms[] = {obj, arr, c->t_str, c->t_num, c->t_true, c->t_false, c->t_null};
    for (int i = 0; i < 7; i++) rule1(c, v, syms[i]);
    int r2[2] = {c->lb, c->rb}, r3[3] = {c->lb, mem, c->rb};
    rule(c, obj, r2, 2), rule(c, obj, r3, 3);
    int p3[3] = {c->t_str, c->colon, v};
    rule(c, pair, p3, 3);
    rule1(c, mem, pair);
    int m3[3] = {mem, c->comma, pair};
    rule(c, mem, m3, 3);
    int a2[2] = {c->lk, c->rk}, a3[3] = {c->lk, el, c->rk};
    rule(c, arr, a2, 2), rule(c, arr, a3, 3);
    rule1(c, el, v);
    int e3[3] = {el, c->comma, v};
    rule(c, el, e3, 3);
    return gr_error(c->g)[0] ? -1 : v;
}

void js_options_default(js_options *o) {
    o->whitespace_flexible = 0;
    o->strict = 0;
    o->integer_fraction = 0;
}

int js_add(gr_grammar *g, const char *schema, size_t n, const js_options *o, char *err, size_t cap) {
    static char dummy[1];
    if (!err || !cap) err = dummy, cap = 1;
    err[0] = 0;
    js_options def;
    if (!o) js_options_default(&def), o = &def;
    json_error_t je;
    json_t *root = json_loadb(schema, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        snprintf(err, cap, "/: invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
        return -1;
    }
    jsc c = {.g = g, .root = root, .o = *o, .draft = 2020, .err = err, .cap = cap};
    c.keep = json_array();
    const char *sv = json_string_value(json_object_get(root, "$schema"));
    if (sv) {
        if (strstr(sv, "draft-03") || strstr(sv, "draft-04")) c.draft = 4;
        else if (strstr(sv, "draft-06")) c.draft = 6;
        else if (strstr(sv, "draft-07")) c.draft = 7;
        else if (strstr(sv, "2019-09")) c.draft = 2019;
    }
    c.lb = gr_literal(g, "{", 1), c.rb = gr_literal(g, "}", 1), c.lk = gr_literal(g, "[", 1);
    c.rk = gr_literal(g, "]", 1), c.comma = gr_literal(g, ",", 1), c.colon = gr_literal(g, ":", 1);
    c.t_true = gr_literal(g, "true", 4), c.t_false = gr_literal(g, "false", 5), c.t_null = gr_literal(g, "null", 4);
    jre_buf b = {0};
    jre_printf(&b, "\"%s*\"", JRE_CHAR);
    c.t_str = gr_regex(g, b.s, b.n);
    b.n = 0;
    char e[64];
    jre_number(&b, NULL, 0, NULL, 0, 0, 0, e, sizeof e);
    c.t_num = gr_regex(g, b.s, b.n);
    jre_free(&b);
    c.never = gr_nonterminal(g, "false");
    int r = -1;
    if (c.t_num < 0 || c.never < 0 || (c.any = any_value(&c)) < 0) {
        jsc_gfail(&c, "");
    } else {
        r = jsc_compile(&c, root, "");
    }
    if (r >= 0 && gr_is_terminal(g, r)) { /* callers get a nonterminal */
        int w = gr_nonterminal(g, "schema");
        if (w < 0 || gr_rule(g, w, &r, 1)) r = jsc_gfail(&c, "");
        else r = w;
    }
    free(c.memo);
    free(c.hash);
    json_decref(c.keep);
    json_decref(root);
    return r;
}

/* Whitespace between two tokens in flexible mode: what a pretty printer writes, at most one line
 * break (\n, \r\n or \r) with up to 128 spaces or tabs around it, so that a sampler cannot write
 * whitespace forever (the matcher never lets two skips follow each other). */
#define JS_BLANKS "[ \\t]{0,128}"
#define JS_SKIP "[ \\t]{1,128}(?:(?:\\r\\n|\\n|\\r)" JS_BLANKS ")?|(?:\\r\\n|\\n|\\r)" JS_BLANKS

gr_grammar *js_compile(const char *schema, size_t n, const js_options *o, char *err, size_t cap) {
    static char dummy[1];
    if (!err || !cap) err = dummy, cap = 1;
    gr_grammar *g = gr_new();
    if (!g) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    int s = js_add(g, schema, n, o, err, cap);
    if (s < 0 || gr_set_start(g, s) || (o && o->whitespace_flexible && gr_set_skip(g, JS_SKIP, strlen(JS_SKIP)))) {
        if (s >= 0) snprintf(err, cap, "/: %s", gr_error(g));
        gr_free(g);
        return NULL;
    }
    return g;
}
