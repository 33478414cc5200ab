/* `pagoda quantize HF_DIR ...`: the Hugging Face folder written as the F32 GGUF that llama.cpp's
 * convert_hf_to_gguf.py (--outtype f32) writes, which cmd_quantize.c then quantizes. */
#ifndef PG_TOOLS_QUANTIZE_HF_H
#define PG_TOOLS_QUANTIZE_HF_H

#include <stdbool.h>

/* path is a directory (a Hugging Face model folder, or meant as one). */
bool quantize_hf_is_dir(const char *path);

/* Writes dir's weights (F32/F16/BF16 safetensors, sharded or not) as an F32 GGUF at out, with
 * llama.cpp's architecture keys, tensor names and layouts and (with a tokenizer.json) its
 * tokenizer keys. Prints progress and, on failure, the reason to stderr; returns 0 on success. */
int quantize_hf_convert(const char *dir, const char *out);

#endif
