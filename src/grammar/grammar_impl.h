/* The builder's representation, shared inside src/grammar (earley.c, matcher.c read it; nothing
 * outside the module includes this header). */
#ifndef PG_GRAMMAR_GRAMMAR_IMPL_H
#define PG_GRAMMAR_GRAMMAR_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"

enum { GR_SYM_NT = 0, GR_SYM_LITERAL = 1, GR_SYM_REGEX = 2 };

typedef struct {
    uint8_t kind;  /* GR_SYM_* */
    char *text;    /* literal bytes / pattern / nonterminal name (may be NULL for a nameless one) */
    size_t len;
    struct lx_pattern *re; /* GR_SYM_REGEX: the pattern compiled when it was checked (owned) */
    uint64_t hash;         /* terminals: their interning hash */
} gr_symbol;

struct gr_grammar {
    gr_symbol *syms;
    int n_syms, cap_syms;
    /* rules: lhs[r], rhs[rhs_off[r] .. rhs_off[r] + rhs_len[r]) */
    int *lhs, *rhs_off, *rhs_len;
    int n_rules, cap_rules;
    int *rhs;
    int n_rhs, cap_rhs;
    int start; /* -1: unset */
    char *skip;
    size_t skip_len;
    int has_skip;
    struct lx_pattern *skip_re; /* the skip pattern compiled (owned) */
    /* interning of literals and patterns: open addressing over symbol ids (+1, 0 = empty) */
    int *hash;
    int hash_cap;
    char err[256];
};

#endif
