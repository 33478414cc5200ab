/* Internal to the grammar module: one regular expression (the lexer.h subset of ECMAScript) parsed
 * and compiled into a byte-level Thompson NFA shared by all terminals of a lexer. Nodes are appended
 * to one array; a terminal's pattern ends at a MATCH node carrying its index. Code point classes
 * become UTF-8 byte sequences (surrogates and invalid UTF-8 never match). */
#ifndef PG_GRAMMAR_REGEX_H
#define PG_GRAMMAR_REGEX_H

#include <stddef.h>
#include <stdint.h>

enum {
    RX_BYTE,  /* one byte in [lo, hi], then out */
    RX_SPLIT, /* epsilon to out and out2 */
    RX_EPS,   /* epsilon to out */
    RX_BOL,   /* epsilon to out, only before the first byte of the lexeme */
    RX_EOL,   /* epsilon to out, only after the last byte (no byte may follow) */
    RX_MATCH, /* the terminal out matches here */
    RX_FAIL,  /* matches nothing (an empty class) */
};

typedef struct {
    uint8_t kind, lo, hi, pad;
    uint32_t out, out2;
} rx_node;

typedef struct {
    rx_node *v;
    uint32_t n, cap;
    uint32_t limit; /* most nodes in all (LX_MAX_NFA_STATES) */
} rx_nfa;

#define RX_NONE UINT32_MAX

/* Appends the NFA of one pattern (or, when literal, of the exact bytes) ending in MATCH(term);
 * *start is its entry node. 0 ok; -1 with "offset N: problem" (or the size limit) in err. */
int rx_compile(rx_nfa *nfa, const char *pat, size_t n, int literal, uint32_t term, uint32_t *start, char *err,
               size_t cap);
/* rx_compile's verdict on one pattern alone (same errors, the size limit included), without
 * building the NFA. */
int rx_check(const char *pat, size_t n, char *err, size_t cap);
/* Appends a copy of src (one pattern compiled alone by rx_compile into an empty NFA, entry
 * src_start), its nodes renumbered and its MATCH nodes naming term: the same nodes rx_compile would
 * have appended for that pattern. 0 ok; -1 with rx_compile's message when dst's limit is passed
 * (or out of memory). */
int rx_append(rx_nfa *dst, const rx_nfa *src, uint32_t src_start, uint32_t term, uint32_t *start, char *err,
              size_t cap);
void rx_nfa_free(rx_nfa *nfa);

#endif
