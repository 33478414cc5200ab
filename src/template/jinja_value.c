/* Chat templates: Jinja values with Python semantics: constructors, dicts and scopes, str(), repr(),
 * json.dumps as Hugging Face's tojson calls it, comparison, string helpers, attribute and item
 * access. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja_rt.h"

void jj_rerr(jctx *c, const char *fmt, ...) {
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    jj_fail(c, PAGODA_ERR_INVALID, "chat template line %d: %s", c->line, buf);
}

/* ---- constructors ---- */

jlist *jj_list_new(jctx *c, size_t cap) {
    jlist *l = jj_alloc(c, sizeof *l);
    if (cap) {
        l->v = jj_alloc(c, cap * sizeof *l->v);
        l->cap = cap;
    }
    return l;
}
void jj_list_push(jctx *c, jlist *l, jval v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jval *nv = jj_alloc(c, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jdict *jj_dict_new(jctx *c) { return jj_alloc(c, sizeof(jdict)); }
jval *jj_dict_find(jdict *d, jstr k) {
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], k)) return &d->v[i];
    return NULL;
}
void jj_dict_set(jctx *c, jdict *d, jstr k, jval v) {
    jval *e = jj_dict_find(d, k);
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
void jj_frame_set(jctx *c, jframe *f, jstr k, jval v) { jj_dict_set(c, &f->vars, k, v); }
jval *jj_frame_get(jframe *f, jstr k) {
    jval *e;
    for (; f; f = f->parent)
        if ((e = jj_dict_find(&f->vars, k))) return e;
    return NULL;
}

jval jj_from_json(jctx *c, const void *jp) {
    const json_t *j = jp;
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jdict *d = jj_dict_new(c);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) jj_dict_set(c, d, jj_strdup_user(c, k, strlen(k)), jj_from_json(c, v));
        return (jval){.t = V_DICT, .u.d = d};
    }
    case JSON_ARRAY: {
        jlist *l = jj_list_new(c, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++) jj_list_push(c, l, jj_from_json(c, json_array_get(j, i)));
        return vlist(l);
    }
    case JSON_STRING: return vstr(jj_strdup_user(c, json_string_value(j), json_string_length(j)));
    case JSON_INTEGER: return vint(json_integer_value(j));
    case JSON_REAL: return vfloat(json_real_value(j));
    case JSON_TRUE: return vbool(true);
    case JSON_FALSE: return vbool(false);
    default: return NONE;
    }
}

/* ---- string building ---- */

void jj_buf_add(jctx *c, jbuf *b, const char *p, size_t n) {
    if (!n) return;
    if (n > JJ_MAX_OUTPUT || b->n + n > JJ_MAX_OUTPUT)
        jj_rerr(c, "output too large (limit %u MiB)", JJ_MAX_OUTPUT >> 20);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n) cap *= 2;
        char *np = jj_alloc_raw(c, cap);
        if (b->n) memcpy(np, b->p, b->n);
        jj_taint_copy(c, np, b->p, b->n);
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    jj_taint_copy(c, b->p + b->n, p, n);
    b->n += n;
}
void jj_taint_from(jctx *c, jbuf *b, size_t from, const char *src) {
    if (b->n > from && jj_tainted(c, src)) jj_taint_set(c, b->p + from, b->n - from);
}
void jj_buf_s(jctx *c, jbuf *b, const char *s) { jj_buf_add(c, b, s, strlen(s)); }
void jj_buf_ch(jctx *c, jbuf *b, char ch) { jj_buf_add(c, b, &ch, 1); }

const char *jj_type_name(jval v) {
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

static void repr_str(jctx *c, jbuf *b, jstr s) {
    bool has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jj_buf_ch(c, b, q);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        char e[8];
        size_t from = b->n;
        if (ch == (unsigned char)q || ch == '\\') {
            jj_buf_ch(c, b, '\\');
            jj_buf_ch(c, b, (char)ch);
        } else if (ch == '\n') {
            jj_buf_s(c, b, "\\n");
        } else if (ch == '\r') {
            jj_buf_s(c, b, "\\r");
        } else if (ch == '\t') {
            jj_buf_s(c, b, "\\t");
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(e, sizeof e, "\\x%02x", ch);
            jj_buf_s(c, b, e);
        } else {
            jj_buf_ch(c, b, (char)ch);
        }
        jj_taint_from(c, b, from, s.p + i);
    }
    jj_buf_ch(c, b, q);
}

