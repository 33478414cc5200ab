/* Chat templates: evaluation of the parsed Jinja AST (expressions, operators, macros and
 * statements). Filters, tests, methods and globals are in jinja_builtins.c. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja_rt.h"

/* ---- evaluation ---- */

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
jval jj_arg(const jargs *a, size_t i, const char *name, jval dflt) {
    if (i < a->npos) return a->pos[i];
    for (size_t k = 0; name && k < a->nkw; k++)
        if (str_is(a->kwn[k], name)) return a->kwv[k];
    return dflt;
}

jstr jj_arg_str(jctx *c, const jargs *a, size_t i, const char *name, const char *what) {
    jval v = jj_arg(a, i, name, UNDEF);
    if (v.t != V_STR) jj_rerr(c, "%s: expected a string argument, got %s", what, jj_type_name(v));
    return v.u.s;
}

int64_t jj_arg_int(jctx *c, const jargs *a, size_t i, const char *name, int64_t dflt, const char *what) {
    jval v = jj_arg(a, i, name, UNDEF);
    if (v.t == V_UNDEF || v.t == V_NONE) return dflt;
    if (!is_intlike(v)) jj_rerr(c, "%s: expected an integer argument, got %s", what, jj_type_name(v));
    return int_of(v);
}

static void exec_body(jctx *c, jframe *f, const jnlist *body, int *ctl);

