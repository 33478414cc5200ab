/* The grammar builder: interning, errors (first one kept), limits, the languages of gr_repeat /
 * gr_list / gr_choice (checked by running the Earley parser over terminal sequences, including
 * bounds in the thousands built from O(log n) symbols) and the dump. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/earley.h"
#include "grammar/grammar.h"
#include "test_util.h"

/* counts k in [0, kmax] for which a^k is a sentence, written into ok[]; start = sym wrapped */
static void lengths(gr_grammar *g, int start_nt, int a, int kmax, unsigned char *ok) {
    char err[200];
    gr_set_start(g, start_nt);
    ey_grammar *eg = ey_grammar_new(g, NULL, err, sizeof err);
    CHECK(eg, "prepare: %s", err);
    memset(ok, 0, (size_t)kmax + 1);
    if (!eg) return;
    int t = -1;
    for (int k = 0; k < ey_n_terminals(eg); k++)
        if (ey_terminal_symbol(eg, k) == a) t = k;
    uint64_t bits[2] = {0, 0};
    bits[t >> 6] |= 1ULL << (t & 63);
    ey_parser *p = ey_parser_new(eg);
    for (int k = 0; k <= kmax; k++) {
        ok[k] = (unsigned char)ey_can_end(p);
        if (k < kmax && ey_scan(p, bits) != 0) break;
    }
    ey_parser_free(p);
    ey_grammar_free(eg);
}

/* a list: item = "a", sep = "," ; returns 1 if "a,a,...,a" (k items) is a sentence */
static int list_ok(gr_grammar *g, int start_nt, int item, int sep, int k) {
    char err[200];
    gr_set_start(g, start_nt);
    ey_grammar *eg = ey_grammar_new(g, NULL, err, sizeof err);
    if (!eg) return -1;
    uint64_t bi = 0, bs = 0;
    for (int x = 0; x < ey_n_terminals(eg); x++) {
        if (ey_terminal_symbol(eg, x) == item) bi = 1ULL << x;
        if (ey_terminal_symbol(eg, x) == sep) bs = 1ULL << x;
    }
    ey_parser *p = ey_parser_new(eg);
    int ok = 1;
    for (int i = 0; i < k && ok; i++) {
        if (i && ey_scan(p, &bs)) ok = 0;
        if (ok && ey_scan(p, &bi)) ok = 0;
    }
    ok = ok && ey_can_end(p);
    ey_parser_free(p);
    ey_grammar_free(eg);
    return ok;
}

