/* Regular expressions of JSON lexemes for the JSON Schema front end (json_schema_impl.h):
 * canonical dumps of values, strings (any escapes; counted code points; `pattern` rewritten over
 * the encoded text; formats), property names other than the listed ones, and numbers within
 * bounds (integer ranges as exact digit-string regexes). */
#include "grammar/json_schema_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/lexer.h"

/* ---- buffer ---- */

void jre_put(jre_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n + 1) nc *= 2;
        char *q = realloc(b->s, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->s = q;
        b->cap = nc;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void jre_puts(jre_buf *b, const char *s) { jre_put(b, s, strlen(s)); }

/* \\u{H..} (lower-case hex, as "\\u{%lx}"), without printf: the key tries write thousands */
static void put_u_brace(jre_buf *b, unsigned long c) {
    char t[32];
    size_t k = sizeof t;
    t[--k] = '}';
    do t[--k] = "0123456789abcdef"[c & 15], c >>= 4;
    while (c);
    t[--k] = '{', t[--k] = 'u', t[--k] = '\\';
    jre_put(b, t + k, sizeof t - k);
}

void jre_printf(jre_buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) {
        jre_put(b, tmp, (size_t)k);
        return;
    }
    char *big = malloc((size_t)k + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    jre_put(b, big, (size_t)k);
    free(big);
}

void jre_free(jre_buf *b) {
    free(b->s);
    *b = (jre_buf){0};
}

void jre_lit(jre_buf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (strchr("\\^$.|?*+()[]{}/-", c) && c) {
            char e[2] = {'\\', (char)c};
            jre_put(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            jre_printf(b, "\\x%02x", c);
        } else {
            jre_put(b, (const char *)&c, 1);
        }
    }
}

/* ---- UTF-8 ---- */

/* Decodes one code point at s[*i]; -1 if invalid. */
static long utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80) return (*i)++, (long)c;
    int k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : -1;
    if (k < 0 || c > 0xF4 || n - *i <= (size_t)k) return -1;
    unsigned long v = c & (0x3Fu >> k);
    for (int j = 1; j <= k; j++) {
        unsigned d = s[*i + (size_t)j];
        if ((d & 0xC0) != 0x80) return -1;
        v = v << 6 | (d & 0x3F);
    }
    static const unsigned long minv[4] = {0, 0x80, 0x800, 0x10000};
    if (v < minv[k] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return -1;
    *i += (size_t)k + 1;
    return (long)v;
}

static void put_utf8(jre_buf *b, unsigned long c) {
    char o[4];
    size_t k;
    if (c < 0x80) o[0] = (char)c, k = 1;
    else if (c < 0x800) o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), k = 2;
    else if (c < 0x10000)
        o[0] = (char)(0xE0 | c >> 12), o[1] = (char)(0x80 | (c >> 6 & 63)), o[2] = (char)(0x80 | (c & 63)), k = 3;
    else
        o[0] = (char)(0xF0 | c >> 18), o[1] = (char)(0x80 | (c >> 12 & 63)), o[2] = (char)(0x80 | (c >> 6 & 63)),
        o[3] = (char)(0x80 | (c & 63)), k = 4;
    jre_put(b, o, k);
}

/* Python's json.dumps(ensure_ascii=False) encoding of one code point (no quotes). */
static void enc_cp(jre_buf *b, unsigned long c) {
    switch (c) {
    case '"': jre_puts(b, "\\\""); return;
    case '\\': jre_puts(b, "\\\\"); return;
    case '\n': jre_puts(b, "\\n"); return;
    case '\r': jre_puts(b, "\\r"); return;
    case '\t': jre_puts(b, "\\t"); return;
    case 8: jre_puts(b, "\\b"); return;
    case 12: jre_puts(b, "\\f"); return;
    }
    if (c < 0x20) jre_printf(b, "\\u%04lx", c);
    else put_utf8(b, c);
}

static int enc_string(jre_buf *b, const char *s, size_t n) {
    jre_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        long c = utf8_next((const unsigned char *)s, n, &i);
        if (c < 0) return -1;
        enc_cp(b, (unsigned long)c);
    }
    jre_put(b, "\"", 1);
    return 0;
}

/* ---- numbers ---- */

void jre_double_repr(char *out, size_t cap, double x) {
    if (!isfinite(x)) {
        snprintf(out, cap, "%s", isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    char e[64];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, x);
        if (strtod(e, NULL) == x) break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    const char *q = e;
    int neg = *q == '-';
    if (neg) q++;
    char dig[32];
    int nd = 0;
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9') dig[nd++] = *q;
    int ex = atoi(q + 1);
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    dig[nd] = 0;
    int decpt = ex + 1;
    char body[400];
    if (x == 0) {
        snprintf(body, sizeof body, "0.0");
    } else if (decpt <= -4 || decpt > 16) {
        snprintf(body, sizeof body, "%c%s%s%se%c%02d", dig[0], nd > 1 ? "." : "", dig + 1, "", ex < 0 ? '-' : '+',
                 ex < 0 ? -ex : ex);
    } else if (decpt <= 0) {
        snprintf(body, sizeof body, "0.%.*s%s", -decpt, "0000", dig);
    } else if (decpt >= nd) {
        snprintf(body, sizeof body, "%s%.*s.0", dig, decpt - nd, "0000000000000000");
    } else {
        snprintf(body, sizeof body, "%.*s.%s", decpt, dig, dig + decpt);
    }
    snprintf(out, cap, "%s%s", neg ? "-" : "", body);
}

void jre_number_eq(jre_buf *b, const json_t *v) {
    char t[420];
    if (json_is_integer(v)) {
        snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        jre_lit(b, t, strlen(t));
        jre_puts(b, JRE_ZERO_FRAC);
        return;
    }
    double x = json_real_value(v);
    jre_double_repr(t, sizeof t, x);
    size_t n = strlen(t);
    if (n > 2 && !strcmp(t + n - 2, ".0")) {
        jre_lit(b, t, n - 2);
        jre_puts(b, JRE_ZERO_FRAC);
    } else {
        jre_lit(b, t, n);
    }
}

int jre_dump(jre_buf *b, const json_t *v) {
    char t[420];
    switch (json_typeof(v)) {
    case JSON_NULL: jre_puts(b, "null"); return 0;
    case JSON_TRUE: jre_puts(b, "true"); return 0;
    case JSON_FALSE: jre_puts(b, "false"); return 0;
    case JSON_INTEGER:
        snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        jre_puts(b, t);
        return 0;
    case JSON_REAL:
        jre_double_repr(t, sizeof t, json_real_value(v));
        jre_puts(b, t);
        return 0;
    case JSON_STRING: return enc_string(b, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        jre_put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) jre_put(b, ",", 1);
            if (jre_dump(b, json_array_get(v, i))) return -1;
        }
        jre_put(b, "]", 1);
        return 0;
    }
    case JSON_OBJECT: {
        jre_put(b, "{", 1);
        const char *k;
        json_t *x;
        int first = 1;
        json_object_foreach((json_t *)v, k, x) {
            if (!first) jre_put(b, ",", 1);
            first = 0;
            if (enc_string(b, k, strlen(k))) return -1;
            jre_put(b, ":", 1);
            if (jre_dump(b, x)) return -1;
        }
        jre_put(b, "}", 1);
        return 0;
    }
    }
    return -1;
}

