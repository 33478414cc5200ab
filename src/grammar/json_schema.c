/* JSON Schema -> grammar (json_schema.h).
 *
 * Lexemes are large: a whole string (quotes, escapes and any `pattern` / length / `format`
 * included) is one regex, a number one regex, a property key one literal, so the parser only sees
 * structure. Schemas are compiled once each (memoized by node), which also makes `$ref` cycles
 * plain recursive rules. allOf (and `$ref` beside other keywords in 2019-09+) is merged into one
 * schema where the keywords combine exactly, else refused; anyOf is a choice; oneOf is a choice
 * only when its alternatives are provably disjoint.
 *
 * Objects accept their properties in any order: the grammar tracks which required properties were
 * seen (one nonterminal per subset of at most JS_MAX_REQ_SUBSET required properties; beyond that,
 * the required ones in schema order with the optional ones anywhere between). An optional
 * property may repeat (a duplicate key, which JSON parsers resolve to the last value, itself
 * valid). Property names are matched in their canonical spelling; other names (additional
 * properties) in any spelling but those. */
#include "grammar/json_schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_impl.h"
#include "grammar/lexer.h"

#define JS_MAX_DEPTH 200
#define JS_MAX_WORK 200000
#define JS_MAX_REQ_SUBSET 8
#define JS_MAX_PRODUCT 256
#define JS_MAX_COUNTED 5000 /* string lengths counted in one regex */
/* internal keyword: strings excluded by a `not` (rewrite_not) */
#define JS_NOT_STRINGS "$pagoda-not-strings"

enum { T_NULL = 1, T_BOOL = 2, T_OBJ = 4, T_ARR = 8, T_STR = 16, T_INT = 32, T_NUM = 64, T_ALL = 127 };

typedef struct {
    const json_t *s;
    int sym, fwd, state; /* state: 1 in progress, 2 done */
} memo_e;

typedef struct {
    gr_grammar *g;
    json_t *root;
    js_options o;
    int draft; /* 4, 6, 7, 2019, 2020 */
    char *err;
    size_t cap;
    int failed;
    memo_e *memo;
    int n_memo, cap_memo;
    int *hash;
    int hash_cap;
    json_t *keep; /* schemas made by merging, alive until the end */
    int depth;
    long work;
    int lb, rb, lk, rk, comma, colon, t_true, t_false, t_null, t_str, t_num, t_int;
    int any, never;
} jsc;

static int fail(jsc *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(jsc *c, const char *path, const char *fmt, ...) {
    if (c->failed) return -1;
    c->failed = 1;
    int k = snprintf(c->err, c->cap, "%s: ", path[0] ? path : "/");
    if (k >= 0 && (size_t)k < c->cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, c->cap - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int gfail(jsc *c, const char *path) { return fail(c, path, "%s", gr_error(c->g)[0] ? gr_error(c->g) : "grammar error"); }

static void subpath(char *out, size_t cap, const char *path, const char *a, const char *b) {
    if (b) snprintf(out, cap, "%s/%s/%s", path, a, b);
    else snprintf(out, cap, "%s/%s", path, a);
}

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

static int is_constraint(const char *k) { return in_list(k, k_handled) || in_list(k, k_unsupported); }

/* keywords that only constrain one type of instance */
static const char *const k_obj[] = {"properties", "required", "additionalProperties", "patternProperties",
                                    "minProperties", "maxProperties", "dependencies", "propertyNames",
                                    "dependentRequired", "dependentSchemas", "unevaluatedProperties", NULL};
static const char *const k_arr[] = {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
                                    "contains", "minContains", "maxContains", "unevaluatedItems", NULL};
static const char *const k_str[] = {"minLength", "maxLength", "pattern", "format", JS_NOT_STRINGS, NULL};
static const char *const k_num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", NULL};

/* 1 if keyword k does not constrain instances of type bit t */
static int irrelevant_for(const char *k, int t) {
    if (in_list(k, k_obj)) return t != T_OBJ;
    if (in_list(k, k_arr)) return t != T_ARR;
    if (in_list(k, k_str)) return t != T_STR;
    if (in_list(k, k_num)) return !(t & (T_INT | T_NUM));
    return !is_constraint(k);
}

/* the schema has keywords besides `skip` that constrain instances */
static int has_constraints(const json_t *s, const char *skip, const char *skip2) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if ((skip && !strcmp(k, skip)) || (skip2 && !strcmp(k, skip2))) continue;
        if (is_constraint(k)) return 1;
    }
    return 0;
}

static int is_trivial(const json_t *s) { return json_is_true(s) || (json_is_object(s) && !has_constraints(s, NULL, NULL)); }

/* ---- JSON helpers ---- */

static int js_equal(const json_t *a, const json_t *b) {
    if (!a || !b) return a == b;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!js_equal(json_array_get(a, i), json_array_get(b, i))) return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !js_equal(v, w)) return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

static json_t *keep(jsc *c, json_t *v) { /* steals v */
    if (!v) return NULL;
    json_array_append_new(c->keep, v);
    return v;
}

static json_t *all_of2(jsc *c, json_t *a, json_t *b) {
    if (!a || is_trivial(a)) return b;
    if (!b || is_trivial(b)) return a;
    if (a == b) return a;
    return keep(c, json_pack("{s:[O,O]}", "allOf", a, b));
}

/* ---- $ref ---- */

static json_t *resolve(jsc *c, const char *ref, const char *path) {
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
        fail(c, path, "$ref '%.100s' is not a reference inside the schema", ref);
        return NULL;
    }
    p++;
    json_t *cur = c->root;
    if (!*p) return cur;
    if (*p != '/') {
        fail(c, path, "$ref '%.100s': anchors are not supported", ref);
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
            fail(c, path, "$ref '%.100s' does not resolve", ref);
            return NULL;
        }
    }
    return cur;
}

/* ---- type inference (for oneOf disjointness) ---- */

static int value_type(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_NULL: return T_NULL;
    case JSON_TRUE: case JSON_FALSE: return T_BOOL;
    case JSON_OBJECT: return T_OBJ;
    case JSON_ARRAY: return T_ARR;
    case JSON_STRING: return T_STR;
    case JSON_INTEGER: return T_INT;
    case JSON_REAL: return floor(json_real_value(v)) == json_real_value(v) ? T_INT : T_NUM;
    }
    return 0;
}

static int type_bits(const json_t *t) { /* the "type" keyword; -1 bad */
    if (!t) return T_ALL;
    if (json_is_string(t)) {
        const char *s = json_string_value(t);
        static const char *names[] = {"null", "boolean", "object", "array", "string", "integer", "number"};
        static const int bits[] = {T_NULL, T_BOOL, T_OBJ, T_ARR, T_STR, T_INT, T_INT | T_NUM};
        for (int i = 0; i < 7; i++)
            if (!strcmp(s, names[i])) return bits[i];
        if (!strcmp(s, "any")) return T_ALL;
        return -1;
    }
    if (json_is_array(t)) {
        int m = 0;
        for (size_t i = 0; i < json_array_size(t); i++) {
            int b = type_bits(json_array_get(t, i));
            if (b < 0 || !json_is_string(json_array_get(t, i))) return -1;
            m |= b;
        }
        return m;
    }
    return -1;
}

static int infer(jsc *c, const json_t *s, int depth) {
    if (depth > 32 || json_is_true(s)) return T_ALL;
    if (json_is_false(s)) return 0;
    if (!json_is_object(s)) return T_ALL;
    int m = type_bits(json_object_get(s, "type"));
    if (m < 0) m = T_ALL;
    const json_t *ref = json_object_get(s, "$ref");
    if (json_is_string(ref)) {
        int save = c->failed;
        json_t *t = resolve(c, json_string_value(ref), "");
        c->failed = save;
        if (t) {
            int r = infer(c, t, depth + 1);
            m = c->draft <= 7 ? r : m & r;
        }
    }
    const json_t *e = json_object_get(s, "enum");
    if (json_is_array(e)) {
        int v = 0;
        for (size_t i = 0; i < json_array_size(e); i++) v |= value_type(json_array_get(e, i));
        m &= v;
    }
    if (json_object_get(s, "const")) m &= value_type(json_object_get(s, "const"));
    const json_t *a = json_object_get(s, "allOf");
    for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++) m &= infer(c, json_array_get(a, i), depth + 1);
    const char *alts[] = {"anyOf", "oneOf"};
    for (int k = 0; k < 2; k++) {
        a = json_object_get(s, alts[k]);
        if (!json_is_array(a)) continue;
        int u = 0;
        for (size_t i = 0; i < json_array_size(a); i++) u |= infer(c, json_array_get(a, i), depth + 1);
        m &= u;
    }
    if (json_is_true(json_object_get(s, "nullable"))) m |= T_NULL;
    return m;
}