int main(void) {
    { /* interning and kinds */
        gr_grammar *g = gr_new();
        int a = gr_literal(g, "a", 1), a2 = gr_literal(g, "a", 1), ra = gr_regex(g, "a", 1), ra2 = gr_regex(g, "a", 1);
        int n = gr_nonterminal(g, "n"), n2 = gr_nonterminal(g, "n");
        CHECK(a >= 0 && a == a2, "literal interned");
        CHECK(ra >= 0 && ra == ra2 && ra != a, "regex interned apart from the literal");
        CHECK(n != n2, "nonterminals are never merged");
        CHECK(gr_is_terminal(g, a) && gr_is_terminal(g, ra) && !gr_is_terminal(g, n) && !gr_is_terminal(g, 99),
              "is_terminal");
        CHECK(gr_n_symbols(g) == 4, "n_symbols %d", gr_n_symbols(g));
        CHECK(gr_error(g)[0] == 0, "no error yet");
        gr_free(g);
    }
    { /* errors: clear, and the first is kept */
        gr_grammar *g = gr_new();
        int a = gr_literal(g, "a", 1);
        CHECK(gr_rule(g, a, NULL, 0) == -1 && strstr(gr_error(g), "not a nonterminal"), "rule on terminal: %s",
              gr_error(g));
        CHECK(gr_nonterminal(g, "x") == -1, "sticky error");
        gr_free(g);
        g = gr_new();
        CHECK(gr_regex(g, "(a)\\1", 5) == -1 && strstr(gr_error(g), "regular expression"), "backreference: %s",
              gr_error(g));
        gr_free(g);
        g = gr_new();
        CHECK(gr_literal(g, "", 0) == -1 && gr_error(g)[0], "empty literal");
        gr_free(g);
        g = gr_new();
        int s = gr_nonterminal(g, "s");
        CHECK(gr_repeat(g, s, 3, 2) == -1 && strstr(gr_error(g), "bounds"), "bad bounds: %s", gr_error(g));
        gr_free(g);
        g = gr_new();
        CHECK(gr_set_skip(g, "[", 1) == -1 && strstr(gr_error(g), "skip"), "bad skip: %s", gr_error(g));
        gr_free(g);
    }
    { /* limits */
        gr_grammar *g = gr_new();
        int ok = 1;
        for (int i = 0; i < GR_MAX_SYMBOLS && ok; i++) ok = gr_nonterminal(g, NULL) >= 0;
        CHECK(ok, "GR_MAX_SYMBOLS symbols fit");
        CHECK(gr_nonterminal(g, NULL) == -1 && strstr(gr_error(g), "symbols"), "one more: %s", gr_error(g));
        gr_free(g);
        g = gr_new();
        int s = gr_nonterminal(g, "s"), a = gr_literal(g, "a", 1);
        int *big = malloc(((size_t)GR_MAX_RHS + 1) * sizeof *big);
        for (int i = 0; i <= GR_MAX_RHS; i++) big[i] = a;
        CHECK(gr_rule(g, s, big, GR_MAX_RHS + 1) == -1 && strstr(gr_error(g), "right-hand-side"), "rhs: %s",
              gr_error(g));
        free(big);
        gr_free(g);
    }
    { /* repetition languages */
        static unsigned char ok[1105];
        struct {
            int min, max;
        } cases[] = {{0, -1}, {1, -1}, {3, -1}, {0, 1}, {2, 2}, {3, 1000}, {0, 7}, {5, 6}, {1000, 1000}, {0, 0}};
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            gr_grammar *g = gr_new();
            int a = gr_literal(g, "a", 1);
            int r = gr_repeat(g, a, cases[c].min, cases[c].max);
            CHECK(r >= 0, "repeat {%d,%d}: %s", cases[c].min, cases[c].max, gr_error(g));
            CHECK(gr_n_symbols(g) < 64, "repeat {%d,%d}: %d symbols", cases[c].min, cases[c].max, gr_n_symbols(g));
            lengths(g, r, a, 1100, ok);
            int bad = -1;
            for (int k = 0; k <= 1100 && bad < 0; k++) {
                int want = k >= cases[c].min && (cases[c].max < 0 || k <= cases[c].max);
                if (ok[k] != want) bad = k;
            }
            CHECK(bad < 0, "repeat {%d,%d}: wrong at count %d", cases[c].min, cases[c].max, bad);
            gr_free(g);
        }
        gr_grammar *g = gr_new();
        int a = gr_literal(g, "a", 1);
        CHECK(gr_repeat(g, a, 1000000, 2000000000) >= 0 && gr_n_symbols(g) < 200, "huge bounds: %d symbols",
              gr_n_symbols(g));
        gr_free(g);
    }
    { /* lists and choices */
        struct {
            int min, max;
        } cases[] = {{0, -1}, {1, -1}, {0, 3}, {2, 4}, {1, 1}, {0, 0}};
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            for (int k = 0; k <= 6; k++) {
                gr_grammar *g = gr_new();
                int a = gr_literal(g, "a", 1), comma = gr_literal(g, ",", 1);
                int l = gr_list(g, a, comma, cases[c].min, cases[c].max);
                int want = k >= cases[c].min && (cases[c].max < 0 || k <= cases[c].max);
                CHECK(list_ok(g, l, a, comma, k) == want, "list {%d,%d} with %d items", cases[c].min, cases[c].max, k);
                gr_free(g);
            }
        }
        gr_grammar *g = gr_new();
        int x = gr_literal(g, "x", 1), y = gr_literal(g, "y", 1);
        int syms[2] = {x, y};
        int ch = gr_choice(g, syms, 2);
        CHECK(list_ok(g, ch, x, y, 1) == 1, "choice x");
        CHECK(list_ok(g, ch, y, x, 1) == 1, "choice y");
        gr_free(g);
    }
    { /* dump */
        gr_grammar *g = gr_new();
        int root = gr_nonterminal(g, "root"), item = gr_nonterminal(g, NULL);
        int q = gr_literal(g, "say \"hi\"\n", 9), re = gr_regex(g, "[0-9]+", 6);
        int r[2] = {q, item};
        gr_rule(g, root, r, 2);
        gr_rule(g, item, &re, 1);
        gr_rule(g, item, NULL, 0);
        gr_set_start(g, root);
        gr_set_skip(g, "[ ]*", 4);
        char *d = gr_dump(g);
        CHECK(d && strstr(d, "root ::= \"say \\\"hi\\\"\\n\" _1\n"), "dump root: %s", d ? d : "(null)");
        CHECK(d && strstr(d, "_1 ::= /[0-9]+/ | \"\"\n"), "dump item: %s", d ? d : "(null)");
        CHECK(d && strstr(d, "%skip /[ ]*/"), "dump skip: %s", d ? d : "(null)");
        free(d);
        gr_free(g);
    }
    TEST_DONE();
}