/* ---- strings ---- */

#define HEX "[0-9a-fA-F]"
const char JRE_CHAR[] = "(?:[^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u" HEX "{4})";
const char JRE_CHAR1[] = "(?:[^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u(?:[0-9a-cA-CefEF]" HEX "{3}|[dD][0-7]" HEX
                         "{2}|[dD][89abAB]" HEX "{2}\\\\u[dD][c-fC-F]" HEX "{2}))";

void jre_string_len(jre_buf *b, long min, long max) {
    jre_puts(b, "\"");
    jre_puts(b, JRE_CHAR1);
    if (max < 0) jre_printf(b, "{%ld,}", min);
    else jre_printf(b, "{%ld,%ld}", min, max);
    jre_puts(b, "\"");
}

/* ---- pattern rewriting ---- */

typedef struct {
    unsigned long lo, hi;
} rng;

typedef struct {
    rng *v;
    int n, cap, oom;
} rset;

static void rs_add(rset *s, unsigned long lo, unsigned long hi) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 16;
        rng *q = realloc(s->v, (size_t)nc * sizeof *q);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->v = q;
        s->cap = nc;
    }
    s->v[s->n++] = (rng){lo, hi};
}

static int rng_cmp(const void *a, const void *b) {
    const rng *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void rs_norm(rset *s) {
    if (!s->n) return;
    qsort(s->v, (size_t)s->n, sizeof *s->v, rng_cmp);
    int w = 0;
    for (int i = 1; i < s->n; i++) {
        if (s->v[i].lo <= s->v[w].hi + 1) {
            if (s->v[i].hi > s->v[w].hi) s->v[w].hi = s->v[i].hi;
        } else {
            s->v[++w] = s->v[i];
        }
    }
    s->n = w + 1;
}

static void rs_negate(rset *s) {
    rs_norm(s);
    rset t = {0};
    unsigned long at = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->v[i].lo > at) rs_add(&t, at, s->v[i].lo - 1);
        at = s->v[i].hi + 1;
    }
    if (at <= 0x10FFFF) rs_add(&t, at, 0x10FFFF);
    free(s->v);
    t.oom |= s->oom;
    *s = t;
}

static void rs_predef(rset *s, char c) {
    rset t = {0};
    switch (c | 32) {
    case 'd': rs_add(&t, '0', '9'); break;
    case 'w':
        rs_add(&t, '0', '9'), rs_add(&t, 'A', 'Z'), rs_add(&t, 'a', 'z'), rs_add(&t, '_', '_');
        break;
    default: /* s: ECMAScript white space and line terminators */
        rs_add(&t, 9, 13), rs_add(&t, 32, 32), rs_add(&t, 0xa0, 0xa0), rs_add(&t, 0x1680, 0x1680);
        rs_add(&t, 0x2000, 0x200a), rs_add(&t, 0x2028, 0x2029), rs_add(&t, 0x202f, 0x202f);
        rs_add(&t, 0x205f, 0x205f), rs_add(&t, 0x3000, 0x3000), rs_add(&t, 0xfeff, 0xfeff);
    }
    if (c >= 'A' && c <= 'Z') rs_negate(&t);
    for (int i = 0; i < t.n; i++) rs_add(s, t.v[i].lo, t.v[i].hi);
    s->oom |= t.oom;
    free(t.v);
}

/* The alternatives of the canonical encodings of the code points in s (normalized). */
static void emit_set(jre_buf *b, rset *s) {
    rs_norm(s);
    jre_buf raw = {0};
    int n_alt = 0;
    jre_buf alts = {0};
    for (int i = 0; i < s->n; i++) {
        for (unsigned long c = s->v[i].lo; c <= s->v[i].hi && c < 0x20; c++) {
            jre_buf e = {0};
            enc_cp(&e, c);
            if (alts.n) jre_put(&alts, "|", 1);
            jre_lit(&alts, e.s, e.n);
            jre_free(&e);
            n_alt++;
        }
        /* raw ranges: skip controls, '"', '\\' and surrogates */
        unsigned long cuts[][2] = {{0, 0x1f}, {0x22, 0x22}, {0x5c, 0x5c}, {0xD800, 0xDFFF}};
        unsigned long lo = s->v[i].lo, hi = s->v[i].hi;
        while (lo <= hi) {
            unsigned long end = hi;
            int cut = 0;
            for (int k = 0; k < 4; k++) {
                if (lo >= cuts[k][0] && lo <= cuts[k][1]) {
                    lo = cuts[k][1] + 1;
                    cut = 1;
                    break;
                }
                if (cuts[k][0] > lo && cuts[k][0] - 1 < end) end = cuts[k][0] - 1;
            }
            if (cut) continue;
            put_u_brace(&raw, lo);
            if (end != lo) jre_puts(&raw, "-"), put_u_brace(&raw, end);
            if (end == hi) break;
            lo = end + 1;
        }
        if (s->v[i].lo <= '"' && s->v[i].hi >= '"') jre_puts(&alts, alts.n ? "|\\\\\"" : "\\\\\""), n_alt++;
        if (s->v[i].lo <= '\\' && s->v[i].hi >= '\\') jre_puts(&alts, alts.n ? "|\\\\\\\\" : "\\\\\\\\"), n_alt++;
    }
    jre_puts(b, "(?:");
    if (raw.n) {
        jre_puts(b, "[");
        jre_put(b, raw.s, raw.n);
        jre_puts(b, "]");
    }
    if (alts.n) {
        if (raw.n) jre_puts(b, "|");
        jre_put(b, alts.s, alts.n);
    }
    if (!raw.n && !alts.n) jre_puts(b, "[]");
    jre_puts(b, ")");
    b->oom |= raw.oom | alts.oom;
    jre_free(&raw);
    jre_free(&alts);
}

typedef struct {
    const unsigned char *p;
    size_t n, i;
    char *err;
    size_t cap;
    int failed;
} pp;

