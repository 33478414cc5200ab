/* Internal to the JSON Schema compiler (json_schema.c and the json_schema_*.c files it is split
 * into): the compiler context and the functions the files share. */
#ifndef PG_GRAMMAR_JSON_SCHEMA_COMPILE_H
#define PG_GRAMMAR_JSON_SCHEMA_COMPILE_H

#include <stdio.h>

#include <jansson.h>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/json_schema_impl.h"

#define JS_MAX_DEPTH 200
#define JS_MAX_WORK 200000
#define JS_MAX_TRACKED 8 /* property names an object tracks (json_schema_object.c) */
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

static inline int nt(jsc *c, const char *name) {
    int n = gr_nonterminal(c->g, name);
    return n;
}
static inline int rule(jsc *c, int lhs, const int *rhs, int n) { return gr_rule(c->g, lhs, rhs, n); }
static inline int rule1(jsc *c, int lhs, int a) { return gr_rule(c->g, lhs, &a, 1); }
static inline void subpath(char *out, size_t cap, const char *path, const char *a, const char *b) {
    if (b) snprintf(out, cap, "%s/%s/%s", path, a, b);
    else snprintf(out, cap, "%s/%s", path, a);
}

/* json_schema.c: errors, keywords, $ref, grammar symbols, compiling a subschema */
int jsc_compile(jsc *c, json_t *s, const char *path);
int jsc_fail(jsc *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int jsc_gfail(jsc *c, const char *path);
int jsc_has_constraints(const json_t *s, const char *skip, const char *skip2);
int jsc_irrelevant_for(const char *k, int t);
int jsc_is_constraint(const char *k);
int jsc_is_trivial(const json_t *s);
int jsc_literal_sym(jsc *c, const jre_buf *b, const char *path);
int jsc_regex_sym(jsc *c, const jre_buf *b, const char *path);
json_t *jsc_resolve(jsc *c, const char *ref, const char *path);

/* json_schema_merge.c: allOf merging, $ref beside other keywords, `not` rewriting */
json_t *jsc_all_of2(jsc *c, json_t *a, json_t *b);
json_t *jsc_deref(jsc *c, json_t *s, const char *path, int depth);
int jsc_equal(const json_t *a, const json_t *b);
json_t *jsc_keep(jsc *c, json_t *v);
json_t *jsc_merge(jsc *c, json_t *a, json_t *b, const char *path, int depth);
void jsc_norm_bounds(json_t *s);
json_t *jsc_rewrite_not(jsc *c, json_t *s, const char *path);
json_t *jsc_types_json(int m);
int jsc_types_of(const json_t *s);

/* json_schema_oneof.c: type inference and disjointness (oneOf) */
int jsc_one_of_exact(jsc *c, json_t **m, size_t n, const char *path);
const json_t *jsc_only_required(const json_t *s);
int jsc_type_bits(const json_t *t);
int jsc_value_type(const json_t *v);
const json_t *jsc_values_of(const json_t *s, json_t **tmp);

/* json_schema_scalar.c: enum/const values, strings, numbers */
int jsc_check_value(jsc *c, const json_t *s, const json_t *v, const char *path);
long jsc_get_count(jsc *c, const json_t *s, const char *k, long dflt, const char *path);
int jsc_number_regex(jsc *c, const json_t *s0, int integer, jre_buf *b, const char *path);
int jsc_string_regex(jsc *c, const json_t *s, jre_buf *b, const char *path);
int jsc_value_sym(jsc *c, const json_t *v, const char *path);

/* json_schema_object.c: objects */
int jsc_object_sym(jsc *c, json_t *s, const char *path);

/* json_schema_array.c: arrays */
int jsc_array_sym(jsc *c, json_t *s, const char *path);

#endif
