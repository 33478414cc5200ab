/* JSON Schema front end of the grammar engine: a schema (JSON text) compiled into a grammar
 * (grammar.h) whose sentences are exactly the JSON instances the schema accepts, serialized as
 * the options say. A keyword that cannot be honoured exactly is a compile error naming it (and
 * its JSON pointer), never silently ignored. Bounded: deep nesting, huge enums, $ref cycles and
 * hostile patterns give clean errors within the builder's limits. */
#ifndef PG_GRAMMAR_JSON_SCHEMA_H
#define PG_GRAMMAR_JSON_SCHEMA_H

#include <stddef.h>

#include "grammar/grammar.h"

typedef struct {
    int whitespace_flexible; /* 0: compact JSON (",", ":" separators, no whitespace anywhere
                                outside strings); 1: JSON whitespace allowed between tokens */
    int strict;              /* 1: OpenAI strict mode: objects without additionalProperties
                                allow no other properties (0: JSON Schema's rule, they do) */
} js_options;
void js_options_default(js_options *o);

/* Adds the schema's instances to g as a new nonterminal (returned; -1 with "pointer: problem" in
 * err). Neither the start symbol nor the skip pattern is set, so callers can embed it (a tool
 * call's arguments inside a wrapper). */
int js_add(gr_grammar *g, const char *schema, size_t n, const js_options *o, char *err, size_t cap);

/* A whole grammar: start = the schema's instances, skip = JSON whitespace when flexible. */
gr_grammar *js_compile(const char *schema, size_t n, const js_options *o, char *err, size_t cap);

#endif