static int pfail(pp *P, const char *msg) {
    if (!P->failed && P->cap) snprintf(P->err, P->cap, "pattern offset %zu: %s", P->i, msg);
    P->failed = 1;
    return -1;
}

static int hexv(int c) {
    return c >= '0' && c <= '9' ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
}

/* After a backslash: 0 with a code point, 1 with classes added to s, -1 error. */
static int p_escape(pp *P, int in_class, unsigned long *cp, rset *s) {
    if (P->i >= P->n) return pfail(P, "lone backslash at the end");
    int c = P->p[P->i++];
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S': rs_predef(s, (char)c); return 1;
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case '0':
        if (P->i < P->n && P->p[P->i] >= '0' && P->p[P->i] <= '9') return pfail(P, "octal escape not supported");
        *cp = 0;
        return 0;
    case 'b':
        if (in_class) {
            *cp = 8;
            return 0;
        }
        return pfail(P, "word boundary \\b not supported");
    case 'B': return pfail(P, "word boundary \\B not supported");
    case 'k': return pfail(P, "backreference not supported");
    case 'p': case 'P': return pfail(P, "Unicode property escapes not supported");
    case 'c':
        if (P->i < P->n && ((P->p[P->i] | 32) >= 'a' && (P->p[P->i] | 32) <= 'z')) {
            *cp = P->p[P->i++] & 31u;
            return 0;
        }
        return pfail(P, "bad \\c escape");
    case 'x': case 'u': {
        int nd = c == 'x' ? 2 : 4;
        if (c == 'u' && P->i < P->n && P->p[P->i] == '{') return pfail(P, "\\u{...} needs the u flag");
        unsigned long v = 0;
        for (int k = 0; k < nd; k++) {
            if (P->i >= P->n || hexv(P->p[P->i]) < 0) return pfail(P, "bad hex escape");
            v = v * 16 + (unsigned long)hexv(P->p[P->i++]);
        }
        if (c == 'u' && v >= 0xD800 && v <= 0xDBFF && P->i + 5 < P->n + 0 && P->p[P->i] == '\\' &&
            P->p[P->i + 1] == 'u') {
            unsigned long w = 0;
            int ok = 1;
            for (int k = 0; k < 4; k++) {
                int h = P->i + 2 + (size_t)k < P->n ? hexv(P->p[P->i + 2 + (size_t)k]) : -1;
                if (h < 0) ok = 0;
                else w = w * 16 + (unsigned long)h;
            }
            if (ok && w >= 0xDC00 && w <= 0xDFFF) {
                P->i += 6;
                v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
            }
        }
        if (v >= 0xD800 && v <= 0xDFFF) return pfail(P, "lone surrogate escape");
        *cp = v;
        return 0;
    }
    }
    if (c >= '1' && c <= '9') return pfail(P, "backreference not supported");
    P->i--;
    long v = utf8_next(P->p, P->n, &P->i);
    if (v < 0) return pfail(P, "invalid UTF-8");
    *cp = (unsigned long)v;
    return 0;
}

static int p_class(pp *P, rset *s) { /* after '[' */
    int neg = 0;
    if (P->i < P->n && P->p[P->i] == '^') neg = 1, P->i++;
    while (1) {
        if (P->i >= P->n) return pfail(P, "unterminated class");
        if (P->p[P->i] == ']') {
            P->i++;
            break;
        }
        unsigned long a;
        int kind;
        if (P->p[P->i] == '\\') {
            P->i++;
            kind = p_escape(P, 1, &a, s);
            if (kind < 0) return -1;
            if (kind == 1) continue;
        } else {
            long v = utf8_next(P->p, P->n, &P->i);
            if (v < 0) return pfail(P, "invalid UTF-8");
            a = (unsigned long)v;
        }
        if (P->i + 1 < P->n && P->p[P->i] == '-' && P->p[P->i + 1] != ']') {
            P->i++;
            unsigned long z;
            if (P->p[P->i] == '\\') {
                P->i++;
                kind = p_escape(P, 1, &z, s);
                if (kind < 0) return -1;
                if (kind == 1) { /* [a-\d]: a, '-' and the class */
                    rs_add(s, a, a), rs_add(s, '-', '-');
                    continue;
                }
            } else {
                long v = utf8_next(P->p, P->n, &P->i);
                if (v < 0) return pfail(P, "invalid UTF-8");
                z = (unsigned long)v;
            }
            if (z < a) return pfail(P, "class range out of order");
            rs_add(s, a, z);
        } else {
            rs_add(s, a, a);
        }
    }
    if (neg) rs_negate(s);
    return s->oom ? pfail(P, "out of memory") : 0;
}

/* Reads a quantifier at P->i if any: 1 with text appended to q, 0 none. */
static int p_quant(pp *P, jre_buf *q, long *qmin, long *qmax) {
    if (P->i >= P->n) return 0;
    int c = P->p[P->i];
    if (c == '*' || c == '+' || c == '?') {
        P->i++;
        *qmin = c == '+';
        *qmax = c == '?' ? 1 : -1;
        jre_put(q, (const char *)&P->p[P->i - 1], 1);
    } else if (c == '{') {
        size_t k = P->i + 1;
        long m = 0, x = -1;
        int nd = 0;
        while (k < P->n && P->p[k] >= '0' && P->p[k] <= '9' && m < 100000000) m = m * 10 + (P->p[k++] - '0'), nd++;
        if (!nd) return 0;
        if (k < P->n && P->p[k] == ',') {
            k++;
            int nd2 = 0;
            long v = 0;
            while (k < P->n && P->p[k] >= '0' && P->p[k] <= '9' && v < 100000000) v = v * 10 + (P->p[k++] - '0'), nd2++;
            x = nd2 ? v : -1;
        } else {
            x = m;
        }
        if (k >= P->n || P->p[k] != '}') return 0;
        jre_put(q, (const char *)&P->p[P->i], k + 1 - P->i);
        P->i = k + 1;
        *qmin = m;
        *qmax = x;
    } else {
        return 0;
    }
    if (P->i < P->n && P->p[P->i] == '?') P->i++; /* lazy: same language */
    return 1;
}

