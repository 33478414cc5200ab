/* The Earley parser over terminal ids: nullable rules, left and right recursion, ambiguity,
 * rollback by truncation, the allowed-terminal sets and the item cap on hostile grammars. */
#include <stdio.h>
#include <string.h>

#include "grammar/earley.h"
#include "grammar/grammar.h"
#include "test_util.h"

/* terminals are one-letter literals; sym('a') gives the symbol */
static int T[128];

static gr_grammar *letters(const char *set) {
    gr_grammar *g = gr_new();
    for (const char *c = set; *c; c++) T[(int)*c] = gr_literal(g, c, 1);
    return g;
}

static int R(gr_grammar *g, int lhs, const char *rhs_letters, int n_nt, const int *nts) {
    /* rhs: lowercase letters are terminals; digits 0..9 index nts[] */
    int rhs[32], n = 0;
    for (const char *c = rhs_letters; *c; c++) rhs[n++] = (*c >= '0' && *c <= '9') ? nts[*c - '0'] : T[(int)*c];
    (void)n_nt;
    return gr_rule(g, lhs, rhs, n);
}

/* feeds the letters; returns 1 if all scanned and (if need_end) the parse may end */
static int parse(const ey_grammar *eg, const char *s, int need_end) {
    ey_parser *p = ey_parser_new(eg);
    if (!p) return -1;
    int ok = 1;
    uint64_t bits[4];
    for (const char *c = s; *c && ok; c++) {
        memset(bits, 0, sizeof bits);
        int t = -1;
        for (int k = 0; k < ey_n_terminals(eg); k++)
            if (ey_terminal_symbol(eg, k) == T[(int)*c]) t = k;
        if (t < 0) {
            ok = 0;
            break;
        }
        bits[t >> 6] |= 1ULL << (t & 63);
        int allowed = (int)(ey_allowed(p)[t >> 6] >> (t & 63) & 1);
        int r = ey_scan(p, bits);
        if ((r == 0) != allowed) ok = -1; /* allowed set disagrees with the scan */
        if (r) ok = ok < 0 ? -1 : 0;
    }
    if (ok == 1 && need_end) ok = ey_can_end(p);
    ey_parser_free(p);
    return ok;
}

static ey_grammar *prep(gr_grammar *g) {
    char err[200];
    ey_grammar *eg = ey_grammar_new(g, NULL, err, sizeof err);
    CHECK(eg, "prepare: %s", err);
    return eg;
}

