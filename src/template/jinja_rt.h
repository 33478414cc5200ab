/* Private to the Jinja runtime: what jinja_value.c, jinja_eval.c and jinja_builtins.c share. */
#ifndef PG_TEMPLATE_JINJA_RT_H
#define PG_TEMPLATE_JINJA_RT_H

#include <string.h>

#include "template/jinja.h"

/* globals and bound methods (V_FUNC / V_METHOD ids) */
enum {
    F_RANGE, F_NAMESPACE, F_DICT, F_RAISE, F_STRFTIME,
    /* bound methods */
    M_STARTSWITH, M_ENDSWITH, M_SPLIT, M_STRIP, M_LSTRIP, M_RSTRIP, M_REPLACE, M_UPPER, M_LOWER,
    M_TITLE, M_CAPITALIZE, M_FIND, M_COUNT, M_JOIN, M_SPLITLINES, M_FORMAT,
    M_GET, M_ITEMS, M_KEYS, M_VALUES, M_CYCLE
};

static const jval UNDEF = {.t = V_UNDEF};
static const jval NONE = {.t = V_NONE};

/* Evaluated call arguments: positional, then keyword. */
typedef struct {
    jval *pos;
    size_t npos;
    jstr *kwn;
    jval *kwv;
    size_t nkw;
} jargs;

/* json.dumps(v, ensure_ascii=False, indent=indent, separators=..., sort_keys=...) */
typedef struct { int indent; jstr item_sep, key_sep; bool sort; } jsonopt;

/* A runtime error naming the template line. */
_Noreturn void jj_rerr(jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* constructors and small helpers */
static inline jval vbool(bool b) { return (jval){.t = V_BOOL, .u.b = b}; }
static inline jval vint(int64_t i) { return (jval){.t = V_INT, .u.i = i}; }
static inline jval vfloat(double f) { return (jval){.t = V_FLOAT, .u.f = f}; }
static inline jval vstr(jstr s) { return (jval){.t = V_STR, .u.s = s}; }
static inline jval vcstr(const char *s) { return vstr((jstr){s, strlen(s)}); }
static inline jval vlist(jlist *l) { return (jval){.t = V_LIST, .u.l = l}; }
static inline bool str_eq(jstr a, jstr b) { return a.n == b.n && (a.n == 0 || !memcmp(a.p, b.p, a.n)); }
static inline bool str_is(jstr a, const char *b) { return str_eq(a, (jstr){b, strlen(b)}); }
static inline jstr buf_str(jbuf *b) { return (jstr){b->p ? b->p : "", b->n}; }
static inline bool is_num(jval v) { return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL; }
static inline double num_f(jval v) {
    return v.t == V_FLOAT ? v.u.f : v.t == V_BOOL ? (double)v.u.b : (double)v.u.i;
}
static inline bool is_intlike(jval v) { return v.t == V_INT || v.t == V_BOOL; }
static inline int64_t int_of(jval v) { return v.t == V_BOOL ? (int64_t)v.u.b : v.u.i; }

/* values, strings, comparison, access (jinja_value.c) */
jlist *jj_list_new(jctx *c, size_t cap);
void jj_list_push(jctx *c, jlist *l, jval v);
jdict *jj_dict_new(jctx *c);
jval *jj_dict_find(jdict *d, jstr k);
void jj_dict_set(jctx *c, jdict *d, jstr k, jval v);
jval *jj_frame_get(jframe *f, jstr k);
void jj_buf_add(jctx *c, jbuf *b, const char *p, size_t n);
void jj_buf_s(jctx *c, jbuf *b, const char *s);
void jj_buf_ch(jctx *c, jbuf *b, char ch);
/* Marks b's bytes from `from` on as user data if *src (the byte they were derived from) is:
 * for escapes and other text written in place of a byte of a string. */
void jj_taint_from(jctx *c, jbuf *b, size_t from, const char *src);
const char *jj_type_name(jval v);
void jj_to_str_buf(jctx *c, jbuf *b, jval v, bool repr, int depth);
jstr jj_to_str(jctx *c, jval v);
void jj_to_json(jctx *c, jbuf *b, jval v, const jsonopt *o, int level);
bool jj_truthy(jval v);
bool jj_val_eq(jval a, jval b, int depth);
int jj_val_cmp(jctx *c, jval a, jval b, const char *op);
size_t jj_cp_offsets(jctx *c, jstr s, size_t **offs);
size_t jj_cp_len(jstr s);
jlist *jj_iter_list(jctx *c, jval v);
jstr jj_str_strip(jstr s, bool left, bool right, const jstr *chars);
const char *jj_memfind(const char *h, size_t hn, const char *nd, size_t nn);
jstr jj_str_replace(jctx *c, jstr s, jstr old, jstr nw, int64_t count);
jstr jj_str_case(jctx *c, jstr s, int mode);
jval jj_str_split(jctx *c, jstr s, const jval *sep, int64_t maxsplit);
size_t jj_slice_idx(jctx *c, size_t n, jval start, jval stop, jval step, int64_t **out);
jval jj_method(jctx *c, int fn, jval self);
jval jj_getitem_v(jctx *c, jval obj, jval key);
jval jj_getattr_v(jctx *c, jval obj, jstr name);

/* evaluation (jinja_eval.c) */
jval jj_arg(const jargs *a, size_t i, const char *name, jval dflt);
jstr jj_arg_str(jctx *c, const jargs *a, size_t i, const char *name, const char *what);
int64_t jj_arg_int(jctx *c, const jargs *a, size_t i, const char *name, int64_t dflt, const char *what);
jval jj_render_macro(jctx *c, jmacro *m, const jargs *a);
jval jj_percent_format(jctx *c, jstr f, jval args);
jval jj_binop(jctx *c, int op, jval a, jval b);
bool jj_contains(jctx *c, jval hay, jval needle);

/* globals, methods, tests, filters (jinja_builtins.c) */
jval jj_call_value(jctx *c, jval fn, const jargs *a);
bool jj_run_test(jctx *c, jstr name, jval v, const jargs *a);
jval jj_apply_filter(jctx *c, jstr name, jval v, const jargs *a);

#endif
