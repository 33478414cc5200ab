/* JSON read and written as Python's json module does (pyjson.h). */
#include "pyjson.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- output buffer ---------- */

void pj_buf_free(pj_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int grow(pj_buf *b, size_t more) {
    if (b->oom) return -1;
    if (b->n + more + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p, b->cap = cap;
    return 0;
}

void pj_put(pj_buf *b, const char *s, size_t n) {
    if (grow(b, n)) return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void pj_puts(pj_buf *b, const char *s) { pj_put(b, s, strlen(s)); }

void pj_putf(pj_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) {
        pj_put(b, tmp, (size_t)k);
        return;
    }
    if (grow(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

/* ---------- UTF-8 ---------- */

/* The code point at s[*i] (advancing *i), or -1 (advancing one byte) for bytes that are not UTF-8. */
static int32_t utf8_next(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return (int32_t)c;
    }
    int len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (!len || *i + (size_t)len > n) {
        (*i)++;
        return -1;
    }
    uint32_t cp = c & (0x3f >> (len - 1));
    for (int k = 1; k < len; k++) {
        unsigned d = s[*i + (size_t)k];
        if ((d & 0xc0) != 0x80) {
            (*i)++;
            return -1;
        }
        cp = (cp << 6) | (d & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
        (*i)++;
        return -1;
    }
    *i += (size_t)len;
    return (int32_t)cp;
}

static void put_utf8(pj_buf *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) t[0] = (char)cp, n = 1;
    else if (cp < 0x800) t[0] = (char)(0xc0 | (cp >> 6)), t[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        t[0] = (char)(0xe0 | (cp >> 12)), t[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), t[2] = (char)(0x80 | (cp & 0x3f)),
        n = 3;
    else
        t[0] = (char)(0xf0 | (cp >> 18)), t[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), t[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    pj_put(b, t, n);
}

/* One code point (or a lone surrogate 0xd800..0xdfff) as json.dumps writes it inside a string. */
static void put_cp_escaped(pj_buf *b, uint32_t cp, int ensure_ascii) {
    switch (cp) {
    case '"': pj_put(b, "\\\"", 2); return;
    case '\\': pj_put(b, "\\\\", 2); return;
    case '\n': pj_put(b, "\\n", 2); return;
    case '\r': pj_put(b, "\\r", 2); return;
    case '\t': pj_put(b, "\\t", 2); return;
    case '\b': pj_put(b, "\\b", 2); return;
    case '\f': pj_put(b, "\\f", 2); return;
    default: break;
    }
    if (cp < 0x20) pj_putf(b, "\\u%04x", cp);
    else if (cp < 0x80 || !ensure_ascii) put_utf8(b, cp);
    else if (cp < 0x10000) pj_putf(b, "\\u%04x", cp);
    else {
        uint32_t v = cp - 0x10000;
        pj_putf(b, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
    }
}

void pj_put_str(pj_buf *b, const char *s, size_t n, int ensure_ascii) {
    const unsigned char *u = (const unsigned char *)s;
    pj_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        int32_t cp = utf8_next(u, n, &i);
        put_cp_escaped(b, cp < 0 ? 0xfffd : (uint32_t)cp, ensure_ascii);
    }
    pj_put(b, "\"", 1);
}

void pj_put_repr(pj_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    pj_put(b, &q, 1);
    for (size_t i = 0; i < n;) {
        int32_t cp = utf8_next(u, n, &i);
        if (cp < 0) pj_putf(b, "\\x%02x", u[i - 1]);
        else if (cp == q || cp == '\\') pj_putf(b, "\\%c", (char)cp);
        else if (cp == '\n') pj_puts(b, "\\n");
        else if (cp == '\r') pj_puts(b, "\\r");
        else if (cp == '\t') pj_puts(b, "\\t");
        else if (cp < 0x20 || cp == 0x7f) pj_putf(b, "\\x%02x", (unsigned)cp);
        else put_utf8(b, (uint32_t)cp);
    }
    pj_put(b, &q, 1);
}

/* ---------- floats as Python's repr ---------- */

void pj_put_float(pj_buf *b, double x) {
    if (isnan(x)) return pj_puts(b, "NaN");
    if (isinf(x)) return pj_puts(b, x < 0 ? "-Infinity" : "Infinity");
    if (x == 0) return pj_puts(b, signbit(x) ? "-0.0" : "0.0");
    /* the shortest decimal that reads back as x: what Python's repr (David Gay's dtoa, mode 0) gives */
    char t[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*e", prec - 1, x);
        if (strtod(t, NULL) == x) break;
    }
    /* t = [-]D[.DDD]e[+-]XX */
    const char *p = t;
    int neg = *p == '-';
    if (neg) p++;
    char dig[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9' && nd < 20) dig[nd++] = *p;
    int e10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    int decpt = e10 + 1; /* x = 0.DIG * 10^decpt */
    if (neg) pj_put(b, "-", 1);
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            pj_put(b, "0.", 2);
            for (int k = 0; k < -decpt; k++) pj_put(b, "0", 1);
            pj_put(b, dig, (size_t)nd);
        } else if (decpt >= nd) {
            pj_put(b, dig, (size_t)nd);
            for (int k = nd; k < decpt; k++) pj_put(b, "0", 1);
            pj_put(b, ".0", 2);
        } else {
            pj_put(b, dig, (size_t)decpt);
            pj_put(b, ".", 1);
            pj_put(b, dig + decpt, (size_t)(nd - decpt));
        }
    } else {
        pj_put(b, dig, 1);
        if (nd > 1) {
            pj_put(b, ".", 1);
            pj_put(b, dig + 1, (size_t)(nd - 1));
        }
        pj_putf(b, "e%c%02d", e10 < 0 ? '-' : '+', e10 < 0 ? -e10 : e10);
    }
}

/* ---------- reading ---------- */

typedef struct {
    const char *s;
    size_t n, i;
    char *err;
    size_t cap;
} rd;

static int fail(rd *r, const char *what) {
    if (r->err && r->cap) snprintf(r->err, r->cap, "%s at offset %zu", what, r->i);
    return -1;
}

static void ws(rd *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r'))
        r->i++;
}

static int lit(rd *r, const char *w) {
    size_t k = strlen(w);
    if (r->n - r->i < k || memcmp(r->s + r->i, w, k)) return 0;
    r->i += k;
    return 1;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* A string at r->i ('"'): decoded code points are re-escaped into out (NULL: only checked);
 * lone surrogates are written as \uXXXX when ensure_ascii, else refused (as Python's UTF-8 encoder
 * refuses them) when refuse_surrogates. raw (optional) gets the decoded UTF-8 (nothing for lone
 * surrogates: they set *lone). */
static int string_at(rd *r, pj_buf *out, int ensure_ascii, pj_buf *raw, int *lone) {
    r->i++; /* '"' */
    if (out) pj_put(out, "\"", 1);
    for (;;) {
        if (r->i >= r->n) return fail(r, "unterminated string");
        unsigned char c = (unsigned char)r->s[r->i];
        uint32_t cp;
        if (c == '"') {
            r->i++;
            break;
        }
        if (c < 0x20) return fail(r, "control character in a string");
        if (c == '\\') {
            if (r->i + 1 >= r->n) return fail(r, "unterminated string");
            char e = r->s[r->i + 1];
            r->i += 2;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (r->n - r->i < 4 || hex4(r->s + r->i, &cp)) return fail(r, "bad \\u escape");
                r->i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && r->n - r->i >= 6 && r->s[r->i] == '\\' && r->s[r->i + 1] == 'u') {
                    uint32_t lo;
                    if (!hex4(r->s + r->i + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        r->i += 6;
                    }
                }
                break;
            default: return fail(r, "bad escape in a string");
            }
        } else {
            size_t at = r->i;
            int32_t v = utf8_next((const unsigned char *)r->s, r->n, &r->i);
            if (v < 0) {
                r->i = at;
                return fail(r, "string is not UTF-8");
            }
            cp = (uint32_t)v;
        }
        int surrogate = cp >= 0xd800 && cp < 0xe000;
        if (surrogate) {
            if (lone) *lone = 1;
            if (out && !ensure_ascii) return fail(r, "lone surrogate in a string (not writable as UTF-8)");
        }
        if (out) put_cp_escaped(out, cp, ensure_ascii);
        if (raw && !surrogate) put_utf8(raw, cp);
    }
    if (out) pj_put(out, "\"", 1);
    return 0;
}

static int digits(rd *r) {
    size_t at = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') r->i++;
    return r->i > at;
}

/* A number at r->i: integers as written (Python's int keeps every digit; -0 is 0), others as floats. */
static int number_at(rd *r, pj_buf *out) {
    size_t at = r->i;
    if (r->s[r->i] == '-') r->i++;
    if (lit(r, "Infinity")) {
        if (out) pj_puts(out, "-Infinity");
        return 0;
    }
    if (r->i < r->n && r->s[r->i] == '0') r->i++;
    else if (!digits(r)) return fail(r, "bad number");
    int is_float = 0;
    if (r->i < r->n && r->s[r->i] == '.') {
        r->i++;
        if (!digits(r)) return fail(r, "bad number");
        is_float = 1;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        if (!digits(r)) return fail(r, "bad number");
        is_float = 1;
    }
    if (!out) return 0;
    size_t len = r->i - at;
    if (!is_float) {
        if (len == 2 && r->s[at] == '-' && r->s[at + 1] == '0') pj_put(out, "0", 1);
        else pj_put(out, r->s + at, len);
        return 0;
    }
    char tmp[64], *t = len < sizeof tmp ? tmp : malloc(len + 1);
    if (!t) return fail(r, "out of memory");
    memcpy(t, r->s + at, len);
    t[len] = 0;
    pj_put_float(out, strtod(t, NULL)); /* overflow gives inf: Python's float() does too */
    if (t != tmp) free(t);
    return 0;
}

typedef struct {
    size_t start, key_end, end; /* in out: the member's text, its key's text [start, key_end) */
} member;

/* Python keeps a repeated key at its first place with its last value: rewrites the object's
 * members [0, n) in out, which start at members[0].start. */
static int dedupe(pj_buf *out, member *m, size_t n, const char *comma) {
    int any = 0;
    for (size_t a = 1; a < n && !any; a++)
        for (size_t b = 0; b < a && !any; b++)
            any = m[a].key_end - m[a].start == m[b].key_end - m[b].start &&
                  !memcmp(out->p + m[a].start, out->p + m[b].start, m[a].key_end - m[a].start);
    if (!any) return 0;
    size_t base = m[0].start, total = m[n - 1].end - base;
    char *old = malloc(total);
    if (!old) return -1;
    memcpy(old, out->p + base, total);
    out->n = base;
    int first = 1;
    for (size_t a = 0; a < n; a++) {
        size_t kl = m[a].key_end - m[a].start;
        const char *ka = old + (m[a].start - base);
        int seen = 0;
        for (size_t b = 0; b < a && !seen; b++)
            seen = m[b].key_end - m[b].start == kl && !memcmp(old + (m[b].start - base), ka, kl);
        if (seen) continue;
        size_t last = a;
        for (size_t b = a + 1; b < n; b++)
            if (m[b].key_end - m[b].start == kl && !memcmp(old + (m[b].start - base), ka, kl)) last = b;
        if (!first) pj_puts(out, comma);
        first = 0;
        pj_put(out, ka, kl);
        pj_put(out, old + (m[last].key_end - base), m[last].end - m[last].key_end);
    }
    free(old);
    return 0;
}

/* One value at r->i (after whitespace); written compactly into out unless out is NULL. */
static int value_at(rd *r, pj_buf *out, int flags, int depth) {
    int ensure_ascii = flags & PJ_ASCII;
    const char *comma = flags & PJ_SPACED ? ", " : ",", *colon = flags & PJ_SPACED ? ": " : ":";
    ws(r);
    if (r->i >= r->n) return fail(r, "expected a value");
    char c = r->s[r->i];
    if (c == '{' || c == '[') {
        if (depth >= PJ_MAX_DEPTH) return fail(r, "nested too deeply");
        char close = c == '{' ? '}' : ']';
        r->i++;
        if (out) pj_put(out, &c, 1);
        member *m = NULL;
        size_t nm = 0, cm = 0;
        int rc = 0;
        ws(r);
        if (r->i < r->n && r->s[r->i] == close) {
            r->i++;
        } else {
            for (;;) {
                ws(r);
                size_t start = out ? out->n : 0;
                if (c == '{') {
                    if (r->i >= r->n || r->s[r->i] != '"') { rc = fail(r, "expected a key"); break; }
                    if ((rc = string_at(r, out, ensure_ascii, NULL, NULL))) break;
                    size_t key_end = out ? out->n : 0;
                    ws(r);
                    if (r->i >= r->n || r->s[r->i] != ':') { rc = fail(r, "expected ':'"); break; }
                    r->i++;
                    if (out) pj_puts(out, colon);
                    if ((rc = value_at(r, out, flags, depth + 1))) break;
                    if (out) {
                        if (nm == cm) {
                            cm = cm ? 2 * cm : 16;
                            member *g = realloc(m, cm * sizeof *m);
                            if (!g) { rc = fail(r, "out of memory"); break; }
                            m = g;
                        }
                        m[nm++] = (member){start, key_end, out->n};
                    }
                } else if ((rc = value_at(r, out, flags, depth + 1))) {
                    break;
                }
                ws(r);
                if (r->i < r->n && r->s[r->i] == ',') {
                    r->i++;
                    if (out) pj_puts(out, comma);
                    continue;
                }
                if (r->i < r->n && r->s[r->i] == close) {
                    r->i++;
                    break;
                }
                rc = fail(r, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
                break;
            }
        }
        /* member ends exclude the ',' that follows; keys end before ':' */
        if (!rc && out && nm > 1 && dedupe(out, m, nm, comma)) rc = fail(r, "out of memory");
        free(m);
        if (rc) return rc;
        if (out) pj_put(out, &close, 1);
        return 0;
    }
    if (c == '"') return string_at(r, out, ensure_ascii, NULL, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) return number_at(r, out);
    static const char *const words[] = {"true", "false", "null", "NaN", "Infinity"};
    for (size_t k = 0; k < sizeof words / sizeof *words; k++)
        if (lit(r, words[k])) {
            if (out) pj_puts(out, words[k]);
            return 0;
        }
    return fail(r, "expected a value");
}

int pj_parse(const char *text, size_t n, pj_span *out, char *err, size_t cap) {
    rd r = {text, n, 0, err, cap};
    ws(&r);
    size_t start = r.i;
    if (value_at(&r, NULL, 0, 0)) return -1;
    size_t end = r.i;
    ws(&r);
    if (r.i != n) return fail(&r, "extra data after the value");
    *out = (pj_span){text + start, end - start};
    return 0;
}

int pj_compact(pj_span v, int flags, pj_buf *out, char *err, size_t cap) {
    rd r = {v.p, v.n, 0, err, cap};
    if (value_at(&r, out, flags, 0)) return -1;
    if (out->oom) return fail(&r, "out of memory");
    return 0;
}

int pj_get(pj_span obj, const char *key, pj_span *val) {
    rd r = {obj.p, obj.n, 0, NULL, 0};
    if (!obj.n || obj.p[0] != '{') return 0;
    r.i = 1;
    int found = 0;
    size_t klen = strlen(key);
    for (;;) {
        ws(&r);
        if (r.i >= r.n || r.s[r.i] != '"') return found;
        pj_buf raw = {0};
        if (string_at(&r, NULL, 0, &raw, NULL)) {
            pj_buf_free(&raw);
            return found;
        }
        int match = raw.n == klen && (!klen || !memcmp(raw.p, key, klen));
        pj_buf_free(&raw);
        ws(&r);
        if (r.i >= r.n || r.s[r.i] != ':') return found;
        r.i++;
        ws(&r);
        size_t at = r.i;
        if (value_at(&r, NULL, 0, 1)) return found;
        if (match) {
            *val = (pj_span){r.s + at, r.i - at};
            found = 1;
        }
        ws(&r);
        if (r.i >= r.n || r.s[r.i] != ',') return found;
        r.i++;
    }
}

int pj_items(pj_span v, pj_span **items, size_t *n) {
    *items = NULL, *n = 0;
    if (!v.n || v.p[0] != '[') return -1;
    rd r = {v.p, v.n, 1, NULL, 0};
    size_t cap = 0;
    ws(&r);
    if (r.i < r.n && r.s[r.i] == ']') return 0;
    for (;;) {
        ws(&r);
        size_t at = r.i;
        if (value_at(&r, NULL, 0, 1)) break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            pj_span *g = realloc(*items, cap * sizeof *g);
            if (!g) break;
            *items = g;
        }
        (*items)[(*n)++] = (pj_span){r.s + at, r.i - at};
        ws(&r);
        if (r.i < r.n && r.s[r.i] == ',') {
            r.i++;
            continue;
        }
        if (r.i < r.n && r.s[r.i] == ']') return 0;
        break;
    }
    free(*items);
    *items = NULL, *n = 0;
    return -1;
}

int pj_string(pj_span v, char **out, size_t *len) {
    *out = NULL;
    if (!v.n || v.p[0] != '"') return -1;
    rd r = {v.p, v.n, 0, NULL, 0};
    pj_buf raw = {0};
    int lone = 0;
    if (string_at(&r, NULL, 0, &raw, &lone) || lone || raw.oom || (raw.n && memchr(raw.p, 0, raw.n))) {
        pj_buf_free(&raw);
        return -1;
    }
    if (!raw.p) {
        raw.p = calloc(1, 1);
        if (!raw.p) return -1;
    }
    *out = raw.p, *len = raw.n;
    return 0;
}

int pj_is_true(pj_span v) { return v.n == 4 && !memcmp(v.p, "true", 4); }
