/* Loading: GGUF or Hugging Face folder -> config + weights mapped in place.
 * Tensor names differ per format and family; one table maps each role to its names. */
#include "model/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/array.h"
#include "core/dtype.h"
#include "core/fp16.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "kernels/kernels.h"

typedef enum {
    R_TOK_EMBD, R_POS_EMBD, R_OUT_NORM, R_OUT_NORM_B, R_OUTPUT,
    R_ATTN_NORM, R_ATTN_NORM_B, R_WQ, R_WK, R_WV, R_WQKV, R_BQ, R_BK, R_BV, R_BQKV,
    R_Q_NORM, R_K_NORM, R_WO, R_BO, R_FFN_NORM, R_FFN_NORM_B, R_GATE, R_UP, R_DOWN, R_B_GATE, R_B_UP, R_B_DOWN,
    R_COUNT
} role;

/* Names per role: GGUF (llama.cpp), HF llama family, HF starcoder2, HF gpt_bigcode. NULL: none. */
static const char *const k_names[R_COUNT][4] = {
    [R_TOK_EMBD] = {"token_embd.weight", "model.embed_tokens.weight", "model.embed_tokens.weight", "transformer.wte.weight"},
    [R_POS_EMBD] = {"position_embd.weight", NULL, NULL, "transformer.wpe.weight"},
    [R_OUT_NORM] = {"output_norm.weight", "model.norm.weight", "model.norm.weight", "transformer.ln_f.weight"},
    [R_OUT_NORM_B] = {"output_norm.bias", NULL, "model.norm.bias", "transformer.ln_f.bias"},
    [R_OUTPUT] = {"output.weight", "lm_head.weight", "lm_head.weight", "lm_head.weight"},
    [R_ATTN_NORM] = {"blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight",
                     "model.layers.%d.input_layernorm.weight", "transformer.h.%d.ln_1.weight"},
    [R_ATTN_NORM_B] = {"blk.%d.attn_norm.bias", NULL, "model.layers.%d.input_layernorm.bias", "transformer.h.%d.ln_1.bias"},
    [R_WQ] = {"blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.self_attn.q_proj.weight", NULL},
    [R_WK] = {"blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight", "model.layers.%d.self_attn.k_proj.weight", NULL},
    [R_WV] = {"blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight", "model.layers.%d.self_attn.v_proj.weight", NULL},
    [R_WQKV] = {"blk.%d.attn_qkv.weight", NULL, NULL, "transformer.h.%d.attn.c_attn.weight"},
    [R_BQ] = {"blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias", "model.layers.%d.self_attn.q_proj.bias", NULL},
    [R_BK] = {"blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias", "model.layers.%d.self_attn.k_proj.bias", NULL},
    [R_BV] = {"blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias", "model.layers.%d.self_attn.v_proj.bias", NULL},
    [R_BQKV] = {"blk.%d.attn_qkv.bias", NULL, NULL, "transformer.h.%d.attn.c_attn.bias"},
    [R_Q_NORM] = {"blk.%d.attn_q_norm.weight", "model.layers.%d.self_attn.q_norm.weight", NULL, NULL},
    [R_K_NORM] = {"blk.%d.attn_k_norm.weight", "model.layers.%d.self_attn.k_norm.weight", NULL, NULL},
    [R_WO] = {"blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight",
              "model.layers.%d.self_attn.o_proj.weight", "transformer.h.%d.attn.c_proj.weight"},
    [R_BO] = {"blk.%d.attn_output.bias", "model.layers.%d.self_attn.o_proj.bias",
              "model.layers.%d.self_attn.o_proj.bias", "transformer.h.%d.attn.c_proj.bias"},
    [R_FFN_NORM] = {"blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight",
                    "model.layers.%d.post_attention_layernorm.weight", "transformer.h.%d.ln_2.weight"},
    [R_FFN_NORM_B] = {"blk.%d.ffn_norm.bias", NULL, "model.layers.%d.post_attention_layernorm.bias", "transformer.h.%d.ln_2.bias"},
    [R_GATE] = {"blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight", NULL, NULL},
    [R_UP] = {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight", "model.layers.%d.mlp.c_fc.weight",
              "transformer.h.%d.mlp.c_fc.weight"},
    [R_DOWN] = {"blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight", "model.layers.%d.mlp.c_proj.weight",
                "transformer.h.%d.mlp.c_proj.weight"},
    [R_B_GATE] = {"blk.%d.ffn_gate.bias", "model.layers.%d.mlp.gate_proj.bias", NULL, NULL},
    [R_B_UP] = {"blk.%d.ffn_up.bias", "model.layers.%d.mlp.up_proj.bias", "model.layers.%d.mlp.c_fc.bias",
                "transformer.h.%d.mlp.c_fc.bias"},
    [R_B_DOWN] = {"blk.%d.ffn_down.bias", "model.layers.%d.mlp.down_proj.bias", "model.layers.%d.mlp.c_proj.bias",
                  "transformer.h.%d.mlp.c_proj.bias"},
};