/* the values an object's property p is restricted to (enum/const), or NULL */
static const json_t *prop_values(jsc *c, const json_t *s, const char *p, json_t **tmp) {
    const json_t *ref = json_object_get(s, "$ref");
    if (json_is_string(ref)) {
        int save = c->failed;
        const json_t *t = resolve(c, json_string_value(ref), "");
        c->failed = save;
        if (t) s = t;
    }
    const json_t *props = json_object_get(s, "properties");
    const json_t *ps = props ? json_object_get(props, p) : NULL;
    if (!json_is_object(ps)) return NULL;
    if (json_is_string(json_object_get(ps, "$ref"))) {
        int save = c->failed;
        const json_t *t = resolve(c, json_string_value(json_object_get(ps, "$ref")), "");
        c->failed = save;
        if (t) ps = t;
        if (!json_is_object(ps)) return NULL;
    }
    if (json_object_get(ps, "const")) {
        *tmp = json_pack("[O]", json_object_get(ps, "const"));
        return *tmp;
    }
    const json_t *e = json_object_get(ps, "enum");
    return json_is_array(e) ? e : NULL;
}

static int is_required(const json_t *s, const char *p) {
    const json_t *r = json_object_get(s, "required");
    for (size_t i = 0; json_is_array(r) && i < json_array_size(r); i++)
        if (json_is_string(json_array_get(r, i)) && !strcmp(json_string_value(json_array_get(r, i)), p)) return 1;
    return 0;
}

/* every value of type bit t satisfies s (s constrains nothing of t) */
static int trivial_for(const json_t *s, int t) {
    if (json_is_true(s)) return 1;
    if (!json_is_object(s)) return 0;
    int m = type_bits(json_object_get(s, "type"));
    if (m < 0 || (m & t) != t) return 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (!strcmp(k, "type") || irrelevant_for(k, t)) continue;
        return 0;
    }
    return 1;
}

static const json_t *values_of(const json_t *s, json_t **tmp) {
    if (!json_is_object(s)) return NULL;
    if (json_object_get(s, "const")) return *tmp = json_pack("[O]", json_object_get(s, "const"));
    const json_t *e = json_object_get(s, "enum");
    return json_is_array(e) ? e : NULL;
}

static int values_disjoint(const json_t *va, const json_t *vb) {
    for (size_t i = 0; i < json_array_size(va); i++)
        for (size_t j = 0; j < json_array_size(vb); j++)
            if (js_equal(json_array_get(va, i), json_array_get(vb, j))) return 0;
    return 1;
}

/* no value of type bit t satisfies both a and b (both dereferenced) */
static int disjoint_on(jsc *c, const json_t *a, const json_t *b, int t) {
    if (!(infer(c, a, 0) & infer(c, b, 0) & t)) return 1;
    if (!json_is_object(a) || !json_is_object(b)) return 0;
    json_t *t1 = NULL, *t2 = NULL;
    const json_t *ea = values_of(a, &t1), *eb = values_of(b, &t2);
    int dis = ea && eb && values_disjoint(ea, eb);
    json_decref(t1), json_decref(t2);
    if (dis) return 1;
    if (t == T_STR) {
        double amin = json_number_value(json_object_get(a, "minLength")), bmin = json_number_value(json_object_get(b, "minLength"));
        json_t *ax = json_object_get(a, "maxLength"), *bx = json_object_get(b, "maxLength");
        if ((ax && json_number_value(ax) < bmin) || (bx && json_number_value(bx) < amin)) return 1;
    }
    if (t != T_OBJ) return 0;
    /* objects: a property required by both whose allowed values do not meet */
    const json_t *pa = json_object_get(a, "properties");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)pa, k, v) {
        if (!is_required(a, k) || !is_required(b, k)) continue;
        json_t *x1 = NULL, *x2 = NULL;
        const json_t *va = prop_values(c, a, k, &x1), *vb = prop_values(c, b, k, &x2);
        dis = va && vb && values_disjoint(va, vb);
        json_decref(x1), json_decref(x2);
        if (dis) return 1;
    }
    /* a required property the other forbids */
    for (int side = 0; side < 2; side++) {
        const json_t *x = side ? b : a, *y = side ? a : b;
        const json_t *req = json_object_get(x, "required");
        int closed = json_is_false(json_object_get(y, "additionalProperties")) && !json_object_get(y, "patternProperties");
        const json_t *py = json_object_get(y, "properties");
        for (size_t i = 0; json_is_array(req) && i < json_array_size(req); i++) {
            const char *p = json_string_value(json_array_get(req, i));
            if (!p) continue;
            const json_t *ps = json_object_get(py, p);
            if ((closed && !ps) || json_is_false(ps)) return 1;
        }
    }
    return 0;
}

/* the names s requires when `required` is its only object keyword ({"required": ["a"]}); else NULL */
static const json_t *only_required(const json_t *s) {
    if (!json_is_object(s)) return NULL;
    const json_t *r = json_object_get(s, "required");
    if (!json_is_array(r)) return NULL;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) if (strcmp(k, "required") && strcmp(k, "type") && is_constraint(k)) return NULL;
    return r;
}

/* ---- merging (allOf) ---- */

static json_t *merge(jsc *c, json_t *a, json_t *b, const char *path, int depth);

/* s without a top-level $ref (merged into its siblings in 2019-09+; siblings dropped before) */
static json_t *deref(jsc *c, json_t *s, const char *path, int depth) {
    if (depth > 32) {
        fail(c, path, "$ref/allOf nesting too deep to merge");
        return NULL;
    }
    if (!json_is_object(s)) return s;
    json_t *ref = json_object_get(s, "$ref");
    if (json_is_string(ref)) {
        json_t *t = resolve(c, json_string_value(ref), path);
        if (!t) return NULL;
        if (c->draft <= 7 || !has_constraints(s, "$ref", NULL)) return deref(c, t, path, depth + 1);
        json_t *rest = keep(c, json_copy(s));
        json_object_del(rest, "$ref");
        return merge(c, t, rest, path, depth + 1);
    }
    json_t *all = json_object_get(s, "allOf");
    if (json_is_array(all)) {
        json_t *r = keep(c, json_copy(s));
        json_object_del(r, "allOf");
        for (size_t i = 0; r && i < json_array_size(all); i++) r = merge(c, r, json_array_get(all, i), path, depth + 1);
        return r;
    }
    return s;
}

static int types_of(const json_t *s) {
    int m = type_bits(json_object_get(s, "type"));
    return m < 0 ? T_ALL : m;
}

static json_t *types_json(int m) {
    json_t *a = json_array();
    if (m & T_NULL) json_array_append_new(a, json_string("null"));
    if (m & T_BOOL) json_array_append_new(a, json_string("boolean"));
    if (m & T_OBJ) json_array_append_new(a, json_string("object"));
    if (m & T_ARR) json_array_append_new(a, json_string("array"));
    if (m & T_STR) json_array_append_new(a, json_string("string"));
    if ((m & (T_INT | T_NUM)) == (T_INT | T_NUM)) json_array_append_new(a, json_string("number"));
    else if (m & T_INT) json_array_append_new(a, json_string("integer"));
    return a;
}

