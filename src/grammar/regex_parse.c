/* Regular expression -> AST -> byte-level NFA (see regex.h, lexer.h for the accepted subset).
 * The parser is a recursive descent over the pattern bytes (group nesting bounded); the compiler
 * emits each AST node backwards onto a known continuation, so repetitions are plain copies and
 * every step counts against the node budget (no pattern can take unbounded time or memory). */
#include "grammar/regex.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/lexer.h"

#define RX_MAX_DEPTH 256       /* nested groups */
#define RX_MAX_COUNT 1000000   /* {m,n} bounds */
#define RX_MAX_CP 0x10FFFFu

enum { A_EMPTY, A_CLASS, A_CAT, A_ALT, A_REP, A_BOL, A_EOL };

typedef struct {
    uint32_t lo, hi;
} cp_range;

typedef struct {
    int kind;
    int child, next; /* first child, next sibling (-1 = none) */
    int min, max;    /* A_REP; max -1 = unbounded */
    uint32_t r_off, r_n; /* A_CLASS: ranges in the parser's range pool */
} ast;

typedef struct {
    cp_range *v;
    uint32_t n, cap;
} cset;

typedef struct {
    const uint8_t *p;
    size_t n, i;
    ast *nodes;
    int nn, ncap;
    cset pool; /* class ranges of all A_CLASS nodes */
    char *err;
    size_t cap;
    int failed, oom, depth;
} parser;

/* ---- errors and small vectors ---- */

static void fail_at(parser *P, size_t off, const char *fmt, ...) {
    if (P->failed) return;
    P->failed = 1;
    if (!P->err || !P->cap) return;
    int k = snprintf(P->err, P->cap, "offset %zu: ", off);
    if (k < 0 || (size_t)k >= P->cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err + k, P->cap - (size_t)k, fmt, ap);
    va_end(ap);
}

