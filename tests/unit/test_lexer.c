/* The regex -> lazy DFA lexer (src/grammar/lexer.h): a table of patterns x strings (whole-string
 * match), UTF-8 classes and escapes, quantifier bounds, anchors, errors with offsets, several
 * terminals at once, lx_start restriction, DEAD detection, lx_can_continue, size bounds.
 *
 * With --match it is also the driver of tests/python/test_lexer_vs_python_re.py: each stdin line
 * is "HEX(pattern) HEX(string)" and gets "1" (whole match), "0", or "E message". */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/lexer.h"
#include "test_util.h"

static lx_state run(lx_lexer *lx, lx_state s, const char *str, size_t n) {
    for (size_t i = 0; i < n && s != LX_DEAD; i++) s = lx_next(lx, s, (uint8_t)str[i]);
    return s;
}

/* 1 match, 0 no match, -1 pattern error */
static int match_n(const char *pat, size_t pn, const char *str, size_t sn, char *err, size_t cap) {
    const char *pats[1] = {pat};
    size_t lens[1] = {pn};
    lx_lexer *lx = lx_new(1, pats, lens, NULL, err, cap);
    if (!lx) return -1;
    uint64_t all = 1;
    lx_state s = run(lx, lx_start(lx, &all), str, sn);
    const uint64_t *acc = lx_accepting(lx, s);
    int m = acc && (acc[0] & 1);
    lx_free(lx);
    return m;
}

static int match(const char *pat, const char *str) {
    char err[256];
    return match_n(pat, strlen(pat), str, strlen(str), err, sizeof err);
}

