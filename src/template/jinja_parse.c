/* Chat templates: the Jinja lexer and parser. Lexing follows jinja2's with trim_blocks=True,
 * lstrip_blocks=True, keep_trailing_newline=False, which is what Hugging Face apply_chat_template
 * configures. Nodes live in the render's arena; syntax errors longjmp through jj_fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "template/jinja.h"

/* ---- lexer ---- */

typedef enum { T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP,
               T_EOF } jtt;

typedef struct {
    jtt t;
    int line;
    jstr s;       /* text, name, string value, operator */
    int64_t i;
    double f;
} jtok;

typedef struct {
    jctx *c;
    const char *src;
    size_t n, pos;
    int line;
    jtok *t;
    size_t nt, cap;
} jlex;

static jtok *lex_push(jlex *L, jtt t, int line) {
    if (L->nt == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        jtok *nt = jj_alloc(L->c, cap * sizeof *nt);
        if (L->nt) memcpy(nt, L->t, L->nt * sizeof *nt);
        L->t = nt;
        L->cap = cap;
    }
    jtok *k = &L->t[L->nt++];
    memset(k, 0, sizeof *k);
    k->t = t;
    k->line = line;
    return k;
}

static bool is_ws(char ch) {
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v';
}
static bool is_alpha(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}
static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static int count_nl(const char *p, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += p[i] == '\n';
    return k;
}

