/* JSON Schema front end of the grammar engine: a schema (JSON text) compiled into a grammar
 * (grammar.h) whose sentences are the JSON instances the schema accepts, serialized as the
 * options (and the paragraph below) say. A keyword that cannot be honoured exactly is a compile error naming it (and
 * its JSON pointer), never silently ignored. Bounded: deep nesting, huge enums, $ref cycles and
 * hostile patterns give clean errors within the builder's limits.
 *
 * The sentences are the instances as a serializer writes them, so that sampling cannot run on
 * where no instance needs it: numbers with at most 20 integer digits (more where a bound needs
 * them), 20 fraction digits and 3 exponent digits, a zero fraction only as ".0"; each named
 * property of an object at most once (up to 8 names per object; beyond that, repeats bounded);
 * in flexible mode, at most one line break and 128 blanks on each side between two tokens. */
#ifndef PG_GRAMMAR_JSON_SCHEMA_H
#define PG_GRAMMAR_JSON_SCHEMA_H

#include <stddef.h>

#include "grammar/grammar.h"

typedef struct {
    int whitespace_flexible; /* 0: compact JSON (",", ":" separators, no whitespace anywhere
                                outside strings); 1: JSON whitespace allowed between tokens
                                (at most one line break and 128 blanks each side) */
    int strict;              /* 1: OpenAI strict mode: objects that list properties and have no
                                additionalProperties / patternProperties allow no other
                                properties but unlisted required names (0: JSON Schema's rule,
                                they do) */
    int integer_fraction;    /* 1: an integer may be written "7.0" (JSON Schema draft 6+ counts
                                it an integer); 0 (default): integers as clients expect them,
                                digits only, so a Python or JS client gets an int */
} js_options;
void js_options_default(js_options *o);

/* Adds the schema's instances to g as a new nonterminal (returned; -1 with "pointer: problem" in
 * err). Neither the start symbol nor the skip pattern is set, so callers can embed it (a tool
 * call's arguments inside a wrapper). */
int js_add(gr_grammar *g, const char *schema, size_t n, const js_options *o, char *err, size_t cap);

/* A whole grammar: start = the schema's instances, skip = JSON whitespace when flexible. */
gr_grammar *js_compile(const char *schema, size_t n, const js_options *o, char *err, size_t cap);

#endif