jval jj_render_macro(jctx *c, jmacro *m, const jargs *a) {
    if (c->call_depth >= JJ_MAX_CALL_DEPTH) jj_rerr(c, "macro calls nested too deeply");
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
    jlist *va = jj_list_new(c, 0);
    va->tuple = true;
    for (size_t i = def->args.n; i < a->npos; i++) jj_list_push(c, va, a->pos[i]);
    jj_frame_set(c, f, (jstr){"varargs", 7}, vlist(va));
    jdict *kw = jj_dict_new(c);
    for (size_t k = 0; k < a->nkw; k++) {
        bool known = false;
        for (size_t i = 0; i < def->args.n && !known; i++) known = str_eq(def->args.v[i]->name, a->kwn[k]);
        if (!known) jj_dict_set(c, kw, a->kwn[k], a->kwv[k]);
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
jval jj_percent_format(jctx *c, jstr f, jval args) {
    jlist one = {&args, 1, 1, false}, *l = args.t == V_LIST && args.u.l->tuple ? args.u.l : &one;
    size_t k = 0;
    jbuf r = {0};
    for (size_t i = 0; i < f.n; i++) {
        if (f.p[i] != '%') {
            jj_buf_add(c, &r, f.p + i, 1); /* keeps the byte's user-data mark */
            continue;
        }
        char conv = i + 1 < f.n ? f.p[++i] : 0;
        if (conv == '%') {
            jj_buf_add(c, &r, f.p + i, 1);
            continue;
        }
        if (conv != 's' && conv != 'r' && conv != 'd' && conv != 'i')
            jj_rerr(c, "unsupported format character '%c'", conv ? conv : '?');
        if (k >= l->n) jj_rerr(c, "not enough arguments for format string");
        jval v = l->v[k++];
        if (conv == 'd' || conv == 'i') {
            if (!is_num(v)) jj_rerr(c, "%%d format: a real number is required, not %s", jj_type_name(v));
            if (v.t == V_FLOAT && !(v.u.f > -9.2e18 && v.u.f < 9.2e18)) jj_rerr(c, "%%d format: number too large");
            v = vint(v.t == V_FLOAT ? (int64_t)v.u.f : int_of(v));
        }
        jj_to_str_buf(c, &r, v, conv == 'r', 0);
    }
    if (k < l->n) jj_rerr(c, "not all arguments converted during string formatting");
    return vstr(buf_str(&r));
}

jval jj_binop(jctx *c, int op, jval a, jval b) {
    static const char *names[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (a.t == V_UNDEF || b.t == V_UNDEF) {
        jval u = a.t == V_UNDEF ? a : b;
        jj_rerr(c, "'%.*s' is undefined", (int)(u.u.s.n > 60 ? 60 : u.u.s.n), u.u.s.p ? u.u.s.p : "");
    }
    if (is_intlike(a) && is_intlike(b)) {
        int64_t x = int_of(a), y = int_of(b), r;
        switch (op) {
        case OP_ADD:
            if (__builtin_add_overflow(x, y, &r)) jj_rerr(c, "integer overflow");
            return vint(r);
        case OP_SUB:
            if (__builtin_sub_overflow(x, y, &r)) jj_rerr(c, "integer overflow");
            return vint(r);
        case OP_MUL:
            if (__builtin_mul_overflow(x, y, &r)) jj_rerr(c, "integer overflow");
            return vint(r);
        case OP_DIV:
            if (!y) jj_rerr(c, "division by zero");
            return vfloat((double)x / (double)y);
        case OP_FDIV:
        case OP_MOD: {
            if (!y) jj_rerr(c, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) jj_rerr(c, "integer overflow");
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
                if (__builtin_mul_overflow(res, x, &res)) jj_rerr(c, "integer overflow");
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
            if (y == 0) jj_rerr(c, "float division by zero");
            return vfloat(x / y);
        case OP_FDIV:
            if (y == 0) jj_rerr(c, "float floor division by zero");
            return vfloat(floor(x / y));
        case OP_MOD: {
            if (y == 0) jj_rerr(c, "float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return vfloat(m);
        }
        case OP_POW: return vfloat(pow(x, y));
        default: break;
        }
    }
    if (op == OP_MOD && a.t == V_STR) return jj_percent_format(c, a.u.s, b);
    if (op == OP_ADD && a.t == V_STR && b.t == V_STR) {
        jbuf r = {0};
        jj_buf_add(c, &r, a.u.s.p, a.u.s.n);
        jj_buf_add(c, &r, b.u.s.p, b.u.s.n);
        return vstr(buf_str(&r));
    }
    if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST) {
        jlist *l = jj_list_new(c, a.u.l->n + b.u.l->n);
        for (size_t i = 0; i < a.u.l->n; i++) jj_list_push(c, l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jj_list_push(c, l, b.u.l->v[i]);
        return vlist(l);
    }
    if (op == OP_MUL && (((a.t == V_STR || a.t == V_LIST) && is_intlike(b)) ||
                         ((b.t == V_STR || b.t == V_LIST) && is_intlike(a)))) {
        jval s = is_intlike(a) ? b : a;
        int64_t k = int_of(is_intlike(a) ? a : b);
        if (k < 0) k = 0;
        size_t unit = s.t == V_STR ? s.u.s.n : s.u.l->n;
        if (unit && (uint64_t)k > JJ_MAX_OUTPUT / unit) jj_rerr(c, "repetition result too large");
        if (s.t == V_STR) {
            jbuf r = {0};
            for (int64_t i = 0; i < k; i++) jj_buf_add(c, &r, s.u.s.p, s.u.s.n);
            return vstr(buf_str(&r));
        }
        jlist *l = jj_list_new(c, unit * (size_t)k);
        for (int64_t i = 0; i < k; i++)
            for (size_t j = 0; j < unit; j++) jj_list_push(c, l, s.u.l->v[j]);
        return vlist(l);
    }
    jj_rerr(c, "unsupported operand type(s) for %s: '%s' and '%s'", op <= OP_POW ? names[op] : "?",
         jj_type_name(a), jj_type_name(b));
}

bool jj_contains(jctx *c, jval hay, jval needle) {
    switch (hay.t) {
    case V_STR:
        if (needle.t != V_STR) jj_rerr(c, "'in <string>' requires string as left operand, not %s", jj_type_name(needle));
        return jj_memfind(hay.u.s.p, hay.u.s.n, needle.u.s.p, needle.u.s.n) != NULL;
    case V_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (jj_val_eq(hay.u.l->v[i], needle, 0)) return true;
        return false;
    case V_DICT:
        return needle.t == V_STR && jj_dict_find(hay.u.d, needle.u.s) != NULL;
    case V_UNDEF: return false;
    default: jj_rerr(c, "argument of type '%s' is not iterable", jj_type_name(hay));
    }
}

static jval eval(jctx *c, jframe *f, jnode *n) {
    if (++c->steps > JJ_MAX_STEPS) jj_rerr(c, "template takes too many steps (limit %llu)", JJ_MAX_STEPS);
    c->line = n->line;
    switch (n->k) {
    case E_LIT: return n->lit;
    case E_NAME: {
        jval *v = jj_frame_get(f, n->name);
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
        return jj_getattr_v(c, o, n->name);
    }
    case E_ITEM: {
        jval o = eval(c, f, n->a), k = eval(c, f, n->b);
        c->line = n->line;
        return jj_getitem_v(c, o, k);
    }
    case E_SLICE: {
        jval o = eval(c, f, n->a);
        jval a = n->b ? eval(c, f, n->b) : NONE, b = n->c ? eval(c, f, n->c) : NONE;
        jval s = n->d ? eval(c, f, n->d) : NONE;
        c->line = n->line;
        int64_t *idx;
        if (o.t == V_LIST) {
            size_t cnt = jj_slice_idx(c, o.u.l->n, a, b, s, &idx);
            jlist *l = jj_list_new(c, cnt);
            for (size_t i = 0; i < cnt; i++) jj_list_push(c, l, o.u.l->v[idx[i]]);
            return vlist(l);
        }
        if (o.t == V_STR) {
            size_t *off;
            size_t len = jj_cp_offsets(c, o.u.s, &off);
            size_t cnt = jj_slice_idx(c, len, a, b, s, &idx);
            jbuf r = {0};
            for (size_t i = 0; i < cnt; i++) jj_buf_add(c, &r, o.u.s.p + off[idx[i]], off[idx[i] + 1] - off[idx[i]]);
            return vstr(buf_str(&r));
        }
        /* jinja applies slices directly in Python, so unlike [i] they fail loudly */
        if (o.t == V_UNDEF)
            jj_rerr(c, "'%.*s' is undefined", (int)(o.u.s.n > 60 ? 60 : o.u.s.n), o.u.s.p ? o.u.s.p : "");
        jj_rerr(c, "'%s' object is not subscriptable", jj_type_name(o));
    }
    case E_CALL: {
        jval fn = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        return jj_call_value(c, fn, &a);
    }
    case E_FILTER: {
        jval v = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        return jj_apply_filter(c, n->name, v, &a);
    }
    case E_TEST: {
        jval v = eval(c, f, n->a);
        jargs a = eval_args(c, f, &n->args, 0);
        c->line = n->line;
        bool r = jj_run_test(c, n->name, v, &a);
        return vbool(n->op ? !r : r);
    }
    case E_NOT: return vbool(!jj_truthy(eval(c, f, n->a)));
    case E_NEG:
    case E_POS: {
        jval v = eval(c, f, n->a);
        c->line = n->line;
        if (n->k == E_POS && is_num(v)) return v.t == V_BOOL ? vint(v.u.b) : v;
        if (is_intlike(v)) {
            if (int_of(v) == INT64_MIN) jj_rerr(c, "integer overflow");
            return vint(-int_of(v));
        }
        if (v.t == V_FLOAT) return vfloat(-v.u.f);
        jj_rerr(c, "bad operand type for unary %c: '%s'", n->k == E_NEG ? '-' : '+', jj_type_name(v));
    }
    case E_BIN: {
        jval a = eval(c, f, n->a), b = eval(c, f, n->b);
        c->line = n->line;
        switch (n->op) {
        case OP_EQ: return vbool(jj_val_eq(a, b, 0));
        case OP_NE: return vbool(!jj_val_eq(a, b, 0));
        case OP_LT: return vbool(jj_val_cmp(c, a, b, "<") < 0);
        case OP_LE: return vbool(jj_val_cmp(c, a, b, "<=") <= 0);
        case OP_GT: return vbool(jj_val_cmp(c, a, b, ">") > 0);
        case OP_GE: return vbool(jj_val_cmp(c, a, b, ">=") >= 0);
        case OP_IN: return vbool(jj_contains(c, b, a));
        case OP_NOTIN: return vbool(!jj_contains(c, b, a));
        default: return jj_binop(c, n->op, a, b);
        }
    }
    case E_AND: {
        jval a = eval(c, f, n->a);
        return jj_truthy(a) ? eval(c, f, n->b) : a;
    }
    case E_OR: {
        jval a = eval(c, f, n->a);
        return jj_truthy(a) ? a : eval(c, f, n->b);
    }
    case E_COND:
        if (jj_truthy(eval(c, f, n->a))) return eval(c, f, n->b);
        return n->c ? eval(c, f, n->c) : UNDEF;
    case E_CONCAT: {
        jval a = eval(c, f, n->a), b = eval(c, f, n->b);
        jstr x = jj_to_str(c, a), y = jj_to_str(c, b);
        jbuf r = {0};
        jj_buf_add(c, &r, x.p, x.n);
        jj_buf_add(c, &r, y.p, y.n);
        return vstr(buf_str(&r));
    }
    case E_LIST: {
        jlist *l = jj_list_new(c, n->args.n);
        l->tuple = n->op == 1;
        for (size_t i = 0; i < n->args.n; i++) jj_list_push(c, l, eval(c, f, n->args.v[i]));
        return vlist(l);
    }
    case E_DICT: {
        jdict *d = jj_dict_new(c);
        for (size_t i = 0; i + 1 < n->args.n; i += 2) {
            jval k = eval(c, f, n->args.v[i]), v = eval(c, f, n->args.v[i + 1]);
            if (k.t != V_STR) {
                c->line = n->line;
                jj_rerr(c, "only string dict keys are supported");
            }
            jj_dict_set(c, d, k.u.s, v);
        }
        return (jval){.t = V_DICT, .u.d = d};
    }
    default: jj_rerr(c, "internal error: bad expression node");
    }
}

/* ---- statements ---- */

static void assign(jctx *c, jframe *f, jnode *target, jval v) {
    if (target->k == E_NAME) {
        jj_frame_set(c, f, target->name, v);
    } else if (target->k == E_ATTR) {
        jval ns = eval(c, f, target->a);
        c->line = target->line;
        if (ns.t != V_NS) jj_rerr(c, "cannot assign attribute on non-namespace object");
        jj_dict_set(c, ns.u.d, target->name, v);
    } else { /* tuple unpacking */
        jlist *l = jj_iter_list(c, v);
        if (l->n != target->args.n)
            jj_rerr(c, "cannot unpack %zu values into %zu names", l->n, target->args.n);
        for (size_t i = 0; i < l->n; i++) assign(c, f, target->args.v[i], l->v[i]);
    }
}

static void exec_for(jctx *c, jframe *f, jnode *n) {
    jval it = eval(c, f, n->a);
    c->line = n->line;
    jlist *items = jj_iter_list(c, it);
    if (n->b) { /* loop filter: loop.length counts only the kept items */
        jlist *kept = jj_list_new(c, 0);
        jframe *g = jj_frame(c, f);
        for (size_t i = 0; i < items->n; i++) {
            g->vars.n = 0;
            assign(c, g, n->c, items->v[i]);
            if (jj_truthy(eval(c, g, n->b))) jj_list_push(c, kept, items->v[i]);
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
            jj_rerr(c, "too many loop iterations (limit %u)", JJ_MAX_ITERS);
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
        if (++c->steps > JJ_MAX_STEPS) jj_rerr(c, "template takes too many steps (limit %llu)", JJ_MAX_STEPS);
        c->line = n->line;
        switch (n->k) {
        case N_TEXT: jj_buf_add(c, c->out, n->name.p, n->name.n); break;
        case N_OUT: /* straight into the output: no temporary string per {{ }} */
            jj_to_str_buf(c, c->out, eval(c, f, n->a), false, 0);
            break;
        case N_IF:
            if (jj_truthy(eval(c, f, n->a))) exec_body(c, f, &n->body, ctl);
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
                jstr r = jj_to_str(c, jj_apply_filter(c, n->a->name, vstr(buf_str(&b)), &a));
                jj_buf_add(c, c->out, r.p, r.n);
            }
            break;
        default: jj_rerr(c, "internal error: bad statement node");
        }
    }
}

void jj_exec(jctx *c, jframe *f, const jnlist *body) {
    int ctl = 0;
    exec_body(c, f, body, &ctl);
}