int jre_pattern(jre_buf *b, const char *pat, size_t n, long len_min, long len_max, int *folded, char *err,
                size_t cap) {
    pp P = {(const unsigned char *)pat, n, 0, err, cap, 0};
    *folded = 0;
    jre_buf body = {0};
    int depth = 0, alt_start = 1, bol = 0, n_alts = 0;
    /* each top-level alternative: [^]*? body [^]*? according to its anchors */
    jre_buf out = {0};
    size_t alt_off = 0;
    int n_atoms = 0, single_class = 0;
    long qmin = 1, qmax = 1;
    jre_buf last_atom = {0};
    while (1) {
        int end = P.i >= P.n;
        int c = end ? 0 : P.p[P.i];
        if (end || (c == '|' && depth == 0)) {
            int eol = 0;
            if (body.n >= 1 && body.s[body.n - 1] == '$' && (body.n < 2 || body.s[body.n - 2] != '\\')) {
                /* a trailing anchor was recorded as "$" */
                body.n--;
                body.s[body.n] = 0;
                eol = 1;
            }
            if (n_alts) jre_puts(&out, "|");
            if (!bol) jre_printf(&out, "%s*", JRE_CHAR);
            jre_puts(&out, "(?:");
            jre_put(&out, body.s ? body.s : "", body.n);
            jre_puts(&out, ")");
            if (!eol) jre_printf(&out, "%s*", JRE_CHAR);
            if (end && n_alts == 0 && bol && eol && n_atoms == 1 && single_class) *folded = 2; /* candidate */
            n_alts++;
            body.n = 0;
            if (body.s) body.s[0] = 0;
            bol = 0;
            alt_start = 1;
            (void)alt_off;
            if (end) break;
            P.i++;
            n_atoms = 0;
            continue;
        }
        if (c == '^') {
            if (!(alt_start && depth == 0)) {
                jre_free(&body), jre_free(&out), jre_free(&last_atom);
                return pfail(&P, "anchor ^ inside the pattern not supported");
            }
            P.i++;
            bol = 1;
            continue;
        }
        alt_start = 0;
        if (c == '$') {
            P.i++;
            if (!(depth == 0 && (P.i >= P.n || P.p[P.i] == '|'))) {
                jre_free(&body), jre_free(&out), jre_free(&last_atom);
                return pfail(&P, "anchor $ inside the pattern not supported");
            }
            jre_puts(&body, "$");
            continue;
        }
        jre_buf atom = {0};
        int is_class = 0;
        if (c == '(') {
            P.i++;
            if (P.i < P.n && P.p[P.i] == '?') {
                if (P.i + 1 < P.n && P.p[P.i + 1] == ':') P.i += 2;
                else if (P.i + 2 < P.n && P.p[P.i + 1] == '<' && P.p[P.i + 2] != '=' && P.p[P.i + 2] != '!') {
                    while (P.i < P.n && P.p[P.i] != '>') P.i++;
                    P.i++;
                } else {
                    jre_free(&body), jre_free(&out), jre_free(&last_atom);
                    return pfail(&P, "lookaround not supported");
                }
            }
            depth++;
            if (depth > 200) {
                jre_free(&body), jre_free(&out), jre_free(&last_atom);
                return pfail(&P, "groups nested too deep");
            }
            jre_puts(&body, "(?:");
            n_atoms += 2; /* a group is never the single-class form */
            continue;
        }
        if (c == ')') {
            if (!depth) {
                jre_free(&body), jre_free(&out), jre_free(&last_atom);
                return pfail(&P, "unbalanced )");
            }
            depth--;
            P.i++;
            jre_puts(&atom, ")");
        } else if (c == '|') {
            P.i++;
            jre_puts(&body, "|");
            n_atoms += 2;
            continue;
        } else if (c == '*' || c == '+' || c == '?') {
            jre_free(&body), jre_free(&out), jre_free(&last_atom);
            return pfail(&P, "nothing to repeat");
        } else {
            rset s = {0};
            unsigned long cp = 0;
            int kind = 0;
            if (c == '[') {
                P.i++;
                kind = p_class(&P, &s) < 0 ? -1 : 1;
            } else if (c == '.') {
                P.i++;
                rs_add(&s, '\n', '\n');
                rs_negate(&s);
                kind = 1;
            } else if (c == '\\') {
                P.i++;
                kind = p_escape(&P, 0, &cp, &s);
            } else if (c == '{' && 0) {
            } else {
                long v = utf8_next(P.p, P.n, &P.i);
                if (v < 0) kind = pfail(&P, "invalid UTF-8");
                cp = (unsigned long)v;
            }
            if (kind < 0) {
                free(s.v);
                jre_free(&body), jre_free(&out), jre_free(&last_atom);
                return -1;
            }
            if (kind == 0) {
                jre_buf e = {0};
                enc_cp(&e, cp);
                jre_puts(&atom, "(?:");
                jre_lit(&atom, e.s, e.n);
                jre_puts(&atom, ")");
                jre_free(&e);
            } else {
                emit_set(&atom, &s);
            }
            free(s.v);
            is_class = 1;
        }
        jre_buf q = {0};
        long mn = 1, mx = 1;
        int has_q = p_quant(&P, &q, &mn, &mx);
        if (is_class) {
            n_atoms++;
            single_class = 1;
            qmin = mn, qmax = mx;
            last_atom.n = 0;
            jre_put(&last_atom, atom.s, atom.n);
        }
        jre_put(&body, atom.s, atom.n);
        if (has_q) jre_put(&body, q.s, q.n);
        jre_free(&q);
        jre_free(&atom);
    }
    if (depth) {
        jre_free(&body), jre_free(&out), jre_free(&last_atom);
        return pfail(&P, "unbalanced (");
    }
    if (*folded == 2 && (len_min > 0 || len_max >= 0)) {
        /* ^X{qmin,qmax}$ with lengths: X{max(mins), min(maxes)} */
        long lo = qmin > len_min ? qmin : len_min;
        long hi = qmax;
        if (len_max >= 0 && (hi < 0 || len_max < hi)) hi = len_max;
        out.n = 0;
        jre_put(&out, last_atom.s, last_atom.n);
        if (hi >= 0 && hi < lo) jre_puts(&out, "[]");
        else if (hi < 0) jre_printf(&out, "{%ld,}", lo);
        else jre_printf(&out, "{%ld,%ld}", lo, hi);
        *folded = 1;
    } else {
        *folded = *folded == 2 ? 1 : 0;
        if (len_min <= 0 && len_max < 0) *folded = 1;
    }
    jre_puts(b, "\"(?:");
    jre_put(b, out.s ? out.s : "", out.n);
    jre_puts(b, ")\"");
    int oom = body.oom | out.oom | last_atom.oom;
    jre_free(&body), jre_free(&out), jre_free(&last_atom);
    if (oom) return pfail(&P, "out of memory");
    return 0;
}

/* ---- formats ---- */

