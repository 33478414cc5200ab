/* allOf merged into one schema (json_schema_compile.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"

/* ---- JSON helpers ---- */

int jsc_equal(const json_t *a, const json_t *b) {
    if (!a || !b) return a == b;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b)) return json_integer_value(a) == json_integer_value(b);
        return json_number_value(a) == json_number_value(b);
    }
    if (json_typeof(a) != json_typeof(b)) return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jsc_equal(json_array_get(a, i), json_array_get(b, i))) return 0;
        return 1;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !jsc_equal(v, w)) return 0;
        }
        return 1;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

json_t *jsc_keep(jsc *c, json_t *v) { /* steals v */
    if (!v) return NULL;
    json_array_append_new(c->keep, v);
    return v;
}

json_t *jsc_all_of2(jsc *c, json_t *a, json_t *b) {
    if (!a || jsc_is_trivial(a)) return b;
    if (!b || jsc_is_trivial(b)) return a;
    if (a == b) return a;
    return jsc_keep(c, json_pack("{s:[O,O]}", "allOf", a, b));
}

/* ---- merging (allOf) ---- */


/* s without a top-level $ref (merged into its siblings in 2019-09+; siblings dropped before) */
json_t *jsc_deref(jsc *c, json_t *s, const char *path, int depth) {
    if (depth > 32) {
        jsc_fail(c, path, "$ref/allOf nesting too deep to merge");
        return NULL;
    }
    if (!json_is_object(s)) return s;
    json_t *ref = json_object_get(s, "$ref");
    if (json_is_string(ref)) {
        json_t *t = jsc_resolve(c, json_string_value(ref), path);
        if (!t) return NULL;
        if (c->draft <= 7 || !jsc_has_constraints(s, "$ref", NULL)) return jsc_deref(c, t, path, depth + 1);
        json_t *rest = jsc_keep(c, json_copy(s));
        json_object_del(rest, "$ref");
        return jsc_merge(c, t, rest, path, depth + 1);
    }
    json_t *all = json_object_get(s, "allOf");
    if (json_is_array(all)) {
        json_t *r = jsc_keep(c, json_copy(s));
        json_object_del(r, "allOf");
        for (size_t i = 0; r && i < json_array_size(all); i++) r = jsc_merge(c, r, json_array_get(all, i), path, depth + 1);
        return r;
    }
    return s;
}

int jsc_types_of(const json_t *s) {
    int m = jsc_type_bits(json_object_get(s, "type"));
    return m < 0 ? T_ALL : m;
}

json_t *jsc_types_json(int m) {
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
void jsc_norm_bounds(json_t *s) {
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

json_t *jsc_merge(jsc *c, json_t *a, json_t *b, const char *path, int depth) {
    if (c->failed || ++c->work > JS_MAX_WORK) {
        if (!c->failed) jsc_fail(c, path, "schema too large (merging)");
        return NULL;
    }
    a = jsc_deref(c, a, path, depth + 1);
    if (!a) return NULL;
    b = jsc_deref(c, b, path, depth + 1);
    if (!b) return NULL;
    if (json_is_true(b) || json_is_false(a)) return a;
    if (json_is_true(a) || json_is_false(b)) return b;
    if (!json_is_object(a) || !json_is_object(b)) {
        jsc_fail(c, path, "allOf: a schema must be an object or a boolean");
        return NULL;
    }
    json_t *r = jsc_keep(c, json_copy(a));
    json_t *bb = jsc_keep(c, json_copy(b));
    jsc_norm_bounds(r);
    jsc_norm_bounds(bb);
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
        if (!jsc_is_constraint(k) || jsc_equal(va, vb)) continue;
        if (!strcmp(k, "type")) {
            json_object_set_new(r, k, jsc_types_json(jsc_types_of(r) & jsc_types_of(bb)));
        } else if (!strcmp(k, "enum")) {
            json_t *e = json_array();
            for (size_t i = 0; json_is_array(va) && i < json_array_size(va); i++)
                for (size_t j = 0; json_is_array(vb) && j < json_array_size(vb); j++)
                    if (jsc_equal(json_array_get(va, i), json_array_get(vb, j))) {
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
                jsc_fail(c, path, "allOf: cannot merge '%s'", k);
                return NULL;
            }
            int want_max = !strncmp(k, "min", 3) || !strcmp(k, "exclusiveMinimum");
            double x = json_number_value(va), y = json_number_value(vb);
            if (want_max ? y > x : y < x) json_object_set(r, k, vb);
        } else if (!strcmp(k, "properties")) {
            json_t *u = json_copy(va);
            const char *pk;
            json_t *pv;
            json_object_foreach(vb, pk, pv) json_object_set(u, pk, jsc_all_of2(c, json_object_get(va, pk), pv));
            json_object_set_new(r, k, u);
        } else if (!strcmp(k, "additionalProperties") || !strcmp(k, "items") || !strcmp(k, "additionalItems")) {
            if (json_is_array(va) || json_is_array(vb)) {
                jsc_fail(c, path, "allOf: cannot merge two different array-form '%s'", k);
                return NULL;
            }
            json_object_set(r, k, jsc_all_of2(c, va, vb));
        } else if (!strcmp(k, "prefixItems")) {
            if (!json_is_array(va) || !json_is_array(vb) || json_array_size(va) != json_array_size(vb)) {
                jsc_fail(c, path, "allOf: cannot merge 'prefixItems' of different lengths");
                return NULL;
            }
            json_t *u = json_array();
            for (size_t i = 0; i < json_array_size(va); i++)
                json_array_append(u, jsc_all_of2(c, json_array_get(va, i), json_array_get(vb, i)));
            json_object_set_new(r, k, u);
        } else if (!strcmp(k, "anyOf") || !strcmp(k, "oneOf")) {
            if (!json_is_array(va) || !json_is_array(vb) || json_array_size(va) * json_array_size(vb) > JS_MAX_PRODUCT) {
                jsc_fail(c, path, "allOf: too many combinations of '%s'", k);
                return NULL;
            }
            json_t *u = json_array();
            for (size_t i = 0; i < json_array_size(va); i++)
                for (size_t j = 0; j < json_array_size(vb); j++)
                    json_array_append(u, jsc_all_of2(c, json_array_get(va, i), json_array_get(vb, j)));
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
                    jsc_fail(c, path, "allOf: cannot merge two different formats");
                    return NULL;
                }
                json_object_set(r, k, vb);
            }
        } else {
            jsc_fail(c, path, "allOf: cannot merge two different '%s'", k);
            return NULL;
        }
    }
    /* properties of one side meet the other's additionalProperties */
    if ((pa || pb) && (json_object_get(a, "patternProperties") || json_object_get(b, "patternProperties")) &&
        !jsc_equal(json_object_get(a, "patternProperties"), json_object_get(b, "patternProperties"))) {
        int a_open = !aa || json_is_true(aa), b_open = !ab || json_is_true(ab);
        if (!(a_open && b_open && !pa) && !(a_open && b_open && !pb)) {
            jsc_fail(c, path, "allOf: cannot merge patternProperties with properties of another branch");
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
            if (in_a && !in_b && ab) json_object_set(u, pk, jsc_all_of2(c, pv, ab));
            if (in_b && !in_a && aa) json_object_set(u, pk, jsc_all_of2(c, pv, aa));
        }
        json_object_set_new(r, "properties", u);
    }
    return c->failed ? NULL : r;
}

