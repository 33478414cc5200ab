/* libFuzzer: arbitrary bytes as a JSON Schema (js_compile must answer with a grammar or a
 * "pointer: problem" error, never crash or hang), in compact and flexible whitespace modes; a
 * grammar is compiled for a small vocabulary and driven a few steps (masks, accepting the first
 * allowed token, rollback, forced bytes). Links pagoda_grammar. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "grammar/json_schema.h"
#include "grammar/matcher.h"

static gr_vocab *g_vocab;

static gr_vocab *vocab(void) {
    static const char *toks[] = {"{", "}", "[", "]", ",", ":", "\"", "\"a\"", "a", "1", "0", "-", ".", "e", "true",
                                 "false", "null", " ", "\\", "u", "\xc3\xa9", "{\"", "\":", "\"}", ""};
    enum { N = sizeof toks / sizeof *toks };
    const uint8_t *bytes[N];
    uint32_t lens[N];
    uint8_t special[N] = {0};
    for (int i = 0; i < N; i++) {
        bytes[i] = (const uint8_t *)toks[i];
        lens[i] = (uint32_t)strlen(toks[i]);
    }
    special[N - 1] = 1;
    int32_t eos = N - 1;
    return gr_vocab_new(N, bytes, lens, special, &eos, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192) return 0;
    if (!g_vocab) g_vocab = vocab();
    js_options o;
    js_options_default(&o);
    o.whitespace_flexible = size & 1;
    o.strict = (size >> 1) & 1;
    char err[256];
    gr_grammar *g = js_compile((const char *)data, size, &o, err, sizeof err);
    if (!g) {
        if (!err[0] || !strchr(err, ':')) __builtin_trap(); /* errors name the pointer */
        return 0;
    }
    gr_compiled *c = gr_compile(g, g_vocab, err, sizeof err);
    gr_free(g);
    if (!c) return 0;
    gr_matcher *m = gr_matcher_new(c);
    uint32_t mask[1];
    int n_acc = 0;
    for (int step = 0; m && step < 12; step++) {
        if (gr_matcher_mask(m, mask) == 0) break;
        int32_t t = 0;
        while (t < gr_vocab_size(g_vocab) && !(mask[0] >> t & 1)) t++;
        if (t == gr_vocab_size(g_vocab) - 1) break; /* only eos */
        if (gr_matcher_accept(m, t) != 0) __builtin_trap(); /* the mask allowed it */
        n_acc++;
    }
    if (m && n_acc) gr_matcher_rollback(m, 1);
    uint8_t buf[32];
    if (m) gr_matcher_forced(m, buf, sizeof buf);
    gr_matcher_free(m);
    gr_compiled_free(c);
    return 0;
}
