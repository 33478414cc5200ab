/* The token-mask matcher against a brute-force reference: for every token, "accept it, then roll
 * back" (which feeds its bytes one at a time through the lexer and parser) must agree with the
 * mask computed by the trie walk, at every step of random walks over several grammars with a
 * small fake vocabulary (multi-byte tokens spanning several lexemes and skipped text, keywords vs
 * identifiers, empty-matching terminals, bounded repetition, strings of bounded length, whose
 * trie subtrees the walk takes whole). Also: eos only where the grammar may
 * end, special tokens never, rollback restores masks, forced bytes, errors of gr_compile; the
 * vocabulary's walk cache shared across grammars gives the masks computed without it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "test_util.h"

static const char *k_tokens[] = {
    "[", "]", ",", " ", "  ", "0", "1", "2", "9", "12", "[1", "1,", ", ", ",1", "12]", "]]", "],", " [", "[]",
    "a", "b", "i", "f", "t", "h", "e", "n", "x", "z", "if", "ifx", "then", " if", "if ", "ab", "aba", "abab",
    "ba", "\"", "\"\"", "\"a", "a\"", "\" ", "=", "=1", ";", "x=", "1;", "1; ", "\xc3\xa9", "\xc3", "\xa9",
    "aaaa", "aaaaaa", "ab ab", "abba\"", "zz\xc3\xa9z", "hi there", "aa", "aaa",
    /* non-ASCII text (whole subtrees of text-loop states are taken whole): whole characters,
     * cut-short ones, and ill-formed UTF-8 (a surrogate, an overlong form, a stray continuation) */
    "\xe4\xb8\xad", "\xe4\xb8\xad\xe6\x96\x87", "\xe4\xb8\xad\xe6", "\xe4\xb8", "a\xe4\xb8\xad",
    "\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80" "a", "\xf0\x9f", "\xc3\xa9" "a", "\xc3\xa9\xe4", "\xc3\xa9\xe4\xb8\xad\"",
    "\xed\xa0\x80", "\xe0\x80\x80", "\xc3\xa9\xa9", "\xe4\xb8\xad \xe4\xb8\xad",
    "<eos>", "<s>",
};
#define N_TOK ((int)(sizeof k_tokens / sizeof *k_tokens))

static gr_vocab *make_vocab(void) {
    const uint8_t *bytes[N_TOK];
    uint32_t lens[N_TOK];
    uint8_t special[N_TOK] = {0};
    for (int i = 0; i < N_TOK; i++) {
        bytes[i] = (const uint8_t *)k_tokens[i];
        lens[i] = (uint32_t)strlen(k_tokens[i]);
    }
    special[N_TOK - 1] = special[N_TOK - 2] = 1;
    int32_t eos = N_TOK - 2;
    return gr_vocab_new(N_TOK, bytes, lens, special, &eos, 1);
}

static int brute(gr_matcher *m, int t) {
    if (t == N_TOK - 1) return gr_matcher_accept(m, t) == 0 ? 2 : 0; /* special: must be refused */
    if (gr_matcher_accept(m, t) != 0) return 0;
    CHECK(gr_matcher_rollback(m, 1) == 0, "rollback 1");
    return 1;
}

