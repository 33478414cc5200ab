/* Type inference and disjointness of subschemas, for oneOf (json_schema_compile.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"

/* ---- type inference (for oneOf disjointness) ---- */

int jsc_value_type(const json_t *v) {
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

int jsc_type_bits(const json_t *t) { /* the "type" keyword; -1 bad */
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
            int b = jsc_type_bits(json_array_get(t, i));
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
    int m = jsc_type_bits(json_object_get(s, "type"));
    if (m < 0) m = T_ALL;
    const json_t *ref = json_object_get(s, "$ref");
    if (json_is_string(ref)) {
        int save = c->failed;
        json_t *t = jsc_resolve(c, json_string_value(ref), "");
        c->failed = save;
        if (t) {
            int r = infer(c, t, depth + 1);
            m = c->draft <= 7 ? r : m & r;
        }
    }
    const json_t *e = json_object_get(s, "enum");
    if (json_is_array(e)) {
        int v = 0;
        for (size_t i = 0; i < json_array_size(e); i++) v |= jsc_value_type(json_array_get(e, i));
        m &= v;
    }
    if (json_object_get(s, "const")) m &= jsc_value_type(json_object_get(s, "const"));
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
        const json_t *t = jsc_resolve(c, json_string_value(ref), "");
        c->failed = save;
        if (t) s = t;
    }
    const json_t *props = json_object_get(s, "properties");
    const json_t *ps = props ? json_object_get(props, p) : NULL;
    if (!json_is_object(ps)) return NULL;
    if (json_is_string(json_object_get(ps, "$ref"))) {
        int save = c->failed;
        const json_t *t = jsc_resolve(c, json_string_value(json_object_get(ps, "$ref")), "");
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
    int m = jsc_type_bits(json_object_get(s, "type"));
    if (m < 0 || (m & t) != t) return 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        if (!strcmp(k, "type") || jsc_irrelevant_for(k, t)) continue;
        return 0;
    }
    return 1;
}

const json_t *jsc_values_of(const json_t *s, json_t **tmp) {
    if (!json_is_object(s)) return NULL;
    if (json_object_get(s, "const")) return *tmp = json_pack("[O]", json_object_get(s, "const"));
    const json_t *e = json_object_get(s, "enum");
    return json_is_array(e) ? e : NULL;
}

static int values_disjoint(const json_t *va, const json_t *vb) {
    for (size_t i = 0; i < json_array_size(va); i++)
        for (size_t j = 0; j < json_array_size(vb); j++)
            if (jsc_equal(json_array_get(va, i), json_array_get(vb, j))) return 0;
    return 1;
}

/* no value of type bit t satisfies both a and b (both dereferenced) */
static int disjoint_on(jsc *c, const json_t *a, const json_t *b, int t) {
    if (!(infer(c, a, 0) & infer(c, b, 0) & t)) return 1;
    if (!json_is_object(a) || !json_is_object(b)) return 0;
    json_t *t1 = NULL, *t2 = NULL;
    const json_t *ea = jsc_values_of(a, &t1), *eb = jsc_values_of(b, &t2);
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
const json_t *jsc_only_required(const json_t *s) {
    if (!json_is_object(s)) return NULL;
    const json_t *r = json_object_get(s, "required");
    if (!json_is_array(r)) return NULL;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s, k, v) if (strcmp(k, "required") && strcmp(k, "type") && jsc_is_constraint(k)) return NULL;
    return r;
}

/* ---- oneOf ---- */

/* Makes the alternatives of a oneOf mutually exclusive (m[] dereferenced, rewritten in place): per
 * type of instance, alternatives that provably cannot both match are kept; a type every
 * alternative accepts entirely is dropped (any such value matches several); alternatives that
 * only require one property each forbid the others' properties. Else an error. */
int jsc_one_of_exact(jsc *c, json_t **m, size_t n, const char *path) {
    for (size_t i = 0; i < n; i++)
        if (!(m[i] = jsc_deref(c, m[i], path, 0))) return -1;
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
                            const json_t *r = jsc_only_required(m[q]);
                            all = r && json_array_size(r) == 1 && json_is_string(json_array_get(r, 0));
                        }
                        if (all) ok = 1, forbid = 1, i = j = n;
                    }
                    if (!ok) return jsc_fail(c, path, "oneOf: alternatives %zu and %zu may overlap (not supported)", i, j);
                }
    }
    const char **names = NULL;
    if (forbid) {
        names = calloc(n, sizeof *names);
        if (!names) return jsc_fail(c, path, "out of memory");
        for (size_t j = 0; j < n; j++) names[j] = json_string_value(json_array_get(jsc_only_required(m[j]), 0));
    }
    for (size_t i = 0; i < n; i++) {
        if (drop) {
            json_t *tj = jsc_keep(c, json_pack("{s:o}", "type", jsc_types_json(T_ALL & ~drop)));
            if (!(m[i] = jsc_merge(c, m[i], tj, path, 0))) break;
        }
        if (forbid) {
            json_t *props = json_object();
            for (size_t j = 0; j < n; j++)
                if (j != i) json_object_set_new(props, names[j], json_false());
            json_t *f = jsc_keep(c, json_pack("{s:o}", "properties", props));
            if (!(m[i] = jsc_merge(c, m[i], f, path, 0))) break;
        }
    }
    free(names);
    return c->failed ? -1 : 0;
}
