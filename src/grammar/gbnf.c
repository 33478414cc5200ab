/* GBNF front end (gbnf.h): a recursive-descent reader calling the builder. */
#include "grammar/gbnf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *s;
    size_t n, i;
    gr_grammar *g;
    char *err;
    size_t cap;
    int failed;
    /* rule names: open addressing, values index names[] */
    struct {
        size_t off, len; /* in s */
        int nt;
        int defined;
        size_t first_use;
    } *names;
    int n_names, cap_names;
    int *hash;
    int hash_cap;
} gp;

static void fail(gp *p, size_t at, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    int line = 1, col = 1;
    for (size_t k = 0; k < at && k < p->n; k++) {
        if (p->s[k] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)p->s[k] & 0xC0) != 0x80) {
            col++;
        }
    }
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->cap, "%d:%d: %s", line, col, msg);
}

static int peek(const gp *p) { return p->i < p->n ? (unsigned char)p->s[p->i] : -1; }

static void space(gp *p, int newline_ok) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t') {
            p->i++;
        } else if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        } else if (newline_ok && (c == '\n' || c == '\r')) {
            p->i++;
        } else {
            break;
        }
    }
}

static int word_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static uint64_t hname(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

/* the nonterminal of a rule name (created on first sight); -1 on error */
static int name_nt(gp *p, size_t off, size_t len, int *idx) {
    if (p->hash_cap < 2 * (p->n_names + 1)) {
        int nc = p->hash_cap ? p->hash_cap * 2 : 64;
        int *nh = malloc((size_t)nc * sizeof *nh);
        if (!nh) return -1;
        for (int k = 0; k < nc; k++) nh[k] = -1;
        for (int k = 0; k < p->n_names; k++) {
            size_t j = hname(p->s + p->names[k].off, p->names[k].len) & (size_t)(nc - 1);
            while (nh[j] >= 0) j = (j + 1) & (size_t)(nc - 1);
            nh[j] = k;
        }
        free(p->hash);
        p->hash = nh;
        p->hash_cap = nc;
    }
    size_t j = hname(p->s + off, len) & (size_t)(p->hash_cap - 1);
    while (p->hash[j] >= 0) {
        int k = p->hash[j];
        if (p->names[k].len == len && memcmp(p->s + p->names[k].off, p->s + off, len) == 0) {
            *idx = k;
            return p->names[k].nt;
        }
        j = (j + 1) & (size_t)(p->hash_cap - 1);
    }
    if (p->n_names == p->cap_names) {
        int nc = p->cap_names ? p->cap_names * 2 : 32;
        void *q = realloc(p->names, (size_t)nc * sizeof *p->names);
        if (!q) return -1;
        p->names = q;
        p->cap_names = nc;
    }
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(len > 100 ? 100 : len), p->s + off);
    int nt = gr_nonterminal(p->g, name);
    if (nt < 0) return -1;
    int k = p->n_names++;
    p->names[k].off = off, p->names[k].len = len, p->names[k].nt = nt;
    p->names[k].defined = 0, p->names[k].first_use = off;
    p->hash[j] = k;
    *idx = k;
    return nt;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* one character (code point) of a literal or class, escapes decoded; -1 on error */
static long read_char(gp *p) {
    size_t at = p->i;
    if (p->i >= p->n) {
        fail(p, at, "unexpected end of grammar");
        return -1;
    }
    unsigned char c = (unsigned char)p->s[p->i];
    if (c == '\\') {
        if (p->i + 1 >= p->n) {
            fail(p, at, "unfinished escape");
            return -1;
        }
        char e = p->s[p->i + 1];
        p->i += 2;
        int digits = 0;
        switch (e) {
        case 'n': return '\n';
        case 'r': return '\r';
        case 't': return '\t';
        case '\\': case '"': case '[': case ']': case '-': case '\'': case '/': return e;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default: fail(p, at, "unknown escape \\%c", e); return -1;
        }
        long v = 0;
        for (int k = 0; k < digits; k++) {
            int h = p->i < p->n ? hexval((unsigned char)p->s[p->i]) : -1;
            if (h < 0) {
                fail(p, at, "escape \\%c needs %d hex digits", e, digits);
                return -1;
            }
            v = v * 16 + h;
            p->i++;
        }
        if (v > 0x10FFFF) {
            fail(p, at, "code point %lX is past U+10FFFF", v);
            return -1;
        }
        return v;
    }
    /* UTF-8 */
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!len || p->i + (size_t)len > p->n || (len == 2 && c < 0xC2)) {
        fail(p, at, "invalid UTF-8");
        return -1;
    }
    long v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; k++) {
        unsigned char d = (unsigned char)p->s[p->i + (size_t)k];
        if ((d & 0xC0) != 0x80) {
            fail(p, at, "invalid UTF-8");
            return -1;
        }
        v = v << 6 | (d & 0x3F);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10FFFF)) || (v >= 0xD800 && v <= 0xDFFF)) {
        fail(p, at, "invalid UTF-8");
        return -1;
    }
    p->i += (size_t)len;
    return v;
}

