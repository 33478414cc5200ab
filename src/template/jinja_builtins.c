/* Chat templates: the Jinja globals (range, namespace, dict, raise_exception, strftime_now), bound
 * methods of strings, lists and dicts, tests (is defined, ...) and filters that chat templates use. */
#define _POSIX_C_SOURCE 200809L /* localtime_r */

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "template/jinja_rt.h"

/* ---- globals and methods ---- */

jval jj_call_value(jctx *c, jval fn, const jargs *a) {
    if (fn.t == V_MACRO) return jj_render_macro(c, fn.u.mac, a);
    if (fn.t == V_UNDEF)
        jj_rerr(c, "'%.*s' is undefined", (int)(fn.u.s.n > 60 ? 60 : fn.u.s.n), fn.u.s.p ? fn.u.s.p : "");
    if (fn.t == V_FUNC) {
        switch (fn.u.fn) {
        case F_RANGE: {
            if (a->npos < 1 || a->npos > 3) jj_rerr(c, "range expects 1 to 3 arguments");
            for (size_t i = 0; i < a->npos; i++)
                if (!is_intlike(a->pos[i])) jj_rerr(c, "range: arguments must be integers");
            int64_t st = 0, en, step = 1;
            if (a->npos == 1) {
                en = int_of(a->pos[0]);
            } else {
                st = int_of(a->pos[0]);
                en = int_of(a->pos[1]);
                if (a->npos == 3) step = int_of(a->pos[2]);
            }
            if (step == 0) jj_rerr(c, "range() arg 3 must not be zero");
            jlist *l = jj_list_new(c, 0);
            for (int64_t i = st; step > 0 ? i < en : i > en; i += step) {
                if (l->n >= JJ_MAX_RANGE) jj_rerr(c, "range too large (limit %d)", JJ_MAX_RANGE);
                jj_list_push(c, l, vint(i));
                if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
            }
            return vlist(l);
        }
        case F_NAMESPACE:
        case F_DICT: {
            jdict *d = jj_dict_new(c);
            for (size_t i = 0; i < a->npos; i++) {
                if (a->pos[i].t != V_DICT) jj_rerr(c, "%s: positional argument must be a mapping",
                                                fn.u.fn == F_DICT ? "dict" : "namespace");
                for (size_t k = 0; k < a->pos[i].u.d->n; k++) jj_dict_set(c, d, a->pos[i].u.d->k[k], a->pos[i].u.d->v[k]);
            }
            for (size_t i = 0; i < a->nkw; i++) jj_dict_set(c, d, a->kwn[i], a->kwv[i]);
            return (jval){.t = fn.u.fn == F_DICT ? V_DICT : V_NS, .u.d = d};
        }
        case F_RAISE: {
            jstr m = jj_to_str(c, jj_arg(a, 0, NULL, UNDEF));
            /* the message goes out verbatim, without a line prefix, as HF raises it */
            jj_fail(c, PAGODA_ERR_INVALID, "%.*s", (int)(m.n > 500 ? 500 : m.n), m.p);
        }
        case F_STRFTIME: {
            jstr fmt = jj_arg_str(c, a, 0, NULL, "strftime_now");
            char *z = jj_alloc(c, fmt.n + 1);
            memcpy(z, fmt.p, fmt.n);
            time_t now = time(NULL);
            struct tm tmv;
            localtime_r(&now, &tmv);
            char out[256];
            size_t k = strftime(out, sizeof out, z, &tmv);
            return vstr(jj_strdup(c, out, k));
        }
        default: break;
        }
    }
    if (fn.t != V_METHOD) jj_rerr(c, "'%s' object is not callable", jj_type_name(fn));
    jval self = *fn.u.m.self;
    switch (fn.u.m.fn) {
    case M_STARTSWITH:
    case M_ENDSWITH: {
        jval p = jj_arg(a, 0, NULL, UNDEF);
        jlist one = {&p, 1, 1, false}, *opts = p.t == V_LIST ? p.u.l : &one;
        jstr s = self.u.s;
        for (size_t i = 0; i < opts->n; i++) {
            if (opts->v[i].t != V_STR) jj_rerr(c, "startswith/endswith: expected a string");
            jstr x = opts->v[i].u.s;
            if (x.n > s.n) continue;
            if (fn.u.m.fn == M_STARTSWITH ? !memcmp(s.p, x.p, x.n) : !memcmp(s.p + s.n - x.n, x.p, x.n)) return vbool(true);
        }
        return vbool(false);
    }
    case M_SPLIT: {
        jval sep = jj_arg(a, 0, "sep", NONE);
        return jj_str_split(c, self.u.s, &sep, jj_arg_int(c, a, 1, "maxsplit", -1, "split"));
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        jval ch = jj_arg(a, 0, "chars", NONE);
        if (ch.t != V_NONE && ch.t != V_STR) jj_rerr(c, "strip arg must be None or str");
        return vstr(jj_str_strip(self.u.s, fn.u.m.fn != M_RSTRIP, fn.u.m.fn != M_LSTRIP, ch.t == V_STR ? &ch.u.s : NULL));
    }
    case M_REPLACE:
        return vstr(jj_str_replace(c, self.u.s, jj_arg_str(c, a, 0, NULL, "replace"), jj_arg_str(c, a, 1, NULL, "replace"),
                                jj_arg_int(c, a, 2, "count", -1, "replace")));
    case M_UPPER: return vstr(jj_str_case(c, self.u.s, 0));
    case M_LOWER: return vstr(jj_str_case(c, self.u.s, 1));
    case M_CAPITALIZE: return vstr(jj_str_case(c, self.u.s, 2));
    case M_TITLE: return vstr(jj_str_case(c, self.u.s, 3));
    case M_FIND: {
        jstr x = jj_arg_str(c, a, 0, NULL, "find");
        const char *p = jj_memfind(self.u.s.p, self.u.s.n, x.p, x.n);
        return vint(p ? (int64_t)jj_cp_len((jstr){self.u.s.p, (size_t)(p - self.u.s.p)}) : -1);
    }
    case M_COUNT: {
        jstr x = jj_arg_str(c, a, 0, NULL, "count");
        if (!x.n) return vint((int64_t)jj_cp_len(self.u.s) + 1);
        int64_t k = 0;
        for (size_t i = 0; i < self.u.s.n;) {
            const char *p = jj_memfind(self.u.s.p + i, self.u.s.n - i, x.p, x.n);
            if (!p) break;
            k++;
            i = (size_t)(p - self.u.s.p) + x.n;
        }
        return vint(k);
    }
    case M_JOIN: {
        jlist *l = jj_iter_list(c, jj_arg(a, 0, NULL, UNDEF));
        jbuf r = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) jj_buf_add(c, &r, self.u.s.p, self.u.s.n);
            if (l->v[i].t != V_STR) jj_rerr(c, "join: sequence item %zu: expected str instance", i);
            jj_buf_add(c, &r, l->v[i].u.s.p, l->v[i].u.s.n);
        }
        return vstr(buf_str(&r));
    }
    case M_SPLITLINES: {
        jlist *l = jj_list_new(c, 0);
        jstr s = self.u.s;
        size_t st = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.p[i] == '\n' || s.p[i] == '\r') {
                jj_list_push(c, l, vstr((jstr){s.p + st, i - st}));
                if (s.p[i] == '\r' && i + 1 < s.n && s.p[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (st < s.n) jj_list_push(c, l, vstr((jstr){s.p + st, s.n - st}));
        return vlist(l);
    }
    case M_FORMAT: {
        /* "{}" and "{0}" placeholders only */
        jbuf r = {0};
        jstr s = self.u.s;
        size_t next = 0;
        for (size_t i = 0; i < s.n; i++) {
            /* bytes copied from s itself keep its marks (jj_buf_add from s.p) */
            if (s.p[i] == '{' && i + 1 < s.n && s.p[i + 1] == '{') { jj_buf_add(c, &r, s.p + i, 1); i++; continue; }
            if (s.p[i] == '}' && i + 1 < s.n && s.p[i + 1] == '}') { jj_buf_add(c, &r, s.p + i, 1); i++; continue; }
            if (s.p[i] != '{') { jj_buf_add(c, &r, s.p + i, 1); continue; }
            size_t e = i + 1;
            while (e < s.n && s.p[e] != '}') e++;
            if (e >= s.n) jj_rerr(c, "format: unmatched '{'");
            jstr key = {s.p + i + 1, e - i - 1};
            jval v;
            if (!key.n) {
                v = jj_arg(a, next++, NULL, UNDEF);
            } else if (key.p[0] >= '0' && key.p[0] <= '9') {
                size_t idx = 0;
                for (size_t k = 0; k < key.n && key.p[k] >= '0' && key.p[k] <= '9' && idx < 100000; k++)
                    idx = idx * 10 + (size_t)(key.p[k] - '0');
                v = jj_arg(a, idx, NULL, UNDEF);
            } else {
                v = UNDEF;
                for (size_t k = 0; k < a->nkw; k++)
                    if (str_eq(a->kwn[k], key)) v = a->kwv[k];
            }
            if (v.t == V_UNDEF) jj_rerr(c, "format: missing argument for '{%.*s}'", (int)key.n, key.p);
            jstr t = jj_to_str(c, v);
            jj_buf_add(c, &r, t.p, t.n);
            i = e;
        }
        return vstr(buf_str(&r));
    }
    case M_GET: {
        jval k = jj_arg(a, 0, "key", UNDEF);
        jval *v = k.t == V_STR ? jj_dict_find(self.u.d, k.u.s) : NULL;
        return v ? *v : jj_arg(a, 1, "default", NONE);
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        jdict *d = self.u.d;
        jlist *l = jj_list_new(c, d->n);
        for (size_t i = 0; i < d->n; i++) {
            if (fn.u.m.fn == M_KEYS) {
                jj_list_push(c, l, vstr(d->k[i]));
            } else if (fn.u.m.fn == M_VALUES) {
                jj_list_push(c, l, d->v[i]);
            } else {
                jlist *pair = jj_list_new(c, 2);
                pair->tuple = true;
                jj_list_push(c, pair, vstr(d->k[i]));
                jj_list_push(c, pair, d->v[i]);
                jj_list_push(c, l, vlist(pair));
            }
        }
        return vlist(l);
    }
    case M_CYCLE:
        if (!a->npos) jj_rerr(c, "no items for cycling given");
        return a->pos[self.u.lp->i % a->npos];
    default: jj_rerr(c, "internal error: bad method");
    }
}

