/* Chat templates: evaluation of the parsed Jinja AST, with the filters, tests, methods and
 * globals that chat templates use. Values follow Python semantics (truthiness, str(), repr(),
 * json.dumps as Hugging Face's tojson calls it). */
#define _POSIX_C_SOURCE 200809L /* localtime_r */

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "template/jinja.h"

enum {
    F_RANGE, F_NAMESPACE, F_DICT, F_RAISE, F_STRFTIME,
    /* bound methods */
    M_STARTSWITH, M_ENDSWITH, M_SPLIT, M_STRIP, M_LSTRIP, M_RSTRIP, M_REPLACE, M_UPPER, M_LOWER,
    M_TITLE, M_CAPITALIZE, M_FIND, M_COUNT, M_JOIN, M_SPLITLINES, M_FORMAT,
    M_GET, M_ITEMS, M_KEYS, M_VALUES, M_CYCLE
};

static const jval UNDEF = {.t = V_UNDEF};
static const jval NONE = {.t = V_NONE};

static _Noreturn __attribute__((format(printf, 2, 3))) void rerr(jctx *c, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    jj_fail(c, PAGODA_ERR_INVALID, "chat template line %d: %s", c->line, buf);
}

/* ---- constructors ---- */

static jval vbool(bool b) { return (jval){.t = V_BOOL, .u.b = b}; }
static jval vint(int64_t i) { return (jval){.t = V_INT, .u.i = i}; }
static jval vfloat(double f) { return (jval){.t = V_FLOAT, .u.f = f}; }
static jval vstr(jstr s) { return (jval){.t = V_STR, .u.s = s}; }
static jval vcstr(const char *s) { return vstr((jstr){s, strlen(s)}); }

static jlist *list_new(jctx *c, size_t cap) {
    jlist *l = jj_alloc(c, sizeof *l);
    if (cap) {
        l->v = jj_alloc(c, cap * sizeof *l->v);
        l->cap = cap;
    }
    return l;
}
static void list_push(jctx *c, jlist *l, jval v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jval *nv = jj_alloc(c, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}
static jval vlist(jlist *l) { return (jval){.t = V_LIST, .u.l = l}; }

static bool str_eq(jstr a, jstr b) { return a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n)); }
static bool str_is(jstr a, const char *b) { return str_eq(a, (jstr){b, strlen(b)}); }

static jdict *dict_new(jctx *c) { return jj_alloc(c, sizeof(jdict)); }
static jval *dict_find(jdict *d, jstr k) {
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], k)) return &d->v[i];
    return NULL;
}
static void dict_set(jctx *c, jdict *d, jstr k, jval v) {
    jval *e = dict_find(d, k);
    if (e) {
        *e = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jstr *nk = jj_alloc(c, cap * sizeof *nk);
        jval *nv = jj_alloc(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

jframe *jj_frame(jctx *c, jframe *parent) {
    jframe *f = jj_alloc(c, sizeof *f);
    f->parent = parent;
    return f;
}
void jj_frame_set(jctx *c, jframe *f, jstr k, jval v) { dict_set(c, &f->vars, k, v); }
static jval *frame_get(jframe *f, jstr k) {
    jval *e;
    for (; f; f = f->parent)
        if ((e = dict_find(&f->vars, k))) return e;
    return NULL;
}

jval jj_from_json(jctx *c, const void *jp) {
    const json_t *j = jp;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = dict_new(c);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) dict_set(c, d, jj_strdup(c, k, strlen(k)), jj_from_json(c, v));
        return (jval){.t = V_DICT, .u.d = d};
    }
    case JSON_ARRAY: {
        jlist *l = list_new(c, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) list_push(c, l, jj_from_json(c, json_array_get(j, i)));
        return vlist(l);
    }
    case JSON_STRING: return vstr(jj_strdup(c, json_string_value(j), json_string_length(j)));
    case JSON_INTEGER: return vint(json_integer_value(j));
    case JSON_REAL: return vfloat(json_real_value(j));
    case JSON_TRUE: return vbool(true);
    case JSON_FALSE: return vbool(false);
    default: return NONE;
    }
}

/* ---- string building ---- */

static void buf_add(jctx *c, jbuf *b, const char *p, size_t n) {
    if (!n) return;
    if (n > JJ_MAX_OUTPUT || b->n + n > JJ_MAX_OUTPUT)
        rerr(c, "output too large (limit %u MiB)", JJ_MAX_OUTPUT >> 20);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n) cap *= 2;
        char *np = jj_alloc_raw(c, cap);
        if (b->n) memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void buf_s(jctx *c, jbuf *b, const char *s) { buf_add(c, b, s, strlen(s)); }
static void buf_ch(jctx *c, jbuf *b, char ch) { buf_add(c, b, &ch, 1); }
static jstr buf_str(jbuf *b) { return (jstr){b->p ? b->p : "", b->n}; }

static const char *type_name(jval v) {
    switch (v.t) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    case V_MACRO: return "Macro";
    default: return "function";
    }
}

/* Python repr(float): the shortest digits that round-trip, in Python's layout. */
static void float_repr(double f, char *out, size_t on, bool json) {
    if (isnan(f)) {
        snprintf(out, on, "%s", json ? "NaN" : "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, on, "%s%s", f < 0 ? "-" : "", json ? "Infinity" : "inf");
        return;
    }
    char e[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = "-d.ddde+XX" */
    char digits[32];
    int nd = 0, exp10;
    const char *q = e;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t o = 0;
    char tmp[64];
    if (neg) tmp[o++] = '-';
    if (exp10 >= -5 + 1 && exp10 < 16) {
        if (exp10 < 0) {
            tmp[o++] = '0';
            tmp[o++] = '.';
            for (int k = 0; k < -exp10 - 1; k++) tmp[o++] = '0';
            for (int k = 0; k < nd; k++) tmp[o++] = digits[k];
        } else {
            for (int k = 0; k <= exp10; k++) tmp[o++] = k < nd ? digits[k] : '0';
            tmp[o++] = '.';
            if (nd > exp10 + 1)
                for (int k = exp10 + 1; k < nd; k++) tmp[o++] = digits[k];
            else
                tmp[o++] = '0';
        }
        tmp[o] = 0;
    } else {
        tmp[o++] = digits[0];
        if (nd > 1) {
            tmp[o++] = '.';
            for (int k = 1; k < nd; k++) tmp[o++] = digits[k];
        }
        snprintf(tmp + o, sizeof tmp - o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    snprintf(out, on, "%s", tmp);
}

static void to_str_buf(jctx *c, jbuf *b, jval v, bool repr, int depth);

static void repr_str(jctx *c, jbuf *b, jstr s) {
    bool has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    buf_ch(c, b, q);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        char e[8];
        if (ch == (unsigned char)q || ch == '\\') {
            buf_ch(c, b, '\\');
            buf_ch(c, b, (char)ch);
        } else if (ch == '\n') {
            buf_s(c, b, "\\n");
        } else if (ch == '\r') {
            buf_s(c, b, "\\r");
        } else if (ch == '\t') {
            buf_s(c, b, "\\t");
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(e, sizeof e, "\\x%02x", ch);
            buf_s(c, b, e);
        } else {
            buf_ch(c, b, (char)ch);
        }
    }
    buf_ch(c, b, q);
}

static void to_str_buf(jctx *c, jbuf *b, jval v, bool repr, int depth) {
    char tmp[64];
    if (depth > 64) rerr(c, "value nested too deeply to print");
    switch (v.t) {
    case V_UNDEF: break;
    case V_NONE: buf_s(c, b, "None"); break;
    case V_BOOL: buf_s(c, b, v.u.b ? "True" : "False"); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); buf_s(c, b, tmp); break;
    case V_FLOAT: float_repr(v.u.f, tmp, sizeof tmp, false); buf_s(c, b, tmp); break;
    case V_STR:
        if (repr) repr_str(c, b, v.u.s);
        else buf_add(c, b, v.u.s.p, v.u.s.n);
        break;
    case V_LIST:
        buf_ch(c, b, v.u.l->tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) buf_s(c, b, ", ");
            to_str_buf(c, b, v.u.l->v[i], true, depth + 1);
        }
        if (v.u.l->tuple && v.u.l->n == 1) buf_ch(c, b, ',');
        buf_ch(c, b, v.u.l->tuple ? ')' : ']');
        break;
    case V_DICT:
    case V_NS:
        if (v.t == V_NS) buf_s(c, b, "<Namespace ");
        buf_ch(c, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) buf_s(c, b, ", ");
            repr_str(c, b, v.u.d->k[i]);
            buf_s(c, b, ": ");
            to_str_buf(c, b, v.u.d->v[i], true, depth + 1);
        }
        buf_ch(c, b, '}');
        if (v.t == V_NS) buf_ch(c, b, '>');
        break;
    case V_LOOP:
        snprintf(tmp, sizeof tmp, "<LoopContext %zu/%zu>", v.u.lp->i + 1, v.u.lp->items->n);
        buf_s(c, b, tmp);
        break;
    default: buf_s(c, b, "<function>"); break;
    }
}

static jstr to_str(jctx *c, jval v) {
    if (v.t == V_STR) return v.u.s;
    if (v.t == V_UNDEF) return (jstr){"", 0};
    jbuf b = {0};
    to_str_buf(c, &b, v, false, 0);
    return buf_str(&b);
}