/* random walk: at each step the mask must equal the brute-force answer */
static void walk(const char *name, const gr_compiled *c, unsigned long long seed, int steps, int *ended) {
    gr_matcher *m = gr_matcher_new(c);
    CHECK(m, "%s: matcher", name);
    if (!m) return;
    uint32_t mask[(N_TOK + 31) / 32], saved[64][(N_TOK + 31) / 32];
    int n_acc = 0;
    for (int s = 0; s < steps; s++) {
        int32_t n = gr_matcher_mask(m, mask);
        memcpy(saved[n_acc % 64], mask, sizeof mask);
        int32_t nb = 0;
        int allowed[N_TOK], na = 0;
        for (int t = 0; t < N_TOK; t++) {
            int b = brute(m, t);
            int got = (int)(mask[t >> 5] >> (t & 31) & 1);
            CHECK(b != 2, "%s: special token accepted", name);
            CHECK(got == b, "%s step %d: token %d \"%s\" mask %d brute %d", name, s, t, k_tokens[t], got, b);
            if (b) {
                nb++;
                if (t != N_TOK - 2) allowed[na++] = t;
            }
        }
        CHECK(n == nb, "%s: count %d vs %d", name, n, nb);
        int eos_ok = (int)(mask[(N_TOK - 2) >> 5] >> ((N_TOK - 2) & 31) & 1);
        CHECK(eos_ok == gr_matcher_can_end(m), "%s: eos bit vs can_end", name);
        if (!na) {
            if (eos_ok) (*ended)++;
            break;
        }
        /* sometimes roll back a few tokens and check the mask is the one seen then */
        if (n_acc >= 3 && test_rand_u64(&seed) % 5 == 0) {
            int k = 1 + (int)(test_rand_u64(&seed) % 3);
            CHECK(gr_matcher_rollback(m, k) == 0, "%s: rollback %d", name, k);
            n_acc -= k;
            uint32_t again[(N_TOK + 31) / 32];
            gr_matcher_mask(m, again);
            CHECK(memcmp(again, saved[n_acc % 64], sizeof again) == 0, "%s: mask after rollback %d differs", name, k);
            continue; /* the allowed list above belongs to the state before the rollback */
        }
        int t = allowed[test_rand_u64(&seed) % (unsigned)na];
        CHECK(gr_matcher_accept(m, t) == 0, "%s: accept allowed token %d", name, t);
        n_acc++;
    }
    CHECK(gr_matcher_rollback(m, n_acc + 1) == -1, "%s: rollback past the start refused", name);
    CHECK(gr_matcher_error(m)[0] == 0, "%s: error %s", name, gr_matcher_error(m));
    gr_matcher_free(m);
}

/* threads sharing one compiled grammar (and its lexer-walk cache) get the same masks */
typedef struct {
    const gr_compiled *c;
    const char *text;
    uint32_t masks[16][(N_TOK + 31) / 32];
} th_arg;

static void *th_run(void *p) {
    th_arg *a = p;
    gr_matcher *m = gr_matcher_new(a->c);
    for (int i = 0; i < 16 && a->text[i]; i++) {
        gr_matcher_mask(m, a->masks[i]);
        gr_matcher_accept_bytes(m, (const uint8_t *)a->text + i, 1);
    }
    gr_matcher_free(m);
    return NULL;
}

static void threads_agree(const gr_compiled *c, const char *text) {
    static th_arg args[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        memset(&args[k], 0, sizeof args[k]);
        args[k].c = c;
        args[k].text = text;
        pthread_create(&th[k], NULL, th_run, &args[k]);
    }
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    for (int k = 1; k < 4; k++)
        CHECK(memcmp(args[0].masks, args[k].masks, sizeof args[0].masks) == 0, "thread %d masks differ", k);
}

static gr_compiled *compile(gr_grammar *g, const gr_vocab *v) {
    char err[256];
    gr_compiled *c = gr_compile(g, v, err, sizeof err);
    CHECK(c, "compile: %s (%s)", err, gr_error(g));
    return c;
}

static int accepts(const gr_compiled *c, const char *text) {
    gr_matcher *m = gr_matcher_new(c);
    int ok = gr_matcher_accept_bytes(m, (const uint8_t *)text, strlen(text)) == 0 && gr_matcher_can_end(m);
    gr_matcher_free(m);
    return ok;
}

static void run_walks(const char *name, const gr_compiled *c) {
    int ended = 0;
    for (unsigned long long seed = 1; seed <= 30; seed++) walk(name, c, seed * 7919, 25, &ended);
}