int main(void) {
    char err[200];
    { /* S -> a S b | empty (right-nested, nullable) */
        gr_grammar *g = letters("ab");
        int S = gr_nonterminal(g, "S");
        int nt[1] = {S};
        R(g, S, "a0b", 1, nt);
        R(g, S, "", 1, nt);
        gr_set_start(g, S);
        ey_grammar *eg = prep(g);
        CHECK(parse(eg, "", 1) == 1, "empty");
        CHECK(parse(eg, "ab", 1) == 1, "ab");
        CHECK(parse(eg, "aaabbb", 1) == 1, "aaabbb");
        CHECK(parse(eg, "aab", 1) == 0, "aab cannot end");
        CHECK(parse(eg, "aab", 0) == 1, "aab is a prefix");
        CHECK(parse(eg, "abb", 0) == 0, "abb");
        CHECK(parse(eg, "b", 0) == 0, "b");
        ey_grammar_free(eg);
        gr_free(g);
    }
    { /* E -> E + T | T ; T -> x | ( E )  (left recursion) */
        gr_grammar *g = letters("x+()");
        int E = gr_nonterminal(g, "E"), Tn = gr_nonterminal(g, "T");
        int nt[2] = {E, Tn};
        R(g, E, "0+1", 2, nt);
        R(g, E, "1", 2, nt);
        R(g, Tn, "x", 2, nt);
        R(g, Tn, "(0)", 2, nt);
        gr_set_start(g, E);
        ey_grammar *eg = prep(g);
        CHECK(parse(eg, "x+x+x", 1) == 1, "x+x+x");
        CHECK(parse(eg, "x+(x+x)+x", 1) == 1, "nested");
        CHECK(parse(eg, "x+", 1) == 0, "x+ cannot end");
        CHECK(parse(eg, "x+", 0) == 1, "x+ prefix");
        CHECK(parse(eg, "x++", 0) == 0, "x++");
        CHECK(parse(eg, "(x", 1) == 0, "(x");
        /* rollback: truncation restores the allowed set */
        ey_parser *p = ey_parser_new(eg);
        uint64_t bx = 0, bp = 0;
        for (int k = 0; k < ey_n_terminals(eg); k++) {
            if (ey_terminal_symbol(eg, k) == T['x']) bx = 1ULL << k;
            if (ey_terminal_symbol(eg, k) == T['+']) bp = 1ULL << k;
        }
        uint64_t a0 = ey_allowed(p)[0];
        CHECK(ey_scan(p, &bx) == 0, "x");
        uint64_t a1 = ey_allowed(p)[0];
        CHECK(ey_can_end(p), "x can end");
        CHECK(ey_scan(p, &bp) == 0, "+");
        CHECK(!ey_can_end(p), "x+ cannot end");
        CHECK(ey_scan(p, &bp) == -1, "++ refused");
        CHECK(ey_depth(p) == 3, "depth %d", ey_depth(p));
        ey_truncate(p, 2);
        CHECK(ey_allowed(p)[0] == a1 && ey_can_end(p), "rollback to after x");
        ey_truncate(p, 1);
        CHECK(ey_allowed(p)[0] == a0 && !ey_can_end(p), "rollback to start");
        CHECK(ey_scan(p, &bx) == 0 && ey_scan(p, &bp) == 0 && ey_scan(p, &bx) == 0 && ey_can_end(p), "again");
        ey_parser_free(p);
        ey_grammar_free(eg);
        gr_free(g);
    }
    { /* nullable chains: S -> A B c ; A -> a | empty ; B -> A A */
        gr_grammar *g = letters("ac");
        int S = gr_nonterminal(g, "S"), A = gr_nonterminal(g, "A"), B = gr_nonterminal(g, "B");
        int nt[3] = {S, A, B};
        R(g, S, "12c", 3, nt);
        R(g, A, "a", 3, nt);
        R(g, A, "", 3, nt);
        R(g, B, "11", 3, nt);
        gr_set_start(g, S);
        ey_grammar *eg = prep(g);
        CHECK(parse(eg, "c", 1) == 1, "c");
        CHECK(parse(eg, "ac", 1) == 1, "ac");
        CHECK(parse(eg, "aac", 1) == 1, "aac");
        CHECK(parse(eg, "aaac", 1) == 1, "aaac");
        CHECK(parse(eg, "aaaa", 0) == 0, "aaaa");
        CHECK(parse(eg, "aaa", 1) == 0, "aaa cannot end");
        ey_grammar_free(eg);
        gr_free(g);
    }
    { /* ambiguity: S -> S S | a, a long input stays polynomial (cubic) */
        gr_grammar *g = letters("a");
        int S = gr_nonterminal(g, "S");
        int nt[1] = {S};
        R(g, S, "00", 1, nt);
        R(g, S, "a", 1, nt);
        gr_set_start(g, S);
        ey_grammar *eg = prep(g);
        char buf[151];
        memset(buf, 'a', 150);
        buf[150] = 0;
        CHECK(parse(eg, buf, 1) == 1, "a^150");
        ey_grammar_free(eg);
        gr_free(g);
    }
    { /* right recursion: L -> a L | a */
        gr_grammar *g = letters("a");
        int L = gr_nonterminal(g, "L");
        int nt[1] = {L};
        R(g, L, "a0", 1, nt);
        R(g, L, "a", 1, nt);
        gr_set_start(g, L);
        ey_grammar *eg = prep(g);
        CHECK(parse(eg, "aaaaaaaaaa", 1) == 1, "a^10");
        CHECK(parse(eg, "", 1) == 0, "empty");
        ey_grammar_free(eg);
        gr_free(g);
    }
    { /* unproductive parts are dropped; unproductive start is an error */
        gr_grammar *g = letters("ab");
        int S = gr_nonterminal(g, "S"), U = gr_nonterminal(g, "U");
        int nt[2] = {S, U};
        R(g, S, "a", 2, nt);
        R(g, S, "b1", 2, nt); /* U never ends: "b" must not be allowed */
        R(g, U, "a1", 2, nt);
        gr_set_start(g, S);
        ey_grammar *eg = prep(g);
        CHECK(parse(eg, "b", 0) == 0, "b leads nowhere");
        CHECK(parse(eg, "a", 1) == 1, "a");
        ey_grammar_free(eg);
        gr_set_start(g, U);
        CHECK(ey_grammar_new(g, NULL, err, sizeof err) == NULL && strstr(err, "unproductive"), "unproductive: %s", err);
        gr_free(g);
        gr_grammar *h = gr_new();
        CHECK(ey_grammar_new(h, NULL, err, sizeof err) == NULL && strstr(err, "start"), "no start: %s", err);
        gr_free(h);
    }
    { /* hostile: S -> X_i (300 of them), X_i -> S S | a: the item cap answers, no blow-up */
        gr_grammar *g = letters("a");
        int S = gr_nonterminal(g, "S");
        for (int i = 0; i < 300; i++) {
            int X = gr_nonterminal(g, NULL);
            int nt[2] = {S, X};
            R(g, S, "1", 2, nt);
            R(g, X, "00", 2, nt);
            R(g, X, "a", 2, nt);
        }
        gr_set_start(g, S);
        ey_grammar *eg = prep(g);
        ey_parser *p = ey_parser_new(eg);
        uint64_t ba = 1;
        int r = 0, steps = 0;
        while (steps < 1000 && (r = ey_scan(p, &ba)) == 0) steps++;
        CHECK(r == -2 && strstr(ey_parser_error(p), "ambiguous"), "cap: r=%d after %d: %s", r, steps,
              ey_parser_error(p));
        CHECK(steps > 0, "the first sets fit (%d)", steps);
        ey_truncate(p, 1);
        CHECK(ey_scan(p, &ba) == 0 && ey_can_end(p), "still usable below the cap");
        ey_parser_free(p);
        ey_grammar_free(eg);
        gr_free(g);
    }
    TEST_DONE();
}