static void utf8_put(char *d, size_t *n, uint32_t cp) {
    if (cp < 0x80) {
        d[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        d[(*n)++] = (char)(0xC0 | (cp >> 6));
        d[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        d[(*n)++] = (char)(0xE0 | (cp >> 12));
        d[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        d[(*n)++] = (char)(0xF0 | (cp >> 18));
        d[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        d[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        d[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* String literal with Python's unicode-escape rules (what jinja2 applies). */
static void lex_string(jlex *L) {
    const char *s = L->src;
    char q = s[L->pos];
    size_t i = L->pos + 1;
    int line = L->line;
    while (i < L->n && s[i] != q) {
        if (s[i] == '\\' && i + 1 < L->n) i++;
        i++;
    }
    if (i >= L->n) jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: unterminated string", line);
    size_t a = L->pos + 1, b = i;
    char *d = jj_alloc(L->c, b - a + 1);
    size_t n = 0;
    for (size_t k = a; k < b; k++) {
        if (s[k] != '\\' || k + 1 >= b) {
            d[n++] = s[k];
            continue;
        }
        char e = s[++k];
        int hex_len = 0;
        switch (e) {
        case 'n': d[n++] = '\n'; break;
        case 't': d[n++] = '\t'; break;
        case 'r': d[n++] = '\r'; break;
        case '\\': d[n++] = '\\'; break;
        case '\'': d[n++] = '\''; break;
        case '"': d[n++] = '"'; break;
        case 'a': d[n++] = '\a'; break;
        case 'b': d[n++] = '\b'; break;
        case 'f': d[n++] = '\f'; break;
        case 'v': d[n++] = '\v'; break;
        case '\n': break;
        case 'x': hex_len = 2; break;
        case 'u': hex_len = 4; break;
        case 'U': hex_len = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = 0;
                int m = 0;
                while (m < 3 && k < b && s[k] >= '0' && s[k] <= '7') cp = cp * 8 + (uint32_t)(s[k++] - '0'), m++;
                k--;
                utf8_put(d, &n, cp);
            } else {
                d[n++] = '\\';
                d[n++] = e;
            }
        }
        if (hex_len) {
            uint32_t cp = 0;
            if (k + (size_t)hex_len >= b)
                jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: truncated \\%c escape", line, e);
            for (int m = 1; m <= hex_len; m++) {
                int h = hexval(s[k + (size_t)m]);
                if (h < 0) jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: bad \\%c escape", line, e);
                cp = cp * 16 + (uint32_t)h;
            }
            if (cp > 0x10FFFF) jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: bad \\%c escape", line, e);
            k += (size_t)hex_len;
            utf8_put(d, &n, cp);
        }
    }
    jtok *t = lex_push(L, T_STR, line);
    t->s = (jstr){d, n};
    L->line += count_nl(s + L->pos, i + 1 - L->pos);
    L->pos = i + 1;
}

/* Tokens inside {{ }} or {% %} up to the closing delimiter; returns the whitespace control sign
 * of the closing delimiter ('-', '+' or 0). */
static char lex_tag(jlex *L, bool block) {
    const char *s = L->src;
    int depth = 0;
    for (;;) {
        while (L->pos < L->n && is_ws(s[L->pos])) {
            if (s[L->pos] == '\n') L->line++;
            L->pos++;
        }
        if (L->pos >= L->n)
            jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: unexpected end of template inside a tag", L->line);
        size_t p = L->pos, rem = L->n - p;
        const char *end = block ? "%}" : "}}";
        if ((s[p] == '-' || s[p] == '+') && rem >= 3 && !memcmp(s + p + 1, end, 2) && (block || depth == 0)) {
            L->pos += 3;
            return s[p];
        }
        if (rem >= 2 && !memcmp(s + p, end, 2) && (block || depth == 0)) {
            L->pos += 2;
            return 0;
        }
        char ch = s[p];
        if (is_alpha(ch)) {
            size_t e = p;
            while (e < L->n && (is_alpha(s[e]) || is_digit(s[e]))) e++;
            jtok *t = lex_push(L, T_NAME, L->line);
            t->s = (jstr){s + p, e - p};
            L->pos = e;
        } else if (is_digit(ch)) {
            size_t e = p;
            bool flt = false;
            while (e < L->n && (is_digit(s[e]) || s[e] == '_')) e++;
            if (e + 1 < L->n && s[e] == '.' && is_digit(s[e + 1])) {
                flt = true;
                e++;
                while (e < L->n && (is_digit(s[e]) || s[e] == '_')) e++;
            }
            if (e < L->n && (s[e] == 'e' || s[e] == 'E')) {
                size_t f = e + 1;
                if (f < L->n && (s[f] == '+' || s[f] == '-')) f++;
                if (f < L->n && is_digit(s[f])) {
                    flt = true;
                    e = f;
                    while (e < L->n && is_digit(s[e])) e++;
                }
            }
            char buf[64];
            size_t bn = 0;
            for (size_t k = p; k < e && bn < sizeof buf - 1; k++)
                if (s[k] != '_') buf[bn++] = s[k];
            buf[bn] = 0;
            jtok *t = lex_push(L, flt ? T_FLOAT : T_INT, L->line);
            if (flt) {
                t->f = strtod(buf, NULL);
            } else {
                int64_t v = 0;
                for (size_t k = 0; k < bn; k++) {
                    if (v > (INT64_MAX - 9) / 10)
                        jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: integer literal too large", L->line);
                    v = v * 10 + (buf[k] - '0');
                }
                t->i = v;
            }
            L->pos = e;
        } else if (ch == '\'' || ch == '"') {
            lex_string(L);
        } else {
            static const char *two[] = {"//", "**", "==", "!=", "<=", ">="};
            size_t len = 0;
            for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
                if (rem >= 2 && !memcmp(s + p, two[k], 2)) len = 2;
            if (!len) {
                if (!strchr("+-*/%~()[]{},.:|=<>", ch))
                    jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: unexpected character '%c'", L->line, ch);
                len = 1;
                if (ch == '{') depth++;
                if (ch == '}') depth--;
            }
            jtok *t = lex_push(L, T_OP, L->line);
            t->s = (jstr){s + p, len};
            L->pos += len;
        }
    }
}

/* Whitespace in Python's str.strip()/regex \s sense (ASCII part). */
static bool py_space(char ch) { return is_ws(ch) || (ch >= 0x1c && ch <= 0x1f); }

static void lex_all(jlex *L) {
    const char *s = L->src;
    bool line_starting = true;
    while (L->pos < L->n) {
        size_t st = L->pos, tag = L->n;
        for (size_t k = st; k + 1 < L->n; k++)
            if (s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')) {
                tag = k;
                break;
            }
        size_t tn = tag - st;
        char kind = tag < L->n ? s[tag + 1] : 0;
        char sign = tag + 2 < L->n && (s[tag + 2] == '-' || s[tag + 2] == '+') ? s[tag + 2] : 0;
        if (kind && sign == '-') {
            while (tn && py_space(s[st + tn - 1])) tn--;
        } else if (kind && kind != '{' && sign != '+') {
            /* lstrip_blocks: drop the indentation before a block/comment tag that starts a line */
            size_t lp = tn;
            while (lp && s[st + lp - 1] != '\n') lp--;
            if (lp > 0 || line_starting) {
                bool all = lp < tn;
                for (size_t k = lp; k < tn; k++) all = all && py_space(s[st + k]);
                if (all) tn = lp;
            }
        }
        if (tn) {
            jtok *t = lex_push(L, T_TEXT, L->line);
            t->s = (jstr){s + st, tn};
        }
        L->line += count_nl(s + st, tag - st);
        if (!kind) {
            L->pos = L->n;
            break;
        }
        L->pos = tag + 2 + (sign ? 1 : 0);
        char esign;
        if (kind == '#') {
            size_t e = L->pos;
            while (e + 1 < L->n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= L->n)
                jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: unterminated comment", L->line);
            esign = e > L->pos && (s[e - 1] == '-' || s[e - 1] == '+') ? s[e - 1] : 0;
            L->line += count_nl(s + L->pos, e - L->pos);
            L->pos = e + 2;
        } else {
            bool block = kind == '%';
            size_t first = L->nt;
            lex_push(L, block ? T_BBEG : T_VBEG, L->line);
            esign = lex_tag(L, block);
            lex_push(L, block ? T_BEND : T_VEND, L->line);
            /* {% raw %}: everything up to {% endraw %} is text */
            if (block && L->nt - first == 3 && L->t[first + 1].t == T_NAME &&
                L->t[first + 1].s.n == 3 && !memcmp(L->t[first + 1].s.p, "raw", 3)) {
                L->nt = first;
                size_t e = L->pos, body_end = 0, after = 0;
                char bsign = 0;
                for (; e + 1 < L->n; e++) {
                    if (s[e] != '{' || s[e + 1] != '%') continue;
                    size_t k = e + 2;
                    char sg = 0;
                    if (k < L->n && (s[k] == '-' || s[k] == '+')) sg = s[k++];
                    while (k < L->n && is_ws(s[k])) k++;
                    if (k + 6 > L->n || memcmp(s + k, "endraw", 6)) continue;
                    k += 6;
                    while (k < L->n && is_ws(s[k])) k++;
                    char es = 0;
                    if (k < L->n && (s[k] == '-' || s[k] == '+')) es = s[k++];
                    if (k + 2 > L->n || memcmp(s + k, "%}", 2)) continue;
                    body_end = e;
                    after = k + 2;
                    bsign = sg;
                    esign = es;
                    break;
                }
                if (!after)
                    jj_fail(L->c, PAGODA_ERR_FORMAT, "chat template line %d: missing endraw", L->line);
                size_t bs = L->pos, bn = body_end - bs;
                if (bsign == '-')
                    while (bn && py_space(s[bs + bn - 1])) bn--;
                if (bn) {
                    jtok *t = lex_push(L, T_TEXT, L->line);
                    t->s = (jstr){s + bs, bn};
                }
                L->line += count_nl(s + bs, after - bs);
                L->pos = after;
                kind = '%';
            }
        }
        /* what follows the closing delimiter: '-' eats all whitespace, trim_blocks one newline */
        if (esign == '-') {
            while (L->pos < L->n && py_space(s[L->pos])) {
                if (s[L->pos] == '\n') L->line++;
                L->pos++;
            }
        } else if (esign != '+' && kind != '{' && L->pos < L->n && s[L->pos] == '\n') {
            L->line++;
            L->pos++;
        }
        line_starting = L->pos > 0 && s[L->pos - 1] == '\n';
    }
    lex_push(L, T_EOF, L->line);
}

/* ---- parser ---- */

typedef struct {
    jctx *c;
    jtok *t;
    size_t i;
} jps;

static jtok *cur(jps *p) { return &p->t[p->i]; }
static bool tok_is(jtok *t, jtt tt, const char *s) {
    if (t->t != tt) return false;
    if (!s) return true;
    size_t n = strlen(s);
    return t->s.n == n && !memcmp(t->s.p, s, n);
}
static bool at_op(jps *p, const char *s) { return tok_is(cur(p), T_OP, s); }
static bool at_name(jps *p, const char *s) { return tok_is(cur(p), T_NAME, s); }

static const char *tok_desc(jtok *t, char *buf, size_t n) {
    switch (t->t) {
    case T_EOF: return "end of template";
    case T_VEND: return "'}}'";
    case T_BEND: return "'%}'";
    case T_TEXT: return "text";
    case T_STR: return "string";
    case T_INT: case T_FLOAT: return "number";
    default:
        snprintf(buf, n, "'%.*s'", (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p);
        return buf;
    }
}

static _Noreturn void perr(jps *p, const char *what) {
    char b[64];
    jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: %s, got %s", cur(p)->line, what,
            tok_desc(cur(p), b, sizeof b));
}

static void expect_op(jps *p, const char *s) {
    if (!at_op(p, s)) {
        char m[32];
        snprintf(m, sizeof m, "expected '%s'", s);
        perr(p, m);
    }
    p->i++;
}

static void nl_push(jctx *c, jnlist *l, jnode *n) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jnode **v = jj_alloc(c, cap * sizeof *v);
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = n;
}

static int nl_depth(const jnlist *l) {
    int d = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i]->depth > d) d = l->v[i]->depth;
    return d;
}

/* Nodes carry their depth so evaluation recursion stays bounded. */
static jnode *mk(jps *p, jnk k, int line, jnode *a, jnode *b, jnode *c) {
    jnode *n = jj_alloc(p->c, sizeof *n);
    n->k = k;
    n->line = line;
    int d = 0;
    if (a && a->depth > d) d = a->depth;
    if (b && b->depth > d) d = b->depth;
    if (c && c->depth > d) d = c->depth;
    n->depth = d + 1;
    n->a = a;
    n->b = b;
    n->c = c;
    return n;
}
static void fix_depth(jps *p, jnode *n) {
    int d = nl_depth(&n->args);
    int e = nl_depth(&n->body);
    int f = nl_depth(&n->orelse);
    if (e > d) d = e;
    if (f > d) d = f;
    jnode *kids[4] = {n->a, n->b, n->c, n->d};
    for (int i = 0; i < 4; i++)
        if (kids[i] && kids[i]->depth > d) d = kids[i]->depth;
    if (d + 1 > n->depth) n->depth = d + 1;
    if (n->depth > JJ_MAX_NODE_DEPTH)
        jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: template nested too deeply", n->line);
}
static jnode *done(jps *p, jnode *n) {
    fix_depth(p, n);
    return n;
}

static jnode *parse_expr(jps *p);
static jnode *parse_or(jps *p);
static jnode *parse_unary(jps *p, bool with_filter);
static jnode *parse_primary(jps *p);
static jnode *parse_postfix(jps *p, jnode *n);

static void parse_args(jps *p, jnode *n) {
    expect_op(p, "(");
    while (!at_op(p, ")")) {
        if (cur(p)->t == T_NAME && tok_is(&p->t[p->i + 1], T_OP, "=")) {
            jnode *kw = mk(p, E_KW, cur(p)->line, NULL, NULL, NULL);
            kw->name = cur(p)->s;
            p->i += 2;
            kw->a = parse_expr(p);
            nl_push(p->c, &n->args, done(p, kw));
        } else {
            nl_push(p->c, &n->args, parse_expr(p));
        }
        if (!at_op(p, ",")) break;
        p->i++;
    }
    expect_op(p, ")");
    done(p, n);
}

static jnode *parse_primary(jps *p) {
    jtok *t = cur(p);
    int line = t->line;
    jnode *n;
    if (t->t == T_NAME) {
        p->i++;
        n = mk(p, E_LIT, line, NULL, NULL, NULL);
        if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True")) {
            n->lit = (jval){.t = V_BOOL, .u.b = true};
        } else if (tok_is(t, T_NAME, "false") || tok_is(t, T_NAME, "False")) {
            n->lit = (jval){.t = V_BOOL, .u.b = false};
        } else if (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None")) {
            n->lit = (jval){.t = V_NONE};
        } else {
            n->k = E_NAME;
            n->name = t->s;
        }
        return n;
    }
    if (t->t == T_STR) {
        size_t total = 0, k = p->i;
        while (p->t[k].t == T_STR) total += p->t[k++].s.n;
        char *d = jj_alloc(p->c, total + 1);
        size_t off = 0;
        while (cur(p)->t == T_STR) {
            memcpy(d + off, cur(p)->s.p, cur(p)->s.n);
            off += cur(p)->s.n;
            p->i++;
        }
        n = mk(p, E_LIT, line, NULL, NULL, NULL);
        n->lit = (jval){.t = V_STR, .u.s = {d, total}};
        return n;
    }
    if (t->t == T_INT || t->t == T_FLOAT) {
        p->i++;
        n = mk(p, E_LIT, line, NULL, NULL, NULL);
        n->lit = t->t == T_INT ? (jval){.t = V_INT, .u.i = t->i} : (jval){.t = V_FLOAT, .u.f = t->f};
        return n;
    }
    if (at_op(p, "(")) {
        p->i++;
        if (at_op(p, ")")) { /* empty tuple */
            p->i++;
            n = mk(p, E_LIST, line, NULL, NULL, NULL);
            n->op = 1;
            return n;
        }
        jnode *e = parse_expr(p);
        if (at_op(p, ",")) {
            n = mk(p, E_LIST, line, NULL, NULL, NULL);
            n->op = 1;
            nl_push(p->c, &n->args, e);
            while (at_op(p, ",")) {
                p->i++;
                if (at_op(p, ")")) break;
                nl_push(p->c, &n->args, parse_expr(p));
            }
            e = done(p, n);
        }
        expect_op(p, ")");
        return e;
    }
    if (at_op(p, "[")) {
        p->i++;
        n = mk(p, E_LIST, line, NULL, NULL, NULL);
        while (!at_op(p, "]")) {
            nl_push(p->c, &n->args, parse_expr(p));
            if (!at_op(p, ",")) break;
            p->i++;
        }
        expect_op(p, "]");
        return done(p, n);
    }
    if (at_op(p, "{")) {
        p->i++;
        n = mk(p, E_DICT, line, NULL, NULL, NULL);
        while (!at_op(p, "}")) {
            nl_push(p->c, &n->args, parse_expr(p));
            expect_op(p, ":");
            nl_push(p->c, &n->args, parse_expr(p));
            if (!at_op(p, ",")) break;
            p->i++;
        }
        expect_op(p, "}");
        return done(p, n);
    }
    perr(p, "expected an expression");
}

static jnode *parse_subscript_part(jps *p) {
    if (at_op(p, ":") || at_op(p, "]")) return NULL;
    return parse_expr(p);
}

static jnode *parse_postfix(jps *p, jnode *n) {
    for (;;) {
        int line = cur(p)->line;
        if (at_op(p, ".")) {
            p->i++;
            jtok *t = cur(p);
            if (t->t == T_NAME) {
                n = mk(p, E_ATTR, line, n, NULL, NULL);
                n->name = t->s;
            } else if (t->t == T_INT) {
                jnode *k = mk(p, E_LIT, line, NULL, NULL, NULL);
                k->lit = (jval){.t = V_INT, .u.i = t->i};
                n = mk(p, E_ITEM, line, n, k, NULL);
            } else {
                perr(p, "expected an attribute name");
            }
            p->i++;
        } else if (at_op(p, "[")) {
            p->i++;
            jnode *a = parse_subscript_part(p);
            if (at_op(p, ":")) {
                p->i++;
                jnode *b = parse_subscript_part(p), *c = NULL;
                if (at_op(p, ":")) {
                    p->i++;
                    c = parse_subscript_part(p);
                }
                jnode *s = mk(p, E_SLICE, line, n, a, b);
                s->d = c;
                n = done(p, s);
            } else {
                if (!a) perr(p, "expected a subscript");
                n = mk(p, E_ITEM, line, n, a, NULL);
            }
            expect_op(p, "]");
        } else if (at_op(p, "(")) {
            n = mk(p, E_CALL, line, n, NULL, NULL);
            parse_args(p, n);
        } else {
            break;
        }
        done(p, n);
    }
    return n;
}

static jnode *parse_filter_expr(jps *p, jnode *n) {
    for (;;) {
        int line = cur(p)->line;
        if (at_op(p, "|")) {
            p->i++;
            if (cur(p)->t != T_NAME) perr(p, "expected a filter name");
            n = mk(p, E_FILTER, line, n, NULL, NULL);
            n->name = cur(p)->s;
            p->i++;
            if (at_op(p, "(")) parse_args(p, n);
        } else if (at_name(p, "is")) {
            p->i++;
            n = mk(p, E_TEST, line, n, NULL, NULL);
            if (at_name(p, "not")) {
                n->op = 1;
                p->i++;
            }
            if (cur(p)->t != T_NAME) perr(p, "expected a test name");
            n->name = cur(p)->s;
            p->i++;
            jtok *t = cur(p);
            if (at_op(p, "(")) {
                parse_args(p, n);
            } else if ((t->t == T_NAME || t->t == T_STR || t->t == T_INT || t->t == T_FLOAT ||
                        at_op(p, "[") || at_op(p, "{")) &&
                       !at_name(p, "else") && !at_name(p, "or") && !at_name(p, "and") &&
                       !at_name(p, "is") && !at_name(p, "if") && !at_name(p, "in") && !at_name(p, "not")) {
                jnode *arg = parse_postfix(p, parse_primary(p));
                nl_push(p->c, &n->args, arg);
            }
        } else if (at_op(p, "(")) {
            n = mk(p, E_CALL, line, n, NULL, NULL);
            parse_args(p, n);
        } else {
            break;
        }
        done(p, n);
    }
    return n;
}

static void enter(jps *p) {
    /* bounds C recursion on inputs like "((((" or "- - - -" before any node exists */
    if (++p->c->stmt_depth > JJ_MAX_NODE_DEPTH * 2)
        jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: template nested too deeply", cur(p)->line);
}

static jnode *parse_unary(jps *p, bool with_filter) {
    int line = cur(p)->line;
    jnode *n;
    enter(p);
    if (at_op(p, "-")) {
        p->i++;
        n = mk(p, E_NEG, line, parse_unary(p, false), NULL, NULL);
    } else if (at_op(p, "+")) {
        p->i++;
        n = mk(p, E_POS, line, parse_unary(p, false), NULL, NULL);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, done(p, n));
    if (with_filter) n = parse_filter_expr(p, n);
    p->c->stmt_depth--;
    return done(p, n);
}

static jnode *bin(jps *p, int op, int line, jnode *a, jnode *b) {
    jnode *n = mk(p, E_BIN, line, a, b, NULL);
    n->op = op;
    return done(p, n);
}

static jnode *parse_pow(jps *p) {
    jnode *n = parse_unary(p, true);
    while (at_op(p, "**")) {
        int line = cur(p)->line;
        p->i++;
        n = bin(p, OP_POW, line, n, parse_unary(p, true));
    }
    return n;
}

static jnode *parse_math2(jps *p) {
    jnode *n = parse_pow(p);
    for (;;) {
        int line = cur(p)->line, op;
        if (at_op(p, "*")) op = OP_MUL;
        else if (at_op(p, "/")) op = OP_DIV;
        else if (at_op(p, "//")) op = OP_FDIV;
        else if (at_op(p, "%")) op = OP_MOD;
        else return n;
        p->i++;
        n = bin(p, op, line, n, parse_pow(p));
    }
}

static jnode *parse_concat(jps *p) {
    jnode *n = parse_math2(p);
    while (at_op(p, "~")) {
        int line = cur(p)->line;
        p->i++;
        n = done(p, mk(p, E_CONCAT, line, n, parse_math2(p), NULL));
    }
    return n;
}

static jnode *parse_math1(jps *p) {
    jnode *n = parse_concat(p);
    for (;;) {
        int line = cur(p)->line, op;
        if (at_op(p, "+")) op = OP_ADD;
        else if (at_op(p, "-")) op = OP_SUB;
        else return n;
        p->i++;
        n = bin(p, op, line, n, parse_concat(p));
    }
}

static jnode *parse_compare(jps *p) {
    jnode *n = parse_math1(p);
    for (;;) {
        int line = cur(p)->line, op;
        if (at_op(p, "==")) op = OP_EQ;
        else if (at_op(p, "!=")) op = OP_NE;
        else if (at_op(p, "<")) op = OP_LT;
        else if (at_op(p, "<=")) op = OP_LE;
        else if (at_op(p, ">")) op = OP_GT;
        else if (at_op(p, ">=")) op = OP_GE;
        else if (at_name(p, "in")) op = OP_IN;
        else if (at_name(p, "not") && tok_is(&p->t[p->i + 1], T_NAME, "in")) {
            op = OP_NOTIN;
            p->i++;
        } else {
            return n;
        }
        p->i++;
        n = bin(p, op, line, n, parse_math1(p));
    }
}

static jnode *parse_not(jps *p) {
    if (at_name(p, "not")) {
        int line = cur(p)->line;
        p->i++;
        enter(p);
        jnode *n = done(p, mk(p, E_NOT, line, parse_not(p), NULL, NULL));
        p->c->stmt_depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(jps *p) {
    jnode *n = parse_not(p);
    while (at_name(p, "and")) {
        int line = cur(p)->line;
        p->i++;
        n = done(p, mk(p, E_AND, line, n, parse_not(p), NULL));
    }
    return n;
}

static jnode *parse_or(jps *p) {
    jnode *n = parse_and(p);
    while (at_name(p, "or")) {
        int line = cur(p)->line;
        p->i++;
        n = done(p, mk(p, E_OR, line, n, parse_and(p), NULL));
    }
    return n;
}

static jnode *parse_expr(jps *p) {
    enter(p);
    jnode *n = parse_or(p);
    while (at_name(p, "if")) {
        int line = cur(p)->line;
        p->i++;
        jnode *cond = parse_or(p), *other = NULL;
        if (at_name(p, "else")) {
            p->i++;
            other = parse_expr(p);
        }
        n = done(p, mk(p, E_COND, line, cond, n, other));
    }
    p->c->stmt_depth--;
    return n;
}

/* Comma-separated expressions become a list (Python tuple). */
static jnode *parse_tuple(jps *p) {
    int line = cur(p)->line;
    jnode *e = parse_expr(p);
    if (!at_op(p, ",")) return e;
    jnode *n = mk(p, E_LIST, line, NULL, NULL, NULL);
    n->op = 1;
    nl_push(p->c, &n->args, e);
    while (at_op(p, ",")) {
        p->i++;
        if (cur(p)->t == T_BEND || cur(p)->t == T_VEND) break;
        nl_push(p->c, &n->args, parse_expr(p));
    }
    return done(p, n);
}

static void expect_bend(jps *p) {
    if (cur(p)->t != T_BEND) perr(p, "expected '%}'");
    p->i++;
}

static jnode *parse_target(jps *p, bool allow_attr) {
    int line = cur(p)->line;
    bool paren = at_op(p, "(");
    if (paren) p->i++;
    jnode *list = NULL, *first = NULL;
    for (;;) {
        jnode *n;
        if (at_op(p, "(")) { /* nested unpacking: for a, (b, c) in ... */
            enter(p);
            n = parse_target(p, false);
            p->c->stmt_depth--;
        } else {
            if (cur(p)->t != T_NAME) perr(p, "expected a variable name");
            n = mk(p, E_NAME, line, NULL, NULL, NULL);
            n->name = cur(p)->s;
            p->i++;
        }
        if (allow_attr && !list && n->k == E_NAME && at_op(p, ".")) {
            p->i++;
            if (cur(p)->t != T_NAME) perr(p, "expected an attribute name");
            n = mk(p, E_ATTR, line, n, NULL, NULL);
            n->name = cur(p)->s;
            p->i++;
            return n;
        }
        if (!first) {
            first = n;
        } else {
            if (!list) {
                list = mk(p, E_LIST, line, NULL, NULL, NULL);
                nl_push(p->c, &list->args, first);
            }
            nl_push(p->c, &list->args, n);
        }
        if (!at_op(p, ",")) break;
        p->i++;
        if (!list) {
            list = mk(p, E_LIST, line, NULL, NULL, NULL);
            nl_push(p->c, &list->args, first);
        }
        if (paren && at_op(p, ")")) break;
    }
    if (paren) expect_op(p, ")");
    return list ? done(p, list) : first;
}

static jnlist parse_body(jps *p, const char *const *ends, const char *what);

static jnode *parse_stmt(jps *p) {
    int line = cur(p)->line;
    jtok *t = cur(p);
    if (t->t == T_TEXT) {
        p->i++;
        jnode *n = mk(p, N_TEXT, line, NULL, NULL, NULL);
        n->name = t->s;
        return n;
    }
    if (t->t == T_VBEG) {
        p->i++;
        jnode *n = mk(p, N_OUT, line, parse_tuple(p), NULL, NULL);
        if (cur(p)->t != T_VEND) perr(p, "expected '}}'");
        p->i++;
        return done(p, n);
    }
    if (t->t != T_BBEG) perr(p, "unexpected token");
    p->i++;
    t = cur(p);
    line = t->line;
    if (t->t != T_NAME) perr(p, "expected a tag name");
    p->i++;
    if (++p->c->stmt_depth > JJ_MAX_NODE_DEPTH)
        jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: template nested too deeply", line);
    jnode *n;
    if (tok_is(t, T_NAME, "if")) {
        n = mk(p, N_IF, line, parse_tuple(p), NULL, NULL);
        expect_bend(p);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        n->body = parse_body(p, ends, "endif");
        jnode *tail = n;
        jnlist chain = {0};
        for (;;) {
            jtok *e = &p->t[p->i + 1];
            p->i += 2;
            if (tok_is(e, T_NAME, "elif")) {
                jnode *m = mk(p, N_IF, e->line, parse_tuple(p), NULL, NULL);
                expect_bend(p);
                m->body = parse_body(p, ends, "endif");
                nl_push(p->c, &tail->orelse, m);
                nl_push(p->c, &chain, m);
                tail = m;
            } else if (tok_is(e, T_NAME, "else")) {
                expect_bend(p);
                static const char *const ends2[] = {"endif", NULL};
                tail->orelse = parse_body(p, ends2, "endif");
            } else {
                expect_bend(p);
                break;
            }
        }
        /* an elif nests in the previous branch's else: fix depths innermost first */
        for (size_t k = chain.n; k-- > 0;) fix_depth(p, chain.v[k]);
    } else if (tok_is(t, T_NAME, "for")) {
        n = mk(p, N_FOR, line, NULL, NULL, NULL);
        n->c = parse_target(p, false);
        if (!at_name(p, "in")) perr(p, "expected 'in'");
        p->i++;
        n->a = parse_or(p); /* not parse_expr: "for x in xs if cond" is a loop filter */
        if (at_name(p, "if")) {
            p->i++;
            n->b = parse_expr(p);
        }
        if (at_name(p, "recursive")) perr(p, "recursive loops are not supported");
        expect_bend(p);
        static const char *const ends[] = {"else", "endfor", NULL};
        n->body = parse_body(p, ends, "endfor");
        jtok *e = &p->t[p->i + 1];
        p->i += 2;
        expect_bend(p);
        if (tok_is(e, T_NAME, "else")) {
            static const char *const ends2[] = {"endfor", NULL};
            n->orelse = parse_body(p, ends2, "endfor");
            p->i += 2;
            expect_bend(p);
        }
    } else if (tok_is(t, T_NAME, "set")) {
        jnode *target = parse_target(p, true);
        if (at_op(p, "=")) {
            p->i++;
            n = mk(p, N_SET, line, target, parse_tuple(p), NULL);
            expect_bend(p);
        } else {
            n = mk(p, N_SETBLOCK, line, target, NULL, NULL);
            expect_bend(p);
            static const char *const ends[] = {"endset", NULL};
            n->body = parse_body(p, ends, "endset");
            p->i += 2;
            expect_bend(p);
        }
    } else if (tok_is(t, T_NAME, "macro")) {
        if (cur(p)->t != T_NAME) perr(p, "expected a macro name");
        n = mk(p, N_MACRO, line, NULL, NULL, NULL);
        n->name = cur(p)->s;
        p->i++;
        expect_op(p, "(");
        while (!at_op(p, ")")) {
            if (cur(p)->t != T_NAME) perr(p, "expected a parameter name");
            jnode *prm = mk(p, E_KW, cur(p)->line, NULL, NULL, NULL);
            prm->name = cur(p)->s;
            p->i++;
            if (at_op(p, "=")) {
                p->i++;
                prm->a = parse_expr(p);
            }
            nl_push(p->c, &n->args, done(p, prm));
            if (!at_op(p, ",")) break;
            p->i++;
        }
        expect_op(p, ")");
        expect_bend(p);
        static const char *const ends[] = {"endmacro", NULL};
        n->body = parse_body(p, ends, "endmacro");
        p->i += 2;
        if (cur(p)->t == T_NAME) p->i++;
        expect_bend(p);
    } else if (tok_is(t, T_NAME, "break") || tok_is(t, T_NAME, "continue")) {
        n = mk(p, tok_is(t, T_NAME, "break") ? N_BREAK : N_CONTINUE, line, NULL, NULL, NULL);
        expect_bend(p);
    } else if (tok_is(t, T_NAME, "filter")) {
        /* {% filter name(args) %}body{% endfilter %}: a in N_BLOCK holds the filter, applied
           to the rendered body (a->a is left NULL and stands for the body) */
        if (cur(p)->t != T_NAME) perr(p, "expected a filter name");
        jnode *flt = mk(p, E_FILTER, line, NULL, NULL, NULL);
        flt->name = cur(p)->s;
        p->i++;
        if (at_op(p, "(")) parse_args(p, flt);
        n = mk(p, N_BLOCK, line, flt, NULL, NULL);
        expect_bend(p);
        static const char *const ends[] = {"endfilter", NULL};
        n->body = parse_body(p, ends, "endfilter");
        p->i += 2;
        expect_bend(p);
    } else if (tok_is(t, T_NAME, "generation")) {
        /* HF's AssistantTracker extension: the body renders as is */
        n = mk(p, N_BLOCK, line, NULL, NULL, NULL);
        expect_bend(p);
        static const char *const ends[] = {"endgeneration", NULL};
        n->body = parse_body(p, ends, "endgeneration");
        p->i += 2;
        expect_bend(p);
    } else {
        jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: unknown tag '%.*s'", line,
                (int)(t->s.n > 40 ? 40 : t->s.n), t->s.p);
    }
    p->c->stmt_depth--;
    return done(p, n);
}

/* Statements up to a block tag named in ends (left unconsumed: p->i at its '{%'). */
static jnlist parse_body(jps *p, const char *const *ends, const char *what) {
    jnlist l = {0};
    for (;;) {
        jtok *t = cur(p);
        if (t->t == T_EOF) {
            if (!ends) return l;
            jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: unexpected end of template, expected '%s'",
                    t->line, what);
        }
        if (t->t == T_BBEG && p->t[p->i + 1].t == T_NAME) {
            jtok *name = &p->t[p->i + 1];
            if (ends)
                for (const char *const *e = ends; *e; e++)
                    if (tok_is(name, T_NAME, *e)) return l;
            static const char *const closers[] = {"endif", "endfor", "elif", "else", "endset",
                                                  "endmacro", "endgeneration", "endraw", "endfilter", NULL};
            for (const char *const *e = closers; *e; e++)
                if (tok_is(name, T_NAME, *e))
                    jj_fail(p->c, PAGODA_ERR_FORMAT, "chat template line %d: unexpected '%s'%s%s%s",
                            name->line, *e, ends ? ", expected '" : "", ends ? what : "", ends ? "'" : "");
        }
        nl_push(p->c, &l, parse_stmt(p));
    }
}

jnlist jj_parse(jctx *c, const char *src, size_t n) {
    jlex L = {.c = c, .src = src, .n = n, .line = 1};
    lex_all(&L);
    jps P = {.c = c, .t = L.t};
    c->stmt_depth = 0;
    return parse_body(&P, NULL, NULL);
}