/* draft-4 exclusive bounds (booleans) as numbers */
static void norm_bounds(json_t *s) {
    const char *ex[] = {"exclusiveMinimum", "exclusiveMaximum"}, *in[] = {"minimum", "maximum"};
    for (int i = 0; i < 2; i++) {
        json_t *e = json_object_get(s, ex[i]);
        if (!json_is_boolean(e)) continue;
        json_t *m = json_object_get(s, in[i]);
        if (json_is_true(e) && m) {
            json_object_set(s, ex[i], m);
            json_object_del(s, in[i]);
        } else {
            json_object_del(s, ex[i]);
        }
    }
}

static json_t *merge(jsc *c, json_t *a, json_t *b, const char *path, int depth) {
    if (c->failed || ++c->work > JS_MAX_WORK) {
        if (!c->failed) fail(c, path, "schema too large (merging)");
        return NULL;
    }
    a = deref(c, a, path, depth + 1);
    if (!a) return NULL;
    b = deref(c, b, path, depth + 1);
    if (!b) return NULL;
    if (json_is_true(b) || json_is_false(a)) return a;
    if (json_is_true(a) || json_is_false(b)) return b;
    if (!json_is_object(a) || !json_is_object(b)) {
        fail(c, path, "allOf: a schema must be an object or a boolean");
        return NULL;
    }
    json_t *r = keep(c, json_copy(a));
    json_t *bb = keep(c, json_copy(b));
    norm_bounds(r);
    norm_bounds(bb);
    json_t *pa = json_object_get(a, "properties"), *pb = json_object_get(b, "properties");
    json_t *aa = json_object_get(a, "additionalProperties"), *ab = json_object_get(b, "additionalProperties");
    const char *k;
    json_t *vb;
    json_object_foreach(bb, k, vb) {
        json_t *va = json_object_get(r, k);
        if (!va) {
            json_object_set(r, k, vb);
            continue;
        }
        if (!is_constraint(k) || js_equal(va, vb)) continue;
        if (!strcmp(k, "type")) {
            json_object_set_new(r, k, types_json(types_of(r) & types_of(bb)));
        } else if (!strcmp(k, "enum")) {
            json_t *e = json_array();
            for (size_t i = 0; json_is_array(va) && i < json_array_size(va); i++)
                for (size_t j = 0; json_is_array(vb) && j < json_array_size(vb); j++)
                    if (js_equal(json_array_get(va, i), json_array_get(vb, j))) {
                        json_array_append(e, json_array_get(va, i));
                        break;
                    }
            json_object_set_new(r, k, e);
        } else if (!strcmp(k, "const")) {
            json_object_del(r, "const");
            json_object_set_new(r, "enum", json_array()); /* two different constants */
        } else if (!strcmp(k, "required")) {
            json_t *u = json_copy(va);
            for (size_t j = 0; json_is_array(vb) && j < json_array_size(vb); j++) json_array_append(u, json_array_get(vb, j));
            json_object_set_new(r, k, u);
        } else if (!strncmp(k, "min", 3) || !strcmp(k, "exclusiveMinimum") || !strncmp(k, "max", 3) ||
                   !strcmp(k, "exclusiveMaximum")) {
            if (!json_is_number(va) || !json_is_number(vb)) {
                fail(c, path, "allOf: cannot merge '%s'", k);
                return NULL;
            }
            int want_max = !strncmp(k, "min", 3) || !strcmp(k, "exclusiveMinimum");
            double x = json_number_value(va), y = json_number_value(vb);
            if (want_max ? y > x : y < x) json_object_set(r, k, vb);
        } else if (!strcmp(k, "properties")) {
            json_t *u = json_copy(va);
            const char *pk;
            json_t *pv;
            json_object_foreach(vb, pk, pv) json_object_set(u, pk, all_of2(c, json_object_get(va, pk), pv));
            json_object_set_new(r, k, u);
        } else if (!strcmp(k, "additionalProperties") || !strcmp(k, "items") || !strcmp(k, "additionalItems")) {
            if (json_is_array(va) || json_is_array(vb)) {
                fail(c, path, "allOf: cannot merge two different array-form '%s'", k);
                return NULL;
            }
            json_object_set(r, k, all_of2(c, va, vb));
        } else if (!strcmp(k, "prefixItems")) {
            if (!json_is_array(va) || !json_is_array(vb) || json_array_size(va) != json_array_size(vb)) {
                fail(c, path, "allOf: cannot merge 'prefixItems' of different lengths");
                return NULL;
            }
            json_t *u = json_array();
            for (size_t i = 0; i < json_array_size(va); i++)
                json_array_append(u, all_of2(c, json_array_get(va, i), json_array_get(vb, i)));
            json_object_set_new(r, k, u);
        } else if (!strcmp(k, "anyOf") || !strcmp(k, "oneOf")) {
            if (!json_is_array(va) || !json_is_array(vb) || json_array_size(va) * json_array_size(vb) > JS_MAX_PRODUCT) {
                fail(c, path, "allOf: too many combinations of '%s'", k);
                return NULL;
            }
            json_t *u = json_array();
            for (size_t i = 0; i < json_array_size(va); i++)
                for (size_t j = 0; j < json_array_size(vb); j++)
                    json_array_append(u, all_of2(c, json_array_get(va, i), json_array_get(vb, j)));
            json_object_set_new(r, k, u);
        } else if (!strcmp(k, "nullable")) {
            json_object_set_new(r, k, json_false());
        } else if (!strcmp(k, "uniqueItems")) {
            json_object_set_new(r, k, json_true());
        } else if (!strcmp(k, "format")) {
            jre_buf t = {0};
            int known = json_is_string(vb) ? jre_format(&t, json_string_value(vb)) : 1;
            jre_free(&t);
            if (known) {
                int known_a = json_is_string(va) ? jre_format(&t, json_string_value(va)) : 1;
                jre_free(&t);
                if (known_a) {
                    fail(c, path, "allOf: cannot merge two different formats");
                    return NULL;
                }
                json_object_set(r, k, vb);
            }
        } else {
            fail(c, path, "allOf: cannot merge two different '%s'", k);
            return NULL;
        }
    }
    /* properties of one side meet the other's additionalProperties */
    if ((pa || pb) && (json_object_get(a, "patternProperties") || json_object_get(b, "patternProperties")) &&
        !js_equal(json_object_get(a, "patternProperties"), json_object_get(b, "patternProperties"))) {
        int a_open = !aa || json_is_true(aa), b_open = !ab || json_is_true(ab);
        if (!(a_open && b_open && !pa) && !(a_open && b_open && !pb)) {
            fail(c, path, "allOf: cannot merge patternProperties with properties of another branch");
            return NULL;
        }
    }
    json_t *pr = json_object_get(r, "properties");
    if (pr && (aa || ab)) {
        json_t *u = json_copy(pr);
        const char *pk;
        json_t *pv;
        json_object_foreach(pr, pk, pv) {
            int in_a = pa && json_object_get(pa, pk), in_b = pb && json_object_get(pb, pk);
            if (in_a && !in_b && ab) json_object_set(u, pk, all_of2(c, pv, ab));
            if (in_b && !in_a && aa) json_object_set(u, pk, all_of2(c, pv, aa));
        }
        json_object_set_new(r, "properties", u);
    }
    return c->failed ? NULL : r;
}

/* ---- the grammar ---- */

static int compile(jsc *c, json_t *s, const char *path);

static int nt(jsc *c, const char *name) {
    int n = gr_nonterminal(c->g, name);
    return n;
}

static int rule(jsc *c, int lhs, const int *rhs, int n) { return gr_rule(c->g, lhs, rhs, n); }
static int rule1(jsc *c, int lhs, int a) { return gr_rule(c->g, lhs, &a, 1); }

static int regex_sym(jsc *c, const jre_buf *b, const char *path) {
    if (b->oom) return fail(c, path, "out of memory");
    int t = gr_regex(c->g, b->s, b->n);
    return t < 0 ? gfail(c, path) : t;
}

static int literal_sym(jsc *c, const jre_buf *b, const char *path) {
    if (b->oom) return fail(c, path, "out of memory");
    int t = gr_literal(c->g, b->s, b->n);
    return t < 0 ? gfail(c, path) : t;
}