/* The mask after each byte of text (at most 48 bytes) with schema compiled for v; 0 ok. */
static int schema_masks(const gr_vocab *v, const char *schema, const char *text, uint32_t (*masks)[(N_TOK + 31) / 32]) {
    char err[256];
    gr_grammar *g = js_compile(schema, strlen(schema), NULL, err, sizeof err);
    CHECK(g, "schema %s: %s", schema, err);
    gr_compiled *c = g ? compile(g, v) : NULL;
    gr_matcher *m = c ? gr_matcher_new(c) : NULL;
    int rc = m ? 0 : -1;
    for (size_t i = 0; m && i <= strlen(text) && i < 48; i++) {
        gr_matcher_mask(m, masks[i]);
        if (text[i] && gr_matcher_accept_bytes(m, (const uint8_t *)text + i, 1)) {
            CHECK(0, "schema %s: byte %zu of %s refused", schema, i, text);
            rc = -1;
            break;
        }
    }
    if (m) CHECK(gr_matcher_can_end(m), "schema %s: %s not complete", schema, text);
    gr_matcher_free(m);
    gr_compiled_free(c);
    gr_free(g);
    return rc;
}

/* A wider vocabulary (letters, all letter pairs, each also after a quote and after a comma and quote):
 * trie nodes with 16+ children, where a walk relative to another state's (an object's key position:
 * the listed names or any other key, against the free string) visits only the children on the
 * bytes where the two states differ. Masks against brute force over random walks. */
static void wide_walks(void) {
    enum { MAXW = 2600 };
    static char buf[MAXW][8];
    static const char *extra[] = {"\"", "\":", "\":\"", ",", "{", "}", "{\"", "\"}", "\",", "\",\"", "1", "12", "\":1",
                                  " ", "\\", "\\n", "\xc3\xa9", "<eos>"};
    const uint8_t *bytes[MAXW];
    uint32_t lens[MAXW];
    uint8_t special[MAXW] = {0};
    int n = 0;
    static const char *pre[] = {"", "\"", ",\""};
    for (int p = 0; p < 3; p++)
        for (char a = 'a'; a <= 'z'; a++) {
            snprintf(buf[n++], sizeof buf[0], "%s%c", pre[p], a);
            for (char b = 'a'; b <= 'z'; b++) snprintf(buf[n++], sizeof buf[0], "%s%c%c", pre[p], a, b);
        }
    for (char d = '1'; d <= '9'; d++) /* number nodes with 16+ children: a lexeme may end under them */
        for (const char *c = "0123456789,}.eE-+ ]"; *c; c++) snprintf(buf[n++], sizeof buf[0], "%c%c", d, *c);
    for (size_t k = 0; k < sizeof extra / sizeof *extra; k++) snprintf(buf[n++], sizeof buf[0], "%s", extra[k]);
    for (int i = 0; i < n; i++) bytes[i] = (const uint8_t *)buf[i], lens[i] = (uint32_t)strlen(buf[i]);
    int32_t eos = n - 1;
    special[eos] = 1;
    gr_vocab *v = gr_vocab_new(n, bytes, lens, special, &eos, 1);
    static const char *const schemas[2] = {
        "{\"type\":\"object\",\"properties\":{\"alpha\":{\"type\":\"string\"},\"alps\":{\"type\":\"integer\"},"
        "\"beta\":{\"type\":\"string\"},\"bet\":{\"type\":\"string\"},\"gamma\":{\"type\":\"integer\"},\"ga\":{\"type\":"
        "\"string\"}},\"additionalProperties\":{\"type\":\"string\"}}",
        /* an integer and a number side by side: walks of one relative to the other, both accepting */
        "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"},\"x\":{\"type\":\"number\"},\"k\":{\"type\":"
        "\"array\",\"items\":{\"type\":\"number\"}}},\"additionalProperties\":{\"type\":\"integer\"}}",
    };
    long checked = 0;
    for (int sc = 0; sc < 2 && v; sc++) {
        char err[256];
        gr_grammar *g = js_compile(schemas[sc], strlen(schemas[sc]), NULL, err, sizeof err);
        gr_compiled *c = g ? compile(g, v) : NULL;
        CHECK(c, "wide: compile %s", err);
        uint32_t mask[(MAXW + 31) / 32];
        for (unsigned seed = 1; c && seed <= 24; seed++) {
            gr_matcher *m = gr_matcher_new(c);
            unsigned long long r = seed * 0x9E3779B97F4A7C15ull;
            for (int step = 0; m && step < 24; step++) {
                gr_matcher_mask(m, mask);
                int allowed[MAXW], n_allowed = 0;
                for (int t = 0; t < n; t++) {
                    int got = (int)(mask[t >> 5] >> (t & 31) & 1), want;
                    if (t == eos) want = gr_matcher_can_end(m);
                    else if ((want = gr_matcher_accept(m, t) == 0)) CHECK(gr_matcher_rollback(m, 1) == 0, "wide: rollback");
                    CHECK(got == want, "wide schema %d seed %u step %d: token \"%s\" mask %d brute %d", sc, seed, step, buf[t],
                          got, want);
                    checked++;
                    if (want && t != eos) allowed[n_allowed++] = t;
                }
                if (!n_allowed) break;
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                CHECK(gr_matcher_accept(m, allowed[(r >> 33) % (unsigned)n_allowed]) == 0, "wide: accept");
            }
            gr_matcher_free(m);
        }
        gr_compiled_free(c);
        gr_free(g);
    }
    CHECK(checked > 100000, "wide: %ld masks bits checked", checked);
    gr_vocab_free(v);
}