/* s with its `not` folded into other keywords where that is exact: not {} (nothing), not {"type"}
 * (the other types), not {"required": [x]} and not {"anyOf": [{"required": [x]}, ...]} (x
 * forbidden), not {"enum"/"const"} (the values filtered out of an enum of s). */
json_t *jsc_rewrite_not(jsc *c, json_t *s, const char *path) {
    json_t *n = jsc_deref(c, json_object_get(s, "not"), path, 0);
    if (!n) return NULL;
    json_t *r = jsc_keep(c, json_copy(s));
    json_object_del(r, "not");
    if (json_is_false(n)) return r;
    if (jsc_is_trivial(n)) return json_false();
    if (!json_is_object(n)) {
        jsc_fail(c, path, "'not' must be a schema");
        return NULL;
    }
    const char *k;
    json_t *v;
    int only_type = 1;
    json_object_foreach(n, k, v) if (strcmp(k, "type") && jsc_is_constraint(k)) only_type = 0;
    if (only_type) {
        int t = jsc_type_bits(json_object_get(n, "type"));
        int mine = jsc_types_of(r);
        if (t < 0) {
            jsc_fail(c, path, "bad 'type' in 'not'");
            return NULL;
        }
        if ((t & T_INT) && !(t & T_NUM) && (mine & T_NUM)) {
            jsc_fail(c, path, "keyword 'not' is not supported ({\"not\": {\"type\": \"integer\"}} on numbers)");
            return NULL;
        }
        json_object_set_new(r, "type", jsc_types_json(mine & ~t));
        return r;
    }
    /* forbidden property names */
    json_t *names = json_array();
    const json_t *req = jsc_only_required(n);
    if (req && json_array_size(req) == 1) {
        json_array_append(names, json_array_get(req, 0));
    } else {
        json_t *any = json_object_get(n, "anyOf");
        int ok = json_is_array(any) && json_object_size(n) - (json_object_get(n, "type") ? 1 : 0) >= 1;
        json_object_foreach(n, k, v) if (strcmp(k, "anyOf") && jsc_is_constraint(k)) ok = 0;
        for (size_t i = 0; ok && i < json_array_size(any); i++) {
            const json_t *q = jsc_only_required(json_array_get(any, i));
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
        return jsc_merge(c, r, jsc_keep(c, json_pack("{s:o}", "properties", props)), path, 0);
    }
    json_decref(names);
    /* excluded values out of an enum */
    json_t *tmp = NULL;
    const json_t *nv = jsc_values_of(n, &tmp);
    int only_vals = nv != NULL;
    json_object_foreach(n, k, v) if (strcmp(k, "enum") && strcmp(k, "const") && jsc_is_constraint(k)) only_vals = 0;
    json_t *mine = json_object_get(r, "enum");
    if (json_object_get(r, "const")) mine = jsc_keep(c, json_pack("[O]", json_object_get(r, "const")));
    if (only_vals && json_is_array(mine)) {
        json_t *e = json_array();
        for (size_t i = 0; i < json_array_size(mine); i++) {
            int hit = 0;
            for (size_t j = 0; j < json_array_size(nv) && !hit; j++) hit = jsc_equal(json_array_get(mine, i), json_array_get(nv, j));
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
        int vt = jsc_value_type(json_array_get(nv, i));
        if (vt != T_STR && (jsc_types_of(r) & (vt == T_INT ? T_INT | T_NUM : vt))) strs = 0;
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
    jsc_fail(c, path, "keyword 'not' is not supported for this subschema");
    return NULL;
}