/* a grammar for one JSON value (enum/const) */
static int value_sym(jsc *c, const json_t *v, const char *path) {
    jre_buf b = {0};
    int r;
    if (json_is_number(v)) {
        jre_number_eq(&b, v);
        r = regex_sym(c, &b, path);
    } else if (json_is_object(v) || json_is_array(v)) {
        int obj = json_is_object(v);
        int n = nt(c, "const");
        int rhs[4 * 64 + 2];
        size_t cnt = obj ? json_object_size(v) : json_array_size(v);
        if (cnt > 64) {
            /* long compounds: one lexeme (compact only) */
            if (c->o.whitespace_flexible) {
                jre_free(&b);
                return fail(c, path, "enum/const value too large");
            }
            if (jre_dump(&b, v)) r = fail(c, path, "enum/const: invalid UTF-8");
            else r = literal_sym(c, &b, path);
            jre_free(&b);
            return r;
        }
        int k = 0;
        rhs[k++] = obj ? c->lb : c->lk;
        size_t i = 0;
        const char *key;
        json_t *x;
        if (obj) {
            json_object_foreach((json_t *)v, key, x) {
                if (i++) rhs[k++] = c->comma;
                jre_buf kb = {0};
                json_t *ks = json_string(key);
                int bad = !ks || jre_dump(&kb, ks);
                json_decref(ks);
                rhs[k++] = bad ? fail(c, path, "enum/const: bad key") : literal_sym(c, &kb, path);
                jre_free(&kb);
                rhs[k++] = c->colon;
                rhs[k++] = value_sym(c, x, path);
            }
        } else {
            json_array_foreach((json_t *)v, i, x) {
                if (i) rhs[k++] = c->comma;
                rhs[k++] = value_sym(c, x, path);
            }
        }
        rhs[k++] = obj ? c->rb : c->rk;
        for (int j = 0; j < k; j++)
            if (rhs[j] < 0) return -1;
        r = rule(c, n, rhs, k) ? gfail(c, path) : n;
    } else {
        if (jre_dump(&b, v)) r = fail(c, path, "enum/const: invalid UTF-8");
        else r = literal_sym(c, &b, path);
    }
    jre_free(&b);
    return r;
}

/* ---- strings and numbers ---- */

static long get_count(jsc *c, const json_t *s, const char *k, long dflt, const char *path) {
    json_t *v = json_object_get(s, k);
    if (!v) return dflt;
    double d = json_number_value(v);
    if (!json_is_number(v) || d < 0 || d != floor(d)) return fail(c, path, "'%s' must be a non-negative integer", k), -2;
    return d > 1e9 ? 1000000000L : (long)d;
}

static int string_regex(jsc *c, const json_t *s, jre_buf *b, const char *path) {
    long mn = get_count(c, s, "minLength", 0, path), mx = get_count(c, s, "maxLength", -1, path);
    if (mn == -2 || mx == -2) return -1;
    const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    int fr = 0;
    jre_buf fb = {0};
    if (fmt && json_is_string(fmt)) {
        fr = jre_format(&fb, json_string_value(fmt));
        if (fr < 0) {
            jre_free(&fb);
            return fail(c, path, "format '%.60s' is not supported", json_string_value(fmt));
        }
    }
    if (mx >= 0 && mx < mn) {
        jre_free(&fb);
        jre_puts(b, "[]");
        return 0;
    }
    const json_t *nots = json_object_get(s, JS_NOT_STRINGS);
    if (nots && json_array_size(nots)) {
        jre_free(&fb);
        if (pat || fr || mn > 0 || mx >= 0) return fail(c, path, "'not' with other string keywords is not supported");
        size_t k = json_array_size(nots);
        const char **names = calloc(k, sizeof *names);
        size_t *lens = calloc(k, sizeof *lens);
        int rc = names && lens ? 0 : fail(c, path, "out of memory");
        for (size_t i = 0; !rc && i < k; i++)
            names[i] = json_string_value(json_array_get(nots, i)), lens[i] = json_string_length(json_array_get(nots, i));
        if (!rc && jre_string_except(b, names, lens, (int)k))
            rc = fail(c, path, "'not' of strings with control characters or outside the BMP is not supported");
        free(names);
        free(lens);
        return rc;
    }
    if (fr > 0) {
        if (pat || mn > 0 || mx >= 0) {
            jre_free(&fb);
            return fail(c, path, "format '%.60s' together with pattern/minLength/maxLength is not supported",
                        json_string_value(fmt));
        }
        jre_put(b, fb.s, fb.n);
        jre_free(&fb);
        return 0;
    }
    jre_free(&fb);
    if (mx > JS_MAX_COUNTED || mn > JS_MAX_COUNTED)
        return fail(c, path, "minLength/maxLength above %d are not supported (the lexer counts by copies)", JS_MAX_COUNTED);
    if (pat) {
        if (!json_is_string(pat)) return fail(c, path, "'pattern' must be a string");
        char e[200];
        int folded;
        if (jre_pattern(b, json_string_value(pat), json_string_length(pat), mn, mx, &folded, e, sizeof e))
            return fail(c, path, "pattern: %s", e);
        if (!folded) return fail(c, path, "pattern together with minLength/maxLength is not supported");
        return 0;
    }
    if (mn > 0 || mx >= 0) jre_string_len(b, mn, mx);
    else jre_printf(b, "\"%s*\"", JRE_CHAR);
    return 0;
}

static int bound_text(const json_t *v, char *out, size_t cap) {
    if (json_is_integer(v)) snprintf(out, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v)) jre_double_repr(out, cap, json_real_value(v));
    else return -1;
    return 0;
}

static int number_regex(jsc *c, const json_t *s0, int integer, jre_buf *b, const char *path) {
    json_t *s = json_copy((json_t *)s0);
    norm_bounds(s);
    const json_t *mo = json_object_get(s, "multipleOf");
    int rc = 0;
    if (mo) {
        double d = json_number_value(mo);
        if (!json_is_number(mo) || d <= 0) rc = fail(c, path, "'multipleOf' must be a positive number");
        else if (d == 1) integer = 1;
        else if (!(integer && d == floor(d) && d == 1)) rc = fail(c, path, "keyword 'multipleOf' is not supported");
    }
    char lo[420], hi[420];
    const char *plo = NULL, *phi = NULL;
    int lo_x = 0, hi_x = 0;
    const char *names[2][2] = {{"minimum", "exclusiveMinimum"}, {"maximum", "exclusiveMaximum"}};
    for (int side = 0; side < 2 && !rc; side++) {
        const json_t *in = json_object_get(s, names[side][0]), *ex = json_object_get(s, names[side][1]);
        const json_t *pick = NULL;
        int excl = 0;
        if (in && !json_is_number(in)) rc = fail(c, path, "'%s' must be a number", names[side][0]);
        if (ex && !json_is_number(ex)) rc = fail(c, path, "'%s' must be a number", names[side][1]);
        if (rc) break;
        if (in) pick = in;
        if (ex) {
            double x = json_number_value(ex), y = in ? json_number_value(in) : 0;
            if (!in || (side == 0 ? x >= y : x <= y)) pick = ex, excl = 1;
        }
        if (!pick) continue;
        if (!isfinite(json_number_value(pick))) continue;
        if (side == 0) bound_text(pick, lo, sizeof lo), plo = lo, lo_x = excl;
        else bound_text(pick, hi, sizeof hi), phi = hi, hi_x = excl;
    }
    json_decref(s);
    if (rc) return -1;
    char e[200];
    if (jre_number(b, plo, lo_x, phi, hi_x, integer, c->draft >= 6, e, sizeof e)) return fail(c, path, "%s", e);
    return 0;
}

