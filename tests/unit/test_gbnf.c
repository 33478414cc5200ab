/* GBNF front end: llama.cpp-style grammars (JSON, arithmetic, a choice list) compiled and run
 * through the matcher on a byte-level vocabulary plus multi-character tokens (texts accepted and
 * refused; at every prefix of a valid text the mask equals accept-then-rollback for every token);
 * malformed grammars give errors naming line:col. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gbnf.h"
#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "test_util.h"

static const char k_json[] =
    "# JSON, in the style of llama.cpp's grammars/json.gbnf\n"
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) # escapes\n"
    "  )* \"\\\"\" ws\n"
    "\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "\n"
    "# optional space\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

static const char k_arith[] = "root ::= expr\n"
                              "expr ::= term ((\"+\" | \"-\") term)*\n"
                              "term ::= factor ((\"*\" | \"/\") factor)*\n"
                              "factor ::= number | \"(\" expr \")\"\n"
                              "number ::= [0-9]+\n";

static const char k_choice[] = "root ::= (\"yes\" | \"no\" | \"maybe\" | \"n\\u00e9\") \".\"?\n";

static const char *k_multi[] = {"{\"", "\":", ", ", "true", "null", "12", "\"a\"", "]}", "e+", "yes", "no.", "(1", "+2)", "\xc3\xa9", "\\u00"};
#define N_MULTI ((int)(sizeof k_multi / sizeof *k_multi))
#define N_TOK (256 + N_MULTI + 1)

static gr_vocab *make_vocab(void) {
    static uint8_t single[256];
    const uint8_t *bytes[N_TOK];
    uint32_t lens[N_TOK];
    uint8_t special[N_TOK] = {0};
    for (int i = 0; i < 256; i++) {
        single[i] = (uint8_t)i;
        bytes[i] = &single[i];
        lens[i] = 1;
    }
    for (int i = 0; i < N_MULTI; i++) {
        bytes[256 + i] = (const uint8_t *)k_multi[i];
        lens[256 + i] = (uint32_t)strlen(k_multi[i]);
    }
    bytes[N_TOK - 1] = (const uint8_t *)"";
    lens[N_TOK - 1] = 0;
    special[N_TOK - 1] = 1;
    int32_t eos = N_TOK - 1;
    return gr_vocab_new(N_TOK, bytes, lens, special, &eos, 1);
}

static gr_compiled *compile_gbnf(const char *text, const gr_vocab *v) {
    char err[256];
    gr_grammar *g = gbnf_parse(text, strlen(text), err, sizeof err);
    CHECK(g, "gbnf: %s", err);
    if (!g) return NULL;
    gr_compiled *c = gr_compile(g, v, err, sizeof err);
    CHECK(c, "compile: %s", err);
    gr_free(g);
    return c;
}

/* accepts the whole text; with check_masks, compares the mask with brute force at each byte */
static int run(const gr_compiled *c, const char *text, int check_masks) {
    gr_matcher *m = gr_matcher_new(c);
    uint32_t mask[(N_TOK + 31) / 32];
    size_t n = strlen(text);
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        if (check_masks) {
            gr_matcher_mask(m, mask);
            for (int t = 0; t < N_TOK; t++) {
                int b;
                if (t == N_TOK - 1) {
                    b = gr_matcher_can_end(m);
                } else {
                    b = gr_matcher_accept(m, t) == 0;
                    if (b) gr_matcher_rollback(m, 1);
                }
                int got = (int)(mask[t >> 5] >> (t & 31) & 1);
                CHECK(got == b, "\"%s\" at %zu: token %d mask %d brute %d", text, i, t, got, b);
            }
        }
        ok = gr_matcher_accept_bytes(m, (const uint8_t *)text + i, 1) == 0;
    }
    ok = ok && gr_matcher_can_end(m);
    gr_matcher_free(m);
    return ok;
}

static void bad(const char *text, const char *where, const char *what) {
    char err[256];
    gr_grammar *g = gbnf_parse(text, strlen(text), err, sizeof err);
    CHECK(!g, "accepted: %s", text);
    gr_free(g);
    CHECK(strncmp(err, where, strlen(where)) == 0 && strstr(err, what), "error for %s: \"%s\" (want %s %s)", text,
          err, where, what);
}

