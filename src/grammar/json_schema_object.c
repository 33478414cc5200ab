/* Objects (json_schema_compile.h).
 *
 * Objects accept their properties in any order, each named property at most once: the grammar
 * tracks which named properties were seen (one nonterminal per subset of at most JS_MAX_TRACKED
 * names: the required ones, then the optional ones in schema order). Optional names beyond those
 * come in runs between tracked ones, each run at most as long as their count, so a repeat of such a
 * name is bounded, not forbidden. Beyond JS_MAX_TRACKED required properties, the required ones
 * come in schema order with such runs between. (A duplicate key is valid JSON that parsers resolve
 * to its last value, but no serializer writes one, and allowing it lets a sampler repeat a key
 * forever.) Property names are matched in their canonical spelling; other names (additional
 * properties) in any spelling but those, any number of them. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"

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
    if (p < 0 || rule(c, p, rhs, 3)) return jsc_gfail(c, path);
    return p;
}

/* a run of free pairs (choice free_ch): 1 to any number when there are additional / pattern
 * properties (their names are not tracked), else 1 to n_untracked (repeats of a name are then
 * bounded, not forbidden); -1 if there are none */
static int free_run(jsc *c, int free_ch, int n_extra, int n_untracked) {
    if (!n_extra && !n_untracked) return -1;
    return gr_list(c->g, free_ch, c->comma, 1, n_extra ? -1 : n_untracked);
}

