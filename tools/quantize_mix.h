/* llama-quantize's named types (Q4_K_M, Q8_0, ...) and, without --pure, the type its mixture gives
 * each tensor: more bits for some layers' attn_v / ffn_down, Q6_K for output.weight, ... */
#ifndef PAGODA_TOOLS_QUANTIZE_MIX_H
#define PAGODA_TOOLS_QUANTIZE_MIX_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "format/gguf.h"

/* A TYPE argument of llama-quantize that pagoda writes. */
typedef struct {
    const char *name;
    int dtype;      /* base type: every weight's type with --pure */
    uint32_t ftype; /* llama.cpp's LLAMA_FTYPE, written as general.file_type */
} quant_target;

/* The target named s (case-insensitive; llama-quantize's numeric ids work too), or NULL after
 * printing why: unknown, or a mixture needing a type pagoda cannot write (named in the message). */
const quant_target *quant_target_find(const char *s);
void quant_target_list(FILE *f); /* the names quant_target_find accepts, space-separated */

/* State of one file's mixture: model facts read once, counters advanced tensor by tensor. */
typedef struct {
    const quant_target *target;
    int out_type;       /* --output-tensor-type, or -1 */
    int n_layer;        /* {arch}.block_count */
    int n_expert;       /* {arch}.expert_count, 0 if absent */
    bool falcon;        /* general.architecture "falcon" */
    bool llama_70b;     /* llama, 80 layers, GQA: llama.cpp's LLM_TYPE_70B */
    bool has_output;    /* an output.weight tensor exists (else the embeddings are tied) */
    int n_attention_wv; /* tensors named *attn_v.weight, *attn_qkv.weight, *attn_kv_b.weight */
    int i_attention_wv; /* attn_v tensors seen so far */
    int i_ffn_down;     /* ffn_down tensors seen so far */
    bool has_imatrix;   /* quantizing with --imatrix (set by the caller after quant_mix_init) */
} quant_mix;

void quant_mix_init(quant_mix *m, const gguf_file *f, const quant_target *target, int out_type);

/* The mixture's type for the next quantizable tensor, before the row-length fallback. Call it for
 * every quantizable tensor in the output's order (the counters follow it). Only for a quantized
 * base type (F16 / BF16 / F32 targets have no mixture). */
int quant_mix_type(quant_mix *m, const char *name, int64_t ne0);

#endif
