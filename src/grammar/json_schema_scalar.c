/* enum/const values, strings and numbers as lexemes (json_schema_compile.h). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "grammar/json_schema_compile.h"

/* a grammar for one JSON value (enum/const) */
int jsc_value_sym(jsc *c, const json_t *v, const char *path) {
    jre_buf b = {0};
    int r;
    if (json_is_number(v)) {
        jre_number_eq(&b, v);
        r = jsc_regex_sym(c, &b, path);
    } else if (json_is_object(v) || json_is_array(v)) {
        int obj = json_is_object(v);
        int n = nt(c, "const");
        int rhs[4 * 64 + 2];
        size_t cnt = obj ? json_object_size(v) : json_array_size(v);
        if (cnt > 64) {
            /* long compounds: one lexeme (compact only) */
            if (c->o.whitespace_flexible) {
                jre_free(&b);
                return jsc_fail(c, path, "enum/const value too large");
            }
            if (jre_dump(&b, v)) r = jsc_fail(c, path, "enum/const: invalid UTF-8");
            else r = jsc_literal_sym(c, &b, path);
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
                rhs[k++] = bad ? jsc_fail(c, path, "enum/const: bad key") : jsc_literal_sym(c, &kb, path);
                jre_free(&kb);
                rhs[k++] = c->colon;
                rhs[k++] = jsc_value_sym(c, x, path);
            }
        } else {
            json_array_foreach((json_t *)v, i, x) {
                if (i) rhs[k++] = c->comma;
                rhs[k++] = jsc_value_sym(c, x, path);
            }
        }
        rhs[k++] = obj ? c->rb : c->rk;
        for (int j = 0; j < k; j++)
            if (rhs[j] < 0) return -1;
        r = rule(c, n, rhs, k) ? jsc_gfail(c, path) : n;
    } else {
        if (jre_dump(&b, v)) r = jsc_fail(c, path, "enum/const: invalid UTF-8");
        else r = jsc_literal_sym(c, &b, path);
    }
    jre_free(&b);
    return r;
}

/* ---- strings and numbers ---- */

long jsc_get_count(jsc *c, const json_t *s, const char *k, long dflt, const char *path) {
    json_t *v = json_object_get(s, k);
    if (!v) return dflt;
    double d = json_number_value(v);
    if (!json_is_number(v) || d < 0 || d != floor(d)) return jsc_fail(c, path, "'%s' must be a non-negative integer", k), -2;
    return d > 1e9 ? 1000000000L : (long)d;
}

