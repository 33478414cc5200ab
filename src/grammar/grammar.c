/* The grammar builder (grammar.h): symbols, rules, interning of literals and patterns, limits,
 * repetition conveniences and a readable dump.
 *
 * Bounded repetition never makes max copies: gr_repeat(sym, min, max) is built from powers of two.
 * E(k) = "exactly 2^k sym" (E(k) -> E(k-1) E(k-1)), O(k) = "0..2^k sym" (O(k) -> O(k-1) O(k-1),
 * O(0) -> sym | empty), and "0..a" followed by "0..b" is exactly "0..a+b". So min..max costs
 * O(log max) nonterminals and rules for any int bounds (min, max <= INT_MAX). */
#include "grammar/grammar_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/lexer.h"

static void set_err(gr_grammar *g, const char *fmt, ...) {
    if (g->err[0]) return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    if (!g->err[0]) snprintf(g->err, sizeof g->err, "error");
}

gr_grammar *gr_new(void) {
    gr_grammar *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->start = -1;
    return g;
}

void gr_free(gr_grammar *g) {
    if (!g) return;
    for (int i = 0; i < g->n_syms; i++) free(g->syms[i].text), lx_pattern_free(g->syms[i].re);
    free(g->syms);
    free(g->lhs);
    free(g->rhs_off);
    free(g->rhs_len);
    free(g->rhs);
    free(g->skip);
    lx_pattern_free(g->skip_re);
    free(g->hash);
    free(g);
}

const char *gr_error(const gr_grammar *g) { return g ? g->err : "no grammar"; }

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 0;
    int nc = *cap ? *cap : 16;
    while (nc < need) nc = nc > (1 << 29) ? need : nc * 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

/* 8 bytes a step: patterns run to kilobytes and are hashed on every lookup */
static uint64_t hash_bytes(int kind, const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind ^ (uint64_t)n << 8, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 32;
    }
    w = 0;
    if (n > i) memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static int add_symbol(gr_grammar *g, int kind, const char *text, size_t len) {
    if (g->err[0]) return -1;
    if (g->n_syms >= GR_MAX_SYMBOLS) {
        set_err(g, "grammar too large: more than %d symbols", GR_MAX_SYMBOLS);
        return -1;
    }
    if (grow((void **)&g->syms, &g->cap_syms, g->n_syms + 1, sizeof *g->syms)) {
        set_err(g, "out of memory");
        return -1;
    }
    char *t = NULL;
    if (text) {
        t = malloc(len + 1);
        if (!t) {
            set_err(g, "out of memory");
            return -1;
        }
        memcpy(t, text, len);
        t[len] = 0;
    }
    g->syms[g->n_syms] = (gr_symbol){(uint8_t)kind, t, len, NULL, 0};
    return g->n_syms++;
}

/* Interned terminal lookup (-1: absent); h = hash_bytes(kind, s, n). */
static int find_interned(const gr_grammar *g, int kind, const char *s, size_t n, uint64_t h) {
    if (!g->hash_cap) return -1;
    size_t j = h & (size_t)(g->hash_cap - 1);
    while (g->hash[j]) {
        const gr_symbol *y = &g->syms[g->hash[j] - 1];
        if (y->kind == kind && y->len == n && memcmp(y->text, s, n) == 0) return g->hash[j] - 1;
        j = (j + 1) & (size_t)(g->hash_cap - 1);
    }
    return -1;
}

/* Interned terminal lookup/insert; h = hash_bytes(kind, s, n). */
static int intern(gr_grammar *g, int kind, const char *s, size_t n, uint64_t h) {
    if (g->err[0]) return -1;
    if (g->hash_cap < 2 * (g->n_syms + 1)) {
        int nc = g->hash_cap ? g->hash_cap * 2 : 64;
        while (nc < 2 * (g->n_syms + 1)) nc *= 2;
        int *nh = calloc((size_t)nc, sizeof *nh);
        if (!nh) {
            set_err(g, "out of memory");
            return -1;
        }
        for (int i = 0; i < g->n_syms; i++) {
            if (g->syms[i].kind == GR_SYM_NT) continue;
            size_t j = g->syms[i].hash & (size_t)(nc - 1);
            while (nh[j]) j = (j + 1) & (size_t)(nc - 1);
            nh[j] = i + 1;
        }
        free(g->hash);
        g->hash = nh;
        g->hash_cap = nc;
    }
    size_t j = h & (size_t)(g->hash_cap - 1);
    while (g->hash[j]) {
        const gr_symbol *y = &g->syms[g->hash[j] - 1];
        if (y->kind == kind && y->len == n && memcmp(y->text, s, n) == 0) return g->hash[j] - 1;
        j = (j + 1) & (size_t)(g->hash_cap - 1);
    }
    int id = add_symbol(g, kind, s, n);
    if (id >= 0) g->hash[j] = id + 1, g->syms[id].hash = h;
    return id;
}