int main(void) {
    gr_vocab *v = make_vocab();
    CHECK(v && gr_vocab_size(v) == N_TOK, "vocab");
    char err[256];

    { /* list of numbers with skipped spaces: "[" (num ("," num)*)? "]" */
        gr_grammar *g = gr_new();
        int root = gr_nonterminal(g, "root"), items = gr_nonterminal(g, "items");
        int lb = gr_literal(g, "[", 1), rb = gr_literal(g, "]", 1), comma = gr_literal(g, ",", 1);
        int num = gr_regex(g, "[0-9]+", 6);
        int r1[3] = {lb, items, rb};
        gr_rule(g, root, r1, 3);
        int lst = gr_list(g, num, comma, 0, -1);
        gr_rule(g, items, &lst, 1);
        gr_set_start(g, root);
        gr_set_skip(g, "[ ]+", 4);
        gr_compiled *c = compile(g, v);
        if (c) {
            CHECK(accepts(c, "[]"), "[]");
            CHECK(accepts(c, "[1, 2 ,12]"), "[1, 2 ,12]");
            CHECK(accepts(c, " [ 1 ] "), "leading/trailing skip");
            CHECK(!accepts(c, "[1 2]"), "[1 2]");
            CHECK(!accepts(c, "[1,]"), "[1,]");
            CHECK(!accepts(c, "[1"), "[1 cannot end");
            run_walks("list", c);
            threads_agree(c, "[1, 2 ,12]");
            gr_matcher *m = gr_matcher_new(c);
            uint8_t buf[16];
            CHECK(gr_matcher_forced(m, buf, sizeof buf) == 0, "nothing forced before the skip/[ choice");
            gr_matcher_accept_bytes(m, (const uint8_t *)"[1,2", 4);
            CHECK(!gr_matcher_is_done(m), "not done");
            gr_matcher_accept_bytes(m, (const uint8_t *)"]", 1);
            CHECK(gr_matcher_can_end(m), "can end");
            CHECK(!gr_matcher_is_done(m), "skip may follow");
            gr_matcher_free(m);
        }
        gr_compiled_free(c);
        gr_free(g);
    }
    { /* keywords vs identifiers, greedy: ("if" | "then" | id | id "=" num ";")* with spaces */
        gr_grammar *g = gr_new();
        int root = gr_nonterminal(g, "root"), stmt = gr_nonterminal(g, "stmt");
        int kif = gr_literal(g, "if", 2), kthen = gr_literal(g, "then", 4);
        int id = gr_regex(g, "[a-z]+", 6), eq = gr_literal(g, "=", 1), semi = gr_literal(g, ";", 1);
        int num = gr_regex(g, "[0-9]+", 6);
        gr_rule(g, stmt, &kif, 1);
        gr_rule(g, stmt, &kthen, 1);
        gr_rule(g, stmt, &id, 1);
        int asg[4] = {id, eq, num, semi};
        gr_rule(g, stmt, asg, 4);
        int rep = gr_repeat(g, stmt, 0, -1);
        gr_rule(g, root, &rep, 1);
        gr_set_start(g, root);
        gr_set_skip(g, "[ ]+", 4);
        gr_compiled *c = compile(g, v);
        if (c) {
            CHECK(accepts(c, "if x then ifx"), "keywords");
            CHECK(accepts(c, "x=12; if"), "assignment");
            CHECK(accepts(c, ""), "empty");
            CHECK(!accepts(c, "x=;"), "x=;");
            run_walks("keywords", c);
        }
        gr_compiled_free(c);
        gr_free(g);
    }
    { /* strings with an empty-matching body: "\"" /[^"]*\/ "\"" ; bounded repetition of "ab" */
        gr_grammar *g = gr_new();
        int root = gr_nonterminal(g, "root");
        int q = gr_literal(g, "\"", 1), body = gr_regex(g, "[^\"]*", 5);
        int ab = gr_literal(g, "ab", 2);
        int rep = gr_repeat(g, ab, 1, 3);
        int r[4] = {q, body, q, rep};
        gr_rule(g, root, r, 4);
        gr_set_start(g, root);
        gr_compiled *c = compile(g, v);
        if (c) {
            CHECK(accepts(c, "\"\"ab"), "empty string body");
            CHECK(accepts(c, "\"x\xc3\xa9z\"ababab"), "utf-8 body, 3 ab");
            CHECK(!accepts(c, "\"a\"abababab"), "4 ab");
            CHECK(!accepts(c, "\"a\""), "0 ab");
            run_walks("string", c);
            gr_matcher *m = gr_matcher_new(c);
            gr_matcher_accept_bytes(m, (const uint8_t *)"\"z\"", 3);
            uint8_t buf[8];
            size_t nf = gr_matcher_forced(m, buf, sizeof buf);
            CHECK(nf == 2 && memcmp(buf, "ab", 2) == 0, "forced ab (%zu)", nf);
            gr_matcher_accept_bytes(m, (const uint8_t *)"ababab", 6);
            CHECK(gr_matcher_is_done(m), "done after 3 ab");
            uint32_t mask[(N_TOK + 31) / 32];
            CHECK(gr_matcher_mask(m, mask) == 1 && (mask[(N_TOK - 2) >> 5] >> ((N_TOK - 2) & 31) & 1), "only eos");
            CHECK(gr_matcher_accept(m, N_TOK - 2) == 0, "eos accepted");
            CHECK(gr_matcher_mask(m, mask) == 0, "nothing after eos");
            CHECK(gr_matcher_rollback(m, 1) == 0 && gr_matcher_mask(m, mask) == 1, "eos rolled back");
            gr_matcher_free(m);
        }
        gr_compiled_free(c);
        gr_free(g);
    }
    { /* strings that refuse one non-ASCII character, or every non-ASCII one (their interiors are not
       * text loops for every character, so subtrees with other characters must be walked), and
       * bounded ones (a chain of counting states, one per character left) */
        const char *bodies[] = {"[^\"\xe4\xb8\xad]*", "[!#-~]*", "(\xe4\xb8\xad|[a-z])*", "[^\"]{0,3}", "[^\"]{2,40}"};
        const char *yes[] = {"\"\xc3\xa9\xf0\x9f\x98\x80\"", "\"ab\"", "\"a\xe4\xb8\xad\"", "\"\xe4\xb8\xad\xc3\xa9\x61\"", "\"\xe4\xb8\xad\xe6\x96\x87\""};
        const char *no[] = {"\"\xe4\xb8\xad\"", "\"\xe4\xb8\xad\"", "\"\xc3\xa9\"", "\"\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\"", "\"\xe4\xb8\xad\""};
        for (int k = 0; k < 5; k++) {
            gr_grammar *g = gr_new();
            int root = gr_nonterminal(g, "root");
            int q = gr_literal(g, "\"", 1), body = gr_regex(g, bodies[k], strlen(bodies[k]));
            int r[3] = {q, body, q};
            gr_rule(g, root, r, 3);
            gr_set_start(g, root);
            gr_compiled *c = compile(g, v);
            if (c) {
                CHECK(accepts(c, yes[k]), "narrow string %d", k);
                CHECK(!accepts(c, no[k]), "narrow string %d refuses", k);
                run_walks(bodies[k], c);
            }
            gr_compiled_free(c);
            gr_free(g);
        }
    }
    { /* bounded strings (one lexer state per length left) and an open one, with skipped spaces:
       * "\"" [a-z ]{0,5} "\"" ";" "\"" [^"]* "\"" */
        gr_grammar *g = gr_new();
        int root = gr_nonterminal(g, "root");
        int semi = gr_literal(g, ";", 1);
        const char *ps = "\"[a-z ]{0,5}\"", *po = "\"[^\"]*\"";
        int shortb = gr_regex(g, ps, strlen(ps)), open = gr_regex(g, po, strlen(po));
        int r[3] = {shortb, semi, open};
        gr_rule(g, root, r, 3);
        gr_set_start(g, root);
        gr_set_skip(g, "[ ]+", 4);
        gr_compiled *c = compile(g, v);
        if (c) {
            CHECK(accepts(c, "\"ab ab\"; \"hi there \xc3\xa9\""), "bounded then open");
            CHECK(!accepts(c, "\"ab\"\";\"\""), "quote inside");
            CHECK(!accepts(c, "\"aaaaaa\";\"\""), "6 letters refused");
            CHECK(accepts(c, "\"aaaaa\";\"\""), "5 letters");
            run_walks("bounded", c);
            threads_agree(c, "\"aaaa\";\"abba\"");
        }
        gr_compiled_free(c);
        gr_free(g);
    }
    { /* hostile ambiguity: S -> X_i (300 of them), X_i -> S S | "a": answers stay bounded and the
       * refused work is reported, never silent */
        gr_grammar *g = gr_new();
        int S = gr_nonterminal(g, "S"), a = gr_literal(g, "a", 1);
        for (int i = 0; i < 300; i++) {
            int X = gr_nonterminal(g, NULL);
            int ss[2] = {S, S};
            gr_rule(g, S, &X, 1);
            gr_rule(g, X, ss, 2);
            gr_rule(g, X, &a, 1);
        }
        gr_set_start(g, S);
        gr_compiled *c = compile(g, v);
        gr_matcher *m = c ? gr_matcher_new(c) : NULL;
        uint32_t mask[(N_TOK + 31) / 32];
        int steps = 0;
        while (m && steps < 40 && !gr_matcher_error(m)[0]) {
            gr_matcher_mask(m, mask);
            if (gr_matcher_accept_bytes(m, (const uint8_t *)"a", 1)) break;
            steps++;
        }
        CHECK(m && strstr(gr_matcher_error(m), "ambiguous"), "hostile: error \"%s\" after %d steps",
              m ? gr_matcher_error(m) : "", steps);
        gr_matcher_free(m);
        gr_compiled_free(c);
        gr_free(g);
    }
    { /* the vocabulary's walk cache: walks of one grammar reused by another (same lexer automata up to
       * renaming: inside strings, numbers), masks equal to those of a vocabulary without the cache */
        gr_vocab *vc = make_vocab(), *vn = make_vocab();
        gr_vocab_set_walk_cache(vn, 0);
        static const char *const schemas[3][2] = {
            {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"},\"n\":{\"type\":\"number\"}},"
             "\"required\":[\"a\",\"n\"],\"additionalProperties\":false}",
             "{\"a\":\"x\xc3\xa9\\\"y z\",\"n\":-1.5e3}"},
            {"{\"type\":\"object\",\"properties\":{\"ab\":{\"type\":\"string\"},\"i\":{\"type\":\"integer\"}},"
             "\"additionalProperties\":{\"type\":\"string\"}}",
             "{\"ab\":\"ba\",\"zz\":\"q\xe4\xb8\xad\\\\n\",\"i\":12}"},
            {"{\"type\":\"array\",\"items\":{\"type\":[\"string\",\"number\"]}}", "[\"if\",12.5,\"\",-0]"},
        };
        size_t n0 = 0, n1 = 0;
        uint64_t h0 = 0, h1 = 0;
        for (int k = 0; k < 3; k++) {
            static uint32_t mc[49][(N_TOK + 31) / 32], mn[49][(N_TOK + 31) / 32];
            memset(mc, 0, sizeof mc);
            memset(mn, 0, sizeof mn);
            gr_vocab_walk_cache_stats(vc, &n0, &h0);
            int a = schema_masks(vc, schemas[k][0], schemas[k][1], mc);
            int b = schema_masks(vn, schemas[k][0], schemas[k][1], mn);
            gr_vocab_walk_cache_stats(vc, &n1, &h1);
            CHECK(a == 0 && b == 0, "schema %d: walks", k);
            for (size_t i = 0; i <= strlen(schemas[k][1]) && i < 48; i++)
                CHECK(!memcmp(mc[i], mn[i], sizeof mc[i]), "schema %d: mask after %zu bytes differs with the cache", k, i);
            if (k == 0) CHECK(n1 > 0, "schema 0: walks kept (%zu)", n1);
            else CHECK(h1 > h0, "schema %d: no walk reused (hits %llu -> %llu)", k, (unsigned long long)h0,
                       (unsigned long long)h1);
        }
        size_t nn = 1;
        gr_vocab_walk_cache_stats(vn, &nn, NULL);
        CHECK(nn == 0, "cache off: %zu walks kept", nn);
        /* random walks against the brute-force reference, on a vocabulary whose cache is warm */
        char err2[256];
        gr_grammar *g = js_compile(schemas[1][0], strlen(schemas[1][0]), NULL, err2, sizeof err2);
        gr_compiled *c = g ? compile(g, vc) : NULL;
        if (c) run_walks("schema 1, warm cache", c);
        gr_compiled_free(c);
        gr_free(g);
        gr_vocab_free(vc);
        gr_vocab_free(vn);
    }
    { /* compile errors */
        gr_grammar *g = gr_new();
        CHECK(!gr_compile(g, v, err, sizeof err) && err[0], "empty grammar: %s", err);
        int s = gr_nonterminal(g, "s");
        int a = gr_literal(g, "a", 1);
        int r[2] = {a, s};
        gr_rule(g, s, r, 2);
        CHECK(!gr_compile(g, v, err, sizeof err) && strstr(err, "start"), "no start: %s", err);
        gr_set_start(g, s);
        CHECK(!gr_compile(g, v, err, sizeof err) && strstr(err, "unproductive"), "unproductive: %s", err);
        CHECK(gr_regex(g, "(a", 2) < 0 && gr_error(g)[0], "bad regex: %s", gr_error(g));
        CHECK(!gr_compile(g, v, err, sizeof err) && err[0], "errored builder: %s", err);
        gr_free(g);
    }
    gr_vocab_free(v);
    wide_walks();
    TEST_DONE();
}