/* ---- tests ---- */

bool jj_run_test(jctx *c, jstr name, jval v, const jargs *a) {
    jval x = jj_arg(a, 0, NULL, UNDEF);
    if (str_is(name, "defined")) return v.t != V_UNDEF;
    if (str_is(name, "undefined")) return v.t == V_UNDEF;
    if (str_is(name, "none")) return v.t == V_NONE;
    if (str_is(name, "string")) return v.t == V_STR;
    if (str_is(name, "mapping")) return v.t == V_DICT;
    if (str_is(name, "iterable")) return v.t == V_LIST || v.t == V_DICT || v.t == V_STR || v.t == V_UNDEF;
    if (str_is(name, "sequence")) return v.t == V_LIST || v.t == V_DICT || v.t == V_STR || v.t == V_UNDEF;
    if (str_is(name, "number")) return is_num(v);
    if (str_is(name, "integer")) return v.t == V_INT;
    if (str_is(name, "float")) return v.t == V_FLOAT;
    if (str_is(name, "boolean")) return v.t == V_BOOL;
    if (str_is(name, "true")) return v.t == V_BOOL && v.u.b;
    if (str_is(name, "false")) return v.t == V_BOOL && !v.u.b;
    if (str_is(name, "callable")) return v.t == V_MACRO || v.t == V_FUNC || v.t == V_METHOD;
    if (str_is(name, "odd") || str_is(name, "even")) {
        if (!is_num(v)) jj_rerr(c, "test '%.*s' needs a number", (int)name.n, name.p);
        if (v.t == V_FLOAT) { /* Python: value % 2 == 1 (odd) / == 0 (even) */
            double m = fmod(v.u.f, 2.0);
            if (m < 0) m += 2.0;
            return str_is(name, "odd") ? m == 1.0 : m == 0.0;
        }
        return (int_of(v) & 1) == str_is(name, "odd");
    }
    if (str_is(name, "divisibleby")) {
        if (!is_intlike(v) || !is_intlike(x) || !int_of(x)) jj_rerr(c, "divisibleby needs non-zero integers");
        return int_of(v) % int_of(x) == 0;
    }
    if (str_is(name, "eq") || str_is(name, "equalto") || str_is(name, "==")) return jj_val_eq(v, x, 0);
    if (str_is(name, "ne") || str_is(name, "!=")) return !jj_val_eq(v, x, 0);
    if (str_is(name, "lt") || str_is(name, "lessthan")) return jj_val_cmp(c, v, x, "<") < 0;
    if (str_is(name, "le")) return jj_val_cmp(c, v, x, "<=") <= 0;
    if (str_is(name, "gt") || str_is(name, "greaterthan")) return jj_val_cmp(c, v, x, ">") > 0;
    if (str_is(name, "ge")) return jj_val_cmp(c, v, x, ">=") >= 0;
    if (str_is(name, "in")) return jj_contains(c, x, v);
    if (str_is(name, "sameas")) {
        if (v.t != x.t) return false;
        if (v.t == V_NONE || v.t == V_UNDEF) return true;
        if (v.t == V_BOOL) return v.u.b == x.u.b;
        return jj_val_eq(v, x, 0) && (v.t != V_LIST || v.u.l == x.u.l) && (v.t != V_DICT || v.u.d == x.u.d);
    }
    if (str_is(name, "lower") || str_is(name, "upper")) {
        if (v.t != V_STR) return false;
        bool lower = str_is(name, "lower"), any = false;
        for (size_t i = 0; i < v.u.s.n; i++) {
            char ch = v.u.s.p[i];
            if (ch >= 'a' && ch <= 'z') { any = true; if (!lower) return false; }
            if (ch >= 'A' && ch <= 'Z') { any = true; if (lower) return false; }
        }
        return any;
    }
    jj_rerr(c, "unknown test '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
}

/* ---- filters ---- */

/* Stable merge sort of vals by keys (Python's sort is stable too). */
static void merge_sort(jctx *c, jval *vals, jval *keys, size_t n, bool rev) {
    if (n < 2) return;
    jval *tv = jj_alloc(c, n * sizeof *tv), *tk = jj_alloc(c, n * sizeof *tk);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi) {
                int r = jj_val_cmp(c, keys[j], keys[i], "<");
                bool take_right = rev ? r > 0 : r < 0;
                if (take_right) { tv[o] = vals[j]; tk[o++] = keys[j++]; }
                else { tv[o] = vals[i]; tk[o++] = keys[i++]; }
            }
            while (i < mid) { tv[o] = vals[i]; tk[o++] = keys[i++]; }
            while (j < hi) { tv[o] = vals[j]; tk[o++] = keys[j++]; }
        }
        memcpy(vals, tv, n * sizeof *tv);
        memcpy(keys, tk, n * sizeof *tk);
    }
}