void jj_to_str_buf(jctx *c, jbuf *b, jval v, bool repr, int depth) {
    char tmp[64];
    if (depth > 64) jj_rerr(c, "value nested too deeply to print");
    switch (v.t) {
    case V_UNDEF: break;
    case V_NONE: jj_buf_s(c, b, "None"); break;
    case V_BOOL: jj_buf_s(c, b, v.u.b ? "True" : "False"); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); jj_buf_s(c, b, tmp); break;
    case V_FLOAT: float_repr(v.u.f, tmp, sizeof tmp, false); jj_buf_s(c, b, tmp); break;
    case V_STR:
        if (repr) repr_str(c, b, v.u.s);
        else jj_buf_add(c, b, v.u.s.p, v.u.s.n);
        break;
    case V_LIST:
        jj_buf_ch(c, b, v.u.l->tuple ? '(' : '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jj_buf_s(c, b, ", ");
            jj_to_str_buf(c, b, v.u.l->v[i], true, depth + 1);
        }
        if (v.u.l->tuple && v.u.l->n == 1) jj_buf_ch(c, b, ',');
        jj_buf_ch(c, b, v.u.l->tuple ? ')' : ']');
        break;
    case V_DICT:
    case V_NS:
        if (v.t == V_NS) jj_buf_s(c, b, "<Namespace ");
        jj_buf_ch(c, b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) jj_buf_s(c, b, ", ");
            repr_str(c, b, v.u.d->k[i]);
            jj_buf_s(c, b, ": ");
            jj_to_str_buf(c, b, v.u.d->v[i], true, depth + 1);
        }
        jj_buf_ch(c, b, '}');
        if (v.t == V_NS) jj_buf_ch(c, b, '>');
        break;
    case V_LOOP:
        snprintf(tmp, sizeof tmp, "<LoopContext %zu/%zu>", v.u.lp->i + 1, v.u.lp->items->n);
        jj_buf_s(c, b, tmp);
        break;
    default: jj_buf_s(c, b, "<function>"); break;
    }
}

jstr jj_to_str(jctx *c, jval v) {
    if (v.t == V_STR) return v.u.s;
    if (v.t == V_UNDEF) return (jstr){"", 0};
    jbuf b = {0};
    jj_to_str_buf(c, &b, v, false, 0);
    return buf_str(&b);
}

static void json_str(jctx *c, jbuf *b, jstr s) {
    jj_buf_ch(c, b, '"');
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
            jj_buf_add(c, b, s.p + run, i - run);
            size_t from = b->n;
            jj_buf_s(c, b, e);
            jj_taint_from(c, b, from, s.p + i);
            run = i + 1;
        }
    }
    jj_buf_add(c, b, s.p + run, s.n - run);
    jj_buf_ch(c, b, '"');
}

static int cmp_str(const void *a, const void *b) {
    const jstr *x = *(const jstr *const *)a, *y = *(const jstr *const *)b;
    size_t n = x->n < y->n ? x->n : y->n;
    int r = n ? memcmp(x->p, y->p, n) : 0;
    return r ? r : (x->n > y->n) - (x->n < y->n);
}

static void json_nl(jctx *c, jbuf *b, const jsonopt *o, int level) {
    jj_buf_ch(c, b, '\n');
    for (int i = 0; i < o->indent * level; i++) jj_buf_ch(c, b, ' ');
}