/* 1 if the value satisfies the (scalar-level) keywords of s, 0 if not, -1 if it cannot tell */
static int check_value(jsc *c, const json_t *s, const json_t *v, const char *path) {
    int vt = value_type(v);
    int m = types_of(s);
    if (vt == T_INT && (m & (T_INT | T_NUM))) {
    } else if (!(vt & m)) {
        return 0;
    }
    if (json_is_true(json_object_get(s, "nullable")) && json_is_null(v)) return 1;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)s, k, x) {
        if (!is_constraint(k) || !strcmp(k, "type") || !strcmp(k, "nullable")) continue;
        if (json_is_string(v) && (!strcmp(k, "minLength") || !strcmp(k, "maxLength") || !strcmp(k, "pattern") ||
                                  !strcmp(k, "format"))) {
            continue; /* checked below with the string's regex */
        }
        if (json_is_number(v) && (!strcmp(k, "minimum") || !strcmp(k, "maximum") || !strcmp(k, "exclusiveMinimum") ||
                                  !strcmp(k, "exclusiveMaximum") || !strcmp(k, "multipleOf"))) {
            continue;
        }
        if (!strcmp(k, "enum")) {
            int hit = 0;
            for (size_t i = 0; json_is_array(x) && i < json_array_size(x) && !hit; i++) hit = js_equal(json_array_get(x, i), v);
            if (!hit) return 0;
            continue;
        }
        if (!strcmp(k, "const")) {
            if (!js_equal(x, v)) return 0;
            continue;
        }
        /* keywords for other types do not apply */
        if (irrelevant_for(k, value_type(v) == T_INT ? T_INT : value_type(v))) continue;
        return -1;
    }
    int str_c = json_object_get(s, "minLength") || json_object_get(s, "maxLength") || json_object_get(s, "pattern") ||
                json_object_get(s, "format");
    int num_c = json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
                json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum") ||
                json_object_get(s, "multipleOf");
    if ((json_is_string(v) && str_c) || (json_is_number(v) && num_c)) {
        jre_buf re = {0}, lit = {0};
        int save_failed = c->failed;
        int rc = json_is_string(v) ? string_regex(c, s, &re, path) : number_regex(c, s, !(m & T_NUM), &re, path);
        if (rc) {
            c->failed = save_failed;
            jre_free(&re);
            return -1;
        }
        int r = jre_dump(&lit, v) ? -1 : jre_matches(re.s, re.n, lit.s, lit.n);
        jre_free(&re);
        jre_free(&lit);
        return r;
    }
    return 1;
}

/* ---- objects ---- */

typedef struct {
    const char *name;
    json_t *schema;
    int required;
    int pair; /* symbol: key ":" value */
} prop;

static int pair_sym(jsc *c, int key, int value, const char *path) {
    if (key < 0 || value < 0) return -1;
    int p = nt(c, "pair");
    int rhs[3] = {key, c->colon, value};
    if (p < 0 || rule(c, p, rhs, 3)) return gfail(c, path);
    return p;
}