int jsc_object_sym(jsc *c, json_t *s, const char *path) {
    json_t *props = json_object_get(s, "properties");
    json_t *req = json_object_get(s, "required");
    json_t *add = json_object_get(s, "additionalProperties");
    json_t *pats = json_object_get(s, "patternProperties");
    if (props && !json_is_object(props)) return jsc_fail(c, path, "'properties' must be an object");
    if (req && !json_is_array(req)) return jsc_fail(c, path, "'required' must be an array");
    if (pats && !json_is_object(pats)) return jsc_fail(c, path, "'patternProperties' must be an object");
    if (pats && json_object_size(pats) == 0) pats = NULL;
    /* strict: an object that lists its properties (and no patternProperties) has no others, except
     * required names it does not list (any value); {"type": "object"} alone stays any object */
    const int strict_closed = !add && c->o.strict && props && !pats;
    if (strict_closed) add = json_false();
    for (const char *const *k = (const char *const[]){"dependencies", "dependentRequired", "dependentSchemas",
                                                      "propertyNames", "unevaluatedProperties", NULL};
         *k; k++) {
        json_t *v = json_object_get(s, *k);
        if (!v || (json_is_object(v) && !json_object_size(v)) || json_is_true(v)) continue;
        return jsc_fail(c, path, "keyword '%s' is not supported", *k);
    }
    int n = 0;
    size_t cap = (props ? json_object_size(props) : 0) + (req ? json_array_size(req) : 0);
    prop *P = calloc(cap + 1, sizeof *P);
    if (!P) return jsc_fail(c, path, "out of memory");
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(props, k, v) P[n++] = (prop){k, v, 0, -1};
    for (size_t i = 0; req && i < json_array_size(req); i++) {
        const char *r = json_string_value(json_array_get(req, i));
        if (!r) {
            free(P);
            return jsc_fail(c, path, "'required' must list strings");
        }
        int j = 0;
        while (j < n && strcmp(P[j].name, r)) j++;
        if (j == n) P[n++] = (prop){r, NULL, 0, -1}; /* value: patternProperties / additionalProperties */
        P[j].required = 1;
    }
    /* pattern schemas: equal to each other (a key matching several needs all of them) */
    json_t *pat_schema = NULL;
    json_object_foreach(pats, k, v) {
        if (pat_schema && !jsc_equal(pat_schema, v)) {
            free(P);
            return jsc_fail(c, path, "patternProperties with different schemas per pattern are not supported");
        }
        pat_schema = v;
    }
    /* one pattern of a simple form: its keys and the additional ones as exact regexes */
    jre_buf pat_keys = {0}, add_keys = {0};
    int split = -1;
    if (pats && json_object_size(pats) == 1) {
        const char **names = calloc((size_t)n + 1, sizeof *names);
        size_t *lens = calloc((size_t)n + 1, sizeof *lens);
        if (!names || !lens) rc = jsc_fail(c, path, "out of memory");
        for (int i = 0; !rc && i < n; i++) names[i] = P[i].name, lens[i] = strlen(P[i].name);
        json_object_foreach(pats, k, v) {
            if (!rc) split = jre_key_split(&pat_keys, json_is_false(add) ? NULL : &add_keys, k, strlen(k), names, lens, n);
        }
        free(names);
        free(lens);
    }
    if (!rc && split < 0 && pats && !(json_is_false(add) || jsc_is_trivial(pat_schema) || (add && jsc_equal(add, pat_schema))))
        rc = jsc_fail(c, path, "patternProperties together with additionalProperties are not supported");
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
            if (jre_pattern(&pb, k, strlen(k), 0, -1, &folded, e, sizeof e)) rc = jsc_fail(c, path, "patternProperties: %s", e);
            else if (jre_matches(pb.s, pb.n, nb.s, nb.n) != 0) hit = 1;
            jre_free(&pb);
        }
        jre_free(&nb);
        if (!rc && hit) {
            if (!P[i].schema) P[i].schema = pat_schema;
            else if (split >= 0) P[i].schema = jsc_all_of2(c, P[i].schema, pat_schema);
            else rc = jsc_fail(c, path, "patternProperties matching the listed property '%.60s' are not supported", P[i].name);
        }
        if (!P[i].schema) P[i].schema = add && !strict_closed ? add : json_true();
    }
    /* counts */
    long minp = jsc_get_count(c, s, "minProperties", 0, path), maxp = jsc_get_count(c, s, "maxProperties", -1, path);
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
            rc = jsc_fail(c, path, "keyword '%s' is not supported here", minp > n_req ? "minProperties" : "maxProperties");
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
        return rule(c, obj, empty, 2) ? jsc_gfail(c, path) : obj;
    }
    /* pairs */
    char sp[512];
    for (int i = 0; i < n && !rc; i++) {
        jre_buf kb = {0};
        json_t *ns = json_string(P[i].name);
        if (!ns || jre_dump(&kb, ns)) rc = jsc_fail(c, path, "property name is not valid UTF-8");
        json_decref(ns);
        int key = rc ? -1 : jsc_literal_sym(c, &kb, path);
        jre_free(&kb);
        subpath(sp, sizeof sp, path, "properties", P[i].name);
        int val = key < 0 ? -1 : jsc_compile(c, P[i].schema, sp);
        P[i].pair = pair_sym(c, key, val, sp);
        if (P[i].pair < 0) rc = -1;
    }
    /* free pairs: additional / pattern properties (any number of them), then the optional names
     * the grammar does not track (below) */
    int free_ch = -1, n_extra = 0, n_untracked = 0;
    if (!rc) {
        free_ch = nt(c, "free");
        if ((add && json_is_false(add)) || split == 1) {
        } else if (split == 0) {
            int key = jsc_regex_sym(c, &add_keys, path);
            subpath(sp, sizeof sp, path, "additionalProperties", NULL);
            int val = key < 0 ? -1 : add ? jsc_compile(c, add, sp) : c->any;
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, free_ch, p), n_extra++;
        } else {
            int key;
            if (n) {
                const char **names = malloc((size_t)n * sizeof *names);
                size_t *lens = malloc((size_t)n * sizeof *lens);
                jre_buf kb = {0};
                if (!names || !lens) rc = jsc_fail(c, path, "out of memory");
                for (int i = 0; !rc && i < n; i++) names[i] = P[i].name, lens[i] = strlen(P[i].name);
                if (!rc && jre_string_except(&kb, names, lens, n))
                    rc = jsc_fail(c, path, "property names with control characters or outside the BMP are not supported with additionalProperties");
                key = rc ? -1 : jsc_regex_sym(c, &kb, path);
                jre_free(&kb);
                free(names);
                free(lens);
            } else {
                key = c->t_str;
            }
            subpath(sp, sizeof sp, path, "additionalProperties", NULL);
            int val = key < 0 ? -1 : add ? jsc_compile(c, add, sp) : c->any;
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, free_ch, p), n_extra++;
        }
        json_object_foreach(pats, k, v) {
            if (rc) break;
            jre_buf pb = {0};
            char e[200];
            int folded;
            if (split >= 0) jre_put(&pb, pat_keys.s, pat_keys.n);
            else if (jre_pattern(&pb, k, strlen(k), 0, -1, &folded, e, sizeof e)) rc = jsc_fail(c, path, "patternProperties: %s", e);
            int key = rc ? -1 : jsc_regex_sym(c, &pb, path);
            jre_free(&pb);
            subpath(sp, sizeof sp, path, "patternProperties", k);
            int val = key < 0 ? -1 : jsc_compile(c, v, sp);
            int p = pair_sym(c, key, val, sp);
            if (p < 0) rc = -1;
            else rule1(c, free_ch, p), n_extra++;
        }
    }
    if (rc) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return -1;
    }
    if (n_req > 64) {
        free(P), jre_free(&pat_keys), jre_free(&add_keys);
        return jsc_fail(c, path, "more than 64 required properties are not supported");
    }
    if (n_req <= JS_MAX_TRACKED) {
        /* tracked names: the required ones, then optional ones in schema order; each appears at
         * most once. rest[m] follows the members so far when m (a bit per tracked name) are
         * present: "," a tracked pair not in m, "," a run of free pairs (then rest2[m]: no second
         * run in a row), or the end when m has every required name. */
        int tr[JS_MAX_TRACKED], ntr = 0;
        unsigned reqmask = 0;
        for (int i = 0; i < n; i++)
            if (P[i].required) reqmask |= 1u << ntr, tr[ntr++] = i;
        for (int i = 0; i < n; i++) {
            if (P[i].required) continue;
            if (ntr < JS_MAX_TRACKED) tr[ntr++] = i;
            else rule1(c, free_ch, P[i].pair), n_untracked++;
        }
        int run = free_run(c, free_ch, n_extra, n_untracked);
        int nsub = 1 << ntr;
        int *rest = malloc(2 * (size_t)nsub * sizeof *rest), *rest2 = rest ? rest + nsub : NULL;
        if (!rest) {
            free(P), jre_free(&pat_keys), jre_free(&add_keys);
            return jsc_fail(c, path, "out of memory");
        }
        for (int m = 0; m < nsub; m++) rest[m] = nt(c, "members"), rest2[m] = run >= 0 ? nt(c, "members") : rest[m];
        for (int m = 0; m < nsub; m++)
            for (int h = 0; h < (run >= 0 ? 2 : 1); h++) {
                int lhs = h ? rest2[m] : rest[m];
                if (((unsigned)m & reqmask) == reqmask) rule(c, lhs, NULL, 0);
                for (int j = 0; j < ntr; j++) {
                    if (m >> j & 1) continue;
                    int r3[3] = {c->comma, P[tr[j]].pair, rest[m | 1 << j]};
                    rule(c, lhs, r3, 3);
                }
                if (!h && run >= 0) {
                    int r3[3] = {c->comma, run, rest2[m]};
                    rule(c, lhs, r3, 3);
                }
            }
        if (!reqmask) rule(c, obj, empty, 2);
        for (int j = 0; j < ntr; j++) {
            int r4[4] = {c->lb, P[tr[j]].pair, rest[1 << j], c->rb};
            rule(c, obj, r4, 4);
        }
        if (run >= 0) {
            int r4[4] = {c->lb, run, rest2[0], c->rb};
            rule(c, obj, r4, 4);
        }
        free(rest);
    } else {
        /* required ones in the order of `properties` or of `required`, runs of the others between */
        int req_idx[64];
        int nr = 0;
        for (int i = 0; i < n; i++) {
            if (P[i].required && nr < 64) req_idx[nr++] = i;
            if (!P[i].required) rule1(c, free_ch, P[i].pair), n_untracked++;
        }
        int run = free_run(c, free_ch, n_extra, n_untracked);
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
                /* base: the members up to required j; cur: then maybe a run */
                int base = nt(c, "members"), cur = run >= 0 ? nt(c, "members") : base;
                int pr = P[ord[j]].pair;
                if (j == 0) {
                    rule1(c, base, pr);
                    if (run >= 0) {
                        int r3[3] = {run, c->comma, pr};
                        rule(c, base, r3, 3);
                    }
                } else {
                    int r3[3] = {prev, c->comma, pr};
                    rule(c, base, r3, 3);
                }
                if (run >= 0) {
                    int r3[3] = {base, c->comma, run};
                    rule1(c, cur, base);
                    rule(c, cur, r3, 3);
                }
                prev = cur;
            }
            int full[3] = {c->lb, prev, c->rb};
            rule(c, obj, full, 3);
        }
    }
    free(P), jre_free(&pat_keys), jre_free(&add_keys);
    if (gr_error(c->g)[0]) return jsc_gfail(c, path);
    return obj;
}