/* json.dumps(v, ensure_ascii=False, indent=indent, separators=..., sort_keys=...) */
typedef struct { int indent; jstr item_sep, key_sep; bool sort; } jsonopt;

static void json_str(jctx *c, jbuf *b, jstr s) {
    buf_ch(c, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        const char *e = NULL;
        char u[8];
        if (ch == '"') e = "\\\"";
        else if (ch == '\\') e = "\\\\";
        else if (ch == '\n') e = "\\n";
        else if (ch == '\r') e = "\\r";
        else if (ch == '\t') e = "\\t";
        else if (ch == '\b') e = "\\b";
        else if (ch == '\f') e = "\\f";
        else if (ch < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", ch);
            e = u;
        }
        if (e) {
            buf_add(c, b, s.p + run, i - run);
            buf_s(c, b, e);
            run = i + 1;
        }
    }
    buf_add(c, b, s.p + run, s.n - run);
    buf_ch(c, b, '"');
}

static int cmp_str(const void *a, const void *b) {
    const jstr *x = *(const jstr *const *)a, *y = *(const jstr *const *)b;
    size_t n = x->n < y->n ? x->n : y->n;
    int r = n ? memcmp(x->p, y->p, n) : 0;
    return r ? r : (x->n > y->n) - (x->n < y->n);
}

static void json_nl(jctx *c, jbuf *b, const jsonopt *o, int level) {
    buf_ch(c, b, '\n');
    for (int i = 0; i < o->indent * level; i++) buf_ch(c, b, ' ');
}

static void to_json(jctx *c, jbuf *b, jval v, const jsonopt *o, int level) {
    char tmp[64];
    if (level > 64) rerr(c, "tojson: value nested too deeply");
    switch (v.t) {
    case V_NONE: buf_s(c, b, "null"); break;
    case V_BOOL: buf_s(c, b, v.u.b ? "true" : "false"); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); buf_s(c, b, tmp); break;
    case V_FLOAT: float_repr(v.u.f, tmp, sizeof tmp, true); buf_s(c, b, tmp); break;
    case V_STR: json_str(c, b, v.u.s); break;
    case V_LIST:
        if (!v.u.l->n) {
            buf_s(c, b, "[]");
            break;
        }
        buf_ch(c, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) buf_add(c, b, o->item_sep.p, o->item_sep.n);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            to_json(c, b, v.u.l->v[i], o, level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        buf_ch(c, b, ']');
        break;
    case V_DICT: {
        jdict *d = v.u.d;
        if (!d->n) {
            buf_s(c, b, "{}");
            break;
        }
        const jstr **keys = jj_alloc(c, d->n * sizeof *keys);
        for (size_t i = 0; i < d->n; i++) keys[i] = &d->k[i];
        if (o->sort) qsort(keys, d->n, sizeof *keys, cmp_str);
        buf_ch(c, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) buf_add(c, b, o->item_sep.p, o->item_sep.n);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            json_str(c, b, *keys[i]);
            buf_add(c, b, o->key_sep.p, o->key_sep.n);
            to_json(c, b, *dict_find(d, *keys[i]), o, level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        buf_ch(c, b, '}');
        break;
    }
    default: rerr(c, "Object of type %s is not JSON serializable", type_name(v));
    }
}

/* ---- Python semantics ---- */

static bool truthy(jval v) {
    switch (v.t) {
    case V_UNDEF: case V_NONE: return false;
    case V_BOOL: return v.u.b;
    case V_INT: return v.u.i != 0;
    case V_FLOAT: return v.u.f != 0.0;
    case V_STR: return v.u.s.n != 0;
    case V_LIST: return v.u.l->n != 0;
    case V_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(jval v) { return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL; }
static double num_f(jval v) {
    return v.t == V_FLOAT ? v.u.f : v.t == V_BOOL ? (double)v.u.b : (double)v.u.i;
}
static bool is_intlike(jval v) { return v.t == V_INT || v.t == V_BOOL; }
static int64_t int_of(jval v) { return v.t == V_BOOL ? (int64_t)v.u.b : v.u.i; }

static bool val_eq(jval a, jval b, int depth) {
    if (depth > 64) return false;
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) return int_of(a) == int_of(b);
        return num_f(a) == num_f(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case V_UNDEF: case V_NONE: return true;
    case V_STR: return str_eq(a.u.s, b.u.s);
    case V_LIST:
        if (a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!val_eq(a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
        return true;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jval *o = dict_find(b.u.d, a.u.d->k[i]);
            if (!o || !val_eq(a.u.d->v[i], *o, depth + 1)) return false;
        }
        return true;
    case V_NS: return a.u.d == b.u.d;
    case V_LOOP: return a.u.lp == b.u.lp;
    case V_MACRO: return a.u.mac == b.u.mac;
    default: return false;
    }
}

static int val_cmp_d(jctx *c, jval a, jval b, const char *op, int depth);
static int val_cmp(jctx *c, jval a, jval b, const char *op) { return val_cmp_d(c, a, b, op, 0); }

static int val_cmp_d(jctx *c, jval a, jval b, const char *op, int depth) {
    if (depth > 64) rerr(c, "values nested too deeply to compare");
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) return (int_of(a) > int_of(b)) - (int_of(a) < int_of(b));
        double x = num_f(a), y = num_f(b);
        return (x > y) - (x < y);
    }
    if (a.t == V_STR && b.t == V_STR) {
        const jstr *pa = &a.u.s, *pb = &b.u.s;
        return cmp_str(&pa, &pb);
    }
    if (a.t == V_LIST && b.t == V_LIST) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (val_eq(a.u.l->v[i], b.u.l->v[i], 0)) continue;
            return val_cmp_d(c, a.u.l->v[i], b.u.l->v[i], op, depth + 1);
        }
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    rerr(c, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b));
}

/* UTF-8 code point starts of s; returns count, fills offs[0..count] (offs[count] = s.n). */
static size_t cp_offsets(jctx *c, jstr s, size_t **offs) {
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) n += ((unsigned char)s.p[i] & 0xC0) != 0x80;
    size_t *o = jj_alloc(c, (n + 1) * sizeof *o);
    size_t k = 0;
    for (size_t i = 0; i < s.n; i++)
        if (((unsigned char)s.p[i] & 0xC0) != 0x80) o[k++] = i;
    o[k] = s.n;
    *offs = o;
    return n;
}
static size_t cp_len(jstr s) {
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) n += ((unsigned char)s.p[i] & 0xC0) != 0x80;
    return n;
}

/* Iterating a value: lists as is, dicts by key, strings by code point. */
static jlist *iter_list(jctx *c, jval v) {
    switch (v.t) {
    case V_UNDEF: return list_new(c, 0);
    case V_LIST: return v.u.l;
    case V_DICT: {
        jlist *l = list_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) list_push(c, l, vstr(v.u.d->k[i]));
        return l;
    }
    case V_STR: {
        size_t *o;
        size_t n = cp_offsets(c, v.u.s, &o);
        jlist *l = list_new(c, n);
        for (size_t i = 0; i < n; i++) list_push(c, l, vstr((jstr){v.u.s.p + o[i], o[i + 1] - o[i]}));
        return l;
    }
    default: rerr(c, "'%s' object is not iterable", type_name(v));
    }
}

static bool py_space(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' ||
           (ch >= 0x1c && ch <= 0x1f);
}

static jstr str_strip(jstr s, bool left, bool right, const jstr *chars) {
    size_t a = 0, b = s.n;
    /* chars is a set of code points; multi-byte members are matched as whole sequences */
    for (;;) {
        size_t len;
        if (!left || a >= b) break;
        if (chars) {
            bool hit = false;
            for (size_t k = 0; k < chars->n;) {
                size_t cl = 1;
                while (k + cl < chars->n && ((unsigned char)chars->p[k + cl] & 0xC0) == 0x80) cl++;
                if (a + cl <= b && !memcmp(s.p + a, chars->p + k, cl)) {
                    hit = true;
                    len = cl;
                    break;
                }
                k += cl;
            }
            if (!hit) break;
        } else {
            if (!py_space(s.p[a])) break;
            len = 1;
        }
        a += len;
    }
    for (;;) {
        size_t len;
        if (!right || b <= a) break;
        if (chars) {
            bool hit = false;
            for (size_t k = 0; k < chars->n;) {
                size_t cl = 1;
                while (k + cl < chars->n && ((unsigned char)chars->p[k + cl] & 0xC0) == 0x80) cl++;
                if (b >= a + cl && !memcmp(s.p + b - cl, chars->p + k, cl)) {
                    hit = true;
                    len = cl;
                    break;
                }
                k += cl;
            }
            if (!hit) break;
        } else {
            if (!py_space(s.p[b - 1])) break;
            len = 1;
        }
        b -= len;
    }
    return (jstr){s.p + a, b - a};
}

static const char *memfind(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0) return h;
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}

