/* The public pagoda_model: weights (model/) plus tokenizer and chat template (tokenizer/). */
#ifndef PG_ENGINE_MODEL_API_H
#define PG_ENGINE_MODEL_API_H

#include "format/gguf.h"
#include "grammar/matcher.h"
#include "model/model.h"
#include "pagoda.h"
#include "tokenizer/tokenizer.h"

struct pagoda_model {
    pg_model *m;             /* NULL: loaded with pagoda_model_load_vocab (tokenizer only) */
    pg_tokenizer *tok;
    gguf_file *vocab_gguf;   /* vocab-only models: the GGUF the tokenizer reads from (owned) */
    int32_t fim_prefix, fim_suffix, fim_middle;
    int32_t fim_repo, fim_sep;
    int64_t n_params;
    gr_vocab *gvocab;        /* the vocabulary as the grammar engine sees it, built on first use */
    char *chat_template;     /* pagoda_model_set_chat_template's (owned); NULL: the tokenizer's */
};

/* pm's grammar vocabulary (built once, thread-safe); NULL with the error set on failure. */
const gr_vocab *model_grammar_vocab(pagoda_model *pm);

#endif
