/* A loaded model: hyperparameters plus weights used in place from the file mapping. */
#ifndef PG_MODEL_MODEL_H
#define PG_MODEL_MODEL_H

#include <stdint.h>

#include "core/tensor.h"
#include "format/quant_config.h"
#include "model/config.h"
#include "model/weight_roles.h"
#include "pagoda.h"

/* A weight matrix (or vector) in place: n_out rows of n_in elements of dtype (the five fields
 * data, dtype, n_in, n_out, name), plus optional quantization metadata that formats read today
 * leave zero (core/tensor.h). data == NULL: absent (optional weights such as biases). */
typedef pg_tensor pg_weight;

/* One layer's weights. Which roles a layer has, their names and shapes: model_layer_roles(). */
typedef struct {
    pg_weight attn_norm, attn_norm_b;     /* [n_embd] (the bias with LayerNorm only) */
    pg_weight wq, wk, wv;                 /* [n_head*head_dim | n_head_kv*head_dim][n_embd] */
    pg_weight wqkv;                       /* fused [q_dim + 2*kv_dim][n_embd], rows q | k | v (instead of wq/wk/wv) */
    pg_weight bq, bk, bv;                 /* [q_dim], [kv_dim], [kv_dim]; optional */
    pg_weight bqkv;                       /* [q_dim + 2*kv_dim] q | k | v; optional (with wqkv) */
    pg_weight q_norm, k_norm;             /* [head_dim] (qwen3) */
    pg_weight wo, bo;                     /* [n_embd][n_head*head_dim], [n_embd] (bias optional) */
    pg_weight ffn_norm, ffn_norm_b;       /* [n_embd] (the bias with LayerNorm only) */
    pg_weight w_gate, w_up, w_down;       /* [n_ff][n_embd], [n_ff][n_embd], [n_embd][n_ff] */
    pg_weight b_gate, b_up, b_down;       /* [n_ff], [n_ff], [n_embd]; optional (mlp_bias) */
} pg_layer_weights;

typedef enum { MODEL_FORMAT_GGUF, MODEL_FORMAT_HF } pg_model_format;

typedef struct pg_model {
    pg_model_config cfg;
    pg_model_format format;
    char path[1024];
    pg_weight tok_embd;     /* [n_vocab][n_embd] */
    pg_weight pos_embd;     /* [n_ctx_train][n_embd] (learned positions) */
    pg_weight out_norm, out_norm_b; /* [n_embd] (the bias with LayerNorm only) */
    pg_weight output;       /* [n_vocab][n_embd]; the embedding when tied */
    pg_layer_weights *layers; /* [n_layer] */
    float *rope_inv_freq;     /* [rope_dim/2] */
    char **names;             /* owned tensor names (pg_weight.name points here) [n_names] */
    int64_t n_names;
    void **owned;             /* owned buffers: norms/biases converted to F32, reordered fused qkv [n_owned] */
    int64_t n_owned;
    struct gguf_file *gguf;   /* one of these holds the mapping */
    struct st_model *st;
    pg_quant_config *qc;      /* a quantized Hugging Face checkpoint's quantization_config, else NULL */
} pg_model;

/* path: a .gguf file or a Hugging Face model folder (config.json + *.safetensors). */
pagoda_status model_load(const char *path, pg_model **out);
void model_free(pg_model *m); /* NULL is a no-op */

/* Fails (naming the tensor) if a weight holds NaN or infinity: every value of f32/f16/bf16
 * tensors, the scales of quantized blocks. model_load calls it (weight_scan.c). */
pagoda_status model_check_finite(const pg_model *m);

/* Calls fn on every weight the forward pass reads whole per token: the roles marked streamed in
 * the weight-role tables (norm vectors, projection matrices, the output layer), global ones first,
 * then layer by layer; absent optional ones have data == NULL. */
void model_for_each_weight(const pg_model *m, void (*fn)(const pg_weight *w, void *user), void *user);

/* Reads every weight page once (from disk into the page cache, mapped), so the first tokens do
 * not pay for it; progress(done, total) is called after each matrix (may be NULL). */
void model_prefault(const pg_model *m, void (*progress)(uint64_t done, uint64_t total, void *user), void *user);

/* Bytes of weights read per generated token (all matrices; embeddings count one row). */
uint64_t model_weight_bytes(const pg_model *m);

#endif