static int cs_push(cset *s, uint32_t lo, uint32_t hi) {
    if (s->n == s->cap) {
        uint32_t nc = s->cap ? s->cap * 2 : 8;
        cp_range *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = (cp_range){lo, hi};
    return 0;
}

static int cmp_range(const void *a, const void *b) {
    const cp_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void cs_normalize(cset *s) {
    if (s->n < 2) return;
    if (s->n > 32) {
        qsort(s->v, s->n, sizeof *s->v, cmp_range);
    } else { /* insertion sort: most classes have a few ranges (order among equal lo is merged away) */
        for (uint32_t i = 1; i < s->n; i++) {
            cp_range x = s->v[i];
            uint32_t j = i;
            while (j && s->v[j - 1].lo > x.lo) s->v[j] = s->v[j - 1], j--;
            s->v[j] = x;
        }
    }
    uint32_t w = 0;
    for (uint32_t r = 1; r < s->n; r++) {
        if (s->v[r].lo <= s->v[w].hi + 1) {
            if (s->v[r].hi > s->v[w].hi) s->v[w].hi = s->v[r].hi;
        } else {
            s->v[++w] = s->v[r];
        }
    }
    s->n = w + 1;
}

static int cs_negate(cset *s) { /* s normalized */
    cset o = {0};
    uint32_t next = 0;
    for (uint32_t r = 0; r < s->n; r++) {
        if (s->v[r].lo > next && cs_push(&o, next, s->v[r].lo - 1)) goto oom;
        next = s->v[r].hi + 1;
    }
    if (next <= RX_MAX_CP && cs_push(&o, next, RX_MAX_CP)) goto oom;
    free(s->v);
    *s = o;
    return 0;
oom:
    free(o.v);
    return -1;
}

static int cs_add_predef(cset *s, char c) { /* \d \w \s (lower case) */
    static const uint32_t space[][2] = {{9, 13},         {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680},
                                        {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                                        {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
    int rc = 0;
    if (c == 'd') rc |= cs_push(s, '0', '9');
    if (c == 'w') rc |= cs_push(s, '0', '9') | cs_push(s, 'A', 'Z') | cs_push(s, '_', '_') | cs_push(s, 'a', 'z');
    if (c == 's')
        for (size_t k = 0; k < sizeof space / sizeof space[0]; k++) rc |= cs_push(s, space[k][0], space[k][1]);
    return rc;
}

/* \D \W \S: the complement, added to s */
static int cs_add_escape_class(cset *s, char c) {
    if (c >= 'a') return cs_add_predef(s, c);
    cset t = {0};
    int rc = cs_add_predef(&t, (char)(c + 32));
    cs_normalize(&t);
    if (!rc) rc = cs_negate(&t);
    for (uint32_t k = 0; !rc && k < t.n; k++) rc = cs_push(s, t.v[k].lo, t.v[k].hi);
    free(t.v);
    return rc;
}

static int new_node(parser *P, int kind) {
    if (P->nn == P->ncap) {
        int nc = P->ncap ? P->ncap * 2 : 32;
        ast *nv = realloc(P->nodes, (size_t)nc * sizeof *nv);
        if (!nv) {
            P->oom = 1;
            fail_at(P, P->i, "out of memory");
            return -1;
        }
        P->nodes = nv;
        P->ncap = nc;
    }
    P->nodes[P->nn] = (ast){.kind = kind, .child = -1, .next = -1};
    return P->nn++;
}

static int class_node(parser *P, cset *s) { /* takes s (normalized) */
    int id = new_node(P, A_CLASS);
    if (id < 0) return -1;
    P->nodes[id].r_off = P->pool.n;
    for (uint32_t k = 0; k < s->n; k++)
        if (cs_push(&P->pool, s->v[k].lo, s->v[k].hi)) {
            P->oom = 1;
            fail_at(P, P->i, "out of memory");
            return -1;
        }
    P->nodes[id].r_n = s->n;
    return id;
}

static int cp_node(parser *P, uint32_t cp) {
    cp_range r = {cp, cp};
    cset s = {&r, 1, 1}; /* on the stack: class_node only reads it */
    return class_node(P, &s);
}

/* ---- lexical helpers ---- */

/* one UTF-8 code point at P->i (advances); -1 on invalid UTF-8 */
static int decode_cp(parser *P, uint32_t *cp) {
    const uint8_t *p = P->p + P->i;
    size_t left = P->n - P->i;
    uint32_t c = p[0];
    int len;
    uint32_t min;
    if (c < 0x80) {
        *cp = c;
        P->i++;
        return 0;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, c &= 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, c &= 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        goto bad;
    }
    if (left < (size_t)len) goto bad;
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) goto bad;
        c = (c << 6) | (p[k] & 0x3F);
    }
    if (c < min || c > RX_MAX_CP || (c >= 0xD800 && c <= 0xDFFF)) goto bad;
    *cp = c;
    P->i += (size_t)len;
    return 0;
bad:
    fail_at(P, P->i, "invalid UTF-8 in pattern");
    return -1;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int read_hex(parser *P, int digits, uint32_t *v) {
    if (P->n - P->i < (size_t)digits) return -1;
    uint32_t x = 0;
    for (int k = 0; k < digits; k++) {
        int h = hexval(P->p[P->i + (size_t)k]);
        if (h < 0) return -1;
        x = x * 16 + (uint32_t)h;
    }
    P->i += (size_t)digits;
    *v = x;
    return 0;
}

/* After a backslash (P->i at the escaped character). Returns 0 with a code point, 1 with classes
 * added to cls (\d \w \s and negations), -1 on error. */
static int parse_escape(parser *P, int in_class, uint32_t *cp, cset *cls) {
    size_t at = P->i - 1;
    if (P->i >= P->n) {
        fail_at(P, at, "pattern ends with a lone backslash");
        return -1;
    }
    int c = P->p[P->i];
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        P->i++;
        if (cs_add_escape_class(cls, (char)c)) {
            fail_at(P, at, "out of memory");
            return -1;
        }
        return 1;
    case 'n': P->i++, *cp = '\n'; return 0;
    case 't': P->i++, *cp = '\t'; return 0;
    case 'r': P->i++, *cp = '\r'; return 0;
    case 'f': P->i++, *cp = '\f'; return 0;
    case 'v': P->i++, *cp = '\v'; return 0;
    case '0':
        P->i++;
        if (P->i < P->n && P->p[P->i] >= '0' && P->p[P->i] <= '9') {
            fail_at(P, at, "octal escapes are not supported");
            return -1;
        }
        *cp = 0;
        return 0;
    case 'b':
        if (in_class) {
            P->i++, *cp = 8;
            return 0;
        }
        fail_at(P, at, "word boundary \\b is not supported");
        return -1;
    case 'B': fail_at(P, at, "word boundary \\B is not supported"); return -1;
    case 'k': fail_at(P, at, "named backreference \\k is not supported"); return -1;
    case 'p': case 'P': fail_at(P, at, "Unicode property escape \\%c{...} is not supported", c); return -1;
    case 'x':
        P->i++;
        if (read_hex(P, 2, cp)) {
            fail_at(P, at, "invalid \\x escape (two hex digits expected)");
            return -1;
        }
        return 0;
    case 'c':
        if (P->i + 1 < P->n && ((P->p[P->i + 1] | 32) >= 'a' && (P->p[P->i + 1] | 32) <= 'z')) {
            *cp = P->p[P->i + 1] & 31u;
            P->i += 2;
            return 0;
        }
        fail_at(P, at, "invalid \\c escape (a letter expected)");
        return -1;
    case 'u': {
        P->i++;
        if (P->i < P->n && P->p[P->i] == '{') {
            size_t k = P->i + 1;
            uint32_t v = 0;
            int nd = 0;
            while (k < P->n && hexval(P->p[k]) >= 0 && v <= RX_MAX_CP) v = v * 16 + (uint32_t)hexval(P->p[k++]), nd++;
            if (!nd || k >= P->n || P->p[k] != '}' || v > RX_MAX_CP) {
                fail_at(P, at, "invalid \\u{...} escape (1 to 6 hex digits, at most 10FFFF)");
                return -1;
            }
            P->i = k + 1;
            *cp = v;
            return 0;
        }
        if (read_hex(P, 4, cp)) {
            fail_at(P, at, "invalid \\u escape (four hex digits expected)");
            return -1;
        }
        /* a surrogate pair written as two escapes is one code point */
        uint32_t lo;
        if (*cp >= 0xD800 && *cp <= 0xDBFF && P->i + 6 <= P->n && P->p[P->i] == '\\' && P->p[P->i + 1] == 'u') {
            size_t save = P->i;
            P->i += 2;
            if (!read_hex(P, 4, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
                *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
            else
                P->i = save;
        }
        return 0;
    }
    default: break;
    }
    if (c >= '1' && c <= '9') {
        fail_at(P, at, "backreference \\%c is not supported", c);
        return -1;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        fail_at(P, at, "unknown escape \\%c", c);
        return -1;
    }
    if (c < 0x80) {
        P->i++;
        *cp = (uint32_t)c; /* identity escape of punctuation, space, ... */
        return 0;
    }
    return decode_cp(P, cp) ? -1 : 0;
}

/* {m}, {m,}, {m,n} at P->i (a '{'); 1 = parsed (advanced), 0 = not a quantifier, -1 = error */
static int parse_braces(parser *P, int *min, int *max) {
    size_t k = P->i + 1, at = P->i;
    long a = 0, b = -1;
    int nd = 0;
    while (k < P->n && P->p[k] >= '0' && P->p[k] <= '9') {
        if (a <= RX_MAX_COUNT) a = a * 10 + (P->p[k] - '0');
        k++, nd++;
    }
    if (!nd) return 0;
    if (k < P->n && P->p[k] == ',') {
        k++;
        int nd2 = 0;
        long v = 0;
        while (k < P->n && P->p[k] >= '0' && P->p[k] <= '9') {
            if (v <= RX_MAX_COUNT) v = v * 10 + (P->p[k] - '0');
            k++, nd2++;
        }
        if (nd2) b = v;
    } else {
        b = a;
    }
    if (k >= P->n || P->p[k] != '}') return 0;
    if (a > RX_MAX_COUNT || b > RX_MAX_COUNT) {
        fail_at(P, at, "repetition count too large (at most %d)", RX_MAX_COUNT);
        return -1;
    }
    if (b >= 0 && b < a) {
        fail_at(P, at, "numbers out of order in {} quantifier");
        return -1;
    }
    P->i = k + 1;
    *min = (int)a;
    *max = (int)b;
    return 1;
}

/* ---- the grammar ---- */

static int parse_alt(parser *P);

static int parse_class(parser *P) {
    size_t at = P->i;
    P->i++; /* [ */
    int neg = 0;
    if (P->i < P->n && P->p[P->i] == '^') neg = 1, P->i++;
    cset s = {0};
    for (;;) {
        if (P->i >= P->n) {
            fail_at(P, at, "missing ] (unterminated character class)");
            goto bad;
        }
        if (P->p[P->i] == ']') {
            P->i++;
            break;
        }
        uint32_t lo, hi;
        size_t item_at = P->i;
        int k;
        if (P->p[P->i] == '\\') {
            P->i++;
            if ((k = parse_escape(P, 1, &lo, &s)) < 0) goto bad;
        } else {
            if (decode_cp(P, &lo)) goto bad;
            k = 0;
        }
        if (P->i + 1 < P->n && P->p[P->i] == '-' && P->p[P->i + 1] != ']') {
            P->i++;
            int k2;
            if (P->p[P->i] == '\\') {
                P->i++;
                if ((k2 = parse_escape(P, 1, &hi, &s)) < 0) goto bad;
            } else {
                if (decode_cp(P, &hi)) goto bad;
                k2 = 0;
            }
            if (k || k2) {
                fail_at(P, item_at, "a class escape (\\d, \\w, \\s, ...) cannot bound a range");
                goto bad;
            }
            if (lo > hi) {
                fail_at(P, item_at, "range out of order in character class");
                goto bad;
            }
            if (cs_push(&s, lo, hi)) goto oom;
        } else if (k == 0) {
            if (cs_push(&s, lo, lo)) goto oom;
        }
    }
    cs_normalize(&s);
    if (neg && cs_negate(&s)) goto oom;
    int id = class_node(P, &s);
    free(s.v);
    return id;
oom:
    fail_at(P, P->i, "out of memory");
bad:
    free(s.v);
    return -1;
}

static int parse_atom(parser *P) {
    size_t at = P->i;
    uint8_t c = P->p[P->i];
    int min, max;
    switch (c) {
    case '(': {
        if (++P->depth > RX_MAX_DEPTH) {
            fail_at(P, at, "groups nested too deeply (at most %d)", RX_MAX_DEPTH);
            return -1;
        }
        P->i++;
        if (P->i < P->n && P->p[P->i] == '?') {
            const uint8_t *q = P->p + P->i + 1;
            size_t left = P->n - P->i - 1;
            if (left >= 1 && q[0] == ':') {
                P->i += 2;
            } else if (left >= 1 && (q[0] == '=' || q[0] == '!')) {
                fail_at(P, at, "lookahead (?%c...) is not supported", q[0]);
                return -1;
            } else if (left >= 2 && q[0] == '<' && (q[1] == '=' || q[1] == '!')) {
                fail_at(P, at, "lookbehind (?<%c...) is not supported", q[1]);
                return -1;
            } else if (left >= 1 && q[0] == '<') {
                size_t k = 1;
                while (k < left && q[k] != '>' &&
                       ((unsigned)((q[k] | 32) - 'a') < 26u || q[k] == '_' || q[k] == '$' || (k > 1 && (unsigned)(q[k] - '0') < 10u)))
                    k++;
                if (k == 1 || k >= left || q[k] != '>') {
                    fail_at(P, at, "invalid group name in (?<name>...)");
                    return -1;
                }
                P->i += 1 + k + 1;
            } else {
                fail_at(P, at, "unsupported group syntax (?%c", left ? q[0] : ' ');
                return -1;
            }
        }
        int id = parse_alt(P);
        if (id < 0) return -1;
        if (P->i >= P->n || P->p[P->i] != ')') {
            fail_at(P, at, "missing ) (unterminated group)");
            return -1;
        }
        P->i++;
        P->depth--;
        return id;
    }
    case '[': return parse_class(P);
    case '.': {
        P->i++;
        cset s = {0};
        int id = -1;
        if (!cs_push(&s, 0, '\n' - 1) && !cs_push(&s, '\n' + 1, RX_MAX_CP)) id = class_node(P, &s);
        free(s.v);
        return id;
    }
    case '^': P->i++; return new_node(P, A_BOL);
    case '$': P->i++; return new_node(P, A_EOL);
    case '*': case '+': case '?':
        fail_at(P, at, "nothing to repeat before %c", c);
        return -1;
    case '{': {
        int r = parse_braces(P, &min, &max);
        if (r < 0) return -1;
        if (r > 0) {
            fail_at(P, at, "nothing to repeat before {");
            return -1;
        }
        P->i++;
        return cp_node(P, '{');
    }
    case '\\': {
        P->i++;
        uint32_t cp;
        cset s = {0};
        int k = parse_escape(P, 0, &cp, &s);
        if (k < 0) {
            free(s.v);
            return -1;
        }
        if (k == 0) return cp_node(P, cp);
        cs_normalize(&s);
        int id = class_node(P, &s);
        free(s.v);
        return id;
    }
    default: {
        uint32_t cp;
        if (decode_cp(P, &cp)) return -1;
        return cp_node(P, cp);
    }
    }
}

static int parse_repeat(parser *P) {
    int id = parse_atom(P);
    if (id < 0) return -1;
    int quantified = 0;
    while (P->i < P->n) {
        size_t at = P->i;
        uint8_t c = P->p[P->i];
        int min, max;
        if (c == '*') min = 0, max = -1, P->i++;
        else if (c == '+') min = 1, max = -1, P->i++;
        else if (c == '?') min = 0, max = 1, P->i++;
        else if (c == '{') {
            int r = parse_braces(P, &min, &max);
            if (r < 0) return -1;
            if (r == 0) break;
        } else {
            break;
        }
        if (quantified) {
            fail_at(P, at, "nothing to repeat (a quantifier after a quantifier)");
            return -1;
        }
        int k = P->nodes[id].kind;
        if (k == A_BOL || k == A_EOL) {
            fail_at(P, at, "nothing to repeat (an anchor cannot be quantified)");
            return -1;
        }
        if (P->i < P->n && P->p[P->i] == '?') P->i++; /* lazy: same language */
        int r = new_node(P, A_REP);
        if (r < 0) return -1;
        P->nodes[r].child = id;
        P->nodes[r].min = min;
        P->nodes[r].max = max;
        id = r;
        quantified = 1;
    }
    return id;
}

static int parse_concat(parser *P) {
    int first = -1, last = -1, count = 0;
    while (P->i < P->n && P->p[P->i] != '|' && P->p[P->i] != ')') {
        int id = parse_repeat(P);
        if (id < 0) return -1;
        if (last < 0) first = id;
        else P->nodes[last].next = id;
        last = id;
        count++;
    }
    if (count == 1) return first;
    int c = new_node(P, count ? A_CAT : A_EMPTY);
    if (c >= 0) P->nodes[c].child = first;
    return c;
}

static int parse_alt(parser *P) {
    int first = parse_concat(P);
    if (first < 0) return -1;
    if (P->i >= P->n || P->p[P->i] != '|') return first;
    int last = first;
    while (P->i < P->n && P->p[P->i] == '|') {
        P->i++;
        int id = parse_concat(P);
        if (id < 0) return -1;
        P->nodes[last].next = id;
        last = id;
    }
    int a = new_node(P, A_ALT);
    if (a >= 0) P->nodes[a].child = first;
    return a;
}

/* ---- NFA emission (backwards onto a continuation) ---- */

typedef struct {
    rx_nfa *nfa;
    parser *P;
    struct seqs *seqs; /* per AST node: a class's byte sequences, computed on first emission */
    int *ctab;         /* [ctab_cap] AST ids + 1 of classes with sequences, by their ranges' hash */
    uint32_t ctab_cap;
    /* hash-consing: an AST node emitted onto a continuation gives the same fragment as an equal
     * node (same structure) emitted onto the same continuation, so the fragment is shared */
    int *canon;   /* [P->nn] canonical AST node per node, -1 unknown */
    int *ctab2;   /* [ctab2_cap] canonical nodes + 1 by their structure's hash */
    uint32_t ctab2_cap;
    struct frag {
        int id; /* canonical AST node + 1, 0 free */
        uint32_t out, node;
        uint64_t work; /* emit calls the first emission made (a hit counts them again) */
    } *memo;
    uint32_t memo_cap, memo_n;
    uint8_t *shared_out; /* [n_shared] per NFA node: a continuation that may be met again (an
                          * alternation's, or a shared fragment's), the only ones worth a lookup */
    uint32_t n_shared;
    uint64_t work, work_limit;
    int over;
    int dry; /* count the nodes only (rx_check): nfa->v is not written */
} emitter;

static uint32_t add(emitter *E, int kind, uint32_t lo, uint32_t hi, uint32_t out, uint32_t out2) {
    rx_nfa *a = E->nfa;
    if (E->over || a->n >= a->limit) {
        E->over = 1;
        return RX_NONE;
    }
    if (E->dry) return a->n++;
    if (a->n == a->cap) {
        uint32_t nc = a->cap ? a->cap * 2 : 256;
        if (nc > a->limit) nc = a->limit;
        rx_node *nv = realloc(a->v, (size_t)nc * sizeof *nv);
        if (!nv) {
            E->over = 1;
            return RX_NONE;
        }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n] = (rx_node){(uint8_t)kind, (uint8_t)lo, (uint8_t)hi, 0, out, out2};
    return a->n++;
}

static int utf8_encode(uint32_t c, uint8_t *b) {
    if (c < 0x80) return b[0] = (uint8_t)c, 1;
    if (c < 0x800) return b[0] = (uint8_t)(0xC0 | c >> 6), b[1] = (uint8_t)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return b[0] = (uint8_t)(0xE0 | c >> 12), b[1] = (uint8_t)(0x80 | (c >> 6 & 63)),
               b[2] = (uint8_t)(0x80 | (c & 63)), 3;
    b[0] = (uint8_t)(0xF0 | c >> 18), b[1] = (uint8_t)(0x80 | (c >> 12 & 63));
    b[2] = (uint8_t)(0x80 | (c >> 6 & 63)), b[3] = (uint8_t)(0x80 | (c & 63));
    return 4;
}

/* A class as UTF-8 byte sequences: each is up to 4 byte ranges (a product), in code point order. */
typedef struct {
    uint8_t len, lo[4], hi[4];
} seq;

typedef struct seqs {
    seq *v;
    uint32_t n, cap;
    int borrowed; /* v belongs to another AST node's seqs (an equal class) */
    uint32_t dry_n; /* nodes one emission adds (rx_check), 0 unknown */
} seqs;

/* [lo, hi] within one encoded length, cut until each piece is a product of byte ranges */
static int cp_range_seqs(seqs *S, uint32_t lo, uint32_t hi) {
    uint8_t a[4], b[4];
    int n = utf8_encode(lo, a);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if (lo & m) return cp_range_seqs(S, lo, lo | m) || cp_range_seqs(S, (lo | m) + 1, hi);
            if ((hi & m) != m) return cp_range_seqs(S, lo, (hi & ~m) - 1) || cp_range_seqs(S, hi & ~m, hi);
        }
    }
    utf8_encode(hi, b);
    if (S->n == S->cap) {
        uint32_t nc = S->cap ? S->cap * 2 : 16;
        seq *nv = realloc(S->v, nc * sizeof *nv);
        if (!nv) return -1;
        S->v = nv;
        S->cap = nc;
    }
    seq *q = &S->v[S->n++];
    q->len = (uint8_t)n;
    memcpy(q->lo, a, 4);
    memcpy(q->hi, b, 4);
    return 0;
}

static int class_seqs(seqs *S, const cp_range *r, uint32_t nr) {
    static const uint32_t cuts[][2] = {{0, 0x7F}, {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
    for (uint32_t k = 0; k < nr; k++)
        for (size_t j = 0; j < 5; j++) {
            uint32_t lo = r[k].lo > cuts[j][0] ? r[k].lo : cuts[j][0];
            uint32_t hi = r[k].hi < cuts[j][1] ? r[k].hi : cuts[j][1];
            if (lo <= hi && cp_range_seqs(S, lo, hi)) return -1;
        }
    return 0;
}

typedef struct { /* one class's emission: a byte trie into out; equal last-byte nodes shared */
    emitter *E;
    uint32_t out;
    uint32_t memo[64][3]; /* lo, hi, node of last-byte nodes into out */
    uint32_t n_memo;
} class_emit;

static uint32_t last_byte_node(class_emit *C, uint32_t lo, uint32_t hi) {
    for (uint32_t k = 0; k < C->n_memo; k++)
        if (C->memo[k][0] == lo && C->memo[k][1] == hi) return C->memo[k][2];
    uint32_t id = add(C->E, RX_BYTE, lo, hi, C->out, 0);
    if (id != RX_NONE && C->n_memo < 64) {
        uint32_t *m = C->memo[C->n_memo++];
        m[0] = lo, m[1] = hi, m[2] = id;
    }
    return id;
}

/* sequences v[a, b) share their first depth ranges: alternatives by the range at depth */
static uint32_t emit_trie(class_emit *C, const seq *v, uint32_t a, uint32_t b, int depth) {
    uint32_t alts[64], n_alts = 0, head = RX_NONE, tail = RX_NONE;
    if (depth >= 4) return RX_NONE; /* sequences are at most 4 bytes */
    for (uint32_t i = a; i < b;) {
        uint32_t j = i + 1;
        while (j < b && v[j].lo[depth] == v[i].lo[depth] && v[j].hi[depth] == v[i].hi[depth] && v[j].len == v[i].len) j++;
        uint32_t node;
        if (depth + 1 == v[i].len) {
            node = last_byte_node(C, v[i].lo[depth], v[i].hi[depth]);
        } else {
            uint32_t next = emit_trie(C, v, i, j, depth + 1);
            node = next == RX_NONE ? RX_NONE : add(C->E, RX_BYTE, v[i].lo[depth], v[i].hi[depth], next, 0);
        }
        if (node == RX_NONE) return RX_NONE;
        /* chain the alternatives as SPLIT(x1, SPLIT(x2, ...)), 64 at a time */
        alts[n_alts++] = node;
        if (n_alts == 64 || j == b) {
            for (uint32_t k = 0; k < n_alts; k++) {
                uint32_t x = alts[k];
                if (j == b && k + 1 == n_alts) { /* the very last alternative */
                    if (tail == RX_NONE) head = x;
                    else if (!C->E->dry) C->E->nfa->v[tail].out2 = x;
                    break;
                }
                uint32_t s = add(C->E, RX_SPLIT, 0, 0, x, RX_NONE);
                if (s == RX_NONE) return RX_NONE;
                if (tail == RX_NONE) head = s;
                else if (!C->E->dry) C->E->nfa->v[tail].out2 = s;
                tail = s;
            }
            n_alts = 0;
        }
        i = j;
    }
    return head;
}

/* A class node's code point ranges (NULL for the empty class: the pool may not exist). */
static const cp_range *class_ranges(const emitter *E, const ast *a) { return a->r_n ? E->P->pool.v + a->r_off : NULL; }

/* The UTF-8 sequences of class node id, computed once per distinct class; NULL out of memory. */
static seqs *class_seqs_of(emitter *E, int id) {
    ast *a = &E->P->nodes[id];
    seqs *S = &E->seqs[id];
    if (!S->v && a->r_n) { /* computed once per class, however often it is repeated or written */
        const cp_range *r = E->P->pool.v + a->r_off;
        uint64_t h = 0x9E3779B97F4A7C15ull ^ a->r_n;
        for (uint32_t k = 0; k < a->r_n; k++) h = (h ^ r[k].lo) * 0x100000001B3ull, h = (h ^ r[k].hi) * 0x100000001B3ull;
        uint32_t slot = (uint32_t)(h ^ h >> 32) & (E->ctab_cap - 1);
        for (; E->ctab && E->ctab[slot]; slot = (slot + 1) & (E->ctab_cap - 1)) {
            const ast *b = &E->P->nodes[E->ctab[slot] - 1];
            if (b->r_n == a->r_n && !memcmp(E->P->pool.v + b->r_off, r, a->r_n * sizeof *r)) break;
        }
        if (E->ctab && E->ctab[slot]) {
            *S = E->seqs[E->ctab[slot] - 1];
            S->borrowed = 1;
        } else {
            if (class_seqs(S, r, a->r_n)) return NULL;
            if (E->ctab) E->ctab[slot] = id + 1;
        }
    }
    return S;
}

static uint32_t emit_class(emitter *E, int id, uint32_t out) {
    seqs *S = class_seqs_of(E, id);
    if (!S) {
        E->over = 1;
        return RX_NONE;
    }
    if (!S->n) return add(E, RX_FAIL, 0, 0, 0, 0);
    class_emit C = {.E = E, .out = out};
    if (E->dry && S->dry_n) { /* the same count as last time, without the walk */
        if (E->over || E->nfa->limit - E->nfa->n < S->dry_n) {
            E->over = 1;
            return RX_NONE;
        }
        E->nfa->n += S->dry_n;
        return E->nfa->n - 1;
    }
    uint32_t before = E->nfa->n, r = emit_trie(&C, S->v, 0, S->n, 0);
    if (E->dry && r != RX_NONE) S->dry_n = E->nfa->n - before;
    return r;
}

static uint64_t sig_hash(emitter *E, int id) { /* children already canonical */
    const ast *a = &E->P->nodes[id];
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)a->kind;
    h = (h ^ (uint32_t)a->min) * 0x100000001B3ull;
    h = (h ^ (uint32_t)a->max) * 0x100000001B3ull;
    if (a->kind == A_CLASS) {
        const cp_range *r = class_ranges(E, a);
        for (uint32_t k = 0; k < a->r_n; k++) h = (h ^ r[k].lo) * 0x100000001B3ull, h = (h ^ r[k].hi) * 0x100000001B3ull;
    }
    for (int c = a->child; c >= 0; c = E->P->nodes[c].next) h = (h ^ (uint32_t)E->canon[c]) * 0x100000001B3ull;
    h = (h ^ h >> 33) * 0xFF51AFD7ED558CCDull; /* mixed: the table's slot takes the low bits */
    return h ^ h >> 29;
}

static int sig_equal(emitter *E, int x, int y) { /* children already canonical */
    const ast *a = &E->P->nodes[x], *b = &E->P->nodes[y];
    if (a->kind != b->kind || a->min != b->min || a->max != b->max || a->r_n != b->r_n) return 0;
    if (a->kind == A_CLASS && a->r_n &&
        memcmp(class_ranges(E, a), class_ranges(E, b), a->r_n * sizeof *E->P->pool.v))
        return 0;
    int c = a->child, d = b->child;
    for (; c >= 0 && d >= 0; c = E->P->nodes[c].next, d = E->P->nodes[d].next)
        if (E->canon[c] != E->canon[d]) return 0;
    return c < 0 && d < 0;
}

/* The canonical AST node equal to id (the first of its structure met): equal nodes emitted onto the
 * same continuation give the same fragment. */
static int canon_of(emitter *E, int id) {
    if (E->canon[id] >= 0) return E->canon[id];
    for (int c = E->P->nodes[id].child; c >= 0; c = E->P->nodes[c].next) canon_of(E, c);
    uint64_t h = sig_hash(E, id);
    uint32_t mask = E->ctab2_cap - 1, slot = (uint32_t)(h ^ h >> 32) & mask;
    for (; E->ctab2[slot]; slot = (slot + 1) & mask)
        if (sig_equal(E, E->ctab2[slot] - 1, id)) return E->canon[id] = E->ctab2[slot] - 1;
    E->ctab2[slot] = id + 1;
    return E->canon[id] = id;
}

#define RX_MEMO_MAX (1u << 20) /* fragments remembered per pattern */

/* Marks NFA node x as a continuation met again; 0 ok, -1 out of memory (then not marked). */
static int mark_shared(emitter *E, uint32_t x) {
    if (x >= E->n_shared) {
        uint32_t nc = E->n_shared ? E->n_shared : 1024;
        while (nc <= x) nc *= 2;
        uint8_t *q = realloc(E->shared_out, nc);
        if (!q) return -1;
        memset(q + E->n_shared, 0, nc - E->n_shared);
        E->shared_out = q, E->n_shared = nc;
    }
    E->shared_out[x] = 1;
    return 0;
}

static uint32_t emit_node(emitter *E, int id, uint32_t out);

static uint32_t emit(emitter *E, int id, uint32_t out) {
    if (E->over || ++E->work > E->work_limit) {
        E->over = 1;
        return RX_NONE;
    }
    if (!E->memo || E->P->nodes[id].kind == A_EMPTY || out >= E->n_shared || !E->shared_out[out])
        return emit_node(E, id, out);
    int cid = canon_of(E, id);
    uint64_t h = (uint64_t)(uint32_t)cid * 0x9E3779B97F4A7C15ull ^ (uint64_t)out * 0xD6E8FEB86659FD93ull;
    uint32_t slot = (uint32_t)(h ^ h >> 32) & (E->memo_cap - 1);
    for (; E->memo[slot].id; slot = (slot + 1) & (E->memo_cap - 1))
        if (E->memo[slot].out == out && E->memo[slot].id == cid + 1) {
            /* the work limit stays what emitting it again would cost */
            if ((E->work += E->memo[slot].work - 1) > E->work_limit) {
                E->over = 1;
                return RX_NONE;
            }
            return E->memo[slot].node;
        }
    uint64_t work0 = E->work;
    uint32_t r = emit_node(E, id, out);
    if (r == RX_NONE || E->memo_n >= RX_MEMO_MAX || mark_shared(E, r)) return r;
    if ((E->memo_n + 1) * 2 > E->memo_cap) { /* grow (rehash) */
        uint32_t nc = E->memo_cap * 2;
        struct frag *t = calloc(nc, sizeof *t);
        if (!t) return r;
        for (uint32_t k = 0; k < E->memo_cap; k++) {
            if (!E->memo[k].id) continue;
            uint64_t g = (uint64_t)(uint32_t)(E->memo[k].id - 1) * 0x9E3779B97F4A7C15ull ^
                         (uint64_t)E->memo[k].out * 0xD6E8FEB86659FD93ull;
            uint32_t j = (uint32_t)(g ^ g >> 32) & (nc - 1);
            while (t[j].id) j = (j + 1) & (nc - 1);
            t[j] = E->memo[k];
        }
        free(E->memo);
        E->memo = t;
        E->memo_cap = nc;
        slot = (uint32_t)(h ^ h >> 32) & (nc - 1);
        while (t[slot].id) slot = (slot + 1) & (nc - 1);
    }
    E->memo[slot] = (struct frag){cid + 1, out, r, E->work - work0 + 1};
    E->memo_n++;
    return r;
}

static uint32_t emit_node(emitter *E, int id, uint32_t out) {
    const ast *a = &E->P->nodes[id];
    switch (a->kind) {
    case A_EMPTY: return out;
    case A_CLASS: return emit_class(E, id, out);
    case A_BOL: return add(E, RX_BOL, 0, 0, out, 0);
    case A_EOL: return add(E, RX_EOL, 0, 0, out, 0);
    case A_CAT: {
        int n = 0;
        for (int c = a->child; c >= 0; c = E->P->nodes[c].next) n++;
        int *kids = malloc((size_t)n * sizeof *kids);
        if (!kids) {
            E->over = 1;
            return RX_NONE;
        }
        n = 0;
        for (int c = a->child; c >= 0; c = E->P->nodes[c].next) kids[n++] = c;
        uint32_t cur = out;
        for (int k = n - 1; k >= 0 && cur != RX_NONE; k--) cur = emit(E, kids[k], cur);
        free(kids);
        return cur;
    }
    case A_ALT: {
        /* SPLIT(e1, SPLIT(e2, ... ek)), built as the children are met; each onto out */
        if (E->memo) mark_shared(E, out);
        uint32_t head = RX_NONE, tail = RX_NONE;
        for (int c = a->child; c >= 0; c = E->P->nodes[c].next) {
            uint32_t e = emit(E, c, out);
            if (e == RX_NONE) return RX_NONE;
            if (E->P->nodes[c].next < 0) { /* last: the previous split's second arm */
                if (tail == RX_NONE) return e;
                if (!E->dry) E->nfa->v[tail].out2 = e;
                break;
            }
            uint32_t s = add(E, RX_SPLIT, 0, 0, e, RX_NONE);
            if (s == RX_NONE) return RX_NONE;
            if (tail == RX_NONE) head = s;
            else if (!E->dry) E->nfa->v[tail].out2 = s;
            tail = s;
        }
        return head;
    }
    case A_REP: {
        uint32_t cur = out;
        if (a->max < 0) {
            uint32_t loop = add(E, RX_SPLIT, 0, 0, RX_NONE, out);
            if (loop == RX_NONE) return RX_NONE;
            uint32_t e = emit(E, a->child, loop);
            if (e == RX_NONE) return RX_NONE;
            if (!E->dry) E->nfa->v[loop].out = e;
            cur = loop;
        } else {
            for (int k = 0; k < a->max - a->min && cur != RX_NONE; k++) {
                uint32_t e = emit(E, a->child, cur);
                if (e == RX_NONE) return RX_NONE;
                cur = add(E, RX_SPLIT, 0, 0, e, out);
            }
        }
        for (int k = 0; k < a->min && cur != RX_NONE; k++) cur = emit(E, a->child, cur);
        return cur;
    }
    }
    return RX_NONE;
}

#define RX_SAT (1ull << 62)
static uint64_t sat_add(uint64_t a, uint64_t b) { return a + b > RX_SAT ? RX_SAT : a + b; }
static uint64_t sat_mul(uint64_t a, uint64_t b) { return a && b > RX_SAT / a ? RX_SAT : a * b; }

/* Upper bounds of what emitting node id adds without sharing: NFA nodes in *nodes; and exactly
 * the emit calls (the work emit counts) in *work. -1 out of memory. */
static int bound(emitter *E, int id, uint64_t *nodes, uint64_t *work) { /* -1: out of memory */
    const ast *a = &E->P->nodes[id];
    uint64_t n = 0, w = 1, cn, cw;
    switch (a->kind) {
    case A_EMPTY: break;
    case A_BOL:
    case A_EOL: n = 1; break;
    case A_CLASS: { /* per code point range: ASCII is one byte node (and a split); otherwise at
                     * most 4 lengths x 7 sequences x 4 bytes, each a byte node and a split */
        const cp_range *r = class_ranges(E, a);
        n = 1;
        for (uint32_t k = 0; k < a->r_n; k++) n += r[k].hi < 0x80 ? 2 : 224;
        break;
    }
    case A_CAT:
    case A_ALT: {
        uint64_t k = 0;
        for (int c = a->child; c >= 0; c = E->P->nodes[c].next, k++) {
            if (bound(E, c, &cn, &cw)) return -1;
            n = sat_add(n, cn), w = sat_add(w, cw);
        }
        if (a->kind == A_ALT && k) n = sat_add(n, k - 1);
        break;
    }
    case A_REP:
        if (bound(E, a->child, &cn, &cw)) return -1;
        if (a->max < 0) {
            n = sat_add(sat_add(1, cn), sat_mul((uint64_t)a->min, cn));
            w = sat_add(w, sat_mul((uint64_t)a->min + 1, cw));
        } else {
            n = sat_add(sat_mul((uint64_t)(a->max - a->min), cn + 1), sat_mul((uint64_t)a->min, cn));
            w = sat_add(w, sat_mul((uint64_t)a->max, cw));
        }
        break;
    }
    *nodes = n, *work = w;
    return 0;
}

static int compile_nfa(rx_nfa *nfa, const char *pat, size_t n, int literal, uint32_t term, uint32_t *start, char *err,
                       size_t cap, int dry) {
    if (err && cap) err[0] = 0;
    if (!nfa->limit) nfa->limit = LX_MAX_NFA_STATES;
    uint32_t mark = nfa->n;
    parser P = {.p = (const uint8_t *)pat, .n = n, .err = err, .cap = cap};
    emitter E = {.nfa = nfa, .P = &P, .work_limit = 4ull * nfa->limit, .dry = dry};
    uint32_t m = add(&E, RX_MATCH, 0, 0, term, 0);
    if (m == RX_NONE) goto big;
    if (literal) {
        uint32_t cur = m;
        for (size_t k = n; k-- > 0 && cur != RX_NONE;) cur = add(&E, RX_BYTE, (uint8_t)pat[k], (uint8_t)pat[k], cur, 0);
        if (cur == RX_NONE) goto big;
        *start = cur;
        return 0;
    }
    int root = parse_alt(&P);
    if (root >= 0 && P.i < P.n) fail_at(&P, P.i, "unmatched )");
    if (P.failed || root < 0) goto out_err;
    E.seqs = calloc((size_t)P.nn, sizeof *E.seqs);
    if (!E.seqs) goto big;
    for (E.ctab_cap = 16; E.ctab_cap < 2 * (uint32_t)P.nn;) E.ctab_cap *= 2;
    E.ctab = calloc(E.ctab_cap, sizeof *E.ctab); /* (without it, classes are not shared) */
    E.canon = malloc((size_t)P.nn * sizeof *E.canon);
    for (E.ctab2_cap = 16; E.ctab2_cap < 2 * (uint32_t)P.nn;) E.ctab2_cap *= 2;
    E.ctab2 = calloc(E.ctab2_cap, sizeof *E.ctab2);
    E.memo_cap = 1024;
    if (E.canon && E.ctab2) E.memo = calloc(E.memo_cap, sizeof *E.memo); /* (without them, nothing is shared) */
    if (E.canon) memset(E.canon, 0xFF, (size_t)P.nn * sizeof *E.canon);
    uint64_t bn, bw;
    uint32_t s = RX_NONE;
    if (dry && !bound(&E, root, &bn, &bw) && bw <= E.work_limit && bn <= nfa->limit - nfa->n)
        s = m; /* fits even unshared: emission would succeed */
    else
        s = emit(&E, root, m);
    free(E.canon);
    free(E.ctab2);
    free(E.memo);
    free(E.shared_out);
    for (int k = 0; k < P.nn; k++)
        if (!E.seqs[k].borrowed) free(E.seqs[k].v);
    free(E.seqs);
    free(E.ctab);
    if (s == RX_NONE) goto big;
    free(P.nodes);
    free(P.pool.v);
    *start = s;
    return 0;
big:
    if (err && cap)
        snprintf(err, cap, "pattern too large (more than %u NFA states in all, LX_MAX_NFA_STATES)", nfa->limit);
out_err:
    free(P.nodes);
    free(P.pool.v);
    nfa->n = mark;
    return -1;
}

int rx_compile(rx_nfa *nfa, const char *pat, size_t n, int literal, uint32_t term, uint32_t *start, char *err,
               size_t cap) {
    return compile_nfa(nfa, pat, n, literal, term, start, err, cap, 0);
}

int rx_check(const char *pat, size_t n, char *err, size_t cap) {
    rx_nfa nfa = {0};
    uint32_t start;
    return compile_nfa(&nfa, pat, n, 0, 0, &start, err, cap, 1);
}

int rx_append(rx_nfa *dst, const rx_nfa *src, uint32_t src_start, uint32_t term, uint32_t *start, char *err,
              size_t cap) {
    if (err && cap) err[0] = 0;
    if (!dst->limit) dst->limit = LX_MAX_NFA_STATES;
    uint32_t base = dst->n;
    if (src->n > dst->limit - base) goto big;
    if (base + src->n > dst->cap) {
        uint32_t nc = dst->cap ? dst->cap : 256;
        while (nc < base + src->n) nc = nc > dst->limit / 2 ? dst->limit : nc * 2;
        rx_node *nv = realloc(dst->v, (size_t)nc * sizeof *nv);
        if (!nv) goto big;
        dst->v = nv;
        dst->cap = nc;
    }
    for (uint32_t k = 0; k < src->n; k++) {
        rx_node x = src->v[k];
        switch (x.kind) {
        case RX_MATCH: x.out = term; break;
        case RX_FAIL: break;
        case RX_SPLIT:
            if (x.out2 != RX_NONE) x.out2 += base;
            /* fall through */
        default:
            if (x.out != RX_NONE) x.out += base;
            break;
        }
        dst->v[base + k] = x;
    }
    dst->n = base + src->n;
    *start = src_start + base;
    return 0;
big:
    if (err && cap)
        snprintf(err, cap, "pattern too large (more than %u NFA states in all, LX_MAX_NFA_STATES)", dst->limit);
    return -1;
}

void rx_nfa_free(rx_nfa *nfa) {
    free(nfa->v);
    *nfa = (rx_nfa){0};
}
