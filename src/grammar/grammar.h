/* Grammars for constrained decoding: a context-free grammar whose terminals are lexemes (an
 * exact string or a regular expression), built through this API by the front ends (JSON Schema,
 * regular expression, choice list, GBNF) and compiled by matcher.h for one tokenizer.
 *
 * Symbols are ints: terminals and nonterminals share one id space (gr_is_terminal tells them
 * apart). Text is UTF-8; a regular expression is the ECMAScript subset JSON Schema `pattern` uses
 * (see regex.h), always matched against a whole lexeme. Between two lexemes the grammar's skip
 * pattern (if any, e.g. JSON whitespace) may appear and is not seen by the parser.
 *
 * Limits keep hostile input bounded: every builder call fails cleanly (returns -1, gr_error()
 * says why) once the grammar passes GR_MAX_SYMBOLS symbols or GR_MAX_RHS total right-hand-side
 * entries. Layer: src/grammar depends on src/core only. */
#ifndef PG_GRAMMAR_GRAMMAR_H
#define PG_GRAMMAR_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#define GR_MAX_SYMBOLS (1 << 20)
#define GR_MAX_RHS (1 << 22)

typedef struct gr_grammar gr_grammar;

gr_grammar *gr_new(void); /* NULL on out of memory */
void gr_free(gr_grammar *g); /* NULL is a no-op */
const char *gr_error(const gr_grammar *g); /* the first error ("" if none) */

/* A new nonterminal (name for messages and dumps; may be NULL). -1 on error. */
int gr_nonterminal(gr_grammar *g, const char *name);
/* A terminal matching exactly s[0..n). The same string twice gives the same symbol. */
int gr_literal(gr_grammar *g, const char *s, size_t n);
/* A terminal matching the regular expression (whole-lexeme match). -1 with gr_error() naming the
 * problem when the pattern is malformed or uses a feature that cannot be honoured (backreferences,
 * lookaround). The same pattern twice gives the same symbol. */
int gr_regex(gr_grammar *g, const char *pattern, size_t n);
/* Adds the alternative lhs -> rhs[0] rhs[1] ... rhs[n-1] (n = 0: empty). 0 ok, -1 error. */
int gr_rule(gr_grammar *g, int lhs, const int *rhs, int n);
int gr_set_start(gr_grammar *g, int nonterminal);
int gr_start(const gr_grammar *g); /* -1: unset */
/* Text allowed (and ignored) between any two lexemes, as a regular expression; NULL: none. */
int gr_set_skip(gr_grammar *g, const char *pattern, size_t n);

/* Conveniences built from the calls above (each returns a new nonterminal, -1 on error):
 * sym repeated min..max times (max < 0: unbounded), and the same with sep between items. */
int gr_repeat(gr_grammar *g, int sym, int min, int max);
int gr_list(gr_grammar *g, int item, int sep, int min, int max);
/* one of syms[0..n) */
int gr_choice(gr_grammar *g, const int *syms, int n);
/* The start symbol's sentences wrapped: item = prefix start suffix (NULL or "": no literal),
 * repeated min..max times with the literal sep between (min = max = 0: once; max < 0:
 * unbounded); the result becomes the start symbol. 0 ok, -1 error (gr_error). */
int gr_wrap(gr_grammar *g, const char *prefix, const char *suffix, const char *sep, int min, int max);

int gr_is_terminal(const gr_grammar *g, int sym);
int gr_n_symbols(const gr_grammar *g);

/* A readable dump (GBNF-like) into a malloc'd string, for tests and `pagoda grammar --dump`. */
char *gr_dump(const gr_grammar *g);

#endif