int main(void) {
    gr_vocab *v = make_vocab();
    CHECK(v, "vocab");
    gr_compiled *c = compile_gbnf(k_json, v);
    if (c) {
        CHECK(run(c, "{\"a\": [1, 2.5, \"x\\n\"], \"b\": true}", 1), "json object");
        CHECK(run(c, "{}", 0), "{}");
        CHECK(run(c, "{\"k\":{\"n\":null,\"e\":-0.5e+3,\"u\":\"\\u00e9\xc3\xa9\"}}", 1), "nested");
        CHECK(!run(c, "{\"a\" 1}", 0), "missing colon");
        CHECK(!run(c, "{\"a\":01}", 0), "leading zero");
        CHECK(!run(c, "[1]", 0), "root is an object");
        CHECK(!run(c, "{\"a\":\"\x01\"}", 0), "control char in string");
        CHECK(!run(c, "{\"a\":tru}", 0), "tru");
    }
    gr_compiled_free(c);
    c = compile_gbnf(k_arith, v);
    if (c) {
        CHECK(run(c, "(1+2)*34/(5-6)", 1), "arith");
        CHECK(!run(c, "1+", 0), "1+");
        CHECK(!run(c, "(1", 0), "(1");
        CHECK(!run(c, "1++2", 0), "1++2");
    }
    gr_compiled_free(c);
    c = compile_gbnf(k_choice, v);
    if (c) {
        CHECK(run(c, "yes", 1) && run(c, "no.", 1) && run(c, "maybe", 0) && run(c, "n\xc3\xa9", 1), "choices");
        CHECK(!run(c, "ye", 0) && !run(c, "nope", 0), "not choices");
        gr_matcher *m = gr_matcher_new(c);
        gr_matcher_accept_bytes(m, (const uint8_t *)"m", 1);
        uint8_t buf[8];
        CHECK(gr_matcher_forced(m, buf, sizeof buf) == 4 && memcmp(buf, "aybe", 4) == 0, "forced aybe");
        gr_matcher_free(m);
    }
    gr_compiled_free(c);
    /* repetition forms and comments */
    c = compile_gbnf("root ::= \"ab\"{2} [x-z]{1,3} \"-\"* (\"q\" | ) # end\n", v);
    if (c) {
        CHECK(run(c, "ababx", 1) && run(c, "ababzzz--q", 1), "repetitions");
        CHECK(!run(c, "abx", 0) && !run(c, "ababxxxx", 0), "repetition bounds");
    }
    gr_compiled_free(c);
    /* errors name line:col */
    bad("root ::= foo\n", "1:10:", "undefined rule 'foo'");
    bad("root := \"a\"\n", "1:6:", "::=");
    bad("root ::= \"abc\n", "1:10:", "unterminated");
    bad("root ::= [ab\n", "1:10:", "unterminated character class");
    bad("x ::= \"a\"\n", "2:1:", "no 'root'");
    bad("root ::= (\"a\"\n", "2:1:", "expected ')'");
    bad("root ::= \"a\"{3,1}\n", "1:13:", "max below min");
    bad("root ::= \"\\q\"\n", "1:11:", "unknown escape");
    bad("root ::= [z-a]\n", "1:13:", "out of order");
    bad("root ::= \"a\" ** \n", "1:15:", "two repetition");
    bad("\n\nroot ::= \"a\" )\n", "3:14:", "unexpected ')'");
    {
        char deep[1000];
        size_t k = 0;
        k += (size_t)snprintf(deep, sizeof deep, "root ::= ");
        for (int i = 0; i < 300; i++) deep[k++] = '(';
        deep[k] = 0;
        bad(deep, "1:", "nested deeper");
    }
    {
        char err[256];
        gr_grammar *g = gbnf_parse("root ::= x\nx ::= x \"a\"\n", 23, err, sizeof err);
        CHECK(g, "parses: %s", err);
        CHECK(!gr_compile(g, v, err, sizeof err) && strstr(err, "unproductive"), "unproductive: %s", err);
        gr_free(g);
    }
    gr_vocab_free(v);
    TEST_DONE();
}
