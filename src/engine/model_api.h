/* The public pagoda_model: weights (model/) plus tokenizer and chat template (tokenizer/). */
#ifndef PG_ENGINE_MODEL_API_H
#define PG_ENGINE_MODEL_API_H

#include "format/gguf.h"
#include "model/model.h"
#include "pagoda.h"
#include "tokenizer/tokenizer.h"

struct pagoda_model {
    pg_model *m;             /* NULL: loaded with pagoda_model_load_vocab (tokenizer only) */
    pg_tokenizer *tok;
    gguf_file *vocab_gguf;   /* vocab-only models: the GGUF the tokenizer reads from (owned) */
    int32_t fim_prefix, fim_suffix, fim_middle;
    int64_t n_params;
};

#endif