#define YEAR "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
#define LEAP "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
#define MD "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
#define DATE "(?:" YEAR "-" MD "|" LEAP "-02-29)"
#define TIME "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?(?:[zZ]|[+\\-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
#define H16 "[0-9A-Fa-f]{1,4}"
#define OCT "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
#define IPV4 OCT "\\." OCT "\\." OCT "\\." OCT
#define LS32 "(?:" H16 ":" H16 "|" IPV4 ")"
#define IPV6                                                                                                   \
    "(?:(?:" H16 ":){6}" LS32 "|::(?:" H16 ":){5}" LS32 "|(?:" H16 ")?::(?:" H16 ":){4}" LS32 "|(?:(?:" H16 \
    ":){0,1}" H16 ")?::(?:" H16 ":){3}" LS32 "|(?:(?:" H16 ":){0,2}" H16 ")?::(?:" H16 ":){2}" LS32 "|(?:(?:" H16 \
    ":){0,3}" H16 ")?::" H16 ":" LS32 "|(?:(?:" H16 ":){0,4}" H16 ")?::" LS32 "|(?:(?:" H16 ":){0,5}" H16       \
    ")?::" H16 "|(?:(?:" H16 ":){0,6}" H16 ")?::)"
#define UNRES "A-Za-z0-9._~\\-"
#define SUBD "!$&'()*+,;="
#define PCT "%[0-9A-Fa-f]{2}"
#define PCHAR "(?:[" UNRES SUBD ":@]|" PCT ")"
#define SEG PCHAR "*"
#define SEGNZ PCHAR "+"
#define AUTH                                                                                             \
    "(?:(?:[" UNRES SUBD ":]|" PCT ")*@)?(?:\\[(?:" IPV6 "|v[0-9A-Fa-f]+\\.[" UNRES SUBD ":]+)\\]|(?:[" UNRES \
    SUBD "]|" PCT ")*)(?::[0-9]*)?"
#define QF "(?:\\?(?:" PCHAR "|[/?])*)?(?:#(?:" PCHAR "|[/?])*)?"
#define URI \
    "[A-Za-z][A-Za-z0-9+.\\-]*:(?://" AUTH "(?:/" SEG ")*|/(?:" SEGNZ "(?:/" SEG ")*)?|" SEGNZ "(?:/" SEG ")*|)" QF
#define RELREF                                                                                              \
    "(?://" AUTH "(?:/" SEG ")*|/(?:" SEGNZ "(?:/" SEG ")*)?|(?:[" UNRES SUBD "@]|" PCT ")+(?:/" SEG ")*|)" QF

