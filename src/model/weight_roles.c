/* The weight-role tables: every weight a model can have, declared once. */
#include "model/weight_roles.h"

#include "model/model.h"

#define L_AT(f) .id = #f, .offset = offsetof(pg_layer_weights, f)
#define G_AT(f) .id = #f, .offset = offsetof(pg_model, f)
#define HF(llama, starcoder2, gpt_bigcode) .hf = {llama, starcoder2, gpt_bigcode}
#define ML "model.layers.%d."
#define TH "transformer.h.%d."

/* Per layer, in loading order. Names: llama.cpp's GGUF names, then Hugging Face llama family
 * (llama, mistral, qwen2, qwen3), starcoder2, gpt_bigcode. */
static const pg_weight_role k_layer_roles[] = {
    {L_AT(attn_norm), ROLE_VECTOR, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_norm.weight", HF(ML "input_layernorm.weight", ML "input_layernorm.weight", TH "ln_1.weight")},
    {L_AT(attn_norm_b), ROLE_BIAS, ROLE_IF_LAYERNORM, .required = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_norm.bias", HF(NULL, ML "input_layernorm.bias", TH "ln_1.bias")},
    {L_AT(wq), ROLE_MATRIX, ROLE_IF_SPLIT_QKV, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_Q,
     .gguf = "blk.%d.attn_q.weight", HF(ML "self_attn.q_proj.weight", ML "self_attn.q_proj.weight", NULL)},
    {L_AT(wk), ROLE_MATRIX, ROLE_IF_SPLIT_QKV, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_KV,
     .gguf = "blk.%d.attn_k.weight", HF(ML "self_attn.k_proj.weight", ML "self_attn.k_proj.weight", NULL)},
    {L_AT(wv), ROLE_MATRIX, ROLE_IF_SPLIT_QKV, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_KV,
     .gguf = "blk.%d.attn_v.weight", HF(ML "self_attn.v_proj.weight", ML "self_attn.v_proj.weight", NULL)},
    /* optional: its presence in the file decides ROLE_IF_FUSED_QKV / ROLE_IF_SPLIT_QKV */
    {L_AT(wqkv), ROLE_MATRIX, ROLE_ALWAYS, .streamed = true, .fused_qkv = true, .n_in = DIM_EMBD, .n_out = DIM_QKV,
     .gguf = "blk.%d.attn_qkv.weight", HF(NULL, NULL, TH "attn.c_attn.weight")},
    {L_AT(bq), ROLE_BIAS, ROLE_IF_SPLIT_QKV, .n_in = DIM_Q, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_q.bias", HF(ML "self_attn.q_proj.bias", ML "self_attn.q_proj.bias", NULL)},
    {L_AT(bk), ROLE_BIAS, ROLE_IF_SPLIT_QKV, .n_in = DIM_KV, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_k.bias", HF(ML "self_attn.k_proj.bias", ML "self_attn.k_proj.bias", NULL)},
    {L_AT(bv), ROLE_BIAS, ROLE_IF_SPLIT_QKV, .n_in = DIM_KV, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_v.bias", HF(ML "self_attn.v_proj.bias", ML "self_attn.v_proj.bias", NULL)},
    {L_AT(bqkv), ROLE_BIAS, ROLE_IF_FUSED_QKV, .fused_qkv = true, .n_in = DIM_QKV, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_qkv.bias", HF(NULL, NULL, TH "attn.c_attn.bias")},
    {L_AT(q_norm), ROLE_VECTOR, ROLE_IF_QK_NORM, .required = true, .n_in = DIM_HEAD, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_q_norm.weight", HF(ML "self_attn.q_norm.weight", NULL, NULL)},
    {L_AT(k_norm), ROLE_VECTOR, ROLE_IF_QK_NORM, .required = true, .n_in = DIM_HEAD, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_k_norm.weight", HF(ML "self_attn.k_norm.weight", NULL, NULL)},
    {L_AT(wo), ROLE_MATRIX, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_Q, .n_out = DIM_EMBD,
     .gguf = "blk.%d.attn_output.weight", HF(ML "self_attn.o_proj.weight", ML "self_attn.o_proj.weight", TH "attn.c_proj.weight")},
    {L_AT(bo), ROLE_BIAS, ROLE_ALWAYS, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.attn_output.bias", HF(ML "self_attn.o_proj.bias", ML "self_attn.o_proj.bias", TH "attn.c_proj.bias")},
    {L_AT(ffn_norm), ROLE_VECTOR, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.ffn_norm.weight",
     HF(ML "post_attention_layernorm.weight", ML "post_attention_layernorm.weight", TH "ln_2.weight")},
    {L_AT(ffn_norm_b), ROLE_BIAS, ROLE_IF_LAYERNORM, .required = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.ffn_norm.bias", HF(NULL, ML "post_attention_layernorm.bias", TH "ln_2.bias")},
    {L_AT(w_gate), ROLE_MATRIX, ROLE_IF_GATED_FFN, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_FF,
     .gguf = "blk.%d.ffn_gate.weight", HF(ML "mlp.gate_proj.weight", NULL, NULL)},
    {L_AT(w_up), ROLE_MATRIX, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_FF,
     .gguf = "blk.%d.ffn_up.weight", HF(ML "mlp.up_proj.weight", ML "mlp.c_fc.weight", TH "mlp.c_fc.weight")},
    {L_AT(w_down), ROLE_MATRIX, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_FF, .n_out = DIM_EMBD,
     .gguf = "blk.%d.ffn_down.weight", HF(ML "mlp.down_proj.weight", ML "mlp.c_proj.weight", TH "mlp.c_proj.weight")},
    {L_AT(b_gate), ROLE_BIAS, ROLE_IF_GATED_FFN, .n_in = DIM_FF, .n_out = DIM_ONE,
     .gguf = "blk.%d.ffn_gate.bias", HF(ML "mlp.gate_proj.bias", NULL, NULL)},
    {L_AT(b_up), ROLE_BIAS, ROLE_ALWAYS, .n_in = DIM_FF, .n_out = DIM_ONE,
     .gguf = "blk.%d.ffn_up.bias", HF(ML "mlp.up_proj.bias", ML "mlp.c_fc.bias", TH "mlp.c_fc.bias")},
    {L_AT(b_down), ROLE_BIAS, ROLE_ALWAYS, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "blk.%d.ffn_down.bias", HF(ML "mlp.down_proj.bias", ML "mlp.c_proj.bias", TH "mlp.c_proj.bias")},
};

/* Model-wide, in loading order (the output layer last: it may be tied to the embedding). */
static const pg_weight_role k_global_roles[] = {
    {G_AT(tok_embd), ROLE_EMBEDDING, ROLE_ALWAYS, .required = true, .n_in = DIM_EMBD, .n_out = DIM_VOCAB,
     .gguf = "token_embd.weight", HF("model.embed_tokens.weight", "model.embed_tokens.weight", "transformer.wte.weight")},
    {G_AT(pos_embd), ROLE_EMBEDDING, ROLE_IF_LEARNED_POS, .required = true, .n_in = DIM_EMBD, .n_out = DIM_CTX,
     .gguf = "position_embd.weight", HF(NULL, NULL, "transformer.wpe.weight")},
    {G_AT(out_norm), ROLE_VECTOR, ROLE_ALWAYS, .required = true, .streamed = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "output_norm.weight", HF("model.norm.weight", "model.norm.weight", "transformer.ln_f.weight")},
    {G_AT(out_norm_b), ROLE_BIAS, ROLE_IF_LAYERNORM, .required = true, .n_in = DIM_EMBD, .n_out = DIM_ONE,
     .gguf = "output_norm.bias", HF(NULL, "model.norm.bias", "transformer.ln_f.bias")},
    {G_AT(output), ROLE_MATRIX, ROLE_ALWAYS, .streamed = true, .tied = true, .n_in = DIM_EMBD, .n_out = DIM_VOCAB,
     .gguf = "output.weight", HF("lm_head.weight", "lm_head.weight", "lm_head.weight")},
};

const pg_weight_role *model_layer_roles(int *n) {
    *n = (int)(sizeof k_layer_roles / sizeof k_layer_roles[0]);
    return k_layer_roles;
}

const pg_weight_role *model_global_roles(int *n) {
    *n = (int)(sizeof k_global_roles / sizeof k_global_roles[0]);
    return k_global_roles;
}

int64_t role_dim(const pg_model_config *c, pg_role_dim d) {
    int64_t q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_head_kv * c->head_dim;
    switch (d) {
    case DIM_ONE: return 1;
    case DIM_EMBD: return c->n_embd;
    case DIM_Q: return q;
    case DIM_KV: return kv;
    case DIM_QKV: return q + 2 * kv;
    case DIM_HEAD: return c->head_dim;
    case DIM_FF: return c->n_ff;
    case DIM_VOCAB: return c->n_vocab;
    case DIM_CTX: return c->n_ctx_train;
    }
    return 0;
}

bool role_applies(const pg_weight_role *r, const pg_model_config *c, bool fused) {
    switch (r->when) {
    case ROLE_ALWAYS: return true;
    case ROLE_IF_LAYERNORM: return c->layernorm;
    case ROLE_IF_LEARNED_POS: return c->learned_pos;
    case ROLE_IF_QK_NORM: return c->qk_norm;
    case ROLE_IF_GATED_FFN: return c->gated_ffn;
    case ROLE_IF_FUSED_QKV: return fused;
    case ROLE_IF_SPLIT_QKV: return !fused;
    }
    return false;
}

pg_hf_names role_hf_names(pg_arch a) {
    switch (a) {
    case ARCH_STARCODER2: return HF_NAMES_STARCODER2;
    case ARCH_GPT_BIGCODE: return HF_NAMES_GPT_BIGCODE;
    default: return HF_NAMES_LLAMA;
    }
}

const char *role_name_fmt(const pg_weight_role *r, bool gguf, pg_arch arch) {
    return gguf ? r->gguf : r->hf[role_hf_names(arch)];
}
