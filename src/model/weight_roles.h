/* The weight roles of a transformer, declared once in a table (weight_roles.c): for each role,
 * where it lives (offset into pg_layer_weights or pg_model), what it is (kind), when a model has
 * it and whether it must be present, its shape in terms of the config, and its tensor name in
 * GGUF and in each Hugging Face family. Loading, naming, shape checks and the per-token weight
 * walk (model_for_each_weight) iterate these tables; so can a backend's weight upload. */
#ifndef PG_MODEL_WEIGHT_ROLES_H
#define PG_MODEL_WEIGHT_ROLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "model/config.h"

typedef enum {
    ROLE_MATRIX,    /* [n_out][n_in] matmul operand: its dtype must have a matrix product */
    ROLE_VECTOR,    /* [n_in] norm weight; converted to F32 at load */
    ROLE_BIAS,      /* [n_in] added after a product; converted to F32 at load */
    ROLE_EMBEDDING, /* [n_out][n_in] rows read by index; any dtype that converts to float */
} pg_role_kind;

/* When a model has the role at all (a role whose condition fails is never looked up). */
typedef enum {
    ROLE_ALWAYS,
    ROLE_IF_LAYERNORM,   /* cfg.layernorm: norm biases */
    ROLE_IF_LEARNED_POS, /* cfg.learned_pos */
    ROLE_IF_QK_NORM,     /* cfg.qk_norm */
    ROLE_IF_GATED_FFN,   /* cfg.gated_ffn */
    ROLE_IF_FUSED_QKV,   /* the file has this layer's fused qkv matrix */
    ROLE_IF_SPLIT_QKV,   /* it does not: separate q, k, v */
} pg_role_when;

/* A dimension, in terms of the config. */
typedef enum {
    DIM_ONE,   /* 1 (vectors' n_out) */
    DIM_EMBD,  /* n_embd */
    DIM_Q,     /* n_head * head_dim */
    DIM_KV,    /* n_head_kv * head_dim */
    DIM_QKV,   /* q + 2 * kv */
    DIM_HEAD,  /* head_dim */
    DIM_FF,    /* n_ff */
    DIM_VOCAB, /* n_vocab */
    DIM_CTX,   /* n_ctx_train */
} pg_role_dim;

/* Hugging Face naming families (the columns of pg_weight_role.hf). */
typedef enum { HF_NAMES_LLAMA, HF_NAMES_STARCODER2, HF_NAMES_GPT_BIGCODE, HF_NAMES_COUNT } pg_hf_names;

typedef struct {
    const char *id;          /* the field's name: "wq", "tok_embd" */
    size_t offset;           /* offsetof the pg_weight in pg_layer_weights (layer roles) or pg_model (global) */
    pg_role_kind kind;
    pg_role_when when;
    bool required;           /* when its condition holds: missing is an error (else data stays NULL) */
    bool streamed;           /* read whole per token: visited by model_for_each_weight */
    bool tied;               /* absent: the token embedding stands in (the output layer) */
    bool fused_qkv;          /* rows are q | k | v blocks; files with per-head interleaved rows
                              * (cfg.qkv_per_head) are reordered at load */
    pg_role_dim n_in, n_out; /* shape rule (n_out is DIM_ONE for vectors and biases) */
    const char *gguf;        /* llama.cpp's name; layer roles carry one %d for the layer */
    const char *hf[HF_NAMES_COUNT]; /* per Hugging Face family; NULL: the family has no such tensor */
} pg_weight_role;

/* The tables (static storage; *n gets the entry count). */
const pg_weight_role *model_layer_roles(int *n);
const pg_weight_role *model_global_roles(int *n);

/* The role's pg_weight inside a pg_layer_weights (layer roles) or pg_model (global roles). */
static inline pg_tensor *role_weight(void *base, const pg_weight_role *r) {
    return (pg_tensor *)((char *)base + r->offset);
}
static inline const pg_tensor *role_weight_const(const void *base, const pg_weight_role *r) {
    return (const pg_tensor *)((const char *)base + r->offset);
}

/* The value of a dimension rule for a config. */
int64_t role_dim(const pg_model_config *c, pg_role_dim d);

/* Whether the role exists in a model of this config; fused: the layer has a fused qkv matrix. */
bool role_applies(const pg_weight_role *r, const pg_model_config *c, bool fused);

/* The naming family of a Hugging Face architecture. */
pg_hf_names role_hf_names(pg_arch a);

/* The role's name pattern for a GGUF file (gguf) or a Hugging Face folder of arch; NULL: none. */
const char *role_name_fmt(const pg_weight_role *r, bool gguf, pg_arch arch);

#endif