typedef struct {
    pg_model *m;
    int column;     /* which k_names column */
    char **names;   /* owned copies of found names (pg_weight.name points here) */
    int64_t n_names, cap_names;
    void **owned;   /* converted F32 vectors */
    int64_t n_owned, cap_owned;
} loader;

static pagoda_status keep(void ***arr, int64_t *n, int64_t *cap, void *p) {
    if (!pg_grow((void **)arr, cap, *n + 1, sizeof(void *))) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    (*arr)[(*n)++] = p;
    return PAGODA_OK;
}

/* Looks a role up. n_out == 0: a vector of n_in (converted to F32); else a matrix.
 * A missing optional weight leaves w->data NULL. */
static pagoda_status get_w(loader *L, pg_weight *w, role r, int layer, int required, int64_t n_in, int64_t n_out) {
    memset(w, 0, sizeof *w);
    const char *fmt = k_names[r][L->column];
    if (!fmt) {
        if (required) return pg_fail(PAGODA_ERR_FORMAT, "no tensor name known for this role in %s", L->m->cfg.arch_name);
        return PAGODA_OK;
    }
    char name[256];
    snprintf(name, sizeof name, fmt, layer);
    const void *data;
    int dtype, n_dims;
    int64_t dims[2] = {1, 1}; /* contiguous dim first */
    if (L->m->format == MODEL_FORMAT_GGUF) {
        const gguf_tensor *t = gguf_find_tensor(L->m->gguf, name);
        if (!t) goto missing;
        data = t->data, dtype = t->dtype, n_dims = t->n_dims;
        for (int i = 2; i < t->n_dims; i++)
            if (t->ne[i] != 1) n_dims = 3;
        dims[0] = t->ne[0], dims[1] = t->ne[1];
    } else {
        const st_tensor *t = st_find(L->m->st, name);
        if (!t) goto missing;
        data = t->data, dtype = t->dtype, n_dims = t->n_dims;
        if (n_dims >= 1) dims[0] = t->shape[n_dims - 1];
        if (n_dims >= 2) dims[1] = t->shape[n_dims - 2];
    }
    int want_dims = n_out ? 2 : 1;
    if (n_dims != want_dims && !(n_dims == 2 && want_dims == 1 && dims[1] == 1))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': %d dimensions, expected %d", name, n_dims, want_dims);
    if (dims[0] != n_in || dims[1] != (n_out ? n_out : 1))
        return pg_fail(PAGODA_ERR_FORMAT, "tensor '%s': shape [%lld, %lld] (contiguous dim first), expected [%lld, %lld]",
                       name, (long long)dims[0], (long long)dims[1], (long long)n_in, (long long)(n_out ? n_out : 1));
    const k_type_traits *tr = kref_traits(dtype);
    if (!tr || !tr->to_float)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s is not supported", name, dtype_name(dtype));
    char *nm = strdup(name);
    pagoda_status st;
    if (!nm) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    if ((st = keep((void ***)&L->names, &L->n_names, &L->cap_names, nm))) {
        free(nm);
        return st;
    }
    w->name = nm;
    w->n_in = n_in;
    w->n_out = n_out ? n_out : 1;
    w->dtype = dtype;
    w->data = data;
    if (n_out == 0 && dtype != PAGODA_DTYPE_F32) { /* small vectors: float ops want F32 */
        float *f = malloc(sizeof(float) * (size_t)n_in);
        if (!f) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        if ((st = keep(&L->owned, &L->n_owned, &L->cap_owned, f))) {
            free(f);
            return st;
        }
        tr->to_float(data, f, n_in);
        w->data = f;
        w->dtype = PAGODA_DTYPE_F32;
    } else if (n_out && !k_matmul_supported(dtype) && r != R_TOK_EMBD && r != R_POS_EMBD) {
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be used for matrix products", name, dtype_name(dtype));
    }
    return PAGODA_OK;
missing:
    if (required) return pg_fail(PAGODA_ERR_FORMAT, "missing tensor '%s'", name);
    return PAGODA_OK;
}

