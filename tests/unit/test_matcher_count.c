/* Counting states (a JSON string's maxLength / minLength, a pattern's {m,n}): their masks come from
 * the vocabulary's index of tokens by character count plus walks under the trie's exits and
 * frontier nodes (matcher.c, vocab_class.c). They must equal the plain walk of the whole trie
 * (gr_vocab_set_count_walk off) at every byte of texts that run every budget down to 0, with a
 * vocabulary of ASCII runs longer than the index's depth, multi-byte characters (whole, cut short,
 * ill-formed), and tokens holding quotes, escapes and control bytes; and a few masks must equal the
 * brute-force answer (accept each token, roll back). The walk caches are off, so every mask is
 * computed, not reused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "test_util.h"

#define MAX_TOK 3000
static char *g_tok[MAX_TOK];
static int g_n;

static void add(const char *s, size_t n) {
    if (g_n == MAX_TOK || !n) return;
    g_tok[g_n] = malloc(n + 1);
    memcpy(g_tok[g_n], s, n);
    g_tok[g_n][n] = 0;
    g_n++;
}

static unsigned long long g_seed = 88172645463325252ull;
static unsigned rnd(unsigned n) {
    g_seed ^= g_seed << 13, g_seed ^= g_seed >> 7, g_seed ^= g_seed << 17;
    return (unsigned)(g_seed % n);
}

/* The vocabulary: runs of one character up to 100 bytes (past the index's 64 characters), random
 * concatenations of text, escape, quote and UTF-8 pieces, and every single byte. */
static gr_vocab *make_vocab(int count_walk) {
    static const char *pieces[] = {
        "a", "b", "z", "Q", "7", " ", "-", "_", "=", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\"", "\\", "\\n",
        "\\\"", "\\\\", "\\u00e9", "\\u", ",", "}", ":", "\n", "\t", "\x7f", "\xc3", "\xe4\xb8", "\xf0\x9f\x98", "\x80",
        "\xed\xa0\x80", "\xc0\xaf", "ab", "the", "  ",
    };
    const int n_pieces = (int)(sizeof pieces / sizeof *pieces);
    if (!g_n) {
        char buf[256];
        for (int b = 1; b < 256; b++) {
            buf[0] = (char)b;
            add(buf, 1);
        }
        const char run_chars[] = {'a', ' ', '-', '='};
        for (int k = 0; k < 4; k++)
            for (int l = 2; l <= 100; l += l < 12 ? 1 : 7) {
                memset(buf, run_chars[k], (size_t)l);
                add(buf, (size_t)l);
            }
        for (int l = 2; l <= 80; l += 6) { /* long multi-byte runs */
            size_t o = 0;
            for (int j = 0; j < l && o + 3 < sizeof buf; j++) memcpy(buf + o, "\xe4\xb8\xad", 3), o += 3;
            add(buf, o);
        }
        while (g_n < MAX_TOK - 2) {
            size_t o = 0;
            int np = 1 + (int)rnd(rnd(4) ? 4 : 12);
            for (int j = 0; j < np; j++) {
                const char *p = pieces[rnd((unsigned)n_pieces)];
                size_t l = strlen(p);
                if (o + l >= sizeof buf) break;
                memcpy(buf + o, p, l), o += l;
            }
            add(buf, o);
        }
        add("<eos>", 5);
    }
    const uint8_t *bytes[MAX_TOK];
    uint32_t lens[MAX_TOK];
    uint8_t special[MAX_TOK] = {0};
    for (int i = 0; i < g_n; i++) bytes[i] = (const uint8_t *)g_tok[i], lens[i] = (uint32_t)strlen(g_tok[i]);
    special[g_n - 1] = 1;
    int32_t eos = g_n - 1;
    gr_vocab *v = gr_vocab_new(g_n, bytes, lens, special, &eos, 1);
    if (v) {
        gr_vocab_set_walk_cache(v, 0);
        gr_vocab_set_count_walk(v, count_walk);
    }
    return v;
}

#define WORDS ((MAX_TOK + 31) / 32)

/* The masks after each byte of text with schema compiled for v (at most cap); their count, -1 on
 * an error. */