static const struct {
    const char *name, *re;
} k_formats[] = {
    {"date", "^" DATE "$"},
    {"time", "^" TIME "$"},
    {"date-time", "^" DATE "[tT]" TIME "$"},
    {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
    {"email", "@"},
    {"idn-email", "@"},
    {"ipv4", "^" IPV4 "$"},
    {"ipv6", "^" IPV6 "$"},
    {"uri", "^" URI "$"},
    {"uri-reference", "^(?:" URI "|" RELREF ")$"},
    {"json-pointer", "^(?:/(?:[^~/]|~[01])*)*$"},
    /* draft-handrews-relative-json-pointer-01: a non-negative integer without leading zeros, then "#"
     * or a JSON pointer. Python's jsonschema (4.26) refuses any digit after a "0" ("100", "101/a"):
     * its bug, not followed here (bench/results/structured-output/README.md). */
    {"relative-json-pointer", "^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$"},
};
/* formats Python's jsonschema checks (with its optional dependencies) that are not above */
static const char *const k_checked[] = {"hostname", "idn-hostname", "iri", "iri-reference", "regex", "color",
                                        "uri-template", "duration", "host-name", "ip-address", NULL};

int jre_format(jre_buf *b, const char *name) {
    for (size_t i = 0; i < sizeof k_formats / sizeof *k_formats; i++) {
        if (strcmp(name, k_formats[i].name)) continue;
        char err[128];
        int folded;
        return jre_pattern(b, k_formats[i].re, strlen(k_formats[i].re), 0, -1, &folded, err, sizeof err) ? -1 : 1;
    }
    for (int i = 0; k_checked[i]; i++)
        if (!strcmp(name, k_checked[i])) return -1;
    return 0;
}

/* ---- strings other than given names ---- */

typedef struct tnode {
    unsigned long cp;
    int final;
    struct tnode *kids, *next;
} tnode;

static void trie_free(tnode *t) {
    while (t) {
        tnode *n = t->next;
        trie_free(t->kids);
        free(t);
        t = n;
    }
}

/* \u + 4 hex digits (any case) naming exactly cp */
static void emit_u_eq(jre_buf *b, unsigned long cp) {
    jre_puts(b, "\\\\u");
    for (int k = 3; k >= 0; k--) {
        int h = (int)(cp >> (4 * k) & 15);
        if (h < 10) jre_printf(b, "%d", h);
        else jre_printf(b, "[%c%c]", 'a' + h - 10, 'A' + h - 10);
    }
}

static const char k_short[] = "\"\\/bfnrt";
static unsigned long short_cp(char c) {
    switch (c) {
    case 'b': return 8;
    case 'f': return 12;
    case 'n': return 10;
    case 'r': return 13;
    case 't': return 9;
    }
    return (unsigned char)c;
}

static void emit_trie(jre_buf *b, const tnode *t, int depth) {
    /* alternatives: end here (if not a name), a character no name continues with, then anything;
     * or a continuing character, each in every encoding */
    jre_puts(b, "(?:");
    int alt = 0;
    if (!t->final) jre_puts(b, "\""), alt = 1;
    unsigned long cps[512];
    int n = 0;
    for (const tnode *k = t->kids; k && n < 512; k = k->next) cps[n++] = k->cp;
    /* a character outside the set, then any rest */
    if (alt) jre_puts(b, "|");
    jre_puts(b, "(?:[^\"\\\\\\x00-\\x1f");
    for (int i = 0; i < n; i++)
        if (cps[i] >= 0x20 && cps[i] != '"' && cps[i] != '\\') put_u_brace(b, cps[i]);
    jre_puts(b, "]|\\\\(?:[");
    for (const char *e = k_short; *e; e++) {
        int hit = 0;
        for (int i = 0; i < n; i++) hit |= cps[i] == short_cp(*e);
        if (!hit) {
            if (*e == '\\' || *e == '"' || *e == '/') jre_put(b, "\\", 1);
            jre_put(b, e, 1);
        }
    }
    jre_puts(b, "]|u00[01]" HEX ")");
    jre_puts(b, ")"), jre_puts(b, JRE_CHAR), jre_puts(b, "*\"");
    for (const tnode *k = t->kids; k; k = k->next) {
        jre_puts(b, "|(?:");
        unsigned long c = k->cp;
        jre_buf e = {0};
        put_utf8(&e, c);
        int raw = c >= 0x20 && c != '"' && c != '\\';
        if (raw) jre_lit(b, e.s, e.n), jre_puts(b, "|");
        jre_free(&e);
        for (const char *s = k_short; *s; s++)
            if (short_cp(*s) == c) {
                jre_put(b, "\\\\", 2);
                if (*s == '\\' || *s == '"' || *s == '/') jre_put(b, "\\", 1);
                jre_put(b, s, 1), jre_put(b, "|", 1);
            }
        if (c < 0x20) emit_u_eq(b, c);
        else b->n--, b->s[b->n] = 0; /* the trailing '|' */
        jre_puts(b, ")");
        emit_trie(b, k, depth + 1);
    }
    jre_puts(b, ")");
}

/* one code point out of s, canonically encoded, "(?:[])" if none */
static void emit_cps(jre_buf *b, const rset *s) {
    rset t = {0};
    for (int i = 0; i < s->n; i++) rs_add(&t, s->v[i].lo, s->v[i].hi);
    emit_set(b, &t);
    b->oom |= t.oom;
    free(t.v);
}

/* s minus the children of a trie node */
static void minus_kids(rset *out, const rset *s, const tnode *t) {
    rset k = {0};
    for (const tnode *q = t->kids; q; q = q->next) rs_add(&k, q->cp, q->cp);
    rs_negate(&k);
    /* intersection of s and k: both normalized */
    for (int i = 0; i < s->n; i++)
        for (int j = 0; j < k.n; j++) {
            unsigned long lo = s->v[i].lo > k.v[j].lo ? s->v[i].lo : k.v[j].lo;
            unsigned long hi = s->v[i].hi < k.v[j].hi ? s->v[i].hi : k.v[j].hi;
            if (lo <= hi) rs_add(out, lo, hi);
        }
    out->oom |= k.oom;
    free(k.v);
}

static int in_set(const rset *s, unsigned long c) {
    for (int i = 0; i < s->n; i++)
        if (c >= s->v[i].lo && c <= s->v[i].hi) return 1;
    return 0;
}

/* mode 1: X{plus,} minus the names; mode 2: neither in X{plus,} nor a name. seen: the path has a
 * code point outside X. Canonical encodings throughout (so that a name has one spelling). */
static void emit_trie_cls(jre_buf *b, const tnode *t, int depth, int seen, const rset *x, const rset *notx,
                          int plus, int mode) {
    jre_puts(b, "(?:[]");
    if (!t->final && (mode == 1 ? depth >= plus : seen || (depth == 0 && plus))) jre_puts(b, "|\"");
    rset all = {0};
    rs_add(&all, 0, 0x10FFFF);
    rset d = {0};
    if (mode == 1) {
        minus_kids(&d, x, t);
        jre_puts(b, "|");
        emit_cps(b, &d);
        emit_cps(b, x);
        jre_puts(b, "*\"");
    } else if (seen) {
        minus_kids(&d, &all, t);
        jre_puts(b, "|");
        emit_cps(b, &d);
        jre_printf(b, "%s*\"", JRE_CHAR);
    } else {
        minus_kids(&d, notx, t);
        jre_puts(b, "|");
        emit_cps(b, &d);
        jre_printf(b, "%s*\"", JRE_CHAR);
        free(d.v);
        d = (rset){0};
        minus_kids(&d, x, t);
        jre_puts(b, "|");
        emit_cps(b, &d);
        emit_cps(b, x);
        jre_puts(b, "*");
        emit_cps(b, notx);
        jre_printf(b, "%s*\"", JRE_CHAR);
    }
    b->oom |= d.oom | all.oom;
    free(d.v);
    free(all.v);
    for (const tnode *k = t->kids; k; k = k->next) {
        int inx = in_set(x, k->cp);
        if (mode == 1 && !inx) continue;
        jre_puts(b, "|");
        jre_buf e = {0};
        enc_cp(&e, k->cp);
        jre_puts(b, "(?:");
        jre_lit(b, e.s, e.n);
        jre_puts(b, ")");
        jre_free(&e);
        emit_trie_cls(b, k, depth + 1, seen || !inx, x, notx, plus, mode);
    }
    jre_puts(b, ")");
}

static int build_trie(tnode *root, const char *const *names, const size_t *lens, int n, int any_cp) {
    for (int i = 0; i < n; i++) {
        tnode *t = root;
        for (size_t j = 0; j < lens[i];) {
            long c = utf8_next((const unsigned char *)names[i], lens[i], &j);
            if (c < 0 || (!any_cp && (c < 0x20 || c > 0xFFFF))) return -1;
            tnode *k = t->kids;
            while (k && k->cp != (unsigned long)c) k = k->next;
            if (!k) {
                k = calloc(1, sizeof *k);
                if (!k) return -1;
                k->cp = (unsigned long)c;
                k->next = t->kids;
                t->kids = k;
            }
            t = k;
        }
        t->final = 1;
    }
    return 0;
}

int jre_key_split(jre_buf *pat_keys, jre_buf *add_keys, const char *pat, size_t pn, const char *const *names,
                  const size_t *lens, int n) {
    /* universal patterns: every name matches */
    static const char *const univ[] = {"", ".*", "^.*", ".*$", "(.*)", "^(.*)", NULL};
    for (int i = 0; univ[i]; i++)
        if (pn == strlen(univ[i]) && !memcmp(pat, univ[i], pn)) {
            if (add_keys) add_keys->n = 0, add_keys->oom |= 0;
            if (!n) {
                jre_printf(pat_keys, "\"%s*\"", JRE_CHAR);
                return 1;
            }
            return jre_string_except(pat_keys, names, lens, n) ? -1 : 1;
        }
    /* ^X*$ or ^X+$ for one class X */
    pp P = {(const unsigned char *)pat, pn, 0, NULL, 0, 0};
    if (pn < 4 || pat[0] != '^' || pat[pn - 1] != '$') return -1;
    P.i = 1;
    P.n = pn - 2; /* the quantifier is at pn - 2 */
    rset x = {0};
    int c = P.p[P.i];
    if (c == '[') {
        P.i++;
        if (p_class(&P, &x)) return free(x.v), -1;
    } else if (c == '.') {
        P.i++;
        rs_add(&x, '\n', '\n');
        rs_negate(&x);
    } else if (c == '\\') {
        P.i++;
        unsigned long cp;
        int k = p_escape(&P, 0, &cp, &x);
        if (k < 0) return free(x.v), -1;
        if (k == 0) rs_add(&x, cp, cp);
    } else {
        return -1;
    }
    if (P.i != pn - 2 || (pat[pn - 2] != '*' && pat[pn - 2] != '+')) return free(x.v), -1;
    int plus = pat[pn - 2] == '+';
    rs_norm(&x);
    rset notx = {0};
    for (int i = 0; i < x.n; i++) rs_add(&notx, x.v[i].lo, x.v[i].hi);
    rs_negate(&notx);
    tnode root = {0};
    int rc = build_trie(&root, names, lens, n, 1) ? -1 : 0;
    if (!rc) {
        jre_puts(pat_keys, "\"");
        emit_trie_cls(pat_keys, &root, 0, 0, &x, &notx, plus, 1);
        if (add_keys) {
            jre_puts(add_keys, "\"");
            emit_trie_cls(add_keys, &root, 0, 0, &x, &notx, plus, 2);
        }
    }
    trie_free(root.kids);
    free(x.v);
    free(notx.v);
    return rc ? -1 : 0;
}

int jre_string_except(jre_buf *b, const char *const *names, const size_t *lens, int n) {
    tnode root = {0};
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        tnode *t = &root;
        for (size_t j = 0; j < lens[i];) {
            long c = utf8_next((const unsigned char *)names[i], lens[i], &j);
            if (c < 0x20 || c > 0xFFFF) {
                rc = -1;
                break;
            }
            tnode *k = t->kids;
            while (k && k->cp != (unsigned long)c) k = k->next;
            if (!k) {
                k = calloc(1, sizeof *k);
                if (!k) {
                    rc = -1;
                    break;
                }
                k->cp = (unsigned long)c;
                k->next = t->kids;
                t->kids = k;
            }
            t = k;
        }
        if (!rc) t->final = 1;
    }
    if (!rc) {
        jre_puts(b, "\"");
        emit_trie(b, &root, 0);
    }
    trie_free(root.kids);
    return rc;
}