static int object_sym(jsc *c, json_t *s, const char *path) {
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *add = json_object_get(s, "additionalProperties");
    json_t *pats = json_object_get(s, "patternProperties");
    if (props && !json_is_object(props)) return fail(c, path, "'properties' must be an object");
    if (req && !json_is_array(req)) return fail(c, path, "'required' must be an array");
    if (pats && !json_is_object(pats)) return fail(c, path, "'patternProperties' must be an object");
    if (!add && c->o.strict) add = json_false();
    if (pats && json_object_size(pats) == 0) pats = NULL;
    for (const char *const *k = (const char *const[]){"dependencies", "dependentRequired", "dependentSchemas",
                                                      "propertyNames", "unevaluatedProperties", NULL};
         *k; k++) {
        json_t *v = json_object_get(s, *k);
        if (!v || (json_is_object(v) && !json_object_size(v)) || json_is_true(v)) continue;
        return fail(c, path, "keyword '%s' is not supported", *k);
    }
    int n = 0;
    size_t cap = (props ? json_object_size(props) : 0) + (req ? json_array_size(req) : 0);
    prop *P = calloc(cap + 1, sizeof *P);
    if (!P) return fail(c, path, "out of memory");
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(props, k, v) P[n++] = (prop){k, v, 0, -1};
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *r = json_string_value(json_array_get(req, i));
        if (!r) {
            free(P);
            return fail(c, path, "'required' must list strings");
        }
        int j = 0;
        while (j < n && strcmp(P[j].name, r)) j++;
        if (j == n) P[n++] = (prop){r, NULL, 0, -1}; /* value: patternProperties / additionalProperties */
        P[j].required = 1;
    }
    /* pattern schemas: equal to each other (a key matching several needs all of them) */
    json_t *pat_schema = NULL;
    json_object_foreach(pats, k, v) {
        if (pat_schema && !js_equal(pat_schema, v)) {
            free(P);
            return fail(c, path, "patternProperties with different schemas per pattern are not supported");
        }
        pat_schema = v;
    }
    /* one pattern of a simple form: its keys and the additional ones as exact regexes */
    jre_buf pat_keys = {0}, add_keys = {0};
    int split = -1;
    if (pats && json_object_size(pats) == 1) {
        const char **names = calloc((size_t)n + 1, sizeof *names);
        size_t *lens = calloc((size_t)n + 1, sizeof *lens);
        if (!names || !lens) rc = fail(c, path, "out of memory");
        for (int i = 0; !rc && i < n; i++) names[i] = P[i].name, lens[i] = strlen(P[i].name);
        json_object_foreach(pats, k, v) {
            if (!rc) split = jre_key_split(&pat_keys, json_is_false(add) ? NULL : &add_keys, k, strlen(k), names, lens, n);
        }
        free(names);
        free(lens);
    }
    if (!rc && split < 0 && pats && !(json_is_false(add) || is_trivial(pat_schema) || (add && js_equal(add, pat_schema))))
        rc = fail(c, path, "patternProperties together with additionalProperties are not supported");
    /* listed names matching a pattern */
    for (int i = 0; i < n && !rc; i++) {
        jre_buf nb = {0};
        json_t *ns = json_string(P[i].name);
        jre_dump(&nb, ns);
        json_decref(ns);
        int hit = 0;
        json_object_foreach(pats, k, v) {
            jre_buf pb = {0};
            char e[200];
            int folded;
            if (jre_pattern(&pb, k, strlen(k), 0, -1, &folded, e, sizeof e)) rc = fail(c, path, "patternProperties: %s", e);
            else if (jre_matches(pb.s, pb.n, nb.s, nb.n) != 0) hit = 1;
            jre_free(&pb);
        }
        jre_free(&nb);
        if (!rc && hit) {
            if (!P[i].schema) P[i].schema = pat_schema;
            else if (split >= 0) P[i].schema = all_of2(c, P[i].schema, pat_schema);
            else rc = fail(c, path, "patternProperties matching the listed property '%.60s' are not supported", P[i].name);
        }
        if (!P[i].schema) P[i].schema = add ? add : json_true();
    }
    /* counts */
    long minp = get_count(c, s, "minProperties", 0, path), maxp = get_count(c, s, "maxProperties", -1, path);
    if (minp == -2 || maxp == -2) rc = -1;
    int n_req = 0;
    for (int i = 0; i < n; i++) n_req += P[i].required;
    int closed = json_is_false(add) && !pats;
    if (!rc && (minp > n_req || maxp >= 0)) {
        if (closed && n_req == n) {
            if (minp > n || (maxp >= 0 && maxp < n)) n = -1; /* unsatisfiable */
        } else if (closed && minp <= n_req && maxp >= n) {
            /* at most n distinct names anyway */
        } else if (maxp == 0 && n_req == 0) {
            closed = -1; /* the empty object only */
        } else {
            rc = fail(c, path, "keyword '%s' is not supported here", minp > n_req ? "minProperties" : "maxProperties");
        }
    }
    if (rc) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return -1;
    }
    int obj = nt(c, "object");
    int empty[2] = {c->lb, c->rb};
    if (n < 0) { /* unsatisfiable counts */
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return obj;
    }
    if (closed == -1) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return rule(c, obj, empty, 2) ? gfail(c, path) : obj;
    }
    /* pairs */
    char sp[512];
    for (int i = 0; i < n && !rc; i++) {
        jre_buf kb = {0};
        json_t *ns = json_string(P[i].name);
        if (!ns || jre_dump(&kb, ns)) rc = fail(c, path, "property name is not valid UTF-8");
        json_decref(ns);
        int key = rc ? -1 : literal_sym(c, &kb, path);
        jre_free(&kb);
        subpath(sp, sizeof sp, path, "properties", P[i].name);
        int val = key < 0 ? -1 : compile(c, P[i].schema, sp);
        P[i].pair = pair_sym(c, key, val, sp);
        if (P[i].pair < 0) rc = -1;
    }
    int opt = -1; /* choice of optional pairs */
    if (!rc) {
        opt = nt(c, "opt");
        int n_opt = 0;
        for (int i = 0; i < n; i++)
            if (!P[i].required) rule1(c, opt, P[i].pair), n_opt++;
        if ((add && json_is_false(add)) || split == 1) {
        } else if (split == 0) {
            int key = regex_sym(c, &add_keys, path);
            subpath(sp, sizeof sp, path, "additionalProperties", NULL);
            int val = key < 0 ? -1 : add ? compile(c, add, sp) : c->any;
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, opt, p), n_opt++;
        } else {
            int key;
            if (n) {
                const char **names = malloc((size_t)n * sizeof *names);
                size_t *lens = malloc((size_t)n * sizeof *lens);
                jre_buf kb = {0};
                if (!names || !lens) rc = fail(c, path, "out of memory");
                for (int i = 0; !rc && i < n; i++) names[i] = P[i].name, lens[i] = strlen(P[i].name);
                if (!rc && jre_string_except(&kb, names, lens, n))
                    rc = fail(c, path, "property names with control characters or outside the BMP are not supported with additionalProperties");
                key = rc ? -1 : regex_sym(c, &kb, path);
                jre_free(&kb);
                free(names);
                free(lens);
            } else {
                key = c->t_str;
            }
            subpath(sp, sizeof sp, path, "additionalProperties", NULL);
            int val = key < 0 ? -1 : add ? compile(c, add, sp) : c->any;
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, opt, p), n_opt++;
        }
        json_object_foreach(pats, k, v) {
            if (rc) break;
            jre_buf pb = {0};
            char e[200];
            int folded;
            if (split >= 0) jre_put(&pb, pat_keys.s, pat_keys.n);
            else if (jre_pattern(&pb, k, strlen(k), 0, -1, &folded, e, sizeof e)) rc = fail(c, path, "patternProperties: %s", e);
            int key = rc ? -1 : regex_sym(c, &pb, path);
            jre_free(&pb);
            subpath(sp, sizeof sp, path, "patternProperties", k);
            int val = key < 0 ? -1 : compile(c, v, sp);
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, opt, p), n_opt++;
        }
        if (!n_opt) opt = -1;
    }
    if (rc) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return -1;
    }
    if (n_req > 64) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return fail(c, path, "more than 64 required properties are not supported");
    }
    int req_idx[64];
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (P[i].required && nr < 64) req_idx[nr++] = i;
    if (n_req <= JS_MAX_REQ_SUBSET) {
        /* seq[S]: nonempty sequences of pairs containing exactly the required set S */
        int nsub = 1 << n_req;
        int seq[1 << JS_MAX_REQ_SUBSET];
        for (int m = 0; m < nsub; m++) seq[m] = nt(c, "members");
        for (int m = 0; m < nsub; m++) {
            if (opt >= 0) {
                if (m == 0) rule1(c, seq[0], opt);
                int r3[3] = {seq[m], c->comma, opt};
                rule(c, seq[m], r3, 3);
            }
            for (int j = 0; j < n_req; j++) {
                if (!(m >> j & 1)) continue;
                int pr = P[req_idx[j]].pair;
                if (m == (1 << j)) rule1(c, seq[m], pr);
                int r3[3] = {seq[m & ~(1 << j)], c->comma, pr};
                rule(c, seq[m], r3, 3);
            }
        }
        int full[3] = {c->lb, seq[nsub - 1], c->rb};
        rule(c, obj, full, 3);
        if (!n_req) rule(c, obj, empty, 2);
    } else {
        /* required ones in the order of `properties` or of `required`, optional ones anywhere */
        int lead = -1; /* nonempty sequences of optional pairs only */
        if (opt >= 0) {
            lead = nt(c, "members");
            rule1(c, lead, opt);
            int r3[3] = {lead, c->comma, opt};
            rule(c, lead, r3, 3);
        }
        int order2[64], n2 = 0;
        for (size_t i = 0; req && i < json_array_size(req) && n2 < 64; i++) {
            const char *r = json_string_value(json_array_get(req, i));
            for (int j = 0; j < n; j++)
                if (!strcmp(P[j].name, r)) {
                    int dup = 0;
                    for (int q = 0; q < n2; q++) dup |= order2[q] == j;
                    if (!dup) order2[n2++] = j;
                    break;
                }
        }
        for (int pass = 0; pass < 2; pass++) {
            const int *ord = pass ? order2 : req_idx;
            if (pass && (n2 != nr || !memcmp(order2, req_idx, (size_t)nr * sizeof *req_idx))) break;
            int prev = -1;
            for (int j = 0; j < nr; j++) {
                int cur = nt(c, "members");
                int pr = P[ord[j]].pair;
                if (j == 0) {
                    rule1(c, cur, pr);
                    if (lead >= 0) {
                        int r3[3] = {lead, c->comma, pr};
                        rule(c, cur, r3, 3);
                    }
                } else {
                    int r3[3] = {prev, c->comma, pr};
                    rule(c, cur, r3, 3);
                }
                if (opt >= 0) {
                    int r3[3] = {cur, c->comma, opt};
                    rule(c, cur, r3, 3);
                }
                prev = cur;
            }
            int full[3] = {c->lb, prev, c->rb};
            rule(c, obj, full, 3);
        }
    }
    free(P), jre_free(&pat_keys), jre_free(&add_keys);
    if (gr_error(c->g)[0]) return gfail(c, path);
    return obj;
}

/* ---- arrays ---- */

static int array_sym(jsc *c, json_t *s, const char *path) {
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    json_t *rest;
    if (json_is_array(items)) {
        prefix = items;
        rest = json_object_get(s, "additionalItems");
    } else {
        rest = items;
    }
    if (prefix && !json_is_array(prefix)) return fail(c, path, "'prefixItems' must be an array");
    long mn = get_count(c, s, "minItems", 0, path), mx = get_count(c, s, "maxItems", -1, path);
    if (mn == -2 || mx == -2) return -1;
    int m = prefix ? (int)json_array_size(prefix) : 0;
    if (m > 10000) return fail(c, path, "too many prefixItems");
    if (json_is_false(rest) && (mx < 0 || mx > m)) mx = m;
    if (json_is_true(json_object_get(s, "uniqueItems")) && !(mx >= 0 && mx <= 1))
        return fail(c, path, "keyword 'uniqueItems' is not supported");
    for (const char *const *k = (const char *const[]){"contains", "minContains", "maxContains", "unevaluatedItems", NULL}; *k; k++)
        if (json_object_get(s, *k) && !(json_is_true(json_object_get(s, *k)) && strcmp(*k, "contains")))
            return fail(c, path, "keyword '%s' is not supported", *k);
    int arr = nt(c, "array");
    if (arr < 0) return gfail(c, path);
    if (mx >= 0 && mx < mn) return arr;
    int empty[2] = {c->lk, c->rk};
    if (mn == 0) rule(c, arr, empty, 2);
    if (mx == 0) return arr;
    char sp[512];
    int elem = -1;
    if (!json_is_false(rest) && (mx < 0 || mx > m)) {
        subpath(sp, sizeof sp, path, prefix == items ? "additionalItems" : "items", NULL);
        elem = rest ? compile(c, rest, sp) : c->any;
        if (elem < 0) return -1;
    }
    if (m == 0) {
        int list = gr_list(c->g, elem, c->comma, mn > 1 ? (int)mn : 1, mx > (long)1e9 ? -1 : (int)mx);
        if (list < 0) return gfail(c, path);
        int r3[3] = {c->lk, list, c->rk};
        return rule(c, arr, r3, 3) ? gfail(c, path) : arr;
    }
    /* after j items: tail[j] */
    int tail_next;
    {
        int t = nt(c, "tail");
        long a = mn > m ? mn - m : 0, b = mx < 0 ? -1 : mx - m;
        if (elem >= 0 && (b < 0 || b > 0)) {
            int ce = nt(c, "celem");
            int r2[2] = {c->comma, elem};
            rule(c, ce, r2, 2);
            int rep = gr_repeat(c->g, ce, (int)a, (int)b);
            if (rep < 0) return gfail(c, path);
            rule1(c, t, rep);
        } else if (a == 0) {
            rule(c, t, NULL, 0);
        }
        tail_next = t;
    }
    for (int j = m - 1; j >= 1; j--) {
        int t = nt(c, "tail");
        if (j >= mn) rule(c, t, NULL, 0);
        if (mx < 0 || j + 1 <= mx) {
            char idx[24];
            snprintf(idx, sizeof idx, "%d", j);
            subpath(sp, sizeof sp, path, prefix == items ? "items" : "prefixItems", idx);
            int e = compile(c, json_array_get(prefix, (size_t)j), sp);
            if (e < 0) return -1;
            int r3[3] = {c->comma, e, tail_next};
            rule(c, t, r3, 3);
        }
        tail_next = t;
    }
    subpath(sp, sizeof sp, path, prefix == items ? "items" : "prefixItems", "0");
    int e0 = compile(c, json_array_get(prefix, 0), sp);
    if (e0 < 0) return -1;
    int r4[4] = {c->lk, e0, tail_next, c->rk};
    rule(c, arr, r4, 4);
    return gr_error(c->g)[0] ? gfail(c, path) : arr;
}