static int utf8(long cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* growable int list */
typedef struct {
    int *v;
    int n, cap;
} ilist;

static int il_push(gp *p, ilist *l, int x) {
    if (x < 0) {
        fail(p, p->i, "%s", gr_error(p->g)[0] ? gr_error(p->g) : "out of memory");
        return -1;
    }
    if (l->n == l->cap) {
        int nc = l->cap ? l->cap * 2 : 16;
        int *q = realloc(l->v, (size_t)nc * sizeof *q);
        if (!q) {
            fail(p, p->i, "out of memory");
            return -1;
        }
        l->v = q, l->cap = nc;
    }
    l->v[l->n++] = x;
    return 0;
}

/* "..." -> one-character literal terminals appended to out */
static int parse_literal(gp *p, ilist *out) {
    size_t at = p->i++;
    while (p->i < p->n && p->s[p->i] != '"') {
        long cp = read_char(p);
        if (cp < 0) return -1;
        char b[4];
        if (il_push(p, out, gr_literal(p->g, b, (size_t)utf8(cp, b)))) return -1;
    }
    if (p->i >= p->n) {
        fail(p, at, "unterminated string literal");
        return -1;
    }
    p->i++;
    return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t k = strlen(s);
    if (*len + k + 1 > *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        while (nc < *len + k + 1) nc *= 2;
        char *q = realloc(*buf, nc);
        if (!q) return -1;
        *buf = q, *cap = nc;
    }
    memcpy(*buf + *len, s, k + 1);
    *len += k;
    return 0;
}

/* [...] -> one regex terminal for one character */
static int parse_class(gp *p) {
    size_t at = p->i++;
    char *re = NULL;
    size_t len = 0, cap = 0;
    int neg = 0, items = 0;
    if (peek(p) == '^') {
        neg = 1;
        p->i++;
    }
    if (append(&re, &len, &cap, neg ? "[^" : "[")) goto oom;
    while (p->i < p->n && p->s[p->i] != ']') {
        long lo = read_char(p), hi;
        if (lo < 0) goto bad;
        hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            size_t rat = p->i;
            hi = read_char(p);
            if (hi < 0) goto bad;
            if (hi < lo) {
                fail(p, rat, "character range out of order");
                goto bad;
            }
        }
        char tmp[64];
        if (hi == lo)
            snprintf(tmp, sizeof tmp, "\\u{%lX}", lo);
        else
            snprintf(tmp, sizeof tmp, "\\u{%lX}-\\u{%lX}", lo, hi);
        if (append(&re, &len, &cap, tmp)) goto oom;
        items++;
    }
    if (p->i >= p->n) {
        fail(p, at, "unterminated character class");
        goto bad;
    }
    p->i++;
    if (!items) {
        fail(p, at, "empty character class");
        goto bad;
    }
    if (append(&re, &len, &cap, "]")) goto oom;
    int t = gr_regex(p->g, re, len);
    if (t < 0) fail(p, at, "%s", gr_error(p->g));
    free(re);
    return t;
oom:
    fail(p, at, "out of memory");
bad:
    free(re);
    return -1;
}