static pagoda_status load_weights(loader *L) {
    pg_model *m = L->m;
    const pg_model_config *c = &m->cfg;
    int64_t E = c->n_embd, qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_head_kv * c->head_dim;
    bool ln = c->layernorm;
    pagoda_status st;
#define GET(w, r, l, req, a, b) \
    if ((st = get_w(L, w, r, l, req, a, b))) return st
    GET(&m->tok_embd, R_TOK_EMBD, 0, 1, E, c->n_vocab);
    if (c->learned_pos) GET(&m->pos_embd, R_POS_EMBD, 0, 1, E, c->n_ctx_train);
    GET(&m->out_norm, R_OUT_NORM, 0, 1, E, 0);
    if (ln) GET(&m->out_norm_b, R_OUT_NORM_B, 0, 1, E, 0);
    GET(&m->output, R_OUTPUT, 0, 0, E, c->n_vocab);
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if (!k_matmul_supported(m->output.dtype))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "tensor '%s': type %s cannot be used as the output layer",
                       m->output.name, dtype_name(m->output.dtype));
    for (int l = 0; l < c->n_layer; l++) {
        pg_layer_weights *w = &m->layers[l];
        GET(&w->attn_norm, R_ATTN_NORM, l, 1, E, 0);
        if (ln) GET(&w->attn_norm_b, R_ATTN_NORM_B, l, 1, E, 0);
        GET(&w->wqkv, R_WQKV, l, 0, E, qd + 2 * kvd);
        if (w->wqkv.data) {
            GET(&w->bqkv, R_BQKV, l, 0, qd + 2 * kvd, 0);
        } else {
            GET(&w->wq, R_WQ, l, 1, E, qd);
            GET(&w->wk, R_WK, l, 1, E, kvd);
            GET(&w->wv, R_WV, l, 1, E, kvd);
            GET(&w->bq, R_BQ, l, 0, qd, 0);
            GET(&w->bk, R_BK, l, 0, kvd, 0);
            GET(&w->bv, R_BV, l, 0, kvd, 0);
        }
        if (c->qk_norm) {
            GET(&w->q_norm, R_Q_NORM, l, 1, c->head_dim, 0);
            GET(&w->k_norm, R_K_NORM, l, 1, c->head_dim, 0);
        }
        GET(&w->wo, R_WO, l, 1, qd, E);
        GET(&w->bo, R_BO, l, 0, E, 0);
        GET(&w->ffn_norm, R_FFN_NORM, l, 1, E, 0);
        if (ln) GET(&w->ffn_norm_b, R_FFN_NORM_B, l, 1, E, 0);
        if (c->gated_ffn) GET(&w->w_gate, R_GATE, l, 1, E, c->n_ff);
        GET(&w->w_up, R_UP, l, 1, E, c->n_ff);
        GET(&w->w_down, R_DOWN, l, 1, c->n_ff, E);
        if (c->gated_ffn) GET(&w->b_gate, R_B_GATE, l, 0, c->n_ff, 0);
        GET(&w->b_up, R_B_UP, l, 0, c->n_ff, 0);
        GET(&w->b_down, R_B_DOWN, l, 0, E, 0);
    }
#undef GET
    return PAGODA_OK;
}