static int masks_of(gr_vocab *v, const char *schema, const char *text, uint32_t (*masks)[WORDS], int32_t *counts,
                    int cap, int brute_every) {
    char err[256];
    gr_grammar *g = js_compile(schema, strlen(schema), NULL, err, sizeof err);
    CHECK(g, "schema %s: %s", schema, err);
    gr_compiled *c = g ? gr_compile(g, v, err, sizeof err) : NULL;
    CHECK(!g || c, "compile %s: %s", schema, err);
    gr_matcher *m = c ? gr_matcher_new(c) : NULL;
    int n = m ? 0 : -1;
    size_t len = strlen(text);
    for (size_t i = 0; m && i <= len && n < cap; i++) {
        memset(masks[n], 0, sizeof masks[n]);
        counts[n] = gr_matcher_mask(m, masks[n]);
        int pop = 0;
        for (int w = 0; w < WORDS; w++) pop += __builtin_popcount(masks[n][w]);
        CHECK(pop == counts[n], "schema %s, byte %zu: count %d, %d bits", schema, i, counts[n], pop);
        if (brute_every && i % (size_t)brute_every == 0)
            for (int t = 0; t < g_n - 1; t++) {
                int ok = gr_matcher_accept(m, t) == 0;
                if (ok) gr_matcher_rollback(m, 1);
                CHECK(ok == (int)(masks[n][t >> 5] >> (t & 31) & 1),
                      "schema %s, byte %zu: token %d (%s) mask %d, brute %d", schema, i, t, g_tok[t], !ok, ok);
            }
        n++;
        if (i < len && gr_matcher_accept_bytes(m, (const uint8_t *)text + i, 1)) {
            CHECK(0, "schema %s: byte %zu of %s refused", schema, i, text);
            n = -1;
            break;
        }
    }
    if (n >= 0) CHECK(gr_matcher_can_end(m), "schema %s: %s not complete", schema, text);
    gr_matcher_free(m);
    gr_compiled_free(c);
    gr_free(g);
    return n;
}

int main(void) {
    gr_vocab *on = make_vocab(1), *off = make_vocab(0);
    CHECK(on && off, "vocabularies");
    if (!on || !off) TEST_DONE();
    static const char *const cases[][2] = {
        {"{\"type\":\"string\",\"maxLength\":3}", "\"a\xc3\xa9z\""},
        {"{\"type\":\"string\",\"maxLength\":12}", "\"a\\\"\xe4\xb8\xad \\u00e9-\xf0\x9f\x98\x80=b\""},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":30}", "\"ab\\n--  ==\xe4\xb8\xad\xe4\xb8\xad\xc3\xa9\""},
        {"{\"type\":\"string\",\"maxLength\":90}",
         "\"the quick brown fox \xe4\xb8\xad\xe4\xb8\xad jumps over\\\\ the lazy dog 0123456789 ----====----"
         " \xf0\x9f\x98\x80\xf0\x9f\x98\x80 abcdefghijklm\""},
        {"{\"type\":\"string\",\"minLength\":6}", "\"a\xc3\xa9 \\\"bcdefgh\""},
        {"{\"type\":\"string\",\"pattern\":\"^[a-z0-9 _-]{2,40}$\"}", "\"ab_cd-ef 0123 zz\""},
        {"{\"type\":\"string\",\"pattern\":\"^x[ -~]{0,70}y$\"}",
         "\"xa b-c=d_e!f#g$h%i&j'k(l)m*n+o,p.q/r:s;t<u>v?w@x[y]z^{|}~y\""},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":8},"
         "\"b\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":70}},\"required\":[\"a\",\"b\"],"
         "\"additionalProperties\":false}",
         "{\"a\":\"x\xc3\xa9y\",\"b\":\"z\\\"z  ------ \xe4\xb8\xad\"}"},
    };
    static uint32_t m_on[200][WORDS], m_off[200][WORDS];
    static int32_t c_on[200], c_off[200];
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int a = masks_of(on, cases[k][0], cases[k][1], m_on, c_on, 200, k == 1 || k == 7 ? 3 : 0);
        int b = masks_of(off, cases[k][0], cases[k][1], m_off, c_off, 200, 0);
        CHECK(a > 0 && a == b, "case %zu: %d / %d masks", k, a, b);
        for (int i = 0; i < a && i < b; i++) {
            CHECK(c_on[i] == c_off[i], "case %zu (%s), byte %d: count %d, plain walk %d", k, cases[k][0], i, c_on[i],
                  c_off[i]);
            if (memcmp(m_on[i], m_off[i], sizeof m_on[i])) {
                int t = 0;
                while (t < g_n && (m_on[i][t >> 5] >> (t & 31) & 1) == (m_off[i][t >> 5] >> (t & 31) & 1)) t++;
                CHECK(0, "case %zu (%s), byte %d: mask differs from the plain walk's (first: token %d \"%s\")", k,
                      cases[k][0], i, t, t < g_n ? g_tok[t] : "");
            }
        }
    }
    CHECK(gr_vocab_count_walk_classes(on) > 0, "no class indexed: the counting path was not taken");
    CHECK(gr_vocab_count_walk_classes(off) == 0, "switched off, yet %d classes", gr_vocab_count_walk_classes(off));
    gr_vocab_free(on);
    gr_vocab_free(off);
    for (int i = 0; i < g_n; i++) free(g_tok[i]);
    TEST_DONE();
}
