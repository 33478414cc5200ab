/* Arrays (json_schema_compile.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"

int jsc_array_sym(jsc *c, json_t *s, const char *path) {
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    json_t *rest;
    if (json_is_array(items)) {
        prefix = items;
        rest = json_object_get(s, "additionalItems");
    } else {
        rest = items;
    }
    if (prefix && !json_is_array(prefix)) return jsc_fail(c, path, "'prefixItems' must be an array");
    long mn = jsc_get_count(c, s, "minItems", 0, path), mx = jsc_get_count(c, s, "maxItems", -1, path);
    if (mn == -2 || mx == -2) return -1;
    int m = prefix ? (int)json_array_size(prefix) : 0;
    if (m > 10000) return jsc_fail(c, path, "too many prefixItems");
    if (json_is_false(rest) && (mx < 0 || mx > m)) mx = m;
    if (json_is_true(json_object_get(s, "uniqueItems")) && !(mx >= 0 && mx <= 1))
        return jsc_fail(c, path, "keyword 'uniqueItems' is not supported");
    for (const char *const *k = (const char *const[]){"contains", "minContains", "maxContains", "unevaluatedItems", NULL}; *k; k++)
        if (json_object_get(s, *k) && !(json_is_true(json_object_get(s, *k)) && strcmp(*k, "contains")))
            return jsc_fail(c, path, "keyword '%s' is not supported", *k);
    int arr = nt(c, "array");
    if (arr < 0) return jsc_gfail(c, path);
    if (mx >= 0 && mx < mn) return arr;
    int empty[2] = {c->lk, c->rk};
    if (mn == 0) rule(c, arr, empty, 2);
    if (mx == 0) return arr;
    char sp[512];
    int elem = -1;
    if (!json_is_false(rest) && (mx < 0 || mx > m)) {
        subpath(sp, sizeof sp, path, prefix == items ? "additionalItems" : "items", NULL);
        elem = rest ? jsc_compile(c, rest, sp) : c->any;
        if (elem < 0) return -1;
    }
    if (m == 0) {
        int list = gr_list(c->g, elem, c->comma, mn > 1 ? (int)mn : 1, mx > (long)1e9 ? -1 : (int)mx);
        if (list < 0) return jsc_gfail(c, path);
        int r3[3] = {c->lk, list, c->rk};
        return rule(c, arr, r3, 3) ? jsc_gfail(c, path) : arr;
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
            if (rep < 0) return jsc_gfail(c, path);
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
            int e = jsc_compile(c, json_array_get(prefix, (size_t)j), sp);
            if (e < 0) return -1;
            int r3[3] = {c->comma, e, tail_next};
            rule(c, t, r3, 3);
        }
        tail_next = t;
    }
    subpath(sp, sizeof sp, path, prefix == items ? "items" : "prefixItems", "0");
    int e0 = jsc_compile(c, json_array_get(prefix, 0), sp);
    if (e0 < 0) return -1;
    int r4[4] = {c->lk, e0, tail_next, c->rk};
    rule(c, arr, r4, 4);
    return gr_error(c->g)[0] ? jsc_gfail(c, path) : arr;
}