static int parse_alternates(gp *p, int lhs, int depth, int nested);

static int read_int(gp *p, int *v) {
    size_t at = p->i;
    long x = 0;
    if (peek(p) < '0' || peek(p) > '9') {
        fail(p, at, "expected a number");
        return -1;
    }
    while (peek(p) >= '0' && peek(p) <= '9') {
        x = x * 10 + (p->s[p->i++] - '0');
        if (x > GBNF_MAX_REPEAT) {
            fail(p, at, "repetition count past %d", GBNF_MAX_REPEAT);
            return -1;
        }
    }
    *v = (int)x;
    return 0;
}

/* one sequence (up to '|', ')' or the end of the rule) as a rule of lhs */
static int parse_sequence(gp *p, int lhs, int depth, int nested) {
    ilist seq = {0};
    for (;;) {
        int c = peek(p);
        size_t at = p->i;
        int unit_start = seq.n;
        if (c == '"') {
            if (parse_literal(p, &seq)) goto fail;
        } else if (c == '[') {
            if (il_push(p, &seq, parse_class(p))) goto fail;
        } else if (c == '.') {
            p->i++;
            if (il_push(p, &seq, gr_regex(p->g, "[\\u{0}-\\u{10FFFF}]", 18))) goto fail;
        } else if (c == '(') {
            if (depth >= GBNF_MAX_NESTING) {
                fail(p, at, "groups nested deeper than %d", GBNF_MAX_NESTING);
                goto fail;
            }
            p->i++;
            space(p, 1);
            int grp = gr_nonterminal(p->g, NULL);
            if (il_push(p, &seq, grp) || parse_alternates(p, grp, depth + 1, 1)) goto fail;
            if (peek(p) != ')') {
                fail(p, p->i, "expected ')'");
                goto fail;
            }
            p->i++;
        } else if (c >= 0 && word_char(c)) {
            size_t off = p->i;
            while (p->i < p->n && word_char((unsigned char)p->s[p->i])) p->i++;
            size_t save = p->i;
            space(p, 0);
            if (p->i + 3 <= p->n && memcmp(p->s + p->i, "::=", 3) == 0) {
                fail(p, off, "a rule definition here: the previous rule must end with a newline");
                goto fail;
            }
            p->i = save;
            int k;
            int nt = name_nt(p, off, save - off, &k);
            if (nt < 0) {
                fail(p, off, "%s", gr_error(p->g)[0] ? gr_error(p->g) : "out of memory");
                goto fail;
            }
            if (il_push(p, &seq, nt)) goto fail;
        } else {
            break;
        }
        space(p, nested);
        /* postfix operators apply to the whole last element */
        c = peek(p);
        if (c == '*' || c == '+' || c == '?' || c == '{') {
            int min = 0, max = -1;
            size_t pat = p->i++;
            if (c == '+') min = 1;
            if (c == '?') max = 1;
            if (c == '{') {
                space(p, nested);
                if (read_int(p, &min)) goto fail;
                space(p, nested);
                max = min;
                if (peek(p) == ',') {
                    p->i++;
                    space(p, nested);
                    max = -1;
                    if (peek(p) != '}' && read_int(p, &max)) goto fail;
                    space(p, nested);
                }
                if (peek(p) != '}') {
                    fail(p, p->i, "expected '}'");
                    goto fail;
                }
                p->i++;
                if (max >= 0 && max < min) {
                    fail(p, pat, "repetition {%d,%d}: max below min", min, max);
                    goto fail;
                }
            }
            if (seq.n > unit_start) { /* ("" repeated is still empty) */
                int unit = seq.v[unit_start];
                if (seq.n - unit_start > 1) { /* a multi-character literal */
                    unit = gr_nonterminal(p->g, NULL);
                    if (unit < 0 || gr_rule(p->g, unit, seq.v + unit_start, seq.n - unit_start)) {
                        fail(p, pat, "%s", gr_error(p->g));
                        goto fail;
                    }
                }
                seq.n = unit_start;
                if (il_push(p, &seq, gr_repeat(p->g, unit, min, max))) goto fail;
            }
            space(p, nested);
            c = peek(p);
            if (c == '*' || c == '+' || c == '?' || c == '{') {
                fail(p, p->i, "two repetition operators in a row");
                goto fail;
            }
        }
    }
    if (gr_rule(p->g, lhs, seq.v, seq.n)) {
        fail(p, p->i, "%s", gr_error(p->g));
        goto fail;
    }
    free(seq.v);
    return 0;
fail:
    if (!p->failed) fail(p, p->i, "%s", gr_error(p->g)[0] ? gr_error(p->g) : "bad sequence");
    free(seq.v);
    return -1;
}