/* ---- schemas ---- */

/* Makes the alternatives of a oneOf mutually exclusive (m[] dereferenced, rewritten in place): per
 * type of instance, alternatives that provably cannot both match are kept; a type every
 * alternative accepts entirely is dropped (any such value matches several); alternatives that
 * only require one property each forbid the others' properties. Else an error. */
static int one_of_exact(jsc *c, json_t **m, size_t n, const char *path) {
    for (size_t i = 0; i < n; i++)
        if (!(m[i] = deref(c, m[i], path, 0))) return -1;
    static const int types[] = {T_NULL, T_BOOL, T_OBJ, T_ARR, T_STR, T_INT | T_NUM};
    int drop = 0, forbid = 0;
    for (int ti = 0; ti < 6; ti++) {
        int t = types[ti];
        size_t cnt = 0, n_triv = 0;
        for (size_t i = 0; i < n; i++)
            if (infer(c, m[i], 0) & t) cnt++, n_triv += trivial_for(m[i], t);
        if (cnt <= 1) continue;
        if (n_triv == cnt) {
            drop |= t;
            continue;
        }
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++)
            for (size_t j = i + 1; j < n && ok; j++)
                if (!disjoint_on(c, m[i], m[j], t)) {
                    ok = 0;
                    if (t == T_OBJ) {
                        /* {"required": [x]} alternatives: each forbids the others' names */
                        int all = 1;
                        for (size_t q = 0; q < n && all; q++) {
                            const json_t *r = only_required(m[q]);
                            all = r && json_array_size(r) == 1 && json_is_string(json_array_get(r, 0));
                        }
                        if (all) ok = 1, forbid = 1, i = j = n;
                    }
                    if (!ok) return fail(c, path, "oneOf: alternatives %zu and %zu may overlap (not supported)", i, j);
                }
    }
    const char **names = NULL;
    if (forbid) {
        names = calloc(n, sizeof *names);
        if (!names) return fail(c, path, "out of memory");
        for (size_t j = 0; j < n; j++) names[j] = json_string_value(json_array_get(only_required(m[j]), 0));
    }
    for (size_t i = 0; i < n; i++) {
        if (drop) {
            json_t *tj = keep(c, json_pack("{s:o}", "type", types_json(T_ALL & ~drop)));
            if (!(m[i] = merge(c, m[i], tj, path, 0))) break;
        }
        if (forbid) {
            json_t *props = json_object();
            for (size_t j = 0; j < n; j++)
                if (j != i) json_object_set_new(props, names[j], json_false());
            json_t *f = keep(c, json_pack("{s:o}", "properties", props));
            if (!(m[i] = merge(c, m[i], f, path, 0))) break;
        }
    }
    free(names);
    return c->failed ? -1 : 0;
}

static int compile_alts(jsc *c, json_t *s, const char *kw, const char *path) {
    json_t *alts = json_object_get(s, kw);
    if (!json_is_array(alts) || !json_array_size(alts)) return fail(c, path, "'%s' must be a non-empty array", kw);
    json_t *rest = keep(c, json_copy(s));
    json_object_del(rest, kw);
    int plain = !has_constraints(rest, NULL, NULL);
    size_t n = json_array_size(alts);
    json_t **m = calloc(n, sizeof *m);
    if (!m) return fail(c, path, "out of memory");
    char sp[512];
    for (size_t i = 0; i < n; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        subpath(sp, sizeof sp, path, kw, idx);
        m[i] = plain ? json_array_get(alts, i) : merge(c, rest, json_array_get(alts, i), sp, 0);
        if (!m[i]) {
            free(m);
            return -1;
        }
    }
    if (!strcmp(kw, "oneOf") && n > 1 && one_of_exact(c, m, n, path)) {
        free(m);
        return -1;
    }
    int ch = nt(c, kw);
    for (size_t i = 0; i < n && ch >= 0; i++) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        subpath(sp, sizeof sp, path, kw, idx);
        int a = compile(c, m[i], sp);
        if (a < 0) ch = -1;
        else rule1(c, ch, a);
    }
    free(m);
    return ch;
}

/* s with its `not` folded into other keywords where that is exact: not {} (nothing), not {"type"}
 * (the other types), not {"required": [x]} and not {"anyOf": [{"required": [x]}, ...]} (x
 * forbidden), not {"enum"/"const"} (the values filtered out of an enum of s). */
static json_t *rewrite_not(jsc *c, json_t *s, const char *path) {
    json_t *n = deref(c, json_object_get(s, "not"), path, 0);
    if (!n) return NULL;
    json_t *r = keep(c, json_copy(s));
    json_object_del(r, "not");
    if (json_is_false(n)) return r;
    if (is_trivial(n)) return json_false();
    if (!json_is_object(n)) {
        fail(c, path, "'not' must be a schema");
        return NULL;
    }
    const char *k;
    json_t *v;
    int only_type = 1;
    json_object_foreach(n, k, v) if (strcmp(k, "type") && is_constraint(k)) only_type = 0;
    if (only_type) {
        int t = type_bits(json_object_get(n, "type"));
        int mine = types_of(r);
        if (t < 0) {
            fail(c, path, "bad 'type' in 'not'");
            return NULL;
        }
        if ((t & T_INT) && !(t & T_NUM) && (mine & T_NUM)) {
            fail(c, path, "keyword 'not' is not supported ({\"not\": {\"type\": \"integer\"}} on numbers)");
            return NULL;
        }
        json_object_set_new(r, "type", types_json(mine & ~t));
        return r;
    }
    /* forbidden property names */
    json_t *names = json_array();
    const json_t *req = only_required(n);
    if (req && json_array_size(req) == 1) {
        json_array_append(names, json_array_get(req, 0));
    } else {
        json_t *any = json_object_get(n, "anyOf");
        int ok = json_is_array(any) && json_object_size(n) - (json_object_get(n, "type") ? 1 : 0) >= 1;
        json_object_foreach(n, k, v) if (strcmp(k, "anyOf") && is_constraint(k)) ok = 0;
        for (size_t i = 0; ok && i < json_array_size(any); i++) {
            const json_t *q = only_required(json_array_get(any, i));
            if (!q || json_array_size(q) != 1) ok = 0;
            else json_array_append(names, json_array_get(q, 0));
        }
        if (!ok) json_array_clear(names);
    }
    if (json_array_size(names)) {
        json_t *props = json_object();
        for (size_t i = 0; i < json_array_size(names); i++)
            if (json_is_string(json_array_get(names, i))) json_object_set_new(props, json_string_value(json_array_get(names, i)), json_false());
        json_decref(names);
        return merge(c, r, keep(c, json_pack("{s:o}", "properties", props)), path, 0);
    }
    json_decref(names);
    /* excluded values out of an enum */
    json_t *tmp = NULL;
    const json_t *nv = values_of(n, &tmp);
    int only_vals = nv != NULL;
    json_object_foreach(n, k, v) if (strcmp(k, "enum") && strcmp(k, "const") && is_constraint(k)) only_vals = 0;
    json_t *mine = json_object_get(r, "enum");
    if (json_object_get(r, "const")) mine = keep(c, json_pack("[O]", json_object_get(r, "const")));
    if (only_vals && json_is_array(mine)) {
        json_t *e = json_array();
        for (size_t i = 0; i < json_array_size(mine); i++) {
            int hit = 0;
            for (size_t j = 0; j < json_array_size(nv) && !hit; j++) hit = js_equal(json_array_get(mine, i), json_array_get(nv, j));
            if (!hit) json_array_append(e, json_array_get(mine, i));
        }
        json_object_del(r, "const");
        json_object_set_new(r, "enum", e);
        json_decref(tmp);
        return r;
    }
    /* excluded strings: a string lexeme spelled differently from them */
    int strs = only_vals && !json_object_get(r, "pattern") && !json_object_get(r, "format") &&
               !json_object_get(r, "minLength") && !json_object_get(r, "maxLength") && !json_object_get(r, JS_NOT_STRINGS);
    for (size_t i = 0; strs && i < json_array_size(nv); i++) {
        int vt = value_type(json_array_get(nv, i));
        if (vt != T_STR && (types_of(r) & (vt == T_INT ? T_INT | T_NUM : vt))) strs = 0;
    }
    if (strs) {
        json_t *e = json_array();
        for (size_t i = 0; i < json_array_size(nv); i++)
            if (json_is_string(json_array_get(nv, i))) json_array_append(e, json_array_get(nv, i));
        json_object_set_new(r, JS_NOT_STRINGS, e);
        json_decref(tmp);
        return r;
    }
    json_decref(tmp);
    fail(c, path, "keyword 'not' is not supported for this subschema");
    return NULL;
}