int jsc_string_regex(jsc *c, const json_t *s, jre_buf *b, const char *path) {
    long mn = jsc_get_count(c, s, "minLength", 0, path), mx = jsc_get_count(c, s, "maxLength", -1, path);
    if (mn == -2 || mx == -2) return -1;
    const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    int fr = 0;
    jre_buf fb = {0};
    if (fmt && json_is_string(fmt)) {
        fr = jre_format(&fb, json_string_value(fmt));
        if (fr < 0) {
            jre_free(&fb);
            return jsc_fail(c, path, "format '%.60s' is not supported", json_string_value(fmt));
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
        if (pat || fr || mn > 0 || mx >= 0) return jsc_fail(c, path, "'not' with other string keywords is not supported");
        size_t k = json_array_size(nots);
        const char **names = calloc(k, sizeof *names);
        size_t *lens = calloc(k, sizeof *lens);
        int rc = names && lens ? 0 : jsc_fail(c, path, "out of memory");
        for (size_t i = 0; !rc && i < k; i++)
            names[i] = json_string_value(json_array_get(nots, i)), lens[i] = json_string_length(json_array_get(nots, i));
        if (!rc && jre_string_except(b, names, lens, (int)k))
            rc = jsc_fail(c, path, "'not' of strings with control characters or outside the BMP is not supported");
        free(names);
        free(lens);
        return rc;
    }
    if (fr > 0) {
        if (pat || mn > 0 || mx >= 0) {
            jre_free(&fb);
            return jsc_fail(c, path, "format '%.60s' together with pattern/minLength/maxLength is not supported",
                        json_string_value(fmt));
        }
        jre_put(b, fb.s, fb.n);
        jre_free(&fb);
        return 0;
    }
    jre_free(&fb);
    if (mx > JS_MAX_COUNTED || mn > JS_MAX_COUNTED)
        return jsc_fail(c, path, "minLength/maxLength above %d are not supported (the lexer counts by copies)", JS_MAX_COUNTED);
    if (pat) {
        if (!json_is_string(pat)) return jsc_fail(c, path, "'pattern' must be a string");
        char e[200];
        int folded;
        if (jre_pattern(b, json_string_value(pat), json_string_length(pat), mn, mx, &folded, e, sizeof e))
            return jsc_fail(c, path, "pattern: %s", e);
        if (!folded) return jsc_fail(c, path, "pattern together with minLength/maxLength is not supported");
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

int jsc_number_regex(jsc *c, const json_t *s0, int integer, jre_buf *b, const char *path) {
    json_t *s = json_copy((json_t *)s0);
    jsc_norm_bounds(s);
    const json_t *mo = json_object_get(s, "multipleOf");
    int rc = 0;
    /* "7.0" is an integer to JSON Schema (draft 6+): written only when asked for, or where the
     * schema said number (a number that is a multiple of 1) */
    int frac = (c->o.integer_fraction || !integer) && c->draft >= 6;
    if (mo) {
        double d = json_number_value(mo);
        if (!json_is_number(mo) || d <= 0) rc = jsc_fail(c, path, "'multipleOf' must be a positive number");
        else if (d == 1) integer = 1;
        else if (!(integer && d == floor(d) && d == 1)) rc = jsc_fail(c, path, "keyword 'multipleOf' is not supported");
    }
    char lo[420], hi[420];
    const char *plo = NULL, *phi = NULL;
    int lo_x = 0, hi_x = 0;
    const char *names[2][2] = {{"minimum", "exclusiveMinimum"}, {"maximum", "exclusiveMaximum"}};
    for (int side = 0; side < 2 && !rc; side++) {
        const json_t *in = json_object_get(s, names[side][0]), *ex = json_object_get(s, names[side][1]);
        const json_t *pick = NULL;
        int excl = 0;
        if (in && !json_is_number(in)) rc = jsc_fail(c, path, "'%s' must be a number", names[side][0]);
        if (ex && !json_is_number(ex)) rc = jsc_fail(c, path, "'%s' must be a number", names[side][1]);
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
    if (jre_number(b, plo, lo_x, phi, hi_x, integer, frac, e, sizeof e)) return jsc_fail(c, path, "%s", e);
    return 0;
}

/* 1 if the value satisfies the (scalar-level) keywords of s, 0 if not, -1 if it cannot tell */
int jsc_check_value(jsc *c, const json_t *s, const json_t *v, const char *path) {
    int vt = jsc_value_type(v);
    int m = jsc_types_of(s);
    if (vt == T_INT && (m & (T_INT | T_NUM))) {
    } else if (!(vt & m)) {
        return 0;
    }
    if (json_is_true(json_object_get(s, "nullable")) && json_is_null(v)) return 1;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)s, k, x) {
        if (!jsc_is_constraint(k) || !strcmp(k, "type") || !strcmp(k, "nullable")) continue;
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
            for (size_t i = 0; json_is_array(x) && i < json_array_size(x) && !hit; i++) hit = jsc_equal(json_array_get(x, i), v);
            if (!hit) return 0;
            continue;
        }
        if (!strcmp(k, "const")) {
            if (!jsc_equal(x, v)) return 0;
            continue;
        }
        /* keywords for other types do not apply */
        if (jsc_irrelevant_for(k, jsc_value_type(v) == T_INT ? T_INT : jsc_value_type(v))) continue;
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
        int rc = json_is_string(v) ? jsc_string_regex(c, s, &re, path) : jsc_number_regex(c, s, !(m & T_NUM), &re, path);
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
