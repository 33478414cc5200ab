/* GBNF (llama.cpp's grammar format) compiled through the builder (grammar.h):
 *   name ::= alternatives        one rule per line (a line ending inside ( ) or before a '|'
 *                                continues it); `root` is the start; a name may be defined twice
 *                                (its alternatives add up)
 *   "literal"  [class] [^class]  escapes \n \r \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH
 *   .  ( )  |  * + ?  {m} {m,} {m,n}  # comments
 * GBNF is a grammar over characters, so each character becomes one lexeme: a literal is a
 * sequence of one-character literal terminals and a class (or `.`) one one-character regular
 * expression; with one-character lexemes the matcher's maximal-munch lexing is exact, at the price
 * of one parser step per character (a JSON-Schema-made grammar with whole-string lexemes is much
 * cheaper per mask). */
#ifndef PG_GRAMMAR_GBNF_H
#define PG_GRAMMAR_GBNF_H

#include <stddef.h>

#include "grammar/grammar.h"

#define GBNF_MAX_NESTING 200  /* ( ) depth */
#define GBNF_MAX_REPEAT 100000 /* largest m or n in {m,n} */

/* NULL with "line:col: problem" in err when the text is malformed, refers to an undefined rule,
 * has no `root`, or passes the builder's limits. */
gr_grammar *gbnf_parse(const char *text, size_t n, char *err, size_t cap);

#endif
