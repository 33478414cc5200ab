/* What a model declares for embeddings: its pooling and whether its vectors are normalized.
 * GGUF: `<arch>.pooling_type` (llama.cpp's enum). Hugging Face folders packaged by
 * sentence-transformers: modules.json (Transformer -> Pooling [-> Normalize]) and the Pooling
 * module's config.json (pooling_mode_*). */
#ifndef PG_MODEL_POOLING_H
#define PG_MODEL_POOLING_H

#include "format/gguf.h"
#include "model/config.h"
#include "pagoda.h"

/* Sets cfg->pooling, pool_normalize, embedding_package from `<arch>.pooling_type` (absent: none).
 * A value outside llama.cpp's enum (0..4) is refused. */
pagoda_status pooling_from_gguf(const gguf_file *f, const char *arch, pg_model_config *cfg);
/* Same from dir/modules.json and its Pooling module's config (absent modules.json: none declared).
 * Malformed files, a pooling pagoda does not compute (max, weighted mean, several modes at once)
 * or a module path leaving dir are refused with a message naming the file. */
pagoda_status pooling_from_hf(const char *dir, pg_model_config *cfg);

#endif
