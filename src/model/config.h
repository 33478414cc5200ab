/* Model hyperparameters, read from GGUF metadata or a Hugging Face config.json. */
#ifndef PG_MODEL_CONFIG_H
#define PG_MODEL_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "format/gguf.h"
#include "pagoda.h"

typedef enum {
    ARCH_LLAMA,       /* llama, mistral: RMSNorm, SwiGLU, rope */
    ARCH_QWEN2,       /* + q/k/v bias */
    ARCH_QWEN3,       /* + per-head q/k RMSNorm */
    ARCH_STARCODER2,  /* LayerNorm, biases, GELU MLP, rope */
    ARCH_GPT_BIGCODE, /* StarCoder: LayerNorm, learned positions, fused qkv, MQA (or MHA), GELU */
} pg_arch;

typedef enum { ROPE_NONE, ROPE_NORMAL, ROPE_NEOX } pg_rope_layout;

typedef struct {
    pg_arch arch;
    char arch_name[32];  /* as the file names it: "llama", "mistral", "gpt_bigcode", ... */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    float norm_eps;
    bool layernorm;      /* LayerNorm (mean and bias) instead of RMSNorm */
    bool gated_ffn;      /* SwiGLU (gate, up, down) instead of GELU(up) -> down */
    bool learned_pos;    /* position embedding table instead of rope */
    bool qk_norm;
    bool qkv_per_head;   /* the file's fused qkv rows are [n_head][q, k, v][head_dim] (HF gpt_bigcode
                          * without multi_query); the loader reorders them to q | k | v blocks */
    pg_rope_layout rope;
    int32_t rope_dim;    /* dims of each head that rotate */
    float rope_theta;
    /* rope scaling: "none", "linear" (factor) or "llama3" (factor, low/high freq factors, original ctx) */
    char rope_scaling[16];
    float rope_factor, rope_low_freq, rope_high_freq;
    int32_t rope_orig_ctx;
    int32_t sliding_window; /* 0: none */
    int32_t bos_id, eos_id; /* -1: none */
    /* embeddings (model/pooling.h) */
    int32_t pooling;        /* declared pooling, pagoda_pooling values (0: none declared; 4: rank) */
    bool pool_normalize;    /* the declared vectors are L2-normalized */
    bool embedding_package; /* a sentence-transformers package or a GGUF with a pooling type */
    int8_t tie_embeddings;  /* HF tie_word_embeddings: 1 true, 0 false, -1 not given (GGUF: -1) */
} pg_model_config;

/* From GGUF metadata ("general.architecture" and "<arch>.*" keys). */
pagoda_status config_from_gguf(const gguf_file *f, pg_model_config *cfg);
/* From a Hugging Face model folder's config.json. */
pagoda_status config_from_hf(const char *dir, pg_model_config *cfg);

/* inv_freq[i] for i < rope_dim/2, scaling applied (freq_factors: optional GGUF rope_freqs). */
void config_rope_inv_freq(const pg_model_config *cfg, const float *freq_factors, float *inv_freq);

const char *arch_name(pg_arch a);

#endif
