/* The server's compiled grammars, by request text: agents send the same schema (a tool's
 * parameters, a response model) with every request, and compiling it again each time would put
 * milliseconds in front of every first token. A small LRU of pagoda_grammar references, keyed by
 * (kind, whitespace, text); thread-safe. */
#ifndef PG_SERVE_GRAMMAR_CACHE_H
#define PG_SERVE_GRAMMAR_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "pagoda.h"

typedef struct grammar_cache grammar_cache;

grammar_cache *grammar_cache_new(pagoda_model *m, int capacity); /* NULL on out of memory */
void grammar_cache_free(grammar_cache *gc);
/* A reference to the grammar of spec (compiled on a miss; the caller unrefs it). Compile errors
 * come back as pagoda_grammar_compile's (not cached: a bad schema costs its sender each time). */
pagoda_status grammar_cache_get(grammar_cache *gc, const pagoda_grammar_spec *spec, pagoda_grammar **out);
typedef struct {
    uint64_t hits, misses, compile_errors;
    double compile_seconds; /* total spent compiling */
} grammar_cache_stats;
void grammar_cache_get_stats(grammar_cache *gc, grammar_cache_stats *s);

#endif