static bool is_dir(const char *p) {
    struct stat s;
    return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

pagoda_status model_load(const char *path, pg_model **out) {
    *out = NULL;
    pg_model *m = calloc(1, sizeof *m);
    loader L = {.m = m};
    pagoda_status st;
    if (!m) return pg_fail(PAGODA_ERR_NOMEM, "out of memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    if (is_dir(path)) {
        m->format = MODEL_FORMAT_HF;
        if ((st = config_from_hf(path, &m->cfg))) goto fail;
        if ((st = st_open(path, &m->st))) goto fail;
        L.column = m->cfg.arch == ARCH_STARCODER2 ? 2 : m->cfg.arch == ARCH_GPT_BIGCODE ? 3 : 1;
        /* HF keeps Q/K rows in rotate_half order */
        if (m->cfg.rope != ROPE_NONE) m->cfg.rope = ROPE_NEOX;
    } else {
        m->format = MODEL_FORMAT_GGUF;
        if ((st = gguf_open(path, &m->gguf))) goto fail;
        if ((st = config_from_gguf(m->gguf, &m->cfg))) goto fail;
        L.column = 0;
    }
    m->layers = calloc((size_t)m->cfg.n_layer, sizeof *m->layers);
    if (!m->layers) {
        st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((st = load_weights(&L))) goto fail;
    if (m->cfg.rope != ROPE_NONE) {
        m->rope_inv_freq = malloc(sizeof(float) * (size_t)(m->cfg.rope_dim / 2));
        if (!m->rope_inv_freq) {
            st = pg_fail(PAGODA_ERR_NOMEM, "out of memory");
            goto fail;
        }
        const float *ff = NULL;
        if (m->gguf) { /* llama3-style scaling is stored as per-frequency divisors */
            const gguf_tensor *t = gguf_find_tensor(m->gguf, "rope_freqs.weight");
            if (t) {
                if (t->dtype != PAGODA_DTYPE_F32 || t->ne[0] != m->cfg.rope_dim / 2) {
                    st = pg_fail(PAGODA_ERR_FORMAT, "tensor 'rope_freqs.weight': expected f32 [%d]", m->cfg.rope_dim / 2);
                    goto fail;
                }
                ff = t->data;
            }
        }
        config_rope_inv_freq(&m->cfg, ff, m->rope_inv_freq);
    }
    /* the model keeps the name strings and converted vectors */
    m->names = L.names, m->n_names = L.n_names;
    m->owned = L.owned, m->n_owned = L.n_owned;
    *out = m;
    return PAGODA_OK;
fail:
    if (strncmp(pagoda_last_error(), path, strlen(path)) != 0) pg_error_prefix("%s: ", path);
    for (int64_t i = 0; i < L.n_names; i++) free(L.names[i]);
    free(L.names);
    for (int64_t i = 0; i < L.n_owned; i++) free(L.owned[i]);
    free(L.owned);
    free(m->layers);
    free(m->rope_inv_freq);
    gguf_close(m->gguf);
    st_close(m->st);
    free(m);
    return st;
}

void model_free(pg_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_names; i++) free(m->names[i]);
    free(m->names);
    for (int64_t i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    gguf_close(m->gguf);
    st_close(m->st);
    free(m);
}

static uint64_t weight_bytes(const pg_weight *w) {
    size_t row = 0;
    if (!w->data || !dtype_row_size(w->dtype, w->n_in, &row)) return 0;
    return (uint64_t)row * (uint64_t)w->n_out;
}

void model_for_each_weight(const pg_model *m, void (*fn)(const pg_weight *, void *), void *user) {
    fn(&m->out_norm, user);
    fn(&m->output, user);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const pg_layer_weights *w = &m->layers[l];
        const pg_weight *all[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wqkv, &w->wo, &w->ffn_norm,
                                  &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) fn(all[i], user);
    }
}

static void add_bytes(const pg_weight *w, void *user) { *(uint64_t *)user += weight_bytes(w); }

uint64_t model_weight_bytes(const pg_model *m) {
    uint64_t b = 0;
    model_for_each_weight(m, add_bytes, &b);
    return b;
}

typedef struct {
    uint64_t done, total;
    void (*progress)(uint64_t done, uint64_t total, void *user);
    void *user;
    volatile uint8_t sink;
} prefault_state;

static void touch(const pg_weight *w, void *user) {
    prefault_state *s = user;
    uint64_t n = weight_bytes(w);
    const volatile uint8_t *p = w->data;
    for (uint64_t off = 0; off < n; off += 4096) s->sink ^= p[off];
    s->done += n;
    if (s->progress) s->progress(s->done, s->total, s->user);
}

void model_prefault(const pg_model *m, void (*progress)(uint64_t done, uint64_t total, void *user), void *user) {
    prefault_state s = {.total = model_weight_bytes(m), .progress = progress, .user = user};
    model_for_each_weight(m, touch, &s);
}