void jj_to_json(jctx *c, jbuf *b, jval v, const jsonopt *o, int level) {
    char tmp[64];
    if (level > 64) jj_rerr(c, "tojson: value nested too deeply");
    switch (v.t) {
    case V_NONE: jj_buf_s(c, b, "null"); break;
    case V_BOOL: jj_buf_s(c, b, v.u.b ? "true" : "false"); break;
    case V_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); jj_buf_s(c, b, tmp); break;
    case V_FLOAT: float_repr(v.u.f, tmp, sizeof tmp, true); jj_buf_s(c, b, tmp); break;
    case V_STR: json_str(c, b, v.u.s); break;
    case V_LIST:
        if (!v.u.l->n) {
            jj_buf_s(c, b, "[]");
            break;
        }
        jj_buf_ch(c, b, '[');
        for (size_t i = 0; i < v.u.l->n; i++) {
            if (i) jj_buf_add(c, b, o->item_sep.p, o->item_sep.n);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            jj_to_json(c, b, v.u.l->v[i], o, level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        jj_buf_ch(c, b, ']');
        break;
    case V_DICT: {
        jdict *d = v.u.d;
        if (!d->n) {
            jj_buf_s(c, b, "{}");
            break;
        }
        const jstr **keys = jj_alloc(c, d->n * sizeof *keys);
        for (size_t i = 0; i < d->n; i++) keys[i] = &d->k[i];
        if (o->sort) qsort(keys, d->n, sizeof *keys, cmp_str);
        jj_buf_ch(c, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jj_buf_add(c, b, o->item_sep.p, o->item_sep.n);
            if (o->indent >= 0) json_nl(c, b, o, level + 1);
            json_str(c, b, *keys[i]);
            jj_buf_add(c, b, o->key_sep.p, o->key_sep.n);
            jj_to_json(c, b, *jj_dict_find(d, *keys[i]), o, level + 1);
        }
        if (o->indent >= 0) json_nl(c, b, o, level);
        jj_buf_ch(c, b, '}');
        break;
    }
    default: jj_rerr(c, "Object of type %s is not JSON serializable", jj_type_name(v));
    }
}

/* ---- Python semantics ---- */

bool jj_truthy(jval v) {
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

bool jj_val_eq(jval a, jval b, int depth) {
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
            if (!jj_val_eq(a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
        return true;
    case V_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jval *o = jj_dict_find(b.u.d, a.u.d->k[i]);
            if (!o || !jj_val_eq(a.u.d->v[i], *o, depth + 1)) return false;
        }
        return true;
    case V_NS: return a.u.d == b.u.d;
    case V_LOOP: return a.u.lp == b.u.lp;
    case V_MACRO: return a.u.mac == b.u.mac;
    default: return false;
    }
}

static int val_cmp_d(jctx *c, jval a, jval b, const char *op, int depth);
int jj_val_cmp(jctx *c, jval a, jval b, const char *op) { return val_cmp_d(c, a, b, op, 0); }

static int val_cmp_d(jctx *c, jval a, jval b, const char *op, int depth) {
    if (depth > 64) jj_rerr(c, "values nested too deeply to compare");
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
            if (jj_val_eq(a.u.l->v[i], b.u.l->v[i], 0)) continue;
            return val_cmp_d(c, a.u.l->v[i], b.u.l->v[i], op, depth + 1);
        }
        return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
    }
    jj_rerr(c, "'%s' not supported between instances of '%s' and '%s'", op, jj_type_name(a), jj_type_name(b));
}

/* UTF-8 code point starts of s; returns count, fills offs[0..count] (offs[count] = s.n). */
size_t jj_cp_offsets(jctx *c, jstr s, size_t **offs) {
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
size_t jj_cp_len(jstr s) {
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) n += ((unsigned char)s.p[i] & 0xC0) != 0x80;
    return n;
}

/* Iterating a value: lists as is, dicts by key, strings by code point. */
jlist *jj_iter_list(jctx *c, jval v) {
    switch (v.t) {
    case V_UNDEF: return jj_list_new(c, 0);
    case V_LIST: return v.u.l;
    case V_DICT: {
        jlist *l = jj_list_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jj_list_push(c, l, vstr(v.u.d->k[i]));
        return l;
    }
    case V_STR: {
        size_t *o;
        size_t n = jj_cp_offsets(c, v.u.s, &o);
        jlist *l = jj_list_new(c, n);
        for (size_t i = 0; i < n; i++) jj_list_push(c, l, vstr((jstr){v.u.s.p + o[i], o[i + 1] - o[i]}));
        return l;
    }
    default: jj_rerr(c, "'%s' object is not iterable", jj_type_name(v));
    }
}

static bool py_space(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v' ||
           (ch >= 0x1c && ch <= 0x1f);
}

jstr jj_str_strip(jstr s, bool left, bool right, const jstr *chars) {
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

const char *jj_memfind(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn == 0) return h;
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}