/* ---- numbers within bounds ---- */

/* A decimal: sign, integer digits (no leading zeros, "0" for zero), fraction digits (no
 * trailing zeros). */
typedef struct {
    int neg;
    char ip[400], fp[400];
} dec;

static int dec_parse(const char *s, dec *d) {
    memset(d, 0, sizeof *d);
    if (*s == '-') d->neg = 1, s++;
    char m[800];
    int nm = 0, point = -1;
    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s == '.') point = nm;
        else if (*s >= '0' && *s <= '9' && nm < 700) m[nm++] = *s;
        else return -1;
    }
    if (point < 0) point = nm;
    long ex = *s ? strtol(s + 1, NULL, 10) : 0;
    if (ex > 300 || ex < -300) return -1;
    point += (int)ex;
    /* digits m[0..nm) with the point after position point */
    int ni = 0, nf = 0;
    for (int i = 0; i < point; i++) {
        char c = i >= 0 && i < nm ? m[i] : '0';
        if (ni == 0 && c == '0') continue;
        if (ni < 399) d->ip[ni++] = c;
    }
    if (!ni) d->ip[ni++] = '0';
    for (int i = point < 0 ? point : point; i < nm; i++) {
        char c = i >= 0 ? m[i] : '0';
        if (nf < 399) d->fp[nf++] = c;
    }
    while (nf && d->fp[nf - 1] == '0') nf--;
    d->fp[nf] = 0;
    d->ip[ni] = 0;
    if (!strcmp(d->ip, "0") && !nf) d->neg = 0;
    return 0;
}

static int dcmp(const char *a, const char *b) { /* nonneg digit strings */
    size_t x = strlen(a), y = strlen(b);
    if (x != y) return x < y ? -1 : 1;
    int c = strcmp(a, b);
    return c < 0 ? -1 : c > 0;
}

static void dinc(char *a) { /* a += 1 */
    size_t n = strlen(a);
    for (size_t i = n; i-- > 0;) {
        if (a[i] < '9') {
            a[i]++;
            return;
        }
        a[i] = '0';
    }
    memmove(a + 1, a, n + 1);
    a[0] = '1';
}

static void ddec(char *a) { /* a -= 1, a > 0 */
    size_t n = strlen(a);
    for (size_t i = n; i-- > 0;) {
        if (a[i] > '0') {
            a[i]--;
            break;
        }
        a[i] = '9';
    }
    if (a[0] == '0' && a[1]) memmove(a, a + 1, n);
}

/* same-length digit strings x <= y */
static void rng_same(jre_buf *b, const char *x, const char *y, size_t n) {
    if (!n) return;
    size_t i = 0;
    while (i < n && x[i] == y[i]) i++;
    jre_put(b, x, i);
    if (i == n) return;
    size_t m = n - i - 1;
    int lo0 = 1, hi9 = 1;
    for (size_t k = i + 1; k < n; k++) lo0 &= x[k] == '0', hi9 &= y[k] == '9';
    if (lo0 && hi9) {
        jre_printf(b, "[%c-%c]", x[i], y[i]);
        if (m) jre_printf(b, "[0-9]{%zu}", m);
        return;
    }
    jre_puts(b, "(?:");
    char nines[400], zeros[400];
    memset(nines, '9', m), memset(zeros, '0', m);
    jre_put(b, &x[i], 1);
    rng_same(b, x + i + 1, nines, m);
    if (y[i] - x[i] > 1) {
        jre_printf(b, "|[%c-%c]", x[i] + 1, y[i] - 1);
        if (m) jre_printf(b, "[0-9]{%zu}", m);
    }
    jre_puts(b, "|");
    jre_put(b, &y[i], 1);
    rng_same(b, zeros, y + i + 1, m);
    jre_puts(b, ")");
}

/* canonical nonneg integers in [lo, hi] (hi NULL: unbounded); lo <= hi */
static void int_range(jre_buf *b, const char *lo, const char *hi) {
    jre_puts(b, "(?:");
    char l[400];
    snprintf(l, sizeof l, "%s", lo);
    int alt = 0;
    if (!strcmp(l, "0")) {
        jre_puts(b, "0");
        alt = 1;
        if (hi && !strcmp(hi, "0")) {
            jre_puts(b, ")");
            return;
        }
        strcpy(l, "1");
    }
    if (alt) jre_puts(b, "|");
    size_t L1 = strlen(l);
    char nines[400];
    memset(nines, '9', L1);
    nines[L1] = 0;
    if (hi && strlen(hi) == L1) {
        rng_same(b, l, hi, L1);
    } else {
        rng_same(b, l, nines, L1);
        if (!hi) {
            jre_printf(b, "|[1-9][0-9]{%zu,%zu}", L1, L1 > JRE_INT_DIGITS - 1 ? L1 : (size_t)JRE_INT_DIGITS - 1);
        } else {
            size_t L2 = strlen(hi);
            if (L2 - 1 >= L1 + 1) jre_printf(b, "|[1-9][0-9]{%zu,%zu}", L1, L2 - 2);
            char first[400];
            memset(first, '0', L2);
            first[0] = '1';
            first[L2] = 0;
            jre_puts(b, "|");
            rng_same(b, first, hi, L2);
        }
    }
    jre_puts(b, ")");
}