static int compile_body(jsc *c, json_t *s, const char *path) {
    if (json_is_true(s)) return c->any;
    if (json_is_false(s)) return c->never;
    if (!json_is_object(s)) return fail(c, path, "a schema must be an object or a boolean");
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
        return fail(c, path, "keyword '%s' is not supported", k);
    }
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) return fail(c, path, "'$ref' must be a string");
        json_t *t = resolve(c, json_string_value(ref), path);
        if (!t) return -1;
        if (c->draft <= 7 || !has_constraints(s, "$ref", NULL)) return compile(c, t, path);
        json_t *rest = keep(c, json_copy(s));
        json_object_del(rest, "$ref");
        json_t *mg = merge(c, t, rest, path, 0);
        return mg ? compile(c, mg, path) : -1;
    }
    if (json_object_get(s, "not")) {
        json_t *r = rewrite_not(c, s, path);
        return r ? compile(c, r, path) : -1;
    }
    if (json_object_get(s, "allOf")) {
        if (!json_is_array(json_object_get(s, "allOf"))) return fail(c, path, "'allOf' must be an array");
        json_t *mg = deref(c, s, path, 0);
        return mg ? compile(c, mg, path) : -1;
    }
    if (json_object_get(s, "anyOf")) return compile_alts(c, s, "anyOf", path);
    if (json_object_get(s, "oneOf")) return compile_alts(c, s, "oneOf", path);
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    int nullable = json_is_true(json_object_get(s, "nullable"));
    if (en || cn) {
        if (en && !json_is_array(en)) return fail(c, path, "'enum' must be an array");
        json_t *vals = cn ? json_pack("[O]", cn) : json_incref(en);
        json_t *rest = keep(c, json_copy(s));
        json_object_del(rest, "enum");
        json_object_del(rest, "const");
        if (cn && en) json_object_set(rest, "enum", en);
        json_object_del(rest, "nullable");
        int filter = has_constraints(rest, NULL, NULL);
        int ch = nt(c, "enum");
        int rc = 0;
        if (nullable) rule1(c, ch, c->t_null);
        for (size_t i = 0; i < json_array_size(vals) && !rc; i++) {
            json_t *x = json_array_get(vals, i);
            if (filter) {
                int ok = check_value(c, rest, x, path);
                if (ok < 0) rc = fail(c, path, "enum/const together with other keywords is not supported here");
                if (ok <= 0) continue;
            }
            int sym = value_sym(c, x, path);
            if (sym < 0) rc = -1;
            else rule1(c, ch, sym);
        }
        json_decref(vals);
        return rc ? -1 : ch;
    }
    json_t *tj = json_object_get(s, "type");
    int types = type_bits(tj);
    if (types < 0) return fail(c, path, "bad 'type'");
    if (nullable) types |= T_NULL;
    int ch = nt(c, "value");
    if (ch < 0) return gfail(c, path);
    if (types & T_NULL) rule1(c, ch, c->t_null);
    if (types & T_BOOL) rule1(c, ch, c->t_true), rule1(c, ch, c->t_false);
    if (types & T_STR) {
        jre_buf b = {0};
        int r = string_regex(c, s, &b, path);
        if (!r) r = regex_sym(c, &b, path);
        jre_free(&b);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & (T_INT | T_NUM)) {
        jre_buf b = {0};
        int r = number_regex(c, s, !(types & T_NUM), &b, path);
        if (!r) r = regex_sym(c, &b, path);
        jre_free(&b);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & T_OBJ) {
        int r = object_sym(c, s, path);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    if (types & T_ARR) {
        int r = array_sym(c, s, path);
        if (r < 0) return -1;
        rule1(c, ch, r);
    }
    return gr_error(c->g)[0] ? gfail(c, path) : ch;
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

static int compile(jsc *c, json_t *s, const char *path) {
    if (c->failed) return -1;
    if (++c->work > JS_MAX_WORK) return fail(c, path, "schema too large");
    if (c->depth >= JS_MAX_DEPTH) return fail(c, path, "schema nested too deeply");
    if (json_is_boolean(s)) return json_is_true(s) ? c->any : c->never;
    int i = memo_find(c, s, 1);
    if (i < 0) return fail(c, path, "out of memory");
    if (c->memo[i].state == 2) return c->memo[i].sym;
    if (c->memo[i].state == 1) {
        if (c->memo[i].fwd < 0) c->memo[i].fwd = nt(c, "ref");
        return c->memo[i].fwd < 0 ? gfail(c, path) : c->memo[i].fwd;
    }
    c->memo[i].state = 1;
    c->depth++;
    int sym = compile_body(c, s, path);
    c->depth--;
    if (sym < 0) return -1;
    /* the memo may have moved */
    int fwd = c->memo[i].fwd;
    if (fwd >= 0) {
        if (rule1(c, fwd, sym)) return gfail(c, path);
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
        gfail(&c, "");
    } else {
        r = compile(&c, root, "");
    }
    if (r >= 0 && gr_is_terminal(g, r)) { /* callers get a nonterminal */
        int w = gr_nonterminal(g, "schema");
        if (w < 0 || gr_rule(g, w, &r, 1)) r = gfail(&c, "");
        else r = w;
    }
    free(c.memo);
    free(c.hash);
    json_decref(c.keep);
    json_decref(root);
    return r;
}

gr_grammar *js_compile(const char *schema, size_t n, const js_options *o, char *err, size_t cap) {
    static char dummy[1];
    if (!err || !cap) err = dummy, cap = 1;
    gr_grammar *g = gr_new();
    if (!g) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    int s = js_add(g, schema, n, o, err, cap);
    if (s < 0 || gr_set_start(g, s) ||
        (o && o->whitespace_flexible && gr_set_skip(g, "[ \\t\\n\\r]+", strlen("[ \\t\\n\\r]+")))) {
        if (s >= 0) snprintf(err, cap, "/: %s", gr_error(g));
        gr_free(g);
        return NULL;
    }
    return g;
}
