/* The Earley parser of the grammar engine (internal to src/grammar): a grammar (grammar.h)
 * prepared once (terminal numbering, productive and nullable symbols, dotted rules), and parsers
 * holding a stack of Earley sets, one per scanned lexeme, so rolling back is a truncation.
 *
 * Terminals are numbered 0..n_terminals-1 in symbol order (the lexer's terminal numbering);
 * bitsets have ey_words() words, one spare bit past the last terminal (matcher.c uses it for the
 * skip pattern). Nullable symbols are handled as Aycock and Horspool do (an item before a nullable
 * symbol is also advanced past it), so completion never looks at the set being built.
 *
 * Bounded: a set with more than EY_MAX_ITEMS items, or whose closure tries more than EY_MAX_WORK
 * insertions (hostile ambiguous grammars), fails the scan with -2 and a message. */
#ifndef PG_GRAMMAR_EARLEY_H
#define PG_GRAMMAR_EARLEY_H

#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"

#define EY_MAX_ITEMS (1 << 17)
#define EY_MAX_WORK (1 << 21) /* item insertions tried (duplicates included) for one set */

typedef struct ey_grammar ey_grammar;
/* NULL with a message when the grammar has no start, an unproductive start, or no memory.
 * empty_terms[sym] (per grammar symbol, may be NULL): terminals whose language holds the empty
 * text; they are nullable (an item before one is also advanced past it), as a lexeme is never
 * empty. */
ey_grammar *ey_grammar_new(const gr_grammar *g, const uint8_t *empty_terms, char *err, size_t cap);
void ey_grammar_free(ey_grammar *eg);
int ey_n_terminals(const ey_grammar *eg);
int ey_terminal_symbol(const ey_grammar *eg, int t); /* the grammar symbol of terminal t */
int ey_words(const ey_grammar *eg);                  /* words of a terminal bitset */

typedef struct ey_parser ey_parser;
ey_parser *ey_parser_new(const ey_grammar *eg);
void ey_parser_free(ey_parser *p);
/* Number of sets (1 after ey_parser_new). */
int ey_depth(const ey_parser *p);
/* Drops sets so that depth sets remain (1 <= depth <= ey_depth). */
void ey_truncate(ey_parser *p, int depth);
/* Scans one lexeme that may be any terminal in terms (a bitset): pushes a new set. 0 ok; -1 if no
 * item can take any of them (parser unchanged); -2 on the item limit or out of memory (parser
 * unchanged, ey_parser_error says why). */
int ey_scan(ey_parser *p, const uint64_t *terms);
/* Terminals the top set may scan next. */
const uint64_t *ey_allowed(const ey_parser *p);
/* 1 if the lexemes so far form a sentence. */
int ey_can_end(const ey_parser *p);
const char *ey_parser_error(const ey_parser *p);
/* Item insertions tried since the parser was made (a measure of work, for callers' budgets). */
uint64_t ey_work(const ey_parser *p);

#endif