enum { F_ANY, F_ZERO, F_NONZERO };

static void frac(jre_buf *b, int kind, int integer, int int_frac) {
    if (integer) {
        if (int_frac && kind != F_NONZERO) jre_puts(b, JRE_ZERO_FRAC);
        return;
    }
    if (kind == F_ANY) jre_printf(b, "(?:\\.[0-9]{1,%d})?", JRE_FRAC_DIGITS);
    else if (kind == F_ZERO) jre_puts(b, JRE_ZERO_FRAC);
    else jre_printf(b, "\\.0{0,%d}[1-9][0-9]{0,%d}", JRE_FRAC_DIGITS - 1, JRE_FRAC_DIGITS - 1);
}

/* magnitudes v with a <= v (a_strict: <) and v <= b (b_strict: <); a, b nonneg integers, b may be
 * NULL. Writes alternatives "|..." (each prefixed by sign). Returns how many. */
static int side(jre_buf *b, const char *sign, const char *a, int as, const char *hi, int hs, int integer,
                int int_frac) {
    int n = 0;
    int c = hi ? dcmp(a, hi) : -1;
    if (c > 0) return 0;
    if (c == 0) { /* v == a: needs a zero fraction, both bounds inclusive */
        if (as || hs) return 0;
        jre_printf(b, "|%s", sign);
        jre_lit(b, a, strlen(a));
        frac(b, F_ZERO, integer, int_frac);
        return 1;
    }
    /* a < hi */
    char lo[400];
    snprintf(lo, sizeof lo, "%s", a);
    if (as) {
        if (!integer) {
            jre_printf(b, "|%s", sign);
            jre_lit(b, a, strlen(a));
            frac(b, F_NONZERO, 0, 0);
            n++;
        }
        dinc(lo);
    }
    char top[400];
    int have_main = 1;
    if (hi) {
        snprintf(top, sizeof top, "%s", hi);
        if (!strcmp(top, "0")) have_main = 0;
        else ddec(top);
        if (have_main && dcmp(lo, top) > 0) have_main = 0;
    }
    if (have_main) {
        jre_printf(b, "|%s", sign);
        int_range(b, lo, hi ? top : NULL);
        frac(b, F_ANY, integer, int_frac);
        n++;
    }
    if (hi && !hs) {
        jre_printf(b, "|%s", sign);
        jre_lit(b, hi, strlen(hi));
        frac(b, F_ZERO, integer, int_frac);
        n++;
    }
    return n;
}

int jre_number(jre_buf *b, const char *lo, int lo_excl, const char *hi, int hi_excl, int integer, int int_frac,
               char *err, size_t cap) {
    if (!lo && !hi) {
        jre_printf(b, "-?(?:0|[1-9][0-9]{0,%d})", JRE_INT_DIGITS - 1);
        if (integer) jre_puts(b, int_frac ? JRE_ZERO_FRAC : "");
        else jre_printf(b, "(?:\\.[0-9]{1,%d})?(?:[eE][+\\-]?[0-9]{1,%d})?", JRE_FRAC_DIGITS, JRE_EXP_DIGITS);
        return 0;
    }
    dec L, U;
    if ((lo && dec_parse(lo, &L)) || (hi && dec_parse(hi, &U))) {
        snprintf(err, cap, "numeric bound out of range");
        return -1;
    }
    if (integer) { /* integer bounds, inclusive */
        if (lo) {
            if (L.fp[0]) { /* ceil */
                if (!L.neg) dinc(L.ip);
                L.fp[0] = 0;
                lo_excl = 0;
                if (L.neg && !strcmp(L.ip, "0")) L.neg = 0;
            }
            if (lo_excl) {
                if (L.neg) ddec(L.ip);
                else dinc(L.ip);
                if (!strcmp(L.ip, "0")) L.neg = 0;
                lo_excl = 0;
            }
        }
        if (hi) {
            if (U.fp[0]) { /* floor */
                if (U.neg) dinc(U.ip);
                U.fp[0] = 0;
                hi_excl = 0;
            }
            if (hi_excl) {
                if (U.neg || !strcmp(U.ip, "0")) dinc(U.ip), U.neg = 1;
                else ddec(U.ip);
                hi_excl = 0;
            }
        }
    } else if ((lo && L.fp[0]) || (hi && U.fp[0])) {
        snprintf(err, cap, "non-integer bounds on a number are not supported");
        return -1;
    }
    jre_puts(b, "(?:[]");
    int n = 0;
    /* positive side: v = x */
    {
        const char *a = "0";
        int as = 0;
        if (lo && !L.neg) a = L.ip, as = lo_excl;
        int ok = !(hi && U.neg);
        if (ok) n += side(b, "", a, as, hi ? U.ip : NULL, hi ? hi_excl : 0, integer, int_frac);
    }
    /* negative side: v = -x; x >= L <=> v <= -L; x <= U <=> v >= -U */
    {
        int ok = !(lo && !L.neg && strcmp(L.ip, "0")) && !(lo && !L.neg && lo_excl);
        const char *vmax = lo ? L.ip : NULL;
        int vmax_s = lo ? lo_excl : 0;
        if (lo && !L.neg) vmax = "0", vmax_s = lo_excl;
        const char *vmin = "0";
        int vmin_s = 0;
        if (hi && U.neg) vmin = U.ip, vmin_s = hi_excl;
        else if (hi && !strcmp(U.ip, "0") && hi_excl) vmin_s = 1;
        if (ok) n += side(b, "-", vmin, vmin_s, vmax, vmax_s, integer, int_frac);
    }
    jre_puts(b, ")");
    (void)n;
    return 0;
}

/* ---- matching a text against a regex ---- */

int jre_matches(const char *re, size_t re_len, const char *s, size_t n) {
    char err[128];
    uint8_t lit = 0;
    lx_lexer *lx = lx_new(1, &re, &re_len, &lit, err, sizeof err);
    if (!lx) return -1;
    uint64_t all = 1;
    lx_state st = lx_start(lx, &all);
    for (size_t i = 0; i < n && st != LX_DEAD; i++) st = lx_next(lx, st, (uint8_t)s[i]);
    int r = 0;
    if (lx_exhausted(lx)) r = -1;
    else if (st != LX_DEAD) {
        const uint64_t *acc = lx_accepting(lx, st);
        r = acc && (acc[0] & 1);
    }
    lx_free(lx);
    return r;
}