static jstr str_replace(jctx *c, jstr s, jstr old, jstr nw, int64_t count) {
    jbuf b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old.n == 0) { /* Python inserts between every code point */
        size_t *o;
        size_t n = cp_offsets(c, s, &o);
        for (size_t k = 0; k <= n; k++) {
            if (count < 0 || done < count) {
                buf_add(c, &b, nw.p, nw.n);
                done++;
            }
            if (k < n) buf_add(c, &b, s.p + o[k], o[k + 1] - o[k]);
        }
        return buf_str(&b);
    }
    while (i < s.n) {
        const char *f = (count < 0 || done < count) ? memfind(s.p + i, s.n - i, old.p, old.n) : NULL;
        if (!f) break;
        buf_add(c, &b, s.p + i, (size_t)(f - (s.p + i)));
        buf_add(c, &b, nw.p, nw.n);
        i = (size_t)(f - s.p) + old.n;
        done++;
    }
    buf_add(c, &b, s.p + i, s.n - i);
    return buf_str(&b);
}

/* Case of the two-byte letters of Latin-1 and Cyrillic (U+00C0-00FE, U+0410-044F), written to
 * d[i..i+1]; false if s[i] does not start one of those. */
static bool case2(jstr s, size_t i, bool up, char *d) {
    if (i + 1 >= s.n) return false;
    unsigned cp, b0 = (unsigned char)s.p[i], b1 = (unsigned char)s.p[i + 1];
    if ((b0 != 0xC3 && b0 != 0xD0 && b0 != 0xD1) || (b1 & 0xC0) != 0x80) return false;
    cp = ((b0 & 0x1F) << 6) | (b1 & 0x3F);
    if (cp >= 0xC0 && cp <= 0xFE && cp != 0xD7 && cp != 0xF7 && cp != 0xDF) {
        if (up && cp >= 0xE0) cp -= 0x20;
        else if (!up && cp < 0xE0) cp += 0x20;
    } else if (cp >= 0x410 && cp <= 0x44F) {
        if (up && cp >= 0x430) cp -= 0x20;
        else if (!up && cp < 0x430) cp += 0x20;
    } else {
        return false;
    }
    d[i] = (char)(0xC0 | (cp >> 6));
    d[i + 1] = (char)(0x80 | (cp & 0x3F));
    return true;
}

/* mode 0 upper, 1 lower, 2 capitalize, 3 Python str.title, 4 jinja's title filter (words split
 * at whitespace and -({[<, each capitalized). ASCII letters only. */
static jstr str_case(jctx *c, jstr s, int mode) {
    char *d = jj_alloc(c, s.n + 1);
    bool start = true;
    for (size_t i = 0; i < s.n; i++) {
        char ch = s.p[i];
        bool up = mode == 0 || (mode == 2 && i == 0) || (mode >= 3 && start);
        if (case2(s, i, up, d)) {
            i++;
            start = false;
            continue;
        }
        if (up && ch >= 'a' && ch <= 'z') ch = (char)(ch - 32);
        else if (!up && ch >= 'A' && ch <= 'Z') ch = (char)(ch + 32);
        d[i] = ch;
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ((unsigned char)ch >= 0x80);
        if (mode == 3) start = !alpha;
        else if (mode == 4) start = py_space(ch) || (ch && strchr("-({[<", ch));
    }
    return (jstr){d, s.n};
}

static jval str_split(jctx *c, jstr s, const jval *sep, int64_t maxsplit) {
    jlist *l = list_new(c, 0);
    if (!sep || sep->t == V_NONE) {
        size_t i = 0;
        int64_t n = 0;
        for (;;) {
            while (i < s.n && py_space(s.p[i])) i++;
            if (i >= s.n) break;
            if (maxsplit >= 0 && n >= maxsplit) {
                size_t e = s.n;
                while (e > i && py_space(s.p[e - 1])) e--;
                list_push(c, l, vstr((jstr){s.p + i, e - i}));
                break;
            }
            size_t st = i;
            while (i < s.n && !py_space(s.p[i])) i++;
            list_push(c, l, vstr((jstr){s.p + st, i - st}));
            n++;
        }
        return vlist(l);
    }
    if (sep->t != V_STR) rerr(c, "split: separator must be a string");
    jstr d = sep->u.s;
    if (!d.n) rerr(c, "split: empty separator");
    size_t i = 0;
    int64_t n = 0;
    for (;;) {
        const char *f = (maxsplit < 0 || n < maxsplit) ? memfind(s.p + i, s.n - i, d.p, d.n) : NULL;
        if (!f) {
            list_push(c, l, vstr((jstr){s.p + i, s.n - i}));
            break;
        }
        list_push(c, l, vstr((jstr){s.p + i, (size_t)(f - (s.p + i))}));
        i = (size_t)(f - s.p) + d.n;
        n++;
    }
    return vlist(l);
}

/* Python slice index normalization. */
static size_t slice_idx(jctx *c, size_t n, jval start, jval stop, jval step, int64_t **out) {
    int64_t st = 1;
    if (step.t != V_NONE && step.t != V_UNDEF) {
        if (!is_intlike(step)) rerr(c, "slice indices must be integers");
        st = int_of(step);
        if (st == 0) rerr(c, "slice step cannot be zero");
    }
    int64_t len = (int64_t)n, a, b;
    #define NORM(v, dflt_pos, dflt_neg, res)                                                 \
        do {                                                                               \
            if (v.t == V_NONE || v.t == V_UNDEF) {                                         \
                res = st > 0 ? dflt_pos : dflt_neg;                                        \
            } else {                                                                       \
                if (!is_intlike(v)) rerr(c, "slice indices must be integers");             \
                res = int_of(v);                                                           \
                if (res < 0) res += len;                                                   \
                if (res < 0) res = st > 0 ? 0 : -1;                                        \
                if (res >= len) res = st > 0 ? len : len - 1;                              \
            }                                                                              \
        } while (0)
    NORM(start, 0, len - 1, a);
    NORM(stop, len, -1, b);
    #undef NORM
    size_t cnt = 0;
    int64_t *idx = jj_alloc(c, (n + 1) * sizeof *idx);
    if (st > 0)
        for (int64_t i = a; i < b; i += st) idx[cnt++] = i;
    else
        for (int64_t i = a; i > b; i += st) idx[cnt++] = i;
    *out = idx;
    return cnt;
}

/* ---- attribute and item access ---- */

static jval method(jctx *c, int fn, jval self) {
    jval *s = jj_alloc(c, sizeof *s);
    *s = self;
    return (jval){.t = V_METHOD, .u.m = {fn, s}};
}

static jval getattr_v(jctx *c, jval obj, jstr name);

static jval getitem_v(jctx *c, jval obj, jval key) {
    switch (obj.t) {
    case V_UNDEF:
        rerr(c, "'%.*s' is undefined", (int)(obj.u.s.n > 60 ? 60 : obj.u.s.n), obj.u.s.p ? obj.u.s.p : "");
    case V_DICT:
    case V_NS:
        if (key.t == V_STR) {
            jval *v = dict_find(obj.u.d, key.u.s);
            if (v) return *v;
        }
        break;
    case V_LIST:
        if (is_intlike(key)) {
            int64_t i = int_of(key), n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.l->v[i];
            return (jval){.t = V_UNDEF, .u.s = {"list index", 10}};
        }
        break;
    case V_STR:
        if (is_intlike(key)) {
            size_t *o;
            int64_t n = (int64_t)cp_offsets(c, obj.u.s, &o), i = int_of(key);
            if (i < 0) i += n;
            if (i >= 0 && i < n) return vstr((jstr){obj.u.s.p + o[i], o[i + 1] - o[i]});
            return UNDEF;
        }
        break;
    default: break;
    }
    if (key.t == V_STR) return getattr_v(c, obj, key.u.s);
    return UNDEF;
}

static jval getattr_v(jctx *c, jval obj, jstr name) {
    static const struct { const char *name; int fn; } str_m[] = {
        {"startswith", M_STARTSWITH}, {"endswith", M_ENDSWITH}, {"split", M_SPLIT},
        {"strip", M_STRIP}, {"lstrip", M_LSTRIP}, {"rstrip", M_RSTRIP}, {"replace", M_REPLACE},
        {"upper", M_UPPER}, {"lower", M_LOWER}, {"title", M_TITLE}, {"capitalize", M_CAPITALIZE},
        {"find", M_FIND}, {"count", M_COUNT}, {"join", M_JOIN}, {"splitlines", M_SPLITLINES},
        {"format", M_FORMAT}};
    static const struct { const char *name; int fn; } dict_m[] = {
        {"get", M_GET}, {"items", M_ITEMS}, {"keys", M_KEYS}, {"values", M_VALUES}};
    switch (obj.t) {
    case V_UNDEF:
        rerr(c, "'%.*s' is undefined", (int)(obj.u.s.n > 60 ? 60 : obj.u.s.n), obj.u.s.p ? obj.u.s.p : "");
    case V_DICT:
        for (size_t i = 0; i < sizeof dict_m / sizeof dict_m[0]; i++)
            if (str_is(name, dict_m[i].name)) return method(c, dict_m[i].fn, obj);
        /* fallthrough */
    case V_NS: {
        jval *v = dict_find(obj.u.d, name);
        if (v) return *v;
        break;
    }
    case V_STR:
        for (size_t i = 0; i < sizeof str_m / sizeof str_m[0]; i++)
            if (str_is(name, str_m[i].name)) return method(c, str_m[i].fn, obj);
        break;
    case V_LOOP: {
        jloop *lp = obj.u.lp;
        int64_t i = (int64_t)lp->i, n = (int64_t)lp->items->n;
        if (str_is(name, "index")) return vint(i + 1);
        if (str_is(name, "index0")) return vint(i);
        if (str_is(name, "revindex")) return vint(n - i);
        if (str_is(name, "revindex0")) return vint(n - i - 1);
        if (str_is(name, "first")) return vbool(i == 0);
        if (str_is(name, "last")) return vbool(i == n - 1);
        if (str_is(name, "length")) return vint(n);
        if (str_is(name, "depth")) return vint(1);
        if (str_is(name, "depth0")) return vint(0);
        if (str_is(name, "previtem")) return i > 0 ? lp->items->v[i - 1] : UNDEF;
        if (str_is(name, "nextitem")) return i + 1 < n ? lp->items->v[i + 1] : UNDEF;
        if (str_is(name, "cycle")) return method(c, M_CYCLE, obj);
        break;
    }
    default: break;
    }
    return (jval){.t = V_UNDEF, .u.s = name};
}

