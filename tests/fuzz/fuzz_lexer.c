/* libFuzzer: random patterns and inputs through the grammar lexer (src/grammar/lexer.h).
 * Layout of the fuzz input: byte 0 picks the number of terminals (1-3) and which are literals;
 * then for each terminal one length byte (0-63) and that many pattern bytes; the rest is the input
 * run through the DFA from several start sets. Checks the invariants a caller relies on: a bad
 * pattern is an error with a message, lx_check_pattern agrees with lx_new, interned start states,
 * DEAD absorbs, accepting sets only name allowed terminals, and a state that cannot continue goes
 * DEAD on any byte. Links pagoda_grammar. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/lexer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int n = 1 + data[0] % 3;
    uint8_t lit[3] = {(uint8_t)(data[0] >> 2 & 1), (uint8_t)(data[0] >> 3 & 1), (uint8_t)(data[0] >> 4 & 1)};
    const char *pats[3];
    size_t lens[3];
    size_t at = 1;
    for (int t = 0; t < n; t++) {
        size_t len = at < size ? data[at++] % 64 : 0;
        if (len > size - at) len = size - at;
        pats[t] = (const char *)data + at;
        lens[t] = len;
        at += len;
    }
    const uint8_t *in = data + at;
    size_t in_n = size - at;
    if (in_n > 512) in_n = 512; /* a miss costs O(NFA): keep each run short */

    char err[256];
    int all_ok = 1;
    for (int t = 0; t < n; t++) {
        if (lit[t]) continue;
        err[0] = 0;
        if (lx_check_pattern(pats[t], lens[t], err, sizeof err) != 0) {
            if (!err[0]) abort(); /* an error must say what is wrong */
            all_ok = 0;
        }
    }
    lx_lexer *lx = lx_new(n, pats, lens, lit, err, sizeof err);
    if ((lx != NULL) != all_ok) abort(); /* lx_new and lx_check_pattern agree */
    if (!lx) {
        if (!err[0]) abort();
        return 0;
    }
    if (lx_n_terminals(lx) != n) abort();
    for (uint64_t allowed = 1; allowed < (1u << n); allowed++) {
        lx_state s = lx_start(lx, &allowed);
        if (lx_start(lx, &allowed) != s) abort();
        for (size_t i = 0; i <= in_n; i++) {
            const uint64_t *acc = lx_accepting(lx, s);
            if (acc && (acc[0] & ~allowed)) abort();
            if (s == LX_DEAD && (acc || lx_can_continue(lx, s))) abort();
            if (i == in_n) break;
            lx_state nx = lx_next(lx, s, in[i]);
            if (!lx_can_continue(lx, s) && nx != LX_DEAD) abort();
            if (s == LX_DEAD && nx != LX_DEAD) abort();
            s = nx;
        }
    }
    lx_free(lx);
    return 0;
}