int gr_nonterminal(gr_grammar *g, const char *name) {
    if (!g) return -1;
    return add_symbol(g, GR_SYM_NT, name, name ? strlen(name) : 0);
}

int gr_literal(gr_grammar *g, const char *s, size_t n) {
    if (!g) return -1;
    if (!s && n) {
        set_err(g, "gr_literal: NULL text");
        return -1;
    }
    if (n == 0) {
        set_err(g, "gr_literal: empty literal (use an empty rule instead)");
        return -1;
    }
    return intern(g, GR_SYM_LITERAL, s, n, hash_bytes(GR_SYM_LITERAL, s, n));
}

int gr_regex(gr_grammar *g, const char *pattern, size_t n) {
    if (!g) return -1;
    if (!pattern && n) {
        set_err(g, "gr_regex: NULL pattern");
        return -1;
    }
    if (g->err[0]) return -1;
    if (!pattern) pattern = "";
    uint64_t h = hash_bytes(GR_SYM_REGEX, pattern, n);
    int known = find_interned(g, GR_SYM_REGEX, pattern, n, h);
    if (known >= 0) return known; /* checked when first added */
    char e[200];
    /* compiled once: the lexer reuses it (gr_compile) */
    lx_pattern *re = lx_pattern_new(pattern, n, e, sizeof e);
    if (!re) {
        set_err(g, "bad regular expression /%.*s/: %s", (int)(n > 60 ? 60 : n), pattern, e);
        return -1;
    }
    int id = intern(g, GR_SYM_REGEX, pattern, n, h);
    if (id < 0 || g->syms[id].re) lx_pattern_free(re);
    else g->syms[id].re = re;
    return id;
}

static int valid_sym(const gr_grammar *g, int s) { return s >= 0 && s < g->n_syms; }