/* ---- evaluation ---- */

typedef struct {
    jval *pos;
    size_t npos;
    jstr *kwn;
    jval *kwv;
    size_t nkw;
} jargs;

static jval eval(jctx *c, jframe *f, jnode *n);

static jargs eval_args(jctx *c, jframe *f, const jnlist *l, size_t skip) {
    jargs a = {0};
    size_t n = l->n;
    if (n <= skip) return a;
    a.pos = jj_alloc(c, (n + 1) * sizeof *a.pos);
    a.kwn = jj_alloc(c, (n + 1) * sizeof *a.kwn);
    a.kwv = jj_alloc(c, (n + 1) * sizeof *a.kwv);
    for (size_t i = skip; i < n; i++) {
        jnode *e = l->v[i];
        if (e->k == E_KW) {
            a.kwn[a.nkw] = e->name;
            a.kwv[a.nkw++] = eval(c, f, e->a);
        } else {
            a.pos[a.npos++] = eval(c, f, e);
        }
    }
    return a;
}

/* Argument i by position, or by keyword name, else dflt. */
static jval arg(const jargs *a, size_t i, const char *name, jval dflt) {
    if (i < a->npos) return a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (str_is(a->kwn[k], name)) return a->kwv[k];
    return dflt;
}

static jstr arg_str(jctx *c, const jargs *a, size_t i, const char *name, const char *what) {
    jval v = arg(a, i, name, UNDEF);
    if (v.t != V_STR) rerr(c, "%s: expected a string argument, got %s", what, type_name(v));
    return v.u.s;
}

static int64_t arg_int(jctx *c, const jargs *a, size_t i, const char *name, int64_t dflt, const char *what) {
    jval v = arg(a, i, name, UNDEF);
    if (v.t == V_UNDEF || v.t == V_NONE) return dflt;
    if (!is_intlike(v)) rerr(c, "%s: expected an integer argument, got %s", what, type_name(v));
    return int_of(v);
}

static bool run_test(jctx *c, jstr name, jval v, const jargs *a);
static jval apply_filter(jctx *c, jstr name, jval v, const jargs *a);
static jval call_value(jctx *c, jval fn, const jargs *a);

static void exec_body(jctx *c, jframe *f, const jnlist *body, int *ctl);

static jval render_macro(jctx *c, jmacro *m, const jargs *a) {
    if (c->call_depth >= JJ_MAX_CALL_DEPTH) rerr(c, "macro calls nested too deeply");
    jnode *def = m->def;
    jframe *f = jj_frame(c, m->scope);
    for (size_t i = 0; i < def->args.n; i++) {
        jnode *p = def->args.v[i];
        jval v = {.t = V_UNDEF, .u.s = p->name};
        bool got = false;
        if (i < a->npos) {
            v = a->pos[i];
            got = true;
        }
        for (size_t k = 0; !got && k < a->nkw; k++)
            if (str_eq(a->kwn[k], p->name)) {
                v = a->kwv[k];
                got = true;
            }
        if (!got && p->a) v = eval(c, f, p->a);
        jj_frame_set(c, f, p->name, v);
    }
    /* extra arguments land in varargs / kwargs, as in jinja (which rejects them only when the
       body does not mention those names) */
    jlist *va = list_new(c, 0);
    va->tuple = true;
    for (size_t i = def->args.n; i < a->npos; i++) list_push(c, va, a->pos[i]);
    jj_frame_set(c, f, (jstr){"varargs", 7}, vlist(va));
    jdict *kw = dict_new(c);
    for (size_t k = 0; k < a->nkw; k++) {
        bool known = false;
        for (size_t i = 0; i < def->args.n && !known; i++) known = str_eq(def->args.v[i]->name, a->kwn[k]);
        if (!known) dict_set(c, kw, a->kwn[k], a->kwv[k]);
    }
    jj_frame_set(c, f, (jstr){"kwargs", 6}, (jval){.t = V_DICT, .u.d = kw});
    jbuf b = {0}, *saved = c->out;
    int saved_line = c->line, ctl = 0;
    c->out = &b;
    c->call_depth++;
    exec_body(c, f, &def->body, &ctl);
    c->call_depth--;
    c->out = saved;
    c->line = saved_line;
    return vstr(buf_str(&b));
}

/* "fmt" % args with %s, %r, %d, %i and %% (what templates use of printf-style formatting) */
static jval percent_format(jctx *c, jstr f, jval args) {
    jlist one = {&args, 1, 1, false}, *l = args.t == V_LIST && args.u.l->tuple ? args.u.l : &one;
    size_t k = 0;
    jbuf r = {0};
    for (size_t i = 0; i < f.n; i++) {
        if (f.p[i] != '%') {
            buf_ch(c, &r, f.p[i]);
            continue;
        }
        char conv = i + 1 < f.n ? f.p[++i] : 0;
        if (conv == '%') {
            buf_ch(c, &r, '%');
            continue;
        }
        if (conv != 's' && conv != 'r' && conv != 'd' && conv != 'i')
            rerr(c, "unsupported format character '%c'", conv ? conv : '?');
        if (k >= l->n) rerr(c, "not enough arguments for format string");
        jval v = l->v[k++];
        if (conv == 'd' || conv == 'i') {
            if (!is_num(v)) rerr(c, "%%d format: a real number is required, not %s", type_name(v));
            if (v.t == V_FLOAT && !(v.u.f > -9.2e18 && v.u.f < 9.2e18)) rerr(c, "%%d format: number too large");
            v = vint(v.t == V_FLOAT ? (int64_t)v.u.f : int_of(v));
        }
        to_str_buf(c, &r, v, conv == 'r', 0);
    }
    if (k < l->n) rerr(c, "not all arguments converted during string formatting");
    return vstr(buf_str(&r));
}

static jval binop(jctx *c, int op, jval a, jval b) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (a.t == V_UNDEF || b.t == V_UNDEF) {
        jval u = a.t == V_UNDEF ? a : b;
        rerr(c, "'%.*s' is undefined", (int)(u.u.s.n > 60 ? 60 : u.u.s.n), u.u.s.p ? u.u.s.p : "");
    }
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = int_of(a), y = int_of(b), r;
        switch (op) {
        case OP_ADD:
            if (__builtin_add_overflow(x, y, &r)) rerr(c, "integer overflow");
            return vint(r);
        case OP_SUB:
            if (__builtin_sub_overflow(x, y, &r)) rerr(c, "integer overflow");
            return vint(r);
        case OP_MUL:
            if (__builtin_mul_overflow(x, y, &r)) rerr(c, "integer overflow");
            return vint(r);
        case OP_DIV:
            if (!y) rerr(c, "division by zero");
            return vfloat((double)x / (double)y);
        case OP_FDIV:
        case OP_MOD: {
            if (!y) rerr(c, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) rerr(c, "integer overflow");
            int64_t q = x / y, m = x % y;
            if (m && ((m < 0) != (y < 0))) {
                q--;
                m += y;
            }
            return vint(op == OP_FDIV ? q : m);
        }
        case OP_POW: {
            if (y < 0) return vfloat(pow((double)x, (double)y));
            int64_t res = 1;
            for (int64_t k = 0; k < y; k++) {
                if (__builtin_mul_overflow(res, x, &res)) rerr(c, "integer overflow");
                if (res == 0 || res == 1) break;
                if (res == -1) {
                    res = ((y - k - 1) % 2) ? -res : res;
                    break;
                }
            }
            return vint(res);
        }
        default: break;
        }
    }
    if (is_num(a) && is_num(b)) {
        double x = num_f(a), y = num_f(b);
        switch (op) {
        case OP_ADD: return vfloat(x + y);
        case OP_SUB: return vfloat(x - y);
        case OP_MUL: return vfloat(x * y);
        case OP_DIV:
            if (y == 0) rerr(c, "float division by zero");
            return vfloat(x / y);
        case OP_FDIV:
            if (y == 0) rerr(c, "float floor division by zero");
            return vfloat(floor(x / y));
        case OP_MOD: {
            if (y == 0) rerr(c, "float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return vfloat(m);
        }
        case OP_POW: return vfloat(pow(x, y));
        default: break;
        }
    }
    if (op == OP_MOD && a.t == V_STR) return percent_format(c, a.u.s, b);
    if (op == OP_ADD && a.t == V_STR && b.t == V_STR) {
        jbuf r = {0};
        buf_add(c, &r, a.u.s.p, a.u.s.n);
        buf_add(c, &r, b.u.s.p, b.u.s.n);
        return vstr(buf_str(&r));
    }
    if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST) {
        jlist *l = list_new(c, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++) list_push(c, l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) list_push(c, l, b.u.l->v[i]);
        return vlist(l);
    }
    if (op == OP_MUL && (((a.t == V_STR || a.t == V_LIST) && is_intlike(b)) ||
                         ((b.t == V_STR || b.t == V_LIST) && is_intlike(a)))) {
        jval s = is_intlike(a) ? b : a;
        int64_t k = int_of(is_intlike(a) ? a : b);
        if (k < 0) k = 0;
        size_t unit = s.t == V_STR ? s.u.s.n : s.u.l->n;
        if (unit && (uint64_t)k > JJ_MAX_OUTPUT / unit) rerr(c, "repetition result too large");
        if (s.t == V_STR) {
            jbuf r = {0};
            for (int64_t i = 0; i < k; i++) buf_add(c, &r, s.u.s.p, s.u.s.n);
            return vstr(buf_str(&r));
        }
        jlist *l = list_new(c, unit * (size_t)k);
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < unit; j++) list_push(c, l, s.u.l->v[j]);
        return vlist(l);
    }
    rerr(c, "unsupported operand type(s) for %s: '%s' and '%s'", op <= OP_POW ? names[op] : "?",
         type_name(a), type_name(b));
}