jstr jj_str_replace(jctx *c, jstr s, jstr old, jstr nw, int64_t count) {
    jbuf b = {0};
    size_t i = 0;
    int64_t done = 0;
    if (old.n == 0) { /* Python inserts between every code point */
        size_t *o;
        size_t n = jj_cp_offsets(c, s, &o);
        for (size_t k = 0; k <= n; k++) {
            if (count < 0 || done < count) {
                jj_buf_add(c, &b, nw.p, nw.n);
                done++;
            }
            if (k < n) jj_buf_add(c, &b, s.p + o[k], o[k + 1] - o[k]);
        }
        return buf_str(&b);
    }
    while (i < s.n) {
        const char *f = (count < 0 || done < count) ? jj_memfind(s.p + i, s.n - i, old.p, old.n) : NULL;
        if (!f) break;
        jj_buf_add(c, &b, s.p + i, (size_t)(f - (s.p + i)));
        jj_buf_add(c, &b, nw.p, nw.n);
        i = (size_t)(f - s.p) + old.n;
        done++;
    }
    jj_buf_add(c, &b, s.p + i, s.n - i);
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
jstr jj_str_case(jctx *c, jstr s, int mode) {
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
    jj_taint_copy(c, d, s.p, s.n); /* the same length, byte for byte */
    return (jstr){d, s.n};
}

jval jj_str_split(jctx *c, jstr s, const jval *sep, int64_t maxsplit) {
    jlist *l = jj_list_new(c, 0);
    if (!sep || sep->t == V_NONE) {
        size_t i = 0;
        int64_t n = 0;
        for (;;) {
            while (i < s.n && py_space(s.p[i])) i++;
            if (i >= s.n) break;
            if (maxsplit >= 0 && n >= maxsplit) {
                size_t e = s.n;
                while (e > i && py_space(s.p[e - 1])) e--;
                jj_list_push(c, l, vstr((jstr){s.p + i, e - i}));
                break;
            }
            size_t st = i;
            while (i < s.n && !py_space(s.p[i])) i++;
            jj_list_push(c, l, vstr((jstr){s.p + st, i - st}));
            n++;
        }
        return vlist(l);
    }
    if (sep->t != V_STR) jj_rerr(c, "split: separator must be a string");
    jstr d = sep->u.s;
    if (!d.n) jj_rerr(c, "split: empty separator");
    size_t i = 0;
    int64_t n = 0;
    for (;;) {
        const char *f = (maxsplit < 0 || n < maxsplit) ? jj_memfind(s.p + i, s.n - i, d.p, d.n) : NULL;
        if (!f) {
            jj_list_push(c, l, vstr((jstr){s.p + i, s.n - i}));
            break;
        }
        jj_list_push(c, l, vstr((jstr){s.p + i, (size_t)(f - (s.p + i))}));
        i = (size_t)(f - s.p) + d.n;
        n++;
    }
    return vlist(l);
}

/* Python slice index normalization. */
size_t jj_slice_idx(jctx *c, size_t n, jval start, jval stop, jval step, int64_t **out) {
    int64_t st = 1;
    if (step.t != V_NONE && step.t != V_UNDEF) {
        if (!is_intlike(step)) jj_rerr(c, "slice indices must be integers");
        st = int_of(step);
        if (st == 0) jj_rerr(c, "slice step cannot be zero");
    }
    int64_t len = (int64_t)n, a, b;
    #define NORM(v, dflt_pos, dflt_neg, res)                                                 \
        do {                                                                               \
            if (v.t == V_NONE || v.t == V_UNDEF) {                                         \
                res = st > 0 ? dflt_pos : dflt_neg;                                        \
            } else {                                                                       \
                if (!is_intlike(v)) jj_rerr(c, "slice indices must be integers");             \
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

jval jj_method(jctx *c, int fn, jval self) {
    jval *s = jj_alloc(c, sizeof *s);
    *s = self;
    return (jval){.t = V_METHOD, .u.m = {fn, s}};
}

jval jj_getitem_v(jctx *c, jval obj, jval key) {
    switch (obj.t) {
    case V_UNDEF:
        jj_rerr(c, "'%.*s' is undefined", (int)(obj.u.s.n > 60 ? 60 : obj.u.s.n), obj.u.s.p ? obj.u.s.p : "");
    case V_DICT:
    case V_NS:
        if (key.t == V_STR) {
            jval *v = jj_dict_find(obj.u.d, key.u.s);
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
            int64_t n = (int64_t)jj_cp_offsets(c, obj.u.s, &o), i = int_of(key);
            if (i < 0) i += n;
            if (i >= 0 && i < n) return vstr((jstr){obj.u.s.p + o[i], o[i + 1] - o[i]});
            return UNDEF;
        }
        break;
    default: break;
    }
    if (key.t == V_STR) return jj_getattr_v(c, obj, key.u.s);
    return UNDEF;
}

jval jj_getattr_v(jctx *c, jval obj, jstr name) {
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
        jj_rerr(c, "'%.*s' is undefined", (int)(obj.u.s.n > 60 ? 60 : obj.u.s.n), obj.u.s.p ? obj.u.s.p : "");
    case V_DICT:
        for (size_t i = 0; i < sizeof dict_m / sizeof dict_m[0]; i++)
            if (str_is(name, dict_m[i].name)) return jj_method(c, dict_m[i].fn, obj);
        /* fallthrough */
    case V_NS: {
        jval *v = jj_dict_find(obj.u.d, name);
        if (v) return *v;
        break;
    }
    case V_STR:
        for (size_t i = 0; i < sizeof str_m / sizeof str_m[0]; i++)
            if (str_is(name, str_m[i].name)) return jj_method(c, str_m[i].fn, obj);
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
        if (str_is(name, "cycle")) return jj_method(c, M_CYCLE, obj);
        break;
    }
    default: break;
    }
    return (jval){.t = V_UNDEF, .u.s = name};
}
