/* The engine's side of pagoda_grammar: what a request holds (engine/grammar_api.c). */
#ifndef PG_ENGINE_GRAMMAR_API_H
#define PG_ENGINE_GRAMMAR_API_H

#include <stdatomic.h>

#include "grammar/matcher.h"
#include "pagoda.h"

struct pagoda_grammar {
    _Atomic int refs;
    gr_compiled *c;
    int32_t n_vocab;
    const pagoda_model *model; /* the model it was compiled for (must outlive it) */
};

#endif