int gr_rule(gr_grammar *g, int lhs, const int *rhs, int n) {
    if (!g) return -1;
    if (g->err[0]) return -1;
    if (!valid_sym(g, lhs) || g->syms[lhs].kind != GR_SYM_NT) {
        set_err(g, "gr_rule: left-hand side %d is not a nonterminal", lhs);
        return -1;
    }
    if (n < 0 || (n > 0 && !rhs)) {
        set_err(g, "gr_rule: bad right-hand side");
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (!valid_sym(g, rhs[i])) {
            set_err(g, "gr_rule: unknown symbol %d", rhs[i]);
            return -1;
        }
    if (n > GR_MAX_RHS - g->n_rhs || g->n_rules >= GR_MAX_RHS) {
        set_err(g, "grammar too large: more than %d right-hand-side entries", GR_MAX_RHS);
        return -1;
    }
    if (grow((void **)&g->rhs, &g->cap_rhs, g->n_rhs + n, sizeof *g->rhs)) goto oom;
    int c = g->cap_rules;
    if (grow((void **)&g->lhs, &c, g->n_rules + 1, sizeof *g->lhs)) goto oom;
    c = g->cap_rules;
    if (grow((void **)&g->rhs_off, &c, g->n_rules + 1, sizeof *g->rhs_off)) goto oom;
    c = g->cap_rules;
    if (grow((void **)&g->rhs_len, &c, g->n_rules + 1, sizeof *g->rhs_len)) goto oom;
    g->cap_rules = c;
    g->lhs[g->n_rules] = lhs;
    g->rhs_off[g->n_rules] = g->n_rhs;
    g->rhs_len[g->n_rules] = n;
    if (n) memcpy(g->rhs + g->n_rhs, rhs, (size_t)n * sizeof *rhs);
    g->n_rhs += n;
    g->n_rules++;
    return 0;
oom:
    set_err(g, "out of memory");
    return -1;
}

int gr_set_start(gr_grammar *g, int nt) {
    if (!g || g->err[0]) return -1;
    if (!valid_sym(g, nt) || g->syms[nt].kind != GR_SYM_NT) {
        set_err(g, "gr_set_start: %d is not a nonterminal", nt);
        return -1;
    }
    g->start = nt;
    return 0;
}

int gr_start(const gr_grammar *g) { return g ? g->start : -1; }

int gr_set_skip(gr_grammar *g, const char *pattern, size_t n) {
    if (!g || g->err[0]) return -1;
    free(g->skip);
    lx_pattern_free(g->skip_re);
    g->skip = NULL;
    g->skip_re = NULL;
    g->skip_len = 0;
    g->has_skip = 0;
    if (!pattern) return 0;
    char e[200];
    g->skip_re = lx_pattern_new(pattern, n, e, sizeof e);
    if (!g->skip_re) {
        set_err(g, "bad skip pattern: %s", e);
        return -1;
    }
    g->skip = malloc(n + 1);
    if (!g->skip) {
        set_err(g, "out of memory");
        return -1;
    }
    memcpy(g->skip, pattern, n);
    g->skip[n] = 0;
    g->skip_len = n;
    g->has_skip = 1;
    return 0;
}

static int named_nt(gr_grammar *g, const char *what) {
    char name[48];
    snprintf(name, sizeof name, "%s_%d", what, g->n_syms);
    return gr_nonterminal(g, name);
}

static int rule2(gr_grammar *g, int lhs, int a, int b) {
    int r[2] = {a, b};
    return gr_rule(g, lhs, r, 2);
}

/* exactly n copies (n >= 1): binary decomposition */
static int exactly(gr_grammar *g, int sym, int n) {
    int pw = sym; /* sym^(2^k) */
    int acc = -1;
    for (unsigned k = (unsigned)n;; k >>= 1) {
        if (k & 1) {
            if (acc < 0) {
                acc = pw;
            } else {
                int t = named_nt(g, "seq");
                if (t < 0 || rule2(g, t, acc, pw)) return -1;
                acc = t;
            }
        }
        if (k <= 1) break;
        int t = named_nt(g, "pow");
        if (t < 0 || rule2(g, t, pw, pw)) return -1;
        pw = t;
    }
    return acc;
}

/* 0..n copies (n >= 1): n copies of (sym | empty) */
static int up_to(gr_grammar *g, int sym, int n) {
    int opt = named_nt(g, "opt");
    if (opt < 0 || gr_rule(g, opt, &sym, 1) || gr_rule(g, opt, NULL, 0)) return -1;
    return exactly(g, opt, n);
}

int gr_repeat(gr_grammar *g, int sym, int min, int max) {
    if (!g || g->err[0]) return -1;
    if (!valid_sym(g, sym)) {
        set_err(g, "gr_repeat: unknown symbol %d", sym);
        return -1;
    }
    if (min < 0 || (max >= 0 && max < min)) {
        set_err(g, "gr_repeat: bad bounds {%d,%d}", min, max);
        return -1;
    }
    int r = named_nt(g, "rep");
    if (r < 0) return -1;
    int parts[2], np = 0;
    if (min > 0) {
        int e = exactly(g, sym, min);
        if (e < 0) return -1;
        parts[np++] = e;
    }
    if (max < 0) {
        /* star -> star sym | empty (left recursion: one Earley item per position) */
        int star = named_nt(g, "star");
        if (star < 0 || rule2(g, star, star, sym) || gr_rule(g, star, NULL, 0)) return -1;
        parts[np++] = star;
    } else if (max > min) {
        int u = up_to(g, sym, max - min);
        if (u < 0) return -1;
        parts[np++] = u;
    }
    if (gr_rule(g, r, parts, np)) return -1;
    return r;
}

int gr_wrap(gr_grammar *g, const char *prefix, const char *suffix, const char *sep, int min, int max) {
    if (!g || g->err[0]) return -1;
    int rhs[3], k = 0, item = gr_nonterminal(g, "wrapped");
    if (prefix && prefix[0]) rhs[k++] = gr_literal(g, prefix, strlen(prefix));
    rhs[k++] = gr_start(g);
    if (suffix && suffix[0]) rhs[k++] = gr_literal(g, suffix, strlen(suffix));
    for (int i = 0; i < k; i++)
        if (rhs[i] < 0) {
            set_err(g, "gr_wrap: no start symbol");
            return -1;
        }
    if (item < 0 || gr_rule(g, item, rhs, k)) return -1;
    if (min || max) {
        int s = sep && sep[0] ? gr_literal(g, sep, strlen(sep)) : -2;
        if (s == -1) return -1;
        item = s == -2 ? gr_repeat(g, item, min, max) : gr_list(g, item, s, min, max);
        if (item < 0) return -1;
    }
    return gr_set_start(g, item);
}

int gr_list(gr_grammar *g, int item, int sep, int min, int max) {
    if (!g || g->err[0]) return -1;
    if (!valid_sym(g, item) || !valid_sym(g, sep)) {
        set_err(g, "gr_list: unknown symbol");
        return -1;
    }
    if (min < 0 || (max >= 0 && max < min)) {
        set_err(g, "gr_list: bad bounds {%d,%d}", min, max);
        return -1;
    }
    int r = named_nt(g, "list");
    if (r < 0) return -1;
    if (max == 0) return gr_rule(g, r, NULL, 0) ? -1 : r;
    /* item (sep item){min-1 .. max-1}, or empty when min == 0 */
    int pair = named_nt(g, "sepitem");
    if (pair < 0 || rule2(g, pair, sep, item)) return -1;
    int tail = gr_repeat(g, pair, min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1);
    if (tail < 0 || rule2(g, r, item, tail)) return -1;
    if (min == 0 && gr_rule(g, r, NULL, 0)) return -1;
    return r;
}

int gr_choice(gr_grammar *g, const int *syms, int n) {
    if (!g || g->err[0]) return -1;
    if (n < 0 || (n && !syms)) {
        set_err(g, "gr_choice: bad arguments");
        return -1;
    }
    int r = named_nt(g, "choice");
    if (r < 0) return -1;
    for (int i = 0; i < n; i++)
        if (gr_rule(g, r, &syms[i], 1)) return -1;
    return r;
}

int gr_is_terminal(const gr_grammar *g, int sym) {
    return g && valid_sym(g, sym) && g->syms[sym].kind != GR_SYM_NT;
}

int gr_n_symbols(const gr_grammar *g) { return g ? g->n_syms : 0; }

/* ---- dump ---- */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_sym(sbuf *b, const gr_grammar *g, int s) {
    const gr_symbol *y = &g->syms[s];
    char tmp[32];
    if (y->kind == GR_SYM_NT) {
        if (y->text && y->len) {
            sb_put(b, y->text, y->len);
        } else {
            snprintf(tmp, sizeof tmp, "_%d", s);
            sb_str(b, tmp);
        }
    } else if (y->kind == GR_SYM_LITERAL) {
        sb_str(b, "\"");
        for (size_t i = 0; i < y->len; i++) {
            unsigned char c = (unsigned char)y->text[i];
            if (c == '"' || c == '\\') {
                tmp[0] = '\\';
                tmp[1] = (char)c;
                sb_put(b, tmp, 2);
            } else if (c == '\n') {
                sb_str(b, "\\n");
            } else if (c == '\t') {
                sb_str(b, "\\t");
            } else if (c == '\r') {
                sb_str(b, "\\r");
            } else if (c < 0x20 || c == 0x7f) {
                snprintf(tmp, sizeof tmp, "\\x%02X", c);
                sb_str(b, tmp);
            } else {
                sb_put(b, (const char *)&y->text[i], 1);
            }
        }
        sb_str(b, "\"");
    } else {
        sb_str(b, "/");
        for (size_t i = 0; i < y->len; i++) {
            if (y->text[i] == '/') sb_str(b, "\\");
            if (y->text[i] == '\n') {
                sb_str(b, "\\n");
                continue;
            }
            sb_put(b, &y->text[i], 1);
        }
        sb_str(b, "/");
    }
}

char *gr_dump(const gr_grammar *g) {
    if (!g) return NULL;
    sbuf b = {0};
    sb_str(&b, "");
    /* rules grouped by lhs, start first */
    int *first = malloc(((size_t)g->n_syms + 1) * sizeof *first);
    int *next = malloc(((size_t)g->n_rules + 1) * sizeof *next);
    if (!first || !next) {
        free(first);
        free(next);
        free(b.p);
        return NULL;
    }
    for (int i = 0; i < g->n_syms; i++) first[i] = -1;
    for (int r = g->n_rules - 1; r >= 0; r--) {
        next[r] = first[g->lhs[r]];
        first[g->lhs[r]] = r;
    }
    if (g->has_skip) {
        sb_str(&b, "%skip /");
        sb_put(&b, g->skip, g->skip_len);
        sb_str(&b, "/\n");
    }
    for (int k = -1; k < g->n_syms; k++) {
        int s = k < 0 ? g->start : k;
        if (s < 0 || (k >= 0 && s == g->start)) continue;
        if (g->syms[s].kind != GR_SYM_NT) continue;
        sb_sym(&b, g, s);
        sb_str(&b, " ::=");
        if (first[s] < 0) sb_str(&b, " (no rules)");
        for (int r = first[s]; r >= 0; r = next[r]) {
            if (r != first[s]) sb_str(&b, " |");
            if (!g->rhs_len[r]) sb_str(&b, " \"\"");
            for (int i = 0; i < g->rhs_len[r]; i++) {
                sb_str(&b, " ");
                sb_sym(&b, g, g->rhs[g->rhs_off[r] + i]);
            }
        }
        sb_str(&b, "\n");
    }
    free(first);
    free(next);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