static int parse_alternates(gp *p, int lhs, int depth, int nested) {
    for (;;) {
        if (parse_sequence(p, lhs, depth, nested)) return -1;
        if (!nested) {
            /* a '|' on a following line continues the rule */
            size_t save = p->i;
            space(p, 1);
            if (peek(p) != '|') p->i = save;
        }
        if (peek(p) != '|') return 0;
        p->i++;
        space(p, 1);
    }
}

gr_grammar *gbnf_parse(const char *text, size_t n, char *err, size_t cap) {
    char dummy[8];
    if (!err || !cap) err = dummy, cap = sizeof dummy;
    err[0] = 0;
    gp P = {.s = text ? text : "", .n = text ? n : 0, .err = err, .cap = cap};
    gp *p = &P;
    p->g = gr_new();
    if (!p->g) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    space(p, 1);
    while (p->i < p->n && !p->failed) {
        size_t off = p->i;
        while (p->i < p->n && word_char((unsigned char)p->s[p->i])) p->i++;
        if (p->i == off) {
            fail(p, off, "expected a rule name");
            break;
        }
        size_t len = p->i - off;
        space(p, 0);
        if (p->i + 3 > p->n || memcmp(p->s + p->i, "::=", 3) != 0) {
            fail(p, p->i, "expected '::=' after the rule name");
            break;
        }
        p->i += 3;
        space(p, 1);
        int k;
        int nt = name_nt(p, off, len, &k);
        if (nt < 0) {
            fail(p, off, "%s", gr_error(p->g)[0] ? gr_error(p->g) : "out of memory");
            break;
        }
        p->names[k].defined = 1;
        if (parse_alternates(p, nt, 0, 0)) break;
        space(p, 0);
        if (p->i < p->n && p->s[p->i] != '\n' && p->s[p->i] != '\r') {
            fail(p, p->i, "unexpected '%c'", p->s[p->i]);
            break;
        }
        space(p, 1);
    }
    int root = -1;
    for (int k = 0; k < p->n_names && !p->failed; k++) {
        if (!p->names[k].defined) {
            fail(p, p->names[k].first_use, "undefined rule '%.*s'", (int)(p->names[k].len > 60 ? 60 : p->names[k].len),
                 p->s + p->names[k].off);
            break;
        }
        if (p->names[k].len == 4 && memcmp(p->s + p->names[k].off, "root", 4) == 0) root = p->names[k].nt;
    }
    if (!p->failed && root < 0) fail(p, p->n, "no 'root' rule");
    if (!p->failed && gr_set_start(p->g, root)) fail(p, p->n, "%s", gr_error(p->g));
    free(p->names);
    free(p->hash);
    if (p->failed) {
        gr_free(p->g);
        return NULL;
    }
    return p->g;
}