static jval sel_attr(jctx *c, jval item, jstr attr) {
    /* dotted paths like "function.name" */
    size_t st = 0;
    for (size_t i = 0; i <= attr.n; i++) {
        if (i == attr.n || attr.p[i] == '.') {
            jstr part = {attr.p + st, i - st};
            if (item.t == V_UNDEF) return item;
            bool digits = part.n > 0 && part.n < 18;
            int64_t idx = 0;
            for (size_t k = 0; k < part.n && digits; k++) {
                digits = part.p[k] >= '0' && part.p[k] <= '9';
                idx = idx * 10 + (part.p[k] - '0');
            }
            item = digits ? jj_getitem_v(c, item, vint(idx)) : jj_getitem_v(c, item, vstr(part));
            st = i + 1;
        }
    }
    return item;
}

jval jj_apply_filter(jctx *c, jstr name, jval v, const jargs *a) {
#define IS(s) str_is(name, s)
    if (IS("safe")) return v;
    if (IS("string")) return vstr(jj_to_str(c, v));
    if (IS("length") || IS("count")) {
        switch (v.t) {
        case V_STR: return vint((int64_t)jj_cp_len(v.u.s));
        case V_LIST: return vint((int64_t)v.u.l->n);
        case V_DICT: case V_NS: return vint((int64_t)v.u.d->n);
        case V_UNDEF: return vint(0);
        default: jj_rerr(c, "object of type '%s' has no len()", jj_type_name(v));
        }
    }
    if (IS("trim")) {
        jval ch = jj_arg(a, 0, "chars", NONE);
        return vstr(jj_str_strip(jj_to_str(c, v), true, true, ch.t == V_STR ? &ch.u.s : NULL));
    }
    if (IS("upper")) return vstr(jj_str_case(c, jj_to_str(c, v), 0));
    if (IS("lower")) return vstr(jj_str_case(c, jj_to_str(c, v), 1));
    if (IS("capitalize")) return vstr(jj_str_case(c, jj_to_str(c, v), 2));
    if (IS("title")) return vstr(jj_str_case(c, jj_to_str(c, v), 4));
    if (IS("default") || IS("d")) {
        bool boolean = jj_truthy(jj_arg(a, 1, "boolean", vbool(false)));
        if (v.t == V_UNDEF || (boolean && !jj_truthy(v))) return jj_arg(a, 0, "default_value", vcstr(""));
        return v;
    }
    if (IS("tojson")) {
        jsonopt o = {.indent = -1, .item_sep = {", ", 2}, .key_sep = {": ", 2}};
        jval ind = jj_arg(a, 0, "indent", NONE);
        if (ind.t != V_NONE && ind.t != V_UNDEF) {
            if (!is_intlike(ind)) jj_rerr(c, "tojson: indent must be an integer");
            o.indent = (int)(int_of(ind) < 0 ? 0 : int_of(ind) > 64 ? 64 : int_of(ind));
            o.item_sep = (jstr){",", 1};
        }
        jval sep = jj_arg(a, 99, "separators", NONE);
        if (sep.t == V_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == V_STR && sep.u.l->v[1].t == V_STR) {
            o.item_sep = sep.u.l->v[0].u.s;
            o.key_sep = sep.u.l->v[1].u.s;
        }
        o.sort = jj_truthy(jj_arg(a, 99, "sort_keys", vbool(false)));
        jbuf b = {0};
        jj_to_json(c, &b, v, &o, 0);
        return vstr(buf_str(&b));
    }
    if (IS("first") || IS("last")) {
        jlist *l = jj_iter_list(c, v);
        if (!l->n) return UNDEF;
        return IS("first") ? l->v[0] : l->v[l->n - 1];
    }
    if (IS("join")) {
        jlist *l = jj_iter_list(c, v);
        jval d = jj_arg(a, 0, "d", vcstr(""));
        jval attr = jj_arg(a, 1, "attribute", NONE);
        jstr sep = jj_to_str(c, d);
        jbuf r = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) jj_buf_add(c, &r, sep.p, sep.n);
            jval it = attr.t == V_STR ? sel_attr(c, l->v[i], attr.u.s) : l->v[i];
            jstr s = jj_to_str(c, it);
            jj_buf_add(c, &r, s.p, s.n);
        }
        return vstr(buf_str(&r));
    }
    if (IS("items")) {
        if (v.t == V_UNDEF) return vlist(jj_list_new(c, 0));
        if (v.t != V_DICT) jj_rerr(c, "items: expected a mapping, got %s", jj_type_name(v));
        jargs none = {0};
        return jj_call_value(c, jj_method(c, M_ITEMS, v), &none);
    }
    if (IS("list")) {
        jlist *src = jj_iter_list(c, v), *l = jj_list_new(c, src->n);
        for (size_t i = 0; i < src->n; i++) jj_list_push(c, l, src->v[i]);
        return vlist(l);
    }
    if (IS("reverse")) {
        if (v.t == V_STR) {
            size_t *o;
            size_t n = jj_cp_offsets(c, v.u.s, &o);
            jbuf r = {0};
            for (size_t i = n; i-- > 0;) jj_buf_add(c, &r, v.u.s.p + o[i], o[i + 1] - o[i]);
            return vstr(buf_str(&r));
        }
        jlist *src = jj_iter_list(c, v), *l = jj_list_new(c, src->n);
        for (size_t i = src->n; i-- > 0;) jj_list_push(c, l, src->v[i]);
        return vlist(l);
    }
    if (IS("selectattr") || IS("rejectattr") || IS("select") || IS("reject")) {
        bool attr_mode = IS("selectattr") || IS("rejectattr");
        bool keep_true = IS("selectattr") || IS("select");
        jlist *src = jj_iter_list(c, v), *l = jj_list_new(c, 0);
        size_t ti = attr_mode ? 1 : 0;
        jstr attr = attr_mode ? jj_arg_str(c, a, 0, NULL, "selectattr") : (jstr){0};
        jval test = jj_arg(a, ti, NULL, UNDEF);
        if (test.t != V_UNDEF && test.t != V_STR) jj_rerr(c, "select: test name must be a string");
        jargs targs = {0};
        if (a->npos > ti + 1) {
            targs.pos = a->pos + ti + 1;
            targs.npos = a->npos - ti - 1;
        }
        for (size_t i = 0; i < src->n; i++) {
            jval x = attr_mode ? sel_attr(c, src->v[i], attr) : src->v[i];
            bool r = test.t == V_STR ? jj_run_test(c, test.u.s, x, &targs) : jj_truthy(x);
            if (r == keep_true) jj_list_push(c, l, src->v[i]);
        }
        return vlist(l);
    }
    if (IS("map")) {
        jlist *src = jj_iter_list(c, v), *l = jj_list_new(c, src->n);
        jval attr = jj_arg(a, 99, "attribute", UNDEF);
        if (attr.t == V_STR) {
            jval dflt = jj_arg(a, 99, "default", UNDEF);
            for (size_t i = 0; i < src->n; i++) {
                jval x = sel_attr(c, src->v[i], attr.u.s);
                jj_list_push(c, l, x.t == V_UNDEF && dflt.t != V_UNDEF ? dflt : x);
            }
            return vlist(l);
        }
        jstr fname = jj_arg_str(c, a, 0, NULL, "map");
        jargs fargs = {0};
        if (a->npos > 1) {
            fargs.pos = a->pos + 1;
            fargs.npos = a->npos - 1;
        }
        for (size_t i = 0; i < src->n; i++) jj_list_push(c, l, jj_apply_filter(c, fname, src->v[i], &fargs));
        return vlist(l);
    }
    if (IS("replace")) {
        jstr s = jj_to_str(c, v);
        return vstr(jj_str_replace(c, s, jj_to_str(c, jj_arg(a, 0, "old", UNDEF)), jj_to_str(c, jj_arg(a, 1, "new", UNDEF)),
                                jj_arg_int(c, a, 2, "count", -1, "replace")));
    }
    if (IS("int")) {
        jval d = jj_arg(a, 0, "default", vint(0));
        if (is_intlike(v)) return vint(int_of(v));
        if (v.t == V_FLOAT) {
            if (!(v.u.f > -9.2e18 && v.u.f < 9.2e18)) return d;
            return vint((int64_t)v.u.f);
        }
        if (v.t == V_STR) {
            char tmp[64];
            jstr s = jj_str_strip(v.u.s, true, true, NULL);
            if (!s.n || s.n >= sizeof tmp) return d;
            memcpy(tmp, s.p, s.n);
            tmp[s.n] = 0;
            char *end;
            long long r = strtoll(tmp, &end, 10);
            if (*end == 0) return vint(r);
            double x = strtod(tmp, &end);
            if (*end == 0 && x > -9.2e18 && x < 9.2e18) return vint((int64_t)x);
            return d;
        }
        return d;
    }
    if (IS("float")) {
        jval d = jj_arg(a, 0, "default", vfloat(0));
        if (is_num(v)) return vfloat(num_f(v));
        if (v.t == V_STR) {
            char tmp[64];
            jstr s = jj_str_strip(v.u.s, true, true, NULL);
            if (!s.n || s.n >= sizeof tmp) return d;
            memcpy(tmp, s.p, s.n);
            tmp[s.n] = 0;
            char *end;
            double x = strtod(tmp, &end);
            return *end == 0 ? vfloat(x) : d;
        }
        return d;
    }
    if (IS("abs")) {
        if (is_intlike(v)) {
            if (int_of(v) == INT64_MIN) jj_rerr(c, "integer overflow");
            return vint(int_of(v) < 0 ? -int_of(v) : int_of(v));
        }
        if (v.t == V_FLOAT) return vfloat(fabs(v.u.f));
        jj_rerr(c, "bad operand type for abs(): '%s'", jj_type_name(v));
    }
    if (IS("escape") || IS("e")) {
        jstr s = jj_to_str(c, v);
        jbuf r = {0};
        for (size_t i = 0; i < s.n; i++) {
            size_t from = r.n;
            switch (s.p[i]) {
            case '&': jj_buf_s(c, &r, "&amp;"); break;
            case '<': jj_buf_s(c, &r, "&lt;"); break;
            case '>': jj_buf_s(c, &r, "&gt;"); break;
            case '"': jj_buf_s(c, &r, "&#34;"); break;
            case '\'': jj_buf_s(c, &r, "&#39;"); break;
            default: jj_buf_add(c, &r, s.p + i, 1);
            }
            jj_taint_from(c, &r, from, s.p + i);
        }
        return vstr(buf_str(&r));
    }
    if (IS("indent")) {
        jstr s = jj_to_str(c, v);
        jval w = jj_arg(a, 0, "width", vint(4));
        bool first = jj_truthy(jj_arg(a, 1, "first", vbool(false)));
        bool blank = jj_truthy(jj_arg(a, 2, "blank", vbool(false)));
        jstr pad;
        if (w.t == V_STR) {
            pad = w.u.s;
        } else {
            int64_t k = is_intlike(w) ? int_of(w) : 4;
            if (k < 0) k = 0;
            if (k > 256) jj_rerr(c, "indent: width too large");
            char *p = jj_alloc(c, (size_t)k + 1);
            memset(p, ' ', (size_t)k);
            pad = (jstr){p, (size_t)k};
        }
        jbuf r = {0};
        if (first) jj_buf_add(c, &r, pad.p, pad.n);
        for (size_t i = 0; i < s.n; i++) {
            jj_buf_add(c, &r, s.p + i, 1);
            if (s.p[i] == '\n' && i + 1 < s.n && (blank || s.p[i + 1] != '\n')) jj_buf_add(c, &r, pad.p, pad.n);
        }
        return vstr(buf_str(&r));
    }
    if (IS("unique")) {
        jlist *src = jj_iter_list(c, v), *l = jj_list_new(c, 0);
        for (size_t i = 0; i < src->n; i++) {
            bool seen = false;
            for (size_t k = 0; k < l->n && !seen; k++) seen = jj_val_eq(l->v[k], src->v[i], 0);
            if (!seen) jj_list_push(c, l, src->v[i]);
        }
        return vlist(l);
    }
    if (IS("sort") || IS("dictsort")) {
        bool dsort = IS("dictsort");
        if (dsort && v.t != V_DICT) jj_rerr(c, "dictsort: expected a mapping, got %s", jj_type_name(v));
        jlist *src;
        if (dsort) {
            jargs none = {0};
            src = jj_call_value(c, jj_method(c, M_ITEMS, v), &none).u.l;
        } else {
            src = jj_iter_list(c, v);
        }
        bool cs = jj_truthy(jj_arg(a, dsort ? 0 : 1, "case_sensitive", vbool(false)));
        bool rev = jj_truthy(jj_arg(a, dsort ? 2 : 0, "reverse", vbool(false)));
        jval attr = dsort ? UNDEF : jj_arg(a, 2, "attribute", UNDEF);
        int by_value = dsort && str_is(jj_to_str(c, jj_arg(a, 1, "by", vcstr("key"))), "value");
        jval *keys = jj_alloc(c, (src->n + 1) * sizeof *keys);
        for (size_t i = 0; i < src->n; i++) {
            jval k = dsort ? src->v[i].u.l->v[by_value] : src->v[i];
            if (attr.t == V_STR) k = sel_attr(c, k, attr.u.s);
            if (!cs && k.t == V_STR) k = vstr(jj_str_case(c, k.u.s, 1));
            keys[i] = k;
        }
        jlist *l = jj_list_new(c, src->n);
        for (size_t i = 0; i < src->n; i++) jj_list_push(c, l, src->v[i]);
        merge_sort(c, l->v, keys, l->n, rev);
        return vlist(l);
    }
    if (IS("round")) {
        jval prec = jj_arg(a, 0, "precision", vint(0));
        jstr method_ = jj_to_str(c, jj_arg(a, 1, "method", vcstr("common")));
        if (!is_num(v) || !is_intlike(prec)) jj_rerr(c, "round: expected a number");
        double x = num_f(v), m = pow(10.0, (double)int_of(prec));
        double r = str_is(method_, "ceil") ? ceil(x * m) / m : str_is(method_, "floor") ? floor(x * m) / m
                                                                  : nearbyint(x * m) / m; /* half to even, like Python */
        return vfloat(r);
    }
    if (IS("sum") || IS("min") || IS("max")) {
        jlist *src = jj_iter_list(c, v);
        jval attr = jj_arg(a, IS("sum") ? 0 : 99, "attribute", UNDEF);
        jval acc = IS("sum") ? jj_arg(a, 1, "start", vint(0)) : UNDEF;
        for (size_t i = 0; i < src->n; i++) {
            jval x = attr.t == V_STR ? sel_attr(c, src->v[i], attr.u.s) : src->v[i];
            if (IS("sum")) acc = jj_binop(c, OP_ADD, acc, x);
            else if (acc.t == V_UNDEF || (jj_val_cmp(c, x, acc, "<") < 0) == IS("min")) {
                if (acc.t == V_UNDEF || !jj_val_eq(x, acc, 0)) acc = x;
            }
        }
        return acc;
    }
    if (IS("wordcount")) {
        jstr s = jj_to_str(c, v);
        int64_t k = 0;
        bool in = false;
        for (size_t i = 0; i < s.n; i++) {
            unsigned char ch = (unsigned char)s.p[i];
            bool w = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80;
            if (w && !in) k++;
            in = w;
        }
        return vint(k);
    }
    if (IS("format")) {
        jval args_ = {.t = V_LIST, .u.l = jj_list_new(c, a->npos)};
        args_.u.l->tuple = true;
        for (size_t i = 0; i < a->npos; i++) jj_list_push(c, args_.u.l, a->pos[i]);
        return jj_percent_format(c, jj_to_str(c, v), args_);
    }
    jj_rerr(c, "unknown filter '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
#undef IS
}