static const struct {
    const char *pat, *str;
    int want;
} k_cases[] = {
    /* literals, concatenation, alternation */
    {"abc", "abc", 1}, {"abc", "ab", 0}, {"abc", "abcd", 0}, {"", "", 1}, {"", "a", 0},
    {"a|b", "a", 1}, {"a|b", "b", 1}, {"a|b", "ab", 0}, {"a|", "", 1}, {"|a", "a", 1}, {"(a|bc)d", "bcd", 1},
    {"(a|bc)d", "ad", 1}, {"(a|bc)d", "bd", 0}, {"()", "", 1}, {"(?:ab)+", "abab", 1}, {"(?<year>\\d{4})-x", "2024-x", 1},
    /* quantifiers */
    {"a*", "", 1}, {"a*", "aaaa", 1}, {"a+", "", 0}, {"a+", "aaa", 1}, {"a?", "", 1}, {"a?", "aa", 0},
    {"a{3}", "aaa", 1}, {"a{3}", "aa", 0}, {"a{3}", "aaaa", 0}, {"a{2,}", "a", 0}, {"a{2,}", "aaaaaa", 1},
    {"a{2,4}", "aa", 1}, {"a{2,4}", "aaaa", 1}, {"a{2,4}", "aaaaa", 0}, {"a{0,2}", "", 1}, {"a{0}", "", 1},
    {"a{0}", "a", 0}, {"(ab){1,2}c", "ababc", 1}, {"(ab){1,2}c", "abababc", 0}, {"a*?b", "aab", 1}, {"a+?", "a", 1},
    {"a{2,3}?", "aaa", 1}, {"(a*)*b", "aaab", 1}, {"(a|)*", "aaa", 1}, {"x{,3}", "x{,3}", 1}, {"a{", "a{", 1},
    {"a{1", "a{1", 1}, {"}", "}", 1}, {"]", "]", 1}, {"[0-9]{5}(-[0-9]{4})?", "12345-6789", 1},
    {"[0-9]{5}(-[0-9]{4})?", "12345-678", 0}, {"a{1000}", "", 0},
    /* dot and classes */
    {".", "a", 1}, {".", "\n", 0}, {".", "é", 1}, {".", "日", 1}, {".", "😀", 1}, {".", "ab", 0}, {"..", "é", 0},
    {"[abc]", "b", 1}, {"[abc]", "d", 0}, {"[^abc]", "d", 1}, {"[^abc]", "a", 0}, {"[^abc]", "é", 1},
    {"[a-z]+", "hello", 1}, {"[a-z]+", "Hello", 0}, {"[a-zA-Z_][a-zA-Z0-9_]*", "_x9", 1}, {"[-a]", "-", 1},
    {"[a-]", "-", 1}, {"[\\]]", "]", 1}, {"[\\\\]", "\\", 1}, {"[\\-x]", "-", 1}, {"[.]", ".", 1}, {"[.]", "a", 0},
    {"[\\d]+", "0123", 1}, {"[^\\d]", "5", 0}, {"[^\\d]", "x", 1}, {"[\\w-]+", "a-b_c", 1}, {"[\\s]", " ", 1},
    {"[]", "", 0}, {"[]", "a", 0}, {"[^]", "a", 1}, {"[^]", "\n", 1}, {"[\\b]", "\b", 1},
    {"\\d", "7", 1}, {"\\d", "a", 0}, {"\\D", "a", 1}, {"\\D", "1", 0}, {"\\w+", "ab_9", 1}, {"\\w", "é", 0},
    {"\\W", "é", 1}, {"\\W", "a", 0}, {"\\s", "\t", 1}, {"\\s", "\u00a0", 1}, {"\\s", "\u3000", 1}, {"\\s", "\ufeff", 1},
    {"\\s", "x", 0}, {"\\S", "x", 1}, {"\\S", " ", 0}, {"\\S", "\u2028", 0},
    /* UTF-8 */
    {"é", "é", 1}, {"é", "e", 0}, {"日本", "日本", 1}, {"日本", "日", 0}, {"😀+", "😀😀", 1}, {"[α-ω]+", "λόγος", 0},
    {"[α-ω]+", "λογος", 1}, {"[α-ω]", "Α", 0}, {"[^α-ω]", "a", 1}, {"[^α-ω]", "β", 0}, {"[日本]", "本", 1},
    {"[一-龥]+", "中文字", 1}, {"[😀-😂]", "😁", 1}, {"[😀-😂]", "😃", 0}, {"[\\u0000-\\u007f]", "a", 1},
    {"[\\u0080-\\u07ff]", "é", 1}, {"[\\u0080-\\u07ff]", "a", 0}, {"[\\u0800-\\uffff]", "日", 1},
    {"[\\u0800-\\uffff]", "😀", 0}, {"[^\\u0000-\\uffff]", "😀", 1}, {"[^\\u0000-\\uffff]", "日", 0},
    {"\\u00e9", "é", 1}, {"\\u{1F600}", "😀", 1}, {"\\ud83d\\ude00", "😀", 1}, {"[\\u{10000}-\\u{10FFFF}]", "\xf4\x8f\xbf\xbf", 1},
    {"\\x41", "A", 1}, {"\\x41", "B", 0}, {"[\\x00-\\x1f]", "\x01", 1}, {"\\cJ", "\n", 1}, {"\\0", "", 0},
    /* invalid UTF-8 never matches */
    {".", "\xff", 0}, {".", "\xc3", 0}, {".", "\xc0\x80", 0}, {".", "\xed\xa0\x80", 0}, {"[^a]", "\xe9", 0},
    {".*", "ab\xff", 0}, {"[^\\u0000-\\u007f]", "\xf5\x80\x80\x80", 0},
    /* escapes */
    {"\\n", "\n", 1}, {"\\t", "\t", 1}, {"\\r\\f\\v", "\r\f\v", 1}, {"\\/", "/", 1}, {"\\.", ".", 1}, {"\\.", "a", 0},
    {"\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$", "*+?()[]{}|^$", 1}, {"\\-", "-", 1}, {"\\ ", " ", 1}, {"a\\\\b", "a\\b", 1},
    /* anchors */
    {"^abc$", "abc", 1}, {"^abc", "abc", 1}, {"abc$", "abc", 1}, {"^a|b$", "a", 1}, {"^a|b$", "b", 1},
    {"^(a|b)$", "ab", 0}, {"a$b", "ab", 0}, {"a^b", "ab", 0}, {"(^a)", "a", 1}, {"$", "", 1}, {"^$", "", 1},
    {"^", "a", 0}, {"(a$)*", "", 1}, {"(a$)*", "a", 1}, {"(a$)*", "aa", 0}, {".*(^abc$).*", "abc", 1},
    {".*(^abc$).*", "xabc", 0}, {".*(abc).*", "xxabcyy", 1}, {".*(abc).*", "xxabyy", 0},
    /* realistic JSON Schema patterns */
    {"^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "jo.doe@ex-ample.com", 1},
    {"^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "jo@x.c", 0},
    {"^\\d{3}-\\d{3}-\\d{4}$", "555-123-4567", 1}, {"^\\d{3}-\\d{3}-\\d{4}$", "555-1234-567", 0},
    {"^(\\([0-9]{3}\\))?[0-9]{3}-[0-9]{4}$", "(888)555-1212", 1},
    {"^(\\([0-9]{3}\\))?[0-9]{3}-[0-9]{4}$", "(800)FLOWERS", 0},
    {"^[A-Z]{2}\\d{2}[A-Z0-9]{1,30}$", "DE44500105175407324931", 1},
    {"^#([A-Fa-f0-9]{6}|[A-Fa-f0-9]{3})$", "#1f2a", 0}, {"^#([A-Fa-f0-9]{6}|[A-Fa-f0-9]{3})$", "#1f2a3B", 1},
};

static const struct {
    const char *pat;
    const char *needle; /* expected in the message */
    int offset;         /* expected "offset N" (-1: not checked) */
} k_errors[] = {
    {"(a", "missing )", 0}, {"a)", "unmatched )", 1}, {"[ab", "missing ]", 0}, {"*a", "nothing to repeat", 0},
    {"a**", "nothing to repeat", 2}, {"a{2}{3}", "nothing to repeat", 4}, {"a|+", "nothing to repeat", 2},
    {"^*", "anchor", 1}, {"{2}", "nothing to repeat", 0}, {"a{3,2}", "out of order", 1}, {"[z-a]", "out of order", 1},
    {"(a)\\1", "backreference", 3}, {"\\k<n>", "backreference", 0}, {"a(?=b)", "lookahead", 1},
    {"a(?!b)", "lookahead", 1}, {"(?<=a)b", "lookbehind", 0}, {"(?<!a)b", "lookbehind", 0}, {"\\bx", "\\b", 0},
    {"x\\B", "\\B", 1}, {"\\p{L}", "property", 0}, {"abc\\", "backslash", 3}, {"\\x4", "\\x", 0},
    {"\\u12", "\\u", 0}, {"\\u{110000}", "\\u{", 0}, {"\\q", "unknown escape", 0}, {"[\\d-z]", "range", 1},
    {"(?i)a", "unsupported group", 0}, {"(?P<n>a)", "unsupported group", 0}, {"\\012", "octal", 0},
    {"a{99999999}", "too large", 1}, {"\xff", "UTF-8", 0}, {"ab\xc3", "UTF-8", 2}, {"(?<>a)", "group name", 0},
    {"a{1000}{1000}", "nothing to repeat", 7}, {"(a{2000}){1000}", "too large", -1},
    {"((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
     "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
     "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
     "nested too deeply", -1},
};

static void test_table(void) {
    for (size_t k = 0; k < sizeof k_cases / sizeof k_cases[0]; k++) {
        int got = match(k_cases[k].pat, k_cases[k].str);
        CHECK(got == k_cases[k].want, "/%s/ on \"%s\": got %d want %d", k_cases[k].pat, k_cases[k].str, got,
              k_cases[k].want);
    }
}

static void test_errors(void) {
    for (size_t k = 0; k < sizeof k_errors / sizeof k_errors[0]; k++) {
        const char *p = k_errors[k].pat;
        char err[256] = "", err2[256] = "";
        int rc = lx_check_pattern(p, strlen(p), err, sizeof err);
        CHECK(rc == -1, "/%s/ accepted", p);
        CHECK(strstr(err, k_errors[k].needle) != NULL, "/%s/: \"%s\" lacks \"%s\"", p, err, k_errors[k].needle);
        if (k_errors[k].offset >= 0) {
            char want[32];
            snprintf(want, sizeof want, "offset %d:", k_errors[k].offset);
            CHECK(strncmp(err, want, strlen(want)) == 0, "/%s/: \"%s\" want %s", p, err, want);
        }
        /* lx_new names the terminal */
        const char *pats[2] = {"ok", p};
        size_t lens[2] = {2, strlen(p)};
        lx_lexer *lx = lx_new(2, pats, lens, NULL, err2, sizeof err2);
        CHECK(!lx, "lx_new accepted /%s/", p);
        lx_free(lx);
        CHECK(strncmp(err2, "terminal 1: ", 12) == 0, "lx_new error \"%s\"", err2);
    }
    char err[64];
    CHECK(lx_check_pattern("a{2,3}[x-z]", 11, err, sizeof err) == 0, "valid pattern rejected: %s", err);
    /* a NUL byte inside a pattern is an ordinary character */
    CHECK(match_n("a\0b", 3, "a\0b", 3, err, sizeof err) == 1, "NUL in pattern");
    /* a small error buffer truncates, no overflow */
    char tiny[8];
    CHECK(lx_check_pattern("(?=x)", 5, tiny, sizeof tiny) == -1 && strlen(tiny) < sizeof tiny, "tiny buffer");
}

static void test_multi(void) {
    /* terminals: 0 keyword "if", 1 identifier, 2 number, 3 literal "i+" (is_literal: no regex) */
    const char *pats[4] = {"if", "[a-z][a-z0-9]*", "-?(0|[1-9][0-9]*)(\\.[0-9]+)?", "i+"};
    size_t lens[4] = {2, 14, strlen(pats[2]), 2};
    uint8_t lit[4] = {0, 0, 0, 1};
    char err[256];
    lx_lexer *lx = lx_new(4, pats, lens, lit, err, sizeof err);
    CHECK(lx != NULL, "lx_new: %s", err);
    if (!lx) return;
    CHECK(lx_n_terminals(lx) == 4, "n_terminals");
    uint64_t all = 15, only_id = 2, only_lit = 8, none = 0;
    lx_state s0 = lx_start(lx, &all);
    CHECK(s0 != LX_DEAD && lx_start(lx, &all) == s0, "start interned");
    CHECK(lx_accepting(lx, s0) == NULL, "nothing accepts the empty lexeme");
    lx_state s = run(lx, s0, "if", 2);
    const uint64_t *acc = lx_accepting(lx, s);
    CHECK(acc && acc[0] == 3, "\"if\" is keyword and identifier: %llx", acc ? (unsigned long long)acc[0] : 0ull);
    CHECK(lx_can_continue(lx, s), "\"if\" can continue (ifx)");
    s = run(lx, s0, "ifx", 3);
    acc = lx_accepting(lx, s);
    CHECK(acc && acc[0] == 2, "\"ifx\" identifier only");
    s = run(lx, s0, "-12.5", 5);
    acc = lx_accepting(lx, s);
    CHECK(acc && acc[0] == 4, "number");
    s = run(lx, s0, "-12.", 4);
    CHECK(s != LX_DEAD && lx_accepting(lx, s) == NULL && lx_can_continue(lx, s), "\"-12.\" pending");
    CHECK(run(lx, s0, "-12.x", 5) == LX_DEAD, "dead after -12.x");
    CHECK(run(lx, s0, "01", 2) == LX_DEAD, "01 dead (number), identifier can't start with 0");
    s = run(lx, s0, "i+", 2);
    acc = lx_accepting(lx, s);
    CHECK(acc && acc[0] == 8 && !lx_can_continue(lx, s), "literal i+ (not a regex)");
    CHECK(run(lx, s0, "ii+", 3) == LX_DEAD, "literal is exact");
    /* restriction */
    lx_state si = lx_start(lx, &only_id);
    CHECK(si != s0, "restricted start differs");
    acc = lx_accepting(lx, run(lx, si, "if", 2));
    CHECK(acc && acc[0] == 2, "only identifier allowed");
    CHECK(run(lx, si, "-1", 2) == LX_DEAD, "number not allowed");
    CHECK(run(lx, lx_start(lx, &only_lit), "if", 2) == LX_DEAD, "only literal allowed");
    CHECK(lx_start(lx, &none) == LX_DEAD, "nothing allowed: dead");
    CHECK(lx_next(lx, LX_DEAD, 'a') == LX_DEAD && !lx_can_continue(lx, LX_DEAD) && !lx_accepting(lx, LX_DEAD),
          "dead stays dead");
    /* interning: the same set reached two ways is one state */
    CHECK(run(lx, s0, "ab", 2) == run(lx, s0, "xy", 2), "identifier states interned");
    lx_free(lx);
}

static void test_dead_and_continue(void) {
    const char *pats[3] = {"ab$c", "[^\\u0000-\\u{10FFFF}]", "x(y|$)"};
    size_t lens[3] = {4, strlen(pats[1]), 6};
    char err[256];
    lx_lexer *lx = lx_new(3, pats, lens, NULL, err, sizeof err);
    CHECK(lx != NULL, "lx_new: %s", err);
    if (!lx) return;
    uint64_t b0 = 1, b1 = 2, b2 = 4;
    CHECK(lx_start(lx, &b0) == LX_DEAD, "ab$c can never match: dead at start");
    CHECK(lx_start(lx, &b1) == LX_DEAD, "empty class: dead at start");
    lx_state s = lx_next(lx, lx_start(lx, &b2), 'x');
    CHECK(s != LX_DEAD && lx_accepting(lx, s) && lx_can_continue(lx, s), "x: accepts, may continue with y");
    s = lx_next(lx, s, 'y');
    CHECK(s != LX_DEAD && lx_accepting(lx, s) && !lx_can_continue(lx, s), "xy: accepts, cannot continue");
    CHECK(lx_next(lx, s, 'y') == LX_DEAD, "xyy dead");
    lx_free(lx);
}

static void test_many_terminals(void) {
    /* 130 literal terminals: bitsets span three words */
    enum { N = 130 };
    char buf[N][16];
    const char *pats[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) snprintf(buf[i], sizeof buf[i], "t%d", i), pats[i] = buf[i], lens[i] = strlen(buf[i]);
    char err[256];
    lx_lexer *lx = lx_new(N, pats, lens, NULL, err, sizeof err);
    CHECK(lx != NULL, "lx_new: %s", err);
    if (!lx) return;
    uint64_t all[3] = {~0ull, ~0ull, ~0ull}, one[3] = {0, 0, 1ull << (129 - 128)};
    lx_state s = run(lx, lx_start(lx, all), "t129", 4);
    const uint64_t *acc = lx_accepting(lx, s);
    CHECK(acc && acc[2] == 2 && acc[0] == 0 && acc[1] == 0, "t129 accepted alone");
    s = run(lx, lx_start(lx, one), "t12", 3);
    CHECK(s != LX_DEAD && !lx_accepting(lx, s), "t12 not allowed, t129 pending");
    lx_free(lx);
    /* zero terminals */
    lx = lx_new(0, NULL, NULL, NULL, err, sizeof err);
    CHECK(lx && lx_start(lx, NULL) == LX_DEAD, "zero terminals");
    lx_free(lx);
}

static void test_bounds(void) {
    char err[256];
    /* a pattern over the NFA limit fails cleanly */
    const char *big = "((a{1000}){1000}){1000}";
    CHECK(lx_check_pattern(big, strlen(big), err, sizeof err) == -1 && strstr(err, "too large"), "%s", err);
    /* an empty group repeated a lot does not hang */
    const char *empty = "((){1000000}){1000000}";
    CHECK(lx_check_pattern(empty, strlen(empty), err, sizeof err) == -1, "empty loop");
    /* exponential DFA: (a|b)*a(a|b){14}; random input stays correct */
    const char *pat = "(a|b)*a(a|b){14}";
    size_t len = strlen(pat);
    lx_lexer *lx = lx_new(1, &pat, &len, NULL, err, sizeof err);
    CHECK(lx != NULL, "%s", err);
    if (!lx) return;
    uint64_t all = 1;
    unsigned long long seed = 7;
    char s[4096];
    for (int r = 0; r < 200; r++) {
        size_t n = 15 + test_rand_u64(&seed) % 200;
        for (size_t i = 0; i < n; i++) s[i] = (test_rand_u64(&seed) & 1) ? 'a' : 'b';
        lx_state st = run(lx, lx_start(lx, &all), s, n);
        int want = s[n - 15] == 'a';
        CHECK((lx_accepting(lx, st) != NULL) == want, "exponential pattern, round %d", r);
    }
    CHECK(!lx_exhausted(lx), "not exhausted");
    lx_free(lx);
}

/* concurrent readers: threads walk the same fresh lexer (building states under its lock) and must
 * agree with a walk on a private lexer */
typedef struct {
    lx_lexer *lx;
    unsigned long long seed;
    lx_state out[64];
} walk_job;

static const char *k_thread_pats[3] = {"[a-z]+(\\.[a-z]+)*@[a-z]+", "(a|b)*a(a|b){8}", "[0-9]{1,6}(\\.[0-9]*)?"};

static void *walk(void *arg) {
    walk_job *j = arg;
    uint64_t all = 7;
    for (int r = 0; r < 64; r++) {
        lx_state s = lx_start(j->lx, &all);
        for (int i = 0; i < 300; i++) s = lx_next(j->lx, s, (uint8_t)"ab@.c19"[test_rand_u64(&j->seed) % 7]);
        j->out[r] = s;
    }
    return NULL;
}

static void test_threads(void) {
    size_t lens[3];
    for (int i = 0; i < 3; i++) lens[i] = strlen(k_thread_pats[i]);
    char err[256];
    lx_lexer *shared = lx_new(3, k_thread_pats, lens, NULL, err, sizeof err);
    CHECK(shared != NULL, "%s", err);
    if (!shared) return;
    enum { T = 4 };
    walk_job jobs[T];
    pthread_t th[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (walk_job){.lx = shared, .seed = (unsigned long long)t};
        pthread_create(&th[t], NULL, walk, &jobs[t]);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        walk_job ref = {.lx = lx_new(3, k_thread_pats, lens, NULL, err, sizeof err), .seed = (unsigned long long)t};
        walk(&ref);
        for (int r = 0; r < 64; r++) {
            const uint64_t *a = lx_accepting(shared, jobs[t].out[r]), *b = lx_accepting(ref.lx, ref.out[r]);
            CHECK((a ? a[0] : 0) == (b ? b[0] : 0) && lx_can_continue(shared, jobs[t].out[r]) ==
                  lx_can_continue(ref.lx, ref.out[r]), "thread %d walk %d differs", t, r);
        }
        lx_free(ref.lx);
    }
    lx_free(shared);
}

/* ---- the --match driver ---- */

static int unhex(const char *h, size_t n, char *out) {
    if (n % 2) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = h[2 * i + (size_t)k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
        }
        out[i] = (char)v;
    }
    return (int)(n / 2);
}

static int driver(void) {
    char *line = NULL, *pat = NULL, *prev = NULL, *str = NULL;
    size_t cap = 0;
    ssize_t len;
    lx_lexer *lx = NULL;
    int prev_len = -1;
    char err[512];
    while ((len = getline(&line, &cap, stdin)) > 0) {
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        char *sp = strchr(line, ' ');
        size_t pn = sp ? (size_t)(sp - line) : (size_t)len;
        pat = realloc(pat, pn / 2 + 1);
        str = realloc(str, (size_t)len / 2 + 1);
        int pl = unhex(line, pn, pat), sl = sp ? unhex(sp + 1, strlen(sp + 1), str) : 0;
        if (pl < 0 || sl < 0) {
            printf("E bad input line\n");
            continue;
        }
        if (!(prev && pl == prev_len && !memcmp(prev, pat, (size_t)pl))) {
            lx_free(lx);
            const char *pats[1] = {pat};
            size_t lens[1] = {(size_t)pl};
            lx = lx_new(1, pats, lens, NULL, err, sizeof err);
            free(prev);
            prev = malloc((size_t)pl + 1);
            memcpy(prev, pat, (size_t)pl);
            prev_len = pl;
        }
        if (!lx) {
            printf("E %s\n", err);
        } else {
            uint64_t all = 1;
            lx_state s = run(lx, lx_start(lx, &all), str, (size_t)sl);
            printf("%d\n", lx_accepting(lx, s) != NULL);
        }
        fflush(stdout);
    }
    lx_free(lx);
    free(line);
    free(pat);
    free(prev);
    free(str);
    return 0;
}

/* lx_uniform (a state's most common successor), the inline table lookup, and NFA fragments shared
 * between alternatives (a pattern that fits only shared still matches what it should) */
static void test_uniform_and_sharing(void) {
    char err[256];
    const char *pat = "[a-z]{0,3}!?";
    size_t len = strlen(pat);
    lx_lexer *lx = lx_new(1, &pat, &len, NULL, err, sizeof err);
    CHECK(lx != NULL, "%s", err);
    if (!lx) return;
    uint64_t all = 1, set[4];
    lx_state s = lx_start(lx, &all);
    lx_state to = lx_uniform(lx, s, set);
    CHECK(to != LX_DEAD && to == lx_next(lx, s, 'q'), "uniform successor is the letters' one");
    int letters = 1, others = 0;
    for (int b = 0; b < 256; b++) {
        int in = (int)(set[b >> 6] >> (b & 63) & 1);
        if (b >= 'a' && b <= 'z') letters &= in;
        else others |= in;
    }
    CHECK(letters && !others, "uniform set is exactly a-z");
    lx_state x = s;
    for (int k = 0; k < 3; k++) x = lx_next(lx, x, 'a');
    to = lx_uniform(lx, x, set);
    CHECK(to == lx_next(lx, x, '!') && (set['!' >> 6] >> ('!' & 63) & 1) && !(set['a' >> 6] >> ('a' & 63) & 1),
          "after 3 letters only ! goes on");
    CHECK(lx_uniform(lx, lx_next(lx, x, '!'), set) == LX_DEAD && !(set[0] | set[1] | set[2] | set[3]),
          "nothing after !");
    lx_table tb;
    lx_get_table(lx, &tb);
    unsigned long long seed = 11;
    for (int r = 0; r < 2000; r++) {
        lx_state a = s;
        for (int k = 0; k < 5 && a != LX_DEAD; k++) {
            uint8_t b = (uint8_t)(test_rand_u64(&seed) % 4 == 0 ? '!' : 'a' + test_rand_u64(&seed) % 30);
            lx_state f = lx_next_fast(lx, &tb, a, b);
            CHECK(f == lx_next(lx, a, b), "lx_next_fast agrees");
            a = f;
        }
    }
    lx_free(lx);
    /* four branches with the same 300000-node tail: over LX_MAX_NFA_STATES unshared, within shared */
    const char *big = "(?:ax{300000}|bcx{300000}|dx{300000}|ex{300000})";
    CHECK(lx_check_pattern(big, strlen(big), err, sizeof err) == 0, "shared tail: %s", err);
    len = strlen(big);
    lx = lx_new(1, &big, &len, NULL, err, sizeof err);
    CHECK(lx != NULL, "shared tail lexer: %s", err);
    if (lx) {
        lx_state a = lx_start(lx, &all), b = lx_next(lx, lx_next(lx, a, 'b'), 'c');
        a = lx_next(lx, a, 'a');
        CHECK(!lx_accepting(lx, a), "a alone does not match");
        for (int k = 0; k < 300000 && a != LX_DEAD; k++) a = lx_next(lx, a, 'x'), b = lx_next(lx, b, 'x');
        CHECK(lx_accepting(lx, a) && lx_accepting(lx, b), "a x{300000} and bc x{300000} match");
        CHECK(lx_next(lx, a, 'x') == LX_DEAD, "no more x");
        lx_free(lx);
    }
    const char *two = "(?:ax{600000}|by{600000})"; /* nothing shared: too large */
    CHECK(lx_check_pattern(two, strlen(two), err, sizeof err) == -1 && strstr(err, "too large"), "%s", err);
}

/* lx_new_pre (terminals compiled beforehand, lx_pattern_new) gives the lexer lx_new gives: the
 * same answers on every prefix of some texts, from every single-terminal start; the NFA limit still
 * holds over all terminals together. */
static void test_precompiled(void) {
    const char *pats[5] = {"if", "[a-z][a-z0-9]*", "-?(0|[1-9][0-9]*)(\\.[0-9]+)?", "i+", "\"(?:[^\"\\\\]|\\\\.)*\""};
    size_t lens[5];
    uint8_t lit[5] = {0, 0, 0, 1, 0};
    const lx_pattern *pre[5] = {NULL};
    lx_pattern *own[5] = {NULL};
    char err[256];
    for (int t = 0; t < 5; t++) {
        lens[t] = strlen(pats[t]);
        if (!lit[t]) {
            own[t] = lx_pattern_new(pats[t], lens[t], err, sizeof err);
            CHECK(own[t] != NULL, "lx_pattern_new /%s/: %s", pats[t], err);
            pre[t] = own[t];
        }
    }
    lx_lexer *a = lx_new(5, pats, lens, lit, err, sizeof err), *b = lx_new_pre(5, pats, lens, lit, pre, err, sizeof err);
    CHECK(a && b, "lexers: %s", err);
    const char *texts[] = {"if", "ifx9", "-12.5", "i+", "\"a\\\"b\"", "\"\xc3\xa9\"", "01", "x\"", ""};
    for (int k = 0; a && b && k < (int)(sizeof texts / sizeof texts[0]); k++)
        for (uint64_t allowed = 1; allowed < 32; allowed++) {
            lx_state sa = lx_start(a, &allowed), sb = lx_start(b, &allowed);
            for (size_t i = 0;; i++) {
                const uint64_t *x = lx_accepting(a, sa), *y = lx_accepting(b, sb);
                CHECK((sa == LX_DEAD) == (sb == LX_DEAD) && (x ? x[0] : 0) == (y ? y[0] : 0) &&
                          lx_can_continue(a, sa) == lx_can_continue(b, sb),
                      "text %d allowed %llx byte %zu", k, (unsigned long long)allowed, i);
                if (!texts[k][i]) break;
                sa = lx_next(a, sa, (uint8_t)texts[k][i]), sb = lx_next(b, sb, (uint8_t)texts[k][i]);
            }
        }
    lx_free(a);
    lx_free(b);
    for (int t = 0; t < 5; t++) lx_pattern_free(own[t]);
    /* each fits alone, not both together */
    const char *big[2] = {"a{600000}", "b{600000}"};
    size_t blens[2] = {9, 9};
    lx_pattern *p0 = lx_pattern_new(big[0], 9, err, sizeof err), *p1 = lx_pattern_new(big[1], 9, err, sizeof err);
    CHECK(p0 && p1, "each pattern fits: %s", err);
    const lx_pattern *bp[2] = {p0, p1};
    lx_lexer *c = lx_new_pre(2, big, blens, NULL, bp, err, sizeof err);
    CHECK(!c && strstr(err, "terminal 1: ") && strstr(err, "too large"), "over the limit in all: %s", err);
    lx_free(c);
    lx_pattern_free(p0);
    lx_pattern_free(p1);
    lx_pattern_free(NULL);
}

/* A new DFA state's row is filled in one pass over its nodes (lexer.c fill_row); the per-class form
 * (lx_set_fill_reference) must build the same states in the same order: the same successor ids on
 * every byte from every state reached, the same accepting sets. Patterns like an object's key
 * position: property-name literals beside a free string, and classes that split a string's body. */
static void test_fill_forms(void) {
    const char *pats[7] = {"\"name\"", "\"nickname\"", "\"n\\u00e9\"", "\"(?:[^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt])*\"",
                           "-?(0|[1-9][0-9]*)(\\.[0-9]+)?", "[a-z]{2,5}x", "ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'()*+,/:;<=>?@[]^_`{|}~"};
    size_t lens[7];
    uint8_t lit[7] = {1, 1, 0, 0, 0, 0, 1};
    char err[256];
    for (int t = 0; t < 7; t++) lens[t] = strlen(pats[t]);
    /* a lexer freed first gives its row mapping to the next ones of the same mapping size (lexer.c
     * rows_get): here one of 33-64 byte classes (rows of 64 entries), its states' rows written,
     * before lexers of more than 64 classes, whose dead row (128 entries) covers its first rows */
    const char *zp = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    size_t zl = strlen(zp);
    uint8_t zlit = 1;
    lx_lexer *z = lx_new(1, &zp, &zl, &zlit, err, sizeof err);
    CHECK(z != NULL, "lexer: %s", err);
    uint64_t one = 1;
    for (lx_state x = z ? lx_start(z, &one) : LX_DEAD, k = 0; x != LX_DEAD; x = lx_next(z, x, (uint8_t)zp[k++]))
        for (int c = 0; c < 256; c++) (void)lx_next(z, x, (uint8_t)c);
    lx_free(z);
    lx_lexer *a = lx_new(7, pats, lens, lit, err, sizeof err), *b = lx_new(7, pats, lens, lit, err, sizeof err);
    CHECK(a && b, "lexers: %s", err);
    if (!a || !b) return;
    lx_set_fill_reference(b, 1);
    for (int c = 0; c < 256; c++)
        CHECK(lx_next(a, LX_DEAD, (uint8_t)c) == LX_DEAD && lx_next(b, LX_DEAD, (uint8_t)c) == LX_DEAD, "dead row, byte %d", c);
    enum { MAXS = 4096 };
    static uint8_t seen[MAXS];
    static lx_state q[MAXS];
    memset(seen, 0, sizeof seen);
    int qn = 0, bad = 0;
    for (uint64_t allowed = 1; allowed < 128; allowed++) {
        lx_state sa = lx_start(a, &allowed), sb = lx_start(b, &allowed);
        CHECK(sa == sb, "start %llx: %u vs %u", (unsigned long long)allowed, sa, sb);
        if (sa < MAXS && !seen[sa]) seen[sa] = 1, q[qn++] = sa;
    }
    for (int k = 0; k < qn && !bad; k++)
        for (int c = 0; c < 256; c++) {
            lx_state x = lx_next(a, q[k], (uint8_t)c), y = lx_next(b, q[k], (uint8_t)c);
            const uint64_t *ax = lx_accepting(a, x), *ay = lx_accepting(b, y);
            if (x != y || (ax ? ax[0] : 0) != (ay ? ay[0] : 0) || lx_can_continue(a, x) != lx_can_continue(b, y)) {
                CHECK(0, "state %u byte %d: %u vs %u", q[k], c, x, y);
                bad = 1;
                break;
            }
            if (x < MAXS && !seen[x]) seen[x] = 1, q[qn++] = x;
        }
    CHECK(qn > 50, "only %d states reached", qn);
    lx_free(a);
    lx_free(b);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--match")) return driver();
    test_table();
    test_errors();
    test_multi();
    test_dead_and_continue();
    test_many_terminals();
    test_bounds();
    test_threads();
    test_uniform_and_sharing();
    test_precompiled();
    test_fill_forms();
    TEST_DONE();
}