static bool contains(jctx *c, jval hay, jval needle) {
    switch (hay.t) {
    case V_STR:
        if (needle.t != V_STR) rerr(c, "'in <string>' requires string as left operand, not %s", type_name(needle));
        return memfind(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case V_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (val_eq(hay.u.l->v[i], needle, 0)) return true;
        return false;
    case V_DICT:
        return needle.t == V_STR && dict_find(hay.u.d, needle.u.s) != NULL;
    case V_UNDEF: return false;
    default: rerr(c, "argument of type '%s' is not iterable", type_name(hay));
    }
}

static jval eval(jctx *c, jframe *f, jnode *n) {
    if (++c->steps > JJ_MAX_STEPS) rerr(c, "template takes too many steps (limit %llu)", JJ_MAX_STEPS);
    c->line = n->line;
    switch (n->k) {
    case E_LIT: return n->lit;
    case E_NAME: {
        jval *v = frame_get(f, n->name);
        if (v) return *v;
        static const struct { const char *name; int fn; } g[] = {
            {"range", F_RANGE}, {"namespace", F_NAMESPACE}, {"dict", F_DICT},
            {"raise_exception", F_RAISE}, {"strftime_now", F_STRFTIME}};
        for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
            if (str_is(n->name, g[i].name)) return (jval){.t = V_FUNC, .u.fn = g[i].fn};
        return (jval){.t = V_UNDEF, .u.s = n->name};
    }
    case E_ATTR: {
        jval o = eval(c, f, n->a);
        c->line = n->line;
        return getattr_v(c, o, n->name);
    }
    case E_ITEM: {
        jval o = eval(c, f, n->a), k = eval(c, f, n->b);
        c->line = n->line;
        return getitem_v(c, o, k);
    }
    case E_SLICE: {
        jval o = eval(c, f, n->a);
        jval a = n->b ? eval(c, f, n->b) : NONE, b = n->c ? eval(c, f, n->c) : NONE;
        jval s = n->d ? eval(c, f, n->d) : NONE;
        c->line = n->line;
        int64_t *idx;
        if (o.t == V_LIST) {
            size_t cnt = slice_idx(c, o.u.l->n, a, b, s, &idx);
            jlist *l = list_new(c, cnt);
            for (size_t i = 0; i < cnt; i++) list_push(c, l, o.u.l->v[idx[i]]);
            return vlist(l);
        }
        if (o.t == V_STR) {
            size_t *off;
            size_t len = cp_offsets(c, o.u.s, &off);
            size_t cnt = slice_idx(c, len, a, b, s, &idx);
            jbuf r = {0};
            for (size_t i = 0; i < cnt; i++) buf_add(c, &r, o.u.s.p + off[idx[i]], off[idx[i] + 1] - off[idx[i]]);
            return vstr(buf_str(&r));
        }
        /* jinja applies slices directly in Python, so unlike [i] they fail loudly */
        if (o.t == V_UNDEF)
            rerr(c, "'%.*s' is undefined", (int)(o.u.s.n > 60 ? 60 : o.u.s.n), o.u.s.p ? o.u.s.p : "");
        rerr(c, "'%s' object is not subscriptable", type_name(o));
    }
    case E_CALL: {
        jval fn = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        return call_value(c, fn, &a);
    }
    case E_FILTER: {
        jval v = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        return apply_filter(c, n->name, v, &a);
    }
    case E_TEST: {
        jval v = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        bool r = run_test(c, n->name, v, &a);
        return vbool(n->op ? !r : r);
    }
    case E_NOT: return vbool(!truthy(eval(c, f, n->a)));
    case E_NEG:
    case E_POS: {
        jval v = eval(c, f, n->a);
        c->line = n->line;
        if (n->k == E_POS && is_num(v)) return v.t == V_BOOL ? vint(v.u.b) : v;
        if (is_intlike(v)) {
            if (int_of(v) == INT64_MIN) rerr(c, "integer overflow");
            return vint(-int_of(v));
        }
        if (v.t == V_FLOAT) return vfloat(-v.u.f);
        rerr(c, "bad operand type for unary %c: '%s'", n->k == E_NEG ? '-' : '+', type_name(v));
    }
    case E_BIN: {
        jval a = eval(c, f, n->a), b = eval(c, f, n->b);
        c->line = n->line;
        switch (n->op) {
        case OP_EQ: return vbool(val_eq(a, b, 0));
        case OP_NE: return vbool(!val_eq(a, b, 0));
        case OP_LT: return vbool(val_cmp(c, a, b, "<") < 0);
        case OP_LE: return vbool(val_cmp(c, a, b, "<=") <= 0);
        case OP_GT: return vbool(val_cmp(c, a, b, ">") > 0);
        case OP_GE: return vbool(val_cmp(c, a, b, ">=") >= 0);
        case OP_IN: return vbool(contains(c, b, a));
        case OP_NOTIN: return vbool(!contains(c, b, a));
        default: return binop(c, n->op, a, b);
        }
    }
    case E_AND: {
        jval a = eval(c, f, n->a);
        return truthy(a) ? eval(c, f, n->b) : a;
    }
    case E_OR: {
        jval a = eval(c, f, n->a);
        return truthy(a) ? a : eval(c, f, n->b);
    }
    case E_COND:
        if (truthy(eval(c, f, n->a))) return eval(c, f, n->b);
        return n->c ? eval(c, f, n->c) : UNDEF;
    case E_CONCAT: {
        jval a = eval(c, f, n->a), b = eval(c, f, n->b);
        jstr x = to_str(c, a), y = to_str(c, b);
        jbuf r = {0};
        buf_add(c, &r, x.p, x.n);
        buf_add(c, &r, y.p, y.n);
        return vstr(buf_str(&r));
    }
    case E_LIST: {
        jlist *l = list_new(c, n->args.n);
        l->tuple = n->op == 1;
        for (size_t i = 0; i < n->args.n; i++) list_push(c, l, eval(c, f, n->args.v[i]));
        return vlist(l);
    }
    case E_DICT: {
        jdict *d = dict_new(c);
        for (size_t i = 0; i + 1 < n->args.n; i += 2) {
            jval k = eval(c, f, n->args.v[i]), v = eval(c, f, n->args.v[i + 1]);
            if (k.t != V_STR) {
                c->line = n->line;
                rerr(c, "only string dict keys are supported");
            }
            dict_set(c, d, k.u.s, v);
        }
        return (jval){.t = V_DICT, .u.d = d};
    }
    default: rerr(c, "internal error: bad expression node");
    }
}

/* ---- globals and methods ---- */

static jval call_value(jctx *c, jval fn, const jargs *a) {
    if (fn.t == V_MACRO) return render_macro(c, fn.u.mac, a);
    if (fn.t == V_UNDEF)
        rerr(c, "'%.*s' is undefined", (int)(fn.u.s.n > 60 ? 60 : fn.u.s.n), fn.u.s.p ? fn.u.s.p : "");
    if (fn.t == V_FUNC) {
        switch (fn.u.fn) {
        case F_RANGE: {
            if (a->npos < 1 || a->npos > 3) rerr(c, "range expects 1 to 3 arguments");
            for (size_t i = 0; i < a->npos; i++)
                if (!is_intlike(a->pos[i])) rerr(c, "range: arguments must be integers");
            int64_t st = 0, en, step = 1;
            if (a->npos == 1) {
                en = int_of(a->pos[0]);
            } else {
                st = int_of(a->pos[0]);
                en = int_of(a->pos[1]);
                if (a->npos == 3) step = int_of(a->pos[2]);
            }
            if (step == 0) rerr(c, "range() arg 3 must not be zero");
            jlist *l = list_new(c, 0);
            for (int64_t i = st; step > 0 ? i < en : i > en; i += step) {
                if (l->n >= JJ_MAX_RANGE) rerr(c, "range too large (limit %d)", JJ_MAX_RANGE);
                list_push(c, l, vint(i));
                if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
            }
            return vlist(l);
        }
        case F_NAMESPACE:
        case F_DICT: {
            jdict *d = dict_new(c);
            for (size_t i = 0; i < a->npos; i++) {
                if (a->pos[i].t != V_DICT) rerr(c, "%s: positional argument must be a mapping",
                                                fn.u.fn == F_DICT ? "dict" : "namespace");
                for (size_t k = 0; k < a->pos[i].u.d->n; k++) dict_set(c, d, a->pos[i].u.d->k[k], a->pos[i].u.d->v[k]);
            }
            for (size_t i = 0; i < a->nkw; i++) dict_set(c, d, a->kwn[i], a->kwv[i]);
            return (jval){.t = fn.u.fn == F_DICT ? V_DICT : V_NS, .u.d = d};
        }
        case F_RAISE: {
            jstr m = to_str(c, arg(a, 0, NULL, UNDEF));
            /* the message goes out verbatim, without a line prefix, as HF raises it */
            jj_fail(c, PAGODA_ERR_INVALID, "%.*s", (int)(m.n > 500 ? 500 : m.n), m.p);
        }
        case F_STRFTIME: {
            jstr fmt = arg_str(c, a, 0, NULL, "strftime_now");
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
    if (fn.t != V_METHOD) rerr(c, "'%s' object is not callable", type_name(fn));
    jval self = *fn.u.m.self;
    switch (fn.u.m.fn) {
    case M_STARTSWITH:
    case M_ENDSWITH: {
        jval p = arg(a, 0, NULL, UNDEF);
        jlist one = {&p, 1, 1, false}, *opts = p.t == V_LIST ? p.u.l : &one;
        jstr s = self.u.s;
        for (size_t i = 0; i < opts->n; i++) {
            if (opts->v[i].t != V_STR) rerr(c, "startswith/endswith: expected a string");
            jstr x = opts->v[i].u.s;
            if (x.n > s.n) continue;
            if (fn.u.m.fn == M_STARTSWITH ? !memcmp(s.p, x.p, x.n) : !memcmp(s.p + s.n - x.n, x.p, x.n)) return vbool(true);
        }
        return vbool(false);
    }
    case M_SPLIT: {
        jval sep = arg(a, 0, "sep", NONE);
        return str_split(c, self.u.s, &sep, arg_int(c, a, 1, "maxsplit", -1, "split"));
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        jval ch = arg(a, 0, "chars", NONE);
        if (ch.t != V_NONE && ch.t != V_STR) rerr(c, "strip arg must be None or str");
        return vstr(str_strip(self.u.s, fn.u.m.fn != M_RSTRIP, fn.u.m.fn != M_LSTRIP, ch.t == V_STR ? &ch.u.s : NULL));
    }
    case M_REPLACE:
        return vstr(str_replace(c, self.u.s, arg_str(c, a, 0, NULL, "replace"), arg_str(c, a, 1, NULL, "replace"),
                                arg_int(c, a, 2, "count", -1, "replace")));
    case M_UPPER: return vstr(str_case(c, self.u.s, 0));
    case M_LOWER: return vstr(str_case(c, self.u.s, 1));
    case M_CAPITALIZE: return vstr(str_case(c, self.u.s, 2));
    case M_TITLE: return vstr(str_case(c, self.u.s, 3));
    case M_FIND: {
        jstr x = arg_str(c, a, 0, NULL, "find");
        const char *p = memfind(self.u.s.p, self.u.s.n, x.p, x.n);
        return vint(p ? (int64_t)cp_len((jstr){self.u.s.p, (size_t)(p - self.u.s.p)}) : -1);
    }
    case M_COUNT: {
        jstr x = arg_str(c, a, 0, NULL, "count");
        if (!x.n) return vint((int64_t)cp_len(self.u.s) + 1);
        int64_t k = 0;
        for (size_t i = 0; i < self.u.s.n;) {
            const char *p = memfind(self.u.s.p + i, self.u.s.n - i, x.p, x.n);
            if (!p) break;
            k++;
            i = (size_t)(p - self.u.s.p) + x.n;
        }
        return vint(k);
    }
    case M_JOIN: {
        jlist *l = iter_list(c, arg(a, 0, NULL, UNDEF));
        jbuf r = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) buf_add(c, &r, self.u.s.p, self.u.s.n);
            if (l->v[i].t != V_STR) rerr(c, "join: sequence item %zu: expected str instance", i);
            buf_add(c, &r, l->v[i].u.s.p, l->v[i].u.s.n);
        }
        return vstr(buf_str(&r));
    }
    case M_SPLITLINES: {
        jlist *l = list_new(c, 0);
        jstr s = self.u.s;
        size_t st = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.p[i] == '\n' || s.p[i] == '\r') {
                list_push(c, l, vstr((jstr){s.p + st, i - st}));
                if (s.p[i] == '\r' && i + 1 < s.n && s.p[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (st < s.n) list_push(c, l, vstr((jstr){s.p + st, s.n - st}));
        return vlist(l);
    }
    case M_FORMAT: {
        /* "{}" and "{0}" placeholders only */
        jbuf r = {0};
        jstr s = self.u.s;
        size_t next = 0;
        for (size_t i = 0; i < s.n; i++) {
            if (s.p[i] == '{' && i + 1 < s.n && s.p[i + 1] == '{') { buf_ch(c, &r, '{'); i++; continue; }
            if (s.p[i] == '}' && i + 1 < s.n && s.p[i + 1] == '}') { buf_ch(c, &r, '}'); i++; continue; }
            if (s.p[i] != '{') { buf_ch(c, &r, s.p[i]); continue; }
            size_t e = i + 1;
            while (e < s.n && s.p[e] != '}') e++;
            if (e >= s.n) rerr(c, "format: unmatched '{'");
            jstr key = {s.p + i + 1, e - i - 1};
            jval v;
            if (!key.n) {
                v = arg(a, next++, NULL, UNDEF);
            } else if (key.p[0] >= '0' && key.p[0] <= '9') {
                size_t idx = 0;
                for (size_t k = 0; k < key.n && key.p[k] >= '0' && key.p[k] <= '9' && idx < 100000; k++)
                    idx = idx * 10 + (size_t)(key.p[k] - '0');
                v = arg(a, idx, NULL, UNDEF);
            } else {
                v = UNDEF;
                for (size_t k = 0; k < a->nkw; k++)
                    if (str_eq(a->kwn[k], key)) v = a->kwv[k];
            }
            if (v.t == V_UNDEF) rerr(c, "format: missing argument for '{%.*s}'", (int)key.n, key.p);
            jstr t = to_str(c, v);
            buf_add(c, &r, t.p, t.n);
            i = e;
        }
        return vstr(buf_str(&r));
    }
    case M_GET: {
        jval k = arg(a, 0, "key", UNDEF);
        jval *v = k.t == V_STR ? dict_find(self.u.d, k.u.s) : NULL;
        return v ? *v : arg(a, 1, "default", NONE);
    }
    case M_ITEMS:
    case M_KEYS:
    case M_VALUES: {
        jdict *d = self.u.d;
        jlist *l = list_new(c, d->n);
        for (size_t i = 0; i < d->n; i++) {
            if (fn.u.m.fn == M_KEYS) {
                list_push(c, l, vstr(d->k[i]));
            } else if (fn.u.m.fn == M_VALUES) {
                list_push(c, l, d->v[i]);
            } else {
                jlist *pair = list_new(c, 2);
                pair->tuple = true;
                list_push(c, pair, vstr(d->k[i]));
                list_push(c, pair, d->v[i]);
                list_push(c, l, vlist(pair));
            }
        }
        return vlist(l);
    }
    case M_CYCLE:
        if (!a->npos) rerr(c, "no items for cycling given");
        return a->pos[self.u.lp->i % a->npos];
    default: rerr(c, "internal error: bad method");
    }
}

/* ---- tests ---- */

static bool run_test(jctx *c, jstr name, jval v, const jargs *a) {
    jval x = arg(a, 0, NULL, UNDEF);
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
        if (!is_num(v)) rerr(c, "test '%.*s' needs a number", (int)name.n, name.p);
        if (v.t == V_FLOAT) { /* Python: value % 2 == 1 (odd) / == 0 (even) */
            double m = fmod(v.u.f, 2.0);
            if (m < 0) m += 2.0;
            return str_is(name, "odd") ? m == 1.0 : m == 0.0;
        }
        return (int_of(v) & 1) == str_is(name, "odd");
    }
    if (str_is(name, "divisibleby")) {
        if (!is_intlike(v) || !is_intlike(x) || !int_of(x)) rerr(c, "divisibleby needs non-zero integers");
        return int_of(v) % int_of(x) == 0;
    }
    if (str_is(name, "eq") || str_is(name, "equalto") || str_is(name, "==")) return val_eq(v, x, 0);
    if (str_is(name, "ne") || str_is(name, "!=")) return !val_eq(v, x, 0);
    if (str_is(name, "lt") || str_is(name, "lessthan")) return val_cmp(c, v, x, "<") < 0;
    if (str_is(name, "le")) return val_cmp(c, v, x, "<=") <= 0;
    if (str_is(name, "gt") || str_is(name, "greaterthan")) return val_cmp(c, v, x, ">") > 0;
    if (str_is(name, "ge")) return val_cmp(c, v, x, ">=") >= 0;
    if (str_is(name, "in")) return contains(c, x, v);
    if (str_is(name, "sameas")) {
        if (v.t != x.t) return false;
        if (v.t == V_NONE || v.t == V_UNDEF) return true;
        if (v.t == V_BOOL) return v.u.b == x.u.b;
        return val_eq(v, x, 0) && (v.t != V_LIST || v.u.l == x.u.l) && (v.t != V_DICT || v.u.d == x.u.d);
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
    rerr(c, "unknown test '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
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
                int r = val_cmp(c, keys[j], keys[i], "<");
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
            item = digits ? getitem_v(c, item, vint(idx)) : getitem_v(c, item, vstr(part));
            st = i + 1;
        }
    }
    return item;
}

static jval apply_filter(jctx *c, jstr name, jval v, const jargs *a) {
#define IS(s) str_is(name, s)
    if (IS("safe")) return v;
    if (IS("string")) return vstr(to_str(c, v));
    if (IS("length") || IS("count")) {
        switch (v.t) {
        case V_STR: return vint((int64_t)cp_len(v.u.s));
        case V_LIST: return vint((int64_t)v.u.l->n);
        case V_DICT: case V_NS: return vint((int64_t)v.u.d->n);
        case V_UNDEF: return vint(0);
        default: rerr(c, "object of type '%s' has no len()", type_name(v));
        }
    }
    if (IS("trim")) {
        jval ch = arg(a, 0, "chars", NONE);
        return vstr(str_strip(to_str(c, v), true, true, ch.t == V_STR ? &ch.u.s : NULL));
    }
    if (IS("upper")) return vstr(str_case(c, to_str(c, v), 0));
    if (IS("lower")) return vstr(str_case(c, to_str(c, v), 1));
    if (IS("capitalize")) return vstr(str_case(c, to_str(c, v), 2));
    if (IS("title")) return vstr(str_case(c, to_str(c, v), 4));
    if (IS("default") || IS("d")) {
        bool boolean = truthy(arg(a, 1, "boolean", vbool(false)));
        if (v.t == V_UNDEF || (boolean && !truthy(v))) return arg(a, 0, "default_value", vcstr(""));
        return v;
    }
    if (IS("tojson")) {
        jsonopt o = {.indent = -1, .item_sep = {", ", 2}, .key_sep = {": ", 2}};
        jval ind = arg(a, 0, "indent", NONE);
        if (ind.t != V_NONE && ind.t != V_UNDEF) {
            if (!is_intlike(ind)) rerr(c, "tojson: indent must be an integer");
            o.indent = (int)(int_of(ind) < 0 ? 0 : int_of(ind) > 64 ? 64 : int_of(ind));
            o.item_sep = (jstr){",", 1};
        }
        jval sep = arg(a, 99, "separators", NONE);
        if (sep.t == V_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == V_STR && sep.u.l->v[1].t == V_STR) {
            o.item_sep = sep.u.l->v[0].u.s;
            o.key_sep = sep.u.l->v[1].u.s;
        }
        o.sort = truthy(arg(a, 99, "sort_keys", vbool(false)));
        jbuf b = {0};
        to_json(c, &b, v, &o, 0);
        return vstr(buf_str(&b));
    }
    if (IS("first") || IS("last")) {
        jlist *l = iter_list(c, v);
        if (!l->n) return UNDEF;
        return IS("first") ? l->v[0] : l->v[l->n - 1];
    }
    if (IS("join")) {
        jlist *l = iter_list(c, v);
        jval d = arg(a, 0, "d", vcstr(""));
        jval attr = arg(a, 1, "attribute", NONE);
        jstr sep = to_str(c, d);
        jbuf r = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) buf_add(c, &r, sep.p, sep.n);
            jval it = attr.t == V_STR ? sel_attr(c, l->v[i], attr.u.s) : l->v[i];
            jstr s = to_str(c, it);
            buf_add(c, &r, s.p, s.n);
        }
        return vstr(buf_str(&r));
    }
    if (IS("items")) {
        if (v.t == V_UNDEF) return vlist(list_new(c, 0));
        if (v.t != V_DICT) rerr(c, "items: expected a mapping, got %s", type_name(v));
        jargs none = {0};
        return call_value(c, method(c, M_ITEMS, v), &none);
    }
    if (IS("list")) {
        jlist *src = iter_list(c, v), *l = list_new(c, src->n);
        for (size_t i = 0; i < src->n; i++) list_push(c, l, src->v[i]);
        return vlist(l);
    }
    if (IS("reverse")) {
        if (v.t == V_STR) {
            size_t *o;
            size_t n = cp_offsets(c, v.u.s, &o);
            jbuf r = {0};
            for (size_t i = n; i-- > 0;) buf_add(c, &r, v.u.s.p + o[i], o[i + 1] - o[i]);
            return vstr(buf_str(&r));
        }
        jlist *src = iter_list(c, v), *l = list_new(c, src->n);
        for (size_t i = src->n; i-- > 0;) list_push(c, l, src->v[i]);
        return vlist(l);
    }
    if (IS("selectattr") || IS("rejectattr") || IS("select") || IS("reject")) {
        bool attr_mode = IS("selectattr") || IS("rejectattr");
        bool keep_true = IS("selectattr") || IS("select");
        jlist *src = iter_list(c, v), *l = list_new(c, 0);
        size_t ti = attr_mode ? 1 : 0;
        jstr attr = attr_mode ? arg_str(c, a, 0, NULL, "selectattr") : (jstr){0};
        jval test = arg(a, ti, NULL, UNDEF);
        if (test.t != V_UNDEF && test.t != V_STR) rerr(c, "select: test name must be a string");
        jargs targs = {0};
        if (a->npos > ti + 1) {
            targs.pos = a->pos + ti + 1;
            targs.npos = a->npos - ti - 1;
        }
        for (size_t i = 0; i < src->n; i++) {
            jval x = attr_mode ? sel_attr(c, src->v[i], attr) : src->v[i];
            bool r = test.t == V_STR ? run_test(c, test.u.s, x, &targs) : truthy(x);
            if (r == keep_true) list_push(c, l, src->v[i]);
        }
        return vlist(l);
    }
    if (IS("map")) {
        jlist *src = iter_list(c, v), *l = list_new(c, src->n);
        jval attr = arg(a, 99, "attribute", UNDEF);
        if (attr.t == V_STR) {
            jval dflt = arg(a, 99, "default", UNDEF);
            for (size_t i = 0; i < src->n; i++) {
                jval x = sel_attr(c, src->v[i], attr.u.s);
                list_push(c, l, x.t == V_UNDEF && dflt.t != V_UNDEF ? dflt : x);
            }
            return vlist(l);
        }
        jstr fname = arg_str(c, a, 0, NULL, "map");
        jargs fargs = {0};
        if (a->npos > 1) {
            fargs.pos = a->pos + 1;
            fargs.npos = a->npos - 1;
        }
        for (size_t i = 0; i < src->n; i++) list_push(c, l, apply_filter(c, fname, src->v[i], &fargs));
        return vlist(l);
    }
    if (IS("replace")) {
        jstr s = to_str(c, v);
        return vstr(str_replace(c, s, to_str(c, arg(a, 0, "old", UNDEF)), to_str(c, arg(a, 1, "new", UNDEF)),
                                arg_int(c, a, 2, "count", -1, "replace")));
    }
    if (IS("int")) {
        jval d = arg(a, 0, "default", vint(0));
        if (is_intlike(v)) return vint(int_of(v));
        if (v.t == V_FLOAT) {
            if (!(v.u.f > -9.2e18 && v.u.f < 9.2e18)) return d;
            return vint((int64_t)v.u.f);
        }
        if (v.t == V_STR) {
            char tmp[64];
            jstr s = str_strip(v.u.s, true, true, NULL);
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
        jval d = arg(a, 0, "default", vfloat(0));
        if (is_num(v)) return vfloat(num_f(v));
        if (v.t == V_STR) {
            char tmp[64];
            jstr s = str_strip(v.u.s, true, true, NULL);
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
            if (int_of(v) == INT64_MIN) rerr(c, "integer overflow");
            return vint(int_of(v) < 0 ? -int_of(v) : int_of(v));
        }
        if (v.t == V_FLOAT) return vfloat(fabs(v.u.f));
        rerr(c, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (IS("escape") || IS("e")) {
        jstr s = to_str(c, v);
        jbuf r = {0};
        for (size_t i = 0; i < s.n; i++) {
            switch (s.p[i]) {
            case '&': buf_s(c, &r, "&amp;"); break;
            case '<': buf_s(c, &r, "&lt;"); break;
            case '>': buf_s(c, &r, "&gt;"); break;
            case '"': buf_s(c, &r, "&#34;"); break;
            case '\'': buf_s(c, &r, "&#39;"); break;
            default: buf_ch(c, &r, s.p[i]);
            }
        }
        return vstr(buf_str(&r));
    }
    if (IS("indent")) {
        jstr s = to_str(c, v);
        jval w = arg(a, 0, "width", vint(4));
        bool first = truthy(arg(a, 1, "first", vbool(false)));
        bool blank = truthy(arg(a, 2, "blank", vbool(false)));
        jstr pad;
        if (w.t == V_STR) {
            pad = w.u.s;
        } else {
            int64_t k = is_intlike(w) ? int_of(w) : 4;
            if (k < 0) k = 0;
            if (k > 256) rerr(c, "indent: width too large");
            char *p = jj_alloc(c, (size_t)k + 1);
            memset(p, ' ', (size_t)k);
            pad = (jstr){p, (size_t)k};
        }
        jbuf r = {0};
        if (first) buf_add(c, &r, pad.p, pad.n);
        for (size_t i = 0; i < s.n; i++) {
            buf_ch(c, &r, s.p[i]);
            if (s.p[i] == '\n' && i + 1 < s.n && (blank || s.p[i + 1] != '\n')) buf_add(c, &r, pad.p, pad.n);
        }
        return vstr(buf_str(&r));
    }
    if (IS("unique")) {
        jlist *src = iter_list(c, v), *l = list_new(c, 0);
        for (size_t i = 0; i < src->n; i++) {
            bool seen = false;
            for (size_t k = 0; k < l->n && !seen; k++) seen = val_eq(l->v[k], src->v[i], 0);
            if (!seen) list_push(c, l, src->v[i]);
        }
        return vlist(l);
    }
    if (IS("sort") || IS("dictsort")) {
        bool dsort = IS("dictsort");
        if (dsort && v.t != V_DICT) rerr(c, "dictsort: expected a mapping, got %s", type_name(v));
        jlist *src;
        if (dsort) {
            jargs none = {0};
            src = call_value(c, method(c, M_ITEMS, v), &none).u.l;
        } else {
            src = iter_list(c, v);
        }
        bool cs = truthy(arg(a, dsort ? 0 : 1, "case_sensitive", vbool(false)));
        bool rev = truthy(arg(a, dsort ? 2 : 0, "reverse", vbool(false)));
        jval attr = dsort ? UNDEF : arg(a, 2, "attribute", UNDEF);
        int by_value = dsort && str_is(to_str(c, arg(a, 1, "by", vcstr("key"))), "value");
        jval *keys = jj_alloc(c, (src->n + 1) * sizeof *keys);
        for (size_t i = 0; i < src->n; i++) {
            jval k = dsort ? src->v[i].u.l->v[by_value] : src->v[i];
            if (attr.t == V_STR) k = sel_attr(c, k, attr.u.s);
            if (!cs && k.t == V_STR) k = vstr(str_case(c, k.u.s, 1));
            keys[i] = k;
        }
        jlist *l = list_new(c, src->n);
        for (size_t i = 0; i < src->n; i++) list_push(c, l, src->v[i]);
        merge_sort(c, l->v, keys, l->n, rev);
        return vlist(l);
    }
    if (IS("round")) {
        jval prec = arg(a, 0, "precision", vint(0));
        jstr method_ = to_str(c, arg(a, 1, "method", vcstr("common")));
        if (!is_num(v) || !is_intlike(prec)) rerr(c, "round: expected a number");
        double x = num_f(v), m = pow(10.0, (double)int_of(prec));
        double r = str_is(method_, "ceil") ? ceil(x * m) / m : str_is(method_, "floor") ? floor(x * m) / m
                                                                  : nearbyint(x * m) / m; /* half to even, like Python */
        return vfloat(r);
    }
    if (IS("sum") || IS("min") || IS("max")) {
        jlist *src = iter_list(c, v);
        jval attr = arg(a, IS("sum") ? 0 : 99, "attribute", UNDEF);
        jval acc = IS("sum") ? arg(a, 1, "start", vint(0)) : UNDEF;
        for (size_t i = 0; i < src->n; i++) {
            jval x = attr.t == V_STR ? sel_attr(c, src->v[i], attr.u.s) : src->v[i];
            if (IS("sum")) acc = binop(c, OP_ADD, acc, x);
            else if (acc.t == V_UNDEF || (val_cmp(c, x, acc, "<") < 0) == IS("min")) {
                if (acc.t == V_UNDEF || !val_eq(x, acc, 0)) acc = x;
            }
        }
        return acc;
    }
    if (IS("wordcount")) {
        jstr s = to_str(c, v);
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
        jval args_ = {.t = V_LIST, .u.l = list_new(c, a->npos)};
        args_.u.l->tuple = true;
        for (size_t i = 0; i < a->npos; i++) list_push(c, args_.u.l, a->pos[i]);
        return percent_format(c, to_str(c, v), args_);
    }
    rerr(c, "unknown filter '%.*s'", (int)(name.n > 40 ? 40 : name.n), name.p);
#undef IS
}

/* ---- statements ---- */

static void assign(jctx *c, jframe *f, jnode *target, jval v) {
    if (target->k == E_NAME) {
        jj_frame_set(c, f, target->name, v);
    } else if (target->k == E_ATTR) {
        jval ns = eval(c, f, target->a);
        c->line = target->line;
        if (ns.t != V_NS) rerr(c, "cannot assign attribute on non-namespace object");
        dict_set(c, ns.u.d, target->name, v);
    } else { /* tuple unpacking */
        jlist *l = iter_list(c, v);
        if (l->n != target->args.n)
            rerr(c, "cannot unpack %zu values into %zu names", l->n, target->args.n);
        for (size_t i = 0; i < l->n; i++) assign(c, f, target->args.v[i], l->v[i]);
    }
}

static void exec_for(jctx *c, jframe *f, jnode *n) {
    jval it = eval(c, f, n->a);
    c->line = n->line;
    jlist *items = iter_list(c, it);
    if (n->b) { /* loop filter: loop.length counts only the kept items */
        jlist *kept = list_new(c, 0);
        jframe *g = jj_frame(c, f);
        for (size_t i = 0; i < items->n; i++) {
            g->vars.n = 0;
            assign(c, g, n->c, items->v[i]);
            if (truthy(eval(c, g, n->b))) list_push(c, kept, items->v[i]);
        }
        items = kept;
    }
    if (!items->n) { /* the else body gets its own scope, like the loop body */
        int ctl = 0;
        exec_body(c, jj_frame(c, f), &n->orelse, &ctl);
        return;
    }
    jloop *lp = jj_alloc(c, sizeof *lp);
    lp->items = items;
    jframe *g = jj_frame(c, f);
    for (size_t i = 0; i < items->n; i++) {
        if (++c->iters > JJ_MAX_ITERS) {
            c->line = n->line;
            rerr(c, "too many loop iterations (limit %u)", JJ_MAX_ITERS);
        }
        lp->i = i;
        g->vars.n = 0; /* a fresh scope per iteration, as in jinja; reused to bound memory */
        jj_frame_set(c, g, (jstr){"loop", 4}, (jval){.t = V_LOOP, .u.lp = lp});
        assign(c, g, n->c, items->v[i]);
        int ctl = 0;
        exec_body(c, g, &n->body, &ctl);
        if (ctl == 1) break;
    }
}

/* ctl: 0 normal, 1 break, 2 continue (propagated to the enclosing loop) */
static void exec_body(jctx *c, jframe *f, const jnlist *body, int *ctl) {
    for (size_t i = 0; i < body->n && !*ctl; i++) {
        jnode *n = body->v[i];
        if (++c->steps > JJ_MAX_STEPS) rerr(c, "template takes too many steps (limit %llu)", JJ_MAX_STEPS);
        c->line = n->line;
        switch (n->k) {
        case N_TEXT: buf_add(c, c->out, n->name.p, n->name.n); break;
        case N_OUT: /* straight into the output: no temporary string per {{ }} */
            to_str_buf(c, c->out, eval(c, f, n->a), false, 0);
            break;
        case N_IF:
            if (truthy(eval(c, f, n->a))) exec_body(c, f, &n->body, ctl);
            else exec_body(c, f, &n->orelse, ctl);
            break;
        case N_FOR: exec_for(c, f, n); break;
        case N_SET: assign(c, f, n->a, eval(c, f, n->b)); break;
        case N_SETBLOCK: {
            jbuf b = {0}, *saved = c->out;
            int inner = 0;
            c->out = &b;
            exec_body(c, jj_frame(c, f), &n->body, &inner); /* block set: own scope */
            c->out = saved;
            c->line = n->line;
            assign(c, f, n->a, vstr(buf_str(&b)));
            break;
        }
        case N_MACRO: {
            jmacro *m = jj_alloc(c, sizeof *m);
            m->def = n;
            m->scope = f;
            jj_frame_set(c, f, n->name, (jval){.t = V_MACRO, .u.mac = m});
            break;
        }
        case N_BREAK: *ctl = 1; break;
        case N_CONTINUE: *ctl = 2; break;
        case N_BLOCK:
            if (!n->a) {
                exec_body(c, f, &n->body, ctl);
            } else { /* filter block */
                jbuf b = {0}, *saved = c->out;
                c->out = &b;
                exec_body(c, f, &n->body, ctl);
                c->out = saved;
                jargs a = eval_args(c, f, &n->a->args, 0);
                c->line = n->line;
                jstr r = to_str(c, apply_filter(c, n->a->name, vstr(buf_str(&b)), &a));
                buf_add(c, c->out, r.p, r.n);
            }
            break;
        default: rerr(c, "internal error: bad statement node");
        }
    }
}

void jj_exec(jctx *c, jframe *f, const jnlist *body) {
    int ctl = 0;
    exec_body(c, f, body, &ctl);
}
